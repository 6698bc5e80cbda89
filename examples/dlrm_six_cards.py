"""The demo as a program to read: a recommendation model served on six cards.

    python examples/dlrm_six_cards.py
"""
import numpy as np

import vnpu
from vnpu.runtime import DLRM, Executor, preset

platform = vnpu.Platform()                       # six reference cards behind a PCIe switch
model = DLRM(preset("rm1", rows_scale=1 / 100))  # DeepRecSys RM1, tables scaled down 100x

# The executor shards the tables across the cards by bytes and replicates the dense layers.
executor = Executor(platform, model, batch=64)
print("tables per card:", executor.placement.table_card)

rng = np.random.default_rng(0)
for r in range(4):
    dense, lookups = model.make_request(64, rng)       # dense features + (indices, offsets) per table
    scores, start, end = executor.submit(r, dense, lookups)
    for dev in platform.devices:
        dev.synchronize()
    reference = model.reference(dense, lookups)        # the same model in numpy
    print(f"request {r}: dense card {r % 6}, {end.elapsed_ns(start) / 1e3:.1f} us virtual, "
          f"max |card - numpy| = {np.abs(scores - reference).max():.1e}, first scores {scores[:3].ravel()}")

print("PCIe bytes per link:", {k: v["down"] + v["up"] for k, v in platform.switch.bytes_moved().items()})
