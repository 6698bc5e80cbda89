"""The C API: libvnpu.so built with cffi's embedding mode, used by a C program compiled with the system C
compiler (examples/c/vnpu_smoke.c), and every function of vnpu.h called with made-up handles."""
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from capi_toolchain import CC, needs_toolchain

from vnpu.driver.capi import HEADER, build, link_flags
from vnpu.driver.capi.build import declarations
from vnpu.driver.capi.impl import STATUS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def libdir(tmp_path_factory):
    out = tmp_path_factory.mktemp("capi")
    lib, header = build(out)
    assert lib.exists() and header.read_text() == HEADER.read_text()
    return out


def _prototypes():
    return re.findall(r"^\s*(?:const char \*|vnpuStatus )(vnpu\w+)\(", declarations(), re.M)


def test_header_status_codes_are_the_ones_the_library_returns():
    enum = dict((n, int(v)) for n, v in re.findall(r"(VNPU_(?:SUCCESS|ERROR_\w+)) = (\d+)", HEADER.read_text()))
    assert enum == STATUS


def test_every_declared_function_is_implemented():
    impl = (HEADER.parent / "impl.py").read_text()
    names = _prototypes()
    assert len(names) >= 35
    missing = [n for n in names if not re.search(rf"def {n}\(", impl)]
    assert missing == []


@needs_toolchain
@pytest.mark.parametrize("platform", ["tiny", "default"])
def test_c_program_allocates_copies_runs_a_library_kernel_and_reports_errors(libdir, tmp_path, platform):
    exe = tmp_path / "vnpu_smoke"
    cmd = [CC, "-Wall", "-Wextra", "-Werror", str(ROOT / "examples/c/vnpu_smoke.c"), "-o", str(exe),
           *link_flags(libdir).split()]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    run = subprocess.run([str(exe)] + ([] if platform == "default" else [platform]), capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "result checked against the host: 10000 elements equal" in out
    assert re.search(r"add of 10000 floats: [1-9]\d* card cycles", out)
    for status in ("INVALID_HANDLE", "INVALID_ARGUMENT", "OUT_OF_MEMORY", "INVALID_MODULE", "ASSEMBLER",
                   "ILLEGAL_ADDRESS", "RACE", "DEVICE_LOST"):
        assert f"expected VNPU_ERROR_{status}" in out
    assert "card 1 still computes while card 0 is faulted" in out
    assert "card 0 computes again after its reset" in out
    assert "vnpu_smoke: OK" in out


@needs_toolchain
def test_every_function_with_made_up_handles_and_null_pointers_returns_a_status(libdir):
    """Calls every function of vnpu.h through cffi's ABI mode (in a child process, so a crash would show as
    a failure, not kill pytest) with handles that were never issued, handles of the wrong kind and NULL
    out-pointers: every call returns a documented error status, none crashes or reports an internal error."""
    script = textwrap.dedent(f"""
        import cffi, re, random
        decls = {declarations()!r}
        ffi = cffi.FFI(); ffi.cdef(decls)
        lib = ffi.dlopen({str(libdir / "libvnpu.so")!r})
        STATUS = {STATUS!r}
        p = ffi.new("vnpuPlatform *"); assert lib.vnpuPlatformOpenCards(b"tiny", 1, p) == 0
        d = ffi.new("vnpuDevice *"); assert lib.vnpuDeviceGet(p[0], 0, d) == 0
        q = ffi.new("vnpuQueue *"); assert lib.vnpuQueueCreate(d[0], q) == 0
        rng = random.Random(7)
        real = [int(ffi.cast("uintptr_t", x)) for x in (p[0], d[0], q[0])]   # of the right kind for some only
        bad = [0, 1, 12345, 2**64 - 1, 2**63, 0x3000000000001] + [rng.getrandbits(64) for _ in range(8)] + real
        calls = 0
        for name in re.findall(r"vnpuStatus (vnpu\\w+)\\(", decls):
            fn = getattr(lib, name)
            ftype = ffi.typeof(fn)
            for h in bad:
                args = []
                for t in ftype.args:
                    if t.kind == "pointer" and t.cname.endswith("_st *"):     # a handle: opaque pointer type
                        args.append(ffi.cast(t, h))
                    elif t.kind == "pointer":
                        args.append(ffi.NULL)
                    elif t.kind == "primitive" and t.cname in ("double", "float"):
                        args.append(1.0)
                    else:
                        args.append(h if t.cname == "uint64_t" else 1)
                if name == "vnpuInit":
                    args = [h % 2]
                st = fn(*args)
                calls += 1
                msg = ffi.string(lib.vnpuGetLastErrorMessage()).decode()
                if name in ("vnpuInit",):
                    assert st == (0 if h % 2 == 0 else STATUS["VNPU_ERROR_INVALID_ARGUMENT"]), (name, h, st, msg)
                    continue
                if name in ("vnpuGetVersion",):
                    assert st == STATUS["VNPU_ERROR_INVALID_ARGUMENT"], (name, st, msg)
                    continue
                assert st in STATUS.values() and st != STATUS["VNPU_ERROR_INTERNAL"], (name, h, st, msg)
                assert st != 0 or h in real, (name, h, msg)
        # the library still works after all that (the first platform was closed by one of the calls)
        assert lib.vnpuPlatformOpenCards(b"tiny", 1, p) == 0 and lib.vnpuDeviceGet(p[0], 0, d) == 0
        b = ffi.new("vnpuBuffer *"); assert lib.vnpuMemAlloc(d[0], 4096, b) == 0
        print("calls", calls)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert int(run.stdout.split()[-1]) >= 35 * 16


def test_build_into_a_folder_that_cannot_exist_is_a_config_error(tmp_path):
    """An output path under a file raised NotADirectoryError (an internal error in `vnpu capi build`)."""
    from vnpu.errors import ConfigError
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot write the C API"):
        build(tmp_path / "file" / "capi")
