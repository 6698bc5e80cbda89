; Two small kernels the driver tests use: one that writes, one that faults.
.kernel fill
.arg out, buffer, i64
.arg value, scalar, i64
    sd value, 0(zero)          ; the value into local memory,
    li r5, 8
    dma e0, out, zero, r5, s0  ; then 8 bytes of it to out
    wait s0, 1
    halt
.kernel crash
.arg out, buffer, i64
    li r5, -64
    lw r6, 0(r5)               ; a load below local memory: IllegalAddress
    halt
