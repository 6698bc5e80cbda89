"""vnpu.emulator: the card (config, memories, PEs, units, timing, sanitizer, trace).

Numba caches a compiled function keyed on its own file only, so a change in a unit it calls (another file)
would leave a stale cache. We key the cache directory on a hash of this folder's sources instead.
"""
import hashlib as _hashlib
import os as _os


def _set_numba_cache_dir():
    if _os.environ.get("NUMBA_CACHE_DIR"):
        return
    here = _os.path.dirname(_os.path.abspath(__file__))
    h = _hashlib.sha1()
    for name in sorted(_os.listdir(here)):
        if name.endswith(".py"):
            with open(_os.path.join(here, name), "rb") as f:
                text = f.read()
            if b"njit" in text:  # only compiled code invalidates the cache
                h.update(name.encode() + text)
    base = _os.environ.get("XDG_CACHE_HOME") or _os.path.join(_os.path.expanduser("~"), ".cache")
    path = _os.path.join(base, "vnpu", "numba-" + h.hexdigest()[:16])
    import numba
    numba.config.CACHE_DIR = path


_set_numba_cache_dir()
