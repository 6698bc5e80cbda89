"""How fast `vnpu sweep` runs on Dask, and what limits it (issue 19; docs/sweep.md section 4).

The same sweep (a library op over card configs, no cache) on a LocalCluster of 1 and then 2 single-threaded
worker processes, in the same run, repeated --repeat times (the 1- and 2-worker runs alternate, so a change in
the machine's load hits both). Per run it reports:

- points per minute: the sweep's wall time on a started cluster (the cluster's start is reported apart);
- per-point compile: the first point a worker process runs (imports, Numba loading its cached kernels, the
  kernel builders) minus a warm point's host time (the rows' `warm` and `wall_s` columns);
- CPU share: a worker's CPU seconds over its wall seconds while it ran points (`cpu_s` / `wall_s`): 1.0 means
  it had a core to itself; two workers at 0.5 are sharing one core;
- result transfer: the pickled size of a row (what a worker sends back per task);
- scheduler overhead per task: no-op tasks submitted and gathered the way the sweep does (client.submit,
  as_completed) on the same cluster: wall / tasks.

The load average (1 minute) before and after each run is printed: on a shared machine it says how many
cores the benchmark really had.

    python benchmarks/sweep_rate.py                 # 48 points of matmul 1024^3 on the reference card, 2 repeats
    python benchmarks/sweep_rate.py --repeat 3 --json
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import time

SPACE = {"matrix.rows": [16, 32, 64, 128], "matrix.cols": [16, 32, 64], "dram.gbps": [34.0, 67.2, 134.0, 268.0]}
PARAMS = {"m": 1024, "k": 1024, "n": 1024}


def noop(i):
    return i


def scheduler_overhead(client, n=400):
    """Seconds per task for n no-op tasks submitted and gathered as the sweep does."""
    from distributed import as_completed
    t0 = time.perf_counter()
    futures = [client.submit(noop, i, key=f"noop-{time.time_ns()}-{i}", pure=False) for i in range(n)]
    for f in as_completed(futures):
        f.result()
    return (time.perf_counter() - t0) / n


def one(workers, space, params, config):
    import distributed
    from vnpu.sweeps import sweep
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")
    client = distributed.Client(cluster)
    start_s = time.perf_counter() - t0
    try:
        df = sweep(space, "matmul", params, config=config, client=client, cache=None)
        wall = df.attrs["seconds"]
        overhead = scheduler_overhead(client)
    finally:
        client.close()
        cluster.close()
    if df["error"].notna().any():
        raise SystemExit(f"sweep_rate: points failed: {df['error'].dropna().unique()[:3]}")
    warm, cold = df[df["warm"]], df[~df["warm"]]
    rows = [{k: (None if v != v else v) for k, v in r.items()} for r in df.to_dict("records")]
    share = (df["cpu_s"] / df["wall_s"])
    return {"workers": workers, "points": len(df), "cluster_start_s": start_s, "sweep_s": wall,
            "points_per_min": len(df) / wall * 60, "warm_point_s": float(warm["wall_s"].mean()),
            "warm_point_cpu_s": float(warm["cpu_s"].mean()),
            "first_point_s": float(cold["wall_s"].mean()) if len(cold) else None,
            "compile_s": float(cold["wall_s"].mean() - warm["wall_s"].mean()) if len(cold) else None,
            "cpu_share": float(share[df["warm"]].mean()), "workers_used": int(df["worker"].nunique()),
            "row_bytes": statistics.mean(len(pickle.dumps(r)) for r in rows),
            "scheduler_s_per_task": overhead, "load_before": load0, "load_after": os.getloadavg()[0]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=2, help="runs of each worker count (default 2)")
    ap.add_argument("--config", default="reference")
    ap.add_argument("--quick", action="store_true", help="12 points of matmul 256^3 (a smoke run)")
    ap.add_argument("--json", action="store_true", help="every figure of every run as JSON instead of the text")
    ap.add_argument("--save", default=None, metavar="FILE.json", help="also write every figure to FILE.json")
    a = ap.parse_args(argv)
    space, params = SPACE, PARAMS
    if a.quick:
        space, params = {"matrix.rows": [16, 32, 64], "matrix.cols": [16, 32], "dram.gbps": [34.0, 67.2]}, \
            {"m": 256, "k": 256, "n": 256}
    runs = []
    for r in range(a.repeat):
        for w in (1, 2):
            res = one(w, space, params, a.config)
            res["repeat"] = r
            runs.append(res)
            if not a.json:
                print(f"run {r} workers {w}: {res['points']} points in {res['sweep_s']:.2f} s = "
                      f"{res['points_per_min']:.0f} points/min; warm point {res['warm_point_s'] * 1e3:.0f} ms "
                      f"(CPU {res['warm_point_cpu_s'] * 1e3:.0f} ms, share of a core {res['cpu_share']:.2f}); "
                      f"first point {res['first_point_s']:.2f} s (compile {res['compile_s']:.2f} s); cluster start "
                      f"{res['cluster_start_s']:.1f} s; row {res['row_bytes']:.0f} B; scheduler "
                      f"{res['scheduler_s_per_task'] * 1e3:.2f} ms/task; load {res['load_before']:.1f} -> "
                      f"{res['load_after']:.1f}", flush=True)
    summary = {}
    for w in (1, 2):
        rs = [x for x in runs if x["workers"] == w]
        summary[w] = {k: (min(x[k] for x in rs), max(x[k] for x in rs))
                      for k in ("points_per_min", "warm_point_s", "warm_point_cpu_s", "compile_s", "cpu_share",
                                "row_bytes",
                                "scheduler_s_per_task", "cluster_start_s", "load_before")}
    speedups = [b["points_per_min"] / a_["points_per_min"] for a_, b in zip(runs[0::2], runs[1::2])]
    if a.json:
        print(json.dumps({"runs": runs, "speedup_2_over_1": speedups, "cores": os.cpu_count()}, indent=1))
        return 0
    if a.save:
        with open(a.save, "w") as f:
            json.dump({"runs": runs, "speedup_2_over_1": speedups, "cores": os.cpu_count()}, f, indent=1)
    print(f"\n{runs[0]['points']} points, {a.repeat} repeats, {os.cpu_count()} cores (range over repeats):")
    for w, s in summary.items():
        print(f"  {w} worker(s): {s['points_per_min'][0]:.0f}-{s['points_per_min'][1]:.0f} points/min, warm point "
              f"{s['warm_point_s'][0] * 1e3:.0f}-{s['warm_point_s'][1] * 1e3:.0f} ms (CPU "
              f"{s['warm_point_cpu_s'][0] * 1e3:.0f}-{s['warm_point_cpu_s'][1] * 1e3:.0f} ms), CPU share "
              f"{s['cpu_share'][0]:.2f}-{s['cpu_share'][1]:.2f}, compile {s['compile_s'][0]:.2f}-"
              f"{s['compile_s'][1]:.2f} s, scheduler {s['scheduler_s_per_task'][0] * 1e3:.2f}-"
              f"{s['scheduler_s_per_task'][1] * 1e3:.2f} ms/task, row {s['row_bytes'][0]:.0f} B, load before "
              f"{s['load_before'][0]:.1f}-{s['load_before'][1]:.1f}")
    print(f"  speed-up of 2 workers over 1 (same repeat): {', '.join(f'{x:.2f}x' for x in speedups)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
