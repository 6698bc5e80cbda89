"""The launch summary, the Chrome trace and `vnpu run`: numbers that agree with each other and with the data."""
import json
import pathlib
from collections import defaultdict

import numpy as np
import pytest

import vnpu
from vnpu.cli import main
from vnpu.emulator.card import Card
from vnpu.emulator.trace import chrome_trace, format_summary, summarize, write_chrome_trace

ROOT = pathlib.Path(__file__).resolve().parents[2]
VADD = ROOT / "examples" / "vector_add.s"
N = 1000   # not a multiple of the 256-element chunk: the last PE gets a short one

MATRIX_AND_SYNC = """
.kernel k
    mark 7
    li r5, 4
    mm.ldw zero, r5, r5, i8, s0      ; a 4x4 int8 weight tile from local 0
    wait s0, 1
    li r7, 64
    li r8, 256
    li r9, 8
    mm.mul r8, r7, r9, i8, set, s1   ; (8x4) @ (4x4): 128 MACs
    wait s1, 1
    barrier
    mark 9
    halt
"""


@pytest.fixture(scope="module")
def vadd():
    card = Card("tiny")
    a = np.arange(N, dtype=np.float32)
    b = np.full(N, 0.5, dtype=np.float32)
    pa, pb, po = (card.alloc(4 * N) for _ in range(3))
    card.write(pa, a)
    card.write(pb, b)
    result = card.launch(vnpu.assemble(VADD.read_text()), "vadd", [pa, pb, po, N], trace=True)
    np.testing.assert_array_equal(card.read(po, 4 * N, np.float32), a + b)
    return result


def _x_events(trace):
    return [e for e in trace["traceEvents"] if e["ph"] == "X"]


def _assert_nested(trace):
    """Slices on one thread nest or follow each other (Perfetto draws partly overlapping ones wrongly)."""
    by_tid = defaultdict(list)
    for e in _x_events(trace):
        by_tid[e["tid"]].append((e["ts"], e["ts"] + e["dur"]))
    for spans in by_tid.values():
        stack = []
        for start, end in sorted(spans, key=lambda s: (s[0], -s[1])):
            while stack and stack[-1] <= start + 1e-9:
                stack.pop()
            assert not stack or end <= stack[-1] + 1e-9, (start, end, stack)
            stack.append(end)


def test_summary_of_vector_add(vadd):
    s = vadd.summary()
    assert s["kernel"] == "vadd" and s["engine"] == "numba" and s["pes"] == [0, 1, 2, 3]
    assert s["cycles"] == vadd.cycles > 0
    assert s["time_us"] == pytest.approx(s["cycles"] / (0.5 * 1e3))
    for name, u in s["units"].items():
        assert 0.0 <= u["utilization"] <= 1.0, name
    assert s["units"]["pe"]["busy_cycles"] > 0 and s["units"]["dma"]["busy_cycles"] > 0
    assert s["units"]["vector"]["busy_cycles"] > 0 and s["units"]["matrix"]["busy_cycles"] == 0
    assert s["bytes"] == {"dram_read": 2 * 4 * N, "dram_write": 4 * N, "sram_read": 0, "sram_write": 0,
                          "local_read": 4 * N, "local_write": 2 * 4 * N}
    assert s["vector_elements"] == N and s["macs"] == 0 and s["instructions"] > 0
    assert s["stalls"]["semaphore_wait"] > 0 and s["stalls"]["barrier"] == 0
    assert s["embedding_lookups"] == 0 and s["trace_events_dropped"] == 0
    r = s["roofline"]
    assert r["achieved_dram_bytes_per_s"] == pytest.approx(3 * 4 * N / vadd.seconds)
    assert r["arithmetic_intensity"] == 0.0 and r["achieved_ops_per_s"] == 0.0
    assert r["peak_ops_per_s"] == pytest.approx(2 * 4 * 4 * 1 * 1.0 * 4 * 0.5e9)
    assert r["peak_dram_bytes_per_s"] == pytest.approx(67.2e9)
    json.dumps(s)
    text = format_summary(s)
    assert "vadd" in text and str(s["cycles"]) in text and str(2 * 4 * N) in text


def test_trace_agrees_with_the_statistics(vadd):
    """Each DMA, vector op and stall appears once in the trace: the events add up to the counters."""
    us = 1 / (0.5 * 1e3)
    trace = chrome_trace(vadd)
    names = {e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    total = defaultdict(float)
    dma_bytes = 0
    for e in _x_events(trace):
        total[e["name"]] += e["dur"] / us
        if e["name"] == "dma":
            assert "DMA e0" in names[e["tid"]]
            dma_bytes += e["args"]["bytes"]
    s = summarize(vadd)
    assert total["dma"] == pytest.approx(s["units"]["dma"]["busy_cycles"])
    assert total["vadd"] == pytest.approx(s["units"]["vector"]["busy_cycles"])
    assert total["wait"] == pytest.approx(s["stalls"]["semaphore_wait"])
    assert dma_bytes == s["bytes"]["dram_read"] + s["bytes"]["dram_write"]
    assert sum(e["args"]["elements"] for e in _x_events(trace) if e["name"] == "vadd") == N


def test_chrome_trace_structure(vadd, tmp_path):
    trace = chrome_trace(vadd, card_name="card 3", pid=3, start_ns=2000.0)
    assert trace["displayTimeUnit"] == "ns"
    events = trace["traceEvents"]
    for e in events:
        assert {"ph", "ts", "pid", "tid", "name"} <= e.keys(), e
        assert e["pid"] == 3
    meta = [e for e in events if e["ph"] == "M"]
    assert {"name": "card 3"} in [e["args"] for e in meta if e["name"] == "process_name"]
    names = {e["tid"]: e["args"]["name"] for e in meta if e["name"] == "thread_name"}
    sort = {e["tid"] for e in meta if e["name"] == "thread_sort_index"}
    for pe in range(4):
        for track in (f"PE {pe}", f"PE {pe} matrix", f"PE {pe} vector", f"PE {pe} DMA e0", f"PE {pe} DMA e1"):
            assert track in names.values()
    assert "embedding unit" in names.values()
    assert len(set(names.values())) == len(names) and sort == set(names)
    xs = _x_events(trace)
    assert {"run", "wait", "dma", "vadd"} <= {e["name"] for e in xs}
    for e in xs:
        assert e["dur"] >= 0 and e["ts"] >= 2.0 and e["tid"] in names
        assert e["ts"] + e["dur"] <= 2.0 + vadd.cycles / 500 + 1e-9
    assert min(e["ts"] for e in xs) == pytest.approx(2.0)   # the first run starts at cycle 0
    _assert_nested(trace)
    json.dumps(trace)
    other = chrome_trace(vadd, card_name="card 4", pid=4)
    path = tmp_path / "merged.json"
    write_chrome_trace(path, [trace, other])
    merged = json.loads(path.read_text())
    assert len(merged["traceEvents"]) == len(events) + len(other["traceEvents"])
    assert {e["pid"] for e in merged["traceEvents"]} == {3, 4}


def test_marks_barrier_and_matrix():
    card = Card("tiny")
    result = card.launch(vnpu.assemble(MATRIX_AND_SYNC), "k", [], pes=[1, 2], trace=True)
    s = result.summary()
    assert s["pes"] == [1, 2] and s["macs"] == 2 * 8 * 4 * 4
    assert s["stalls"]["barrier"] >= 2 * 20 and 0 < s["units"]["matrix"]["utilization"] <= 1
    assert s["bytes"]["dram_read"] == 0 and s["roofline"]["arithmetic_intensity"] is None
    assert s["roofline"]["achieved_ops_per_s"] == pytest.approx(2 * s["macs"] / result.seconds)
    trace = result.chrome_trace()
    _assert_nested(trace)
    events = trace["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    marks = [e for e in events if e["ph"] == "i"]
    assert sorted(e["name"] for e in marks) == ["mark 7", "mark 7", "mark 9", "mark 9"]
    assert {names[e["tid"]] for e in marks} == {"PE 1", "PE 2"}
    mul = [e for e in events if e["name"] == "mm.mul"]
    assert len(mul) == 2 and all(e["args"]["macs"] == 128 for e in mul)
    assert {names[e["tid"]] for e in mul} == {"PE 1 matrix", "PE 2 matrix"}
    assert {e["args"]["weight_elements"] for e in events if e["name"] == "mm.ldw"} == {16}
    barriers = [e for e in events if e["name"] == "barrier"]
    assert len(barriers) == 2 and all(e["dur"] >= 20 / 500 - 1e-9 for e in barriers)


def test_dma_utilization_counts_every_engine():
    """Two engines of one PE busy at once: their busy cycles add up past the launch's cycles, the
    utilization (over PEs x engines) stays a fraction."""
    src = """
.kernel k
    li r5, 4096
    li r6, 8192
    li r8, 12288
    dma e0, r6, zero, r5, s0         ; local [0, 4K) -> [8K, 12K) on engine 0
    dma e1, r8, r5, r5, s0           ; local [4K, 8K) -> [12K, 16K) on engine 1, at the same time
    wait s0, 2
    halt
"""
    card = Card("tiny", {"dma.engines_per_pe": 2})
    result = card.launch(vnpu.assemble(src), "k", [], pes=[0], trace=True)
    s = summarize(result)
    assert s["units"]["dma"]["busy_cycles"] > s["cycles"]
    assert 0.45 < s["units"]["dma"]["utilization"] <= 1
    assert s["bytes"]["local_read"] == s["bytes"]["local_write"] == 2 * 4096
    dma = [e for e in result.chrome_trace()["traceEvents"] if e["name"] == "dma"]
    assert len({e["tid"] for e in dma}) == 2


def test_dma_queue_full_stall():
    src = """
.kernel k
    li r5, 4096
    li r6, 8192
    dma e0, r6, zero, r5, s0
    dma e0, r5, r6, r5, s0           ; the queue (depth 1) is full: the PE stalls until the first is done
    wait s0, 2
    halt
"""
    result = Card("tiny", {"dma.queue_depth": 1}).launch(vnpu.assemble(src), "k", [], pes=[0], trace=True)
    s = summarize(result)
    trace = chrome_trace(result)
    _assert_nested(trace)
    full = [e for e in _x_events(trace) if e["name"] == "dma queue full"]
    assert len(full) == 1 and full[0]["args"] == {"pc": 3, "instruction": "dma", "engine": 0}
    assert s["stalls"]["dma_queue_full"] > 0
    assert full[0]["dur"] == pytest.approx(s["stalls"]["dma_queue_full"] / 500)


def test_summary_without_cycles_or_events_has_no_division_by_zero():
    card = Card("tiny")
    result = card.launch(vnpu.assemble(".kernel k\n  halt\n"), "k", [], pes=[0], trace=False)
    s = summarize(result)
    assert all(0 <= u["utilization"] <= 1 for u in s["units"].values())
    assert s["roofline"]["arithmetic_intensity"] is None
    assert [e["ph"] for e in chrome_trace(result)["traceEvents"]] == ["M"] * (1 + 2 * 6)


@pytest.fixture
def files(tmp_path):
    module = tmp_path / "vadd.vnpu"
    assert main(["asm", str(VADD), "-o", str(module)]) == 0
    np.save(tmp_path / "a.npy", np.arange(N, dtype=np.float32))
    np.save(tmp_path / "b.npy", np.full(N, 2.0, dtype=np.float32))
    return tmp_path, ["run", str(module), "--kernel", "vadd", "--config", "tiny",
                      "--arg", f"a={tmp_path / 'a.npy'}", "--arg", f"b={tmp_path / 'b.npy'}"]


def test_vnpu_run_json_trace_and_out(files, capsys):
    tmp, cmd = files
    capsys.readouterr()
    rc = main(cmd + ["--arg", f"out=zeros:{4 * N}", "--arg", f"n={N}", "--json",
                     "--trace", str(tmp / "t.json"), "--out", f"out={tmp / 'o.npy'}"])
    out = capsys.readouterr().out
    assert rc == 0
    s = json.loads(out)
    assert s["cycles"] > 0 and s["pes"] == [0, 1, 2, 3] and s["bytes"]["dram_read"] == 2 * 4 * N
    assert s["outputs"]["out"] == {"file": str(tmp / "o.npy"), "dtype": "float32", "shape": [N]}
    got = np.load(tmp / "o.npy")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.arange(N, dtype=np.float32) + 2)
    trace = json.loads((tmp / "t.json").read_text())
    assert any(e["name"] == "vadd" for e in trace["traceEvents"])


def test_vnpu_run_text_on_fewer_pes(files, capsys):
    tmp, cmd = files
    capsys.readouterr()
    extra = ["--arg", "out=zeros:4000", "--arg", "n=1000", "--pes", "2", "--set", "dma.engines_per_pe=1"]
    assert main(cmd + extra) == 0
    out = capsys.readouterr().out
    assert "vadd:" in out and "cycles" in out and "on PEs 0,1:" in out and "dram" in out


@pytest.mark.parametrize("extra, message", [
    (["--arg", "out=zeros:4000"], "missing argument(s) n"),
    (["--arg", "out=zeros:4000", "--arg", "n=10", "--arg", "m=3"], "unknown argument(s) m"),
    (["--arg", "out=zeros:4000", "--arg", "n=ten"], "'n'"),
    (["--arg", "out=zeros:4000", "--arg", "n=10", "--out", "n=x.npy"], "--out n"),
    (["--arg", "out=zeros:4000", "--arg", "n=10", "--pes", "9"], "pes"),
])
def test_vnpu_run_errors_are_one_line(files, capsys, extra, message):
    tmp, cmd = files
    capsys.readouterr()
    assert main(cmd + extra) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vnpu run: error:") and message in lines[0], captured.err


def test_vnpu_run_rejects_a_wrong_dtype(files, capsys):
    tmp, cmd = files
    np.save(tmp / "a.npy", np.arange(N, dtype=np.float64))
    capsys.readouterr()
    assert main(cmd + ["--arg", "out=zeros:4000", "--arg", "n=10"]) == 1
    err = capsys.readouterr().err
    assert "float64" in err and "float32" in err and len(err.strip().splitlines()) == 1
