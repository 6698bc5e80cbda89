"""Run a library kernel on a card: place the inputs, allocate the outputs, launch, read back, free.

Built images are cached per (kernel family, parameters) and loaded once per card.
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import numpy as np

_images = {}
_lock = threading.Lock()


@dataclass
class Out:
    """An output buffer of the given shape and dtype (zero-filled on the card), in DRAM or (memory="shared")
    the shared SRAM."""
    shape: tuple
    dtype: object
    memory: str = "dram"


@dataclass
class OnChip:
    """An input array placed in the card's shared SRAM instead of DRAM (e.g. resident weights)."""
    array: np.ndarray


@dataclass
class Scratch:
    """Device memory a kernel needs for intermediate results (DRAM, or `memory="shared"`)."""
    nbytes: int
    memory: str = "dram"


def image(key, build):
    """The module image for `key`, built once by `build()` (a function returning bytes)."""
    with _lock:
        if key not in _images:
            _images[key] = build()
        return _images[key]


def _loaded_module(card, key, img):
    """The image loaded on this card (kept on the card object, so a new card never sees an old load)."""
    with _lock:
        cache = card.__dict__.setdefault("_library_modules", {})
        lm = cache.get(key)
        if lm is None or lm.handle not in card.modules:
            lm = card.load(img)
            cache[key] = lm
        return lm


# --- constants a runtime promises not to change: host work derived from them is done once ----------------------
_CONSTANTS = weakref.WeakValueDictionary()     # id(array) -> array
_DERIVED = {}                                  # (id(array), key) -> what was derived from it


def mark_constant(array):
    """Declare `array` a constant its owner will not change while it lives (a compiled model's weights): kernels'
    host functions may then keep what they derive from it (`derived`). Arrays nobody marked are never cached."""
    if isinstance(array, np.ndarray):
        _CONSTANTS[id(array)] = array


def is_constant(array) -> bool:
    return isinstance(array, np.ndarray) and _CONSTANTS.get(id(array)) is array


def derived(array, key, make):
    """make(), once per (constant array, key) while the array lives; for an array not marked constant, make()
    every time. The result is read-only and a constant itself."""
    if not is_constant(array):
        return make()
    k = (id(array), key)
    out = _DERIVED.get(k)
    if out is None:
        out = make()
        out.setflags(write=False)
        mark_constant(out)
        _DERIVED[k] = out
        weakref.finalize(array, _DERIVED.pop, k, None)
    return out


def run(card, key, build, kernel, args, pes=None, sanitize=None, engine="numba", trace=False):
    """Launch `kernel` of the image `key` with args (arrays are inputs, Out/Scratch are allocated, numbers
    are scalars). Returns ([output arrays in order], LaunchResult). sanitize=None: the card's default (on,
    unless a runtime's `card.recording(sanitize=False)` block says otherwise)."""
    img = image(key, build)
    lm = _loaded_module(card, key, img)
    owned, outs, values = [], [], []
    try:
        for a in args:
            if isinstance(a, Out):
                nbytes = int(np.prod(a.shape, dtype=np.int64)) * np.dtype(a.dtype).itemsize
                addr = card.alloc(max(1, nbytes), memory=a.memory)
                owned.append(addr)
                outs.append((addr, a))
                values.append(addr)
            elif isinstance(a, Scratch):
                addr = card.alloc(max(1, a.nbytes), memory=a.memory)
                owned.append(addr)
                values.append(addr)
            elif isinstance(a, (np.ndarray, OnChip)):
                memory = "shared" if isinstance(a, OnChip) else "dram"
                addr, own = card.place(a.array if isinstance(a, OnChip) else a, memory)   # a pinned array: resident
                if own:
                    owned.append(addr)
                values.append(addr)
            else:
                values.append(a)
        result = card.launch(lm, kernel, values, pes=pes, sanitize=sanitize, engine=engine, trace=trace)
        arrays = []
        for addr, o in outs:
            n = int(np.prod(o.shape, dtype=np.int64))
            dt = np.dtype(o.dtype)
            arrays.append(card.read(addr, n * dt.itemsize).view(dt).reshape(o.shape).copy() if n else
                          np.zeros(o.shape, dt))
        return arrays, result
    finally:
        for addr in owned:
            card.free(addr)


def run_kernel(card, key, k, example, args, consts, name, pes=None, trace=False):
    """Run a kernel-language kernel k of the library: compiled for the example arguments (None: an absent
    tensor) and constexprs once per key, launched on args (the present ones) + consts. The build function
    carries (kernel, consts, example), so a test can interpret the same kernel on the same arguments."""
    def build():
        return k.compile(*example, *consts, config=card.config).image
    build.kernel, build.consts, build.example = k, tuple(consts), list(example)
    return run(card, key, build, name, [a for a in args if a is not None], pes=pes, trace=trace)


def card_key(card):
    """What a compiled library kernel depends on in a card's configuration (part of its cache key)."""
    c = card.config
    return (c.data["name"], int(c.local_memory.bytes), int(c.shared_sram.bytes), c.pes, c.dma.engines_per_pe)


def nothing(card, kernel, pes=None):
    """Launch a kernel named `kernel` that does no work, for an op whose result is empty (a dimension is 0):
    the op still returns a real LaunchResult (its few cycles are the launch itself), and never refuses an
    empty but well-formed shape."""
    from .builder import KernelBuilder

    def build():
        kb = KernelBuilder()
        with kb.kernel(kernel):
            pass
        return kb.build()
    _, result = run(card, ("nothing", kernel), build, kernel, [], pes=pes)
    return result
