"""vnpu.testing.assert_kernel with kernels written in the kernel language (@vnpu.kernel): the interpreter run,
both engines, outputs by parameter name, failure messages, argument errors."""
import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import vnpu
import vnpu.testing as vt
from vnpu.errors import InvalidArgument
from vnpu.kernels.lang.frontend import Kernel
from vnpu.testing import OnChip, Out, assert_kernel

T = 256


@vnpu.kernel
def scale(x, y, alpha):
    lo, hi = vnpu.split(x.shape[0])
    for i in range(lo, hi, T, pipeline=True):
        end = vnpu.minimum(i + T, hi)
        vnpu.store(y[i:end], vnpu.load(x[i:end]) * alpha)


@vnpu.kernel
def overlapping(x, y, alpha):
    """Right numbers on the card, but each PE's last tile runs into the next PE's share."""
    lo, hi = vnpu.split(x.shape[0])
    for i in range(lo, hi, T):
        vnpu.store(y[i:i + T], vnpu.load(x[i:i + T]) * alpha)


@vnpu.kernel
def uninitialized(x, out):
    acc = vnpu.empty((x.shape[1],), np.float32)
    for r in range(x.shape[0]):
        acc += vnpu.load(x[r, :])
    vnpu.store(out, acc)


@vnpu.kernel
def two_outputs(x, zz, aa):
    """Writes two arguments; the name order (zz before aa) is not the alphabetical one."""
    if vnpu.pe_id() == 0:
        t = vnpu.load(x)
        vnpu.store(zz, t * 2.0)
        vnpu.store(aa, t + 1.0)


@vnpu.kernel
def returns_new(a, b):
    out = vnpu.output(a.shape, np.float32)
    lo, hi = vnpu.split(a.shape[0])
    for i in range(lo, hi, T):
        end = vnpu.minimum(i + T, hi)
        vnpu.store(out[i:end], vnpu.load(a[i:end]) + vnpu.load(b[i:end]))
    return out


@vnpu.kernel
def writes_nothing(x, y):
    vnpu.load(x)


def ref(x, alpha):
    return x * np.float32(alpha)


def case(n=3000, alpha=0.5):
    x = np.random.default_rng(2).standard_normal(n).astype(np.float32)
    return {"x": x, "alpha": alpha}, {"y": Out((n,), np.float32)}


def test_interpreter_and_both_engines_run_and_pass():
    inputs, outputs = case()
    runs = assert_kernel(scale, inputs, ref, outputs=outputs)
    assert list(runs) == ["interpret", "numba", "reference"]
    assert runs["numba"].cycles > 0 and runs["reference"].cycles == 0 and runs["interpret"].cycles == 0
    assert runs["interpret"].launch is None and runs["interpret"].profile is None
    assert runs["numba"].profile.cycles == runs["numba"].cycles and runs["numba"].launch.engine == "numba"
    assert runs["reference"].launch.engine == "reference"
    want = inputs["x"] * np.float32(0.5)
    for r in runs.values():
        np.testing.assert_array_equal(r["y"], want)
    assert runs["numba"].summary()["cycles"] == runs["numba"].cycles
    with pytest.raises(InvalidArgument, match="no launch on a card"):
        runs["interpret"].summary()
    # inputs are copied for every run: the caller's arrays are untouched
    assert inputs["x"][0] == np.random.default_rng(2).standard_normal(1).astype(np.float32)[0]


def test_inputs_as_a_list_with_out_in_place_and_an_array_output(tmp_path):
    inputs, _ = case(1000)
    runs = assert_kernel(scale, [inputs["x"], Out(1000, np.float32), 0.5], lambda x, alpha: x * np.float32(alpha),
                         engines="numba", interpret=False)
    assert list(runs) == ["numba"]
    # an array given for the output is passed to the reference too (a plain argument) and written in a copy
    y = np.full(1000, 7, np.float32)
    assert_kernel(scale, {"x": inputs["x"], "y": y, "alpha": 0.5}, lambda x, y, alpha: x * np.float32(alpha),
                  engines=())
    assert (y == 7).all()


def test_mismatch_names_element_engines_cycles_and_trace(tmp_path):
    inputs, outputs = case()
    cycles = assert_kernel(scale, inputs, ref, outputs=outputs, engines="numba", interpret=False)["numba"].cycles

    def wrong(x, alpha):
        y = x * np.float32(alpha)
        y[[10, 2990]] += 1
        return y
    with pytest.raises(AssertionError) as e:
        assert_kernel(scale, inputs, wrong, outputs=outputs, trace_dir=tmp_path)
    msg = str(e.value)
    got = str(inputs["x"][10] * np.float32(0.5))
    assert "Kernel 'scale' on the numba engine: output 'y' is not close to the reference!" in msg
    assert "Mismatched elements: 2 / 3000" in msg
    assert f"First mismatch at index (10,): got {got}, expected " in msg
    assert f"  the interpreter gives {got} there" in msg and f"  the reference engine gives {got} there" in msg
    assert f"Cycles: {cycles} on the numba engine (PEs 0-3 of the tiny card); the interpreter and the " \
           f"reference engine are untimed" in msg
    path = pathlib.Path(re.search(r"Trace: (\S+) \(open in https://ui.perfetto.dev\)", msg).group(1))
    assert path.parent == tmp_path and path.name.startswith("test_mismatch_names_element_engines_cycles_and_trace")
    assert any(ev.get("ph") == "X" for ev in json.loads(path.read_text())["traceEvents"])


def test_mismatch_in_the_interpreter_alone():
    inputs, outputs = case(300)
    with pytest.raises(AssertionError) as e:
        assert_kernel(scale, inputs, lambda x, alpha: x, outputs=outputs, engines=())
    msg = str(e.value)
    assert "Kernel 'scale' in the interpreter: output 'y'" in msg
    assert "Cycles: none; the interpreter is untimed" in msg and "Trace: none" in msg


def test_interpreter_checks_fail_the_assertion_with_the_source_line():
    """The card gives the right numbers (and its sanitizer sees no race); the interpreter sees two PEs write
    the same elements."""
    inputs, outputs = case()
    assert_kernel(overlapping, inputs, ref, outputs=outputs, interpret=False)
    with pytest.raises(vnpu.KernelError, match=r"test_testing_lang\.py:\d+: PE \d writes element \d+ of y") as e:
        assert_kernel(overlapping, inputs, ref, outputs=outputs)
    assert any("kernel 'overlapping' in the interpreter" in n for n in e.value.__notes__)
    x = np.ones((8, 64), np.float32)
    with pytest.raises(vnpu.KernelError, match="no operation wrote"):
        assert_kernel(uninitialized, {"x": x}, lambda x: x.sum(0), outputs={"out": Out(64, np.float32)})


def test_outputs_in_parameter_order_and_by_name():
    x = np.arange(64, dtype=np.float32)
    outputs = {"zz": Out(64, np.float32), "aa": Out(64, np.float32)}
    runs = assert_kernel(two_outputs, {"x": x}, lambda x: (x * 2, x + 1), outputs=outputs)
    np.testing.assert_array_equal(runs["numba"]["zz"], x * 2)
    np.testing.assert_array_equal(runs["interpret"]["aa"], x + 1)
    assert_kernel(two_outputs, {"x": x}, {"aa": x + 1, "zz": x * 2}, outputs=outputs)
    # a declared output the kernel does not give back is an error, not silently unchecked
    with pytest.raises(InvalidArgument, match="output\\(s\\) y of kernel 'writes_nothing'|nothing to check"):
        assert_kernel(writes_nothing, {"x": x}, lambda x: x, outputs={"y": Out(64, np.float32)})


def test_a_returned_output_tensor():
    a, b = np.arange(1000, dtype=np.float32), np.full(1000, 0.5, np.float32)
    runs = assert_kernel(returns_new, {"a": a, "b": b}, lambda a, b: a + b)
    assert set(runs["numba"].outputs) == {"out0"}
    with pytest.raises(InvalidArgument, match="the reference's 'out0' has shape \\(999,\\)"):
        assert_kernel(returns_new, {"a": a, "b": b}, lambda a, b: (a + b)[:999])


def test_the_interpreter_is_compared_within_tolerance_not_bit_for_bit(monkeypatch):
    real = Kernel.interpret

    def one_ulp_off(self, *args, **kw):
        out = real(self, *args, **kw)
        out.view(np.uint32)[5] ^= 1
        return out
    monkeypatch.setattr(Kernel, "interpret", one_ulp_off)
    inputs, outputs = case()
    runs = assert_kernel(scale, inputs, ref, outputs=outputs)       # within the default fp32 tolerance
    assert (runs["interpret"]["y"] != runs["numba"]["y"]).sum() == 1
    with pytest.raises(AssertionError, match="Kernel 'scale' in the interpreter: output 'y'"):
        assert_kernel(scale, inputs, ref, outputs=outputs, rtol=0, atol=0)


def test_card_engines_that_disagree_fail(monkeypatch, tmp_path):
    real = Kernel.__call__

    def flip_reference(self, *args, engine="numba", **kw):
        out, profile = real(self, *args, engine=engine, **kw)
        if engine == "reference":
            args[1].view(np.uint32)[7] ^= 1                   # y, updated in place
        return out, profile
    monkeypatch.setattr(Kernel, "__call__", flip_reference)
    inputs, outputs = case()
    with pytest.raises(AssertionError, match="the numba and reference engines disagree on output 'y'") as e:
        assert_kernel(scale, inputs, ref, outputs=outputs, trace_dir=tmp_path)
    assert "First difference at index (7,)" in str(e.value) and "Trace: " + str(tmp_path) in str(e.value)
    assert_kernel(scale, inputs, ref, outputs=outputs, check_engines_agree=False)


def test_card_config_pes_and_the_card_fixture(vnpu_card):
    inputs, outputs = case(1000, alpha=-2.0)
    runs = assert_kernel(scale, inputs, ref, outputs=outputs, pes=[0], config="reference")
    assert list(runs["numba"].launch.pes) == [0]
    runs = assert_kernel(scale, inputs, ref, outputs=outputs, card=vnpu_card, engines="numba", pes=2)
    assert list(runs["numba"].launch.pes) == [0, 1]


@pytest.mark.parametrize("kwargs, match", [
    ({"inputs": {"x": np.zeros(8, np.float32)}, "outputs": {"y": Out(8, np.float32)}},
     "missing argument\\(s\\) alpha: the kernel is scale\\(x, y, alpha\\)"),
    ({"inputs": {"x": np.zeros(8, np.float32), "alpha": 1.0, "z": 1}, "outputs": {"y": Out(8, np.float32)}},
     "unknown argument\\(s\\) z"),
    ({"inputs": {"x": np.zeros(8, np.float32), "alpha": 1.0, "y": np.zeros(8, np.float32)},
      "outputs": {"y": Out(8, np.float32)}}, "'y' is both an input and an output"),
    ({"inputs": [np.zeros(8, np.float32), 1.0], "outputs": None}, "takes 3 arguments; got 2 inputs and 0 outputs"),
    ({"inputs": {"x": OnChip(np.zeros(8, np.float32)), "alpha": 1.0}, "outputs": {"y": Out(8, np.float32)}},
     "vnpu.shared"),
    ({"inputs": {"x": np.zeros(8, np.float32), "alpha": 1.0}, "outputs": {"y": Out(8, np.float32)},
      "name": "other"}, "language kernel"),
    ({"inputs": {"x": np.zeros(8, np.float32), "alpha": 1.0}, "outputs": {"y": Out(8, np.float32)},
      "engines": (), "interpret": False}, "engines must be"),
    ({"inputs": {"x": np.zeros(8, np.float32), "alpha": 1.0}, "outputs": {"y": Out(9, np.float32)}},
     "the reference's 'y' has shape \\(8,\\), the kernel's output 'y' is \\(9,\\)"),
])
def test_bad_arguments_are_named(kwargs, match):
    kwargs = dict(kwargs)
    with pytest.raises(InvalidArgument, match=match):
        assert_kernel(scale, kwargs.pop("inputs"), lambda x, alpha: x, **kwargs)


def test_an_image_has_no_interpreter():
    image = vnpu.assemble(".kernel k\n halt\n")
    with pytest.raises(InvalidArgument, match="interpret=True is for kernels written in the kernel language"):
        assert_kernel(image, {}, [], interpret=True)


def test_a_kernel_error_names_the_compilation():
    @vnpu.kernel
    def too_big(x, y):
        vnpu.store(y, vnpu.load(x))
    x = np.zeros(100_000, np.float32)
    with pytest.raises(vnpu.KernelError, match="larger than the PE's local memory") as e:
        assert_kernel(too_big, {"x": x}, lambda x: x, outputs={"y": Out(x.shape, np.float32)}, interpret=False)
    assert any("compiling kernel 'too_big' for the tiny card" in n for n in e.value.__notes__)


def test_a_failing_language_kernel_test_under_pytest(tmp_path):
    (tmp_path / "test_lang_bad.py").write_text(
        "import numpy as np, vnpu\nfrom vnpu.testing import Out, assert_kernel\n\n"
        "@vnpu.kernel\ndef add(a, b, out):\n"
        "    vnpu.store(out, vnpu.load(a) + vnpu.load(b))\n\n"
        "def test_bad():\n"
        "    a = np.ones(64, np.float32)\n"
        "    assert_kernel(add, {'a': a, 'b': a}, lambda a, b: a + b + (np.arange(64) == 5),\n"
        "                  outputs={'out': Out(64, np.float32)}, pes=1)\n")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        f"--vnpu-trace-dir={tmp_path / 'traces'}", "test_lang_bad.py"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stdout[-4000:] + r.stderr[-2000:]
    assert "First mismatch at index (5,): got 2.0, expected 3.0" in r.stdout
    assert "the interpreter gives 2.0 there" in r.stdout
    traces = list((tmp_path / "traces").glob("test_bad-add*.json"))
    assert len(traces) == 1 and str(traces[0]) in r.stdout


def test_the_module_does_not_import_the_language_until_needed():
    code = "import sys, vnpu.testing; print('vnpu.kernels.lang.frontend' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/").stdout
    assert out.strip() == "False"
    assert vt.INTERPRET == "interpret"
