"""Host memory of the recommendation runtime (docs/serving.md, "Host memory"): the model holds its tables once,
packed as the cards store them; building it never holds a table whole in float; the numpy reference reads only
the rows a request looks up; a finished serve() takes its copy of the tables off the cards. And none of that
changes a number: the tables and the reference's scores equal the old one-piece formula bit for bit."""
import tracemalloc

import numpy as np
import pytest

import vnpu
from vnpu.kernels.dense import reference_gemm
from vnpu.kernels.reference import embedding_bag as ref_embedding_bag, pack_table
from vnpu.runtime import DLRM, preset, serve
from vnpu.runtime import model as model_mod
from vnpu.runtime.model import random_table, reference_interaction


def old_tables(cfg, make=None):
    """The tables as DLRM made them before (each one whole: float64 draws, float32, packed), or by `make`;
    and the generator after them."""
    rng = np.random.default_rng(cfg.seed)
    DLRM._mlp(rng, cfg.bottom)
    top_in = cfg.interaction_width
    DLRM._mlp(rng, (top_in,) + tuple(cfg.top[1:]) if cfg.top[0] == top_in else (top_in,) + tuple(cfg.top))
    make = make or (lambda rng: pack_table((rng.standard_normal((cfg.rows, cfg.dim)) * 0.1).astype(np.float32),
                                           cfg.table_format))
    return [make(rng) for _ in range(cfg.tables)], rng


def old_reference(m, tables, dense, lookups):
    """DLRM.reference (fp16 dense layers) as it was written before, on the old tables."""
    x = dense
    for w, b in m.bottom:
        x = reference_gemm(x, w, bias=b, activation="relu").astype(np.float16)
    pooled = [ref_embedding_bag(t, idx, offsets=off, format=m.cfg.table_format, dim=m.cfg.dim)
              .astype(np.float16) for t, (idx, off) in zip(tables, lookups)]
    y = reference_interaction(np.stack([x] + pooled, axis=1))
    for i, (w, b) in enumerate(m.top):
        last = i == len(m.top) - 1
        y = reference_gemm(y, w, bias=b, activation="sigmoid" if last else "relu")
        if not last:
            y = y.astype(np.float16)
    return y


@pytest.mark.parametrize("fmt", ["int8_rowwise", "int4_rowwise", "int8_rowwise_fp16", "fp16", "fp32"])
def test_tables_made_in_chunks_equal_the_one_piece_formula(monkeypatch, fmt):
    monkeypatch.setattr(model_mod, "TABLE_CHUNK_BYTES", 8 * 32 * 64)    # 64-row chunks and a partial one
    cfg = preset("rm1", rows_scale=1e-4, table_format=fmt)
    assert cfg.rows % 64
    want, rng_old = old_tables(cfg)
    m = DLRM(cfg)
    for got, ref in zip(m.tables, want):
        assert got.dtype == np.uint8 and got.shape == ref.shape and np.array_equal(got, ref)
    # the generator ends where it did: what is drawn after the tables (int8 calibration requests) is unchanged
    _, rng_new = old_tables(cfg, lambda rng: random_table(rng, cfg.rows, cfg.dim, fmt))
    assert rng_new.bit_generator.state == rng_old.bit_generator.state


def test_the_reference_reads_only_the_rows_it_looks_up():
    """rm1 with 64 MB of int8 tables (205 MB in fp32): building the model holds each table packed, never whole
    in float; a batch of 64 through the reference allocates well under one table's fp32 size; its scores equal
    the old formula's bit for bit."""
    cfg = preset("rm1", rows_scale=0.05)
    tracemalloc.start()
    try:
        m = DLRM(cfg)
        packed, build_peak = tracemalloc.get_traced_memory()
        table_fp32 = cfg.rows * cfg.dim * 4
        assert sum(m.table_bytes) == cfg.tables * cfg.rows * (cfg.dim + 8) > 60e6
        # was 2.5x the tables (one table in float64 twice while it was made); now the chunks' few MB
        assert build_peak - packed < table_fp32 / 2, (build_peak, packed)
        rng = np.random.default_rng(4)
        reqs = [m.make_request(64, rng) for _ in range(3)]
        outs = []
        for dense, lookups in reqs:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            outs.append(m.reference(dense, lookups))
            peak = tracemalloc.get_traced_memory()[1] - base
            assert peak < table_fp32 / 16 and peak < 4 << 20, peak       # measured 0.3 MB
    finally:
        tracemalloc.stop()
    tables, _ = old_tables(cfg)
    for (dense, lookups), out in zip(reqs, outs):
        assert np.array_equal(out, old_reference(m, tables, dense, lookups))


def test_the_reference_refuses_a_float_table():
    """A float table would be packed whole by the embedding reference: the model only holds packed rows."""
    m = DLRM(preset("rm1", rows_scale=1e-4))
    dense, lookups = m.make_request(4, np.random.default_rng(0))
    m.tables[3] = np.zeros((m.cfg.rows, m.cfg.dim), np.float32)
    with pytest.raises(vnpu.InvalidArgument, match="packed uint8"):
        m.reference(dense, lookups)


def test_serving_leaves_no_copy_of_the_tables_on_the_cards():
    """Each serve() loads the model with its own executor and takes it off when done: runs one after another
    (the demo's batch sizes) hold one copy of the tables on the cards at a time, not one per run."""
    m = DLRM(preset("rm1", rows_scale=1e-3))
    p = vnpu.Platform()
    free0 = [d.memory_info()[0] for d in p.devices]
    for batch in (8, 16):
        rep = serve(p, m, batch, requests=2)
        assert rep["wrong_outputs"] == 0
        assert [d.memory_info()[0] for d in p.devices] == free0
    from vnpu.runtime import Executor
    ex = Executor(p, m, 8)
    held = sum(free0) - sum(d.memory_info()[0] for d in p.devices)
    assert held >= sum(m.table_bytes) + len(p.devices) * m.dense_bytes
    ex.unload()
    assert [d.memory_info()[0] for d in p.devices] == free0
    with pytest.raises(vnpu.InvalidArgument, match="unloaded"):
        ex.submit(0, *m.make_request(8, np.random.default_rng(0)))
    ex.unload()                                   # twice: nothing left to free
    p.close()
