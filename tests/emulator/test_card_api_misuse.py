"""Misuse of the card's host API (vnpu.emulator.card.Card: alloc, free, read, write, read_local,
write_local, launch) gives typed errors before anything is allocated or changed."""
import numpy as np
import pytest

import vnpu
from vnpu.emulator.card import Card


@pytest.fixture
def card():
    return Card("tiny")


def test_bad_host_calls_are_typed_errors_and_change_nothing(card):
    a = card.alloc(256)
    card.write(a, np.arange(64, dtype=np.int32))
    before = card.read(a, 256).copy()
    img = vnpu.assemble(open(__file__.rsplit("/tests/", 1)[0] + "/examples/vector_add.s").read())
    calls = [lambda: card.write(a, "abc"), lambda: card.write(a, None), lambda: card.write(a, [1, 2]),
             lambda: card.write(a, np.zeros(2, np.complex64)), lambda: card.write("a", np.zeros(2)),
             lambda: card.read(a, -1), lambda: card.read(a, 1 << 40), lambda: card.read("a", 4),
             lambda: card.read(a, 2.0), lambda: card.write_local(99, 0, np.zeros(4)),
             lambda: card.write_local(True, 0, np.zeros(4)), lambda: card.read_local(0, 0, 1 << 40),
             lambda: card.read_local("0", 0, 4), lambda: card.free("x"), lambda: card.free(a + 1),
             lambda: card.alloc(0), lambda: card.alloc(-1), lambda: card.alloc(1.5), lambda: card.alloc(8, memory="x"),
             lambda: card.launch(img, "vadd", (a, a, a, 4), pes="0"),
             lambda: card.launch(img, "vadd", (a, a, a, 4), pes=[0.5]),
             lambda: card.launch(img, "vadd", (a, a, a, 4), pes=[]),
             lambda: card.launch(img, "vadd", None), lambda: card.launch(img, "vadd", (a,)),
             lambda: card.launch(img, "vadd", (a, a, a, 4), trace=True, trace_events=-1),
             lambda: card.launch(img, "vadd", (a, a, a, 4), engine="fast"), lambda: card.launch(b"junk", "vadd", ())]
    for call in calls:
        with pytest.raises(vnpu.VnpuError):
            call()
    assert np.array_equal(card.read(a, 256), before)
    card.launch(img, "vadd", (a, a, a, 16), pes=[0, 1])       # the card still works
    np.testing.assert_array_equal(card.read(a, 64, np.float32), 2 * before.view(np.float32)[:16])
