"""The recommendation model: DLRM shapes (the DeepRecSys presets RM1-RM3), its weights, the int8
quantization recipe of the dense layers, and its numpy reference (the card's order of operations).

A DLRM is a bottom MLP over the dense features, pooled embedding lookups (one table per sparse feature),
the pairwise dot interaction of the bottom MLP's output and the pooled rows, and a top MLP ending in a
sigmoid. `DLRM.graph()` describes it as library ops; the partitioner places them on cards and the
executor runs them (vnpu.runtime.partitioner, vnpu.runtime.executor).

    python -m vnpu.runtime.model [batches]      # the int8 dense layers' score bound of every preset
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vnpu.errors import InvalidArgument
from vnpu.isa.table import EMB_FORMATS
from vnpu.kernels.dense import reference_gemm
from vnpu.kernels.interaction import reference_rounded
from vnpu.kernels.reference import embedding_bag as ref_embedding_bag, pack_table, table_row_bytes, vcvt_to_int

@dataclass
class DLRMConfig:
    """A DLRM shape. The DeepRecSys presets follow reference-card.md; `scale` shrinks the tables' rows so a
    demo runs in seconds on a small host (scale=1 is the full size where memory allows)."""
    name: str = "rm1"
    dense_features: int = 128
    bottom: tuple = (128, 64, 32)
    top: tuple = (256, 64, 1)
    tables: int = 8
    rows: int = 4_000_000
    dim: int = 32
    pooling: int = 80
    table_format: str = "int8_rowwise"
    seed: int = 0
    dense_dtype: str = "fp16"     # or "int8": row-wise (per output column) int8 weights, int8 activations

    def scaled(self, rows_scale):
        return DLRMConfig(**{**self.__dict__, "rows": max(16, int(self.rows * rows_scale))})

    @property
    def features(self):
        return self.tables + 1

    @property
    def interaction_width(self):
        f = self.features
        return self.dim + f * (f - 1) // 2


PRESETS = {
    "rm1": DLRMConfig("rm1", 128, (128, 64, 32), (256, 64, 1), 8, 4_000_000, 32, 80),
    "rm2": DLRMConfig("rm2", 256, (256, 128, 64), (128, 64, 1), 32, 500_000, 64, 120),
    "rm3": DLRMConfig("rm3", 2560, (2560, 1024, 256, 32), (512, 256, 1), 10, 2_000_000, 32, 20),
}


def preset(name, rows_scale=1.0, table_format="int8_rowwise", dense_dtype="fp16"):
    if name not in PRESETS:
        raise InvalidArgument(f"no model {name!r}; one of {', '.join(PRESETS)}")
    if dense_dtype not in ("fp16", "int8"):
        raise InvalidArgument(f"dense_dtype must be 'fp16' or 'int8', got {dense_dtype!r}")
    if table_format not in EMB_FORMATS:
        raise InvalidArgument(f"table_format must be one of {', '.join(EMB_FORMATS)}, got {table_format!r}")
    if isinstance(rows_scale, bool) or not isinstance(rows_scale, (int, float, np.integer, np.floating)) \
            or not 0 < rows_scale <= 1:       # (NaN fails both comparisons)
        raise InvalidArgument(f"rows_scale must be a number in (0, 1], got {rows_scale!r}")
    cfg = PRESETS[name].scaled(rows_scale)
    cfg.table_format = table_format
    cfg.dense_dtype = dense_dtype
    return cfg


def quantize(x, scale, zero_point=0):
    """What the card's vcvt does with parameter (f32(1/scale), zero_point): clamp(round_half_even(x * f32(1/scale)
    + zero_point), -128, 127), rounded once to fp32; NaN gives 0."""
    return vcvt_to_int(np.asarray(x, np.float32), np.float32(1.0) / np.float32(scale), zero_point)


class DLRM:
    """Weights (random, fixed seed) and the numpy implementation of the model."""

    def __init__(self, cfg: DLRMConfig):
        if cfg.bottom[0] != cfg.dense_features:
            cfg.bottom = (cfg.dense_features,) + tuple(cfg.bottom[1:])
        if cfg.bottom[-1] != cfg.dim:
            raise InvalidArgument(f"the bottom MLP must end at the embedding dim {cfg.dim}, got {cfg.bottom}")
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        self.bottom = self._mlp(rng, cfg.bottom)
        top_in = cfg.interaction_width
        self.top = self._mlp(rng, (top_in,) + tuple(cfg.top[1:]) if cfg.top[0] == top_in else (top_in,) + tuple(cfg.top))
        # the tables as the cards store them (packed): the only host copy, and what the reference reads
        self.tables = [random_table(rng, cfg.rows, cfg.dim, cfg.table_format) for _ in range(cfg.tables)]
        if cfg.dense_dtype == "int8":
            self._quantize_dense(rng)

    CAL_BATCHES = 8            # calibration requests of 64 samples (int8 mode)
    LAYER_BUDGET = 0.02        # the most one int8 layer may move a calibration score
    MODEL_BUDGET = 0.025       # the most all int8 layers together may move a calibration score

    def _quantize_dense(self, rng):
        """int8 dense layers, chosen and calibrated on sample requests (Park et al.'s recipe for Facebook's
        int8 recommendation models: fine-grained weight scales, net-aware activation ranges, selective
        quantization).

        - weights: a scale per output column (max |w| / 127), codes in [-127, 127];
        - activations: a static scale per layer input from CAL_BATCHES requests run through the fp16 model:
          an input that is never negative (after ReLU) uses the full int8 range, max / 255 with zero point
          -128 (twice the resolution of a symmetric range); a signed input uses max |x| / 127, zero point 0.
          The zero point is folded into the bias: bias'[n] = bias[n] - scale[n] * zp * sum_k wq[k, n];
        - selection: a layer stays int8 when quantizing it alone moves no calibration score by more than
          LAYER_BUDGET; then, while all int8 layers together move a score by more than MODEL_BUDGET, the
          most sensitive one goes back to fp16. The rest run in fp16 like the fp16 model (docs/serving.md
          lists the layers each preset keeps in int8)."""
        layers = self.bottom + self.top
        nb, nl = len(self.bottom), len(layers)
        cal = [self.make_request(64, rng) for _ in range(self.CAL_BATCHES)]
        cal = [(d, [p.astype(np.float32) for p in self.pooled(lk)]) for d, lk in cal]

        def forward(dense, pooled, fake=(), collect=None):
            """The model in fp32 numpy (fake-quantized layers in `fake`) for calibration and selection."""
            x = dense.astype(np.float32)
            for i, (w, b) in enumerate(layers):
                if i == nb:
                    z = np.stack([x.astype(np.float16).astype(np.float32)] + pooled, axis=1)
                    x = reference_interaction(z.astype(np.float16)).astype(np.float32)
                if collect is not None:
                    collect[i].append(x)
                if i in fake:
                    s, zp, wq, ws, _ = quant[i]
                    q = np.clip(np.rint(x / s) + zp, -128, 127) - zp
                    y = (q @ wq.astype(np.float32)) * (ws * s) + b
                else:
                    y = x @ w.astype(np.float32) + b
                x = np.maximum(y, 0) if i < nl - 1 else 1.0 / (1.0 + np.exp(-y.astype(np.float64)))
            return x

        seen = [[] for _ in range(nl)]
        ref = [forward(d, p, collect=seen) for d, p in cal]
        quant = []
        for i, (w, b) in enumerate(layers):
            x = np.concatenate(seen[i])
            if x.min() >= 0:
                zp, s = -128, np.float32(max(float(x.max()), 1e-6) / 255)
            else:
                zp, s = 0, np.float32(max(float(np.abs(x).max()), 1e-6) / 127)
            w32 = w.astype(np.float32)
            ws = (np.maximum(np.abs(w32).max(axis=0), 1e-8) / 127).astype(np.float32)
            wq = np.clip(np.rint(w32 / ws), -127, 127).astype(np.int8)
            quant.append((s, zp, wq, ws, b))

        def error(fake):
            return max(float(np.abs(forward(d, p, fake) - r).max()) for (d, p), r in zip(cal, ref))
        alone = [error({i}) for i in range(nl)]
        chosen = {i for i in range(nl) if alone[i] <= self.LAYER_BUDGET}
        while chosen and error(chosen) > self.MODEL_BUDGET:
            chosen.discard(max(chosen, key=lambda i: alone[i]))
        self.int8_layers = [i in chosen for i in range(nl)]
        self.act_scales, self.act_zero_points, self.qlayers = [], [], []
        for i, (s, zp, wq, ws, b) in enumerate(quant):
            self.act_scales.append(s)
            self.act_zero_points.append(zp)
            scale = (np.float32(s) * ws).astype(np.float32)
            folded = (b.astype(np.float64) - scale.astype(np.float64) * zp * wq.astype(np.int64).sum(axis=0))
            self.qlayers.append((wq, ws, folded.astype(np.float32)))
        self.calibration_error = {"per_layer": alone, "int8_layers": sorted(chosen),
                                  "model": error(chosen) if chosen else 0.0}

    @staticmethod
    def _mlp(rng, sizes):
        layers = []
        for k, n in zip(sizes[:-1], sizes[1:]):
            w = (rng.standard_normal((k, n)) / math.sqrt(k)).astype(np.float16)     # [K, N]: x @ w
            b = (rng.standard_normal(n) * 0.01).astype(np.float32)
            layers.append((w, b))
        return layers

    @property
    def table_bytes(self):
        return [t.nbytes for t in self.tables]

    @property
    def dense_bytes(self):
        """The bytes of the dense layers' weights, scales and biases as one card holds them (every card holds
        them: the dense part is replicated)."""
        return sum(sum(a.nbytes for a in self.layer_args(i)[:3] if a is not None)
                   for i in range(len(self.bottom) + len(self.top)))

    def pooled(self, lookups):
        """A request's pooled rows, [B, D] fp16 per table, the way the card pools them: only the rows the request
        looks up are read from the packed tables and dequantized (q * scale + bias in fp32, pooled in index order
        in fp32); no table is ever unpacked whole (an fp32 RM1 table would be 512 MB)."""
        c = self.cfg
        out = []
        for t, (idx, off) in zip(self.tables, lookups):
            if t.dtype != np.uint8:     # a float table would be packed whole by the reference: never here
                raise InvalidArgument(f"DLRM tables are packed uint8 rows, got a {t.dtype} table")
            out.append(ref_embedding_bag(t, idx, offsets=off, format=c.table_format, dim=c.dim).astype(np.float16))
        return out

    def graph(self) -> Graph:
        """The model as a graph of library ops."""
        nodes = [Node(f"emb{t}", "embedding_bag", [f"lookups:{t}"], f"pooled{t}", "sharded", self.tables[t].nbytes,
                      t) for t in range(self.cfg.tables)]
        x = "dense"
        nb = len(self.bottom)
        for i in range(nb):
            nodes.append(Node(f"bottom{i}", "fc", [x], f"bottom{i}", "replicated", 0, i))
            x = f"bottom{i}"
        # the pooled rows, one [B, D] block per table, assembled sample-major [B, T, D] on the dense card
        nodes.append(Node("features", "assemble", [f"pooled{t}" for t in range(self.cfg.tables)], "emb",
                          "replicated"))
        nodes.append(Node("interaction", "interaction", [x, "emb"], "inter", "replicated"))
        x = "inter"
        for i in range(len(self.top)):
            nodes.append(Node(f"top{i}", "fc", [x], f"top{i}", "replicated", 0, nb + i))
            x = f"top{i}"
        return Graph(nodes, x)

    def make_request(self, batch, rng):
        c = self.cfg
        dense = rng.standard_normal((batch, c.dense_features)).astype(np.float16)
        lookups = []
        for _ in range(c.tables):
            lengths = rng.integers(max(1, c.pooling // 2), c.pooling + c.pooling // 2 + 1, batch)
            idx = rng.integers(0, c.rows, int(lengths.sum())).astype(np.int32)
            offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int32)
            lookups.append((idx, offsets))
        return dense, lookups

    def host_input(self, dense):
        """What the host sends as dense features: fp16, or int8 quantized with the first layer's input scale
        when that layer runs in int8."""
        if self.cfg.dense_dtype == "int8" and self.int8_layers[0]:
            return quantize(dense, self.act_scales[0], self.act_zero_points[0])
        return dense

    def layer_args(self, i):
        """How layer i runs on the card: (weights as the card computes with them, per-column scale or None,
        bias, out_scale or None, out_zero_point). int8 layers take int8 inputs (scale and zero point of their
        input folded into the per-column scale and the bias); a layer hands int8 to the next when the next is
        int8 (requantized with its input scale and zero point), else fp16; the last bottom layer hands fp16 to
        the interaction and the last top layer gives fp32 scores."""
        nb = len(self.bottom)
        nl = nb + len(self.top)
        w, b = (self.bottom + self.top)[i]
        if self.cfg.dense_dtype != "int8":
            return w, None, b, None, 0
        nxt = i + 1
        out_scale, out_zp = None, 0
        if nxt < nl and nxt != nb and self.int8_layers[nxt]:
            out_scale, out_zp = self.act_scales[nxt], self.act_zero_points[nxt]
        if not self.int8_layers[i]:
            return w, None, b, out_scale, out_zp
        wq, ws, folded = self.qlayers[i]
        scale = (np.float32(self.act_scales[i]) * ws).astype(np.float32)
        return wq, scale, folded, out_scale, out_zp

    def reference(self, dense, lookups):
        """The model in numpy, in the card's order of operations (fp16 activations, fp32 accumulation)."""
        if self.cfg.dense_dtype == "int8":
            return self._reference_int8(dense, lookups)
        x = dense
        for i, (w, b) in enumerate(self.bottom):
            x = reference_gemm(x, w, bias=b, activation="relu").astype(np.float16)
        z = np.stack([x] + self.pooled(lookups), axis=1)                       # [B, F, D]
        inter = reference_interaction(z)
        y = inter
        for i, (w, b) in enumerate(self.top):
            last = i == len(self.top) - 1
            y = reference_gemm(y, w, bias=b, activation="sigmoid" if last else "relu")
            if not last:
                y = y.astype(np.float16)
        return y

    def _reference_int8(self, dense, lookups):
        """The int8-dense model in numpy: each layer as `layer_args` says the card runs it."""
        nb, nl = len(self.bottom), len(self.bottom) + len(self.top)

        def layer(i, x):
            w, scale, b, out_scale, out_zp = self.layer_args(i)
            y = reference_gemm(x, w, scale=scale, bias=b, out_scale=out_scale, out_zero_point=out_zp,
                               activation="sigmoid" if i == nl - 1 else "relu")
            return y if (out_scale is not None or i == nl - 1) else y.astype(np.float16)
        x = self.host_input(dense)
        for i in range(nb):
            x = layer(i, x)
        y = reference_interaction(np.stack([x] + self.pooled(lookups), axis=1))
        if self.int8_layers[nb]:            # the interaction quantizes its output row for an int8 top layer
            y = quantize(y, self.act_scales[nb], self.act_zero_points[nb])
        for i in range(nb, nl):
            y = layer(i, y)
        return y


TABLE_CHUNK_BYTES = 4 << 20      # the float64 draws of one chunk of a table being generated


def random_table(rng, rows, dim, fmt):
    """A [rows, dim] table of N(0, 0.1^2) values packed to `fmt` (uint8 [rows, row bytes]), generated and packed
    a chunk of rows at a time: the same draws and the same bytes as pack_table((rng.standard_normal((rows,
    dim)) * 0.1).astype(np.float32), fmt) in one piece (the generator fills row-major, every format packs row
    by row), without the whole table in float64 and float32 on the host (about 2.5 GB for one full-size RM1 table
    of 160 MB)."""
    out = np.empty((rows, table_row_bytes(fmt, dim)), np.uint8)
    step = max(1, TABLE_CHUNK_BYTES // (8 * dim))
    for s in range(0, rows, step):
        n = min(step, rows - s)
        out[s:s + n] = pack_table((rng.standard_normal((n, dim)) * 0.1).astype(np.float32), fmt)
    return out


def reference_interaction(z):
    """[B, F, D] fp16 -> [B, D + F(F-1)/2] fp16: the dense row, then the lower triangle of Z Z^T (i > j)
    in row-major order; products in fp32 in D order, rounded to fp16 (the library kernel's arithmetic,
    vnpu.kernels.interaction.reference_rounded)."""
    z = np.asarray(z)
    return reference_rounded(z[:, 0, :], z[:, 1:, :], "f16")


@dataclass
class Node:
    """One library op of a model graph. `sharded` nodes run on the card that holds their weights (an
    embedding table); `replicated` nodes run on the request's dense card, where their weights are too."""
    name: str
    op: str                  # embedding_bag, fc, assemble, interaction
    inputs: list             # tensor names; "dense" and "lookups:<t>" come with the request
    output: str
    placement: str           # sharded | replicated
    weight_bytes: int = 0
    index: int = 0           # the table (embedding_bag) or the layer (fc)


@dataclass
class Graph:
    nodes: list
    output: str

    def sharded(self):
        return [n for n in self.nodes if n.placement == "sharded"]


def int8_score_bound(name, batches=24, batch=64, seed0=1000, rows_scale=1e-3, table_format="int8_rowwise"):
    """The largest |int8-dense score - fp16 score| of preset `name` over `batches` requests of `batch` samples
    (seeds seed0, seed0 + 1, ...; the calibration never sees them). The int8 numpy model equals the card bit
    for bit (tests/runtime/test_dlrm.py), so this is the card's figure."""
    m8 = DLRM(preset(name, rows_scale, table_format, "int8"))
    m16 = DLRM(preset(name, rows_scale, table_format, "fp16"))
    worst = 0.0
    for s in range(batches):
        dense, lookups = m16.make_request(batch, np.random.default_rng(seed0 + s))
        worst = max(worst, float(np.abs(m8.reference(dense, lookups) - m16.reference(dense, lookups)).max()))
    return worst, [i for i, q in enumerate(m8.int8_layers) if q]


def main(argv=None):
    """python -m vnpu.runtime.model [batches]: the int8 bound of every preset (docs/serving.md)."""
    import sys
    argv = sys.argv[1:] if argv is None else argv
    n = int(argv[0]) if argv else 24
    for name in PRESETS:
        worst, layers = int8_score_bound(name, n)
        print(f"{name}: max |int8 - fp16| = {worst:.4f} over {n} batches of 64 (int8 layers {layers})")


if __name__ == "__main__":
    main()
