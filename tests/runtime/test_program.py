"""vnpu.compile on vnpu's own graphs: every strategy and dtype against the graph's float64 numpy meaning, the
coverage report and its errors, the host fallback, serving several requests, the profile."""
import json

import numpy as np
import pytest

import vnpu
from vnpu.runtime.graph import passes
from vnpu.runtime.graph.interp import run_host
from vnpu.runtime.graph.ir import Graph
from vnpu.runtime.graph.program import _balanced_stages, compare

RNG = np.random.default_rng(7)


def small_cnn(batch=2):
    g = Graph("small_cnn")
    x = g.add_input("x", (batch, 3, 12, 12))
    c = lambda *s: g.add_const("w", (RNG.standard_normal(s) * 0.3).astype(np.float32))  # noqa: E731
    y = g.add_node("conv2d", [x, c(8, 3, 3, 3), c(8)], dict(stride=1, padding=1), name="conv1", source="cnn: conv1")
    y = g.add_node("batch_norm", [y, c(8), g.add_const("var", RNG.random(8).astype(np.float32) + 0.5), c(8), c(8)],
                   dict(eps=1e-5), name="bn1", source="cnn: bn1")
    y = g.add_node("relu", [y], name="relu1")
    z = g.add_node("conv2d", [y, c(8, 8, 3, 3)], dict(stride=1, padding=1), name="conv2", source="cnn: conv2")
    y = g.add_node("relu", [g.add_node("add", [z, y], name="res")], name="relu2")
    y = g.add_node("max_pool2d", [y], dict(kernel_size=2, stride=2), name="pool")
    y = g.add_node("adaptive_avg_pool2d", [y], dict(output_size=1), name="gap")
    y = g.add_node("reshape", [y], dict(shape=(batch, 8)), name="flatten")
    y = g.add_node("linear", [y, c(5, 8), c(5)], name="fc", source="cnn: fc")
    g.set_outputs([g.add_node("softmax", [y], dict(dim=-1), name="prob")])
    return g


X = RNG.standard_normal((2, 3, 12, 12)).astype(np.float32)
CNN = small_cnn()
REF = run_host(CNN, [X])[0]


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("strategy, cards", [("single", 1), ("pipeline", 3), ("replicate", 2)])
def test_every_strategy_and_dtype_computes_the_model(dtype, strategy, cards):
    prog = vnpu.compile(CNN, [X], cards=cards, dtype=dtype, strategy=strategy)
    out = prog.run(X)
    tol = {"fp32": 1e-5, "fp16": 2e-2, "int8": 0.1}[dtype]
    assert out.shape == REF.shape and np.abs(out - REF).max() <= tol
    (check,) = prog.last_check
    assert check["cosine"] > (0.9999 if dtype != "int8" else 0.99) and check["max_abs"] <= tol
    assert prog.coverage().counts() == {"card": len(prog.graph.nodes), "host": 0, "unsupported": 0}
    prof = prog.profile()
    cards_used = {r.card for r in prof.records}
    assert cards_used == ({0} if strategy != "pipeline" else set(range(cards)))
    assert all(r.cycles > 0 for r in prof.records if r.op not in ("reshape",))
    if strategy == "pipeline":                    # activations cross cards through the switch
        assert any(t["kind"] == "p2p" and t["bytes"] > 0 for t in prof.transfers)


def test_passes_fold_and_fuse_what_the_kernels_fuse():
    g = passes.optimize(CNN)
    ops = [n.op for n in g.nodes]
    assert "batch_norm" not in ops and "relu" not in ops and "add" not in ops
    conv2 = next(n for n in g.nodes if n.name == "conv2")
    assert conv2.attrs["activation"] == "relu" and len(conv2.inputs) == 4      # residual fused
    assert np.allclose(run_host(g, [X])[0], REF, atol=1e-6)
    text = str(g)
    assert "cnn: conv1 + cnn: bn1" in text and "conv2d(" in text


def test_int8_weights_per_channel_activations_per_tensor():
    g = passes.optimize(CNN, "int8", [[RNG.standard_normal(X.shape).astype(np.float32)] for _ in range(3)])
    convs = [n for n in g.nodes if n.op == "conv2d"]
    assert convs and all(g.values[n.inputs[0]].dtype == "int8" and g.values[n.inputs[1]].dtype == "int8"
                         and np.asarray(n.attrs["w_scale"]).shape == (g.values[n.inputs[1]].shape[0],) for n in convs)
    # the input of conv1 and of fc are quantized; conv1's result, read by conv2 and as conv2's residual, leaves
    # conv1 in int8 (requantized in its epilogue) and conv2 dequantizes the residual on the card
    assert [n.op for n in g.nodes].count("quantize") == 2
    conv1, conv2 = convs
    assert g.values[conv1.outputs[0]].dtype == "int8" and conv1.attrs["out_scale"] == conv2.attrs["residual_scale"]
    assert conv2.inputs[0] == conv2.inputs[3] == conv1.outputs[0]


def foreign_graph(with_fn=True):
    g = Graph("with_cumsum")
    x = g.add_input("x", (4, 6))
    y = g.add_node("relu", [x], name="r")
    attrs = dict(framework="torch", op="aten.cumsum.default", types=[((4, 6), "float32")],
                 needs="a vnpu op for aten.cumsum")
    if with_fn:
        attrs["fn"] = lambda a: [np.cumsum(a, axis=1, dtype=np.float32)]
    y = g.add_node("foreign", [y], attrs, name="cumsum", source="model.py:12 in forward (aten.cumsum.default)")
    g.set_outputs([g.add_node("tanh", [y], name="t")])
    return g


def test_an_op_vnpu_lacks_is_an_error_naming_it_and_where_it_came_from():
    with pytest.raises(vnpu.UnsupportedOp, match=r"aten.cumsum.*model.py:12.*allow_host") as e:
        vnpu.compile(foreign_graph(), cards=1)
    assert e.value.op == "aten.cumsum.default" and "model.py:12" in e.value.source
    assert isinstance(e.value, vnpu.InvalidArgument)


def test_allow_host_runs_it_on_the_host_with_its_transfers_on_the_timeline():
    prog = vnpu.compile(foreign_graph(), cards=1, allow_host=True)
    x = RNG.standard_normal((4, 6)).astype(np.float32)
    out = prog.run(x)
    np.testing.assert_allclose(out, np.tanh(np.cumsum(np.maximum(x, 0), axis=1)), rtol=1e-6)
    cov = {s.node: s.status for s in prog.coverage()}
    assert cov == {"r": "card", "cumsum": "host", "t": "card"}
    rec = {r.node: r for r in prog.profile().records}
    assert rec["cumsum"].where == "host" and rec["t"].start_ns >= rec["cumsum"].end_ns
    kinds = [t["kind"] for t in prog.profile().transfers if t["value"] in ("r", "cumsum")]
    assert "d2h" in kinds and "h2d" in kinds


def test_no_host_implementation_either_is_an_error_even_with_allow_host():
    with pytest.raises(vnpu.UnsupportedOp, match="neither the card nor the host"):
        vnpu.compile(foreign_graph(with_fn=False), cards=1, allow_host=True)


def test_an_op_whose_kernel_refuses_the_dtype_is_reported_before_running():
    g = Graph("lrn16")
    x = g.add_input("x", (1, 4, 5, 5), "float16")
    g.set_outputs([g.add_node("local_response_norm", [x], dict(size=3), name="lrn", source="net: lrn")])
    with pytest.raises(vnpu.UnsupportedOp, match="local_response_norm at net: lrn.*float32"):
        vnpu.compile(g, cards=1)
    prog = vnpu.compile(g, cards=1, allow_host=True)
    x16 = RNG.standard_normal((1, 4, 5, 5)).astype(np.float16)
    np.testing.assert_allclose(prog.run(x16), run_host(g, [x16])[0])
    assert prog.coverage()[0].status == "host"


def test_serve_spreads_requests_and_replication_beats_one_card():
    reqs = [[RNG.standard_normal(X.shape).astype(np.float32)] for _ in range(6)]
    one = vnpu.compile(CNN, cards=1, strategy="single", check=False)
    two = vnpu.compile(CNN, cards=3, strategy="replicate", check=False)
    out1, out3 = one.serve(reqs, inflight=3), two.serve(reqs, inflight=3)
    for a, b, r in zip(out1, out3, reqs):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_allclose(a[0], run_host(CNN, r)[0], atol=1e-5)
    p1, p3 = one.profile(), two.profile()
    assert len(p3.latencies_ns()) == 6 and set(p3.per_card()) == {0, 1, 2}
    assert p3.makespan_ns < p1.makespan_ns


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "int8"])
def test_sparsenn_shards_tables_by_bytes_and_replicates_the_dense_part(dtype):
    g = Graph("two_tables")
    d = g.add_input("dense", (4, 8))
    idx = [g.add_input(f"idx{t}", (8,), "int64") for t in range(2)]
    off = g.add_input("off", (4,), "int64")
    pooled = []
    for t in range(2):
        table = g.add_const(f"table{t}", RNG.standard_normal((20000 + 5000 * t, 16)).astype(np.float32))
        pooled.append(g.add_node("embedding_bag", [table, idx[t], off], dict(mode="sum"), name=f"emb{t}"))
    h = g.add_node("linear", [d, g.add_const("w", RNG.standard_normal((16, 8)).astype(np.float32))], name="bottom")
    g.set_outputs([g.add_node("add", [g.add_node("add", pooled), h], name="sum")])
    inputs = [RNG.standard_normal((4, 8)).astype(np.float32), RNG.integers(0, 20000, 8), RNG.integers(0, 20000, 8),
              np.arange(0, 8, 2)]
    prog = vnpu.compile(g, cards=3, strategy="auto", dtype=dtype, calibration=[inputs])
    assert prog.placement.strategy == "sparsenn"
    st = {n.name: prog.placement.stage[i] for i, n in enumerate(prog.graph.nodes)}
    assert st["emb0"] != st["emb1"] and st["bottom"] is None
    # the tables stay float32 constants read by the lookup itself: no per-request cast of a whole table
    for n in prog.graph.nodes:
        if n.op == "embedding_bag":
            table = prog.graph.values[n.inputs[0]]
            assert table.is_const and table.dtype == "float32", (dtype, n.name, table.dtype)
    outs = prog.serve([inputs, inputs], inflight=2)
    ref = run_host(g, inputs)[0]
    tol = {"fp32": 1e-5, "fp16": 2e-2, "int8": 5e-2}[dtype] * max(1.0, float(np.abs(ref).max()))
    for (o,) in outs:
        np.testing.assert_allclose(o, ref, rtol=0, atol=tol)
    assert any(t["kind"] == "p2p" for t in prog.profile().transfers)


def test_pipeline_stages_are_consecutive_and_balanced():
    costs = [1.0] * 12
    st = _balanced_stages(costs, CNN if len(CNN.nodes) == 12 else _chain(12), 3, 8.0)
    assert st == sorted(st) and set(st) == {0, 1, 2} and max(st.count(s) for s in range(3)) == 4


def _chain(n):
    g = Graph("chain")
    y = g.add_input("x", (4,))
    for _ in range(n):
        y = g.add_node("relu", [y])
    g.set_outputs([y])
    return g


def test_profile_reads_as_a_table_and_as_json():
    prog = vnpu.compile(CNN, cards=2, strategy="pipeline")
    prog.run(X)
    text = str(prog.profile())
    assert "conv2" in text and "card 1:" in text and "makespan" in text
    d = json.loads(prog.profile().json())
    assert d["strategy"] == "pipeline" and len(d["ops"]) == len(prog.graph.nodes) and d["latency_ns"]["p50"] > 0
    assert "8 ops" in str(prog.coverage()) or "ops:" in str(prog.coverage())


def test_compare_reports_top1_and_cosine():
    r = compare([np.array([[1.0, 2.0], [3.0, 1.0]])], [np.array([[1.0, 2.1], [2.0, 1.0]])])[0]
    assert r["top1"] == 1.0 and 0.9 < r["cosine"] <= 1.0 and r["max_abs"] == pytest.approx(1.0)


@pytest.mark.parametrize("kw, match", [
    (dict(dtype="int4"), "dtype"), (dict(strategy="magic"), "strategy"), (dict(cards=0), "cards"),
    (dict(cards=True), "cards"),
])
def test_misuse_of_compile(kw, match):
    with pytest.raises(vnpu.InvalidArgument, match=match):
        vnpu.compile(CNN, **kw)


def test_misuse_of_run():
    prog = vnpu.compile(CNN, cards=1)
    with pytest.raises(vnpu.InvalidArgument, match="shape"):
        prog.run(X[:1])
    with pytest.raises(vnpu.InvalidArgument, match="takes 1 inputs"):
        prog.run(X, X)
    with pytest.raises(vnpu.InvalidArgument, match="inflight"):
        prog.serve([[X]], inflight=0)
    with pytest.raises(vnpu.InvalidArgument, match="cannot take"):
        vnpu.compile(object())
    np.testing.assert_allclose(prog.run(X), REF, atol=1e-5)          # still works after the misuse


@pytest.mark.parametrize("dtype", ["fp32", "int8"])
def test_a_saved_program_loads_and_runs_to_the_same_outputs(dtype, tmp_path):
    from vnpu.runtime.graph.bundle import load_program
    prog = vnpu.compile(CNN, [X], cards=2, dtype=dtype, strategy="pipeline")
    want = prog.run(X)
    path = tmp_path / "cnn.vnpp"
    prog.save(path)
    back = load_program(path)
    assert back.placement.stage == prog.placement.stage and str(back.graph) == str(prog.graph)
    np.testing.assert_array_equal(back.run(X), want)


def test_load_program_refuses_what_is_not_a_program(tmp_path):
    from vnpu.runtime.graph.bundle import load_program
    bad = tmp_path / "x.vnpp"
    bad.write_bytes(b"not a zip")
    with pytest.raises(vnpu.InvalidArgument, match="not a vnpu program"):
        load_program(bad)
    with pytest.raises(vnpu.InvalidArgument, match="not a vnpu program"):
        load_program(tmp_path / "missing.vnpp")
    with pytest.raises(vnpu.InvalidArgument, match="cannot be saved"):
        vnpu.compile(foreign_graph(), cards=1, allow_host=True).save(tmp_path / "f.vnpp")


def test_one_host_thread_gives_the_same_outputs_and_virtual_timeline():
    """A second serve on the same platform continues its timeline (it starts when the cards are free)."""
    reqs = [[RNG.standard_normal(X.shape).astype(np.float32)] for _ in range(4)]
    prog = vnpu.compile(CNN, cards=2, strategy="pipeline", check=False)
    many = prog.serve(reqs, inflight=2)
    lat_many = prog.profile().latencies_ns()
    one = prog.serve(reqs, inflight=2, threads=1)
    for a, b in zip(many, one):
        np.testing.assert_array_equal(a[0], b[0])
    assert prog.profile().latencies_ns() == pytest.approx(lat_many, rel=1e-9)   # the same timeline, later
    first = prog.profile().makespan_ns
    prog.serve(reqs, inflight=2)
    assert prog.profile().makespan_ns == pytest.approx(first, rel=1e-9)       # not counted from time 0


def test_two_convs_meeting_at_one_add_fuse_only_once():
    """A bottleneck with a downsample: both branches end in a conv feeding the same add; one takes the other
    as its residual (fusing both would make a cycle)."""
    g = Graph("two_branches")
    x = g.add_input("x", (1, 4, 6, 6))
    a = g.add_node("conv2d", [x, g.add_const("wa", RNG.standard_normal((4, 4, 1, 1)).astype(np.float32))], {})
    b = g.add_node("conv2d", [x, g.add_const("wb", RNG.standard_normal((4, 4, 1, 1)).astype(np.float32))], {})
    g.set_outputs([g.add_node("relu", [g.add_node("add", [a, b])])])
    f = passes.optimize(g)
    assert [n.op for n in f.nodes] == ["conv2d", "conv2d"] and len(f.nodes[1].inputs) == 4
    xin = RNG.standard_normal((1, 4, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(run_host(f, [xin])[0], run_host(g, [xin])[0], atol=1e-5)


def test_profile_energy_adds_up_per_op_and_card():
    prog = vnpu.compile(CNN, cards=2, strategy="pipeline", check=False)
    prog.run(X)
    prof = prog.profile()
    assert all(r.energy_j > 0 for r in prof.records if r.cycles) and prof.energy_j > 0
    assert sum(c["energy_j"] for c in prof.per_card().values()) == pytest.approx(prof.energy_j)
    assert "requests per joule" in str(prof) and json.loads(prof.json())["energy_j"] == pytest.approx(prof.energy_j)
    two = prog.serve([[X], [X]], inflight=1)
    assert len(two) == 2 and prog.profile().energy_j == pytest.approx(2 * prof.energy_j, rel=1e-9)


@pytest.mark.parametrize("argv, match", [
    (["profile", "nosuch"], "not a .onnx"), (["profile", "resnet50", "--cards", "0"], "--cards"),
    (["profile", "resnet50", "--image", "0"], "--image"), (["serve", "resnet50", "--requests", "0"], "--requests"),
    (["profile", "/nonexistent.onnx"], "no such file"), (["profile", "missing.vnpp"], "not a vnpu program"),
    (["profile", "os:nofunction"], "no function"),
])
def test_model_commands_misuse_is_one_line(argv, match, capsys):
    from vnpu.cli import main
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0] and "Traceback" not in err[0]


@pytest.mark.parametrize("op, inputs, attrs, match", [
    ("maximum", [("float32", (4,))], {}, "takes 2 inputs"),
    ("relu", [("float32", (4,))], {"dims": (1, 0)}, "has no attribute dims"),
    ("max_pool2d", [("float32", (1, 2, 4, 4))], {}, "needs the attribute kernel_size"),
    ("where", [("bool", (2,)), ("float32", (2,))], {}, "takes 3 inputs"),
    ("amax", [("int64", ())], {"dim": -1}, "operands"),
    ("conv2d", [("float32", (1, 2, 4, 4)), ("float32", (3, 5, 3, 3))], {}, "operands"),
    # packed embedding tables: format, dim and out_dtype are checked when the node is added
    ("embedding_bag", [("uint8", (100, 40)), ("int64", (8,)), ("int64", (2,))], {"format": "int3"}, "format must be"),
    ("embedding_bag", [("uint8", (100, 40)), ("int64", (8,)), ("int64", (2,))],
     {"format": "int8_rowwise", "dim": 64}, "needs 72-byte rows"),
    ("embedding_bag", [("uint8", (100, 40)), ("int64", (8,)), ("int64", (2,))],
     {"format": "int8_rowwise", "dim": "32"}, "dim must be an int"),
    ("embedding_bag", [("uint8", (100, 40)), ("int64", (8,)), ("int64", (2,))],
     {"format": "int8_rowwise", "out_dtype": "int8"}, "out_dtype must be"),
    ("embedding_bag", [("float32", (100, 4)), ("int64", (8,)), ("int64", (2,))],
     {"format": "int8_rowwise"}, "packed uint8 table"),
    ("embedding_bag", [("uint8", (100, 40)), ("int64", (8,)), ("int64", (2,))], {"mode": "sum", "size": 3},
     "has no attribute size"),
])
def test_graph_builder_misuse_is_a_typed_error_naming_the_op(op, inputs, attrs, match):
    g = Graph("bad")
    names = [g.add_input(f"x{i}", s, dt) for i, (dt, s) in enumerate(inputs)]
    with pytest.raises(vnpu.InvalidArgument, match=match):
        g.add_node(op, names, attrs, name="n1", source="model.py:3")
    assert not g.nodes                     # nothing was added


def test_serving_on_many_cards_gives_the_same_timeline_every_time():
    """The cards are emulated on a thread each, but the timeline is booked in one fixed order: requests
    contending for the switch's uplink get the same latencies whatever the threads did."""
    reqs = [[RNG.standard_normal(X.shape).astype(np.float32)] for _ in range(8)]
    runs = []
    for _ in range(3):
        prog = vnpu.compile(CNN, cards=4, strategy="replicate", check=False)
        prog.serve(reqs, inflight=4)
        runs.append((prog.profile().latencies_ns(), prog.profile().makespan_ns))
    assert runs[0] == runs[1] == runs[2]
    one = vnpu.compile(CNN, cards=4, strategy="replicate", check=False)
    one.serve(reqs, inflight=4, threads=1)
    assert (one.profile().latencies_ns(), one.profile().makespan_ns) == runs[0]


@pytest.mark.parametrize("op", ["linear", "conv2d"])
@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("out_zero_point", [None, 0, -128])
def test_int8_fused_activation_on_the_card_matches_its_meaning(op, activation, out_zero_point):
    """Every int8 op with a fused activation: the card's lowering equals the graph's meaning (the host
    interpreter), whether its output is float32 or requantized to int8 (the activation before requantization;
    a linear with int8 output once dropped its relu on the card: rm1 int8 scores off by 0.8)."""
    from vnpu.kernels.ops import default_card
    from vnpu.runtime.graph.opset import OPS
    rng = np.random.default_rng(7)
    if op == "linear":
        x = rng.integers(-128, 128, (16, 40)).astype(np.int8)
        w = rng.integers(-127, 128, (24, 40)).astype(np.int8)
        attrs = {"x_scale": 0.02, "w_scale": (rng.random(24) * 0.01 + 0.001).astype(np.float32)}
    else:
        x = rng.integers(-128, 128, (1, 8, 10, 10)).astype(np.int8)
        w = rng.integers(-127, 128, (16, 8, 3, 3)).astype(np.int8)
        attrs = {"x_scale": 0.02, "w_scale": (rng.random(16) * 0.01 + 0.001).astype(np.float32), "padding": (1, 1)}
    bias = rng.standard_normal(w.shape[0]).astype(np.float32)
    if activation:
        attrs["activation"] = activation
    if out_zero_point is not None:
        attrs.update(out_scale=0.05, out_zero_point=out_zero_point)
    want = OPS[op].host([x, w, bias], dict(attrs))[0]
    got = OPS[op].card(default_card(), [x, w, bias], dict(attrs), None)[0]
    assert got.dtype == want.dtype and got.shape == want.shape
    if want.dtype == np.int8:         # the host rounds x * scale once in float64, the card each step in fp32
        assert np.abs(got.astype(np.int32) - want.astype(np.int32)).max() <= 1
        if activation == "relu":
            assert got.min() >= out_zero_point
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_tables_stay_resident_on_their_cards_until_released():
    """A program pins each embedding table on the card that looks it up (Card.pin), once, instead of copying it
    in for every lookup; release() takes them off. route='host' sends the pooled rows up to the host and down
    again instead of card to card: the same outputs, more uplink traffic."""
    from vnpu.runtime.graph import models
    g = models.build("rm1", batch=4, rows_scale=0.01, table_format="int8_rowwise")
    prog = vnpu.compile(g, cards=3, strategy="sparsenn", dtype="fp16")
    cards = [d.card for d in prog.platform.devices[:3]]
    free0 = [c.dram_free for c in cards]
    x = models.example_inputs(g, seed=1)
    (p2p,) = prog.serve([x])
    tables = [(prog.placement.stage[i], prog.graph.values[n.inputs[0]].data)
              for i, n in enumerate(prog.graph.nodes) if n.op == "embedding_bag"]
    assert len(tables) == 8 and {c for c, _ in tables} == {0, 1, 2}
    for c, t in tables:
        assert [card.is_pinned(t) for card in cards] == [k == c for k in range(3)]
    held = [free0[k] - cards[k].dram_free for k in range(3)]
    assert sum(held) >= sum(t.nbytes for _, t in tables)
    (again,) = prog.serve([x])                      # the second serve pins nothing more
    assert [free0[k] - cards[k].dram_free for k in range(3)] == held
    (via_host,) = prog.serve([x], route="host")
    np.testing.assert_array_equal(via_host[0], p2p[0])
    kinds = {t["kind"] for t in prog.profile().transfers}
    assert "p2p" not in kinds and "d2h" in kinds
    with pytest.raises(vnpu.InvalidArgument, match="route"):
        prog.serve([x], route="carrier pigeon")
    prog.release()
    assert [c.dram_free for c in cards] == free0 and not any(c.pinned for c in cards)


def test_card_pin_and_place():
    from vnpu.emulator.card import Card
    card = Card("tiny")
    a = np.arange(1000, dtype=np.float32)
    free0 = card.dram_free
    addr = card.pin(a)
    assert card.pin(a) == addr and card.is_pinned(a) and card.is_pinned(a.view(np.uint8))
    assert card.place(a.view(np.uint8)) == (addr, False)               # the same bytes: the resident copy
    other, owned = card.place(a.copy())
    assert owned and other != addr
    card.free(other)
    np.testing.assert_array_equal(card.read(addr, a.nbytes).view(np.float32), a)
    card.unpin(a)
    assert card.is_pinned(a)                                           # pinned twice, unpinned once
    card.unpin(a)
    assert not card.is_pinned(a) and card.dram_free == free0
    card.unpin(a)                                                      # not pinned: ignored
    with pytest.raises(vnpu.InvalidArgument, match="pin"):
        card.pin([1, 2, 3])
    with pytest.raises(vnpu.InvalidArgument, match="pin"):
        card.pin(np.arange(10)[::2])
    card.pin(a)
    card.reset()                                                       # a reset forgets the pins
    assert not card.is_pinned(a)


def test_profile_takes_batch_for_an_onnx_file_with_a_dynamic_batch(tmp_path, capsys):
    """`vnpu profile model.onnx --batch 4` on a model whose batch dimension is symbolic compiles it for batch 4
    (it compiled batch 1 and refused its own batch-4 example inputs)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    from vnpu.cli import main
    w = helper.make_tensor("w", TensorProto.FLOAT, [16, 8], RNG.standard_normal(128).astype(np.float32).tolist())
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "dyn",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], [w])
    path = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    assert main(["profile", str(path), "--batch", "4", "--dtype", "fp32", "--cards", "1", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["requests"] == 1 and rep["ops"][0]["op"] == "matmul"


def _rm1_program(cards=3):
    from vnpu.runtime.graph import models
    g = models.build("rm1", batch=4, rows_scale=0.01, table_format="int8_rowwise")
    return g, vnpu.compile(g, cards=cards, strategy="sparsenn", dtype="fp16")


def test_a_fault_in_a_compiled_serve_is_typed_and_the_retry_policy_recovers():
    """Injected faults reach a compiled program's launches too (Queue.book applies the launch faults
    Queue.launch does): the serve raises the typed fault, leaves nothing on the cards, and serve_one_compiled
    resets the card and runs the request again, to the clean run's outputs."""
    from vnpu.runtime.graph import models
    from vnpu.runtime.serving import serve_one_compiled
    g, prog = _rm1_program()
    x = models.example_inputs(g, seed=2)
    (clean,) = prog.serve([x])
    free = [d.card.dram_free for d in prog.devices]
    prog.devices[1].inject_faults({"pe_hang_rate": 1.0, "seed": 1})
    with pytest.raises(vnpu.DeviceFault):
        prog.serve([x])
    assert [d.card.dram_free for d in prog.devices][0::2] == free[0::2]       # the other cards: nothing left
    prog.devices[1].reset()
    prog.devices[1].inject_faults({"pe_hang_rate": 0.0, "seed": 1})
    status, outs, err = serve_one_compiled(prog, x)
    assert status == "ok" and err is None
    np.testing.assert_array_equal(outs[0], clean[0])
    prog.devices[1].inject_faults({"pe_hang_rate": 1.0, "seed": 1})
    status, outs, err = serve_one_compiled(prog, x, policy="fail")
    assert status == "failed" and isinstance(err, vnpu.DeviceFault) and outs is None
    assert prog.devices[1].fault is None                                       # reset either way
    with pytest.raises(vnpu.InvalidArgument, match="fault policy"):
        serve_one_compiled(prog, x, policy="pray")
    prog.release()


def test_a_lost_card_moves_its_tables_to_the_cards_left():
    from vnpu.runtime.graph import models
    from vnpu.runtime.serving import serve_one_compiled
    g, prog = _rm1_program()
    x = models.example_inputs(g, seed=3)
    (clean,) = prog.serve([x])
    prog.devices[2].inject_faults({"link_down_at_ns": 0.0})
    status, outs, err = serve_one_compiled(prog, x)
    assert status == "retried" and err is None
    np.testing.assert_allclose(outs[0], clean[0], rtol=0, atol=2e-3)          # fp16 on other cards: same rounding
    assert [d.index for d in prog.devices] == [0, 1] and prog.placement.cards == 2
    tables = [(prog.placement.stage[i], prog.graph.values[n.inputs[0]].data)
              for i, n in enumerate(prog.graph.nodes) if n.op == "embedding_bag"]
    assert {c for c, _ in tables} == {0, 1}
    assert all(prog.devices[c].card.is_pinned(t) for c, t in tables)
    kinds = {t["card"] for t in prog.profile().transfers}
    assert 2 not in kinds
    prog.devices[0].inject_faults({"link_down_at_ns": 0.0})
    prog.devices[1].inject_faults({"link_down_at_ns": 0.0})
    status, outs, err = serve_one_compiled(prog, x)
    assert status == "failed" and isinstance(err, vnpu.DeviceLost)


def test_embedding_indices_cross_pcie_as_int32_when_they_fit():
    """int64 inputs read only as embedding indices or offsets are sent as int32 when a request's values fit
    (half the bytes); an index beyond int32 is not wrapped into a valid row but refused, typed."""
    from vnpu.runtime.graph import models
    g, prog = _rm1_program()
    assert prog.index_inputs == {i for i in g.inputs if i.startswith(("indices_", "offsets_"))}
    x = models.example_inputs(g, seed=4)
    (out,) = prog.serve([x])
    np.testing.assert_allclose(out[0], run_host(g, x)[0], rtol=0, atol=1e-2)
    sent = {t["value"]: t["bytes"] for t in prog.profile().transfers if t["kind"] == "h2d"}
    for name, a in zip(g.inputs, x):
        assert sent[name] == (a.size * 4 if name in prog.index_inputs else a.nbytes), name
    bad = [a.copy() for a in x]
    k = g.inputs.index("indices_0")
    bad[k][0] = 2**32 + 1                        # wrapped to int32 it would be row 1
    with pytest.raises(vnpu.VnpuError, match="index|indices"):
        prog.serve([bad])
    prog.release()
