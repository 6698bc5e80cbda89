"""Figures of compiled models on the platform (docs/models.md): modeled throughput and latency (deterministic,
virtual time) and the wall time of emulating them against the framework doing the same math on this host.

    python benchmarks/models.py resnet50 [--batches 1,8,64] [--cards 1,6]   # int8 images/s, latency, bound
    python benchmarks/models.py bert [--layers 12]                          # fp16 latency b1, throughput b32
    python benchmarks/models.py wall                                        # emulation vs onnxruntime / eager
    python benchmarks/models.py threads                                     # six-card executor: 1 vs N threads

Modeled figures do not depend on the host; wall figures are ratios measured in the same run.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import vnpu
from vnpu.runtime.graph import models
from vnpu.runtime.graph.program import _pct


def _bound_summary(prof):
    """The share of card time by the unit that bounds each op."""
    by = {}
    for r in prof.records:
        by[r.bound] = by.get(r.bound, 0.0) + (r.end_ns - r.start_ns)
    tot = sum(by.values()) or 1.0
    return ", ".join(f"{k} {v / tot:.0%}" for k, v in sorted(by.items(), key=lambda kv: -kv[1])[:3])


def serve_figures(name, dtype, batch, cards, requests, **options):
    g = models.build(name, batch=batch, **options)
    calib = [models.example_inputs(g, batch=batch, seed=100 + s) for s in range(2)]
    prog = vnpu.compile(g, calib[0], cards=cards, dtype=dtype, strategy="replicate" if cards > 1 else "single",
                        calibration=calib, check=False)
    reqs = [models.example_inputs(g, batch=batch, seed=s) for s in range(requests)]
    t0 = time.perf_counter()
    prog.serve(reqs, inflight=cards)
    wall = time.perf_counter() - t0
    prof = prog.profile()
    lat = sorted(prof.latencies_ns())
    return {"model": name, "dtype": dtype, "batch": batch, "cards": cards, "requests": requests,
            "latency_ms": _pct(lat, 50) / 1e6, "items_per_s": requests * batch / (prof.makespan_ns / 1e9),
            "bound": _bound_summary(prof), "wall_s": wall}


def resnet50(args):
    print("| batch | cards | requests | latency p50 (ms) | images/s | time by bounding unit | wall (s) |")
    print("|---|---|---|---|---|---|---|")
    for b in [int(x) for x in args.batches.split(",")]:
        for c in [int(x) for x in args.cards.split(",")]:
            n = c if b * c <= args.max_images else 1
            r = serve_figures("resnet50", "int8", b, c, n, image=args.image)
            print(f"| {b} | {c} | {n} | {r['latency_ms']:.2f} | {r['items_per_s']:.1f} | {r['bound']} | "
                  f"{r['wall_s']:.1f} |", flush=True)


def bert(args):
    print("| batch | cards | requests | latency p50 (ms) | sequences/s | time by bounding unit | wall (s) |")
    print("|---|---|---|---|---|---|---|")
    for b, c, n in ((1, 1, 1), (32, 1, 1), (32, 6, 6)):
        if b * n > args.max_images * 4:
            continue
        r = serve_figures("bert", "fp16", b, c, n, layers=args.layers)
        print(f"| {b} | {c} | {n} | {r['latency_ms']:.2f} | {r['items_per_s']:.1f} | {r['bound']} | "
              f"{r['wall_s']:.1f} |", flush=True)


def wall(args):
    """Emulation wall time against the framework on the same host, same model and batch, same run."""
    import torch
    torch.set_num_threads(2)
    rows = []
    # BERT-style encoder, written in PyTorch, compiled through torch.export
    layer = torch.nn.TransformerEncoderLayer(args.hidden, args.heads, 4 * args.hidden, dropout=0.0,
                                             batch_first=True).eval()
    enc = torch.nn.TransformerEncoder(layer, args.layers, enable_nested_tensor=False).eval()
    x = torch.randn(args.batch, 128, args.hidden)
    rows.append(("TransformerEncoder (torch.export)", enc, (x,), lambda: enc(x)))
    try:
        import os

        import onnx
        import onnxruntime as ort
        path = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/light_resnet50.onnx")
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        iname = sess.get_inputs()[0].name
        img = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
        rows.append(("ResNet-50 (ONNX zoo)", path, (img,), lambda: sess.run(None, {iname: img})))
    except ImportError as e:
        print(f"(no ONNX row: {e})")
    print("| model | batch | framework (s) | vnpu emulation, warm (s) | ratio | vnpu modeled latency (ms) |")
    print("|---|---|---|---|---|---|")
    for name, model, inputs, native in rows:
        prog = vnpu.compile(model, inputs, cards=1, dtype="fp32", strategy="single", check=False)
        arrays = [np.asarray(getattr(i, "numpy", lambda: i)()) for i in inputs]
        prog.run(*arrays)                               # first run: kernel compiles (cold)
        t0 = time.perf_counter()
        prog.run(*arrays)
        emu = time.perf_counter() - t0
        with torch.no_grad():
            native()
            t0 = time.perf_counter()
            native()
            fw = time.perf_counter() - t0
        print(f"| {name} | {arrays[0].shape[0]} | {fw:.3f} | {emu:.3f} | {emu / fw:.1f}x | "
              f"{prog.profile().makespan_ns / 1e6:.2f} |", flush=True)


def threads(args):
    """The six-card executor's wall time with one host thread per card against one thread, same requests."""
    g = models.build("resnet50", batch=1, image=args.image)
    prog = vnpu.compile(g, cards=6, dtype="int8", strategy="replicate", check=False,
                        calibration=[models.example_inputs(g, seed=9)])
    reqs = [models.example_inputs(g, seed=s) for s in range(12)]
    prog.serve(reqs[:6], inflight=6)                    # warm: kernels compiled
    t0 = time.perf_counter()
    prog.serve(reqs, inflight=6, threads=1)
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    prog.serve(reqs, inflight=6)
    many = time.perf_counter() - t0
    print(f"ResNet-50 int8 {args.image}x{args.image}, 12 requests on 6 cards: one thread {one:.2f} s, a thread per "
          f"card {many:.2f} s: {one / many:.2f}x")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("resnet50", "bert", "wall", "threads"))
    p.add_argument("--batches", default="1,8,64")
    p.add_argument("--cards", default="1,6")
    p.add_argument("--image", type=int, default=224)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--max-images", type=int, default=512, help="images emulated per row at most (requests = cards "
                                                                "when batch x cards fits, else 1)")
    args = p.parse_args()
    {"resnet50": resnet50, "bert": bert, "wall": wall, "threads": threads}[args.what](args)


if __name__ == "__main__":
    main()
