"""Write a kernel with the builder, run it on a virtual card, compare it with numpy, look at the trace.

    python examples/write_a_kernel.py
The kernel scales a vector: y = alpha * x, each PE taking a strided share of 256-element chunks.
"""
import numpy as np

from vnpu.emulator.card import Card
from vnpu.emulator.trace import format_summary, write_chrome_trace
from vnpu.kernels.builder import KernelBuilder

CHUNK = 256

kb = KernelBuilder()
with kb.kernel("scale", x=("buffer", "f32"), y=("buffer", "f32"), n=("scalar", "i32"),
               alpha=("scalar", "f32")) as k:
    pe, npe, i, count, nbytes, addr, buf, a = k.regs("pe", "npe", "i", "count", "nbytes", "addr", "buf", "alpha")
    k.csrr(pe, "pe_id")
    k.csrr(npe, "pe_count")
    k.const(a, 8192)
    k.sw(k.args.alpha, (a, 0))                    # alpha (fp32 bits) into local memory, for the broadcast op
    k.const(buf, 0)
    step = k.reg("step")
    k.muli(step, npe, CHUNK)
    k.muli(i, pe, CHUNK)
    with k.for_range(i, i, k.args.n, step=step):
        k.const(count, CHUNK)
        k.sub(nbytes, k.args.n, i)
        k.min(count, count, nbytes)               # the last chunk may be short
        k.shli(nbytes, count, 2)
        k.shli(addr, i, 2)
        k.add(addr, addr, k.args.x)
        k.dma(0, buf, addr, nbytes, 0)            # x[i : i+count] -> local
        k.wait(0, 1)
        k.vmuls(buf, buf, a, count, "f32", 1)     # local *= alpha (one element, broadcast)
        k.wait(1, 1)
        k.shli(addr, i, 2)
        k.add(addr, addr, k.args.y)
        k.dma(0, addr, buf, nbytes, 0)            # local -> y[i : i+count]
        k.wait(0, 1)
image = kb.build()
print(kb.text().splitlines()[0], "...", len(kb.text().splitlines()), "lines of assembly")

card = Card("reference")
n = 10_000
x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
px, py = card.alloc(x.nbytes), card.alloc(x.nbytes)
card.write(px, x)
result = card.launch(image, "scale", (px, py, n, 0.5), trace=True)   # the sanitizer is on by default
y = card.read(py, x.nbytes).view(np.float32)
print("matches numpy:", np.array_equal(y, x * np.float32(0.5)))
print(format_summary(result.summary()))
write_chrome_trace("scale-trace.json", [result.chrome_trace()])
print("trace: scale-trace.json (open in https://ui.perfetto.dev)")
