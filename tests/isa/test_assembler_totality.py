"""The assembler is total: for any input only AssemblerError (with line and column) leaves vnpu.assemble,
and every image it returns loads with vnpu.load_module (issue 13, item 10).

The named cases are the audit's; the property tests feed the whole class: random token soups, deep and
huge expressions, random bytes decoded leniently, and mutations of the example programs.
"""
import pathlib
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import vnpu
from vnpu.isa import asm, table as T
from vnpu.isa.module import MAX_IMAGE

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = [p.read_text() for p in sorted((ROOT / "examples").glob("*.s"))]
K = ".kernel k\n"


def outcome(text):
    """'ok' (and the image loads) or 'error' (an AssemblerError naming a position); anything else fails."""
    try:
        image = vnpu.assemble(text)
    except vnpu.AssemblerError as e:
        assert isinstance(e.line, int) and isinstance(e.column, int) and e.line >= 0 and e.column >= 0
        assert f":{e.line}:{e.column}: " in str(e) and "\n" not in str(e) and len(str(e)) < 400
        return "error", e
    vnpu.load_module(image)     # raises InvalidModule if the invariant is broken
    return "ok", image


def error_of(text):
    kind, e = outcome(text)
    assert kind == "error", "expected an AssemblerError"
    return e


# --- the audit's cases ------------------------------------------------------------------------------------
@pytest.mark.parametrize("expr, value", [
    ("+".join(["1"] * 1000), 1000),
    ("+".join(["1"] * 20000), 20000),
    ("~" * 1000 + "5", 5),
    ("~" * 1001 + "5", -6),
    ("-" * 999 + "7", -7),
    ("(" * 60 + "3" + ")" * 60, 3),
    ("1 << 31 >> 31", 1),
    ("0x7fff_ffff", 0x7FFFFFFF),
    ("7 / 2 + 7 // 2 + 7 % 4", 9),
    ("f32(1.5) - f32(1.5)", 0),
], ids=lambda x: x[:20] if isinstance(x, str) else str(x))
def test_deep_and_long_expressions_evaluate_without_recursion(expr, value):
    kind, image = outcome(K + f"li r1, {expr}\nhalt\n")
    assert kind == "ok"
    assert vnpu.load_module(image).decoded[0, T.IMM] == value


@pytest.mark.parametrize("text, line, col, message", [
    (K + "li r1, " + "(" * 1000 + "1" + ")" * 1000 + "\nhalt\n", 2, 8 + asm.MAX_NESTING, "nested more than"),
    (K + "li r1, 1 << 20000\nhalt\n", 2, 10, "out of range"),
    (K + "li r1, 1 << (1 << 100)\nhalt\n", 2, 10, "out of range"),
    (K + "li r1, " + "9" * 5000 + "\nhalt\n", 2, 8, "number literal"),
    (K + "li r1, 10**15\nhalt\n", 2, 11, "expected a number"),
    (K + "li r1, 1.5 << 2\nhalt\n", 2, 12, "integer operands"),
    (K + "li r1, f16(70000)\nhalt\n", 2, 8, "does not fit f16"),
    (K + "halt\n.rodata\n.zero 1000000000000000\n", 4, 7, "needs a size in"),
    (K + "halt\n.rodata\n.zero -1\n", 4, 7, "needs a size in"),
    (K + "halt\n.rodata\n.space 1 << 40\n", 4, 8, "needs a size in"),
    (K + "halt\n.rodata\n.align 1 << 50\n", 4, 8, "power of two up to"),
    (K + "halt\n.rodata\n.zero 1 << 29\n.zero 1 << 29\n.zero 1 << 29\n", 6, 1, "would exceed"),
    (K + ".arg " + "a" * 256 + ", buffer, f32\nhalt\n", 2, 6, "argument name"),
    (".kernel " + "k" * 256 + "\nhalt\n", 1, 9, "bad kernel name"),
    (K + "jmp end\nhalt\nend:\n", 2, 5, "branch target 2 is outside the code (0..1)"),
    (K + "jmp 1000\nhalt\n", 2, 5, "outside the code"),
    (K + "jmp -1\nhalt\n", 2, 5, "outside the code"),
    (K + "beq r1, r2, tab\nhalt\n.rodata\ntab: .byte 1\n", 2, 13, "is a .rodata label"),
    (K + "loop r3, data\nhalt\n.rodata\ndata: .i32 7\n", 2, 10, "is a .rodata label"),
    (K + "add r" + "1" * 5000 + ", r1, r1\nhalt\n", 2, 5, "expected a register"),
    (K + "wait s" + "9" * 400 + ", 1\nhalt\n", 2, 6, "expected a semaphore"),
    ("", 1, 1, "no .kernel"),
    ("; just a comment\n.rodata\n.byte 1\n", 1, 1, "no .kernel"),
], ids=lambda x: x[:30] if isinstance(x, str) else str(x))
def test_audit_cases_are_assembler_errors(text, line, col, message):
    e = error_of(text)
    assert message in str(e) and (e.line, e.column) == (line, col), str(e)


@pytest.mark.parametrize("bad", [b".kernel k\nhalt\n", None, 5, ["halt"], bytearray(b"x")])
def test_text_that_is_not_a_str_is_an_assembler_error(bad):
    with pytest.raises(vnpu.AssemblerError) as e:
        vnpu.assemble(bad)
    assert (e.value.line, e.value.column) == (0, 0) and "must be a str" in str(e.value)


def test_size_limits_are_checked_before_allocating():
    t = time.perf_counter()
    for n in (MAX_IMAGE + 1, 10 ** 15, 1 << 127):
        error_of(K + f"halt\n.rodata\n.zero {n}\n")
    error_of(K + "halt\n.rodata\n" + ".zero 1 << 29\n" * 3)     # 1.5 GiB in total: refused in pass 1
    assert time.perf_counter() - t < 1.0


def test_labels_after_the_code_are_fine_when_not_branched_to():
    kind, image = outcome(K + "li r1, end\nhalt\nend:\n")    # a label's value as an immediate is allowed
    assert kind == "ok" and vnpu.load_module(image).decoded[0, T.IMM] == 2


def test_dotted_labels_and_tabs():
    kind, image = outcome(K + "a.b:\tli\tr1, a.b + 1\n\tjmp a.b\n")
    assert kind == "ok"


# --- the class: property tests -----------------------------------------------------------------------------
MNEMONICS = sorted(T.BY_MNEMONIC) + ["mov", "j"]
DIRECTIVES = [".kernel", ".arg", ".end", ".const", ".equ", ".text", ".rodata", ".byte", ".i8", ".u16", ".i32",
              ".u64", ".f16", ".f32", ".f64", ".zero", ".space", ".align", ".bogus"]
NUMBERS = ["0", "1", "-1", "7", "255", "0xffffffff", "1 << 23", "1 << 31", "1 << 63", "1 << 128", "1e400", "1.5",
           "10**15", "1 << 20000", "9" * 60, "0b101", "0o17", "1_000", "f32(0.5)", "f16(1e9)", "1 // 0", "3 % 0"]
WORDS = (MNEMONICS + DIRECTIVES + NUMBERS + [
    "r0", "r1", "r5", "r31", "r32", "r99", "zero", "s0", "s31", "s32", "e0", "e15", "e16", "i8", "i32", "f16",
    "f32", "set", "acc", "pe_id", "rodata", "buffer", "scalar", "top", "end", "tab", "k", "a", "N", ",", ",",
    ", ", "(", ")", "(r1)", "8(r2)", "+", "-", "~", "*", "/", "%", "<<", ">>", "&", "|", "^", ":", "top:", "end:",
    "tab:", "=", ";", "#", "\t", " ", "\n", "\n", "\n", "\x00", "\u00e9", "\ud800", "\u2028"])


@st.composite
def token_soup(draw):
    """Lines of random tokens, mostly shaped like assembly (a head word, then operands)."""
    lines = []
    if draw(st.booleans()):
        lines.append(".kernel k")
    for _ in range(draw(st.integers(0, 12))):
        head = draw(st.sampled_from(MNEMONICS + DIRECTIVES + ["top:", "end:", "tab:", ""]))
        ops = draw(st.lists(st.sampled_from(WORDS), max_size=8))
        lines.append(head + " " + " ".join(ops) if draw(st.booleans()) else head + " " + ", ".join(ops))
    return "\n".join(lines) + draw(st.sampled_from(["", "\n", "\nhalt\n"]))


@st.composite
def deep_expression(draw):
    """Long chains, deep prefixes and parentheses, huge literals, as an immediate, a target or data."""
    n = draw(st.integers(1, 3000))
    kind = draw(st.sampled_from(["chain", "prefix", "parens", "literal", "mixed"]))
    if kind == "chain":
        e = draw(st.sampled_from(["+", "-", "*", "|", "^", "&", "<<", ">>", "/", "%"])).join(
            draw(st.sampled_from(["1", "2", "0", "N", "top"])) for _ in range(n))
    elif kind == "prefix":
        e = "".join(draw(st.sampled_from("-~+")) for _ in range(n)) + "3"
    elif kind == "parens":
        d = n % 200
        e = "(" * d + "1" + ")" * d
    elif kind == "literal":
        e = draw(st.sampled_from(["", "0x", "0b", "-"])) + "1" * (n % 600 + 1)
    else:
        e = " ".join(draw(st.sampled_from(["1", "<<", "(", ")", "~", "f32(", "1e300", "*", "N", "+"]))
                     for _ in range(n % 400))
    where = draw(st.sampled_from([".kernel k\n.const N = 3\ntop: li r1, {e}\nhalt\n",
                                  ".kernel k\n.const N = 3\ntop: jmp {e}\nhalt\n",
                                  ".kernel k\n.const N = 3\ntop: halt\n.rodata\n.zero {e}\n",
                                  ".kernel k\n.const N = 3\ntop: halt\n.rodata\n.align {e}\n",
                                  ".kernel k\n.const N = {e}\ntop: halt\n.rodata\n.f32 N\n"]))
    return where.replace("{e}", e)


def _mutate(text, rng):
    b = bytearray(text.encode())
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(4)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:
            del b[min(i, len(b) - 1)]
        elif op == 1:
            b[i:i] = rng.choice([b"(", b")", b",", b":", b"~", b"<< 40", b"9" * 50, b"\n", b".zero 1<<40\n",
                                 b"jmp 99\n", b".end\n", b".kernel q\n", b".rodata\n", b".text\n", b"\xff"])
        elif op == 2 and b:
            b[min(i, len(b) - 1)] = rng.randrange(256)
        else:
            j = rng.randrange(len(b) + 1)
            b[i:i] = b[min(i, j):max(i, j)]
    return b.decode("utf-8", errors=rng.choice(["replace", "ignore", "surrogateescape", "backslashreplace"]))


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(token_soup())
def test_random_token_soups(text):
    outcome(text)


@FUZZ
@given(deep_expression())
def test_deep_and_huge_expressions(text):
    outcome(text)


@FUZZ
@given(st.binary(max_size=400), st.sampled_from(["replace", "ignore", "surrogateescape", "latin-1"]))
def test_random_bytes_decoded_leniently(data, errors):
    text = data.decode("latin-1") if errors == "latin-1" else data.decode("utf-8", errors=errors)
    outcome(text)
    outcome(K + text + "\nhalt\n")


@FUZZ
@given(st.integers(0, len(EXAMPLES) - 1), st.integers(0, 2 ** 32))
def test_mutated_examples(which, seed):
    outcome(_mutate(EXAMPLES[which], random.Random(seed)))


@pytest.mark.slow
def test_mutated_examples_many():
    rng = random.Random(13)
    kinds = {"ok": 0, "error": 0}
    for _ in range(20000):
        kinds[outcome(_mutate(rng.choice(EXAMPLES), rng))[0]] += 1
    assert kinds["ok"] and kinds["error"]
