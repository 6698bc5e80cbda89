"""Queues and events: asynchronous copies and launches in virtual time.

Every operation gets a start and an end in the platform's virtual nanoseconds: it is ready when its
queue's previous operation ended, when the events it waits on were reached, and when the host thread
that issued it had got to (its own clock moves only when it synchronizes); copies then book the PCIe
segments they cross (driver/pcie.py), launches book the card (one launch at a time per card).

The data is moved (and a kernel run) when the call is made, in the calling thread; launches on different
cards run in parallel on the host's cores (the Numba core releases the GIL). A device fault in a launch
does not raise from `launch`: like an asynchronous error on a real device, it is raised by the next call on
that device and stays until `device.reset()`.
"""
from __future__ import annotations

import itertools

import numpy as np

from vnpu.errors import DeviceFault, InvalidArgument, InvalidHandle

from . import faults, pcie, validate
from .handles import Buffer, Event, Kernel

_ids = itertools.count()


class Queue:
    """An in-order queue of one context of one device (a CUDA stream, an XRT run list)."""

    def __init__(self, ctx, sanitize=None):
        self._ctx = ctx
        self._sanitize = sanitize        # None: follow the platform's default
        self.device = ctx.device
        self.platform = self.device.platform
        self.id = next(_ids)
        self._tail_ns = 0.0
        self._waits = []
        self.destroyed = False
        self.last_result = None          # the last successful launch's result (None after a failed one)
        self.last_launches = []          # the launches of the last `run`
        self.last_bookings = []          # where and at what operating point each of them was booked

    def __repr__(self):
        return f"Queue({self.id}, card {self.device.index}, at {self.tail_ns:.0f} ns)"

    @property
    def tail_ns(self) -> float:
        """When the queue's last operation ends (virtual ns)."""
        return self._tail_ns

    def _catch_up(self, t_ns):
        """Device.reset(): the queue continues from t_ns (the host's present) or later."""
        self._tail_ns = max(self._tail_ns, t_ns)

    def _rewind_clock(self):
        """Platform.reset_clock(): back to virtual time 0, forgetting pending waits on older events."""
        self._tail_ns = 0.0
        self._waits = []

    @property
    def sanitize(self) -> bool:
        """Whether launches on this queue run under the race sanitizer unless `launch(sanitize=...)` says
        otherwise: the queue's own setting (`device.queue(sanitize=...)`), else the platform's default."""
        return self.platform.sanitize if self._sanitize is None else self._sanitize

    @property
    def ctx(self):
        """A queue of the primary context survives device.reset() (it follows the new primary context)."""
        return self.device.primary if self._ctx.id == 0 else self._ctx

    def _check(self):
        if self.destroyed:
            raise InvalidHandle(f"queue {self.id} of card {self.device.index} was destroyed")
        self.ctx.check()

    def _now(self):
        """Where this queue is: its last operation's end or the issuing host thread's present."""
        return max(self._tail_ns, self.platform.host_ns)

    def _ready(self):
        t = self._now()
        for e in self._waits:
            t = max(t, e.time_ns)
        self._waits = []
        return t

    def wait(self, event: Event):
        """Later operations on this queue start after `event` (which may be of another queue or card)."""
        if not isinstance(event, Event):
            raise InvalidArgument(f"wait needs an Event, got {type(event).__name__}")
        if event.queue.platform is not self.platform:
            raise InvalidHandle("wait: the event belongs to another platform (its virtual clock is not this "
                                "platform's)")
        self._check()
        self._waits.append(event)

    def record(self) -> Event:
        """An event at the point the queue has reached: its last operation's end, or the host's present when
        the queue is idle (like an event recorded on an idle CUDA stream)."""
        self._check()
        return Event(self, max([self.tail_ns, self.platform.host_ns] + [e.time_ns for e in self._waits]))

    def synchronize(self):
        """The host waits for everything on this queue; raises the device's sticky fault, if any."""
        if self.destroyed:
            raise InvalidHandle(f"queue {self.id} of card {self.device.index} was destroyed")
        self.device.check()
        self.platform.trace.api("synchronize", self.platform.host_ns, {"card": self.device.index, "queue": self.id,
                                                                       "until_ns": self.tail_ns})
        self.platform.advance_host(self.tail_ns)

    def destroy(self):
        """Wait for the queue's work, then forget the queue (like cuStreamDestroy); later calls on it are
        InvalidHandle. The device's synchronize and reset no longer visit it."""
        self.synchronize()
        with self.device.lock:
            self.device._forget_queue(self)
            self.destroyed = True

    # --- copies ------------------------------------------------------------------------------------------
    @staticmethod
    def _host_bytes(array, what):
        return validate.host_array(array, what)

    @staticmethod
    def _count(value, what, name):
        """A byte offset or size: a non-negative Python or numpy integer (not a bool, not a float)."""
        return validate.count(value, f"{what}: {name}")

    def _buffer(self, buf, what):
        if not isinstance(buf, Buffer):
            raise InvalidArgument(f"{what}: expected a Buffer, got {type(buf).__name__}")
        buf.check(self.ctx)
        return buf

    def copy_to_device(self, buf, array, offset: int = 0):
        """Copy a host array into `buf` at byte `offset` (async in virtual time). Returns the end Event."""
        a = self._host_bytes(array, "copy_to_device")
        offset = self._count(offset, "copy_to_device", "offset")
        with self.device.lock:
            self._check()
            self._buffer(buf, "copy_to_device")
            if offset < 0 or offset + a.nbytes > buf.nbytes:
                raise InvalidArgument(f"copy_to_device: {a.nbytes} bytes at offset {offset} do not fit the "
                                      f"{buf.nbytes}-byte buffer")
            replays = faults.before_copy(self.device, "copy_to_device", a.nbytes, self._now())
            if a.nbytes:
                self.device.card.write(buf.device_address + offset, a.view(np.uint8).reshape(-1), ctx=self.ctx.id)
            return self._transfer("h2d", a.nbytes, f"copy_to_device {a.nbytes} B", replays)

    def copy_to_host(self, buf, out=None, dtype=None, offset: int = 0):
        """Copy `buf` (from byte `offset`) into `out`, or into a new array of the buffer's size (uint8, or
        `dtype`); returns the host array, filled by the time the queue reaches this copy."""
        offset = self._count(offset, "copy_to_host", "offset")
        if out is None:
            dt = validate.host_dtype(np.uint8 if dtype is None else dtype, "copy_to_host: dtype")
        else:
            out = validate.out_array(out, "copy_to_host: out")
            if dtype is not None and validate.host_dtype(dtype, "copy_to_host: dtype") != out.dtype:
                raise InvalidArgument(f"copy_to_host: dtype {validate.show(dtype)} disagrees with out's dtype "
                                      f"{out.dtype} (give one of them)")
        with self.device.lock:
            self._check()
            self._buffer(buf, "copy_to_host")
            if offset > buf.nbytes:
                raise InvalidArgument(f"copy_to_host: offset {offset} is past the end of the {buf.nbytes}-byte buffer")
            if out is None:
                if (buf.nbytes - offset) % dt.itemsize:
                    raise InvalidArgument(f"copy_to_host: {buf.nbytes - offset} bytes are not whole {dt} elements")
                out = np.empty((buf.nbytes - offset) // dt.itemsize, dtype=dt)
            if offset < 0 or offset + out.nbytes > buf.nbytes:
                raise InvalidArgument(f"copy_to_host: {out.nbytes} bytes at offset {offset} run past the "
                                      f"{buf.nbytes}-byte buffer")
            replays = faults.before_copy(self.device, "copy_to_host", out.nbytes, self._now(), reads_card_dram=True)
            if out.nbytes:
                out.reshape(-1).view(np.uint8)[:] = self.device.card.read(buf.device_address + offset, out.nbytes,
                                                                           ctx=self.ctx.id)
            self._transfer("d2h", out.nbytes, f"copy_to_host {out.nbytes} B", replays)
            return out

    def copy_peer(self, dst, src, nbytes=None, dst_offset=0, src_offset=0):
        """Copy src (on any card) into dst (on this queue's card) through the switch, not the host."""
        if not isinstance(dst, Buffer) or not isinstance(src, Buffer):
            raise InvalidArgument("copy_peer needs two Buffers")
        dst_offset = self._count(dst_offset, "copy_peer", "dst_offset")
        src_offset = self._count(src_offset, "copy_peer", "src_offset")
        if nbytes is not None:
            nbytes = self._count(nbytes, "copy_peer", "nbytes")
        if src.device.platform is not self.platform:
            raise InvalidArgument("copy_peer: the source buffer is on another platform (cards of different "
                                  "platforms share no switch)")
        n = min(dst.nbytes - dst_offset, src.nbytes - src_offset) if nbytes is None else nbytes
        first, second = sorted([self.device, src.device], key=lambda d: d.index)   # lock order: no deadlock
        with first.lock, second.lock:
            self._check()
            self._buffer(dst, "copy_peer destination")
            src.device.check()
            src.check()
            if n < 0 or dst_offset < 0 or src_offset < 0 or n + dst_offset > dst.nbytes or n + src_offset > src.nbytes:
                raise InvalidArgument(f"copy_peer: {n} bytes (at offsets {src_offset} -> {dst_offset}) do not fit "
                                      f"(source {src.nbytes}, destination {dst.nbytes} bytes)")
            replays = faults.before_copy(src.device, "copy_peer", n, self._now(), reads_card_dram=True)
            replays += faults.before_copy(self.device, "copy_peer", 0, self._now())
            data = src.device.card.read(src.device_address + src_offset, n, ctx=src.ctx.id)
            self.device.card.write(dst.device_address + dst_offset, data, ctx=self.ctx.id)
            if src.device is self.device:   # an on-card copy: DRAM to DRAM, no PCIe (so no replays)
                ready = self._ready()
                end = ready + pcie.on_card_copy_ns(n, self.device.card, src.device_address + src_offset,
                                                   dst.device_address + dst_offset)
                return self._finish("copy_peer (on card)", ready, end, "queue")
            return self._transfer("p2p", n, f"copy_peer {n} B from card {src.device.index}", replays,
                                  card=src.device.index, peer=self.device.index)

    def _transfer(self, kind, nbytes, name, replays=0, card=None, peer=None):
        """Book a PCIe copy on the switch (driver/pcie.py times it, link-layer replays included)."""
        card = self.device.index if card is None else card
        with self.platform.lock:
            ready = self._ready()
            start, end = self.platform.switch.copy(kind, card, nbytes, ready, peer_index=peer, replays=replays)
            self.platform.trace.link(kind, card, start, end, nbytes, peer=peer)
        return self._finish(name, ready, end, "queue")

    def _finish(self, name, ready, end, what, args=None):
        # the host call itself, at the issuing thread's virtual time, then the operation on the queue
        self.platform.trace.api(f"{what}: {name}", self.platform.host_ns, {"card": self.device.index,
                                                                            "queue": self.id})
        self.platform.trace.queue_op(self, name, ready, end, args)
        self._tail_ns = end
        return Event(self, end)

    # --- launches ------------------------------------------------------------------------------------------
    def launch(self, kernel, *args, pes=None, sanitize=None):
        """Run `kernel` on this queue's card with arguments checked against its signature. Returns the end
        Event; a device fault is raised by the next call on the device (and stays until reset).

        pes: the PEs to run on (distinct PE numbers; None: every PE). sanitize: run under the race sanitizer
        (a race is RaceError, sticky like any device fault); None: the queue's default (`queue.sanitize`)."""
        if not isinstance(kernel, Kernel):
            raise InvalidArgument(f"launch needs a Kernel (module['name']), got {type(kernel).__name__}")
        sanitize = validate.flag(sanitize, "launch: sanitize", allow_none=True)
        pes = validate.pes(pes, self.device.config.pes, name="launch: pes")
        with self.device.lock:
            self._check()
            kernel.module.check(self.ctx)
            values = kernel.encode_args(self.ctx, args)
            if sanitize is None:
                sanitize = self.sanitize
            faults.before_launch(self.device, self._now())
            self.last_result = None
            ready = self._ready()
            trace = self.platform.trace.enabled
            if faults.launch_hangs(self.device, kernel.name):
                # a PE never halts: the watchdog stops the launch; reported on the next call, like any fault
                _, end = self.device.book_launch(ready, self.device.config.watchdog_cycles)
                return self._finish(f"{kernel.name} (hung)", ready, end, "launch")
            try:
                result = self.device.card.launch(kernel.module.loaded, kernel.name, values, pes=pes,
                                                 sanitize=sanitize, trace=trace, ctx=self.ctx.id,
                                                 engine=self.platform.engine)
            except DeviceFault as fault:
                self.device.set_fault(fault)
                _, end = self.device.book_launch(ready, 0)
                return self._finish(f"{kernel.name} (faulted: {type(fault).__name__})", ready, end, "launch")
            _, end = self._book_result(ready, result, kernel.name)
            self.last_result = result
            return self._finish(kernel.name, ready, end, "launch", {"cycles": result.cycles})

    def _book_result(self, at, result, name):
        """A finished launch onto the card's timeline (under the device lock), at the operating point the power
        cap allows (DVFS), with its power track, an injected DRAM error in what it read, stats and trace.
        Returns (start_ns, end_ns)."""
        start, end, watts = self.device.book_result(at, result)
        self.platform.trace.power(self.device, start, end, watts)
        faults.after_launch(self.device, name, result.card_stats[0])   # S_DRAM_RD: what it read
        self.device.stats.add(name, end - start, result.summary())
        self.platform.trace.launch(self, name, start, result)
        return start, end

    def run(self, fn, name):
        """Run `fn(card)`, a host function that launches library kernels on this queue's card (vnpu.ops, the
        kernels' host functions: they place their operands, launch and read back through the emulated card),
        as one operation of this queue: every launch it makes is booked on the card in order, as `launch`
        books one, and traced. Returns (fn's result, the end Event). The host glue fn runs around the launches
        (layout changes of the operands) costs no virtual time; docs/deviations.md 13.
        A device fault raised by a launch is sticky, as for `launch`, and raised here."""
        if not callable(fn):
            raise InvalidArgument(f"run needs a callable fn(card), got {type(fn).__name__}")
        with self.device.lock:
            self._check()
            value, launches = self.device.compute(fn, sanitize=self.sanitize)
            return value, self.book(launches, name)

    def book(self, launches, name):
        """Book launches `Device.compute` already ran (LaunchResults of this queue's card) as one operation of
        this queue, as `run` books them: the card's timeline, the power cap, stats and trace. Returns the end
        Event. (An executor can emulate its cards in parallel and book their work in a fixed order.)"""
        with self.device.lock:
            self._check()
            faults.before_launch(self.device, self._now())
            ready = self._ready()
            start = end = None
            self.last_bookings = []          # each launch as booked: Device.last_booking
            for result in launches:
                at = ready if start is None else end
                if faults.launch_hangs(self.device, result.kernel):
                    # as `launch`: a PE never halts, the watchdog stops it (its time booked), the fault is sticky
                    # (raised by the device's next call) and the op's later launches never run
                    s, end = self.device.book_launch(at, self.device.config.watchdog_cycles)
                    start = s if start is None else start
                    break
                s, end = self._book_result(at, result, result.kernel)
                self.last_bookings.append(self.device.last_booking)
                start = s if start is None else start
                if self.device.fault is not None:
                    break
            self.last_result = launches[-1] if launches else None
            self.last_launches = list(launches)      # every launch booked (the model compiler's profile)
            if end is None:                  # nothing launched (a host-side reshape): no card time
                end = ready
            return self._finish(name, ready, end, "launch", {"launches": len(launches),
                                                             "cycles": sum(r.cycles for r in launches)})

    def store(self, buf, array, offset: int = 0):
        """Write `array`, a result a launch on this card just produced, into the device buffer buf without a
        transfer (the launch's cycles covered writing it; `run`'s kernels return their results to the host
        side of the emulator, this puts them where the driver's buffers are). Returns an Event at the queue's
        present."""
        a = self._host_bytes(array, "store")
        offset = self._count(offset, "store", "offset")
        with self.device.lock:
            self._check()
            self._buffer(buf, "store")
            if offset + a.nbytes > buf.nbytes:
                raise InvalidArgument(f"store: {a.nbytes} bytes at offset {offset} do not fit the {buf.nbytes}-byte "
                                      f"buffer")
            if a.nbytes:
                self.device.card.write(buf.device_address + offset, a.view(np.uint8).reshape(-1), ctx=self.ctx.id)
            return Event(self, self._now())


__all__ = ["Queue", "Event", "InvalidHandle"]
