"""The kernel language (kernels/lang): every feature run on both card engines (numba, reference) and the numpy
interpreter (Kernel.interpret), checked against independent references (numpy float64 math, torch).

The card is the default 'tiny' config (4 PEs, 256 KiB local memory). Shapes stay small: the reference engine
is about 100x slower than the Numba core."""
from __future__ import annotations

import inspect
import linecache
import math
import os

import numpy as np
import pytest
import torch

import vnpu

ENGINES = ("numba", "reference", "interpret")
F32, F16, I8, I32 = np.float32, np.float16, np.int8, np.int32


@pytest.fixture(params=ENGINES)
def engine(request):
    return request.param


def _copy(a):
    if isinstance(a, np.ndarray):
        return a.copy()
    if hasattr(a, "array"):                  # vnpu.shared(array)
        return vnpu.shared(a.array.copy())
    return a


def run(k, *args, engine, pes=None):
    """(what the kernel returns, the argument arrays after the run): k on `engine`, on copies of the arrays."""
    args = [_copy(a) for a in args]
    if engine == "interpret":
        res = k.interpret(*args, pes=pes)
    else:
        res, prof = k(*args, engine=engine, pes=pes)
        assert prof.cycles > 0 or engine == "reference"     # the reference engine has no time
    return res, [a.array if hasattr(a, "array") and not isinstance(a, np.ndarray) else a for a in args]


def _ordered(a):
    """Float bits as integers that order like the values (ulp distance = difference)."""
    a = np.asarray(a)
    if a.dtype == np.float16:
        i = a.view(np.int16).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFF), i)
    i = a.astype(np.float32).view(np.int32).astype(np.int64)
    return np.where(i < 0, -(i & 0x7FFFFFFF), i)


def assert_ulps(got, want, ulps, what=""):
    got, want = np.asarray(got), np.asarray(want).astype(got.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert np.array_equal(np.isnan(got), np.isnan(want)), what
    ok = ~np.isnan(want)
    d = np.abs(_ordered(got[ok]) - _ordered(want[ok]))
    assert d.max(initial=0) <= ulps, f"{what}: {d.max()} ulps apart (allowed {ulps}) at {np.argmax(d)}"


def f32_of(x64):
    """float64 values rounded once to float32 (the exact result of an fp32 operation)."""
    return np.asarray(x64, np.float64).astype(np.float32)


def rng(seed=0):
    return np.random.default_rng(seed)


def src_line(fn, text):
    """The line number of `text` in kernel fn's source file."""
    lines, first = inspect.getsourcelines(fn.fn if hasattr(fn, "fn") else fn)
    for n, line in enumerate(lines):
        if text in line:
            return first + n
    raise AssertionError(f"{text!r} not in {fn}")


# =====================================================================================================
# 1. loads and stores
# =====================================================================================================
@vnpu.kernel
def copy_split(x, y):
    lo, hi = vnpu.split(x.shape[0])
    for i in range(lo, hi, 64):
        end = vnpu.minimum(i + 64, hi)
        vnpu.store(y[i:end], vnpu.load(x[i:end]))


@vnpu.kernel
def copy_past_end(x, y):
    # x[i:i + 64] runs past the end on the last tile: the load and store take their valid part only
    for i in range(0, x.shape[0], 64):
        vnpu.store(y[i:i + 64], vnpu.load(x[i:i + 64]))


def _data(n, dt, seed=0):
    r = rng(seed)
    if np.issubdtype(dt, np.integer):
        info = np.iinfo(dt)
        return r.integers(info.min, info.max, n, endpoint=True).astype(dt)
    return (r.standard_normal(n) * 10).astype(dt)


@pytest.mark.parametrize("dt", [F32, F16, I8, I32])
@pytest.mark.parametrize("n", [1, 64, 203])
def test_copy_1d_split_every_dtype(engine, dt, n):
    x = _data(n, dt)
    out, (_, y) = run(copy_split, x, np.zeros_like(x), engine=engine)
    assert out is y                     # the argument written, updated in place
    assert np.array_equal(y, x) and np.array_equal(out, x)


@pytest.mark.parametrize("n", [64, 100, 129])
def test_short_last_tile_past_the_end(engine, n):
    x = _data(n, F32)
    out, (_, y) = run(copy_past_end, x, np.zeros_like(x), engine=engine, pes=1)
    assert np.array_equal(y, x)


@vnpu.kernel
def block2d(x, y, row, col, R: vnpu.constexpr, C: vnpu.constexpr):
    # a 2-D block at card-valued offsets (a row-strided DMA), stored to the same place of y; blocks past the
    # bottom or right edge are clipped
    if vnpu.pe_id() == 0:
        t = vnpu.load(x[row:row + R, col:col + C])
        vnpu.store(y[row:row + R, col:col + C], t + 1.0)


@vnpu.kernel
def block2d_static(x, y):
    t = vnpu.load(x[2:5, 3:10])
    vnpu.store(y[0:3, 1:8], t)


@pytest.mark.parametrize("r0,c0", [(0, 0), (3, 5), (9, 12), (11, 0)])
def test_block_2d(engine, r0, c0):
    x = _data(13 * 17, F32).reshape(13, 17)
    R, C = 4, 6
    _, (_, y, *_) = run(block2d, x, np.zeros_like(x), r0, c0, R, C, engine=engine)
    want = np.zeros_like(x)
    want[r0:r0 + R, c0:c0 + C] = f32_of(x[r0:r0 + R, c0:c0 + C].astype(np.float64) + 1.0)
    assert np.array_equal(y, want)


def test_block_2d_static_offsets(engine):
    x = _data(8 * 12, F16).reshape(8, 12)
    _, (_, y) = run(block2d_static, x, np.zeros((4, 9), F16), engine=engine, pes=1)
    want = np.zeros((4, 9), F16)
    want[0:3, 1:8] = x[2:5, 3:10]
    assert np.array_equal(y, want)


@vnpu.kernel
def column(x, y, z):
    c = vnpu.load(x[0:x.shape[0], 2])                   # a column: a strided 1-D block
    vnpu.store(y[0:x.shape[0], 1], c)                   # into a column of a matrix
    vnpu.store(z, c)                                    # and into a vector


def test_column_block(engine):
    x = _data(6 * 5, I32).reshape(6, 5)
    _, (_, y, z) = run(column, x, np.zeros((6, 3), I32), np.zeros(6, I32), engine=engine, pes=1)
    assert np.array_equal(y[:, 1], x[:, 2]) and not y[:, [0, 2]].any()
    assert np.array_equal(z, x[:, 2])


@vnpu.kernel
def element(x, y, i):
    vnpu.store(y[i + 1], vnpu.load(x[i]))             # one element, at a card-valued index
    vnpu.store(y[0, 0], vnpu.load(x[0, 0]) + 1.0)


def test_store_single_element(engine):
    x = np.arange(2, 8, dtype=F32).reshape(2, 3)
    _, (_, y, _) = run(element, x, np.zeros((3, 3), F32), 1, engine=engine, pes=1)
    want = np.zeros((3, 3), F32)
    want[2] = x[1]
    want[0, 0] = x[0, 0] + 1
    assert np.array_equal(y, want)


@vnpu.kernel
def whole(x, y):
    if vnpu.pe_id() == 0:
        vnpu.store(y, vnpu.load(x) * 3.0)


@pytest.mark.parametrize("shape", [(37,), (5, 24)])
def test_whole_tensor(engine, shape):
    x = _data(int(np.prod(shape)), F32).reshape(shape)
    _, (_, y) = run(whole, x, np.zeros_like(x), engine=engine)
    assert np.array_equal(y, f32_of(x.astype(np.float64) * 3.0))


@vnpu.kernel
def make_output(x):
    out = vnpu.output(x.shape, x.dtype)
    lo, hi = vnpu.split(x.shape[0])
    for i in range(lo, hi, 64):
        end = vnpu.minimum(i + 64, hi)
        vnpu.store(out[i:end], vnpu.load(x[i:end]) * 2.0)
    return out


@vnpu.kernel
def make_two_outputs(x):
    a = vnpu.output(x.shape, "f32")
    b = vnpu.output((x.shape[0], 2), np.int8)
    if vnpu.pe_id() == 0:
        t = vnpu.load(x)
        vnpu.store(a, t + 1.0)
        vnpu.store(b[:, 1], t.astype("i8"))
        vnpu.store(b[:, 0], t.astype("i8", zero_point=-3))
    return a, b


@pytest.mark.parametrize("n", [5, 150])
def test_output_returned(engine, n):
    x = _data(n, F32)
    out, _ = run(make_output, x, engine=engine)
    assert out.shape == x.shape and out.dtype == F32
    assert np.array_equal(out, f32_of(x.astype(np.float64) * 2))


def test_two_outputs_returned(engine):
    x = np.arange(-4, 6, dtype=F32)
    (a, b), _ = run(make_two_outputs, x, engine=engine)
    assert a.dtype == F32 and b.dtype == I8 and b.shape == (10, 2)
    assert np.array_equal(a, x + 1)
    assert np.array_equal(b[:, 1], x.astype(I8)) and np.array_equal(b[:, 0], (x - 3).astype(I8))


@vnpu.kernel
def add_in_place(x, n):
    lo, hi = vnpu.split(n)
    for i in range(lo, hi, 32):
        end = vnpu.minimum(i + 32, hi)
        t = vnpu.load(x[i:end])
        t += 1.0
        vnpu.store(x[i:end], t)


@pytest.mark.parametrize("pes", [1, None])
def test_in_place_update_of_argument(engine, pes):
    x0 = _data(100, F32)
    x = x0.copy()
    if engine == "interpret":
        out = add_in_place.interpret(x, 90, pes=pes)
    else:
        out, _ = add_in_place(x, 90, engine=engine, pes=pes)
    want = x0.copy()
    want[:90] = f32_of(x0[:90].astype(np.float64) + 1)
    assert out is x                     # the numpy array passed is the one updated
    assert np.array_equal(x, want)


@vnpu.kernel
def shared_io(s, y, z):
    # s lives in shared SRAM: read it, and write it in place
    if vnpu.pe_id() == 0:
        t = vnpu.load(s)
        vnpu.store(y, t * t)
        vnpu.store(s, t + t)
        vnpu.store(z, vnpu.load(y))


def test_shared_sram_tensor(engine):
    x = _data(48, F32)
    s = vnpu.shared(x.copy())
    _, (s_after, y, z) = run(shared_io, s, np.zeros_like(x), np.zeros_like(x), engine=engine)
    assert np.array_equal(y, f32_of(x.astype(np.float64) ** 2))
    assert np.array_equal(z, y)
    assert np.array_equal(s_after, f32_of(2.0 * x.astype(np.float64)))


# =====================================================================================================
# 2. the vector unit
# =====================================================================================================
BINARY64 = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "maximum": np.maximum,
            "minimum": np.minimum}


@vnpu.kernel
def binop(x, y, alpha, out, op: vnpu.constexpr, form: vnpu.constexpr):
    a = vnpu.load(x)
    f = getattr(vnpu, op)
    if form == "tile":
        r = f(a, vnpu.load(y))
    elif form == "one":                     # a one-element tile, broadcast
        r = f(a, vnpu.load(y[1:2]))
    elif form == "const":
        r = f(a, 0.75)
    elif form == "arg":                     # a float kernel argument
        r = f(a, alpha)
    elif form == "rconst":                  # the constant first
        r = f(0.75, a)
    else:                                   # rarg: the float argument first
        r = f(alpha, a)
    vnpu.store(out, r)


@pytest.mark.parametrize("op", list(BINARY64))
@pytest.mark.parametrize("form", ["tile", "one", "const", "arg", "rconst", "rarg"])
def test_binary_ops_f32(engine, op, form):
    x, y = _data(70, F32, 1), _data(70, F32, 2)
    alpha = -1.25
    _, (*_, out, _, _) = run(binop, x, y, alpha, np.zeros_like(x), op, form, engine=engine, pes=1)
    a, b = x.astype(np.float64), {"tile": y, "one": y[1], "const": 0.75, "arg": alpha, "rconst": 0.75,
                                  "rarg": alpha}[form]
    want = BINARY64[op](b, a) if form.startswith("r") else BINARY64[op](a, np.float64(b))
    assert np.array_equal(out, f32_of(want))


@pytest.mark.parametrize("op", list(BINARY64))
@pytest.mark.parametrize("form", ["tile", "one", "const", "rconst"])
def test_binary_ops_f16(engine, op, form):
    x, y = _data(40, F16, 3), _data(40, F16, 4)
    _, (*_, out, _, _) = run(binop, x, y, 0.0, np.zeros_like(x), op, form, engine=engine, pes=1)
    a, b = x.astype(np.float64), {"tile": y, "one": y[1], "const": 0.75, "rconst": 0.75}[form]
    want = BINARY64[op](np.float64(b), a) if form.startswith("r") else BINARY64[op](a, np.float64(b))
    assert np.array_equal(out, want.astype(F16))      # fp16 operands: the fp64 result rounds once to fp16


@vnpu.kernel
def binop_int(x, y, out, op: vnpu.constexpr, c: vnpu.constexpr):
    a = vnpu.load(x)
    f = getattr(vnpu, op)
    vnpu.store(out[0], f(a, vnpu.load(y)))
    vnpu.store(out[1], f(a, c))


@pytest.mark.parametrize("dt", [I8, I32])
@pytest.mark.parametrize("op", list(BINARY64))
def test_binary_ops_int(engine, dt, op):
    x, y = _data(24, dt, 5), _data(24, dt, 6)
    _, (*_, out, _, _) = run(binop_int, x, y, np.zeros((2, 24), dt), op, 3, engine=engine, pes=1)
    a = x.astype(np.int64)
    wrap = lambda v: v.astype(dt)                                  # noqa: E731 (the unit wraps)
    assert np.array_equal(out[0], wrap(BINARY64[op](a, y.astype(np.int64))))
    assert np.array_equal(out[1], wrap(BINARY64[op](a, np.int64(3))))


@vnpu.kernel
def operators(x, y, alpha, out):
    a = vnpu.load(x)
    b = vnpu.load(y)
    vnpu.store(out[0], a + b)
    vnpu.store(out[1], a - b)
    vnpu.store(out[2], a * b)
    vnpu.store(out[3], 1.0 - a)
    vnpu.store(out[4], 2.0 * a + 0.5)
    vnpu.store(out[5], -a)
    vnpu.store(out[6], alpha - a)
    vnpu.store(out[7], a / 4.0)
    vnpu.store(out[8], 0.5 + alpha * a)


def test_python_operators(engine):
    x, y = _data(33, F32, 1), _data(33, F32, 2)
    alpha = 3.5
    _, (*_, out) = run(operators, x, y, alpha, np.zeros((9, 33), F32), engine=engine, pes=1)
    a, b = x.astype(np.float64), y.astype(np.float64)
    want = [a + b, a - b, a * b, 1.0 - a, f32_of(2.0 * a).astype(np.float64) + 0.5, -a, alpha - a, a / 4.0,
            0.5 + f32_of(alpha * a).astype(np.float64)]
    for r, w in enumerate(want):
        assert np.array_equal(out[r], f32_of(w)), r


@vnpu.kernel
def inplace_forms(x, y, out):
    a = vnpu.load(x)
    b = vnpu.load(y)
    a += b
    a *= 2.0
    a -= b
    c = vnpu.empty(x.shape, x.dtype)
    vnpu.maximum(a, b, out=c)
    vnpu.sub(c, 1.0, out=c)
    vnpu.relu(c, out=c)
    vnpu.store(out[0], a)
    vnpu.store(out[1], c)


def test_augmented_assignment_and_out(engine):
    x, y = _data(50, F32, 7), _data(50, F32, 8)
    _, (*_, out) = run(inplace_forms, x, y, np.zeros((2, 50), F32), engine=engine, pes=1)
    a, b = x.astype(np.float64), y.astype(np.float64)
    a = f32_of(f32_of(f32_of(a + b).astype(np.float64) * 2).astype(np.float64) - b).astype(np.float64)
    c = np.maximum(f32_of(np.maximum(a, b) - 1.0), 0)
    assert np.array_equal(out[0], f32_of(a))
    assert np.array_equal(out[1], c)


@vnpu.kernel
def row_broadcast(x, c, v, out, op: vnpu.constexpr):
    t = vnpu.load(x)                        # (R, C)
    f = getattr(vnpu, op)
    vnpu.store(out[0], f(t, vnpu.load(c)))  # c: (R, 1), one value per row
    vnpu.store(out[1], f(t, vnpu.load(v)))  # v: (C,), the same row vector for every row


@pytest.mark.parametrize("op", list(BINARY64))
def test_row_broadcast(engine, op):
    R, C = 5, 12
    x, c, v = _data(R * C, F32, 1).reshape(R, C), _data(R, F32, 2).reshape(R, 1), _data(C, F32, 3)
    _, (*_, out, _) = run(row_broadcast, x, c, v, np.zeros((2, R, C), F32), op, engine=engine, pes=1)
    f = BINARY64[op]
    assert np.array_equal(out[0], f32_of(f(x.astype(np.float64), c.astype(np.float64))))
    assert np.array_equal(out[1], f32_of(f(x.astype(np.float64), v.astype(np.float64)[None, :])))


UNARY64 = {
    "relu": lambda t: torch.relu(t),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "exp": torch.exp,
    "gelu": lambda t: torch.nn.functional.gelu(t),            # the exact (erf) GELU
    "recip": torch.reciprocal,
    "rsqrt": torch.rsqrt,
    "copy": lambda t: t.clone(),
}


@vnpu.kernel
def unop(x, out, op: vnpu.constexpr):
    lo, hi = vnpu.split(x.shape[0], align=64)
    for i in range(lo, hi, 64):
        end = vnpu.minimum(i + 64, hi)
        vnpu.store(out[i:end], getattr(vnpu, op)(vnpu.load(x[i:end])))


def _unary_input(op, n, dt, seed=0):
    r = rng(seed)
    lo, hi = {"exp": (-10, 10), "recip": (0.05, 50), "rsqrt": (1e-3, 1e3)}.get(op, (-8, 8))
    x = r.uniform(lo, hi, n)
    if op == "recip":
        x = x * np.where(r.random(n) < 0.5, -1, 1)
    x = x.astype(dt)
    x[:3] = np.array([0.5, 1.0, 2.0], dt)
    return x


@pytest.mark.parametrize("op", list(UNARY64))
def test_unary_f32(engine, op):
    x = _unary_input(op, 150, F32)
    _, (_, out, _) = run(unop, x, np.zeros_like(x), op, engine=engine)
    want = UNARY64[op](torch.from_numpy(x.astype(np.float64))).numpy()
    # the card computes transcendentals in fp64 and rounds to fp32: at most 1 ulp from the fp64 reference
    assert_ulps(out, want.astype(F32), 0 if op in ("relu", "copy") else 1, op)


@pytest.mark.parametrize("op", list(UNARY64))
def test_unary_f16(engine, op):
    x = _unary_input(op, 100, F16)
    _, (_, out, _) = run(unop, x, np.zeros_like(x), op, engine=engine)
    want = UNARY64[op](torch.from_numpy(x.astype(np.float64))).numpy().astype(F16)
    assert_ulps(out, want, 0 if op in ("relu", "copy") else 1, op)


@pytest.mark.parametrize("dt", [I8, I32])
def test_unary_int_relu_copy(engine, dt):
    x = _data(80, dt)
    for op, want in (("relu", np.maximum(x, 0)), ("copy", x)):
        _, (_, out, _) = run(unop, x, np.zeros_like(x), op, engine=engine)
        assert np.array_equal(out, want), op


@vnpu.kernel
def reductions(x, s, m):
    t = vnpu.load(x)
    vnpu.store(s, vnpu.sum(t))
    vnpu.store(m, vnpu.max(t))


@vnpu.kernel
def row_reductions(x, s, m):
    t = vnpu.load(x)
    vnpu.store(s, vnpu.sum(t, axis=1))
    vnpu.store(m, vnpu.max(t, axis=1))


def _sum_ref(x):
    return np.float32(math.fsum(x.astype(np.float64).ravel()))


@pytest.mark.parametrize("dt", [F32, F16, I8, I32])
def test_reduce_1d(engine, dt):
    x = _data(300, dt) if dt != I32 else rng().integers(-1000, 1000, 300).astype(I32)
    acc = I32 if np.issubdtype(dt, np.integer) else F32
    _, (_, s, m) = run(reductions, x, np.zeros(1, acc), np.zeros(1, acc), engine=engine, pes=1)
    if acc is I32:
        assert s[0] == x.astype(np.int64).sum() and m[0] == x.max()
    else:
        assert_ulps(s, np.array([_sum_ref(x)]), 1, "sum")      # summed in fp64, rounded once
        assert m[0] == np.float32(x.max())


@pytest.mark.parametrize("dt", [F32, I8])
def test_reduce_rows(engine, dt):
    x = _data(6 * 40, dt).reshape(6, 40)
    acc = I32 if dt == I8 else F32
    _, (_, s, m) = run(row_reductions, x, np.zeros((6, 1), acc), np.zeros((6, 1), acc), engine=engine, pes=1)
    if acc is I32:
        assert np.array_equal(s[:, 0], x.astype(np.int64).sum(1)) and np.array_equal(m[:, 0], x.max(1))
    else:
        assert_ulps(s[:, 0], np.array([_sum_ref(r) for r in x]), 1, "row sums")
        assert np.array_equal(m[:, 0], x.max(1))


@vnpu.kernel
def softmax_rows(x, y):
    for r in range(0, x.shape[0], 4):
        t = vnpu.load(x[r:r + 4, :])
        e = vnpu.exp(t - vnpu.max(t, axis=1))
        vnpu.store(y[r:r + 4, :], e * vnpu.recip(vnpu.sum(e, axis=1)))


def test_softmax_rows_short_last_row_tile(engine):
    x = _data(10 * 24, F32).reshape(10, 24) / 4
    _, (_, y) = run(softmax_rows, x, np.zeros_like(x), engine=engine, pes=1)
    want = torch.softmax(torch.from_numpy(x.astype(np.float64)), dim=1).numpy()
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=0)


@vnpu.kernel
def sum_of_short_tiles(x, out, n):
    # the last tile is short (x[i:min(i + 64, n)]): its sum covers the valid elements only
    acc = vnpu.empty((1,), "f32")
    vnpu.mul(vnpu.load(x[0:1]), 0.0, out=acc)
    for i in range(0, n, 64):
        acc += vnpu.sum(vnpu.load(x[i:vnpu.minimum(i + 64, n)]))
    vnpu.store(out, acc)


@pytest.mark.parametrize("n", [64, 100])
def test_sum_over_short_tiles(engine, n):
    x = np.arange(1, n + 1, dtype=F32)
    _, (_, out, _) = run(sum_of_short_tiles, x, np.zeros(1, F32), n, engine=engine, pes=1)
    assert out[0] == n * (n + 1) // 2


@vnpu.kernel
def convert(x, out, scale: vnpu.constexpr, zp: vnpu.constexpr):
    vnpu.store(out, vnpu.load(x).astype(out.dtype, scale=scale, zero_point=zp))


@pytest.mark.parametrize("src,dst", [(F32, F16), (F16, F32), (F32, I32), (I32, F32), (I8, I32), (F16, I8)])
def test_astype_plain(engine, src, dst):
    x = (rng().standard_normal(90) * 40).astype(src) if not np.issubdtype(src, np.integer) else _data(90, src)
    _, (_, out, _, _) = run(convert, x, np.zeros(90, dst), 1.0, 0, engine=engine, pes=1)
    if np.issubdtype(dst, np.integer) and not np.issubdtype(src, np.integer):
        info = np.iinfo(dst)                        # float -> int rounds half to even and saturates
        want = np.clip(np.rint(x.astype(np.float64)), info.min, info.max).astype(dst)
    else:
        want = torch.from_numpy(x).to({F16: torch.float16, F32: torch.float32, I32: torch.int32}[dst]).numpy()
    assert np.array_equal(out, want)


@pytest.mark.parametrize("scale,zp", [(0.05, 0), (0.1, -7), (0.3, 12), (0.07, 127)])
def test_quantize_like_torch(engine, scale, zp):
    r = rng(3)
    x = (r.standard_normal(200) * 4).astype(F32)
    x[:4] = [0.025, -0.075, 1e6, -1e6]                # ties and saturation
    inv = float(np.float32(1.0) / np.float32(scale))  # kernels/elementwise.quantize: 1.0f / f32(scale)
    _, (_, q, _, _) = run(convert, x, np.zeros(200, I8), inv, zp, engine=engine, pes=1)
    want = torch.quantize_per_tensor(torch.from_numpy(x), scale, zp, torch.qint8).int_repr().numpy()
    assert np.array_equal(q, want)


@pytest.mark.parametrize("scale,zp", [(0.05, 0), (0.1, -7), (1.7, 30)])
@pytest.mark.parametrize("dst", [F32, F16])
def test_dequantize_like_torch(engine, scale, zp, dst):
    q = _data(120, I8)
    scale = float(np.float32(scale))
    _, (_, y, _, _) = run(convert, q, np.zeros(120, dst), scale, zp, engine=engine, pes=1)
    want = torch._make_per_tensor_quantized_tensor(torch.from_numpy(q), scale, zp).dequantize()
    assert_ulps(y, want.numpy().astype(dst) if dst == F16 else want.numpy(), 0, "dequantize")


# =====================================================================================================
# 3. the matrix unit
# =====================================================================================================
@vnpu.kernel
def mm_rows(a, w, out, TM: vnpu.constexpr):
    wt = vnpu.load(w)
    lo, hi = vnpu.split(a.shape[0])
    for r in range(lo, hi, TM):
        end = vnpu.minimum(r + TM, hi)
        vnpu.store(out[r:end, :], vnpu.matmul(vnpu.load(a[r:end, :]), wt))


def _mm_data(M, K, N, dt, seed=0):
    r = rng(seed)
    if dt == I8:
        return r.integers(-128, 128, (M, K)).astype(I8), r.integers(-128, 128, (K, N)).astype(I8)
    return (r.standard_normal((M, K))).astype(dt), (r.standard_normal((K, N))).astype(dt)


def _check_mm(out, a, w, dt):
    ref = a.astype(np.float64) @ w.astype(np.float64)
    if dt == I8:
        assert out.dtype == I32 and np.array_equal(out, ref.astype(np.int64))      # exact int32
    elif dt == F32:
        assert out.dtype == F32
        np.testing.assert_allclose(out, ref, rtol=0, atol=2 * np.finfo(F32).eps * np.abs(ref).max())
    else:                       # fp16 products summed in fp32: K roundings at most
        bound = a.shape[1] * np.finfo(F32).eps * (np.abs(a.astype(np.float64)) @ np.abs(w.astype(np.float64)))
        assert out.dtype == F32 and (np.abs(out - ref) <= bound + 1e-30).all()


@pytest.mark.parametrize("dt", [I8, F16, F32])
@pytest.mark.parametrize("M,TM", [(16, 8), (23, 8)])
def test_matmul(engine, dt, M, TM):
    K, N = (24, 12) if engine != "reference" else (8, 8)
    a, w = _mm_data(M, K, N, dt)
    out = np.zeros((M, N), I32 if dt == I8 else F32)
    _, (_, _, got, _) = run(mm_rows, a, w, out, TM, engine=engine)
    _check_mm(got, a, w, dt)


@vnpu.kernel
def mm_k_static(a, w, out, TK: vnpu.constexpr):
    if vnpu.pe_id() == 0:
        acc = vnpu.empty(out.shape, out.dtype)
        for k in vnpu.static_range(0, a.shape[1], TK):
            vnpu.matmul(vnpu.load(a[:, k:k + TK]), vnpu.load(w[k:k + TK, :]), out=acc, accumulate=k > 0)
        vnpu.store(out, acc)


@vnpu.kernel
def mm_k_dynamic(a, w, out, K, TK: vnpu.constexpr):
    # the K loop on the card: the first block sets, the others accumulate into the same tile
    if vnpu.pe_id() == 0:
        acc = vnpu.matmul(vnpu.load(a[:, 0:TK]), vnpu.load(w[0:TK, :]))
        for k in range(TK, K, TK):
            vnpu.matmul(vnpu.load(a[:, k:k + TK]), vnpu.load(w[k:k + TK, :]), out=acc, accumulate=True)
        vnpu.store(out, acc)


@pytest.mark.parametrize("dt", [I8, F16, F32])
@pytest.mark.parametrize("kern", ["static", "dynamic"])
def test_matmul_accumulate_over_k(engine, dt, kern):
    M, K, N, TK = 6, 32, 5, 8
    a, w = _mm_data(M, K, N, dt, 1)
    out = np.zeros((M, N), I32 if dt == I8 else F32)
    if kern == "static":
        _, (_, _, got, _) = run(mm_k_static, a, w, out, TK, engine=engine)
    else:
        _, (_, _, got, _, _) = run(mm_k_dynamic, a, w, out, K, TK, engine=engine)
    _check_mm(got, a, w, dt)


# =====================================================================================================
# 4. the embedding unit
# =====================================================================================================
@vnpu.kernel
def emb_bag(table, indices, offsets, out, mode: vnpu.constexpr):
    if vnpu.pe_id() == 0:
        vnpu.embedding_bag(table, indices, offsets, out, mode=mode)


@pytest.mark.parametrize("mode", ["sum", "mean"])
@pytest.mark.parametrize("tdt,idt", [(F32, np.int64), (F32, I32), (F16, np.int64)])
def test_embedding_bag_like_torch(engine, mode, tdt, idt):
    r = rng(4)
    table = r.standard_normal((20, 8)).astype(tdt)
    indices = r.integers(0, 20, 15).astype(idt)
    offsets = np.array([0, 3, 3, 7, 12], idt)                # bag 1 is empty
    _, (_, _, _, out, _) = run(emb_bag, table, indices, offsets, np.zeros((5, 8), F32), mode, engine=engine)
    want = torch.nn.functional.embedding_bag(torch.from_numpy(indices.astype(np.int64)),
                                             torch.from_numpy(table.astype(F32)),
                                             torch.from_numpy(offsets.astype(np.int64)), mode=mode).numpy()
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)


# =====================================================================================================
# 5. control flow
# =====================================================================================================
@vnpu.kernel
def bounded_loop(x, y, lo, hi):
    # card-valued bounds (int kernel arguments), a static step; no split: PE 0 only
    if vnpu.pe_id() == 0:
        for i in range(lo, hi, 16):
            end = vnpu.minimum(i + 16, hi)
            vnpu.store(y[i:end], vnpu.load(x[i:end]) + 1.0)


@pytest.mark.parametrize("lo,hi", [(0, 100), (5, 21), (7, 7), (30, 10), (0, 16)])
def test_dynamic_bounds_and_zero_trip(engine, lo, hi):
    x = _data(100, F32)
    _, (_, y, _, _) = run(bounded_loop, x, np.zeros_like(x), lo, hi, engine=engine)
    want = np.zeros_like(x)
    want[lo:hi] = f32_of(x[lo:hi].astype(np.float64) + 1)
    assert np.array_equal(y, want)


@vnpu.kernel
def static_loops(x, y):
    # static trip counts: a counted loop, a zero-trip loop, a negative step
    if vnpu.pe_id() == 0:
        for i in range(0, x.shape[0], 16):
            vnpu.store(y[0, i:i + 16], vnpu.load(x[i:i + 16]))
        for i in range(0):
            vnpu.store(y[1, 0:16], vnpu.load(x[0:16]))
        for i in range(x.shape[0] - 16, -1, -16):     # descending: the last store to y[2, 0:16] is i = 0
            vnpu.store(y[2, 0:16], vnpu.load(x[i:i + 16]))
        for i in range(16, x.shape[0], 16):           # ascending: the last is the last block
            vnpu.store(y[3, 0:16], vnpu.load(x[i:i + 16]))


def test_static_loops_and_negative_step(engine):
    x = _data(64, F32)
    _, (_, y) = run(static_loops, x, np.zeros((4, 64), F32), engine=engine)
    assert np.array_equal(y[0], x)
    assert not y[1].any()
    assert np.array_equal(y[2, :16], x[:16])
    assert np.array_equal(y[3, :16], x[48:64])


@vnpu.kernel
def negative_dynamic(x, y, n):
    # a negative step with a card-valued start; each iteration overwrites y[0:8]
    if vnpu.pe_id() == 0:
        for i in range(n - 8, -1, -8):
            vnpu.store(y[0:8], vnpu.load(x[i:i + 8]))
            vnpu.store(y[i + 8:i + 16], vnpu.load(x[i:i + 8]))


@pytest.mark.parametrize("n", [8, 40, 0])
def test_negative_step_dynamic(engine, n):
    x = _data(48, F32)
    _, (_, y, _) = run(negative_dynamic, x, np.zeros(56, F32), n, engine=engine)
    want = np.zeros(56, F32)
    for i in range(n - 8, -1, -8):
        want[0:8] = x[i:i + 8]
        want[i + 8:i + 16] = x[i:i + 8]
    assert np.array_equal(y, want)


@vnpu.kernel
def nested(x, y, n):
    # rows on the card (dynamic, split over PEs), columns in an inner static loop, an unrolled inner step
    lo, hi = vnpu.split(n)
    for r in range(lo, hi):
        for c in range(0, x.shape[1], 8):
            t = vnpu.load(x[r, c:c + 8])
            for k in vnpu.static_range(2):
                t += 1.0
            vnpu.store(y[r, c:c + 8], t)


@pytest.mark.parametrize("pes", [1, 4])
def test_nested_loops(engine, pes):
    x = _data(7 * 24, F32).reshape(7, 24)
    _, (_, y, _) = run(nested, x, np.zeros_like(x), 6, engine=engine, pes=pes)
    want = np.zeros_like(x)
    want[:6] = f32_of(f32_of(x[:6].astype(np.float64) + 1).astype(np.float64) + 1)
    assert np.array_equal(y, want)


@vnpu.kernel
def branches(x, y, n, flag: vnpu.constexpr):
    lo, hi = vnpu.split(n)
    for i in range(lo, hi, 16):
        end = vnpu.minimum(i + 16, hi)
        t = vnpu.load(x[i:end])
        if i < 32:                         # a card value: a branch, with else
            vnpu.store(y[0, i:end], t * 2.0)
        else:
            vnpu.store(y[0, i:end], t + 1.0)
        if i >= 48:                        # without else
            vnpu.store(y[1, i:end], t)
        if flag:                           # a Python value: decided while compiling
            vnpu.store(y[2, i:end], t)
        else:
            vnpu.store(y[3, i:end], t)
    if vnpu.pe_id() == 0:                 # only PE 0
        vnpu.store(y[4, 0:8], vnpu.load(x[0:8]))
    if n != 80:
        vnpu.store(y[5, 0:1], vnpu.load(x[0:1]))
    if vnpu.pe_count() <= 1:
        vnpu.store(y[6, 0:1], vnpu.load(x[1:2]))
    if n > 5:
        if n == 80:
            p = vnpu.pe_id()
            vnpu.store(y[7, p:p + 1], vnpu.load(x[p:p + 1]))


@pytest.mark.parametrize("pes", [1, None])
@pytest.mark.parametrize("flag", [0, 1])
def test_if_on_card_and_python_values(engine, pes, flag):
    n = 80
    x = _data(n, F32)
    _, (_, y, _, _) = run(branches, x, np.zeros((8, n), F32), n, flag, engine=engine, pes=pes)
    npe = pes or 4
    x64 = x.astype(np.float64)
    # the branch is per tile; tiles start at multiples of 16 from each PE's lo (lo = p * 20 with 4 PEs)
    chunk = -(-n // npe)
    starts = np.array([p * chunk + ((i - p * chunk) // 16) * 16 for p in range(npe) for i in
                       range(p * chunk, min(n, (p + 1) * chunk))])
    assert np.array_equal(y[0], np.where(starts < 32, f32_of(x64 * 2), f32_of(x64 + 1)))
    assert np.array_equal(y[1], np.where(starts >= 48, x, 0))
    assert np.array_equal(y[2], x if flag else 0 * x)
    assert np.array_equal(y[3], 0 * x if flag else x)
    assert np.array_equal(y[4, :8], x[:8]) and not y[4, 8:].any()
    assert not y[5].any()
    assert y[6, 0] == (x[1] if npe == 1 else 0)
    assert np.array_equal(y[7, :npe], x[:npe]) and not y[7, npe:].any()


@vnpu.kernel
def pipelined(x, y, n, T: vnpu.constexpr):
    lo, hi = vnpu.split(n, align=16)
    for i in range(lo, hi, T, pipeline=True):
        end = vnpu.minimum(i + T, hi)
        a = vnpu.load(x[i:end])
        vnpu.store(y[i:end], a * 2.0 + 1.0)


@pytest.mark.parametrize("pes", [1, None])
@pytest.mark.parametrize("tiles", [0, 1, 2, 3, 4, 7])
def test_pipelined_loop_trip_counts(engine, pes, tiles):
    T = 32
    npe = pes or 4
    n = tiles * T * npe - (5 if tiles else 0)         # the last PE's last tile is short
    x = _data(max(n, 1), F32)
    _, (_, y, _, _) = run(pipelined, x, np.zeros_like(x), n, T, engine=engine, pes=pes)
    want = np.zeros_like(x)
    want[:n] = f32_of(f32_of(x[:n].astype(np.float64) * 2).astype(np.float64) + 1)
    assert np.array_equal(y, want)


@vnpu.kernel
def pipelined_copy(x, y, n):
    # the prefetched tile itself is stored
    lo, hi = vnpu.split(n)
    for i in range(lo, hi, 16, pipeline=True):
        end = vnpu.minimum(i + 16, hi)
        vnpu.store(y[i:end], vnpu.load(x[i:end]))


@pytest.mark.parametrize("n", [0, 10, 16, 40, 64, 200])
def test_pipelined_copy(engine, n):
    x = _data(200, I8)
    _, (_, y, _) = run(pipelined_copy, x, np.zeros_like(x), n, engine=engine)
    assert np.array_equal(y[:n], x[:n]) and not y[n:].any()


@vnpu.kernel
def pipelined_branch_and_loop(x, y, n):
    for i in range(0, n, 8, pipeline=True):
        t = vnpu.load(x[i:i + 8])
        for k in range(0, 3):                   # a card loop inside
            t += 1.0
        if i >= 16:                             # a branch with its own load (not prefetched)
            vnpu.store(y[i:i + 8], t + vnpu.load(x[i - 16:i - 8]))
        else:
            vnpu.store(y[i:i + 8], t)


@pytest.mark.parametrize("n", [8, 16, 24, 64])
def test_pipelined_loop_with_branch_and_inner_loop(engine, n):
    x = _data(64, F32)
    _, (_, y, _) = run(pipelined_branch_and_loop, x, np.zeros_like(x), n, engine=engine, pes=1)
    want = np.zeros_like(x)
    x64 = x.astype(np.float64)
    t = f32_of(f32_of(f32_of(x64 + 1).astype(np.float64) + 1).astype(np.float64) + 1).astype(np.float64)
    for i in range(0, n, 8):
        want[i:i + 8] = f32_of(t[i:i + 8] + (x64[i - 16:i - 8] if i >= 16 else 0))
    assert np.array_equal(y, want)


@vnpu.kernel
def pipelined_binary_2d(a, b, out, R: vnpu.constexpr):
    lo, hi = vnpu.split(a.shape[0])
    for r in range(lo, hi, R, pipeline=True):
        end = vnpu.minimum(r + R, hi)
        s = vnpu.load(a[r:end, :]) + vnpu.load(b[r:end, :])
        vnpu.store(out[r:end, :], vnpu.relu(s))


@pytest.mark.parametrize("rows", [3, 9, 26])
def test_pipelined_two_loads_2d(engine, rows):
    a, b = _data(rows * 10, F32, 1).reshape(rows, 10), _data(rows * 10, F32, 2).reshape(rows, 10)
    _, (_, _, out, _) = run(pipelined_binary_2d, a, b, np.zeros_like(a), 2, engine=engine)
    assert np.array_equal(out, np.maximum(f32_of(a.astype(np.float64) + b), 0))


@vnpu.kernel
def split_owner(x, addend, y, n, A: vnpu.constexpr):
    # y[i] = x[i] + addend[the PE that owns i]: shows each PE's share
    lo, hi = vnpu.split(n, align=A)
    p = vnpu.pe_id()
    c = vnpu.load(addend[p:p + 1])
    for i in range(lo, hi, 16):
        end = vnpu.minimum(i + 16, hi)
        vnpu.store(y[i:end], vnpu.load(x[i:end]) + c)


@pytest.mark.parametrize("n,align,pes", [(100, 1, 4), (100, 16, 4), (100, 64, 4), (3, 1, 4), (50, 8, 3),
                                         (17, 4, 1)])
def test_split_shares(engine, n, align, pes):
    x = np.zeros(n, F32)
    addend = np.arange(1, 5, dtype=F32) * 1000
    _, (_, _, y, _, _) = run(split_owner, x, addend, np.zeros(n, F32), n, align, engine=engine, pes=pes)
    chunk = -(-n // pes)
    chunk = -(-chunk // align) * align
    owner = np.arange(n) // chunk
    assert np.array_equal(y, addend[owner])


@vnpu.kernel
def pe_ids(x, y):
    # PE p copies x[p] to y[pe_count - 1 - p]
    p = vnpu.pe_id()
    q = vnpu.pe_count() - 1 - p
    vnpu.store(y[q:q + 1], vnpu.load(x[p:p + 1]))


@pytest.mark.parametrize("pes", [1, 2, 4, None])
def test_pe_id_and_pe_count(engine, pes):
    x = np.arange(10, 14, dtype=F32)
    _, (_, y) = run(pe_ids, x, np.zeros(4, F32), engine=engine, pes=pes)
    npe = pes or 4
    want = np.zeros(4, F32)
    want[:npe] = x[:npe][::-1]
    assert np.array_equal(y, want)


@vnpu.kernel
def exchange(x, y, z, T: vnpu.constexpr):
    # PE p writes its part of y, then (after the barrier) reads the part PE p + 1 wrote
    p = vnpu.pe_id()
    vnpu.store(y[p * T:p * T + T], vnpu.load(x[p * T:p * T + T]) * 2.0)
    vnpu.barrier()
    q = (p + 1) % vnpu.pe_count()
    vnpu.store(z[p * T:p * T + T], vnpu.load(y[q * T:q * T + T]))


@pytest.mark.parametrize("pes", [1, 3, 4, None])
def test_barrier_orders_pes(engine, pes):
    T = 16
    x = _data(4 * T, F32)
    _, (_, y, z, _) = run(exchange, x, np.zeros_like(x), np.zeros_like(x), T, engine=engine, pes=pes)
    npe = pes or 4
    y2 = f32_of(x.astype(np.float64) * 2)
    assert np.array_equal(y[:npe * T], y2[:npe * T]) and not y[npe * T:].any()
    for p in range(npe):
        q = (p + 1) % npe
        assert np.array_equal(z[p * T:(p + 1) * T], y2[q * T:(q + 1) * T]), p


# =====================================================================================================
# 6. annotations
# =====================================================================================================
@vnpu.kernel
def const_shapes(x, y, n: vnpu.constexpr):
    t = vnpu.empty((n,), "f32")
    vnpu.mul(vnpu.load(x[0:n]), 1.0, out=t)
    for k in vnpu.static_range(n // 8):
        vnpu.store(y[k * 8:k * 8 + 8], t[k * 8:k * 8 + 8])


@pytest.mark.parametrize("n", [8, 24])
def test_constexpr_in_shapes(engine, n):
    x = _data(32, F32)
    _, (_, y, _) = run(const_shapes, x, np.zeros_like(x), n, engine=engine, pes=1)
    assert np.array_equal(y[:n], x[:n]) and not y[n:].any()
    assert const_shapes.compile(x, y, 8) is not const_shapes.compile(x, y, 24)


@vnpu.kernel
def any_length(x: vnpu.anysize, y: vnpu.anysize, n):
    lo, hi = vnpu.split(n, align=16)
    for i in range(lo, hi, 32):
        end = vnpu.minimum(i + 32, hi)
        vnpu.store(y[i:end], vnpu.sigmoid(vnpu.load(x[i:end])))


def test_anysize_one_compile_for_every_length(engine):
    a, b = _data(37, F32), _data(300, F32)
    assert any_length.compile(a, a, 37) is any_length.compile(b, b, 300)
    assert any_length.compile(a, a, 37) is not any_length.compile(a.astype(F16), a.astype(F16), 37)
    for x in (a, b):
        _, (_, y, _) = run(any_length, x, np.zeros_like(x), x.shape[0], engine=engine)
        want = torch.sigmoid(torch.from_numpy(x.astype(np.float64))).numpy()
        assert_ulps(y, want.astype(F32), 1)


# =====================================================================================================
# 7. the compile cache and the assembly
# =====================================================================================================
@vnpu.kernel
def cached(x, y, n):
    t = vnpu.load(x)
    u = t * 2.0 + 1.0                    # MARK-MUL
    vnpu.store(y[0:vnpu.minimum(n, x.shape[0])], u)   # MARK-STORE


def test_compile_cache():
    x = np.zeros(16, F32)
    c1 = cached.compile(x, x, 1)
    assert cached.compile(np.ones(16, F32), np.ones(16, F32), 7) is c1           # values do not matter
    assert cached.compile(np.zeros(17, F32), np.zeros(17, F32), 1) is not c1      # shapes do
    assert cached.compile(x.astype(F16), x.astype(F16), 1) is not cached.compile(x, x, 1)
    assert cached.compile(x, x, 1, config="reference") is not c1                  # and the card
    assert cached.compile(x, x, 1, config="tiny") is c1
    assert cached.compile(vnpu.shared(x), x, 1) is not c1                         # and the memory


def test_asm_has_source_line_comments():
    x = np.zeros(16, F32)
    text = cached.asm(x, x, 1)
    base = os.path.basename(__file__)
    for mark in ("MARK-MUL", "MARK-STORE"):
        line = src_line(cached, mark)
        src = linecache.getline(__file__, line).strip()
        assert f"; {base}:{line}: {src}" in text, (mark, text)
    assert text == cached.compile(x, x, 1).text
    assert vnpu.assemble(text) is not None


# =====================================================================================================
# 8. scalars, the matrix unit's weights, local memory, queues, card configurations
# =====================================================================================================
@vnpu.kernel
def scalar_math(x, y, n, m):
    # y[k] = x[k] for each index k computed on the card
    idx = [n // 3, n % 5, n // 4, n % 8, n * m, vnpu.maximum(n, m), vnpu.minimum(n, m) + 40, 2 * n - m + 1,
           (n + m) // (m - 1), (n * 7) % m + 50]
    for k in idx:
        vnpu.store(y[k:k + 1], vnpu.load(x[k:k + 1]))


@pytest.mark.parametrize("n,m", [(11, 3), (17, 2), (5, 9)])
def test_scalar_arithmetic(engine, n, m):
    x = np.arange(1, 61, dtype=F32)
    _, (_, y, _, _) = run(scalar_math, x, np.zeros(60, F32), n, m, engine=engine, pes=1)
    want = np.zeros(60, F32)
    for k in [n // 3, n % 5, n // 4, n % 8, n * m, max(n, m), min(n, m) + 40, 2 * n - m + 1, (n + m) // (m - 1),
              (n * 7) % m + 50]:
        want[k] = x[k]
    assert np.array_equal(y, want)


@vnpu.kernel
def negative_math(x, y, n):
    a = n - 20                    # negative on the card for n < 20
    idx = [30 + a // 3, 30 + a % 7, 30 + a // 4, 30 + a % 8]
    for k in idx:
        vnpu.store(y[k:k + 1], vnpu.load(x[k:k + 1]))


@pytest.mark.parametrize("n", [11, 10])
def test_scalar_arithmetic_negative(engine, n):
    x = np.arange(1, 61, dtype=F32)
    _, (_, y, _) = run(negative_math, x, np.zeros(60, F32), n, engine=engine, pes=1)
    want = np.zeros(60, F32)
    a = n - 20
    for k in [30 + a // 3, 30 + a % 7, 30 + a // 4, 30 + a % 8]:
        want[k] = x[k]
    assert np.array_equal(y, want)


@vnpu.kernel
def comparisons(x, y, n):
    if n < 5:
        vnpu.store(y[0:1], vnpu.load(x[0:1]))
    if n <= 5:
        vnpu.store(y[1:2], vnpu.load(x[1:2]))
    if n > 5:
        vnpu.store(y[2:3], vnpu.load(x[2:3]))
    if n >= 5:
        vnpu.store(y[3:4], vnpu.load(x[3:4]))
    if n == 5:
        vnpu.store(y[4:5], vnpu.load(x[4:5]))
    if n != 5:
        vnpu.store(y[5:6], vnpu.load(x[5:6]))
    if 5 < n:
        vnpu.store(y[6:7], vnpu.load(x[6:7]))
    if n - 1 >= 2 * vnpu.pe_count():
        vnpu.store(y[7:8], vnpu.load(x[7:8]))
    else:
        if n == 0:
            vnpu.store(y[8:9], vnpu.load(x[8:9]))


@pytest.mark.parametrize("n", [0, 4, 5, 6, 9])
def test_comparisons(engine, n):
    x = np.arange(1, 10, dtype=F32)
    _, (_, y, _) = run(comparisons, x, np.zeros(9, F32), n, engine=engine, pes=1)
    tests = [n < 5, n <= 5, n > 5, n >= 5, n == 5, n != 5, 5 < n, n - 1 >= 2, n - 1 < 2 and n == 0]
    assert np.array_equal(y, np.where(tests, x, 0))


@vnpu.kernel
def weights_change(a, w, w2, out):
    at = vnpu.load(a)
    wt = vnpu.load(w)
    vnpu.store(out[0], vnpu.matmul(at, wt))
    wt += 1.0                                   # the unit's copy of the weights is stale now
    vnpu.store(out[1], vnpu.matmul(at, wt))
    vnpu.load(w2, into=wt)                      # and again
    vnpu.store(out[2], vnpu.matmul(at, wt))
    vnpu.store(out[3], vnpu.matmul(at, vnpu.load(w)))


@vnpu.kernel
def weights_in_loop(a, w, out, n):
    wt = vnpu.load(w)
    at = vnpu.load(a)
    for i in range(0, n):
        vnpu.store(out[i], vnpu.matmul(at, wt))
        wt += 1.0


def test_matmul_weights_reloaded_when_the_tile_changes(engine):
    r = rng(5)
    a, w, w2 = (r.integers(-3, 4, s).astype(F32) for s in ((4, 8), (8, 4), (8, 4)))
    _, (*_, out) = run(weights_change, a, w, w2, np.zeros((4, 4, 4), F32), engine=engine, pes=1)
    a64 = a.astype(np.float64)
    assert np.array_equal(out, np.stack([a64 @ w, a64 @ (w + 1.0), a64 @ w2, a64 @ w]))
    _, (_, _, out, _) = run(weights_in_loop, a, w, np.zeros((3, 4, 4), F32), 3, engine=engine, pes=1)
    assert np.array_equal(out, np.stack([a64 @ (w + i) for i in range(3)]))


@vnpu.kernel
def mm_pipelined(a, w, out):
    wt = vnpu.load(w)
    lo, hi = vnpu.split(a.shape[0])
    for r in range(lo, hi, 4, pipeline=True):
        end = vnpu.minimum(r + 4, hi)
        vnpu.store(out[r:end, :], vnpu.matmul(vnpu.load(a[r:end, :]), wt))


@pytest.mark.parametrize("dt", [I8, F16])
def test_matmul_in_a_pipelined_loop(engine, dt):
    a, w = _mm_data(45, 16, 12, dt, 2)
    out = np.zeros((45, 12), I32 if dt == I8 else F32)
    _, (_, _, got) = run(mm_pipelined, a, w, out, engine=engine)
    _check_mm(got, a, w, dt)


@vnpu.kernel
def mm_chain(a, w, b, out):
    h = vnpu.relu(vnpu.matmul(vnpu.load(a), vnpu.load(w)))      # a matrix result through the vector unit
    vnpu.store(out, vnpu.matmul(vnpu.load(b), h) + 1.0)          # and back in as the weights


def test_matmul_chained(engine):
    r = rng(6)
    a, w, b = (r.integers(-3, 4, s).astype(F32) for s in ((4, 8), (8, 4), (5, 4)))
    _, (*_, out) = run(mm_chain, a, w, b, np.zeros((5, 4), F32), engine=engine, pes=1)
    assert np.array_equal(out, b.astype(np.float64) @ np.maximum(a.astype(np.float64) @ w, 0) + 1)


def test_matmul_larger_tiles_numba():
    a, w = _mm_data(64, 96, 48, F32, 3)
    _, (_, _, got, _) = run(mm_rows, a, w, np.zeros((64, 48), F32), 16, engine="numba")
    _check_mm(got, a, w, F32)


@vnpu.kernel
def big_tiles_loop(x, y, n, T: vnpu.constexpr):
    # one 160 000-byte tile per iteration: the iterations reuse the same local memory
    for i in range(0, n, T):
        t = vnpu.load(x[i:vnpu.minimum(i + T, n)])
        t += 1.0
        vnpu.store(y[i:vnpu.minimum(i + T, n)], t)


@vnpu.kernel
def big_tiles_phases(x, y, T: vnpu.constexpr):
    # three unrolled phases of one 160 000-byte tile each: only one fits at a time
    for k in vnpu.static_range(3):
        t = vnpu.load(x[k * T:(k + 1) * T])
        t += 1.0
        vnpu.store(y[k * T:(k + 1) * T], t)


def test_local_memory_reused_by_loop_iterations():
    T = 40000
    x = _data(3 * T - 7, F32)
    y, _ = big_tiles_loop(x, np.zeros_like(x), x.shape[0], T, pes=1)
    assert np.array_equal(y, f32_of(x.astype(np.float64) + 1))


def test_local_memory_reused_by_unrolled_phases():
    T = 40000
    x = _data(3 * T, F32)
    y, _ = big_tiles_phases(x, np.zeros_like(x), T, pes=1)
    assert np.array_equal(y, f32_of(x.astype(np.float64) + 1))


@vnpu.kernel
def many_ops(x, y):
    t = vnpu.load(x)
    for k in vnpu.static_range(300):            # more operations in flight than a semaphore counts
        t += 1.0
    u = vnpu.load(x)
    for k in vnpu.static_range(200):
        vnpu.store(y[k % 4, 0:16], u)           # and more stores
    vnpu.store(y[1, 0:16], t)


def test_more_operations_than_a_semaphore_counts(engine):
    x = np.arange(16, dtype=F32)
    _, (_, y) = run(many_ops, x, np.zeros((4, 16), F32), engine=engine, pes=1)
    assert np.array_equal(y[1], x + 300) and np.array_equal(y[0], x) and np.array_equal(y[3], x)


def test_other_card_configurations():
    from vnpu.emulator.card import Card
    one_engine = Card("tiny", {"dma.engines_per_pe": 1})
    small = Card("tiny", {"local_memory.bytes": 65536, "pes": 2})
    x = _data(300, F32)
    c = pipelined.compile(x, x, 300, 32)
    assert pipelined.compile(x, x, 300, 32, config=one_engine.config) is not c
    assert "dma e1" in c.text and "dma e1" not in pipelined.asm(x, x, 300, 32, config=one_engine.config)
    want = f32_of(f32_of(x.astype(np.float64) * 2).astype(np.float64) + 1)
    for card in (one_engine, small):
        for engine in ("numba", "reference"):
            y, _ = pipelined(x, np.zeros_like(x), 300, 32, card=card, engine=engine)
            assert np.array_equal(y, want)
    assert np.array_equal(pipelined.interpret(x, np.zeros_like(x), 300, 32, config=small.config), want)
    big = np.zeros(20000, F32)          # 80 000 bytes: fits the tiny card's local memory, not the small one's
    whole(big, big.copy(), pes=1)
    with pytest.raises(vnpu.KernelError, match=r"larger than the PE's local memory \(65536 bytes\)"):
        whole(big, big.copy(), card=small)
    with pytest.raises(vnpu.KernelError, match=r"larger than the PE's local memory \(65536 bytes\)"):
        whole.interpret(big, big.copy(), config=small.config)


# =====================================================================================================
# 9. the card and the interpreter agree on what a run returns and accepts
# =====================================================================================================
@vnpu.kernel
def param_r0(x, y, r0):
    vnpu.store(y, vnpu.load(x) + 1.0)


def test_parameter_named_like_a_register(engine):
    x = np.zeros(4, F32)
    _, (_, y, _) = run(param_r0, x, np.zeros_like(x), 3, engine=engine, pes=1)
    assert np.array_equal(y, x + 1)


@vnpu.kernel
def writes_two(x, zz, aa):
    if vnpu.pe_id() == 0:
        t = vnpu.load(x)
        vnpu.store(zz, t)
        vnpu.store(aa, t + 1.0)


def test_written_arguments_returned_in_argument_order(engine):
    x = np.arange(4, dtype=F32)
    res, (_, zz, aa) = run(writes_two, x, np.zeros_like(x), np.zeros_like(x), engine=engine)
    assert np.array_equal(zz, x) and np.array_equal(aa, x + 1)
    assert len(res) == 2 and res[0] is zz and res[1] is aa       # updated in place, in argument order


def test_zero_trip_run_returns_the_argument(engine):
    x = np.arange(8, dtype=F32)
    res, (_, y, _, _) = run(bounded_loop, x, np.zeros_like(x), 3, 3, engine=engine)
    assert res is y and not y.any()


@vnpu.kernel
def astype_spellings(x, a, b, c):
    t = vnpu.load(x)
    vnpu.store(a, t.astype("f16"))
    vnpu.store(b, t.astype(np.float16))
    vnpu.store(c, t.astype(c.dtype))


@vnpu.kernel
def astype_numpy_name(x, a):
    vnpu.store(a, vnpu.load(x).astype("float16"))


def test_astype_dtype_spellings(engine):
    x = _data(20, F32)
    _, (_, a, b, c) = run(astype_spellings, x, *(np.zeros(20, F16) for _ in range(3)), engine=engine, pes=1)
    want = torch.from_numpy(x).half().numpy()
    assert np.array_equal(a, want) and np.array_equal(b, want) and np.array_equal(c, want)


def test_astype_numpy_dtype_name(engine):
    x = _data(20, F32)
    _, (_, a) = run(astype_numpy_name, x, np.zeros(20, F16), engine=engine, pes=1)
    assert np.array_equal(a, torch.from_numpy(x).half().numpy())
