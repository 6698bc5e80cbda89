"""Every public op of vnpu.ops against outputs PyTorch produced, committed in vnpu/validation/data/ops_golden.npz
(written by benchmarks/gen_op_golden.py): the check a core install without PyTorch runs (docs/testing.md).

No torch import here, directly or through what this imports (test_this_module_does_not_import_torch checks it):
the other tests in tests/ops compare with PyTorch live, this one with its stored outputs. Each case is one call
`vnpu.ops.<op>(*args, **kwargs, card=tiny card)` and a tolerance rule, both chosen by the generator (the
tolerances are those of the live tests); the rules are described in the file's "rules" entry."""
import hashlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import vnpu.ops
from vnpu.emulator.card import Card
from vnpu.validation import DATA

GOLDEN = DATA / "ops_golden.npz"
GENERATOR = Path(__file__).resolve().parents[2] / "benchmarks" / "gen_op_golden.py"
REGENERATE = "python benchmarks/gen_op_golden.py (with torch installed) and commit the .npz with it"

# Functions of vnpu.ops that are not ops: they compute nothing PyTorch could be asked for
NOT_OPS = {
    "use": "chooses the card later ops run on",
    "default_card": "returns the card ops run on",
    "profile": "a context manager collecting profiles",
    "last_profile": "returns the last op's profile",
}

with np.load(GOLDEN, allow_pickle=False) as npz:
    ARRAYS = {key: npz[key] for key in npz.files}
META = json.loads(str(ARRAYS.pop("meta")))
CASES = META["cases"]


@pytest.fixture(scope="module")
def tiny_card():
    return Card("tiny")


def decode(v):
    """A case's argument from its JSON form (benchmarks/gen_op_golden.py, Golden.encode)."""
    if isinstance(v, list):
        return [decode(e) for e in v]
    if not isinstance(v, dict):
        return v
    if "array" in v:
        return ARRAYS[v["array"]].copy()
    if "arrays" in v:
        return [ARRAYS[key].copy() for key in v["arrays"]]
    if "tuple" in v:
        return tuple(decode(e) for e in v["tuple"])
    if "dtype" in v:
        return np.dtype(v["dtype"])
    raise ValueError(f"unknown argument encoding {v!r}")


def first_mismatch(bad, got, expected, allowed=None):
    """Where the output is off: how many elements, the first of them and its values."""
    where = tuple(int(i) for i in np.argwhere(bad)[0])
    text = (f"{int(bad.sum())} of {bad.size} elements differ; first at {where}: got {got[where].item()!r}, "
            f"PyTorch {expected[where].item()!r}")
    if allowed is not None:
        text += f" (|difference| {abs(float(got[where]) - float(expected[where])):.3g}, allowed {allowed[where]:.3g})"
    return text


def check_output(got, expected, out_dtype, rule):
    """The op's output against PyTorch's by the case's rule (the "rules" entry of the file says what each means);
    an AssertionError names the first element that is off."""
    got = np.asarray(got)
    assert got.dtype == np.dtype(out_dtype), f"dtype {got.dtype}, PyTorch's case gives {out_dtype}"
    assert got.shape == expected.shape, f"shape {got.shape}, PyTorch {expected.shape}"
    if got.size == 0:
        return
    if rule["kind"] == "bits":
        assert expected.dtype == got.dtype
        if got.tobytes() != expected.tobytes():
            bad = got.view(f"u{got.itemsize}") != expected.view(f"u{got.itemsize}") if got.itemsize in (1, 2, 4, 8) \
                else got != expected
            raise AssertionError("not bit for bit: " + first_mismatch(bad, got, expected))
        return
    floats = got.dtype.kind == "f"
    with np.errstate(invalid="ignore", over="ignore"):     # inf - inf and inf * 0 at places compared apart
        compare_values(got, expected, rule, floats)


def compare_values(got, expected, rule, floats):
    kind = rule["kind"]
    g64, e64 = got.astype(np.float64), expected.astype(np.float64)
    if floats or expected.dtype.kind == "f":
        nan_g, nan_e = np.isnan(g64), np.isnan(e64)
        if not np.array_equal(nan_g, nan_e):
            raise AssertionError("NaN in other places: " + first_mismatch(nan_g != nan_e, got, expected))
    else:
        nan_e = np.zeros(got.shape, bool)
    if kind == "exact":
        bad = ~nan_e & (g64 != e64)
        if bad.any():
            raise AssertionError("not equal: " + first_mismatch(bad, got, expected))
    elif kind == "close":
        for name, test in (("+inf", np.isposinf), ("-inf", np.isneginf)):
            off = test(g64) != test(e64)
            if off.any():
                raise AssertionError(f"{name} in other places: " + first_mismatch(off, got, expected))
        allowed = rule["atol"] + rule["rtol"] * np.abs(e64)
        if "atol_array" in rule:
            allowed = allowed + ARRAYS[rule["atol_array"]].astype(np.float64)
        finite = np.isfinite(e64)
        bad = finite & ~(np.abs(g64 - e64) <= allowed)
        if bad.any():
            raise AssertionError("not within tolerance: " + first_mismatch(bad, got, expected, allowed))
    else:
        raise ValueError(f"unknown rule {kind!r}")
    if rule.get("signed_zero") and floats:
        zeros = (g64 == 0) & (e64 == 0)
        bad = zeros & (np.signbit(g64) != np.signbit(e64))
        if bad.any():
            raise AssertionError("signs of zero differ: " + first_mismatch(bad, got, expected))


@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"]) for c in CASES])
def test_op_matches_pytorch(case, tiny_card):
    op = getattr(vnpu.ops, case["op"])
    args = [decode(a) for a in case["args"]]
    kwargs = {k: decode(v) for k, v in case["kwargs"].items()}
    got = op(*args, **kwargs, card=tiny_card)
    expected = decode(case["expected"])
    if isinstance(expected, list):               # split: a tuple of pieces
        assert len(got) == len(expected), f"{len(got)} pieces, PyTorch {len(expected)}"
        for i, (g, e, dt) in enumerate(zip(got, expected, case["out_dtype"])):
            try:
                check_output(g, e, dt, case["rule"])
            except AssertionError as err:
                raise AssertionError(f"piece {i}: {err}") from None
    else:
        check_output(got, expected, case["out_dtype"], case["rule"])


def test_every_op_has_golden_cases():
    """A new op without golden data fails here: add its cases to benchmarks/gen_op_golden.py and regenerate."""
    ops = {name for name, f in inspect.getmembers(vnpu.ops, inspect.isfunction)
           if f.__module__ == "vnpu.ops" and not name.startswith("_")}
    assert set(NOT_OPS) <= ops, f"NOT_OPS names functions vnpu.ops no longer has: {set(NOT_OPS) - ops}"
    covered = {c["op"] for c in CASES}
    missing = sorted(ops - set(NOT_OPS) - covered)
    assert not missing, f"ops without golden cases: {', '.join(missing)}; add them and run {REGENERATE}"
    stale = sorted(covered - ops)
    assert not stale, f"golden cases of functions vnpu.ops does not have: {', '.join(stale)}; run {REGENERATE}"


def test_golden_file_is_from_the_generator_in_the_tree():
    if not GENERATOR.exists():
        pytest.skip("benchmarks/ is not part of this install")
    # (line endings normalized, as the generator hashes itself, so a CRLF checkout compares equal)
    digest = hashlib.sha256(GENERATOR.read_bytes().replace(b"\r\n", b"\n")).hexdigest()
    assert META["generator_sha256"] == digest, \
        f"benchmarks/gen_op_golden.py changed after {GOLDEN.name} was written: run {REGENERATE}"


def test_this_module_does_not_import_torch():
    """The point of the golden data: this file runs where PyTorch is not installed."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import test_golden_ops; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)], check=True, timeout=300)
