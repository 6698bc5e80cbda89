"""Build libvnpu.so, the C API, with cffi's embedding mode: no hand-written CPython glue.

cffi turns the declarations of vnpu.h into C functions that start an embedded Python on the first call
and forward to the functions impl.py registers. We emit cffi's C and run the system C compiler ourselves
(flags from sysconfig) instead of cffi's compile(), which needs setuptools.

The library is tied to the Python that built it: it links that Python's libpython, starts the embedded
interpreter with that Python's executable as its program name (so it has that environment's prefix and
site-packages, a venv's included) and adds that environment's sys.path (so an editable install works from
C). Rebuild it after changing environments.
"""
from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from vnpu.errors import ConfigError

HEADER = Path(__file__).with_name("vnpu.h")
BEGIN, END = "/* VNPU_API_BEGIN", "/* VNPU_API_END */"


def declarations() -> str:
    """The part of vnpu.h that cffi reads (types, constants, prototypes), without the comment lines."""
    text = HEADER.read_text()
    body = text[text.index(BEGIN):text.index(END)]
    return "\n".join(line for line in body.splitlines()[1:])


# Runs when the library is loaded, before any call starts Python. cffi starts the interpreter with
# Py_InitializeEx and imports _cffi_backend before our init code runs, so the init code cannot be what puts
# a venv's site-packages on sys.path: without this, a library built in a venv imports _cffi_backend, numpy,
# numba from the base Python's site-packages (shadowing the venv's), or fails to start if the base has none.
# Not when Python already runs (a Python process that loads the library keeps its interpreter).
PROGRAM_NAME_C = r"""
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
__attribute__((constructor)) static void vnpu_python_program_name(void) {
    static wchar_t *name;
    if (!Py_IsInitialized() && (name = Py_DecodeLocale("%s", NULL)) != NULL)
        Py_SetProgramName(name);
}
#pragma GCC diagnostic pop
"""


def _source() -> str:
    """The C source cffi compiles with its generated code: the header, and the interpreter's program name."""
    if not sys.executable:
        return '#include "vnpu.h"'
    exe = "".join(f"\\{b:03o}" for b in os.fsencode(sys.executable))     # any byte, as an octal escape
    return '#include "vnpu.h"\n' + PROGRAM_NAME_C % exe


def _init_code() -> str:
    user_site = [site.getusersitepackages()] if site.ENABLE_USER_SITE else []    # a venv has none
    site_dirs = [d for d in site.getsitepackages() + user_site if os.path.isdir(d)]
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    return f"""
import site, sys
for _d in {site_dirs!r}:
    site.addsitedir(_d)        # runs .pth files: venvs and editable installs
for _p in reversed({paths!r}):
    if _p not in sys.path:
        sys.path.insert(0, _p)
from _vnpu_capi import ffi
from vnpu.driver.capi.impl import install
install(ffi)
"""


def link_flags(out_dir: Path) -> str:
    """What a C program adds to its compile line to use the library in out_dir."""
    return f"-I{out_dir} -L{out_dir} -lvnpu -Wl,-rpath,{out_dir}"


def build(out_dir, cc: str | None = None, verbose: bool = False) -> tuple[Path, Path]:
    """Write out_dir/libvnpu.so and out_dir/vnpu.h; returns their paths."""
    import cffi
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise ConfigError(f"this Python ({sys.executable}) was built without a shared libpython; cffi's "
                          f"embedding mode needs one (e.g. pyenv with PYTHON_CONFIGURE_OPTS=--enable-shared)")
    cc = cc or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise ConfigError("no C compiler found (set CC, or install gcc or clang)")
    ffi = cffi.FFI()
    ffi.embedding_api(declarations())
    ffi.set_source("_vnpu_capi", _source())
    ffi.embedding_init_code(_init_code())
    shutil.copyfile(HEADER, out_dir / "vnpu.h")
    lib = out_dir / "libvnpu.so"
    ver = sysconfig.get_config_var("LDVERSION") or sysconfig.get_config_var("VERSION")
    libdir = sysconfig.get_config_var("LIBDIR")
    with tempfile.TemporaryDirectory() as tmp:
        c_file = Path(tmp) / "_vnpu_capi.c"
        with contextlib.redirect_stdout(io.StringIO()):    # cffi prints "generating ..."
            ffi.emit_c_code(str(c_file))
        cmd = [*shlex.split(cc), "-shared", "-fPIC", "-O2", f"-I{sysconfig.get_paths()['include']}",
               f"-I{out_dir}", str(c_file), "-o", str(lib), f"-L{libdir}", f"-lpython{ver}",
               f"-Wl,-rpath,{libdir}"]
        if verbose:
            print(" ".join(shlex.quote(c) for c in cmd))
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise ConfigError(f"compiling the C API failed ({cc}, exit {done.returncode}):\n{done.stderr.strip()}")
    return lib, out_dir / "vnpu.h"
