"""Modeled efficiency of conv2d (kernels/convolution.py) on ResNet-50 stage-3 shapes, int8 requantized to int8
(as a quantized ResNet runs), on the reference card's twelve PEs: cycles against the roofline bound (the
larger of the compute bound, MACs at 4096 int8 MACs per PE per cycle, and the DRAM bound, input + weights +
output bytes at 67.2 GB/s).

    python benchmarks/conv_efficiency.py
"""
import numpy as np, sys, time
from vnpu.emulator.card import Card
from vnpu.kernels import convolution as CV
card = Card("reference")
cfg = card.config
rng = np.random.default_rng(0)
peak_macs = cfg.pes * cfg.matrix.rows * cfg.matrix.cols * cfg.matrix.depth * cfg.matrix.int8_rate
for name, (N, C, H, W, OC, K, pad) in {"3x3": (8, 128, 28, 28, 128, 3, 1), "1x1": (8, 512, 28, 28, 128, 1, 0), "1x1b": (8, 128, 28, 28, 512, 1, 0)}.items():
    x = rng.integers(-128, 128, (N, C, H, W)).astype(np.int8); w = rng.integers(-128, 128, (OC, C, K, K)).astype(np.int8)
    t = time.time()
    y, r = CV.conv2d(card, x, w, np.zeros(OC, np.float32), 1, pad, x_scale=0.02, w_scale=np.full(OC, 0.01, np.float32), activation="relu", out_scale=0.1)
    macs = N * OC * C * K * K * H * W
    compute = macs / peak_macs
    byts = x.nbytes + w.nbytes + y.nbytes
    mem = byts / (cfg.dram.gbps / cfg.clock_ghz)
    bound = max(compute, mem)
    s = r.summary()
    print(f"{name}: {r.cycles} cycles, bound {bound:.0f} (compute {compute:.0f}, dram {mem:.0f}) -> {bound / r.cycles:.1%}; matrix util {s['units']['matrix']['utilization']:.1%} dma {s['units']['dma']['utilization']:.1%} vec {s['units']['vector']['utilization']:.1%}; wall {time.time()-t:.1f}s", flush=True)
