"""Every trace the CLI writes has duration events on the tracks it names (issue 13, item 18: `vnpu op
--trace` wrote only metadata). Runs each subcommand that takes --trace: op (several ops), run, demo."""
import collections
import json
import pathlib
import re

import pytest

from vnpu.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[2]
UNIT_TRACKS = {"matrix": r"PE \d+ matrix", "vector": r"PE \d+ vector", "dma": r"PE \d+ DMA e\d+",
               "embedding": r"embedding unit"}


def check_trace(path, busy_units=()):
    """The trace's tracks (thread_name metadata) carry duration events: at least one overall, every PE
    core's track, every process that names tracks, and each unit the summary says was busy."""
    events = json.loads(pathlib.Path(path).read_text())["traceEvents"]
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    xs = [e for e in events if e["ph"] == "X"]
    assert names and xs, f"{path}: {len(names)} named tracks, {len(xs)} duration events"
    per_track = collections.Counter((e["pid"], e["tid"]) for e in xs)
    for e in xs:
        assert (e["pid"], e["tid"]) in names, f"duration event on an unnamed track: {e}"
        assert e["dur"] >= 0 and e["ts"] >= 0 and e["name"]
    for key, name in names.items():
        if re.fullmatch(r"PE \d+", name):        # a PE named in the trace ran the launch: it issued
            assert per_track[key], f"track {name!r} (pid {key[0]}) has no duration events"
    for pid in {k[0] for k in names}:
        assert any(k[0] == pid for k in per_track), f"process {pid} names tracks but has no duration events"
    for unit in busy_units:
        assert any(per_track[k] for k, n in names.items() if re.fullmatch(UNIT_TRACKS[unit], n)), \
            f"the {unit} unit was busy but its tracks have no duration events"
    return names, per_track


OPS = {"add": ["--n", "4096"], "sigmoid": ["--n", "2048", "--dtype", "fp16"],
       "matmul": ["--m", "32", "--k", "64", "--n", "48"], "fc": ["--m", "32", "--k", "64", "--n", "32"],
       "layer_norm": ["--rows", "8", "--d", "64"], "concat": ["--rows", "16"],
       "transpose": ["--rows", "32", "--cols", "16"],
       "embedding_bag": ["--rows", "1000", "--bags", "8", "--pooling", "4", "--dim", "16"],
       "dot_interaction": ["--batch", "4", "--tables", "3", "--dim", "16"],
       "conv2d": ["--h", "8", "--w", "8", "--c", "4", "--oc", "8"]}


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_trace_has_duration_events(name, tmp_path, capsys):
    path = tmp_path / f"{name}.json"
    assert main(["op", name, "--json", "--pes", "2", "--trace", str(path), *OPS[name]]) == 0
    report = json.loads(capsys.readouterr().out)
    busy = [u for u, v in report["units"].items() if u in UNIT_TRACKS and v["busy_cycles"] > 0]
    names, per_track = check_trace(path, busy)
    assert report["trace"] == str(path)


def test_run_trace_has_duration_events(tmp_path, capsys):
    module, path = tmp_path / "v.vnpu", tmp_path / "run.json"
    assert main(["asm", str(ROOT / "examples" / "vector_add.s"), "-o", str(module)]) == 0
    n = 2048
    assert main(["run", str(module), "--kernel", "vadd", "--config", "tiny", "--arg", f"a=zeros:{4 * n}",
                 "--arg", f"b=zeros:{4 * n}", "--arg", f"out=zeros:{4 * n}", "--arg", f"n={n}", "--json",
                 "--trace", str(path)]) == 0
    capsys.readouterr()
    check_trace(path, ["vector", "dma"])


def test_demo_trace_has_duration_events(tmp_path, capsys):
    path = tmp_path / "demo.json"
    assert main(["demo", "--json", "--batch", "8", "--requests", "2", "--trace", str(path)]) == 0
    capsys.readouterr()
    check_trace(path, ["matrix", "embedding", "dma"])
    events = json.loads(path.read_text())["traceEvents"]
    procs = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert {f"card {i}" for i in range(6)} <= procs
