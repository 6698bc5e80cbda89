"""What the kernel language's values are while compiling: tensors in card memory, views of them, tiles in a
PE's local memory, and how each operation on them becomes instructions (through compiler.Compiler)."""
from __future__ import annotations

import numpy as np

from vnpu.isa import table as T

from .compiler import ITEMSIZE, AsyncOp, Cond, Insn, Loop, PipelineHazard, Place, Scalar, Splice
from .errors import KernelError

VECTOR_BINARY = {"add": "vadd", "sub": "vsub", "mul": "vmul", "maximum": "vmax", "minimum": "vmin"}
VECTOR_UNARY = {"relu": "vrelu", "sigmoid": "vsigmoid", "tanh": "vtanh", "exp": "vexp", "gelu": "vgelu",
                "copy": "vcopy", "recip": "vrecip", "rsqrt": "vrsqrt"}
FLOAT_ONLY = {name for name, mn in VECTOR_UNARY.items() if T.BY_MNEMONIC[mn].float_only}
MATRIX_OUT = {"i8": "i32", "f16": "f32", "f32": "f32"}


def _static(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


class Tensor:
    """A kernel argument in card memory (DRAM or shared SRAM): static shape and dtype, a base register."""

    def __init__(self, cc, name, reg, shape, dtype):
        self.cc, self.name, self.reg, self.shape, self.dtype = cc, name, reg, tuple(shape), dtype
        st, s = [], 1
        for d in reversed(self.shape):
            st.append(s)
            s = s * d if d is not None else None
        self.strides = tuple(reversed(st))
        self.ndim = len(self.shape)

    def __getitem__(self, idx):
        return View.of(self, idx)

    def whole(self):
        return View.of(self, ())

    def reshape(self, *shape):
        """The same elements with another shape (tensors are contiguous)."""
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        if None in self.shape or int(np.prod(shape)) != int(np.prod(self.shape)):
            raise KernelError(f"cannot reshape {self.name} of shape {self.shape} to {shape}")
        return Tensor(self.cc, self.name, self.reg, shape, self.dtype)

    def __repr__(self):
        return f"Tensor({self.name}, {self.shape}, {self.dtype})"


class View:
    """A block of a tensor: offset (elements) and up to two dimensions of (extent, valid, stride); valid is the
    part inside the tensor (a short last tile), known statically or computed on the card."""

    def __init__(self, tensor, offset, dims):
        self.tensor, self.offset, self.dims = tensor, offset, dims

    @staticmethod
    def of(tensor, idx):
        cc = tensor.cc
        if not isinstance(idx, tuple):
            idx = (idx,)
        if len(idx) > tensor.ndim:
            raise KernelError(f"{tensor.name} has {tensor.ndim} dimensions, indexed with {len(idx)}")
        idx = idx + (slice(None),) * (tensor.ndim - len(idx))
        offset, dims = cc.scalar(0), []
        for d, (ix, size, stride) in enumerate(zip(idx, tensor.shape, tensor.strides)):
            if isinstance(ix, slice):
                if ix.step not in (None, 1):
                    raise KernelError(f"{tensor.name}: slices with a step are not supported (use a strided "
                                      f"tensor shape instead)")
                start = 0 if ix.start is None else ix.start
                stop = size if ix.stop is None else ix.stop
                if stop is None:
                    raise KernelError(f"{tensor.name} has no length known while compiling (anysize): slice it "
                                      f"with an explicit end")
                if size is None:         # anysize: the kernel's own bounds are the tensor's
                    start, stop = cc.scalar(start), cc.scalar(stop)
                    span = stop - start
                    extent = span.const if span.static else _bound(cc, stop, start)
                    if extent is None:
                        raise KernelError(f"{tensor.name}: the length of slice {d} must be known at compile time: "
                                          f"x[i : i + T] or x[i : vnpu.minimum(i + T, end)] with T a number")
                    valid = extent if span.static else _clamp(cc, span, extent)
                elif _static(start) and _static(stop):
                    if start < 0 or stop < 0:
                        raise KernelError(f"{tensor.name}: negative slice bounds {start}:{stop} in dimension {d}")
                    extent = max(0, min(stop, size) - start)
                    valid = extent
                else:
                    start, stop = cc.scalar(start), cc.scalar(stop)
                    span = stop - start
                    if span.static:
                        extent = max(0, span.const)
                        valid = _clamp(cc, cc.scalar(size) - start, extent)
                    else:
                        extent = _bound(cc, stop, start)
                        if extent is None:
                            raise KernelError(f"{tensor.name}: the length of slice {d} must be known at compile "
                                              f"time: x[i : i + T] or x[i : vnpu.minimum(i + T, end)] with T a "
                                              f"number")
                        valid = _clamp(cc, vmin(cc, stop, size) - start, extent)
                offset = offset + cc.scalar(start) * stride
                dims.append([extent, valid, stride])
            else:
                if _static(ix) and size is not None and not 0 <= ix < size:
                    raise KernelError(f"{tensor.name}: index {ix} is outside dimension {d} of size {size}")
                offset = offset + cc.scalar(ix) * stride
        if not dims:               # one element, x[i, j]: a block of one
            dims = [[1, 1, 1]]
        if len(dims) > 2:
            raise KernelError(f"{tensor.name}: a block has at most 2 dimensions, this one has {len(dims)}")
        if len(dims) == 2 and dims[1][2] != 1:
            raise KernelError(f"{tensor.name}: the inner dimension of a 2-D block must be contiguous")
        column = len(dims) == 1 and dims[0][2] != 1
        if column:
            # a column of a matrix (1-D, strided): moved as rows of one element
            dims = [dims[0], [1, 1, 1]]
        view = View(tensor, offset, dims)
        view.column = column
        return view

    column = False

    @property
    def shape(self):
        if self.column:
            return (self.dims[0][0],)
        return tuple(d[0] for d in self.dims) if self.dims else (1,)

    def address(self):
        t = self.tensor
        return Scalar(t.cc, {t.reg: 1}) + self.offset * ITEMSIZE[t.dtype]


def _bound(cc, stop, start):
    """The static length bound of start:stop when stop = min(start + T, ...) (or nested mins)."""
    if len(stop.terms) == 1 and stop.const == 0:
        r = next(iter(stop.terms))
        if stop.terms[r] == 1 and r in cc.bounds:
            best = None
            for arm in cc.bounds[r]:
                span = arm - start
                b = span.const if span.static else _bound(cc, arm, start)
                if b is not None:
                    best = b if best is None else min(best, b)
            return None if best is None else max(0, best)
    return None


def vmin(cc, a, b):
    if a.static and _static(b):
        return cc.scalar(min(a.const, b))
    if _static(b) and b >= (1 << 62):
        return a
    return cc.alu("min", a, b)


def _rows_contiguous(view):
    """A 2-D block of whole rows (every column, row stride = row length): contiguous in the tensor and in
    the tile alike."""
    (_, _, stride), (ext1, cols, _) = view.dims
    return stride == ext1 and _static(cols) and cols == ext1


def _clamp(cc, left, extent):
    """min(max(left, 0), extent): the part of a block inside the tensor (a short last tile)."""
    if left.static:
        return max(0, min(left.const, extent))
    return cc.clamp(left, extent)


class Tile:
    """Elements in a PE's local memory: a buffer, a byte offset into it, a static shape (1-D or 2-D), a dtype,
    and how many rows (2-D) or elements (1-D) hold data."""

    def __init__(self, cc, buf, offset, shape, dtype, valid=None, cols=None):
        self.cc, self.buf, self.offset, self.shape, self.dtype = cc, buf, offset, tuple(shape), dtype
        self.valid = self.shape[0] if valid is None else valid
        # 2-D: a row length known only on the card (a narrow last column tile): rows are then `cols` apart
        self.cols = self.shape[1] if (cols is None and len(self.shape) == 2) else cols

    @property
    def row_stride(self):
        """Elements between rows (the static width, or the run-time one of a compact tile)."""
        return self.cols

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return int(np.prod(self.shape))

    def count(self):
        """Elements the vector unit should process: valid rows times the row length."""
        v = self.valid
        row = self.cols if self.ndim == 2 else 1
        if _static(row) and row == 1:
            return v
        return self.cc.scalar(v) * row if not _static(v) else (v * row if _static(row) else self.cc.scalar(row) * v)

    def addr(self):
        return self.cc.local_reg(self.buf, self.offset)

    def __getitem__(self, idx):
        cc = self.cc
        eb = ITEMSIZE[self.dtype]
        if self.ndim != 2:
            if isinstance(idx, slice):
                start = 0 if idx.start is None else idx.start
                stop = self.shape[0] if idx.stop is None else idx.stop
                n = cc.scalar(stop) - cc.scalar(start)
                if not n.static:
                    raise KernelError("the length of a tile slice must be known at compile time")
                return Tile(cc, self.buf, cc.scalar(self.offset) + cc.scalar(start) * eb, (n.const,), self.dtype)
            return Tile(cc, self.buf, cc.scalar(self.offset) + cc.scalar(idx) * eb, (1,), self.dtype)
        C = self.cols
        if isinstance(idx, slice):
            start = 0 if idx.start is None else idx.start
            stop = self.shape[0] if idx.stop is None else idx.stop
            n = cc.scalar(stop) - cc.scalar(start)
            if not n.static:
                raise KernelError("the number of rows of a tile slice must be known at compile time")
            valid = n.const
            if not _static(self.valid) and _static(start):      # rows of a short tile: its valid part
                valid = _clamp(cc, cc.scalar(self.valid) - start, n.const)
            return Tile(cc, self.buf, cc.scalar(self.offset) + cc.scalar(start) * cc.scalar(C) * eb,
                        (n.const, self.shape[1]), self.dtype, valid, cols=C)
        if _static(idx) and not 0 <= idx < self.shape[0]:
            raise KernelError(f"row {idx} is outside a tile of {self.shape[0]} rows")
        return Tile(cc, self.buf, cc.scalar(self.offset) + cc.scalar(idx) * cc.scalar(C) * eb, (self.shape[1],),
                    self.dtype, valid=C)

    def reshape(self, rows, cols):
        """The tile's first rows * cols elements as a compact 2-D tile (cols may be a card value, at most the
        static width it is given as: the row length of a narrow last column tile)."""
        if self.ndim == 2 and _static(self.cols) and self.cols == self.shape[1] and _static(cols) and \
                rows * cols == self.size and _static(self.valid) and self.valid == self.shape[0]:
            return Tile(self.cc, self.buf, self.offset, (rows, cols), self.dtype)     # same bytes, other rows
        if self.ndim != 1 or not _static(rows):
            raise KernelError("reshape(rows, cols) takes a 1-D tile (or a full 2-D one) and a static number of rows")
        cap = self.shape[0] // rows
        if not _static(cols):
            bound = _bound(self.cc, self.cc.scalar(cols), self.cc.scalar(0))
            if bound is None or bound > cap:
                raise KernelError(f"reshape: cols must be at most {cap} (write vnpu.minimum(width, {cap}))")
        elif rows * cols > self.shape[0]:
            raise KernelError(f"reshape of a {self.shape[0]}-element tile to {rows} x {cols}")
        return Tile(self.cc, self.buf, self.offset, (rows, cap if not _static(cols) else cols), self.dtype,
                    cols=cols)

    # arithmetic: a new tile, or in place for the augmented forms
    def _bin(self, other, op, out=None, reverse=False):
        return self.cc.ops.binary(op, self, other, out=out, reverse=reverse)

    def __add__(self, o):
        return self._bin(o, "add")

    def __radd__(self, o):
        return self._bin(o, "add")

    def __sub__(self, o):
        return self._bin(o, "sub")

    def __rsub__(self, o):
        return self._bin(o, "sub", reverse=True)

    def __mul__(self, o):
        return self._bin(o, "mul")

    def __rmul__(self, o):
        return self._bin(o, "mul")

    def __iadd__(self, o):
        return self._bin(o, "add", out=self)

    def __isub__(self, o):
        return self._bin(o, "sub", out=self)

    def __imul__(self, o):
        return self._bin(o, "mul", out=self)

    def __neg__(self):
        return self._bin(-1.0 if self.dtype in ("f32", "f16") else -1, "mul")

    def __truediv__(self, o):
        if isinstance(o, (int, float)) and not isinstance(o, bool):
            return self._bin(1.0 / o, "mul")
        return self._bin(self.cc.ops.unary("recip", o), "mul")

    def astype(self, dtype, scale=1.0, zero_point=0, qparam=None):
        """Convert (vcvt): to an integer type q = round(x * scale + zero_point), clamped; from one
        y = (q - zero_point) * scale. qparam: both as one run-time int (fp32 scale bits | zero point << 32)."""
        return self.cc.ops.convert(self, dtype, scale, zero_point, qparam)

    def __repr__(self):
        return f"Tile({self.shape}, {self.dtype})"


class F32Arg:
    """A float kernel argument: its fp32 bits sit in a register and, once used, in a 4-byte local buffer."""

    def __init__(self, cc, name, reg):
        self.cc, self.name, self.reg, self._buf = cc, name, reg, None

    def buffer(self):
        if self._buf is None:
            self._buf = self.cc.f32_arg(self.reg)
        return self._buf


class Lowering:
    """The kernel language's operations, compiled (the same names as interpreter.Interpreter)."""

    def __init__(self, cc):
        self.cc = cc
        cc.ops = self

    # --- tiles -------------------------------------------------------------------------------------------
    def new_tile(self, shape, dtype, valid=None):
        shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
        if not 1 <= len(shape) <= 2 or min(shape) <= 0:
            raise KernelError(f"a tile has 1 or 2 positive dimensions, got shape {shape}")
        buf = self.cc.buffer(int(np.prod(shape)) * ITEMSIZE[dtype])
        if buf.nbytes > self.cc.local_bytes:
            raise KernelError(f"a tile of shape {shape} {dtype} ({buf.nbytes} bytes) is larger than the PE's local "
                              f"memory ({self.cc.local_bytes} bytes)", line=buf.where)
        return Tile(self.cc, buf, 0, shape, dtype, valid)

    def empty(self, shape, dtype):
        return self.new_tile(shape, dtype)

    def _like(self, a, dtype):
        """A new tile of a's shape, valid rows and row length."""
        t = self.new_tile(a.shape, dtype, valid=a.valid)
        t.cols = a.cols
        return t

    def output(self, shape, dtype):
        cc = self.cc
        name = f"out{len(cc.outputs)}"
        t = Tensor(cc, name, cc.arg_reg(name, "buffer", dtype), shape, dtype)
        cc.outputs.append(t)
        return t

    # --- DMA ---------------------------------------------------------------------------------------------
    def _dma(self, engine, queue, dst, src, row_bytes, rows, src_stride, dst_stride, op=None, planes=None):
        cc = self.cc
        if op is not None:
            cc.issued(queue, op)
        if rows is not None and not (_static(rows) and rows == 1):
            cc.emit("dma.dim", f"e{engine}", "d1", cc.reg(rows), cc.reg(src_stride), cc.reg(dst_stride))
        if planes is not None:
            cc.emit("dma.dim", f"e{engine}", "d2", cc.reg(planes[0]), cc.reg(planes[1]), cc.reg(planes[2]))
        cc.emit("dma", f"e{engine}", dst, src, cc.reg(row_bytes), f"s{cc.sem(queue)}")

    def load(self, view, into=None):
        cc = self.cc
        if not isinstance(view, View):
            if isinstance(view, Tensor):
                view = view.whole()
            else:
                raise KernelError(f"load takes a block of a tensor argument (x[a:b]), got {type(view).__name__}")
        shape = view.shape
        if into is None:
            tile = self.new_tile(shape, view.tensor.dtype, valid=view.dims[0][1] if view.dims else 1)
        else:
            tile = into
            if not isinstance(tile, Tile):
                raise KernelError(f"load(..., into=) takes a tile, got {type(tile).__name__}")
            if tile.shape != shape or tile.dtype != view.tensor.dtype:
                raise KernelError(f"load into a tile of {tile.shape} {tile.dtype} from a block of {shape} "
                                  f"{view.tensor.dtype}")
            tile.valid = view.dims[0][1] if view.dims else 1
        pl = cc.pipeline
        if pl is not None:
            pl.check_read(view.tensor.name)
        if pl is not None and into is None and cc.control_depth == pl.depth and self._invariant(view, pl) \
                and view.tensor.name not in cc.in_order:
            queue = f"pf{pl.half}"
            op = AsyncOp("e0", frozenset({view.tensor.name}), frozenset({tile.buf.id}), (tile.buf,))
            cc.depend("e0", op.reads, op.writes)
            pl.carried.add(tile.buf.id)
            pl.pf_bufs[pl.half].add(tile.buf.id)
            pl.prefetched.add(view.tensor.name)
            pl.prefetch[pl.half].append(lambda shift, view=view, tile=tile, op=op, queue=queue:
                                        self._issue_load(view, tile, op, queue, shift, pending=False))
            cc.sync.pending.setdefault(queue, []).append(op)
            return tile
        op = AsyncOp("e0", frozenset({view.tensor.name}), frozenset({tile.buf.id}), (tile.buf,))
        cc.depend("e0", op.reads, op.writes)
        self._issue_load(view, tile, op, cc.q("e0"), None)
        return tile

    def _invariant(self, view, pl):
        return all(self.cc.shiftable(v, pl.var, pl.first_reg) for v in [view.offset] + [d[1] for d in view.dims])

    def _issue_load(self, view, tile, op, queue, shift, pending=True):
        cc = self.cc
        eb = ITEMSIZE[view.tensor.dtype]
        def moved(v):          # the value at the iteration the load is for (a prefetch runs before it)
            return v if shift is None else cc.shift_value(v, *shift)
        src = cc.reg(moved(view.address()))
        dst = tile.addr()
        if len(view.dims) == 2 and not _rows_contiguous(view):
            (_, rows, sstride), (ext1, cols, _) = view.dims
            rows, cols = moved(rows), moved(cols)
            row_bytes = cols * eb
            op_args = (rows, sstride * eb, ext1 * eb)
        elif len(view.dims) == 2:       # whole rows: one contiguous transfer (a 2-D one pays per row)
            row_bytes, op_args = moved(view.dims[0][1]) * (view.dims[1][0] * eb), (None, 0, 0)
        else:
            n = moved(view.dims[0][1]) if view.dims else 1
            row_bytes, op_args = n * eb, (None, 0, 0)
        if pending:
            self._dma(0, queue, dst, src, row_bytes, *op_args, op)
        else:
            # a prefetch: its queue entry was made when the body was traced
            if op_args[0] is not None and not (_static(op_args[0]) and op_args[0] == 1):
                cc.emit("dma.dim", "e0", "d1", cc.reg(op_args[0]), cc.reg(op_args[1]), cc.reg(op_args[2]))
            cc.emit("dma", "e0", dst, src, cc.reg(row_bytes), f"s{cc.sem(queue)}")

    def store(self, view, tile):
        cc = self.cc
        if isinstance(view, Tensor):
            view = view.whole()
        if not isinstance(view, View) or not isinstance(tile, Tile):
            raise KernelError("store takes (a block of a tensor argument, a tile)")
        if view.tensor.dtype != tile.dtype:
            raise KernelError(f"store of a {tile.dtype} tile into {view.tensor.name} of {view.tensor.dtype}: "
                              f"convert it first (tile.astype)")
        if view.shape != tile.shape and not (len(view.shape) == 2 and tile.ndim == 2 and view.shape[0] == tile.shape[0]
                                             and view.shape[1] <= tile.shape[1] and _static(tile.cols)):
            raise KernelError(f"store of a tile of shape {tile.shape} into a block of shape {view.shape} (a block may "
                              f"take the leading columns of a wider tile)")
        eng = 1 if cc.engines > 1 else 0
        cc.written.add(view.tensor.name)
        op = AsyncOp(f"e{eng}", frozenset({tile.buf.id}), frozenset({view.tensor.name}), (tile.buf,))
        pl = cc.pipeline
        if pl is not None:
            pl.stored.add(view.tensor.name)
        if pl is not None and cc.control_depth == pl.depth and view.tensor.name not in cc.in_order:
            own = tile.buf.id in pl.half_bufs[pl.half] and tile.buf.id not in pl.pf_bufs[pl.half]
            if own and all(cc.shiftable(v, pl.var, pl.first_reg) for v in [view.offset] + [d[1] for d in view.dims]):
                # issued during the next iteration, once its first compute is under way (the builder's
                # "finish the previous tile while the next one multiplies")
                pl.deferred[pl.half].append((view, tile, eng))
                pl.stores[pl.half].append(op)
                pl.carried.add(tile.buf.id)
                return
            if not own:
                # a prefetched tile (the other half prefetches into it next) or a tile made before the loop
                # (both halves write it): the store must be done by the end of this half (an ordinary store,
                # drained there)
                cc.depend(op.hw, op.reads, op.writes)
                cc.issued(cc.q(f"e{eng}"), op)
                self._emit_store(view, tile, eng, cc.q(f"e{eng}"))
                return
            cc.depend(op.hw, op.reads, op.writes)
            pl.stores[pl.half].append(op)       # waited at the start of the same half of the next round
            self._emit_store(view, tile, eng, f"st{pl.half}")
            return
        cc.depend(op.hw, op.reads, op.writes)
        cc.issued(cc.q(f"e{eng}"), op)
        self._emit_store(view, tile, eng, cc.q(f"e{eng}"))
        if cc.eager:       # local memory is tight: the tile is free once its store is done
            cc._wait(cc.q(f"e{eng}"), len(cc.sync.pending[cc.q(f"e{eng}")]))

    def _emit_store(self, view, tile, eng, queue, shift=None):
        cc = self.cc

        def moved(v):
            return v if shift is None else cc.shift_value(v, *shift)
        eb = ITEMSIZE[tile.dtype]
        dst = cc.reg(moved(view.address()))
        src = tile.addr()
        if len(view.dims) == 2 and _rows_contiguous(view) and (tile.ndim == 1 or (
                _static(tile.row_stride) and tile.row_stride == view.dims[1][0])):
            self._dma(eng, queue, dst, src, moved(view.dims[0][1]) * (view.dims[1][0] * eb), None, 0, 0)
        elif len(view.dims) == 2:
            (_, rows, dstride), (ext1, cols, _) = view.dims
            sstride = tile.row_stride if tile.ndim == 2 else ext1
            self._dma(eng, queue, dst, src, moved(cols) * eb, moved(rows), moved(cc.scalar(sstride)) * eb,
                      dstride * eb)
        else:
            self._dma(eng, queue, dst, src, moved(view.dims[0][1]) * eb, None, 0, 0)

    def transfer(self, dst, src):
        """Card memory to card memory (DRAM and shared SRAM), one DMA on engine e0."""
        cc = self.cc
        dst = dst.whole() if isinstance(dst, Tensor) else dst
        src = src.whole() if isinstance(src, Tensor) else src
        if not isinstance(dst, View) or not isinstance(src, View):
            raise KernelError("transfer takes two blocks of tensor arguments: transfer(y[a:b], x[c:d])")
        if dst.tensor.dtype != src.tensor.dtype or dst.shape != src.shape or len(src.dims) != 1:
            raise KernelError(f"transfer of a {src.shape} {src.tensor.dtype} block into a {dst.shape} "
                              f"{dst.tensor.dtype} block: same 1-D shape and dtype")
        cc.written.add(dst.tensor.name)
        op = AsyncOp("e0", frozenset({src.tensor.name}), frozenset({dst.tensor.name}))
        cc.depend("e0", op.reads, op.writes)
        eb = ITEMSIZE[src.tensor.dtype]
        n = cc.ops.minimum(src.dims[0][1], dst.dims[0][1]) if not (_static(src.dims[0][1]) and
                                                                    _static(dst.dims[0][1])) else \
            min(src.dims[0][1], dst.dims[0][1])
        self._dma(0, cc.q("e0"), cc.reg(dst.address()), cc.reg(src.address()), n * eb, None, 0, 0, op)

    def repeat(self, row, rows):
        """A (rows, n) tile whose every row is the 1-D tile `row` (one DMA inside local memory, source stride 0)."""
        cc = self.cc
        if not isinstance(row, Tile) or row.ndim != 1 or not _static(rows) or rows < 1:
            raise KernelError("repeat(row, rows) takes a 1-D tile and a number of rows")
        dst = self.new_tile((rows, row.shape[0]), row.dtype)
        n = row.valid          # a short row (its valid part): the block is compact, rows n apart
        dst.cols = n
        nbytes = cc.scalar(n) * ITEMSIZE[row.dtype]
        op = AsyncOp("e0", frozenset({row.buf.id}), frozenset({dst.buf.id}), (row.buf, dst.buf))
        cc.depend("e0", op.reads, op.writes)
        self._dma(0, cc.q("e0"), dst.addr(), row.addr(), nbytes, rows, 0, nbytes, op)
        return dst

    def move(self, dst, src, n, rows=None, planes=None, src_at=0, dst_at=0):
        """A DMA inside local memory: n contiguous elements from src (element src_at on) to dst (dst_at on),
        repeated over rows = (count, src_stride, dst_stride) and planes = (count, src_stride, dst_stride), strides
        in elements (the 3-D copies of an im2col)."""
        cc = self.cc
        if not isinstance(dst, Tile) or not isinstance(src, Tile) or dst.dtype != src.dtype:
            raise KernelError("move(dst, src, n, ...) takes two tiles of one dtype")
        eb = ITEMSIZE[src.dtype]

        def extent(dims, which):
            last = n - 1
            for d in dims:
                if d is not None:
                    if not all(_static(v) for v in d) or d[0] < 1:
                        raise KernelError("move: rows and planes are (count >= 1, src_stride, dst_stride) numbers")
                    last += (d[0] - 1) * d[which]
            return last + 1
        if not _static(n) or n < 1:
            raise KernelError("move: n must be a positive number")
        if rows is None and planes is not None:
            rows, planes = planes, None
        for t, at, which in ((src, src_at, 1), (dst, dst_at, 2)):
            if not _static(at) or at < 0 or at + extent((rows, planes), which) > t.size:
                raise KernelError(f"move: elements [{at}, {at} + {extent((rows, planes), which)}) are outside a "
                                  f"tile of {t.size}")
        op = AsyncOp("e0", frozenset({src.buf.id}), frozenset({dst.buf.id}), (src.buf, dst.buf))
        cc.depend("e0", op.reads, op.writes)
        src_r = cc.local_reg(src.buf, cc.scalar(src.offset) + src_at * eb)
        dst_r = cc.local_reg(dst.buf, cc.scalar(dst.offset) + dst_at * eb)
        plane_bytes = (planes[0], planes[1] * eb, planes[2] * eb) if planes else None
        self._dma(0, cc.q("e0"), dst_r, src_r, n * eb, rows[0] if rows else None, (rows[1] * eb) if rows else 0,
                  (rows[2] * eb) if rows else 0, op, planes=plane_bytes)

    # --- vector unit -------------------------------------------------------------------------------------
    def _vector(self, mnemonic, dst, a, b, n, dt, extra=()):
        cc = self.cc
        reads = {a.buf.id} | ({b.buf.id} if b is not None else set())
        op = AsyncOp("vector", frozenset(reads), frozenset({dst.buf.id}),
                     tuple({a.buf, dst.buf} | ({b.buf} if b is not None else set())))
        cc.depend("vector", op.reads, op.writes)
        ops = [dst.addr(), a.addr()] + ([b.addr()] if b is not None else []) + [cc.reg(n)]
        if mnemonic == "vcvt":
            ops = [dst.addr(), a.addr(), cc.reg(n), cc.reg(extra[0]), dt, extra[1]]
        else:
            ops.append(dt)
        q = cc.q("vector")
        cc.issued(q, op)
        cc.emit(mnemonic, *ops, f"s{cc.sem(q)}")

    def _operand(self, x, like):
        """x as a tile the vector unit can read: a tile, a one-element tile, or a constant / float argument
        stored in local memory."""
        if isinstance(x, Tile):
            return x
        if isinstance(x, F32Arg):
            if like.dtype != "f32":
                raise KernelError(f"float argument {x.name} with a {like.dtype} tile: the vector unit's broadcast "
                                  f"operand has the tile's dtype (use an f32 tile)")
            return Tile(self.cc, x.buffer(), 0, (1,), "f32")
        if isinstance(x, (int, float, np.floating, np.integer)) and not isinstance(x, bool):
            return Tile(self.cc, self.cc.constant(x, like.dtype), 0, (1,), like.dtype)
        raise KernelError(f"cannot use {type(x).__name__} {x!r} as a vector operand")

    def binary(self, op, a, b, out=None, reverse=False):
        a, b, reverse = binary_operands(op, a, b, out, reverse, Tile)
        b = self._operand(b, a)
        if b.dtype != a.dtype:
            raise KernelError(f"{op} of {a.dtype} and {b.dtype} tiles: convert one (tile.astype)")
        _check_out(out, a)
        dst = out if out is not None else self._like(a, a.dtype)
        if b.size == 1 and a.size != 1:
            if reverse:          # c - tile: (-tile) + c
                if op != "sub":
                    return self.binary(op, a, b, out)
                self._vector("vmuls", dst, a, self._operand(-1.0 if a.dtype in ("f32", "f16") else -1, a),
                             a.count(), a.dtype)
                self._vector("vadds", dst, dst, b, a.count(), a.dtype)
                return dst
            self._vector(VECTOR_BINARY[op] + "s", dst, a, b, a.count(), a.dtype)
            return dst
        if reverse and op == "sub":
            a, b = b, a
        if a.ndim == 2 and b.ndim == 2 and b.shape == (a.shape[0], 1):      # a column: one value per row
            for r in range(a.shape[0]):
                self._vector(VECTOR_BINARY[op] + "s", dst[r], a[r], b[r], a.shape[1], a.dtype)
            return dst
        if a.ndim == 2 and b.ndim == 1 and b.shape[0] == a.shape[1] and a.shape[0] > 1:   # a row, every row
            for r in range(a.shape[0]):
                self._vector(VECTOR_BINARY[op], dst[r], a[r], b, a.shape[1], a.dtype)
            return dst
        if a.size != b.size:
            raise KernelError(f"{op} of tiles of shapes {a.shape} and {b.shape}")
        self._vector(VECTOR_BINARY[op], dst, a, b, a.count(), a.dtype)
        return dst

    def unary(self, op, a, out=None):
        _out_tile(op, out, Tile)
        if not isinstance(a, Tile):
            raise KernelError(f"{op} takes a tile, got {type(a).__name__}")
        a = self._operand(a, a) if not isinstance(a, Tile) else a
        if op in FLOAT_ONLY and a.dtype not in ("f32", "f16"):
            raise KernelError(f"{op} needs a float tile; the vector unit has no {op} for {a.dtype}")
        _check_out(out, a)
        dst = out if out is not None else self._like(a, a.dtype)
        self._vector(VECTOR_UNARY[op], dst, a, None, a.count(), a.dtype)
        return dst

    def reduce(self, op, a, axis=None, out=None):
        _out_tile(op, out, Tile)
        if not isinstance(a, Tile) or not (axis is None or (isinstance(axis, int) and not isinstance(axis, bool))):
            raise KernelError(f"{op} takes a tile and an axis (None or an int), got {type(a).__name__}, {axis!r}")
        acc = "i32" if a.dtype in ("i8", "i32") else "f32"
        mn = {"sum": "vsum", "max": "vrmax"}[op]
        if axis is None or a.ndim == 1:
            dst = out if out is not None else self.new_tile((1,), acc)
            self._vector(mn, dst, a, None, a.count(), a.dtype)
            return dst
        if axis not in (1, -1) or a.ndim != 2:
            raise KernelError(f"{op} over axis {axis} of a {a.ndim}-D tile: reduce rows (axis=1) or everything")
        dst = out if out is not None else self.new_tile((a.shape[0], 1), acc)
        for r in range(a.shape[0]):
            self._vector(mn, dst[r], a[r], None, a.shape[1], a.dtype)
        return dst

    def convert(self, a, dtype, scale=1.0, zero_point=0, qparam=None):
        from .api import _dtype
        from .compiler import f32_bits
        try:
            dt = _dtype(dtype)
        except KernelError:
            raise KernelError(f"astype to {dtype!r}: the vector unit converts between f32, f16, i32 and i8") from None
        if qparam is not None:        # a run-time scale and zero point (fp32 bits low, int32 high)
            q = qparam
        else:
            q = f32_bits(scale) | ((int(zero_point) & 0xFFFFFFFF) << 32)
            q = q - (1 << 64) if q >> 63 else q
        dst = self._like(a, dt)
        self._vector("vcvt", dst, a, None, a.count(), a.dtype, extra=(q, dt))
        return dst

    # --- matrix unit -------------------------------------------------------------------------------------
    def matmul(self, a, w, out=None, accumulate=False):
        _out_tile("matmul", out, Tile)
        if not isinstance(accumulate, (bool, np.bool_)):
            raise KernelError(f"matmul: accumulate must be True or False, got {accumulate!r}")
        cc = self.cc
        if not (isinstance(a, Tile) and a.ndim == 2 and isinstance(w, Tile) and w.ndim == 2):
            raise KernelError("matmul takes two 2-D tiles: a (M x K) and w (K x N)")
        if a.dtype != w.dtype or a.dtype not in MATRIX_OUT:
            raise KernelError(f"matmul of {a.dtype} and {w.dtype}: the matrix unit multiplies i8, f16 or f32 pairs")
        M, K = a.shape
        K2, N = w.shape
        if K != K2:
            raise KernelError(f"matmul shapes {a.shape} @ {w.shape}: inner dimensions differ")
        if not _static(a.cols) or a.cols != K:
            raise KernelError("matmul: the rows of a must hold K elements each (a static width)")
        if K * N * ITEMSIZE[w.dtype] > (1 << 20):
            raise KernelError(f"a weight tile of {K}x{N} {w.dtype} exceeds the matrix unit's 1 MiB weight buffer")
        acc = MATRIX_OUT[a.dtype]
        if out is None:
            if accumulate:
                raise KernelError("matmul(accumulate=True) needs out= (the tile to accumulate into)")
            out = self.new_tile((M, N), acc, valid=a.valid)
            out.cols = w.cols
        elif out.shape != (M, N) or out.dtype != acc:
            raise KernelError(f"matmul out= must be a {M}x{N} {acc} tile, got {out.shape} {out.dtype}")
        held = (w.buf, cc.scalar(w.offset).key(), w.shape, cc.scalar(w.cols).key())   # which bytes, which shape
        if cc.weights is None or cc.weights[1:] != held[1:] or cc.weights[0] is not w.buf:
            op = AsyncOp("matrix", frozenset({w.buf.id}), frozenset(), (w.buf,))
            cc.depend("matrix", op.reads, op.writes)
            cc.issued(cc.q("matrix"), op)
            cc.emit("mm.ldw", w.addr(), cc.reg(K), cc.reg(w.cols), w.dtype, f"s{cc.sem(cc.q('matrix'))}")
            cc.weights = held
        op = AsyncOp("matrix", frozenset({a.buf.id} | ({out.buf.id} if accumulate else set())),
                     frozenset({out.buf.id}), (a.buf, out.buf))
        cc.depend("matrix", op.reads, op.writes)
        cc.issued(cc.q("matrix"), op)
        cc.emit("mm.mul", out.addr(), a.addr(), cc.reg(a.valid), a.dtype, "acc" if accumulate else "set",
                f"s{cc.sem(cc.q('matrix'))}")
        return out

    # --- embedding unit -------------------------------------------------------------------------------------
    def embedding_bag(self, table, indices, offsets, out, mode="sum"):
        cc = self.cc
        for name, t in (("table", table), ("indices", indices), ("offsets", offsets), ("out", out)):
            if not isinstance(t, Tensor):
                raise KernelError(f"embedding_bag: {name} must be a tensor argument")
        if table.ndim != 2 or out.ndim != 2 or indices.ndim != 1 or offsets.ndim != 1:
            raise KernelError("embedding_bag: table (rows x dim), indices (n), offsets (bags), out (bags x dim)")
        if table.dtype not in ("f32", "f16") or out.dtype != "f32":
            raise KernelError("embedding_bag: an f32 or f16 table pooled into an f32 output")
        if indices.dtype not in ("i32", "i64") or offsets.dtype not in ("i32", "i64"):
            raise KernelError("embedding_bag: indices and offsets must be int32 or int64")
        if out.shape != (offsets.shape[0], table.shape[1]):
            raise KernelError(f"embedding_bag: out must be {(offsets.shape[0], table.shape[1])}, got {out.shape}")
        modes = {"sum": T.EMB_MODE_SUM, "mean": T.EMB_MODE_MEAN}
        if mode not in modes:
            raise KernelError(f"embedding_bag: mode must be sum or mean, got {mode!r}")
        words = {T.EMB_TABLE: table.reg, T.EMB_ROWS: table.shape[0], T.EMB_DIM: table.shape[1],
                 T.EMB_FORMAT: T.EMB_FORMATS.index("fp32" if table.dtype == "f32" else "fp16"),
                 T.EMB_INDICES: indices.reg, T.EMB_NUM_INDICES: indices.shape[0],
                 T.EMB_INDEX_BYTES: ITEMSIZE[indices.dtype], T.EMB_SEGMENTS: offsets.reg,
                 T.EMB_NUM_BAGS: offsets.shape[0], T.EMB_OUTPUT: out.reg,
                 T.EMB_MODE: modes[mode] | T.EMB_MODE_OFFSETS, T.EMB_SEGMENT_BYTES: ITEMSIZE[offsets.dtype]}
        desc = cc.buffer(8 * T.EMB_DESC_WORDS)
        cc.written.add(out.name)
        from .compiler import ZERO, LocalAddr
        cc.depend("scalar", (), {desc.id})
        for w in range(T.EMB_DESC_WORDS):
            v = words.get(w, 0)
            cc.emit("sd", v if not _static(v) else cc.reg(v), (ZERO, LocalAddr(desc, 8 * w)))
        op = AsyncOp("emb", frozenset({desc.id, table.name, indices.name, offsets.name}), frozenset({out.name}),
                     (desc,))
        cc.depend("emb", op.reads, op.writes)
        cc.issued(cc.q("emb"), op)
        cc.emit("emb", cc.local_reg(desc, 0), f"s{cc.sem(cc.q('emb'))}")

    # --- which PE does what ---------------------------------------------------------------------------------
    def pe_id(self):
        return self.cc.csr("pe_id")

    def pe_count(self):
        return self.cc.csr("pe_count")

    def split(self, n, align=1):
        _split_args(n, align, (int, np.integer, Scalar))
        cc = self.cc
        npe = self.pe_count()
        chunk = cc.alu("div", cc.scalar(n) + npe - 1, npe)      # n >= 0: truncation is ceil's floor here
        if align > 1:
            chunk = cc.alui("andi", chunk + (align - 1), -align)
        lo = self.minimum(self.pe_id() * chunk, n)
        hi = self.minimum(lo + chunk, n)
        return lo, hi

    def minimum(self, a, b):
        for v in (a, b):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer, Scalar)):
                raise KernelError(f"minimum takes tiles, or two integers (Python or card values), got {type(v).__name__}")
        if _static(a) and _static(b):
            return min(a, b)
        return self.cc.alu("min", a, b)

    def maximum(self, a, b):
        for v in (a, b):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer, Scalar)):
                raise KernelError(f"maximum takes tiles, or two integers (Python or card values), got {type(v).__name__}")
        if _static(a) and _static(b):
            return max(a, b)
        return self.cc.alu("max", a, b)

    def barrier(self):
        self.cc.drain()
        self.cc.emit("barrier")

    # --- control flow ---------------------------------------------------------------------------------------
    def range(self, start, stop, step=1, pipeline=False, names=()):
        return _loop(self.cc, start, stop, step, pipeline, names)

    def if_(self, test, jumps, frame, names=()):
        if isinstance(test, Cond):
            if jumps:
                raise KernelError("return, break or continue inside an `if` on card values is not supported")
            return DynamicIf(self.cc, test, frame, names)
        return StaticIf(bool(test))


class StaticIf:
    def __init__(self, truth):
        self.truth = truth

    def then(self):
        return self.truth

    def orelse(self):
        return not self.truth

    def end(self):
        pass


class DynamicIf:
    """`if` on a card value: the branch is compiled, both arms traced once, queues drained at each join."""

    def __init__(self, cc, cond, frame, names):
        self.cc, self.frame, self.names = cc, frame, names
        cc.drain()
        self.else_, self.done, self.has_else = cc.label("else"), cc.label("endif"), False
        cc.branch_unless(cond, self.else_)
        cc.enter_block()
        self.before = dict(self.frame.f_locals)

    def then(self):
        return True

    def orelse(self):
        cc = self.cc
        _check_rebinding(self.before, self.frame, "an `if` on card values", self.names)
        cc.drain()
        cc.leave_block()
        cc.emit("jmp", self.done)
        cc.place(self.else_)
        cc.enter_block()
        self.has_else = True
        self.before = dict(self.frame.f_locals)
        return True

    def end(self):
        cc = self.cc
        _check_rebinding(self.before, self.frame, "an `if` on card values", self.names)
        cc.drain()
        cc.leave_block()
        if not self.has_else:
            cc.place(self.else_)
        cc.place(self.done)


def _same_number(a, b):
    numbers = (int, float, np.integer, np.floating)
    return isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and a == b


def _check_rebinding(before, frame, what, names):
    """names (from the front end's look at the source): variables read before they are assigned in a loop
    body, or assigned in a branch and read after it. Rebinding one to a new card value inside is an error."""
    after = frame.f_locals
    for name in names:
        v = after.get(name)
        if name in before and before[name] is not v and not _same_number(before[name], v):
            raise KernelError(f"`{name}` is bound before {what} and rebound inside it; the compiler traces the "
                              f"body once, so the new value would not carry to the next iteration or past the "
                              f"branch. Update a tile in place (`{name} += ...`, out=) or use a new name")


class _Pipeline:
    """The state of a pipelined loop while its two halves are traced."""

    def __init__(self, cc, var, depth, first_reg, step, start):
        self.cc, self.var, self.depth, self.first_reg, self.step, self.start = cc, var, depth, first_reg, step, start
        self.half = 0
        self.prefetch = ([], [])
        self.pf_bufs = (set(), set())   # tiles each half's prefetches write
        self.half_bufs = (set(), set())  # tiles each half's trace made
        self.stores = [[], []]          # per half: its stores (waited at the start of the same half next time)
        self.deferred = ([], [])        # per half: stores issued during the next half: (view, tile, engine)
        self.carry_ops = [{}, {}]       # per half: queues left running for its deferred stores: {queue: ops}
        self.carried = set()            # buffers in flight across the back edge (prefetched tiles, stored tiles)
        self.compute_issued = self.flushed = self.emitting = False
        self.marker = None
        self.stored = set()             # tensors the body stores to
        self.written = set()            # buffer ids the body's operations write
        self.first_buf = len(cc.buffers)  # buffers from here on are made inside the loop
        self.prefetched = set()         # tensors its prefetched loads read

    def check_read(self, tensor):
        """A load from `tensor` in the body: wrong if a store to it is deferred past it, or if the loop's
        prefetched loads read a tensor its body writes (both reorder accesses to the same bytes)."""
        if any(view.tensor.name == tensor for d in self.deferred for view, _, _ in d):
            raise PipelineHazard({tensor})

    def issued(self, queue, op):
        self.written |= {b for b in op.writes if not isinstance(b, str)}
        if queue.split(".")[0] in ("vector", "emb") or (queue.split(".")[0] == "matrix" and op.writes):
            self.compute_issued = True

    def before_wait(self):
        """The PE is about to stall, after issuing this iteration's first computations: first issue the
        previous iteration's stores (their wait then overlaps the computations already queued)."""
        if self.compute_issued:
            self.flush_previous()

    def flush_previous(self):
        if self.flushed or self.emitting:
            return
        self.flushed = True
        if self.half == 1:
            self.emit_deferred(0, -self.step)
        else:       # the other half is not traced yet: leave room, filled once it is (see _pipelined)
            self.marker = Splice()
            self.cc.code.append(self.marker)

    def emit_deferred(self, h, delta):
        """Half h's stores, with the loop variable `delta` away from their iteration's value."""
        cc, low = self.cc, self.cc.ops
        if not self.deferred[h]:
            return
        self.emitting = True
        for q, ops in self.carry_ops[h].items():
            cc.sync.pending[q] = list(ops)
            cc._wait(q, len(ops))
        for view, tile, eng in self.deferred[h]:
            low._emit_store(view, tile, eng, f"st{h}", shift=(self.var, delta, self.first_reg))
        self.emitting = False


def _loop(cc, start, stop, step, pipeline, names=()):
    """A loop on the card (the compiler traces the body once, or twice when pipelined)."""
    import sys
    if not _static(step) or step == 0:
        raise KernelError("range step must be a nonzero number known at compile time")
    start, stop = cc.scalar(start), cc.scalar(stop)
    frame = sys._getframe(1)
    cc.drain()
    if start.static and stop.static and not pipeline:
        trips = max(0, -(-(stop.const - start.const) // step))
        if trips == 0:
            return
    var = cc.vreg("i")
    cc.emit("addi", var, cc.reg(start), 0, defs=(var,))
    if step > 0 and cc.nonneg(start):
        cc.nonneg_regs.add(var.id)          # counts up from a value >= 0
    i = Scalar(cc, {var: 1})
    if pipeline:
        if step < 0 or cc.pipeline is not None:
            raise KernelError("pipeline=True needs a positive step and cannot nest inside another pipelined loop")
        yield from _pipelined(cc, var, i, start, stop, step, frame, names)
        return
    end = cc.label("endfor")
    top = cc.label("for")
    counted = start.static and stop.static
    if counted:
        cnt = cc.vreg("n")
        cc._li(cnt, trips)
    cc.place(top)
    loop = Loop(top)
    cc.loops.append(loop)
    if not counted:
        c = Cond("ge", i, stop) if step > 0 else Cond("ge", stop, i)
        cc.emit({"ge": "bge"}[c.op], cc.reg(c.a), cc.reg(c.b), end)
    cc.enter_block()
    cc.open_log()
    before = dict(frame.f_locals)
    yield i
    _check_rebinding(before, frame, "a loop on the card", names)
    carry = cc.carryable(*cc.logs[-1])
    cc.drain(keep=carry)
    counts = {q: len(cc.sync.pending[q]) for q in carry}
    for q in carry:          # iteration r-1's operations, after issuing iteration r's
        ops = cc.sync.pending[q]
        loop.carried |= {b.id for op in ops for b in op.bufs}
        cc.code.append(Insn("wait", (f"s{cc.sem(q)}", counts[q]), (), None, tuple(b for op in ops for b in op.bufs)))
    cc.close_log()
    cc.leave_block()
    cc.emit("addi", var, var, step, defs=(var,))
    if counted:
        loop.back = cc.emit("loop", cnt, top, defs=(cnt,))
    else:
        loop.back = cc.emit("jmp", top)
    cc.place(end)
    if carry:                # signals standing in for iteration -1's, so the first iteration's wait passes
        at = next(n for n, ins in enumerate(cc.code) if isinstance(ins, Place) and ins.label is top)
        pe = cc.reg(cc.csr("pe_id"))
        cc.code[at:at] = [Insn("sig", (pe, f"s{cc.sem(q)}"), ()) for q in carry for _ in range(counts[q])]
        for q in carry:
            cc._wait(q, counts[q])


def _pipelined(cc, var, i, start, stop, step, frame, names):
    """for i in range(start, stop, step) as a software pipeline of three stages: the loads at the top of the
    body are issued one iteration ahead (prefetch), the body computes, and its stores are issued during the
    next iteration once that one's first computation is under way. The body is traced twice (two sets of
    tiles; each half has its own semaphores) and unrolled."""
    exit_, exit0, top = cc.label("pexit"), cc.label("pexit0"), cc.label("pipe")
    pl = _Pipeline(cc, var, cc.control_depth + 1, cc.nregs + 1, step, start)
    start_r = cc.reg(start)
    stop_r = cc.reg(stop)
    cc.pipeline = pl
    halves = []
    before = dict(frame.f_locals)
    for h in (0, 1):
        pl.half, pl.compute_issued, pl.flushed = h, False, False
        saved, cc.code = cc.code, []
        cc.enter_block()
        yield i
        _check_rebinding(before, frame, "a pipelined loop on the card", names)
        pl.flush_previous()
        # the queues whose work the deferred stores read keep running into the next half
        srcs = {tile.buf.id for _, tile, _ in pl.deferred[h]}
        # only queues whose operations touch nothing but this half's own tiles (not the ones the other half
        # prefetches into, not tiles both halves share)
        own = pl.half_bufs[h] - pl.pf_bufs[h]
        # ... or that read tiles made before the loop and never written in it (a scale row, resident weights)
        constant = {b.id for b in cc.buffers[:pl.first_buf]} - pl.written
        carry = [q for q, ops in cc.sync.pending.items() if q.endswith(f".{h}") and ops
                 and any(op.writes & srcs for op in ops)
                 and all({b for b in op.writes if not isinstance(b, str)} <= own
                         and {b for b in op.reads if not isinstance(b, str)} <= own | constant
                         and not {x for x in op.reads | op.writes if isinstance(x, str)} for op in ops)]
        pl.carry_ops[h] = {q: list(cc.sync.pending[q]) for q in carry}
        cc.drain(keep=(f"pf{1 - h}", *carry))
        for q in carry:
            del cc.sync.pending[q]
        cc.leave_block()
        halves.append(cc.code)
        cc.code = saved
    cc.pipeline = None
    if pl.prefetched & pl.stored:       # loads moved ahead of stores to the same tensor: compile them in order
        raise PipelineHazard(pl.prefetched & pl.stored)
    if pl.marker is not None and pl.deferred[1]:      # half 0 issues half 1's stores, from the second round on
        saved, cc.code = cc.code, pl.marker.code
        first = cc.label("pfirst")
        cc.emit("beq", var, start_r, first)
        cc.cache.append({})
        pl.emit_deferred(1, -step)
        cc.cache.pop()
        cc.place(first)
        cc.code = saved
    for h in (0, 1):      # a half's stores of the round before leave its tiles before it reuses them
        if pl.stores[h]:
            keeps = tuple(b for op in pl.stores[h] for b in op.bufs)
            pl.carried |= {b.id for b in keeps}
            halves[h].insert(0, Insn("wait", (f"s{cc.sem(f'st{h}')}", len(pl.stores[h])), (), None, keeps))
    # prologue: signal the stores' semaphores as if a round had stored (so the first waits pass), then the
    # first iteration's loads
    for h in (0, 1):
        for _ in pl.stores[h]:
            cc.emit("sig", cc.reg(cc.csr("pe_id")), f"s{cc.sem(f'st{h}')}")
    cc.emit("bge", var, stop_r, exit_)
    cc.cache.append({})
    for issue in pl.prefetch[0]:
        issue((var, 0, pl.first_reg))
    cc.cache.pop()
    cc.place(top)
    loop = Loop(top, carried=pl.carried)
    cc.loops.append(loop)
    for h in (0, 1):
        nxt, skip = cc.vreg("nx"), cc.label("pskip")
        cc.emit("addi", nxt, var, step, defs=(nxt,))
        cc.emit("bge", nxt, stop_r, skip)
        cc.cache.append({})
        for issue in pl.prefetch[1 - h]:
            issue((var, step, pl.first_reg))
        cc.cache.pop()
        cc.place(skip)
        cc.code.extend(halves[h])
        cc.emit("addi", var, var, step, defs=(var,))
        if h == 0:
            cc.emit("bge", var, stop_r, exit0)
    loop.back = cc.emit("blt", var, stop_r, top)
    for h, label in ((1, None), (0, exit0)):          # the last iteration's stores
        if label is not None:
            cc.place(label)
        cc.cache.append({})
        pl.emit_deferred(h, -step)
        cc.cache.pop()
        if h == 1:
            cc.emit("jmp", exit_)
    cc.place(exit_)
    for h in (0, 1):
        if pl.stores[h]:
            cc.sync.pending[f"st{h}"] = list(pl.stores[h])
            cc._wait(f"st{h}", len(pl.stores[h]))
    for q in [q for q in cc.sync.pending if q.endswith((".0", ".1")) or q in ("pf0", "pf1")]:
        del cc.sync.pending[q]


def binary_operands(op, a, b, out, reverse, tile_class):
    """(tile, other, reverse) of a binary op's operands (the tile first; reverse when they were swapped), after
    checking that one is a tile and out= is a tile or None (compiler and interpreter alike)."""
    _out_tile(op, out, tile_class)
    if not isinstance(a, tile_class) and not isinstance(b, tile_class):
        raise KernelError(f"{op} takes a tile and a tile, number or float argument, got {type(a).__name__} and "
                          f"{type(b).__name__}")
    if not isinstance(a, tile_class):
        return b, a, not reverse
    return a, b, reverse


def _out_tile(op, out, tile_class):
    if out is not None and not isinstance(out, tile_class):
        raise KernelError(f"{op}: out= takes a tile, got {type(out).__name__}")


def _split_args(n, align, int_types):
    """split(n, align): n an integer (Python or card value), align a positive Python integer."""
    if n is None:
        raise KernelError("split: a length not known while compiling (the first dimension of an anysize tensor): "
                          "pass it to the kernel as an int argument")
    if isinstance(n, bool) or not isinstance(n, int_types):
        raise KernelError(f"split takes an integer count, got {type(n).__name__} {n!r}")
    if isinstance(align, bool) or not isinstance(align, (int, np.integer)) or align < 1:
        raise KernelError(f"split: align must be a positive integer, got {align!r}")


def _check_out(out, like):
    """out= of an elementwise op: a tile of the result's size and dtype (the unit writes that many elements)."""
    if out is not None and out.size * ITEMSIZE[out.dtype] < like.size * ITEMSIZE[like.dtype]:
        raise KernelError(f"out= must hold the result's {like.size} {like.dtype} elements "
                          f"({like.size * ITEMSIZE[like.dtype]} bytes), got a {out.shape} {out.dtype} tile")
