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


def _conv_flat(x2, wf, scale, bias, res, out, qp, shifts: lang.constexpr, per_pe: lang.constexpr,
               M: lang.constexpr, cw: lang.constexpr, fsplit: lang.constexpr, br: lang.constexpr,
               act: lang.constexpr, lo: lang.constexpr, hi: lang.constexpr, out_dt: lang.constexpr,
               qbounds: lang.constexpr, combine: lang.constexpr, rq: lang.constexpr):
    """Stride 1, one group, channels last, no im2col: a 1-D convolution over flat positions. The host lays the
    padded images one under the other, rows of Wp positions, x2 [positions, C]; the output at position p is
    the sum over taps of x2[p + shift] times the tap's weights [C, cw] (shift = kh*dh*Wp + kw*dw), so the
    matrix unit's A operand is the input band as it lies, shifted. Positions whose taps leave their image (past
    OW in a row, past OH in an image) are computed and dropped by the host.

    The PEs form a grid: fsplit groups of output-channel folds times pe_count / fsplit groups of positions
    (fsplit > 1 when the positions are too few to keep every PE busy: a late ResNet stage at batch 1). A PE
    takes per_pe positions in blocks of M and its group's folds.

    Per block the output channels go in items of cw columns (one matrix fold wide), software-pipelined so the
    matrix unit does not wait for the vector unit: the taps of item i are issued, then the epilogue of item
    i-1 (which waits only for item i-1's products), then the store of item i-2 (combine: its move into the
    block's output tile, stored whole at the end of the block, for DRAM where short rows are slow). The last
    fold is cut in two halves of the block, so the epilogue left when the matrix unit has finished is half as
    long. With one block per PE the weights and the per-channel vectors load after the band, so the first
    products wait only for the band and the first fold's weights; with more, they load once before a
    pipelined loop. res (the residual in the output's flat layout, fp32, or int8 with rq = (scale, zero point):
    dequantized by a vcvt first) is added before the activation."""
    C = x2.shape[1]
    OCp = out.shape[1]
    F, taps = OCp // cw, len(shifts)
    Fg = F // fsplit                                     # folds per PE
    L = M + shifts[-1]                                   # band positions a block reads
    resident = per_pe > M
    split_last = M >= 64 and Fg > 1
    items = [(j, 0, M) for j in lang.static_range(Fg - 1)] + ([(Fg - 1, 0, M // 2), (Fg - 1, M // 2, M)]
                                                              if split_last else [(Fg - 1, 0, M)])
    ops = [lang.mul] * (scale is not None) + [lang.add] * (bias is not None)
    pe = lang.pe_id()
    pp, pf = pe // fsplit, pe % fsplit
    f0 = pf * Fg                                         # this PE's first fold
    c0 = f0 * cw

    def weights_and_vectors():
        walls = [lang.load(wf[(f0 + j) * taps * C:(f0 + j + 1) * taps * C, :]) for j in lang.static_range(Fg)]
        vecs = [lang.load(v[c0:c0 + Fg * cw]) for v in (scale, bias) if v is not None]
        return walls, vecs

    if resident:
        walls, vecs = weights_and_vectors()
    first = pp * per_pe
    for p0 in range(first, first + per_pe, M, pipeline=resident):
        band = lang.load(x2[p0:p0 + L, :])
        if not resident:
            walls, vecs = weights_and_vectors()
        accs, done = [], []
        if combine:
            yo = lang.empty((M, Fg * cw), out_dt)
        for i in lang.static_range(len(items) + 2):
            if i < len(items):                           # item i's taps on the matrix unit
                j, a, b = items[i]
                acc = lang.empty((b - a, cw), "i32" if x2.dtype == "i8" else "f32")
                for t in lang.static_range(taps):
                    lang.matmul(band[shifts[t] + a:shifts[t] + b], walls[j][t * C:(t + 1) * C], out=acc,
                                accumulate=t > 0)
                accs.append(acc)
            if 1 <= i <= len(items):                     # item i-1's epilogue on the vector unit
                j, a, b = items[i - 1]
                reps = [lang.repeat(v[j * cw:(j + 1) * cw], min(br, b - a)) for v in vecs]
                rt = None if res is None else lang.load(res[p0 + a:p0 + b, c0 + j * cw:c0 + (j + 1) * cw])
                if rq is not None:
                    rt = rt.astype("f32", scale=rq[0], zero_point=rq[1])
                done.append(_epilogue(accs[i - 1], reps, ops, act, lo, hi, out_dt, qp, qbounds, rt))
            if i >= 2:                                   # item i-2's result out
                j, a, b = items[i - 2]
                if combine:
                    lang.move(yo, done[i - 2], cw, rows=(b - a, cw, Fg * cw), dst_at=a * Fg * cw + j * cw)
                else:
                    lang.store(out[p0 + a:p0 + b, c0 + j * cw:c0 + (j + 1) * cw], done[i - 2])
        if combine:
            lang.store(out[p0:p0 + M, c0:c0 + Fg * cw], yo)


def _phases(xp, w, sh, sw, OH, OW):
    """(phase-stacked input [N, sh*sw*C, Hq, Wq], its weights [OC, sh*sw*C, ceil(KH/sh), ceil(KW/sw)], the new
    KH, KW) for a stride-(sh, sw) conv of the padded input xp: output (oh, ow) = sum over phases (a, b) and taps
    (q, r) of phase(a, b)[oh + q, ow + r] * w[:, :, sh*q + a, sw*r + b]."""
    N, C, Hp, Wp = xp.shape
    OC, _, KH, KW = w.shape
    KQ, KR = -(-KH // sh), -(-KW // sw)
    Hq, Wq = OH + KQ - 1, OW + KR - 1
    xs = np.zeros((N, sh * sw, C, Hq, Wq), xp.dtype)
    for a in range(sh):
        for b in range(sw):
            ph = xp[:, :, a::sh, b::sw][:, :, :Hq, :Wq]
            xs[:, a * sw + b, :, :ph.shape[2], :ph.shape[3]] = ph

    def phase_weights():
        ws = np.zeros((OC, sh * sw, C, KQ, KR), w.dtype)
        for a in range(sh):
            for b in range(sw):
                sub = w[:, :, a::sh, b::sw]
                ws[:, a * sw + b, :, :sub.shape[2], :sub.shape[3]] = sub
        return np.ascontiguousarray(ws.reshape(OC, sh * sw * C, KQ, KR))
    # a runtime's constant weights: their phases once (and so the flat layout of those, keyed on the result)
    return (np.ascontiguousarray(xs.reshape(N, sh * sw * C, Hq, Wq)),
            runner.derived(w, ("conv2d-phase-weights", sh, sw), phase_weights), KQ, KR)


def _rate(cfg, dtype):
    """The matrix unit's MACs per cell per cycle for an element type."""
    return {np.dtype(np.int8): cfg.matrix.int8_rate, np.dtype(np.float16): cfg.matrix.fp16_rate}.get(
        np.dtype(dtype), cfg.matrix.fp32_rate)


def _epilogue(acc, reps, ops, act, lo, hi, out_dt, qp, qbounds, res=None):
    """acc [m, cw] -> the output dtype: fp32, x scale and + bias per column (the repeated rows reps, br deep),
    the activation. With int8 output the activation is applied after requantizing, on int8 (a quarter of the
    vector work): requantization is monotone and maps 0, lo and hi to their quantized values, so clamping
    before or after gives the same integers (a NaN sum, from a NaN scale or bias, requantizes to 0 and then
    clamps to the zero point or lo instead of staying 0)."""
    m = acc.shape[0]
    y = acc.astype("f32") if acc.dtype != "f32" or ops or res is not None else acc
    br = reps[0].shape[0] if reps else m
    for rep, op in zip(reps, ops):
        for c in lang.static_range(0, m, br):
            rows = y[c:min(c + br, m)]
            op(rows, rep[:rows.shape[0]], out=rows)
    if res is not None:
        lang.add(y, res, out=y)
    if out_dt != "i8":
        return _finish(y, act, lo, hi, out_dt, qp)
    q = y.astype("i8", qparam=qp)
    if act is not None:
        qlo, qhi = qbounds
        lang.maximum(q, qlo, out=q)
        if qhi is not None:
            lang.minimum(q, qhi, out=q)
    return q


def _qbounds(act, lo, hi, inv_scale, zero_point):
    """The activation's bounds requantized as the vector unit's vcvt does (round half to even of
    fma(v, 1/scale, zero point), saturated): (low, high or None), or None without an activation."""
    from .reference import vcvt_to_int

    def q(v):
        return int(vcvt_to_int(np.array([v], np.float32), inv_scale, zero_point)[0])
    if act is None:
        return None
    return (q(0.0), None) if act == "relu" else (q(lo), q(hi))


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


def _positive(name, v):
    """A quantization scale: a finite positive number."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not \
            (np.isfinite(v) and v > 0):
        raise InvalidArgument(f"conv2d: {name} must be a finite positive number, got {v!r}")


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
           trace=False, memory="dram", residual_scale=None, residual_zero_point=0):
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
    if not (activation is None or isinstance(activation, str)) or activation not in ACTIVATIONS:
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
        _positive("x_scale", x_scale)
        if out_scale is not None:
            _positive("out_scale", out_scale)
            if isinstance(out_zero_point, bool) or not isinstance(out_zero_point, (int, np.integer)) or \
                    not -128 <= out_zero_point <= 127:
                raise InvalidArgument(f"conv2d: out_zero_point must be an integer in [-128, 127], got "
                                      f"{out_zero_point!r}")
        scale = (_float_vec("w_scale", w_scale, OC).astype(np.float64) * float(x_scale)).astype(np.float32)
        out_dt = "i8" if out_scale is not None else "f32"
    else:
        if x_scale is not None or w_scale is not None or out_scale is not None:
            raise InvalidArgument("conv2d: x_scale, w_scale and out_scale are for int8 inputs")
        scale = None
        out_dt = "f16" if (x.dtype == np.float16 and w.dtype == np.float16) else "f32"
        if out_dtype is not None:
            if not isinstance(out_dtype, str):
                raise InvalidArgument(f"conv2d: out_dtype must be 'fp32' or 'fp16', got {out_dtype!r}")
            if out_dtype not in ("fp32", "fp16"):
                raise InvalidArgument(f"conv2d: out_dtype must be 'fp32' or 'fp16', got {out_dtype!r}")
            out_dt = "f32" if out_dtype == "fp32" else "f16"
    b = _float_vec("bias", bias, OC)
    np_out = {"f32": np.float32, "f16": np.float16, "i8": np.int8}[out_dt]
    rq = None                  # an int8 residual's (scale, zero point): dequantized on the card before the add
    if residual is not None:
        residual = np.asarray(residual)
        if residual.shape != (N, OC, OH, OW) or residual.dtype.kind not in "fi" or \
                (residual.dtype.kind == "i" and residual.dtype != np.int8):
            raise InvalidArgument(f"conv2d: residual must be a float or int8 array of shape {(N, OC, OH, OW)}, got "
                                  f"{residual.shape} {residual.dtype}")
        if residual.dtype == np.int8:
            if residual_scale is None:
                raise InvalidArgument("conv2d: an int8 residual needs residual_scale (and residual_zero_point)")
            _positive("residual_scale", residual_scale)
            if isinstance(residual_zero_point, bool) or not isinstance(residual_zero_point, (int, np.integer)) or \
                    not -128 <= residual_zero_point <= 127:
                raise InvalidArgument(f"conv2d: residual_zero_point must be an integer in [-128, 127], got "
                                      f"{residual_zero_point!r}")
            rq = (float(np.float32(residual_scale)), int(residual_zero_point))
        else:
            residual = np.ascontiguousarray(residual, np.float32)
    if N == 0 or OC == 0:
        return np.zeros((N, OC, OH, OW), np_out), runner.nothing(card, "conv2d", pes)
    if C == 0:           # an empty sum: zeros through the epilogue
        x, w = np.zeros((N, G, H, W), x.dtype), np.zeros((OC, 1, KH, KW), w.dtype)
        C, Cg = G, 1
    cdt = x.dtype if x.dtype == w.dtype else np.float32

    def padded():
        """The padded input (the strided paths and the im2col kernel read it; the flat stride-1 path does not)."""
        xp = np.zeros((N, C, Hp, Wp), cdt)
        xp[:, :, pt:pt + H, pl:pl + W] = x
        return xp
    wc = np.ascontiguousarray(w, cdt)
    eb = np.dtype(cdt).itemsize
    npe = card.config.pes if pes is None else len(pes)
    R = plan_rows(card, N, G, Cg, OC // G, KH, KW, OH, OW, sh, dh, Wp, eb, npe)
    qp = None
    if out_dt == "i8":
        from .dense import qparam
        qp = qparam(np.float32(1.0) / np.float32(out_scale), out_zero_point)
    flat_x, flat_pads = None, (pt, pb, pl, pr)
    if G == 1 and (sh, sw) == (1, 1):
        flat_x = np.asarray(x, cdt)
    elif G == 1 and (KH, KW) == (1, 1):
        # a strided 1x1 conv reads every sh-th row and sw-th column: the host's layout change for the flat
        # kernel takes those (padding first), and the conv is then a stride-1 1x1 over OH x OW positions
        flat_x, flat_pads = np.ascontiguousarray(padded()[:, :, ::sh, ::sw][:, :, :OH, :OW]), (0, 0, 0, 0)
    elif G == 1 and (dh, dw) == (1, 1):
        # strided KxK: the padded input split into its sh x sw phases (every sh-th row from row a, every sw-th
        # column from column b), stacked as channels, is a stride-1 conv with ceil(K/s) taps per dimension
        # whose weights are w's taps of each phase (zeros where a phase has no tap: MACs the card spends on
        # zeros, 16/9 of the useful ones for 3x3 stride 2)
        flat_x, wc, KH, KW = _phases(padded(), wc, sh, sw, OH, OW)
        flat_pads = (0, 0, 0, 0)
    if flat_x is not None:
        qbounds = None if out_dt != "i8" else _qbounds(activation, lo, hi, np.float32(1.0) / np.float32(out_scale),
                                                       out_zero_point)
        done = _run_flat(card, flat_x, wc, scale, b, (N, OC, OH, OW), np_out, qp, qbounds, flat_pads, KH, KW, dh,
                         dw, activation, lo, hi, out_dt, memory, pes, trace, residual, rq)
        if done is not None:
            return done
    if rq is not None:
        raise InvalidArgument(f"conv2d: an int8 residual is taken by the one-group path only (groups={G}, dilation "
                              f"{(dh, dw)} with stride {(sh, sw)} run the im2col kernel); give a float residual")
    xp = padded()
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


def _run_flat(card, x, wc, scale, bias, out_shape, np_out, qp, qbounds, pads, KH, KW, dh, dw, act, lo, hi,
              out_dt, memory, pes, trace, residual=None, rq=None):
    """The stride-1, one-group path (channels last on the card; the host converts the layouts and drops the
    positions computed past the images). None when its tiles do not fit local memory (the general kernel runs
    instead)."""
    plan = flat_plan(card, x, wc, scale, bias, out_shape, np_out, qp, qbounds, pads, KH, KW, dh, dw, act, lo, hi,
                     out_dt, memory, pes, residual, rq)
    if plan is None:
        return None
    key = ("conv2d-flat", plan.x2.shape, plan.wf.shape, str(x.dtype), plan.consts, scale is not None,
           bias is not None, residual is not None, memory, card.config.data["name"],
           int(card.config.local_memory.bytes))
    # the weights every PE reads whole: from the shared SRAM (one copy on chip, as a runtime keeps them)
    wf_arg = runner.OnChip(plan.wf) if plan.wf.nbytes <= card.config.shared_sram.bytes // 4 else plan.wf
    place = (lambda a: runner.OnChip(a)) if memory == "shared" else (lambda a: a)
    args = [place(plan.x2), wf_arg] + [v for v in plan.vecs if v is not None] + \
        ([place(plan.res)] if plan.res is not None else []) + [runner.Out(plan.out_shape, np_out, memory)] + \
        ([qp] if qp is not None else [])
    (y,), result = runner.run(card, key, lambda: plan.image, "conv2d", args, pes=pes, trace=trace)
    return plan.unflatten(y), result


def _fold_grid(cfg, npe, F, taps, C, P, eb, rate):
    """How many fold groups the PEs split the output channels into (a divisor of the PE count): the one whose
    busiest PE has the fewest modeled cycles (matrix fills and streamed rows, the first fold's weights, half a
    fold's epilogue at the end); the positions split over the rest."""
    rows, cols = int(cfg.matrix.rows), int(cfg.matrix.cols)
    kf = -(-C // (rows * int(cfg.matrix.depth)))
    dma_rate = float(cfg.dma.bytes_per_cycle)
    best = None
    for d in [d for d in range(1, npe + 1) if npe % d == 0]:
        Fg = -(-F // d)
        share = -(-P // (npe // d))
        per_tap = kf * (2 * rows + cols - 2 + share) / rate + C * cols * eb / 128
        matrix = Fg * taps * per_tap
        # the PE's one DMA engine brings its folds' weights and its band: a floor under the matrix time
        dma = (Fg * taps * C * cols + share * C) * eb / dma_rate
        est = max(matrix, dma) + taps * C * cols * eb / dma_rate + share * cols * 4.25 / 16 / 2
        if best is None or est < best[0] * 0.98:
            best = (est, d)
    return best[1]


_FLAT_SEARCH = {}     # flat_plan's block search per layer shape -> (image, per_pe, consts), or False: none fits


def _flat_search(k, x, wf, vecs, res_dt, np_out, qp, C, OCp, groups, shifts, share, start, cw, fsplit, act, lo, hi,
                 out_dt, qbounds, memory, rq, cfg):
    """The fewest blocks per PE (from `start`) whose tiles fit local memory: (image, per_pe, consts), or False."""
    for blocks in range(min(start, share), share + 1):
        M = -(-share // blocks)
        if blocks > 1 and M == -(-share // (blocks - 1)):
            continue
        per_pe = blocks * M
        consts = (shifts, per_pe, M, cw, fsplit, min(M, 128), act, lo, hi, out_dt, qbounds, memory != "shared", rq)
        try:
            image = k.compile(np.empty((groups * per_pe + shifts[-1], C), x.dtype), wf, vecs[0], vecs[1],
                              None if res_dt is None else np.empty((groups * per_pe, OCp), res_dt),
                              np.empty((groups * per_pe, OCp), np_out), qp, *consts, config=cfg).image
            return image, per_pe, consts
        except lang.KernelError as e:
            if "does not fit local memory" not in str(e) and "larger than the PE's local memory" not in str(e):
                raise
    return False


def flat_plan(card, x, wc, scale, bias, out_shape, np_out, qp, qbounds, pads, KH, KW, dh, dw, act, lo, hi, out_dt,
              memory="dram", pes=None, residual=None, rq=None):
    """The flat kernel's operands, constants and compiled image for x (unpadded, NCHW) and wc [OC, C, KH, KW];
    `unflatten(y)` turns its output back into NCHW. None when no block size fits local memory.

    Layout: each image row is W positions preceded by g = max(left, right padding) zeros, so a row's right
    padding is the next row's left padding (Wp = W + g); each image is H rows preceded by gr = max(top,
    bottom) zero rows, likewise shared; zeros past the last image cover the reads of the last PE's block.
    (Where the padding is wider than the kernel's reach, g and gr grow so a row holds OW outputs.) The
    residual, if any, is laid out like the output."""
    from types import SimpleNamespace
    pt, pb, pl, pr = pads
    N, C, H, W = x.shape
    OC, OH, OW = out_shape[1:]
    g, gr = max(pl, pr, pl + pr - (KW - 1) * dw), max(pt, pb, pt + pb - (KH - 1) * dh)
    Wp, Hg = W + g, H + gr
    shifts = tuple((gr - pt + kh * dh) * Wp + (g - pl) + kw * dw for kh in range(KH) for kw in range(KW))
    P = ((N - 1) * Hg + OH) * Wp                         # positions up to the last image's last output row
    cfg = card.config
    cw = min(int(cfg.matrix.cols), OC)                   # an item: one fold of output channels
    taps = KH * KW
    npe = cfg.pes if pes is None else len(pes)
    fsplit = _fold_grid(cfg, npe, -(-OC // cw), taps, C, P, x.dtype.itemsize, _rate(cfg, x.dtype))
    F = -(-OC // (cw * fsplit)) * fsplit                 # folds, a multiple of the fold groups
    OCp = F * cw
    groups = npe // fsplit
    def layout():
        wf = np.zeros((KH, KW, C, OCp), wc.dtype)
        wf[..., :OC] = wc.transpose(2, 3, 1, 0)
        return np.ascontiguousarray(wf.reshape(taps, C, F, cw).transpose(2, 0, 1, 3)).reshape(F * taps * C, cw)
    # a runtime's constant weights (runner.mark_constant) are laid out once, not on every call
    wf = runner.derived(wc, ("conv2d-flat-weights", KH, KW, C, OCp, F, cw), layout)
    vecs = [None if v is None else np.concatenate([v, np.zeros(OCp - OC, np.float32)]) for v in (scale, bias)]
    k = lang.library_kernel(_conv_flat, "conv2d")
    share = -(-P // groups)
    # One block per PE unless the layer streams from DRAM and is bound by it: then two, so the second block's
    # band loads and the first block's results leave while the matrix unit works (measured on ResNet-50's
    # stage 3, docs/kernels.md; more blocks cost a matrix fill per tap and fold each)
    dram_cycles = (x.nbytes + N * OH * OW * OC * np.dtype(np_out).itemsize) / (cfg.dram.gbps / cfg.clock_ghz)
    mm_cycles = share * (F // fsplit) * taps * -(-C // (cfg.matrix.rows * cfg.matrix.depth)) / _rate(cfg, x.dtype)
    res_dt = None if residual is None else residual.dtype
    # the fewest blocks whose tiles could fit: the band (twice, prefetched), three item accumulators and their
    # fp32 epilogue, the block's output, per position; the compile below has the last word
    per_pos = 2 * C * x.dtype.itemsize + 4 * cw * 4 + (F // fsplit) * cw * np.dtype(np_out).itemsize + 4 * cw
    fewest = max(1, -(-share * per_pos // max(1, int(cfg.local_memory.bytes) // 2)))
    start = max(fewest, 2 if memory == "dram" and dram_cycles > mm_cycles and share > 1 else 1)
    # the block search and its compiles depend on shapes, dtypes and constants only: once per layer shape
    # (a model serves the same layers again and again; the search costs a millisecond of Python, under the GIL)
    search_key = (x.shape, str(x.dtype), wf.shape, str(wf.dtype), scale is None, bias is None, res_dt and str(res_dt),
                  str(np.dtype(np_out)), None if qp is None else (np.shape(qp), str(np.asarray(qp).dtype)), shifts,
                  start, share, groups, cw, fsplit, act, lo, hi, out_dt, qbounds, memory, rq, cfg.data["name"],
                  int(cfg.local_memory.bytes))
    found = _FLAT_SEARCH.get(search_key)
    if found is None:
        found = _flat_search(k, x, wf, vecs, res_dt, np_out, qp, C, OCp, groups, shifts, share, start, cw, fsplit,
                             act, lo, hi, out_dt, qbounds, memory, rq, cfg)
        if len(_FLAT_SEARCH) > 4096:
            _FLAT_SEARCH.clear()
        _FLAT_SEARCH[search_key] = found
    if found is False:
        return None
    image, per_pe, consts = found
    alloc = groups * per_pe
    x2 = np.zeros((alloc + shifts[-1], C), x.dtype)
    tall = np.zeros((N, Hg, Wp, C), x.dtype)
    tall[:, gr:, g:] = x.transpose(0, 2, 3, 1)
    n = min(N * Hg * Wp, x2.shape[0])
    x2[:n] = tall.reshape(-1, C)[:n]
    res = None
    if residual is not None:                             # output position of (n, oh, ow): n*Hg*Wp + oh*Wp + ow
        rt = np.zeros((N, Hg, Wp, OCp), residual.dtype)
        rt[:, :OH, :OW, :OC] = residual.transpose(0, 2, 3, 1)
        res = np.zeros((alloc, OCp), residual.dtype)
        m = min(N * Hg * Wp, alloc)
        res[:m] = rt.reshape(-1, OCp)[:m]

    def unflatten(y):
        need = N * Hg * Wp
        y = np.concatenate([y, np.zeros((max(0, need - y.shape[0]), OCp), y.dtype)])[:need].reshape(N, Hg, Wp, OCp)
        return np.ascontiguousarray(y[:, :OH, :OW, :OC].transpose(0, 3, 1, 2))
    return SimpleNamespace(x2=x2, wf=wf, vecs=vecs, res=res, out_shape=(alloc, OCp), consts=consts, image=image,
                           unflatten=unflatten, kernel=k)


def reference_conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, *, w_scale=None, x_scale=None,
                     residual=None, activation=None, clip=None, out_scale=None, out_zero_point=0, residual_scale=None,
                     residual_zero_point=0):
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
    if residual is not None and np.asarray(residual).dtype == np.int8:     # the card's vcvt: (q - zp) * scale, once
        residual = ((np.asarray(residual, np.float64) - residual_zero_point) *
                    np.float64(np.float32(residual_scale))).astype(np.float32)
    return reference_epilogue(y.astype(np.float32), x.dtype, w.dtype, OC, w_scale, x_scale, bias, residual, activation,
                              clip, out_scale, out_zero_point)


def reference_epilogue(y, x_dtype, w_dtype, OC, w_scale, x_scale, bias, residual, activation, clip, out_scale,
                       out_zero_point):
    """The fused epilogue of a conv's numpy reference (conv2d and conv_transpose2d share it), on the fp32 sums
    y [N, OC, ...]: int8 scales, bias, residual, activation, each step rounded to fp32, then the output dtype."""
    if x_dtype == np.int8:
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
    if x_dtype == np.int8 and out_scale is not None:
        from .reference import vcvt_to_int
        return vcvt_to_int(y, np.float32(1.0) / np.float32(out_scale), out_zero_point)
    if x_dtype == np.float16 and w_dtype == np.float16:
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
                                     groups=1, dtype="int8", activation="relu", memory="dram"),
              _inputs, lambda card, x, p, pes=None: (lambda r: ([r[0]], r[1]))(
                  conv2d(card, x["x"], x["w"], pes=pes, memory=p["memory"], **_kw(x, p))),
              lambda x, p: [reference_conv2d(x["x"], x["w"], **_kw(x, p))], _tol,
              lambda p: 2 * p["n"] * p["oc"] * (p["c"] // p["groups"]) * p["k"] ** 2 *
              ((p["h"] + 2 * p["padding"] - p["dilation"] * (p["k"] - 1) - 1) // p["stride"] + 1) *
              ((p["w"] + 2 * p["padding"] - p["dilation"] * (p["k"] - 1) - 1) // p["stride"] + 1),
              "conv2d with groups, dilation, int8 per-channel scales and fused epilogue (kernel language); "
              "default: ResNet-50 stage 3, 3x3 128->128 on 28x28, batch 8, int8; memory: where the input and "
              "output live (shared: the shared SRAM, as a runtime keeps activations between layers)",
              {"dtype": ("fp32", "fp16", "int8"), "activation": ("none", "relu", "relu6"), "memory": ("dram", "shared")})]
