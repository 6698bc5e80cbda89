"""Synchronization: sig, wait, fence and barrier, between a PE and its async units and between PEs.

A semaphore is a sorted list of pending signal cycles (issue.post inserts, issue.wake_time reads it); `wait
s, n` takes the n earliest once the n-th has arrived, or blocks the PE until then; `sig` posts to another
PE's semaphore `barrier_cycles` later; `fence` waits for everything the PE issued; `barrier` holds every PE
of the launch until the last arrives. The scheduler state these change travels in state.Sched. The
functions are inlined into the core (numba IR), like the units' issue functions.
"""
from .jit import jit

from vnpu.isa import table as T

from . import sanitizer as san_mod
from .issue import consume, post, record_event, set_fault, wake_time
from .state import (BARRIER, C_BARRIER, C_DMA_ENGINES, C_NSEM, FAULT_INSTRUCTION, INF_CYCLE, K_STALL_BARRIER,
                    K_STALL_SEM, P_STALL_BARRIER, P_STALL_SEM, RUN, TRACK_PE, WAITSEM, WHY_SEM_OVERFLOW,
                    WHY_SEMAPHORE, WHY_SIG_PE)


@jit(inline="always")
def signal(prog, cfg, chk, units, sched, p, cur, tp, r):
    """`sig rs1, s`: semaphore s of PE rs1 += 1, delivered barrier_cycles later. Returns the wake cycle of
    that PE if it is waiting on s (INF if it still cannot run), or -1 with a fault recorded."""
    dec, fault = prog.code, chk.fault
    npe = len(prog.pe_ids)
    s = dec[cur, T.SEM]
    target = r[dec[cur, T.RS1]]
    if s >= int(cfg[C_NSEM]):
        set_fault(fault, FAULT_INSTRUCTION, p, cur, -1, WHY_SEMAPHORE)
        return -1
    if target < 0 or target >= npe:
        set_fault(fault, FAULT_INSTRUCTION, p, cur, -1, WHY_SIG_PE)
        return -1
    if not post(units.semt, units.semn, target, s, tp + int(cfg[C_BARRIER])):
        set_fault(fault, FAULT_INSTRUCTION, p, cur, -1, WHY_SEM_OVERFLOW)
        return -1
    if sched.status[target] == WAITSEM and dec[sched.pc[target], T.SEM] == s:
        sched.wake[target] = wake_time(units.semt, units.semn, target, s, sched.want[target])
        return sched.wake[target]
    return INF_CYCLE


@jit(inline="always")
def wait(prog, cfg, rec, chk, units, sched, p, cur, tp):
    """`wait s, n`: 1 when the n earliest signals have arrived by tp (taken; the sanitizer retires the n
    oldest operations on s), 0 when the PE blocks until they arrive, -1 with a fault recorded."""
    dec, fault = prog.code, chk.fault
    s = dec[cur, T.SEM]
    if s >= int(cfg[C_NSEM]):
        set_fault(fault, FAULT_INSTRUCTION, p, cur, -1, WHY_SEMAPHORE)
        return -1
    need = dec[cur, T.IMM]
    w = wake_time(units.semt, units.semn, p, s, need)
    if w <= tp:
        consume(units.semt, units.semn, p, s, need)
        if chk.sanitize:
            san_mod.retire(chk.san, chk.sanc, p, s, need)
        return 1
    sched.status[p] = WAITSEM
    sched.want[p] = need
    sched.wait_since[p] = tp
    sched.wake[p] = w
    return 0


@jit(inline="always")
def fence(prog, cfg, rec, chk, units, p, cur, tp):
    """`fence`: the cycle by which everything PE p issued is done (its stall is recorded); the sanitizer
    retires all of the PE's in-flight operations."""
    tdone = tp
    semt, semn = units.semt, units.semn
    for s in range(int(cfg[C_NSEM])):
        for k in range(semn[p, s]):
            tdone = max(tdone, semt[p, s, k])
    tdone = max(tdone, units.matfree[p], units.vecfree[p])
    for e in range(int(cfg[C_DMA_ENGINES])):
        tdone = max(tdone, units.dmafree[p, e])
    if tdone > tp:
        rec.pstat[p, P_STALL_SEM] += tdone - tp
        if rec.events.shape[0] > 0:
            record_event(rec.events, rec.evn, rec.cstat, TRACK_PE, p, tp, tdone, cur, prog.code[cur, 0], 0,
                         K_STALL_SEM)
    if chk.sanitize:
        san_mod.retire(chk.san, chk.sanc, p, -1, 1 << 40)
    return tdone


@jit(inline="always")
def barrier(prog, cfg, rec, sched, p, cur, tp):
    """`barrier`: PE p arrives at tp. Returns -1 while others are still to come (p waits in BARRIER), or
    the cycle every PE resumes at when p is the last (barrier_cycles after the latest arrival); the others
    move past their barrier, their stall recorded."""
    npe = len(prog.pe_ids)
    sched.status[p] = BARRIER
    sched.barrier[0] += 1
    sched.barrier[1] = max(sched.barrier[1], tp)
    sched.wait_since[p] = tp
    if sched.barrier[0] < npe:
        return -1
    resume = sched.barrier[1] + int(cfg[C_BARRIER])
    for q in range(npe):
        if sched.status[q] == BARRIER:
            rec.pstat[q, P_STALL_BARRIER] += resume - sched.wait_since[q]
            if rec.events.shape[0] > 0:
                record_event(rec.events, rec.evn, rec.cstat, TRACK_PE, q, sched.wait_since[q], resume,
                             sched.pc[q] if q != p else cur, T.OP_BARRIER, 0, K_STALL_BARRIER)
            sched.status[q] = RUN
            sched.t[q] = resume
            if q != p:
                sched.pc[q] += 1
    sched.barrier[0] = 0
    sched.barrier[1] = 0
    return resume
