"""Test your own kernels: run one on a virtual card, on both engines, and compare it with a reference.

    from vnpu.testing import Out, assert_kernel

    runs = assert_kernel(kb, {"x": x, "n": x.size, "alpha": 0.5},
                         reference=lambda x, n, alpha: x * np.float32(alpha),
                         outputs={"y": Out(x.shape, np.float32)})
    assert runs["numba"].cycles < 5_000

`assert_kernel` runs the kernel on the timed Numba core (with the race sanitizer) and on the numpy
reference interpreter (a kernel written in the kernel language, `@vnpu.kernel`, also in its own interpreter,
`Kernel.interpret`), compares every output with the reference within rtol/atol (torch.testing.assert_close
defaults by dtype), checks that the engines agree bit for bit, and on a mismatch raises AssertionError
naming the first differing element, how many differ, the engine, the cycles and the Perfetto trace file it
wrote. Installing vnpu also installs a pytest plugin (`vnpu.testing.plugin`) with the fixtures
`vnpu_card`, `vnpu_engine` and `vnpu_platform`; docs/testing.md is the guide.

This module needs numpy only (not pytest); the card is imported on the first call.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import re
import sys
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from vnpu.errors import InvalidArgument, VnpuError
from vnpu.kernels.runner import OnChip, Out, Scratch

__all__ = ["assert_kernel", "KernelRun", "Out", "OnChip", "Scratch", "ENGINES", "INTERPRET",
           "default_tolerances", "TRACE_DIR_ENV"]

#: the two engines: the timed Numba core and the numpy reference interpreter (untimed, no sanitizer)
ENGINES = ("numba", "reference")
#: the name of a language kernel's own interpreter run (Kernel.interpret) in assert_kernel's result
INTERPRET = "interpret"
#: environment variable naming the folder for failure traces (else the pytest option --vnpu-trace-dir,
#: else a fresh temporary folder per process)
TRACE_DIR_ENV = "VNPU_TRACE_DIR"

# numpy dtype of each kernel-argument dtype of the ISA (isa/table.py ARG_DTYPES)
_NP = {"i8": np.int8, "i32": np.int32, "f16": np.float16, "f32": np.float32, "i64": np.int64, "u8": np.uint8,
       "i16": np.int16, "u32": np.uint32}

# torch.testing.assert_close's defaults (rtol, atol) by dtype; integers compare exactly
_TOLERANCES = {np.dtype(np.float16): (1e-3, 1e-5), np.dtype(np.float32): (1.3e-6, 1e-5),
               np.dtype(np.float64): (1e-7, 1e-7)}

_trace_dir = None            # set by the pytest plugin's --vnpu-trace-dir
_tmp_trace_dir = None
_trace_lock = threading.Lock()


def default_tolerances(dtype):
    """(rtol, atol) used for an output of this dtype when assert_kernel is given neither: the defaults of
    torch.testing.assert_close (float16 1e-3/1e-5, float32 1.3e-6/1e-5, float64 1e-7/1e-7; exact for
    integers and bool)."""
    return _TOLERANCES.get(np.dtype(dtype), (0.0, 0.0))


@dataclass
class KernelRun:
    """One engine's run of the kernel: its outputs by name, its cycles (0 on the untimed reference engine and
    the interpreter) and the card's LaunchResult (`launch.summary()`, `launch.chrome_trace()`, per-PE
    statistics; None for the interpreter). A language kernel's card runs also keep their `profile`
    (vnpu.kernels.lang.Profile: utilization, bytes, roofline, write_trace)."""
    engine: str
    outputs: dict
    cycles: int
    launch: object = field(repr=False)
    profile: object = field(default=None, repr=False)

    def __getitem__(self, name):
        return self.outputs[name]

    def _launch(self):
        if self.launch is None:
            raise InvalidArgument(f"the {self.engine} run has no launch on a card: no summary or trace")
        return self.launch

    def summary(self) -> dict:
        """Where the cycles went (vnpu.emulator.trace.summarize)."""
        return self._launch().summary()

    def write_trace(self, path) -> str:
        """Write this run's Perfetto / Chrome trace to `path` (only the numba engine records events)."""
        self._launch()
        from vnpu.emulator.trace import write_chrome_trace
        write_chrome_trace(os.fspath(path), [self.launch.chrome_trace(card_name=f"{self.launch.kernel} "
                                                                                f"({self.engine})")])
        return os.fspath(path)


# --- what the kernel is ------------------------------------------------------------------------------
def _image(kernel):
    """(module image bytes, Module) of an image, a Module, a KernelBuilder or assembly text."""
    from vnpu.isa.module import Module, build_image, load_module
    if isinstance(kernel, (bytes, bytearray, memoryview)):
        image = bytes(kernel)
        return image, load_module(image)
    if isinstance(kernel, Module):
        image = kernel.image or build_image(kernel.code, kernel.rodata, list(kernel.kernels.values()))
        return image, kernel
    if isinstance(kernel, str):
        from vnpu.isa.asm import assemble
        image = assemble(kernel, source="assert_kernel")
        return image, load_module(image)
    if hasattr(kernel, "build") and hasattr(kernel, "text"):      # kernels.builder.KernelBuilder
        image = kernel.build()
        return image, load_module(image)
    raise InvalidArgument(f"assert_kernel: kernel must be a module image (bytes), a vnpu.Module, a "
                          f"KernelBuilder or assembly text, got {type(kernel).__name__}")


def _symbol(module, name):
    if name is None:
        if len(module.kernels) != 1:
            raise InvalidArgument(f"assert_kernel: the module has kernels {', '.join(sorted(module.kernels))}; "
                                  f"say which with name=...")
        name = next(iter(module.kernels))
    if name not in module.kernels:
        raise InvalidArgument(f"assert_kernel: no kernel {name!r} in the module; it has "
                              f"{', '.join(sorted(module.kernels)) or 'none'}")
    return module.kernels[name]


def _shape(shape):
    return (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)


def _as_out(name, spec):
    if isinstance(spec, Out):
        return Out(_shape(spec.shape), np.dtype(spec.dtype))
    if isinstance(spec, np.ndarray):
        return Out(spec.shape, spec.dtype)
    if isinstance(spec, tuple) and len(spec) == 2:
        return Out(_shape(spec[0]), np.dtype(spec[1]))
    raise InvalidArgument(f"assert_kernel: output {name!r} must be Out(shape, dtype), (shape, dtype) or an array "
                          f"whose shape and dtype it has, got {type(spec).__name__}")


def _bind(sym, inputs, outputs):
    """The launch arguments in signature order (arrays, OnChip, Scratch, Out, numbers), the output names in
    order, and the reference's arguments (positional list or keyword dict)."""
    names = [a.name for a in sym.args]
    if isinstance(inputs, Mapping):
        given = dict(inputs)
    elif isinstance(inputs, (list, tuple)):
        if len(inputs) + len(outputs or {}) != len(names):
            raise InvalidArgument(f"assert_kernel: {sym.signature()} takes {len(names)} arguments; got "
                                  f"{len(inputs)} inputs and {len(outputs or {})} outputs")
        free = [n for n in names if n not in (outputs or {})]
        given = dict(zip(free, inputs))
    else:
        raise InvalidArgument(f"assert_kernel: inputs must be a dict of kernel arguments by name or a list in "
                              f"signature order, got {type(inputs).__name__}")
    outs = {}
    if outputs is not None:
        if not isinstance(outputs, Mapping):
            raise InvalidArgument("assert_kernel: outputs must be a dict {argument name: Out(shape, dtype)}")
        for n, spec in outputs.items():
            if n in given:
                raise InvalidArgument(f"assert_kernel: {n!r} is both an input and an output; in-place kernels are "
                                      f"not supported yet: give the output its own buffer argument")
            outs[n] = _as_out(n, spec)
    for n, v in given.items():
        if isinstance(v, Out):
            outs[n] = _as_out(n, v)
    values = {**given, **outs}
    missing = [n for n in names if n not in values]
    unknown = [n for n in values if n not in names]
    if missing or unknown:
        parts = ([f"missing argument(s) {', '.join(missing)}"] if missing else []) + \
                ([f"unknown argument(s) {', '.join(map(str, unknown))}"] if unknown else [])
        raise InvalidArgument(f"assert_kernel: {'; '.join(parts)}: the kernel is {sym.signature()}")
    if not outs:
        raise InvalidArgument(f"assert_kernel: no outputs to check; name them with outputs={{name: Out(shape, "
                              f"dtype)}} (the kernel is {sym.signature()})")
    args, ref_args = [], {}
    for a in sym.args:
        v = values[a.name]
        want = np.dtype(_NP[a.dtype])
        if a.kind == "buffer":
            arr = v.array if isinstance(v, OnChip) else v
            if isinstance(v, Scratch):
                pass
            elif isinstance(arr, Out):
                if np.dtype(arr.dtype) != want:
                    raise InvalidArgument(f"assert_kernel: output {a.name!r} is buffer {a.dtype} in "
                                          f"{sym.signature()} but Out has dtype {np.dtype(arr.dtype)}")
                v = arr
            elif isinstance(arr, np.ndarray):
                if arr.dtype != want:
                    raise InvalidArgument(f"assert_kernel: argument {a.name!r} is buffer {a.dtype} in "
                                          f"{sym.signature()} but the array is {arr.dtype}; pass "
                                          f"x.astype(np.{want.name}) (or declare the buffer's dtype)")
                ref_args[a.name] = arr.copy()
            else:
                raise InvalidArgument(f"assert_kernel: argument {a.name!r} is a buffer: give a numpy array, "
                                      f"OnChip(array), Scratch(nbytes) or an output Out(shape, dtype); got "
                                      f"{type(v).__name__}")
        else:
            if isinstance(v, (np.ndarray, Out, OnChip, Scratch)) and not (isinstance(v, np.ndarray) and v.ndim == 0):
                raise InvalidArgument(f"assert_kernel: argument {a.name!r} is scalar {a.dtype} in "
                                      f"{sym.signature()}; give a number, got {type(v).__name__}")
            if isinstance(v, np.ndarray):
                v = v.item()
            ref_args[a.name] = v
        args.append(v)
    return args, list(outs), ref_args, isinstance(inputs, Mapping)


def _expected(reference, ref_args, by_name, out_names):
    """The reference's outputs by name."""
    if callable(reference):
        try:
            got = reference(**ref_args) if by_name else reference(*ref_args.values())
        except TypeError as e:
            e.add_note(f"assert_kernel calls the reference with the inputs "
                       f"{'by name: ' if by_name else 'in signature order: '}{', '.join(ref_args)}")
            raise
    else:
        got = reference
    if isinstance(got, Mapping):
        if set(got) != set(out_names):
            raise InvalidArgument(f"assert_kernel: the reference gives outputs {', '.join(map(str, got))}; the "
                                  f"kernel's outputs are {', '.join(out_names)}")
        return {n: np.asarray(got[n]) for n in out_names}
    if isinstance(got, (list, tuple)) and len(out_names) > 1:
        got = list(got)
    else:
        got = [got]
    if len(got) != len(out_names):
        raise InvalidArgument(f"assert_kernel: the reference gives {len(got)} outputs; the kernel has "
                              f"{len(out_names)} ({', '.join(out_names)})")
    return {n: np.asarray(g) for n, g in zip(out_names, got)}


# --- running -------------------------------------------------------------------------------------------
def _run(card, image, sym, args, out_names, engine, pes, sanitize):
    from vnpu.kernels import runner
    key = ("vnpu.testing", hashlib.sha256(image).hexdigest())
    arrays, launch = runner.run(card, key, lambda: image, sym.name, args, pes=pes, sanitize=sanitize,
                                engine=engine, trace=engine == "numba")
    return KernelRun(engine, dict(zip(out_names, arrays)), int(launch.cycles), launch)


def _where(card, launch):
    pes = launch.pes
    span = f"PEs {pes[0]}-{pes[-1]}" if len(pes) > 1 and list(pes) == list(range(pes[0], pes[-1] + 1)) else \
        f"PE{'s' if len(pes) > 1 else ''} {','.join(map(str, pes))}"
    return f"{span} of the {card.config.name} card"


def _trace_folder(trace_dir):
    global _tmp_trace_dir
    d = trace_dir or os.environ.get(TRACE_DIR_ENV) or _trace_dir
    if d:
        os.makedirs(d, exist_ok=True)
        return os.fspath(d)
    with _trace_lock:
        if _tmp_trace_dir is None:
            _tmp_trace_dir = tempfile.mkdtemp(prefix="vnpu-traces-")
        return _tmp_trace_dir


def _write_failure_trace(run, trace_dir):
    """Write the timed run's trace; returns its path (or why there is none)."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0].split("::")[-1]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{test + '-' if test else ''}{run.launch.kernel}")[:120]
    try:
        folder = _trace_folder(trace_dir)
        with _trace_lock:
            path, i = os.path.join(folder, f"{stem}.json"), 1
            while os.path.exists(path):
                i += 1
                path = os.path.join(folder, f"{stem}-{i}.json")
            open(path, "w").close()     # claim the name
        run.write_trace(path)
        if len(run.launch.events) >= _max_events():
            return f"{path} (the first {len(run.launch.events)} events only)"
        return path
    except (OSError, VnpuError) as e:
        return f"none written ({e})"


def _max_events():
    from vnpu.emulator.card import DEFAULT_TRACE_EVENTS
    return DEFAULT_TRACE_EVENTS


# --- comparing -------------------------------------------------------------------------------------------
def _fmt(v):
    v = v.item() if isinstance(v, np.generic) else v
    return repr(v) if not isinstance(v, float) else f"{v:.9g}"


def _fmt_el(arr, idx):
    return str(arr[idx]) if arr.ndim else str(arr[()])


def _close(got, exp, rtol, atol, equal_nan):
    """Elementwise: |got - exp| <= atol + rtol * |exp| (NaN equal to NaN when equal_nan; inf only to itself);
    returns (ok mask, abs error, rel error)."""
    if got.dtype.kind in "iub" and exp.dtype.kind in "iub" and rtol == 0 and atol == 0:
        ok = got == exp
        diff = np.abs(got.astype(np.float64) - exp.astype(np.float64))
    else:
        g, e = got.astype(np.float64), exp.astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(g - e)
            ok = (diff <= atol + rtol * np.abs(e)) | (g == e)
            if equal_nan:
                ok |= np.isnan(g) & np.isnan(e)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = diff / np.abs(exp.astype(np.float64))
    rel = np.where(diff == 0, 0.0, rel)
    return ok, diff, rel


def _greatest(err, what, allowed):
    if err.size == 0:
        return None
    err = np.where(np.isnan(err), -np.inf, err)
    i = np.unravel_index(int(np.argmax(err)), err.shape) if err.ndim else ()
    if err[i] == -np.inf:
        return None
    return f"Greatest {what} difference: {_fmt(err[i])} at index {tuple(int(j) for j in i)} (up to {allowed:g} allowed)"


def _mismatch_message(name, kname, engine, got, exp, rtol, atol, equal_nan, runs, card, trace):
    ok, diff, rel = _close(got, exp, rtol, atol, equal_nan)
    bad = np.argwhere(~ok) if got.ndim else np.zeros((0 if ok else 1, 0), np.int64)
    first = tuple(int(i) for i in bad[0])
    lines = [f"Kernel {kname!r} {_on(engine)}: output {name!r} is not close to the reference!",
             f"Mismatched elements: {len(bad)} / {got.size} ({100.0 * len(bad) / max(got.size, 1):.3g}%)",
             f"First mismatch at index {first}: got {_fmt_el(got, first)}, expected {_fmt_el(exp, first)} "
             f"(abs error {_fmt(diff[first])}, rel error {_fmt(rel[first])}; allowed atol={atol:g} + "
             f"rtol={rtol:g} * |expected|)"]
    for other, r in runs.items():
        if other != engine and name in r.outputs:
            lines.append(f"  {_the(other)} gives {_fmt_el(r.outputs[name], first)} there")
    for text in (_greatest(diff, "absolute", atol), _greatest(rel, "relative", rtol)):
        if text:
            lines.append(text)
    lines += _cycles_and_trace(runs, card, trace)
    return "\n".join(lines)


def _the(engine):
    return "the interpreter" if engine == INTERPRET else f"the {engine} engine"


def _on(engine):
    return "in the interpreter" if engine == INTERPRET else f"on the {engine} engine"


def _cycles_and_trace(runs, card, trace):
    timed = runs.get("numba")
    untimed = [e for e in runs if e != "numba"]
    line = f"Cycles: {timed.cycles} on the numba engine ({_where(card, timed.launch)})" if timed else "Cycles: none"
    if untimed:
        line += f"; {' and '.join(map(_the, untimed))} {'is' if len(untimed) == 1 else 'are'} untimed"
    if trace:
        return [line, f"Trace: {trace} (open in https://ui.perfetto.dev)"]
    return [line, "Trace: none (only the numba engine records one; add it to engines=)"]


def _bits(arr):
    """Each element's bytes as one row (for bit-for-bit comparisons, NaN payloads and -0.0 included)."""
    a = np.ascontiguousarray(arr)
    return a.view(np.uint8).reshape(a.shape + (a.dtype.itemsize,))


def _hex(arr, idx):
    return "0x" + bytes(_bits(arr)[idx][::-1]).hex()


def _disagreement(kname, runs, card, trace):
    """None when every engine gave the same bits for every output, else the failure message."""
    (first_engine, base), *others = runs.items()
    for engine, r in others:
        for name, a in base.outputs.items():
            b = r.outputs[name]
            differs = (_bits(a) != _bits(b)).any(axis=-1)
            if not differs.any():
                continue
            idx = tuple(int(i) for i in np.argwhere(differs)[0]) if differs.ndim else ()
            lines = [f"Kernel {kname!r}: the {first_engine} and {engine} engines disagree on output {name!r}!",
                     f"Differing elements: {int(differs.sum())} / {a.size}",
                     f"First difference at index {idx}: {first_engine} {_fmt_el(a, idx)} ({_hex(a, idx)}), "
                     f"{engine} {_fmt_el(b, idx)} ({_hex(b, idx)})",
                     "A race-free kernel gives the same bits on both engines: unless the kernel races (run it "
                     "with sanitize=True), this is an emulator bug; please report it with this kernel."]
            return "\n".join(lines + _cycles_and_trace(runs, card, trace))
    return None


# --- the assertion ---------------------------------------------------------------------------------------
def assert_kernel(kernel, inputs, reference, *, outputs=None, name=None, rtol=None, atol=None, equal_nan=True,
                  engines=ENGINES, sanitize=True, pes=None, config="tiny", overrides=None, card=None,
                  trace_dir=None, check_engines_agree=True, interpret=None) -> dict:
    """Run a kernel on a virtual card on each engine and assert its outputs match the reference.

    kernel: a module image (bytes, e.g. from vnpu.assemble or KernelBuilder.build()), a vnpu.Module, a
        kernels.builder.KernelBuilder, assembly text, or a kernel written in the kernel language (a
        `@vnpu.kernel` function); `name` picks the kernel when the module has several.
    inputs: the kernel's arguments, a dict by name or a list in signature order: a numpy array for a buffer
        (copied to card DRAM; its dtype must be the buffer's), OnChip(array) for one in the shared SRAM,
        Scratch(nbytes) for scratch memory, a number for a scalar. For a language kernel: its parameters
        (arrays, vnpu.shared(array), numbers, constexpr values); every engine gets fresh copies.
    outputs: {argument name: Out(shape, dtype) or (shape, dtype)}: buffers allocated zero-filled and read
        back after the run (Out entries in `inputs` are outputs too). A language kernel's outputs are what
        it returns, else the tensor arguments it writes (as calling it returns them).
    reference: a function called with the inputs (by name for a dict, in order for a list; outputs and
        scratch left out) returning the expected output (one array, a tuple in output order, or a dict by
        name), or those arrays themselves.
    rtol, atol: give both or neither; neither means torch.testing.assert_close's defaults for each output's
        dtype (default_tolerances). An element passes when |got - expected| <= atol + rtol * |expected|;
        NaN matches NaN when equal_nan.
    engines: run on these engines, in order ("numba": the timed core with the race sanitizer; "reference":
        the numpy interpreter, untimed and unsanitized). With several, their outputs must also agree bit for
        bit (check_engines_agree).
    interpret: for a language kernel (default True), also run Kernel.interpret first: its checks (stores of
        unwritten tile elements, PEs touching each other's elements between barriers, indices outside a
        tensor) raise KernelError naming the kernel's source line, and its outputs are compared with the
        reference within rtol/atol (not bit for bit with the card: its rounding order may differ in the
        last bit). runs["interpret"] is that run.
    sanitize: the race sanitizer on the numba engine; a race raises vnpu.RaceError naming both accesses.
    pes: the PEs to launch on (default every PE); config, overrides: the card (a config name such as "tiny"
        or "reference", a YAML path or a CardConfig, and {"matrix.rows": 16}-style overrides), a fresh card
        per engine; or card: run on this card (e.g. the vnpu_card fixture) for every engine.
    trace_dir: where the Perfetto trace of a failing run goes (default: $VNPU_TRACE_DIR, the pytest option
        --vnpu-trace-dir, else a temporary folder); the message gives the file.

    Returns {engine: KernelRun} (outputs by name, cycles, the LaunchResult) for further assertions. A
    device fault (RaceError, IllegalAddress, Deadlock, ...) propagates with a note naming the engine.
    """
    __tracebackhide__ = True   # pytest: show the caller's line, not this function's
    engines = (engines,) if isinstance(engines, str) else tuple(engines)
    lang = _is_lang_kernel(kernel)
    if any(e not in ENGINES for e in engines) or len(set(engines)) != len(engines) or \
            (not engines and not (lang and interpret is not False)):
        raise InvalidArgument(f"assert_kernel: engines must be distinct names out of {', '.join(ENGINES)}, "
                              f"got {engines!r}")
    if (rtol is None) != (atol is None):
        raise InvalidArgument("assert_kernel: give both rtol and atol, or neither (defaults by dtype)")
    if lang:
        return _assert_lang_kernel(kernel, inputs, reference, outputs, name, rtol, atol, equal_nan, engines,
                                   sanitize, pes, config, overrides, card, trace_dir, check_engines_agree,
                                   interpret is not False)
    if interpret:
        raise InvalidArgument("assert_kernel: interpret=True is for kernels written in the kernel language "
                              "(@vnpu.kernel); a module image has no Python source to interpret")
    image, module = _image(kernel)
    sym = _symbol(module, name)
    args, out_names, ref_args, by_name = _bind(sym, inputs, outputs)
    expected = _expected(reference, ref_args, by_name, out_names)
    by_arg = dict(zip((a.name for a in sym.args), args))
    for n in out_names:
        if expected[n].shape != tuple(by_arg[n].shape):
            raise InvalidArgument(f"assert_kernel: the reference's {n!r} has shape {expected[n].shape}, the "
                                  f"kernel's output {n!r} is {tuple(by_arg[n].shape)}")

    from vnpu.emulator.card import Card
    runs, used_card = {}, card
    for engine in engines:
        c = card if card is not None else Card(config, overrides)
        used_card = used_card or c
        try:
            runs[engine] = _run(c, image, sym, args, out_names, engine, pes, sanitize)
        except VnpuError as e:
            e.add_note(f"vnpu.testing.assert_kernel: kernel {sym.name!r} on the {engine} engine "
                       f"({c.config.name} card{'' if sanitize or engine != 'numba' else ', sanitizer off'})")
            raise
    _compare(sym.name, runs, expected, out_names, rtol, atol, equal_nan, used_card, trace_dir, check_engines_agree)
    return runs


def _compare(kname, runs, expected, out_names, rtol, atol, equal_nan, used_card, trace_dir, check_engines_agree):
    """Every run's outputs against the reference, then the card engines against each other, bit for bit."""
    __tracebackhide__ = True
    timed = runs.get("numba")
    for engine, r in sorted(runs.items(), key=lambda er: er[0] == INTERPRET):   # the card's engines first
        for n in out_names:
            got, exp = r.outputs[n], expected[n]
            rt, at = (rtol, atol) if rtol is not None else default_tolerances(got.dtype)
            ok, _, _ = _close(got, exp, rt, at, equal_nan)
            if not ok.all():
                trace = _write_failure_trace(timed, trace_dir) if timed is not None else None
                raise AssertionError(_mismatch_message(n, kname, engine, got, exp, rt, at, equal_nan, runs,
                                                       used_card, trace))
    card_runs = {e: r for e, r in runs.items() if e != INTERPRET}
    if check_engines_agree and len(card_runs) > 1:
        msg = _disagreement(kname, card_runs, used_card, None)
        if msg:
            trace = _write_failure_trace(timed, trace_dir) if timed is not None else None
            raise AssertionError(_disagreement(kname, card_runs, used_card, trace))


# --- kernels written in the kernel language ----------------------------------------------------------------
def _is_lang_kernel(kernel):
    frontend = sys.modules.get("vnpu.kernels.lang.frontend")     # not imported: it cannot be one
    return frontend is not None and isinstance(kernel, frontend.Kernel)


def _lang_bind(kernel, inputs, outputs):
    """(values by parameter name, in order; declared outputs {name: Out}; the reference's arguments; by name)."""
    from vnpu.kernels.lang.frontend import Shared_
    params = list(inspect.signature(kernel.fn).parameters)
    sig = f"{kernel.name}({', '.join(params)})"
    outs = {}
    if outputs is not None:
        if not isinstance(outputs, Mapping):
            raise InvalidArgument("assert_kernel: outputs must be a dict {argument name: Out(shape, dtype)}")
        outs = {n: _as_out(n, spec) for n, spec in outputs.items()}
    if isinstance(inputs, Mapping):
        given = dict(inputs)
    elif isinstance(inputs, (list, tuple)):
        if len(inputs) + len(outs) != len(params):
            raise InvalidArgument(f"assert_kernel: kernel {sig} takes {len(params)} arguments; got {len(inputs)} "
                                  f"inputs and {len(outs)} outputs")
        given = dict(zip([p for p in params if p not in outs], inputs))
    else:
        raise InvalidArgument(f"assert_kernel: inputs must be a dict of kernel arguments by name or a list in "
                              f"signature order, got {type(inputs).__name__}")
    for n in outs:
        if n in given:
            raise InvalidArgument(f"assert_kernel: {n!r} is both an input and an output; give it once (an array "
                                  f"in inputs is updated in place when the kernel writes it)")
    for n, v in given.items():
        if isinstance(v, Out):
            outs[n] = _as_out(n, v)
    values = {**given, **outs}
    missing = [n for n in params if n not in values]
    unknown = [n for n in values if n not in params]
    if missing or unknown:
        parts = ([f"missing argument(s) {', '.join(missing)}"] if missing else []) + \
                ([f"unknown argument(s) {', '.join(map(str, unknown))}"] if unknown else [])
        raise InvalidArgument(f"assert_kernel: {'; '.join(parts)}: the kernel is {sig}")
    for n, v in values.items():
        if isinstance(v, (OnChip, Scratch)):
            raise InvalidArgument(f"assert_kernel: argument {n!r}: {type(v).__name__} is for module images; a "
                                  f"language kernel takes vnpu.shared(array) for the shared SRAM")
    ref_args = {}
    for n in params:
        if n in outs:
            continue
        v = values[n]
        ref_args[n] = v.array.copy() if isinstance(v, Shared_) else v.copy() if isinstance(v, np.ndarray) else v
    return {n: values[n] for n in params}, outs, ref_args, isinstance(inputs, Mapping)


def _fresh(values, outs):
    """The kernel's arguments for one run: copies of the arrays, zero-filled outputs."""
    from vnpu.kernels.lang.frontend import Shared_
    args = []
    for n, v in values.items():
        if n in outs:
            v = np.zeros(outs[n].shape, outs[n].dtype)
        elif isinstance(v, Shared_):
            v = Shared_(v.array.copy())
        elif isinstance(v, np.ndarray):
            v = v.copy()
        args.append(v)
    return args


def _lang_outputs(comp, names, params, args, got):
    """{output name: array} of one run: the written tensor arguments (updated in place), or what it returned."""
    if comp.returns is None:
        by_param = dict(zip(params, args))
        return {n: getattr(by_param[n], "array", by_param[n]) for n in names}
    got = got if isinstance(got, tuple) else (got,)
    return {n: np.asarray(g) for n, g in zip(names, got)}


def _assert_lang_kernel(kernel, inputs, reference, outputs, name, rtol, atol, equal_nan, engines, sanitize, pes,
                        config, overrides, card, trace_dir, check_engines_agree, interpret):
    __tracebackhide__ = True
    if name is not None and name != kernel.name:
        raise InvalidArgument(f"assert_kernel: name= picks a kernel of a module; {kernel.name!r} is a language "
                              f"kernel (name it with @vnpu.kernel(name=...))")
    values, outs, ref_args, by_name = _lang_bind(kernel, inputs, outputs)
    params = list(values)
    from vnpu.emulator.card import Card
    cards = {e: card if card is not None else Card(config, overrides) for e in engines}
    cfg = card.config if card is not None else (next(iter(cards.values())).config if cards else
                                                Card(config, overrides).config)
    template = _fresh(values, outs)
    try:
        comp = kernel.compile(*template, config=cfg)
    except VnpuError as e:
        e.add_note(f"vnpu.testing.assert_kernel: compiling kernel {kernel.name!r} for the {cfg.name} card")
        raise
    if comp.returns is None:
        names = [p for p in params if p in comp.written]
    else:
        names = list(comp.returns) if isinstance(comp.returns, list) else [comp.returns]
    if not names:
        raise InvalidArgument(f"assert_kernel: kernel {kernel.name!r} neither returns a tensor nor stores into "
                              f"one of its arguments: nothing to check")
    unchecked = [n for n in outs if n not in names]
    if unchecked:
        raise InvalidArgument(f"assert_kernel: output(s) {', '.join(unchecked)} of kernel {kernel.name!r} are not "
                              f"among what it gives back ({', '.join(names)}): "
                              f"{'it returns' if comp.returns is not None else 'it writes'} only those")
    shapes = {n: np.shape(getattr(a, "array", a)) for n, a in zip(params, template) if n in names}
    shapes.update({n: tuple(shape) for n, shape, _ in comp.outputs if n in names})
    expected = _expected(reference, ref_args, by_name, names)
    for n in names:
        if expected[n].shape != shapes[n]:
            raise InvalidArgument(f"assert_kernel: the reference's {n!r} has shape {expected[n].shape}, the "
                                  f"kernel's output {n!r} is {shapes[n]}")

    runs, order = {}, ((INTERPRET,) if interpret else ()) + engines
    for engine in order:
        args = _fresh(values, outs)
        try:
            if engine == INTERPRET:
                got = kernel.interpret(*args, pes=pes, config=cfg)
                runs[engine] = KernelRun(engine, _lang_outputs(comp, names, params, args, got), 0, None)
            else:
                got, profile = kernel(*args, pes=pes, card=cards[engine], engine=engine, sanitize=sanitize,
                                      trace=engine == "numba")
                runs[engine] = KernelRun(engine, _lang_outputs(comp, names, params, args, got),
                                         int(profile.result.cycles), profile.result, profile)
        except VnpuError as e:
            where = "in the interpreter (Kernel.interpret)" if engine == INTERPRET else \
                f"on the {engine} engine ({cards[engine].config.name} card" \
                f"{'' if sanitize or engine != 'numba' else ', sanitizer off'})"
            e.add_note(f"vnpu.testing.assert_kernel: kernel {kernel.name!r} {where}")
            raise
    used_card = card if card is not None else (cards[engines[0]] if engines else None)
    _compare(kernel.name, runs, expected, names, rtol, atol, equal_nan, used_card, trace_dir, check_engines_agree)
    return runs
