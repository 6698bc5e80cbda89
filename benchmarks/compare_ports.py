"""Modeled cycles of the library kernels written in the kernel language against the builder versions they
replaced (issue 15: each port within 5% of the builder's cycles, or faster), on the same inputs, with the
outputs compared bit for bit.

    python benchmarks/compare_ports.py [--quick] [--config tiny|reference ...]

The builder versions are read from git history (commit BUILDER, the last one before the ports) into a temp
folder and loaded beside the current library, so this needs a git clone of the repository.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile

import numpy as np

BUILDER = "d50c2bf"          # kernels/elementwise.py, norm.py, dense.py as builder generators
HERE = os.path.dirname(os.path.abspath(__file__))


def _old_modules():
    tmp = tempfile.mkdtemp(prefix="vnpu-builder-")
    mods = {}
    for name in ("elementwise", "norm", "dense"):
        src = subprocess.run(["git", "show", f"{BUILDER}:kernels/{name}.py"], cwd=HERE, check=True,
                             capture_output=True, text=True).stdout
        src = src.replace("from .elementwise import", "from ._builder_elementwise import")
        path = os.path.join(tmp, f"{name}.py")
        with open(path, "w") as f:
            f.write(src)
        full = f"vnpu.kernels._builder_{name}"
        spec = importlib.util.spec_from_file_location(full, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[full] = mod
        spec.loader.exec_module(mod)
        mods[name] = mod
    return mods


def cases(quick, card):
    rng = np.random.default_rng(0)
    sizes = (1000, 65536) if quick else (1000, 65536, 1_000_000)
    for n in sizes:
        x = rng.standard_normal(n).astype(np.float32)
        q = rng.integers(-128, 127, n).astype(np.int8)
        for op, args in (("add", (x, x)), ("relu", (x,)), ("sigmoid", (x,)), ("quantize", (x, 0.05, 3)),
                         ("dequantize", (q, 0.05, 3))):
            yield "elementwise", op, f"n={n}", args, {}
    shapes = ((7, 33), (64, 256)) if quick else ((7, 33), (64, 256), (1000, 1024), (4096, 128))
    for R, D in shapes:
        x = rng.standard_normal((R, D)).astype(np.float32)
        g, b = rng.standard_normal(D).astype(np.float32), rng.standard_normal(D).astype(np.float32)
        yield "norm", "layer_norm", f"{R}x{D} affine", (x, g, b), {}
        yield "norm", "layer_norm", f"{R}x{D}", (x,), {}
        yield "norm", "softmax", f"{R}x{D}", (x,), {}
    fcs = ((5, 7, 9), (64, 256, 128)) if quick else ((5, 7, 9), (64, 256, 128), (256, 512, 256), (300, 1024, 200),
                                                     (256, 1024, 1024), (512, 1024, 1024))
    for M, K, N in fcs:
        a8, w8 = rng.integers(-128, 128, (M, K)).astype(np.int8), rng.integers(-128, 128, (K, N)).astype(np.int8)
        ah, wh = a8.astype(np.float16), (w8 * 0.01).astype(np.float16)
        sc, bias = np.full(N, 1e-3, np.float32), rng.standard_normal(N).astype(np.float32)
        fits = w8.nbytes * 2 <= card.config.shared_sram.bytes // 2     # resident weights: the card's SRAM
        for place in ({}, {"weights_on_chip": True}) if fits else ({},):
            where = "sram" if place else "dram"
            yield "dense", "gemm", f"i8 {M}x{K}x{N} raw {where}", (a8, w8), place
            yield "dense", "gemm", f"i8 {M}x{K}x{N} requant {where}", (a8, w8), dict(
                scale=sc, bias=bias, out_scale=0.05, activation="relu", **place)
            yield "dense", "gemm", f"f16 {M}x{K}x{N} bias {where}", (ah, wh), dict(bias=bias, **place)
    a8 = rng.integers(-128, 128, (3, 40, 96)).astype(np.int8)
    w8 = rng.integers(-128, 128, (3, 96, 72)).astype(np.int8)
    yield "dense", "gemm", "i8 batched 3x40x96x72", (a8, w8), dict(scale=np.full(72, 1e-3, np.float32))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--config", action="append")
    args = ap.parse_args(argv)
    from vnpu.emulator.card import Card
    from vnpu.kernels import dense, elementwise, norm
    new = {"elementwise": elementwise, "norm": norm, "dense": dense}
    old = _old_modules()
    worst = 0.0
    for cfg in args.config or ["tiny", "reference"]:
        card = Card(cfg)
        for fam, op, what, a, kw in cases(args.quick, card):
            o1, r1 = getattr(old[fam], op)(card, *a, **kw)
            o2, r2 = getattr(new[fam], op)(card, *a, **kw)
            same = np.array_equal(o1, o2, equal_nan=True)
            ratio = r2.cycles / r1.cycles
            worst = max(worst, ratio)
            print(f"{cfg:9} {op:10} {what:32} builder {r1.cycles:8d}  language {r2.cycles:8d}  {ratio:.3f}"
                  f"{'' if same else '  OUTPUTS DIFFER'}", flush=True)
    print(f"worst ratio language / builder: {worst:.3f}")


if __name__ == "__main__":
    main()
