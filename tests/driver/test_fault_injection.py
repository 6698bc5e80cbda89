"""Fault injection: seeded, deterministic, typed errors, RAS counters, recovery, other cards unaffected."""
import numpy as np
import pytest

import vnpu

FILL = vnpu.assemble("""
.kernel fill
.arg out, buffer, i64
.arg value, scalar, i64
    sd value, 0(zero)
    li r5, 8
    dma e0, out, zero, r5, s0
    wait s0, 1
    halt
""")


@pytest.fixture
def platform():
    return vnpu.Platform(card="tiny", cards=3)


def copy_time(platform, dev, nbytes=1 << 20):
    q = dev.queue()
    b = dev.alloc(nbytes)
    e0 = q.record()
    q.copy_to_device(b, np.zeros(nbytes, np.uint8))
    return q.record().elapsed_ns(e0)


def test_pcie_errors_are_replayed_extra_time_no_corruption(platform):
    d = platform.devices[0]
    clean = copy_time(platform, d)
    d.inject_faults(seed=3, pcie_error_rate=0.01)
    q = d.queue()
    b = d.alloc(1 << 20)
    data = np.arange(1 << 18, dtype=np.int32)
    e0 = q.record()
    q.copy_to_device(b, data)
    slow = q.record().elapsed_ns(e0)
    h = d.health()
    assert h["injected"]["pcie_replay"] > 0 and h["corrected"]["pcie_replay"] == h["injected"]["pcie_replay"]
    assert slow > clean
    assert np.array_equal(q.copy_to_host(b, dtype=np.int32), data)     # replayed, not corrupted
    assert h["reported"]["pcie_replay"] == 0


def test_injection_is_deterministic():
    figures = []
    for _ in range(2):
        p = vnpu.Platform(card="tiny", cards=2)
        d = p.devices[1]
        d.inject_faults(seed=7, pcie_error_rate=0.005, dram_sbe_per_mib=3)
        t = copy_time(p, d)
        d.queue().copy_to_host(d.alloc(1 << 20))
        figures.append((t, d.health()["injected"]))
    assert figures[0] == figures[1]


def test_single_bit_errors_are_corrected_double_bit_errors_reported(platform):
    d = platform.devices[0]
    q = d.queue()
    b = d.alloc(1 << 20)
    q.copy_to_device(b, np.ones(1 << 20, np.uint8))
    d.inject_faults(seed=1, dram_sbe_per_mib=20)
    assert q.copy_to_host(b).sum() == 1 << 20                             # corrected: right data, no error
    assert d.health()["corrected"]["dram_sbe"] > 0
    d.inject_faults(seed=1, dram_dbe_per_mib=50)
    with pytest.raises(vnpu.EccUncorrectable, match="uncorrectable DRAM error"):
        q.copy_to_host(b)
    with pytest.raises(vnpu.EccUncorrectable):                           # sticky until reset
        d.alloc(8)
    assert d.health()["reported"]["dram_dbe"] == 1 and d.health()["sticky"].startswith("EccUncorrectable")
    other = platform.devices[1]                                         # other cards keep working
    ob = other.alloc(8)
    other.queue().copy_to_device(ob, np.int64([5]))
    d.reset()
    d.inject_faults(None)
    assert d.alloc(8) is not None and d.health()["sticky"] is None


def test_pe_hang_is_a_launch_timeout_and_reset_recovers(platform):
    d = platform.devices[0]
    q = d.queue()
    d.inject_faults(seed=2, pe_hang_rate=1.0)
    out = d.alloc(8)
    end = q.launch(d.load(FILL)["fill"], out, 1)
    assert end.time_ns >= d.config.watchdog_cycles / d.config.clock_ghz    # the watchdog's time was spent
    with pytest.raises(vnpu.LaunchTimeout, match="injected PE hang"):
        q.synchronize()
    d.reset()
    d.inject_faults(None)
    out = d.alloc(8)
    q.launch(d.load(FILL)["fill"], out, 9)
    assert q.copy_to_host(out, dtype=np.int64)[0] == 9


def test_dma_errors_fail_the_copy_and_change_nothing(platform):
    d = platform.devices[0]
    q = d.queue()
    b = d.alloc(16)
    q.copy_to_device(b, np.int64([1, 2]))
    d.inject_faults(seed=4, dma_error_rate=1.0)
    with pytest.raises(vnpu.DmaFault, match="DMA engine error"):
        q.copy_to_device(b, np.int64([7, 7]))
    assert list(d.card.read(b.device_address, 16).view(np.int64)) == [1, 2]   # the failed copy changed nothing
    assert d.health()["reported"]["dma_error"] == 1


def test_link_down_is_device_lost_on_that_card_only(platform):
    d, other = platform.devices[0], platform.devices[2]
    b = d.alloc(8)
    d.inject_faults(link_down_at_ns=0)
    with pytest.raises(vnpu.DeviceLost, match="link went down"):
        d.queue().copy_to_device(b, np.int64([1]))
    with pytest.raises(vnpu.DeviceLost):
        d.alloc(8)
    with pytest.raises(vnpu.DeviceLost):
        d.reset()
    ob = other.alloc(8)
    q = other.queue()
    q.launch(other.load(FILL)["fill"], ob, 3)
    assert q.copy_to_host(ob, dtype=np.int64)[0] == 3


def test_faults_from_yaml_and_bad_settings(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("cards: 2\ncard: tiny\nfaults:\n  all: {seed: 5, pcie_error_rate: 0.001}\n  1: {pe_hang_rate: 1.0}\n")
    p = vnpu.Platform.from_yaml(f)
    assert p.devices[0].health()["config"]["pcie_error_rate"] == 0.001
    assert p.devices[1].health()["config"]["pe_hang_rate"] == 1.0
    for text, match in [("faults: {all: {pcie_error_rate: 2}}\n", "probability"),
                        ("faults: {all: {bogus: 1}}\n", "unknown fault setting 'bogus'"),
                        ("faults: {9: {seed: 1}}\n", "card index")]:
        f.write_text("card: tiny\n" + text)
        with pytest.raises(vnpu.ConfigError, match=match):
            vnpu.Platform.from_yaml(f)


def test_serving_under_faults_never_returns_a_wrong_answer():
    from vnpu.runtime import DLRM, preset, serve
    m = DLRM(preset("rm1", rows_scale=1e-4))
    p = vnpu.Platform()
    p.devices[2].inject_faults(seed=3, pe_hang_rate=0.25, dram_dbe_per_mib=0.5, pcie_error_rate=1e-3)
    retry = serve(p, m, 16, requests=10, fault_policy="retry")
    assert retry["wrong_outputs"] == 0 and retry["completed"] + retry["failed"] == 10
    assert set(retry["errors"]) <= {"LaunchTimeout", "EccUncorrectable"}
    p = vnpu.Platform()
    p.devices[2].inject_faults(seed=3, pe_hang_rate=0.25, dram_dbe_per_mib=0.5, pcie_error_rate=1e-3)
    fail = serve(p, m, 16, requests=10, fault_policy="fail")
    assert fail["wrong_outputs"] == 0 and fail["retried"] == 0 and fail["failed"] >= retry["failed"]
    assert p.devices[2].health()["reported"]["pe_hang"] > 0


def test_a_lost_card_moves_its_tables_to_the_others():
    from vnpu.runtime import DLRM, preset, serve
    m = DLRM(preset("rm1", rows_scale=1e-4))
    p = vnpu.Platform()
    p.devices[1].inject_faults(link_down_at_ns=200_000)
    rep = serve(p, m, 16, requests=8)
    assert rep["completed"] == 8 and rep["wrong_outputs"] == 0 and rep["health"][1]["lost"]


def test_faults_reach_the_device_through_its_methods(platform, monkeypatch):
    """Fault injection marks a card lost or faulted only with Device.lose / Device.set_fault."""
    from vnpu.driver.device import Device
    calls = []
    lose, set_fault = Device.lose, Device.set_fault
    monkeypatch.setattr(Device, "lose", lambda self, reason: calls.append(("lose", self.index)) or lose(self, reason))
    monkeypatch.setattr(Device, "set_fault", lambda self, e: calls.append(("set_fault", type(e).__name__))
                        or set_fault(self, e))
    d0, d1 = platform.devices[0], platform.devices[1]
    d0.inject_faults(seed=1, dma_error_rate=1.0)
    with pytest.raises(vnpu.DmaFault):
        d0.queue().copy_to_device(d0.alloc(64), np.zeros(64, np.uint8))
    assert d0.fault is not None and calls == [("set_fault", "DmaFault")]
    d1.inject_faults(link_down_at_ns=0.0)
    with pytest.raises(vnpu.DeviceLost):
        d1.queue().copy_to_device(d1.alloc(64), np.zeros(64, np.uint8))
    assert d1.is_lost and calls[-1] == ("lose", 1)
