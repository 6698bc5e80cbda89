"""What a launch did, read back from its statistics and events: a summary dict and a Chrome trace.

Both are computed from the LaunchResult of the run that produced them (the same arrays the core filled),
so the numbers in the summary, the trace on screen and the cycle count never disagree.

The Chrome trace-event JSON opens in Perfetto (ui.perfetto.dev) and chrome://tracing: one process per
card, one thread per track (a PE's scalar core, its matrix unit, its vector unit, each DMA engine, and the
card's embedding unit). Times are in microseconds, as the format requires.
"""
from __future__ import annotations

import json

from vnpu.errors import VnpuError
from vnpu.isa import table as T

from .state import (EV_AUX, EV_END, EV_KIND, EV_OP, EV_PC, EV_PE, EV_START, EV_TRACK, K_MARK, K_OP, K_RUN,
                    K_STALL_BARRIER, K_STALL_QUEUE, K_STALL_SEM, P_DMA, P_INSTR, P_ISSUE, P_MACS, P_MATRIX,
                    P_STALL_BARRIER, P_STALL_QUEUE, P_STALL_SEM, P_VECTOR, P_VOPS, S_DRAM_BUSY, S_DRAM_RD,
                    S_DRAM_WR, S_EMB_BUSY, S_EMB_LOOKUPS, S_EMB_ROWS, S_EV_DROPPED, S_LOCAL_RD, S_LOCAL_WR,
                    S_SRAM_RD, S_SRAM_WR, TRACK_DMA0, TRACK_EMB, TRACK_MATRIX, TRACK_PE, TRACK_VECTOR)


def _ratio(num, den):
    return num / den if den else 0.0


def summarize(result) -> dict:
    """The launch in numbers: time, unit utilization, bytes per memory level, stalls and a roofline point.

    Utilization is busy cycles over the cycles the unit existed for: per-PE units over cycles x PEs of the
    launch (the DMA engines over cycles x PEs x engines, since a PE's engines run in parallel and their busy
    cycles add up), the card's one embedding unit over cycles.
    """
    cfg = result.config
    ps, cs = result.pe_stats, result.card_stats
    cycles, npe = int(result.cycles), len(result.pes)
    seconds = result.seconds

    def col(c):
        return int(ps[:, c].sum()) if len(ps) else 0

    per_pe = cycles * npe
    units = {"pe": (col(P_ISSUE), per_pe), "matrix": (col(P_MATRIX), per_pe),
             "vector": (col(P_VECTOR), per_pe), "dma": (col(P_DMA), per_pe * cfg.dma.engines_per_pe),
             "embedding": (int(cs[S_EMB_BUSY]), cycles)}
    nbytes = {"dram_read": S_DRAM_RD, "dram_write": S_DRAM_WR, "sram_read": S_SRAM_RD, "sram_write": S_SRAM_WR,
              "local_read": S_LOCAL_RD, "local_write": S_LOCAL_WR}
    nbytes = {k: int(cs[c]) for k, c in nbytes.items()}
    macs = col(P_MACS)
    dram = nbytes["dram_read"] + nbytes["dram_write"]
    m = cfg.matrix
    peak_ops = 2 * m.rows * m.cols * m.depth * m.int8_rate * cfg.pes * cfg.clock_ghz * 1e9
    peak_bw = cfg.dram.gbps * 1e9
    return {
        "kernel": result.kernel,
        "engine": result.engine,
        "cycles": cycles,
        "time_us": cycles / (result.clock_ghz * 1e3),
        "pes": [int(p) for p in result.pes],
        "units": {k: {"busy_cycles": b, "utilization": _ratio(b, d)} for k, (b, d) in units.items()},
        "bytes": nbytes,
        "stalls": {"semaphore_wait": col(P_STALL_SEM), "barrier": col(P_STALL_BARRIER),
                   "dma_queue_full": col(P_STALL_QUEUE)},
        "instructions": col(P_INSTR),
        "macs": macs,
        "vector_elements": col(P_VOPS),
        "dram_busy_cycles": int(cs[S_DRAM_BUSY]),
        "embedding_lookups": int(cs[S_EMB_LOOKUPS]),
        "embedding_rows": int(cs[S_EMB_ROWS]),
        "roofline": {
            "achieved_ops_per_s": _ratio(2 * macs, seconds),
            "peak_ops_per_s": peak_ops,
            "achieved_dram_bytes_per_s": _ratio(dram, seconds),
            "peak_dram_bytes_per_s": peak_bw,
            "arithmetic_intensity": 2 * macs / dram if dram else None,
            "ridge_intensity": peak_ops / peak_bw,   # ops per DRAM byte where the roofline turns flat
        },
        "trace_events_dropped": int(cs[S_EV_DROPPED]),
    }


def _si(x, unit):
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def format_summary(d: dict) -> str:
    """A summarize() dict as an aligned text table, for a terminal."""
    lines = [f"kernel {d['kernel']} ({d['engine']}) on PE{'s' if len(d['pes']) != 1 else ''} {','.join(map(str, d['pes']))}: "
             f"{d['cycles']} cycles = {d['time_us']:.3f} us"]
    lines.append(f"  {'unit':<10}{'busy cycles':>14}{'utilization':>13}")
    for name, u in d["units"].items():
        lines.append(f"  {name:<10}{u['busy_cycles']:>14}{u['utilization']:>12.1%}")
    b = d["bytes"]
    lines.append(f"  {'memory':<10}{'read bytes':>14}{'write bytes':>13}")
    for level in ("dram", "sram", "local"):
        lines.append(f"  {level:<10}{b[level + '_read']:>14}{b[level + '_write']:>13}")
    s = d["stalls"]
    lines.append(f"  stalls: semaphore wait {s['semaphore_wait']}, barrier {s['barrier']}, "
                 f"DMA queue full {s['dma_queue_full']} (cycles, summed over PEs)")
    lines.append(f"  {d['instructions']} instructions, {d['macs']} MACs, {d['vector_elements']} vector elements, "
                 f"DRAM busy {d['dram_busy_cycles']} cycles")
    if d["embedding_lookups"]:
        lines.append(f"  embedding: {d['embedding_lookups']} lookups, {d['embedding_rows']} rows")
    r = d["roofline"]
    ai = "n/a" if r["arithmetic_intensity"] is None else f"{r['arithmetic_intensity']:.3g} ops/B"
    lines.append(f"  roofline: {_si(r['achieved_ops_per_s'], 'op/s')} of {_si(r['peak_ops_per_s'], 'op/s')}, "
                 f"DRAM {_si(r['achieved_dram_bytes_per_s'], 'B/s')} of {_si(r['peak_dram_bytes_per_s'], 'B/s')}, "
                 f"intensity {ai} (ridge {r['ridge_intensity']:.3g} ops/B)")
    if d["trace_events_dropped"]:
        lines.append(f"  warning: {d['trace_events_dropped']} trace events dropped (trace buffer full)")
    return "\n".join(lines)


# --- Chrome trace ---------------------------------------------------------------------------------------
_TRACKS_PER_PE = TRACK_DMA0 + T.NUM_ENGINES
_STALL_NAMES = {K_STALL_SEM: "wait", K_STALL_BARRIER: "barrier", K_STALL_QUEUE: "dma queue full"}


def _aux_name(track, op):
    """What an operation event's aux counts (the core stores one number per event)."""
    if track >= TRACK_DMA0:
        return "bytes"
    if track == TRACK_MATRIX:
        return "macs" if op == T.OP_MM_MUL else "weight_elements"
    return "elements" if track == TRACK_VECTOR else "indices"


def _tid(pe, track):
    """Thread id of a track; also its sort index, so Perfetto lists PE 0's tracks first, the embedding unit last."""
    if track == TRACK_EMB:
        return 1 << 20
    return 1 + pe * _TRACKS_PER_PE + track


def _track_name(pe, track):
    if track == TRACK_PE:
        return f"PE {pe}"
    if track == TRACK_MATRIX:
        return f"PE {pe} matrix"
    if track == TRACK_VECTOR:
        return f"PE {pe} vector"
    if track == TRACK_EMB:
        return "embedding unit"
    return f"PE {pe} DMA e{track - TRACK_DMA0}"


def _mnemonic(op):
    ins = T.BY_OPCODE.get(int(op))
    return ins.mnemonic if ins else f"op 0x{int(op):02x}"


def chrome_trace(result, card_name="card 0", pid=0, start_ns=0.0) -> dict:
    """The launch's events as Chrome trace-event JSON. start_ns places the launch on a longer timeline
    (the driver shifts each launch to when it ran on its card)."""
    us_per_cycle = 1.0 / (result.clock_ghz * 1e3)
    t0 = start_ns / 1e3
    tracks = [TRACK_PE, TRACK_MATRIX, TRACK_VECTOR] + [TRACK_DMA0 + e for e in range(result.config.dma.engines_per_pe)]
    names = {(pe, tr): _track_name(pe, tr) for pe in result.pes for tr in tracks}
    names[(None, TRACK_EMB)] = _track_name(None, TRACK_EMB)
    out = [{"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "ts": 0, "args": {"name": card_name}}]
    events = []
    for ev in result.events.tolist():
        track, kind, op, aux = ev[EV_TRACK], ev[EV_KIND], ev[EV_OP], ev[EV_AUX]
        pe = int(result.pes[ev[EV_PE]])
        key = (None, TRACK_EMB) if track == TRACK_EMB else (pe, track)
        names.setdefault(key, _track_name(pe, track))
        e = {"pid": pid, "tid": _tid(pe, track), "ts": round(t0 + ev[EV_START] * us_per_cycle, 6),
             "args": {"pc": ev[EV_PC]}}
        if kind == K_MARK:
            e.update(ph="i", s="t", name=f"mark {aux}")
        else:
            e.update(ph="X", dur=round((ev[EV_END] - ev[EV_START]) * us_per_cycle, 6))
            if kind == K_OP:
                e["name"] = _mnemonic(op)
                e["args"][_aux_name(track, op)] = aux
            elif kind == K_RUN:
                e["name"] = "run"
                del e["args"]["pc"]   # the core's pc for a run is where its first merged piece stopped: no help
            else:
                e["name"] = _STALL_NAMES.get(kind, f"stall {kind}")
                e["args"]["instruction"] = _mnemonic(op)
                if kind == K_STALL_SEM and op == T.OP_WAIT:
                    e["args"]["semaphore"] = aux
                elif kind == K_STALL_QUEUE:
                    e["args"]["engine"] = aux
            if track == TRACK_EMB:
                e["args"]["pe"] = pe
        events.append(e)
    for (pe, track), name in names.items():
        tid = _tid(pe, track)
        out.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "ts": 0, "args": {"name": name}})
        out.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid, "ts": 0,
                    "args": {"sort_index": tid}})
    events.sort(key=lambda e: (e["tid"], e["ts"], -e.get("dur", 0)))   # parents before the slices they contain
    return {"traceEvents": out + events, "displayTimeUnit": "ns"}


def write_chrome_trace(path, traces: list) -> None:
    """Write several chrome_trace() dicts (cards, the host) as one file; give each its own pid."""
    merged = {"traceEvents": [e for t in traces for e in t["traceEvents"]], "displayTimeUnit": "ns"}
    try:
        with open(path, "w") as f:
            json.dump(merged, f)
    except OSError as e:
        raise VnpuError(f"cannot write {path}: {e.strerror}") from None
