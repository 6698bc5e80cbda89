"""The demo as a program to read: a recommendation model compiled onto six cards and served.

    python examples/dlrm_six_cards.py
"""
import numpy as np

import vnpu
from vnpu.runtime import DLRM, preset
from vnpu.runtime.graph.interp import run_host
from vnpu.runtime.graph.models import dlrm_graph, example_inputs

platform = vnpu.Platform()                       # six reference cards behind a PCIe switch
model = DLRM(preset("rm1", rows_scale=1 / 100))  # DeepRecSys RM1, tables scaled down 100x, packed int8 rows
graph = dlrm_graph(model, batch=64)              # its graph: embedding bags, MLPs, the dot interaction

# SparseNN: each table on one card (sharded by bytes), the dense layers on every card; fp16 dense arithmetic
program = vnpu.compile(graph, cards=6, dtype="fp16", strategy="sparsenn", platform=platform)
tables = {n.name: program.placement.stage[i] for i, n in enumerate(program.graph.nodes) if n.op == "embedding_bag"}
print("tables per card:", tables)

requests = [example_inputs(graph, seed=r) for r in range(4)]   # dense features + indices and offsets per table
outputs = program.serve(requests, inflight=4)                  # four in flight: a thread per card emulates them
profile = program.profile()
for r, ((scores,), inputs, latency) in enumerate(zip(outputs, requests, profile.latencies_ns())):
    reference = run_host(graph, inputs)[0]                     # the same model in float32 numpy
    print(f"request {r}: dense card {r % 6}, {latency / 1e3:.1f} us virtual, "
          f"max |card - numpy| = {np.abs(scores - reference).max():.1e}, first scores {scores[:3].ravel()}")

print("PCIe bytes per link:", {k: v["down"] + v["up"] for k, v in platform.switch.bytes_moved().items()})
print(f"energy per request: {profile.energy_j * 1e3 / len(requests):.3f} mJ")
program.release()                                              # the tables leave the cards
