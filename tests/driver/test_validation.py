"""Argument validation of every public driver call (issue 13, item 12), as a class of defects.

Every public entry point is called with bad values of each kind (wrong type, bool, a float for an int, NaN,
+-inf, negative, 2**64, 10**400) and with dead or foreign handles (freed, unloaded, destroyed, from before a
reset, of another card or platform). For each call the test checks that
  (a) only the expected vnpu.VnpuError subclass escapes (never ValueError, OverflowError, TypeError, ...),
  (b) nothing changed: memory in use, modules, contexts, queues and their clocks, the host clock, link bytes,
      sticky faults, fault injectors, the bytes of a buffer,
  (c) the card still works afterwards (a copy round trip; at the end a launch).
Hypothesis then throws mixed values at the arguments with a numeric range (PEs, scalar kernel arguments,
copy offsets and dtypes, platform settings) and checks the same against an oracle written here, not taken
from driver/validate.py.
"""
import math
import os
from collections.abc import Hashable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import vnpu
from vnpu.driver import Buffer

ROOT = __file__.rsplit("/tests/", 1)[0]
KERNELS = vnpu.assemble(open(ROOT + "/examples/vector_add.s").read() + open(ROOT + "/examples/fill_crash.s").read()
                        + """
.kernel scal
.arg buf, buffer, f32
.arg n, scalar, i32
.arg s, scalar, f32
.arg h, scalar, f16
.arg u, scalar, u8
.arg w, scalar, i64
    halt
""")
F32_MAX = float(np.finfo(np.float32).max)


class Opaque:
    def __repr__(self):
        return "Opaque()"


BAD = {
    "wrong type": ["1", None, [1], {"a": 1}, Opaque(), b"\x01"],
    "bool": [True, False, np.bool_(True)],
    "float for int": [1.0, 0.5, np.float32(2.0)],
    "nan": [math.nan, np.float64("nan")],
    "inf": [math.inf, -math.inf],
    "negative": [-1, np.int64(-1), -2**63],
    "2**64": [2**64, np.uint64(2**64 - 1)],
    "10**400": [10**400, -10**400],
}
KINDS = list(BAD)


# --- independent oracles: what a valid value is -------------------------------------------------------------
def is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def is_number(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def int_ok(lo, hi):
    return lambda v: is_int(v) and lo <= int(v) <= hi


def _as_float(v):
    """v as a float, or None when it is not a number or too large for one."""
    if not is_number(v):
        return None
    try:
        return float(v)
    except OverflowError:
        return None


def f32_ok(v):
    f = _as_float(v)
    return f is not None and (not math.isfinite(f) or abs(f) <= F32_MAX)


def number_ok(lo, hi, lo_open=False, hi_open=False):
    def ok(v):
        f = _as_float(v)
        return f is not None and math.isfinite(f) and (f > lo if lo_open else f >= lo) and \
            (f < hi if hi_open else f <= hi)
    return ok


def pes_ok(v, npes=4):
    if v is None:
        return True
    if not isinstance(v, (list, tuple)) or not v:
        return False
    return all(is_int(p) and 0 <= int(p) < npes for p in v) and len({int(p) for p in v}) == len(v)


def never(v):
    return False


# --- the rig: one platform with live, dead and foreign handles ----------------------------------------------
class Rig:
    def __init__(self):
        self.p = vnpu.Platform(card="tiny", cards=2)
        self.p2 = vnpu.Platform(card="tiny", cards=1)
        self.d0, self.d1 = self.p.devices
        self.q0, self.q1 = self.d0.queue(), self.d1.queue()
        self.mod = self.d0.load(KERNELS)
        self.k = {n: self.mod[n] for n in ("vadd", "fill", "scal")}
        self.a = self.d0.alloc(4096)
        self.q0.copy_to_device(self.a, np.arange(4096, dtype=np.uint8))
        self.scratch = self.d0.alloc(64)
        self.b1 = self.d1.alloc(4096)
        self.e0 = self.q0.record()
        # dead handles
        self.freed = self.d0.alloc(64)
        self.freed.free()
        umod = self.d0.load(KERNELS)
        self.unloaded_kernel = umod["fill"]
        umod.unload()
        self.unloaded_module = umod
        self.dead_ctx = self.d0.create_context()
        self.ctx_buf = self.dead_ctx.alloc(64)
        self.ctx_queue = self.dead_ctx.queue()
        self.dead_ctx.destroy()
        self.dead_queue = self.d0.queue()
        self.dead_queue.destroy()
        self.before_reset = self.d1.alloc(64)
        self.d1.reset()
        self.b1 = self.d1.alloc(4096)
        # another card and another platform
        self.k1 = self.d1.load(KERNELS)["fill"]
        self.o_dev = self.p2.devices[0]
        self.o_buf = self.o_dev.alloc(64)
        self.o_queue = self.o_dev.queue()
        self.o_kernel = self.o_dev.load(KERNELS)["fill"]
        self.o_event = self.o_queue.record()
        self.queues = [self.q0, self.q1, self.dead_queue, self.ctx_queue, self.o_queue]

    def snapshot(self):
        s = {"host": (self.p.host_ns, self.p2.host_ns),
             "links": (self.p.switch.bytes_moved(), self.p2.switch.bytes_moved()),
             "queues": [(q.tail_ns, len(q._waits), q.destroyed, q._sanitize) for q in self.queues],
             "a": bytes(self.d0.card.read(self.a.device_address, 4096, ctx=0))}
        for d in self.p.devices + self.p2.devices:
            s[f"card{id(d)}"] = (d.card.dram_used, sum(d.card.shared_allocations.values()), len(d.card.modules),
                                 sorted(d.contexts), len(d._queues), d.generation, repr(d.sticky), d._lost,
                                 d.busy_until_ns, d.faults, d.faults and repr(d.faults.health()),
                                 repr(d.stats.kernels), d.card.launch_count)
        s["sanitize"] = (self.p.sanitize, self.p2.sanitize)
        return s

    def works(self):
        """A copy round trip on card 0 and on the other platform."""
        data = np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8)
        self.q0.copy_to_device(self.scratch, data)
        assert np.array_equal(self.q0.copy_to_host(self.scratch), data)
        self.q0.synchronize()
        self.o_queue.copy_to_device(self.o_buf, data)
        assert np.array_equal(self.o_queue.copy_to_host(self.o_buf), data)


@pytest.fixture(scope="module")
def rig():
    return Rig()


def check_refused(rig, call, expected):
    """call() must raise `expected` (a VnpuError subclass or a tuple of them) and change nothing."""
    before = rig.snapshot()
    try:
        call()
    except vnpu.VnpuError as e:
        assert isinstance(e, expected), f"{type(e).__name__}: {e} (expected {expected})"
        assert str(e), "the message must say what was wrong"
    except Exception as e:  # noqa: BLE001 - the class of defect under test
        pytest.fail(f"untyped {type(e).__name__} escaped: {e}")
    else:
        pytest.fail("the call was accepted")
    assert rig.snapshot() == before, "a failed call changed state"
    rig.works()


IA, CE, IH = vnpu.InvalidArgument, vnpu.ConfigError, vnpu.InvalidHandle
DATA = np.zeros(16, np.uint8)


def scal(r, n=1, s=1.0, h=1.0, u=1, w=1, **kw):
    return r.q0.launch(r.k["scal"], r.a, n, s, h, u, w, **kw)


# name, call(rig, value), expected error, valid(value): values the oracle calls valid (or that cannot be passed,
# like an unhashable mapping key) are skipped
VALUE_CALLS = [
    # the platform and its settings
    ("Platform(config)", lambda r, v: vnpu.Platform(v), CE, lambda v: v is None),
    ("Platform(cards)", lambda r, v: vnpu.Platform(card="tiny", cards=v), CE,
     lambda v: v is None or int_ok(1, 64)(v)),
    ("Platform(card)", lambda r, v: vnpu.Platform(card=v, cards=1), CE, lambda v: v is None),
    ("Platform(card_overrides)", lambda r, v: vnpu.Platform(card="tiny", cards=1, card_overrides=v), CE,
     lambda v: v is None),
    ("Platform(card_overrides pes)", lambda r, v: vnpu.Platform(card="tiny", cards=1, card_overrides={"pes": v}),
     CE, lambda v: (is_int(v) or isinstance(v, float) and v.is_integer()) and 1 <= v <= 64),
    ("Platform(sanitize)", lambda r, v: vnpu.Platform(card="tiny", cards=1, sanitize=v), CE,
     lambda v: v is None or isinstance(v, (bool, np.bool_))),
    ("platform poll_ns", lambda r, v: vnpu.Platform({"card": "tiny", "cards": 1, "poll_ns": v}), CE,
     number_ok(0, 2**63, lo_open=True, hi_open=True)),
    ("platform launch_overhead_ns", lambda r, v: vnpu.Platform({"card": "tiny", "cards": 1,
                                                                "launch_overhead_ns": v}), CE,
     number_ok(0, 2**63, hi_open=True)),
    ("platform link.setup_ns", lambda r, v: vnpu.Platform({"card": "tiny", "cards": 1, "link": {"setup_ns": v}}),
     CE, number_ok(0, 2**63, hi_open=True)),
    ("platform link.gen", lambda r, v: vnpu.Platform({"card": "tiny", "cards": 1, "link": {"gen": v}}), CE,
     lambda v: type(v) is int and v in (3, 4, 5)),
    ("platform uplink.lanes", lambda r, v: vnpu.Platform({"card": "tiny", "cards": 1, "uplink": {"lanes": v}}),
     CE, lambda v: type(v) is int and v in (1, 2, 4, 8, 16)),
    ("platform name", lambda r, v: vnpu.Platform({"card": "tiny", "cards": 1, "name": v}), CE,
     lambda v: isinstance(v, str)),
    ("platform faults seed", lambda r, v: vnpu.Platform({"card": "tiny", "cards": 1, "faults": {"all": {"seed": v}}}),
     CE, int_ok(0, 2**63 - 1)),
    ("platform faults key", lambda r, v: vnpu.Platform({"card": "tiny", "cards": 1, "faults": {v: {"seed": 1}}}),
     CE, lambda v: not isinstance(v, Hashable) or v == "all" or (is_int(v) and int(v) == 0)),
    ("Platform.from_yaml", lambda r, v: vnpu.Platform.from_yaml(v), CE, never),
    ("platform.write_trace", lambda r, v: r.p.write_trace(v), IA, lambda v: isinstance(v, str)),
    ("platform.advance_host", lambda r, v: r.p.advance_host(v), IA, number_ok(0, 2**63, hi_open=True)),
    # devices and contexts
    ("device.alloc(nbytes)", lambda r, v: r.d0.alloc(v), (IA, vnpu.OutOfMemory), never),
    ("device.alloc(memory)", lambda r, v: r.d0.alloc(64, memory=v), IA, never),
    ("context.alloc(nbytes)", lambda r, v: r.d0.primary.alloc(v), (IA, vnpu.OutOfMemory), never),
    ("device.load", lambda r, v: r.d0.load(v), (IA, vnpu.InvalidModule), never),
    ("device.queue(sanitize)", lambda r, v: r.d0.queue(sanitize=v), IA,
     lambda v: v is None or isinstance(v, (bool, np.bool_))),
    ("device.inject_faults(config)", lambda r, v: r.d0.inject_faults(v), (IA, CE), lambda v: v is None),
    *[(f"device.inject_faults({key})", (lambda key: lambda r, v: r.d0.inject_faults(**{key: v}))(key), CE, ok)
      for key, ok in [("seed", int_ok(0, 2**63 - 1)), ("pcie_error_rate", number_ok(0, 1)),
                      ("dram_dbe_per_mib", number_ok(0, 8 * 2**20)), ("pe_hang_rate", number_ok(0, 1)),
                      ("link_down_at_ns", number_ok(-2**63, 2**63, True, True))]],
    ("module[name]", lambda r, v: r.mod[v], IA, never),
    ("buffer.check(ctx)", lambda r, v: r.a.check(v), IA, lambda v: v is None),
    # queues: copies
    ("copy_to_device(buf)", lambda r, v: r.q0.copy_to_device(v, DATA), IA, never),
    ("copy_to_device(array)", lambda r, v: r.q0.copy_to_device(r.scratch, v), IA,
     lambda v: not isinstance(v, str) and v is not None and np.asarray(v).dtype != object),
    ("copy_to_device(offset)", lambda r, v: r.q0.copy_to_device(r.a, DATA, offset=v), IA, never),
    ("copy_to_host(buf)", lambda r, v: r.q0.copy_to_host(v), IA, never),
    ("copy_to_host(offset)", lambda r, v: r.q0.copy_to_host(r.a, offset=v), IA, never),
    ("copy_to_host(dtype)", lambda r, v: r.q0.copy_to_host(r.a, dtype=v), IA, lambda v: v is None),
    ("copy_to_host(out)", lambda r, v: r.q0.copy_to_host(r.a, out=v), IA, lambda v: v is None),
    ("copy_peer(dst)", lambda r, v: r.q0.copy_peer(v, r.b1), IA, never),
    ("copy_peer(src)", lambda r, v: r.q0.copy_peer(r.a, v), IA, never),
    ("copy_peer(nbytes)", lambda r, v: r.q0.copy_peer(r.a, r.b1, nbytes=v), IA, lambda v: v is None),
    ("copy_peer(dst_offset)", lambda r, v: r.q0.copy_peer(r.a, r.b1, dst_offset=v), IA, never),
    ("copy_peer(src_offset)", lambda r, v: r.q0.copy_peer(r.a, r.b1, src_offset=v), IA, never),
    # queues: launches, events
    ("launch(kernel)", lambda r, v: r.q0.launch(v), IA, never),
    ("launch(buffer arg)", lambda r, v: r.q0.launch(r.k["fill"], v, 1), IA, never),
    ("launch(i32 arg)", lambda r, v: scal(r, n=v), IA, int_ok(-2**31, 2**31 - 1)),
    ("launch(f32 arg)", lambda r, v: scal(r, s=v), IA, f32_ok),
    ("launch(f16 arg)", lambda r, v: scal(r, h=v), IA, f32_ok),
    ("launch(u8 arg)", lambda r, v: scal(r, u=v), IA, int_ok(0, 255)),
    ("launch(i64 arg)", lambda r, v: scal(r, w=v), IA, int_ok(-2**63, 2**63 - 1)),
    ("launch(pes)", lambda r, v: scal(r, pes=v), IA, pes_ok),
    ("launch(pes=[v])", lambda r, v: scal(r, pes=[v]), IA, lambda v: pes_ok([v])),
    ("launch(pes=[0, v])", lambda r, v: scal(r, pes=(0, v)), IA, lambda v: pes_ok([0, v])),
    ("launch(sanitize)", lambda r, v: scal(r, sanitize=v), IA, lambda v: v is None or isinstance(v, (bool, np.bool_))),
    ("queue.wait", lambda r, v: r.q0.wait(v), IA, never),
    ("event.elapsed_ns", lambda r, v: r.e0.elapsed_ns(v), IA, never),
]


def value_cases():
    for name, call, expected, valid in VALUE_CALLS:
        for kind in KINDS:
            values = [v for v in BAD[kind] if not valid(v)]
            if values:
                yield pytest.param(call, expected, values, id=f"{name}-{kind}")


@pytest.mark.parametrize("call, expected, values", list(value_cases()))
def test_bad_values_are_refused_and_change_nothing(rig, call, expected, values, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)            # a path-like bad value must not land in the source tree
    monkeypatch.delenv("VNPU_SANITIZE", raising=False)
    for v in values:
        check_refused(rig, lambda: call(rig, v), expected)
    assert os.listdir(tmp_path) == []


# dead and foreign handles: name, call(rig), expected
HANDLE_CALLS = [
    *[(f"copy_to_device({h})", (lambda h: lambda r: r.q0.copy_to_device(getattr(r, h), DATA))(h), IH)
      for h in ("freed", "ctx_buf", "b1", "o_buf")],
    *[(f"copy_to_host({h})", (lambda h: lambda r: r.q0.copy_to_host(getattr(r, h)))(h), IH)
      for h in ("freed", "ctx_buf", "b1", "o_buf")],
    ("copy_to_device(before reset)", lambda r: r.q1.copy_to_device(r.before_reset, DATA), IH),
    *[(f"copy_peer(dst={h})", (lambda h: lambda r: r.q0.copy_peer(getattr(r, h), r.b1))(h), IH)
      for h in ("freed", "ctx_buf", "b1", "o_buf")],
    *[(f"copy_peer(src={h})", (lambda h: lambda r: r.q0.copy_peer(r.a, getattr(r, h)))(h), IH)
      for h in ("freed", "ctx_buf", "before_reset")],
    ("copy_peer(src of another platform)", lambda r: r.q0.copy_peer(r.a, r.o_buf), IA),
    *[(f"launch(buffer {h})", (lambda h: lambda r: r.q0.launch(r.k["fill"], getattr(r, h), 1))(h), IH)
      for h in ("freed", "ctx_buf", "b1", "o_buf")],
    *[(f"launch(kernel {k})", (lambda k: lambda r: r.q0.launch(getattr(r, k), r.a, 1))(k), IH)
      for k in ("unloaded_kernel", "k1", "o_kernel")],
    ("wait(event of another platform)", lambda r: r.q0.wait(r.o_event), IH),
    ("elapsed_ns(event of another platform)", lambda r: r.e0.elapsed_ns(r.o_event), IH),
    ("elapsed_ns from another platform", lambda r: r.o_event.elapsed_ns(r.e0), IH),
    ("buffer.free(freed)", lambda r: r.freed.free(), IH),
    ("buffer.free(destroyed context)", lambda r: r.ctx_buf.free(), IH),
    ("buffer.free(before reset)", lambda r: r.before_reset.free(), IH),
    ("buffer.check(ctx of another card)", lambda r: r.a.check(r.d1.primary), IH),
    ("module.unload(unloaded)", lambda r: r.unloaded_module.unload(), IH),
    ("module[name] (unloaded)", lambda r: r.unloaded_module["fill"], IH),
    ("context.destroy(destroyed)", lambda r: r.dead_ctx.destroy(), IH),
    ("context.alloc(destroyed)", lambda r: r.dead_ctx.alloc(64), IH),
    ("context.load(destroyed)", lambda r: r.dead_ctx.load(KERNELS), IH),
    ("context.queue(destroyed)", lambda r: r.dead_ctx.queue(), IH),
    ("queue of a destroyed context: record", lambda r: r.ctx_queue.record(), IH),
    ("queue of a destroyed context: copy", lambda r: r.ctx_queue.copy_to_device(r.ctx_buf, DATA), IH),
    *[(f"destroyed queue: {name}", call, IH) for name, call in [
        ("record", lambda r: r.dead_queue.record()),
        ("wait", lambda r: r.dead_queue.wait(r.e0)),
        ("synchronize", lambda r: r.dead_queue.synchronize()),
        ("destroy", lambda r: r.dead_queue.destroy()),
        ("copy_to_device", lambda r: r.dead_queue.copy_to_device(r.a, DATA)),
        ("copy_to_host", lambda r: r.dead_queue.copy_to_host(r.a)),
        ("copy_peer", lambda r: r.dead_queue.copy_peer(r.a, r.b1)),
        ("launch", lambda r: r.dead_queue.launch(r.k["fill"], r.a, 1))]],
]


@pytest.mark.parametrize("call, expected", [pytest.param(c, e, id=n) for n, c, e in HANDLE_CALLS])
def test_dead_and_foreign_handles_are_refused_and_change_nothing(rig, call, expected):
    check_refused(rig, lambda: call(rig), expected)


def test_the_audit_cases():
    """The examples issue 13 named, one by one."""
    p = vnpu.Platform(card="tiny", cards=1)
    dev = p.devices[0]
    q = dev.queue()
    k = dev.load(KERNELS)["scal"]
    b = dev.alloc(64)
    for pes in (["x"], [math.nan], [math.inf], [0.9], [True]):
        with pytest.raises(vnpu.InvalidArgument, match=r"pes\[0\]"):
            q.launch(k, b, 1, 1.0, 1.0, 1, 1, pes=pes)
    with pytest.raises(vnpu.InvalidArgument, match="dtype"):
        q.copy_to_host(b, dtype="i4,,")
    with pytest.raises(vnpu.InvalidArgument, match="dtype"):
        q.copy_to_host(b, dtype={"names": ["a", "b"], "formats": ["i4", "i4"], "offsets": [0, -4], "itemsize": 8})
    with pytest.raises(vnpu.ConfigError, match="directory"):
        vnpu.Platform(card="/tmp")
    for key in ("poll_ns", "launch_overhead_ns"):
        with pytest.raises(vnpu.ConfigError, match=key):
            vnpu.Platform({"card": "tiny", key: 10**400})
    with pytest.raises(vnpu.ConfigError, match="card_overrides"):
        vnpu.Platform(card="tiny", card_overrides={"pes": 10**400})
    for key in ("seed", "pcie_error_rate", "link_down_at_ns", "dram_sbe_per_mib", "dram_dbe_per_mib",
                "pe_hang_rate", "dma_error_rate"):
        with pytest.raises(vnpu.ConfigError, match=key):
            dev.inject_faults(**{key: 10**400})
    with pytest.raises(vnpu.ConfigError, match="my_platform.yaml"):
        vnpu.Platform("my_platform.yaml")
    with pytest.raises(vnpu.InvalidArgument, match="does not fit an f32"):
        q.launch(k, b, 1, 1e300, 1.0, 1, 1)
    with pytest.raises(vnpu.InvalidHandle, match="another platform"):
        q.wait(vnpu.Platform(card="tiny", cards=1).devices[0].queue().record())
    with pytest.raises(vnpu.InvalidArgument, match="load"):
        dev.load(5)


def test_a_positional_platform_path_is_opened(tmp_path):
    f = tmp_path / "my_platform.yaml"
    f.write_text("cards: 2\ncard: tiny\n")
    for arg in (f, str(f)):
        p = vnpu.Platform(arg)
        assert len(p.devices) == 2 and p.devices[0].config.pes == 4
    assert len(vnpu.Platform(f, cards=1).devices) == 1          # keyword arguments override the file
    assert len(vnpu.Platform.from_yaml(f, cards=1).devices) == 1


def test_nan_and_inf_pass_to_a_float_argument_as_in_the_c_api(rig):
    for v in (math.nan, math.inf, -math.inf, F32_MAX, -F32_MAX, np.float32(3.0), 7, 2**64):
        scal(rig, s=v, h=v)
    rig.q0.synchronize()


def test_the_card_still_computes_after_all_that(rig):
    n = 1000
    x = np.arange(n, dtype=np.float32)
    bufs = [rig.d0.alloc(4 * n) for _ in range(3)]
    rig.q0.copy_to_device(bufs[0], x)
    rig.q0.copy_to_device(bufs[1], x)
    rig.q0.launch(rig.k["vadd"], *bufs, n)
    assert np.array_equal(rig.q0.copy_to_host(bufs[2], dtype=np.float32), 2 * x)
    rig.q0.synchronize()
    for b in bufs:
        b.free()


# --- hypothesis: mixed values against the oracles above -----------------------------------------------------
JUNK = st.one_of(st.integers(-2**70, 2**70), st.integers(-3, 6), st.floats(allow_nan=True, allow_infinity=True),
                 st.booleans(), st.none(), st.text(max_size=3), st.just(10**400))
SCALE = float(os.environ.get("VNPU_FUZZ_SCALE", "1"))
SEED = os.environ.get("VNPU_FUZZ_SEED")


def campaign(examples):
    """Deterministic by default; VNPU_FUZZ_SEED picks other examples, VNPU_FUZZ_SCALE runs more of them."""
    def wrap(fn):
        fn = settings(max_examples=max(1, int(examples * SCALE)), deadline=None, database=None,
                      derandomize=SEED is None, suppress_health_check=[HealthCheck.function_scoped_fixture])(fn)
        return seed(int(SEED))(fn) if SEED is not None else fn
    return wrap


FAST = campaign(60)


def attempt(rig, call, valid, expected):
    """The oracle says valid: the call succeeds. Otherwise: `expected` and nothing changed."""
    if valid:
        call()
    else:
        check_refused(rig, call, expected)


@FAST
@given(pes=st.one_of(st.none(), st.lists(st.one_of(st.integers(-2, 5), JUNK), max_size=5),
                     st.tuples(st.integers(0, 3), st.integers(0, 3)), JUNK))
def test_launch_pes(rig, pes):
    attempt(rig, lambda: scal(rig, pes=pes), pes_ok(pes), IA)


@FAST
@given(n=JUNK, s=JUNK, u=JUNK, w=JUNK)
def test_launch_scalar_arguments(rig, n, s, u, w):
    valid = int_ok(-2**31, 2**31 - 1)(n) and f32_ok(s) and int_ok(0, 255)(u) and int_ok(-2**63, 2**63 - 1)(w)
    attempt(rig, lambda: scal(rig, n=n, s=s, h=s, u=u, w=w), valid, IA)


@FAST
@given(offset=st.one_of(st.integers(-10, 5000), JUNK),
       dtype=st.one_of(st.none(), st.sampled_from(["u1", "i4", "f8", "<f4", "i4,i4", "(2,)i2", "V3", "S0", "O",
                                                   "i4,,", "x", "", "M8[s]", "U1"]), st.text(max_size=4)))
def test_copy_to_host_offset_and_dtype(rig, offset, dtype):
    before = rig.snapshot()
    try:
        out = rig.q0.copy_to_host(rig.a, offset=offset, dtype=dtype)
    except vnpu.VnpuError as e:
        assert isinstance(e, IA), repr(e)
        assert rig.snapshot() == before
        return
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"untyped {type(e).__name__}: {e}")
    assert is_int(offset) and 0 <= offset <= 4096, offset
    assert out.tobytes() == np.arange(4096, dtype=np.uint8)[offset:].tobytes()


@campaign(40)
@given(data=st.fixed_dictionaries({}, optional={
    "cards": JUNK, "poll_ns": JUNK, "launch_overhead_ns": JUNK, "sanitize": JUNK,
    "card_overrides": st.dictionaries(st.sampled_from(["pes", "clock_ghz", "matrix.rows", "bogus"]), JUNK,
                                      max_size=2),
    "link": st.dictionaries(st.sampled_from(["gen", "lanes", "setup_ns", "dllp_overhead"]), JUNK, max_size=2),
    "faults": st.dictionaries(st.sampled_from(["all", 0, 1, 7, True]),
                              st.dictionaries(st.sampled_from(["seed", "pe_hang_rate", "link_down_at_ns"]), JUNK,
                                              max_size=2), max_size=2)}))
def test_platform_settings(data):
    """Any mixture of settings opens a platform or is a ConfigError; nothing else escapes."""
    try:
        p = vnpu.Platform({"card": "tiny", **data})
    except vnpu.ConfigError as e:
        assert str(e)
        return
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"untyped {type(e).__name__}: {e}")
    assert 1 <= len(p.devices) <= 64


def test_more_cases_found_by_probing(rig, tmp_path):
    """Found while probing the calls above with odd objects."""
    class IntPath:
        def __fspath__(self):
            return 5
    check_refused(rig, lambda: rig.p.write_trace(IntPath()), IA)          # os.fspath -> TypeError before
    check_refused(rig, lambda: vnpu.Platform.from_yaml(IntPath()), CE)
    check_refused(rig, lambda: rig.d0.load(IntPath()), IA)
    # device bytes are not valid code points: a unicode array filled from the card breaks numpy later
    check_refused(rig, lambda: rig.q0.copy_to_host(rig.a, out=np.zeros(4, "U1")), IA)
    check_refused(rig, lambda: rig.q0.copy_to_host(rig.a, dtype="U1"), IA)
    check_refused(rig, lambda: rig.q0.copy_to_host(rig.a, dtype=[("x", "U1"), ("y", "i4")]), IA)
    check_refused(rig, lambda: rig.q0.copy_to_host(rig.a, dtype=np.float32(1)), IA)   # numpy takes its type
    check_refused(rig, lambda: rig.q0.copy_to_host(rig.a, out=np.zeros(4, np.uint8), dtype="f4"), IA)
    check_refused(rig, lambda: rig.k["fill"].encode_args(rig.d0.primary, 5), IA)
    check_refused(rig, lambda: rig.k["fill"].encode_args("ctx", (rig.a, 1)), IA)
    for faults in ([], 0, "", False):
        check_refused(rig, lambda: vnpu.Platform({"card": "tiny", "faults": faults}), CE)
    one = np.zeros((), np.int32)                                       # a 0-d out array is filled in place
    assert rig.q0.copy_to_host(rig.a, out=one, offset=4) is one and int(one) == int.from_bytes(bytes(range(4, 8)),
                                                                                               "little")
    path = tmp_path / "trace.json"
    rig.p.write_trace(path)
    assert path.exists()
