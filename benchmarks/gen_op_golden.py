#!/usr/bin/env python
"""Golden data for every public op of vnpu.ops: small inputs and PyTorch's outputs for them, committed in
vnpu/validation/data/ops_golden.npz, so that a core install without PyTorch still checks each op against
PyTorch (tests/ops/test_golden_ops.py; docs/testing.md).

    pip install -e '.[torch]'                  # PyTorch 2.13.0 CPU
    python benchmarks/gen_op_golden.py         # writes vnpu/validation/data/ops_golden.npz

NOT imported by vnpu or by the tests. Deterministic: fixed seeds, one torch thread, the zip written with fixed
timestamps, so a re-run with the same torch and numpy gives the same bytes.

Each case is one call `vnpu.ops.<op>(*args, **kwargs)` with the output PyTorch gives for it: torch.* /
torch.nn.functional with the same argument names; for what PyTorch lacks (dot_interaction, embedding_bag's
int8 tables, lengths=) its building blocks. Where the torch fp32 kernel is itself inexact and the torch-based
tests compare with float64 (tests/ops/test_ops_vs_torch.py, test_pool_broadcast.py, test_attention_ops.py,
test_convolution.py, test_lrn.py), PyTorch computes in float64 and the case's tolerance is the one those tests
use. Inputs mix in NaN, +inf, -inf and -0.0 where the op takes floats, use sizes 1 and primes, fp32 and fp16
(int8 where the op takes it), and each op has one empty-input case where it accepts one.

The npz holds the arrays (keys a0000, a0001, ...) and "meta", a JSON string:
    {"generator_sha256": sha256 of this file, "torch_version", "numpy_version", "rules", "cases": [
        {"id": "add-fp16-specials", "op": "add", "args": [...], "kwargs": {...}, "expected": ...,
         "out_dtype": "float16" (or a list, for split), "rule": {...}, "note": "..."}]}
An argument is a JSON value, {"array": key}, {"arrays": [keys]} (a list of arrays), {"tuple": [...]} or
{"dtype": name}; "expected" is {"array": key} or {"arrays": [keys]} (split's tuple). The rules are "rules" in meta.
"""
import hashlib
import io
import json
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

HERE = Path(__file__).resolve()
OUT = HERE.parent.parent / "vnpu" / "validation" / "data" / "ops_golden.npz"
SEED = 16
Q = torch.ops.quantized
EPS32 = float(np.finfo(np.float32).eps)

RULES = {
    "bits": "same dtype, shape and bytes (data movement: NaN payloads and -0.0 included)",
    "exact": "same dtype and shape, NaN in the same places, every other value equal; with signed_zero the signs "
             "of zeros equal too",
    "close": "same dtype and shape, NaN, +inf and -inf in the same places, every finite expected value e within "
             "atol + atol_array + rtol * |e| of the output (in float64; atol_array: an npz key, per element); with "
             "signed_zero, a zero output where zero is expected has its sign",
}
SPECIALS = (np.nan, np.inf, -np.inf, -0.0)
SIZES = (1, 2, 3, 5, 7, 11, 13)


def bits():
    return {"kind": "bits"}


def exact(signed_zero=True):
    return {"kind": "exact", "signed_zero": signed_zero}


def close(rtol=0.0, atol=0.0, signed_zero=False):
    return {"kind": "close", "rtol": float(rtol), "atol": float(atol), "signed_zero": signed_zero}


def t(a):
    return torch.from_numpy(np.array(a, order="C"))      # (np.ascontiguousarray would make a 0-d array 1-d)


def n(x):
    """A tensor back to numpy (contiguous)."""
    return x.contiguous().numpy().copy()


def ulp16(x):
    return np.spacing(np.abs(np.asarray(x, np.float64)).astype(np.float16)).astype(np.float64)


class Golden:
    """The cases and their arrays, as written to the npz."""

    def __init__(self):
        self.cases, self.arrays, self.ids = [], {}, set()

    def _array(self, a):
        key = f"a{len(self.arrays):04d}"
        self.arrays[key] = np.array(a, order="C")        # (np.ascontiguousarray would make a 0-d array 1-d)
        return key

    def encode(self, v):
        if isinstance(v, np.ndarray):
            return {"array": self._array(v)}
        if isinstance(v, list) and any(isinstance(e, np.ndarray) for e in v):
            return {"arrays": [self._array(e) for e in v]}
        if isinstance(v, tuple):
            return {"tuple": [self.encode(e) for e in v]}
        if isinstance(v, list):
            return [self.encode(e) for e in v]
        if isinstance(v, type) and issubclass(v, np.generic):
            return {"dtype": np.dtype(v).name}
        if isinstance(v, np.generic):
            return v.item()
        assert v is None or isinstance(v, (bool, int, float, str)), v
        return v

    def add(self, op, label, args, kwargs, expected, rule, out_dtype=None, atol_array=None, note=None):
        cid = f"{op}-{label}"
        assert cid not in self.ids, cid
        self.ids.add(cid)
        case = {"id": cid, "op": op, "args": [self.encode(a) for a in args],
                "kwargs": {k: self.encode(v) for k, v in kwargs.items()}}
        if isinstance(expected, (tuple, list)):
            case["expected"] = {"arrays": [self._array(e) for e in expected]}
            case["out_dtype"] = [np.dtype(out_dtype or e.dtype).name for e in expected]
        else:
            case["expected"] = {"array": self._array(expected)}
            case["out_dtype"] = np.dtype(out_dtype or expected.dtype).name
        rule = dict(rule)
        if atol_array is not None:
            assert rule["kind"] == "close" and np.shape(atol_array) == np.shape(expected), cid
            a64 = np.asarray(atol_array, np.float64)
            a32 = a64.astype(np.float32)
            rule["atol_array"] = self._array(np.where(a32 < a64, np.nextafter(a32, np.float32(np.inf)), a32))
        case["rule"] = rule
        if note:
            case["note"] = note
        self.cases.append(case)


def randn(rng, shape, dtype, scale=1.0, shift=0.0):
    return (rng.standard_normal(shape) * scale + shift).astype(dtype)


def with_specials(rng, shape, dtype, frac=0.1, scale=3.0):
    """Random values with NaN, +inf, -inf and -0.0 at a fraction of the places (at least one of each when the
    array has room)."""
    x = randn(rng, shape, dtype, scale)
    flat = x.reshape(-1)
    k = int(flat.size * frac)
    if k:
        spots = rng.choice(flat.size, k, replace=False)
        flat[spots] = np.resize(np.array(SPECIALS, dtype), k)
    return x


def data(rng, shape, dtype):
    """Random values of any plain dtype; floats with NaN, +-inf and -0.0 (as tests/ops/test_plumbing_ops.py)."""
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.random(shape) < 0.5
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(info.min, int(info.max) + 1, shape, dtype=np.int64).astype(dt)
    return with_specials(rng, shape, dt, 0.2, 100.0)


def rand_shape(rng, rank):
    return tuple(int(v) for v in rng.choice(SIZES, rank))


def dname(dtype):
    return {"float32": "fp32", "float16": "fp16"}.get(np.dtype(dtype).name, np.dtype(dtype).name)


FLOATS = (np.float32, np.float16)


# --- elementwise: relu, sigmoid, tanh, gelu -------------------------------------------------------------------------
def unary(g, rng):
    head = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1.0, -2.5, 1e30, -1e-30, 30.0, -30.0], np.float64)
    for dt in FLOATS:
        x = np.concatenate([head, randn(rng, 7 * 13 - len(head), np.float64, 4)]).astype(dt).reshape(7, 13)
        g.add("relu", dname(dt), [x], {}, n(torch.relu(t(x))), exact(), note="torch.relu: NaN and -0.0 pass through")
        rtol, atol = (1e-6, 1e-7) if dt == np.float32 else (1e-3, 1e-4)
        for op, fn in (("sigmoid", torch.sigmoid), ("tanh", torch.tanh)):
            ref = n(fn(t(x).double())).astype(dt)
            g.add(op, dname(dt), [x], {}, ref, close(rtol, atol, signed_zero=True),
                  note=f"torch.{op} in float64, rounded to the dtype")
        ref = n(F.gelu(t(x).double())).astype(dt)
        ref = np.where(np.isneginf(x), np.array(-0.0, dt), ref)
        g.add("gelu", dname(dt), [x], {}, ref, close(rtol, atol, signed_zero=True),
              note="F.gelu in float64 (PyTorch's vectorized fp32 gives NaN at +inf), rounded to the dtype; at -inf "
                   "the limit -0.0 where PyTorch gives NaN (documented in vnpu.ops.gelu)")
        if dt == np.float32:       # PyTorch's fp32 steps (1 + tanh cancels for x < 0): a few ulps of the terms
            ref = n(F.gelu(t(x), approximate="tanh"))
            g.add("gelu", "tanh-fp32", [x], {"approximate": "tanh"}, ref, close(3e-7, 0, signed_zero=True),
                  atol_array=3e-7 * np.abs(x.astype(np.float64)),
                  note="F.gelu(x, approximate='tanh') in fp32 (NaN at -inf, as PyTorch)")
        else:
            ref = n(F.gelu(t(x).double(), approximate="tanh"))
            g.add("gelu", "tanh-fp16", [x], {"approximate": "tanh"}, ref, close(0, 0, signed_zero=True),
                  out_dtype=dt, atol_array=2 * ulp16(ref) + np.abs(x.astype(np.float64)) * 2e-7,
                  note="F.gelu(approximate='tanh') in float64: within 2 fp16 ulps")
    x = randn(rng, (1,), np.float32)
    g.add("sigmoid", "fp32-one", [x], {}, n(torch.sigmoid(t(x).double())).astype(np.float32), close(1e-6, 1e-7))
    e = np.zeros((0, 3), np.float32)
    for op, fn in (("relu", torch.relu), ("sigmoid", torch.sigmoid), ("tanh", torch.tanh), ("gelu", F.gelu)):
        g.add(op, "empty", [e], {}, n(fn(t(e))), bits())


# --- broadcasting arithmetic, clamp ---------------------------------------------------------------------------------
BINARY = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "maximum": torch.maximum,
          "minimum": torch.minimum}


def binary(g, rng):
    sp = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1.0, -2.5, 1e30, -1e-30], np.float32)
    for op in ("add", "mul"):                  # every pair of special values, one shape: the elementwise kernel
        for dt in FLOATS:
            a = np.concatenate([np.repeat(sp, len(sp)), randn(rng, 19, np.float32, 3)]).astype(dt)
            b = np.concatenate([np.tile(sp, len(sp)), randn(rng, 19, np.float32, 3)]).astype(dt)
            g.add(op, f"{dname(dt)}-specials", [a, b], {}, n(BINARY[op](t(a), t(b))), exact(),
                  note=f"torch.{op} in the dtype; -0.0 results included")
    shapes = [((5, 7), (7,)), ((2, 1, 5, 1), (1, 3, 1, 13)), ((3,), ()), ((5, 1), (1, 7)), ((2, 3, 11), (2, 1, 11))]
    for op in BINARY:
        for dt in FLOATS:
            for i in (0, 1) if dt == np.float32 else (2, 3):
                sa, sb = shapes[(i + len(op)) % len(shapes)]
                a, b = with_specials(rng, sa, dt), with_specials(rng, sb, dt)
                ref = n(BINARY[op](t(a).float(), t(b).float())).astype(dt)    # PyTorch's CPU fp16: in fp32, rounded
                label = f"{dname(dt)}-{'x'.join(map(str, sa)) or 'scalar'}-by-{'x'.join(map(str, sb)) or 'scalar'}"
                if op == "div":
                    rule, note = close(2e-7 if dt == np.float32 else 1e-3), "a * recip(b): within 1.5 fp32 ulps"
                elif op in ("maximum", "minimum"):
                    rule, note = exact(signed_zero=False), "-0.0 / 0.0 ties: PyTorch's own paths differ"
                else:
                    rule, note = exact(), None
                g.add(op, label, [a, b], {}, ref, rule, note=note)
    x = randn(rng, (2, 3), np.float32)
    g.add("sub", "number-minus-array", [1.5, x], {}, n(1.5 - t(x)), exact())
    g.add("add", "array-plus-number", [x, 2], {}, n(t(x) + 2), exact())
    g.add("mul", "fp16-number", [x.astype(np.float16), -0.5], {}, n(t(x.astype(np.float16)) * -0.5), exact())
    g.add("div", "by-zeros", [np.array([1.0, -1.0, 0.0, np.inf, 3.0], np.float32),
                              np.array([0.0, 0.0, 0.0, np.inf, -0.0], np.float32)], {},
          n(torch.div(t(np.array([1.0, -1.0, 0.0, np.inf, 3.0], np.float32)),
                      t(np.array([0.0, 0.0, 0.0, np.inf, -0.0], np.float32)))), exact())
    for op in BINARY:
        a, b = np.zeros((0, 3), np.float32), randn(rng, (3,), np.float32)
        g.add(op, "empty", [a, b], {}, n(BINARY[op](t(a), t(b))), bits())
    for dt in FLOATS:
        x = with_specials(rng, (3, 101), dt)
        for lo, hi in [(-1.0, 2.0), (None, 0.0), (-0.0, None), (3.0, -3.0)]:
            label = f"{dname(dt)}-{lo}-{hi}"
            g.add("clamp", label, [x, lo, hi], {}, n(torch.clamp(t(x), lo, hi)), exact(),
                  note="torch.clamp; min > max gives max")
    x = with_specials(rng, (13,), np.float32)
    g.add("clip", "fp32", [x], {"min": -0.5, "max": 0.5}, n(torch.clip(t(x), min=-0.5, max=0.5)), exact())
    e = np.zeros((2, 0), np.float16)
    g.add("clamp", "empty", [e, -1.0, 1.0], {}, n(torch.clamp(t(e), -1.0, 1.0)), bits())
    g.add("clip", "empty", [e], {"min": 0.0}, n(torch.clip(t(e), min=0.0)), bits())


# --- reductions -----------------------------------------------------------------------------------------------------
REDUCTIONS = {"sum": torch.sum, "mean": torch.mean, "amax": torch.amax, "argmax": torch.argmax}


def reductions(g, rng):
    cases = [((5, 7), -1, False), ((2, 3, 4), (1, 2), True), ((13,), None, False), ((3, 1, 5), 1, True),
             ((2, 3, 5, 7), (0, 1), False), ((7, 2, 3), 0, True)]
    for op, fn in REDUCTIONS.items():
        for dt in FLOATS:
            for i, (shape, dim, keepdim) in enumerate(cases):
                if op == "argmax" and isinstance(dim, tuple):
                    continue
                if (i + (dt == np.float16)) % 2 and op in ("sum", "mean"):
                    continue                      # half of them per dtype keeps the file small
                x = with_specials(rng, shape, dt, 0.08 if op in ("amax", "argmax") else 0.0)
                if op in ("amax", "argmax") and x.size > 20:
                    x.reshape(-1)[::3] = x.reshape(-1)[1]             # ties: the first index wins
                args = [x, dim, keepdim]
                label = f"{dname(dt)}-{'x'.join(map(str, shape))}-dim{dim}-keep{int(keepdim)}".replace(" ", "")
                tx = t(x).float()
                ref = fn(tx, dim, keepdim) if dim is not None else fn(tx)
                if op in ("amax", "argmax"):
                    if op == "amax" and dim is None:
                        args = [x, (), keepdim]
                    g.add(op, label, args, {}, n(ref).astype(np.int64 if op == "argmax" else dt), exact(False),
                          note="the first index of the maximum, NaN counting as the maximum" if op == "argmax" else
                          "NaN if the reduced values hold one")
                    continue
                x64, a64 = t(x).double(), t(np.abs(x.astype(np.float64)))
                ref64 = n(fn(x64, dim, keepdim) if dim is not None else fn(x64))
                mag = n(fn(a64, dim, keepdim) if dim is not None else fn(a64))
                count = x.size / max(1, ref64.size)
                g.add(op, label, args, {}, ref64, close(), out_dtype=dt,
                      atol_array=count * EPS32 * mag + np.finfo(dt).eps * np.abs(ref64) + 1e-30,
                      note=f"torch.{op} in float64; fp32 sums in index order: n eps32 sum|x| (+ the dtype's rounding)")
    x = with_specials(rng, (5, 7), np.float32, 0.1)
    for op in ("sum", "mean"):
        ref64 = n(REDUCTIONS[op](t(x).double(), 1))
        mag = n(REDUCTIONS[op](t(np.abs(x.astype(np.float64))), 1))
        g.add(op, "fp32-specials", [x, 1], {}, ref64, close(), out_dtype=np.float32,
              atol_array=7 * EPS32 * mag + EPS32 * np.abs(ref64) + 1e-30, note="NaN and inf propagate (inf - inf: NaN)")
    e = np.zeros((3, 0), np.float32)
    g.add("sum", "empty", [e, 1], {}, n(torch.sum(t(e), 1)), exact(), note="a sum over nothing is 0")
    g.add("mean", "empty", [e, 1], {}, n(torch.mean(t(e), 1)), exact(), note="a mean over nothing is NaN")
    e = np.zeros((0, 4), np.float32)
    g.add("amax", "empty", [e, 1], {}, n(torch.amax(t(e), 1)), bits(), note="no rows: an empty result")
    g.add("argmax", "empty", [e, 1], {}, n(torch.argmax(t(e), 1)), bits(), note="no rows: an empty result")


# --- quantize, dequantize -------------------------------------------------------------------------------------------
def quantization(g, rng):
    for scale, zero_point in [(0.1, 0), (1 / 3, -7), (0.024001280843568805, 127), (7.3, -128)]:
        inv = np.float32(1.0) / np.float32(scale)
        k = rng.integers(-140, 140, 60)
        ties = ((k + 0.5) / np.float64(inv)).astype(np.float32)       # at and next to x * inv = k + 1/2
        x = np.concatenate([ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf)),
                            (rng.standard_normal(200) * 60 * scale).astype(np.float32),
                            np.array([np.inf, -np.inf, -0.0, 0.0, 1e30, -1e30], np.float32)])
        ref = n(torch.quantize_per_tensor(t(x), scale, zero_point, torch.qint8).int_repr())
        g.add("quantize", f"scale{scale:.4g}-zp{zero_point}", [x, scale, zero_point], {}, ref, bits(),
              note="torch.quantize_per_tensor(x, scale, zero_point, torch.qint8).int_repr(), ties included; NaN left "
                   "out (PyTorch gives an arbitrary code, vnpu 0)")
    x = randn(rng, (3, 1, 5), np.float32)
    g.add("quantize", "3d-default-zp", [x, 0.05], {},
          n(torch.quantize_per_tensor(t(x), 0.05, 0, torch.qint8).int_repr()), bits())
    e = np.zeros((0,), np.float32)
    g.add("quantize", "empty", [e, 0.1, 3], {}, n(torch.quantize_per_tensor(t(e), 0.1, 3, torch.qint8).int_repr()),
          bits())
    q = np.arange(-128, 128, dtype=np.int8).reshape(16, 16)
    for scale, zero_point in [(0.037, 5), (1.7, -128), (2.0 ** -7, 0)]:
        ref = n(torch.dequantize(torch._make_per_tensor_quantized_tensor(t(q), scale, zero_point)))
        g.add("dequantize", f"scale{scale:.4g}-zp{zero_point}", [q, scale, zero_point], {}, ref, bits(),
              note="torch.dequantize of a per-tensor qint8 tensor")
    e = np.zeros((4, 0), np.int8)
    g.add("dequantize", "empty", [e, 0.1, 3], {},
          n(torch.dequantize(torch._make_per_tensor_quantized_tensor(t(e), 0.1, 3))), bits())


# --- matmul, linear, bmm --------------------------------------------------------------------------------------------
def dense(g, rng):
    a, w = randn(rng, (13, 70), np.float16), randn(rng, (70, 11), np.float16)
    ref = n(t(a).double() @ t(w).double())
    mag = n(t(np.abs(a.astype(np.float64))) @ t(np.abs(w.astype(np.float64))))
    g.add("matmul", "fp16", [a, w], {}, ref, close(), out_dtype=np.float32, atol_array=2 * 70 * 2.0 ** -24 * mag,
          note="float64 torch.matmul; fp32 sums in K order: 2 K 2**-24 |a| @ |w|")
    a, w = randn(rng, (2, 5, 7), np.float32), randn(rng, (2, 7, 3), np.float32)
    g.add("matmul", "fp32-batched", [a, w], {}, n(t(a).double() @ t(w).double()), close(1.2e-7, 1e-30),
          out_dtype=np.float32, note="float64 torch.matmul: exact products summed in fp64, rounded once")
    a, w = rng.integers(-128, 128, (9, 300)).astype(np.int8), rng.integers(-128, 128, (300, 17)).astype(np.int8)
    g.add("matmul", "int8", [a, w], {}, n((t(a).long() @ t(w).long()).int()), bits(), note="exact int32")
    a = np.array([[np.nan, 1, 2], [np.inf, 1, 0], [1, 2, 3], [-0.0, 0, 0], [-np.inf, 1, 1]], np.float16)
    w = np.array([[1, 0], [2, 1], [3, -1]], np.float16)
    g.add("matmul", "fp16-specials", [a, w], {}, n(t(a).float() @ t(w).float()), close(1e-6, 1e-37),
          note="torch.matmul in fp32 (exact here): NaN and inf places")
    e, w = np.zeros((0, 5), np.float16), randn(rng, (5, 3), np.float16)
    g.add("matmul", "empty", [e, w], {}, n(t(e).float() @ t(w).float()), bits())
    a, w = np.zeros((4, 0), np.int8), np.zeros((0, 3), np.int8)
    g.add("matmul", "k0-zeros", [a, w], {}, n((t(a).long() @ t(w).long()).int()), bits(), note="K = 0: zeros")

    x, w = rng.integers(-128, 128, (9, 300)).astype(np.int8), rng.integers(-128, 128, (17, 300)).astype(np.int8)
    bias = randn(rng, (17,), np.float32)
    ref = n(F.linear(t(x).double() * 0.02, t(w).double() * 0.01, t(bias).double()))
    g.add("linear", "int8-per-tensor", [x, w, bias], {"x_scale": 0.02, "w_scale": 0.01}, ref, close(1e-6, 1e-5),
          out_dtype=np.float32, note="F.linear on the dequantized operands in float64")
    ws = (rng.random(17) * 0.02 + 0.001).astype(np.float32)
    ref = n(F.linear(t(x).double() * 0.02, t(w).double() * t(ws).double()[:, None], t(bias).double()))
    g.add("linear", "int8-per-row", [x, w, bias], {"x_scale": 0.02, "w_scale": ws}, ref, close(1e-6, 1e-5),
          out_dtype=np.float32, note="w_scale per output row")
    ref = F.linear(t(x).double() * 0.02, t(w).double() * 0.01, t(bias).double()).float()
    ref = n(torch.quantize_per_tensor(ref, 0.5, 3, torch.qint8).int_repr())
    g.add("linear", "int8-requantized", [x, w, bias], {"x_scale": 0.02, "w_scale": 0.01, "out_scale": 0.5,
                                                       "out_zero_point": 3}, ref, close(0, 1),
          note="quantize_per_tensor of the float64 F.linear: a tie may round one code apart")
    x, w, b16 = randn(rng, (7, 70), np.float16), randn(rng, (11, 70), np.float16), randn(rng, (11,), np.float32)
    ref = n(F.linear(t(x).double(), t(w).double(), t(b16).double()))
    mag = n(F.linear(t(np.abs(x.astype(np.float64))), t(np.abs(w.astype(np.float64))),
                     t(np.abs(b16).astype(np.float64))))
    g.add("linear", "fp16", [x, w, b16], {}, ref, close(), out_dtype=np.float32, atol_array=2 * 71 * 2.0 ** -24 * mag,
          note="F.linear in float64; fp32 sums in K order, + bias in fp32")
    x, w = np.zeros((4, 0), np.float16), np.zeros((3, 0), np.float16)
    b = randn(rng, (3,), np.float32)
    g.add("linear", "k0-bias", [x, w, b], {}, n(F.linear(t(x).float(), t(w).float(), t(b))), exact(),
          note="K = 0 gives the bias")
    x, w = np.zeros((0, 5), np.float16), randn(rng, (3, 5), np.float16)
    g.add("linear", "empty", [x, w], {}, n(F.linear(t(x).float(), t(w).float())), bits())

    for (B, M, K, N), dt, ta, tb in [((1, 1, 1, 1), np.float32, False, False), ((2, 5, 7, 3), np.float32, False, True),
                                     ((3, 13, 17, 11), np.float16, True, False), ((2, 5, 7, 3), np.float16, True, True),
                                     ((1, 1, 31, 37), np.int8, True, True), ((2, 5, 7, 3), np.int8, False, False)]:
        sa, sb = (B, K, M) if ta else (B, M, K), (B, N, K) if tb else (B, K, N)
        if dt == np.int8:
            a, b = rng.integers(-128, 128, sa).astype(dt), rng.integers(-128, 128, sb).astype(dt)
        else:
            a, b = randn(rng, sa, dt), randn(rng, sb, dt)
        ta_, tb_ = t(a).double(), t(b).double()
        ref = n((ta_.transpose(-1, -2) if ta else ta_) @ (tb_.transpose(-1, -2) if tb else tb_))
        label = f"{dname(dt)}-{B}x{M}x{K}x{N}-ta{int(ta)}-tb{int(tb)}"
        kw = {"transpose_a": ta, "transpose_b": tb}
        if dt == np.int8:
            g.add("bmm", label, [a, b], kw, ref.astype(np.int64).astype(np.int32), bits(), note="exact int32")
        elif dt == np.float32:
            g.add("bmm", label, [a, b], kw, ref, close(1.2e-7, 1e-30), out_dtype=dt,
                  note="float64 torch.bmm (transpose_*: the operand transposed, torch's .transpose(-1, -2))")
        else:
            g.add("bmm", label, [a, b], kw, ref, close(), out_dtype=dt, atol_array=2 * ulp16(ref) + K * 1e-6,
                  note="float64 torch.bmm: within 2 fp16 ulps")
    a, b = randn(rng, (2, 4, 6), np.float32), randn(rng, (2, 5, 6), np.float32)
    a[0, 1, 2], b[1, 3, 0], a[1, 2, 4] = np.nan, np.inf, -np.inf
    a[0, 3, 1] = -0.0
    ref = n(t(a).double() @ t(b).double().transpose(-1, -2))
    g.add("bmm", "fp32-specials", [a, b], {"transpose_b": True}, ref, close(1.2e-7, 1e-30), out_dtype=np.float32)
    a, b = np.ones((0, 3, 4), np.float16), np.ones((0, 4, 5), np.float16)
    g.add("bmm", "empty", [a, b], {}, n(torch.bmm(t(a), t(b))), bits())
    a, b = np.ones((2, 3, 0), np.float16), np.ones((2, 0, 5), np.float16)
    g.add("bmm", "k0-zeros", [a, b], {}, n(torch.bmm(t(a), t(b))), bits(), note="K = 0: zeros")


# --- attention: scaled_dot_product_attention, masked_softmax, embedding ---------------------------------------------
def attention(g, rng):
    cases = [  # q shape, key length, value dim, mask, scale, dtype
        ((1, 1, 1, 1), 1, 1, None, None, np.float32),
        ((2, 3, 7, 8), 11, 5, None, None, np.float32),
        ((1, 2, 13, 16), 13, 16, "causal", None, np.float16),
        ((3, 5, 4), 5, 3, "bool", 0.3, np.float32),            # 3-D, a bool mask with a fully masked row
        ((3, 5, 4), 5, 3, "bool", 0.3, np.float16),
        ((2, 2, 5, 4), 9, 4, "float", None, np.float16),       # an additive mask broadcast over the batch
        ((6, 17), 23, 7, "float2", 2.0, np.float32),           # 2-D, -inf in the mask, scale > 1
        ((3, 4, 6, 8), 9, 8, "keys", None, np.float32),        # BERT's key padding mask [B, 1, 1, S]
    ]
    for qs, sk, dv, mk, scale, dt in cases:
        lead = qs[:-2]
        q, k, v = randn(rng, qs, dt), randn(rng, lead + (sk, qs[-1]), dt), randn(rng, lead + (sk, dv), dt)
        mask = None
        if mk == "bool":
            mask = rng.random(lead + (qs[-2], sk)) > 0.4
            mask[..., 1, :] = False
        elif mk == "float":
            mask = randn(rng, (1,) + lead[1:] + (qs[-2], sk), dt, 2)
            mask[..., 0, 2] = -np.inf
        elif mk == "keys":
            mask = (np.arange(sk)[None, :] < np.array([9, 1, 4])[:, None])[:, None, None, :]
        elif mk == "float2":
            mask = np.where(rng.random((qs[-2], sk)) < 0.3, -np.inf, rng.standard_normal((qs[-2], sk))).astype(dt)
        m = None if mask is None else (t(mask) if mask.dtype == np.bool_ else t(mask).double())
        ref = n(F.scaled_dot_product_attention(t(q).double(), t(k).double(), t(v).double(), attn_mask=m,
                                               is_causal=mk == "causal", scale=scale))
        kw = {"attn_mask": mask, "is_causal": mk == "causal", "scale": scale}
        label = f"{dname(dt)}-{'x'.join(map(str, qs))}-{mk or 'nomask'}"
        if dt == np.float32:
            g.add("scaled_dot_product_attention", label, [q, k, v], kw, ref, close(2e-6, 2e-7), out_dtype=dt,
                  note="F.scaled_dot_product_attention in float64")
        else:
            g.add("scaled_dot_product_attention", label, [q, k, v], kw, ref, close(), out_dtype=dt,
                  atol_array=2 * ulp16(ref) + 1e-4, note="F.scaled_dot_product_attention in float64: 2 fp16 ulps")
    q, k, v = (randn(rng, (1, 2, 5, 4), np.float32) for _ in range(3))
    q[0, 0, 2, 1], k[0, 1, 3, 0], q[0, 0, 4, 0] = np.nan, np.nan, -0.0     # a NaN query row; a NaN key (head 1)
    with sdpa_kernel(SDPBackend.MATH):           # (PyTorch's CPU flash kernel gives a NaN query row zeros)
        ref = n(F.scaled_dot_product_attention(t(q).double(), t(k).double(), t(v).double()))
    g.add("scaled_dot_product_attention", "fp32-nan", [q, k, v], {}, ref, close(2e-6, 2e-7), out_dtype=np.float32,
          note="the math backend in float64: NaN rows where a query or a key holds NaN")
    q, k, v = np.ones((1, 2, 0, 4), np.float16), np.ones((1, 2, 5, 4), np.float16), np.ones((1, 2, 5, 3), np.float16)
    g.add("scaled_dot_product_attention", "empty", [q, k, v], {}, n(F.scaled_dot_product_attention(t(q), t(k), t(v))),
          bits())

    for xs, ms, dt in [((1,), None, np.float32), ((5, 7), (5, 7), np.float32),
                       ((2, 3, 5, 13), (1, 3, 1, 13), np.float16), ((3, 11), (11,), np.float32),
                       ((2, 3, 1), (3, 1), np.float16), ((4, 7, 9), "bool", np.float32),
                       ((4, 7, 9), "bool", np.float16)]:
        x = randn(rng, xs, dt, 3)
        if ms == "bool":
            mask = rng.random(xs) > 0.3
            madd = np.where(mask, 0, -np.inf).astype(dt)
        else:
            mask = madd = None if ms is None else randn(rng, ms, dt, 2)
        ref = n(torch.softmax((t(x) + (0 if madd is None else t(madd))).double(), -1))   # x + mask in x's dtype
        mask_name = "bool" if ms == "bool" else "x".join(map(str, ms or ())) or "nomask"
        label = f"{dname(dt)}-{'x'.join(map(str, xs))}-{mask_name}"
        if dt == np.float32:
            g.add("masked_softmax", label, [x, mask], {}, ref, close(2e-6, 1e-7), out_dtype=dt,
                  note="torch.softmax((x + mask).double(), -1), x + mask in x's dtype")
        else:
            g.add("masked_softmax", label, [x, mask], {}, ref, close(), out_dtype=dt, atol_array=2 * ulp16(ref),
                  note="torch.softmax in float64 of x + mask (added in fp16): 2 fp16 ulps")
    x = randn(rng, (4, 6), np.float32)
    x[0, 2], x[1, 3], x[2, :], x[3, 1] = np.nan, np.inf, -np.inf, -0.0      # NaN row, inf row, all -inf: NaN
    mask = np.zeros(6, np.float32)
    mask[4] = -np.inf
    ref = n(torch.softmax((t(x) + t(mask)).double(), -1))
    g.add("masked_softmax", "fp32-specials", [x, mask], {}, ref, close(2e-6, 1e-7), out_dtype=np.float32,
          note="a row holding NaN or +inf, or all -inf, is NaN; a -inf mask element gives 0")
    x = np.ones((0, 5), np.float16)
    g.add("masked_softmax", "empty", [x], {}, n(torch.softmax(t(x), -1)), bits())

    for dt in FLOATS:
        w = randn(rng, (53, 12), dt)
        w[3, :4] = [np.nan, np.inf, -np.inf, 5.0]
        w[7, 1] = -0.0
        for idx in [rng.integers(0, 53, (3, 7)), np.array([3, 0, 52, 7], np.int32), np.array(5)]:
            label = f"{dname(dt)}-{idx.dtype.name}-{'x'.join(map(str, idx.shape)) or 'scalar'}"
            g.add("embedding", label, [idx, w], {}, n(F.embedding(t(idx).long(), t(w))), exact(signed_zero=False),
                  note="F.embedding: exact, except -0.0 comes back +0.0 (documented)")
    idx = np.array([[7, 2], [7, 0]])
    g.add("embedding", "padding_idx", [idx, w], {"padding_idx": 7}, n(F.embedding(t(idx), t(w), padding_idx=7)),
          exact(signed_zero=False), note="padding_idx only matters to the gradient")
    idx = np.zeros((2, 0), np.int64)
    g.add("embedding", "empty", [idx, w], {}, n(F.embedding(t(idx), t(w))), bits())


# --- norms: softmax, layer_norm, local_response_norm, batch_norm ----------------------------------------------------
def norms(g, rng):
    for scale, shift in ((1, 0), (100, -5e4), (1e-3, 0)):
        x = randn(rng, (5, 67), np.float32, scale, shift)
        e = np.exp(x.astype(np.float64) - x.astype(np.float64).max(-1, keepdims=True))
        ref = n(torch.softmax(t(x).double(), -1))
        assert np.allclose(ref, e / e.sum(-1, keepdims=True), rtol=1e-12, atol=0)
        g.add("softmax", f"fp32-scale{scale:g}-shift{shift:g}", [x], {}, ref, close(4e-6, 1e-38),
              out_dtype=np.float32, note="torch.softmax in float64: within 4e-6 relative")
    rows = np.array([[1, np.inf, 2, 3], [1, 2, np.nan, 4], [-np.inf, 0, 1, 2], [-0.0, 0.0, -0.0, 0.0],
                     [3e38, -3e38, 0, 1], [5, 5, 5, 5], [np.inf, np.inf, np.inf, np.inf],
                     [-np.inf, -np.inf, -np.inf, -np.inf], [1e30, -1e30, 2, 2]], np.float32)
    g.add("softmax", "fp32-specials", [rows], {}, n(torch.softmax(t(rows).double(), -1)), close(4e-6, 1e-37),
          out_dtype=np.float32, note="a row holding NaN or +inf, or all -inf, is all NaN; -inf elements give 0")
    x = np.ones((0, 7), np.float32)
    g.add("softmax", "empty", [x], {}, n(torch.softmax(t(x), -1)), bits())

    D = 67
    for scale, shift in ((1, 0), (0.01, 1000), (100, -5e4)):
        x = randn(rng, (5, D), np.float32, scale, shift)
        gam, bet = randn(rng, (D,), np.float32), randn(rng, (D,), np.float32)
        ref = n(F.layer_norm(t(x).double(), (D,), t(gam).double(), t(bet).double(), eps=1e-5))
        g.add("layer_norm", f"fp32-scale{scale:g}-shift{shift:g}", [x, gam, bet], {"eps": 1e-5}, ref, close(),
              out_dtype=np.float32, atol_array=1e-5 * (1 + np.abs(gam.astype(np.float64))) + 2.0 ** -22 * np.abs(ref),
              note="F.layer_norm in float64: 1e-5 (1 + |gamma|) plus fp32 rounding (the docstring's bound)")
    x = randn(rng, (2, 3, 17), np.float32, 2, 1)
    ref = n(F.layer_norm(t(x).double(), (17,)))
    g.add("layer_norm", "fp32-3d", [x], {}, ref, close(), out_dtype=np.float32,
          atol_array=1e-5 * 2 + 2.0 ** -22 * np.abs(ref), note="any rank: the attention kernel")
    consts = np.array([1000.0, -7e5, 0.1, 3e-20, 12345.678, -1.0, 7.0], np.float32)
    x = np.repeat(consts[:, None], 7, 1)
    gam, bet = np.linspace(-2, 2, 7).astype(np.float32), np.linspace(1, 3, 7).astype(np.float32)
    ref = n(F.layer_norm(t(x), (7,), t(gam), t(bet)))
    assert np.array_equal(ref, np.broadcast_to(bet, x.shape))
    g.add("layer_norm", "fp32-constant-rows", [x, gam, bet], {}, ref, exact(signed_zero=False),
          note="a constant row gives exactly beta (PyTorch's fp32 F.layer_norm)")
    rows = np.array([[1, np.inf, 2, 3], [1, 2, np.nan, 4], [-np.inf, 0, 1, 2], [-0.0, 0.0, -0.0, 0.0],
                     [5, 5, 5, 5], [np.inf, np.inf, np.inf, np.inf], [1, -1, 2, 7]], np.float32)
    ref = n(F.layer_norm(t(rows).double(), (4,)))
    g.add("layer_norm", "fp32-specials", [rows], {}, ref, close(), out_dtype=np.float32,
          atol_array=2e-5 + 2.0 ** -22 * np.abs(ref), note="a row holding NaN or +-inf is NaN in every element")
    for shape, affine in [((7, 33), True), ((2, 3, 1), False), ((5, 2), False), ((2, 3, 13), True)]:
        x = randn(rng, shape, np.float16, 2, 1)
        Dn = shape[-1]
        gam = randn(rng, (Dn,), np.float16) if affine else None
        bet = randn(rng, (Dn,), np.float16) if affine else None
        ref = n(F.layer_norm(t(x).double(), (Dn,), None if gam is None else t(gam).double(),
                             None if bet is None else t(bet).double()))
        g.add("layer_norm", f"fp16-{'x'.join(map(str, shape))}", [x, gam, bet], {}, ref, close(),
              out_dtype=np.float16, atol_array=2 * ulp16(ref) + 2e-3 * (1 + np.abs(ref)),
              note="F.layer_norm in float64: fp16 rounding plus 2e-3 (mean and variance in fp32, as PyTorch's fp16)")
    x = np.zeros((0, 7), np.float32)
    g.add("layer_norm", "empty", [x], {}, n(F.layer_norm(t(x), (7,))), bits())

    for shape, size, beta, alpha, k in [((2, 7, 5, 6), 5, 0.75, 1e-2, 2.0), ((1, 16, 3, 3), 3, 0.5, 1e-4, 1.0),
                                        ((2, 5, 11), 4, 1.0, 0.3, 1.5), ((1, 13, 1, 1), 9, 0.75, 1.0, 0.5),
                                        ((3, 2, 7, 1), 2, 0.5, 1e-3, 3.0)]:
        x = randn(rng, shape, np.float32, 3)
        ref = n(F.local_response_norm(t(x).double(), size, alpha, beta, k))
        g.add("local_response_norm", f"{'x'.join(map(str, shape))}-size{size}-beta{beta}", [x, size],
              {"alpha": alpha, "beta": beta, "k": k}, ref, close(4e-6, 1e-7), out_dtype=np.float32,
              note="F.local_response_norm in float64")
    x = randn(rng, (1, 4, 3, 3), np.float32)
    x[0, 1, 1, 1], x[0, 2, 0, 0], x[0, 3, 2, 1] = np.nan, np.inf, -0.0
    ref = n(F.local_response_norm(t(x).double(), 3))
    g.add("local_response_norm", "specials", [x, 3], {}, ref, close(4e-6, 1e-7), out_dtype=np.float32,
          note="NaN and inf spread through the window of channels")
    x = np.zeros((0, 4, 3, 3), np.float32)
    g.add("local_response_norm", "empty", [x, 3], {}, n(F.local_response_norm(t(x), 3)), bits())

    for shape, affine, dt in [((2, 5, 7, 3), True, np.float32), ((3, 17, 2, 1), False, np.float16),
                              ((4, 3), True, np.float32), ((1, 37, 5, 5), True, np.float16)]:
        C = shape[1]
        x = with_specials(rng, shape, dt, 0.05)
        m, w, b = (randn(rng, (C,), np.float32) for _ in range(3))
        v = rng.uniform(0.1, 3, C).astype(np.float32)
        w, b = (w, b) if affine else (None, None)
        ref = n(F.batch_norm(t(x).double(), t(m).double(), t(v).double(), None if w is None else t(w).double(),
                             None if b is None else t(b).double(), eps=1e-3))
        tol = 4 * EPS32 * (np.abs(ref) + np.abs(x.astype(np.float64)) * 3) + np.finfo(dt).eps * np.abs(ref) + 1e-30
        g.add("batch_norm", f"{dname(dt)}-{'x'.join(map(str, shape))}", [x, m, v, w, b], {"eps": 1e-3}, ref, close(),
              out_dtype=dt, atol_array=tol, note="F.batch_norm (inference) in float64: a few fp32 ulps")
    x = np.zeros((0, 3, 2, 2), np.float32)
    m, v = np.zeros(3, np.float32), np.ones(3, np.float32)
    g.add("batch_norm", "empty", [x, m, v], {}, n(F.batch_norm(t(x), t(m), t(v))), bits())


# --- pooling --------------------------------------------------------------------------------------------------------
def pooling(g, rng):
    for shape, kw, dt in [((2, 3, 13, 11), dict(kernel_size=3, stride=2, padding=1), np.float32),
                          ((1, 1, 7, 17), dict(kernel_size=3, stride=2, ceil_mode=True), np.float16),
                          ((4, 5, 9, 7), dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 1), dilation=(2, 1)),
                           np.float32),
                          ((3, 5, 5), dict(kernel_size=2), np.float16),
                          ((1, 2, 11, 13), dict(kernel_size=5, stride=3, padding=2, dilation=2, ceil_mode=True),
                           np.float32)]:
        x = with_specials(rng, shape, dt)
        ref = n(F.max_pool2d(t(x).float(), **kw)).astype(dt)
        label = f"{dname(dt)}-{'x'.join(map(str, shape))}-k{kw['kernel_size']}".replace(" ", "")
        g.add("max_pool2d", label, [x], kw, ref, exact(),
              note="F.max_pool2d: NaN in a window gives NaN, -0.0 and 0.0 tie to the first")
    x = np.zeros((0, 3, 5, 5), np.float32)
    g.add("max_pool2d", "empty", [x, 2], {}, n(F.max_pool2d(t(x), 2)), bits())

    for shape, kw, dt, frac in [((2, 3, 13, 11), dict(kernel_size=3, stride=2, padding=1), np.float32, 0.02),
                                ((1, 2, 7, 11), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False,
                                                     ceil_mode=True), np.float16, 0.0),
                                ((2, 1, 11, 7), dict(kernel_size=(5, 3), stride=(1, 2), padding=(2, 0), ceil_mode=True),
                                 np.float32, 0.0),
                                ((2, 3, 13, 11), dict(kernel_size=3, stride=3, divisor_override=7), np.float16, 0.02),
                                ((3, 7, 5), dict(kernel_size=2), np.float32, 0.0)]:
        x = with_specials(rng, shape, dt, frac)
        ref = n(F.avg_pool2d(t(x).double(), **kw))
        mag = n(F.avg_pool2d(t(np.abs(x.astype(np.float64))), **kw))
        label = f"{dname(dt)}-{'x'.join(map(str, shape))}-k{kw['kernel_size']}".replace(" ", "")
        g.add("avg_pool2d", label, [x], kw, ref, close(), out_dtype=dt,
              atol_array=4 * EPS32 * mag * 9 + np.finfo(dt).eps * np.abs(ref) + 1e-30,
              note="F.avg_pool2d in float64: a few fp32 ulps of the window's |x| mean, plus the dtype's rounding")
    x = np.zeros((0, 3, 5, 5), np.float32)
    g.add("avg_pool2d", "empty", [x, 3, 1, 1], {}, n(F.avg_pool2d(t(x), 3, 1, 1)), bits())

    for shape, dt in [((2, 5, 7, 7), np.float32), ((3, 1, 1), np.float16), ((1, 3, 13, 2), np.float32)]:
        x = with_specials(rng, shape, dt, 0.02 if np.prod(shape) > 50 else 0.0)
        ref = n(F.adaptive_avg_pool2d(t(x).double(), 1))
        mag = n(F.adaptive_avg_pool2d(t(np.abs(x.astype(np.float64))), 1))
        g.add("adaptive_avg_pool2d", f"{dname(dt)}-{'x'.join(map(str, shape))}-global", [x, 1], {}, ref, close(),
              out_dtype=dt, atol_array=2 * EPS32 * mag + np.finfo(dt).eps * np.abs(ref),
              note="F.adaptive_avg_pool2d(x, 1) in float64")
    for dt in FLOATS:
        x = randn(rng, (2, 3, 12, 10), dt)
        ref = n(F.adaptive_avg_pool2d(t(x).double(), (3, 5)))
        g.add("adaptive_avg_pool2d", f"{dname(dt)}-3x5", [x, (3, 5)], {}, ref, close(0, 1e-6 + 2 * np.finfo(dt).eps),
              out_dtype=dt, note="an output size dividing H and W")
    x = np.zeros((0, 3, 5, 5), np.float32)
    g.add("adaptive_avg_pool2d", "empty", [x, 1], {}, n(F.adaptive_avg_pool2d(t(x), 1)), bits())


# --- conv2d ---------------------------------------------------------------------------------------------------------
def torch_conv(x, w, bias, stride=1, padding=0, dilation=1, groups=1):
    """F.conv2d in float64; a 4-tuple padding (top, bottom, left, right) by F.pad first."""
    x = t(x).double()
    if isinstance(padding, tuple) and len(padding) == 4:
        top, bottom, left, right = padding
        x, padding = F.pad(x, (left, right, top, bottom)), 0
    return n(F.conv2d(x, t(w).double(), None if bias is None else t(bias).double(), stride, padding, dilation, groups))


def convolution(g, rng):
    cases = [  # N, C, H, W, OC, KH, KW, stride, padding, dilation, groups, dtype
        (2, 3, 9, 8, 4, 3, 3, 1, 1, 1, 1, np.float16),
        (2, 4, 9, 7, 6, 3, 3, 2, 1, 1, 1, np.float32),
        (1, 4, 10, 10, 4, 3, 3, 1, 2, 2, 2, np.float16),
        (1, 6, 7, 7, 6, 3, 3, 1, 1, 1, 6, np.float32),               # depthwise
        (2, 8, 5, 5, 16, 1, 1, 1, 0, 1, 1, np.float32),              # 1x1
        (1, 3, 11, 13, 5, 5, 3, (2, 3), (2, 1), 1, 1, np.float16),
        (1, 2, 7, 5, 3, 2, 3, 1, (1, 0, 2, 1), (2, 1), 1, np.float32),   # asymmetric padding
        (1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, np.float32),
    ]
    for N, C, H, W, OC, KH, KW, s, p, d, gr, dt in cases:
        x = randn(rng, (N, C, H, W), dt)
        w = randn(rng, (OC, C // gr, KH, KW), dt, 0.5)
        b = randn(rng, (OC,), np.float32)
        ref = torch_conv(x, w, b, s, p, d, gr)
        mag = torch_conv(np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64)), np.abs(b), s, p, d, gr)
        taps = C // gr * KH * KW
        label = f"{dname(dt)}-{N}x{C}x{H}x{W}-oc{OC}-k{KH}x{KW}-s{s}-p{p}-d{d}-g{gr}".replace(" ", "")
        g.add("conv2d", label, [x, w, b], {"stride": s, "padding": p, "dilation": d, "groups": gr}, ref, close(),
              out_dtype=np.float32, atol_array=(taps + 2) * 2.0 ** -24 * mag + 1e-30,
              note="F.conv2d in float64: fp32 sums of exact products, (taps + 2) 2**-24 sum|x w|")
    x = randn(rng, (1, 2, 5, 5), np.float32)
    x[0, 0, 2, 2], x[0, 1, 0, 0], x[0, 1, 3, 4] = np.nan, np.inf, -0.0
    w = randn(rng, (2, 1, 3, 3), np.float32)
    ref = torch_conv(x, w, None, 1, 1, 1, 2)
    mag = torch_conv(np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64)), None, 1, 1, 1, 2)
    g.add("conv2d", "fp32-specials-groups2", [x, w], {"padding": 1, "groups": 2}, ref, close(),
          out_dtype=np.float32, atol_array=11 * 2.0 ** -24 * np.where(np.isfinite(mag), mag, 0) + 1e-30,
          note="NaN and inf propagate as in IEEE arithmetic")
    x = randn(rng, (1, 3, 6, 5), np.float16)
    x[0, 1, 4, 4], x[0, 0, 0, 0] = np.nan, np.inf
    w, b = randn(rng, (4, 3, 3, 3), np.float16), randn(rng, (4,), np.float32)
    ref = torch_conv(x, w, b, 1, 1)
    mag = torch_conv(np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64)), np.abs(b), 1, 1)
    g.add("conv2d", "fp16-specials", [x, w, b], {"padding": 1}, ref, close(), out_dtype=np.float32,
          atol_array=29 * 2.0 ** -24 * np.where(np.isfinite(mag), mag, 0) + 1e-30)

    for i, (N, C, H, W, OC, KH, KW, s, p, d, gr, _) in enumerate(cases[:4]):
        x = rng.integers(-128, 128, (N, C, H, W)).astype(np.int8)
        w = rng.integers(-128, 128, (OC, C // gr, KH, KW)).astype(np.int8)
        b = randn(rng, (OC,), np.float32)
        ws = (rng.random(OC) * 1e-3 + 1e-4).astype(np.float32)
        acc = torch_conv(x, w, None, s, p, d, gr)
        res = randn(rng, acc.shape, np.float32)
        act, clip = [(None, None), ("relu", None), ("relu6", None), ("clip", (-0.5, 0.25))][i]
        z = acc * (0.05 * ws.astype(np.float64))[None, :, None, None] + b[None, :, None, None] + res
        z = torch.from_numpy(z)
        z = {None: z, "relu": F.relu(z), "relu6": F.relu6(z), "clip": torch.clamp(z, *(clip or (0, 0)))}[act]
        kw = {"stride": s, "padding": p, "dilation": d, "groups": gr, "x_scale": 0.05, "w_scale": ws, "residual": res,
              "activation": act}
        if clip:
            kw["clip"] = clip
        g.add("conv2d", f"int8-{act}-{N}x{C}x{H}x{W}-g{gr}", [x, w, b], kw, n(z), close(1e-5, 1e-4),
              out_dtype=np.float32, note="F.conv2d of the int8 operands in float64, dequantized, + bias + residual, "
                                         "then the activation (F.relu / F.relu6 / torch.clamp)")
    x = rng.integers(-128, 128, (1, 8, 6, 6)).astype(np.int8)
    w = rng.integers(-128, 128, (8, 8, 3, 3)).astype(np.int8)
    ws = np.full(8, 2e-3, np.float32)
    f = torch_conv(x, w, None, 1, 1) * (0.02 * 2e-3)
    ref = n(torch.quantize_per_tensor(F.relu(torch.from_numpy(f)).float(), 0.1, -3, torch.qint8).int_repr())
    g.add("conv2d", "int8-requantized", [x, w], {"padding": 1, "x_scale": 0.02, "w_scale": ws, "activation": "relu",
                                                 "out_scale": 0.1, "out_zero_point": -3},
          ref, close(0, 1), note="quantize_per_tensor of the float64 result: a tie may round one code apart")
    x, w = np.zeros((0, 3, 5, 5), np.float32), randn(rng, (4, 3, 3, 3), np.float32)
    g.add("conv2d", "empty", [x, w], {"padding": 1}, n(F.conv2d(t(x), t(w), padding=1)), bits())


def torch_conv_transpose(x, w, bias, **kw):
    """F.conv_transpose2d in float64."""
    return n(F.conv_transpose2d(t(x).double(), t(w).double(), None if bias is None else t(bias).double(), **kw))


def transposed_convolution(g, rng):
    cases = [  # N, C, H, W, OC, KH, KW, stride, padding, output_padding, dilation, groups, dtype
        (1, 3, 5, 4, 4, 3, 3, 2, 1, 1, 1, 1, np.float32),               # the decoder's 3x3 / 2, output_padding 1
        (2, 4, 3, 3, 6, 2, 3, (3, 2), (0, 1), (2, 1), 1, 2, np.float16),  # groups, per-dimension arguments
        (1, 6, 5, 5, 6, 3, 3, 2, 1, 0, 1, 6, np.float32),               # depthwise
        (1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, np.float32),               # all 1
        (1, 2, 4, 4, 3, 3, 3, 1, 3, 1, 2, 1, np.float16),               # dilation 2, padding crops the input
        (1, 5, 7, 3, 7, 5, 3, 3, 2, (2, 1), 1, 1, np.float32),          # primes
    ]
    for N, C, H, W, OC, KH, KW, s, p, op, d, gr, dt in cases:
        x, w = randn(rng, (N, C, H, W), dt), randn(rng, (C, OC // gr, KH, KW), dt, 0.5)
        b = randn(rng, (OC,), np.float32)
        kw = {"stride": s, "padding": p, "output_padding": op, "groups": gr, "dilation": d}
        ref = torch_conv_transpose(x, w, b, **kw)
        mag = torch_conv_transpose(np.abs(x), np.abs(w), np.abs(b), **kw)
        label = f"{dname(dt)}-{N}x{C}x{H}x{W}-oc{OC}-k{KH}x{KW}-s{s}-p{p}-op{op}-d{d}-g{gr}".replace(" ", "")
        g.add("conv_transpose2d", label, [x, w, b], kw, ref, close(), out_dtype=dt,
              atol_array=(2.0 ** -22 if dt == np.float32 else 2.0 ** -10) * (mag + 1),
              note="F.conv_transpose2d in float64 (tests/ops/test_conv_transpose.py's tolerance)")
    N, C, H, W, OC, KH, KW, s, p, op, d, gr, _ = cases[1]
    kw = {"stride": s, "padding": p, "output_padding": op, "groups": gr, "dilation": d}
    for dt in FLOATS:
        x, w = randn(rng, (N, C, H, W), dt), randn(rng, (C, OC // gr, KH, KW), dt, 0.5)
        x[0, 0, 1, 1], x[0, 2, 0, 2], x[1, 3, 2, 0], x[1, 1, 0, 0] = np.nan, np.inf, -np.inf, -0.0
        x[1, 0] = -0.0
        ref = torch_conv_transpose(x, w, None, **kw)
        mag = torch_conv_transpose(np.where(np.isfinite(x), np.abs(x), 0), np.abs(w), None, **kw)
        g.add("conv_transpose2d", f"{dname(dt)}-specials", [x, w], kw, ref, close(), out_dtype=dt,
              atol_array=(2.0 ** -22 if dt == np.float32 else 2.0 ** -10) * (mag + 1),
              note="NaN and inf in the input propagate as PyTorch's (not in the weight: documented deviation)")
    x, w = randn(rng, (N, C, H, W), np.float32), randn(rng, (C, OC // gr, KH, KW), np.float32, 0.5)
    b = randn(rng, (OC,), np.float32)
    ref = torch_conv_transpose(x, w, b, **kw)
    res = randn(rng, ref.shape, np.float32)
    g.add("conv_transpose2d", "fp32-residual-relu", [x, w, b], dict(kw, residual=res, activation="relu"),
          n(F.relu(torch.from_numpy(ref) + t(res).double())), close(1e-5, 1e-5), out_dtype=np.float32,
          note="F.relu(F.conv_transpose2d(...) + residual): the residual after the bias")
    def int8_operands(case):
        """int8 x and w, a float bias, per-channel weight scales, the arguments, and the dequantized float64
        result + bias (before any activation) of one conv_transpose2d case."""
        N, C, H, W, OC, KH, KW, s, p, op, d, gr, _ = case
        x = rng.integers(-128, 128, (N, C, H, W)).astype(np.int8)
        w = rng.integers(-128, 128, (C, OC // gr, KH, KW)).astype(np.int8)
        b = randn(rng, (OC,), np.float32)
        ws = (rng.random(OC) * 1e-3 + 1e-4).astype(np.float32)
        kw = {"stride": s, "padding": p, "output_padding": op, "groups": gr, "dilation": d}
        z = torch_conv_transpose(x, w, None, **kw) * (0.05 * ws.astype(np.float64))[None, :, None, None] \
            + b[None, :, None, None]
        return x, w, b, ws, kw, z

    for case, act, clip in [(cases[0], "relu", None), (cases[5], "clip", (-0.5, 0.25))]:
        N, C, H, W = case[:4]
        x, w, b, ws, kw, z = int8_operands(case)
        z = n(F.relu(torch.from_numpy(z)) if act == "relu" else torch.clamp(torch.from_numpy(z), *clip))
        kwq = dict(kw, x_scale=0.05, w_scale=ws, activation=act)
        if clip:
            kwq["clip"] = clip
        g.add("conv_transpose2d", f"int8-{act}-{N}x{C}x{H}x{W}", [x, w, b], kwq, z, close(1e-5, 1e-5),
              out_dtype=np.float32, note="F.conv_transpose2d of the int8 operands in float64, dequantized, + bias, "
                                         "then the activation (F.relu / torch.clamp)")
    x, w, b, ws, kw, z = int8_operands(cases[2])
    ref = n(torch.quantize_per_tensor(F.relu(torch.from_numpy(z)).float(), 0.05, -7, torch.qint8).int_repr())
    g.add("conv_transpose2d", "int8-requantized", [x, w, b],
          dict(kw, x_scale=0.05, w_scale=ws, activation="relu", out_scale=0.05, out_zero_point=-7), ref, close(0, 1),
          note="quantize_per_tensor of the float64 result: a tie may round one code apart")
    x, w = np.zeros((0, 4, 5, 5), np.float32), randn(rng, (4, 3, 3, 3), np.float32)
    g.add("conv_transpose2d", "empty", [x, w], {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2},
          n(F.conv_transpose2d(t(x), t(w), None, stride=2, padding=1, output_padding=1, groups=2)), bits())


# --- dot_interaction, embedding_bag ---------------------------------------------------------------------------------
def torch_interaction(dense, emb):
    """DLRM's dot interaction from PyTorch's building blocks: the dense row, then the lower triangle of Z Z^T."""
    z = torch.cat([dense[:, None, :], emb], 1)
    zz = torch.bmm(z, z.transpose(1, 2))
    li, lj = torch.tril_indices(z.shape[1], z.shape[1], -1)
    return torch.cat([dense, zz[:, li, lj]], 1)


def recommendation(g, rng):
    dense = randn(rng, (10, 16), np.float32)
    emb = randn(rng, (10, 5, 16), np.float32, 1e4)
    ref = n(torch_interaction(t(dense).double(), t(emb).double()))
    z = np.abs(np.concatenate([dense[:, None], emb], 1).astype(np.float64))
    mag = n(torch_interaction(t(z[:, 0]), t(z[:, 1:])))
    g.add("dot_interaction", "fp32", [dense, emb], {}, ref, close(2.0 ** -24), out_dtype=np.float32,
          atol_array=16 * 2.0 ** -53 * mag, note="float64 torch.bmm of Z = [dense; emb]: one fp32 rounding")
    dense, emb = randn(rng, (7, 13), np.float16), randn(rng, (7, 3, 13), np.float16)
    ref = n(torch_interaction(t(dense).double(), t(emb).double()))
    z = np.abs(np.concatenate([dense[:, None], emb], 1).astype(np.float64))
    mag = n(torch_interaction(t(z[:, 0]), t(z[:, 1:])))
    g.add("dot_interaction", "fp16", [dense, emb], {}, ref, close(2.0 ** -24), out_dtype=np.float32,
          atol_array=13 * 2.0 ** -24 * mag, note="fp16 products exact, fp32 sums in D order")
    dense, emb = randn(rng, (3, 8), np.float32), randn(rng, (3, 2, 8), np.float32)
    dense[1, 3], dense[2, 0], emb[0, 1, 2], emb[2, 0, 0] = np.nan, np.inf, -np.inf, -0.0
    ref = n(torch_interaction(t(dense).double(), t(emb).double()))
    g.add("dot_interaction", "fp32-specials", [dense, emb], {}, ref, close(1e-6, 1e-37), out_dtype=np.float32,
          note="NaN and inf propagate (PyTorch's NaN places)")
    dense, emb = np.zeros((0, 4), np.float16), np.zeros((0, 3, 4), np.float16)
    g.add("dot_interaction", "empty", [dense, emb], {}, n(torch_interaction(t(dense).float(), t(emb).float())), bits())
    dense, emb = randn(rng, (2, 4), np.float32), np.zeros((2, 0, 4), np.float32)
    g.add("dot_interaction", "no-tables", [dense, emb], {}, n(torch_interaction(t(dense), t(emb))), exact(),
          note="T = 0: the dense rows")

    table = randn(rng, (8, 4), np.float32)
    table[2, 1], table[3, 0], table[5, 3], table[6, 2] = np.nan, np.inf, -np.inf, -0.0
    idx, off = np.array([0, 2, 1, 3, 5, 3, 4, 6], np.int64), np.array([0, 2, 4, 6], np.int64)
    for mode in ("sum", "mean"):
        ref = n(F.embedding_bag(t(idx), t(table), t(off), mode=mode))
        g.add("embedding_bag", f"fp32-{mode}-specials", [table, idx], {"offsets": off, "mode": mode}, ref,
              close(1e-6, 1e-37), note=f"F.embedding_bag(indices, weight, offsets, mode={mode!r})")
    table = randn(rng, (13, 7), np.float32)
    idx = rng.integers(0, 13, 23).astype(np.int32)
    off = np.array([0, 5, 5, 11, 23], np.int32)                  # an empty bag; include_last_offset
    psw = rng.uniform(-2, 2, 23).astype(np.float32)
    ref = n(F.embedding_bag(t(idx), t(table), t(off), mode="sum", per_sample_weights=t(psw), include_last_offset=True))
    mag = n(F.embedding_bag(t(idx), t(np.abs(table)), t(off), mode="sum", per_sample_weights=t(np.abs(psw)),
                            include_last_offset=True))
    g.add("embedding_bag", "fp32-weighted-last-offset", [table, idx],
          {"offsets": off, "per_sample_weights": psw, "include_last_offset": True}, ref, close(),
          atol_array=13 * 2.0 ** -24 * mag.astype(np.float64), note="per_sample_weights; the last offset closes the "
                                                                    "last bag; fp32 sums (PyTorch fuses multiply-adds)")
    lengths = np.array([3, 0, 4, 1], np.int64)
    idx = rng.integers(0, 13, 8)
    off = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    ref = n(F.embedding_bag(t(idx), t(table), t(off), mode="mean"))
    mag = n(F.embedding_bag(t(idx), t(np.abs(table)), t(off), mode="mean"))
    g.add("embedding_bag", "fp32-mean-lengths", [table, idx], {"lengths": lengths, "mode": "mean"}, ref, close(),
          atol_array=8 * 2.0 ** -24 * mag.astype(np.float64),
          note="Caffe2's lengths=: F.embedding_bag with offsets = the lengths' exclusive cumsum")
    table = randn(rng, (11, 6), np.float32, 2, 0.5)
    idx, off = rng.integers(0, 11, 17), np.array([0, 4, 9, 9], np.int64)
    packed = Q.embedding_bag_byte_prepack(t(table))
    ref = n(Q.embedding_bag_byte_rowwise_offsets(packed, t(idx), t(off), mode=0))
    scale = max(1.0, float(np.abs(ref).max()))
    g.add("embedding_bag", "int8_rowwise", [table, idx], {"offsets": off, "format": "int8_rowwise"}, ref,
          close(0, 16e-7 * scale * 17 ** 0.5),
          note="torch.ops.quantized.embedding_bag_byte_prepack + embedding_bag_byte_rowwise_offsets (mode=0: sum); "
               "tolerance as tests/kernels/test_embedding.py (PyTorch fuses multiply-adds)")
    table, idx, off = randn(rng, (6, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64)
    g.add("embedding_bag", "empty", [table, idx], {"offsets": off}, n(F.embedding_bag(t(idx), t(table), t(off))),
          bits(), note="no bags")


# --- tensor plumbing ------------------------------------------------------------------------------------------------
MOVE_DTYPES = (np.float32, np.float16, np.int8, np.int32, np.float64, np.int64, np.bool_, np.uint8)
CAST_DTYPES = (np.float32, np.float16, np.int8, np.int32)
TORCH_DTYPES = {np.float32: torch.float32, np.float16: torch.float16, np.int8: torch.int8, np.int32: torch.int32}


def plumbing(g, rng):
    for i, dt in enumerate(MOVE_DTYPES):
        rank = 1 + i % 4
        x = data(rng, rand_shape(rng, rank), dt)
        dims = tuple(int(d) for d in rng.permutation(rank))
        g.add("permute", f"{np.dtype(dt).name}-{'x'.join(map(str, x.shape))}-{''.join(map(str, dims))}", [x, dims], {},
              n(t(x).permute(dims)), bits())
    x = data(rng, (2, 37, 5, 13), np.float32)
    g.add("permute", "float32-2x37x5x13-0213", [x, (0, 2, 1, 3)], {}, n(t(x).permute(0, 2, 1, 3)), bits())
    x = data(rng, (4, 0, 2), np.int8)
    g.add("permute", "empty", [x, (2, 0, 1)], {}, n(t(x).permute(2, 0, 1)), bits())

    for shape, dims in [((7, 13), ()), ((3, 5, 7), (-1, 0)), ((2, 3, 5, 7), (1, 2)), ((11,), (0, -1))]:
        x = data(rng, shape, np.float32)
        ref = n(t(x).transpose(*(dims or (0, 1))))
        g.add("transpose", f"{'x'.join(map(str, shape))}-{dims or 'default'}".replace(" ", ""), [x, *dims], {}, ref,
              bits())
    x = np.zeros((0, 3), np.float32)
    g.add("transpose", "empty", [x], {}, n(t(x).T), bits())

    x = data(rng, (3, 4, 5), np.float16)
    g.add("reshape", "3x4x5-to-minus1x5", [x, (-1, 5)], {}, n(torch.reshape(t(x), (-1, 5))), bits())
    g.add("view", "3x4x5-to-2x30", [x, 2, 30], {}, n(t(x).view(2, 30)), bits())
    x = np.zeros((0, 3), np.int8)
    g.add("reshape", "empty", [x, (3, 0)], {}, n(torch.reshape(t(x), (3, 0))), bits())
    g.add("view", "empty", [x, -1], {}, n(t(x).view(-1)), bits())

    for i in range(6):
        rank = 1 + i % 4
        dt = MOVE_DTYPES[(3 * i) % len(MOVE_DTYPES)]
        x = data(rng, rand_shape(rng, rank), dt)
        d = int(rng.integers(-rank, rank))
        D = x.shape[d]
        start = int(rng.integers(0, D + 1))
        length = int(rng.integers(0, D - start + 1))
        g.add("narrow", f"{i}-{np.dtype(dt).name}-{'x'.join(map(str, x.shape))}", [x, d, start, length], {},
              n(t(x).narrow(d, start, length)), bits())
        a, b = int(rng.integers(-D - 2, D + 2)), int(rng.integers(-D - 2, D + 2))
        sl = [slice(None)] * rank
        sl[d] = slice(a, b)
        g.add("slice_", f"{i}-{np.dtype(dt).name}-{'x'.join(map(str, x.shape))}", [x, d, a, b], {},
              n(t(x)[tuple(sl)]), bits(), note="x[start:end] along dim (Python's bounds)")
    x = data(rng, (3, 13), np.float32)
    g.add("narrow", "negative-start", [x, 0, -2, 2], {}, n(t(x).narrow(0, -2, 2)), bits())
    g.add("slice_", "none-bounds", [x, 1], {"start": None, "end": -3}, n(t(x)[:, :-3]), bits())
    x = np.zeros((0, 3), np.float32)
    g.add("narrow", "empty", [x, 1, 1, 2], {}, n(t(x).narrow(1, 1, 2)), bits())
    g.add("slice_", "empty", [x, 0, 0, 5], {}, n(t(x)[0:5]), bits())

    for i in range(5):
        rank = 1 + i % 4
        dt = MOVE_DTYPES[(5 * i) % len(MOVE_DTYPES)]
        shape = rand_shape(rng, rank)
        d = int(rng.integers(-rank, rank))
        xs = []
        for _ in range(int(rng.integers(2, 5))):
            s = list(shape)
            s[d] = int(rng.choice((0, 1, 2, 5)))
            xs.append(data(rng, tuple(s), dt))
        g.add("cat", f"{i}-{np.dtype(dt).name}-{len(xs)}-pieces", [xs, d], {}, n(torch.cat([t(x) for x in xs], d)),
              bits())
    xs = [data(rng, (3, 5), np.int8), np.zeros((0,), np.int8), data(rng, (2, 5), np.int8)]
    g.add("cat", "legacy-1d-empty", [xs], {}, n(torch.cat([t(x) for x in xs])), bits(),
          note="1-D empty arrays skipped, as PyTorch")
    xs = [np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)]
    g.add("cat", "empty", [xs, 0], {}, n(torch.cat([t(x) for x in xs])), bits())
    y, z = data(rng, (13, 7), np.float32), data(rng, (13, 5), np.float32)
    g.add("concat", "default-axis", [[y, z]], {}, n(torch.cat([t(y), t(z)], -1)), bits(),
          note="numpy's name and default axis (-1): torch.cat(tensors, -1)")
    y, z = data(rng, (2, 3), np.float16), data(rng, (5, 3), np.float16)
    g.add("concat", "axis0", [[y, z]], {"axis": 0}, n(torch.cat([t(y), t(z)], 0)), bits())
    xs = [np.zeros((4, 0), np.float32), np.zeros((4, 0), np.float32)]
    g.add("concat", "empty", [xs], {}, n(torch.cat([t(x) for x in xs], -1)), bits())

    for i in range(4):
        rank = 1 + i % 4
        x = data(rng, rand_shape(rng, rank), MOVE_DTYPES[(2 * i + 1) % len(MOVE_DTYPES)])
        d = int(rng.integers(-rank, rank))
        D = x.shape[d]
        if i % 2:
            arg = int(rng.integers(1, D + 2))
        else:
            cuts = np.sort(rng.integers(0, D + 1, 2))
            arg = [int(cuts[0]), int(cuts[1] - cuts[0]), int(D - cuts[1])]
        ref = [n(p) for p in torch.split(t(x), arg, d)]
        g.add("split", f"{i}-{x.dtype.name}-{'x'.join(map(str, x.shape))}-{arg}".replace(" ", ""), [x, arg, d], {},
              ref, bits(), note="torch.split: a tuple of the pieces")
    x = np.zeros((0, 3), np.float32)
    g.add("split", "empty", [x, 2, 0], {}, [n(p) for p in torch.split(t(x), 2, 0)], bits(),
          note="an empty dimension: one empty piece, as torch.split")

    pads = [((2, 3, 5, 7), (1, 1, 1, 1)), ((4, 9), (3, -2)), ((3, 5, 7), (-1, 2, -2, 1)), ((5,), (2, 3)),
            ((2, 13, 11), (0, 0, 2, 1))]
    for i, dt in enumerate(CAST_DTYPES):
        value = {np.float32: -0.0, np.float16: np.nan, np.int8: 5, np.int32: -7}[dt]
        for shape, p in pads[i:i + 2]:
            x = data(rng, shape, dt)
            g.add("pad", f"{np.dtype(dt).name}-{'x'.join(map(str, shape))}-{p}".replace(" ", ""), [x, p],
                  {"value": value}, n(F.pad(t(x), p, value=float(value))), bits(),
                  note="F.pad(x, pad, value=value) (constant); negative entries crop")
    x = data(rng, (3, 4), np.float32)
    g.add("pad", "value-none", [x, (1, 2)], {}, n(F.pad(t(x), (1, 2))), bits(), note="value None: 0")
    x = np.zeros((3, 0), np.float32)
    g.add("pad", "empty", [x, (1, 2)], {"value": -0.0}, n(F.pad(t(x), (1, 2), value=-0.0)), bits())

    for src in CAST_DTYPES:
        for dst in CAST_DTYPES:
            if np.dtype(src).kind == "f" and np.dtype(dst).kind == "i":     # in range: PyTorch is undefined out of it
                x = (rng.standard_normal(61) * 50).clip(-127.9, 127.9).astype(src)
                x[:9] = [0.5, -0.5, 1.5, -2.5, -0.0, 126.99, -127.5, 1e-30, -0.99]
            else:
                x = data(rng, (61,), src)
            ref = n(t(x).to(TORCH_DTYPES[dst]))
            kind = exact() if np.dtype(dst).kind == "f" else bits()
            g.add("to", f"{np.dtype(src).name}-to-{np.dtype(dst).name}", [x, dst], {}, ref, kind,
                  note="x.to(dtype); float outputs: NaN payloads may differ (PyTorch's fp16 NaN is canonical)" if
                  kind["kind"] == "exact" else "x.to(dtype); floats kept in the integer's range (PyTorch: undefined "
                                               "outside)")
    x = np.array([8388607.5, -8388607.5, 2147483520.0, -2147483648.0, 16777215.0, 4194303.75], np.float32)
    g.add("to", "float32-to-int32-large", [x, np.int32], {}, n(t(x).to(torch.int32)), bits())
    x = np.zeros((4, 0, 2), np.int8)
    g.add("to", "empty", [x, np.float16], {}, n(t(x).to(torch.float16)), bits())

    for i, dt in enumerate(MOVE_DTYPES):
        shape = rand_shape(rng, 1 + i % 4)
        c = rng.random(shape) < 0.5
        a, b = data(rng, shape, dt), data(rng, shape, dt)
        g.add("where", f"{np.dtype(dt).name}-{'x'.join(map(str, shape))}", [c, a, b], {},
              n(torch.where(t(c), t(a), t(b))), bits())
    c = rng.random((5, 7)) < 0.3
    x = data(rng, (5, 7), np.float32)
    g.add("where", "number-other", [c, x, float("-inf")], {}, n(torch.where(t(c), t(x), float("-inf"))), bits())
    g.add("where", "number-input", [c, -0.0, x], {}, n(torch.where(t(c), -0.0, t(x))), bits())
    xi = data(rng, (5, 7), np.int8)
    g.add("where", "int8-number", [c, xi, 3], {}, n(torch.where(t(c), t(xi), 3)), bits())
    c, e = np.zeros((0, 3), bool), np.zeros((0, 3), np.float32)
    g.add("where", "empty", [c, e, e], {}, n(torch.where(t(c), t(e), t(e))), bits())

    for i, dt in enumerate(CAST_DTYPES + (np.int64,)):
        rank = 1 + i % 4
        x = data(rng, rand_shape(rng, rank), dt)
        d = int(rng.integers(-rank, rank))
        idx = rng.integers(0, x.shape[d], int(rng.integers(1, 6)))
        g.add("index_select", f"{np.dtype(dt).name}-{'x'.join(map(str, x.shape))}-dim{d}", [x, d, idx], {},
              n(torch.index_select(t(x), d, t(idx))), bits())
        ishape = [int(rng.integers(1, s + 1)) for s in x.shape]
        ishape[d] = int(rng.integers(1, 6))
        ind = rng.integers(0, x.shape[d], ishape)
        g.add("gather", f"{np.dtype(dt).name}-{'x'.join(map(str, x.shape))}-dim{d}", [x, d, ind], {},
              n(torch.gather(t(x), d, t(ind))), bits())
    x = data(rng, (3, 4), np.float32)
    g.add("gather", "empty", [x, 1, np.zeros((3, 0), np.int64)], {},
          n(torch.gather(t(x), 1, t(np.zeros((3, 0), np.int64)))), bits())
    e = np.zeros((0, 3), np.float32)
    g.add("index_select", "empty", [e, 0, np.zeros(0, np.int64)], {},
          n(torch.index_select(t(e), 0, t(np.zeros(0, np.int64)))), bits())


GROUPS = (unary, binary, reductions, quantization, dense, attention, norms, pooling, convolution, recommendation,
          plumbing, transposed_convolution)


def build():
    # (overflow to fp16 inf and the like is meant; torch's deprecation notes of quantized tensors are not news)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
    warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    g = Golden()
    for i, group in enumerate(GROUPS):
        group(g, np.random.default_rng([SEED, i]))     # one stream per group: adding cases to one leaves the rest
    return g


def write_npz(path, arrays):
    """np.savez_compressed's format, with fixed timestamps and order so that the same arrays give the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue(), compresslevel=9)


def main():
    g = build()
    meta = {"generator": "benchmarks/gen_op_golden.py",
            # (line endings normalized, so that a CRLF checkout gives the same digest)
            "generator_sha256": hashlib.sha256(HERE.read_bytes().replace(b"\r\n", b"\n")).hexdigest(),
            "torch_version": torch.__version__, "numpy_version": np.__version__, "seed": SEED, "rules": RULES,
            "cases": g.cases}
    arrays = dict(g.arrays, meta=np.array(json.dumps(meta, indent=None, sort_keys=True)))
    write_npz(OUT, arrays)
    ops = sorted({c["op"] for c in g.cases})
    print(f"wrote {OUT.relative_to(HERE.parent.parent)}: {len(g.cases)} cases of {len(ops)} ops, {len(g.arrays)} "
          f"arrays, {OUT.stat().st_size / 1e6:.2f} MB (torch {torch.__version__}, numpy {np.__version__})")
    for op in ops:
        print(f"  {op}: {sum(c['op'] == op for c in g.cases)}")


if __name__ == "__main__":
    sys.exit(main())
