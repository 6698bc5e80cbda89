"""Every command that reports time reports energy and power too (issue 18; docs/power.md section 1): `vnpu info`
the area and power envelope, `vnpu op` and `vnpu run` energy, average (and, for one launch, peak) watts and TOPS/W,
`vnpu profile` and `vnpu serve` energy per card and per inference (PCIe included), average and peak watts and
inferences per joule."""
import json
import re

import pytest

from vnpu.cli import main
from vnpu.emulator.power import CALIBRATION_KERNEL


def test_info_prints_area_and_the_power_envelope(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\d+ mm\^2", out) and re.search(r"[\d.]+ / [\d.]+ W at [\d.]+ V \([\d.]+ TOPS/W\)", out)
    assert re.search(r"power cap 12 W per card over 1000 us windows", out)       # the platform's cap and window
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["platform"]["power_cap_w"] == 12 and info["platform"]["power_window_us"] == 1000


def test_op_prints_energy_average_power_and_tops_per_w(capsys):
    assert main(["op", "matmul", "--m", "64", "--k", "128", "--n", "64"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"energy: [\d.]+ uJ, [\d.]+ W average", out) and re.search(r"[\d.]+ TOPS/W", out)


def test_run_prints_energy_average_and_peak_power_and_tops_per_w(tmp_path, capsys):
    src = tmp_path / "peak.s"
    src.write_text(CALIBRATION_KERNEL)
    assert main(["run", str(src), "--kernel", "peak", "--arg", "reps=1", "--arg", "m=256"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"energy [\d.]+ uJ over [\d.]+ us: [\d.]+ W average = peak", out)
    assert re.search(r"[\d.]+ TOPS/W", out)
    assert main(["run", str(src), "--kernel", "peak", "--arg", "reps=1", "--arg", "m=256", "--json"]) == 0
    e = json.loads(capsys.readouterr().out)["energy"]
    assert e["total_j"] > 0 and e["average_w"] > 0 and e["tops_per_w"] > 0


@pytest.fixture(scope="module")
def rm1_profile():
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["profile", "rm1", "--cards", "2", "--strategy", "pipeline"]) == 0
    return buf.getvalue()


def test_profile_prints_energy_per_card_and_inference_power_and_inferences_per_joule(rm1_profile):
    out = rm1_profile
    assert re.search(r"card 0: .* mJ \(launches [\d.]+, PCIe [\d.]+\), [\d.]+ W average while running, [\d.]+ W peak",
                     out)
    m = re.search(r"energy: ([\d.]+) mJ = cards ([\d.]+) \+ PCIe ([\d.]+) mJ; per inference ([\d.]+) mJ", out)
    assert m and float(m.group(1)) == pytest.approx(float(m.group(2)) + float(m.group(3)), abs=2e-3)
    assert float(m.group(3)) > 0                                       # the requests' PCIe copies
    assert re.search(r"power: [\d.]+ W average per card while running, [\d.]+ W peak", out)
    assert re.search(r"[\d.]+ requests per joule \(inferences/J", out)


def test_profile_json_has_the_energy_breakdown(capsys):
    assert main(["profile", "rm1", "--cards", "2", "--strategy", "pipeline", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["energy_j"] == pytest.approx(d["card_energy_j"] + d["pcie_energy_j"])
    assert d["pcie_energy_j"] > 0 and d["requests_per_j"] == pytest.approx(1 / d["energy_j"])
    assert sum(c["energy_j"] for c in d["per_card"].values()) == pytest.approx(d["energy_j"])
    assert 0 < d["average_w"] <= d["peak_w"]


def test_serve_prints_energy_power_and_inferences_per_joule(capsys):
    assert main(["serve", "rm1", "--cards", "2", "--requests", "4", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    m = re.search(r"energy: ([\d.]+) mJ = cards ([\d.]+) \+ PCIe ([\d.]+) mJ; per inference ([\d.]+) mJ", out)
    assert m and float(m.group(4)) == pytest.approx(float(m.group(1)) / 4, abs=2e-3)
    assert re.search(r"power: [\d.]+ W average per card while running, [\d.]+ W peak", out)
    assert re.search(r"per card: 0: [\d.]+ mJ \(PCIe [\d.]+\), [\d.]+ W average, [\d.]+ W peak", out)
    assert re.search(r"[\d.]+ items per joule \(2 per inference\)", out)
    assert main(["serve", "rm1", "--cards", "2", "--requests", "4", "--batch", "2", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["energy_j"] == pytest.approx(d["card_energy_j"] + d["pcie_energy_j"]) and d["pcie_energy_j"] > 0
    assert d["items_per_j"] == pytest.approx(8 / d["energy_j"])
    assert d["requests_per_j"] == pytest.approx(4 / d["energy_j"])
    assert d["energy_per_request_j"] == pytest.approx(d["energy_j"] / 4)
    assert sum(c["energy_j"] for c in d["per_card"].values()) == pytest.approx(d["energy_j"])
    assert 0 < d["average_w"] <= d["peak_w"]
