"""The kernel module format (`.vnpu`): a versioned, checksummed binary image.

Layout (all integers little-endian):

    offset  size  field
    0       4     magic b"VNPU"
    4       2     format major version (1)
    6       2     format minor version (0)
    8       4     ISA version the code was built for
    12      4     flags (0; reserved)
    16      4     code offset         20  4  code length in instructions (8 bytes each)
    24      4     rodata offset       28  4  rodata length in bytes
    32      4     symbol table offset 36  4  symbol table length in bytes
    40      4     total image length in bytes
    44      4     CRC-32 (zlib) of the whole image with this field read as zero

Sections follow the header in the order code, rodata, symbol table, each 8-byte aligned, with no gaps
beyond that alignment padding (which must be zero). The symbol table is:

    u32 kernel count, then per kernel:
      u8 name length, name (ASCII identifier), u32 entry instruction, u32 end instruction (exclusive),
      u8 argument count, then per argument: u8 name length, name, u8 kind (0 buffer, 1 scalar), u8 dtype

`load_module` validates all of it before anything can run and raises `InvalidModule` naming the defect
and its byte offset; no other exception escapes it.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from vnpu.errors import InvalidModule

from . import encoding, table as T

MAGIC = b"VNPU"
FORMAT_MAJOR, FORMAT_MINOR = 1, 0
HEADER = struct.Struct("<4sHHIIIIIIIIII")
HEADER_SIZE = HEADER.size  # 48
CRC_OFFSET = 44
MAX_IMAGE = 1 << 30


@dataclass(frozen=True)
class KernelArg:
    name: str
    kind: str   # "buffer" or "scalar"
    dtype: str  # one of ARG_DTYPES

    def __str__(self):
        return f"{self.name}: {self.kind} {self.dtype}"


@dataclass(frozen=True)
class KernelSymbol:
    name: str
    entry: int
    end: int
    args: tuple = ()

    def signature(self):
        return f"{self.name}(" + ", ".join(str(a) for a in self.args) + ")"


@dataclass
class Module:
    """A validated module: code words, their decoded table, read-only data and the kernels."""
    code: np.ndarray            # uint64[n]
    decoded: np.ndarray         # int64[n, NCOLS]
    rodata: bytes
    kernels: dict = field(default_factory=dict)
    isa_version: int = T.ISA_VERSION
    image: bytes = b""

    def __getitem__(self, name):
        try:
            return self.kernels[name]
        except KeyError:
            raise KeyError(f"no kernel {name!r} in module; it has {sorted(self.kernels)}") from None


def _align8(n):
    return (n + 7) & ~7


def build_image(code_words, rodata: bytes, kernels) -> bytes:
    """Serialize a module. `kernels` is a list of KernelSymbol."""
    code = np.asarray(code_words, dtype="<u8").tobytes()
    sym = bytearray(struct.pack("<I", len(kernels)))
    for k in kernels:
        nb = k.name.encode("ascii")
        sym += struct.pack("<B", len(nb)) + nb + struct.pack("<IIB", k.entry, k.end, len(k.args))
        for a in k.args:
            ab = a.name.encode("ascii")
            sym += struct.pack("<B", len(ab)) + ab + struct.pack(
                "<BB", T.ARG_KINDS.index(a.kind), T.ARG_DTYPES.index(a.dtype))
    code_off = HEADER_SIZE
    ro_off = _align8(code_off + len(code))
    sym_off = _align8(ro_off + len(rodata))
    total = _align8(sym_off + len(sym))
    body = bytearray(total)
    body[code_off:code_off + len(code)] = code
    body[ro_off:ro_off + len(rodata)] = rodata
    body[sym_off:sym_off + len(sym)] = sym
    HEADER.pack_into(body, 0, MAGIC, FORMAT_MAJOR, FORMAT_MINOR, T.ISA_VERSION, 0,
                     code_off, len(code) // 8, ro_off, len(rodata), sym_off, len(sym), total, 0)
    struct.pack_into("<I", body, CRC_OFFSET, zlib.crc32(bytes(body)))
    return bytes(body)


class _Reader:
    """Bounds-checked reads from the symbol table; every overrun is an InvalidModule with its offset."""

    def __init__(self, data, start, end):
        self.data, self.pos, self.end = data, start, end

    def take(self, n, what):
        if self.pos + n > self.end:
            raise InvalidModule(f"symbol table truncated while reading {what}", self.pos)
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def u8(self, what):
        return self.take(1, what)[0]

    def u32(self, what):
        return struct.unpack("<I", self.take(4, what))[0]

    def ident(self, what):
        at = self.pos
        n = self.u8(what + " length")
        raw = self.take(n, what)
        try:
            s = raw.decode("ascii")
        except UnicodeDecodeError:
            raise InvalidModule(f"{what} is not ASCII", at + 1) from None
        if not s.isidentifier():
            raise InvalidModule(f"{what} {s!r} is not an identifier", at + 1)
        return s


def load_module(data) -> Module:
    """Validate a module image and return it as a Module. Raises only InvalidModule."""
    try:
        data = bytes(data)
    except Exception:  # noqa: BLE001 - anything that is not bytes-like is an invalid module
        raise InvalidModule(f"module image must be bytes, not {type(data).__name__}", 0) from None
    if len(data) < HEADER_SIZE:
        raise InvalidModule(f"image truncated: {len(data)} bytes, the header alone is {HEADER_SIZE}", len(data))
    (magic, major, minor, isa_version, flags, code_off, ncode, ro_off, ro_len, sym_off, sym_len, total,
     crc) = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise InvalidModule(f"bad magic {magic!r}, expected {MAGIC!r}", 0)
    if major != FORMAT_MAJOR:
        raise InvalidModule(f"unsupported format version {major}.{minor} (this vnpu reads {FORMAT_MAJOR}.x)", 4)
    if isa_version != T.ISA_VERSION:
        raise InvalidModule(f"built for ISA version {isa_version}, this card runs {T.ISA_VERSION}", 8)
    if flags != 0:
        raise InvalidModule(f"unknown flags 0x{flags:x}", 12)
    if total != len(data):
        what = "truncated" if total > len(data) else "has trailing bytes"
        raise InvalidModule(f"image {what}: header says {total} bytes, got {len(data)}", min(total, len(data)))
    body = bytearray(data)
    struct.pack_into("<I", body, CRC_OFFSET, 0)
    if zlib.crc32(bytes(body)) != crc:
        raise InvalidModule("checksum mismatch", CRC_OFFSET)
    # Sections: in order, aligned, inside the image, padding zero.
    code_len = ncode * 8
    expect = HEADER_SIZE
    for name, off, length, at in (("code", code_off, code_len, 16), ("rodata", ro_off, ro_len, 24),
                                  ("symbol table", sym_off, sym_len, 32)):
        if off != _align8(expect):
            raise InvalidModule(f"{name} section at offset {off}, expected {_align8(expect)}", at)
        if off + length > total:
            raise InvalidModule(f"{name} section runs past the end of the image", at)
        if any(data[expect:off]):
            raise InvalidModule(f"non-zero padding before the {name} section", expect)
        expect = off + length
    if _align8(expect) != total or any(data[expect:total]):
        raise InvalidModule("bytes after the symbol table", expect)
    code = np.frombuffer(data, dtype="<u8", count=ncode, offset=code_off).astype(np.uint64)
    try:
        decoded = encoding.decode(code)
    except encoding.DecodeError as e:
        raise InvalidModule(str(e), code_off + 8 * e.index) from None
    rodata = data[ro_off:ro_off + ro_len]
    # Symbol table.
    r = _Reader(data, sym_off, sym_off + sym_len)
    count = r.u32("kernel count")
    kernels = {}
    for _ in range(count):
        at = r.pos
        name = r.ident("kernel name")
        if name in kernels:
            raise InvalidModule(f"kernel {name!r} defined twice", at)
        entry_at = r.pos
        entry, end = r.u32("entry"), r.u32("end")
        if not entry < end <= ncode:
            raise InvalidModule(f"kernel {name!r}: code range [{entry}, {end}) outside the code (0..{ncode})",
                                entry_at)
        nargs_at = r.pos
        nargs = r.u8("argument count")
        if nargs > T.MAX_KERNEL_ARGS:
            raise InvalidModule(f"kernel {name!r} has {nargs} arguments, at most {T.MAX_KERNEL_ARGS}", nargs_at)
        args = []
        for _a in range(nargs):
            aname = r.ident(f"argument name of {name!r}")
            kat = r.pos
            kind, dtype = r.u8("argument kind"), r.u8("argument dtype")
            if kind >= len(T.ARG_KINDS):
                raise InvalidModule(f"kernel {name!r} argument {aname!r}: unknown kind {kind}", kat)
            if dtype >= len(T.ARG_DTYPES):
                raise InvalidModule(f"kernel {name!r} argument {aname!r}: unknown dtype {dtype}", kat + 1)
            if any(a.name == aname for a in args):
                raise InvalidModule(f"kernel {name!r}: argument {aname!r} declared twice", kat)
            args.append(KernelArg(aname, T.ARG_KINDS[kind], T.ARG_DTYPES[dtype]))
        kernels[name] = KernelSymbol(name, entry, end, tuple(args))
    if r.pos != r.end:
        raise InvalidModule("trailing bytes in the symbol table", r.pos)
    return Module(code=code, decoded=decoded, rodata=rodata, kernels=kernels, isa_version=isa_version,
                  image=bytes(data))
