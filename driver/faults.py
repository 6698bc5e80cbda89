"""Fault injection, seeded and deterministic, per card: what real cards do that is hard to provoke.

| fault | what happens | what the driver reports |
|---|---|---|
| PCIe packet error | the TLP is replayed by the link layer: extra time, no corruption | nothing (counted, corrected) |
| link down | the card's link drops at a virtual time | `DeviceLost` on every later call on that card |
| DRAM single-bit error | ECC corrects it | nothing (counted, corrected) |
| DRAM double-bit error | uncorrectable, in data a copy or launch read | `EccUncorrectable`, sticky until reset |
| PE hang | a launch never finishes; the watchdog stops it | `LaunchTimeout`, sticky until reset |
| DMA engine error | the transfer fails | `DmaFault`, sticky until reset |

Decisions are drawn from a generator seeded by (seed, card index), one draw sequence per operation in the
order the card sees operations, so a run is reproducible. Counters follow real cards' RAS counters:
`device.health()` gives injected, corrected and reported counts per kind.

The queue asks `before_copy`, `before_launch`, `launch_hangs` and `after_launch` (below); they change the
device only through its methods (`Device.lose`, `Device.set_fault`). What a replay costs in time is
driver/pcie.py's (`pcie.replay_ns`), like every other host-side time.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from vnpu.errors import DmaFault, EccUncorrectable, LaunchTimeout

from . import validate
from .pcie import REPLAY_NS, REPLAY_TLP_BYTES as TLP_BYTES, replay_tlps  # noqa: F401  (REPLAY_NS: old name)

KINDS = ("pcie_replay", "link_down", "dram_sbe", "dram_dbe", "pe_hang", "dma_error")


@dataclass
class FaultConfig:
    seed: int = 0
    pcie_error_rate: float = 0.0     # probability that one TLP is corrupted and replayed
    link_down_at_ns: float = -1.0    # the link drops at this virtual time (< 0: never)
    dram_sbe_per_mib: float = 0.0    # expected single-bit errors per MiB read (corrected)
    dram_dbe_per_mib: float = 0.0    # expected double-bit errors per MiB read (uncorrectable)
    pe_hang_rate: float = 0.0        # probability that a launch hangs
    dma_error_rate: float = 0.0      # probability that a copy's DMA fails

    def __post_init__(self):
        # the rules live in driver/validate.py (FAULT_RULES), shared with the platform YAML and the C API
        for f in fields(self):
            object.__setattr__(self, f.name, validate.fault_setting(f.name, getattr(self, f.name)))

    @classmethod
    def from_dict(cls, data):
        return cls(**validate.fault_settings(data))


class FaultInjector:
    def __init__(self, config: FaultConfig, card_index: int):
        self.config = config
        self.rng = np.random.default_rng([int(config.seed), int(card_index)])
        self.injected = dict.fromkeys(KINDS, 0)
        self.corrected = dict.fromkeys(KINDS, 0)
        self.reported = dict.fromkeys(KINDS, 0)

    @property
    def active(self):
        c = self.config
        return any((c.pcie_error_rate, c.dram_sbe_per_mib, c.dram_dbe_per_mib, c.pe_hang_rate, c.dma_error_rate)) \
            or c.link_down_at_ns >= 0

    def link_down(self, t_ns):
        """True once the link is down at virtual time t_ns (counted the first time)."""
        c = self.config
        if c.link_down_at_ns >= 0 and t_ns >= c.link_down_at_ns:
            if not self.injected["link_down"]:
                self.injected["link_down"] = 1
            return True
        return False

    def pcie_replays(self, nbytes):
        """How many TLPs of a transfer of nbytes are corrupted and replayed by the link layer (all corrected);
        their time is pcie.replay_ns(count)."""
        if self.config.pcie_error_rate <= 0 or nbytes <= 0:
            return 0
        n = int(self.rng.binomial(replay_tlps(nbytes), self.config.pcie_error_rate))
        self.injected["pcie_replay"] += n
        self.corrected["pcie_replay"] += n
        return n

    def dram_read(self, nbytes):
        """Errors in nbytes read from DRAM: corrects single-bit ones; True if a double-bit one was hit."""
        mib = nbytes / 2**20
        sbe = int(self.rng.poisson(self.config.dram_sbe_per_mib * mib)) if self.config.dram_sbe_per_mib else 0
        dbe = int(self.rng.poisson(self.config.dram_dbe_per_mib * mib)) if self.config.dram_dbe_per_mib else 0
        self.injected["dram_sbe"] += sbe
        self.corrected["dram_sbe"] += sbe
        self.injected["dram_dbe"] += dbe
        return dbe > 0

    def dma_error(self):
        if self.config.dma_error_rate and self.rng.random() < self.config.dma_error_rate:
            self.injected["dma_error"] += 1
            return True
        return False

    def pe_hang(self):
        if self.config.pe_hang_rate and self.rng.random() < self.config.pe_hang_rate:
            self.injected["pe_hang"] += 1
            return True
        return False

    def report(self, kind):
        self.reported[kind] += 1

    def health(self):
        return {"config": asdict(self.config), "injected": dict(self.injected), "corrected": dict(self.corrected),
                "reported": dict(self.reported)}


# --- what the driver asks before and after an operation: faults reach the device through its methods ------
def before_copy(dev, what, nbytes, now_ns, reads_card_dram=False):
    """Link down, a DMA engine error, or an uncorrectable DRAM error in what the copy reads: raise the typed
    error (DeviceLost, or a sticky DmaFault / EccUncorrectable). Otherwise return how many TLPs the link
    layer replays (0 without faults). Checked before anything moves, so a failed copy changes nothing."""
    inj = dev.faults
    if inj is None:
        return 0
    _check_link(dev, inj, now_ns)
    if inj.dma_error():
        inj.report("dma_error")
        raise dev.set_fault(DmaFault(f"DMA engine error during {what} of {nbytes} bytes (injected)", card=dev.index))
    if reads_card_dram and inj.dram_read(nbytes):
        inj.report("dram_dbe")
        raise dev.set_fault(EccUncorrectable(f"uncorrectable DRAM error in data read by {what} (injected)",
                                             card=dev.index))
    return inj.pcie_replays(nbytes)


def before_launch(dev, now_ns):
    """A launch on a card whose link is down is DeviceLost."""
    if dev.faults is not None:
        _check_link(dev, dev.faults, now_ns)


def launch_hangs(dev, kernel_name):
    """Does this launch hang (a PE never halts)? If so the watchdog's LaunchTimeout becomes the device's
    sticky fault (reported on the next call, like any device fault) and the caller books the watchdog's time."""
    inj = dev.faults
    if inj is None or not inj.pe_hang():
        return False
    inj.report("pe_hang")
    cfg = dev.config
    dev.set_fault(LaunchTimeout(f"watchdog: {kernel_name} hung past {cfg.watchdog_cycles} cycles (injected PE "
                                f"hang)", card=dev.index, pe=0))
    return True


def after_launch(dev, kernel_name, dram_read_bytes):
    """An uncorrectable DRAM error in the data a finished launch read becomes the device's sticky fault."""
    inj = dev.faults
    if inj is not None and inj.dram_read(int(dram_read_bytes)):
        inj.report("dram_dbe")
        dev.set_fault(EccUncorrectable(f"uncorrectable DRAM error in data {kernel_name} read (injected)",
                                       card=dev.index))


def _check_link(dev, inj, now_ns):
    if inj.link_down(now_ns):
        inj.report("link_down")
        raise dev.lose(f"its PCIe link went down at {inj.config.link_down_at_ns:.0f} ns (injected)")
