"""vnpu sweep (issue 19): the grid, Dask workers (one killed mid-sweep), the cache, error rows, vnpu plot."""
import os
import signal

import pytest

pd = pytest.importorskip("pandas")
distributed = pytest.importorskip("distributed")

from vnpu.cli import main  # noqa: E402
from vnpu.sweeps import FIGURES, RUN_COLUMNS, sweep  # noqa: E402

SPACE = {"matrix.rows": [4, 8], "matrix.cols": [4, 8], "dram.gbps": [34.0, 67.2]}   # 8 points
PARAMS = {"m": 64, "k": 128, "n": 128}


def same_figures(a, b):
    cols = [c for c in a.columns if c not in RUN_COLUMNS]
    pd.testing.assert_frame_equal(a[cols].reset_index(drop=True), b[cols].reset_index(drop=True))


@pytest.fixture(scope="module")
def serial():
    df = sweep(SPACE, "matmul", PARAMS, workers=0, cache=None)
    assert len(df) == 8 and df["error"].isna().all()
    assert df.attrs["computed"] == 8
    return df


def test_grid_columns(serial):
    assert list(serial[["matrix.rows", "matrix.cols", "dram.gbps"]].itertuples(index=False, name=None))[:3] == \
        [(4, 4, 34.0), (4, 4, 67.2), (4, 8, 34.0)]
    for col in FIGURES:
        assert col in serial.columns
    assert (serial["cycles"] > 0).all() and (serial["energy_j"] > 0).all() and (serial["area_mm2"] > 0).all()
    # a bigger array is faster and bigger; faster DRAM never slower
    r = serial.set_index(["matrix.rows", "matrix.cols", "dram.gbps"])
    assert r.loc[(8, 8, 67.2), "cycles"] < r.loc[(4, 4, 67.2), "cycles"]
    assert r.loc[(8, 8, 67.2), "area_mm2"] > r.loc[(4, 4, 67.2), "area_mm2"]
    assert r.loc[(4, 4, 67.2), "cycles"] <= r.loc[(4, 4, 34.0), "cycles"]


def test_two_workers_equal_serial(serial, client):
    df = sweep(SPACE, "matmul", PARAMS, client=client, cache=None)
    same_figures(df, serial)
    assert df.attrs["computed"] == 8
    assert df["worker"].nunique() == 2      # both workers ran points


def test_killed_worker_every_point_once(serial, client, tmp_path):
    """SIGKILL the worker that sent the first row: the rows it still held (and its queued tasks) are
    recomputed on the other worker and its replacement; every point arrives exactly once, figures as serial."""
    space = dict(SPACE, **{"dram.latency_cycles": [100, 101, 102]})     # 24 points
    ref = sweep(space, "matmul", PARAMS, workers=0, cache=None)
    pids = {os.getpid()}
    killed, seen = [], []

    def on_row(i, row, cached):
        seen.append(i)
        if not killed:
            pid = int(row["worker"].rsplit(":", 1)[1])
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)

    df = sweep(space, "matmul", PARAMS, client=client, cache=str(tmp_path), on_row=on_row)
    assert killed and killed[0] not in pids
    assert sorted(seen) == list(range(24))            # each point reported exactly once
    assert len(df) == 24 and df["key"].is_unique and df["error"].isna().all()
    same_figures(df, ref)
    assert any(not w.endswith(f":{killed[0]}") for w in df["worker"])   # from a surviving or restarted worker
    client.wait_for_workers(2, timeout=30)
    assert killed[0] not in client.run(os.getpid).values()


def test_resume_from_cache(serial, tmp_path):
    """An interrupted sweep (Ctrl-C after 3 points) resumes: the rerun computes only the 5 missing points;
    a third run computes none."""
    class Stop(Exception):
        pass

    def stop_after_3(i, row, cached):
        if i == 2:
            raise Stop

    with pytest.raises(Stop):
        sweep(SPACE, "matmul", PARAMS, workers=0, cache=str(tmp_path), on_row=stop_after_3)
    df = sweep(SPACE, "matmul", PARAMS, workers=0, cache=str(tmp_path))
    assert (df.attrs["computed"], df.attrs["cached"]) == (5, 3)
    assert df["cached"].sum() == 3
    same_figures(df, serial)
    again = sweep(SPACE, "matmul", PARAMS, workers=0, cache=str(tmp_path))
    assert (again.attrs["computed"], again.attrs["cached"]) == (0, 8)
    same_figures(again, serial)


def test_bad_config_is_a_row(tmp_path):
    df = sweep({"matrix.rows": [4, 0, 8]}, "add", {"n": 1024}, workers=0, cache=str(tmp_path))
    assert len(df) == 3 and df.attrs["failed"] == 1
    assert df["error"].isna().tolist() == [True, False, True]
    assert "matrix.rows" in df["error"][1] and pd.isna(df["cycles"][1])
    # a bad op parameter: every row fails, none is lost
    df = sweep({"matrix.rows": [4, 8]}, "add", {"n": 0}, workers=0, cache=None)
    assert df["error"].str.contains("--n must be").all()


def test_command_writes_parquet_and_csv(tmp_path, capsys):
    out = tmp_path / "r.parquet"
    rc = main(["sweep", "--op", "add", "--param", "n=1024", "--set", "matrix.rows=4,8", "--set",
               "dram.gbps=34,67.2,0", "--workers", "0", "--cache", str(tmp_path / "c"), "-o", str(out), "-q"])
    assert rc == 0
    assert "6 points: 6 computed" in capsys.readouterr().out
    a, b = pd.read_parquet(out), pd.read_csv(tmp_path / "r.csv")
    assert len(a) == len(b) == 6 and a["error"].notna().sum() == 2
    assert list(a["cycles"].fillna(-1)) == list(b["cycles"].fillna(-1))
    # --samples: 3 of the 6
    rc = main(["sweep", "--op", "add", "--param", "n=1024", "--set", "matrix.rows=4,8", "--set",
               "dram.gbps=34,67.2,0", "--samples", "3", "--seed", "1", "--workers", "0", "--no-cache", "--json", "-q"])
    assert rc == 0 and '"points": 3' in capsys.readouterr().out


def test_command_errors(capsys):
    assert main(["sweep", "--op", "add", "--set", "matrix.rows", "--workers", "0"]) == 1
    assert "must look like KEY=V1,V2" in capsys.readouterr().err
    assert main(["sweep", "--op", "add", "--workers", "0", "--no-cache", "-o", "/nonexistent/x.parquet"]) == 1
    assert "no folder" in capsys.readouterr().err


def test_plot_pareto_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from vnpu.plot import pareto_mask
    assert pareto_mask([1, 2, 3, 2, 1], [5, 3, 4, 3, 6]) == [True, True, False, True, False]
    assert pareto_mask([1, 2, 3], [1, 2, 3], max_y=True) == [True, True, True]
    res = tmp_path / "r.parquet"
    assert main(["sweep", "--op", "matmul", "--param", "m=64", "--param", "k=128", "--param", "n=128", "--set",
                 "matrix.rows=4,8,0", "--set", "dram.gbps=34,67.2", "--workers", "0", "--no-cache", "-q",
                 "-o", str(res)]) == 0
    png = tmp_path / "p.png"
    assert main(["plot", str(res), "--x", "area_mm2", "--y", "ops_per_s", "--color", "matrix.rows", "--pareto",
                 "-o", str(png)]) == 0
    out = capsys.readouterr().out
    assert "4 points" in out and "on the Pareto front" in out and "2 failed points not shown" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert main(["plot", str(res), "--x", "nope", "--y", "ops_per_s", "-o", str(png)]) == 1
    assert "no column 'nope'" in capsys.readouterr().err


def test_latin_hypercube_levels_even_and_seeded(capsys):
    from collections import Counter

    from vnpu.sweeps import latin_hypercube, points_of
    axes = {"matrix.rows": [4, 8, 16], "matrix.cols": [4, 8], "dram.gbps": [17, 34, 67.2, 134]}
    pts = latin_hypercube(axes, 10, seed=3)
    assert len(pts) == 10
    for key, levels in axes.items():
        counts = Counter(p[key] for p in pts)
        assert set(counts) == set(levels)                      # every level appears
        assert max(counts.values()) - min(counts.values()) <= 1    # as evenly as possible
    assert latin_hypercube(axes, 10, seed=3) == pts            # deterministic with the seed
    assert latin_hypercube(axes, 10, seed=4) != pts            # shuffled per seed
    assert [p for p, _ in points_of(axes, samples=10, seed=3, method="lhs")] == pts
    with pytest.raises(Exception, match="needs samples"):
        points_of(axes, method="lhs")
    # the API and the command
    df = sweep({"matrix.rows": [4, 8], "dram.gbps": [34.0, 67.2, 134.0]}, "add", {"n": 1024}, samples=6,
               method="lhs", seed=1, workers=0, cache=None)
    assert len(df) == 6 and df["error"].isna().all()
    assert sorted(Counter(df["matrix.rows"]).values()) == [3, 3]
    assert sorted(Counter(df["dram.gbps"]).values()) == [2, 2, 2]
    assert main(["sweep", "--op", "add", "--param", "n=1024", "--set", "matrix.rows=4,8", "--set",
                 "dram.gbps=34,67.2,134", "--lhs", "4", "--workers", "0", "--no-cache", "--json", "-q"]) == 0
    assert '"points": 4' in capsys.readouterr().out
    assert main(["sweep", "--op", "add", "--set", "matrix.rows=4,8", "--lhs", "4", "--samples", "2",
                 "--workers", "0", "--no-cache", "-q"]) == 1
    assert "not both" in capsys.readouterr().err


RM1 = {"model": "rm1", "options": {"rows_scale": 1e-5}}


def test_model_sweep_rows_sensible_and_deterministic():
    """rm1 compiled and served at 4 points (platform.cards x matrix.rows): latency percentiles ordered, more
    cards more throughput and twice the area, the card keys in the row, the same rows on a rerun."""
    space = {"platform.cards": [1, 2], "matrix.rows": [16, 32]}
    df = sweep(space, RM1, {"batch": 8, "requests": 4}, workers=0, cache=None)
    assert len(df) == 4 and df["error"].isna().all(), df["error"].tolist()
    assert list(df["cards"]) == [1, 1, 2, 2] and (df["model"] == "rm1").all() and (df["config"] == "reference").all()
    assert (df["latency_p50_us"] > 0).all()
    assert (df["latency_p50_us"] <= df["latency_p90_us"]).all() and (df["latency_p90_us"] <= df["latency_p99_us"]).all()
    assert (df["energy_j"] > 0).all() and (df["items_per_j"] > 0).all()
    assert ((df["items_per_s"] * df["makespan_us"] / 1e6 - 32).abs() < 1e-6).all()     # 4 requests x batch 8
    r = df.set_index(["platform.cards", "matrix.rows"])
    for rows in (16, 32):
        assert r.loc[(2, rows), "items_per_s"] > r.loc[(1, rows), "items_per_s"]
        assert r.loc[(2, rows), "area_mm2"] == pytest.approx(2 * r.loc[(1, rows), "area_mm2"])
    assert r.loc[(1, 32), "card_area_mm2"] > r.loc[(1, 16), "card_area_mm2"]
    again = sweep(space, RM1, {"batch": 8, "requests": 4}, workers=0, cache=None)
    same_figures(df, again)


def test_model_sweep_resnet_and_command(tmp_path, capsys):
    out = tmp_path / "r.parquet"
    assert main(["sweep", "--model", "resnet50", "--model-option", "image=32", "--batch", "1", "--requests", "2",
                 "--dtype", "fp16", "--set", "dram.gbps=17,134", "--workers", "0", "--cache", str(tmp_path / "c"),
                 "-q", "-o", str(out)]) == 0
    df = pd.read_parquet(out)
    assert len(df) == 2 and df["error"].isna().all() and (df["dtype"] == "fp16").all()
    assert (df["option.image"] == 32).all()
    assert df["items_per_s"][1] >= df["items_per_s"][0]          # faster DRAM: never slower
    capsys.readouterr()
    # a bad model name, a platform key without a model, --param with a model: usage errors
    assert main(["sweep", "--model", "resnet5", "--workers", "0", "--no-cache", "-q"]) == 1
    assert "no built-in model 'resnet5'" in capsys.readouterr().err
    with pytest.raises(Exception, match="no built-in model"):
        sweep({}, {"model": "nope"}, workers=0, cache=None)
    assert main(["sweep", "--op", "add", "--set", "platform.cards=1,2", "--workers", "0", "--no-cache", "-q"]) == 1
    assert "platform.* keys need a model" in capsys.readouterr().err
    assert main(["sweep", "--model", "rm1", "--param", "n=1", "--workers", "0", "--no-cache", "-q"]) == 1
    assert main(["sweep", "--workers", "0", "--no-cache", "-q"]) == 1
    assert "--op NAME" in capsys.readouterr().err
    # a bad option value or card key is an error row, not a lost sweep
    df = sweep({"platform.cards": [1, 0]}, RM1, {"batch": 2, "requests": 2}, workers=0, cache=None)
    assert df["error"].isna().tolist() == [True, False] and "cards" in df["error"][1]


def test_plot_model_results_grouped_colour(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    res = tmp_path / "m.csv"
    assert main(["sweep", "--model", "rm1", "--model-option", "rows_scale=1e-5", "--batch", "4", "--requests", "2",
                 "--set", "matrix.rows=16,32", "--set", "matrix.cols=16,32", "--workers", "0", "--no-cache", "-q",
                 "-o", str(res)]) == 0
    png = tmp_path / "m.png"
    assert main(["plot", str(res), "--x", "area_mm2", "--y", "items_per_j", "--color", "matrix.rows,matrix.cols",
                 "--pareto", "-o", str(png)]) == 0
    assert "4 points" in capsys.readouterr().out and png.stat().st_size > 10_000
    from vnpu.plot import label, legend_entry
    assert label("items_per_s") == "throughput (items/s)"
    assert legend_entry("shared_sram.bytes", 6291456) == "shared SRAM = 6 MiB"
