"""The units' entries: each compiled on its own, the first time a launch needs it, and called by the core through
its address.

An entry is an issue function (dispatch.ENTRIES): `dma.issue`, `matrix.issue`, the vector unit's
`issue_elementwise`, `issue_reduce` and `issue_convert`, `embedding.issue`. Why not call them directly: a
compiled function carries every function it calls, so a core calling the units compiled all of them, and LLVM
optimized them again inside the core, on the first launch of a new process even for a vector add (42 s of
cold start on two cores). Through an address, the core compiles once without them and a launch compiles, or
loads from the cache, only the entries its code names: a scalar loop with one DMA brings the DMA entry, a
vector add the DMA and elementwise entries, a DLRM most of them. A process's first launch compiles its entries
in a helper process while it compiles the core (`_prepare`).

Every entry has one signature (`issue_argtypes`): the launch's named structures (state.py), the PE, the pc,
the PE's cycle and its registers; it returns (completion cycle or -1 with a fault recorded, cycles the PE
stalled). `call_unit` checks at the core's compile time that the core calls with exactly those types, and
`_compile` that every compiled entry returns exactly that, so the call through the address cannot disagree
with the function behind it.
"""
import logging
import os
import subprocess
import sys
import threading

import numpy as np
from numba import typeof, types
from numba.core import cgutils, config
from numba.core.errors import TypingError
from numba.extending import intrinsic

from vnpu.isa import table as T

from . import dma, embedding, matrix, vector
from .dispatch import ENTRIES, UNIT_SLOT
from .jit import SHARED
from .state import NCFG, NCSTAT, NEV, NFAULT, NPSTAT, NRES, Checks, Memory, Program, Record, Scratch, Units

ISSUE = {"dma": dma.issue, "matrix": matrix.issue, "vector.elementwise": vector.issue_elementwise,
         "vector.reduce": vector.issue_reduce, "vector.convert": vector.issue_convert, "embedding": embedding.issue}
NENTRIES = len(ENTRIES)
assert set(ISSUE) == set(ENTRIES)
RESULT = types.UniTuple(types.int64, 2)     # (completion cycle, or -1 with a fault recorded; cycles stalled)
_lock = threading.RLock()
_log = logging.getLogger(__name__)
HELPER_TIMEOUT_S = 300       # a helper that takes longer (it needs 5-15 s) is stopped and this process compiles
_address = {}                               # entry (slot) -> address of its compiled issue, in this process
_argtypes = []


def issue_argtypes():
    """The numba types a unit's issue takes, from arrays shaped as a launch makes them (Card._launch builds
    Program, Memory, Record and Checks; the core builds Units and Scratch)."""
    if not _argtypes:
        i8 = np.int64
        z = np.zeros
        prog = Program(z((1, T.NCOLS), i8), i8(0), z(1, i8), z(3, i8), z(NENTRIES, i8))
        mem = Memory(z(1, np.uint8), z(1, np.int32), z(8, i8), z((1, 1), np.uint8))
        rec = Record(z((1, NPSTAT), i8), z(NCSTAT, i8), z((0, NEV), i8), z(1, i8))
        chk = Checks(z(NFAULT, i8), z((1, 1), i8), z(2, i8), True)
        units = Units(z((1, 1, 1), i8), z((1, 1), i8), z(1, i8), z(1, i8), z((1, 1), i8), z((1, 1, 1), i8),
                      z((1, 1), i8), z((1, 1, 6), i8), z((1, 3), i8), z(1, i8))
        scratch = Scratch(z((1, 2), i8), z(6, i8), z(6, i8), z(1, i8))
        _argtypes.append(tuple(typeof(v) for v in (prog, mem, z(NCFG), z(NRES, i8), rec, chk, units, scratch))
                         + (types.int64, types.int64, types.int64, typeof(z(1, i8))))
    return _argtypes[0]


@intrinsic
def call_unit(typingctx, address, prog, mem, cfg, res, rec, chk, units, scratch, p, cur, tp, r):
    """Call the unit `issue` compiled at `address` (entry_points) with the launch's state; returns RESULT."""
    args = tuple(types.unliteral(a) for a in (prog, mem, cfg, res, rec, chk, units, scratch, p, cur, tp, r))
    want = issue_argtypes()
    if args != want:
        bad = [f"argument {i}: {a} (want {w})" for i, (a, w) in enumerate(zip(args, want)) if a != w]
        raise TypingError("call_unit: the core calls a unit with other types than units.issue_argtypes: "
                          + "; ".join(bad))

    def codegen(context, builder, sig, llargs):
        fnty = context.call_conv.get_function_type(RESULT, args)
        fn = builder.inttoptr(llargs[0], fnty.as_pointer())
        status, out = context.call_conv.call_function(builder, fn, RESULT, args, llargs[1:])
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return out

    return RESULT(types.int64, *args), codegen


def _compile(slot):
    """Address of entry `slot`'s issue in this process: compiled now, or loaded from numba's cache."""
    with _lock:
        if slot not in _address:
            fn = ISSUE[ENTRIES[slot]]
            sig = issue_argtypes()
            fn.compile(RESULT(*sig))        # returns cast to RESULT, whatever integer types it returns
            cres = fn.overloads[sig]
            if cres.signature.return_type != RESULT:
                raise TypeError(f"{ENTRIES[slot]} issue returns {cres.signature.return_type}, "
                                f"the core expects {RESULT}")
            address = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
            if not address:
                raise RuntimeError(f"numba gave no address for the compiled {ENTRIES[slot]} entry")
            _address[slot] = address
        return _address[slot]


def core_argtypes():
    """The numba types run_launch is called with (Card._launch): the units' first six and the registers."""
    return issue_argtypes()[:6] + (typeof(np.zeros((1, T.NUM_REGS), dtype=np.int64)),)


def _from_cache(fn, sig):
    """Load fn's version for `sig` from numba's cache, as fn.compile(sig) would first try, but never compile.
    True when fn has it now. Numba has no public call for this; any surprise means "not cached"."""
    args = tuple(sig.args) if hasattr(sig, "args") else tuple(sig)
    if args in fn.overloads:
        return True
    try:
        from numba.core.compiler_lock import global_compiler_lock
        with global_compiler_lock:
            cres = fn._cache.load_overload(sig, fn.targetctx)
            if cres is None:
                return False
            fn.targetctx.insert_user_function(cres.entry_point, cres.fndesc, [cres.library])
            fn.add_overload(cres)
        return True
    except Exception:
        return False


def _helper_allowed():
    """Compile in a second process only from a Python interpreter (not an embedding program) and unless
    VNPU_COMPILE_HELPER=0."""
    name = os.path.basename(sys.executable or "")
    return os.environ.get("VNPU_COMPILE_HELPER", "1") != "0" and name.startswith("python")


def _start_helper(slots):
    """A second Python process that compiles these entries into numba's cache (numba compiles one function
    at a time per process, and a cold start is mostly compiling; the card's two cores can share it)."""
    import numba
    # the same cache (already keyed by the sources: emulator/__init__.py) and the same import path
    env = dict(os.environ, NUMBA_CACHE_DIR=numba.config.CACHE_DIR,
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    code = f"from vnpu.emulator import units; units.compile_in_helper({list(slots)!r})"
    try:
        return subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return None


def compile_in_helper(slots):
    for slot in slots:
        _compile(slot)


def _prepare(slots):
    """Make the entries `slots` ready in this process. What numba's cache holds is loaded; what it does not is
    compiled, and when there are two things to compile (the core on a process's first launch, or a second
    entry) a helper process compiles the entries while this one compiles the core or the first entry. If the
    helper fails, this process compiles what is left itself; the result is the same code either way."""
    from .core import run_launch
    argtypes = issue_argtypes()
    cold = [s for s in slots if not _from_cache(ISSUE[ENTRIES[s]], RESULT(*argtypes))]
    core_cold = not _from_cache(run_launch, core_argtypes())
    helper = None
    mine = cold
    if cold and (core_cold or len(cold) > 1) and _helper_allowed():
        for fn, args in SHARED:     # both processes call these: compile them once, before the helper starts
            fn.compile(args)
        mine = [] if core_cold else cold[:1]
        helper = _start_helper([s for s in cold if s not in mine])
    try:
        if core_cold:
            run_launch.compile(core_argtypes())
        for s in mine:
            _compile(s)
        if helper is not None:
            try:
                code = helper.wait(timeout=HELPER_TIMEOUT_S)
                if code != 0:
                    _log.debug("the compile helper exited with %s; compiling its entries here", code)
            except subprocess.TimeoutExpired:
                _log.debug("the compile helper took over %s s; compiling its entries here", HELPER_TIMEOUT_S)
    finally:
        if helper is not None and helper.poll() is None:     # an error or an interrupt here: stop it
            helper.kill()
            helper.wait()
    for s in slots:
        _compile(s)          # from the cache the helper filled, or compiled here if it could not


def entry_points(code):
    """The entry table of a launch of the decoded `code`: the address of each entry its instructions need,
    0 for the others (the core faults rather than call 0; it cannot happen, since code holds every
    instruction a launch can run). The first launch that needs an entry compiles it (see _prepare)."""
    if config.DISABLE_JIT:       # numba off: the core calls the entries as Python functions (core.py)
        return np.zeros(NENTRIES, dtype=np.int64)
    used = np.zeros(NENTRIES + 1, dtype=np.bool_)
    used[UNIT_SLOT[code[:, 0]] + 1] = True
    slots = [int(s) for s in np.flatnonzero(used[1:])]
    missing = [s for s in slots if s not in _address]
    if missing:
        with _lock:
            _prepare([s for s in missing if s not in _address])
    out = np.zeros(NENTRIES, dtype=np.int64)
    for s in slots:
        out[s] = _address[s]
    return out
