"""Dispatch arrays for compiled code, derived from the ISA table's per-instruction attributes.

The timed core indexes these by opcode (`MEM_BYTES[op]`, `VEC_FN[op]`, ...) instead of testing opcode
ranges, so an instruction's behaviour follows from its row in isa/table.py: adding one touches the table,
its semantics (the unit and the reference interpreter) and its test, nothing here.
"""
import numpy as np

from vnpu.isa import table as T

N_OPCODES = 1 << T.OPCODE_BITS


def _array(value_of, dtype=np.int64):
    out = np.zeros(N_OPCODES, dtype=dtype)
    for ins in T.INSTRUCTIONS:
        out[ins.opcode] = value_of(ins)
    return out


ISSUE_CYCLES = _array(lambda i: i.issue_cycles)
MEM_BYTES = _array(lambda i: i.mem_bytes)                       # scalar load/store width, 0 for others
MEM_STORE = _array(lambda i: i.mem_store, np.bool_)
MEM_SIGNED = _array(lambda i: i.mem_signed, np.bool_)
# branch condition + 1 (0: not a branch), numbered as T.BRANCH_CONDITIONS
BRANCH = _array(lambda i: T.BRANCH_CONDITIONS.index(i.branch) + 1 if i.branch else 0)
B_EQ, B_NE, B_LT, B_GE, B_LTU, B_GEU, B_ALWAYS = range(1, len(T.BRANCH_CONDITIONS) + 1)
# vector elementwise: the unit's function number (-1: not one), numbered as T.VECTOR_FUNCTIONS
VEC_FN = _array(lambda i: T.VECTOR_FUNCTIONS.index(i.vec_fn) if i.vec_fn else -1)
VEC_BINARY = _array(lambda i: i.vec_operands == 2, np.bool_)
VEC_BCAST = _array(lambda i: i.broadcast, np.bool_)
VEC_FLOAT_ONLY = _array(lambda i: i.float_only, np.bool_)
VEC_TRANS = _array(lambda i: i.transcendental, np.bool_)
# The units' entries: the issue functions the core calls through a launch's table of their addresses (units.py).
# The vector unit has one per kind of instruction, so a vector add compiles none of the reduce or convert code.
ENTRIES = ("dma", "matrix", "vector.elementwise", "vector.reduce", "vector.convert", "embedding")


def _entry(ins):
    if not ins.async_op:
        return -1        # the core runs it itself
    if ins.unit == "vector":
        kind = "reduce" if ins.cost == "vector_reduce" else ("elementwise" if ins.vec_fn else "convert")
        return ENTRIES.index("vector." + kind)
    return ENTRIES.index(ins.unit)


UNIT_SLOT = _array(_entry)     # an instruction's entry, as an index into ENTRIES (-1: the core runs it)
# an instruction of a unit every PE of the card shares (table.SHARED_UNITS): like sync's, it issues only when
# no other PE is behind (global time order)
SHARED_UNIT = _array(lambda i: i.async_op and i.unit in T.SHARED_UNITS, np.bool_)
