"""Row-wise normalizations on the vector unit: layer_norm and softmax over the last axis of a 2-D fp32 array.

PE p takes the p-th share of the rows (by pe_id / pe_count) and walks it in blocks of rows that fit its
local memory, double-buffered like the elementwise kernels (the next block's DMA is issued before this
block is computed, results leave on the second engine). Inside a block each row is one short chain of
vector ops; the vector queue is in order, so a row's ops follow each other without waits, and the PE waits
for row r-1's ops after issuing row r's (at most two rows of signals pending).

Per row, in the order the references below repeat step by step (every step rounds to fp32; vsum adds in
index order in fp64):
  layer_norm: xs = x - x[0]; s = vsum(xs); ms = s * f32(1/D); xc = xs - ms; sq = xc * xc;
              v = vsum(sq) * f32(1/D); rstd = vrsqrt(v + eps); y = xc * rstd [* gamma] [+ beta]  -- bit-exact
              The row is shifted by its first element before the mean is taken, so a constant row has
              xs = 0, xc = 0 exactly and gives exactly beta (as PyTorch does); without the shift the mean
              `sum * f32(1/D)` can land an ulp off a constant row's value and the residual, divided by
              sqrt(ulp^2 + eps), becomes visible. In general the shift costs nothing in accuracy: against
              float64 math the result is within 1e-5 * (1 + |gamma|) + |beta| ulps (tests/ops/test_ops_vs_torch.py).
              A row holding NaN or +-inf gives NaN in every element (PyTorch does the same).
  softmax:    m = vrmax(x); e = vexp(x - m); s = vsum(e); r = vrecip(s); y = e * r
              -- exp in fp64 rounded to fp32; libm and numpy may differ in the last fp64 bit, hence a tolerance.
"""
from __future__ import annotations

import numpy as np

from vnpu.errors import InvalidArgument

from . import runner
from .builder import KernelBuilder
from .elementwise import (ALIGN, SEM_LOAD, SEM_ONCE, SEM_STORE, SEM_VEC, TILE_CAP, pe_share, store_engine,
                          tile_loop)
from .library import OpSpec

# scalar slots at the bottom of local memory (f32 each)
C_INVD, C_EPS, S_SUM, S_MEAN, S_VSUM, S_VAR, S_VE, S_RSTD = (4 * i for i in range(8))
PARAMS = 64            # gamma, then beta, start here


def _align(x, a=ALIGN):
    return (int(x) + a - 1) // a * a


def _module(kind, has_gamma, has_beta, store_eng=1):
    """kernel kind(x, [gamma], [beta], out, rows, d, blk, inv_d[, eps]): blocks of `blk` rows of d elements."""
    args = dict(x=("buffer", "f32"))
    if has_gamma:
        args["gamma"] = ("buffer", "f32")
    if has_beta:
        args["beta"] = ("buffer", "f32")
    args.update(out=("buffer", "f32"), rows=("scalar", "i64"), d=("scalar", "i64"), blk=("scalar", "i64"),
                inv_d=("scalar", "f32"))
    if kind == "layer_norm":
        args["eps"] = ("scalar", "f32")
    kb = KernelBuilder()
    with kb.kernel(kind, **args) as k:
        A = k.args
        lo, hi, t, ntiles, off, rowb, tb, base, bt = k.regs("lo", "hi", "t", "ntiles", "off", "rowb", "tb", "base",
                                                            "bt")
        cnt, nxt, tmp, ga, la, nb = k.regs("cnt", "nxt", "tmp", "ga", "la", "nb")
        k.sw(A.inv_d, (k.zero, C_INVD))
        if kind == "layer_norm":
            k.sw(A.eps, (k.zero, C_EPS))
        pe_share(k, A.rows, lo, hi)
        k.sub(tmp, hi, lo)
        k.add(ntiles, tmp, A.blk)
        k.addi(ntiles, ntiles, -1)
        k.div(ntiles, ntiles, A.blk)
        # local layout: [slots | gamma | beta | in0 | in1 | out0 | out1]
        k.shli(rowb, A.d, 2)
        k.mul(tb, rowb, A.blk)
        k.addi(tb, tb, ALIGN - 1)
        k.andi(tb, tb, -ALIGN)                        # one block buffer
        k.addi(nb, rowb, ALIGN - 1)
        k.andi(nb, nb, -ALIGN)                        # one parameter row
        k.const(base, PARAMS)
        if has_gamma:
            k.const(la, PARAMS)
            k.dma(0, la, A.gamma, rowb, SEM_ONCE)
            k.add(base, base, nb)
        k.mov(bt, base)
        if has_beta:
            k.dma(0, bt, A.beta, rowb, SEM_ONCE)
            k.add(base, base, nb)
        k.addi(base, base, ALIGN - 1)
        k.andi(base, base, -ALIGN)
        if has_gamma or has_beta:
            k.wait(SEM_ONCE, int(has_gamma) + int(has_beta))

        def buf(reg, which):
            """reg = address of buffer `which` (0, 1: inputs; 2, 3: outputs)."""
            k.mov(reg, base)
            for _ in range(which):
                k.add(reg, reg, tb)

        def load(b, start):
            k.sub(tmp, hi, start)
            k.min(tmp, tmp, A.blk)
            k.mul(nb, tmp, rowb)
            k.mul(ga, start, rowb)
            k.add(ga, ga, A.x)
            buf(la, b)
            k.dma(0, la, ga, nb, SEM_LOAD[b])

        def rows_of_block(b):
            """The vector ops of every row of the block in buffer b (cnt rows)."""
            r, xr, yr, sa, sb, one = k.regs("r", "xr", "yr", "sa", "sb", "one")
            k.const(one, 1)
            buf(xr, b)
            buf(yr, 2 + b)
            nops = 0
            with k.for_range(r, 0, cnt):
                if kind == "layer_norm":
                    k.vsubs(yr, xr, xr, A.d, "f32", SEM_VEC)             # xs = x - x[0] (into the output row)
                    k.const(sa, S_SUM)
                    k.vsum(sa, yr, A.d, "f32", SEM_VEC)                  # sum(xs)
                    k.const(sa, S_MEAN)
                    k.const(sb, S_SUM)
                    k.const(tmp, C_INVD)
                    k.vmuls(sa, sb, tmp, one, "f32", SEM_VEC)            # ms = sum(xs) * (1/D)
                    k.vsubs(yr, yr, sa, A.d, "f32", SEM_VEC)             # xc = xs - ms
                    k.vmul(xr, yr, yr, A.d, "f32", SEM_VEC)              # xc^2 over x (no longer needed)
                    k.const(sa, S_VSUM)
                    k.vsum(sa, xr, A.d, "f32", SEM_VEC)                  # sum(xc^2)
                    k.const(sb, S_VAR)
                    k.vmuls(sb, sa, tmp, one, "f32", SEM_VEC)            # var = sum(xc^2) * (1/D)
                    k.const(sa, S_VE)
                    k.const(tmp, C_EPS)
                    k.vadds(sa, sb, tmp, one, "f32", SEM_VEC)            # var + eps
                    k.const(sb, S_RSTD)
                    k.vrsqrt(sb, sa, one, "f32", SEM_VEC)                # 1 / sqrt(var + eps)
                    k.vmuls(yr, yr, sb, A.d, "f32", SEM_VEC)             # xc * rstd
                    nops = 10
                    if has_gamma:
                        k.const(sa, PARAMS)
                        k.vmul(yr, yr, sa, A.d, "f32", SEM_VEC)
                        nops += 1
                    if has_beta:
                        k.vadd(yr, yr, bt, A.d, "f32", SEM_VEC)
                        nops += 1
                else:
                    k.const(sa, S_SUM)
                    k.vrmax(sa, xr, A.d, "f32", SEM_VEC)                 # m = max(x)
                    k.vsubs(yr, xr, sa, A.d, "f32", SEM_VEC)             # x - m
                    k.vexp(yr, yr, A.d, "f32", SEM_VEC)                  # e = exp(x - m)
                    k.const(sb, S_VSUM)
                    k.vsum(sb, yr, A.d, "f32", SEM_VEC)                  # s = sum(e)
                    k.const(sa, S_RSTD)
                    k.vrecip(sa, sb, one, "f32", SEM_VEC)                # 1 / s
                    k.vmuls(yr, yr, sa, A.d, "f32", SEM_VEC)             # e * (1/s)
                    nops = 6
                with k.if_("ne", r, k.zero):                             # row r-1's ops are done
                    k.wait(SEM_VEC, nops)
                k.add(xr, xr, rowb)
                k.add(yr, yr, rowb)
            k.wait(SEM_VEC, nops)                                        # the last row's (cnt >= 1)
            k.release(r, xr, yr, sa, sb, one)

        def body(b):
            k.sub(cnt, hi, off)
            k.min(cnt, cnt, A.blk)
            k.add(nxt, off, A.blk)
            with k.if_("lt", nxt, hi):                 # prefetch the next block before computing this one
                load(1 - b, nxt)
            k.wait(SEM_LOAD[b], 1)
            k.const(tmp, 2)
            with k.if_("ge", t, tmp):                  # the store of block t-2 has left out[b]
                k.wait(SEM_STORE[b], 1)
            rows_of_block(b)
            k.mul(ga, off, rowb)
            k.add(ga, ga, A.out)
            k.mul(nb, cnt, rowb)
            buf(la, 2 + b)
            k.dma(store_eng, ga, la, nb, SEM_STORE[b])
            k.mov(off, nxt)

        k.mov(off, lo)
        with k.if_("lt", lo, hi):
            load(0, lo)
        tile_loop(k, t, ntiles, body)
        k.fence()
    return kb.build()


def block_rows(card, d, n_params=0):
    """Rows per block: four block buffers (two in, two out) and the parameter rows fit local memory, and a
    block is at most TILE_CAP bytes (longer blocks only delay the pipeline). 0 if one row does not fit."""
    local = int(card.config.local_memory.bytes)
    rowb = 4 * max(1, int(d))
    budget = local - PARAMS - n_params * _align(rowb) - 5 * ALIGN
    fit = budget // (4 * rowb)
    return int(max(0, min(fit, max(1, TILE_CAP // rowb))))


def max_row_length(card, n_params=0):
    """The longest row (elements) layer_norm / softmax can take on this card."""
    local = int(card.config.local_memory.bytes)
    return (local - PARAMS - 5 * ALIGN) // (16 + 4 * n_params) // 16 * 16


def _check_x(op, x):
    x = np.asarray(x)
    if x.ndim != 2:
        raise InvalidArgument(f"{op}: x must be a 2-D array [rows, features], got shape {x.shape}")
    if x.dtype != np.float32:
        raise InvalidArgument(f"{op}: x must be float32, got dtype {x.dtype}")
    return x


def _check_param(op, name, p, d):
    if p is None:
        return None
    p = np.asarray(p)
    if p.dtype != np.float32:
        raise InvalidArgument(f"{op}: {name} must be float32, got dtype {p.dtype}")
    if p.shape != (d,):
        raise InvalidArgument(f"{op}: {name} must have shape ({d},) (the last axis of x), got {p.shape}")
    return p


def _launch(card, kind, x, params, scalars, pes, trace):
    R, D = x.shape
    blk = block_rows(card, D, len(params))
    if D > 0 and blk < 1:
        raise InvalidArgument(f"{kind}: rows of {D} elements do not fit local memory of {card.config.name} "
                              f"(at most {max_row_length(card, len(params))} elements)")
    has_g, has_b = "gamma" in params, "beta" in params
    eng = store_engine(card)
    key = ("norm", kind, has_g, has_b, eng)
    args = [np.ascontiguousarray(x)] + [np.ascontiguousarray(params[n]) for n in ("gamma", "beta") if n in params]
    inv_d = float(np.float32(1.0 / D)) if D else 0.0
    args += [runner.Out((R, D), np.float32), R if D else 0, D, max(1, blk), inv_d] + list(scalars)
    (out,), result = runner.run(card, key, lambda: _module(kind, has_g, has_b, eng), kind, args, pes=pes, trace=trace)
    return out, result


def layer_norm(card, x, gamma=None, beta=None, eps=1e-5, pes=None, trace=False):
    """Layer normalization over the last axis of a 2-D fp32 array, optionally scaled by gamma and shifted by
    beta ([D] each). Returns (array, LaunchResult); bit-exact with reference_layer_norm."""
    x = _check_x("layer_norm", x)
    D = x.shape[1]
    params = {}
    g = _check_param("layer_norm", "gamma", gamma, D)
    b = _check_param("layer_norm", "beta", beta, D)
    if g is not None:
        params["gamma"] = g
    if b is not None:
        params["beta"] = b
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)) or \
            not (np.isfinite(np.float32(eps)) and np.float32(eps) >= 0):
        raise InvalidArgument(f"layer_norm: eps must be a finite non-negative number, got {eps!r}")
    return _launch(card, "layer_norm", x, params, [float(np.float32(eps))], pes, trace)


def softmax(card, x, pes=None, trace=False):
    """Softmax over the last axis of a 2-D fp32 array. Returns (array, LaunchResult)."""
    x = _check_x("softmax", x)
    return _launch(card, "softmax", x, {}, [], pes, trace)


# --- numpy references: the card's steps, in its order ------------------------------------------------------
def _vsum(v):
    """vsum: fp32 values added in index order in fp64, rounded to fp32 (one per row)."""
    if v.shape[-1] == 0:
        return np.zeros(v.shape[:-1], np.float32)
    return np.cumsum(v.astype(np.float64), axis=-1)[..., -1].astype(np.float32)


def reference_layer_norm(x, gamma=None, beta=None, eps=1e-5):
    x = np.asarray(x, np.float32)
    D = x.shape[-1]
    inv_d = np.float32(1.0 / D) if D else np.float32(0)
    with np.errstate(invalid="ignore", over="ignore"):
        xs = x - x[..., :1] if D else x
        mean = (_vsum(xs) * inv_d)[..., None]
        xc = xs - mean
        var = _vsum(xc * xc) * inv_d
        ve = (var + np.float32(eps)).astype(np.float64)
        with np.errstate(divide="ignore"):
            rstd = np.where(ve != 0, 1.0 / np.sqrt(ve), np.copysign(np.inf, ve)).astype(np.float32)[..., None]
        y = xc * rstd
        if gamma is not None:
            y = y * np.asarray(gamma, np.float32)
        if beta is not None:
            y = y + np.asarray(beta, np.float32)
    return y.astype(np.float32)


def reference_softmax(x):
    x = np.asarray(x, np.float32)
    if x.shape[-1] == 0:
        return x.copy()
    m = x.max(axis=-1, keepdims=True)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp((x - m).astype(np.float64)).astype(np.float32)
        s = _vsum(e).astype(np.float64)
        r = np.where(s != 0, 1.0 / s, np.copysign(np.inf, s)).astype(np.float32)[..., None]
    return (e * r).astype(np.float32)


def tolerance(op):
    """layer_norm is bit-exact; softmax's exp may differ from numpy's in the last fp64 bit."""
    return (0.0, 0.0) if op == "layer_norm" else (1e-6, 1e-30)


# --- the op registry --------------------------------------------------------------------------------------
def _ln_inputs(rng, p):
    d = {"x": (rng.standard_normal((p["rows"], p["d"])) * 2 + 0.5).astype(np.float32)}
    if p["affine"]:
        d["gamma"] = rng.standard_normal(p["d"]).astype(np.float32)
        d["beta"] = rng.standard_normal(p["d"]).astype(np.float32)
    return d


def _ln_run(card, x, p, pes):
    out, r = layer_norm(card, x["x"], x.get("gamma"), x.get("beta"), eps=p["eps"], pes=pes)
    return [out], r


def _sm_run(card, x, p, pes):
    out, r = softmax(card, x["x"], pes=pes)
    return [out], r


OPS = [
    OpSpec("layer_norm", dict(rows=256, d=768, eps=1e-5, affine=1), _ln_inputs, _ln_run,
           lambda x, p: [reference_layer_norm(x["x"], x.get("gamma"), x.get("beta"), p["eps"])],
           lambda p: tolerance("layer_norm"), lambda p: 8 * p["rows"] * p["d"],
           "layer normalization over the last axis of fp32 [rows, d] (affine=1: with gamma and beta)",
           {"affine": (0, 1)}),
    OpSpec("softmax", dict(rows=256, d=1000), lambda rng, p: {"x": (rng.standard_normal((p["rows"], p["d"])) * 3)
                                                               .astype(np.float32)}, _sm_run,
           lambda x, p: [reference_softmax(x["x"])], lambda p: tolerance("softmax"), lambda p: 5 * p["rows"] * p["d"],
           "softmax over the last axis of fp32 [rows, d]"),
]
