"""The attention pieces (kernels/attention.py, kernel language) against PyTorch: scaled_dot_product_attention (fused
and unfused), bmm with either operand transposed, softmax with an additive mask, gelu (erf and tanh), tanh,
layer_norm in fp16, embedding. Random shapes with 1 and prime sizes, NaN / inf / -0.0 where they mean something,
empty inputs; fp32 at fp32 accuracy, fp16 within fp16 rounding. Each kernel also runs on the reference engine and
in the language's interpreter (tiny shapes), which must agree with the Numba core."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import vnpu
from vnpu.emulator.card import Card
from vnpu.errors import InvalidArgument
from vnpu.kernels import attention as A
from engine_modes import engine, on_every_engine  # tests/ops/engine_modes.py

CARD = Card("tiny")
RNG = np.random.default_rng(16)


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def ulp16(x):
    return np.spacing(np.abs(np.asarray(x, np.float64)).astype(np.float16)).astype(np.float64)


def close16(out, ref64, extra=0.0):
    """fp16 output within fp16 rounding of the float64 result: 2 ulps of fp16 (plus extra), same NaN places."""
    out = np.asarray(out, np.float64)
    assert out.shape == ref64.shape and np.array_equal(np.isnan(out), np.isnan(ref64))
    ok = ~np.isnan(ref64)
    err = np.abs(out[ok] - ref64[ok])
    assert (err <= 2 * ulp16(ref64[ok]) + np.broadcast_to(extra, ref64.shape)[ok]).all(), err.max()


# --- scaled_dot_product_attention ----------------------------------------------------------------------------------
SDPA = [  # q shape, key length, value dim, mask, scale
    ((1, 1, 1, 1), 1, 1, None, None),
    ((2, 3, 7, 8), 11, 5, None, None),            # 1/sqrt(8): the scale applies to S
    ((1, 2, 13, 16), 13, 16, "causal", None),     # 1/4: applied to K, exactly
    ((3, 5, 4), 5, 3, "bool", 0.3),               # 3-D, a bool mask with a fully masked row
    ((2, 2, 5, 4), 9, 4, "float", None),          # an additive mask broadcast over the batch
    ((6, 17), 23, 7, "float2", 2.0),              # 2-D, scale > 1
    ((3, 4, 6, 8), 9, 8, "keys", None),           # BERT's key padding mask [B, 1, 1, S] (odd shares of 12 items)
]


def _sdpa_case(i, dt):
    qs, sk, dv, mk, scale = SDPA[i]
    lead = qs[:-2]
    q = RNG.standard_normal(qs).astype(dt)
    k = RNG.standard_normal(lead + (sk, qs[-1])).astype(dt)
    v = RNG.standard_normal(lead + (sk, dv)).astype(dt)
    mask = None
    if mk == "bool":
        mask = RNG.random(lead + (qs[-2], sk)) > 0.4
        mask[..., 1, :] = False
    elif mk == "float":
        mask = (RNG.standard_normal((1,) + lead[1:] + (qs[-2], sk)) * 2).astype(dt)
        mask[..., 0, 2] = -np.inf
    elif mk == "keys":
        mask = (np.arange(sk)[None, :] < np.array([9, 1, 4])[:, None])[:, None, None, :]
    elif mk == "float2":
        mask = np.where(RNG.random((qs[-2], sk)) < 0.3, -np.inf, RNG.standard_normal((qs[-2], sk))).astype(dt)
    return q, k, v, mask, mk == "causal", scale


def _torch_sdpa(q, k, v, mask, causal, scale, dtype=torch.float64):
    m = None if mask is None else (t(mask) if mask.dtype == np.bool_ else t(mask).to(dtype))
    return F.scaled_dot_product_attention(t(q).to(dtype), t(k).to(dtype), t(v).to(dtype), attn_mask=m,
                                          is_causal=causal, scale=scale).numpy()


@pytest.mark.parametrize("dt", [np.float32, np.float16])
@pytest.mark.parametrize("case", range(len(SDPA)))
def test_sdpa_matches_pytorch(case, dt):
    q, k, v, mask, causal, scale = _sdpa_case(case, dt)
    ref = _torch_sdpa(q, k, v, mask, causal, scale)
    for fused in (True, False):
        out, res = A.scaled_dot_product_attention(CARD, q, k, v, mask, is_causal=causal, scale=scale, fused=fused)
        assert out.dtype == dt and out.shape == ref.shape and res.cycles > 0
        if dt == np.float32:
            np.testing.assert_allclose(out, ref, rtol=2e-6, atol=2e-7)
            np.testing.assert_allclose(out, _torch_sdpa(q, k, v, mask, causal, scale, torch.float32), rtol=1e-5,
                                       atol=1e-6)
        else:
            # fused: E in fp32; unfused: P rounded to fp16 before P V (as PyTorch's CPU kernel): 2**-11 of |V|
            close16(out, ref, extra=1e-4 if fused else np.abs(v).max() * 2.0 ** -10)
            if fused:
                assert np.array_equal(out, A.reference_sdpa(q, k, v, mask, causal, scale))
    if SDPA[case][3] == "bool":
        assert not out[..., 1, :].any()          # a fully masked row gives zeros, as PyTorch


def test_sdpa_specials_and_empty():
    q, k, v = (RNG.standard_normal((1, 2, 5, 4)).astype(np.float32) for _ in range(3))
    q[0, 0, 2, 1], k[0, 1, 3, 0] = np.nan, np.nan           # a NaN query row; a NaN key (every row of head 1)
    q[0, 0, 4, 0] = -0.0
    out = vnpu.ops.scaled_dot_product_attention(q, k, v, card=CARD)
    with sdpa_kernel(SDPBackend.MATH):       # (PyTorch's CPU flash kernel gives a NaN query row zeros)
        ref = _torch_sdpa(q, k, v, None, False, None)
    assert np.array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_allclose(out[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=2e-6, atol=2e-7)
    big = (RNG.standard_normal((1, 1, 3, 4)) * 300).astype(np.float16)     # scores far past fp16's range
    out = vnpu.ops.scaled_dot_product_attention(big, big, big, card=CARD)
    close16(out, _torch_sdpa(big, big, big, None, False, None), extra=0.3)
    for qs, ks in [((0, 2, 3, 4), (0, 2, 5, 4)), ((1, 2, 0, 4), (1, 2, 5, 4)), ((1, 2, 3, 4), (1, 2, 0, 4)),
                   ((1, 2, 3, 0), (1, 2, 5, 0))]:
        q, k = np.ones(qs, np.float16), np.ones(ks, np.float16)
        v = np.ones(ks[:-1] + (3,), np.float16)
        out = vnpu.ops.scaled_dot_product_attention(q, k, v, card=CARD)
        ref = _torch_sdpa(q, k, v, None, False, None)
        assert out.shape == ref.shape and np.array_equal(out, ref.astype(np.float16))
    with pytest.raises(InvalidArgument):
        vnpu.ops.scaled_dot_product_attention(q, k, v, dropout_p=0.1, card=CARD)
    with pytest.raises(InvalidArgument):
        vnpu.ops.scaled_dot_product_attention(q, k, v.astype(np.float32), card=CARD)
    with pytest.raises(InvalidArgument):
        vnpu.ops.scaled_dot_product_attention(q, k, v, attn_mask=np.zeros((3, 5), bool), is_causal=True, card=CARD)


# --- bmm ------------------------------------------------------------------------------------------------------------
BMM = [(1, 1, 1, 1), (2, 5, 7, 3), (3, 13, 17, 11), (1, 1, 31, 37), (2, 40, 9, 70)]


def _operands(B, M, K, N, dt, ta, tb):
    sa, sb = (B, K, M) if ta else (B, M, K), (B, N, K) if tb else (B, K, N)
    if dt == np.int8:
        return RNG.integers(-128, 128, sa).astype(dt), RNG.integers(-128, 128, sb).astype(dt)
    return RNG.standard_normal(sa).astype(dt), RNG.standard_normal(sb).astype(dt)


@pytest.mark.parametrize("dt", [np.float32, np.float16, np.int8])
@pytest.mark.parametrize("shape", BMM)
def test_bmm_matches_pytorch(shape, dt):
    for ta, tb in [(False, False), (False, True), (True, False), (True, True)]:
        a, b = _operands(*shape, dt, ta, tb)
        out = vnpu.ops.bmm(a, b, transpose_a=ta, transpose_b=tb, card=CARD)
        ta_, tb_ = t(a).to(torch.float64), t(b).to(torch.float64)
        ref = ((ta_.transpose(-1, -2) if ta else ta_) @ (tb_.transpose(-1, -2) if tb else tb_)).numpy()
        if dt == np.int8:
            assert out.dtype == np.int32 and np.array_equal(out, ref.astype(np.int64).astype(np.int32))
        elif dt == np.float32:
            np.testing.assert_allclose(out, ref, rtol=1.2e-7, atol=1e-30)     # one rounding of the exact sum
        else:
            assert out.dtype == np.float16
            close16(out, ref, extra=shape[2] * 1e-6)
        assert np.array_equal(out, A.reference_bmm(a, b, ta, tb))


def test_bmm_specials_empty_and_errors():
    a, b = _operands(2, 4, 6, 5, np.float32, False, True)
    a[0, 1, 2], b[1, 3, 0], a[1, 2, 4] = np.nan, np.inf, -np.inf
    out = vnpu.ops.bmm(a, b, transpose_b=True, card=CARD)
    ref = (t(a) @ t(b).transpose(-1, -2)).numpy()
    assert np.array_equal(np.isnan(out), np.isnan(ref)) and np.array_equal(np.isinf(out), np.isinf(ref))
    for sa, sb in [((0, 3, 4), (0, 4, 5)), ((2, 0, 4), (2, 4, 5)), ((2, 3, 0), (2, 0, 5)), ((3, 4), (4, 0))]:
        a, b = np.ones(sa, np.float16), np.ones(sb, np.float16)
        out = vnpu.ops.bmm(a, b, card=CARD)
        assert out.shape == (t(a) @ t(b)).shape and not out.any() and out.dtype == np.float16
    with pytest.raises(InvalidArgument):
        vnpu.ops.bmm(np.ones((2, 3, 4), np.float32), np.ones((2, 5, 4), np.float32), card=CARD)
    with pytest.raises(InvalidArgument):
        vnpu.ops.bmm(np.ones((2, 3, 4), np.float32), np.ones((2, 4, 5), np.float16), card=CARD)


# --- softmax with an additive mask -----------------------------------------------------------------------------------
SOFTMAX = [((1,), None), ((5, 7), (5, 7)), ((2, 3, 5, 13), (2, 1, 5, 13)), ((2, 3, 5, 13), (1, 3, 1, 13)),
           ((3, 11), (11,)), ((2, 3, 1), (3, 1)), ((4, 70, 9), "bool")]


@pytest.mark.parametrize("dt", [np.float32, np.float16])
@pytest.mark.parametrize("case", range(len(SOFTMAX)))
def test_masked_softmax_matches_pytorch(case, dt):
    xs, ms = SOFTMAX[case]
    x = (RNG.standard_normal(xs) * 3).astype(dt)
    if ms == "bool":
        mask = RNG.random(xs) > 0.3
        madd = np.where(mask, 0, -np.inf).astype(dt)
    else:
        mask = madd = None if ms is None else (RNG.standard_normal(ms) * 2).astype(dt)
    out = vnpu.ops.masked_softmax(x, mask, card=CARD)
    ref = torch.softmax((t(x) + (0 if madd is None else t(madd))).double(), -1).numpy()   # x + mask in x's dtype
    if dt == np.float32:
        np.testing.assert_allclose(out, ref, rtol=2e-6, atol=1e-7)
    else:
        close16(out, ref)
    assert np.array_equal(out, A.reference_masked_softmax(x, mask), equal_nan=True)


def test_masked_softmax_specials_and_empty():
    x = RNG.standard_normal((4, 6)).astype(np.float32)
    x[0, 2], x[1, 3], x[2, :], x[3, 1] = np.nan, np.inf, -np.inf, -0.0     # NaN row, inf row, all -inf: NaN
    mask = np.zeros(6, np.float32)
    mask[4] = -np.inf
    out = vnpu.ops.masked_softmax(x, mask, card=CARD)
    ref = torch.softmax(t(x) + t(mask), -1).numpy()
    assert np.array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_allclose(out[3], ref[3], rtol=2e-6, atol=1e-7)
    assert out[3, 4] == 0
    for shape in [(0, 5), (3, 0), (2, 0, 4)]:
        assert vnpu.ops.masked_softmax(np.ones(shape, np.float16), card=CARD).shape == shape
    with pytest.raises(InvalidArgument):
        vnpu.ops.masked_softmax(x, np.zeros((3, 6), np.float32), card=CARD)
    with pytest.raises(InvalidArgument):
        vnpu.ops.masked_softmax(x, np.zeros(6, np.float16), card=CARD)


# --- gelu, tanh, layer_norm fp16, embedding --------------------------------------------------------------------------
SPECIALS = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-30, -5e3], np.float32)


@pytest.mark.parametrize("dt", [np.float32, np.float16])
def test_gelu_and_tanh_match_pytorch(dt):
    x = np.concatenate([SPECIALS, RNG.standard_normal(1013) * 4]).astype(dt).reshape(-1, 17)
    for approximate in ("tanh", "none"):
        out = vnpu.ops.gelu(x, approximate, card=CARD)
        ref = F.gelu(t(x).double(), approximate=approximate).numpy()
        finite = np.isfinite(x)        # the erf form gives the limits at +-inf (documented), PyTorch NaN at -inf
        sel = finite | (approximate == "tanh")
        assert np.array_equal(np.isnan(out[sel]), np.isnan(ref[sel]))
        assert np.array_equal(out[sel & np.isinf(ref)], ref[sel & np.isinf(ref)])
        ok = sel & np.isfinite(ref)
        if dt == np.float32 and approximate == "none":         # fp64, rounded once
            np.testing.assert_allclose(out[ok], ref[ok], rtol=5e-7, atol=1e-37)
        elif dt == np.float32:       # PyTorch's fp32 steps (1 + tanh cancels for x < 0): a few ulps of the terms
            ref32 = F.gelu(t(x), approximate="tanh").numpy()
            err = np.abs(out[ok].astype(np.float64) - ref32[ok])
            assert (err <= 3e-7 * (np.abs(x[ok]) + np.abs(ref32[ok]))).all()
        else:
            close16(out[ok], ref[ok], extra=np.abs(x[ok]) * 2e-7)
        assert np.array_equal(np.signbit(out[ok & (out == 0)]), np.signbit(ref[ok & (out == 0)]))
    out = vnpu.ops.tanh(x, card=CARD)
    np.testing.assert_allclose(out.astype(np.float64), np.tanh(x.astype(np.float64)).astype(dt), rtol=1e-3 if
                               dt == np.float16 else 2e-7, atol=0)
    assert vnpu.ops.gelu(np.zeros((0, 3), dt), "tanh", card=CARD).shape == (0, 3)
    with pytest.raises(InvalidArgument):
        vnpu.ops.gelu(x, "erf", card=CARD)


@pytest.mark.parametrize("shape, affine", [((7, 33), True), ((2, 3, 1), False), ((1, 768), True), ((5, 2), False)])
def test_layer_norm_fp16_matches_pytorch(shape, affine):
    x = (RNG.standard_normal(shape) * 2 + 1).astype(np.float16)
    D = shape[-1]
    g = RNG.standard_normal(D).astype(np.float16) if affine else None
    b = RNG.standard_normal(D).astype(np.float16) if affine else None
    out = vnpu.ops.layer_norm(x, g, b, card=CARD)
    ref = F.layer_norm(t(x).double(), (D,), None if g is None else t(g).double(),
                       None if b is None else t(b).double()).numpy()
    assert out.dtype == np.float16
    close16(out, ref, extra=2e-3 * (1 + np.abs(ref)))          # mean and variance in fp32 (as PyTorch's fp16)
    assert np.array_equal(out, A.reference_layer_norm16(x, g, b))
    x[0, ..., 0] = np.nan
    assert np.isnan(vnpu.ops.layer_norm(x, g, b, card=CARD)[0]).all()


@pytest.mark.parametrize("dt", [np.float32, np.float16])
def test_embedding_matches_pytorch(dt):
    w = RNG.standard_normal((53, 12)).astype(dt)
    w[3, :4] = [np.nan, np.inf, -np.inf, 5.0]
    for idx in [RNG.integers(0, 53, (3, 7)), np.array([3, 0, 52, 3], np.int32), np.array(5), np.zeros((2, 0), int)]:
        out = vnpu.ops.embedding(idx, w, card=CARD)
        ref = F.embedding(torch.tensor(idx).long(), t(w)).numpy()
        assert out.dtype == dt and out.shape == ref.shape and np.array_equal(out, ref, equal_nan=True)
    w[7, 1] = -0.0                    # the unit adds rows to 0.0: -0.0 comes back as +0.0 (documented)
    out = vnpu.ops.embedding(np.array([7]), w, padding_idx=7, card=CARD)
    assert out[0, 1] == 0 and not np.signbit(out[0, 1])
    with pytest.raises(InvalidArgument):
        vnpu.ops.embedding(np.array([53]), w, card=CARD)
    with pytest.raises(InvalidArgument):
        vnpu.ops.embedding(np.array([1]), w, max_norm=1.0, card=CARD)


# --- every engine: the Numba core, the reference engine, the interpreter ---------------------------------------------
def _engines(monkeypatch, call, atol):
    """The reference engine gives the Numba core's bits; the interpreter (matrix sums in fp64) within atol."""
    out, res = call()
    assert res.engine == "numba" and res.cycles > 0
    with engine("reference", monkeypatch):
        assert np.array_equal(call()[0], out, equal_nan=True)
    with engine("interpret", monkeypatch):
        np.testing.assert_allclose(np.asarray(call()[0], np.float64), out.astype(np.float64), rtol=0, atol=atol)


def test_matmul_kernels_on_every_engine(monkeypatch):
    q, k, v, mask, causal, scale = _sdpa_case(4, np.float16)
    _engines(monkeypatch, lambda: A.scaled_dot_product_attention(CARD, q, k, v, mask), 2e-3)
    q, k, v, mask, causal, scale = _sdpa_case(1, np.float32)
    _engines(monkeypatch, lambda: A.scaled_dot_product_attention(CARD, q[:1, :2], k[:1, :2], v[:1, :2],
                                                                  is_causal=True), 1e-6)
    _engines(monkeypatch, lambda: A.scaled_dot_product_attention(CARD, q[:1, :1], k[:1, :1], v[:1, :1], fused=False),
             1e-6)
    a, b = _operands(2, 5, 7, 3, np.float16, True, True)
    _engines(monkeypatch, lambda: A.bmm(CARD, a, b, True, True), 2e-3)
    a, b = _operands(1, 3, 4, 6, np.int8, False, True)
    _engines(monkeypatch, lambda: A.bmm(CARD, a, b, False, True), 0)


@pytest.mark.parametrize("which", ["softmax", "gelu", "layer_norm", "embedding"])
def test_vector_kernels_on_every_engine(which, monkeypatch):
    x = (RNG.standard_normal((3, 4, 9)) * 3).astype(np.float16)
    w = RNG.standard_normal((20, 6)).astype(np.float16)
    calls = {"softmax": lambda: A.masked_softmax(CARD, x, np.where(x[0] > 2, -np.inf, 0).astype(np.float16)),
             "gelu": lambda: A.gelu(CARD, x, "tanh"),
             "layer_norm": lambda: A.layer_norm(CARD, x, w[0, :1].repeat(9), w[1, :1].repeat(9)),
             "embedding": lambda: A.embedding(CARD, np.array([[4, 19], [0, 4]]), w)}
    on_every_engine(monkeypatch, calls[which])


def test_long_sequences_and_large_operands():
    """Tiles too large for the fused kernel (the tiny card's 256 KiB of local memory) run unfused; transposed
    operands larger than half the shared SRAM are staged by groups of batches."""
    q = RNG.standard_normal((1, 2, 5, 64)).astype(np.float16)
    k, v = (RNG.standard_normal((1, 2, 600, 64)).astype(np.float16) for _ in range(2))
    out, res = A.scaled_dot_product_attention(CARD, q, k, v)
    assert res.kernel == "bmm+masked_softmax+bmm"
    close16(out, _torch_sdpa(q, k, v, None, False, None), extra=np.abs(v).max() * 2.0 ** -10)
    a, b = RNG.standard_normal((6, 5, 64)).astype(np.float32), RNG.standard_normal((6, 900, 64)).astype(np.float32)
    out, res = A.bmm(CARD, a, b, transpose_b=True)
    assert res.kernel == "bmm+bmm+bmm"
    np.testing.assert_allclose(out, (t(a).double() @ t(b).double().transpose(-1, -2)).numpy(), rtol=1.2e-7,
                               atol=1e-30)


@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 4), (2, 0, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_layer_norm_of_empty_arrays_of_any_rank(shape, dtype):
    y = vnpu.ops.layer_norm(np.zeros(shape, dtype))
    assert y.shape == shape and y.dtype == dtype


def test_reshape_and_view_take_the_card_arguments_like_every_op():
    x = np.arange(6, dtype=np.float32)
    assert vnpu.ops.reshape(x, (2, 3), card=None, pes=None).shape == (2, 3)
    assert vnpu.ops.view(x, 3, 2, card=None).shape == (3, 2)
