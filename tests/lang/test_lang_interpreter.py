"""The kernel language's numpy interpreter (Kernel.interpret): what it checks that the card does not (tiles
never written, indices outside a tensor, PEs unordered by a barrier), and that it computes what the card
computes for the library's own kernels (kernels/elementwise.py)."""
from __future__ import annotations

import time

import numpy as np
import pytest

import vnpu
from vnpu.kernels import elementwise as ew
from vnpu.kernels import lang

F32, F16, I8, I32 = np.float32, np.float16, np.int8, np.int32
SEEN = []          # tiles a kernel hands out for the test to look at (interpreted runs only)


# --- tiles never written ----------------------------------------------------------------------------------------
@vnpu.kernel
def store_empty(x, y):
    t = vnpu.empty((8,), "f32")
    vnpu.store(y[0:8], t)  # L-EMPTY


@vnpu.kernel
def store_half_written(x, y):
    t = vnpu.empty((16,), "f32")
    vnpu.add(vnpu.load(x[0:8]), 1.0, out=t[0:8])
    vnpu.store(y[0:16], t)  # L-HALF


@vnpu.kernel
def store_derived(x, y):
    t = vnpu.empty((2, 8), "f32")
    vnpu.copy(vnpu.load(x[0:8]), out=t[0])
    u = vnpu.sum(t, axis=1)                 # row 1 sums unwritten elements
    vnpu.store(y[0:2, 0:1], u)  # L-DERIVED


@vnpu.kernel
def store_written(x, y):
    t = vnpu.empty((16,), "f32")
    vnpu.add(vnpu.load(x[0:8]), 1.0, out=t[0:8])
    vnpu.mul(vnpu.load(x[8:16]), 2.0, out=t[8:16])
    vnpu.store(y[0:16], t)


@vnpu.kernel
def past_the_end(x, y, i):
    # x[i:i + 4] is short near the end, y[0:4] is not
    vnpu.store(y[0:4], vnpu.load(x[i:i + 4]))  # L-PAST


def _line(kernel, marker):
    import linecache
    fn = kernel.fn
    n = fn.__code__.co_firstlineno
    while not linecache.getline(fn.__code__.co_filename, n).rstrip().endswith(f"# {marker}"):
        assert linecache.getline(fn.__code__.co_filename, n), f"no line marked {marker}"
        n += 1
    return f"{fn.__code__.co_filename}:{n}: "


def test_storing_unwritten_tile_elements_raises():
    x = np.arange(16, dtype=F32)
    for kernel, marker, where in ((store_empty, "L-EMPTY", r"\(0,\) of a \(8,\) tile"),
                                  (store_half_written, "L-HALF", r"\(8,\) of a \(16,\) tile"),
                                  (store_derived, "L-DERIVED", r"\(1, 0\) of a \(2, 1\) tile")):
        with pytest.raises(vnpu.KernelError, match="store of tile elements no operation wrote.*" + where) as ei:
            kernel.interpret(x, np.zeros((2, 8) if kernel is store_derived else 16, F32), pes=1)
        assert str(ei.value).startswith(_line(kernel, marker)), str(ei.value)
    y = store_written.interpret(x, np.zeros(16, F32), pes=1)
    assert np.array_equal(y, np.concatenate([x[:8] + 1, x[8:] * 2]))


def test_short_tile_stored_into_a_longer_block_raises():
    x = np.arange(10, dtype=F32)
    assert np.array_equal(past_the_end.interpret(x, np.zeros(4, F32), 6, pes=1), x[6:10])
    with pytest.raises(vnpu.KernelError) as ei:
        past_the_end.interpret(x, np.zeros(4, F32), 8, pes=1)      # x[8:12]: two elements
    assert str(ei.value).startswith(_line(past_the_end, "L-PAST"))


@vnpu.kernel
def show_empty(x, y):
    a = vnpu.empty((4,), "f32")
    b = vnpu.empty((2, 3), "f16")
    c = vnpu.empty((5,), "i8")
    d = vnpu.empty((3,), "i32")
    e = a + 1.0
    f = vnpu.sum(a)
    SEEN.extend([a, b, c, d, e, f])
    vnpu.store(y, vnpu.load(x))


def test_uninitialized_tiles_read_as_nan():
    SEEN.clear()
    x = np.zeros(4, F32)
    show_empty.interpret(x, np.zeros(4, F32), pes=1)
    a, b, c, d, e, f = SEEN
    assert np.isnan(a.data).all() and a.data.dtype == F32
    assert np.isnan(b.data).all() and b.data.dtype == F16 and b.data.shape == (2, 3)
    assert (c.data == -128).all() and c.data.dtype == I8           # integers: a marker value
    assert (d.data == np.iinfo(I32).min).all()
    assert np.isnan(e.data).all() and np.isnan(f.data).all()      # NaN flows through operations
    SEEN.clear()


# --- indices outside a tensor ------------------------------------------------------------------------------------
@vnpu.kernel
def load_at(x, y, i):
    vnpu.store(y[0:1], vnpu.load(x[i]))  # L-INDEX


@vnpu.kernel
def load_row(x, y, r):
    vnpu.store(y, vnpu.load(x[r, :]))  # L-ROW


@vnpu.kernel
def load_neg(x, y, i):
    vnpu.store(y[0:4], vnpu.load(x[i:i + 4]))  # L-NEG


def test_index_outside_a_tensor_raises():
    x = np.arange(8, dtype=F32)
    assert load_at.interpret(x, np.zeros(1, F32), 7, pes=1)[0] == 7
    for i in (8, 100, -1):
        with pytest.raises(vnpu.KernelError, match=f"x: index {i} is outside dimension 0 of size 8") as ei:
            load_at.interpret(x, np.zeros(1, F32), i, pes=1)
        assert str(ei.value).startswith(_line(load_at, "L-INDEX"))
    x2 = np.zeros((3, 4), F32)
    with pytest.raises(vnpu.KernelError, match="index 3 is outside dimension 0 of size 3") as ei:
        load_row.interpret(x2, np.zeros(4, F32), 3, pes=1)
    assert str(ei.value).startswith(_line(load_row, "L-ROW"))
    with pytest.raises(vnpu.KernelError, match="negative slice bound -2") as ei:
        load_neg.interpret(x, np.zeros(4, F32), -2, pes=1)
    assert str(ei.value).startswith(_line(load_neg, "L-NEG"))


# --- PEs without a barrier between them ------------------------------------------------------------------------------
@vnpu.kernel
def all_write(x, y):
    vnpu.store(y, vnpu.load(x))  # L-ALLWRITE


@vnpu.kernel
def write_overlap(x, y, T: vnpu.constexpr, overlap: vnpu.constexpr, barrier: vnpu.constexpr):
    # PE p writes y[p * T : (p + 1) * T + overlap]: neighbours overlap by `overlap` elements
    p = vnpu.pe_id()
    if barrier:
        if p % 2 == 1:
            vnpu.barrier()
            vnpu.store(y[p * T:p * T + T + overlap], vnpu.load(x[p * T:p * T + T + overlap]))
        else:
            vnpu.store(y[p * T:p * T + T + overlap], vnpu.load(x[p * T:p * T + T + overlap]))
            vnpu.barrier()
    else:
        vnpu.store(y[p * T:p * T + T + overlap], vnpu.load(x[p * T:p * T + T + overlap]))  # L-OVERLAP


@vnpu.kernel
def read_neighbour(x, y, z, T: vnpu.constexpr, barrier: vnpu.constexpr):
    # PE p writes its part of y, then reads PE p + 1's part
    p = vnpu.pe_id()
    vnpu.store(y[p * T:p * T + T], vnpu.load(x[p * T:p * T + T]))  # L-WRITE
    if barrier:
        vnpu.barrier()
    q = (p + 1) % vnpu.pe_count()
    vnpu.store(z[p * T:p * T + T], vnpu.load(y[q * T:q * T + T]))  # L-READ


@vnpu.kernel
def read_then_overwrite(x, y, T: vnpu.constexpr):
    # PE p reads y's part of PE p + 1, which PE p + 1 overwrites (a write after another PE's read)
    p = vnpu.pe_id()
    q = (p + 1) % vnpu.pe_count()
    t = vnpu.load(y[q * T:q * T + T])  # L-WARREAD
    vnpu.store(y[p * T:p * T + T], t + 1.0)  # L-WAR


def test_two_pes_writing_the_same_elements():
    x = np.arange(16, dtype=F32)
    with pytest.raises(vnpu.KernelError, match=r"PE \d writes element \d+ of y, which PE \d read or wrote since "
                                               r"the last barrier.*add vnpu.barrier\(\)") as ei:
        all_write.interpret(x, np.zeros_like(x), pes=2)
    assert str(ei.value).startswith(_line(all_write, "L-ALLWRITE"))
    assert np.array_equal(all_write.interpret(x, np.zeros_like(x), pes=1), x)
    # the card's race sanitizer agrees
    with pytest.raises(vnpu.RaceError):
        all_write(x, np.zeros_like(x), pes=2)


@pytest.mark.parametrize("pes", [2, 4])
def test_overlapping_writes_need_a_barrier(pes):
    T = 8
    x = np.arange(40, dtype=F32)
    # without overlap: fine
    y = write_overlap.interpret(x, np.zeros_like(x), T, 0, 0, pes=pes)
    assert np.array_equal(y[:pes * T], x[:pes * T])
    with pytest.raises(vnpu.KernelError, match="since the last barrier") as ei:
        write_overlap.interpret(x, np.zeros_like(x), T, 2, 0, pes=pes)
    assert str(ei.value).startswith(_line(write_overlap, "L-OVERLAP"))
    # the same writes ordered by a barrier (odd PEs write after it): fine, on the card too
    want = np.zeros_like(x)
    want[:pes * T + 2] = x[:pes * T + 2]
    assert np.array_equal(write_overlap.interpret(x, np.zeros_like(x), T, 2, 1, pes=pes), want)
    for engine in ("numba", "reference"):
        y, _ = write_overlap(x, np.zeros_like(x), T, 2, 1, pes=pes, engine=engine)
        assert np.array_equal(y, want)


def test_reading_what_another_pe_wrote_needs_a_barrier():
    T = 4
    x = np.arange(16, dtype=F32)
    # which PE the check catches depends on the threads' order: a read of what another PE wrote, or a write
    # of what another PE read
    with pytest.raises(vnpu.KernelError, match=r"PE \d (reads|writes) element \d+ of y, which PE \d (read or )?wrote "
                                               r"since the last barrier") as ei:
        read_neighbour.interpret(x, np.zeros_like(x), np.zeros_like(x), T, 0, pes=4)
    assert str(ei.value).startswith((_line(read_neighbour, "L-READ"), _line(read_neighbour, "L-WRITE")))
    y, z = read_neighbour.interpret(x, np.zeros_like(x), np.zeros_like(x), T, 1, pes=4)
    assert np.array_equal(y, x) and np.array_equal(z, np.roll(x, -T))


def test_writing_what_another_pe_read_needs_a_barrier():
    T = 4
    y = np.arange(16, dtype=F32)
    with pytest.raises(vnpu.KernelError, match="(writes|reads) element .* which PE \\d (read or )?wrote") as ei:
        read_then_overwrite.interpret(np.zeros(16, F32), y, T, pes=4)
    assert str(ei.value).startswith((_line(read_then_overwrite, "L-WAR"), _line(read_then_overwrite, "L-WARREAD")))


@vnpu.kernel
def emb_everywhere(table, indices, offsets, out):
    vnpu.embedding_bag(table, indices, offsets, out)


def test_embedding_bag_on_every_pe_races():
    table, idx, off = np.ones((4, 2), F32), np.array([0, 1, 2], np.int64), np.array([0, 2], np.int64)
    with pytest.raises(vnpu.KernelError, match="writes element .* of out"):
        emb_everywhere.interpret(table, idx, off, np.zeros((2, 2), F32), pes=2)
    assert np.array_equal(emb_everywhere.interpret(table, idx, off, np.zeros((2, 2), F32), pes=1),
                          [[2, 2], [1, 1]])


# --- barriers ------------------------------------------------------------------------------------------------------
@vnpu.kernel
def barrier_pe0_only(x, y):
    p = vnpu.pe_id()
    if p == 0:
        vnpu.barrier()  # L-HALFBARRIER
    vnpu.store(y[p:p + 1], vnpu.load(x[p:p + 1]))


@vnpu.kernel
def barrier_then_fail(x, y):
    p = vnpu.pe_id()
    if p == 0:
        vnpu.store(y[0:1], vnpu.load(x[100]))   # PE 0 fails while the others wait
    vnpu.barrier()
    vnpu.store(y[p:p + 1], vnpu.load(x[p:p + 1]))


def test_barrier_not_reached_by_every_pe_on_the_card():
    x = np.arange(4, dtype=F32)
    for engine in ("numba", "reference"):
        with pytest.raises(vnpu.Deadlock):
            barrier_pe0_only(x, np.zeros_like(x), engine=engine)


def test_a_failing_pe_releases_the_others_from_the_barrier():
    x = np.arange(4, dtype=F32)
    t0 = time.monotonic()
    with pytest.raises(vnpu.KernelError, match="index 100 is outside"):
        barrier_then_fail.interpret(x, np.zeros_like(x), pes=4)
    assert time.monotonic() - t0 < 5


def test_barrier_not_reached_by_every_pe_in_the_interpreter():
    x = np.arange(4, dtype=F32)
    t0 = time.monotonic()
    with pytest.raises(vnpu.KernelError, match="waits at a barrier that not every PE reaches") as ei:
        barrier_pe0_only.interpret(x, np.zeros_like(x), pes=4)
    assert str(ei.value).startswith(_line(barrier_pe0_only, "L-HALFBARRIER"))
    assert time.monotonic() - t0 < 5


# --- the interpreter computes what the card computes: kernels/elementwise.py ------------------------------------------
def _special(n, dt, seed=0):
    r = np.random.default_rng(seed)
    x = (r.standard_normal(n) * 6).astype(dt)
    x[:8] = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, -80.0, 80.0]).astype(dt)
    return x


def _same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


KERNELS = {}


def _kernel(fn, op):
    key = (fn.__name__, op)
    if key not in KERNELS:
        KERNELS[key] = lang.Kernel(fn, name=op)
    return KERNELS[key]


@pytest.mark.parametrize("op", ["relu", "sigmoid", "tanh", "gelu"])
@pytest.mark.parametrize("dt", [F32, F16])
def test_interpret_equals_card_unary_stream(op, dt):
    k = _kernel(ew._unary_stream, op)
    n, T = 300, 64
    x = _special(n, dt)
    card, _ = k(x, np.zeros_like(x), n, T, op)
    interp = k.interpret(x, np.zeros_like(x), n, T, op)
    assert _same(card, interp), op
    ref, _ = k(x, np.zeros_like(x), n, T, op, engine="reference")
    assert _same(card, ref)


@pytest.mark.parametrize("op", ["add", "mul"])
@pytest.mark.parametrize("dt", [F32, F16])
def test_interpret_equals_card_binary_stream(op, dt):
    k = _kernel(ew._binary_stream, op)
    n, T = 250, 64
    a, b = _special(n, dt, 1), _special(n, dt, 2)[::-1].copy()
    card, _ = k(a, b, np.zeros_like(a), n, T, op)
    assert _same(card, k.interpret(a, b, np.zeros_like(a), n, T, op))


@pytest.mark.parametrize("scale,zp", [(0.05, 0), (0.1, -7)])
def test_interpret_equals_card_convert_stream(scale, zp):
    k = _kernel(ew._convert_stream, "quantize")
    n, T = 260, 64
    x = _special(n, F32)
    q = ew._qparam(ew._quant_scale(np.float32(scale)), zp)
    card, _ = k(x, np.zeros(n, I8), n, q, T)
    interp = k.interpret(x, np.zeros(n, I8), n, q, T)
    assert _same(card, interp)
    # and the library's quantize (the same kernel) agrees
    from vnpu.emulator.card import Card
    lib, _ = ew.quantize(Card("tiny"), x, scale, zp)
    assert _same(lib, card)
    kd = _kernel(ew._convert_stream, "dequantize")
    qd = ew._qparam(np.float32(scale), zp)
    card, _ = kd(card, np.zeros(n, F32), n, qd, T)
    assert _same(card, kd.interpret(lib, np.zeros(n, F32), n, qd, T))


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 1000])
def test_interpret_equals_card_any_length(n):
    k = _kernel(ew._unary_stream, "sigmoid")
    x = _special(max(n, 8), F32)[:n].copy()
    card, _ = k(x, np.zeros_like(x), n, 128, "sigmoid")
    interp = k.interpret(x, np.zeros_like(x), n, 128, "sigmoid")
    if n == 0:
        assert card.shape == (0,)
    else:
        assert _same(card, interp)
