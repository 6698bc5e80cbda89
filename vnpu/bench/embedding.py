"""Embedding-lookup speed and the modeled bandwidth sweep (ratios measured in one run; printed, not asserted).

    python benchmarks/bench_embedding.py [--quick] [--json]

1. Emulated lookups (the card's embedding unit, table resident in card DRAM) against a native Numba
   gather-and-pool of the same lookups on the host.
2. A sweep over row dimension (16..512) and pooling factor (1..200): the modeled GB/s of the gathered rows
   beside the DRAM peak, on the reference card.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
from numba import njit

from vnpu.emulator.card import Card
from vnpu.kernels.embedding import EmbeddingArgs, descriptor, kernel_image

from . import best_of


@njit(cache=True)
def native_int8_sum(table, dim, indices, lengths, out):
    """The host doing the same math natively: gather int8 rows, dequantize (q * scale + bias), pool in fp32."""
    pos = 0
    for b in range(len(lengths)):
        for j in range(dim):
            out[b, j] = 0.0
        for _ in range(lengths[b]):
            row = table[indices[pos]]
            scale = row[dim:dim + 4].view(np.float32)[0]
            bias = row[dim + 4:dim + 8].view(np.float32)[0]
            for j in range(dim):
                out[b, j] += np.float32(row[j]) * scale + bias
            pos += 1


class Resident:
    """A lookup whose operands stay on the card, so timing covers the launch only."""

    def __init__(self, card, args):
        self.card = card

        def put(a):
            raw = np.ascontiguousarray(a).view(np.uint8).reshape(-1)
            addr = card.alloc(max(1, raw.nbytes))
            card.write(addr, raw)
            return addr
        out = card.alloc(args.n_bags * args.dim * 4)
        self.desc = put(descriptor(args, put(args.table), put(args.indices), put(args.segments), 0, out))
        self.image = card.load(kernel_image())

    def run(self):
        return self.card.launch(self.image, "embedding_bag", (self.desc,), pes=(0,), sanitize=False)


def speed(quick):
    rng = np.random.default_rng(0)
    rows, dim, bags, pooling = (100_000, 64, 256, 80) if not quick else (20_000, 64, 128, 40)
    table = rng.standard_normal((rows, dim)).astype(np.float32)
    lengths = np.full(bags, pooling, np.int32)
    idx = rng.integers(0, rows, bags * pooling).astype(np.int32)
    args = EmbeddingArgs(table, idx, lengths=lengths, format="int8_rowwise")
    card = Card("reference")
    res = Resident(card, args)
    res.run()
    out = np.empty((bags, dim), np.float32)
    native_int8_sum(args.table, dim, idx, lengths, out)
    t_emu = best_of(res.run, 20)           # best of many: millisecond runs on a shared machine are noisy
    t_nat = best_of(lambda: native_int8_sum(args.table, dim, idx, lengths, out), 20)
    return {"rows": rows, "dim": dim, "bags": bags, "pooling": pooling, "format": "int8_rowwise",
            "emulated_s": t_emu, "native_numba_s": t_nat, "slowdown_vs_native": t_emu / t_nat,
            "emulated_lookups_per_wall_s": bags * pooling / t_emu}


def sweep(quick):
    card = Card("reference")
    rng = np.random.default_rng(1)
    rows = 50_000
    dims = [16, 64, 256, 512] if quick else [16, 32, 64, 128, 256, 512]
    poolings = [1, 20, 200] if quick else [1, 10, 50, 100, 200]
    out = []
    for fmt in ("fp32", "int8_rowwise"):
        for dim in dims:
            table = rng.standard_normal((rows, dim)).astype(np.float32)
            for pf in poolings:
                bags = max(1, 4000 // pf)
                idx = rng.integers(0, rows, bags * pf).astype(np.int32)
                args = EmbeddingArgs(table, idx, lengths=np.full(bags, pf), format=fmt)
                r = Resident(card, args).run()
                gathered = len(idx) * args.table.shape[1]
                out.append({"format": fmt, "dim": dim, "pooling": pf, "row_bytes": int(args.table.shape[1]),
                            "modeled_gbps": gathered / r.seconds / 1e9, "lookups_per_s": bags / r.seconds})
                card.reset()
    return {"dram_peak_gbps": card.config.dram.gbps, "points": out}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    result = {"speed": speed(a.quick), "sweep": sweep(a.quick)}
    if a.json:
        print(json.dumps(result, indent=2))
        return result
    s = result["speed"]
    print(f"emulated {s['bags']}x{s['pooling']} int8 lookups of dim {s['dim']}: {s['emulated_s'] * 1e3:.2f} ms, "
          f"native Numba {s['native_numba_s'] * 1e3:.2f} ms: {s['slowdown_vs_native']:.2f}x native")
    print(f"\nmodeled gather bandwidth on the reference card (DRAM peak {result['sweep']['dram_peak_gbps']} GB/s)")
    print(f"{'format':>13} {'dim':>5} {'row B':>6} {'pool':>5} {'GB/s':>7} {'lookups/s':>12}")
    for p in result["sweep"]["points"]:
        print(f"{p['format']:>13} {p['dim']:>5} {p['row_bytes']:>6} {p['pooling']:>5} {p['modeled_gbps']:>7.2f} "
              f"{p['lookups_per_s']:>12.3g}")
    return result


if __name__ == "__main__":
    main()
