"""`vnpu demo`: the main job on the embedded default platform.

It grows with the project: today it assembles the vector-add kernel, and runs it on a virtual card when the
emulator is present.
"""
from __future__ import annotations

import json

VECTOR_ADD = """
; out[i] = a[i] + b[i], split across the PEs of the launch in chunks of CHUNK fp32 elements.
.const CHUNK = 256
.kernel vadd
.arg a, buffer, f32
.arg b, buffer, f32
.arg out, buffer, f32
.arg n, scalar, i32
    csrr r10, pe_id
    csrr r11, pe_count
    li   r12, CHUNK
    mul  r13, r10, r12
    mul  r14, r11, r12
    li   r20, 0
    li   r21, CHUNK * 4
    li   r22, CHUNK * 8
next:
    bge  r13, n, done
    sub  r15, n, r13
    min  r15, r15, r12
    shli r16, r15, 2
    shli r17, r13, 2
    add  r18, a, r17
    dma  e0, r20, r18, r16, s0
    add  r18, b, r17
    dma  e0, r21, r18, r16, s0
    wait s0, 2
    vadd r22, r20, r21, r15, f32, s1
    wait s1, 1
    add  r18, out, r17
    dma  e0, r18, r22, r16, s2
    wait s2, 1
    add  r13, r13, r14
    j    next
done:
    halt
"""


def run_demo(as_json=False):
    import vnpu
    image = vnpu.assemble(VECTOR_ADD, source="demo:vadd")
    mod = vnpu.load_module(image)
    result = {"kernel": mod["vadd"].signature(), "instructions": len(mod.code), "image_bytes": len(image)}
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(f"assembled {result['kernel']}: {result['instructions']} instructions, {result['image_bytes']} bytes")
        print(vnpu.disassemble(image))
    return 0
