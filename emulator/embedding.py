"""The embedding-lookup unit: one per card, a gather-and-pool engine for the SparseLengthsSum family.

It reads a descriptor (isa/table.py: EMB_DESC_FIELDS), then indices and lengths or offsets (and optional
per-sample weights), gathers rows of a table in DRAM or shared SRAM, dequantizes, pools (sum, mean,
weighted sum) in fp32, and writes fp32 or fp16 rows.

Table formats (row layouts, byte-compatible with PyTorch/FBGEMM's prepacked tables):
  fp32, fp16                 dim values
  int8_rowwise               dim uint8, then fp32 scale, fp32 bias   (embedding_bag_byte_prepack)
  int8_rowwise_fp16          dim uint8, then fp16 scale, fp16 bias
  int4_rowwise               ceil(dim/2) bytes, element j in the low nibble of byte j/2 when j is even,
                             then fp16 scale, fp16 bias               (embedding_bag_4bit_prepack)
Timing (docs/timing.md): gather-bound. Each row costs the DRAM bursts it touches at the efficiency of a
short run; requests in flight (`outstanding`) hide the DRAM latency up to that bandwidth.
"""
import math

import numpy as np
from .jit import jit

from vnpu.isa import table as T

from . import sanitizer as san_mod
from .dma import book, dram_run_cycles
from .issue import Q_EMB, Q_SCALAR, complete, local_ok, race, set_fault
from .memory import (L_LOCAL_BYTES, copy_run, first_bad_byte, first_bad_local, load_scalar, region_of,
                     translate)
from .numerics import bits_to_f32, f16bits_to_f32bits, f32_to_f16, load_f16, load_f32
from .state import (C_BURST, C_DRAM_LAT, C_EMB_BPC, C_EMB_OUTSTANDING, C_NSEM, C_SRAM_BPC, C_SRAM_LAT,
                    FAULT_ADDRESS, FAULT_INSTRUCTION, R_DRAM, R_EMB, R_SRAM, S_DRAM_BUSY, S_DRAM_RD, S_DRAM_WR,
                    S_EMB_BUSY, S_EMB_LOOKUPS, S_EMB_ROWS, S_LOCAL_RD, S_LOCAL_WR, S_SRAM_BUSY, S_SRAM_RD,
                    S_SRAM_WR, TRACK_EMB, WHY_EMB_DESC, WHY_EMB_INDEX, WHY_EMB_SEGMENTS, WHY_SEMAPHORE)

# descriptor words and mode bits: the ISA's (isa/table.py), under short names
(D_TABLE, D_ROWS, D_DIM, D_FORMAT, D_INDICES, D_NUM_INDICES, D_INDEX_BYTES, D_SEGMENTS, D_NUM_BAGS, D_WEIGHTS,
 D_OUTPUT, D_OUT_DTYPE, D_MODE, D_SEGMENT_BYTES, D_RES0, D_RES1) = (
    T.EMB_TABLE, T.EMB_ROWS, T.EMB_DIM, T.EMB_FORMAT, T.EMB_INDICES, T.EMB_NUM_INDICES, T.EMB_INDEX_BYTES,
    T.EMB_SEGMENTS, T.EMB_NUM_BAGS, T.EMB_WEIGHTS, T.EMB_OUTPUT, T.EMB_OUT_DTYPE, T.EMB_MODE, T.EMB_SEGMENT_BYTES,
    T.EMB_RESERVED0, T.EMB_RESERVED1)
FMT_FP32, FMT_FP16, FMT_INT8, FMT_INT8_FP16, FMT_INT4 = (T.EMB_FORMATS.index(f) for f in T.EMB_FORMATS)
MODE_SUM, MODE_MEAN, MODE_WEIGHTED = T.EMB_MODE_SUM, T.EMB_MODE_MEAN, T.EMB_MODE_WEIGHTED
MODE_OFFSETS = T.EMB_MODE_OFFSETS
MODE_INCLUDE_LAST = T.EMB_MODE_INCLUDE_LAST
SETUP_CYCLES = 16   # [inf] descriptor fetch and start
MAX_COUNT = 1 << 31


@jit
def row_bytes(fmt, dim):
    if fmt == FMT_FP32:
        return 4 * dim
    if fmt == FMT_FP16:
        return 2 * dim
    if fmt == FMT_INT8:
        return dim + 8
    if fmt == FMT_INT8_FP16:
        return dim + 4
    return (dim + 1) // 2 + 4


@jit
def segment_count(desc):
    if desc[D_MODE] & MODE_OFFSETS and desc[D_MODE] & MODE_INCLUDE_LAST:
        return desc[D_NUM_BAGS] + 1
    return desc[D_NUM_BAGS]


@jit
def valid(desc):
    if desc[D_FORMAT] < 0 or desc[D_FORMAT] > FMT_INT4 or desc[D_DIM] <= 0 or desc[D_DIM] > 65536:
        return False
    if desc[D_ROWS] < 0 or desc[D_ROWS] > MAX_COUNT or desc[D_NUM_INDICES] < 0 or desc[D_NUM_INDICES] > MAX_COUNT:
        return False
    if desc[D_NUM_BAGS] < 0 or desc[D_NUM_BAGS] > MAX_COUNT:
        return False
    if desc[D_INDEX_BYTES] != 4 and desc[D_INDEX_BYTES] != 8:
        return False
    if desc[D_SEGMENT_BYTES] != 4 and desc[D_SEGMENT_BYTES] != 8:
        return False
    if desc[D_OUT_DTYPE] != 0 and desc[D_OUT_DTYPE] != 1:
        return False
    mode = desc[D_MODE]
    if (mode & 3) > MODE_WEIGHTED or (mode & ~(3 | MODE_OFFSETS | MODE_INCLUDE_LAST)) != 0:
        return False
    if (mode & 3) == MODE_WEIGHTED and desc[D_WEIGHTS] == 0:
        return False
    return desc[D_RES0] == 0 and desc[D_RES1] == 0


@jit
def output_address(desc):
    return desc[D_OUTPUT]


@jit
def output_bytes(desc):
    return desc[D_NUM_BAGS] * desc[D_DIM] * (4 if desc[D_OUT_DTYPE] == 0 else 2)


@jit
def ranges(desc, reads):
    """Fill reads[k] = [lo, hi) device addresses the lookup reads; -1 if the descriptor is malformed."""
    if not valid(desc):
        return -1
    reads[:, :] = 0
    reads[0, 0] = desc[D_TABLE]
    reads[0, 1] = desc[D_TABLE] + desc[D_ROWS] * row_bytes(desc[D_FORMAT], desc[D_DIM])
    reads[1, 0] = desc[D_INDICES]
    reads[1, 1] = desc[D_INDICES] + desc[D_NUM_INDICES] * desc[D_INDEX_BYTES]
    reads[2, 0] = desc[D_SEGMENTS]
    reads[2, 1] = desc[D_SEGMENTS] + segment_count(desc) * desc[D_SEGMENT_BYTES]
    if (desc[D_MODE] & 3) == MODE_WEIGHTED:
        reads[3, 0] = desc[D_WEIGHTS]
        reads[3, 1] = desc[D_WEIGHTS] + 4 * desc[D_NUM_INDICES]
    return 4


@jit
def accumulate_row(pool, off, fmt, dim, w, weighted, acc):
    """acc += w * row (or acc += row): the row at flat pool offset off, dequantized to fp32 first
    (q * scale + bias, rounded), then weighted (rounded), then added — the unit's order of operations."""
    if fmt == FMT_FP32:
        v = pool[off:off + 4 * dim].view(np.float32)
        if weighted:
            for j in range(dim):
                acc[j] += w * v[j]
        else:
            for j in range(dim):
                acc[j] += v[j]
        return
    if fmt == FMT_FP16:
        h = pool[off:off + 2 * dim].view(np.uint16)
        for j in range(dim):
            x = bits_to_f32(f16bits_to_f32bits(np.uint32(h[j])))
            acc[j] += w * x if weighted else x
        return
    if fmt == FMT_INT8:
        scale = load_f32(pool, off + dim)
        bias = load_f32(pool, off + dim + 4)
    elif fmt == FMT_INT8_FP16:
        scale = load_f16(pool, off + dim)
        bias = load_f16(pool, off + dim + 2)
    else:
        nb = (dim + 1) // 2
        scale = load_f16(pool, off + nb)
        bias = load_f16(pool, off + nb + 2)
        for j in range(dim):
            byte = pool[off + j // 2]
            x = np.float32(np.float32((byte & 15) if j % 2 == 0 else (byte >> 4)) * scale) + bias
            acc[j] += w * x if weighted else x
        return
    if weighted:
        for j in range(dim):
            acc[j] += w * (np.float32(np.float32(pool[off + j]) * scale) + bias)
    else:
        for j in range(dim):
            acc[j] += np.float32(np.float32(pool[off + j]) * scale) + bias


@jit
def lookup(pool, ptab, lay, pe, desc, start, cfg, res, cstat):
    """Run one pooled lookup. Returns (status, done_cycle, bad, why): status 0 ok; 1 bad address (bad is it);
    2 bad contents (why names it, bad is the first offending position)."""
    if not valid(desc):
        return 2, start, 0, WHY_EMB_DESC
    fmt = desc[D_FORMAT]
    dim = desc[D_DIM]
    nrows = desc[D_ROWS]
    n_idx = desc[D_NUM_INDICES]
    n_bags = desc[D_NUM_BAGS]
    rb = row_bytes(fmt, dim)
    mode = desc[D_MODE]
    pool_mode = mode & 3
    nseg = segment_count(desc)
    ib = desc[D_INDEX_BYTES]
    sb = desc[D_SEGMENT_BYTES]
    t_off = translate(ptab, lay, pe, desc[D_TABLE], nrows * rb)
    if t_off < 0:
        return 1, start, first_bad_byte(ptab, lay, pe, desc[D_TABLE], nrows * rb), 0
    i_off = translate(ptab, lay, pe, desc[D_INDICES], n_idx * ib)
    if i_off < 0:
        return 1, start, first_bad_byte(ptab, lay, pe, desc[D_INDICES], n_idx * ib), 0
    s_off = translate(ptab, lay, pe, desc[D_SEGMENTS], nseg * sb)
    if s_off < 0:
        return 1, start, first_bad_byte(ptab, lay, pe, desc[D_SEGMENTS], nseg * sb), 0
    w_off = -1
    if pool_mode == MODE_WEIGHTED:
        w_off = translate(ptab, lay, pe, desc[D_WEIGHTS], 4 * n_idx)
        if w_off < 0:
            return 1, start, first_bad_byte(ptab, lay, pe, desc[D_WEIGHTS], 4 * n_idx), 0
    ob = output_bytes(desc)
    o_off = translate(ptab, lay, pe, desc[D_OUTPUT], ob)
    if o_off < 0:
        return 1, start, first_bad_byte(ptab, lay, pe, desc[D_OUTPUT], ob), 0
    # validate segments and indices before writing anything
    bounds = np.empty(n_bags + 1, dtype=np.int64)
    if mode & MODE_OFFSETS:
        for b in range(nseg):
            v = load_scalar(pool, s_off + sb * b, sb, True)
            if v < 0 or v > n_idx or (b > 0 and v < bounds[b - 1]) or (b == 0 and v != 0):
                return 2, start, b, WHY_EMB_SEGMENTS
            if b <= n_bags:
                bounds[b] = v
        if not (mode & MODE_INCLUDE_LAST):
            bounds[n_bags] = n_idx
        elif n_bags > 0 and bounds[n_bags] != n_idx:
            # PyTorch ignores indices past the last offset; we require them to match, like its checks
            return 2, start, n_bags, WHY_EMB_SEGMENTS
        if n_bags == 0 and n_idx != 0 and not (mode & MODE_INCLUDE_LAST):
            return 2, start, 0, WHY_EMB_SEGMENTS
    else:
        bounds[0] = 0
        for b in range(n_bags):
            v = load_scalar(pool, s_off + sb * b, sb, True)
            if v < 0 or bounds[b] + v > n_idx:
                return 2, start, b, WHY_EMB_SEGMENTS
            bounds[b + 1] = bounds[b] + v
        if bounds[n_bags] != n_idx:
            return 2, start, n_bags, WHY_EMB_SEGMENTS
    idx = np.empty(n_idx, dtype=np.int64)
    # loops, not slice assignment, in compiled code (see memory.copy_run)
    if ib == 4:
        i32 = pool[i_off:i_off + 4 * n_idx].view(np.int32)
        for i in range(n_idx):
            idx[i] = i32[i]
    else:
        i64 = pool[i_off:i_off + 8 * n_idx].view(np.int64)
        for i in range(n_idx):
            idx[i] = i64[i]
    for i in range(n_idx):
        if idx[i] < 0 or idx[i] >= nrows:
            return 2, start, i, WHY_EMB_INDEX
    # gather, dequantize, pool: fp32, index order (the numpy reference does the same, bit for bit)
    acc = np.empty(dim, dtype=np.float32)
    tab_region = region_of(lay, desc[D_TABLE])
    dram_busy = 0.0
    wts = pool[w_off:w_off + 4 * n_idx].view(np.float32) if pool_mode == MODE_WEIGHTED else acc
    burst = int(cfg[C_BURST])
    k_min = (rb + burst - 1) // burst
    cost_k = dram_run_cycles(0, k_min * burst, cfg)            # a row touching k_min bursts
    cost_k1 = dram_run_cycles(0, (k_min + 1) * burst, cfg)     # ... or one more
    # the pooled rows go to a staging buffer and are written after every read: an output that overlaps the
    # table, the indices or the weights reads their values from before the lookup (the reference's order)
    staged = np.empty(ob, dtype=np.uint8)
    for b in range(n_bags):
        for j in range(dim):
            acc[j] = 0
        lo = bounds[b]
        hi = bounds[b + 1]
        for i in range(lo, hi):
            w = wts[i] if pool_mode == MODE_WEIGHTED else np.float32(1.0)
            accumulate_row(pool, t_off + idx[i] * rb, fmt, dim, w, pool_mode == MODE_WEIGHTED, acc)
            if tab_region == 2:
                # a row touches k or k + 1 bursts, by its alignment; both costs are precomputed
                a = desc[D_TABLE] + idx[i] * rb
                dram_busy += cost_k if (a + rb - 1) // burst - a // burst + 1 == k_min else cost_k1
        if pool_mode == MODE_MEAN and hi > lo:
            inv = np.float32(hi - lo)
            for j in range(dim):
                acc[j] = acc[j] / inv
        if desc[D_OUT_DTYPE] == 0:
            row = staged[4 * b * dim:4 * (b + 1) * dim].view(np.float32)
            for j in range(dim):
                row[j] = acc[j]
        else:
            f32_to_f16(acc, staged[2 * b * dim:2 * (b + 1) * dim].view(np.uint16))
    copy_run(pool, o_off, staged, 0, ob)
    # --- timing -------------------------------------------------------------------------------------------
    gathered = n_idx * rb
    meta = n_idx * ib + nseg * sb + (4 * n_idx if pool_mode == MODE_WEIGHTED else 0)
    # index / segment / weight streams and the output are sequential runs
    for a, nb, rd in ((desc[D_INDICES], n_idx * ib, True), (desc[D_SEGMENTS], nseg * sb, True),
                      (desc[D_WEIGHTS], 4 * n_idx if pool_mode == MODE_WEIGHTED else 0, True),
                      (desc[D_OUTPUT], ob, False)):
        reg = region_of(lay, a) if nb > 0 else -1
        if reg == 2:
            dram_busy += dram_run_cycles(a, nb, cfg)
            cstat[S_DRAM_RD if rd else S_DRAM_WR] += nb
        elif reg == 1:
            cstat[S_SRAM_RD if rd else S_SRAM_WR] += nb
        elif reg == 0:
            cstat[S_LOCAL_RD if rd else S_LOCAL_WR] += nb
    begin = start + SETUP_CYCLES
    compute = int(math.ceil(n_idx * dim * 4 / cfg[C_EMB_BPC]))
    end = begin + compute
    if tab_region == 2:
        cstat[S_DRAM_RD] += gathered
        latency = cfg[C_DRAM_LAT]
    elif tab_region == 1:
        cstat[S_SRAM_RD] += gathered
        latency = cfg[C_SRAM_LAT]
    else:
        cstat[S_LOCAL_RD] += gathered
        latency = 0.0
    # Little's law: with `outstanding` row requests in flight, rows complete at most every latency/outstanding
    little = int(math.ceil(n_idx * latency / cfg[C_EMB_OUTSTANDING]))
    end = max(end, begin + little)
    if dram_busy > 0:
        end = max(end, book(res, R_DRAM, begin, int(math.ceil(dram_busy)), cstat, S_DRAM_BUSY))
    if tab_region == 1 or region_of(lay, desc[D_OUTPUT]) == 1:
        sc = int(math.ceil((gathered + meta) / cfg[C_SRAM_BPC]))
        end = max(end, book(res, R_SRAM, begin, sc, cstat, S_SRAM_BUSY))
    return 0, end + int(latency), -1, 0


# compiled on its own the first time a launch uses this unit; the core calls it through its address (units.py)
@jit
def issue(prog, mem, cfg, res, rec, chk, units, scratch, p, cur, tp, r):
    """Issue the `emb` at pc `cur` of PE p at cycle tp (registers r): read its descriptor from local memory,
    check it, run the lookup on the card's one embedding unit (in issue order across PEs), and complete it.
    Returns (its completion cycle, 0), or (-1, 0) with the fault recorded in chk.fault."""
    dec, pe_ids, pool, ptab, lay = prog.code, prog.pe_ids, mem.pool, mem.ptab, mem.layout
    fault, san, sanc, sanitize = chk.fault, chk.san, chk.sanc, chk.sanitize
    cstat, events, evn = rec.cstat, rec.events, rec.evn
    semt, semn, lbase = units.semt, units.semn, units.lbase
    reads, plain, where = scratch.reads, scratch.plain, scratch.where
    nsem = int(cfg[C_NSEM])
    local_bytes = lay[L_LOCAL_BYTES]
    op = dec[cur, 0]
    wlo = np.int64(0)
    whi = np.int64(0)
    s = dec[cur, T.SEM]
    if s >= nsem:
        set_fault(fault, FAULT_INSTRUCTION, p, cur, -1, WHY_SEMAPHORE)
        return -1, 0
    d = r[dec[cur, T.RS1]]
    if not local_ok(lay, d, 8 * T.EMB_DESC_WORDS):
        nd = 8 * T.EMB_DESC_WORDS
        set_fault(fault, FAULT_ADDRESS, p, cur, first_bad_local(lay, d, nd), nd)
        return -1, 0
    desc = pool[lbase[p] + d:lbase[p] + d + 8 * T.EMB_DESC_WORDS].view(np.int64).copy()
    if sanitize:
        nr = ranges(desc, reads)
        if nr < 0:
            set_fault(fault, FAULT_INSTRUCTION, p, cur, d, WHY_EMB_DESC)
            return -1, 0
        kd = san_mod.key(local_bytes, pe_ids[p], d)
        for k in range(san_mod.NREAD):
            if reads[k, 1] > reads[k, 0]:
                lo = san_mod.key(local_bytes, pe_ids[p], reads[k, 0])
                reads[k, 1] = lo + reads[k, 1] - reads[k, 0]
                reads[k, 0] = lo
        wlo = san_mod.key(local_bytes, pe_ids[p], output_address(desc))
        whi = wlo + output_bytes(desc)
        hit = san_mod.check(san, sanc, where, p, Q_EMB, reads, wlo, whi, plain)
        if hit < 0:  # the descriptor itself is read at issue
            tmp = np.zeros((san_mod.NREAD, 2), dtype=np.int64)
            tmp[0, 0] = kd
            tmp[0, 1] = kd + 8 * T.EMB_DESC_WORDS
            hit = san_mod.check(san, sanc, where, p, Q_SCALAR, tmp, 0, 0, plain)
        if hit >= 0:
            race(fault, san, where, p, cur, hit)
            return -1, 0
    start = max(tp, res[R_EMB])
    st, done, bad, why = lookup(pool, ptab, lay, pe_ids[p], desc, start, cfg, res, cstat)
    if st != 0:
        if st == 1:
            set_fault(fault, FAULT_ADDRESS, p, cur, bad, -1)
        else:
            set_fault(fault, FAULT_INSTRUCTION, p, cur, bad, why)
        return -1, 0
    res[R_EMB] = done
    cstat[S_EMB_BUSY] += done - start
    cstat[S_EMB_LOOKUPS] += desc[D_NUM_BAGS]
    cstat[S_EMB_ROWS] += desc[D_NUM_INDICES]
    if not complete(semt, semn, fault, san, sanc, sanitize, events, evn, cstat, p, cur, op, s, Q_EMB,
                     TRACK_EMB, start, done, desc[D_NUM_INDICES], reads, wlo, whi, plain):
        return -1, 0
    return done, 0
