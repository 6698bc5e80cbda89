"""DMA engines: 1-D to 3-D strided copies between DRAM, shared SRAM and PE-local memory.

Cycles: setup, then the slowest of the engine's datapath and the memories it crosses; DRAM time is
counted in the bursts each contiguous run touches, at an efficiency that falls for short runs, and the
DRAM channel (and the shared SRAM ring) is one resource for the whole card, booked in global time order.
See docs/timing.md.
"""
import math

import numpy as np
from numba import njit

from .memory import copy_bytes, first_bad_byte, region_of, translate
from .state import (C_BURST, C_DMA_BPC, C_DMA_SETUP, C_DRAM_BPC, C_DRAM_LAT, C_LOCAL_BPC, C_PAGE_BYTES,
                    C_RAND_EFF, C_SRAM_BPC, C_SRAM_LAT, R_DRAM, R_SRAM, S_DRAM_BUSY, S_DRAM_RD, S_DRAM_WR,
                    S_LOCAL_RD, S_LOCAL_WR, S_SRAM_BUSY, S_SRAM_RD, S_SRAM_WR)

MAX_ROWS = 1 << 24


@njit(cache=True, nogil=True)
def dram_run_cycles(address, nbytes, cfg):
    """Cycles the DRAM channel is busy for one contiguous run: whole bursts, at an efficiency that rises
    from `random_efficiency` for a lone burst to 1 for a run of a DRAM page or more."""
    if nbytes <= 0:
        return 0.0
    burst = cfg[C_BURST]
    first = address // burst
    last = (address + nbytes - 1) // burst
    moved = (last - first + 1) * burst
    eff = cfg[C_RAND_EFF] + (1.0 - cfg[C_RAND_EFF]) * min(1.0, moved / cfg[C_PAGE_BYTES])
    return moved / cfg[C_DRAM_BPC] / eff


@njit(cache=True, nogil=True)
def book(res, channel, begin, cycles, cstat, busy_stat):
    """Book `cycles` on a card-wide channel (the DRAM channel, the SRAM ring), first come first served in
    global time order; returns when this use of it ends."""
    start = max(begin, res[channel])
    res[channel] = start + cycles
    cstat[busy_stat] += cycles
    return start + cycles


@njit(cache=True, nogil=True)
def check_rows(ptab, lay, pe, base, nbytes, c1, s1, c2, s2):
    """(False, first address not mapped) for the first row that is not wholly mapped, (True, 0) when all
    rows are valid. The flag is separate because any int64, negative ones included, can be the bad address.
    Zero-byte rows move nothing and are not checked (a no-op, like memcpy of 0 bytes)."""
    if nbytes <= 0:
        return True, np.int64(0)
    for k2 in range(c2):
        for k1 in range(c1):
            a = base + k1 * s1 + k2 * s2
            if translate(ptab, lay, pe, a, nbytes) < 0:
                # a row may span two allocations that are each mapped: check page by page
                bad = first_bad_byte(ptab, lay, pe, a, nbytes)
                done = 0
                while done < nbytes:
                    chunk = min(nbytes - done, 65536 - ((a + done) & 65535))
                    if translate(ptab, lay, pe, a + done, chunk) < 0:
                        return False, bad
                    done += chunk
    return True, np.int64(0)


@njit(cache=True, nogil=True)
def transfer(mem, pe, desc, t_start, cfg, res, cstat):
    """Copy and time one descriptor `desc` = (dst, src, nbytes, c1, ss1, ds1, c2, ss2, ds2) for PE pe in the
    memories `mem` (state.Memory). Returns (status, end_cycle, bad_address); status 0 ok, 1 bad source
    address, 2 bad destination address."""
    pool, ptab, lay = mem.pool, mem.ptab, mem.layout
    dst, src, nbytes, c1, ss1, ds1, c2, ss2, ds2 = desc
    ok, bad = check_rows(ptab, lay, pe, src, nbytes, c1, ss1, c2, ss2)
    if not ok:
        return 1, t_start, bad
    ok, bad = check_rows(ptab, lay, pe, dst, nbytes, c1, ds1, c2, ds2)
    if not ok:
        return 2, t_start, bad
    src_region = region_of(lay, src)
    dst_region = region_of(lay, dst)
    dram_cyc = 0.0
    for k2 in range(c2):
        for k1 in range(c1):
            s = src + k1 * ss1 + k2 * ss2
            d = dst + k1 * ds1 + k2 * ds2
            copy_bytes(pool, ptab, lay, pe, d, s, nbytes)
            if src_region == 2:
                dram_cyc += dram_run_cycles(s, nbytes, cfg)
            if dst_region == 2:
                dram_cyc += dram_run_cycles(d, nbytes, cfg)
    total = nbytes * c1 * c2
    # bytes per memory level
    for region, rd in ((src_region, True), (dst_region, False)):
        if region == 2:
            cstat[S_DRAM_RD if rd else S_DRAM_WR] += total
        elif region == 1:
            cstat[S_SRAM_RD if rd else S_SRAM_WR] += total
        else:
            cstat[S_LOCAL_RD if rd else S_LOCAL_WR] += total
    begin = t_start + int(cfg[C_DMA_SETUP])
    stream = total / cfg[C_DMA_BPC]
    latency = 0
    end = begin + int(math.ceil(stream))
    if src_region == 0 or dst_region == 0:
        end = max(end, begin + int(math.ceil(total / cfg[C_LOCAL_BPC])))
    if src_region == 1 or dst_region == 1:
        end = max(end, book(res, R_SRAM, begin, int(math.ceil(total / cfg[C_SRAM_BPC])), cstat, S_SRAM_BUSY))
        latency = max(latency, int(cfg[C_SRAM_LAT]))
    if dram_cyc > 0:
        end = max(end, book(res, R_DRAM, begin, int(math.ceil(dram_cyc)), cstat, S_DRAM_BUSY))
        latency = max(latency, int(cfg[C_DRAM_LAT]))
    return 0, end + latency, -1
