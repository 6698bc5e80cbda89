"""Every vector op, the conversions and the matrix unit on special floats, compared with PyTorch (an
independent reference) on both engines; the watchdog, race reports and host memory of issue 13.

PyTorch computes fp32 ops in fp32 where the card computes transcendentals in fp64 and rounds once, so values
are compared at 2 ulp of fp32 (fp16: 1 ulp of fp16); NaN positions, infinities and signed zeros must match
exactly.
"""
import math
import subprocess
import sys

import numpy as np
import pytest

import vnpu
from vnpu.emulator.card import Card

torch = pytest.importorskip("torch", reason="PyTorch (the test extra) is the independent reference here")

SPECIALS = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 3.0, 20.0, -20.0, 88.0,
                     -88.0, 100.0, -104.0, 700.0, -800.0, 1e-3, 1e-30, 1e-40, -1e-40, 6e4, -6e4, 1e30, -1e30,
                     3.4e38, -3.4e38], np.float64)
SNAN = np.array([0x7F800001, 0xFF812345, 0x7FC00123], np.uint32).view(np.float32)
UNARY = {
    "vrelu": torch.relu, "vsigmoid": torch.sigmoid, "vtanh": torch.tanh, "vexp": torch.exp,
    "vgelu": lambda t: torch.nn.functional.gelu(t), "vcopy": lambda t: t.clone(),
    "vrecip": torch.reciprocal, "vrsqrt": torch.rsqrt,
}
BINARY = {"vadd": torch.add, "vsub": torch.sub, "vmul": torch.mul, "vmax": torch.maximum,
          "vmin": torch.minimum}


def _vector_kernel(op, dt, n, second=False, scalar=False):
    operands = "r2, r1, r4, r3" if second else "r2, r1, r3"
    return vnpu.assemble(f"""
.kernel k
    li r1, 0
    li r2, 65536
    li r3, {n}
    li r4, 131072
    {op} {operands}, {dt}, s0
    wait s0, 1
    halt
""")


def _run_vector(engine, image, a, b, out_dtype, n_out):
    card = Card("tiny")
    card.write_local(0, 0, a)
    if b is not None:
        card.write_local(0, 131072, b)
    card.launch(image, "k", (), pes=(0,), engine=engine)
    return card.read_local(0, 65536, n_out * np.dtype(out_dtype).itemsize).view(out_dtype).copy()


def _float64_math(op, x):
    """The op in float64 (numpy and math.erf): an independent definition, rounded once by the caller."""
    with np.errstate(all="ignore"):
        erf = np.vectorize(math.erf, otypes=[float])
        return {"vrelu": lambda: np.where(x < 0, 0.0, x), "vsigmoid": lambda: 1 / (1 + np.exp(-x)),
                "vtanh": lambda: np.tanh(x), "vexp": lambda: np.exp(x), "vcopy": lambda: x,
                "vgelu": lambda: np.where(np.isinf(x), np.where(x > 0, x, -0.0), 0.5 * x * (1 + erf(x / math.sqrt(2)))),
                "vrecip": lambda: 1 / x, "vrsqrt": lambda: 1 / np.sqrt(x)}[op]()


def _assert_close_like_torch(got, want, dtype, what, ulps=None, signed_zero=True):
    got64, want64 = got.astype(np.float64), want.astype(np.float64)
    assert np.array_equal(np.isnan(got64), np.isnan(want64)), f"{what}: NaN positions {got} vs {want}"
    fin = np.isfinite(want64)
    assert np.array_equal(got64[~fin & ~np.isnan(want64)], want64[~fin & ~np.isnan(want64)]), f"{what}: inf"
    assert not signed_zero or np.array_equal(np.signbit(got64[want64 == 0]), np.signbit(want64[want64 == 0])), \
        f"{what}: signed zero"
    ulp = np.spacing(np.abs(want64[fin]).astype(dtype)).astype(np.float64)
    tol = (ulps or (2 if dtype == np.float32 else 1)) * ulp
    bad = np.abs(got64[fin] - want64[fin]) > tol
    assert not bad.any(), f"{what}: {got[fin][bad]} vs {want[fin][bad]}"


@pytest.mark.parametrize("engine", ["reference", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_every_unary_vector_op_on_special_floats_matches_pytorch(engine, dtype):
    dt = "f32" if dtype == np.float32 else "f16"
    with np.errstate(all="ignore"):
        x = SPECIALS.astype(dtype)
    for op, fn in UNARY.items():
        got = _run_vector(engine, _vector_kernel(op, dt, len(x)), x, None, dtype, len(x))
        want = fn(torch.from_numpy(x.astype(np.float32))).numpy().astype(dtype)
        exact = _float64_math(op, x.astype(np.float64))
        with np.errstate(all="ignore"):
            exact = exact.astype(dtype)
        _assert_close_like_torch(got, exact, dtype, f"{engine} {op} {dt} vs float64 math", ulps=1)
        if op == "vgelu":
            # PyTorch's fp32 gelu loses digits to cancellation for x < -2, overflows an intermediate for
            # |x| > 1.7e38 and gives NaN at both infinities; the card computes in fp64 and gives the limits
            ok = np.abs(x.astype(np.float64)) < 1e38
            ok &= ~(x.astype(np.float64) < -2)
            got, want = got[ok | np.isnan(x)], want[ok | np.isnan(x)]
        _assert_close_like_torch(got, want, dtype, f"{engine} {op} {dt} vs PyTorch")


@pytest.mark.parametrize("engine", ["reference", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_every_binary_vector_op_on_special_floats_matches_pytorch(engine, dtype):
    dt = "f32" if dtype == np.float32 else "f16"
    with np.errstate(all="ignore"):
        a = np.repeat(SPECIALS, len(SPECIALS)).astype(dtype)
        b = np.tile(SPECIALS, len(SPECIALS)).astype(dtype)
    for op, fn in BINARY.items():
        got = _run_vector(engine, _vector_kernel(op, dt, len(a), second=True), a, b, dtype, len(a))
        want = fn(torch.from_numpy(a.astype(np.float32)), torch.from_numpy(b.astype(np.float32))).numpy()
        with np.errstate(all="ignore"):
            want = want.astype(dtype)
        # max/min of -0.0 and +0.0: PyTorch itself answers differently for 1 and 20 elements (its scalar and
        # vector paths differ); the card gives the first operand (docs/isa.md)
        _assert_close_like_torch(got, want, dtype, f"{engine} {op} {dt}", signed_zero=op not in ("vmax", "vmin"))


@pytest.mark.parametrize("engine", ["reference", "numba"])
def test_reductions_and_softmax_pieces_propagate_nan_like_pytorch(engine):
    for row in ([1.0, np.nan, 3.0], [1.0, np.inf, 2.0], [np.inf, -np.inf], [-np.inf, -np.inf], [2.0, 5.0, -1.0]):
        x = np.array(row, np.float32)
        for op, fn in (("vsum", torch.sum), ("vrmax", torch.max)):
            got = _run_vector(engine, _vector_kernel(op, "f32", len(x)), x, None, np.float32, 1)
            want = fn(torch.from_numpy(x)).numpy().reshape(1)
            _assert_close_like_torch(got, want, np.float32, f"{engine} {op} {row}")
    # exp(x - max) of a row holding +inf: torch's softmax gives all NaN; the pieces must not hide it
    x = np.array([0.0, np.inf, 1.0], np.float32)
    m = _run_vector(engine, _vector_kernel("vrmax", "f32", 3), x, None, np.float32, 1)
    d = _run_vector(engine, _vector_kernel("vsubs", "f32", 3, second=True), x, m, np.float32, 3)
    e = _run_vector(engine, _vector_kernel("vexp", "f32", 3), d, None, np.float32, 3)
    assert np.isnan(e).sum() >= 1 and np.isnan(torch.softmax(torch.from_numpy(x), 0).numpy()).all()


@pytest.mark.parametrize("engine", ["reference", "numba"])
def test_signalling_nans_come_out_quiet_with_their_sign_and_payload(engine):
    for op in ("vexp", "vtanh", "vsigmoid", "vrelu", "vrsqrt"):
        got = _run_vector(engine, _vector_kernel(op, "f32", len(SNAN)), SNAN, None, np.float32, len(SNAN))
        assert list(got.view(np.uint32)) == [0x7FC00001, 0xFFC12345, 0x7FC00123], op
    got = _run_vector(engine, _vector_kernel("vcopy", "f32", len(SNAN)), SNAN, None, np.float32, len(SNAN))
    assert np.array_equal(got.view(np.uint32), SNAN.view(np.uint32))       # vcopy moves bits


def _vcvt_kernel(n, dt, dt2):
    return vnpu.assemble(f"""
.kernel k
.arg q, scalar, i64
    li r2, 0
    li r3, 65536
    li r4, {n}
    vcvt r3, r2, r4, r1, {dt}, {dt2}, s0
    wait s0, 1
    halt
""")


@pytest.mark.parametrize("engine", ["reference", "numba"])
def test_vcvt_quantizes_like_torch_quantize_per_tensor_bit_for_bit(engine):
    """One fp32 rounding of x * (1/scale) + zero_point, then round half to even: PyTorch's CPU result."""
    rng = np.random.default_rng(7)
    for scale, zp in ((0.1, 3), (0.0123, -7), (1 / 3, 1), (0.02, 127), (1e-3, 0), (0.5, 5), (0.25, -3)):
        x = np.concatenate([rng.standard_normal(4000).astype(np.float32) * 3,
                            (np.arange(-300, 300) * np.float32(scale) * 0.5).astype(np.float32),  # ties
                            np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30], np.float32)])
        inv = np.float32(1 / np.float32(scale))
        qreg = (zp << 32) | int(np.array([inv], np.float32).view(np.uint32)[0])
        card = Card("tiny")
        card.write_local(0, 0, x)
        card.launch(_vcvt_kernel(len(x), "f32", "i8"), "k", (qreg,), pes=(0,), engine=engine)
        got = card.read_local(0, 65536, len(x)).view(np.int8)
        fin = np.isfinite(x) | np.isinf(x)
        want = torch.quantize_per_tensor(torch.from_numpy(np.where(np.isnan(x), 0, x)), float(scale), zp,
                                         torch.qint8).int_repr().numpy()
        assert np.array_equal(got[fin], want[fin]), (engine, scale, zp, np.nonzero(got[fin] != want[fin])[0][:5])
        assert (got[np.isnan(x)] == 0).all()


@pytest.mark.parametrize("engine", ["reference", "numba"])
def test_fp32_matrix_products_are_exact_products_summed_in_float64(engine):
    rng = np.random.default_rng(3)
    M, K, N = 5, 37, 9
    a = (rng.standard_normal((M, K)) * 10.0 ** rng.integers(-8, 8, (M, K))).astype(np.float32)
    w = (rng.standard_normal((K, N)) * 10.0 ** rng.integers(-8, 8, (K, N))).astype(np.float32)
    a[0, 0], w[1, 2] = 7e4, 1e-8      # fp16 would turn these into inf and 0
    image = vnpu.assemble(f"""
.kernel k
    li r1, 0
    li r2, {K}
    li r3, {N}
    mm.ldw r1, r2, r3, f32, s0
    wait s0, 1
    li r4, 8192
    li r5, 65536
    li r6, {M}
    mm.mul r5, r4, r6, f32, set, s0
    wait s0, 1
    halt
""")
    card = Card("tiny")
    card.write_local(0, 0, w)
    card.write_local(0, 8192, a)
    card.launch(image, "k", (), pes=(0,), engine=engine)
    got = card.read_local(0, 65536, 4 * M * N).view(np.float32).reshape(M, N)
    want = (a.astype(np.float64) @ w.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=2 ** -23, atol=0)
    torch_want = (torch.from_numpy(a).double() @ torch.from_numpy(w).double()).float().numpy()
    np.testing.assert_allclose(got, torch_want, rtol=2 ** -22, atol=0)


SPIN = """
.kernel spin
loop_forever:
    addi r2, r2, 1
    jmp loop_forever
"""


@pytest.mark.parametrize("engine", ["reference", "numba"])
def test_a_runaway_launch_ends_with_launch_timeout_by_its_instruction_budget(engine):
    card = Card("tiny", {"watchdog_instructions": 200_000, "watchdog_cycles": 1 << 50})
    with pytest.raises(vnpu.LaunchTimeout, match="watchdog_instructions = 200000"):
        card.launch(vnpu.assemble(SPIN), "spin", (), pes=(0, 1, 2), engine=engine)
    card.launch(vnpu.assemble(".kernel ok\n halt"), "ok", (), pes=(0,), engine=engine)   # the card goes on


def test_the_reference_engine_stops_at_its_wall_clock_limit():
    card = Card("tiny", {"watchdog_instructions": 1 << 50, "watchdog_cycles": 1 << 50, "reference_timeout_s": 0.3})
    with pytest.raises(vnpu.LaunchTimeout, match="reference_timeout_s = 0.3"):
        card.launch(vnpu.assemble(SPIN), "spin", (), pes=(0,), engine="reference")


def test_the_default_budget_is_a_documented_config_key():
    from vnpu.emulator.config import load_config
    cfg = load_config("reference")
    assert cfg.watchdog_instructions == 200_000_000 and cfg.reference_timeout_s == 10.0
    text = open(__file__.rsplit("/tests/", 1)[0] + "/docs/timing.md").read()
    assert "watchdog_instructions" in text and "reference_timeout_s" in text


def test_a_race_names_the_first_shared_byte_and_both_accesses():
    """DRAM against DRAM: two DMAs write overlapping DRAM ranges with no wait between them."""
    card = Card("tiny")
    buf = card.alloc(4096)
    image = vnpu.assemble("""
.kernel k
.arg buf, buffer, u8
    li r2, 0
    li r3, 256
    addi r4, r1, 1000
    li r6, 1
    dma e0, r4, r2, r3, s0
    addi r5, r1, 1100
    dma e1, r5, r2, r3, s1
    wait s0, 1
    wait s1, 1
    halt
""")
    with pytest.raises(vnpu.RaceError) as e:
        card.launch(image, "k", (buf,), pes=(0,), sanitize=True)
    msg = str(e.value)
    assert e.value.address == buf + 1100, hex(e.value.address)
    assert f"byte 0x{buf + 1100:x} of DRAM" in msg
    assert f"[0x{buf + 1100:x}, 0x{buf + 1356:x})" in msg and f"[0x{buf + 1000:x}, 0x{buf + 1256:x})" in msg
    assert "PE 0, pc 4" in msg and "writes" in msg and "may still write" in msg


def test_host_memory_stays_with_the_bytes_written_whatever_the_order_of_allocations():
    """1 GiB then 4 KiB, written in the small one only: the big one costs no host memory (issue 13, item 9)."""
    code = """
import numpy as np
from vnpu.emulator.card import Card
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
card = Card("reference")
card.write(card.alloc(4096), np.ones(1024, np.float32))
before = rss()
big = card.alloc(1 << 30)
small = card.alloc(4096)
card.write(small, np.ones(1024, np.float32))
card.write(big + (1 << 29), np.ones(1024, np.float32))
card.free(big) if hasattr(card, "free") else None
again = card.alloc(1 << 30)
card.write(again, np.ones(16, np.float32))
print((rss() - before) >> 20)
"""
    grown_mib = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                   check=True).stdout.split()[-1])
    assert grown_mib < 64, f"host memory grew by {grown_mib} MiB"
