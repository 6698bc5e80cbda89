"""Names of the columns of the arrays a launch runs on (compiled code indexes arrays, not objects), and the
few named structures a launch's state travels in."""
from collections import namedtuple

import numpy as np

# --- a launch's state, grouped by what it is (named tuples of arrays: free to pass to compiled code) -----
# decoded rows, entry pc, PEs, [rodata, card, launch], the address of each async unit's issue (units.py)
Program = namedtuple("Program", "code entry pe_ids ids unit_entry")
Memory = namedtuple("Memory", "pool ptab layout weights")         # the card's pool, a context's page table, the
                                                                  # address layout, the matrix units' weight buffers
Record = namedtuple("Record", "pstat cstat events evn")           # per-PE and card statistics, trace events
Checks = namedtuple("Checks", "fault san sanc sanitize")          # the fault record and the race sanitizer
# the units' timelines and the PEs' synchronization state, per PE: pending signal times and counts of each
# semaphore, when the vector and matrix units and each DMA engine are free, each engine's ring of completion
# cycles and its next slot, staged DMA dimensions, the matrix unit's loaded weight tile (K, N, dtype), and the
# pool offset of each PE's local memory
Units = namedtuple("Units", "semt semn vecfree matfree dmafree dmaring dmaring_i dims weights_kept lbase")
# the scheduler's per-PE state (pc, time, status, wake cycle, signals wanted, when it began waiting) and the
# barrier's count of arrived PEs and latest arrival cycle
Sched = namedtuple("Sched", "pc t status wake want wait_since barrier")
RUN, HALTED, WAITSEM, BARRIER = 0, 1, 2, 3      # a PE's status
INF_CYCLE = np.int64(1) << 62                   # "never" in cycles
# scratch arrays an issue fills for the sanitizer: read ranges, the access patterns, the race record
Scratch = namedtuple("Scratch", "reads plain pat where")

# --- the config vector (float64), filled from a CardConfig by `config_vector` ---------------------------
(C_CLOCK, C_PES, C_NSEM, C_WATCHDOG, C_BARRIER, C_LOCAL_BPC, C_SRAM_BPC, C_SRAM_LAT, C_DRAM_BPC, C_DRAM_LAT,
 C_BURST, C_PAGE_BYTES, C_RAND_EFF, C_MROWS, C_MCOLS, C_MDEPTH, C_MDATAFLOW, C_INT8_RATE, C_FP16_RATE,
 C_VWIDTH, C_VLAT, C_VTRANS, C_DMA_ENGINES, C_DMA_QDEPTH, C_DMA_SETUP, C_DMA_BPC, C_EMB_OUTSTANDING,
 C_EMB_BPC, C_WBUF_BYTES, C_FP32_RATE, C_WATCHDOG_INSTR) = range(31)
NCFG = 31
WEIGHT_BUFFER_BYTES = 1 << 20   # [inf] the matrix unit's weight buffer per PE

# --- per-PE statistics (int64[npe, NPSTAT]) -------------------------------------------------------------
(P_ISSUE, P_MATRIX, P_VECTOR, P_DMA, P_STALL_SEM, P_STALL_BARRIER, P_STALL_QUEUE, P_INSTR, P_MACS, P_VOPS,
 P_END) = range(11)
NPSTAT = 11

# --- card statistics (int64[NCSTAT]) ---------------------------------------------------------------------
(S_DRAM_RD, S_DRAM_WR, S_SRAM_RD, S_SRAM_WR, S_LOCAL_RD, S_LOCAL_WR, S_DRAM_BUSY, S_SRAM_BUSY, S_EMB_BUSY,
 S_EMB_LOOKUPS, S_EMB_ROWS, S_CYCLES, S_EV_DROPPED) = range(13)
NCSTAT = 13

# --- shared resources: the cycle each becomes free (int64[NRES]); contended in global time order ------
R_DRAM, R_SRAM, R_EMB = range(3)
NRES = 3

# --- trace events (int64[cap, NEV]) ------------------------------------------------------------------------
EV_TRACK, EV_PE, EV_START, EV_END, EV_PC, EV_OP, EV_AUX, EV_KIND = range(8)
NEV = 8
TRACK_PE, TRACK_MATRIX, TRACK_VECTOR, TRACK_EMB, TRACK_DMA0 = 0, 1, 2, 3, 4   # DMA engine e: TRACK_DMA0 + e
K_OP, K_STALL_SEM, K_STALL_BARRIER, K_STALL_QUEUE, K_MARK, K_RUN = range(6)

# --- faults (int64[NFAULT]) -----------------------------------------------------------------------------------
F_CODE, F_PE, F_PC, F_ADDR, F_PE2, F_PC2, F_AUX, F_RACE = range(8)
NFAULT = 8 + 7      # F_RACE starts the sanitizer's record of a race (sanitizer.NWHERE words)
FAULT_NONE, FAULT_ADDRESS, FAULT_INSTRUCTION, FAULT_DEADLOCK, FAULT_TIMEOUT, FAULT_RACE = range(6)
# F_AUX reasons for FAULT_INSTRUCTION
(WHY_SEMAPHORE, WHY_ENGINE, WHY_DTYPE, WHY_SIG_PE, WHY_SEM_OVERFLOW, WHY_DMA_SIZE, WHY_WEIGHTS, WHY_SIZE,
 WHY_NO_WEIGHTS, WHY_EMB_DESC, WHY_EMB_INDEX, WHY_EMB_SEGMENTS) = range(12)
WHY_TEXT = ("semaphore number beyond the card's semaphores", "DMA engine beyond the PE's engines",
            "dtype not supported by this operation", "sig to a PE outside the launch",
            "too many pending signals on one semaphore", "DMA descriptor too large or negative",
            "weight tile larger than the matrix unit's weight buffer", "negative or too large element count",
            "mm.mul before any mm.ldw", "bad embedding descriptor", "embedding index outside the table",
            "embedding lengths or offsets inconsistent")


def config_vector(cfg):
    c = np.zeros(NCFG, dtype=np.float64)
    c[C_CLOCK] = cfg.clock_ghz
    c[C_PES] = cfg.pes
    c[C_NSEM] = cfg.semaphores
    c[C_WATCHDOG] = cfg.watchdog_cycles
    c[C_BARRIER] = cfg.barrier_cycles
    c[C_LOCAL_BPC] = cfg.local_memory.bytes_per_cycle
    c[C_SRAM_BPC] = cfg.shared_sram.bytes_per_cycle
    c[C_SRAM_LAT] = cfg.shared_sram.latency_cycles
    c[C_DRAM_BPC] = cfg.dram.gbps / cfg.clock_ghz
    c[C_DRAM_LAT] = cfg.dram.latency_cycles
    c[C_BURST] = cfg.dram.burst_bytes
    c[C_PAGE_BYTES] = cfg.dram.page_bytes
    c[C_RAND_EFF] = cfg.dram.random_efficiency
    c[C_MROWS] = cfg.matrix.rows
    c[C_MCOLS] = cfg.matrix.cols
    c[C_MDEPTH] = cfg.matrix.depth
    c[C_MDATAFLOW] = 0 if cfg.matrix.dataflow == "ws" else 1
    c[C_INT8_RATE] = cfg.matrix.int8_rate
    c[C_FP16_RATE] = cfg.matrix.fp16_rate
    c[C_VWIDTH] = cfg.vector.width_bits
    c[C_VLAT] = cfg.vector.latency_cycles
    c[C_VTRANS] = cfg.vector.transcendental_cycles
    c[C_DMA_ENGINES] = cfg.dma.engines_per_pe
    c[C_DMA_QDEPTH] = cfg.dma.queue_depth
    c[C_DMA_SETUP] = cfg.dma.setup_cycles
    c[C_DMA_BPC] = cfg.dma.bytes_per_cycle
    c[C_EMB_OUTSTANDING] = cfg.embedding.outstanding
    c[C_EMB_BPC] = cfg.embedding.bytes_per_cycle
    c[C_WBUF_BYTES] = WEIGHT_BUFFER_BYTES
    c[C_FP32_RATE] = cfg.matrix.fp32_rate
    c[C_WATCHDOG_INSTR] = cfg.watchdog_instructions
    return c
