"""Encode and decode instruction words, derived from the table in table.py."""
from __future__ import annotations

import numpy as np

from . import table as T

_FIELD_LAYOUT = {}  # opcode -> tuple of (Field, shift)
for _ins in T.INSTRUCTIONS:
    _shift = T.WORD_BITS - T.OPCODE_BITS
    _layout = []
    for _f in _ins.encoding_fields():
        _shift -= _f.width
        _layout.append((_f, _shift))
    _FIELD_LAYOUT[_ins.opcode] = (tuple(_layout), _shift)  # _shift: lowest used bit


class DecodeError(ValueError):
    """Raised by decode with the instruction index; the module loader turns it into InvalidModule."""

    def __init__(self, message, index):
        super().__init__(message)
        self.index = index


def encode(mnemonic: str, values: dict, pc: int = 0) -> int:
    """Encode one instruction. `values` maps column names (rd, rs1, imm, dt, ...) to integers;
    a branch target is an absolute instruction index and `pc` is this instruction's index."""
    ins = T.BY_MNEMONIC[mnemonic]
    layout, _ = _FIELD_LAYOUT[ins.opcode]
    word = ins.opcode << (T.WORD_BITS - T.OPCODE_BITS)
    for f, shift in layout:
        v = int(values.get(f.name, 0))
        if f.kind == "target":
            v -= pc
        lo, hi = f.lo_hi()
        if not lo <= v <= hi:
            what = "branch offset" if f.kind == "target" else f"field {f.name}"
            raise ValueError(f"{mnemonic}: {what} value {v} outside [{lo}, {hi}]")
        word |= (v & ((1 << f.width) - 1)) << shift
    return word


def decode_one(word: int, pc: int, ncode: int | None = None) -> tuple:
    """Decode one word to (Instr, {column: value}); raise DecodeError on anything invalid."""
    word = int(word)
    opcode = word >> (T.WORD_BITS - T.OPCODE_BITS)
    ins = T.BY_OPCODE.get(opcode)
    if ins is None:
        raise DecodeError(f"unknown opcode 0x{opcode:02x} in instruction {pc}", pc)
    layout, low = _FIELD_LAYOUT[ins.opcode]
    if word & ((1 << low) - 1):
        raise DecodeError(f"{ins.mnemonic}: reserved bits set in instruction {pc}", pc)
    vals = {}
    for f, shift in layout:
        raw = (word >> shift) & ((1 << f.width) - 1)
        if f.kind in ("imm", "target") and raw >> (f.width - 1):
            raw -= 1 << f.width
        lo, hi = f.lo_hi()
        if not lo <= raw <= hi:
            raise DecodeError(f"{ins.mnemonic}: field {f.name} value {raw} out of range in instruction {pc}", pc)
        if f.kind == "target":
            raw += pc
            if ncode is not None and not 0 <= raw < ncode:
                raise DecodeError(f"{ins.mnemonic}: branch target {raw} outside the code (0..{ncode - 1}) "
                                  f"in instruction {pc}", pc)
        vals[f.name] = raw
    if ins.unit == "matrix" and T.VDTYPES[vals["dt"]] not in T.MATRIX_DTYPES:
        raise DecodeError(f"{ins.mnemonic}: matrix dtype must be one of {', '.join(T.MATRIX_DTYPES)} "
                          f"in instruction {pc}", pc)
    if ins.mnemonic == "loop" and vals["rs1"] == 0:
        raise DecodeError(f"loop: counter register must not be r0 in instruction {pc}", pc)
    return ins, vals


def decode(words) -> np.ndarray:
    """Decode a code section into the emulator's table: int64[n, NCOLS], branch targets absolute."""
    words = np.asarray(words, dtype=np.uint64)
    n = len(words)
    out = np.zeros((n, T.NCOLS), dtype=np.int64)
    for pc in range(n):
        ins, vals = decode_one(words[pc], pc, n)
        out[pc, T.OP] = ins.opcode
        for name, v in vals.items():
            out[pc, T.COLUMNS.index(name)] = v
    return out
