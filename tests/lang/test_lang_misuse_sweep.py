"""Every function of the kernel language, called inside a kernel with wrong values or a wrong number of
arguments (None, numbers, strings, lists, tensors, blocks, tiles, shapes, booleans in every position), fails
with a vnpu.VnpuError (KernelError at the kernel's line) when compiled and when interpreted, never with a
raw Python error."""
import importlib.util
import itertools
import random
import sys

import numpy as np
import pytest

import vnpu

FUNCS = ["load", "store", "empty", "output", "transfer", "repeat", "move", "matmul", "add", "sub", "mul", "maximum",
         "minimum", "relu", "sigmoid", "tanh", "exp", "gelu", "recip", "rsqrt", "copy", "sum", "max", "embedding_bag",
         "split", "range", "static_range", "pe_id", "pe_count", "barrier"]
BAD = ["None", "3", "2.5", "'x'", "[1, 2]", "x", "x[0:4]", "t", "t2", "(4, 4)", "-1", "True"]


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    """A module of kernels, each calling one function with one combination of wrong arguments (random sample)."""
    rng = random.Random(0)
    cases = [(f, combo) for f in FUNCS for n in (0, 1, 2, 3) for combo in itertools.product(BAD, repeat=n)]
    cases = rng.sample(cases, 1200)
    src = ["import numpy as np", "import vnpu", ""]
    for i, (f, combo) in enumerate(cases):
        src += ["@vnpu.kernel", f"def k{i}(x, y):", "    t = vnpu.load(x[0:4])", "    t2 = vnpu.empty((2, 4), 'f32')",
                f"    vnpu.{f}({', '.join(combo)})", ""]
    path = tmp_path_factory.mktemp("sweep") / "lang_sweep_kernels.py"
    path.write_text("\n".join(src))
    spec = importlib.util.spec_from_file_location("lang_sweep_kernels", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["lang_sweep_kernels"] = mod
    spec.loader.exec_module(mod)
    return [(getattr(mod, f"k{i}"), f, combo) for i, (f, combo) in enumerate(cases)]


@pytest.mark.parametrize("mode", ["compile", "interpret"])
def test_wrong_arguments_are_typed_errors(kernels, mode):
    x, y = np.arange(16, dtype=np.float32), np.zeros(16, np.float32)
    untyped = []
    for k, f, combo in kernels:
        try:
            k.compile(x, y) if mode == "compile" else k.interpret(x, y, pes=1)
        except vnpu.VnpuError:
            pass
        except Exception as e:       # noqa: BLE001 (collected and reported)
            untyped.append(f"vnpu.{f}({', '.join(combo)}): {type(e).__name__}: {e}")
    assert not untyped, "\n".join(untyped[:10])
