"""A Python kernel builder: kernels read like their algorithm, and come out as assembly text that the one
assembler turns into a module image (so the builder cannot emit anything the ISA table does not allow).

    kb = KernelBuilder()
    with kb.kernel("scale", x=("buffer", "f32"), n=("scalar", "i32")) as k:
        pe, i = k.reg("pe"), k.reg("i")
        k.csrr(pe, "pe_id")
        with k.for_range(i, 0, k.args.n, step=256):
            ...
    image = kb.build()

Every ISA instruction is a method (`k.add(rd, rs1, rs2)`, `k.dma(e, dst, src, nbytes, s)`; dots become
underscores: `k.mm_mul(...)`, `k.dma_dim(...)`). Operands: registers (Reg), ints, names of enum choices
('f32', 'pe_id', 'acc'), semaphores `k.sem(n)` or 's0', engines 'e0', labels (Label).
Helpers: registers allocated and freed by name, labels, counted loops, `for_range`, `if_`, DMA of 1-D to
3-D blocks (`k.copy`), constants loaded into registers (`k.const`), and a double-buffer index.
"""
from __future__ import annotations

import contextlib
import itertools
import struct

import numpy as np

from vnpu.errors import InvalidArgument
from vnpu.isa import table as T

FIRST_TEMP = T.MAX_KERNEL_ARGS + 1   # r16..r31 are the builder's; r1..r15 hold arguments


class Reg:
    def __init__(self, n, name=None):
        self.n, self.name = n, name

    def __str__(self):
        return f"r{self.n}"

    __repr__ = __str__


class Label:
    def __init__(self, name):
        self.name = name

    def __str__(self):
        return self.name


class Args:
    def __init__(self, regs):
        self.__dict__.update(regs)

    def __getitem__(self, name):
        return self.__dict__[name]


def f32_bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", float(x)))[0]


class KernelWriter:
    """Emits one kernel's instructions. Created by KernelBuilder.kernel()."""

    def __init__(self, builder, name, args):
        self.builder = builder
        self.name = name
        self.lines = []
        self.free = list(range(T.NUM_REGS - 1, len(args), -1))   # temporaries, handed out from r31 down
        self.free = [n for n in self.free if n >= max(len(args) + 1, 1)]
        regs = {}
        for i, (arg, (kind, dtype)) in enumerate(args.items()):
            if kind not in T.ARG_KINDS or dtype not in T.ARG_DTYPES:
                raise InvalidArgument(f"kernel {name}: argument {arg} must be (buffer|scalar, dtype), got "
                                      f"{(kind, dtype)}")
            regs[arg] = Reg(i + 1, arg)
            self.lines.append(f".arg {arg}, {kind}, {dtype}")
        self.args = Args(regs)
        self.zero = Reg(0, "zero")

    # --- registers and labels ---------------------------------------------------------------------
    def reg(self, name=None) -> Reg:
        if not self.free:
            raise InvalidArgument(f"kernel {self.name}: out of registers")
        return Reg(self.free.pop(), name)

    def regs(self, *names):
        return [self.reg(n) for n in names]

    def release(self, *regs):
        for r in regs:
            if r.n in self.free or r.n <= len(self.args.__dict__):
                raise InvalidArgument(f"kernel {self.name}: register {r} released twice or not a temporary")
            self.free.append(r.n)

    def label(self, hint="L") -> Label:
        return Label(f"{self.name}_{hint}_{next(self.builder.counter)}")

    def place(self, label: Label):
        self.lines.append(f"{label}:")

    def comment(self, text):
        self.lines.append(f"    ; {text}")

    # --- instructions: every mnemonic of the table --------------------------------------------------
    def emit(self, mnemonic, *ops):
        ins = T.BY_MNEMONIC.get(mnemonic) if isinstance(mnemonic, str) else None
        if ins is None:
            raise InvalidArgument(f"kernel {self.name}: no instruction {mnemonic!r} (docs/isa.md lists them)")
        text = []
        fields = list(ins.fields)
        if len(ops) != len(fields):
            raise InvalidArgument(f"{mnemonic} takes {len(fields)} operands, got {len(ops)}")
        for f, op in zip(fields, ops):
            if f == T.MEM:
                base, off = op if isinstance(op, tuple) else (op, 0)
                text.append(f"{off}({base})")
            elif f.kind == "sem" and isinstance(op, int):
                text.append(f"s{op}")
            elif f.kind == "eng" and isinstance(op, int):
                text.append(f"e{op}")
            else:
                text.append(str(op))
        self.lines.append(f"    {mnemonic} {', '.join(text)}".rstrip())

    def mov(self, rd, rs):
        self.emit("addi", rd, rs, 0)

    def __getattr__(self, attr):
        attr = attr.rstrip("_")          # k.and_(...), k.or_(...): Python keywords
        mnemonic = attr.replace("_", ".") if attr.replace("_", ".") in T.BY_MNEMONIC else attr
        if mnemonic not in T.BY_MNEMONIC:
            raise AttributeError(attr)
        return lambda *ops: self.emit(mnemonic, *ops)

    # --- helpers ---------------------------------------------------------------------------------------
    def const(self, reg: Reg, value: int):
        """reg = any 64-bit integer (li, plus lih when it does not fit 32 bits)."""
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or \
                not -(1 << 63) <= int(value) < (1 << 64):
            raise InvalidArgument(f"kernel {self.name}: const {value!r} is not a 64-bit integer")
        value = int(value)
        lo = value & 0xFFFFFFFF
        self.lines.append(f"    li {reg}, {lo - (1 << 32) if lo >> 31 else lo}")
        if not -(1 << 31) <= value < (1 << 31):
            hi = (value >> 32) & 0xFFFFFFFF
            self.lines.append(f"    lih {reg}, {hi - (1 << 32) if hi >> 31 else hi}")
        return reg

    def const_f32(self, reg: Reg, value: float):
        return self.const(reg, f32_bits(value))

    def quant_param(self, reg: Reg, scale: float, zero_point: int = 0):
        """The vcvt parameter: fp32 scale in the low half, int32 zero point in the high half."""
        return self.const(reg, (f32_bits(scale) | ((int(zero_point) & 0xFFFFFFFF) << 32)) - (
            1 << 64 if zero_point < 0 else 0))

    @contextlib.contextmanager
    def for_range(self, i: Reg, start, stop, step=1):
        """for (i = start; i < stop; i += step): start/stop/step are registers or ints."""
        top, end = self.label("for"), self.label("endfor")
        tmp = None
        if isinstance(start, Reg):
            self.mov(i, start)
        else:
            self.const(i, start)
        if not isinstance(stop, Reg):
            tmp = self.const(self.reg("stop"), stop)
            stop = tmp
        self.place(top)
        self.bge(i, stop, end)
        yield end
        if isinstance(step, Reg):
            self.add(i, i, step)
        elif -(1 << 23) <= step < (1 << 23):
            self.addi(i, i, step)
        else:
            s = self.const(self.reg("step"), step)
            self.add(i, i, s)
            self.release(s)
        self.jmp(top)
        self.place(end)
        if tmp is not None:
            self.release(tmp)

    @contextlib.contextmanager
    def if_(self, cond, a: Reg, b: Reg):
        """Run the body when `a cond b` (cond: eq, ne, lt, ge, ltu, geu)."""
        skip = self.label("endif")
        inverse = {"eq": "bne", "ne": "beq", "lt": "bge", "ge": "blt", "ltu": "bgeu", "geu": "bltu"}[cond]
        self.emit(inverse, a, b, skip)
        yield
        self.place(skip)

    def copy(self, engine, dst: Reg, src: Reg, row_bytes, sem, rows=None, src_stride=None, dst_stride=None,
             planes=None, src_plane=None, dst_plane=None):
        """DMA a 1-D, 2-D (rows) or 3-D (planes of rows) block; sizes and strides are registers or ints."""
        tmps = []

        def r(v):
            if isinstance(v, Reg):
                return v
            t = self.const(self.reg("dmaarg"), v)
            tmps.append(t)
            return t
        if rows is not None:
            self.dma_dim(engine, "d1", r(rows), r(src_stride), r(dst_stride))
        if planes is not None:
            self.dma_dim(engine, "d2", r(planes), r(src_plane), r(dst_plane))
        self.dma(engine, dst, src, r(row_bytes), sem)
        for t in tmps:
            self.release(t)


def fits24(c):
    """Does c fit the 24-bit immediate of addi / muli?"""
    return -(1 << 23) <= c < (1 << 23)


def addc(k, rd, rs, c):
    """rd = rs + c for any integer c (addi when it fits, else a constant in a scratch register)."""
    if fits24(c):
        k.addi(rd, rs, int(c))
    else:
        t = k.const(k.reg("c"), c)
        k.add(rd, rs, t)
        k.release(t)


def mulc(k, rd, rs, c):
    """rd = rs * c for any integer c."""
    if fits24(c):
        k.muli(rd, rs, int(c))
    else:
        t = k.const(k.reg("c"), c)
        k.mul(rd, rs, t)
        k.release(t)


class KernelBuilder:
    """Collects kernels (and read-only data) into one module."""

    def __init__(self):
        self.kernels = []
        self.counter = itertools.count()
        self.rodata = []

    @contextlib.contextmanager
    def kernel(self, name, **args):
        w = KernelWriter(self, name, args)
        yield w
        if not w.lines or not w.lines[-1].strip().startswith("halt"):
            w.lines.append("    halt")
        self.kernels.append(w)

    def text(self) -> str:
        out = []
        for k in self.kernels:
            out.append(f".kernel {k.name}")
            out.extend(k.lines)
            out.append("")
        return "\n".join(out)

    def build(self) -> bytes:
        from vnpu.isa.asm import assemble
        return assemble(self.text(), source="kernel builder")
