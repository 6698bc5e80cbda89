; out[0] = 1 + 2 + ... + n, computed by PE 0 with a counted loop, then copied to DRAM by DMA.
.kernel sum_to_n
.arg out, buffer, i64
.arg n, scalar, i32
    csrr r3, pe_id
    bne  r3, zero, done          ; only PE 0 works
    li   r4, 0                   ; acc
    mov  r5, n                   ; counter, counts down to 0
    beq  r5, zero, store
top:
    add  r4, r4, r5
    loop r5, top
store:
    sd   r4, 0(zero)             ; local[0] = acc
    li   r6, 8
    dma  e0, out, zero, r6, s0   ; out <- local[0 : 8]
    wait s0, 1
done:
    halt
