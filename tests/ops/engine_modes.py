"""Run library kernels written in the kernel language on every engine: the Numba core, the numpy reference
engine and the language's interpreter (shared by the op tests; a library module attaches `example`, `kernel`
and `consts` to the build function it gives runner.run, so the interpreter can run the same kernel)."""
import contextlib

import numpy as np

from vnpu.kernels import runner


@contextlib.contextmanager
def engine(mode, monkeypatch):
    """Run the kernels launched inside on `mode`: "reference" (the numpy engine) or "interpret" (the kernel
    language's interpreter on the same arguments and constexprs; absent tensors stay None)."""
    real = runner.run

    def patched(card, key, build, kernel, args, pes=None, sanitize=True, engine="numba", trace=False):
        if mode == "reference":
            return real(card, key, build, kernel, args, pes=pes, sanitize=sanitize, engine="reference", trace=trace)
        if not hasattr(build, "example"):                 # runner.nothing: no language kernel
            return real(card, key, build, kernel, args, pes=pes)
        vals, outs, given = [], [], iter(args)
        for ex in build.example:
            if ex is None:
                vals.append(None)
                continue
            a = next(given)
            if isinstance(a, runner.Out):
                a = np.zeros(a.shape, a.dtype)
                outs.append(a)
            elif isinstance(a, runner.Scratch):
                a = np.zeros(a.nbytes // np.asarray(ex).dtype.itemsize, np.asarray(ex).dtype)
            vals.append(a)
        build.kernel.interpret(*vals, *build.consts, pes=len(pes) if pes else None, config=card.config)
        return outs, None
    with monkeypatch.context() as m:
        m.setattr(runner, "run", patched)
        yield


def on_every_engine(monkeypatch, call, exact_bytes=False):
    """call() -> (array, result): equal on the Numba core, the reference engine and the interpreter: byte for
    byte (exact_bytes), or as values with the same NaN positions and signs of zero (NaN payloads may differ:
    the interpreter computes with numpy)."""
    out, res = call()
    assert res.engine == "numba" and res.cycles > 0
    for mode in ("reference", "interpret"):
        with engine(mode, monkeypatch):
            other, _ = call()
        if exact_bytes:
            assert np.asarray(other).tobytes() == np.asarray(out).tobytes(), mode
        else:
            assert np.array_equal(out, other, equal_nan=True), mode
            num = ~np.isnan(out)
            assert np.array_equal(np.signbit(out[num]), np.signbit(other[num])), mode
    return out
