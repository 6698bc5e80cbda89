"""Dense layers on the matrix unit: matmul, batched matmul, fully connected (int8 and fp16).

One kernel in the kernel language, `_gemm_kernel`, computes every variant; `build_gemm` is its public form (a
runtime that launches the kernels itself builds them with it; `gemm` builds, runs and caches them for one
call). PE p is row group p % pm of the column PEs p // pm. With one batch, each PE keeps a row tile of A in
local memory and a pipelined loop walks its column tiles: the next weight tile (pre-packed [K, w] per column
tile) and scale/bias rows load while this one multiplies, the epilogue runs on the vector unit (int8: int32
-> fp32, times the per-column scale, plus bias, optionally requantized to int8) and the result leaves during
the next tile's multiply. With weights in DRAM and several row tiles, each weight tile is read once and the
row tiles stream instead. Several batches: (batch, column tile, row tile) units. Kernels are specialized to
their shapes (like Glow compiles a network for its shapes) and cached.

Numerics: int8 x int8 products accumulate exactly in int32; the dequantized output is
fp32(acc) * f32(x_scale * w_scale[n]) + bias[n], rounded at each step; requantization is
clamp(round_half_even(fma(y, f32(1 / out_scale), zero_point))), rounded once to fp32 (vcvt). fp16 x fp16 accumulates in fp32 in K order.
"""
from __future__ import annotations

import math

import numpy as np

from vnpu.errors import InvalidArgument

from . import lang, runner
from .library import OpSpec
from .reference import vcvt_to_int

WEIGHT_BUFFER = 1 << 20
BROADCAST_ROWS = 16    # the epilogue's scale and bias rows are replicated this many rows deep, not the tile's
                       # mt: the vector ops then walk the tile in chunks of this many rows, and the DMA engine
                       # writes mt / 16 times fewer bytes of replicas (it is the per-PE bottleneck otherwise)
MAX_EPILOGUE_CHUNKS = 48   # per per-column pass: 2 passes + 4 other ops per tile, two tiles: < 256 signals
EPILOGUES = ("raw", "dequant", "requant", "half")   # half: the fp32 result (+ bias, activation) as fp16


def _plan(M, K, N, eb, ob, pes, cols, local_bytes, epilogue):
    """Tile sizes: a column tile `nt` (a multiple of the array's columns, so PEs get even shares) and a row
    tile `mt`, as large as local memory allows (double-buffered weights, outputs and epilogue blocks)."""
    budget = local_bytes - 4096
    # several column tiles per PE, so the next tile's DMA and the last tile's epilogue overlap the multiply
    nt = max(1, min(N, cols * math.ceil(math.ceil(N / (max(1, pes) * 4)) / cols)))
    while True:
        wbytes = K * nt * eb
        mt = M
        while mt > 1:
            per_row = K * eb + 2 * nt * 4 + (2 * nt * ob) + (5 * nt * 4 if epilogue != "raw" else 0)
            if 2 * wbytes + mt * per_row <= budget:
                break
            mt = (mt + 1) // 2
        # A row, O[2] and Y[2] rows, and the epilogue's S[2], B[2] and F rows
        per_row = K * eb + 2 * nt * 4 + 2 * nt * ob + (5 * nt * 4 if epilogue != "raw" else 0)
        if wbytes <= WEIGHT_BUFFER and 2 * wbytes + mt * per_row <= budget:
            return nt, mt
        if nt == 1:
            raise InvalidArgument(f"gemm: K = {K} is too large for one weight tile in local memory "
                                  f"({local_bytes} bytes)")
        nt = max(1, nt // 2)


def _grid(M, K, N, eb, ob, pes, cols, local_bytes, epilogue, row_groups=True):
    """A 2-D grid of PEs: pm groups of rows x pn PEs sharing the columns. More row groups when M is large
    and the weights are on chip: each PE then loads less of A and still streams >= 128 rows per fold,
    while each weight tile is read by pm PEs (cheap from the SRAM ring, not from DRAM).
    Returns (pm, pn, Mg, nt, mt)."""
    pm = max(d for d in range(1, pes + 1) if pes % d == 0 and (d == 1 or (row_groups and M / d >= 128
                                                                         and N / cols >= pes // d)))
    pn = pes // pm
    Mg = math.ceil(M / pm)
    nt, mt = _plan(Mg, K, N, eb, ob, pn, cols, local_bytes, epilogue)
    return pm, pn, Mg, nt, mt


def _gemm_kernel(a, w, scale, bias, out, qp, stage, P: lang.constexpr, nt: lang.constexpr, mt: lang.constexpr,
                 pm: lang.constexpr, br: lang.constexpr, epilogue: lang.constexpr, act: lang.constexpr,
                 w_on_chip: lang.constexpr):
    """out[b] = epilogue(a[b] @ w[b]). PE p is row group p % pm and column PE p // pm. One batch: per row tile
    of its group, A stays in local memory while a pipelined loop walks the PE's column tiles (the next
    weight tile and scale/bias rows load while this one multiplies; the epilogue runs on the vector unit;
    results leave during the next multiply). Several batches: (batch, column tile, row tile) units."""
    B, M, K = a.shape
    N = out.shape[2]
    n_tiles, Mg = -(-N // nt), -(-M // pm)
    w = w.reshape(B * K * N)
    if stage is not None:       # A into the shared SRAM once, a slice per PE; then every PE reads it there
        share = -(-(-(-(B * M * K) // P)) // 64) * 64
        lo = lang.pe_id() * share
        lang.transfer(stage[lo:lo + share], a.reshape(B * M * K)[lo:lo + share])
        lang.barrier()
        a = stage.reshape(B, M, K)
    pe = lang.pe_id()
    pc, npc = pe // pm, P // pm      # the kernel is built for the P PEs it is launched on
    m_lo = pe % pm * Mg
    m_hi = lang.minimum(m_lo + Mg, M)
    if B == 1 and (w_on_chip or -(-Mg // mt) == 1):
        for m0 in range(m_lo, m_hi, mt):
            m_end = lang.minimum(m0 + mt, m_hi)
            at = lang.load(a[0, m0:m_end, :])
            for j in range(pc, n_tiles, npc, pipeline=True):
                _gemm_unit(at, _weights(w, 0, j, K, N, nt), scale, bias, out, qp, 0, j, m0, m_end, nt, mt, br,
                           epilogue, act)
    elif B == 1:                # weights from DRAM and several row tiles: each weight tile is read once
        at = lang.empty((mt, K), a.dtype)
        for j in range(pc, n_tiles, npc):
            wt = _weights(w, 0, j, K, N, nt)
            for m0 in range(m_lo, m_hi, mt, pipeline=True):
                m_end = lang.minimum(m0 + mt, m_hi)
                lang.load(a[0, m0:m_end, :], into=at)      # one A buffer: reloaded in place, not prefetched
                _gemm_unit(at, wt, scale, bias, out, qp, 0, j, m0, m_end, nt, mt, br, epilogue, act)
    else:
        m_tiles = -(-Mg // mt)
        for u in range(0, (B * n_tiles - pc + npc - 1) // npc * m_tiles, pipeline=True):
            item, m0 = pc + u // m_tiles * npc, m_lo + u % m_tiles * mt
            m_end = lang.minimum(m0 + mt, m_hi)
            at = lang.load(a[item // n_tiles, m0:m_end, :])
            _gemm_unit(at, _weights(w, item // n_tiles, item % n_tiles, K, N, nt), scale, bias, out, qp,
                       item // n_tiles, item % n_tiles, m0, m_end,
                       nt, mt, br, epilogue, act)


def _weights(w, b, j, K, N, nt):
    """Weight tile j of batch b: packed [K, width] contiguous (width nt, or what is left of N)."""
    o = b * (K * N) + j * (K * nt)
    return lang.load(w[o:lang.minimum(o + K * nt, (b + 1) * (K * N))]).reshape(K, lang.minimum(N - j * nt, nt))


def _gemm_unit(at, wt, scale, bias, out, qp, b, j, m0, m_end, nt, mt, br, epilogue, act):
    """One (batch b, column tile j, row tile) unit: multiply, epilogue, store."""
    res = lang.matmul(at, wt)
    if epilogue != "raw":
        res = res.astype("f32")
        for vec, op in ((scale, lang.mul), (bias, lang.add)):
            if vec is not None:         # per column: chunks of br rows against the row repeated br deep
                rep = lang.repeat(lang.load(vec[j * nt:j * nt + nt]), br)
                for c in lang.static_range(0, mt, br):
                    rows = res[c:min(c + br, mt)]
                    op(rows, rep[:rows.shape[0]], out=rows)
        if act is not None:
            getattr(lang, act)(res, out=res)
        if epilogue == "requant":
            res = res.astype("i8", qparam=qp)
        elif epilogue == "half":
            res = res.astype("f16")
    lang.store(out[b, m0:m_end, j * nt:j * nt + nt], res)


def _gemm(name, batch, M, K, N, dtype, epilogue, has_bias, pes, cols, local_bytes, stage=False, activation=None,
          row_groups=False):
    """Compile the gemm kernel for one shape. Arguments: a, w (packed), [scale, bias,] out, [qparam], [stage]."""
    eb = 1 if dtype == "i8" else 2
    ob = {"requant": 1, "half": 2}.get(epilogue, 4)
    pm, pn, Mg, nt, mt = _grid(M, K, N, eb, ob, pes, cols, local_bytes, epilogue, row_groups)
    np_dt = np.int8 if dtype == "i8" else np.float16
    out_dt = {"raw": np.int32 if dtype == "i8" else np.float32, "dequant": np.float32, "requant": np.int8,
              "half": np.float16}[epilogue]
    n_tiles = math.ceil(N / nt)
    kernel = lang.library_kernel(_gemm_kernel, name)
    while True:
        br = min(mt, max(BROADCAST_ROWS, math.ceil(mt / MAX_EPILOGUE_CHUNKS)))
        f32 = np.empty(N, np.float32)
        args = (np.empty((batch, M, K), np_dt), np.empty((batch, K * N), np_dt),
                f32 if (epilogue != "raw" and dtype == "i8") else None,
                f32 if (has_bias and epilogue != "raw") else None,
                np.empty((batch, M, N), out_dt), 0 if epilogue == "requant" else None,
                lang.shared(np.empty(batch * M * K, np_dt)) if stage else None, pes, nt, mt, pm, br, epilogue,
                activation, row_groups)
        try:
            image = kernel.compile(*args, config=_local_config(local_bytes, cols)).image
            break
        except lang.KernelError as e:       # the tiles of one unit do not fit local memory: fewer rows
            if "does not fit local memory" not in str(e) or mt == 1:
                raise InvalidArgument(f"gemm: {M}x{K} @ {K}x{N} does not fit local memory ({local_bytes} bytes): "
                                      f"{e}") from None
            mt = (mt + 1) // 2
    return image, {"nt": nt, "mt": mt, "items": batch * n_tiles, "grid": (pm, pn)}


def _local_config(local_bytes, cols):
    """A card config with this local memory (what the compiler allocates into)."""
    from vnpu.emulator.config import load_config
    key = (int(local_bytes), int(cols))
    if key not in _CONFIGS:
        base = load_config("reference")
        _CONFIGS[key] = load_config("reference", {"local_memory.bytes": int(local_bytes),
                                                  "matrix.cols": int(cols)}) if \
            (base.local_memory.bytes, base.matrix.cols) != key else base
    return _CONFIGS[key]


_CONFIGS = {}


def build_gemm(M, K, N, *, dtype="f16", epilogue="dequant", bias=True, activation=None, batch=1, pes=None,
               config=None, cols=None, local_bytes=None, stage=False, row_groups=False, name="gemm"):
    """Build the gemm module for one shape, for a caller that launches it itself (a serving runtime keeps
    its layers' kernels loaded and chains them on a queue). Returns (image, info); info["nt"] is the column
    tile the weights must be packed with (`pack_weights(w3, info["nt"])`), info["mt"] the row tile,
    info["grid"] the PE grid.

    Shape: out[b] = a[b] @ w[b], a [batch, M, K], w [batch, K, N]; dtype "i8" or "f16" (both operands).
    Epilogue: "raw" (int32 / fp32 accumulators), "dequant" (fp32: accumulators x per-column scale for i8,
    + bias, activation), "requant" (as dequant, then to int8 by the `qparam` argument: see `qparam`),
    "half" (as dequant, then rounded to fp16). activation: None, "relu" or "sigmoid" (not with "raw").
    The card: `config` (a card config: its PEs, matrix columns and local memory), or `cols` and
    `local_bytes` given; `pes` is how many PEs the kernel is launched on (all the card's by default).
    stage: A is first brought into the shared SRAM (then the `stage` argument is a shared buffer of
    batch*M*K elements); row_groups: PEs also split the rows (weights resident on chip).

    The kernel's arguments, in order: a, w (packed), [scale (i8, f32 [N])], [bias (f32 [N])], out
    ([batch, M, N] of int32/fp32, fp32, int8 or fp16 by epilogue), [qparam (requant)], [stage]."""
    if dtype not in ("i8", "f16"):
        raise InvalidArgument(f"build_gemm: dtype must be 'i8' or 'f16', got {dtype!r}")
    if epilogue not in EPILOGUES:
        raise InvalidArgument(f"build_gemm: epilogue must be one of {', '.join(EPILOGUES)}, got {epilogue!r}")
    if activation not in (None, "relu", "sigmoid") or (activation is not None and epilogue == "raw"):
        raise InvalidArgument(f"build_gemm: activation must be None, 'relu' or 'sigmoid' (not with a raw "
                              f"epilogue), got {activation!r} with {epilogue!r}")
    if config is not None:
        pes = config.pes if pes is None else pes
        cols = config.matrix.cols if cols is None else cols
        local_bytes = config.local_memory.bytes if local_bytes is None else local_bytes
    for what, v in (("M", M), ("K", K), ("N", N), ("batch", batch), ("pes", pes), ("cols", cols),
                    ("local_bytes", local_bytes)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise InvalidArgument(f"build_gemm: {what} must be a positive int (or come from config), got {v!r}")
    return _gemm(name, int(batch), int(M), int(K), int(N), dtype, epilogue, bool(bias), int(pes), int(cols),
                 int(local_bytes), stage=stage, activation=activation, row_groups=row_groups)


def pack_weights(w3, nt):
    """[B, K, N] -> the kernel's layout: per batch, column tiles of width nt, each [K, w] contiguous."""
    B, K, N = w3.shape
    parts = [np.ascontiguousarray(w3[:, :, n0:n0 + nt]).reshape(B, -1) for n0 in range(0, N, nt)]
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


def _plan_for(card, B, M, K, N, dtype, epilogue, use, row_groups=False):
    npes, cols, local = _config(card)
    eb = 1 if dtype == "i8" else 2
    ob = {"requant": 1, "half": 2}.get(epilogue, 4)
    return _grid(M, K, N, eb, ob, use, cols, local, epilogue, row_groups)[3:]


def qparam(scale, zero_point=0):
    """The vcvt parameter register value: fp32 scale bits low, int32 zero point high, as a signed int64."""
    from .builder import f32_bits
    v = f32_bits(scale) | ((int(zero_point) & 0xFFFFFFFF) << 32)
    return v - (1 << 64) if v >> 63 else v


def _config(card):
    cfg = card.config
    return cfg.pes, cfg.matrix.cols, cfg.local_memory.bytes


def gemm(card, a, w, *, scale=None, bias=None, out_scale=None, out_zero_point=0, activation=None, pes=None,
         trace=False, out_dtype=None, weights_on_chip=False, inputs_on_chip=False):
    """out[b] = a[b] @ w[b] on the matrix unit (weights_on_chip: w resident in the shared SRAM). a: [M, K] or [B, M, K]; w: [K, N] or [B, K, N]; int8 or fp16.
    int8: raw int32, or with `scale` (per-tensor float or per-column [N]) dequantized fp32 (+ bias [N]),
    or with `out_scale` requantized to int8. fp16: fp32 output (+ bias).
    inputs_on_chip: `a` is resident in the shared SRAM (the previous layer's output kept on chip, as a
    serving runtime chains layers), so the kernel reads it over the SRAM ring without staging it first."""
    a, w = np.asarray(a), np.asarray(w)
    if a.dtype != w.dtype or a.dtype not in (np.int8, np.float16):
        raise InvalidArgument(f"gemm: a and w must both be int8 or both fp16, got {a.dtype} and {w.dtype}")
    batched = a.ndim == 3
    if a.ndim not in (2, 3) or w.ndim != a.ndim:
        raise InvalidArgument(f"gemm: expected a [M, K] with w [K, N] or a [B, M, K] with w [B, K, N], got "
                              f"{a.shape} and {w.shape}")
    a3 = a if batched else a[None]
    w3 = w if batched else w[None]
    B, M, K = a3.shape
    if w3.shape[0] != B or w3.shape[1] != K:
        raise InvalidArgument(f"gemm: inner dimensions differ: a {a.shape} and w {w.shape}")
    N = w3.shape[2]
    dtype = "i8" if a.dtype == np.int8 else "f16"
    if activation not in (None, "relu", "sigmoid"):
        raise InvalidArgument(f"gemm: activation must be None, 'relu' or 'sigmoid', got {activation!r}")
    if activation is not None and dtype == "i8" and scale is None:
        raise InvalidArgument("gemm: an int8 activation needs the scale that dequantizes the accumulators")
    if dtype == "f16":
        epilogue = "dequant" if (bias is not None or activation) else "raw"
        if out_dtype == "fp16":
            epilogue = "half"
        col_scale = np.ones(N, np.float32)
    else:
        epilogue = "raw" if scale is None else ("requant" if out_scale is not None else "dequant")
        if out_dtype == "fp16" and scale is not None:
            epilogue = "half"
        col_scale = np.broadcast_to(np.asarray(scale if scale is not None else 1.0, np.float32), (N,)).copy()
    if bias is not None:
        bias = np.asarray(bias, np.float32)
        if bias.shape != (N,):
            raise InvalidArgument(f"gemm: bias must have shape ({N},), got {bias.shape}")
        if dtype == "i8" and scale is None:
            raise InvalidArgument("gemm: an int8 bias needs the scale that dequantizes the accumulators")
    out_dt = {"raw": np.int32 if dtype == "i8" else np.float32, "dequant": np.float32, "requant": np.int8,
              "half": np.float16}[epilogue]
    if min(B, M, N) == 0:                 # an empty result (PyTorch returns it too): nothing to compute
        out = np.zeros((B, M, N), out_dt)
        return (out if batched else out[0]), runner.nothing(card, "gemm", pes)
    if K == 0:
        # an empty sum: every accumulator is 0 (then scale, bias, activation, requantization as usual, like
        # PyTorch's linear with in_features = 0 gives the bias): one zero term computes exactly that
        a3 = np.zeros((B, M, 1), a3.dtype)
        w3 = np.zeros((B, 1, N), w3.dtype)
        K = 1
    npes, cols, local = _config(card)
    use = npes if pes is None else len(pes)
    a_bytes = B * M * K * (1 if dtype == "i8" else 2)
    stage = use > 1 and not inputs_on_chip and a_bytes <= card.config.shared_sram.bytes // 2
    key = ("gemm-lang", B, M, K, N, dtype, epilogue, bias is not None, use, cols, local, stage, activation,
           weights_on_chip)
    built = {}

    def build():
        img, info = _gemm("gemm", B, M, K, N, dtype, epilogue, bias is not None, use, cols, local, stage=stage,
                          activation=activation, row_groups=weights_on_chip)
        built.update(info)
        return img
    args = [a3, w3]
    if epilogue != "raw":
        if dtype == "i8":
            args.append(col_scale)
        if bias is not None:
            args.append(bias)
    args.append(runner.Out((B, M, N), out_dt))
    if epilogue == "requant":
        args.append(qparam(np.float32(1.0) / np.float32(out_scale), out_zero_point))
    if stage:
        args.append(runner.Scratch(a_bytes, memory="shared"))
    args[1] = pack_weights(w3, built.get("nt") or _plan_for(card, B, M, K, N, dtype, epilogue, use,
                                                             weights_on_chip)[0])
    if weights_on_chip:      # resident weights in the shared SRAM, as a serving runtime keeps them
        args[1] = runner.OnChip(args[1])
    if inputs_on_chip:
        args[0] = runner.OnChip(a3)
    (out,), result = runner.run(card, key, build, "gemm", args, pes=pes, trace=trace)
    return (out if batched else out[0]), result


# --- numpy references --------------------------------------------------------------------------------
def _activate(y, activation):
    if activation == "relu":              # vrelu: NaN passes through
        return np.where(y < 0, np.float32(0), y).astype(np.float32)
    if activation == "sigmoid":
        with np.errstate(over="ignore"):
            return (1.0 / (1.0 + np.exp(-y.astype(np.float64)))).astype(np.float32)
    return y


def reference_gemm(a, w, scale=None, bias=None, out_scale=None, out_zero_point=0, activation=None):
    a, w = np.asarray(a), np.asarray(w)
    if a.dtype == np.int8:
        acc = (a.astype(np.int64) @ w.astype(np.int64)).astype(np.int32)
        if scale is None:
            return acc
        y = acc.astype(np.float32) * np.broadcast_to(np.asarray(scale, np.float32), (w.shape[-1],))
        if bias is not None:
            y = y + np.asarray(bias, np.float32)
        y = _activate(y, activation)
        if out_scale is None:
            return y.astype(np.float32)
        return vcvt_to_int(y, np.float32(1.0) / np.float32(out_scale), out_zero_point)
    a32, w32 = a.astype(np.float32), w.astype(np.float32)
    out = np.zeros(a.shape[:-1] + (w.shape[-1],), np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        for k in range(a.shape[-1]):       # fp32 in K order, like the unit
            out += a32[..., k:k + 1] * w32[..., k:k + 1, :]
    if bias is not None:
        out = out + np.asarray(bias, np.float32)
    out = _activate(out, activation)
    if out_scale is not None:          # the fp16 layer's fp32 result requantized to int8 (vcvt)
        return vcvt_to_int(out, np.float32(1.0) / np.float32(out_scale), out_zero_point)
    return out


def linear(card, x, weight, bias=None, *, x_scale=None, w_scale=None, out_scale=None, out_zero_point=0,
           activation=None, pes=None):
    """A fully connected layer y = act(x @ weight.T + bias) (PyTorch's layout: weight [N, K]).
    int8: x and weight int8 with x_scale (per tensor) and w_scale (per tensor or per output row [N]):
    y = act(acc * x_scale * w_scale + bias), fp32, or int8 with out_scale (the activation before the
    requantization, in the epilogue). fp16: x and weight fp16, fp32 y. activation: None, "relu", "sigmoid"."""
    x, weight = np.asarray(x), np.asarray(weight)
    if weight.ndim != 2 or x.ndim != 2 or x.shape[1] != weight.shape[1]:
        raise InvalidArgument(f"linear: x [M, K] and weight [N, K] expected, got {x.shape} and {weight.shape}")
    wt = np.ascontiguousarray(weight.T)
    if x.dtype == np.int8:
        if x_scale is None or w_scale is None:
            raise InvalidArgument("linear: int8 inputs need x_scale and w_scale")
        scale = (np.float32(x_scale) * np.asarray(w_scale, np.float32)).astype(np.float32)
        return gemm(card, x, wt, scale=scale, bias=bias, out_scale=out_scale, out_zero_point=out_zero_point,
                    activation=activation, pes=pes)
    return gemm(card, x, wt, bias=bias, activation=activation, pes=pes)


# --- the op registry ---------------------------------------------------------------------------------
def _inputs(rng, p):
    shape_a = (p["batch"], p["m"], p["k"]) if p["batch"] > 1 else (p["m"], p["k"])
    shape_w = (p["batch"], p["k"], p["n"]) if p["batch"] > 1 else (p["k"], p["n"])
    if p["dtype"] == "int8":
        d = {"a": rng.integers(-128, 128, shape_a).astype(np.int8), "w": rng.integers(-128, 128, shape_w).astype(np.int8)}
    else:
        d = {"a": rng.standard_normal(shape_a).astype(np.float16), "w": rng.standard_normal(shape_w).astype(np.float16)}
    return d


def _fc_inputs(rng, p):
    d = _inputs(rng, dict(p, batch=1))
    d["scale"] = (rng.random(p["n"]) * 1e-3 + 1e-4).astype(np.float32)
    d["bias"] = rng.standard_normal(p["n"]).astype(np.float32)
    return d


def _tol(p):
    return (0, 0) if p["dtype"] == "int8" else (1e-4, 1e-3)


OPS = [
    OpSpec("matmul", dict(m=64, k=256, n=256, dtype="int8", batch=1), _inputs,
           lambda card, x, p, pes: (lambda o, r: ([o], r))(*gemm(card, x["a"], x["w"], pes=pes)),
           lambda x, p: [reference_gemm(x["a"], x["w"])], _tol,
           lambda p: 2 * p["batch"] * p["m"] * p["k"] * p["n"],
           "a [m, k] @ w [k, n] (batch > 1: batched) on the matrix unit; int8 -> int32, fp16 -> fp32",
           {"dtype": ("int8", "fp16")}),
    OpSpec("fc", dict(m=256, k=512, n=512, dtype="int8"), _fc_inputs,
           lambda card, x, p, pes: (lambda o, r: ([o], r))(*gemm(
               card, x["a"], x["w"], scale=x["scale"] if p["dtype"] == "int8" else None, bias=x["bias"], pes=pes)),
           lambda x, p: [reference_gemm(x["a"], x["w"], scale=x["scale"] if p["dtype"] == "int8" else None,
                                        bias=x["bias"])],
           lambda p: (1e-5, 1e-4) if p["dtype"] == "int8" else (1e-4, 1e-3),
           lambda p: 2 * p["m"] * p["k"] * p["n"],
           "fully connected: int8 with per-column scales and bias (fp32 out), or fp16 with bias",
           {"dtype": ("int8", "fp16")}),
]
