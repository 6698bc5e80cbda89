"""Number formats the units compute with, bit-exact with numpy.

Numba has no float16 arithmetic, so fp16 values live as their uint16 bits and are converted with the same
algorithm numpy uses (round to nearest even; subnormals, infinities and NaN kept).
"""
import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.core.extending import intrinsic

from .jit import jit


@jit
def f32bits_to_f16bits(f):
    """numpy's npy_floatbits_to_halfbits: one float32's bits to float16 bits, round to nearest even."""
    h_sgn = (f & 0x80000000) >> 16
    f_exp = f & 0x7F800000
    if f_exp >= 0x47800000:
        if f_exp == 0x7F800000:
            f_sig = f & 0x007FFFFF
            if f_sig != 0:
                ret = 0x7C00 + (f_sig >> 13)
                if ret == 0x7C00:
                    ret += 1
                return h_sgn + ret
            return h_sgn + 0x7C00
        return h_sgn + 0x7C00
    if f_exp <= 0x38000000:
        if f_exp < 0x33000000:
            return h_sgn
        e = f_exp >> 23
        f_sig = 0x00800000 + (f & 0x007FFFFF)
        f_sig >>= (113 - e)
        if ((f_sig & 0x00003FFF) != 0x00001000) or (f & 0x000007FF):
            f_sig += 0x00001000
        return h_sgn + (f_sig >> 13)
    h_exp = (f_exp - 0x38000000) >> 13
    f_sig = f & 0x007FFFFF
    if (f_sig & 0x00003FFF) != 0x00001000:
        f_sig += 0x00001000
    return h_sgn + (f_sig >> 13) + h_exp


@jit
def f16bits_to_f32bits(h):
    """numpy's npy_halfbits_to_floatbits: exact."""
    h_exp = h & 0x7C00
    f_sgn = (h & 0x8000) << 16
    if h_exp == 0:
        h_sig = h & 0x03FF
        if h_sig == 0:
            return f_sgn
        h_sig <<= 1
        while (h_sig & 0x0400) == 0:
            h_sig <<= 1
            h_exp += 1
        f_exp = (127 - 15 - h_exp) << 23
        f_sig = (h_sig & 0x03FF) << 13
        return f_sgn + f_exp + f_sig
    if h_exp == 0x7C00:
        return f_sgn + 0x7F800000 + ((h & 0x03FF) << 13)
    return f_sgn + (((h & 0x7FFF) + 0x1C000) << 13)


@jit
def f16_to_f32(src_u16, out_f32):
    bits = out_f32.view(np.uint32)
    for i in range(len(src_u16)):
        bits[i] = f16bits_to_f32bits(np.uint32(src_u16[i]))


@jit
def f32_to_f16(src_f32, out_u16):
    bits = src_f32.view(np.uint32)
    for i in range(len(out_u16)):
        out_u16[i] = f32bits_to_f16bits(np.uint32(bits[i]))


@jit
def round_half_even(x):
    return np.rint(x)


@intrinsic
def _bitcast_u32_to_f32(typingctx, x):
    """Reinterpret a uint32 as float32 in registers (LLVM bitcast): no array, no allocation."""
    if x != types.uint32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.uint32), codegen


@jit(inline="always")
def bits_to_f32(bits):
    return _bitcast_u32_to_f32(np.uint32(bits))


@jit(inline="always")
def load_u32(pool, off):
    """A little-endian uint32 from any byte offset."""
    return (np.uint32(pool[off]) | (np.uint32(pool[off + 1]) << 8) | (np.uint32(pool[off + 2]) << 16)
            | (np.uint32(pool[off + 3]) << 24))


@jit(inline="always")
def load_f32(pool, off):
    return bits_to_f32(load_u32(pool, off))


@jit(inline="always")
def load_f16(pool, off):
    return bits_to_f32(f16bits_to_f32bits(np.uint32(np.uint32(pool[off]) | (np.uint32(pool[off + 1]) << 8))))


@intrinsic
def _bitcast_f32_to_u32(typingctx, x):
    """Reinterpret a float32 as uint32 in registers (LLVM bitcast)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.uint32(types.float32), codegen


@jit(inline="always")
def f32_bits(x):
    return _bitcast_f32_to_u32(np.float32(x))


@jit
def quiet_nan_f32(x):
    """A NaN with its quiet bit set, sign and payload kept (what an IEEE operation returns for a NaN input)."""
    return bits_to_f32(f32_bits(x) | np.uint32(0x00400000))


@jit
def _next_f32_toward(r, target):
    """The float32 next to r in the direction of the float64 `target` (r != target, both finite)."""
    if r == 0:
        return bits_to_f32(np.uint32(1) | (np.uint32(0x80000000) if target < 0 else np.uint32(0)))
    b = f32_bits(r)
    if (np.float64(r) < target) == (r > 0):
        return bits_to_f32(b + np.uint32(1))     # away from zero
    return bits_to_f32(b - np.uint32(1))


@jit
def fma_f32(x, s, c):
    """x * s + c for float32 x, s, c rounded once to float32 (round to nearest even), like a fused
    multiply-add. The product is exact in float64 (24 + 24 bits); the sum is exact as the pair S + err
    (TwoSum); S rounds to the right float32 unless it lies exactly halfway between two floats32, where the
    sign of err breaks the tie."""
    p = np.float64(x) * np.float64(s)
    cc = np.float64(c)
    S = p + cc
    r = np.float32(S)
    if S != S or math.isinf(S) or math.isinf(np.float64(r)):
        return r
    bb = S - p
    err = (p - (S - bb)) + (cc - bb)
    if err == 0.0 or np.float64(r) == S:
        return r
    other = _next_f32_toward(r, S)
    if S != (np.float64(r) + np.float64(other)) * 0.5:
        return r
    if (err > 0) == (np.float64(other) > np.float64(r)):
        return other
    return r
