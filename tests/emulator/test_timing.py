"""The timing model against its references: SCALE-Sim v3 for the matrix unit, the DMA/DRAM formulas of
docs/timing.md, and the card's peaks as invariants."""
import json
import math

import numpy as np
import pytest

from vnpu.validation import DATA as BENCH_DATA
from vnpu.validation import MATMUL   # mm.ldw then mm.mul of (m, kk, n): the SCALE-Sim comparison

from vnpu.emulator.card import Card
from vnpu.emulator.matrix import multiply_cycles
from vnpu.emulator.state import P_MACS, S_DRAM_BUSY, S_DRAM_RD, S_DRAM_WR
from vnpu.isa import table as T

from conftest import put, run

DATA = json.loads((BENCH_DATA / "scalesim_gemm.json").read_text())
ROWS = [r for r in DATA["rows"] if r["dataflow"] in ("ws", "os")]



def matrix_card(rows, cols, dataflow, depth=1):
    return Card("tiny", {"matrix.rows": rows, "matrix.cols": cols, "matrix.dataflow": dataflow,
                         "matrix.depth": depth, "local_memory.bytes": 8 << 20})


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r['dataflow']}-{r['array_rows']}x{r['array_cols']}-"
                                                      f"{r['M']}x{r['N']}x{r['K']}")
def test_matrix_cycles_match_scalesim(row):
    """The mm.mul that ran (its span on the matrix track) against SCALE-Sim's compute cycles: within 5%
    (the model reproduces them exactly)."""
    card = matrix_card(row["array_rows"], row["array_cols"], row["dataflow"])
    M, N, K = row["M"], row["N"], row["K"]
    res = run(card, MATMUL, args=(M, K, N), trace=True)
    spans = [e for e in res.events if e[5] == T.OP_MM_MUL]
    assert len(spans) == 1
    cycles = int(spans[0][3] - spans[0][2])
    ref = row["compute_cycles"]
    assert abs(cycles - ref) / ref <= 0.05, (cycles, ref)
    assert cycles == ref


def test_depth_and_fp16_rate():
    # depth slices split K: 4 deep on 32x32 folds K by 128, each fold fills 32 rows; + log2(4) adder tree
    folds = math.ceil(512 / (32 * 4)) * math.ceil(64 / 32)
    assert multiply_cycles(64, 64, 512, 32, 32, 4, 0, 1.0) == folds * (2 * 32 + 32 + 64 - 2) - 1 + 2
    assert multiply_cycles(64, 64, 512, 32, 32, 4, 0, 1.0) < multiply_cycles(64, 64, 512, 32, 32, 1, 0, 1.0) / 3
    assert multiply_cycles(64, 64, 64, 32, 32, 1, 0, 0.5) == 2 * multiply_cycles(64, 64, 64, 32, 32, 1, 0, 1.0)


def test_dma_cycles_follow_the_formula():
    card = Card("tiny")
    cfg = card.config
    nbytes = 64 * 1024
    src = put(card, np.zeros(nbytes, np.uint8))
    prog = f".kernel k\n.arg a, buffer, u8\n li r5, {nbytes}\n dma e0, zero, a, r5, s0\n wait s0, 1\n halt\n"
    res = run(card, prog, args=(src,), trace=True)
    span = [e for e in res.events if e[5] == T.OP_DMA][0]
    dram_bpc = cfg.dram.gbps / cfg.clock_ghz
    dram = nbytes / dram_bpc  # one long run: full efficiency
    expect = cfg.dma.setup_cycles + math.ceil(max(nbytes / cfg.dma.bytes_per_cycle, nbytes / cfg.local_memory.bytes_per_cycle,
                                                  dram)) + cfg.dram.latency_cycles
    assert abs(int(span[3] - span[2]) - expect) <= 1


def test_short_random_runs_pay_dram_efficiency():
    """64 rows of 64 B scattered with a 4 KiB stride keep DRAM busy longer than one 4 KiB run."""
    card = Card("tiny")
    src = put(card, np.zeros(64 * 4096, np.uint8))
    strided = (".kernel k\n.arg a, buffer, u8\n li r5, 64\n li r6, 4096\n li r7, 64\n dma.dim e0, d1, r5, r6, r7\n"
               " dma e0, zero, a, r7, s0\n wait s0, 1\n halt\n")
    dense = ".kernel k\n.arg a, buffer, u8\n li r7, 4096\n dma e0, zero, a, r7, s0\n wait s0, 1\n halt\n"
    busy_strided = run(card, strided, args=(src,)).card_stats[S_DRAM_BUSY]
    busy_dense = run(card, dense, args=(src,)).card_stats[S_DRAM_BUSY]
    eff = card.config.dram.random_efficiency
    assert busy_strided > 1.5 * busy_dense
    assert busy_strided >= 64 * 64 / (card.config.dram.gbps / card.config.clock_ghz) / (eff + (1 - eff) * 64 / 2048)


def test_dram_is_shared_in_global_time_order():
    """Four PEs copying at once take as long as the DRAM channel needs for all their bytes."""
    card = Card("tiny")
    nbytes = 128 * 1024
    src = put(card, np.zeros(4 * nbytes, np.uint8))
    prog = (f".kernel k\n.arg a, buffer, u8\n csrr r10, pe_id\n li r5, {nbytes}\n mul r6, r10, r5\n add r6, a, r6\n"
            f" dma e0, zero, r6, r5, s0\n wait s0, 1\n halt\n")
    one = run(card, prog, args=(src,), pes=(0,)).cycles
    four = run(card, prog, args=(src,), pes=(0, 1, 2, 3))
    dram_bpc = card.config.dram.gbps / card.config.clock_ghz
    assert four.cycles >= 4 * nbytes / dram_bpc
    assert four.cycles > 1.5 * one   # one PE is bound by its engine, four by the shared channel


KERNELS = {
    "matmul": (MATMUL, lambda card: (256, 64, 64)),
    "dma": (".kernel k\n.arg a, buffer, u8\n li r5, 65536\n dma e0, zero, a, r5, s0\n dma e0, r5, a, r5, s1\n"
            " wait s0, 1\n wait s1, 1\n halt\n", lambda card: (put(card, np.zeros(1 << 16, np.uint8)),)),
}


@pytest.mark.parametrize("name", list(KERNELS))
@pytest.mark.parametrize("config", ["tiny", "reference"])
def test_no_kernel_exceeds_the_card_peaks(name, config):
    card = Card(config)
    src, args = KERNELS[name]
    res = run(card, src, args=args(card), pes=tuple(range(card.config.pes)))
    cfg = card.config
    peak_macs = cfg.matrix.rows * cfg.matrix.cols * cfg.matrix.depth * cfg.matrix.int8_rate * cfg.pes
    assert res.pe_stats[:, P_MACS].sum() <= peak_macs * res.cycles
    dram_bytes = res.card_stats[S_DRAM_RD] + res.card_stats[S_DRAM_WR]
    assert dram_bytes <= cfg.dram.gbps / cfg.clock_ghz * res.cycles
    assert res.cycles > 0
