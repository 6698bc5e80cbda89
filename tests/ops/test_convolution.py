"""conv2d in the kernel language (kernels/convolution.py) against PyTorch: groups (depthwise too), dilation,
any stride, asymmetric padding, fp32 / fp16 / int8 with per-channel scales, fused bias, residual, ReLU,
ReLU6 and clip, requantization; NaN / inf; empty operands; both engines; misuse."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vnpu
from vnpu.emulator.card import Card
from vnpu.kernels import convolution as CV, runner

CARD = Card("tiny")
RNG = np.random.default_rng(11)

CASES = [  # N, C, H, W, OC, KH, KW, stride, padding, dilation, groups
    (1, 3, 8, 8, 4, 3, 3, 1, 1, 1, 1),
    (2, 4, 9, 7, 6, 3, 3, 2, 1, 1, 1),
    (1, 4, 10, 10, 4, 3, 3, 1, 2, 2, 2),
    (1, 6, 7, 7, 6, 3, 3, 1, 1, 1, 6),            # depthwise
    (2, 8, 5, 5, 16, 1, 1, 1, 0, 1, 1),           # 1x1
    (1, 3, 11, 13, 5, 5, 3, (2, 3), (2, 1), 1, 1),
    (1, 2, 7, 5, 3, 2, 3, 1, (1, 0, 2, 1), (2, 1), 1),   # asymmetric padding (top, bottom, left, right)
    (1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1),
    (2, 4, 28, 28, 4, 3, 3, 1, 1, 1, 1),          # blocks of several output rows per unit
]


def torch_conv(x, w, bias, stride, padding, dilation, groups):
    if isinstance(padding, tuple) and len(padding) == 4:
        t, b, l_, r = padding
        x = F.pad(torch.tensor(x, dtype=torch.float64), (l_, r, t, b))
        padding = 0
    else:
        x = torch.tensor(x, dtype=torch.float64)
    return F.conv2d(x, torch.tensor(w, dtype=torch.float64), None if bias is None else torch.tensor(
        bias, dtype=torch.float64), stride, padding, dilation, groups).numpy()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_float_conv_matches_pytorch(case, dtype):
    N, C, H, W, OC, KH, KW, s, p, d, g = case
    x = RNG.standard_normal((N, C, H, W)).astype(dtype)
    w = (RNG.standard_normal((OC, C // g, KH, KW)) * 0.5).astype(dtype)
    b = RNG.standard_normal(OC).astype(np.float32)
    y, r = CV.conv2d(CARD, x, w, b, s, p, d, g)
    ref = torch_conv(x, w, b, s, p, d, g)
    assert y.shape == ref.shape and y.dtype == dtype and r.cycles > 0
    mag = torch_conv(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64), np.abs(b), s, p, d, g)
    tol = (2 ** -22 if dtype == np.float32 else 2 ** -9) * (mag + 1)   # fp32 sums rounded per tap; fp16 result
    assert np.all(np.abs(y.astype(np.float64) - ref) <= tol)


@pytest.mark.parametrize("case", CASES[:5])
@pytest.mark.parametrize("act", [None, "relu", "relu6", ("clip", (-0.5, 0.25))])
def test_int8_conv_with_fused_epilogue(case, act):
    N, C, H, W, OC, KH, KW, s, p, d, g = case
    x = RNG.integers(-128, 128, (N, C, H, W)).astype(np.int8)
    w = RNG.integers(-128, 128, (OC, C // g, KH, KW)).astype(np.int8)
    b = RNG.standard_normal(OC).astype(np.float32)
    ws = (RNG.random(OC) * 1e-3 + 1e-4).astype(np.float32)
    name, clip = (act, None) if not isinstance(act, tuple) else act
    ref = torch_conv(x.astype(np.float64), w.astype(np.float64), None, s, p, d, g)
    res = RNG.standard_normal(ref.shape).astype(np.float32)
    y, _ = CV.conv2d(CARD, x, w, b, s, p, d, g, x_scale=0.05, w_scale=ws, residual=res, activation=name, clip=clip)
    z = ref * (0.05 * ws.astype(np.float64))[None, :, None, None] + b[None, :, None, None] + res
    if name == "relu":
        z = np.maximum(z, 0)
    elif name in ("relu6", "clip"):
        lo, hi = (0, 6) if name == "relu6" else clip
        z = np.clip(z, lo, hi)
    np.testing.assert_allclose(y, z, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(y, CV.reference_conv2d(x, w, b, s, p, d, g, x_scale=0.05, w_scale=ws, residual=res,
                                                         activation=name, clip=clip))


def test_int8_requantized_like_pytorch_rounding():
    x = RNG.integers(-128, 128, (1, 8, 6, 6)).astype(np.int8)
    w = RNG.integers(-128, 128, (8, 8, 3, 3)).astype(np.int8)
    ws = np.full(8, 2e-3, np.float32)
    y, _ = CV.conv2d(CARD, x, w, None, 1, 1, x_scale=0.02, w_scale=ws, activation="relu", out_scale=0.1,
                     out_zero_point=-3)
    assert y.dtype == np.int8
    f = torch_conv(x.astype(np.float64), w.astype(np.float64), None, 1, 1, 1, 1) * (0.02 * 2e-3)
    q = torch.quantize_per_tensor(torch.tensor(np.maximum(f, 0), dtype=torch.float32), 0.1, -3, torch.qint8)
    assert np.abs(y.astype(int) - q.int_repr().numpy().astype(int)).max() <= 1      # a tie may round apart
    np.testing.assert_array_equal(y, CV.reference_conv2d(x, w, None, 1, 1, x_scale=0.02, w_scale=ws,
                                                         activation="relu", out_scale=0.1, out_zero_point=-3))


def test_nan_and_inf_propagate():
    x = RNG.standard_normal((1, 2, 5, 5)).astype(np.float32)
    x[0, 0, 2, 2], x[0, 1, 0, 0] = np.nan, np.inf
    w = RNG.standard_normal((3, 1, 3, 3)).astype(np.float32)
    y, _ = CV.conv2d(CARD, x, np.concatenate([w, w[:1]], 0).reshape(4, 1, 3, 3)[:2], None, 1, 1, 1, 2)
    ref = torch_conv(x, np.concatenate([w, w[:1]], 0).reshape(4, 1, 3, 3)[:2], None, 1, 1, 1, 2)
    assert np.array_equal(np.isnan(y), np.isnan(ref)) and np.array_equal(np.isinf(y), np.isinf(ref))


def test_empty_operands():
    x = np.zeros((0, 4, 5, 5), np.float32)
    y, r = CV.conv2d(CARD, x, np.zeros((6, 2, 3, 3), np.float32), None, 1, 1, 1, 2)
    assert y.shape == (0, 6, 5, 5) and r.cycles > 0


@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[1]])
def test_same_on_the_reference_engine(case, monkeypatch):
    N, C, H, W, OC, KH, KW, s, p, d, g = case
    x = RNG.standard_normal((N, C, H, W)).astype(np.float32)
    w = RNG.standard_normal((OC, C // g, KH, KW)).astype(np.float32)
    y1, _ = CV.conv2d(CARD, x, w, None, s, p, d, g, activation="relu")
    real = runner.run
    monkeypatch.setattr(runner, "run", lambda *a, **kw: real(*a, **{**kw, "engine": "reference"}))
    y2, r2 = CV.conv2d(CARD, x, w, None, s, p, d, g, activation="relu")
    assert r2.engine == "reference" and np.array_equal(y1, y2)


def test_the_kernel_interprets_to_the_same_numbers():
    x = RNG.standard_normal((1, 4, 6, 6)).astype(np.float32)
    w = RNG.standard_normal((4, 2, 3, 3)).astype(np.float32)
    y, _ = CV.conv2d(CARD, x, w, None, 2, 1, 1, 2)
    xp = np.zeros((1, 4, 8, 8), np.float32)
    xp[:, :, 1:7, 1:7] = x
    out = np.zeros(y.shape, np.float32)
    k = CV.lang.library_kernel(CV._conv, "conv2d")
    got = k.interpret(xp, w, None, None, None, out, None, 2, 3, 3, 2, 2, 1, 1, 3, 3, 3, None, None, None, "f32", pes=2)
    np.testing.assert_allclose(got, y, rtol=1e-6, atol=1e-6)


def test_vnpu_ops_conv2d_takes_groups_and_dilation():
    x = RNG.standard_normal((1, 4, 7, 7)).astype(np.float16)
    w = RNG.standard_normal((8, 1, 3, 3)).astype(np.float16)
    y = vnpu.ops.conv2d(x, w, None, stride=1, padding=2, dilation=2, groups=4, card=CARD)
    ref = torch_conv(x.astype(np.float32), w.astype(np.float32), None, 1, 2, 2, 4)
    assert y.dtype == np.float32 and y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("kw, match", [
    (dict(groups=3), "groups"), (dict(groups=0), "groups"), (dict(dilation=0), "dilation"),
    (dict(stride=(1,)), "stride"), (dict(padding=(1, 2, 3)), "padding"), (dict(activation="gelu"), "activation"),
    (dict(activation="clip"), "clip"), (dict(x_scale=0.1), "int8"), (dict(residual=np.zeros(3)), "residual"),
])
def test_misuse_is_a_typed_error(kw, match):
    x = np.zeros((1, 4, 5, 5), np.float32)
    w = np.zeros((4, 2, 3, 3), np.float32) if "groups" not in kw else np.zeros((4, 4, 3, 3), np.float32)
    args = dict(dict(stride=1, padding=1, dilation=1, groups=2 if "groups" not in kw else 1), **kw)
    with pytest.raises(vnpu.InvalidArgument, match=match):
        CV.conv2d(CARD, x, w, None, args.pop("stride"), args.pop("padding"), args.pop("dilation"), args.pop("groups"),
                  **args)


def test_mixed_int8_and_float_is_an_error():
    with pytest.raises(vnpu.InvalidArgument, match="both be int8"):
        CV.conv2d(CARD, np.zeros((1, 2, 3, 3), np.int8), np.zeros((2, 2, 1, 1), np.float32))


# --- the stride-1, one-group path (kernels/convolution.py _conv_flat) ----------------------------------------------
FLAT = [  # N, C, H, W, OC, KH, KW, padding, dilation
    (2, 8, 12, 11, 7, 3, 3, 1, 1),                # OC not a multiple of the matrix unit's columns
    (1, 5, 9, 9, 4, 1, 1, (1, 0, 3, 4), 1),       # padding wider than the kernel reaches
    (1, 4, 10, 13, 6, 3, 2, (2, 1, 0, 3), (2, 3)),
    (3, 16, 20, 20, 8, 3, 3, 1, 1),               # several blocks per PE on the tiny card
    (1, 3, 2, 2, 5, 5, 5, 2, 1),                  # kernel larger than the image
    (4, 64, 32, 32, 4, 1, 1, 0, 1),               # one PE's positions in one band would not fit local memory
]


@pytest.mark.parametrize("case", FLAT)
@pytest.mark.parametrize("act, zp", [(None, 0), ("relu", -3), ("relu6", 7), (("clip", (-0.3, 0.2)), 2)])
@pytest.mark.parametrize("memory", ["dram", "shared"])
def test_stride1_int8_requantized_equals_the_reference(case, act, zp, memory):
    """The activation is applied to the requantized int8 values (bounds requantized the same way): the same
    integers as clamping in fp32 and then requantizing, for every zero point and either placement."""
    N, C, H, W, OC, KH, KW, p, d = case
    rng = np.random.default_rng(hash((case, zp)) % 2**32)
    x = rng.integers(-128, 128, (N, C, H, W)).astype(np.int8)
    w = rng.integers(-128, 128, (OC, C, KH, KW)).astype(np.int8)
    b = rng.standard_normal(OC).astype(np.float32)
    ws = (rng.random(OC) * 2e-4 + 1e-5).astype(np.float32)
    name, clip = (act, None) if not isinstance(act, tuple) else act
    kw = dict(x_scale=0.03, w_scale=ws, activation=name, clip=clip, out_scale=0.02, out_zero_point=zp)
    y, r = CV.conv2d(CARD, x, w, b, 1, p, d, 1, memory=memory, **kw)
    np.testing.assert_array_equal(y, CV.reference_conv2d(x, w, b, 1, p, d, 1, **kw))
    assert y.dtype == np.int8 and r.cycles > 0


@pytest.mark.parametrize("case", FLAT)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_stride1_float_matches_pytorch_on_both_engines(case, dtype, monkeypatch):
    N, C, H, W, OC, KH, KW, p, d = case
    rng = np.random.default_rng(5)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = (rng.standard_normal((OC, C, KH, KW)) * 0.3).astype(dtype)
    b = rng.standard_normal(OC).astype(np.float32)
    y, _ = CV.conv2d(CARD, x, w, b, 1, p, d, 1, activation="relu")
    pads = p if isinstance(p, tuple) else (p,) * 4
    ref = np.maximum(torch_conv(x, w, b, 1, pads, d, 1), 0)
    mag = torch_conv(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64), np.abs(b), 1, pads, d, 1)
    assert np.all(np.abs(y.astype(np.float64) - ref) <= (2 ** -22 if dtype == np.float32 else 2 ** -9) * (mag + 1))
    if N * H * W <= 200:                          # the reference interpreter: small cases only
        real = runner.run
        monkeypatch.setattr(runner, "run", lambda *a, **kw: real(*a, **{**kw, "engine": "reference"}))
        y2, r2 = CV.conv2d(CARD, x, w, b, 1, p, d, 1, activation="relu")
        assert r2.engine == "reference" and np.array_equal(y, y2)


def test_stride1_kernel_interprets_to_the_same_numbers():
    """The language interpreter (NaN-filled tiles, unwritten-store checks, one thread per PE) runs the flat
    kernel on the operands the host prepares, to the numbers the engine gives."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 3, 5, 6)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    y, _ = CV.conv2d(CARD, x, w, None, 1, 1)
    plan = CV.flat_plan(CARD, x, w, None, None, y.shape, np.float32, None, None, (1, 1, 1, 1), 3, 3, 1, 1, None,
                        None, None, "f32")
    got = plan.kernel.interpret(plan.x2, plan.wf, None, None, None, np.zeros(plan.out_shape, np.float32), None,
                                *plan.consts, pes=CARD.config.pes)
    np.testing.assert_array_equal(plan.unflatten(got), y)


@pytest.mark.parametrize("kw, match", [
    (dict(x_scale="x"), "x_scale"), (dict(x_scale=0.0), "x_scale"), (dict(x_scale=np.nan), "x_scale"),
    (dict(out_scale=0), "out_scale"), (dict(out_scale=-1.0), "out_scale"), (dict(out_zero_point=200), "zero_point"),
    (dict(out_zero_point=1.5), "zero_point"), (dict(activation=np.array(["relu"])), "activation"),
])
def test_int8_quantization_arguments_are_checked(kw, match):
    args = dict(x_scale=0.1, w_scale=np.ones(2, np.float32), out_scale=0.1)
    args.update(kw)
    with pytest.raises(vnpu.InvalidArgument, match=match):
        CV.conv2d(CARD, np.zeros((1, 2, 3, 3), np.int8), np.zeros((2, 2, 1, 1), np.int8), **args)


@pytest.mark.parametrize("case", [
    (1, 8, 2, 2, 16, 1, 1, 1, 0),          # few positions, many folds: the PEs split the output channels
    (2, 6, 7, 5, 9, 3, 3, 1, 1),
    (1, 8, 9, 9, 12, 1, 1, 2, 1),          # strided 1x1 (with padding): the host subsamples, then the flat path
    (2, 4, 8, 6, 8, 1, 1, (2, 3), 0),
])
@pytest.mark.parametrize("dtype", ["int8", "fp32"])
def test_flat_path_residual_stride_and_channel_split(case, dtype):
    N, C, H, W, OC, KH, KW, s, p = case
    rng = np.random.default_rng(17)
    if dtype == "int8":
        x = rng.integers(-128, 128, (N, C, H, W)).astype(np.int8)
        w = rng.integers(-128, 128, (OC, C, KH, KW)).astype(np.int8)
        kw = dict(x_scale=0.03, w_scale=(rng.random(OC) * 1e-3 + 1e-4).astype(np.float32), out_scale=0.05,
                  out_zero_point=3)
    else:
        x = rng.standard_normal((N, C, H, W)).astype(np.float32)
        w = rng.standard_normal((OC, C, KH, KW)).astype(np.float32)
        kw = {}
    b = rng.standard_normal(OC).astype(np.float32)
    ref0 = CV.reference_conv2d(x, w, b, s, p, 1, 1, **{k: v for k, v in kw.items() if "out" not in k})
    res = rng.standard_normal(ref0.shape).astype(np.float32)
    y, r = CV.conv2d(CARD, x, w, b, s, p, 1, 1, residual=res, activation="relu", **kw)
    want = CV.reference_conv2d(x, w, b, s, p, 1, 1, residual=res, activation="relu", **kw)
    if dtype == "int8":
        np.testing.assert_array_equal(y, want)
    else:
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
        ref = np.maximum(torch_conv(x, w, b, s, p, 1, 1) + res, 0)
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-4)
    assert r.cycles > 0


@pytest.mark.parametrize("case", [(2, 8, 7, 9, 12, 3, 3, 1, 1), (1, 16, 6, 6, 8, 1, 1, 2, 0), (1, 4, 10, 10, 6, 3, 3, 2, 1)])
@pytest.mark.parametrize("zp", [0, -5])
def test_int8_residual_is_dequantized_on_the_card(case, zp):
    """A ResNet's residual stream kept in int8: the card dequantizes it (vcvt: (q - zp) * scale, one fp32
    rounding) before the add; equal to adding the dequantized residual."""
    N, C, H, W, OC, KH, KW, s, p = case
    rng = np.random.default_rng(23)
    x = rng.integers(-128, 128, (N, C, H, W)).astype(np.int8)
    w = rng.integers(-128, 128, (OC, C, KH, KW)).astype(np.int8)
    kw = dict(x_scale=0.02, w_scale=(rng.random(OC) * 1e-3 + 1e-4).astype(np.float32), activation="relu",
              out_scale=0.07, out_zero_point=0)
    out_shape = CV.reference_conv2d(x, w, None, s, p, **kw).shape
    rq = rng.integers(-128, 128, out_shape).astype(np.int8)
    y, _ = CV.conv2d(CARD, x, w, None, s, p, residual=rq, residual_scale=0.031, residual_zero_point=zp, **kw)
    deq = ((rq.astype(np.float64) - zp) * np.float64(np.float32(0.031))).astype(np.float32)
    np.testing.assert_array_equal(y, CV.reference_conv2d(x, w, None, s, p, residual=deq, **kw))
    np.testing.assert_array_equal(y, CV.reference_conv2d(x, w, None, s, p, residual=rq, residual_scale=0.031,
                                                         residual_zero_point=zp, **kw))


def test_int8_residual_misuse():
    x, w = np.zeros((1, 4, 5, 5), np.int8), np.zeros((4, 4, 3, 3), np.int8)
    q = dict(x_scale=0.1, w_scale=np.ones(4, np.float32))
    with pytest.raises(vnpu.InvalidArgument, match="residual_scale"):
        CV.conv2d(CARD, x, w, None, 1, 1, residual=np.zeros((1, 4, 5, 5), np.int8), **q)
    with pytest.raises(vnpu.InvalidArgument, match="residual_zero_point"):
        CV.conv2d(CARD, x, w, None, 1, 1, residual=np.zeros((1, 4, 5, 5), np.int8), residual_scale=0.1,
                  residual_zero_point=300, **q)
    with pytest.raises(vnpu.InvalidArgument, match="one-group path"):
        CV.conv2d(CARD, x, np.zeros((4, 1, 3, 3), np.int8), None, 1, 1, 1, 4,
                  residual=np.zeros((1, 4, 5, 5), np.int8), residual_scale=0.1, **q)
    with pytest.raises(vnpu.InvalidArgument, match="float or int8"):
        CV.conv2d(CARD, x, w, None, 1, 1, residual=np.zeros((1, 4, 5, 5), np.int32), **q)
