"""Instruction semantics on both engines, each checked against a numpy / Python reference."""
import numpy as np
import pytest

import vnpu
from vnpu.emulator.card import Card

from conftest import get, put, run

M64 = (1 << 64) - 1


def s64(v):
    v &= M64
    return v - (1 << 64) if v >> 63 else v


ALU = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
       "and": lambda a, b: a & b, "or": lambda a, b: a | b, "xor": lambda a, b: a ^ b,
       "shl": lambda a, b: a << (b & 63), "shr": lambda a, b: (a & M64) >> (b & 63), "sra": lambda a, b: a >> (b & 63),
       "slt": lambda a, b: int(a < b), "sltu": lambda a, b: int((a & M64) < (b & M64)),
       "min": min, "max": max,
       "div": lambda a, b: -1 if b == 0 else (abs(a) // abs(b)) * (1 if (a < 0) == (b < 0) else -1),
       "rem": lambda a, b: a if b == 0 else a - b * ((abs(a) // abs(b)) * (1 if (a < 0) == (b < 0) else -1))}


def test_scalar_alu_against_python(card, engine):
    rng = np.random.default_rng(1)
    values = [0, 1, -1, 7, -7, 2**31 - 1, -2**31, 2**40 + 3, -(2**62), 63, 64]
    values += [int(v) for v in rng.integers(-2**62, 2**62, 6)]
    lines = [".kernel k", ".arg out, buffer, i64"]
    expect = []
    slot = 0
    for name, fn in ALU.items():
        for a, b in [(values[i], values[(i * 7 + 3) % len(values)]) for i in range(len(values))]:
            lines += [f"li r5, {a & 0xffffffff}", f"lih r5, {(a >> 32) & 0xffffffff}",
                      f"li r6, {b & 0xffffffff}", f"lih r6, {(b >> 32) & 0xffffffff}",
                      f"{name} r7, r5, r6", f"sd r7, {8 * slot}(zero)"]
            expect.append(s64(fn(a, b)))
            slot += 1
    lines += [f"li r8, {8 * slot}", "dma e0, out, zero, r8, s0", "wait s0, 1", "halt"]
    out = card.alloc(8 * slot)
    run(card, "\n".join(lines), args=(out,), engine=engine)
    assert list(get(card, out, np.int64, slot)) == expect


def test_immediates_loads_stores_branches_csrr(card, engine):
    src = """
    .kernel k
    .arg out, buffer, i64
        li r25, -5
        addi r2, r25, 100         ; 95
        muli r3, r2, -3          ; -285
        andi r4, r3, 0xff
        slti r5, r25, 0           ; 1
        srai r6, r3, 2
        shri r7, r25, 60          ; 15
        li r9, 0x12345678
        sw r9, 64(zero)
        lh r10, 64(zero)         ; 0x5678
        lbu r11, 67(zero)        ; 0x12
        li r12, -1
        sb r12, 70(zero)
        lb r13, 70(zero)         ; -1
        lbu r14, 70(zero)        ; 255
        lwu r15, 64(zero)
        csrr r16, pe_id
        csrr r17, pe_count
        li r18, 10
        li r19, 0
    top:
        addi r19, r19, 3
        loop r18, top            ; 30
        li r20, 0
        beq r20, zero, skip
        li r20, 99
    skip:
        bltu r25, r20, bad        ; -1 unsigned is huge: not taken
        jmp good
    bad:
        li r20, 77
    good:
        sd r2, 0(zero)
        sd r3, 8(zero)
        sd r4, 16(zero)
        sd r5, 24(zero)
        sd r6, 32(zero)
        sd r7, 40(zero)
        sd r10, 48(zero)
        sd r11, 56(zero)
        sd r13, 72(zero)
        sd r14, 80(zero)
        sd r15, 88(zero)
        sd r16, 96(zero)
        sd r17, 104(zero)
        sd r19, 112(zero)
        sd r20, 120(zero)
        li r21, 128
        dma e0, out, zero, r21, s0
        wait s0, 1
        halt
    """
    out = card.alloc(128)
    run(card, src, args=(out,), engine=engine)
    got = list(get(card, out, np.int64, 16))
    scratch = 0x00FF_0000_1234_5678  # offset 64: the sw, then the sb of -1 at 70
    assert got == [95, -285, (-285) & 0xff, 1, -285 >> 2, 15, 0x5678, 0x12, scratch, -1, 255, 0x12345678, 0, 1, 30, 0]


def test_spmd_pe_ids_and_barrier(card, engine):
    src = """
    .kernel k
    .arg out, buffer, i64
        csrr r10, pe_id
        csrr r11, pe_count
        muli r3, r10, 100
        add r3, r3, r11
        sd r3, 0(zero)
        barrier
        shli r4, r10, 3
        add r4, out, r4
        li r5, 8
        dma e0, r4, zero, r5, s0
        wait s0, 1
        halt
    """
    out = card.alloc(32)
    run(card, src, args=(out,), engine=engine, pes=(0, 1, 2, 3))
    assert list(get(card, out, np.int64, 4)) == [4, 104, 204, 304]


def test_sig_and_wait_between_pes(card, engine):
    # PE 1 produces a value in DRAM, signals PE 0, which then copies it out
    src = """
    .kernel k
    .arg buf, buffer, i64
        csrr r10, pe_id
        li r8, 8
        bne r10, zero, producer
        wait s3, 1
        dma e0, zero, buf, r8, s0
        wait s0, 1
        ld r2, 0(zero)
        addi r2, r2, 1
        sd r2, 0(zero)
        addi r9, buf, 8
        dma e0, r9, zero, r8, s0
        wait s0, 1
        halt
    producer:
        li r2, 41
        sd r2, 0(zero)
        dma e0, buf, zero, r8, s0
        wait s0, 1
        li r3, 0
        sig r3, s3
        halt
    """
    buf = card.alloc(16)
    run(card, src, args=(buf,), engine=engine, pes=(0, 1))
    assert list(get(card, buf, np.int64, 2)) == [41, 42]


def test_strided_dma_2d_and_3d(card, engine):
    a = np.arange(6 * 8, dtype=np.int32).reshape(6, 8)
    src_addr = put(card, a)
    out = card.alloc(a.nbytes)
    # gather columns 2..5 of rows 1..4 (2-D) into local, then write them transposed by a 3-D pattern
    prog = f"""
    .kernel k
    .arg src, buffer, i32
    .arg out, buffer, i32
        li r5, 4                  ; rows
        li r6, 32                 ; source row stride (8 x i32)
        li r7, 16                 ; dest row stride (4 x i32)
        dma.dim e0, d1, r5, r6, r7
        addi r8, src, {32 + 8}    ; &a[1][2]
        li r9, 16                 ; 4 x i32 per row
        dma e0, zero, r8, r9, s0
        wait s0, 1
        ; transpose 4x4 int32 from local[0] to out: element (i, j) -> out[j*4 + i]
        li r10, 4                 ; d1: j (4 elements) src stride 4, dst stride 16
        li r11, 4
        li r12, 16
        dma.dim e0, d1, r10, r11, r12
        li r13, 4                 ; d2: i (4 rows) src stride 16, dst stride 4
        li r14, 16
        li r15, 4
        dma.dim e0, d2, r13, r14, r15
        li r16, 4
        dma e0, out, zero, r16, s0
        wait s0, 1
        halt
    """
    run(card, prog, args=(src_addr, out), engine=engine)
    got = get(card, out, np.int32, 16).reshape(4, 4)
    assert np.array_equal(got, a[1:5, 2:6].T)


VEC_FLOAT = {"vadd": np.add, "vsub": np.subtract, "vmul": np.multiply, "vmax": np.maximum, "vmin": np.minimum}
VEC_UNARY = {"vrelu": lambda x: np.maximum(x, 0), "vcopy": lambda x: x,
             "vexp": lambda x: np.exp(x.astype(np.float64)), "vtanh": lambda x: np.tanh(x.astype(np.float64)),
             "vsigmoid": lambda x: 1 / (1 + np.exp(-x.astype(np.float64))),
             "vrecip": lambda x: 1 / x.astype(np.float64), "vrsqrt": lambda x: 1 / np.sqrt(x.astype(np.float64)),
             "vgelu": lambda x: 0.5 * x.astype(np.float64) * (1 + np.vectorize(__import__("math").erf)(
                 x.astype(np.float64) / np.sqrt(2)))}
DTS = {"i8": np.int8, "i32": np.int32, "f16": np.float16, "f32": np.float32}


def vector_prog(op, dt, n, unary):
    eb = np.dtype(DTS[dt]).itemsize
    b_off = 1 << 14
    o_off = 2 << 14
    load_b = "" if unary else f"li r11, {b_off}\n dma e0, r11, b, r9, s0\n wait s0, 1"
    operands = f"r12, r10, r13, {dt}, s1" if unary else f"r12, r10, r11, r13, {dt}, s1"
    return f"""
    .kernel k
    .arg a, buffer, {dt}
    .arg b, buffer, {dt}
    .arg out, buffer, {dt}
        li r9, {n * eb}
        li r10, 0
        dma e0, r10, a, r9, s0
        wait s0, 1
        {load_b}
        li r12, {o_off}
        li r13, {n}
        {op} {operands}
        wait s1, 1
        dma e0, out, r12, r9, s0
        wait s0, 1
        halt
    """


def sample(dt, n, rng):
    if dt in ("i8", "i32"):
        info = np.iinfo(DTS[dt])
        return rng.integers(info.min, info.max, n, endpoint=True).astype(DTS[dt])
    x = (rng.standard_normal(n) * 4).astype(DTS[dt])
    if n >= 3:
        x[:3] = [0, -0.0, 1]
    return x


@pytest.mark.parametrize("dt", list(DTS))
@pytest.mark.parametrize("op", list(VEC_FLOAT) + list(VEC_UNARY))
def test_vector_elementwise_against_numpy(card, engine, op, dt):
    n = 133
    rng = np.random.default_rng(hash((op, dt)) % 2**32)
    a, b = sample(dt, n, rng), sample(dt, n, rng)
    A, B, O = put(card, a), put(card, b), card.alloc(a.nbytes)
    unary = op in VEC_UNARY
    prog = vector_prog(op, dt, n, unary)
    transcendental = op in ("vexp", "vtanh", "vsigmoid", "vgelu", "vrecip", "vrsqrt")
    if transcendental and dt in ("i8", "i32"):
        with pytest.raises(vnpu.IllegalInstruction, match="dtype not supported"):
            run(card, prog, args=(A, B, O), engine=engine)
        return
    run(card, prog, args=(A, B, O), engine=engine)
    got = get(card, O, DTS[dt], n)
    if dt in ("i8", "i32"):
        wide_a, wide_b = a.astype(np.int64), b.astype(np.int64)
        ref = (VEC_FLOAT[op](wide_a, wide_b) if not unary else VEC_UNARY[op](wide_a)).astype(DTS[dt])
        assert np.array_equal(got, ref)
    else:
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            ref = VEC_FLOAT[op](a, b) if not unary else VEC_UNARY[op](a)
            ref = np.asarray(ref).astype(np.float32).astype(DTS[dt])
        if transcendental:
            np.testing.assert_allclose(got.astype(np.float64), ref.astype(np.float64), rtol=2e-7 if dt == "f32" else 1e-3)
        else:
            assert np.array_equal(got, ref, equal_nan=True)  # numpy leaves the sign of max(-0, 0) open


@pytest.mark.parametrize("dt", list(DTS))
@pytest.mark.parametrize("op", list(VEC_FLOAT))
def test_vector_broadcast_scalar_operand(card, engine, op, dt):
    n = 70
    rng = np.random.default_rng(7)
    a, b = sample(dt, n, rng), sample(dt, 1, rng)
    A, B, O = put(card, a), put(card, b), card.alloc(a.nbytes)
    run(card, vector_prog(op + "s", dt, n, False), args=(A, B, O), engine=engine)
    got = get(card, O, DTS[dt], n)
    if dt in ("i8", "i32"):
        ref = VEC_FLOAT[op](a.astype(np.int64), np.int64(b[0])).astype(DTS[dt])
    else:
        ref = np.asarray(VEC_FLOAT[op](a.astype(np.float32), np.float32(b[0]))).astype(DTS[dt])
    assert np.array_equal(got, ref, equal_nan=True)


@pytest.mark.parametrize("src_dt, dst_dt, scale, zp", [
    ("f32", "i8", 1 / 0.05, 3), ("f32", "i32", 10.0, 0), ("i8", "f32", 0.05, 3), ("i32", "f16", 0.5, -7),
    ("i32", "i8", 1 / 64, -2), ("f32", "f16", 1.0, 0), ("f16", "f32", 1.0, 0), ("f16", "i8", 8.0, 0)])
def test_vcvt_quantization_against_numpy(card, engine, src_dt, dst_dt, scale, zp):
    n = 77
    rng = np.random.default_rng(5)
    x = sample(src_dt, n, rng)
    if src_dt == "i32":
        x = (x // 1000).astype(np.int32)
    A, O = put(card, x), card.alloc(4 * n)
    bits = int(np.array([scale], np.float32).view(np.uint32)[0])
    prog = f"""
    .kernel k
    .arg a, buffer, {src_dt}
    .arg out, buffer, {dst_dt}
        li r9, {x.nbytes}
        dma e0, zero, a, r9, s0
        wait s0, 1
        li r14, {bits}
        lih r14, {zp & 0xffffffff}
        li r12, 4096
        li r13, {n}
        vcvt r12, zero, r13, r14, {src_dt}, {dst_dt}, s1
        wait s1, 1
        li r15, {n * np.dtype(DTS[dst_dt]).itemsize}
        dma e0, out, r12, r15, s0
        wait s0, 1
        halt
    """
    run(card, prog, args=(A, O), engine=engine)
    got = get(card, O, DTS[dst_dt], n)
    s32 = np.float64(np.float32(scale))
    if dst_dt in ("i8", "i32"):
        info = np.iinfo(DTS[dst_dt])
        ref = np.clip(np.rint(x.astype(np.float64) * s32) + zp, info.min, info.max).astype(DTS[dst_dt])
    elif src_dt in ("i8", "i32"):
        ref = ((x.astype(np.float64) - zp) * s32).astype(np.float32).astype(DTS[dst_dt])
    else:
        ref = x.astype(np.float32).astype(DTS[dst_dt])
    assert np.array_equal(got, ref)


@pytest.mark.parametrize("dt", list(DTS))
def test_reductions(card, engine, dt):
    n = 301
    x = sample(dt, n, np.random.default_rng(3))
    A, O = put(card, x), card.alloc(8)
    prog = f"""
    .kernel k
    .arg a, buffer, {dt}
    .arg out, buffer, i32
        li r9, {x.nbytes}
        dma e0, zero, a, r9, s0
        wait s0, 1
        li r12, 8192
        li r13, {n}
        vsum r12, zero, r13, {dt}, s1
        addi r14, r12, 4
        vrmax r14, zero, r13, {dt}, s1
        wait s1, 2
        li r15, 8
        dma e0, out, r12, r15, s0
        wait s0, 1
        halt
    """
    run(card, prog, args=(A, O), engine=engine)
    if dt in ("i8", "i32"):
        got = get(card, O, np.int32, 2)
        assert got[0] == np.int64(x.astype(np.int64).sum()).astype(np.int32) and got[1] == x.max()
    else:
        got = get(card, O, np.float32, 2)
        assert got[1] == np.float32(x.max())
        np.testing.assert_allclose(got[0], x.astype(np.float64).sum(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dt, M, K, N", [("i8", 5, 7, 3), ("i8", 33, 64, 17), ("f16", 9, 16, 8),
                                          ("f16", 1, 40, 33), ("i8", 1, 1, 1)])
def test_matrix_unit_against_numpy(card, engine, dt, M, K, N):
    rng = np.random.default_rng(M * K * N)
    if dt == "i8":
        A = rng.integers(-128, 128, (M, K)).astype(np.int8)
        W = rng.integers(-128, 128, (K, N)).astype(np.int8)
        ref = A.astype(np.int64) @ W.astype(np.int64)
        init = rng.integers(-1000, 1000, (M, N)).astype(np.int32)
        acc_ref = (ref + init).astype(np.int32)
        odt = np.int32
    else:
        A = rng.standard_normal((M, K)).astype(np.float16)
        W = rng.standard_normal((K, N)).astype(np.float16)
        ref = A.astype(np.float32) @ W.astype(np.float32)
        init = rng.standard_normal((M, N)).astype(np.float32)
        acc_ref = ref + init
        odt = np.float32
    eb = 1 if dt == "i8" else 2
    pa, pw, pi = put(card, A), put(card, W), put(card, init)
    out = card.alloc(8 * M * N)
    prog = f"""
    .kernel k
    .arg a, buffer, {dt}
    .arg w, buffer, {dt}
    .arg init, buffer, i32
    .arg out, buffer, i32
        li r20, 0              ; local A
        li r21, 32768          ; local W
        li r22, 65536          ; local out (set)
        li r23, 98304          ; local out (accumulate onto init)
        li r9, {M * K * eb}
        dma e0, r20, a, r9, s0
        li r9, {K * N * eb}
        dma e0, r21, w, r9, s0
        li r9, {M * N * 4}
        dma e0, r23, init, r9, s0
        wait s0, 3
        li r10, {K}
        li r11, {N}
        mm.ldw r21, r10, r11, {dt}, s1
        li r12, {M}
        mm.mul r22, r20, r12, {dt}, set, s1
        mm.mul r23, r20, r12, {dt}, acc, s1
        wait s1, 3
        dma e0, out, r22, r9, s0
        addi r24, out, {M * N * 4}
        dma e0, r24, r23, r9, s0
        wait s0, 2
        halt
    """
    run(card, prog, args=(pa, pw, pi, out), engine=engine)
    got = get(card, out, odt, 2 * M * N).reshape(2, M, N)
    if dt == "i8":
        assert np.array_equal(got[0], ref.astype(np.int32)) and np.array_equal(got[1], acc_ref)
    else:
        np.testing.assert_allclose(got[0], ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got[1], acc_ref, rtol=1e-5, atol=1e-5)


def test_examples_run_on_both_engines(engine):
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[2] / "examples"
    card = Card("tiny")
    n = 1000
    a = np.arange(n, dtype=np.float32)
    b = np.full(n, 0.5, np.float32)
    A, B, O = put(card, a), put(card, b), card.alloc(4 * n)
    card.launch(vnpu.assemble((root / "vector_add.s").read_text()), "vadd", (A, B, O, n), engine=engine)
    assert np.array_equal(get(card, O, np.float32, n), a + b)
    card.launch(vnpu.assemble((root / "sum_loop.s").read_text()), "sum_to_n", (O, 1000), engine=engine)
    assert get(card, O, np.int64, 1)[0] == 500500
