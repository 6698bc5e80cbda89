"""Assembler and disassembler for the vnpu ISA; the operand syntax comes from the table.

The text format is documented in docs/assembly.md. `assemble(text) -> bytes` gives a module image;
`disassemble(image) -> str` gives text that assembles to the same image.
"""
from __future__ import annotations

import ast
import re
import struct

import numpy as np

from vnpu.errors import AssemblerError

from . import encoding, table as T
from .module import KernelArg, KernelSymbol, build_image, load_module

_DATA_DIRECTIVES = {  # directive -> (struct code, size)
    ".byte": ("<B", 1), ".u8": ("<B", 1), ".i8": ("<b", 1), ".i16": ("<h", 2), ".u16": ("<H", 2),
    ".i32": ("<i", 4), ".u32": ("<I", 4), ".i64": ("<q", 8), ".u64": ("<Q", 8),
    ".f16": ("<e", 2), ".f32": ("<f", 4), ".f64": ("<d", 8),
}
_LABEL_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*:")
_REG_ALIASES = {"zero": 0}
PSEUDO = {"mov": "addi rd, rs, 0", "j": "jmp target"}


def _f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", float(x)))[0]


def _f16_bits(x):
    return struct.unpack("<H", struct.pack("<e", float(x)))[0]


_FUNCS = {"f32": _f32_bits, "f16": _f16_bits}
_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.FloorDiv: lambda a, b: a // b, ast.Div: lambda a, b: a // b if isinstance(a, int)
           and isinstance(b, int) else a / b, ast.Mod: lambda a, b: a % b,
           ast.LShift: lambda a, b: a << b, ast.RShift: lambda a, b: a >> b, ast.BitAnd: lambda a, b: a & b,
           ast.BitOr: lambda a, b: a | b, ast.BitXor: lambda a, b: a ^ b}
_UNOPS = {ast.USub: lambda a: -a, ast.UAdd: lambda a: a, ast.Invert: lambda a: ~a}


class _Source:
    def __init__(self, name):
        self.name = name

    def error(self, msg, line, col):
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

    # --- expressions -------------------------------------------------------------------------------
    def eval(self, expr, line, col, allow_float=False):
        try:
            tree = ast.parse(expr.strip(), mode="eval")
        except SyntaxError:
            raise self.src.error(f"cannot parse expression {expr.strip()!r}", line, col) from None

        def ev(n):
            if isinstance(n, ast.Expression):
                return ev(n.body)
            if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)) and not isinstance(n.value, bool):
                return n.value
            if isinstance(n, ast.Name):
                if n.id in self.consts:
                    return self.consts[n.id]
                if n.id in self.labels:
                    return self.labels[n.id][1]
                raise self.src.error(f"unknown name {n.id!r}", line, col)
            if isinstance(n, ast.BinOp) and type(n.op) in _BINOPS:
                return _BINOPS[type(n.op)](ev(n.left), ev(n.right))
            if isinstance(n, ast.UnaryOp) and type(n.op) in _UNOPS:
                return _UNOPS[type(n.op)](ev(n.operand))
            if (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in _FUNCS
                    and len(n.args) == 1 and not n.keywords):
                return _FUNCS[n.func.id](ev(n.args[0]))
            raise self.src.error(f"unsupported expression {expr.strip()!r}", line, col)

        try:
            v = ev(tree)
        except ZeroDivisionError:
            raise self.src.error(f"division by zero in {expr.strip()!r}", line, col) from None
        except (OverflowError, TypeError, ValueError) as e:
            raise self.src.error(f"bad expression {expr.strip()!r}: {e}", line, col) from None
        if isinstance(v, float) and not allow_float:
            if not v.is_integer():
                raise self.src.error(f"expected an integer, got {v}", line, col)
            v = int(v)
        return v

    # --- operands ----------------------------------------------------------------------------------
    def reg(self, tok, line, col, argregs):
        t = tok.strip()
        if t in _REG_ALIASES:
            return _REG_ALIASES[t]
        if t in argregs:
            return argregs[t]
        m = re.fullmatch(r"r(\d+)", t)
        if not m or int(m.group(1)) >= T.NUM_REGS:
            raise self.src.error(f"expected a register r0..r{T.NUM_REGS - 1}, got {t!r}", line, col)
        return int(m.group(1))

    def prefixed(self, tok, prefix, limit, what, line, col):
        m = re.fullmatch(prefix + r"(\d+)", tok.strip())
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
        v = self.eval(tok, line, col)
        if f.kind == "target":
            return v
        lo, hi = f.lo_hi()
        if f.kind == "imm" and f.width == 32 and hi < v <= 0xFFFFFFFF:
            v -= 1 << 32  # allow unsigned spelling of 32-bit patterns, e.g. li r1, 0xffffffff
        if not lo <= v <= hi:
            raise self.src.error(f"immediate {v} outside [{lo}, {hi}]", line, col)
        return v

    # --- the two passes ----------------------------------------------------------------------------
    def _lines(self):
        for ln, raw in enumerate(self.text.splitlines(), 1):
            code = re.split(r"[;#]", raw, maxsplit=1)[0].rstrip()
            col = 1
            m = _LABEL_RE.match(code)
            labels = []
            while m:
                labels.append((m.group(1), col + m.start(1)))
                col += m.end()
                code_rest = code[m.end():]
                code = code_rest
                m = _LABEL_RE.match(code)
            lead = len(code) - len(code.lstrip())
            yield ln, labels, code.strip(), col + lead

    def _data_size(self, word, rest, ln, col):
        if word in _DATA_DIRECTIVES:
            return len(_split_operands(rest, col)) * _DATA_DIRECTIVES[word][1]
        if word == ".zero":
            n = self.eval(rest, ln, col)
            if n < 0:
                raise self.src.error(".zero needs a non-negative size", ln, col)
            return n
        raise AssertionError(word)

    def assemble(self) -> bytes:
        items = list(self._lines())
        # Pass 1: constants and label addresses.
        section, pc, ro = "text", 0, 0
        for ln, labels, code, col in items:
            for name, lcol in labels:
                if name in self.labels or name in self.consts:
                    raise self.src.error(f"label {name!r} defined twice", ln, lcol)
                self.labels[name] = (section, pc if section == "text" else ro)
            if not code:
                continue
            word, _, rest = code.partition(" ")
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
                if a <= 0 or a & (a - 1):
                    raise self.src.error(f".align needs a power of two, got {a}", ln, rcol)
                ro = (ro + a - 1) // a * a
            elif word in _DATA_DIRECTIVES or word == ".zero":
                if section != "rodata":
                    raise self.src.error(f"data directive {word} outside .rodata", ln, col)
                ro += self._data_size(word, rest, ln, rcol)
            elif word.startswith("."):
                continue
            else:
                if section != "text":
                    raise self.src.error(f"instruction {word!r} in .rodata", ln, col)
                pc += 1
        # Pass 2: encode.
        section, words, rodata = "text", [], bytearray()
        kernels, cur = [], None
        for ln, labels, code, col in items:
            if not code:
                continue
            word, _, rest = code.partition(" ")
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
                if not an.isidentifier() or not an.isascii() or an in {a.name for a in cur["args"]}:
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
            elif word == ".zero":
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
        syms = []
        for k in kernels:
            if k["end"] <= k["entry"]:
                raise self.src.error(f"kernel {k['name']!r} has no instructions", k["line"], 1)
            syms.append(KernelSymbol(k["name"], k["entry"], k["end"], tuple(k["args"])))
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


def assemble(text: str, source: str = "<asm>") -> bytes:
    """Assemble text to a module image (bytes). Errors are AssemblerError naming line and column."""
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
