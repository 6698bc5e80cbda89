"""local_response_norm on the card (kernels/norm.py, kernel language) against PyTorch, on both engines and the
interpreter, and its argument checks."""
import numpy as np
import pytest
import torch

import vnpu
from vnpu.emulator.card import Card
from vnpu.kernels import norm
from engine_modes import on_every_engine  # tests/ops/engine_modes.py

CARD = Card("tiny")
RNG = np.random.default_rng(5)


@pytest.mark.parametrize("shape, size, beta, alpha, k", [
    ((2, 7, 5, 6), 5, 0.75, 1e-2, 2.0), ((1, 16, 3, 3), 3, 0.5, 1e-4, 1.0), ((2, 5, 11), 4, 1.0, 0.3, 1.5),
    ((1, 3, 2, 2), 1, 0.75, 1e-4, 1.0), ((1, 13, 1, 1), 9, 0.75, 1.0, 0.5), ((3, 2, 7, 1), 2, 0.5, 1e-3, 3.0)])
def test_matches_pytorch(shape, size, beta, alpha, k):
    x = (RNG.standard_normal(shape) * 3).astype(np.float32)
    y = vnpu.ops.local_response_norm(x, size, alpha, beta, k, card=CARD)
    t = torch.nn.functional.local_response_norm(torch.tensor(x, dtype=torch.float64), size, alpha, beta, k).numpy()
    np.testing.assert_allclose(y, t, rtol=4e-6, atol=1e-7)
    np.testing.assert_array_equal(y, norm.reference_local_response_norm(x, size, alpha, beta, k))


def test_specials_and_empty():
    x = RNG.standard_normal((1, 4, 3, 3)).astype(np.float32)
    x[0, 1, 1, 1], x[0, 2, 0, 0] = np.nan, np.inf
    y, _ = norm.local_response_norm(CARD, x, 3)
    t = torch.nn.functional.local_response_norm(torch.tensor(x), 3).numpy()
    assert np.array_equal(np.isnan(y), np.isnan(t))
    y, r = norm.local_response_norm(CARD, np.zeros((0, 4, 3, 3), np.float32), 3)
    assert y.shape == (0, 4, 3, 3) and r.cycles > 0


def test_same_on_every_engine(monkeypatch):
    x = (RNG.standard_normal((2, 6, 3, 5)) * 2).astype(np.float32)
    on_every_engine(monkeypatch, lambda: norm.local_response_norm(CARD, x, 5, 1e-2, 0.75, 2.0))


@pytest.mark.parametrize("args, match", [((np.zeros((2, 3), np.float32), 3), "at least 3 dims"),
                                         ((np.zeros((1, 2, 3), np.float16), 3), "float32"),
                                         ((np.zeros((1, 2, 3), np.float32), 0), "size"),
                                         ((np.zeros((1, 2, 3), np.float32), 2, 1e-4, 0.3), "beta"),
                                         ((np.zeros((1, 2, 3), np.float32), 2, float("nan")), "alpha")])
def test_misuse(args, match):
    with pytest.raises(vnpu.InvalidArgument, match=match):
        norm.local_response_norm(CARD, *args)
