"""Driver figures (printed, not asserted): opening the default six-card platform (time, host memory), and
launches on two cards from two host threads against the same launches one after another (the Numba core
releases the GIL, so cards run in parallel on the host's cores).

    python benchmarks/bench_driver.py [--json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

OPEN = ("import time, resource; t=time.perf_counter(); import vnpu; t1=time.perf_counter(); p=vnpu.Platform(); "
        "t2=time.perf_counter(); print(t1-t, t2-t1, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss*1024)")

SPIN = """
.kernel spin
.arg n, scalar, i64
    mov r5, n
top:
    addi r6, r6, 1
    loop r5, top
    halt
"""


def bench_open():
    subprocess.run([sys.executable, "-c", OPEN], check=True, capture_output=True)   # warm the caches
    out = subprocess.run([sys.executable, "-c", OPEN], check=True, capture_output=True, text=True).stdout.split()
    return {"import_s": float(out[0]), "open_six_cards_s": float(out[1]), "process_peak_rss_mb": int(out[2]) / 2**20}


def bench_parallel(n=20_000_000):
    import vnpu
    p = vnpu.Platform(card="tiny", cards=2, card_overrides={"watchdog_cycles": 1 << 40})
    image = vnpu.assemble(SPIN)
    kernels = [(d.queue(), d.load(image)["spin"]) for d in p.devices]
    for q, k in kernels:
        q.launch(k, 1000, pes=[0])

    def one(i):
        q, k = kernels[i]
        q.launch(k, n, pes=[0])
        q.synchronize()

    t = time.perf_counter()
    one(0)
    one(1)
    serial = time.perf_counter() - t
    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    parallel = time.perf_counter() - t
    return {"serial_s": serial, "two_threads_s": parallel, "speedup": serial / parallel}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    r = {"open": bench_open(), "parallel_launches": bench_parallel()}
    if a.json:
        print(json.dumps(r, indent=2))
    else:
        o, pl = r["open"], r["parallel_launches"]
        print(f"open the default platform (6 reference cards): {o['open_six_cards_s'] * 1e3:.0f} ms after a "
              f"{o['import_s']:.2f} s import; process peak RSS {o['process_peak_rss_mb']:.0f} MB")
        print(f"two cards, two threads: {pl['two_threads_s']:.2f} s vs {pl['serial_s']:.2f} s one after another "
              f"({pl['speedup']:.2f}x)")
    return r


if __name__ == "__main__":
    main()
