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

# Every exported function of the library goes through vnpu_call_python (cffi's generated functions call
# `_cffi_call_python`, which this defines to be vnpu_call_python; the pointer cffi switches to its fast path
# after starting is still read through vnpu_cffi_call). The first call starts the embedded Python here, not
# inside cffi's path, so that
# - the host keeps its process-wide state: Python is pre-initialized without touching the locale
#   (configure_locale=0; UTF-8 mode, so its text and file names are UTF-8 whatever the locale), and every
#   signal disposition and the locale (all categories) saved before the start are put back after it
#   (importing Python's signal module installs a SIGINT handler when SIGINT is at its default, which would
#   turn the host's Ctrl-C into a KeyboardInterrupt inside the next vnpu call);
# - a start that fails makes every call return VNPU_ERROR_INTERNAL (cffi would return 0, VNPU_SUCCESS, for
#   work not done), with vnpuGetLastErrorMessage saying why.
START_C = r"""
#include <errno.h>
#include <locale.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#ifndef NSIG
#define NSIG 65
#endif

static _cffi_call_python_fnptr *const vnpu_cffi_call = &_cffi_call_python;
static pthread_mutex_t vnpu_start_lock = PTHREAD_MUTEX_INITIALIZER;
static int vnpu_started;                       /* 0: not yet, 1: running, -1: the start failed */
static struct sigaction vnpu_host_signals[NSIG];
static int vnpu_host_signal_saved[NSIG];

static void vnpu_save_host(char **locale) {
    const char *l = setlocale(LC_ALL, NULL);
    *locale = l ? strdup(l) : NULL;
    for (int s = 1; s < NSIG; s++)
        vnpu_host_signal_saved[s] = sigaction(s, NULL, &vnpu_host_signals[s]) == 0;
}

static void vnpu_restore_host(char *locale) {
    for (int s = 1; s < NSIG; s++) {
        struct sigaction now;
        if (!vnpu_host_signal_saved[s] || sigaction(s, NULL, &now) != 0)
            continue;
        if (now.sa_handler != vnpu_host_signals[s].sa_handler || now.sa_flags != vnpu_host_signals[s].sa_flags)
            sigaction(s, &vnpu_host_signals[s], NULL);
    }
    if (locale) {
        const char *l = setlocale(LC_ALL, NULL);
        if (!l || strcmp(l, locale) != 0)
            setlocale(LC_ALL, locale);
        free(locale);
    }
}

static void vnpu_preinitialize_python(void) {
#if PY_VERSION_HEX >= 0x03080000
    if (!Py_IsInitialized()) {
        PyPreConfig pre;
        PyPreConfig_InitPythonConfig(&pre);
        pre.parse_argv = 0;
        pre.configure_locale = 0;      /* leave LC_CTYPE as the host has it */
        pre.coerce_c_locale = 0;
        pre.utf8_mode = 1;
        Py_PreInitialize(&pre);        /* a failure shows when cffi initializes */
    }
#endif
}

static int vnpu_start(void) {
    int started = __atomic_load_n(&vnpu_started, __ATOMIC_ACQUIRE);
    if (started)
        return started;
    pthread_mutex_lock(&vnpu_start_lock);
    if (!vnpu_started) {
        char *locale = NULL;
        int saved_errno = errno;
        vnpu_save_host(&locale);
        vnpu_preinitialize_python();
        started = cffi_start_python() == 0 ? 1 : -1;
        vnpu_restore_host(locale);
        errno = saved_errno;
        __atomic_store_n(&vnpu_started, started, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&vnpu_start_lock);
    return vnpu_started;
}

static const char *vnpu_status_name(int status) {
    switch (status) {
%(names)s
    default: return "VNPU_ERROR_UNKNOWN";
    }
}

static int vnpu_named(const struct _cffi_externpy_s *externpy, const char *name) {
    size_t n = strlen(externpy->name), m = strlen(name);
    return n >= m && strcmp(externpy->name + n - m, name) == 0 && (n == m || externpy->name[n - m - 1] == '.');
}

static void vnpu_call_python(struct _cffi_externpy_s *externpy, char *args) {
    if (vnpu_start() > 0) {
        (*vnpu_cffi_call)(externpy, args);
        return;
    }
    /* the embedded Python did not start (cffi printed why on stderr): nothing can run */
    if (vnpu_named(externpy, "vnpuGetErrorName"))
        *(const char **)args = vnpu_status_name(*(vnpuStatus *)args);
    else if (vnpu_named(externpy, "vnpuGetLastErrorMessage"))
        *(const char **)args = "the embedded Python of libvnpu could not start (the reason is on stderr; is "
                               "the Python environment that built the library still there, with vnpu?)";
    else
        *(vnpuStatus *)args = VNPU_ERROR_INTERNAL;
}
#define _cffi_call_python vnpu_call_python
"""


def _source() -> str:
    """The C source cffi compiles with its generated code: the header, the interpreter's program name and the
    start of the embedded Python."""
    from .impl import STATUS
    names = "\n".join(f'    case {code}: return "{name}";' for name, code in STATUS.items())
    source = '#include "vnpu.h"\n' + START_C.replace("%(names)s", names)
    if not sys.executable:
        return source
    exe = "".join(f"\\{b:03o}" for b in os.fsencode(sys.executable))     # any byte, as an octal escape
    return source + PROGRAM_NAME_C % exe


def _init_code() -> str:
    user_site = [site.getusersitepackages()] if site.ENABLE_USER_SITE else []    # a venv has none
    site_dirs = [d for d in site.getsitepackages() + user_site if os.path.isdir(d)]
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    return f"""
import signal    # now: it installs a SIGINT handler, which the start undoes (imported later, it would stay)
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
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(out_dir, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as e:
        raise ConfigError(f"cannot write the C API into {out_dir}: {e.strerror or e}") from None
    if sys.maxsize < 2**63 - 1:
        raise ConfigError("the C API needs a 64-bit platform (its handles carry their kind in the top 16 bits "
                          "of a 64-bit pointer value)")
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
    try:
        shutil.copyfile(HEADER, out_dir / "vnpu.h")
    except OSError as e:
        raise ConfigError(f"cannot write {out_dir / 'vnpu.h'}: {e.strerror or e}") from None
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
