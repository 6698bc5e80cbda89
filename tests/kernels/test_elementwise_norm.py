"""Elementwise, quantization, concat, transpose, layer_norm and softmax kernels: numerics against the numpy
references over many shapes (tile remainders, size-1 and empty dims, the largest single tile of the tiny
card), all under the race sanitizer, on several PEs, with DMA overlapping compute in the trace, and bad
input rejected on the host."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import vnpu
from vnpu.emulator.card import Card
from vnpu.emulator.state import (EV_END, EV_KIND, EV_PE, EV_START, EV_TRACK, K_OP, P_DMA, P_VOPS, TRACK_DMA0,
                                 TRACK_VECTOR)
from vnpu.kernels import elementwise as E, norm as N, runner

CARD = Card("tiny")
SETTINGS = dict(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.data_too_large])
PES = st.sampled_from([None, (0,), (3,), (1, 2), (0, 1, 3)])
STREAM_OPS = ("add", "mul", "relu", "sigmoid", "tanh", "gelu")


@pytest.fixture
def card():
    return CARD


def same(out, ref):
    """Bit-identical, except that any NaN matches any NaN."""
    assert out.shape == ref.shape and out.dtype == ref.dtype, (out.shape, out.dtype, ref.shape, ref.dtype)
    if out.dtype.kind == "f":
        nan = np.isnan(out)
        assert np.array_equal(nan, np.isnan(ref)), "NaN positions differ"
        u = np.dtype(f"u{out.dtype.itemsize}")
        bad = (out.view(u) != ref.view(u)) & ~nan
        assert not bad.any(), f"{bad.sum()} elements differ, first at {np.argwhere(bad)[0]}: " \
                              f"{out[tuple(np.argwhere(bad)[0])]} vs {ref[tuple(np.argwhere(bad)[0])]}"
    else:
        assert np.array_equal(out, ref)


def spans(result, pe, tracks):
    ev = result.events
    m = (ev[:, EV_PE] == pe) & (ev[:, EV_KIND] == K_OP) & np.isin(ev[:, EV_TRACK], tracks)
    return ev[m][:, [EV_START, EV_END]]


def overlap(a, b):
    """Cycles during which a span of `a` and a span of `b` run at once (summed over pairs)."""
    return int(sum(max(0, min(a1, b1) - max(a0, b0)) for a0, a1 in a for b0, b1 in b))


def floats(rng, shape, dtype, scale=3.0, specials=False):
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    if specials and x.size:
        flat = x.reshape(-1)
        idx = rng.integers(0, flat.size, min(flat.size, 4))
        flat[idx] = rng.choice(np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e30 if dtype == np.float32 else 6e4],
                                        dtype=dtype), len(idx))
    return x


@st.composite
def stream_shape(draw, T):
    n = draw(st.one_of(st.integers(0, 70), st.integers(0, 4 * T + 200),
                       st.sampled_from([1, T - 1, T, T + 1, 2 * T, 4 * T + 1])))
    kind = draw(st.sampled_from(["flat", "row", "col", "2d"]))
    if kind == "flat":
        return (n,)
    if kind == "row":
        return (1, n)
    if kind == "col":
        return (n, 1)
    a = draw(st.integers(1, 9))
    return (a, n // a)


# --- numerics -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", STREAM_OPS)
@settings(**SETTINGS)
@given(data=st.data())
def test_streaming_ops_match_reference(op, data):
    dtype = data.draw(st.sampled_from([np.float32, np.float16]), "dtype")
    shape = data.draw(stream_shape(E.tile_elements(CARD, op, dtype)), "shape")
    pes = data.draw(PES, "pes")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), "seed"))
    specials = data.draw(st.booleans(), "specials")
    a = floats(rng, shape, dtype, specials=specials)
    with np.errstate(all="ignore"):
        if op in E.BINARY:
            b = floats(rng, shape, dtype, specials=specials)
            out, res = E.HOST[op](CARD, a, b, pes=pes)
            ref = E.REFERENCES[op](a, b)
        else:
            out, res = E.HOST[op](CARD, a, pes=pes)
            ref = E.REFERENCES[op](a)
    assert res.pes == (tuple(range(4)) if pes is None else tuple(pes))
    rtol, atol = E.tolerance(op, dtype)
    if rtol == 0 and atol == 0:
        same(out, ref)
    else:
        assert out.shape == ref.shape and out.dtype == ref.dtype
        np.testing.assert_allclose(out.astype(np.float64), ref.astype(np.float64), rtol=rtol, atol=atol)


@settings(**SETTINGS)
@given(data=st.data())
def test_quantize_dequantize_match_reference(data):
    shape = data.draw(stream_shape(E.tile_elements(CARD, "quantize")), "shape")
    scale = data.draw(st.one_of(st.sampled_from([1.0, 0.1, 1 / 3, 0.05, 2.0 ** -7, 7.0]),
                                st.floats(1e-3, 100.0)), "scale")
    zp = data.draw(st.integers(-128, 127), "zero_point")
    pes = data.draw(PES, "pes")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), "seed"))
    x = floats(rng, shape, np.float32, scale=100 * scale, specials=data.draw(st.booleans(), "specials"))
    if x.size:   # values on the rounding ties: x * f32(1/scale) lands on .5
        x.reshape(-1)[: min(x.size, 8)] = (np.arange(min(x.size, 8)) - 4 + 0.5) * np.float32(scale)
    q, _ = E.quantize(CARD, x, scale, zp, pes=pes)
    same(q, E.reference_quantize(x, scale, zp))
    qq = rng.integers(-128, 128, shape).astype(np.int8)
    y, _ = E.dequantize(CARD, qq, scale, zp, pes=pes)
    same(y, E.reference_dequantize(qq, scale, zp))


def test_quantize_uses_the_reciprocal_the_card_multiplies_by(card):
    """x / scale and x * f32(1/scale) round differently for some x; the card (and the reference) do the latter,
    the product rounded once to fp32 before round-half-even (vcvt's fma)."""
    from vnpu.kernels.reference import fma_f32
    scale = 0.1
    inv = np.float32(1) / np.float32(0.1)
    x = np.float32(np.arange(-1000, 1000) * np.float32(0.05))
    q, _ = E.quantize(card, x, scale)
    assert np.array_equal(q, np.clip(np.rint(fma_f32(x, inv, 0).astype(np.float64)), -128, 127).astype(np.int8))
    assert np.array_equal(q, E.reference_quantize(x, scale))
    q3, _ = E.quantize(card, np.array([np.nan, np.inf, -np.inf, 1e9], np.float32), 1.0, 5)
    assert q3.tolist() == [0, 127, -128, 127]


_DTYPES = st.sampled_from([np.float32, np.float16, np.int8, np.int32, np.float64, np.uint16])


@settings(**SETTINGS)
@given(data=st.data())
def test_concat_matches_numpy(data):
    dt = np.dtype(data.draw(_DTYPES, "dtype"))
    rows = data.draw(st.one_of(st.integers(0, 12), st.integers(0, 3000)), "rows")
    widths = data.draw(st.lists(st.one_of(st.integers(0, 5), st.integers(0, 300)), min_size=1, max_size=6), "widths")
    pes = data.draw(PES, "pes")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), "seed"))
    xs = [rng.integers(-100, 100, (rows, w)).astype(dt) for w in widths]
    out, res = E.concat(CARD, xs, pes=pes)
    same(out, E.reference_concat(xs))
    assert res.summary()["bytes"]["local_write"] == 0          # DRAM -> DRAM, no detour through local memory
    assert res.summary()["vector_elements"] == 0


@settings(**SETTINGS)
@given(data=st.data())
def test_transpose_matches_numpy(data):
    dt = np.dtype(data.draw(_DTYPES, "dtype"))
    T = E.transpose_tile(CARD, dt.itemsize)
    dim = st.one_of(st.integers(0, 20), st.integers(1, 2 * T + 40), st.sampled_from([1, T - 1, T, T + 1]))
    R, C = data.draw(dim, "rows"), data.draw(dim, "cols")
    pes = data.draw(PES, "pes")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), "seed"))
    x = rng.integers(-100, 100, (R, C)).astype(dt)
    out, res = E.transpose(CARD, x, pes=pes)
    same(out, E.reference_transpose(x))
    assert res.summary()["vector_elements"] == 0


def test_transpose_is_one_descriptor_per_block_not_per_element(card):
    x = np.arange(300 * 200, dtype=np.float32).reshape(300, 200)
    out, res = E.transpose(card, x, pes=(0,), trace=True)
    assert np.array_equal(out, x.T)
    T = E.transpose_tile(card, 4)
    blocks = -(-300 // T) * -(-200 // T)
    dmas = spans(res, 0, [TRACK_DMA0, TRACK_DMA0 + 1])
    assert len(dmas) == 3 * blocks         # per block: read it, transpose it in local memory, write it


@st.composite
def norm_shape(draw, n_params):
    big = N.max_row_length(CARD, n_params)
    D = draw(st.one_of(st.integers(0, 40), st.integers(100, 3000), st.sampled_from([1, big])))
    R = draw(st.one_of(st.integers(0, 12), st.integers(0, 80), st.sampled_from([1, 3000 // max(D, 1) + 1])))
    return R, D


@settings(**SETTINGS)
@given(data=st.data())
def test_layer_norm_is_bit_exact(data):
    affine = data.draw(st.sampled_from(["none", "gamma", "beta", "both"]), "affine")
    n_params = {"none": 0, "gamma": 1, "beta": 1, "both": 2}[affine]
    R, D = data.draw(norm_shape(n_params))
    pes = data.draw(PES, "pes")
    eps = data.draw(st.sampled_from([1e-5, 1e-12, 0.1]), "eps")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), "seed"))
    x = (rng.standard_normal((R, D)) * rng.uniform(0.01, 100) + rng.uniform(-50, 50)).astype(np.float32)
    g = rng.standard_normal(D).astype(np.float32) if affine in ("gamma", "both") else None
    b = rng.standard_normal(D).astype(np.float32) if affine in ("beta", "both") else None
    out, _ = N.layer_norm(CARD, x, g, b, eps=eps, pes=pes)
    same(out, N.reference_layer_norm(x, g, b, eps))
    if R and D > 1:   # and it is a layer norm
        ref64 = (x - x.mean(-1, keepdims=True, dtype=np.float64)) / np.sqrt(x.var(-1, dtype=np.float64)[:, None] + eps)
        ref64 = ref64 * (1 if g is None else g) + (0 if b is None else b)
        np.testing.assert_allclose(out, ref64, rtol=1e-3, atol=5e-3)


@settings(**SETTINGS)
@given(data=st.data())
def test_softmax_matches_reference(data):
    R, D = data.draw(norm_shape(0))
    pes = data.draw(PES, "pes")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), "seed"))
    x = (rng.standard_normal((R, D)) * rng.uniform(0.1, 30)).astype(np.float32)
    out, _ = N.softmax(CARD, x, pes=pes)
    ref = N.reference_softmax(x)
    rtol, atol = N.tolerance("softmax")
    assert out.shape == ref.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=rtol, atol=atol)
    if R and D:
        np.testing.assert_allclose(out.sum(-1, dtype=np.float64), 1.0, rtol=1e-4)


def test_row_sums_run_in_index_order(card):
    """vsum adds in index order in fp64: 2**60 + 1 loses the 1 before -2**60 cancels, so the row's mean is 0
    (numpy's pairwise sum would keep the 1). The references follow the card."""
    x = np.zeros((2, 16), np.float32)
    x[:, 0], x[:, 1], x[:, 8] = 2.0 ** 60, 1.0, -2.0 ** 60
    out, _ = N.layer_norm(card, x)
    same(out, N.reference_layer_norm(x))
    assert out[0, 2] == 0.0                   # centred on a mean of exactly 0
    sm, _ = N.softmax(card, np.log(np.abs(x) + 1))
    np.testing.assert_allclose(sm, N.reference_softmax(np.log(np.abs(x) + 1)), rtol=1e-6)


# --- the largest single tile, and the first size that needs two -------------------------------------------------
@pytest.mark.parametrize("op", ["add", "relu", "quantize", "dequantize"])
def test_largest_single_tile_fills_local_memory(card, op):
    local = card.config.local_memory.bytes
    in_dts = {"add": ["f32", "f32"], "relu": ["f32"], "quantize": ["f32"], "dequantize": ["i8"]}[op]
    out_dt = {"quantize": "i8", "dequantize": "f32"}.get(op, "f32")
    T = E.tile_elements(card, op)
    per = 2 * (sum(E.EB[d] for d in in_dts) + E.EB[out_dt])
    assert E.RESERVED + per * T <= local                       # T fits (double-buffered) ...
    capped = T + E.ALIGN > E.TILE_CAP // max(E.EB[d] for d in in_dts + [out_dt])
    assert capped or E.RESERVED + per * (T + E.ALIGN) > local  # ... and the next tile size would not
    rng = np.random.default_rng(1)
    for n, tiles in ((T, 1), (T + 1, 2)):
        if op == "dequantize":
            x = rng.integers(-128, 128, n).astype(np.int8)
            out, res = E.dequantize(card, x, 0.5, 1, pes=(2,), trace=True)
            same(out, E.reference_dequantize(x, 0.5, 1))
        elif op == "quantize":
            x = floats(rng, n, np.float32, 50)
            out, res = E.quantize(card, x, 0.5, 1, pes=(2,), trace=True)
            same(out, E.reference_quantize(x, 0.5, 1))
        else:
            xs = [floats(rng, n, np.float32) for _ in in_dts]
            out, res = E.HOST[op](card, *xs, pes=(2,), trace=True)
            same(out, E.REFERENCES[op](*xs))
        assert len(spans(res, 0, [TRACK_VECTOR])) == tiles


def test_longest_rows_fit_and_one_more_is_refused(card):
    rng = np.random.default_rng(2)
    for n_params in (0, 2):
        D = N.max_row_length(card, n_params)
        x = rng.standard_normal((3, D)).astype(np.float32)
        g = b = rng.standard_normal(D).astype(np.float32) if n_params else None
        out, _ = N.layer_norm(card, x, g, b)
        same(out, N.reference_layer_norm(x, g, b))
        x2 = np.zeros((1, D + 16), np.float32)
        g2 = np.zeros(D + 16, np.float32) if n_params else None
        with pytest.raises(vnpu.InvalidArgument, match="do not fit local memory"):
            N.layer_norm(card, x2, g2, g2)
    out, _ = N.softmax(card, x[:, :N.max_row_length(card)])
    np.testing.assert_allclose(out, N.reference_softmax(x[:, :N.max_row_length(card)]), rtol=1e-6)
    with pytest.raises(vnpu.InvalidArgument, match="do not fit local memory"):
        N.softmax(card, np.zeros((1, N.max_row_length(card) + 16), np.float32))


@pytest.mark.parametrize("fn", [
    lambda c: E.add(c, np.zeros(0, np.float32), np.zeros(0, np.float32)),
    lambda c: E.gelu(c, np.zeros((3, 0), np.float16)),
    lambda c: E.quantize(c, np.zeros((0, 4), np.float32), 0.1),
    lambda c: E.dequantize(c, np.zeros(0, np.int8), 0.1),
    lambda c: E.concat(c, [np.zeros((0, 3), np.float32), np.zeros((0, 2), np.float32)]),
    lambda c: E.concat(c, [np.zeros((4, 0), np.float32)]),
    lambda c: E.transpose(c, np.zeros((0, 5), np.int8)),
    lambda c: N.layer_norm(c, np.zeros((0, 8), np.float32)),
    lambda c: N.softmax(c, np.zeros((5, 0), np.float32)),
])
def test_empty_inputs_launch_and_return_empty(card, fn):
    out, res = fn(card)
    assert out.size == 0 and res.cycles > 0


# --- sanitizer, PEs, double buffering -----------------------------------------------------------------------------
def test_sanitizer_is_on_and_catches_a_missing_wait(card):
    """The kernels run sanitized (runner's default): delete the compiler's waits for the stores from the relu
    kernel's assembly (a later tile then overwrites the output buffer a store still reads), and the launch is
    a RaceError."""
    import re
    T = E.tile_elements(card, "relu")
    a = np.ones(3 * T, np.float32)
    from vnpu.kernels import lang
    text = lang.library_kernel(E._unary_stream, "relu").asm(np.empty(0, np.float32), np.empty(0, np.float32), 0,
                                                            T, "relu", config=card.config)
    store_sems = set(re.findall(rf"dma e{E.store_engine(card)}, .*, (s\d+)\s*(?:;.*)?$", text, re.M))
    assert store_sems
    broken = "\n".join(line for line in text.splitlines()
                       if not (line.strip().startswith("wait") and line.split()[1].rstrip(",") in store_sems))
    image = vnpu.assemble(broken)
    with pytest.raises(vnpu.RaceError, match="race"):
        runner.run(card, ("test-missing-wait", T), lambda: image, "relu",
                   [a, runner.Out((a.size,), np.float32), a.size], pes=(0,))
    out, _ = E.relu(card, a, pes=(0,))        # the real kernel, same data: no race
    same(out, a)


@pytest.mark.parametrize("op", ["add", "layer_norm", "softmax", "concat", "transpose"])
def test_every_pe_takes_a_share(card, op):
    rng = np.random.default_rng(3)
    if op == "add":
        a = floats(rng, 50000, np.float32)
        out, res = E.add(card, a, a)
        same(out, a + a)
    elif op in ("layer_norm", "softmax"):
        x = floats(rng, (41, 300), np.float32)
        out, res = getattr(N, op)(card, x)
        np.testing.assert_allclose(out, getattr(N, f"reference_{op}")(x), rtol=1e-6)
    elif op == "concat":
        xs = [floats(rng, (41, w), np.float32) for w in (3, 30)]
        out, res = E.concat(card, xs)
        same(out, np.concatenate(xs, -1))
    else:
        x = floats(rng, (50, 300), np.float32)
        out, res = E.transpose(card, x)
        same(out, x.T)
    assert res.pes == (0, 1, 2, 3)
    work = res.pe_stats[:, P_DMA if op in ("concat", "transpose") else P_VOPS]
    assert (work > 0).all(), work
    if op == "add":
        assert res.pe_stats[:, P_VOPS].tolist() == [12544, 12544, 12544, 12368]


def test_trace_shows_loads_overlapping_compute_in_a_large_add(card):
    """Double buffering: while the vector unit adds tile t, engine e0 is already loading tile t+1."""
    T = E.tile_elements(card, "add")
    n = 4 * 4 * T                                     # four tiles on each of the four PEs
    rng = np.random.default_rng(4)
    a, b = floats(rng, n, np.float32), floats(rng, n, np.float32)
    out, res = E.add(card, a, b, trace=True)
    same(out, a + b)
    assert res.summary()["trace_events_dropped"] == 0
    for pe in range(4):
        vec = spans(res, pe, [TRACK_VECTOR])
        loads = spans(res, pe, [TRACK_DMA0])
        stores = spans(res, pe, [TRACK_DMA0 + 1])
        assert len(vec) == 4 and len(loads) == 2 * 4 and len(stores) == 4
        # every tile but the last is computed while a load of the next tile runs
        overlapped = [v for v in vec if overlap([v], loads) > 0]
        assert len(overlapped) >= 3, (pe, vec.tolist(), loads.tolist())
        assert overlap(vec, loads) > 0.5 * (vec[:-1, 1] - vec[:-1, 0]).sum()
        # and stores run on the other engine at the same time as loads
        assert overlap(loads, stores) > 0
    # so the launch takes less than the PE's DMA and vector work back to back
    serial = max(int((spans(res, p, [TRACK_VECTOR, TRACK_DMA0, TRACK_DMA0 + 1]) @ [-1, 1]).sum()) for p in range(4))
    assert res.cycles < serial


@pytest.mark.parametrize("op", ["layer_norm", "softmax", "transpose"])
def test_blocks_are_double_buffered_too(card, op):
    rng = np.random.default_rng(5)
    if op == "transpose":
        x = floats(rng, (600, 700), np.float32)
        out, res = E.transpose(card, x, trace=True)
        same(out, x.T)
        for pe in range(4):          # reading/transposing on e0 while e1 writes the previous block
            assert overlap(spans(res, pe, [TRACK_DMA0]), spans(res, pe, [TRACK_DMA0 + 1])) > 0
        return
    x = floats(rng, (1200, 512), np.float32)   # 32-row blocks: ~10 per PE
    out, res = getattr(N, op)(card, x, trace=True)
    np.testing.assert_allclose(out, getattr(N, f"reference_{op}")(x), rtol=1e-6)
    for pe in range(4):
        assert overlap(spans(res, pe, [TRACK_VECTOR]), spans(res, pe, [TRACK_DMA0])) > 0


def test_one_dma_engine_per_pe(card):
    """The reference card has one DMA engine per PE: loads and stores then share e0's in-order queue."""
    one = Card("tiny", overrides={"dma.engines_per_pe": 1})
    assert E.store_engine(one) == 0 and E.store_engine(card) == 1
    rng = np.random.default_rng(7)
    a = floats(rng, 3 * E.tile_elements(one, "add") + 5, np.float32)
    out, res = E.add(one, a, a, pes=(0,), trace=True)
    same(out, a + a)
    assert overlap(spans(res, 0, [TRACK_VECTOR]), spans(res, 0, [TRACK_DMA0])) > 0
    x = floats(rng, (300, 200), np.float32)
    same(E.transpose(one, x)[0], x.T)
    same(N.layer_norm(one, x)[0], N.reference_layer_norm(x))
    np.testing.assert_allclose(N.softmax(one, x)[0], N.reference_softmax(x), rtol=1e-6)


# --- bad input --------------------------------------------------------------------------------------------------------
f32 = np.zeros((4, 3), np.float32)


@pytest.mark.parametrize("call, match", [
    (lambda c: E.add(c, f32, np.zeros((3, 4), np.float32)), r"same shape, got \(4, 3\) and \(3, 4\)"),
    (lambda c: E.mul(c, f32, f32.astype(np.float16)), "same dtype"),
    (lambda c: E.add(c, f32.astype(np.int32), f32.astype(np.int32)), "a must be a float32 or float16 array"),
    (lambda c: E.mul(c, f32, [1, 2]), "b must be a float32 or float16"),
    (lambda c: E.relu(c, f32.astype(np.float64)), "x must be a float32 or float16 array, got dtype float64"),
    (lambda c: E.sigmoid(c, "abc"), "float32 or float16"),
    (lambda c: E.quantize(c, f32.astype(np.float16), 0.1), "x must be a float32 array"),
    (lambda c: E.quantize(c, f32, 0.0), "scale must be a positive finite"),
    (lambda c: E.quantize(c, f32, -1.0), "scale must be a positive finite"),
    (lambda c: E.quantize(c, f32, float("nan")), "scale must be a positive finite"),
    (lambda c: E.quantize(c, f32, 1e-45), "1/scale"),
    (lambda c: E.quantize(c, f32, "0.1"), "scale must be a number"),
    (lambda c: E.quantize(c, f32, 0.1, 128), r"zero_point must be in \[-128, 127\]"),
    (lambda c: E.quantize(c, f32, 0.1, 1.5), "zero_point must be an integer"),
    (lambda c: E.dequantize(c, f32.astype(np.uint8), 0.1), "q must be an int8 array"),
    (lambda c: E.dequantize(c, f32.astype(np.int8), 0.1, -129), "zero_point"),
    (lambda c: E.concat(c, []), "non-empty list"),
    (lambda c: E.concat(c, f32), "non-empty list"),
    (lambda c: E.concat(c, [f32, np.zeros(3, np.float32)]), r"arrays\[1\] must be 2-D"),
    (lambda c: E.concat(c, [f32, np.zeros((5, 3), np.float32)]), r"arrays\[1\] has 5 rows"),
    (lambda c: E.concat(c, [f32, f32.astype(np.float16)]), r"arrays\[1\] has dtype float16"),
    (lambda c: E.concat(c, [f32, f32], axis=0), "only the last axis"),
    (lambda c: E.concat(c, [f32] * 14), "at most 13 arrays"),
    (lambda c: E.transpose(c, np.zeros((2, 3, 4))), "x must be 2-D"),
    (lambda c: E.transpose(c, np.array([["a"]], dtype=object)), "not a plain numeric dtype"),
    (lambda c: N.layer_norm(c, np.zeros(5, np.float32)), r"x must be a 2-D array \[rows, features\]"),
    (lambda c: N.layer_norm(c, f32.astype(np.float16)), "x must be float32"),
    (lambda c: N.layer_norm(c, f32, gamma=np.ones(4, np.float32)), r"gamma must have shape \(3,\)"),
    (lambda c: N.layer_norm(c, f32, beta=np.ones(3)), "beta must be float32"),
    (lambda c: N.layer_norm(c, f32, eps=-1.0), "eps must be a finite non-negative"),
    (lambda c: N.softmax(c, np.zeros((2, 3, 4), np.float32)), "x must be a 2-D array"),
    (lambda c: N.softmax(c, f32.astype(np.int8)), "x must be float32"),
])
def test_bad_input_raises_invalid_argument(card, call, match):
    before = card.dram_used
    with pytest.raises(vnpu.InvalidArgument, match=match):
        call(card)
    assert card.dram_used == before


# --- the registry -----------------------------------------------------------------------------------------------------
SMALL = {"rows": 37, "d": 50, "n": 1000, "cols": 45, "w0": 5, "w1": 0, "w2": 7}


def test_registered_ops_run_and_match_their_references(card):
    specs = {s.name: s for s in E.OPS + N.OPS if s.name != "local_response_norm"}   # tests/ops/test_lrn.py
    assert set(specs) == {"add", "mul", "relu", "sigmoid", "tanh", "gelu", "quantize", "dequantize", "concat",
                          "transpose", "layer_norm", "softmax"}
    rng = np.random.default_rng(6)
    for name, spec in specs.items():
        for dtype in spec.choices.get("dtype", [None]):
            p = dict(spec.params, **{k: v for k, v in SMALL.items() if k in spec.params})
            if dtype:
                p["dtype"] = dtype
            inputs = spec.make_inputs(rng, p)
            outs, res = spec.run(card, inputs, p, (0, 2))
            refs = spec.reference(inputs, p)
            rtol, atol = spec.tolerance(p)
            assert res.pes == (0, 2) and len(outs) == len(refs) == 1, name
            for o, r in zip(outs, refs):
                assert o.shape == r.shape and o.dtype == r.dtype, name
                if rtol == 0 and atol == 0:
                    same(o, r)
                else:
                    np.testing.assert_allclose(o.astype(np.float64), r.astype(np.float64), rtol=rtol, atol=atol)
