"""The vnpu instruction set: ONE table from which encode, decode, assembly, disassembly and docs/isa.md
are derived (the way Spike's opcode table drives its decoder and disassembler).

Every instruction is one 64-bit little-endian word. Bits 63..56 hold the opcode; the operand fields
follow from bit 55 downward, in the order the table lists them; unused low bits must be zero.

Field kinds (each has a fixed column in the decoded form the emulator runs, see `COLUMNS`):
  reg     a scalar register r0..r31 (r0 reads as zero, writes to it are dropped)
  imm     a signed immediate of the given width
  uimm    an unsigned immediate of the given width
  target  a branch target: encoded as a signed offset in instructions from this instruction,
          decoded to an absolute instruction index
  enum    a small named choice (dtype, special register, ...)
  sem     a semaphore number, written s0..s31
  eng     a DMA engine number, written e0..e15
Operands are written in table order; `mem` in the syntax means `imm(rs1)`.
"""
from __future__ import annotations

from dataclasses import dataclass

ISA_VERSION = 1
WORD_BITS = 64
OPCODE_BITS = 8
NUM_REGS = 32
NUM_SEMS = 32          # architectural limit; the card config may provide fewer
NUM_ENGINES = 16       # architectural limit of the eng field
MAX_KERNEL_ARGS = 15   # arguments arrive in r1..r15

# The address map every PE sees (64-bit device addresses). Local memory is the issuing PE's own.
LOCAL_BASE = 0x0                 # PE-local memory (TCM + SRAM), [0, local_bytes)
SHARED_BASE = 0x1_0000_0000      # the card's shared on-chip SRAM
DRAM_BASE = 0x10_0000_0000       # card DRAM, [DRAM_BASE, DRAM_BASE + capacity)

# Element types the vector and matrix units understand (2-bit dt fields).
VDTYPES = ("i8", "i32", "f16", "f32")
MATRIX_DTYPES = ("i8", "f16", "f32")   # the matrix unit's operand types (i32 is IllegalInstruction at load)
# Kernel argument dtypes (module signatures).
ARG_DTYPES = ("i8", "i32", "f16", "f32", "i64", "u8", "i16", "u32")
ARG_KINDS = ("buffer", "scalar")
SPECIAL_REGS = ("pe_id", "pe_count", "cycle", "rodata", "card_id", "launch_id")
DMA_DIMS = ("d1", "d2")
ACC_MODES = ("set", "acc")

# Decoded form: one row of int64 per instruction; each field kind lands in a fixed column, so the
# emulator reads `dec[pc, RD]` and never re-derives the layout.
COLUMNS = ("op", "rd", "rs1", "rs2", "rs3", "imm", "dt", "dt2", "flag", "sem", "eng", "sr")
OP, RD, RS1, RS2, RS3, IMM, DT, DT2, FLAG, SEM, ENG, SR = range(len(COLUMNS))
NCOLS = len(COLUMNS)


@dataclass(frozen=True)
class Field:
    name: str      # column it decodes into (one of COLUMNS)
    kind: str      # reg, imm, uimm, target, enum, sem, eng
    width: int
    choices: tuple = ()  # for enum

    def lo_hi(self):
        if self.kind in ("imm", "target"):
            return -(1 << (self.width - 1)), (1 << (self.width - 1)) - 1
        if self.kind == "enum":
            return 0, len(self.choices) - 1
        if self.kind == "sem":
            return 0, NUM_SEMS - 1
        if self.kind == "eng":
            return 0, NUM_ENGINES - 1
        return 0, (1 << self.width) - 1


def _reg(name):
    return Field(name, "reg", 5)


RD_, RS1_, RS2_, RS3_ = _reg("rd"), _reg("rs1"), _reg("rs2"), _reg("rs3")
IMM32 = Field("imm", "imm", 32)
IMM24 = Field("imm", "imm", 24)
UIMM16 = Field("imm", "uimm", 16)
TARGET = Field("imm", "target", 24)
DT_ = Field("dt", "enum", 2, VDTYPES)
DT2_ = Field("dt2", "enum", 2, VDTYPES)
MDT = Field("dt", "enum", 2, VDTYPES)  # matrix accepts MATRIX_DTYPES; i32 is IllegalInstruction at load
SEM_ = Field("sem", "sem", 5)
ENG_ = Field("eng", "eng", 4)
SR_ = Field("sr", "enum", 4, SPECIAL_REGS)
DIM_ = Field("flag", "enum", 1, DMA_DIMS)
ACC_ = Field("flag", "enum", 1, ACC_MODES)
MEM = "mem"  # syntax marker: imm(rs1)


@dataclass(frozen=True)
class Instr:
    mnemonic: str
    opcode: int
    fields: tuple          # Field objects, in encoding and syntax order (MEM expands to imm, rs1)
    unit: str              # scalar, control, memory, dma, matrix, vector, embedding, sync, debug
    cost: str              # issue cycles on the scalar core, or the name of the unit's timing formula
    issue_cycles: int      # cycles the PE spends issuing it
    semantics: str         # one line, reads like the spec
    # --- attributes both engines dispatch on (no opcode ranges anywhere; see emulator/dispatch.py) ---------
    mem_bytes: int = 0     # scalar load / store: bytes moved (0: not a scalar memory access)
    mem_signed: bool = False   # a load that sign-extends
    mem_store: bool = False    # a store (writes local memory) rather than a load
    branch: str = ""       # a conditional or unconditional branch: its condition (eq, ne, lt, ge, ltu, geu, always)
    vec_fn: str = ""       # vector elementwise: the unit's function (add, sub, ..., rsqrt); "" for others
    vec_operands: int = 0  # elementwise inputs: 1 (a) or 2 (a and b)
    broadcast: bool = False    # b is one element, used for every i
    float_only: bool = False   # undefined for integer element types (IllegalInstruction)
    transcendental: bool = False   # priced at vector.transcendental_cycles per vector
    async_op: bool = False     # handed to its unit (DMA, matrix, vector, embedding), whose `issue` runs it and
                               # signals sem at completion; the core runs every other instruction itself

    def encoding_fields(self):
        out = []
        for f in self.fields:
            if f == MEM:
                out += [RS1_, IMM24]
            else:
                out.append(f)
        return tuple(out)


def _alu(mn, op, sem):
    return Instr(mn, op, (RD_, RS1_, RS2_), "scalar", "1", 1, sem)


def _alui(mn, op, sem):
    return Instr(mn, op, (RD_, RS1_, IMM24), "scalar", "1", 1, sem)


def _br(mn, op, cond):
    return Instr(mn, op, (RS1_, RS2_, TARGET), "control", "1 (+2 taken)", 1, f"if {cond}: pc = target",
                 branch=mn[1:])


def _ld(mn, op, nbytes, signed):
    ext = "sign" if signed else "zero"
    return Instr(mn, op, (RD_, MEM), "memory", "2", 2,
                 f"rd = {ext}-extend(local[rs1 + imm : +{nbytes}])", mem_bytes=nbytes, mem_signed=signed)


def _st(mn, op, nbytes):
    return Instr(mn, op, (RS2_, MEM), "memory", "1", 1, f"local[rs1 + imm : +{nbytes}] = low {nbytes} bytes of rs2",
                 mem_bytes=nbytes, mem_store=True)


def _vbin(mn, op, expr, broadcast=False):
    return Instr(mn, op, (RD_, RS1_, RS2_, RS3_, DT_, SEM_), "vector", "vector_elementwise", 1,
                 f"for i < rs3: local_dt[rd+i] = {expr}; then signal sem",
                 vec_fn=mn[1:-1] if broadcast else mn[1:], vec_operands=2, broadcast=broadcast, async_op=True)


def _vun(mn, op, expr, float_only=False, transcendental=False):
    return Instr(mn, op, (RD_, RS1_, RS3_, DT_, SEM_), "vector", "vector_elementwise", 1,
                 f"for i < rs3: local_dt[rd+i] = {expr}; then signal sem",
                 vec_fn=mn[1:], vec_operands=1, float_only=float_only, transcendental=transcendental,
                 async_op=True)


INSTRUCTIONS = (
    # --- control and scalar ---------------------------------------------------------------------
    Instr("nop", 0x00, (), "scalar", "1", 1, "do nothing"),
    Instr("halt", 0x01, (), "control", "1", 1, "stop this PE; the launch ends when every PE has halted"),
    Instr("li", 0x02, (RD_, IMM32), "scalar", "1", 1, "rd = sign-extend(imm32)"),
    Instr("lih", 0x03, (RD_, IMM32), "scalar", "1", 1, "rd = (imm32 << 32) | (rd & 0xffffffff)"),
    Instr("csrr", 0x04, (RD_, SR_), "scalar", "1", 1, "rd = special register sr (pe_id, pe_count, cycle, ...)"),
    _alu("add", 0x10, "rd = rs1 + rs2"),
    _alu("sub", 0x11, "rd = rs1 - rs2"),
    Instr("mul", 0x12, (RD_, RS1_, RS2_), "scalar", "3", 3, "rd = rs1 * rs2 (low 64 bits)"),
    Instr("div", 0x13, (RD_, RS1_, RS2_), "scalar", "20", 20, "rd = rs1 / rs2 rounded toward zero; -1 if rs2 == 0"),
    Instr("rem", 0x14, (RD_, RS1_, RS2_), "scalar", "20", 20, "rd = rs1 - rs2 * (rs1 / rs2); rs1 if rs2 == 0"),
    _alu("and", 0x15, "rd = rs1 & rs2"),
    _alu("or", 0x16, "rd = rs1 | rs2"),
    _alu("xor", 0x17, "rd = rs1 ^ rs2"),
    _alu("shl", 0x18, "rd = rs1 << (rs2 & 63)"),
    _alu("shr", 0x19, "rd = rs1 >> (rs2 & 63), logical"),
    _alu("sra", 0x1A, "rd = rs1 >> (rs2 & 63), arithmetic"),
    _alu("slt", 0x1B, "rd = 1 if rs1 < rs2 (signed) else 0"),
    _alu("sltu", 0x1C, "rd = 1 if rs1 < rs2 (unsigned) else 0"),
    _alu("min", 0x1D, "rd = min(rs1, rs2), signed"),
    _alu("max", 0x1E, "rd = max(rs1, rs2), signed"),
    _alui("addi", 0x20, "rd = rs1 + imm"),
    Instr("muli", 0x21, (RD_, RS1_, IMM24), "scalar", "3", 3, "rd = rs1 * imm (low 64 bits)"),
    _alui("andi", 0x22, "rd = rs1 & imm"),
    _alui("ori", 0x23, "rd = rs1 | imm"),
    _alui("xori", 0x24, "rd = rs1 ^ imm"),
    _alui("shli", 0x25, "rd = rs1 << (imm & 63)"),
    _alui("shri", 0x26, "rd = rs1 >> (imm & 63), logical"),
    _alui("srai", 0x27, "rd = rs1 >> (imm & 63), arithmetic"),
    _alui("slti", 0x28, "rd = 1 if rs1 < imm (signed) else 0"),
    _br("beq", 0x30, "rs1 == rs2"),
    _br("bne", 0x31, "rs1 != rs2"),
    _br("blt", 0x32, "rs1 < rs2 (signed)"),
    _br("bge", 0x33, "rs1 >= rs2 (signed)"),
    _br("bltu", 0x34, "rs1 < rs2 (unsigned)"),
    _br("bgeu", 0x35, "rs1 >= rs2 (unsigned)"),
    Instr("jmp", 0x36, (TARGET,), "control", "1 (+2 taken)", 1, "pc = target", branch="always"),
    Instr("loop", 0x37, (RS1_, TARGET), "control", "1 (+2 taken)", 1,
          "rs1 = rs1 - 1; if rs1 != 0: pc = target (a counted loop; rs1 must not be r0)"),
    # --- scalar memory: PE-local memory only ------------------------------------------------------
    _ld("lb", 0x40, 1, True), _ld("lh", 0x41, 2, True), _ld("lw", 0x42, 4, True), _ld("ld", 0x43, 8, True),
    _ld("lbu", 0x44, 1, False), _ld("lhu", 0x45, 2, False), _ld("lwu", 0x46, 4, False),
    _st("sb", 0x48, 1), _st("sh", 0x49, 2), _st("sw", 0x4A, 4), _st("sd", 0x4B, 8),
    # --- DMA ----------------------------------------------------------------------------------------
    Instr("dma.dim", 0x50, (ENG_, DIM_, RS1_, RS2_, RS3_), "dma", "1", 1,
          "stage outer dimension dim of engine eng's next transfer: count rs1, source stride rs2, "
          "destination stride rs3 (bytes)"),
    Instr("dma", 0x51, (ENG_, RD_, RS1_, RS2_, SEM_), "dma", "dma_transfer", 1,
          "engine eng copies rs2 contiguous bytes from address rs1 to rd, repeated over the staged "
          "outer dimensions (1-D to 3-D), then signals sem; clears the staged dimensions", async_op=True),
    # --- matrix unit -------------------------------------------------------------------------------
    Instr("mm.ldw", 0x60, (RS1_, RS2_, RS3_, MDT, SEM_), "matrix", "matrix_load_weights", 1,
          "load a K=rs2 x N=rs3 weight tile (row-major, dt) from local[rs1] into the matrix unit; then signal sem",
          async_op=True),
    Instr("mm.mul", 0x61, (RD_, RS1_, RS2_, MDT, ACC_, SEM_), "matrix", "matrix_multiply", 1,
          "local_acc[rd] (=|+=) A(M=rs2 x K, row-major, dt, at local[rs1]) @ W; acc is i32 for i8 (wrapping), "
          "f32 for f16 (exact products, f32 sums in K order) and for f32 (exact products summed in f64 in K order, "
          "rounded once); a NaN result is the canonical quiet NaN; then signal sem", async_op=True),
    # --- vector unit -------------------------------------------------------------------------------
    _vbin("vadd", 0x70, "a[i] + b[i]"),
    _vbin("vsub", 0x71, "a[i] - b[i]"),
    _vbin("vmul", 0x72, "a[i] * b[i]"),
    _vbin("vmax", 0x73, "max(a[i], b[i])"),
    _vbin("vmin", 0x74, "min(a[i], b[i])"),
    _vun("vrelu", 0x78, "max(a[i], 0)"),
    _vun("vsigmoid", 0x79, "1 / (1 + exp(-a[i]))", float_only=True, transcendental=True),
    _vun("vtanh", 0x7A, "tanh(a[i])", float_only=True, transcendental=True),
    _vun("vexp", 0x7B, "exp(a[i])", float_only=True, transcendental=True),
    _vun("vgelu", 0x7C, "0.5 a (1 + erf(a / sqrt 2))", float_only=True, transcendental=True),
    _vun("vcopy", 0x7D, "a[i]"),
    _vun("vrecip", 0x7E, "1 / a[i] (floats only)", float_only=True, transcendental=True),
    _vun("vrsqrt", 0x7F, "1 / sqrt(a[i]) (floats only)", float_only=True, transcendental=True),
    _vbin("vadds", 0x85, "a[i] + b[0] (b: one element, broadcast)", broadcast=True),
    _vbin("vsubs", 0x86, "a[i] - b[0] (b: one element, broadcast)", broadcast=True),
    _vbin("vmuls", 0x87, "a[i] * b[0] (b: one element, broadcast)", broadcast=True),
    _vbin("vmaxs", 0x88, "max(a[i], b[0]) (b: one element, broadcast)", broadcast=True),
    _vbin("vmins", 0x89, "min(a[i], b[0]) (b: one element, broadcast)", broadcast=True),
    Instr("vsum", 0x80, (RD_, RS1_, RS3_, DT_, SEM_), "vector", "vector_reduce", 1,
          "local_acc[rd] = sum(a[0:rs3]) (acc dtype: i32 for integers, f32 for floats); then signal sem",
          async_op=True),
    Instr("vrmax", 0x81, (RD_, RS1_, RS3_, DT_, SEM_), "vector", "vector_reduce", 1,
          "local_acc[rd] = max(a[0:rs3]) (acc dtype: i32 for integers, f32 for floats); then signal sem",
          async_op=True),
    Instr("vcvt", 0x82, (RD_, RS1_, RS3_, RS2_, DT_, DT2_, SEM_), "vector", "vector_elementwise", 1,
          "convert rs3 elements from dt to dt2 with scale = f32(low 32 bits of rs2), zero point = int32(high 32): "
          "to integer q = clamp(round_even(fma(x, scale, f32(zp)))) with x * scale + zp rounded once to f32 "
          "(NaN gives 0), to float y = (x - zp) * scale from integers, float to float y = x (NaN quieted); "
          "then signal sem", async_op=True),
    # --- embedding unit ----------------------------------------------------------------------------
    Instr("emb", 0x90, (RS1_, SEM_), "embedding", "embedding_lookup", 1,
          "start the pooled lookup described by the descriptor at local[rs1] on the card's embedding unit; "
          "then signal sem", async_op=True),
    # --- synchronization ---------------------------------------------------------------------------
    Instr("sig", 0xA0, (RS1_, SEM_), "sync", "1", 1, "semaphore sem of PE rs1 += 1"),
    Instr("wait", 0xA1, (SEM_, UIMM16), "sync", "1 + stall", 1,
          "stall until semaphore sem >= imm, then subtract imm (orders this PE after the signalled work)"),
    Instr("barrier", 0xA2, (), "sync", "1 + barrier_cycles + stall", 1,
          "stall until every PE of the launch reaches a barrier"),
    Instr("fence", 0xA3, (), "sync", "1 + stall", 1, "stall until every async operation this PE issued is done"),
    # --- debug -------------------------------------------------------------------------------------
    Instr("mark", 0xF0, (IMM32,), "debug", "1", 1, "emit a trace marker carrying imm"),
)

BY_MNEMONIC = {i.mnemonic: i for i in INSTRUCTIONS}
# the vector unit's elementwise functions, numbered in table order (vadd and vadds share "add")
VECTOR_FUNCTIONS = tuple(dict.fromkeys(i.vec_fn for i in INSTRUCTIONS if i.vec_fn))
BRANCH_CONDITIONS = ("eq", "ne", "lt", "ge", "ltu", "geu", "always")
BY_OPCODE = {i.opcode: i for i in INSTRUCTIONS}
UNITS = ("scalar", "control", "memory", "dma", "matrix", "vector", "embedding", "sync", "debug")
ASYNC_UNITS = ("dma", "matrix", "vector", "embedding")   # units with an instruction queue and a completion signal
# the async units every PE of a card shares (the DRAM channel and SRAM ring the DMA engines book, the one
# embedding unit); the matrix and vector units are each PE's own
SHARED_UNITS = ("dma", "embedding")

# Opcode constants for the emulator (OP_ADD, OP_DMA_DIM, OP_MM_MUL, ...): names derived from the table.
_consts = {"OP_" + i.mnemonic.upper().replace(".", "_"): i.opcode for i in INSTRUCTIONS}
globals().update(_consts)
OPCODE_NAMES = tuple(sorted(_consts))


def _check_table():
    """The table is the definition, so check it is self-consistent at import time."""
    assert len(BY_MNEMONIC) == len(INSTRUCTIONS) and len(BY_OPCODE) == len(INSTRUCTIONS)
    for ins in INSTRUCTIONS:
        assert 0 <= ins.opcode < (1 << OPCODE_BITS)
        assert ins.unit in UNITS, ins
        bits = sum(f.width for f in ins.encoding_fields())
        assert bits <= WORD_BITS - OPCODE_BITS, (ins.mnemonic, bits)
        cols = [f.name for f in ins.encoding_fields()]
        assert len(cols) == len(set(cols)) and all(c in COLUMNS for c in cols), ins.mnemonic
        assert (ins.mem_bytes > 0) == (ins.unit == "memory"), ins.mnemonic
        assert (ins.vec_fn != "") == (ins.cost == "vector_elementwise" and ins.mnemonic != "vcvt"), ins.mnemonic
        assert ins.branch in BRANCH_CONDITIONS + ("",), ins.mnemonic
        assert ins.async_op == (ins.unit in ASYNC_UNITS and SEM_ in ins.fields), ins.mnemonic


_check_table()

# --- embedding descriptor layout (the `emb` instruction's operand lives in local memory) ---------
# Sixteen little-endian int64 words. Kept here because it is part of the ISA contract.
EMB_DESC_FIELDS = (
    ("table", "device address of the table's first row"),
    ("rows", "number of rows in the table"),
    ("dim", "embedding dimension (elements per row)"),
    ("format", "table format: 0 fp32, 1 fp16, 2 int8_rowwise, 3 int8_rowwise_fp16, 4 int4_rowwise"),
    ("indices", "device address of the indices"),
    ("num_indices", "number of indices"),
    ("index_bytes", "4 (int32) or 8 (int64)"),
    ("segments", "device address of the lengths (mode bit 4 clear) or offsets (set)"),
    ("num_bags", "number of pooled output rows"),
    ("weights", "device address of per-sample fp32 weights, or 0 for none"),
    ("output", "device address of the pooled output rows"),
    ("out_dtype", "0 fp32, 1 fp16"),
    ("mode", "bits 0-1: 0 sum, 1 mean, 2 weighted sum; bit 4: offsets instead of lengths; "
             "bit 5: include_last_offset"),
    ("segment_bytes", "4 (int32) or 8 (int64) for lengths or offsets"),
    ("reserved0", "must be 0"),
    ("reserved1", "must be 0"),
)
EMB_DESC_WORDS = len(EMB_DESC_FIELDS)
# word indices EMB_TABLE, EMB_ROWS, ... EMB_RESERVED1, derived from the list above
globals().update({"EMB_" + _name.upper(): _i for _i, (_name, _) in enumerate(EMB_DESC_FIELDS)})
EMB_FORMATS = ("fp32", "fp16", "int8_rowwise", "int8_rowwise_fp16", "int4_rowwise")
EMB_MODE_SUM, EMB_MODE_MEAN, EMB_MODE_WEIGHTED = 0, 1, 2     # bits 0-1 of `mode`
EMB_MODE_OFFSETS = 16                                          # bit 4
EMB_MODE_INCLUDE_LAST = 32                                     # bit 5
