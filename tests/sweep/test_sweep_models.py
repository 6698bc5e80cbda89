"""vnpu sweep over imported models (.onnx, file.py:callable) and serving scenarios (requests x inflight), a model
sweep on two Dask workers against a serial run, the progress bar, and vnpu plot's line, log and roofline plots
(issue 19)."""
import io
import json
import os

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("distributed")
onnx = pytest.importorskip("onnx")

from onnx import TensorProto as TP  # noqa: E402
from onnx import helper as oh  # noqa: E402
from onnx import numpy_helper as nh  # noqa: E402

from vnpu.cli import main  # noqa: E402
from vnpu.errors import InvalidArgument, VnpuError  # noqa: E402
from vnpu.sweeps import RUN_COLUMNS, model_workload, sweep  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def mlp_onnx(path, batch="N", seed=0):
    """x[batch, 64] -> MatMul 64x128 -> Add -> Relu -> MatMul 128x16: a small ONNX file."""
    rng = np.random.default_rng(seed)
    consts = {"w1": rng.standard_normal((64, 128)).astype(np.float32),
              "b1": rng.standard_normal(128).astype(np.float32),
              "w2": rng.standard_normal((128, 16)).astype(np.float32)}
    g = oh.make_graph([oh.make_node("MatMul", ["x", "w1"], ["h"]), oh.make_node("Add", ["h", "b1"], ["h2"]),
                       oh.make_node("Relu", ["h2"], ["h3"]), oh.make_node("MatMul", ["h3", "w2"], ["y"])], "mlp",
                      [oh.make_tensor_value_info("x", TP.FLOAT, [batch, 64])],
                      [oh.make_tensor_value_info("y", TP.FLOAT, [batch, 16])],
                      [nh.from_array(v, k) for k, v in consts.items()])
    onnx.save(oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)], ir_version=8), str(path))
    return str(path)


def same_figures(a, b):
    cols = [c for c in a.columns if c not in RUN_COLUMNS]
    pd.testing.assert_frame_equal(a[cols].reset_index(drop=True), b[cols].reset_index(drop=True))


def test_onnx_model_serving_scenarios(tmp_path, capsys):
    """--model FILE.onnx with --inflight as an axis: every row has latency percentiles and items/s; one card with
    2 in flight doubles the latency at the same throughput, two cards with 2 in flight double the throughput."""
    model = mlp_onnx(tmp_path / "mlp.onnx")
    out = tmp_path / "r.parquet"
    assert main(["sweep", "--model", model, "--batch", "4", "--requests", "4", "--inflight", "1,2", "--set",
                 "platform.cards=1,2", "--workers", "0", "--cache", str(tmp_path / "c"), "-q", "-o", str(out)]) == 0
    df = pd.read_parquet(out)
    assert len(df) == 4 and df["error"].isna().all(), df["error"].tolist()
    assert (df["model"] == os.path.abspath(model)).all() and (df["batch"] == 4).all()
    assert list(df["inflight"]) == [1, 2, 1, 2] and list(df["cards"]) == [1, 1, 2, 2]
    for col in ("latency_p50_us", "latency_p90_us", "latency_p99_us", "items_per_s", "energy_j", "items_per_j"):
        assert (df[col] > 0).all(), col
    assert (df["latency_p50_us"] <= df["latency_p99_us"]).all()
    assert ((df["card_energy_j"] + df["pcie_energy_j"] - df["energy_j"]).abs() <= 1e-12 * df["energy_j"]).all()
    r = df.set_index(["platform.cards", "inflight"])
    assert r.loc[(1, 2), "latency_p50_us"] == pytest.approx(2 * r.loc[(1, 1), "latency_p50_us"], rel=1e-6)
    assert r.loc[(1, 2), "items_per_s"] == pytest.approx(r.loc[(1, 1), "items_per_s"], rel=1e-6)
    assert r.loc[(2, 2), "items_per_s"] == pytest.approx(2 * r.loc[(1, 2), "items_per_s"], rel=1e-6)
    # inflight left out: as many as cards, written in the row
    df = sweep({"platform.cards": [2]}, model_workload(model), {"batch": 4, "requests": 2}, workers=0, cache=None)
    assert df["inflight"].tolist() == [2] and df["error"].isna().all()
    # the file's content is in the cache key: the same sweep is free, an edited model is recomputed
    capsys.readouterr()
    args = ["sweep", "--model", model, "--batch", "4", "--requests", "2", "--workers", "0",
            "--cache", str(tmp_path / "c2"), "--json", "-q"]
    assert main(args) == 0 and json.loads(capsys.readouterr().out)["computed"] == 1
    assert main(args) == 0 and json.loads(capsys.readouterr().out)["cached"] == 1
    mlp_onnx(tmp_path / "mlp.onnx", seed=1)
    assert main(args) == 0 and json.loads(capsys.readouterr().out)["computed"] == 1


def test_callable_model_and_bad_models(tmp_path, capsys):
    """file.py:callable returning (torch model, inputs): the inputs' leading dimension is the row's batch;
    --batch, model options, missing files and callables are typed errors naming what was wrong."""
    pytest.importorskip("torch")
    spec = os.path.join(HERE, "tiny_torch_model.py") + ":mlp"
    df = sweep({"platform.cards": [1, 2]}, model_workload(spec), {"requests": 2, "dtype": "fp16"}, workers=0,
               cache=None)
    assert df["error"].isna().all(), df["error"].tolist()
    assert (df["batch"] == 4).all() and (df["items_per_s"] > 0).all() and (df["latency_p99_us"] > 0).all()
    assert df["items_per_s"][1] > df["items_per_s"][0]
    with pytest.raises(InvalidArgument, match="--batch is for built-in and .onnx models"):
        sweep({}, model_workload(spec), {"batch": [1, 2]}, workers=0, cache=None)
    assert main(["sweep", "--model", spec, "--model-option", "image=32", "--workers", "0", "--no-cache", "-q"]) == 1
    assert "model options (image) are for the built-in models" in capsys.readouterr().err
    for bad, what in ((str(tmp_path / "none.onnx"), "no such file"), (str(tmp_path / "none.py") + ":f", "no such file"),
                      ("no_such_module_xyz:f", "no module no_such_module_xyz"),
                      ("m.vnpp", "a compiled .vnpp program is fixed to the platform")):
        assert main(["sweep", "--model", bad, "--workers", "0", "--no-cache", "-q"]) == 1
        assert what in capsys.readouterr().err
    with pytest.raises(VnpuError, match="no such file"):
        model_workload(str(tmp_path / "none.onnx"))
    # a callable that is missing or returns the wrong thing: every point is an error row naming it
    for fn, what in (("nope", "has no function nope"), ("not_a_pair", "must return (model, example_inputs)")):
        df = sweep({"platform.cards": [1]}, model_workload(spec.replace(":mlp", f":{fn}")), workers=0, cache=None)
        assert what in df["error"][0]


def test_model_sweep_on_two_dask_workers_equals_serial(client):
    """A built-in model (rm1, tiny tables) compiled and served at 4 points on two Dask worker processes: the same
    rows as a serial run, both workers used."""
    space = {"platform.cards": [1, 2], "matrix.rows": [16, 32]}
    wl = {"model": "rm1", "options": {"rows_scale": 1e-5}}
    params = {"batch": 4, "requests": 3, "inflight": [1, 2]}
    serial = sweep(space, wl, params, workers=0, cache=None)
    assert len(serial) == 8 and serial["error"].isna().all(), serial["error"].tolist()
    df = sweep(space, wl, params, client=client, cache=None)
    same_figures(df, serial)
    assert df["worker"].nunique() == 2


class TTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_tty_only(tmp_path, capsys):
    pytest.importorskip("tqdm")
    tty = TTY()
    sweep({"matrix.rows": [4, 0, 8]}, "add", {"n": 1024}, workers=0, cache=str(tmp_path), progress=tty)
    last = tty.getvalue().rstrip("\n").split("\r")[-1]
    assert "3/3 points" in last and "1 failed" in last and "0 cached" in last and "points/min" in last
    tty = TTY()     # a rerun from the cache: the bar starts at 3 of 3
    sweep({"matrix.rows": [4, 0, 8]}, "add", {"n": 1024}, workers=0, cache=str(tmp_path), progress=tty)
    assert "3 cached" in tty.getvalue() and "1 failed" in tty.getvalue()
    not_tty = io.StringIO()
    sweep({"matrix.rows": [4, 8]}, "add", {"n": 1024}, workers=0, cache=None, progress=not_tty)
    assert not_tty.getvalue() == ""
    # the command: stderr is not a terminal under pytest, and -q silences it anyway
    assert main(["sweep", "--op", "add", "--param", "n=1024", "--set", "matrix.rows=4,8", "--workers", "0",
                 "--no-cache", "--json"]) == 0
    assert capsys.readouterr().err == ""


def test_plot_line_log(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from vnpu.plot import plot
    res = tmp_path / "r.csv"
    assert main(["sweep", "--op", "add", "--param", "n=4096", "--set", "matrix.rows=4,8", "--set",
                 "dram.gbps=4,8,16,32,64", "--workers", "0", "--no-cache", "-q", "-o", str(res)]) == 0
    png = tmp_path / "l.png"
    assert main(["plot", str(res), "--x", "dram.gbps", "--y", "seconds", "--color", "matrix.rows", "--kind", "line",
                 "--logx", "--logy", "-o", str(png)]) == 0
    assert "10 points" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    df = pd.read_csv(res)
    r = plot(df, "dram.gbps", "cycles", str(tmp_path / "l2.png"), kind="line")        # one line, no groups
    assert r["points"] == 10 and r["stacked"] == 1        # matrix.rows varies along it: said, not hidden
    r = plot(df, "dram.gbps", "cycles", str(tmp_path / "l3.png"), color="matrix.rows,dram.gbps", kind="line")
    assert r["points"] == 10 and r["stacked"] == 0
    with pytest.raises(InvalidArgument, match="--kind must be one of scatter, line"):
        plot(df, "dram.gbps", "cycles", str(png), kind="bar")
    with pytest.raises(InvalidArgument, match="--logy: 10 point"):
        plot(df, "dram.gbps", "util.embedding", str(png), logy=True)
    assert main(["plot", str(res), "--y", "cycles", "-o", str(png)]) == 1
    assert "give --x KEY and --y KEY" in capsys.readouterr().err


def test_roofline_of_a_profile(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from vnpu.emulator.config import load_config
    from vnpu.plot import roofline_points
    model = mlp_onnx(tmp_path / "mlp8.onnx", batch=8)
    assert main(["profile", model, "--cards", "1", "--batch", "8", "--json"]) == 0
    prof = tmp_path / "prof.json"
    prof.write_text(capsys.readouterr().out)
    png = tmp_path / "roof.png"
    assert main(["plot", str(prof), "--roofline", "-o", str(png)]) == 0
    out = capsys.readouterr().out
    assert "TOP/s compute roof" in out and "GB/s DRAM roof" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    # the ops as points: exact when a record carries its MACs, else estimated from matrix utilization
    cfg = load_config("reference")
    d = json.loads(prof.read_text())
    pts, skipped, estimated = roofline_points(d, cfg)
    assert pts and estimated == 0                        # the profile's records carry their MACs
    assert {p["node"] for p in pts} <= {r["node"] for r in d["ops"] if r["macs"] > 0}
    no_macs = {**d, "ops": [{k: v for k, v in r.items() if k != "macs"} for r in d["ops"]]}
    pts2, _, estimated = roofline_points(no_macs, cfg)  # an older profile: estimated, at least the MACs run
    assert estimated == len(pts2) == len(pts)
    assert all(b["ops"] >= a["ops"] * 0.999 for a, b in zip(pts, pts2))
    rec = {"request": 0, "op": "matmul", "node": "mm", "where": "card", "cycles": 1000, "start_ns": 0.0,
           "end_ns": 2000.0, "units": {"matrix": 0.5}, "bytes": {"dram_read": 3000, "dram_write": 1000}, "macs": 10**6}
    pts, skipped, estimated = roofline_points({"dtype": "int8", "ops": [rec, dict(rec, where="host", cycles=0)]}, cfg)
    assert estimated == 0 and len(pts) == 1 and skipped["on the host or without a launch"] == 1
    assert pts[0]["intensity"] == 2e6 / 4000 and pts[0]["ops_per_s"] == pytest.approx(2e6 / 2e-6)
    # misuse: not a profile, sweep-only flags, --config for sweep results
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": "x"}')
    assert main(["plot", str(bad), "--roofline", "-o", str(png)]) == 1
    assert "not a model profile" in capsys.readouterr().err
    assert main(["plot", str(prof), "--roofline", "--x", "cycles", "-o", str(png)]) == 1
    assert "--x do not apply" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "none.json"), "--roofline", "-o", str(png)]) == 1
    assert "no profile file" in capsys.readouterr().err
