"""Card memories: DRAM, shared SRAM and each PE's local memory, as pages mapped on demand.

Host memory grows with what is written, not with the configured capacity nor with what is allocated: a
page table (one int32 per 64 KiB page, 1 MiB for a 16 GB card) maps device pages to pages of one pool. The
pool is one anonymous mapping reserved once for the card's whole capacity (MAP_NORESERVE: address space,
not memory), so it never moves or copies; the kernel backs a page with memory when it is first written, and
freed pages are handed back (MADV_DONTNEED). Where the reservation is refused (strict overcommit), the pool
grows by doubling and copies only the pages in use that hold data.
A mapping is one contiguous run of pool pages, so any access inside one allocation is a plain slice.
An unmapped page is not part of anything the launch may touch: accessing it is an IllegalAddress.
"""
from __future__ import annotations

import mmap

import numpy as np
from .jit import jit

from vnpu.errors import IllegalAddress, OutOfMemory
from vnpu.isa import table as T

PAGE_BITS = 16
PAGE = 1 << PAGE_BITS

# Layout vector passed to compiled code (int64), so address translation needs no Python objects.
L_DRAM_BASE, L_DRAM_BYTES, L_SHARED_BASE, L_SHARED_BYTES, L_LOCAL_BYTES, L_SHARED_P0, L_LOCAL_P0, \
    L_LOCAL_PAGES, L_NPAGES = range(9)
LAYOUT_LEN = 9


class CardMemory:
    def __init__(self, cfg):
        self.dram_bytes = cfg.dram.bytes
        self.shared_bytes = cfg.shared_sram.bytes
        self.local_bytes = cfg.local_memory.bytes
        self.pes = cfg.pes
        n_dram = -(-self.dram_bytes // PAGE)
        n_shared = -(-self.shared_bytes // PAGE)
        self.local_pages = -(-self.local_bytes // PAGE)
        total = n_dram + n_shared + self.local_pages * self.pes
        self.layout = np.array([T.DRAM_BASE, self.dram_bytes, T.SHARED_BASE, self.shared_bytes, self.local_bytes,
                                n_dram, n_dram + n_shared, self.local_pages, total], dtype=np.int64)
        # One page table per context: contexts share the pool and the address allocator, but a context
        # maps only its own allocations, so another context's bytes are unmapped (IllegalAddress) to it.
        self.ptabs = {0: np.full(total, -1, dtype=np.int32)}
        self.local_runs = {}         # pe -> first pool page of its local memory (shared by all contexts)
        self.total_pages = total
        self._new_pool()
        self.pool_pages = 0          # pages in use at the end of the pool
        self.free_runs = []          # [(first pool page, count)] returned by unmap

    def _new_pool(self):
        """Reserve the whole capacity as address space; fall back to a growable array if refused."""
        self._map = None
        try:
            self._map = mmap.mmap(-1, self.total_pages * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
                                  | getattr(mmap, "MAP_NORESERVE", 0))
            self.pool = np.frombuffer(self._map, dtype=np.uint8)
        except (OSError, ValueError, OverflowError):
            self._map = None
            self.pool = np.zeros(0, dtype=np.uint8)

    def _release(self, first, count):
        """Give pool pages back to the host; they read as zeros afterwards."""
        if count <= 0:
            return
        if self._map is not None and hasattr(self._map, "madvise"):
            self._map.madvise(mmap.MADV_DONTNEED, first * PAGE, count * PAGE)
        else:
            self.pool[first * PAGE:(first + count) * PAGE] = 0

    # --- page management (host side, between launches) -----------------------------------------
    def gpage(self, address: int) -> int:
        """The global page number of a device address (DRAM or shared SRAM)."""
        if T.DRAM_BASE <= address < T.DRAM_BASE + self.dram_bytes:
            return (address - T.DRAM_BASE) >> PAGE_BITS
        if T.SHARED_BASE <= address < T.SHARED_BASE + self.shared_bytes:
            return int(self.layout[L_SHARED_P0]) + ((address - T.SHARED_BASE) >> PAGE_BITS)
        raise IllegalAddress("address is neither DRAM nor shared SRAM", address=address)

    def _take_pool_run(self, count):
        for i, (first, n) in enumerate(self.free_runs):
            if n >= count:
                self.free_runs[i] = (first + count, n - count)
                if n == count:
                    self.free_runs.pop(i)
                if self._map is None:
                    self.pool[first * PAGE:(first + count) * PAGE] = 0
                return first      # (a reserved pool's free runs were released, so they read as zeros)
        first = self.pool_pages
        need = (first + count) * PAGE
        if need > len(self.pool):
            if self._map is not None:
                raise OutOfMemory("card memory pool exhausted", requested=count * PAGE)
            # np.zeros is calloc-backed: pages cost host memory only once touched; copy only the pages that
            # hold data (an allocated page never written is still the kernel's shared zero page)
            grown = np.zeros(max(need, 2 * len(self.pool)), dtype=np.uint8)
            for pg in range(self.pool_pages):
                chunk = self.pool[pg * PAGE:(pg + 1) * PAGE]
                if chunk.any():
                    grown[pg * PAGE:(pg + 1) * PAGE] = chunk
            self.pool = grown
        self.pool_pages = first + count
        return first

    @property
    def ptab(self):
        """The default context's page table."""
        return self.ptabs[0]

    def new_context(self, ctx: int):
        t = np.full(len(self.ptab), -1, dtype=np.int32)
        for pe, run in self.local_runs.items():
            first = int(self.layout[L_LOCAL_P0]) + pe * self.local_pages
            t[first:first + self.local_pages] = np.arange(run, run + self.local_pages, dtype=np.int32)
        self.ptabs[ctx] = t

    def drop_context(self, ctx: int):
        self.ptabs.pop(ctx, None)

    def map(self, first_gpage: int, count: int, ctx: int = 0):
        if count <= 0:
            return
        ptab = self.ptabs[ctx]
        if np.any(ptab[first_gpage:first_gpage + count] >= 0):
            raise OutOfMemory("device pages already mapped", requested=count * PAGE)
        run = self._take_pool_run(count)
        ptab[first_gpage:first_gpage + count] = np.arange(run, run + count, dtype=np.int32)

    def unmap(self, first_gpage: int, count: int, ctx: int = 0):
        pages = self.ptabs[ctx][first_gpage:first_gpage + count]
        if count and pages[0] >= 0:
            self.free_runs.append((int(pages[0]), count))
            if self._map is not None:
                self._release(int(pages[0]), count)
        pages[:] = -1

    def map_local(self, pe: int):
        """Local memory of a PE is materialized the first time a launch uses that PE (in every context)."""
        if pe in self.local_runs:
            return
        first = int(self.layout[L_LOCAL_P0]) + pe * self.local_pages
        run = self._take_pool_run(self.local_pages)
        self.local_runs[pe] = run
        for t in self.ptabs.values():
            t[first:first + self.local_pages] = np.arange(run, run + self.local_pages, dtype=np.int32)

    def reset(self):
        for t in self.ptabs.values():
            t[:] = -1
        self.ptabs = {0: self.ptabs[0]}
        self.local_runs = {}
        if self._map is not None:
            self._release(0, self.pool_pages)
        else:
            self.pool = np.zeros(0, dtype=np.uint8)
        self.pool_pages = 0
        self.free_runs = []

    @property
    def host_bytes(self):
        """Host memory this card may hold: pool pages in use (backed by memory only where written) and the
        page tables."""
        return int(self.pool_pages * PAGE + sum(t.nbytes for t in self.ptabs.values()))

    # --- host access (driver copies and tests) -------------------------------------------------------
    def write(self, address: int, data, pe: int = -1, ctx: int = 0):
        src = np.frombuffer(memoryview(np.ascontiguousarray(data)).cast("B"), dtype=np.uint8)
        if not src.flags.writeable:
            src = src.copy()   # one compiled signature (a writable array) for both directions
        if copy_host(self.pool, self.ptabs[ctx], self.layout, pe, address, src, True) < 0:
            raise IllegalAddress(f"host write of {len(src)} bytes touches unmapped memory", pe=pe, address=address)

    def read(self, address: int, nbytes: int, pe: int = -1, ctx: int = 0) -> np.ndarray:
        out = np.empty(nbytes, dtype=np.uint8)
        if copy_host(self.pool, self.ptabs[ctx], self.layout, pe, address, out, False) < 0:
            raise IllegalAddress(f"host read of {nbytes} bytes touches unmapped memory", pe=pe, address=address)
        return out


# --- compiled address translation -------------------------------------------------------------------

@jit
def in_range(address, nbytes, base, size):
    """True when [address, address+nbytes) lies inside [base, base+size). Written without
    `address + nbytes`, which wraps negative for an address near 2**63 and would pass a naive check."""
    return 0 <= nbytes <= size and address >= base and address - base <= size - nbytes


@jit
def translate(ptab, lay, pe, address, nbytes):
    """Flat pool offset of [address, address+nbytes) as seen by PE `pe`, or -1 if any byte is outside
    a mapped page or the range is not one contiguous run of the pool. pe < 0: no local memory."""
    if nbytes < 0:
        return -1
    if pe >= 0 and in_range(address, nbytes, 0, lay[L_LOCAL_BYTES]):
        g = lay[L_LOCAL_P0] * 65536 + pe * lay[L_LOCAL_PAGES] * 65536 + address
    elif in_range(address, nbytes, lay[L_SHARED_BASE], lay[L_SHARED_BYTES]):
        g = lay[L_SHARED_P0] * 65536 + (address - lay[L_SHARED_BASE])
    elif in_range(address, nbytes, lay[L_DRAM_BASE], lay[L_DRAM_BYTES]):
        g = address - lay[L_DRAM_BASE]
    else:
        return -1
    first = g >> 16
    last = (g + max(nbytes, 1) - 1) >> 16
    p0 = ptab[first]
    if p0 < 0:
        return -1
    for k in range(first + 1, last + 1):
        if ptab[k] != p0 + (k - first):
            return -1
    return p0 * 65536 + (g & 65535)


@jit
def first_bad_byte(ptab, lay, pe, address, nbytes):
    """The first byte of [address, address+nbytes) that PE pe may not touch (the address a fault names, on
    both engines: like a CPU's faulting address, the first byte of the access that is not mapped).
    Returns `address` when the whole range is fine (callers only ask after a failed check)."""
    if nbytes <= 0:
        return address
    done = 0
    while done < nbytes:
        x = address + done
        chunk = min(nbytes - done, 65536 - (x & 65535))
        if translate(ptab, lay, pe, x, chunk) < 0:
            if translate(ptab, lay, pe, x, 1) < 0:
                return x
            lo = 1            # translate(x, lo) is fine, translate(x, hi) is not: the range leaves its region
            hi = chunk
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if translate(ptab, lay, pe, x, mid) >= 0:
                    lo = mid
                else:
                    hi = mid
            return x + lo
        done += chunk
    return address


@jit
def first_bad_local(lay, address, nbytes):
    """first_bad_byte for an access that must lie in PE-local memory."""
    if nbytes <= 0 or address < 0 or address >= lay[L_LOCAL_BYTES]:
        return address
    return lay[L_LOCAL_BYTES]


@jit
def region_of(lay, address):
    """0 local, 1 shared SRAM, 2 DRAM, -1 none (the region that prices an access)."""
    if 0 <= address < lay[L_LOCAL_BYTES]:
        return 0
    if lay[L_SHARED_BASE] <= address < lay[L_SHARED_BASE] + lay[L_SHARED_BYTES]:
        return 1
    if lay[L_DRAM_BASE] <= address < lay[L_DRAM_BASE] + lay[L_DRAM_BYTES]:
        return 2
    return -1


@jit
def copy_run(dst, d, src, s, n):
    """dst[d:d+n] = src[s:s+n], front to back (the callers never move a range onto a later part of itself).
    A loop rather than slice assignment: numba's array assignment brings its shape-error reporting, string
    formatting included, seconds of compilation on a cold start; LLVM vectorizes this loop."""
    for k in range(n):
        dst[d + k] = src[s + k]


@jit
def copy_bytes(pool, ptab, lay, pe, dst, src, nbytes):
    """Copy nbytes between two device ranges seen by PE pe, page run by page run. -1 on a bad source
    address, -2 on a bad destination. Overlapping ranges copy like memmove (every byte read before any is
    written), whichever page runs they span."""
    if dst < src + nbytes and src < dst + nbytes and dst != src:
        tmp = np.empty(nbytes, dtype=np.uint8)
        if copy_host(pool, ptab, lay, pe, src, tmp, False) < 0:
            return -1
        return -2 if copy_host(pool, ptab, lay, pe, dst, tmp, True) < 0 else 0
    done = 0
    while done < nbytes:
        chunk = min(nbytes - done, 65536 - ((src + done) & 65535), 65536 - ((dst + done) & 65535))
        s = translate(ptab, lay, pe, src + done, chunk)
        d = translate(ptab, lay, pe, dst + done, chunk)
        if s < 0:
            return -1
        if d < 0:
            return -2
        copy_run(pool, d, pool, s, chunk)
        done += chunk
    return 0


@jit
def copy_host(pool, ptab, lay, pe, address, host, to_device):
    """Copy between a host byte array and device memory, page run by page run; -1 on a bad address."""
    done = 0
    n = len(host)
    while done < n:
        chunk = min(n - done, 65536 - ((address + done) & 65535))
        o = translate(ptab, lay, pe, address + done, chunk)
        if o < 0:
            return -1
        if to_device:
            copy_run(pool, o, host, done, chunk)
        else:
            copy_run(host, done, pool, o, chunk)
        done += chunk
    return 0


@jit
def load_scalar(pool, o, nbytes, signed):
    """The little-endian integer of nbytes (1, 2, 4 or 8) at pool[o], sign- or zero-extended to int64."""
    v = np.uint64(0)
    for k in range(nbytes):
        v |= np.uint64(pool[o + k]) << np.uint64(8 * k)
    if signed and nbytes < 8:
        shift = 64 - 8 * nbytes
        return np.int64(v << np.uint64(shift)) >> shift
    return np.int64(v)


@jit
def store_scalar(pool, o, nbytes, v):
    """Store the low nbytes (1, 2, 4 or 8) of v at pool[o], little-endian (a narrower store wraps)."""
    for k in range(nbytes):
        pool[o + k] = np.uint8((v >> (8 * k)) & 0xFF)
