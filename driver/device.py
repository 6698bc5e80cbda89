"""Devices, contexts, buffers, modules and kernels: the driver API a host runtime calls.

Shaped like CUDA's driver API and Glow's DeviceManager: a device has a primary context (what
`device.alloc` and `device.load` use) and may create more, each with its own address space. Handles are
checked on every call: a freed buffer, an unloaded module, a handle of another card or context, or any
handle from before a `device.reset()` is InvalidHandle. A device fault is sticky: the next call on that
device raises it until `device.reset()`. A failed call changes nothing.
"""
from __future__ import annotations

import threading

import numpy as np

from vnpu.errors import DeviceLost, InvalidArgument, InvalidHandle, VnpuError
from vnpu.isa.module import Module as IsaModule
from vnpu.isa.module import load_module

from . import validate


MEMORIES = ("dram", "shared")     # what device.alloc(nbytes, memory) can allocate


def _context_arg(ctx):
    if ctx is not None and not isinstance(ctx, Context):
        raise InvalidArgument(f"check: ctx must be a Context or None, got {type(ctx).__name__}")


class Device:
    def __init__(self, platform, index, config):
        from vnpu.emulator.card import Card
        self.platform = platform
        self.index = index
        self.card = Card(config, card_id=index)
        self.config = self.card.config
        self.lock = threading.RLock()
        self.generation = 0              # bumps on reset: every older handle becomes invalid
        self._fault = None               # a device fault, raised by every call until reset (set_fault)
        self._lost = None                # why the card is lost (lose), or None
        self._busy_until_ns = 0.0        # the card runs one launch at a time (book_launch)
        self.primary = Context(self, 0)
        self.contexts = {0: self.primary}
        self._queues = []
        self.stats = DeviceStats()
        self.faults = None               # a FaultInjector when faults are injected into this card

    # --- the device's state: changed only through these methods ---------------------------------------------
    @property
    def is_lost(self) -> bool:
        """True once the card is lost (its link went down, the platform was closed): every later call on it
        is DeviceLost, and reset() cannot bring it back."""
        return bool(self._lost)

    @property
    def lost_reason(self):
        """Why the card is lost (a str), or None."""
        return self._lost or None

    @property
    def fault(self):
        """The sticky device fault (a VnpuError raised by every call on the device until reset()), or None."""
        return self._fault

    @property
    def sticky(self):
        """The old name of `fault` (read-only)."""
        return self._fault

    @property
    def busy_until_ns(self) -> float:
        """When the card's last booked launch ends (virtual ns): the next launch starts no earlier."""
        return self._busy_until_ns

    @busy_until_ns.setter
    def busy_until_ns(self, t_ns):
        # kept only while driver/dlrm.py still rewinds clocks by hand; use Platform.reset_clock()
        self._busy_until_ns = float(t_ns)

    def lose(self, reason: str):
        """Mark the card lost: every later call on it raises DeviceLost naming `reason`. Returns the
        DeviceLost to raise."""
        if not isinstance(reason, str) or not reason:
            raise InvalidArgument(f"lose: reason must be a non-empty str, got {validate.show(reason)}")
        self._lost = reason             # one assignment: no lock, so close() never waits for a launch
        return DeviceLost(f"card {self.index} is lost: {reason}")

    def set_fault(self, error):
        """Make `error` (a VnpuError) the device's sticky fault: every later call on the device raises it until
        reset(). Returns `error` (so `raise dev.set_fault(e)` reads well)."""
        if not isinstance(error, VnpuError):
            raise InvalidArgument(f"set_fault: expected a VnpuError, got {type(error).__name__} "
                                  f"{validate.show(error)}")
        self._fault = error
        return error

    def book_launch(self, start_ns: float, end_ns: float) -> float:
        """Book the card for a launch from start_ns to end_ns (virtual ns); returns end_ns. The card runs one
        launch at a time: the next launch starts at busy_until_ns or later."""
        self._busy_until_ns = float(end_ns)
        return end_ns

    def _reset_clock(self):
        """Platform.reset_clock(): the card and its queues back to virtual time 0."""
        with self.lock:
            self._busy_until_ns = 0.0
            for q in self._queues:
                q._rewind_clock()

    # --- checks every call makes --------------------------------------------------------------------------
    def check(self):
        if self._lost:
            raise DeviceLost(f"card {self.index} is lost: {self._lost}")
        if self._fault is not None:
            raise self._fault

    def __repr__(self):
        return f"Device({self.index}, {self.config.data['name']})"

    @property
    def properties(self) -> dict:
        """What the config says, plus memory used and free (like cuDeviceGetAttribute / cuMemGetInfo)."""
        c = self.config
        return {"index": self.index, "name": c.data["name"], "pes": c.pes, "clock_ghz": c.clock_ghz,
                "dram_bytes": c.dram.bytes, "dram_used": self.card.dram_used, "dram_free": self.card.dram_free,
                "shared_sram_bytes": c.shared_sram.bytes, "local_memory_bytes": c.local_memory.bytes,
                "matrix": dict(c.data["matrix"]), "vector_width_bits": c.vector.width_bits,
                "dma_engines_per_pe": c.dma.engines_per_pe, "peak_int8_tops": 2 * c.peak_macs_per_cycle * c.clock_ghz
                / 1e3, "dram_gbps": c.dram.gbps, "link": dict(self.platform.config["link"]),
                "host_bytes": self.card.memory.host_bytes}

    def inject_faults(self, config=None, **settings):
        """Inject faults into this card (driver/faults.py): a FaultConfig, a dict, or keyword settings, e.g.
        `dev.inject_faults(seed=1, pcie_error_rate=1e-3, dram_dbe_per_mib=0.01)`. None turns them off."""
        from dataclasses import asdict

        from .faults import FaultConfig, FaultInjector
        if config is None and not settings:
            self.faults = None
            return None
        if config is not None and not isinstance(config, (FaultConfig, dict)):
            raise InvalidArgument(f"inject_faults: expected a FaultConfig, a mapping of settings or None, got "
                                  f"{type(config).__name__} {validate.show(config)}")
        if isinstance(config, FaultConfig):
            cfg = FaultConfig.from_dict({**asdict(config), **settings}) if settings else config
        else:
            cfg = FaultConfig.from_dict({**(config or {}), **settings})
        self.faults = FaultInjector(cfg, self.index)
        return self.faults

    def health(self) -> dict:
        """RAS-style counters: faults injected, corrected and reported per kind, the sticky fault, lost."""
        h = self.faults.health() if self.faults else {"config": None, "injected": {}, "corrected": {},
                                                      "reported": {}}
        h.update(sticky=None if self._fault is None else f"{type(self._fault).__name__}: {self._fault}",
                 lost=self._lost)
        return h

    def memory_info(self):
        """(free, total) bytes of card DRAM."""
        return self.card.dram_free, self.config.dram.bytes

    # --- the primary context's conveniences ------------------------------------------------------------
    # `self.primary` is read under the lock: a reset on another thread replaces it, and a call that read the
    # old one first would fail with InvalidHandle although it was made after the reset.
    def alloc(self, nbytes, memory="dram"):
        with self.lock:
            return self.primary.alloc(nbytes, memory)

    def load(self, image):
        mod = _module_of(image)     # parse and validate outside the lock
        with self.lock:
            return self.primary.load(mod)

    def queue(self, sanitize=None):
        """A new queue of the primary context. `sanitize`: the race sanitizer's default for launches on it
        (None: the platform's default, `platform.sanitize`); `queue.launch(..., sanitize=...)` overrides it."""
        with self.lock:
            return self.primary.queue(sanitize=sanitize)

    def create_context(self):
        with self.lock:
            self.check()
            ctx = Context(self, self.card.create_context())
            self.contexts[ctx.id] = ctx
            return ctx

    def reset(self):
        """Forget everything on the card: memory, modules, contexts, the sticky fault. Handles from before
        the reset are invalid; queues stay usable and continue from the host's current time."""
        with self.lock:
            if self._lost:
                raise DeviceLost(f"card {self.index} is lost: {self._lost}")
            self.card.reset()
            self.generation += 1
            self._fault = None
            self.primary = Context(self, 0)
            self.contexts = {0: self.primary}
            for q in self._queues:
                q._catch_up(self.platform.host_ns)

    def synchronize(self):
        for q in list(self._queues):
            q.synchronize()


class DeviceStats:
    """What ran on a card: launches and virtual time per kernel, unit busy cycles, bytes per memory level."""

    UNITS = ("pe", "matrix", "vector", "dma", "embedding")

    def __init__(self):
        self.reset()

    def reset(self):
        self.kernels = {}          # name -> [launches, virtual ns]
        self.busy = dict.fromkeys(self.UNITS, 0)
        self.bytes = {"dram_read": 0, "dram_write": 0, "sram_read": 0, "sram_write": 0}

    def add(self, name, ns, summary):
        k = self.kernels.setdefault(name, [0, 0.0])
        k[0] += 1
        k[1] += ns
        for u in self.UNITS:
            self.busy[u] += summary["units"][u]["busy_cycles"]
        for b in self.bytes:
            self.bytes[b] += summary["bytes"][b]


class Context:
    """An address space on a device. Buffers and modules belong to exactly one context."""

    def __init__(self, device, ctx_id):
        self.device = device
        self.id = ctx_id
        self.generation = device.generation
        self.alive = True

    def check(self):
        self.device.check()
        if not self.alive or self.generation != self.device.generation:
            raise InvalidHandle(f"context {self.id} of card {self.device.index} no longer exists")

    def alloc(self, nbytes, memory="dram"):
        """Allocate device memory (page-granular); returns a Buffer."""
        with self.device.lock:
            self.check()
            if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) or nbytes <= 0:
                raise InvalidArgument(f"alloc: size must be a positive integer, got {validate.show(nbytes)}")
            validate.choice(memory, "alloc: memory", MEMORIES)
            addr = self.device.card.alloc(int(nbytes), memory=memory, ctx=self.id)
            return Buffer(self, addr, int(nbytes), memory)

    def load(self, image):
        """Validate and load a module image (bytes, a path-like to a .vnpu file, or a vnpu.Module)."""
        mod = _module_of(image)
        with self.device.lock:
            self.check()
            return Module(self, self.device.card.load(mod, ctx=self.id))

    def queue(self, sanitize=None):
        """A new queue of this context; `sanitize` as in Device.queue."""
        from .queue import Queue
        sanitize = validate.flag(sanitize, "queue: sanitize", allow_none=True)
        with self.device.lock:
            self.check()
            q = Queue(self, sanitize=sanitize)
            self.device._queues.append(q)
            return q

    def destroy(self):
        with self.device.lock:
            self.check()
            if self.id == 0:
                raise InvalidArgument("the primary context cannot be destroyed; reset the device instead")
            self.device.card.destroy_context(self.id)
            self.alive = False
            self.device.contexts.pop(self.id, None)


def _module_of(image):
    """A validated Module from bytes (bytearray, memoryview), a path (str or os.PathLike) of a .vnpu file, or
    a vnpu Module (vnpu.load_module / vnpu.isa.module.Module); anything else is InvalidArgument."""
    if isinstance(image, str) or hasattr(image, "__fspath__"):
        path = validate.file_path(image, "load: module path", what="module file")
        try:
            with open(path, "rb") as f:
                image = f.read()
        except OSError as e:
            raise InvalidArgument(f"load: cannot read module {path}: {e.strerror}") from None
    if isinstance(image, (bytes, bytearray, memoryview)):
        return load_module(bytes(image))
    if not isinstance(image, IsaModule):
        raise InvalidArgument(f"load: expected a module image (bytes), a path of a .vnpu file or a vnpu Module, "
                              f"got {type(image).__name__} {validate.show(image)}")
    return image


class Buffer:
    """Device memory. `device_address` is what a kernel receives for a buffer argument."""

    def __init__(self, ctx, address, nbytes, memory):
        self.ctx = ctx
        self.device = ctx.device
        self.device_address = address
        self.nbytes = nbytes
        self.memory = memory
        self.generation = self.device.generation
        self.freed = False

    def __repr__(self):
        state = "freed" if self.freed else f"{self.nbytes} bytes"
        return f"Buffer(card {self.device.index}, ctx {self.ctx.id}, 0x{self.device_address:x}, {state})"

    def check(self, ctx=None):
        """Raise InvalidHandle unless this buffer is live (and in `ctx`, when given)."""
        _context_arg(ctx)
        if self.freed:
            raise InvalidHandle(f"buffer 0x{self.device_address:x} of card {self.device.index} was freed")
        if self.generation != self.device.generation:
            raise InvalidHandle(f"buffer 0x{self.device_address:x} of card {self.device.index} predates a reset")
        if not self.ctx.alive:
            raise InvalidHandle(f"buffer 0x{self.device_address:x} belongs to context {self.ctx.id} of card "
                                f"{self.device.index}, which was destroyed")
        if ctx is not None:
            if ctx.device is not self.device:
                raise InvalidHandle(f"buffer 0x{self.device_address:x} belongs to card {self.device.index}, "
                                    f"not card {ctx.device.index}")
            if ctx.id != self.ctx.id:
                raise InvalidHandle(f"buffer 0x{self.device_address:x} belongs to context {self.ctx.id}, "
                                    f"not context {ctx.id}")

    def free(self):
        with self.device.lock:
            self.device.check()
            self.check()
            self.device.card.free(self.device_address, self.ctx.id)
            self.freed = True


class Module:
    """A loaded module: `module["name"]` is a Kernel."""

    def __init__(self, ctx, loaded):
        self.ctx = ctx
        self.device = ctx.device
        self.loaded = loaded
        self.generation = self.device.generation
        self.unloaded = False

    @property
    def kernels(self):
        return dict(self.loaded.module.kernels)

    def check(self, ctx=None):
        _context_arg(ctx)
        if self.unloaded:
            raise InvalidHandle("the module was unloaded")
        if self.generation != self.device.generation:
            raise InvalidHandle(f"the module was loaded on card {self.device.index} before a reset")
        if not self.ctx.alive:
            raise InvalidHandle(f"the module belongs to context {self.ctx.id} of card {self.device.index}, "
                                f"which was destroyed")
        if ctx is not None and (ctx.device is not self.device or ctx.id != self.ctx.id):
            raise InvalidHandle(f"the module belongs to card {self.device.index} context {self.ctx.id}, not card "
                                f"{ctx.device.index} context {ctx.id}")

    def __getitem__(self, name):
        if not isinstance(name, str):
            raise InvalidArgument(f"a kernel name is a str, got {type(name).__name__} {validate.show(name)}")
        self.check()
        if name not in self.loaded.module.kernels:
            raise InvalidArgument(f"no kernel {name!r} in the module; it has "
                                  f"{', '.join(sorted(self.loaded.module.kernels))}")
        return Kernel(self, self.loaded.module.kernels[name])

    def unload(self):
        with self.device.lock:
            self.device.check()
            self.check()
            self.device.card.unload(self.loaded)
            self.unloaded = True


class Kernel:
    def __init__(self, module, symbol):
        self.module = module
        self.symbol = symbol
        self.name = symbol.name

    def __repr__(self):
        return f"Kernel({self.symbol.signature()})"

    def encode_args(self, ctx, args):
        """Check args against the signature; return what the card takes (addresses for buffers)."""
        sym = self.symbol
        if not isinstance(args, (list, tuple)):
            raise InvalidArgument(f"{sym.signature()}: arguments must be a list or tuple, got {type(args).__name__}")
        _context_arg(ctx)
        if len(args) != len(sym.args):
            raise InvalidArgument(f"{sym.signature()} takes {len(sym.args)} arguments, got {len(args)}")
        values = []
        for a, spec in zip(args, sym.args):
            if spec.kind == "buffer":
                if not isinstance(a, Buffer):
                    raise InvalidArgument(f"{sym.signature()}: argument {spec.name!r} must be a Buffer, "
                                          f"got {type(a).__name__}")
                a.check(ctx)
                values.append(a.device_address)
            else:
                if isinstance(a, Buffer):
                    raise InvalidArgument(f"{sym.signature()}: argument {spec.name!r} is a scalar, got a Buffer")
                values.append(validate.kernel_scalar(a, spec, sym.signature()))   # type and range
        return values


__all__ = ["Device", "Context", "Buffer", "Module", "Kernel", "VnpuError"]
