"""The DLRM demo's work against the host computing the same model natively (numpy), and how much slower
than the modeled hardware the emulation runs (virtual time against wall time)."""
from __future__ import annotations

import os
import time

import numpy as np


def bench_dlrm(quick):
    import vnpu
    from vnpu.runtime import DLRM, Executor, preset
    platform = vnpu.Platform()
    model = DLRM(preset("rm1", rows_scale=1 / 100))
    batch, requests = (64, 4) if quick else (64, 16)
    ex = Executor(platform, model, batch)
    rng = np.random.default_rng(0)
    reqs = [model.make_request(batch, rng) for _ in range(requests)]
    ex.submit(0, *reqs[0])                     # first request: loads, compiles nothing new, warms caches
    for d in platform.devices:
        d.synchronize()
    t = time.perf_counter()
    spans = []
    for r, req in enumerate(reqs):
        out, s, e = ex.submit(r, *req)
        spans.append(e.time_ns - s.time_ns)
        for d in platform.devices:
            d.synchronize()
    emulated = time.perf_counter() - t
    t = time.perf_counter()
    for dense, lookups in reqs:
        model.reference(dense, lookups)
    native = time.perf_counter() - t
    ex.release()
    virtual_s = sum(spans) / 1e9
    return {"model": "rm1 (1/100 rows)", "batch": batch, "requests": requests, "cards": len(platform.devices),
            "emulated_s": emulated, "numpy_s": native, "slowdown_vs_numpy": emulated / native,
            "virtual_s": virtual_s, "wall_per_virtual_s": emulated / virtual_s}


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bench_memory():
    """Host memory (resident set) per card byte: a 1 GiB allocation on a reference card, untouched, then
    64 MiB of it written. Card DRAM is a calloc-backed pool of 64 KiB pages, so host memory follows the
    pages written, not the bytes allocated."""
    import vnpu
    platform = vnpu.Platform(cards=1)
    dev = platform.devices[0]
    q = dev.queue()
    written = 64 << 20
    host = np.ones(written, np.uint8)
    nbytes = 1 << 30
    before = _rss()
    buf = dev.alloc(nbytes)
    untouched = max(0, _rss() - before)
    q.copy_to_device(buf, host)
    after = max(0, _rss() - before)
    buf.free()
    return {"allocated_bytes": nbytes, "host_bytes_untouched": untouched,
            "host_per_card_byte_untouched": untouched / nbytes, "written_bytes": written,
            "host_bytes_written": after, "host_per_written_byte": after / written}
