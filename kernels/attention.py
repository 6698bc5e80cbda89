"""Attention pieces for language models, in the kernel language: batched matmul with either operand transposed,
softmax with an additive mask, fused scaled-dot-product attention, GELU (tanh form), layer norm in fp16 and the
embedding gather. fp16 and fp32 (int8 for bmm).

Transposed operands. The matrix unit multiplies a (M x K, rows streamed) by a weight tile w (K x N, row-major)
and has no transposed load; the language's blocks have a contiguous inner dimension and at most two dimensions.
A transposed operand is therefore built by DMA: its rows are columns of the stored tensor (`x[r0:r1, c]`, a
block of one-element rows). From DRAM every such element would cost a whole burst (1.14 DRAM cycles per
element); from the card's shared SRAM a strided DMA costs what a contiguous one does. So the stored operand is
first copied to shared SRAM, then one DMA per row of the transposed tile gathers a column of it.

DMAs one at a time. The DRAM channel and the SRAM ring are booked in issue order from the cycle a transfer will
begin (docs/timing.md 2), and idle gaps before the latest booking are not reused: a DMA queued behind others on
its engine books them ahead of its time and every other PE's transfers wait behind it (with twelve PEs queueing
column DMAs the first version of _sdpa took 285,000 cycles instead of 107,000). So the kernels issue a DMA when
their engine is idle, and wait for it: a vector op reading the tile a load wrote (writing the tile a store
read) makes the PE wait for that DMA; columns land in a ring of NSTAGE staging rows and a vector op copies
each into place, so the PE can run ahead of the vector unit without waiting for its copies.

scaled_dot_product_attention (`_sdpa`): one work item = (batch * head, block of RQ <= 128 query rows); PE p
takes a share of the items and runs them as a software pipeline, U items (even) per loop iteration with
buffers of parity 0 and 1. The part of item x (xn = x + 1, y = x - 1):
  a. on the vector unit, row by row: S(x) (+ mask) - row max, the max clamped to >= -FLT_MAX (a fully masked
     row then gives exp = 0, not NaN), exp (fp64 rounded to fp32), the exp of a column's rows a quarter of the
     columns later; between the rows, the D column DMAs that build K^T(xn) [D x Sk] from its K in this PE's
     SRAM slot, and halfway on, the DMAs of later items (K(xn + 1) into the other slot through local memory,
     Q and mask of x + 2, V(xn)); then y's result O(y) * 1 / max(sum(y), FLT_MIN) (a fully masked row gives 0,
     as PyTorch), rounded to the type, and stored;
  b. on the matrix unit: S(xn) = Q(xn) K^T(xn) (fp16 -> fp32 sums; fp32 inputs at the unit's fp32 rate,
     exact products summed in fp64), then sum(x) = E(x) @ ones and O(x) = E(x) @ V(x) in fp32 (exact
     products summed in fp64, rounded once; V converted to fp32 on the vector unit): they run while the
     vector unit works on xn.
The scale applies to K^T as its rows arrive when it is a power of two <= 1 (exact but for subnormals), else to
S in fp32. Masks are fp32 (bool: 0 / -inf): one [Sq, Sk] mask for all heads (is_causal's too) is loaded once,
a key mask [B, H or 1, 1, Sk] as one row per item added row by row, any other per item.
Sequences whose tiles do not fit local memory (or the 1 MiB weight buffer) run unfused: bmm (fp32 scores),
a zero-safe scaled softmax rounded to the inputs' type, bmm, through DRAM.

bmm (`_bmm`): items (batch, column tile, row tile); A rows and W rows come from contiguous blocks, or, for a
transposed operand, from columns of its copy in shared SRAM (the whole tensor staged once, a slice per PE, then
a barrier); K is walked in chunks accumulated on the matrix unit. fp16 -> fp32 sums rounded to fp16; fp32
exact products summed in fp64; int8 -> int32 (wrapping).

masked_softmax (`_msoftmax`): softmax(x + mask) over the last axis: blocks of rows, x + mask in x's type (fp16
rounded, as PyTorch adds), then in fp32: row max, exp(x - max), row sums (vsum, fp64 in order), times
recip(sum), rounded to the type. A mask row shared by a block's rows is added to each row.

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
from .library import OpSpec
from .norm import reference_layer_norm

EB = {"f32": 4, "f16": 2, "i8": 1, "i32": 4}
NP = {"f32": np.float32, "f16": np.float16, "i8": np.int8, "i32": np.int32}
DT = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16", np.dtype(np.int8): "i8"}
FLT_MAX = float(np.finfo(np.float32).max)
FLT_MIN = float(np.finfo(np.float32).tiny)
RESERVE = 8192               # local bytes left to the compiler's constants and small tiles
WEIGHT_BUFFER = 1 << 20
NSTAGE = 16                  # staging rows of the K^T column DMAs
PROLOGUE_DMAS = 2            # column DMAs in flight in the prologue
_kernel = lang.library_kernel


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
    scale_k: bool      # applied to K^T (a power of two <= 1: exact) rather than to S
    mask: str          # "" | "once" (one [Sq, Sk] mask for all heads, loaded once) | "item" ([Sq, Sk] per
                       # (batch, head)) | "row" (one row of Sk for all queries of a (batch, head): key masks)
    mB: int            # mask row strides (in units of Sq rows) per batch and per head (0: broadcast)
    mH: int
    P: int             # PEs the kernel is built for
    U: int = 2         # items per loop iteration (even; the loop's edge drains the matrix unit's queue)

    @property
    def nqb(self):
        return -(-self.Sq // self.RQ)

    @property
    def Sqp(self):             # query rows per head, padded to whole blocks
        return self.nqb * self.RQ

    @property
    def items(self):
        return self.BH * self.nqb


def _sdpa(q: lang.anysize, k, v, mask, ones, zeros, ks, out: lang.anysize, g: lang.constexpr):
    """out[bh, i] = softmax(scale * q[bh, i] k[bh]^T + mask) v[bh].
    q [BH*Sqp, D] (Sq padded to Sqp = nqb * RQ rows per head), k [BH*Sk, D], v [BH*Sk, Dv], mask [NM*Sqp, Sk]
    f32 or None, ones [max(Sk, RQ), 1] f32, zeros [Dv] f32, ks: shared scratch [P*Sk*D], out [BH*Sqp, Dv].

    A software pipeline over this PE's items, U per loop iteration (buffers of parity 0 / 1). The part of
    item x (parity h; xn = x + 1 and y = x - 1, parity 1 - h):
      a. on the vector unit, row by row: S(x) (+ mask, * scale) - row max, clamped, then exp; between the rows,
         the column DMAs of K^T(xn) from the shared-SRAM copy of its K; then y's normalization O(y) * 1 /
         max(sum(y), FLT_MIN) (O(y) and sum(y) are done on the matrix unit by then);
      b. S(xn) = Q(xn) K^T(xn) on the matrix unit;
      c. DMAs for later items: K(xn + 1) into the SRAM slot, y's result out, Q and mask of x + 2, V(xn);
      d. sum(x) = E ones and O(x) = E V (fp32) on the matrix unit: they run while the next part starts."""
    Sqp, Sk, D, Dv, RQ, nqb = g.Sqp, g.Sk, g.D, g.Dv, g.RQ, g.nqb
    cdt = g.dt
    pe = lang.pe_id()
    lo, hi = lang.split(g.items)
    first = lang.minimum(lo, g.items - 1)
    last = lang.maximum(hi - 1, first)
    slot = ks.reshape(2 * g.P, Sk, D)           # two slots per PE
    kt = [lang.empty((D, Sk), cdt), lang.empty((D, Sk), cdt)]          # K^T
    qb = [lang.empty((RQ, D), cdt), lang.empty((RQ, D), cdt)]          # Q blocks
    vb = [lang.empty((Sk, Dv), cdt), lang.empty((Sk, Dv), cdt)]        # V
    sb = [lang.empty((RQ, Sk), "f32"), lang.empty((RQ, Sk), "f32")]    # S, then E
    ob = [lang.empty((RQ, Dv), "f32"), lang.empty((RQ, Dv), "f32")]    # E V
    tb = [lang.empty((RQ, 1), "f32"), lang.empty((RQ, 1), "f32")]      # row sums of E
    mb = [lang.empty((RQ, Sk), "f32"), lang.empty((RQ, Sk), "f32")] if g.mask == "item" else \
        [lang.empty((Sk,), "f32"), lang.empty((Sk,), "f32")] if g.mask == "row" else None
    st = [lang.empty((Sk,), cdt) for _ in range(min(D, NSTAGE))]       # columns of K on their way
    mx = lang.empty((RQ, 1), "f32")
    one = lang.load(ones[0:Sk, :])                                     # [Sk, 1] of 1.0
    mall = lang.load(mask) if g.mask == "once" else None

    def clampi(j):
        return lang.minimum(j, last)

    # Every DMA is issued when this PE's engine is idle: a DMA queued behind others books the DRAM channel
    # or the SRAM ring from where it will start, and both are booked in issue order (docs/timing.md 2), so
    # a PE with a queue of transfers would hold them ahead of every other PE's. A vector op reading the
    # tile a load writes (writing the tile a store reads) makes the PE wait for that DMA.
    def wait_load(t):
        lang.copy(t[0][0:1], out=t[0][0:1])          # reads (and rewrites) its first element: waits for the load

    def wait_store(t):
        lang.copy(t[0][0:1], out=t[0][0:1])          # rewrites its own first element: waits for the store

    def kslot(item, j):         # item's K into this PE's SRAM slot j, through local memory
        bh = item // nqb
        kl = lang.load(k[bh * Sk:bh * Sk + Sk, :])
        wait_load(kl)
        lang.store(slot[2 * pe + j], kl)
        wait_store(kl)

    def column(h, d, j):
        """Row d of K^T(h) = column d of the K in slot j: a DMA into a staging row, then a vector op copying
        it into K^T (scaled, when the scale applies to K) makes the PE wait for the DMA; NSTAGE staging
        rows, so that the PE can issue the DMAs of the next columns while the vector unit catches up."""
        column_dma(d, j)
        column_copy(h, d)

    def column_dma(d, j):
        lang.load(slot[2 * pe + j, :, d], into=st[d % len(st)])

    def column_copy(h, d):
        t = st[d % len(st)]
        if g.scale_k and g.scale != 1.0:
            lang.mul(t, g.scale, out=kt[h][d])
        else:
            lang.copy(t, out=kt[h][d])

    def load_q(h, item):
        lang.load(q[item * RQ:item * RQ + RQ, :], into=qb[h])
        wait_load(qb[h])

    def load_mask(h, item):
        bh = item // nqb
        b = bh // g.H
        if g.mask == "item":
            mrow = (b * g.mB + (bh - b * g.H) * g.mH) * Sqp + (item - bh * nqb) * RQ
            lang.load(mask[mrow:mrow + RQ, :], into=mb[h])
            wait_load(mb[h])
        elif g.mask == "row":
            lang.load(mask[b * g.mB + (bh - b * g.H) * g.mH, :], into=mb[h])
            wait_load(mb[h])

    def load_v(h, item):
        bh = item // nqb
        lang.load(v[bh * Sk:bh * Sk + Sk, :], into=vb[h])
        wait_load(vb[h])

    def qk(h):
        lang.matmul(qb[h], kt[h], out=sb[h])

    def part(h, x, xn, y):
        """Item x (parity h): E(x); K^T(xn) from slot 1 - h; y's result (parity 1 - h) stored; the DMAs of
        later items between the column DMAs; S(xn); then sum(x) and O(x) on the matrix unit."""
        s = sb[h]
        v32 = vb[h].astype("f32") if cdt == "f16" else vb[h]
        if not g.scale_k:
            lang.mul(s, g.scale, out=s)
        if g.mask == "item":
            lang.add(s, mb[h], out=s)
        elif g.mask == "once":
            q0 = (x - x // nqb * nqb) * RQ
            lang.add(s, mall[q0:q0 + RQ] if nqb > 1 else mall, out=s)
        dmas = [lambda: kslot(clampi(xn + 1), h), lambda: load_q(h, clampi(x + 2)),
                lambda: load_mask(h, clampi(x + 2)), lambda: load_v(1 - h, xn)]
        if g.mask == "row":                      # (its rows use this item's mask row until the loop ends)
            dmas, last_dma = dmas[:2] + dmas[3:], dmas[2]
        at = {D // 2 + i * (D // 8): f for i, f in enumerate(dmas)} if D >= 8 else {}
        lag = D // 4                             # E of the rows of column d - lag at column d; of the
        for d in lang.static_range(D):           # last lag columns' rows after the loop
            column(1 - h, d, 1 - h)
            r0, r1 = d * RQ // D, (d + 1) * RQ // D
            if r1 > r0:
                for r in lang.static_range(r0, r1):
                    if g.mask == "row":
                        lang.add(s[r], mb[h], out=s[r])
                    lang.max(s[r], out=mx[r])
                lang.maximum(mx[r0:r1], -FLT_MAX, out=mx[r0:r1])
                lang.sub(s[r0:r1], mx[r0:r1], out=s[r0:r1])
            e0, e1 = (d - lag) * RQ // D, (d - lag + 1) * RQ // D
            if d >= lag and e1 > e0:
                lang.exp(s[e0:e1], out=s[e0:e1])
            if d in at:
                at[d]()
        o, t = ob[1 - h], tb[1 - h]              # y's result: O(y) / sum(y)
        lang.maximum(t, FLT_MIN, out=t)
        lang.mul(o, lang.recip(t, out=t), out=o)
        res = o.astype("f16") if cdt == "f16" else o
        e0 = (D - lag) * RQ // D                 # (vector work while y's result is stored)
        lang.exp(s[e0:RQ], out=s[e0:RQ])
        if D < 8:
            for f in dmas:
                f()
        if g.mask == "row":
            last_dma()
        qk(1 - h)                                # S(xn)
        lang.store(out[y * RQ:y * RQ + RQ, :], res)
        wait_store(res)
        lang.matmul(s, one, out=tb[h])           # sum(x)
        lang.matmul(s, v32, out=ob[h])           # O(x)

    # prologue: the first item's K^T, Q, V, mask and S; the second's Q, mask and K (in slot 1). The
    # "previous item" of the first part is a result stored into the first item's rows (its real result
    # overwrites it later, in order)
    lang.load(ones[0:RQ, :], into=tb[1])
    lang.copy(lang.repeat(lang.load(zeros), RQ), out=ob[1])     # (any values: they are overwritten)
    kslot(first, 0)
    load_q(0, first)
    load_mask(0, first)
    ahead = PROLOGUE_DMAS - 1                  # (DMAs in flight: the vector unit has nothing else to do yet)
    for d in lang.static_range(D + ahead):
        if d < D:
            column_dma(d, 0)
        if d >= ahead:
            column_copy(0, d - ahead)
    qk(0)
    kslot(clampi(first + 1), 1)
    load_v(0, first)
    load_q(1, clampi(first + 1))
    load_mask(1, clampi(first + 1))

    for it in range(lo, hi, g.U):
        xs = [it] + [clampi(it + u) for u in range(1, g.U + 1)]
        for u in lang.static_range(g.U):
            part(u % 2, xs[u], xs[u + 1], lang.maximum(it - 1, first) if u == 0 else xs[u - 1])
    if hi > lo:
        o, t = ob[1], tb[1]
        lang.maximum(t, FLT_MIN, out=t)
        lang.mul(o, lang.recip(t), out=o)
        lang.store(out[last * RQ:last * RQ + RQ, :], o.astype("f16") if cdt == "f16" else o)


def _sdpa_bytes(dt, Sq, Sk, D, Dv, RQ, mask):
    """Local memory of _sdpa's tiles (an estimate: the compiler has the last word)."""
    eb = EB[dt]
    Sqp = -(-Sq // RQ) * RQ
    fixed = 2 * D * Sk * eb + 2 * Sk * Dv * eb + Sk * 4 + (Sqp * Sk * 4 if mask == "once" else 0) + 2048
    per_row = 2 * D * eb + 2 * Sk * 4 + Sk * 2 + 2 * Dv * 4 + 2 * Dv * eb + 16 + (2 * Sk * 4 if mask == "item" else 0)
    fixed += 2 * Sk * 4 if mask == "row" else 0
    return fixed + RQ * per_row


def _attn_plan(card, dt, BH, H, Sq, Sk, D, Dv, scale, mask, mB, mH, P, cap=128):
    """The fused kernel's geometry, or None when its tiles cannot fit (then the op runs unfused)."""
    eb = EB[dt]
    if D * Sk * eb > WEIGHT_BUFFER or Sk * Dv * eb > WEIGHT_BUFFER or \
            2 * P * Sk * D * eb > int(card.config.shared_sram.bytes) // 2:
        return None
    local = int(card.config.local_memory.bytes) - RESERVE
    if mask == "once" and Sq * Sk * 4 > local // 4:
        mask = "item"
    rows = min(cap, Sq)
    while rows >= 1 and _sdpa_bytes(dt, Sq, Sk, D, Dv, -(-Sq // -(-Sq // rows)), mask) > local:
        rows //= 2
    if rows < 1:
        return None
    RQ = -(-Sq // -(-Sq // rows))               # even blocks
    s32 = float(np.float32(scale))
    n = -(-BH * -(-Sq // RQ) // P)               # items of the largest share
    U = 8 if n % 8 == 0 else 4 if n % 4 == 0 else 2
    return AGeom(dt, BH, H, Sq, Sk, D, Dv, RQ, s32, _pow2_at_most_1(s32), mask, mB, mH, P, U)


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
    strides = (Hm if Bm > 1 else 0), (1 if Hm > 1 else 0)
    if m4.shape[2] == 1 and Bm * Hm > 1:        # a key mask: one row per (batch, head), added row by row
        m4 = np.broadcast_to(m4, (Bm, Hm, 1, Sk)).astype(np.float32)
        return np.ascontiguousarray(m4).reshape(Bm * Hm, Sk), "row", *strides
    m4 = np.broadcast_to(m4, (Bm, Hm, Sq, Sk)).astype(np.float32)
    mode = "once" if Bm * Hm == 1 else "item"
    return np.ascontiguousarray(m4).reshape(Bm * Hm * Sq, Sk), mode, *strides


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
    while True:
        Sqp, RQ = g.Sqp, g.RQ
        qp = np.zeros((BH, Sqp, D), npd)
        qp[:, :Sq] = q.reshape(BH, Sq, D)
        mask_arg = None
        if mask is not None and g.mask == "row":
            mask_arg = mask
        elif mask is not None:
            nm = mask.shape[0] // Sq
            mask_arg = np.zeros((nm, Sqp, Sk), np.float32)
            mask_arg[:, :Sq] = mask.reshape(nm, Sq, Sk)
            mask_arg = mask_arg.reshape(nm * Sqp, Sk)
        ones = np.ones((max(Sk, RQ), 1), np.float32)
        zeros = np.zeros(Dv, np.float32)
        example = [np.empty((0, D), npd), np.empty((BH * Sk, D), npd), np.empty((BH * Sk, Dv), npd),
                   None if mask_arg is None else np.empty(mask_arg.shape, np.float32), ones, zeros,
                   np.empty(2 * P * Sk * D, npd), np.empty((0, Dv), npd)]
        args = [qp.reshape(BH * Sqp, D), np.ascontiguousarray(k).reshape(BH * Sk, D),
                np.ascontiguousarray(v).reshape(BH * Sk, Dv), mask_arg, ones, zeros,
                runner.Scratch(2 * P * Sk * D * EB[dt], "shared"), runner.Out((BH * Sqp, Dv), npd)]
        key = ("sdpa", g, None if mask_arg is None else mask_arg.shape, runner.card_key(card))
        try:
            (out,), result = runner.run_kernel(card, key, k_, example, args, [g], op, pes, trace)
            break
        except lang.KernelError as e:      # the tiles do not fit after all: fewer query rows per item
            if "does not fit local memory" not in str(e) or g.RQ == 1:
                raise
            g = _attn_plan(card, dt, BH, H, Sq, Sk, D, Dv, scale, mode, mB, mH, P, cap=g.RQ // 2)
            if g is None:
                return _sdpa_unfused(card, q, k, v, mask, mode, mB, mH, B, H, scale, shape, pes, trace)
    return out.reshape(BH, Sqp, Dv)[:, :Sq].reshape(shape), result


def _sdpa_unfused(card, q, k, v, mask, mode, mB, mH, B, H, scale, shape, pes, trace):
    """When the fused kernel's tiles do not fit: S = Q K^T (bmm, fp32 out), softmax(S * scale + mask) rounded to
    the inputs' type (a fully masked row gives 0), then P V (bmm); three launches, their costs summed."""
    Sq, D = q.shape[-2:]
    Sk, Dv = v.shape[-2:]
    BH = B * H
    q3, k3, v3 = (np.ascontiguousarray(t).reshape(BH, t.shape[-2], t.shape[-1]) for t in (q, k, v))
    s, r1 = bmm(card, q3, k3, transpose_b=True, pes=pes, trace=trace, out_fp32=True)
    m4 = None
    if mask is not None:
        rows = 1 if mode == "row" else Sq
        nm = mask.shape[0] // rows
        Bm, Hm = (B if mB else 1), (H if mH else 1)
        if nm != Bm * Hm:               # "once" masks made "item" by the plan keep their shape
            Bm, Hm = 1, 1
        m4 = mask.reshape(Bm, Hm, rows, Sk)
        s = s.reshape(B, H, Sq, Sk)
    p, r2 = masked_softmax(card, s, m4, scale=float(np.float32(scale)), out_dtype=q.dtype, zero_empty=True,
                           pes=pes, trace=trace)
    o, r3 = bmm(card, p.reshape(BH, Sq, Sk), v3, pes=pes, trace=trace)
    return o.reshape(shape), chain_results([r1, r2, r3])


def chain_results(results):
    """One LaunchResult for launches run one after the other on the same PEs: cycles and counters summed,
    trace events shifted to their launch's start."""
    from dataclasses import replace
    if any(r is None for r in results):       # (a test's interpreter runs give no results)
        return None
    first = results[0]
    t, events = 0, []
    for r in results:
        if r.events is not None and len(r.events):
            e = r.events.copy()
            e[:, 2:4] += t
            events.append(e)
        t += r.cycles
    ev = np.concatenate(events) if events else first.events
    same = all(r.pes == first.pes for r in results)
    return replace(first, kernel="+".join(r.kernel for r in results), cycles=t,
                   pe_stats=sum(r.pe_stats for r in results) if same else first.pe_stats,
                   card_stats=sum(r.card_stats for r in results), events=ev)


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
            s = _mm(q, np.swapaxes((k.astype(np.float32) * s32).astype(k.dtype), -1, -2))
        else:
            s = (_mm(q, np.swapaxes(k, -1, -2)) * s32).astype(np.float32)
        if mask is not None:
            s = (s + mask).astype(np.float32)
        m = np.maximum(s.max(axis=-1, keepdims=True), np.float32(-FLT_MAX))
        e = np.exp((s - m).astype(np.float64)).astype(np.float32)
        tot = e.astype(np.float64).sum(axis=-1, keepdims=True).astype(np.float32)
        o = _mm(e, v.astype(np.float32))
        o = (o * _recip(np.maximum(tot, np.float32(FLT_MIN)))).astype(np.float32)
    return o.astype(q.dtype)


# =============================================================================================================
# bmm: batched matmul with either operand transposed
# =============================================================================================================
@dataclass(frozen=True)
class BGeom:
    dt: str            # f16 | f32 | i8 (both operands)
    B: int
    Mp: int            # M padded to whole row tiles
    K: int
    Np: int            # N padded to whole column tiles
    MB: int            # rows per tile
    NB: int            # columns per tile
    KB: int            # K per matmul (the weight tile KB x NB)
    ta: bool           # a is given as [B, K, M]
    tb: bool           # b is given as [B, N, K]
    P: int
    o32: bool = False  # fp16 inputs: the fp32 sums out (not rounded to fp16)

    @property
    def items(self):
        return self.B * (self.Mp // self.MB) * (self.Np // self.NB)

    def odt(self):
        return {"f16": np.float32 if self.o32 else np.float16, "f32": np.float32, "i8": np.int32}[self.dt]


def _columns(n, src, dst, st):
    """dst(i) = src(i) for i < n (1-D blocks of one element per row, from shared SRAM; made one at a time, so
    that their card values are not all live at once) one DMA at a time: each lands in a staging row and a
    vector op copies it into place, which makes the PE wait for that DMA before it issues the next (see the
    module docstring: a DMA queued behind others books the SRAM ring ahead of its time)."""
    for i in range(n):
        t = st[i % len(st)]
        lang.load(src(i), into=t)
        lang.copy(t, out=dst(i))


def _bmm(a, b, out, sa, sb, g: lang.constexpr):
    """out[bi] = A[bi] @ W[bi]. a: [B*Mp, K] (ta: [B*K, Mp]), b: [B*K, Np] (tb: [B*Np, K]), out [B*Mp, Np];
    sa / sb: shared-SRAM copies of a / b when transposed (each PE copies its slice, then a barrier)."""
    B, Mp, K, Np, MB, NB, KB = g.B, g.Mp, g.K, g.Np, g.MB, g.NB, g.KB
    if g.ta or g.tb:
        for flag, src, dst, n in ((g.ta, a, sa, B * K * Mp), (g.tb, b, sb, B * K * Np)):
            if flag:
                share = -(-(-(-n // g.P)) // 64) * 64
                lo_ = lang.pe_id() * share
                lang.transfer(dst[lo_:lo_ + share], src.reshape(n)[lo_:lo_ + share])
        lang.barrier()
    sa3 = sa.reshape(B, K, Mp) if g.ta else None
    sb3 = sb.reshape(B, Np, K) if g.tb else None
    nst = max(1, min(NSTAGE, max(MB, KB)))
    st_a = [lang.empty((KB,), g.dt) for _ in range(nst)] if g.ta else None
    st_b = [lang.empty((NB,), g.dt) for _ in range(nst)] if g.tb else None
    nm, nn = Mp // MB, Np // NB
    lo, hi = lang.split(g.items)
    for it in range(lo, hi):
        bi = it // (nm * nn)
        r = it - bi * (nm * nn)
        n0 = r // nm * NB
        m0 = (r - r // nm * nm) * MB
        acc = None
        for k0 in lang.static_range(0, K, KB):
            kb = min(KB, K - k0)
            if g.ta:
                at = lang.empty((MB, kb), g.dt)
                st = st_a if kb == KB else [lang.empty((kb,), g.dt) for _ in range(nst)]
                _columns(MB, lambda m: sa3[bi, k0:k0 + kb, m0 + m], lambda m: at[m], st)
            else:
                at = lang.load(a[bi * Mp + m0:bi * Mp + m0 + MB, k0:k0 + kb])
            if g.tb:
                wt = lang.empty((kb, NB), g.dt)
                _columns(kb, lambda kk: sb3[bi, n0:n0 + NB, k0 + kk], lambda kk: wt[kk], st_b)
            else:
                wt = lang.load(b[bi * K + k0:bi * K + k0 + kb, n0:n0 + NB])
            if acc is None:
                acc = lang.matmul(at, wt)
            else:
                lang.matmul(at, wt, out=acc, accumulate=True)
        lang.store(out[bi * Mp + m0:bi * Mp + m0 + MB, n0:n0 + NB],
                   acc.astype("f16") if g.dt == "f16" and not g.o32 else acc)



def _bmm_plan(card, dt, B, M, K, N, ta, tb, P, o32=False):
    """Tile sizes: whole N (up to 256 columns) and up to 128 rows per item, K in chunks whose weight tile fits
    the matrix unit's buffer; local memory decides the rest (halved until the kernel compiles)."""
    eb = EB[dt]
    NB = min(N, 256)
    MB = min(M, 128)
    KB = min(K, max(1, WEIGHT_BUFFER // (NB * eb)), 512)
    Mp, Np = -(-M // MB) * MB, -(-N // NB) * NB
    return BGeom(dt, B, Mp, K, Np, MB, NB, KB, bool(ta), bool(tb), P, o32)


def bmm(card, a, b, transpose_a=False, transpose_b=False, pes=None, trace=False, out_fp32=False):
    """out[i] = A[i] @ W[i] with A = a[i] (or a[i]^T when transpose_a: a is [B, K, M]) and W = b[i] (or b[i]^T
    when transpose_b: b is [B, N, K], i.e. torch's a @ b.transpose(-1, -2)). a, b: 3-D (or 2-D: one batch),
    both float16 (-> float16: fp32 sums in K order, rounded once), both float32 (exact products summed in fp64,
    rounded once) or both int8 (-> int32, wrapping). Returns (array, LaunchResult)."""
    op = "bmm"
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.dtype not in (np.float16, np.float32, np.int8):
        raise InvalidArgument(f"{op}: a and b must both be float16, float32 or int8, got {a.dtype} and {b.dtype}")
    if a.ndim != b.ndim or a.ndim not in (2, 3):
        raise InvalidArgument(f"{op}: a and b must both be 3-D [B, ., .] (or both 2-D), got {a.shape} and {b.shape}")
    for name, f in (("transpose_a", transpose_a), ("transpose_b", transpose_b)):
        if not isinstance(f, (bool, np.bool_)):
            raise InvalidArgument(f"{op}: {name} must be True or False, got {f!r}")
    batched = a.ndim == 3
    a3, b3 = (a, b) if batched else (a[None], b[None])
    if a3.shape[0] != b3.shape[0]:
        raise InvalidArgument(f"{op}: batch sizes differ: {a.shape} and {b.shape}")
    B = a3.shape[0]
    K, M = (a3.shape[1], a3.shape[2]) if transpose_a else (a3.shape[2], a3.shape[1])
    Kb, N = (b3.shape[2], b3.shape[1]) if transpose_b else (b3.shape[1], b3.shape[2])
    if K != Kb:
        raise InvalidArgument(f"{op}: inner dimensions differ: {K} and {Kb} (a {a.shape}, b {b.shape}, "
                              f"transpose_a={transpose_a}, transpose_b={transpose_b})")
    dt = DT[a.dtype]
    odt = {"f16": np.float32 if out_fp32 else np.float16, "f32": np.float32, "i8": np.int32}[dt]
    shape = (B, M, N) if batched else (M, N)
    if B * M * N == 0:
        return np.zeros(shape, odt), runner.nothing(card, op, pes)
    if K == 0:         # an empty sum: zeros (as PyTorch); one zero term computes exactly that
        a3, b3, K = np.zeros((B, M, 1), a.dtype), np.zeros((B, 1, N), a.dtype), 1
        transpose_a = transpose_b = False
    P = _npes(card, pes)
    # transposed operands are staged whole in the shared SRAM: batches in groups that fit half of it
    staged = K * ((M if transpose_a else 0) + (N if transpose_b else 0)) * EB[dt]
    per = max(1, int(card.config.shared_sram.bytes) // 2 // max(1, staged)) if staged else B
    if staged and staged > int(card.config.shared_sram.bytes) // 2:
        raise InvalidArgument(f"{op}: one batch's transposed operand ({staged} bytes) does not fit half the shared "
                              f"SRAM of {card.config.name}")
    outs, results = [], []
    for b0 in range(0, B, per):
        o, r = _bmm_batches(card, a3[b0:b0 + per], b3[b0:b0 + per], M, K, N, dt, transpose_a, transpose_b, P,
                            out_fp32, pes, trace)
        outs.append(o)
        results.append(r)
    out = np.concatenate(outs) if len(outs) > 1 else outs[0]
    return (out if batched else out[0]).copy(), (chain_results(results) if len(results) > 1 else results[0])


def _bmm_batches(card, a3, b3, M, K, N, dt, ta, tb, P, out_fp32, pes, trace):
    B = a3.shape[0]
    g = _bmm_plan(card, dt, B, M, K, N, ta, tb, P, bool(out_fp32))
    k_ = _kernel(_bmm, "bmm")
    while True:
        out, result = _bmm_launch(card, k_, g, a3, b3, M, N, pes, trace)
        if out is not None:
            break
        if g.MB == 1 and g.NB == 1 and g.KB == 1:
            raise InvalidArgument("bmm: tiles do not fit local memory")
        MB, NB, KB = max(1, g.MB // 2), max(1, g.NB // 2), max(1, g.KB // 2)
        g = BGeom(g.dt, B, -(-M // MB) * MB, K, -(-N // NB) * NB, MB, NB, KB, g.ta, g.tb, P, g.o32)
    return out.reshape(B, g.Mp, g.Np)[:, :M, :N], result


def _bmm_launch(card, k_, g, a3, b3, M, N, pes, trace):
    """Run one plan; (None, None) when its tiles do not fit local memory."""
    B, K, Mp, Np = g.B, g.K, g.Mp, g.Np
    npd = NP[g.dt]
    odt = g.odt()
    if g.ta:
        ap = np.zeros((B, K, Mp), npd)
        ap[:, :, :M] = a3
        a2 = ap.reshape(B * K, Mp)
    else:
        ap = np.zeros((B, Mp, K), npd)
        ap[:, :M] = a3
        a2 = ap.reshape(B * Mp, K)
    if g.tb:
        bp = np.zeros((B, Np, K), npd)
        bp[:, :N] = b3
        b2 = bp.reshape(B * Np, K)
    else:
        bp = np.zeros((B, K, Np), npd)
        bp[:, :, :N] = b3
        b2 = bp.reshape(B * K, Np)
    na, nb = B * K * Mp, B * K * Np
    example = [np.empty(a2.shape, npd), np.empty(b2.shape, npd), np.empty((B * Mp, Np), odt),
               np.empty(na, npd) if g.ta else None, np.empty(nb, npd) if g.tb else None]
    args = [a2, b2, runner.Out((B * Mp, Np), odt),
            runner.Scratch(na * EB[g.dt], "shared") if g.ta else None,
            runner.Scratch(nb * EB[g.dt], "shared") if g.tb else None]
    key = ("bmm", g, runner.card_key(card))
    try:
        (out,), result = runner.run_kernel(card, key, k_, example, args, [g], "bmm", pes, trace)
    except lang.KernelError as e:
        if "does not fit local memory" in str(e):
            return None, None
        raise
    return out, result


def reference_bmm(a, b, transpose_a=False, transpose_b=False):
    a, b = np.asarray(a), np.asarray(b)
    A = np.swapaxes(a, -1, -2) if transpose_a else a
    W = np.swapaxes(b, -1, -2) if transpose_b else b
    r = _mm(A, W)
    return r.astype(np.float16) if a.dtype == np.float16 else r


# =============================================================================================================
# masked softmax: softmax(x + mask) over the last axis
# =============================================================================================================
@dataclass(frozen=True)
class SGeom:
    dt: str            # f16 | f32
    D: tuple           # the rows' dimensions, collapsed with the mask's (the last: a run of rows)
    sm: tuple          # the mask's row strides per dimension (0: broadcast); () without a mask
    C: int             # row length
    R: int             # rows per block
    scale: float = 1.0     # x * scale before the mask (fp32 x)
    odt: str = ""          # the output's type ("": x's)
    zero_empty: bool = False   # a row that is all -inf gives 0 (scaled_dot_product_attention), not NaN

    @property
    def items(self):
        return int(np.prod(self.D[:-1], dtype=np.int64)) * -(-self.D[-1] // self.R)


def _msoftmax(x, mask, out, g: lang.constexpr):
    """out = softmax(x + mask) over rows of C: x, out [rows, C]; mask [mask rows, C] or None. Items are blocks
    of R rows of the last collapsed dimension at one outer index; x + mask in x's type, then fp32: row max,
    exp(x - max), row sums, times their reciprocal."""
    R, D = g.R, g.D
    nb = -(-D[-1] // R)
    lo, hi = lang.split(g.items)
    for it in range(lo, hi, pipeline=True):
        o = it // nb
        r0 = (it - o * nb) * R
        row = o * D[-1] + r0
        end = lang.minimum(row + R, o * D[-1] + D[-1])
        t = lang.load(x[row:end, :])
        if g.scale != 1.0:
            lang.mul(t, g.scale, out=t)
        if mask is not None:
            mo, rest = 0, o
            for d in reversed(range(len(D) - 1)):
                idx = rest % D[d] if d else rest
                rest = rest // D[d] if d else rest
                mo = mo + idx * g.sm[d]
            if g.sm[-1]:
                mrow = mo + r0
                lang.add(t, lang.load(mask[mrow:lang.minimum(mrow + R, mo + D[-1]), :]), out=t)
            else:                              # one mask row for the whole block
                lang.add(t, lang.load(mask[mo, :]), out=t)
        f = t if g.dt == "f32" else t.astype("f32")
        m = lang.max(f, axis=1)
        if g.zero_empty:
            lang.maximum(m, -FLT_MAX, out=m)
        lang.sub(f, m, out=f)
        lang.exp(f, out=f)
        s = lang.sum(f, axis=1)
        if g.zero_empty:
            lang.maximum(s, FLT_MIN, out=s)
        lang.mul(f, lang.recip(s, out=s), out=f)
        odt = g.odt or g.dt
        lang.store(out[row:end, :], f if odt == "f32" else f.astype(odt))


def masked_softmax(card, x, mask=None, dim=-1, pes=None, trace=False, scale=1.0, out_dtype=None, zero_empty=False):
    """softmax(x + mask) over the last axis (torch.softmax(x + mask, -1)); x float32 or float16 of any rank;
    mask None, of x's dtype (added in that type, as PyTorch adds) or bool (True keeps, False is -inf),
    broadcastable to x. Returns (array, LaunchResult)."""
    op = "masked_softmax"
    x = np.asarray(x)
    if x.dtype not in (np.float16, np.float32):
        raise InvalidArgument(f"{op}: x must be float16 or float32, got {x.dtype}")
    if x.ndim == 0:
        raise InvalidArgument(f"{op}: x must have at least one dimension")
    if dim not in (-1, x.ndim - 1):
        raise InvalidArgument(f"{op}: only the last dimension (dim=-1) is supported, got dim={dim!r}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype == np.bool_:
            mask = np.where(mask, x.dtype.type(0), x.dtype.type(-np.inf)).astype(x.dtype)
        elif mask.dtype != x.dtype:
            raise InvalidArgument(f"{op}: mask must be bool or {x.dtype} (x's dtype), got {mask.dtype}")
        try:
            if np.broadcast_shapes(mask.shape, x.shape) != x.shape:
                raise ValueError
        except ValueError:
            raise InvalidArgument(f"{op}: mask of shape {mask.shape} does not broadcast to x's {x.shape}") from None
        mask = mask.reshape((1,) * (x.ndim - mask.ndim) + mask.shape)
        if mask.shape[-1] != x.shape[-1]:
            mask = np.broadcast_to(mask, mask.shape[:-1] + x.shape[-1:])
    C = x.shape[-1]
    rows = int(np.prod(x.shape[:-1], dtype=np.int64))
    if rows == 0 or C == 0:
        return np.zeros(x.shape, out_dtype or x.dtype), runner.nothing(card, op, pes)
    lead = x.shape[:-1] if x.ndim > 1 else (1,)
    if mask is None:
        D, sm, m2 = (rows,), (), None
    else:
        from .broadcast import collapse
        ml = mask.shape[:-1] if mask.ndim > 1 else (1,)
        D, sx, sm = collapse(lead, ml)
        m2 = np.ascontiguousarray(mask).reshape(-1, C)
    dt = DT[x.dtype]
    local = int(card.config.local_memory.bytes) - RESERVE
    per_row = C * (EB[dt] * 2 * (2 if mask is not None else 1) + 4 + EB[dt]) + 64
    R = int(min(local // (per_row * 2), 64, D[-1]))
    if R < 1:
        raise InvalidArgument(f"{op}: rows of {C} elements do not fit local memory of {card.config.name}")
    odt = DT[np.dtype(out_dtype)] if out_dtype is not None else dt
    g = SGeom(dt, tuple(int(d) for d in D), tuple(int(v) for v in sm), int(C), R, float(np.float32(scale)), odt,
              bool(zero_empty))
    k_ = _kernel(_msoftmax, op)
    npd = NP[dt]
    x2 = np.ascontiguousarray(x).reshape(rows, C)
    example = [np.empty((rows, C), npd), None if m2 is None else np.empty(m2.shape, npd), np.empty((rows, C), NP[odt])]
    args = [x2, m2, runner.Out((rows, C), NP[odt])]
    key = ("msoftmax", g, None if m2 is None else m2.shape, runner.card_key(card))
    (out,), result = runner.run_kernel(card, key, k_, example, args, [g], op, pes, trace)
    return out.reshape(x.shape), result


def reference_masked_softmax(x, mask=None):
    """The card's steps: x + mask in x's type; in fp32: max, exp(x - max) (fp64 rounded to fp32), sums (fp64 in
    order, rounded to fp32), times fp32(1 / sum); rounded to x's type."""
    x = np.asarray(x)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype == np.bool_:
            mask = np.where(mask, x.dtype.type(0), x.dtype.type(-np.inf)).astype(x.dtype)
        with np.errstate(invalid="ignore"):
            x = (x.astype(np.float32) + mask.astype(np.float32)).astype(x.dtype)
    if x.size == 0:
        return x.copy()
    f = x.astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        m = f.max(axis=-1, keepdims=True)
        e = np.exp((f - m).astype(np.float64)).astype(np.float32)
        s = e.astype(np.float64).sum(axis=-1, keepdims=True).astype(np.float32)
        y = (e * _recip(s)).astype(np.float32)
    return y.astype(x.dtype)


# =============================================================================================================
# gelu (tanh form), layer norm in fp16, embedding
# =============================================================================================================
GELU_BETA = float(np.float32(math.sqrt(2.0) * (2.0 / math.sqrt(math.pi)) * 0.5))   # PyTorch's kBeta
GELU_KAPPA = float(np.float32(0.044715))
STREAM_T = 4096              # elements per tile of the streaming kernels


def _gelu_tanh(x: lang.anysize, out: lang.anysize, n, T: lang.constexpr):
    """PyTorch's tanh GELU in its order, in fp32: 0.5 x (1 + tanh(kBeta (x + kKappa x^3)))."""
    lo, hi = lang.split(n, align=64)
    for i in range(lo, hi, T, pipeline=True):
        end = lang.minimum(i + T, hi)
        t = lang.load(x[i:end])
        f = t if x.dtype == "f32" else t.astype("f32")
        c = f * f
        lang.mul(c, f, out=c)                    # x^3
        lang.mul(c, GELU_KAPPA, out=c)
        lang.add(c, f, out=c)                    # x + kKappa x^3
        lang.mul(c, GELU_BETA, out=c)
        lang.tanh(c, out=c)
        lang.add(c, 1.0, out=c)
        lang.mul(c, f * 0.5, out=c)              # (0.5 x) (1 + tanh)
        lang.store(out[i:end], c if x.dtype == "f32" else c.astype(x.dtype))


def gelu(card, x, approximate="none", pes=None, trace=False):
    """torch.nn.functional.gelu: approximate="none" (erf: the elementwise kernel) or "tanh" (this one)."""
    from . import elementwise
    if approximate == "none":
        return elementwise.gelu(card, x, pes=pes, trace=trace)
    if approximate != "tanh":
        raise InvalidArgument(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    x = np.asarray(x)
    if x.dtype not in (np.float16, np.float32):
        raise InvalidArgument(f"gelu: x must be float16 or float32, got {x.dtype}")
    n = x.size
    if n == 0:
        return np.zeros(x.shape, x.dtype), runner.nothing(card, "gelu_tanh", pes)
    dt = DT[x.dtype]
    k_ = _kernel(_gelu_tanh, "gelu_tanh")
    example = [np.empty(0, x.dtype), np.empty(0, x.dtype), 0]
    args = [np.ascontiguousarray(x).reshape(-1), runner.Out((n,), x.dtype), n]
    (out,), result = runner.run_kernel(card, ("gelu_tanh", dt, runner.card_key(card)), k_, example, args,
                                       [STREAM_T], "gelu_tanh", pes, trace)
    return out.reshape(x.shape), result


def reference_gelu_tanh(x):
    x = np.asarray(x)
    f = x.astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        c = (f * f * f * np.float32(GELU_KAPPA) + f) * np.float32(GELU_BETA)
        th = np.tanh(c.astype(np.float64)).astype(np.float32)
        y = (f * np.float32(0.5)) * (th + np.float32(1.0))
    return y.astype(x.dtype)


def _layer_norm16(x: lang.anysize, gamma, beta, out: lang.anysize, rows, inv_d, eps, B: lang.constexpr):
    """norm.py's layer_norm row chain on fp16 rows converted to fp32 (gamma / beta fp16, converted once, or
    None); the result rounded once to fp16."""
    g = lang.load(gamma).astype("f32") if gamma is not None else None
    b = lang.load(beta).astype("f32") if beta is not None else None
    lo, hi = lang.split(rows)
    for r0 in range(lo, hi, B, pipeline=True):
        end = lang.minimum(r0 + B, hi)
        xt = lang.load(x[r0:end, :]).astype("f32")
        y = lang.empty(xt.shape, "f32")
        for r in range(0, end - r0):
            xr, yr = xt[r], y[r]
            lang.sub(xr, xr[0], out=yr)                          # xs = x - x[0]
            lang.sub(yr, lang.sum(yr) * inv_d, out=yr)           # xc = xs - sum(xs) * (1/D)
            lang.mul(yr, yr, out=xr)                             # xc^2
            lang.mul(yr, lang.rsqrt(lang.sum(xr) * inv_d + eps), out=yr)
            if g is not None:
                lang.mul(yr, g, out=yr)
            if b is not None:
                lang.add(yr, b, out=yr)
        lang.store(out[r0:end, :], y.astype("f16"))


def layer_norm(card, x, gamma=None, beta=None, eps=1e-5, pes=None, trace=False):
    """Layer normalization over the last axis of x (any rank): float32 (norm.py's kernel) or float16 (gamma and
    beta float16 or None): the fp32 row chain of norm.py on the converted values, rounded once to fp16."""
    from . import norm
    op = "layer_norm"
    x = np.asarray(x)
    if x.dtype not in (np.float16, np.float32) or x.ndim == 0:
        raise InvalidArgument(f"{op}: x must be a float16 or float32 array of at least one dimension, got "
                              f"{x.dtype} {x.shape}")
    D = x.shape[-1]
    x2 = x.reshape(int(np.prod(x.shape[:-1], dtype=np.int64)), D)    # (-1 cannot be inferred when D is 0)
    if x.dtype == np.float32:
        out, result = norm.layer_norm(card, x2, gamma, beta, eps, pes=pes, trace=trace)
        return out.reshape(x.shape), result
    for name, p in (("gamma", gamma), ("beta", beta)):
        if p is not None and (np.asarray(p).dtype != np.float16 or np.asarray(p).shape != (D,)):
            raise InvalidArgument(f"{op}: {name} must be float16 of shape ({D},) with float16 x, got "
                                  f"{np.asarray(p).dtype} {np.asarray(p).shape}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)) or \
            not (np.isfinite(np.float32(eps)) and np.float32(eps) >= 0):
        raise InvalidArgument(f"{op}: eps must be a finite non-negative number, got {eps!r}")
    R = x2.shape[0]
    if R == 0 or D == 0:
        return np.zeros(x.shape, x.dtype), runner.nothing(card, op, pes)
    local = int(card.config.local_memory.bytes) - RESERVE
    blk = int(min(64, max(0, (local - 16 * D) // (D * 24)), R))
    if blk < 1:
        raise InvalidArgument(f"{op}: rows of {D} elements do not fit local memory of {card.config.name}")
    k_ = _kernel(_layer_norm16, "layer_norm_fp16")
    g16 = None if gamma is None else np.ascontiguousarray(gamma, np.float16)
    b16 = None if beta is None else np.ascontiguousarray(beta, np.float16)
    example = [np.empty((0, D), np.float16), None if g16 is None else np.empty(D, np.float16),
               None if b16 is None else np.empty(D, np.float16), np.empty((0, D), np.float16), 0, 0.0, 0.0]
    args = [np.ascontiguousarray(x2), g16, b16, runner.Out((R, D), np.float16), R,
            float(np.float32(1.0 / D)), float(np.float32(eps))]
    key = ("layer_norm16", D, blk, g16 is None, b16 is None, runner.card_key(card))
    (out,), result = runner.run_kernel(card, key, k_, example, args, [blk], "layer_norm_fp16", pes, trace)
    return out.reshape(x.shape), result


def reference_layer_norm16(x, gamma=None, beta=None, eps=1e-5):
    x = np.asarray(x)
    D = x.shape[-1]
    g = None if gamma is None else np.asarray(gamma, np.float32)
    b = None if beta is None else np.asarray(beta, np.float32)
    y = reference_layer_norm(x.astype(np.float32).reshape(-1, D), g, b, eps)
    return y.astype(x.dtype).reshape(x.shape)


def _embedding(weight, indices, offsets, out32, out16, n, g: lang.constexpr):
    """out32[i] = weight[indices[i]] on the card's embedding unit (bags of one), issued by PE 0 (one unit per
    card); an fp16 table's rows come back in fp32 and every PE converts its share to fp16 after a barrier."""
    out32 = out32.reshape(out32.shape[0] // weight.shape[1], weight.shape[1])
    if lang.pe_id() == 0:
        lang.embedding_bag(weight, indices, offsets, out32)
    if out16 is not None:
        lang.barrier()
        lo, hi = lang.split(n)
        for r in range(lo, hi, g, pipeline=True):
            end = lang.minimum(r + g, hi)
            lang.store(out16[r:end, :], lang.load(out32[r:end, :]).astype("f16"))


def embedding(card, input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
              sparse=False, pes=None, trace=False):
    """torch.nn.functional.embedding(input, weight): weight[input] for integer indices of any shape, weight a
    float32 or float16 [rows, dim] table. padding_idx, scale_grad_by_freq and sparse only matter to the gradient
    (accepted, ignored); max_norm (which renormalizes weight in place) is not supported."""
    op = "embedding"
    idx = np.asarray(input)
    w = np.asarray(weight)
    if idx.dtype not in (np.int32, np.int64):
        raise InvalidArgument(f"{op}: input must be int32 or int64 indices, got {idx.dtype}")
    if w.ndim != 2 or w.dtype not in (np.float32, np.float16):
        raise InvalidArgument(f"{op}: weight must be a float32 or float16 [rows, dim] table, got {w.dtype} {w.shape}")
    if max_norm is not None:
        raise InvalidArgument(f"{op}: max_norm is not supported (it renormalizes weight in place)")
    rows, dim = w.shape
    if padding_idx is not None and not (isinstance(padding_idx, (int, np.integer)) and -rows <= padding_idx < rows):
        raise InvalidArgument(f"{op}: padding_idx must be an index of weight's {rows} rows, got {padding_idx!r}")
    flat = idx.reshape(-1)
    bad = np.flatnonzero((flat < 0) | (flat >= rows))
    if bad.size:
        raise InvalidArgument(f"{op}: index {int(flat[bad[0]])} at position {np.unravel_index(bad[0], idx.shape)} "
                              f"is out of range for a table of {rows} rows")
    n = flat.size
    shape = idx.shape + (dim,)
    if n == 0 or dim == 0:
        return np.zeros(shape, w.dtype), runner.nothing(card, op, pes)
    f16 = w.dtype == np.float16
    offsets = np.arange(n, dtype=flat.dtype)
    blk = int(max(1, min(n, 8192 // max(1, dim))))
    k_ = _kernel(_embedding, op)
    example = [np.empty(w.shape, w.dtype), np.empty(n, flat.dtype), np.empty(n, flat.dtype),
               np.empty(n * dim, np.float32), np.empty((n, dim), np.float16) if f16 else None, 0]
    args = [np.ascontiguousarray(w), np.ascontiguousarray(flat), offsets,
            runner.Scratch(n * dim * 4) if f16 else runner.Out((n * dim,), np.float32),
            runner.Out((n, dim), np.float16) if f16 else None, n]
    key = (op, w.shape, str(w.dtype), n, str(flat.dtype), blk, runner.card_key(card))
    (out,), result = runner.run_kernel(card, key, k_, example, args, [blk], op, pes, trace)
    return out.reshape(shape), result


def reference_embedding(input, weight):
    """The unit's result: each row added to 0.0 (so -0.0 comes back as +0.0), in fp32, then the table's type."""
    w = np.asarray(weight)
    rows = (np.float32(0) + w[np.asarray(input).reshape(-1)].astype(np.float32)).astype(w.dtype)
    return rows.reshape(np.asarray(input).shape + (w.shape[1],))


# =============================================================================================================
# the op registry
# =============================================================================================================
def _np_dtype(p):
    return {"fp16": np.float16, "fp32": np.float32, "int8": np.int8}[p["dtype"]]


def _dims(text):
    try:
        dims = tuple(int(v) for v in str(text).lower().split("x")) if str(text) else ()
    except ValueError:
        raise InvalidArgument(f"a shape is sizes joined by x (like 8x12x128x128), got {text!r}") from None
    if any(d < 0 for d in dims) or int(np.prod(dims, dtype=np.int64)) > (1 << 26):
        raise InvalidArgument(f"shape {text!r}: sizes must be >= 0 and at most 2**26 elements")
    return dims


def _sdpa_inputs(rng, p):
    dt = _np_dtype(p)
    shape = (p["b"], p["h"], p["s"], p["d"])
    d = {n: rng.standard_normal(shape).astype(dt) for n in ("q", "k", "v")}
    if p["mask"] == "padding":            # BERT's attention mask: the last keys of each sequence padded
        keep = np.arange(p["s"])[None, :] < rng.integers(1, p["s"] + 1, p["b"])[:, None]
        d["mask"] = keep[:, None, None, :]
    elif p["mask"] == "full":
        d["mask"] = (rng.standard_normal((p["b"], p["h"], p["s"], p["s"])) * 2).astype(dt)
    return d


def _sdpa_run(card, x, p, pes):
    out, r = scaled_dot_product_attention(card, x["q"], x["k"], x["v"], attn_mask=x.get("mask"),
                                          is_causal=p["mask"] == "causal", pes=pes)
    return [out], r


def _bmm_inputs(rng, p):
    dt = _np_dtype(p)
    ta, tb = p["transpose_a"] == "true", p["transpose_b"] == "true"
    sa = (p["batch"], p["k"], p["m"]) if ta else (p["batch"], p["m"], p["k"])
    sb = (p["batch"], p["n"], p["k"]) if tb else (p["batch"], p["k"], p["n"])
    if dt == np.int8:
        return {"a": rng.integers(-128, 128, sa).astype(dt), "b": rng.integers(-128, 128, sb).astype(dt)}
    return {"a": rng.standard_normal(sa).astype(dt), "b": rng.standard_normal(sb).astype(dt)}


def _softmax_inputs(rng, p):
    dt = _np_dtype(p)
    d = {"x": (rng.standard_normal(_dims(p["x"])) * 3).astype(dt)}
    if p["mask"]:
        d["mask"] = np.where(rng.random(_dims(p["mask"])) < 0.2, -np.inf, 0).astype(dt)
    return d


def _ln_inputs(rng, p):
    d = {"x": (rng.standard_normal((p["rows"], p["d"])) * 2 + 0.5).astype(np.float16)}
    if p["affine"]:
        d["gamma"] = rng.standard_normal(p["d"]).astype(np.float16)
        d["beta"] = rng.standard_normal(p["d"]).astype(np.float16)
    return d


def _emb_inputs(rng, p):
    rows = int(p["rows"])
    return {"weight": rng.standard_normal((rows, p["dim"])).astype(_np_dtype(p)),
            "input": rng.integers(0, rows, _dims(p["indices"])).astype(np.int64)}


def _wrap(f):
    return lambda card, x, p, pes: (lambda o, r: ([o], r))(*f(card, x, p, pes))


def _fp_tol(p):
    return (1e-6, 1e-7) if p["dtype"] == "fp32" else (1e-3, 1e-4)


OPS = [
    OpSpec("scaled_dot_product_attention", dict(b=8, h=12, s=128, d=64, dtype="fp16", mask="none"), _sdpa_inputs,
           _sdpa_run,
           lambda x, p: [reference_sdpa(x["q"], x["k"], x["v"], x.get("mask"), p["mask"] == "causal")], _fp_tol,
           lambda p: 4 * p["b"] * p["h"] * p["s"] * p["s"] * p["d"],
           "torch.nn.functional.scaled_dot_product_attention on [b, h, s, d] (self-attention: s keys), fused: Q K^T "
           "and E V on the matrix unit, scale, mask and softmax on the vector unit; mask none, causal "
           "(is_causal), padding (a bool key mask [b, 1, 1, s]) or full (an additive [b, h, s, s] mask)",
           {"dtype": ("fp16", "fp32"), "mask": ("none", "causal", "padding", "full")}),
    OpSpec("bmm", dict(batch=8, m=128, k=64, n=128, dtype="fp16", transpose_a="false", transpose_b="false"),
           _bmm_inputs,
           _wrap(lambda card, x, p, pes: bmm(card, x["a"], x["b"], p["transpose_a"] == "true",
                                             p["transpose_b"] == "true", pes=pes)),
           lambda x, p: [reference_bmm(x["a"], x["b"], p["transpose_a"] == "true", p["transpose_b"] == "true")],
           lambda p: (0.0, 0.0) if p["dtype"] == "int8" else _fp_tol(p),
           lambda p: 2 * p["batch"] * p["m"] * p["k"] * p["n"],
           "batched matmul a @ b, a [batch, m, k] (transpose_a: given as [batch, k, m]), b [batch, k, n] "
           "(transpose_b: given as [batch, n, k], torch's a @ b.transpose(-1, -2)); fp16 -> fp16, fp32, int8 -> int32",
           {"dtype": ("fp16", "fp32", "int8"), "transpose_a": ("false", "true"), "transpose_b": ("false", "true")}),
    OpSpec("masked_softmax", dict(x="8x12x128x128", mask="8x1x1x128", dtype="fp16"), _softmax_inputs,
           _wrap(lambda card, x, p, pes: masked_softmax(card, x["x"], x.get("mask"), pes=pes)),
           lambda x, p: [reference_masked_softmax(x["x"], x.get("mask"))], _fp_tol,
           lambda p: 5 * int(np.prod(_dims(p["x"]))),
           "torch.softmax(x + mask, -1): x of shape --x, an additive mask (0 / -inf) of shape --mask broadcast to it "
           "(--mask '' for none)", {"dtype": ("fp16", "fp32")}),
    OpSpec("gelu_tanh", dict(n=65536, dtype="fp32"),
           lambda rng, p: {"x": (rng.standard_normal(p["n"]) * 3).astype(_np_dtype(p))},
           _wrap(lambda card, x, p, pes: gelu(card, x["x"], "tanh", pes=pes)),
           lambda x, p: [reference_gelu_tanh(x["x"])], lambda p: (2e-7, 1e-30) if p["dtype"] == "fp32" else
           (1e-3, 1e-7), lambda p: 8 * p["n"],
           "torch.nn.functional.gelu(x, approximate='tanh') on the vector unit (fp32, fp16 computed in fp32)",
           {"dtype": ("fp16", "fp32")}),
    OpSpec("layer_norm_fp16", dict(rows=1024, d=768, eps=1e-5, affine=1), _ln_inputs,
           _wrap(lambda card, x, p, pes: layer_norm(card, x["x"], x.get("gamma"), x.get("beta"), p["eps"], pes=pes)),
           lambda x, p: [reference_layer_norm16(x["x"], x.get("gamma"), x.get("beta"), p["eps"])],
           lambda p: (0.0, 0.0), lambda p: 8 * p["rows"] * p["d"],
           "layer normalization over the last axis of fp16 [rows, d] (fp32 steps, rounded once; affine=1: fp16 gamma "
           "and beta)", {"affine": (0, 1)}),
    OpSpec("embedding", dict(rows="30522", dim=768, indices="8x128", dtype="fp16"), _emb_inputs,
           _wrap(lambda card, x, p, pes: embedding(card, x["input"], x["weight"], pes=pes)),
           lambda x, p: [reference_embedding(x["input"], x["weight"])], lambda p: (0.0, 0.0),
           lambda p: 0,
           "torch.nn.functional.embedding(input, weight): token / position rows gathered by the embedding unit "
           "(bags of one); --rows table rows, --indices their shape", {"dtype": ("fp16", "fp32")}),
]
