"""The driver runs launches on either engine: the timed Numba core (default) or the numpy reference
interpreter (issue 14, item 3): `Platform(engine=...)`, the platform YAML key `engine`, or VNPU_ENGINE."""
import numpy as np
import pytest

import vnpu


def _vadd(platform, n=200):
    dev = platform.devices[0]
    q = dev.queue()
    kernel = dev.load(vnpu.assemble(open(__file__.rsplit("/tests/", 1)[0] + "/examples/vector_add.s").read()))["vadd"]
    a, b, out = dev.alloc(4 * n), dev.alloc(4 * n), dev.alloc(4 * n)
    x, y = np.arange(n, dtype=np.float32), np.full(n, 0.5, np.float32)
    q.copy_to_device(a, x)
    q.copy_to_device(b, y)
    q.launch(kernel, a, b, out, n)
    got = q.copy_to_host(out, dtype=np.float32)
    q.synchronize()
    return got, q.last_result, x + y


@pytest.mark.parametrize("engine", ["numba", "reference"])
def test_a_platform_runs_its_launches_on_the_engine_it_names(engine):
    platform = vnpu.Platform(cards=1, engine=engine)
    assert platform.engine == engine
    got, result, want = _vadd(platform)
    np.testing.assert_array_equal(got, want)
    assert result.engine == engine
    assert (result.cycles > 0) == (engine == "numba")     # the reference interpreter has no time
    platform.close()


def test_the_environment_and_the_yaml_choose_the_engine(monkeypatch, tmp_path):
    monkeypatch.setenv("VNPU_ENGINE", "reference")
    assert vnpu.Platform(cards=1).engine == "reference"
    assert vnpu.Platform(cards=1, engine="numba").engine == "numba"      # the argument wins
    monkeypatch.delenv("VNPU_ENGINE")
    yaml_file = tmp_path / "p.yaml"
    yaml_file.write_text("cards: 1\nengine: reference\n")
    assert vnpu.Platform(str(yaml_file)).engine == "reference"


@pytest.mark.parametrize("bad", ["fast", 3, ""])
def test_an_unknown_engine_is_a_config_error(bad, monkeypatch):
    monkeypatch.delenv("VNPU_ENGINE", raising=False)
    with pytest.raises(vnpu.ConfigError, match="engine"):
        vnpu.Platform(cards=1, engine=bad) if bad != "" else vnpu.Platform({"cards": 1, "engine": "fast"})
    monkeypatch.setenv("VNPU_ENGINE", "turbo")
    with pytest.raises(vnpu.ConfigError, match="VNPU_ENGINE"):
        vnpu.Platform(cards=1)
