"""Elementwise ops on the vector unit, int8 quantization, and the pure data-movement ops concat and transpose.

Every kernel is SPMD: PE p of the launch takes the p-th share of the elements (or rows, or output rows) by
pe_id / pe_count, walks it in tiles that fit its local memory, and double-buffers the DMA: the load of
tile t+1 is issued before tile t is computed, and tile t's result is DMAed out (on the PE's second engine)
while tile t+1 computes. The tile loop is unrolled twice (`tile_loop`), so each half names its own
buffers and semaphores (semaphore numbers are fields of the instruction, not registers).

Numerics are the card's, and each `reference_*` function does exactly what the card does:
- add/mul: fp32 in fp32; fp16 computed in fp32 and rounded to fp16 (numpy's fp16 arithmetic does the same).
- relu: exact. sigmoid/tanh/gelu: computed in fp64 and rounded to fp32 (then to fp16 for fp16 data); the
  references use the same fp64 formulas, libm versions may differ in the last fp64 bit (tolerances below).
- quantize: q = clamp(round_half_even(fma(x, inv, f32(zero_point))), -128, 127) with inv = 1.0f / f32(scale)
  and x * inv + zero_point rounded ONCE to fp32 (the card's vcvt); NaN -> 0. That is PyTorch's
  quantize_per_tensor bit for bit (it computes the same inverse in fp32 and the same fused rounding), except
  NaN, which PyTorch turns into an arbitrary code (127 on x86) and the card into 0.
- dequantize: y = f32((f64(q) - zero_point) * f64(f32(scale))).
- concat and transpose move bytes: exact for any dtype.

concat is one 2-D DMA per input, DRAM -> DRAM, straight into its column block of the output (no local
memory, no compute). transpose tiles through local memory: a 2-D DMA reads a block of rows x columns, a
local -> local 3-D DMA with element-size rows transposes the block (one descriptor per block), and a 2-D
DMA writes the transposed block to its place in the output; blocks are double-buffered the same way.
"""
from __future__ import annotations

import math

import numpy as np

from vnpu.errors import InvalidArgument

from . import lang, runner
from .builder import KernelBuilder, f32_bits
from .library import OpSpec
from .reference import torch_inverse_scale, vcvt_to_int

RESERVED = 1024        # bytes at local address 0 kept for constants and per-row scalars
TILE_CAP = 65536       # at most this many bytes per operand tile: longer tiles only delay the pipeline
ALIGN = 64
CONCAT_MAX_INPUTS = 13  # the inputs are kernel arguments: 15 argument registers minus out and rows
CONCAT_ROW_CHUNK = 1 << 20   # rows per DMA descriptor (the DMA unit takes at most 2**24 rows)

# semaphores
SEM_LOAD = (0, 1)      # loads into input buffer 0 / 1
SEM_STORE = (2, 3)     # stores out of output buffer 0 / 1
SEM_VEC = 4            # vector ops
SEM_ONCE = 5           # one-off loads (parameters)

EB = {"f32": 4, "f16": 2, "i8": 1}
NP = {"f32": np.float32, "f16": np.float16, "i8": np.int8}
FLOAT_DTYPES = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16"}
UNARY = {"relu": "vrelu", "sigmoid": "vsigmoid", "tanh": "vtanh", "gelu": "vgelu"}
BINARY = {"add": "vadd", "mul": "vmul"}


def _align(x, a=ALIGN):
    return (int(x) + a - 1) // a * a


# --- code-generation helpers (norm.py uses them too) ------------------------------------------------------
def scale_reg(k, rd, rs, c):
    """rd = rs * c for a constant c (shift for powers of two)."""
    c = int(c)
    if c == 1:
        k.mov(rd, rs)
    elif c > 0 and c & (c - 1) == 0:
        k.shli(rd, rs, c.bit_length() - 1)
    elif -(1 << 23) <= c < (1 << 23):
        k.muli(rd, rs, c)
    else:
        t = k.const(k.reg("c"), c)
        k.mul(rd, rs, t)
        k.release(t)


def pe_share(k, total, lo, hi, align=1):
    """[lo, hi): this PE's share of range(total): ceil(total / pe_count) (rounded up to `align`) per PE."""
    pe, npe, chunk = k.regs("pe", "npe", "chunk")
    k.csrr(pe, "pe_id")
    k.csrr(npe, "pe_count")
    k.add(chunk, total, npe)
    k.addi(chunk, chunk, -1)
    k.div(chunk, chunk, npe)
    if align > 1:
        k.addi(chunk, chunk, align - 1)
        k.andi(chunk, chunk, -align)
    k.mul(lo, pe, chunk)
    k.min(lo, lo, total)
    k.add(hi, lo, chunk)
    k.min(hi, hi, total)
    k.release(pe, npe, chunk)


def ceil_div(k, rd, num, den_const):
    """rd = ceil(num / den_const), num a non-negative register."""
    t = k.reg("den")
    k.const(t, den_const)
    k.add(rd, num, t)
    k.addi(rd, rd, -1)
    k.div(rd, rd, t)
    k.release(t)


def tile_loop(k, t, ntiles, body, epilogue=None):
    """for t in range(ntiles): body(b), b = t % 2 known when the code is written: the loop is unrolled twice
    so each half can name its own buffers and semaphores. epilogue(b) runs after the loop when at least one
    tile ran, b being the parity of the last tile."""
    top, exit0, exit1, done = k.label("tile"), k.label("tiles_exit0"), k.label("tiles_exit1"), k.label("tiles_done")
    k.const(t, 0)
    k.place(top)
    k.bge(t, ntiles, exit0)
    body(0)
    k.addi(t, t, 1)
    k.bge(t, ntiles, exit1)
    body(1)
    k.addi(t, t, 1)
    k.jmp(top)
    k.place(exit0)
    if epilogue is not None:
        k.beq(t, k.zero, done)
        epilogue(1)
        k.jmp(done)
    k.place(exit1)
    if epilogue is not None:
        epilogue(0)
    k.place(done)


# --- streaming elementwise kernels, in the kernel language ------------------------------------------------
# Each PE takes its share of range(n) (aligned to 64 elements) in tiles of T elements; the pipelined loop
# loads tile t+1 while tile t computes, and results leave on the store engine (e1 when the PE has two).
def _unary_stream(x: lang.anysize, out: lang.anysize, n, T: lang.constexpr, op: lang.constexpr):
    lo, hi = lang.split(n, align=ALIGN)
    for i in range(lo, hi, T, pipeline=True):
        end = lang.minimum(i + T, hi)
        lang.store(out[i:end], getattr(lang, op)(lang.load(x[i:end])))


def _binary_stream(x0: lang.anysize, x1: lang.anysize, out: lang.anysize, n, T: lang.constexpr,
                   op: lang.constexpr):
    lo, hi = lang.split(n, align=ALIGN)
    for i in range(lo, hi, T, pipeline=True):
        end = lang.minimum(i + T, hi)
        lang.store(out[i:end], getattr(lang, op)(lang.load(x0[i:end]), lang.load(x1[i:end])))


def _convert_stream(x: lang.anysize, out: lang.anysize, n, q, T: lang.constexpr):
    """out = x converted to out's dtype with the run-time scale and zero point q (vcvt's operand)."""
    lo, hi = lang.split(n, align=ALIGN)
    for i in range(lo, hi, T, pipeline=True):
        end = lang.minimum(i + T, hi)
        lang.store(out[i:end], lang.load(x[i:end]).astype(out.dtype, qparam=q))


def _stream_image(card, op, in_dts, out_dt, T):
    """The compiled streaming kernel `op` (a module with one kernel named op) for this card."""
    fn = _convert_stream if op in ("quantize", "dequantize") else _binary_stream if len(in_dts) == 2 else \
        _unary_stream
    k = lang.library_kernel(fn, op)
    arrays = [np.empty(0, NP[dt]) for dt in in_dts] + [np.empty(0, NP[out_dt]), 0]
    extra = [0, T] if fn is _convert_stream else [T, op]
    return k.compile(*arrays, *extra, config=card.config).image


def _local_bytes(card):
    return int(card.config.local_memory.bytes)


def store_engine(card):
    """The engine results leave on: e1 when the PE has a second engine (stores then overlap loads), else e0."""
    return 1 if card.config.dma.engines_per_pe > 1 else 0


def stream_tile(card, in_dts, out_dt):
    """Elements per tile of a streaming kernel: double-buffered inputs and output fit local memory, and no
    operand tile exceeds TILE_CAP bytes."""
    per = 2 * (sum(EB[d] for d in in_dts) + EB[out_dt])
    fit = (_local_bytes(card) - RESERVED) // per   # T is a multiple of ALIGN: the buffers need no padding
    cap = TILE_CAP // max(EB[d] for d in list(in_dts) + [out_dt])
    T = min(fit, cap) // ALIGN * ALIGN
    if T < ALIGN:
        raise InvalidArgument(f"local memory of {_local_bytes(card)} bytes is too small for a streaming kernel")
    return T


def tile_elements(card, op, dtype="fp32"):
    """Elements per tile the streaming op `op` uses on this card (the largest single-tile share per PE)."""
    dt = _dt_name(dtype)
    if op in BINARY:
        return stream_tile(card, [dt, dt], dt)
    if op in UNARY:
        return stream_tile(card, [dt], dt)
    if op == "quantize":
        return stream_tile(card, ["f32"], "i8")
    if op == "dequantize":
        return stream_tile(card, ["i8"], "f32")
    raise InvalidArgument(f"tile_elements: {op!r} is not a streaming op")


def _dt_name(dtype):
    names = {"fp32": "f32", "fp16": "f16", "f32": "f32", "f16": "f16"}
    if isinstance(dtype, str) and dtype in names:
        return names[dtype]
    try:
        return FLOAT_DTYPES[np.dtype(dtype)]
    except (TypeError, KeyError):
        raise InvalidArgument(f"dtype must be fp32 or fp16, got {dtype!r}") from None


def _stream_kernel(card, op, in_dts, out_dt):
    """(cache key, build) of the streaming kernel `op` tiled for this card, for runner.run / runner.image."""
    T = stream_tile(card, in_dts, out_dt)
    return (("elementwise", op, tuple(in_dts), out_dt, T, card.config.data["name"], _local_bytes(card),
             store_engine(card)), lambda: _stream_image(card, op, in_dts, out_dt, T))


def _launch_stream(card, op, in_dts, out_dt, inputs, shape, extra_vals, pes, trace):
    key, build = _stream_kernel(card, op, in_dts, out_dt)
    n = int(np.prod(shape, dtype=np.int64))
    args = [np.ascontiguousarray(a).reshape(-1) for a in inputs] + [runner.Out((n,), NP[out_dt]), n] + list(extra_vals)
    (out,), result = runner.run(card, key, build, op, args, pes=pes, trace=trace)
    return out.reshape(shape), result


def _float_array(op, name, x):
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.dtype not in FLOAT_DTYPES:
        raise InvalidArgument(f"{op}: {name} must be a float32 or float16 array, got dtype {x.dtype}")
    return x


def _elementwise_parts(op, dt):
    """The input dtypes of the streaming kernel of add/mul/relu/sigmoid/tanh/gelu in dtype dt."""
    if op in BINARY:
        return [dt, dt]
    if op in UNARY:
        return [dt]
    raise InvalidArgument(f"no elementwise kernel {op!r}; there are {', '.join(sorted({**BINARY, **UNARY}))}")


def module_image(card, op, dtype="fp32"):
    """The module image of an elementwise op for the driver (or the C API): one kernel named `op` with the
    arguments (x0, [x1,] out, n): buffers of n elements of `dtype`, and n. The tile size is the card's."""
    dt = _dt_name(dtype)
    return runner.image(*_stream_kernel(card, op, _elementwise_parts(op, dt), dt))


def _binary(op, card, a, b, pes, trace):
    a, b = _float_array(op, "a", a), _float_array(op, "b", b)
    if a.shape != b.shape:
        raise InvalidArgument(f"{op}: a and b must have the same shape, got {a.shape} and {b.shape}")
    if a.dtype != b.dtype:
        raise InvalidArgument(f"{op}: a and b must have the same dtype, got {a.dtype} and {b.dtype}")
    dt = FLOAT_DTYPES[a.dtype]
    return _launch_stream(card, op, _elementwise_parts(op, dt), dt, [a, b], a.shape, [], pes, trace)


def _unary(op, card, x, pes, trace):
    x = _float_array(op, "x", x)
    dt = FLOAT_DTYPES[x.dtype]
    return _launch_stream(card, op, _elementwise_parts(op, dt), dt, [x], x.shape, [], pes, trace)


def add(card, a, b, pes=None, trace=False):
    """a + b elementwise (fp32 or fp16, same shape). Returns (array, LaunchResult)."""
    return _binary("add", card, a, b, pes, trace)


def mul(card, a, b, pes=None, trace=False):
    """a * b elementwise (fp32 or fp16, same shape). Returns (array, LaunchResult)."""
    return _binary("mul", card, a, b, pes, trace)


def relu(card, x, pes=None, trace=False):
    return _unary("relu", card, x, pes, trace)


def sigmoid(card, x, pes=None, trace=False):
    return _unary("sigmoid", card, x, pes, trace)


def tanh(card, x, pes=None, trace=False):
    return _unary("tanh", card, x, pes, trace)


def gelu(card, x, pes=None, trace=False):
    """The exact (erf) GELU."""
    return _unary("gelu", card, x, pes, trace)


def _check_qparams(op, scale, zero_point):
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise InvalidArgument(f"{op}: scale must be a number, got {scale!r}")
    s = np.float32(scale)
    if not (np.isfinite(s) and s > 0):
        raise InvalidArgument(f"{op}: scale must be a positive finite fp32 number, got {scale!r}")
    if isinstance(zero_point, bool) or not isinstance(zero_point, (int, np.integer)):
        raise InvalidArgument(f"{op}: zero_point must be an integer, got {zero_point!r}")
    if not -128 <= int(zero_point) <= 127:
        raise InvalidArgument(f"{op}: zero_point must be in [-128, 127] (int8), got {zero_point}")
    return s, int(zero_point)


def _qparam(scale_f32, zero_point):
    """The vcvt parameter register: fp32 scale bits low, int32 zero point high (as a signed int64)."""
    v = f32_bits(float(scale_f32)) | ((int(zero_point) & 0xFFFFFFFF) << 32)
    return v - (1 << 64) if v >> 63 else v


def _quant_scale(scale):
    """The factor the card multiplies by: 1.0f / f32(scale) in fp32, as PyTorch computes it (not f32(1 / scale)
    of the float64 scale: for scales that fp32 cannot hold exactly the two differ in the last bit, and so do
    the codes of values near a tie)."""
    return torch_inverse_scale(scale)


def quantize(card, x, scale, zero_point=0, pes=None, trace=False):
    """fp32 -> int8: q = clamp(round_half_even(fma(x, 1.0f / f32(scale), zero_point)), -128, 127), x * inv +
    zero_point rounded once to fp32 (torch.quantize_per_tensor bit for bit); NaN -> 0."""
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise InvalidArgument(f"quantize: x must be a float32 array, got dtype {x.dtype}")
    s, zp = _check_qparams("quantize", scale, zero_point)
    inv = _quant_scale(s)
    if not np.isfinite(inv) or inv == 0:
        raise InvalidArgument(f"quantize: 1/scale = {1.0 / float(s)} is not a finite nonzero fp32 number")
    return _launch_stream(card, "quantize", ["f32"], "i8", [x], x.shape, [_qparam(inv, zp)], pes, trace)


def dequantize(card, q, scale, zero_point=0, pes=None, trace=False):
    """int8 -> fp32: y = (q - zero_point) * scale."""
    q = np.asarray(q)
    if q.dtype != np.int8:
        raise InvalidArgument(f"dequantize: q must be an int8 array, got dtype {q.dtype}")
    s, zp = _check_qparams("dequantize", scale, zero_point)
    return _launch_stream(card, "dequantize", ["i8"], "f32", [q], q.shape, [_qparam(s, zp)], pes, trace)


# --- concat ---------------------------------------------------------------------------------------------------
def _concat_module(widths):
    """concat(x0, .., out, rows): widths are the inputs' row bytes (baked in: kernels are shape-specialized)."""
    W = sum(widths)
    args = {f"x{i}": ("buffer", "u8") for i in range(len(widths))}
    args["out"] = ("buffer", "u8")
    args["rows"] = ("scalar", "i64")
    kb = KernelBuilder()
    with kb.kernel("concat", **args) as k:
        A = k.args
        lo, hi, r0, cnt, src, dst, tmp, nb, ss, ds = k.regs("lo", "hi", "r0", "cnt", "src", "dst", "tmp", "nb",
                                                          "ss", "ds")
        pe_share(k, A.rows, lo, hi)
        k.const(ds, W)
        live = [i for i, w in enumerate(widths) if w > 0]
        with k.for_range(r0, lo, hi, step=CONCAT_ROW_CHUNK):
            k.sub(cnt, hi, r0)
            k.const(tmp, CONCAT_ROW_CHUNK)
            k.min(cnt, cnt, tmp)
            col = 0
            for i, w in enumerate(widths):
                if w > 0:
                    # rows r0.. of input i -> out[r0.., col:col+w]: one 2-D descriptor, DRAM -> DRAM.
                    # One engine for all: the sanitizer sees a strided transfer as its bounding interval,
                    # and the column blocks' intervals interleave.
                    scale_reg(k, src, r0, w)
                    k.add(src, src, A[f"x{i}"])
                    scale_reg(k, dst, r0, W)
                    k.add(dst, dst, A.out)
                    if col:
                        k.const(tmp, col)
                        k.add(dst, dst, tmp)
                    k.const(nb, w)
                    k.mov(ss, nb)
                    k.dma_dim(0, "d1", cnt, ss, ds)
                    k.dma(0, dst, src, nb, SEM_STORE[0])
                col += w
            if live:
                k.wait(SEM_STORE[0], len(live))
    return kb.build()


def concat(card, arrays, axis=-1, pes=None, trace=False):
    """Concatenate 2-D arrays of one dtype and row count along the last axis, by DMA from DRAM to DRAM."""
    if not isinstance(arrays, (list, tuple)) or not arrays:
        raise InvalidArgument("concat: arrays must be a non-empty list of 2-D arrays")
    if axis not in (-1, 1):
        raise InvalidArgument(f"concat: only the last axis (axis=-1 or 1) is supported, got axis={axis!r}")
    xs = [np.asarray(a) for a in arrays]
    if len(xs) > CONCAT_MAX_INPUTS:
        raise InvalidArgument(f"concat: at most {CONCAT_MAX_INPUTS} arrays per call, got {len(xs)}")
    for i, x in enumerate(xs):
        if x.ndim != 2:
            raise InvalidArgument(f"concat: arrays[{i}] must be 2-D, got shape {x.shape}")
        if x.dtype != xs[0].dtype:
            raise InvalidArgument(f"concat: arrays[{i}] has dtype {x.dtype}, arrays[0] has {xs[0].dtype}")
        if x.shape[0] != xs[0].shape[0]:
            raise InvalidArgument(f"concat: arrays[{i}] has {x.shape[0]} rows, arrays[0] has {xs[0].shape[0]}")
        if x.dtype.hasobject or x.dtype.itemsize == 0:
            raise InvalidArgument(f"concat: dtype {x.dtype} is not a plain numeric dtype")
    dt = xs[0].dtype
    rows = xs[0].shape[0]
    widths = tuple(int(x.shape[1]) * dt.itemsize for x in xs)
    W = sum(x.shape[1] for x in xs)
    key = ("concat", widths)
    args = [np.ascontiguousarray(x) for x in xs] + [runner.Out((rows, W), dt), rows]
    (out,), result = runner.run(card, key, lambda: _concat_module(widths), "concat", args, pes=pes, trace=trace)
    return out, result


# --- transpose ----------------------------------------------------------------------------------------------
def transpose_tile(card, itemsize):
    """Square tile edge: four tiles (two read blocks, two transposed blocks) fill local memory at most."""
    T = int(math.isqrt(_local_bytes(card) // (4 * itemsize))) // 16 * 16
    if T < 16:
        raise InvalidArgument(f"local memory of {_local_bytes(card)} bytes is too small for transpose tiles")
    return min(256, T)


def _transpose_module(es, T, store_eng=1):
    """transpose(x, out, R, C): out[C, R] = x[R, C]^T for es-byte elements, T x T blocks.
    PE p takes a share of the output rows (input columns), so its writes never meet another PE's."""
    tb = T * T * es
    A_ = (0, tb)
    B_ = (2 * tb, 3 * tb)
    SEM_X = SEM_LOAD          # load + local transpose of a block (same engine: in order)
    kb = KernelBuilder()
    with kb.kernel("transpose", x=("buffer", "u8"), out=("buffer", "u8"), R=("scalar", "i64"),
                   C=("scalar", "i64")) as k:
        A = k.args
        jlo, jhi, nI, ntiles, t, j0, i0, tj, ti, pj0, pi0, ptj, pti, tmp, t2, a1, a2, rb, cb, Rb = k.regs(
            "jlo", "jhi", "nI", "ntiles", "t", "j0", "i0", "tj", "ti", "pj0", "pi0", "ptj", "pti", "tmp", "t2",
            "a1", "a2", "rb", "cb", "Rb")
        pe_share(k, A.C, jlo, jhi)
        ceil_div(k, nI, A.R, T)
        k.sub(tmp, jhi, jlo)
        ceil_div(k, ntiles, tmp, T)
        k.mul(ntiles, ntiles, nI)
        scale_reg(k, cb, A.C, es)                      # input row pitch
        scale_reg(k, Rb, A.R, es)                      # output row pitch

        def coords():
            k.div(tmp, t, nI)                          # column block
            k.mul(t2, tmp, nI)
            k.sub(t2, t, t2)                           # row block
            scale_reg(k, j0, tmp, T)
            k.add(j0, j0, jlo)
            scale_reg(k, i0, t2, T)
            k.const(tmp, T)
            k.sub(tj, jhi, j0)
            k.min(tj, tj, tmp)
            k.sub(ti, A.R, i0)
            k.min(ti, ti, tmp)

        def store(b):
            """Write the transposed block of the previous tile (pj0, pi0, ptj x pti) from B[b]."""
            k.wait(SEM_X[b], 2)
            k.mul(a1, pj0, A.R)
            k.add(a1, a1, pi0)
            scale_reg(k, a1, a1, es)
            k.add(a1, a1, A.out)
            k.const(a2, B_[b])
            scale_reg(k, rb, pti, es)
            k.dma_dim(store_eng, "d1", ptj, rb, Rb)
            k.dma(store_eng, a1, a2, rb, SEM_STORE[b])

        def body(b):
            coords()
            # load x[i0:i0+ti, j0:j0+tj] -> A[b], packed ti x tj
            k.mul(a1, i0, A.C)
            k.add(a1, a1, j0)
            scale_reg(k, a1, a1, es)
            k.add(a1, a1, A.x)
            k.const(a2, A_[b])
            scale_reg(k, rb, tj, es)
            k.dma_dim(0, "d1", ti, cb, rb)
            k.dma(0, a2, a1, rb, SEM_X[b])
            k.const(tmp, 2)
            with k.if_("ge", t, tmp):                  # the store of tile t-2 has left B[b]
                k.wait(SEM_STORE[b], 1)
            # A[b] (ti x tj) -> B[b] (tj x ti): element-size rows, one 3-D descriptor
            k.const(a1, B_[b])
            k.const(tmp, es)
            scale_reg(k, t2, ti, es)
            k.dma_dim(0, "d1", ti, rb, tmp)
            k.dma_dim(0, "d2", tj, tmp, t2)
            k.dma(0, a1, a2, tmp, SEM_X[b])
            with k.if_("ne", t, k.zero):               # tile t-1 is transposed: write it out
                store(1 - b)
            k.mov(pj0, j0)
            k.mov(pi0, i0)
            k.mov(ptj, tj)
            k.mov(pti, ti)

        tile_loop(k, t, ntiles, body, epilogue=store)
        k.fence()
    return kb.build()


def transpose(card, x, pes=None, trace=False):
    """out = x.T for a 2-D array of any plain dtype, by DMA only (tiled through local memory)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise InvalidArgument(f"transpose: x must be 2-D, got shape {x.shape}")
    if x.dtype.hasobject or x.dtype.itemsize == 0:
        raise InvalidArgument(f"transpose: dtype {x.dtype} is not a plain numeric dtype")
    es = x.dtype.itemsize
    T = transpose_tile(card, es)
    R, C = x.shape
    eng = store_engine(card)
    key = ("transpose", es, T, eng)
    args = [np.ascontiguousarray(x), runner.Out((C, R), x.dtype), R, C]
    (out,), result = runner.run(card, key, lambda: _transpose_module(es, T, eng), "transpose", args, pes=pes,
                                trace=trace)
    return out, result


# --- numpy references --------------------------------------------------------------------------------------
def _via_f32(y64, dtype):
    """fp64 result -> fp32 (the vector unit's rounding) -> the element type."""
    return np.asarray(y64).astype(np.float32).astype(dtype)


def reference_add(a, b):
    return (a.astype(np.float32) + b.astype(np.float32)).astype(a.dtype)


def reference_mul(a, b):
    return (a.astype(np.float32) * b.astype(np.float32)).astype(a.dtype)


def reference_relu(x):
    x32 = x.astype(np.float32)
    return np.where(x32 < 0, np.float32(0), x32).astype(x.dtype)     # NaN and -0.0 pass through (as PyTorch)


def reference_sigmoid(x):
    v = x.astype(np.float64)
    with np.errstate(over="ignore"):
        y = 1.0 / (1.0 + np.exp(-v))          # exp overflows to inf below -709: 1 / inf = 0; NaN stays NaN
    return _via_f32(y, x.dtype)


def reference_tanh(x):
    return _via_f32(np.tanh(x.astype(np.float64)), x.dtype)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def reference_gelu(x):
    v = x.astype(np.float64)
    with np.errstate(invalid="ignore"):
        y = 0.5 * v * (1.0 + _erf(v / math.sqrt(2.0))) if v.size else v
    y = np.where(np.isneginf(v), -0.0, y)      # the limit at -inf (the formula's -inf * 0 is NaN)
    return _via_f32(y, x.dtype)


def reference_quantize(x, scale, zero_point=0):
    return vcvt_to_int(x, _quant_scale(scale), zero_point)


def reference_dequantize(q, scale, zero_point=0):
    return ((q.astype(np.float64) - zero_point) * np.float64(np.float32(scale))).astype(np.float32)


def reference_concat(arrays, axis=-1):
    return np.concatenate(arrays, axis=-1)


def reference_transpose(x):
    return np.ascontiguousarray(x.T)


REFERENCES = {"add": reference_add, "mul": reference_mul, "relu": reference_relu, "sigmoid": reference_sigmoid,
              "tanh": reference_tanh, "gelu": reference_gelu}
HOST = {"add": add, "mul": mul, "relu": relu, "sigmoid": sigmoid, "tanh": tanh, "gelu": gelu}
TRANSCENDENTAL = ("sigmoid", "tanh", "gelu")


def tolerance(op, dtype="fp32"):
    """(rtol, atol) of the card against the reference: exact except the fp64 transcendental functions, whose
    libm may differ from numpy's in the last fp64 bit (one fp32/fp16 ulp after rounding, rarely)."""
    if op not in TRANSCENDENTAL:
        return (0.0, 0.0)
    return (2e-7, 1e-30) if _dt_name(dtype) == "f32" else (1e-3, 1e-7)


# --- the op registry --------------------------------------------------------------------------------------
def _np_dtype(p):
    return np.float32 if _dt_name(p["dtype"]) == "f32" else np.float16


def _ew_spec(op):
    def make(rng, p):
        d = {"a": (rng.standard_normal(p["n"]) * 3).astype(_np_dtype(p))}
        if op in BINARY:
            d["b"] = (rng.standard_normal(p["n"]) * 3).astype(_np_dtype(p))
        return d

    def run(card, x, p, pes):
        out, r = HOST[op](card, x["a"], x["b"], pes=pes) if op in BINARY else HOST[op](card, x["a"], pes=pes)
        return [out], r

    def ref(x, p):
        return [REFERENCES[op](x["a"], x["b"]) if op in BINARY else REFERENCES[op](x["a"])]
    return OpSpec(op, dict(n=65536, dtype="fp32"), make, run, ref, lambda p: tolerance(op, p["dtype"]),
                  lambda p: p["n"], f"elementwise {op} on the vector unit (fp32 or fp16)", {"dtype": ("fp32", "fp16")})


def _q_inputs(rng, p):
    return {"x": (rng.standard_normal(p["n"]) * 2).astype(np.float32)}


def _dq_inputs(rng, p):
    return {"q": rng.integers(-128, 128, p["n"]).astype(np.int8)}


def _concat_inputs(rng, p):
    return {f"x{i}": rng.standard_normal((p["rows"], p[f"w{i}"])).astype(np.float32) for i in range(3)}


OPS = [_ew_spec(op) for op in ("add", "mul", "relu", "sigmoid", "tanh", "gelu")] + [
    OpSpec("quantize", dict(n=65536, scale=0.05, zero_point=3), _q_inputs,
           lambda card, x, p, pes: (lambda o, r: ([o], r))(*quantize(card, x["x"], p["scale"], int(p["zero_point"]),
                                                                      pes=pes)),
           lambda x, p: [reference_quantize(x["x"], p["scale"], int(p["zero_point"]))], lambda p: (0.0, 0.0),
           lambda p: p["n"], "fp32 -> int8: clamp(rint(fma(x, 1/scale, zero_point))) with vcvt (torch.quantize_per_tensor)"),
    OpSpec("dequantize", dict(n=65536, scale=0.05, zero_point=3), _dq_inputs,
           lambda card, x, p, pes: (lambda o, r: ([o], r))(*dequantize(card, x["q"], p["scale"],
                                                                        int(p["zero_point"]), pes=pes)),
           lambda x, p: [reference_dequantize(x["q"], p["scale"], int(p["zero_point"]))], lambda p: (0.0, 0.0),
           lambda p: p["n"], "int8 -> fp32: (q - zero_point) * scale with vcvt"),
    OpSpec("concat", dict(rows=512, w0=64, w1=32, w2=96), _concat_inputs,
           lambda card, x, p, pes: (lambda o, r: ([o], r))(*concat(card, [x["x0"], x["x1"], x["x2"]], pes=pes)),
           lambda x, p: [reference_concat([x["x0"], x["x1"], x["x2"]])], lambda p: (0.0, 0.0),
           lambda p: 0, "concatenate three fp32 [rows, w_i] arrays along the last axis, DRAM -> DRAM by DMA"),
    OpSpec("transpose", dict(rows=512, cols=384), lambda rng, p: {"x": rng.standard_normal(
               (p["rows"], p["cols"])).astype(np.float32)},
           lambda card, x, p, pes: (lambda o, r: ([o], r))(*transpose(card, x["x"], pes=pes)),
           lambda x, p: [reference_transpose(x["x"])], lambda p: (0.0, 0.0),
           lambda p: 0, "2-D transpose by DMA, tiled through local memory (element-size rows, one descriptor per "
           "tile)"),
]
