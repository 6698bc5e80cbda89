"""Argument validation for the driver API: the one place that says what each public call accepts.

Every public driver entry point (vnpu.Platform, Device, Context, Buffer, Module, Queue, Event,
inject_faults, kernel arguments) checks its arguments with these functions *before* it touches any state,
and the C API (driver/capi/impl.py) reaches the same checks through the Python calls, so the two APIs
accept and refuse the same values. A refusal is a typed vnpu error whose message names the argument and
what was wrong: InvalidArgument for call arguments, ConfigError for platform / card / fault settings,
InvalidHandle for a handle that is dead or belongs elsewhere (those checks live on the handles).

An exception raised by the caller's own object while it is inspected (its `__fspath__`, `__len__` or
`__repr__` raising) propagates unchanged, as it would from any Python function.

What each check accepts (anything else is refused):

- `integer(v, name, lo, hi)`: a Python or numpy integer (never a bool, a float, even a whole one, or a
  string) with lo <= v <= hi.
- `count(v, name)`: an `integer` >= 0 (byte offsets and sizes).
- `number(v, name, lo, hi)`: a Python or numpy integer or float (never a bool or a string) that converts to
  a float (so not 10**400), finite unless `finite=False`, in [lo, hi] (open ends with `lo_open`/`hi_open`).
- `time_ns(v, name)`: a `number` in [0, 2**63) ns (292 years of virtual time); `positive=True`: (0, 2**63).
- `flag(v, name)`: True or False (Python or numpy bool); also None with `allow_none` ("use the default").
- `choice(v, name, choices)`: one of the strings `choices` (`alloc`'s memory: 'dram' or 'shared').
- `pes(v, npes)`: None (every PE), or a non-empty list / tuple / range / set / 1-D integer numpy array of
  distinct `integer` PE numbers in [0, npes).
- `host_dtype(v, name)`: a str, a type, a numpy dtype or a structured spec (list / tuple / dict) numpy
  parses (a parse error of any kind is refused, so are negative field offsets), itemsize > 0, no Python
  objects, no unicode text (device bytes are not valid code points); never a number, bytes or a numpy scalar.
- `host_array(v, name)`: a numpy array, bytes / bytearray / memoryview, or a (nested) list or scalar numpy
  turns into a numeric array; never a str (its encoding is ambiguous), None or an object array.
- `out_array(v, name)`: a writable C-contiguous numpy array (0-d too) without Python objects or unicode text.
- `path_name(v, name)`: a non-empty str or os.PathLike (its os.fspath a str without NUL), a file to write.
- `file_path(v, name)`: a str or os.PathLike naming an existing regular file (never an int, which open()
  would take as a file descriptor, nor bytes).
- `kernel_scalar(v, spec, signature)`: integer dtypes (i8 i16 i32 i64 u8 u32): an `integer` in the dtype's
  range; f16 / f32: a `number` (int or float, not bool) of magnitude at most the f32 maximum
  (3.4028235e38), or +-inf or NaN, which pass as they are (the card receives fp32 bits for both float
  dtypes; the C API's VNPU_ARG_FLOAT has the same rule).
- `card_overrides(v)`: None, a mapping of dotted key strings to values, or a list of "key=value" strings
  (values parsed as YAML); no integer beyond +-2**63 anywhere.
- `config_numbers(data, where)`: YAML-shaped data without an integer beyond +-2**63 (a bigger one becomes
  neither a float nor an int64).
- `fault_settings(d)` / `fault_setting(key, v)`: known settings only: `seed` an `integer` in [0, 2**63);
  `*_rate` a `number` in [0, 1]; `*_per_mib` a `number` in [0, 8 * 2**20] (at most one error per bit);
  `link_down_at_ns` a finite `number` in (-2**63, 2**63) (< 0: never).
- `env_flag(var)`: an environment variable that is unset or empty (None), or one of 1/0, true/false,
  yes/no, on/off (any case).
- `read_yaml_file(path, name)`: a `file_path` of UTF-8 YAML text.
"""
from __future__ import annotations

import math
import os

import numpy as np

from vnpu.errors import ConfigError, InvalidArgument

I64 = 2**63
F32_MAX = float(np.finfo(np.float32).max)
INT_DTYPES = {"i8": np.int8, "i16": np.int16, "i32": np.int32, "i64": np.int64, "u8": np.uint8, "u32": np.uint32}
FLOAT_DTYPES = ("f16", "f32")
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def show(value) -> str:
    """A short description of a value for a message (an integer of 400 digits is not printed whole)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        return f"an integer of {len(str(abs(value)))} digits"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def integer(value, name, lo=None, hi=None, *, error=InvalidArgument) -> int:
    if not is_int(value):
        raise error(f"{name} must be an integer, got {type(value).__name__} {show(value)}")
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f"in [{lo}, {hi}]" if lo is not None and hi is not None else (f">= {lo}" if lo is not None else
                                                                            f"<= {hi}")
        raise error(f"{name} must be an integer {rng}, got {show(v)}")
    return v


def count(value, name, *, error=InvalidArgument) -> int:
    """A byte offset or size."""
    if not is_int(value) or int(value) < 0:
        raise error(f"{name} must be a non-negative integer, got {show(value)}")
    return int(value)


def number(value, name, lo=-math.inf, hi=math.inf, *, lo_open=False, hi_open=False, finite=True,
           kind="", error=InvalidArgument) -> float:
    """`kind` names what the number is in a range message ("a probability")."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise error(f"{name} must be a number, got {type(value).__name__} {show(value)}")
    try:
        v = float(value)
    except OverflowError:
        raise error(f"{name} = {show(value)} is out of range (it does not fit a float)") from None
    if math.isnan(v):
        if finite:
            raise error(f"{name} must be a finite number, got nan")
        return v
    if finite and math.isinf(v):
        raise error(f"{name} must be a finite number, got {v}")
    if (v < lo or (lo_open and v == lo)) or (v > hi or (hi_open and v == hi)):
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise error(f"{name} must be {kind + ' ' if kind else ''}in {interval}, got {show(value)}")
    return v


def time_ns(value, name, *, positive=False, error=ConfigError) -> float:
    return number(value, name, 0.0, float(I64), lo_open=positive, hi_open=True, error=error)


def flag(value, name, *, allow_none=False, error=InvalidArgument):
    if value is None and allow_none:
        return None
    if not isinstance(value, (bool, np.bool_)):
        raise error(f"{name} must be True or False{' (or None for the default)' if allow_none else ''}, got "
                    f"{type(value).__name__} {show(value)}")
    return bool(value)


def env_flag(var, environ=None):
    """True / False from an environment variable, None when it is unset or empty; ConfigError otherwise."""
    raw = (os.environ if environ is None else environ).get(var)
    if raw is None or not raw.strip():
        return None
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"environment variable {var}={show(raw)}: expected 1/0, true/false, yes/no or on/off")


def pes(value, npes, *, name="pes"):
    """None, or a tuple of distinct PE numbers in [0, npes)."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise InvalidArgument(f"{name} must be a 1-D list of PE numbers, got a {value.ndim}-D array")
        items = list(value)
    elif isinstance(value, (list, tuple, range, set, frozenset)):
        items = list(value)
    else:
        raise InvalidArgument(f"{name} must be a list of PE numbers 0..{npes - 1}, got {type(value).__name__} "
                              f"{show(value)}")
    if not items:
        raise InvalidArgument(f"{name} must name at least one PE (0..{npes - 1}), got an empty {type(value).__name__}")
    seen = set()
    for i, p in enumerate(items):
        if not is_int(p):
            raise InvalidArgument(f"{name}[{i}] must be an integer PE number 0..{npes - 1}, got "
                                  f"{type(p).__name__} {show(p)}")
        if not 0 <= int(p) < npes:
            raise InvalidArgument(f"{name}[{i}] = {show(int(p))} is not a PE of this card (0..{npes - 1})")
        if int(p) in seen:
            raise InvalidArgument(f"{name}[{i}]: PE {int(p)} is listed twice")
        seen.add(int(p))
    return tuple(int(p) for p in items)


def host_dtype(value, name="dtype") -> np.dtype:
    if not isinstance(value, (str, np.dtype, type, list, tuple, dict)):
        # numpy also takes a numpy scalar (its type), bytes or an object with .dtype: a mistake, not a dtype
        raise InvalidArgument(f"{name}: {show(value)} is not a numpy dtype (give a str, a type or a numpy dtype)")
    try:
        dt = np.dtype(value)
    except Exception:  # noqa: BLE001 - numpy's dtype parser raises TypeError, ValueError, SyntaxError, ...
        raise InvalidArgument(f"{name}: {show(value)} is not a numpy dtype") from None
    if dt.hasobject or dt.itemsize == 0 or _has_unicode(dt):
        raise InvalidArgument(f"{name}: cannot copy device bytes into {dt} elements (Python objects, unicode text "
                              f"or no size)")
    return dt


def _has_unicode(dt) -> bool:
    """Unicode ('U') anywhere in a dtype: arbitrary device bytes are not valid code points (numpy then fails
    on reading them with SystemError)."""
    if dt.kind == "U":
        return True
    if dt.subdtype is not None:
        return _has_unicode(dt.subdtype[0])
    return any(_has_unicode(dt.fields[n][0]) for n in dt.names or ())


def host_array(value, name) -> np.ndarray:
    """A C-contiguous numpy array of the host bytes to copy."""
    if value is None or isinstance(value, str):
        raise InvalidArgument(f"{name}: expected an array or bytes, got {type(value).__name__}"
                              f"{' (encode a str to bytes first)' if isinstance(value, str) else ''}")
    try:
        if isinstance(value, (bytes, bytearray, memoryview)):
            a = np.frombuffer(value, dtype=np.uint8) if not isinstance(value, memoryview) or value.c_contiguous \
                else np.frombuffer(value.tobytes(), dtype=np.uint8)
        else:
            a = np.ascontiguousarray(value)
    except Exception:  # noqa: BLE001 - ragged lists, failing __array__, ...: not an array
        raise InvalidArgument(f"{name}: expected an array, got {type(value).__name__} {show(value)}") from None
    if a.dtype.hasobject:
        raise InvalidArgument(f"{name}: an array of Python objects ({show(value)}) cannot be copied to a device")
    return a


def out_array(value, name) -> np.ndarray:
    if not isinstance(value, np.ndarray) or not value.flags.c_contiguous or not value.flags.writeable \
            or value.dtype.hasobject or _has_unicode(value.dtype):
        raise InvalidArgument(f"{name} must be a writable C-contiguous numpy array without Python objects or "
                              f"unicode text, got {type(value).__name__}"
                              f"{' of ' + str(value.dtype) if isinstance(value, np.ndarray) else ''}")
    return value


def path_name(value, name, *, error=InvalidArgument) -> str:
    """A str or os.PathLike whose os.fspath is a str without NUL (a file to write: it need not exist)."""
    p = None
    if isinstance(value, str) or (hasattr(value, "__fspath__") and not isinstance(value, bytes)):
        try:
            p = os.fspath(value)
        except TypeError:
            p = None
    if not isinstance(p, str) or not p or "\0" in p:
        raise error(f"{name} must be a path (str or os.PathLike), got {type(value).__name__} {show(value)}")
    return p


def file_path(value, name, *, what="file", error=InvalidArgument):
    """A path (str or os.PathLike) of an existing regular file."""
    if isinstance(value, (bytes, bool)) or not (isinstance(value, str) or hasattr(value, "__fspath__")):
        raise error(f"{name} must be a path (str or os.PathLike) of a {what}, got {type(value).__name__} "
                    f"{show(value)}")
    try:
        p = os.fspath(value)
        if not isinstance(p, str):
            raise TypeError
        if os.path.isdir(p):
            raise error(f"cannot read {name} {show(p)}: it is a directory, not a {what}")
        if not os.path.exists(p):
            raise error(f"cannot read {name} {show(p)}: no such file")
    except (TypeError, ValueError):   # __fspath__ returning bytes or garbage, a NUL in the name
        raise error(f"{name} must be a path (str or os.PathLike) of a {what}, got {show(value)}") from None
    return p


def read_yaml_file(path, name, *, what="YAML file", error=ConfigError):
    """Parse a YAML file as UTF-8; every way it can fail is `error` naming the path."""
    import yaml
    p = file_path(path, name, what=what, error=error)
    try:
        with open(p, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise error(f"cannot read {name} {p}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        from vnpu.emulator.config import yaml_error_text
        raise error(f"{p}: {yaml_error_text(e)}") from None
    except RecursionError:
        raise error(f"{p}: not valid YAML: nested too deeply") from None


def config_numbers(data, where, *, label="config key", error=ConfigError, depth=0):
    """Refuse integers beyond +-2**63 anywhere in YAML-shaped data (no setting needs one; float() of a
    400-digit one raises OverflowError). `where` is the dotted key of `data`, named in the message."""
    if depth > 50:
        raise error(f"{label} {where!r}: nested too deeply")
    if isinstance(data, dict):
        for k, v in data.items():
            config_numbers(v, f"{where}.{k}" if where else str(k), label=label, error=error, depth=depth + 1)
    elif isinstance(data, (list, tuple)):
        for i, v in enumerate(data):
            config_numbers(v, f"{where}[{i}]", label=label, error=error, depth=depth + 1)
    elif is_int(data) and not -I64 < int(data) < I64:
        raise error(f"{label} {where!r} = {show(int(data))} is out of range (beyond +-2**63)")
    return data


def card_overrides(value):
    """None or a dict {dotted key: value} (a list of "key=value" strings is parsed to one)."""
    import yaml
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        pairs = {}
        for i, item in enumerate(value):
            if not isinstance(item, str) or "=" not in item:
                raise ConfigError(f"card_overrides[{i}] must be a 'key=value' string, e.g. 'matrix.rows=16', got "
                                  f"{show(item)}")
            k, v = item.split("=", 1)
            try:
                pairs[k.strip()] = yaml.safe_load(v.strip())
            except yaml.YAMLError:
                pairs[k.strip()] = v.strip()
        value = pairs
    if not isinstance(value, dict):
        raise ConfigError(f"card_overrides must be a mapping of config keys to values (or a list of 'key=value' "
                          f"strings), got {type(value).__name__} {show(value)}")
    for k in value:
        if not isinstance(k, str):
            raise ConfigError(f"card_overrides key {show(k)} must be a dotted key string, e.g. 'matrix.rows'")
    for k, v in value.items():
        config_numbers(v, k, label="card_overrides key")
    return dict(value)


def kernel_scalar(value, spec, signature):
    """A scalar kernel argument for `spec` (an isa KernelArg): an int, or a float for f16 / f32."""
    what = f"{signature}: argument {spec.name!r}"
    if spec.dtype in FLOAT_DTYPES:
        v = number(value, what, finite=False)
        if math.isfinite(v) and abs(v) > F32_MAX:
            raise InvalidArgument(f"{what} = {show(value)} does not fit an f32 (largest {F32_MAX:.8g})")
        return value if is_int(value) else v
    info = np.iinfo(INT_DTYPES[spec.dtype])
    if not is_int(value):
        raise InvalidArgument(f"{what} must be an integer ({spec.dtype}), got {type(value).__name__} {show(value)}")
    if not info.min <= int(value) <= info.max:
        raise InvalidArgument(f"{what} = {show(int(value))} does not fit {spec.dtype} "
                              f"[{info.min}, {info.max}]")
    return int(value)


FAULT_RULES = {
    "seed": ("integer", 0, 2**63 - 1),
    "pcie_error_rate": ("number", 0.0, 1.0),
    "link_down_at_ns": ("number", -float(I64), float(I64)),
    "dram_sbe_per_mib": ("number", 0.0, 8.0 * 2**20),
    "dram_dbe_per_mib": ("number", 0.0, 8.0 * 2**20),
    "pe_hang_rate": ("number", 0.0, 1.0),
    "dma_error_rate": ("number", 0.0, 1.0),
}


def fault_setting(key, value):
    kind, lo, hi = FAULT_RULES[key]
    name = f"fault setting {key!r}"
    if kind == "integer":
        return integer(value, name, lo, hi, error=ConfigError)
    open_ends = key == "link_down_at_ns"
    kind = "a probability" if key.endswith("_rate") else "an error count per MiB" if key.endswith("_per_mib") \
        else "a virtual time (ns)"
    return number(value, name, lo, hi, lo_open=open_ends, hi_open=open_ends, kind=kind, error=ConfigError)


def fault_settings(data) -> dict:
    if not isinstance(data, dict):
        raise ConfigError(f"fault settings must be a mapping, got {type(data).__name__} {show(data)}")
    out = {}
    for k, v in data.items():
        if k not in FAULT_RULES:
            raise ConfigError(f"unknown fault setting {show(k)}; known: {', '.join(sorted(FAULT_RULES))}")
        out[k] = fault_setting(k, v)
    return out


def choice(value, name, choices, *, error=InvalidArgument):
    """One of the strings `choices`."""
    if not isinstance(value, str) or value not in choices:
        raise error(f"{name} must be one of {', '.join(map(repr, choices))}, got {show(value)}")
    return value
