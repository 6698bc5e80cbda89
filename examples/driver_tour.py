"""A tour of the driver API: platform, alloc, copies, launches, events, errors, reset.

    python examples/driver_tour.py
"""
import numpy as np

import vnpu

platform = vnpu.Platform()
print(platform, "-", len(platform.devices), "cards")
dev = platform.devices[0]
print({k: dev.properties[k] for k in ("name", "pes", "clock_ghz", "dram_bytes", "peak_int8_tops")})

image = vnpu.assemble(open(__file__.rsplit("/", 1)[0] + "/vector_add.s").read())
module = dev.load(image)
vadd = module["vadd"]
q = dev.queue()

n = 1 << 16
a, b, out = dev.alloc(4 * n), dev.alloc(4 * n), dev.alloc(4 * n)
t0 = q.record()
q.copy_to_device(a, np.arange(n, dtype=np.float32))
q.copy_to_device(b, np.ones(n, np.float32))
t1 = q.record()
q.launch(vadd, a, b, out, n)
t2 = q.record()
result = q.copy_to_host(out, dtype=np.float32)
t3 = q.record()
q.synchronize()
print(f"copies in {t1.elapsed_ns(t0) / 1e3:.1f} us, kernel {t2.elapsed_ns(t1) / 1e3:.1f} us, "
      f"copy back {t3.elapsed_ns(t2) / 1e3:.1f} us (virtual); correct: {np.array_equal(result, np.arange(n) + 1)}")

# card to card through the switch
other = platform.devices[1]
remote = other.alloc(4 * n)
other.queue().copy_peer(remote, out)

# errors are typed and name what went wrong
for what, call in [("use after free", lambda: (a.free(), q.copy_to_host(a))),
                   ("too big", lambda: dev.alloc(1 << 40)),
                   ("wrong arguments", lambda: q.launch(vadd, b, out, n)),
                   ("another card's buffer", lambda: q.copy_to_host(remote))]:
    try:
        call()
    except vnpu.VnpuError as e:
        print(f"{what}: {type(e).__name__}: {e}")

# a faulting kernel: the fault is sticky on that card until reset; the other cards keep working
crash = dev.load(vnpu.assemble(".kernel crash\n li r5, -8\n lw r6, 0(r5)\n halt\n"))["crash"]
q.launch(crash)
try:
    q.synchronize()
except vnpu.IllegalAddress as e:
    print("fault:", e)
dev.reset()
print("after reset, card 0 allocates again:", dev.alloc(64))
