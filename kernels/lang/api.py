"""The kernel language's functions. Each one works on whatever is running the kernel right now: the compiler
(lowering.Lowering, emitting instructions) or the interpreter (interpreter.PE, computing with numpy); both
implement the same names. Outside a kernel they raise KernelError."""
from __future__ import annotations

import builtins
import sys
import threading

from .errors import KernelError

_state = threading.local()


def current():
    ctx = getattr(_state, "ctx", None)
    if ctx is None:
        raise KernelError("this function is part of the kernel language: call it inside a @vnpu.kernel function")
    return ctx


class running:
    """Context manager: `ctx` runs the kernel code of this thread."""

    def __init__(self, ctx):
        self.ctx = ctx

    def __enter__(self):
        self.prev, _state.ctx = getattr(_state, "ctx", None), self.ctx
        return self.ctx

    def __exit__(self, *exc):
        _state.ctx = self.prev


class constexpr:
    """Annotate a kernel parameter `n: vnpu.constexpr` to make its value part of the compiled kernel (a Python
    number known while compiling: usable in shapes and static_range) instead of a run-time scalar."""


class anysize:
    """Annotate a tensor parameter `x: vnpu.anysize` to compile one kernel for every length of its first
    dimension (not part of the compiled kernel; the kernel bounds its accesses with a scalar argument)."""


# --- memory -------------------------------------------------------------------------------------------
def load(block, into=None):
    """A tile holding block (x[a:b] or x[r0:r1, c0:c1] of a tensor argument), DMAed in asynchronously; the
    compiler waits for it where it is first used. A block running past the tensor's end loads its valid part
    (a short last tile)."""
    return current().load(block, into)


def store(block, tile):
    """DMA tile out to block (the part of it inside the tensor), asynchronously."""
    return current().store(block, tile)


def empty(shape, dtype):
    """A tile in the PE's local memory, not yet written (the interpreter fills it with NaN)."""
    return current().empty(shape, _dtype(dtype))


def output(shape, dtype):
    """A new tensor in card memory that the kernel returns (allocated by the host before the launch)."""
    if isinstance(shape, (int,)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or not shape or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise KernelError(f"output: shape must be a tuple of non-negative Python integers, got {shape!r}")
    return current().output(tuple(shape), _dtype(dtype))


def _dtype(dtype):
    import numpy as np

    from .compiler import DTYPES
    if isinstance(dtype, str) and dtype in ("f32", "f16", "i8", "i32"):
        return dtype
    try:
        return DTYPES[np.dtype(dtype)]
    except (KeyError, TypeError, ValueError):
        raise KernelError(f"dtype {dtype!r}: tiles are float32, float16, int8 or int32") from None


def transfer(dst, src):
    """Copy a 1-D block of one tensor into another (DRAM, shared SRAM) with one DMA, asynchronously."""
    return current().transfer(dst, src)


def repeat(row, rows):
    """A (rows, n) tile whose rows are all the 1-D tile `row` (a DMA inside local memory): the operand of a
    per-column scale or bias over a block of rows."""
    return current().repeat(row, rows)


def move(dst, src, n, rows=None, planes=None, src_at=0, dst_at=0):
    """A DMA inside local memory: n contiguous elements, repeated over rows=(count, src_stride, dst_stride) and
    planes=(count, src_stride, dst_stride) (strides in elements), from src element src_at to dst element dst_at."""
    return current().move(dst, src, n, rows, planes, src_at, dst_at)


# --- compute -------------------------------------------------------------------------------------------
def matmul(a, w, out=None, accumulate=False):
    """a (M x K) @ w (K x N) on the matrix unit: int8 into int32, fp16 and fp32 into fp32. accumulate=True adds
    into out. The weights stay in the unit while the same tile is multiplied again."""
    return current().matmul(a, w, out, accumulate)


def _binary(name):
    def f(a, b, out=None):
        return current().binary(name, a, b, out=out)
    f.__name__ = name
    f.__doc__ = f"{name}(a, b): elementwise on the vector unit; b may be a tile of the same size, one element, " \
                f"a number or a float argument (broadcast)"
    return f


def _unary(name):
    def f(a, out=None):
        return current().unary(name, a, out=out)
    f.__name__ = name
    f.__doc__ = f"{name}(a): elementwise on the vector unit"
    return f


add, sub, mul = _binary("add"), _binary("sub"), _binary("mul")
relu, sigmoid, tanh, exp, gelu = _unary("relu"), _unary("sigmoid"), _unary("tanh"), _unary("exp"), _unary("gelu")
recip, rsqrt, copy = _unary("recip"), _unary("rsqrt"), _unary("copy")


def maximum(a, b, out=None):
    """Elementwise max of tiles, or of two card integers."""
    ctx = current()
    if _is_tile(a) or _is_tile(b):
        return ctx.binary("maximum", a, b, out=out)
    return ctx.maximum(a, b)


def minimum(a, b, out=None):
    ctx = current()
    if _is_tile(a) or _is_tile(b):
        return ctx.binary("minimum", a, b, out=out)
    return ctx.minimum(a, b)


def _is_tile(x):
    return hasattr(x, "shape") and hasattr(x, "dtype") and not hasattr(x, "tensor") and hasattr(x, "valid")


def sum(a, axis=None, out=None):   # noqa: A001 (the language's name, like numpy's)
    """Sum of a tile (one element: f32 for floats, i32 for integers), or of each row (axis=1)."""
    return current().reduce("sum", a, axis, out)


def max(a, axis=None, out=None):   # noqa: A001
    return current().reduce("max", a, axis, out)


def embedding_bag(table, indices, offsets, out, mode="sum"):
    """out[b] = sum (or mean) of table rows indices[offsets[b]:offsets[b+1]] on the card's embedding unit."""
    return current().embedding_bag(table, indices, offsets, out, mode)


# --- which PE does what ------------------------------------------------------------------------------------
def pe_id():
    return current().pe_id()


def pe_count():
    return current().pe_count()


def split(n, align=1):
    """(lo, hi): this PE's share of range(n), ceil(n / pe_count) elements (rounded up to align) per PE."""
    return current().split(n, align)


def barrier():
    """Every PE of the launch waits here for the others (the compiler first drains this PE's queues)."""
    return current().barrier()


# --- control flow ---------------------------------------------------------------------------------------
def range(start, stop=None, step=1, pipeline=False, _names=None):   # noqa: A001
    """A loop on the card (`for i in range(...)` in a kernel means this). pipeline=True issues the loads at the
    top of the body one iteration ahead, into a second set of tiles (double buffering)."""
    ctx = getattr(_state, "ctx", None)
    if ctx is None:
        return builtins.range(start, stop, step) if stop is not None else builtins.range(start)
    if stop is None:
        start, stop = 0, start
    return ctx.range(start, stop, step, pipeline, _names or ())


def static_range(start, stop=None, step=1):
    """A loop unrolled while compiling (bounds must be Python numbers)."""
    try:
        return builtins.range(start, stop, step) if stop is not None else builtins.range(start)
    except TypeError as e:
        raise KernelError(f"static_range needs Python integers: {e}") from None


def _if(test, jumps=False, names=()):
    """What the front end turns `if test:` into (see frontend.Rewriter)."""
    ctx = getattr(_state, "ctx", None)
    if ctx is None:
        from .lowering import StaticIf
        return StaticIf(bool(test))
    return ctx.if_(test, jumps, sys._getframe(1), names)


def _range(*args, _names=(), **kw):
    """What the front end turns `range(...)` in a `for` of the kernel into (a loop on the card)."""
    ctx = getattr(_state, "ctx", None)
    if ctx is None:
        return builtins.range(*args)
    if not 1 <= len(args) <= 3 or set(kw) - {"pipeline"}:
        raise KernelError("range(stop), range(start, stop[, step]) and pipeline=True")
    start, stop, step = (0, args[0], 1) if len(args) == 1 else (args + (1,))[:3]
    return ctx.range(start, stop, step, kw.get("pipeline", False), _names)


__all__ = ["load", "store", "empty", "output", "transfer", "repeat", "move", "matmul", "add", "sub", "mul", "relu",
           "sigmoid", "tanh", "exp", "gelu", "recip", "rsqrt", "copy", "maximum", "minimum", "sum", "max",
           "embedding_bag", "pe_id", "pe_count", "split", "barrier", "range", "static_range", "constexpr", "anysize"]


def _typed_arguments(f):
    """f, raising KernelError (at the kernel's line) instead of Python's TypeError when called with arguments
    its signature does not take."""
    import functools
    import inspect
    sig = inspect.signature(f)

    @functools.wraps(f)
    def checked(*args, **kwargs):
        try:
            sig.bind(*args, **kwargs)
        except TypeError as e:
            raise KernelError(f"vnpu.{f.__name__}{sig}: {e}") from None
        return f(*args, **kwargs)
    return checked


for _name in __all__:
    if _name not in ("constexpr", "anysize"):
        globals()[_name] = _typed_arguments(globals()[_name])
