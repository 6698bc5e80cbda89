"""What the C API tests need: a C compiler, and a Python built with a shared libpython to embed."""
import shutil
import sysconfig

import pytest

CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
needs_toolchain = pytest.mark.skipif(
    CC is None or not sysconfig.get_config_var("Py_ENABLE_SHARED"),
    reason="building the C API needs a C compiler and a Python built with a shared libpython")
