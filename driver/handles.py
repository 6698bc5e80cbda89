"""The driver's handles: contexts, buffers, modules, kernels and events.

Every handle is checked on every call: a freed buffer, an unloaded module, a handle of another card or
context, or any handle from before a `device.reset()` is InvalidHandle. A handle reads its device's state
and changes it only through the device's methods. This module imports neither driver/device.py nor
driver/queue.py (they import it): the driver's modules form no import circle.
"""
from __future__ import annotations

import numpy as np

from vnpu.errors import InvalidArgument, InvalidHandle
from vnpu.isa.module import Module as IsaModule
from vnpu.isa.module import load_module

from . import validate

MEMORIES = ("dram", "shared")     # what device.alloc(nbytes, memory) can allocate


def _context_arg(ctx):
    if ctx is not None and not isinstance(ctx, Context):
        raise InvalidArgument(f"check: ctx must be a Context or None, got {type(ctx).__name__}")


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
        sanitize = validate.flag(sanitize, "queue: sanitize", allow_none=True)
        with self.device.lock:
            self.check()
            return self.device._new_queue(self, sanitize)

    def destroy(self):
        with self.device.lock:
            self.check()
            if self.id == 0:
                raise InvalidArgument("the primary context cannot be destroyed; reset the device instead")
            self.device.card.destroy_context(self.id)
            self.alive = False
            self.device._forget_context(self)


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


class Event:
    """A point on a queue's timeline (`queue.record()`)."""

    def __init__(self, queue, time_ns):
        self.queue = queue
        self.time_ns = time_ns

    def _same_platform(self, other, what):
        if not isinstance(other, Event):
            raise InvalidArgument(f"{what} needs an Event, got {type(other).__name__}")
        if other.queue.platform is not self.queue.platform:
            raise InvalidHandle(f"{what}: the event belongs to another platform (its virtual clock is not this "
                                f"platform's)")
        return other

    def synchronize(self):
        """The host waits until the event is reached (virtual time)."""
        self.queue.device.check()
        self.queue.platform.advance_host(self.time_ns)

    def query(self):
        """Has the host's virtual clock reached the event? A "no" counts as the host polling: its clock
        moves on by the platform's `poll_ns` (like the time a CUDA host spends between cuEventQuery calls),
        so a loop that polls until ready ends, after (event time - now) / poll_ns polls."""
        platform = self.queue.platform
        if platform.host_ns >= self.time_ns:
            return True
        platform.advance_host(min(self.time_ns, platform.host_ns + platform.config["poll_ns"]))
        return False

    def elapsed_ns(self, start: "Event") -> float:
        """Virtual nanoseconds from `start` to this event (like cuEventElapsedTime, in ns)."""
        self._same_platform(start, "elapsed_ns")
        return self.time_ns - start.time_ns



__all__ = ["Context", "Buffer", "Module", "Kernel", "Event", "MEMORIES"]
