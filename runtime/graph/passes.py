"""Graph passes, each a function Graph -> Graph (a new graph; the input is not changed), in the order the
compiler runs them:

- `fold_constants`: nodes whose inputs are all constants are evaluated now (the opset's numpy code);
- `fold_batch_norm`: batch_norm after conv2d (or linear) folded into its weights and bias;
- `simplify_layout`: a permute followed by its inverse, reshape chains, identities removed;
- `fuse`: conv2d + residual add + activation, linear + activation (the card kernels' fused epilogues);
- `to_fp16`: float32 weights and activations to float16 where the card computes fp16, casts at the edges;
- `quantize_int8`: post-training quantization calibrated on sample inputs: conv2d and linear on int8 with
  per-output-channel weight scales and per-tensor activation scales (symmetric, the scheme the int8 FC shares
  with fbgemm), dequantized to float32 between layers;
- `infer_shapes`: every value's type again from the op table (after edits; a mismatch is an error).
"""
from __future__ import annotations

import numpy as np

from vnpu.errors import InvalidArgument

from .interp import run_host
from .ir import Graph, Node
from .opset import OPS, NotLowered, infer

FOLD_LIMIT = 64 << 20          # constant-fold results up to this many bytes


def infer_shapes(graph: Graph) -> Graph:
    """Check (and set) every node output's type from the op table."""
    g = graph.copy()
    for n in g.nodes:
        for name, (shape, dtype) in zip(n.outputs, infer(g, n)):
            v = g.values[name]
            v.shape, v.dtype = tuple(int(d) for d in shape), str(np.dtype(dtype))
    return g


def _replace_uses(g, old, new):
    for n in g.nodes:
        n.inputs = [new if i == old else i for i in n.inputs]
    g.outputs = [new if o == old else o for o in g.outputs]


def fold_constants(graph: Graph) -> Graph:
    g = graph.copy()
    kept = []
    for n in g.nodes:
        ins = [g.values[i] for i in n.inputs if i]
        if n.op != "foreign" and ins and all(v.is_const for v in ins) or (n.op != "foreign" and not ins and n.op in OPS):
            out_bytes = sum(g.values[o].nbytes for o in n.outputs)
            if out_bytes <= FOLD_LIMIT:
                try:
                    outs = OPS[n.op].host([g.values[i].data if i else None for i in n.inputs], n.attrs)
                except NotLowered:
                    outs = None
                if outs is not None:
                    for o, a in zip(n.outputs, outs):
                        g.values[o].data = np.ascontiguousarray(a).astype(g.values[o].dtype)
                    continue
        kept.append(n)
    g.nodes = kept
    g.remove_unused()
    return g


def _single_use(g, name):
    users = g.consumers().get(name, [])
    return len(users) == 1 and name not in g.outputs


def fold_batch_norm(graph: Graph) -> Graph:
    """conv2d (or linear) -> batch_norm with constant statistics: w' = w * s, b' = (b - mean) * s + beta with
    s = gamma / sqrt(var + eps), per output channel, in float64."""
    g = graph.copy()
    prod = g.producers()
    drop = set()
    for bn in g.nodes:
        if bn.op != "batch_norm" or not bn.inputs[0] in prod:
            continue
        src = prod[bn.inputs[0]]
        params = [g.values[i] if i else None for i in bn.inputs[1:]]
        if src.op not in ("conv2d", "linear") or not _single_use(g, bn.inputs[0]) or "activation" in src.attrs \
                or len(src.inputs) > 3 or not all(p is None or p.is_const for p in params):
            continue
        w = g.values[src.inputs[1]]
        if not w.is_const or w.dtype not in ("float32", "float16"):
            continue
        C = w.shape[0]
        mean, var = params[0].data.astype(np.float64), params[1].data.astype(np.float64)
        gamma = params[2].data.astype(np.float64) if len(params) > 2 and params[2] is not None else np.ones(C)
        beta = params[3].data.astype(np.float64) if len(params) > 3 and params[3] is not None else np.zeros(C)
        s = gamma / np.sqrt(var + bn.attrs.get("eps", 1e-5))
        bias = g.values[src.inputs[2]].data.astype(np.float64) if len(src.inputs) > 2 and src.inputs[2] else 0.0
        w_new = (w.data.astype(np.float64) * s.reshape((C,) + (1,) * (w.data.ndim - 1))).astype(w.dtype)
        b_new = ((bias - mean) * s + beta).astype(np.float32)
        src.inputs = [src.inputs[0], g.add_const(src.inputs[1] + ".bn", w_new), g.add_const(
            (src.name or "conv") + ".bias.bn", b_new)]
        _replace_uses(g, bn.outputs[0], src.outputs[0])
        src.source = f"{src.source} + {bn.source or bn.name}" if bn.source else src.source
        drop.add(id(bn))
    g.nodes = [n for n in g.nodes if id(n) not in drop]
    g.remove_unused()
    return g


def _inverse(dims):
    inv = [0] * len(dims)
    for i, d in enumerate(dims):
        inv[d] = i
    return inv


def simplify_layout(graph: Graph) -> Graph:
    """Identities and inverse permute pairs removed, reshape chains shortened to one reshape."""
    g = graph.copy()
    prod = g.producers()
    drop = set()
    for n in g.nodes:
        src = prod.get(n.inputs[0]) if n.inputs and n.inputs[0] else None
        if n.op == "identity" or (n.op == "reshape" and g.values[n.inputs[0]].shape == g.values[n.outputs[0]].shape):
            if n.outputs[0] not in g.outputs:
                _replace_uses(g, n.outputs[0], n.inputs[0])
                drop.add(id(n))
        elif n.op == "reshape" and src is not None and src.op == "reshape" and id(src) not in drop:
            n.inputs = [src.inputs[0]]
        elif n.op == "permute" and src is not None and src.op == "permute" and id(src) not in drop and \
                list(n.attrs["dims"]) == _inverse(list(src.attrs["dims"])) and n.outputs[0] not in g.outputs:
            _replace_uses(g, n.outputs[0], src.inputs[0])
            drop.add(id(n))
    g.nodes = [n for n in g.nodes if id(n) not in drop]
    g.remove_unused()
    return g


def _activation_of(n):
    """The conv/linear epilogue activation a node is, or None."""
    if n.op == "relu":
        return "relu", None
    if n.op == "clamp":
        lo, hi = n.attrs.get("min"), n.attrs.get("max")
        if lo == 0 and hi == 6:
            return "relu6", None
        if lo is not None and hi is not None and lo <= hi:
            return "clip", (float(lo), float(hi))
        if lo == 0 and hi is None:
            return "relu", None
    return None


def fuse(graph: Graph) -> Graph:
    """conv2d [+ residual add] [+ relu / relu6 / clip] into one conv2d; linear + relu into one linear."""
    g = graph.copy()
    drop = set()
    changed = True
    while changed:
        changed = False
        users = g.consumers()
        for n in g.nodes:
            if id(n) in drop or n.op not in ("conv2d", "linear") or "activation" in n.attrs:
                continue
            out = n.outputs[0]
            if not _single_use(g, out):
                continue
            (u,) = users[out]
            act = _activation_of(u)
            if act is not None and (n.op == "conv2d" or act[0] == "relu"):
                n.attrs["activation"] = act[0]
                if act[1] is not None:
                    n.attrs["clip"] = act[1]
            elif n.op == "conv2d" and u.op == "add" and len(n.inputs) <= 3:
                other = u.inputs[1] if u.inputs[0] == out else u.inputs[0]
                ov = g.values[other]
                if ov.is_const or ov.shape != g.values[out].shape or ov.dtype != g.values[out].dtype or other == out:
                    continue
                n.inputs = (n.inputs + [""] * 3)[:3] + [other]
            else:
                continue
            _replace_uses(g, u.outputs[0], out)
            n.source = f"{n.source} + {u.op}" if n.source else n.source
            drop.add(id(u))
            changed = True
            break                    # the consumers changed: look again from the start
        g.nodes = [x for x in g.nodes if id(x) not in drop]
    # a residual must be computed before the conv that now reads it: move such convs after it
    g = _reorder(g)
    g.remove_unused()
    return g


def _reorder(g):
    """Nodes in an order where every input is produced before it is read (stable topological sort)."""
    ready = set(g.inputs) | {k for k, v in g.values.items() if v.is_const}
    pending, order = list(g.nodes), []
    while pending:
        for i, n in enumerate(pending):
            if all(not x or x in ready for x in n.inputs):
                order.append(n)
                ready.update(n.outputs)
                del pending[i]
                break
        else:
            raise InvalidArgument(f"graph {g.name}: a cycle through {pending[0].op} ({pending[0].source})")
    g.nodes = order
    return g


# ops the card computes only in fp32: the fp16 pass leaves them in fp32, with casts around them
FP32_ONLY = {"local_response_norm", "embedding_bag", "quantize", "foreign"}


def to_fp16(graph: Graph) -> Graph:
    """Float32 constants and activations to float16; graph inputs and outputs stay float32 (cast on the card
    at the edges); ops in FP32_ONLY keep float32 operands: a constant they read stays a float32 constant (an
    embedding table is not rounded to fp16 and cast back on the card for every request)."""
    g = graph.copy()
    half = {i for n in g.nodes if n.op not in FP32_ONLY for i in n.inputs if i}
    originals = {}              # a halved constant -> its float32 array, for the FP32_ONLY ops that read it too
    for k, v in g.values.items():
        if v.is_const and v.dtype == "float32" and k in half:
            originals[k] = v.data
            v.data, v.dtype = v.data.astype(np.float16), "float16"
    wide = {}                   # a halved constant -> the name of its float32 copy, made when first read
    out = Graph(g.name)
    out.values = {k: v for k, v in g.values.items() if v.is_const}
    out._ids = g._ids
    rename = {}
    for i in g.inputs:
        v = g.values[i]
        out.add_input(i, v.shape, v.dtype)
        if v.dtype == "float32":
            rename[i] = out.add_node("to", [i], {"dtype": "float16"}, name=f"{i}.fp16", source="fp16: input cast")

    def cast(name, dtype):
        if out.values[name].dtype == dtype or out.values[name].dtype not in ("float32", "float16"):
            return name
        if dtype == "float32" and name in originals:      # the constant's float32 original, not a cast on the card
            if name not in wide:
                wide[name] = out.add_const(f"{name}.float32", originals[name])
            return wide[name]
        return out.add_node("to", [name], {"dtype": dtype}, name=f"{name}.{dtype}", source="fp16: cast")
    for n in g.nodes:
        ins = [rename.get(i, i) for i in n.inputs]
        attrs = dict(n.attrs)
        if n.op in FP32_ONLY:
            ins = [cast(i, "float32") if i else i for i in ins]
            if n.op == "embedding_bag":     # fp32 table and sums, the pooled rows rounded once to fp16
                attrs["out_dtype"] = "float16"
        else:
            ins = [cast(i, "float16") if i and out.values[i].dtype == "float32" else i for i in ins]
        out.add_node(n.op, ins, attrs, outputs=list(n.outputs), name=n.name, source=n.source)
    outs = []
    for o in g.outputs:
        src = rename.get(o, o)
        outs.append(cast(src, "float32") if g.values[o].dtype == "float32" else src)
    out.set_outputs(outs)
    out.inputs = list(g.inputs)
    return out


def quantize_int8(graph: Graph, samples) -> Graph:
    """Post-training int8 quantization calibrated on `samples` (a list of input lists): every conv2d and
    linear with float32 constant weights computes on int8: its input quantized per tensor (symmetric,
    scale = max|x| / 127 over the samples), its weights per output channel (scale = max|w[oc]| / 127), the
    int32 sums dequantized to float32 with the bias, residual and activation fused."""
    if not samples:
        raise InvalidArgument("int8 quantization needs calibration samples (a list of example inputs)")
    ranges = {}
    for s in samples:
        _, env = run_host(graph, list(s), keep=True)
        for n in graph.nodes:
            if n.op in ("conv2d", "linear"):
                # the input, and a conv's residual (an int8 residual stream needs its range too)
                for v in [n.inputs[0]] + (n.inputs[3:4] if n.op == "conv2d" else []):
                    x = env[v]
                    if x.dtype.kind == "f" and x.size:
                        ranges[v] = max(ranges.get(v, 0.0), float(np.nanmax(np.abs(x[np.isfinite(x)]), initial=0.0)))
    g = graph.copy()
    quantized = {}
    nodes = []
    for n in g.nodes:
        w = g.values[n.inputs[1]] if n.op in ("conv2d", "linear") and len(n.inputs) > 1 else None
        if w is None or not w.is_const or w.dtype != "float32" or n.inputs[0] not in ranges or \
                g.values[n.inputs[0]].dtype != "float32":
            nodes.append(n)
            continue
        x = n.inputs[0]
        x_scale = max(ranges[x], 1e-12) / 127.0
        if x not in quantized:
            q = g.fresh(f"{x}.q")
            g.add_value(q, g.values[x].shape, "int8")
            nodes.append(Node("quantize", [x], [q], {"scale": x_scale, "zero_point": 0}, f"{x}.quantize",
                              f"int8: quantize {x}"))
            quantized[x] = q
        wd = w.data.astype(np.float64)
        amax = np.abs(wd.reshape(wd.shape[0], -1)).max(axis=1)
        w_scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        wq = np.clip(np.rint(wd / w_scale.reshape((-1,) + (1,) * (wd.ndim - 1))), -127, 127).astype(np.int8)
        n.inputs = [quantized[x], g.add_const(n.inputs[1] + ".int8", wq)] + n.inputs[2:]
        n.attrs.update(x_scale=float(np.float32(x_scale)), w_scale=w_scale)
        nodes.append(n)
    g.nodes = nodes
    g.remove_unused()
    g = _requantize_in_epilogue(infer_shapes(g))
    return infer_shapes(_int8_residual_stream(infer_shapes(g), ranges))


def _int8_residual_stream(g, ranges):
    """A ResNet's residual stream in int8: an int8 conv whose float result is read only by quantize ops and as
    the residual of one-group convs requantizes in its epilogue (scale = the value's calibrated range / 127, the
    same scale its quantize consumers use), the quantize ops go, and the residual readers dequantize it on the
    card (residual_scale): 1 byte per element written and read instead of 4."""
    users = g.consumers()
    prod = g.producers()
    drop = set()
    for v, src in list(prod.items()):
        if src.op not in ("conv2d", "linear") or "out_scale" in src.attrs or v in g.outputs or v not in ranges or \
                g.values[v].dtype != "float32" or g.values[src.inputs[0]].dtype != "int8":
            continue
        readers = users.get(v, [])
        scale = float(np.float32(max(ranges[v], 1e-12) / 127.0))
        ok = readers and all(
            (u.op == "quantize" and u.inputs[0] == v and float(np.float32(u.attrs["scale"])) == scale and
             u.attrs.get("zero_point", 0) == 0) or
            (u.op == "conv2d" and len(u.inputs) > 3 and u.inputs[3] == v and u.inputs[0] != v and
             u.attrs.get("groups", 1) == 1 and u.attrs.get("dilation", 1) in (1, (1, 1)) and
             g.values[u.inputs[0]].dtype == "int8") for u in readers)
        if not ok:
            continue
        src.attrs["out_scale"], src.attrs["out_zero_point"] = scale, 0
        g.values[v].dtype = "int8"
        for u in readers:
            if u.op == "quantize":
                _replace_uses(g, u.outputs[0], v)
                drop.add(id(u))
            else:
                u.attrs["residual_scale"], u.attrs["residual_zero_point"] = scale, 0
    g.nodes = [n for n in g.nodes if id(n) not in drop]
    g.remove_unused()
    return g


def _requantize_in_epilogue(g):
    """An int8 conv2d or linear whose float result only feeds a quantize: it requantizes in its own epilogue
    (out_scale, out_zero_point; the same vcvt rounding as the quantize op) and the quantize goes."""
    users = g.consumers()
    prod = g.producers()
    drop = set()
    for q in g.nodes:
        if q.op != "quantize":
            continue
        x = q.inputs[0]
        src = prod.get(x)
        if src is None or src.op not in ("conv2d", "linear") or "out_scale" in src.attrs or x in g.outputs or \
                len(users.get(x, [])) != 1 or g.values[src.inputs[0]].dtype != "int8":
            continue
        src.attrs["out_scale"] = q.attrs["scale"]
        src.attrs["out_zero_point"] = q.attrs.get("zero_point", 0)
        g.values[x].dtype = "int8"
        _replace_uses(g, q.outputs[0], x)
        drop.add(id(q))
    g.nodes = [n for n in g.nodes if id(n) not in drop]
    g.remove_unused()
    return g


def optimize(graph: Graph, dtype="float32", samples=None) -> Graph:
    """The compiler's pass pipeline for a compute dtype ("float32", "float16" or "int8")."""
    g = fold_constants(infer_shapes(graph))
    g = simplify_layout(fold_batch_norm(g))
    g = fuse(fold_constants(g))
    if dtype == "float16":
        g = to_fp16(g)
    elif dtype == "int8":
        g = quantize_int8(g, samples)
    return infer_shapes(g)
