"""Assembler and disassembler for the vnpu ISA; the operand syntax comes from the table.

The text format is documented in docs/assembly.md. `assemble(text) -> bytes` gives a module image;
`disassemble(image) -> str` gives text that assembles to the same image.
"""
from __future__ import annotations

import os
import re
import struct

import numpy as np

from vnpu.errors import AssemblerError

from . import encoding, table as T
from .module import HEADER_SIZE, MAX_IMAGE, KernelArg, KernelSymbol, build_image, load_module

_DATA_DIRECTIVES = {  # directive -> (struct code, size)
    ".byte": ("<B", 1), ".u8": ("<B", 1), ".i8": ("<b", 1), ".i16": ("<h", 2), ".u16": ("<H", 2),
    ".i32": ("<i", 4), ".u32": ("<I", 4), ".i64": ("<q", 8), ".u64": ("<Q", 8),
    ".f16": ("<e", 2), ".f32": ("<f", 4), ".f64": ("<d", 8),
}
_LABEL_RE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.]*)\s*:", re.ASCII)
_REG_ALIASES = {"zero": 0}
PSEUDO = {"mov": "addi rd, rs, 0", "j": "jmp target"}


def _f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", float(x)))[0]


def _f16_bits(x):
    return struct.unpack("<H", struct.pack("<e", float(x)))[0]


_FUNCS = {"f32": ("<f", "f32"), "f16": ("<e", "f16")}

# --- expressions ------------------------------------------------------------------------------------------
# A parser of its own, not Python's ast: chains of operators are evaluated with explicit stacks, so a
# 100,000-term sum or 1,000 `~` cost no recursion; parentheses and calls nest at most MAX_NESTING deep;
# every value is bounded by MAX_VALUE_BITS, checked before a shift could build a huge integer.
MAX_NESTING = 64
MAX_VALUE_BITS = 128
_MAX_MAGNITUDE = 1 << MAX_VALUE_BITS
_MAX_LITERAL_CHARS = 200
_TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9_]*)?[0-9A-Za-z_]*)
  | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<op>//|<<|>>|[-+*/%&|^~(),])
""", re.VERBOSE | re.ASCII)
_INT_RE = re.compile(r"0[xX](?:_?[0-9a-fA-F])+|0[bB](?:_?[01])+|0[oO](?:_?[0-7])+|[1-9](?:_?[0-9])*|0(?:_?0)*",
                     re.ASCII)
_FLOAT_RE = re.compile(r"(?:[0-9](?:_?[0-9])*)?(?:\.(?:[0-9](?:_?[0-9])*)?)?(?:[eE][+-]?[0-9](?:_?[0-9])*)?",
                       re.ASCII)
_BIN_PREC = {"|": 1, "^": 2, "&": 3, "<<": 4, ">>": 4, "+": 5, "-": 5, "*": 6, "/": 6, "//": 6, "%": 6}


class _ExprError(Exception):
    def __init__(self, message, offset):
        super().__init__(message)
        self.offset = offset


def _number(text, at):
    if len(text) > _MAX_LITERAL_CHARS:
        raise _ExprError(f"number literal of {len(text)} characters (at most {_MAX_LITERAL_CHARS})", at)
    if _INT_RE.fullmatch(text):
        return _bounded(int(text, 0), at)
    if _FLOAT_RE.fullmatch(text) and any(c in text for c in ".eE") and any(c.isdigit() for c in text):
        return float(text)
    raise _ExprError(f"bad number {text!r}", at)


def _bounded(v, at):
    if isinstance(v, int) and not -_MAX_MAGNITUDE < v < _MAX_MAGNITUDE:
        raise _ExprError(f"value out of range (more than {MAX_VALUE_BITS} bits)", at)
    return v


def _ints(op, a, b, at):
    if not (isinstance(a, int) and isinstance(b, int)):
        raise _ExprError(f"{op} needs integer operands", at)


def _binary(op, a, b, at):
    if op in ("+", "-", "*"):
        v = a + b if op == "+" else a - b if op == "-" else a * b
    elif op in ("/", "//", "%"):
        if b == 0:
            raise _ExprError("division by zero", at)
        if op == "%":
            v = a % b
        elif op == "//" or (isinstance(a, int) and isinstance(b, int)):
            v = a // b
        else:
            v = a / b
    elif op in ("<<", ">>"):
        _ints(op, a, b, at)
        if b < 0:
            raise _ExprError(f"negative shift count {b}", at)
        if op == ">>":
            v = a >> min(b, MAX_VALUE_BITS + 1)
        elif a != 0 and b > MAX_VALUE_BITS:
            raise _ExprError(f"value out of range (more than {MAX_VALUE_BITS} bits)", at)
        else:
            v = a << b
    else:
        _ints(op, a, b, at)
        v = a & b if op == "&" else a | b if op == "|" else a ^ b
    return _bounded(v, at)


def evaluate(expr: str, names) -> int | float:
    """Evaluate an assembler expression; `names` maps a name to its value. Raises _ExprError(msg, offset)."""
    toks, pos = [], 0
    while pos < len(expr):
        m = _TOKEN_RE.match(expr, pos)
        if m is None:
            raise _ExprError(f"unexpected character {expr[pos]!r}", pos)
        if m.lastgroup != "ws":
            toks.append((m.lastgroup, m.group(), pos))
        pos = m.end()
    toks.append(("end", "", len(expr)))
    i = 0
    depth = 0

    def peek():
        return toks[i]

    def take(what):
        nonlocal i
        t = toks[i]
        if t[1] != what:
            raise _ExprError(f"expected {what!r}, got {t[1] or 'the end'!r}", t[2])
        i += 1

    def unary():
        nonlocal i
        prefixes = []
        while peek()[0] == "op" and peek()[1] in "-+~":
            prefixes.append(toks[i])
            i += 1
        v = primary()
        for _, op, at in reversed(prefixes):
            if op == "-":
                v = -v
            elif op == "~":
                if not isinstance(v, int):
                    raise _ExprError("~ needs an integer operand", at)
                v = ~v
            v = _bounded(v, at)
        return v

    def primary():
        nonlocal i, depth
        kind, text, at = toks[i]
        if kind == "num":
            i += 1
            return _number(text, at)
        if kind == "name":
            i += 1
            if peek()[1] == "(" and text in _FUNCS:
                fmt, fname = _FUNCS[text]
                v = nested()
                try:
                    return struct.unpack("<I" if fmt == "<f" else "<H", struct.pack(fmt, float(v)))[0]
                except (OverflowError, struct.error):
                    raise _ExprError(f"{v} does not fit {fname}", at) from None
            if text not in names:
                raise _ExprError(f"unknown name {text!r}", at)
            return names[text]
        if text == "(":
            return nested()
        raise _ExprError(f"expected a number, a name or '(', got {text or 'the end'!r}", at)

    def nested():
        nonlocal depth
        depth += 1
        if depth > MAX_NESTING:
            raise _ExprError(f"expression nested more than {MAX_NESTING} deep", toks[i][2])
        take("(")
        v = binary()
        take(")")
        depth -= 1
        return v

    def binary():
        nonlocal i
        vals, ops = [unary()], []

        def reduce():
            op, at = ops.pop()
            b = vals.pop()
            vals.append(_binary(op, vals.pop(), b, at))
        while peek()[0] == "op" and peek()[1] in _BIN_PREC:
            _, op, at = toks[i]
            i += 1
            while ops and _BIN_PREC[ops[-1][0]] >= _BIN_PREC[op]:
                reduce()
            ops.append((op, at))
            vals.append(unary())
        while ops:
            reduce()
        return vals[0]

    v = binary()
    kind, text, at = peek()
    if kind != "end":
        raise _ExprError(f"unexpected {text!r}", at)
    return v


class _Names:
    """The names an expression may use: constants, then labels (their index or offset)."""

    def __init__(self, consts, labels):
        self.consts, self.labels = consts, labels

    def __contains__(self, name):
        return name in self.consts or name in self.labels

    def __getitem__(self, name):
        return self.consts[name] if name in self.consts else self.labels[name][1]


class _Source:
    def __init__(self, name):
        self.name = name

    def error(self, msg, line, col):
        if len(msg) > 240:      # a message quotes the offending text: keep a huge token from flooding it
            msg = msg[:200] + " ... " + msg[-35:]
        return AssemblerError(msg, line, col, self.name)


def _split_operands(text, col0):
    """Split at top-level commas; return [(operand, column)] with 1-based columns."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text + ","):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            piece = text[start:i]
            stripped = piece.strip()
            lead = len(piece) - len(piece.lstrip())
            out.append((stripped, col0 + start + lead))
            start = i + 1
    if len(out) == 1 and out[0][0] == "":
        return []
    return out


class Assembler:
    def __init__(self, text: str, source: str = "<asm>"):
        self.text = text
        self.src = _Source(source)
        self.consts: dict = {}
        self.labels: dict = {}      # name -> ("text", pc) or ("rodata", offset)
        self.ncode = 0              # instructions in the code, known after pass 1

    # --- expressions -------------------------------------------------------------------------------
    def eval(self, expr, line, col, allow_float=False):
        names = _Names(self.consts, self.labels)
        try:
            v = evaluate(expr, names)
        except _ExprError as e:
            raise self.src.error(f"{e} in {expr.strip()!r}", line, col + e.offset) from None
        if isinstance(v, float) and not allow_float:
            if not v.is_integer():
                raise self.src.error(f"expected an integer, got {v}", line, col)
            v = int(v)
            if not -_MAX_MAGNITUDE < v < _MAX_MAGNITUDE:
                raise self.src.error(f"value out of range (more than {MAX_VALUE_BITS} bits)", line, col)
        return v

    # --- operands ----------------------------------------------------------------------------------
    def reg(self, tok, line, col, argregs):
        t = tok.strip()
        if t in _REG_ALIASES:
            return _REG_ALIASES[t]
        if t in argregs:
            return argregs[t]
        m = re.fullmatch(r"r([0-9]{1,3})", t)
        if not m or int(m.group(1)) >= T.NUM_REGS:
            raise self.src.error(f"expected a register r0..r{T.NUM_REGS - 1}, got {t!r}", line, col)
        return int(m.group(1))

    def prefixed(self, tok, prefix, limit, what, line, col):
        m = re.fullmatch(prefix + r"([0-9]{1,3})", tok.strip())
        if not m or int(m.group(1)) >= limit:
            raise self.src.error(f"expected a {what} {prefix}0..{prefix}{limit - 1}, got {tok.strip()!r}", line, col)
        return int(m.group(1))

    def operand(self, f, tok, line, col, argregs):
        if f.kind == "reg":
            return self.reg(tok, line, col, argregs)
        if f.kind == "sem":
            return self.prefixed(tok, "s", T.NUM_SEMS, "semaphore", line, col)
        if f.kind == "eng":
            return self.prefixed(tok, "e", T.NUM_ENGINES, "DMA engine", line, col)
        if f.kind == "enum":
            if tok not in f.choices:
                raise self.src.error(f"expected one of {', '.join(f.choices)}, got {tok!r}", line, col)
            return f.choices.index(tok)
        if f.kind == "target":
            return self.target(tok, line, col)
        v = self.eval(tok, line, col)
        lo, hi = f.lo_hi()
        if f.kind == "imm" and f.width == 32 and hi < v <= 0xFFFFFFFF:
            v -= 1 << 32  # allow unsigned spelling of 32-bit patterns, e.g. li r1, 0xffffffff
        if not lo <= v <= hi:
            raise self.src.error(f"immediate {v} outside [{lo}, {hi}]", line, col)
        return v

    def target(self, tok, line, col):
        """A branch target: a code label or an instruction index, inside the code [0, ncode)."""
        name = tok.strip()
        if self.labels.get(name, ("text",))[0] == "rodata":
            raise self.src.error(f"branch target {name!r} is a .rodata label, not an instruction", line, col)
        v = self.eval(tok, line, col)
        if not 0 <= v < self.ncode:
            where = f"0..{self.ncode - 1}" if self.ncode else "there are no instructions"
            raise self.src.error(f"branch target {v} is outside the code ({where})", line, col)
        return v

    # --- the two passes ----------------------------------------------------------------------------
    def _lines(self):
        for ln, raw in enumerate(self.text.splitlines(), 1):
            code = re.split(r"[;#]", raw, maxsplit=1)[0].rstrip()
            pos = 0
            m = _LABEL_RE.match(code, pos)
            labels = []
            while m:
                labels.append((m.group(1), 1 + m.start(1)))
                pos = m.end()
                m = _LABEL_RE.match(code, pos)
            rest = code[pos:]
            lead = len(rest) - len(rest.lstrip())
            yield ln, labels, rest.strip(), 1 + pos + lead

    def _data_size(self, word, rest, ln, col):
        if word in _DATA_DIRECTIVES:
            return len(_split_operands(rest, col)) * _DATA_DIRECTIVES[word][1]
        if word in (".zero", ".space"):
            n = self.eval(rest, ln, col)
            if not 0 <= n <= MAX_IMAGE:
                raise self.src.error(f"{word} needs a size in [0, {MAX_IMAGE}], got {n}", ln, col)
            return n
        raise AssertionError(word)

    def assemble(self) -> bytes:
        items = list(self._lines())
        # Pass 1: constants, label addresses and the sizes of code and rodata (bounded before pass 2
        # allocates anything: the whole image must fit MAX_IMAGE bytes, the module format's limit).
        section, pc, ro = "text", 0, 0
        for ln, labels, code, col in items:
            if HEADER_SIZE + 8 * pc + ro > MAX_IMAGE:
                raise self.src.error(f"the module would exceed {MAX_IMAGE} bytes ({pc} instructions, {ro} bytes "
                                     f"of rodata)", ln, col)
            for name, lcol in labels:
                if name in self.labels or name in self.consts:
                    raise self.src.error(f"label {name!r} defined twice", ln, lcol)
                self.labels[name] = (section, pc if section == "text" else ro)
            if not code:
                continue
            word, rest = _split_word(code)
            rcol = col + len(word) + 1
            if word in (".const", ".equ"):
                m = re.fullmatch(r"\s*([A-Za-z_]\w*)\s*=\s*(.+)", rest)
                if not m:
                    raise self.src.error(f"{word} needs NAME = value", ln, col)
                if m.group(1) in self.consts or m.group(1) in self.labels:
                    raise self.src.error(f"name {m.group(1)!r} defined twice", ln, rcol)
                self.consts[m.group(1)] = self.eval(m.group(2), ln, rcol + m.start(2), allow_float=True)
            elif word in (".text", ".rodata"):
                section = word[1:]
            elif word == ".align":
                if section != "rodata":
                    raise self.src.error(".align is only meaningful in .rodata", ln, col)
                a = self.eval(rest, ln, rcol)
                if a <= 0 or a & (a - 1) or a > MAX_IMAGE:
                    raise self.src.error(f".align needs a power of two up to {MAX_IMAGE}, got {a}", ln, rcol)
                ro = (ro + a - 1) // a * a
            elif word in _DATA_DIRECTIVES or word in (".zero", ".space"):
                if section != "rodata":
                    raise self.src.error(f"data directive {word} outside .rodata", ln, col)
                ro += self._data_size(word, rest, ln, rcol)
            elif word.startswith("."):
                continue
            else:
                if section != "text":
                    raise self.src.error(f"instruction {word!r} in .rodata", ln, col)
                pc += 1
        if HEADER_SIZE + 8 * pc + ro > MAX_IMAGE:
            raise self.src.error(f"the module would exceed {MAX_IMAGE} bytes ({pc} instructions, {ro} bytes "
                                 f"of rodata)", len(items), 1)
        self.ncode = pc
        # Pass 2: encode.
        section, words, rodata = "text", [], bytearray()
        kernels, cur = [], None
        for ln, labels, code, col in items:
            if not code:
                continue
            word, rest = _split_word(code)
            rcol = col + len(word) + 1
            if word in (".const", ".equ"):
                continue
            if word in (".text", ".rodata"):
                section = word[1:]
            elif word == ".kernel":
                name = rest.strip()
                if not name.isidentifier() or not name.isascii() or len(name) > 255:
                    raise self.src.error(f"bad kernel name {name!r}", ln, rcol)
                if any(k["name"] == name for k in kernels):
                    raise self.src.error(f"kernel {name!r} defined twice", ln, rcol)
                if section != "text":
                    raise self.src.error(".kernel inside .rodata", ln, col)
                if cur is not None and cur["end"] is None:
                    cur["end"] = len(words)
                cur = {"name": name, "entry": len(words), "end": None, "args": [], "line": ln}
                kernels.append(cur)
            elif word == ".end":
                if cur is None or cur["end"] is not None:
                    raise self.src.error(".end without an open .kernel", ln, col)
                cur["end"] = len(words)
            elif word == ".arg":
                ops = _split_operands(rest, rcol)
                if cur is None or cur["end"] is not None:
                    raise self.src.error(".arg outside a .kernel", ln, col)
                if len(ops) != 3:
                    raise self.src.error(".arg needs NAME, buffer|scalar, DTYPE", ln, rcol)
                (an, ac), (kind, kc), (dt, dc) = ops
                if (not an.isidentifier() or not an.isascii() or len(an) > 255
                        or an in {a.name for a in cur["args"]}):
                    raise self.src.error(f"bad or repeated argument name {an!r}", ln, ac)
                if kind not in T.ARG_KINDS:
                    raise self.src.error(f"argument kind must be buffer or scalar, got {kind!r}", ln, kc)
                if dt not in T.ARG_DTYPES:
                    raise self.src.error(f"unknown dtype {dt!r}; one of {', '.join(T.ARG_DTYPES)}", ln, dc)
                if len(cur["args"]) >= T.MAX_KERNEL_ARGS:
                    raise self.src.error(f"at most {T.MAX_KERNEL_ARGS} arguments", ln, ac)
                cur["args"].append(KernelArg(an, kind, dt))
            elif word == ".align":
                a = self.eval(rest, ln, rcol)
                rodata += bytes((-len(rodata)) % a)
            elif word in (".zero", ".space"):
                rodata += bytes(self._data_size(word, rest, ln, rcol))
            elif word in _DATA_DIRECTIVES:
                fmt, _size = _DATA_DIRECTIVES[word]
                for tok, tcol in _split_operands(rest, rcol):
                    v = self.eval(tok, ln, tcol, allow_float=fmt in ("<e", "<f", "<d"))
                    try:
                        rodata += struct.pack(fmt, v)
                    except (struct.error, OverflowError):
                        raise self.src.error(f"value {v} does not fit {word}", ln, tcol) from None
            elif word.startswith("."):
                raise self.src.error(f"unknown directive {word!r}", ln, col)
            else:
                argregs = {a.name: i + 1 for i, a in enumerate(cur["args"])} if cur else {}
                words.append(self.instruction(word, rest, ln, col, rcol, len(words), argregs))
        if cur is not None and cur["end"] is None:
            cur["end"] = len(words)
        if not kernels:
            raise self.src.error("no .kernel in the text: a module needs at least one kernel", 1, 1)
        syms = []
        for k in kernels:
            if k["end"] <= k["entry"]:
                raise self.src.error(f"kernel {k['name']!r} has no instructions", k["line"], 1)
            syms.append(KernelSymbol(k["name"], k["entry"], k["end"], tuple(k["args"])))
        sym_bytes = 4 + sum(11 + len(k.name) + sum(3 + len(a.name) for a in k.args) for k in syms)
        if HEADER_SIZE + 8 * len(words) + len(rodata) + sym_bytes + 24 > MAX_IMAGE:
            raise self.src.error(f"the module would exceed {MAX_IMAGE} bytes", len(items), 1)
        return build_image(words, bytes(rodata), syms)

    def instruction(self, mn, rest, ln, col, rcol, pc, argregs):
        if mn in PSEUDO:
            ops = _split_operands(rest, rcol)
            if mn == "mov":
                if len(ops) != 2:
                    raise self.src.error("mov needs rd, rs", ln, rcol)
                return encoding.encode("addi", {"rd": self.reg(ops[0][0], ln, ops[0][1], argregs),
                                                "rs1": self.reg(ops[1][0], ln, ops[1][1], argregs)}, pc)
            mn = "jmp"
        ins = T.BY_MNEMONIC.get(mn)
        if ins is None:
            raise self.src.error(f"unknown instruction {mn!r}", ln, col)
        ops = _split_operands(rest, rcol)
        if len(ops) != len(ins.fields):
            raise self.src.error(f"{mn} takes {len(ins.fields)} operands ({syntax(ins)}), got {len(ops)}", ln, rcol)
        vals = {}
        for f, (tok, tcol) in zip(ins.fields, ops):
            if f == T.MEM:
                m = re.fullmatch(r"(.*)\(\s*([^()]+?)\s*\)", tok)
                if not m:
                    raise self.src.error(f"expected a memory operand imm(rN), got {tok!r}", ln, tcol)
                vals["imm"] = self.operand(T.IMM24, m.group(1) or "0", ln, tcol, argregs)
                vals["rs1"] = self.reg(m.group(2), ln, tcol + m.start(2), argregs)
            else:
                vals[f.name] = self.operand(f, tok, ln, tcol, argregs)
        try:
            word = encoding.encode(mn, vals, pc)
            encoding.decode_one(word, pc)  # the same semantic checks load_module applies
        except ValueError as e:  # DecodeError is a ValueError
            raise self.src.error(str(e).replace(f" in instruction {pc}", ""), ln, col) from None
        return word


def _split_word(code):
    """'add r1, r2' -> ('add', 'r1, r2'): the mnemonic or directive, then the rest after one space or tab."""
    for i, ch in enumerate(code):
        if ch.isspace():
            return code[:i], code[i + 1:]
    return code, ""


def assemble(text: str, source: str = "<asm>") -> bytes:
    """Assemble text to a module image (bytes).

    Total: any failure, whatever the input, is an AssemblerError naming source, line and column (line 0,
    column 0 when `text` is not a str), and every image it returns loads with `load_module`. Limits
    (docs/assembly.md): the image at most MAX_IMAGE bytes, values at most MAX_VALUE_BITS bits, expressions
    nested at most MAX_NESTING deep."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        source = repr(source)
    if not isinstance(text, str):
        raise AssemblerError(f"assembly text must be a str, not {type(text).__name__}", 0, 0, source)
    return Assembler(text, source).assemble()


def syntax(ins) -> str:
    """The operand syntax of an instruction, e.g. `lw rd, imm(rs1)`."""
    parts = []
    for f in ins.fields:
        if f == T.MEM:
            parts.append("imm(rs1)")
        elif f.kind == "enum":
            parts.append(f.name if f.name != "flag" else "|".join(f.choices))
        elif f.kind == "target":
            parts.append("target")
        else:
            parts.append(f.name)
    return (ins.mnemonic + " " + ", ".join(parts)).strip()


def format_operand(f, vals):
    v = vals[f.name]
    if f.kind == "reg":
        return f"r{v}"
    if f.kind == "sem":
        return f"s{v}"
    if f.kind == "eng":
        return f"e{v}"
    if f.kind == "enum":
        return f.choices[v]
    if f.kind == "target":
        return f"L{v}"
    return str(v)


def format_instruction(ins, vals) -> str:
    ops = []
    for f in ins.fields:
        if f == T.MEM:
            ops.append(f"{vals['imm']}(r{vals['rs1']})")
        else:
            ops.append(format_operand(f, vals))
    return f"{ins.mnemonic} {', '.join(ops)}".strip()


def disassemble_word(word: int, pc: int = 0) -> str:
    ins, vals = encoding.decode_one(word, pc)
    return format_instruction(ins, vals)


def disassemble(image) -> str:
    """Disassemble a module image (validated first) to assembly text that assembles to the same image."""
    mod = load_module(image)
    targets = set()
    lines = []
    decoded = [encoding.decode_one(w, pc, len(mod.code)) for pc, w in enumerate(mod.code)]
    for ins, vals in decoded:
        for f in ins.encoding_fields():
            if f.kind == "target":
                targets.add(vals["imm"])
    starts = {k.entry: k for k in mod.kernels.values()}
    open_kernel = None
    lines.append(f"; vnpu module, ISA version {mod.isa_version}, {len(mod.code)} instructions, "
                 f"{len(mod.rodata)} bytes of rodata")
    for pc, (ins, vals) in enumerate(decoded):
        if open_kernel is not None and pc == open_kernel.end and pc not in starts:
            lines.append(".end")
            open_kernel = None
        if pc in starts:
            k = starts[pc]
            lines.append(f"\n.kernel {k.name}")
            for a in k.args:
                lines.append(f".arg {a.name}, {a.kind}, {a.dtype}")
            open_kernel = k
        if pc in targets:
            lines.append(f"L{pc}:")
        lines.append(f"    {format_instruction(ins, vals):<40s} ; {pc}")
    if open_kernel is not None and open_kernel.end != len(decoded):
        lines.append(".end")
    if mod.rodata:
        lines.append("\n.rodata")
        ro = np.frombuffer(mod.rodata, dtype=np.uint8)
        for i in range(0, len(ro), 16):
            lines.append("    .byte " + ", ".join(f"0x{b:02x}" for b in ro[i:i + 16]) + f"   ; {i}")
    return "\n".join(lines) + "\n"
