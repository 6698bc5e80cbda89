"""The matrix unit: a rows x cols systolic array, `depth` independent slices along K.

Numbers: int8 x int8 -> int32 (wrapping), fp16 x fp16 -> fp32 accumulation in K order.
Cycles: the fill / stream / drain model of SCALE-Sim v3, which it reproduces exactly at depth 1
(vnpu/bench/data/scalesim_gemm.json); see docs/timing.md.
"""
import math

import numpy as np
from numba import njit

from .numerics import f16_to_f32


@njit(cache=True, nogil=True)
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


@njit(cache=True, nogil=True)
def load_weights_cycles(K, N, elem_bytes, local_bytes_per_cycle):
    """mm.ldw moves the tile from PE-local SRAM into the unit's weight buffer at the local port's width."""
    return max(1, int(math.ceil(K * N * elem_bytes / local_bytes_per_cycle)))


@njit(cache=True, nogil=True)
def multiply_int8(pool, a_off, w, out_off, M, K, N, accumulate):
    a = pool[a_off:a_off + M * K].view(np.int8)
    out = pool[out_off:out_off + 4 * M * N].view(np.int32)
    wi = w[:K * N].view(np.int8)
    row = np.empty(N, dtype=np.int32)
    for i in range(M):
        row[:] = 0
        for k in range(K):
            av = np.int32(a[i * K + k])
            if av != 0:
                base = k * N
                for j in range(N):
                    row[j] += av * np.int32(wi[base + j])
        for j in range(N):
            if accumulate:
                out[i * N + j] += row[j]
            else:
                out[i * N + j] = row[j]


@njit(cache=True, nogil=True)
def multiply_fp16(pool, a_off, w, out_off, M, K, N, accumulate):
    a = np.empty(M * K, dtype=np.float32)
    f16_to_f32(pool[a_off:a_off + 2 * M * K].view(np.uint16), a)
    wf = np.empty(K * N, dtype=np.float32)
    f16_to_f32(w[:2 * K * N].view(np.uint16), wf)
    out = pool[out_off:out_off + 4 * M * N].view(np.float32)
    row = np.empty(N, dtype=np.float32)
    for i in range(M):
        row[:] = 0
        for k in range(K):
            av = a[i * K + k]
            base = k * N
            for j in range(N):
                row[j] += av * wf[base + j]
        for j in range(N):
            if accumulate:
                out[i * N + j] += row[j]
            else:
                out[i * N + j] = row[j]
