"""The sanitizer names both instructions of a race; its verdict follows synchronization, not timing.
(The reference interpreter is functional only and has no sanitizer, so these run on the timed core.)"""
import numpy as np
import pytest

import vnpu

from conftest import put, run

HEADER = ".kernel k\n.arg a, buffer, f32\n.arg out, buffer, f32\n li r9, 1024\n li r10, 4096\n li r11, 256\n"


@pytest.mark.parametrize("body, first, second", [
    # read local memory a DMA is still writing (no wait)
    ("dma e0, r10, a, r9, s0\n lw r5, 0(r10)\n wait s0, 1", "lw", "dma"),
    # overwrite the source of an in-flight DMA
    ("dma e0, out, r10, r9, s0\n sw r5, 8(r10)\n wait s0, 1", "sw", "dma"),
    # vector op reads what a DMA on the same PE may still write
    ("dma e0, r10, a, r9, s0\n vrelu r10, r10, r11, f32, s1\n wait s0, 1\n wait s1, 1", "vrelu", "dma"),
    # a second engine writes the destination of the first
    ("dma e0, r10, a, r9, s0\n dma e1, r10, a, r9, s1\n wait s0, 1\n wait s1, 1", "dma", "dma"),
    # waiting on the wrong semaphore does not order anything
    ("dma e0, r10, a, r9, s0\n vadd r12, r12, r12, r11, f32, s2\n wait s2, 1\n lw r5, 0(r10)\n wait s0, 1",
     "lw", "dma"),
])
def test_races_are_reported_with_both_instructions(card, body, first, second):
    a = put(card, np.zeros(256, np.float32))
    out = card.alloc(1024)
    with pytest.raises(vnpu.RaceError) as e:
        run(card, HEADER + body + "\n halt\n", args=(a, out))
    msg = str(e.value)
    assert e.value.instruction.startswith(first)
    assert f"[{second}" in msg and "pc" in msg and "add a wait" in msg


@pytest.mark.parametrize("body", [
    "dma e0, r10, a, r9, s0\n wait s0, 1\n lw r5, 0(r10)",
    "dma e0, r10, a, r9, s0\n wait s0, 1\n vrelu r10, r10, r11, f32, s0\n vexp r10, r10, r11, f32, s0\n"
    " wait s0, 2\n sw r5, 0(r10)",                                           # same in-order vector unit
    "dma e0, r10, a, r9, s0\n dma e0, r10, a, r9, s0\n fence\n lw r5, 0(r10)",   # same in-order engine
    "dma e0, r10, a, r9, s0\n li r12, 8192\n lw r5, 0(r12)\n wait s0, 1",        # disjoint bytes
])
def test_ordered_programs_pass(card, body):
    a = put(card, np.zeros(256, np.float32))
    run(card, HEADER + body + "\n halt\n", args=(a, card.alloc(1024)))


def test_verdict_does_not_depend_on_timing(card):
    """The same racy program is reported whatever the DMA costs (a slow or an instant engine)."""
    from vnpu.emulator.card import Card
    for setup in (0, 100000):
        c = Card("tiny", {"dma.setup_cycles": setup})
        a = put(c, np.zeros(256, np.float32))
        with pytest.raises(vnpu.RaceError):
            run(c, HEADER + "dma e0, r10, a, r9, s0\n lw r5, 0(r10)\n wait s0, 1\n halt\n", args=(a, c.alloc(1024)))


def test_sanitizer_can_be_switched_off(card):
    a = put(card, np.zeros(256, np.float32))
    run(card, HEADER + "dma e0, r10, a, r9, s0\n lw r5, 0(r10)\n wait s0, 1\n halt\n", args=(a, card.alloc(1024)),
        sanitize=False)


def test_two_pes_writing_interleaved_columns_is_not_a_race(card):
    """2-D DMAs writing different columns of one matrix overlap only in their bounding intervals."""
    src = """
    .kernel k
    .arg out, buffer, i32
        csrr r10, pe_id
        li r5, 16            ; 16 rows
        li r6, 8             ; local stride: 2 x i32
        li r7, 16            ; DRAM stride: 4 x i32 per row
        dma.dim e0, d1, r5, r6, r7
        shli r8, r10, 3      ; PE p writes columns 2p, 2p+1
        add r8, out, r8
        dma e0, r8, zero, r6, s0
        wait s0, 1
        halt
    """
    run(card, src, args=(card.alloc(16 * 16),), pes=(0, 1))
    clash = src.replace("shli r8, r10, 3", "shli r8, r10, 2")   # now columns 1..2 are written by both PEs
    with pytest.raises(vnpu.RaceError):
        run(card, clash, args=(card.alloc(16 * 16),), pes=(0, 1))
