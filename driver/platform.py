"""The platform: one host, N cards behind one PCIe switch (driver API entry point `vnpu.Platform`).

`vnpu.Platform()` opens the embedded default (six reference cards, Gen3 x4 links, a Gen3 x16 uplink);
`vnpu.Platform.from_yaml(path)` opens any other. Opening is cheap: cards hold no host memory until
something is allocated on them.
"""
from __future__ import annotations

import copy
import json
import math
import threading
from importlib import resources

import yaml

from vnpu.errors import ConfigError, VnpuError

from . import pcie
from .device import Device
from .tracing import PlatformTrace

PLATFORM_KEYS = {"name", "cards", "card", "card_overrides", "link", "uplink", "launch_overhead_ns", "poll_ns",
                 "faults"}
LINK_KEYS = {"gen", "lanes", "max_payload", "max_read_request", "tlp_overhead_bytes", "completion_overhead_bytes",
             "read_completion_boundary", "dllp_overhead", "setup_ns"}


def _default_data():
    text = resources.files("vnpu.driver").joinpath("platforms", "default.yaml").read_text()
    return yaml.safe_load(text)


def _link(data, where):
    if not isinstance(data, dict):
        raise ConfigError(f"platform key {where!r} must be a mapping")
    for k in data:
        if k not in LINK_KEYS:
            raise ConfigError(f"unknown platform key '{where}.{k}'; known: {', '.join(sorted(LINK_KEYS))}")
    try:
        return pcie.LinkConfig(**data)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"platform key {where!r}: {e}") from None


def validate_platform(data):
    if not isinstance(data, dict):
        raise ConfigError("platform config must be a mapping")
    for k in data:
        if k not in PLATFORM_KEYS:
            raise ConfigError(f"unknown platform key {k!r}; known: {', '.join(sorted(PLATFORM_KEYS))}")
    merged = _default_data()
    merged.update(data)
    n = merged["cards"]
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 64:
        raise ConfigError(f"platform key 'cards' must be an integer in [1, 64], got {n!r}")
    lo = merged["launch_overhead_ns"]
    if isinstance(lo, bool) or not isinstance(lo, (int, float)) or not math.isfinite(lo) or lo < 0:
        raise ConfigError(f"platform key 'launch_overhead_ns' must be a number >= 0, got {lo!r}")
    poll = merged["poll_ns"]
    if isinstance(poll, bool) or not isinstance(poll, (int, float)) or not math.isfinite(poll) or poll <= 0:
        raise ConfigError(f"platform key 'poll_ns' must be a number > 0, got {poll!r}")
    return merged


class Platform:
    """A host and its cards. `platform.devices` lists the cards (vnpu.driver.Device)."""

    def __init__(self, config=None, *, card=None, cards=None, card_overrides=None):
        data = copy.deepcopy(config) if isinstance(config, dict) else {}
        if card is not None:
            data["card"] = card
        if cards is not None:
            data["cards"] = cards
        if card_overrides is not None:
            data["card_overrides"] = card_overrides
        self.config = validate_platform(data)
        link = _link(self.config["link"], "link")
        uplink = _link(self.config["uplink"], "uplink")
        self.switch = pcie.Switch([link] * self.config["cards"], uplink)
        self.lock = threading.RLock()      # the switch and the trace are shared by every card
        self.trace = PlatformTrace(self)
        self._host = threading.local()
        from vnpu.emulator.config import load_config
        card_cfg = load_config(self.config["card"], self.config.get("card_overrides") or None)
        self.devices = [Device(self, i, card_cfg) for i in range(self.config["cards"])]
        self.closed = False
        self._configure_faults(self.config.get("faults"))

    def _configure_faults(self, faults):
        """`faults:` in the platform YAML: {all: {...settings}} and/or {<card index>: {...settings}}."""
        if not faults:
            return
        if not isinstance(faults, dict):
            raise ConfigError("platform key 'faults' must map 'all' or card indices to fault settings")
        for key, settings in faults.items():
            if not isinstance(settings, dict):
                raise ConfigError(f"platform key 'faults.{key}' must map fault settings to values, got {settings!r}")
            if key == "all":
                targets = self.devices
            elif isinstance(key, int) and 0 <= key < len(self.devices):
                targets = [self.devices[key]]
            else:
                raise ConfigError(f"platform key 'faults.{key}': expected 'all' or a card index 0.."
                                  f"{len(self.devices) - 1}")
            for d in targets:
                d.inject_faults(settings)

    @classmethod
    def from_yaml(cls, path):
        try:
            with open(path) as f:
                data = yaml.safe_load(f)
        except OSError as e:
            raise ConfigError(f"cannot read platform config {path}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a platform config is a mapping of keys (cards, card, link, ...), got "
                              f"{'an empty file' if data is None else type(data).__name__}")
        return cls(data)

    # --- the host's virtual clock (one per host thread: what a thread waited for is its own) ------------
    @property
    def host_ns(self) -> float:
        return getattr(self._host, "now", 0.0)

    def advance_host(self, t_ns: float):
        self._host.now = max(self.host_ns, t_ns)

    def close(self):
        """Close the platform: every device is lost to later calls."""
        for d in self.devices:
            d._lost = "the platform was closed"
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"Platform({self.config['name']!r}, {len(self.devices)} x {self.devices[0].config.data['name']})"

    # --- reporting -----------------------------------------------------------------------------------------
    def info(self):
        link = self.config["link"]
        return {"name": self.config["name"], "cards": [d.properties for d in self.devices],
                "link": dict(link), "uplink": dict(self.config["uplink"]),
                "pcie_bytes": self.switch.bytes_moved()}

    def start_trace(self):
        self.trace.start()

    def stop_trace(self):
        self.trace.stop()

    def write_trace(self, path):
        self.trace.write(path)
        return path


def platform_info(config=None):
    p = Platform.from_yaml(config) if config else Platform()
    return p.info()


def format_platform_table(info) -> str:
    rows = [("card", "PEs", "clock", "memory used / total", "link")]
    link = info["link"]
    for c in info["cards"]:
        rows.append((str(c["index"]), str(c["pes"]), f"{c['clock_ghz']} GHz",
                     f"{c['dram_used'] / 2**20:.1f} MiB / {c['dram_bytes'] / 2**30:.1f} GiB",
                     f"PCIe Gen{link['gen']} x{link['lanes']}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"platform {info['name']}: {len(info['cards'])} cards behind a switch, uplink Gen{info['uplink']['gen']} "
             f"x{info['uplink']['lanes']}"]
    for r in rows:
        lines.append("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)))
    return "\n".join(lines)


def dumps_info(info):
    return json.dumps(info, indent=2)


__all__ = ["Platform", "platform_info", "format_platform_table", "VnpuError"]
