"""The ops the model compiler knows: for each, its shape rule, a numpy implementation (float64 inside, the
graph's dtype out: constant folding, calibration and the host fallback) and its lowering to the card (the
library's kernels, through `vnpu.ops` and `vnpu.kernels`), with the MACs and bytes the partitioner's cost
model reads.

One table, `OPS`, from which everything that dispatches on an op name derives (the front ends map their
ops onto these names; `coverage()` reports an op as lowered, host or unsupported from it).

Card lowerings take (card, inputs, attrs, pes) and return the outputs; an op whose lowering does not take
the dtypes it is given raises `NotLowered` naming what it would need, and is then reported (and run on the
host only if the user allowed it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from vnpu.errors import InvalidArgument

FLOATS = ("float32", "float16")


class NotLowered(Exception):
    """The card has no kernel for this op with these operands (the message says what would be needed)."""


@dataclass
class OpDef:
    name: str
    infer: Callable            # (in_types [(shape, dtype)], attrs) -> [(shape, dtype)]
    host: Callable             # (inputs [np.ndarray | None], attrs) -> [np.ndarray]
    card: Callable | None      # (card, inputs, attrs, pes) -> [np.ndarray]; None: no card kernel
    macs: Callable | None = None   # (in_types, out_types, attrs) -> MACs (matrix-unit work)
    cheap: bool = False        # pure data movement (reshape-like): free to constant-fold
    resident: tuple = ()       # inputs the card lowering hands to its kernel as they are: a program pins
                               # constants there on the cards (Card.pin) instead of copying them per launch


OPS: dict[str, OpDef] = {}


def _op(name, infer, host, card=None, macs=None, cheap=False, resident=()):
    OPS[name] = OpDef(name, infer, host, card, macs, cheap, resident)


# how many inputs each op takes (min, max); an op not listed takes one
ARITY = {**{n: (2, 2) for n in ("add", "sub", "mul", "div", "maximum", "minimum", "pow", "matmul", "bmm", "gather",
                                "index_select", "embedding", "dot_interaction")},
         "where": (3, 3), "conv2d": (2, 4), "conv_transpose2d": (2, 3), "linear": (2, 3), "batch_norm": (3, 5),
         "layer_norm": (1, 3), "softmax": (1, 2), "scaled_dot_product_attention": (3, 4), "embedding_bag": (3, 3),
         "cat": (1, 1 << 16), "foreign": (0, 1 << 16)}
# attributes an op reads (any other is an error naming it, so a misspelt one is not silently ignored)
_COMMON = {"memory"}
ATTRS = {
    "gelu": {"approximate"}, "clamp": {"min", "max"}, "conv2d": {"stride", "padding", "dilation", "groups",
    "activation", "clip", "x_scale", "w_scale", "out_scale", "out_zero_point", "residual_scale", "residual_zero_point"},
    "linear": {"activation", "clip", "x_scale", "w_scale", "out_scale", "out_zero_point"},
    "bmm": {"transpose_a", "transpose_b"},
    "conv_transpose2d": {"stride", "padding", "output_padding", "groups", "dilation"},
    "max_pool2d": {"kernel_size", "stride", "padding", "dilation", "ceil_mode"},
    "avg_pool2d": {"kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"},
    "adaptive_avg_pool2d": {"output_size"}, "batch_norm": {"eps"}, "layer_norm": {"normalized_shape", "eps"},
    "local_response_norm": {"size", "alpha", "beta", "k"}, "softmax": {"dim", "safe"},
    "scaled_dot_product_attention": {"scale", "is_causal"}, "reshape": {"shape"}, "permute": {"dims"},
    "cat": {"dim"}, "split": {"sizes", "dim"}, "slice": {"dim", "start", "end", "step"}, "pad": {"pad", "value"},
    "expand": {"shape"}, "gather": {"dim"}, "index_select": {"dim"}, "embedding_bag": {"mode", "format", "dim", "out_dtype"}, "to": {"dtype"},
    **{n: {"dim", "keepdim"} for n in ("sum", "mean", "amax", "argmax")},
    "quantize": {"scale", "zero_point"}, "dequantize": {"scale", "zero_point"},
    "foreign": {"framework", "op", "types", "needs", "fn"},
}
# attributes an op cannot do without
REQUIRED = {"max_pool2d": {"kernel_size"}, "avg_pool2d": {"kernel_size"}, "adaptive_avg_pool2d": {"output_size"},
            "local_response_norm": {"size"}, "reshape": {"shape"}, "permute": {"dims"}, "split": {"sizes"},
            "pad": {"pad"}, "expand": {"shape"}, "to": {"dtype"}, "quantize": {"scale"}, "dequantize": {"scale"},
            "foreign": {"types"}}


def infer(graph, node):
    """The output types of `node` in `graph` ([(shape, dtype)]); InvalidArgument for an unknown op, a wrong
    number of inputs, an attribute the op does not read or lacks, or operands the op does not take."""
    d = OPS.get(node.op)
    where = node.source or node.name
    if d is None:
        raise InvalidArgument(f"unknown op {node.op!r} ({where}); vnpu's ops: {', '.join(sorted(OPS))}")
    lo, hi = ARITY.get(node.op, (1, 1))
    if not lo <= len(node.inputs) <= hi:
        raise InvalidArgument(f"{node.op} ({where}) takes {lo if lo == hi else f'{lo} to {hi}'} inputs, got "
                              f"{len(node.inputs)}")
    if node.inputs and not node.inputs[0] and node.op != "foreign":
        raise InvalidArgument(f"{node.op} ({where}): its first input cannot be absent")
    unknown = set(node.attrs) - ATTRS.get(node.op, set()) - _COMMON
    if unknown:
        raise InvalidArgument(f"{node.op} ({where}) has no attribute {', '.join(sorted(map(str, unknown)))}; it "
                              f"reads {', '.join(sorted(ATTRS.get(node.op, set()))) or 'none'}")
    missing = REQUIRED.get(node.op, set()) - set(node.attrs)
    if missing:
        raise InvalidArgument(f"{node.op} ({where}) needs the attribute {', '.join(sorted(missing))}")
    types = [(graph.values[i].shape, graph.values[i].dtype) if i else None for i in node.inputs]
    try:
        return d.infer(types, node.attrs)
    except (ValueError, IndexError, TypeError, KeyError, AttributeError, OverflowError, ZeroDivisionError) as e:
        raise InvalidArgument(f"{node.op} ({node.source or node.name}): operands "
                              f"{[t and list(t[0]) for t in types]} with {node.attrs} are not valid: {e}") from None


# --- helpers ----------------------------------------------------------------------------------------------------
def _f64(a):
    return np.asarray(a, np.float64)


def _same(types, attrs):
    return [types[0]]


def _by_host(types, attrs, name):
    """Shape rule of a cheap op: run its numpy implementation on zeros of the input shapes."""
    xs = [None if t is None else np.zeros(t[0], t[1]) for t in types]
    return [(o.shape, str(o.dtype)) for o in OPS[name].host(xs, attrs)]


def _float_in(x, what):
    if x.dtype.name not in FLOATS:
        raise NotLowered(f"{what} on the card takes float32 or float16, got {x.dtype}")


def _unary_card(fn):
    def run(card, xs, attrs, pes):
        from vnpu.kernels import ops as O
        _float_in(xs[0], fn)
        return [getattr(O, fn)(xs[0], card=card, pes=pes, **attrs)]
    return run


def _to(dtype, a):
    return np.asarray(a).astype(dtype)


# --- elementwise ----------------------------------------------------------------------------------------------
def _erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x) if x.size else x


UNARY = {
    "relu": lambda x, a: np.where(x < 0, 0.0, x),
    "sigmoid": lambda x, a: 1 / (1 + np.exp(-x)),
    "tanh": lambda x, a: np.tanh(x),
    "gelu": lambda x, a: (0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))))
    if a.get("approximate", "none") == "tanh" else 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    "identity": lambda x, a: x,
    "exp": lambda x, a: np.exp(x),
    "sqrt": lambda x, a: np.sqrt(x),
    "rsqrt": lambda x, a: 1 / np.sqrt(x),
    "neg": lambda x, a: -x,
    "erf": lambda x, a: _erf(x),
    "abs": lambda x, a: np.abs(x),
    "log": lambda x, a: np.log(x),
}


def _unary_host(name):
    def host(xs, attrs):
        x = xs[0]
        with np.errstate(all="ignore"):
            return [_to(x.dtype, UNARY[name](_f64(x), attrs))] if x.dtype.kind == "f" else \
                [_to(x.dtype, UNARY[name](x, attrs))]
    return host


for _n in UNARY:
    _op(_n, _same, _unary_host(_n), _unary_card(_n) if _n in ("relu", "sigmoid", "tanh", "gelu") else None)
OPS["identity"] = OpDef("identity", _same, _unary_host("identity"), lambda card, xs, attrs, pes: [xs[0]], cheap=True)


def _clamp_host(xs, attrs):
    x = _f64(xs[0])
    lo, hi = attrs.get("min"), attrs.get("max")
    with np.errstate(invalid="ignore"):
        if lo is not None:
            x = np.where(np.isnan(x), x, np.maximum(x, lo))
        if hi is not None:
            x = np.where(np.isnan(x), x, np.minimum(x, hi))
    return [_to(xs[0].dtype, x)]


def _clamp_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    _float_in(xs[0], "clamp")
    return [O.clamp(xs[0], attrs.get("min"), attrs.get("max"), card=card, pes=pes)]


_op("clamp", _same, _clamp_host, _clamp_card)


def _bcast(types, attrs):
    shape = np.broadcast_shapes(*[t[0] for t in types if t is not None])
    dts = [t[1] for t in types if t is not None]
    return [(shape, np.result_type(*[np.dtype(d) for d in dts]).name)]


BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "maximum": np.maximum,
          "minimum": np.minimum, "pow": np.power}


def _binary_host(name):
    def host(xs, attrs):
        dt = np.result_type(xs[0], xs[1])
        with np.errstate(all="ignore"):
            if dt.kind == "f":
                return [_to(dt, BINARY[name](_f64(xs[0]), _f64(xs[1])))]
            if name == "div":
                return [_to(np.float32, np.divide(_f64(xs[0]), _f64(xs[1])))]
            return [_to(dt, BINARY[name](xs[0], xs[1]))]
    return host


def _binary_card(name):
    def run(card, xs, attrs, pes):
        from vnpu.kernels import ops as O
        a, b = xs
        for v in (a, b):
            _float_in(v, name)
        if a.dtype != b.dtype:
            raise NotLowered(f"{name} on the card takes two operands of one dtype, got {a.dtype} and {b.dtype}")
        if a.size == 0 or b.size == 0:
            raise NotLowered(f"{name} of an empty operand")
        return [getattr(O, name)(a, b, card=card, pes=pes)]
    return run


for _n in BINARY:
    _op(_n, _bcast, _binary_host(_n), _binary_card(_n) if _n != "pow" else None)


def _pow_infer(types, attrs):
    """A float base to an integer power keeps the base's dtype (as ONNX and PyTorch do)."""
    (shape, dt), = _bcast(types, attrs)
    if np.dtype(types[0][1]).kind == "f" and np.dtype(types[1][1]).kind in "iub":
        dt = types[0][1]
    return [(shape, dt)]


def _pow_host(xs, attrs):
    out = _binary_host("pow")(xs, attrs)[0]
    return [out.astype(_pow_infer([(xs[0].shape, xs[0].dtype.name), (xs[1].shape, xs[1].dtype.name)], attrs)[0][1])]


_op("pow", _pow_infer, _pow_host)


def _where_infer(types, attrs):
    return _bcast(types[1:], attrs) if types[0] is None else [(np.broadcast_shapes(*[t[0] for t in types]),
                                                                _bcast(types[1:], attrs)[0][1])]


def _where_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    c, a, b = xs
    shape = np.broadcast_shapes(c.shape, a.shape, b.shape)
    if a.dtype != b.dtype or a.dtype.name not in FLOATS:
        raise NotLowered("where on the card takes two float operands of one dtype")
    return [O.where(np.broadcast_to(c.astype(bool), shape).copy(), np.broadcast_to(a, shape).copy(),
                    np.broadcast_to(b, shape).copy(), card=card, pes=pes)]


_op("where", _where_infer, lambda xs, a: [np.where(xs[0].astype(bool), xs[1], xs[2]).astype(
    np.result_type(xs[1], xs[2]))], _where_card)


# --- matrix unit ----------------------------------------------------------------------------------------------
def _matmul_infer(types, attrs):
    (a, ad), (b, bd) = types
    if len(a) < 1 or len(b) < 1:
        raise ValueError("matmul of a 0-d tensor")
    a2, b2 = (a if len(a) > 1 else (1,) + a), (b if len(b) > 1 else b + (1,))
    if a2[-1] != b2[-2]:
        raise ValueError(f"inner dimensions {a2[-1]} and {b2[-2]} differ")
    batch = np.broadcast_shapes(a2[:-2], b2[:-2])
    out = batch + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    dt = "int32" if ad == bd == "int8" else np.result_type(np.dtype(ad), np.dtype(bd)).name
    return [(out, dt)]


def _matmul_host(xs, attrs):
    a, b = xs
    if a.dtype == b.dtype == np.int8:
        return [np.matmul(a.astype(np.int64), b.astype(np.int64)).astype(np.int32)]
    return [_to(np.result_type(a, b), np.matmul(_f64(a), _f64(b)))]


def _matmul_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    a, b = xs
    if a.dtype != b.dtype or a.dtype.name not in FLOATS + ("int8",):
        raise NotLowered(f"matmul on the card takes two float32, float16 or int8 operands of one dtype, got "
                         f"{a.dtype} and {b.dtype}")
    if a.ndim < 2 or b.ndim < 2:
        raise NotLowered("matmul of a vector (reshape it to a matrix first)")
    if a.size == 0 or b.size == 0:
        raise NotLowered("matmul of an empty operand")
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
    B = int(np.prod(shape, dtype=np.int64))
    if b.ndim == 2 and a.ndim >= 2 and a.dtype.name in FLOATS:        # x @ W: one GEMM over every row
        y = O.linear(np.ascontiguousarray(a.reshape(-1, K)), np.ascontiguousarray(b.T), card=card, pes=pes) \
            if a.dtype == np.float16 else O.matmul(np.ascontiguousarray(a.reshape(-1, K)), b, card=card, pes=pes)
        return [y.reshape(a.shape[:-1] + (N,)).astype(_matmul_infer([(a.shape, a.dtype.name), (b.shape, b.dtype.name)],
                                                                     {})[0][1])]
    aa = np.ascontiguousarray(np.broadcast_to(a, shape + (M, K))).reshape(B, M, K)
    bb = np.ascontiguousarray(np.broadcast_to(b, shape + (K, N))).reshape(B, K, N)
    y = O.bmm(aa, bb, card=card, pes=pes) if a.dtype != np.int8 else O.matmul(aa, bb, card=card, pes=pes)
    out_dt = _matmul_infer([(a.shape, a.dtype.name), (b.shape, b.dtype.name)], {})[0][1]
    return [y.reshape(shape + (M, N)).astype(out_dt)]


def _matmul_macs(types, outs, attrs):
    return int(np.prod(outs[0][0], dtype=np.int64)) * types[0][0][-1]


_op("matmul", _matmul_infer, _matmul_host, _matmul_card, _matmul_macs)


def _linear_infer(types, attrs):
    (x, xd), (w, wd) = types[:2]
    if len(w) != 2 or x[-1] != w[1]:
        raise ValueError(f"linear: x {x} and weight {w} ([out, in]) do not match")
    dt = "float32" if xd == "int8" and attrs.get("out_scale") is None else ("int8" if xd == "int8" else xd)
    return [(tuple(x[:-1]) + (w[0],), dt)]


def _linear_host(xs, attrs):
    x, w, b = xs[0], xs[1], xs[2] if len(xs) > 2 else None
    if x.dtype == np.int8:
        acc = (x.reshape(-1, x.shape[-1]).astype(np.int64) @ w.astype(np.int64).T).astype(np.float64)
        y = acc * float(attrs["x_scale"]) * np.broadcast_to(_f64(attrs["w_scale"]), (w.shape[0],))
    else:
        y = _f64(x.reshape(-1, x.shape[-1])) @ _f64(w).T
    if b is not None:
        y = y + _f64(b)
    y = _activation(y, attrs)
    y = y.reshape(x.shape[:-1] + (w.shape[0],))
    if x.dtype == np.int8:
        return [_requant(y, attrs) if attrs.get("out_scale") is not None else y.astype(np.float32)]
    return [_to(x.dtype, y)]


def _activation(y, attrs):
    act = attrs.get("activation")
    if act == "relu":
        return np.where(y < 0, 0.0, y)
    if act in ("relu6", "clip"):
        lo, hi = (0.0, 6.0) if act == "relu6" else attrs["clip"]
        return np.minimum(np.maximum(y, lo), hi)
    return y


def _requant(y, attrs):
    zp = attrs.get("out_zero_point", 0)
    return np.clip(np.rint(y / float(attrs["out_scale"]) + zp), -128, 127).astype(np.int8)


def _linear_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    x, w, b = xs[0], xs[1], xs[2] if len(xs) > 2 else None
    if x.dtype != w.dtype or x.dtype.name not in FLOATS + ("int8",):
        raise NotLowered(f"linear on the card takes x and weight of one dtype (float32, float16 or int8), got "
                         f"{x.dtype} and {w.dtype}")
    if x.size == 0 or w.size == 0:
        raise NotLowered("linear of an empty operand")
    if attrs.get("activation") not in (None, "relu"):
        raise NotLowered(f"linear with a fused {attrs['activation']}")
    x2 = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))
    bias = None if b is None else np.asarray(b, np.float32)
    if x.dtype == np.float32:
        y = O.matmul(x2, np.ascontiguousarray(w.T), card=card, pes=pes)
        if bias is not None:
            y = O.add(y, np.ascontiguousarray(np.broadcast_to(bias, y.shape)), card=card, pes=pes)
        if attrs.get("activation") == "relu":
            y = O.relu(y, card=card, pes=pes)
    else:      # int8 or fp16: the activation in the gemm's epilogue, before an int8 output's requantization
        q = {k: attrs[k] for k in ("x_scale", "w_scale", "out_scale", "out_zero_point") if k in attrs}
        y = O.linear(x2, w, bias, activation=attrs.get("activation"), card=card, pes=pes, **q)
    out_dt = _linear_infer([(x.shape, x.dtype.name), (w.shape, w.dtype.name)], attrs)[0][1]
    return [y.reshape(x.shape[:-1] + (w.shape[0],)).astype(out_dt)]


_op("linear", _linear_infer, _linear_host, _linear_card,
    lambda t, o, a: int(np.prod(o[0][0], dtype=np.int64)) * t[0][0][-1])


def _bmm_infer(types, attrs):
    (a, ad), (b, bd) = types
    ta, tb = attrs.get("transpose_a", False), attrs.get("transpose_b", False)
    M, K = (a[-1], a[-2]) if ta else (a[-2], a[-1])
    K2, N = (b[-1], b[-2]) if tb else (b[-2], b[-1])
    if K != K2 or a[:-2] != b[:-2]:
        raise ValueError(f"bmm: {a} and {b} do not match")
    return [(tuple(a[:-2]) + (M, N), "float32" if ad == "float32" else ad)]


def _bmm_host(xs, attrs):
    a, b = _f64(xs[0]), _f64(xs[1])
    if attrs.get("transpose_a"):
        a = np.swapaxes(a, -1, -2)
    if attrs.get("transpose_b"):
        b = np.swapaxes(b, -1, -2)
    return [_to(xs[0].dtype, a @ b)]


def _bmm_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    a, b = xs
    if a.dtype != b.dtype or a.dtype.name not in FLOATS or a.size == 0 or b.size == 0:
        raise NotLowered(f"bmm on the card takes two non-empty float operands of one dtype, got {a.dtype}, {b.dtype}")
    lead = a.shape[:-2]
    B = int(np.prod(lead, dtype=np.int64))
    y = O.bmm(a.reshape((B,) + a.shape[-2:]), b.reshape((B,) + b.shape[-2:]), transpose_a=attrs.get("transpose_a",
              False), transpose_b=attrs.get("transpose_b", False), card=card, pes=pes)
    return [y.reshape(lead + y.shape[-2:]).astype(a.dtype)]


_op("bmm", _bmm_infer, _bmm_host, _bmm_card,
    lambda t, o, a: int(np.prod(o[0][0], dtype=np.int64)) * (t[0][0][-2] if a.get("transpose_a") else t[0][0][-1]))


# --- convolution ----------------------------------------------------------------------------------------------
def _pair(v):
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else tuple(int(e) for e in v)


def _pads4(p):
    if isinstance(p, (int, np.integer)):
        return (int(p),) * 4
    p = tuple(int(e) for e in p)
    return (p[0], p[0], p[1], p[1]) if len(p) == 2 else p


def _conv_infer(types, attrs):
    (x, xd), (w, wd) = types[:2]
    sh, sw = _pair(attrs.get("stride", 1))
    dh, dw = _pair(attrs.get("dilation", 1))
    pt, pb, pl, pr = _pads4(attrs.get("padding", 0))
    g = attrs.get("groups", 1)
    if len(x) != 4 or len(w) != 4 or x[1] != w[1] * g or w[0] % g:
        raise ValueError(f"conv2d: x {x} and w {w} with groups={g}")
    oh = (x[2] + pt + pb - dh * (w[2] - 1) - 1) // sh + 1
    ow = (x[3] + pl + pr - dw * (w[3] - 1) - 1) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError("conv2d: the kernel is larger than the padded input")
    if xd == "int8":
        dt = "int8" if attrs.get("out_scale") is not None else "float32"
    else:
        dt = np.result_type(np.dtype(xd), np.dtype(wd)).name
    return [((x[0], w[0], oh, ow), dt)]


def _conv_host(xs, attrs):
    from vnpu.kernels.convolution import reference_conv2d
    x, w = xs[0], xs[1]
    b = xs[2] if len(xs) > 2 else None
    res = xs[3] if len(xs) > 3 else None
    kw = dict(stride=_pair(attrs.get("stride", 1)), padding=_pads4(attrs.get("padding", 0)),
              dilation=_pair(attrs.get("dilation", 1)), groups=attrs.get("groups", 1), residual=res,
              activation=attrs.get("activation"), clip=attrs.get("clip"))
    if res is not None and res.dtype == np.int8:
        kw.update(residual_scale=attrs["residual_scale"], residual_zero_point=attrs.get("residual_zero_point", 0))
    if x.dtype == np.int8:
        kw.update(x_scale=attrs["x_scale"], w_scale=attrs["w_scale"], out_scale=attrs.get("out_scale"),
                  out_zero_point=attrs.get("out_zero_point", 0))
        return [reference_conv2d(x, w, b, **kw)]
    dt = np.result_type(x, w)
    y = reference_conv2d(x.astype(np.float64), w.astype(np.float64), None if b is None else _f64(b), **kw)
    return [_to(dt, y)]


def _conv_card(card, xs, attrs, pes):
    from vnpu.kernels import convolution as CV
    x, w = xs[0], xs[1]
    b = xs[2] if len(xs) > 2 else None
    res = xs[3] if len(xs) > 3 else None
    if x.dtype.name not in FLOATS + ("int8",) or (x.dtype == np.int8) != (w.dtype == np.int8):
        raise NotLowered(f"conv2d on the card takes float32/float16 or int8 x and w, got {x.dtype} and {w.dtype}")
    if x.size == 0 or w.size == 0:
        raise NotLowered("conv2d of an empty operand")
    kw = dict(residual=None if res is None else (res if res.dtype == np.int8 else np.asarray(res, np.float32)),
              activation=attrs.get("activation"), clip=attrs.get("clip"), pes=pes, memory=attrs.get("memory", "dram"))
    if res is not None and res.dtype == np.int8:
        kw.update(residual_scale=attrs["residual_scale"], residual_zero_point=attrs.get("residual_zero_point", 0))
    if x.dtype == np.int8:
        kw.update(x_scale=attrs["x_scale"], w_scale=attrs["w_scale"], out_scale=attrs.get("out_scale"),
                  out_zero_point=attrs.get("out_zero_point", 0))
    else:
        kw["out_dtype"] = "fp16" if x.dtype == w.dtype == np.float16 else "fp32"
    try:
        y, _ = CV.conv2d(card, x, w, None if b is None else np.asarray(b, np.float32), _pair(attrs.get("stride", 1)),
                         _pads4(attrs.get("padding", 0)), _pair(attrs.get("dilation", 1)), attrs.get("groups", 1), **kw)
    except InvalidArgument as e:
        if "does not fit the card" in str(e):
            raise NotLowered(str(e)) from None
        raise
    return [y]


def _conv_macs(types, outs, attrs):
    w = types[1][0]
    return int(np.prod(outs[0][0], dtype=np.int64)) * w[1] * w[2] * w[3]


_op("conv2d", _conv_infer, _conv_host, _conv_card, _conv_macs)


def _convt_infer(types, attrs):
    (x, xd), (w, wd) = types[:2]
    sh, sw = _pair(attrs.get("stride", 1))
    ph, pw = _pair(attrs.get("padding", 0))
    oph, opw = _pair(attrs.get("output_padding", 0))
    dh, dw = _pair(attrs.get("dilation", 1))
    g = attrs.get("groups", 1)
    if len(x) != 4 or len(w) != 4 or x[1] != w[0]:
        raise ValueError(f"conv_transpose2d: x {x} and w {w}")
    oh = (x[2] - 1) * sh - 2 * ph + dh * (w[2] - 1) + oph + 1
    ow = (x[3] - 1) * sw - 2 * pw + dw * (w[3] - 1) + opw + 1
    return [((x[0], w[1] * g, oh, ow), xd)]


def _convt_host(xs, attrs):
    from vnpu.kernels.conv_transpose import reference_conv_transpose2d
    x, w = xs[0], xs[1]
    b = xs[2] if len(xs) > 2 else None
    y = reference_conv_transpose2d(_f64(x), _f64(w), None if b is None else _f64(b), attrs.get("stride", 1),
                                   attrs.get("padding", 0), attrs.get("output_padding", 0), attrs.get("groups", 1),
                                   attrs.get("dilation", 1))
    return [_to(x.dtype, y)]


def _convt_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    x, w = xs[0], xs[1]
    b = xs[2] if len(xs) > 2 else None
    if x.dtype != w.dtype or x.dtype.name not in FLOATS or x.size == 0:
        raise NotLowered(f"conv_transpose2d on the card takes float x and w of one dtype, got {x.dtype}, {w.dtype}")
    return [O.conv_transpose2d(x, w, None if b is None else np.asarray(b, np.float32), attrs.get("stride", 1),
                               attrs.get("padding", 0), attrs.get("output_padding", 0), attrs.get("groups", 1),
                               attrs.get("dilation", 1), card=card, pes=pes).astype(x.dtype)]


_op("conv_transpose2d", _convt_infer, _convt_host, _convt_card,
    lambda t, o, a: int(np.prod(t[0][0], dtype=np.int64)) * t[1][0][1] * t[1][0][2] * t[1][0][3])


# --- pooling and normalization ---------------------------------------------------------------------------------
def _pool_out(n, k, s, p, d, ceil):
    span = d * (k - 1) + 1
    out = (n + 2 * p - span + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    return out


def _pool_infer(types, attrs):
    x, xd = types[0]
    kh, kw = _pair(attrs["kernel_size"])
    sh, sw = _pair(attrs.get("stride") or attrs["kernel_size"])
    ph, pw = _pair(attrs.get("padding", 0))
    dh, dw = _pair(attrs.get("dilation", 1))
    c = attrs.get("ceil_mode", False)
    if ph > kh // 2 or pw > kw // 2:              # PyTorch's rule (the kernels' too)
        raise ValueError(f"padding {(ph, pw)} is more than half the kernel {(kh, kw)}")
    return [(tuple(x[:-2]) + (_pool_out(x[-2], kh, sh, ph, dh, c), _pool_out(x[-1], kw, sw, pw, dw, c)), xd)]


def _pool_host(kind):
    def host(xs, attrs):
        from vnpu.kernels import pool as P
        x = xs[0]
        kw = dict(kernel_size=attrs["kernel_size"], stride=attrs.get("stride"), padding=attrs.get("padding", 0),
                  ceil_mode=attrs.get("ceil_mode", False))
        if kind == "max":
            y = P.reference_max_pool2d(x, dilation=attrs.get("dilation", 1), **kw)
        else:
            y = P.reference_avg_pool2d(x, count_include_pad=attrs.get("count_include_pad", True),
                                       divisor_override=attrs.get("divisor_override"), **kw)
        return [np.asarray(y[0] if isinstance(y, tuple) else y).astype(x.dtype)]
    return host


def _pool_card(kind):
    def run(card, xs, attrs, pes):
        from vnpu.kernels import ops as O
        x = xs[0]
        _float_in(x, f"{kind}_pool2d")
        if kind == "max":
            return [O.max_pool2d(x, attrs["kernel_size"], attrs.get("stride"), attrs.get("padding", 0),
                                 attrs.get("dilation", 1), attrs.get("ceil_mode", False), card=card, pes=pes)]
        return [O.avg_pool2d(x, attrs["kernel_size"], attrs.get("stride"), attrs.get("padding", 0),
                             attrs.get("ceil_mode", False), attrs.get("count_include_pad", True),
                             attrs.get("divisor_override"), card=card, pes=pes)]
    return run


_op("max_pool2d", _pool_infer, _pool_host("max"), _pool_card("max"))
_op("avg_pool2d", _pool_infer, _pool_host("avg"), _pool_card("avg"))


def _adaptive_infer(types, attrs):
    x, xd = types[0]
    oh, ow = _pair(attrs["output_size"])
    return [(tuple(x[:-2]) + (oh, ow), xd)]


def _adaptive_host(xs, attrs):
    x = _f64(xs[0])
    oh, ow = _pair(attrs["output_size"])
    H, W = x.shape[-2:]
    y = np.empty(x.shape[:-2] + (oh, ow))
    for i in range(oh):
        h0, h1 = (i * H) // oh, -(-((i + 1) * H) // oh)
        for j in range(ow):
            w0, w1 = (j * W) // ow, -(-((j + 1) * W) // ow)
            y[..., i, j] = x[..., h0:h1, w0:w1].mean(axis=(-2, -1))
    return [_to(xs[0].dtype, y)]


def _adaptive_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    _float_in(xs[0], "adaptive_avg_pool2d")
    return [O.adaptive_avg_pool2d(xs[0], attrs["output_size"], card=card, pes=pes)]


_op("adaptive_avg_pool2d", _adaptive_infer, _adaptive_host, _adaptive_card)


def _bn_host(xs, attrs):
    x, mean, var = _f64(xs[0]), _f64(xs[1]), _f64(xs[2])
    w = _f64(xs[3]) if len(xs) > 3 and xs[3] is not None else 1.0
    b = _f64(xs[4]) if len(xs) > 4 and xs[4] is not None else 0.0
    shape = (1, -1) + (1,) * (x.ndim - 2)
    r = lambda v: np.reshape(v, shape) if np.ndim(v) else v  # noqa: E731
    y = (x - r(mean)) / np.sqrt(r(var) + attrs.get("eps", 1e-5)) * r(w) + r(b)
    return [_to(xs[0].dtype, y)]


def _bn_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    _float_in(xs[0], "batch_norm")
    ps = [None if p is None else np.asarray(p, np.float32) for p in (list(xs[1:]) + [None, None])[:4]]
    return [O.batch_norm(xs[0], ps[0], ps[1], ps[2], ps[3], eps=attrs.get("eps", 1e-5), card=card, pes=pes)]


_op("batch_norm", _same, _bn_host, _bn_card)


def _ln_host(xs, attrs):
    x = _f64(xs[0])
    n = len(attrs.get("normalized_shape", (x.shape[-1],)))
    axes = tuple(range(x.ndim - n, x.ndim))
    m = x.mean(axis=axes, keepdims=True)
    v = ((x - m) ** 2).mean(axis=axes, keepdims=True)
    y = (x - m) / np.sqrt(v + attrs.get("eps", 1e-5))
    if len(xs) > 1 and xs[1] is not None:
        y = y * _f64(xs[1])
    if len(xs) > 2 and xs[2] is not None:
        y = y + _f64(xs[2])
    return [_to(xs[0].dtype, y)]


def _ln_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    x = xs[0]
    _float_in(x, "layer_norm")
    n = len(attrs.get("normalized_shape", (x.shape[-1],)))
    D = int(np.prod(x.shape[x.ndim - n:], dtype=np.int64))
    g = None if len(xs) < 2 or xs[1] is None else np.asarray(xs[1], x.dtype).reshape(D)
    b = None if len(xs) < 3 or xs[2] is None else np.asarray(xs[2], x.dtype).reshape(D)
    y = O.layer_norm(np.ascontiguousarray(x.reshape(-1, D)), g, b, attrs.get("eps", 1e-5), card=card, pes=pes)
    return [y.reshape(x.shape).astype(x.dtype)]


_op("layer_norm", _same, _ln_host, _ln_card)


def _lrn_host(xs, attrs):
    x = _f64(xs[0])
    size, alpha, beta, k = attrs["size"], attrs.get("alpha", 1e-4), attrs.get("beta", 0.75), attrs.get("k", 1.0)
    sq = x ** 2
    C = x.shape[1]
    acc = np.zeros_like(x)
    for c in range(C):
        lo, hi = max(0, c - size // 2), min(C, c + (size - 1) // 2 + 1)
        acc[:, c] = sq[:, lo:hi].sum(axis=1)
    return [_to(xs[0].dtype, x / (k + alpha / size * acc) ** beta)]


def _lrn_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    if xs[0].dtype != np.float32:
        raise NotLowered(f"local_response_norm on the card takes float32, got {xs[0].dtype}")
    return [O.local_response_norm(xs[0], attrs["size"], attrs.get("alpha", 1e-4), attrs.get("beta", 0.75),
                                  attrs.get("k", 1.0), card=card, pes=pes)]


_op("local_response_norm", _same, _lrn_host, _lrn_card)


def _softmax_host(xs, attrs):
    x = _f64(xs[0])
    if len(xs) > 1 and xs[1] is not None:
        x = x + _f64(xs[1])
    d = attrs.get("dim", -1)
    with np.errstate(all="ignore"):
        e = np.exp(x - np.max(x, axis=d, keepdims=True))
        y = e / e.sum(axis=d, keepdims=True)
    if attrs.get("safe"):                     # PyTorch's _safe_softmax: a row of all -inf gives zeros, not NaN
        y = np.where(np.isneginf(x).all(axis=d, keepdims=True), 0.0, y)
    return [_to(xs[0].dtype, y)]


def _softmax_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    x = xs[0]
    _float_in(x, "softmax")
    d = attrs.get("dim", -1) % x.ndim
    mask = xs[1] if len(xs) > 1 else None
    if d != x.ndim - 1:
        x = np.ascontiguousarray(np.moveaxis(x, d, -1))
        if mask is not None:
            mask = np.ascontiguousarray(np.moveaxis(np.broadcast_to(mask, xs[0].shape), d, -1))
    if attrs.get("safe"):
        raise NotLowered("softmax with zeros for fully masked rows (PyTorch's _safe_softmax): the card's gives NaN")
    y = O.masked_softmax(x, None if mask is None else np.asarray(mask, x.dtype), card=card, pes=pes)
    return [np.moveaxis(y, -1, d) if d != xs[0].ndim - 1 else y]


_op("softmax", _same, _softmax_host, _softmax_card)


def _sdpa_infer(types, attrs):
    q, qd = types[0]
    v = types[2][0]
    return [(tuple(q[:-1]) + (v[-1],), qd)]


def _sdpa_host(xs, attrs):
    q, k, v = _f64(xs[0]), _f64(xs[1]), _f64(xs[2])
    s = attrs.get("scale")
    s = 1 / math.sqrt(q.shape[-1]) if s is None else s
    a = q @ np.swapaxes(k, -1, -2) * s
    if len(xs) > 3 and xs[3] is not None:
        m = xs[3]
        a = np.where(m, a, -np.inf) if m.dtype == bool else a + _f64(m)
    if attrs.get("is_causal"):
        L, S = a.shape[-2:]
        a = np.where(np.tril(np.ones((L, S), bool)), a, -np.inf)
    with np.errstate(all="ignore"):
        dead = np.isneginf(a).all(-1, keepdims=True)     # a fully masked row: zeros, as PyTorch's SDPA gives
        a = np.exp(a - a.max(-1, keepdims=True))
        a = np.where(dead, 0.0, a / a.sum(-1, keepdims=True))
    return [_to(xs[0].dtype, a @ v)]


def _sdpa_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    q, k, v = xs[:3]
    for t in (q, k, v):
        _float_in(t, "scaled_dot_product_attention")
    m = xs[3] if len(xs) > 3 else None
    return [O.scaled_dot_product_attention(q, k, v, m, is_causal=attrs.get("is_causal", False),
                                           scale=attrs.get("scale"), card=card, pes=pes)]


_op("scaled_dot_product_attention", _sdpa_infer, _sdpa_host, _sdpa_card,
    lambda t, o, a: 2 * int(np.prod(t[0][0], dtype=np.int64)) * t[1][0][-2])


# --- data movement --------------------------------------------------------------------------------------------
def _reshape_host(xs, attrs):
    return [np.reshape(xs[0], tuple(attrs["shape"]))]


_op("reshape", lambda t, a: _by_host(t, a, "reshape"), _reshape_host,
    lambda card, xs, attrs, pes: [np.reshape(xs[0], tuple(attrs["shape"]))], cheap=True)


def _permute_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    x = xs[0]
    if x.size == 0 or x.dtype.name not in FLOATS + ("int8", "int32"):
        raise NotLowered(f"permute on the card of {x.dtype}")
    return [O.permute(x, tuple(attrs["dims"]), card=card, pes=pes)]


_op("permute", lambda t, a: _by_host(t, a, "permute"),
    lambda xs, a: [np.asarray(np.transpose(xs[0], tuple(a["dims"])), order="C")], _permute_card, cheap=True)


def _cat_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    if len({x.dtype for x in xs}) != 1:
        raise NotLowered("cat of different dtypes")
    return [O.cat(list(xs), attrs.get("dim", 0), card=card, pes=pes)]


_op("cat", lambda t, a: _by_host(t, a, "cat"), lambda xs, a: [np.concatenate(xs, axis=a.get("dim", 0))],
    _cat_card, cheap=True)


def _split_host(xs, attrs):
    x, d = xs[0], attrs.get("dim", 0)
    sizes = attrs["sizes"]
    idx = np.cumsum(sizes)[:-1]
    return [np.ascontiguousarray(p) for p in np.split(x, idx, axis=d)]


def _split_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    return list(O.split(xs[0], list(attrs["sizes"]), attrs.get("dim", 0), card=card, pes=pes))


_op("split", lambda t, a: _by_host(t, a, "split"), _split_host, _split_card, cheap=True)


def _slice_host(xs, attrs):
    x = xs[0]
    d = attrs.get("dim", 0) % x.ndim
    sl = [slice(None)] * x.ndim
    sl[d] = slice(attrs.get("start"), attrs.get("end"), attrs.get("step", 1))
    return [np.ascontiguousarray(x[tuple(sl)])]


def _slice_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    if attrs.get("step", 1) != 1:
        raise NotLowered("slice with a step other than 1")
    return [O.slice_(xs[0], attrs.get("dim", 0), attrs.get("start"), attrs.get("end"), card=card, pes=pes)]


_op("slice", lambda t, a: _by_host(t, a, "slice"), _slice_host, _slice_card, cheap=True)


def _pad_host(xs, attrs):
    x, p = xs[0], list(attrs["pad"])
    width = [(0, 0)] * x.ndim
    for i in range(len(p) // 2):
        width[x.ndim - 1 - i] = (p[2 * i], p[2 * i + 1])
    if any(a < 0 or b < 0 for a, b in width):
        raise ValueError("negative padding")
    return [np.pad(x, width, constant_values=attrs.get("value", 0) or 0)]


def _pad_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    return [O.pad(xs[0], tuple(attrs["pad"]), value=attrs.get("value"), card=card, pes=pes)]


_op("pad", lambda t, a: _by_host(t, a, "pad"), _pad_host, _pad_card, cheap=True)


def _expand_host(xs, attrs):
    return [np.asarray(np.broadcast_to(xs[0], tuple(attrs["shape"])), order="C")]


_op("expand", lambda t, a: _by_host(t, a, "expand"), _expand_host, None, cheap=True)


def _gather_host(xs, attrs):
    x, idx = xs[0], xs[1].astype(np.int64)
    d = attrs.get("dim", 0) % x.ndim
    # torch.gather: the index may be smaller than x in the other dimensions (numpy's take_along_axis wants equal)
    x = x[tuple(slice(None) if k == d else slice(0, s) for k, s in enumerate(idx.shape))]
    return [np.take_along_axis(x, idx, axis=d)]


def _gather_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    return [O.gather(xs[0], attrs.get("dim", 0), xs[1], card=card, pes=pes)]


_op("gather", lambda t, a: [(t[1][0], t[0][1])], _gather_host, _gather_card)


def _index_select_host(xs, attrs):
    return [np.take(xs[0], xs[1].astype(np.int64), axis=attrs.get("dim", 0))]


def _index_select_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    return [O.index_select(xs[0], attrs.get("dim", 0), xs[1].reshape(-1), card=card, pes=pes)
            .reshape(_index_select_host([np.zeros(xs[0].shape, xs[0].dtype), xs[1]], attrs)[0].shape)]


_op("index_select", lambda t, a: _by_host(t, a, "index_select"), _index_select_host, _index_select_card)


def _embedding_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    w, idx = xs
    return [O.embedding(idx, w, card=card, pes=pes)]


_op("embedding", lambda t, a: [(tuple(t[1][0]) + (t[0][0][1],), t[0][1])],
    lambda xs, a: [np.take(xs[0], xs[1].astype(np.int64), axis=0)], _embedding_card)


def _packed_format(attrs):
    """The table's format: "fp32" for a float table [rows, dim], else a packed uint8 table [rows, row_bytes]
    in one of the embedding unit's formats (fbgemm's prepack layouts, emulator/tables.py)."""
    from vnpu.emulator.tables import FORMATS
    fmt = attrs.get("format", "fp32")
    if fmt not in FORMATS:
        raise InvalidArgument(f"embedding_bag: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


def _embedding_bag_infer(t, a):
    from vnpu.emulator.tables import table_dim, table_row_bytes
    fmt = _packed_format(a)
    (rows_shape, tdt), (off_shape, _) = t[0], t[2]
    out = a.get("out_dtype", "float32")
    if out not in FLOATS:
        raise InvalidArgument(f"embedding_bag: out_dtype must be float32 or float16, got {out!r}")
    if fmt == "fp32" and tdt != "uint8":
        return [((off_shape[0], rows_shape[1]), out)]
    if tdt != "uint8" or len(rows_shape) != 2:
        raise InvalidArgument(f"embedding_bag format={fmt!r} takes a packed uint8 table [rows, row_bytes], got "
                              f"{tdt}{list(rows_shape)}")
    try:
        dim = table_dim(fmt, rows_shape[1])
        if a.get("dim") is not None:      # int4 rows of an odd dimension carry a pad nibble: dim says which
            if isinstance(a["dim"], bool) or not isinstance(a["dim"], (int, np.integer)):
                raise ValueError(f"dim must be an int, got {a['dim']!r}")
            want = int(a["dim"])
            if want < 1 or table_row_bytes(fmt, want) != rows_shape[1]:
                raise ValueError(f"dim {want} in format {fmt} needs {table_row_bytes(fmt, max(want, 0))}-byte rows, "
                                 f"the table has {rows_shape[1]}")
            dim = want
    except (ValueError, TypeError) as e:
        raise InvalidArgument(f"embedding_bag: {e}") from None
    return [((off_shape[0], dim), out)]


def _embedding_bag_host(xs, attrs):
    w, idx, offsets = xs[0], xs[1].astype(np.int64), xs[2].astype(np.int64)
    out = np.dtype(attrs.get("out_dtype", "float32"))
    if w.dtype == np.uint8:      # a packed table: the embedding unit's own definition (rows dequantized in fp32)
        from vnpu.kernels.reference import embedding_bag
        return [embedding_bag(w, idx, offsets, mode=attrs.get("mode", "sum"), format=_packed_format(attrs),
                              dim=attrs.get("dim")).astype(out)]
    ends = list(offsets[1:]) + [len(idx)]
    pooled = np.zeros((len(offsets), w.shape[1]), np.float64)
    for i, (a, b) in enumerate(zip(offsets, ends)):
        rows = _f64(w[idx[a:b]])
        if b > a:
            pooled[i] = rows.sum(0) if attrs.get("mode", "sum") == "sum" else (
                rows.mean(0) if attrs.get("mode") == "mean" else rows.max(0))
    return [pooled.astype(np.float32).astype(out)]


def _embedding_bag_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    w, idx, offsets = xs
    if w.dtype not in (np.float32, np.uint8) or attrs.get("mode", "sum") not in ("sum", "mean"):
        raise NotLowered("embedding_bag on the card: float32 or packed (uint8) tables, mode sum or mean")
    fmt = _packed_format(attrs)
    if w.dtype == np.float32:        # its bytes as the card stores an fp32 table: a pinned table is found resident
        w, fmt = w.reshape(w.shape[0], -1).view(np.uint8), "fp32"
    out = "fp16" if attrs.get("out_dtype") == "float16" else "fp32"      # the unit rounds its fp32 sums once
    # int32 or int64 indices and offsets as they came (the executor sends int32 when they fit: half the bytes)
    idx, offsets = (a if a.dtype in (np.int32, np.int64) else a.astype(np.int64) for a in (idx, offsets))
    return [O.embedding_bag(w, idx, offsets, mode=attrs.get("mode", "sum"),
                            format=fmt, dim=attrs.get("dim"), out_dtype=out, card=card)]


_op("embedding_bag", _embedding_bag_infer, _embedding_bag_host, _embedding_bag_card, resident=(0,))


def _to_host(xs, attrs):
    x, dt = xs[0], np.dtype(attrs["dtype"])
    if dt.kind in "iu" and x.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            return [np.trunc(np.nan_to_num(x)).astype(dt)]
    return [x.astype(dt)]


def _to_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    x, dt = xs[0], np.dtype(attrs["dtype"])
    if x.dtype == dt:
        return [x]
    if x.dtype.name not in ("float32", "float16", "int8", "int32") or dt.name not in ("float32", "float16", "int8",
                                                                                        "int32"):
        raise NotLowered(f"to({dt}) of {x.dtype} on the card")
    return [O.to(x, dt, card=card, pes=pes)]


_op("to", lambda t, a: [(t[0][0], np.dtype(a["dtype"]).name)], _to_host, _to_card, cheap=True)


# --- reductions -----------------------------------------------------------------------------------------------
def _dims(attrs, ndim):
    d = attrs.get("dim")
    if d is None or (isinstance(d, (tuple, list)) and len(d) == 0):
        return tuple(range(ndim))
    return tuple(sorted(e % ndim for e in (d if isinstance(d, (tuple, list)) else (d,))))


def _reduce_host(fn):
    def host(xs, attrs):
        x = xs[0]
        dims = _dims(attrs, x.ndim)
        kd = attrs.get("keepdim", False)
        if fn == "argmax":
            d = attrs.get("dim")
            y = np.argmax(x.reshape(-1) if d is None else x, axis=None if d is None else d % x.ndim)
            if kd and d is not None:
                y = np.expand_dims(y, d % x.ndim)
            return [np.asarray(y, np.int64)]
        if fn == "sum" and x.dtype.kind in "biu":      # PyTorch sums bools and integers as int64 (ONNX keeps
            # the type: its front end casts back)
            return [np.sum(x, axis=dims, keepdims=kd, dtype=np.int64)]
        with np.errstate(all="ignore"):
            y = getattr(np, {"sum": "sum", "mean": "mean", "amax": "max"}[fn])(_f64(x), axis=dims, keepdims=kd)
        return [_to(x.dtype, y)]
    return host


def _reduce_card(fn):
    def run(card, xs, attrs, pes):
        from vnpu.kernels import ops as O
        _float_in(xs[0], fn)
        d = attrs.get("dim")
        if fn == "argmax":
            return [O.argmax(xs[0], d, attrs.get("keepdim", False), card=card, pes=pes).astype(np.int64)]
        return [getattr(O, fn)(xs[0], () if d is None and fn == "amax" else d, attrs.get("keepdim", False),
                               card=card, pes=pes)]
    return run


for _n in ("sum", "mean", "amax", "argmax"):
    _op(_n, (lambda n: lambda t, a: _by_host(t, a, n))(_n), _reduce_host(_n), _reduce_card(_n))


# --- quantization and DLRM ------------------------------------------------------------------------------------
def _quantize_host(xs, attrs):
    from vnpu.kernels.reference import torch_inverse_scale, vcvt_to_int
    return [vcvt_to_int(np.asarray(xs[0], np.float32), torch_inverse_scale(attrs["scale"]), attrs.get("zero_point", 0))]


def _quantize_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    if xs[0].dtype != np.float32:
        raise NotLowered(f"quantize takes float32, got {xs[0].dtype}")
    return [O.quantize(xs[0], attrs["scale"], attrs.get("zero_point", 0), card=card, pes=pes)]


_op("quantize", lambda t, a: [(t[0][0], "int8")], _quantize_host, _quantize_card)


def _dequantize_host(xs, attrs):
    return [((xs[0].astype(np.float64) - attrs.get("zero_point", 0)) * np.float32(attrs["scale"])).astype(np.float32)]


def _dequantize_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    return [O.dequantize(xs[0], attrs["scale"], attrs.get("zero_point", 0), card=card, pes=pes)]


_op("dequantize", lambda t, a: [(t[0][0], "float32")], _dequantize_host, _dequantize_card)


def _interaction_host(xs, attrs):
    dense, emb = _f64(xs[0]), _f64(xs[1])
    z = np.concatenate([dense[:, None, :], emb], axis=1)
    zz = z @ np.swapaxes(z, 1, 2)
    f = z.shape[1]
    li, lj = np.tril_indices(f, -1)
    return [_to(xs[0].dtype, np.concatenate([dense, zz[:, li, lj]], axis=1))]


def _interaction_card(card, xs, attrs, pes):
    from vnpu.kernels import ops as O
    return [O.dot_interaction(xs[0], xs[1], card=card, pes=pes)]


_op("dot_interaction", lambda t, a: [((t[0][0][0], t[0][0][1] + (t[1][0][1] + 1) * t[1][0][1] // 2), t[0][1])],
    _interaction_host, _interaction_card)


# --- an op of the user's framework that vnpu has no op for ------------------------------------------------------
def _foreign_host(xs, attrs):
    fn = attrs.get("fn")
    if fn is None:
        raise NotLowered(f"{attrs.get('framework', '?')} op {attrs.get('op', '?')} has no host implementation either")
    return list(fn(*xs))


# A front end turns an op it cannot map into `foreign` with attrs: framework ("onnx", "torch"), op (its name
# there), types ([(shape, dtype)] of its outputs, from the framework's own shape inference), needs (what vnpu
# would need to run it) and, when the framework can run it on the host, fn (numpy arrays in, arrays out).
_op("foreign", lambda t, a: [tuple(x) for x in a["types"]], _foreign_host, None)
