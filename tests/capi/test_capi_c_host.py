"""The C API driven by C programs, as an independent C host drives it.

- Every function of vnpu.h, from a C program generated from the header's prototypes (a function added to the
  header without a recipe here fails the test): each pointer NULL in turn, each handle NULL, made up, of
  the wrong kind, destroyed, of another platform (where handles must belong together), every handle of a
  card holding a sticky fault, every handle of a closed platform. Each call must return the documented
  error (never VNPU_SUCCESS, never VNPU_ERROR_INTERNAL) and leave every out-pointer as it was.
- The host's process state: signal dispositions (SIGINT at its default still ends the program after vnpu
  started its Python; a host SIGINT handler still runs and the next calls still work) and the locale.
- The race sanitizer turned on from C reaches the program as VNPU_ERROR_RACE.
"""
import re
import signal
import subprocess

import pytest
from capi_toolchain import CC, needs_toolchain

import vnpu
from vnpu.driver.capi import build, link_flags
from vnpu.driver.capi.build import declarations
from vnpu.driver.capi.impl import API_VERSION

pytestmark = needs_toolchain

KERNEL_SOURCE = ".kernel k\n.arg x, buffer, f32\n.arg n, scalar, i32\n  halt\n"
CRASH_SOURCE = ".kernel crash\n  li r5, -8\n  lw r6, 0(r5)\n  halt\n"

HANDLE_TYPES = ("vnpuPlatform", "vnpuDevice", "vnpuBuffer", "vnpuModule", "vnpuKernel", "vnpuQueue", "vnpuEvent",
                "vnpuProgram")
# which field of a world a handle parameter takes, by (type, name); `args` is the launch's argument array
FIELD = {("vnpuPlatform", None): "P", ("vnpuDevice", None): "D", ("vnpuBuffer", None): "B",
         ("vnpuBuffer", "src"): "B2", ("vnpuModule", None): "M", ("vnpuKernel", None): "K",
         ("vnpuQueue", None): "Q", ("vnpuEvent", None): "E", ("vnpuEvent", "end"): "E2", ("vnpuProgram", None): "R"}
WRONG_KIND = {"P": "D", "D": "Q", "B": "Q", "B2": "M", "M": "K", "K": "B", "Q": "B", "E": "Q", "E2": "D", "R": "B"}
# a valid value for each non-handle input, by name (a (function, name) entry wins)
VALUES = {"yaml_path": "yaml_path", "card": '"tiny"', "cards": "1", "index": "0", "nbytes": "64",
          "path": "module_path", "source": "kernel_source", "op": '"add"', "dtype": '"fp32"', "name": '"k"',
          "image": "image", "flags": "0", "dst_offset": "0", "src_offset": "0", "src": "host_in", "nargs": "2",
          "inputs": "prog_inputs", "input_nbytes": "prog_in_nbytes", "ninputs": "1", "outputs": "prog_outputs",
          "output_nbytes": "prog_out_nbytes", "noutputs": "1"}
VALUES_OF = {("vnpuModuleLoadData", "nbytes"): "sizeof image", ("vnpuProgramLoad", "path"): "program_path"}
OPTIONAL = {("vnpuPlatformOpen", "yaml_path"), ("vnpuModuleLoadLibrary", "dtype"), ("vnpuLaunchKernel", "cycles")}
NO_HANDLE_CASES = {"vnpuInit", "vnpuGetVersion", "vnpuPlatformOpen", "vnpuPlatformOpenCards"}


def prototypes():
    """[(name, [(type, param)])] of every function of vnpu.h that returns a vnpuStatus."""
    out = []
    for m in re.finditer(r"^\s*vnpuStatus (vnpu\w+)\(([^;]*)\);", declarations(), re.M | re.S):
        params = []
        for p in m.group(2).split(","):
            p = " ".join(p.split())
            if p == "void":
                continue
            name = re.search(r"(\w+)$", p).group(1)
            t = p[: -len(name)].strip()
            params.append((t, name))
        out.append((m.group(1), params))
    return out


def classify(fn, t, name):
    base = t.replace("const", "").replace("*", "").strip()
    if "*" not in t and base in HANDLE_TYPES:
        return "handle", FIELD.get((base, name), FIELD[(base, None)])
    if base == "vnpuArg":
        return "handle", "args"
    if "*" in t and "const" not in t:
        return "out", ("unsigned char[64]" if base == "void" else base)
    if (fn, name) in VALUES_OF:
        return "value", VALUES_OF[(fn, name)]
    if name in VALUES:
        return "value", VALUES[name]
    raise AssertionError(f"no recipe for parameter {t} {name} of {fn}: add one to tests/capi/test_capi_c_host.py")


def call(fn, params, world="W", subst=None, null=None):
    """The C statements of one checked call: out variables filled with a sentinel, the call, the check."""
    decls, args, untouched = [], [], []
    for t, name in params:
        kind, what = classify(fn, t, name)
        if name == null:
            args.append("NULL")
        elif kind == "handle":
            w, expr = (subst[name] if subst and name in subst else (world, None))
            args.append(expr if expr is not None else f"{w}.{what}")
        elif kind == "out":
            var, array = f"out_{name}", "[" in what
            ref = var if array else f"&{var}"
            decls += [f"{what.split('[')[0]} {var}{'[64]' if array else ''};", f"memset({ref}, 0xA5, sizeof {var});"]
            args.append(ref)
            untouched.append(f"untouched({ref}, sizeof {var})")
        else:
            args.append(what)
    return decls, f"{fn}({', '.join(args)})", " && ".join(untouched) or "1"


def cases():
    """(function, scenario, C code) for every failure case of every function."""
    out = []

    def add(fn, scenario, want, decls, expr, untouched):
        body = "\n        ".join(decls + [f"vnpuStatus s = {expr};",
                                        f'check(s, {want}, "{fn}", "{scenario}", {untouched});'])
        out.append((fn, scenario, f"    {{\n        {body}\n    }}"))

    for fn, params in prototypes():
        handles = [(t, n) for t, n in params if classify(fn, t, n)[0] == "handle"]
        if fn not in NO_HANDLE_CASES:
            assert handles, f"{fn} takes no handle: add it to NO_HANDLE_CASES with a reason"
        for t, name in params:                                    # each pointer NULL in turn
            if "*" in t and (fn, name) not in OPTIONAL:
                add(fn, f"{name} NULL", "VNPU_ERROR_INVALID_ARGUMENT", *call(fn, params, null=name))
        for t, name in handles:
            field = classify(fn, t, name)[1]
            base = t.replace("const", "").replace("*", "").strip()
            if field != "args":
                add(fn, f"{name} NULL handle", "VNPU_ERROR_INVALID_HANDLE",
                    *call(fn, params, subst={name: (None, f"({base})NULL")}))
                add(fn, f"{name} made up", "VNPU_ERROR_INVALID_HANDLE",
                    *call(fn, params, subst={name: (None, f"({base})(uintptr_t)0x7000000000777ull")}))
                add(fn, f"{name} of the wrong kind", "VNPU_ERROR_INVALID_HANDLE",
                    *call(fn, params, subst={name: (None, f"({base})(void *)W.{WRONG_KIND[field]}")}))
            else:
                add(fn, f"{name} holding a queue as a buffer", "VNPU_ERROR_INVALID_HANDLE",
                    *call(fn, params, subst={name: (None, "W.args_wrong_kind")}))
            if field != "D":                                      # a device cannot be destroyed
                add(fn, f"{name} destroyed", "VNPU_ERROR_INVALID_HANDLE", *call(fn, params, subst={name: ("X", None)}))
            if len(handles) >= 2:                                 # handles that must belong together
                add(fn, f"{name} of another platform", "VNPU_ERROR_INVALID_HANDLE",
                    *call(fn, params, subst={name: ("O", None)}))
        kinds = {classify(fn, t, n)[1] for t, n in handles}
        if handles and kinds != {"P"} and fn != "vnpuDeviceReset":   # reset is what clears a sticky fault
            add(fn, "sticky fault on the card", "VNPU_ERROR_ILLEGAL_ADDRESS", *call(fn, params, world="F"))
        if handles:
            add(fn, "closed platform", "VNPU_ERROR_INVALID_HANDLE" if "P" in kinds else "VNPU_ERROR_DEVICE_LOST",
                *call(fn, params, world="C"))
    return out


PROGRAM = r"""
#include <locale.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "vnpu.h"

static const unsigned char image[] = {%(image)s};
static const char *kernel_source = %(kernel)s;
static const char *yaml_path, *module_path, *program_path;
static unsigned char host_in[64];
static float prog_in[4], prog_out[4];          /* the program's one input and one output: float32[4] */
static const void *prog_inputs[1] = {prog_in};
static void *prog_outputs[1] = {prog_out};
static size_t prog_in_nbytes[1] = {sizeof prog_in}, prog_out_nbytes[1] = {sizeof prog_out};
static int cases = 0, failures = 0;

struct world { vnpuPlatform P; vnpuDevice D; vnpuBuffer B, B2; vnpuModule M; vnpuKernel K; vnpuQueue Q;
               vnpuEvent E, E2; vnpuArg args[2], args_wrong_kind[2]; vnpuProgram R; };
static struct world W, O, X, F, C;

#define OK(call) do { vnpuStatus s_ = (call); if (s_) { fprintf(stderr, "setup %%s: %%s %%s\n", #call, \
                     vnpuGetErrorName(s_), vnpuGetLastErrorMessage()); exit(2); } } while (0)

static int untouched(const void *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (((const unsigned char *)p)[i] != 0xA5) return 0;
    return 1;
}

static void check(vnpuStatus got, vnpuStatus want, const char *fn, const char *scenario, int outs_untouched) {
    cases++;
    if (got != want || got == VNPU_SUCCESS || !outs_untouched) {
        failures++;
        printf("FAIL %%s (%%s): got %%s, want %%s%%s: %%s\n", fn, scenario, vnpuGetErrorName(got),
               vnpuGetErrorName(want), outs_untouched ? "" : ", and an out-pointer was written",
               got ? vnpuGetLastErrorMessage() : "");
    }
}

static void make_world(struct world *w) {
    OK(vnpuPlatformOpenCards("tiny", 1, &w->P));
    OK(vnpuDeviceGet(w->P, 0, &w->D));
    OK(vnpuMemAlloc(w->D, 64, &w->B));
    OK(vnpuMemAlloc(w->D, 64, &w->B2));
    OK(vnpuModuleLoadAssembly(w->D, kernel_source, &w->M));
    OK(vnpuModuleGetKernel(w->M, "k", &w->K));
    OK(vnpuQueueCreate(w->D, &w->Q));
    OK(vnpuEventRecord(w->Q, &w->E));
    OK(vnpuEventRecord(w->Q, &w->E2));
    w->args[0].kind = VNPU_ARG_BUFFER; w->args[0].buffer = w->B;
    w->args[1].kind = VNPU_ARG_INT; w->args[1].i = 16;
    w->args_wrong_kind[0] = w->args[0]; w->args_wrong_kind[1] = w->args[1];
    w->args_wrong_kind[0].buffer = (vnpuBuffer)(void *)w->Q;
    OK(vnpuProgramLoad(w->P, program_path, &w->R));
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    yaml_path = argv[1]; module_path = argv[2]; program_path = argv[3];
    make_world(&W);
    make_world(&O);
    make_world(&X);                        /* every handle destroyed, the platform closed */
    OK(vnpuEventDestroy(X.E)); OK(vnpuEventDestroy(X.E2)); OK(vnpuQueueDestroy(X.Q));
    OK(vnpuModuleUnload(X.M)); OK(vnpuMemFree(X.B)); OK(vnpuMemFree(X.B2)); OK(vnpuProgramUnload(X.R));
    OK(vnpuPlatformClose(X.P));
    make_world(&F);                        /* a card holding a sticky fault */
    vnpuModule crash_module; vnpuKernel crash;
    OK(vnpuModuleLoadAssembly(F.D, %(crash)s, &crash_module));
    OK(vnpuModuleGetKernel(crash_module, "crash", &crash));
    OK(vnpuLaunchKernel(F.Q, crash, NULL, 0, NULL));
    if (vnpuDeviceGetStatus(F.D) != VNPU_ERROR_ILLEGAL_ADDRESS) { printf("FAIL: no sticky fault\n"); return 2; }
    make_world(&C);                        /* a closed platform */
    OK(vnpuPlatformClose(C.P));

%(cases)s

    /* the good world still works after all that */
    unsigned char back[64];
    OK(vnpuMemcpyHtoDAsync(W.B, 0, host_in, 64, W.Q));
    OK(vnpuMemcpyDtoHAsync(back, W.B, 0, 64, W.Q));
    OK(vnpuQueueSynchronize(W.Q));
    printf("cases %%d failures %%d\n", cases, failures);
    return failures != 0;
}
"""


@pytest.fixture(scope="module")
def libdir(tmp_path_factory):
    out = tmp_path_factory.mktemp("capi-c-host")
    build(out)
    return out


def compile_c(libdir, tmp_path, name, source):
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    exe = tmp_path / name
    done = subprocess.run([CC, "-Wall", "-Wextra", "-Werror", "-pthread", str(src), "-o", str(exe),
                           *link_flags(libdir).split()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return exe


def c_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def test_every_function_fails_cleanly_from_c(libdir, tmp_path):
    all_cases = cases()
    assert len({fn for fn, _, _ in all_cases}) >= 35
    source = PROGRAM % {"image": ", ".join(str(b) for b in bytes(vnpu.assemble(KERNEL_SOURCE))),
                        "kernel": c_string(KERNEL_SOURCE), "crash": c_string(CRASH_SOURCE),
                        "cases": "\n".join(code for _, _, code in all_cases)}
    exe = compile_c(libdir, tmp_path, "failure_paths", source)
    (tmp_path / "platform.yaml").write_text("card: tiny\ncards: 1\n")
    (tmp_path / "k.vnpu").write_bytes(bytes(vnpu.assemble(KERNEL_SOURCE)))
    from vnpu.runtime.graph.ir import Graph
    g = Graph("relu4")
    g.set_outputs([g.add_node("relu", [g.add_input("x", (4,))], name="y")])
    vnpu.compile(g, cards=1, dtype="fp32", platform=vnpu.Platform(card="tiny", cards=1)).save(tmp_path / "p.vnpp")
    run = subprocess.run([str(exe), str(tmp_path / "platform.yaml"), str(tmp_path / "k.vnpu"),
                          str(tmp_path / "p.vnpp")],
                         capture_output=True, text=True, timeout=600)
    fails = [line for line in run.stdout.splitlines() if line.startswith("FAIL")]
    assert run.returncode == 0 and not fails, "\n".join(fails[:60]) + run.stderr[-3000:]
    assert f"cases {len(all_cases)} failures 0" in run.stdout
    assert len(all_cases) > 200


HOST_STATE = r"""
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "vnpu.h"

static volatile sig_atomic_t caught = 0;
static void on_signal(int sig) { (void)sig; caught++; }

#define OK(call) do { vnpuStatus s_ = (call); if (s_) { fprintf(stderr, "%s: %s %s\n", #call, \
                     vnpuGetErrorName(s_), vnpuGetLastErrorMessage()); return 3; } } while (0)

/* argv[1]: "default" (SIGINT left at its default: the program must die by it) or "handler" (the host's
   SIGINT handler must run and the next calls must do their work); argv[2]: a locale to set first or "-" */
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int with_handler = strcmp(argv[1], "handler") == 0;
    if (strcmp(argv[2], "-") != 0 && !setlocale(LC_ALL, argv[2])) return 4;
    if (with_handler) signal(SIGINT, on_signal);
    signal(SIGUSR1, on_signal);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction before[NSIG];
    for (int s = 1; s < NSIG; s++) sigaction(s, NULL, &before[s]);
    char locale[512];
    snprintf(locale, sizeof locale, "%s", setlocale(LC_ALL, NULL));

    OK(vnpuInit(0));
    vnpuPlatform p; vnpuDevice d; vnpuQueue q; vnpuModule m; vnpuKernel k; vnpuBuffer b;
    OK(vnpuPlatformOpenCards("tiny", 1, &p));
    OK(vnpuDeviceGet(p, 0, &d));
    OK(vnpuQueueCreate(d, &q));
    OK(vnpuModuleLoadLibrary(d, "relu", "fp32", &m));      /* imports the kernels and runs the emulator */
    OK(vnpuModuleGetKernel(m, "relu", &k));
    OK(vnpuMemAlloc(d, 64, &b));
    vnpuArg args[3] = {{VNPU_ARG_BUFFER, b, 0, 0}, {VNPU_ARG_BUFFER, b, 0, 0}, {VNPU_ARG_INT, NULL, 16, 0}};
    OK(vnpuLaunchKernel(q, k, args, 3, NULL));
    OK(vnpuQueueSynchronize(q));

    int changed = 0;
    for (int s = 1; s < NSIG; s++) {
        struct sigaction now;
        sigaction(s, NULL, &now);
        if (now.sa_handler != before[s].sa_handler) { printf("signal %d changed\n", s); changed++; }
    }
    if (strcmp(locale, setlocale(LC_ALL, NULL)) != 0) {
        printf("locale changed: %s -> %s\n", locale, setlocale(LC_ALL, NULL));
        changed++;
    }
    printf("host state changes %d\n", changed);
    fflush(stdout);
    raise(SIGINT);
    if (!with_handler) return 5;           /* SIGINT at its default should have ended the program */
    /* the host handled SIGINT; the next calls in this (the first-calling) thread must do their work */
    vnpuBuffer b2 = NULL;
    float in[16], out[16];
    for (int i = 0; i < 16; i++) { in[i] = (float)i - 8; out[i] = 99; }
    OK(vnpuMemAlloc(d, sizeof in, &b2));
    if (b2 == NULL) { printf("vnpuMemAlloc returned success without a buffer\n"); return 6; }
    OK(vnpuMemcpyHtoDAsync(b2, 0, in, sizeof in, q));
    OK(vnpuMemcpyDtoHAsync(out, b2, 0, sizeof out, q));
    if (memcmp(in, out, sizeof in) != 0) { printf("vnpuMemcpyDtoHAsync copied nothing\n"); return 7; }
    printf("caught %d, calls after SIGINT work\n", (int)caught);
    return caught == 1 ? 0 : 8;
}
"""


@pytest.mark.parametrize("mode, locale", [("default", "-"), ("default", "C.UTF-8"), ("handler", "-")])
def test_host_signal_handling_and_locale_survive_the_embedded_python(libdir, tmp_path, mode, locale):
    """The embedded interpreter installed its SIGINT handler (SIGINT at its default no longer ended the C
    program, and the pending KeyboardInterrupt made the next call in the first thread return VNPU_SUCCESS
    without doing anything) and changed LC_CTYPE from C to C.UTF-8."""
    exe = compile_c(libdir, tmp_path, "host_state", HOST_STATE)
    run = subprocess.run([str(exe), mode, locale], capture_output=True, text=True, timeout=600)
    if run.returncode == 4:
        pytest.skip(f"locale {locale} is not available here")
    assert "host state changes 0" in run.stdout, run.stdout + run.stderr
    if mode == "default":
        assert run.returncode == -signal.SIGINT, run.stdout + run.stderr
    else:
        assert run.returncode == 0 and "calls after SIGINT work" in run.stdout, run.stdout + run.stderr


STARTS = r"""
#include <stdio.h>
#include "vnpu.h"
int main(void) {
    int32_t version = 0;
    vnpuPlatform p = NULL;
    vnpuStatus s1 = vnpuGetVersion(&version), s2 = vnpuPlatformOpenCards("tiny", 1, &p), s3 = vnpuInit(0);
    printf("%s %s %s %d %d\n%s\n%s\n", vnpuGetErrorName(s1), vnpuGetErrorName(s2), vnpuGetErrorName(s3), version,
           p == NULL, vnpuGetErrorName(VNPU_ERROR_OUT_OF_MEMORY), vnpuGetLastErrorMessage());
    return 0;
}
"""


def test_a_python_that_cannot_start_is_an_error_not_success(libdir, tmp_path):
    """When the embedded Python could not start, every function returned 0 (VNPU_SUCCESS) without doing
    anything (cffi's behaviour). Now each returns VNPU_ERROR_INTERNAL and the message says why."""
    exe = compile_c(libdir, tmp_path, "starts", STARTS)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "_cffi_backend.py").write_text("raise ImportError('broken on purpose')\n")
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(broken)})
    lines = run.stdout.splitlines()
    assert run.returncode == 0 and lines[0] == "VNPU_ERROR_INTERNAL " * 3 + "0 1", run.stdout + run.stderr
    assert lines[1] == "VNPU_ERROR_OUT_OF_MEMORY"
    assert "could not start" in lines[2]
    ok = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert ok.stdout.splitlines()[0] == f"VNPU_SUCCESS VNPU_SUCCESS VNPU_SUCCESS {API_VERSION} 0", ok.stdout + ok.stderr


SANITIZE = r"""
#include <stdio.h>
#include <string.h>
#include "vnpu.h"
#define OK(call) do { vnpuStatus s_ = (call); if (s_) { printf("%s: %s %s\n", #call, vnpuGetErrorName(s_), \
                     vnpuGetLastErrorMessage()); return 1; } } while (0)
static const char *racy = ".kernel k\n.arg a, buffer, f32\n.arg out, buffer, f32\n li r9, 1024\n li r10, 4096\n"
                          " dma e0, r10, a, r9, s0\n lw r5, 0(r10)\n wait s0, 1\n halt\n";
int main(void) {
    vnpuPlatform p; vnpuDevice d; vnpuQueue plain, checked; vnpuModule m; vnpuKernel k; vnpuBuffer a, out;
    uint32_t flags = 77;
    OK(vnpuPlatformOpenCards("tiny", 1, &p));
    OK(vnpuDeviceGet(p, 0, &d));
    if (vnpuQueueCreateWithFlags(d, 2, &plain) != VNPU_ERROR_INVALID_ARGUMENT) return 2;
    OK(vnpuQueueCreate(d, &plain));
    OK(vnpuQueueCreateWithFlags(d, VNPU_QUEUE_SANITIZE, &checked));
    OK(vnpuQueueGetFlags(checked, &flags));
    if (flags != VNPU_QUEUE_SANITIZE) return 3;
    OK(vnpuQueueGetFlags(plain, &flags));
    if (flags != VNPU_QUEUE_DEFAULT) return 4;
    for (int round = 0; round < 2; round++) {
        OK(vnpuModuleLoadAssembly(d, racy, &m));
        OK(vnpuModuleGetKernel(m, "k", &k));
        OK(vnpuMemAlloc(d, 4096, &a));
        OK(vnpuMemAlloc(d, 4096, &out));
        vnpuArg args[2] = {{VNPU_ARG_BUFFER, a, 0, 0}, {VNPU_ARG_BUFFER, out, 0, 0}};
        OK(vnpuLaunchKernel(plain, k, args, 2, NULL));        /* no sanitizer: runs */
        OK(vnpuQueueSynchronize(plain));
        OK(vnpuLaunchKernel(checked, k, args, 2, NULL));      /* accepted; the race is sticky */
        vnpuStatus s = vnpuQueueSynchronize(checked);
        printf("%s %s\n", vnpuGetErrorName(s), vnpuGetLastErrorMessage());
        if (s != VNPU_ERROR_RACE || vnpuDeviceGetStatus(d) != VNPU_ERROR_RACE) return 5;
        OK(vnpuDeviceReset(d));                               /* the queues stay, with their flags */
    }
    printf("sanitizer OK\n");
    return 0;
}
"""


def test_the_sanitizer_turned_on_from_c_reports_a_race(libdir, tmp_path):
    """vnpuLaunchKernel could not turn the sanitizer on, so VNPU_ERROR_RACE could never reach a C program."""
    exe = compile_c(libdir, tmp_path, "sanitize", SANITIZE)
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "sanitizer OK" in run.stdout, run.stdout + run.stderr
    assert run.stdout.startswith("VNPU_ERROR_RACE vnpuQueueSynchronize: RaceError")
