"""One card, as the driver sees it: memory with an allocator, loaded modules, and launches.

`Card.launch(...)` runs a kernel SPMD on a set of PEs with the timed Numba core (`engine="numba"`) or the
plain numpy reference interpreter (`engine="reference"`), and returns a LaunchResult: cycles, per-unit
statistics and the trace events, all from the same run that produced the numbers.
"""
from __future__ import annotations

import contextlib
import math
import threading
from dataclasses import dataclass, field

import numpy as np

from vnpu.errors import (Deadlock, IllegalAddress, IllegalInstruction, InvalidArgument, LaunchTimeout,
                         OutOfMemory, RaceError)
from vnpu.isa import table as T
from vnpu.isa.asm import disassemble_word
from vnpu.isa.module import Module, load_module

from . import sanitizer
from .config import CardConfig, load_config
from .memory import PAGE, CardMemory
from .sanitizer import NWHERE, W_BYTE, W_OTHER_HI, W_OTHER_LO, W_OTHER_WRITES, W_THIS_HI, W_THIS_LO, \
    W_THIS_WRITES, unkey
from .state import (Checks, FAULT_ADDRESS, FAULT_DEADLOCK, FAULT_INSTRUCTION, FAULT_NONE, FAULT_RACE, FAULT_TIMEOUT,
                    F_ADDR, F_AUX, F_CODE, F_PC, F_PC2, F_PE, F_PE2, F_RACE, Memory, NCSTAT, NEV, NFAULT, NPSTAT,
                    NRES, Program, Record, WEIGHT_BUFFER_BYTES, WHY_TEXT, config_vector)

DEFAULT_TRACE_EVENTS = 1 << 16


@dataclass
class LoadedModule:
    module: Module
    rodata_address: int
    card: "Card"
    handle: int
    ctx: int = 0


def _host_key(array):
    """A pinned array's identity: its bytes' address and size on the host. A contiguous view of the same bytes
    (a uint8 view of a float table) finds the same copy; the pin holds the array, so the address stays its."""
    return array.__array_interface__["data"][0], array.nbytes


@dataclass
class LaunchResult:
    kernel: str
    cycles: int
    pes: tuple
    pe_stats: np.ndarray          # int64[npe, NPSTAT]
    card_stats: np.ndarray        # int64[NCSTAT]
    events: np.ndarray            # int64[n, NEV]
    clock_ghz: float
    config: CardConfig
    engine: str
    registers: np.ndarray = field(repr=False, default=None)

    @property
    def seconds(self):
        return self.cycles / (self.clock_ghz * 1e9)

    def summary(self):
        from .trace import summarize
        return summarize(self)

    def energy(self, mac_dtype="int8", vector_dtype="fp32", clock_ghz=None):
        """Joules (total and per unit), average watts over the launch's time and TOPS/W: the energy model of
        emulator/power.py (docs/power.md). The MACs' and vector lanes' element types are the caller's to
        name (the statistics count them, not their type); clock_ghz prices the cycles at another point."""
        from .power import launch_energy
        return launch_energy(self, mac_dtype=mac_dtype, vector_dtype=vector_dtype, clock_ghz=clock_ghz)

    def chrome_trace(self, **kw):
        from .trace import chrome_trace
        return chrome_trace(self, **kw)


class Card:
    """A virtual card. Thread-safe for one launch at a time (the driver serializes per card)."""

    def __init__(self, config="tiny", overrides=None, card_id: int = 0):
        self.config = config if isinstance(config, CardConfig) and not overrides else load_config(config, overrides)
        self.card_id = card_id
        self.cfgv = config_vector(self.config)
        self.lock = threading.RLock()
        self.launch_count = 0
        self._recording = None       # a list while `recording()` is active
        self._recording_trace = False  # whether launches within `recording()` record trace events
        self._default_sanitize = True  # the sanitizer for launches that pass sanitize=None
        self._reset_state()

    def _reset_state(self):
        self.memory = CardMemory(self.config)
        self.allocations = {}          # address -> nbytes (page rounded), DRAM
        self.shared_allocations = {}   # the same for shared SRAM
        self.owner = {}                # address -> context id
        self._next_ctx = 1
        self.modules = {}
        self._next_handle = 1
        self.res = np.zeros(NRES, dtype=np.int64)
        self.wbuf = None
        self.pinned = {}               # (host pointer, nbytes) -> [array, address, memory, pins]: resident arrays

    def reset(self):
        """Forget everything on the card: memory, modules, timelines."""
        with self.lock:
            self._reset_state()

    # --- contexts: separate page tables over one pool -----------------------------------------------
    def create_context(self) -> int:
        with self.lock:
            ctx = self._next_ctx
            self._next_ctx += 1
            self.memory.new_context(ctx)
            return ctx

    def destroy_context(self, ctx: int):
        with self.lock:
            for addr in [a for a, c in self.owner.items() if c == ctx]:
                self.free(addr, ctx)
            for h in [h for h, lm in self.modules.items() if lm.ctx == ctx]:
                self.modules.pop(h)
            self.memory.drop_context(ctx)

    # --- memory -----------------------------------------------------------------------------------
    @property
    def dram_used(self):
        return sum(self.allocations.values())

    @property
    def dram_free(self):
        return self.config.dram.bytes - self.dram_used

    def _find_gap(self, table, base, capacity, nbytes):
        addr = base
        for a in sorted(table):
            if a - addr >= nbytes:
                return addr
            addr = max(addr, a + table[a])
        if base + capacity - addr >= nbytes:
            return addr
        return None

    def alloc(self, nbytes: int, memory: str = "dram", ctx: int = 0) -> int:
        """Allocate page-aligned device memory; returns its device address."""
        if not isinstance(nbytes, (int, np.integer)) or nbytes <= 0:
            raise InvalidArgument(f"allocation size must be a positive integer, got {nbytes!r}")
        size = -(-int(nbytes) // PAGE) * PAGE
        with self.lock:
            if memory == "dram":
                table, base, cap = self.allocations, T.DRAM_BASE, self.config.dram.bytes
            elif memory == "shared":
                table, base, cap = self.shared_allocations, T.SHARED_BASE, self.config.shared_sram.bytes
            else:
                raise InvalidArgument(f"memory must be 'dram' or 'shared', got {memory!r}")
            addr = self._find_gap(table, base, cap, size)
            if addr is None:
                used = sum(table.values())
                raise OutOfMemory(f"card {self.card_id}: cannot allocate {nbytes} bytes of {memory} "
                                  f"({cap - used} bytes free, allocations are rounded to {PAGE // 1024} KiB pages)",
                                  requested=int(nbytes), free=cap - used)
            if ctx not in self.memory.ptabs:
                raise InvalidArgument(f"card {self.card_id}: no context {ctx}")
            self.memory.map(self.memory.gpage(addr), size // PAGE, ctx)
            table[addr] = size
            self.owner[addr] = ctx
            return addr

    # --- argument checks of the host-side API (a refused call changes nothing) ---------------------------
    def _int(self, what, value, lo, hi):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= int(value) <= hi:
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise InvalidArgument(f"card {self.card_id}: {what} must be an integer in [{lo}, {hi}], got {shown}")
        return int(value)

    def _data(self, data):
        """Host data to copy in: an array or bytes-like of numbers (not text, not None)."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            return np.frombuffer(data, dtype=np.uint8)
        if not isinstance(data, np.ndarray) or data.dtype.kind not in "biuf" or data.dtype.hasobject:
            raise InvalidArgument(f"card {self.card_id}: data to write must be a numeric numpy array or bytes, got "
                                  f"{type(data).__name__}")
        return data

    def free(self, address: int, ctx: int = 0):
        address = self._int("address", address, -(1 << 63), (1 << 63) - 1)
        with self.lock:
            table = self.allocations if address in self.allocations else self.shared_allocations
            if address not in table or self.owner.get(address) != ctx:
                raise InvalidArgument(f"card {self.card_id}: 0x{address:x} is not an allocation of context {ctx}")
            size = table.pop(address)
            self.owner.pop(address)
            self.memory.unmap(self.memory.gpage(address), size // PAGE, ctx)

    # --- resident operands: a host array kept on the card across launches ---------------------------
    def pin(self, array, memory: str = "dram") -> int:
        """Keep a copy of `array` (a contiguous numpy array the caller will not change) on the card until
        `unpin`: a launch whose host function places this very array (`place`) reads that copy instead of
        copying it in again; how a runtime keeps a model's weights and embedding tables resident. Pinning it
        again counts; returns its device address."""
        if not isinstance(array, np.ndarray) or not array.flags.c_contiguous or array.dtype.hasobject:
            raise InvalidArgument(f"card {self.card_id}: pin takes a C-contiguous numeric numpy array, got "
                                  f"{type(array).__name__}")
        with self.lock:
            entry = self.pinned.get(_host_key(array))
            if entry is not None and entry[2] == memory:
                entry[3] += 1
                return entry[1]
            addr = self.alloc(max(1, array.nbytes), memory=memory)
            if array.nbytes:
                self.memory.write(addr, array.reshape(-1).view(np.uint8), ctx=0)
            self.pinned[_host_key(array)] = [array, addr, memory, 1]
            return addr

    def unpin(self, array):
        """Drop one pin of `array`; the last frees its copy on the card. An array not pinned is ignored (a
        reset already dropped every pin)."""
        if not isinstance(array, np.ndarray):
            return
        with self.lock:
            entry = self.pinned.get(_host_key(array))
            if entry is None:
                return
            entry[3] -= 1
            if entry[3] <= 0:
                del self.pinned[_host_key(array)]
                self.free(entry[1])

    def is_pinned(self, array) -> bool:
        return isinstance(array, np.ndarray) and _host_key(array) in self.pinned

    def place(self, array, memory: str = "dram"):
        """Where a launch's host function puts an input array: (device address, owned). A pinned array is
        already on the card (owned False: the caller must not free it); anything else is allocated and
        written (owned True: the caller frees it after the launch)."""
        entry = self.pinned.get(_host_key(array)) if self.pinned and array.flags.c_contiguous else None
        if entry is not None and entry[2] == memory:
            return entry[1], False
        raw = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
        addr = self.alloc(max(1, raw.nbytes), memory=memory)
        if raw.nbytes:
            self.write(addr, raw)
        return addr, True

    def write(self, address: int, data, ctx: int = 0):
        address = self._int("address", address, -(1 << 63), (1 << 63) - 1)
        data = self._data(data)
        with self.lock:
            self.memory.write(address, data, ctx=ctx)

    def read(self, address: int, nbytes: int, dtype=np.uint8, shape=None, ctx: int = 0):
        address = self._int("address", address, -(1 << 63), (1 << 63) - 1)
        nbytes = self._int("nbytes", nbytes, 0, self.config.dram.bytes)   # checked before any host memory
        with self.lock:
            raw = self.memory.read(address, nbytes, ctx=ctx)
        out = raw.view(dtype)
        return out.reshape(shape) if shape is not None else out

    def write_local(self, pe: int, address: int, data):
        pe = self._int("pe", pe, 0, self.config.pes - 1)
        address = self._int("local address", address, -(1 << 63), (1 << 63) - 1)
        data = self._data(data)
        with self.lock:
            self.memory.map_local(pe)
            self.memory.write(address, data, pe=pe)

    def read_local(self, pe: int, address: int, nbytes: int):
        pe = self._int("pe", pe, 0, self.config.pes - 1)
        address = self._int("local address", address, -(1 << 63), (1 << 63) - 1)
        nbytes = self._int("nbytes", nbytes, 0, self.config.local_memory.bytes)
        with self.lock:
            self.memory.map_local(pe)
            return self.memory.read(address, nbytes, pe=pe)

    # --- modules -----------------------------------------------------------------------------------
    def load(self, image, ctx: int = 0) -> LoadedModule:
        mod = image if isinstance(image, Module) else load_module(image)
        with self.lock:
            ro = 0
            if mod.rodata:
                ro = self.alloc(len(mod.rodata), ctx=ctx)
                self.write(ro, np.frombuffer(mod.rodata, dtype=np.uint8), ctx=ctx)
            handle = self._next_handle
            self._next_handle += 1
            lm = LoadedModule(mod, ro, self, handle, ctx)
            self.modules[handle] = lm
            return lm

    def unload(self, lm: LoadedModule):
        with self.lock:
            if self.modules.pop(lm.handle, None) is not None and lm.rodata_address:
                self.free(lm.rodata_address, lm.ctx)

    # --- launches ----------------------------------------------------------------------------------
    def launch(self, module, kernel: str, args=(), pes=None, engine: str = "numba", sanitize: bool = None,
               trace: bool = False, trace_events: int = DEFAULT_TRACE_EVENTS, ctx: int = None) -> LaunchResult:
        """Run `kernel` of a loaded module (or an image / Module, loaded for this launch) SPMD on `pes`
        (default: every PE). args: integers (device addresses, scalars) or floats (passed as fp32 bits).
        sanitize=None: the card's default (on; `recording(sanitize=...)` changes it for a block)."""
        if sanitize is None:
            sanitize = self._default_sanitize
        temp = None
        if not isinstance(module, LoadedModule):
            module = temp = self.load(module, ctx or 0)
        try:
            result = self._launch(module, kernel, args, pes, engine, sanitize,
                                  trace or (self._recording is not None and self._recording_trace),
                                  trace_events, module.ctx if ctx is None else ctx)
            if self._recording is not None:
                self._recording.append(result)
            return result
        finally:
            if temp is not None:
                self.unload(temp)

    @contextlib.contextmanager
    def recording(self, trace=True, sanitize=None):
        """Within the block, every launch on this card is collected; yields the list of their LaunchResults, in
        order (what `vnpu op --trace` writes, whatever launches an op makes). trace=True: each records trace
        events. sanitize: the race sanitizer for launches that do not choose (`launch(sanitize=None)`, as the
        kernel library's host functions launch); None keeps the card's default, on. A runtime serving a model
        passes its platform's setting (off unless asked): the sanitizer costs a quarter of the emulation."""
        previous = self._recording, self._recording_trace, self._default_sanitize
        self._recording, self._recording_trace = [], bool(trace)
        if sanitize is not None:
            self._default_sanitize = bool(sanitize)
        try:
            yield self._recording
        finally:
            self._recording, self._recording_trace, self._default_sanitize = previous

    def _launch(self, lm, kernel, args, pes, engine, sanitize, trace, trace_events, ctx):
        mod = lm.module
        if kernel not in mod.kernels:
            raise InvalidArgument(f"no kernel {kernel!r} in the module; it has {', '.join(sorted(mod.kernels))}")
        sym = mod.kernels[kernel]
        if not isinstance(args, (list, tuple)):
            raise InvalidArgument(f"{sym.signature()}: args must be a list or tuple, got {type(args).__name__}")
        trace_events = self._int("trace_events", trace_events, 0, 1 << 26)
        if len(args) != len(sym.args):
            raise InvalidArgument(f"{sym.signature()} takes {len(sym.args)} arguments, got {len(args)}")
        argv = np.zeros(T.NUM_REGS, dtype=np.int64)
        for i, (a, spec) in enumerate(zip(args, sym.args)):
            argv[i + 1] = encode_arg(a, spec, sym)
        if pes is None:
            pe_ids = np.arange(self.config.pes, dtype=np.int64)
        else:
            if isinstance(pes, (str, bytes)) or not hasattr(pes, "__iter__"):
                raise InvalidArgument(f"pes must be None or a collection of PE numbers, got {pes!r}")
            pe_ids = np.array(sorted(set(self._int("pes must be PE numbers; each", p, 0, self.config.pes - 1)
                                         for p in pes)), dtype=np.int64)
            if len(pe_ids) == 0 or pe_ids[0] < 0 or pe_ids[-1] >= self.config.pes:
                raise InvalidArgument(f"pes must be a non-empty subset of 0..{self.config.pes - 1}, got {pes!r}")
        npe = len(pe_ids)
        with self.lock:
            for p in pe_ids:
                self.memory.map_local(int(p))
            regs = np.tile(argv, (npe, 1))
            ids = np.array([lm.rodata_address, self.card_id, self.launch_count], dtype=np.int64)
            self.launch_count += 1
            if engine == "numba":
                from .core import run_launch
                from .units import entry_points
                pstat = np.zeros((npe, NPSTAT), dtype=np.int64)
                cstat = np.zeros(NCSTAT, dtype=np.int64)
                events = np.zeros((trace_events if trace else 0, NEV), dtype=np.int64)
                evn = np.zeros(1, dtype=np.int64)
                fault = np.zeros(NFAULT, dtype=np.int64)
                san, sanc = sanitizer.new_table()
                if self.wbuf is None or self.wbuf.shape[0] < self.config.pes:
                    self.wbuf = np.zeros((self.config.pes, WEIGHT_BUFFER_BYTES), dtype=np.uint8)
                self.res[:] = 0
                cycles = run_launch(Program(mod.decoded, np.int64(sym.entry), pe_ids, ids, entry_points(mod.decoded)),
                                    Memory(self.memory.pool, self.memory.ptabs[ctx], self.memory.layout, self.wbuf),
                                    self.cfgv, self.res, Record(pstat, cstat, events, evn),
                                    Checks(fault, san, sanc, bool(sanitize)), regs)
                events = events[:evn[0]].copy()
            elif engine == "reference":
                from .reference import ReferenceInterpreter
                interp = ReferenceInterpreter(self, mod, pe_ids, regs, ids, ctx)
                interp.run(sym.entry)
                fault = interp.fault
                cycles, pstat, cstat, events = 0, np.zeros((npe, NPSTAT), np.int64), np.zeros(NCSTAT, np.int64), \
                    np.zeros((0, NEV), np.int64)
            else:
                raise InvalidArgument(f"engine must be 'numba' or 'reference', got {engine!r}")
        if fault[F_CODE] != FAULT_NONE:
            raise self._fault_error(mod, fault, pe_ids)
        return LaunchResult(kernel, int(cycles), tuple(int(p) for p in pe_ids), pstat, cstat, events,
                            self.config.clock_ghz, self.config, engine, regs)

    def _race_error(self, mod, fault, pe_ids, kw):
        """Name the first byte two unordered accesses share, and both accesses (PE, pc, instruction, range)."""
        pe2, pc2 = int(fault[F_PE2]), int(fault[F_PC2])
        other = disassemble_word(int(mod.code[pc2]), pc2) if 0 <= pc2 < len(mod.code) else "?"
        pe2 = int(pe_ids[pe2]) if 0 <= pe2 < len(pe_ids) else pe2
        w = [int(v) for v in fault[F_RACE:F_RACE + NWHERE]]
        lb = self.config.local_memory.bytes
        where, byte = _memory_name(w[W_BYTE], lb)
        this_does = "writes" if w[W_THIS_WRITES] else "reads"
        other_does = "write" if w[W_OTHER_WRITES] else "read"
        kw["address"] = byte
        return RaceError(f"race on byte 0x{byte:x} of {where}: this instruction {this_does} "
                         f"{_range_text(w[W_THIS_LO], w[W_THIS_HI], lb)} while [{other}] (PE {pe2}, pc {pc2}) may "
                         f"still {other_does} {_range_text(w[W_OTHER_LO], w[W_OTHER_HI], lb)}; add a wait on its "
                         f"semaphore first", **kw)

    def _fault_error(self, mod, fault, pe_ids):
        code, lpe, pc, addr, aux = (int(fault[i]) for i in (F_CODE, F_PE, F_PC, F_ADDR, F_AUX))
        pe = int(pe_ids[lpe]) if 0 <= lpe < len(pe_ids) else lpe
        text = ""
        if 0 <= pc < len(mod.code):
            text = disassemble_word(int(mod.code[pc]), pc)
        kw = dict(card=self.card_id, pe=pe, pc=pc, instruction=text)
        if code == FAULT_ADDRESS:
            return IllegalAddress("access outside what the launch may touch", address=addr, **kw)
        if code == FAULT_INSTRUCTION:
            if pc < 0 or pc >= len(mod.code):
                return IllegalInstruction("the program counter left the code", **kw)
            why = WHY_TEXT[aux] if 0 <= aux < len(WHY_TEXT) else "cannot execute"
            if addr >= 0 and aux in (10, 11):
                why += f" (at position {addr})"
            return IllegalInstruction(why, **kw)
        if code == FAULT_DEADLOCK:
            return Deadlock("every PE that has not halted waits on something no one will signal", **kw)
        if code == FAULT_TIMEOUT:
            kind = int(fault[F_PC2])
            if kind == 1:
                why = (f"the launch executed more than watchdog_instructions = "
                       f"{self.config.watchdog_instructions} instructions")
            elif kind == 2:
                why = (f"the reference engine ran longer than reference_timeout_s = "
                       f"{self.config.reference_timeout_s} s of host time")
            else:
                why = f"the launch passed watchdog_cycles = {self.config.watchdog_cycles} cycles"
            return LaunchTimeout(f"watchdog: {why} (card config keys; raise them for a longer kernel)", **kw)
        if code == FAULT_RACE:
            return self._race_error(mod, fault, pe_ids, kw)
        return IllegalInstruction(f"unknown fault code {code}", **kw)


def _memory_name(key, local_bytes):
    """Where a sanitizer key points, in the words of the address map: (text, device address)."""
    pe, address = unkey(int(key), local_bytes)
    if pe >= 0:
        return f"local memory of PE {pe}", address
    if address >= T.DRAM_BASE:
        return "DRAM", address
    return "shared SRAM", address


def _range_text(lo, hi, local_bytes):
    where, a = _memory_name(lo, local_bytes)
    return f"{where} [0x{a:x}, 0x{a + (hi - lo):x})"


F32_MAX = float(np.finfo(np.float32).max)


def encode_arg(value, spec, sym):
    """A kernel argument as its register value; checked against the signature."""
    if spec.kind == "buffer":
        if hasattr(value, "device_address"):
            value = value.device_address
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InvalidArgument(f"{sym.signature()}: argument {spec.name!r} must be a buffer (device address), "
                                  f"got {type(value).__name__}")
        return int(value)
    if spec.dtype in ("f16", "f32"):
        if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
            raise InvalidArgument(f"{sym.signature()}: argument {spec.name!r} must be a number")
        try:
            f = float(value)
        except OverflowError:
            raise InvalidArgument(f"{sym.signature()}: argument {spec.name!r} is an integer outside the f32 "
                                  f"range") from None
        # the driver's and the C API's rule: +-inf and NaN pass as they are, a finite value must fit f32
        if math.isfinite(f) and abs(f) > F32_MAX:
            raise InvalidArgument(f"{sym.signature()}: argument {spec.name!r} = {f:g} is outside the f32 range "
                                  f"(|x| <= {F32_MAX:g})")
        return int(np.array([f], dtype=np.float32).view(np.uint32)[0])
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgument(f"{sym.signature()}: argument {spec.name!r} must be an integer, got {value!r}")
    info = np.iinfo({"i8": np.int8, "i32": np.int32, "i64": np.int64, "u8": np.uint8, "i16": np.int16,
                     "u32": np.uint32}[spec.dtype])
    if not info.min <= int(value) <= info.max:
        raise InvalidArgument(f"{sym.signature()}: argument {spec.name!r} = {value} does not fit {spec.dtype}")
    return int(value)
