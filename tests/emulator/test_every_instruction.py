"""Every instruction of the ISA table runs on both engines with the same result, and has a directed test.

The program for each instruction is generated from its row in isa/table.py (operand fields in table order),
so an instruction added to the table without semantics in an engine fails here, and one without a test of
its own fails `test_every_instruction_has_a_directed_test`.
"""
import pathlib
import re

import numpy as np
import pytest

import vnpu
from vnpu.emulator.card import Card
from vnpu.isa import table as T

TESTS = pathlib.Path(__file__).resolve().parents[1]
# registers the generated programs use: r10 destination (local 4096), r11 source (local 0), r12 second source
# (local 8192), r13 a count (4), r14 a vcvt scale/zero point, r15 an embedding descriptor (local 12288)
SETUP = """
    li r10, 4096
    li r11, 0
    li r12, 8192
    li r13, 4
    li r14, 0x3f800000
    li r15, 12288
"""
ROLE = {"rd": "r10", "rs1": "r11", "rs2": "r12", "rs3": "r13"}
SPECIAL = {  # operands whose meaning is a count or a descriptor rather than an address
    ("mm.ldw", "rs2"): "r13", ("mm.ldw", "rs3"): "r13", ("mm.mul", "rs2"): "r13", ("dma", "rs2"): "r13",
    ("dma.dim", "rs1"): "r13", ("dma.dim", "rs2"): "r13", ("dma.dim", "rs3"): "r13",
    ("vcvt", "rs2"): "r14", ("loop", "rs1"): "r13", ("sig", "rs1"): "r0", ("emb", "rs1"): "r15",
}


def _operands(ins):
    out = []
    for f in ins.fields:
        if f == T.MEM:
            out.append("16(r11)")
        elif f.kind == "reg":
            out.append(SPECIAL.get((ins.mnemonic, f.name), ROLE[f.name]))
        elif f.kind == "target":
            out.append("next")
        elif f.kind == "sem":
            out.append("s0")
        elif f.kind == "eng":
            out.append("e0")
        elif f.kind == "enum":
            choices = T.MATRIX_DTYPES if (ins.unit == "matrix" and f.name == "dt") else f.choices
            out.append("f32" if "f32" in choices else choices[0])
        elif ins.mnemonic == "wait":
            out.append("1")
        else:
            out.append("3")
    return ", ".join(out)


def _program(ins):
    body = [f"    {ins.mnemonic} {_operands(ins)}".rstrip()]
    if ins.mnemonic == "mm.mul":
        body.insert(0, "    mm.ldw r12, r13, r13, f32, s0\n    wait s0, 1")
    if ins.mnemonic == "wait":
        body.insert(0, "    sig r0, s0")
    signals = ins.unit in ("vector", "matrix", "embedding") or ins.mnemonic in ("dma", "sig")
    tail = ["    wait s0, 1"] if signals else []
    return "\n".join([".kernel k", SETUP] + body + tail + ["next:", "    halt"])


def _descriptor():
    d = np.zeros(T.EMB_DESC_WORDS, np.int64)
    d[T.EMB_TABLE], d[T.EMB_ROWS], d[T.EMB_DIM], d[T.EMB_FORMAT] = 0, 4, 4, 0
    d[T.EMB_INDICES], d[T.EMB_NUM_INDICES], d[T.EMB_INDEX_BYTES] = 256, 2, 4
    d[T.EMB_SEGMENTS], d[T.EMB_NUM_BAGS], d[T.EMB_SEGMENT_BYTES] = 272, 1, 4
    d[T.EMB_OUTPUT], d[T.EMB_OUT_DTYPE], d[T.EMB_MODE] = 4096, 0, T.EMB_MODE_SUM
    return d


def _run(engine, image):
    card = Card("tiny")
    rng = np.random.default_rng(1)
    card.write_local(0, 0, rng.standard_normal(4096).astype(np.float32))
    card.write_local(0, 256, np.array([3, 1], np.int32))
    card.write_local(0, 272, np.array([2], np.int32))
    card.write_local(0, 12288, _descriptor())
    result = card.launch(image, "k", (), pes=(0,), engine=engine)
    return card.read_local(0, 0, 16384).tobytes(), result.registers[0].copy()


@pytest.mark.parametrize("mnemonic", [i.mnemonic for i in T.INSTRUCTIONS])
def test_every_instruction_runs_on_both_engines_with_the_same_result(mnemonic):
    ins = T.BY_MNEMONIC[mnemonic]
    image = vnpu.assemble(_program(ins))
    ref_mem, ref_regs = _run("reference", image)
    core_mem, core_regs = _run("numba", image)
    assert ref_mem == core_mem, f"{mnemonic}: local memory differs"
    if mnemonic != "csrr":       # csrr reads the cycle on the core, the instruction count on the reference
        assert np.array_equal(ref_regs, core_regs), f"{mnemonic}: registers differ"


def test_every_instruction_has_a_directed_test():
    """Each mnemonic appears in a test program outside this file (a test written for it)."""
    sources = "\n".join(p.read_text() for p in TESTS.rglob("test_*.py") if p.name != pathlib.Path(__file__).name)
    missing = [i.mnemonic for i in T.INSTRUCTIONS
               if not re.search(r"(?<![\w.])" + re.escape(i.mnemonic) + r"(?![\w.])", sources)]
    assert not missing, f"instructions without a directed test: {missing}"


def test_instruction_counts_are_exact_when_pes_yield_to_each_other():
    """Instructions that touch shared state (dma, sig, barrier) wait for PEs that are behind; the count of
    executed instructions per PE must not change with that (each counted once)."""
    from vnpu.emulator.state import P_INSTR
    src = """
.kernel k
.arg buf, buffer, u8
    csrr r2, pe_id
    addi r5, r2, 1
    muli r5, r5, 20
spin:
    loop r5, spin              ; PE p spins 20 (p + 1) times: the PEs reach the DMA at different times
    muli r3, r2, 64
    add r3, r3, r1
    li r4, 64
    dma e0, r3, zero, r4, s0
    wait s0, 1
    barrier
    dma e0, zero, r3, r4, s1
    wait s1, 1
    sig r2, s2
    wait s2, 1
    halt
"""
    card = Card("tiny")
    buf = card.alloc(4096)
    result = card.launch(vnpu.assemble(src), "k", (buf,), pes=(0, 1, 2, 3), engine="numba")
    assert list(result.pe_stats[:, P_INSTR]) == [14 + 20 * (p + 1) for p in range(4)]
