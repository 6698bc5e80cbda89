"""PCIe link model: how long a DMA copy takes and how copies share the links of the platform.

Why a model and not a constant: the platform's cards sit on Gen3 x4 (M.2) links behind one PCIe switch whose
Gen3 x16 uplink all six cards share, so a copy's time depends on its size (fixed setup cost vs. streaming),
on packet overhead (max payload size, read completions) and on what else is moving. Every number below is
derived from PCIe facts (GT/s, 128b/130b, TLP/DLLP sizes); the inferred ones are config values. Formulas and
sources are in docs/pcie.md; `python -m vnpu.driver.pcie` prints the worked table.

Units: bytes, nanoseconds, GB/s (1 GB/s == 1 byte/ns). "up" = towards the host, "down" = towards the card.

This module is the one place where the host side's copy times are computed: host<->card and card<->card
copies (Switch.copy / Switch.schedule), the link layer's replays of corrupted TLPs (replay_ns), and a
copy_peer between two buffers of the same card (on_card_copy_ns). Launch times are the card's (cycles from
the emulator, booked by Device.book_launch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .validate import show

GT_PER_S = {3: 8.0, 4: 16.0, 5: 32.0}  # GT/s per lane (PCIe Base Spec 3.0 / 4.0 / 5.0)
ENCODING = 128 / 130  # 128b/130b line code, used by Gen3, Gen4 and Gen5
LANES = (1, 2, 4, 8, 16)
SIZES = (128, 256, 512, 1024, 2048, 4096)  # legal Max_Payload_Size / Max_Read_Request_Size encodings
KINDS = ("h2d", "d2h", "p2p")
REPLAY_NS = 600.0        # [inferred] NAK/replay-timer round trip plus the retransmitted TLP, per replay
REPLAY_TLP_BYTES = 256   # injected replays are counted per max-payload TLP of the default link


def _int(name, value, ok, what):
    if isinstance(value, bool) or not isinstance(value, int) or not ok(value):
        raise ValueError(f"LinkConfig.{name} must be {what}, got {show(value)}")


@dataclass(frozen=True)
class LinkConfig:
    """One PCIe link's negotiated parameters plus the DMA engine's fixed cost. Defaults: the card's Gen3 x4.

    tlp_overhead_bytes: per request TLP on the wire. Gen3+ framing: STP token 4 B (carries the 12-bit
      sequence number; Gen1/2 spent STP 1 + seq 2 + END 1) + 4DW header 16 B (64-bit address) + LCRC 4 B = 24.
    completion_overhead_bytes: per read completion (CplD): STP 4 + 3DW header 12 + LCRC 4 = 20.
    completion_bytes: data per CplD. None = max_payload (completer returns MPS-sized, RCB-aligned pieces);
      some root complexes return RCB-sized (64 B) pieces, which costs ~15 % of read bandwidth. [inferred]
    dllp_overhead: fraction of each direction taken by ACK/UpdateFC DLLPs (8 B each) and SKP ordered sets.
      The spec's timer guidance bounds it near 7 %; coalesced ACKs measure a few %. 0.03 is [inferred].
    setup_ns: per-DMA fixed cost (doorbell write, descriptor fetch, completion write/interrupt); the
      reference card says 1-2 us. 1500 is [inferred].
    """

    gen: int = 3
    lanes: int = 4
    max_payload: int = 256
    max_read_request: int = 512
    tlp_overhead_bytes: int = 24
    completion_overhead_bytes: int = 20
    read_completion_boundary: int = 64
    completion_bytes: int | None = None
    dllp_overhead: float = 0.03
    setup_ns: float = 1500.0

    def __post_init__(self):
        _int("gen", self.gen, GT_PER_S.__contains__, "one of (3, 4, 5)")
        _int("lanes", self.lanes, LANES.__contains__, f"one of {LANES}")
        _int("max_payload", self.max_payload, SIZES.__contains__, f"one of {SIZES}")
        _int("max_read_request", self.max_read_request, SIZES.__contains__, f"one of {SIZES}")
        for name in ("tlp_overhead_bytes", "completion_overhead_bytes"):
            _int(name, getattr(self, name), lambda v: 16 <= v <= 64, "an int in [16, 64]")
        _int("read_completion_boundary", self.read_completion_boundary, (64, 128).__contains__, "64 or 128")
        if self.completion_bytes is not None:
            rcb, mps = self.read_completion_boundary, self.max_payload
            _int("completion_bytes", self.completion_bytes, lambda v: rcb <= v <= mps and v % rcb == 0,
                 f"None or a multiple of read_completion_boundary ({rcb}) up to max_payload ({mps})")
        for name, lo, hi in (("dllp_overhead", 0.0, 0.5), ("setup_ns", 0.0, 2.0**63)):   # 2**63 ns: 292 years
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (lo <= v < hi):
                raise ValueError(f"LinkConfig.{name} must be a number in [{lo}, {hi:g}), got {show(v)}")

    # -- derived quantities (from first principles, never stored) --------------------------------------
    @property
    def raw_gbps(self) -> float:
        """Bytes/ns each way after line coding: GT/s x lanes x 128/130 / 8 bits."""
        return GT_PER_S[self.gen] * self.lanes * ENCODING / 8

    @property
    def tlp_gbps(self) -> float:
        """What is left for TLPs once DLLPs (ACK, UpdateFC) and SKP sets took their share."""
        return self.raw_gbps * (1.0 - self.dllp_overhead)

    def completion_size(self, max_payload: int | None = None) -> int:
        """Data bytes per CplD: never more than the (path) MPS."""
        mps = max_payload or self.max_payload
        return min(self.completion_bytes or mps, mps)

    def payload_efficiency(self, kind: str) -> float:
        """Payload / wire bytes of the data-carrying TLPs for a long copy.

        h2d is the card *reading* host memory: data returns as completions (20 B overhead each);
        d2h and p2p are posted memory writes of up to MPS bytes (24 B overhead each)."""
        _kind(kind)
        if kind == "h2d":
            c = self.completion_size()
            return c / (c + self.completion_overhead_bytes)
        return self.max_payload / (self.max_payload + self.tlp_overhead_bytes)

    def effective_gbps(self, kind: str) -> float:
        """Streaming bandwidth of a large copy (setup amortized away)."""
        return self.tlp_gbps * self.payload_efficiency(kind)

    def wire_bytes(self, nbytes: int, kind: str, max_payload: int | None = None) -> tuple[int, int]:
        """(bytes in the data direction, bytes in the opposite direction) for one aligned copy.

        Reads (h2d) split into MRRS-sized requests (one 4DW TLP each, travelling *against* the data);
        each request is answered by ceil(request / completion size) completions. Writes split into MPS
        TLPs. Buffers are assumed aligned, so no TLP crosses an RCB or 4 KiB boundary early. `max_payload`
        is the path's MPS (the smallest along the route) when it differs from this link's."""
        _kind(kind)
        _nbytes(nbytes)
        mps = min(max_payload or self.max_payload, self.max_payload)
        if kind != "h2d":
            return nbytes + math.ceil(nbytes / mps) * self.tlp_overhead_bytes, 0
        mrrs, c = self.max_read_request, self.completion_size(mps)
        full, rest = divmod(nbytes, mrrs)
        n_cpl = full * math.ceil(mrrs / c) + math.ceil(rest / c)
        n_req = full + (rest > 0)
        return nbytes + n_cpl * self.completion_overhead_bytes, n_req * self.tlp_overhead_bytes

    def transfer_ns(self, nbytes: int, kind: str) -> float:
        """Idle-link time of one DMA copy: setup + serialization of all its TLPs at the TLP rate.

        Small copies are setup-dominated (4 KiB at Gen3 x4 streams in ~1.2 us, next to 1.5 us of setup).
        A zero-byte copy issues no DMA and costs nothing."""
        if _nbytes(nbytes) == 0:
            return 0.0
        return self.setup_ns + max(self.wire_bytes(nbytes, kind)) / self.tlp_gbps


def _kind(kind):
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _nbytes(nbytes):
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
        raise ValueError(f"nbytes must be a non-negative int, got {nbytes!r}")
    return nbytes


def replay_tlps(nbytes: int) -> int:
    """How many TLPs a copy of nbytes is counted as when drawing corrupted ones (at least 1)."""
    return max(1, -(-nbytes // REPLAY_TLP_BYTES))


def replay_ns(replays: int) -> float:
    """Time the link layer spends replaying `replays` corrupted TLPs (they are corrected: data unchanged)."""
    return replays * REPLAY_NS


def on_card_copy_ns(nbytes: int, card, src_address: int, dst_address: int) -> float:
    """A copy_peer whose source and destination are on the same card: no PCIe; one of the card's DMA engines
    copies it, timed by the emulator's DMA formula (emulator/dma.py: copy_cycles: setup, the slowest of the
    engine's stream, the DRAM channel's bursts and the SRAM ring, then the memory's latency), at the card's
    clock."""
    if nbytes <= 0:
        return 0.0
    from vnpu.emulator.dma import copy_cycles
    cycles = copy_cycles(card.memory.layout, int(src_address), int(dst_address), int(nbytes), card.cfgv)
    return cycles / card.config.clock_ghz


class Link:
    """One full-duplex link segment: independent "busy until" timelines for "up" and "down".

    Full duplex is why h2d and d2h copies overlap: they use opposite directions. Each direction is a
    FIFO server; see Switch.schedule for how a copy books it."""

    def __init__(self, config: LinkConfig, name: str):
        self.config, self.name = config, name
        self.reset()

    def reset(self) -> None:
        self.reset_clock()
        self.bytes_moved = {"up": 0, "down": 0}  # payload bytes
        self.wire_bytes = {"up": 0, "down": 0}  # payload + TLP overhead (+ read requests)

    def reset_clock(self) -> None:
        """Both directions free from virtual time 0 (the byte counters stay)."""
        self.busy_until = {"up": 0.0, "down": 0.0}

    def __repr__(self):
        return f"Link({self.name}, Gen{self.config.gen} x{self.config.lanes}, busy_until={self.busy_until})"


class Switch:
    """The platform's PCIe switch: one uplink to the host plus one downstream link per card.

    Routes: h2d crosses uplink "down" + card "down"; d2h crosses card "up" + uplink "up"; p2p a->b is a
    posted write that turns around inside the switch: link a "up" + link b "down", never the uplink.

    Booking model (why it looks like this): schedule() must answer at once, in call order, so a fair-share
    fluid model (where a later copy slows an earlier one) is impossible. Instead each segment direction is
    a work-conserving FIFO: a copy occupies it for its *own* serialization time there (wire bytes /
    segment rate), starting when the segment is free and the copy's setup is done; the copy ends when its
    slowest segment has served it. So one card's link serializes its copies, and six x4 cards share a x16
    uplink that serves ~4 cards' worth at a time: the batch makespan equals uplink-bound fair sharing.
    Read requests of h2d copies (~5 % of the data volume, against the data) are counted in wire_bytes but
    not booked: they interleave with whatever the reverse direction carries."""

    def __init__(self, cards: "int | list[LinkConfig]" = 6, uplink: LinkConfig | None = None):
        if isinstance(cards, int) and not isinstance(cards, bool):
            if cards < 1:
                raise ValueError(f"cards must be >= 1, got {cards}")
            cards = [LinkConfig()] * cards
        self.uplink = Link(uplink or LinkConfig(gen=3, lanes=16), "uplink")
        self.cards = [Link(cfg, f"card{i}") for i, cfg in enumerate(cards)]

    def reset(self) -> None:
        """Forget all bookings and counters (a new run starts at virtual time 0)."""
        for link in (self.uplink, *self.cards):
            link.reset()

    def reset_clock(self) -> None:
        """Forget the bookings (every link free from virtual time 0), keep the byte counters."""
        for link in (self.uplink, *self.cards):
            link.reset_clock()

    def bytes_moved(self) -> dict:
        """{link name: {"up": payload bytes, "down": payload bytes}} for reporting."""
        return {link.name: dict(link.bytes_moved) for link in (self.uplink, *self.cards)}

    def _card(self, name, index):
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self.cards):
            raise ValueError(f"{name} must be a card index in [0, {len(self.cards)}), got {index!r}")
        return self.cards[index]

    def route(self, kind: str, card_index: int, peer_index: int | None = None) -> list[tuple[Link, str]]:
        """The (link, direction) segments the data of such a copy crosses."""
        _kind(kind)
        card = self._card("card_index", card_index)
        if kind == "p2p":
            peer = self._card("peer_index", peer_index)
            if peer is card:
                raise ValueError("peer_index must differ from card_index for p2p")
            return [(card, "up"), (peer, "down")]
        if peer_index is not None:
            raise ValueError(f"peer_index is only for p2p, got {peer_index!r} with kind {kind!r}")
        return [(self.uplink, "down"), (card, "down")] if kind == "h2d" else [(card, "up"), (self.uplink, "up")]

    def schedule(self, kind: str, card_index: int, nbytes: int, ready_ns: float,
                 peer_index: int | None = None) -> tuple[float, float]:
        """Book one DMA copy issued by card `card_index` (the source card for p2p) at `ready_ns`.

        Returns (start_ns, end_ns): end is when the last byte has crossed every segment; start is end
        minus the copy's idle-path duration, so a copy that had to wait shows up late, not stretched (its
        setup is assumed to overlap the wait). On idle links start == ready_ns and end - start equals
        LinkConfig.transfer_ns. Calls must come in non-decreasing ready_ns (FIFO in call order)."""
        segments = self.route(kind, card_index, peer_index)
        if not isinstance(ready_ns, (int, float)) or not math.isfinite(ready_ns) or ready_ns < 0:
            raise ValueError(f"ready_ns must be a finite number >= 0, got {ready_ns!r}")
        if _nbytes(nbytes) == 0:
            return float(ready_ns), float(ready_ns)
        cfg = self.cards[card_index].config  # the DMA engine (and its TLP format) is the issuing card's
        path_mps = min(link.config.max_payload for link, _ in segments)
        data_wire, req_wire = cfg.wire_bytes(nbytes, kind, path_mps)
        t0 = ready_ns + cfg.setup_ns
        end, lone = t0, 0.0
        for link, direction in segments:
            service = data_wire / link.config.tlp_gbps
            seg_end = max(t0, link.busy_until[direction]) + service
            link.busy_until[direction] = seg_end
            link.bytes_moved[direction] += nbytes
            link.wire_bytes[direction] += data_wire
            link.wire_bytes["up" if direction == "down" else "down"] += req_wire
            end, lone = max(end, seg_end), max(lone, service)
        # never before ready_ns: end - lone - setup_ns rounds to a hair below it on an idle link (-2e-16 ns)
        return max(float(ready_ns), end - lone - cfg.setup_ns), end


    def copy(self, kind: str, card_index: int, nbytes: int, ready_ns: float, peer_index: int | None = None,
             replays: int = 0) -> tuple[float, float]:
        """Book one DMA copy (schedule) whose link layer replays `replays` corrupted TLPs: the replays add
        replay_ns(replays) to its end (after the booking: they do not hold the links). Returns (start, end)."""
        start, end = self.schedule(kind, card_index, nbytes, ready_ns, peer_index=peer_index)
        if replays:
            end += replay_ns(replays)
        return start, end


def format_table(sizes=(4 << 10, 64 << 10, 1 << 20, 64 << 20)) -> str:
    """The worked table of docs/pcie.md: Gen3/Gen4 x4 at MPS 128/256, both DMA directions."""
    names = {4 << 10: "4 KiB", 64 << 10: "64 KiB", 1 << 20: "1 MiB", 64 << 20: "64 MiB"}
    head = ["link", "MPS", "dir", "raw GB/s", "eff GB/s"] + [f"t({names.get(s, s)}) us" for s in sizes]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for gen in (3, 4):
        for mps in (128, 256):
            cfg = LinkConfig(gen=gen, lanes=4, max_payload=mps)
            for kind in ("h2d", "d2h"):
                cells = [f"Gen{gen} x4", str(mps), kind, f"{cfg.raw_gbps:.3f}", f"{cfg.effective_gbps(kind):.3f}"]
                cells += [f"{cfg.transfer_ns(s, kind) / 1e3:.2f}" for s in sizes]
                rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    d = LinkConfig()
    print(f"defaults: MRRS {d.max_read_request}, TLP overhead {d.tlp_overhead_bytes} B, CplD overhead "
          f"{d.completion_overhead_bytes} B, DLLP overhead {d.dllp_overhead:.0%}, setup {d.setup_ns:.0f} ns\n")
    print(format_table())
