"""Built-in models written with vnpu's own graph builder (no PyTorch needed): ResNet-50, a BERT-base encoder
and the DLRM presets RM1-RM3 (issue 17 item 10). Weights are deterministic random (seeded numpy), so the
graphs exercise every pass (batch-norm folding, fusion, fp16, int8 calibration) and every card kernel with
realistic shapes, not accuracy.

    g = build("resnet50", batch=1)                # or "bert" / "bert-base", "rm1", "rm2", "rm3"
    xs = example_inputs(g, seed=0)                # valid inputs: images, token ids < vocab, indices < rows
    print(g); run_host(g, xs); vnpu.compile("resnet50", cards=1, dtype="int8")

Models and their options (keyword arguments of `build`):

- "resnet50": torchvision's ResNet-50 v1.5 (the stride on the 3x3 conv of a bottleneck). Input `x` float32
  [batch, 3, image, image]; output the logits [batch, classes]. Options image=224 (any size >= 1; tests use
  32 or 64), classes=1000, width=64 (the stem's and the first stage's channels; the stages have width, 2, 4
  and 8 x width, times 4 out of a bottleneck: anything but 64 is a narrower ResNet of ResNet-50's layout,
  for fast tests), seed=0. Conv weights He-initialized (normal, std sqrt(2 / fan_out), torchvision's
  kaiming_normal_ fan_out); every batch norm has random running mean / variance / gamma / beta (the last BN of
  each bottleneck a small gamma, 0.1-0.3, so the residual stream stays O(1) through 16 blocks and int8 / fp16
  see sensible ranges). Node names and sources are torchvision's module names ("layer2.0.conv2",
  "resnet50: layer2.0.conv2"); a module applied more than once (a bottleneck's `relu`) gets torch.fx's
  suffixes (relu, relu_1, relu_2), the residual add is "<block>.add".
- "bert" (alias "bert-base"): the BERT-base encoder (Hugging Face's BertModel layout, post-norm, exact erf
  GELU, layer-norm eps 1e-12). Inputs `input_ids` int64 [batch, seq] and, with mask=True, `attention_mask`
  float32 [batch, 1, 1, seq], *additive* (0 keeps a key, a large negative number such as -10000 drops it:
  Hugging Face's "extended" mask, given to softmax as its mask operand). Token types are all 0 and positions
  0..seq-1 (both constant lookups the compiler folds). Output the last hidden state [batch, seq, hidden],
  and with pooler=True also the pooled [CLS] output tanh(dense(h[:, 0])) [batch, hidden]. Options layers=12,
  hidden=768, heads=12, intermediate=3072, seq=128, vocab=30522, max_position=512, mask=False,
  pooler=False, seed=0. Weights and biases normal(0, 0.02) (BERT's init; biases random too, so they
  count), layer-norm gamma 1 + normal(0, 0.02). Attention per layer: Q, K, V `linear`, reshape
  [b, s, h, d] and permute to [b, h, s, d]; scores = bmm(Q, K, transpose_b) * 1/sqrt(d);
  softmax(scores, mask) over the keys; context = bmm(probs, V), permuted back and reshaped to [b, s, hidden].
- "rm1", "rm2", "rm3": the DeepRecSys DLRM presets of `vnpu.runtime.model.PRESETS`, with the very weights
  of `vnpu.runtime.model.DLRM` for the same preset, rows_scale and seed (the model the serving runtime runs,
  its fp16-valued dense weights taken as float32, its tables in float32). Inputs `dense` float32
  [batch, dense_features], then per table t `indices_t` int64 [batch * pooling] and `offsets_t` int64
  [batch] (bag b is indices[offsets[b]:offsets[b+1]]; the input shapes fix the total number of lookups,
  example_inputs gives every sample `pooling` of them, as the presets say). Graph: bottom MLP (linear + relu,
  the last layer too), one embedding_bag (sum) per table, the pooled rows stacked [batch, tables, dim]
  (reshape + cat), dot_interaction, top MLP (relu except the last layer), sigmoid: output [batch, 1].
  Options rows_scale=1e-3 (of the preset's rows, at least 16; the full RM1 is 8 tables x 4M rows),
  pooling=<the preset's>, seed=0, table_format="fp32" (or a packed format the embedding unit reads:
  "int8_rowwise" as the serving demo stores its tables, fp16, int8_rowwise_fp16, int4_rowwise; the tables are
  then uint8 constants [rows, row bytes], the very arrays of the DLRM model, and the embedding_bag nodes carry
  format and dim). Node names follow facebookresearch/dlrm's modules (bot_l.0, emb_l.3,
  top_l.4, interact, sigmoid).
"""
from __future__ import annotations

import math

import numpy as np

from vnpu.errors import InvalidArgument

from .ir import Graph

NAMES = ("resnet50", "bert", "rm1", "rm2", "rm3")
ALIASES = {"bert-base": "bert", "resnet-50": "resnet50"}

_OPTIONS = {
    "resnet50": {"image": 224, "classes": 1000, "width": 64, "seed": 0},
    "bert": {"layers": 12, "hidden": 768, "heads": 12, "intermediate": 3072, "seq": 128, "vocab": 30522,
             "max_position": 512, "mask": False, "pooler": False, "seed": 0},
    **{rm: {"rows_scale": 1e-3, "pooling": None, "seed": 0, "table_format": "fp32"} for rm in ("rm1", "rm2", "rm3")},
}


def build(name, batch=1, **options) -> Graph:
    """The built-in model `name` (one of NAMES, or an alias: "bert-base", "resnet-50") as a Graph for
    `batch` samples; options as the module's docstring lists per model. InvalidArgument for an unknown
    name, an unknown option or an invalid value."""
    key = _canonical(name)
    batch = _positive_int("batch", batch)
    unknown = sorted(set(options) - set(_OPTIONS[key]))
    if unknown:
        raise InvalidArgument(f"model {key!r} has no option {', '.join(map(repr, unknown))}; its options: "
                              f"{', '.join(f'{k}={v!r}' for k, v in _OPTIONS[key].items())}")
    opts = {**_OPTIONS[key], **options}
    if key == "resnet50":
        return resnet50(batch, **opts)
    if key == "bert":
        return bert(batch, **opts)
    return dlrm(key, batch, **opts)


def _canonical(name):
    if not isinstance(name, str):
        raise InvalidArgument(f"a built-in model name must be a str, one of {', '.join(NAMES)}; got {name!r}")
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in NAMES:
        raise InvalidArgument(f"no built-in model {name!r}; the built-in models: {', '.join(NAMES)} "
                              f"(aliases: {', '.join(f'{a} = {b}' for a, b in ALIASES.items())})")
    return key


def _positive_int(what, v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise InvalidArgument(f"{what} must be a positive int, got {v!r}")
    return int(v)


# --- ResNet-50 ----------------------------------------------------------------------------------------------------
class _Builder:
    """Adds nodes named after the model's modules, with torch.fx's suffixes when a module is used again."""

    def __init__(self, graph, model):
        self.g, self.model = graph, model
        self.used = {}

    def node(self, op, inputs, attrs=None, module="", name=None):
        n = self.used.get(module, 0)
        self.used[module] = n + 1
        return self.g.add_node(op, inputs, attrs, name=name or (module if n == 0 else f"{module}_{n}"),
                               source=f"{self.model}: {module}")


def resnet50(batch=1, image=224, classes=1000, width=64, seed=0, **_):
    """torchvision's ResNet-50 (v1.5) with deterministic random weights; see the module docstring."""
    batch, image, classes, base = _positive_int("batch", batch), _positive_int("image", image), \
        _positive_int("classes", classes), _positive_int("width", width)
    rng = np.random.default_rng(seed)
    g = Graph("resnet50" if base == 64 else f"resnet50_w{base}")
    b = _Builder(g, "resnet50")

    def conv(x, module, cin, cout, k, stride=1, padding=0):
        w = rng.standard_normal((cout, cin, k, k)) * math.sqrt(2.0 / (cout * k * k))
        return b.node("conv2d", [x, g.add_const(f"{module}.weight", w.astype(np.float32))],
                      {"stride": stride, "padding": padding}, module)

    def bn(x, module, c, gamma=(0.5, 1.5)):
        mean = rng.standard_normal(c) * 0.1
        var = rng.uniform(0.5, 2.0, c)
        weight = rng.uniform(*gamma, c)
        bias = rng.standard_normal(c) * 0.1
        ps = [g.add_const(f"{module}.{k}", np.asarray(v, np.float32)) for k, v in
              (("running_mean", mean), ("running_var", var), ("weight", weight), ("bias", bias))]
        return b.node("batch_norm", [x] + ps, {"eps": 1e-5}, module)

    x = g.add_input("x", (batch, 3, image, image), "float32")
    y = conv(x, "conv1", 3, base, 7, stride=2, padding=3)
    y = b.node("relu", [bn(y, "bn1", base)], module="relu")
    y = b.node("max_pool2d", [y], {"kernel_size": 3, "stride": 2, "padding": 1}, "maxpool")
    cin = base
    for li, (blocks, width) in enumerate(zip((3, 4, 6, 3), (base, 2 * base, 4 * base, 8 * base)), start=1):
        for bi in range(blocks):
            p = f"layer{li}.{bi}"
            stride = 2 if bi == 0 and li > 1 else 1
            out = conv(y, f"{p}.conv1", cin, width, 1)
            out = b.node("relu", [bn(out, f"{p}.bn1", width)], module=f"{p}.relu")
            out = conv(out, f"{p}.conv2", width, width, 3, stride=stride, padding=1)
            out = b.node("relu", [bn(out, f"{p}.bn2", width)], module=f"{p}.relu")
            out = conv(out, f"{p}.conv3", width, width * 4, 1)
            out = bn(out, f"{p}.bn3", width * 4, gamma=(0.1, 0.3))
            identity = y
            if bi == 0:                   # torchvision's order: the downsample after the main branch
                identity = conv(y, f"{p}.downsample.0", cin, width * 4, 1, stride=stride)
                identity = bn(identity, f"{p}.downsample.1", width * 4)
            out = b.node("add", [out, identity], module=f"{p}.add")
            y = b.node("relu", [out], module=f"{p}.relu")
            cin = width * 4
    y = b.node("adaptive_avg_pool2d", [y], {"output_size": 1}, "avgpool")
    y = b.node("reshape", [y], {"shape": (batch, cin)}, "flatten")
    w = rng.uniform(-1, 1, (classes, cin)) / math.sqrt(cin)          # torch.nn.Linear's default init
    bias = rng.uniform(-1, 1, classes) / math.sqrt(cin)
    y = b.node("linear", [y, g.add_const("fc.weight", w.astype(np.float32)),
                          g.add_const("fc.bias", bias.astype(np.float32))], module="fc")
    g.set_outputs([y])
    return g


# --- BERT ----------------------------------------------------------------------------------------------------------
def bert(batch=1, layers=12, hidden=768, heads=12, intermediate=3072, seq=128, vocab=30522, max_position=512,
         mask=False, pooler=False, seed=0, **_):
    """A BERT encoder (BERT-base by default) with deterministic random weights; see the module docstring."""
    batch, layers, hidden, heads = (_positive_int(k, v) for k, v in
                                    (("batch", batch), ("layers", layers), ("hidden", hidden), ("heads", heads)))
    intermediate, seq, vocab = (_positive_int(k, v) for k, v in
                                (("intermediate", intermediate), ("seq", seq), ("vocab", vocab)))
    max_position = _positive_int("max_position", max_position)
    if hidden % heads:
        raise InvalidArgument(f"bert: hidden ({hidden}) must be a multiple of heads ({heads})")
    if seq > max_position:
        raise InvalidArgument(f"bert: seq ({seq}) must be at most max_position ({max_position})")
    d = hidden // heads
    rng = np.random.default_rng(seed)
    g = Graph("bert")
    b = _Builder(g, "bert")

    def const(name, *shape, std=0.02, mean=0.0):
        return g.add_const(name, (mean + rng.standard_normal(shape) * std).astype(np.float32))

    def linear(x, module, n_out, n_in):
        return b.node("linear", [x, const(f"{module}.weight", n_out, n_in), const(f"{module}.bias", n_out)],
                      module=module)

    def layer_norm(x, module):
        return b.node("layer_norm", [x, const(f"{module}.weight", hidden, mean=1.0), const(f"{module}.bias", hidden)],
                      {"normalized_shape": (hidden,), "eps": 1e-12}, module)

    ids = g.add_input("input_ids", (batch, seq), "int64")
    am = g.add_input("attention_mask", (batch, 1, 1, seq), "float32") if mask else ""
    e = "embeddings"
    words = b.node("embedding", [const(f"{e}.word_embeddings.weight", vocab, hidden), ids],
                   module=f"{e}.word_embeddings")
    pos = b.node("embedding", [const(f"{e}.position_embeddings.weight", max_position, hidden),
                               g.add_const("position_ids", np.arange(seq, dtype=np.int64)[None])],
                 module=f"{e}.position_embeddings")
    types = b.node("embedding", [const(f"{e}.token_type_embeddings.weight", 2, hidden),
                                 g.add_const("token_type_ids", np.zeros((1, seq), np.int64))],
                   module=f"{e}.token_type_embeddings")
    x = b.node("add", [words, b.node("add", [pos, types], module=f"{e}.add")], module=f"{e}.add")
    x = layer_norm(x, f"{e}.LayerNorm")
    scale = g.add_const("attention.scale", np.float32(1.0 / math.sqrt(d)))
    for i in range(layers):
        p = f"encoder.layer.{i}"
        sa = f"{p}.attention.self"

        def heads_of(t, what):
            t = b.node("reshape", [t], {"shape": (batch, seq, heads, d)}, f"{sa}.{what}.view")
            return b.node("permute", [t], {"dims": (0, 2, 1, 3)}, f"{sa}.{what}.permute")
        q = heads_of(linear(x, f"{sa}.query", hidden, hidden), "query")
        k = heads_of(linear(x, f"{sa}.key", hidden, hidden), "key")
        v = heads_of(linear(x, f"{sa}.value", hidden, hidden), "value")
        s = b.node("bmm", [q, k], {"transpose_b": True}, f"{sa}.scores")               # [b, h, s, s]
        s = b.node("mul", [s, scale], module=f"{sa}.scale")
        probs = b.node("softmax", [s, am] if am else [s], {"dim": -1}, f"{sa}.softmax")
        ctx = b.node("bmm", [probs, v], module=f"{sa}.context")                         # [b, h, s, d]
        ctx = b.node("permute", [ctx], {"dims": (0, 2, 1, 3)}, f"{sa}.context.permute")
        ctx = b.node("reshape", [ctx], {"shape": (batch, seq, hidden)}, f"{sa}.context.view")
        a = linear(ctx, f"{p}.attention.output.dense", hidden, hidden)
        x = layer_norm(b.node("add", [a, x], module=f"{p}.attention.output.add"), f"{p}.attention.output.LayerNorm")
        h = linear(x, f"{p}.intermediate.dense", intermediate, hidden)
        h = b.node("gelu", [h], {"approximate": "none"}, f"{p}.intermediate.intermediate_act_fn")
        h = linear(h, f"{p}.output.dense", hidden, intermediate)
        x = layer_norm(b.node("add", [h, x], module=f"{p}.output.add"), f"{p}.output.LayerNorm")
    outs = [x]
    if pooler:
        cls = b.node("slice", [x], {"dim": 1, "start": 0, "end": 1}, "pooler.first_token")
        cls = b.node("reshape", [cls], {"shape": (batch, hidden)}, "pooler.first_token.view")
        outs.append(b.node("tanh", [linear(cls, "pooler.dense", hidden, hidden)], module="pooler.activation"))
    g.set_outputs(outs)
    return g


# --- DLRM ------------------------------------------------------------------------------------------------------------
def dlrm(name="rm1", batch=1, rows_scale=1e-3, pooling=None, seed=0, table_format="fp32", **_):
    """The DLRM preset `name` with vnpu.runtime.model.DLRM's weights; see the module docstring."""
    from vnpu.emulator.tables import FORMATS
    from vnpu.runtime.model import DLRM, preset
    key = _canonical(name)
    if key not in ("rm1", "rm2", "rm3"):
        raise InvalidArgument(f"dlrm: no preset {name!r}; one of rm1, rm2, rm3")
    batch = _positive_int("batch", batch)
    if table_format not in FORMATS:
        raise InvalidArgument(f"dlrm: table_format must be one of {', '.join(FORMATS)}, got {table_format!r}")
    cfg = preset(key, rows_scale, table_format=table_format, dense_dtype="fp16")
    cfg.seed = int(seed)
    if pooling is not None:
        cfg.pooling = _positive_int("pooling", pooling)
    return dlrm_graph(DLRM(cfg), batch)


def dlrm_graph(m, batch=1) -> Graph:
    """The graph of a `vnpu.runtime.model.DLRM` model `m` for `batch` samples, its tables the model's own arrays
    (packed ones shared, not copied: graphs of several batch sizes hold one copy of the tables)."""
    from vnpu.kernels.reference import unpack_rows
    cfg, key = m.cfg, m.cfg.name
    table_format = cfg.table_format
    batch = _positive_int("batch", batch)
    g = Graph(key)
    b = _Builder(g, key)

    def mlp(x, layers, prefix, last_act):
        for i, (w, bias) in enumerate(layers):                    # w [K, N] (x @ w): linear's weight is [N, K]
            x = b.node("linear", [x, g.add_const(f"{prefix}.{2 * i}.weight", np.ascontiguousarray(w.T, np.float32)),
                                  g.add_const(f"{prefix}.{2 * i}.bias", bias.astype(np.float32))],
                       module=f"{prefix}.{2 * i}")
            act = "relu" if i < len(layers) - 1 else last_act
            if act:
                x = b.node(act, [x], module=f"{prefix}.{2 * i + 1}" if act == "relu" else act)
        return x

    dense = g.add_input("dense", (batch, cfg.dense_features), "float32")
    lookups = []
    for t in range(cfg.tables):
        lookups.append((g.add_input(f"indices_{t}", (batch * cfg.pooling,), "int64"),
                        g.add_input(f"offsets_{t}", (batch,), "int64")))
    x = mlp(dense, m.bottom, "bot_l", "relu")
    pooled = []
    for t, (idx, off) in enumerate(lookups):
        if table_format == "fp32":
            table, attrs = unpack_rows(m.tables[t], "fp32", cfg.dim).astype(np.float32), {"mode": "sum"}
        else:        # the packed rows themselves (no copy): the embedding unit reads this format
            table, attrs = m.tables[t], {"mode": "sum", "format": table_format, "dim": cfg.dim}
        e = b.node("embedding_bag", [g.add_const(f"emb_l.{t}.weight", table), idx, off], attrs, f"emb_l.{t}")
        pooled.append(b.node("reshape", [e], {"shape": (batch, 1, cfg.dim)}, f"emb_l.{t}.view"))
    z = b.node("cat", pooled, {"dim": 1}, "stack") if len(pooled) > 1 else pooled[0]
    y = b.node("dot_interaction", [x, z], module="interact")
    y = mlp(y, m.top, "top_l", "sigmoid")
    g.set_outputs([y])
    return g


# --- inputs --------------------------------------------------------------------------------------------------------
def example_inputs(graph_or_name, batch=1, seed=0, **options):
    """A list of numpy inputs valid for the graph (or for build(name, batch, **options); `batch` and the
    options are used only with a name): float inputs standard normal, except an additive attention mask (a
    softmax's mask operand) which is 0 with the last quarter of the keys of every odd sample at -10000;
    indices of an embedding / embedding_bag below its table's rows; offsets of an embedding_bag spreading
    its indices evenly over the bags (the presets' fixed pooling)."""
    g = build(graph_or_name, batch, **options) if isinstance(graph_or_name, str) else graph_or_name
    if not isinstance(g, Graph):
        raise InvalidArgument(f"example_inputs takes a Graph or a built-in model name, got {type(g).__name__}")
    rng = np.random.default_rng(seed)
    users = g.consumers()
    out = []
    for name in g.inputs:
        v = g.values[name]
        roles = [(n.op, n.inputs.index(name), n) for n in users.get(name, [])]
        if np.dtype(v.dtype).kind == "f":
            if any(op == "softmax" and pos == 1 for op, pos, _ in roles):
                a = np.zeros(v.shape, v.dtype)
                keys = v.shape[-1] if v.shape else 0
                if a.ndim >= 1 and a.shape[0] > 1:
                    a[1::2, ..., keys - keys // 4:] = -10000.0
                out.append(a)
            else:
                out.append(rng.standard_normal(v.shape).astype(v.dtype))
            continue
        rows = [g.values[n.inputs[0]].shape[0] for op, pos, n in roles
                if (op in ("embedding", "embedding_bag") and pos == 1) or (op == "index_select" and pos == 1)]
        bags = [n for op, pos, n in roles if op == "embedding_bag" and pos == 2]
        if bags:
            total = g.values[bags[0].inputs[1]].shape[0]
            count = int(np.prod(v.shape, dtype=np.int64))
            out.append((np.arange(count, dtype=np.int64) * total // max(count, 1)).reshape(v.shape).astype(v.dtype))
        elif rows:
            out.append(rng.integers(0, min(rows), v.shape).astype(v.dtype))
        else:
            out.append(rng.integers(0, 2, v.shape).astype(v.dtype))
    return out
