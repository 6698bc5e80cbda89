"""DMA engines: 1-D to 3-D strided copies between DRAM, shared SRAM and PE-local memory.

Cycles: setup, then the slowest of the engine's datapath and the memories it crosses; DRAM time is
counted in the bursts each contiguous run touches, at an efficiency that falls for short runs, and the
DRAM channel (and the shared SRAM ring) is one resource for the whole card, booked in global time order.
See docs/timing.md.
"""
import math

import numpy as np
from .jit import jit

from vnpu.isa import table as T

from . import sanitizer as san_mod
from .issue import Q_DMA0, complete, race, record_event, set_fault
from .memory import L_LOCAL_BYTES, copy_bytes, first_bad_byte, region_of, translate
from .state import (C_BURST, C_DMA_BPC, C_DMA_ENGINES, C_DMA_QDEPTH, C_DMA_SETUP, C_DRAM_BPC, C_DRAM_LAT,
                    C_LOCAL_BPC, C_NSEM, C_PAGE_BYTES, C_RAND_EFF, C_SRAM_BPC, C_SRAM_LAT, FAULT_ADDRESS,
                    FAULT_INSTRUCTION, K_STALL_QUEUE, P_DMA, P_STALL_QUEUE, R_DRAM, R_SRAM, S_DRAM_BUSY, S_DRAM_RD,
                    S_DRAM_WR, S_LOCAL_RD, S_LOCAL_WR, S_SRAM_BUSY, S_SRAM_RD, S_SRAM_WR, TRACK_DMA0, TRACK_PE,
                    WHY_DMA_SIZE, WHY_ENGINE, WHY_SEMAPHORE)

MAX_ROWS = 1 << 24


@jit
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


@jit
def book(res, channel, begin, cycles, cstat, busy_stat):
    """Book `cycles` on a card-wide channel (the DRAM channel, the SRAM ring), first come first served in
    global time order; returns when this use of it ends."""
    start = max(begin, res[channel])
    res[channel] = start + cycles
    cstat[busy_stat] += cycles
    return start + cycles


@jit
def span(base, nbytes, c1, s1, c2, s2):
    """[lo, hi): the bytes the rows of a strided access touch at most (strides may be negative)."""
    lo = base + min(0, (c1 - 1) * s1) + min(0, (c2 - 1) * s2)
    hi = base + max(0, (c1 - 1) * s1) + max(0, (c2 - 1) * s2) + nbytes
    return lo, hi


@jit
def check_rows(ptab, lay, pe, base, nbytes, c1, s1, c2, s2):
    """(False, first address not mapped) for the first row that is not wholly mapped, (True, 0) when all
    rows are valid. The flag is separate because any int64, negative ones included, can be the bad address.
    Zero-byte rows move nothing and are not checked (a no-op, like memcpy of 0 bytes)."""
    if nbytes <= 0:
        return True, np.int64(0)
    if c1 > 0 and c2 > 0:
        lo, hi = span(base, nbytes, c1, s1, c2, s2)
        if translate(ptab, lay, pe, lo, hi - lo) >= 0:     # the rows' whole span is mapped: so is every row
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


@jit
def copy_rows_fast(pool, ptab, lay, pe, dst, src, nbytes, c1, ss1, ds1, c2, ss2, ds2):
    """Copy every row when both the source's and the destination's spans are each one mapped, contiguous run
    of the pool and do not overlap: rows are then plain offsets into the pool, with no translation per row
    (a gather of 4-byte elements was ~100 ns a row through copy_bytes). Returns False, having copied
    nothing, when that does not hold; the caller then copies row by row (same bytes, same order)."""
    if nbytes <= 0 or c1 <= 0 or c2 <= 0:
        return True
    slo, shi = span(src, nbytes, c1, ss1, c2, ss2)
    dlo, dhi = span(dst, nbytes, c1, ds1, c2, ds2)
    if slo < dhi and dlo < shi:
        return False
    so = translate(ptab, lay, pe, slo, shi - slo)
    do = translate(ptab, lay, pe, dlo, dhi - dlo)
    if so < 0 or do < 0:
        return False
    so += src - slo
    do += dst - dlo
    # explicit loops, not pool[d:d + n] = pool[s:s + n]: Numba copies a slice of the same array through a
    # temporary (it may overlap), an allocation and a second pass per row
    if (so | do | ss1 | ds1 | ss2 | ds2 | nbytes) % 4 == 0 and len(pool) % 4 == 0:
        # word-aligned rows (fp32 / int32 elements, the common case): 4 bytes a step
        words = pool.view(np.uint32)
        nw = nbytes // 4
        for k2 in range(c2):
            for k1 in range(c1):
                s = (so + k1 * ss1 + k2 * ss2) // 4
                d = (do + k1 * ds1 + k2 * ds2) // 4
                for w in range(nw):
                    words[d + w] = words[s + w]
        return True
    for k2 in range(c2):
        for k1 in range(c1):
            s = so + k1 * ss1 + k2 * ss2
            d = do + k1 * ds1 + k2 * ds2
            for b in range(nbytes):
                pool[d + b] = pool[s + b]
    return True


@jit
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
    if not copy_rows_fast(pool, ptab, lay, pe, dst, src, nbytes, c1, ss1, ds1, c2, ss2, ds2):
        for k2 in range(c2):
            for k1 in range(c1):
                copy_bytes(pool, ptab, lay, pe, dst + k1 * ds1 + k2 * ds2, src + k1 * ss1 + k2 * ss2, nbytes)
    if src_region == 2 or dst_region == 2:
        for k2 in range(c2):
            for k1 in range(c1):
                if src_region == 2:
                    dram_cyc += dram_run_cycles(src + k1 * ss1 + k2 * ss2, nbytes, cfg)
                if dst_region == 2:
                    dram_cyc += dram_run_cycles(dst + k1 * ds1 + k2 * ds2, nbytes, cfg)
    total = nbytes * c1 * c2
    # bytes per memory level
    for region, rd in ((src_region, True), (dst_region, False)):
        if region == 2:
            cstat[S_DRAM_RD if rd else S_DRAM_WR] += total
        elif region == 1:
            cstat[S_SRAM_RD if rd else S_SRAM_WR] += total
        else:
            cstat[S_LOCAL_RD if rd else S_LOCAL_WR] += total
    stream, local, sram, dram, latency = cost_parts(src_region, dst_region, total, dram_cyc, cfg)
    begin = t_start + int(cfg[C_DMA_SETUP])
    end = begin + max(stream, local)
    if sram > 0:
        end = max(end, book(res, R_SRAM, begin, sram, cstat, S_SRAM_BUSY))
    if dram > 0:
        end = max(end, book(res, R_DRAM, begin, dram, cstat, S_DRAM_BUSY))
    return 0, end + latency, -1


@jit
def cost_parts(src_region, dst_region, total, dram_cyc, cfg):
    """The cycles of a transfer of `total` bytes on each resource it uses, and its latency: (the engine's
    stream, the PE-local port, the shared SRAM ring, the DRAM channel, latency). Regions: 0 local, 1 shared
    SRAM, 2 DRAM; dram_cyc: the DRAM channel's time for every row's bursts (dram_run_cycles)."""
    stream = int(math.ceil(total / cfg[C_DMA_BPC]))
    local = int(math.ceil(total / cfg[C_LOCAL_BPC])) if (src_region == 0 or dst_region == 0) else 0
    sram = 0
    dram = 0
    latency = 0
    if src_region == 1 or dst_region == 1:
        sram = int(math.ceil(total / cfg[C_SRAM_BPC]))
        latency = int(cfg[C_SRAM_LAT])
    if dram_cyc > 0:
        dram = int(math.ceil(dram_cyc))
        latency = max(latency, int(cfg[C_DRAM_LAT]))
    return stream, local, sram, dram, latency


@jit
def copy_cycles(lay, src, dst, nbytes, cfg):
    """Cycles one DMA engine takes to copy nbytes contiguous bytes from device address src to dst on an idle
    card (nothing else booked): the formula of `transfer`, for callers outside a launch (the driver's
    copy_peer between two buffers of one card)."""
    src_region = region_of(lay, src)
    dst_region = region_of(lay, dst)
    dram_cyc = 0.0
    if src_region == 2:
        dram_cyc += dram_run_cycles(src, nbytes, cfg)
    if dst_region == 2:
        dram_cyc += dram_run_cycles(dst, nbytes, cfg)
    stream, local, sram, dram, latency = cost_parts(src_region, dst_region, nbytes, dram_cyc, cfg)
    return int(cfg[C_DMA_SETUP]) + max(stream, local, sram, dram) + latency


# compiled on its own the first time a launch uses this unit; the core calls it through its address (units.py)
@jit
def issue(prog, mem, cfg, res, rec, chk, units, scratch, p, cur, tp, r):
    """Issue the `dma` at pc `cur` of PE p at cycle tp (registers r): take the engine's staged dimensions,
    check the descriptor, wait for a free slot in the engine's queue, copy and price the transfer (booking
    the card's DRAM channel and SRAM ring in global time order), and complete it. Returns (completion cycle
    or -1 with the fault recorded in chk.fault, cycles the PE stalled on a full queue)."""
    dec, pe_ids, lay = prog.code, prog.pe_ids, mem.layout
    fault, san, sanc, sanitize = chk.fault, chk.san, chk.sanc, chk.sanitize
    pstat, cstat, events, evn = rec.pstat, rec.cstat, rec.events, rec.evn
    semt, semn = units.semt, units.semn
    reads, pat, where = scratch.reads, scratch.pat, scratch.where
    nsem = int(cfg[C_NSEM])
    local_bytes = lay[L_LOCAL_BYTES]
    op = dec[cur, 0]
    wlo = np.int64(0)
    whi = np.int64(0)
    dims, dmafree, dmaring, dmaring_i = units.dims, units.dmafree, units.dmaring, units.dmaring_i
    neng = int(cfg[C_DMA_ENGINES])
    qdepth = int(cfg[C_DMA_QDEPTH])
    stall = np.int64(0)
    e = dec[cur, T.ENG]
    s = dec[cur, T.SEM]
    if e >= neng:
        set_fault(fault, FAULT_INSTRUCTION, p, cur, -1, WHY_ENGINE)
        return -1, stall
    if s >= nsem:
        set_fault(fault, FAULT_INSTRUCTION, p, cur, -1, WHY_SEMAPHORE)
        return -1, stall
    dst = r[dec[cur, T.RD]]
    src = r[dec[cur, T.RS1]]
    nbytes = r[dec[cur, T.RS2]]
    c1 = dims[p, e, 0]
    ss1 = dims[p, e, 1]
    ds1 = dims[p, e, 2]
    c2 = dims[p, e, 3]
    ss2 = dims[p, e, 4]
    ds2 = dims[p, e, 5]
    dims[p, e, 0] = 1
    dims[p, e, 1] = 0
    dims[p, e, 2] = 0
    dims[p, e, 3] = 1
    dims[p, e, 4] = 0
    dims[p, e, 5] = 0
    if nbytes < 0 or nbytes > (1 << 32) or c1 < 0 or c2 < 0 or c1 > MAX_ROWS \
            or c2 > MAX_ROWS or c1 * c2 > MAX_ROWS:
        set_fault(fault, FAULT_INSTRUCTION, p, cur, -1, WHY_DMA_SIZE)
        return -1, stall
    # the engine's queue: a full queue stalls the PE until its oldest descriptor is done
    slot = dmaring_i[p, e] % qdepth
    if dmaring[p, e, slot] > tp:
        stall = dmaring[p, e, slot] - tp
        pstat[p, P_STALL_QUEUE] += stall
        if events.shape[0] > 0:
            record_event(events, evn, cstat, TRACK_PE, p, tp, tp + stall, cur, op, e, K_STALL_QUEUE)
        tp += stall
    if sanitize:
        reads[:, :] = 0
        lo_s = src + min(0, (c1 - 1) * ss1) + min(0, (c2 - 1) * ss2)
        hi_s = src + max(0, (c1 - 1) * ss1) + max(0, (c2 - 1) * ss2) + nbytes
        lo_d = dst + min(0, (c1 - 1) * ds1) + min(0, (c2 - 1) * ds2)
        hi_d = dst + max(0, (c1 - 1) * ds1) + max(0, (c2 - 1) * ds2) + nbytes
        if c1 * c2 * nbytes > 0:
            ks = san_mod.key(local_bytes, pe_ids[p], lo_s)
            reads[0, 0] = ks
            reads[0, 1] = ks + (hi_s - lo_s)
            wlo = san_mod.key(local_bytes, pe_ids[p], lo_d)
            whi = wlo + (hi_d - lo_d)
        else:
            wlo = np.int64(0)
            whi = np.int64(0)
        # 2-D descriptors keep their row pattern (exact checks); 3-D ones their bounding interval
        pat[:] = 0
        if c2 == 1 and c1 > 1:
            pat[0] = nbytes
            pat[1] = c1
            pat[2] = ss1
            pat[3] = nbytes
            pat[4] = c1
            pat[5] = ds1
            if ss1 < 0 or ss1 < nbytes:
                pat[1] = 1     # negative or overlapping rows: bounding interval
            if ds1 < 0 or ds1 < nbytes:
                pat[4] = 1
        hit = san_mod.check(san, sanc, where, p, Q_DMA0 + e, reads, wlo, whi, pat)
        if hit >= 0:
            race(fault, san, where, p, cur, hit)
            return -1, stall
    start = max(tp, dmafree[p, e])
    st, done, bad = transfer(mem, pe_ids[p], (dst, src, nbytes, c1, ss1, ds1, c2, ss2, ds2),
                                      start, cfg, res, cstat)
    if st != 0:
        set_fault(fault, FAULT_ADDRESS, p, cur, bad, st)
        return -1, stall
    dmafree[p, e] = done
    dmaring[p, e, slot] = done
    dmaring_i[p, e] += 1
    pstat[p, P_DMA] += done - start
    if not complete(semt, semn, fault, san, sanc, sanitize, events, evn, cstat, p, cur, op, s,
                     Q_DMA0 + e, TRACK_DMA0 + e, start, done, c1 * c2 * nbytes, reads, wlo, whi, pat):
        return -1, stall
    return done, stall
