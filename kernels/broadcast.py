"""Elementwise binary ops with numpy broadcasting, clamp, and reductions over any axis, fp32 and fp16, in the
kernel language.

Binary ops (`_binary`): the host collapses the two shapes (dimensions of size 1 in the result dropped,
neighbours with the same broadcast pattern merged) to at most a few dimensions; each operand is, along the
last two, full, a row (the same C values for every row), a column (one value per row) or a scalar. A work
item is a block of rows of the last two dimensions at one outer index; the vector unit takes every
pattern natively except a broadcast FIRST operand: a row is replicated by one local DMA (lang.repeat), and
a column or scalar first operand swaps the operands (add, mul, maximum, minimum) or computes a - b as
(-b) + a (exact, signed zeros included). Rows longer than a tile stream in 1-D chunks (items of (row,
chunk)). PE p takes a share of the items; the item loop is double-buffered.

Numerics: add, sub, mul, maximum, minimum are the vector unit's (fp32; fp16 computed in fp32 and rounded once,
which is what PyTorch's CPU kernels do); maximum / minimum propagate NaN; where the operands are swapped
a tie of -0.0 and 0.0 may give the other zero (PyTorch's own vectorized and scalar paths differ there too).
div is a * recip(b): recip in fp64 rounded to fp32, then the product rounded (fp16 operands converted to
fp32 first, the quotient rounded once to fp16): within 1.5 fp32 ulps of the correctly rounded quotient;
x / 0 = +-inf, 0 / 0 and inf / inf = NaN as IEEE; a divisor below 2**-126 in magnitude has a reciprocal past
the fp32 range, so the quotient is +-inf (or NaN for 0 / b) where PyTorch's is finite.

clamp (`_clamp`): max(x, min) then min(., max) with scalar bounds, as torch.clamp (NaN stays NaN).

Reductions (`_reduce_rows`, `_reduce_mid`): the reduced dimensions (adjacent ones) are collapsed to one axis of
length L between an outer O and an inner I. I == 1: blocks of rows, one vsum / vrmax per row and chunk
(vsum adds in fp64 in index order, rounded once to fp32; chunk sums added in fp32). I > 1: a running
accumulator over the inner axis, one vector op per reduced row (fp32 adds in order; fp16 accumulates in
fp32). mean = sum * fp32(1 / L). amax: exact, NaN if any NaN. argmax (first index of the max, NaN counting as
the max, as PyTorch): I == 1 from the row max, an equality indicator built from (x - max) on the vector
unit and a vrmax over (L - index); I > 1 with a running max and index. Results are int32 on the card,
returned as int64.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vnpu.errors import InvalidArgument

from . import lang, runner
from .library import OpSpec
from .pool import _card_key, launch

ALIGN = 64
RESERVE = 8192
TILE_MAX = 16384
ROWS_WITH_COLUMNS = 256      # rows per block when an operand is a column (one vector op per row)
EB = {"f32": 4, "f16": 2}
NP = {"f32": np.float32, "f16": np.float16}
DT = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16"}
BINARY = ("add", "sub", "mul", "div", "maximum", "minimum")
BIG = 2.0 ** 100             # (x * BIG) * BIG is >= 1 for every nonzero fp32 |x|


def _tile_elems(card, tiles):
    """Elements per tile so that `tiles` fp32 tiles, double-buffered, fit local memory."""
    t = (int(card.config.local_memory.bytes) - RESERVE) // (2 * tiles * 4)
    return int(max(ALIGN, min(TILE_MAX, t // ALIGN * ALIGN)))


# --- shapes ------------------------------------------------------------------------------------------------
def collapse(sa, sb):
    """(dims, strides_a, strides_b) of the broadcast of shapes sa and sb: dimensions of size 1 in the result
    dropped, neighbours with the same pattern merged; strides in elements of each (contiguous) operand, 0 where
    it is broadcast. At least one dimension."""
    out = np.broadcast_shapes(sa, sb)
    n = len(out)
    sa, sb = (1,) * (n - len(sa)) + tuple(sa), (1,) * (n - len(sb)) + tuple(sb)
    dims = []
    for d in range(n):
        if out[d] == 1:
            continue
        pat = (sa[d] != 1, sb[d] != 1)
        if dims and dims[-1][1] == pat:
            dims[-1][0] *= out[d]
        else:
            dims.append([out[d], pat])
    if not dims:
        dims = [[1, (True, True)]]
    D = tuple(d[0] for d in dims)

    def strides(k):
        st, s = [], 1
        for size, pat in reversed(dims):
            st.append(s if pat[k] else 0)
            s *= size if pat[k] else 1
        return tuple(reversed(st))
    return D, strides(0), strides(1)


@dataclass(frozen=True)
class BGeom:
    op: str
    dt: str
    D: tuple           # collapsed dimensions (the result's)
    sa: tuple          # element strides of a per dimension (0: broadcast)
    sb: tuple
    R: int             # rows per block (regime "rows"), or 0: 1-D chunks of T
    T: int

    @property
    def rows_regime(self):
        return self.R > 0

    @property
    def outer(self):
        return self.D[:-2] if self.rows_regime else self.D[:-2] if len(self.D) >= 2 else ()

    @property
    def nrows(self):       # rows of the last two dimensions (1 for a 1-D result)
        return self.D[-2] if len(self.D) >= 2 else 1

    @property
    def items(self):
        O = int(np.prod(self.outer, dtype=np.int64))
        if self.rows_regime:
            return O * -(-self.nrows // self.R)
        return O * self.nrows * -(-self.D[-1] // self.T)

    def kind(self, s):
        """Pattern of an operand with strides s along the last two dimensions: full, row (the same values in
        every row), col (one value per row) or scalar (1-D results: full or scalar)."""
        if len(s) < 2:
            return "full" if s[-1] else "scalar"
        return {(True, True): "full", (False, True): "row", (True, False): "col", (False, False): "scalar"}[
            (s[-2] != 0, s[-1] != 0)]


def _plan_binary(card, op, dt, D, sa, sb):
    tiles = 6 if op == "div" and dt == "f16" else 4
    T = _tile_elems(card, tiles)
    g = BGeom(op, dt, D, sa, sb, 0, T)
    if len(D) >= 2 and D[-1] <= T:
        cols = "col" in (g.kind(sa), g.kind(sb))
        R = max(1, min(D[-2], T // D[-1], ROWS_WITH_COLUMNS if cols else 1 << 30))
        g = BGeom(op, dt, D, sa, sb, R, T)
    return g


# --- kernels ----------------------------------------------------------------------------------------------------
def _apply(op, a, ak, b, bk, dt):
    """a op b for operand patterns ak, bk ("full", "col", "scalar"; rows already replicated to full)."""
    if op == "div":
        if dt == "f16":
            a, b = a.astype("f32"), b.astype("f32")
        r = lang.recip(b)
        y = lang.mul(a, r) if ak == "full" or bk != "full" else lang.mul(r, a)
        return y if dt == "f32" else y.astype(dt)
    f = getattr(lang, op if op in ("maximum", "minimum") else op)
    if ak == "full" or bk != "full":
        return f(a, b)
    if op == "sub":                      # a - b = (-b) + a exactly
        return lang.add(lang.mul(b, -1.0), a)
    return f(b, a)


def _apply_rows(op, a, b, row, col, nrow, C, dt):
    """a op b row by row, operand `row` ("a" or "b") being one row of C values (1-D) for every row and the
    other a (nrow, C) block or, col, an (nrow, 1) column: one vector op per row into an (nrow, C) block."""
    if dt == "f16":
        a, b = a.astype("f32"), b.astype("f32")
    if op == "div":                      # a * (1 / b): the reciprocal of the whole divisor once
        op, b = "mul", lang.recip(b)
    if op == "sub" and row == "b" and col:
        op, b = "add", lang.mul(b, -1.0)  # scalar - row = (-row) + scalar, exactly
    y = lang.empty((nrow, C), "f32" if dt == "f16" else dt)
    f = getattr(lang, op)
    for r in lang.static_range(nrow):
        x = (b if row == "a" else a)[r]  # this row's values, or its one value
        first, second = (a, x) if row == "a" else (x, b)
        if col and row == "b":           # (one value) op (row): the row first (op is commutative here)
            first, second = second, first
        f(first, second, out=y[r])
    return y if dt == "f32" else y.astype(dt)


def _offsets(g, o):
    """Each operand's element offset of outer index o (a card integer), over the outer dimensions."""
    offa, offb = 0, 0
    outer = g.outer
    for d in reversed(range(len(outer))):
        idx = o % outer[d] if d else o
        o = o // outer[d] if d else o
        offa = offa + idx * g.sa[d]
        offb = offb + idx * g.sb[d]
    return offa, offb


def _binary(a, b, out, g: lang.constexpr):
    """out = a op b, broadcast (BGeom g). a, b, out: flat tensors."""
    ka, kb = g.kind(g.sa), g.kind(g.sb)
    lo, hi = lang.split(g.items)
    if g.rows_regime:
        R, C, NR = g.R, g.D[-1], g.nrows
        nrb = -(-NR // R)
        out2 = out.reshape(out.shape[0] // C, C)
        inv_a = ka == "row" and not any(g.sa[:-2])
        inv_b = kb == "row" and not any(g.sb[:-2])
        # a row operand the same for every item: replicated once
        rep_a = lang.repeat(lang.load(a[0:C]), R) if inv_a else None
        rep_b = lang.repeat(lang.load(b[0:C]), R) if inv_b else None
        for i in range(lo, hi, pipeline=True):
            o = i // nrb
            r0 = (i - o * nrb) * R
            offa, offb = _offsets(g, o)
            vr = NR - r0                                     # rows left in this matrix (at most R used)
            ops = {}
            for name, x, kind, off in (("a", a, ka, offa), ("b", b, kb, offb)):
                if kind == "full":
                    x2 = x.reshape(x.shape[0] // C, C)
                    row = off // C + r0
                    ops[name] = lang.load(x2[row:lang.minimum(row + R, row + vr), :])
                elif kind == "col":
                    t = lang.load(x[off + r0:lang.minimum(off + r0 + R, off + r0 + vr)])
                    ops[name] = t.reshape(t.shape[0], 1)
            # the rows of this block (the interpreter's tiles hold only the valid ones)
            nrow = next(t.shape[0] for t in ops.values())
            per_row = None
            for name, x, kind, off, rep in (("a", a, ka, offa, rep_a), ("b", b, kb, offb, rep_b)):
                if kind == "row" and rep is not None:
                    ops[name] = rep[0:nrow]
                elif kind == "row":         # a row of this item: applied row by row (no replica to write)
                    ops[name] = lang.load(x[off:off + C])
                    per_row = name
                elif kind == "scalar":
                    ops[name] = lang.load(x[off:off + 1])
            ta, tb = ops["a"], ops["b"]
            if per_row is None:
                ka2, kb2 = ("full" if ka == "row" else ka), ("full" if kb == "row" else kb)
                y = _apply(g.op, ta, ka2, tb, kb2, g.dt)
            else:
                y = _apply_rows(g.op, ta, tb, per_row, (kb if per_row == "a" else ka) == "col", nrow, C, g.dt)
            orow = o * NR + r0
            lang.store(out2[orow:lang.minimum(orow + R, orow + vr), :], y)
    else:
        T, C, NR = g.T, g.D[-1], g.nrows
        ncb = -(-C // T)
        rs_a = g.sa[-2] if len(g.D) >= 2 else 0
        rs_b = g.sb[-2] if len(g.D) >= 2 else 0
        for i in range(lo, hi, pipeline=True):
            q = i // ncb
            c0 = (i - q * ncb) * T
            o = q // NR
            r = q - o * NR
            offa, offb = _offsets(g, o)
            w = C - c0
            ops = []
            for x, cs, off in ((a, g.sa[-1], offa + r * rs_a), (b, g.sb[-1], offb + r * rs_b)):
                if cs:
                    ops.append((lang.load(x[off + c0:lang.minimum(off + c0 + T, off + c0 + w)]), "full"))
                else:
                    ops.append((lang.load(x[off:off + 1]), "scalar"))
            (ta, ka2), (tb, kb2) = ops
            y = _apply(g.op, ta, ka2, tb, kb2, g.dt)
            base = q * C + c0
            lang.store(out[base:lang.minimum(base + T, base + w)], y)


def _clamp(x: lang.anysize, out: lang.anysize, n, lo_v, hi_v, T: lang.constexpr, has_lo: lang.constexpr,
           has_hi: lang.constexpr):
    lo, hi = lang.split(n, align=ALIGN)
    for i in range(lo, hi, T, pipeline=True):
        end = lang.minimum(i + T, hi)
        t = lang.load(x[i:end])
        f = t if x.dtype == "f32" else t.astype("f32")
        if has_lo:
            f = lang.maximum(f, lo_v)
        if has_hi:
            f = lang.minimum(f, hi_v)
        lang.store(out[i:end], f if x.dtype == "f32" else f.astype(x.dtype))


def _notnan(t):
    """int32 1 where the fp32 tile t is not NaN, 0 where it is (NaN * 0 stays NaN; vcvt turns NaN into 0)."""
    return lang.add(lang.mul(lang.minimum(lang.maximum(t, -1.0), 1.0), 0.0), 1.0).astype("i32")


def _reduce_rows(x, out, rev, g: lang.constexpr):
    """x: [O, L] rows; out: [O, 1]. g = (op, dt, O, L, B, T): B rows per block, chunks of T columns."""
    op, dt, O, L, B, T = g
    lo, hi = lang.split(O)
    if op == "argmax":
        scores = lang.repeat(lang.load(rev), B)                  # (B, L) of L - j
    for r in range(lo, hi, B, pipeline=2 * T >= L):
        end = lang.minimum(r + B, hi)
        if op == "argmax":
            t = lang.load(x[r:end, :])
            f = t if dt == "f32" else t.astype("f32")
            m = lang.max(f, axis=1)                               # (B, 1): NaN if the row holds one
            d = lang.sub(f, m)                                    # 0 where x == max; NaN where both are inf
            less = lang.minimum(lang.mul(lang.mul(d, -BIG), BIG), 1.0).astype("i32")   # 1: x < max
            eq = 1 - less                                         # NaN counted as equal (below)
            rownan = 1 - _notnan(m)                               # (B, 1)
            ind = lang.mul(eq, 1 - lang.mul(_notnan(f), rownan))  # a NaN row: its NaNs only
            s = lang.max(lang.mul(ind, scores[0:ind.shape[0]]), axis=1)   # (B, 1) i32: L - the first index
            lang.store(out[r:end, :], L - s)
        else:
            red = lang.sum if op in ("sum", "mean") else lang.max
            comb = lang.maximum if op == "amax" else lang.add
            acc = red(lang.load(x[r:end, 0:min(T, L)]), axis=1)
            if 2 * T < L:       # long rows: a card loop over the whole chunks, then the last (static) one
                last = (L - 1) // T * T
                for c in range(T, last, T):
                    comb(acc, red(lang.load(x[r:end, c:c + T]), axis=1), out=acc)
                comb(acc, red(lang.load(x[r:end, last:L]), axis=1), out=acc)
            else:
                for c in lang.static_range(T, L, T):
                    comb(acc, red(lang.load(x[r:end, c:min(c + T, L)]), axis=1), out=acc)
            if op == "mean":
                lang.mul(acc, 1.0 / L, out=acc)
            lang.store(out[r:end, :], acc if dt == "f32" else acc.astype(dt))


def _argmax_lanes(f, m, gidx, L):
    """The first index of the max of lanes f (fp32) whose global indices are gidx (i32): NaN counts as the
    max (the first NaN wins); m is the lanes' max (a one-element tile, NaN if a lane is NaN)."""
    d = lang.sub(f, m)
    eq = 1 - lang.minimum(lang.mul(lang.mul(d, -BIG), BIG), 1.0).astype("i32")
    ind = lang.mul(eq, 1 - lang.mul(_notnan(f), 1 - _notnan(m)))
    return L - lang.max(lang.mul(ind, L - gidx))


def _argmax_long(x, out, lane, g: lang.constexpr):
    """argmax of each row of x [O, L] (rows longer than a tile): per lane j < T a running max and the first
    chunk holding it over the chunks x[o, c*T + j], then the lanes combined. lane: int32 0..T-1."""
    op, dt, O, L, T = g
    nfull = L // T
    tail = L - nfull * T
    lanes = lang.load(lane)
    lo, hi = lang.split(O)
    for o in range(lo, hi):
        best = lang.load(x[o, 0:T]).astype("f32")
        idx = lang.mul(best, 0.0).astype("i32")            # chunk 0 (NaN * 0 and inf * 0 convert to 0)
        cnt = lang.mul(best, 0.0).astype("i32")
        for c in range(1, nfull, pipeline=True):
            v = lang.load(x[o, c * T:c * T + T]).astype("f32")
            lang.add(cnt, 1, out=cnt)
            _running_argmax(best, idx, cnt, v)
        if tail:
            v = lang.load(x[o, nfull * T:L]).astype("f32")
            lang.add(cnt, 1, out=cnt)
            _running_argmax(best[0:tail], idx[0:tail], cnt[0:tail], v)
        res = _argmax_lanes(best, lang.max(best), lang.add(lang.mul(idx, T), lanes), L)
        lang.store(out.reshape(O)[o:o + 1], res)


def _running_argmax(best, idx, cnt, v):
    """Where v > best (or v is the first NaN): idx = cnt; best = max(best, v) (NaN kept)."""
    d = lang.sub(v, best)
    gt = lang.minimum(lang.mul(lang.mul(lang.relu(d), BIG), BIG), 1.0).astype("i32")     # v > best
    take = lang.add(gt, lang.mul(1 - _notnan(v), _notnan(best)))                      # or the first NaN
    lang.add(idx, lang.mul(take, lang.sub(cnt, idx)), out=idx)
    lang.maximum(best, v, out=best)


def _update_rows(op, acc, idx, cnt, blk, n):
    """Fold the n rows of blk into the running acc (and, argmax, idx / cnt), in row order."""
    b32 = blk.astype("f32") if blk.dtype != "f32" else blk
    for r in lang.static_range(n):
        v = b32[r]
        if op == "argmax":
            lang.add(cnt, 1, out=cnt)
            _running_argmax(acc, idx, cnt, v)
        elif op == "amax":
            lang.maximum(acc, v, out=acc)
        else:
            lang.add(acc, v, out=acc)


def _reduce_mid(x, out, g: lang.constexpr):
    """x: [O * L, I]; out: [O, I]: reduce over the L rows of each outer index. Work items (outer index, chunk of
    T inner columns; the last chunk's extra lanes compute garbage that is not stored); blocks of Rb rows per
    DMA, folded one row (vector op) at a time. g = (op, dt, O, L, I, T, Rb)."""
    op, dt, O, L, I, T, Rb = g
    nc = -(-I // T)
    nfull = (L - 1) // Rb
    tail = L - 1 - nfull * Rb
    lo, hi = lang.split(O * nc)
    for i in range(lo, hi):
        o = i // nc
        c0 = (i - o * nc) * T
        cend = lang.minimum(c0 + T, I)
        row0 = o * L
        acc = lang.load(x[row0, c0:cend]).astype("f32")     # a fresh tile, updated in place below
        idx = cnt = None
        if op == "argmax":
            idx = lang.mul(acc, 0.0).astype("i32")          # 0 (NaN * 0 and inf * 0 are NaN: vcvt gives 0)
            cnt = lang.mul(acc, 0.0).astype("i32")
        if nfull:
            for rb in range(row0 + 1, row0 + 1 + nfull * Rb, Rb, pipeline=True):
                _update_rows(op, acc, idx, cnt, lang.load(x[rb:rb + Rb, c0:cend]), Rb)
        if tail:
            _update_rows(op, acc, idx, cnt, lang.load(x[row0 + 1 + nfull * Rb:row0 + L, c0:cend]), tail)
        dst = out[o, c0:cend]
        if op == "argmax":
            lang.store(dst, idx)
        else:
            if op == "mean":
                lang.mul(acc, 1.0 / L, out=acc)
            lang.store(dst, acc if dt == "f32" else acc.astype(dt))


_kernel = lang.library_kernel


# --- host functions ----------------------------------------------------------------------------------------
def _float_array(op, name, x):
    if isinstance(x, (bool, np.bool_)):
        raise InvalidArgument(f"{op}: {name} must be a float32 / float16 array or a number, got {x!r}")
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as e:
            raise InvalidArgument(f"{op}: {name} is not an array: {e}") from None
    if x.dtype not in DT:
        raise InvalidArgument(f"{op}: {name} must be float32 or float16, got dtype {x.dtype}")
    if x.ndim > 4:
        raise InvalidArgument(f"{op}: {name} has {x.ndim} dimensions; at most 4")
    return x


def binary(card, op, a, b, pes=None, trace=False):
    """a op b with numpy broadcasting (op in add, sub, mul, div, maximum, minimum); a and b float32 or float16
    arrays of the same dtype (a Python number for either takes the other's dtype). Returns (array, result)."""
    if op not in BINARY:
        raise InvalidArgument(f"no broadcasting op {op!r}; there are {', '.join(BINARY)}")
    num = (int, float, np.integer, np.floating)
    if isinstance(a, num) and not isinstance(a, (bool, np.bool_)) and isinstance(b, np.ndarray):
        a = np.asarray(a, b.dtype if b.dtype in DT else np.float32)
    if isinstance(b, num) and not isinstance(b, (bool, np.bool_)) and isinstance(a, np.ndarray):
        b = np.asarray(b, a.dtype if a.dtype in DT else np.float32)
    a, b = _float_array(op, "a", a), _float_array(op, "b", b)
    if a.dtype != b.dtype:
        raise InvalidArgument(f"{op}: a and b must have the same dtype, got {a.dtype} and {b.dtype}")
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise InvalidArgument(f"{op}: shapes {a.shape} and {b.shape} do not broadcast") from None
    dt = DT[a.dtype]
    if 0 in shape:
        return np.zeros(shape, a.dtype), runner.nothing(card, op, pes)
    D, sa, sb = collapse(a.shape, b.shape)
    g = _plan_binary(card, op, dt, D, sa, sb)
    k = _kernel(_binary, f"broadcast_{op}")
    n = int(np.prod(shape))
    key = ("broadcast", g, _card_key(card))
    example = [np.empty(max(1, a.size), a.dtype), np.empty(max(1, b.size), a.dtype), np.empty(n, a.dtype)]
    args = [np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1), runner.Out((n,), a.dtype)]
    (out,), result = launch(card, key, k, example, args, [g], f"broadcast_{op}", pes, trace)
    return out.reshape(shape), result


def add(card, a, b, pes=None, trace=False):
    return binary(card, "add", a, b, pes, trace)


def sub(card, a, b, pes=None, trace=False):
    return binary(card, "sub", a, b, pes, trace)


def mul(card, a, b, pes=None, trace=False):
    return binary(card, "mul", a, b, pes, trace)


def div(card, a, b, pes=None, trace=False):
    return binary(card, "div", a, b, pes, trace)


def maximum(card, a, b, pes=None, trace=False):
    return binary(card, "maximum", a, b, pes, trace)


def minimum(card, a, b, pes=None, trace=False):
    return binary(card, "minimum", a, b, pes, trace)


def _bound(op, name, v):
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise InvalidArgument(f"{op}: {name} must be a number or None, got {v!r}")
    return float(np.float32(v))


def clamp(card, x, min=None, max=None, pes=None, trace=False):   # noqa: A002 (torch's names)
    """torch.clamp(x, min, max) with number bounds: max(x, min) then min(., max), in fp32."""
    op = "clamp"
    x = _float_array(op, "x", x)
    lo_v, hi_v = _bound(op, "min", min), _bound(op, "max", max)
    if lo_v is None and hi_v is None:
        raise InvalidArgument(f"{op}: at least one of min and max must be a number")
    if x.size == 0:
        return np.zeros(x.shape, x.dtype), runner.nothing(card, op, pes)
    T = _tile_elems(card, 3)
    has = (lo_v is not None, hi_v is not None)
    k = _kernel(_clamp, op)
    key = (op, DT[x.dtype], T, has, _card_key(card))
    e = np.empty(0, x.dtype)
    args = [np.ascontiguousarray(x).reshape(-1), runner.Out((x.size,), x.dtype), x.size, 0.0 if lo_v is None else lo_v, 0.0 if hi_v is None else hi_v]
    (out,), result = launch(card, key, k, [e, e, 0, 0.0, 0.0], args, [T, *has], op, pes, trace)
    return out.reshape(x.shape), result


REDUCTIONS = ("sum", "mean", "amax", "argmax")


def _dims(op, x, dim):
    """The reduced dimensions as a sorted tuple of adjacent axes (None: all)."""
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0 and op != "argmax"):
        return tuple(range(x.ndim))
    ds = (dim,) if not isinstance(dim, (tuple, list)) else tuple(dim)
    if op == "argmax" and len(ds) != 1:
        raise InvalidArgument(f"{op}: dim must be an int or None, got {dim!r}")
    out = []
    for d in ds:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)):
            raise InvalidArgument(f"{op}: dim must be an int, a tuple of ints or None, got {dim!r}")
        if not -max(1, x.ndim) <= d < max(1, x.ndim):
            raise InvalidArgument(f"{op}: dim {d} is out of range for {x.ndim} dimensions")
        out.append(int(d) % max(1, x.ndim))
    out = sorted(set(out))
    if len(out) != len(ds):
        raise InvalidArgument(f"{op}: dim {dim!r} repeats a dimension")
    if out and out[-1] - out[0] != len(out) - 1:
        raise InvalidArgument(f"{op}: the reduced dimensions must be adjacent, got {dim!r}")
    return tuple(out)


def row_chunk(card, op, L):
    """Columns per vsum / vrmax of a last-axis reduction of rows of L elements on this card (the chunk sums
    are added in fp32: reference_reduce(..., T=) repeats it)."""
    return min(L, _tile_elems(card, 8 if op == "argmax" else 3))


def reduce(card, op, x, dim=None, keepdim=False, pes=None, trace=False):
    """torch.sum / mean / amax / argmax(x, dim, keepdim) over adjacent dims (argmax: one dim or None)."""
    if op not in REDUCTIONS:
        raise InvalidArgument(f"no reduction {op!r}; there are {', '.join(REDUCTIONS)}")
    x = _float_array(op, "x", x)
    if not isinstance(keepdim, (bool, np.bool_)):
        raise InvalidArgument(f"{op}: keepdim must be True or False, got {keepdim!r}")
    flat = op == "argmax" and dim is None
    xs = x.reshape(-1) if flat else x
    ds = _dims(op, xs, dim) if xs.ndim else ()
    shape = xs.shape
    L = int(np.prod([shape[d] for d in ds], dtype=np.int64)) if ds else 1
    O = int(np.prod(shape[:ds[0]], dtype=np.int64)) if ds else 1
    I = int(np.prod(shape[ds[-1] + 1:], dtype=np.int64)) if ds else 1
    if keepdim and not flat:
        oshape = tuple(1 if d in ds else s for d, s in enumerate(shape))
    else:
        oshape = tuple(s for d, s in enumerate(shape) if d not in ds)
        if flat and keepdim:
            oshape = (1,) * x.ndim
    odt = np.int64 if op == "argmax" else x.dtype
    if L == 0 and op in ("amax", "argmax"):
        raise InvalidArgument(f"{op}: cannot reduce an empty dimension (as PyTorch)")
    if O * I == 0:
        return np.zeros(oshape, odt), runner.nothing(card, op, pes)
    if L == 0:      # sum of nothing is 0, mean NaN (as PyTorch)
        return np.full(oshape, 0.0 if op == "sum" else np.nan, odt), runner.nothing(card, op, pes)
    dt = DT[x.dtype]
    xr = np.ascontiguousarray(xs).reshape(O, L, I)
    if I == 1 and op == "argmax" and L > _tile_elems(card, 8):
        T = _tile_elems(card, 24)        # the running max and index keep ~20 temporaries live
        g = (op, dt, O, L, T)
        k = _kernel(_argmax_long, "reduce_argmax_long")
        lane = np.arange(T, dtype=np.int32)
        example = [np.empty((O, L), x.dtype), np.empty((O, 1), np.int32), lane]
        args = [xr.reshape(O, L), runner.Out((O, 1), np.int32), lane]
    elif I == 1:
        Tc = row_chunk(card, op, L)
        B = int(max(1, min(32, -(-O // card.config.pes), _tile_elems(card, 8 if op == "argmax" else 3) // Tc)))
        g = (op, dt, O, L, B, Tc)
        k = _kernel(_reduce_rows, f"reduce_{op}")
        rev = (L - np.arange(L)).astype(np.int32) if op == "argmax" else np.zeros(1, np.int32)
        ot = np.int32 if op == "argmax" else x.dtype
        example = [np.empty((O, L), x.dtype), np.empty((O, 1), ot), rev]
        args = [xr.reshape(O, L), runner.Out((O, 1), ot), rev]
    else:
        T = _tile_elems(card, 24 if op == "argmax" else 6)
        Tc = min(I, T)
        if O * -(-I // Tc) < card.config.pes:      # few outer indices: narrower chunks for more PEs, but rows
            per_pe = -(-I // -(-card.config.pes // O))      # of at least 1 KiB (DRAM runs shorter than that
            Tc = min(Tc, max(256, -(-per_pe // ALIGN) * ALIGN))   # waste the channel)
        Rb = int(max(1, min(64 if op == "argmax" else 256, T // Tc, L - 1)))
        g = (op, dt, O, L, I, Tc, Rb)
        k = _kernel(_reduce_mid, f"reduce_{op}_mid")
        ot = np.int32 if op == "argmax" else x.dtype
        example = [np.empty((O * L, I), x.dtype), np.empty((O, I), ot)]
        args = [xr.reshape(O * L, I), runner.Out((O, I), ot)]
    key = ("reduce", k.name, g, _card_key(card))
    (out,), result = launch(card, key, k, example, args, [g], k.name, pes, trace)
    return out.astype(odt).reshape(oshape), result


# --- numpy references: the card's steps ---------------------------------------------------------------------
def _vmax(a, b):
    return np.where(np.isnan(a), a, np.where(np.isnan(b), b, np.where(b > a, b, a)))


def _vmin(a, b):
    return np.where(np.isnan(a), a, np.where(np.isnan(b), b, np.where(b < a, b, a)))


def reference_binary(op, a, b):
    a, b = np.asarray(a), np.asarray(b)
    dt = a.dtype if a.dtype in DT else b.dtype
    a32, b32 = np.asarray(a, np.float32), np.asarray(b, np.float32)
    with np.errstate(all="ignore"):
        if op == "div":
            r = np.where(b32 != 0, 1.0 / b32.astype(np.float64), np.copysign(np.inf, b32)).astype(np.float32)
            y = a32 * r
        elif op in ("maximum", "minimum"):
            y = (_vmax if op == "maximum" else _vmin)(*np.broadcast_arrays(a32, b32))
        else:
            y = {"add": np.add, "sub": np.subtract, "mul": np.multiply}[op](a32, b32)
    return np.asarray(y, np.float32).astype(dt)


def reference_clamp(x, min=None, max=None):   # noqa: A002
    f = np.asarray(x, np.float32)
    if min is not None:
        f = _vmax(f, np.float32(min))
    if max is not None:
        f = _vmin(f, np.float32(max))
    return f.astype(np.asarray(x).dtype)


def _vsum(v):
    return np.cumsum(v.astype(np.float64), axis=-1)[..., -1].astype(np.float32)


def reference_reduce(op, x, dim=None, keepdim=False, T=None):
    """The card's reduction (T: the column chunk of a last-axis reduction, as the host planned it)."""
    x = np.asarray(x)
    flat = op == "argmax" and dim is None
    xs = x.reshape(-1) if flat else x
    ds = _dims(op, xs, dim) if xs.ndim else ()
    shape = xs.shape
    L = int(np.prod([shape[d] for d in ds])) if ds else 1
    O = int(np.prod(shape[:ds[0]])) if ds else 1
    I = int(np.prod(shape[ds[-1] + 1:])) if ds else 1
    v = xs.reshape(O, L, I).astype(np.float32)
    with np.errstate(all="ignore"):
        if op == "argmax":
            isn = np.isnan(v)
            key = np.where(isn, np.inf, v)
            first_nan = isn.any(axis=1)
            r = np.where(first_nan, np.argmax(isn, axis=1), np.argmax(key, axis=1)).astype(np.int64)
        elif I == 1:
            row = v[:, :, 0]
            T = T or L
            if op == "amax":
                r = np.where(np.isnan(row).any(axis=1), np.nan, row.max(axis=1)).astype(np.float32)
            else:
                r = _vsum(row[:, :T])
                for c in range(T, L, T):
                    r = (r + _vsum(row[:, c:c + T])).astype(np.float32)
                if op == "mean":
                    r = (r * np.float32(1.0 / L)).astype(np.float32)
            r = r[:, None]
        else:
            acc = v[:, 0, :]
            for i in range(1, L):
                acc = _vmax(acc, v[:, i, :]) if op == "amax" else (acc + v[:, i, :]).astype(np.float32)
            if op == "mean":
                acc = (acc * np.float32(1.0 / L)).astype(np.float32)
            r = acc
    if keepdim and not flat:
        oshape = tuple(1 if d in ds else s for d, s in enumerate(shape))
    else:
        oshape = tuple(s for d, s in enumerate(shape) if d not in ds)
        if flat and keepdim:
            oshape = (1,) * x.ndim
    return np.asarray(r).astype(np.int64 if op == "argmax" else x.dtype).reshape(oshape)


# --- the op registry ----------------------------------------------------------------------------------------
def _dtype(p):
    return np.float16 if p["dtype"] == "fp16" else np.float32


def _shape(text):
    try:
        s = tuple(int(v) for v in text.split("x") if v != "")
    except ValueError:
        raise InvalidArgument(f"a shape is sizes joined by x (8x1x32), got {text!r}") from None
    if len(s) > 4 or any(v < 0 for v in s):
        raise InvalidArgument(f"a shape has at most 4 non-negative sizes, got {text!r}")
    return s


def _bin_spec(op):
    def make(rng, p):
        a = (rng.standard_normal(_shape(p["a"])) * 3).astype(_dtype(p))
        b = (rng.standard_normal(_shape(p["b"])) * 3).astype(_dtype(p))
        if op == "div":
            b = np.where(np.abs(b) < 0.1, np.float32(0.5), b).astype(_dtype(p))
        return {"a": a, "b": b}

    def run(card, x, p, pes):
        out, r = binary(card, op, x["a"], x["b"], pes=pes)
        return [out], r
    return OpSpec(f"broadcast_{op}", dict(a="64x256x56", b="1x256x1", dtype="fp32"), make, run,
                  lambda x, p: [reference_binary(op, x["a"], x["b"])], lambda p: (0.0, 0.0),
                  lambda p: int(np.prod(np.broadcast_shapes(_shape(p["a"]), _shape(p["b"])))),
                  f"torch.{op} with numpy broadcasting, fp32/fp16 (shapes like 8x1x32)", {"dtype": ("fp32", "fp16")})


def _dim(text):
    """--dim: an int, ints joined by commas (adjacent dims), or none."""
    if text.strip().lower() in ("none", ""):
        return None
    try:
        ds = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InvalidArgument(f"--dim is an int, ints joined by commas, or none; got {text!r}") from None
    return ds[0] if len(ds) == 1 else ds


def _red_spec(op):
    def run(card, x, p, pes):
        out, r = reduce(card, op, x["x"], _dim(p["dim"]), pes=pes)
        return [out], r
    return OpSpec(op, dict(x="64x1000", dim="-1", dtype="fp32"),
                  lambda rng, p: {"x": (rng.standard_normal(_shape(p["x"])) * 3).astype(_dtype(p))}, run,
                  lambda x, p: [reference_reduce(op, x["x"], _dim(p["dim"]))],      # (rows past one chunk:
                  # the card adds chunk sums in fp32, within the tolerance)
                  lambda p: (1e-6, 1e-6) if op in ("sum", "mean") else (0.0, 0.0),
                  lambda p: int(np.prod(_shape(p["x"]))),
                  f"torch.{op}(x, dim) over one dimension, fp32/fp16", {"dtype": ("fp32", "fp16")})


OPS = [_bin_spec(op) for op in BINARY] + [_red_spec(op) for op in REDUCTIONS] + [
    OpSpec("clamp", dict(n=65536, min=-1.0, max=1.0, dtype="fp32"),
           lambda rng, p: {"x": (rng.standard_normal(p["n"]) * 3).astype(_dtype(p))},
           lambda card, x, p, pes: (lambda o, r: ([o], r))(*clamp(card, x["x"], p["min"], p["max"], pes=pes)),
           lambda x, p: [reference_clamp(x["x"], p["min"], p["max"])], lambda p: (0.0, 0.0), lambda p: 2 * p["n"],
           "torch.clamp(x, min, max) with number bounds, fp32/fp16", {"dtype": ("fp32", "fp16")}),
]
