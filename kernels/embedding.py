"""The SparseLengthsSum family on the card's embedding unit: argument checks, descriptor, kernel, run.

Validation happens on the host before anything touches the card, so bad input raises InvalidArgument
naming the first offending position and the card is left as it was; the unit checks the same things
again (a kernel that builds its own descriptor gets IllegalInstruction naming the position).
"""
from __future__ import annotations

import numpy as np

from vnpu.errors import InvalidArgument
from vnpu.isa import table as T

from .reference import FORMATS, table_dim, table_row_bytes

MODES = ("sum", "mean")

KERNEL = """
; One pooled lookup: PE 0 fetches the descriptor into its local memory and starts the embedding unit.
.kernel embedding_bag
.arg desc, buffer, i64
    csrr r2, pe_id
    bne  r2, zero, done
    li   r3, 128                 ; 16 descriptor words
    dma  e0, zero, desc, r3, s0
    wait s0, 1
    emb  zero, s1
    wait s1, 1
done:
    halt
"""
_IMAGE = None


def kernel_image() -> bytes:
    global _IMAGE
    if _IMAGE is None:
        from vnpu.isa.asm import assemble
        _IMAGE = assemble(KERNEL, source="kernels/embedding.py")
    return _IMAGE


class EmbeddingArgs:
    """Checked and normalized arguments of one embedding_bag call."""

    def __init__(self, weight, indices, offsets=None, lengths=None, per_sample_weights=None, mode="sum",
                 format="fp32", include_last_offset=False, out_dtype="fp32", dim=None):
        if format not in FORMATS:
            raise InvalidArgument(f"embedding_bag: format must be one of {', '.join(FORMATS)}, got {format!r}")
        if mode not in MODES:
            raise InvalidArgument(f"embedding_bag: mode must be 'sum' or 'mean', got {mode!r}")
        if out_dtype not in ("fp32", "fp16"):
            raise InvalidArgument(f"embedding_bag: out_dtype must be 'fp32' or 'fp16', got {out_dtype!r}")
        self.format, self.mode, self.out_dtype = format, mode, out_dtype
        self.table, self.dim = self._table(weight, format, dim)
        self.rows = self.table.shape[0]
        self.indices = self._indices(indices)
        n = len(self.indices)
        if (offsets is None) == (lengths is None):
            raise InvalidArgument("embedding_bag: give exactly one of offsets (PyTorch) or lengths (Caffe2)")
        self.offsets_mode = offsets is not None
        self.include_last = bool(include_last_offset) and self.offsets_mode
        seg = np.asarray(offsets if self.offsets_mode else lengths)
        if seg.size == 0:
            seg = seg.astype(np.int64)   # an empty list reads as float64 in numpy
        if seg.ndim != 1 or not np.issubdtype(seg.dtype, np.integer):
            what = "offsets" if self.offsets_mode else "lengths"
            raise InvalidArgument(f"embedding_bag: {what} must be a 1-D integer array, got {seg.dtype} {seg.shape}")
        self.segments = seg.astype(np.int64 if seg.dtype.itemsize > 4 else np.int32)
        self.n_bags = len(seg) - 1 if self.include_last else len(seg)
        if self.include_last and len(seg) == 0:
            raise InvalidArgument("embedding_bag: include_last_offset needs at least one offset")
        self._check_segments(n)
        self.weights = None
        if per_sample_weights is not None:
            w = np.asarray(per_sample_weights)
            if mode != "sum":
                raise InvalidArgument("embedding_bag: per_sample_weights are only supported with mode='sum'")
            if w.ndim != 1 or len(w) != n:
                raise InvalidArgument(f"embedding_bag: per_sample_weights has {w.size} entries, indices has {n}; "
                                      "they must match one to one")
            self.weights = w.astype(np.float32)

    @staticmethod
    def _table(weight, fmt, dim):
        w = np.asarray(weight)
        if w.ndim != 2:
            raise InvalidArgument(f"embedding_bag: the table must be 2-D [rows, dim or row bytes], got shape {w.shape}")
        if w.dtype == np.uint8:
            try:
                d = table_dim(fmt, w.shape[1])
            except ValueError as e:
                raise InvalidArgument(f"embedding_bag: table of {w.shape[1]}-byte rows: {e}") from None
            if dim is not None:
                if table_row_bytes(fmt, dim) != w.shape[1]:
                    raise InvalidArgument(f"embedding_bag: dim {dim} in format {fmt} needs "
                                          f"{table_row_bytes(fmt, dim)}-byte rows, the table has {w.shape[1]}")
                d = dim
            return np.ascontiguousarray(w), d
        if not np.issubdtype(w.dtype, np.floating):
            raise InvalidArgument(f"embedding_bag: table dtype {w.dtype} is neither a float table nor packed uint8 rows")
        from .reference import pack_table
        return pack_table(w.astype(np.float32), fmt), w.shape[1]

    @staticmethod
    def _indices(indices):
        idx = np.asarray(indices)
        if idx.ndim != 1 or idx.dtype not in (np.int32, np.int64):
            raise InvalidArgument(f"embedding_bag: indices must be a 1-D int32 or int64 array, got {idx.dtype} "
                                  f"{idx.shape}")
        return np.ascontiguousarray(idx)

    def _check_segments(self, n):
        from .reference import bag_bounds
        try:
            bag_bounds(n, self.segments, self.offsets_mode, self.include_last, self.n_bags)
        except ValueError as e:
            pos = e.args[1]
            if self.offsets_mode:
                raise InvalidArgument(f"embedding_bag: offsets[{pos}] = {self._seg(pos)} is invalid: offsets must "
                                      f"start at 0, never decrease and stay within the {n} indices") from None
            raise InvalidArgument(f"embedding_bag: lengths do not add up to the {n} indices (first bad position "
                                  f"{pos}{'' if pos >= len(self.segments) else f', length {self._seg(pos)}'})") from None
        bad = np.nonzero((self.indices < 0) | (self.indices >= self.rows))[0] if self.rows or n else []
        if len(bad):
            i = int(bad[0])
            raise InvalidArgument(f"embedding_bag: indices[{i}] = {int(self.indices[i])} is outside the table of "
                                  f"{self.rows} rows")

    def _seg(self, pos):
        return int(self.segments[pos]) if pos < len(self.segments) else "(end)"

    @property
    def mode_bits(self):
        m = {"sum": 0, "mean": 1}[self.mode]
        if self.weights is not None:
            m = 2
        if self.offsets_mode:
            m |= 16
        if self.include_last:
            m |= 32
        return m


def descriptor(args: EmbeddingArgs, table, indices, segments, weights, output) -> np.ndarray:
    d = np.zeros(T.EMB_DESC_WORDS, dtype=np.int64)
    d[:14] = [table, args.rows, args.dim, FORMATS.index(args.format), indices, len(args.indices),
              args.indices.dtype.itemsize, segments, args.n_bags, weights, output,
              0 if args.out_dtype == "fp32" else 1, args.mode_bits, args.segments.dtype.itemsize]
    return d


def run_embedding_bag(card, args: EmbeddingArgs, table_memory="dram", engine="numba"):
    """Place the operands on a card, run the lookup, read the result. Returns (output array, LaunchResult)."""
    out_np = np.float32 if args.out_dtype == "fp32" else np.float16
    out_bytes = max(1, args.n_bags * args.dim * np.dtype(out_np).itemsize)
    owned = []

    def put(array, memory="dram"):
        addr, own = card.place(array, memory)          # a pinned table stays where it is
        if own:
            owned.append(addr)
        return addr

    try:
        t = put(args.table, table_memory)
        i = put(args.indices)
        s = put(args.segments)
        w = put(args.weights) if args.weights is not None else 0
        o = card.alloc(out_bytes)
        owned.append(o)
        desc = put(descriptor(args, t, i, s, w, o))
        result = card.launch(kernel_image(), "embedding_bag", (desc,), pes=(0,), engine=engine)
        out = card.read(o, args.n_bags * args.dim * np.dtype(out_np).itemsize).view(out_np)
        return out.reshape(args.n_bags, args.dim).copy(), result
    finally:
        for a in owned:
            card.free(a)
