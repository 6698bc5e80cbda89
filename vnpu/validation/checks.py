"""How far vnpu's numbers are from their references. Virtual-time figures are deterministic, so each check
has a bound; `vnpu bench` prints them and fails when a figure falls outside its bound.

- matrix unit: mm.mul cycles against SCALE-Sim v3's compute cycles (data/scalesim_gemm.json, made by
  benchmarks/gen_scalesim_reference.py);
- PCIe: copy times through the driver against the spec arithmetic, written out here independently of
  vnpu.driver.pcie (docs/pcie.md);
- embeddings: vnpu.ops.embedding_bag against PyTorch's outputs (data/embedding_golden.*, made by
  benchmarks/gen_embedding_golden.py with PyTorch 2.13 CPU);
- peaks: library kernels on the reference card never beat the card's MAC, DRAM or unit peaks, and copies
  never beat the link's raw rate.
"""
from __future__ import annotations

import json
import math

import numpy as np

from . import DATA

MATMUL = """
.kernel k
.arg m, scalar, i32
.arg kk, scalar, i32
.arg n, scalar, i32
    li r10, 0
    mm.ldw r10, kk, n, i8, s0
    wait s0, 1
    mm.mul r10, r10, m, i8, set, s0
    wait s0, 1
    halt
"""

# PCIe facts (PCI Express Base Specification 3.0/4.0; docs/pcie.md), not read from vnpu.driver.pcie
GT_PER_S = {3: 8e9, 4: 16e9, 5: 32e9}
WRITE_TLP_OVERHEAD = 4 + 16 + 4     # STP token with sequence number + 4DW header + LCRC
CPLD_OVERHEAD = 4 + 12 + 4          # STP token + 3DW completion header + LCRC
DLLP_SHARE = 0.03                   # Ack/UpdateFC share [inferred], the card's "a few percent"
SETUP_NS = 1500.0                   # per-DMA setup, middle of the card's 1-2 us
BOUNDS = {"matrix_max_rel_error": 0.05, "pcie_max_rel_error": 0.02, "embedding_max_ulps_fp16": 1.0,
          "peak_max_fraction": 1.0}


def matrix_vs_scalesim(quick=False):
    """Every ws/os point of the SCALE-Sim table: the cycles of the mm.mul that ran (its span on the matrix
    track) against SCALE-Sim's compute cycles."""
    import vnpu
    from vnpu.emulator.card import Card
    from vnpu.isa import table as T
    data = json.loads((DATA / "scalesim_gemm.json").read_text())
    image = vnpu.assemble(MATMUL)
    rows, cards = [], {}
    for r in data["rows"]:
        if r["dataflow"] not in ("ws", "os"):
            continue
        key = (r["array_rows"], r["array_cols"], r["dataflow"])
        if key not in cards:
            cards[key] = Card("tiny", {"matrix.rows": key[0], "matrix.cols": key[1], "matrix.dataflow": key[2],
                                       "matrix.depth": 1, "local_memory.bytes": 8 << 20})
        res = cards[key].launch(image, "k", (r["M"], r["K"], r["N"]), pes=(0,), trace=True, sanitize=False)
        spans = [e for e in res.events if e[5] == T.OP_MM_MUL]
        cycles = int(spans[0][3] - spans[0][2])
        ref = r["compute_cycles"]
        rows.append({"array": f"{key[0]}x{key[1]}", "dataflow": key[2], "M": r["M"], "N": r["N"], "K": r["K"],
                     "scalesim": ref, "vnpu": cycles, "rel_error": abs(cycles - ref) / ref})
    worst = max(x["rel_error"] for x in rows)
    return {"points": len(rows), "scalesim_version": data.get("scalesim_version", "3.0.0"),
            "max_rel_error": worst, "exact": sum(x["vnpu"] == x["scalesim"] for x in rows), "rows": rows,
            "bound": BOUNDS["matrix_max_rel_error"], "ok": worst <= BOUNDS["matrix_max_rel_error"],
            "command": "python benchmarks/gen_scalesim_reference.py (SCALE-Sim v3 in its own venv, numpy<2.4)"}


def spec_copy_ns(nbytes, kind, gen=3, lanes=4, mps=256, mrrs=512):
    """The spec arithmetic of docs/pcie.md for one copy on an idle link (TLP counts rounded up)."""
    tlp_bytes_per_ns = GT_PER_S[gen] * lanes * 128 / 130 / 8 / 1e9 * (1 - DLLP_SHARE)
    if kind == "h2d":       # the card reads host memory: completions of MPS bytes carry the data down
        full, rest = divmod(nbytes, mrrs)
        cpls = full * math.ceil(mrrs / mps) + math.ceil(rest / mps)
        wire = nbytes + cpls * CPLD_OVERHEAD
    else:                   # posted writes (d2h, and card to card)
        wire = nbytes + math.ceil(nbytes / mps) * WRITE_TLP_OVERHEAD
    return SETUP_NS + wire / tlp_bytes_per_ns


def pcie_vs_spec(quick=False):
    """Copies through the driver on an idle default platform, timed with events (virtual ns), against the
    spec arithmetic; card to card goes through the switch (both links Gen3 x4, so the same formula)."""
    import vnpu
    sizes = [4 << 10, 64 << 10, 1 << 20, 16 << 20] + ([] if quick else [64 << 20])
    platform = vnpu.Platform()
    d0, d1 = platform.devices[0], platform.devices[1]
    link = platform.config["link"]
    q0, q1 = d0.queue(), d1.queue()
    rows = []
    for n in sizes:
        host = np.zeros(n, np.uint8)
        a, b = d0.alloc(n), d1.alloc(n)
        for kind in ("h2d", "d2h", "p2p"):
            q = q1 if kind == "p2p" else q0
            q.synchronize()
            start = q.record()
            if kind == "h2d":
                q.copy_to_device(a, host)
            elif kind == "d2h":
                q.copy_to_host(a, out=host)
            else:
                q.copy_peer(b, a)
            end = q.record()
            q.synchronize()
            got = end.elapsed_ns(start)
            ref = spec_copy_ns(n, kind, link["gen"], link["lanes"], link.get("max_payload", 256))
            rows.append({"bytes": n, "kind": kind, "spec_us": ref / 1e3, "vnpu_us": got / 1e3,
                         "gbps": n / got, "rel_error": abs(got - ref) / ref})
        a.free()
        b.free()
    worst = max(r["rel_error"] for r in rows)
    return {"link": f"Gen{link['gen']} x{link['lanes']}", "max_rel_error": worst, "rows": rows,
            "bound": BOUNDS["pcie_max_rel_error"], "ok": worst <= BOUNDS["pcie_max_rel_error"],
            "command": "vnpu bench --json (fidelity.pcie)"}


def golden_case(gold, case):
    """One committed PyTorch case run through vnpu.ops.embedding_bag: (vnpu's output, PyTorch's)."""
    import vnpu
    i, fmt = case["id"], case["format"]
    table = gold[f"c{i}_packed"] if f"c{i}_packed" in gold.files else gold[f"c{i}_weight"]
    psw = gold[f"c{i}_per_sample_weights"] if case["has_weights"] else None
    out = vnpu.ops.embedding_bag(table, gold[f"c{i}_indices"], offsets=gold[f"c{i}_offsets"],
                                 per_sample_weights=psw, mode=case["mode"], format=fmt,
                                 include_last_offset=case["include_last_offset"], dim=case["dim"],
                                 out_dtype="fp16" if fmt == "fp16" else "fp32")
    return out, gold[f"c{i}_out"]


def embedding_vs_pytorch(quick=False):
    """vnpu.ops.embedding_bag on every committed PyTorch case. fp16 outputs: error in fp16 ulps of the
    reference; fp32: error relative to the largest output, the accumulation-order bound of the tests."""
    gold = np.load(DATA / "embedding_golden.npz")
    meta = json.loads((DATA / "embedding_golden.json").read_text())
    rows = []
    for case in meta["cases"]:
        i, fmt = case["id"], case["format"]
        out, ref = golden_case(gold, case)
        ref = ref.astype(np.float32)
        err = np.abs(out.astype(np.float32) - ref)
        if fmt == "fp16":
            ulp = np.spacing(np.abs(ref).astype(np.float16)).astype(np.float32)
            ulp = np.maximum(ulp, np.float32(2 ** -24))
            worst_ulps = float((err / ulp).max()) if err.size else 0.0
            bound, metric = BOUNDS["embedding_max_ulps_fp16"], worst_ulps
        else:
            scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
            metric = float(err.max()) / scale if err.size else 0.0
            bound = 4e-7 * max(1, case["n_indices"]) ** 0.5 * 4
        rows.append({"case": i, "format": fmt, "mode": case["mode"], "bags": int(ref.shape[0]),
                     "max_abs_error": float(err.max()) if err.size else 0.0, "metric": metric, "bound": bound,
                     "ok": metric <= bound, "exact": bool(err.size == 0 or err.max() == 0)})
    return {"cases": len(rows), "exact": sum(r["exact"] for r in rows), "rows": rows,
            "torch_version": meta.get("torch_version", "2.13.0"), "ok": all(r["ok"] for r in rows),
            "max_fp16_ulps": max([r["metric"] for r in rows if r["format"] == "fp16"], default=0.0),
            "command": "python benchmarks/gen_embedding_golden.py (PyTorch 2.13 CPU)"}


def peak_invariants(quick=False):
    """Library kernels on the reference card, all PEs: achieved MAC rate, DRAM bandwidth and every unit's
    utilization as a fraction of the card's peak (each must be <= 1)."""
    from vnpu.emulator.card import Card
    from vnpu.kernels import elementwise
    from vnpu.kernels.dense import gemm
    from vnpu.kernels.embedding import EmbeddingArgs, run_embedding_bag
    card = Card("reference")
    rng = np.random.default_rng(0)
    M, K, N = (256, 512, 256) if quick else (256, 1024, 1024)
    runs = {}
    a8, w8 = rng.integers(-128, 128, (M, K)).astype(np.int8), rng.integers(-128, 128, (K, N)).astype(np.int8)
    runs[f"gemm int8 {M}x{K}x{N}"] = gemm(card, a8, w8)[1]
    a16, w16 = rng.standard_normal((M, K)).astype(np.float16), rng.standard_normal((K, N)).astype(np.float16)
    runs[f"gemm fp16 {M}x{K}x{N}"] = gemm(card, a16, w16)[1]
    x = rng.standard_normal(1 << 20).astype(np.float32)
    runs["add fp32 1M"] = elementwise.add(card, x, x)[1]
    table = rng.standard_normal((20000, 64)).astype(np.float32)
    idx = rng.integers(0, 20000, 256 * 40).astype(np.int32)
    runs["embedding_bag int8 256x40"] = run_embedding_bag(card, EmbeddingArgs(
        table, idx, lengths=np.full(256, 40), format="int8_rowwise"))[1]
    rows = []
    for name, r in runs.items():
        s = r.summary()
        roof = s["roofline"]
        fractions = {"macs": roof["achieved_ops_per_s"] / roof["peak_ops_per_s"],
                     "dram": roof["achieved_dram_bytes_per_s"] / roof["peak_dram_bytes_per_s"]}
        fractions.update({f"{u} util": v["utilization"] for u, v in s["units"].items()})
        rows.append({"kernel": name, "cycles": r.cycles, **fractions})
    link = _link_peak()
    worst = max(max(v for k, v in row.items() if k not in ("kernel", "cycles")) for row in rows)
    worst = max(worst, link["fraction"])
    return {"rows": rows, "link": link, "max_fraction": worst, "bound": BOUNDS["peak_max_fraction"],
            "ok": worst <= BOUNDS["peak_max_fraction"], "command": "vnpu bench --json (fidelity.peaks)"}


def _link_peak():
    """Six cards copying 16 MiB each to the host at once: the uplink's achieved rate against its raw rate,
    and the fastest single copy against a card link's raw rate."""
    import vnpu
    platform = vnpu.Platform()
    n = 16 << 20
    host = np.zeros(n, np.uint8)
    queues = [d.queue() for d in platform.devices]
    starts, ends = [], []
    bufs = [d.alloc(n) for d in platform.devices]
    for q, b in zip(queues, bufs):
        starts.append(q.record())
        q.copy_to_host(b, out=host)
        ends.append(q.record())
    span = max(e.time_ns for e in ends) - min(s.time_ns for s in starts)
    up = platform.config["uplink"]
    lk = platform.config["link"]
    raw_up = GT_PER_S[up["gen"]] * up["lanes"] * 128 / 130 / 8 / 1e9
    raw_link = GT_PER_S[lk["gen"]] * lk["lanes"] * 128 / 130 / 8 / 1e9
    single = max(n / (e.time_ns - s.time_ns) for s, e in zip(starts, ends))
    return {"uplink_gbps": 6 * n / span, "uplink_raw_gbps": raw_up, "single_gbps": single,
            "link_raw_gbps": raw_link, "fraction": max(6 * n / span / raw_up, single / raw_link)}


CHECKS = {"matrix": matrix_vs_scalesim, "pcie": pcie_vs_spec, "embedding": embedding_vs_pytorch,
          "peaks": peak_invariants}


def run(quick=False):
    """Every check: {name: report}; each report has "ok" (inside its bound)."""
    return {name: check(quick) for name, check in CHECKS.items()}
