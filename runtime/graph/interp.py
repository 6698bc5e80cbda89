"""Run a graph node by node: on the host (the opset's numpy implementations: the compiler's reference,
constant folding and calibration) or on one card (the opset's lowerings), returning every value computed."""
from __future__ import annotations

import numpy as np

from vnpu.errors import InvalidArgument

from .opset import OPS


def check_inputs(graph, inputs):
    """The graph's inputs as arrays of their declared shapes and dtypes (InvalidArgument naming the first that
    is not)."""
    if len(inputs) != len(graph.inputs):
        raise InvalidArgument(f"{graph.name} takes {len(graph.inputs)} inputs ({', '.join(graph.inputs)}), got "
                              f"{len(inputs)}")
    out = []
    for name, a in zip(graph.inputs, inputs):
        v = graph.values[name]
        a = np.asarray(a)
        if tuple(a.shape) != v.shape:
            raise InvalidArgument(f"{graph.name}: input {name!r} must have shape {list(v.shape)}, got {list(a.shape)}")
        if a.dtype != np.dtype(v.dtype):
            if a.dtype.kind != np.dtype(v.dtype).kind and not (a.dtype.kind in "iu" and np.dtype(v.dtype).kind in "iu"):
                raise InvalidArgument(f"{graph.name}: input {name!r} must be {v.dtype}, got {a.dtype}")
            a = a.astype(v.dtype)
        out.append(np.asarray(a, order="C"))
    return out


def run_host(graph, inputs, keep=False):
    """Evaluate the graph with the opset's numpy implementations. Returns the outputs (and, keep=True, the
    dict of every value)."""
    env = {k: v.data for k, v in graph.values.items() if v.is_const}
    env.update(zip(graph.inputs, check_inputs(graph, inputs)))
    for n in graph.nodes:
        outs = OPS[n.op].host([env[i] if i else None for i in n.inputs], n.attrs)
        env.update(zip(n.outputs, outs))
    results = [env[o] for o in graph.outputs]
    return (results, env) if keep else results
