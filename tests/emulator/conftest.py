"""Fixtures shared by the emulator tests: every behavioural test runs on both engines."""
import numpy as np
import pytest

import vnpu
from vnpu.emulator.card import Card

ENGINES = ["reference", "numba"]


@pytest.fixture(params=ENGINES)
def engine(request):
    return request.param


@pytest.fixture
def card():
    return Card("tiny")


def run(card, src, kernel="k", args=(), engine="numba", pes=(0,), **kw):
    image = src if isinstance(src, bytes) else vnpu.assemble(src)
    return card.launch(image, kernel, args, pes=pes, engine=engine, **kw)


def put(card, array):
    """Allocate DRAM for an array and copy it in; returns the address."""
    array = np.ascontiguousarray(array)
    addr = card.alloc(max(array.nbytes, 1))
    card.write(addr, array)
    return addr


def get(card, addr, dtype, count):
    dt = np.dtype(dtype)
    return card.read(addr, dt.itemsize * count).view(dt).copy()
