"""Model-zoo networks of the onnx wheel compiled onto the cards with vnpu.compile and run there: compared with the
expected outputs shipped beside them and with onnxruntime (which compile() uses as the reference)."""
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import numpy_helper as nh  # noqa: E402

import vnpu  # noqa: E402

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def runner_input(model):
    """What onnx's backend test runner feeds a light model: arange(n) / n in the input's shape."""
    inits = {i.name for i in model.graph.initializer}
    x = [i for i in model.graph.input if i.name not in inits][0]
    shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in x.type.tensor_type.shape.dim)
    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) / n).astype(np.float32)


def randomized(model, seed=0):
    """The light model with random weights instead of its ConstantOfShape(0.02) ones (so classes differ)."""
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
    return m


def test_resnet50_from_the_zoo_on_six_cards_matches_its_expected_output_and_onnxruntime():
    path = os.path.join(LIGHT, "light_resnet50.onnx")
    x = runner_input(onnx.load(path))
    prog = vnpu.compile(path, cards=6, dtype="fp32", strategy="pipeline")
    y = prog.run(x)
    expected = nh.to_array(onnx.load_tensor(os.path.join(LIGHT, "light_resnet50_output_0.pb")))
    np.testing.assert_allclose(y, expected, rtol=1e-3, atol=1e-7)          # the tolerances of its data.json
    (check,) = prog.last_check                                               # against onnxruntime
    assert check["max_rel"] < 1e-4 and check["nan_agree"]
    assert prog.coverage().counts()["unsupported"] == 0 and prog.coverage().counts()["host"] == 0
    assert {r.card for r in prog.profile().records} == set(range(6))
    assert any(t["kind"] == "p2p" for t in prog.profile().transfers)


@pytest.mark.parametrize("name", ["resnet50", "squeezenet", "inception_v1",
                                  "shufflenet",
                                  pytest.param("densenet121", marks=pytest.mark.slow)])
def test_zoo_networks_with_random_weights_run_on_the_card_like_onnxruntime(name):
    """Random weights make the classes differ, so top-1 agreement means something; fp32 on the card."""
    model = randomized(onnx.load(os.path.join(LIGHT, f"light_{name}.onnx")))
    x = np.random.default_rng(3).random(runner_input(model).shape, np.float32)
    prog = vnpu.compile(model, cards=1, dtype="fp32")
    prog.run(x)
    (check,) = prog.last_check
    assert check["max_rel"] < 1e-3 and check["cosine"] > 0.99999 and check.get("top1", 1.0) == 1.0
    assert prog.coverage().counts() == {"card": len(prog.graph.nodes), "host": 0, "unsupported": 0}


def test_resnet50_from_the_zoo_in_int8_keeps_its_top1():
    model = randomized(onnx.load(os.path.join(LIGHT, "light_resnet50.onnx")))
    rng = np.random.default_rng(5)
    calib = [[rng.random((1, 3, 224, 224), np.float32)] for _ in range(2)]
    prog = vnpu.compile(model, cards=1, dtype="int8", calibration=calib)
    prog.run(calib[0][0])
    (check,) = prog.last_check
    assert check["cosine"] > 0.99 and check["top1"] == 1.0
