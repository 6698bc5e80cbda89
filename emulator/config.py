"""Card configuration: YAML, validated against one schema; embedded `reference` and `tiny` cards.

Every key is checked: an unknown key, a wrong type or a value out of range is a ConfigError naming the
key's dotted path. Overrides come from code (`load_config("tiny", {"matrix.rows": 16})`) or from the
command line (`--set matrix.rows=16`). The `power:` and `area:` sections (docs/power.md) may be left out of a
YAML: the card then takes the `reference` card's.
"""
from __future__ import annotations

import copy
import os
from importlib import resources
from types import SimpleNamespace

import yaml

from vnpu.errors import ConfigError
from vnpu.isa import table as T



class Points:
    """Rule of a list of operating points: [[clock_ghz, volts], ...], clocks rising, volts never falling."""

    def __init__(self, clock=(0.01, 10.0), volts=(0.3, 1.5), most=16):
        self.clock, self.volts, self.most = clock, volts, most

    def check(self, v, where):
        if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= self.most:
            raise ConfigError(f"config key {where!r} must be a list of 1 to {self.most} [clock_ghz, volts] pairs, "
                              f"got {_shown(v)}")
        out = []
        for i, pt in enumerate(v):
            if not isinstance(pt, (list, tuple)) or len(pt) != 2 or any(
                    isinstance(x, bool) or not isinstance(x, (int, float)) or x != x for x in pt):
                raise ConfigError(f"config key {where!r}: point {i} must be a pair of numbers [clock_ghz, volts], "
                                  f"got {_shown(pt)}")
            f, volts = float(pt[0]), float(pt[1])
            for name, x, (lo, hi) in (("clock_ghz", f, self.clock), ("volts", volts, self.volts)):
                if not lo <= x <= hi:
                    raise ConfigError(f"config key {where!r}: point {i} {name} = {x!r} is out of range [{lo}, {hi}]")
            if out and (f <= out[-1][0] or volts < out[-1][1]):
                raise ConfigError(f"config key {where!r}: points must have rising clocks and volts that never fall; "
                                  f"point {i} {[f, volts]} follows {out[-1]}")
            out.append([f, volts])
        return out


def _shown(v):
    return repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."


_PJ = (float, 0.0, 1e6)       # an energy per action, pJ
_W = (float, 0.0, 1000.0)     # a power, W
_MM2 = (float, 0.0, 1e5)      # an area, mm^2 (or um^2 for one MAC)
# The power and area sections (docs/power.md): optional in a YAML; a card without them takes the `reference`
# card's (same technology), see _fill_sections.
POWER = {
    "reference_volts": (float, 0.3, 1.5),
    "static_exponent": (float, 0.0, 4.0),
    "operating_points": Points(),
    "matrix": {"mac_int8_pj": _PJ, "mac_fp16_pj": _PJ, "mac_fp32_pj": _PJ, "cell_active_pj": _PJ,
               "cell_idle_pj": _PJ, "cell_static_uw": (float, 0.0, 1e6)},
    "vector": {"lane_i8_pj": _PJ, "lane_f16_pj": _PJ, "lane_i32_pj": _PJ, "lane_f32_pj": _PJ,
               "active_cycle_pj": _PJ, "idle_cycle_pj": _PJ, "static_w": _W},
    "scalar": {"instruction_pj": _PJ, "idle_cycle_pj": _PJ, "static_w": _W},
    "dma": {"byte_pj": _PJ, "idle_cycle_pj": _PJ, "static_w": _W},
    "local_memory": {"read_byte_pj": _PJ, "write_byte_pj": _PJ, "static_w_per_mib": _W},
    "shared_sram": {"read_byte_pj": _PJ, "write_byte_pj": _PJ, "static_w_per_mib": _W},
    "dram": {"pj_per_bit": _PJ, "active_w": _W, "background_w": _W},
    "embedding": {"row_pj": _PJ, "active_cycle_pj": _PJ, "idle_cycle_pj": _PJ, "static_w": _W},
    "uncore": {"static_w": _W},
    "pcie": {"gen3_pj_per_bit": _PJ, "gen4_pj_per_bit": _PJ, "gen5_pj_per_bit": _PJ},
}
AREA = {"mac_um2": _MM2, "weight_buffer_mm2_per_mib": _MM2, "local_mm2_per_mib": _MM2,
        "shared_mm2_per_mib": _MM2, "vector_mm2_per_512b": _MM2, "scalar_mm2": _MM2, "dma_engine_mm2": _MM2,
        "embedding_mm2": _MM2, "dram_phy_mm2_per_gbps": _MM2, "pcie_mm2": _MM2, "uncore_mm2": _MM2}
OPTIONAL_SECTIONS = ("power", "area")

# key -> (type, low, high) for numbers, or a tuple of choices for strings.
SCHEMA = {
    "name": (str,),
    "clock_ghz": (float, 0.01, 10.0),
    "pes": (int, 1, 64),
    "registers": (int, T.NUM_REGS, T.NUM_REGS),
    "semaphores": (int, 1, T.NUM_SEMS),
    "watchdog_cycles": (int, 1000, 1 << 50),
    # optional keys (a fourth element is the default a YAML may leave out)
    "watchdog_instructions": (int, 1000, 1 << 50, 200_000_000),
    "reference_timeout_s": (float, 0.1, 1e6, 10.0),
    "barrier_cycles": (int, 0, 1 << 20),
    "local_memory": {"bytes": (int, 4096, 1 << 30), "bytes_per_cycle": (float, 1, 1 << 16)},
    "shared_sram": {"bytes": (int, 0, 1 << 32), "bytes_per_cycle": (float, 1, 1 << 16),
                    "latency_cycles": (int, 0, 1 << 20)},
    "dram": {"bytes": (int, 1 << 20, 1 << 36), "gbps": (float, 0.1, 10000.0), "latency_cycles": (int, 0, 1 << 20),
             "burst_bytes": (int, 8, 4096), "page_bytes": (int, 64, 1 << 20),
             "random_efficiency": (float, 0.01, 1.0)},
    "matrix": {"rows": (int, 1, 1024), "cols": (int, 1, 1024), "depth": (int, 1, 64),
               "dataflow": ("ws", "os"), "int8_rate": (float, 0.01, 64.0), "fp16_rate": (float, 0.01, 64.0),
               "fp32_rate": (float, 0.001, 64.0, 0.125)},
    "vector": {"width_bits": (int, 64, 8192), "latency_cycles": (int, 0, 1 << 10),
               "transcendental_cycles": (int, 1, 1 << 10)},
    "dma": {"engines_per_pe": (int, 1, T.NUM_ENGINES), "queue_depth": (int, 1, 1024),
            "setup_cycles": (int, 0, 1 << 20), "bytes_per_cycle": (float, 1, 1 << 16)},
    "embedding": {"place": ("card",), "outstanding": (int, 1, 4096), "bytes_per_cycle": (float, 1, 1 << 16)},
    "power": POWER,
    "area": AREA,
}
EMBEDDED = ("reference", "tiny")


def _check(node, schema, path):
    if not isinstance(node, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(node).__name__}")
    for key in node:
        if key not in schema:
            where = f"{path}.{key}" if path else key
            raise ConfigError(f"unknown config key {where!r}; known keys here: {', '.join(sorted(schema))}")
    for key, rule in schema.items():
        where = f"{path}.{key}" if path else key
        if key not in node:
            if isinstance(rule, tuple) and len(rule) == 4:
                node[key] = rule[3]
                continue
            raise ConfigError(f"missing config key {where!r}")
        v = node[key]
        if isinstance(rule, dict):
            _check(v, rule, where)
        elif isinstance(rule, Points):
            node[key] = rule.check(v, where)
        elif rule[0] is str:
            if not isinstance(v, str):
                raise ConfigError(f"config key {where!r} must be a string, got {v!r}")
        elif isinstance(rule[0], str):
            if v not in rule:
                raise ConfigError(f"config key {where!r} must be one of {', '.join(rule)}, got {v!r}")
        else:
            typ, lo, hi = rule[:3]
            # no float(v) on an int: a 400-digit integer would overflow it
            if isinstance(v, bool) or not isinstance(v, (int, float)) or \
                    (typ is int and isinstance(v, float) and not v.is_integer()) or (isinstance(v, float) and v != v):
                raise ConfigError(f"config key {where!r} must be {'an integer' if typ is int else 'a number'}, "
                                  f"got {v!r}")
            if not lo <= v <= hi:
                raise ConfigError(f"config key {where!r} = {_shown(v)} is out of range [{lo}, {hi}]")
            node[key] = typ(v)


def _parse_value(text):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data, overrides):
    """Apply {"matrix.rows": 16} or ["matrix.rows=16"] to a config dict (in place)."""
    if overrides is None:
        return data
    if not isinstance(overrides, dict):
        pairs = {}
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like key=value, e.g. matrix.rows=16")
            k, v = item.split("=", 1)
            pairs[k.strip()] = _parse_value(v.strip())
        overrides = pairs
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node, rule = data, SCHEMA
        for p in parts[:-1]:
            if not isinstance(rule, dict) or p not in rule or not isinstance(rule[p], dict):
                raise ConfigError(f"unknown config key {dotted!r}")
            node, rule = node[p], rule[p]
        if parts[-1] not in rule or isinstance(rule[parts[-1]], dict):
            raise ConfigError(f"unknown config key {dotted!r}")
        node[parts[-1]] = value
    return data


def _reference_sections():
    """The `reference` card's power and area sections (parsed once), for a card config without them."""
    global _REF_SECTIONS
    if _REF_SECTIONS is None:
        text = resources.files("vnpu.emulator").joinpath("configs", "reference.yaml").read_text()
        data = yaml.safe_load(text)
        _REF_SECTIONS = {k: data[k] for k in OPTIONAL_SECTIONS}
    return _REF_SECTIONS


_REF_SECTIONS = None


def _fill_sections(data):
    """A config dict without a `power` or `area` section gets the reference card's (in place)."""
    if isinstance(data, dict):
        for key in OPTIONAL_SECTIONS:
            if key not in data:
                data[key] = copy.deepcopy(_reference_sections()[key])
    return data


def _ns(d):
    return SimpleNamespace(**{k: _ns(v) if isinstance(v, dict) else v for k, v in d.items()})


class CardConfig:
    """A validated card configuration. Attribute access (`cfg.matrix.rows`) and `cfg.data` (the dict)."""

    def __init__(self, data: dict):
        data = _fill_sections(copy.deepcopy(data))
        _check(data, SCHEMA, "")
        self.data = data
        self.__dict__.update(vars(_ns(data)))

    def __repr__(self):
        return f"CardConfig({self.data['name']!r}, {self.pes} PEs, {self.clock_ghz} GHz)"

    @property
    def dram_bytes_per_cycle(self):
        return self.dram.gbps / self.clock_ghz

    @property
    def peak_macs_per_cycle(self):
        m = self.matrix
        return m.rows * m.cols * m.depth * m.int8_rate * self.pes

    def with_overrides(self, overrides):
        return CardConfig(apply_overrides(copy.deepcopy(self.data), overrides))


def yaml_error_text(e) -> str:
    """One line for a YAML parse error: where and what ("not valid YAML at line 2, column 5: expected ...")."""
    mark = getattr(e, "problem_mark", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = getattr(e, "problem", None) or (str(e).strip().splitlines() or ["?"])[0]
    return f"not valid YAML{at}: {what}"


def _read_yaml(text, where):
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: {yaml_error_text(e)}") from None
    return data


def load_config(name_or_path="reference", overrides=None) -> CardConfig:
    """An embedded config by name (`reference`, `tiny`), a YAML file path, a dict, or a CardConfig."""
    if isinstance(name_or_path, CardConfig):
        return name_or_path.with_overrides(overrides) if overrides else name_or_path
    if isinstance(name_or_path, dict):
        data = copy.deepcopy(name_or_path)
    elif name_or_path in EMBEDDED:
        text = resources.files("vnpu.emulator").joinpath("configs", f"{name_or_path}.yaml").read_text()
        data = _read_yaml(text, name_or_path)
    elif isinstance(name_or_path, (str, os.PathLike)) and os.path.exists(name_or_path):
        if os.path.isdir(name_or_path):
            raise ConfigError(f"card config {str(name_or_path)!r} is a directory, not a YAML file")
        try:
            with open(name_or_path, "rb") as f:
                text = f.read().decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"card config {str(name_or_path)!r} is not UTF-8 text (byte {e.start})") from None
        except OSError as e:
            raise ConfigError(f"card config {str(name_or_path)!r} cannot be read: {e.strerror}") from None
        data = _read_yaml(text, str(name_or_path))
    else:
        raise ConfigError(f"no card config {name_or_path!r}: give one of {', '.join(EMBEDDED)} or a YAML file path")
    if not isinstance(data, dict):
        raise ConfigError(f"config {name_or_path!r}: expected a mapping at the top level")
    _fill_sections(data)
    try:
        apply_overrides(data, overrides)
    except (KeyError, TypeError):
        raise ConfigError(f"bad overrides {overrides!r}") from None
    return CardConfig(data)
