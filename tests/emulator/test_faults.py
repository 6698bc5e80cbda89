"""Device faults stop the launch with a typed error naming PE, PC, instruction and address; the card
stays usable afterwards (and after reset)."""
import numpy as np
import pytest

import vnpu
from vnpu.emulator.card import Card

from conftest import get, put, run

OK_PROG = """
.kernel k
.arg out, buffer, i64
    li r5, 42
    sd r5, 0(zero)
    li r6, 8
    dma e0, out, zero, r6, s0
    wait s0, 1
    halt
"""


def still_works(card, engine):
    out = card.alloc(8)
    run(card, OK_PROG, args=(out,), engine=engine)
    assert get(card, out, np.int64, 1)[0] == 42


@pytest.mark.parametrize("body, error, match, pc, address", [
    ("li r5, 0x7fffffff\n lw r6, 0(r5)", vnpu.IllegalAddress, "outside", 1, 0x7FFFFFFF),
    ("li r5, -4\n sw r5, 0(r5)", vnpu.IllegalAddress, "outside", 1, -4),
    ("li r5, 64\n li r6, 0\n lih r6, 0x20\n dma e0, r6, zero, r5, s0", vnpu.IllegalAddress, "outside", 3,
     0x20_0000_0000),
    ("li r5, 8\n dma e0, out, zero, r5, s31", vnpu.IllegalInstruction, "semaphore number", 1, None),
    ("li r5, 8\n dma e9, out, zero, r5, s0", vnpu.IllegalInstruction, "DMA engine", 1, None),
    ("li r5, 99\n sig r5, s0", vnpu.IllegalInstruction, "outside the launch", 1, None),
    ("li r5, 4\n mm.mul r5, r5, r5, i8, set, s0", vnpu.IllegalInstruction, "before any mm.ldw", 1, None),
    ("wait s2, 1", vnpu.Deadlock, "waits on something", 0, None),
    ("jmp next\nnext: jmp 0", vnpu.LaunchTimeout, "watchdog", None, None),
])
def test_faults_are_typed_and_located(card, engine, body, error, match, pc, address):
    src = ".kernel k\n.arg out, buffer, i64\n" + body + "\nhalt\n"
    if error is vnpu.LaunchTimeout:
        card = Card("tiny", {"watchdog_cycles": 20000})
    out = card.alloc(64)
    with pytest.raises(error, match=match) as e:
        run(card, src, args=(out,), engine=engine)
    err = e.value
    assert err.card == 0 and err.pe == 0
    if pc is not None:
        assert err.pc == pc and err.instruction
        assert f"pc {pc}" in str(err)
    if address is not None:
        assert err.address == address and f"0x{address & ((1 << 64) - 1) if address < 0 else address:x}" in str(err) \
            or err.address == address
    still_works(card, engine)
    card.reset()
    still_works(card, engine)


def test_barrier_with_a_halted_pe_is_a_deadlock(card, engine):
    src = """
    .kernel k
        csrr r5, pe_id
        beq r5, zero, quit
        barrier
    quit:
        halt
    """
    with pytest.raises(vnpu.Deadlock):
        run(card, src, engine=engine, pes=(0, 1))


def test_access_to_freed_buffer_faults(card, engine):
    buf = card.alloc(64)
    card.free(buf)
    with pytest.raises(vnpu.IllegalAddress) as e:
        run(card, OK_PROG, args=(buf,), engine=engine)
    assert e.value.address == buf and "dma" in e.value.instruction


def test_running_off_the_end_of_code(card, engine):
    image = vnpu.assemble(".kernel k\nnop\n")
    with pytest.raises(vnpu.IllegalInstruction, match="left the code"):
        card.launch(image, "k", (), pes=(0,), engine=engine)


def test_launch_argument_checks(card):
    image = vnpu.assemble(".kernel k\n.arg out, buffer, i64\n.arg n, scalar, i8\nhalt\n")
    with pytest.raises(vnpu.InvalidArgument, match="takes 2 arguments"):
        card.launch(image, "k", (1,))
    with pytest.raises(vnpu.InvalidArgument, match="does not fit i8"):
        card.launch(image, "k", (card.alloc(8), 300))
    with pytest.raises(vnpu.InvalidArgument, match="must be a buffer"):
        card.launch(image, "k", (1.5, 3))
    with pytest.raises(vnpu.InvalidArgument, match="no kernel"):
        card.launch(image, "nope", ())
    with pytest.raises(vnpu.InvalidArgument, match="pes must be"):
        card.launch(image, "k", (card.alloc(8), 3), pes=(0, 99))


def test_embedding_descriptor_faults(card, engine):
    desc = np.zeros(16, np.int64)
    desc[2] = 0  # dim 0 is invalid
    d = put(card, desc)
    src = """
    .kernel k
    .arg d, buffer, i64
        li r5, 128
        dma e0, zero, d, r5, s0
        wait s0, 1
        emb zero, s1
        wait s1, 1
        halt
    """
    with pytest.raises(vnpu.IllegalInstruction, match="embedding descriptor"):
        run(card, src, args=(d,), engine=engine)
