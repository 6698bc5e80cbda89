"""Tensor plumbing in the kernel language: permute / transpose, slice (narrow), cat, split, pad (constant),
cast, gather / index_select and where. Each op has a numpy reference (`reference_*`) and a host function
`op(card, ...) -> (array, LaunchResult)`; vnpu.ops exposes them under PyTorch's names.

Data movement works on bytes: every tensor is passed as int8 (its bytes, a free host-side view), so any plain
dtype moves bit for bit (NaN payloads, -0.0) and an element is a run of `itemsize` bytes. Only DMA moves them
(load / store of 2-D blocks with strides, `transfer` from tensor to tensor); nothing goes through the vector
unit except cast, gather's byte codes and where's integer select.

- slice / cat / split (`_copy`): every op is a list of 2-D block copies (`Job`): a source viewed as rows of SW
  bytes, a block of C bytes at column sc of each row, to a destination of rows of DW bytes at column dc.
  Long rows go DRAM -> DRAM in chunks by `transfer` (one DMA, no local memory); short rows as blocks of rows
  through local memory (one strided load, one strided store per block). PE p takes a share of the rows or
  chunks of each job.
- permute (`_permute`): the host drops size-1 dims and merges input dims that stay adjacent and in order (the
  element's bytes are a last dim that never moves), leaving a permutation of "units" (E contiguous bytes).
  Units of at least ROWS_MIN bytes move as rows: a block of R units strided along the input, contiguous in
  the output, one load and one store. Smaller units (a real transpose of elements) go through this PE's slot
  of a scratch buffer in the shared SRAM, where a DMA has no per-row cost: a block of Rb x Cb units is loaded
  (DRAM runs along the input's last dim), then either stored into the slot and gathered column by column
  (Cb DMAs with unit-size rows) or scattered into the slot's columns row by row (Rb DMAs) and loaded back
  whole, whichever is fewer, and stored (DRAM runs along the output's last dim).
- pad: see `_pad`; cast: `_cast`; gather: `_gather`; where: `_where`.

Empty results launch nothing (runner.nothing); reshape / view is a host-side no-op on a contiguous array.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vnpu.errors import InvalidArgument

from . import lang, runner
from .library import OpSpec
from .pool import _card_key

RESERVE = 8192               # local bytes left to the compiler's constants
TILE_MAX = 65536             # bytes per tile at most (longer tiles only delay the pipeline)
CHUNK_MIN = 2048             # rows at least this long go DRAM -> DRAM by transfer (full-efficiency DRAM runs)
CHUNK_MAX = 1 << 20          # bytes per transfer at most
SLAB_MAX = 262144            # permute: bytes per transposed block at most (1 KiB DRAM runs for 4-byte units)
ROWS_MIN = 512               # permute: units at least this long move as rows, shorter ones through the SRAM
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


def launch(card, key, k, example, args, consts, name, pes, trace):
    """Compile kernel k for the example arguments (None: an absent tensor) and constexprs, once per key, and
    run it on args (the present ones) + consts. The build function carries (kernel, consts, example) so a test
    can interpret the same kernel on the same arguments."""
    def build():
        return k.compile(*example, *consts, config=card.config).image
    build.kernel, build.consts, build.example = k, tuple(consts), list(example)
    return runner.run(card, key, build, name, [a for a in args if a is not None], pes=pes, trace=trace)


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
    key = ("plumbing_copy", jobs, tuple(e.shape for e in example if e is not None), _card_key(card))
    return launch(card, key, k, example, slots + [None] * (NSLOTS - len(slots)), [jobs], f"copy_{name}", pes,
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
    job = plan_job(card, 0, 1, O, D * I, start * I, length * I, 0, length * I)
    (ob,), result = run_jobs(card, op, [_bytes(x)], [runner.Out((O * length * I,), np.int8)], [job], pes, trace)
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
    jobs, off = [], 0
    for i, x in enumerate(parts):
        w = x.shape[d] * I
        jobs.append(plan_job(card, i, len(parts), O, w, 0, DW, off, w))
        off += w
    (ob,), result = run_jobs(card, op, [_bytes(x) for x in parts], [runner.Out((O * DW,), np.int8)], jobs, pes,
                             trace)
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
    if E >= ROWS_MIN:
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
    npes = card.config.pes
    k = _kernel(_permute, op)
    key = ("plumbing_permute", g, _card_key(card))
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
