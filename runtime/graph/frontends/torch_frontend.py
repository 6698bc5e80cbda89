"""The PyTorch front end: an `nn.Module` (through `torch.export`) or an `ExportedProgram` in, a `Graph` out.

    g = from_torch(model, (x,))     # torch.export.export(model.eval(), (x,)) -> run_decompositions -> IR
    print(g)                        # each node says where it came from: "model.py:12 in forward (aten.addmm.default)"

What it does:

* Export and decomposition. `torch.export.export(module.eval(), example_inputs)`, then `run_decompositions` with
  PyTorch's default (core ATen) table minus four entries that map better onto vnpu's ops undecomposed
  (`KEEP`): `aten.linear` (one `linear` node with the [N, K] weight as is, instead of permute + addmm and, for 3-D
  inputs, two views), `aten.matmul` (one `linear`/`bmm`/`matmul` instead of expand/view/bmm/view chains),
  `aten.scaled_dot_product_attention` (vnpu's fused op instead of scale, bmm, softmax, bmm) and `aten._safe_softmax`
  (one `softmax` instead of softmax + eq/logical_not/any/full_like/where, ops vnpu does not have; see the
  caveat below). Everything else is core ATen.
* Weights. Parameters, buffers and lifted tensor constants become constants (`add_const`) named after their
  module path (`conv1.weight`). bfloat16 is widened to float32 (exactly) wherever it occurs (constants, inputs,
  node types), int16 to int32: the IR has neither. float64 parameters go through `add_const`, which stores them as
  float32 (its rule); float64 graph inputs stay float64. Computations on constants only (`tril_indices`,
  `arange`, `full`, a weight's `t()`, `scalar_tensor`, ...) are folded with PyTorch at conversion time (not a
  random op); only the constants a mapped node reads are added, a weight and its views share one constant.
* Inputs and outputs. Each tensor user input is a graph input with its example shape and dtype (the IR is
  static); non-tensor inputs (ints, floats) were specialized by torch.export and are baked in, so they are not
  graph inputs. Outputs (a tensor, a tuple/list/dict of them) are the graph outputs in pytree order; `None`
  outputs are left out and a number becomes a 0-d constant output.
* Sources. Each node's `source` is the innermost frame of its stack trace outside torch itself -- the user's
  file:line and function -- and the ATen op: "model.py:12 in forward (aten.convolution.default)" (a module of
  torch's own exported directly: its innermost frame, "torch/nn/modules/activation.py:1494 in forward (...)").
  Values are named after the module they come from (`layer1.conv1`, `layer1.relu`), else the fx node.
* Ops. `HANDLERS` maps ATen ops onto the opset:
    convolution -> conv2d / conv_transpose2d (1-D ones as 2-D of height 1); linear, addmm, mm, bmm, matmul ->
    linear (a constant or transposed right operand; addmm's bias folded in), bmm (transposes folded into
    transpose_a/b) or matmul; max_pool2d(_with_indices), avg_pool2d, _adaptive_avg_pool2d, adaptive_max_pool2d
    (equal bins) -> the pools; mean over H, W of NCHW -> adaptive_avg_pool2d; _native_batch_norm_legit* /
    native_batch_norm (eval) -> batch_norm; native_layer_norm / layer_norm -> layer_norm; _softmax,
    _safe_softmax -> softmax; _log_softmax -> amax/sub/exp/sum/log/sub; scaled_dot_product_attention (and the
    CPU flash variant) -> scaled_dot_product_attention; relu, sigmoid, tanh, gelu, exp, sqrt, rsqrt, neg, erf,
    abs, log; hardtanh/clamp(_min/_max) -> clamp (tensor bounds: maximum/minimum); leaky_relu -> maximum(x, a*x);
    add/sub/rsub (alpha), mul, div (no rounding mode), maximum, minimum, pow (x**2 -> mul, **0.5 -> sqrt,
    **-0.5 -> rsqrt, **-1 -> div), reciprocal -> div, where; view/_unsafe_view/reshape/squeeze/unsqueeze/
    flatten -> reshape (chains collapse); permute/transpose/t -> permute (chains compose); expand, copy (x[i] = v);
    cat; split/split_with_sizes -> split; slice, select (slice + reshape), constant_pad_nd (negative pads:
    slices) -> pad; index_select, gather, embedding, index.Tensor (integer indices in consecutive dims ->
    index_select on the merged dims); _embedding_bag (sum/mean/max, no per-sample weights) -> embedding_bag;
    sum/mean/amax/amin/max/min(.dim values)/argmax; _to_copy -> to; dropout (eval), *_like -> constants.
  Every other op -- or a mapped op in a form vnpu has no op for (a used `max_pool2d` indices output, 3-D
  convolution, dropout in train mode, ...) -- becomes a `foreign` node (framework "torch", op its ATen name,
  types from the FakeTensor `meta["val"]`, needs a sentence, fn a `TorchOp` running the ATen op with torch on
  numpy arrays, its non-tensor arguments baked in). No op is dropped except the asserts torch.export inserts
  (`_assert_tensor_metadata`, `_assert_scalar`, ...), which check what the IR's static types already guarantee,
  and `clone`/`alias`/`detach`/eval-mode `dropout`, which are the identity (their input is used directly).

Caveat: `_safe_softmax` and `scaled_dot_product_attention` give 0 in PyTorch on a row whose scores are all -inf
(a fully masked row); vnpu's `softmax` and `scaled_dot_product_attention` give NaN there. Every other row agrees.

Errors: a `module` that is not an `nn.Module`, example inputs torch.export rejects, a model torch.export cannot
export (data-dependent control flow, ...) or that updates a buffer or an input in `forward`: InvalidArgument with
torch's reason (its first lines).
"""
from __future__ import annotations

import math
import operator
import os
import re

import numpy as np

from vnpu.errors import InvalidArgument

from ..ir import Graph

# ops kept out of the decomposition (see the module docstring), by name: resolved when torch is imported
KEEP = ("aten.linear.default", "aten.matmul.default", "aten.scaled_dot_product_attention.default",
        "aten._safe_softmax.default")

# checks torch.export inserts; they produce nothing and the IR's static types already guarantee them
SKIP = {"aten._assert_tensor_metadata.default", "aten._assert_scalar.default", "aten._assert_async.msg",
        "aten._assert_async.default", "aten.sym_constrain_range.default", "aten.sym_constrain_range_for_size.default",
        "aten._functional_assert_async.msg", "aten._functional_assert_scalar.default"}

# the identity in an exported (functional, eval-mode) graph: their input is used directly
FORWARD = {"aten.clone.default", "aten.alias.default", "aten.detach.default", "aten.lift_fresh_copy.default",
           "aten.contiguous.default", "aten.alias_copy.default", "aten.detach_copy.default"}

# torch dtype name -> the IR's dtype (bfloat16 and int16 are widened: the IR has neither)
_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "float32", "float64": "float64", "int8": "int8",
           "uint8": "uint8", "int16": "int32", "int32": "int32", "int64": "int64", "bool": "bool"}


def _torch():
    try:
        import torch
    except ImportError:   # pragma: no cover - torch is the test extra
        raise InvalidArgument("the PyTorch front end needs torch (pip install torch)") from None
    return torch


def _reason(e, lines=6):
    """The first lines of a torch exception's message (torch.export's can be pages long)."""
    text = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    head = "\n".join(text[:lines]) + ("\n..." if len(text) > lines else "")
    return f"{type(e).__name__}: {head}" if head else type(e).__name__


def decomposition_table():
    """PyTorch's default (core ATen) decomposition table without the ops in KEEP."""
    torch = _torch()
    table = torch.export.default_decompositions()
    for name in KEEP:
        op = _resolve(name)
        if op in table:
            del table[op]
    return table


def from_torch(module, example_inputs, dynamic=False):
    """Export `module` (put in eval mode) with `example_inputs` and convert it: a Graph named after the module's
    class, with a graph input per tensor example input (its shape and dtype) and a constant per parameter and
    buffer. InvalidArgument when `module` is not an nn.Module or torch.export fails (the reason is torch's)."""
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise InvalidArgument(f"from_torch takes a torch.nn.Module, got {type(module).__name__}")
    if dynamic:
        raise InvalidArgument("from_torch(dynamic=True): vnpu graphs have static shapes (the card's kernels are "
                              "built per shape); export once per input shape with dynamic=False")
    if isinstance(example_inputs, (torch.Tensor, np.ndarray)):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)):
        raise InvalidArgument(f"example_inputs must be a tuple or list of the forward's arguments, got "
                              f"{type(example_inputs).__name__}")
    args = tuple(torch.from_numpy(np.array(a)) if isinstance(a, np.ndarray) else a for a in example_inputs)
    what = type(module).__name__
    try:
        ep = torch.export.export(module.eval(), args)
    except Exception as e:   # torch raises many types (UserError, TorchRuntimeError, TypeError, RuntimeError, ...)
        raise InvalidArgument(f"torch.export could not export {what} with example inputs "
                              f"{[_describe(a) for a in args]}: {_reason(e)}") from None
    return from_exported_program(ep, name=what)


def _describe(a):
    shape = getattr(a, "shape", None)
    return f"{str(a.dtype).replace('torch.', '')}{list(shape)}" if shape is not None else type(a).__name__


def from_exported_program(ep, name="torch_model"):
    """Convert a `torch.export.ExportedProgram` (decomposed here with `decomposition_table()`). Symbolic sizes
    (an export with dynamic shapes) are specialized to the sizes of its example inputs."""
    torch = _torch()
    if not isinstance(ep, torch.export.ExportedProgram):
        raise InvalidArgument(f"from_exported_program takes a torch.export.ExportedProgram, got {type(ep).__name__}")
    try:
        ep = ep.run_decompositions(decomposition_table())
    except Exception as e:
        raise InvalidArgument(f"torch.export could not decompose {name} to core ATen: {_reason(e)}") from None
    return _Converter(ep, name).run()


# --- the host implementation of a foreign node ------------------------------------------------------------------
def _resolve(name):
    """'aten.cumsum.default' -> torch.ops.aten.cumsum.default."""
    torch = _torch()
    ns, op, overload = name.split(".")
    return getattr(getattr(getattr(torch.ops, ns), op), overload)


class TorchOp:
    """A `foreign` node's fn: runs the ATen op with torch on numpy arrays (the node's inputs, cast to the dtypes
    the op had in the model) with the node's non-tensor arguments baked in; returns its tensor outputs as numpy
    arrays of the IR's dtypes. Picklable (the op is kept by name)."""

    def __init__(self, op, spec, leaves, slots, in_dtypes):
        self.op, self.spec, self.leaves, self.slots, self.in_dtypes = op, spec, leaves, slots, in_dtypes

    def __call__(self, *arrays):
        torch = _torch()
        from torch.utils._pytree import tree_unflatten
        if len(arrays) != len(self.slots):
            raise InvalidArgument(f"{self.op} takes {len(self.slots)} tensors, got {len(arrays)}")
        leaves = list(self.leaves)
        for slot, a, dt in zip(self.slots, arrays, self.in_dtypes):
            leaves[slot] = torch.from_numpy(np.array(a)).to(getattr(torch, dt))
        args, kwargs = tree_unflatten(leaves, self.spec)
        with torch.no_grad():
            out = _resolve(self.op)(*args, **kwargs)
        outs = out if isinstance(out, (tuple, list)) else [out]
        return [_numpy(o) for o in outs if isinstance(o, torch.Tensor)]

    def __repr__(self):
        return f"torch.ops.{self.op}"


def _numpy(t):
    name = str(t.dtype).replace("torch.", "")
    if name not in _DTYPES:
        raise InvalidArgument(f"a tensor of dtype {name}: the IR has {sorted(set(_DTYPES.values()))}")
    t = t.detach().cpu()
    if _DTYPES[name] != name:
        t = t.to(getattr(_torch(), _DTYPES[name]))
    return np.ascontiguousarray(t.numpy())


# --- conversion -------------------------------------------------------------------------------------------------
class _Unmapped(Exception):
    """A mapped op in a form vnpu has no op for: the message completes 'a vnpu op for aten.x ...'."""


class _V(str):
    """A value of the graph being built (its name), as opposed to a string argument of an op."""
    __slots__ = ()


class _Const:
    """A constant not yet added to the graph: a torch tensor and a name for it."""
    __slots__ = ("t", "hint")

    def __init__(self, t, hint):
        self.t, self.hint = t, hint


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def _static(v):
    """An int (a SymInt of a dynamic export: its example value)."""
    if isinstance(v, (int, np.integer)):
        return int(v)
    hint = getattr(getattr(v, "node", None), "hint", None)
    if hint is None:
        raise InvalidArgument(f"a symbolic size {v} without an example value")
    return int(hint)


def _hint(v):
    """A python number (a SymInt/SymFloat/SymBool of a dynamic export: its example value)."""
    if isinstance(v, (bool, int, float)):
        return v
    hint = getattr(getattr(v, "node", None), "hint", None)
    if hint is None:
        raise InvalidArgument(f"a symbolic value {v} without an example value")
    return hint


class _Converter:
    def __init__(self, ep, name):
        import torch
        self.torch, self.ep = torch, ep
        self.g = Graph(name)
        self.env = {}            # fx node -> str (a graph value) | _Const | list (multi-output) | python scalar
        self.consts = {}         # (storage ptr, offset, shape, stride, dtype) -> graph constant name
        self.producer = {}       # graph value name -> the IR node computing it
        self.node = None         # the fx node being converted
        self.src = ""
        self.torch_dir = os.path.dirname(torch.__file__) + os.sep

    # --- driver -----------------------------------------------------------------------------------------------
    def run(self):
        torch, ep = self.torch, self.ep
        sig = ep.graph_signature
        mutated = [s for s in sig.output_specs if s.kind.name != "USER_OUTPUT"]
        if mutated:
            what = {"BUFFER_MUTATION": "buffer", "USER_INPUT_MUTATION": "input", "PARAMETER_MUTATION": "parameter"}
            names = ", ".join(f"{what.get(s.kind.name, s.kind.name.lower())} {s.target!r}" for s in mutated)
            raise InvalidArgument(f"{self.g.name} updates {names} in its forward: vnpu graphs are stateless")
        specs = {s.arg.name: s for s in sig.input_specs if hasattr(s.arg, "name")}
        state = dict(ep.state_dict)
        state.update(getattr(ep, "constants", {}) or {})
        placeholders = [n for n in ep.graph.nodes if n.op == "placeholder"]
        for n in placeholders:           # graph inputs first: their names are the model's argument names
            s = specs.get(n.name)
            if s is not None and s.kind.name == "USER_INPUT":
                val = n.meta.get("val")
                if isinstance(val, torch.Tensor):
                    dt = self._dtype(val.dtype, f"input {n.name!r}")
                    self.env[n] = _V(self.g.add_input(n.name, [_static(d) for d in val.shape], dt))
                else:
                    self.env[n] = val        # a specialized int/float/bool: baked in
        for n in placeholders:
            if n in self.env:
                continue
            s = specs.get(n.name)
            kind = s.kind.name if s is not None else "?"
            if kind in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
                if s.target not in state:
                    raise InvalidArgument(f"{self.g.name}: {kind.lower()} {s.target!r} has no value in the program")
                self.env[n] = _Const(state[s.target].detach(), s.target)
            elif kind == "TOKEN":
                self.env[n] = None
            else:
                raise InvalidArgument(f"{self.g.name}: input {n.name!r} of kind {kind} is not supported")
        self.ops_in = {}            # module path -> the number of ops in its own forward
        for n in ep.graph.nodes:
            if n.op == "call_function" and n.target is not operator.getitem and str(n.target) not in SKIP:
                path = self.module_path(n)
                self.ops_in[path] = self.ops_in.get(path, 0) + 1
        outputs = []
        for n in ep.graph.nodes:
            if n.op == "call_function":
                self.convert(n)
            elif n.op == "output":
                outputs = list(n.args[0]) if isinstance(n.args[0], (tuple, list)) else [n.args[0]]
            elif n.op == "get_attr":
                self.env[n] = _Const(getattr(ep.graph_module, n.target).detach(), n.target)
        names = []
        self.node, self.src = None, ""
        for o in outputs:
            v = self.env[o] if isinstance(o, torch.fx.Node) else o
            if v is None:
                continue
            if isinstance(v, (bool, int, float)):
                v = _Const(torch.tensor(v), "output")
            names.append(self.value(v))
        self.g.set_outputs(names)
        self.g.remove_unused()
        return self.g

    def convert(self, n):
        torch = self.torch
        target = n.target
        if target is operator.getitem:
            self.env[n] = self.env[n.args[0]][n.args[1]]
            return
        name = str(target)
        if name in SKIP:
            self.env[n] = None
            return
        self.node, self.src, self.hint = n, self.source(n), self.name_of(n)
        args = torch.fx.node.map_arg(n.args, lambda a: self.env[a])
        kwargs = torch.fx.node.map_arg(n.kwargs, lambda a: self.env[a])
        if name in FORWARD:
            self.env[n] = args[0]
            return
        val = n.meta.get("val")
        if isinstance(val, (bool, int, float, torch.SymInt, torch.SymFloat, torch.SymBool)):
            self.env[n] = _hint(val)        # a size (sym_size, arithmetic on sizes): its example value
            return
        folded = self.fold(n, target, args, kwargs)
        if folded is not None:
            self.env[n] = folded
            return
        handler = HANDLERS.get(name)
        reason = f"a vnpu op for {name}"
        if handler is not None:
            try:
                A = self.arguments(target, args, kwargs)
                self.env[n] = self.check(handler(self, A))
                return
            except _Unmapped as e:
                reason = f"a vnpu op for {name} {e}"
            except InvalidArgument as e:     # the opset's shape rule rejects the operands the mapping gives it
                reason = f"a vnpu op for {name} (vnpu's rejects it: {e})"
        self.env[n] = self.foreign(n, reason)

    def source(self, n):
        frames = _FRAME.findall(n.meta.get("stack_trace") or "")
        user = [f for f in frames if not f[0].startswith(self.torch_dir)] or frames
        op = str(n.target)
        if not user:
            return f"({op})"
        file, line, func = user[-1]
        if file.startswith(self.torch_dir):     # a module of torch's own: torch/nn/modules/linear.py
            where = os.path.relpath(file, os.path.dirname(self.torch_dir.rstrip(os.sep)))
        else:
            where = os.path.basename(file)
        return f"{where}:{line} in {func} ({op})"

    @staticmethod
    def module_path(n):
        stack = n.meta.get("nn_module_stack") or {}
        return list(stack.values())[-1][0] if stack else ""

    def name_of(n_self, n):
        """A name for the node's outputs: the path of the module it is the one op of (`layer1.conv1`), else that
        path and its fx name (`layer1.relu`, `self_attn.linear`), else (the model's own forward) its fx name."""
        path = n_self.module_path(n)
        if not path:
            return n.name
        return path if n_self.ops_in.get(path) == 1 else f"{path}.{n.name}"

    @staticmethod
    def arguments(target, args, kwargs):
        """The op's arguments by schema name, defaults filled in."""
        A = {}
        for i, a in enumerate(target._schema.arguments):
            if i < len(args) and not a.kwarg_only:
                A[a.name] = args[i]
            elif a.name in kwargs:
                A[a.name] = kwargs[a.name]
            else:
                A[a.name] = a.default_value if a.has_default_value() else None
        return A

    # --- constants ----------------------------------------------------------------------------------------------
    def fold(self, n, target, args, kwargs):
        """Evaluate an op whose tensor inputs are all constants (or that has none) with torch: a _Const (list)."""
        torch = self.torch
        from torch.utils._pytree import tree_flatten, tree_map
        leaves, _ = tree_flatten((args, kwargs))
        if any(isinstance(x, _V) for x in leaves):
            return None
        if not isinstance(target, torch._ops.OpOverload) or torch.Tag.nondeterministic_seeded in target.tags:
            return None
        val = n.meta.get("val")
        big = sum(int(x.t.numel()) for x in leaves if isinstance(x, _Const))
        if isinstance(val, torch.Tensor) and math.prod(_static(d) for d in val.shape) > max(4 * big, 1 << 22):
            return None           # an expand of a constant to a large tensor: keep the op
        a, k = tree_map(lambda x: x.t if isinstance(x, _Const) else x, (args, kwargs))
        try:
            with torch.no_grad():
                if str(target).startswith("aten.empty") and isinstance(val, torch.Tensor):
                    out = torch.zeros(tuple(_static(d) for d in val.shape), dtype=val.dtype)  # deterministic
                else:
                    out = target(*a, **k)
        except Exception:
            return None
        consts = [x for x in leaves if isinstance(x, _Const)]

        def wrap(t):
            if not isinstance(t, torch.Tensor):
                return t
            for c in consts:    # a view of a constant keeps its name (conv1.weight.t() -> "conv1.weight")
                if c.t.numel() and t.numel() and t.untyped_storage().data_ptr() == c.t.untyped_storage().data_ptr():
                    return _Const(t, c.hint)
            return _Const(t, n.name)
        return [wrap(t) for t in out] if isinstance(out, (tuple, list)) else wrap(out)

    def value(self, x):
        """The graph value of x (a value name, or a constant added on first use)."""
        if isinstance(x, _V):
            return x
        if isinstance(x, _Const):
            t = x.t
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()),
                   str(t.dtype)) if t.numel() else None
            if key is not None and key in self.consts:
                return self.consts[key]
            name = self.g.add_const(x.hint, _numpy(t))
            if key is not None:
                self.consts[key] = name
            return name
        raise _Unmapped(f"with a {type(x).__name__} where a tensor is expected")

    def scalar_const(self, v, dtype):
        return _Const(self.torch.tensor(v, dtype=getattr(self.torch, dtype)), f"{self.node.name}.c")

    # --- types ----------------------------------------------------------------------------------------------------
    def _dtype(self, tdtype, what="value"):
        name = str(tdtype).replace("torch.", "")
        if name not in _DTYPES:
            raise InvalidArgument(f"{self.g.name}: {what} has dtype {name}; the IR has {sorted(set(_DTYPES.values()))}")
        return _DTYPES[name]

    def shape(self, x):
        if isinstance(x, _V):
            return self.g.values[x].shape
        if isinstance(x, _Const):
            return tuple(x.t.shape)
        return ()

    def dtype(self, x):
        if isinstance(x, _V):
            return self.g.values[x].dtype
        if isinstance(x, _Const):
            return self._dtype(x.t.dtype)
        return None

    def out_type(self, i=None):
        val = self.node.meta.get("val")
        if i is not None:
            val = val[i]
        return tuple(_static(d) for d in val.shape), self._dtype(val.dtype)

    def check(self, out):
        """The handler's output against torch's own types: a dtype the opset rule gives differently is cast to
        torch's (int32 sums are int64 in torch, ...); a different shape is a front-end bug (-> foreign)."""
        val = self.node.meta.get("val")
        if isinstance(out, list):
            return [self._check1(o, v) for o, v in zip(out, val)]
        return self._check1(out, val)

    def _check1(self, out, val):
        if not isinstance(out, (_V, _Const)) or not isinstance(val, self.torch.Tensor):
            return out
        shape, dt = tuple(_static(d) for d in val.shape), self._dtype(val.dtype)
        if tuple(self.shape(out)) != shape:
            raise _Unmapped(f"(the front end's mapping gave shape {list(self.shape(out))}, torch {list(shape)}: "
                            "a front-end bug)")
        return self.cast(out, dt)

    # --- emitting -----------------------------------------------------------------------------------------------
    def emit(self, op, inputs, attrs=None, outputs=1):
        ins = [self.value(i) if i is not None else "" for i in inputs]
        while ins and ins[-1] == "":
            ins.pop()
        out = self.g.add_node(op, ins, attrs or {}, outputs=outputs, name=self.hint, source=self.src)
        node = self.g.nodes[-1]
        for o in node.outputs:
            self.producer[o] = node
        return [_V(o) for o in out] if isinstance(out, list) else _V(out)

    def cast(self, x, dtype):
        if self.dtype(x) == dtype or x is None:
            return x
        if isinstance(x, _Const):
            return _Const(x.t.to(getattr(self.torch, dtype)), x.hint)
        return self.emit("to", [x], {"dtype": dtype})

    def operand(self, x, dtype):
        """A tensor operand of an op computing in `dtype`: a python number becomes a 0-d constant."""
        if isinstance(x, (bool, int, float)):
            return self.scalar_const(x, dtype)
        return self.cast(x, dtype)

    def reshape(self, x, shape):
        shape = tuple(int(d) for d in shape)
        if tuple(self.shape(x)) == shape:
            return x
        if isinstance(x, _Const):
            return _Const(x.t.reshape(shape), x.hint)
        p = self.producer.get(x)
        if p is not None and p.op == "reshape":
            x = _V(p.inputs[0])
            if tuple(self.shape(x)) == shape:
                return x
        return self.emit("reshape", [x], {"shape": shape})

    def permute(self, x, dims):
        dims = [int(d) % max(len(self.shape(x)), 1) for d in dims]
        if dims == sorted(dims):
            return x
        if isinstance(x, _Const):
            return _Const(x.t.permute(dims), x.hint)
        p = self.producer.get(x)
        if p is not None and p.op == "permute":
            inner = list(p.attrs["dims"])
            return self.permute(_V(p.inputs[0]), [inner[d] for d in dims])
        return self.emit("permute", [x], {"dims": tuple(dims)})

    def transposed_source(self, x):
        """The value x is the last-two-dims transpose of (x = permute(s, (..., -1, -2))), or None."""
        p = self.producer.get(x) if isinstance(x, _V) else None
        if p is None or p.op != "permute":
            return None
        d = list(p.attrs["dims"])
        r = len(d)
        return _V(p.inputs[0]) if r >= 2 and d == list(range(r - 2)) + [r - 1, r - 2] else None

    def foreign(self, n, needs):
        torch = self.torch
        from torch.utils._pytree import tree_flatten
        leaves, spec = tree_flatten((n.args, n.kwargs))
        inputs, slots, in_dtypes, baked = [], [], [], []
        for i, leaf in enumerate(leaves):
            v = self.env[leaf] if isinstance(leaf, torch.fx.Node) else leaf
            if isinstance(v, (_V, _Const)):
                inputs.append(v)
                slots.append(i)
                orig = leaf.meta.get("val") if isinstance(leaf, torch.fx.Node) else None
                in_dtypes.append(str(orig.dtype if isinstance(orig, torch.Tensor) else
                                     (v.t.dtype if isinstance(v, _Const) else getattr(torch, self.dtype(v))))
                                 .replace("torch.", ""))
                baked.append(None)
            elif isinstance(v, list) or isinstance(leaf, torch.fx.Node) and v is None:
                raise InvalidArgument(f"{self.src}: {n.target} reads a value the front end could not convert")
            else:
                baked.append(v)
        val = n.meta.get("val")
        vals = list(val) if isinstance(val, (tuple, list)) else [val]
        tensors = [i for i, v in enumerate(vals) if isinstance(v, torch.Tensor)]
        if not tensors:
            raise InvalidArgument(f"{self.src}: {n.target} has no tensor output torch.export could describe")
        types = [([_static(d) for d in vals[i].shape], self._dtype(vals[i].dtype, f"{n.target}'s output"))
                 for i in tensors]
        fn = TorchOp(str(n.target), spec, baked, slots, in_dtypes)
        attrs = {"framework": "torch", "op": str(n.target), "types": [(tuple(s), d) for s, d in types],
                 "needs": needs, "fn": fn}
        outs = [self.g.fresh(self.hint + (f".{i}" if len(tensors) > 1 else "")) for i in range(len(tensors))]
        names = self.emit("foreign", inputs, attrs, outputs=outs)
        if not isinstance(val, (tuple, list)):
            return names[0]
        out = [None] * len(vals)
        for i, name in zip(tensors, names):
            out[i] = name
        return out

    def only_first_output(self, what):
        """For an op with several outputs of which vnpu computes the first: _Unmapped if another one is read."""
        for u in self.node.users:
            if u.target is not operator.getitem or u.args[1] != 0:
                raise _Unmapped(f"with its {what} output used")


# --- handlers: (converter, arguments by schema name) -> the output value(s) ------------------------------------------
HANDLERS = {}


def _h(*names):
    def reg(f):
        for n in names:
            HANDLERS[n] = f
        return f
    return reg


def _pair_attr(v, default):
    """A conv/pool attribute as the opset writes it: int when all equal, the tuple otherwise; None if default."""
    v = [int(e) for e in (v if isinstance(v, (list, tuple)) else [v])]
    if len(set(v)) == 1:
        v = v[0]
        return None if v == default else v
    return tuple(v)


def _attrs(**kw):
    return {k: v for k, v in kw.items() if v is not None}


@_h("aten.convolution.default")
def _convolution(c, A):
    x, w, b = A["input"], A["weight"], A["bias"]
    nd = len(c.shape(x)) - 2
    if nd not in (1, 2):
        raise _Unmapped(f"({nd}-D convolution)")
    stride, padding, dilation, opad = A["stride"], A["padding"], A["dilation"], A["output_padding"]
    g = int(A["groups"])
    if nd == 1:     # as a 2-D convolution of height 1
        xs, ws = c.shape(x), c.shape(w)
        x = c.reshape(x, xs[:2] + (1,) + xs[2:])
        w = c.reshape(w, ws[:2] + (1,) + ws[2:])
        stride, padding, dilation, opad = ([1] + list(stride), [0] + list(padding), [1] + list(dilation),
                                           [0] + list(opad))
    if len(padding) != 2:
        raise _Unmapped(f"(padding {padding})")
    if A["transposed"]:
        y = c.emit("conv_transpose2d", [x, w, b], _attrs(
            stride=_pair_attr(stride, 1), padding=_pair_attr(padding, 0), output_padding=_pair_attr(opad, 0),
            groups=g if g != 1 else None, dilation=_pair_attr(dilation, 1)))
    else:
        y = c.emit("conv2d", [x, w, b], _attrs(stride=_pair_attr(stride, 1), padding=_pair_attr(padding, 0),
                                               dilation=_pair_attr(dilation, 1), groups=g if g != 1 else None))
    return c.reshape(y, c.out_type()[0]) if nd == 1 else y


def _pool_stride(kernel, stride):
    """The stride attribute: None when it is the kernel size (PyTorch's default; [] in ATen)."""
    k = [int(e) for e in (kernel if isinstance(kernel, (list, tuple)) else [kernel])]
    s = [int(e) for e in (stride if isinstance(stride, (list, tuple)) else [stride])] if stride else k
    k, s = k * (2 // len(k)), s * (2 // len(s))
    return None if s == k else _pair_attr(s, None)


@_h("aten.max_pool2d_with_indices.default", "aten.max_pool2d.default")
def _max_pool(c, A):
    indices = str(c.node.target).startswith("aten.max_pool2d_with_indices")
    if indices:
        c.only_first_output("indices")
    k = A["kernel_size"]
    y = c.emit("max_pool2d", [A["self"]], _attrs(
        kernel_size=_pair_attr(k, None), stride=_pool_stride(k, A["stride"]), padding=_pair_attr(A["padding"], 0),
        dilation=_pair_attr(A["dilation"], 1), ceil_mode=True if A["ceil_mode"] else None))
    return [y, None] if indices else y


@_h("aten.avg_pool2d.default")
def _avg_pool(c, A):
    k = A["kernel_size"]
    return c.emit("avg_pool2d", [A["self"]], _attrs(
        kernel_size=_pair_attr(k, None), stride=_pool_stride(k, A["stride"]),
        padding=_pair_attr(A["padding"], 0), ceil_mode=True if A["ceil_mode"] else None,
        count_include_pad=False if not A["count_include_pad"] else None,
        divisor_override=A["divisor_override"]))


@_h("aten._adaptive_avg_pool2d.default", "aten.adaptive_avg_pool2d.default")
def _adaptive(c, A):
    return c.emit("adaptive_avg_pool2d", [A["self"]], {"output_size": _pair_attr(A["output_size"], None)})


@_h("aten.adaptive_max_pool2d.default")
def _adaptive_max(c, A):
    # output bins of one size (the output size divides the input's): a max_pool2d
    c.only_first_output("indices")
    x = A["self"]
    (H, W), (oh, ow) = c.shape(x)[-2:], [int(e) for e in A["output_size"]]
    if H % oh or W % ow:
        raise _Unmapped(f"(adaptive max pooling of {H}x{W} to {oh}x{ow}: bins of different sizes)")
    return [c.emit("max_pool2d", [x], {"kernel_size": _pair_attr((H // oh, W // ow), None)}), None]


@_h("aten._native_batch_norm_legit_no_training.default", "aten._native_batch_norm_legit.default",
    "aten._native_batch_norm_legit_functional.default", "aten.native_batch_norm.default",
    "aten.batch_norm.default")
def _batch_norm(c, A):
    if A.get("training"):
        raise _Unmapped("in training mode (batch statistics)")
    if str(c.node.target) != "aten.batch_norm.default":
        c.only_first_output("saved mean/invstd")
    y = c.emit("batch_norm", [A["input"], A["running_mean"], A["running_var"], A["weight"], A["bias"]],
               {"eps": float(A["eps"])})
    val = c.node.meta.get("val")
    return [y] + [None] * (len(val) - 1) if isinstance(val, (tuple, list)) else y


@_h("aten.native_layer_norm.default", "aten.layer_norm.default")
def _layer_norm(c, A):
    multi = str(c.node.target) == "aten.native_layer_norm.default"
    if multi:
        c.only_first_output("mean/rstd")
    y = c.emit("layer_norm", [A["input"], A["weight"], A["bias"]],
               {"normalized_shape": tuple(int(d) for d in A["normalized_shape"]), "eps": float(A["eps"])})
    return [y, None, None] if multi else y


@_h("aten._softmax.default", "aten._safe_softmax.default", "aten.softmax.int")
def _softmax(c, A):
    x = A["self"]
    if A.get("dtype") is not None:
        x = c.cast(x, c._dtype(A["dtype"]))
    return c.emit("softmax", [x], {"dim": int(A["dim"])})


@_h("aten._log_softmax.default", "aten.log_softmax.int")
def _log_softmax(c, A):
    # x - max - log(sum(exp(x - max))): PyTorch's formula, from ops vnpu has
    x, d = A["self"], int(A["dim"])
    if A.get("dtype") is not None:
        x = c.cast(x, c._dtype(A["dtype"]))
    m = c.emit("amax", [x], {"dim": d, "keepdim": True})
    s = c.emit("sub", [x, m])
    lse = c.emit("log", [c.emit("sum", [c.emit("exp", [s])], {"dim": d, "keepdim": True})])
    return c.emit("sub", [s, lse])


@_h("aten.scaled_dot_product_attention.default", "aten._scaled_dot_product_flash_attention_for_cpu.default")
def _sdpa(c, A):
    if A.get("dropout_p"):
        raise _Unmapped(f"with dropout_p={A['dropout_p']}")
    if A.get("enable_gqa"):
        raise _Unmapped("with enable_gqa (grouped-query attention)")
    flash = str(c.node.target) != "aten.scaled_dot_product_attention.default"
    if flash:
        c.only_first_output("logsumexp")
    y = c.emit("scaled_dot_product_attention", [A["query"], A["key"], A["value"], A["attn_mask"]],
               _attrs(is_causal=True if A["is_causal"] else None, scale=A["scale"]))
    return [y, None] if flash else y


# --- matrix products -------------------------------------------------------------------------------------------------
def _matmul(c, a, b):
    """a @ b (torch.matmul's semantics) as linear (b a constant or a transposed matrix), bmm with the
    transposes folded into its flags (equal batch dims), else matmul."""
    sa, sb = c.shape(a), c.shape(b)
    if len(sb) == 2 and len(sa) >= 1:
        if isinstance(b, _Const):
            return c.emit("linear", [a, _Const(b.t.t(), b.hint)])
        src = c.transposed_source(b)
        if src is not None:
            return c.emit("linear", [a, src])
    if len(sa) >= 2 and len(sb) >= 2 and sa[:-2] == sb[:-2]:
        ta, tb = c.transposed_source(a), c.transposed_source(b)
        if len(sa) >= 3 or ta or tb:
            return c.emit("bmm", [ta or a, tb or b], _attrs(transpose_a=True if ta else None,
                                                            transpose_b=True if tb else None))
    return c.emit("matmul", [a, b])


@_h("aten.linear.default")
def _linear(c, A):
    return c.emit("linear", [A["input"], A["weight"], A["bias"]])


@_h("aten.mm.default", "aten.bmm.default", "aten.matmul.default")
def _mm(c, A):
    return _matmul(c, A["self"], A["mat2"] if "mat2" in A else A["other"])


@_h("aten.addmm.default")
def _addmm(c, A):
    bias, x, m = A["self"], A["mat1"], A["mat2"]
    beta, alpha = A["beta"], A["alpha"]
    y = _matmul(c, x, m)
    n = c.shape(m)[-1]
    node = c.producer.get(y)
    if (beta == 1 and alpha == 1 and node is not None and node.op == "linear" and len(node.inputs) == 2
            and not isinstance(bias, (int, float)) and c.shape(bias) == (n,)):
        node.inputs.append(c.value(c.cast(bias, c.dtype(y))))      # linear(x, w) + b -> linear(x, w, b)
        return y
    if alpha != 1:
        y = c.emit("mul", [y, c.scalar_const(alpha, c.dtype(y))])
    if beta == 0:
        return y
    b = c.operand(bias, c.dtype(y))
    if beta != 1:
        b = (_Const(b.t * beta, b.hint) if isinstance(b, _Const)
             else c.emit("mul", [b, c.scalar_const(beta, c.dtype(y))]))
    return c.emit("add", [y, b])


# --- elementwise -----------------------------------------------------------------------------------------------------
def _binary(op, c, a, b):
    dt = c.out_type()[1]
    return c.emit(op, [c.operand(a, dt), c.operand(b, dt)])


def _addsub(op):
    def h(c, A):
        a, b, alpha = A["self"], A["other"], A.get("alpha", 1)
        if alpha is not None and alpha != 1:
            dt = c.out_type()[1]
            b = alpha * b if isinstance(b, (int, float)) else c.emit("mul", [c.operand(b, dt),
                                                                              c.scalar_const(alpha, dt)])
        return _binary(op, c, a, b)
    return h


HANDLERS["aten.add.Tensor"] = HANDLERS["aten.add.Scalar"] = _addsub("add")
HANDLERS["aten.sub.Tensor"] = HANDLERS["aten.sub.Scalar"] = _addsub("sub")


@_h("aten.rsub.Tensor", "aten.rsub.Scalar")
def _rsub(c, A):
    return _addsub("sub")(c, {"self": A["other"], "other": A["self"], "alpha": A.get("alpha", 1)})


for _name in ("aten.mul.Tensor", "aten.mul.Scalar", "aten.div.Tensor", "aten.div.Scalar", "aten.maximum.default",
              "aten.minimum.default"):
    HANDLERS[_name] = (lambda op: lambda c, A: _binary(op, c, A["self"], A["other"]))(_name.split(".")[1])


@_h("aten.div.Tensor_mode", "aten.div.Scalar_mode")
def _div_mode(c, A):
    if A["rounding_mode"] is not None:
        raise _Unmapped(f"(division with rounding_mode={A['rounding_mode']!r})")
    return _binary("div", c, A["self"], A["other"])


@_h("aten.pow.Tensor_Scalar", "aten.pow.Tensor_Tensor", "aten.pow.Scalar")
def _pow(c, A):
    x, e = A["self"], A["exponent"]
    dt = c.out_type()[1]
    if isinstance(e, (int, float)) and not isinstance(x, (int, float)):
        x = c.cast(x, dt)
        if e == 1:
            return x
        if e == 2:
            return c.emit("mul", [x, x])
        if e == 0.5:
            return c.emit("sqrt", [x])
        if e == -0.5:
            return c.emit("rsqrt", [x])
        if e == -1:
            return c.emit("div", [c.scalar_const(1, dt), x])
    return _binary("pow", c, x, e)


@_h("aten.reciprocal.default")
def _reciprocal(c, A):
    dt = c.out_type()[1]
    return c.emit("div", [c.scalar_const(1, dt), c.cast(A["self"], dt)])


def _unary(op):
    def h(c, A):
        return c.emit(op, [c.cast(A["self"], c.out_type()[1])])
    return h


for _name in ("relu", "sigmoid", "tanh", "exp", "sqrt", "rsqrt", "neg", "erf", "abs", "log"):
    HANDLERS[f"aten.{_name}.default"] = _unary(_name)


@_h("aten.gelu.default")
def _gelu(c, A):
    approx = A.get("approximate") or "none"
    return c.emit("gelu", [A["self"]], {"approximate": approx} if approx != "none" else {})


@_h("aten.hardtanh.default", "aten.clamp.default", "aten.clamp_min.default", "aten.clamp_max.default")
def _clamp(c, A):
    name = str(c.node.target)
    if name == "aten.hardtanh.default":
        lo, hi = A["min_val"], A["max_val"]
    elif name == "aten.clamp_min.default":
        lo, hi = A["min"], None
    elif name == "aten.clamp_max.default":
        lo, hi = None, A["max"]
    else:
        lo, hi = A["min"], A["max"]
    x = c.cast(A["self"], c.out_type()[1])
    if lo is None and hi is None:
        return x
    return c.emit("clamp", [x], _attrs(min=lo, max=hi))


@_h("aten.clamp.Tensor", "aten.clamp_min.Tensor", "aten.clamp_max.Tensor")
def _clamp_t(c, A):
    dt = c.out_type()[1]
    x = c.cast(A["self"], dt)
    lo, hi = A.get("min"), A.get("max")
    if lo is not None:
        x = c.emit("maximum", [x, c.operand(lo, dt)])
    if hi is not None:
        x = c.emit("minimum", [x, c.operand(hi, dt)])
    return x


@_h("aten.leaky_relu.default")
def _leaky_relu(c, A):
    a = float(A["negative_slope"])
    if not 0 <= a <= 1:
        raise _Unmapped(f"(leaky_relu with negative_slope={a})")
    x = A["self"]
    return c.emit("maximum", [x, c.emit("mul", [x, c.scalar_const(a, c.dtype(x))])])


@_h("aten.where.self", "aten.where.ScalarSelf", "aten.where.ScalarOther", "aten.where.Scalar")
def _where(c, A):
    dt = c.out_type()[1]
    return c.emit("where", [c.cast(A["condition"], "bool"), c.operand(A["self"], dt), c.operand(A["other"], dt)])


# --- data movement --------------------------------------------------------------------------------------------------
@_h("aten.view.default", "aten._unsafe_view.default", "aten.reshape.default", "aten.view_copy.default",
    "aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default", "aten.unsqueeze.default",
    "aten.flatten.using_ints", "aten.unflatten.int", "aten._reshape_alias.default", "aten.squeeze_copy.dims",
    "aten.unsqueeze_copy.default")
def _view(c, A):
    return c.reshape(A["self"], c.out_type()[0])


@_h("aten.permute.default", "aten.permute_copy.default")
def _permute(c, A):
    return c.permute(A["self"], A["dims"])


@_h("aten.transpose.int", "aten.t.default", "aten.numpy_T.default")
def _transpose(c, A):
    x = A["self"]
    r = len(c.shape(x))
    if r < 2:
        return x
    d0, d1 = (int(A["dim0"]) % r, int(A["dim1"]) % r) if "dim0" in A else (r - 1, r - 2)
    dims = list(range(r))
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return c.permute(x, dims)


@_h("aten.expand.default", "aten.expand_copy.default")
def _expand(c, A):
    x, shape = A["self"], c.out_type()[0]
    if tuple(c.shape(x)) == shape:
        return x
    return c.emit("expand", [x], {"shape": shape})


@_h("aten.copy.default")
def _copy(c, A):
    # the functional copy_ (x[:, 0] = v): src cast to self's dtype and broadcast to its shape
    shape, dt = c.out_type()
    y = c.cast(A["src"], dt)
    return y if tuple(c.shape(y)) == shape else c.emit("expand", [y], {"shape": shape})


@_h("aten.cat.default", "aten.concat.default")
def _cat(c, A):
    dt = c.out_type()[1]
    xs = [c.cast(x, dt) for x in A["tensors"]]
    xs = [x for x in xs if c.shape(x) != (0,)] or xs[:1]        # torch's legacy empty operands
    return xs[0] if len(xs) == 1 else c.emit("cat", xs, {"dim": int(A["dim"])})


@_h("aten.split_with_sizes.default", "aten.split.Tensor", "aten.unsafe_split.Tensor",
    "aten.split_with_sizes_copy.default")
def _split(c, A):
    x = A["self"]
    d = int(A["dim"]) % len(c.shape(x))
    size = c.shape(x)[d]
    if "split_sizes" in A:
        sizes = [int(s) for s in A["split_sizes"]]
    else:
        s = int(A["split_size"])
        sizes = [s] * (size // s) + ([size % s] if size % s else [])
    if len(sizes) == 1:
        return [x]
    names = [c.g.fresh(f"{c.hint}.{i}") for i in range(len(sizes))]
    return c.emit("split", [x], {"sizes": tuple(sizes), "dim": d}, outputs=names)


def _slice(c, x, d, start, end, step=1):
    n = c.shape(x)[d]
    start, end, _ = slice(start, end, step).indices(n)
    end = max(end, start)
    if (start, end, step) == (0, n, 1):
        return x
    return c.emit("slice", [x], _attrs(dim=d, start=start, end=end, step=step if step != 1 else None))


@_h("aten.slice.Tensor", "aten.slice_copy.Tensor")
def _slice_h(c, A):
    x = A["self"]
    d = int(A["dim"]) % len(c.shape(x))
    return _slice(c, x, d, A["start"], A["end"], int(A["step"]))


@_h("aten.select.int", "aten.select_copy.int")
def _select(c, A):
    x = A["self"]
    d = int(A["dim"]) % len(c.shape(x))
    i = int(A["index"]) % c.shape(x)[d]
    return c.reshape(_slice(c, x, d, i, i + 1), c.out_type()[0])


@_h("aten.constant_pad_nd.default")
def _pad(c, A):
    x, pad, value = A["self"], [int(p) for p in A["pad"]], A["value"]
    r = len(c.shape(x))
    for i in range(len(pad) // 2):           # negative padding crops
        d = r - 1 - i
        lo, hi = pad[2 * i], pad[2 * i + 1]
        if lo < 0 or hi < 0:
            n = c.shape(x)[d]
            x = _slice(c, x, d, -lo if lo < 0 else 0, n + hi if hi < 0 else n)
    pad = [max(p, 0) for p in pad]
    if not any(pad):
        return x
    while len(pad) > 2 and pad[-2:] == [0, 0]:
        pad = pad[:-2]
    return c.emit("pad", [x], _attrs(pad=tuple(pad), value=float(value) if value else None))


@_h("aten.index_select.default")
def _index_select(c, A):
    return c.emit("index_select", [A["self"], A["index"]], {"dim": int(A["dim"])})


@_h("aten.gather.default")
def _gather(c, A):
    # torch reads only the first index.size(d) entries of the other dims; the opset's gather (numpy's
    # take_along_axis) needs them equal: slice them first
    x, idx = A["self"], A["index"]
    d = int(A["dim"]) % max(len(c.shape(x)), 1)
    for k, (n, m) in enumerate(zip(c.shape(x), c.shape(idx))):
        if k != d and m < n:
            x = _slice(c, x, k, 0, m)
    return c.emit("gather", [x, idx], {"dim": d})


@_h("aten.embedding.default")
def _embedding(c, A):
    return c.emit("embedding", [A["weight"], A["indices"]])


@_h("aten.index.Tensor")
def _index(c, A):
    """x[..., i, j, ...] with integer index tensors in consecutive dims: one index_select on the merged dims
    (a constant flat index), or on the one indexed dim."""
    x, idx = A["self"], list(A["indices"])
    shape = c.shape(x)
    pos = [k for k, t in enumerate(idx) if t is not None]
    if not pos or pos != list(range(pos[0], pos[-1] + 1)):
        raise _Unmapped("(advanced indexing with non-consecutive index tensors)")
    if any(c.dtype(idx[k]) not in ("int64", "int32") for k in pos):
        raise _Unmapped("(indexing with a boolean mask)")
    d0 = pos[0]
    if len(pos) == 1:
        flat = c.reshape(idx[d0], (int(np.prod(c.shape(idx[d0]), dtype=np.int64)),))
        if isinstance(flat, _Const):
            flat = _Const(flat.t % shape[d0], flat.hint)
    elif all(isinstance(idx[k], _Const) for k in pos):
        ts = c.torch.broadcast_tensors(*[idx[k].t % shape[k] for k in pos])
        f = c.torch.zeros_like(ts[0])
        for k, t in zip(pos, ts):
            f = f * shape[k] + t
        flat = _Const(f.reshape(-1).contiguous(), c.node.name + ".index")
        merged = int(np.prod([shape[k] for k in pos]))
        x = c.reshape(x, shape[:d0] + (merged,) + shape[pos[-1] + 1:])
    else:
        raise _Unmapped("(advanced indexing with several index tensors computed by the model)")
    return c.reshape(c.emit("index_select", [x, flat], {"dim": d0}), c.out_type()[0])


@_h("aten._embedding_bag.default", "aten._embedding_bag_forward_only.default", "aten.embedding_bag.padding_idx",
    "aten.embedding_bag.default")
def _embedding_bag(c, A):
    c.only_first_output("offset2bag/bag_size/max_indices")
    mode = {0: "sum", 1: "mean", 2: "max"}.get(int(A["mode"]))
    if A.get("per_sample_weights") is not None:
        raise _Unmapped("(embedding_bag with per_sample_weights)")
    if A.get("include_last_offset"):
        raise _Unmapped("(embedding_bag with include_last_offset=True)")
    if A.get("padding_idx") not in (None, -1):
        raise _Unmapped(f"(embedding_bag with padding_idx={A['padding_idx']})")
    if len(c.shape(A["indices"])) != 1:
        raise _Unmapped("(embedding_bag with 2-D indices)")
    y = c.emit("embedding_bag", [A["weight"], A["indices"], A["offsets"]], {"mode": mode})
    return [y, None, None, None]


# --- reductions -------------------------------------------------------------------------------------------------------
def _dim_attr(d):
    if d is None or (isinstance(d, (list, tuple)) and len(d) == 0):
        return None
    return tuple(int(e) for e in d) if isinstance(d, (list, tuple)) else int(d)


def _reduce(op):
    def h(c, A):
        x = A["self"]
        if A.get("dtype") is not None:
            x = c.cast(x, c._dtype(A["dtype"]))
        if op == "sum":          # torch sums bool and integers in int64 (the opset's sum keeps the input's dtype)
            x = c.cast(x, c.out_type()[1])
        dim, kd = _dim_attr(A.get("dim")), bool(A.get("keepdim"))
        r = len(c.shape(x))
        if op == "mean" and r == 4 and dim is not None and {e % 4 for e in (dim if isinstance(dim, tuple) else
                                                                             (dim,))} == {2, 3}:
            y = c.emit("adaptive_avg_pool2d", [x], {"output_size": 1})        # global average pooling
            return y if kd else c.reshape(y, c.out_type()[0])
        return c.emit(op, [x], _attrs(dim=dim, keepdim=True if kd else None))
    return h


HANDLERS["aten.sum.dim_IntList"] = HANDLERS["aten.sum.default"] = _reduce("sum")
HANDLERS["aten.mean.dim"] = HANDLERS["aten.mean.default"] = _reduce("mean")
HANDLERS["aten.amax.default"] = HANDLERS["aten.max.default"] = _reduce("amax")


@_h("aten.amin.default", "aten.min.default")
def _amin(c, A):
    x = A["self"]
    return c.emit("neg", [_reduce("amax")(c, dict(A, self=c.emit("neg", [x])))])


@_h("aten.max.dim", "aten.min.dim")
def _max_dim(c, A):
    c.only_first_output("indices")
    f = _amin if str(c.node.target) == "aten.min.dim" else _reduce("amax")
    return [f(c, A), None]


@_h("aten.argmax.default")
def _argmax(c, A):
    d = A["dim"]
    return c.emit("argmax", [A["self"]], _attrs(dim=None if d is None else int(d),
                                                keepdim=True if A["keepdim"] and d is not None else None))


# --- casts and dropout -----------------------------------------------------------------------------------------------
@_h("aten._to_copy.default", "aten.to.dtype", "aten.to.dtype_layout")
def _to_copy(c, A):
    return c.cast(A["self"], c.out_type()[1])


@_h("aten.dropout.default", "aten.native_dropout.default", "aten.feature_dropout.default")
def _dropout(c, A):
    if A.get("train") and float(A["p"]) > 0:
        raise _Unmapped("(dropout in training mode)")
    if str(c.node.target) == "aten.native_dropout.default":
        c.only_first_output("mask")
        return [A["input"], None]
    return A["input"]


@_h("aten.full_like.default", "aten.zeros_like.default", "aten.ones_like.default", "aten.empty_like.default",
    "aten.new_zeros.default", "aten.new_ones.default", "aten.new_full.default", "aten.new_empty.default")
def _like(c, A):
    # a tensor of the input's (static) shape: a constant
    shape, dt = c.out_type()
    name = str(c.node.target)
    v = 0 if "zeros" in name or "empty" in name else 1 if "ones" in name else A["fill_value"]
    return _Const(c.torch.full(shape, v, dtype=c.node.meta["val"].dtype), c.node.name)
