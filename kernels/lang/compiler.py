"""The kernel language's compiler: a kernel function, traced once with symbolic values, becomes vnpu assembly.

Tracing (kernels/lang/frontend.py rewrites `if` and `for ... in range` so they reach this module) records a
linear list of instructions whose operands are virtual registers (VReg) and local-memory buffers (Buffer).
After the trace, three passes finish the job:
- registers: live intervals over the linear code, stretched over every loop a value is used in but defined
  before, then linear-scan allocation onto r16..r31 (r1..r15 hold the arguments);
- local memory: the same intervals for tile buffers (a buffer lives until the wait that retires the last
  asynchronous operation touching it), first-fit allocation, so tiles of different phases share bytes;
- text: one line per instruction, the kernel's source line as a comment wherever it changes.

Synchronization is the compiler's, not the author's. Each asynchronous unit queue (vector unit, matrix unit,
each DMA engine, the embedding unit) signals its own semaphore, and operations of one queue complete in
issue order. When an operation (or a scalar access) touches a buffer or tensor that an operation still in
flight on *another* queue writes (or reads, when this one writes), the compiler emits `wait sem, k` with k
counting that queue's operations up to the one needed. Dynamic control flow (a loop body, a branch) starts
and ends with every queue drained, so counts are known statically. A pipelined loop carries one thing across
its back edge: the loads it prefetched for the next iteration, on their own semaphores.

Scalars are affine expressions over registers until an instruction needs them in one (addresses computed as
`base + i * stride + c` cost nothing until used); values already in registers are reused where they dominate.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from vnpu.isa import table as T

from .errors import KernelError, source_line

ALIGN = 64
SEM_LIMIT = 192               # pending signals per semaphore before the compiler drains half (the card: 256)
DTYPES = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16", np.dtype(np.int8): "i8",
          np.dtype(np.int32): "i32", np.dtype(np.int64): "i64"}      # i64: tensors only (embedding indices)
NUMPY = {v: k for k, v in DTYPES.items()}
ITEMSIZE = {"f32": 4, "f16": 2, "i8": 1, "i32": 4, "i64": 8}
BRANCH_INVERSE = {"eq": "bne", "ne": "beq", "lt": "bge", "ge": "blt"}


class RegisterPressure(KernelError):
    """More values live at once than registers (the compiler retries once without reusing values)."""


class PipelineHazard(KernelError):
    """A pipelined loop reads a tensor it also writes: the compiler retries without moving those loads and
    stores across iterations (`tensors`)."""

    def __init__(self, tensors):
        super().__init__(f"a pipelined loop reads and writes {', '.join(sorted(tensors))}", line=None)
        self.tensors = set(tensors)


class LocalMemoryFull(KernelError):
    """Tiles live at once exceed local memory (the compiler retries waiting for each store at once, so the
    tile it reads is free sooner)."""


def fits24(c):
    return -(1 << 23) <= c < (1 << 23)


def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", float(x)))[0]


# --- what instructions are made of ----------------------------------------------------------------------
class VReg:
    __slots__ = ("id", "name", "phys")

    def __init__(self, id_, name, phys=None):
        self.id, self.name, self.phys = id_, name, phys

    def __str__(self):
        return f"r{self.phys}" if self.phys is not None else f"%{self.name}{self.id}"


ZERO = VReg(-1, "zero", 0)


class Buffer:
    """A block of a PE's local memory (a tile, a constant, a descriptor); its address is assigned after the trace."""
    __slots__ = ("id", "nbytes", "base", "where", "pinned")

    def __init__(self, id_, nbytes, where, pinned=False):
        self.id, self.nbytes, self.where, self.pinned, self.base = id_, int(nbytes), where, pinned, None


@dataclass(frozen=True)
class LocalAddr:
    """An immediate: the local address of byte `offset` of a buffer (known after allocation)."""
    buf: Buffer
    offset: int = 0

    def __str__(self):
        return str(self.buf.base + self.offset)


class Label:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __str__(self):
        return self.name


@dataclass
class Insn:
    mnemonic: str
    ops: tuple
    defs: tuple = ()
    line: tuple = None            # (file, line, text) of the kernel source that made it
    keeps: tuple = ()             # buffers this instruction keeps alive (a wait retires operations on them)


@dataclass
class Place:
    label: Label


@dataclass
class Splice:
    """Instructions decided later, at this point of the code (a pipelined loop's deferred stores)."""
    code: list = field(default_factory=list)


# --- symbolic scalars ---------------------------------------------------------------------------------
class Scalar:
    """An int64 value on the card: sum(coef * register) + const, affine until an instruction needs a register."""
    __slots__ = ("cc", "terms", "const")

    def __init__(self, cc, terms=None, const=0):
        self.cc, self.terms, self.const = cc, dict(terms or {}), int(const)
        self.terms = {r: c for r, c in self.terms.items() if c}

    @property
    def static(self):
        return not self.terms

    def key(self):
        return (tuple(sorted((r.id, c) for r, c in self.terms.items())), self.const)

    def _lift(self, o):
        if isinstance(o, Scalar):
            return o
        if isinstance(o, (int, np.integer)) and not isinstance(o, bool):
            return Scalar(self.cc, None, int(o))
        raise KernelError(f"cannot combine a card integer with {type(o).__name__} {o!r}")

    def __add__(self, o):
        o = self._lift(o)
        t = dict(self.terms)
        for r, c in o.terms.items():
            t[r] = t.get(r, 0) + c
        return Scalar(self.cc, t, self.const + o.const)

    __radd__ = __add__

    def __neg__(self):
        return Scalar(self.cc, {r: -c for r, c in self.terms.items()}, -self.const)

    def __sub__(self, o):
        return self + (-self._lift(o))

    def __rsub__(self, o):
        return self._lift(o) - self

    def __mul__(self, o):
        o = self._lift(o)
        if o.static:
            return Scalar(self.cc, {r: c * o.const for r, c in self.terms.items()}, self.const * o.const)
        if self.static:
            return o * self
        return self.cc.alu("mul", self, o)

    __rmul__ = __mul__

    def __floordiv__(self, o):
        o = self._lift(o)
        if o.static and o.const == 1:
            return self
        if self.static and o.static:
            return Scalar(self.cc, None, self.const // o.const)
        if o.static and o.const > 0 and o.const & (o.const - 1) == 0:
            return self.cc.alui("srai", self, o.const.bit_length() - 1)
        return self.cc.floor_divmod(self, o)[0]

    def __mod__(self, o):
        o = self._lift(o)
        if o.static and o.const == 1:
            return Scalar(self.cc, None, 0)
        if self.static and o.static:
            return Scalar(self.cc, None, self.const % o.const)
        if o.static and o.const > 0 and o.const & (o.const - 1) == 0:
            return self.cc.alui("andi", self, o.const - 1)
        return self.cc.floor_divmod(self, o)[1]

    def __lt__(self, o):
        return Cond("lt", self, self._lift(o))

    def __ge__(self, o):
        return Cond("ge", self, self._lift(o))

    def __gt__(self, o):
        return Cond("lt", self._lift(o), self)

    def __le__(self, o):
        return Cond("ge", self._lift(o), self)

    def __eq__(self, o):
        return Cond("eq", self, self._lift(o))

    def __ne__(self, o):
        return Cond("ne", self, self._lift(o))

    __hash__ = object.__hash__

    def __bool__(self):
        raise KernelError("a card integer has no Python truth value while compiling; compare it in an `if` "
                          "of the kernel (the compiler turns that into a branch)")

    def __index__(self):
        raise KernelError("a card integer cannot be used where Python needs a number known at compile time "
                          "(a shape, a static_range bound); use a tensor's shape or a constexpr argument")

    def shifted(self, reg, delta):
        """This value with register `reg` replaced by reg + delta (the next iteration's value of a loop variable)."""
        return Scalar(self.cc, self.terms, self.const + self.terms.get(reg, 0) * delta)

    def __repr__(self):
        if self.static:
            return f"Scalar({self.const})"
        return "Scalar(" + " + ".join(f"{c}*{r}" for r, c in self.terms.items()) + f" + {self.const})"


@dataclass
class Cond:
    op: str
    a: Scalar
    b: Scalar

    def __invert__(self):
        return Cond({"lt": "ge", "ge": "lt", "eq": "ne", "ne": "eq"}[self.op], self.a, self.b)

    def __bool__(self):
        raise KernelError("a comparison of card integers can only be the test of an `if` in the kernel body "
                          "(`and`, `or`, `not`, ternaries and `while` need Python booleans)")


# --- the asynchronous operations in flight, per queue ---------------------------------------------------------
@dataclass
class AsyncOp:
    hw: str                        # the hardware queue: "vector", "matrix", "e0", "e1", "emb"
    reads: frozenset               # buffer ids and tensor names it reads
    writes: frozenset
    bufs: tuple = ()               # the local buffers it touches (kept alive until retired)


@dataclass
class Loop:
    top: Label
    back: Insn = None
    carried: set = field(default_factory=set)    # buffer ids in flight across the back edge: live all loop long


@dataclass
class Sync:
    """Per logical queue (a semaphore each): operations issued and not yet waited for, oldest first."""
    pending: dict = field(default_factory=dict)    # logical queue -> [AsyncOp]
    sems: dict = field(default_factory=dict)       # logical queue -> semaphore number


class Compiler:
    """The state of one kernel's trace: code, registers, buffers, queues. `ops` (kernels/lang/api.py) calls it."""

    def __init__(self, name, config, filename, reuse=True, eager=False, in_order=()):
        self.name, self.config, self.filename, self.reuse, self.eager = name, config, filename, reuse, eager
        self.in_order = set(in_order)   # tensors a pipelined loop reads and writes: not prefetched nor deferred
        self.code, self.prologue = [], []
        self.nregs = 0
        self.buffers, self.loops = [], []
        self.sync = Sync()
        self.cache = [{}]              # scopes of materialized values: key -> VReg
        self.consts = {}               # f32 bits -> (Buffer)
        self.labels = 0
        self.args = []                 # (name, kind, dtype, VReg)
        self.outputs = []              # tensors the kernel creates (vnpu.output): arguments the host allocates
        self.written = set()           # names of tensors the kernel writes
        self.bounds = {}               # register holding min(a, b) -> (a, b)
        self.derive = {}               # register -> (mnemonic, a, b, b is an immediate): how it was computed
        self.logs = []                 # per open loop body: ([(queue, AsyncOp)], {queues waited for})
        self.nonneg_regs = set()       # registers known to hold values >= 0 (for cheaper // and %)
        self.engines = int(config.dma.engines_per_pe)
        self.local_bytes = int(config.local_memory.bytes)
        self.weights = None            # the tile the matrix unit holds (trace-time knowledge, reset at joins)
        self.capture_depth = 0
        self.pipeline = None           # the pipelined loop being traced (prefetch lists)
        self.control_depth = 0

    # --- names -----------------------------------------------------------------------------------------
    def vreg(self, name="t"):
        self.nregs += 1
        return VReg(self.nregs, name)

    def label(self, hint):
        self.labels += 1
        return Label(f"{self.name}_{hint}{self.labels}")

    def buffer(self, nbytes, pinned=False):
        b = Buffer(len(self.buffers), max(int(nbytes), 1), source_line(self.filename), pinned)
        self.buffers.append(b)
        if self.pipeline is not None and not pinned:
            self.pipeline.half_bufs[self.pipeline.half].add(b.id)
        return b

    def arg_reg(self, name, kind, dtype, line=None):
        """The register of the next kernel argument (r1, r2, ...)."""
        n = len(self.args) + 1
        if n > T.MAX_KERNEL_ARGS:
            raise KernelError(f"kernel {self.name} has more than {T.MAX_KERNEL_ARGS} arguments (tensors, scalars "
                              f"and vnpu.output tensors together)", line=line)
        reg = VReg(-1 - n, name, phys=n)
        self.args.append((name, kind, dtype, reg))
        return reg

    def _cached(self, key):
        """A register already holding this value where it dominates (None when reuse is off: a kernel whose
        reused values would keep too many registers live compiles again without it)."""
        if not self.reuse:
            return None
        for scope in reversed(self.cache):
            if key in scope:
                return scope[key]
        return None

    def scalar(self, v):
        if isinstance(v, Scalar):
            return v
        if v is None:
            raise KernelError("a length not known while compiling (the first dimension of an anysize tensor): pass "
                              "it to the kernel as an int argument")
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise KernelError(f"expected an integer (a card value or a Python int), got {type(v).__name__} {v!r}")
        return Scalar(self, None, int(v))

    # --- emitting --------------------------------------------------------------------------------------
    def emit(self, mnemonic, *ops, defs=(), keeps=()):
        insn = Insn(mnemonic, ops, tuple(defs), source_line(self.filename), tuple(keeps))
        self.code.append(insn)
        return insn

    def place(self, label):
        self.code.append(Place(label))

    def reg(self, v, name="t") -> VReg:
        """A register holding the value v (Scalar or int), reusing one that already does where it dominates."""
        v = self.scalar(v)
        if len(v.terms) == 1 and v.const == 0 and next(iter(v.terms.values())) == 1:
            return next(iter(v.terms))
        if v.static and v.const == 0:
            return ZERO
        key = v.key()
        hit = self._cached(key)
        if hit is not None:
            return hit
        r = self.vreg(name)
        items = sorted(v.terms.items(), key=lambda rc: rc[0].id)
        if not items:
            self._li(r, v.const)
        else:
            if len(items) == 2 and sorted(c for _, c in items) == [-1, 1]:
                plus, minus = (items[0][0], items[1][0]) if items[0][1] == 1 else (items[1][0], items[0][0])
                terms = [r]
                self.emit("sub", r, plus, minus, defs=(r,))
            elif len(items) == 1 and items[0][1] != 1:
                terms = [self._scaled(items[0][0], items[0][1], r)]
            else:
                terms = [self._scaled(src, c, r if n == 0 and len(items) > 1 else None)
                         for n, (src, c) in enumerate(items)]
            if len(terms) == 1 and terms[0] is r:
                if v.const:
                    self.emit("addi", r, r, v.const, defs=(r,)) if fits24(v.const) else \
                        self.emit("add", r, r, self.reg(v.const), defs=(r,))
            elif len(terms) == 1:
                if fits24(v.const):
                    self.emit("addi", r, terms[0], v.const, defs=(r,))
                else:
                    self._li(r, v.const)
                    self.emit("add", r, r, terms[0], defs=(r,))
            else:
                self.emit("add", r, terms[0], terms[1], defs=(r,))
                for t in terms[2:]:
                    self.emit("add", r, r, t, defs=(r,))
                if v.const:
                    if fits24(v.const):
                        self.emit("addi", r, r, v.const, defs=(r,))
                    else:
                        k = self.vreg("k")
                        self._li(k, v.const)
                        self.emit("add", r, r, k, defs=(r,))
        self.cache[-1][key] = r
        return r

    def _scaled(self, src, c, into=None):
        """A register holding src * c (src itself when c is 1)."""
        if c == 1:
            return src
        t = into if into is not None else self.vreg("m")
        if c > 0 and c & (c - 1) == 0:
            self.emit("shli", t, src, c.bit_length() - 1, defs=(t,))
        elif fits24(c):
            self.emit("muli", t, src, c, defs=(t,))
        else:
            k = self.vreg("k")
            self._li(k, c)
            self.emit("mul", t, src, k, defs=(t,))
        return t

    def _li(self, r, value):
        value = int(value)
        lo = value & 0xFFFFFFFF
        self.emit("li", r, lo - (1 << 32) if lo >> 31 else lo, defs=(r,))
        if not -(1 << 31) <= value < (1 << 31):
            hi = (value >> 32) & 0xFFFFFFFF
            self.emit("lih", r, hi - (1 << 32) if hi >> 31 else hi, defs=(r,))

    def local_reg(self, buf, offset):
        """A register holding the local address of byte `offset` (Scalar or int) of buf."""
        offset = self.scalar(offset)
        key = ("local", buf.id, offset.key())
        hit = self._cached(key)
        if hit is not None:
            return hit
        r = self.vreg("a")
        if offset.static:
            self.emit("li", r, LocalAddr(buf, offset.const), defs=(r,))
        else:
            self.emit("addi", r, self.reg(offset), LocalAddr(buf, 0), defs=(r,))
        self.cache[-1][key] = r
        return r

    def alu(self, mnemonic, a, b):
        """A new value: a (mnemonic) b in a register; the same expression again reuses it."""
        a, b = self.scalar(a), self.scalar(b)
        key = ("alu", mnemonic, a.key(), b.key())
        hit = self._cached(key)
        if hit is not None:
            return Scalar(self, {hit: 1})
        r = self.vreg("v")
        self.emit(mnemonic, r, self.reg(a), self.reg(b), defs=(r,))
        self.derive[r] = (mnemonic, a, b, False)
        if (mnemonic in ("div", "rem", "min", "add", "mul") and self.nonneg(a) and self.nonneg(b)) or \
                (mnemonic == "max" and (self.nonneg(a) or self.nonneg(b))) or mnemonic in ("slt", "sltu"):
            self.nonneg_regs.add(r.id)
        if mnemonic == "min":
            self.bounds[r] = (a, b)   # x[i : min(i + T, hi)] has T elements at most
        self.cache[-1][key] = r
        return Scalar(self, {r: 1}, 0)

    def alui(self, mnemonic, a, imm):
        a = self.scalar(a)
        key = ("alui", mnemonic, a.key(), int(imm))
        hit = self._cached(key)
        if hit is not None:
            return Scalar(self, {hit: 1})
        r = self.vreg("v")
        self.emit(mnemonic, r, self.reg(a), int(imm), defs=(r,))
        self.derive[r] = (mnemonic, a, int(imm), True)
        if self.nonneg(a) and (mnemonic == "srai" or (mnemonic == "andi" and int(imm) >= 0)):
            self.nonneg_regs.add(r.id)
        self.cache[-1][key] = r
        return Scalar(self, {r: 1}, 0)

    def nonneg(self, v):
        """Is v known to be >= 0 (non-negative registers with non-negative coefficients, constant >= 0)?"""
        v = self.scalar(v)
        return v.const >= 0 and all(c > 0 and r.id in self.nonneg_regs for r, c in v.terms.items())

    def floor_divmod(self, a, b):
        """(a // b, a % b) with Python's signs: div and rem round toward zero, so when the remainder is not 0 and
        its sign differs from b's, the quotient moves down by one and b joins the remainder."""
        if self.nonneg(a) and self.nonneg(b):      # both >= 0: truncation is floor
            return self.alu("div", a, b), self.alu("rem", a, b)
        q, r = self.alu("div", a, b), self.alu("rem", a, b)
        adj = self.alu("and", self.alu("slt", self.alu("xor", r, b), 0), self.alu("sltu", 0, r))
        return self.alu("sub", q, adj), self.alu("add", r, self.alu("mul", adj, b))

    def shiftable(self, v, var, first_reg):
        """Can v be computed before the loop body that made it (registers from outside, the loop variable,
        or values derived from those)?"""
        v = self.scalar(v)
        for r in v.terms:
            if r is var or r.id < first_reg:
                continue
            d = self.derive.get(r)
            if d is None or not self.shiftable(d[1], var, first_reg) or \
                    (not d[3] and not self.shiftable(d[2], var, first_reg)):
                return False
        return True

    def shift_value(self, v, var, delta, first_reg):
        """v with the loop variable advanced by delta, recomputing what the body derived from it."""
        v = self.scalar(v)
        out = Scalar(self, None, v.const)
        for r, c in v.terms.items():
            if r is var:
                out = out + Scalar(self, {r: c}, c * delta)
            elif r.id < first_reg:
                out = out + Scalar(self, {r: c})
            else:
                mn, a, b, imm = self.derive[r]
                a2 = self.shift_value(a, var, delta, first_reg)
                val = self.alui(mn, a2, b) if imm else self.alu(mn, a2, self.shift_value(b, var, delta, first_reg))
                out = out + val * c
        return out

    def csr(self, name):
        key = ("csr", name)
        if key not in self.cache[0]:
            r = self.vreg(name)
            self.nonneg_regs.add(r.id)          # pe_id, pe_count, cycle, ...
            self.prologue.append(Insn("csrr", (r, name), (r,), source_line(self.filename)))
            self.cache[0][key] = r
        return Scalar(self, {self.cache[0][key]: 1}, 0)

    def constant(self, value, dtype) -> Buffer:
        """A buffer holding one element of dtype, stored once at the kernel's start."""
        if dtype in ("f32", "f16"):
            bits = int(np.array([value], dtype=NUMPY[dtype]).view(np.uint32 if dtype == "f32" else np.uint16)[0])
        else:
            info = np.iinfo(NUMPY[dtype])
            if not info.min <= value <= info.max or value != int(value):
                raise KernelError(f"constant {value!r} is not a {dtype} value")
            bits = int(value) & ((1 << (8 * ITEMSIZE[dtype])) - 1)
        key = (dtype, bits)
        if key not in self.consts:
            buf = self.buffer(ITEMSIZE[dtype], pinned=True)
            r = self.vreg("c")
            lo = bits - (1 << 32) if bits >> 31 else bits
            store = {1: "sb", 2: "sh", 4: "sw"}[ITEMSIZE[dtype]]
            self.prologue += [Insn("li", (r, lo), (r,)), Insn(store, (r, (ZERO, LocalAddr(buf))), ())]
            self.consts[key] = buf
        return self.consts[key]

    def clamp(self, v, hi):
        """min(max(v, 0), hi) in a register (the valid part of a block that may run past a tensor's end)."""
        key = ("clamp", self.scalar(v).key(), self.scalar(hi).key())
        hit = self._cached(key)
        if hit is not None:
            return Scalar(self, {hit: 1})
        r = self.alu("min", self.alu("max", v, 0), hi)
        self.cache[-1][key] = next(iter(r.terms))
        return r

    def f32_arg(self, reg) -> Buffer:
        buf = self.buffer(4, pinned=True)
        self.prologue.append(Insn("sw", (reg, (ZERO, LocalAddr(buf))), ()))
        return buf

    # --- synchronization ---------------------------------------------------------------------------------
    def q(self, base):
        """The logical queue of `base` here: inside a pipelined loop each half has its own semaphores."""
        return f"{base}.{self.pipeline.half}" if self.pipeline is not None else base

    def sem(self, queue):
        if queue.endswith(".0"):           # half 0 of a pipelined loop shares the queue's own semaphore
            return self.sem(queue[:-2])
        if queue not in self.sync.sems:
            n = len(self.sync.sems)
            if n >= int(self.config.semaphores):
                raise KernelError(f"kernel {self.name} needs more than the card's {n} semaphores")
            self.sync.sems[queue] = n
        return self.sync.sems[queue]

    def _wait(self, queue, count):
        if self.pipeline is not None:
            self.pipeline.before_wait()
        ops = self.sync.pending[queue][:count]
        del self.sync.pending[queue][:count]
        if self.logs:
            self.logs[-1][1].add(queue)
        pl = self.pipeline
        if pl is not None and queue == f"st{pl.half}":     # waited here: not carried to the next round
            pl.stores[pl.half] = [op for op in pl.stores[pl.half] if all(op is not o for o in ops)]
        keeps = tuple(b for op in ops for b in op.bufs)
        self.emit("wait", f"s{self.sem(queue)}", count, keeps=keeps)

    def depend(self, hw, reads, writes):
        """Before an operation on hardware queue `hw` ("scalar" for the PE itself) that reads / writes these
        buffer ids and tensor names: wait for what another queue still does to them."""
        reads, writes = frozenset(reads), frozenset(writes)
        if hw == "scalar" and self.logs:
            self.logs[-1][0].append(("scalar", AsyncOp("scalar", reads, writes)))
        if hw == "scalar" and self.pipeline is not None:
            self.pipeline.written |= {b for b in writes if not isinstance(b, str)}
        for queue, ops in list(self.sync.pending.items()):
            last = -1
            for j, op in enumerate(ops):
                if op.hw == hw:
                    continue
                if op.writes & (reads | writes) or op.reads & writes:
                    last = j
            if last >= 0:
                self._wait(queue, last + 1)

    # --- what a loop body issued and waited for (to decide what may stay in flight across its back edge) ---
    def open_log(self):
        self.logs.append(([], set()))

    def close_log(self):
        ops, waited = self.logs.pop()
        if self.logs:
            self.logs[-1][0].extend(ops)
            self.logs[-1][1].update(waited)
        return ops, waited

    def carryable(self, ops, waited):
        """The queues whose operations of this iteration may still run while the next iteration issues its
        own (the loop then waits for iteration r-1's after issuing iteration r's, as a hand-written kernel
        does): nothing in the body waited for the queue, its operations touch nothing another queue of the
        body touches, and their count is static."""
        out = []
        for q, pend in self.sync.pending.items():
            if not pend or q in waited or q.startswith(("pf", "st")):
                continue
            mine = [op for qq, op in ops if qq == q]
            if len(mine) != len(pend) or len(mine) > SEM_LIMIT // 2:
                continue
            hw = mine[0].hw
            touched = set().union(*(op.reads | op.writes for op in mine))
            others = set().union(*(op.reads | op.writes for qq, op in ops if op.hw != hw), set())
            if not touched & others:
                out.append(q)
        return out

    def issued(self, queue, op):
        if self.pipeline is not None:
            self.pipeline.issued(queue, op)
        if self.logs:
            self.logs[-1][0].append((queue, op))
        if self.weights is not None and self.weights[0].id in op.writes:
            self.weights = None            # the matrix unit's copy of that tile is stale now
        ops = self.sync.pending.setdefault(queue, [])
        ops.append(op)
        if len(ops) >= SEM_LIMIT:
            self._wait(queue, SEM_LIMIT // 2)

    def drain(self, keep=()):
        """Wait for everything in flight (except the logical queues in `keep`)."""
        if self.pipeline is not None:
            self.pipeline.flush_previous()
        for queue, ops in list(self.sync.pending.items()):
            if ops and queue not in keep:
                self._wait(queue, len(ops))

    # --- control flow --------------------------------------------------------------------------------------
    def enter_block(self):
        self.cache.append({})
        self.weights = None
        self.control_depth += 1

    def leave_block(self):
        self.cache.pop()
        self.weights = None
        self.control_depth -= 1

    def branch_unless(self, cond: Cond, target: Label):
        self.emit(BRANCH_INVERSE[cond.op], self.reg(cond.a), self.reg(cond.b), target)

    # --- the passes after the trace -------------------------------------------------------------------------
    def finish(self, arg_regs):
        code = _flat(self.prologue + self.code)
        pos = {}
        for i, ins in enumerate(code):
            if isinstance(ins, Place):
                pos[id(ins.label)] = i
        back = {id(ins): i for i, ins in enumerate(code) if isinstance(ins, Insn)}
        loops = [(pos[id(lp.top)], back[id(lp.back)]) for lp in self.loops if lp.back is not None]
        code = _dead_code_removed(code)
        pos = {id(ins.label): i for i, ins in enumerate(code) if isinstance(ins, Place)}
        back = {id(ins): i for i, ins in enumerate(code) if isinstance(ins, Insn)}
        loops = [(pos[id(lp.top)], back[id(lp.back)]) for lp in self.loops if lp.back is not None]
        self.carried = [(pos[id(lp.top)], back[id(lp.back)], lp.carried) for lp in self.loops
                        if lp.back is not None and lp.carried]
        self._allocate_registers(code, loops, arg_regs)
        self._allocate_local(code, loops)
        return code

    @staticmethod
    def _intervals(code, loops, things):
        """{key: [first, last]} positions of everything `things(ins)` yields, stretched over loops that use a
        value defined before them (the value must survive every iteration)."""
        iv = {}
        for i, ins in enumerate(code):
            if not isinstance(ins, Insn):
                continue
            for key in things(ins):
                lo_hi = iv.get(key)
                if lo_hi is None:
                    iv[key] = [i, i]
                else:
                    lo_hi[1] = i
        changed = True
        while changed:
            changed = False
            for top, end in loops:
                for lo_hi in iv.values():
                    if lo_hi[0] < top <= lo_hi[1] < end:
                        lo_hi[1] = end
                        changed = True
        return iv

    def _allocate_registers(self, code, loops, arg_regs):
        regs = {}

        def things(ins):
            for op in ins.ops + ins.defs:
                if isinstance(op, tuple):
                    op = op[0]
                if isinstance(op, VReg) and op.phys is None:
                    regs[op.id] = op
                    yield op.id
        iv = self._intervals(code, loops, things)
        free = list(range(T.NUM_REGS - 1, len(arg_regs), -1))
        active = []                 # (end, reg number)
        for rid, (lo, hi) in sorted(iv.items(), key=lambda kv: kv[1][0]):
            for end, n in list(active):
                if end < lo:
                    active.remove((end, n))
                    free.append(n)
            if not free:
                raise RegisterPressure(f"kernel {self.name} needs more than the {T.NUM_REGS - 1 - len(arg_regs)} "
                                  f"registers left beside its {len(arg_regs)} arguments at "
                                  f"{_where(code[lo].line)}; split the kernel or use fewer live values",
                                  line=code[lo].line)
            free.sort(reverse=True)
            n = free.pop()
            regs[rid].phys = n
            active.append((hi, n))

    def _allocate_local(self, code, loops):
        def things(ins):
            for op in ins.ops:
                if isinstance(op, tuple):
                    op = op[1]
                if isinstance(op, LocalAddr):
                    yield op.buf.id
            for b in ins.keeps:
                yield b.id
        iv = self._intervals(code, loops, things)
        for top, end, ids in self.carried:
            for b in ids:
                if b in iv:
                    iv[b] = [min(iv[b][0], top), max(iv[b][1], end)]
        last = max(len(code) - 1, 0)
        placed = []                 # (lo, hi, base, end)
        for buf in sorted(self.buffers, key=lambda b: (not b.pinned, iv.get(b.id, [0, 0])[0])):
            lo, hi = (0, last) if buf.pinned else iv.get(buf.id, [0, 0])
            size = (buf.nbytes + ALIGN - 1) // ALIGN * ALIGN
            base = 0
            for plo, phi, pbase, pend in sorted(placed, key=lambda p: p[2]):
                if phi < lo or plo > hi:
                    continue
                if base + size <= pbase:
                    break
                base = max(base, pend)
            if base + size > self.local_bytes:
                used = sum(p[3] - p[2] for p in placed if not (p[1] < lo or p[0] > hi))
                raise LocalMemoryFull(f"a tile of {buf.nbytes} bytes does not fit local memory: {used} of "
                                  f"{self.local_bytes} bytes are in use there by tiles live at the same time",
                                  line=buf.where)
            buf.base = base
            placed.append((lo, hi, base, base + size))

    def text(self, code, args):
        out = [f".kernel {self.name}"]
        for name, kind, dtype, _ in args:
            out.append(f".arg {_arg_name(name)}, {kind}, {dtype}")
        shown, pc = None, 0
        self.pc_lines = []             # pc -> (file, line, text) of the source that made the instruction
        n_prologue = len(self.prologue)
        if n_prologue:
            out.append("    ; prologue: special registers and the constants kernels read from local memory")
        for ins in code:
            if isinstance(ins, Place):
                out.append(f"{ins.label}:")
                continue
            line = None if pc < n_prologue else ins.line
            if line is not None and line != shown:
                shown = line
                out.append(f"    ; {_where(line)}: {line[2]}")
            ops = []
            for op in ins.ops:
                if isinstance(op, tuple):
                    ops.append(f"{op[1]}({op[0]})")
                else:
                    ops.append(str(op))
            out.append(f"    {ins.mnemonic} {', '.join(ops)}".rstrip().ljust(44) + f" ; pc {pc}")
            self.pc_lines.append(line if line is not None else shown)
            pc += 1
        out.append("    halt".ljust(44) + f" ; pc {pc}")
        self.pc_lines.append(shown)
        return "\n".join(out) + "\n"


def _arg_name(name):
    """The argument's name in the module: instructions name registers (and semaphores, engines, enum choices)
    in the same namespace, so a parameter called r0 or s1 gets a suffix instead of shadowing them."""
    import re
    reserved = {"zero"} | {c for f in vars(T).values() if isinstance(f, T.Field) for c in f.choices}
    if re.fullmatch(r"[rse]\d+", name) or name in reserved or name in T.BY_MNEMONIC:
        return name + "_arg"
    return name


def _flat(code):
    out = []
    for ins in code:
        if isinstance(ins, Splice):
            out.extend(_flat(ins.code))
        else:
            out.append(ins)
    return out


PURE = {"li", "lih", "addi", "add", "sub", "mul", "muli", "shli", "srai", "andi", "min", "max", "div", "rem",
        "csrr", "and", "or", "xor", "slt", "sltu"}


def _dead_code_removed(code):
    """Without the register computations nothing reads (a prefetch recomputes its address elsewhere)."""
    while True:
        used = set()
        for ins in code:
            if not isinstance(ins, Insn):
                continue
            own = {d.id for d in ins.defs} if ins.mnemonic in PURE else set()
            for op in ins.ops:
                op = op[0] if isinstance(op, tuple) else op
                if isinstance(op, VReg) and op.id not in own:
                    used.add(op.id)
            if ins.mnemonic not in PURE:
                used |= {d.id for d in ins.defs}
        kept = [ins for ins in code if not (isinstance(ins, Insn) and ins.mnemonic in PURE and ins.defs
                                            and all(d.id not in used and d.phys is None for d in ins.defs))]
        if len(kept) == len(code):
            return code
        code = kept


def _where(line):
    if not line:
        return "?"
    import os
    return f"{os.path.basename(line[0])}:{line[1]}"
