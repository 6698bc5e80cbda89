"""Every vnpu.ops function against independent references: PyTorch and float64 math at stated tolerances (the
numpy references in vnpu.kernels repeat the card's arithmetic step by step, so they cannot see a defect in
that arithmetic), special values (NaN, +inf, -inf, -0.0) with PyTorch's NaN and inf positions, and quantize
bit for bit against torch.quantize_per_tensor."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vnpu
from vnpu.emulator.card import Card

CARD = Card("tiny")
SPECIALS = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1.0, -2.5, 1e30, -1e-30], np.float32)
warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def same_specials(out, ref, atol=1e-37):
    """Same NaN positions, the same infinities, the finite values close (1e-6 relative, or atol)."""
    ref = np.asarray(ref, np.float64)
    out = np.asarray(out, np.float64)
    assert out.shape == ref.shape
    assert np.array_equal(np.isnan(out), np.isnan(ref)), (out, ref)
    assert np.array_equal(np.isposinf(out), np.isposinf(ref)) and np.array_equal(np.isneginf(out), np.isneginf(ref))
    fin = np.isfinite(ref)
    tol = 1e-6 * np.abs(ref[fin]) + (atol if np.isscalar(atol) else atol[fin])
    assert (np.abs(out[fin] - ref[fin]) <= tol).all(), (out[fin], ref[fin])


def with_specials(rng, shape, dtype=np.float32):
    x = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    flat[rng.integers(0, flat.size, max(1, flat.size // 8))] = rng.choice(SPECIALS.astype(dtype), max(1, flat.size // 8))
    return x


# --- elementwise ----------------------------------------------------------------------------------------------
TORCH_UNARY = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
               "gelu": lambda v: F.gelu(v.double()).to(v.dtype)}   # float64: PyTorch's vectorized fp32 gelu(+inf) is NaN


@pytest.mark.parametrize("op", ["relu", "sigmoid", "tanh", "gelu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_unary_special_values_and_random_data_match_pytorch(op, dtype):
    x = np.concatenate([SPECIALS.astype(dtype), with_specials(np.random.default_rng(1), 3000, dtype)])
    out = getattr(vnpu.ops, op)(x, card=CARD)
    ref = TORCH_UNARY[op](t(x).double()).numpy()
    if op == "gelu":      # the card gives the limit at -inf, -0.0 (documented); PyTorch's formula -inf * 0 is NaN
        ref = np.where(np.isneginf(x), -0.0, ref)
    fin = np.isfinite(ref)
    rtol = 1e-6 if dtype == np.float32 else 1e-3        # the result rounded to the element type
    assert np.array_equal(np.isnan(out), np.isnan(ref))
    assert np.array_equal(np.isinf(out), np.isinf(ref.astype(dtype)))
    np.testing.assert_allclose(out[fin].astype(np.float64), ref[fin].astype(dtype).astype(np.float64), rtol=rtol,
                               atol=1e-7 if dtype == np.float32 else 1e-4)


@pytest.mark.parametrize("op", ["add", "mul"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_binary_special_values_match_pytorch_exactly(op, dtype):
    a = np.repeat(SPECIALS.astype(dtype), len(SPECIALS))
    b = np.tile(SPECIALS.astype(dtype), len(SPECIALS))
    out = getattr(vnpu.ops, op)(a, b, card=CARD)
    ref = getattr(torch, op)(t(a), t(b)).numpy()
    assert np.array_equal(np.isnan(out), np.isnan(ref))
    ok = ~np.isnan(ref)
    assert np.array_equal(out[ok].view(f"u{out.itemsize}"), ref[ok].view(f"u{ref.itemsize}"))   # -0.0 too


# --- quantize: bit for bit against torch.quantize_per_tensor -----------------------------------------------------
@pytest.mark.parametrize("scale", [0.1, 0.05, 1 / 3, 0.7971898846724081, 0.024001280843568805, 2.0 ** -5, 7.3])
@pytest.mark.parametrize("zero_point", [0, 3, -7, 127, -128])
def test_quantize_equals_torch_bit_for_bit(scale, zero_point):
    rng = np.random.default_rng(int(scale * 1e6) + zero_point)
    inv = np.float32(1.0) / np.float32(scale)
    k = rng.integers(-140, 140, 4000)
    ties = ((k + 0.5) / np.float64(inv)).astype(np.float32)             # values at and next to x * inv = k + 1/2
    x = np.concatenate([ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf)),
                        (rng.standard_normal(20000) * 60 * scale).astype(np.float32),
                        np.array([np.inf, -np.inf, -0.0, 0.0, 1e30, -1e30], np.float32)])
    out = vnpu.ops.quantize(x, scale, zero_point, card=CARD)
    ref = torch.quantize_per_tensor(t(x), scale, zero_point, torch.qint8).int_repr().numpy()
    bad = np.nonzero(out != ref)[0]
    assert not len(bad), f"{len(bad)} codes differ, first x={x[bad[0]]!r}: {out[bad[0]]} vs {ref[bad[0]]}"
    assert vnpu.ops.quantize(np.array([np.nan], np.float32), scale, zero_point, card=CARD)[0] == 0   # documented


@pytest.mark.parametrize("zero_point", [0, 5, -128])
def test_dequantize_equals_torch(zero_point):
    q = np.arange(-128, 128, dtype=np.int8)
    out = vnpu.ops.dequantize(q, 0.037, zero_point, card=CARD)
    ref = torch.dequantize(torch._make_per_tensor_quantized_tensor(t(q), 0.037, zero_point)).numpy()
    assert np.array_equal(out, ref)


# --- dense --------------------------------------------------------------------------------------------------------
def test_matmul_and_linear_against_float64():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((37, 70)).astype(np.float16)
    w = rng.standard_normal((70, 45)).astype(np.float16)
    out = vnpu.ops.matmul(a, w, card=CARD)
    ref = a.astype(np.float64) @ w.astype(np.float64)
    bound = 2 * 70 * 2.0 ** -24 * (np.abs(a.astype(np.float64)) @ np.abs(w.astype(np.float64)))
    assert (np.abs(out - ref) <= bound).all()
    ai = rng.integers(-128, 128, (9, 300)).astype(np.int8)
    wi = rng.integers(-128, 128, (300, 17)).astype(np.int8)
    assert np.array_equal(vnpu.ops.matmul(ai, wi, card=CARD), (t(ai).long() @ t(wi).long()).int().numpy())
    bias = rng.standard_normal(17).astype(np.float32)
    y = vnpu.ops.linear(ai, np.ascontiguousarray(wi.T), bias, x_scale=0.02, w_scale=0.01, card=CARD)
    ref = F.linear(t(ai).double() * 0.02, t(wi.T).double() * 0.01, t(bias).double()).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-5)


def test_matmul_special_values_fp16():
    a = np.array([[np.nan, 1, 2], [np.inf, 1, 0], [1, 2, 3], [-0.0, 0, 0]], np.float16)
    w = np.array([[1, 0], [2, 1], [3, -1]], np.float16)
    out = vnpu.ops.matmul(a, w, card=CARD)
    same_specials(out, (t(a).float() @ t(w).float()).numpy())


# --- norms ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [1000.0, -7e5, 0.1, 3e-20, 12345.678, -1.0, 7.0, 1e30])
@pytest.mark.parametrize("D", [1, 2, 7, 64, 333])
def test_layer_norm_of_a_constant_row_is_beta(value, D):
    x = np.full((3, D), value, np.float32)
    g = np.linspace(-2, 2, D).astype(np.float32)
    b = np.linspace(1, 3, D).astype(np.float32)
    out = vnpu.ops.layer_norm(x, g, b, card=CARD)
    assert np.array_equal(out, np.broadcast_to(b, x.shape))
    if abs(value) < 1e18:     # PyTorch's fp32 variance of 1e30 overflows: it gives NaN, the card beta
        assert np.array_equal(out, F.layer_norm(t(x), (D,), t(g), t(b)).numpy())
    assert not vnpu.ops.layer_norm(x, card=CARD).any()


def test_layer_norm_and_softmax_against_float64_and_torch():
    rng = np.random.default_rng(5)
    for scale, shift in ((1, 0), (0.01, 1000), (100, -5e4), (1e-3, 0)):
        x = (rng.standard_normal((40, 300)) * scale + shift).astype(np.float32)
        g = rng.standard_normal(300).astype(np.float32)
        b = rng.standard_normal(300).astype(np.float32)
        out = vnpu.ops.layer_norm(x, g, b, eps=1e-5, card=CARD)
        x64 = x.astype(np.float64)
        ref64 = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5) * g + b
        # stated bound: 1e-5 absolute on the normalized value (times |gamma|), plus fp32 rounding of the affine
        assert (np.abs(out - ref64) <= 1e-5 * (1 + np.abs(g)) + 2.0 ** -22 * np.abs(ref64)).all()
        tl = F.layer_norm(t(x), (300,), t(g), t(b)).numpy()    # PyTorch's own fp32 error counts in its tolerance
        np.testing.assert_allclose(out, tl, rtol=0, atol=1e-4 + 2 * np.abs(tl - ref64).max())
        s = vnpu.ops.softmax(x, card=CARD)
        e = np.exp(x64 - x64.max(-1, keepdims=True))
        np.testing.assert_allclose(s, e / e.sum(-1, keepdims=True), rtol=4e-6, atol=1e-38)
        np.testing.assert_allclose(s, torch.softmax(t(x), -1).numpy(), rtol=1e-5, atol=1e-38)


def test_norm_special_values_match_pytorch():
    rows = np.array([[1, np.inf, 2, 3], [1, 2, np.nan, 4], [-np.inf, 0, 1, 2], [-0.0, 0.0, -0.0, 0.0],
                     [3e38, -3e38, 0, 1], [5, 5, 5, 5], [np.inf, np.inf, np.inf, np.inf],
                     [-np.inf, -np.inf, -np.inf, -np.inf], [1e30, -1e30, 2, 2]], np.float32)
    same_specials(vnpu.ops.softmax(rows, card=CARD), torch.softmax(t(rows), -1).numpy())
    same_specials(vnpu.ops.layer_norm(rows, card=CARD), F.layer_norm(t(rows), (4,)).numpy())
    out = vnpu.ops.softmax(np.array([[0.0, np.inf, 1.0]], np.float32), card=CARD)
    assert np.isnan(out).all()                               # PyTorch: all NaN, not [0, nan, 0]


# --- data movement -----------------------------------------------------------------------------------------------
def test_concat_and_transpose_move_bits():
    x = with_specials(np.random.default_rng(6), (33, 7))
    y = with_specials(np.random.default_rng(7), (33, 5))
    c = vnpu.ops.concat([x, y], card=CARD)
    assert np.array_equal(c.view(np.uint32), torch.cat([t(x), t(y)], -1).numpy().view(np.uint32))
    assert np.array_equal(vnpu.ops.transpose(x, card=CARD).view(np.uint32), t(x).T.contiguous().numpy().view(np.uint32))


# --- interaction, conv, embeddings ---------------------------------------------------------------------------------
def _torch_interaction(dense, emb):
    z = torch.cat([dense[:, None, :], emb], 1)
    zz = torch.bmm(z, z.transpose(1, 2))
    li, lj = torch.tril_indices(z.shape[1], z.shape[1], -1)
    return torch.cat([dense, zz[:, li, lj]], 1)


def test_dot_interaction_fp32_against_float64_and_special_values():
    rng = np.random.default_rng(8)
    dense = rng.standard_normal((10, 16)).astype(np.float32)
    emb = (rng.standard_normal((10, 5, 16)) * 1e4).astype(np.float32)
    out = vnpu.ops.dot_interaction(dense, emb, card=CARD)
    ref = _torch_interaction(t(dense).double(), t(emb).double()).numpy()
    z = np.abs(np.concatenate([dense[:, None], emb], 1).astype(np.float64))
    mag = _torch_interaction(t(z[:, 0]), t(z[:, 1:])).numpy()
    assert (np.abs(out - ref) <= 2.0 ** -24 * np.abs(ref) + 16 * 2.0 ** -53 * mag).all()
    dense[1, 3], dense[2, 0], emb[3, 1, 2], emb[4, 0, 0] = np.nan, np.inf, -np.inf, -0.0
    out = vnpu.ops.dot_interaction(dense, emb, card=CARD)
    same_specials(out, _torch_interaction(t(dense).double(), t(emb).double()).numpy())


def test_conv2d_fp16_against_float64_and_special_values():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float16)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float16)
    bias = rng.standard_normal(4).astype(np.float32)
    out = vnpu.ops.conv2d(x, w, bias, padding=1, card=CARD)
    ref = F.conv2d(t(x).double(), t(w).double(), t(bias).double(), padding=1).numpy()
    mag = F.conv2d(t(x).double().abs(), t(w).double().abs(), t(bias).double().abs(), padding=1).numpy()
    assert (np.abs(out - ref) <= 28 * 2.0 ** -24 * mag).all()
    x[0, 1, 4, 4], x[1, 0, 0, 0] = np.nan, np.inf
    out = vnpu.ops.conv2d(x, w, bias, padding=1, card=CARD)
    same_specials(out, F.conv2d(t(x).double(), t(w).double(), t(bias).double(), padding=1).numpy(),
                  atol=28 * 2.0 ** -24 * mag)


def test_conv2d_fp32_inputs_compute_in_fp32():
    x = np.array([[[[1e-8, 7e4], [1.0, 2.0]]]], np.float32)
    w = np.array([[[[1e8, 1.0], [0.0, 0.0]]]], np.float32)
    out = vnpu.ops.conv2d(x, w, card=CARD)
    np.testing.assert_allclose(out[0, 0, 0, 0], np.float32(np.float64(np.float32(1e-8)) * 1e8 + 7e4), rtol=2 ** -23)


def test_embedding_bag_special_values_match_pytorch():
    table = np.random.default_rng(10).standard_normal((8, 4)).astype(np.float32)
    table[2, 1], table[3, 0], table[5, 3] = np.nan, np.inf, -np.inf
    idx = np.array([0, 2, 1, 3, 5, 3, 4, 6], np.int64)
    off = np.array([0, 2, 4, 6], np.int64)
    for mode in ("sum", "mean"):
        out = vnpu.ops.embedding_bag(table, idx, offsets=off, mode=mode, card=CARD)
        same_specials(out, F.embedding_bag(t(idx), t(table), t(off), mode=mode).numpy())
