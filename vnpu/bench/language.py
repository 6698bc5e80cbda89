"""Compile time of kernel-language kernels against their run: a new Kernel object (source rewrite, trace,
register and local-memory allocation, assembly) per measurement, and the warm launch of the same kernel on
the same card. Printed by `vnpu bench` (speed.language); wall clock, never asserted."""
from __future__ import annotations

import time

import numpy as np


def _cases(quick):
    from vnpu.kernels import elementwise as E
    from vnpu.kernels import norm as N
    from vnpu.kernels.lang import Kernel
    n = 1 << (16 if quick else 20)
    rows, d = (256, 256) if quick else (2048, 1024)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n).astype(np.float32)
    xr = rng.standard_normal((rows, d)).astype(np.float32)

    def add(card):
        T = E.stream_tile(card, ["f32", "f32"], "f32")
        k = Kernel(E._binary_stream, name="add")
        args = (x, x, np.zeros_like(x), n, T, "add")
        return k, args

    def norm(kind):
        def make(card):
            blk = N.block_rows(card, d)
            k = Kernel(N._norm, name=kind)
            args = (xr, np.zeros(1, np.float32), np.zeros(1, np.float32), np.zeros_like(xr), rows,
                    float(np.float32(1.0 / d)), 1e-5, blk, kind, False, False)
            return k, args
        return make
    return {"add": add, "layer_norm": norm("layer_norm"), "softmax": norm("softmax")}


def compile_time(quick=False, config="tiny"):
    """{kernel: {compile_s, run_s, compile_over_run, cycles}}: best of three compiles of a new Kernel, best
    of three warm runs."""
    from vnpu.emulator.card import Card
    card = Card(config)
    out = {}
    for name, make in _cases(quick).items():
        comp, run = [], []
        for _ in range(3):
            k, args = make(card)
            t = time.perf_counter()
            k.compile(*args, config=card.config)
            comp.append(time.perf_counter() - t)
        k(*args, card=card, trace=False)          # the first run loads the image: not what is measured
        for _ in range(3):
            t = time.perf_counter()
            _, prof = k(*args, card=card, trace=False)
            run.append(time.perf_counter() - t)
        out[name] = {"compile_s": min(comp), "run_s": min(run), "compile_over_run": min(comp) / min(run),
                     "cycles": prof.cycles, "instructions": len(k.asm(*args, config=card.config).splitlines())}
    return out


if __name__ == "__main__":
    import json
    import sys
    print(json.dumps(compile_time("--quick" in sys.argv), indent=2))
