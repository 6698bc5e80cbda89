"""Pooling and inference batch norm, NCHW, fp32 and fp16, in the kernel language.

max_pool2d / avg_pool2d (`_pool2d`): every (n, c) plane is a matrix of H rows; PE p takes a share of the
planes, and a plane is processed in bands of output rows (one band when it fits local memory). Strided and
padded windows need gathers the vector unit cannot do (its operands are contiguous), so a band goes through
this PE's slot of a scratch buffer in the card's shared SRAM, where DMA has no per-row cost:
  1. the band's input rows are DMAed in (DRAM -> local, contiguous rows) and stored into the slot at their
     place in a padded layout of Wp = sw * Wq columns; the padding cells hold the fill value (-inf for max,
     0 for avg), written once when the kernel starts (and again only for rows another band dirtied);
  2. for each column phase b < sw one DMA gathers slot[b::sw] (rows of one element) into a local tile
     G_b[row, j] = xpad[row, b + sw * j]: Wq columns per padded row;
  3. the window is separable: M = op over kw of G_{kw*dw % sw} shifted by (kw*dw) // sw (one vector op over
     the whole band per tap; the columns past OW are garbage and never stored), then op over kh of M shifted
     by kh*dh rows: flat over the band when sh == 1 and Wq == OW, else the first KH-1 taps flat (computing
     the rows between strided output rows too) and the last one per output row into the compact result;
  4. avg multiplies by 1/divisor per output position (a host-made map: PyTorch's divisor with padding,
     ceil_mode, count_include_pad and divisor_override); the band is stored with one DMA.
Numerics: max is exact (NaN propagates; among equal values, -0.0 and 0.0 included, the first of the window
in (kh, kw) order wins, as PyTorch's loop). avg: fp32 sums in kw then kh order (fp16 inputs converted to fp32
first), times fp32(1 / divisor), one rounding to fp16 for fp16: within 2 fp32 ulps of PyTorch's sum / divisor
plus the difference of summation order (PyTorch's order is the same for windows inside the input).

adaptive_avg_pool2d(x, 1) (`_global_avg`): a block of planes per PE step, one vsum per plane (fp64 in index
order, rounded once to fp32), times fp32(1 / (H W)); fp16 rounds the fp32 mean. Other output sizes that divide
H and W are avg_pool2d with kernel = stride = H / oh.

batch_norm (inference, `_batch_norm`): per channel, on the card: invstd = rsqrt(var + eps) (fp64, rounded
once), alpha = weight * invstd, beta = bias - mean * alpha (PyTorch's CPU formula), then y = x * alpha + beta
per plane row block (a column of alphas broadcast along each row), fp16 computed in fp32 and rounded once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vnpu.errors import InvalidArgument

from . import lang, runner
from .library import OpSpec

ALIGN = 64
RESERVE = 8192              # local bytes left to the compiler's constants
KF_MAX = 64                 # rows of the fill tile
EB = {"f32": 4, "f16": 2}
NP = {"f32": np.float32, "f16": np.float16}
DT = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16"}


def _align(n):
    return (int(n) + ALIGN - 1) // ALIGN * ALIGN


# --- geometry --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Geom:
    kind: str          # "max" | "avg"
    dt: str            # element type of x and out
    H: int
    W: int
    KH: int
    KW: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int
    OH: int
    OW: int
    R: int             # output rows per band
    npes: int          # slots in the scratch (the card's PEs)
    G: int = 1         # planes per work item (small planes, one band): stacked in the slot, one DMA each way

    @property
    def cdt(self):     # the compute type: avg sums fp16 in fp32
        return "f32" if self.kind == "avg" else self.dt

    @property
    def Wq(self):      # columns per padded row and column phase
        return -(-((self.OW - 1) * self.sw + (self.KW - 1) * self.dw + 1) // self.sw)

    @property
    def Wp(self):
        return self.sw * self.Wq

    @property
    def Wc(self):      # input columns any window reads
        return max(0, min(self.W, self.Wp - self.pw))

    def band_rows(self, rows):
        """Padded input rows a band of `rows` output rows reads."""
        return (rows - 1) * self.sh + (self.KH - 1) * self.dh + 1

    @property
    def Bs(self):      # rows of a slot: the largest band and one row the shifted flat ops run into
        return self.band_rows(self.R) + 1

    @property
    def slot_rows(self):   # G padded planes of Bs rows
        return self.G * self.Bs

    @property
    def KF(self):
        return min(self.slot_rows, KF_MAX)

    def bands(self):
        """(oh0, rows, Bh, r0, ih0, ih1, refills) per band: output rows [oh0, oh0 + rows), padded rows from
        r0 + ph (slot row 0 is input row r0), input rows [ih0, ih1), and the (slot row, count) runs that need
        the fill value again because another band writes input there."""
        out = []
        for oh0 in range(0, self.OH, self.R):
            rows = min(self.R, self.OH - oh0)
            Bh = self.band_rows(rows)
            r0 = oh0 * self.sh - self.ph
            ih0, ih1 = max(0, r0), min(self.H, r0 + Bh)
            out.append([oh0, rows, Bh, r0, ih0, max(ih0, ih1)])
        written = [set(range(b[4] - b[3], b[5] - b[3])) for b in out]
        res = []
        for j, (oh0, rows, Bh, r0, ih0, ih1) in enumerate(out):
            need = set(range(0, Bh)) - written[j]
            dirty = set().union(*(written[k] for k in range(len(out)) if k != j)) if len(out) > 1 else set()
            runs, cur = [], None
            for r in sorted(need & dirty):
                if cur and cur[0] + cur[1] == r and cur[1] < self.KF:
                    cur[1] += 1
                else:
                    cur = [r, 1]
                    runs.append(cur)
            res.append((oh0, rows, Bh, r0, ih0, ih1, tuple(tuple(c) for c in runs)))
        return res

    @property
    def pipelined(self):
        """Double-buffer the plane loop unless some band refills padding rows: a pipelined loop defers the
        store of a tile it did not load (the fill) past the gather that reads it back (a language limit)."""
        return not any(b[6] for b in self.bands()) and self.G * self.OH * self.KH <= 4096

    def local_bytes(self, R=None, G=None):
        """Local memory an item (a band of R output rows, or G planes) needs, two in flight, plus what stays
        loaded."""
        g = self.replace(R=R or self.R, G=G or self.G)
        ec, ei = EB[g.cdt], EB[g.dt]
        Bh = g.band_rows(g.R)
        rows = g.G * g.Bs                      # slot rows gathered
        band = _align(g.G * (g.H if g.G > 1 else Bh) * g.Wc * ei)
        band += g.sw * (_align(rows * g.Wq * ei) + (_align(rows * g.Wq * ec) if ec != ei else 0))
        band += 2 * _align(rows * g.Wq * ec)   # M and A
        band += _align(g.G * g.R * g.OW * ec) + _align(g.G * g.R * g.OW * ei)
        fixed = _align(g.Wp * ei) + _align(g.KF * g.Wp * ei)
        if g.kind == "avg":
            fixed += _align(g.G * g.OH * g.OW * 4)
        return 2 * band + fixed

    def sram_bytes(self, R=None, G=None):
        g = self.replace(R=R or self.R, G=G or self.G)
        return g.npes * g.slot_rows * g.Wp * EB[g.dt]

    def replace(self, **kw):
        return Geom(**{**self.__dict__, **kw})

    def key(self):
        return tuple(self.__dict__.values())


# --- the kernels ----------------------------------------------------------------------------------------------
def _pool2d(x: lang.anysize, s, fill, fmap, out: lang.anysize, planes, g: lang.constexpr):
    """x: [planes * H, W]; out: [planes * OH, OW]; s: the scratch in shared SRAM (a slot of Bs x Wp per PE);
    fill: Wp fill values; fmap: [OH * OW] fp32 1 / divisor (avg)."""
    op = lang.maximum if g.kind == "max" else lang.add
    Wq, Wp, sw, cdt = g.Wq, g.Wp, g.sw, g.cdt
    pe = lang.pe_id()
    rows_of = s.reshape(s.shape[0] // Wp, Wp)
    phases = s.reshape(s.shape[0] // sw, sw)
    srow = pe * g.slot_rows
    ftile = lang.repeat(lang.load(fill), g.KF)                 # KF rows of the fill value
    for r in lang.static_range(0, g.slot_rows, g.KF):         # the slot's padding: once
        n = min(g.KF, g.slot_rows - r)
        lang.store(rows_of[srow + r:srow + r + n, :], ftile[0:n])
    fm = lang.load(fmap) if g.kind == "avg" else None
    lo, hi = lang.split(planes)
    if g.G > 1:
        _pool_groups(x, s, out, g, op, fm, pe, srow, rows_of, phases, lo, hi)
        return
    for p in range(lo, hi, pipeline=g.pipelined):
        for oh0, rows, Bh, r0, ih0, ih1, refills in g.bands():
            for a, n in refills:
                lang.store(rows_of[srow + a:srow + a + n, :], ftile[0:n])
            if ih1 > ih0:                                      # the band's input rows, padded, into the slot
                xin = p * g.H
                if g.Wc == g.W:
                    xt = lang.load(x[xin + ih0:xin + ih1, :])
                else:
                    xt = lang.load(x[xin + ih0:xin + ih1, 0:g.Wc])
                lang.store(rows_of[srow + ih0 - r0:srow + ih1 - r0, g.pw:g.pw + g.Wc], xt)
            # column phases: G[b][row * Wq + j] = xpad[row, b + sw * j]
            Lg = (Bh + 1) * Wq
            G = _phases(s, phases, pe, g.Bs, g, sw, Wp, Wq, Lg, cdt)
            # along W: M[row * Wq + ow] = op over kw of xpad[row, ow * sw + kw * dw]
            LM = Bh * Wq
            M = _along_w(G, g, sw, LM, cdt, op)
            # along H: out[oh, ow] = op over kh of M[(oh * sh + kh * dh) * Wq + ow]
            offs = [kh * g.dh * Wq for kh in range(g.KH)]
            LA = ((rows - 1) * g.sh + 1) * Wq
            n_out = rows * g.OW
            C = lang.empty((g.R * g.OW,), cdt)
            if g.sh == 1 and Wq == g.OW:                           # rows already compact
                if g.KH == 1:
                    lang.copy(M[0:LA], out=C[0:n_out])
                else:
                    op(M[0:LA], M[offs[1]:offs[1] + LA], out=C[0:n_out])
                    for o in offs[2:]:
                        op(C[0:n_out], M[o:o + LA], out=C[0:n_out])
            else:
                A = _first_taps_h(M, offs, LA, cdt, op)
                step = g.sh * Wq
                for r in lang.static_range(rows):
                    dst = C[r * g.OW:(r + 1) * g.OW]
                    if g.KH == 1:
                        lang.copy(M[r * step:r * step + g.OW], out=dst)
                    else:
                        last = offs[-1] + r * step
                        op(A[r * step:r * step + g.OW], M[last:last + g.OW], out=dst)
            res = C[0:n_out]
            if g.kind == "avg":
                lang.mul(res, fm[oh0 * g.OW:oh0 * g.OW + n_out], out=res)
            if cdt != g.dt:
                res = res.astype(g.dt)
            lang.store(out[p * g.OH + oh0:p * g.OH + oh0 + rows, :], res.reshape(rows, g.OW))


def _pool_groups(x, s, out, g, op, fm, pe, srow, rows_of, phases, lo, hi):
    """_pool2d's loop for small planes: G planes per item, stacked in the slot (plane j at slot row j * Bs);
    one load of their rows, one store per plane into the slot, one gather per column phase, one store out."""
    Wq, Wp, sw, cdt, G, H, OH, OW = g.Wq, g.Wp, g.sw, g.cdt, g.G, g.H, g.OH, g.OW
    oh0, rows, Bh, r0, ih0, ih1, _ = g.bands()[0]
    for p in lang.range(lo, hi, G, pipeline=g.pipelined):
        pend = lang.minimum(p + G, hi)
        if g.Wc == g.W:
            xt = lang.load(x[p * H:lang.minimum(p * H + G * H, pend * H), :])
        else:
            xt = lang.load(x[p * H:lang.minimum(p * H + G * H, pend * H), 0:g.Wc])
        ng = xt.shape[0] // H                  # G (the interpreter: the planes this item really has)
        for j in lang.static_range(ng):
            top = srow + j * g.Bs + ih0 - r0
            lang.store(rows_of[top:top + ih1 - ih0, g.pw:g.pw + g.Wc], xt[j * H + ih0:j * H + ih1])
        Lg = ng * g.Bs * Wq
        G_ = _phases(s, phases, pe, g.slot_rows, g, sw, Wp, Wq, Lg, cdt)
        LM = ((ng - 1) * g.Bs + Bh) * Wq
        M = _along_w(G_, g, sw, LM, cdt, op)
        offs = [kh * g.dh * Wq for kh in range(g.KH)]
        LA = ((ng - 1) * g.Bs + (OH - 1) * g.sh + 1) * Wq
        A = _first_taps_h(M, offs, LA, cdt, op)
        C = lang.empty((ng * OH * OW,), cdt)
        for j in lang.static_range(ng):
            for r in lang.static_range(OH):
                src = (j * g.Bs + r * g.sh) * Wq
                dst = C[(j * OH + r) * OW:(j * OH + r + 1) * OW]
                if g.KH == 1:
                    lang.copy(M[src:src + OW], out=dst)
                else:
                    op(A[src:src + OW], M[src + offs[-1]:src + offs[-1] + OW], out=dst)
        res = C
        if g.kind == "avg":
            lang.mul(res, fm[0:ng * OH * OW], out=res)
        if cdt != g.dt:
            res = res.astype(g.dt)
        lang.store(out[p * OH:lang.minimum(p * OH + G * OH, pend * OH), :], res.reshape(ng * OH, OW))


def _global_avg(x: lang.anysize, out: lang.anysize, planes, inv, B: lang.constexpr, T: lang.constexpr):
    """out[p] = sum(x[p, :]) * inv: B planes (rows) per step, one vsum per row and column chunk of T (chunk
    sums added in fp32 in order)."""
    HW = x.shape[1]
    lo, hi = lang.split(planes)
    for p in range(lo, hi, B, pipeline=True):
        end = lang.minimum(p + B, hi)
        m = lang.sum(lang.load(x[p:end, 0:min(T, HW)]), axis=1)
        for c in lang.static_range(T, HW, T):
            lang.add(m, lang.sum(lang.load(x[p:end, c:min(c + T, HW)]), axis=1), out=m)
        lang.mul(m, inv, out=m)
        lang.store(out[p:end, :], m if x.dtype == "f32" else m.astype(x.dtype))


def _batch_norm(x: lang.anysize, mean, var, weight, bias, out: lang.anysize, items, eps,
                C: lang.constexpr, R: lang.constexpr, T: lang.constexpr, HW: lang.constexpr,
                has_w: lang.constexpr, has_b: lang.constexpr):
    """x: [N * C, HW]. Per channel alpha = weight * rsqrt(var + eps), beta = bias - mean * alpha; then work
    items (n, block of R channels), each in column chunks of T: y = x * alpha + beta."""
    alpha = lang.rsqrt(lang.load(var) + eps)
    if has_w:
        alpha = alpha * lang.load(weight)
    beta = lang.load(mean) * alpha
    if has_b:
        beta = lang.load(bias) - beta
    else:
        beta = -beta
    nb = -(-C // R)
    lo, hi = lang.split(items)
    for i in range(lo, hi, pipeline=True):
        n = i // nb
        c0 = (i - n * nb) * R
        row = n * C + c0
        end = lang.minimum(row + R, n * C + C)
        a = alpha[c0:c0 + R].reshape(R, 1)
        b = beta[c0:c0 + R].reshape(R, 1)
        for col in lang.static_range(0, HW, T):
            w = min(T, HW - col)
            t = lang.load(x[row:end, col:col + w])
            f = t if x.dtype == "f32" else t.astype("f32")
            y = lang.add(lang.mul(f, a), b)
            lang.store(out[row:end, col:col + w], y if x.dtype == "f32" else y.astype(x.dtype))


_kernel = lang.library_kernel


def _phases(s, phases, pe, slot_rows, g, sw, Wp, Wq, Lg, cdt):
    """The column phases of this PE's slot: G[b][row * Wq + j] = xpad[row, b + sw * j], Lg elements each, in the
    compute dtype. Loaded into= tiles: a gather of what this iteration stored must not be hoisted (see the
    module doc)."""
    G = []
    for b in lang.static_range(sw):
        gt = lang.empty((Lg,), g.dt)
        if sw == 1:
            view = s[pe * (slot_rows * Wp):pe * (slot_rows * Wp) + Lg]
        else:
            view = phases[pe * (slot_rows * Wq):pe * (slot_rows * Wq) + Lg, b]
        lang.load(view, into=gt if len(view.shape) == 1 else gt.reshape(Lg, 1))
        G.append(gt if cdt == g.dt else gt.astype(cdt))
    return G


def _first_taps_h(M, offs, LA, cdt, op):
    """The H pass's taps but the last, combined: op over kh < KH - 1 of M shifted by offs[kh] (M itself when
    KH < 3; the caller combines the last tap per output row)."""
    if len(offs) < 3:
        return M
    A = lang.empty((LA,), cdt)
    op(M[0:LA], M[offs[1]:offs[1] + LA], out=A)
    for o in offs[2:-1]:
        op(A, M[o:o + LA], out=A)
    return A


def _along_w(G, g, sw, LM, cdt, op):
    """M[row * Wq + ow] = op over kw of xpad[row, ow * sw + kw * dw]: tap kw reads phase (kw * dw) % sw of the
    gathered rows G, shifted by (kw * dw) // sw (one vector op per tap after the first)."""
    taps = [((kw * g.dw) % sw, (kw * g.dw) // sw) for kw in range(g.KW)]
    if g.KW == 1:
        return G[taps[0][0]][taps[0][1]:taps[0][1] + LM]
    M = lang.empty((LM,), cdt)
    (b0, c0), (b1, c1) = taps[0], taps[1]
    op(G[b0][c0:c0 + LM], G[b1][c1:c1 + LM], out=M)
    for b, c in taps[2:]:
        op(M, G[b][c:c + LM], out=M)
    return M


launch = runner.run_kernel


_card_key = runner.card_key


# --- argument checks -------------------------------------------------------------------------------------
def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _pair(op, name, v, minimum):
    if _is_int(v):
        v = (int(v), int(v))
    elif isinstance(v, (tuple, list)) and len(v) == 1 and _is_int(v[0]):
        v = (int(v[0]), int(v[0]))
    elif isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_int(e) for e in v):
        v = (int(v[0]), int(v[1]))
    else:
        raise InvalidArgument(f"{op}: {name} must be an int or a pair of ints, got {v!r}")
    if min(v) < minimum:
        raise InvalidArgument(f"{op}: {name} must be at least {minimum}, got {v!r}")
    return v


def _check_bool(op, name, v):
    if not isinstance(v, (bool, np.bool_)):
        raise InvalidArgument(f"{op}: {name} must be True or False, got {v!r}")
    return bool(v)


def _float_input(op, x, ranks=(3, 4)):
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as e:
            raise InvalidArgument(f"{op}: x is not an array: {e}") from None
    if x.dtype not in DT:
        raise InvalidArgument(f"{op}: x must be float32 or float16, got dtype {x.dtype}")
    if x.ndim not in ranks:
        raise InvalidArgument(f"{op}: x must be {' or '.join(f'{r}-D' for r in ranks)} "
                              f"({'[N, C, H, W] or [C, H, W]' if 3 in ranks else '[N, C, ...]'}), got shape {x.shape}")
    return x


def pool_output_size(size, k, s, p, d, ceil_mode):
    """PyTorch's pooling_output_shape."""
    num = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    o = num // s + 1
    if ceil_mode and (o - 1) * s >= size + p:
        o -= 1
    return o


def _pool_args(op, x, kernel_size, stride, padding, dilation, ceil_mode):
    x = _float_input(op, x)
    kh, kw = _pair(op, "kernel_size", kernel_size, 1)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        sh, sw = kh, kw
    else:
        sh, sw = _pair(op, "stride", stride, 1)
    ph, pw = _pair(op, "padding", padding, 0)
    dh, dw = _pair(op, "dilation", dilation, 1)
    ceil_mode = _check_bool(op, "ceil_mode", ceil_mode)
    if ph > kh // 2 or pw > kw // 2:
        raise InvalidArgument(f"{op}: padding must be at most half of kernel_size, got padding=({ph}, {pw}) "
                              f"and kernel_size=({kh}, {kw})")
    if 0 in x.shape[-3:]:
        raise InvalidArgument(f"{op}: x may be empty only in its batch dimension (as PyTorch), got shape {x.shape}")
    H, W = x.shape[-2:]
    OH = pool_output_size(H, kh, sh, ph, dh, ceil_mode)
    OW = pool_output_size(W, kw, sw, pw, dw, ceil_mode)
    if OH < 1 or OW < 1:
        raise InvalidArgument(f"{op}: the output would be {OH} x {OW} for input {H} x {W} (kernel_size=({kh}, "
                              f"{kw}), stride=({sh}, {sw}), padding=({ph}, {pw}), dilation=({dh}, {dw})): too small")
    return x, (kh, kw, sh, sw, ph, pw, dh, dw, OH, OW)


GROUP_BYTES = 32768        # input bytes of a group of small planes (one DMA in, one out)
GROUP_MAX = 64
GROUP_PLANE_BYTES = 512    # planes up to this size are grouped: 7x7 fp32 pools 2.5-3.5x faster on the reference
                           # card; from 14x14 on single planes are as fast or faster (measured, docs/kernels.md)


def _plan(card, kind, dt, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW, planes=1):
    local = int(card.config.local_memory.bytes) - RESERVE
    sram = int(card.config.shared_sram.bytes) // 2
    base = Geom(kind, dt, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW, OH, card.config.pes)
    for nb in range(1, OH + 1):
        R = -(-OH // nb)
        if base.local_bytes(R) <= local and base.sram_bytes(R) <= sram:
            g = base.replace(R=R)
            if nb == 1 and planes > card.config.pes and H * W * EB[dt] <= GROUP_PLANE_BYTES:   # tiny planes
                G = int(max(1, min(GROUP_BYTES // max(1, H * W * EB[dt]), GROUP_MAX, 4096 // (OH * kh),
                                   -(-planes // (2 * card.config.pes)))))
                while G > 1 and not (g.local_bytes(G=G) <= local and g.sram_bytes(G=G) <= sram):
                    G //= 2
                g = g.replace(G=G)
            return g
        if R == 1:
            break
    raise InvalidArgument(f"{kind}_pool2d: rows of {W} elements (a window row of {base.Wp} padded columns) do "
                          f"not fit the local memory / shared SRAM of {card.config.data['name']}")


def _launch_pool(card, op, kind, x, geo, fmap, pes, trace):
    kh, kw, sh, sw, ph, pw, dh, dw, OH, OW = geo
    batched = x.ndim == 4
    x4 = x if batched else x[None]
    N, C, H, W = x4.shape
    P = N * C
    dt = DT[x.dtype]
    shape = (N, C, OH, OW) if batched else (C, OH, OW)
    if P == 0:
        return np.zeros(shape, x.dtype), runner.nothing(card, op, pes)
    g = _plan(card, kind, dt, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW, P)
    cnp = NP[g.dt]
    fill = np.full(g.Wp, -np.inf if kind == "max" else 0.0, cnp)
    fm = np.tile(np.ascontiguousarray(fmap, np.float32).reshape(-1), g.G) if kind == "avg" else \
        np.zeros(1, np.float32)
    k = _kernel(_pool2d, op)
    key = ("pool2d", op, g.key(), _card_key(card))
    scratch_elems = g.npes * g.slot_rows * g.Wp
    example = [np.empty((0, W), x.dtype), np.empty(scratch_elems, cnp), fill, fm, np.empty((0, OW), x.dtype), 0]
    args = [np.ascontiguousarray(x4).reshape(P * H, W), runner.Scratch(scratch_elems * EB[g.dt], "shared"),
            fill, fm, runner.Out((P * OH, OW), x.dtype), P]
    (out,), result = launch(card, key, k, example, args, [g], op, pes, trace)
    return out.reshape(shape), result


def avg_divisors(H, W, kh, kw, sh, sw, ph, pw, OH, OW, count_include_pad=True, divisor_override=None):
    """PyTorch's avg_pool2d divisor per output position [OH, OW] (float64)."""
    def sizes(n, k, s, p, o):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, n + p)
        full = end - start
        valid = np.minimum(end, n) - np.maximum(start, 0)
        return full, valid
    fh, vh = sizes(H, kh, sh, ph, OH)
    fw, vw = sizes(W, kw, sw, pw, OW)
    if divisor_override is not None:
        return np.full((OH, OW), float(divisor_override))
    if count_include_pad:
        return np.outer(fh, fw).astype(np.float64)
    return np.outer(vh, vw).astype(np.float64)


def max_pool2d(card, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, pes=None, trace=False):
    """torch.nn.functional.max_pool2d on [N, C, H, W] or [C, H, W] fp32/fp16. Returns (array, LaunchResult)."""
    x, geo = _pool_args("max_pool2d", x, kernel_size, stride, padding, dilation, ceil_mode)
    return _launch_pool(card, "max_pool2d", "max", x, geo, None, pes, trace)


def avg_pool2d(card, x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, pes=None, trace=False):
    """torch.nn.functional.avg_pool2d on [N, C, H, W] or [C, H, W] fp32/fp16. Returns (array, LaunchResult)."""
    x, geo = _pool_args("avg_pool2d", x, kernel_size, stride, padding, 1, ceil_mode)
    count_include_pad = _check_bool("avg_pool2d", "count_include_pad", count_include_pad)
    if divisor_override is not None and (not _is_int(divisor_override) or int(divisor_override) == 0):
        raise InvalidArgument(f"avg_pool2d: divisor_override must be None or a nonzero int, got {divisor_override!r}")
    kh, kw, sh, sw, ph, pw, dh, dw, OH, OW = geo
    d = avg_divisors(x.shape[-2], x.shape[-1], kh, kw, sh, sw, ph, pw, OH, OW, count_include_pad, divisor_override)
    return _launch_pool(card, "avg_pool2d", "avg", x, geo, (1.0 / d).astype(np.float32), pes, trace)


GLOBAL_CHUNK = 16384     # elements of a plane summed by one vsum (longer planes: chunk sums added in fp32)


def _global_plan(card, HW, eb):
    """(planes per step, column chunk) of the global average: double-buffered blocks within local memory."""
    T = min(HW, GLOBAL_CHUNK)
    budget = (int(card.config.local_memory.bytes) - RESERVE) // 4
    B = int(max(1, min(32, budget // (_align(T * eb) + 8))))
    return B, T


def adaptive_avg_pool2d(card, x, output_size, pes=None, trace=False):
    """torch.nn.functional.adaptive_avg_pool2d for output sizes 1 (global average) and sizes dividing H and W."""
    op = "adaptive_avg_pool2d"
    x = _float_input(op, x)
    H, W = x.shape[-2:]
    if output_size is None or _is_int(output_size):
        oh = ow = output_size
    elif isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        oh, ow = output_size
    else:
        raise InvalidArgument(f"{op}: output_size must be an int or a pair, got {output_size!r}")
    oh = H if oh is None else oh
    ow = W if ow is None else ow
    if not (_is_int(oh) and _is_int(ow)) or oh < 1 or ow < 1:
        raise InvalidArgument(f"{op}: output_size must be positive ints (or None), got {output_size!r}")
    oh, ow = int(oh), int(ow)
    if (oh, ow) != (1, 1):
        if H % oh or W % ow:
            raise InvalidArgument(f"{op}: output_size {(oh, ow)} must divide the input size {(H, W)} (or be 1)")
        return avg_pool2d(card, x, (H // oh, W // ow), (H // oh, W // ow), pes=pes, trace=trace)
    if H * W == 0:
        raise InvalidArgument(f"{op}: the input's H and W must be nonzero, got {(H, W)}")
    lead = x.shape[:-2]
    P = int(np.prod(lead))
    if P == 0:
        return np.zeros(lead + (1, 1), x.dtype), runner.nothing(card, op, pes)
    dt = DT[x.dtype]
    B, T = _global_plan(card, H * W, EB[dt])
    k = _kernel(_global_avg, "global_avg_pool")
    key = ("global_avg", dt, H * W, B, T, _card_key(card))
    example = [np.empty((0, H * W), x.dtype), np.empty((0, 1), x.dtype), 0, 0.0]
    inv = float(np.float32(1.0 / (H * W)))
    args = [np.ascontiguousarray(x).reshape(P, H * W), runner.Out((P, 1), x.dtype), P, inv]
    (out,), result = launch(card, key, k, example, args, [B, T], "global_avg_pool", pes, trace)
    return out.reshape(lead + (1, 1)), result


def _bn_plan(card, C, HW, eb):
    budget = (int(card.config.local_memory.bytes) - RESERVE - 8 * _align(C * 4)) // 2
    T = max(1, min(HW, 16384))
    # a block: the input (eb), its fp32 form, the result and the fp16 result
    per = lambda t: _align(t * eb) + 2 * _align(t * 4) + _align(t * eb)   # noqa: E731
    R = max(1, min(C, 16, budget // max(1, per(T))))
    while R * per(T) > budget and T > 64:
        T //= 2
    return R, T


def batch_norm(card, x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5, pes=None, trace=False):
    """torch.nn.functional.batch_norm in inference form (training=False) on [N, C, ...] fp32/fp16 input with
    fp32 (or the input's dtype) running statistics and affine parameters [C]."""
    op = "batch_norm"
    x = _float_input(op, x, ranks=(2, 3, 4, 5))
    if _check_bool(op, "training", training):
        raise InvalidArgument(f"{op}: only inference (training=False) runs on the card")
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)) or \
            not (math.isfinite(float(eps)) and float(eps) >= 0):
        raise InvalidArgument(f"{op}: eps must be a finite non-negative number, got {eps!r}")
    C = x.shape[1]
    params = {}
    for name, v, required in (("running_mean", running_mean, True), ("running_var", running_var, True),
                              ("weight", weight, False), ("bias", bias, False)):
        if v is None:
            if required:
                raise InvalidArgument(f"{op}: {name} is required in inference (training=False)")
            continue
        try:
            a = np.asarray(v)
        except (ValueError, TypeError) as e:
            raise InvalidArgument(f"{op}: {name} is not an array: {e}") from None
        if a.dtype not in DT:
            raise InvalidArgument(f"{op}: {name} must be float32 or float16, got dtype {a.dtype}")
        if a.shape != (C,):
            raise InvalidArgument(f"{op}: {name} must have shape ({C},) (the channels of x), got {a.shape}")
        params[name] = a.astype(np.float32)
    N = x.shape[0]
    HW = int(np.prod(x.shape[2:]))
    if x.size == 0:
        return np.zeros(x.shape, x.dtype), runner.nothing(card, op, pes)
    dt = DT[x.dtype]
    R, T = _bn_plan(card, C, HW, EB[dt])
    nb = -(-C // R)
    has_w, has_b = "weight" in params, "bias" in params
    Cp = nb * R          # the parameter tiles cover whole channel blocks (the last one's extra rows unused)

    def padded(name, v):
        a = np.full(Cp, v, np.float32)
        a[:C] = params.get(name, np.full(C, v, np.float32))
        return a
    k = _kernel(_batch_norm, op)
    key = (op, dt, C, HW, R, T, has_w, has_b, _card_key(card))
    e = np.empty((0, HW), x.dtype)
    vec = [padded("running_mean", 0.0), padded("running_var", 1.0), padded("weight", 1.0), padded("bias", 0.0)]
    args = [np.ascontiguousarray(x).reshape(N * C, HW), *vec, runner.Out((N * C, HW), x.dtype), N * nb,
            float(np.float32(eps))]
    (out,), result = launch(card, key, k, [e, *vec, e, 0, 0.0], args, [C, R, T, HW, has_w, has_b], op, pes, trace)
    return out.reshape(x.shape), result


# --- numpy references: the card's steps in its order ----------------------------------------------------------
def _vmax(a, b):
    """The vector unit's max: the first NaN operand, else b if b > a, else a (ties keep the first)."""
    return np.where(np.isnan(a), a, np.where(np.isnan(b), b, np.where(b > a, b, a)))


def reference_pool2d(x, kind, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                     count_include_pad=True, divisor_override=None):
    op = f"{kind}_pool2d"
    x, (kh, kw, sh, sw, ph, pw, dh, dw, OH, OW) = _pool_args(op, x, kernel_size, stride, padding, dilation,
                                                             ceil_mode)
    cdt = np.float32 if kind == "avg" else x.dtype
    H, W = x.shape[-2:]
    fillv = -np.inf if kind == "max" else 0.0
    Hp = max(ph + H, (OH - 1) * sh + (kh - 1) * dh + 1)
    Wp = max(pw + W, (OW - 1) * sw + (kw - 1) * dw + 1)
    xp = np.full(x.shape[:-2] + (Hp, Wp), fillv, cdt)
    xp[..., ph:ph + H, pw:pw + W] = x.astype(cdt)
    f = _vmax if kind == "max" else (lambda a, b: (a + b).astype(cdt))

    def col(kw_):
        c = kw_ * dw
        return xp[..., :, c:c + (OW - 1) * sw + 1:sw]
    with np.errstate(invalid="ignore", over="ignore"):
        m = col(0)
        for j in range(1, kw):
            m = f(m, col(j))

        def row(kh_):
            r = kh_ * dh
            return m[..., r:r + (OH - 1) * sh + 1:sh, :]
        a = row(0)
        for i in range(1, kh):
            a = f(a, row(i))
        if kind == "avg":
            d = avg_divisors(H, W, kh, kw, sh, sw, ph, pw, OH, OW, count_include_pad, divisor_override)
            a = (a * (1.0 / d).astype(np.float32)).astype(np.float32)
    return a.astype(x.dtype)


def reference_max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    return reference_pool2d(x, "max", kernel_size, stride, padding, dilation, ceil_mode)


def reference_avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                         divisor_override=None):
    return reference_pool2d(x, "avg", kernel_size, stride, padding, 1, ceil_mode, count_include_pad,
                            divisor_override)


def _vsum(v):
    """vsum over the last axis: in index order in fp64 (NaN and inf as IEEE), rounded once to fp32."""
    return np.cumsum(v.astype(np.float64), axis=-1)[..., -1].astype(np.float32)


def reference_global_avg_pool(x):
    x = np.asarray(x)
    H, W = x.shape[-2:]
    v = x.reshape(x.shape[:-2] + (H * W,))
    T = min(H * W, GLOBAL_CHUNK)
    with np.errstate(invalid="ignore", over="ignore"):
        s = _vsum(v[..., :T])
        for c in range(T, H * W, T):
            s = (s + _vsum(v[..., c:c + T])).astype(np.float32)
        m = (s * np.float32(1.0 / (H * W))).astype(np.float32)
    return m.astype(x.dtype).reshape(x.shape[:-2] + (1, 1))


def reference_batch_norm(x, running_mean, running_var, weight=None, bias=None, eps=1e-5):
    x = np.asarray(x)
    C = x.shape[1]
    f32 = lambda v, d: np.asarray(v, np.float32) if v is not None else np.full(C, d, np.float32)   # noqa: E731
    with np.errstate(all="ignore"):
        ve = (f32(running_var, 1) + np.float32(eps)).astype(np.float64)
        invstd = np.where(ve != 0, 1.0 / np.sqrt(ve), np.copysign(np.inf, ve)).astype(np.float32)
        alpha = invstd * f32(weight, 1) if weight is not None else invstd
        beta = f32(bias, 0) - f32(running_mean, 0) * alpha if bias is not None else -(f32(running_mean, 0) * alpha)
        shape = (1, C) + (1,) * (x.ndim - 2)
        y = x.astype(np.float32) * alpha.reshape(shape) + beta.reshape(shape).astype(np.float32)
    return y.astype(np.float32).astype(x.dtype)


# --- the op registry --------------------------------------------------------------------------------------------
def _np_dtype(p):
    return np.float16 if p.get("dtype") == "fp16" else np.float32


def _nchw(rng, p):
    return {"x": (rng.standard_normal((p["n"], p["c"], p["h"], p["w"])) * 2).astype(_np_dtype(p))}


def _tuple(p):
    return (p["kernel_size"], p["stride"] or p["kernel_size"], p["padding"])


def _pool_tol(p):
    return (0.0, 0.0) if p.get("dtype") != "fp16" else (1e-3, 1e-6)


OPS = [
    OpSpec("max_pool2d", dict(n=8, c=64, h=112, w=112, kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode="false",
                              dtype="fp32"), _nchw,
           lambda card, x, p, pes: (lambda o, r: ([o], r))(*max_pool2d(
               card, x["x"], p["kernel_size"], p["stride"], p["padding"], p["dilation"], p["ceil_mode"] == "true",
               pes=pes)),
           lambda x, p: [reference_max_pool2d(x["x"], p["kernel_size"], p["stride"], p["padding"],
                                              p["dilation"], p["ceil_mode"] == "true")],
           lambda p: (0.0, 0.0),
           lambda p: 0, "torch.nn.functional.max_pool2d, NCHW fp32/fp16",
           {"dtype": ("fp32", "fp16"), "ceil_mode": ("false", "true")}),
    OpSpec("avg_pool2d", dict(n=8, c=64, h=56, w=56, kernel_size=3, stride=2, padding=1, ceil_mode="false",
                              count_include_pad="true", dtype="fp32"), _nchw,
           lambda card, x, p, pes: (lambda o, r: ([o], r))(*avg_pool2d(
               card, x["x"], p["kernel_size"], p["stride"], p["padding"], p["ceil_mode"] == "true",
               p["count_include_pad"] == "true", pes=pes)),
           lambda x, p: [reference_avg_pool2d(x["x"], p["kernel_size"], p["stride"], p["padding"],
                                              p["ceil_mode"] == "true", p["count_include_pad"] == "true")],
           _pool_tol, lambda p: 0, "torch.nn.functional.avg_pool2d, NCHW fp32/fp16",
           {"dtype": ("fp32", "fp16"), "ceil_mode": ("false", "true"), "count_include_pad": ("false", "true")}),
    OpSpec("adaptive_avg_pool2d", dict(n=8, c=2048, h=7, w=7, output_size=1, dtype="fp32"), _nchw,
           lambda card, x, p, pes: (lambda o, r: ([o], r))(*adaptive_avg_pool2d(card, x["x"], p["output_size"],
                                                                                 pes=pes)),
           lambda x, p: [reference_global_avg_pool(x["x"]) if p["output_size"] == 1 else
                         reference_avg_pool2d(x["x"], (p["h"] // p["output_size"], p["w"] // p["output_size"]))],
           _pool_tol, lambda p: p["n"] * p["c"] * p["h"] * p["w"],
           "torch.nn.functional.adaptive_avg_pool2d (output_size 1: global average pool; or a divisor of h and w)",
           {"dtype": ("fp32", "fp16")}),
    OpSpec("batch_norm", dict(n=8, c=256, h=28, w=28, eps=1e-5, affine=1, dtype="fp32"),
           lambda rng, p: {**_nchw(rng, p), "mean": rng.standard_normal(p["c"]).astype(np.float32),
                           "var": rng.uniform(0.5, 2, p["c"]).astype(np.float32),
                           **({"weight": rng.standard_normal(p["c"]).astype(np.float32),
                               "bias": rng.standard_normal(p["c"]).astype(np.float32)} if p["affine"] else {})},
           lambda card, x, p, pes: (lambda o, r: ([o], r))(*batch_norm(
               card, x["x"], x["mean"], x["var"], x.get("weight"), x.get("bias"), eps=p["eps"], pes=pes)),
           lambda x, p: [reference_batch_norm(x["x"], x["mean"], x["var"], x.get("weight"), x.get("bias"), p["eps"])],
           _pool_tol, lambda p: 2 * p["n"] * p["c"] * p["h"] * p["w"],
           "torch.nn.functional.batch_norm, inference (running statistics), NCHW fp32/fp16",
           {"dtype": ("fp32", "fp16"), "affine": (0, 1)}),
]
