"""The vnpu pytest plugin: fixtures for testing your own kernels (installed with vnpu through the `pytest11`
entry point, so no conftest is needed; `-p no:vnpu` turns it off).

Fixtures:
- `vnpu_engine`: "numba" then "reference" (the test runs once per engine).
- `vnpu_card`: a fresh card, the `tiny` config unless the test says otherwise with
  `@pytest.mark.vnpu_card("reference", overrides={"matrix.rows": 16})` or
  `@pytest.mark.parametrize("vnpu_card", ["tiny", "reference"], indirect=True)`.
- `vnpu_platform`: a vnpu.Platform of one tiny card with the race sanitizer on, closed after the test;
  `@pytest.mark.vnpu_platform(cards=2, card="reference")` passes keywords to vnpu.Platform.

Option: `--vnpu-trace-dir DIR` (or the ini key `vnpu_trace_dir`): where assert_kernel writes the trace of a
failing run (default: $VNPU_TRACE_DIR, else a temporary folder).
"""
from __future__ import annotations

import pytest

import vnpu.testing as _testing


def pytest_addoption(parser):
    group = parser.getgroup("vnpu", "vnpu kernel testing")
    group.addoption("--vnpu-trace-dir", default=None, metavar="DIR",
                    help="folder for the Perfetto traces of failing vnpu.testing.assert_kernel runs")
    parser.addini("vnpu_trace_dir", "folder for the Perfetto traces of failing vnpu.testing.assert_kernel runs",
                  default="")


def pytest_configure(config):
    config.addinivalue_line("markers", "vnpu_card(config='tiny', overrides=None): the card the vnpu_card fixture "
                                       "makes (a config name, a YAML path or a CardConfig, and key overrides)")
    config.addinivalue_line("markers", "vnpu_platform(**kwargs): keyword arguments for the vnpu.Platform the "
                                       "vnpu_platform fixture makes")
    trace_dir = config.getoption("vnpu_trace_dir", None) or config.getini("vnpu_trace_dir")
    if trace_dir:
        _testing._trace_dir = str(trace_dir)


def pytest_unconfigure(config):
    _testing._trace_dir = None


@pytest.fixture(params=_testing.ENGINES)
def vnpu_engine(request):
    """The engine to run on: "numba" (timed, sanitized) and "reference" (the numpy interpreter)."""
    return request.param


def _card_spec(request):
    config, overrides = "tiny", None
    marker = request.node.get_closest_marker("vnpu_card")
    if marker is not None:
        config = marker.args[0] if marker.args else marker.kwargs.get("config", "tiny")
        overrides = marker.kwargs.get("overrides")
    param = getattr(request, "param", None)
    if isinstance(param, dict):
        config, overrides = param.get("config", "tiny"), param.get("overrides")
    elif param is not None:
        config = param
    return config, overrides


@pytest.fixture
def vnpu_card(request):
    """A fresh virtual card (vnpu.emulator.card.Card): `tiny` by default, or what a `vnpu_card` marker or an
    indirect parametrization names."""
    from vnpu.emulator.card import Card
    config, overrides = _card_spec(request)
    card = Card(config, overrides)
    yield card
    card.reset()


@pytest.fixture
def vnpu_platform(request):
    """A vnpu.Platform of one tiny card with the race sanitizer on (a `vnpu_platform` marker's keywords
    replace these), closed after the test."""
    from vnpu.driver.platform import Platform
    kwargs = {"cards": 1, "card": "tiny", "sanitize": True}
    marker = request.node.get_closest_marker("vnpu_platform")
    if marker is not None:
        kwargs.update(marker.kwargs)
    platform = Platform(**kwargs)
    yield platform
    platform.close()
