"""Tests of the PCIe link model against the reference card's arithmetic.

Expected values are written out here from the spec formula (GT/s x lanes x 128/130 / 8, TLP overhead,
DLLP share), not by calling the model, so a wrong derivation in vnpu.driver.pcie fails these tests.
"""
import pytest

from vnpu.driver.pcie import LinkConfig, Switch

MiB = 1 << 20
GTS = {3: 8e9, 4: 16e9}  # transfers/s per lane, PCIe Base Spec 3.0 / 4.0
WRITE_TLP_OVERHEAD = 4 + 16 + 4  # STP token (incl. sequence number) + 4DW header + LCRC, bytes
CPLD_OVERHEAD = 4 + 12 + 4  # STP token + 3DW completion header + LCRC, bytes
DLLP_SHARE = 0.03  # ACK/UpdateFC share of the link, "a few percent" (reference card)
SETUP_REF_NS = 1500.0  # middle of the reference card's 1-2 us per-DMA setup


def spec_bytes_per_ns(gen, lanes, payload, overhead):
    """Payload bytes/ns of a long stream of TLPs, from the spec facts (1 byte/ns == 1 GB/s)."""
    bits_per_s = GTS[gen] * lanes * 128 / 130
    return bits_per_s / 8 / 1e9 * (1 - DLLP_SHARE) * payload / (payload + overhead)


def spec_overhead(direction):
    return CPLD_OVERHEAD if direction == "h2d" else WRITE_TLP_OVERHEAD


@pytest.mark.parametrize("direction", ["h2d", "d2h"])
@pytest.mark.parametrize("gen", [3, 4])
@pytest.mark.parametrize("mps", [128, 256])
def test_large_copy_bandwidth_matches_spec(gen, mps, direction):
    cfg = LinkConfig(gen=gen, lanes=4, max_payload=mps)
    n = 64 * MiB
    measured = n / cfg.transfer_ns(n, direction)
    expected = spec_bytes_per_ns(gen, 4, mps, spec_overhead(direction))
    assert measured == pytest.approx(expected, rel=0.05)
    if gen == 3:  # the reference card: Gen3 x4 large copies land near 3.2-3.6 GB/s
        assert 3.2 <= measured <= 3.6


@pytest.mark.parametrize("direction", ["h2d", "d2h"])
@pytest.mark.parametrize("gen", [3, 4])
@pytest.mark.parametrize("mps", [128, 256])
def test_small_copy_latency_is_setup_dominated(gen, mps, direction):
    cfg = LinkConfig(gen=gen, lanes=4, max_payload=mps)
    assert 1000 <= cfg.setup_ns <= 2000
    n = 4096
    expected = SETUP_REF_NS + n / spec_bytes_per_ns(gen, 4, mps, spec_overhead(direction))
    assert cfg.transfer_ns(n, direction) == pytest.approx(expected, rel=0.05)
    # a 64-byte copy is essentially all setup: within the 1-2 us window
    assert 1000 <= cfg.transfer_ns(64, direction) <= 2000 + 100
    assert cfg.transfer_ns(64, direction) < 1.1 * cfg.setup_ns


def test_gen3_x16_raw_rate_matches_reference_card():
    assert LinkConfig(gen=3, lanes=16).raw_gbps == pytest.approx(15.75, rel=0.005)
    assert LinkConfig(gen=3, lanes=1).raw_gbps == pytest.approx(0.985, rel=0.005)


def test_read_completion_splitting_counts_tlps():
    cfg = LinkConfig(max_payload=256, max_read_request=512)
    # 1000 B read: requests of 512 + 488 -> 2 MRd; completions 256+256 | 256+232 -> 4 CplD
    assert cfg.wire_bytes(1000, "h2d") == (1000 + 4 * CPLD_OVERHEAD, 2 * WRITE_TLP_OVERHEAD)
    assert cfg.wire_bytes(1000, "d2h") == (1000 + 4 * WRITE_TLP_OVERHEAD, 0)
    # a root complex returning 64-byte (RCB) completions costs read bandwidth
    rcb = LinkConfig(completion_bytes=64)
    assert rcb.effective_gbps("h2d") == pytest.approx(spec_bytes_per_ns(3, 4, 64, CPLD_OVERHEAD))
    assert rcb.effective_gbps("h2d") < 0.9 * cfg.effective_gbps("h2d")


def test_idle_schedule_equals_transfer_ns():
    sw = Switch()
    cfg = sw.cards[0].config
    for kind, peer in (("h2d", None), ("d2h", None), ("p2p", 1)):
        sw.reset()
        start, end = sw.schedule(kind, 0, 1 * MiB, 1000.0, peer_index=peer)
        assert start == 1000.0
        assert end - start == pytest.approx(cfg.transfer_ns(1 * MiB, "d2h" if kind == "p2p" else kind))


def test_six_concurrent_h2d_copies_are_uplink_limited():
    n = 16 * MiB
    sw = Switch(6)
    single = sw.cards[0].config.transfer_ns(n, "h2d") - sw.cards[0].config.setup_ns
    ends = [sw.schedule("h2d", i, n, 0.0)[1] for i in range(6)]
    makespan = max(ends) - sw.cards[0].config.setup_ns
    aggregate = 6 * n / makespan
    uplink = spec_bytes_per_ns(3, 16, 256, CPLD_OVERHEAD)  # Gen3 x16, ~15.75 GB/s raw
    assert aggregate == pytest.approx(uplink, rel=0.02)
    assert aggregate < 0.75 * 6 * n / single  # far below six independent x4 links
    assert makespan == pytest.approx(1.5 * single, rel=0.02)  # x16 serves four x4 cards at a time
    assert sw.bytes_moved()["uplink"]["down"] == 6 * n
    # the reads' MRd requests (one 4DW TLP per 512-byte MRRS) travel up, against the data
    assert sw.uplink.wire_bytes["up"] == 6 * (n // 512) * WRITE_TLP_OVERHEAD
    assert sw.uplink.wire_bytes["down"] == 6 * (n + (n // 256) * CPLD_OVERHEAD)
    # with a Gen4 x16 uplink the same batch is limited by the cards' own links instead
    fast = Switch(6, uplink=LinkConfig(gen=4, lanes=16))
    ends = [fast.schedule("h2d", i, n, 0.0)[1] for i in range(6)]
    assert max(ends) - fast.cards[0].config.setup_ns == pytest.approx(single, rel=1e-9)


def test_p2p_does_not_touch_uplink():
    sw = Switch()
    n = 8 * MiB
    sw.schedule("p2p", 0, n, 0.0, peer_index=1)
    assert sw.uplink.busy_until == {"up": 0.0, "down": 0.0}
    assert sw.bytes_moved()["uplink"] == {"up": 0, "down": 0}
    assert sw.bytes_moved()["card0"] == {"up": n, "down": 0}
    assert sw.bytes_moved()["card1"] == {"up": 0, "down": n}
    # another card's host copy at the same time is unaffected ...
    start, end = sw.schedule("h2d", 2, n, 0.0)
    assert (start, end) == (0.0, pytest.approx(sw.cards[2].config.transfer_ns(n, "h2d")))
    # ... but the source card's upstream direction is taken, so its d2h waits
    start, end = sw.schedule("d2h", 0, n, 0.0)
    assert start > 0.0


def test_full_duplex_h2d_and_d2h_overlap_but_same_direction_serializes():
    sw = Switch()
    cfg = sw.cards[0].config
    n = 8 * MiB
    t_h2d, t_d2h = cfg.transfer_ns(n, "h2d"), cfg.transfer_ns(n, "d2h")
    assert sw.schedule("h2d", 0, n, 0.0) == (0.0, pytest.approx(t_h2d))
    assert sw.schedule("d2h", 0, n, 0.0) == (0.0, pytest.approx(t_d2h))  # overlaps, not after
    start, end = sw.schedule("h2d", 0, n, 0.0)  # same direction: waits for the first h2d
    assert end == pytest.approx(t_h2d + (t_h2d - cfg.setup_ns))
    assert start == pytest.approx(end - t_h2d)
    sw.reset()
    assert sw.schedule("h2d", 0, n, 0.0) == (0.0, pytest.approx(t_h2d))


@pytest.mark.parametrize("field, value", [
    ("gen", 2), ("lanes", 3), ("max_payload", 100), ("max_read_request", 0),
    ("tlp_overhead_bytes", 4), ("completion_overhead_bytes", 200), ("read_completion_boundary", 32),
    ("completion_bytes", 96), ("dllp_overhead", 0.9), ("setup_ns", -1.0), ("lanes", True),
])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^LinkConfig\.{field} must"):
        LinkConfig(**{field: value})


def test_bad_schedule_arguments():
    sw = Switch(2)
    for args, kw, word in [
        (("x2y", 0, 10, 0.0), {}, "kind"), (("h2d", 2, 10, 0.0), {}, "card_index"),
        (("p2p", 0, 10, 0.0), {}, "peer_index"), (("p2p", 0, 10, 0.0), {"peer_index": 0}, "peer_index"),
        (("h2d", 0, -1, 0.0), {}, "nbytes"), (("h2d", 0, 10, -5.0), {}, "ready_ns"),
    ]:
        with pytest.raises(ValueError, match=word):
            sw.schedule(*args, **kw)
    assert sw.schedule("h2d", 0, 0, 7.0) == (7.0, 7.0)


def test_copy_adds_replays_after_booking_and_reset_clock_keeps_counters():
    """Switch.copy = Switch.schedule + 600 ns per replayed TLP (replays do not hold the links)."""
    from vnpu.driver import pcie
    a, b = Switch(2), Switch(2)
    assert a.copy("h2d", 0, MiB, 0.0) == b.schedule("h2d", 0, MiB, 0.0)
    start, end = a.copy("p2p", 0, MiB, 0.0, peer_index=1, replays=3)
    assert (start, end - 3 * 600.0) == b.schedule("p2p", 0, MiB, 0.0, peer_index=1)
    assert a.cards[1].busy_until == b.cards[1].busy_until          # the replays booked nothing
    assert pcie.replay_ns(0) == 0.0 and pcie.replay_ns(5) == 3000.0
    assert pcie.replay_tlps(0) == 1 and pcie.replay_tlps(256) == 1 and pcie.replay_tlps(257) == 2
    moved = a.bytes_moved()
    a.reset_clock()
    assert all(link.busy_until == {"up": 0.0, "down": 0.0} for link in (a.uplink, *a.cards))
    assert a.bytes_moved() == moved
    assert a.copy("h2d", 0, MiB, 0.0) == Switch(2).schedule("h2d", 0, MiB, 0.0)


def test_an_on_card_copy_is_timed_by_the_emulators_dma_formula():
    """copy_peer within one card: one DMA engine, DRAM to DRAM: setup + the slower of the engine's stream and
    the DRAM channel (each byte read and written) + DRAM latency; and the same as a `dma` in a launch."""
    import math

    import numpy as np

    import vnpu
    from vnpu.driver.pcie import on_card_copy_ns
    from vnpu.emulator.card import Card
    card = Card("tiny")
    c = card.config
    src, dst = card.alloc(MiB), card.alloc(MiB)
    assert on_card_copy_ns(0, card, src, dst) == 0.0
    stream = MiB / c.dma.bytes_per_cycle
    dram = 2 * MiB / (c.dram.gbps / c.clock_ghz)         # runs of a whole DRAM page: efficiency 1
    want = (c.dma.setup_cycles + math.ceil(max(stream, dram)) + c.dram.latency_cycles) / c.clock_ghz
    assert on_card_copy_ns(MiB, card, src, dst) == pytest.approx(want)
    image = vnpu.assemble(".kernel k\n.arg d, buffer, u8\n.arg s, buffer, u8\n.arg n, scalar, i64\n"
                          "    dma e0, r1, r2, r3, s0\n    wait s0, 1\n    halt\n")
    r = card.launch(image, "k", (dst, src, MiB), pes=(0,))
    assert abs(r.cycles / c.clock_ghz - want) <= 4 / c.clock_ghz      # a few cycles of issue and wait
    card.write(src, np.arange(MiB, dtype=np.uint8))