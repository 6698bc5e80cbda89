"""C API overhead: build libvnpu.so (timed), run benchmarks/c/bench_capi.c, and time the same calls made
from Python on the driver in this process, so the ratio is measured in the same run.

    python benchmarks/bench_capi.py [--json]
"""
import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import vnpu
from vnpu.driver.capi import build, link_flags

HERE = Path(__file__).resolve().parent


def measure():
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        lib, _ = build(tmp)
        build_s = time.perf_counter() - t0
        exe = Path(tmp) / "bench_capi"
        cc = shutil.which("cc") or "gcc"
        subprocess.run([cc, "-O2", str(HERE / "c/bench_capi.c"), "-o", str(exe), *link_flags(lib.parent).split()],
                       check=True)
        c = json.loads(subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout)
    p = vnpu.Platform(card="tiny", cards=1)
    dev = p.devices[0]
    q = dev.queue()
    ev = q.record()
    buf = dev.alloc(4096)
    host = np.zeros(4096, np.uint8)
    n, m = 100000, 20000
    t0 = time.perf_counter()
    for _ in range(n):
        ev.query()
    t1 = time.perf_counter()
    for _ in range(m):
        q.copy_to_device(buf, host)
    t2 = time.perf_counter()
    py = {"query_per_s": n / (t1 - t0), "copy4k_per_s": m / (t2 - t1)}
    return {"build_s": build_s, "c": c, "python": py,
            "c_over_python": {k: c[k] / py[k] for k in py}}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true")
    r = measure()
    if ap.parse_args().json:
        print(json.dumps(r, indent=2))
        return
    print(f"build libvnpu.so: {r['build_s']:.2f} s; first C call (embedded Python + import vnpu): "
          f"{r['c']['first_call_s']:.2f} s")
    for k in ("query_per_s", "copy4k_per_s"):
        print(f"{k:>14}: C {r['c'][k]:>10,.0f}/s   Python {r['python'][k]:>10,.0f}/s   C/Python "
              f"{r['c_over_python'][k]:.2f}")


if __name__ == "__main__":
    main()
