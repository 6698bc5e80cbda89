"""Dense kernels against their numpy references: int8 exact, fp16 in the card's K order."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import vnpu
from vnpu.emulator.card import Card
from vnpu.kernels.dense import gemm, linear, reference_gemm


@pytest.fixture(scope="module")
def card():
    return Card("tiny")


@settings(max_examples=25, deadline=None)
@given(M=st.integers(1, 40), K=st.integers(1, 70), N=st.integers(1, 40), B=st.integers(1, 3),
       dtype=st.sampled_from(["int8", "fp16"]), epi=st.sampled_from(["raw", "dequant", "requant"]),
       pes=st.sampled_from([None, (0,), (1, 3)]), seed=st.integers(0, 2**31))
def test_gemm_matches_reference(card, M, K, N, B, dtype, epi, pes, seed):
    rng = np.random.default_rng(seed)
    if dtype == "int8":
        a = rng.integers(-128, 128, (B, M, K)).astype(np.int8)
        w = rng.integers(-128, 128, (B, K, N)).astype(np.int8)
    else:
        a = rng.standard_normal((B, M, K)).astype(np.float16)
        w = rng.standard_normal((B, K, N)).astype(np.float16)
        epi = "raw" if epi == "requant" else epi
    kw = {}
    if epi != "raw":
        kw["bias"] = rng.standard_normal(N).astype(np.float32)
        if dtype == "int8":
            kw["scale"] = (rng.random(N) * 1e-3 + 1e-5).astype(np.float32)
    if epi == "requant" and dtype == "int8":
        kw.update(out_scale=0.02, out_zero_point=int(rng.integers(-5, 5)))
    out, res = gemm(card, a if B > 1 else a[0], w if B > 1 else w[0], pes=pes, **kw)
    ref = reference_gemm(a if B > 1 else a[0], w if B > 1 else w[0], **kw)
    if dtype == "int8":
        assert np.array_equal(out, ref)
    else:
        np.testing.assert_allclose(out, ref, rtol=0, atol=0)   # same K order: bit for bit
    assert res.cycles > 0


def test_largest_single_tile_and_size_one(card):
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (1, 1)).astype(np.int8)
    assert gemm(card, a, a)[0][0, 0] == int(a[0, 0]) ** 2
    a = rng.integers(-128, 128, (200, 300)).astype(np.int8)      # more than one M tile in 256 KiB
    w = rng.integers(-128, 128, (300, 50)).astype(np.int8)
    assert np.array_equal(gemm(card, a, w)[0], reference_gemm(a, w))


def test_linear_uses_pytorch_weight_layout(card):
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (16, 24)).astype(np.int8)
    weight = rng.integers(-128, 128, (10, 24)).astype(np.int8)      # [out, in]
    b = rng.standard_normal(10).astype(np.float32)
    y, _ = linear(card, x, weight, b, x_scale=0.1, w_scale=np.full(10, 0.01, np.float32))
    ref = (x.astype(np.int32) @ weight.T.astype(np.int32)).astype(np.float32) * np.float32(0.1 * 0.01) + b
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("a, w, match", [
    (np.zeros((2, 3), np.int8), np.zeros((4, 5), np.int8), "inner dimensions"),
    (np.zeros((2, 3), np.int8), np.zeros((3, 5), np.float16), "must both be int8 or both fp16"),
    (np.zeros((2, 3), np.float32), np.zeros((3, 5), np.float32), "must both be int8 or both fp16"),
])
def test_bad_shapes(card, a, w, match):
    with pytest.raises(vnpu.InvalidArgument, match=match):
        gemm(card, a, w)


def test_dense_runs_race_free_on_every_pe_and_overlaps_dma_with_the_matrix_unit():
    card = Card("reference")
    rng = np.random.default_rng(2)
    a = rng.integers(-128, 128, (256, 512)).astype(np.int8)
    w = rng.integers(-128, 128, (512, 512)).astype(np.int8)
    out, res = gemm(card, a, w, pes=[0], trace=True)        # sanitizer on (runner default)
    assert np.array_equal(out, reference_gemm(a, w))
    ev = res.events
    from vnpu.isa import table as T
    mm = [(s, e) for tr, pe, s, e, pc, op, aux, kind in ev if op == T.OP_MM_MUL]
    dma = [(s, e) for tr, pe, s, e, pc, op, aux, kind in ev if op == T.OP_DMA]
    overlap = sum(max(0, min(e1, e2) - max(s1, s2)) for s1, e1 in mm for s2, e2 in dma)
    assert overlap > 0                                      # double buffering: DMA runs under the multiply
    assert res.summary()["units"]["matrix"]["utilization"] > 0.7


@pytest.mark.parametrize("M, K, N", [(256, 40, 20), (300, 33, 50), (520, 16, 9)])
def test_pe_grid_with_resident_weights(card, M, K, N):
    """Weights in the shared SRAM let the kernel split rows over PE groups too (a 2-D grid of PEs)."""
    from vnpu.kernels.dense import _grid
    assert _grid(M, K, N, 1, 4, 4, card.config.matrix.cols, card.config.local_memory.bytes, "raw", True)[0] > 1
    rng = np.random.default_rng(M)
    a = rng.integers(-128, 128, (M, K)).astype(np.int8)
    w = rng.integers(-128, 128, (K, N)).astype(np.int8)
    s = (rng.random(N) * 1e-3).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    assert np.array_equal(gemm(card, a, w, weights_on_chip=True)[0], reference_gemm(a, w))
    kw = dict(scale=s, bias=b, out_scale=0.02, activation="relu")
    assert np.array_equal(gemm(card, a, w, weights_on_chip=True, **kw)[0], reference_gemm(a, w, **kw))


def test_resident_activations_skip_the_staging_copy():
    """inputs_on_chip: A already in the shared SRAM (the previous layer's output kept on chip). Same
    numbers; no DRAM read of A and no staging barrier, so the twelve-PE launch is shorter."""
    card = Card("reference")
    rng = np.random.default_rng(5)
    M, K, N = 256, 512, 512
    a = rng.integers(-128, 128, (M, K)).astype(np.int8)
    w = rng.integers(-128, 128, (K, N)).astype(np.int8)
    kw = dict(scale=(rng.random(N) * 1e-3).astype(np.float32), bias=rng.standard_normal(N).astype(np.float32),
              out_scale=0.02, weights_on_chip=True)
    staged, r_staged = gemm(card, a, w, **kw)
    resident, r_resident = gemm(card, a, w, inputs_on_chip=True, **kw)
    assert np.array_equal(staged, resident)
    assert np.array_equal(resident, reference_gemm(a, w, **{k: v for k, v in kw.items() if k != "weights_on_chip"}))
    assert r_resident.summary()["bytes"]["dram_read"] < r_staged.summary()["bytes"]["dram_read"] - M * K // 2
    assert r_resident.cycles < r_staged.cycles


def test_a_tall_tile_epilogue_stays_within_the_semaphore_limit():
    """4096 rows on one PE: the epilogue's per-column passes are chunked so a tile never has more pending
    vector signals than a semaphore holds (it faulted with 'too many pending signals' at batch 4096)."""
    import vnpu
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (4096, 32)).astype(np.int8)
    w = rng.integers(-128, 128, (16, 32)).astype(np.int8)
    bias = rng.standard_normal(16).astype(np.float32)
    y = vnpu.ops.linear(x, w, bias, x_scale=0.02, w_scale=0.01, pes=1)
    y = y[0] if isinstance(y, tuple) else y
    want = (x.astype(np.float64) @ w.astype(np.float64).T) * np.float32(0.02 * 0.01) + bias
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
