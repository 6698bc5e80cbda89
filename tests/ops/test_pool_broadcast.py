"""Pooling, batch norm, broadcasting elementwise ops, clamp and reductions (kernels/pool.py, kernels/broadcast.py)
against PyTorch: random shapes with 1 and prime sizes, NaN, +-inf, -0.0 and empty inputs; fp32 at fp32
accuracy, fp16 within fp16 rounding. Each kernel also runs on the reference engine and in the kernel
language's interpreter (tiny shapes), which must agree with the Numba core."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vnpu
from vnpu.emulator.card import Card
from vnpu.kernels import pool
from engine_modes import on_every_engine as every_engine  # tests/ops/engine_modes.py

CARD = Card("tiny")
SPECIALS = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0], np.float32)


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def with_specials(rng, shape, dtype=np.float32, frac=0.1):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    flat = x.reshape(-1)
    k = int(flat.size * frac)
    if k:
        flat[rng.integers(0, flat.size, k)] = rng.choice(SPECIALS.astype(dtype), k)
    return x


def same_bits_or_nan(out, ref):
    """Equal values with the same NaN positions and the same signs of zero."""
    out, ref = np.asarray(out), np.asarray(ref)
    assert out.shape == ref.shape and out.dtype == ref.dtype, (out.shape, ref.shape, out.dtype, ref.dtype)
    assert np.array_equal(np.isnan(out), np.isnan(ref))
    ok = ~np.isnan(ref)
    assert np.array_equal(out[ok], ref[ok])
    assert np.array_equal(np.signbit(out[ok]), np.signbit(ref[ok]))


def close_to(out, ref, tol):
    """Same NaN / inf positions; finite values within tol (an array or a number)."""
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    assert out.shape == ref.shape
    assert np.array_equal(np.isnan(out), np.isnan(ref))
    assert np.array_equal(np.isposinf(out), np.isposinf(ref)) and np.array_equal(np.isneginf(out), np.isneginf(ref))
    fin = np.isfinite(ref)
    tol = np.broadcast_to(tol, ref.shape)
    bad = fin & ~(np.abs(out - ref) <= tol)
    assert not bad.any(), (out[bad][:5], ref[bad][:5], tol[bad][:5])


# --- every engine: the Numba core, the reference engine, the interpreter ------------------------------------------
on_every_engine = every_engine


# --- pooling ---------------------------------------------------------------------------------------------------
MAX_CASES = [
    dict(kernel_size=3, stride=2, padding=1),                  # ResNet's stem
    dict(kernel_size=2),                                       # VGG
    dict(kernel_size=3, stride=2, ceil_mode=True),             # SqueezeNet / GoogLeNet
    dict(kernel_size=3, stride=1, padding=1),                  # Inception branches
    dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 1), dilation=(2, 1)),
    dict(kernel_size=5, stride=3, padding=2, dilation=2, ceil_mode=True),
    dict(kernel_size=1, stride=2),
    dict(kernel_size=(1, 4), stride=(1, 1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("case", range(len(MAX_CASES)))
def test_max_pool2d_matches_pytorch(case, dtype):
    args = MAX_CASES[case]
    rng = np.random.default_rng(case)
    for shape in [(2, 3, 13, 11), (1, 1, 7, 17), (3, 2, 5, 5), (4, 5, 9, 7)]:      # the last: groups of planes
        x = with_specials(rng, shape, dtype)
        out = vnpu.ops.max_pool2d(x, card=CARD, **args)
        ref = F.max_pool2d(t(x).float(), **args).numpy().astype(dtype)
        same_bits_or_nan(out, ref)
        same_bits_or_nan(out, pool.reference_max_pool2d(x, **args))


AVG_CASES = [
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False, ceil_mode=True),
    dict(kernel_size=2),
    dict(kernel_size=(5, 3), stride=(1, 2), padding=(2, 0), ceil_mode=True),
    dict(kernel_size=3, stride=3, divisor_override=7),
    dict(kernel_size=7, stride=1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("case", range(len(AVG_CASES)))
def test_avg_pool2d_matches_pytorch(case, dtype):
    args = AVG_CASES[case]
    rng = np.random.default_rng(100 + case)
    for shape, frac in [((2, 3, 13, 11), 0.02), ((1, 2, 7, 23), 0.0), ((2, 1, 11, 7), 0.0), ((4, 5, 9, 7), 0.02)]:
        x = with_specials(rng, shape, dtype, frac)
        out = vnpu.ops.avg_pool2d(x, card=CARD, **args)
        ref = F.avg_pool2d(t(x).double(), **args).numpy()
        mag = F.avg_pool2d(t(np.abs(x.astype(np.float64))), **args).numpy()   # the window's |x| mean
        eps = np.finfo(dtype).eps
        close_to(out, ref, 4 * np.finfo(np.float32).eps * mag * 9 + eps * np.abs(ref) + 1e-30)
        assert np.array_equal(out, pool.reference_avg_pool2d(x, **args), equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_adaptive_avg_pool2d_matches_pytorch(dtype):
    rng = np.random.default_rng(5)
    for shape in [(2, 5, 7, 7), (3, 1, 1), (1, 3, 13, 2)]:
        x = with_specials(rng, shape, dtype, 0.02)
        out = vnpu.ops.adaptive_avg_pool2d(x, 1, card=CARD)
        ref = F.adaptive_avg_pool2d(t(x).double(), 1).numpy()
        mag = F.adaptive_avg_pool2d(t(np.abs(x.astype(np.float64))), 1).numpy()
        close_to(out, ref, 2 * np.finfo(np.float32).eps * mag + np.finfo(dtype).eps * np.abs(ref))
    x = rng.standard_normal((2, 3, 12, 10)).astype(dtype)
    out = vnpu.ops.adaptive_avg_pool2d(x, (3, 5), card=CARD)
    close_to(out, F.adaptive_avg_pool2d(t(x).double(), (3, 5)).numpy(), 1e-6 + 2 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_batch_norm_matches_pytorch(dtype):
    rng = np.random.default_rng(9)
    for shape, affine in [((2, 5, 7, 3), True), ((3, 17, 2, 1), False), ((4, 3), True), ((1, 37, 5, 5), True)]:
        C = shape[1]
        x = with_specials(rng, shape, dtype, 0.05)
        m, w, b = (rng.standard_normal(C).astype(np.float32) for _ in range(3))
        v = rng.uniform(0.1, 3, C).astype(np.float32)
        w, b = (w, b) if affine else (None, None)
        out = vnpu.ops.batch_norm(x, m, v, w, b, eps=1e-3, card=CARD)
        ref = F.batch_norm(t(x).double(), t(m).double(), t(v).double(), None if w is None else t(w).double(),
                           None if b is None else t(b).double(), eps=1e-3).numpy()
        eps32 = np.finfo(np.float32).eps
        tol = 4 * eps32 * (np.abs(ref) + np.abs(x.astype(np.float64)) * 3) + np.finfo(dtype).eps * np.abs(ref) + 1e-30
        close_to(out, ref, tol)
        assert np.array_equal(out, pool.reference_batch_norm(x, m, v, w, b, eps=1e-3), equal_nan=True)


def test_pool_bands_when_a_plane_does_not_fit():
    """A plane too large for one band of local memory: several bands (non-pipelined when padding rows are
    refilled), same numbers."""
    x = with_specials(np.random.default_rng(3), (1, 2, 150, 131), np.float32, 0.01)
    for args in [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=3, stride=1, padding=1)]:
        g = pool._plan(CARD, "max", "f32", 150, 131, *[a for a in (3, 3)], args["stride"], args["stride"], 1, 1, 1, 1,
                       pool.pool_output_size(150, 3, args["stride"], 1, 1, False),
                       pool.pool_output_size(131, 3, args["stride"], 1, 1, False))
        assert len(g.bands()) > 1
        out, _ = pool.max_pool2d(CARD, x, **args)
        same_bits_or_nan(out, F.max_pool2d(t(x), **args).numpy())
        out, _ = pool.avg_pool2d(CARD, x, **args)
        assert np.array_equal(out, pool.reference_avg_pool2d(x, **args), equal_nan=True)


@pytest.mark.parametrize("which", ["max", "avg", "avg16", "global", "bn16", "max_groups", "avg16_groups"])
def test_pool_kernels_agree_on_every_engine(which, monkeypatch):
    rng = np.random.default_rng(11)
    x = with_specials(rng, (2, 3, 7, 6), np.float32, 0.1)
    xg = with_specials(rng, (4, 5, 5, 4), np.float32, 0.1)          # 20 planes: groups of 3 (the last short)
    calls = {
        "max_groups": lambda: pool.max_pool2d(CARD, xg, 3, 2, 1),
        "avg16_groups": lambda: pool.avg_pool2d(CARD, xg.astype(np.float16), 2, 1, 1, ceil_mode=True),
        "max": lambda: pool.max_pool2d(CARD, x, 3, 2, 1, ceil_mode=True),
        "avg": lambda: pool.avg_pool2d(CARD, x, (2, 3), (1, 2), (1, 1), count_include_pad=False),
        "avg16": lambda: pool.avg_pool2d(CARD, x.astype(np.float16), 3, 2, 1),
        "global": lambda: pool.adaptive_avg_pool2d(CARD, x, 1),
        "bn16": lambda: pool.batch_norm(CARD, x.astype(np.float16), x[0, :, 0, 0], np.abs(x[1, :, 1, 1]) + 1,
                                        x[0, :, 2, 2], None),
    }
    on_every_engine(monkeypatch, calls[which])


def test_pool_empty_inputs_and_bad_arguments():
    x = np.zeros((0, 3, 5, 5), np.float32)
    assert vnpu.ops.max_pool2d(x, 2, card=CARD).shape == F.max_pool2d(t(x), 2).shape
    assert vnpu.ops.avg_pool2d(x, 3, 1, 1, card=CARD).shape == F.avg_pool2d(t(x), 3, 1, 1).shape
    for shape in [(0, 3, 5, 5), (2, 0, 5, 5), (0, 5, 5)]:
        x = np.zeros(shape, np.float32)
        assert vnpu.ops.adaptive_avg_pool2d(x, 1, card=CARD).shape == F.adaptive_avg_pool2d(t(x), 1).shape
    with pytest.raises(vnpu.InvalidArgument, match="batch"):      # as PyTorch
        vnpu.ops.max_pool2d(np.zeros((2, 0, 5, 5), np.float32), 2, card=CARD)
    assert vnpu.ops.batch_norm(np.zeros((0, 3, 2, 2), np.float32), np.zeros(3, np.float32), np.ones(3, np.float32),
                               card=CARD).shape == (0, 3, 2, 2)
    x = np.zeros((1, 2, 6, 6), np.float32)
    bad = [(lambda: vnpu.ops.max_pool2d(x, 0, card=CARD), "kernel_size"),
           (lambda: vnpu.ops.max_pool2d(x, 3, stride=(1, 2, 3), card=CARD), "stride"),
           (lambda: vnpu.ops.max_pool2d(x, 2, padding=2, card=CARD), "padding"),
           (lambda: vnpu.ops.max_pool2d(x, 2, dilation=0, card=CARD), "dilation"),
           (lambda: vnpu.ops.max_pool2d(x, 2, ceil_mode="yes", card=CARD), "ceil_mode"),
           (lambda: vnpu.ops.max_pool2d(x, 7, card=CARD), "output"),
           (lambda: vnpu.ops.max_pool2d(x.astype(np.int32), 2, card=CARD), "x must be float"),
           (lambda: vnpu.ops.max_pool2d(x[0, 0], 2, card=CARD), "x must be"),
           (lambda: vnpu.ops.max_pool2d(x, 2, return_indices=True, card=CARD), "return_indices"),
           (lambda: vnpu.ops.avg_pool2d(x, 2, divisor_override=0, card=CARD), "divisor_override"),
           (lambda: vnpu.ops.avg_pool2d(x, 2, count_include_pad=None, card=CARD), "count_include_pad"),
           (lambda: vnpu.ops.adaptive_avg_pool2d(x, 4, card=CARD), "output_size"),
           (lambda: vnpu.ops.batch_norm(x, np.zeros(3, np.float32), np.ones(2, np.float32), card=CARD),
            "running_mean"),
           (lambda: vnpu.ops.batch_norm(x, np.zeros(2, np.float32), None, card=CARD), "running_var"),
           (lambda: vnpu.ops.batch_norm(x, np.zeros(2), np.ones(2), card=CARD), "running_mean"),
           (lambda: vnpu.ops.batch_norm(x, np.zeros(2, np.float32), np.ones(2, np.float32), training=True,
                                        card=CARD), "training"),
           (lambda: vnpu.ops.batch_norm(x, np.zeros(2, np.float32), np.ones(2, np.float32), eps=-1, card=CARD),
            "eps")]
    for f, word in bad:
        with pytest.raises(vnpu.InvalidArgument, match=word):
            f()


# --- broadcasting elementwise ops ---------------------------------------------------------------------------------
from vnpu.kernels import broadcast  # noqa: E402

TORCH_BINARY = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "maximum": torch.maximum,
                "minimum": torch.minimum}
SHAPES = [((5, 7), (5, 7)), ((5, 7), (7,)), ((5, 7), (5, 1)), ((5, 1), (5, 7)), ((7,), (5, 7)), ((5, 1), (1, 7)),
          ((1, 7), (5, 1)), ((2, 3, 5, 7), (3, 1, 1)), ((2, 1, 5, 1), (1, 3, 1, 13)), ((3,), ()), ((), (4, 3)),
          ((2, 3, 11), (2, 1, 11)), ((1,), (1,)), ((1, 1, 1), (3, 1)), ((2, 6000), (2, 1)), ((37, 1, 3), (1, 41, 1))]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("op", sorted(TORCH_BINARY))
def test_broadcast_binary_matches_pytorch(op, dtype):
    rng = np.random.default_rng(sorted(TORCH_BINARY).index(op))
    for sa, sb in SHAPES:
        a, b = with_specials(rng, sa, dtype, 0.1), with_specials(rng, sb, dtype, 0.1)
        out = getattr(vnpu.ops, op)(a, b, card=CARD)
        ref = TORCH_BINARY[op](t(a).float(), t(b).float()).numpy()     # PyTorch's CPU fp16 math: fp32, rounded
        if op == "div":                              # a * recip(b): within 1.5 fp32 ulps, fp16 rounded once
            fin = np.isfinite(ref) & (np.abs(ref) < np.finfo(dtype).max)
            assert np.array_equal(np.isnan(out), np.isnan(ref.astype(dtype)))
            np.testing.assert_allclose(out[fin].astype(np.float64), ref[fin].astype(dtype).astype(np.float64),
                                       rtol=2e-7 if dtype == np.float32 else 1e-3, atol=0)
        elif op in ("maximum", "minimum"):           # -0.0 / 0.0 ties: PyTorch's own paths differ
            assert np.array_equal(out, ref.astype(dtype), equal_nan=True)
        else:
            same_bits_or_nan(out, ref.astype(dtype))
        same_bits_or_nan(out, broadcast.reference_binary(op, a, b)) if op not in ("maximum", "minimum") else \
            np.testing.assert_array_equal(out, broadcast.reference_binary(op, a, b))


def test_broadcast_numbers_empty_and_errors():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(vnpu.ops.sub(1.0, x, card=CARD), 1.0 - x)
    assert np.array_equal(vnpu.ops.add(x, 2, card=CARD), x + 2)
    assert vnpu.ops.add(np.zeros((0, 3), np.float32), np.ones(3, np.float32), card=CARD).shape == (0, 3)
    assert np.array_equal(vnpu.ops.div(np.array([1.0, -1.0, 0.0, np.inf], np.float32),
                                       np.array([0.0, 0.0, 0.0, np.inf], np.float32), card=CARD),
                          np.array([np.inf, -np.inf, np.nan, np.nan], np.float32), equal_nan=True)
    for f, word in [(lambda: vnpu.ops.sub(x, np.ones(4, np.float32), card=CARD), "broadcast"),
                    (lambda: vnpu.ops.sub(x, x.astype(np.float16), card=CARD), "same dtype"),
                    (lambda: vnpu.ops.maximum(x.astype(np.int32), x, card=CARD), "float32 or float16"),
                    (lambda: vnpu.ops.div(np.zeros((1,) * 5, np.float32), 1.0, card=CARD), "at most 4"),
                    (lambda: vnpu.ops.clamp(x, card=CARD), "min and max"),
                    (lambda: vnpu.ops.clamp(x, min="a", card=CARD), "min"),
                    (lambda: vnpu.ops.sum(x, 2, card=CARD), "out of range"),
                    (lambda: vnpu.ops.sum(np.zeros((2, 3, 4), np.float32), (0, 2), card=CARD), "adjacent"),
                    (lambda: vnpu.ops.argmax(x, (0, 1), card=CARD), "dim"),
                    (lambda: vnpu.ops.amax(np.zeros((2, 0), np.float32), 1, card=CARD), "empty"),
                    (lambda: vnpu.ops.mean(x, keepdim=1, card=CARD), "keepdim")]:
        with pytest.raises(vnpu.InvalidArgument, match=word):
            f()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_clamp_matches_pytorch(dtype):
    x = with_specials(np.random.default_rng(2), (3, 1001), dtype, 0.1)
    for lo, hi in [(-1.0, 2.0), (None, 0.0), (-0.0, None), (3.0, -3.0)]:
        out = vnpu.ops.clamp(x, lo, hi, card=CARD)
        same_bits_or_nan(out, torch.clamp(t(x), lo, hi).numpy())


# --- reductions ----------------------------------------------------------------------------------------------------
RED_CASES = [((5, 7), -1), ((5, 7), 0), ((2, 3, 4), 1), ((2, 3, 4), (1, 2)), ((13,), None), ((3, 1, 5), 1),
             ((2, 3, 5, 7), (0, 1)), ((1, 1), 0), ((3, 9, 2), None), ((2, 8001), 1), ((7, 2, 3), (0, 1, 2))]
TORCH_RED = {"sum": torch.sum, "mean": torch.mean, "amax": torch.amax, "argmax": torch.argmax}


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("op", sorted(TORCH_RED))
def test_reductions_match_pytorch(op, dtype):
    rng = np.random.default_rng(sorted(TORCH_RED).index(op))
    for (shape, dim), keepdim in zip(RED_CASES, [False, True] * 6):
        if op == "argmax" and isinstance(dim, tuple):
            continue
        x = with_specials(rng, shape, dtype, 0.08 if op in ("amax", "argmax") else 0.0)
        if op in ("amax", "argmax") and x.size > 100:
            x.reshape(-1)[::3] = x.reshape(-1)[1]                 # ties: the first index wins
        out = getattr(vnpu.ops, op)(x, dim, keepdim, card=CARD)
        tx = t(x).float()
        ref = (TORCH_RED[op](tx, dim, keepdim) if dim is not None else
               TORCH_RED[op](tx) if not keepdim or op != "argmax" else TORCH_RED[op](tx, None, True)).numpy()
        if op in ("amax", "argmax"):
            assert out.shape == ref.shape and out.dtype == (np.int64 if op == "argmax" else dtype)
            assert np.array_equal(out, ref.astype(out.dtype), equal_nan=True), (shape, dim)
        else:
            ref64 = TORCH_RED[op](t(x).double(), dim, keepdim) if dim is not None else TORCH_RED[op](t(x).double())
            mag = TORCH_RED[op](t(np.abs(x.astype(np.float64))), dim, keepdim) if dim is not None else \
                TORCH_RED[op](t(np.abs(x.astype(np.float64))))
            n = x.size / max(1, out.size)
            close_to(out, ref64.numpy(), n * np.finfo(np.float32).eps * mag.numpy() +
                     np.finfo(dtype).eps * np.abs(ref64.numpy()) + 1e-30)
        L = x.size // max(1, out.size)
        assert np.array_equal(out, broadcast.reference_reduce(op, x, dim, keepdim, T=broadcast.row_chunk(CARD, op, L)),
                              equal_nan=True)


def test_argmax_long_rows_and_special_rows():
    x = np.full((5, 9000), -np.inf, np.float32)                  # longer than a tile on the tiny card
    x[1, 7777] = 0.0
    x[2, [5, 8999]] = np.nan
    x[3, :] = 1.0
    x[4, [3, 8998]] = np.inf
    assert np.array_equal(vnpu.ops.argmax(x, 1, card=CARD), torch.argmax(t(x), 1).numpy())
    y = x[:, :100].copy()
    y[1, 50] = 0.0
    assert np.array_equal(vnpu.ops.argmax(y, 1, card=CARD), torch.argmax(t(y), 1).numpy())
    assert np.array_equal(vnpu.ops.argmax(y.T, 0, card=CARD), torch.argmax(t(y.T), 0).numpy())
    assert vnpu.ops.sum(np.zeros((3, 0), np.float32), 1, card=CARD).tolist() == [0, 0, 0]
    assert np.isnan(vnpu.ops.mean(np.zeros((3, 0), np.float32), 1, card=CARD)).all()


@pytest.mark.parametrize("which", ["row_col", "sub_swapped", "div16", "stream", "clamp", "sum_rows", "argmax_rows",
                                   "argmax_mid", "mean_mid16", "argmax_long"])
def test_broadcast_kernels_agree_on_every_engine(which, monkeypatch):
    rng = np.random.default_rng(4)
    a = with_specials(rng, (3, 1, 6), np.float32, 0.1)
    b = with_specials(rng, (1, 5, 1), np.float32, 0.1)
    long1, long2 = with_specials(rng, (2, 5000), np.float32), with_specials(rng, (2, 4100), np.float32)
    m = with_specials(rng, (5, 6), np.float32, 0.1)
    calls = {
        "row_col": lambda: broadcast.binary(CARD, "maximum", a, b),
        "sub_swapped": lambda: broadcast.binary(CARD, "sub", b[0], a[0, 0]),
        "div16": lambda: broadcast.binary(CARD, "div", a.astype(np.float16), b.astype(np.float16)),
        "stream": lambda: broadcast.binary(CARD, "mul", long1, b[0, 0]),
        "clamp": lambda: broadcast.clamp(CARD, a, -1.0, 1.0),
        "sum_rows": lambda: broadcast.reduce(CARD, "sum", m, 1),
        "argmax_rows": lambda: broadcast.reduce(CARD, "argmax", m, 1),
        "argmax_mid": lambda: broadcast.reduce(CARD, "argmax", m, 0),
        "mean_mid16": lambda: broadcast.reduce(CARD, "mean", a.astype(np.float16).reshape(3, 6, 1) * 2, 0),
        "argmax_long": lambda: broadcast.reduce(CARD, "argmax", long2, 1),
    }
    on_every_engine(monkeypatch, calls[which])
