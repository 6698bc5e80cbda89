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
from .jit import jit

SAN_CAP = 4096
(Z_LIVE, Z_PE, Z_QUEUE, Z_SEM, Z_PC, Z_R0LO, Z_R0HI, Z_R1LO, Z_R1HI, Z_R2LO, Z_R2HI, Z_R3LO, Z_R3HI, Z_WLO,
 Z_WHI, Z_SEQ, Z_R0ROW, Z_R0CNT, Z_R0STR, Z_WROW, Z_WCNT, Z_WSTR) = range(22)
NZ = 22
MAX_EXACT_ROWS = 4096   # 2-D patterns up to this many rows are checked row by row; larger: bounding interval
NREAD = 4
LOCAL_KEY = 1 << 62
# what `check` records about a race it finds (int64[NWHERE]): the first shared byte (a key), whether this
# access writes it and whether the other operation writes it, and both ranges (keys, [lo, hi))
W_BYTE, W_THIS_WRITES, W_OTHER_WRITES, W_THIS_LO, W_THIS_HI, W_OTHER_LO, W_OTHER_HI = range(7)
NWHERE = 7


def unkey(k, local_bytes):
    """(pe, address) of a key: pe >= 0 for a PE's local memory, -1 for shared SRAM and DRAM."""
    if k >= LOCAL_KEY:
        k -= LOCAL_KEY
        return k >> 40, k & ((1 << 40) - 1)
    return -1, k


def new_table():
    return np.zeros((SAN_CAP, NZ), dtype=np.int64), np.zeros(2, dtype=np.int64)  # table, [used, seq]


@jit
def key(local_bytes, pe, address):
    """One namespace for all memories: a PE's local bytes are distinct from every other PE's."""
    if 0 <= address < local_bytes:
        return LOCAL_KEY + pe * (1 << 40) + address
    return address


@jit
def _overlap(alo, ahi, blo, bhi):
    return alo < ahi and blo < bhi and alo < bhi and blo < ahi


@jit
def _rows_first(alo, ahi, arow, acnt, astr, blo, bhi, brow, bcnt, bstr):
    """The first byte two strided patterns share (cnt rows of `row` bytes, `str` apart, first at lo; hi
    bounds them), or -1. Exact for 2-D patterns (a DMA writing columns of a matrix that another PE also
    writes); beyond that, the bounding intervals decide (conservative)."""
    if not _overlap(alo, ahi, blo, bhi):
        return -1
    if acnt <= 1 and bcnt <= 1:
        return max(alo, blo)
    if acnt <= 1:                     # a plain interval is one row
        acnt, arow, astr = 1, ahi - alo, 1
    if bcnt <= 1:
        bcnt, brow, bstr = 1, bhi - blo, 1
    if acnt > MAX_EXACT_ROWS or bcnt > MAX_EXACT_ROWS or astr <= 0 or (bcnt > 1 and bstr <= 0):
        return max(alo, blo)   # not a simple positive-stride pattern: the bounding intervals overlap
    first = np.int64(-1)
    for i in range(acnt):
        x = alo + i * astr
        if first >= 0 and x >= first:
            break
        if bcnt <= 1:
            if _overlap(x, x + arow, blo, blo + brow):
                y = max(x, blo)
                first = y if first < 0 else min(first, y)
            continue
        # rows j of b with blo + j*bstr < x + arow and blo + j*bstr + brow > x
        jmin = (x - brow - blo) // bstr + 1
        jmax = -((blo - x - arow) // bstr) - 1
        jmin = max(jmin, 0)
        jmax = min(jmax, bcnt - 1)
        if jmin <= jmax:
            y = max(x, blo + jmin * bstr)
            first = y if first < 0 else min(first, y)
    return first


@jit(shared="void(int64[::1], int64, int64, int64, int64, int64, int64, int64)")
def _note(where, byte, this_writes, other_writes, tlo, thi, olo, ohi):
    where[W_BYTE] = byte
    where[W_THIS_WRITES] = this_writes
    where[W_OTHER_WRITES] = other_writes
    where[W_THIS_LO] = tlo
    where[W_THIS_HI] = thi
    where[W_OTHER_LO] = olo
    where[W_OTHER_HI] = ohi


@jit(shared="int64(int64[:, ::1], int64[::1], int64[::1], int64, int64, int64[:, ::1], int64, int64, int64[::1])")
def check(san, sanc, where, pe, queue, reads, wlo, whi, pat):
    """Index of an in-flight operation this access races with, or -1 (then `where` tells the first shared
    byte and both ranges). reads: int64[NREAD, 2]; pat: [read0 row bytes, rows, stride, write row bytes,
    rows, stride] (rows 1: a plain interval)."""
    for i in range(sanc[0]):
        if san[i, Z_LIVE] == 0:
            continue
        if san[i, Z_PE] == pe and san[i, Z_QUEUE] == queue:
            continue  # same in-order queue
        olo, ohi = san[i, Z_WLO], san[i, Z_WHI]
        orow, ocnt, ostr = san[i, Z_WROW], san[i, Z_WCNT], san[i, Z_WSTR]
        for r in range(NREAD):       # this access reads what the other may still write
            if r == 0:
                b = _rows_first(reads[0, 0], reads[0, 1], pat[0], pat[1], pat[2], olo, ohi, orow, ocnt, ostr)
            else:
                b = max(reads[r, 0], olo) if _overlap(reads[r, 0], reads[r, 1], olo, ohi) else -1
            if b >= 0:
                _note(where, b, 0, 1, reads[r, 0], reads[r, 1], olo, ohi)
                return i
        if wlo < whi:                # this access writes what the other may still write or read
            b = _rows_first(wlo, whi, pat[3], pat[4], pat[5], olo, ohi, orow, ocnt, ostr)
            if b >= 0:
                _note(where, b, 1, 1, wlo, whi, olo, ohi)
                return i
            for r in range(NREAD):
                rlo, rhi = san[i, Z_R0LO + 2 * r], san[i, Z_R0HI + 2 * r]
                if r == 0:
                    b = _rows_first(wlo, whi, pat[3], pat[4], pat[5], rlo, rhi,
                                    san[i, Z_R0ROW], san[i, Z_R0CNT], san[i, Z_R0STR])
                else:
                    b = max(wlo, rlo) if _overlap(wlo, whi, rlo, rhi) else -1
                if b >= 0:
                    _note(where, b, 1, 0, wlo, whi, rlo, rhi)
                    return i
    return -1


@jit
def _compact(san, sanc):
    j = 0
    for i in range(sanc[0]):
        if san[i, Z_LIVE]:
            if i != j:
                for c in range(NZ):     # a loop, not san[j, :] = san[i, :]: array assignment compiles for seconds
                    san[j, c] = san[i, c]
            j += 1
    sanc[0] = j


@jit(shared="void(int64[:, ::1], int64[::1], int64, int64, int64, int64, int64[:, ::1], int64, int64, int64[::1])")
def add(san, sanc, pe, queue, sem, pc, reads, wlo, whi, pat):
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
    san[i, Z_R0ROW] = pat[0]
    san[i, Z_R0CNT] = pat[1]
    san[i, Z_R0STR] = pat[2]
    san[i, Z_WROW] = pat[3]
    san[i, Z_WCNT] = pat[4]
    san[i, Z_WSTR] = pat[5]
    san[i, Z_SEQ] = sanc[1]
    sanc[1] += 1
    sanc[0] += 1


@jit(shared="void(int64[:, ::1], int64[::1], int64, int64, int64)")
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
