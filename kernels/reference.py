"""numpy references for the kernel library, and the embedding table formats.

These are the definitions the card's results are checked against. The embedding references follow the
card's order of operations (rows dequantized in fp32 as q * scale + bias, bags pooled in index order in
fp32), so the card equals them bit for bit; PyTorch's embedding_bag equals them within fp32 rounding
(vnpu/bench/data/embedding_golden.npz holds PyTorch's outputs).
"""
from __future__ import annotations

import numpy as np

FORMATS = ("fp32", "fp16", "int8_rowwise", "int8_rowwise_fp16", "int4_rowwise")


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


def pack_table(weight: np.ndarray, fmt: str) -> np.ndarray:
    """Quantize / pack an fp32 table [rows, dim] into the format's row layout (uint8 [rows, row_bytes]).

    int8_rowwise is byte-identical to torch.ops.quantized.embedding_bag_byte_prepack: per row, scale =
    (max - min) / 255, bias = min, q = rint((x - min) * 255 / (range + 1e-8)). int4_rowwise is byte-identical to
    embedding_bag_4bit_prepack (checked against vnpu/bench/data/embedding_golden.npz).
    """
    w = np.ascontiguousarray(weight, dtype=np.float32)
    rows, dim = w.shape
    if fmt == "fp32":
        return w.view(np.uint8).reshape(rows, 4 * dim).copy()
    if fmt == "fp16":
        return w.astype(np.float16).view(np.uint8).reshape(rows, 2 * dim).copy()
    mn = w.min(axis=1) if dim else np.zeros(rows, np.float32)
    mx = w.max(axis=1) if dim else np.zeros(rows, np.float32)
    if fmt in ("int8_rowwise", "int8_rowwise_fp16"):
        half = fmt == "int8_rowwise_fp16"
        scale = ((mx - mn) / np.float32(255.0)).astype(np.float32)
        bias = mn.astype(np.float32)
        if half:
            scale, bias = scale.astype(np.float16).astype(np.float32), bias.astype(np.float16).astype(np.float32)
        inv = np.float32(255.0) / (mx - mn + np.float32(1e-8))  # FBGEMM's kEpsilon
        q = np.clip(np.rint((w - bias[:, None]) * inv[:, None]), 0, 255).astype(np.uint8)
        tail = (np.stack([scale, bias], 1).astype(np.float16 if half else np.float32).view(np.uint8))
        return np.concatenate([q, tail.reshape(rows, 8 if not half else 4)], axis=1)
    if fmt == "int4_rowwise":
        # FBGEMM's order: bias = fp16(min); the range is taken against that rounded bias; scale = fp16(range / 15),
        # 1.0 when the range, the fp16 scale or its inverse degenerates; q = rint((x - bias) / scale) in 0..15.
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            bias16 = mn.astype(np.float16)
            rng_ = (mx - bias16.astype(np.float32)).astype(np.float32)
            scale16 = (rng_ / np.float32(15.0)).astype(np.float16)
            inv = np.float32(1.0) / scale16.astype(np.float32)
        bad = (rng_ == 0) | (scale16 == 0) | ~np.isfinite(inv)
        scale16 = np.where(bad, np.float16(1.0), scale16)
        inv = np.where(bad, np.float32(1.0), inv).astype(np.float32)
        with np.errstate(invalid="ignore"):
            q = np.clip(np.rint((w - bias16.astype(np.float32)[:, None]) * inv[:, None]), 0, 15)
            q = np.nan_to_num(q).astype(np.uint8)
        if dim % 2:
            q = np.concatenate([q, np.zeros((rows, 1), np.uint8)], axis=1)
        packed = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)
        tail = np.stack([scale16, bias16], 1).view(np.uint8).reshape(rows, 4)
        return np.concatenate([packed, tail], axis=1)
    raise ValueError(f"unknown table format {fmt!r}; one of {', '.join(FORMATS)}")


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


def embedding_bag(weight, indices, offsets=None, lengths=None, per_sample_weights=None, mode="sum",
                  format="fp32", include_last_offset=False, dim=None):
    """numpy reference of vnpu.ops.embedding_bag. `weight` is a float table [rows, dim], packed to `format`
    as the card stores it, or an already packed uint8 table."""
    if np.asarray(weight).dtype != np.uint8:   # a float table: pack it as the card stores it
        w = np.asarray(weight, dtype=np.float32)
        packed, dim = pack_table(w, format), w.shape[1]
    else:
        packed = np.asarray(weight, dtype=np.uint8)
        dim = dim or table_dim(format, packed.shape[1])
    if lengths is not None:
        seg, offsets_mode, n_bags = np.asarray(lengths), False, len(lengths)
    else:
        seg, offsets_mode = np.asarray(offsets), True
        n_bags = len(seg) - 1 if include_last_offset else len(seg)
    return embedding_bag_from_bytes(packed, format, dim, indices, seg, offsets_mode, include_last_offset, n_bags,
                                    per_sample_weights, mode)


# --- the vector unit's float -> integer conversion (vcvt), for every reference that quantizes ----------------
def fma_f32(x, s, c):
    """x * s + c on float32 values rounded ONCE to float32 (round to nearest even), elementwise, like a fused
    multiply-add: the product is exact in float64 (24 + 24 bits), the sum exact as the pair S + err (TwoSum);
    S rounds to the right float32 unless it lies exactly halfway between two float32s, where err decides."""
    x = np.asarray(x, np.float32).astype(np.float64)
    s = np.float64(np.float32(s))
    c = np.float64(np.float32(c))
    with np.errstate(invalid="ignore", over="ignore"):
        p = x * s
        S = p + c
        r = S.astype(np.float32)
        bb = S - p
        err = (p - (S - bb)) + (c - bb)
        toward = np.where(S > r.astype(np.float64), np.float32(np.inf), np.float32(-np.inf)).astype(np.float32)
        other = np.nextafter(r, toward)
        mid = (r.astype(np.float64) + other.astype(np.float64)) * 0.5
        fix = (np.isfinite(S) & np.isfinite(r) & (err != 0) & (r.astype(np.float64) != S) & (S == mid)
               & ((err > 0) == (other.astype(np.float64) > r.astype(np.float64))))
    return np.where(fix, other, r).astype(np.float32)


def vcvt_to_int(x, scale, zero_point=0, lo=-128, hi=127, dtype=np.int8):
    """The card's vcvt float -> integer: q = clamp(round_half_even(fma(x, f32(scale), f32(zero_point))), lo,
    hi), x * scale + zero_point rounded once to fp32; NaN converts to 0. PyTorch's quantize_per_tensor(x, s,
    zp) equals it bit for bit with scale = 1.0f / f32(s) (fp32 division, as PyTorch computes it)."""
    v = np.rint(fma_f32(x, scale, np.float32(zero_point)).astype(np.float64))
    with np.errstate(invalid="ignore"):
        q = np.clip(v, lo, hi)
    return np.where(np.isnan(q), 0, q).astype(dtype)


def torch_inverse_scale(scale):
    """The factor PyTorch's quantize_per_tensor multiplies by: 1.0f / f32(scale), fp32 division (equal to
    f32(1 / f64(f32(scale))): a quotient of two fp32 values is never close enough to a tie to round twice)."""
    with np.errstate(over="ignore", divide="ignore"):
        return np.float32(1.0 / np.float64(np.float32(scale)))
