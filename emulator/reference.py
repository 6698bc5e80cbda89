"""The reference interpreter: plain Python and numpy, slow, functional only — the living definition of
what every instruction does. The same tests run on it and on the timed Numba core (emulator/core.py).

Each PE runs until it blocks (a wait whose semaphore is short, a barrier) or halts, then the next runs.
Async operations complete at issue and signal at once; there is no time, so `csrr cycle` reads the count
of instructions this PE has executed.
"""
from __future__ import annotations

import math
import time

import numpy as np

from vnpu.isa import table as T

from .memory import L_DRAM_BASE, L_DRAM_BYTES, L_LOCAL_BYTES, L_LOCAL_P0, L_LOCAL_PAGES, L_SHARED_BASE, \
    L_SHARED_BYTES, L_SHARED_P0, PAGE
from .tables import embedding_bag_from_bytes, table_row_bytes
from .state import (F_ADDR, F_AUX, F_CODE, F_PC, F_PC2, F_PE, FAULT_ADDRESS, FAULT_DEADLOCK, FAULT_INSTRUCTION,
                    FAULT_TIMEOUT, NFAULT, WEIGHT_BUFFER_BYTES, WHY_DMA_SIZE, WHY_DTYPE, WHY_EMB_DESC,
                    WHY_EMB_INDEX, WHY_EMB_SEGMENTS, WHY_ENGINE, WHY_NO_WEIGHTS, WHY_SEMAPHORE, WHY_SIG_PE,
                    WHY_SIZE, WHY_WEIGHTS)

NP_DT = {0: np.int8, 1: np.int32, 2: np.float16, 3: np.float32}
INT_DT = {"i8": np.int8, "i32": np.int32}
M64 = (1 << 64) - 1


def wrap64(v):
    v &= M64
    return v - (1 << 64) if v >> 63 else v


def _recip(x):
    with np.errstate(divide="ignore"):
        return 1.0 / x


def _rsqrt(x):
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 / np.sqrt(x)


def _quiet(v):
    """Every NaN in a float32 array gets its quiet bit (sign and payload kept), as IEEE operations return."""
    v = np.asarray(v, dtype=np.float32).copy()
    bits = v.view(np.uint32)
    bits[np.isnan(v)] |= np.uint32(0x00400000)
    return v


CANONICAL_NAN = np.array([0x7FC00000], np.uint32).view(np.float32)[0]


def _nan_result(res, a, b=None):
    """The NaN a float op writes: its first NaN operand quieted (sign and payload kept); a NaN made from
    numbers (inf - inf, 0 * inf, sqrt(-1)) is the canonical quiet NaN 0x7fc00000."""
    nan = np.isnan(res)
    if not nan.any():
        return res
    out = np.where(nan, CANONICAL_NAN, res).astype(np.float32)
    if b is not None:
        out = np.where(nan & np.isnan(b), _quiet(b), out)
    return np.where(nan & np.isnan(a), _quiet(a), out).astype(np.float32)


def fma_f32(x, s, c):
    """x * s + c on float32 arrays, rounded ONCE to float32 (a fused multiply-add): the product is exact in
    float64; TwoSum gives the float64 sum S and its error; S rounds to the right float32 except exactly
    halfway between two of them, where the error's sign decides."""
    x, s, c = (np.asarray(v, dtype=np.float32).astype(np.float64) for v in (x, s, c))
    with np.errstate(over="ignore", invalid="ignore"):
        p = x * s
        S = p + c
        bb = S - p
        err = (p - (S - bb)) + (c - bb)
        r = S.astype(np.float32)
        other = np.nextafter(r, np.where(S > r, np.float32(np.inf), np.float32(-np.inf)).astype(np.float32))
        tie = np.isfinite(S) & np.isfinite(r) & (err != 0) & (r.astype(np.float64) != S) & \
            (S == (r.astype(np.float64) + other.astype(np.float64)) * 0.5)
        pick_other = tie & ((err > 0) == (other.astype(np.float64) > r.astype(np.float64)))
    return np.where(pick_other, other, r).astype(np.float32)


def _pick(a, b, take_b):
    """max / min as the card defines them: NaN propagates (a's first), ties (signed zeros too) give a."""
    return np.where(np.isnan(a), a, np.where(np.isnan(b) | take_b, b, a))


class Fault(Exception):
    def __init__(self, code, pe, pc, addr=-1, aux=-1, kind=-1):
        super().__init__(code)
        self.code, self.pe, self.pc, self.addr, self.aux, self.kind = code, pe, pc, addr, aux, kind


# LaunchTimeout kinds (fault[F_PC2]): the card-time watchdog, the instruction budget, the wall-clock limit
TIMEOUT_CYCLES, TIMEOUT_INSTRUCTIONS, TIMEOUT_WALL = 0, 1, 2


class ReferenceInterpreter:
    def __init__(self, card, module, pe_ids, regs, ids, ctx=0):
        self.card, self.mod, self.pe_ids, self.ids = card, module, [int(p) for p in pe_ids], ids
        self.mem = card.memory
        self.ptab = card.memory.ptabs[ctx]
        self.lay = self.mem.layout
        self.regs = regs                      # int64[npe, 32], shared with the caller
        self.fault = np.zeros(NFAULT, dtype=np.int64)
        cfg = card.config
        self.nsem, self.neng = cfg.semaphores, cfg.dma.engines_per_pe
        self.max_steps = cfg.watchdog_cycles           # the reference's clock is instructions per PE
        self.max_instr = cfg.watchdog_instructions     # executed instructions per launch, as on the core
        self.timeout_s = cfg.reference_timeout_s       # wall clock: this engine runs ~100x slower

    # --- memory, resolved page by page in Python ---------------------------------------------------------
    def _global(self, pe, addr, n):
        lay = self.lay
        if 0 <= addr and addr + n <= lay[L_LOCAL_BYTES] and pe >= 0:
            return int(lay[L_LOCAL_P0]) * PAGE + pe * int(lay[L_LOCAL_PAGES]) * PAGE + addr
        if lay[L_SHARED_BASE] <= addr and addr + n <= lay[L_SHARED_BASE] + lay[L_SHARED_BYTES]:
            return int(lay[L_SHARED_P0]) * PAGE + addr - int(lay[L_SHARED_BASE])
        if lay[L_DRAM_BASE] <= addr and addr + n <= lay[L_DRAM_BASE] + lay[L_DRAM_BYTES]:
            return addr - int(lay[L_DRAM_BASE])
        return None

    def _region_end(self, pe, addr):
        """End of the memory region holding addr (as PE pe sees it), or None when addr is in none."""
        lay = self.lay
        for ok, end in ((pe >= 0 and 0 <= addr < lay[L_LOCAL_BYTES], lay[L_LOCAL_BYTES]),
                        (lay[L_SHARED_BASE] <= addr < lay[L_SHARED_BASE] + lay[L_SHARED_BYTES],
                         lay[L_SHARED_BASE] + lay[L_SHARED_BYTES]),
                        (lay[L_DRAM_BASE] <= addr < lay[L_DRAM_BASE] + lay[L_DRAM_BYTES],
                         lay[L_DRAM_BASE] + lay[L_DRAM_BYTES])):
            if ok:
                return int(end)
        return None

    def _chunks(self, pe, addr, n, fault_at):
        """The pool pieces of [addr, addr+n). A fault names the first byte that may not be touched."""
        if n < 0:
            raise Fault(FAULT_ADDRESS, *fault_at, addr)
        if n == 0:
            if self._global(pe, addr, 0) is None:
                raise Fault(FAULT_ADDRESS, *fault_at, addr)
            return []
        end = self._region_end(pe, addr)
        if end is None:
            raise Fault(FAULT_ADDRESS, *fault_at, addr)
        valid = min(n, end - addr)
        g = self._global(pe, addr, valid)
        out, done = [], 0
        while done < valid:
            page = (g + done) // PAGE
            chunk = min(valid - done, PAGE - (g + done) % PAGE)
            pp = int(self.ptab[page])
            if pp < 0:
                raise Fault(FAULT_ADDRESS, *fault_at, addr + done)
            out.append((pp * PAGE + (g + done) % PAGE, chunk))
            done += chunk
        if valid < n:
            raise Fault(FAULT_ADDRESS, *fault_at, addr + valid)
        return out

    def read(self, pe, addr, n, at, dtype=np.uint8):
        parts = [self.mem.pool[o:o + c] for o, c in self._chunks(pe, addr, n, at)]
        raw = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
        return raw.view(dtype).copy()

    def write(self, pe, addr, data, at):
        raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        done = 0
        for o, c in self._chunks(pe, addr, len(raw), at):
            self.mem.pool[o:o + c] = raw[done:done + c]
            done += c

    def local(self, p, addr, n, at):
        """[addr, addr+n) must lie in PE-local memory; a fault names its first byte outside."""
        size = int(self.lay[L_LOCAL_BYTES])
        if not (n >= 0 and 0 <= addr and addr + n <= size):
            inside = n > 0 and 0 <= addr < size
            raise Fault(FAULT_ADDRESS, *at, size if inside else addr)

    # --- the run loop ---------------------------------------------------------------------------------------
    def run(self, entry):
        npe = len(self.pe_ids)
        self.pc = [entry] * npe
        self.state = ["run"] * npe
        self.steps = [0] * npe
        self.sem = np.zeros((npe, self.nsem), dtype=np.int64)
        self.dims = [[[1, 0, 0, 1, 0, 0] for _ in range(self.neng)] for _ in range(npe)]
        self.weights = [None] * npe
        self.executed = 0
        self.deadline = time.monotonic() + self.timeout_s
        try:
            while True:
                progressed = False
                for p in range(npe):
                    if self.state[p] == "wait":
                        ins = self.mod.decoded[self.pc[p]]
                        if self.sem[p, ins[T.SEM]] >= ins[T.IMM]:
                            self.sem[p, ins[T.SEM]] -= ins[T.IMM]
                            self.state[p] = "run"
                            self.pc[p] += 1
                    if self.state[p] == "run":
                        self._run_pe(p)
                        progressed = True
                if all(s == "halt" for s in self.state):
                    return
                if not progressed:
                    stuck = next(p for p in range(npe) if self.state[p] != "halt")
                    raise Fault(FAULT_DEADLOCK, stuck, self.pc[stuck])
        except Fault as f:
            self.fault[F_CODE], self.fault[F_PE], self.fault[F_PC] = f.code, f.pe, f.pc
            self.fault[F_ADDR], self.fault[F_AUX] = f.addr, f.aux
            if f.code == FAULT_TIMEOUT:
                self.fault[F_PC2] = f.kind

    def _run_pe(self, p):
        dec = self.mod.decoded
        r = self.regs[p]
        while self.state[p] == "run":
            pc = self.pc[p]
            if not 0 <= pc < len(dec):
                raise Fault(FAULT_INSTRUCTION, p, pc)
            self.steps[p] += 1
            self.executed += 1
            if self.steps[p] > self.max_steps:
                raise Fault(FAULT_TIMEOUT, p, pc, kind=TIMEOUT_CYCLES)
            if not self.executed & 0xFFFF and time.monotonic() > self.deadline:
                raise Fault(FAULT_TIMEOUT, p, pc, kind=TIMEOUT_WALL)
            ins = dec[pc]
            name = T.BY_OPCODE[int(ins[T.OP])].mnemonic
            nxt = self.execute(p, pc, name, ins, r)
            if nxt is not None and nxt <= pc and self.executed > self.max_instr:
                # checked where the core checks it: at a branch taken backwards or to itself
                raise Fault(FAULT_TIMEOUT, p, pc, kind=TIMEOUT_INSTRUCTIONS)
            r[0] = 0
            if nxt is not None:
                self.pc[p] = nxt

    def execute(self, p, pc, name, ins, r):
        """One instruction: returns the next pc, or None when the PE blocked or halted (pc unchanged)."""
        rd, a, b, c, imm = int(ins[T.RD]), int(r[ins[T.RS1]]), int(r[ins[T.RS2]]), int(r[ins[T.RS3]]), int(ins[T.IMM])
        at = (p, pc)
        alu = {"add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b, "and": lambda: a & b,
               "or": lambda: a | b, "xor": lambda: a ^ b, "shl": lambda: a << (b & 63),
               "shr": lambda: (a & M64) >> (b & 63), "sra": lambda: a >> (b & 63), "slt": lambda: int(a < b),
               "sltu": lambda: int((a & M64) < (b & M64)), "min": lambda: min(a, b), "max": lambda: max(a, b),
               "addi": lambda: a + imm, "muli": lambda: a * imm, "andi": lambda: a & imm, "ori": lambda: a | imm,
               "xori": lambda: a ^ imm, "shli": lambda: a << (imm & 63), "shri": lambda: (a & M64) >> (imm & 63),
               "srai": lambda: a >> (imm & 63), "slti": lambda: int(a < imm)}
        if name in alu:
            r[rd] = wrap64(alu[name]())
            return pc + 1
        if name in ("div", "rem"):
            if b == 0:
                q, m = -1, a
            else:
                q = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
                m = a - b * q
            r[rd] = wrap64(q if name == "div" else m)
            return pc + 1
        if name == "li":
            r[rd] = imm
            return pc + 1
        if name == "lih":
            r[rd] = wrap64((imm << 32) | (int(r[rd]) & 0xFFFFFFFF))
            return pc + 1
        if name == "csrr":
            sr = T.SPECIAL_REGS[int(ins[T.SR])]
            r[rd] = {"pe_id": p, "pe_count": len(self.pe_ids), "cycle": self.steps[p], "rodata": int(self.ids[0]),
                     "card_id": int(self.ids[1]), "launch_id": int(self.ids[2])}[sr]
            return pc + 1
        info = T.BY_MNEMONIC[name]
        if info.branch:
            taken = {"eq": a == b, "ne": a != b, "lt": a < b, "ge": a >= b, "ltu": (a & M64) < (b & M64),
                     "geu": (a & M64) >= (b & M64), "always": True}[info.branch]
            return imm if taken else pc + 1
        if name == "loop":
            left = wrap64(a - 1)
            r[ins[T.RS1]] = left
            return imm if left != 0 else pc + 1
        if info.mem_bytes and not info.mem_store:      # a load: sign- or zero-extended
            size = info.mem_bytes
            dt = np.dtype(f"{'i' if info.mem_signed else 'u'}{size}")
            addr = wrap64(a + imm)      # int64 address arithmetic, as in the core
            self.local(p, addr, size, at)
            r[rd] = wrap64(int(self.read(self.pe_ids[p], addr, size, at, dt)[0]))
            return pc + 1
        if info.mem_store:                              # a store: the low bytes of rs2
            size = info.mem_bytes
            addr = wrap64(a + imm)
            self.local(p, addr, size, at)
            self.write(self.pe_ids[p], addr, np.array([b & ((1 << (8 * size)) - 1)], dtype=np.dtype(f"u{size}")),
                       at)
            return pc + 1
        if name == "nop":
            return pc + 1
        if name == "mark":
            return pc + 1
        if name == "halt":
            self.state[p] = "halt"
            return None
        sem = int(ins[T.SEM])
        if name in ("dma", "dma.dim", "emb", "sig", "wait") or T.BY_MNEMONIC[name].unit in ("vector", "matrix"):
            if name != "dma.dim" and sem >= self.nsem:
                raise Fault(FAULT_INSTRUCTION, *at, -1, WHY_SEMAPHORE)
        if name == "dma.dim":
            e = int(ins[T.ENG])
            if e >= self.neng:
                raise Fault(FAULT_INSTRUCTION, *at, -1, WHY_ENGINE)
            base = 3 * int(ins[T.FLAG])
            self.dims[p][e][base:base + 3] = [a, b, c]
            return pc + 1
        if name == "dma":
            return self.dma(p, pc, ins, r, at)
        if T.BY_MNEMONIC[name].unit == "vector":
            self.vector(p, name, ins, r, at)
            self.sem[p, sem] += 1
            return pc + 1
        if name in ("mm.ldw", "mm.mul"):
            self.matrix(p, name, ins, r, at)
            self.sem[p, sem] += 1
            return pc + 1
        if name == "emb":
            self.embedding(p, int(r[ins[T.RS1]]), at)
            self.sem[p, sem] += 1
            return pc + 1
        if name == "sig":
            if not 0 <= a < len(self.pe_ids):
                raise Fault(FAULT_INSTRUCTION, *at, -1, WHY_SIG_PE)
            self.sem[a, sem] += 1
            return pc + 1
        if name == "wait":
            if self.sem[p, sem] >= imm:
                self.sem[p, sem] -= imm
                return pc + 1
            self.state[p] = "wait"
            return None
        if name == "fence":
            return pc + 1
        if name == "barrier":
            self.state[p] = "barrier"
            if all(s in ("barrier",) for s in self.state):
                for q in range(len(self.pe_ids)):
                    self.state[q] = "run"
                    if q != p:
                        self.pc[q] += 1
                return pc + 1
            return None
        raise Fault(FAULT_INSTRUCTION, *at)

    # --- units ------------------------------------------------------------------------------------------------
    def dma(self, p, pc, ins, r, at):
        e = int(ins[T.ENG])
        if e >= self.neng:
            raise Fault(FAULT_INSTRUCTION, *at, -1, WHY_ENGINE)
        dst, src, nbytes = int(r[ins[T.RD]]), int(r[ins[T.RS1]]), int(r[ins[T.RS2]])
        c1, ss1, ds1, c2, ss2, ds2 = self.dims[p][e]
        self.dims[p][e] = [1, 0, 0, 1, 0, 0]
        if nbytes < 0 or nbytes > (1 << 32) or c1 < 0 or c2 < 0 or c1 > (1 << 24) or c2 > (1 << 24) \
                or c1 * c2 > (1 << 24):
            raise Fault(FAULT_INSTRUCTION, *at, -1, WHY_DMA_SIZE)
        pe = self.pe_ids[p]
        rows = [(wrap64(src + k1 * ss1 + k2 * ss2), wrap64(dst + k1 * ds1 + k2 * ds2))    # int64, as in the core
                for k2 in range(c2) for k1 in range(c1)]
        if nbytes == 0:
            rows = []       # zero-byte rows move nothing and are not checked, like the engine
        for s, _ in rows:  # validate every row before moving anything, like the engine
            self._chunks(pe, s, nbytes, at)
        for _, d in rows:
            self._chunks(pe, d, nbytes, at)
        for s, d in rows:
            self.write(pe, d, self.read(pe, s, nbytes, at), at)
        self.sem[p, int(ins[T.SEM])] += 1
        return pc + 1

    def vector(self, p, name, ins, r, at):
        with np.errstate(all="ignore"):     # IEEE specials are values here, not warnings
            self._vector(p, name, ins, r, at)

    def _vector(self, p, name, ins, r, at):
        dt, n = int(ins[T.DT]), int(r[ins[T.RS3]])
        if n < 0 or n > (1 << 28):
            raise Fault(FAULT_INSTRUCTION, *at, -1, WHY_SIZE)
        dst, a, b = int(r[ins[T.RD]]), int(r[ins[T.RS1]]), int(r[ins[T.RS2]])
        npdt = NP_DT[dt]
        size = np.dtype(npdt).itemsize
        pe = self.pe_ids[p]
        self.local(p, a, n * size, at)
        info = T.BY_MNEMONIC[name]
        bcast = info.broadcast
        binary = info.vec_operands == 2
        if binary:
            self.local(p, b, (1 if bcast else n) * size, at)
        out_dt = npdt
        if name in ("vsum", "vrmax"):
            out_bytes = 4
        elif name == "vcvt":
            out_dt = NP_DT[int(ins[T.DT2])]
            out_bytes = n * np.dtype(out_dt).itemsize
        else:
            out_bytes = n * size
        self.local(p, dst, out_bytes, at)
        x = self.read(pe, a, n * size, at, npdt)
        y = (np.full(n, self.read(pe, b, size, at, npdt)[0]) if bcast else self.read(pe, b, n * size, at, npdt)) \
            if binary else None
        is_int = dt in (0, 1)
        if name == "vcvt":
            q = int(r[ins[T.RS2]])
            scale = float(np.array([q & 0xFFFFFFFF], dtype=np.uint32).view(np.float32)[0])
            zp = ((q >> 32) + 2**31) % 2**32 - 2**31
            if np.issubdtype(out_dt, np.integer):
                info = np.iinfo(out_dt)
                s32 = np.float32(scale)
                v = np.rint(fma_f32(x.astype(np.float32), s32, np.float32(zp)).astype(np.float64))
                v = np.where(np.isnan(v), 0, np.clip(v, info.min, info.max))
                res = v.astype(np.int64).astype(out_dt)
            elif is_int:
                res = ((x.astype(np.float64) - zp) * scale).astype(np.float32)
                res = _nan_result(res, np.zeros_like(res)).astype(out_dt)
            else:
                res = _quiet(x.astype(np.float32)).astype(out_dt)
            self.write(pe, dst, res, at)
            return
        if name in ("vsum", "vrmax"):
            if is_int:
                v = x.astype(np.int64)
                res = np.array([v.max() if (name == "vrmax" and n) else (v.sum() if name == "vsum" else -2**31)])
                self.write(pe, dst, res.astype(np.int64).astype(np.int32), at)
            else:
                v = x.astype(np.float64)
                nans = np.isnan(v)
                if nans.any():         # the first NaN input, quieted
                    res = _quiet(x.astype(np.float32)[nans][:1])
                else:
                    if name == "vrmax":
                        res = v.max() if n else -np.inf
                    else:
                        res = np.add.accumulate(v)[-1] if n else 0.0   # index order, like the unit
                    res = _nan_result(np.array([res], dtype=np.float32), np.zeros(1, np.float32))
                self.write(pe, dst, np.asarray(res, dtype=np.float32), at)
            return
        fn = info.vec_fn          # the unit's function: vadd and vadds are both "add"
        if is_int:
            if info.float_only:
                raise Fault(FAULT_INSTRUCTION, *at, -1, WHY_DTYPE)
            xi, yi = x.astype(np.int64), (y.astype(np.int64) if binary else None)
            res = {"add": lambda: xi + yi, "sub": lambda: xi - yi, "mul": lambda: xi * yi,
                   "max": lambda: np.maximum(xi, yi), "min": lambda: np.minimum(xi, yi),
                   "relu": lambda: np.maximum(xi, 0), "copy": lambda: xi}[fn]()
            self.write(pe, dst, res.astype(npdt), at)
            return
        # floats: fp16 computes in fp32 and rounds, as numpy does; transcendentals in fp64
        xf = x.astype(np.float32)
        yf = y.astype(np.float32) if binary else None
        x64 = xf.astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            res = {"add": lambda: xf + yf, "sub": lambda: xf - yf, "mul": lambda: xf * yf,
                   "max": lambda: _pick(xf, yf, yf > xf), "min": lambda: _pick(xf, yf, yf < xf),
                   "relu": lambda: np.where(xf < 0, np.float32(0), xf), "copy": lambda: xf,
                   "sigmoid": lambda: 1.0 / (1.0 + np.exp(-x64)), "tanh": lambda: np.tanh(x64),
                   "exp": lambda: np.exp(x64),
                   "recip": lambda: _recip(x64), "rsqrt": lambda: _rsqrt(x64),
                   "gelu": lambda: np.where(np.isinf(x64), np.where(x64 > 0, x64, -0.0),   # the limits at +-inf
                                             0.5 * x64 * (1.0 + np.vectorize(math.erf, otypes=[float])(
                                                 x64 / math.sqrt(2.0))))
                   }[fn]()
        res = np.asarray(res).astype(np.float32)
        if fn != "copy":
            res = _nan_result(res, xf, yf if binary else None)
        self.write(pe, dst, res.astype(npdt), at)

    def matrix(self, p, name, ins, r, at):
        dt = int(ins[T.DT])
        npdt = NP_DT[dt]
        eb = np.dtype(npdt).itemsize
        pe = self.pe_ids[p]
        if name == "mm.ldw":
            a, K, N = int(r[ins[T.RS1]]), int(r[ins[T.RS2]]), int(r[ins[T.RS3]])
            if K <= 0 or N <= 0 or K * N * eb > WEIGHT_BUFFER_BYTES:
                raise Fault(FAULT_INSTRUCTION, *at, -1, WHY_WEIGHTS)
            self.local(p, a, K * N * eb, at)
            self.weights[p] = (dt, self.read(pe, a, K * N * eb, at, npdt).reshape(K, N))
            return
        if self.weights[p] is None:
            raise Fault(FAULT_INSTRUCTION, *at, -1, WHY_NO_WEIGHTS)
        wdt, w = self.weights[p]
        if wdt != dt:
            raise Fault(FAULT_INSTRUCTION, *at, -1, WHY_DTYPE)
        dst, a, M = int(r[ins[T.RD]]), int(r[ins[T.RS1]]), int(r[ins[T.RS2]])
        K, N = w.shape
        if M < 0 or M > (1 << 28):
            raise Fault(FAULT_INSTRUCTION, *at, -1, WHY_SIZE)
        self.local(p, a, M * K * eb, at)
        self.local(p, dst, M * N * 4, at)
        A = self.read(pe, a, M * K * eb, at, npdt).reshape(M, K)
        acc = int(ins[T.FLAG]) == 1
        if dt == 0:
            prod = (A.astype(np.int64) @ w.astype(np.int64))
            if acc:
                prod = prod + self.read(pe, dst, M * N * 4, at, np.int32).reshape(M, N)
            self.write(pe, dst, prod.astype(np.int32), at)
        else:
            # fp16: exact products summed in fp32; fp32: exact products summed in fp64, rounded once.
            # K order, like the unit (not BLAS's blocked order).
            wide = np.float32 if dt == 2 else np.float64
            prod = np.zeros((M, N), dtype=wide)
            with np.errstate(over="ignore", invalid="ignore"):
                Aw, Ww = A.astype(wide), w.astype(wide)
                for k in range(K):
                    prod += Aw[:, k:k + 1] * Ww[k]
                if acc:
                    prod = prod + self.read(pe, dst, M * N * 4, at, np.float32).reshape(M, N).astype(wide)
                prod = prod.astype(np.float32)
            prod.view(np.uint32)[np.isnan(prod)] = 0x7FC00000    # the unit's canonical NaN
            self.write(pe, dst, prod, at)

    def embedding(self, p, daddr, at):
        pe = self.pe_ids[p]
        self.local(p, daddr, 8 * T.EMB_DESC_WORDS, at)
        d = [int(v) for v in self.read(pe, daddr, 8 * T.EMB_DESC_WORDS, at, np.int64)]
        fmt, dim, rows, mode = d[T.EMB_FORMAT], d[T.EMB_DIM], d[T.EMB_ROWS], d[T.EMB_MODE]
        n_idx, n_bags = d[T.EMB_NUM_INDICES], d[T.EMB_NUM_BAGS]
        ok = (0 <= fmt < len(T.EMB_FORMATS) and 0 < dim <= 65536 and 0 <= rows <= 2**31 and 0 <= n_idx <= 2**31
              and 0 <= n_bags <= 2**31 and d[T.EMB_INDEX_BYTES] in (4, 8) and d[T.EMB_SEGMENT_BYTES] in (4, 8)
              and d[T.EMB_OUT_DTYPE] in (0, 1) and (mode & 3) <= T.EMB_MODE_WEIGHTED
              and mode & ~(3 | T.EMB_MODE_OFFSETS | T.EMB_MODE_INCLUDE_LAST) == 0
              and not ((mode & 3) == T.EMB_MODE_WEIGHTED and d[T.EMB_WEIGHTS] == 0) and d[T.EMB_RESERVED0] == 0
              and d[T.EMB_RESERVED1] == 0)
        if not ok:
            raise Fault(FAULT_INSTRUCTION, *at, 0, WHY_EMB_DESC)
        fmt_name = T.EMB_FORMATS[fmt]
        rb = table_row_bytes(fmt_name, dim)
        idt = np.int32 if d[T.EMB_INDEX_BYTES] == 4 else np.int64
        sdt = np.int32 if d[T.EMB_SEGMENT_BYTES] == 4 else np.int64
        offsets_mode = bool(mode & T.EMB_MODE_OFFSETS)
        include_last = bool(mode & T.EMB_MODE_INCLUDE_LAST)
        nseg = n_bags + 1 if (offsets_mode and include_last) else n_bags
        table = self.read(pe, d[T.EMB_TABLE], rows * rb, at).reshape(rows, rb) if rows else np.zeros((0, rb), np.uint8)
        idx = self.read(pe, d[T.EMB_INDICES], n_idx * d[T.EMB_INDEX_BYTES], at, idt)
        seg = self.read(pe, d[T.EMB_SEGMENTS], nseg * d[T.EMB_SEGMENT_BYTES], at, sdt)
        w = self.read(pe, d[T.EMB_WEIGHTS], 4 * n_idx, at, np.float32) if (mode & 3) == T.EMB_MODE_WEIGHTED else None
        out_bytes = n_bags * dim * (4 if d[T.EMB_OUT_DTYPE] == 0 else 2)
        self._chunks(pe, d[T.EMB_OUTPUT], out_bytes, at)
        try:
            out = embedding_bag_from_bytes(table, fmt_name, dim, idx, seg, offsets_mode, include_last, n_bags,
                                           w, {0: "sum", 1: "mean", 2: "sum"}[mode & 3])
        except ValueError as e:
            why, pos = e.args
            raise Fault(FAULT_INSTRUCTION, *at, pos, WHY_EMB_INDEX if why == "index" else WHY_EMB_SEGMENTS) from None
        self.write(pe, d[T.EMB_OUTPUT], out.astype(np.float32 if d[T.EMB_OUT_DTYPE] == 0 else np.float16), at)
