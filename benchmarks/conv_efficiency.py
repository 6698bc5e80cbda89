"""Modeled efficiency of conv2d (kernels/convolution.py) on ResNet-50 stage-3 shapes, int8 requantized to int8
with a fused bias and ReLU (as a quantized ResNet runs), on the reference card's twelve PEs: cycles against the
roofline bound, the larger of the compute bound (MACs at 4096 int8 MACs per PE per cycle) and the memory bound
(the bytes of input, weights and output at the rate of the memory they live in: DRAM at 67.2 GB/s, or the
shared SRAM at 1360 B/cycle). A third column states the vector unit's own lower bound for the epilogue
(int32 -> fp32, x scale, + bias, -> int8, ReLU on int8: 4 fp32 passes and one int8 pass over every output, at
16 fp32 lanes per PE), which the roofline bound leaves out and which limits the 1x1 convs.

Two placements of the activations: `dram` (a layer on its own: the input read from and the output written to
DRAM) and `shared` (the input and output in the 24 MiB shared SRAM, as a runtime keeps a ResNet's activations
between layers when they fit; at batch 8 stage 3's are 0.8 MB). Weights are in the shared SRAM in both. The
outputs are checked against the numpy reference.

    python benchmarks/conv_efficiency.py
"""
import numpy as np

from vnpu.emulator.card import Card
from vnpu.kernels import convolution as CV

SHAPES = {  # name: N, C, H, W, OC, K, padding
    "3x3 128->128": (8, 128, 28, 28, 128, 3, 1),
    "1x1 512->128": (8, 512, 28, 28, 128, 1, 0),
    "1x1 128->512": (8, 128, 28, 28, 512, 1, 0),
}


def main():
    card = Card("reference")
    cfg = card.config
    rng = np.random.default_rng(0)
    peak_macs = cfg.pes * cfg.matrix.rows * cfg.matrix.cols * cfg.matrix.depth * cfg.matrix.int8_rate
    rate = {"dram": cfg.dram.gbps / cfg.clock_ghz, "shared": float(cfg.shared_sram.bytes_per_cycle)}
    print("| conv (batch 8, 28x28, int8 -> int8, bias + ReLU) | activations | cycles | bound (compute / memory) "
          "| of bound | epilogue bound | matrix | vector | DMA |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (N, C, H, W, OC, K, pad) in SHAPES.items():
        x = rng.integers(-128, 128, (N, C, H, W)).astype(np.int8)
        w = rng.integers(-128, 128, (OC, C, K, K)).astype(np.int8)
        b = rng.standard_normal(OC).astype(np.float32)
        kw = dict(x_scale=0.02, w_scale=np.full(OC, 1e-4, np.float32), activation="relu", out_scale=0.05)
        ref = CV.reference_conv2d(x, w, b, 1, pad, **kw)
        for memory in ("dram", "shared"):
            y, r = CV.conv2d(card, x, w, b, 1, pad, memory=memory, **kw)
            assert np.array_equal(y, ref), name
            compute = N * OC * C * K * K * H * W / peak_macs
            mem = (x.nbytes + y.nbytes) / rate[memory] + w.nbytes / rate["shared"]
            bound = max(compute, mem)
            lanes = cfg.vector.width_bits // 32
            epilogue = N * OC * H * W * (4 + 0.25) / lanes / cfg.pes
            u = r.summary()["units"]
            print(f"| {name} | {memory} | {r.cycles} | {bound:.0f} ({compute:.0f} / {mem:.0f}) | {bound / r.cycles:.1%} | "
                  f"{epilogue:.0f} | "
                  f"{u['matrix']['utilization']:.0%} | {u['vector']['utilization']:.0%} | {u['dma']['utilization']:.0%} |",
                  flush=True)


if __name__ == "__main__":
    main()
