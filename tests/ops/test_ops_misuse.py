"""Misuse of every vnpu.ops function: wrong types, ragged lists, NaN, negative and huge values, bad `pes`
and `card` arguments give a typed vnpu error (InvalidArgument), never a raw Python exception."""
import inspect

import numpy as np
import pytest

import vnpu

BAD = ["x", None, 1.5, np.zeros((2, 2), np.complex64), np.zeros((2, 2), object), [[1, 2], [3]], np.zeros((0,)),
       float("nan"), -1, 10**30, True]
BAD_KEYWORDS = ["x", -5, float("nan"), [1.5], object(), 10**30]
FUNCTIONS = sorted(n for n, f in vars(vnpu.ops).items()
                   if inspect.isfunction(f) and f.__module__ == "vnpu.ops" and not n.startswith("_")
                   and n not in ("use", "default_card", "profile", "last_profile", "profiles"))


def _required(f):
    return [p for p in inspect.signature(f).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_bad_arguments_give_typed_errors(name):
    f = getattr(vnpu.ops, name)
    params = _required(f)
    ok = np.ones((4, 8), np.float32)
    for p in params:
        for v in BAD:
            try:
                f(*[v if q is p else ok for q in params])
            except vnpu.VnpuError:
                pass
    optional = [k for k, p in inspect.signature(f).parameters.items() if p.default is not p.empty]
    for kw in optional:
        for v in BAD_KEYWORDS:
            try:
                f(*[ok for _ in params], **{kw: v})
            except vnpu.VnpuError:
                pass


def test_pes_may_be_a_count_or_pe_numbers_and_nothing_else():
    x = np.arange(64, dtype=np.float32)
    for pes in (1, 3, [0, 2], (1,), range(2)):
        np.testing.assert_array_equal(vnpu.ops.relu(x, pes=pes), np.maximum(x, 0))
    for pes in (0, -1, 10**6, [0, 0], ["x"], [0.5], True, [], "0"):
        with pytest.raises(vnpu.InvalidArgument, match="pes"):
            vnpu.ops.relu(x, pes=pes)
    with pytest.raises(vnpu.InvalidArgument, match="card"):
        vnpu.ops.relu(x, card="tiny")
