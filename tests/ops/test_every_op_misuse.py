"""Every public vnpu.ops function, given a wrong value in each required position (None, numbers, strings, lists,
0-d / empty / float64 / int64 / 5-D arrays, NaN arrays, arbitrary objects), raises a vnpu.VnpuError and never a
raw Python error: the class of defect behind TypeErrors and ValueErrors escaping from new ops."""
import inspect

import numpy as np
import pytest

import vnpu
from vnpu.emulator.card import Card

CARD = Card("tiny")
BAD = [None, 3, "x", [1, 2], np.zeros(()), np.zeros((0,), np.float32), np.ones((2, 3), np.float64),
       np.ones((2, 3), np.int64), np.ones((2, 3, 4, 5), np.float32), np.full((2, 3), np.nan, np.float32),
       np.ones((1, 1, 1, 1, 1), np.float32), object()]
OPS = sorted(n for n, f in vars(vnpu.ops).items() if inspect.isfunction(f) and not n.startswith("_")
             and f.__module__ == "vnpu.ops" and "card" in inspect.signature(f).parameters
             and n not in ("use", "default_card", "profile", "last_profile"))


def test_the_sweep_sees_the_ops():
    assert {"conv2d", "max_pool2d", "permute", "scaled_dot_product_attention", "local_response_norm",
            "layer_norm", "matmul"} <= set(OPS)


@pytest.mark.parametrize("name", OPS)
def test_bad_arguments_raise_vnpu_errors(name):
    f = getattr(vnpu.ops, name)
    params = [p for p in inspect.signature(f).parameters.values()
              if p.default is inspect.Parameter.empty and p.kind == p.POSITIONAL_OR_KEYWORD]
    n = max(1, len(params))
    for bad in BAD:
        for pos in range(n):
            args = [np.ones((2, 3, 4, 5), np.float32)] * n
            args[pos] = bad
            try:
                f(*args, card=CARD)
            except vnpu.VnpuError:
                pass
