"""DLRM dot interaction and conv2d kernels: the card equals the numpy references bit for bit (fp16 inputs:
fp32 sums in K order; fp32 inputs: exact products, fp64 sums in K order, one rounding) over many shapes,
and stays within the stated bound of plain fp32 / float64 math; every launch runs under the race sanitizer
on several PEs; bad input raises InvalidArgument."""
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import vnpu
from vnpu.emulator.card import Card
from vnpu.kernels import conv as cv
from vnpu.kernels import interaction as di
from vnpu.kernels.library import all_ops

SETTINGS = dict(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PES = st.sampled_from([None, (0,), (1, 3), (0, 1, 2), (2, 3)])


@pytest.fixture(scope="module")
def card():
    return Card("tiny")


CARDS = {}


def card_of(kind):
    """Cards of different shapes, made once: the tiny card, one with little local memory (many tiles per
    PE), one DMA engine per PE (the reference card's), no shared SRAM (the conv scratch goes to DRAM)."""
    if kind not in CARDS:
        CARDS[kind] = {"tiny": lambda: Card("tiny"),
                       "small": lambda: Card("tiny", {"local_memory.bytes": 12288}),
                       "one_engine": lambda: Card("tiny", {"dma.engines_per_pe": 1}),
                       "no_sram": lambda: Card("tiny", {"shared_sram.bytes": 0, "local_memory.bytes": 16384})}[kind]()
    return CARDS[kind]


def data(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


# --- dot interaction ---------------------------------------------------------------------------------------
def check_interaction(card, dense, emb, pes=None, S=None):
    out, res = di.launch(card, dense, emb, pes=pes, S=S)
    F = emb.shape[1] + 1
    assert out.shape == (dense.shape[0], dense.shape[1] + F * (F - 1) // 2) and out.dtype == np.float32
    ref = di.reference_dot_interaction(dense, emb)
    assert np.array_equal(out.view(np.uint32), ref.view(np.uint32)), np.abs(out - ref).max()
    # the dense part is x itself; the rest is within the stated bound of plain fp32 math
    assert np.array_equal(out[:, :dense.shape[1]], dense.astype(np.float32))
    f32 = di.reference_dot_interaction(dense, emb, exact=False)
    assert np.all(np.abs(out.astype(np.float64) - f32) <= di.error_bound(dense, emb))
    assert res.cycles > 0 and res.summary()["macs"] == dense.shape[0] * F * F * dense.shape[1]
    return out, res


@settings(**SETTINGS)
@given(B=st.integers(1, 40), T=st.integers(1, 12), D=st.integers(1, 40),
       dtype=st.sampled_from([np.float32, np.float16]), pes=PES, kind=st.sampled_from(["tiny", "small", "one_engine"]), seed=st.integers(0, 2 ** 31))
def test_interaction_matches_reference(B, T, D, dtype, pes, kind, seed):
    rng = np.random.default_rng(seed)
    c = card_of(kind)
    if di.layout(D, T, "f32" if dtype == np.float32 else "f16", 1)["END"] > c.config.local_memory.bytes:
        c = card_of("tiny")
    check_interaction(c, data(rng, (B, D), dtype), data(rng, (B, T, D), dtype), pes=pes)


@pytest.mark.parametrize("B, T, D, dtype", [(1, 1, 1, np.float32), (1, 1, 1, np.float16), (1, 26, 64, np.float32),
                                            (5, 1, 33, np.float16), (3, 40, 7, np.float32)])
def test_interaction_edge_shapes(card, B, T, D, dtype):
    rng = np.random.default_rng(B * 1000 + T * 10 + D)
    check_interaction(card, data(rng, (B, D), dtype), data(rng, (B, T, D), dtype))


@pytest.mark.parametrize("S, pes", [(1, (0,)), (3, (1, 2)), (7, None), (2, (3,))])
def test_interaction_many_tiles_per_pe(card, S, pes):
    """Forced small tiles: several tiles per PE, so the double buffers and the store waits all turn over;
    the last tile is partial."""
    rng = np.random.default_rng(S)
    B = 4 * S * (len(pes) if pes else 4) + 1
    check_interaction(card, data(rng, (B, 10), np.float32), data(rng, (B, 5, 10), np.float32), pes=pes, S=S)


def test_interaction_fp16_rounding_and_overflow_follow_the_reference(card):
    """fp16 inputs (the caller's choice): sums in fp32 in K order, the reference's numbers bit for bit."""
    dense = np.array([[1 + 2 ** -10, 3.0, 60000.0], [0.1, -0.2, 0.3]], np.float16)
    emb = np.array([[[1.0, 2.0, 10.0]], [[0.5, 0.25, -1 / 3]]], np.float16)
    out, _ = di.dot_interaction(card, dense, emb)
    assert np.array_equal(out, di.reference_dot_interaction(dense, emb))
    h = lambda v: np.float32(np.float16(v))                  # noqa: E731
    expect = (h(0.1) * h(0.5) + h(-0.2) * h(0.25)) + h(0.3) * h(-1 / 3)
    assert out[1, 3] == expect and out[1, 0] == h(0.1)
    assert out[0, 3] == np.float32(np.float32(1 + 2 ** -10) + 6.0 + 600000.0)   # past fp16's range: fp32


def test_interaction_fp32_inputs_compute_in_fp32(card):
    """fp32 inputs are never rounded to fp16: 7e4 stays finite, 1e-8 x 1e8 is 1, products are exact and the
    sum is rounded once (the matrix unit's fp32 mode)."""
    dense = np.array([[1e-8, 2e-8, 7e4], [1 + 2 ** -20, 3.0, 1e-30]], np.float32)
    emb = np.array([[[1e8, 1e8, 1.0]], [[1 - 2 ** -20, 1.0, 1e30]]], np.float32)
    out, _ = di.dot_interaction(card, dense, emb)
    assert np.array_equal(out, di.reference_dot_interaction(dense, emb))
    exact = [1e-8 * 1e8 + 2e-8 * 1e8 + 7e4, (1 + 2 ** -20) * (1 - 2 ** -20) + 3.0 + 1.0]
    assert out[0, 3] == np.float32(np.float64(np.float32(1e-8)) * 1e8 + np.float64(np.float32(2e-8)) * 1e8 + 7e4)
    np.testing.assert_allclose(out[:, 3], exact, rtol=2 ** -23)
    assert np.isfinite(out).all()


def test_interaction_time_is_split_across_pes():
    c = Card("tiny")
    rng = np.random.default_rng(0)
    dense, emb = data(rng, (32, 16), np.float32), data(rng, (32, 6, 16), np.float32)
    _, one = di.dot_interaction(c, dense, emb, pes=(0,))
    _, four = di.dot_interaction(c, dense, emb)
    assert four.cycles < one.cycles / 2


# --- conv2d ---------------------------------------------------------------------------------------------------
def check_conv(card, x, w, bias, stride, padding, pes=None, G=None, R=None):
    out, res = cv.launch(card, x, w, bias, stride, padding, pes=pes, G=G, R=R)
    ref = cv.reference_conv2d(x, w, bias, stride, padding)
    assert out.shape == ref.shape and out.dtype == np.float32
    assert np.array_equal(out.view(np.uint32), ref.view(np.uint32)), np.abs(out - ref).max()
    f64 = cv.reference_conv2d(x, w, bias, stride, padding, exact=False)
    assert np.all(np.abs(out.astype(np.float64) - f64) <= cv.error_bound(x, w, bias, stride, padding))
    return out, res


@st.composite
def conv_case(draw):
    N, C, OC = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 6))
    KH, KW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    if draw(st.booleans()):
        stride, padding = draw(st.integers(1, 3)), draw(st.integers(0, 2))
        sh = sw = stride
        ph = pw = padding
    else:
        sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
        stride, padding = (sh, sw), (ph, pw)
    H = draw(st.integers(max(1, KH - 2 * ph), 14))
    W = draw(st.integers(max(1, KW - 2 * pw), 14))
    return dict(N=N, C=C, OC=OC, KH=KH, KW=KW, H=H, W=W, stride=stride, padding=padding, bias=draw(st.booleans()),
                dtype=draw(st.sampled_from([np.float16, np.float32])), seed=draw(st.integers(0, 2 ** 31)))


@settings(**SETTINGS)
@given(case=conv_case(), pes=PES, kind=st.sampled_from(["tiny", "small", "one_engine", "no_sram"]))
def test_conv_matches_reference(case, pes, kind):
    rng = np.random.default_rng(case["seed"])
    x = data(rng, (case["N"], case["C"], case["H"], case["W"]), case["dtype"])
    w = data(rng, (case["OC"], case["C"], case["KH"], case["KW"]), case["dtype"])
    bias = data(rng, case["OC"], np.float32) if case["bias"] else None
    c = card_of(kind)
    try:
        cv.make_plan(c, *x.shape, w.shape[0], *w.shape[2:], *cv._pair(case["stride"], "", 1),
                     *cv._pair(case["padding"], "", 0), bias is not None, 4, eb=x.itemsize)
    except vnpu.InvalidArgument:      # does not fit the small local memory of this card
        c = card_of("tiny")
    check_conv(c, x, w, bias, case["stride"], case["padding"], pes=pes)


@pytest.mark.parametrize("shape, kw", [
    ((1, 1, 1, 1, 1, 1, 1), {}),                                   # everything size 1
    ((1, 1, 5, 5, 1, 3, 3), dict(padding=1)),                      # one channel in and out
    ((2, 3, 8, 9, 4, 1, 1), dict(stride=2)),                       # 1x1 kernel, stride 2
    ((1, 2, 9, 9, 3, 2, 2), dict(stride=3, padding=3)),            # padding wider than the kernel
    ((1, 3, 6, 11, 5, 6, 11), {}),                                 # the kernel covers the whole input
    ((2, 4, 10, 7, 6, 3, 5), dict(stride=(2, 1), padding=(0, 2))),
    ((3, 5, 13, 13, 7, 3, 3), dict(stride=1, padding=1)),          # nothing divides the 4x4 matrix unit
])
def test_conv_edge_shapes(card, shape, kw):
    N, C, H, W, OC, KH, KW = shape
    rng = np.random.default_rng(sum(shape))
    x, w = data(rng, (N, C, H, W), np.float16), data(rng, (OC, C, KH, KW), np.float16)
    for bias in (None, data(rng, OC, np.float32)):
        check_conv(card, x, w, bias, kw.get("stride", 1), kw.get("padding", 0))


@pytest.mark.parametrize("G, R, pes, kind", [
    (1, 1, (0,), "tiny"),          # one output row per tile, all on one PE: scratch, pipeline turns over
    (2, 2, None, "tiny"),          # two channel groups of two PEs
    (4, 3, None, "one_engine"),    # one channel group per PE, one DMA engine
    (3, 12, (0, 1, 2), "tiny"),    # a tile is a whole image: stores go straight to out
    (2, 5, (1, 2, 3), "no_sram"),  # uneven groups (2 PEs and 1), scratch in DRAM
])
def test_conv_forced_plans(G, R, pes, kind):
    rng = np.random.default_rng(G * 10 + R)
    x, w = data(rng, (2, 3, 12, 10), np.float16), data(rng, (12, 3, 3, 3), np.float16)
    bias = data(rng, 12, np.float32)
    _, res = check_conv(card_of(kind), x, w, bias, 1, 1, pes=pes, G=G, R=R)
    assert (res.plan.G, res.plan.R) == (G, R)
    assert res.plan.direct == (R >= 12)
    if kind == "no_sram":
        assert not res.plan.scratch_shared


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_conv_weight_chunks(monkeypatch, card, dtype):
    """Weights larger than the weight buffer are split by output channel (one mm.ldw per chunk and tile);
    the buffer is shrunk here so that small shapes need chunks (K x n x element-size bytes each)."""
    eb = np.dtype(dtype).itemsize
    monkeypatch.setattr(cv, "WEIGHT_BUFFER", 2 * 27 * eb)          # two channels of 3x3x3 per chunk
    rng = np.random.default_rng(7)
    x, w = data(rng, (2, 3, 9, 8), dtype), data(rng, (7, 3, 3, 3), dtype)
    for G, R in ((1, 2), (1, 9)):
        _, res = check_conv(card, x, w, data(rng, 7, np.float32), 1, 1, G=G, R=R)
        assert len(res.plan.chunks) == 4 and res.plan.eb == eb


def test_conv_reference_card_layer():
    """A ResNet-like layer on the 12-PE reference card (1 DMA engine, 32x32x4 matrix unit)."""
    c = Card("reference")
    rng = np.random.default_rng(3)
    x = data(rng, (1, 32, 28, 28), np.float16)
    w = data(rng, (64, 32, 3, 3), np.float16, 0.1)
    out, res = check_conv(c, x, w, data(rng, 64, np.float32), 1, 1)
    assert len(res.pes) == 12
    s = res.summary()
    assert s["macs"] >= 28 * 28 * 64 * 32 * 9 and s["stalls"]["barrier"] >= 0


def test_conv_float32_inputs_compute_in_fp32(card):
    """fp32 x or w: the matrix unit multiplies in fp32 (exact products, fp64 sums, one rounding), never in
    fp16: beyond fp16's range and precision the result is fp32's, within a few fp32 ulps of float64 math."""
    torch = pytest.importorskip("torch")
    x = np.array([[[[1e-8, 7e4], [1.0, 2.0]]]], np.float32)
    w = np.array([[[[1e8, 1.0], [0.0, 0.0]]]], np.float32)
    out, res = check_conv(card, x, w, None, 1, 0)
    assert res.plan.eb == 4 and out[0, 0, 0, 0] == np.float32(np.float64(np.float32(1e-8)) * np.float64(1e8) + 7e4)
    rng = np.random.default_rng(11)
    for shape, kw in (((2, 3, 9, 8, 5, 3, 3), dict(stride=1, padding=1)),
                      ((1, 4, 12, 10, 6, 3, 2), dict(stride=(2, 1), padding=(1, 0)))):
        N, C, H, W, OC, KH, KW = shape
        x = data(rng, (N, C, H, W), np.float32, 1e5)          # far beyond fp16's range
        w = data(rng, (OC, C, KH, KW), np.float32, 1e-6)      # below fp16's smallest subnormal
        bias = data(rng, OC, np.float32)
        for G, R in ((None, None), (1, 1), (2 if OC % 2 == 0 else 1, 3)):
            out, res = check_conv(card, x, w, bias, pes=None, G=G, R=R, **kw)
            f64 = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                             torch.from_numpy(bias).double(), **kw).numpy()
            mag = torch.nn.functional.conv2d(torch.from_numpy(np.abs(x)).double(),
                                             torch.from_numpy(np.abs(w)).double(),
                                             torch.from_numpy(np.abs(bias)).double(), **kw).numpy()
            assert np.all(np.abs(out - f64) <= 2 ** -23 * mag + 2 ** -148)
            with np.errstate(over="ignore"):
                x16, w16 = x.astype(np.float16), w.astype(np.float16)
            assert not np.array_equal(out, cv.conv2d(card, x16, w16, bias, **kw)[0])


def test_conv_mixed_dtypes_compute_in_fp32(card):
    """One float32 operand makes the conv fp32 (the float16 one is widened exactly), as PyTorch promotes."""
    rng = np.random.default_rng(12)
    x, w = data(rng, (1, 2, 6, 5), np.float16), data(rng, (3, 2, 3, 3), np.float16)
    both, _ = cv.conv2d(card, x.astype(np.float32), w.astype(np.float32), None, 1, 1)
    for a, b in ((x, w.astype(np.float32)), (x.astype(np.float32), w)):
        out, res = check_conv(card, a, b, None, 1, 1)
        assert res.plan.eb == 4 and np.array_equal(out.view(np.uint32), both.view(np.uint32))


def test_conv_fp32_layers_plan_within_local_memory(card):
    """The plan and its cost estimate count 4-byte elements for fp32 (fewer rows per tile fit, slower rate)."""
    r16 = cv.max_tile_rows(card, 8, 20, 20, 8, 3, 3, 1, 1)
    r32 = cv.max_tile_rows(card, 8, 20, 20, 8, 3, 3, 1, 1, dtype=np.float32)
    assert 0 < r32 < r16
    p16 = cv.make_plan(card, 1, 8, 20, 20, 8, 3, 3, 1, 1, 1, 1, True, 4, G=1, R=r32)
    p32 = cv.make_plan(card, 1, 8, 20, 20, 8, 3, 3, 1, 1, 1, 1, True, 4, G=1, R=r32, eb=4)
    assert p32.layout()["END"] <= card.config.local_memory.bytes < replace(p32, R=r32 + 1).layout()["END"]
    assert cv.estimate_cycles(p16, card.config) < cv.estimate_cycles(p32, card.config)
    with pytest.raises(vnpu.InvalidArgument, match="PE-local memory"):
        cv.make_plan(card, 1, 8, 20, 20, 8, 3, 3, 1, 1, 1, 1, True, 4, G=1, R=r32 + 1, eb=4)
    x = data(np.random.default_rng(13), (1, 8, 20, 20), np.float32)
    w = data(np.random.default_rng(14), (8, 8, 3, 3), np.float32, 0.1)
    check_conv(card, x, w, None, 1, 1, G=1, R=r32)


# --- the sanitizer is on and would see a missing wait ------------------------------------------------------------
def _without_wait(text, marker):
    lines = text.splitlines()
    i = next(j for j, line in enumerate(lines) if marker in line)
    assert lines[i + 1].strip().startswith("wait ")
    return "\n".join(lines[:i + 1] + lines[i + 2:])


def test_sanitizer_catches_a_missing_wait_in_each_kernel():
    c = Card("tiny")
    rng = np.random.default_rng(0)
    dense, emb = data(rng, (8, 4), np.float32), data(rng, (8, 3, 4), np.float32)
    text = di.build_kernel(4, 3, "f32", 2, True, text=True)
    img = vnpu.assemble(_without_wait(text, "wait: this tile's loads"))
    addr = [c.alloc(a.nbytes) for a in (dense, emb)] + [c.alloc(8 * (4 + 6) * 4)]
    c.write(addr[0], dense.view(np.uint8).reshape(-1))
    c.write(addr[1], emb.view(np.uint8).reshape(-1))
    with pytest.raises(vnpu.RaceError):
        c.launch(img, "dot_interaction", addr + [8])

    x, w = data(rng, (1, 2, 6, 6), np.float16), data(rng, (3, 2, 3, 3), np.float16)
    p = cv.make_plan(c, 1, 2, 6, 6, 3, 3, 3, 1, 1, 1, 1, False, 4, G=1, R=6)
    img = vnpu.assemble(_without_wait(cv.build_kernel(p, text=True), "wait: the current tile's matmul"))
    xa, wa, oa = c.alloc(x.nbytes), c.alloc(w.nbytes), c.alloc(3 * 36 * 4)
    c.write(xa, x.view(np.uint8).reshape(-1))
    c.write(wa, w.view(np.uint8).reshape(-1))
    with pytest.raises(vnpu.RaceError):
        c.launch(img, "conv2d", [xa, wa, oa, 1])


# --- bad input -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dense, emb, match", [
    (np.ones((2, 4), np.float32), np.ones((2, 4), np.float32), "emb must be 3-D"),
    (np.ones(4, np.float32), np.ones((1, 2, 4), np.float32), "dense must be 2-D"),
    (np.ones((2, 4), np.float64), np.ones((2, 3, 4), np.float64), "dense must be float32 or float16"),
    (np.ones((2, 4), np.int32), np.ones((2, 3, 4), np.float32), "dense must be float32"),
    (np.ones((2, 4), np.float32), np.ones((2, 3, 4), np.float16), "same dtype"),
    (np.ones((2, 4), np.float32), np.ones((3, 3, 4), np.float32), r"does not match dense shape"),
    (np.ones((2, 4), np.float32), np.ones((2, 3, 5), np.float32), r"expected \[2, tables, 4\]"),
    (np.ones((1, 2000), np.float32), np.ones((1, 300, 2000), np.float32), "weight buffer|local memory"),
    (np.ones((1, 128), np.float32), np.ones((1, 400, 128), np.float32), "PE-local memory"),
    ([[1.0]], np.ones((1, 1, 1), np.float32), "numpy arrays"),
])
def test_interaction_bad_input(card, dense, emb, match):
    used = card.dram_used
    with pytest.raises(vnpu.InvalidArgument, match=match):
        di.dot_interaction(card, dense, emb)
    assert card.dram_used == used


X = np.ones((1, 3, 8, 8), np.float16)
WT = np.ones((4, 3, 3, 3), np.float16)


@pytest.mark.parametrize("kw, match", [
    (dict(x=np.ones((3, 8, 8), np.float16)), r"x must be 4-D \[N, C, H, W\]"),
    (dict(w=np.ones((4, 3, 3), np.float16)), r"w must be 4-D \[OC, C, KH, KW\]"),
    (dict(x=X.astype(np.int8)), "x must be float16"),
    (dict(w=WT.astype(np.float64)), "w must be float16"),
    (dict(w=np.ones((4, 1, 3, 3), np.float16)), r"groups > 1 is not supported"),
    (dict(w=np.ones((4, 2, 3, 3), np.float16)), "w has 2 input channels, x has 3"),
    (dict(bias=np.ones(3, np.float32)), "bias must be a 1-D array of 4 values"),
    (dict(bias=np.ones(4, np.int32)), "bias must be float32 or float16"),
    (dict(stride=0), "stride must be at least 1"),
    (dict(stride=(1, 2, 3)), "stride must be an integer or a pair"),
    (dict(padding=-1), "padding must be at least 0"),
    (dict(padding=1.5), "padding must be an integer or a pair"),
    (dict(w=np.ones((4, 3, 11, 3), np.float16)), "larger than the padded input"),
    (dict(x=np.ones((1, 3, 0, 8), np.float16)), "at least 1"),
    (dict(x=np.ones((1, 64, 60, 60), np.float16), w=np.ones((256, 64, 3, 3), np.float16)), "PE-local memory"),
    (dict(x=[[1.0]]), "x must be a numpy array"),
])
def test_conv_bad_input(card, kw, match):
    args = dict(x=X, w=WT, bias=None, stride=1, padding=0)
    args.update(kw)
    used = card.dram_used
    with pytest.raises(vnpu.InvalidArgument, match=match):
        cv.conv2d(card, **args)
    assert card.dram_used == used


# --- registry --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, params", [
    ("dot_interaction", dict(batch=6, tables=5, dim=12, dtype="fp16")),
    ("dot_interaction", dict(batch=3, tables=26, dim=16, dtype="fp32")),
    ("conv2d", dict(n=2, c=3, h=9, w=7, oc=5, kh=3, kw=3, stride=2, padding=1, bias=1)),
])
def test_ops_registry(card, name, params):
    spec = all_ops()[name]
    p = dict(spec.params, **params)
    inputs = spec.make_inputs(np.random.default_rng(0), p)
    outs, res = spec.run(card, inputs, p, None)
    refs = spec.reference(inputs, p)
    rtol, atol = spec.tolerance(p)
    for o, r in zip(outs, refs):
        np.testing.assert_allclose(o, r, rtol=rtol, atol=atol)
    # useful ops; the card's MAC count also includes the rows of a partial last conv tile
    assert 0 < spec.ops_per_call(p) <= 2 * res.summary()["macs"]
    if name == "dot_interaction":
        assert spec.ops_per_call(p) == 2 * res.summary()["macs"]
