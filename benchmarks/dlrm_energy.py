"""Where a DLRM request's energy goes (docs/power.md): RM1 compiled onto the six cards with the SparseNN
strategy (tables sharded by bytes, the dense part replicated), a few requests served; the cards' energy per op
family from each launch's counts (emulator/power.py) and the PCIe energy of every byte the requests moved
(inputs host to card, pooled rows card to card through the switch, scores back).

    python benchmarks/dlrm_energy.py [--batch 64] [--rows-scale 0.01] [--requests 6]
"""
import argparse

import vnpu
from vnpu.emulator import power
from vnpu.runtime.graph import models

FAMILY = {"embedding_bag": "embedding lookups", "linear": "dense MLPs", "dot_interaction": "interaction",
          "cat": "data movement", "reshape": "data movement", "sigmoid": "dense MLPs"}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rows-scale", type=float, default=0.01)
    p.add_argument("--requests", type=int, default=6)
    a = p.parse_args()
    g = models.build("rm1", batch=a.batch, rows_scale=a.rows_scale)
    reqs = [models.example_inputs(g, batch=a.batch, seed=s) for s in range(a.requests)]
    prog = vnpu.compile(g, reqs[0], cards=6, dtype="fp32", strategy="sparsenn", check=False)
    prog.serve(reqs, inflight=6)
    prof = prog.profile()
    cfg = prog.platform.devices[0].config
    parts = {}
    for r in prof.records:
        k = FAMILY.get(r.op, r.op)
        parts[k] = parts.get(k, 0.0) + r.energy_j
    moved = {kind: sum(t["bytes"] for t in prof.transfers if t["kind"] == kind) for kind in ("h2d", "p2p", "d2h")}
    # a p2p copy crosses two links (card to switch, switch to card): priced twice
    parts["PCIe (inputs, pooled rows, scores)"] = power.pcie_energy(cfg, moved["h2d"] + moved["d2h"]) + \
        2 * power.pcie_energy(cfg, moved["p2p"])
    total = sum(parts.values())
    print(f"RM1, batch {a.batch}, rows x {a.rows_scale}, {a.requests} requests on 6 cards (sparsenn; tables on "
          f"cards {sorted({s for s in prog.placement.stage if s is not None})}); bytes moved: {moved}")
    print("| where | energy per request (uJ) | share |")
    print("|---|---|---|")
    for k, v in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v / a.requests * 1e6:.1f} | {v / total:.0%} |")
    print(f"| total | {total / a.requests * 1e6:.1f} | |")


if __name__ == "__main__":
    main()
