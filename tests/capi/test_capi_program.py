"""Compiled programs from C (issue 17 item 11): a .vnpp file made in Python (Program.save) or by `vnpu compile`
is loaded, described and run by a C program through vnpuProgramLoad / vnpuProgramRun, with its outputs
bitwise equal to Program.run's in Python; every misuse from C (wrong sizes and counts, NULL arrays, bad
files, too few cards, a handle after unload or after its platform closed, a sticky fault on one of its cards)
returns its status with a message naming the problem, writes no output and never crashes the process; and
the same through cffi's ABI mode from threads.
"""
import re
import runpy
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from capi_toolchain import needs_toolchain
from test_capi_c_host import compile_c

import vnpu
from vnpu.driver.capi import HEADER, build
from vnpu.driver.capi.build import declarations
from vnpu.driver.capi.impl import API_VERSION, DTYPE_CODES

ROOT = Path(__file__).resolve().parents[2]

pytestmark = needs_toolchain

# the model, as a file `vnpu compile FILE:model` reads: conv + relu (fused by the compiler) + linear, plus an
# input added to the logits; two inputs, two outputs
MODEL_PY = '''
import numpy as np
from vnpu.runtime.graph.ir import Graph


def graph():
    rng = np.random.default_rng(11)
    g = Graph("cnn_head")
    x = g.add_input("image", (1, 3, 8, 8))
    shift = g.add_input("shift", (1, 10))

    def w(name, *shape):
        return g.add_const(name, (rng.standard_normal(shape) * 0.3).astype(np.float32))
    y = g.add_node("conv2d", [x, w("conv.w", 4, 3, 3, 3), w("conv.b", 4)], dict(stride=1, padding=1), name="conv")
    feat = g.add_node("relu", [y], name="features")
    y = g.add_node("reshape", [feat], dict(shape=(1, 256)), name="flatten")
    y = g.add_node("linear", [y, w("fc.w", 10, 256), w("fc.b", 10)], name="fc")
    g.set_outputs([g.add_node("add", [y, shift], name="logits"), feat])
    return g


def model():
    rng = np.random.default_rng(5)
    return graph(), [rng.standard_normal((1, 3, 8, 8)).astype(np.float32),
                     rng.standard_normal((1, 10)).astype(np.float32)]
'''

RUN_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "vnpu.h"

#define OK(call) do { vnpuStatus s_ = (call); if (s_) { printf("FAIL %s: %s %s\n", #call, vnpuGetErrorName(s_), \
                     vnpuGetLastErrorMessage()); return 1; } } while (0)

static const char *dtype_name(int32_t dtype) {
    switch (dtype) {
    case VNPU_DTYPE_FLOAT32: return "float32";
    case VNPU_DTYPE_FLOAT16: return "float16";
    case VNPU_DTYPE_INT8: return "int8";
    case VNPU_DTYPE_INT32: return "int32";
    case VNPU_DTYPE_INT64: return "int64";
    case VNPU_DTYPE_UINT8: return "uint8";
    case VNPU_DTYPE_BOOL: return "bool";
    case VNPU_DTYPE_FLOAT64: return "float64";
    default: return "?";
    }
}

static void print_info(const char *what, int32_t i, const vnpuTensorInfo *t) {
    printf("%s %d %s %s [", what, (int)i, t->name, dtype_name(t->dtype));
    for (int d = 0; d < t->ndim; d++)
        printf(d ? ",%lld" : "%lld", (long long)t->dims[d]);
    printf("] %llu\n", (unsigned long long)t->nbytes);
}

/* argv: program.vnpp, card name, cards, inputs file (every input's bytes in order), outputs file */
int main(int argc, char **argv) {
    if (argc != 6) return 2;
    vnpuPlatform platform;
    vnpuProgram program;
    OK(vnpuPlatformOpenCards(argv[2], atoi(argv[3]), &platform));
    OK(vnpuProgramLoad(platform, argv[1], &program));
    int32_t nin, nout;
    OK(vnpuProgramGetInputCount(program, &nin));
    OK(vnpuProgramGetOutputCount(program, &nout));
    if (nin > 8 || nout > 8) return 3;
    const void *inputs[8];
    void *outputs[8];
    size_t in_nbytes[8], out_nbytes[8];
    FILE *f = fopen(argv[4], "rb");
    if (!f) return 4;
    for (int32_t i = 0; i < nin; i++) {
        vnpuTensorInfo t;
        OK(vnpuProgramGetInputInfo(program, i, &t));
        print_info("input", i, &t);
        void *p = malloc(t.nbytes ? t.nbytes : 1);
        if (fread(p, 1, t.nbytes, f) != t.nbytes) return 5;
        inputs[i] = p;
        in_nbytes[i] = t.nbytes;
    }
    if (fgetc(f) != EOF) return 6;
    fclose(f);
    for (int32_t i = 0; i < nout; i++) {
        vnpuTensorInfo t;
        OK(vnpuProgramGetOutputInfo(program, i, &t));
        print_info("output", i, &t);
        outputs[i] = malloc(t.nbytes ? t.nbytes : 1);
        memset(outputs[i], 0xA5, t.nbytes);
        out_nbytes[i] = t.nbytes;
    }
    OK(vnpuProgramRun(program, inputs, in_nbytes, nin, outputs, out_nbytes, nout));
    double ns = 0;
    OK(vnpuProgramGetLatencyNs(program, &ns));
    printf("latency_ns %.17g\n", ns);
    f = fopen(argv[5], "wb");
    if (!f) return 7;
    for (int32_t i = 0; i < nout; i++)
        if (fwrite(outputs[i], 1, out_nbytes[i], f) != out_nbytes[i]) return 8;
    fclose(f);
    OK(vnpuProgramUnload(program));
    OK(vnpuPlatformClose(platform));
    for (int32_t i = 0; i < nin; i++) free((void *)inputs[i]);
    for (int32_t i = 0; i < nout; i++) free(outputs[i]);
    printf("run: OK\n");
    return 0;
}
"""

MISUSE_C = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "vnpu.h"

#define OK(call) do { vnpuStatus s_ = (call); if (s_) { printf("FAIL setup %s: %s %s\n", #call, \
                     vnpuGetErrorName(s_), vnpuGetLastErrorMessage()); return 1; } } while (0)

static int checks = 0, failures = 0;

/* the call's status must be `want` and the message must contain `needle` */
static void expect(vnpuStatus got, vnpuStatus want, const char *label, const char *needle) {
    const char *msg = got != VNPU_SUCCESS ? vnpuGetLastErrorMessage() : "";
    checks++;
    if (got != want || (needle && !strstr(msg, needle))) {
        failures++;
        printf("FAIL %s: got %s, want %s with \"%s\": %s\n", label, vnpuGetErrorName(got), vnpuGetErrorName(want),
               needle ? needle : "", msg);
    } else {
        printf("ok %s: %s %s\n", label, vnpuGetErrorName(got), msg);
    }
}

static void expect_true(int cond, const char *label) {
    checks++;
    if (!cond) { failures++; printf("FAIL %s\n", label); }
}

static float image[1 * 3 * 8 * 8], shift[10], logits[10], features[4 * 8 * 8];
static float first_logits[10], first_features[4 * 8 * 8];
static const void *inputs[2] = {image, shift};
static void *outputs[2] = {logits, features};
static size_t in_nbytes[2] = {sizeof image, sizeof shift}, out_nbytes[2] = {sizeof logits, sizeof features};

static void poison(void) { memset(logits, 0xA5, sizeof logits); memset(features, 0xA5, sizeof features); }
static int poisoned(void) {
    for (size_t i = 0; i < sizeof logits; i++) if (((unsigned char *)logits)[i] != 0xA5) return 0;
    for (size_t i = 0; i < sizeof features; i++) if (((unsigned char *)features)[i] != 0xA5) return 0;
    return 1;
}

/* a run that must fail: the outputs stay as they were and the latency is still the last good run's */
static void bad_run(vnpuProgram r, const void *const *in, const size_t *in_n, int32_t nin, void *const *out,
                    const size_t *out_n, int32_t nout, vnpuStatus want, const char *label, const char *needle) {
    poison();
    expect(vnpuProgramRun(r, in, in_n, nin, out, out_n, nout), want, label, needle);
    expect_true(poisoned(), label);
}

/* argv: good program, a text file, a zip without a good program.json, a folder */
int main(int argc, char **argv) {
    if (argc != 5) return 2;
    for (int i = 0; i < 192; i++) image[i] = (float)((i * 37) % 19) / 7.0f - 1.0f;
    for (int i = 0; i < 10; i++) shift[i] = (float)i / 4.0f;
    vnpuPlatform p2, p1;
    vnpuDevice card1;
    OK(vnpuPlatformOpenCards("tiny", 2, &p2));
    OK(vnpuPlatformOpenCards("tiny", 1, &p1));
    OK(vnpuDeviceGet(p2, 1, &card1));

    /* loads that fail write no handle */
    vnpuProgram r = (vnpuProgram)(uintptr_t)0x5151;
    expect(vnpuProgramLoad(p2, "/nonexistent/missing.vnpp", &r), VNPU_ERROR_INVALID_ARGUMENT, "missing file",
           "missing.vnpp");
    expect(vnpuProgramLoad(p2, argv[2], &r), VNPU_ERROR_INVALID_ARGUMENT, "a text file", "is not a vnpu program");
    expect(vnpuProgramLoad(p2, argv[3], &r), VNPU_ERROR_INVALID_ARGUMENT, "a zip that is no program",
           "not a readable vnpu program");
    expect(vnpuProgramLoad(p2, argv[4], &r), VNPU_ERROR_INVALID_ARGUMENT, "a folder", "is not a vnpu program");
    expect(vnpuProgramLoad(p1, argv[1], &r), VNPU_ERROR_INVALID_ARGUMENT, "too few cards",
           "placed on 2 cards; the platform has 1");
    expect(vnpuProgramLoad(p2, NULL, &r), VNPU_ERROR_INVALID_ARGUMENT, "NULL path", "path is NULL");
    expect(vnpuProgramLoad(p2, argv[1], NULL), VNPU_ERROR_INVALID_ARGUMENT, "NULL program", "program is NULL");
    expect(vnpuProgramLoad(NULL, argv[1], &r), VNPU_ERROR_INVALID_HANDLE, "NULL platform", "platform handle is NULL");
    expect(vnpuProgramLoad((vnpuPlatform)(void *)card1, argv[1], &r), VNPU_ERROR_INVALID_HANDLE,
           "a device as the platform", "is a device, not a platform");
    expect_true(r == (vnpuProgram)(uintptr_t)0x5151, "failed loads wrote no handle");

    OK(vnpuProgramLoad(p2, argv[1], &r));
    double ns = -1;
    expect(vnpuProgramGetLatencyNs(r, &ns), VNPU_ERROR_NOT_READY, "latency before a run", "has not run yet");
    expect(vnpuProgramGetLatencyNs(r, NULL), VNPU_ERROR_INVALID_ARGUMENT, "NULL latency", "ns is NULL");
    int32_t count = -7;
    vnpuTensorInfo info;
    memset(&info, 0xA5, sizeof info);
    expect(vnpuProgramGetInputCount(r, NULL), VNPU_ERROR_INVALID_ARGUMENT, "NULL count", "count is NULL");
    expect(vnpuProgramGetInputInfo(r, 2, &info), VNPU_ERROR_INVALID_ARGUMENT, "input index 2",
           "input index 2 is not in 0..1");
    expect(vnpuProgramGetInputInfo(r, -1, &info), VNPU_ERROR_INVALID_ARGUMENT, "input index -1", "input index -1");
    expect(vnpuProgramGetOutputInfo(r, 2, &info), VNPU_ERROR_INVALID_ARGUMENT, "output index 2",
           "output index 2 is not in 0..1");
    expect(vnpuProgramGetOutputInfo(r, 0, NULL), VNPU_ERROR_INVALID_ARGUMENT, "NULL info", "info is NULL");
    expect_true(((unsigned char *)&info)[0] == 0xA5 && ns == -1 && count == -7, "failed queries wrote nothing");

    /* runs that fail change nothing */
    const void *in_null1[2] = {image, NULL};
    void *out_null0[2] = {NULL, features};
    size_t small[2] = {sizeof image - 1, sizeof shift}, big[2] = {sizeof image + 4, sizeof shift};
    size_t out_wrong[2] = {sizeof logits, sizeof features / 2}, huge[2] = {SIZE_MAX, sizeof shift};
    bad_run(r, inputs, in_nbytes, 1, outputs, out_nbytes, 2, VNPU_ERROR_INVALID_ARGUMENT, "ninputs 1",
            "ninputs is 1; the program has 2 inputs (image, shift)");
    bad_run(r, inputs, in_nbytes, 2, outputs, out_nbytes, 3, VNPU_ERROR_INVALID_ARGUMENT, "noutputs 3",
            "noutputs is 3; the program has 2 outputs");
    bad_run(r, NULL, in_nbytes, 2, outputs, out_nbytes, 2, VNPU_ERROR_INVALID_ARGUMENT, "NULL inputs",
            "inputs is NULL");
    bad_run(r, inputs, NULL, 2, outputs, out_nbytes, 2, VNPU_ERROR_INVALID_ARGUMENT, "NULL input_nbytes",
            "input_nbytes is NULL");
    bad_run(r, inputs, in_nbytes, 2, NULL, out_nbytes, 2, VNPU_ERROR_INVALID_ARGUMENT, "NULL outputs",
            "outputs is NULL");
    bad_run(r, inputs, in_nbytes, 2, outputs, NULL, 2, VNPU_ERROR_INVALID_ARGUMENT, "NULL output_nbytes",
            "output_nbytes is NULL");
    bad_run(r, in_null1, in_nbytes, 2, outputs, out_nbytes, 2, VNPU_ERROR_INVALID_ARGUMENT, "NULL inputs[1]",
            "inputs[1] (input 'shift') is NULL");
    bad_run(r, inputs, in_nbytes, 2, out_null0, out_nbytes, 2, VNPU_ERROR_INVALID_ARGUMENT, "NULL outputs[0]",
            "outputs[0] (output 'logits') is NULL");
    bad_run(r, inputs, small, 2, outputs, out_nbytes, 2, VNPU_ERROR_INVALID_ARGUMENT, "input 1 byte short",
            "input_nbytes[0] is 767; input 0 'image' (float32[1, 3, 8, 8], 768 bytes) takes exactly 768");
    bad_run(r, inputs, big, 2, outputs, out_nbytes, 2, VNPU_ERROR_INVALID_ARGUMENT, "input too long",
            "input_nbytes[0] is 772");
    bad_run(r, inputs, huge, 2, outputs, out_nbytes, 2, VNPU_ERROR_INVALID_ARGUMENT, "input SIZE_MAX bytes",
            "input_nbytes[0] is 18446744073709551615");
    bad_run(r, inputs, in_nbytes, 2, outputs, out_wrong, 2, VNPU_ERROR_INVALID_ARGUMENT, "output half size",
            "output_nbytes[1] is 512");
    bad_run((vnpuProgram)(void *)card1, inputs, in_nbytes, 2, outputs, out_nbytes, 2, VNPU_ERROR_INVALID_HANDLE,
            "a device as the program", "is a device, not a program");
    bad_run((vnpuProgram)(uintptr_t)0x8000000000999ull, inputs, in_nbytes, 2, outputs, out_nbytes, 2,
            VNPU_ERROR_INVALID_HANDLE, "a made-up program", "no program has handle 0x8000000000999");
    bad_run(NULL, inputs, in_nbytes, 2, outputs, out_nbytes, 2, VNPU_ERROR_INVALID_HANDLE, "a NULL program",
            "the program handle is NULL");
    expect(vnpuProgramGetLatencyNs(r, &ns), VNPU_ERROR_NOT_READY, "still no latency after failed runs",
           "has not run yet");

    /* a good run, and the same bytes again after all that */
    poison();
    OK(vnpuProgramRun(r, inputs, in_nbytes, 2, outputs, out_nbytes, 2));
    expect_true(!poisoned(), "the good run wrote its outputs");
    memcpy(first_logits, logits, sizeof logits);
    memcpy(first_features, features, sizeof features);
    OK(vnpuProgramGetLatencyNs(r, &ns));
    expect_true(ns > 0, "latency after a run");
    printf("latency_ns %.3f\n", ns);

    /* a sticky fault on the program's second card: every call on the program returns it, until a reset */
    vnpuModule crash_module;
    vnpuKernel crash;
    vnpuQueue q1;
    OK(vnpuQueueCreate(card1, &q1));
    OK(vnpuModuleLoadAssembly(card1, ".kernel crash\n  li r5, -8\n  lw r6, 0(r5)\n  halt\n", &crash_module));
    OK(vnpuModuleGetKernel(crash_module, "crash", &crash));
    OK(vnpuLaunchKernel(q1, crash, NULL, 0, NULL));
    bad_run(r, inputs, in_nbytes, 2, outputs, out_nbytes, 2, VNPU_ERROR_ILLEGAL_ADDRESS, "run on a faulted card",
            "IllegalAddress");
    expect(vnpuProgramGetOutputCount(r, &count), VNPU_ERROR_ILLEGAL_ADDRESS, "count on a faulted card",
           "IllegalAddress");
    OK(vnpuDeviceReset(card1));
    poison();
    OK(vnpuProgramRun(r, inputs, in_nbytes, 2, outputs, out_nbytes, 2));
    expect_true(memcmp(first_logits, logits, sizeof logits) == 0 &&
                memcmp(first_features, features, sizeof features) == 0, "the same outputs after the reset");

    /* unload: the handle is gone */
    OK(vnpuProgramUnload(r));
    bad_run(r, inputs, in_nbytes, 2, outputs, out_nbytes, 2, VNPU_ERROR_INVALID_HANDLE, "run after unload",
            "no program has handle");
    expect(vnpuProgramGetInputCount(r, &count), VNPU_ERROR_INVALID_HANDLE, "count after unload",
           "no program has handle");
    expect(vnpuProgramUnload(r), VNPU_ERROR_INVALID_HANDLE, "unload twice", "no program has handle");

    /* the platform closed under a loaded program: DEVICE_LOST, as every object of a closed platform */
    vnpuProgram r2;
    OK(vnpuProgramLoad(p2, argv[1], &r2));
    OK(vnpuProgramGetInputInfo(r2, 1, &info));
    expect_true(strcmp(info.name, "shift") == 0 && info.ndim == 2 && info.dims[1] == 10 && info.dims[2] == 0 &&
                info.nbytes == 40 && info.dtype == VNPU_DTYPE_FLOAT32, "input 1's info");
    OK(vnpuPlatformClose(p2));
    bad_run(r2, inputs, in_nbytes, 2, outputs, out_nbytes, 2, VNPU_ERROR_DEVICE_LOST, "run after platform close",
            "was closed");
    expect(vnpuProgramGetLatencyNs(r2, &ns), VNPU_ERROR_DEVICE_LOST, "latency after platform close", "was closed");
    expect(vnpuProgramUnload(r2), VNPU_ERROR_DEVICE_LOST, "unload after platform close", "was closed");
    expect(vnpuProgramLoad(p2, argv[1], &r2), VNPU_ERROR_INVALID_HANDLE, "load on a closed platform", "was closed");

    /* the library still works: the program on a new platform gives the same bytes */
    vnpuPlatform p3;
    vnpuProgram r3;
    OK(vnpuPlatformOpenCards("tiny", 3, &p3));
    OK(vnpuProgramLoad(p3, argv[1], &r3));
    poison();
    OK(vnpuProgramRun(r3, inputs, in_nbytes, 2, outputs, out_nbytes, 2));
    expect_true(memcmp(first_logits, logits, sizeof logits) == 0 &&
                memcmp(first_features, features, sizeof features) == 0, "the same outputs on a new platform");
    OK(vnpuProgramUnload(r3));
    OK(vnpuPlatformClose(p3));
    OK(vnpuPlatformClose(p1));
    printf("misuse: %d checks, %d failures\n", checks, failures);
    return failures != 0;
}
"""


@pytest.fixture(scope="module")
def libdir(tmp_path_factory):
    out = tmp_path_factory.mktemp("capi-program")
    build(out)
    return out


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "cnn_head.py"
    path.write_text(MODEL_PY)
    return path


@pytest.fixture(scope="module")
def program_file(tmp_path_factory, model_file):
    """cnn_head compiled for two tiny cards (pipeline, fp32), saved; its example inputs."""
    graph, inputs = runpy.run_path(str(model_file))["model"]()
    prog = vnpu.compile(graph, inputs, cards=2, dtype="fp32", strategy="pipeline",
                        platform=vnpu.Platform(card="tiny", cards=2))
    assert prog.placement.cards == 2 and len(set(prog.placement.stage)) == 2
    path = tmp_path_factory.mktemp("program") / "cnn_head.vnpp"
    prog.save(path)
    return path, inputs


def python_outputs(path, inputs, card, cards):
    """Program.run of the saved program in this process (vnpu.runtime.graph.bundle.load_program)."""
    from vnpu.runtime.graph.bundle import load_program
    platform = vnpu.Platform(card=card, cards=cards) if card else vnpu.Platform()
    prog = load_program(path, platform=platform)
    outs = prog.run(*inputs)
    return list(outs) if isinstance(outs, tuple) else [outs], prog


def run_in_c(exe, path, card, cards, inputs, tmp_path):
    (tmp_path / "in.bin").write_bytes(b"".join(np.ascontiguousarray(x).tobytes() for x in inputs))
    run = subprocess.run([str(exe), str(path), card, str(cards), str(tmp_path / "in.bin"),
                          str(tmp_path / "out.bin")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "run: OK" in run.stdout, run.stdout + run.stderr
    return run.stdout, (tmp_path / "out.bin").read_bytes()


def test_a_c_program_loads_describes_and_runs_a_saved_program_bitwise_as_python(libdir, program_file, tmp_path):
    path, inputs = program_file
    exe = compile_c(libdir, tmp_path, "run_program", RUN_C)
    stdout, got = run_in_c(exe, path, "tiny", 2, inputs, tmp_path)
    want, prog = python_outputs(path, inputs, "tiny", 2)
    lines = stdout.splitlines()
    assert lines[:4] == ["input 0 image float32 [1,3,8,8] 768", "input 1 shift float32 [1,10] 40",
                         "output 0 logits float32 [1,10] 40", "output 1 conv float32 [1,4,8,8] 1024"], stdout
    assert got == b"".join(w.tobytes() for w in want)             # bitwise
    latency = float(lines[4].split()[1])
    assert latency > 0 and latency == prog.profile().latencies_ns()[0]


def docs_example():
    text = (ROOT / "docs/c-api.md").read_text()
    section = text[text.index("## Running a compiled model"):]
    return re.search(r"```c\n(.*?)```", section, re.S).group(1)


def test_the_docs_example_runs_a_program_made_by_vnpu_compile_on_the_default_platform(libdir, model_file,
                                                                                       tmp_path):
    """docs/c-api.md's path: `vnpu compile model.py:model -o model.vnpp`, then its C example on
    vnpuPlatformOpen(NULL)'s cards (six reference cards; the program takes the first two). Its outputs are
    Program.run's for the same inputs, printed exactly (%.9g gives back the float32)."""
    path = tmp_path / "model.vnpp"
    done = subprocess.run([sys.executable, "-m", "vnpu", "compile", f"{model_file}:model", "-o", str(path),
                           "--cards", "2", "--dtype", "fp32", "--strategy", "pipeline"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "pipeline on 2 card(s)" in done.stdout, done.stdout + done.stderr
    exe = compile_c(libdir, tmp_path, "run_model", docs_example())
    run = subprocess.run([str(exe), str(path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "input image [1 x 3 x 8 x 8] dtype 0, 768 bytes" in run.stdout
    assert "output conv [1 x 4 x 8 x 8] dtype 0, 1024 bytes" in run.stdout
    assert re.search(r"latency [0-9.]+ us \(modeled\)", run.stdout)
    inputs = [((np.arange(np.prod(s)) % 7) * 0.25 - 0.75).astype(np.float32).reshape(s) for s in
              [(1, 3, 8, 8), (1, 10)]]
    want, _ = python_outputs(path, inputs, None, None)
    printed = dict(line.split(":", 1) for line in run.stdout.splitlines() if line.startswith(("logits:", "conv:")))
    for name, w in zip(["logits", "conv"], want):
        got = np.array([float(v) for v in printed[name].split()], np.float32)
        assert got.tobytes() == w.reshape(-1)[:8].tobytes(), (name, got, w.reshape(-1)[:8])


def test_the_header_and_the_library_agree_on_the_version_and_the_dtypes():
    header = HEADER.read_text()
    assert int(re.search(r"#define VNPU_API_VERSION (\d+)", header).group(1)) == API_VERSION == 3
    enum = {n.lower(): int(v) for n, v in re.findall(r"VNPU_DTYPE_(\w+) = (\d+)", header)}
    assert enum == DTYPE_CODES
    assert int(re.search(r"#define VNPU_MAX_DIMS (\d+)", header).group(1)) == 8


def test_misuse_from_c_is_a_status_and_a_message_never_a_crash(libdir, program_file, tmp_path):
    path, _ = program_file
    exe = compile_c(libdir, tmp_path, "program_misuse", MISUSE_C)
    (tmp_path / "notes.txt").write_text("not a program\n")
    with zipfile.ZipFile(tmp_path / "broken.vnpp", "w") as z:     # the right format tag, nothing else
        z.writestr("program.json", '{"format": "vnpu-program", "version": 1}')
    (tmp_path / "folder.vnpp").mkdir()
    run = subprocess.run([str(exe), str(path), str(tmp_path / "notes.txt"), str(tmp_path / "broken.vnpp"),
                          str(tmp_path / "folder.vnpp")], capture_output=True, text=True, timeout=300)
    fails = [line for line in run.stdout.splitlines() if line.startswith("FAIL")]
    assert run.returncode == 0 and not fails, "\n".join(fails) + run.stdout[-3000:] + run.stderr[-3000:]
    assert "misuse: " in run.stdout and " 0 failures" in run.stdout
    assert "VNPU_ERROR_INTERNAL" not in run.stdout


ABI = """
import sys, threading
import numpy as np
import cffi
ffi = cffi.FFI(); ffi.cdef({decls!r})
lib = ffi.dlopen({lib!r})
from vnpu.runtime.graph.bundle import load_program
import vnpu
def msg(): return ffi.string(lib.vnpuGetLastErrorMessage()).decode()
def ok(status):
    assert status == 0, msg()
"""


def test_through_cffi_threads_share_a_program_and_each_gets_its_own_outputs(libdir, program_file):
    """Two threads run one program handle with different inputs, a third runs a second program on another
    platform; every result is Program.run's, bit for bit. The tensor names are stable pointers."""
    path, inputs = program_file
    script = ABI.format(decls=declarations(), lib=str(libdir / "libvnpu.so")) + textwrap.dedent(f"""
        p = ffi.new("vnpuPlatform *"); ok(lib.vnpuPlatformOpenCards(b"tiny", 2, p))
        r = ffi.new("vnpuProgram *"); ok(lib.vnpuProgramLoad(p[0], {str(path).encode()!r}, r))
        info = ffi.new("vnpuTensorInfo *")
        ok(lib.vnpuProgramGetOutputInfo(r[0], 1, info))
        name = info.name
        ok(lib.vnpuProgramGetOutputInfo(r[0], 1, info))
        assert info.name == name and ffi.string(info.name) == b"conv" and list(info.dims) == [1, 4, 8, 8, 0, 0, 0, 0]
        p2 = ffi.new("vnpuPlatform *"); ok(lib.vnpuPlatformOpenCards(b"tiny", 2, p2))
        r2 = ffi.new("vnpuProgram *"); ok(lib.vnpuProgramLoad(p2[0], {str(path).encode()!r}, r2))
        py = load_program({str(path)!r}, platform=vnpu.Platform(card="tiny", cards=2))
        rng = np.random.default_rng(1)
        cases = [[rng.standard_normal((1, 3, 8, 8)).astype(np.float32), rng.standard_normal((1, 10)).astype(np.float32)]
                 for _ in range(3)]
        want = [[np.asarray(o) for o in py.run(*xs)] for xs in cases]
        errors = []
        def serve(handle, k, rounds=4):
            try:
                xs = cases[k]
                outs = [np.full((1, 10), np.nan, np.float32), np.full((1, 4, 8, 8), np.nan, np.float32)]
                ins = ffi.new("void *[2]", [ffi.from_buffer(x) for x in xs])
                in_n = ffi.new("size_t[2]", [x.nbytes for x in xs])
                outp = ffi.new("void *[2]", [ffi.from_buffer(o) for o in outs])
                out_n = ffi.new("size_t[2]", [o.nbytes for o in outs])
                ns = ffi.new("double *")
                for _ in range(rounds):
                    ok(lib.vnpuProgramRun(handle, ins, in_n, 2, outp, out_n, 2))
                    assert all(o.tobytes() == w.tobytes() for o, w in zip(outs, want[k])), k
                    ok(lib.vnpuProgramGetLatencyNs(handle, ns)); assert ns[0] > 0
            except BaseException as e:
                errors.append(e)
        ts = [threading.Thread(target=serve, args=a) for a in ((r[0], 0), (r[0], 1), (r2[0], 2))]
        [t.start() for t in ts]; [t.join(120) for t in ts]
        assert not errors, errors
        assert not any(t.is_alive() for t in ts)
        ok(lib.vnpuProgramUnload(r[0])); ok(lib.vnpuPlatformClose(p[0])); ok(lib.vnpuPlatformClose(p2[0]))
        print("threads OK")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "threads OK" in run.stdout, run.stdout + run.stderr


def test_starting_the_library_does_not_import_the_runtime():
    """The C API's impl imports vnpu.runtime only inside vnpuProgramLoad (driver/capi/impl.py's docstring)."""
    code = ("import sys, vnpu.driver.capi.impl; "
            "print(sorted(m for m in sys.modules if m.startswith('vnpu.runtime')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stdout + run.stderr
