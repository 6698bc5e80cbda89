"""`vnpu demo`: the main job. A DeepRecSys-shaped recommendation model served on the embedded default
platform (six cards behind a PCIe switch), every output checked against numpy, and where the time went.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time


def _bar(label):
    def progress(done, total):
        if not sys.stderr.isatty() and done != total:
            return
        width = 30
        fill = int(width * done / total)
        sys.stderr.write(f"\r{label} [{'#' * fill}{'.' * (width - fill)}] {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()
    return progress


INFLIGHT = 4               # requests in flight while serving (closed loop): the recommendation demo's load
MAX_DEMO_BATCH = 8192      # measured to work (the dense epilogue chunks tall tiles to fit a semaphore)


def parse_batches(text):
    """--batch: comma-separated batch sizes, each an integer in 1..MAX_DEMO_BATCH (at most 16 of them)."""
    from vnpu.errors import InvalidArgument
    parts = [p.strip() for p in str(text).split(",")]
    if not 1 <= len(parts) <= 16:
        raise InvalidArgument(f"--batch takes 1 to 16 comma-separated sizes, got {len(parts)}")
    out = []
    for p in parts:
        if not p.isascii() or not p.isdigit() or len(p) > 6 or not 1 <= int(p) <= MAX_DEMO_BATCH:
            raise InvalidArgument(f"--batch {text!r}: each batch size must be an integer 1..{MAX_DEMO_BATCH}, "
                                  f"got {p!r}")
        out.append(int(p))
    return tuple(out)


def run_demo(as_json=False, trace_path=None, model="rm1", full=False, batches=(16, 64, 256), requests=16,
             platform_config=None, rows_scale=None, table_format="int8_rowwise", dense_dtype="fp16",
             inject=(), fault_policy="retry"):
    import vnpu
    from vnpu.runtime import DLRM, preset
    from vnpu.runtime.graph.models import dlrm_graph, example_inputs as example
    from vnpu.runtime.serving import serve_compiled

    t0 = time.perf_counter()
    platform = vnpu.Platform.from_yaml(platform_config) if platform_config else vnpu.Platform()
    scale = 1.0 if full else (rows_scale or 1 / 100)
    trace_path = trace_path or os.path.join(tempfile.gettempdir(), "vnpu-demo-trace.json")
    # the model's weights as the runtime's DLRM makes them (fp16-valued dense layers, packed tables); the dense
    # part compiles to `dense_dtype` (int8: post-training quantization calibrated on sample requests)
    cfg = preset(model, rows_scale=scale, table_format=table_format, dense_dtype="fp16")
    m = DLRM(cfg)
    cards = len(platform.devices)
    tolerance = {"fp32": 1e-4, "fp16": 1e-2, "int8": 1e-1}[dense_dtype]   # scores in [0, 1]: rounding; int8 quantization

    def program(batch):
        """The model compiled for `batch` samples: SparseNN placement (tables sharded by bytes, dense part
        replicated). Every batch size's graph shares the model's table arrays, so the cards hold one copy."""
        g = dlrm_graph(m, batch)
        calib = [example(g, 100 + s) for s in range(4)] if dense_dtype == "int8" else None
        return g, vnpu.compile(g, cards=cards, dtype=dense_dtype, strategy="sparsenn", platform=platform,
                               calibration=calib, check=False)
    if inject:
        return _fault_demo(platform, program, cfg, batches, requests, inject, fault_policy, tolerance, as_json, t0)
    runs, via_host, programs = [], None, []
    try:
        for i, b in enumerate(batches):
            g, prog = program(b)
            programs.append(prog)
            mid = i == len(batches) // 2
            runs.append(serve_compiled(platform, prog, g, b, requests=requests, inflight=INFLIGHT, trace=mid,
                                       tolerance=tolerance, progress=None if as_json else _bar(f"batch {b:>4}")))
            if mid:
                platform.write_trace(trace_path)
                via_host = serve_compiled(platform, prog, g, b, requests=requests, inflight=INFLIGHT, route="host",
                                          tolerance=tolerance)
    finally:
        for p in programs:
            p.release()
    report = {"model": {"name": cfg.name, "tables": cfg.tables, "rows": cfg.rows, "dim": cfg.dim,
                        "pooling": cfg.pooling, "format": cfg.table_format, "dense": dense_dtype,
                        "bottom": list(cfg.bottom), "top": [m.top[0][0].shape[0]] + [w.shape[1] for w, _ in m.top],
                        "rows_scale": scale, "table_bytes": sum(m.table_bytes)},
              "platform": {"cards": cards, "card": platform.devices[0].config.data["name"],
                           "link": platform.config["link"], "uplink": platform.config["uplink"]},
              "compiled": {"strategy": "sparsenn", "dtype": dense_dtype, "ops": len(programs[0].graph.nodes)},
              "runs": runs, "route_via_host": via_host, "trace": trace_path,
              "host_memory": {"peak_rss_bytes": _peak_rss(),
                              "on_cards_bytes": sum(m.table_bytes) + cards * m.dense_bytes},
              "wall_s": time.perf_counter() - t0}
    ok = all(r["wrong_outputs"] == 0 for r in runs + [via_host])
    report["all_outputs_match_numpy"] = ok
    if as_json:
        print(json.dumps(report, indent=2, default=float))
    else:
        print(format_report(report))
    return 0 if ok else 1


def _peak_rss():
    """This process's peak resident set in bytes (None where the OS does not say)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024     # Linux counts KiB


def run_model_demo(name, batches=(1,), requests=6, as_json=False, trace_path=None, platform_config=None):
    """A built-in model (resnet50: int8, bert: fp16) compiled onto the platform's cards with vnpu.compile and
    served: latency and throughput per batch size on the virtual timeline, the outputs checked against the
    model's float32 numpy meaning, and where the time went."""

    import vnpu
    from vnpu.runtime.graph import models
    from vnpu.runtime.graph.program import compare

    t0 = time.perf_counter()
    dtype = {"resnet50": "int8", "bert": "fp16"}[name]
    trace_path = trace_path or os.path.join(tempfile.gettempdir(), f"vnpu-demo-{name}-trace.json")
    runs = []
    for i, b in enumerate(batches):
        platform = vnpu.Platform.from_yaml(platform_config) if platform_config else vnpu.Platform()
        graph = models.build(name, batch=b)
        calib = [models.example_inputs(graph, batch=b, seed=100 + s) for s in range(2)]
        prog = vnpu.compile(graph, calib[0], cards=len(platform.devices), dtype=dtype, strategy="replicate",
                            platform=platform, calibration=calib, check=False)
        reqs = [models.example_inputs(graph, batch=b, seed=s) for s in range(requests)]
        if i == 0:
            platform.start_trace()
        outs = prog.serve(reqs, inflight=len(platform.devices))
        if i == 0:
            platform.write_trace(trace_path)
        prof = prog.profile()
        checks = [compare(o, vnpu.runtime.graph.interp.run_host(graph, r)) for o, r in zip(outs[:2], reqs[:2])]
        lat = sorted(prof.latencies_ns())
        from vnpu.runtime.graph.program import _pct
        by_op = {}
        for r in prof.records:
            by_op[r.op] = by_op.get(r.op, 0.0) + (r.end_ns - r.start_ns)
        runs.append({"batch": b, "requests": requests, "latency_p50_us": _pct(lat, 50) / 1e3,
                     "latency_p99_us": _pct(lat, 99) / 1e3,
                     "throughput_items_per_s": requests * b / (prof.makespan_ns / 1e9),
                     "cosine_min": min(c[0]["cosine"] for c in checks),
                     "top1": min(c[0].get("top1", 1.0) for c in checks),
                     "max_abs_error": max(c[0]["max_abs"] for c in checks),
                     "ops": len(prog.graph.nodes), "coverage": prog.coverage().counts(),
                     "time_by_op_us": {k: v / 1e3 for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
                     "energy_mj_per_request": prof.energy_j * 1e3 / requests,
                     "items_per_j": requests * b / prof.energy_j if prof.energy_j else None,
                     "wall_s": prof.wall_s})
    report = {"model": name, "dtype": dtype, "cards": len(platform.devices), "strategy": "replicate",
              "runs": runs, "trace": trace_path, "wall_s": time.perf_counter() - t0}
    ok = all(r["cosine_min"] > 0.99 and r["coverage"]["unsupported"] == 0 for r in runs)
    report["outputs_match"] = ok
    if as_json:
        print(json.dumps(report, indent=2, default=float))
        return 0 if ok else 1
    lines = [f"{name} ({dtype}) compiled onto {report['cards']} cards, replicated (requests round robin); "
             f"{runs[0]['ops']} ops, all on the card: {runs[0]['coverage']['host'] == 0}", "",
             " batch  latency p50 (us)  p99 (us)  throughput (items/s)  mJ/request  items/J  outputs vs float32 numpy"]
    for r in runs:
        extra = f", top-1 {r['top1']:.0%}" if name == "resnet50" else ""
        lines.append(f" {r['batch']:>5}  {r['latency_p50_us']:>16.1f}  {r['latency_p99_us']:>8.1f}  "
                     f"{r['throughput_items_per_s']:>20,.1f}  {r['energy_mj_per_request']:>10.3f}  "
                     f"{r['items_per_j'] or 0:>7.1f}  cosine >= {r['cosine_min']:.5f}{extra}")
    lines += ["", f"where the time went at batch {runs[0]['batch']} (card time, all requests):"]
    tot = sum(runs[0]["time_by_op_us"].values()) or 1.0
    for k, v in list(runs[0]["time_by_op_us"].items())[:8]:
        lines.append(f"  {k:<28} {v:>12.1f} us  {100 * v / tot:5.1f}%")
    lines += ["", f"trace (open in https://ui.perfetto.dev): {trace_path}",
              f"outputs match: {ok}; wall {report['wall_s']:.1f} s (vnpu profile {name} for the per-op table)"]
    print("\n".join(lines))
    return 0 if ok else 1


def parse_injection(text):
    """CARD:key=value[,key=value...] -> (card index, settings), e.g. 2:pe_hang_rate=0.2,seed=1."""
    from vnpu.errors import ConfigError
    try:
        card, rest = text.split(":", 1)
        settings = {}
        for item in rest.split(","):
            k, v = item.split("=", 1)
            if len(v) > 64:
                raise ValueError(v)
            settings[k.strip()] = float(v) if "." in v or "e" in v.lower() else int(v)
        if len(card) > 6:
            raise ValueError(card)
        return int(card), settings
    except ValueError:
        raise ConfigError(f"--inject {text!r}: expected CARD:key=value[,key=value], e.g. 2:pe_hang_rate=0.2") \
            from None


def _fault_demo(platform, program, cfg, batches, requests, inject, policy, tolerance, as_json, t0):
    """The serving demo with faults injected into some cards: every request completes, is retried after a
    reset (or, a card lost, on the cards left), or fails with a typed error; no output is silently wrong.
    `program(batch)` compiles the model: (graph, Program)."""
    from vnpu.runtime.serving import serve_compiled
    from vnpu.errors import ConfigError
    for spec in inject:
        card, settings = parse_injection(spec)
        if not 0 <= card < len(platform.devices):
            raise ConfigError(f"--inject: no card {card} (the platform has {len(platform.devices)})")
        platform.devices[card].inject_faults(settings)
    b = batches[len(batches) // 2]
    g, prog = program(b)
    try:
        rep = serve_compiled(platform, prog, g, b, requests=requests, fault_policy=policy, tolerance=tolerance,
                             progress=None if as_json else _bar(f"batch {b:>4}"))
    finally:
        prog.release()
    rep["wall_s"] = time.perf_counter() - t0
    ok = rep["wrong_outputs"] == 0
    if as_json:
        print(json.dumps(rep, indent=2, default=float))
        return 0 if ok else 1
    print(f"{cfg.name} on {len(platform.devices)} cards with faults injected ({', '.join(inject)}), policy "
          f"{policy}, batch {b}:")
    print(f"  {rep['completed']}/{rep['requests']} requests completed ({rep['retried']} after a reset and retry), "
          f"{rep['failed']} failed with typed errors {rep['errors'] or ''}; wrong outputs: {rep['wrong_outputs']}")
    for h, d in zip(rep["health"], platform.devices):
        inj = {k: v for k, v in h["injected"].items() if v}
        if inj or h["lost"]:
            print(f"  card {d.index}: injected {inj}, corrected "
                  f"{ {k: v for k, v in h['corrected'].items() if v} }, reported "
                  f"{ {k: v for k, v in h['reported'].items() if v} }{', LOST' if h['lost'] else ''}")
    return 0 if ok else 1


def format_report(rep):
    m = rep["model"]
    lines = [f"{m['name']}: {m['tables']} tables x {m['rows']} rows x dim {m['dim']} ({m['format']}, "
             f"{m['table_bytes'] / 2**20:.1f} MiB; rows scaled by {m['rows_scale']:g}), pooling ~{m['pooling']}, "
             f"bottom MLP {m['bottom']}, top MLP {m['top']} ({m['dense']})",
             f"platform: {rep['platform']['cards']} x {rep['platform']['card']} cards, PCIe Gen"
             f"{rep['platform']['link']['gen']} x{rep['platform']['link']['lanes']}, uplink Gen"
             f"{rep['platform']['uplink']['gen']} x{rep['platform']['uplink']['lanes']}",
             "",
             ]
    c = rep.get("compiled")
    if c:
        lines[-1:-1] = [f"compiled with vnpu.compile: {c['ops']} ops, dense part {c['dtype']}, strategy {c['strategy']} "
                        f"(tables sharded over the cards by bytes, the dense part on every card), "
                        f"{rep['runs'][0].get('inflight', 4)} requests in flight"]
    lines.append(" batch  latency p50 (us)  p99 (us)  throughput (samples/s)  mJ/request  outputs vs float32 numpy")
    for r in rep["runs"]:
        tol = f"within {r['tolerance']:g}" if "tolerance" in r else "match"
        energy = f"{r['energy_mj_per_request']:>10.3f}" if r.get("energy_mj_per_request") is not None else " " * 10
        lines.append(f" {r['batch']:>5}  {r['latency_p50_us']:>16.1f}  {r['latency_p99_us']:>8.1f}  "
                     f"{r['throughput_samples_per_s']:>22,.0f}  {energy}  {r['requests'] - r['wrong_outputs']}/"
                     f"{r['requests']} {tol} (max error {r['max_abs_error']:.1e})")
    mid = rep["runs"][len(rep["runs"]) // 2]
    lines += ["", f"where the time went at batch {mid['batch']} (card-time summed over the six cards):"]
    total = sum(mid["kernel_time_us"].values())
    for k, v in sorted(mid["kernel_time_us"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {k:<14} {v:>10.1f} us  {100 * v / total:5.1f}%")
    lines += ["", " card  tables      pe   matrix  vector   dma  embedding   DRAM read (MiB)"]
    for c in mid["cards"]:
        u = c["utilization"]
        lines.append(f" {c['card']:>4}  {','.join(map(str, c['tables'])):<9} {100 * u['pe']:5.1f}% {100 * u['matrix']:6.1f}% "
                     f"{100 * u['vector']:6.1f}% {100 * u['dma']:5.1f}% {100 * u['embedding']:8.1f}%   "
                     f"{c['bytes']['dram_read'] / 2**20:10.1f}")
    lines += ["", " PCIe link   down (MiB)   up (MiB)"]
    for name, b in mid["pcie_bytes"].items():
        lines.append(f" {name:<9} {b['down'] / 2**20:12.2f} {b['up'] / 2**20:10.2f}")
    h = rep["route_via_host"]
    lines += ["", f"card-to-card (p2p through the switch) vs through the host, batch {h['batch']}: latency p50 "
                  f"{mid['latency_p50_us']:.1f} vs {h['latency_p50_us']:.1f} us, throughput "
                  f"{mid['throughput_samples_per_s']:,.0f} vs {h['throughput_samples_per_s']:,.0f} samples/s; "
                  f"uplink bytes {sum(mid['pcie_bytes']['uplink'].values()) / 2**20:.2f} vs "
                  f"{sum(h['pcie_bytes']['uplink'].values()) / 2**20:.2f} MiB",
              f"trace (open in https://ui.perfetto.dev): {rep['trace']}"]
    hm = rep.get("host_memory") or {}
    if hm.get("peak_rss_bytes"):
        lines.append(f"host memory: {hm['peak_rss_bytes'] / 1e9:.2f} GB peak resident, for "
                     f"{hm['on_cards_bytes'] / 1e9:.3f} GB of tables and weights on the cards (docs/serving.md)")
    lines.append(f"all outputs match numpy: {rep['all_outputs_match_numpy']}; wall {rep['wall_s']:.1f} s")
    return "\n".join(lines)
