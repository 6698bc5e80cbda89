"""The power cap over a sliding window of virtual time across launches (platform keys power_cap_w and
power_window_us, docs/power.md section 7a): back-to-back hot launches are throttled once the window's average
would pass the cap, the same launches with idle gaps are not; checked against the booked timeline."""
import pytest

import vnpu
from vnpu.emulator.power import CALIBRATION_KERNEL

TOL = 1e-9          # relative: the cap holds over every window up to floating-point rounding (docs/power.md 7a)


def run(cap, n, gap_ns=0.0, window_us=100.0, reps=2):
    """n launches of the calibration kernel (about 12 W, 18.9 us each at reps=2) on one card, back to back or with
    the host idling gap_ns between them. Returns the device."""
    cfg = {"cards": 1, "power_cap_w": cap}
    if window_us is not None:
        cfg["power_window_us"] = window_us
    p = vnpu.Platform(cfg)
    d = p.devices[0]
    q = d.queue()
    k = d.load(vnpu.assemble(CALIBRATION_KERNEL))["peak"]
    for _ in range(n):
        if gap_ns:
            q.synchronize()
            p.advance_host(p.host_ns + gap_ns)
        q.launch(k, reps, 4096)
    q.synchronize()
    return d


def pieces(timeline, idle_w, lo):
    """The card's power from lo to the last launch's end: (from, to, watts), idle between launches."""
    out, t = [], lo
    for s, e, w, _ in timeline:
        if s > t:
            out.append((t, s, idle_w))
        out.append((s, e, w))
        t = e
    return out


def max_window_w(device, window_ns):
    """The highest average power over any window of window_ns ending inside the booked timeline, exactly: the
    average is piecewise linear in the window's end, so it peaks where the end or the start is a breakpoint."""
    tl = device.power_timeline()
    ps = pieces(tl, device.idle_w, min(0.0, tl[0][0] - window_ns))

    def energy(a, b):
        j = 0.0 if a >= ps[0][0] else (ps[0][0] - a) * device.idle_w     # idle before the first piece
        for s, e, w in ps:
            j += max(0.0, min(e, b) - max(s, a)) * w
        return j
    ends = {e for _, e, _ in ps} | {s for s, _, _ in ps} | {s + window_ns for s, _, _ in ps} \
        | {e + window_ns for _, e, _ in ps}
    last = ps[-1][1]
    return max(energy(t - window_ns, t) for t in ends if t <= last) / window_ns


def energy_j(device):
    return sum((e - s) * w for s, e, w, _ in device.power_timeline()) * 1e-9


def test_back_to_back_hot_launches_are_throttled_within_the_cap_over_every_window():
    free = run(None, 24)
    assert free.stats.throttled == 0 and max_window_w(free, 100e3) > 10.5      # ~11 W back to back
    capped = run(10.0, 24)
    assert capped.stats.throttled > 0
    assert max_window_w(capped, 100e3) <= 10.0 * (1 + TOL)
    assert capped.power_timeline()[-1][1] > free.power_timeline()[-1][1]     # time stretched
    # the first launches run at full clock: the window still holds the idle card before them
    assert capped.power_timeline()[0][3] == capped.config.clock_ghz


def test_the_same_launches_with_idle_gaps_are_not_throttled():
    d = run(10.0, 12, gap_ns=100e3)
    assert d.stats.throttled == 0
    assert {c for *_, c in d.power_timeline()} == {d.config.clock_ghz}
    assert max(w for _, _, w, _ in d.power_timeline()) > 10.0                   # each launch alone is over the cap
    assert max_window_w(d, 100e3) <= 10.0


def test_the_default_window_spans_launches():
    """Default: 1000 us. One 12 W launch after idle is a burst the window absorbs; a long back-to-back run is not."""
    d = run(10.0, 64, window_us=None)
    assert d.platform.config["power_window_us"] == 1000
    tl = d.power_timeline()
    assert tl[0][3] == d.config.clock_ghz and d.stats.throttled > 0
    assert max_window_w(d, 1000e3) <= 10.0 * (1 + TOL)


@pytest.mark.parametrize("cap", [7.0, 9.0, 11.0])
def test_mixed_launches_and_gaps_stay_within_the_cap_over_every_window(cap):
    """Launches of 1, 2 and 4 products (9-38 us) with gaps of 0-40 us in a fixed pattern, a 60 us window."""
    p = vnpu.Platform({"cards": 1, "power_cap_w": cap, "power_window_us": 60})
    d = p.devices[0]
    q = d.queue()
    k = d.load(vnpu.assemble(CALIBRATION_KERNEL))["peak"]
    for i in range(30):
        gap = (0, 0, 5e3, 0, 40e3, 0, 0, 15e3)[i % 8]
        if gap:
            q.synchronize()
            p.advance_host(p.host_ns + gap)
        q.launch(k, (1, 2, 4)[i % 3], 4096)
    q.synchronize()
    assert d.stats.throttled > 0
    assert max_window_w(d, 60e3) <= cap * (1 + TOL)


def test_a_cap_above_the_peak_changes_nothing():
    free = run(None, 16)
    high = run(100.0, 16)
    assert high.power_timeline() == free.power_timeline() and high.stats.throttled == 0


@pytest.mark.parametrize("cap", [None, 10.0, 8.0])
def test_twice_the_work_never_costs_less_energy(cap):
    one, two = run(cap, 10), run(cap, 20)
    assert energy_j(two) >= energy_j(one) > 0
    assert energy_j(two) >= 2 * energy_j(one) * 0.9     # a throttled launch costs less, never less than ~0.5x


def test_deterministic():
    assert run(9.0, 16).power_timeline() == run(9.0, 16).power_timeline()


def test_reset_clock_forgets_the_window():
    d = run(10.0, 16)
    d.platform.reset_clock()
    assert d.power_timeline() == []


@pytest.mark.parametrize("bad", [0, -5, "1ms", True, None, 2e9])
def test_a_bad_window_names_the_key(bad):
    with pytest.raises(vnpu.ConfigError, match="power_window_us"):
        vnpu.Platform({"power_window_us": bad})
