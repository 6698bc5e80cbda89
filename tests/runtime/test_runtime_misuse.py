"""Misuse of the runtime's public API (preset, DLRM, Executor, submit) gives typed errors; a request that is
not what the model takes never reaches a card (a dense block of the wrong shape was accepted silently)."""
import numpy as np
import pytest

import vnpu
from vnpu.runtime import DLRM, Executor, preset


@pytest.fixture(scope="module")
def setup():
    platform = vnpu.Platform()
    m = DLRM(preset("rm1", rows_scale=1e-4))
    ex = Executor(platform, m, batch=8)
    dense, lookups = m.make_request(8, np.random.default_rng(0))
    yield platform, m, ex, dense, lookups
    ex.release()


@pytest.mark.parametrize("kw", [dict(name="rm9"), dict(rows_scale=0), dict(rows_scale=float("nan")),
                                dict(rows_scale=2), dict(rows_scale="1"), dict(table_format="int3"),
                                dict(dense_dtype="bf16")])
def test_bad_presets(kw):
    args = {"name": "rm1", **kw}
    with pytest.raises(vnpu.InvalidArgument):
        preset(args.pop("name"), **args)


def test_bad_executors(setup):
    platform, m, *_ = setup
    for args, kw in [((None, m), {"batch": 8}), ((platform, "m"), {"batch": 8}), ((platform, m), {"batch": 0}),
                     ((platform, m), {"batch": True}), ((platform, m), {"batch": "8"}),
                     ((platform, m), {"batch": 8, "inflight": 0}), ((platform, m), {"batch": 8, "route": "x"})]:
        with pytest.raises(vnpu.InvalidArgument):
            Executor(*args, **kw)


def test_bad_requests_never_reach_a_card(setup):
    platform, m, ex, dense, lookups = setup
    idx, off = lookups[0]
    bad = [(-1, dense, lookups), ("0", dense, lookups), (0, None, lookups), (0, dense[:, :3], lookups),
           (0, np.zeros((16, dense.shape[1]), np.float16), lookups), (0, dense.astype(np.float32), lookups),
           (0, dense, lookups[:-1]), (0, dense, None), (0, dense, [(idx, off[:3])] + lookups[1:]),
           (0, dense, [(idx.astype(np.float32), off)] + lookups[1:]), (0, dense, [idx] + lookups[1:])]
    for r, d, lk in bad:
        with pytest.raises(vnpu.InvalidArgument):
            ex.submit(r, d, lk)
    assert all(dev.fault is None for dev in platform.devices)
    out, _, _ = ex.submit(0, dense, lookups)
    for dev in platform.devices:
        dev.synchronize()
    np.testing.assert_allclose(out, m.reference(dense, lookups), rtol=0, atol=1e-6)
