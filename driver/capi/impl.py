"""The C API's functions, written in Python over the driver (vnpu.h declares them; build.py compiles them).

Each function is registered with cffi's `def_extern` and wrapped by `_api`: the Python driver raises a
VnpuError, the C caller gets its status code and vnpuGetLastErrorMessage() gets its message. Handles are
numbers in a table (kind in the top 16 bits), never pointers, so a C program that passes a freed, made-up
or wrong-kind handle gets VNPU_ERROR_INVALID_HANDLE instead of a crash.
"""
from __future__ import annotations

import functools
import itertools
import math
import os
import sys
import threading
import traceback

import numpy as np

import vnpu
from vnpu import errors as E

API_VERSION = 1

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
F32_MAX = float(np.finfo(np.float32).max)


def status_of(exc: BaseException) -> int:
    for cls, code in _ERROR_STATUS:
        if isinstance(exc, cls):
            return code
    return STATUS["VNPU_ERROR_INTERNAL"]


class NotReady(Exception):
    """vnpuEventQuery's 'not yet': a status, not an error message."""


class Closed:
    """What the handles of a closed platform point to instead of its objects: the C side cannot free them
    any more (every call on the platform is DeviceLost), so the table must not keep the cards' memory alive."""

    def __init__(self, message):
        self.message = message


# the platform of what a handle of each kind stands for
PLATFORM_OF = {"device": lambda d: d.platform, "buffer": lambda b: b.device.platform,
               "module": lambda m: m.device.platform, "kernel": lambda k: k.module.device.platform,
               "queue": lambda q: q.platform, "event": lambda e: e.queue.platform}


class Handles:
    """Objects the C side holds, by number. The kind lives in the top 16 bits of the number."""
    KINDS = {"platform": 1, "device": 2, "buffer": 3, "module": 4, "kernel": 5, "queue": 6, "event": 7}

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
            named = self._named.setdefault(int(owner), {})
            if name not in named:
                named[name] = (self.KINDS[kind] << 48) | next(self._serial)
                self._objects[named[name]] = obj
            return named[name]

    def get(self, kind, h):
        obj = self._objects.get(int(h))
        if obj is None or int(h) >> 48 != self.KINDS[kind]:
            what = next((k for k, v in self.KINDS.items() if v == int(h) >> 48), None)
            if obj is not None and what:
                raise E.InvalidHandle(f"handle 0x{int(h):x} is a {what}, not a {kind}")
            raise E.InvalidHandle(f"no {kind} has handle 0x{int(h):x} (never created, freed or destroyed)")
        if isinstance(obj, Closed):
            raise E.DeviceLost(obj.message)
        return obj

    def drop(self, h):
        """Forget h, and the handles named under it (an unloaded module's kernels)."""
        with self._lock:
            self._objects.pop(int(h), None)
            for child in self._named.pop(int(h), {}).values():
                self._objects.pop(child, None)

    def close_platform(self, h, platform):
        """Forget platform handle h; every handle of its objects now stands for a Closed marker (DeviceLost),
        so the table no longer keeps its cards, buffers and modules alive."""
        kind_names = {v: k for k, v in self.KINDS.items()}
        with self._lock:
            self._objects.pop(int(h), None)
            self._named.pop(int(h), None)
            for other, obj in self._objects.items():
                kind = kind_names.get(other >> 48)
                if kind in PLATFORM_OF and not isinstance(obj, Closed) and PLATFORM_OF[kind](obj) is platform:
                    self._objects[other] = Closed(f"the platform of {kind} 0x{other:x} was closed")


def install(ffi):
    """Define every function of vnpu.h on `ffi` (the embedded module's FFI)."""
    handles = Handles()
    local = threading.local()
    names = {code: ffi.new("char[]", name.encode()) for name, code in STATUS.items()}
    unknown_name = ffi.new("char[]", b"VNPU_ERROR_UNKNOWN")
    empty = ffi.new("char[]", b"")

    def fail(code, message):
        local.message = ffi.new("char[]", message.encode("utf-8", "replace"))
        return code

    def api(fn):
        """Register fn as the C function of the same name; exceptions become status codes."""
        @functools.wraps(fn)
        def wrapper(*args):
            try:
                fn(*args)
                return 0
            except NotReady:
                return STATUS["VNPU_ERROR_NOT_READY"]
            except E.VnpuError as e:
                return fail(status_of(e), f"{fn.__name__}: {type(e).__name__}: {e}")
            except Exception as e:   # noqa: BLE001 - never unwind into C; a bug, reported with where it was
                where = traceback.extract_tb(e.__traceback__)[-1]
                return fail(STATUS["VNPU_ERROR_INTERNAL"], f"{fn.__name__}: internal error {type(e).__name__}: "
                            f"{e} ({where.filename}:{where.lineno}); please report it")
        ffi.def_extern(name=fn.__name__)(wrapper)
        return wrapper

    def need(ptr, what):
        if ptr == ffi.NULL:
            raise E.InvalidArgument(f"{what} is NULL")

    def out(ptr, what, value):
        need(ptr, what)
        ptr[0] = value

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

    # --- errors and versions ----------------------------------------------------------------------------
    @ffi.def_extern()
    def vnpuGetErrorName(status):
        return names.get(int(status), unknown_name)

    @ffi.def_extern()
    def vnpuGetLastErrorMessage():
        return getattr(local, "message", empty)

    @api
    def vnpuGetVersion(version):
        out(version, "api_version", API_VERSION)

    # --- platform and devices ---------------------------------------------------------------------------
    @api
    def vnpuPlatformOpen(yaml_path, platform):
        if platform == ffi.NULL:
            raise E.InvalidArgument("platform is NULL")
        p = vnpu.Platform() if yaml_path == ffi.NULL else vnpu.Platform.from_yaml(path(yaml_path, "yaml_path"))
        platform[0] = handles.add("platform", p)

    @api
    def vnpuPlatformOpenCards(card, cards, platform):
        if platform == ffi.NULL:
            raise E.InvalidArgument("platform is NULL")
        platform[0] = handles.add("platform", vnpu.Platform(card=path(card, "card"), cards=int(cards)))

    @api
    def vnpuPlatformClose(platform):
        p = handles.get("platform", platform)
        p.close()
        # C has no garbage collector: forget the platform's objects and the cards' memory now (CUDA's
        # cuCtxDestroy frees what the context held); their handles stay DeviceLost
        handles.close_platform(platform, p)
        for d in p.devices:
            with d.lock:
                d.card.reset()

    @api
    def vnpuDeviceGetCount(platform, count):
        p = handles.get("platform", platform)
        out(count, "count", len(p.devices))

    @api
    def vnpuDeviceGet(platform, index, device):
        p = handles.get("platform", platform)
        if not 0 <= index < len(p.devices):
            raise E.InvalidArgument(f"device index {index} is not in 0..{len(p.devices) - 1}")
        if p.closed:
            raise E.DeviceLost("the platform was closed")
        out(device, "device", 0)     # NULL is an error before a handle is made
        device[0] = handles.add_named("device", platform, int(index), p.devices[index])

    @api
    def vnpuDeviceGetProperties(device, props):
        d = handles.get("device", device)
        if props == ffi.NULL:
            raise E.InvalidArgument("properties is NULL")
        pr = d.properties
        name = pr["name"].encode()[:63]
        ffi.memmove(props.name, name + b"\0", len(name) + 1)
        props.index, props.pes, props.clock_ghz = pr["index"], pr["pes"], pr["clock_ghz"]
        props.dram_bytes, props.shared_sram_bytes = pr["dram_bytes"], pr["shared_sram_bytes"]
        props.local_memory_bytes, props.dma_engines_per_pe = pr["local_memory_bytes"], pr["dma_engines_per_pe"]
        props.vector_width_bits, props.peak_int8_tops = pr["vector_width_bits"], pr["peak_int8_tops"]
        props.dram_gbps = pr["dram_gbps"]
        props.pcie_gen, props.pcie_lanes = int(pr["link"]["gen"]), int(pr["link"]["lanes"])

    @api
    def vnpuDeviceGetStatus(device):
        handles.get("device", device).check()

    @api
    def vnpuDeviceSynchronize(device):
        handles.get("device", device).synchronize()

    @api
    def vnpuDeviceReset(device):
        handles.get("device", device).reset()

    @api
    def vnpuMemGetInfo(device, free_bytes, total_bytes):
        d = handles.get("device", device)
        d.check()
        free, total = d.memory_info()
        need(free_bytes, "free_bytes")      # both checked before either is written
        need(total_bytes, "total_bytes")
        free_bytes[0], total_bytes[0] = free, total

    # --- memory -----------------------------------------------------------------------------------------
    @api
    def vnpuMemAlloc(device, nbytes, buffer):
        d = handles.get("device", device)
        if buffer == ffi.NULL:
            raise E.InvalidArgument("buffer is NULL")
        buffer[0] = handles.add("buffer", d.alloc(int(nbytes)))

    @api
    def vnpuMemFree(buffer):
        handles.get("buffer", buffer).free()
        handles.drop(buffer)

    @api
    def vnpuBufferGetInfo(buffer, device_address, nbytes):
        b = handles.get("buffer", buffer)
        b.check()
        need(device_address, "device_address")      # both checked before either is written
        need(nbytes, "nbytes")
        device_address[0], nbytes[0] = b.device_address, b.nbytes

    # --- modules and kernels ----------------------------------------------------------------------------
    def load(device, module, image):
        d = handles.get("device", device)
        if module == ffi.NULL:
            raise E.InvalidArgument("module is NULL")
        module[0] = handles.add("module", d.load(image))

    @api
    def vnpuModuleLoadData(device, image, nbytes, module):
        load(device, module, bytes(host_bytes(image, nbytes, "image")))

    @api
    def vnpuModuleLoadFile(device, file_path, module):
        load(device, module, path(file_path, "path"))

    @api
    def vnpuModuleLoadAssembly(device, source, module):
        load(device, module, vnpu.assemble(text(source, "source"), source="<vnpuModuleLoadAssembly>"))

    @api
    def vnpuModuleLoadLibrary(device, op, dtype, module):
        from vnpu.kernels.elementwise import module_image
        d = handles.get("device", device)
        d.check()
        load(device, module, module_image(d.card, text(op, "op"), "fp32" if dtype == ffi.NULL else text(dtype, "dtype")))

    @api
    def vnpuModuleUnload(module):
        handles.get("module", module).unload()
        handles.drop(module)

    @api
    def vnpuModuleGetKernel(module, name, kernel):
        m = handles.get("module", module)
        kernel_name = text(name, "name")
        k = m[kernel_name]
        out(kernel, "kernel", 0)
        kernel[0] = handles.add_named("kernel", module, kernel_name, k)

    @api
    def vnpuKernelGetArgCount(kernel, count):
        k = handles.get("kernel", kernel)
        k.module.check()
        out(count, "count", len(k.symbol.args))

    # --- queues, copies, launches -----------------------------------------------------------------------
    @api
    def vnpuQueueCreate(device, queue):
        d = handles.get("device", device)
        if queue == ffi.NULL:
            raise E.InvalidArgument("queue is NULL")
        queue[0] = handles.add("queue", d.queue())

    @api
    def vnpuQueueDestroy(queue):
        handles.get("queue", queue).destroy()
        handles.drop(queue)

    @api
    def vnpuQueueSynchronize(queue):
        handles.get("queue", queue).synchronize()

    @api
    def vnpuQueueWaitEvent(queue, event):
        handles.get("queue", queue).wait(handles.get("event", event))

    @api
    def vnpuMemcpyHtoDAsync(dst, dst_offset, src, nbytes, queue):
        q, b = handles.get("queue", queue), handles.get("buffer", dst)
        q.copy_to_device(b, host_bytes(src, nbytes, "src"), offset=int(dst_offset))

    @api
    def vnpuMemcpyDtoHAsync(dst, src, src_offset, nbytes, queue):
        q, b = handles.get("queue", queue), handles.get("buffer", src)
        q.copy_to_host(b, out=host_bytes(dst, nbytes, "dst"), offset=int(src_offset))

    @api
    def vnpuMemcpyPeerAsync(dst, dst_offset, src, src_offset, nbytes, queue):
        q = handles.get("queue", queue)
        d, s = handles.get("buffer", dst), handles.get("buffer", src)
        if s.device.platform is not q.platform:
            # the cards of two platforms share no switch; the driver would book the copy on the wrong one
            # (and two threads copying both ways could deadlock on the cards' locks)
            raise E.InvalidArgument(f"the source buffer is on card {s.device.index} of another platform; a "
                                    f"peer copy stays within one platform")
        q.copy_peer(d, s, nbytes=int(nbytes), dst_offset=int(dst_offset), src_offset=int(src_offset))

    @api
    def vnpuLaunchKernel(queue, kernel, args, nargs, cycles):
        q, k = handles.get("queue", queue), handles.get("kernel", kernel)
        if nargs < 0 or (nargs > 0 and args == ffi.NULL):
            raise E.InvalidArgument(f"args is NULL or nargs ({nargs}) is negative")
        values = []
        for i in range(nargs):
            a = args[i]
            if a.kind == ARG_BUFFER:
                values.append(handles.get("buffer", a.buffer))
            elif a.kind == ARG_INT:
                values.append(int(a.i))
            elif a.kind == ARG_FLOAT:
                if math.isfinite(a.f) and abs(a.f) > F32_MAX:   # as an int that does not fit its type
                    raise E.InvalidArgument(f"args[{i}].f = {a.f} does not fit an f32")
                values.append(float(a.f))
            else:
                raise E.InvalidArgument(f"args[{i}].kind is {a.kind}: not VNPU_ARG_BUFFER, _INT or _FLOAT")
        # last_result is the queue's: another thread's launch on it must not come between it and the read
        with q.device.lock:
            q.last_result = None
            q.launch(k, *values)
            result = q.last_result
        if cycles != ffi.NULL:
            cycles[0] = result.cycles if result is not None else 0

    # --- events -----------------------------------------------------------------------------------------
    @api
    def vnpuEventRecord(queue, event):
        q = handles.get("queue", queue)
        if event == ffi.NULL:
            raise E.InvalidArgument("event is NULL")
        event[0] = handles.add("event", q.record())

    @api
    def vnpuEventSynchronize(event):
        handles.get("event", event).synchronize()

    @api
    def vnpuEventQuery(event):
        if not handles.get("event", event).query():
            raise NotReady

    @api
    def vnpuEventElapsedTime(ns, start, end):
        e0, e1 = handles.get("event", start), handles.get("event", end)
        out(ns, "ns", e1.elapsed_ns(e0))

    @api
    def vnpuEventDestroy(event):
        handles.get("event", event)
        handles.drop(event)

    return handles
