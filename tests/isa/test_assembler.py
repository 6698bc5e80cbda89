"""Assembler behaviour and its errors, which name line and column."""
import struct

import pytest

import vnpu
from vnpu.isa import table as T


def asm_error(text):
    with pytest.raises(vnpu.AssemblerError) as e:
        vnpu.assemble(text)
    return e.value


@pytest.mark.parametrize("text, line, col, msg", [
    (".kernel k\n  foo r1, r2\n", 2, 3, "unknown instruction 'foo'"),
    (".kernel k\nadd r1, r2, r99\n", 2, 13, "expected a register"),
    (".kernel k\nadd r1, r2\n", 2, 5, "takes 3 operands"),
    (".kernel k\naddi r1, r2, 1 << 30\n", 2, 14, "outside"),
    (".kernel k\njmp nowhere\n", 2, 5, "unknown name 'nowhere'"),
    (".kernel k\nvadd r1, r2, r3, r4, f64, s0\n", 2, 22, "expected one of i8, i32, f16, f32"),
    (".kernel k\nwait q1, 1\n", 2, 6, "expected a semaphore"),
    (".kernel k\nx: nop\nx: nop\n", 3, 1, "defined twice"),
    (".kernel k\n.arg a, pointer, f32\nhalt\n", 2, 9, "buffer or scalar"),
    (".bogus\n", 1, 1, "unknown directive"),
    (".kernel k\nlw r1, 4[r2]\n", 2, 8, "memory operand"),
    (".kernel k\nmm.mul r1, r2, r3, i32, set, s0\n", 2, 1, "matrix dtype"),
    (".rodata\n.i8 300\n", 2, 5, "does not fit"),
    (".kernel k\n.end\n", 1, 1, "no instructions"),
])
def test_errors_name_line_and_column(text, line, col, msg):
    e = asm_error(text)
    assert (e.line, e.column) == (line, col), str(e)
    assert msg in str(e) and f":{line}:{col}:" in str(e)


def test_constants_labels_args_and_data():
    img = vnpu.assemble("""
    .const N = 3 * 4
    .const HALF = f32(0.5)
    .kernel k
    .arg x, buffer, f32      ; x is r1 inside k
    .arg n, scalar, i32      ; n is r2
        li r5, N + 1
        li r6, HALF
        addi r7, x, tab      ; rodata labels are byte offsets
        lw r8, -4(n)
        mov r9, n
    back: loop r9, back
        halt
    .rodata
        .i8 1
        .align 4
    tab: .f32 1.5
        .zero 3
    """)
    mod = vnpu.load_module(img)
    d = mod.decoded
    assert d[0, T.IMM] == 13 and d[1, T.IMM] == struct.unpack("<i", struct.pack("<f", 0.5))[0]
    assert d[2, T.RS1] == 1 and d[2, T.IMM] == 4
    assert d[3, T.RS1] == 2 and d[3, T.IMM] == -4
    assert d[4, T.OP] == T.OP_ADDI and d[4, T.RS1] == 2
    assert d[5, T.IMM] == 5  # loop to itself
    assert mod.rodata == b"\x01\0\0\0" + struct.pack("<f", 1.5) + b"\0\0\0"


def test_two_kernels_and_end():
    img = vnpu.assemble(".kernel a\nhalt\n.end\nnop\n.kernel b\n.arg y, scalar, i64\nhalt\n")
    mod = vnpu.load_module(img)
    assert (mod["a"].entry, mod["a"].end) == (0, 1) and (mod["b"].entry, mod["b"].end) == (2, 3)
    assert vnpu.assemble(vnpu.disassemble(img)) == img


def test_examples_assemble_and_round_trip():
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[2] / "examples"
    files = sorted(root.glob("*.s"))
    assert len(files) >= 2
    for f in files:
        img = vnpu.assemble(f.read_text(), source=str(f))
        assert vnpu.assemble(vnpu.disassemble(img)) == img
