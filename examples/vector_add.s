; out[i] = a[i] + b[i] for n fp32 elements, the work split across the PEs of the launch.
; Each PE takes chunks of CHUNK elements, strided by pe_count * CHUNK: DMA both inputs into its local
; memory, add them on the vector unit, DMA the sum back to DRAM.
.const CHUNK = 256               ; elements per chunk: 1 KiB of fp32
.const LA = 0                    ; local-memory layout
.const LB = CHUNK * 4
.const LOUT = 2 * CHUNK * 4

.kernel vadd
.arg a, buffer, f32
.arg b, buffer, f32
.arg out, buffer, f32
.arg n, scalar, i32
    csrr r10, pe_id
    csrr r11, pe_count
    li   r12, CHUNK
    mul  r13, r10, r12           ; i = pe_id * CHUNK
    mul  r14, r11, r12           ; step = pe_count * CHUNK
    li   r20, LA
    li   r21, LB
    li   r22, LOUT
next:
    bge  r13, n, done
    sub  r15, n, r13
    min  r15, r15, r12           ; count = min(CHUNK, n - i)
    shli r16, r15, 2             ; bytes = count * 4
    shli r17, r13, 2             ; byte offset = i * 4
    add  r18, a, r17
    dma  e0, r20, r18, r16, s0   ; local A <- a[i : i+count]
    add  r18, b, r17
    dma  e0, r21, r18, r16, s0   ; local B <- b[i : i+count]
    wait s0, 2
    vadd r22, r20, r21, r15, f32, s1
    wait s1, 1
    add  r18, out, r17
    dma  e0, r18, r22, r16, s2   ; out[i : i+count] <- local OUT
    wait s2, 1
    add  r13, r13, r14
    j    next
done:
    halt
