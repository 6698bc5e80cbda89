"""What every unit's issue shares: fault records, semaphore signals, completion and trace events.

An async unit's `issue` (vector.issue, matrix.issue, dma.issue, embedding.issue) is check + compute + cost +
book: it checks its operands (a fault record and -1 when one is wrong), computes its result at issue, prices
it, books its unit's timeline, and ends with `complete` (signal at the completion cycle, sanitizer, trace).
"""
import numpy as np
from .jit import jit

from . import sanitizer as san_mod
from .memory import L_LOCAL_BYTES, in_range
from .state import (EV_AUX, EV_END, EV_KIND, EV_OP, EV_PC, EV_PE, EV_START, EV_TRACK, FAULT_INSTRUCTION, FAULT_RACE,
                    FAULT_TIMEOUT, F_ADDR, F_AUX, F_CODE, F_PC, F_PC2, F_PE, F_PE2, F_RACE, INF_CYCLE, K_OP,
                    S_EV_DROPPED, WHY_SEM_OVERFLOW)

SEMCAP = 256                      # pending signals per semaphore
INF = INF_CYCLE                   # "never", in cycles
Q_SCALAR, Q_MATRIX, Q_VECTOR, Q_EMB, Q_DMA0 = -1, 1, 2, 3, 16     # in-order queues, for the sanitizer
MAX_ELEMS = 1 << 28               # largest element count of one vector or matrix operand
ELEM = np.array([1, 4, 2, 4], dtype=np.int64)   # bytes per element of i8, i32, f16, f32


@jit(shared="void(int64[:, ::1], int64[::1], int64[::1], int64, int64, int64, int64, int64, int64, int64, int64)")
def record_event(events, evn, cstat, track, pe, start, end, pc, op, aux, kind):
    if evn[0] >= events.shape[0]:
        cstat[S_EV_DROPPED] += 1
        return
    i = evn[0]
    events[i, EV_TRACK] = track
    events[i, EV_PE] = pe
    events[i, EV_START] = start
    events[i, EV_END] = end
    events[i, EV_PC] = pc
    events[i, EV_OP] = op
    events[i, EV_AUX] = aux
    events[i, EV_KIND] = kind
    evn[0] += 1


@jit(shared="void(int64[::1], int64, int64, int64, int64, int64)")
def set_fault(fault, code, pe, pc, addr, aux):
    fault[F_CODE] = code
    fault[F_PE] = pe
    fault[F_PC] = pc
    fault[F_ADDR] = addr
    fault[F_AUX] = aux


@jit(shared="void(int64[::1], int64, int64, int64, boolean)")
def timeout(fault, pe, pc, tp, by_instructions):
    """LaunchTimeout: the card-time watchdog (cycles) or the executed-instruction budget of the launch."""
    set_fault(fault, FAULT_TIMEOUT, pe, pc, -1, tp)
    fault[F_PC2] = 1 if by_instructions else 0


@jit(shared="void(int64[::1], int64[:, ::1], int64[::1], int64, int64, int64)")
def race(fault, san, where, pe, pc, hit):
    """A RaceError: this access (pe, pc) against the in-flight operation `hit` of the sanitizer; `where`
    (the sanitizer's record) names the first byte they share and both ranges."""
    set_fault(fault, FAULT_RACE, pe, pc, where[san_mod.W_BYTE], hit)
    for k in range(san_mod.NWHERE):     # loops, not slice assignment, in compiled code: see memory.copy_run
        fault[F_RACE + k] = where[k]
    fault[F_PE2] = san[hit, san_mod.Z_PE]
    fault[F_PC2] = san[hit, san_mod.Z_PC]


@jit(shared="boolean(int64[:, :, ::1], int64[:, ::1], int64, int64, int64)")
def post(semt, semn, pe, s, when):
    """Deliver one signal to semaphore s of PE pe at cycle `when`; False when too many are pending. The
    pending times stay sorted (insertion; at most SEMCAP of them), so waits need no sort."""
    n = semn[pe, s]
    if n >= SEMCAP:
        return False
    i = n
    while i > 0 and semt[pe, s, i - 1] > when:
        semt[pe, s, i] = semt[pe, s, i - 1]
        i -= 1
    semt[pe, s, i] = when
    semn[pe, s] = n + 1
    return True


@jit
def local_ok(lay, a, nbytes):
    """True when [a, a+nbytes) lies inside PE-local memory (no `a + nbytes`: it could wrap past 2**63)."""
    return in_range(a, nbytes, 0, lay[L_LOCAL_BYTES])


@jit(shared="int64(int64[:, :, ::1], int64[:, ::1], int64, int64, int64)")
def wake_time(semt, semn, p, s, want):
    """Cycle at which `want` signals of semaphore s of PE p have arrived (INF if not enough pending).
    Pending signal times are kept sorted (`_post` inserts in order)."""
    n = semn[p, s]
    if n < want:
        return INF
    if want <= 0:
        return 0
    return semt[p, s, want - 1]


@jit(shared="void(int64[:, :, ::1], int64[:, ::1], int64, int64, int64)")
def consume(semt, semn, p, s, want):
    """Take the `want` earliest pending signals."""
    n = semn[p, s]
    for i in range(n - want):
        semt[p, s, i] = semt[p, s, i + want]
    semn[p, s] = n - want


@jit(shared="boolean(int64[:, :, ::1], int64[:, ::1], int64[::1], int64[:, ::1], int64[::1], boolean, "
            "int64[:, ::1], int64[::1], int64[::1], int64, int64, int64, int64, int64, int64, int64, int64, int64, "
            "int64[:, ::1], int64, int64, int64[::1])")
def complete(semt, semn, fault, san, sanc, sanitize, events, evn, cstat, p, cur, op, s, queue, track, start, done,
              aux, reads, wlo, whi, pat):
    """What every async unit does once it has booked its work: signal semaphore s at `done`, keep the
    operation in flight for the sanitizer until a wait retires it, and record it on the unit's trace track.
    False (and a fault) when the semaphore has too many pending signals."""
    if not post(semt, semn, p, s, done):
        set_fault(fault, FAULT_INSTRUCTION, p, cur, -1, WHY_SEM_OVERFLOW)
        return False
    if sanitize:
        san_mod.add(san, sanc, p, queue, s, cur, reads, wlo, whi, pat)
    if events.shape[0] > 0:
        record_event(events, evn, cstat, track, p, start, done, cur, op, aux, K_OP)
    return True


