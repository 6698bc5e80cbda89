"""Generate docs/isa.md from the table (a test fails when the committed file is stale).

Regenerate with: python -m vnpu.isa.docs > docs/isa.md
"""
from . import table as T
from .asm import syntax


def _esc(text):
    return text.replace("|", "\\|")  # a bare | would end the Markdown table cell


def render() -> str:
    out = ["# The vnpu instruction set", "",
           "Generated from `isa/table.py` by `python -m vnpu.isa.docs > docs/isa.md`; do not edit by hand.", "",
           f"ISA version {T.ISA_VERSION}. Every instruction is one 64-bit little-endian word: bits 63..56 hold the "
           "opcode, the operand fields follow from bit 55 downward in the order listed, unused low bits are zero. "
           f"{T.NUM_REGS} scalar registers of 64 bits (r0 reads as zero); kernel arguments arrive in r1..r{T.MAX_KERNEL_ARGS} "
           "(buffers as device addresses, scalars as values; float scalars as their fp32 bits). "
           "Branch targets are encoded as signed offsets in instructions. "
           "Async units (dma, matrix, vector, embedding) take the instruction from a queue and signal its semaphore "
           "when done; the PE goes on issuing.", "",
           f"Element types of the vector and matrix units: {', '.join(T.VDTYPES)}. "
           f"Special registers: {', '.join(T.SPECIAL_REGS)}. Argument dtypes: {', '.join(T.ARG_DTYPES)}.", ""]
    for unit in T.UNITS:
        rows = [i for i in T.INSTRUCTIONS if i.unit == unit]
        if not rows:
            continue
        out += [f"## {unit}", "", "| opcode | syntax | fields (bits) | cost | semantics |", "|---|---|---|---|---|"]
        for i in rows:
            fields = ", ".join(f"{f.name}:{f.width}" for f in i.encoding_fields()) or "-"
            out.append(f"| 0x{i.opcode:02x} | `{_esc(syntax(i))}` | {fields} | {_esc(i.cost)} | {_esc(i.semantics)} |")
        out.append("")
    out += ["## Embedding descriptor", "",
            f"`emb` reads {T.EMB_DESC_WORDS} little-endian int64 words from PE-local memory:", "",
            "| word | name | meaning |", "|---|---|---|"]
    for n, (name, meaning) in enumerate(T.EMB_DESC_FIELDS):
        out.append(f"| {n} | {name} | {_esc(meaning)} |")
    out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(render(), end="")
