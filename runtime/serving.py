"""Serving: requests arrive, run as batches, and come back with modeled latency; every output is checked against
the numpy model. Two paths with one report: `serve_compiled` / `serve_one_compiled` serve a program of the model
compiler (what `vnpu demo` runs: the SparseNN strategy), `serve` / `serve_one` the recommendation runtime's own
executor. Under injected faults, requests run one by one under a fault policy: "retry" resets the faulted card,
reloads its share of the model and runs the request again; "fail" reports the typed error; a lost card's tables
move to the cards alive (Program.relocate, Executor.lose).
"""
from __future__ import annotations

import math

import numpy as np

from vnpu.errors import DeviceFault, DeviceLost, InvalidArgument

from .executor import Executor
from .model import DLRM

POLICIES = ("retry", "fail")


def percentile(values, q):
    """The nearest-rank q-th percentile of `values` (q in 0..100)."""
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(math.ceil(q / 100 * len(v))) - 1))]


def _sync_all(ex):
    for q in [q for qs in ex.queues for q in qs]:
        q.synchronize()


def serve_one(ex: Executor, r, dense, lookups, arrival_ns=0.0, policy="retry", max_retries=1):
    """Run request r to completion on executor `ex`, surviving device faults by `policy`: "retry" resets the
    faulted card, reloads its share of the model and runs the request again (up to max_retries); "fail"
    reports the error (and leaves the faulted cards reset and reloaded for the next request). A lost card
    (link down) cannot be reset: its tables move to the other cards and the request runs again there.
    Returns (status "ok" | "retried" | "failed", output or None, start event or None, end event or None,
    error or None)."""
    if policy not in POLICIES:
        raise InvalidArgument(f"fault policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    attempts = 0
    while True:
        try:
            out, start, end = ex.submit(r, dense, lookups, arrival_ns)
            for i in ex.alive:
                ex.queues[i][r % ex.inflight].synchronize()   # surfaces faults reported asynchronously
            return ("retried" if attempts else "ok"), out, start, end, None
        except DeviceLost as e:
            ex.drop_temps()
            lost = [i for i in ex.alive if ex.devices[i].is_lost]
            for i in lost:
                ex.lose(i)
            if policy != "retry" or attempts >= max_retries or not lost:
                return "failed", None, None, None, e
            attempts += 1
        except DeviceFault as e:
            ex.drop_temps()
            faulted = [i for i, d in enumerate(ex.devices) if d.fault is not None]
            for i in faulted:                       # reset either way: the cards stay usable for what follows
                ex.devices[i].reset()
                ex.load_card(i)
            if policy != "retry" or attempts >= max_retries or not faulted:
                return "failed", None, None, None, e
            attempts += 1


def _check(model, out, dense, lookups):
    """The largest |card - numpy| of one request's scores."""
    return float(np.abs(out - model.reference(dense, lookups)).max())


def _serve_with_faults(platform, model, batch, requests, route, seed, policy, progress):
    ex = Executor(platform, model, batch, inflight=1, route=route)
    rng = np.random.default_rng(seed)

    def run_one(r):
        dense, lookups = model.make_request(batch, rng)
        status, out, start, end, err = serve_one(ex, r, dense, lookups, policy=policy)
        if out is None:
            return status, err, None, []
        return status, err, _check(model, out, dense, lookups), [end.time_ns - start.time_ns]
    report = _faults_report(platform, batch, requests, route, policy, 1e-3, progress, run_one)
    ex.unload()                 # the tables leave the cards: the next run loads its own copy
    return report


def _faults_report(platform, batch, requests, route, policy, tolerance, progress, run_one):
    """Requests one by one under a fault policy, counted: run_one(r) -> (status "ok" | "retried" | "failed", error
    or None, the output's largest error against numpy or None, latencies in ns)."""
    outcomes, errors, lat, wrong, max_err = {"ok": 0, "retried": 0, "failed": 0}, {}, [], 0, 0.0
    for r in range(requests):
        status, err, e, latencies = run_one(r)
        outcomes[status] += 1
        if err is not None:
            errors[type(err).__name__] = errors.get(type(err).__name__, 0) + 1
        if e is not None:
            max_err = max(max_err, e)
            wrong += e > tolerance
            lat.extend(latencies)
        if progress:
            progress(r + 1, requests)
    return {"batch": batch, "requests": requests, "route": route, "fault_policy": policy,
            "completed": outcomes["ok"] + outcomes["retried"], "retried": outcomes["retried"],
            "failed": outcomes["failed"], "errors": errors, "wrong_outputs": wrong, "max_abs_error": max_err,
            "latency_p50_us": percentile(lat, 50) / 1e3 if lat else None,
            "latency_p99_us": percentile(lat, 99) / 1e3 if lat else None,
            "health": [d.health() for d in platform.devices]}


def serve(platform, model: DLRM, batch, requests=16, inflight=4, route="p2p", seed=1, trace=False, progress=None,
          fault_policy="retry"):
    """Serve `requests` requests of `batch` samples; arrivals keep about `inflight` in flight. Returns a
    report: latency p50/p99 (virtual), throughput, every output checked against the numpy model. When
    faults are injected into a card, requests run one by one under `fault_policy` (serve_one) and the
    report counts completed, retried and failed requests."""
    if fault_policy not in POLICIES:
        raise InvalidArgument(f"fault policy must be one of {', '.join(POLICIES)}, got {fault_policy!r}")
    if any(d.faults is not None and d.faults.active for d in platform.devices):
        return _serve_with_faults(platform, model, batch, requests, route, seed, fault_policy, progress)
    ex = Executor(platform, model, batch, inflight=inflight, route=route)
    _fresh_figures(platform)
    if trace:
        platform.start_trace()
    rng = np.random.default_rng(seed)
    reqs = [model.make_request(batch, rng) for _ in range(requests)]
    # calibrate the arrival interval on one request served alone
    out, s, e = ex.submit(0, *reqs[0])
    single = e.time_ns - s.time_ns
    _sync_all(ex)
    base = platform.host_ns
    interval = single / inflight
    results = []
    for r, (dense, lookups) in enumerate(reqs):
        out, s, e = ex.submit(r, dense, lookups, arrival_ns=base + r * interval)
        results.append((base + r * interval, e.time_ns, out, dense, lookups))
        if progress:
            progress(r + 1, requests)
    _sync_all(ex)
    if trace:
        platform.stop_trace()
    errs = [_check(model, out, dense, lookups) for _, _, out, dense, lookups in results]
    max_err, wrong = max(errs), sum(e > 1e-3 for e in errs)
    lat = [end - arrival for arrival, end, *_ in results]
    span = max(end for _, end, *_ in results) - results[0][0]
    report = {"batch": batch, "requests": requests, "route": route, "single_request_us": single / 1e3,
              "latency_p50_us": percentile(lat, 50) / 1e3, "latency_p99_us": percentile(lat, 99) / 1e3,
              "throughput_samples_per_s": requests * batch / (span / 1e9), "max_abs_error": max_err,
              "wrong_outputs": wrong, **platform_figures(platform, span, ex.placement.tables_on)}
    ex.unload()                 # the tables leave the cards: the next run loads its own copy
    return report


def _fresh_figures(platform):
    """The figures start from an idle platform at virtual time 0 (loading the model is not part of them)."""
    platform.reset_clock()
    for d in platform.devices:
        d.stats.reset()
    platform.switch.reset()


def platform_figures(platform, span_ns, tables_on):
    """Where a run's time went, from the cards' statistics since the last reset: card time per kernel, each
    card's tables (`tables_on(card)`), unit utilization over the run's span and bytes, PCIe bytes per link."""
    kernels = {}
    for d in platform.devices:
        for name, (n, ns) in d.stats.kernels.items():
            k = kernels.setdefault(name, [0, 0.0])
            k[0] += n
            k[1] += ns
    cards = []
    for d in platform.devices:
        cyc = span_ns * d.config.clock_ghz
        cards.append({"card": d.index, "tables": tables_on(d.index),
                      "utilization": {u: d.stats.busy[u] / (cyc * (1 if u == "embedding" else d.config.pes)
                                                            * (d.config.dma.engines_per_pe if u == "dma" else 1))
                                      for u in d.stats.UNITS},
                      "bytes": dict(d.stats.bytes)})
    return {"kernel_time_us": {k: v[1] / 1e3 for k, v in kernels.items()}, "cards": cards,
            "pcie_bytes": platform.switch.bytes_moved(), "span_us": span_ns / 1e3}


def serve_compiled(platform, program, graph, batch, requests=16, inflight=4, route="p2p", seed=1, trace=False,
                   tolerance=1e-2, progress=None, fault_policy="retry"):
    """Serve `requests` requests of `batch` samples through a compiled program (vnpu.compile; the SparseNN
    strategy for a recommendation model: tables sharded over the cards by bytes, the dense part replicated),
    `inflight` in flight (closed loop). Inputs are models.example_inputs of `graph` (the model before
    compilation) with seeds seed, seed + 1, ...; every output is compared with the graph's float32 numpy
    meaning (run_host) and counted wrong beyond `tolerance` (absolute: the compute dtype's rounding). Returns
    the report `serve` returns, the same keys. With faults injected into a card, requests run one by one under
    `fault_policy` (serve_one_compiled) and the report counts completed, retried and failed requests."""
    from .graph.interp import run_host
    from .graph.models import example_inputs
    from .graph.program import TABLE_OPS
    if fault_policy not in POLICIES:
        raise InvalidArgument(f"fault policy must be one of {', '.join(POLICIES)}, got {fault_policy!r}")
    if any(d.faults is not None and d.faults.active for d in platform.devices):
        return _serve_compiled_with_faults(platform, program, graph, batch, requests, seed, fault_policy, tolerance,
                                           progress)
    _fresh_figures(platform)
    if trace:
        platform.start_trace()
    reqs = [example_inputs(graph, seed=seed + r) for r in range(requests)]
    outs = program.serve(reqs, inflight=inflight, route=route)
    if trace:
        platform.stop_trace()
    if progress:
        progress(requests, requests)
    errs = [float(np.max(np.abs(o[0].astype(np.float64) - run_host(graph, r)[0]))) for o, r in zip(outs, reqs)]
    prof = program.profile()
    lat = sorted(prof.latencies_ns())
    span = prof.makespan_ns
    stage, names = program.placement.stage, program.graph.nodes
    dev = program.device_map

    def tables_on(card):      # a built-in DLRM's tables by number (emb_l.3 -> 3), others by node name
        tail = [n.name.rsplit(".", 1)[-1] for n, st in zip(names, stage)
                if n.op in TABLE_OPS and st is not None and dev[st] == card]
        return [int(t) if t.isdigit() else t for t in tail]
    return {"batch": batch, "requests": requests, "route": route, "inflight": inflight,
            "latency_p50_us": percentile(lat, 50) / 1e3, "latency_p99_us": percentile(lat, 99) / 1e3,
            "throughput_samples_per_s": requests * batch / (span / 1e9), "max_abs_error": max(errs),
            "wrong_outputs": sum(e > tolerance for e in errs), "tolerance": tolerance,
            "energy_mj_per_request": prof.energy_j * 1e3 / requests,
            "energy_with_idle_mj_per_request": prof.energy_with_idle_j * 1e3 / requests,
            "samples_per_j": requests * batch / prof.energy_j if prof.energy_j else None,
            **platform_figures(platform, span, tables_on)}


def serve_one_compiled(program, inputs, policy="retry", max_retries=1):
    """Run one request through a compiled program, surviving device faults by `policy`, as `serve_one` does for
    the recommendation runtime: "retry" resets the faulted cards (their resident tables are pinned again by the
    next serve) and runs the request again, up to max_retries; a lost card (link down) cannot be reset: the
    program is placed again over the cards alive (`Program.relocate`) and the request runs there; "fail" reports
    the error (the faulted cards are reset either way, usable for what follows). Returns (status "ok" |
    "retried" | "failed", outputs or None, error or None)."""
    if policy not in POLICIES:
        raise InvalidArgument(f"fault policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    attempts = 0
    while True:
        try:
            outs = program.serve([inputs], inflight=1)[0]
            return ("retried" if attempts else "ok"), outs, None
        except DeviceLost as e:
            lost = [d for d in program.devices if d.is_lost]
            for d in program.platform.devices:
                if not d.is_lost and d.fault is not None:
                    d.reset()
            try:
                if lost:
                    program.relocate()       # either way: the requests that follow run on the cards left
            except DeviceLost as gone:
                return "failed", None, gone
            if policy != "retry" or attempts >= max_retries or not lost:
                return "failed", None, e
            attempts += 1
        except DeviceFault as e:
            faulted = [d for d in program.platform.devices if d.fault is not None and not d.is_lost]
            for d in faulted:
                d.reset()
            if policy != "retry" or attempts >= max_retries or not faulted:
                return "failed", None, e
            attempts += 1


def _serve_compiled_with_faults(platform, program, graph, batch, requests, seed, policy, tolerance, progress):
    from .graph.interp import run_host
    from .graph.models import example_inputs

    def run_one(r):
        req = example_inputs(graph, seed=seed + r)
        status, outs, err = serve_one_compiled(program, req, policy)
        if outs is None:
            return status, err, None, []
        e = float(np.max(np.abs(outs[0].astype(np.float64) - run_host(graph, req)[0])))
        return status, err, e, program.profile().latencies_ns()
    report = _faults_report(platform, batch, requests, "p2p", policy, tolerance, progress, run_one)
    return {**report, "tolerance": tolerance, "cards_serving": [d.index for d in program.devices]}
