"""vnpu.testing: assert_kernel's checks and failure messages, both engines, the race sanitizer, and the pytest
plugin (fixtures through the pytest11 entry point) running examples/test_my_kernel.py as a user would."""
import importlib.metadata
import importlib.util
import json
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import vnpu
import vnpu.testing as vt
from vnpu.errors import InvalidArgument
from vnpu.testing import Out, assert_kernel

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "test_my_kernel.py"


def _example_module():
    spec = importlib.util.spec_from_file_location("vnpu_example_test_my_kernel", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ex = _example_module()
N = 3000


def scale_case(n=N, alpha=0.5):
    x = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    return {"x": x, "n": n, "alpha": alpha}, {"y": Out((n,), np.float32)}


def test_both_engines_run_and_agree_bit_for_bit():
    inputs, outputs = scale_case()
    runs = assert_kernel(ex.build_scale(), inputs, ex.reference_scale, outputs=outputs)
    assert list(runs) == ["numba", "reference"]
    assert runs["numba"].cycles > 0 and runs["reference"].cycles == 0
    assert runs["numba"].launch.engine == "numba" and runs["reference"].launch.engine == "reference"
    np.testing.assert_array_equal(runs["numba"]["y"].view(np.uint32), runs["reference"]["y"].view(np.uint32))
    np.testing.assert_array_equal(runs["numba"]["y"], inputs["x"] * np.float32(0.5))


def test_mismatch_names_first_element_count_engine_cycles_and_trace(tmp_path):
    inputs, outputs = scale_case()
    cycles = assert_kernel(ex.build_scale(), inputs, ex.reference_scale, outputs=outputs,
                           engines=("numba",))["numba"].cycles

    def wrong(x, n, alpha):
        y = x * np.float32(alpha)
        y[[1000, 2000]] += 1
        return y
    with pytest.raises(AssertionError) as e:
        assert_kernel(ex.build_scale(), inputs, wrong, outputs=outputs, trace_dir=tmp_path)
    msg = str(e.value)
    y = inputs["x"][1000] * np.float32(0.5)
    got, want = str(y), str(y + np.float32(1))              # numpy's shortest repr of a float32
    assert "Kernel 'scale' on the numba engine: output 'y' is not close to the reference" in msg
    assert "Mismatched elements: 2 / 3000" in msg
    assert f"First mismatch at index (1000,): got {got}, expected {want} (abs error " in msg
    assert f"the reference engine gives {got} there" in msg
    assert "Greatest absolute difference" in msg and "Greatest relative difference" in msg
    assert f"Cycles: {cycles} on the numba engine (PEs 0-3 of the tiny card); the reference engine is untimed" in msg
    path = re.search(r"Trace: (\S+) \(open in https://ui.perfetto.dev\)", msg).group(1)
    assert pathlib.Path(path).parent == tmp_path
    trace = json.loads(pathlib.Path(path).read_text())
    assert any(ev.get("ph") == "X" for ev in trace["traceEvents"])


def test_mismatch_on_the_reference_engine_alone_has_no_cycles_or_trace():
    inputs, outputs = scale_case(300)
    with pytest.raises(AssertionError) as e:
        assert_kernel(ex.build_scale(), inputs, lambda x, n, alpha: x, outputs=outputs, engines="reference")
    msg = str(e.value)
    assert "on the reference engine" in msg and "First mismatch at index (0,)" in msg
    assert "the reference engine is untimed" in msg and "Trace: none" in msg


def test_racy_kernel_raises_race_error_with_the_engine_noted():
    inputs, outputs = scale_case()
    with pytest.raises(vnpu.RaceError) as e:
        assert_kernel(ex.build_scale(wait_for_load=False), inputs, ex.reference_scale, outputs=outputs)
    assert "add a wait" in str(e.value)
    assert any("kernel 'scale' on the numba engine" in n for n in e.value.__notes__)
    # without the sanitizer the same launch runs (and here happens to give the right numbers)
    assert_kernel(ex.build_scale(wait_for_load=False), inputs, ex.reference_scale, outputs=outputs,
                  sanitize=False, engines=("numba",))


def test_engines_that_disagree_fail_with_both_bit_patterns(monkeypatch, tmp_path):
    real = vt._run

    def flip_reference(card, image, sym, args, out_names, engine, pes, sanitize):
        r = real(card, image, sym, args, out_names, engine, pes, sanitize)
        if engine == "reference":
            r.outputs["y"].view(np.uint32)[7] ^= 1          # one ulp: still within the default tolerance
        return r
    monkeypatch.setattr(vt, "_run", flip_reference)
    inputs, outputs = scale_case()
    with pytest.raises(AssertionError) as e:
        assert_kernel(ex.build_scale(), inputs, ex.reference_scale, outputs=outputs, trace_dir=tmp_path)
    msg = str(e.value)
    assert "the numba and reference engines disagree on output 'y'" in msg
    assert "Differing elements: 1 / 3000" in msg
    good = (inputs["x"][7:8] * np.float32(0.5)).view(np.uint32)[0]
    assert f"First difference at index (7,): numba " in msg and f"(0x{good:08x})" in msg
    assert f"(0x{good ^ 1:08x})" in msg and "emulator bug" in msg
    assert "Trace: " + str(tmp_path) in msg
    # turned off, the same run passes (each engine is within tolerance of the reference)
    assert_kernel(ex.build_scale(), inputs, ex.reference_scale, outputs=outputs, check_engines_agree=False)


def test_tolerances_default_by_dtype_and_explicit():
    inputs, outputs = scale_case(1000, alpha=0.1)
    f64 = lambda x, n, alpha: x.astype(np.float64) * 0.1        # noqa: E731
    assert_kernel(ex.build_scale(), inputs, f64, outputs=outputs, engines="numba")   # fp32 defaults
    with pytest.raises(AssertionError, match="allowed atol=0 \\+ rtol=0"):
        assert_kernel(ex.build_scale(), inputs, f64, outputs=outputs, engines="numba", rtol=0, atol=0)
    assert vt.default_tolerances(np.float32) == (1.3e-6, 1e-5)
    assert vt.default_tolerances(np.int8) == (0.0, 0.0)
    with pytest.raises(InvalidArgument, match="both rtol and atol"):
        assert_kernel(ex.build_scale(), inputs, f64, outputs=outputs, rtol=1e-3)


def test_kernel_forms_image_module_text_and_positional_inputs():
    src = (ROOT / "examples" / "vector_add.s").read_text()
    a, b = np.arange(700, dtype=np.float32), np.full(700, 0.25, np.float32)
    ref = lambda a, b, n: a + b                                    # noqa: E731
    image = vnpu.assemble(src)
    for kernel in (image, vnpu.load_module(image), src):
        assert_kernel(kernel, {"a": a, "b": b, "n": 700}, ref, outputs={"out": (700, np.float32)}, name="vadd")
    # a list in signature order, the output an Out in its place; the reference is called positionally
    runs = assert_kernel(image, [a, b, Out(700, np.float32), 700], ref, engines="numba")
    assert runs["numba"]["out"][3] == 3.25
    # the reference may also be the expected arrays, or a dict by output name
    assert_kernel(image, {"a": a, "b": b, "n": 700}, {"out": a + b}, outputs={"out": Out(700, np.float32)})


@pytest.mark.parametrize("inputs, outputs, match", [
    ({"x": np.zeros(8), "n": 8, "alpha": 1.0}, {"y": (8, np.float32)}, "'x' is buffer f32 .* the array is float64"),
    ({"x": np.zeros(8, np.float32), "alpha": 1.0}, {"y": (8, np.float32)}, "missing argument\\(s\\) n: the kernel"),
    ({"x": np.zeros(8, np.float32), "n": 8, "alpha": 1.0, "z": 1}, {"y": (8, np.float32)}, "unknown argument"),
    ({"x": np.zeros(8, np.float32), "n": 8, "alpha": 1.0}, {"y": (8, np.int32)}, "'y' is buffer f32"),
    ({"x": np.zeros(8, np.float32), "n": np.zeros(2), "alpha": 1.0}, {"y": (8, np.float32)}, "'n' is scalar"),
    ({"x": np.zeros(8, np.float32), "n": 8, "alpha": 1.0, "y": np.zeros(8, np.float32)}, None, "no outputs"),
    ({"x": np.zeros(8, np.float32), "n": 8, "alpha": 1.0}, {"y": (9, np.float32)}, "shape \\(8,\\), the kernel's"),
])
def test_bad_arguments_are_named(inputs, outputs, match):
    with pytest.raises(InvalidArgument, match=match):
        assert_kernel(ex.build_scale(), inputs, lambda x, n, alpha: x, outputs=outputs)


def test_module_with_several_kernels_needs_a_name():
    image = vnpu.assemble(".kernel k1\n halt\n.kernel k2\n halt\n")
    with pytest.raises(InvalidArgument, match="kernels k1, k2; say which with name="):
        assert_kernel(image, {}, [], outputs={})
    with pytest.raises(InvalidArgument, match="engines must be"):
        assert_kernel(image, {}, [], engines=("numba", "gpu"))


def test_plugin_is_registered_through_the_pytest11_entry_point(pytestconfig):
    # every installed distribution (a stale vnpu.egg-info in the checkout may shadow the installed metadata
    # for importlib.metadata.entry_points; pytest itself reads them all)
    eps = [ep for d in importlib.metadata.distributions() for ep in d.entry_points if ep.group == "pytest11"]
    assert any(ep.name == "vnpu" and ep.value == "vnpu.testing.plugin" for ep in eps), \
        "the vnpu pytest plugin is not installed: reinstall the project (pip install -e .)"
    assert pytestconfig.pluginmanager.get_plugin("vnpu") is sys.modules["vnpu.testing.plugin"]


FIXTURE_TESTS = '''
import pytest
from vnpu.emulator.card import Card


def test_engine_fixture_params(vnpu_engine, request):
    assert vnpu_engine in ("numba", "reference") and vnpu_engine in request.node.name


def test_card_is_tiny_and_fresh(vnpu_card):
    assert isinstance(vnpu_card, Card) and vnpu_card.config.name == "tiny" and not vnpu_card.allocations


@pytest.mark.vnpu_card("reference", overrides={"matrix.rows": 16})
def test_card_marker(vnpu_card):
    assert vnpu_card.config.name == "reference" and vnpu_card.config.matrix.rows == 16


@pytest.mark.parametrize("vnpu_card", ["tiny", {"config": "reference", "overrides": {"pes": 2}}], indirect=True)
def test_card_indirect(vnpu_card):
    assert vnpu_card.config.pes in (4, 2)


@pytest.mark.vnpu_platform(cards=2)
def test_platform_marker(vnpu_platform):
    assert len(vnpu_platform.devices) == 2 and vnpu_platform.sanitize is True
'''


def test_example_file_and_fixtures_pass_under_pytest_as_a_user_runs_them(tmp_path):
    """examples/test_my_kernel.py copied into a fresh folder (no conftest, no project config): the fixtures
    come from the installed plugin alone."""
    shutil.copy(EXAMPLE, tmp_path / "test_my_kernel.py")
    (tmp_path / "test_fixtures.py").write_text(FIXTURE_TESTS)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--strict-markers",
                        f"--vnpu-trace-dir={tmp_path / 'traces'}", "test_my_kernel.py", "test_fixtures.py"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    passed = re.search(r"(\d+) passed", r.stdout)
    assert passed and int(passed.group(1)) >= 19, r.stdout
    assert not re.search(r"failed|error|skipped|xfail|warning", r.stdout), r.stdout


def test_failing_user_test_shows_the_message_and_the_trace_path_under_pytest(tmp_path):
    (tmp_path / "test_bad.py").write_text(
        "import numpy as np, vnpu\nfrom vnpu.testing import Out, assert_kernel\n"
        f"SRC = open({str(ROOT / 'examples' / 'vector_add.s')!r}).read()\n"
        "def test_bad():\n"
        "    a = np.ones(64, np.float32)\n"
        "    assert_kernel(SRC, {'a': a, 'b': a, 'n': 64}, lambda a, b, n: a + b + (np.arange(64) == 5),\n"
        "                  outputs={'out': Out(64, np.float32)})\n")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        f"--vnpu-trace-dir={tmp_path / 'traces'}", "test_bad.py"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode == 1, r.stdout[-4000:] + r.stderr[-2000:]
    assert "First mismatch at index (5,): got 2.0, expected 3.0" in r.stdout
    assert "assert_kernel(SRC" in r.stdout          # the traceback points at the user's line
    traces = list((tmp_path / "traces").glob("test_bad-vadd*.json"))
    assert len(traces) == 1 and str(traces[0]) in r.stdout
