"""Pipelined loops move loads earlier (prefetch) and stores later (deferred); when the body reads a tensor it
also writes, those moves would reorder accesses to the same bytes. The compiler then keeps that tensor's
accesses in program order (and the result equals the interpreter's and numpy's), on both engines."""
import numpy as np
import pytest

import vnpu

F32 = np.float32


@vnpu.kernel
def store_then_load(x, s, y):
    for p in range(0, x.shape[0], pipeline=True):
        vnpu.store(s[0:8], vnpu.load(x[p, :]))
        g = vnpu.load(s[0:8])               # would be prefetched ahead of the store above
        vnpu.store(y[p, :], g * 2.0)


@vnpu.kernel
def computed_store_then_load(x, s, y):
    g = vnpu.empty((8,), "f32")
    for p in range(0, x.shape[0], pipeline=True):
        vnpu.store(s[0:8], vnpu.load(x[p, :]) * 2.0)   # would be deferred past the load below
        vnpu.load(s[0:8], into=g)
        vnpu.store(y[p, :], g + 1.0)


@vnpu.kernel
def load_then_store_same_rows(x):
    for p in range(0, x.shape[0], pipeline=True):
        vnpu.store(x[p, :], vnpu.load(x[p, :]) * 2.0)     # in place, row by row


@vnpu.kernel
def update_a_computed_tile(x, y):
    t = vnpu.load(x) * 2.0
    t += 1.0
    vnpu.store(y, t)


X = np.random.default_rng(3).standard_normal((7, 8)).astype(F32)


@pytest.mark.parametrize("engine", ["numba", "reference", "interpret"])
@pytest.mark.parametrize("kernel, expected", [(store_then_load, X * F32(2)), (computed_store_then_load, X * F32(2) + F32(1))])
def test_reads_after_writes_in_a_pipelined_loop(engine, kernel, expected):
    args = (X, np.zeros(8, F32), np.zeros((7, 8), F32))
    out = kernel.interpret(*args, pes=1) if engine == "interpret" else kernel(*args, pes=1, engine=engine)[0]
    np.testing.assert_array_equal(out[1], expected)


@pytest.mark.parametrize("engine", ["numba", "reference", "interpret"])
def test_in_place_rows(engine):
    x = X.copy()
    out = load_then_store_same_rows.interpret(x, pes=1) if engine == "interpret" else \
        load_then_store_same_rows(x, pes=1, engine=engine)[0]
    np.testing.assert_array_equal(out, X * F32(2))


def test_a_computed_tile_can_be_updated_in_place_when_interpreted():
    y = update_a_computed_tile.interpret(X[0], np.zeros(8, F32), pes=1)
    np.testing.assert_array_equal(y, X[0] * F32(2) + F32(1))
    np.testing.assert_array_equal(update_a_computed_tile(X[0], np.zeros(8, F32), pes=1)[0], y)


@vnpu.kernel
def leading_columns(x, y):
    t = vnpu.load(x)                               # (4, 6): rows 6 apart in local memory
    vnpu.store(y, t.reshape(4, 6))                 # y is (4, 4): whole rows of y, the first 4 columns of t


@vnpu.kernel
def leading_columns_of_rows(x, y):
    t = vnpu.load(x)
    vnpu.store(y[1:3, :], t[1:3])


@pytest.mark.parametrize("engine", ["numba", "reference", "interpret"])
def test_a_block_takes_the_leading_columns_of_a_wider_tile(engine):
    x = np.arange(24, dtype=F32).reshape(4, 6)
    args = (x, np.zeros((4, 4), F32))
    out = leading_columns.interpret(*args, pes=1) if engine == "interpret" else leading_columns(*args, pes=1,
                                                                                                 engine=engine)[0]
    np.testing.assert_array_equal(out, x[:, :4])
    args = (x, np.zeros((4, 4), F32))
    out = leading_columns_of_rows.interpret(*args, pes=1) if engine == "interpret" else \
        leading_columns_of_rows(*args, pes=1, engine=engine)[0]
    np.testing.assert_array_equal(out[1:3], x[1:3, :4])


@vnpu.kernel
def store_a_tile_made_before_the_loop(x, y):
    t = vnpu.empty((8,), "f32")
    for p in range(0, x.shape[0], pipeline=True):
        vnpu.load(x[p, :], into=t)                 # both halves write t
        vnpu.store(y[p, :], t)


@pytest.mark.parametrize("engine", ["numba", "reference", "interpret"])
def test_a_store_of_a_tile_both_halves_write_is_not_deferred(engine):
    args = (X, np.zeros((7, 8), F32))
    out = store_a_tile_made_before_the_loop.interpret(*args, pes=1) if engine == "interpret" else \
        store_a_tile_made_before_the_loop(*args, pes=1, engine=engine)[0]
    np.testing.assert_array_equal(out, X)


@vnpu.kernel
def int_to_int8(x, y):
    vnpu.store(y, vnpu.load(x).astype(np.int8))


@pytest.mark.parametrize("engine", ["numba", "reference", "interpret"])
def test_integer_conversions_saturate_through_fp32_everywhere(engine):
    x = np.array([300, -300, 16777217, 5, -7, 127, -128, 0], np.int32)
    args = (x, np.zeros(8, np.int8))
    out = int_to_int8.interpret(*args, pes=1) if engine == "interpret" else int_to_int8(*args, pes=1,
                                                                                         engine=engine)[0]
    np.testing.assert_array_equal(out, [127, -128, 127, 5, -7, 127, -128, 0])


@vnpu.kernel
def short_block_into_a_tile(x, y, n):
    t = vnpu.empty((4,), "f32")
    vnpu.load(x[0:vnpu.minimum(4, n)], into=t)
    vnpu.store(y[0:vnpu.minimum(4, n)], t)


@pytest.mark.parametrize("engine", ["numba", "reference", "interpret"])
def test_a_block_bounded_by_minimum_fits_a_larger_tile(engine):
    x = np.arange(8, dtype=F32)
    args = (x, -np.ones(4, F32), 2)
    out = short_block_into_a_tile.interpret(*args, pes=1) if engine == "interpret" else \
        short_block_into_a_tile(*args, pes=1, engine=engine)[0]
    np.testing.assert_array_equal(out, [0, 1, -1, -1])
