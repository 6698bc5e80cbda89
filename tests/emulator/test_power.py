"""The energy, power and area model (emulator/power.py, docs/power.md): the calibration points with real
launches on the reference card, energy conservation, monotonicity in work, operating points, area scaling
and the config keys. All deterministic."""
import numpy as np
import pytest

import vnpu
from vnpu.emulator.power import CALIBRATION_KERNEL
from vnpu.emulator import power
from vnpu.emulator.card import Card
from vnpu.emulator.config import load_config
from vnpu.kernels.library import all_ops

# Every PE: a 128 x 32 int8 weight tile, then `reps` mm.mul of A (m x 128, PE-local) by it, back to back:
# one fold each (K = rows x depth, N = cols), so the array streams m rows a fold and every matrix unit is
# busy from the first cycle to the last. Operands are whatever local memory holds (the model prices counts).
PEAK = CALIBRATION_KERNEL
# One PE spins a scalar loop: the rest of the card idles for the launch's time.
SPIN = """
.kernel spin
.arg n, scalar, i32
top:
    loop n, top
    halt
"""


@pytest.fixture(scope="module")
def reference():
    return Card("reference")


def test_int8_peak_lands_at_12_w_and_4_tops_per_w(reference):
    """Calibration: an int8 matmul keeping all twelve matrix units busy draws about 12 W at about 4 TOPS/W
    (published: 50 TOPS at 12 W = 4.17 TOPS/W, "up to 4.8 TOPS/W"; band and derivation in docs/power.md)."""
    r = reference.launch(vnpu.assemble(PEAK), "peak", (8, 4096))
    s = r.summary()
    assert len(r.pes) == 12 and s["units"]["matrix"]["utilization"] > 0.99
    e = r.energy()
    assert 11.0 <= e["average_w"] <= 13.0, e["average_w"]
    assert 3.7 <= e["tops_per_w"] <= 4.5, e["tops_per_w"]
    assert e["units"]["matrix"]["total_j"] > 0.75 * e["total_j"]      # the array is where a peak kernel spends
    again = reference.launch(vnpu.assemble(PEAK), "peak", (8, 4096)).energy()
    assert again == e                                                 # deterministic
    # the analytic peak (every array busy at its MAC rate) is the same model at 100 %
    peak = power.peak_power(reference.config)
    assert abs(peak["w"] - 12.0) < 0.25 and abs(peak["tops"] - 49.152) < 1e-9
    assert peak["w"] >= e["average_w"]


def test_idle_card_power_and_only_over_the_launch_time(reference):
    idle = power.idle_power(reference.config)
    assert 2.0 <= idle <= 2.8, idle                                    # stated in docs/power.md: about 2.4 W
    img = vnpu.assemble(SPIN)
    short = reference.launch(img, "spin", (2000,), pes=[0]).energy()
    long = reference.launch(img, "spin", (4000,), pes=[0]).energy()
    for e in (short, long):
        assert abs(e["average_w"] - idle) / idle < 0.02                # one scalar core busy: nearly idle
        assert e["tops_per_w"] is None                                 # no MACs, no TOPS/W
    # static energy is static power times the launch's time, nothing more
    assert abs(long["static_j"] / short["static_j"] - long["seconds"] / short["seconds"]) < 1e-9
    static_w = sum(u["static_j"] for u in short["units"].values()) / short["seconds"]
    assert static_w < idle


def _run_op(card, name, **params):
    spec = all_ops()[name]
    p = dict(spec.params, **params)
    inputs = spec.make_inputs(np.random.default_rng(0), p)
    _, result = spec.run(card, inputs, p, None)
    return result


@pytest.mark.parametrize("name, size", [("matmul", "m"), ("add", "n"), ("embedding_bag", "bags"),
                                        ("softmax", "rows")])
def test_energy_adds_up_and_twice_the_work_never_costs_less(name, size):
    card = Card("tiny")
    small_params = {"matmul": dict(m=32, k=64, n=48), "add": dict(n=4096), "embedding_bag": dict(rows=2000, bags=16),
                    "softmax": dict(rows=32, d=256)}[name]
    one = _run_op(card, name, **small_params)
    two = _run_op(card, name, **dict(small_params, **{size: 2 * small_params[size]}))
    for r in (one, two):
        e = r.energy()
        units = e["units"]
        assert set(units) == set(power.UNITS)
        assert abs(sum(u["total_j"] for u in units.values()) - e["total_j"]) <= 1e-12 * e["total_j"]
        for u in units.values():
            assert min(u.values()) >= 0
            assert abs(u["dynamic_j"] + u["idle_j"] + u["static_j"] - u["total_j"]) <= 1e-15 + 1e-12 * u["total_j"]
        assert abs(e["dynamic_j"] + e["idle_j"] + e["static_j"] - e["total_j"]) <= 1e-12 * e["total_j"]
        assert abs(e["average_w"] * e["seconds"] - e["total_j"]) <= 1e-12 * e["total_j"]
    assert two.energy()["total_j"] >= one.energy()["total_j"]
    assert two.energy()["dynamic_j"] >= one.energy()["dynamic_j"]


def test_the_counts_priced_are_the_launch_statistics():
    card = Card("tiny")
    r = _run_op(card, "matmul", m=32, k=64, n=48)
    c = power.counts(r)
    s = r.summary()
    assert c["macs"] == s["macs"] == 32 * 64 * 48
    assert c["matrix_busy"] == s["units"]["matrix"]["busy_cycles"]
    assert c["dram_read"] == s["bytes"]["dram_read"] and c["local_write"] == s["bytes"]["local_write"]
    # each action adds its energy: one more MAC costs exactly the int8 MAC energy
    base = power.energy(card.config, c, r.cycles)
    more = power.energy(card.config, dict(c, macs=c["macs"] + 10 ** 6), r.cycles)
    assert abs(more["total_j"] - base["total_j"] - 1e6 * card.config.power.matrix.mac_int8_pj * 1e-12) < 1e-15
    # element types: fp16 MACs cost more than int8, fp32 more than fp16; vector lanes likewise by width
    e = {dt: power.energy(card.config, {"macs": 10 ** 6}, 1000, mac_dtype=dt)["total_j"] for dt in ("int8", "fp16", "fp32")}
    assert e["int8"] < e["fp16"] < e["fp32"]
    v = {dt: power.energy(card.config, {"vector_elements": 10 ** 6}, 1000, vector_dtype=dt)["total_j"]
         for dt in ("int8", "fp16", "int32", "fp32")}
    assert v["int8"] < v["fp16"] < v["int32"] < v["fp32"]
    with pytest.raises(vnpu.InvalidArgument, match="mac_dtype"):
        r.energy(mac_dtype="int4")
    # the reference engine keeps no time: no energy, no power
    z = card.launch(vnpu.assemble(SPIN), "spin", (5,), pes=[0], engine="reference").energy()
    assert z["total_j"] == 0 and z["average_w"] == 0


def test_operating_points_move_power_and_time_as_the_model_says(reference):
    cfg = reference.config
    assert power.operating_point(cfg) == {"clock_ghz": 0.5, "volts": 0.70, "extrapolated": False}
    mid = power.operating_point(cfg, 0.55)
    assert abs(mid["volts"] - 0.73) < 1e-12 and not mid["extrapolated"]
    assert power.operating_point(cfg, 2.0) == {"clock_ghz": 2.0, "volts": 1.05, "extrapolated": True}
    r = reference.launch(vnpu.assemble(PEAK), "peak", (2, 4096))
    at = {f: r.energy(clock_ghz=f) for f in (0.4, 0.5, 0.6)}
    for f, e in at.items():
        assert abs(e["seconds"] - r.cycles / (f * 1e9)) < 1e-15        # cycles stay cycles, time stretches
    assert at[0.4]["average_w"] < at[0.5]["average_w"] < at[0.6]["average_w"]
    assert at[0.4]["tops_per_w"] > at[0.5]["tops_per_w"] > at[0.6]["tops_per_w"]
    # dynamic energy of the same actions scales as V^2
    ratio = at[0.6]["units"]["matrix"]["dynamic_j"] / at[0.5]["units"]["matrix"]["dynamic_j"]
    assert abs(ratio - (0.76 / 0.70) ** 2) < 1e-12
    # the published envelope: the same silicon sold from 10 to 50 W, "up to 4.8 TOPS/W"
    pts = [f for f, _ in cfg.power.operating_points]
    peaks = [power.peak_power(cfg, f) for f in pts]
    assert min(p["w"] for p in peaks) < 10 and 45 <= max(p["w"] for p in peaks) <= 55
    assert max(p["tops_per_w"] for p in peaks) >= 4.8
    # another card config: a higher clock override picks its voltage from the table
    fast = load_config("reference", {"clock_ghz": 0.6})
    assert power.operating_point(fast)["volts"] == 0.76 and power.peak_power(fast)["w"] > power.peak_power(cfg)["w"]


def test_area_grows_with_the_array_and_the_memories():
    ref = load_config("reference")
    a = power.card_area(ref)
    assert 120 <= a["total_mm2"] <= 260, a["total_mm2"]       # WikiChip lists 239 mm^2; see docs/power.md
    assert abs(sum(a["units"].values()) - a["total_mm2"]) < 1e-9
    rows = power.card_area(ref.with_overrides({"matrix.rows": 64}))
    assert abs(rows["units"]["matrix"] - 2 * a["units"]["matrix"]) < 1e-9
    assert abs(rows["total_mm2"] - a["total_mm2"] - a["units"]["matrix"]) < 1e-9
    sram = power.card_area(ref.with_overrides({"shared_sram.bytes": 2 * ref.shared_sram.bytes,
                                               "local_memory.bytes": 2 * ref.local_memory.bytes}))
    grown = a["units"]["shared_sram"] + a["units"]["local_memory"]
    assert abs(sram["total_mm2"] - a["total_mm2"] - grown) < 1e-9
    pes = power.card_area(ref.with_overrides({"pes": 8}))
    assert pes["total_mm2"] < a["total_mm2"]
    assert power.card_area(load_config("tiny"))["total_mm2"] < a["total_mm2"]


def test_power_envelope_and_pcie_energy():
    env = power.power_envelope("reference")
    assert env["idle_w"] < env["peak_w"] and abs(env["peak_w"] - 12.0) < 0.25 and env["volts"] == 0.70
    assert power.pcie_energy("reference", 1 << 20, 3) == (1 << 20) * 8 * 6.0e-12
    assert power.pcie_energy("reference", 1 << 20, 4) < power.pcie_energy("reference", 1 << 20, 3)
    with pytest.raises(vnpu.InvalidArgument, match="generation"):
        power.pcie_energy("reference", 10, 2)


@pytest.mark.parametrize("overrides, message", [
    ({"power.matrix.mac_int8_pj": -1}, "'power.matrix.mac_int8_pj' = -1 is out of range"),
    ({"power.dram.pj_per_bit": "x"}, "'power.dram.pj_per_bit' must be a number"),
    ({"power.matrix.bogus": 1}, "unknown config key 'power.matrix.bogus'"),
    ({"power.operating_points": [[0.5, 0.7], [0.4, 0.8]]}, "rising clocks"),
    ({"power.operating_points": [[0.5]]}, "point 0 must be a pair"),
    ({"power.operating_points": [[0.5, 3.0]]}, "volts = 3.0 is out of range"),
    ({"power.operating_points": []}, "list of 1 to 16"),
    ({"area.mac_um2": -5}, "'area.mac_um2' = -5 is out of range"),
])
def test_bad_power_and_area_keys_name_the_key(overrides, message):
    with pytest.raises(vnpu.ConfigError, match=message):
        load_config("tiny", overrides)


def test_a_yaml_without_power_takes_the_reference_sections(tmp_path):
    import yaml
    data = load_config("tiny").data
    del data["power"], data["area"]
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    c = load_config(str(p), {"power.uncore.static_w": 0.5})
    assert c.power.uncore.static_w == 0.5 and c.area.uncore_mm2 == load_config("reference").area.uncore_mm2
    # the embedded YAMLs mark their power and area values' sources
    import importlib.resources as r
    text = r.files("vnpu.emulator").joinpath("configs", "reference.yaml").read_text()
    section = text[text.index("power:"):]
    assert section.count("[inf]") >= 40


def test_vnpu_op_reports_energy_power_and_tops_per_w(capsys):
    import json
    from vnpu.cli import main
    assert main(["op", "matmul", "--m", "64", "--k", "128", "--n", "64", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    e = r["energy"]
    assert e["total_uj"] > 0 and e["average_w"] > 0 and (e["mac_dtype"], e["vector_dtype"]) == ("int8", "fp32")
    assert abs(sum(e["units_uj"].values()) - e["total_uj"]) <= 1e-9 * e["total_uj"]
    assert abs(e["average_w"] - e["total_uj"] * 1e-6 / (r["time_us"] * 1e-6)) <= 1e-9 * e["average_w"]
    assert r["roofline"]["tops_per_w"] == e["tops_per_w"] > 0
    assert abs(e["tops_per_w"] - r["roofline"]["ops"] / (e["total_uj"] * 1e-6) / 1e12) < 1e-12
    assert main(["op", "add", "--n", "4096", "--pes", "2"]) == 0
    out = capsys.readouterr().out
    assert "energy:" in out and " W average (fp32 lanes" in out and "TOPS/W" not in out   # no MACs, no TOPS/W
    assert main(["op", "matmul", "--dtype", "fp16", "--m", "32", "--k", "64", "--n", "32"]) == 0
    out = capsys.readouterr().out
    assert "TOPS/W" in out and "fp16 MACs, fp16 lanes" in out


def test_vnpu_info_shows_area_and_power_envelope(capsys):
    import json
    from vnpu.cli import main
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "155 mm^2" in out and "2.4 / 12.0 W at 0.70 V" in out
    assert main(["info", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)["platform"]["cards"][0]
    assert set(card["power"]) == {"area_mm2", "idle_w", "peak_w", "peak_tops_per_w", "clock_ghz", "volts"}
    assert card["power"]["idle_w"] < card["power"]["peak_w"]


def test_every_power_and_area_key_is_documented():
    from pathlib import Path
    from vnpu.emulator.config import AREA, POWER
    doc = (Path(__file__).resolve().parents[2] / "docs" / "power.md").read_text()
    keys = [k for k, v in AREA.items()]
    for k, v in POWER.items():
        keys += [f"{k}.{sub}" for sub in v] if isinstance(v, dict) else [k]
    missing = [k for k in keys if k not in doc and k.rsplit(".", 1)[-1] not in doc]
    assert not missing, missing
