"""The library kernels written in the kernel language (elementwise family, layer_norm, softmax, dense) give the
same bits on the numpy reference engine (the functional model: no timing) as on the Numba core, sanitized:
the two engines of one compiled kernel, on small shapes (the reference engine is ~100x slower)."""
import numpy as np
import pytest

from vnpu.emulator.card import Card
from vnpu.kernels import dense, elementwise as E, norm, runner

CARD = Card("tiny")
RNG = np.random.default_rng(7)
X = RNG.standard_normal(300).astype(np.float32)
Q = RNG.integers(-128, 128, 300).astype(np.int8)
XR = RNG.standard_normal((9, 40)).astype(np.float32)
G, B = RNG.standard_normal(40).astype(np.float32), RNG.standard_normal(40).astype(np.float32)
A8, W8 = RNG.integers(-128, 128, (20, 48)).astype(np.int8), RNG.integers(-128, 128, (48, 40)).astype(np.int8)
AH, WH = RNG.standard_normal((20, 48)).astype(np.float16), RNG.standard_normal((48, 40)).astype(np.float16)

CASES = {
    "add": lambda: E.add(CARD, X, X[::-1].copy()),
    "mul": lambda: E.mul(CARD, X.astype(np.float16), X.astype(np.float16)),
    "relu": lambda: E.relu(CARD, X),
    "sigmoid": lambda: E.sigmoid(CARD, X),
    "gelu": lambda: E.gelu(CARD, X),
    "quantize": lambda: E.quantize(CARD, X, 0.02, 3),
    "dequantize": lambda: E.dequantize(CARD, Q, 0.02, -5),
    "layer_norm": lambda: norm.layer_norm(CARD, XR, G, B),
    "softmax": lambda: norm.softmax(CARD, XR),
    "gemm_i8_requant": lambda: dense.gemm(CARD, A8, W8, scale=np.full(40, 1e-3, np.float32),
                                          bias=G, out_scale=0.05, activation="relu"),
    "gemm_i8_raw": lambda: dense.gemm(CARD, A8, W8),
    "gemm_f16_bias": lambda: dense.gemm(CARD, AH, WH, bias=G),
    "gemm_batched": lambda: dense.gemm(CARD, A8.reshape(2, 10, 48), np.stack([W8, W8[::-1]]),
                                       scale=np.full(40, 1e-3, np.float32)),
}


@pytest.mark.parametrize("op", sorted(CASES))
def test_port_same_on_both_engines(op, monkeypatch):
    out_numba, r_numba = CASES[op]()
    real = runner.run

    def on_reference(*args, **kw):
        kw["engine"] = "reference"
        return real(*args, **kw)
    monkeypatch.setattr(runner, "run", on_reference)
    out_ref, r_ref = CASES[op]()
    assert r_ref.engine == "reference" and r_numba.engine == "numba"
    assert np.array_equal(out_numba, out_ref, equal_nan=True)
    assert r_numba.cycles > 0
