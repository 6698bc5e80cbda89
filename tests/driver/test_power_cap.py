"""The platform's power cap (DVFS): a launch whose average power would exceed it runs at a lower operating point
(its cycles take longer), within the cap; the card's power counter track in the platform trace. These tests use a
1 us window (`power_window_us`), shorter than the launch: the cap then bounds each launch's own average power.
The window across launches: tests/driver/test_power_window.py."""
import pytest

import vnpu
from vnpu.emulator.power import CALIBRATION_KERNEL, launch_energy

PEAK = CALIBRATION_KERNEL
ONE_LAUNCH = 1.0      # power_window_us: shorter than the launch (18.9 us)


def launch_peak(platform):
    dev = platform.devices[0]
    q = dev.queue()
    k = dev.load(vnpu.assemble(PEAK))["peak"]
    ev = q.launch(k, 2, 4096)
    q.synchronize()
    return q, ev, q.last_result


@pytest.mark.parametrize("cap", [10.0, 8.0])
def test_a_launch_over_the_cap_runs_slower_within_the_cap(cap):
    free = vnpu.Platform({"cards": 1, "power_cap_w": None})
    _, ev_free, r = launch_peak(free)
    nominal = launch_energy(r)["average_w"]
    assert nominal > cap                                   # the peak kernel draws about 12 W
    capped = vnpu.Platform({"cards": 1, "power_cap_w": cap, "power_window_us": ONE_LAUNCH})
    _, ev_cap, r2 = launch_peak(capped)
    assert r2.cycles == r.cycles                           # cycles stay cycles
    assert ev_cap.time_ns > ev_free.time_ns                # time stretches
    (start, end, watts, clock), = capped.devices[0].power_timeline()
    assert end - start == pytest.approx(r2.cycles / clock)
    assert clock < capped.devices[0].config.clock_ghz and watts <= cap + 1e-9
    assert capped.devices[0].stats.throttled == 1
    assert launch_energy(r2, clock_ghz=clock)["average_w"] == pytest.approx(watts)


def test_no_cap_or_a_high_cap_leaves_the_launch_alone():
    times = []
    for cap in (None, 100.0):
        _, ev, r = launch_peak(vnpu.Platform({"cards": 1, "power_cap_w": cap}))
        times.append(ev.time_ns)
    assert times[0] == times[1]


def test_the_trace_has_a_power_counter_track(tmp_path):
    import json
    p = vnpu.Platform({"cards": 1})
    p.start_trace()
    launch_peak(p)
    path = p.write_trace(str(tmp_path / "t.json"))
    ev = json.load(open(path))
    ev = ev["traceEvents"] if isinstance(ev, dict) else ev
    counters = [e for e in ev if e.get("ph") == "C" and e.get("name") == "power (W)"]
    assert len(counters) == 2 and counters[0]["args"]["W"] > counters[1]["args"]["W"] > 0
    assert counters[0]["args"]["W"] <= 12.0 + 1e-6                   # the default cap


@pytest.mark.parametrize("bad", [0, -1, "x", True, 1e9])
def test_a_bad_cap_names_the_key(bad):
    with pytest.raises(vnpu.ConfigError, match="power_cap_w"):
        vnpu.Platform({"power_cap_w": bad})


def test_a_cap_below_the_lowest_operating_point_runs_there():
    """5 W is below what the peak kernel draws even at the lowest point (0.3 GHz): it runs at that point."""
    p = vnpu.Platform({"cards": 1, "power_cap_w": 5.0, "power_window_us": ONE_LAUNCH})
    launch_peak(p)
    (_, _, watts, clock), = p.devices[0].power_timeline()
    assert clock == min(f for f, _ in p.devices[0].config.power.operating_points) and watts > 5.0
