"""The embedding unit and vnpu.ops.embedding_bag: PyTorch's numbers (committed golden vectors), the numpy
reference bit for bit on both engines, table formats byte-compatible with PyTorch, errors, timing."""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import vnpu
from vnpu.emulator.card import Card
from vnpu.kernels.embedding import EmbeddingArgs, run_embedding_bag
from vnpu.kernels.reference import FORMATS, embedding_bag as ref_embedding_bag, pack_table

from vnpu.validation import DATA
from vnpu.validation import golden_case
GOLD = np.load(DATA / "embedding_golden.npz")
META = json.loads((DATA / "embedding_golden.json").read_text())


@pytest.fixture(scope="module")
def card():
    return Card("tiny")


@pytest.mark.parametrize("case", META["cases"], ids=lambda c: f"{c['id']}-{c['format']}-{c['mode']}")
def test_matches_pytorch_golden(case):
    fmt = case["format"]
    out, ref = golden_case(GOLD, case)
    assert out.shape == ref.shape
    if fmt == "fp16":
        # PyTorch rounds the fp16 sum before dividing for mean: one fp16 ulp apart at most
        np.testing.assert_allclose(out.astype(np.float32), ref, rtol=2 ** -10, atol=2 ** -14)
    else:
        # fp32 rounding: PyTorch fuses multiply-adds (FBGEMM), the card rounds each step
        scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
        np.testing.assert_allclose(out, ref, rtol=0, atol=4e-7 * scale * max(1, case["n_indices"]) ** 0.5 * 4)


def test_packing_is_byte_identical_to_pytorch():
    for fmt, key in (("int8_rowwise", "int8"), ("int8_rowwise", "int8_odd"), ("int4_rowwise", "int4"),
                     ("int4_rowwise", "int4_overflow")):
        packed = pack_table(GOLD[f"prepack_probe_{key}_weight"], fmt)
        assert np.array_equal(packed, GOLD[f"prepack_probe_{key}_packed"]), key
    for case in META["cases"]:
        if case["format"] in ("int8_rowwise", "int4_rowwise"):
            i = case["id"]
            assert np.array_equal(pack_table(GOLD[f"c{i}_weight"], case["format"]), GOLD[f"c{i}_packed"])


@st.composite
def lookup(draw):
    fmt = draw(st.sampled_from(FORMATS))
    dim = draw(st.integers(1, 40))
    if fmt == "int4_rowwise":
        dim += dim % 2
    rows = draw(st.integers(1, 60))
    bags = draw(st.integers(0, 8))
    lens = [draw(st.integers(0, 12)) for _ in range(bags)]
    n = sum(lens)
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    table = (rng.standard_normal((rows, dim)) * 3).astype(np.float32)
    idx = rng.integers(0, rows, n).astype(draw(st.sampled_from([np.int32, np.int64])))
    use_offsets = draw(st.booleans())
    include_last = use_offsets and draw(st.booleans())
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    seg = dict(offsets=offsets if include_last else offsets[:-1]) if use_offsets else dict(lengths=np.array(lens, dtype=np.int64))
    weighted = draw(st.booleans())
    mode = "sum" if weighted else draw(st.sampled_from(["sum", "mean"]))
    psw = rng.standard_normal(n).astype(np.float32) if weighted else None
    return dict(weight=table, indices=idx, per_sample_weights=psw, mode=mode, format=fmt,
                include_last_offset=include_last, out_dtype=draw(st.sampled_from(["fp32", "fp16"])), **seg)


@settings(max_examples=40, deadline=None)
@given(lookup())
def test_card_equals_numpy_reference_on_both_engines(kw):
    ref = ref_embedding_bag(**{k: v for k, v in kw.items() if k != "out_dtype"})
    ref = ref.astype(np.float16) if kw["out_dtype"] == "fp16" else ref
    args = EmbeddingArgs(**kw)
    for engine in ("numba", "reference"):
        out, _ = run_embedding_bag(Card("tiny"), args, engine=engine)
        assert np.array_equal(out.view(np.uint8), ref.view(np.uint8)), engine


def test_lengths_and_offsets_agree(card):
    rng = np.random.default_rng(1)
    table = rng.standard_normal((100, 8)).astype(np.float32)
    idx = rng.integers(0, 100, 30)
    lens = np.array([5, 0, 10, 15])
    a = vnpu.ops.embedding_bag(table, idx, lengths=lens, card=card)
    b = vnpu.ops.embedding_bag(table, idx, offsets=np.array([0, 5, 5, 15]), card=card)
    c = vnpu.ops.embedding_bag(table, idx, offsets=np.array([0, 5, 5, 15, 30]), include_last_offset=True, card=card)
    assert np.array_equal(a, b) and np.array_equal(a, c)
    assert np.all(a[1] == 0)  # an empty bag pools to zeros


@pytest.mark.parametrize("kw, match", [
    (dict(indices=np.array([1, 2, 100, 3])), r"indices\[2\] = 100 is outside the table of 10 rows"),
    (dict(indices=np.array([1, -1]), lengths=np.array([2])), r"indices\[1\] = -1"),
    (dict(lengths=np.array([2, 3])), "lengths do not add up to the 4 indices"),
    (dict(offsets=np.array([0, 3, 2])), r"offsets\[2\] = 2 is invalid"),
    (dict(offsets=np.array([1, 3])), r"offsets\[0\] = 1 is invalid"),
    (dict(per_sample_weights=np.ones(3)), "per_sample_weights has 3 entries, indices has 4"),
    (dict(weight=np.zeros((10, 6), np.uint8), format="int8_rowwise"), "6-byte rows"),
    (dict(weight=np.zeros((10, 7), np.uint8), format="fp32"), "7-byte rows"),
    (dict(format="int3"), "format must be one of"),
    (dict(indices=np.array([1.0, 2.0])), "indices must be a 1-D int32 or int64"),
    (dict(mode="max"), "mode must be"),
])
def test_bad_input_names_the_first_offending_position(card, kw, match):
    base = dict(weight=np.ones((10, 4), np.float32), indices=np.array([1, 2, 3, 4]), lengths=np.array([2, 2]))
    if "offsets" in kw:
        base.pop("lengths")
    base.update(kw)
    used_before = card.dram_used
    with pytest.raises(vnpu.InvalidArgument, match=match):
        vnpu.ops.embedding_bag(card=card, **base)
    assert card.dram_used == used_before   # nothing was left on the card
    out = vnpu.ops.embedding_bag(np.ones((10, 4), np.float32), np.array([1, 2]), lengths=np.array([2]), card=card)
    assert np.array_equal(out, np.full((1, 4), 2.0, np.float32))


def test_unit_checks_its_descriptor_too(engine_card=None):
    """A kernel that hands the unit an index outside the table gets IllegalInstruction naming the position."""
    from vnpu.kernels.embedding import descriptor, kernel_image
    card = Card("tiny")
    args = EmbeddingArgs(np.ones((10, 4), np.float32), np.array([1, 2]), lengths=np.array([2]))
    args.indices = np.array([1, 12])       # tamper after the host checks
    put = lambda a: (lambda addr: (card.write(addr, np.ascontiguousarray(a).view(np.uint8)), addr)[1])(  # noqa
        card.alloc(max(1, a.nbytes)))
    d = descriptor(args, put(args.table), put(args.indices), put(args.segments), 0, card.alloc(64))
    for engine in ("numba", "reference"):
        with pytest.raises(vnpu.IllegalInstruction, match=r"outside the table \(at position 1\)"):
            card.launch(kernel_image(), "embedding_bag", (put(d),), pes=(0,), engine=engine)


def test_timing_is_gather_bound_and_sram_is_faster():
    card = Card("reference")
    rng = np.random.default_rng(0)
    table = rng.standard_normal((4096, 64)).astype(np.float32)   # 256 B rows
    idx = rng.integers(0, 4096, 2000)
    lens = np.full(20, 100)
    vnpu.ops.embedding_bag(table, idx, lengths=lens, card=card)
    dram = vnpu.ops.last_profile()
    cfg = card.config
    per_row = 256 / (cfg.dram.gbps / cfg.clock_ghz) / (cfg.dram.random_efficiency
                                                        + (1 - cfg.dram.random_efficiency) * 256 / cfg.dram.page_bytes)
    assert dram.cycles >= 2000 * per_row                     # bounded by DRAM at short-run efficiency
    assert dram.gbps <= cfg.dram.gbps                       # never above the DRAM peak
    assert dram.extra["lookups_per_s"] == pytest.approx(20 / dram.seconds)
    vnpu.ops.embedding_bag(table, idx, lengths=lens, card=card, table_memory="shared")
    sram = vnpu.ops.last_profile()
    assert sram.cycles < dram.cycles
    assert sram.summary["bytes"]["sram_read"] >= 2000 * 256


def test_profile_context_collects_ops(card):
    with vnpu.ops.profile() as prof:
        vnpu.ops.embedding_bag(np.ones((4, 2), np.float32), np.array([0, 1]), lengths=np.array([1, 1]), card=card)
        vnpu.ops.embedding_bag(np.ones((4, 2), np.float32), np.array([3]), lengths=np.array([1]), card=card)
    assert [p.op for p in prof] == ["embedding_bag", "embedding_bag"] and all(p.cycles > 0 for p in prof)
    assert prof[0].extra["rows_gathered"] == 2 and prof[0].summary["embedding_lookups"] == 2
