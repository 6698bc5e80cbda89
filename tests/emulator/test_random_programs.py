"""Random programs leave identical memory and registers on the reference interpreter and the Numba core."""
from hypothesis import HealthCheck, given, settings, strategies as st

import vnpu
from vnpu.emulator.card import Card

ALU = ["add", "sub", "mul", "div", "rem", "and", "or", "xor", "shl", "shr", "sra", "slt", "sltu", "min", "max"]
ALUI = ["addi", "muli", "andi", "ori", "xori", "shli", "shri", "srai", "slti"]
LOADS = ["lb", "lh", "lw", "ld", "lbu", "lhu", "lwu"]
STORES = ["sb", "sh", "sw", "sd"]
VEC = ["vadd", "vsub", "vmul", "vmax", "vmin", "vrelu", "vcopy", "vsum", "vrmax", "vadds", "vmuls", "vmins", "vrecip",
       "vrsqrt"]
REGS = [f"r{i}" for i in range(2, 16)]      # r1 holds the output buffer
SCRATCH = 2048                                # local bytes the program plays in


@st.composite
def instruction(draw, label_count):
    kind = draw(st.sampled_from(["alu", "alui", "load", "store", "vec", "branch", "dma"]))
    r = lambda: draw(st.sampled_from(REGS))  # noqa: E731
    if kind == "alu":
        return [f"{draw(st.sampled_from(ALU))} {r()}, {r()}, {r()}"]
    if kind == "alui":
        return [f"{draw(st.sampled_from(ALUI))} {r()}, {r()}, {draw(st.integers(-2**23, 2**23 - 1))}"]
    if kind == "load":
        return [f"{draw(st.sampled_from(LOADS))} {r()}, {draw(st.integers(0, SCRATCH - 8))}(zero)"]
    if kind == "store":
        return [f"{draw(st.sampled_from(STORES))} {r()}, {draw(st.integers(0, SCRATCH - 8))}(zero)"]
    if kind == "vec":
        op, dt = draw(st.sampled_from(VEC)), draw(st.sampled_from(["i8", "i32", "f16", "f32"]))
        n = draw(st.integers(0, 64))
        a, b, d = (draw(st.integers(0, (SCRATCH - 256) // 4)) * 4 for _ in range(3))
        regs = f"li r16, {d}\nli r17, {a}\nli r18, {b}\nli r19, {n}\n"
        if op in ("vsum", "vrmax", "vrelu", "vcopy", "vrecip", "vrsqrt"):
            return [regs + f"{op} r16, r17, r19, {dt}, s1\nwait s1, 1"]
        return [regs + f"{op} r16, r17, r18, r19, {dt}, s1\nwait s1, 1"]
    if kind == "dma":  # local -> DRAM scratch -> local, through the second half of the output buffer
        src, dst, n = (draw(st.integers(0, SCRATCH - 64)), draw(st.integers(0, SCRATCH - 64)),
                       draw(st.integers(0, 64)))
        return [f"li r20, {src}\nli r21, {n}\naddi r22, r1, 8192\ndma e0, r22, r20, r21, s2\nwait s2, 1\n"
                f"li r20, {dst}\ndma e0, r20, r22, r21, s2\nwait s2, 1"]
    # a forward branch over the next instruction
    label = f"L{label_count}"
    cond = draw(st.sampled_from(["beq", "bne", "blt", "bge", "bltu", "bgeu"]))
    return [f"{cond} {r()}, {r()}, {label}", f"addi {r()}, {r()}, 1", f"{label}:"]


@st.composite
def program(draw):
    lines = [".kernel k", ".arg out, buffer, u8"]
    for reg in REGS:
        v = draw(st.integers(-2**63, 2**63 - 1))
        lines += [f"li {reg}, {v & 0xffffffff}", f"lih {reg}, {(v >> 32) & 0xffffffff}"]
    seed = draw(st.binary(min_size=64, max_size=64))
    for i in range(0, 64, 8):
        lines += [f"li r23, {int.from_bytes(seed[i:i + 4], 'little')}", f"sw r23, {4 * i}(zero)"]
    for i in range(draw(st.integers(1, 30))):
        lines += draw(instruction(i))
    for k, reg in enumerate(REGS):
        lines.append(f"sd {reg}, {SCRATCH + 8 * k}(zero)")
    lines += [f"li r24, {SCRATCH + 8 * len(REGS)}", "dma e0, r1, zero, r24, s0", "wait s0, 1", "halt"]
    return "\n".join(lines)


@settings(max_examples=int(__import__("os").environ.get("VNPU_FUZZ_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program())
def test_reference_and_numba_agree(src):
    image = vnpu.assemble(src)
    outs = []
    for engine in ("reference", "numba"):
        card = Card("tiny")
        out = card.alloc(16384)
        try:
            card.launch(image, "k", (out,), pes=(0,), engine=engine)
            outs.append(("ok", card.read(out, SCRATCH + 8 * len(REGS)).tobytes()))
        except vnpu.DeviceFault as e:
            outs.append((type(e).__name__, e.pc))
    assert outs[0] == outs[1]
