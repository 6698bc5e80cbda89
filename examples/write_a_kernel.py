"""Write a kernel in the kernel language, run it on a virtual card, compare it with numpy, look at the trace.

    python examples/write_a_kernel.py
The kernel scales a vector, y = alpha * x: every PE takes its share of the elements and walks it in tiles of
T elements, double-buffered. docs/kernel-language.md is the tutorial.
"""
import numpy as np

import vnpu

T = 1024                                          # elements per tile (a Python number: fixed when compiling)


@vnpu.kernel
def scale(x, y, alpha):
    lo, hi = vnpu.split(x.shape[0])               # this PE's share [lo, hi) of the elements
    for i in range(lo, hi, T, pipeline=True):     # a loop on the card; the next tile loads during this one
        end = vnpu.minimum(i + T, hi)             # the last tile of a share may be short
        t = vnpu.load(x[i:end])                   # DMA into a tile of local memory
        vnpu.store(y[i:end], t * alpha)           # multiply on the vector unit, DMA the product back


x = np.random.default_rng(0).standard_normal(100_000).astype(np.float32)
y = np.zeros_like(x)
print("\n".join(scale.asm(x, y, 0.5).splitlines()[:12]), "\n    ...")   # what it compiles to

out, profile = scale(x, y, 0.5)                   # the tiny card's 4 PEs, the race sanitizer on
print("matches numpy:", np.array_equal(y, x * np.float32(0.5)))
print(profile)                                    # cycles, unit utilization, bytes, stalls, roofline

y2 = np.zeros_like(x)
scale.interpret(x, y2, 0.5)                       # the same Python code in numpy, with the interpreter's checks
print("interpreter matches:", np.array_equal(y2, y))

profile.write_trace("scale-trace.json")
print("trace: scale-trace.json (open in https://ui.perfetto.dev)")
