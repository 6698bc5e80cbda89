"""The timed core: one launch, every PE and unit, inside one compiled function (no Python per instruction).

Scheduling: the PE with the smallest cycle count runs. It may run ahead through scalar instructions
(they touch only its own registers and local memory), but an instruction that touches shared state
(DMA, embedding, sig, wait, barrier) only issues when no other PE is behind it, so shared resources
(the DRAM channel, the shared SRAM ring, the embedding unit) are booked in global time order.

Async units (DMA engines, matrix, vector, embedding) compute their result at issue, book their time on
their own timeline, and deliver a semaphore signal at their completion cycle. A program whose accesses
are ordered by waits (what the sanitizer enforces) cannot tell the difference from a unit that writes
at completion; docs/deviations.md says so.
"""
import numpy as np
from numba.core import config

from vnpu.isa import table as T

from . import sanitizer as san_mod
from . import sync
from .issue import (INF, SEMCAP, Q_SCALAR, consume, local_ok, race, record_event, set_fault, timeout)
from .jit import jit
from .dispatch import (B_EQ, B_GE, B_GEU, B_LT, B_LTU, B_NE, BRANCH, ENTRIES, ISSUE_CYCLES, MEM_BYTES, MEM_SIGNED,
                       MEM_STORE, SHARED_UNIT, UNIT_SLOT)
from .memory import L_LOCAL_BYTES, L_LOCAL_P0, L_LOCAL_PAGES, first_bad_local, load_scalar, store_scalar
from .units import ISSUE, call_unit
from .state import (HALTED, RUN, WAITSEM, Sched, Scratch, Units, C_DMA_ENGINES, C_DMA_QDEPTH, C_NSEM, C_WATCHDOG,
                    C_WATCHDOG_INSTR, EV_END, F_PC2, F_PE2, FAULT_ADDRESS, FAULT_DEADLOCK, FAULT_INSTRUCTION,
                    K_MARK, K_RUN, K_STALL_SEM, P_END, P_INSTR, P_ISSUE, P_STALL_SEM, S_CYCLES, S_EV_DROPPED,
                    TRACK_PE, WHY_ENGINE)


# opcodes, named from the table
OP_NOP, OP_HALT, OP_LI, OP_LIH, OP_CSRR = T.OP_NOP, T.OP_HALT, T.OP_LI, T.OP_LIH, T.OP_CSRR
OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_REM = T.OP_ADD, T.OP_SUB, T.OP_MUL, T.OP_DIV, T.OP_REM
OP_AND, OP_OR, OP_XOR, OP_SHL, OP_SHR, OP_SRA = T.OP_AND, T.OP_OR, T.OP_XOR, T.OP_SHL, T.OP_SHR, T.OP_SRA
OP_SLT, OP_SLTU, OP_MIN, OP_MAX = T.OP_SLT, T.OP_SLTU, T.OP_MIN, T.OP_MAX
OP_ADDI, OP_MULI, OP_ANDI, OP_ORI, OP_XORI = T.OP_ADDI, T.OP_MULI, T.OP_ANDI, T.OP_ORI, T.OP_XORI
OP_SHLI, OP_SHRI, OP_SRAI, OP_SLTI = T.OP_SHLI, T.OP_SHRI, T.OP_SRAI, T.OP_SLTI
OP_LOOP = T.OP_LOOP
OP_DMA_DIM, OP_SIG, OP_WAIT, OP_BARRIER, OP_FENCE, OP_MARK = (T.OP_DMA_DIM, T.OP_SIG, T.OP_WAIT, T.OP_BARRIER,
                                                              T.OP_FENCE, T.OP_MARK)
RD, RS1, RS2, RS3, IMM, DT, DT2, FLAG, SEM, ENG, SR = T.RD, T.RS1, T.RS2, T.RS3, T.IMM, T.DT, T.DT2, T.FLAG, T.SEM, T.ENG, T.SR

if config.DISABLE_JIT:
    def issue_on_unit(prog, mem, cfg, res, rec, chk, units, scratch, p, cur, tp, r):
        """Numba off (NUMBA_DISABLE_JIT=1, to step through the core in a debugger): no addresses, the core
        calls the entry's Python function."""
        entry = ISSUE[ENTRIES[UNIT_SLOT[prog.code[cur, 0]]]]
        return entry(prog, mem, cfg, res, rec, chk, units, scratch, p, cur, tp, r)
else:
    @jit(inline="always")
    def issue_on_unit(prog, mem, cfg, res, rec, chk, units, scratch, p, cur, tp, r):
        """Hand the async instruction at pc `cur` to its unit (its `issue`, compiled on its own; units.py).
        Returns (completion cycle or -1 with a fault recorded, cycles the PE stalled)."""
        address = prog.unit_entry[UNIT_SLOT[prog.code[cur, 0]]]
        if address == 0:    # not in the launch's entry table: cannot happen for code the table was made from
            set_fault(chk.fault, FAULT_INSTRUCTION, p, cur, -1, -1)
            return np.int64(-1), np.int64(0)
        return call_unit(address, prog, mem, cfg, res, rec, chk, units, scratch, p, cur, tp, r)


@jit
def run_launch(prog, mem, cfg, res, rec, chk, regs):
    """Run one launch to completion or to its first fault: `prog` (state.Program) on the memories `mem`
    (state.Memory) of a card configured by the vector `cfg`, its shared resources' free cycles in `res`;
    statistics and trace go to `rec` (state.Record), faults and the sanitizer's table to `chk` (state.Checks).
    Returns the launch's end cycle (every PE halted and every async operation done)."""
    dec, entry, pe_ids, ids = prog.code, prog.entry, prog.pe_ids, prog.ids
    pool, ptab, lay = mem.pool, mem.ptab, mem.layout
    pstat, cstat, events, evn = rec.pstat, rec.cstat, rec.events, rec.evn
    fault, san, sanc, sanitize = chk.fault, chk.san, chk.sanc, chk.sanitize
    npe = len(pe_ids)
    ncode = dec.shape[0]
    nsem = int(cfg[C_NSEM])
    neng = int(cfg[C_DMA_ENGINES])
    qdepth = int(cfg[C_DMA_QDEPTH])
    watchdog = int(cfg[C_WATCHDOG])
    max_instr = int(cfg[C_WATCHDOG_INSTR])    # a runaway launch ends within seconds, whatever its cycles
    executed = np.int64(0)
    local_bytes = lay[L_LOCAL_BYTES]
    pc = np.zeros(npe, dtype=np.int64)      # np.zeros and loops, not np.full or .max(): less to compile
    t = np.zeros(npe, dtype=np.int64)
    status = np.zeros(npe, dtype=np.int64)
    wake = np.zeros(npe, dtype=np.int64)
    want = np.zeros(npe, dtype=np.int64)
    wait_since = np.zeros(npe, dtype=np.int64)
    run_ev = np.zeros(npe, dtype=np.int64)
    lbase = np.zeros(npe, dtype=np.int64)
    for p in range(npe):
        pc[p] = entry
        wake[p] = INF
        run_ev[p] = -1
        lbase[p] = np.int64(ptab[lay[L_LOCAL_P0] + pe_ids[p] * lay[L_LOCAL_PAGES]]) * 65536
    semt = np.zeros((npe, nsem, SEMCAP), dtype=np.int64)
    semn = np.zeros((npe, nsem), dtype=np.int64)
    dmafree = np.zeros((npe, neng), dtype=np.int64)
    dmaring = np.zeros((npe, neng, qdepth), dtype=np.int64)
    dmaring_i = np.zeros((npe, neng), dtype=np.int64)
    dims = np.zeros((npe, neng, 6), dtype=np.int64)
    for p in range(npe):
        for e in range(neng):
            dims[p, e, 0] = 1
            dims[p, e, 3] = 1
    matfree = np.zeros(npe, dtype=np.int64)
    vecfree = np.zeros(npe, dtype=np.int64)
    wk = np.zeros((npe, 3), dtype=np.int64)
    for p in range(npe):
        for k in range(3):
            wk[p, k] = -1
    reads = np.zeros((san_mod.NREAD, 2), dtype=np.int64)
    where = np.zeros(san_mod.NWHERE, dtype=np.int64)
    plain = np.zeros(6, dtype=np.int64)        # sanitizer pattern of non-strided accesses: plain intervals
    pat = np.zeros(6, dtype=np.int64)
    barrier = np.zeros(2, dtype=np.int64)      # PEs arrived at the barrier, the latest arrival's cycle
    units = Units(semt, semn, vecfree, matfree, dmafree, dmaring, dmaring_i, dims, wk, lbase)
    sched = Sched(pc, t, status, wake, want, wait_since, barrier)
    scratch = Scratch(reads, plain, pat, where)
    last_done = np.int64(0)

    while True:
        # --- pick the PE that is furthest behind ------------------------------------------------
        p = -1
        best = INF
        for q in range(npe):
            key = t[q] if status[q] == RUN else (wake[q] if status[q] == WAITSEM else INF)
            if key < best:
                best = key
                p = q
        if p < 0:
            stuck = -1
            for q in range(npe):
                if status[q] != HALTED:
                    stuck = q
                    break
            if stuck < 0:
                break
            set_fault(fault, FAULT_DEADLOCK, stuck, pc[stuck], -1, status[stuck])
            fault[F_PE2] = want[stuck]
            fault[F_PC2] = dec[pc[stuck], SEM] if status[stuck] == WAITSEM else -1
            end = np.int64(0)
            for q in range(npe):
                end = max(end, t[q])
            return end
        if status[p] == WAITSEM:
            s = dec[pc[p], SEM]
            consume(semt, semn, p, s, want[p])
            if sanitize:
                san_mod.retire(san, sanc, p, s, want[p])
            t[p] = max(wait_since[p], wake[p])
            pstat[p, P_STALL_SEM] += t[p] - wait_since[p]
            if events.shape[0] > 0 and t[p] > wait_since[p]:
                record_event(events, evn, cstat, TRACK_PE, p, wait_since[p], t[p], pc[p], OP_WAIT, s, K_STALL_SEM)
            status[p] = RUN
            wake[p] = INF
            pc[p] += 1
        limit = INF
        for q in range(npe):
            if q != p:
                key = t[q] if status[q] == RUN else (wake[q] if status[q] == WAITSEM else INF)
                limit = min(limit, key)
        r = regs[p]
        tp = t[p]
        cur = pc[p]
        run_start = tp
        executed_before = executed
        stalled = np.int64(0)
        while True:
            if cur < 0 or cur >= ncode:
                set_fault(fault, FAULT_INSTRUCTION, p, cur, -1, -1)
                return tp
            op = dec[cur, 0]    # no `ins = dec[cur]`: a view per instruction costs a reference count
            tp += ISSUE_CYCLES[op]
            executed += 1
            nxt = cur + 1
            # --- scalar ALU (most frequent first) ----------------------------------------------------
            if op == OP_ADDI:
                r[dec[cur, RD]] = r[dec[cur, RS1]] + dec[cur, IMM]
            elif op == OP_ADD:
                r[dec[cur, RD]] = r[dec[cur, RS1]] + r[dec[cur, RS2]]
            elif op == OP_LOOP:
                v = r[dec[cur, RS1]] - 1
                r[dec[cur, RS1]] = v
                if v != 0:
                    nxt = dec[cur, IMM]
                    tp += 2
                    if tp > watchdog or executed > max_instr:
                        timeout(fault, p, cur, tp, executed > max_instr)
                        return tp
            elif op == OP_SUB:
                r[dec[cur, RD]] = r[dec[cur, RS1]] - r[dec[cur, RS2]]
            elif op == OP_LI:
                r[dec[cur, RD]] = dec[cur, IMM]
            elif op == OP_MUL:
                r[dec[cur, RD]] = r[dec[cur, RS1]] * r[dec[cur, RS2]]
            elif op == OP_MULI:
                r[dec[cur, RD]] = r[dec[cur, RS1]] * dec[cur, IMM]
            elif op == OP_AND:
                r[dec[cur, RD]] = r[dec[cur, RS1]] & r[dec[cur, RS2]]
            elif op == OP_OR:
                r[dec[cur, RD]] = r[dec[cur, RS1]] | r[dec[cur, RS2]]
            elif op == OP_XOR:
                r[dec[cur, RD]] = r[dec[cur, RS1]] ^ r[dec[cur, RS2]]
            elif op == OP_ANDI:
                r[dec[cur, RD]] = r[dec[cur, RS1]] & dec[cur, IMM]
            elif op == OP_ORI:
                r[dec[cur, RD]] = r[dec[cur, RS1]] | dec[cur, IMM]
            elif op == OP_XORI:
                r[dec[cur, RD]] = r[dec[cur, RS1]] ^ dec[cur, IMM]
            elif op == OP_SHL or op == OP_SHLI:
                sh = (r[dec[cur, RS2]] if op == OP_SHL else dec[cur, IMM]) & 63
                r[dec[cur, RD]] = np.int64(np.uint64(r[dec[cur, RS1]]) << np.uint64(sh))
            elif op == OP_SHR or op == OP_SHRI:
                sh = (r[dec[cur, RS2]] if op == OP_SHR else dec[cur, IMM]) & 63
                r[dec[cur, RD]] = np.int64(np.uint64(r[dec[cur, RS1]]) >> np.uint64(sh))
            elif op == OP_SRA or op == OP_SRAI:
                sh = (r[dec[cur, RS2]] if op == OP_SRA else dec[cur, IMM]) & 63
                r[dec[cur, RD]] = r[dec[cur, RS1]] >> sh
            elif op == OP_SLT:
                r[dec[cur, RD]] = 1 if r[dec[cur, RS1]] < r[dec[cur, RS2]] else 0
            elif op == OP_SLTI:
                r[dec[cur, RD]] = 1 if r[dec[cur, RS1]] < dec[cur, IMM] else 0
            elif op == OP_SLTU:
                r[dec[cur, RD]] = 1 if np.uint64(r[dec[cur, RS1]]) < np.uint64(r[dec[cur, RS2]]) else 0
            elif op == OP_MIN:
                r[dec[cur, RD]] = min(r[dec[cur, RS1]], r[dec[cur, RS2]])
            elif op == OP_MAX:
                r[dec[cur, RD]] = max(r[dec[cur, RS1]], r[dec[cur, RS2]])
            elif op == OP_DIV or op == OP_REM:
                a = r[dec[cur, RS1]]
                b = r[dec[cur, RS2]]
                if b == 0:
                    q = np.int64(-1)
                    rm = a
                elif b == -1:
                    q = -a
                    rm = np.int64(0)
                else:
                    # truncate toward zero; abs() would overflow for INT64_MIN
                    q = a // b
                    if q * b != a and ((a < 0) != (b < 0)):
                        q += 1
                    rm = a - b * q
                r[dec[cur, RD]] = q if op == OP_DIV else rm
            elif op == OP_LIH:
                r[dec[cur, RD]] = (dec[cur, IMM] << 32) | (r[dec[cur, RD]] & 0xFFFFFFFF)
            elif op == OP_CSRR:
                sr = dec[cur, SR]
                if sr == 0:
                    v = p
                elif sr == 1:
                    v = npe
                elif sr == 2:
                    v = tp
                elif sr == 3:
                    v = ids[0]
                elif sr == 4:
                    v = ids[1]
                else:
                    v = ids[2]
                r[dec[cur, RD]] = v
            elif BRANCH[op] != 0:
                cond = BRANCH[op]
                a = r[dec[cur, RS1]]
                b = r[dec[cur, RS2]]
                if cond == B_EQ:
                    taken = a == b
                elif cond == B_NE:
                    taken = a != b
                elif cond == B_LT:
                    taken = a < b
                elif cond == B_GE:
                    taken = a >= b
                elif cond == B_LTU:
                    taken = np.uint64(a) < np.uint64(b)
                elif cond == B_GEU:
                    taken = np.uint64(a) >= np.uint64(b)
                else:
                    taken = True
                if taken:
                    nxt = dec[cur, IMM]
                    tp += 2
                    if tp > watchdog or executed > max_instr:
                        timeout(fault, p, cur, tp, executed > max_instr)
                        return tp
            elif MEM_BYTES[op] > 0:
                a = r[dec[cur, RS1]] + dec[cur, IMM]
                nb = MEM_BYTES[op]
                if not local_ok(lay, a, nb):
                    set_fault(fault, FAULT_ADDRESS, p, cur, first_bad_local(lay, a, nb), nb)
                    return tp
                store = MEM_STORE[op]
                if sanitize and sanc[0] > 0:
                    k = san_mod.key(local_bytes, pe_ids[p], a)
                    reads[:, :] = 0
                    if store:
                        hit = san_mod.check(san, sanc, where, p, Q_SCALAR, reads, k, k + nb, plain)
                    else:
                        reads[0, 0] = k
                        reads[0, 1] = k + nb
                        hit = san_mod.check(san, sanc, where, p, Q_SCALAR, reads, 0, 0, plain)
                    if hit >= 0:
                        race(fault, san, where, p, cur, hit)
                        return tp
                o = lbase[p] + a
                if store:
                    store_scalar(pool, o, nb, r[dec[cur, RS2]])
                else:
                    r[dec[cur, RD]] = load_scalar(pool, o, nb, MEM_SIGNED[op])
            elif op == OP_NOP:
                pass
            elif op == OP_HALT:
                status[p] = HALTED
                pstat[p, P_END] = tp
                break
            elif op == OP_MARK:
                if events.shape[0] > 0:
                    record_event(events, evn, cstat, TRACK_PE, p, tp, tp, cur, op, dec[cur, IMM], K_MARK)
            # --- async units private to the PE (vector, matrix) issue at once ---------------------------
            elif UNIT_SLOT[op] >= 0 and not SHARED_UNIT[op]:
                done, stall = issue_on_unit(prog, mem, cfg, res, rec, chk, units, scratch, p, cur, tp, r)
                if done < 0:
                    return tp
                last_done = max(last_done, done)
            elif op == OP_DMA_DIM:
                e = dec[cur, ENG]
                if e >= neng:
                    set_fault(fault, FAULT_INSTRUCTION, p, cur, -1, WHY_ENGINE)
                    return tp
                base = 3 * dec[cur, FLAG]
                dims[p, e, base] = r[dec[cur, RS1]]
                dims[p, e, base + 1] = r[dec[cur, RS2]]
                dims[p, e, base + 2] = r[dec[cur, RS3]]
            else:
                # --- everything below touches shared state: issue only in global time order -------------
                if tp - ISSUE_CYCLES[op] > limit:
                    tp -= ISSUE_CYCLES[op]
                    executed -= 1            # not issued yet: it runs again when this PE resumes
                    break
                if UNIT_SLOT[op] >= 0:        # the card's shared units: DMA, embedding
                    done, stall = issue_on_unit(prog, mem, cfg, res, rec, chk, units, scratch, p, cur, tp, r)
                    tp += stall          # a full descriptor queue stalls the PE
                    stalled += stall
                    if done < 0:
                        return tp
                    last_done = max(last_done, done)
                elif op == OP_SIG:
                    w = sync.signal(prog, cfg, chk, units, sched, p, cur, tp, r)
                    if w < 0:
                        return tp
                    limit = min(limit, w)       # a PE this signal wakes may now be the one furthest behind
                elif op == OP_WAIT:
                    go = sync.wait(prog, cfg, rec, chk, units, sched, p, cur, tp)
                    if go < 0:
                        return tp
                    if go == 0:
                        break                   # blocked; the scheduler resumes it at its wake cycle
                elif op == OP_FENCE:
                    tdone = sync.fence(prog, cfg, rec, chk, units, p, cur, tp)
                    stalled += tdone - tp
                    tp = tdone
                elif op == OP_BARRIER:
                    resume = sync.barrier(prog, cfg, rec, sched, p, cur, tp)
                    if resume >= 0:             # the last PE arrived: every PE goes on at `resume`
                        stalled += resume - tp
                        tp = resume
                        limit = INF             # recompute on the next pick
                        nxt = cur + 1
                        cur = nxt
                    break
                else:
                    set_fault(fault, FAULT_INSTRUCTION, p, cur, -1, -1)
                    return tp
            r[0] = 0
            cur = nxt
        r[0] = 0
        # --- PE p stops running: halted, blocked, or yielded to a PE that is behind ----------------------
        pc[p] = cur
        t[p] = tp
        pstat[p, P_INSTR] += executed - executed_before
        if tp > watchdog or executed > max_instr:
            timeout(fault, p, cur, tp, executed > max_instr)
            return tp
        if events.shape[0] > 0 and tp > run_start:
            last = run_ev[p]
            if 0 <= last < evn[0] and events[last, EV_END] == run_start:
                events[last, EV_END] = tp
            elif evn[0] < events.shape[0]:
                run_ev[p] = evn[0]
                record_event(events, evn, cstat, TRACK_PE, p, run_start, tp, cur, 0, 0, K_RUN)
            else:
                cstat[S_EV_DROPPED] += 1
        pstat[p, P_ISSUE] += tp - run_start - stalled
    end = last_done
    for p in range(npe):
        end = max(end, t[p])
    cstat[S_CYCLES] = end
    return end
