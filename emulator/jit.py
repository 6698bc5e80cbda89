"""The one decorator of the card's compiled functions: nopython, no GIL, cached, compiled for plain types.

Numba's `njit` compiles a function called with a constant (`book(res, R_DRAM, ...)`) for that constant's
literal type, so each distinct constant at a call site costs one more compilation of the callee (33 versions
of the fault helper once, two of most DMA helpers). A cold start is mostly compilation, so the card's
functions compile for the arguments' plain types instead: one version per function, however it is called.
"""
from numba import types
from numba.core import config, sigutils
from numba.core.registry import CPUDispatcher


class CardDispatcher(CPUDispatcher):
    """A CPU dispatcher that types a call with its arguments' plain (non-literal) types."""

    def get_call_template(self, args, kws):
        return super().get_call_template(tuple(types.unliteral(a) for a in args),
                                         {k: types.unliteral(v) for k, v in kws.items()})


SHARED = []     # helpers both the core and the units' entries call, with their argument types (see `jit`)


def jit(function=None, shared=None, **options):
    """`@jit`, `@jit(inline="always")`; other options as numba's (fastmath=...). Always nopython, nogil and
    cached, compiled lazily.

    shared="void(int64[::1], int64)": a helper the core and the units' entries both call, with the argument
    types they call it with. It still compiles lazily (a warm process never loads it: the compiled core and
    entries contain it), but a cold first launch compiles every shared helper before it starts compiling the
    core and the entries in two processes (units._prepare), so they are compiled once, not once in each."""
    targetoptions = {"nopython": True, "nogil": True, **options}

    def wrap(fn):
        if config.DISABLE_JIT:
            return fn
        disp = CardDispatcher(py_func=fn, locals={}, targetoptions=targetoptions)
        disp.enable_caching()
        if shared is not None:
            SHARED.append((disp, tuple(sigutils.normalize_signature(shared)[0])))
        return disp

    return wrap(function) if function is not None else wrap
