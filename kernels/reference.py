"""numpy references for the kernel library, and the embedding table formats.

These are the definitions the card's results are checked against. The embedding references follow the
card's order of operations (rows dequantized in fp32 as q * scale + bias, bags pooled in index order in
fp32), so the card equals them bit for bit; PyTorch's embedding_bag equals them within fp32 rounding
(vnpu/validation/data/embedding_golden.npz holds PyTorch's outputs).
"""
from __future__ import annotations

import numpy as np

# the table formats and the pooled lookup are the embedding unit's definition (emulator/tables.py); the
# single-rounding x * scale + zp is the vector unit's (emulator/reference.py)
from vnpu.emulator.reference import fma_f32  # noqa: F401 (re-exported)
from vnpu.emulator.tables import (FORMATS, bag_bounds, embedding_bag_from_bytes,  # noqa: F401 (re-exported)
                                  table_dim, table_row_bytes, unpack_rows)



def pack_table(weight: np.ndarray, fmt: str) -> np.ndarray:
    """Quantize / pack an fp32 table [rows, dim] into the format's row layout (uint8 [rows, row_bytes]).

    int8_rowwise is byte-identical to torch.ops.quantized.embedding_bag_byte_prepack: per row, scale =
    (max - min) / 255, bias = min, q = rint((x - min) * 255 / (range + 1e-8)). int4_rowwise is byte-identical to
    embedding_bag_4bit_prepack (checked against vnpu/validation/data/embedding_golden.npz).
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
