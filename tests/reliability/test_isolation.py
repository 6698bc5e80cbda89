"""Context isolation: a kernel of one context cannot read or write what another context owns.

Two contexts on one card (`dev.create_context()`); context B's kernels reach for context A's buffers by
address (DMA source and destination, the embedding unit's table and output, scalar loads and stores) and
probe the whole address space from a context that owns nothing there. Every probe must end the launch
with `vnpu.IllegalAddress` (reported on the next call on that device, sticky until `dev.reset()`), and A's
bytes must be unchanged.

How A's data is verified while the fault is sticky: every driver call on the faulted device re-raises the
fault (Queue.copy_to_host -> Context.check -> Device.check raises `device.sticky`), and `dev.reset()` wipes
card memory. So A's bytes are read straight from the emulated card, in A's address space, with
`dev.card.read(address, n, ctx=A.id)` after the fault is seen and before the reset; before the probe they
are read through the driver (`copy_to_host` on A's queue).
"""
from __future__ import annotations

import numpy as np
import pytest

import vnpu
from vnpu.emulator.card import Card
from vnpu.isa import table as T

PROBES = vnpu.assemble("""
; [addr, addr+n) -> local[0:n) -> out          (a DMA read of any address)
.kernel dma_read
.arg addr, scalar, i64
.arg n, scalar, i64
.arg out, buffer, u8
    dma  e0, zero, addr, n, s0
    wait s0, 1
    dma  e0, out, zero, n, s1
    wait s1, 1
    halt

; local[0:n) = 0xEE.. -> [addr, addr+n)        (a DMA write of any address)
.kernel dma_write
.arg addr, scalar, i64
.arg n, scalar, i64
    li   r5, 0xEEEEEEEE
    lih  r5, 0xEEEEEEEE
    li   r6, 0
fill:
    bge  r6, n, go
    sd   r5, 0(r6)
    addi r6, r6, 8
    j    fill
go:
    dma  e0, addr, zero, n, s0
    wait s0, 1
    halt

; out[0:8] = the 8 bytes at addr, read by a scalar load
.kernel ld_probe
.arg addr, scalar, i64
.arg out, buffer, u8
    ld   r5, 0(addr)
    sd   r5, 0(zero)
    li   r6, 8
    dma  e0, out, zero, r6, s0
    wait s0, 1
    halt

; 8 bytes 0x45.. stored at addr by a scalar store
.kernel sd_probe
.arg addr, scalar, i64
    li   r5, 0x45454545
    lih  r5, 0x45454545
    sd   r5, 0(addr)
    halt

; a one-row, two-float fp32 embedding bag: output[0:2] = table[0][0:2]   (the embedding unit)
.kernel emb_probe
.arg table, scalar, i64
.arg output, scalar, i64
    sd   table, 0(zero)
    li   r5, 1
    sd   r5, 8(zero)           ; rows
    li   r5, 2
    sd   r5, 16(zero)          ; dim
    sd   zero, 24(zero)        ; format fp32
    li   r5, 0x100
    sd   r5, 32(zero)          ; indices (local)
    li   r5, 1
    sd   r5, 40(zero)          ; num_indices
    li   r5, 4
    sd   r5, 48(zero)          ; index_bytes
    li   r5, 0x200
    sd   r5, 56(zero)          ; segments: lengths (local)
    li   r5, 1
    sd   r5, 64(zero)          ; num_bags
    sd   zero, 72(zero)        ; weights
    sd   output, 80(zero)      ; output
    sd   zero, 88(zero)        ; out_dtype fp32
    sd   zero, 96(zero)        ; mode: sum, lengths
    li   r5, 4
    sd   r5, 104(zero)         ; segment_bytes
    sd   zero, 112(zero)
    sd   zero, 120(zero)
    sw   zero, 0x100(zero)     ; index 0
    li   r5, 1
    sw   r5, 0x200(zero)       ; length 1
    emb  zero, s0
    wait s0, 1
    halt
""")

PAGE = 65536
A_BYTES = 3 * PAGE            # A's DRAM buffer: three pages
A_SHARED = PAGE               # A's shared SRAM buffer


def _pattern(n, seed):
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


class Pair:
    """A card with contexts A (the victim, holding data) and B (the prober), set up through the driver."""

    def __init__(self, dev, b_first=False):
        self.dev = dev
        self.A = dev.create_context()
        self.B = dev.create_context()
        if b_first:          # B's buffer right below A's: an overrun of B's buffer lands in A's first page
            self.b_buf = self.B.alloc(PAGE)
        self.a_buf = self.A.alloc(A_BYTES)
        self.a_sbuf = self.A.alloc(A_SHARED, memory="shared")
        if not b_first:
            self.b_buf = self.B.alloc(PAGE)
        self.b_out = self.B.alloc(PAGE)
        self.qa, self.qb = self.A.queue(), self.B.queue()
        self.a_data, self.a_sdata = _pattern(A_BYTES, 1), _pattern(A_SHARED, 2)
        self.qa.copy_to_device(self.a_buf, self.a_data)
        self.qa.copy_to_device(self.a_sbuf, self.a_sdata)
        self.b_data = _pattern(PAGE, 3)
        self.qb.copy_to_device(self.b_buf, self.b_data)
        self.mod = self.B.load(PROBES)
        # through the driver, before any probe: A's data is in place
        assert np.array_equal(self.qa.copy_to_host(self.a_buf), self.a_data)
        assert np.array_equal(self.qa.copy_to_host(self.a_sbuf), self.a_sdata)

    def a_intact_on_card(self):
        """A's bytes read from the card in A's address space (works while the device holds a sticky fault)."""
        card = self.dev.card
        return (np.array_equal(card.read(self.a_buf.device_address, A_BYTES, ctx=self.A.id), self.a_data)
                and np.array_equal(card.read(self.a_sbuf.device_address, A_SHARED, ctx=self.A.id), self.a_sdata))

    def launch(self, kind, addr, n=8):
        k = self.mod["emb_probe" if kind.startswith("emb") else kind]
        if kind == "dma_read":
            self.qb.launch(k, addr, n, self.b_out)
        elif kind == "dma_write":
            self.qb.launch(k, addr, n)
        elif kind == "ld_probe":
            self.qb.launch(k, addr, self.b_out)
        elif kind == "sd_probe":
            self.qb.launch(k, addr)
        elif kind == "emb_table":
            self.qb.launch(k, addr, self.b_out.device_address)
        elif kind == "emb_output":
            self.qb.launch(k, self.b_buf.device_address, addr)
        else:
            raise AssertionError(kind)


def _expect_sticky_illegal_address(pair, platform, lo, hi):
    """The launch did not raise; the next call does (IllegalAddress inside [lo, hi)), every later call on the
    device too, A's data is intact on the card, other cards work; then reset and the card works again."""
    dev = pair.dev
    with pytest.raises(vnpu.IllegalAddress) as e:
        pair.qb.synchronize()
    err = e.value
    assert err.card == dev.index and err.address is not None and lo <= err.address < hi, (err, hex(lo), hex(hi))
    for call in (lambda: pair.qa.copy_to_host(pair.a_buf), lambda: dev.alloc(8), lambda: pair.A.alloc(8),
                 lambda: pair.qb.launch(pair.mod["sd_probe"], 0)):
        with pytest.raises(vnpu.IllegalAddress):
            call()                                        # sticky, for A's calls too
    assert pair.a_intact_on_card(), "context B's faulting kernel changed context A's bytes"
    other = platform.devices[(dev.index + 1) % len(platform.devices)]
    ob = other.alloc(8)
    other.queue().copy_to_device(ob, np.array([77], np.int64))
    assert other.queue().copy_to_host(ob, dtype=np.int64)[0] == 77      # other cards keep working
    dev.reset()
    with pytest.raises(vnpu.InvalidHandle):
        pair.a_buf.free()
    fresh = dev.alloc(8)                                  # and after the reset the card works again
    dev.queue().copy_to_device(fresh, np.array([-5], np.int64))
    assert dev.queue().copy_to_host(fresh, dtype=np.int64)[0] == -5
    return err


@pytest.fixture(scope="module")
def platform():
    return vnpu.Platform(card="tiny", cards=3)


def test_positive_controls_each_probe_reaches_the_callers_own_memory(platform):
    """The probe kernels really move bytes when the address is the caller's own: so their faults below mean
    isolation, not a broken kernel."""
    dev = platform.devices[0]
    dev.reset()
    p = Pair(dev)
    mine = p.b_buf.device_address
    p.launch("dma_read", mine + 16, 64)
    assert np.array_equal(p.qb.copy_to_host(p.b_out)[:64], p.b_data[16:80])
    p.launch("dma_write", mine + 8, 16)
    got = p.qb.copy_to_host(p.b_buf)
    assert np.all(got[8:24] == 0xEE) and np.array_equal(got[24:], p.b_data[24:])
    p.launch("ld_probe", 64)            # a scalar load of the PE's own local memory
    p.launch("sd_probe", 64)
    p.launch("ld_probe", 64)
    assert p.qb.copy_to_host(p.b_out, dtype=np.int64)[0] == 0x4545454545454545
    table = np.array([1.5, -2.25], np.float32)
    p.qb.copy_to_device(p.b_buf, table)
    p.launch("emb_table", mine)         # table = B's buffer, output = B's out buffer
    assert np.array_equal(p.qb.copy_to_host(p.b_out, dtype=np.float32)[:2], table)
    p.launch("emb_output", p.b_out.device_address)
    assert np.array_equal(p.qb.copy_to_host(p.b_out, dtype=np.float32)[:2], table)
    p.qb.synchronize()
    assert p.a_intact_on_card()
    print("\n[isolation controls] 7 probe launches on B's own memory: data right, faults 0, A corrupted 0")
    dev.reset()


def _targets(p):
    a, s = p.a_buf.device_address, p.a_sbuf.device_address
    return {"A dram first bytes": a, "A dram middle page": a + PAGE + 4000, "A dram last 8 bytes": a + A_BYTES - 8,
            "A shared first bytes": s, "A shared last 8 bytes": s + A_SHARED - 8}


KINDS = ["dma_read", "dma_write", "emb_table", "emb_output"]


@pytest.mark.parametrize("kind", KINDS)
def test_context_b_cannot_touch_context_a_buffers(platform, kind):
    dev = platform.devices[0]
    dev.reset()
    seen, tried = {}, 0
    for name in _targets(Pair(dev)):
        dev.reset()
        p = Pair(dev)
        addr = _targets(p)[name]
        p.launch(kind, addr)
        err = _expect_sticky_illegal_address(p, platform, addr, addr + 8)
        seen[type(err).__name__] = seen.get(type(err).__name__, 0) + 1
        tried += 1
    # an overrun of B's own buffer into A's adjacent first page (B allocated just below A)
    if kind.startswith("dma"):
        dev.reset()
        p = Pair(dev, b_first=True)
        assert p.b_buf.device_address + PAGE == p.a_buf.device_address
        p.launch(kind, p.b_buf.device_address + PAGE - 8, 16)
        err = _expect_sticky_illegal_address(p, platform, p.a_buf.device_address, p.a_buf.device_address + 8)
        seen[type(err).__name__] = seen.get(type(err).__name__, 0) + 1
        tried += 1
    print(f"\n[isolation {kind}] probes {tried}, faults {seen}, A corrupted 0")
    assert seen == {"IllegalAddress": tried}
    dev.reset()


def _sweep_addresses(p, cfg, rng, random_count):
    """Addresses across the whole map that context B owns nothing at (8-byte probes)."""
    local, dram, shared = cfg.local_memory.bytes, cfg.dram.bytes, cfg.shared_sram.bytes
    D, S = T.DRAM_BASE, T.SHARED_BASE
    a, s = p.a_buf.device_address, p.a_sbuf.device_address
    own = [(x.device_address, x.device_address + x.nbytes) for x in (p.b_buf, p.b_out)]
    last_end = max([a + A_BYTES] + [-(-hi // PAGE) * PAGE for lo, hi in own if lo >= D])
    fixed = {
        # DRAM: A's, unallocated, the last bytes, past the end
        "dram A first": a, "dram A +4093 (unaligned)": a + 4093, "dram A last": a + A_BYTES - 8,
        "dram just past the last allocation": last_end, "dram unallocated middle": D + dram // 2 + 12345,
        "dram last 8 bytes": D + dram - 8, "dram straddling its end": D + dram - 4, "dram past its end": D + dram,
        "dram +1 GiB past": D + dram + (1 << 30), "below dram": D - 8,
        # shared SRAM
        "shared A first": s, "shared A last": s + A_SHARED - 8, "shared unallocated": S + shared - PAGE,
        "shared last 8 bytes": S + shared - 8, "shared past its end": S + shared, "below shared": S - 8,
        # beyond local memory, between regions, negative, highest
        "local end straddle": local - 4, "just beyond local": local, "local +1 page": local + PAGE,
        "2 GiB": 1 << 31, "4 GiB + 32 GiB gap": 0x2_0000_0000, "top of dram region + 1 TiB": D + (1 << 40),
        "2**62": 1 << 62, "2**63 - 4096": (1 << 63) - 4096,
        # the last bytes below 2**63: `address + 8` wraps negative in int64 (bug 1, fixed)
        "2**63 - 8": (1 << 63) - 8, "2**63 - 4 (end wraps past 2**63)": (1 << 63) - 4, "2**63 - 1": (1 << 63) - 1,
        "-8": -8, "-1": -1, "-(1 << 40)": -(1 << 40), "INT64_MIN": -(1 << 63),
    }
    own = [(x.device_address, x.device_address + x.nbytes) for x in (p.b_buf, p.b_out)]
    rand = []
    while len(rand) < random_count:
        region = rng.integers(0, 3)
        if region == 0:
            v = int(D + rng.integers(0, dram + PAGE))
        elif region == 1:
            v = int(S + rng.integers(0, shared + PAGE))
        else:
            v = int(rng.integers(local, 1 << 40)) * (1 if rng.random() < 0.7 else -1)
        if not any(lo - 8 < v < hi for lo, hi in own):
            rand.append(v)
    out = list(fixed.items()) + [(f"random {hex(v)}", v) for v in rand]
    for name, v in out:
        assert not any(lo - 8 < v < hi for lo, hi in own), name
    return out


def probe_sweep_driver(platform, random_count=60, seed=5):
    """Every sweep address x {dma_read, dma_write, ld_probe, sd_probe}, one launch per reset, through the
    driver. Returns the figures."""
    dev = platform.devices[1]
    dev.reset()
    rng = np.random.default_rng(seed)
    addrs = _sweep_addresses(Pair(dev), dev.config, rng, random_count)
    faults, wrong = {}, []
    for name, addr in addrs:
        for kind in ("dma_read", "dma_write", "ld_probe", "sd_probe"):
            dev.reset()
            p = Pair(dev)
            p.launch(kind, addr)
            try:
                p.qb.synchronize()
                outcome, err = "no fault", None
            except vnpu.VnpuError as e:
                outcome, err = type(e).__name__, e
            faults[outcome] = faults.get(outcome, 0) + 1
            intact = p.a_intact_on_card()
            if outcome != "IllegalAddress" or not intact or err.address is None or \
                    not addr - 8 < err.address < addr + 8 or err.card != dev.index:
                wrong.append((name, kind, outcome, intact, str(err)))
    dev.reset()
    return {"probes": len(addrs) * 4, "addresses": len(addrs), "faults": faults, "wrong": wrong}


def test_probe_sweep_through_the_driver_faults_only_with_illegal_address(platform):
    import os
    fig = probe_sweep_driver(platform, random_count=int(60 * float(os.environ.get("VNPU_FUZZ_SCALE", "1"))))
    print(f"\n[isolation sweep, driver] probes {fig['probes']} at {fig['addresses']} addresses, faults "
          f"{fig['faults']}, wrong {len(fig['wrong'])}, A corrupted 0")
    assert fig["wrong"] == [], fig["wrong"][:5]
    assert fig["faults"] == {"IllegalAddress": fig["probes"]}


def probe_sweep_card(engine, random_count, seed=11):
    """The same sweep on a bare Card (contexts at the emulator level, no sticky state, so no reset between
    probes): many more addresses, on both engines. A's bytes are checked after every probe."""
    card = Card("tiny")
    a_ctx, b_ctx = card.create_context(), card.create_context()
    a = card.alloc(A_BYTES, ctx=a_ctx)
    s = card.alloc(A_SHARED, memory="shared", ctx=a_ctx)
    b_out = card.alloc(PAGE, ctx=b_ctx)
    a_data, s_data = _pattern(A_BYTES, 1), _pattern(A_SHARED, 2)
    card.write(a, a_data, ctx=a_ctx)
    card.write(s, s_data, ctx=a_ctx)
    mod = card.load(PROBES, ctx=b_ctx)

    class P:   # what _sweep_addresses needs
        pass
    p = P()
    p.a_buf = type("B", (), {"device_address": a, "nbytes": A_BYTES})()
    p.a_sbuf = type("B", (), {"device_address": s, "nbytes": A_SHARED})()
    p.b_buf = p.b_out = type("B", (), {"device_address": b_out, "nbytes": PAGE})()
    addrs = _sweep_addresses(p, card.config, np.random.default_rng(seed), random_count)
    faults, wrong = {}, []
    for name, addr in addrs:
        for kind, args in (("dma_read", (addr, 8, b_out)), ("dma_write", (addr, 8)), ("ld_probe", (addr, b_out)),
                           ("sd_probe", (addr,)), ("emb_table", (addr, b_out)), ("emb_output", (b_out, addr))):
            try:
                card.launch(mod, "emb_probe" if kind.startswith("emb") else kind, args, pes=(0,), engine=engine)
                outcome, err = "no fault", None
            except vnpu.VnpuError as e:
                outcome, err = type(e).__name__, e
            except Exception as e:  # noqa: BLE001
                outcome, err = "NON-VNPU " + type(e).__name__, e
            faults[outcome] = faults.get(outcome, 0) + 1
            intact = (np.array_equal(card.read(a, A_BYTES, ctx=a_ctx), a_data)
                      and np.array_equal(card.read(s, A_SHARED, ctx=a_ctx), s_data))
            if outcome != "IllegalAddress" or not intact:
                wrong.append((name, kind, outcome, intact, str(err)))
    return {"probes": 6 * len(addrs), "addresses": len(addrs), "faults": faults, "wrong": wrong}


@pytest.mark.parametrize("engine", ["numba", "reference"])
def test_probe_sweep_on_the_card_both_engines(engine):
    import os
    scale = float(os.environ.get("VNPU_FUZZ_SCALE", "1"))
    fig = probe_sweep_card(engine, random_count=int(400 * scale))
    print(f"\n[isolation sweep, card {engine}] probes {fig['probes']} at {fig['addresses']} addresses, faults "
          f"{fig['faults']}, wrong {len(fig['wrong'])}, A corrupted 0")
    assert fig["wrong"] == [], fig["wrong"][:5]
    assert fig["faults"] == {"IllegalAddress": fig["probes"]}


def _overflow_probe(kind):
    """One probe at 0x7ffffffffffffffc from context B on a fresh 1-card platform, A's buffer being the
    card's first allocation. Returns (outcome, A intact, the 8 bytes B's ld_probe got)."""
    platform = vnpu.Platform(card="tiny", cards=1)
    dev = platform.devices[0]
    A, B = dev.create_context(), dev.create_context()
    a_buf = A.alloc(PAGE)                 # the card's first allocation: pool page 0
    secret = np.arange(PAGE // 8, dtype=np.int64) + 1000
    A.queue().copy_to_device(a_buf, secret)
    b_out = B.alloc(PAGE)
    mod, qb = B.load(PROBES), B.queue()
    addr = (1 << 63) - 4                  # addr + 8 overflows int64
    if kind == "ld_probe":
        qb.launch(mod[kind], addr, b_out)
    else:
        qb.launch(mod[kind], addr)
    try:
        qb.synchronize()
        outcome = "no fault"
    except vnpu.VnpuError as e:
        outcome = type(e).__name__
    # read A's bytes on the card (the sticky fault blocks driver reads; a reset would wipe them)
    intact = bool(np.array_equal(dev.card.read(a_buf.device_address, PAGE, ctx=A.id).view(np.int64), secret))
    got = int(qb.copy_to_host(b_out, dtype=np.int64)[0]) if outcome == "no fault" else None
    return outcome, intact, got


def test_scalar_access_at_int64_overflowing_address_cannot_reach_another_context():
    """A scalar load or store at 0x7ffffffffffffffc (its end wraps past 2**63) faults with IllegalAddress and
    cannot reach context A's buffer, the card's first allocation. Found by fuzzing (bug 1, fixed): the Numba
    core's local-memory bounds check computed `a + n` in int64, the sum wrapped negative and passed, and the
    access landed at pool offset 0, in A's buffer, with no fault."""
    results = {kind: _overflow_probe(kind) for kind in ("ld_probe", "sd_probe")}
    print(f"\n[isolation overflow] (outcome, A intact, bytes B read) {results}")
    assert results["ld_probe"][0] == "IllegalAddress" and results["sd_probe"][0] == "IllegalAddress", results
    assert results["ld_probe"][1] and results["sd_probe"][1], results


def test_dma_at_a_negative_address_faults():
    """A DMA whose source or destination is negative faults with IllegalAddress on both engines, also when
    only a later row of a strided descriptor is negative (nothing is copied). Found by fuzzing (bug 3, fixed):
    the Numba core took any negative 'first bad address' for 'all rows mapped', and the transfer was
    silently dropped (or, strided, cut short)."""
    platform = vnpu.Platform(card="tiny", cards=1)
    dev = platform.devices[0]
    outcomes = {}
    for kind in ("dma_read", "dma_write"):
        for addr in (-8, -(1 << 40), -(1 << 63)):
            dev.reset()
            p = Pair(dev)
            p.launch(kind, addr)
            try:
                p.qb.synchronize()
                outcomes[(kind, addr)] = "no fault"
            except vnpu.VnpuError as e:
                outcomes[(kind, addr)] = type(e).__name__
            assert p.a_intact_on_card()
    # a strided descriptor whose second row starts at a negative address: the whole DMA faults
    strided = vnpu.assemble("""
.kernel k
.arg out, buffer, u8
    li   r5, 0x11111111
    sd   r5, 0(zero)
    li   r6, 2
    li   r7, -65536
    li   r8, 8
    dma.dim e0, d1, r6, r7, r8     ; 2 rows: source 0 then -65536, destination out then out + 8
    dma  e0, out, zero, r8, s0
    wait s0, 1
    halt
""")
    for engine in ("numba", "reference"):
        card = Card("tiny")
        out = card.alloc(64)
        card.write(out, np.full(64, 0xAA, np.uint8))
        try:
            card.launch(strided, "k", (out,), pes=(0,), engine=engine)
            outcomes[f"strided, row 1 negative, {engine}"] = "no fault"
        except vnpu.VnpuError as e:
            outcomes[f"strided, row 1 negative, {engine}"] = type(e).__name__
        # every row is checked before anything moves: row 0 was not copied either
        assert np.all(card.read(out, 64) == 0xAA), (engine, card.read(out, 16).tobytes().hex())
    print(f"\n[isolation negative DMA] {outcomes}")
    assert set(outcomes.values()) == {"IllegalAddress"}, outcomes


def test_zero_byte_dma_is_a_no_op_on_both_engines():
    """A DMA of 0 bytes moves nothing and checks no address (like memcpy of 0 bytes), on both engines: at an
    unmapped address, a negative one, one whose end would wrap past 2**63, or another context's buffer, and
    with a strided descriptor. The engines used to disagree (the reference interpreter faulted on an
    unmapped zero-byte row)."""
    card = Card("tiny")
    a_ctx, b_ctx = card.create_context(), card.create_context()
    a = card.alloc(PAGE, ctx=a_ctx)
    a_data = _pattern(PAGE, 4)
    card.write(a, a_data, ctx=a_ctx)
    b_out = card.alloc(PAGE, ctx=b_ctx)
    mod = card.load(PROBES, ctx=b_ctx)
    strided = card.load(vnpu.assemble("""
.kernel k
.arg addr, scalar, i64
    li   r6, 4
    li   r7, 4096
    dma.dim e0, d1, r6, r7, r7     ; 4 rows of 0 bytes, 4096 apart
    dma  e0, addr, addr, zero, s0
    wait s0, 1
    halt
"""), ctx=b_ctx)
    dram_end = T.DRAM_BASE + card.config.dram.bytes
    outcomes = {}
    for name, addr in {"unmapped dram": dram_end - PAGE, "past dram": dram_end, "negative": -8,
                       "INT64_MIN": -(1 << 63), "2**63 - 4": (1 << 63) - 4, "A's buffer": a}.items():
        for engine in ("numba", "reference"):
            for kind, kmod, args in (("dma_read", mod, (addr, 0, b_out)), ("dma_write", mod, (addr, 0)),
                                     ("strided", strided, (addr,))):
                try:
                    card.launch(kmod, "k" if kind == "strided" else kind, args, pes=(0,), engine=engine)
                    outcome = "no fault"
                except vnpu.VnpuError as e:
                    outcome = type(e).__name__
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                assert outcome == "no fault", (name, engine, kind, outcome)
    assert np.array_equal(card.read(a, PAGE, ctx=a_ctx), a_data)
    print(f"\n[isolation zero-byte DMA] launches {sum(outcomes.values())}, outcomes {outcomes}, A corrupted 0")
