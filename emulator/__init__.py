"""vnpu.emulator: the card (config, memories, PEs, units, timing, sanitizer, trace).

Numba caches a compiled function keyed on its own file only, so a change in a unit it calls (another file), or
in the tables compiled code reads as constants (dispatch.py and state.py, from isa/), would leave a stale
cache. We key the cache directory on a hash of this folder's and isa/'s sources instead.
"""
import hashlib as _hashlib
import os as _os


def _set_numba_cache_dir():
    if _os.environ.get("NUMBA_CACHE_DIR"):
        return
    here = _os.path.dirname(_os.path.abspath(__file__))
    h = _hashlib.sha1()
    for folder in (here, _os.path.join(_os.path.dirname(here), "isa")):
        for name in sorted(_os.listdir(folder)):
            if name.endswith(".py"):
                with open(_os.path.join(folder, name), "rb") as f:
                    h.update(name.encode() + f.read())
    base = _os.environ.get("XDG_CACHE_HOME") or _os.path.join(_os.path.expanduser("~"), ".cache")
    path = _os.path.join(base, "vnpu", "numba-" + h.hexdigest()[:16])
    import numba
    numba.config.CACHE_DIR = path


_set_numba_cache_dir()
