"""Tensor plumbing in the kernel language: permute / transpose, slice (narrow), cat, split, pad (constant),
cast, gather / index_select and where. Each op has a numpy reference (`reference_*`) and a host function
`op(card, ...) -> (array, LaunchResult)`; vnpu.ops exposes them under PyTorch's names.

Data movement works on bytes: every tensor is passed as int8 (its bytes, a free host-side view), so any plain
dtype moves bit for bit (NaN payloads, -0.0) and an element is a run of `itemsize` bytes. Only DMA moves them
(load / store of 2-D blocks with strides, `transfer` from tensor to tensor, `move` inside local memory);
nothing goes through the vector unit except cast, gather's byte codes and where's integer select.

- slice / cat / split (`_copy`): every op is a list of 2-D block copies (`Job`): a source viewed as rows of SW
  bytes, a block of C bytes at column sc of each row, to a destination of rows of DW bytes at column dc.
  Long rows go DRAM -> DRAM in chunks by `transfer` (one DMA, no local memory); short rows as blocks of rows
  through local memory (one strided load, one strided store per block). PE p takes a share of the rows or
  chunks of each job.
- permute (`_permute`): the host drops size-1 dims and merges input dims that stay adjacent and in order (the
  element's bytes are a last dim that never moves), leaving a permutation of "units" (E contiguous bytes).
  Long units (ROWS_MIN bytes and more) move as rows: a block of R units strided along the input, contiguous
  in the output, one load and one store (units longer than a tile: DRAM -> DRAM transfers). Shorter units (a
  real transpose when the last dim moves): a block of Rb x Cb units is loaded (DRAM runs along the input's
  last dim), transposed inside local memory by one vnpu.move with unit-size rows (3-D: rows and planes), and
  stored (DRAM runs along the output's last dim); whole blocks first, then the narrower last column block,
  so every move has a static shape.
- pad (`_pad`): the fill value's bytes come as a small tensor; whole output planes (G per item) are built in
  local memory (the fill moved in once per PE, each plane's window moved onto it by one 3-D move) and stored
  contiguously; larger planes go in bands of rows (fill rows stored apart), rows longer than a tile by
  transfers.
- cast (`_cast`): vcvt on the vector unit; float -> int rounds toward zero with vcvt's round-half-even and a
  correction computed without compares; int32 -> int8 keeps the low byte (a move with 4-byte source stride).
- gather / index_select (`_gather`): the card's embedding unit, one lookup per gathered row, over byte codes.
- where (`_where`): an integer select on raw bits, b + c * (a - b), which wraps back to a's bits exactly.

Empty results launch nothing (runner.nothing); reshape / view is a host-side no-op on a contiguous array.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vnpu.errors import InvalidArgument

from . import lang, runner
from .library import OpSpec
_card_key = runner.card_key

RESERVE = 8192               # local bytes left to the compiler's constants
TILE_MAX = 65536             # bytes per tile at most (longer tiles only delay the pipeline)
CHUNK_MIN = 2048             # rows at least this long go DRAM -> DRAM by transfer (full-efficiency DRAM runs)
CHUNK_MAX = 1 << 20          # bytes per transfer at most
SLAB_MAX = 262144            # permute: bytes per transposed block at most (1 KiB DRAM runs for 4-byte units)
ROWS_MIN = 512               # permute: units at least this long move as rows (one DMA engine; 4x that with two)
NSLOTS = 14                  # tensor arguments of the copy kernel (15 argument registers, one spare)

_kernel = lang.library_kernel


def _tile_bytes(card, tiles=6, cap=TILE_MAX):
    """Bytes per tile when `tiles` of them (double-buffered operands and results) share local memory."""
    t = (int(card.config.local_memory.bytes) - RESERVE) // tiles
    return int(max(64, min(cap, t // 64 * 64)))


def _bytes(x):
    """The bytes of an array as a flat int8 array (a view when x is contiguous)."""
    return np.ascontiguousarray(x).reshape(-1).view(np.int8)


def _plain(op, x, name="x"):
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as e:
            raise InvalidArgument(f"{op}: {name} is not an array: {str(e).splitlines()[0][:80]}") from None
    if x.dtype.hasobject or x.dtype.itemsize == 0 or x.dtype.kind in "OUSV":
        raise InvalidArgument(f"{op}: {name} has dtype {x.dtype}; plumbing ops move plain numeric arrays")
    return x


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _dim(op, d, ndim, name="dim"):
    if not _is_int(d):
        raise InvalidArgument(f"{op}: {name} must be an int, got {d!r}")
    n = max(1, ndim)
    if not -n <= d < n:
        raise InvalidArgument(f"{op}: {name} {d} is out of range for a tensor of {ndim} dimensions")
    return int(d) % n


launch = runner.run_kernel


# --- block copies: slice, cat, split ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """Copy, for each of O rows, C bytes at column sc of source row o (rows of SW bytes) to column dc of
    destination row o (rows of DW bytes). chunks: R bytes per transfer (DRAM -> DRAM); else R rows per block
    through local memory."""
    src: int
    dst: int
    O: int
    SW: int
    sc: int
    DW: int
    dc: int
    C: int
    R: int
    chunks: bool


def plan_job(card, src, dst, O, SW, sc, DW, dc, C):
    """The Job of one block copy, its shape normalized (whole contiguous blocks as one row) and tiled."""
    if O * C == 0:                             # nothing to copy (run_jobs drops it)
        return Job(src, dst, O, SW, sc, DW, dc, C, 1, False)
    if SW == C and DW == C:                    # contiguous on both sides: one long row
        O, SW, DW, C = 1, O * C, O * C, O * C
    npes = card.config.pes
    if C >= CHUNK_MIN:
        per = -(-O * C // (2 * npes))          # two chunks per PE at least (when there is that much)
        R = min(C, CHUNK_MAX, max(CHUNK_MIN, -(-per // 64) * 64))
        return Job(src, dst, O, SW, sc, DW, dc, C, R, True)
    R = max(1, min(O, _tile_bytes(card) // C, -(-O // npes)))
    return Job(src, dst, O, SW, sc, DW, dc, C, R, False)


def _copy(t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13, g: lang.constexpr):
    """Run the block copies g (Jobs) between the tensors t0..t13 (flat int8; None where absent)."""
    ts = (t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13)
    for j in g:
        src, dst = ts[j.src], ts[j.dst]
        if j.chunks:
            nck = -(-j.C // j.R)
            lo, hi = lang.split(j.O * nck)
            for i in range(lo, hi):
                o = i // nck
                c0 = (i - o * nck) * j.R
                left = j.C - c0
                s0 = o * j.SW + j.sc + c0
                d0 = o * j.DW + j.dc + c0
                lang.transfer(dst[d0:lang.minimum(d0 + j.R, d0 + left)], src[s0:lang.minimum(s0 + j.R, s0 + left)])
        else:
            s2 = src.reshape(j.O, j.SW)
            d2 = dst.reshape(j.O, j.DW)
            lo, hi = lang.split(j.O)
            for r in range(lo, hi, j.R, pipeline=True):
                end = lang.minimum(r + j.R, hi)
                lang.store(d2[r:end, j.dc:j.dc + j.C], lang.load(s2[r:end, j.sc:j.sc + j.C]))


def run_jobs(card, name, tensors, outs, jobs, pes=None, trace=False):
    """Launch the copy kernel: tensors (input int8 arrays) then outs (runner.Out of int8) fill the slots in
    order; jobs name slots. Returns ([out arrays], result)."""
    slots = list(tensors) + list(outs)
    if len(slots) > NSLOTS:
        raise InvalidArgument(f"{name}: at most {NSLOTS} tensors per launch")
    jobs = tuple(j for j in jobs if j.O * j.C > 0)
    if not jobs:
        return [np.zeros(o.shape, o.dtype) for o in outs], runner.nothing(card, name, pes)
    example = [np.empty(a.shape if isinstance(a, runner.Out) else a.shape, np.int8) for a in slots]
    example += [None] * (NSLOTS - len(slots))
    k = _kernel(_copy, f"copy_{name}")
    key = ("plumbing_copy", name, jobs, tuple(e.shape for e in example if e is not None), _card_key(card))
    return launch(card, key, k, example, slots + [None] * (NSLOTS - len(slots)), [jobs], f"copy_{name}", pes,
                  trace)


@dataclass(frozen=True)
class RowsGeom:
    """Short rows assembled (or taken apart) in local memory: the wide tensor (slot `wide`) has O rows of W
    bytes; part k (slot, byte offset, width) is the columns [offset, offset + width) of every row. cat: the
    parts are loaded whole and moved into a row block of the wide tensor; split / narrow: a row block of the
    wide tensor is loaded whole and each part moved out of it. Every DRAM access is contiguous rows."""
    wide: int
    O: int
    W: int
    parts: tuple
    to_wide: bool      # cat (parts -> wide) or split (wide -> parts)
    R: int             # rows per block


def _rows(t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13, g: lang.constexpr):
    ts = (t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13)
    W, R = g.W, g.R
    wide = ts[g.wide].reshape(g.O, W)
    lo, hi = lang.split(g.O)
    for r in range(lo, hi, R, pipeline=True):
        end = lang.minimum(r + R, hi)
        if g.to_wide:
            t = lang.empty((R, W), "i8")
            for slot, off, w in g.parts:
                a = lang.load(ts[slot].reshape(g.O, w)[r:end, :])
                lang.move(t, a, w, rows=(a.shape[0], w, W), dst_at=off)
            v = wide[r:end, :]
            lang.store(v, t[0:v.shape[0]])          # (the interpreter's block holds the valid rows only)
        else:
            a = lang.load(wide[r:end, :])
            for slot, off, w in g.parts:
                p = lang.empty((a.shape[0], w), "i8")
                lang.move(p, a, w, rows=(a.shape[0], W, w), src_at=off)
                lang.store(ts[slot].reshape(g.O, w)[r:end, :], p)


ASSEMBLE_MAX = 2048           # rows shorter than this (bytes) are assembled in local memory, not moved strided


def plan_rows(card, wide, O, W, parts, to_wide):
    """A RowsGeom when rows of W bytes are short enough to assemble in local memory (and the parts are not
    whole rows already), else None (the strided copies of run_jobs)."""
    parts = tuple(p for p in parts if p[2] > 0)
    if not parts or O < 2 or W > ASSEMBLE_MAX or W > _tile_bytes(card, 4) or all(w == W for _, _, w in parts):
        return None
    R = max(1, min(O, _tile_bytes(card, 4) // W, -(-O // card.config.pes)))
    return RowsGeom(wide, O, W, parts, to_wide, R)


def run_rows(card, name, tensors, outs, g, pes=None, trace=False):
    """Launch the row-assembly kernel (slots: tensors then outs, as run_jobs)."""
    slots = list(tensors) + list(outs)
    example = [np.empty(a.shape, np.int8) for a in slots] + [None] * (NSLOTS - len(slots))
    k = _kernel(_rows, f"rows_{name}")
    key = ("plumbing_rows", name, g, tuple(e.shape for e in example if e is not None), _card_key(card))
    return launch(card, key, k, example, slots + [None] * (NSLOTS - len(slots)), [g], f"rows_{name}", pes,
                  trace)


def _prod(v):
    return int(math.prod(int(s) for s in v))


def _outer_inner(shape, d, es):
    """(rows before dim d, bytes of one index of dim d and everything after it)."""
    return _prod(shape[:d]), _prod(shape[d + 1:]) * es


def narrow(card, x, dim, start, length, pes=None, trace=False):
    """torch.narrow(x, dim, start, length): a copy of length indices of dim from start (start may be negative,
    counted from the end). Any plain dtype, bit for bit. Returns (array, result)."""
    op = "narrow"
    x = _plain(op, x)
    if x.ndim == 0:
        raise InvalidArgument(f"{op}: x must have at least one dimension")
    d = _dim(op, dim, x.ndim)
    D = x.shape[d]
    if not _is_int(start) or not _is_int(length):
        raise InvalidArgument(f"{op}: start and length must be ints, got {start!r} and {length!r}")
    start, length = int(start), int(length)
    if start < 0:
        start += D
    if not 0 <= start <= D or length < 0 or start + length > D:
        raise InvalidArgument(f"{op}: start {start} and length {length} do not fit dimension {d} of size {D}")
    return _narrow(card, x, d, start, length, op, pes, trace)


def _narrow(card, x, d, start, length, op, pes, trace):
    shape = x.shape[:d] + (length,) + x.shape[d + 1:]
    O, I = _outer_inner(x.shape, d, x.dtype.itemsize)
    D = x.shape[d]
    out = runner.Out((O * length * I,), np.int8)
    g = plan_rows(card, 0, O, D * I, ((1, start * I, length * I),), False) if O * length * I else None
    if g is not None:
        (ob,), result = run_rows(card, op, [_bytes(x)], [out], g, pes, trace)
        return ob.view(x.dtype).reshape(shape), result
    job = plan_job(card, 0, 1, O, D * I, start * I, length * I, 0, length * I)
    (ob,), result = run_jobs(card, op, [_bytes(x)], [out], [job], pes, trace)
    return ob.view(x.dtype).reshape(shape), result


def slice_(card, x, dim=0, start=None, end=None, step=1, pes=None, trace=False):
    """x[start:end] along dim (torch's aten.slice / Python slicing: None, negative and out-of-range bounds as
    Python's); step 1 only. Returns (array, result)."""
    op = "slice"
    x = _plain(op, x)
    if x.ndim == 0:
        raise InvalidArgument(f"{op}: x must have at least one dimension")
    d = _dim(op, dim, x.ndim)
    if step != 1:
        raise InvalidArgument(f"{op}: only step 1 is supported, got {step!r}")
    for v, name in ((start, "start"), (end, "end")):
        if v is not None and not _is_int(v):
            raise InvalidArgument(f"{op}: {name} must be an int or None, got {v!r}")
    s, e, _ = slice(start, end).indices(x.shape[d])
    return _narrow(card, x, d, s, max(0, e - s), op, pes, trace)


def _cat_inputs(op, tensors):
    if isinstance(tensors, np.ndarray) or not isinstance(tensors, (list, tuple)) or not tensors:
        raise InvalidArgument(f"{op}: tensors must be a non-empty list or tuple of arrays")
    xs = [_plain(op, t, f"tensors[{i}]") for i, t in enumerate(tensors)]
    for i, x in enumerate(xs):
        if x.dtype != xs[0].dtype:
            raise InvalidArgument(f"{op}: tensors[{i}] has dtype {x.dtype}, tensors[0] has {xs[0].dtype} (convert "
                                  f"first: vnpu.ops.to)")
    return xs


def cat(card, tensors, dim=0, pes=None, trace=False):
    """torch.cat(tensors, dim): arrays of one dtype and the same shape except along dim (1-D empty arrays are
    skipped, as PyTorch). Bit for bit. Returns (array, result); more than 13 inputs take several launches (the
    result is the last one's)."""
    op = "cat"
    xs = _cat_inputs(op, tensors)
    full = [x for x in xs if not (x.ndim == 1 and x.shape[0] == 0)]
    if not full:
        return np.zeros((0,), xs[0].dtype), runner.nothing(card, op, pes)
    nd = full[0].ndim
    if nd == 0:
        raise InvalidArgument(f"{op}: zero-dimensional arrays cannot be concatenated")
    d = _dim(op, dim, nd)
    for i, x in enumerate(full):
        if x.ndim != nd or x.shape[:d] != full[0].shape[:d] or x.shape[d + 1:] != full[0].shape[d + 1:]:
            raise InvalidArgument(f"{op}: shapes {full[0].shape} and {x.shape} differ outside dimension {d}")
    limit = NSLOTS - 1
    parts = [x for x in full if x.size]
    if len(parts) > limit:
        groups = [cat(card, parts[k:k + limit], d, pes, trace)[0] for k in range(0, len(parts), limit)]
        return cat(card, groups, d, pes, trace)
    shape = full[0].shape[:d] + (sum(x.shape[d] for x in full),) + full[0].shape[d + 1:]
    es = full[0].dtype.itemsize
    O, I = _outer_inner(shape, d, es)
    DW = shape[d] * I
    jobs, cols, off = [], [], 0
    for i, x in enumerate(parts):
        w = x.shape[d] * I
        jobs.append(plan_job(card, i, len(parts), O, w, 0, DW, off, w))
        cols.append((i, off, w))
        off += w
    out = runner.Out((O * DW,), np.int8)
    g = plan_rows(card, len(parts), O, DW, cols, True) if O * DW else None
    if g is not None:
        (ob,), result = run_rows(card, op, [_bytes(x) for x in parts], [out], g, pes, trace)
    else:
        (ob,), result = run_jobs(card, op, [_bytes(x) for x in parts], [out], jobs, pes, trace)
    return ob.view(full[0].dtype).reshape(shape), result


def split_sizes(op, D, split_size_or_sections):
    """The piece sizes of torch.split along a dimension of size D."""
    s = split_size_or_sections
    if _is_int(s):
        if s <= 0 and not (s == 0 and D == 0):
            raise InvalidArgument(f"{op}: split_size must be positive, got {s}")
        if D == 0:
            return [0]
        return [min(int(s), D - k) for k in range(0, D, int(s))]
    if isinstance(s, (list, tuple)) and all(_is_int(v) for v in s):
        sizes = [int(v) for v in s]
        if any(v < 0 for v in sizes) or sum(sizes) != D:
            raise InvalidArgument(f"{op}: split sizes {list(s)} must be non-negative and sum to {D}")
        return sizes
    raise InvalidArgument(f"{op}: split_size_or_sections must be an int or a list of ints, got {s!r}")


def split(card, x, split_size_or_sections, dim=0, pes=None, trace=False):
    """torch.split(x, split_size_or_sections, dim): copies of the pieces. Returns (tuple of arrays, [results]);
    13 pieces per launch."""
    op = "split"
    x = _plain(op, x)
    if x.ndim == 0:
        raise InvalidArgument(f"{op}: x must have at least one dimension")
    d = _dim(op, dim, x.ndim)
    sizes = split_sizes(op, x.shape[d], split_size_or_sections)
    O, I = _outer_inner(x.shape, d, x.dtype.itemsize)
    SW = x.shape[d] * I
    starts = np.cumsum([0] + sizes[:-1]).tolist()
    pieces = [None] * len(sizes)
    todo = [k for k in range(len(sizes)) if sizes[k] * O * I > 0]
    for k in range(len(sizes)):
        if k not in todo:
            pieces[k] = np.zeros(x.shape[:d] + (sizes[k],) + x.shape[d + 1:], x.dtype)
    results = []
    xb = _bytes(x)
    limit = NSLOTS - 1
    for g0 in range(0, len(todo), limit):
        group = todo[g0:g0 + limit]
        jobs = [plan_job(card, 0, 1 + m, O, SW, starts[k] * I, sizes[k] * I, 0, sizes[k] * I)
                for m, k in enumerate(group)]
        outs = [runner.Out((O * sizes[k] * I,), np.int8) for k in group]
        g = plan_rows(card, 0, O, SW, tuple((1 + m, starts[k] * I, sizes[k] * I) for m, k in enumerate(group)),
                      False)
        if g is not None:
            got, result = run_rows(card, op, [xb], outs, g, pes, trace)
        else:
            got, result = run_jobs(card, op, [xb], outs, jobs, pes, trace)
        for k, ob in zip(group, got):
            pieces[k] = ob.view(x.dtype).reshape(x.shape[:d] + (sizes[k],) + x.shape[d + 1:])
        results.append(result)
    if not results:
        results.append(runner.nothing(card, op, pes))
    return tuple(pieces), results


# --- permute ------------------------------------------------------------------------------------------------------
def collapse_permutation(shape, perm):
    """(S, P): shape and permutation with size-1 dims dropped and input dims that stay adjacent and in order
    merged; the output is the input's dims P[0], P[1], ... of S."""
    keep = [d for d in range(len(shape)) if shape[d] != 1]
    rank = {d: i for i, d in enumerate(keep)}
    S = [int(shape[d]) for d in keep]
    P = [rank[d] for d in perm if d in rank]
    groups = []
    for d in P:
        if groups and groups[-1][-1] + 1 == d:
            groups[-1].append(d)
        else:
            groups.append([d])
    order = sorted(range(len(groups)), key=lambda k: groups[k][0])
    pos = {k: i for i, k in enumerate(order)}
    return tuple(_prod(S[d] for d in groups[k]) for k in order), tuple(pos[k] for k in range(len(groups)))


@dataclass(frozen=True)
class PGeom:
    S: tuple           # unit dims, input order
    P: tuple           # output dims as input dims
    E: int             # bytes per unit
    mode: str          # "rows": blocks of R units; "units": transfers of R-byte chunks; "slab": transposed blocks
    R: int             # rows: units per block; units: bytes per chunk; slab: units of the output's last dim
    C: int = 1         # slab: units of the input's last dim per block

    @property
    def OS(self):
        return tuple(self.S[p] for p in self.P)


def _unravel(o, dims):
    """Coordinates of index o (a card integer) over dims (the last fastest)."""
    cs = []
    for k in reversed(range(len(dims))):
        cs.append(o % dims[k] if k else o)
        o = o // dims[k] if k else o
    return cs[::-1]


def _permute(x, out, g: lang.constexpr):
    """out = x permuted (PGeom g); x, out flat int8."""
    S, P, E = g.S, g.P, g.E
    n = len(S)
    q, last = P[-1], n - 1
    OS = g.OS
    if g.mode == "units":          # long units: DRAM -> DRAM chunks
        nck = -(-E // g.R)
        lo, hi = lang.split(_prod(S) * nck)
        for i in range(lo, hi):
            u = i // nck
            c0 = (i - u * nck) * g.R
            cs = _unravel(u, OS)
            src = 0
            for k in lang.static_range(n):
                src = src + cs[k] * (_prod(S[P[k] + 1:]) * E)
            left = E - c0
            d0 = u * E + c0
            s0 = src + c0
            lang.transfer(out[d0:lang.minimum(d0 + g.R, d0 + left)], x[s0:lang.minimum(s0 + g.R, s0 + left)])
    elif g.mode == "rows":         # blocks of R units: strided rows in, contiguous rows out
        nqb = -(-S[q] // g.R)
        lo, hi = lang.split(_prod(OS[:-1]) * nqb)
        xv = x.reshape(*S, E)
        ov = out.reshape(*OS, E)
        for i in range(lo, hi, pipeline=True):
            o = i // nqb
            q0 = (i - o * nqb) * g.R
            cs = _unravel(o, OS[:-1])
            qs = slice(q0, lang.minimum(q0 + g.R, S[q]))
            xi = [None] * n
            for k in lang.static_range(n - 1):
                xi[P[k]] = cs[k]
            xi[q] = qs
            lang.store(ov[tuple(cs) + (qs, slice(0, E))], lang.load(xv[tuple(xi) + (slice(0, E),)]))
    else:                          # slab: Rb x Cb blocks of units transposed in local memory
        Rb, Cb = g.R, g.C
        kl = P.index(last)
        od = [p for p in P if p not in (q, last)]
        ODs = [S[d] for d in od]
        nqb, nfull = -(-S[q] // Rb), S[last] // Cb
        tail = S[last] - nfull * Cb
        xv = x.reshape(*S[:-1], S[last] * E)
        ov = out.reshape(*OS[:-1], S[q] * E)
        nouter = _prod(ODs) * nqb
        # whole Cb-unit column blocks, then the last narrower one: the move's shape is static
        for first, nb, width in ((0, nfull, Cb), (nfull, 1 if tail else 0, tail)):
            if nb:
                lo, hi = lang.split(nouter * nb)
                for i in range(lo, hi, pipeline=True):
                    i2 = i // nb
                    l0 = (i - i2 * nb + first) * Cb
                    o = i2 // nqb
                    q0 = (i2 - o * nqb) * Rb
                    cs = _unravel(o, ODs)
                    xi, oi = [None] * n, [None] * n
                    for k, d in enumerate(od):
                        xi[d] = cs[k]
                        oi[P.index(d)] = cs[k]
                    xi[q] = slice(q0, lang.minimum(q0 + Rb, S[q]))
                    xi[last] = slice(l0 * E, l0 * E + width * E)
                    oi[kl] = slice(l0, l0 + width)
                    oi[n - 1] = slice(q0 * E, lang.minimum(q0 * E + Rb * E, S[q] * E))
                    a = lang.load(xv[tuple(xi)])           # Rb x width units (fewer rows at the end of q)
                    b = lang.empty((width, Rb * E), "i8")
                    # unit (r, c) of a -> (c, r) of b: one DMA inside local memory, unit-size rows
                    lang.move(b, a, E, rows=(a.shape[0], width * E, E), planes=(width, E, Rb * E))
                    lang.store(ov[tuple(oi)], b)


def plan_permute(card, S, P, E):
    """The PGeom of a collapsed permutation (S, P) of units of E bytes (P[-1] != len(S) - 1)."""
    tile = _tile_bytes(card)
    # with a second DMA engine the transposing move (engine 0) overlaps the stores (engine 1): transposed
    # blocks beat strided rows up to 2 KiB units there (measured on the tiny card), on one engine from 512 B
    if E >= ROWS_MIN * (4 if card.config.dma.engines_per_pe > 1 else 1):
        if E > tile:
            npes = card.config.pes
            per = -(-_prod(S) * E // (2 * npes))
            return PGeom(S, P, E, "units", min(E, CHUNK_MAX, max(CHUNK_MIN, -(-per // 64) * 64)))
        return PGeom(S, P, E, "rows", max(1, min(S[P[-1]], tile // E)))
    Sq, Sl = S[P[-1]], S[-1]
    units = max(1, _tile_bytes(card, 5, SLAB_MAX) // E)
    side = max(1, math.isqrt(units))
    if Sq * Sl <= units:
        Rb, Cb = Sq, Sl
    elif Sq <= side:
        Rb, Cb = Sq, min(Sl, units // Sq)
    elif Sl <= side:
        Rb, Cb = min(Sq, units // Sl), Sl
    else:
        Rb = Cb = side
    return PGeom(S, P, E, "slab", Rb, Cb)


def _check_perm(op, dims, ndim):
    if not isinstance(dims, (list, tuple)) or not all(_is_int(d) for d in dims):
        raise InvalidArgument(f"{op}: dims must be a sequence of ints, got {dims!r}")
    if len(dims) != ndim:
        raise InvalidArgument(f"{op}: dims {tuple(dims)} has {len(dims)} entries for a tensor of {ndim} dimensions")
    n = max(1, ndim)
    for d in dims:
        if not -n <= d < n:
            raise InvalidArgument(f"{op}: dim {d} is out of range for a tensor of {ndim} dimensions")
    p = tuple(int(d) % n for d in dims) if ndim else ()
    if len(set(p)) != len(p):
        raise InvalidArgument(f"{op}: dims {tuple(dims)} repeats a dimension")
    return p


def permute(card, x, dims, pes=None, trace=False):
    """torch.permute(x, dims): x's dimension dims[k] becomes dimension k. Any rank and plain dtype, bit for bit.
    Returns (array, result)."""
    op = "permute"
    x = _plain(op, x)
    perm = _check_perm(op, dims, x.ndim)
    return _permute_host(card, x, perm, op, pes, trace)


def _permute_host(card, x, perm, op, pes, trace):
    shape = tuple(x.shape[p] for p in perm)
    if x.size == 0:
        return np.zeros(shape, x.dtype), runner.nothing(card, op, pes)
    es = x.dtype.itemsize
    S, P = collapse_permutation(x.shape + (es,), perm + (x.ndim,))
    n = x.size * es
    if P == tuple(range(len(P))):            # nothing moves: one contiguous copy
        job = plan_job(card, 0, 1, 1, n, 0, n, 0, n)
        (ob,), result = run_jobs(card, op, [_bytes(x)], [runner.Out((n,), np.int8)], [job], pes, trace)
        return ob.view(x.dtype).reshape(shape), result
    E = 1
    if P[-1] == len(S) - 1:
        E, S, P = S[-1], S[:-1], P[:-1]
    g = plan_permute(card, S, P, E)
    k = _kernel(_permute, op)
    key = ("plumbing_permute", op, g, _card_key(card))
    xb = np.empty(n, np.int8)
    example = [xb, xb]
    args = [_bytes(x), runner.Out((n,), np.int8)]
    (ob,), result = launch(card, key, k, example, args, [g], op, pes, trace)
    return ob.view(x.dtype).reshape(shape), result


def transpose(card, x, dim0=0, dim1=1, pes=None, trace=False):
    """torch.transpose(x, dim0, dim1) (for a 2-D array the defaults give x.T). Returns (array, result)."""
    op = "transpose"
    x = _plain(op, x)
    if x.ndim == 0:
        if dim0 in (0, -1) and dim1 in (0, -1):
            return x.copy(), runner.nothing(card, op, pes)
        raise InvalidArgument(f"{op}: dims out of range for a 0-d tensor")
    a, b = _dim(op, dim0, x.ndim, "dim0"), _dim(op, dim1, x.ndim, "dim1")
    perm = list(range(x.ndim))
    perm[a], perm[b] = perm[b], perm[a]
    return _permute_host(card, x, tuple(perm), op, pes, trace)


# --- pad ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PadGeom:
    """x as O planes of H rows of Wb bytes; its window rows [h0, h1), byte columns [c0, c1) lands in the output
    (O planes of Ho rows of Wo bytes) after t fill rows and l fill bytes. mode "planes": G whole planes per item;
    "bands": R interior rows per item (fill rows stored apart); "wide": row by row, transfers."""
    O: int
    H: int
    Wb: int
    h0: int
    h1: int
    c0: int
    c1: int
    t: int
    b: int
    l: int
    r: int
    F: int             # bytes of the fill pattern tensor
    mode: str
    G: int = 1
    R: int = 1

    @property
    def Hc(self):
        return self.h1 - self.h0

    @property
    def Wc(self):
        return self.c1 - self.c0

    @property
    def Ho(self):
        return self.t + self.Hc + self.b

    @property
    def Wo(self):
        return self.l + self.Wc + self.r


def _fill_rows(out, frow, g, o):
    """The t top and b bottom fill rows of output plane o (contiguous runs), from the F-byte fill tile."""
    base = o * (g.Ho * g.Wo)
    for r0, nr in ((0, g.t), (g.t + g.Hc, g.b)):
        for c in lang.static_range(0, nr * g.Wo, g.F):
            w = min(g.F, nr * g.Wo - c)
            d0 = base + r0 * g.Wo + c
            lang.store(out[d0:d0 + w], frow[0:w])


def _pad(x, fill, out, g: lang.constexpr):
    """out = x padded (PadGeom g); x, fill, out flat int8 (fill: the value's bytes repeated)."""
    Hc, Wc, Ho, Wo, H = g.Hc, g.Wc, g.Ho, g.Wo, g.H
    frow = lang.load(fill)
    x2 = x.reshape(g.O * H, g.Wb) if Hc > 0 and Wc > 0 else None     # (an empty window: x is a stand-in)
    o2 = out.reshape(g.O * Ho, Wo)
    if g.mode == "planes":
        G = g.G
        lo, hi = lang.split(g.O)
        t = lang.empty((G * Ho, Wo), "i8")
        lang.move(t, frow, Wo, rows=(G * Ho, 0, Wo))                      # every byte the fill value, once:
        for p in range(lo, hi, G, pipeline=True):                         # the windows land on the same bytes
            pend = lang.minimum(p + G, hi)
            if Hc > 0 and Wc > 0:
                a = lang.load(x2[p * H:lang.minimum(p * H + G * H, pend * H), :])   # whole planes: one run
                # the window of each plane into place: Hc rows of Wc bytes, G planes, one DMA
                lang.move(t, a, Wc, rows=(Hc, g.Wb, Wo), planes=(a.shape[0] // H, H * g.Wb, Ho * Wo),
                          src_at=g.h0 * g.Wb + g.c0, dst_at=g.t * Wo + g.l)
            v = o2[p * Ho:lang.minimum(p * Ho + G * Ho, pend * Ho), :]
            lang.store(v, t[0:v.shape[0]])          # (the interpreter's block holds the valid rows only)
    elif g.mode == "bands":
        R = g.R
        nb = -(-Hc // R)
        lo, hi = lang.split(g.O * nb)
        for i in range(lo, hi, pipeline=True):
            o = i // nb
            y0 = (i - o * nb) * R
            s0 = o * H + g.h0 + y0
            d0 = o * Ho + g.t + y0
            dst = o2[d0:lang.minimum(d0 + R, o * Ho + g.t + Hc), :]
            if Wc == 0:
                t = lang.empty((R, Wo), "i8")
                lang.move(t, frow, Wo, rows=(R, 0, Wo))
                lang.store(dst, t[0:dst.shape[0]])
            elif g.l == 0 and g.r == 0:
                lang.store(dst, lang.load(x2[s0:lang.minimum(s0 + R, o * H + g.h1), g.c0:g.c1]))
            else:
                a = lang.load(x2[s0:lang.minimum(s0 + R, o * H + g.h1), g.c0:g.c1])
                t = lang.empty((a.shape[0], Wo), "i8")
                lang.move(t, frow, Wo, rows=(a.shape[0], 0, Wo))
                lang.move(t, a, Wc, rows=(a.shape[0], Wc, Wo), dst_at=g.l)
                lang.store(dst, t)
        if g.t or g.b:
            lo, hi = lang.split(g.O)
            for o in range(lo, hi):
                _fill_rows(out, frow, g, o)
    else:                                   # wide rows: DRAM -> DRAM by transfer, fill stored in pieces
        lo, hi = lang.split(g.O * Hc)
        for i in range(lo, hi):
            o = i // Hc
            y = i - o * Hc
            d0 = (o * Ho + g.t + y) * Wo
            s0 = (o * H + g.h0 + y) * g.Wb + g.c0
            for c in lang.static_range(0, Wc, CHUNK_MAX):
                w = min(CHUNK_MAX, Wc - c)
                lang.transfer(out[d0 + g.l + c:d0 + g.l + c + w], x[s0 + c:s0 + c + w])
            for at, nbytes in ((0, g.l), (g.l + Wc, g.r)):
                for c in lang.static_range(0, nbytes, g.F):
                    w = min(g.F, nbytes - c)
                    lang.store(out[d0 + at + c:d0 + at + c + w], frow[0:w])
        if g.t or g.b:
            lo, hi = lang.split(g.O)
            for o in range(lo, hi):
                _fill_rows(out, frow, g, o)


FILL_MAX = 16384               # bytes of the fill pattern tile (top / bottom fill rows go out in pieces this long)


def plan_pad(card, O, H, Wb, h0, h1, c0, c1, t, b, l, r, es):
    Hc, Wc = h1 - h0, c1 - c0
    Ho, Wo = t + Hc + b, l + Wc + r
    tile = _tile_bytes(card)
    npes = card.config.pes
    if Wo > tile or Wc > tile:
        F = max(es, min(max(l, r, t * Wo, b * Wo, es), FILL_MAX) // es * es)
        return PadGeom(O, H, Wb, h0, h1, c0, c1, t, b, l, r, F, "wide")
    plane = max(Ho * Wo, H * Wb)
    if plane <= tile:
        G = max(1, min(tile // plane, -(-O // npes), 256))
        return PadGeom(O, H, Wb, h0, h1, c0, c1, t, b, l, r, Wo, "planes", G=G)
    R = max(1, min(Hc, tile // max(Wo, 1)))
    F = max(Wo, min(max(t, b) * Wo, FILL_MAX // Wo * Wo))
    return PadGeom(O, H, Wb, h0, h1, c0, c1, t, b, l, r, F, "bands", R=R)


def pad(card, x, pad, mode="constant", value=None, pes=None, trace=False):
    """torch.nn.functional.pad(x, pad, mode="constant", value): pad = (left, right) for the last dim or (left,
    right, top, bottom) for the last two; negative entries crop. value (default 0) is converted to x's dtype
    (as PyTorch); every byte moves by DMA, so NaN, -0.0 and the fill's bits are exact. Returns (array, result)."""
    op = "pad"
    x = _plain(op, x)
    if mode != "constant":
        raise InvalidArgument(f"{op}: only mode='constant' is supported, got {mode!r}")
    if not isinstance(pad, (list, tuple)) or len(pad) not in (2, 4) or not all(_is_int(v) for v in pad):
        raise InvalidArgument(f"{op}: pad must be (left, right) or (left, right, top, bottom) ints, got {pad!r}")
    if x.ndim < len(pad) // 2:
        raise InvalidArgument(f"{op}: pad {tuple(pad)} pads {len(pad) // 2} dims of a {x.ndim}-D tensor")
    if value is None:
        value = 0
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidArgument(f"{op}: value must be a number, got {value!r}")
    with np.errstate(all="ignore"):
        v = np.array(value).astype(x.dtype) if x.dtype.kind != "b" else np.array(bool(value))
    l, r = int(pad[0]), int(pad[1])
    t, b = (int(pad[2]), int(pad[3])) if len(pad) == 4 else (0, 0)
    es = x.dtype.itemsize
    W = x.shape[-1]
    H = x.shape[-2] if len(pad) == 4 else 1
    lead = x.shape[:-2] if len(pad) == 4 else x.shape[:-1]
    O = _prod(lead)
    h0, h1 = max(0, -t), H - max(0, -b)
    w0, w1 = max(0, -l), W - max(0, -r)
    if h1 < h0 or w1 < w0:
        raise InvalidArgument(f"{op}: pad {tuple(pad)} crops more than the {H} x {W} input")
    t, b, l, r = max(t, 0), max(b, 0), max(l, 0), max(r, 0)
    Ho, Wo = t + h1 - h0 + b, l + w1 - w0 + r
    shape = lead + ((Ho,) if len(pad) == 4 else ()) + (Wo,)
    if O * Ho * Wo == 0:
        return np.zeros(shape, x.dtype), runner.nothing(card, op, pes)
    g = plan_pad(card, O, H, W * es, h0, h1, w0 * es, w1 * es, t, b, l * es, r * es, es)
    fill = np.full(g.F // es, v, x.dtype).view(np.int8)
    xb = _bytes(x) if x.size else np.zeros(1, np.int8)
    k = _kernel(_pad, op)
    key = ("plumbing_pad", g, _card_key(card))
    n = O * Ho * Wo * es
    example = [np.empty(max(1, x.size * es), np.int8), fill, np.empty(n, np.int8)]
    (ob,), result = launch(card, key, k, example, [xb, fill, runner.Out((n,), np.int8)], [g], op, pes, trace)
    return ob.view(x.dtype).reshape(shape), result


def reference_pad(x, pad, value=0):
    """numpy: negative pads crop, then constant padding (the value cast to x's dtype)."""
    x = np.asarray(x)
    l, r = pad[0], pad[1]
    t, b = (pad[2], pad[3]) if len(pad) == 4 else (0, 0)
    sl = [slice(None)] * x.ndim
    sl[-1] = slice(max(0, -l), x.shape[-1] - max(0, -r))
    if len(pad) == 4:
        sl[-2] = slice(max(0, -t), x.shape[-2] - max(0, -b))
    y = x[tuple(sl)]
    widths = [(0, 0)] * x.ndim
    widths[-1] = (max(l, 0), max(r, 0))
    if len(pad) == 4:
        widths[-2] = (max(t, 0), max(b, 0))
    with np.errstate(all="ignore"):
        v = np.array(0 if value is None else value).astype(x.dtype)
    out = np.full(tuple(s + a + c for s, (a, c) in zip(y.shape, widths)), v, x.dtype)
    inner = tuple(slice(a, a + s) for s, (a, _) in zip(y.shape, widths))
    out[inner] = y
    return out


# --- cast -----------------------------------------------------------------------------------------------------------
CAST_DTYPES = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16", np.dtype(np.int8): "i8",
               np.dtype(np.int32): "i32"}
BIG = 2.0 ** 100              # (d * BIG) * BIG is at least 1 in magnitude for every nonzero fp32 d


def _cast(x: lang.anysize, out: lang.anysize, n, g: lang.constexpr):
    """out[:n] = x[:n] converted (g = (mode, T)): "cvt" one vcvt; "trunc" a float to an integer rounded toward
    zero; "wrap" int32 -> int8 keeping the low byte (x is the int32 data's bytes)."""
    mode, T = g
    lo, hi = lang.split(n, align=64)
    for i in range(lo, hi, T, pipeline=True):
        end = lang.minimum(i + T, hi)
        if mode == "wrap":
            a = lang.load(x[4 * i:lang.minimum(4 * i + 4 * T, 4 * hi)])
            b = lang.empty((a.shape[0] // 4,), "i8")
            lang.move(b, a, 1, rows=(a.shape[0] // 4, 4, 1))              # byte 0 of every word
            lang.store(out[i:end], b)
        elif mode == "cvt":
            lang.store(out[i:end], lang.load(x[i:end]).astype(out.dtype))
        else:
            t = lang.load(x[i:end])
            f = t if x.dtype == "f32" else t.astype("f32")
            y = f.astype("i32").astype("f32")                             # round half to even (saturated)
            d = lang.sub(y, f)                                            # exact: |d| <= 0.5
            # rounded away from zero (d and f of one sign, d != 0): step back by sign(d)
            away = lang.minimum(lang.maximum(lang.mul(lang.mul(lang.mul(d, f), BIG), BIG), 0.0), 1.0)
            sign = lang.minimum(lang.maximum(lang.mul(lang.mul(d, BIG), BIG), -1.0), 1.0)
            lang.store(out[i:end], lang.sub(y, lang.mul(away, sign)).astype(out.dtype))


def _stream_tile(card, per, n):
    """Elements per tile of a streaming kernel whose tiles take `per` bytes per element (double-buffered): at
    most 16384, and no more than one PE's share of n (rounded up to 64)."""
    fit = (int(card.config.local_memory.bytes) - RESERVE) // (2 * per) // 64 * 64
    share = -(-n // card.config.pes)
    return int(max(64, min(fit, 16384, -(-share // 64) * 64)))


def cast_mode(src, dst):
    """How the card converts numpy dtype src to dst: "copy", "cvt", "trunc" or "wrap"."""
    if src == dst:
        return "copy"
    if src.kind == "f" and dst.kind == "i":
        return "trunc"
    if src == np.int32 and dst == np.int8:
        return "wrap"
    return "cvt"


def to(card, x, dtype, pes=None, trace=False):
    """x.to(dtype) (numpy's astype) between float32, float16, int8 and int32, as PyTorch converts: floats round
    to nearest even (overflow to +-inf, NaN stays NaN, quieted), float -> int rounds toward zero, int32 -> int8
    keeps the low byte (wraps), int8 -> int32 and int -> float exact or rounded to nearest. A float out of the
    integer's range saturates and NaN gives 0 (undefined behaviour in PyTorch: on x86 it gives INT_MIN for int32
    and the low byte of the int32 conversion for int8). Returns (array, result)."""
    op = "to"
    x = _plain(op, x)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise InvalidArgument(f"{op}: dtype {dtype!r} is not a dtype") from None
    if x.dtype not in CAST_DTYPES or dt not in CAST_DTYPES:
        raise InvalidArgument(f"{op}: converts between float32, float16, int8 and int32, got {x.dtype} -> {dt}")
    if x.size == 0:
        return np.zeros(x.shape, dt), runner.nothing(card, op, pes)
    mode = cast_mode(x.dtype, dt)
    n = x.size
    if mode == "copy":
        nb = n * x.dtype.itemsize
        (ob,), result = run_jobs(card, op, [_bytes(x)], [runner.Out((nb,), np.int8)],
                                 [plan_job(card, 0, 1, 1, nb, 0, nb, 0, nb)], pes, trace)
        return ob.view(dt).reshape(x.shape), result
    # bytes per element of the tiles live in one iteration (trunc: about ten fp32 temporaries), double-buffered
    per = {"wrap": 4 + 1, "cvt": x.dtype.itemsize + dt.itemsize, "trunc": x.dtype.itemsize + dt.itemsize + 40}[mode]
    T = _stream_tile(card, per, n)
    k = _kernel(_cast, f"to_{CAST_DTYPES[x.dtype]}_{CAST_DTYPES[dt]}")
    key = ("plumbing_to", mode, x.dtype.str, dt.str, T, _card_key(card))
    xin = _bytes(x) if mode == "wrap" else np.ascontiguousarray(x).reshape(-1)
    example = [np.empty(0, xin.dtype), np.empty(0, dt), 0]
    (out,), result = launch(card, key, k, example, [xin, runner.Out((n,), dt), n], [(mode, T)], k.name, pes, trace)
    return out.reshape(x.shape), result


def reference_to(x, dtype):
    """numpy: PyTorch's conversions (float -> int toward zero, saturated, NaN -> 0; int32 -> int8 wraps)."""
    x, dt = np.asarray(x), np.dtype(dtype)
    if x.dtype.kind == "f" and dt.kind == "i":
        info = np.iinfo(dt)
        with np.errstate(invalid="ignore"):
            v = np.trunc(x.astype(np.float64))
            v = np.where(np.isnan(v), 0, np.clip(v, info.min, info.max))
        return v.astype(dt)
    with np.errstate(over="ignore", invalid="ignore"):
        return x.astype(dt)


# --- where ----------------------------------------------------------------------------------------------------------
def _where(c: lang.anysize, a: lang.anysize, b: lang.anysize, out: lang.anysize, n, g: lang.constexpr):
    """out = c ? a : b on raw bits (g = (unit, k, T, a_row, b_row)): the elements are k units (int32 words or
    bytes) each, c holds 0 / 1 per element; out = b + c * (a - b) in two's-complement arithmetic, which wraps
    back to a's bits exactly where c is 1 (no compare, no float rounding). a_row / b_row: a (or b) is one value,
    given as a row of T * k units repeated."""
    unit, k, T, a_row, b_row = g
    lo, hi = lang.split(n, align=64)
    ar = lang.load(a[0:T * k]) if a_row else None
    br = lang.load(b[0:T * k]) if b_row else None
    for i in range(lo, hi, T, pipeline=True):
        end = lang.minimum(i + T, hi)
        ct = lang.load(c[i:end])
        if unit == "i32":
            ct = ct.astype("i32")
        if k > 1:                       # each element's condition repeated over its k units
            m = lang.empty((ct.shape[0] * k,), unit)
            lang.move(m, ct, 1, rows=(ct.shape[0], 1, k), planes=(k, 0, 1))
        else:
            m = ct
        size = m.shape[0]
        av = ar[0:size] if a_row else lang.load(a[k * i:lang.minimum(k * i + k * T, k * hi)])
        bv = br[0:size] if b_row else lang.load(b[k * i:lang.minimum(k * i + k * T, k * hi)])
        d = lang.sub(av, bv)
        lang.mul(d, m, out=d)
        lang.store(out[k * i:lang.minimum(k * i + k * T, k * hi)], lang.add(bv, d, out=d))


def where(card, condition, a, b, pes=None, trace=False):
    """torch.where(condition, a, b): a where condition is true, else b. condition: a bool array; a, b: arrays of
    condition's shape and one dtype, or numbers (taking the other's dtype, or float32). Any plain dtype; the
    selected bits are exact. Returns (array, result)."""
    op = "where"
    cond = np.asarray(condition)
    if cond.dtype != np.bool_:
        raise InvalidArgument(f"{op}: condition must be a bool array, got dtype {cond.dtype}")
    num = (bool, np.bool_, int, float, np.integer, np.floating)
    arrays = [v for v in (a, b) if not isinstance(v, num)]
    arrays = [_plain(op, v, "a" if v is a else "b") for v in arrays]
    dt = arrays[0].dtype if arrays else np.dtype(np.float32)
    vals = []
    for v, name in ((a, "a"), (b, "b")):
        if isinstance(v, num):
            with np.errstate(all="ignore"):
                vals.append((None, np.array(v).astype(dt)))
        else:
            v = _plain(op, v, name)
            if v.dtype != dt:
                raise InvalidArgument(f"{op}: a and b must have one dtype, got {np.asarray(a).dtype} and "
                                      f"{np.asarray(b).dtype}")
            if v.shape != cond.shape:
                raise InvalidArgument(f"{op}: {name} has shape {v.shape}, condition {cond.shape}: broadcast them "
                                      f"first (only numbers broadcast here)")
            vals.append((v, None))
    n = cond.size
    if n == 0:
        return np.zeros(cond.shape, dt), runner.nothing(card, op, pes)
    es = dt.itemsize
    unit, k = ("i32", es // 4) if es % 4 == 0 else ("i8", es)
    unp = np.int32 if unit == "i32" else np.int8
    per = 1 + 4 * k * (4 if unit == "i32" else 1) + 4
    T = _stream_tile(card, per, n)
    rows = tuple(s is not None for _, s in vals)
    args, example = [cond.reshape(-1).view(np.int8)], [np.empty(0, np.int8)]
    for v, s in vals:
        if s is None:
            args.append(np.ascontiguousarray(v).reshape(-1).view(unp))
            example.append(np.empty(0, unp))
        else:
            row = np.full(T, s, dt).view(unp)           # T elements: T * k units
            args.append(row)
            example.append(row)
    example += [np.empty(0, unp), 0]
    args += [runner.Out((n * k,), unp), n]
    k_ = _kernel(_where, op)
    key = ("plumbing_where", unit, k, T, rows, _card_key(card))
    (out,), result = launch(card, key, k_, example, args, [(unit, k, T) + rows], op, pes, trace)
    return out.view(dt).reshape(cond.shape), result


def reference_where(condition, a, b):
    return np.where(condition, a, b)


# --- gather / index_select --------------------------------------------------------------------------------------------
EMB_DIM_MAX = 65536           # elements per row of an embedding lookup


@dataclass(frozen=True)
class GGeom:
    N: int             # bytes of x (rows of the table: N // dim)
    dim: int           # bytes per gathered row
    nb: int            # lookups (rows of the result)
    A: int             # groups of lookups ...
    L: int             # ... of L each (lookup a * L + c reads idx[(a if per_group else 0) * L + c])
    per_group: bool    # idx holds A * L entries (gather), or L shared by every group (index_select)
    mul: int           # row = idx * mul + base
    T: int


def _gather(x, table, idx, base, offs, ridx, eout, out, g: lang.constexpr):
    """Gather rows of `dim` bytes of x: out[p] = x row (idx[p'] * mul + base[p]), on the card's embedding unit.
    The unit sums rows in fp32 from zero (which would turn -0.0 into 0.0 and quiet NaNs), so it gathers codes
    instead: every byte of x as an fp16 number (-128..127, exact), converted back to bytes after the lookup."""
    N, dim, nb, A, L, T = g.N, g.dim, g.nb, g.A, g.L, g.T
    lo, hi = lang.split(N, align=64)
    for i in range(lo, hi, T, pipeline=True):                          # 1. the table of byte codes
        end = lang.minimum(i + T, hi)
        lang.store(table[i:end], lang.load(x[i:end]).astype("f16"))
    if g.per_group:                                                    # 2. the table row of every lookup
        lo, hi = lang.split(nb, align=64)
        for i in range(lo, hi, T, pipeline=True):
            end = lang.minimum(i + T, hi)
            t = lang.load(idx[i:end])
            if g.mul != 1:
                t = lang.mul(t, g.mul)
            lang.store(ridx[i:end], lang.add(t, lang.load(base[i:end])))
    else:
        nc = -(-L // T)
        lo, hi = lang.split(A * nc)
        for i in range(lo, hi, pipeline=True):
            a = i // nc
            c0 = (i - a * nc) * T
            p0 = a * L + c0
            t = lang.load(idx[c0:lang.minimum(c0 + T, L)])
            if g.mul != 1:
                t = lang.mul(t, g.mul)
            lang.store(ridx[p0:lang.minimum(p0 + T, a * L + L)],
                       lang.add(t, lang.load(base[p0:lang.minimum(p0 + T, a * L + L)])))
    lang.barrier()
    if lang.pe_id() == 0:                                              # 3. one lookup per row (the card's unit)
        lang.embedding_bag(table.reshape(N // dim, dim), ridx, offs, eout.reshape(nb, dim))
    lang.barrier()
    M = nb * dim
    lo, hi = lang.split(M, align=64)
    for i in range(lo, hi, T, pipeline=True):                          # 4. codes back to bytes
        end = lang.minimum(i + T, hi)
        lang.store(out[i:end], lang.load(eout[i:end]).astype("i8"))


def _run_gather(card, op, x, dim, nb, A, L, per_group, mul, idx32, base, shape, pes, trace):
    N = x.size * x.dtype.itemsize
    T = _stream_tile(card, 4 + 4 + 4, max(N, nb * dim))
    g = GGeom(N, dim, nb, A, L, per_group, mul, T)
    k = _kernel(_gather, op)
    key = ("plumbing_gather", op, g, _card_key(card))
    offs = np.arange(nb, dtype=np.int32)
    example = [np.empty(N, np.int8), np.empty(N, np.float16), idx32, base, offs, np.empty(nb, np.int32),
               np.empty(nb * dim, np.float32), np.empty(nb * dim, np.int8)]
    args = [_bytes(x), runner.Scratch(2 * N), idx32, base, offs, runner.Scratch(4 * nb),
            runner.Scratch(4 * nb * dim), runner.Out((nb * dim,), np.int8)]
    (ob,), result = launch(card, key, k, example, args, [g], op, pes, trace)
    return ob.view(x.dtype).reshape(shape), result


def _index_array(op, index, name="index"):
    idx = np.asarray(index)
    if idx.dtype.kind not in "iu":
        raise InvalidArgument(f"{op}: {name} must be an integer array, got dtype {idx.dtype}")
    return idx


def index_select(card, x, dim, index, pes=None, trace=False):
    """torch.index_select(x, dim, index): the slices x[..., index[j], ...] along dim. index: 1-D (or 0-d)
    integers in [0, x.shape[dim]). Any plain dtype, bit for bit (see _gather). Returns (array, result)."""
    op = "index_select"
    x = _plain(op, x)
    idx = _index_array(op, index)
    if idx.ndim > 1:
        raise InvalidArgument(f"{op}: index must be 1-D, got shape {idx.shape}")
    idx = idx.reshape(-1)
    nd = max(1, x.ndim)
    d = _dim(op, dim, x.ndim)
    xs = x.reshape(x.shape or (1,))
    D = xs.shape[d]
    if idx.size and (idx.min() < 0 or idx.max() >= D):
        raise InvalidArgument(f"{op}: index out of range for dimension {d} of size {D}")
    shape = xs.shape[:d] + (idx.size,) + xs.shape[d + 1:]
    if x.ndim == 0:
        shape = () if index is not None and np.asarray(index).ndim == 0 else (idx.size,)
    O, I = _outer_inner(xs.shape, d, x.dtype.itemsize)
    n = idx.size
    if O * n * I == 0:
        return np.zeros(shape, x.dtype), runner.nothing(card, op, pes)
    if I > EMB_DIM_MAX:
        raise InvalidArgument(f"{op}: slices of {I} bytes; the embedding unit gathers rows of at most "
                              f"{EMB_DIM_MAX} (use narrow for each index)")
    base = np.repeat(np.arange(O, dtype=np.int64) * D, n).astype(np.int32)
    del nd
    return _run_gather(card, op, x, I, O * n, O, n, False, 1, idx.astype(np.int32), base, shape, pes, trace)


def gather(card, x, dim, index, pes=None, trace=False):
    """torch.gather(x, dim, index): out[p] = x[p with its dim coordinate replaced by index[p]]; index has x's rank
    and sizes at most x's outside dim, integers in [0, x.shape[dim]). Any plain dtype, bit for bit (see
    _gather: one element per lookup). Returns (array, result)."""
    op = "gather"
    x = _plain(op, x)
    idx = _index_array(op, index)
    xs = x.reshape(x.shape or (1,))
    ids = idx.reshape(idx.shape or (1,))
    if ids.ndim != xs.ndim:
        raise InvalidArgument(f"{op}: index has {idx.ndim} dimensions, x has {x.ndim}")
    d = _dim(op, dim, x.ndim)
    for k in range(xs.ndim):
        if k != d and ids.shape[k] > xs.shape[k]:
            raise InvalidArgument(f"{op}: index size {ids.shape[k]} exceeds x's {xs.shape[k]} in dimension {k}")
    D = xs.shape[d]
    if ids.size and (ids.min() < 0 or ids.max() >= D):
        raise InvalidArgument(f"{op}: index out of range for dimension {d} of size {D}")
    shape = idx.shape
    if idx.size == 0:
        return np.zeros(shape, x.dtype), runner.nothing(card, op, pes)
    if x.size == 0:
        raise InvalidArgument(f"{op}: x is empty but index is not")
    # the x offset of every output position with its dim coordinate set to 0: from the shapes alone
    strides = [_prod(xs.shape[k + 1:]) for k in range(xs.ndim)]
    coords = np.indices(ids.shape, dtype=np.int64)
    base = np.zeros(ids.shape, np.int64)
    for k in range(xs.ndim):
        if k != d:
            base += coords[k] * strides[k]
    base = base.reshape(-1).astype(np.int32)
    nb = ids.size
    return _run_gather(card, op, x, x.dtype.itemsize, nb, 1, nb, True, strides[d],
                       ids.reshape(-1).astype(np.int32), base, shape, pes, trace)


def reference_index_select(x, dim, index):
    return np.take(np.asarray(x), np.asarray(index).reshape(-1), axis=dim)


def reference_gather(x, dim, index):
    """numpy: out[p] = x[p with coordinate dim replaced by index[p]] (index may be smaller than x elsewhere)."""
    x, index = np.asarray(x), np.asarray(index, np.int64)
    coords = list(np.indices(index.shape))
    coords[dim % max(1, x.ndim)] = index
    return x[tuple(coords)] if x.ndim else x.reshape(1)[index]


# --- reshape / view: host-side -------------------------------------------------------------------------------------
def _shape_arg(op, shape):
    if len(shape) == 1 and isinstance(shape[0], (list, tuple)):
        shape = tuple(shape[0])
    if not all(_is_int(s) for s in shape):
        raise InvalidArgument(f"{op}: the shape must be ints, got {shape!r}")
    if any(s < -1 for s in shape) or sum(s == -1 for s in shape) > 1:
        raise InvalidArgument(f"{op}: sizes must be non-negative, with at most one -1, got {shape!r}")
    return tuple(int(s) for s in shape)


def reshape(x, shape):
    """torch.reshape: no data moves on the card for a contiguous array (a numpy view); a non-contiguous one is
    made contiguous by numpy first (PyTorch copies too)."""
    x = _plain("reshape", x)
    if not _is_int(shape) and not isinstance(shape, (list, tuple)):
        raise InvalidArgument(f"reshape: shape must be an int or a sequence of ints, got {shape!r}")
    shape = _shape_arg("reshape", (shape,) if _is_int(shape) else tuple(shape))
    try:
        return np.ascontiguousarray(x).reshape(shape)
    except ValueError as e:
        raise InvalidArgument(f"reshape: {e}") from None


def view(x, *shape):
    """torch.Tensor.view: the same bytes with another shape (x must be contiguous, as PyTorch's view needs)."""
    x = _plain("view", x)
    shape = _shape_arg("view", shape)
    if not x.flags.c_contiguous:
        raise InvalidArgument("view: x is not contiguous; use reshape (which copies), as in PyTorch")
    try:
        return x.reshape(shape)
    except ValueError as e:
        raise InvalidArgument(f"view: {e}") from None


# --- the op registry (`vnpu op NAME`) ------------------------------------------------------------------------------
DTYPE_NAMES = {"fp32": np.float32, "fp16": np.float16, "int8": np.int8, "int32": np.int32}


def _shape(text):
    try:
        s = tuple(int(v) for v in str(text).split("x") if v != "")
    except ValueError:
        raise InvalidArgument(f"a shape is sizes joined by x (8x64x56x56), got {text!r}") from None
    if any(v < 0 for v in s):
        raise InvalidArgument(f"a shape has non-negative sizes, got {text!r}")
    return s


def _ints(text):
    try:
        return tuple(int(v) for v in str(text).split(",") if v.strip() != "")
    except ValueError:
        raise InvalidArgument(f"a list of ints joined by commas, got {text!r}") from None


def _random(rng, shape, dtype):
    dt = np.dtype(DTYPE_NAMES.get(dtype, dtype))
    if dt.kind == "f":
        return (rng.standard_normal(shape) * 3).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, int(info.max) + 1, shape, dtype=np.int64).astype(dt)


def _spec(name, params, make, run, ref, doc, choices=None):
    return OpSpec(name, params, make, run, ref, lambda p: (0.0, 0.0), lambda p: 0, doc,
                  {"dtype": tuple(DTYPE_NAMES), **(choices or {})})


def _one(f):
    def run(card, x, p, pes):
        out, result = f(card, x, p, pes)
        return [out], result
    return run


def _cat_inputs_spec(rng, p):
    return {"a": _random(rng, _shape(p["a"]), p["dtype"]), "b": _random(rng, _shape(p["b"]), p["dtype"])}


def _split_run(card, x, p, pes):
    pieces, results = split(card, x["x"], list(_ints(p["sizes"])), p["dim"], pes=pes)
    return list(pieces), results[-1]


def _gather_inputs(rng, p):
    x = _random(rng, _shape(p["x"]), p["dtype"])
    shape = list(x.shape)
    d = p["dim"] % x.ndim
    shape[d] = p["k"]
    return {"x": x, "index": rng.integers(0, x.shape[d], shape)}


def _index_select_inputs(rng, p):
    x = _random(rng, _shape(p["x"]), p["dtype"])
    return {"x": x, "index": rng.integers(0, x.shape[p["dim"] % x.ndim], p["k"])}


def _where_inputs(rng, p):
    shape = _shape(p["x"])
    return {"condition": rng.random(shape) < 0.5, "a": _random(rng, shape, p["dtype"]),
            "b": _random(rng, shape, p["dtype"])}


OPS = [
    _spec("permute", dict(x="8x64x56x56", dims="0,2,3,1", dtype="fp32"),
          lambda rng, p: {"x": _random(rng, _shape(p["x"]), p["dtype"])},
          _one(lambda card, x, p, pes: permute(card, x["x"], _ints(p["dims"]), pes=pes)),
          lambda x, p: [np.ascontiguousarray(np.transpose(x["x"], _ints(p["dims"])))],
          "torch.permute by DMA (blocks transposed in local memory when the last dim moves); any dtype"),
    _spec("narrow", dict(x="64x256x56", dim=1, start=10, length=100, dtype="fp32"),
          lambda rng, p: {"x": _random(rng, _shape(p["x"]), p["dtype"])},
          _one(lambda card, x, p, pes: narrow(card, x["x"], p["dim"], p["start"], p["length"], pes=pes)),
          lambda x, p: [np.take(x["x"], range(p["start"], p["start"] + p["length"]), axis=p["dim"])],
          "torch.narrow (x[a:b] along a dim) by strided DMA blocks or DRAM-to-DRAM transfers"),
    _spec("cat", dict(a="64x128x56", b="64x64x56", dim=1, dtype="fp32"), _cat_inputs_spec,
          _one(lambda card, x, p, pes: cat(card, [x["a"], x["b"]], p["dim"], pes=pes)),
          lambda x, p: [np.concatenate([x["a"], x["b"]], p["dim"])],
          "torch.cat of two arrays along any dim, each straight into its block of the result by DMA"),
    _spec("split", dict(x="64x256x56", sizes="64,128,64", dim=1, dtype="fp32"),
          lambda rng, p: {"x": _random(rng, _shape(p["x"]), p["dtype"])}, _split_run,
          lambda x, p: list(np.split(x["x"], np.cumsum(_ints(p["sizes"]))[:-1], p["dim"])),
          "torch.split by sizes along any dim, by DMA"),
    _spec("pad", dict(x="8x64x56x56", pad="1,1,1,1", value=0.0, dtype="fp32"),
          lambda rng, p: {"x": _random(rng, _shape(p["x"]), p["dtype"])},
          _one(lambda card, x, p, pes: pad(card, x["x"], _ints(p["pad"]), value=p["value"], pes=pes)),
          lambda x, p: [reference_pad(x["x"], _ints(p["pad"]), p["value"])],
          "F.pad constant mode on the last one or two dims (negative pads crop), by DMA and vnpu.move"),
    _spec("to", dict(x="4096x1024", dtype="fp32", to="fp16"),
          lambda rng, p: {"x": _random(rng, _shape(p["x"]), p["dtype"])},
          _one(lambda card, x, p, pes: to(card, x["x"], DTYPE_NAMES[p["to"]], pes=pes)),
          lambda x, p: [reference_to(x["x"], DTYPE_NAMES[p["to"]])],
          "x.to(dtype) between fp32/fp16/int8/int32 with vcvt (float -> int toward zero, int32 -> int8 wraps)",
          {"to": tuple(DTYPE_NAMES)}),
    _spec("where", dict(x="4096x1024", dtype="fp32"), _where_inputs,
          _one(lambda card, x, p, pes: where(card, x["condition"], x["a"], x["b"], pes=pes)),
          lambda x, p: [np.where(x["condition"], x["a"], x["b"])],
          "torch.where(condition, a, b): an integer select on raw bits (b + c * (a - b), wrapping)"),
    _spec("gather", dict(x="512x1000", dim=1, k=5, dtype="fp32"), _gather_inputs,
          _one(lambda card, x, p, pes: gather(card, x["x"], p["dim"], x["index"], pes=pes)),
          lambda x, p: [reference_gather(x["x"], p["dim"], x["index"])],
          "torch.gather: one embedding-unit lookup per element (bytes as exact fp16 codes)"),
    _spec("index_select", dict(x="8x512x768", dim=1, k=128, dtype="fp32"), _index_select_inputs,
          _one(lambda card, x, p, pes: index_select(card, x["x"], p["dim"], x["index"], pes=pes)),
          lambda x, p: [reference_index_select(x["x"], p["dim"], x["index"])],
          "torch.index_select: one embedding-unit lookup per slice (bytes as exact fp16 codes)"),
]
