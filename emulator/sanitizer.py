"""The race sanitizer: every async operation's memory ranges stay "in flight" until a wait retires it.

An access (scalar load/store or a new async operation) that reads bytes an in-flight operation may still
write, or writes bytes it may still read or write, is a race unless both are on the same in-order queue.
Retirement follows synchronization only: `wait s, n` retires the n oldest in-flight operations of this
PE that signal s; `fence` retires all of them. Within one PE the verdict therefore does not depend on
timing. Limits (docs/deviations.md): if two queues signal one semaphore, "oldest by issue" may not be the
one that finished; ordering between PEs through barriers and sig is not tracked, so a cross-PE access is
checked against what the other PE has not yet waited for at that moment; ranges of strided transfers are
their bounding interval (conservative).
"""
import numpy as np
from numba import njit

SAN_CAP = 4096
(Z_LIVE, Z_PE, Z_QUEUE, Z_SEM, Z_PC, Z_R0LO, Z_R0HI, Z_R1LO, Z_R1HI, Z_R2LO, Z_R2HI, Z_R3LO, Z_R3HI, Z_WLO,
 Z_WHI, Z_SEQ) = range(16)
NZ = 16
NREAD = 4
LOCAL_KEY = 1 << 62


def new_table():
    return np.zeros((SAN_CAP, NZ), dtype=np.int64), np.zeros(2, dtype=np.int64)  # table, [used, seq]


@njit(cache=True, nogil=True)
def key(local_bytes, pe, address):
    """One namespace for all memories: a PE's local bytes are distinct from every other PE's."""
    if 0 <= address < local_bytes:
        return LOCAL_KEY + pe * (1 << 40) + address
    return address


@njit(cache=True, nogil=True)
def _overlap(alo, ahi, blo, bhi):
    return alo < ahi and blo < bhi and alo < bhi and blo < ahi


@njit(cache=True, nogil=True)
def check(san, sanc, pe, queue, reads, wlo, whi):
    """Index of an in-flight operation this access races with, or -1. reads: int64[NREAD, 2]."""
    for i in range(sanc[0]):
        if san[i, Z_LIVE] == 0:
            continue
        if san[i, Z_PE] == pe and san[i, Z_QUEUE] == queue:
            continue  # same in-order queue
        olo, ohi = san[i, Z_WLO], san[i, Z_WHI]
        for r in range(NREAD):
            if _overlap(reads[r, 0], reads[r, 1], olo, ohi):
                return i
        if wlo < whi:
            if _overlap(wlo, whi, olo, ohi):
                return i
            for r in range(NREAD):
                if _overlap(wlo, whi, san[i, Z_R0LO + 2 * r], san[i, Z_R0HI + 2 * r]):
                    return i
    return -1


@njit(cache=True, nogil=True)
def add(san, sanc, pe, queue, sem, pc, reads, wlo, whi):
    if sanc[0] >= SAN_CAP:
        _compact(san, sanc)
        if sanc[0] >= SAN_CAP:  # table full of live ops: forget the oldest (detection only weakens)
            san[0, Z_LIVE] = 0
            _compact(san, sanc)
    i = sanc[0]
    san[i, Z_LIVE] = 1
    san[i, Z_PE] = pe
    san[i, Z_QUEUE] = queue
    san[i, Z_SEM] = sem
    san[i, Z_PC] = pc
    for r in range(NREAD):
        san[i, Z_R0LO + 2 * r] = reads[r, 0]
        san[i, Z_R0HI + 2 * r] = reads[r, 1]
    san[i, Z_WLO] = wlo
    san[i, Z_WHI] = whi
    san[i, Z_SEQ] = sanc[1]
    sanc[1] += 1
    sanc[0] += 1


@njit(cache=True, nogil=True)
def _compact(san, sanc):
    j = 0
    for i in range(sanc[0]):
        if san[i, Z_LIVE]:
            if i != j:
                san[j, :] = san[i, :]
            j += 1
    sanc[0] = j


@njit(cache=True, nogil=True)
def retire(san, sanc, pe, sem, count):
    """Retire the `count` oldest live operations of PE pe on semaphore sem (sem < 0: all of them)."""
    left = count
    for i in range(sanc[0]):
        if left == 0:
            break
        if san[i, Z_LIVE] and san[i, Z_PE] == pe and (sem < 0 or san[i, Z_SEM] == sem):
            san[i, Z_LIVE] = 0
            left -= 1
    while sanc[0] > 0 and san[sanc[0] - 1, Z_LIVE] == 0:
        sanc[0] -= 1
