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

from . import lang, runner
from .elementwise import ALIGN, TILE_CAP, store_engine
from .library import OpSpec

PARAMS = 1024          # bytes of local memory left to the compiler's constants and per-row scalars


def _align(x, a=ALIGN):
    return (int(x) + a - 1) // a * a


def _norm(x: lang.anysize, gamma, beta, out: lang.anysize, rows, inv_d, eps, B: lang.constexpr,
          kind: lang.constexpr, has_gamma: lang.constexpr, has_beta: lang.constexpr):
    """Blocks of B rows per PE share, pipelined; each row one chain of vector ops (the order of the module
    docstring). gamma / beta are loaded once (unused 1-element arrays when absent)."""
    g = lang.load(gamma) if has_gamma else None
    b = lang.load(beta) if has_beta else None
    lo, hi = lang.split(rows)
    for r0 in range(lo, hi, B, pipeline=True):
        end = lang.minimum(r0 + B, hi)
        xt = lang.load(x[r0:end, :])
        y = lang.empty(xt.shape, "f32")
        for r in range(0, end - r0):
            xr, yr = xt[r], y[r]
            if kind == "layer_norm":
                lang.sub(xr, xr[0], out=yr)                          # xs = x - x[0]
                lang.sub(yr, lang.sum(yr) * inv_d, out=yr)           # xc = xs - sum(xs) * (1/D)
                lang.mul(yr, yr, out=xr)                             # xc^2 (over x: no longer needed)
                lang.mul(yr, lang.rsqrt(lang.sum(xr) * inv_d + eps), out=yr)   # xc / sqrt(var + eps)
                if has_gamma:
                    lang.mul(yr, g, out=yr)
                if has_beta:
                    lang.add(yr, b, out=yr)
            else:
                lang.exp(lang.sub(xr, lang.max(xr), out=yr), out=yr)   # e = exp(x - max(x))
                lang.mul(yr, lang.recip(lang.sum(yr)), out=yr)         # e * (1 / sum(e))
        lang.store(out[r0:end, :], y)


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
    if R == 0 or D == 0:
        return np.zeros((R, D), np.float32), runner.nothing(card, kind, pes)
    has_g, has_b = "gamma" in params, "beta" in params
    unused = np.zeros(1, np.float32)
    args = [np.ascontiguousarray(x)] + [np.ascontiguousarray(params[n]) if n in params else unused
                                        for n in ("gamma", "beta")]
    eps = scalars[0] if scalars else 0.0
    consts = [blk, kind, has_g, has_b]
    k = lang.library_kernel(_norm, kind)
    key = ("norm", kind, has_g, has_b, D, blk, card.config.data["name"], int(card.config.local_memory.bytes),
           store_engine(card))
    build = lambda: k.compile(np.empty((0, D), np.float32), *args[1:], np.empty((0, D), np.float32), 0, 0.0,   # noqa: E731
                              0.0, *consts, config=card.config).image
    run_args = args + [runner.Out((R, D), np.float32), R, float(np.float32(1.0 / D)), eps]
    (out,), result = runner.run(card, key, build, kind, run_args, pes=pes, trace=trace)
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
# --- local response normalization (AlexNet, GoogLeNet) ------------------------------------------------------
def _lrn(x: lang.anysize, out: lang.anysize, planes, C: lang.constexpr, HW: lang.constexpr, P: lang.constexpr,
         size: lang.constexpr, alpha: lang.constexpr, beta: lang.constexpr, k: lang.constexpr):
    """y = x / (k + alpha / size * sum of x^2 over the channel window)^beta, per block of P positions of one
    image (all C channels: the window runs across rows of the tile)."""
    lo_w, hi_w = size // 2, (size - 1) // 2
    nblk = -(-HW // P)
    first, last = lang.split(planes // C * nblk)
    for u in range(first, last, pipeline=True):
        row, p0 = u // nblk * C, u % nblk * P
        t = lang.load(x[row:row + C, p0:lang.minimum(p0 + P, HW)])
        sq = t * t
        acc = lang.empty(t.shape, "f32")
        for c in lang.static_range(C):
            window = [j for j in range(c - lo_w, c + hi_w + 1) if 0 <= j < C]
            lang.copy(sq[window[0]], out=acc[c])
            for j in window[1:]:
                lang.add(acc[c], sq[j], out=acc[c])
        v = acc * (alpha / size) + k
        r = lang.rsqrt(v)                                      # v^-1/2
        if beta == 1.0:
            r = lang.recip(v)
        elif beta == 0.75:
            lang.mul(r, lang.rsqrt(lang.recip(r)), out=r)      # v^-1/2 * v^-1/4
        lang.store(out[row:row + C, p0:lang.minimum(p0 + P, HW)], t * r)


LRN_BETAS = (0.5, 0.75, 1.0)


def local_response_norm(card, x, size, alpha=1e-4, beta=0.75, k=1.0, pes=None, trace=False):
    """torch.nn.functional.local_response_norm for fp32 NCHW x (any rank >= 3: channels on axis 1). The vector
    unit has no pow: beta must be 0.5, 0.75 (the default, AlexNet's and GoogLeNet's) or 1. Returns
    (array, LaunchResult)."""
    x = np.asarray(x)
    if x.dtype != np.float32 or x.ndim < 3:
        raise InvalidArgument(f"local_response_norm: x must be float32 with at least 3 dims (N, C, ...), got "
                              f"{x.dtype} {x.shape}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise InvalidArgument(f"local_response_norm: size must be a positive integer, got {size!r}")
    if beta not in LRN_BETAS:
        raise InvalidArgument(f"local_response_norm: beta must be one of {LRN_BETAS} (the vector unit has "
                              f"rsqrt and recip, no pow), got {beta!r}")
    for name, v in (("alpha", alpha), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not np.isfinite(v):
            raise InvalidArgument(f"local_response_norm: {name} must be a finite number, got {v!r}")
    N, C = x.shape[:2]
    HW = int(np.prod(x.shape[2:], dtype=np.int64))
    if x.size == 0:
        return np.zeros_like(x), runner.nothing(card, "local_response_norm", pes)
    local = int(card.config.local_memory.bytes)
    P = max(ALIGN // 4, min(HW, (local // 3) // (C * 4 * 6) // 16 * 16))
    if C * 4 * 6 * min(P, HW) > local:
        raise InvalidArgument(f"local_response_norm: {C} channels do not fit local memory of {card.config.name}")
    x2 = np.ascontiguousarray(x).reshape(N * C, HW)
    consts = (C, HW, int(min(P, HW)), int(size), float(alpha), float(beta), float(k))
    k_ = lang.library_kernel(_lrn, "local_response_norm")
    example = [np.empty((0, HW), np.float32), np.empty((0, HW), np.float32), 0]
    (y,), result = runner.run_kernel(card, ("lrn", consts, runner.card_key(card)), k_, example,
                                     [x2, runner.Out((N * C, HW), np.float32), N * C], consts,
                                     "local_response_norm", pes, trace)
    return y.reshape(x.shape), result


def reference_local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """The card's steps in numpy (fp32 each; rsqrt and recip in fp64 rounded to fp32)."""
    x = np.asarray(x, np.float32)
    C = x.shape[1]
    sq = (x * x).astype(np.float32)
    acc = np.zeros_like(sq)
    for c in range(C):
        for j in range(max(0, c - size // 2), min(C, c + (size - 1) // 2 + 1)):
            acc[:, c] = (acc[:, c] + sq[:, j]).astype(np.float32) if j != max(0, c - size // 2) else sq[:, j]
    v = (acc * np.float32(alpha / size) + np.float32(k)).astype(np.float32)

    def rsqrt(a):
        return (1.0 / np.sqrt(a.astype(np.float64))).astype(np.float32)
    if beta == 1.0:
        r = (1.0 / v.astype(np.float64)).astype(np.float32)
    else:
        r = rsqrt(v)
        if beta == 0.75:
            r = (r * rsqrt((1.0 / r.astype(np.float64)).astype(np.float32))).astype(np.float32)
    return (x * r).astype(np.float32)


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


def _lrn_run(card, x, p, pes):
    out, r = local_response_norm(card, x["x"], p["size"], p["alpha"], p["beta"], p["k"], pes=pes)
    return [out], r


OPS = [
    OpSpec("local_response_norm", dict(n=8, c=96, h=27, w=27, size=5, alpha=1e-4, beta=0.75, k=2.0),
           lambda rng, p: {"x": (rng.standard_normal((p["n"], p["c"], p["h"], p["w"])) * 3).astype(np.float32)},
           _lrn_run, lambda x, p: [reference_local_response_norm(x["x"], p["size"], p["alpha"], p["beta"], p["k"])],
           lambda p: (2e-6, 1e-6), lambda p: 4 * p["n"] * p["c"] * p["h"] * p["w"] * p["size"],
           "local response normalization across channels (torch.nn.functional.local_response_norm); default: "
           "AlexNet's first LRN", {"beta": LRN_BETAS}),
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
