"""The matrix unit: a rows x cols systolic array, `depth` independent slices along K.

Numbers: int8 x int8 -> int32 (wrapping), fp16 x fp16 -> fp32 accumulation in K order, fp32 x fp32 -> exact
products summed in fp64 in K order and rounded once into the fp32 accumulator. A NaN in a float result is
the canonical quiet NaN (0x7fc00000): the unit does not carry NaN payloads through its adder tree.
Cycles: the fill / stream / drain model of SCALE-Sim v3, which it reproduces exactly at depth 1
(vnpu/validation/data/scalesim_gemm.json); see docs/timing.md.
"""
import math

import numpy as np
from .jit import jit

from vnpu.isa import table as T

from . import sanitizer as san_mod
from .issue import ELEM, MAX_ELEMS, Q_MATRIX, complete, local_ok, race, set_fault
from .memory import L_LOCAL_BYTES, copy_run, first_bad_local
from .numerics import f16_to_f32
from .state import (C_FP16_RATE, C_FP32_RATE, C_INT8_RATE, C_LOCAL_BPC, C_MCOLS, C_MDATAFLOW, C_MDEPTH, C_MROWS,
                    C_NSEM, C_WBUF_BYTES, FAULT_ADDRESS, FAULT_INSTRUCTION, P_MACS, P_MATRIX, TRACK_MATRIX,
                    WHY_DTYPE, WHY_NO_WEIGHTS, WHY_SEMAPHORE, WHY_SIZE, WHY_WEIGHTS)


@jit
def multiply_cycles(M, N, K, rows, cols, depth, dataflow, rate):
    """Cycles of one mm.mul of an M x K by K x N product (weights already in the unit's buffer).

    ws (weight stationary): K on the rows, N on the columns, M streamed; each fold loads its weights
    (rows cycles), streams M, skews (rows - 1) and drains (cols - 1):
        folds = ceil(K / (rows * depth)) * ceil(N / cols);  cycles = folds * (2 rows + cols + M - 2) - 1
    os (output stationary): M on the rows, N on the columns, K streamed (split over depth slices):
        folds = ceil(M / rows) * ceil(N / cols);  cycles = folds * (rows + cols + ceil(K / depth) - 2) - 1
    Depth slices are summed by an adder tree of ceil(log2 depth) cycles. A rate below 1 (fp16) stretches
    everything by 1 / rate.
    """
    if M <= 0 or N <= 0 or K <= 0:
        return 1
    if dataflow == 0:
        folds = ((K + rows * depth - 1) // (rows * depth)) * ((N + cols - 1) // cols)
        cyc = folds * (2 * rows + cols + M - 2) - 1
    else:
        kk = (K + depth - 1) // depth
        folds = ((M + rows - 1) // rows) * ((N + cols - 1) // cols)
        cyc = folds * (rows + cols + kk - 2) - 1
    if depth > 1:
        cyc += int(math.ceil(math.log2(depth)))
    return int(math.ceil(cyc / rate))


@jit
def load_weights_cycles(K, N, elem_bytes, local_bytes_per_cycle):
    """mm.ldw moves the tile from PE-local SRAM into the unit's weight buffer at the local port's width."""
    return max(1, int(math.ceil(K * N * elem_bytes / local_bytes_per_cycle)))


INT8_EXACT_K = 1024   # int8 x int8 sums of up to 1024 products stay within 2**24: exact in fp32


@jit(fastmath={"contract"})
def _gemm_rows(a, w, acc, M, K, N):
    """acc[i, :] = sum over k, in K order, of a[i, k] * w[k, :], in fp32.

    Two rows of A and four k at a time: each output element is still summed in K order (the four products
    are added one after another), so the result equals the plain triple loop bit for bit, but an accumulator
    is loaded and stored once per four products and a row of w once per two rows of A. Contraction into
    fused multiply-adds is allowed: the products (fp16 x fp16, or int8 x int8 as floats) are exact in fp32,
    so an FMA rounds like the separate multiply and add."""
    K4 = K - K % 4
    M2 = M - M % 2
    for i0 in range(0, M, 2):
        two = i0 < M2
        r0 = acc[i0]
        r0[:] = 0
        r1 = acc[i0 + 1] if two else acc[i0]
        if two:
            r1[:] = 0
        for k in range(0, K4, 4):
            w0 = w[k]
            w1 = w[k + 1]
            w2 = w[k + 2]
            w3 = w[k + 3]
            a00 = a[i0, k]
            a01 = a[i0, k + 1]
            a02 = a[i0, k + 2]
            a03 = a[i0, k + 3]
            if two:
                a10 = a[i0 + 1, k]
                a11 = a[i0 + 1, k + 1]
                a12 = a[i0 + 1, k + 2]
                a13 = a[i0 + 1, k + 3]
                for j in range(N):
                    x0 = w0[j]
                    x1 = w1[j]
                    x2 = w2[j]
                    x3 = w3[j]
                    r0[j] = (((r0[j] + a00 * x0) + a01 * x1) + a02 * x2) + a03 * x3
                    r1[j] = (((r1[j] + a10 * x0) + a11 * x1) + a12 * x2) + a13 * x3
            else:
                for j in range(N):
                    r0[j] = (((r0[j] + a00 * w0[j]) + a01 * w1[j]) + a02 * w2[j]) + a03 * w3[j]
        for k in range(K4, K):
            wk = w[k]
            a0 = a[i0, k]
            for j in range(N):
                r0[j] += a0 * wk[j]
            if two:
                a1 = a[i0 + 1, k]
                for j in range(N):
                    r1[j] += a1 * wk[j]


@jit
def multiply_int8(pool, a_off, w, out_off, M, K, N, accumulate):
    """int8 x int8 -> int32, wrapping. Computed in fp32 on chunks of K small enough to be exact (each chunk's
    sum is an integer below 2**24), the chunks added into the int32 result (modulo 2**32, as it wraps)."""
    a = pool[a_off:a_off + M * K].view(np.int8).reshape(M, K).astype(np.float32)
    wf = w[:K * N].view(np.int8).reshape(K, N).astype(np.float32)
    out = pool[out_off:out_off + 4 * M * N].view(np.int32)
    part = np.empty((M, N), dtype=np.float32)
    flat = part.reshape(M * N)
    for k0 in range(0, K, INT8_EXACT_K):
        k1 = min(K, k0 + INT8_EXACT_K)
        if k0 == 0 and k1 == K:
            _gemm_rows(a, wf, part, M, K, N)
        else:   # contiguous copies: a strided operand would keep the inner loop from vectorizing
            _gemm_rows(np.ascontiguousarray(a[:, k0:k1]), np.ascontiguousarray(wf[k0:k1]), part, M, k1 - k0, N)
        if k0 == 0 and not accumulate:
            for t in range(M * N):
                out[t] = np.int32(flat[t])
        else:
            for t in range(M * N):
                out[t] += np.int32(flat[t])      # computed wider, stored modulo 2**32


CANONICAL_NAN = np.uint32(0x7FC00000)


@jit
def _store_float_result(out, flat, accumulate):
    """out (=|+=) flat, then every NaN made the canonical quiet NaN (the engines agree on NaN bits)."""
    bits = out.view(np.uint32)
    for t in range(len(out)):       # loops, not out += flat / out[:] = flat (see memory.copy_run)
        out[t] = out[t] + flat[t] if accumulate else flat[t]
        if out[t] != out[t]:
            bits[t] = CANONICAL_NAN


@jit
def multiply_fp32(pool, a_off, w, out_off, M, K, N, accumulate):
    """fp32 x fp32: products exact in fp64, summed in fp64 in K order, rounded once into the fp32 result
    (with accumulate, the fp32 accumulator is added in fp64 before that one rounding)."""
    a = pool[a_off:a_off + 4 * M * K].view(np.float32).astype(np.float64).reshape(M, K)
    wf = w[:4 * K * N].view(np.float32).astype(np.float64).reshape(K, N)
    out = pool[out_off:out_off + 4 * M * N].view(np.float32)
    acc = np.empty((M, N), dtype=np.float64)
    _gemm_rows(a, wf, acc, M, K, N)
    flat = acc.reshape(M * N)
    if accumulate:
        for t in range(M * N):
            flat[t] += np.float64(out[t])
    _store_float_result(out, flat.astype(np.float32), False)


@jit
def multiply_fp16(pool, a_off, w, out_off, M, K, N, accumulate):
    """fp16 x fp16 -> fp32, accumulated in K order."""
    a = np.empty(M * K, dtype=np.float32)
    f16_to_f32(pool[a_off:a_off + 2 * M * K].view(np.uint16), a)
    wf = np.empty(K * N, dtype=np.float32)
    f16_to_f32(w[:2 * K * N].view(np.uint16), wf)
    out = pool[out_off:out_off + 4 * M * N].view(np.float32)
    acc = np.empty((M, N), dtype=np.float32)
    _gemm_rows(a.reshape(M, K), wf.reshape(K, N), acc, M, K, N)
    _store_float_result(out, acc.reshape(M * N), accumulate)


# compiled on its own the first time a launch uses this unit; the core calls it through its address (units.py)
@jit
def issue(prog, mem, cfg, res, rec, chk, units, scratch, p, cur, tp, r):
    """Issue mm.ldw or mm.mul at pc `cur` of PE p at cycle tp (registers r): check the operands, load the
    weight tile or multiply, price it, book the PE's matrix unit and complete it. Returns (its completion
    cycle, 0), or (-1, 0) with the fault recorded in chk.fault."""
    dec, pe_ids, pool, lay = prog.code, prog.pe_ids, mem.pool, mem.layout
    fault, san, sanc, sanitize = chk.fault, chk.san, chk.sanc, chk.sanitize
    pstat, cstat, events, evn = rec.pstat, rec.cstat, rec.events, rec.evn
    semt, semn, lbase = units.semt, units.semn, units.lbase
    reads, plain, where = scratch.reads, scratch.plain, scratch.where
    nsem = int(cfg[C_NSEM])
    local_bytes = lay[L_LOCAL_BYTES]
    op = dec[cur, 0]
    matfree, wk, wbuf = units.matfree, units.weights_kept, mem.weights
    wbuf_bytes = int(cfg[C_WBUF_BYTES])
    s = dec[cur, T.SEM]
    if s >= nsem:
        set_fault(fault, FAULT_INSTRUCTION, p, cur, -1, WHY_SEMAPHORE)
        return -1, 0
    dt = dec[cur, T.DT]
    eb = ELEM[dt]
    lb = lbase[p]
    reads[:, :] = 0
    if op == T.OP_MM_LDW:
        a = r[dec[cur, T.RS1]]
        K = r[dec[cur, T.RS2]]
        N = r[dec[cur, T.RS3]]
        # K and N bounded before the product, which could wrap in int64
        if K <= 0 or N <= 0 or K > wbuf_bytes or N > wbuf_bytes or K * N * eb > wbuf_bytes:
            set_fault(fault, FAULT_INSTRUCTION, p, cur, -1, WHY_WEIGHTS)
            return -1, 0
        nbytes = K * N * eb
        if not local_ok(lay, a, nbytes):
            set_fault(fault, FAULT_ADDRESS, p, cur, first_bad_local(lay, a, nbytes), nbytes)
            return -1, 0
        ka = san_mod.key(local_bytes, pe_ids[p], a)
        reads[0, 0] = ka
        reads[0, 1] = ka + nbytes
        wlo = np.int64(0)
        whi = np.int64(0)
    else:
        dst = r[dec[cur, T.RD]]
        a = r[dec[cur, T.RS1]]
        M = r[dec[cur, T.RS2]]
        if wk[p, 0] < 0:
            set_fault(fault, FAULT_INSTRUCTION, p, cur, -1, WHY_NO_WEIGHTS)
            return -1, 0
        if wk[p, 2] != dt:
            set_fault(fault, FAULT_INSTRUCTION, p, cur, -1, WHY_DTYPE)
            return -1, 0
        K = wk[p, 0]
        N = wk[p, 1]
        if M < 0 or M > MAX_ELEMS:
            set_fault(fault, FAULT_INSTRUCTION, p, cur, -1, WHY_SIZE)
            return -1, 0
        if not local_ok(lay, a, M * K * eb):
            set_fault(fault, FAULT_ADDRESS, p, cur, first_bad_local(lay, a, M * K * eb), M * K * eb)
            return -1, 0
        if not local_ok(lay, dst, M * N * 4):
            set_fault(fault, FAULT_ADDRESS, p, cur, first_bad_local(lay, dst, M * N * 4), M * N * 4)
            return -1, 0
        ka = san_mod.key(local_bytes, pe_ids[p], a)
        reads[0, 0] = ka
        reads[0, 1] = ka + M * K * eb
        wlo = san_mod.key(local_bytes, pe_ids[p], dst)
        whi = wlo + M * N * 4
    if sanitize:
        hit = san_mod.check(san, sanc, where, p, Q_MATRIX, reads, wlo, whi, plain)
        if hit >= 0:
            race(fault, san, where, p, cur, hit)
            return -1, 0
    if op == T.OP_MM_LDW:
        copy_run(wbuf[p], 0, pool, lb + a, nbytes)
        wk[p, 0] = K
        wk[p, 1] = N
        wk[p, 2] = dt
        cyc = load_weights_cycles(K, N, eb, cfg[C_LOCAL_BPC])
        aux = K * N
    else:
        if dt == 0:
            multiply_int8(pool, lb + a, wbuf[p], lb + dst, M, K, N, dec[cur, T.FLAG] == 1)
            rate = cfg[C_INT8_RATE]
        elif dt == 2:
            multiply_fp16(pool, lb + a, wbuf[p], lb + dst, M, K, N, dec[cur, T.FLAG] == 1)
            rate = cfg[C_FP16_RATE]
        else:
            multiply_fp32(pool, lb + a, wbuf[p], lb + dst, M, K, N, dec[cur, T.FLAG] == 1)
            rate = cfg[C_FP32_RATE]
        cyc = multiply_cycles(M, N, K, int(cfg[C_MROWS]), int(cfg[C_MCOLS]), int(cfg[C_MDEPTH]),
                                       int(cfg[C_MDATAFLOW]), rate)
        pstat[p, P_MACS] += M * N * K
        aux = M * N * K
    start = max(tp, matfree[p])
    done = start + cyc
    matfree[p] = done
    pstat[p, P_MATRIX] += cyc
    if not complete(semt, semn, fault, san, sanc, sanitize, events, evn, cstat, p, cur, op, s, Q_MATRIX,
                     TRACK_MATRIX, start, done, aux, reads, wlo, whi, plain):
        return -1, 0
    return done, 0
