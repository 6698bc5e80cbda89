"""`vnpu bench [--quick] [--json] [--markdown]`: speed (ratios measured in this run, printed) and fidelity
(deterministic virtual-time figures from vnpu.validation, each checked against its bound: exit 1 when one
is outside)."""
from __future__ import annotations

import json
import os
import platform as host_platform
import sys
import time

from vnpu.cli import extra_command


def run_bench(quick=False, progress=None):
    from vnpu import validation

    from . import emulator, embedding, language, serving
    steps = [
        ("speed.emulator", lambda: emulator.bench_control(quick)),
        ("speed.matmul", lambda: emulator.bench_matmul(quick)),
        ("speed.embedding", lambda: embedding.speed(quick)),
        ("speed.dlrm", lambda: serving.bench_dlrm(quick)),
        ("speed.memory", serving.bench_memory),
        ("speed.start", lambda: emulator.bench_start(cold=not quick, one_process=not quick)),
        ("speed.language", lambda: language.compile_time(quick)),
    ] + [(f"fidelity.{name}", (lambda check: lambda: check(quick))(check))
         for name, check in validation.CHECKS.items()]
    import numba
    import numpy
    out = {"quick": quick, "host": {"cpus": os.cpu_count(), "python": host_platform.python_version(),
                                    "numpy": numpy.__version__, "numba": numba.__version__,
                                    "machine": host_platform.machine()},
           "speed": {}, "fidelity": {}}
    t0 = time.perf_counter()
    for name, fn in steps:
        if progress:
            progress(name)
        group, key = name.split(".")
        time.sleep(0.2)     # BLAS threads of the step before spin for a while; on 2 vCPUs they slow the next one
        out[group][key] = fn()
    out["wall_s"] = time.perf_counter() - t0
    out["ok"] = all(v["ok"] for v in out["fidelity"].values())
    return out


def format_text(r) -> str:
    from vnpu import validation
    s, f = r["speed"], r["fidelity"]
    c, e, d, m, st = s["emulator"], s["embedding"], s["dlrm"], s["memory"], s["start"]
    h = r["host"]
    cold = "- (skipped with --quick)" if st["cold_s"] is None else \
        f"{st['cold_s']:.1f} s ({st['cold_one_process_s']:.1f} s without the helper process)"
    lines = [f"vnpu bench{' --quick' if r['quick'] else ''}: {h['cpus']} CPUs, Python {h['python']}, "
             f"numpy {h['numpy']}, numba {h['numba']}; {r['wall_s']:.0f} s",
             "", "speed (wall clock, this run; printed, not asserted)",
             f"  emulator        {c['instructions_per_s'] / 1e6:7.0f} M instructions/s, "
             f"{c['card_cycles_per_wall_s'] / 1e6:.0f} M card cycles per wall second (scalar loop, one PE, "
             f"through the driver); {c['ratio_to_minimal']:.2f}x a minimal Numba interpreter of the same loop "
             f"({c['minimal_steps_per_s'] / 1e6:.0f} M steps/s)"]
    for dt, x in s["matmul"].items():
        lines.append(f"  matmul {dt:<8} {x['slowdown_vs_numpy']:7.2f}x numpy  ({'x'.join(map(str, x['shape']))} "
                     f"x{x['reps']} on the matrix unit)")
    lines += [f"  embedding       {e['slowdown_vs_native']:7.2f}x native Numba  ({e['bags']} bags x {e['pooling']} "
              f"{e['format']} rows of dim {e['dim']})",
              f"  DLRM demo       {d['slowdown_vs_numpy']:7.2f}x numpy  ({d['model']}, batch {d['batch']}, "
              f"{d['cards']} cards); {d['wall_per_virtual_s']:.0f} wall s per modeled second",
              f"  start           cold {cold}, warm {st['warm_s']:.2f} s (a new process's first launch, a vector "
              f"add; the process exits {st['warm_process_s'] - st['warm_s']:.2f} s later)",
              f"  host memory     {m['host_per_card_byte_untouched']:.4f} host bytes per allocated card byte, "
              f"{m['host_per_written_byte']:.3f} per written byte",
              "  kernel language compile (new Kernel, best of 3) vs its warm run: " + ", ".join(
                  f"{k} {v['compile_s'] * 1e3:.1f} ms = {v['compile_over_run']:.2f}x the run"
                  for k, v in s["language"].items()),
              "", "fidelity (virtual time, deterministic; checked against bounds)"]
    lines += validation.format_lines(f)
    return "\n".join(lines)


def format_markdown(r) -> str:
    """The tables of docs/validation.md."""
    from vnpu import validation
    return validation.format_markdown(r["fidelity"])


def cmd_bench(args):
    def progress(name):
        if not args.json:
            print(f"  running {name} ...", file=sys.stderr, flush=True)
    r = run_bench(quick=args.quick, progress=progress)
    if args.json:
        print(json.dumps(r, indent=2, default=float))
    elif args.markdown:
        print(format_markdown(r))
    else:
        print(format_text(r))
    if not r["ok"]:
        bad = [k for k, v in r["fidelity"].items() if not v["ok"]]
        print(f"vnpu bench: fidelity figures outside their bounds: {', '.join(bad)}", file=sys.stderr)
    return 0 if r["ok"] else 1


@extra_command
def register(sub):
    b = sub.add_parser("bench", help="speed ratios and fidelity figures (docs/validation.md)")
    b.add_argument("--quick", action="store_true", help="smaller problems, no cold start (what CI runs)")
    b.add_argument("--json", action="store_true")
    b.add_argument("--markdown", action="store_true", help="the fidelity tables of docs/validation.md")
    b.set_defaults(func=cmd_bench)
