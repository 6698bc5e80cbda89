"""DLRM's pairwise dot-product feature interaction on the matrix unit.

For every sample b, Z = [x_b; e_b] stacks the dense features (D values) over the T pooled embeddings
(T rows of D): F = T + 1 rows. The output row is concat(x_b, lower triangle of Z Z^T with i > j in
row-major order): D + F(F-1)/2 fp32 values.

On the card (samples split into tiles of S consecutive samples, tiles dealt round-robin to the PEs):

    load     x tile [S, D] and e tile [S, T*D]: two contiguous DMAs, double-buffered (the next tile's
             loads run while this tile computes)
    Z        two 2-D local DMAs interleave x rows and e rows into Z [S, F, D] (the input dtype)
    Z^T      one strided local DMA per sample (element-size rows: d1 over D, d2 over F) -> Z^T [D, F]
    matmul   per sample: mm.ldw Z^T (K = D, N = F), mm.mul Z (M = F) -> P [F, F] fp32, with dt = the
             input dtype (fp32 inputs multiply in fp32; fp16 is a dtype the caller chooses)
    dense    x (fp32; fp16 inputs through vcvt f16 -> f32) into columns 0..D-1 of the output rows
    gather   for i = 1..F-1 one 2-D local DMA over the tile's samples: P[s, i, 0:i] -> the output
             rows at D + i(i-1)/2 (row i of the triangle has i elements)
    store    one contiguous DMA of the tile's output rows, double-buffered

Numerics (what `reference_dot_interaction` computes; the card matches it bit for bit):
- fp32 inputs: exact products summed in fp64 in K (= D) order, rounded once to fp32. Against exact math
  |card - exact| <= 2**-24 |exact| + D 2**-53 sum_k |z_ik z_jk| (so 1e-8 x 1e8 gives 4.0, 7e4 stays 7e4).
- fp16 inputs: products exact in fp32, sums in fp32 in K order:
  |card - exact| <= 2 D 2**-24 sum_k |z_ik z_jk|.
The dense part is copied exactly. NaN and inf propagate as in IEEE arithmetic (PyTorch's bmm gives the same
NaN positions); a NaN the matrix unit makes is the canonical quiet NaN.
"""
from __future__ import annotations

import numpy as np

from vnpu.emulator.state import WEIGHT_BUFFER_BYTES
from vnpu.errors import InvalidArgument

from .builder import KernelBuilder, addc, mulc
from .library import OpSpec
from .runner import Out, nothing, run

S_MAX = 64                  # samples per tile: keeps every semaphore far below its 256 pending arrivals
WEIGHT_BUFFER = WEIGHT_BUFFER_BYTES   # the matrix unit's weight buffer per PE (mm.ldw K x N x 2 bytes at most)
ALIGN = 64
SEM_LOAD, SEM_STORE, SEM_LOC, SEM_MAT, SEM_VEC = 0, 1, 2, 3, 4
WINDOW = 8                  # local DMAs in flight before the kernel waits for the oldest


def _align(n):
    return -(-int(n) // ALIGN) * ALIGN





# --- layout --------------------------------------------------------------------------------------------
OUT_DTYPES = ("f32", "f16", "i8")


def layout(D, T, dtype, S, out="f32"):
    """Byte offsets of the kernel's PE-local buffers for tiles of S samples. With an f16 or i8 output each
    OUTi (the fp32 rows) is followed by CVTi (the fp16 rows; i8 rows go back into OUTi), so CVTi - OUTi is
    the same for both buffers."""
    F = T + 1
    W = D + F * (F - 1) // 2
    eb = 4 if dtype == "f32" else 2
    sizes = [("XIN0", S * D * eb), ("XIN1", S * D * eb), ("EIN0", S * T * D * eb), ("EIN1", S * T * D * eb)]
    if dtype != "f32":
        sizes += [("X32", S * D * 4)]
    sizes += [("Z16", S * F * D * eb), ("ZT", S * D * F * eb), ("P", S * F * F * 4)]
    if out == "f32":
        sizes += [("OUT0", S * W * 4), ("OUT1", S * W * 4)]
    else:
        sizes += [("OUT0", S * W * 4), ("CVT0", S * W * 2), ("OUT1", S * W * 4), ("CVT1", S * W * 2)]
    off, lay = 0, {}
    for name, n in sizes:
        lay[name] = off
        off += _align(n)
    lay["END"] = off
    return lay


def choose_tile(D, T, dtype, batch, npe, local_bytes, out="f32"):
    """Samples per tile: as many as local memory holds, at most S_MAX, at most an even share per PE."""
    s = min(S_MAX, max(1, -(-batch // max(1, npe))))
    while s >= 1 and layout(D, T, dtype, s, out)["END"] > local_bytes:
        s -= 1
    return s


# --- kernel --------------------------------------------------------------------------------------------
def build_kernel(D, T, dtype, S, two_engines, text=False, out="f32", out_scale=None, out_zero_point=0):
    """Module image with kernel `dot_interaction(dense, emb, out, batch)` for fixed D, T, dtype, tile S.

    out: the output rows' type. "f32" (the default, what `dot_interaction` returns); "f16": the fp32 rows
    rounded to fp16 on the vector unit (vcvt, scale 1.0); "i8": those fp16 rows quantized by vcvt with
    (f32(1 / out_scale), out_zero_point) -- two roundings, as a runtime that feeds an int8 layer from fp16
    activations computes. The rows are the same values as with "f32", rounded; `reference_rounded` computes them."""
    if out not in OUT_DTYPES:
        raise InvalidArgument(f"dot_interaction: out must be one of {', '.join(OUT_DTYPES)}, got {out!r}")
    if out == "i8" and out_scale is None:
        raise InvalidArgument("dot_interaction: an i8 output needs out_scale")
    F = T + 1
    W = D + F * (F - 1) // 2
    eb = 4 if dtype == "f32" else 2
    ob = {"f32": 4, "f16": 2, "i8": 1}[out]
    L = layout(D, T, dtype, S, out)
    IO, LOC = "e0", ("e1" if two_engines else "e0")
    kb = KernelBuilder()
    with kb.kernel("dot_interaction", dense=("buffer", dtype), emb=("buffer", dtype), out=("buffer", out),
                   batch=("scalar", "i32")) as k:
        a = k.args
        npe, t, ntiles, kc = k.regs("npe", "t", "ntiles", "kc")
        xc, xn, ec, en, oc, on = k.regs("xc", "xn", "ec", "en", "oc", "on")
        k.csrr(t, "pe_id")
        k.csrr(npe, "pe_count")
        s_reg = k.const(k.reg("S"), S)
        k.addi(ntiles, a.batch, S - 1)
        k.div(ntiles, ntiles, s_reg)
        end = k.label("end")
        k.bge(t, ntiles, end)
        for r, name in ((xc, "XIN0"), (xn, "XIN1"), (ec, "EIN0"), (en, "EIN1"), (oc, "OUT0"), (on, "OUT1")):
            k.const(r, L[name])

        def tile_rows(tile, row0, ns):
            """row0 = tile * S; ns = min(S, batch - row0)."""
            k.mul(row0, tile, s_reg)
            k.sub(ns, a.batch, row0)
            k.min(ns, ns, s_reg)

        def load(tile, xdst, edst):
            row0, ns, src, nb = k.regs("row0", "ns", "src", "nb")
            tile_rows(tile, row0, ns)
            mulc(k, src, row0, D * eb)
            k.add(src, src, a.dense)
            mulc(k, nb, ns, D * eb)
            k.dma(IO, xdst, src, nb, SEM_LOAD)
            mulc(k, src, row0, T * D * eb)
            k.add(src, src, a.emb)
            mulc(k, nb, ns, T * D * eb)
            k.dma(IO, edst, src, nb, SEM_LOAD)
            k.release(row0, ns, src, nb)

        load(t, xc, ec)
        k.li(kc, 0)
        top = k.label("tile")
        k.place(top)
        row0, ns, tmp = k.regs("row0", "ns", "tmp")
        tile_rows(t, row0, ns)
        k.comment("wait: this tile's loads")
        k.wait(SEM_LOAD, 2)
        # --- the tile's operands: fp32 inputs are used as they are (the matrix unit multiplies fp32) ----
        if dtype == "f32":
            xs, es = xc, ec
        else:
            xs, es = xc, ec
            x32 = k.const(k.reg("x32"), L["X32"])
            mulc(k, tmp, ns, D)
            k.vcvt(x32, xc, tmp, k.zero, "f16", "f32", SEM_VEC)     # waited for before the dense copy
            k.release(x32)
        # --- Z = [x; e] per sample -------------------------------------------------------------------
        z16 = k.const(k.reg("z16"), L["Z16"])
        k.copy(LOC, z16, xs, D * eb, SEM_LOC, rows=ns, src_stride=D * eb, dst_stride=F * D * eb)
        addc(k, tmp, z16, D * eb)
        k.copy(LOC, tmp, es, T * D * eb, SEM_LOC, rows=ns, src_stride=T * D * eb, dst_stride=F * D * eb)
        k.wait(SEM_LOC, 2)
        k.release(z16)
        # --- Z^T per sample: 2-byte rows, d1 over D (dst stride 2F), d2 over F (src stride 2D) ---------
        i, zs, zt, pp = k.regs("i", "zs", "zt", "pp")
        rD, rF, two, r2F, r2D = k.regs("rD", "rF", "two", "r2F", "r2D")
        k.const(rD, D)
        k.const(rF, F)
        k.const(two, eb)
        k.const(r2F, eb * F)
        k.const(r2D, eb * D)
        k.const(zs, L["Z16"])
        k.const(zt, L["ZT"])
        with k.for_range(i, 0, ns):
            k.dma_dim(LOC, "d1", rD, two, r2F)
            k.dma_dim(LOC, "d2", rF, r2D, two)
            k.dma(LOC, zt, zs, two, SEM_LOC)
            addc(k, zs, zs, F * D * eb)
            addc(k, zt, zt, D * F * eb)
        k.release(r2F, r2D, two)
        # --- prefetch the next tile into the other buffers ---------------------------------------------
        t2 = k.reg("t2")
        k.add(t2, t, npe)
        with k.if_("lt", t2, ntiles):
            load(t2, xn, en)
        # --- the matrix unit: weights Z^T, rows Z ------------------------------------------------------
        k.const(zs, L["Z16"])
        k.const(zt, L["ZT"])
        k.const(pp, L["P"])
        with k.for_range(i, 0, ns):
            k.wait(SEM_LOC, 1)
            k.mm_ldw(zt, rD, rF, dtype, SEM_MAT)
            k.mm_mul(pp, zs, rF, dtype, "set", SEM_MAT)
            addc(k, zs, zs, F * D * eb)
            addc(k, zt, zt, D * F * eb)
            addc(k, pp, pp, F * F * 4)
        k.release(zs, zt, rD, rF)
        # --- this tile's output buffer is free once the store of two tiles ago is done ----------------
        k.li(tmp, 2)
        with k.if_("ge", kc, tmp):
            k.wait(SEM_STORE, 1)
        if dtype == "f32":
            xsrc = xc
        else:
            k.wait(SEM_VEC, 1)
            xsrc = k.const(pp, L["X32"])
        k.copy(LOC, oc, xsrc, D * 4, SEM_LOC, rows=ns, src_stride=D * 4, dst_stride=W * 4)
        pending = 1
        with k.for_range(i, 0, ns):
            k.wait(SEM_MAT, 2)
        # --- lower triangle: row i of P (i elements) of every sample of the tile -----------------------
        for r in range(1, F):
            if pending == WINDOW:
                k.wait(SEM_LOC, 1)
                pending -= 1
            addc(k, tmp, oc, (D + r * (r - 1) // 2) * 4)
            k.const(pp, L["P"] + r * F * 4)
            k.copy(LOC, tmp, pp, r * 4, SEM_LOC, rows=ns, src_stride=F * F * 4, dst_stride=W * 4)
            pending += 1
        k.wait(SEM_LOC, pending)
        src = oc
        if out != "f32":
            # --- the rows to fp16 (and to int8) on the vector unit ----------------------------------------
            cvt, cnt, par = k.regs("cvt", "cnt", "par")
            addc(k, cvt, oc, L["CVT0"] - L["OUT0"])
            mulc(k, cnt, ns, W)
            k.const_f32(par, 1.0)
            k.vcvt(cvt, oc, cnt, par, "f32", "f16", SEM_VEC)
            k.wait(SEM_VEC, 1)
            if out == "i8":
                k.quant_param(par, np.float32(1.0) / np.float32(out_scale), out_zero_point)
                k.vcvt(oc, cvt, cnt, par, "f16", "i8", SEM_VEC)
                k.wait(SEM_VEC, 1)
            k.release(cnt, par)
            src = cvt if out == "f16" else oc
        # --- store the tile's rows ------------------------------------------------------------------------
        mulc(k, tmp, row0, W * ob)
        k.add(tmp, tmp, a.out)
        mulc(k, pp, ns, W * ob)
        k.dma(IO, tmp, src, pp, SEM_STORE)
        if out != "f32":
            k.release(cvt)
        k.release(i, pp)
        # --- next tile: swap the double buffers ------------------------------------------------------------
        for x, y in ((xc, xn), (ec, en), (oc, on)):
            k.mov(tmp, x)
            k.mov(x, y)
            k.mov(y, tmp)
        k.mov(t, t2)
        k.addi(kc, kc, 1)
        k.release(t2, row0, ns, tmp)
        k.blt(t, ntiles, top)
        k.place(end)
        k.fence()
    return kb.text() if text else kb.build()


# --- host side -----------------------------------------------------------------------------------------
def _check(dense, emb):
    if not isinstance(dense, np.ndarray) or not isinstance(emb, np.ndarray):
        raise InvalidArgument("dot_interaction: dense and emb must be numpy arrays")
    if dense.ndim != 2:
        raise InvalidArgument(f"dot_interaction: dense must be 2-D [batch, dim], got shape {dense.shape}")
    if emb.ndim != 3:
        raise InvalidArgument(f"dot_interaction: emb must be 3-D [batch, tables, dim], got shape {emb.shape}")
    for name, arr in (("dense", dense), ("emb", emb)):
        if arr.dtype not in (np.float32, np.float16):
            raise InvalidArgument(f"dot_interaction: {name} must be float32 or float16, got {arr.dtype}")
    if dense.dtype != emb.dtype:
        raise InvalidArgument(f"dot_interaction: dense ({dense.dtype}) and emb ({emb.dtype}) must have the same "
                              "dtype")
    B, D = dense.shape
    if emb.shape[0] != B or emb.shape[2] != D:
        raise InvalidArgument(f"dot_interaction: emb shape {emb.shape} does not match dense shape {dense.shape}: "
                              f"expected [{B}, tables, {D}]")
    T = emb.shape[1]
    if B >= 1 << 31:
        raise InvalidArgument(f"dot_interaction: batch {B} does not fit a 32-bit argument")
    return B, T, D


def dot_interaction(card, dense, emb, pes=None):
    """DLRM dot interaction of dense [B, D] and pooled embeddings emb [B, T, D] (both float32 or both
    float16) on `card`. Returns (out [B, D + F(F-1)/2] float32 with F = T + 1, LaunchResult)."""
    return launch(card, dense, emb, pes=pes)


def launch(card, dense, emb, pes=None, S=None):
    """dot_interaction with the tile size S (samples per tile) chosen, or forced (tests).

    Empty operands give PyTorch's results: batch 0 an empty [0, W]; no tables (F = 1) the dense rows alone;
    dim 0 zeros (every dot product is an empty sum). The card computes the last two on one zero table /
    one zero feature, which adds only exact zeros, and the host drops those columns."""
    B, T, D = _check(dense, emb)
    if B == 0:
        F = T + 1
        return np.zeros((0, D + F * (F - 1) // 2), np.float32), nothing(card, "dot_interaction", pes)
    if T == 0 or D == 0:
        Tp, Dp = max(T, 1), max(D, 1)
        dp = np.zeros((B, Dp), dense.dtype)
        dp[:, Dp - D:] = dense
        ep = np.zeros((B, Tp, Dp), emb.dtype)
        ep[:, :T, Dp - D:] = emb
        out, result = launch(card, dp, ep, pes=pes, S=S)
        keep = out[:, Dp - D:Dp] if T == 0 else np.concatenate([out[:, Dp - D:Dp], out[:, Dp:]], axis=1)
        return np.ascontiguousarray(keep), result
    dtype = "f32" if dense.dtype == np.float32 else "f16"
    F = T + 1
    W = D + F * (F - 1) // 2
    cfg = card.config
    eb = 4 if dtype == "f32" else 2
    if D * F * eb > WEIGHT_BUFFER:
        raise InvalidArgument(f"dot_interaction: Z^T of dim {D} x {F} rows is {D * F * eb} bytes of {dense.dtype}, "
                              f"more than the matrix unit's {WEIGHT_BUFFER}-byte weight buffer")
    npe = len(set(pes)) if pes is not None else cfg.pes
    if S is None:
        S = choose_tile(D, T, dtype, B, npe, cfg.local_memory.bytes)
    if S < 1 or layout(D, T, dtype, S)["END"] > cfg.local_memory.bytes:
        raise InvalidArgument(f"dot_interaction: one sample of dim {D} with {T} tables needs "
                              f"{layout(D, T, dtype, 1)['END']} bytes of PE-local memory, the card has "
                              f"{cfg.local_memory.bytes}")
    two = cfg.dma.engines_per_pe >= 2
    key = ("interaction", D, T, dtype, S, two)
    (out,), result = run(card, key, lambda: build_kernel(D, T, dtype, S, two), "dot_interaction",
                         [np.ascontiguousarray(dense), np.ascontiguousarray(emb), Out((B, W), np.float32), B],
                         pes=pes)
    return out, result


def max_tables(D, dtype, local_bytes):
    """The largest T for which one sample fits a PE's local memory (and Z^T the weight buffer)."""
    T = 1
    eb = 4 if dtype == "f32" else 2
    while layout(D, T + 1, dtype, 1)["END"] <= local_bytes and D * (T + 2) * eb <= WEIGHT_BUFFER:
        T += 1
    return T if layout(D, T, dtype, 1)["END"] <= local_bytes else 0


# --- numpy references ------------------------------------------------------------------------------------
def reference_dot_interaction(dense, emb, exact=True):
    """exact=True: what the card computes, bit for bit (inputs rounded to fp16, products and sums in fp32
    in K order). exact=False: plain fp32 on the inputs as given (no fp16 rounding, numpy's matmul order)."""
    dense, emb = np.asarray(dense), np.asarray(emb)
    B, D = dense.shape
    F = emb.shape[1] + 1
    z = np.concatenate([dense[:, None, :], emb], axis=1)
    if exact and z.dtype == np.float32:
        # fp32 on the matrix unit: exact products summed in fp64 in K (= D) order, rounded once to fp32
        z64 = z.astype(np.float64)
        p64 = np.zeros((B, F, F), np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            for kk in range(D):
                col = z64[:, :, kk]
                p64 += col[:, :, None] * col[:, None, :]
            p = p64.astype(np.float32)
    elif exact:
        z = z.astype(np.float32)
        p = np.zeros((B, F, F), np.float32)
        with np.errstate(invalid="ignore", over="ignore"):
            for kk in range(D):
                col = z[:, :, kk]
                p += col[:, :, None] * col[:, None, :]
    else:
        z = z.astype(np.float32)
        p = np.matmul(z, z.transpose(0, 2, 1))
    li, lj = np.tril_indices(F, -1)
    return np.concatenate([dense.astype(np.float32), p[:, li, lj]], axis=1)


def reference_rounded(dense, emb, out="f16", out_scale=None, out_zero_point=0):
    """What `build_kernel(..., out="f16" | "i8")` writes, bit for bit: the exact reference rounded to fp16,
    then (i8) quantized like vcvt with (f32(1 / out_scale), out_zero_point)."""
    from .reference import vcvt_to_int
    y = reference_dot_interaction(dense, emb).astype(np.float16)
    if out == "f16":
        return y
    return vcvt_to_int(y.astype(np.float32), np.float32(1.0) / np.float32(out_scale), out_zero_point)


def error_bound(dense, emb):
    """Per-element bound of |card - reference_dot_interaction(exact=False)| (plain fp32 math; see the module
    doc, plus fp32's own summation error)."""
    z = np.abs(np.concatenate([dense[:, None, :], emb], axis=1).astype(np.float64))
    D = z.shape[2]
    mag = np.matmul(z, z.transpose(0, 2, 1))
    li, lj = np.tril_indices(z.shape[1], -1)
    rel = 4 * D * 2.0 ** -24
    return np.concatenate([np.zeros(dense.shape), rel * mag[:, li, lj] * (1 + 2.0 ** -8)], axis=1)


# --- registry ----------------------------------------------------------------------------------------------
def _make_inputs(rng, p):
    dt = np.float32 if p["dtype"] == "fp32" else np.float16
    return {"dense": rng.standard_normal((p["batch"], p["dim"])).astype(dt),
            "emb": rng.standard_normal((p["batch"], p["tables"], p["dim"])).astype(dt)}


def _ops(p):
    F = p["tables"] + 1
    return 2 * p["batch"] * F * F * p["dim"]


OPS = [OpSpec(
    name="dot_interaction",
    params={"batch": 64, "tables": 26, "dim": 64, "dtype": "fp32"},
    make_inputs=_make_inputs,
    run=lambda card, inp, p, pes=None: (lambda r: ([r[0]], r[1]))(dot_interaction(card, inp["dense"], inp["emb"],
                                                                                   pes=pes)),
    reference=lambda inp, p: [reference_dot_interaction(inp["dense"], inp["emb"])],
    # the reference is the card's arithmetic (fp16 inputs, fp32 K-order sums): equal bit for bit
    tolerance=lambda p: (0.0, 0.0),
    ops_per_call=_ops,
    doc="DLRM pairwise dot interaction: concat(x, tril(Z Z^T, -1)) per sample, Z = [x; e] in fp16, fp32 sums",
    choices={"dtype": ["fp32", "fp16"]},
)]
