"""The ONNX front end: an ONNX model (opsets 7 to 21) in, a vnpu `Graph` out.

    from vnpu.runtime.graph.frontends.onnx_frontend import from_onnx
    g = from_onnx("resnet50.onnx", batch=8)
    print(g)

What it does, in order:

* loads the model (a path, the serialized bytes or an `onnx.ModelProto`); a missing file or one that is not an
  ONNX model is an `InvalidArgument` naming the file;
* fixes the input shapes: every graph input (an input that is not an initializer; an initializer listed as an
  input too is a constant, as onnxruntime's default) must have a static shape. `batch=N` replaces the first
  dimension of every input, symbolic or fixed (the NCHW / NC... layout of image and sequence models);
  `shapes={"input": (1, 3, 224, 224)}` gives whole shapes. Any other symbolic dimension is an InvalidArgument
  naming the input and the dimension. A model that spells its batch inside a constant (AlexNet's Reshape to
  [1, 9216]) still imports with another batch: a Reshape whose constant target starts with the original batch,
  applied to a tensor that starts with the new one, takes the new batch there when the sizes then agree (the
  only place a batch is rewritten; anything else that does not fit fails with the node named);
* runs `onnx.shape_inference` (its types are the output types of the ops vnpu has no op for);
* maps every node onto `vnpu.runtime.graph.opset` ops (the table below), with source
  "<file>: <op_type> '<node name or first output>'". Every node whose inputs are all constants is evaluated
  here (with the opset's numpy implementations, or with onnxruntime for an op vnpu has no op for), so Shape /
  Gather / Concat / Reshape shape arithmetic, ConstantOfShape weights, Unsqueeze of parameters and
  DequantizeLinear of weights leave constants, not nodes;
* an op it cannot map becomes a `foreign` node (framework "onnx", op, the output types from ONNX shape
  inference, what vnpu would need, and `fn`, which runs that one node with onnxruntime), so a compiled model can
  run it on the host when the user allows it; with only constant inputs it becomes the constants onnxruntime
  computes for it. Nothing is dropped silently: only nodes none of whose outputs reach a graph output are
  removed (`Graph.remove_unused`).

Op mapping (ONNX -> vnpu):

    Conv (1-D and 2-D; auto_pad NOTSET/VALID/SAME_UPPER/SAME_LOWER, pads [t, l, b, r] -> padding (top, bottom,
      left, right), strides, dilations, group)                                   -> conv2d (1-D through a reshape)
    ConvTranspose (2-D; pads, output_padding, output_shape, auto_pad)            -> conv_transpose2d (+ slice)
    BatchNormalization (inference)                                               -> batch_norm
    MaxPool / AveragePool (2-D, or 1-D through a reshape): symmetric pads of at most half the kernel -> the
      pooling op with ceil_mode and count_include_pad as they are. Other pads (asymmetric, larger, or a
      ceil_mode window starting in the padding): an explicit pad (-inf for max) to the exact extent the ONNX
      windows read, then an unpadded pool; for an average, times a constant kh * kw / (the elements ONNX counts
      in each window: the input, plus the pads if count_include_pad), so the divisor is ONNX's exactly.
      The output size follows onnxruntime (and PyTorch): with ceil_mode, a last window that would start in the
      end padding is dropped (ONNX's shape inference keeps it; onnxruntime does not)
    GlobalAveragePool -> adaptive_avg_pool2d 1; GlobalMaxPool -> amax over H, W
    LRN (size, alpha, beta, bias) -> local_response_norm(size, alpha, beta, k=bias). ONNX divides alpha by size
      as PyTorch does (x / (bias + alpha / size * sum of squares) ** beta), so alpha is passed unchanged. The
      window is the same for an odd size; for an even size ONNX's window reaches one channel further up and
      PyTorch's one further down, so an even size is built from mul / pad / avg_pool2d / pow / div instead
      (onnxruntime refuses even sizes; this follows the ONNX spec's formula)
    Gemm -> linear (B or B^T as the [N, K] weight; a constant alpha folded into a constant weight, a constant
      beta*C that is one row into the bias); otherwise matmul / mul / add
    MatMul (batched, broadcasting) -> matmul
    Add Sub Mul Div Pow Max Min (n-ary Sum, Max, Min, Mean -> chains); an integer Div truncates (to after div);
      Pow by a constant 2 -> mul, 0.5 -> sqrt
    Relu Sigmoid Tanh Erf Sqrt Exp Log Abs Neg; Gelu (opset 20, approximate none/tanh; com.microsoft Gelu);
      Reciprocal -> div; LeakyRelu (0 <= alpha <= 1) -> maximum; PRelu, HardSigmoid, HardSwish from clamp / mul
    Clip (min/max attributes before opset 11, inputs after; non-constant bounds -> maximum/minimum) -> clamp
    Softmax / LogSoftmax: before opset 13 the input is flattened to 2-D at axis (reshape, softmax over dim 1,
      reshape back); from 13 it is one axis. LogSoftmax is x - max - log(sum(exp(x - max)))
    Reshape (0 copies a dimension unless allowzero, -1 inferred), Flatten -> reshape; Transpose -> permute;
      Concat -> cat; Split (attribute, input or num_outputs) -> split; Slice (attributes or constant inputs,
      negative steps, clamped as ONNX) -> slice per axis; Pad (constant mode; negative pads crop) -> pad;
      Expand, Tile -> expand (+ reshape); Unsqueeze / Squeeze (attribute or input) -> reshape
    Gather -> index_select; GatherElements -> gather; Where -> where; Cast, CastLike -> to
    ReduceMean / ReduceSum / ReduceMax (axes attribute or input, keepdims, noop_with_empty_axes) -> mean / sum /
      amax; ReduceMin, ReduceL1, ReduceL2, ReduceSumSquare, ReduceLogSum, ReduceLogSumExp from those
    ArgMax / ArgMin (select_last_index 0) -> argmax
    LayerNormalization (opset 17; scale and bias broadcast to the normalized shape) -> layer_norm
    Dropout -> its input (inference); its mask output, if read, is a constant of ones (inference keeps every
      element), unless training_mode is set (then foreign)
    Identity -> its input; Constant, ConstantOfShape, Shape, Size -> constants
    anything else (Einsum, Resize, InstanceNormalization, comparisons, ... and other domains) -> foreign

Limits: models over 2 GB (protobuf's limit) are not handled; sequence and optional values are not tensors and
are refused; a value of a dtype vnpu's graph has no name for (int16, bfloat16, string, ...) is refused with the
node named.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vnpu.errors import InvalidArgument, UnsupportedOp

from ..ir import DTYPES, Graph
from ..opset import OPS

__all__ = ["from_onnx", "OnnxNodeRunner"]


def _onnx():
    try:
        import onnx
    except ImportError as e:       # pragma: no cover - the core install
        raise InvalidArgument("the ONNX front end needs the onnx package (pip install onnx onnxruntime)") from e
    return onnx


class _Foreign(Exception):
    """Raised by a mapping that cannot express the node: the importer makes it a foreign node."""

    def __init__(self, needs):
        super().__init__(needs)
        self.needs = needs


# --- loading ----------------------------------------------------------------------------------------------------
def _load(model):
    """(ModelProto, label for messages, graph name)."""
    onnx = _onnx()
    if isinstance(model, onnx.ModelProto):
        label = model.graph.name or "model"
        _check_proto(model, f"the ModelProto {label!r}")
        return model, label, label
    if isinstance(model, (bytes, bytearray)):
        try:
            proto = onnx.load_model_from_string(bytes(model))
        except Exception as e:     # noqa: BLE001  (protobuf's DecodeError and friends)
            raise InvalidArgument(f"the bytes given are not an ONNX model: {e}") from None
        _check_proto(proto, "the bytes given")
        return proto, proto.graph.name or "model", proto.graph.name or "model"
    if isinstance(model, (str, os.PathLike)):
        p = Path(model)
        if not p.exists():
            raise InvalidArgument(f"{p}: no such file")
        if not p.is_file():
            raise InvalidArgument(f"{p}: not a file (an ONNX model is one .onnx file)")
        try:
            proto = onnx.load(str(p))
        except Exception as e:     # noqa: BLE001
            raise InvalidArgument(f"{p}: not an ONNX model (protobuf cannot parse it: {e})") from None
        _check_proto(proto, str(p))
        return proto, p.name, p.stem
    raise InvalidArgument(f"from_onnx takes a path, the model's bytes or an onnx.ModelProto, got "
                          f"{type(model).__name__}")


def _check_proto(proto, what):
    if proto.ir_version <= 0 or not proto.HasField("graph"):
        raise InvalidArgument(f"{what}: not an ONNX model (no IR version or graph in it)")
    if not proto.graph.output:
        raise InvalidArgument(f"{what}: the model's graph has no outputs")


def _np_dtype(elem_type, what):
    onnx = _onnx()
    try:
        dt = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:              # noqa: BLE001
        dt = None
    if dt is None or dt.name not in DTYPES:
        name = onnx.TensorProto.DataType.Name(elem_type) if elem_type in onnx.TensorProto.DataType.values() \
            else str(elem_type)
        raise InvalidArgument(f"{what} is {name}; vnpu's graph takes {', '.join(DTYPES)}")
    return dt


def _dims(tensor_type):
    """[int | str | None] of a TensorTypeProto's shape, None when it has no shape."""
    if not tensor_type.HasField("shape"):
        return None
    out = []
    for d in tensor_type.shape.dim:
        out.append(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None))
    return out


def _static(dims):
    return dims is not None and all(isinstance(d, int) for d in dims)


def _fit_inputs(proto, label, batch, shapes):
    """Set every graph input's shape to static dims (batch / shapes overrides); return the model to import
    (a copy when anything changed) and the first dimension the inputs had before."""
    inits = {i.name for i in proto.graph.initializer} | {i.values.name for i in proto.graph.sparse_initializer}
    shapes = dict(shapes or {})
    unknown = set(shapes) - {i.name for i in proto.graph.input}
    if unknown:
        raise InvalidArgument(f"{label}: shapes= names {sorted(unknown)}, which are not inputs of the model "
                              f"({', '.join(i.name for i in proto.graph.input if i.name not in inits)})")
    if batch is not None and (not isinstance(batch, (int, np.integer)) or isinstance(batch, bool) or batch < 1):
        raise InvalidArgument(f"from_onnx: batch must be a positive int, got {batch!r}")
    changed, orig_batch = False, None
    want = {}
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        if not vi.type.HasField("tensor_type"):
            raise InvalidArgument(f"{label}: input {vi.name!r} is not a tensor (a {vi.type.WhichOneof('value')}); "
                                  f"vnpu's graph takes tensors")
        dims = _dims(vi.type.tensor_type)
        if dims and orig_batch is None and isinstance(dims[0], int):
            orig_batch = dims[0]
        if vi.name in shapes:
            new = [int(d) for d in shapes[vi.name]]
        else:
            if dims is None:
                raise InvalidArgument(f"{label}: input {vi.name!r} has no shape in the model; give it with "
                                      f"shapes={{{vi.name!r}: (...)}}")
            new = list(dims)
            if batch is not None and new:
                new[0] = int(batch)
            for i, d in enumerate(new):
                if not isinstance(d, int):
                    hint = "pass batch=N for the first dimension or " if i == 0 else "pass "
                    raise InvalidArgument(
                        f"{label}: input {vi.name!r} has the dynamic dimension {d or '?'!r} at axis {i} (shape "
                        f"{['?' if e is None else e for e in dims]}); vnpu compiles static shapes: {hint}"
                        f"shapes={{{vi.name!r}: (...)}}")
        if new != dims:
            changed = True
        want[vi.name] = new
    if not changed:
        return proto, orig_batch, False
    onnx = _onnx()
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    for vi in m.graph.input:
        if vi.name in want:
            shp = vi.type.tensor_type.shape
            shp.Clear()
            for d in want[vi.name]:
                shp.dim.add().dim_value = d
    # the model's own intermediate and output shapes were for the old inputs: let inference redo them
    del m.graph.value_info[:]
    for vo in m.graph.output:
        if vo.type.HasField("tensor_type"):
            vo.type.tensor_type.ClearField("shape")
    return m, orig_batch, True


# --- running one node with onnxruntime -----------------------------------------------------------------------------
class OnnxNodeRunner:
    """The host implementation of a foreign ONNX node: a one-node model run by onnxruntime (the session is made
    on the first call). Called with the node's input arrays (None for an absent optional input); returns the
    outputs as a list."""

    def __init__(self, model_bytes, input_names, output_names, op_type, source):
        self.model_bytes = model_bytes
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.op_type = op_type
        self.source = source
        self._sess = None

    def _session(self):
        if self._sess is None:
            try:
                import onnxruntime as ort
            except ImportError:
                raise UnsupportedOp(f"{self.source}: running ONNX {self.op_type} on the host needs onnxruntime",
                                    op=self.op_type, source=self.source, needs="onnxruntime") from None
            so = ort.SessionOptions()
            so.log_severity_level = 3
            so.intra_op_num_threads = 1
            try:
                self._sess = ort.InferenceSession(self.model_bytes, so, providers=["CPUExecutionProvider"])
            except Exception as e:  # noqa: BLE001
                raise UnsupportedOp(f"{self.source}: onnxruntime cannot run ONNX {self.op_type}: "
                                    f"{str(e).strip().splitlines()[0][:300]}", op=self.op_type, source=self.source,
                                    needs=f"a vnpu op or an onnxruntime kernel for {self.op_type}") from None
        return self._sess

    def __call__(self, *xs):
        sess = self._session()
        feeds = {n: np.asarray(x) for n, x in zip(self.input_names, xs) if n and x is not None}
        try:
            return list(sess.run(self.output_names, feeds))
        except Exception as e:      # noqa: BLE001  (onnxruntime's own exception types)
            raise InvalidArgument(f"{self.source}: onnxruntime fails running ONNX {self.op_type} on inputs "
                                  f"{[list(np.shape(x)) for x in xs]}: {str(e).strip().splitlines()[0][:300]}") \
                from None

    def __repr__(self):
        return "onnxruntime"

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_sess"] = None
        return d


# --- helpers -----------------------------------------------------------------------------------------------------
def _attrs(node):
    onnx = _onnx()
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        out[a.name] = v
    return out


def _torch_padding(pads):
    """[(begin, end)] of H and W -> conv2d's padding: an int, (h, w) or (top, bottom, left, right)."""
    (t, b), (l, r) = pads
    if t == b and l == r:
        return t if t == l else (t, l)
    return (t, b, l, r)


def _pair(v):
    a, b = (int(e) for e in v)
    return a if a == b else (a, b)


def _same_pads(in_sp, k, s, d, mode):
    out = []
    for n, kk, ss, dd in zip(in_sp, k, s, d):
        o = -(-n // ss)
        total = max(0, (o - 1) * ss + (kk - 1) * dd + 1 - n)
        lo = total // 2 if mode == "SAME_UPPER" else total - total // 2
        out.append((lo, total - lo))
    return out


def _c_array(a):
    """A C-contiguous array of `a` keeping its shape (np.ascontiguousarray makes a 0-d array 1-d)."""
    a = np.asarray(a)
    return a if a.flags.c_contiguous else a.copy(order="C")


def _int_div(a, b):
    a, b = np.asarray(a), np.asarray(b)
    q = np.abs(a) // np.where(b == 0, 1, np.abs(b))
    return (np.sign(a) * np.sign(b) * q).astype(np.result_type(a, b))


def _subgraph_captures(graph, defined):
    """Names a subgraph reads from its enclosing scopes (in order, once)."""
    local = set(defined) | {i.name for i in graph.input} | {i.name for i in graph.initializer}
    out = []
    for n in graph.node:
        for i in n.input:
            if i and i not in local and i not in out:
                out.append(i)
        for a in n.attribute:
            for sg in list(a.graphs) + ([a.g] if a.HasField("g") else []):
                for i in _subgraph_captures(sg, local):
                    if i not in out:
                        out.append(i)
        local.update(n.output)
    return out


UNARY = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Erf": "erf", "Sqrt": "sqrt", "Exp": "exp",
         "Log": "log", "Abs": "abs", "Neg": "neg"}
BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow", "Max": "maximum",
          "Min": "minimum", "Sum": "add", "Mean": "add"}
# outputs a mapping computes (the others, when read, make the node foreign)
N_OUT = {"MaxPool": 1, "BatchNormalization": 1, "LayerNormalization": 1}


# --- the importer -------------------------------------------------------------------------------------------------
class _Importer:
    def __init__(self, proto, label, gname, orig_batch, overridden, batch):
        self.onnx = _onnx()
        self.label = label
        self.m = proto
        self.declared = {}
        self.orig_batch, self.overridden, self.batch = orig_batch, overridden, batch
        self.opsets = {(o.domain or ""): o.version for o in proto.opset_import}
        if "ai.onnx" in self.opsets:
            self.opsets.setdefault("", self.opsets["ai.onnx"])
        self.ver = self.opsets.get("", 1)
        self.g = Graph(gname)
        self.env = {}               # ONNX value name -> graph value name
        self.reserved = set()
        self.created = []           # graph values made while mapping the current node
        self.src = ""
        self.node = None

    # --- values ------------------------------------------------------------------------------------------------
    def name(self, hint):
        hint = str(hint) or "t"
        if hint not in self.g.values and hint not in self.reserved:
            return hint
        k = 1
        while f"{hint}.{k}" in self.g.values or f"{hint}.{k}" in self.reserved:
            k += 1
        return f"{hint}.{k}"

    def hint(self):
        n = self.node
        return (n.output[0] if n is not None and n.output and n.output[0] else (n.name if n is not None else "")) \
            or "t"

    def const(self, array, hint=None):
        a = _c_array(array)
        if a.dtype.name not in DTYPES:
            raise InvalidArgument(f"{self.src or self.label}: a constant of dtype {a.dtype}; vnpu's graph takes "
                                  f"{', '.join(DTYPES)}")
        n = self.name(hint or self.hint())
        self.g.add_value(n, a.shape, a.dtype, a)
        self.created.append(n)
        return n

    def arr(self, v):
        """The array of a constant value, else None."""
        if not v:
            return None
        val = self.g.values[v]
        return val.data if val.is_const else None

    def shape(self, v):
        return self.g.values[v].shape

    def dtype(self, v):
        return self.g.values[v].dtype

    def scalar(self, value, like):
        return self.const(np.asarray(value, dtype=self.dtype(like)))

    def op(self, op, inputs, attrs=None, n=1):
        """Append op(inputs), or evaluate it now when every input is a constant. Returns the output name (a list
        when n > 1)."""
        attrs = dict(attrs or {})
        ins = list(inputs)
        present = [i for i in ins if i]
        if present and all(self.g.values[i].is_const for i in present) and (op != "foreign" or attrs.get("fn")):
            xs = [self.g.values[i].data if i else None for i in ins]
            try:
                with np.errstate(all="ignore"):
                    res = OPS[op].host(xs, attrs)
            except (InvalidArgument, UnsupportedOp):
                raise
            except Exception as e:  # noqa: BLE001
                raise InvalidArgument(f"{self.src}: {op} of the constants {[list(np.shape(x)) for x in xs]} with "
                                      f"{ {k: v for k, v in attrs.items() if k != 'fn'} } fails: {e}") from None
            names = [self.const(r) for r in res]
        else:
            outs = []
            for _ in range(n):
                outs.append(self.name(self.hint()))
                self.reserved.add(outs[-1])         # distinct names for the outputs of one node
            try:
                names = self.g.add_node(op, ins, attrs, outputs=outs, name=self.node_name(), source=self.src)
            except InvalidArgument as e:
                raise InvalidArgument(f"{self.src}: {e}") from None
            self.created.extend(names)
        return names[0] if n == 1 else names

    def node_name(self):
        n = self.node
        return (n.name or (n.output[0] if n.output else "")) if n is not None else ""

    def reshape(self, x, shape):
        shape = tuple(int(d) for d in shape)
        if shape == self.shape(x):
            return x
        return self.op("reshape", [x], {"shape": shape})

    def cast_like(self, x, dtype):
        if self.dtype(x) == np.dtype(dtype).name:
            return x
        return self.op("to", [x], {"dtype": np.dtype(dtype).name})

    def need_const(self, v, what):
        a = self.arr(v)
        if a is None:
            raise InvalidArgument(f"{self.src}: {what} is computed at run time (from {v!r}); vnpu compiles static "
                                  f"shapes and needs it constant")
        return a

    # --- the model ---------------------------------------------------------------------------------------------------
    def run(self):
        onnx = self.onnx
        graph = self.m.graph
        for vo in graph.output:
            if vo.type.HasField("tensor_type"):
                self.declared[vo.name] = (_dims(vo.type.tensor_type), vo.type.tensor_type.elem_type)
        try:
            inferred = onnx.shape_inference.infer_shapes(self.m, check_type=False, strict_mode=False,
                                                         data_prop=True)
        except Exception as e:     # noqa: BLE001
            raise InvalidArgument(f"{self.label}: ONNX shape inference fails on the model: {e}") from None
        self.vi = {}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
            if vi.type.HasField("tensor_type"):
                self.vi[vi.name] = vi.type.tensor_type
        self.reserved = {o for n in graph.node for o in n.output if o} | {i.name for i in graph.input} | \
            {i.name for i in graph.initializer}
        # constants first (an initializer listed as an input too is a constant), then the real inputs
        from onnx import numpy_helper
        self.bad = {}               # initializers of a dtype the graph has no name for: an error when read
        for init in graph.initializer:
            try:
                a = numpy_helper.to_array(init)
            except Exception as e:  # noqa: BLE001
                self.bad[init.name] = f"initializer {init.name!r}, which onnx cannot read ({e})"
                continue
            if a.dtype.name not in DTYPES:
                self.bad[init.name] = f"initializer {init.name!r} of dtype {a.dtype}; vnpu's graph takes " \
                                      f"{', '.join(DTYPES)}"
                continue
            self.g.add_value(init.name, a.shape, a.dtype, _c_array(a))
            self.env[init.name] = init.name
        for sp in graph.sparse_initializer:
            self.env[sp.values.name] = self.const(self._sparse(sp), sp.values.name)
        for vi in graph.input:
            if vi.name in self.env or vi.name in self.bad:
                continue
            dt = _np_dtype(vi.type.tensor_type.elem_type, f"{self.label}: input {vi.name!r}")
            self.g.add_input(vi.name, _dims(vi.type.tensor_type), dt)
            self.env[vi.name] = vi.name
        readers = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        for a in (a for n in graph.node for a in n.attribute):
            for sg in list(a.graphs) + ([a.g] if a.HasField("g") else []):
                readers.update(_subgraph_captures(sg, ()))
        for node in graph.node:
            self.node = node
            self.created = []
            dom = "" if node.domain in ("", "ai.onnx") else node.domain
            op_name = node.op_type if not dom else f"{dom}:{node.op_type}"
            self.src = f"{self.label}: {op_name} '{node.name or (node.output[0] if node.output else '')}'"
            ins = []
            for i in node.input:
                if i in self.bad:
                    raise InvalidArgument(f"{self.src} reads the {self.bad[i]}")
                if i and i not in self.env:
                    raise InvalidArgument(f"{self.src} reads {i!r}, which no earlier node, input or initializer "
                                          f"defines (the nodes must be in topological order)")
                ins.append(self.env[i] if i else "")
            a = _attrs(node)
            used = [k for k, o in enumerate(node.output) if o and o in readers]
            handler = getattr(self, f"_{node.op_type}", None) if not dom else \
                getattr(self, f"_{dom.replace('.', '_')}_{node.op_type}", None)
            outs = None
            if handler is not None and (not used or max(used) < N_OUT.get(node.op_type, len(node.output))):
                try:
                    outs = handler(node, ins, a)
                except _Foreign as f:
                    outs, needs = None, f.needs
            elif handler is not None:
                needs = f"a vnpu op for ONNX {node.op_type} with its output #{max(used)} " \
                        f"{node.output[max(used)]!r}"
            else:
                needs = f"a vnpu op for ONNX {op_name}"
            if outs is None:
                self.created = []
                outs = self._foreign(node, ins, needs)
            for k, o in enumerate(node.output):
                if o and k < len(outs) and outs[k]:
                    self.env[o] = self._rename(outs[k], o)
        self.node = None
        self.src = ""
        outputs = []
        for vo in graph.output:
            v = self.env.get(vo.name)
            if vo.name in self.bad:
                raise InvalidArgument(f"{self.label}: graph output {vo.name!r} is the {self.bad[vo.name]}")
            if v is None:
                raise InvalidArgument(f"{self.label}: graph output {vo.name!r} is not computed by any node")
            if v != vo.name and vo.name not in self.g.values or v in outputs:
                nm = self.name(vo.name) if vo.name in self.g.values else vo.name
                v = self.g.add_node("identity", [v], {}, outputs=[nm], name=vo.name,
                                    source=f"{self.label}: graph output '{vo.name}'")[0]
            outputs.append(v)
        self.g.set_outputs(outputs)
        self.g.remove_unused()
        self._check_outputs(graph)
        return self.g

    def _sparse(self, sp):
        from onnx import numpy_helper
        vals = numpy_helper.to_array(sp.values)
        idx = numpy_helper.to_array(sp.indices).astype(np.int64)
        dense = np.zeros(tuple(sp.dims), vals.dtype)
        if idx.ndim == 1:
            dense.reshape(-1)[idx] = vals
        else:
            dense[tuple(idx.T)] = vals
        return dense

    def _rename(self, v, want):
        """Give the value made for ONNX output `want` that name when it was made for this node."""
        if v not in self.created or v == want or want in self.g.values:
            return v
        val = self.g.values.pop(v)
        val.name = want
        self.g.values[want] = val
        for n in reversed(self.g.nodes):
            if n.source != self.src:
                break
            n.outputs = [want if o == v else o for o in n.outputs]
            n.inputs = [want if i == v else i for i in n.inputs]
        self.created[self.created.index(v)] = want
        return want

    def _check_outputs(self, graph):
        if self.overridden:
            return
        for vo, v in zip(graph.output, self.g.outputs):
            dims, et = self.declared.get(vo.name, (None, 0))
            val = self.g.values[v]
            if _static(dims) and tuple(dims) != val.shape:
                raise InvalidArgument(f"{self.label}: output {vo.name!r} is declared {dims} in the model, the "
                                      f"import computes {list(val.shape)} (a front-end bug, or a model that "
                                      f"disagrees with itself)")

    # --- foreign ---------------------------------------------------------------------------------------------------
    def _foreign(self, node, ins, needs):
        onnx = self.onnx
        helper = onnx.helper
        captures = []
        for a in node.attribute:
            for sg in list(a.graphs) + ([a.g] if a.HasField("g") else []):
                for c in _subgraph_captures(sg, ()):
                    if c not in captures and c not in node.input:
                        if c not in self.env:
                            raise InvalidArgument(f"{self.src}: its subgraph reads {c!r}, which is not defined")
                        captures.append(c)
        in_names = list(node.input) + captures
        g_ins = ins + [self.env[c] for c in captures]
        out_names = [o for o in node.output if o]
        opsets = [helper.make_opsetid(d, v) for d, v in self.opsets.items()
                  if not (d == "ai.onnx" and "" in self.opsets)]
        ir = max(int(self.m.ir_version), 4)

        def vinfo(name, v):
            val = self.g.values[v]
            et = helper.np_dtype_to_tensor_dtype(np.dtype(val.dtype))
            return helper.make_tensor_value_info(name, et, list(val.shape))

        runner_inputs, seen = [], set()
        for nm, v in zip(in_names, g_ins):
            if nm and nm not in seen:
                seen.add(nm)
                runner_inputs.append(vinfo(nm, v))
        runner = helper.make_model(
            helper.make_graph([node], node.op_type, runner_inputs,
                              [helper.make_value_info(o, onnx.TypeProto()) for o in out_names]),
            opset_imports=opsets, ir_version=ir)
        fn = OnnxNodeRunner(runner.SerializeToString(), in_names, out_names, node.op_type, self.src)
        present = [i for i in g_ins if i]
        if present and all(self.g.values[i].is_const for i in present):
            try:                    # constants in: evaluated now (even an output of a data-dependent shape)
                res = fn(*[self.arr(i) for i in g_ins])
            except InvalidArgument:     # onnxruntime cannot: a foreign node, if its types are known
                res = None
            if res is not None:
                return self._spread(node, [self.const(np.asarray(r)) for r in res])

        # output types: ONNX shape inference on this one node with the shapes and (small) constants vnpu knows,
        # else the model's own (inferred or declared) types
        from onnx import numpy_helper
        inputs, inits = [], []
        for nm, v in zip(in_names, g_ins):
            if not nm or any(nm == i.name for i in inputs) or any(nm == i.name for i in inits):
                continue
            a = self.arr(v)
            if a is not None and a.size <= 65536:
                inits.append(numpy_helper.from_array(a, nm))
            else:
                inputs.append(vinfo(nm, v))
        types = {}
        try:
            m1 = helper.make_model(helper.make_graph([node], "one", inputs, [helper.make_value_info(o, onnx.TypeProto())
                                                                               for o in out_names], inits),
                                   opset_imports=opsets, ir_version=ir)
            inf = onnx.shape_inference.infer_shapes(m1, strict_mode=False, data_prop=True)
            for vo in inf.graph.output:
                if vo.type.HasField("tensor_type") and vo.type.tensor_type.elem_type:
                    types[vo.name] = vo.type.tensor_type
        except Exception:          # noqa: BLE001  (no schema, or inference refuses: the model's types then)
            pass
        out_types = []
        for o in out_names:
            tt = types.get(o)
            if tt is None or not _static(_dims(tt)):
                tt = self.vi.get(o) if (self.vi.get(o) is not None and _static(_dims(self.vi[o]))) else tt
            if tt is None or not tt.elem_type:
                raise InvalidArgument(f"{self.src}: vnpu has no op for it ({needs}) and ONNX shape inference gives "
                                      f"no type for its output {o!r}: the model must declare it (value_info)")
            dims = _dims(tt)
            if not _static(dims):
                raise InvalidArgument(f"{self.src}: vnpu has no op for it ({needs}) and ONNX shape inference gives "
                                      f"no static shape for its output {o!r} (got "
                                      f"{'no shape' if dims is None else ['?' if d is None else d for d in dims]}); "
                                      f"vnpu compiles static shapes")
            dt = _np_dtype(tt.elem_type, f"{self.src}: output {o!r}")
            out_types.append((tuple(dims), dt.name))
        attrs = dict(framework="onnx", op=node.op_type if not node.domain or node.domain == "ai.onnx"
                     else f"{node.domain}:{node.op_type}", types=out_types, needs=needs, fn=fn)
        outs = [self.name(o) for o in out_names]
        try:
            names = self.g.add_node("foreign", g_ins, attrs, outputs=outs, name=self.node_name(), source=self.src)
        except InvalidArgument as e:
            raise InvalidArgument(f"{self.src}: {e}") from None
        self.created.extend(names)
        return self._spread(node, names)

    def _spread(self, node, names):
        it = iter(names)
        return [next(it) if o else "" for o in node.output]

    # --- convolution -------------------------------------------------------------------------------------------------
    def _spatial_pads(self, a, in_sp, k, s, d):
        ap = a.get("auto_pad", "NOTSET") or "NOTSET"
        n = len(in_sp)
        if ap == "NOTSET":
            p = list(a.get("pads", [0] * 2 * n))
            if len(p) != 2 * n:
                raise InvalidArgument(f"{self.src}: pads {p} must have {2 * n} entries")
            return [(int(p[i]), int(p[i + n])) for i in range(n)]
        if ap == "VALID":
            return [(0, 0)] * n
        if ap in ("SAME_UPPER", "SAME_LOWER"):
            return _same_pads(in_sp, k, s, d, ap)
        raise InvalidArgument(f"{self.src}: auto_pad {ap!r} is not an ONNX value")

    def _Conv(self, node, x, a):
        X, W = x[0], x[1]
        B = x[2] if len(x) > 2 else ""
        xs, ws = self.shape(X), self.shape(W)
        nsp = len(xs) - 2
        if nsp not in (1, 2):
            raise _Foreign(f"a vnpu op for {nsp}-D convolution (ONNX Conv)")
        k = list(a.get("kernel_shape") or ws[2:])
        s = list(a.get("strides", [1] * nsp))
        d = list(a.get("dilations", [1] * nsp))
        pads = self._spatial_pads(a, xs[2:], k, s, d)
        if nsp == 1:
            X = self.reshape(X, (xs[0], xs[1], 1, xs[2]))
            W = self.reshape(W, (ws[0], ws[1], 1, ws[2]))
            s, d, pads = [1] + s, [1] + d, [(0, 0)] + pads
        attrs = {}
        if s != [1, 1]:
            attrs["stride"] = _pair(s)
        if any(p != (0, 0) for p in pads):
            attrs["padding"] = _torch_padding(pads)
        if d != [1, 1]:
            attrs["dilation"] = _pair(d)
        if int(a.get("group", 1)) != 1:
            attrs["groups"] = int(a.get("group", 1))
        y = self.op("conv2d", [X, W] + ([B] if B else []), attrs)
        if nsp == 1:
            y = self.reshape(y, (xs[0], ws[0], self.shape(y)[3]))
        return [y]

    def _ConvTranspose(self, node, x, a):
        X, W = x[0], x[1]
        B = x[2] if len(x) > 2 else ""
        xs, ws = self.shape(X), self.shape(W)
        if len(xs) != 4:
            raise _Foreign(f"a vnpu op for {len(xs) - 2}-D transposed convolution (ONNX ConvTranspose)")
        k = list(a.get("kernel_shape") or ws[2:])
        s = list(a.get("strides", [1, 1]))
        d = list(a.get("dilations", [1, 1]))
        op_ = list(a.get("output_padding", [0, 0]))
        g = int(a.get("group", 1))
        ap = a.get("auto_pad", "NOTSET") or "NOTSET"
        full = [s[i] * (xs[2 + i] - 1) + op_[i] + (k[i] - 1) * d[i] + 1 for i in range(2)]
        if "output_shape" in a or ap in ("SAME_UPPER", "SAME_LOWER"):
            outs = list(a["output_shape"])[-2:] if "output_shape" in a else [xs[2] * s[0], xs[3] * s[1]]
            pads = []
            for i in range(2):
                total = full[i] - outs[i]
                if total < 0:
                    raise _Foreign(f"a vnpu op for ONNX ConvTranspose with output_shape {outs} larger than the "
                                   f"full output {full}")
                pads.append((total // 2, total - total // 2) if ap == "SAME_UPPER"
                            else (total - total // 2, total // 2))
        elif ap == "VALID":
            pads = [(0, 0), (0, 0)]
        else:
            p = list(a.get("pads", [0, 0, 0, 0]))
            pads = [(p[0], p[2]), (p[1], p[3])]
        attrs = {}
        if s != [1, 1]:
            attrs["stride"] = _pair(s)
        if d != [1, 1]:
            attrs["dilation"] = _pair(d)
        if g != 1:
            attrs["groups"] = g
        ins = [X, W] + ([B] if B else [])
        if all(b == e for b, e in pads) and all(o < max(ss, dd) for o, ss, dd in zip(op_, s, d)):
            if any(b for b, _ in pads):
                attrs["padding"] = _pair([b for b, _ in pads])
            if any(op_):
                attrs["output_padding"] = _pair(op_)
            return [self.op("conv_transpose2d", ins, attrs)]
        trims = [(b, e - o) for (b, e), o in zip(pads, op_)]
        if any(b < 0 or e < 0 for b, e in trims):
            raise _Foreign("a vnpu op for ONNX ConvTranspose whose output_padding exceeds the end padding and the "
                           "stride")
        pm = [min(b, e) for b, e in trims]
        if any(pm):
            attrs["padding"] = _pair(pm)
        y = self.op("conv_transpose2d", ins, attrs)
        for i, ((b, e), m) in enumerate(zip(trims, pm)):
            n = self.shape(y)[2 + i]
            if b - m or e - m:
                y = self.op("slice", [y], {"dim": 2 + i, "start": b - m, "end": n - (e - m)})
        return [y]

    # --- pooling ---------------------------------------------------------------------------------------------------
    def _pool(self, node, x, a, kind):
        X = x[0]
        xs = self.shape(X)
        nsp = len(xs) - 2
        if nsp not in (1, 2):
            raise _Foreign(f"a vnpu op for {nsp}-D pooling (ONNX {node.op_type})")
        k = list(a["kernel_shape"])
        s = list(a.get("strides", [1] * nsp))
        d = list(a.get("dilations", [1] * nsp))
        ceil = bool(a.get("ceil_mode", 0))
        cip = bool(a.get("count_include_pad", 0))
        if kind == "avg" and any(e != 1 for e in d):
            raise _Foreign("a vnpu op for ONNX AveragePool with dilations (avg_pool2d has none)")
        if a.get("storage_order", 0) and kind == "max":
            pass                    # only the Indices output depends on it
        pads = self._spatial_pads(a, xs[2:], k, s, d)
        if nsp == 1:
            X = self.reshape(X, (xs[0], xs[1], 1, xs[2]))
            k, s, d, pads = [1] + k, [1] + s, [1] + d, [(0, 0)] + pads
        sp = self.shape(X)[2:]
        outs = []
        for n, kk, ss, dd, (pb, pe) in zip(sp, k, s, d, pads):
            span = dd * (kk - 1) + 1
            num = n + pb + pe - span
            o = (-(-num // ss) if ceil else num // ss) + 1
            if ceil and (o - 1) * ss >= n + pb:
                o -= 1          # onnxruntime's (and PyTorch's) rule: no window starts in the end padding
            if o < 1:
                raise InvalidArgument(f"{self.src}: the {kk}-wide window does not fit the padded input of {n}")
            outs.append(o)
        native = all(pb == pe and pb <= kk // 2 for (pb, pe), kk in zip(pads, k))
        if native:
            attrs = {"kernel_size": _pair(k)}
            if s != k:
                attrs["stride"] = _pair(s)
            if any(pb for pb, _ in pads):
                attrs["padding"] = _pair([pb for pb, _ in pads])
            if kind == "max" and d != [1, 1]:
                attrs["dilation"] = _pair(d)
            if ceil:
                attrs["ceil_mode"] = True
            if kind == "avg":
                attrs["count_include_pad"] = cip
            y = self.op(f"{kind}_pool2d", [X], attrs)
            if list(self.shape(y)[2:]) != outs:     # the pooling op's own output size rule disagrees
                native = False
                self.created.remove(y)
                if self.g.nodes and y in self.g.nodes[-1].outputs:
                    self.g.nodes.pop()
                    del self.g.values[y]
        if not native:
            # explicit padding to exactly the extent the ONNX windows read, then an unpadded pool
            ext = [(o - 1) * ss + dd * (kk - 1) + 1 for o, ss, dd, kk in zip(outs, s, d, k)]
            ends = [max(pe, e - n - pb) for (pb, pe), e, n in zip(pads, ext, sp)]
            width = (pads[1][0], ends[1], pads[0][0], ends[0])
            fill = -np.inf if kind == "max" else 0.0
            if np.dtype(self.dtype(X)).kind != "f":
                raise _Foreign(f"a vnpu op for ONNX {node.op_type} of {self.dtype(X)} with this padding")
            P = self.op("pad", [X], {"pad": width, "value": fill}) if any(width) else X
            attrs = {"kernel_size": _pair(k)}
            if s != k:
                attrs["stride"] = _pair(s)
            if kind == "max" and d != [1, 1]:
                attrs["dilation"] = _pair(d)
            y = self.op(f"{kind}_pool2d", [P], attrs)
            if kind == "avg":
                # ONNX's divisor: the elements counted (the input, plus the pads with count_include_pad) in each
                # window; avg_pool2d without padding divides by kh * kw
                Hp, Wp = self.shape(P)[2:]
                mask = np.zeros((Hp, Wp), np.int64)
                if cip:
                    mask[:pads[0][0] + sp[0] + pads[0][1], :pads[1][0] + sp[1] + pads[1][1]] = 1
                else:
                    mask[pads[0][0]:pads[0][0] + sp[0], pads[1][0]:pads[1][0] + sp[1]] = 1
                cnt = np.zeros(outs, np.int64)
                for i in range(outs[0]):
                    for j in range(outs[1]):
                        cnt[i, j] = mask[i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]].sum()
                if np.any(cnt != k[0] * k[1]):
                    f = np.where(cnt > 0, k[0] * k[1] / np.maximum(cnt, 1), 0.0)
                    y = self.op("mul", [y, self.const(f.astype(self.dtype(X)))])
        if nsp == 1:
            y = self.reshape(y, (xs[0], xs[1], self.shape(y)[3]))
        return [y]

    def _MaxPool(self, node, x, a):
        return self._pool(node, x, a, "max")

    def _AveragePool(self, node, x, a):
        return self._pool(node, x, a, "avg")

    def _GlobalAveragePool(self, node, x, a):
        X = x[0]
        if len(self.shape(X)) == 4:
            return [self.op("adaptive_avg_pool2d", [X], {"output_size": 1})]
        return [self.op("mean", [X], {"dim": tuple(range(2, len(self.shape(X)))), "keepdim": True})]

    def _GlobalMaxPool(self, node, x, a):
        X = x[0]
        return [self.op("amax", [X], {"dim": tuple(range(2, len(self.shape(X)))), "keepdim": True})]

    # --- normalization -------------------------------------------------------------------------------------------
    def _BatchNormalization(self, node, x, a):
        if a.get("training_mode", 0):
            raise _Foreign("a vnpu op for ONNX BatchNormalization in training mode")
        if self.ver < 9 and a.get("spatial", 1) == 0:
            raise _Foreign("a vnpu op for ONNX BatchNormalization with spatial=0")
        X, scale, B, mean, var = x[:5]
        return [self.op("batch_norm", [X, mean, var, scale, B], {"eps": float(a.get("epsilon", 1e-5))})]

    def _LRN(self, node, x, a):
        X = x[0]
        size = int(a["size"])
        alpha, beta, bias = float(a.get("alpha", 1e-4)), float(a.get("beta", 0.75)), float(a.get("bias", 1.0))
        if size % 2 == 1 and len(self.shape(X)) == 4:
            return [self.op("local_response_norm", [X], {"size": size, "alpha": alpha, "beta": beta, "k": bias})]
        # ONNX's window: floor((size-1)/2) channels down, ceil((size-1)/2) up
        xs = self.shape(X)
        N, C = xs[0], xs[1]
        rest = int(np.prod(xs[2:], dtype=np.int64))
        sq = self.op("mul", [X, X])
        t = self.reshape(sq, (N, 1, C, rest))
        lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
        t = self.op("pad", [t], {"pad": (0, 0, lo, hi)})
        t = self.op("avg_pool2d", [t], {"kernel_size": (size, 1), "stride": 1})
        t = self.reshape(t, xs)
        t = self.op("add", [self.op("mul", [t, self.scalar(alpha, X)]), self.scalar(bias, X)])
        t = self.op("pow", [t, self.scalar(beta, X)])
        return [self.op("div", [X, t])]

    def _LayerNormalization(self, node, x, a):
        X = x[0]
        xs = self.shape(X)
        axis = int(a.get("axis", -1)) % len(xs)
        ns = tuple(xs[axis:])
        ins = [X]
        for v in x[1:3]:
            if v and self.shape(v) != ns:
                c = self.arr(v)
                v = self.const(np.broadcast_to(c, ns)) if c is not None else self.op("expand", [v], {"shape": ns})
            ins.append(v)
        return [self.op("layer_norm", ins, {"normalized_shape": ns, "eps": float(a.get("epsilon", 1e-5))})]

    # --- elementwise -----------------------------------------------------------------------------------------------
    def _unary(self, node, x, a):
        return [self.op(UNARY[node.op_type], [x[0]])]

    _Relu = _Sigmoid = _Tanh = _Erf = _Sqrt = _Exp = _Log = _Abs = _Neg = _unary

    def _Identity(self, node, x, a):
        return [x[0]]

    def _Gelu(self, node, x, a):
        approx = a.get("approximate", "none")
        return [self.op("gelu", [x[0]], {"approximate": "tanh"} if approx == "tanh" else {})]

    def _com_microsoft_Gelu(self, node, x, a):
        if len([i for i in x if i]) != 1:
            raise _Foreign("a vnpu op for com.microsoft Gelu with a bias")
        return [self.op("gelu", [x[0]])]

    def _Reciprocal(self, node, x, a):
        return [self.op("div", [self.scalar(1, x[0]), x[0]])]

    def _LeakyRelu(self, node, x, a):
        alpha = float(a.get("alpha", 0.01))
        if not 0 <= alpha <= 1:
            raise _Foreign("a vnpu op for ONNX LeakyRelu with alpha outside [0, 1]")
        return [self.op("maximum", [x[0], self.op("mul", [x[0], self.scalar(alpha, x[0])])])]

    def _PRelu(self, node, x, a):
        X, slope = x
        neg = self.op("minimum", [X, self.scalar(0, X)])
        return [self.op("add", [self.op("relu", [X]), self.op("mul", [neg, slope])])]

    def _HardSigmoid(self, node, x, a, alpha=None, beta=None):
        X = x[0]
        alpha = float(a.get("alpha", 0.2)) if alpha is None else alpha
        beta = float(a.get("beta", 0.5)) if beta is None else beta
        t = self.op("add", [self.op("mul", [X, self.scalar(alpha, X)]), self.scalar(beta, X)])
        return [self.op("clamp", [t], {"min": 0.0, "max": 1.0})]

    def _HardSwish(self, node, x, a):
        return [self.op("mul", [x[0], self._HardSigmoid(node, x, {}, 1 / 6, 0.5)[0]])]

    def _Clip(self, node, x, a):
        X = x[0]
        lo = hi = None
        if self.ver < 11:
            lo, hi = a.get("min"), a.get("max")
            lo = None if lo is None or lo <= -3.4e38 else float(lo)
            hi = None if hi is None or hi >= 3.4e38 else float(hi)
        else:
            y = X
            for v, which, op in ((x[1] if len(x) > 1 else "", "min", "maximum"),
                                 (x[2] if len(x) > 2 else "", "max", "minimum")):
                if not v:
                    continue
                c = self.arr(v)
                if c is None:
                    y = self.op(op, [y, v])
                elif which == "min":
                    lo = float(c.reshape(-1)[0])
                else:
                    hi = float(c.reshape(-1)[0])
            X = y
        attrs = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
        if np.dtype(self.dtype(X)).kind in "iu":
            attrs = {k: int(v) for k, v in attrs.items()}
        return [self.op("clamp", [X], attrs) if attrs else X]

    def _binary(self, node, x, a):
        op = BINARY[node.op_type]
        if self.ver < 7 and a.get("broadcast", 0):
            raise _Foreign(f"ONNX {node.op_type} with opset-{self.ver} broadcast/axis attributes (convert the model "
                           f"to opset 7 or later: onnx.version_converter)")
        ins = [i for i in x if i]
        if node.op_type == "Pow":
            return [self._pow(*ins)]
        if node.op_type == "Div" and np.dtype(self.dtype(ins[0])).kind in "iu":
            A, B = ins
            ca, cb = self.arr(A), self.arr(B)
            if ca is not None and cb is not None:
                return [self.const(_int_div(ca, cb))]
            return [self.op("to", [self.op("div", [A, B])], {"dtype": self.dtype(A)})]
        y = ins[0]
        for v in ins[1:]:
            y = self.op(op, [y, v])
        if node.op_type == "Mean" and len(ins) > 1:
            y = self.op("div", [y, self.scalar(len(ins), y)])
        return [y]

    _Add = _Sub = _Mul = _Div = _Pow = _Max = _Min = _Sum = _Mean = _binary

    def _pow(self, X, E):
        c = self.arr(E)
        if c is not None and c.size == 1 and np.dtype(self.dtype(X)).kind == "f" and \
                np.broadcast_shapes(self.shape(X), c.shape) == self.shape(X):
            e = float(c.reshape(-1)[0])
            if e == 1.0:
                return X
            if e == 2.0:
                return self.op("mul", [X, X])
            if e == 0.5:
                return self.op("sqrt", [X])
        if self.dtype(E) != self.dtype(X):
            E = self.const(c.astype(self.dtype(X))) if c is not None else self.cast_like(E, self.dtype(X))
        return self.op("pow", [X, E])

    def _Where(self, node, x, a):
        return [self.op("where", x[:3])]

    def _Cast(self, node, x, a):
        dt = _np_dtype(int(a["to"]), f"{self.src}: the target type")
        return [self.cast_like(x[0], dt)]

    def _CastLike(self, node, x, a):
        return [self.cast_like(x[0], self.dtype(x[1]))]

    # --- matrix unit -----------------------------------------------------------------------------------------------
    def _MatMul(self, node, x, a):
        return [self.op("matmul", x[:2])]

    def _Gemm(self, node, x, a):
        A, B = x[0], x[1]
        C = x[2] if len(x) > 2 else ""
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        if a.get("transA", 0):
            A = self.op("permute", [A], {"dims": (1, 0)})
        dt = self.dtype(A)
        Bc = self.arr(B)
        scaled = alpha == 1.0
        if Bc is not None or a.get("transB", 0):
            W = B if a.get("transB", 0) else self.op("permute", [B], {"dims": (1, 0)})
            Wc = self.arr(W)
            if not scaled and Wc is not None:
                W = self.const((alpha * Wc.astype(np.float64)).astype(Wc.dtype))
                scaled = True
            N = self.shape(W)[0]
            bias = ""
            Cc = self.arr(C) if C else None
            if C and beta != 0 and Cc is not None and scaled and Cc.size in (1, N) and \
                    (Cc.ndim <= 1 or Cc.shape[-1] == Cc.size) and Cc.ndim <= 2:
                bias = C if beta == 1.0 and Cc.shape == (N,) and Cc.dtype == np.dtype(dt) else \
                    self.const(np.broadcast_to(beta * Cc.astype(np.float64).reshape(-1), (N,)).astype(dt))
                C = ""
            y = self.op("linear", [A, W] + ([bias] if bias else []))
        else:
            y = self.op("matmul", [A, B])
        if not scaled:
            y = self.op("mul", [y, self.scalar(alpha, y)])
        if C and beta != 0:
            Cc = self.arr(C)
            if beta != 1.0:
                C = self.const((beta * Cc.astype(np.float64)).astype(Cc.dtype)) if Cc is not None else \
                    self.op("mul", [C, self.scalar(beta, C)])
            y = self.op("add", [y, C])
        return [y]

    # --- data movement ---------------------------------------------------------------------------------------------
    def _Reshape(self, node, x, a):
        X = x[0]
        shape = [int(e) for e in (a["shape"] if self.ver < 5 else self.need_const(x[1], "its target shape"))]
        xs = self.shape(X)
        allowzero = int(a.get("allowzero", 0))
        t = [xs[i] if d == 0 and not allowzero and i < len(xs) else d for i, d in enumerate(shape)]
        size = int(np.prod(xs, dtype=np.int64))
        t = self._resolve(t, size, xs, shape)
        if self.overridden and self.batch is not None and self.orig_batch not in (None, self.batch) and shape and \
                shape[0] == self.orig_batch and xs and xs[0] == self.batch:
            t2 = self._resolve([self.batch] + t[1:] if -1 not in shape else [self.batch] + [
                xs[i] if d == 0 and not allowzero else d for i, d in enumerate(shape)][1:], size, xs, shape)
            if int(np.prod(t2, dtype=np.int64)) == size:
                t = t2      # the model spelled its batch in the constant: the new batch goes there
        if int(np.prod(t, dtype=np.int64)) != size:
            extra = f" (batch={self.batch} changed the input's first dimension; the model's constant shape " \
                    f"keeps another)" if self.overridden else ""
            raise InvalidArgument(f"{self.src}: cannot reshape {list(xs)} to {shape}{extra}")
        return [self.reshape(X, t)]

    def _resolve(self, t, size, xs, shape):
        t = list(t)
        if t.count(-1) > 1:
            raise InvalidArgument(f"{self.src}: shape {shape} has more than one -1")
        if -1 in t:
            rest = int(np.prod([d for d in t if d != -1], dtype=np.int64))
            t[t.index(-1)] = size // rest if rest else 0
        return t

    def _Flatten(self, node, x, a):
        xs = self.shape(x[0])
        axis = int(a.get("axis", 1))
        axis = axis + len(xs) if axis < 0 else axis
        return [self.reshape(x[0], (int(np.prod(xs[:axis], dtype=np.int64)), int(np.prod(xs[axis:], dtype=np.int64))))]

    def _Transpose(self, node, x, a):
        n = len(self.shape(x[0]))
        perm = tuple(int(p) % n for p in a.get("perm", list(range(n))[::-1]))
        if perm == tuple(range(n)):
            return [x[0]]
        return [self.op("permute", [x[0]], {"dims": perm})]

    def _Concat(self, node, x, a):
        ins = [i for i in x if i]
        if len(ins) == 1:
            return ins
        n = len(self.shape(ins[0]))
        return [self.op("cat", ins, {"dim": int(a["axis"]) % n})]

    def _Split(self, node, x, a):
        X = x[0]
        xs = self.shape(X)
        axis = int(a.get("axis", 0)) % len(xs)
        sizes = a.get("split") if self.ver < 13 else (self.need_const(x[1], "its split sizes").tolist()
                                                      if len(x) > 1 and x[1] else None)
        n = len(node.output)
        if sizes is None or len(sizes) == 0:
            dim = xs[axis]
            if "num_outputs" in a:
                n = int(a["num_outputs"])
                chunk = -(-dim // n)
                sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
            else:
                if dim % n:
                    raise InvalidArgument(f"{self.src}: cannot split {dim} into {n} equal parts")
                sizes = [dim // n] * n
        sizes = [int(e) for e in sizes]
        if sum(sizes) != xs[axis] or len(sizes) != n:
            raise InvalidArgument(f"{self.src}: split sizes {sizes} do not cover axis {axis} ({xs[axis]}) in "
                                  f"{n} outputs")
        if n == 1:
            return [X]
        return list(self.op("split", [X], {"sizes": tuple(sizes), "dim": axis}, n=n))

    def _Slice(self, node, x, a):
        X = x[0]
        xs = self.shape(X)
        if self.ver < 10:
            starts, ends = a["starts"], a["ends"]
            axes = a.get("axes", list(range(len(starts))))
            steps = [1] * len(starts)
        else:
            starts = self.need_const(x[1], "its starts").tolist()
            ends = self.need_const(x[2], "its ends").tolist()
            axes = self.need_const(x[3], "its axes").tolist() if len(x) > 3 and x[3] else list(range(len(starts)))
            steps = self.need_const(x[4], "its steps").tolist() if len(x) > 4 and x[4] else [1] * len(starts)
        y = X
        for st, en, ax, sp in zip(starts, ends, axes, steps):
            ax = int(ax) % len(xs)
            dim = xs[ax]
            st, en, sp = int(st), int(en), int(sp)
            if sp == 0:
                raise InvalidArgument(f"{self.src}: a step of 0")
            st = st + dim if st < 0 else st
            en = en + dim if en < 0 else en
            if sp > 0:
                st, en = min(max(st, 0), dim), min(max(en, 0), dim)
            else:
                st, en = min(max(st, 0), dim - 1), min(max(en, -1), dim - 1)
            if (st, en, sp) == (0, dim, 1):
                continue
            y = self.op("slice", [y], {"dim": ax, "start": st, "end": en if en >= 0 else None, "step": sp}
                        if sp != 1 else {"dim": ax, "start": st, "end": en})
        return [y]

    def _Pad(self, node, x, a):
        X = x[0]
        xs = self.shape(X)
        mode = a.get("mode", "constant")
        if self.ver < 11:
            pads, value = list(a.get("pads", a.get("paddings", []))), float(a.get("value", 0.0))
            axes = list(range(len(xs)))
        else:
            pads = self.need_const(x[1], "its pads").tolist()
            value = 0.0
            if len(x) > 2 and x[2]:
                c = self.arr(x[2])
                if c is None:
                    raise _Foreign("a vnpu op for ONNX Pad with a constant_value computed at run time")
                value = c.reshape(-1)[0].item() if c.size else 0.0
            axes = self.need_const(x[3], "its axes").tolist() if len(x) > 3 and x[3] else list(range(len(xs)))
        if mode != "constant":
            raise _Foreign(f"a vnpu op for ONNX Pad in mode {mode!r}")
        n = len(axes)
        begin = {int(ax) % len(xs): int(p) for ax, p in zip(axes, pads[:n])}
        end = {int(ax) % len(xs): int(p) for ax, p in zip(axes, pads[n:])}
        y = X
        for ax in sorted(begin):       # negative pads crop
            b, e = begin[ax], end[ax]
            if b < 0 or e < 0:
                dim = self.shape(y)[ax]
                y = self.op("slice", [y], {"dim": ax, "start": max(0, -b), "end": dim - max(0, -e)})
        width = []
        first = min([ax for ax in begin if begin[ax] > 0 or end[ax] > 0], default=None)
        if first is None:
            return [y]
        for ax in range(len(xs) - 1, first - 1, -1):
            width += [max(0, begin.get(ax, 0)), max(0, end.get(ax, 0))]
        attrs = {"pad": tuple(width)}
        if value:
            attrs["value"] = value
        return [self.op("pad", [y], attrs)]

    def _Expand(self, node, x, a):
        X = x[0]
        shape = tuple(int(e) for e in self.need_const(x[1], "its shape"))
        out = tuple(np.broadcast_shapes(self.shape(X), shape))
        if out == self.shape(X):
            return [X]
        return [self.op("expand", [X], {"shape": out})]

    def _Tile(self, node, x, a):
        X = x[0]
        reps = [int(e) for e in self.need_const(x[1], "its repeats")]
        xs = self.shape(X)
        if all(r == 1 for r in reps):
            return [X]
        inter = [e for d in xs for e in (1, d)]
        full = [e for r, d in zip(reps, xs) for e in (r, d)]
        t = self.reshape(X, inter)
        t = self.op("expand", [t], {"shape": tuple(full)})
        return [self.reshape(t, [r * d for r, d in zip(reps, xs)])]

    def _Unsqueeze(self, node, x, a):
        X = x[0]
        axes = a.get("axes") if self.ver < 13 else self.need_const(x[1], "its axes").tolist()
        xs = list(self.shape(X))
        r = len(xs) + len(axes)
        axes = sorted(int(e) % r for e in axes)
        for ax in axes:
            xs.insert(ax, 1)
        return [self.reshape(X, xs)]

    def _Squeeze(self, node, x, a):
        X = x[0]
        xs = self.shape(X)
        axes = a.get("axes") if self.ver < 13 else (self.need_const(x[1], "its axes").tolist()
                                                    if len(x) > 1 and x[1] else None)
        if axes is None or len(axes) == 0:
            axes = [i for i, d in enumerate(xs) if d == 1]
        axes = {int(e) % len(xs) for e in axes}
        if any(xs[ax] != 1 for ax in axes):
            raise InvalidArgument(f"{self.src}: cannot squeeze axes {sorted(axes)} of {list(xs)}")
        return [self.reshape(X, [d for i, d in enumerate(xs) if i not in axes])]

    def _Gather(self, node, x, a):
        X, I = x[0], x[1]
        xs = self.shape(X)
        axis = int(a.get("axis", 0)) % len(xs)
        c = self.arr(I)
        if c is not None:
            c = c.astype(np.int64)
            if c.size and (c.min() < -xs[axis] or c.max() >= xs[axis]):
                raise InvalidArgument(f"{self.src}: indices {c.min()}..{c.max()} out of range for axis {axis} "
                                      f"of {list(xs)}")
            if c.size and c.min() < 0:
                I = self.const(np.where(c < 0, c + xs[axis], c))
        return [self.op("index_select", [X, I], {"dim": axis})]

    def _GatherElements(self, node, x, a):
        X, I = x[0], x[1]
        xs, ish = self.shape(X), self.shape(I)
        axis = int(a.get("axis", 0)) % len(xs)
        for d, (n, m) in enumerate(zip(xs, ish)):
            if d != axis and m < n:     # the indices may be shorter than the data off the axis (as torch.gather)
                X = self.op("slice", [X], {"dim": d, "start": 0, "end": m})
        return [self.op("gather", [X, I], {"dim": axis})]

    def _Constant(self, node, x, a):
        from onnx import numpy_helper
        if "value" in a:
            v = numpy_helper.to_array(a["value"])
        elif "value_float" in a:
            v = np.asarray(a["value_float"], np.float32)
        elif "value_floats" in a:
            v = np.asarray(a["value_floats"], np.float32)
        elif "value_int" in a:
            v = np.asarray(a["value_int"], np.int64)
        elif "value_ints" in a:
            v = np.asarray(a["value_ints"], np.int64)
        elif "sparse_value" in a:
            v = self._sparse(a["sparse_value"])
        else:
            raise InvalidArgument(f"{self.src}: a Constant of {sorted(a)}; vnpu's graph takes numeric tensors")
        return [self.const(v)]

    def _ConstantOfShape(self, node, x, a):
        from onnx import numpy_helper
        shape = [int(e) for e in self.need_const(x[0], "its shape")]
        v = numpy_helper.to_array(a["value"]).reshape(-1) if "value" in a else np.zeros(1, np.float32)
        return [self.const(np.full(shape, v[0], v.dtype))]

    def _Shape(self, node, x, a):
        xs = self.shape(x[0])
        start = int(a.get("start", 0))
        end = a.get("end")
        return [self.const(np.asarray(xs[start:None if end is None else int(end)], np.int64))]

    def _Size(self, node, x, a):
        return [self.const(np.asarray(int(np.prod(self.shape(x[0]), dtype=np.int64)), np.int64))]

    def _Dropout(self, node, x, a):
        X = x[0]
        training = a.get("is_test", 1) == 0 if self.ver < 7 else False
        if len(x) > 2 and x[2]:
            t = self.arr(x[2])
            if t is None:
                raise _Foreign("a vnpu op for ONNX Dropout with a training_mode computed at run time")
            training = bool(t.reshape(-1)[0])
        if training:
            raise _Foreign("a vnpu op for ONNX Dropout in training mode")
        outs = [X]
        if len(node.output) > 1 and node.output[1]:
            outs.append(self.const(np.ones(self.shape(X), bool)))
        return outs

    # --- reductions ---------------------------------------------------------------------------------------------
    def _axes(self, node, x, a, input_from):
        if self.ver < input_from:
            axes = a.get("axes")
        else:
            axes = self.need_const(x[1], "its axes").tolist() if len(x) > 1 and x[1] else None
        return None if axes is None else [int(e) for e in axes]

    def _reduce(self, node, x, a, kind, input_from=18):
        X = x[0]
        n = len(self.shape(X))
        axes = self._axes(node, x, a, input_from)
        keep = bool(a.get("keepdims", 1))
        if not axes:
            if a.get("noop_with_empty_axes", 0):
                return None
            attrs = {"keepdim": keep}
            dims = tuple(range(n))
        else:
            dims = tuple(sorted({e % n for e in axes}))
            attrs = {"dim": dims if len(dims) > 1 else dims[0], "keepdim": keep}
        return kind, attrs, dims, keep

    def _red(self, node, x, a, op, pre=None, post=None, input_from=18):
        r = self._reduce(node, x, a, op, input_from)
        if r is None:
            return [x[0]]
        _, attrs, _, _ = r
        t = pre(x[0]) if pre else x[0]
        y = self.op(op, [t], attrs)
        y = self.cast_like(y, self.dtype(x[0]))     # ONNX keeps the dtype (the opset sums integers as int64)
        return [post(y) if post else y]

    def _ReduceMean(self, node, x, a):
        return self._red(node, x, a, "mean")

    def _ReduceSum(self, node, x, a):
        return self._red(node, x, a, "sum", input_from=13)

    def _ReduceMax(self, node, x, a):
        return self._red(node, x, a, "amax")

    def _ReduceMin(self, node, x, a):
        return self._red(node, x, a, "amax", pre=lambda v: self.op("neg", [v]), post=lambda v: self.op("neg", [v]))

    def _ReduceL1(self, node, x, a):
        return self._red(node, x, a, "sum", pre=lambda v: self.op("abs", [v]))

    def _ReduceL2(self, node, x, a):
        return self._red(node, x, a, "sum", pre=lambda v: self.op("mul", [v, v]), post=lambda v: self.op("sqrt", [v]))

    def _ReduceSumSquare(self, node, x, a):
        return self._red(node, x, a, "sum", pre=lambda v: self.op("mul", [v, v]))

    def _ReduceLogSum(self, node, x, a):
        return self._red(node, x, a, "sum", post=lambda v: self.op("log", [v]))

    def _ReduceLogSumExp(self, node, x, a):
        r = self._reduce(node, x, a, "sum", 18)
        if r is None:
            return [x[0]]
        _, attrs, dims, keep = r
        X = x[0]
        m = self.op("amax", [X], {**attrs, "keepdim": True})
        s = self.op("sum", [self.op("exp", [self.op("sub", [X, m])])], attrs)
        y = self.op("log", [s])
        return [self.op("add", [y, self.reshape(m, self.shape(y))])]

    def _ArgMax(self, node, x, a, neg=False):
        if a.get("select_last_index", 0):
            raise _Foreign(f"a vnpu op for ONNX {node.op_type} with select_last_index=1")
        X = x[0]
        axis = int(a.get("axis", 0)) % len(self.shape(X))
        if neg:
            X = self.op("neg", [X])
        return [self.op("argmax", [X], {"dim": axis, "keepdim": bool(a.get("keepdims", 1))})]

    def _ArgMin(self, node, x, a):
        return self._ArgMax(node, x, a, neg=True)

    def _Softmax(self, node, x, a, log=False):
        X = x[0]
        xs = self.shape(X)
        n = len(xs)
        axis = int(a.get("axis", 1 if self.ver < 13 else -1)) % n
        if self.ver < 13 and axis != n - 1:       # flattened to [prod(:axis), prod(axis:)]
            t = self.reshape(X, (int(np.prod(xs[:axis], dtype=np.int64)), int(np.prod(xs[axis:], dtype=np.int64))))
            y = self._softmax1(t, 1, log)
            return [self.reshape(y, xs)]
        return [self._softmax1(X, axis - n if axis == n - 1 else axis, log)]

    def _softmax1(self, X, dim, log):
        if not log:
            return self.op("softmax", [X], {"dim": dim})
        m = self.op("amax", [X], {"dim": dim, "keepdim": True})
        s = self.op("sub", [X, m])
        lse = self.op("log", [self.op("sum", [self.op("exp", [s])], {"dim": dim, "keepdim": True})])
        return self.op("sub", [s, lse])

    def _LogSoftmax(self, node, x, a):
        return self._Softmax(node, x, a, log=True)


def from_onnx(model, batch=None, shapes=None) -> Graph:
    """An ONNX model (a path, its bytes or an onnx.ModelProto) as a vnpu Graph (see the module's docstring for
    the op mapping).

    batch: replaces the first dimension of every graph input (symbolic or fixed).
    shapes: {input name: shape} for inputs with other dynamic dimensions (applied before batch is looked at;
    batch does not change a shape given here).

    InvalidArgument for a missing file, one that is not ONNX, a dynamic shape that stays unresolved, or a node
    that cannot be imported (the message names the file and the node)."""
    proto, label, gname = _load(model)
    proto, orig_batch, overridden = _fit_inputs(proto, label, batch, shapes)
    return _Importer(proto, label, gname, orig_batch, overridden, batch).run()
