"""`vnpu bench --quick`: the run CI makes. Fidelity figures (vnpu.validation) are deterministic and must be
inside their bounds; speed figures are wall-clock and only checked to be measured (positive), never
compared. The fidelity checks come from vnpu.validation; only the command's own module (its text and its
exit code) is the bench package's."""
import json
import subprocess
import sys

import pytest

from vnpu import validation
from vnpu.cli import main


@pytest.fixture(scope="module")
def report():
    """`vnpu bench --quick --json`, the command itself, in its own process: exit 0 means every fidelity
    figure is inside its bound."""
    run = subprocess.run([sys.executable, "-m", "vnpu", "bench", "--quick", "--json"], capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)


def test_fidelity_figures_are_inside_their_bounds(report):
    f = report["fidelity"]
    assert report["ok"]
    assert f["matrix"]["points"] == 80 and f["matrix"]["max_rel_error"] <= 0.05
    assert f["pcie"]["max_rel_error"] <= 0.02 and len(f["pcie"]["rows"]) == 12
    assert f["embedding"]["cases"] == 22 and f["embedding"]["ok"]
    assert 0 < f["peaks"]["max_fraction"] <= 1.0


def test_speed_figures_are_measured(report):
    s = report["speed"]
    assert s["emulator"]["instructions_per_s"] > 0 and s["emulator"]["card_cycles_per_wall_s"] > 0
    assert set(s["matmul"]) == {"int8", "fp16"} and all(x["slowdown_vs_numpy"] > 0 for x in s["matmul"].values())
    assert s["embedding"]["slowdown_vs_native"] > 0 and s["dlrm"]["slowdown_vs_numpy"] > 0
    assert s["start"]["warm_s"] > 0 and s["start"]["cold_s"] is None      # --quick skips the cold start
    assert s["memory"]["host_per_written_byte"] > 0
    from vnpu.bench.commands import format_text
    text = format_text(report)
    assert "DLRM demo" in text and "matrix vs SCALE-Sim v3" in text and "OUT OF BOUND" not in text


def test_validation_text_and_tables(report):
    lines = validation.format_lines(report["fidelity"])
    assert len(lines) == len(validation.CHECKS) and not any("OUT OF BOUND" in x for x in lines)
    assert "| array | dataflow |" in validation.format_markdown(report["fidelity"])


def test_a_figure_outside_its_bound_is_out_of_bound(monkeypatch):
    monkeypatch.setitem(validation.BOUNDS, "pcie_max_rel_error", -1.0)
    pcie = validation.pcie_vs_spec(quick=True)
    assert pcie["ok"] is False and pcie["bound"] == -1.0


def test_a_figure_outside_its_bound_fails_the_command(monkeypatch, capsys):
    monkeypatch.setattr("vnpu.bench.commands.run_bench",
                        lambda quick, progress=None: _with_pcie_bound(quick, -1.0))
    assert main(["bench", "--quick", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["fidelity"]["pcie"]["ok"] is False and out["fidelity"]["matrix"]["ok"] is True


def _with_pcie_bound(quick, bound):
    pcie = validation.pcie_vs_spec(quick)
    pcie["ok"] = pcie["max_rel_error"] <= bound
    matrix = {"ok": True}
    return {"quick": quick, "fidelity": {"pcie": pcie, "matrix": matrix}, "speed": {},
            "ok": pcie["ok"] and matrix["ok"]}
