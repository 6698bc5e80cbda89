"""conv_transpose2d: torch.nn.functional.conv_transpose2d(input, weight, bias, stride, padding, output_padding,
groups, dilation) on the card, as a host-side rewrite onto conv2d (kernels/convolution.py). NCHW; weight
[C_in, C_out / groups, KH, KW]; fp32, fp16, and int8 with a per-tensor input scale and per-output-channel
weight scales (dequantized to fp32, or requantized to int8); fused bias, residual and activation as conv2d.

The rewrite (the "cheap" transposed convolution; no kernel of its own):
    1. zero-insert  stride - 1 zeros between input pixels: [N, C, (H-1)*sh + 1, (W-1)*sw + 1]
    2. pad          dilation*(K-1) - padding zeros on each side, plus output_padding at the bottom / right;
                    a negative amount crops instead (the host builds this canvas directly)
    3. weights      flipped in both spatial axes, input and output channels swapped within each group:
                    w'[g*OCg + o, c, kh, kw] = w[g*Cg + c, o, KH-1-kh, KW-1-kw]
    4. conv2d       on the card: stride 1, the same dilation and groups, the epilogue fused as conv2d fuses it.
The output size is PyTorch's: (H-1)*sh - 2*ph + dh*(KH-1) + output_padding_h + 1 (and likewise in width).

Known cost: the card multiplies the inserted zeros too. The conv2d runs over a canvas about stride_h x
stride_w times the input's area, so the matrix unit does ~stride^2 times the MACs the op needs (4x at stride
2, 9x at stride 3; plus conv2d's own waste, e.g. its stride-1 path computes over the padded width), and the
host and the DMAs move a canvas that much larger. A sub-pixel decomposition (stride_h * stride_w small
convolutions of the un-inserted input, interleaved) would avoid it; this module does not.

Numerics are conv2d's on the canvas: the inserted and padded zeros add exact zero products, so finite results
equal a direct transposed convolution summed in the same order up to conv2d's rounding (fp32: exact products,
fp32/fp64 sums; fp16: fp32 sums, rounded to fp16; int8: exact int32). NaN and inf in the INPUT propagate to
PyTorch's positions. A NaN or inf in the WEIGHTS differs from PyTorch: it also multiplies the inserted and
padding zeros (0 x inf = NaN), so it poisons every output its tap reads, not only those it reaches from a
real pixel. Zeros: PyTorch's scatter starts from +0.0, so its all-(-0.0) sums are +0.0; so are the card's
(the inserted zeros are +0.0).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from vnpu.errors import InvalidArgument

from . import convolution
from .library import OpSpec

OP = "conv_transpose2d"
ACTIVATIONS = convolution.ACTIVATIONS


def _int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _pair(v, name, minimum):
    """(h, w) from an int or two ints, each at least `minimum`."""
    if _int(v):
        v = (int(v), int(v))
    elif isinstance(v, (tuple, list)) and len(v) == 2 and all(_int(e) for e in v):
        v = (int(v[0]), int(v[1]))
    else:
        raise InvalidArgument(f"{OP}: {name} must be an integer or 2 integers (h, w), got {v!r}")
    if min(v) < minimum:
        raise InvalidArgument(f"{OP}: {name} must be at least {minimum}, got {v}")
    return v


def _positive(name, v):
    if not isinstance(v, numbers.Real) or isinstance(v, (bool, np.bool_)) or not math.isfinite(v) or v <= 0:
        raise InvalidArgument(f"{OP}: {name} must be a positive finite number, got {v!r}")
    return float(v)


def _vector(name, v, n, positive=False):
    """One number per output channel (w_scale: one number too), as float32."""
    try:
        a = np.asarray(v)
    except (ValueError, TypeError):
        a = None
    if a is None or a.dtype.kind not in "fiu":
        raise InvalidArgument(f"{OP}: {name} must be {n} numbers (one per output channel), got {v!r:.80}")
    if a.ndim == 0 and name == "w_scale":
        a = np.full(n, a)
    if a.shape != (n,):
        raise InvalidArgument(f"{OP}: {name} must be {n} numbers (one per output channel), got shape {a.shape}")
    if positive and not (np.all(np.isfinite(a)) and np.all(a > 0)):
        raise InvalidArgument(f"{OP}: {name} must be positive finite numbers, got {a[:8]}")
    return np.ascontiguousarray(a, np.float32)


def output_size(H, W, KH, KW, stride, padding, output_padding, dilation):
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = stride, padding, output_padding, dilation
    return (H - 1) * sh - 2 * ph + dh * (KH - 1) + oph + 1, (W - 1) * sw - 2 * pw + dw * (KW - 1) + opw + 1


def check(x, w, bias, stride, padding, output_padding, groups, dilation, x_scale, w_scale, residual, activation,
          clip, out_scale, out_zero_point, out_dtype):
    """Validate a call (InvalidArgument naming the argument and its value). Returns the normalized pairs,
    groups, output size (OH, OW), bias / w_scale as float32 vectors and the residual."""
    for name, arr in (("input", x), ("weight", w)):
        if not isinstance(arr, np.ndarray) or arr.ndim != 4:
            raise InvalidArgument(f"{OP}: {name} must be a 4-D numpy array (input [N, C_in, H, W], weight "
                                  f"[C_in, C_out/groups, KH, KW]), got {getattr(arr, 'shape', type(arr).__name__)}")
        if arr.dtype not in (np.float16, np.float32, np.int8):
            raise InvalidArgument(f"{OP}: {name} must be float16, float32 or int8, got {arr.dtype}")
    if (x.dtype == np.int8) != (w.dtype == np.int8):
        raise InvalidArgument(f"{OP}: input and weight must both be int8 or both float, got {x.dtype} and "
                              f"{w.dtype}")
    if not _int(groups) or groups < 1:
        raise InvalidArgument(f"{OP}: groups must be a positive integer, got {groups!r}")
    G = int(groups)
    N, C, H, W = x.shape
    Cw, OCg, KH, KW = w.shape
    if Cw != C:
        raise InvalidArgument(f"{OP}: weight must be [C_in, C_out/groups, KH, KW] with C_in = {C} (input's "
                              f"channels), got weight {w.shape}")
    if C % G:
        raise InvalidArgument(f"{OP}: groups={G} must divide the input's {C} channels")
    if H < 1 or W < 1:
        raise InvalidArgument(f"{OP}: input must have non-empty height and width (only the batch and channels "
                              f"may be 0), got {x.shape}")
    if KH < 1 or KW < 1:
        raise InvalidArgument(f"{OP}: weight's kernel size must be at least 1x1, got {w.shape}")
    st = _pair(stride, "stride", 1)
    pd = _pair(padding, "padding", 0)
    op = _pair(output_padding, "output_padding", 0)
    dl = _pair(dilation, "dilation", 1)
    for i, side in enumerate(("height", "width")):
        if op[i] >= max(st[i], dl[i]):
            raise InvalidArgument(f"{OP}: output_padding must be smaller than either stride or dilation (PyTorch's "
                                  f"rule), got output_padding={op} with stride={st}, dilation={dl} (in {side})")
    OH, OW = output_size(H, W, KH, KW, st, pd, op, dl)
    if OH < 1 or OW < 1:
        raise InvalidArgument(f"{OP}: the output size ({OH} x {OW}) is not positive: input {H}x{W}, kernel "
                              f"{KH}x{KW}, stride={st}, padding={pd}, output_padding={op}, dilation={dl}")
    OC = OCg * G
    # the canvas conv2d reads (zero-inserted, padded) and the output must fit host and card memory
    canvas = N * C * (OH + dl[0] * (KH - 1)) * (OW + dl[1] * (KW - 1))
    if max(canvas, N * OC * OH * OW) > 1 << 31:
        raise InvalidArgument(f"{OP}: the zero-inserted input ({canvas} elements) or the output "
                              f"({N * OC * OH * OW}) is larger than 2**31 elements: stride={st}, padding={pd}, "
                              f"dilation={dl}")
    if not (activation is None or isinstance(activation, str)) or activation not in ACTIVATIONS:
        raise InvalidArgument(f"{OP}: activation must be one of {ACTIVATIONS}, got {activation!r}")
    if activation == "clip":
        if not (isinstance(clip, (tuple, list)) and len(clip) == 2
                and all(isinstance(c, numbers.Real) and not isinstance(c, (bool, np.bool_)) for c in clip)
                and clip[0] <= clip[1]):
            raise InvalidArgument(f"{OP}: activation='clip' needs clip=(lo, hi), two numbers with lo <= hi, got "
                                  f"{clip!r}")
        clip = (float(clip[0]), float(clip[1]))
    elif clip is not None:
        raise InvalidArgument(f"{OP}: clip is for activation='clip', got clip={clip!r} with activation="
                              f"{activation!r}")
    if x.dtype == np.int8:
        if x_scale is None or w_scale is None:
            raise InvalidArgument(f"{OP}: int8 input and weight need x_scale (per tensor) and w_scale (per output "
                                  f"channel or one number)")
        x_scale = _positive("x_scale", x_scale)
        w_scale = _vector("w_scale", w_scale, OC, positive=True)
        if out_scale is not None:
            out_scale = _positive("out_scale", out_scale)
            if not _int(out_zero_point) or not -128 <= out_zero_point <= 127:
                raise InvalidArgument(f"{OP}: out_zero_point must be an integer in [-128, 127], got "
                                      f"{out_zero_point!r}")
        if out_dtype is not None:
            raise InvalidArgument(f"{OP}: out_dtype is for float inputs (int8 gives float32, or int8 with "
                                  f"out_scale), got {out_dtype!r}")
    else:
        for name, v in (("x_scale", x_scale), ("w_scale", w_scale), ("out_scale", out_scale)):
            if v is not None:
                raise InvalidArgument(f"{OP}: {name} is for int8 input and weight, got {name}={v!r:.60} with "
                                      f"{x.dtype} input")
        if not (out_dtype is None or isinstance(out_dtype, str)) or out_dtype not in (None, "fp32", "fp16"):
            raise InvalidArgument(f"{OP}: out_dtype must be None, 'fp32' or 'fp16', got {out_dtype!r}")
    if out_scale is None and not (_int(out_zero_point) and out_zero_point == 0):
        raise InvalidArgument(f"{OP}: out_zero_point is for int8 requantization (with out_scale), got "
                              f"{out_zero_point!r}")
    b = None if bias is None else _vector("bias", bias, OC)
    if residual is not None:
        if not isinstance(residual, np.ndarray) or residual.shape != (N, OC, OH, OW) or residual.dtype.kind != "f":
            raise InvalidArgument(f"{OP}: residual must be a float array of the output's shape {(N, OC, OH, OW)}, "
                                  f"got {getattr(residual, 'shape', type(residual).__name__)} "
                                  f"{getattr(residual, 'dtype', '')}")
    return st, pd, op, dl, G, (OH, OW), b, x_scale, w_scale, clip, out_scale


def rewrite(x, w, stride, padding, output_padding, groups, dilation):
    """The conv2d operands: the zero-inserted, padded (or cropped) input canvas and the flipped, channel-swapped
    weights [C_out, C_in/groups, KH, KW]. Arguments already normalized by check()."""
    N, C, H, W = x.shape
    _, OCg, KH, KW = w.shape
    (sh, sw), (ph, pw), (dh, dw), G = stride, padding, dilation, groups
    OH, OW = output_size(H, W, KH, KW, stride, padding, output_padding, dilation)
    top, left = dh * (KH - 1) - ph, dw * (KW - 1) - pw        # negative: rows / columns cropped
    Hc, Wc = OH + dh * (KH - 1), OW + dw * (KW - 1)           # the canvas a stride-1 conv maps to OH x OW
    canvas = np.zeros((N, C, Hc, Wc), x.dtype)
    rows, cols = top + np.arange(H) * sh, left + np.arange(W) * sw
    kr, kc = (rows >= 0) & (rows < Hc), (cols >= 0) & (cols < Wc)
    if kr.any() and kc.any():
        canvas[:, :, rows[kr][:, None], cols[kc][None, :]] = x[:, :, kr][:, :, :, kc]
    Cg = C // G
    wf = w.reshape(G, Cg, OCg, KH, KW).transpose(0, 2, 1, 3, 4)[..., ::-1, ::-1]
    return canvas, np.ascontiguousarray(wf.reshape(G * OCg, Cg, KH, KW))


def conv_transpose2d(card, x, w, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     x_scale=None, w_scale=None, residual=None, activation=None, clip=None, out_scale=None,
                     out_zero_point=0, out_dtype=None, pes=None, trace=False):
    """torch.nn.functional.conv_transpose2d on the card (PyTorch's argument order). x [N, C_in, H, W], w
    [C_in, C_out/groups, KH, KW]; stride, padding, output_padding, dilation: ints or (h, w); output_padding
    smaller than stride or dilation in each dimension. Both float16 (-> float16) or float32 (-> float32; mixed:
    widened to float32), or both int8 with x_scale (per tensor) and w_scale (per output channel, or one
    number): dequantized to float32, or requantized to int8 with out_scale / out_zero_point. bias [C_out];
    residual [N, C_out, OH, OW] (added after the bias); activation None | 'relu' | 'relu6' | 'clip' (clip=(lo,
    hi)). Returns (out, LaunchResult) of the conv2d launch the rewrite makes."""
    st, pd, op, dl, G, (OH, OW), b, x_scale, w_scale, clip, out_scale = check(
        x, w, bias, stride, padding, output_padding, groups, dilation, x_scale, w_scale, residual, activation, clip,
        out_scale, out_zero_point, out_dtype)
    canvas, wf = rewrite(x, w, st, pd, op, G, dl)
    try:
        return convolution.conv2d(card, canvas, wf, b, 1, 0, dl, G, w_scale=w_scale, x_scale=x_scale,
                                  residual=residual, activation=activation, clip=clip, out_scale=out_scale,
                                  out_zero_point=int(out_zero_point), out_dtype=out_dtype, pes=pes, trace=trace)
    except InvalidArgument as e:       # what check() does not foresee (e.g. tiles that do not fit the card)
        raise InvalidArgument(f"{OP}: as conv2d of the zero-inserted input {canvas.shape} with weight {wf.shape}: "
                              f"{e}") from None


def reference_conv_transpose2d(x, w, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                               x_scale=None, w_scale=None, residual=None, activation=None, clip=None, out_scale=None,
                               out_zero_point=0):
    """The op in numpy, independently of the rewrite: each input pixel scatters x[n, c, i, j] * w[c, o, kh, kw]
    to output (i*sh - ph + kh*dh, j*sw - pw + kw*dw), summed in float64 (fp32 then, like the card's accumulator
    result), then the epilogue in fp32 as conv2d's: x int8: x w_scale[o] * x_scale; + bias; + residual;
    activation; int8 requantization (with out_scale) or fp16 rounding (fp16 inputs)."""
    (sh, sw), (ph, pw) = _pair(stride, "stride", 1), _pair(padding, "padding", 0)
    (oph, opw), (dh, dw) = _pair(output_padding, "output_padding", 0), _pair(dilation, "dilation", 1)
    N, C, H, W = x.shape
    _, OCg, KH, KW = w.shape
    G = groups
    Cg, OC = C // G, OCg * G
    OH, OW = output_size(H, W, KH, KW, (sh, sw), (ph, pw), (oph, opw), (dh, dw))
    # the full scatter target before padding crops it: row r of it is output row r - ph
    full = np.zeros((N, OC, max((H - 1) * sh + dh * (KH - 1) + 1 + oph, ph + OH),
                     max((W - 1) * sw + dw * (KW - 1) + 1 + opw, pw + OW)), np.float64)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    for g in range(G):
        xg = x64[:, g * Cg:(g + 1) * Cg]
        for kh in range(KH):
            for kw in range(KW):
                contrib = np.einsum("nchw,co->nohw", xg, w64[g * Cg:(g + 1) * Cg, :, kh, kw])
                full[:, g * OCg:(g + 1) * OCg, kh * dh:kh * dh + (H - 1) * sh + 1:sh,
                     kw * dw:kw * dw + (W - 1) * sw + 1:sw] += contrib
    return convolution.reference_epilogue(full[:, :, ph:ph + OH, pw:pw + OW].astype(np.float32), x.dtype, w.dtype, OC,
                                          w_scale, x_scale, bias, residual, activation, clip, out_scale,
                                          out_zero_point)


# --- `vnpu op conv_transpose2d` -------------------------------------------------------------------------------
# output_padding is a string parameter: `vnpu op` range-checks integer parameters it does not know as sizes
# (1 and up), and output_padding is 0 as often as 1. The op parses and checks it.
def _opad(p):
    try:
        return int(p["output_padding"])
    except ValueError:
        raise InvalidArgument(f"{OP}: --output_padding must be an integer, got {p['output_padding']!r}") from None


def _inputs(rng, p):
    c, oc, k, g = p["c"], p["oc"], p["k"], p["groups"]
    if c % g or oc % g:
        raise InvalidArgument(f"{OP}: --groups {g} must divide --c {c} and --oc {oc}")
    x = rng.standard_normal((p["n"], c, p["h"], p["w"]))
    w = rng.standard_normal((c, oc // g, k, k)) / math.sqrt(max(1, c // g) * k * k / p["stride"] ** 2)
    bias = rng.standard_normal(oc).astype(np.float32)
    if p["dtype"] == "int8":
        return {"x": rng.integers(-128, 128, x.shape).astype(np.int8),
                "w": rng.integers(-128, 128, w.shape).astype(np.int8), "bias": bias}
    dt = np.float16 if p["dtype"] == "fp16" else np.float32
    return {"x": x.astype(dt), "w": w.astype(dt), "bias": bias}


def _kw(x, p):
    kw = dict(bias=x["bias"], stride=p["stride"], padding=p["padding"], output_padding=_opad(p),
              groups=p["groups"], dilation=p["dilation"],
              activation=None if p["activation"] == "none" else p["activation"])
    if p["dtype"] == "int8":
        kw.update(x_scale=0.02, w_scale=np.full(p["oc"], 0.01, np.float32))
    return kw


def _run_spec(card, x, p, pes=None):
    y, result = conv_transpose2d(card, x["x"], x["w"], pes=pes, **_kw(x, p))
    return [y], result


def _macs(p):
    """The op's useful MACs: every input pixel times every tap and output channel of its group (the card
    does about stride^2 times more, on the inserted zeros)."""
    return p["n"] * p["c"] * p["h"] * p["w"] * (p["oc"] // p["groups"]) * p["k"] ** 2


OPS = [OpSpec("conv_transpose2d",
              dict(n=8, c=128, h=14, w=14, oc=64, k=3, stride=2, padding=1, output_padding="1", dilation=1, groups=1,
                   dtype="int8", activation="relu"),
              _inputs, _run_spec, lambda x, p: [reference_conv_transpose2d(x["x"], x["w"], **_kw(x, p))],
              lambda p: {"fp32": (1e-5, 1e-5), "fp16": (2e-2, 2e-2), "int8": (1e-5, 1e-3)}[p["dtype"]],
              lambda p: 2 * _macs(p),
              "transposed conv2d (PyTorch's conv_transpose2d) as conv2d of the zero-inserted input: ~stride^2 "
              "the useful MACs; default: a decoder upsampling 3x3 stride 2, 128 to 64 channels, 14x14 to 28x28, "
              "batch 8, int8, ReLU (roofline ops count the useful MACs only)",
              {"dtype": ("fp32", "fp16", "int8"), "activation": ("none", "relu", "relu6")})]
