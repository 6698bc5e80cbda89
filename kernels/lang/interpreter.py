"""The kernel language run in numpy: every PE is a thread executing the kernel's Python code with concrete
values, no timing. Like Pallas's and Triton's interpret modes it exists to debug a kernel (print, pdb) and
to find what the compiled kernel would hide:
- tiles start filled with NaN (integers with a marker value), and a store of elements no operation wrote is
  an error naming the tile and the rows;
- indices outside a tensor are errors (a block running past the end is clamped, as on the card);
- between two barriers, a PE reading or writing elements another PE wrote (or writing elements another PE
  read) is an error: the card gives no order between PEs there (the missing synchronization).
Numerics follow the card's definitions (fp16 computed in fp32 and rounded, transcendentals in fp64 rounded
to fp32, int8 products in int32, sums in fp64 rounded once); results may differ from the card in the last
bit where the card's order of rounding differs (matrix sums; fp16 accumulation is modeled in fp64 here).
"""
from __future__ import annotations

import math
import threading

import numpy as np

from .compiler import ITEMSIZE, NUMPY
from .errors import KernelError
from .lowering import MATRIX_OUT, StaticIf, _same_number, _split_args, binary_operands

INT_FILL = {"i8": -128, "i32": -(1 << 31), "i64": -(1 << 63)}


def _fill(shape, dtype):
    if dtype in ("f32", "f16"):
        return np.full(shape, np.nan, NUMPY[dtype])
    return np.full(shape, INT_FILL[dtype], NUMPY[dtype])


class Shared:
    """What the PEs of one interpreted launch share: the tensors, barrier, and who touched what since it."""

    def __init__(self, npe, tensors):
        self.npe, self.tensors = npe, tensors
        self.barrier = _Barrier(npe, self)
        self.lock = threading.Lock()
        self.epoch = 0
        # per tensor name: last writer PE and last reader PE per element, and the barrier epoch of each
        self.writer = {n: np.full(t.array.size, -1, np.int16) for n, t in tensors.items()}
        self.wepoch = {n: np.full(t.array.size, -1, np.int64) for n, t in tensors.items()}
        self.reader = {n: np.full(t.array.size, -1, np.int16) for n, t in tensors.items()}
        self.repoch = {n: np.full(t.array.size, -1, np.int64) for n, t in tensors.items()}


class _Barrier:
    """All PEs of the launch meet; a PE that has finished (or failed) can reach no later barrier, so the ones
    waiting then learn at once that theirs will not complete (no timeout to sit out)."""

    def __init__(self, n, shared):
        self.n, self.shared = n, shared
        self.cond = threading.Condition()
        self.count = self.generation = self.left = 0
        self.broken = False

    def wait(self, pe):
        with self.cond:
            generation = self.generation
            self.count += 1
            if self.count == self.n:
                self.count = 0
                self.generation += 1
                self.shared.epoch += 1          # what PEs wrote before the barrier is ordered before what follows
                self.cond.notify_all()
                return
            while generation == self.generation:
                if self.broken or self.left:
                    self.broken = True
                    self.cond.notify_all()
                    raise KernelError(f"PE {pe} waits at a barrier that not every PE reaches (a PE finished or "
                                      f"failed without it)")
                self.cond.wait(timeout=1.0)

    def leave(self):
        with self.cond:
            self.left += 1
            self.cond.notify_all()

    def abort(self):
        with self.cond:
            self.broken = True
            self.cond.notify_all()


class ITensor:
    def __init__(self, name, array, dtype):
        self.name, self.array, self.dtype = name, array, dtype
        self.shape, self.ndim = array.shape, array.ndim
        self.flat_index = np.arange(array.size).reshape(array.shape)

    def __getitem__(self, idx):
        if not isinstance(idx, tuple):
            idx = (idx,)
        if len(idx) > self.ndim:
            raise KernelError(f"{self.name} has {self.ndim} dimensions, indexed with {len(idx)}")
        for d, ix in enumerate(idx):
            if isinstance(ix, slice):
                if ix.step not in (None, 1):
                    raise KernelError(f"{self.name}: slices with a step are not supported")
                for b in (ix.start, ix.stop):
                    if b is not None and b < 0:
                        raise KernelError(f"{self.name}: negative slice bound {b} in dimension {d}")
            elif not 0 <= int(ix) < self.shape[d]:
                raise KernelError(f"{self.name}: index {ix} is outside dimension {d} of size {self.shape[d]}")
        extents = []
        full = idx + (slice(None),) * (self.ndim - len(idx))
        for d, ix in enumerate(full):
            if isinstance(ix, slice):
                start = 0 if ix.start is None else int(ix.start)
                stop = self.shape[d] if ix.stop is None else int(ix.stop)
                extents.append(max(0, stop - start))
        return IView(self, idx, tuple(extents) or (1,))

    def whole(self):
        return IView(self, (), self.shape)

    def reshape(self, *shape):
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        if int(np.prod(shape)) != self.array.size:
            raise KernelError(f"cannot reshape {self.name} of shape {self.shape} to {shape}")
        t = ITensor(self.name, self.array.reshape(shape), self.dtype)
        t.flat_index = self.flat_index.reshape(shape)
        return t


class IView:
    def __init__(self, tensor, idx, extents):
        self.tensor, self.idx, self.shape = tensor, idx, extents

    def data(self):
        return self.tensor.array[self.idx]

    def elements(self):
        return np.asarray(self.tensor.flat_index[self.idx]).reshape(-1)


class ITile:
    def __init__(self, pe, shape, dtype, data=None, init=None, valid=None):
        self.pe, self.shape, self.dtype = pe, tuple(shape), dtype
        self.data = _fill(self.shape, dtype) if data is None else data
        self.init = np.zeros(self.shape, bool) if init is None else init
        self.valid = self.shape[0] if valid is None else valid

    ndim = property(lambda self: len(self.shape))
    size = property(lambda self: int(np.prod(self.shape)))

    def __getitem__(self, idx):
        if isinstance(idx, slice) or self.ndim == 2:
            d, i = self.data[idx], self.init[idx]
        else:
            if not 0 <= int(idx) < self.shape[0]:
                raise KernelError(f"element {idx} is outside a tile of {self.shape[0]}")
            d, i = self.data[idx:idx + 1], self.init[idx:idx + 1]
        if d.ndim == 0:
            d, i = d.reshape(1), i.reshape(1)
        return ITile(self.pe, d.shape, self.dtype, d, i)

    def _bin(self, o, op, out=None, reverse=False):
        return self.pe.binary(op, self, o, out=out, reverse=reverse)

    __add__ = __radd__ = lambda self, o: self._bin(o, "add")
    __mul__ = __rmul__ = lambda self, o: self._bin(o, "mul")
    __sub__ = lambda self, o: self._bin(o, "sub")
    __rsub__ = lambda self, o: self._bin(o, "sub", reverse=True)
    __iadd__ = lambda self, o: self._bin(o, "add", out=self)
    __isub__ = lambda self, o: self._bin(o, "sub", out=self)
    __imul__ = lambda self, o: self._bin(o, "mul", out=self)

    def __neg__(self):
        return self._bin(-1.0 if self.dtype in ("f32", "f16") else -1, "mul")

    def __truediv__(self, o):
        if isinstance(o, (int, float)) and not isinstance(o, bool):
            return self._bin(1.0 / o, "mul")
        return self._bin(self.pe.unary("recip", o), "mul")

    def astype(self, dtype, scale=1.0, zero_point=0, qparam=None):
        return self.pe.convert(self, dtype, scale, zero_point, qparam)

    def reshape(self, rows, cols):
        if self.ndim == 2 and rows * cols == self.size:
            return ITile(self.pe, (rows, cols), self.dtype, self.data.reshape(rows, cols),
                         self.init.reshape(rows, cols))
        if self.ndim != 1 or rows * cols > self.shape[0]:
            raise KernelError(f"reshape of a {self.shape} tile to {rows} x {cols}")
        return ITile(self.pe, (rows, cols), self.dtype, self.data[:rows * cols].reshape(rows, cols),
                     self.init[:rows * cols].reshape(rows, cols))

    def __repr__(self):
        return f"Tile({self.shape}, {self.dtype})\n{self.data}"


def _checked_range(r, frame, names):
    """A Python range that enforces the compiler's rule: a tile bound before the loop and read in its body
    is not rebound to a new tile inside it (the compiled loop would not carry it; update it in place)."""
    before = {n: frame.f_locals.get(n) for n in names}
    for i in r:
        yield i
        after = frame.f_locals
        for n in names:
            v = after.get(n)
            if n in before and before[n] is not None and before[n] is not v and not _same_number(before[n], v):
                raise KernelError(f"`{n}` is bound before a loop on the card and rebound inside it; the compiler "
                                  f"traces the body once, so the new value would not carry to the next iteration. "
                                  f"Update a tile in place (`{n} += ...`, out=) or use a new name")
            before[n] = v


def _round(x64, dtype):
    """fp64 values to the tile dtype through fp32 (the unit rounds to fp32 first, then to fp16)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(x64, np.float64).astype(np.float32).astype(NUMPY[dtype])


UNARY64 = {"sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)), "tanh": np.tanh, "exp": np.exp,
           "gelu": lambda x: np.where(np.isinf(x), np.where(x > 0, x, -0.0),
                                      0.5 * x * (1.0 + np.vectorize(math.erf, otypes=[float])(x / math.sqrt(2.0)))),
           "recip": lambda x: 1.0 / x, "rsqrt": lambda x: 1.0 / np.sqrt(x)}


class PE:
    """One PE of an interpreted launch (the same operation names as lowering.Lowering)."""

    def __init__(self, shared, pe, local_bytes, outputs):
        self.shared, self.pe, self.local_bytes, self.outputs = shared, pe, local_bytes, outputs

    # --- memory ------------------------------------------------------------------------------------------
    def _check_cross_pe(self, view, write):
        sh, name = self.shared, view.tensor.name
        el = view.elements()
        with sh.lock:
            w, we = sh.writer[name][el], sh.wepoch[name][el]
            bad = (w >= 0) & (w != self.pe) & (we == sh.epoch)
            if write:
                r, re_ = sh.reader[name][el], sh.repoch[name][el]
                bad |= (r >= 0) & (r != self.pe) & (re_ == sh.epoch)
            if bad.any():
                k = int(np.argmax(bad))
                other = int(w[k]) if w[k] >= 0 and w[k] != self.pe else int(sh.reader[name][el][k])
                raise KernelError(f"PE {self.pe} {'writes' if write else 'reads'} element {int(el[k])} of "
                                  f"{name}, which PE {other} {'read or wrote' if write else 'wrote'} since the "
                                  f"last barrier: nothing orders the two PEs (add vnpu.barrier() between them)")
            if write:
                sh.writer[name][el], sh.wepoch[name][el] = self.pe, sh.epoch
            else:
                sh.reader[name][el], sh.repoch[name][el] = self.pe, sh.epoch

    def _view(self, block):
        if isinstance(block, ITensor):
            return block.whole()
        if not isinstance(block, IView):
            raise KernelError(f"expected a block of a tensor argument (x[a:b]), got {type(block).__name__}")
        return block

    def empty(self, shape, dtype):
        shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
        if not 1 <= len(shape) <= 2 or min(shape) <= 0:
            raise KernelError(f"a tile has 1 or 2 positive dimensions, got shape {shape}")
        if int(np.prod(shape)) * ITEMSIZE[dtype] > self.local_bytes:
            raise KernelError(f"a tile of shape {shape} {dtype} is larger than the PE's local memory "
                              f"({self.local_bytes} bytes)")
        return ITile(self, shape, dtype)

    def output(self, shape, dtype):
        """The k-th vnpu.output of this PE is the launch's k-th output tensor (made by the first PE to ask)."""
        self.made = getattr(self, "made", 0) + 1
        sh = self.shared
        with sh.lock:
            if len(self.outputs) < self.made:
                name = f"out{len(self.outputs)}"
                t = ITensor(name, _fill(shape, dtype), dtype)
                sh.tensors[name] = t
                for table in (sh.writer, sh.reader):
                    table[name] = np.full(t.array.size, -1, np.int16)
                for table in (sh.wepoch, sh.repoch):
                    table[name] = np.full(t.array.size, -1, np.int64)
                self.outputs.append(t)
            t = self.outputs[self.made - 1]
        if t.shape != tuple(shape) or t.dtype != dtype:
            raise KernelError(f"PE {self.pe} makes output {self.made - 1} as {tuple(shape)} {dtype}, another PE as "
                              f"{t.shape} {t.dtype}")
        return t

    def load(self, block, into=None):
        view = self._view(block)
        if into is not None and not isinstance(into, ITile):
            raise KernelError(f"load(..., into=) takes a tile, got {type(into).__name__}")
        tile = self.empty(view.shape, view.tensor.dtype) if into is None else into
        # a block bounded by vnpu.minimum has only its valid rows here (the compiler sees the bound's extent):
        # it may be shorter than the tile it goes into
        if into is not None and (len(into.shape) != len(view.shape) or into.dtype != view.tensor.dtype
                                 or any(v > t for v, t in zip(view.shape, into.shape))):
            raise KernelError(f"load into a tile of {into.shape} {into.dtype} from a block of {view.shape} "
                              f"{view.tensor.dtype}")
        self._check_cross_pe(view, write=False)
        d = np.asarray(view.data())
        d = d.reshape(d.shape + (1,) * (tile.ndim - d.ndim)) if d.ndim < tile.ndim else d
        if tile.ndim == 1:
            d = d.reshape(-1)
        sl = tuple(slice(0, s) for s in d.shape)
        tile.data[sl] = d
        tile.init[sl] = True
        tile.valid = d.shape[0] if d.ndim else 1
        return tile

    def store(self, block, tile):
        view = self._view(block)
        if not isinstance(tile, ITile):
            raise KernelError("store takes (a block of a tensor argument, a tile)")
        if view.tensor.dtype != tile.dtype:
            raise KernelError(f"store of a {tile.dtype} tile into {view.tensor.name} of {view.tensor.dtype}: "
                              f"convert it first (tile.astype)")
        target = view.tensor.array[view.idx]
        n = target.shape
        shape = tile.shape if not (tile.ndim == 1 and len(view.shape) == 2) else (tile.shape[0], 1)
        # a tile may be larger than the block: the leading columns of a wider tile, or (a block bounded by
        # vnpu.minimum has only its valid rows here, where the compiler sees the bound's extent) its leading rows
        if len(shape) != len(view.shape) or any(t < v for t, v in zip(shape, n)):
            raise KernelError(f"store of a tile of shape {tile.shape} into a block of shape {view.shape}")
        if shape != view.shape:
            lead = tuple(slice(0, v) for v in view.shape)
            tile = ITile(self, view.shape, tile.dtype, tile.data.reshape(shape)[lead], tile.init.reshape(shape)[lead])
            shape = view.shape
        src_d = tile.data.reshape(shape)[tuple(slice(0, s) for s in n)] if target.ndim else tile.data.reshape(-1)[:1]
        src_i = tile.init.reshape(shape)[tuple(slice(0, s) for s in n)] if target.ndim else tile.init.reshape(-1)[:1]
        if not src_i.all():
            bad = np.argwhere(~src_i)[0]
            raise KernelError(f"store of tile elements no operation wrote (first at {tuple(int(b) for b in bad)} of "
                              f"a {tile.shape} tile): the card would store whatever its local memory held")
        self._check_cross_pe(view, write=True)
        view.tensor.array[view.idx] = src_d.reshape(target.shape)

    def transfer(self, dst, src):
        dst, src = self._view(dst), self._view(src)
        if dst.tensor.dtype != src.tensor.dtype or dst.shape != src.shape or len(src.shape) != 1:
            raise KernelError(f"transfer of a {src.shape} {src.tensor.dtype} block into a {dst.shape} "
                              f"{dst.tensor.dtype} block: same 1-D shape and dtype")
        self._check_cross_pe(src, write=False)
        d = np.asarray(src.data()).reshape(-1)
        target = dst.tensor.array[dst.idx]
        n = min(d.size, target.size)
        self._check_cross_pe(dst, write=True)
        target.reshape(-1)[:n] = d[:n]

    def move(self, dst, src, n, rows=None, planes=None, src_at=0, dst_at=0):
        if not isinstance(dst, ITile) or not isinstance(src, ITile) or dst.dtype != src.dtype:
            raise KernelError("move(dst, src, n, ...) takes two tiles of one dtype")
        if rows is None and planes is not None:
            rows, planes = planes, None
        ints = (int, np.integer)
        if isinstance(n, bool) or not isinstance(n, ints) or n < 1 or not all(
                d is None or (isinstance(d, (tuple, list)) and len(d) == 3 and all(
                    isinstance(v, ints) and not isinstance(v, bool) for v in d) and d[0] >= 1) for d in (rows, planes)) \
                or not all(isinstance(v, ints) and not isinstance(v, bool) for v in (src_at, dst_at)):
            raise KernelError("move: n a positive number, rows and planes (count >= 1, src_stride, dst_stride)")
        dims = [d for d in (planes, rows) if d is not None]
        sd, si = src.data.reshape(-1), src.init.reshape(-1)
        dd, di = dst.data.reshape(-1), dst.init.reshape(-1)
        import itertools
        for idx in itertools.product(*[range(d[0]) for d in dims]):
            s0 = src_at + sum(i * d[1] for i, d in zip(idx, dims))
            d0 = dst_at + sum(i * d[2] for i, d in zip(idx, dims))
            if s0 < 0 or d0 < 0 or s0 + n > sd.size or d0 + n > dd.size:
                raise KernelError(f"move: elements outside a tile (source {s0}, destination {d0}, {n} long)")
            dd[d0:d0 + n] = sd[s0:s0 + n]
            di[d0:d0 + n] = si[s0:s0 + n]

    def repeat(self, row, rows):
        if not isinstance(row, ITile) or row.ndim != 1:
            raise KernelError("repeat(row, rows) takes a 1-D tile and a number of rows")
        n = row.valid          # a short row: its valid part
        return ITile(self, (rows, n), row.dtype, np.tile(row.data[:n], (rows, 1)), np.tile(row.init[:n], (rows, 1)))

    # --- vector unit -----------------------------------------------------------------------------------------
    def _operand(self, x, like):
        if isinstance(x, ITile):
            return x
        if isinstance(x, (int, float, np.floating, np.integer)) and not isinstance(x, bool):
            if like.dtype in ("f32", "f16"):
                return ITile(self, (1,), like.dtype, np.array([x], NUMPY[like.dtype]), np.ones(1, bool))
            info = np.iinfo(NUMPY[like.dtype])
            if not info.min <= x <= info.max or x != int(x):
                raise KernelError(f"constant {x!r} is not a {like.dtype} value")
            return ITile(self, (1,), like.dtype, np.array([int(x)], NUMPY[like.dtype]), np.ones(1, bool))
        raise KernelError(f"cannot use {type(x).__name__} {x!r} as a vector operand")

    def _result(self, out, like, data, init):
        if out is not None and out.size * ITEMSIZE[out.dtype] < like.size * ITEMSIZE[like.dtype]:
            raise KernelError(f"out= must hold the result's {like.size} {like.dtype} elements, got a {out.shape} "
                              f"{out.dtype} tile")
        if out is not None and out.size != like.size:      # the result's elements, reinterpreted as on the card
            raw = np.frombuffer(np.ascontiguousarray(np.asarray(data, NUMPY[like.dtype])).tobytes(), NUMPY[out.dtype])
            flat, fi = out.data.reshape(-1), out.init.reshape(-1)
            flat[:raw.size] = raw
            fi[:raw.size] = np.repeat(np.asarray(init).reshape(-1), max(1, raw.size // max(1, like.size)))[:raw.size]
            return out
        if out is None:       # own, writable arrays (data and init may be broadcast views)
            return ITile(self, like.shape, like.dtype, np.array(data, dtype=NUMPY[like.dtype]).reshape(like.shape),
                         np.array(init, dtype=bool).reshape(like.shape), like.valid)
        out.data[...] = data.astype(NUMPY[out.dtype]).reshape(out.shape)
        out.init[...] = init.reshape(out.shape)
        return out

    def binary(self, op, a, b, out=None, reverse=False):
        a, b, reverse = binary_operands(op, a, b, out, reverse, ITile)
        b = self._operand(b, a)
        if b.dtype != a.dtype:
            raise KernelError(f"{op} of {a.dtype} and {b.dtype} tiles: convert one (tile.astype)")
        x, y = a.data, b.data
        xi, yi = a.init, b.init
        if b.size == 1:
            y, yi = y.reshape(()), yi.reshape(())
        elif a.ndim == 2 and b.shape == (a.shape[0], 1):
            pass
        elif a.ndim == 2 and b.ndim == 1 and b.shape[0] == a.shape[1]:
            pass
        elif a.size != b.size:
            raise KernelError(f"{op} of tiles of shapes {a.shape} and {b.shape}")
        else:
            y, yi = y.reshape(x.shape), yi.reshape(x.shape)
        if reverse and op == "sub":
            x, y = y, x
        if a.dtype in ("f32", "f16"):
            xf, yf = np.asarray(x, np.float32), np.asarray(y, np.float32)
            with np.errstate(all="ignore"):
                r = {"add": np.add, "sub": np.subtract, "mul": np.multiply,
                     "maximum": np.maximum, "minimum": np.minimum}[op](xf, yf)
            r = r.astype(NUMPY[a.dtype])
        else:
            xi64, yi64 = np.asarray(x, np.int64), np.asarray(y, np.int64)
            r = {"add": np.add, "sub": np.subtract, "mul": np.multiply,
                 "maximum": np.maximum, "minimum": np.minimum}[op](xi64, yi64)
            r = r.astype(NUMPY[a.dtype])       # wraps, as the unit does
        return self._result(out, a, np.broadcast_to(r, a.shape), np.broadcast_to(xi & yi, a.shape))

    def unary(self, op, a, out=None):
        _out_tile(op, out, ITile)
        if not isinstance(a, ITile):
            raise KernelError(f"{op} takes a tile, got {type(a).__name__}")
        if not isinstance(a, ITile):
            raise KernelError(f"{op} takes a tile")
        if op in ("relu", "copy"):
            if a.dtype in ("f32", "f16"):
                x = a.data.astype(np.float32)
                r = np.where(x < 0, np.float32(0), x) if op == "relu" else x
            else:
                r = np.maximum(a.data, 0) if op == "relu" else a.data
            return self._result(out, a, np.asarray(r), a.init)
        if a.dtype not in ("f32", "f16"):
            raise KernelError(f"{op} needs a float tile; the vector unit has no {op} for {a.dtype}")
        with np.errstate(all="ignore"):
            r = _round(UNARY64[op](a.data.astype(np.float64)), a.dtype)
        return self._result(out, a, r, a.init)

    def reduce(self, op, a, axis=None, out=None):
        _out_tile(op, out, ITile)
        if not isinstance(a, ITile) or not (axis is None or (isinstance(axis, int) and not isinstance(axis, bool))):
            raise KernelError(f"{op} takes a tile and an axis (None or an int), got {type(a).__name__}, {axis!r}")
        acc = "i32" if a.dtype in ("i8", "i32") else "f32"
        rows = a.data.reshape(-1)[None, :] if (axis is None or a.ndim == 1) else a.data
        init = a.init.reshape(-1)[None, :] if (axis is None or a.ndim == 1) else a.init
        if axis not in (None, 1, -1):
            raise KernelError(f"{op} over axis {axis}: reduce rows (axis=1) or everything")
        if acc == "f32":
            v = rows.astype(np.float64)
            r = v.sum(axis=1) if op == "sum" else v.max(axis=1)
            r = r.astype(np.float32)
        else:
            v = rows.astype(np.int64)
            r = (v.sum(axis=1) if op == "sum" else v.max(axis=1)).astype(np.int32)
        shape = (1,) if (axis is None or a.ndim == 1) else (a.shape[0], 1)
        res_init = init.all(axis=1).reshape(shape)
        if out is None:
            return ITile(self, shape, acc, r.reshape(shape), res_init)
        out.data[...] = r.reshape(out.shape)
        out.init[...] = res_init.reshape(out.shape)
        return out

    def convert(self, a, dtype, scale=1.0, zero_point=0, qparam=None):
        from .api import _dtype
        dt = _dtype(dtype)
        x = a.data
        if qparam is not None:
            q = int(qparam)
            scale = float(np.array([q & 0xFFFFFFFF], np.uint32).view(np.float32)[0])
            zero_point = ((q >> 32) + 2**31) % 2**32 - 2**31
        if dt in ("i8", "i32"):
            info = np.iinfo(NUMPY[dt])
            # the source as fp32 (an int32 past 2**24 loses bits there, as on the card), x * scale + zero_point
            # rounded once to fp32 (the card's fused step), then to even, clamped (int to int saturates)
            src = x.astype(np.float32).astype(np.float64)
            with np.errstate(all="ignore"):
                v = np.rint((src * np.float64(np.float32(scale)) + zero_point).astype(np.float32).astype(np.float64))
            r = np.where(np.isnan(v), 0, np.clip(v, info.min, info.max)).astype(NUMPY[dt])
        elif a.dtype in ("i8", "i32") and dt in ("f32", "f16"):
            r = _round((x.astype(np.float64) - zero_point) * np.float32(scale), dt)
        else:
            r = x.astype(NUMPY[dt])
        return ITile(self, a.shape, dt, r, a.init.copy(), a.valid)

    # --- matrix unit --------------------------------------------------------------------------------------
    def matmul(self, a, w, out=None, accumulate=False):
        _out_tile("matmul", out, ITile)
        if not isinstance(accumulate, (bool, np.bool_)):
            raise KernelError(f"matmul: accumulate must be True or False, got {accumulate!r}")
        if not (isinstance(a, ITile) and a.ndim == 2 and isinstance(w, ITile) and w.ndim == 2):
            raise KernelError("matmul takes two 2-D tiles: a (M x K) and w (K x N)")
        if a.dtype != w.dtype or a.dtype not in MATRIX_OUT:
            raise KernelError(f"matmul of {a.dtype} and {w.dtype}: the matrix unit multiplies i8, f16 or f32 pairs")
        if a.shape[1] != w.shape[0]:
            raise KernelError(f"matmul shapes {a.shape} @ {w.shape}: inner dimensions differ")
        acc = MATRIX_OUT[a.dtype]
        if accumulate and out is None:
            raise KernelError("matmul(accumulate=True) needs out= (the tile to accumulate into)")
        if a.dtype == "i8":
            r = a.data.astype(np.int64) @ w.data.astype(np.int64)
            if accumulate:
                r = r + out.data.astype(np.int64)
            r = r.astype(np.int32)
        else:
            r = a.data.astype(np.float64) @ w.data.astype(np.float64)
            if accumulate:
                r = r + out.data.astype(np.float64)
            r = r.astype(np.float32)
        init = np.broadcast_to(a.init.all(axis=1, keepdims=True) & w.init.all(), r.shape)
        if accumulate:
            init = init & out.init
        if out is None:
            return ITile(self, r.shape, acc, r, init.copy(), a.valid)
        if out.shape != r.shape or out.dtype != acc:
            raise KernelError(f"matmul out= must be a {r.shape[0]}x{r.shape[1]} {acc} tile, got {out.shape} "
                              f"{out.dtype}")
        out.data[...] = r
        out.init[...] = init
        return out

    def embedding_bag(self, table, indices, offsets, out, mode="sum"):
        t, idx, off = table.array, indices.array.astype(np.int64), offsets.array.astype(np.int64)
        for v in (table.whole(), indices.whole(), offsets.whole()):
            self._check_cross_pe(v, write=False)
        res = np.zeros(out.shape, np.float32)
        for b in range(len(off)):
            lo, hi = int(off[b]), int(off[b + 1]) if b + 1 < len(off) else len(idx)
            rows = idx[lo:hi]
            if ((rows < 0) | (rows >= t.shape[0])).any():
                raise KernelError(f"embedding_bag: bag {b} has an index outside the table's {t.shape[0]} rows")
            acc = np.zeros(t.shape[1], np.float32)
            for r in rows:
                acc = (acc + t[r].astype(np.float32)).astype(np.float32)
            if mode == "mean" and len(rows):
                acc = (acc / np.float32(len(rows))).astype(np.float32)
            res[b] = acc
        self._check_cross_pe(out.whole(), write=True)
        out.array[...] = res

    # --- PEs, control ------------------------------------------------------------------------------------
    def pe_id(self):
        return self.pe

    def pe_count(self):
        return self.shared.npe

    def split(self, n, align=1):
        _split_args(n, align, (int, np.integer))
        chunk = -(-int(n) // self.shared.npe)
        if align > 1:
            chunk = -(-chunk // align) * align
        lo = min(self.pe * chunk, n)
        return lo, min(lo + chunk, n)

    def minimum(self, a, b):
        for v in (a, b):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise KernelError(f"minimum takes tiles, or two integers (Python or card values), got {type(v).__name__}")
        return min(a, b)

    def maximum(self, a, b):
        for v in (a, b):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise KernelError(f"maximum takes tiles, or two integers (Python or card values), got {type(v).__name__}")
        return max(a, b)

    def barrier(self):
        self.shared.barrier.wait(self.pe)

    def range(self, start, stop, step=1, pipeline=False, names=()):
        import sys
        for v in (start, stop, step):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise KernelError(f"range takes integers (Python or card values), got {type(v).__name__} {v!r}")
        if step == 0:
            raise KernelError("range step must be a nonzero number known at compile time")
        return _checked_range(range(start, stop, step), sys._getframe(2), names)

    def if_(self, test, jumps, frame, names=()):
        return StaticIf(bool(test))


def _out_tile(op, out, tile_class):
    if out is not None and not isinstance(out, tile_class):
        raise KernelError(f"{op}: out= takes a tile, got {type(out).__name__}")
