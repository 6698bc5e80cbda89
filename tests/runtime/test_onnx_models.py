"""Model-zoo networks of the onnx wheel compiled onto the cards with vnpu.compile and run there: compared with the
expected outputs shipped beside them and with onnxruntime (which compile() uses as the reference)."""
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import numpy_helper as nh  # noqa: E402

import vnpu  # noqa: E402

from onnx_zoo import LIGHT, randomized, runner_input  # noqa: E402


def test_resnet50_from_the_zoo_on_six_cards_matches_its_expected_output_and_onnxruntime():
    path = os.path.join(LIGHT, "light_resnet50.onnx")
    _, x = runner_input(onnx.load(path))
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
    x = np.random.default_rng(3).random(runner_input(model)[1].shape, np.float32)
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
