"""Errors of the kernel language: every compile error is a vnpu.KernelError (an InvalidArgument, a VnpuError)
whose message starts with `FILE:LINE:` of the kernel line at fault and says what is wrong; argument errors
of k(...) say which argument; a failed compile leaves the kernel usable."""
from __future__ import annotations

import linecache
import re

import numpy as np
import pytest

import vnpu

F32, F16, I8 = np.float32, np.float16, np.int8
HERE = __file__


def line_of(kernel, marker):
    """(file, line) of the kernel source line carrying `# <marker>`."""
    fn = kernel.fn if hasattr(kernel, "fn") else kernel
    path, first = fn.__code__.co_filename, fn.__code__.co_firstlineno
    n = first
    while True:
        text = linecache.getline(path, n)
        if not text:
            raise AssertionError(f"marker {marker} not found")
        if text.rstrip().endswith(f"# {marker}"):
            return path, n
        n += 1


def expect(kernel, marker, *args, match, engine="numba", pes=1):
    """Compiling (or running) kernel(*args) raises KernelError at the line marked `marker`, matching `match`."""
    with pytest.raises(vnpu.KernelError) as ei:
        kernel(*args, engine=engine, pes=pes)
    e = ei.value
    assert isinstance(e, vnpu.InvalidArgument) and isinstance(e, vnpu.VnpuError)
    path, line = line_of(kernel, marker)
    msg = str(e)
    assert msg.startswith(f"{path}:{line}: "), msg
    assert re.search(match, msg), msg
    return msg


# --- local memory -------------------------------------------------------------------------------------
@vnpu.kernel
def too_big(x):
    t = vnpu.empty((70000,), "f32")  # E-BIG
    vnpu.store(x[0:16], t[0:16])


@vnpu.kernel
def too_big_load(x, y):
    vnpu.store(y, vnpu.load(x) + 1.0)  # E-BIGLOAD


@vnpu.kernel
def live_too_much(x, y, out):
    a = vnpu.load(x)
    b = vnpu.load(y)  # E-LIVE
    vnpu.store(out, a)
    vnpu.store(out, b)


def test_tile_larger_than_local_memory():
    expect(too_big, "E-BIG", np.zeros(16, F32), match=r"larger than the PE's local memory \(262144 bytes\)")
    x = np.zeros(70000, F32)
    expect(too_big_load, "E-BIGLOAD", x, x, match="larger than the PE's local memory")


def test_tiles_live_at_once_exceed_local_memory():
    x = np.zeros(40000, F32)       # 160 000 bytes each: one fits, two do not
    msg = expect(live_too_much, "E-LIVE", x, x, x.copy(), match="does not fit local memory")
    assert "262144" in msg


# --- shapes and dtypes ------------------------------------------------------------------------------------
@vnpu.kernel
def shape_mismatch(x, y):
    a = vnpu.load(x[0:16])
    b = vnpu.load(x[0:8])
    vnpu.store(y, a + b)  # E-SHAPE


@vnpu.kernel
def mm_shape_mismatch(a, w, out):
    vnpu.store(out, vnpu.matmul(vnpu.load(a), vnpu.load(w)))  # E-MMSHAPE


@vnpu.kernel
def exp_int8(x, y):
    t = vnpu.load(x)
    vnpu.store(y, vnpu.exp(t))  # E-EXP


@vnpu.kernel
def mm_mixed(a, w, out):
    at = vnpu.load(a)
    wt = vnpu.load(w)
    vnpu.store(out, vnpu.matmul(at, wt))  # E-MIXED


@vnpu.kernel
def mixed_add(x, y, out):
    vnpu.store(out, vnpu.load(x) + vnpu.load(y))  # E-MIXADD


@vnpu.kernel
def float_arg_f16(x, y, alpha):
    vnpu.store(y, vnpu.load(x) * alpha)  # E-F16ARG


@vnpu.kernel
def store_dtype(x, y):
    vnpu.store(y, vnpu.load(x))  # E-STDT


@vnpu.kernel
def store_shape(x, y):
    vnpu.store(y[0:8], vnpu.load(x[0:16]))  # E-STSHAPE


@vnpu.kernel
def mm_acc_no_out(a, w, out):
    vnpu.store(out, vnpu.matmul(vnpu.load(a), vnpu.load(w), accumulate=True))  # E-ACC


def test_shape_mismatch_elementwise():
    expect(shape_mismatch, "E-SHAPE", np.zeros(16, F32), np.zeros(16, F32),
           match=r"add of tiles of shapes \(16,\) and \(8,\)")


def test_shape_mismatch_matmul():
    expect(mm_shape_mismatch, "E-MMSHAPE", np.zeros((4, 8), F32), np.zeros((6, 4), F32), np.zeros((4, 4), F32),
           match=r"matmul shapes \(4, 8\) @ \(6, 4\): inner dimensions differ")


def test_exp_of_int8():
    expect(exp_int8, "E-EXP", np.zeros(8, I8), np.zeros(8, I8), match="exp needs a float tile.*no exp for i8")


def test_matmul_mixed_dtypes():
    expect(mm_mixed, "E-MIXED", np.zeros((4, 4), F16), np.zeros((4, 4), F32), np.zeros((4, 4), F32),
           match="matmul of f16 and f32")


def test_other_dtype_and_shape_errors():
    expect(mixed_add, "E-MIXADD", np.zeros(8, F32), np.zeros(8, F16), np.zeros(8, F32), match="add of f32 and f16")
    expect(float_arg_f16, "E-F16ARG", np.zeros(8, F16), np.zeros(8, F16), 2.0,
           match="float argument alpha with a f16 tile")
    expect(store_dtype, "E-STDT", np.zeros(8, F32), np.zeros(8, F16), match="store of a f32 tile into y of f16")
    expect(store_shape, "E-STSHAPE", np.zeros(16, F32), np.zeros(16, F32),
           match=r"store of a tile of shape \(16,\) into a block of shape \(8,\)")
    expect(mm_acc_no_out, "E-ACC", np.zeros((4, 4), F32), np.zeros((4, 4), F32), np.zeros((4, 4), F32),
           match=r"accumulate=True\) needs out=")


# --- what must be known while compiling -------------------------------------------------------------------
@vnpu.kernel
def dyn_slice(x, y, i, n):
    vnpu.store(y[0:16], vnpu.load(x[i:n]))  # E-DYNSLICE


@vnpu.kernel
def dyn_shape(x, n):
    t = vnpu.empty((n,), "f32")  # E-DYNSHAPE
    vnpu.store(x[0:4], t[0:4])


@vnpu.kernel
def dyn_static_range(x, y, n):
    for k in vnpu.static_range(n):  # E-DYNSR
        vnpu.store(y[k:k + 1], vnpu.load(x[k:k + 1]))


@vnpu.kernel
def dyn_step(x, y, n):
    for i in range(0, 64, n):  # E-DYNSTEP
        vnpu.store(y[i:i + 1], vnpu.load(x[i:i + 1]))


def test_slice_length_not_known_at_compile_time():
    x = np.zeros(64, F32)
    expect(dyn_slice, "E-DYNSLICE", x, x.copy(), 0, 16, match="must be known at compile time")
    expect(dyn_shape, "E-DYNSHAPE", x, 4, match="known at compile time")
    expect(dyn_static_range, "E-DYNSR", x, x.copy(), 4, match="static_range|known at compile time")
    expect(dyn_step, "E-DYNSTEP", x, x.copy(), 4, match="step must be a nonzero number known at compile time")


# --- card values used as Python booleans ------------------------------------------------------------------
@vnpu.kernel
def while_card(x, y, n):
    i = 0
    while i < n:  # E-WHILE
        i = i + 1


@vnpu.kernel
def and_card(x, y, n):
    if n > 1 and n < 5:  # E-AND
        vnpu.store(y, vnpu.load(x))


@vnpu.kernel
def truth_card(x, y, n):
    if n:  # E-TRUTH
        vnpu.store(y, vnpu.load(x))


@vnpu.kernel
def ternary_card(x, y, n):
    k = 1 if n > 3 else 2  # E-TERN
    vnpu.store(y[0:k], vnpu.load(x[0:k]))


def test_card_values_as_python_booleans():
    x = np.zeros(8, F32)
    expect(while_card, "E-WHILE", x, x.copy(), 3, match="`while` need Python booleans")
    expect(and_card, "E-AND", x, x.copy(), 3, match="`and`, `or`")
    expect(truth_card, "E-TRUTH", x, x.copy(), 3, match="no Python truth value")
    expect(ternary_card, "E-TERN", x, x.copy(), 3, match="ternaries")


# --- rebinding inside card control flow ----------------------------------------------------------------------
@vnpu.kernel
def rebind_tile(x, y, n):
    acc = vnpu.load(x[0:16])
    for i in range(16, n, 16):
        acc = acc + vnpu.load(x[i:i + 16])  # E-REBIND
    vnpu.store(y, acc)


@vnpu.kernel
def rebind_scalar(x, y, n):
    j, _ = vnpu.split(n)
    for i in range(0, n, 16):
        vnpu.store(y[j:j + 16], vnpu.load(x[i:i + 16]))
        j = j + 16  # E-REBINDS


@vnpu.kernel
def rebind_in_if(x, y, n):
    t = vnpu.load(x)
    if n > 3:
        t = t * 2.0  # E-REBINDIF
    vnpu.store(y, t)


@vnpu.kernel
def return_in_if(x, y, n):
    if n > 3:
        return  # E-RETURN
    vnpu.store(y, vnpu.load(x))


def _rebind(kernel, marker, *args, match):
    """The rebinding error names the loop / if line or the assignment line."""
    with pytest.raises(vnpu.KernelError) as ei:
        kernel(*args, pes=1)
    msg = str(ei.value)
    path, line = line_of(kernel, marker)
    prefixes = [f"{path}:{n}: " for n in range(line - 2, line + 1)]
    assert any(msg.startswith(p) for p in prefixes), msg
    assert re.search(match, msg), msg


def test_rebinding_a_tile_in_a_card_loop():
    x = np.zeros(64, F32)
    _rebind(rebind_tile, "E-REBIND", x, np.zeros(16, F32), 64,
            match="`acc` is bound before a loop on the card and rebound inside it")


def test_rebinding_a_scalar_in_a_card_loop():
    x = np.zeros(64, F32)
    _rebind(rebind_scalar, "E-REBINDS", x, x.copy(), 64, match="`j` is bound before a loop on the card")


def test_rebinding_in_a_card_if():
    x = np.zeros(8, F32)
    _rebind(rebind_in_if, "E-REBINDIF", x, x.copy(), 5, match="`t` is bound before an `if` on card values")


@vnpu.kernel
def rebind_python_int(x, y, n):
    j = 0
    for i in range(0, n, 4):
        vnpu.store(y[j:j + 4], vnpu.load(x[i:i + 4]) + 1.0)
        j += 4  # E-PYINT


def test_rebinding_a_python_value_in_a_card_loop():
    x = np.arange(12, dtype=F32)
    _rebind(rebind_python_int, "E-PYINT", x, np.zeros_like(x), 12, match="`j` is bound before a loop")


def test_return_inside_a_card_if():
    x = np.zeros(8, F32)
    with pytest.raises(vnpu.KernelError) as ei:
        return_in_if(x, x.copy(), 5)
    msg = str(ei.value)
    path, line = line_of(return_in_if, "E-RETURN")
    assert msg.startswith((f"{path}:{line - 1}: ", f"{path}:{line}: ")), msg
    assert "return, break or continue inside an `if` on card values" in msg


# --- the kernel's signature and arguments ----------------------------------------------------------------------
@vnpu.kernel
def sixteen(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15):
    vnpu.store(a1, vnpu.load(a0))


@vnpu.kernel
def fifteen(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14):
    vnpu.store(a1, vnpu.load(a0) + a2)


@vnpu.kernel
def fourteen_and_output(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14):
    out = vnpu.output((4,), "f32")  # E-16TH
    vnpu.store(out, vnpu.load(a0))
    return out


def test_too_many_kernel_arguments():
    x = np.zeros(4, F32)
    with pytest.raises(vnpu.KernelError, match="kernel sixteen has more than 15 arguments") as ei:
        sixteen(x, x.copy(), *range(14))
    assert str(ei.value).startswith(f"{HERE}:")          # the line of the call
    # a vnpu.output is an argument too (the 16th here): named at its line
    expect(fourteen_and_output, "E-16TH", x, *range(14), match="more than 15 arguments")
    y, _ = fifteen(x, np.zeros(4, F32), 2.5, *range(12), pes=1)      # 15 is the limit
    assert (y == 2.5).all()


def test_too_many_kernel_arguments_named_at_the_def():
    x = np.zeros(4, F32)
    with pytest.raises(vnpu.KernelError) as ei:
        sixteen(x, x.copy(), *range(14))
    fn = sixteen.fn
    assert str(ei.value).startswith(f"{fn.__code__.co_filename}:{fn.__code__.co_firstlineno + 1}: ")


@vnpu.kernel
def copy_kernel(x, y):
    if vnpu.pe_id() == 0:
        vnpu.store(y, vnpu.load(x))


def test_language_functions_outside_a_kernel():
    x = np.zeros(4, F32)
    for call in (lambda: vnpu.load(x), lambda: vnpu.pe_id(), lambda: vnpu.empty((4,), "f32"),
                 lambda: vnpu.barrier(), lambda: vnpu.exp(x)):
        with pytest.raises(vnpu.KernelError, match="part of the kernel language") as ei:
            call()
        assert str(ei.value).startswith(f"{HERE}:")


def test_wrong_number_of_arguments():
    x = np.zeros(4, F32)
    for args in ((x,), (x, x, x)):
        with pytest.raises(vnpu.InvalidArgument, match=r"takes 2 arguments \(x, y\), got"):
            copy_kernel(*args)
        with pytest.raises(vnpu.InvalidArgument, match="takes 2 arguments"):
            copy_kernel.interpret(*args)


@pytest.mark.parametrize("bad,what", [([1.0, 2.0], "must be a numpy array, an int or a float, got list"),
                                      (True, "is a bool"),
                                      (np.zeros(4, np.float64), "has dtype float64"),
                                      ("x", "got str")])
def test_bad_argument_types(bad, what):
    x = np.zeros(4, F32)
    with pytest.raises(vnpu.InvalidArgument, match=what) as ei:
        copy_kernel(bad, x)
    assert "argument x" in str(ei.value)
    with pytest.raises(vnpu.InvalidArgument, match=what):
        copy_kernel.interpret(bad, x)


def test_argument_errors_are_kernel_errors():
    x = np.zeros(4, F32)
    for args in ((x,), ([1.0], x), (True, x), (np.zeros(4), x)):
        with pytest.raises(vnpu.KernelError) as ei:
            copy_kernel(*args)
        assert str(ei.value).startswith(f"{HERE}:")


@vnpu.kernel
def anysize_length(x: vnpu.anysize, y: vnpu.anysize):
    lo, hi = vnpu.split(x.shape[0])  # E-ANYLEN
    for i in range(lo, hi, 16):
        vnpu.store(y[i:vnpu.minimum(i + 16, hi)], vnpu.load(x[i:vnpu.minimum(i + 16, hi)]))


def test_length_of_an_anysize_tensor():
    x = np.arange(50, dtype=F32)
    expect(anysize_length, "E-ANYLEN", x, np.zeros_like(x), match="anysize")


# --- after an error --------------------------------------------------------------------------------------------
@vnpu.kernel
def sized(x, y, T: vnpu.constexpr):
    lo, hi = vnpu.split(x.shape[0])
    for i in range(lo, hi, T):
        end = vnpu.minimum(i + T, hi)
        t = vnpu.load(x[i:end])  # E-SIZED
        vnpu.store(y[i:end], t * 2.0)


def test_kernel_usable_after_a_failed_compile():
    x = np.arange(300, dtype=F32)
    expect(sized, "E-SIZED", x, np.zeros_like(x), 100000, match="larger than the PE's local memory")
    with pytest.raises(vnpu.KernelError, match="part of the kernel language"):
        vnpu.load(x)                     # no kernel context left behind
    y, _ = sized(x, np.zeros_like(x), 64)
    assert np.array_equal(y, x * 2)
    expect(sized, "E-SIZED", x, np.zeros_like(x), 100000, match="larger than")     # not cached as good
    assert np.array_equal(sized.interpret(x, np.zeros_like(x), 64), x * 2)
    expect(shape_mismatch, "E-SHAPE", np.zeros(16, F32), np.zeros(16, F32), match="add of tiles")
    expect(shape_mismatch, "E-SHAPE", np.zeros(16, F32), np.zeros(16, F32), match="add of tiles")


# --- more misuse, each named at its line ------------------------------------------------------------------------
@vnpu.kernel
def step_slice(x, y):
    vnpu.store(y[0:4], vnpu.load(x[0:8:2]))  # E-STEP


@vnpu.kernel
def index_out(x, y):
    vnpu.store(y[0:1], vnpu.load(x[40]))  # E-INDEX


@vnpu.kernel
def neg_bound(x, y):
    vnpu.store(y[0:4], vnpu.load(x[-4:8]))  # E-NEG


@vnpu.kernel
def three_dims(x, y):
    vnpu.store(y, vnpu.load(x))  # E-3D


@vnpu.kernel
def bad_astype(x, y):
    vnpu.store(y, vnpu.load(x).astype(np.float64))  # E-ASTYPE


@vnpu.kernel
def pipe_negative(x, y, n):
    for i in range(n, 0, -8, pipeline=True):  # E-PIPENEG
        vnpu.store(y[i:i + 8], vnpu.load(x[i:i + 8]))


@vnpu.kernel
def pipe_nested(x, y, n):
    for i in range(0, n, 8, pipeline=True):
        for j in range(0, 8, 4, pipeline=True):  # E-PIPENEST
            vnpu.store(y[i + j:i + j + 4], vnpu.load(x[i + j:i + j + 4]))


@vnpu.kernel
def int_const(x, y):
    vnpu.store(y, vnpu.load(x) + 300)  # E-INTCONST


@vnpu.kernel
def emb_bad_mode(table, indices, offsets, out):
    vnpu.embedding_bag(table, indices, offsets, out, mode="max")  # E-EMBMODE


def test_more_misuse():
    x = np.zeros(32, F32)
    expect(step_slice, "E-STEP", x, x.copy(), match="slices with a step are not supported")
    expect(index_out, "E-INDEX", x, x.copy(), match="index 40 is outside dimension 0 of size 32")
    expect(neg_bound, "E-NEG", x, x.copy(), match="negative slice bound")
    x3 = np.zeros((2, 2, 2), F32)
    expect(three_dims, "E-3D", x3, x3.copy(), match="at most 2 dimensions")
    expect(bad_astype, "E-ASTYPE", x, x.copy(), match="astype to")
    expect(pipe_negative, "E-PIPENEG", x, x.copy(), 24, match="pipeline=True needs a positive step")
    expect(pipe_nested, "E-PIPENEST", x, x.copy(), 24, match="cannot nest inside another pipelined loop")
    i8 = np.zeros(8, I8)
    expect(int_const, "E-INTCONST", i8, i8.copy(), match="constant 300 is not a i8 value")
    table, idx = np.zeros((4, 2), F32), np.zeros(3, np.int64)
    expect(emb_bad_mode, "E-EMBMODE", table, idx, idx[:2].copy(), np.zeros((2, 2), F32),
           match="mode must be sum or mean")


def test_interpreter_reports_the_same_errors():
    """The interpreter raises KernelError at the same line for what it can see while running."""
    x = np.zeros(16, F32)
    for kernel, marker, args, match in (
            (shape_mismatch, "E-SHAPE", (x, x.copy()), r"add of tiles of shapes \(16,\) and \(8,\)"),
            (exp_int8, "E-EXP", (np.zeros(8, I8), np.zeros(8, I8)), "exp needs a float tile"),
            (mm_mixed, "E-MIXED", (np.zeros((4, 4), F16), np.zeros((4, 4), F32), np.zeros((4, 4), F32)),
             "matmul of f16 and f32"),
            (mm_shape_mismatch, "E-MMSHAPE", (np.zeros((4, 8), F32), np.zeros((6, 4), F32), np.zeros((4, 4), F32)),
             "inner dimensions differ"),
            (too_big, "E-BIG", (x,), "larger than the PE's local memory"),
            (store_dtype, "E-STDT", (np.zeros(8, F32), np.zeros(8, F16)), "store of a f32 tile into y of f16"),
            (index_out, "E-INDEX", (np.zeros(8, F32), np.zeros(8, F32)), "index 40 is outside dimension 0"),
            (step_slice, "E-STEP", (x, x.copy()), "slices with a step")):
        with pytest.raises(vnpu.KernelError) as ei:
            kernel.interpret(*args, pes=1)
        path, line = line_of(kernel, marker)
        assert str(ei.value).startswith(f"{path}:{line}: "), str(ei.value)
        assert re.search(match, str(ei.value)), str(ei.value)
