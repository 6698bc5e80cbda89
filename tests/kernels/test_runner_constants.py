"""runner.mark_constant / derived: host work derived from a compiled model's constant weights (the flat conv's
weight layout, a strided conv's phase weights) is done once; an array nobody marked is never cached, so a user
who changes weights between calls gets the new weights' result."""
import gc

import numpy as np

from vnpu.kernels import ops as O, runner
from vnpu.kernels.convolution import reference_conv2d


def test_derived_is_made_once_for_a_constant_and_every_time_otherwise():
    calls = []

    def make():
        calls.append(1)
        return np.arange(4)
    a, b = np.ones(3), np.ones(3)
    runner.mark_constant(a)
    first = runner.derived(a, "k", make)
    assert runner.derived(a, "k", make) is first and len(calls) == 1
    assert not first.flags.writeable and runner.is_constant(first)
    runner.derived(a, "other key", make)
    assert len(calls) == 2
    runner.derived(b, "k", make)
    runner.derived(b, "k", make)
    assert len(calls) == 4 and not runner.is_constant(b)
    key = (id(a), "k")
    del a, first
    gc.collect()
    assert key not in runner._DERIVED                  # the cache goes with the array


def test_a_user_changing_weights_between_calls_gets_the_new_result():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 8, 10, 10)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    for stride in (1, 2):
        y1 = O.conv2d(x, w, stride=stride, padding=1)
        w2 = w.copy()
        w *= -2.0                                       # the same array, new values: not a marked constant
        y2 = O.conv2d(x, w, stride=stride, padding=1)
        np.testing.assert_allclose(y2, reference_conv2d(x, w, stride=stride, padding=1), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(y2, -2.0 * y1, rtol=1e-4, atol=1e-4)
        w[...] = w2
