"""Modeled matrix-unit utilization of the library's dense kernels (a property of their tiling and double
buffering, not of the host): DLRM-sized FC layers, int8 and fp16, on one PE and on all twelve.

    python benchmarks/bench_kernels.py [--json]
Epilogue: int8 -> per-column scale, bias, requantized to int8; fp16 -> bias and ReLU. Placement: weights
and activations in DRAM ("dram"); weights resident in the shared SRAM, as a serving runtime keeps them
("sram"); and the activations resident too, as when the previous layer's output stays on chip ("sram+act").
Utilization = matrix-unit busy cycles / (launch cycles x PEs); MAC efficiency = MACs / (peak MACs/cycle x
launch cycles x PEs).
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from vnpu.emulator.card import Card
from vnpu.kernels.dense import gemm, reference_gemm

LAYERS = [(256, 512, 256), (256, 1024, 1024), (512, 1024, 1024), (256, 2560, 1024)]   # M, K, N


PLACEMENTS = {"dram": {}, "sram": {"weights_on_chip": True},
              "sram+act": {"weights_on_chip": True, "inputs_on_chip": True}}


def measure(card, M, K, N, dtype, pes, epilogue, placement="dram"):
    rng = np.random.default_rng(0)
    if dtype == "int8":
        a = rng.integers(-128, 128, (M, K)).astype(np.int8)
        w = rng.integers(-128, 128, (K, N)).astype(np.int8)
        kw = dict(scale=np.full(N, 1e-3, np.float32), bias=np.zeros(N, np.float32), out_scale=0.05) \
            if epilogue else {}
    else:
        a = rng.standard_normal((M, K)).astype(np.float16)
        w = rng.standard_normal((K, N)).astype(np.float16)
        kw = dict(bias=np.zeros(N, np.float32), activation="relu") if epilogue else {}
    out, r = gemm(card, a, w, pes=pes, **PLACEMENTS[placement], **kw)
    if dtype == "int8" and not epilogue:
        assert np.array_equal(out, reference_gemm(a, w))
    m = card.config.matrix
    s = r.summary()
    peak = m.rows * m.cols * m.depth * len(r.pes) * (1 if dtype == "int8" else m.fp16_rate)
    return {"m": M, "k": K, "n": N, "dtype": dtype, "pes": len(r.pes), "epilogue": bool(epilogue),
            "placement": placement,
            "cycles": r.cycles, "matrix_utilization": s["units"]["matrix"]["utilization"],
            "mac_efficiency": M * K * N / (peak * r.cycles), "dma_utilization": s["units"]["dma"]["utilization"]}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    card = Card("reference")
    rows = [measure(card, M, K, N, dt, pes, epi, chip) for (M, K, N) in LAYERS for dt in ("int8", "fp16")
            for epi in (False, True) for pes in ([0], None) for chip in PLACEMENTS]
    if args.json:
        print(json.dumps(rows, indent=2))
        return rows
    print(f"{'M':>5} {'K':>5} {'N':>5} {'dtype':>5} {'epilogue':>8} {'placement':>9} {'PEs':>3} {'cycles':>9} {'matrix util':>11} "
          f"{'MAC eff':>8} {'DMA util':>8}")
    for r in rows:
        print(f"{r['m']:>5} {r['k']:>5} {r['n']:>5} {r['dtype']:>5} {str(r['epilogue']):>8} {r['placement']:>9} {r['pes']:>3} "
              f"{r['cycles']:>9} {100 * r['matrix_utilization']:>10.1f}% {100 * r['mac_efficiency']:>7.1f}% "
              f"{100 * r['dma_utilization']:>7.1f}%")
    return rows


if __name__ == "__main__":
    main()
