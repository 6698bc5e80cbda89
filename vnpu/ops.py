"""vnpu.ops: numpy in, numpy out, computed on a virtual card — for users who do not write kernels.

Every op runs the library kernel on a card (by default one `reference` card per process, or the one given
to `vnpu.ops.use(card)`), checks its inputs on the host first (InvalidArgument naming the first bad
position; nothing reaches the card), and records a Profile: the op's cycles, time, bytes per memory level
and unit utilization, from the same run that produced the numbers.

    with vnpu.ops.profile() as prof:
        y = vnpu.ops.embedding_bag(table, idx, offsets=off)
    print(prof[-1].cycles, prof[-1].gbps)
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field

_lock = threading.Lock()
_default = None
_local = threading.local()


def default_card():
    """The card ops run on unless `use()` chose another (created on first use)."""
    global _default
    with _lock:
        if _default is None:
            from vnpu.emulator.card import Card
            _default = Card("reference")
        return _default


def use(card):
    """Run subsequent ops on `card` (a vnpu.emulator.card.Card); returns the previous one."""
    global _default
    with _lock:
        prev, _default = _default, card
        return prev


@dataclass
class Profile:
    op: str
    cycles: int
    seconds: float
    summary: dict = field(repr=False)
    extra: dict = field(default_factory=dict)

    @property
    def bytes(self):
        return self.summary["bytes"]

    @property
    def gbps(self):
        """Achieved bandwidth of the op's main data stream (for embedding_bag: the gathered rows)."""
        moved = self.extra.get("gathered_bytes", self.bytes["dram_read"] + self.bytes["dram_write"])
        return moved / self.seconds / 1e9 if self.seconds else 0.0


def _record(op, result, **extra):
    prof = Profile(op, result.cycles, result.seconds, result.summary(), extra)
    _local.last = prof
    for sink in getattr(_local, "sinks", []):
        sink.append(prof)
    return prof


def last_profile():
    """The Profile of the last op this thread ran (None before the first)."""
    return getattr(_local, "last", None)


@contextlib.contextmanager
def profile():
    """Collect the Profile of every op run inside the block, in order."""
    sink = []
    _local.sinks = getattr(_local, "sinks", []) + [sink]
    try:
        yield sink
    finally:
        _local.sinks = [s for s in _local.sinks if s is not sink]


def embedding_bag(weight, indices, offsets=None, lengths=None, per_sample_weights=None, mode="sum",
                  format="fp32", include_last_offset=False, out_dtype="fp32", dim=None, table_memory="dram",
                  card=None):
    """Pooled embedding lookup (PyTorch's embedding_bag / Caffe2's SparseLengthsSum) on the embedding unit.

    weight: an fp32 table [rows, dim] (packed to `format` on the host), or an already packed uint8 table
    [rows, row_bytes] in one of fp32, fp16, int8_rowwise, int8_rowwise_fp16, int4_rowwise (PyTorch's
    prepack layouts). indices: int32 or int64. offsets (with include_last_offset) or lengths. mode: sum or
    mean; per_sample_weights for a weighted sum. dim: needed only for an int4 table of odd dimension.
    table_memory: "dram" or "shared" (the card's on-chip SRAM). Returns [bags, dim] fp32 or fp16.
    """
    from vnpu.kernels.embedding import EmbeddingArgs, run_embedding_bag
    args = EmbeddingArgs(weight, indices, offsets, lengths, per_sample_weights, mode, format, include_last_offset,
                         out_dtype, dim)
    card = card or default_card()
    out, result = run_embedding_bag(card, args, table_memory)
    gathered = len(args.indices) * args.table.shape[1]
    _record("embedding_bag", result, lookups=args.n_bags, rows_gathered=len(args.indices), gathered_bytes=gathered,
            lookups_per_s=args.n_bags / result.seconds if result.seconds else 0.0)
    return out


def _run(module, fn, op, *args, card=None, **kw):
    """Call a library host function on the ops card, record its profile, return the output array."""
    import importlib
    f = getattr(importlib.import_module(f"vnpu.kernels.{module}"), fn)
    out, result = f(card or default_card(), *args, **kw)
    _record(op, result)
    return out


def matmul(a, b, *, card=None, pes=None):
    """a @ b on the matrix unit: int8 x int8 -> int32, fp16 x fp16 -> fp32; [B, M, K] @ [B, K, N] batched."""
    return _run("dense", "gemm", "matmul", a, b, card=card, pes=pes)


def linear(x, weight, bias=None, *, x_scale=None, w_scale=None, out_scale=None, out_zero_point=0, card=None,
           pes=None):
    """A fully connected layer, PyTorch layout (weight [out, in]): y = x @ weight.T + bias. int8 needs x_scale
    and w_scale (per tensor or per output row) and gives fp32, or int8 with out_scale; fp16 gives fp32."""
    return _run("dense", "linear", "linear", x, weight, bias, x_scale=x_scale, w_scale=w_scale,
                out_scale=out_scale, out_zero_point=out_zero_point, card=card, pes=pes)


def add(a, b, *, card=None, pes=None):
    return _run("elementwise", "add", "add", a, b, card=card, pes=pes)


def mul(a, b, *, card=None, pes=None):
    return _run("elementwise", "mul", "mul", a, b, card=card, pes=pes)


def relu(x, *, card=None, pes=None):
    return _run("elementwise", "relu", "relu", x, card=card, pes=pes)


def sigmoid(x, *, card=None, pes=None):
    return _run("elementwise", "sigmoid", "sigmoid", x, card=card, pes=pes)


def tanh(x, *, card=None, pes=None):
    return _run("elementwise", "tanh", "tanh", x, card=card, pes=pes)


def gelu(x, *, card=None, pes=None):
    return _run("elementwise", "gelu", "gelu", x, card=card, pes=pes)


def quantize(x, scale, zero_point=0, *, card=None, pes=None):
    return _run("elementwise", "quantize", "quantize", x, scale, zero_point, card=card, pes=pes)


def dequantize(q, scale, zero_point=0, *, card=None, pes=None):
    return _run("elementwise", "dequantize", "dequantize", q, scale, zero_point, card=card, pes=pes)


def concat(arrays, axis=-1, *, card=None, pes=None):
    return _run("elementwise", "concat", "concat", arrays, axis, card=card, pes=pes)


def transpose(x, *, card=None, pes=None):
    return _run("elementwise", "transpose", "transpose", x, card=card, pes=pes)


def layer_norm(x, gamma=None, beta=None, eps=1e-5, *, card=None, pes=None):
    return _run("norm", "layer_norm", "layer_norm", x, gamma, beta, eps, card=card, pes=pes)


def softmax(x, *, card=None, pes=None):
    return _run("norm", "softmax", "softmax", x, card=card, pes=pes)


def conv2d(x, w, bias=None, stride=1, padding=0, *, card=None, pes=None):
    return _run("conv", "conv2d", "conv2d", x, w, bias=bias, stride=stride, padding=padding, card=card, pes=pes)


def dot_interaction(dense, emb, *, card=None, pes=None):
    return _run("interaction", "dot_interaction", "dot_interaction", dense, emb, card=card, pes=pes)
