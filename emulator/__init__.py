"""vnpu.emulator: the card (config, memories, PEs, units, timing, sanitizer, trace).

Numba caches a compiled function keyed on its own file only, so a change in a unit it calls (another file), or
in the tables compiled code reads as constants (dispatch.py and state.py, from isa/), would leave a stale
cache; worse, a core compiled for an older layout of the launch's structures would call a unit entry compiled
for the new one through its address (units.py). We key the cache directory on a hash of this folder's and
isa/'s sources instead: `~/.cache/vnpu/numba-<hash>`, or `$NUMBA_CACHE_DIR/numba-<hash>` when that is set.
A directory unused for CACHE_KEEP_DAYS is removed when a new one is made beside it.
"""
import hashlib as _hashlib
import os as _os
import shutil as _shutil
import time as _time

CACHE_KEEP_DAYS = 14


def _set_numba_cache_dir():
    here = _os.path.dirname(_os.path.abspath(__file__))
    h = _hashlib.sha1()
    for folder in (here, _os.path.join(_os.path.dirname(here), "isa")):
        for name in sorted(_os.listdir(folder)):
            if name.endswith(".py"):
                with open(_os.path.join(folder, name), "rb") as f:
                    h.update(name.encode() + f.read())
    name = "numba-" + h.hexdigest()[:16]
    given = _os.environ.get("NUMBA_CACHE_DIR")
    if given:
        # a helper process (units.py) is given the keyed directory itself: do not key it twice
        path = given if _os.path.basename(_os.path.normpath(given)) == name else _os.path.join(given, name)
    else:
        base = _os.environ.get("XDG_CACHE_HOME") or _os.path.join(_os.path.expanduser("~"), ".cache")
        path = _os.path.join(base, "vnpu", name)
    if not _os.path.isdir(path):
        _prune(_os.path.dirname(path), name)
    import numba
    numba.config.CACHE_DIR = path


def _prune(parent, keep):
    """Remove the numba-* directories beside a new one that nothing has written for CACHE_KEEP_DAYS (each
    edit of the emulator's sources makes a new one, about 10 MB)."""
    try:
        old = _time.time() - CACHE_KEEP_DAYS * 86400
        for entry in _os.scandir(parent):
            if entry.name.startswith("numba-") and entry.name != keep and entry.is_dir() \
                    and _newest(entry.path) < old:
                _shutil.rmtree(entry.path, ignore_errors=True)
    except OSError:
        pass


def _newest(path):
    """The latest modification time of anything under path (numba writes its files in subdirectories)."""
    newest = _os.stat(path).st_mtime
    for root, dirs, files in _os.walk(path):
        for n in dirs + files:
            try:
                newest = max(newest, _os.stat(_os.path.join(root, n)).st_mtime)
            except OSError:
                pass
    return newest


_set_numba_cache_dir()
