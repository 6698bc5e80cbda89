"""Embedding table formats and the pooled lookup, in numpy: the readable definition of what the embedding unit
computes (the reference interpreter runs it; kernels/reference.py builds its references on it).

Row layouts (byte-compatible with PyTorch/FBGEMM's prepacked tables), formats in the order of the
descriptor's `format` field (isa/table.py: EMB_FORMATS):
  fp32, fp16                 dim values
  int8_rowwise               dim uint8, then fp32 scale, fp32 bias   (embedding_bag_byte_prepack)
  int8_rowwise_fp16          dim uint8, then fp16 scale, fp16 bias
  int4_rowwise               ceil(dim/2) bytes, element j in the low nibble of byte j/2 when j is even,
                             then fp16 scale, fp16 bias               (embedding_bag_4bit_prepack)
The unit's order of operations: each row dequantized in fp32 as q * scale + bias (two roundings), weighted
(one rounding), pooled in index order in fp32; mean divides by the bag length in fp32.
"""
from __future__ import annotations

import numpy as np

from vnpu.isa.table import EMB_FORMATS as FORMATS


def table_row_bytes(fmt: str, dim: int) -> int:
    return {"fp32": 4 * dim, "fp16": 2 * dim, "int8_rowwise": dim + 8, "int8_rowwise_fp16": dim + 4,
            "int4_rowwise": (dim + 1) // 2 + 4}[fmt]


def table_dim(fmt: str, row_bytes: int) -> int:
    """The embedding dimension of a packed row of row_bytes (ValueError if no dim gives that size)."""
    if fmt == "fp32":
        dim, ok = row_bytes // 4, row_bytes % 4 == 0
    elif fmt == "fp16":
        dim, ok = row_bytes // 2, row_bytes % 2 == 0
    elif fmt == "int8_rowwise":
        dim, ok = row_bytes - 8, row_bytes > 8
    elif fmt == "int8_rowwise_fp16":
        dim, ok = row_bytes - 4, row_bytes > 4
    elif fmt == "int4_rowwise":
        dim, ok = 2 * (row_bytes - 4), row_bytes > 4  # an odd dim packs like dim + 1
    else:
        raise ValueError(f"unknown table format {fmt!r}; one of {', '.join(FORMATS)}")
    if not ok or dim <= 0:
        raise ValueError(f"a row of {row_bytes} bytes does not fit format {fmt}")
    return dim


def unpack_rows(table: np.ndarray, fmt: str, dim: int) -> np.ndarray:
    """Dequantize packed rows [n, row_bytes] to fp32 [n, dim] the way the card does (q * scale + bias)."""
    t = np.ascontiguousarray(table, dtype=np.uint8)
    n = t.shape[0]
    if fmt == "fp32":
        return t[:, :4 * dim].copy().view(np.float32).reshape(n, dim)
    if fmt == "fp16":
        return t[:, :2 * dim].copy().view(np.float16).astype(np.float32).reshape(n, dim)
    if fmt == "int8_rowwise":
        sb = t[:, dim:dim + 8].copy().view(np.float32).reshape(n, 2)
        return t[:, :dim].astype(np.float32) * sb[:, :1] + sb[:, 1:]
    if fmt == "int8_rowwise_fp16":
        sb = t[:, dim:dim + 4].copy().view(np.float16).astype(np.float32).reshape(n, 2)
        return t[:, :dim].astype(np.float32) * sb[:, :1] + sb[:, 1:]
    if fmt == "int4_rowwise":
        nb = (dim + 1) // 2
        sb = t[:, nb:nb + 4].copy().view(np.float16).astype(np.float32).reshape(n, 2)
        q = np.empty((n, 2 * nb), np.uint8)
        q[:, 0::2] = t[:, :nb] & 15
        q[:, 1::2] = t[:, :nb] >> 4
        return q[:, :dim].astype(np.float32) * sb[:, :1] + sb[:, 1:]
    raise ValueError(f"unknown table format {fmt!r}")


def bag_bounds(n_idx, segments, offsets_mode, include_last, n_bags):
    """[n_bags + 1] start positions; ValueError(("segments", position)) on inconsistent input."""
    seg = [int(v) for v in segments]
    bounds = [0] * (n_bags + 1)
    if offsets_mode:
        for b, v in enumerate(seg):
            if v < 0 or v > n_idx or (b > 0 and v < seg[b - 1]) or (b == 0 and v != 0):
                raise ValueError("segments", b)
            if b <= n_bags:
                bounds[b] = v
        if not include_last:
            bounds[n_bags] = n_idx
            if n_bags == 0 and n_idx != 0:
                raise ValueError("segments", 0)
        elif n_bags > 0 and bounds[n_bags] != n_idx:
            raise ValueError("segments", n_bags)
    else:
        for b in range(n_bags):
            if seg[b] < 0 or bounds[b] + seg[b] > n_idx:
                raise ValueError("segments", b)
            bounds[b + 1] = bounds[b] + seg[b]
        if bounds[n_bags] != n_idx:
            raise ValueError("segments", n_bags)
    return bounds


def embedding_bag_from_bytes(table, fmt, dim, indices, segments, offsets_mode, include_last, n_bags,
                             weights=None, mode="sum"):
    """The card's pooled lookup on a packed table. Raises ValueError(("index" | "segments", position))."""
    idx = np.asarray(indices).astype(np.int64)
    rows = table.shape[0]
    bounds = bag_bounds(len(idx), segments, offsets_mode, include_last, n_bags)
    bad = np.nonzero((idx < 0) | (idx >= rows))[0]
    if len(bad):
        raise ValueError("index", int(bad[0]))
    out = np.zeros((n_bags, dim), dtype=np.float32)
    for b in range(n_bags):
        lo, hi = bounds[b], bounds[b + 1]
        if hi == lo:
            continue
        vals = unpack_rows(table[idx[lo:hi]], fmt, dim)
        acc = np.zeros(dim, dtype=np.float32)
        for k in range(hi - lo):   # index order, fp32, like the unit
            acc += (np.float32(weights[lo + k]) * vals[k]) if weights is not None else vals[k]
        if mode == "mean":
            acc = acc / np.float32(hi - lo)
        out[b] = acc
    return out
