"""Devices: the driver API a host runtime calls (the handles are in driver/handles.py, queues in queue.py).

Shaped like CUDA's driver API and Glow's DeviceManager: a device has a primary context (what
`device.alloc` and `device.load` use) and may create more, each with its own address space. Handles are
checked on every call: a freed buffer, an unloaded module, a handle of another card or context, or any
handle from before a `device.reset()` is InvalidHandle. A device fault is sticky: the next call on that
device raises it until `device.reset()`. A failed call changes nothing.

The device's state (lost, the sticky fault, the launch booking, its contexts and queues) changes only
through its own methods: lose, set_fault, reset, book_launch, and the driver-internal _new_queue,
_forget_queue, _forget_context and _reset_clock that handles, queues and the platform call.
"""
from __future__ import annotations

import threading

from vnpu.errors import DeviceFault, DeviceLost, InvalidArgument, VnpuError

from . import validate
from .handles import MEMORIES, Buffer, Context, Kernel, Module, _module_of  # noqa: F401  (old import path)
from .queue import Queue


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
        self._power = PowerTimeline(self)  # booked launches' watts: the power cap's window (operating_point)
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

    def book_launch(self, ready_ns: float, cycles, clock_ghz=None) -> tuple[float, float]:
        """Book the card for a launch of `cycles` card cycles that is ready at ready_ns (virtual ns). The card
        runs one launch at a time: it starts when the card is free and the platform's launch overhead has
        passed; its cycles take cycles / clock_ghz (default: the card's clock; `operating_point` chooses a
        lower one under the power cap). Returns (start_ns, end_ns); busy_until_ns becomes end_ns."""
        with self.lock:
            start = max(ready_ns, self._busy_until_ns) + self.platform.config["launch_overhead_ns"]
            end = start + cycles / (clock_ghz or self.config.clock_ghz)
            self._busy_until_ns = end
            return start, end

    def compute(self, fn, sanitize=None):
        """Run fn(card), a host function launching library kernels on this card, without booking any time:
        (fn's result, its LaunchResults in order), for `Queue.book`. A device fault is sticky and raised.
        The launches run under the race sanitizer when `sanitize` (None: the platform's `sanitize`, off by
        default) and record trace events only while the platform's trace is on."""
        if sanitize is None:
            sanitize = self.platform.sanitize
        with self.lock:
            self.check()
            try:
                with self.card.recording(trace=self.platform.trace.enabled, sanitize=sanitize) as launches:
                    value = fn(self.card)
            except DeviceFault as fault:
                self.set_fault(fault)
                raise
            return value, list(launches)

    def book_result(self, ready_ns: float, result) -> tuple[float, float, float]:
        """Book a launch's result on the card at the operating point the power cap allows (`operating_point`):
        it starts as `book_launch` starts it, its cycles take cycles / the chosen clock, and its (start, end,
        watts, clock, joules) joins the card's power timeline (`power_timeline`). Counts a slowed launch in
        stats.throttled. Returns (start_ns, end_ns, average watts)."""
        with self.lock:
            start = max(ready_ns, self._busy_until_ns) + self.platform.config["launch_overhead_ns"]
            clock, watts = self.operating_point(result, start)
            self.stats.throttled += clock < self.config.clock_ghz
            end = start + result.cycles / clock
            self._busy_until_ns = end
            self._power.book(start, end, watts, clock)
            return start, end, watts

    def operating_point(self, result, start_ns=None):
        """(clock_ghz, average watts) a launch starting at start_ns (default: when the card could next start one)
        runs at under the platform's power cap (DVFS; docs/power.md section 7a). The cap bounds the card's average
        power over every window of `power_window_us` of virtual time: its booked launches at their average watts,
        the idle card's watts between them (and before the first). The launch runs at the card's own clock when
        every window ending inside it, or in the window after it with the card then drawing what any launch draws
        at the lowest operating point (or the cap, if less), stays within the cap; else at the highest of its
        lower operating points for which they do (the lowest when none does). Looking a window ahead keeps the
        lowest point always enough for the next launch, so a burst now never forces the cap to be broken later.
        Cycles stay cycles; time stretches."""
        from vnpu.emulator.power import launch_energy
        cap = self.platform.config.get("power_cap_w")
        nominal = launch_energy(result)["average_w"]
        if cap is None:
            return self.config.clock_ghz, nominal
        if start_ns is None:
            start_ns = self._busy_until_ns + self.platform.config["launch_overhead_ns"]
        pw = self._power
        after = max(pw.idle_w, min(pw.lowest_peak_w, cap))

        def fits(clock, watts):
            return pw.peak_window_w(start_ns, start_ns + result.cycles / clock, watts, after, cap) <= cap

        if fits(self.config.clock_ghz, nominal):
            return self.config.clock_ghz, nominal
        choice = None
        for f in sorted((p[0] for p in self.config.power.operating_points if p[0] < self.config.clock_ghz),
                        reverse=True):
            choice = (f, launch_energy(result, clock_ghz=f)["average_w"])
            if fits(*choice):
                break
        return choice if choice is not None else (self.config.clock_ghz, nominal)

    def power_timeline(self):
        """The card's booked launches since the clock was last reset, in time order (at most the last
        PowerTimeline.KEEP): [(start_ns, end_ns, watts, clock_ghz)]; the card idles between them at
        `idle_w`."""
        with self.lock:
            return list(self._power.log)

    @property
    def last_booking(self):
        """(start_ns, end_ns, watts, clock_ghz) of the card's last booked launch (None before the first)."""
        log = self._power.log
        return log[-1] if log else None

    @property
    def idle_w(self) -> float:
        """The watts of the idle card at its own clock (emulator/power.py idle_power)."""
        return self._power.idle_w

    def _new_queue(self, ctx, sanitize):
        """Context.queue(): a new queue of ctx, visited by synchronize, reset and reset_clock."""
        with self.lock:
            q = Queue(ctx, sanitize=sanitize)
            self._queues.append(q)
            return q

    def _forget_queue(self, q):
        """Queue.destroy(): synchronize, reset and reset_clock no longer visit it."""
        with self.lock:
            if q in self._queues:
                self._queues.remove(q)

    def _forget_context(self, ctx):
        """Context.destroy()."""
        with self.lock:
            self.contexts.pop(ctx.id, None)

    @property
    def queues(self):
        """The live queues of this device (a copy)."""
        return list(self._queues)

    def _reset_clock(self):
        """Platform.reset_clock(): the card and its queues back to virtual time 0."""
        with self.lock:
            self._busy_until_ns = 0.0
            self._power = PowerTimeline(self)
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

    def release_memory(self):
        """Free everything the card holds in host memory now (the C API's vnpuPlatformClose: C has no garbage
        collector). For a card that is lost (a closed platform): a live card is reset() instead."""
        with self.lock:
            if not self._lost:
                raise InvalidArgument(f"release_memory: card {self.index} is not lost; reset() it instead")
            self.card.reset()

    def synchronize(self):
        for q in list(self._queues):
            q.synchronize()


class PowerTimeline:
    """A card's power over virtual time for the power cap (docs/power.md section 7a): its booked launches, each
    at its average watts, and the idle card's watts (at its own clock) everywhere else, before the first launch
    too. `peak_window_w` is the highest average over a window of `power_window_us` ending inside a candidate
    launch or in the window after it, assuming the card then draws `after_w`: exact, since the power is piecewise
    constant (a window's average is piecewise linear in where it ends, so its maximum is at a breakpoint)."""

    KEEP = 100_000              # launches power_timeline() keeps (the window itself needs only its own span)

    def __init__(self, device):
        from collections import deque

        from vnpu.emulator.power import idle_power, peak_power
        cfg = device.config
        self.idle_w = idle_power(cfg)
        lowest = min(p[0] for p in cfg.power.operating_points)
        self.lowest_peak_w = peak_power(cfg, clock_ghz=lowest)["w"]   # the most a launch draws at the lowest point
        self.window_ns = float(device.platform.config.get("power_window_us", 1000.0)) * 1e3
        self.log = deque(maxlen=self.KEEP)      # (start_ns, end_ns, watts, clock_ghz) of every booked launch
        self.recent = deque()                   # (start_ns, end_ns, watts) still inside a window of the present

    def book(self, start, end, watts, clock):
        self.log.append((start, end, watts, clock))
        self.recent.append((start, end, watts))
        while self.recent and self.recent[0][1] <= end - self.window_ns:
            self.recent.popleft()

    def _pieces(self, lo, hi):
        """The power over [lo, hi) as contiguous (from, to, watts) pieces, idle between booked launches."""
        out, t = [], lo
        for s, e, w in self.recent:
            if e <= t or s >= hi:
                continue
            if s > t:
                out.append((t, s, self.idle_w))
            out.append((max(s, t), min(e, hi), w))
            t = min(e, hi)
        if t < hi:
            out.append((t, hi, self.idle_w))
        return out

    def peak_window_w(self, start, end, watts, after_w, cap=None):
        """The highest average power over a window [t - W, t], t from start to end + W, if a launch of `watts` ran
        over [start, end) after the booked ones (which all end by start) and the card drew after_w after it.
        With `cap`: an upper bound of it instead when that bound is already within cap (cheaper; what
        `Device.operating_point` compares with the cap)."""
        W = self.window_ns
        leaving = self._pieces(start - W, start) + [(start, end, watts)]     # where the window's start passes
        entering = [(start, end, watts), (end, end + W, after_w)]            # where its end passes
        energy = sum((b - a) * w for a, b, w in leaving[:-1])               # the window ending at start
        if cap is not None:
            # a bound first (the common case, far from the cap): what leaves the window draws at least its
            # lowest piece; when even the bound fits, the exact walk is not needed
            low = min(w for _, _, w in leaving)
            bound = energy + max(0.0, watts - low) * (end - start) + max(0.0, after_w - low) * W
            if bound <= cap * W:
                return bound / W
        best, t, i, j = energy, start, 0, 0
        while t < end + W and j < len(leaving):
            # the window's end moves on to the next breakpoint of either the piece it is in or the piece its
            # start is in
            step = min(entering[i][1] - t, leaving[j][1] - (t - W))
            if step > 0:
                energy += (entering[i][2] - leaving[j][2]) * step
                t += step
                best = max(best, energy)
            if entering[i][1] - t <= 1e-9 * W and i + 1 < len(entering):
                i += 1
            if leaving[j][1] - (t - W) <= 1e-9 * W:
                j += 1
        return best / W


class DeviceStats:
    """What ran on a card: launches and virtual time per kernel, unit busy cycles, bytes per memory level."""

    UNITS = ("pe", "matrix", "vector", "dma", "embedding")

    def __init__(self):
        self.reset()

    def reset(self):
        self.kernels = {}          # name -> [launches, virtual ns]
        self.throttled = 0         # launches slowed to a lower operating point by the power cap
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


__all__ = ["Device", "DeviceStats", "Context", "Buffer", "Module", "Kernel", "VnpuError"]
