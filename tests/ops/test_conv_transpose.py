"""conv_transpose2d (kernels/conv_transpose.py: conv2d of the zero-inserted input) against PyTorch's
torch.nn.functional.conv_transpose2d: sizes 1 and prime, stride 1/2/3, padding (cropping too), output_padding,
dilation, groups (depthwise too); fp32 against float64 PyTorch, fp16 within fp16 rounding, int8 against the
float64 math of the dequantized values (PyTorch has no quantized functional conv_transpose2d; its quantized
ConvTranspose2d module takes per-tensor weight scales only, and is compared where it applies); NaN / inf / -0.0;
empty batch; the Numba core and the reference engine; misuse."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vnpu
from vnpu.emulator.card import Card
from vnpu.kernels import conv_transpose as CT

from engine_modes import on_every_engine  # tests/ops/engine_modes.py

CARD = Card("tiny")
RNG = np.random.default_rng(16)

CASES = [  # N, C, H, W, OC, KH, KW, stride, padding, output_padding, dilation, groups
    (1, 3, 5, 4, 4, 3, 3, 2, 1, 1, 1, 1),                 # the decoder upsampling 3x3 / 2, output_padding 1
    (2, 4, 3, 3, 6, 2, 3, (3, 2), (0, 1), (2, 1), 1, 2),   # groups, stride 3, per-dimension arguments
    (1, 6, 5, 5, 6, 3, 3, 2, 1, 0, 1, 6),                 # depthwise (groups = C)
    (1, 3, 4, 5, 6, 3, 3, 1, 1, 0, 1, 3),                 # depthwise, channel multiplier 2, stride 1
    (1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1),                 # all 1
    (1, 2, 4, 4, 3, 3, 3, 1, 3, 1, 2, 1),                 # dilation 2, padding past d*(K-1): the input is cropped
    (1, 5, 7, 3, 7, 5, 3, 3, 2, (2, 1), 1, 1),            # primes
    (1, 1, 1, 1, 1, 1, 1, 5, 2, 4, 1, 1),                 # one pixel cropped away; output_padding makes the output
    (2, 8, 6, 6, 8, 4, 4, 2, 1, 0, 1, 1),                 # DCGAN's 4x4 / 2, padding 1
    (1, 4, 11, 13, 2, 3, 3, 2, (0, 2), 1, (2, 1), 2),     # dilation (2, 1) with groups
]


def torch_ct(x, w, bias, stride, padding, output_padding, dilation, groups):
    t = lambda a: None if a is None else torch.tensor(np.asarray(a, np.float64))   # noqa: E731
    return F.conv_transpose2d(t(x), t(w), t(bias), stride, padding, output_padding, groups, dilation).numpy()


def args(case, dtype, rng=RNG):
    N, C, H, W, OC, KH, KW, s, p, op, d, g = case
    if dtype == np.int8:
        x = rng.integers(-128, 128, (N, C, H, W)).astype(np.int8)
        w = rng.integers(-128, 128, (C, OC // g, KH, KW)).astype(np.int8)
    else:
        x = rng.standard_normal((N, C, H, W)).astype(dtype)
        w = (rng.standard_normal((C, OC // g, KH, KW)) * 0.5).astype(dtype)
    return x, w, rng.standard_normal(OC).astype(np.float32), (s, p, op, g, d)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_float_matches_pytorch(case, dtype):
    x, w, b, (s, p, op, g, d) = args(case, dtype)
    y, r = CT.conv_transpose2d(CARD, x, w, b, s, p, op, g, d)
    ref = torch_ct(x, w, b, s, p, op, d, g)
    assert y.shape == ref.shape and y.dtype == dtype and r.cycles > 0
    mag = torch_ct(np.abs(x), np.abs(w), np.abs(b), s, p, op, d, g)
    # fp32: exact products, sums rounded to fp32 (per tap at worst); fp16: fp32 sums, the result rounded to fp16
    tol = (2 ** -22 if dtype == np.float32 else 2 ** -10) * (mag + 1)
    assert np.all(np.abs(y.astype(np.float64) - ref) <= tol), np.abs(y - ref).max()
    # the scatter-add reference agrees with PyTorch too (it does not share the rewrite)
    np.testing.assert_allclose(CT.reference_conv_transpose2d(x, w, b, s, p, op, g, d).astype(np.float64), ref,
                               rtol=0, atol=float(tol.max()))


def test_fp16_matches_pytorch_fp16():
    x, w, b, (s, p, op, g, d) = args(CASES[0], np.float16)
    y = vnpu.ops.conv_transpose2d(x, w, torch.tensor(b).half().numpy(), s, p, op, g, d, card=CARD)
    t = F.conv_transpose2d(torch.tensor(x), torch.tensor(w), torch.tensor(b).half(), s, p, op, g, d).numpy()
    assert y.dtype == np.float16 and y.shape == t.shape
    np.testing.assert_allclose(y.astype(np.float32), t.astype(np.float32), rtol=2 ** -9, atol=2 ** -9)


def dequantized(x, w, xs, ws, b, s, p, op, d, g):
    return torch_ct(x, w, None, s, p, op, d, g) * (xs * np.asarray(ws, np.float64))[None, :, None, None] + \
        b[None, :, None, None]


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[2], CASES[6], CASES[9]])
@pytest.mark.parametrize("act", [None, "relu", "relu6", ("clip", (-0.5, 0.25))])
def test_int8_per_channel_dequantized(case, act):
    x, w, b, (s, p, op, g, d) = args(case, np.int8)
    ws = (RNG.random(b.size) * 1e-3 + 1e-4).astype(np.float32)
    name, clip = (act, None) if not isinstance(act, tuple) else act
    y, _ = CT.conv_transpose2d(CARD, x, w, b, s, p, op, g, d, x_scale=0.05, w_scale=ws, activation=name, clip=clip)
    z = dequantized(x, w, 0.05, ws, b, s, p, op, d, g)
    if name is not None:
        lo, hi = {"relu": (0, np.inf), "relu6": (0, 6), "clip": clip}[name]
        z = np.clip(z, lo, hi)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, z, rtol=1e-5, atol=1e-5)        # int32 sums exact; fp32 epilogue steps
    np.testing.assert_array_equal(y, CT.reference_conv_transpose2d(x, w, b, s, p, op, g, d, x_scale=0.05,
                                                                   w_scale=ws, activation=name, clip=clip))


def test_int8_requantized_per_tensor_equals_pytorch_quantized_module():
    import torch.ao.nn.quantized as nnq
    case = (2, 4, 5, 5, 6, 3, 3, 2, 1, 1, 1, 2)
    x, w, b, (s, p, op, g, d) = args(case, np.int8)
    xs, ws, os_, oz = 0.02, 0.003, 0.5, -3
    y = vnpu.ops.conv_transpose2d(x, w, b, s, p, op, g, d, x_scale=xs, w_scale=ws, out_scale=os_,
                                  out_zero_point=oz, card=CARD)
    assert y.dtype == np.int8
    with warnings.catch_warnings():       # quantized tensors are deprecated in PyTorch 2.13
        warnings.simplefilter("ignore")
        m = nnq.ConvTranspose2d(4, 6, 3, stride=s, padding=p, output_padding=op, groups=g, dilation=d)
        m.set_weight_bias(torch._make_per_tensor_quantized_tensor(torch.tensor(w), ws, 0), torch.tensor(b))
        m.scale, m.zero_point = os_, oz + 128              # int8 with zero point z is quint8 with z + 128
        xt = torch._make_per_tensor_quantized_tensor(torch.tensor((x.astype(np.int16) + 128).astype(np.uint8)),
                                                     xs, 128)
        t = m(xt).int_repr().numpy().astype(int) - 128
    assert np.abs(t - y.astype(int)).max() <= 1            # a value at a rounding tie may go either way
    np.testing.assert_array_equal(y, CT.reference_conv_transpose2d(x, w, b, s, p, op, g, d, x_scale=xs,
                                                                   w_scale=ws, out_scale=os_, out_zero_point=oz))


@pytest.mark.parametrize("case", [CASES[2], CASES[6]])
def test_int8_requantized_per_channel(case):
    x, w, b, (s, p, op, g, d) = args(case, np.int8)
    ws = (RNG.random(b.size) * 1e-3 + 1e-4).astype(np.float32)
    y, _ = CT.conv_transpose2d(CARD, x, w, b, s, p, op, g, d, x_scale=0.05, w_scale=ws, activation="relu",
                               out_scale=0.05, out_zero_point=-7)
    z = np.maximum(dequantized(x, w, 0.05, ws, b, s, p, op, d, g), 0)
    q = torch.quantize_per_tensor(torch.tensor(z, dtype=torch.float32), 0.05, -7, torch.qint8).int_repr().numpy()
    assert y.dtype == np.int8 and np.abs(y.astype(int) - q).max() <= 1
    np.testing.assert_array_equal(y, CT.reference_conv_transpose2d(x, w, b, s, p, op, g, d, x_scale=0.05,
                                                                   w_scale=ws, activation="relu", out_scale=0.05,
                                                                   out_zero_point=-7))


def test_residual_is_added_after_the_bias():
    x, w, b, (s, p, op, g, d) = args(CASES[1], np.float32)
    ref = torch_ct(x, w, b, s, p, op, d, g)
    res = RNG.standard_normal(ref.shape).astype(np.float32)
    y, _ = CT.conv_transpose2d(CARD, x, w, b, s, p, op, g, d, residual=res, activation="relu")
    np.testing.assert_allclose(y, np.maximum(ref + res, 0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_nan_inf_and_negative_zero_in_the_input(dtype):
    x, w, _, (s, p, op, g, d) = args(CASES[1], dtype)
    x[0, 0, 1, 1], x[0, 2, 0, 2], x[1, 3, 2, 0], x[1, 1, 0, 0] = np.nan, np.inf, -np.inf, -0.0
    x[1, 0] = -0.0
    y, _ = CT.conv_transpose2d(CARD, x, w, None, s, p, op, g, d)
    ref = torch_ct(x, w, None, s, p, op, d, g)
    assert np.array_equal(np.isnan(y), np.isnan(ref)) and np.array_equal(np.isposinf(y), np.isposinf(ref)) \
        and np.array_equal(np.isneginf(y), np.isneginf(ref))
    fin = np.isfinite(ref)
    np.testing.assert_allclose(y[fin].astype(np.float64), ref[fin], rtol=2e-3, atol=2e-3)
    # all -0.0 in: PyTorch's scatter starts from +0.0, and so does the card
    z, _ = CT.conv_transpose2d(CARD, -np.zeros((1, 2, 3, 3), dtype), w[:2, :, :, :], None, 2, 1, 1)
    t = F.conv_transpose2d(torch.tensor(-np.zeros((1, 2, 3, 3))), torch.tensor(w[:2].astype(np.float64)), None,
                           2, 1, 1).numpy()
    assert np.array_equal(z, t) and np.array_equal(np.signbit(z), np.signbit(t))


def test_nan_in_the_weight_poisons_every_output_its_tap_reads():
    """The documented deviation: the inserted zeros multiply the NaN too (PyTorch: only real pixels' outputs)."""
    x = RNG.standard_normal((1, 1, 3, 3)).astype(np.float32)
    w = np.ones((1, 1, 2, 2), np.float32)
    w[0, 0, 0, 0] = np.nan
    y, _ = CT.conv_transpose2d(CARD, x, w, None, 2)
    ref = torch_ct(x, w, None, 2, 0, 0, 1, 1)
    assert np.isnan(ref).sum() == 9 and np.isnan(y).all()


def test_empty_batch_and_empty_channels():
    y, r = CT.conv_transpose2d(CARD, np.zeros((0, 4, 5, 5), np.float32), np.zeros((4, 3, 3, 3), np.float32), None,
                               2, 1, 1, 2)
    ref = F.conv_transpose2d(torch.zeros(0, 4, 5, 5), torch.zeros(4, 3, 3, 3), None, 2, 1, 1, 2)
    assert y.shape == tuple(ref.shape) == (0, 6, 10, 10) and r.cycles > 0
    y = vnpu.ops.conv_transpose2d(np.zeros((2, 4, 3, 3), np.float16), np.zeros((4, 0, 3, 3), np.float16), card=CARD)
    assert y.shape == (2, 0, 5, 5) and y.dtype == np.float16
    # no input channels (PyTorch refuses the weight): an empty sum, the bias everywhere, as conv2d gives
    b = np.arange(3, dtype=np.float32)
    y = vnpu.ops.conv_transpose2d(np.zeros((1, 0, 2, 2), np.float32), np.zeros((0, 3, 3, 3), np.float32), b,
                                  card=CARD)
    np.testing.assert_array_equal(y, np.broadcast_to(b[None, :, None, None], (1, 3, 4, 4)))


@pytest.mark.parametrize("case, dtype", [(CASES[0], np.float32), (CASES[2], np.float16), (CASES[1], np.int8)])
def test_same_on_every_engine(case, dtype, monkeypatch):
    x, w, b, (s, p, op, g, d) = args(case, dtype)
    kw = dict(x_scale=0.02, w_scale=0.01, out_scale=0.3) if dtype == np.int8 else {}
    x.flat[3] = 0 if dtype == np.int8 else np.nan
    on_every_engine(monkeypatch, lambda: CT.conv_transpose2d(CARD, x, w, b, s, p, op, g, d, activation="relu", **kw))


def test_vnpu_ops_records_a_profile_and_takes_pes():
    x, w, b, (s, p, op, g, d) = args(CASES[8], np.float32)
    with vnpu.ops.profile() as prof:
        y = vnpu.ops.conv_transpose2d(x, w, b, stride=s, padding=p, output_padding=op, groups=g, dilation=d,
                                      card=CARD, pes=2)
    assert [q.op for q in prof] == ["conv_transpose2d"] and prof[0].cycles > 0
    np.testing.assert_allclose(y, torch_ct(x, w, b, s, p, op, d, g), rtol=1e-5, atol=1e-5)


def test_the_op_command_runs_it():
    from vnpu.kernels.commands import run_op
    r = run_op("conv_transpose2d", ["--n", "1", "--c", "8", "--h", "5", "--w", "5", "--oc", "8", "--groups", "2",
                                    "--output_padding", "0", "--dtype", "fp16"], "tiny", pes=2)
    assert r["matches_reference"] and r["cycles"] > 0
    with pytest.raises(vnpu.InvalidArgument, match="output_padding"):
        run_op("conv_transpose2d", ["--output_padding", "x"], "tiny")
    with pytest.raises(vnpu.InvalidArgument, match="output_padding must be smaller"):
        run_op("conv_transpose2d", ["--output_padding", "2"], "tiny")


X, W = np.zeros((1, 4, 5, 5), np.float32), np.zeros((4, 3, 3, 3), np.float32)
XQ, WQ = X.astype(np.int8), W.astype(np.int8)
MISUSE = [  # (x, w, keyword arguments, what the message must say)
    (X[0], W, {}, "input must be a 4-D numpy array"),
    (X, W[0], {}, "weight must be a 4-D numpy array"),
    (X.tolist(), W, {}, "input must be a 4-D numpy array"),
    (X.astype(np.float64), W, {}, "input must be float16, float32 or int8, got float64"),
    (XQ, W, {}, "both be int8 or both float"),
    (X, np.zeros((3, 3, 3, 3), np.float32), {}, "C_in = 4"),
    (X, W, dict(groups=3), "groups=3 must divide the input's 4 channels"),
    (X, W, dict(groups=0), "groups must be a positive integer, got 0"),
    (X, W, dict(groups=True), "groups must be a positive integer, got True"),
    (X, W, dict(groups=2.0), "groups must be a positive integer, got 2.0"),
    (X, W, dict(stride=0), r"stride must be at least 1, got \(0, 0\)"),
    (X, W, dict(stride=(1,)), r"stride must be an integer or 2 integers \(h, w\), got \(1,\)"),
    (X, W, dict(stride="2"), "stride must be an integer or 2 integers"),
    (X, W, dict(padding=-1), r"padding must be at least 0, got \(-1, -1\)"),
    (X, W, dict(padding=(1, 1, 1, 1)), "padding must be an integer or 2 integers"),
    (X, W, dict(dilation=0), "dilation must be at least 1"),
    (X, W, dict(output_padding=-1), "output_padding must be at least 0"),
    (X, W, dict(stride=2, output_padding=2), r"output_padding must be smaller than either stride or dilation"),
    (X, W, dict(stride=(2, 1), output_padding=(1, 1)), r"output_padding=\(1, 1\) with stride=\(2, 1\)"),
    (X, W, dict(padding=4), r"output size \(-1 x -1\) is not positive"),
    (X, W, dict(stride=10 ** 30), "larger than 2\\*\\*31 elements"),
    (X[:, :, :0], W, {}, "non-empty height and width"),
    (X, W[:, :, :0], {}, "kernel size must be at least 1x1"),
    (X, W, dict(activation="gelu"), "activation must be one of"),
    (X, W, dict(activation="clip"), r"clip=\(lo, hi\)"),
    (X, W, dict(activation="clip", clip=(1, 0)), r"lo <= hi, got \(1, 0\)"),
    (X, W, dict(clip=(0, 1)), "clip is for activation='clip'"),
    (X, W, dict(x_scale=0.1), "x_scale is for int8"),
    (X, W, dict(out_scale=0.1), "out_scale is for int8"),
    (X, W, dict(out_zero_point=3), "out_zero_point is for int8 requantization"),
    (X, W, dict(out_dtype="int4"), "out_dtype must be"),
    (X, W, dict(bias=np.zeros(4, np.float32)), r"bias must be 3 numbers .* got shape \(4,\)"),
    (X, W, dict(bias="x"), "bias must be 3 numbers"),
    (X, W, dict(bias=np.zeros(3, np.complex64)), "bias must be 3 numbers"),
    (X, W, dict(residual=np.zeros((1, 3, 5, 5))), r"residual must be a float array of the output's shape"),
    (XQ, WQ, {}, "need x_scale"),
    (XQ, WQ, dict(x_scale=0.0, w_scale=0.1), "x_scale must be a positive finite number, got 0.0"),
    (XQ, WQ, dict(x_scale=float("nan"), w_scale=0.1), "x_scale must be a positive finite number, got nan"),
    (XQ, WQ, dict(x_scale="x", w_scale=0.1), "x_scale must be a positive finite number, got 'x'"),
    (XQ, WQ, dict(x_scale=0.1, w_scale=[0.1, 0.1]), r"w_scale must be 3 numbers .* got shape \(2,\)"),
    (XQ, WQ, dict(x_scale=0.1, w_scale=-0.1), "w_scale must be positive finite numbers"),
    (XQ, WQ, dict(x_scale=0.1, w_scale=0.1, out_scale=0), "out_scale must be a positive finite number, got 0"),
    (XQ, WQ, dict(x_scale=0.1, w_scale=0.1, out_scale=0.1, out_zero_point=200), "out_zero_point must be an integer"
     r" in \[-128, 127\], got 200"),
    (XQ, WQ, dict(x_scale=0.1, w_scale=0.1, out_dtype="fp16"), "out_dtype is for float inputs"),
]


@pytest.mark.parametrize("x, w, kw, match", MISUSE, ids=[m[3][:40] for m in MISUSE])
def test_misuse_is_a_typed_error_naming_the_argument(x, w, kw, match):
    with pytest.raises(vnpu.InvalidArgument, match="conv_transpose2d: .*" + match):
        CT.conv_transpose2d(CARD, x, w, **kw)
    if "out_dtype" not in kw:                           # vnpu.ops takes the same arguments but out_dtype
        with pytest.raises(vnpu.InvalidArgument, match=match):
            vnpu.ops.conv_transpose2d(x, w, card=CARD, **kw)


def test_ops_checks_card_and_pes():
    with pytest.raises(vnpu.InvalidArgument, match="pes"):
        vnpu.ops.conv_transpose2d(X, W, card=CARD, pes=0)
    with pytest.raises(vnpu.InvalidArgument, match="card"):
        vnpu.ops.conv_transpose2d(X, W, card="tiny")
