"""The library's ops on numpy arrays, public as `vnpu.ops`: numpy in, numpy out, computed on a virtual card — for users who do not write kernels.

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

import numpy as np

from vnpu.errors import InvalidArgument

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
    card = _check_card(card)
    _check_arrays("embedding_bag", weight, indices, offsets, lengths, per_sample_weights)
    args = EmbeddingArgs(weight, indices, offsets, lengths, per_sample_weights, mode, format, include_last_offset,
                         out_dtype, dim)
    out, result = run_embedding_bag(card, args, table_memory)
    gathered = len(args.indices) * args.table.shape[1]
    _record("embedding_bag", result, lookups=args.n_bags, rows_gathered=len(args.indices), gathered_bytes=gathered,
            lookups_per_s=args.n_bags / result.seconds if result.seconds else 0.0)
    return out


def _check_card(card):
    from vnpu.emulator.card import Card
    if card is None:
        return default_card()
    if not isinstance(card, Card):
        raise InvalidArgument(f"card must be a vnpu.emulator.card.Card or None, got {type(card).__name__}")
    return card


def _check_pes(pes, card, op):
    """pes: None (every PE of the card), a count n (PEs 0..n-1), or distinct PE numbers of the card (the
    driver's rule, driver/validate.py)."""
    from vnpu.driver import validate
    n_card = card.config.pes
    if validate.is_int(pes):
        if not 1 <= int(pes) <= n_card:
            raise InvalidArgument(f"{op}: pes={int(pes)}: a count of PEs must be 1..{n_card}")
        return tuple(range(int(pes)))
    return validate.pes(pes, n_card, name=f"{op}: pes")


def _check_arrays(op, *args):
    """A list or tuple given for an array must be a rectangular array of numbers (numpy raises ValueError)."""
    for i, arg in enumerate(args):
        # (a sequence holding arrays is a list of tensors, as concat takes: each is checked by the op)
        if isinstance(arg, (list, tuple)) and not any(isinstance(v, np.ndarray) for v in arg):
            try:
                np.asarray(arg)
            except (ValueError, TypeError) as e:
                raise InvalidArgument(f"{op}: argument {i + 1} is not an array: {str(e).splitlines()[0][:80]}") \
                    from None


def _run(module, fn, op, *args, card=None, **kw):
    """Call a library host function on the ops card, record its profile, return the output array."""
    import importlib
    f = getattr(importlib.import_module(f"vnpu.kernels.{module}"), fn)
    card = _check_card(card)
    _check_arrays(op, *args)
    if "pes" in kw:
        kw["pes"] = _check_pes(kw["pes"], card, op)
    out, result = f(card, *args, **kw)
    _record(op, result)
    return out


def matmul(a, b, *, card=None, pes=None):
    """a @ b on the matrix unit: a [M, K] @ b [K, N], or batched [B, M, K] @ [B, K, N]; both int8 (-> int32,
    exact, wrapping modulo 2**32) or both float16 (-> float32: products exact, sums in fp32 in K order; NaN
    and inf propagate, a NaN made by the unit is the canonical quiet NaN). M, N or B = 0 give an empty result,
    K = 0 zeros (as PyTorch). Both float32: `bmm`'s kernel (exact products summed in fp64, rounded once)."""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype == np.float32:
        return _run("attention", "bmm", "matmul", a, b, card=card, pes=pes)
    return _run("dense", "gemm", "matmul", a, b, card=card, pes=pes)


def linear(x, weight, bias=None, *, x_scale=None, w_scale=None, out_scale=None, out_zero_point=0, activation=None,
           card=None, pes=None):
    """A fully connected layer, PyTorch layout (x [M, K], weight [N, K]): y = x @ weight.T + bias (bias float32
    [N]). int8 x and weight need x_scale and w_scale (per tensor or per output row): y = fp32(acc) *
    f32(x_scale * w_scale[n]) + bias[n], each step rounded to fp32 (acc exact in int32); with out_scale the
    result is requantized to int8 like `quantize`. fp16 x and weight: fp32 sums in K order, + bias in fp32.
    activation None, "relu" or "sigmoid": applied in the epilogue to the fp32 result, before any
    requantization. K = 0 gives the bias (as PyTorch), M or N = 0 an empty result."""
    return _run("dense", "linear", "linear", x, weight, bias, x_scale=x_scale, w_scale=w_scale,
                out_scale=out_scale, out_zero_point=out_zero_point, activation=activation, card=card, pes=pes)


def add(a, b, *, card=None, pes=None):
    """a + b elementwise on the vector unit. a, b: same shape, both float32 or both float16 (any layout, read
    flat, C order). fp32 in fp32; fp16 computed in fp32 and rounded to fp16 (nearest even). IEEE: NaN
    propagates, inf - inf is NaN, signed zeros as PyTorch. Returns the same shape and dtype. Shapes that
    differ broadcast as numpy / PyTorch (a number for either operand too): the broadcasting kernel."""
    if _broadcasting(a, b):
        return _run("broadcast", "add", "add", a, b, card=card, pes=pes)
    return _run("elementwise", "add", "add", a, b, card=card, pes=pes)


def mul(a, b, *, card=None, pes=None):
    """a * b elementwise on the vector unit; dtypes, layout and numerics as `add` (0 * inf is NaN); shapes
    broadcast as `add`."""
    if _broadcasting(a, b):
        return _run("broadcast", "mul", "mul", a, b, card=card, pes=pes)
    return _run("elementwise", "mul", "mul", a, b, card=card, pes=pes)


def _broadcasting(a, b):
    """Not two arrays of one shape: the broadcasting kernel (kernels/broadcast.py) computes it."""
    return not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape)


def relu(x, *, card=None, pes=None):
    """max(x, 0) elementwise (float32 or float16, any shape). Exact; NaN and -0.0 pass through (as PyTorch)."""
    return _run("elementwise", "relu", "relu", x, card=card, pes=pes)


def sigmoid(x, *, card=None, pes=None):
    """1 / (1 + exp(-x)) elementwise (float32 or float16, any shape), computed in fp64 and rounded once to the
    element type (within one ulp of PyTorch). sigmoid(NaN) = NaN, sigmoid(+inf) = 1, sigmoid(-inf) = 0."""
    return _run("elementwise", "sigmoid", "sigmoid", x, card=card, pes=pes)


def tanh(x, *, card=None, pes=None):
    """tanh(x) elementwise (float32 or float16, any shape), fp64 then rounded once; NaN -> NaN, +-inf -> +-1."""
    return _run("elementwise", "tanh", "tanh", x, card=card, pes=pes)


def gelu(x, approximate="none", *, card=None, pes=None):
    """torch.nn.functional.gelu. approximate="none": the exact (erf) GELU, 0.5 x (1 + erf(x / sqrt 2)),
    elementwise (float32 or float16, any shape), fp64 then rounded once. NaN -> NaN, +inf -> +inf, -inf -> -0.0
    (the limits; PyTorch gives NaN at -inf, and at +inf on its vectorized fp32 path). approximate="tanh":
    PyTorch's formula and order in fp32, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (tanh in fp64 rounded
    to fp32; fp16 computed in fp32, rounded once): within an fp32 ulp of PyTorch, NaN at -inf as PyTorch."""
    if approximate != "none":
        return _run("attention", "gelu", "gelu", x, approximate, card=card, pes=pes)
    return _run("elementwise", "gelu", "gelu", x, card=card, pes=pes)


def quantize(x, scale, zero_point=0, *, card=None, pes=None):
    """float32 (any shape) -> int8: q = clamp(round_half_even(fma(x, 1.0f / f32(scale), zero_point)), -128,
    127), x * inv + zero_point rounded ONCE to fp32 (the card's vcvt): torch.quantize_per_tensor(x, scale,
    zero_point, torch.qint8) bit for bit, ties included. +-inf clamp to 127 / -128; NaN gives 0 (PyTorch
    gives an arbitrary code). scale: a positive finite number; zero_point: an int in [-128, 127]."""
    return _run("elementwise", "quantize", "quantize", x, scale, zero_point, card=card, pes=pes)


def dequantize(q, scale, zero_point=0, *, card=None, pes=None):
    """int8 (any shape) -> float32: y = (q - zero_point) * f32(scale), one fp32 rounding (torch.dequantize
    bit for bit)."""
    return _run("elementwise", "dequantize", "dequantize", q, scale, zero_point, card=card, pes=pes)


def concat(arrays, axis=-1, *, card=None, pes=None):
    """Concatenate arrays (any plain dtype, one dtype, equal shapes outside axis) along axis (default the last)
    by DMA: `cat` with numpy's argument name and default. Moves bits: exact for every value, NaN payloads
    included. Empty inputs allowed."""
    return _run("plumbing", "cat", "concat", arrays, axis, card=card, pes=pes)


def transpose(x, dim0=0, dim1=1, *, card=None, pes=None):
    """torch.transpose(x, dim0, dim1): dimensions dim0 and dim1 swapped (a 2-D array with the defaults: x.T).
    Any rank and plain dtype, by DMA only (kernels/plumbing.py, permute). Moves bits: exact."""
    return _run("plumbing", "transpose", "transpose", x, dim0, dim1, card=card, pes=pes)


# --- tensor plumbing (kernels/plumbing.py): PyTorch's names and arguments, any plain dtype unless stated -------
def permute(x, dims, *, card=None, pes=None):
    """torch.permute(x, dims): dimension dims[k] of x becomes dimension k (any rank). By DMA only: 2-D strided
    blocks, and a block transposed in local memory (vnpu.move) when the last dimension moves. Exact bits."""
    return _run("plumbing", "permute", "permute", x, dims, card=card, pes=pes)


def reshape(x, shape, *, card=None, pes=None):
    """torch.reshape(x, shape) (one -1 inferred). Host-side and free, no launch (card and pes are accepted like
    every op's and unused): a contiguous array is reshaped in place (a view), a non-contiguous one is copied by
    numpy first, as PyTorch copies."""
    from vnpu.kernels.plumbing import reshape as _reshape
    return _reshape(x, shape)


def view(x, *shape, card=None, pes=None):
    """torch.Tensor.view(*shape): reshape of a contiguous array (an error for a non-contiguous one, as
    PyTorch's view). Host-side, no launch (card and pes accepted and unused)."""
    from vnpu.kernels.plumbing import view as _view
    return _view(x, *shape)


def narrow(x, dim, start, length, *, card=None, pes=None):
    """torch.narrow(x, dim, start, length): a copy of length indices of dim from start (negative start counts
    from the end). By DMA (strided blocks, or DRAM-to-DRAM transfers for long rows). Exact bits."""
    return _run("plumbing", "narrow", "narrow", x, dim, start, length, card=card, pes=pes)


def slice_(x, dim=0, start=None, end=None, step=1, *, card=None, pes=None):
    """x[start:end] along dim (aten.slice: Python's bounds, None and negative included); step 1 only."""
    return _run("plumbing", "slice_", "slice", x, dim, start, end, step, card=card, pes=pes)


def cat(tensors, dim=0, *, card=None, pes=None):
    """torch.cat(tensors, dim): one dtype, equal shapes outside dim (1-D empty arrays skipped, as PyTorch). By
    DMA, each input straight into its block of the result. Exact bits."""
    return _run("plumbing", "cat", "cat", tensors, dim, card=card, pes=pes)


def split(x, split_size_or_sections, dim=0, *, card=None, pes=None):
    """torch.split(x, split_size_or_sections, dim): a tuple of copies of the pieces (an int: pieces of that
    size, the last smaller; a list: their sizes). 13 pieces per launch; each launch's profile is recorded."""
    from vnpu.kernels.plumbing import split as _split
    card = _check_card(card)
    _check_arrays("split", x)
    if pes is not None:
        pes = _check_pes(pes, card, "split")
    pieces, results = _split(card, x, split_size_or_sections, dim, pes=pes)
    for result in results:
        _record("split", result)
    return pieces


def pad(x, pad, mode="constant", value=None, *, card=None, pes=None):   # noqa: A002 (PyTorch's names)
    """torch.nn.functional.pad(x, pad, mode="constant", value): pad = (left, right) of the last dim, or (left,
    right, top, bottom) of the last two; negative entries crop. value (None: 0) in x's dtype; every byte moves
    by DMA (the fill too), so NaN, -0.0 and the fill's bits are exact."""
    return _run("plumbing", "pad", "pad", x, pad, mode, value, card=card, pes=pes)


def to(x, dtype, *, card=None, pes=None):
    """x.to(dtype) between float32, float16, int8 and int32 on the vector unit (vcvt), as PyTorch converts:
    float -> float rounds to nearest even (NaN stays NaN, quieted; overflow to +-inf), float -> int rounds
    toward zero, int32 -> int8 keeps the low byte, int -> float rounds to nearest. Floats outside the integer's
    range saturate and NaN gives 0 (undefined behaviour in PyTorch). The same dtype: a copy by DMA."""
    return _run("plumbing", "to", "to", x, dtype, card=card, pes=pes)


def where(condition, input, other, *, card=None, pes=None):   # noqa: A002 (PyTorch's names)
    """torch.where(condition, input, other): input where the bool array condition is true, else other. input and
    other: arrays of condition's shape (one dtype) or numbers (taking the other's dtype). No compare: an integer
    select on the raw bits, other + c * (input - other) with wrapping arithmetic, so every bit is exact."""
    return _run("plumbing", "where", "where", condition, input, other, card=card, pes=pes)


def gather(x, dim, index, *, card=None, pes=None):
    """torch.gather(x, dim, index): out[p] = x[p with coordinate dim set to index[p]] (index: x's rank, sizes at
    most x's outside dim). One lookup per element on the card's embedding unit; exact bits (x's bytes go
    through the unit as exact fp16 codes, so -0.0 and NaN payloads survive its fp32 sum)."""
    return _run("plumbing", "gather", "gather", x, dim, index, card=card, pes=pes)


def index_select(x, dim, index, *, card=None, pes=None):
    """torch.index_select(x, dim, index): the slices at index (1-D) along dim, one embedding-unit lookup per
    slice (at most 65536 bytes each); exact bits as gather."""
    return _run("plumbing", "index_select", "index_select", x, dim, index, card=card, pes=pes)


def layer_norm(x, gamma=None, beta=None, eps=1e-5, *, card=None, pes=None):
    """Layer normalization over the last axis of a 2-D float32 array [rows, D]; gamma, beta: float32 [D] or
    None; eps >= 0. Per row, every step in fp32 (sums added in index order in fp64, rounded once): the row is
    shifted by its first element, mean and variance of the shifted row, rstd = 1/sqrt(var + eps) (fp64,
    rounded), y = (x - mean) * rstd * gamma + beta. A constant row gives exactly beta (as PyTorch); against
    float64 math the error is at most 1e-5 * (1 + |gamma|) plus fp32 rounding of the result. A row holding
    NaN or +-inf is NaN in every element (as PyTorch). Returns float32 [rows, D]. Any rank and float16 too
    (gamma, beta float16 [D] or None): the same fp32 steps on the converted values, rounded once to fp16."""
    if isinstance(x, np.ndarray) and (x.dtype == np.float16 or x.ndim != 2):
        return _run("attention", "layer_norm", "layer_norm", x, gamma, beta, eps, card=card, pes=pes)
    return _run("norm", "layer_norm", "layer_norm", x, gamma, beta, eps, card=card, pes=pes)


def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0, *, card=None, pes=None):
    """torch.nn.functional.local_response_norm on the card (fp32, channels on axis 1; beta 0.5, 0.75 or 1: the
    vector unit has rsqrt and recip, not pow)."""
    return _run("norm", "local_response_norm", "local_response_norm", x, size, alpha, beta, k, card=card, pes=pes)


def softmax(x, *, card=None, pes=None):
    """Softmax over the last axis of a 2-D float32 array: exp(x - max) / sum, fp32 steps, exp in fp64 rounded
    once (within 4e-6 relative of float64 math). A row holding NaN or +inf, or all -inf, is all NaN (as
    PyTorch); -inf elements of an otherwise finite row give 0."""
    return _run("norm", "softmax", "softmax", x, card=card, pes=pes)


def conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, *, x_scale=None, w_scale=None,
           residual=None, activation=None, clip=None, out_scale=None, out_zero_point=0, card=None, pes=None):
    """torch.nn.functional.conv2d on the card: x [N, C, H, W], w [OC, C/groups, KH, KW], bias [OC] or None;
    stride, dilation: ints or (h, w); padding: int, (h, w) or (top, bottom, left, right) (zeros).
    float16 x and w: products exact, sums in fp32 in (c, kh, kw) order; float32 x or w (either promotes both,
    as PyTorch does): computed in fp32 (products exact, fp64 sums rounded to fp32); the result is float32.
    int8 x and w with x_scale (per tensor) and w_scale (per output channel): exact int32 sums dequantized to
    float32, or requantized to int8 with out_scale / out_zero_point. Fused on the card: residual [N, OC, OH,
    OW] (added after the bias) and activation None | 'relu' | 'relu6' | 'clip' (clip=(lo, hi)).
    Groups = 1 without the int8 and fused options runs kernels/conv.py (bit-exact with its reference); the rest
    runs the kernel-language kernel of kernels/convolution.py. NaN and inf propagate as in IEEE arithmetic."""
    general = (groups != 1 or dilation not in (1, (1, 1)) or residual is not None or activation is not None
               or (isinstance(padding, (tuple, list)) and len(padding) == 4)
               or any(getattr(a, "dtype", None) == np.int8 for a in (x, w)))
    if not general:
        return _run("conv", "conv2d", "conv2d", x, w, bias=bias, stride=stride, padding=padding, card=card,
                    pes=pes)
    kw = dict(x_scale=x_scale, w_scale=w_scale, residual=residual, activation=activation, clip=clip,
              out_scale=out_scale, out_zero_point=out_zero_point)
    if getattr(x, "dtype", None) != np.int8:
        kw["out_dtype"] = "fp32"
    return _run("convolution", "conv2d", "conv2d", x, w, bias, stride, padding, dilation, groups, card=card,
                pes=pes, **kw)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,  # noqa: A002
                     dilation=1, *, x_scale=None, w_scale=None, out_scale=None, out_zero_point=0, activation=None,
                     clip=None, residual=None, card=None, pes=None):
    """torch.nn.functional.conv_transpose2d on the card, PyTorch's argument order: input [N, C_in, H, W], weight
    [C_in, C_out/groups, KH, KW], bias [C_out] or None; stride, padding, output_padding, dilation: ints or
    (h, w); output_padding smaller than stride or dilation (PyTorch's rule). Output size (H-1)*stride -
    2*padding + dilation*(K-1) + output_padding + 1. Computed as conv2d (kernels/convolution.py) of the
    zero-inserted, padded input with the flipped weights (kernels/conv_transpose.py): the card does ~stride^2
    times the op's MACs. float16 -> float16 (fp32 sums), float32 -> float32 (exact products, fp32 / fp64
    sums; mixed: widened to float32); int8 input and weight with x_scale (per tensor) and w_scale (per
    output channel or one number): exact int32 sums dequantized to float32, or requantized to int8 with
    out_scale / out_zero_point. Fused: residual [N, C_out, OH, OW] (after the bias) and activation None |
    'relu' | 'relu6' | 'clip' (clip=(lo, hi)). NaN and inf in the input propagate as PyTorch's; NaN or inf
    in the weight poisons every output its tap reads (the inserted zeros too), more than PyTorch's."""
    return _run("conv_transpose", "conv_transpose2d", "conv_transpose2d", input, weight, bias, stride, padding,
                output_padding, groups, dilation, x_scale=x_scale, w_scale=w_scale, residual=residual,
                activation=activation, clip=clip, out_scale=out_scale, out_zero_point=out_zero_point, card=card,
                pes=pes)


def dot_interaction(dense, emb, *, card=None, pes=None):
    """DLRM dot interaction: dense [B, D] and pooled embeddings emb [B, T, D], both float32 or both float16.
    Returns float32 [B, D + F(F-1)/2] (F = T + 1): the dense row, then the lower triangle (i > j, row-major)
    of Z Z^T with Z = [dense; emb]. fp32 inputs multiply in fp32 on the matrix unit (exact products summed
    in fp64 in D order, rounded once); fp16 inputs in fp16 with fp32 sums in D order. NaN and inf
    propagate as in IEEE (PyTorch's NaN positions). B = 0, T = 0 and D = 0 give PyTorch's results."""
    return _run("interaction", "dot_interaction", "dot_interaction", dense, emb, card=card, pes=pes)


# --- pooling and batch norm (kernels/pool.py), torch.nn.functional's names and arguments --------------------------
def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False, *,
               card=None, pes=None):
    """torch.nn.functional.max_pool2d on [N, C, H, W] or [C, H, W], float32 or float16: kernel_size, stride
    (None: the kernel size), padding (-inf, at most half the kernel), dilation: ints or (h, w) pairs;
    ceil_mode as PyTorch (a last window must start inside the input or its left padding). Exact: NaN in a
    window gives NaN, -0.0 and 0.0 tie to the first in (kh, kw) order. return_indices is not supported."""
    if return_indices:
        raise InvalidArgument("max_pool2d: return_indices=True is not supported (the card returns the values)")
    return _run("pool", "max_pool2d", "max_pool2d", x, kernel_size, stride, padding, dilation, ceil_mode, card=card,
                pes=pes)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, card=None, pes=None):
    """torch.nn.functional.avg_pool2d on [N, C, H, W] or [C, H, W], float32 or float16, with PyTorch's divisor
    (padding, ceil_mode, count_include_pad, divisor_override). fp32 sums in (kw, kh) order (fp16 inputs
    summed in fp32), times fp32(1 / divisor), rounded once to the element type: within a few fp32 ulps of
    PyTorch's sum / divisor. NaN and inf propagate as in IEEE sums."""
    return _run("pool", "avg_pool2d", "avg_pool2d", x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                divisor_override, card=card, pes=pes)


def adaptive_avg_pool2d(x, output_size, *, card=None, pes=None):
    """torch.nn.functional.adaptive_avg_pool2d on [N, C, H, W] or [C, H, W], float32 or float16. output_size 1
    (or (1, 1)): the global average pool, one fp64 sum per plane rounded once to fp32, times fp32(1 / (H W));
    an output size dividing H and W: avg_pool2d with kernel = stride = H / oh, W / ow."""
    return _run("pool", "adaptive_avg_pool2d", "adaptive_avg_pool2d", x, output_size, card=card, pes=pes)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5, *,
               card=None, pes=None):
    """torch.nn.functional.batch_norm in inference form (training=False): x [N, C, ...] float32 or float16,
    running statistics and weight / bias [C]. On the card, per channel invstd = rsqrt(var + eps), alpha =
    weight * invstd, beta = bias - mean * alpha (PyTorch's CPU formula), y = x * alpha + beta in fp32 (fp16
    rounded once). training=True raises InvalidArgument."""
    return _run("pool", "batch_norm", "batch_norm", x, running_mean, running_var, weight, bias, training, momentum,
                eps, card=card, pes=pes)


# --- broadcasting elementwise ops, clamp, reductions (kernels/broadcast.py), PyTorch's names and arguments ----------
def sub(a, b, *, card=None, pes=None):
    """a - b with numpy broadcasting (torch.sub without alpha): float32 or float16 arrays of one dtype of at most
    4 dimensions, or a number for either. fp32; fp16 computed in fp32, rounded once (as PyTorch's CPU)."""
    return _run("broadcast", "sub", "sub", a, b, card=card, pes=pes)


def div(a, b, *, card=None, pes=None):
    """a / b with numpy broadcasting (torch.div, rounding_mode None), computed as a * recip(b) on the vector unit
    (recip in fp64 rounded to fp32; fp16 operands in fp32, the quotient rounded once to fp16): within 1.5 fp32
    ulps of the correctly rounded quotient. x / 0 = +-inf, 0 / 0 and inf / inf = NaN; a divisor below 2**-126 in
    magnitude (fp32 subnormal) gives +-inf where PyTorch's quotient is finite."""
    return _run("broadcast", "div", "div", a, b, card=card, pes=pes)


def maximum(a, b, *, card=None, pes=None):
    """torch.maximum(a, b) with numpy broadcasting: NaN propagates; exact."""
    return _run("broadcast", "maximum", "maximum", a, b, card=card, pes=pes)


def minimum(a, b, *, card=None, pes=None):
    """torch.minimum(a, b) with numpy broadcasting: NaN propagates; exact."""
    return _run("broadcast", "minimum", "minimum", a, b, card=card, pes=pes)


def clamp(x, min=None, max=None, *, card=None, pes=None):   # noqa: A002 (PyTorch's names)
    """torch.clamp(x, min, max) with number bounds (None: no bound; min > max gives max, as PyTorch): max(x,
    min) then min(., max), exact; NaN stays NaN. float32 or float16, any shape."""
    return _run("broadcast", "clamp", "clamp", x, min, max, card=card, pes=pes)


clip = clamp


def _reduction(op, x, dim, keepdim, card, pes):
    return _run("broadcast", "reduce", op, op, x, dim, keepdim, card=card, pes=pes)


def sum(x, dim=None, keepdim=False, *, card=None, pes=None):   # noqa: A001 (torch.sum)
    """torch.sum(x, dim, keepdim) over dim (an int, adjacent ints, or None: all) of a float32 / float16 array.
    Over the last dims: vsum in fp64 in index order rounded once to fp32 per chunk of a row (chunk sums added
    in fp32); over inner dims: fp32 adds in index order (fp16 accumulated in fp32). Rounded to the dtype."""
    return _reduction("sum", x, dim, keepdim, card, pes)


def mean(x, dim=None, keepdim=False, *, card=None, pes=None):
    """torch.mean(x, dim, keepdim): the sum as `sum`, times fp32(1 / n). A reduction over nothing is NaN."""
    return _reduction("mean", x, dim, keepdim, card, pes)


def amax(x, dim=(), keepdim=False, *, card=None, pes=None):
    """torch.amax(x, dim, keepdim) (dim=(): all dims): exact; NaN if the reduced values hold a NaN."""
    return _reduction("amax", x, None if dim == () else dim, keepdim, card, pes)


def argmax(x, dim=None, keepdim=False, *, card=None, pes=None):
    """torch.argmax(x, dim, keepdim) (dim None: of the flattened array): the first index of the maximum, NaN
    counting as the maximum (the first NaN), as PyTorch; int64."""
    return _reduction("argmax", x, dim, keepdim, card, pes)


# --- attention pieces (kernels/attention.py), PyTorch's names and arguments ---------------------------------------
def bmm(input, mat2, *, transpose_a=False, transpose_b=False, card=None, pes=None):   # noqa: A002 (torch.bmm)
    """torch.bmm(input, mat2) on the matrix unit: [B, M, K] @ [B, K, N] (2-D: one batch); transpose_b=True takes
    mat2 as [B, N, K] (torch's input @ mat2.transpose(-1, -2)), transpose_a=True input as [B, K, M]: the
    transposed operand is gathered by DMA from a shared-SRAM copy. float16 -> float16 (fp32 sums in K order,
    rounded once), float32 -> float32 (exact products summed in fp64, rounded once), int8 -> int32 (exact,
    wrapping). K = 0 gives zeros, an empty M, N or B an empty result (as PyTorch)."""
    return _run("attention", "bmm", "bmm", input, mat2, transpose_a, transpose_b, card=card, pes=pes)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False, *, card=None, pes=None):
    """torch.nn.functional.scaled_dot_product_attention for [..., L, E] query, [..., S, E] key, [..., S, Ev]
    value (2 to 4 dims, float16 or float32), fused in one kernel per (batch, head, block of queries): Q K^T on
    the matrix unit, scale, mask and softmax on the vector unit, E V on the matrix unit (fp32). attn_mask: bool
    (True takes part) or of query's dtype (added), broadcastable to [B, H, L, S]; is_causal; scale (default
    1/sqrt(E)). A fully masked row gives zeros, as PyTorch. fp32 within a few fp32 ulps of PyTorch, fp16 within
    fp16 rounding (E is not rounded to fp16 before E V). Inference only: dropout_p must be 0."""
    return _run("attention", "scaled_dot_product_attention", "scaled_dot_product_attention", query, key, value,
                attn_mask, dropout_p, is_causal, scale, enable_gqa, card=card, pes=pes)


def masked_softmax(input, mask=None, dim=-1, *, card=None, pes=None):   # noqa: A002
    """torch.softmax(input + mask, dim) over the last dimension: input float32 or float16 of any rank; mask None,
    of input's dtype (added in that type, as PyTorch adds) or bool (True keeps, False is -inf), broadcastable to
    input. fp32 steps: max, exp(x - max) in fp64 rounded to fp32, sums in fp64, times fp32(1 / sum); rounded to
    the dtype. A row that is all -inf is NaN (as torch.softmax)."""
    return _run("attention", "masked_softmax", "masked_softmax", input, mask, dim, card=card, pes=pes)


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,   # noqa: A002
              sparse=False, *, card=None, pes=None):
    """torch.nn.functional.embedding(input, weight): the rows weight[input] (int32 / int64 indices of any shape,
    a float32 or float16 [rows, dim] table) gathered by the card's embedding unit, in fp32 (fp16 tables
    converted back on the vector unit). Exact, except that -0.0 comes back as +0.0 (the unit adds each row to
    0.0). padding_idx, scale_grad_by_freq and sparse only matter to the gradient; max_norm is not supported.
    An index out of range is an InvalidArgument (PyTorch: IndexError)."""
    return _run("attention", "embedding", "embedding", input, weight, padding_idx, max_norm, norm_type,
                scale_grad_by_freq, sparse, card=card, pes=pes)


# what `vnpu.ops` re-exports: the functions defined here (not the modules and helpers imported above); they
# report their public home, as numpy's functions report `numpy`
__all__ = sorted(n for n, v in dict(globals()).items() if not n.startswith("_") and
                 getattr(v, "__module__", None) == __name__)
for _name in __all__:
    globals()[_name].__module__ = "vnpu.ops"
