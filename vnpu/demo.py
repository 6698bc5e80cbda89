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


def run_demo(as_json=False, trace_path=None):
    """Run the vector-add kernel on a reference card, check it against numpy, show where the cycles went."""
    import os
    import tempfile
    import time

    import numpy as np

    import vnpu
    from vnpu.emulator.card import Card
    from vnpu.emulator.trace import format_summary, summarize, write_chrome_trace

    t0 = time.perf_counter()
    image = vnpu.assemble(VECTOR_ADD, source="demo:vadd")
    card = Card("reference")
    n = 1 << 20
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    pa, pb, po = card.alloc(a.nbytes), card.alloc(b.nbytes), card.alloc(a.nbytes)
    card.write(pa, a)
    card.write(pb, b)
    result = card.launch(image, "vadd", (pa, pb, po, n), trace=True)
    out = card.read(po, a.nbytes).view(np.float32)
    ok = bool(np.array_equal(out, a + b))
    summary = summarize(result)
    trace_path = trace_path or os.path.join(tempfile.gettempdir(), "vnpu-demo-trace.json")
    write_chrome_trace(trace_path, [result.chrome_trace(card_name="card 0 (reference)")])
    report = {"kernel": "vadd", "elements": n, "matches_numpy": ok, "summary": summary, "trace": trace_path,
              "wall_s": time.perf_counter() - t0}
    if as_json:
        print(json.dumps(report, indent=2, default=float))
    else:
        print(f"vadd of {n} fp32 elements on a reference card ({card.config.pes} PEs): "
              f"{'matches numpy' if ok else 'DOES NOT MATCH numpy'}")
        print(format_summary(summary))
        print(f"trace (open in https://ui.perfetto.dev): {trace_path}")
    return 0 if ok else 1
