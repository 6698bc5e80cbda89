"""The C API's failure paths, handle lifetimes, threads and environments: each test is a regression test for
a bug the C side could see. The checks run in a child process (cffi's ABI mode on the built libvnpu.so, or
a C program), so a crash or a hang shows as a failure instead of taking pytest down."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from capi_toolchain import CC, needs_toolchain

import vnpu
from vnpu.driver.capi import build, link_flags
from vnpu.driver.capi.build import declarations
from vnpu.driver.capi.impl import API_VERSION

pytestmark = needs_toolchain

PRELUDE = """
import cffi, sys
ffi = cffi.FFI(); ffi.cdef({decls!r})
lib = ffi.dlopen({lib!r})
def msg(): return ffi.string(lib.vnpuGetLastErrorMessage()).decode()
def new(t, v=None): return ffi.new(t) if v is None else ffi.new(t, v)
def ok(status):
    assert status == 0, msg()
def platform(cards=1):
    p = new("vnpuPlatform *"); ok(lib.vnpuPlatformOpenCards(b"tiny", cards, p))
    devs = []
    for i in range(cards):
        d = new("vnpuDevice *"); ok(lib.vnpuDeviceGet(p[0], i, d)); devs.append(d[0])
    return p[0], devs
def queue(d):
    q = new("vnpuQueue *"); ok(lib.vnpuQueueCreate(d, q)); return q[0]
def alloc(d, n):
    b = new("vnpuBuffer *"); ok(lib.vnpuMemAlloc(d, n, b)); return b[0]
INVALID_ARGUMENT, INVALID_HANDLE, DEVICE_LOST, INTERNAL = 1, 2, 7, 99
"""


@pytest.fixture(scope="module")
def libdir(tmp_path_factory):
    out = tmp_path_factory.mktemp("capi-failures")
    build(out)
    return out


def run_abi(libdir, body, timeout=120):
    """Run `body` after PRELUDE in a child Python; returns its stdout."""
    script = PRELUDE.format(decls=declarations(), lib=str(libdir / "libvnpu.so")) + textwrap.dedent(body)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def test_out_pointers_are_written_only_on_success(libdir):
    """vnpuMemGetInfo and vnpuBufferGetInfo wrote their first out-pointer, then failed on a NULL second one."""
    run_abi(libdir, """
        p, (d,) = platform()
        b = alloc(d, 64)
        free, total = new("uint64_t *", 777), new("uint64_t *", 777)
        assert lib.vnpuMemGetInfo(d, free, ffi.NULL) == INVALID_ARGUMENT and free[0] == 777
        assert lib.vnpuMemGetInfo(d, ffi.NULL, total) == INVALID_ARGUMENT and total[0] == 777
        addr, n = new("uint64_t *", 777), new("uint64_t *", 777)
        assert lib.vnpuBufferGetInfo(b, addr, ffi.NULL) == INVALID_ARGUMENT and addr[0] == 777
        assert lib.vnpuBufferGetInfo(b, ffi.NULL, n) == INVALID_ARGUMENT and n[0] == 777
        ok(lib.vnpuBufferGetInfo(b, addr, n)); assert n[0] == 64
    """)


def test_sizes_no_host_buffer_can_have_are_invalid_argument_not_internal(libdir):
    """An nbytes above SSIZE_MAX (a negative length cast to size_t) was VNPU_ERROR_INTERNAL (OverflowError)."""
    run_abi(libdir, """
        p, (d,) = platform()
        q = queue(d); b = alloc(d, 64)
        host = new("unsigned char[64]", list(range(64)))
        ok(lib.vnpuMemcpyHtoDAsync(b, 0, host, 64, q))
        for n in (2**64 - 1, 2**63):
            assert lib.vnpuMemcpyHtoDAsync(b, 0, host, n, q) == INVALID_ARGUMENT, msg()
            assert lib.vnpuMemcpyDtoHAsync(host, b, 0, n, q) == INVALID_ARGUMENT, msg()
            assert lib.vnpuModuleLoadData(d, host, n, new("vnpuModule *")) == INVALID_ARGUMENT, msg()
        assert list(host) == list(range(64))          # nothing was copied back
        out = new("unsigned char[64]"); ok(lib.vnpuMemcpyDtoHAsync(out, b, 0, 64, q))
        assert list(out) == list(range(64))
    """)


def test_peer_copy_across_platforms_is_refused_and_changes_nothing(libdir):
    """A peer copy between cards of two platforms was VNPU_ERROR_INTERNAL after writing the destination
    (same card index), or booked on the wrong switch; two threads copying both ways deadlocked. Another
    platform's handle is VNPU_ERROR_INVALID_HANDLE, as everywhere in the C API."""
    run_abi(libdir, """
        import threading
        p1, (a,) = platform(); p2, (b,) = platform()
        qa, qb = queue(a), queue(b)
        ba, bb = alloc(a, 4096), alloc(b, 4096)
        ok(lib.vnpuMemcpyHtoDAsync(bb, 0, new("unsigned char[4096]", [1] * 4096), 4096, qb))
        assert lib.vnpuMemcpyPeerAsync(ba, 0, bb, 0, 4096, qa) == INVALID_HANDLE, msg()
        assert "another platform" in msg()
        out = new("unsigned char[4096]", [9] * 4096); ok(lib.vnpuMemcpyDtoHAsync(out, ba, 0, 4096, qa))
        assert set(out) == {0}                          # the destination is as it was
        sys.setswitchinterval(1e-6)
        def both_ways(q, dst, src):
            for _ in range(200):
                assert lib.vnpuMemcpyPeerAsync(dst, 0, src, 0, 4096, q) == INVALID_HANDLE
        ts = [threading.Thread(target=both_ways, args=args, daemon=True)
              for args in ((qa, ba, bb), (qb, bb, ba))]
        [t.start() for t in ts]; [t.join(30) for t in ts]
        assert not any(t.is_alive() for t in ts), "deadlocked"
        # within one platform the peer copy still works
        p3, (c0, c1) = platform(2)
        q1 = queue(c1); b0, b1 = alloc(c0, 64), alloc(c1, 64)
        ok(lib.vnpuMemcpyPeerAsync(b1, 0, b0, 0, 64, q1))
    """)


def test_launch_cycles_are_the_callers_launch_when_threads_share_a_queue(libdir):
    """vnpuLaunchKernel read its cycles from the queue after the launch, outside the card's lock: a second
    thread launching on the same queue could reset or replace them (cycles 0 for a launch that ran)."""
    run_abi(libdir, """
        import threading
        sys.setswitchinterval(1e-6)     # switch threads as often as possible: the race needs a switch there
        p, (d,) = platform()
        q = queue(d)
        m = new("vnpuModule *"); ok(lib.vnpuModuleLoadLibrary(d, b"add", b"fp32", m))
        k = new("vnpuKernel *"); ok(lib.vnpuModuleGetKernel(m[0], b"add", k))
        seen = {}
        def launches(n):
            bufs = [alloc(d, 4 * n) for _ in range(3)]
            args = new("vnpuArg[4]")
            for i in range(3):
                args[i].kind, args[i].buffer = 0, bufs[i]
            args[3].kind, args[3].i = 1, n
            cycles = new("uint64_t *")
            got = seen.setdefault(n, set())
            for _ in range(4000):       # about 2 s; the unlocked read lost the race in 4 runs of 4
                ok(lib.vnpuLaunchKernel(q, k[0], args, 4, cycles))
                got.add(cycles[0])
        ts = [threading.Thread(target=launches, args=(n,)) for n in (16, 64, 4000)]
        [t.start() for t in ts]; [t.join() for t in ts]
        assert all(len(c) == 1 and 0 not in c for c in seen.values()), seen
    """)


def test_a_closed_platform_releases_its_cards_and_its_handles_are_device_lost(libdir):
    """vnpuPlatformClose left every object of the platform in the handle table, and vnpuMemFree on them is
    DEVICE_LOST: the cards' memory (64 MiB per cycle here) could never be freed."""
    run_abi(libdir, """
        import gc
        from vnpu.emulator.card import Card
        def live_cards():
            gc.collect()
            return sum(isinstance(o, Card) for o in gc.get_objects())
        cards_before = live_cards()
        for _ in range(3):
            p, (d,) = platform()
            q = queue(d); b = alloc(d, 64 << 20)
            ok(lib.vnpuMemcpyHtoDAsync(b, 0, new("char[]", 64 << 20), 64 << 20, q))
            m = new("vnpuModule *"); ok(lib.vnpuModuleLoadLibrary(d, b"relu", b"fp32", m))
            k = new("vnpuKernel *"); ok(lib.vnpuModuleGetKernel(m[0], b"relu", k))
            e = new("vnpuEvent *"); ok(lib.vnpuEventRecord(q, e))
            ok(lib.vnpuPlatformClose(p))
            free, total, cnt = new("uint64_t *"), new("uint64_t *"), new("int32_t *")
            for st in (lib.vnpuMemAlloc(d, 4096, new("vnpuBuffer *")), lib.vnpuMemGetInfo(d, free, total),
                       lib.vnpuDeviceGetProperties(d, new("vnpuDeviceProperties *")), lib.vnpuMemFree(b),
                       lib.vnpuBufferGetInfo(b, free, total), lib.vnpuModuleUnload(m[0]),
                       lib.vnpuKernelGetArgCount(k[0], cnt), lib.vnpuQueueSynchronize(q),
                       lib.vnpuQueueDestroy(q),
                       lib.vnpuEventQuery(e[0]), lib.vnpuEventDestroy(e[0])):
                assert st == DEVICE_LOST, (st, msg())
            assert lib.vnpuDeviceGetCount(p, cnt) == INVALID_HANDLE
            assert lib.vnpuPlatformClose(p) == INVALID_HANDLE
        assert live_cards() == cards_before, "a closed platform's cards are still alive"
    """)


def test_lookups_return_one_handle_and_destroyed_queues_are_forgotten(libdir):
    """vnpuDeviceGet and vnpuModuleGetKernel made a new table entry on every call (200,000 lookups: 67 MiB),
    and a destroyed queue stayed on its device: vnpuDeviceSynchronize went through every queue ever made."""
    run_abi(libdir, """
        import gc
        from vnpu.driver.queue import Queue
        p, (d,) = platform()
        m = new("vnpuModule *"); ok(lib.vnpuModuleLoadLibrary(d, b"add", b"fp32", m))
        dh, kh = new("vnpuDevice *"), new("vnpuKernel *")
        devices, kernels = set(), set()
        for _ in range(100):
            ok(lib.vnpuDeviceGet(p, 0, dh)); devices.add(dh[0])
            ok(lib.vnpuModuleGetKernel(m[0], b"add", kh)); kernels.add(kh[0])
        assert devices == {d} and len(kernels) == 1
        ok(lib.vnpuModuleUnload(m[0]))
        assert lib.vnpuKernelGetArgCount(kh[0], new("int32_t *")) == INVALID_HANDLE
        gc.collect()
        queues_before = sum(isinstance(o, Queue) for o in gc.get_objects())
        qh = new("vnpuQueue *")
        for _ in range(500):
            ok(lib.vnpuQueueCreate(d, qh)); ok(lib.vnpuQueueDestroy(qh[0]))
        gc.collect()
        assert sum(isinstance(o, Queue) for o in gc.get_objects()) == queues_before
        ok(lib.vnpuDeviceSynchronize(d))
    """)


def test_file_names_that_are_not_utf8_open(libdir, tmp_path):
    """Paths were decoded as UTF-8 with replacement characters, so a file named in Latin-1 was not found."""
    module = os.fsencode(tmp_path) + b"/kernel-\xe9.vnpu"
    yaml = os.fsencode(tmp_path) + b"/platform-\xe9.yaml"
    with open(module, "wb") as f:
        f.write(bytes(vnpu.assemble(".kernel k\n  halt\n")))
    with open(yaml, "w") as f:
        f.write("card: tiny\ncards: 1\n")
    run_abi(libdir, f"""
        p, (d,) = platform()
        ok(lib.vnpuModuleLoadFile(d, {module!r}, new("vnpuModule *")))
        ok(lib.vnpuPlatformOpen({yaml!r}, new("vnpuPlatform *")))
    """)


def test_float_argument_outside_f32_is_invalid_argument(libdir):
    """A double beyond the f32 range became inf, with numpy's RuntimeWarning printed on the host's stderr."""
    out = run_abi(libdir, """
        p, (d,) = platform()
        q = queue(d)
        m = new("vnpuModule *")
        ok(lib.vnpuModuleLoadAssembly(d, b".kernel k\\n.arg x, scalar, f32\\n  halt\\n", m))
        k = new("vnpuKernel *"); ok(lib.vnpuModuleGetKernel(m[0], b"k", k))
        arg = new("vnpuArg *"); arg.kind = 2
        for x in (1e300, -1e39):
            arg.f = x
            assert lib.vnpuLaunchKernel(q, k[0], arg, 1, ffi.NULL) == INVALID_ARGUMENT, msg()
            assert "does not fit an f32" in msg()
        for x in (3.4e38, float("inf"), float("nan"), -0.0):
            arg.f = x
            ok(lib.vnpuLaunchKernel(q, k[0], arg, 1, ffi.NULL))
        print("done")
    """)
    assert out.strip() == "done"


def test_a_library_built_in_a_venv_runs_the_venvs_python(tmp_path):
    """The embedded interpreter started as the base Python (its prefix, its site-packages first), so a venv's
    packages were shadowed by the base's, and a venv over a base without cffi could not start at all (every
    call then returned 0 without doing anything). A .pth file in the venv records sys.prefix as seen by the
    interpreter that processes it; with the library built in the venv, that must be the venv.
    The venv is made from the base Python (a venv cannot be made over a venv, and CI runs in one) and sees
    this environment's packages through a .pth file that adds its site-packages."""
    import site
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site_packages = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   check=True, capture_output=True, text=True).stdout.strip()
    ours = [d for d in site.getsitepackages() if os.path.isdir(d)]
    Path(site_packages, "vnpu_capi_outer.pth").write_text(
        "".join(f"import site; site.addsitedir({d!r})\n" for d in ours))
    marker = tmp_path / "prefix.txt"
    Path(site_packages, "vnpu_capi_probe.pth").write_text(
        f"import sys; open({str(marker)!r}, 'a').write(sys.prefix + '\\n')\n")
    out = tmp_path / "capi"
    subprocess.run([str(py), "-m", "vnpu", "capi", "build", "-o", str(out)], check=True, capture_output=True,
                   timeout=300)
    marker.unlink(missing_ok=True)
    prog = tmp_path / "version.c"
    prog.write_text('#include <stdio.h>\n#include "vnpu.h"\nint main(void) { int32_t v = 0;\n'
                    '  vnpuStatus s = vnpuGetVersion(&v); printf("%d %d\\n", s, v); return s; }\n')
    exe = tmp_path / "version"
    subprocess.run([CC, str(prog), "-o", str(exe), *link_flags(out).split()], check=True, timeout=120)
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.split() == ["0", str(API_VERSION)], run.stdout + run.stderr
    assert os.path.realpath(marker.read_text().splitlines()[0]) == os.path.realpath(venv)


THREADS_C = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "vnpu.h"

static vnpuDevice cards[2];
static int problems = 0, copied = 0, stale = 0;
static volatile int copying = 1;
static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;

static void report(const char *what, vnpuStatus s) {
    pthread_mutex_lock(&report_lock);
    fprintf(stderr, "%s: %s %s\n", what, vnpuGetErrorName(s), vnpuGetLastErrorMessage());
    problems++;
    pthread_mutex_unlock(&report_lock);
}
#define OK(call) do { vnpuStatus s_ = (call); if (s_) { report(#call, s_); return NULL; } } while (0)

/* out = a + b with the library's add, on one card; several of these run at once */
static void *adds(void *arg) {
    int id = (int)(intptr_t)arg, n = 100 + 1000 * id;
    vnpuDevice d = cards[id % 2];
    size_t bytes = n * sizeof(float);
    float *a = malloc(bytes), *b = malloc(bytes), *out = malloc(bytes);
    vnpuModule m; vnpuKernel k; vnpuQueue q;
    OK(vnpuModuleLoadLibrary(d, "add", "fp32", &m));
    OK(vnpuModuleGetKernel(m, "add", &k));
    OK(vnpuQueueCreate(d, &q));
    for (int it = 0; it < 15; it++) {
        vnpuBuffer da, db, dout;
        for (int i = 0; i < n; i++) { a[i] = i + it; b[i] = id; }
        OK(vnpuMemAlloc(d, bytes, &da)); OK(vnpuMemAlloc(d, bytes, &db)); OK(vnpuMemAlloc(d, bytes, &dout));
        OK(vnpuMemcpyHtoDAsync(da, 0, a, bytes, q)); OK(vnpuMemcpyHtoDAsync(db, 0, b, bytes, q));
        vnpuArg args[4] = {{VNPU_ARG_BUFFER, da, 0, 0}, {VNPU_ARG_BUFFER, db, 0, 0},
                           {VNPU_ARG_BUFFER, dout, 0, 0}, {VNPU_ARG_INT, 0, n, 0}};
        OK(vnpuLaunchKernel(q, k, args, 4, NULL));
        OK(vnpuMemcpyDtoHAsync(out, dout, 0, bytes, q));
        OK(vnpuQueueSynchronize(q));
        for (int i = 0; i < n; i++)
            if (out[i] != a[i] + b[i]) { report("wrong sum", VNPU_SUCCESS); break; }
        OK(vnpuMemFree(da)); OK(vnpuMemFree(db)); OK(vnpuMemFree(dout));
    }
    vnpuBuffer none;   /* this thread's last error message is its own */
    if (vnpuMemAlloc(d, 0, &none) != VNPU_ERROR_INVALID_ARGUMENT || !strstr(vnpuGetLastErrorMessage(), "size"))
        report("this thread's message", VNPU_SUCCESS);
    OK(vnpuQueueDestroy(q)); OK(vnpuModuleUnload(m));
    free(a); free(b); free(out);
    return NULL;
}

/* copies in and out of card 0 while another thread resets it: a copy either completes with the right
   bytes or finds its buffer stale (INVALID_HANDLE); nothing else */
static void *copies(void *arg) {
    (void)arg;
    static unsigned char src[4096], dst[4096];
    vnpuQueue q;
    OK(vnpuQueueCreate(cards[0], &q));
    for (int it = 0; it < 400; it++) {
        vnpuBuffer b;
        for (int i = 0; i < 4096; i++) src[i] = (unsigned char)(i * 7 + it);
        vnpuStatus s = vnpuMemAlloc(cards[0], sizeof src, &b);
        if (s) { report("alloc during resets", s); continue; }
        s = vnpuMemcpyHtoDAsync(b, 0, src, sizeof src, q);
        if (!s) s = vnpuMemcpyDtoHAsync(dst, b, 0, sizeof dst, q);
        if (!s && memcmp(src, dst, sizeof src)) report("copied bytes differ", s);
        if (!s) copied++;
        else if (s == VNPU_ERROR_INVALID_HANDLE) stale++;
        else report("copy during resets", s);
        vnpuMemFree(b);
    }
    copying = 0;
    return NULL;
}

static void *resets(void *arg) {
    (void)arg;
    while (copying) {
        vnpuStatus s = vnpuDeviceReset(cards[0]);
        if (s) report("reset", s);
    }
    return NULL;
}

int main(void) {
    vnpuPlatform p;
    pthread_t t[6];
    if (vnpuPlatformOpenCards("tiny", 2, &p) || vnpuDeviceGet(p, 0, &cards[0]) ||
        vnpuDeviceGet(p, 1, &cards[1]))
        return 2;
    for (int i = 0; i < 4; i++)          /* two threads on each card */
        pthread_create(&t[i], NULL, adds, (void *)(intptr_t)i);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    pthread_create(&t[4], NULL, copies, NULL);
    pthread_create(&t[5], NULL, resets, NULL);
    pthread_join(t[4], NULL);
    pthread_join(t[5], NULL);
    printf("problems %d copied %d stale %d\n", problems, copied, stale);
    return problems != 0;
}
"""


def test_threads_on_two_cards_one_card_and_a_reset_during_copies(libdir, tmp_path):
    """pthreads: two threads per card computing with the library's add (results checked), then one thread
    copying while another resets the card. No crash, no VNPU_ERROR_INTERNAL, only right bytes or stale
    handles, and each thread keeps its own last error message."""
    src = tmp_path / "threads.c"
    src.write_text(THREADS_C)
    exe = tmp_path / "threads"
    subprocess.run([CC, "-Wall", "-Wextra", "-Werror", "-pthread", str(src), "-o", str(exe),
                    *link_flags(libdir).split()], check=True, capture_output=True, text=True, timeout=120)
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    copied = int(run.stdout.split()[3])
    assert copied > 0, run.stdout


def test_a_card_config_that_cannot_be_read_is_config_not_internal(libdir, tmp_path):
    """A card config that is a folder or not UTF-8 was VNPU_ERROR_INTERNAL (IsADirectoryError,
    UnicodeDecodeError), directly or named by a platform YAML."""
    latin1 = tmp_path / "card-latin1.yaml"
    latin1.write_bytes(b"name: caf\xe9\npes: 2\n")
    platform_yaml = tmp_path / "platform.yaml"
    platform_yaml.write_text(f"card: {tmp_path}\ncards: 1\n")
    run_abi(libdir, f"""
        CONFIG = 6
        for card in ({str(tmp_path).encode()!r}, {str(latin1).encode()!r}):
            p = new("vnpuPlatform *", ffi.cast("vnpuPlatform", 777))
            assert lib.vnpuPlatformOpenCards(card, 1, p) == CONFIG, msg()
            assert int(ffi.cast("uintptr_t", p[0])) == 777
        assert lib.vnpuPlatformOpen({str(platform_yaml).encode()!r}, new("vnpuPlatform *")) == CONFIG, msg()
        assert lib.vnpuPlatformOpen({str(tmp_path).encode()!r}, new("vnpuPlatform *")) == CONFIG, msg()
    """)


def test_device_name_is_cut_at_a_character_boundary(libdir, tmp_path):
    """vnpuDeviceProperties.name (64 bytes) was cut inside a UTF-8 character."""
    from importlib import resources
    text = resources.files("vnpu.emulator").joinpath("configs", "tiny.yaml").read_text()
    name = "\u00e9" * 40                                      # 80 bytes of two-byte characters
    lines = [f"name: {name}" if line.startswith("name:") else line for line in text.splitlines()]
    card = tmp_path / "long-name.yaml"
    card.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run_abi(libdir, f"""
        p = new("vnpuPlatform *"); ok(lib.vnpuPlatformOpenCards({str(card).encode()!r}, 1, p))
        d = new("vnpuDevice *"); ok(lib.vnpuDeviceGet(p[0], 0, d))
        props = new("vnpuDeviceProperties *"); ok(lib.vnpuDeviceGetProperties(d[0], props))
        got = ffi.string(props.name)
        assert got.decode("utf-8") == {name!r}[:31], got      # 62 bytes: whole characters only
    """)


def test_elapsed_time_before_the_events_are_reached_is_not_ready(libdir):
    """vnpuEventElapsedTime gave a value for an event the host had not reached yet (CUDA: NOT_READY)."""
    run_abi(libdir, """
        NOT_READY = 16
        p, (d,) = platform()
        q = queue(d); b = alloc(d, 1 << 20)
        e0, e1 = new("vnpuEvent *"), new("vnpuEvent *")
        ok(lib.vnpuEventRecord(q, e0))
        ok(lib.vnpuMemcpyHtoDAsync(b, 0, new("char[]", 1 << 20), 1 << 20, q))
        ok(lib.vnpuEventRecord(q, e1))
        ns = new("double *", -1.0)
        assert lib.vnpuEventElapsedTime(ns, e0[0], e1[0]) == NOT_READY and ns[0] == -1.0
        assert lib.vnpuEventElapsedTime(ns, e1[0], e0[0]) == NOT_READY and ns[0] == -1.0
        polls = 0
        while lib.vnpuEventElapsedTime(ns, e0[0], e1[0]) == NOT_READY:    # a polling loop ends
            polls += 1
            assert polls < 10**6
        assert ns[0] > 0 and polls > 0
        ok(lib.vnpuEventElapsedTime(ns, e1[0], e0[0])); assert ns[0] < 0
    """)


def test_an_interrupted_call_is_an_error_not_success(libdir):
    """The wrapper caught only Exception: a KeyboardInterrupt inside a call escaped to cffi, which returned
    0 (VNPU_SUCCESS) although vnpuMemcpyDtoHAsync copied nothing and vnpuMemAlloc wrote no buffer."""
    run_abi(libdir, """
        p, (d,) = platform()
        q = queue(d); b = alloc(d, 64)
        from vnpu.driver.device import Device
        from vnpu.driver.queue import Queue
        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt
        alloc_, copy_ = Device.alloc, Queue.copy_to_host
        Device.alloc, Queue.copy_to_host = interrupted, interrupted
        out = new("vnpuBuffer *", ffi.cast("vnpuBuffer", 777))
        assert lib.vnpuMemAlloc(d, 64, out) == INTERNAL and int(ffi.cast("uintptr_t", out[0])) == 777
        assert "KeyboardInterrupt" in msg(), msg()
        host = new("unsigned char[64]")
        assert lib.vnpuMemcpyDtoHAsync(host, b, 0, 64, q) == INTERNAL
        Device.alloc, Queue.copy_to_host = alloc_, copy_
        ok(lib.vnpuMemAlloc(d, 64, out))
    """)
