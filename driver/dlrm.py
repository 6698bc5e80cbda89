"""Recommendation inference on the platform, the way the seed paper's runtime (Glow) ran it.

A DLRM model (bottom MLP, pooled embedding lookups, dot interaction, top MLP) is partitioned over the
cards: embedding tables sharded across all cards (balanced by bytes, largest first), the dense part
replicated on every card. The executor serves requests through the driver API: indices and offsets go
host to card, each card pools the lookups of its tables, the pooled rows go card to card (through the
switch) to the request's dense card (round robin), which runs the bottom MLP, assembles the features,
runs the interaction and the top MLP, and the scores go back to the host. Everything is on the
platform's virtual timeline, so latency and throughput are modeled figures; the numbers are checked
against a numpy implementation of the same model (`DLRM.reference`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from vnpu.errors import InvalidArgument
from vnpu.kernels import dense as dense_k
from vnpu.kernels.builder import KernelBuilder
from vnpu.kernels.embedding import EmbeddingArgs, descriptor, kernel_image
from vnpu.kernels.reference import embedding_bag as ref_embedding_bag, pack_table, vcvt_to_int


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
        self.tables = []
        for _ in range(cfg.tables):
            w = (rng.standard_normal((cfg.rows, cfg.dim)) * 0.1).astype(np.float32)
            self.tables.append(pack_table(w, cfg.table_format))
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
        cfg = self.cfg
        layers = self.bottom + self.top
        nb, nl = len(self.bottom), len(layers)
        cal = [self.make_request(64, rng) for _ in range(self.CAL_BATCHES)]
        cal = [(d, [ref_embedding_bag(t, idx, offsets=off, format=cfg.table_format, dim=cfg.dim)
                    .astype(np.float16).astype(np.float32) for t, (idx, off) in zip(self.tables, lk)]) for d, lk in cal]

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

    def graph(self) -> Graph:
        """The model as a graph of library ops."""
        nodes = [Node(f"emb{t}", "embedding_bag", [f"lookups:{t}"], f"pooled{t}", "sharded", self.tables[t].nbytes,
                      t) for t in range(self.cfg.tables)]
        x = "dense"
        nb = len(self.bottom)
        for i in range(nb):
            nodes.append(Node(f"bottom{i}", "fc", [x], f"bottom{i}", "replicated", 0, i))
            x = f"bottom{i}"
        nodes.append(Node("features", "assemble", [x] + [f"pooled{t}" for t in range(self.cfg.tables)], "z",
                          "replicated"))
        nodes.append(Node("interaction", "interaction", ["z"], "inter", "replicated"))
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
            x = dense_k.reference_gemm(x, w, bias=b, activation="relu").astype(np.float16)
        pooled = [ref_embedding_bag(t, idx, offsets=off, format=self.cfg.table_format, dim=self.cfg.dim)
                  .astype(np.float16) for t, (idx, off) in zip(self.tables, lookups)]
        z = np.stack([x] + pooled, axis=1)                                     # [B, F, D]
        inter = reference_interaction(z)
        y = inter
        for i, (w, b) in enumerate(self.top):
            last = i == len(self.top) - 1
            y = dense_k.reference_gemm(y, w, bias=b, activation="sigmoid" if last else "relu")
            if not last:
                y = y.astype(np.float16)
        return y


def _reference_int8(self, dense, lookups):
    nb, nl = len(self.bottom), len(self.bottom) + len(self.top)

    def layer(i, x):
        w, scale, b, out_scale, out_zp = self.layer_args(i)
        y = dense_k.reference_gemm(x, w, scale=scale, bias=b, out_scale=out_scale, out_zero_point=out_zp,
                                   activation="sigmoid" if i == nl - 1 else "relu")
        return y if (out_scale is not None or i == nl - 1) else y.astype(np.float16)
    x = self.host_input(dense)
    for i in range(nb):
        x = layer(i, x)
    pooled = [ref_embedding_bag(t, idx, offsets=off, format=self.cfg.table_format, dim=self.cfg.dim)
              .astype(np.float16) for t, (idx, off) in zip(self.tables, lookups)]
    y = reference_interaction(np.stack([x] + pooled, axis=1))
    if self.int8_layers[nb]:            # the interaction quantizes its output row for an int8 top layer
        y = quantize(y, self.act_scales[nb], self.act_zero_points[nb])
    for i in range(nb, nl):
        y = layer(i, y)
    return y


DLRM._reference_int8 = _reference_int8


def reference_interaction(z):
    """[B, F, D] fp16 -> [B, D + F(F-1)/2] fp16: the dense row, then the lower triangle of Z Z^T (i > j)
    in row-major order; products in fp32 in D order, rounded to fp16."""
    B, F, D = z.shape
    z32 = z.astype(np.float32)
    zz = np.zeros((B, F, F), np.float32)
    for d in range(D):
        zz += z32[:, :, d:d + 1] * z32[:, None, :, d]
    rows, cols = np.tril_indices(F, -1)
    return np.concatenate([z[:, 0, :], zz[:, rows, cols].astype(np.float16)], axis=1)


def interaction_module(B, F, D, out_scale=None, out_zero_point=0):
    """Samples split over the PEs; per sample: Z_b into local memory, its transpose by a 3-D local DMA,
    Z_b Z_b^T on the matrix unit (fp16 in, fp32 out), to fp16 on the vector unit, then the output row
    (dense part and the lower triangle, row by row) assembled by local DMAs and written in one copy."""
    W = D + F * (F - 1) // 2
    # local layout: Z_b at 0, its transpose, the fp32 product P, its fp16 copy Q, the output row R
    ZT, P, Q, R = F * D * 2, 2 * F * D * 2, 2 * F * D * 2 + F * F * 4, 2 * F * D * 2 + F * F * 6
    R = (R + 63) // 64 * 64
    kb = KernelBuilder()
    ob = 1 if out_scale is not None else 2
    R8 = R + ((W * 2 + 63) // 64) * 64
    with kb.kernel("interaction", z=("buffer", "f16"), out=("buffer", "i8" if ob == 1 else "f16")) as k:
        pe, npe, b, t0, t1, t2 = k.regs("pe", "npe", "b", "t0", "t1", "t2")
        k.csrr(pe, "pe_id")
        k.csrr(npe, "pe_count")
        with k.for_range(b, pe, B, step=npe):
            k.muli(t0, b, F * D * 2)
            k.add(t0, t0, k.args.z)
            k.copy(0, k.zero, t0, F * D * 2, 0)
            k.wait(0, 1)
            k.const(t1, ZT)
            # transpose: element (f, d) -> (d, f); rows of one fp16 element
            k.copy(0, t1, k.zero, 2, 0, rows=F, src_stride=D * 2, dst_stride=2, planes=D, src_plane=2,
                   dst_plane=F * 2)
            k.wait(0, 1)
            k.const(t0, D)
            k.const(t2, F)
            k.mm_ldw(t1, t0, t2, "f16", 1)
            k.const(t0, P)
            k.mm_mul(t0, k.zero, t2, "f16", "set", 1)
            k.wait(1, 2)
            k.const(t1, Q)
            k.mul(t2, t2, t2)                              # F * F elements
            one = k.const(k.reg("one"), 0x3F800000)
            k.vcvt(t1, t0, t2, one, "f32", "f16", 2)
            k.release(one)
            k.wait(2, 1)
            k.const(t0, R)
            k.copy(0, t0, k.zero, D * 2, 0)                 # the dense row: Z_b[0]
            nsig = 1
            for i in range(1, F):
                k.const(t0, R + (D + i * (i - 1) // 2) * 2)
                k.const(t1, Q + i * F * 2)
                k.copy(0, t0, t1, i * 2, 0)
                nsig += 1
            k.wait(0, nsig)
            src = R
            if out_scale is not None:          # int8 top MLP: quantize the row on the vector unit
                from vnpu.kernels.dense import qparam
                q = k.const(k.reg("q"), qparam(np.float32(1.0) / np.float32(out_scale), out_zero_point))
                k.const(t0, R8)
                k.const(t1, R)
                k.const(t2, W)
                k.vcvt(t0, t1, t2, q, "f16", "i8", 2)
                k.wait(2, 1)
                k.release(q)
                src = R8
            k.muli(t0, b, W * ob)
            k.add(t0, t0, k.args.out)
            k.const(t1, src)
            k.copy(0, t0, t1, W * ob, 0)
            k.wait(0, 1)
    return kb.build()


def gather_module(blocks):
    """A DMA program: for each (dst_off, src_off, row_bytes, rows, src_stride, dst_stride), a 2-D copy from
    `src` to `dst`; the blocks are split over the PEs."""
    kb = KernelBuilder()
    with kb.kernel("gather", src=("buffer", "u8"), dst=("buffer", "u8")) as k:
        pe, s, d = k.regs("pe", "s", "d")
        k.csrr(pe, "pe_id")
        npe = k.reg("npe")
        k.csrr(npe, "pe_count")
        for i, (doff, soff, rb, rows, ss, ds) in enumerate(blocks):
            mine = k.reg("mine")
            k.const(mine, i)
            k.rem(mine, mine, npe)
            with k.if_("eq", mine, pe):
                k.const(s, soff)
                k.add(s, s, k.args.src)
                k.const(d, doff)
                k.add(d, d, k.args.dst)
                k.copy(0, d, s, rb, 0, rows=rows, src_stride=ss, dst_stride=ds)
                k.wait(0, 1)
            k.release(mine)
    return kb.build()


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


@dataclass
class Placement:
    """Where each sharded node (table) lives (card index) and the bytes per card."""
    table_card: list
    card_bytes: list = field(default_factory=list)


def partition(table_bytes, cards):
    """Shard tables across cards, balanced by bytes: largest table first onto the least-loaded card."""
    load = [0] * cards
    where = [0] * len(table_bytes)
    for t in sorted(range(len(table_bytes)), key=lambda t: -table_bytes[t]):
        c = min(range(cards), key=lambda c: (load[c], c))
        where[t] = c
        load[c] += table_bytes[t]
    return Placement(where, load)


def partition_graph(graph: Graph, cards):
    """Glow-style placement for recommendation graphs: sharded nodes balanced by weight bytes, the rest
    replicated on every card."""
    return partition([n.weight_bytes for n in graph.sharded()], cards)


class Executor:
    """Serves DLRM requests on a platform (Glow's HostManager + Executor, for this one model).

    route: "p2p" sends pooled embeddings card to card through the switch; "host" sends them through the
    host (device to host, then host to device), for comparison.
    """

    def __init__(self, platform, model: DLRM, batch, inflight=4, route="p2p", pes=None):
        if route not in ("p2p", "host"):
            raise InvalidArgument(f"route must be 'p2p' or 'host', got {route!r}")
        self.platform, self.model, self.batch, self.route = platform, model, batch, route
        self.cfg = c = model.cfg
        self.devices = platform.devices
        self.graph = model.graph()
        self.alive = [i for i, d in enumerate(self.devices) if not d._lost]
        self._plan()
        self.inflight = inflight
        self.pes = pes
        self.queues = [[d.queue() for _ in range(inflight)] if not d._lost else [] for d in self.devices]
        B, F, D = batch, c.features, c.dim
        self.kernels = {}
        dev0 = self.devices[0]
        npes, cols, local = dev0.config.pes, dev0.config.matrix.cols, dev0.config.local_memory.bytes
        use = npes if pes is None else len(pes)
        # images: per MLP layer a gemm specialized to (B, K, N); interaction; gathers; the embedding kernel
        self.layers = {"bottom": [], "top": []}
        int8 = c.dense_dtype == "int8"
        nb = len(model.bottom)
        for i in range(nb + len(model.top)):
            part = "bottom" if i < nb else "top"
            w, scale, b, out_scale, out_zp = model.layer_args(i)
            K, N = w.shape
            last = i == nb + len(model.top) - 1
            epi = "dequant" if last else ("requant" if out_scale is not None else "half")
            dt = "i8" if w.dtype == np.int8 else "f16"
            img, info = dense_k._gemm("gemm", 1, B, K, N, dt, epi, True, use, cols, local,
                                      activation="sigmoid" if last else "relu")
            extra = [scale] if dt == "i8" else []
            q = dense_k.qparam(np.float32(1.0) / np.float32(out_scale), out_zp) if epi == "requant" else None
            self.layers[part].append((img, dense_k.pack_weights(w[None], info["nt"]), extra + [b], K, N, last, q))
        int8_top = int8 and model.int8_layers[nb]
        self.inter_img = interaction_module(B, F, D, model.act_scales[nb] if int8_top else None,
                                            model.act_zero_points[nb] if int8_top else 0)
        # feature-major staging [F, B, D] -> sample-major Z [B, F, D]
        self.assemble_img = gather_module([(f * D * 2, f * B * D * 2, D * 2, B, D * 2, F * D * 2) for f in range(F)])
        self.emb_img = kernel_image()
        self.loaded = []
        self._load()

    def _plan(self):
        """Place the sharded nodes over the cards that are alive (device indices in the placement)."""
        p = partition_graph(self.graph, len(self.alive))
        self.placement = Placement([self.alive[c] for c in p.table_card], p.card_bytes)

    def _load(self):
        """Put the model on the cards: tables where the partitioner placed them, dense weights everywhere.
        A card lost on the way is dropped and the tables are placed again over the others."""
        from vnpu.errors import DeviceLost
        self.loaded = [None] * len(self.devices)
        for ci in list(self.alive):
            try:
                self._load_card(ci)
            except DeviceLost:
                self.lose(ci)
                return

    def lose(self, ci):
        """Card ci is gone: re-place its tables over the surviving cards and reload them."""
        if ci in self.alive:
            self.alive.remove(ci)
        if not self.alive:
            from vnpu.errors import DeviceLost
            raise DeviceLost("every card of the platform is lost")
        for d in self.devices:
            if not d._lost:
                d.reset()
        self._plan()
        self._load()

    def _load_card(self, ci):
        """Load one card's share of the model (again, after a reset)."""
        dev = self.devices[ci]
        if True:
            q = self.queues[ci][0]
            per = {"emb": dev.load(self.emb_img)["embedding_bag"], "inter": dev.load(self.inter_img)["interaction"],
                   "assemble": dev.load(self.assemble_img)["gather"], "bottom": [], "top": [], "tables": {}}
            for part in ("bottom", "top"):
                for img, wp, vecs, K, N, last, qp in self.layers[part]:
                    kern = dev.load(img)["gemm"]
                    wb = dev.alloc(wp.nbytes)
                    q.copy_to_device(wb, wp)
                    bufs = []
                    for v in vecs:              # [scale,] bias
                        vb = dev.alloc(v.nbytes)
                        q.copy_to_device(vb, v)
                        bufs.append(vb)
                    per[part].append((kern, wb, bufs, K, N, last, qp))
            for t, card in enumerate(self.placement.table_card):
                if card == ci:
                    tb = dev.alloc(self.model.tables[t].nbytes)
                    q.copy_to_device(tb, self.model.tables[t])
                    per["tables"][t] = tb
            q.synchronize()
            self.loaded[ci] = per

    def submit(self, r, dense, lookups, arrival_ns=0.0):
        """Issue request r (all of it, asynchronously) by walking the model graph; returns (output host
        array, start event, end event)."""
        c, B = self.cfg, self.batch
        F, D = c.features, c.dim
        dc = self.alive[r % len(self.alive)]                # the request's dense card (round robin)
        slot = r % self.inflight
        ddev, dq = self.devices[dc], self.queues[dc][slot]
        self.platform.advance_host(arrival_ns)
        start = dq.record()
        ld = self.loaded[dc]
        temps = []

        def alloc(dev, nbytes):
            buf = dev.alloc(nbytes)
            temps.append((dev, buf))
            return buf
        where = {}                                          # tensor -> (card, queue, buffer)
        zf = alloc(ddev, F * B * D * 2)                     # feature-major staging of `assemble` on the dense card
        act_bytes = 2                                       # int8 or fp16 activations: room for either
        for node in self.graph.nodes:
            if node.op == "embedding_bag":
                t = node.index
                card = self.placement.table_card[t]
                dev, q = self.devices[card], self.queues[card][slot]
                idx, off = lookups[t]
                args = EmbeddingArgs(self.model.tables[t], idx, offsets=off, format=c.table_format,
                                     out_dtype="fp16", dim=c.dim)
                ib, ob, pb, db = alloc(dev, idx.nbytes), alloc(dev, off.nbytes), alloc(dev, B * D * 2), alloc(dev, 128)
                tb = self.loaded[card]["tables"][t]
                desc = descriptor(args, tb.device_address, ib.device_address, ob.device_address, 0, pb.device_address)
                q.copy_to_device(ib, idx)
                q.copy_to_device(ob, off)
                q.copy_to_device(db, desc)
                q.launch(self.loaded[card]["emb"], db, pes=[0])
                where[node.output] = (card, q, pb)
            elif node.op == "fc":
                kern, wb, bufs, K, N, last, qp = (ld["bottom"] + ld["top"])[node.index]
                src = node.inputs[0]
                if src == "dense":
                    host_x = self.model.host_input(dense)
                    x = alloc(ddev, host_x.nbytes)
                    dq.copy_to_device(x, host_x)
                else:
                    x = where[src][2]
                feeds_assemble = any(n.op == "assemble" and n.inputs[0] == node.output for n in self.graph.nodes)
                # the layer feeding `assemble` writes straight into its slot 0 of the staging buffer
                y = zf if feeds_assemble else alloc(ddev, B * N * (4 if last else act_bytes))
                dq.launch(kern, x, wb, *bufs, y, *([qp] if qp is not None else []), pes=self.pes)
                where[node.output] = (dc, dq, y)
            elif node.op == "assemble":
                # move every pooled input to the dense card, into its slot of the staging buffer
                for k, name in enumerate(node.inputs[1:], 1):
                    card, q, buf = where[name]
                    if self.route == "p2p":
                        dq.wait(q.record())
                        dq.copy_peer(zf, buf, B * D * 2, dst_offset=k * B * D * 2)
                    else:
                        host = q.copy_to_host(buf)
                        dq.wait(q.record())
                        dq.copy_to_device(zf, host, offset=k * B * D * 2)
                z = alloc(ddev, F * B * D * 2)
                dq.launch(ld["assemble"], zf, z, pes=self.pes)
                where[node.output] = (dc, dq, z)
            elif node.op == "interaction":
                inter = alloc(ddev, B * c.interaction_width * 2)
                dq.launch(ld["inter"], where[node.inputs[0]][2], inter, pes=self.pes)
                where[node.output] = (dc, dq, inter)
            else:
                raise InvalidArgument(f"no handler for op {node.op!r} of node {node.name}")
        out = dq.copy_to_host(where[self.graph.output][2], dtype=np.float32)
        end = dq.record()
        self._temps = getattr(self, "_temps", []) + temps
        return out.reshape(B, 1), start, end

    def serve_one(self, r, dense, lookups, arrival_ns=0.0, policy="retry", max_retries=1):
        """Run request r to completion, surviving device faults by the runtime's policy: "retry" resets the
        faulted card, reloads its share of the model and runs the request again (up to max_retries);
        "fail" reports the error. A lost card (link down) cannot be reset: its requests fail.
        Returns (status, output or None, start event or None, end event or None, error or None)."""
        from vnpu.errors import DeviceFault, DeviceLost
        attempts = 0
        while True:
            try:
                out, start, end = self.submit(r, dense, lookups, arrival_ns)
                for i in self.alive:
                    self.queues[i][r % self.inflight].synchronize()   # surfaces faults reported asynchronously
                return ("retried" if attempts else "ok"), out, start, end, None
            except DeviceLost as e:
                # the card is gone: its tables move to the other cards; the request runs again there
                self._drop_temps()
                lost = [i for i in self.alive if self.devices[i]._lost]
                for i in lost:
                    self.lose(i)
                if policy != "retry" or attempts >= max_retries or not lost:
                    return "failed", None, None, None, e
                attempts += 1
            except DeviceFault as e:
                self._drop_temps()
                faulted = [i for i, d in enumerate(self.devices) if d.sticky is not None]
                if policy != "retry" or attempts >= max_retries or not faulted:
                    for i in faulted:                       # leave the cards usable for the next request
                        self.devices[i].reset()
                        self._load_card(i)
                    return "failed", None, None, None, e
                for i in faulted:
                    self.devices[i].reset()
                    self._load_card(i)
                attempts += 1

    def _drop_temps(self):
        """Forget this request's temporaries (a reset frees them on the faulted card; free the rest)."""
        for dev, buf in getattr(self, "_temps", []):
            if dev.sticky is None and not dev._lost and not buf.freed and buf.generation == dev.generation:
                buf.free()
        self._temps = []

    def release(self):
        for dev, buf in getattr(self, "_temps", []):
            if not buf.freed and buf.generation == dev.generation:
                buf.free()
        self._temps = []


def _serve_with_faults(platform, model, batch, requests, route, seed, policy, progress):
    ex = Executor(platform, model, batch, inflight=1, route=route)
    rng = np.random.default_rng(seed)
    outcomes, errors, lat, wrong, max_err = {"ok": 0, "retried": 0, "failed": 0}, {}, [], 0, 0.0
    for r in range(requests):
        dense, lookups = model.make_request(batch, rng)
        status, out, start, end, err = ex.serve_one(r, dense, lookups, policy=policy)
        outcomes[status] += 1
        if err is not None:
            errors[type(err).__name__] = errors.get(type(err).__name__, 0) + 1
        if out is not None:
            e = float(np.abs(out - model.reference(dense, lookups)).max())
            max_err = max(max_err, e)
            wrong += e > 1e-3
            lat.append(end.time_ns - start.time_ns)
        if progress:
            progress(r + 1, requests)
    ex.release()
    return {"batch": batch, "requests": requests, "route": route, "fault_policy": policy,
            "completed": outcomes["ok"] + outcomes["retried"], "retried": outcomes["retried"],
            "failed": outcomes["failed"], "errors": errors, "wrong_outputs": wrong, "max_abs_error": max_err,
            "latency_p50_us": _percentile(lat, 50) / 1e3 if lat else None,
            "latency_p99_us": _percentile(lat, 99) / 1e3 if lat else None,
            "health": [d.health() for d in platform.devices]}


def _percentile(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(math.ceil(q / 100 * len(v))) - 1))]


def serve(platform, model: DLRM, batch, requests=16, inflight=4, route="p2p", seed=1, trace=False, progress=None,
          fault_policy="retry"):
    """Serve `requests` requests of `batch` samples; arrivals keep about `inflight` in flight. Returns a
    report: latency p50/p99 (virtual), throughput, every output checked against the numpy model. When
    faults are injected into a card, requests run one by one under `fault_policy` (Executor.serve_one)
    and the report counts completed, retried and failed requests."""
    if any(d.faults is not None and d.faults.active for d in platform.devices):
        return _serve_with_faults(platform, model, batch, requests, route, seed, fault_policy, progress)
    for d in platform.devices:
        d.stats.reset()
    platform.switch.reset()
    ex = Executor(platform, model, batch, inflight=inflight, route=route)
    for q in [q for qs in ex.queues for q in qs]:
        q.tail_ns = 0.0
    for d in platform.devices:
        d.busy_until_ns = 0.0
        d.stats.reset()
    platform.switch.reset()
    platform._host.now = 0.0
    if trace:
        platform.start_trace()
    rng = np.random.default_rng(seed)
    reqs = [model.make_request(batch, rng) for _ in range(requests)]
    # calibrate the arrival interval on one request served alone
    out, s, e = ex.submit(0, *reqs[0])
    single = e.time_ns - s.time_ns
    for q in [q for qs in ex.queues for q in qs]:
        q.synchronize()
    base = platform.host_ns
    interval = single / inflight
    results = []
    max_err = 0.0
    for r, (dense, lookups) in enumerate(reqs):
        out, s, e = ex.submit(r, dense, lookups, arrival_ns=base + r * interval)
        results.append((base + r * interval, e.time_ns, out, dense, lookups))
        if progress:
            progress(r + 1, requests)
    for q in [q for qs in ex.queues for q in qs]:
        q.synchronize()
    if trace:
        platform.stop_trace()
    wrong = 0
    for arrival, end, out, dense, lookups in results:
        ref = model.reference(dense, lookups)
        err = float(np.abs(out - ref).max())
        max_err = max(max_err, err)
        wrong += err > 1e-3
    lat = [end - arrival for arrival, end, *_ in results]
    span = max(end for _, end, *_ in results) - results[0][0]
    kernels = {}
    for d in platform.devices:
        for name, (n, ns) in d.stats.kernels.items():
            k = kernels.setdefault(name, [0, 0.0])
            k[0] += n
            k[1] += ns
    cards = []
    for d in platform.devices:
        cyc = span * d.config.clock_ghz
        cards.append({"card": d.index, "tables": [t for t, c in enumerate(ex.placement.table_card) if c == d.index],
                      "utilization": {u: d.stats.busy[u] / (cyc * (1 if u == "embedding" else d.config.pes)
                                                            * (d.config.dma.engines_per_pe if u == "dma" else 1))
                                      for u in d.stats.UNITS},
                      "bytes": dict(d.stats.bytes)})
    ex.release()
    return {"batch": batch, "requests": requests, "route": route, "single_request_us": single / 1e3,
            "latency_p50_us": _percentile(lat, 50) / 1e3, "latency_p99_us": _percentile(lat, 99) / 1e3,
            "throughput_samples_per_s": requests * batch / (span / 1e9), "max_abs_error": max_err,
            "wrong_outputs": wrong, "kernel_time_us": {k: v[1] / 1e3 for k, v in kernels.items()},
            "cards": cards, "pcie_bytes": platform.switch.bytes_moved(), "span_us": span / 1e3}


def int8_score_bound(name, batches=24, batch=64, seed0=1000, rows_scale=1e-3, table_format="int8_rowwise"):
    """The largest |int8-dense score - fp16 score| of preset `name` over `batches` requests of `batch` samples
    (seeds seed0, seed0 + 1, ...; the calibration never sees them). The int8 numpy model equals the card bit
    for bit (tests/driver/test_dlrm.py), so this is the card's figure."""
    m8 = DLRM(preset(name, rows_scale, table_format, "int8"))
    m16 = DLRM(preset(name, rows_scale, table_format, "fp16"))
    worst = 0.0
    for s in range(batches):
        dense, lookups = m16.make_request(batch, np.random.default_rng(seed0 + s))
        worst = max(worst, float(np.abs(m8.reference(dense, lookups) - m16.reference(dense, lookups)).max()))
    return worst, [i for i, q in enumerate(m8.int8_layers) if q]


if __name__ == "__main__":      # python -m vnpu.driver.dlrm [batches]: the int8 bound of every preset
    import sys
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 24
    for name in PRESETS:
        worst, layers = int8_score_bound(name, n)
        print(f"{name}: max |int8 - fp16| = {worst:.4f} over {n} batches of 64 (int8 layers {layers})")
