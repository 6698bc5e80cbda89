"""The ONNX front end (vnpu.runtime.graph.frontends.onnx_frontend): the onnx wheel's light model zoo and small
hand-built models of every mapped op and attribute variant, each compared with onnxruntime."""
import os
import pickle

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the ONNX front end's tests need the onnx package")
ort = pytest.importorskip("onnxruntime", reason="the ONNX front end's tests compare with onnxruntime")

from onnx import TensorProto as TP  # noqa: E402
from onnx import helper as oh  # noqa: E402
from onnx import numpy_helper as nh  # noqa: E402

from vnpu.errors import InvalidArgument, UnsupportedOp  # noqa: E402
from vnpu.runtime.graph.frontends.onnx_frontend import from_onnx  # noqa: E402
from vnpu.runtime.graph.interp import run_host  # noqa: E402

from onnx_zoo import LIGHT, randomized, runner_input  # noqa: E402
ZOO = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet",
       "vgg19", "zfnet512"]


# --- helpers ------------------------------------------------------------------------------------------------------
def _session(model):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString() if not isinstance(model, (str, bytes)) else model, so,
                                providers=["CPUExecutionProvider"])


def ort_run(model, feeds):
    sess = _session(model)
    return sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})


def vi(name, a):
    return oh.make_tensor_value_info(name, oh.np_dtype_to_tensor_dtype(np.asarray(a).dtype), list(np.shape(a)))


def make(nodes, feeds, consts=None, outputs=("y",), opset=17, extra_opsets=(), value_info=()):
    """A model of `nodes`: graph inputs typed after `feeds`, initializers `consts`, untyped outputs."""
    g = oh.make_graph(nodes, "t", [vi(k, v) for k, v in feeds.items()],
                      [oh.make_value_info(o, onnx.TypeProto()) for o in outputs],
                      [nh.from_array(np.asarray(v), k) for k, v in (consts or {}).items()],
                      value_info=list(value_info))
    imports = [oh.make_opsetid("", opset)] + list(extra_opsets)
    try:
        return oh.make_model_gen_version(g, opset_imports=imports)
    except ValueError:          # a domain onnx has no IR table for
        return oh.make_model(g, opset_imports=imports, ir_version=8)


def check(model, feeds, rtol=1e-5, atol=1e-5, **kw):
    """Import `model`, run it on the host and with onnxruntime: same shapes, dtypes and values."""
    g = from_onnx(model, **kw)
    str(g)
    ys = run_host(g, [feeds[n] for n in g.inputs])
    rs = ort_run(model, feeds)
    assert len(ys) == len(rs)
    for y, r in zip(ys, rs):
        assert y.shape == r.shape, (y.shape, r.shape)
        assert y.dtype == r.dtype, (y.dtype, r.dtype)
        np.testing.assert_allclose(y.astype(np.float64), r.astype(np.float64), rtol=rtol,
                                   atol=atol * max(1.0, float(np.abs(r).max()) if r.size else 1.0))
    return g


def one(op, feeds, consts=None, attrs=None, opset=17, n_out=1, **kw):
    """A model of one `op` node reading the feeds then the constants (in that order of the dicts)."""
    ins = list(feeds) + list(consts or {})
    outs = ["y"] if n_out == 1 else [f"y{i}" for i in range(n_out)]
    node = oh.make_node(op, ins, outs, **(attrs or {}))
    m = make([node], feeds, consts, outs, opset)
    return check(m, feeds, **kw)


def rnd(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def ops_of(g):
    return [n.op for n in g.nodes]


# --- the light model zoo ---------------------------------------------------------------------------------------------
ZOO_RUN = [pytest.param(m, marks=pytest.mark.slow) if m == "vgg19" else m for m in ZOO]


@pytest.mark.parametrize("name", ZOO)
def test_zoo_imports_and_prints(name):
    path = os.path.join(LIGHT, f"light_{name}.onnx")
    g = from_onnx(path)
    text = str(g)
    assert f"light_{name}.onnx: Conv '" in text
    assert len(g.inputs) == 1 and len(g.outputs) == 1
    assert g.outputs == [onnx.load(path, load_external_data=False).graph.output[0].name]
    # every ConstantOfShape weight, Unsqueeze of a parameter, ... was folded: no shape arithmetic left
    assert not {"foreign", "expand"} & set(ops_of(g))
    assert "conv2d" in ops_of(g)


@pytest.mark.parametrize("name", ZOO_RUN)
def test_zoo_matches_the_expected_output(name):
    """The light models' weights are ConstantOfShape(0.02); the expected output shipped beside each is for the
    backend runner's input arange(n) / n (so the softmax models give 0.001 everywhere, DenseNet a value that does
    depend on the input)."""
    path = os.path.join(LIGHT, f"light_{name}.onnx")
    model = onnx.load(path)
    _, x = runner_input(model)
    y = run_host(from_onnx(path), [x])[0]
    expected = nh.to_array(onnx.load_tensor(os.path.join(LIGHT, f"light_{name}_output_0.pb")))
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def _randomized(model, seed=0):
    return randomized(model, seed, logits=True)


ZOO_ORT = [pytest.param(m, marks=pytest.mark.slow) if m in ("vgg19", "zfnet512") else m for m in ZOO]


@pytest.mark.parametrize("name", ZOO_ORT)
def test_zoo_with_random_weights_matches_onnxruntime(name):
    model = _randomized(onnx.load(os.path.join(LIGHT, f"light_{name}.onnx")))
    g = from_onnx(model)
    xname, _ = runner_input(model)
    x = np.random.default_rng(1).random(g.values[g.inputs[0]].shape, np.float32)
    ys = run_host(g, [x])
    rs = ort_run(model, {xname: x})
    assert len(ys) == len(rs)
    for y, r in zip(ys, rs):
        assert y.shape == r.shape
        np.testing.assert_allclose(y, r, rtol=1e-4, atol=1e-4 * np.abs(r).max())


def test_zoo_model_with_another_batch():
    """batch=2 on SqueezeNet (fixed batch 1 in the file): each row equals the model run on that sample alone."""
    path = os.path.join(LIGHT, "light_squeezenet.onnx")
    g1, g2 = from_onnx(path), from_onnx(path, batch=2)
    assert g2.values[g2.inputs[0]].shape == (2, 3, 224, 224)
    x = np.random.default_rng(2).random((2, 3, 224, 224), np.float32)
    y2 = run_host(g2, [x])[0]
    assert y2.shape[0] == 2
    for i in range(2):
        np.testing.assert_allclose(y2[i:i + 1], run_host(g1, [x[i:i + 1]])[0], rtol=1e-6, atol=1e-9)


# --- convolution ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attrs, k", [
    ({}, 3),
    ({"pads": [1, 1, 1, 1]}, 3),
    ({"pads": [0, 1, 2, 1], "strides": [2, 1]}, 3),             # asymmetric: [t, l, b, r]
    ({"auto_pad": "VALID", "strides": [2, 2]}, 3),
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, 4),        # odd total padding: the extra at the end
    ({"auto_pad": "SAME_LOWER", "strides": [2, 2]}, 4),        # ... at the beginning
    ({"auto_pad": "SAME_UPPER"}, 4),
    ({"auto_pad": "SAME_LOWER", "strides": [1, 2]}, 4),         # (onnxruntime refuses SAME with dilations)
    ({"pads": [2, 2, 2, 2], "dilations": [2, 2], "group": 2}, 3),
    ({"pads": [1, 0, 1, 0], "group": 4}, 3),                    # depthwise
])
def test_conv(attrs, k):
    x, w, b = rnd(2, 4, 9, 10), rnd(4, 4 // attrs.get("group", 1), k, k, seed=1), rnd(4, seed=2)
    g = one("Conv", {"x": x}, {"w": w, "b": b}, attrs)
    assert ops_of(g) == ["conv2d"]


def test_conv_padding_is_top_bottom_left_right():
    g = one("Conv", {"x": rnd(1, 2, 7, 7)}, {"w": rnd(3, 2, 3, 3, seed=1)}, {"pads": [0, 1, 2, 3]})
    assert g.nodes[0].attrs["padding"] == (0, 2, 1, 3)


def test_conv1d_and_conv_with_a_weight_input():
    g = one("Conv", {"x": rnd(2, 3, 17)}, {"w": rnd(5, 3, 4, seed=1), "b": rnd(5, seed=2)},
            {"strides": [2], "pads": [1, 2], "dilations": [2]})
    assert "conv2d" in ops_of(g)
    one("Conv", {"x": rnd(1, 3, 8, 8), "w": rnd(6, 3, 3, 3, seed=1)}, None, {"pads": [1, 1, 1, 1]})


@pytest.mark.parametrize("attrs", [
    {},
    {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
    {"strides": [2, 2], "pads": [0, 1, 2, 1]},
    {"strides": [2, 2], "output_shape": [15, 16]},
    {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
    {"strides": [3, 2], "dilations": [1, 2], "group": 2, "pads": [1, 0, 1, 0]},
])
def test_conv_transpose(attrs):
    g = one("ConvTranspose", {"x": rnd(1, 4, 7, 8)}, {"w": rnd(4, 3, 3, 3, seed=1), "b": rnd(3 * attrs.get("group", 1),
                                                                                          seed=2)}, attrs)
    assert "conv_transpose2d" in ops_of(g)


# --- pooling -------------------------------------------------------------------------------------------------------
POOLS = [
    {"kernel_shape": [3, 3], "strides": [2, 2]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 0, 1, 1]},          # asymmetric (AlexNet, Inception)
    {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [0, 2, 1, 0]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [2, 2, 2, 2]},          # more than PyTorch's k // 2
    {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
    {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [0, 0, 2, 1], "ceil_mode": 1},   # a window in the end pad
    {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
    {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"},
    {"kernel_shape": [2, 3], "strides": [1, 2], "auto_pad": "VALID"},
]


@pytest.mark.parametrize("attrs", POOLS + [{"kernel_shape": [3, 3], "dilations": [2, 2], "pads": [1, 1, 1, 1]}])
def test_max_pool(attrs):
    g = one("MaxPool", {"x": rnd(2, 3, 9, 10)}, None, attrs, opset=12)
    assert "max_pool2d" in ops_of(g)


@pytest.mark.parametrize("cip", [0, 1])
@pytest.mark.parametrize("attrs", POOLS)
def test_average_pool(attrs, cip):
    g = one("AveragePool", {"x": rnd(2, 3, 9, 10)}, None, dict(attrs, count_include_pad=cip), opset=12)
    assert "avg_pool2d" in ops_of(g)


def test_symmetric_pools_map_to_one_op():
    g = one("MaxPool", {"x": rnd(1, 2, 8, 8)}, None, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1] * 4})
    assert ops_of(g) == ["max_pool2d"] and g.nodes[0].attrs["padding"] == 1
    g = one("AveragePool", {"x": rnd(1, 2, 8, 8)}, None, {"kernel_shape": [3, 3], "pads": [0, 0, 1, 1]})
    assert ops_of(g) == ["pad", "avg_pool2d", "mul"]        # the divisor of the windows reading the pad


def test_pool1d_and_global_pools():
    one("MaxPool", {"x": rnd(2, 3, 11)}, None, {"kernel_shape": [3], "strides": [2], "pads": [1, 0]})
    one("AveragePool", {"x": rnd(2, 3, 11)}, None, {"kernel_shape": [4], "strides": [3], "ceil_mode": 1})
    g = one("GlobalAveragePool", {"x": rnd(2, 5, 7, 6)})
    assert ops_of(g) == ["adaptive_avg_pool2d"]
    one("GlobalMaxPool", {"x": rnd(2, 5, 7, 6)})
    one("GlobalAveragePool", {"x": rnd(2, 5, 7)})


# --- normalization ---------------------------------------------------------------------------------------------------
def test_batch_norm():
    c = 6
    consts = {"s": rnd(c, seed=1), "b": rnd(c, seed=2), "m": rnd(c, seed=3),
              "v": np.abs(rnd(c, seed=4)) + 0.5}
    g = one("BatchNormalization", {"x": rnd(2, c, 5, 4)}, consts, {"epsilon": 1e-3})
    assert ops_of(g) == ["batch_norm"]
    one("BatchNormalization", {"x": rnd(3, c)}, consts, opset=9)


@pytest.mark.parametrize("size", [5, 3, 1])
def test_lrn(size):
    """ONNX divides alpha by size as PyTorch does: alpha is passed unchanged."""
    g = one("LRN", {"x": rnd(2, 7, 5, 4) * 3}, None, {"size": size, "alpha": 0.3, "beta": 0.75, "bias": 2.0})
    assert ops_of(g) == ["local_response_norm"] and g.nodes[0].attrs["alpha"] == pytest.approx(0.3)


def _lrn_spec(x, size, alpha, beta, bias):
    """The ONNX spec's formula: channels max(0, c - floor((size-1)/2)) .. min(C-1, c + ceil((size-1)/2))."""
    x = x.astype(np.float64)
    C = x.shape[1]
    s = np.zeros_like(x)
    for c in range(C):
        lo, hi = max(0, c - (size - 1) // 2), min(C - 1, c + -(-(size - 1) // 2))
        s[:, c] = (x[:, lo:hi + 1] ** 2).sum(axis=1)
    return x / (bias + alpha / size * s) ** beta


@pytest.mark.parametrize("size", [4, 2, 5])
def test_lrn_even_size_follows_the_spec(size):
    """onnxruntime refuses an even size (and onnx's ReferenceEvaluator LRN loops over the batch, not the
    channels), so the check is the spec's formula: the window reaches one channel further up than PyTorch's."""
    x = rnd(2, 7, 5, 4) * 3
    m = make([oh.make_node("LRN", ["x"], ["y"], size=size, alpha=0.3, beta=0.75, bias=2.0)], {"x": x})
    y = run_host(from_onnx(m), [x])[0]
    np.testing.assert_allclose(y, _lrn_spec(x, size, 0.3, 0.75, 2.0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axis, sshape", [(-1, (6,)), (1, (4, 5, 6)), (2, (5, 6)), (2, (1, 6))])
def test_layer_norm(axis, sshape):
    g = one("LayerNormalization", {"x": rnd(3, 4, 5, 6)}, {"s": rnd(*sshape, seed=1), "b": rnd(*sshape, seed=2)},
            {"axis": axis, "epsilon": 1e-4})
    assert ops_of(g) == ["layer_norm"]


# --- matrix unit -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tA, tB", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("alpha, beta, cshape", [(1.0, 1.0, (7,)), (0.5, 2.0, (1, 7)), (1.0, 0.5, (5, 7)),
                                                  (2.0, 1.0, ()), (1.0, 1.0, None), (1.0, 1.0, (5, 1))])
def test_gemm(tA, tB, alpha, beta, cshape):
    a = rnd(*((4, 5) if tA else (5, 4)))
    b = rnd(*((7, 4) if tB else (4, 7)), seed=1)
    consts = {"b": b} if cshape is None else {"b": b, "c": rnd(*cshape, seed=2)}
    g = one("Gemm", {"a": a}, consts, {"alpha": alpha, "beta": beta, "transA": tA, "transB": tB})
    if cshape in ((7,), (1, 7), (), None) and not tA:
        assert ops_of(g) == ["linear"]      # alpha into the weight, beta * C into the bias


def test_gemm_with_a_computed_weight():
    one("Gemm", {"a": rnd(3, 4), "b": rnd(4, 6, seed=1), "c": rnd(6, seed=2)}, None, {"alpha": 0.7, "beta": 1.5})
    one("Gemm", {"a": rnd(3, 4), "b": rnd(6, 4, seed=1)}, None, {"transB": 1})


@pytest.mark.parametrize("sa, sb", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 6)), ((4,), (4, 5)),
                                    ((3, 4), (4,)), ((2, 3, 4), (2, 4, 5))])
def test_matmul(sa, sb):
    one("MatMul", {"a": rnd(*sa), "b": rnd(*sb, seed=1)})
    g = one("MatMul", {"a": rnd(*sa)}, {"b": rnd(*sb, seed=1)})
    assert ops_of(g) == ["matmul"]


# --- elementwise -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min"])
def test_binary_broadcast(op):
    one(op, {"a": rnd(2, 3, 4), "b": rnd(3, 1, seed=1) + 3})
    one(op, {"a": rnd(1, 4)}, {"b": rnd(2, 3, 1, seed=1) + 3})


def test_nary_and_pow():
    feeds = {"a": rnd(2, 3), "b": rnd(3, seed=1), "c": rnd(2, 1, seed=2)}
    for op in ("Sum", "Max", "Min", "Mean"):
        g = one(op, feeds)
        assert len(g.nodes) >= 2
    one("Sum", {"a": rnd(2, 3)})
    x = np.abs(rnd(3, 4)) + 0.1
    assert ops_of(one("Pow", {"x": x}, {"e": np.float32(2)})) == ["mul"]
    assert ops_of(one("Pow", {"x": x}, {"e": np.array(0.5, np.float32)})) == ["sqrt"]
    one("Pow", {"x": x}, {"e": np.array([3], np.int64)})
    one("Pow", {"x": x, "e": rnd(4, seed=3)})


def test_integer_division_truncates():
    a = np.array([7, -7, 9, -9, 0], np.int64)
    b = np.array([2, 2, -4, -4, 3], np.int64)
    one("Div", {"a": a, "b": b})
    g = one("Div", {"a": a}, {"b": np.array(2, np.int64)})
    assert g.values[g.outputs[0]].dtype == "int64"
    # both constant: folded with C's truncation
    m = make([oh.make_node("Div", ["a", "b"], ["q"]), oh.make_node("Add", ["x", "q"], ["y"])],
             {"x": np.zeros(5, np.int64)}, {"a": a, "b": b})
    g = check(m, {"x": np.arange(5, dtype=np.int64)})
    assert ops_of(g) == ["add"]


@pytest.mark.parametrize("op", ["Relu", "Sigmoid", "Tanh", "Erf", "Exp", "Abs", "Neg", "Identity", "Reciprocal",
                                "Sqrt", "Log"])
def test_unary(op):
    x = rnd(3, 4, 5)
    if op in ("Sqrt", "Log"):
        x = np.abs(x) + 0.1
    g = one(op, {"x": x})
    if op == "Identity":
        assert ops_of(g) == ["identity"]     # only to name the graph output


@pytest.mark.parametrize("approx", ["none", "tanh"])
def test_gelu_opset20(approx):
    g = one("Gelu", {"x": rnd(4, 9) * 3}, None, {"approximate": approx}, opset=20)
    assert ops_of(g) == ["gelu"]


@pytest.mark.parametrize("op, attrs", [("LeakyRelu", {"alpha": 0.1}), ("LeakyRelu", {"alpha": 1.5}),
                                       ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("HardSwish", {})])
def test_activations(op, attrs):
    g = one(op, {"x": rnd(3, 20) * 4}, None, attrs)
    assert ("foreign" in ops_of(g)) == (op == "LeakyRelu" and attrs["alpha"] > 1)


def test_prelu():
    one("PRelu", {"x": rnd(2, 3, 4, 4)}, {"s": rnd(3, 1, 1, seed=1)})
    one("PRelu", {"x": rnd(2, 3, 4, 5), "s": rnd(5, seed=1)})


def test_clip_both_forms():
    x = rnd(4, 5) * 3
    g = one("Clip", {"x": x}, None, {"min": -1.0, "max": 0.5}, opset=10)
    assert ops_of(g) == ["clamp"] and g.nodes[0].attrs == {"min": -1.0, "max": 0.5}
    one("Clip", {"x": x}, None, {"max": 0.5}, opset=10)
    g = one("Clip", {"x": x}, {"lo": np.float32(-1), "hi": np.float32(0.5)}, opset=13)
    assert ops_of(g) == ["clamp"] and g.nodes[0].attrs == {"min": -1.0, "max": 0.5}
    m = make([oh.make_node("Clip", ["x", "", "hi"], ["y"])], {"x": x}, {"hi": np.float32(0.25)}, opset=13)
    assert check(m, {"x": x}).nodes[0].attrs == {"max": 0.25}
    one("Clip", {"x": x}, None, opset=13)
    one("Clip", {"x": x, "lo": np.array(-0.5, np.float32)}, {"hi": np.float32(0.7)}, opset=12)   # a computed bound
    one("Clip", {"x": np.arange(-5, 5, dtype=np.int64)}, {"lo": np.int64(-2), "hi": np.int64(3)}, opset=13)


def test_where_cast_and_castlike():
    c = rnd(3, 4) > 0
    one("Where", {"c": c, "a": rnd(3, 4, seed=1), "b": rnd(4, seed=2)})
    g = one("Cast", {"x": rnd(3, 4) * 10}, None, {"to": TP.INT64})
    assert g.values[g.outputs[0]].dtype == "int64"
    one("Cast", {"x": np.arange(6, dtype=np.int64)}, None, {"to": TP.FLOAT})
    one("Cast", {"x": rnd(6)}, None, {"to": TP.BOOL})
    one("CastLike", {"x": rnd(6) * 5, "t": np.zeros(1, np.int32)})


# --- softmax ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset, axis", [(11, 1), (11, None), (11, 2), (11, -1), (13, 1), (13, None), (13, 0)])
def test_softmax_axis_semantics(op, opset, axis):
    """Before opset 13 the input is flattened to 2-D at axis; from 13, softmax runs over that one axis."""
    x = rnd(2, 3, 4) * 3
    g = one(op, {"x": x}, None, {} if axis is None else {"axis": axis}, opset=opset)
    if op == "Softmax" and opset == 11 and axis in (1, None):
        assert ops_of(g) == ["reshape", "softmax", "reshape"]
    if op == "Softmax" and opset == 13:
        assert ops_of(g) == ["softmax"]


def test_softmax_opset11_and_13_differ():
    x = rnd(2, 3, 4) * 3
    y11 = run_host(from_onnx(make([oh.make_node("Softmax", ["x"], ["y"], axis=1)], {"x": x}, opset=11)), [x])[0]
    y13 = run_host(from_onnx(make([oh.make_node("Softmax", ["x"], ["y"], axis=1)], {"x": x}, opset=13)), [x])[0]
    np.testing.assert_allclose(y11.sum(axis=(1, 2)), 1, rtol=1e-5)
    np.testing.assert_allclose(y13.sum(axis=1), 1, rtol=1e-5)
    assert not np.allclose(y11, y13)


# --- data movement ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, allowzero", [([0, -1], 0), ([-1, 0, 2], 0), ([2, 0, 5, 1], 0), ([6, 5], 0),
                                              ([0, 3, 0], 1)])
def test_reshape(shape, allowzero):
    x = rnd(2, 3, 5) if not allowzero else rnd(0, 3, 5)
    if allowzero:
        shape = [0, 5, 3]
    g = one("Reshape", {"x": x}, {"s": np.array(shape, np.int64)}, {"allowzero": allowzero} if allowzero else {},
            opset=14)
    assert ops_of(g) in (["reshape"], ["identity"])


def test_reshape_opset1_attribute_and_flatten():
    x = rnd(2, 3, 4)
    m = make([oh.make_node("Reshape", ["x"], ["y"], shape=[3, -1])], {"x": x}, opset=4)   # older than onnxruntime
    np.testing.assert_array_equal(run_host(from_onnx(m), [x])[0], x.reshape(3, 8))
    for axis in (0, 1, 2, -1, 3):
        one("Flatten", {"x": rnd(2, 3, 4)}, None, {"axis": axis} if axis != 3 else {}, opset=13)


def test_transpose_concat_split():
    x = rnd(2, 3, 4)
    g = one("Transpose", {"x": x}, None, {"perm": [2, 0, 1]})
    assert g.nodes[0].attrs == {"dims": (2, 0, 1)}
    one("Transpose", {"x": x})
    one("Concat", {"a": x, "b": rnd(2, 5, 4, seed=1), "c": rnd(2, 1, 4, seed=2)}, None, {"axis": -2})
    one("Split", {"x": rnd(6, 4)}, None, {"axis": 0, "split": [1, 2, 3]}, opset=11, n_out=3)
    one("Split", {"x": rnd(6, 4)}, {"s": np.array([3, 1], np.int64)}, {"axis": 1}, opset=13, n_out=2)
    one("Split", {"x": rnd(6, 4)}, None, {"axis": 0}, opset=13, n_out=3)
    one("Split", {"x": rnd(7, 4)}, None, {"axis": 0, "num_outputs": 3}, opset=18, n_out=3)


@pytest.mark.parametrize("starts, ends, axes, steps", [
    ([1], [3], [0], None), ([0, -3], [2, 100], [1, 2], None), ([-1], [-100], [2], [-1]),
    ([4, 0], [0, 5], [2, 0], [-2, 2]), ([1], [9223372036854775807], [-1], [1]), ([2], [2], [1], None),
])
def test_slice(starts, ends, axes, steps):
    x = rnd(3, 4, 6)
    consts = {"st": np.array(starts, np.int64), "en": np.array(ends, np.int64), "ax": np.array(axes, np.int64)}
    if steps is not None:
        consts["sp"] = np.array(steps, np.int64)
    one("Slice", {"x": x}, consts, opset=13)


def test_slice_opset9_attributes():
    one("Slice", {"x": rnd(3, 4, 6)}, None, {"starts": [1, 0], "ends": [3, -1], "axes": [0, 2]}, opset=9)


@pytest.mark.parametrize("pads, value", [([0, 1, 2, 0, 3, 1], 0.0), ([1, 1, 0, 1, 0, 2], 2.5),
                                         ([0, -1, 1, 1, 2, -2], 0.0), ([0, 0, 0, 0, 0, 0], 0.0)])
def test_pad(pads, value):
    x = rnd(2, 5, 6)
    one("Pad", {"x": x}, {"p": np.array(pads, np.int64), "v": np.float32(value)}, opset=13)
    m = make([oh.make_node("Pad", ["x"], ["y"], pads=pads, value=value)], {"x": x}, opset=9)
    if min(pads) >= 0:
        check(m, {"x": x})


def test_pad_with_axes_and_reflect_is_foreign():
    x = rnd(2, 5, 6)
    one("Pad", {"x": x}, {"p": np.array([1, 2, 3, 0], np.int64), "v": np.float32(1), "a": np.array([2, 0], np.int64)},
        opset=18)
    g = one("Pad", {"x": x}, {"p": np.array([0, 1, 1, 0, 1, 1], np.int64)}, {"mode": "reflect"}, opset=13)
    assert ops_of(g) == ["foreign"] and "reflect" in g.nodes[0].attrs["needs"]


def test_squeeze_unsqueeze_both_forms():
    x = rnd(3, 1, 4, 1)
    g = one("Squeeze", {"x": x}, None, {"axes": [1, -1]}, opset=11)
    assert ops_of(g) == ["reshape"]
    one("Squeeze", {"x": x}, None, opset=11)
    one("Squeeze", {"x": x}, {"a": np.array([-1], np.int64)}, opset=13)
    one("Squeeze", {"x": x}, None, opset=13)
    one("Unsqueeze", {"x": rnd(3, 4)}, None, {"axes": [0, 3]}, opset=11)
    one("Unsqueeze", {"x": rnd(3, 4)}, {"a": np.array([-1, 1], np.int64)}, opset=13)


def test_expand_tile_gather():
    one("Expand", {"x": rnd(3, 1)}, {"s": np.array([2, 1, 4], np.int64)})
    one("Tile", {"x": rnd(2, 3)}, {"r": np.array([3, 2], np.int64)})
    one("Gather", {"x": rnd(5, 4)}, {"i": np.array([[0, -1], [2, 3]], np.int64)}, {"axis": 0})
    one("Gather", {"x": rnd(5, 4)}, {"i": np.array(2, np.int64)}, {"axis": 1})
    one("Gather", {"x": rnd(5, 4), "i": np.array([4, 0, 1], np.int64)}, None, {"axis": 0})
    one("GatherElements", {"x": rnd(3, 4), "i": np.array([[0, 2], [1, 1], [2, 0]], np.int64)}, None, {"axis": 0})


def test_shape_arithmetic_is_folded():
    """PyTorch's export of x.view(x.size(0), -1): Shape, Gather, Unsqueeze, Concat, Reshape -> one reshape."""
    nodes = [oh.make_node("Shape", ["x"], ["s"]),
             oh.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             oh.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
             oh.make_node("Concat", ["n1", "m1"], ["shape"], axis=0),
             oh.make_node("Reshape", ["x", "shape"], ["r"]),
             oh.make_node("Shape", ["r"], ["s2"], start=-1),
             oh.make_node("Cast", ["s2"], ["f"], to=TP.FLOAT),
             oh.make_node("Div", ["r", "f"], ["d"]),
             oh.make_node("ConstantOfShape", ["s2"], ["ones"], value=nh.from_array(np.array([2.0], np.float32))),
             oh.make_node("Add", ["d", "ones"], ["y"])]
    x = rnd(2, 3, 4)
    m = make(nodes, {"x": x}, {"zero": np.array(0, np.int64), "ax": np.array([0], np.int64),
                               "m1": np.array([-1], np.int64)}, opset=15)
    g = check(m, {"x": x})
    assert ops_of(g) == ["reshape", "div", "add"]


def test_constants():
    nodes = [oh.make_node("Constant", [], ["a"], value=nh.from_array(rnd(3, seed=5))),
             oh.make_node("Constant", [], ["b"], value_floats=[1.0, 2.0, 3.0]),
             oh.make_node("Constant", [], ["c"], value_int=2),
             oh.make_node("Cast", ["c"], ["cf"], to=TP.FLOAT),
             oh.make_node("Mul", ["a", "b"], ["ab"]),
             oh.make_node("Mul", ["ab", "cf"], ["abc"]),
             oh.make_node("Add", ["x", "abc"], ["y"])]
    g = check(make(nodes, {"x": rnd(2, 3)}, opset=13), {"x": rnd(2, 3)})
    assert ops_of(g) == ["add"]


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2",
                                "ReduceSumSquare", "ReduceLogSumExp"])
@pytest.mark.parametrize("axes, keep", [([1], 1), ([0, -1], 0), (None, 1), (None, 0)])
def test_reductions(op, axes, keep):
    x = rnd(3, 4, 5)
    # axes: an attribute up to opset 17 (12 for ReduceSum), an input from 18 (13)
    one(op, {"x": x}, None, dict({"keepdims": keep}, **({"axes": axes} if axes else {})), opset=12)
    one(op, {"x": x}, {"a": np.array(axes, np.int64)} if axes else None, {"keepdims": keep}, opset=18)


def test_reduce_noop_with_empty_axes_and_log_sum():
    g = one("ReduceSum", {"x": rnd(3, 4)}, None, {"noop_with_empty_axes": 1}, opset=13)
    assert ops_of(g) == ["identity"]
    one("ReduceLogSum", {"x": np.abs(rnd(3, 4)) + 0.1}, None, {"axes": [1]}, opset=13)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis, keep", [(0, 1), (-1, 0), (1, 1)])
def test_argmax(op, axis, keep):
    one(op, {"x": rnd(3, 4, 5)}, None, {"axis": axis, "keepdims": keep})


def test_dropout():
    x = rnd(3, 4)
    g = one("Dropout", {"x": x}, None, {"ratio": 0.3}, opset=9)
    assert ops_of(g) == ["identity"]
    # the mask, read: every element kept (inference)
    m = make([oh.make_node("Dropout", ["x", "r"], ["d", "mask"]), oh.make_node("Cast", ["mask"], ["mf"], to=TP.FLOAT),
              oh.make_node("Mul", ["d", "mf"], ["y"])], {"x": x}, {"r": np.float32(0.5)}, opset=13)
    assert ops_of(check(m, {"x": x})) == ["mul"]
    m = make([oh.make_node("Dropout", ["x", "r", "t"], ["y"])], {"x": x}, {"r": np.float32(0.5), "t": np.array(True)},
             opset=13)
    g = from_onnx(m)
    assert ops_of(g) == ["foreign"] and "training" in g.nodes[0].attrs["needs"]


def test_max_pool_indices_output_is_foreign():
    x = rnd(1, 2, 6, 6)
    m = make([oh.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], strides=[2, 2])], {"x": x},
             outputs=("y", "i"), opset=12)
    g = check(m, {"x": x})
    assert ops_of(g) == ["foreign"] and "'i'" in g.nodes[0].attrs["needs"]


# --- foreign ops ---------------------------------------------------------------------------------------------------
def test_einsum_is_foreign_and_runs_through_onnxruntime():
    a, b = rnd(2, 3, 4), rnd(2, 4, 5, seed=1)
    nodes = [oh.make_node("Relu", ["a"], ["ra"]), oh.make_node("Einsum", ["ra", "b"], ["e"], equation="bij,bjk->bik"),
             oh.make_node("Sigmoid", ["e"], ["y"])]
    m = make(nodes, {"a": a}, {"b": b}, opset=13, )
    m.graph.name = "einsum_model"
    g = check(m, {"a": a})
    assert ops_of(g) == ["relu", "foreign", "sigmoid"]
    f = g.nodes[1]
    assert f.attrs["framework"] == "onnx" and f.attrs["op"] == "Einsum"
    assert f.attrs["types"] == [((2, 3, 5), "float32")]
    assert "Einsum" in f.attrs["needs"]
    assert f.source == "einsum_model: Einsum 'e'"
    assert "foreign" in str(g) and "onnxruntime" in str(g)
    g2 = pickle.loads(pickle.dumps(g))          # the host fn travels with the graph (its session is remade)
    np.testing.assert_array_equal(run_host(g2, [a])[0], run_host(g, [a])[0])


def test_a_foreign_op_of_constants_is_folded():
    nodes = [oh.make_node("Range", ["s", "l", "d"], ["r"]), oh.make_node("Add", ["x", "r"], ["y"])]
    consts = {"s": np.float32(0), "l": np.float32(5), "d": np.float32(1)}
    g = check(make(nodes, {"x": rnd(5)}, consts), {"x": rnd(5)})
    assert ops_of(g) == ["add"]
    # a data-dependent shape is fine when the data is constant
    nodes = [oh.make_node("NonZero", ["c"], ["nz"]), oh.make_node("Cast", ["nz"], ["f"], to=TP.FLOAT),
             oh.make_node("ReduceSum", ["f"], ["s"], keepdims=0), oh.make_node("Add", ["x", "s"], ["y"])]
    g = check(make(nodes, {"x": rnd(1)}, {"c": np.array([0, 1, 0, 2], np.float32)}, opset=13), {"x": rnd(1)})
    assert ops_of(g) == ["add"]


def test_if_reading_outer_values_is_foreign():
    x = rnd(3)
    then = oh.make_graph([oh.make_node("Relu", ["x"], ["t"])], "then", [], [oh.make_tensor_value_info("t", TP.FLOAT,
                                                                                                      [3])])
    els = oh.make_graph([oh.make_node("Neg", ["x"], ["e"])], "else", [], [oh.make_tensor_value_info("e", TP.FLOAT,
                                                                                                   [3])])
    m = make([oh.make_node("If", ["c"], ["y"], then_branch=then, else_branch=els)], {"x": x, "c": np.array(True)})
    for c in (True, False):
        g = check(m, {"x": x, "c": np.array(c)})
    assert ops_of(g) == ["foreign"] and len(g.nodes[0].inputs) == 2


def test_an_op_of_an_unknown_domain():
    x = rnd(2, 3)
    dom = [oh.make_opsetid("my.domain", 1)]
    node = oh.make_node("Frobnicate", ["x"], ["f"], domain="my.domain")
    # declared type: a foreign node; onnxruntime has no kernel: running it says so
    m = make([node, oh.make_node("Relu", ["f"], ["y"])], {"x": x}, extra_opsets=dom,
             value_info=[oh.make_tensor_value_info("f", TP.FLOAT, [2, 3])])
    g = from_onnx(m)
    assert ops_of(g) == ["foreign", "relu"] and g.nodes[0].attrs["op"] == "my.domain:Frobnicate"
    with pytest.raises(UnsupportedOp, match="Frobnicate"):
        run_host(g, [x])
    # no type anywhere: the import says what is missing
    m = make([node, oh.make_node("Relu", ["f"], ["y"])], {"x": x}, extra_opsets=dom)
    with pytest.raises(InvalidArgument, match=r"my.domain:Frobnicate 'f'.*no type for its output 'f'"):
        from_onnx(m)


def test_foreign_without_a_static_shape():
    x = rnd(6)
    m = make([oh.make_node("NonZero", ["x"], ["y"])], {"x": x})
    with pytest.raises(InvalidArgument, match=r"NonZero 'y'.*no static shape"):
        from_onnx(m)


# --- inputs, batch and misuse ----------------------------------------------------------------------------------------
def _symbolic_model():
    x = oh.make_tensor_value_info("x", TP.FLOAT, ["N", 3, 4])
    nodes = [oh.make_node("Reshape", ["x", "s"], ["r"]), oh.make_node("Relu", ["r"], ["y"])]
    g = oh.make_graph(nodes, "sym", [x], [oh.make_tensor_value_info("y", TP.FLOAT, ["N", 12])],
                      [nh.from_array(np.array([0, -1], np.int64), "s")])
    return oh.make_model_gen_version(g, opset_imports=[oh.make_opsetid("", 13)])


def test_symbolic_batch():
    m = _symbolic_model()
    with pytest.raises(InvalidArgument, match=r"input 'x' has the dynamic dimension 'N' at axis 0.*batch="):
        from_onnx(m)
    x = rnd(5, 3, 4)
    g = check(m, {"x": x}, batch=5)
    assert g.values["x"].shape == (5, 3, 4) and g.values[g.outputs[0]].shape == (5, 12)
    g = check(m, {"x": rnd(2, 3, 4)}, shapes={"x": (2, 3, 4)})
    with pytest.raises(InvalidArgument, match="batch must be a positive int"):
        from_onnx(m, batch=0)
    with pytest.raises(InvalidArgument, match="not inputs of the model"):
        from_onnx(m, shapes={"nope": (1,)})


def test_other_dynamic_dimensions_and_dynamic_reshape():
    x = oh.make_tensor_value_info("x", TP.FLOAT, [1, "L"])
    g = oh.make_graph([oh.make_node("Relu", ["x"], ["y"])], "dyn", [x], [oh.make_value_info("y", onnx.TypeProto())])
    m = oh.make_model_gen_version(g, opset_imports=[oh.make_opsetid("", 13)])
    with pytest.raises(InvalidArgument, match=r"'L' at axis 1.*shapes="):
        from_onnx(m, batch=2)
    assert from_onnx(m, shapes={"x": (1, 7)}).values["x"].shape == (1, 7)
    m = make([oh.make_node("Reshape", ["x", "s"], ["y"])], {"x": rnd(2, 6), "s": np.array([3, 4], np.int64)})
    with pytest.raises(InvalidArgument, match=r"Reshape 'y'.*target shape is computed at run time"):
        from_onnx(m)


def test_batch_rewrites_a_constant_batch_in_reshape():
    """AlexNet-style Reshape([1, 12]) and Reshape([1, -1]) with batch=3: the new batch goes in the constant."""
    x = rnd(1, 3, 4)
    nodes = [oh.make_node("Reshape", ["x", "s"], ["r"]), oh.make_node("Reshape", ["r", "s2"], ["r2"]),
             oh.make_node("Relu", ["r2"], ["y"])]
    m = make(nodes, {"x": x}, {"s": np.array([1, 12], np.int64), "s2": np.array([1, -1, 2], np.int64)})
    assert from_onnx(m).values[from_onnx(m).outputs[0]].shape == (1, 6, 2)
    g = from_onnx(m, batch=3)
    assert g.values[g.outputs[0]].shape == (3, 6, 2)
    xb = rnd(3, 3, 4, seed=4)
    np.testing.assert_allclose(run_host(g, [xb])[0], np.maximum(xb.reshape(3, 6, 2), 0))


def test_missing_file_and_garbage(tmp_path):
    with pytest.raises(InvalidArgument, match=r"nope\.onnx: no such file"):
        from_onnx(tmp_path / "nope.onnx")
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(InvalidArgument, match=r"garbage\.onnx: not an ONNX model"):
        from_onnx(bad)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(InvalidArgument, match=r"empty\.onnx: not an ONNX model"):
        from_onnx(str(empty))
    with pytest.raises(InvalidArgument, match=r"output_0\.pb: not an ONNX model"):   # a TensorProto file
        from_onnx(os.path.join(LIGHT, "light_resnet50_output_0.pb"))
    with pytest.raises(InvalidArgument, match="not a file"):
        from_onnx(tmp_path)
    with pytest.raises(InvalidArgument, match="takes a path"):
        from_onnx(42)


def test_path_bytes_and_proto_give_one_graph(tmp_path):
    x = rnd(2, 3)
    m = make([oh.make_node("Relu", ["x"], ["r"], name="act"), oh.make_node("Neg", ["r"], ["y"])], {"x": x})
    p = tmp_path / "small.onnx"
    onnx.save(m, str(p))
    gs = [from_onnx(p), from_onnx(str(p)), from_onnx(p.read_bytes()), from_onnx(m)]
    assert gs[0].nodes[0].source == "small.onnx: Relu 'act'" and gs[0].nodes[1].source == "small.onnx: Neg 'y'"
    assert gs[0].name == "small" and gs[0].outputs == ["y"]
    for g in gs:
        np.testing.assert_array_equal(run_host(g, [x])[0], -np.maximum(x, 0))


def test_unsupported_dtype():
    m = make([oh.make_node("Relu", ["x"], ["y"])], {"x": np.zeros((2, 3), np.int16)})
    with pytest.raises(InvalidArgument, match=r"input 'x' is INT16"):
        from_onnx(m)
    m = make([oh.make_node("Cast", ["x"], ["y"], to=TP.BFLOAT16)], {"x": rnd(2)})
    with pytest.raises(InvalidArgument, match=r"Cast 'y'.*BFLOAT16"):
        from_onnx(m)


def test_an_unsupported_dtype_is_an_error_only_where_read():
    x = rnd(2, 3)
    odd = {"w": np.zeros(3, np.int16)}
    m = make([oh.make_node("Relu", ["x"], ["y"])], {"x": x}, odd)
    assert ops_of(check(m, {"x": x})) == ["relu"]
    m = make([oh.make_node("Cast", ["w"], ["wf"], to=TP.FLOAT), oh.make_node("Add", ["x", "wf"], ["y"])], {"x": x}, odd)
    with pytest.raises(InvalidArgument, match=r"Cast 'wf' reads the initializer 'w' of dtype int16"):
        from_onnx(m)


def test_integer_reductions_keep_their_dtype():
    x = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    g = one("ReduceSum", {"x": x}, {"a": np.array([1], np.int64)}, {"keepdims": 0}, opset=13)
    assert g.values[g.outputs[0]].dtype == "int32"
    one("ReduceMax", {"x": x}, None, {"axes": [2]}, opset=13)


def test_a_pytorch_export():
    """A transformer block and a conv / batch-norm / pooling branch exported by torch.onnx (the TorchScript
    exporter, opset 17, dynamic batch): Shape / Gather / Concat chains fold once batch= fixes the batch."""
    torch = pytest.importorskip("torch")
    import io
    import warnings

    class Block(torch.nn.Module):
        def __init__(self, d=32, h=4):
            super().__init__()
            self.h = h
            self.ln = torch.nn.LayerNorm(d)
            self.qkv = torch.nn.Linear(d, 3 * d)
            self.o = torch.nn.Linear(d, d)
            self.ff = torch.nn.Sequential(torch.nn.Linear(d, 4 * d), torch.nn.GELU(), torch.nn.Linear(4 * d, d))
            self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.bn = torch.nn.BatchNorm2d(8)

        def forward(self, x, img):
            B, T, D = x.shape
            q, k, v = (t.view(B, T, self.h, -1).transpose(1, 2) for t in self.qkv(self.ln(x)).chunk(3, -1))
            a = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, -1) @ v
            x = x + self.o(a.transpose(1, 2).reshape(B, T, D))
            x = x + self.ff(x)
            c = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.bn(self.conv(img))), 1).flatten(1)
            return x.mean(1) + c.sum(-1, keepdim=True), torch.nn.functional.max_pool2d(img, 3, 2, 1, ceil_mode=True)

    torch.manual_seed(0)
    m = Block().eval()
    x, img = torch.randn(2, 5, 32), torch.randn(2, 3, 15, 15)
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x, img), f, dynamo=False, opset_version=17, input_names=["x", "img"],
                          output_names=["y", "p"], dynamic_axes={n: {0: "B"} for n in ("x", "img", "y", "p")})
    with pytest.raises(InvalidArgument, match="dynamic dimension 'B'"):
        from_onnx(f.getvalue())
    g = from_onnx(f.getvalue(), batch=3)
    assert not {"foreign"} & set(ops_of(g)) and "layer_norm" in ops_of(g)
    x, img = torch.randn(3, 5, 32), torch.randn(3, 3, 15, 15)
    ys = run_host(g, [x.numpy(), img.numpy()])
    with torch.no_grad():
        ts = m(x, img)
    for y, t in zip(ys, ts):
        np.testing.assert_allclose(y, t.numpy(), rtol=1e-4, atol=1e-5)


def test_graph_outputs_keep_their_onnx_names():
    x = rnd(2, 3)
    nodes = [oh.make_node("Identity", ["x"], ["a"]), oh.make_node("Relu", ["x"], ["b"]),
             oh.make_node("Reshape", ["b", "s"], ["c"])]
    m = make(nodes, {"x": x}, {"s": np.array([2, 3], np.int64)}, outputs=("a", "b", "c"))
    g = check(m, {"x": x})
    assert g.outputs == ["a", "b", "c"]
