"""Tests for your own kernel: copy this file next to your kernel, replace `scale` and `reference` with yours,
and run `pytest test_my_kernel.py`.

Installing vnpu installs its pytest plugin, so the fixtures used below (vnpu_card, vnpu_engine,
vnpu_platform) need no conftest.py. docs/testing.md explains every part; docs/kernel-language.md teaches the
kernel language.

The kernel scales a vector, y = alpha * x: each PE takes its share of the elements and walks it in tiles,
double-buffered. At the end, the same kernel written at the assembly level (with the builder) shows the
race sanitizer catching a forgotten wait, a mistake the kernel language does not let you make.
"""
import numpy as np
import pytest

import vnpu
from vnpu.kernels.builder import KernelBuilder
from vnpu.testing import Out, assert_kernel

T = 256


@vnpu.kernel
def scale(x, y, alpha):
    """The kernel under test."""
    lo, hi = vnpu.split(x.shape[0])
    for i in range(lo, hi, T, pipeline=True):
        end = vnpu.minimum(i + T, hi)              # the last tile of a share may be short
        vnpu.store(y[i:end], vnpu.load(x[i:end]) * alpha)


def reference(x, alpha):
    """What the kernel should compute, in numpy (called with the inputs by name; outputs are left out)."""
    return x * np.float32(alpha)


def scale_inputs(n, alpha=0.5, seed=0):
    x = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    return {"x": x, "alpha": alpha}, {"y": Out((n,), np.float32)}


@pytest.mark.parametrize("n", [1, 255, 256, 3000])
def test_scale_matches_numpy(n):
    """The interpreter (Kernel.interpret, with its checks) and both engines of the card (the timed Numba core
    with the race sanitizer, and the numpy reference interpreter) run the kernel; each must match the
    reference, and the two engines must agree bit for bit."""
    inputs, outputs = scale_inputs(n)
    runs = assert_kernel(scale, inputs, reference, outputs=outputs)
    assert set(runs) == {"interpret", "numba", "reference"}
    np.testing.assert_array_equal(runs["numba"]["y"], runs["reference"]["y"])


def test_scale_on_one_pe_of_the_reference_card():
    """Any PE set and any card config: here PE 0 alone on the full-size reference card."""
    inputs, outputs = scale_inputs(3000, alpha=-2.0)
    assert_kernel(scale, inputs, reference, outputs=outputs, pes=[0], config="reference")


def test_scale_with_tolerances():
    """A reference computed in float64 differs from the card's fp32 arithmetic in the last bits: say how
    close is close enough (rtol and atol, as numpy.testing.assert_allclose and torch.testing.assert_close)."""
    inputs, outputs = scale_inputs(1000, alpha=0.1)
    assert_kernel(scale, inputs, lambda x, alpha: x.astype(np.float64) * 0.1, outputs=outputs,
                  rtol=1e-6, atol=1e-7)


def test_scale_cycle_budget():
    """Cycles are virtual and deterministic (the same on every machine), so a performance regression can be
    a plain assertion. Only the numba engine is timed (interpret=False skips the interpreter)."""
    inputs, outputs = scale_inputs(3000)
    runs = assert_kernel(scale, inputs, reference, outputs=outputs, engines=("numba",), interpret=False)
    assert 0 < runs["numba"].cycles < 2_000, runs["numba"].profile


@vnpu.kernel
def scale_with_a_bug(x, y, alpha):
    """A kernel with a bug the card hides: the short last tile is padded with elements nobody wrote."""
    lo, hi = vnpu.split(x.shape[0])
    for i in range(lo, hi, T):
        t = vnpu.empty((T,), np.float32)
        vnpu.load(x[i:vnpu.minimum(i + T // 2, hi)], into=t[0:T // 2])   # only half the tile is loaded
        vnpu.store(y[i:vnpu.minimum(i + T, hi)], t * alpha)


def test_the_interpreter_finds_what_the_card_hides():
    """The interpreter fills new tiles with NaN and refuses to store elements no operation wrote; the error
    names the kernel's source line."""
    inputs, outputs = scale_inputs(3000)
    with pytest.raises(vnpu.KernelError, match="no operation wrote"):
        assert_kernel(scale_with_a_bug, inputs, reference, outputs=outputs)


def test_scale_on_the_card_fixture(vnpu_card, vnpu_engine):
    """Lower level: the vnpu_card fixture (a fresh tiny card) and vnpu_engine (this test runs once per
    engine); call the kernel on that card yourself."""
    x = np.arange(1000, dtype=np.float32)
    y, profile = scale(x, np.zeros_like(x), 2.0, card=vnpu_card, engine=vnpu_engine)
    np.testing.assert_array_equal(y, 2 * x)
    assert (profile.cycles > 0) == (vnpu_engine == "numba")


@pytest.mark.vnpu_card("tiny", overrides={"dma.setup_cycles": 2000})
def test_slow_dma_costs_cycles(vnpu_card):
    """A marker picks the vnpu_card fixture's config and overrides; pass the card to assert_kernel."""
    inputs, outputs = scale_inputs(3000)
    slow = assert_kernel(scale, inputs, reference, outputs=outputs, card=vnpu_card, engines=("numba",))
    fast = assert_kernel(scale, inputs, reference, outputs=outputs, engines=("numba",))
    assert slow["numba"].cycles > fast["numba"].cycles + 2000


def test_scale_through_the_driver(vnpu_platform):
    """The same kernel through the driver API (what an application does): compile it for the arguments'
    shapes to a module image; the vnpu_platform fixture is one tiny card with the race sanitizer on."""
    x = np.linspace(-1, 1, 1000, dtype=np.float32)
    image = scale.compile(x, x, 3.0).image             # the kernel's arguments: x, y, alpha
    dev = vnpu_platform.devices[0]
    q = dev.queue()
    kernel = dev.load(image)["scale"]
    px, py = dev.alloc(x.nbytes), dev.alloc(x.nbytes)
    q.copy_to_device(px, x)
    q.launch(kernel, px, py, 3.0)
    y = q.copy_to_host(py, dtype=np.float32)
    q.synchronize()
    np.testing.assert_allclose(y, x * np.float32(3.0), rtol=0, atol=0)


# --- the same kernel at the assembly level, with the builder --------------------------------------------------
def build_scale(wait_for_load=True):
    """scale(x, y, n, alpha) written instruction by instruction with the KernelBuilder (assert_kernel also takes
    an image, a vnpu.Module or assembly text). Here the waits are yours to place: wait_for_load=False leaves
    one out, the bug the race sanitizer catches below."""
    kb = KernelBuilder()
    with kb.kernel("scale", x=("buffer", "f32"), y=("buffer", "f32"), n=("scalar", "i32"),
                   alpha=("scalar", "f32")) as k:
        pe, npe, i, count, nbytes, addr, buf, a = k.regs("pe", "npe", "i", "count", "nbytes", "addr", "buf",
                                                         "alpha")
        k.csrr(pe, "pe_id")
        k.csrr(npe, "pe_count")
        k.const(a, 8192)
        k.sw(k.args.alpha, (a, 0))                 # alpha (fp32 bits) into local memory, for the broadcast op
        k.const(buf, 0)
        step = k.reg("step")
        k.muli(step, npe, T)
        k.muli(i, pe, T)
        with k.for_range(i, i, k.args.n, step=step):   # PE p takes chunks p, p + pe_count, ...
            k.const(count, T)
            k.sub(nbytes, k.args.n, i)
            k.min(count, count, nbytes)            # the last chunk may be short
            k.shli(nbytes, count, 2)
            k.shli(addr, i, 2)
            k.add(addr, addr, k.args.x)
            k.dma(0, buf, addr, nbytes, 0)         # x[i : i+count] -> local memory
            if wait_for_load:
                k.wait(0, 1)
            k.vmuls(buf, buf, a, count, "f32", 1)  # local *= alpha
            k.wait(1, 1)
            k.shli(addr, i, 2)
            k.add(addr, addr, k.args.y)
            k.dma(0, addr, buf, nbytes, 0)         # local memory -> y[i : i+count]
            k.wait(0, 1)
            if not wait_for_load:
                k.wait(0, 1)                       # (the load's signal, so the launch still ends cleanly)
    return kb


def reference_scale(x, n, alpha):
    """build_scale's reference: its arguments include n."""
    return x * np.float32(alpha)


def test_forgotten_wait_is_a_race():
    """The sanitizer (on by default) stops the launch at the first access two instructions may make to the
    same bytes without a wait ordering them, and names both."""
    x = np.random.default_rng(0).standard_normal(3000).astype(np.float32)
    with pytest.raises(vnpu.RaceError, match="add a wait"):
        assert_kernel(build_scale(wait_for_load=False), {"x": x, "n": x.size, "alpha": 0.5}, reference_scale,
                      outputs={"y": Out(x.shape, np.float32)})
