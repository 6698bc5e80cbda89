"""The C API's functions, written in Python over the driver (vnpu.h declares them; build.py compiles them).

Each function is registered with cffi's `def_extern` and wrapped by `api`: the Python driver raises a
VnpuError, the C caller gets its status code and vnpuGetLastErrorMessage() gets its message; any other
exception, KeyboardInterrupt included, is VNPU_ERROR_INTERNAL (and cffi's `error` value is INTERNAL too), so
no call returns VNPU_SUCCESS for work it did not do. Handles are numbers in a table (kind in the top 16
bits), typed as opaque pointers in C but never dereferenced, so a C program that passes a freed, made-up or
wrong-kind handle gets VNPU_ERROR_INVALID_HANDLE instead of a crash. Argument values are checked by the
Python driver (driver/validate.py), so the two APIs accept and refuse the same values.

The vnpuProgram functions run compiled models (.vnpp files) through the runtime's Program. Layering: the C
API lives under driver/ but is a front end, above the runtime (tests/test_layers.py classifies driver/capi
with the CLI), and the driver proper (driver/*.py) never imports the runtime. Even so this module imports
vnpu.runtime.graph.bundle only inside vnpuProgramLoad, at call time, as vnpuModuleLoadLibrary imports the
kernels: starting the library (`import vnpu.driver.capi.impl`) loads neither the runtime nor the graph
compiler, and a host that never loads a program never pays for them. No hook or registration is needed.
"""
from __future__ import annotations

import functools
import itertools
import os
import sys
import threading
import traceback

import numpy as np

import vnpu
from vnpu import errors as E

API_VERSION = 3

# status codes: the same numbers as the enum in vnpu.h (test_capi checks they agree)
STATUS = {
    "VNPU_SUCCESS": 0, "VNPU_ERROR_INVALID_ARGUMENT": 1, "VNPU_ERROR_INVALID_HANDLE": 2,
    "VNPU_ERROR_OUT_OF_MEMORY": 3, "VNPU_ERROR_INVALID_MODULE": 4, "VNPU_ERROR_ASSEMBLER": 5,
    "VNPU_ERROR_CONFIG": 6, "VNPU_ERROR_DEVICE_LOST": 7, "VNPU_ERROR_ILLEGAL_ADDRESS": 8,
    "VNPU_ERROR_ILLEGAL_INSTRUCTION": 9, "VNPU_ERROR_DEADLOCK": 10, "VNPU_ERROR_LAUNCH_TIMEOUT": 11,
    "VNPU_ERROR_RACE": 12, "VNPU_ERROR_ECC_UNCORRECTABLE": 13, "VNPU_ERROR_DMA_FAULT": 14,
    "VNPU_ERROR_DEVICE_FAULT": 15, "VNPU_ERROR_NOT_READY": 16, "VNPU_ERROR_INTERNAL": 99,
}
# most specific class first: the first match names the status
_ERROR_STATUS = [
    (E.InvalidArgument, 1), (E.InvalidHandle, 2), (E.OutOfMemory, 3), (E.InvalidModule, 4),
    (E.AssemblerError, 5), (E.ConfigError, 6), (E.DeviceLost, 7), (E.IllegalAddress, 8),
    (E.IllegalInstruction, 9), (E.Deadlock, 10), (E.LaunchTimeout, 11), (E.RaceError, 12),
    (E.EccUncorrectable, 13), (E.DmaFault, 14), (E.DeviceFault, 15),
]
ARG_BUFFER, ARG_INT, ARG_FLOAT = 0, 1, 2
QUEUE_SANITIZE = 1                 # vnpuQueueFlags
QUEUE_FLAGS = QUEUE_SANITIZE
MAX_DIMS = 8                       # VNPU_MAX_DIMS
# vnpuDtype: the graph IR's dtypes (vnpu.runtime.graph.ir.DTYPES)
DTYPE_CODES = {"float32": 0, "float16": 1, "int8": 2, "int32": 3, "int64": 4, "uint8": 5, "bool": 6, "float64": 7}


def status_of(exc: BaseException) -> int:
    for cls, code in _ERROR_STATUS:
        if isinstance(exc, cls):
            return code
    return STATUS["VNPU_ERROR_INTERNAL"]


class NotReady(Exception):
    """vnpuEventQuery's 'not yet': a status, not an error message (unless it is given one)."""


class Closed:
    """What the handles of a closed platform point to instead of its objects: the C side cannot free them
    any more (every call on them is DeviceLost), so the table must not keep the cards' memory alive. The
    platform handle itself is `invalid` (InvalidHandle: it was closed, as a freed buffer was freed)."""

    def __init__(self, message, invalid=False):
        self.message = message
        self.invalid = invalid


# the platform and the cards of what a handle of each kind stands for (a program is on several)
PLATFORM_OF = {"device": lambda d: d.platform, "buffer": lambda b: b.device.platform,
               "module": lambda m: m.device.platform, "kernel": lambda k: k.module.device.platform,
               "queue": lambda q: q.platform, "event": lambda e: e.queue.platform,
               "program": lambda p: p.program.platform}
DEVICES_OF = {"device": lambda d: [d], "buffer": lambda b: [b.device], "module": lambda m: [m.device],
              "kernel": lambda k: [k.module.device], "queue": lambda q: [q.device], "event": lambda e: [e.queue.device],
              "program": lambda p: p.devices}


class Tensor:
    """One input or output of a loaded program, as vnpuTensorInfo gives it (the name as a C string that lives
    as long as the program's handle)."""

    def __init__(self, value):
        self.name, self.shape, self.dtype = value.name, tuple(int(d) for d in value.shape), np.dtype(value.dtype)
        self.code = DTYPE_CODES.get(value.dtype)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self.c_name = _ffi.new("char[]", self.name.encode("utf-8", "replace"))

    def describe(self):
        return f"{self.name!r} ({self.dtype}[{', '.join(map(str, self.shape))}], {self.nbytes} bytes)"


class LoadedProgram:
    """What a vnpuProgram handle stands for: the runtime's Program (vnpu.runtime.graph.program), its inputs and
    outputs, and the last successful run's latency. Runs of one program are serialized (its lock), so the
    latency read after a run is that run's."""

    def __init__(self, program):
        self.program = program
        g = program.graph
        self.inputs = [Tensor(g.values[n]) for n in g.inputs]
        self.outputs = [Tensor(g.values[n]) for n in g.outputs]
        self.devices = list(program.platform.devices[:program.placement.cards])
        self.latency_ns = None
        self.lock = threading.Lock()


def number_of(h) -> int:
    """The table number of a handle: a C pointer (cffi cdata) or an int."""
    if isinstance(h, int):
        return h
    return int(_ffi.cast("uintptr_t", h))


_ffi = None      # set by install()


class Handles:
    """Objects the C side holds, by number. The kind lives in the top 16 bits of the number."""
    KINDS = {"platform": 1, "device": 2, "buffer": 3, "module": 4, "kernel": 5, "queue": 6, "event": 7,
             "program": 8}

    def __init__(self):
        self._objects = {}
        self._named = {}          # owner handle -> {name: handle}: a platform's devices, a module's kernels
        self._serial = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, kind, obj) -> int:
        with self._lock:
            h = (self.KINDS[kind] << 48) | next(self._serial)
            self._objects[h] = obj
            return h

    def add_named(self, kind, owner, name, obj) -> int:
        """The handle of `owner`'s `name` (a platform's device i, a module's kernel): the same number on
        every call, as cuDeviceGet and cuModuleGetFunction give, not a new table entry per lookup."""
        with self._lock:
            named = self._named.setdefault(number_of(owner), {})
            if name not in named:
                named[name] = (self.KINDS[kind] << 48) | next(self._serial)
                self._objects[named[name]] = obj
            return named[name]

    def get(self, kind, h):
        h = number_of(h)
        obj = self._objects.get(h)
        if obj is None or h >> 48 != self.KINDS[kind]:
            what = next((k for k, v in self.KINDS.items() if v == h >> 48), None)
            if obj is not None and what:
                raise E.InvalidHandle(f"handle 0x{h:x} is a {what}, not a {kind}")
            if h == 0:
                raise E.InvalidHandle(f"the {kind} handle is NULL")
            raise E.InvalidHandle(f"no {kind} has handle 0x{h:x} (never created, freed or destroyed)")
        if isinstance(obj, Closed):
            raise (E.InvalidHandle if obj.invalid else E.DeviceLost)(obj.message)
        return obj

    def drop(self, h):
        """Forget h, and the handles named under it (an unloaded module's kernels)."""
        with self._lock:
            self._objects.pop(number_of(h), None)
            for child in self._named.pop(number_of(h), {}).values():
                self._objects.pop(child, None)

    def close_platform(self, h, platform):
        """Platform handle h is closed (InvalidHandle from now on); every handle of its objects now stands for
        a Closed marker (DeviceLost), so the table no longer keeps its cards, buffers and modules alive."""
        kind_names = {v: k for k, v in self.KINDS.items()}
        h = number_of(h)
        with self._lock:
            self._objects[h] = Closed(f"platform 0x{h:x} was closed", invalid=True)
            self._named.pop(h, None)
            for other, obj in self._objects.items():
                kind = kind_names.get(other >> 48)
                if kind in PLATFORM_OF and not isinstance(obj, Closed) and PLATFORM_OF[kind](obj) is platform:
                    self._objects[other] = Closed(f"the platform of {kind} 0x{other:x} was closed")


def install(ffi):
    """Define every function of vnpu.h on `ffi` (the embedded module's FFI)."""
    global _ffi
    _ffi = ffi
    handles = Handles()
    local = threading.local()
    names = {code: ffi.new("char[]", name.encode()) for name, code in STATUS.items()}
    unknown_name = ffi.new("char[]", b"VNPU_ERROR_UNKNOWN")
    empty = ffi.new("char[]", b"")
    interrupted = ffi.new("char[]", b"a vnpu call was interrupted before it finished (its effect is unknown)")
    queue_flags = {}          # queue handle -> the vnpuQueueFlags it was created with
    INTERNAL = STATUS["VNPU_ERROR_INTERNAL"]

    def fail(code, message):
        local.message = ffi.new("char[]", message.encode("utf-8", "replace"))
        return code

    def last_resort(exc_type, exc, tb):
        """cffi's onerror: an exception escaped the wrapper itself (e.g. KeyboardInterrupt inside its except
        clause). The status is then `error`, VNPU_ERROR_INTERNAL, never VNPU_SUCCESS."""
        try:
            local.message = interrupted
        except BaseException:  # noqa: BLE001 - nothing may unwind into C
            pass
        return None

    def api(fn):
        """Register fn as the C function of the same name; exceptions become status codes."""
        @functools.wraps(fn)
        def wrapper(*args):
            try:
                fn(*args)
                return 0
            except NotReady as e:
                if e.args:
                    return fail(STATUS["VNPU_ERROR_NOT_READY"], f"{fn.__name__}: {e}")
                return STATUS["VNPU_ERROR_NOT_READY"]
            except E.VnpuError as e:
                return fail(status_of(e), f"{fn.__name__}: {type(e).__name__}: {e}")
            except Exception as e:   # noqa: BLE001 - never unwind into C; a bug, reported with where it was
                where = traceback.extract_tb(e.__traceback__)[-1]
                return fail(INTERNAL, f"{fn.__name__}: internal error {type(e).__name__}: "
                            f"{e} ({where.filename}:{where.lineno}); please report it")
            except BaseException as e:  # noqa: BLE001 - KeyboardInterrupt, SystemExit: not done, not success
                return fail(INTERNAL, f"{fn.__name__}: interrupted by {type(e).__name__} before it finished; "
                            f"its effect is unknown")
        ffi.def_extern(name=fn.__name__, error=INTERNAL, onerror=last_resort)(wrapper)
        return wrapper

    def text_api(fn):
        """Register fn, which returns a C string, with a static string if it fails."""
        fallback = {"vnpuGetErrorName": unknown_name, "vnpuGetLastErrorMessage": interrupted}[fn.__name__]

        @functools.wraps(fn)
        def wrapper(*args):
            try:
                return fn(*args)
            except BaseException:  # noqa: BLE001 - nothing may unwind into C
                return fallback
        ffi.def_extern(name=fn.__name__, onerror=lambda *exc: fallback)(wrapper)
        return wrapper

    def need(ptr, what):
        if ptr == ffi.NULL:
            raise E.InvalidArgument(f"{what} is NULL")

    def out(ptr, what, value):
        need(ptr, what)
        ptr[0] = value

    def out_handle(ptr, number):
        ptr[0] = ffi.cast(ffi.typeof(ptr).item, number)

    def look(*pairs):
        """The objects of (kind, handle) pairs, checked in order: each handle is live (InvalidHandle,
        DeviceLost), all belong to one platform (another platform's handle is InvalidHandle), and no card
        they are on holds a sticky fault (its status: every call naming a faulted card returns the fault)."""
        objs = [handles.get(kind, h) for kind, h in pairs]
        platform = None
        for (kind, h), obj in zip(pairs, objs):
            pl = PLATFORM_OF[kind](obj)
            if platform is None:
                platform = pl
            elif pl is not platform:
                raise E.InvalidHandle(f"{kind} 0x{number_of(h):x} belongs to another platform than "
                                      f"{pairs[0][0]} 0x{number_of(pairs[0][1]):x}")
        for (kind, _), obj in zip(pairs, objs):
            for d in DEVICES_OF[kind](obj):
                d.check()
        return objs[0] if len(objs) == 1 else objs

    def text(ptr, what):
        if ptr == ffi.NULL:
            raise E.InvalidArgument(f"{what} is NULL")
        return ffi.string(ptr).decode("utf-8", "replace")

    def path(ptr, what):
        """A file name: bytes as the OS has them (os.fsdecode), so a name that is not UTF-8 still opens."""
        if ptr == ffi.NULL:
            raise E.InvalidArgument(f"{what} is NULL")
        return os.fsdecode(ffi.string(ptr))

    def host_bytes(ptr, nbytes, what):
        """A numpy view of C memory (no copy)."""
        if nbytes and ptr == ffi.NULL:
            raise E.InvalidArgument(f"{what} is NULL")
        if nbytes == 0:
            return np.zeros(0, np.uint8)
        if nbytes > sys.maxsize:     # ffi.buffer would raise OverflowError: no host buffer is that large
            raise E.InvalidArgument(f"{what}: {nbytes} bytes is more than any host buffer can hold")
        return np.frombuffer(ffi.buffer(ptr, nbytes), dtype=np.uint8)

    def open_platform(make, what):
        """A new platform; a card or platform config the driver cannot read (a folder, not UTF-8, ...) is a
        config error whatever exception the reading raised."""
        try:
            return make()
        except E.VnpuError:
            raise
        except (OSError, UnicodeError, ValueError, OverflowError, RecursionError) as e:
            raise E.ConfigError(f"{what}: {type(e).__name__}: {e}") from None

    # --- initialization, errors and versions ------------------------------------------------------------
    @api
    def vnpuInit(flags):
        if flags != 0:
            raise E.InvalidArgument(f"flags must be 0, got {flags}")

    @text_api
    def vnpuGetErrorName(status):
        return names.get(int(status), unknown_name)

    @text_api
    def vnpuGetLastErrorMessage():
        return getattr(local, "message", empty)

    @api
    def vnpuGetVersion(version):
        out(version, "api_version", API_VERSION)

    # --- platform and devices ---------------------------------------------------------------------------
    @api
    def vnpuPlatformOpen(yaml_path, platform):
        need(platform, "platform")
        if yaml_path == ffi.NULL:
            p = vnpu.Platform()
        else:
            file = path(yaml_path, "yaml_path")
            p = open_platform(lambda: vnpu.Platform.from_yaml(file), f"platform config {file}")
        out_handle(platform, handles.add("platform", p))

    @api
    def vnpuPlatformOpenCards(card, cards, platform):
        need(platform, "platform")
        name = path(card, "card")
        p = open_platform(lambda: vnpu.Platform(card=name, cards=int(cards)), f"card config {name}")
        out_handle(platform, handles.add("platform", p))

    @api
    def vnpuPlatformClose(platform):
        p = handles.get("platform", platform)
        p.close()
        # C has no garbage collector: forget the platform's objects and the cards' memory now (CUDA's
        # cuCtxDestroy frees what the context held); their handles stay DeviceLost
        handles.close_platform(platform, p)
        for d in p.devices:
            d.release_memory()

    @api
    def vnpuDeviceGetCount(platform, count):
        p = handles.get("platform", platform)
        out(count, "count", len(p.devices))

    @api
    def vnpuDeviceGet(platform, index, device):
        p = handles.get("platform", platform)
        i = int(index)
        if not 0 <= i < len(p.devices):
            raise E.InvalidArgument(f"device index {i} is not in 0..{len(p.devices) - 1}")
        if p.closed:
            raise E.DeviceLost("the platform was closed")
        need(device, "device")     # NULL is an error before a handle is made
        out_handle(device, handles.add_named("device", platform, i, p.devices[i]))

    @api
    def vnpuDeviceGetProperties(device, props):
        d = look(("device", device))
        need(props, "properties")
        pr = d.properties
        name = pr["name"].encode("utf-8")[:63].decode("utf-8", "ignore").encode("utf-8")  # whole characters
        ffi.memmove(props.name, name + b"\0", len(name) + 1)
        props.index, props.pes, props.clock_ghz = pr["index"], pr["pes"], pr["clock_ghz"]
        props.dram_bytes, props.shared_sram_bytes = pr["dram_bytes"], pr["shared_sram_bytes"]
        props.local_memory_bytes, props.dma_engines_per_pe = pr["local_memory_bytes"], pr["dma_engines_per_pe"]
        props.vector_width_bits, props.peak_int8_tops = pr["vector_width_bits"], pr["peak_int8_tops"]
        props.dram_gbps = pr["dram_gbps"]
        props.pcie_gen, props.pcie_lanes = int(pr["link"]["gen"]), int(pr["link"]["lanes"])

    @api
    def vnpuDeviceGetStatus(device):
        look(("device", device))

    @api
    def vnpuDeviceSynchronize(device):
        look(("device", device)).synchronize()

    @api
    def vnpuDeviceReset(device):
        handles.get("device", device).reset()     # the one call a sticky fault does not refuse

    @api
    def vnpuMemGetInfo(device, free_bytes, total_bytes):
        d = look(("device", device))
        need(free_bytes, "free_bytes")      # both checked before either is written
        need(total_bytes, "total_bytes")
        free, total = d.memory_info()
        free_bytes[0], total_bytes[0] = free, total

    # --- memory -----------------------------------------------------------------------------------------
    @api
    def vnpuMemAlloc(device, nbytes, buffer):
        d = look(("device", device))
        need(buffer, "buffer")
        out_handle(buffer, handles.add("buffer", d.alloc(int(nbytes))))

    @api
    def vnpuMemFree(buffer):
        look(("buffer", buffer)).free()
        handles.drop(buffer)

    @api
    def vnpuBufferGetInfo(buffer, device_address, nbytes):
        b = look(("buffer", buffer))
        b.check()
        need(device_address, "device_address")      # both checked before either is written
        need(nbytes, "nbytes")
        device_address[0], nbytes[0] = b.device_address, b.nbytes

    # --- modules and kernels ----------------------------------------------------------------------------
    def loader(device, module):
        """The device of a module load, after the checks every load makes first."""
        d = look(("device", device))
        need(module, "module")
        return d

    def loaded(d, module, image):
        out_handle(module, handles.add("module", d.load(image)))

    @api
    def vnpuModuleLoadData(device, image, nbytes, module):
        d = loader(device, module)
        loaded(d, module, bytes(host_bytes(image, nbytes, "image")))

    @api
    def vnpuModuleLoadFile(device, file_path, module):
        d = loader(device, module)
        loaded(d, module, path(file_path, "path"))

    @api
    def vnpuModuleLoadAssembly(device, source, module):
        d = loader(device, module)
        loaded(d, module, vnpu.assemble(text(source, "source"), source="<vnpuModuleLoadAssembly>"))

    @api
    def vnpuModuleLoadLibrary(device, op, dtype, module):
        from vnpu.kernels.elementwise import module_image
        d = loader(device, module)
        name, kind = text(op, "op"), "fp32" if dtype == ffi.NULL else text(dtype, "dtype")
        loaded(d, module, module_image(d.card, name, kind))

    @api
    def vnpuModuleUnload(module):
        look(("module", module)).unload()
        handles.drop(module)

    @api
    def vnpuModuleGetKernel(module, name, kernel):
        m = look(("module", module))
        kernel_name = text(name, "name")
        need(kernel, "kernel")
        k = m[kernel_name]
        out_handle(kernel, handles.add_named("kernel", module, kernel_name, k))

    @api
    def vnpuKernelGetArgCount(kernel, count):
        k = look(("kernel", kernel))
        k.module.check()
        out(count, "count", len(k.symbol.args))

    # --- queues, copies, launches -----------------------------------------------------------------------
    def create_queue(device, flags, queue):
        d = look(("device", device))
        if flags & ~QUEUE_FLAGS:
            raise E.InvalidArgument(f"flags 0x{flags:x} has bits that are no vnpuQueueFlags (known: "
                                    f"VNPU_QUEUE_SANITIZE = 0x{QUEUE_SANITIZE:x})")
        need(queue, "queue")
        q = d.queue(sanitize=True) if flags & QUEUE_SANITIZE else d.queue()
        h = handles.add("queue", q)
        queue_flags[h] = int(flags)
        out_handle(queue, h)

    @api
    def vnpuQueueCreate(device, queue):
        create_queue(device, 0, queue)

    @api
    def vnpuQueueCreateWithFlags(device, flags, queue):
        create_queue(device, int(flags), queue)

    @api
    def vnpuQueueGetFlags(queue, flags):
        look(("queue", queue))
        out(flags, "flags", queue_flags.get(number_of(queue), 0))

    @api
    def vnpuQueueDestroy(queue):
        look(("queue", queue)).destroy()
        handles.drop(queue)
        queue_flags.pop(number_of(queue), None)

    @api
    def vnpuQueueSynchronize(queue):
        look(("queue", queue)).synchronize()

    @api
    def vnpuQueueWaitEvent(queue, event):
        q, e = look(("queue", queue), ("event", event))
        q.wait(e)

    @api
    def vnpuMemcpyHtoDAsync(dst, dst_offset, src, nbytes, queue):
        q, b = look(("queue", queue), ("buffer", dst))
        q.copy_to_device(b, host_bytes(src, nbytes, "src"), offset=int(dst_offset))

    @api
    def vnpuMemcpyDtoHAsync(dst, src, src_offset, nbytes, queue):
        q, b = look(("queue", queue), ("buffer", src))
        q.copy_to_host(b, out=host_bytes(dst, nbytes, "dst"), offset=int(src_offset))

    @api
    def vnpuMemcpyPeerAsync(dst, dst_offset, src, src_offset, nbytes, queue):
        # another platform's source is InvalidHandle here, before the driver could book the copy on the wrong
        # switch (or two threads copying both ways deadlock on the cards' locks)
        q, d, s = look(("queue", queue), ("buffer", dst), ("buffer", src))
        q.copy_peer(d, s, nbytes=int(nbytes), dst_offset=int(dst_offset), src_offset=int(src_offset))

    @api
    def vnpuLaunchKernel(queue, kernel, args, nargs, cycles):
        q, k = look(("queue", queue), ("kernel", kernel))
        if nargs < 0 or (nargs > 0 and args == ffi.NULL):
            raise E.InvalidArgument(f"args is NULL or nargs ({nargs}) is negative")
        values = []
        for i in range(nargs):
            a = args[i]
            if a.kind == ARG_BUFFER:
                values.append(look(("queue", queue), ("buffer", a.buffer))[1])
            elif a.kind == ARG_INT:
                values.append(int(a.i))
            elif a.kind == ARG_FLOAT:
                values.append(float(a.f))   # the driver checks it against the argument's type (f32 range)
            else:
                raise E.InvalidArgument(f"args[{i}].kind is {a.kind}: not VNPU_ARG_BUFFER, _INT or _FLOAT")
        # last_result is the queue's (None after a failed launch): another thread's launch on it must not come
        # between it and the read
        with q.device.lock:
            q.launch(k, *values)
            result = q.last_result
        if cycles != ffi.NULL:
            cycles[0] = result.cycles if result is not None else 0

    # --- events -----------------------------------------------------------------------------------------
    @api
    def vnpuEventRecord(queue, event):
        q = look(("queue", queue))
        need(event, "event")
        out_handle(event, handles.add("event", q.record()))

    @api
    def vnpuEventSynchronize(event):
        look(("event", event)).synchronize()

    @api
    def vnpuEventQuery(event):
        if not look(("event", event)).query():
            raise NotReady

    @api
    def vnpuEventElapsedTime(ns, start, end):
        e0, e1 = look(("event", start), ("event", end))
        need(ns, "ns")
        later = e0 if e0.time_ns > e1.time_ns else e1
        if not later.query():       # as cuEventElapsedTime: not before both are reached; counts as a poll
            raise NotReady
        ns[0] = e1.elapsed_ns(e0)

    @api
    def vnpuEventDestroy(event):
        look(("event", event))
        handles.drop(event)

    # --- compiled programs ------------------------------------------------------------------------------
    @api
    def vnpuProgramLoad(platform, path_ptr, program):
        p = handles.get("platform", platform)
        file = path(path_ptr, "path")
        need(program, "program")
        # the runtime, at call time: see the module's docstring
        from vnpu.runtime.graph.bundle import load_program
        prog = load_program(file, platform=p)    # a damaged or foreign file is its typed error (bundle.py)
        out_handle(program, handles.add("program", LoadedProgram(prog)))

    @api
    def vnpuProgramUnload(program):
        look(("program", program))
        handles.drop(program)

    @api
    def vnpuProgramGetInputCount(program, count):
        out(count, "count", len(look(("program", program)).inputs))

    @api
    def vnpuProgramGetOutputCount(program, count):
        out(count, "count", len(look(("program", program)).outputs))

    def tensor_info(tensors, what, index, info):
        i = int(index)
        if not 0 <= i < len(tensors):
            raise E.InvalidArgument(f"{what} index {i} is not in 0..{len(tensors) - 1} (the program has "
                                    f"{len(tensors)} {what}s)")
        need(info, "info")
        t = tensors[i]
        if len(t.shape) > MAX_DIMS:
            raise E.InvalidArgument(f"{what} {i} {t.describe()} has {len(t.shape)} dimensions; vnpuTensorInfo holds "
                                    f"VNPU_MAX_DIMS ({MAX_DIMS})")
        if t.code is None:
            raise E.InvalidArgument(f"{what} {i} {t.describe()} has a dtype no vnpuDtype names")
        info.ndim, info.dtype, info.nbytes, info.name = len(t.shape), t.code, t.nbytes, t.c_name
        for d in range(MAX_DIMS):
            info.dims[d] = t.shape[d] if d < len(t.shape) else 0

    @api
    def vnpuProgramGetInputInfo(program, index, info):
        tensor_info(look(("program", program)).inputs, "input", index, info)

    @api
    def vnpuProgramGetOutputInfo(program, index, info):
        tensor_info(look(("program", program)).outputs, "output", index, info)

    def host_tensors(tensors, what, ptrs, sizes, n, ptrs_name, sizes_name):
        """The (pointer, tensor) pairs of a run's inputs or outputs, every count, pointer and size checked."""
        if n != len(tensors):
            raise E.InvalidArgument(f"n{what}s is {n}; the program has {len(tensors)} {what}s "
                                    f"({', '.join(t.name for t in tensors) or 'none'})")
        if n and ptrs == ffi.NULL:
            raise E.InvalidArgument(f"{ptrs_name} is NULL")
        if n and sizes == ffi.NULL:
            raise E.InvalidArgument(f"{sizes_name} is NULL")
        pairs = []
        for i, t in enumerate(tensors):
            if int(sizes[i]) != t.nbytes:
                raise E.InvalidArgument(f"{sizes_name}[{i}] is {int(sizes[i])}; {what} {i} {t.describe()} takes "
                                        f"exactly {t.nbytes}")
            if t.nbytes and ptrs[i] == ffi.NULL:
                raise E.InvalidArgument(f"{ptrs_name}[{i}] ({what} {t.name!r}) is NULL")
            pairs.append((ptrs[i], t))
        return pairs

    @api
    def vnpuProgramRun(program, inputs, input_nbytes, ninputs, outputs, output_nbytes, noutputs):
        lp = look(("program", program))
        ins = host_tensors(lp.inputs, "input", inputs, input_nbytes, int(ninputs), "inputs", "input_nbytes")
        outs = host_tensors(lp.outputs, "output", outputs, output_nbytes, int(noutputs), "outputs",
                            "output_nbytes")
        arrays = [np.frombuffer(ffi.buffer(ptr, t.nbytes), dtype=t.dtype).reshape(t.shape).copy() if t.nbytes
                  else np.zeros(t.shape, t.dtype) for ptr, t in ins]          # copies: the host may reuse its memory
        with lp.lock:
            got = lp.program.run(*arrays)
            got = list(got) if isinstance(got, tuple) else [got]
            latency = lp.program.profile().latencies_ns()[0]
            results = []
            for (ptr, t), a in zip(outs, got):
                a = np.ascontiguousarray(a)
                if a.shape != t.shape or a.dtype != t.dtype:
                    raise RuntimeError(f"output {t.describe()} came back as {a.dtype}{list(a.shape)}")
                results.append((ptr, a))
            for ptr, a in results:          # every output is ready before the first is written
                if a.nbytes:
                    ffi.memmove(ptr, a, a.nbytes)
            lp.latency_ns = float(latency)

    @api
    def vnpuProgramGetLatencyNs(program, ns):
        lp = look(("program", program))
        need(ns, "ns")
        if lp.latency_ns is None:
            raise NotReady("the program has not run yet (no vnpuProgramRun has succeeded)")
        ns[0] = lp.latency_ns

    return handles
