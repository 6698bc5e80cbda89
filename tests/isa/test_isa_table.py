"""The ISA table drives encode, decode, assembly and disassembly: each must agree with the others."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import vnpu
from vnpu.isa import encoding, table as T
from vnpu.isa.asm import disassemble_word, format_instruction
from vnpu.isa.module import KernelSymbol, build_image


def operand_values(ins, n_code, pc):
    """A strategy for a random valid operand dict of one instruction."""
    parts = {}
    for f in ins.encoding_fields():
        if f.kind == "target":
            parts[f.name] = st.integers(max(0, pc - (1 << 23)), min(n_code - 1, pc + (1 << 23) - 1))
        elif f.kind == "reg" and ins.mnemonic == "loop":
            parts[f.name] = st.integers(1, 31)
        elif ins.unit == "matrix" and f.name == "dt":
            parts[f.name] = st.sampled_from([T.VDTYPES.index("i8"), T.VDTYPES.index("f16")])
        else:
            lo, hi = f.lo_hi()
            parts[f.name] = st.integers(lo, hi)
    return st.fixed_dictionaries(parts)


@pytest.mark.parametrize("ins", T.INSTRUCTIONS, ids=lambda i: i.mnemonic)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_instruction_encodes_decodes_and_reassembles(ins, data):
    n_code, pc = 64, data.draw(st.integers(0, 63))
    vals = data.draw(operand_values(ins, n_code, pc))
    word = encoding.encode(ins.mnemonic, vals, pc)
    assert 0 <= word < (1 << 64)
    back_ins, back = encoding.decode_one(word, pc, n_code)
    assert back_ins is ins and back == vals
    # disassemble -> assemble gives the same word (targets become labels that must exist)
    text = format_instruction(ins, vals)
    prog = [".kernel k"] + [f"L{i}: nop" if i != pc else f"L{i}: {text}" for i in range(n_code)]
    image = vnpu.assemble("\n".join(prog))
    assert int(vnpu.load_module(image).code[pc]) == word


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_random_programs_round_trip_through_text(data):
    n = data.draw(st.integers(1, 40))
    words = []
    for pc in range(n):
        ins = data.draw(st.sampled_from(T.INSTRUCTIONS))
        words.append(encoding.encode(ins.mnemonic, data.draw(operand_values(ins, n, pc)), pc))
    cut = data.draw(st.integers(1, n))
    kernels = [KernelSymbol("first", 0, cut)]
    if cut < n:
        kernels.append(KernelSymbol("second", cut, n, (vnpu.isa.module.KernelArg("x", "buffer", "f32"),)))
    rodata = bytes(data.draw(st.binary(max_size=40)))
    image = build_image(words, rodata, kernels)
    text = vnpu.disassemble(image)
    assert vnpu.assemble(text) == image


def test_table_is_complete_for_the_classes_the_card_needs():
    names = set(T.BY_MNEMONIC)
    needed = {"add", "addi", "li", "beq", "loop", "csrr", "halt", "lw", "sw", "dma", "dma.dim", "mm.ldw",
              "mm.mul", "vadd", "vsub", "vmul", "vmax", "vmin", "vrelu", "vsigmoid", "vtanh", "vexp", "vgelu",
              "vsum", "vrmax", "vcvt", "emb", "sig", "wait", "barrier", "fence", "mark"}
    assert needed <= names
    assert {i.unit for i in T.INSTRUCTIONS} == set(T.UNITS)
    for sr in ("pe_id", "pe_count", "cycle"):
        assert sr in T.SPECIAL_REGS


def test_decode_rejects_unknown_opcode_reserved_bits_and_bad_targets():
    with pytest.raises(encoding.DecodeError, match="unknown opcode"):
        encoding.decode_one(0xEE << 56, 0)
    with pytest.raises(encoding.DecodeError, match="reserved bits"):
        encoding.decode_one(encoding.encode("halt", {}) | 1, 0)
    jmp = encoding.encode("jmp", {"imm": 5}, 0)
    with pytest.raises(encoding.DecodeError, match="outside the code"):
        encoding.decode_one(jmp, 0, 3)
    bad_sr = (T.OP_CSRR << 56) | (1 << 51) | (15 << 47)
    with pytest.raises(encoding.DecodeError, match="field sr"):
        encoding.decode_one(bad_sr, 0)


def test_decode_table_columns():
    img = vnpu.assemble(".kernel k\nli r3, -7\nvadd r1, r2, r3, r4, f16, s5\nhalt\n")
    dec = vnpu.load_module(img).decoded
    assert dec[0, T.OP] == T.OP_LI and dec[0, T.RD] == 3 and dec[0, T.IMM] == -7
    assert dec[1, T.DT] == T.VDTYPES.index("f16") and dec[1, T.SEM] == 5 and dec[1, T.RS3] == 4
    assert disassemble_word(int(vnpu.load_module(img).code[1])) == "vadd r1, r2, r3, r4, f16, s5"
    assert np.all(dec[:, T.OP] == [T.OP_LI, T.OP_VADD, T.OP_HALT])
