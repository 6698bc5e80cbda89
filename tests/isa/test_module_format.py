"""load_module validates everything and raises only InvalidModule, with the defect's byte offset."""
import random
import struct
import zlib

import pytest

import vnpu
from vnpu.isa import encoding, module as M, table as T

SRC = """
.kernel vadd
.arg a, buffer, f32
.arg n, scalar, i32
top:
    addi r2, r2, -1
    bne r2, zero, top
    halt
.rodata
tab: .f32 1.0, 2.5
     .i32 7
"""


def reseal(image: bytes) -> bytes:
    """Recompute the checksum so validation goes past it (a mutated image that is still 'signed')."""
    b = bytearray(image)
    struct.pack_into("<I", b, M.CRC_OFFSET, 0)
    struct.pack_into("<I", b, M.CRC_OFFSET, zlib.crc32(bytes(b)))
    return bytes(b)


def test_valid_image_loads():
    mod = vnpu.load_module(vnpu.assemble(SRC))
    assert list(mod.kernels) == ["vadd"]
    assert mod["vadd"].args[1].kind == "scalar"
    assert struct.unpack("<ffi", mod.rodata) == (1.0, 2.5, 7)


@pytest.mark.parametrize("mutate, message, offset", [
    (lambda b: b"XXXX" + b[4:], "bad magic", 0),
    (lambda b: b[:4] + struct.pack("<H", 9) + b[6:], "format version", 4),
    (lambda b: b[:8] + struct.pack("<I", 99) + b[12:], "ISA version", 8),
    (lambda b: b[:-8], "truncated", None),
    (lambda b: b[:20], "truncated", None),
    (lambda b: b + b"\0" * 8, "trailing", None),
])
def test_header_defects(mutate, message, offset):
    img = vnpu.assemble(SRC)
    with pytest.raises(vnpu.InvalidModule, match=message) as e:
        vnpu.load_module(reseal(mutate(img)) if message != "truncated" or len(mutate(img)) >= 48 else mutate(img))
    if offset is not None:
        assert e.value.offset == offset


def test_checksum_defect_is_named():
    img = bytearray(vnpu.assemble(SRC))
    img[M.HEADER_SIZE + 3] ^= 0x10
    with pytest.raises(vnpu.InvalidModule, match="checksum") as e:
        vnpu.load_module(bytes(img))
    assert e.value.offset == M.CRC_OFFSET


def test_unknown_opcode_names_its_offset():
    img = bytearray(vnpu.assemble(SRC))
    at = M.HEADER_SIZE + 8  # second instruction
    img[at + 7] = 0xEE       # opcode byte (little-endian word, top byte)
    with pytest.raises(vnpu.InvalidModule, match="unknown opcode") as e:
        vnpu.load_module(reseal(bytes(img)))
    assert e.value.offset == at


def test_branch_target_outside_code():
    words = [encoding.encode("jmp", {"imm": 0}, 0), encoding.encode("halt", {})]
    words[0] = (T.OP_JMP << 56) | ((100 & 0xFFFFFF) << 32)
    img = M.build_image(words, b"", [M.KernelSymbol("k", 0, 2)])
    with pytest.raises(vnpu.InvalidModule, match="branch target 100 outside the code"):
        vnpu.load_module(img)


def test_malformed_signatures():
    halt = [encoding.encode("halt", {})]
    bad = [
        ([M.KernelSymbol("k", 0, 5)], "code range"),
        ([M.KernelSymbol("k", 0, 1), M.KernelSymbol("k", 0, 1)], "defined twice"),
        ([M.KernelSymbol("k", 0, 1, (M.KernelArg("a", "buffer", "f32"), M.KernelArg("a", "scalar", "i32")))],
         "declared twice"),
        ([M.KernelSymbol("k", 0, 1, tuple(M.KernelArg(f"a{i}", "scalar", "i32") for i in range(16)))],
         "at most 15"),
        ([M.KernelSymbol("9k", 0, 1)], "not an identifier"),
    ]
    for kernels, msg in bad:
        with pytest.raises(vnpu.InvalidModule, match=msg):
            vnpu.load_module(M.build_image(halt, b"", kernels))
    img = bytearray(M.build_image(halt, b"", [M.KernelSymbol("k", 0, 1, (M.KernelArg("a", "buffer", "f32"),))]))
    sym_off = struct.unpack_from("<I", img, 32)[0]
    kind_at = sym_off + 4 + 1 + 1 + 4 + 4 + 1 + 1 + 1
    img[kind_at] = 7
    with pytest.raises(vnpu.InvalidModule, match="unknown kind") as e:
        vnpu.load_module(reseal(bytes(img)))
    assert e.value.offset == kind_at


def test_not_bytes():
    with pytest.raises(vnpu.InvalidModule):
        vnpu.load_module(12345)


def _mutations(rng, img):
    kind = rng.randrange(4)
    b = bytearray(img)
    if kind == 0:
        return bytes(b[:rng.randrange(len(b))])
    if kind == 1:
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return reseal(bytes(b)) if rng.random() < 0.7 else bytes(b)
    if kind == 2:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
    b[:4] = b"VNPU"
    i = rng.randrange(M.HEADER_SIZE, len(b))
    b[i:i + 8] = rng.randbytes(8)
    return reseal(bytes(b))


@pytest.mark.parametrize("seed", range(4))
def test_fuzz_load_module_raises_only_invalid_module(seed):
    rng = random.Random(seed)
    base = [vnpu.assemble(SRC), vnpu.assemble(open(__file__.rsplit("/tests/", 1)[0]
                                                   + "/examples/vector_add.s").read())]
    ok = bad = 0
    for _ in range(1500):
        img = _mutations(rng, rng.choice(base))
        try:
            vnpu.load_module(img)
            ok += 1
        except vnpu.InvalidModule:
            bad += 1
    assert bad > 1000  # most mutations must be caught; none may raise anything else
