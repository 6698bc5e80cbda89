"""The onnx wheel's light model zoo, shared by the ONNX tests: where it is, the input onnx's backend runner
feeds it, and a copy with random weights (its own weights are all ConstantOfShape(0.02), so every class ties)."""
import os

import numpy as np
import onnx
from onnx import TensorProto as TP
from onnx import helper as oh
from onnx import numpy_helper as nh

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def runner_input(model):
    """What onnx's backend test runner feeds a light model (onnx/backend/test/runner/__init__.py,
    generate_dummy_data(random=False)): (input name, arange(n) / n in the input's shape, float32)."""
    inits = {i.name for i in model.graph.initializer}
    x = [i for i in model.graph.input if i.name not in inits][0]
    shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in x.type.tensor_type.shape.dim)
    n = int(np.prod(shape))
    return x.name, (np.arange(n).reshape(shape) / n).astype(np.float32)


def randomized(model, seed=0, logits=False):
    """The light model with random weights in place of its ConstantOfShape(0.02) ones (He-uniform for matrices
    and kernels, U(0.5, 1.5) for vectors: positive variances); logits=True also outputs the softmax's input."""
    rng = np.random.default_rng(seed)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name: nh.to_array(i) for i in m.graph.initializer}
    keep = []
    for n in m.graph.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in inits:
            shape = tuple(int(e) for e in inits[n.input[0]])
            a = rng.uniform(-1, 1, shape) * np.sqrt(6 / np.prod(shape[1:])) if len(shape) >= 2 else \
                rng.uniform(0.5, 1.5, shape)
            m.graph.initializer.append(nh.from_array(a.astype(np.float32), n.output[0]))
        else:
            keep.append(n)
    del m.graph.node[:]
    m.graph.node.extend(keep)
    soft = [n for n in keep if n.op_type == "Softmax"]
    if logits and soft:
        m.graph.output.append(oh.make_tensor_value_info(soft[-1].input[0], TP.FLOAT, None))
    return m
