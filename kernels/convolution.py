"""conv2d in the kernel language: NCHW, any stride, asymmetric padding, dilation, groups (depthwise too);
fp16, fp32 (computed as fp32) and int8 with per-output-channel weight scales; fused bias, residual add and
ReLU / ReLU6 / clip, optionally requantized to int8.

The host pads the input (zeros, the asymmetric amounts given), so every tile reads whole rows. The work is
(image, group, block of R output rows) units, split over the PEs and pipelined (`range(..., pipeline=True)`:
the next unit's input band and weights load while this one computes; its result leaves during the next).
Per unit, as an implicit GEMM with the roles swapped so the result comes out channel-major (NCHW):
    band   one 2-D DMA: the Cg input planes' rows the unit needs, [Cg, Rb * Wp]
    im2col A^T [Cg*KH*KW, R*OW] built by KH*KW local DMAs (`move`: planes Cg x rows R of OW elements each;
           stride > 1 in width: one DMA per output row, OW elements of one)
    matmul weights [OCg, Cg*KH*KW] (the "A" operand, rows in (c, kh, kw) order like w.reshape) times A^T
           held in the matrix unit's weight buffer -> [OCg, R*OW]: each channel's positions contiguous
    epilogue int8: fp32(acc) x scale[oc] per row; + bias[oc] per row; + residual; activation; to the
           output dtype (fp16, or int8 with a requantization scale and zero point)
    store  one 2-D DMA into out viewed as [N*OC, OH*OW]
Numerics: fp32 products exact, summed in fp64 in (c, kh, kw) order, rounded once (the matrix unit's f32
mode); fp16 products exact, fp32 sums; int8 exact int32. Then each epilogue step rounds to fp32.
"""
from __future__ import annotations

import math

import numpy as np

from vnpu.emulator.state import WEIGHT_BUFFER_BYTES
from vnpu.errors import InvalidArgument

from . import lang, runner
from .library import OpSpec

ACTIVATIONS = (None, "relu", "relu6", "clip")


def _conv(xp, w, scale, bias, res, out, qp, G: lang.constexpr, KH: lang.constexpr, KW: lang.constexpr,
          sh: lang.constexpr, sw: lang.constexpr, dh: lang.constexpr, dw: lang.constexpr, OH: lang.constexpr,
          OW: lang.constexpr, R: lang.constexpr, act: lang.constexpr, lo: lang.constexpr, hi: lang.constexpr,
          out_dt: lang.constexpr):
    N, Cin, Hp, Wp = xp.shape
    OC = w.shape[0]
    Cg, OCg = Cin // G, OC // G
    Kg, M = Cg * KH * KW, R * OW
    Rb = (R - 1) * sh + (KH - 1) * dh + 1              # input rows a block of R output rows reads
    nb = -(-OH // R)
    x2, w2, o2 = xp.reshape(N * Cin, Hp * Wp), w.reshape(OC, Kg), out.reshape(N * OC, OH * OW)
    if G == 1:
        wt = lang.load(w2)
    first, last = lang.split(N * G * nb)
    for u in range(first, last, pipeline=True):
        n, g, b = u // (G * nb), u // nb % G, u % nb
        row0, c0, p0 = n * Cin + g * Cg, b * R * sh * Wp, b * M
        band = lang.load(x2[row0:row0 + Cg, c0:c0 + Rb * Wp])
        if G > 1:
            wt = lang.load(w2[g * OCg:g * OCg + OCg, :])
        at = lang.empty((Kg, M), xp.dtype)
        for kh in lang.static_range(KH):
            for kw in lang.static_range(KW):
                src, dst = kh * dh * Wp + kw * dw, (kh * KW + kw) * M
                if sw == 1:
                    lang.move(at, band, OW, rows=(R, sh * Wp, OW), planes=(Cg, Rb * Wp, KH * KW * M), src_at=src,
                              dst_at=dst)
                else:
                    for r in lang.static_range(R):
                        lang.move(at, band, 1, rows=(OW, sw, 1), planes=(Cg, Rb * Wp, KH * KW * M),
                                  src_at=src + r * sh * Wp, dst_at=dst + r * OW)
        y = lang.matmul(wt, at)                            # [OCg, M]: i32 (int8) or f32
        if scale is not None or y.dtype != "f32":
            y = y.astype("f32")
        for vec, op in ((scale, lang.mul), (bias, lang.add)):
            if vec is not None:                            # one value per output channel: per row
                op(y, lang.load(vec[g * OCg:g * OCg + OCg]).reshape(OCg, 1), out=y)
        if res is not None:
            lang.add(y, lang.load(res.reshape(N * OC, OH * OW)[n * OC + g * OCg:n * OC + g * OCg + OCg,
                                                                 p0:lang.minimum(p0 + M, OH * OW)]), out=y)
        y = _finish(y, act, lo, hi, out_dt, qp)
        lang.store(o2[n * OC + g * OCg:n * OC + g * OCg + OCg, p0:lang.minimum(p0 + M, OH * OW)], y)


def _conv_nhwc(xh, wt, scale, bias, out, qp, KH: lang.constexpr, KW: lang.constexpr, dh: lang.constexpr,
               dw: lang.constexpr, OH: lang.constexpr, OW: lang.constexpr, R: lang.constexpr, br: lang.constexpr,
               act: lang.constexpr, lo: lang.constexpr, hi: lang.constexpr, out_dt: lang.constexpr):
    """Stride 1, one group, channels last: no im2col. The input band [positions, C] is the matrix unit's A
    operand as it lies; tap (kh, kw) is the band shifted by kh*dh*Wp + kw*dw positions (outputs are computed
    over the padded width Wp and the extra columns dropped at the store), times that tap's weights [C, OC],
    accumulated over the taps. The epilogue is per column (channel): rows repeated br deep, like dense."""
    N, Hp, Wp, C = xh.shape
    OC = wt.shape[1]
    M = R * Wp
    L = (R + (KH - 1) * dh) * Wp + (KW - 1) * dw        # band positions a block of R output rows reads
    nb = -(-OH // R)
    x2, o2 = xh.reshape(N * Hp * Wp, C), out.reshape(N * OH, OW * OC)
    wall = lang.load(wt)                               # every tap's weights, resident: [KH*KW*C, OC]
    reps = [lang.repeat(lang.load(v), br) for v in (scale, bias) if v is not None]
    first, last = lang.split(N * nb)
    for u in range(first, last, pipeline=True):
        n, oh0 = u // nb, u % nb * R
        p0 = n * (Hp * Wp) + oh0 * Wp
        band = lang.load(x2[p0:p0 + L, :])
        acc = lang.empty((M, OC), "i32" if xh.dtype == "i8" else "f32")
        for kh in lang.static_range(KH):
            for kw in lang.static_range(KW):
                t, s = kh * KW + kw, kh * dh * Wp + kw * dw
                lang.matmul(band[s:s + M], wall[t * C:(t + 1) * C], out=acc, accumulate=t > 0)
        y = acc.astype("f32") if acc.dtype != "f32" or reps else acc
        for rep, op in zip(reps, [lang.mul] * (scale is not None) + [lang.add] * (bias is not None)):
            for c in lang.static_range(0, M, br):
                rows = y[c:min(c + br, M)]
                op(rows, rep[:rows.shape[0]], out=rows)
        y = _finish(y, act, lo, hi, out_dt, qp)
        r0 = n * OH + oh0
        lang.store(o2[r0:lang.minimum(r0 + R, n * OH + OH), :], y.reshape(R, Wp * OC))


def _finish(y, act, lo, hi, out_dt, qp):
    """The epilogue's last steps, on the fp32 tile y: the activation, then the output dtype."""
    if act == "relu":
        lang.relu(y, out=y)
    elif act is not None:
        lang.maximum(y, lo, out=y)
        lang.minimum(y, hi, out=y)
    if out_dt == "i8":
        return y.astype("i8", qparam=qp)
    if out_dt == "f16":
        return y.astype("f16")
    return y


def _pair(v, name, minimum, n=2):
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = (int(v),) * n
    elif isinstance(v, (tuple, list)) and len(v) == n and all(
            isinstance(e, (int, np.integer)) and not isinstance(e, bool) for e in v):
        v = tuple(int(e) for e in v)
    else:
        raise InvalidArgument(f"conv2d: {name} must be an integer or {n} integers, got {v!r}")
    if min(v) < minimum:
        raise InvalidArgument(f"conv2d: {name} must be at least {minimum}, got {v}")
    return v


def _padding(padding):
    """(top, bottom, left, right) from an int, (h, w), or (top, bottom, left, right)."""
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        t, b, l_, r = _pair(padding, "padding", 0, 4)
        return t, b, l_, r
    ph, pw = _pair(padding, "padding", 0)
    return ph, ph, pw, pw


def _float_vec(name, v, n):
    if v is None:
        return None
    v = np.asarray(v)
    if v.ndim == 0 and name == "w_scale":
        v = np.full(n, v, np.float32)
    if v.shape != (n,) or v.dtype.kind not in "fiu":
        raise InvalidArgument(f"conv2d: {name} must be {n} numbers (one per output channel), got "
                              f"{getattr(v, 'shape', type(v).__name__)} {getattr(v, 'dtype', '')}")
    return np.ascontiguousarray(v, np.float32)


def plan_rows(card, N, G, Cg, OCg, KH, KW, OH, OW, sh, dh, Wp, eb, npe):
    """Output rows per unit: the im2col block fits the weight buffer and local memory with room to double
    buffer, and there are enough units for the PEs."""
    local = int(card.config.local_memory.bytes)
    Kg = Cg * KH * KW
    R = max(1, min(OH, WEIGHT_BUFFER_BYTES // max(1, Kg * OW * eb)))

    def need(r):
        rb = (r - 1) * sh + (KH - 1) * dh + 1
        return 2 * (Cg * rb * Wp * eb + Kg * r * OW * eb + 3 * OCg * r * OW * 4) + OCg * Kg * eb + 4096
    while R > 1 and need(R) > local:
        R = (R + 1) // 2
    while R > 1 and N * G * math.ceil(OH / R) < npe:
        R = (R + 1) // 2
    return R


def conv2d(card, x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, *, w_scale=None, x_scale=None,
           residual=None, activation=None, clip=None, out_scale=None, out_zero_point=0, out_dtype=None, pes=None,
           trace=False):
    """torch.nn.functional.conv2d on the card, plus fusions. x [N, C, H, W], w [OC, C/groups, KH, KW]: both
    float16 or float32 (fp32 computed as fp32; mixed: widened to fp32), or both int8 with x_scale (per
    tensor) and w_scale (per output channel, or one number): the result dequantized to fp32, or requantized
    to int8 with out_scale / out_zero_point. padding: int, (h, w) or (top, bottom, left, right). residual
    [N, OC, OH, OW] added before the activation (None, 'relu', 'relu6', 'clip' with clip=(lo, hi)).
    Returns (out, LaunchResult); out is float16 for float16 inputs, float32 for float32 and dequantized
    int8, int8 when requantized."""
    for name, arr in (("x", x), ("w", w)):
        if not isinstance(arr, np.ndarray) or arr.ndim != 4:
            raise InvalidArgument(f"conv2d: {name} must be a 4-D numpy array, got "
                                  f"{getattr(arr, 'shape', type(arr).__name__)}")
        if arr.dtype not in (np.float16, np.float32, np.int8):
            raise InvalidArgument(f"conv2d: {name} must be float16, float32 or int8, got {arr.dtype}")
    if (x.dtype == np.int8) != (w.dtype == np.int8):
        raise InvalidArgument(f"conv2d: x and w must both be int8 or both float, got {x.dtype} and {w.dtype}")
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise InvalidArgument(f"conv2d: groups must be a positive integer, got {groups!r}")
    N, C, H, W = x.shape
    OC, Cg, KH, KW = w.shape
    G = int(groups)
    if C % G or OC % G or Cg != C // G:
        raise InvalidArgument(f"conv2d: with groups={G}, x's {C} channels and w's {OC} output channels must be "
                              f"multiples of {G} and w must have {C // G if C % G == 0 else '?'} input channels, "
                              f"got w {w.shape}")
    sh, sw = _pair(stride, "stride", 1)
    dh, dw = _pair(dilation, "dilation", 1)
    pt, pb, pl, pr = _padding(padding)
    Hp, Wp = H + pt + pb, W + pl + pr
    OH, OW = (Hp - dh * (KH - 1) - 1) // sh + 1, (Wp - dw * (KW - 1) - 1) // sw + 1
    if min(KH, KW) < 1 or OH < 1 or OW < 1:
        raise InvalidArgument(f"conv2d: kernel {KH}x{KW} (dilation {dh}x{dw}) is larger than the padded input "
                              f"{Hp}x{Wp}")
    if activation not in ACTIVATIONS:
        raise InvalidArgument(f"conv2d: activation must be one of {ACTIVATIONS}, got {activation!r}")
    lo, hi = (0.0, 6.0) if activation == "relu6" else (None, None)
    if activation == "clip":
        if not (isinstance(clip, (tuple, list)) and len(clip) == 2 and all(isinstance(c, (int, float)) for c in clip)
                and clip[0] <= clip[1]):
            raise InvalidArgument(f"conv2d: activation='clip' needs clip=(lo, hi) with lo <= hi, got {clip!r}")
        lo, hi = float(clip[0]), float(clip[1])
    quant = x.dtype == np.int8
    if quant:
        if x_scale is None or w_scale is None:
            raise InvalidArgument("conv2d: int8 inputs need x_scale (per tensor) and w_scale (per output channel)")
        scale = (_float_vec("w_scale", w_scale, OC).astype(np.float64) * float(x_scale)).astype(np.float32)
        out_dt = "i8" if out_scale is not None else "f32"
    else:
        if x_scale is not None or w_scale is not None or out_scale is not None:
            raise InvalidArgument("conv2d: x_scale, w_scale and out_scale are for int8 inputs")
        scale = None
        out_dt = "f16" if (x.dtype == np.float16 and w.dtype == np.float16) else "f32"
        if out_dtype is not None:
            if out_dtype not in ("fp32", "fp16"):
                raise InvalidArgument(f"conv2d: out_dtype must be 'fp32' or 'fp16', got {out_dtype!r}")
            out_dt = "f32" if out_dtype == "fp32" else "f16"
    b = _float_vec("bias", bias, OC)
    np_out = {"f32": np.float32, "f16": np.float16, "i8": np.int8}[out_dt]
    if residual is not None:
        residual = np.asarray(residual)
        if residual.shape != (N, OC, OH, OW) or residual.dtype.kind != "f":
            raise InvalidArgument(f"conv2d: residual must be a float array of shape {(N, OC, OH, OW)}, got "
                                  f"{residual.shape} {residual.dtype}")
        residual = np.ascontiguousarray(residual, np.float32)
    if N == 0 or OC == 0:
        return np.zeros((N, OC, OH, OW), np_out), runner.nothing(card, "conv2d", pes)
    if C == 0:           # an empty sum: zeros through the epilogue
        x, w = np.zeros((N, G, H, W), x.dtype), np.zeros((OC, 1, KH, KW), w.dtype)
        C, Cg = G, 1
    cdt = x.dtype if x.dtype == w.dtype else np.float32
    xp = np.zeros((N, C, Hp, Wp), cdt)
    xp[:, :, pt:pt + H, pl:pl + W] = x
    wc = np.ascontiguousarray(w, cdt)
    eb = np.dtype(cdt).itemsize
    npe = card.config.pes if pes is None else len(pes)
    R = plan_rows(card, N, G, Cg, OC // G, KH, KW, OH, OW, sh, dh, Wp, eb, npe)
    qp = None
    if out_dt == "i8":
        from .dense import qparam
        qp = qparam(np.float32(1.0) / np.float32(out_scale), out_zero_point)
    if G == 1 and (sh, sw) == (1, 1) and residual is None:
        done = _run_nhwc(card, xp, wc, scale, b, (N, OC, OH, OW), np_out, qp, KH, KW, dh, dw, activation, lo, hi,
                         out_dt, pes, trace)
        if done is not None:
            return done
    k = lang.library_kernel(_conv, "conv2d")
    while True:
        consts = (G, KH, KW, sh, sw, dh, dw, OH, OW, R, activation, lo, hi, out_dt)
        try:
            image = k.compile(xp, wc, scale, b, residual, np.empty((N, OC, OH, OW), np_out), qp, *consts,
                              config=card.config).image
            break
        except lang.KernelError as e:
            if "does not fit local memory" not in str(e) or R == 1:
                raise InvalidArgument(f"conv2d: {x.shape} * {w.shape} does not fit the card: {e}") from None
            R = (R + 1) // 2
    key = ("conv2d-lang", xp.shape, wc.shape, str(cdt), consts, scale is not None, b is not None,
           residual is not None, card.config.data["name"], int(card.config.local_memory.bytes))
    args = [xp, wc] + [a for a in (scale, b, residual) if a is not None] + [runner.Out((N, OC, OH, OW), np_out)] + \
        ([qp] if qp is not None else [])
    (y,), result = runner.run(card, key, lambda: image, "conv2d", args, pes=pes, trace=trace)
    return y, result


def _run_nhwc(card, xp, wc, scale, bias, out_shape, np_out, qp, KH, KW, dh, dw, act, lo, hi, out_dt, pes, trace):
    """The stride-1, one-group path (channels last on the card; the host converts the layouts). None when its
    tiles do not fit local memory (the general kernel runs instead)."""
    N, OC, OH, OW = out_shape
    C, Wp = xp.shape[1], xp.shape[3]
    xh = np.ascontiguousarray(xp.transpose(0, 2, 3, 1))
    wt = np.ascontiguousarray(wc.transpose(2, 3, 1, 0)).reshape(KH * KW * C, OC)
    eb = xp.dtype.itemsize
    npe = card.config.pes if pes is None else len(pes)
    local = int(card.config.local_memory.bytes)
    r_max = max(1, min(OH, (local // 3) // max(1, Wp * (C * eb * 2 + OC * 12))))
    rows, cols = int(card.config.matrix.rows), int(card.config.matrix.cols)

    def estimate(r):
        """The busiest PE's matrix cycles: its units x taps x folds x (fill and drain + rows streamed), plus a
        unit's worth for the pipeline's fill (docs/timing.md's weight-stationary formula)."""
        units = N * math.ceil(OH / r)
        per_unit = KH * KW * math.ceil(OC / cols) * (2 * rows + cols - 2 + r * Wp)
        return (math.ceil(units / npe) + 1) * per_unit
    R = min(range(1, r_max + 1), key=estimate)
    k = lang.library_kernel(_conv_nhwc, "conv2d")
    while True:
        br = min(R * Wp, 16)
        consts = (KH, KW, dh, dw, OH, OW, R, br, act, lo, hi, out_dt)
        try:
            image = k.compile(xh, wt, scale, bias, np.empty((N, OH, OW, OC), np_out), qp, *consts,
                              config=card.config).image
            break
        except lang.KernelError as e:
            if "does not fit local memory" not in str(e):
                raise
            if R == 1:
                return None
            R = (R + 1) // 2
    key = ("conv2d-nhwc", xh.shape, wt.shape, str(xp.dtype), consts, scale is not None, bias is not None,
           card.config.data["name"], local)
    # the weights every PE reads whole: from the shared SRAM (one copy on chip, as a runtime keeps them)
    wt_arg = runner.OnChip(wt) if wt.nbytes <= card.config.shared_sram.bytes // 4 else wt
    args = [xh, wt_arg] + [a for a in (scale, bias) if a is not None] + [runner.Out((N, OH, OW, OC), np_out)] + \
        ([qp] if qp is not None else [])
    (y,), result = runner.run(card, key, lambda: image, "conv2d", args, pes=pes, trace=trace)
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2)), result


def reference_conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, *, w_scale=None, x_scale=None,
                     residual=None, activation=None, clip=None, out_scale=None, out_zero_point=0):
    """What the card computes, in numpy: float64 sums (the card's fp32 mode rounds fp64 sums once; its fp16
    mode sums in fp32: within fp16-product rounding of this), then the epilogue in fp32."""
    N, C, H, W = x.shape
    OC, Cg, KH, KW = w.shape
    sh, sw = _pair(stride, "stride", 1)
    dh, dw = _pair(dilation, "dilation", 1)
    pt, pb, pl, pr = _padding(padding)
    xp = np.zeros((N, C, H + pt + pb, W + pl + pr), np.float64)
    xp[:, :, pt:pt + H, pl:pl + W] = x
    OH = (xp.shape[2] - dh * (KH - 1) - 1) // sh + 1
    OW = (xp.shape[3] - dw * (KW - 1) - 1) // sw + 1
    G, OCg = groups, OC // groups
    y = np.zeros((N, OC, OH, OW), np.float64)
    for g in range(G):
        xg = xp[:, g * Cg:(g + 1) * Cg]
        for kh in range(KH):
            for kw in range(KW):
                patch = xg[:, :, kh * dh:kh * dh + (OH - 1) * sh + 1:sh, kw * dw:kw * dw + (OW - 1) * sw + 1:sw]
                y[:, g * OCg:(g + 1) * OCg] += np.einsum("nchw,oc->nohw", patch,
                                                          w[g * OCg:(g + 1) * OCg, :, kh, kw].astype(np.float64))
    y = y.astype(np.float32)
    if x.dtype == np.int8:
        scale = (np.broadcast_to(np.asarray(w_scale, np.float64), (OC,)) * float(x_scale)).astype(np.float32)
        y = (y * scale[None, :, None, None]).astype(np.float32)
    if bias is not None:
        y = (y + np.asarray(bias, np.float32)[None, :, None, None]).astype(np.float32)
    if residual is not None:
        y = (y + np.asarray(residual, np.float32)).astype(np.float32)
    if activation == "relu":
        y = np.where(y < 0, np.float32(0), y)
    elif activation in ("relu6", "clip"):
        lo, hi = (0.0, 6.0) if activation == "relu6" else clip
        y = np.minimum(np.maximum(y, np.float32(lo)), np.float32(hi))
    if x.dtype == np.int8 and out_scale is not None:
        from .reference import vcvt_to_int
        return vcvt_to_int(y, np.float32(1.0) / np.float32(out_scale), out_zero_point)
    if x.dtype == np.float16 and w.dtype == np.float16:
        return y.astype(np.float16)
    return y


def _inputs(rng, p):
    x = rng.standard_normal((p["n"], p["c"], p["h"], p["w"]))
    w = rng.standard_normal((p["oc"], p["c"] // p["groups"], p["k"], p["k"])) / math.sqrt(p["c"] * p["k"] ** 2)
    if p["dtype"] == "int8":
        return {"x": rng.integers(-128, 128, x.shape).astype(np.int8), "w": rng.integers(-128, 128, w.shape)
                .astype(np.int8), "bias": rng.standard_normal(p["oc"]).astype(np.float32)}
    dt = np.float16 if p["dtype"] == "fp16" else np.float32
    return {"x": x.astype(dt), "w": w.astype(dt), "bias": rng.standard_normal(p["oc"]).astype(np.float32)}


def _kw(x, p):
    kw = dict(bias=x["bias"], stride=p["stride"], padding=p["padding"], dilation=p["dilation"], groups=p["groups"],
              activation=None if p["activation"] == "none" else p["activation"])
    if p["dtype"] == "int8":
        kw.update(x_scale=0.02, w_scale=np.full(p["oc"], 0.01, np.float32))
    return kw


def _tol(p):
    return {"fp32": (1e-5, 1e-5), "fp16": (2e-2, 2e-2), "int8": (1e-5, 1e-3)}[p["dtype"]]


OPS = [OpSpec("conv2d_general", dict(n=8, c=128, h=28, w=28, oc=128, k=3, stride=1, padding=1, dilation=1,
                                     groups=1, dtype="int8", activation="relu"),
              _inputs, lambda card, x, p, pes=None: (lambda r: ([r[0]], r[1]))(
                  conv2d(card, x["x"], x["w"], pes=pes, **_kw(x, p))),
              lambda x, p: [reference_conv2d(x["x"], x["w"], **_kw(x, p))], _tol,
              lambda p: 2 * p["n"] * p["oc"] * (p["c"] // p["groups"]) * p["k"] ** 2 *
              ((p["h"] + 2 * p["padding"] - p["dilation"] * (p["k"] - 1) - 1) // p["stride"] + 1) *
              ((p["w"] + 2 * p["padding"] - p["dilation"] * (p["k"] - 1) - 1) // p["stride"] + 1),
              "conv2d with groups, dilation, int8 per-channel scales and fused epilogue (kernel language); "
              "default: ResNet-50 stage 3, 3x3 128->128 on 28x28, batch 8, int8",
              {"dtype": ("fp32", "fp16", "int8"), "activation": ("none", "relu", "relu6")})]
