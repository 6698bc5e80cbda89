"""The driver test suite: every call's success and error paths, on a small platform."""
import os
import threading

import numpy as np
import pytest

import vnpu
from vnpu.driver import Buffer, Event

ROOT = __file__.rsplit("/tests/", 1)[0]
KERNELS = vnpu.assemble(open(ROOT + "/examples/vector_add.s").read() + open(ROOT + "/examples/fill_crash.s").read()
                        + """
.kernel scale
.arg buf, buffer, f32
.arg n, scalar, i32
.arg s, scalar, f32
    halt
""")


@pytest.fixture
def platform():
    return vnpu.Platform(card="tiny", cards=3)


@pytest.fixture
def dev(platform):
    return platform.devices[0]


def test_default_platform_has_six_reference_cards_behind_a_switch():
    p = vnpu.Platform()
    assert len(p.devices) == 6
    props = p.devices[0].properties
    assert props["pes"] == 12 and props["dram_bytes"] == 16 * 2**30 and props["link"]["lanes"] == 4
    assert props["dram_used"] == 0 and props["dram_free"] == props["dram_bytes"]
    assert p.config["uplink"]["lanes"] == 16


def test_platform_from_yaml_and_bad_config(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("cards: 2\ncard: tiny\nlink: {gen: 4, lanes: 4, max_payload: 128}\n")
    p = vnpu.Platform.from_yaml(f)
    assert len(p.devices) == 2 and p.config["link"]["gen"] == 4 and p.devices[0].config.pes == 4
    for text, match in [("cards: 0\n", "'cards'"), ("cardz: 2\n", "unknown platform key 'cardz'"),
                        ("link: {gen: 7}\n", "gen"), ("link: {speed: 1}\n", "link.speed"),
                        ("card: nothere\n", "no card config")]:
        f.write_text(text)
        with pytest.raises(vnpu.ConfigError, match=match):
            vnpu.Platform.from_yaml(f)
    with pytest.raises(vnpu.ConfigError, match="cannot read"):
        vnpu.Platform.from_yaml(tmp_path / "missing.yaml")


def test_alloc_copy_launch_copy_back(dev):
    q = dev.queue()
    k = dev.load(KERNELS)["vadd"]
    n = 3000
    a, b = np.arange(n, dtype=np.float32), np.ones(n, np.float32)
    A, B, O = dev.alloc(a.nbytes), dev.alloc(b.nbytes), dev.alloc(a.nbytes)
    assert dev.properties["dram_used"] == 3 * 65536
    q.copy_to_device(A, a)
    q.copy_to_device(B, b)
    q.launch(k, A, B, O, n)
    out = q.copy_to_host(O, dtype=np.float32)
    q.synchronize()
    assert np.array_equal(out, a + b)
    filled = np.empty(n, np.float32)
    assert q.copy_to_host(O, out=filled) is filled and np.array_equal(filled, a + b)


def test_events_and_virtual_time(platform, dev):
    q = dev.queue()
    buf = dev.alloc(1 << 20)
    start = q.record()
    q.copy_to_device(buf, np.zeros(1 << 20, np.uint8))
    end = q.record()
    mib_ns = end.elapsed_ns(start)
    link = platform.switch.cards[0].config
    assert mib_ns == pytest.approx(link.transfer_ns(1 << 20, "h2d"), rel=1e-9)
    assert platform.host_ns < end.time_ns
    end.synchronize()
    assert platform.host_ns == end.time_ns and end.query()
    with pytest.raises(vnpu.InvalidArgument):
        end.elapsed_ns(5)


def test_queues_overlap_and_cross_card_waits(platform):
    d0, d1 = platform.devices[0], platform.devices[1]
    q0, q1 = d0.queue(), d1.queue()
    b0, b1 = d0.alloc(1 << 20), d1.alloc(1 << 20)
    data = np.zeros(1 << 20, np.uint8)
    e0 = q0.copy_to_device(b0, data)
    e1 = q1.copy_to_device(b1, data)
    assert e0.time_ns == e1.time_ns          # two cards' links work in parallel
    q1.wait(e0)
    e2 = q1.copy_to_device(b1, data)
    assert e2.time_ns > e1.time_ns and isinstance(e2, Event)
    q_same = d0.queue()                       # a second queue on card 0 shares its link
    e3 = q_same.copy_to_device(b0, data)
    assert e3.time_ns > e0.time_ns


def test_copy_peer_goes_through_the_switch_not_the_host(platform):
    d0, d1 = platform.devices[0], platform.devices[1]
    src, dst = d0.alloc(4096), d1.alloc(4096)
    d0.queue().copy_to_device(src, np.arange(1024, dtype=np.int32))
    q = d1.queue()
    up_before = platform.switch.bytes_moved()["uplink"]
    q.copy_peer(dst, src)
    assert platform.switch.bytes_moved()["uplink"] == up_before
    assert np.array_equal(q.copy_to_host(dst, dtype=np.int32), np.arange(1024))


def test_use_after_free_double_free_and_foreign_buffers(platform, dev):
    q = dev.queue()
    buf = dev.alloc(64)
    buf.free()
    with pytest.raises(vnpu.InvalidHandle, match="was freed"):
        q.copy_to_device(buf, np.zeros(8, np.uint8))
    with pytest.raises(vnpu.InvalidHandle, match="was freed"):
        buf.free()
    other = platform.devices[1].alloc(64)
    with pytest.raises(vnpu.InvalidHandle, match="belongs to card 1, not card 0"):
        q.copy_to_host(other)
    ctx = dev.create_context()
    theirs = ctx.alloc(64)
    with pytest.raises(vnpu.InvalidHandle, match="belongs to context"):
        q.copy_to_host(theirs)
    ctx.destroy()
    with pytest.raises(vnpu.InvalidHandle):
        ctx.alloc(64)


def test_copy_past_the_end_changes_nothing(dev):
    q = dev.queue()
    buf = dev.alloc(16)
    q.copy_to_device(buf, np.arange(4, dtype=np.int32))
    t = q.tail_ns
    with pytest.raises(vnpu.InvalidArgument, match="do not fit"):
        q.copy_to_device(buf, np.arange(32, dtype=np.int32), offset=0)
    with pytest.raises(vnpu.InvalidArgument, match="run past"):
        q.copy_to_host(buf, out=np.empty(8, np.int32), offset=8)
    assert q.tail_ns == t
    assert list(q.copy_to_host(buf, dtype=np.int32)[:4]) == [0, 1, 2, 3]


def test_launch_argument_checks(dev):
    q = dev.queue()
    mod = dev.load(KERNELS)
    out = dev.alloc(8)
    with pytest.raises(vnpu.InvalidArgument, match="takes 2 arguments"):
        q.launch(mod["fill"], out)
    with pytest.raises(vnpu.InvalidArgument, match="must be a Buffer"):
        q.launch(mod["fill"], 1234, 5)
    with pytest.raises(vnpu.InvalidArgument, match="is a scalar, got a Buffer"):
        q.launch(mod["fill"], out, out)
    with pytest.raises(vnpu.InvalidArgument, match="must be an integer"):
        q.launch(mod["fill"], out, 1.5)
    with pytest.raises(vnpu.InvalidArgument, match="no kernel"):
        mod["nope"]
    with pytest.raises(vnpu.InvalidArgument, match="pes"):
        q.launch(mod["fill"], out, 1, pes=[0, 99])
    with pytest.raises(vnpu.InvalidArgument, match="needs a Kernel"):
        q.launch("fill", out, 1)
    q.launch(mod["scale"], out, 3, 0.5)           # a float scalar
    q.launch(mod["fill"], out, -7, pes=[1])
    assert q.copy_to_host(out, dtype=np.int64)[0] == -7


def test_faulting_kernel_is_sticky_until_reset(platform, dev):
    q = dev.queue()
    mod = dev.load(KERNELS)
    out = dev.alloc(8)
    q.launch(mod["crash"], out)                    # asynchronous: the fault shows on the next call
    with pytest.raises(vnpu.IllegalAddress) as e:
        q.synchronize()
    assert e.value.card == 0 and e.value.pc == mod["crash"].symbol.entry + 1 and "lw" in e.value.instruction
    with pytest.raises(vnpu.IllegalAddress):
        dev.alloc(8)                               # sticky
    other = platform.devices[1]                    # other cards keep working
    ob = other.alloc(8)
    other.queue().launch(other.load(KERNELS)["fill"], ob, 5)
    assert other.queue().copy_to_host(ob, dtype=np.int64)[0] == 5
    dev.reset()
    with pytest.raises(vnpu.InvalidHandle, match="reset"):
        out.free()                                 # handles from before the reset
    with pytest.raises(vnpu.InvalidHandle):
        mod["fill"]
    out2 = dev.alloc(8)
    q.launch(dev.load(KERNELS)["fill"], out2, 9)
    assert q.copy_to_host(out2, dtype=np.int64)[0] == 9


def test_out_of_memory_then_smaller_allocations_succeed(dev):
    total = dev.properties["dram_bytes"]
    with pytest.raises(vnpu.OutOfMemory) as e:
        dev.alloc(total + 1)
    assert e.value.requested == total + 1 and e.value.free == total
    big = dev.alloc(total // 2)
    with pytest.raises(vnpu.OutOfMemory):
        dev.alloc(total // 2 + 65536)
    small = [dev.alloc(1000) for _ in range(10)]
    assert all(isinstance(b, Buffer) for b in small)
    big.free()
    dev.alloc(total // 4)
    with pytest.raises(vnpu.InvalidArgument):
        dev.alloc(0)


def test_module_load_errors_and_unload(dev, tmp_path):
    with pytest.raises(vnpu.InvalidModule):
        dev.load(b"not a module")
    path = tmp_path / "k.vnpu"
    path.write_bytes(KERNELS)
    mod = dev.load(str(path))
    k = mod["fill"]
    mod.unload()
    with pytest.raises(vnpu.InvalidHandle, match="unloaded"):
        dev.queue().launch(k, dev.alloc(8), 1)
    with pytest.raises(vnpu.InvalidArgument, match="cannot read"):
        dev.load(str(tmp_path / "missing.vnpu"))


def test_contexts_are_isolated(dev):
    ctx = dev.create_context()
    mine = dev.alloc(8)
    q = dev.queue()
    q.copy_to_device(mine, np.array([123], np.int64))
    theirs_mod = ctx.load(KERNELS)
    with pytest.raises(vnpu.InvalidHandle, match="context"):
        ctx.queue().launch(theirs_mod["fill"], mine, 1)     # a buffer of another context
    with pytest.raises(vnpu.InvalidHandle):
        q.launch(theirs_mod["fill"], mine, 1)               # a module of another context
    assert q.copy_to_host(mine, dtype=np.int64)[0] == 123


def test_closed_platform_is_device_lost(platform, dev):
    platform.close()
    with pytest.raises(vnpu.DeviceLost):
        dev.alloc(8)


def test_threads_on_several_cards(platform):
    errors = []

    def work(d):
        try:
            q = d.queue()
            k = d.load(KERNELS)["fill"]
            for i in range(20):
                b = d.alloc(8)
                q.launch(k, b, i * 10 + d.index)
                assert q.copy_to_host(b, dtype=np.int64)[0] == i * 10 + d.index
                b.free()
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=work, args=(d,)) for d in platform.devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)


def test_platform_trace_has_host_links_queues_and_units(platform, dev, tmp_path):
    import json
    platform.start_trace()
    q = dev.queue()
    out = dev.alloc(8)
    q.launch(dev.load(KERNELS)["fill"], out, 1)
    q.copy_to_host(out)
    platform.stop_trace()
    path = platform.write_trace(str(tmp_path / "t.json"))
    events = json.loads(open(path).read())["traceEvents"]
    names = {e["args"]["name"] for e in events if e.get("ph") == "M" and e["name"] in ("process_name",
                                                                                       "thread_name")}
    assert {"host", "PCIe", "card 0", "card0 up", "uplink up", "PE 0"} <= names
    assert any(e["name"] == "fill" and e["ph"] == "X" for e in events)
    assert any(e["name"] == "d2h" for e in events)
    assert any(e["pid"] == 0 and e["ph"] == "i" and "launch: fill" in e["name"] for e in events)   # host calls


def test_info_command(capsys):
    from vnpu.cli import main
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "6 cards" in out and "PCIe Gen3 x4" in out and "16.0 GiB" in out
    assert main(["info", "--json"]) == 0
    import json
    info = json.loads(capsys.readouterr().out)
    assert len(info["platform"]["cards"]) == 6


def test_queue_destroy_forgets_the_queue():
    p = vnpu.Platform(card="tiny", cards=1)
    dev = p.devices[0]
    q = dev.queue()
    buf = dev.alloc(64)
    q.copy_to_device(buf, np.zeros(16, np.float32))
    q.destroy()
    assert q not in dev._queues
    with pytest.raises(vnpu.InvalidHandle, match="destroyed"):
        q.copy_to_device(buf, np.zeros(16, np.float32))
    dev.synchronize()                     # does not visit the destroyed queue


def test_copy_peer_refuses_a_buffer_of_another_platform():
    p1, p2 = vnpu.Platform(card="tiny", cards=1), vnpu.Platform(card="tiny", cards=1)
    a, b = p1.devices[0].alloc(64), p2.devices[0].alloc(64)
    q = p1.devices[0].queue()
    q.copy_to_device(a, np.arange(64, dtype=np.uint8))
    with pytest.raises(vnpu.InvalidArgument, match="another platform"):
        q.copy_peer(a, b)
    assert np.array_equal(q.copy_to_host(a), np.arange(64, dtype=np.uint8))   # nothing written


@pytest.mark.parametrize("text, match", [("", "empty file"), ("5\n", "int"), ("- 1\n- 2\n", "list"),
                                         ("cards: 2\nfaults: {all: 5}\n", "faults.all"),
                                         ("launch_overhead_ns: .nan\n", "launch_overhead_ns")])
def test_platform_yaml_that_is_not_a_config_is_a_config_error(tmp_path, text, match):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(vnpu.ConfigError, match=match):
        vnpu.Platform.from_yaml(path)


def test_platform_yaml_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_bytes(b"cards: 2 # caf\xe9\n")
    with pytest.raises(vnpu.ConfigError, match="UTF-8"):
        vnpu.Platform.from_yaml(path)


def test_inject_faults_needs_a_mapping():
    dev = vnpu.Platform(card="tiny", cards=1).devices[0]
    with pytest.raises(vnpu.InvalidArgument, match="FaultConfig"):
        dev.inject_faults(5)


def test_polling_an_event_until_ready_ends():
    """Each 'not ready' moves the host's clock by poll_ns, as the host's own time passes between polls."""
    p = vnpu.Platform(card="tiny", cards=1, card_overrides=None)
    dev = p.devices[0]
    q = dev.queue()
    buf = dev.alloc(1 << 20)
    q.copy_to_device(buf, np.zeros(1 << 20, np.uint8))
    end = q.record()
    polls = 0
    while not end.query():
        polls += 1
        assert polls < 10_000
    assert p.host_ns >= end.time_ns
    assert polls == pytest.approx(end.time_ns / p.config["poll_ns"], abs=1)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads the resident set size from /proc")
@pytest.mark.parametrize("sizes", [(1 << 30, 4096), (4096, 1 << 30), (1 << 30, 1 << 30, 4096)])
def test_host_memory_follows_bytes_written_not_bytes_allocated(sizes):
    """Issue 13 item 9 through the driver: a large allocation, then a small one (or the other way round),
    must not cost the large one's size in host RAM; only the bytes written do."""
    def rss_mib():
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    dev = vnpu.Platform(card="reference", cards=1).devices[0]
    q = dev.queue()
    page = np.ones(4096, np.uint8)
    warm = dev.alloc(4096)                       # compiled copy paths and first-use costs out of the way
    q.copy_to_device(warm, page)
    q.copy_to_host(warm)
    before = rss_mib()
    bufs = [dev.alloc(n) for n in sizes]
    for b in bufs:                               # write the first and the last page of each
        q.copy_to_device(b, page)
        q.copy_to_device(b, page, offset=b.nbytes - 4096)
        assert np.array_equal(q.copy_to_host(b, offset=b.nbytes - 4096), page)
    q.synchronize()
    grown = rss_mib() - before
    assert grown < 64, f"{grown:.0f} MiB of host memory for {8 * len(sizes)} KiB written"
    for b in bufs:
        b.free()


def test_device_state_through_its_methods(platform, dev):
    """is_lost / fault are read-only; lose, set_fault and reset are the only ways to change them."""
    assert dev.is_lost is False and dev.fault is None and dev.lost_reason is None
    for name in ("is_lost", "fault", "sticky"):
        with pytest.raises(AttributeError):
            setattr(dev, name, None)
    err = vnpu.DmaFault("test fault", card=dev.index)
    assert dev.set_fault(err) is err and dev.fault is err and dev.sticky is err
    with pytest.raises(vnpu.DmaFault):
        dev.alloc(8)
    assert dev.health()["sticky"].startswith("DmaFault: test fault")
    with pytest.raises(vnpu.InvalidArgument):
        dev.set_fault("not an error")
    dev.reset()
    assert dev.fault is None and dev.alloc(8) is not None
    other = platform.devices[1]
    lost = other.lose("unplugged")
    assert isinstance(lost, vnpu.DeviceLost) and other.is_lost and other.lost_reason == "unplugged"
    with pytest.raises(vnpu.DeviceLost, match="unplugged"):
        other.alloc(8)
    with pytest.raises(vnpu.DeviceLost):
        other.reset()
    with pytest.raises(vnpu.InvalidArgument):
        dev.lose("")
    assert not dev.is_lost and platform.devices[2].health()["lost"] is None


def test_platform_reset_clock_rewinds_every_clock(platform, dev):
    q = dev.queue()
    mod = dev.load(KERNELS)
    out = dev.alloc(8)
    q.copy_to_device(out, np.zeros(2, np.int32))
    q.launch(mod["fill"], out, 5)
    q2 = platform.devices[1].queue()
    q2.copy_to_device(platform.devices[1].alloc(4096), np.zeros(1024, np.int32))
    q.synchronize()
    assert platform.host_ns > 0 and q.tail_ns > 0 and dev.busy_until_ns > 0 and q2.tail_ns > 0
    moved = platform.switch.bytes_moved()
    platform.reset_clock()
    assert platform.host_ns == 0 and q.tail_ns == 0 and q2.tail_ns == 0 and dev.busy_until_ns == 0
    assert all(link.busy_until == {"up": 0.0, "down": 0.0} for link in (platform.switch.uplink,
                                                                         *platform.switch.cards))
    assert platform.switch.bytes_moved() == moved          # counters are not clocks
    with pytest.raises(AttributeError):
        platform.host_ns = 1.0
    # the same work from 0 takes the same virtual time as on a fresh platform
    fresh = vnpu.Platform(card="tiny", cards=3)
    fd = fresh.devices[0]
    fq, fo = fd.queue(), fd.alloc(8)
    fmod = fd.load(KERNELS)
    for qq, o, m in ((q, out, mod), (fq, fo, fmod)):
        qq.copy_to_device(o, np.zeros(2, np.int32))
        qq.launch(m["fill"], o, 5)
    assert q.record().time_ns == fq.record().time_ns


def test_clocks_are_read_only_from_outside(dev):
    q = dev.queue()
    for obj, name in ((q, "tail_ns"), (dev, "busy_until_ns")):
        with pytest.raises(AttributeError):
            setattr(obj, name, 0.0)
