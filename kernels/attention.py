"""Attention pieces for language models, in the kernel language: batched matmul with either operand transposed,
softmax with an additive mask, fused scaled-dot-product attention, GELU (tanh form), layer norm in fp16 and the
embedding gather. fp16 and fp32 (int8 for bmm).

Transposed operands. The matrix unit multiplies a (M x K, rows streamed) by a weight tile w (K x N, row-major)
and has no transposed load; the language's blocks have a contiguous inner dimension. A transposed operand is
therefore built by DMA: its rows are columns of the stored tensor (`x[r0:r1, c]`, a block of one-element rows).
From DRAM every such element would cost a whole burst (1.14 DRAM cycles per element); from the card's shared
SRAM a strided DMA costs what a contiguous one does. So the stored operand is first copied to shared SRAM with
one contiguous DMA (`transfer`), then one DMA per row of the transposed tile gathers a column of it.

scaled_dot_product_attention (`_sdpa`): one work item = (batch*head, block of RQ query rows); PE p takes a
share of the items, in a double-buffered loop (the next item's Q, V and mask tiles load while this one
computes, its output leaves during the next). Per item:
  1. K^T [D x Sk]: the head's K is copied into this PE's slot of a shared-SRAM scratch, then D column DMAs
     fill the rows of K^T; this is done for the NEXT item while the vector unit works on this one;
  2. S = Q K^T on the matrix unit (fp16 -> fp32 sums; fp32 inputs at the unit's fp32 rate, products exact,
     summed in fp64); the scale is applied to Q in its own type when it is a power of two <= 1 (exact but for
     subnormals), else to S in fp32; + the mask (fp32; bool masks become 0 / -inf on the host; an is_causal
     mask is made on the host and, like every mask shared by all heads, loaded once);
  3. m = row max of S, clamped to >= -FLT_MAX (a fully masked row then gives exp = 0, not NaN); E = exp(S - m)
     (fp64 rounded to fp32); the row sums are E @ ones on the matrix unit in fp32 (exact products summed in
     fp64, rounded once), not a vector reduction per row;
  4. O = E @ V (fp16: E rounded to fp16 first, as PyTorch's CPU flash kernel does; fp32: E in fp32), then
     O * (1 / max(sum, FLT_MIN)) per row (a fully masked row gives 0, as PyTorch), rounded to the type.
Sequences whose tiles do not fit local memory (or the 1 MiB weight buffer) run unfused: bmm, masked softmax,
bmm through DRAM.

bmm (`_bmm`): items (batch, column tile, row tile); A rows and W rows come from contiguous blocks, or, for a
transposed operand, from columns of its copy in shared SRAM (the whole tensor staged once, a slice per PE, then
a barrier); K is walked in chunks accumulated on the matrix unit. fp16 -> fp32 sums rounded to fp16; fp32
exact products summed in fp64; int8 -> int32 (wrapping).

masked_softmax (`_msoftmax`): softmax(x + mask) over the last axis: blocks of rows, x + mask in x's type (fp16
rounded, as PyTorch adds), then in fp32: row max, exp(x - max), row sums (vsum, fp64 in order), times
recip(sum), rounded to the type. A mask shared by every row of a block is repeated once by DMA.

gelu tanh form (`_gelu_tanh`): PyTorch's formula and order in fp32 (fp16 computed in fp32, rounded once):
0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
layer_norm (`_layer_norm`): norm.py's row chain (bit-exact with norm.reference_layer_norm on the fp32 values),
for fp16 inputs converted to fp32 on the card and the result rounded once to fp16.
embedding (`_embedding`): out[i] = weight[indices[i]] on the card's embedding unit (bags of one, PE 0 issues it:
the unit is one per card), fp32 rows; an fp16 table's rows come back as fp32 and every PE converts its share to
fp16. Exact, except -0.0 (the unit adds a row to 0.0: it returns +0.0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vnpu.errors import InvalidArgument

from . import lang, runner
from .elementwise import store_engine
from .library import OpSpec
from .norm import reference_layer_norm

EB = {"f32": 4, "f16": 2, "i8": 1, "i32": 4}
NP = {"f32": np.float32, "f16": np.float16, "i8": np.int8, "i32": np.int32}
DT = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16", np.dtype(np.int8): "i8"}
FLT_MAX = float(np.finfo(np.float32).max)
FLT_MIN = float(np.finfo(np.float32).tiny)
RESERVE = 8192               # local bytes left to the compiler's constants and small tiles
WEIGHT_BUFFER = 1 << 20
_kernel = lang.library_kernel


def _card_key(card):
    c = card.config
    return (c.data["name"], int(c.local_memory.bytes), int(c.shared_sram.bytes), c.pes, store_engine(card))


def launch(card, key, k, example, args, consts, op, pes, trace):
    """Compile kernel k for the example arguments and constexprs (once per key), run it on args + consts.
    The build function carries (kernel, consts, example): a test can interpret the same kernel."""
    def build():
        return k.compile(*example, *consts, config=card.config).image
    build.kernel, build.consts, build.example = k, tuple(consts), list(example)
    build.absent = [i for i, a in enumerate(args) if a is None]      # None arguments: not passed to the card
    return runner.run(card, key, build, op, [a for a in args if a is not None], pes=pes, trace=trace)


def _npes(card, pes):
    return card.config.pes if pes is None else len(pes)


def _pow2_at_most_1(s):
    m, e = math.frexp(s)
    return s > 0 and m == 0.5 and s <= 1.0


# =============================================================================================================
# scaled_dot_product_attention
# =============================================================================================================
@dataclass(frozen=True)
class AGeom:
    dt: str            # f16 | f32 (q, k, v and the output)
    BH: int            # batch * heads
    H: int             # heads (mask indexing)
    Sq: int
    Sk: int
    D: int
    Dv: int
    RQ: int            # query rows per item
    scale: float       # fp32 value
    scale_q: bool      # applied to Q (a power of two <= 1) rather than to S
    mask: str          # "" | "once" (one [Sq, Sk] mask for all heads, loaded once) | "item"
    mB: int            # mask row strides (in units of Sq rows) per batch and per head (0: broadcast)
    mH: int
    P: int             # PEs the kernel is built for

    @property
    def nqb(self):
        return -(-self.Sq // self.RQ)

    @property
    def items(self):
        return self.BH * self.nqb


def _sdpa(q, k, v, mask, ones, ks, out, g: lang.constexpr):
    """out[bh, i] = softmax(scale * q[bh, i] k[bh]^T + mask) v[bh]; q [BH*Sq, D], k [BH*Sk, D], v [BH*Sk, Dv],
    mask [NM*Sq, Sk] f32 or None, ones [Sk, 1] f32, ks: shared scratch [P*Sk*D], out [BH*Sq, Dv]."""
    Sq, Sk, D, RQ, nqb = g.Sq, g.Sk, g.D, g.RQ, g.nqb
    pe = lang.pe_id()
    lo, hi = lang.split(g.items)
    slot = ks.reshape(g.P, Sk, D)
    kflat = k.reshape(g.BH * Sk * D)
    kt = lang.empty((D, Sk), g.dt)              # K^T of the item about to be computed
    one = lang.load(ones)                       # [Sk, 1] of 1.0: the row sums on the matrix unit
    mall = lang.load(mask) if g.mask == "once" else None

    def prep(item):
        """K^T of item's head into kt: the head's K to this PE's SRAM slot, then one column DMA per row."""
        bh = item // nqb
        lang.transfer(ks[pe * (Sk * D):pe * (Sk * D) + Sk * D], kflat[bh * (Sk * D):bh * (Sk * D) + Sk * D])
        for d in lang.static_range(D):
            lang.load(slot[pe, :, d], into=kt[d])

    prep(lang.minimum(lo, g.items - 1))
    for it in range(lo, hi, pipeline=True):
        bh = it // nqb
        q0 = (it - bh * nqb) * RQ
        r0 = bh * Sq + q0
        rend = lang.minimum(r0 + RQ, bh * Sq + Sq)
        qt = lang.load(q[r0:rend, :])
        vt = lang.load(v[bh * Sk:bh * Sk + Sk, :])
        if g.mask == "item":
            b = bh // g.H
            mrow = (b * g.mB + (bh - b * g.H) * g.mH) * Sq + q0
            mt = lang.load(mask[mrow:lang.minimum(mrow + RQ, mrow - q0 + Sq), :])
        if g.scale_q and g.scale != 1.0:
            qt = qt * g.scale                   # exact: a power of two (in Q's type)
        s = lang.matmul(qt, kt)                 # [RQ, Sk] f32
        if not g.scale_q:
            lang.mul(s, g.scale, out=s)
        if g.mask == "item":
            lang.add(s, mt, out=s)
        elif g.mask == "once":
            lang.add(s, mall[q0:q0 + RQ] if nqb > 1 else mall, out=s)
        m = lang.max(s, axis=1)                 # [RQ, 1]
        lang.maximum(m, -FLT_MAX, out=m)
        lang.sub(s, m, out=s)
        lang.exp(s, out=s)
        prep(lang.minimum(it + 1, hi - 1))      # the next item's K^T, while the vector unit works
        tot = lang.matmul(s, one)               # [RQ, 1] row sums (fp32, exact products, fp64 sums)
        o = lang.matmul(s.astype("f16") if g.dt == "f16" else s, vt)     # [RQ, Dv] f32
        lang.maximum(tot, FLT_MIN, out=tot)
        lang.mul(o, lang.recip(tot), out=o)
        lang.store(out[r0:rend, :], o.astype("f16") if g.dt == "f16" else o)


def _sdpa_rows(card, dt, Sk, D, Dv, mask):
    """Query rows per item: the item's tiles (twice where the loop double-buffers) fit local memory."""
    local = int(card.config.local_memory.bytes) - RESERVE
    eb = EB[dt]
    fixed = D * Sk * eb + 2 * Sk * Dv * eb + Sk * 4 * 2 + 64 * 16
    if mask == "once":
        fixed += 0          # counted per row below (the whole mask is Sq rows)
    per_row = 2 * D * eb + 2 * Sk * 4 + Sk * 2 + 2 * Dv * 4 + 2 * Dv * eb + 64
    if mask == "item":
        per_row += 2 * Sk * 4
    return max(0, (local - fixed) // per_row)


def _attn_plan(card, dt, BH, H, Sq, Sk, D, Dv, scale, mask, mB, mH, P):
    eb = EB[dt]
    if D * Sk * eb > WEIGHT_BUFFER or Sk * Dv * eb > WEIGHT_BUFFER or Sk * 4 > WEIGHT_BUFFER:
        return None
    rows = _sdpa_rows(card, dt, Sk, D, Dv, mask)
    if mask == "once":
        local = int(card.config.local_memory.bytes) - RESERVE
        if Sq * Sk * 4 > local // 4:
            mask = "item"
            rows = _sdpa_rows(card, dt, Sk, D, Dv, mask)
    rows = min(rows, 128, Sq)
    if rows < 1:
        return None
    RQ = -(-Sq // -(-Sq // rows))               # even blocks
    s32 = float(np.float32(scale))
    return AGeom(dt, BH, H, Sq, Sk, D, Dv, RQ, s32, _pow2_at_most_1(s32), mask, mB, mH, P)


def _attn_mask(op, mask, is_causal, B, H, Sq, Sk, dtype):
    """(mask array [NM*Sq, Sk] f32 or None, mode, mB, mH): a bool mask becomes 0 / -inf; broadcasting over
    batch and heads is kept (strides), over rows and columns materialized."""
    if is_causal:
        if mask is not None:
            raise InvalidArgument(f"{op}: give attn_mask or is_causal, not both (as PyTorch)")
        m = np.where(np.tril(np.ones((Sq, Sk), bool)), np.float32(0), np.float32(-np.inf)).astype(np.float32)
        return m, "once", 0, 0
    if mask is None:
        return None, "", 0, 0
    mask = np.asarray(mask)
    if mask.dtype == np.bool_:
        mask = np.where(mask, np.float32(0), np.float32(-np.inf)).astype(np.float32)
    elif mask.dtype != dtype:
        raise InvalidArgument(f"{op}: attn_mask must be bool or {np.dtype(dtype)} (the dtype of q), got {mask.dtype}")
    if mask.ndim > 4:
        raise InvalidArgument(f"{op}: attn_mask has {mask.ndim} dimensions, at most 4")
    m4 = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
    try:
        np.broadcast_shapes(m4.shape, (B, H, Sq, Sk))
    except ValueError:
        raise InvalidArgument(f"{op}: attn_mask of shape {mask.shape} does not broadcast to {(B, H, Sq, Sk)}") from None
    Bm, Hm = m4.shape[0], m4.shape[1]
    m4 = np.broadcast_to(m4, (Bm, Hm, Sq, Sk)).astype(np.float32)
    mode = "once" if Bm * Hm == 1 else "item"
    return np.ascontiguousarray(m4).reshape(Bm * Hm * Sq, Sk), mode, (Hm if Bm > 1 else 0), (1 if Hm > 1 else 0)


def _attn_args(op, q, k, v):
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    for name, t in (("query", q), ("key", k), ("value", v)):
        if t.dtype not in (np.float16, np.float32):
            raise InvalidArgument(f"{op}: {name} must be float16 or float32, got {t.dtype}")
        if t.ndim < 2 or t.ndim > 4:
            raise InvalidArgument(f"{op}: {name} must have 2 to 4 dimensions [..., L, E], got shape {t.shape}")
    if not (q.dtype == k.dtype == v.dtype):
        raise InvalidArgument(f"{op}: query, key and value must have one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.ndim == k.ndim == v.ndim) or q.shape[:-2] != k.shape[:-2] or k.shape[:-2] != v.shape[:-2]:
        raise InvalidArgument(f"{op}: query, key and value must share their leading dimensions, got {q.shape}, "
                              f"{k.shape}, {v.shape}")
    if q.shape[-1] != k.shape[-1]:
        raise InvalidArgument(f"{op}: query and key must have the same last dimension, got {q.shape} and {k.shape}")
    if k.shape[-2] != v.shape[-2]:
        raise InvalidArgument(f"{op}: key and value must have the same length, got {k.shape} and {v.shape}")
    return q, k, v


def scaled_dot_product_attention(card, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False, pes=None, trace=False, fused=None):
    """torch.nn.functional.scaled_dot_product_attention for q [..., L, E], k [..., S, E], v [..., S, Ev] (up to
    4-D, fp16 or fp32). fused=None: fused when the tiles fit, else unfused; True / False to force."""
    op = "scaled_dot_product_attention"
    q, k, v = _attn_args(op, q, k, v)
    if dropout_p not in (0, 0.0) or enable_gqa:
        raise InvalidArgument(f"{op}: dropout_p must be 0 and enable_gqa False (inference)")
    if not isinstance(is_causal, (bool, np.bool_)):
        raise InvalidArgument(f"{op}: is_causal must be True or False, got {is_causal!r}")
    lead = q.shape[:-2]
    Sq, D = q.shape[-2:]
    Sk, Dv = v.shape[-2:]
    q4 = q.reshape((1,) * (4 - q.ndim) + q.shape)
    B, H = q4.shape[0], q4.shape[1]
    BH = B * H
    if scale is None:
        scale = 1.0 / math.sqrt(D) if D else 1.0
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)) or \
            not np.isfinite(np.float32(scale)):
        raise InvalidArgument(f"{op}: scale must be a finite number or None, got {scale!r}")
    mask, mode, mB, mH = _attn_mask(op, attn_mask, bool(is_causal), B, H, Sq, Sk, q.dtype)
    shape = lead + (Sq, Dv)
    if BH * Sq * Dv == 0:
        return np.zeros(shape, q.dtype), runner.nothing(card, op, pes)
    if Sk == 0 or D == 0:
        # no keys: PyTorch gives zeros; no features: every score is 0 (+ mask): run with one zero feature
        if Sk == 0:
            return np.zeros(shape, q.dtype), runner.nothing(card, op, pes)
        q = np.zeros(q.shape[:-1] + (1,), q.dtype)
        k = np.zeros(k.shape[:-1] + (1,), k.dtype)
        D = 1
    dt = DT[q.dtype]
    P = _npes(card, pes)
    g = _attn_plan(card, dt, BH, H, Sq, Sk, D, Dv, scale, mode, mB, mH, P) if fused is not False else None
    if g is None:
        if fused:
            raise InvalidArgument(f"{op}: tiles of {Sk} keys do not fit local memory fused")
        return _sdpa_unfused(card, q, k, v, mask, mode, mB, mH, B, H, scale, shape, pes, trace)
    k_ = _kernel(_sdpa, op)
    npd = NP[dt]
    ones = np.ones((Sk, 1), np.float32)
    mask_arg = mask if mask is not None else None
    example = [np.empty((BH * Sq, D), npd), np.empty((BH * Sk, D), npd), np.empty((BH * Sk, Dv), npd),
               None if mask is None else np.empty(mask.shape, np.float32), ones, np.empty(P * Sk * D, npd),
               np.empty((BH * Sq, Dv), npd)]
    args = [np.ascontiguousarray(q).reshape(BH * Sq, D), np.ascontiguousarray(k).reshape(BH * Sk, D),
            np.ascontiguousarray(v).reshape(BH * Sk, Dv), mask_arg, ones,
            runner.Scratch(P * Sk * D * EB[dt], "shared"), runner.Out((BH * Sq, Dv), npd)]
    key = ("sdpa", g, None if mask is None else mask.shape, _card_key(card))
    (out,), result = launch(card, key, k_, example, args, [g], op, pes, trace)
    return out.reshape(shape), result


def _sdpa_unfused(card, q, k, v, mask, mode, mB, mH, B, H, scale, shape, pes, trace):
    raise InvalidArgument("scaled_dot_product_attention: these tiles do not fit local memory (unfused path to come)")


# --- numpy reference: the card's steps -------------------------------------------------------------------------
def _mm(a, w):
    """The matrix unit: fp16 -> fp32 sums in K order; fp32 -> exact products summed in fp64, rounded once;
    int8 -> int32 wrapping."""
    if a.dtype == np.int8:
        return (a.astype(np.int64) @ w.astype(np.int64)).astype(np.int32)
    if a.dtype == np.float32:
        with np.errstate(all="ignore"):
            return (a.astype(np.float64) @ w.astype(np.float64)).astype(np.float32)
    a32, w32 = a.astype(np.float32), w.astype(np.float32)
    out = np.zeros(a.shape[:-1] + (w.shape[-1],), np.float32)
    with np.errstate(all="ignore"):
        for i in range(a.shape[-1]):
            out += a32[..., i:i + 1] * w32[..., i:i + 1, :]
    return out


def _recip(x):
    with np.errstate(divide="ignore"):
        return (1.0 / x.astype(np.float64)).astype(np.float32)


def reference_sdpa(q, k, v, attn_mask=None, is_causal=False, scale=None):
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    Sq, D = q.shape[-2:]
    Sk = k.shape[-2]
    if scale is None:
        scale = 1.0 / math.sqrt(D) if D else 1.0
    s32 = np.float32(scale)
    lead = q.shape[:-2]
    if Sk == 0 or q.size == 0:
        return np.zeros(lead + (Sq, v.shape[-1]), q.dtype)
    mask = None
    if is_causal:
        mask = np.where(np.tril(np.ones((Sq, Sk), bool)), np.float32(0), np.float32(-np.inf))
    elif attn_mask is not None:
        mask = np.asarray(attn_mask)
        mask = np.where(mask, np.float32(0), np.float32(-np.inf)) if mask.dtype == np.bool_ else \
            mask.astype(np.float32)
    with np.errstate(all="ignore"):
        if _pow2_at_most_1(float(s32)):
            s = _mm((q.astype(np.float32) * s32).astype(q.dtype), np.swapaxes(k, -1, -2))
        else:
            s = (_mm(q, np.swapaxes(k, -1, -2)) * s32).astype(np.float32)
        if mask is not None:
            s = (s + mask).astype(np.float32)
        m = np.maximum(s.max(axis=-1, keepdims=True), np.float32(-FLT_MAX))
        e = np.exp((s - m).astype(np.float64)).astype(np.float32)
        tot = e.astype(np.float64).sum(axis=-1, keepdims=True).astype(np.float32)
        o = _mm(e.astype(np.float16) if q.dtype == np.float16 else e, v)
        o = (o * _recip(np.maximum(tot, np.float32(FLT_MIN)))).astype(np.float32)
    return o.astype(q.dtype)
