"""The race sanitizer through the driver: off by default, on per platform (argument, YAML key, VNPU_SANITIZE),
per queue (device.queue(sanitize=...)) and per launch (queue.launch(..., sanitize=...)); the narrowest
setting wins. A race is a RaceError naming both instructions, sticky on the card until reset."""
import numpy as np
import pytest

import vnpu

# a DMA into local memory, then a load of the same bytes before waiting for it: a race
RACY = vnpu.assemble("""
.kernel racy
.arg a, buffer, f32
    li r9, 1024
    li r10, 4096
    dma e0, r10, a, r9, s0
    lw r5, 0(r10)
    wait s0, 1
    halt
.kernel ordered
.arg a, buffer, f32
    li r9, 1024
    li r10, 4096
    dma e0, r10, a, r9, s0
    wait s0, 1
    lw r5, 0(r10)
    halt
""")


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("VNPU_SANITIZE", raising=False)


def race_seen(platform, queue=None, **launch):
    """Launch the racy kernel on one PE; True if it raised RaceError (then the card is reset)."""
    dev = platform.devices[0]
    q = queue or dev.queue()
    mod = dev.load(RACY)
    a = dev.alloc(1024)
    q.copy_to_device(a, np.zeros(256, np.float32))
    q.launch(mod["racy"], a, pes=[0], **launch)
    try:
        q.synchronize()
    except vnpu.RaceError as e:
        assert e.instruction.startswith("lw") and "dma" in str(e)
        with pytest.raises(vnpu.RaceError):          # sticky until reset
            dev.alloc(64)
        dev.reset()
        return True
    return False


def test_off_by_default():
    p = vnpu.Platform(card="tiny", cards=1)
    assert p.sanitize is False and p.devices[0].queue().sanitize is False
    assert not race_seen(p)


def test_per_launch_and_per_queue():
    p = vnpu.Platform(card="tiny", cards=1)
    dev = p.devices[0]
    assert race_seen(p, sanitize=True)
    q = dev.queue(sanitize=True)
    assert q.sanitize is True
    assert race_seen(p, queue=q)
    assert not race_seen(p, queue=q, sanitize=False)       # the launch's setting wins over the queue's
    assert not race_seen(p, queue=dev.queue(sanitize=False))


def test_an_ordered_kernel_passes_under_the_sanitizer():
    p = vnpu.Platform(card="tiny", cards=1, sanitize=True)
    dev = p.devices[0]
    q = dev.queue()
    a = dev.alloc(1024)
    q.launch(dev.load(RACY)["ordered"], a, pes=[0, 1])
    q.synchronize()


def test_platform_default_from_argument_yaml_and_environment(tmp_path, monkeypatch):
    assert race_seen(vnpu.Platform(card="tiny", cards=1, sanitize=True))
    p = vnpu.Platform(card="tiny", cards=1, sanitize=True)
    assert not race_seen(p, queue=p.devices[0].queue(sanitize=False))   # the queue's setting wins
    f = tmp_path / "p.yaml"
    f.write_text("cards: 1\ncard: tiny\nsanitize: true\n")
    assert vnpu.Platform(f).sanitize is True and race_seen(vnpu.Platform(f))
    monkeypatch.setenv("VNPU_SANITIZE", "1")
    p = vnpu.Platform(card="tiny", cards=1)
    assert p.sanitize is True and race_seen(p)
    assert vnpu.Platform(card="tiny", cards=1, sanitize=False).sanitize is False   # the argument wins
    monkeypatch.setenv("VNPU_SANITIZE", "off")
    assert vnpu.Platform(f).sanitize is False                                        # env beats the YAML
    monkeypatch.setenv("VNPU_SANITIZE", "")
    assert vnpu.Platform(f).sanitize is True                                         # empty: not set


@pytest.mark.parametrize("value", ["yes", 1, 0, 1.0, None.__class__, [True], np.nan])
def test_sanitize_must_be_a_bool(value):
    p = vnpu.Platform(card="tiny", cards=1)
    dev = p.devices[0]
    with pytest.raises(vnpu.ConfigError, match="sanitize"):
        vnpu.Platform(card="tiny", cards=1, sanitize=value)
    with pytest.raises(vnpu.ConfigError, match="sanitize"):
        vnpu.Platform({"card": "tiny", "cards": 1, "sanitize": value})
    with pytest.raises(vnpu.InvalidArgument, match="sanitize"):
        dev.queue(sanitize=value)
    q = dev.queue()
    with pytest.raises(vnpu.InvalidArgument, match="sanitize"):
        q.launch(dev.load(RACY)["racy"], dev.alloc(1024), sanitize=value)
    assert q.tail_ns == 0 and len(dev._queues) == 1


def test_a_bad_environment_value_is_a_config_error(monkeypatch):
    monkeypatch.setenv("VNPU_SANITIZE", "maybe")
    with pytest.raises(vnpu.ConfigError, match="VNPU_SANITIZE"):
        vnpu.Platform(card="tiny", cards=1)
