"""The built-in models (vnpu.runtime.graph.models): ResNet-50, a BERT encoder and the DLRM presets built with
vnpu's own graph builder. Their layout (torchvision's / Hugging Face's / DLRM's parameter counts and names),
their numpy meaning against independent PyTorch models loaded with the graphs' weights, and their compiled
programs on the card against the numpy meaning."""
import numpy as np
import pytest

import vnpu
from vnpu.errors import InvalidArgument
from vnpu.runtime.graph import models
from vnpu.runtime.graph.interp import run_host
from vnpu.runtime.graph.ir import Graph

SMALL_BERT = dict(layers=2, hidden=64, heads=4, intermediate=128, seq=16, vocab=100)
SMALL = {
    "resnet50": dict(image=32),
    "bert": SMALL_BERT,
    "rm1": dict(rows_scale=1e-4),
    "rm2": dict(rows_scale=1e-4, pooling=8),
    "rm3": dict(rows_scale=1e-4),
}


def consts(g):
    return {k: v.data for k, v in g.values.items() if v.is_const}


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


# --- names, options, errors -----------------------------------------------------------------------------------
def test_names_aliases_and_errors():
    assert models.NAMES == ("resnet50", "bert", "rm1", "rm2", "rm3")
    assert models.build("bert-base", **SMALL_BERT).name == "bert"
    assert models.build("RM1", rows_scale=1e-4).name == "rm1"
    with pytest.raises(InvalidArgument, match="resnet50, bert, rm1, rm2, rm3"):
        models.build("vgg16")
    with pytest.raises(InvalidArgument, match="no option 'hidden'.*image=224"):
        models.build("resnet50", hidden=3)
    with pytest.raises(InvalidArgument, match="multiple of heads"):
        models.build("bert", **{**SMALL_BERT, "heads": 5})
    with pytest.raises(InvalidArgument, match="at most max_position"):
        models.build("bert", **{**SMALL_BERT, "max_position": 8})
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(InvalidArgument, match="batch must be a positive int"):
            models.build("rm1", batch=bad, rows_scale=1e-4)
    with pytest.raises(InvalidArgument, match="rows_scale"):
        models.build("rm1", rows_scale=2)
    with pytest.raises(InvalidArgument, match="Graph or a built-in model name"):
        models.example_inputs(3)


# --- every model at a small size: builds, prints, runs on the host ------------------------------------------------
@pytest.mark.parametrize("name", models.NAMES)
def test_small_models_build_print_and_run(name):
    batch = {"resnet50": 2, "bert": 2}.get(name, 4)
    g = models.build(name, batch=batch, **SMALL[name])
    text = str(g)
    assert text.startswith(f"graph {g.name}(") and f"# {name}: " in text
    assert len({n.name for n in g.nodes}) == len(g.nodes)            # node names are unique
    xs = models.example_inputs(g, seed=3)
    assert [x.shape for x in xs] == [g.values[i].shape for i in g.inputs]
    outs = run_host(g, xs)
    want = {"resnet50": [(batch, 1000)], "bert": [(batch, 16, 64)]}.get(name, [(batch, 1)])
    assert [o.shape for o in outs] == want and all(o.dtype == np.float32 for o in outs)
    assert all(np.isfinite(o).all() for o in outs)
    if name.startswith("rm"):
        assert ((outs[0] > 0) & (outs[0] < 1)).all()                   # sigmoid scores
    # deterministic weights; another seed, other weights
    again = consts(models.build(name, batch=batch, **SMALL[name]))
    assert all(np.array_equal(a, again[k]) for k, a in consts(g).items())
    other = consts(models.build(name, batch=batch, **SMALL[name], seed=1))
    assert any(not np.array_equal(a, other[k]) for k, a in consts(g).items() if a.dtype.kind == "f")


def test_resnet50_is_torchvisions_layout():
    g = models.build("resnet50")
    assert g.values["x"].shape == (1, 3, 224, 224) and g.values[g.outputs[0]].shape == (1, 1000)
    ops = [n.op for n in g.nodes]
    assert ops.count("conv2d") == 53 and ops.count("batch_norm") == 53 and ops.count("add") == 16
    assert ops.count("linear") == 1 and ops.count("max_pool2d") == 1 and ops.count("adaptive_avg_pool2d") == 1
    # torchvision.models.resnet50().parameters(): 25,557,032 (BN running statistics are buffers)
    params = sum(a.size for k, a in consts(g).items() if "running_" not in k)
    assert params == 25_557_032
    by_name = {n.name: n for n in g.nodes}
    c = by_name["layer2.0.conv2"]                                      # v1.5: the stride on the 3x3
    assert c.source == "resnet50: layer2.0.conv2" and c.attrs == {"stride": 2, "padding": 1}
    assert by_name["layer2.0.conv1"].attrs["stride"] == 1
    assert by_name["layer3.0.downsample.0"].attrs["stride"] == 2
    assert {"layer1.0.relu", "layer1.0.relu_1", "layer1.0.relu_2", "layer4.2.add"} <= set(by_name)
    bn = consts(g)
    assert np.ptp(bn["layer1.0.bn1.running_mean"]) > 0 and np.ptp(bn["layer1.0.bn1.running_var"]) > 0


def test_bert_base_is_hugging_faces_layout():
    g = models.build("bert-base")
    assert g.values["input_ids"].shape == (1, 128) and g.values["input_ids"].dtype == "int64"
    assert g.values[g.outputs[0]].shape == (1, 128, 768)
    # BertModel("bert-base-uncased") without its pooler: 109,482,240 - 590,592 parameters
    params = sum(a.size for k, a in consts(g).items() if a.dtype.kind == "f" and k != "attention.scale")
    assert params == 108_891_648
    assert [n.op for n in g.nodes].count("layer_norm") == 25
    assert sum(n.op == "bmm" for n in g.nodes) == 24


# --- against independent PyTorch models ---------------------------------------------------------------------------
torch = pytest.importorskip("torch", reason="PyTorch (the test extra) is the independent reference here")
nn, F = torch.nn, torch.nn.functional


class Bottleneck(nn.Module):
    """torchvision.models.resnet.Bottleneck (v1.5), written out here."""

    def __init__(self, cin, width, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != width * 4:
            self.downsample = nn.Sequential(nn.Conv2d(cin, width * 4, 1, stride, bias=False),
                                            nn.BatchNorm2d(width * 4))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    def __init__(self, base=64, classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = base
        for i, (blocks, width) in enumerate(zip((3, 4, 6, 3), (base, 2 * base, 4 * base, 8 * base)), start=1):
            layers = []
            for b in range(blocks):
                layers.append(Bottleneck(cin, width, 2 if b == 0 and i > 1 else 1))
                cin = width * 4
            setattr(self, f"layer{i}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def torch_resnet(g, base=64):
    m = ResNet50(base).eval()
    sd = {k: torch.from_numpy(a.copy()) for k, a in consts(g).items()}
    sd.update({k.replace("running_var", "num_batches_tracked"): torch.tensor(0) for k in sd if "running_var" in k})
    m.load_state_dict(sd, strict=True)                  # every name and shape of the graph is torchvision's
    return m


@pytest.mark.parametrize("batch, image", [(1, 32), (2, 64)])
def test_resnet50_matches_pytorch(batch, image):
    g = models.build("resnet50", batch=batch, image=image)
    (x,) = models.example_inputs(g, seed=5)
    (got,) = run_host(g, [x])
    with torch.no_grad():
        want = torch_resnet(g)(torch.from_numpy(x)).numpy()
    assert rel_err(got, want) < 1e-4
    assert (got.argmax(1) == want.argmax(1)).all()


def torch_bert(g, input_ids, mask=None):
    """The encoder written with torch.nn.TransformerEncoderLayer (post-norm, exact GELU) from the graph's
    weights; mask: additive [b, 1, 1, s] -> key padding (True = dropped)."""
    c = {k: torch.from_numpy(a.copy()) for k, a in consts(g).items()}
    hidden = c["embeddings.word_embeddings.weight"].shape[1]
    heads = hidden // g.values[next(n for n in g.nodes if n.op == "permute").outputs[0]].shape[-1]
    layers = sum(n.op == "bmm" for n in g.nodes) // 2
    ids = torch.from_numpy(input_ids)
    s = ids.shape[1]
    e = "embeddings"
    x = F.embedding(ids, c[f"{e}.word_embeddings.weight"]) + c[f"{e}.position_embeddings.weight"][:s] + \
        c[f"{e}.token_type_embeddings.weight"][0]
    x = F.layer_norm(x, (hidden,), c[f"{e}.LayerNorm.weight"], c[f"{e}.LayerNorm.bias"], 1e-12)
    pad = None if mask is None else torch.from_numpy(mask[:, 0, 0, :] < -1)
    for i in range(layers):
        p = f"encoder.layer.{i}"
        sa = f"{p}.attention.self"
        enc = nn.TransformerEncoderLayer(hidden, heads, c[f"{p}.intermediate.dense.weight"].shape[0], dropout=0.0,
                                         activation="gelu", layer_norm_eps=1e-12, batch_first=True,
                                         norm_first=False).eval()
        enc.load_state_dict({
            "self_attn.in_proj_weight": torch.cat([c[f"{sa}.{t}.weight"] for t in ("query", "key", "value")]),
            "self_attn.in_proj_bias": torch.cat([c[f"{sa}.{t}.bias"] for t in ("query", "key", "value")]),
            "self_attn.out_proj.weight": c[f"{p}.attention.output.dense.weight"],
            "self_attn.out_proj.bias": c[f"{p}.attention.output.dense.bias"],
            "linear1.weight": c[f"{p}.intermediate.dense.weight"], "linear1.bias": c[f"{p}.intermediate.dense.bias"],
            "linear2.weight": c[f"{p}.output.dense.weight"], "linear2.bias": c[f"{p}.output.dense.bias"],
            "norm1.weight": c[f"{p}.attention.output.LayerNorm.weight"],
            "norm1.bias": c[f"{p}.attention.output.LayerNorm.bias"],
            "norm2.weight": c[f"{p}.output.LayerNorm.weight"], "norm2.bias": c[f"{p}.output.LayerNorm.bias"]},
            strict=True)
        x = enc(x, src_key_padding_mask=pad)
    pooled = torch.tanh(F.linear(x[:, 0], c["pooler.dense.weight"], c["pooler.dense.bias"])) \
        if "pooler.dense.weight" in c else None
    return x.numpy(), None if pooled is None else pooled.numpy()


@pytest.mark.parametrize("mask", [False, True])
def test_bert_matches_pytorch(mask):
    g = models.build("bert", batch=2, **SMALL_BERT, mask=mask, pooler=mask)
    assert g.inputs == (["input_ids", "attention_mask"] if mask else ["input_ids"])
    xs = models.example_inputs(g, seed=2)
    assert xs[0].max() < 100 and xs[0].min() >= 0
    if mask:                      # the second sample's last quarter of the keys is padding
        assert (xs[1][0] == 0).all() and (xs[1][1, 0, 0, -4:] == -10000).all() and (xs[1][1, 0, 0, :-4] == 0).all()
    got = run_host(g, xs)
    with torch.no_grad():
        hidden, pooled = torch_bert(g, xs[0], xs[1] if mask else None)
    assert rel_err(got[0], hidden) < 1e-4
    if mask:
        assert got[1].shape == (2, 64) and rel_err(got[1], pooled) < 1e-4
        # the padded keys do not matter: other token ids there change nothing for the first 12 positions
        ids = xs[0].copy()
        ids[1, -4:] = (ids[1, -4:] + 1) % 100
        again = run_host(g, [ids, xs[1]])[0]
        assert np.allclose(again[1, :12], got[0][1, :12], rtol=1e-5, atol=1e-6)


def torch_dlrm(g, xs):
    c = {k: torch.from_numpy(a.copy()) for k, a in consts(g).items()}
    t = [torch.from_numpy(a) for a in xs]

    def mlp(x, prefix, last):
        n = sum(1 for k in c if k.startswith(prefix) and k.endswith(".weight"))
        for i in range(n):
            x = F.linear(x, c[f"{prefix}.{2 * i}.weight"], c[f"{prefix}.{2 * i}.bias"])
            x = torch.relu(x) if i < n - 1 else last(x)
        return x
    x = mlp(t[0], "bot_l", torch.relu)
    tables = (len(t) - 1) // 2
    bags = [nn.EmbeddingBag.from_pretrained(c[f"emb_l.{k}.weight"], mode="sum")(t[1 + 2 * k], t[2 + 2 * k])
            for k in range(tables)]
    z = torch.stack([x] + bags, dim=1)
    zz = torch.bmm(z, z.transpose(1, 2))
    i, j = torch.tril_indices(z.shape[1], z.shape[1], offset=-1)
    return mlp(torch.cat([x, zz[:, i, j]], dim=1), "top_l", torch.sigmoid).numpy()


@pytest.mark.parametrize("name", ["rm1", "rm2", "rm3"])
def test_dlrm_matches_pytorch_and_the_runtime_model(name):
    from vnpu.runtime.model import DLRM, PRESETS, preset
    g = models.build(name, batch=4, **SMALL[name])
    cfg = PRESETS[name]
    pooling = SMALL[name].get("pooling", cfg.pooling)
    rows = max(16, int(cfg.rows * 1e-4))
    assert g.inputs == ["dense"] + [f"{k}_{t}" for t in range(cfg.tables) for k in ("indices", "offsets")]
    assert g.values["dense"].shape == (4, cfg.dense_features)
    assert g.values["indices_0"].shape == (4 * pooling,) and g.values["emb_l.0.weight"].shape == (rows, cfg.dim)
    xs = models.example_inputs(g, seed=4)
    assert all(0 <= x.min() and x.max() < rows for x in xs[1::2])
    assert all(np.array_equal(o, np.arange(4) * pooling) for o in xs[2::2])
    (got,) = run_host(g, xs)
    with torch.no_grad():
        assert rel_err(got, torch_dlrm(g, xs)) < 1e-5
    # the very model vnpu.runtime serves (fp16 activations there: agreement to fp16 rounding)
    c = preset(name, 1e-4, table_format="fp32")
    c.pooling = pooling
    m = DLRM(c)
    assert np.array_equal(consts(g)["bot_l.0.weight"], m.bottom[0][0].T.astype(np.float32))
    dense16 = xs[0].astype(np.float16)
    lookups = [(xs[1 + 2 * t].astype(np.int32), xs[2 + 2 * t].astype(np.int32)) for t in range(cfg.tables)]
    (got16,) = run_host(g, [dense16.astype(np.float32)] + xs[1:])
    assert np.abs(got16 - m.reference(dense16, lookups)).max() < 2e-3


def test_example_inputs_by_name_and_for_any_graph():
    xs = models.example_inputs("bert", batch=3, seed=1, **SMALL_BERT, mask=True)
    assert xs[0].shape == (3, 16) and xs[0].dtype == np.int64 and xs[1].shape == (3, 1, 1, 16)
    assert np.array_equal(models.example_inputs("rm1", batch=2, rows_scale=1e-4)[2], [0, 80])
    g = Graph("g")
    x = g.add_input("x", (2, 3))
    i = g.add_input("i", (5,), "int32")
    g.set_outputs([g.add_node("add", [x, x]), g.add_node("embedding", [g.add_const("t", np.ones((7, 2))), i])])
    a, b = models.example_inputs(g, seed=0)
    assert a.dtype == np.float32 and b.dtype == np.int32 and b.max() < 7
    assert np.array_equal(models.example_inputs(g, seed=0)[1], b)


# --- compiled onto the card ------------------------------------------------------------------------------------------
def on_card(g, dtype="fp32", xs=None, **kw):
    xs = xs if xs is not None else models.example_inputs(g, seed=1)
    prog = vnpu.compile(g, cards=kw.pop("cards", 1), dtype=dtype, strategy=kw.pop("strategy", "single"),
                        calibration=[xs] if dtype == "int8" else None, **kw)
    assert prog.coverage().counts() == {"card": len(prog.graph.nodes), "host": 0, "unsupported": 0}, \
        str(prog.coverage())
    out = prog.run(*xs)
    return prog, list(out) if isinstance(out, tuple) else [out], run_host(g, xs)


def test_resnet50_on_the_card_fp32():
    """Every op of ResNet-50 (stem, bottlenecks with folded BN and fused residual + ReLU, pools, fc) through
    the card's kernels, at 32x32 to keep it fast."""
    g = models.build("resnet50", image=32)
    prog, (out,), (ref,) = on_card(g)
    assert rel_err(out, ref) < 1e-5
    ops = [n.op for n in prog.graph.nodes]
    assert "batch_norm" not in ops and "add" not in ops and "relu" not in ops      # folded and fused
    assert sum(n.op == "conv2d" and len(n.inputs) == 4 for n in prog.graph.nodes) == 16     # residual fused
    assert all(r.cycles > 0 for r in prog.profile().records if r.op != "reshape")


def test_narrow_resnet_on_the_card_fp16():
    g = models.build("resnet50", image=32, width=16)
    assert g.name == "resnet50_w16" and g.values["fc.weight"].shape == (1000, 512)
    prog, (out,), (ref,) = on_card(g, "fp16")
    (check,) = prog.last_check
    assert check["cosine"] > 0.9999 and rel_err(out, ref) < 1e-2


def test_resnet50_on_the_card_int8():
    g = models.build("resnet50", image=32)
    prog, (out,), (ref,) = on_card(g, "int8")
    (check,) = prog.last_check
    assert check["cosine"] > 0.999 and check["top1"] == 1.0


def test_bert_on_the_card():
    g = models.build("bert", batch=2, **SMALL_BERT, mask=True, pooler=True)
    prog, outs, refs = on_card(g)
    assert all(rel_err(o, r) < 1e-5 for o, r in zip(outs, refs))
    ops = {n.op for n in prog.graph.nodes}
    assert "add" in ops and {"bmm", "softmax", "gelu", "layer_norm", "permute", "embedding"} <= ops
    # the constant position / token-type lookups were folded
    assert sum(n.op == "embedding" for n in prog.graph.nodes) == 1


@pytest.mark.parametrize("name, rows_scale", [("rm1", 3e-3), ("rm3", 5e-3)])
def test_dlrm_on_the_cards_sparsenn(name, rows_scale):
    g = models.build(name, batch=4, rows_scale=rows_scale, pooling=10)     # tables of 1.3-1.5 MB: sharded
    prog, (out,), (ref,) = on_card(g, cards=2, strategy="sparsenn")
    assert np.abs(out - ref).max() < 1e-5
    assert {r.card for r in prog.profile().records if r.op == "embedding_bag"} == {0, 1}


def test_compile_by_name():
    prog = vnpu.compile("rm1", cards=1, dtype="fp32", strategy="single", batch=2)
    assert prog.graph.values["dense"].shape == (2, 128)
    xs = models.example_inputs("rm1", batch=2)
    out = prog.run(*xs)
    assert out.shape == (2, 1) and prog.last_check[0]["max_abs"] < 1e-5
