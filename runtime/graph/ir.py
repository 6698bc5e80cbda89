"""The model compiler's graph IR: small, typed, printable (Glow's high-level IR in spirit).

A `Graph` holds `Value`s (tensors: name, shape, dtype, and the array of a constant) and `Node`s in
topological order (op, input and output value names, attributes, and where the node came from in the
user's model). Op names and attributes follow `torch.nn.functional` / `vnpu.ops` (conv2d with stride,
padding, dilation, groups; linear with a [N, K] weight; max_pool2d; ...); `vnpu.runtime.graph.opset`
defines each op: its shape rule, a numpy implementation and its lowering to the card's kernels.

`print(graph)` lists it one node per line:

    %conv1 : float32[1, 64, 112, 112] = conv2d(%x, $conv1.w, $conv1.b) stride=2 padding=3   # model.onnx: Conv 'conv1'

Values written `%name` are computed, `$name` are constants (weights).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from vnpu.errors import InvalidArgument

DTYPES = ("float32", "float16", "int8", "int32", "int64", "bool", "uint8", "float64")


@dataclass
class Value:
    """A tensor of the graph: a graph input, a node's output or a constant (`data` not None)."""
    name: str
    shape: tuple
    dtype: str
    data: np.ndarray | None = field(default=None, repr=False)
    quant: tuple | None = None       # (scale, zero_point) of an int8 activation, set by the quantization pass

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def type_str(self):
        return f"{self.dtype}[{', '.join(str(d) for d in self.shape)}]"


@dataclass
class Node:
    """One operation: outputs = op(inputs, **attrs). An input name "" is an absent optional input."""
    op: str
    inputs: list
    outputs: list
    attrs: dict = field(default_factory=dict)
    name: str = ""
    source: str = ""                 # where it came from: "model.onnx: Conv 'conv1'", "model.py:12 (forward)"


class Graph:
    """Values and nodes in topological order, with named inputs and outputs."""

    def __init__(self, name="graph"):
        self.name = name
        self.values: dict[str, Value] = {}
        self.nodes: list[Node] = []
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self._ids = itertools.count()

    # --- building -----------------------------------------------------------------------------------------
    def fresh(self, hint="t"):
        """A value name not used yet."""
        hint = str(hint) or "t"
        while True:
            name = f"{hint}.{next(self._ids)}" if hint in self.values else hint
            if name not in self.values:
                return name

    def add_value(self, name, shape, dtype, data=None):
        if name in self.values:
            raise InvalidArgument(f"graph {self.name!r}: value {name!r} defined twice")
        dtype = str(np.dtype(dtype))
        if dtype not in DTYPES:
            raise InvalidArgument(f"graph {self.name!r}: value {name!r} has dtype {dtype}, not one of {DTYPES}")
        v = Value(name, tuple(int(d) for d in shape), dtype, data)
        self.values[name] = v
        return v

    def add_input(self, name, shape, dtype="float32"):
        self.add_value(name, shape, dtype)
        self.inputs.append(name)
        return name

    def add_const(self, name, array):
        a = np.asarray(array, order="C")          # (ascontiguousarray would make a 0-d array 1-d)
        if a.dtype == np.float64:                 # vnpu computes float32 at most: weights are stored so
            a = a.astype(np.float32)
        return self.add_value(self.fresh(name), a.shape, a.dtype, a).name

    def add_node(self, op, inputs, attrs=None, outputs=1, name="", source=""):
        """Append op(inputs) with its output types inferred (opset's shape rule). Returns the output name(s):
        one name when outputs is 1, else a list. `outputs` may also be a list of names to use."""
        from .opset import infer
        for i in inputs:
            if i and i not in self.values:
                raise InvalidArgument(f"graph {self.name!r}: {op} {name!r} reads {i!r}, which is not defined yet")
        node = Node(op, list(inputs), [], dict(attrs or {}), name or op, source)
        types = infer(self, node)
        if isinstance(outputs, (list, tuple)):
            names = list(outputs)
        else:
            names = []
            for _ in types:
                nm = self.fresh(name or op)
                while nm in names:
                    nm = f"{name or op}.{next(self._ids)}"
                names.append(nm)
        if len(names) != len(types):
            raise InvalidArgument(f"graph {self.name!r}: {op} {name!r} has {len(types)} outputs, {len(names)} named")
        for n, (shape, dtype) in zip(names, types):
            self.add_value(n, shape, dtype)
        node.outputs = list(names)
        self.nodes.append(node)
        return names[0] if len(names) == 1 and not isinstance(outputs, (list, tuple)) else list(names)

    def set_outputs(self, names):
        for n in names:
            if n not in self.values:
                raise InvalidArgument(f"graph {self.name!r}: output {n!r} is not a value of the graph")
        self.outputs = list(names)

    # --- reading --------------------------------------------------------------------------------------------
    def producers(self):
        """value name -> the node computing it."""
        return {o: n for n in self.nodes for o in n.outputs}

    def consumers(self):
        """value name -> the nodes reading it (in order)."""
        users = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    users.setdefault(i, []).append(n)
        return users

    def weight_bytes(self):
        return sum(v.nbytes for v in self.values.values() if v.is_const)

    def remove_unused(self):
        """Drop nodes whose outputs nobody reads (and are not graph outputs), then unread constants."""
        live = set(self.outputs)
        kept = []
        for n in reversed(self.nodes):
            if any(o in live for o in n.outputs):
                kept.append(n)
                live.update(i for i in n.inputs if i)
                live.update(n.outputs)          # a kept node's other outputs stay defined (a split's parts)
        self.nodes = kept[::-1]
        used = live | set(self.inputs)
        for name in [k for k, v in self.values.items() if k not in used]:
            del self.values[name]

    def copy(self):
        g = Graph(self.name)
        g.values = {k: Value(v.name, v.shape, v.dtype, v.data, v.quant) for k, v in self.values.items()}
        g.nodes = [Node(n.op, list(n.inputs), list(n.outputs), dict(n.attrs), n.name, n.source) for n in self.nodes]
        g.inputs, g.outputs = list(self.inputs), list(self.outputs)
        g._ids = itertools.count(next(self._ids))
        return g

    def _ref(self, name):
        if not name:
            return "_"
        v = self.values[name]
        return f"${name}" if v.is_const else f"%{name}"

    def format_node(self, n):
        outs = ", ".join(f"{self._ref(o)} : {self.values[o].type_str()}" for o in n.outputs)
        attrs = " ".join(f"{k}={_show(v)}" for k, v in n.attrs.items())
        src = f"   # {n.source}" if n.source else ""
        return f"{outs} = {n.op}({', '.join(self._ref(i) for i in n.inputs)}){' ' + attrs if attrs else ''}{src}"

    def __str__(self):
        lines = [f"graph {self.name}("
                 + ", ".join(f"%{i} : {self.values[i].type_str()}" for i in self.inputs) + "):"]
        consts = [v for v in self.values.values() if v.is_const]
        if consts:
            lines.append(f"  # {len(consts)} constants, {sum(v.nbytes for v in consts):,} bytes")
        lines += ["  " + self.format_node(n) for n in self.nodes]
        lines.append("  return " + ", ".join(self._ref(o) for o in self.outputs))
        return "\n".join(lines)

    def __repr__(self):
        return f"Graph({self.name!r}, {len(self.nodes)} nodes, {len(self.inputs)} inputs, {len(self.outputs)} outputs)"


def _show(v):
    if isinstance(v, (list, tuple)):
        return "(" + ",".join(_show(x) for x in v) + ")"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, np.ndarray):
        return f"array{list(v.shape)}"
    return str(v)
