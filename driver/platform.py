"""The platform: one host, N cards behind one PCIe switch (driver API entry point `vnpu.Platform`).

`vnpu.Platform()` opens the embedded default (six reference cards, Gen3 x4 links, a Gen3 x16 uplink);
`vnpu.Platform.from_yaml(path)` opens any other. Opening is cheap: cards hold no host memory until
something is allocated on them.
"""
from __future__ import annotations

import copy
import json
import os
import threading
from importlib import resources

import yaml

from vnpu.errors import ConfigError, InvalidArgument, VnpuError

from . import pcie, validate
from .device import Device
from .tracing import PlatformTrace

PLATFORM_KEYS = {"name", "cards", "card", "card_overrides", "link", "uplink", "launch_overhead_ns", "poll_ns",
                 "faults", "sanitize", "engine", "power_cap_w", "power_window_us"}
LINK_KEYS = {"gen", "lanes", "max_payload", "max_read_request", "tlp_overhead_bytes", "completion_overhead_bytes",
             "read_completion_boundary", "dllp_overhead", "setup_ns"}
SANITIZE_ENV = "VNPU_SANITIZE"
ENGINE_ENV = "VNPU_ENGINE"
ENGINES = ("numba", "reference")


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


def _card_source(card):
    """The `card` key: an embedded card name, a path of a card YAML file, a mapping or a CardConfig."""
    from vnpu.emulator.config import EMBEDDED, CardConfig
    if isinstance(card, (dict, CardConfig)):
        return card
    if isinstance(card, str) and card in EMBEDDED:
        return card
    if isinstance(card, str) and not os.path.lexists(card):
        raise ConfigError(f"no card config {card!r}: give one of {', '.join(EMBEDDED)} or a YAML file path")
    return validate.file_path(card, "platform key 'card' (a card config)", what="card config YAML file",
                              error=ConfigError)


def validate_platform(data):
    """Check a platform mapping (the YAML's keys) and fill in the defaults; ConfigError names the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"platform config must be a mapping, got {type(data).__name__}")
    for k in data:
        if k not in PLATFORM_KEYS:
            raise ConfigError(f"unknown platform key {validate.show(k)}; known: {', '.join(sorted(PLATFORM_KEYS))}")
    merged = _default_data()
    merged.update(data)
    for key in ("link", "uplink", "faults", "card_overrides"):
        validate.config_numbers(merged.get(key), key, label="platform key")
    if not isinstance(merged["name"], str):
        raise ConfigError(f"platform key 'name' must be a string, got {validate.show(merged['name'])}")
    merged["cards"] = validate.integer(merged["cards"], "platform key 'cards'", 1, 64, error=ConfigError)
    merged["launch_overhead_ns"] = validate.time_ns(merged["launch_overhead_ns"], "platform key 'launch_overhead_ns'")
    merged["poll_ns"] = validate.time_ns(merged["poll_ns"], "platform key 'poll_ns'", positive=True)
    cap = merged.get("power_cap_w")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0 < cap < 1e4):
        raise ConfigError(f"platform key 'power_cap_w' must be a number of watts in (0, 10000) or null (no cap), got "
                          f"{validate.show(cap)}")
    window = merged.get("power_window_us")
    if isinstance(window, bool) or not isinstance(window, (int, float)) or not 0 < window <= 1e9:
        raise ConfigError(f"platform key 'power_window_us' must be a number of microseconds in (0, 1e9] (the power "
                          f"cap's averaging window), got {validate.show(window)}")
    merged["card"] = _card_source(merged["card"])
    merged["card_overrides"] = validate.card_overrides(merged.get("card_overrides"))
    if merged.get("sanitize") is not None:
        merged["sanitize"] = validate.flag(merged["sanitize"], "platform key 'sanitize'", error=ConfigError)
    if merged.get("engine") is not None and merged["engine"] not in ENGINES:
        raise ConfigError(f"platform key 'engine' must be one of {', '.join(ENGINES)}, got "
                          f"{validate.show(merged['engine'])}")
    faults = merged.get("faults")
    if faults is not None:
        if not isinstance(faults, dict):
            raise ConfigError("platform key 'faults' must map 'all' or card indices to fault settings")
        for key, settings in faults.items():
            name = key if isinstance(key, str) else validate.show(key)
            if not (key == "all" or (validate.is_int(key) and 0 <= key < merged["cards"])):
                raise ConfigError(f"platform key 'faults.{name}': expected 'all' or a card index 0.."
                                  f"{merged['cards'] - 1}")
            if not isinstance(settings, dict):
                raise ConfigError(f"platform key 'faults.{name}' must map fault settings to values, got "
                                  f"{validate.show(settings)}")
            try:
                validate.fault_settings(settings)
            except ConfigError as e:
                raise ConfigError(f"platform key 'faults.{name}': {e}") from None
    return merged


def _read_platform_yaml(path):
    data = validate.read_yaml_file(path, "platform config", error=ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{os.fspath(path)}: a platform config is a mapping of keys (cards, card, link, ...), got "
                          f"{'an empty file' if data is None else type(data).__name__}")
    return data


class Platform:
    """A host and its cards. `platform.devices` lists the cards (vnpu.driver.Device).

    `config` is a platform YAML path (str or os.PathLike) or a mapping of its keys (None: the embedded
    default); `card`, `cards`, `card_overrides` override those keys. `sanitize` is the default of the race
    sanitizer for every launch on the platform's queues (`device.queue(sanitize=...)` and
    `queue.launch(..., sanitize=...)` override it); when None it comes from the environment variable
    VNPU_SANITIZE (1/0, true/false, yes/no, on/off), then from the platform YAML key `sanitize`, else off."""

    def __init__(self, config=None, *, card=None, cards=None, card_overrides=None, sanitize=None, engine=None):
        if config is None:
            data = {}
        elif isinstance(config, dict):
            data = copy.deepcopy(config)
        elif isinstance(config, str) or hasattr(config, "__fspath__"):
            data = _read_platform_yaml(config)
        else:
            raise ConfigError(f"Platform(config): expected a platform YAML path, a mapping of platform keys or "
                              f"None, got {type(config).__name__} {validate.show(config)}")
        sanitize = validate.flag(sanitize, "Platform(sanitize)", allow_none=True, error=ConfigError)
        if card is not None:
            data["card"] = card
        if cards is not None:
            data["cards"] = cards
        if card_overrides is not None:
            data["card_overrides"] = card_overrides
        self.config = validate_platform(data)
        env = validate.env_flag(SANITIZE_ENV)
        #: the race sanitizer's default for launches on this platform's queues
        self.sanitize = next((v for v in (sanitize, env, self.config.get("sanitize")) if v is not None), False)
        # which engine runs launches: the timed Numba core, or the numpy reference interpreter (the readable
        # definition, no time: a launch then costs only its overhead); argument, then VNPU_ENGINE, then YAML
        env_engine = os.environ.get(ENGINE_ENV) or None
        chosen = next((v for v in (engine, env_engine, self.config.get("engine")) if v is not None), "numba")
        if chosen not in ENGINES:
            where = ("Platform(engine)" if engine is not None else ENGINE_ENV if env_engine
                     else "platform key 'engine'")
            raise ConfigError(f"{where} must be one of {', '.join(ENGINES)}, got {validate.show(chosen)}")
        self.engine = chosen
        link = _link(self.config["link"], "link")
        uplink = _link(self.config["uplink"], "uplink")
        self.switch = pcie.Switch([link] * self.config["cards"], uplink)
        self.lock = threading.RLock()      # the switch and the trace are shared by every card
        self.trace = PlatformTrace(self)
        self._host = threading.local()
        from vnpu.emulator.config import load_config
        try:
            card_cfg = load_config(self.config["card"], self.config["card_overrides"] or None)
        except ConfigError:
            raise
        except (OSError, UnicodeError, OverflowError, ValueError, TypeError, AttributeError, KeyError,
                RecursionError) as e:   # a safety net: the card config loader should raise ConfigError itself
            raise ConfigError(f"card config {validate.show(self.config['card'])}: {type(e).__name__}: {e}") from None
        self.devices = [Device(self, i, card_cfg) for i in range(self.config["cards"])]
        self.closed = False
        self._configure_faults(self.config.get("faults"))

    def _configure_faults(self, faults):
        """`faults:` in the platform YAML: {all: {...settings}} and/or {<card index>: {...settings}} (checked
        by validate_platform)."""
        for key, settings in (faults or {}).items():
            for d in self.devices if key == "all" else [self.devices[key]]:
                d.inject_faults(settings)

    @classmethod
    def from_yaml(cls, path, **overrides):
        """Open the platform a YAML file describes (the same as `Platform(path, ...)`)."""
        if not (isinstance(path, str) or hasattr(path, "__fspath__")):
            raise ConfigError(f"Platform.from_yaml: expected a path (str or os.PathLike), got "
                              f"{type(path).__name__} {validate.show(path)}")
        return cls(path, **overrides)

    # --- the host's virtual clock (one per host thread: what a thread waited for is its own) ------------
    @property
    def host_ns(self) -> float:
        return getattr(self._host, "now", 0.0)

    def advance_host(self, t_ns: float):
        """Move this host thread's virtual clock to t_ns (never backwards)."""
        t = validate.time_ns(t_ns, "advance_host: t_ns", error=InvalidArgument)
        self._host.now = max(self.host_ns, t)

    def reset_clock(self):
        """Start virtual time again at 0: the host clock (of every host thread), every queue of every device,
        every card's launch booking and the PCIe links' bookings. Events recorded before are of the old
        timeline (a queue forgets the ones it was told to wait for). Counters (device stats, bytes moved) are
        not touched: `device.stats.reset()` and `platform.switch.reset()` clear those."""
        self._host = threading.local()
        for d in self.devices:          # each under its own lock (never inside self.lock: copies take the
            d._reset_clock()            # device's lock, then the platform's)
        with self.lock:
            self.switch.reset_clock()

    def close(self):
        """Close the platform: every device is lost to later calls."""
        for d in self.devices:
            d.lose("the platform was closed")
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
        return {"name": self.config["name"], "cards": [dict(d.properties, power=_envelope(d.config))
                                                      for d in self.devices],
                "link": dict(link), "uplink": dict(self.config["uplink"]),
                "power_cap_w": self.config.get("power_cap_w"), "power_window_us": self.config.get("power_window_us"),
                "pcie_bytes": self.switch.bytes_moved()}

    def start_trace(self):
        self.trace.start()

    def stop_trace(self):
        self.trace.stop()

    def write_trace(self, path):
        path = validate.path_name(path, "write_trace: path")
        self.trace.write(path)
        return path


def _envelope(card_config):
    """A card's area and power envelope (emulator/power.py, docs/power.md): die mm^2, idle and int8-peak
    watts at its operating point."""
    from vnpu.emulator.power import power_envelope
    e = power_envelope(card_config)
    return {"area_mm2": e["area_mm2"], "idle_w": e["idle_w"], "peak_w": e["peak_w"],
            "peak_tops_per_w": e["peak_tops_per_w"], "clock_ghz": e["clock_ghz"], "volts": e["volts"]}


def platform_info(config=None):
    p = Platform.from_yaml(config) if config else Platform()
    return p.info()


def format_platform_table(info) -> str:
    rows = [("card", "PEs", "clock", "memory used / total", "link", "area", "power idle / int8 peak")]
    link = info["link"]
    for c in info["cards"]:
        pw = c.get("power") or {}
        rows.append((str(c["index"]), str(c["pes"]), f"{c['clock_ghz']} GHz",
                     f"{c['dram_used'] / 2**20:.1f} MiB / {c['dram_bytes'] / 2**30:.1f} GiB",
                     f"PCIe Gen{link['gen']} x{link['lanes']}",
                     f"{pw['area_mm2']:.0f} mm^2" if pw else "-",
                     f"{pw['idle_w']:.1f} / {pw['peak_w']:.1f} W at {pw['volts']:.2f} V "
                     f"({pw['peak_tops_per_w']:.1f} TOPS/W)" if pw else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    cap = info.get("power_cap_w")
    capped = "no power cap" if cap is None else (f"power cap {cap:g} W per card over {info.get('power_window_us'):g} us "
                                                 f"windows (DVFS, docs/power.md)")
    lines = [f"platform {info['name']}: {len(info['cards'])} cards behind a switch, uplink Gen{info['uplink']['gen']} "
             f"x{info['uplink']['lanes']}; {capped}"]
    for r in rows:
        lines.append("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)))
    return "\n".join(lines)


def dumps_info(info):
    return json.dumps(info, indent=2)


__all__ = ["Platform", "platform_info", "format_platform_table", "VnpuError"]
