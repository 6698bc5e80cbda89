"""The two engines agree on data-heavy programs, byte for byte: overlapping copies across 64 KiB pages
(local to local, DRAM to DRAM, 2-D), every vector op and conversion on memory full of special floats
(NaN payloads, signalling NaNs, infinities, signed zeros, subnormals), matrix products in every dtype,
and the fault (kind, PE, pc, address) when a program goes wrong.

The class of defect this guards: one engine computing something the other does not (issue 13 found
overlapping DMA, embedding outputs over their inputs, and NaN through exp/sigmoid). Run more examples with
VNPU_FUZZ_EXAMPLES=2000.
"""
import os
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

import vnpu
from vnpu.emulator.card import Card

EXAMPLES = int(os.environ.get("VNPU_FUZZ_EXAMPLES", "40"))
LOCAL = 262144                 # the tiny card's local memory
DRAM_BYTES = 3 * 65536         # the DRAM buffer the program plays in: three pages
SPECIAL_F32 = [0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF812345, 0x7FC00123, 0x7F800000, 0xFF800000, 0x80000000,
               0x00000001, 0x807FFFFF, 0x3F800000, 0x4479C000, 0xC4A3A000, 0x7F7FFFFF, 0x42C80000, 0xC3480000]
SPECIAL_F16 = [0x7E00, 0xFE00, 0x7C01, 0xFD23, 0x7C00, 0xFC00, 0x8000, 0x0001, 0x83FF, 0x3C00, 0x7BFF, 0x5640,
               0xD640, 0x4900, 0xC900, 0x3800]
VEC_BINARY = ["vadd", "vsub", "vmul", "vmax", "vmin", "vadds", "vsubs", "vmuls", "vmaxs", "vmins"]
VEC_UNARY = ["vrelu", "vsigmoid", "vtanh", "vexp", "vgelu", "vcopy", "vrecip", "vrsqrt", "vsum", "vrmax"]
DTYPES = ["i8", "i32", "f16", "f32"]
NEAR_PAGE = st.one_of(st.integers(0, 4096), st.integers(65536 - 300, 65536 + 300),
                      st.integers(131072 - 300, 131072 + 300))


def _initial_memory(seed):
    """Bytes for local memory and the DRAM buffer: random, with special floats sprinkled through."""
    rng = np.random.default_rng(seed)
    mem = rng.integers(0, 256, LOCAL + DRAM_BYTES, dtype=np.uint8)
    f32 = mem[: (len(mem) // 4) * 4].view(np.uint32)
    pick = rng.random(len(f32)) < 0.3
    f32[pick] = rng.choice(np.array(SPECIAL_F32, np.uint32), pick.sum())
    h = mem[: (len(mem) // 2) * 2].view(np.uint16)
    pick = rng.random(len(h)) < 0.1
    h[pick] = rng.choice(np.array(SPECIAL_F16, np.uint16), pick.sum())
    return mem[:LOCAL].copy(), mem[LOCAL:].copy()


def _li64(reg, value):
    value &= (1 << 64) - 1
    return [f"li {reg}, {value & 0xFFFFFFFF}", f"lih {reg}, {(value >> 32) & 0xFFFFFFFF}"]


@st.composite
def _step(draw):
    kind = draw(st.sampled_from(["dma", "dma", "dma2", "vec", "vec", "cvt", "mm"]))
    if kind in ("dma", "dma2"):
        # r1 is the DRAM buffer; addresses near page boundaries so rows cross them; overlap is likely
        src_dram, dst_dram = draw(st.booleans()), draw(st.booleans())
        src, dst = draw(NEAR_PAGE), draw(NEAR_PAGE)
        if draw(st.booleans()):
            dst = src + draw(st.integers(-120, 120))      # overlapping, either direction
        src, dst = max(0, src), max(0, dst)
        n = draw(st.integers(0, 300))
        lines = []
        for reg, base_dram, off in (("r20", src_dram, src), ("r21", dst_dram, dst)):
            lines += [f"li {reg}, {off}"] + ([f"add {reg}, {reg}, r1"] if base_dram else [])
        lines += [f"li r22, {n}"]
        if kind == "dma2":
            rows, sstride, dstride = draw(st.integers(1, 4)), draw(st.integers(-64, 400)), draw(st.integers(-64, 400))
            lines += [f"li r23, {rows}", f"li r24, {sstride}", f"li r25, {dstride}", "dma.dim e0, d1, r23, r24, r25"]
        return lines + ["dma e0, r21, r20, r22, s2", "wait s2, 1"]
    dt = draw(st.sampled_from(DTYPES))
    n = draw(st.integers(0, 48))
    # addresses of any alignment (the units take unaligned operands)
    a, b, d = (draw(st.one_of(st.integers(0, 1024).map(lambda v: 4 * v), st.integers(0, 4096))) for _ in range(3))
    regs = [f"li r16, {d}", f"li r17, {a}", f"li r18, {b}", f"li r19, {n}"]
    if kind == "vec":
        op = draw(st.sampled_from(VEC_BINARY + VEC_UNARY))
        if op in VEC_UNARY:
            return regs + [f"{op} r16, r17, r19, {dt}, s1", "wait s1, 1"]
        return regs + [f"{op} r16, r17, r18, r19, {dt}, s1", "wait s1, 1"]
    if kind == "cvt":
        dt2 = draw(st.sampled_from(DTYPES))
        scale = draw(st.sampled_from([1.0, 0.5, 1 / 3, 0.1, 7.0, 1e-3, 1e30, float("inf"), float("nan")]))
        zp = draw(st.sampled_from([0, 1, -7, 127, 3, -128, 2**24 + 1]))
        bits = struct.unpack("<I", struct.pack("<f", np.float32(scale)))[0]
        return regs + _li64("r18", (zp << 32) | bits) + [f"vcvt r16, r17, r19, r18, {dt}, {dt2}, s1", "wait s1, 1"]
    mdt = draw(st.sampled_from(["i8", "f16", "f32"]))
    K, N, M = draw(st.integers(1, 12)), draw(st.integers(1, 12)), draw(st.integers(0, 6))
    acc = draw(st.sampled_from(["set", "acc"]))
    return [f"li r17, {a}", f"li r18, {K}", f"li r19, {N}", f"mm.ldw r17, r18, r19, {mdt}, s1", "wait s1, 1",
            f"li r16, {d + 8192}", f"li r17, {b}", f"li r18, {M}", f"mm.mul r16, r17, r18, {mdt}, {acc}, s1",
            "wait s1, 1"]


@st.composite
def _program(draw):
    lines = [".kernel k", ".arg dram, buffer, u8"]
    for _ in range(draw(st.integers(1, 12))):
        lines += draw(_step())
    return "\n".join(lines + ["halt"])


def _run(engine, image, seed):
    local, dram = _initial_memory(seed)
    card = Card("tiny")
    buf = card.alloc(DRAM_BYTES)
    card.write(buf, dram)
    card.write_local(0, 0, local)
    try:
        card.launch(image, "k", (buf,), pes=(0,), engine=engine, sanitize=False)
        outcome = "ok"
    except vnpu.DeviceFault as e:
        outcome = (type(e).__name__, e.pe, e.pc, e.address)
    return outcome, card.read_local(0, 0, LOCAL).tobytes(), card.read(buf, DRAM_BYTES).tobytes()


def _first_difference(a, b):
    x = np.frombuffer(a, np.uint8) != np.frombuffer(b, np.uint8)
    return int(np.argmax(x)) if x.any() else -1


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_program(), st.integers(0, 2**31))
def test_engines_agree_on_copies_vectors_conversions_and_matrices(src, seed):
    image = vnpu.assemble(src)
    ref, core = _run("reference", image, seed), _run("numba", image, seed)
    assert ref[0] == core[0], (ref[0], core[0])
    assert ref[1] == core[1], f"local memory differs at byte {_first_difference(ref[1], core[1])}"
    assert ref[2] == core[2], f"DRAM differs at byte {_first_difference(ref[2], core[2])}"


def test_overlapping_copies_across_a_page_are_memmove_on_both_engines():
    """The audit's example: 100 bytes from 65500 to 65510, local to local and DRAM to DRAM, both ways."""
    src = """
.kernel k
.arg dram, buffer, u8
.arg s, scalar, i64
.arg d, scalar, i64
.arg n, scalar, i64
.arg in_dram, scalar, i64
    beq r5, zero, go
    add r2, r2, r1
    add r3, r3, r1
go:
    dma e0, r3, r2, r4, s0
    wait s0, 1
    halt
"""
    image = vnpu.assemble(src)
    for s, d in ((65500, 65510), (65510, 65500), (65530, 65540), (0, 1), (70000, 65000)):
        for in_dram in (0, 1):
            results = []
            for engine in ("reference", "numba"):
                local, dram = _initial_memory(s + d)
                card = Card("tiny")
                buf = card.alloc(DRAM_BYTES)
                card.write(buf, dram)
                card.write_local(0, 0, local)
                card.launch(image, "k", (buf, s, d, 100, in_dram), pes=(0,), engine=engine)
                got = card.read(buf, DRAM_BYTES) if in_dram else card.read_local(0, 0, LOCAL)
                want = (dram if in_dram else local).copy()
                want[d:d + 100] = (dram if in_dram else local)[s:s + 100].copy()     # memmove
                assert np.array_equal(got, want), (engine, s, d, in_dram)
                results.append(got.tobytes())
            assert results[0] == results[1]


def test_a_dma_row_off_the_end_names_its_first_bad_byte_on_both_engines():
    """One definition of the fault address: the first byte of the access that may not be touched."""
    src = """
.kernel k
.arg dst, scalar, i64
.arg srcaddr, scalar, i64
.arg n, scalar, i64
    dma e0, r1, r2, r3, s0
    wait s0, 1
    halt
"""
    image = vnpu.assemble(src)
    for engine in ("reference", "numba"):
        card = Card("tiny")
        buf = card.alloc(65536)
        cases = [(0, LOCAL - 10, 100, LOCAL),                  # local source runs off local memory
                 (LOCAL - 10, 0, 100, LOCAL),                  # local destination does
                 (0, buf + 65536 - 40, 100, buf + 65536),     # DRAM source runs past its allocation
                 (buf + 65500, 0, 100, buf + 65536),           # DRAM destination does
                 (0, -5, 10, -5)]                               # nowhere at all
        for dst, srca, n, bad in cases:
            try:
                card.launch(image, "k", (dst, srca, n), pes=(0,), engine=engine)
            except vnpu.IllegalAddress as e:
                assert e.address == bad, (engine, dst, srca, n, hex(e.address), hex(bad))
            else:
                raise AssertionError(f"{engine}: no fault for {(dst, srca, n)}")


def test_an_embedding_output_over_its_own_table_and_weights_reads_the_old_values():
    """Lookups read everything before they write: the pooled rows equal a lookup into a copy of the table."""
    from vnpu.isa import table as T
    dim, rows = 4, 8
    table = np.arange(rows * dim, dtype=np.float32).reshape(rows, dim) + 1
    idx = np.array([3, 0, 1, 2, 0, 3], np.int32)
    lengths = np.array([2, 2, 2], np.int32)
    weights = np.array([0.5, 2, -1, 4, 3, 0.25], np.float32)
    want = np.stack([(table[idx[2 * b:2 * b + 2]] * weights[2 * b:2 * b + 2, None]).sum(0) for b in range(3)])
    src = """
.kernel k
.arg desc, scalar, i64
    emb r1, s0
    wait s0, 1
    halt
"""
    image = vnpu.assemble(src)
    outs = []
    for engine in ("reference", "numba"):
        for over in ("table", "weights"):
            card = Card("tiny")
            base = card.alloc(4096)
            t_addr, i_addr, l_addr, w_addr = base, base + 1024, base + 1536, base + 2048
            card.write(t_addr, table)
            card.write(i_addr, idx)
            card.write(l_addr, lengths)
            card.write(w_addr, weights)
            out = t_addr + 16 if over == "table" else w_addr + 4
            desc = np.zeros(T.EMB_DESC_WORDS, np.int64)
            desc[:14] = [t_addr, rows, dim, 0, i_addr, len(idx), 4, l_addr, 3, w_addr, out, 0, 2, 4]
            card.write_local(0, 0, desc)
            card.launch(image, "k", (0,), pes=(0,), engine=engine)
            got = card.read(out, want.nbytes).view(np.float32).reshape(want.shape)
            np.testing.assert_array_equal(got, want, err_msg=f"{engine}, output over the {over}")
            outs.append(got.tobytes())
    assert outs[0] == outs[2] and outs[1] == outs[3]


STRIDED = """
.kernel k
.arg dram, buffer, u8
.arg s, scalar, i64
.arg d, scalar, i64
.arg n, scalar, i64
.arg rows, scalar, i64
.arg ss, scalar, i64
.arg ds, scalar, i64
    add r2, r2, r1
    add r3, r3, r1
    dma.dim e0, d1, r5, r6, r7
    dma e0, r3, r2, r4, s0
    wait s0, 1
    halt
"""


def _strided_model(mem, s, d, n, rows, ss, ds):
    """Rows in order, each a memmove: what both engines define for a 2-D descriptor."""
    mem = mem.copy()
    for k in range(rows):
        a, b = s + k * ss, d + k * ds
        mem[b:b + n] = mem[a:a + n].copy()
    return mem


# row bytes 1..256 (byte and word aligned), positive, negative and zero strides, spans apart, touching,
# overlapping, and rows that overlap one another; the fast path (one translation per span) and the row by
# row path must give the same bytes as the model
@settings(max_examples=EXAMPLES, deadline=None)
@given(st.sampled_from([1, 2, 3, 4, 8, 12, 64, 100, 256]), st.integers(1, 40),
       st.sampled_from([-512, -260, -8, 0, 4, 7, 8, 64, 256, 300]), st.sampled_from([-512, -8, 0, 4, 5, 64, 256, 512]),
       st.integers(20000, 40000), st.integers(-30000, 30000), st.integers(0, 2**31))
def test_strided_copies_equal_the_row_by_row_model_on_both_engines(n, rows, ss, ds, s, gap, seed):
    d = s + gap
    lo = min(s + min(0, (rows - 1) * ss), d + min(0, (rows - 1) * ds))
    hi = max(s + max(0, (rows - 1) * ss), d + max(0, (rows - 1) * ds)) + n
    if lo < 0 or hi > DRAM_BYTES:
        return
    _, dram = _initial_memory(seed)
    want = _strided_model(dram, s, d, n, rows, ss, ds)
    image = vnpu.assemble(STRIDED)
    for engine in ("reference", "numba"):
        card = Card("tiny")
        buf = card.alloc(DRAM_BYTES)
        card.write(buf, dram)
        card.launch(image, "k", (buf, s, d, n, rows, ss, ds), pes=(0,), engine=engine, sanitize=False)
        got = card.read(buf, DRAM_BYTES)
        assert np.array_equal(got, want), (engine, _first_difference(got.tobytes(), want.tobytes()))
