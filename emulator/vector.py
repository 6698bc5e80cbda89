"""The vector unit: elementwise ops, reductions and conversions on PE-local memory.

Arithmetic follows numpy's: integers wrap; fp16 is computed in fp32 and rounded to nearest even;
exp / sigmoid / tanh / gelu are computed in fp64 and rounded to the element type.

NaN (IEEE 754, as PyTorch): a NaN input gives a NaN output in every float op. The NaN a float op writes is
quiet: an op whose input is NaN returns that input (its sign and payload) with the quiet bit set; max and
min return the first NaN operand; a NaN made from numbers (inf - inf, 0 * inf, sqrt(-1)) is the host's
default NaN. `vcopy` moves bits unchanged. The reference interpreter defines the same (docs/isa.md).
"""
import math

import numpy as np
from .jit import jit

from vnpu.isa import table as T

from . import sanitizer as san_mod
from .dispatch import VEC_BCAST, VEC_BINARY, VEC_FLOAT_ONLY, VEC_FN, VEC_TRANS
from .issue import ELEM, MAX_ELEMS, Q_VECTOR, complete, local_ok, race, set_fault
from .memory import L_LOCAL_BYTES, first_bad_local
from .state import (C_NSEM, C_VLAT, C_VTRANS, C_VWIDTH, FAULT_ADDRESS, FAULT_INSTRUCTION, P_VECTOR, P_VOPS,
                    TRACK_VECTOR, WHY_DTYPE, WHY_SEMAPHORE, WHY_SIZE)
from .numerics import bits_to_f32, f16_to_f32, f32_to_f16, fma_f32, quiet_nan_f32

DT_I8, DT_I32, DT_F16, DT_F32 = 0, 1, 2, 3
# the unit's functions, numbered as the ISA table lists them (isa/table.py: VECTOR_FUNCTIONS); the core
# passes the number and the instruction's attributes (binary, broadcast, float only) from emulator/dispatch.py
V_ADD, V_SUB, V_MUL, V_MAX, V_MIN, V_RELU, V_SIGMOID, V_TANH, V_EXP, V_GELU, V_COPY, V_RECIP, V_RSQRT = (
    T.VECTOR_FUNCTIONS.index(f) for f in ("add", "sub", "mul", "max", "min", "relu", "sigmoid", "tanh", "exp",
                                          "gelu", "copy", "recip", "rsqrt"))
CANONICAL_NAN = np.uint32(0x7FC00000)


@jit
def elementwise_cycles(n, dt, transcendental, width_bits, latency, trans_cycles):
    lanes = width_bits // (8 * ELEM[dt])
    per = trans_cycles if transcendental else 1
    return latency + ((n + lanes - 1) // lanes) * per


@jit
def reduce_cycles(n, dt, width_bits, latency):
    lanes = width_bits // (8 * ELEM[dt])
    return latency + (n + lanes - 1) // lanes + int(math.ceil(math.log2(max(lanes, 2))))


@jit
def load_float(pool, off, n, dt):
    if dt == DT_F32:
        return pool[off:off + 4 * n].view(np.float32).copy()
    x = np.empty(n, dtype=np.float32)
    f16_to_f32(pool[off:off + 2 * n].view(np.uint16), x)
    return x


@jit
def store_float(pool, off, x, dt):
    n = len(x)
    if dt == DT_F32:
        out = pool[off:off + 4 * n].view(np.float32)
        for i in range(n):          # a loop, not out[:] = x (see memory.copy_run)
            out[i] = x[i]
    else:
        f32_to_f16(x, pool[off:off + 2 * n].view(np.uint16))


@jit
def load_int(pool, off, n, dt):
    if dt == DT_I8:
        return pool[off:off + n].view(np.int8).astype(np.int64)
    return pool[off:off + 4 * n].view(np.int32).astype(np.int64)


@jit
def store_int(pool, off, x, dt):
    """Store with two's-complement wrap to the element width (numpy's astype semantics)."""
    n = len(x)
    if dt == DT_I8:
        d8 = pool[off:off + n].view(np.int8)
        for i in range(n):
            d8[i] = np.int8(((x[i] + 128) & 255) - 128)
    else:
        d32 = pool[off:off + 4 * n].view(np.int32)
        for i in range(n):
            d32[i] = np.int32(((x[i] + 2147483648) & 4294967295) - 2147483648)


@jit
def gelu64(x):
    if math.isinf(x):        # the limits (PyTorch's fp32 formula gives NaN at both infinities)
        return x if x > 0 else -0.0
    return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))


@jit
def nan_result(a, b, binary):
    """The NaN a float op writes: its first NaN operand, quieted (sign and payload kept); a NaN made from
    numbers (inf - inf, 0 * inf, sqrt(-1)) is the canonical quiet NaN. Defined here, not left to the host's
    SIMD unit, so both engines write the same bits on every host."""
    if a != a:
        return quiet_nan_f32(a)
    if binary and b != b:
        return quiet_nan_f32(b)
    return bits_to_f32(CANONICAL_NAN)


@jit
def elementwise(pool, op, dt, dst, a, b, n, binary, bcast, float_only):
    """Returns False when the op is not defined for the dtype (an IllegalInstruction). binary: reads a
    second operand b; bcast: b is one element, used for every i; float_only: undefined for integers."""
    if dt == DT_I8 or dt == DT_I32:
        if float_only:
            return False
        x = load_int(pool, a, n, dt)
        if binary:
            y = np.full(n, load_int(pool, b, 1, dt)[0]) if bcast else load_int(pool, b, n, dt)
        else:
            y = x
        r = np.empty(n, dtype=np.int64)
        for i in range(n):
            if op == V_ADD:
                r[i] = x[i] + y[i]
            elif op == V_SUB:
                r[i] = x[i] - y[i]
            elif op == V_MUL:
                r[i] = x[i] * y[i]
            elif op == V_MAX:
                r[i] = max(x[i], y[i])
            elif op == V_MIN:
                r[i] = min(x[i], y[i])
            elif op == V_RELU:
                r[i] = max(x[i], 0)
            else:
                r[i] = x[i]
        store_int(pool, dst, r, dt)
        return True
    xf = load_float(pool, a, n, dt)
    if binary:
        yf = np.full(n, load_float(pool, b, 1, dt)[0]) if bcast else load_float(pool, b, n, dt)
    else:
        yf = xf
    rf = np.empty(n, dtype=np.float32)
    for i in range(n):
        if op == V_ADD:
            rf[i] = xf[i] + yf[i]
        elif op == V_SUB:
            rf[i] = xf[i] - yf[i]
        elif op == V_MUL:
            rf[i] = xf[i] * yf[i]
        elif op == V_MAX or op == V_MIN:
            # NaN propagates (the first operand's); equal values, signed zeros included, give a
            va = xf[i]
            vb = yf[i]
            if va != va:
                rf[i] = va
            elif vb != vb:
                rf[i] = vb
            elif (op == V_MAX and vb > va) or (op == V_MIN and vb < va):
                rf[i] = vb
            else:
                rf[i] = va
        elif op == V_RELU:
            rf[i] = np.float32(0.0) if xf[i] < 0 else xf[i]     # -0.0 and NaN pass, as in PyTorch
        elif op == V_COPY:
            rf[i] = xf[i]
        elif xf[i] != xf[i]:
            rf[i] = xf[i]       # a NaN input passes through every transcendental (quieted below)
        elif op == V_SIGMOID:
            v = np.float64(xf[i])
            # exp(-v) overflows to inf for v < -709: 1 / (1 + inf) = 0, the correctly rounded result
            rf[i] = 1.0 / (1.0 + math.exp(-v)) if v > -745.0 else 0.0
        elif op == V_TANH:
            rf[i] = math.tanh(np.float64(xf[i]))
        elif op == V_EXP:
            v = np.float64(xf[i])
            rf[i] = math.exp(v) if v < 709.0 else np.inf
        elif op == V_GELU:
            rf[i] = gelu64(np.float64(xf[i]))
        elif op == V_RECIP:
            v = np.float64(xf[i])
            rf[i] = 1.0 / v if v != 0 else math.copysign(np.inf, v)
        elif op == V_RSQRT:
            v = np.float64(xf[i])
            # the hardware sqrt gives the same NaN as numpy's for negative inputs
            rf[i] = 1.0 / math.sqrt(v) if v != 0 else math.copysign(np.inf, v)
        if op != V_COPY and rf[i] != rf[i]:
            rf[i] = nan_result(xf[i], yf[i], binary)
    store_float(pool, dst, rf, dt)
    return True


@jit
def reduce(pool, is_max, dt, dst, a, n):
    """Sum or max of n elements; the result is i32 for integer inputs, f32 for floats."""
    if dt == DT_I8 or dt == DT_I32:
        x = load_int(pool, a, n, dt)
        acc = np.int64(-2147483648) if is_max else np.int64(0)
        for i in range(n):
            acc = max(acc, x[i]) if is_max else acc + x[i]
        r = np.empty(1, dtype=np.int64)
        r[0] = acc
        store_int(pool, dst, r, DT_I32)
    else:
        xf = load_float(pool, a, n, dt)
        accf = -np.inf if is_max else 0.0
        first_nan = -1
        for i in range(n):      # in index order, in fp64; a NaN input makes the result that NaN, quieted
            v = np.float64(xf[i])
            if v != v:
                first_nan = i
                break
            if is_max:
                if v > accf:
                    accf = v
            else:
                accf += v
        r = np.float32(accf)
        if first_nan >= 0:
            r = quiet_nan_f32(xf[first_nan])
        elif r != r:
            r = bits_to_f32(CANONICAL_NAN)     # inf + -inf
        pool[dst:dst + 4].view(np.float32)[0] = r


@jit
def convert(pool, src_dt, dst_dt, dst, a, n, scale, zero_point):
    """vcvt. Float to integer: q = clamp(round_half_even(fma(x, scale, zp))), x * scale + zp rounded ONCE to
    fp32 (PyTorch's quantize_per_tensor with scale = 1.0f / fp32(its scale), bit for bit); NaN converts to 0
    (the card's choice). Integer to float: y = (x - zp) * scale in fp64, rounded to the element type.
    Float to float: a rounding cast; a NaN stays NaN, quieted."""
    src_int = src_dt == DT_I8 or src_dt == DT_I32
    dst_int = dst_dt == DT_I8 or dst_dt == DT_I32
    if src_int:
        x = load_int(pool, a, n, src_dt).astype(np.float64)
    else:
        x = load_float(pool, a, n, src_dt).astype(np.float64)
    if dst_int:
        lo, hi = (-128.0, 127.0) if dst_dt == DT_I8 else (-2147483648.0, 2147483647.0)
        s32 = np.float32(scale)
        z32 = np.float32(zero_point)
        q = np.empty(n, dtype=np.int64)
        for i in range(n):
            v = np.rint(np.float64(fma_f32(np.float32(x[i]), s32, z32)))
            if v != v:          # NaN (also inf * 0) converts to 0
                q[i] = 0
                continue
            q[i] = np.int64(min(max(v, lo), hi))
        store_int(pool, dst, q, dst_dt)
    else:
        y = np.empty(n, dtype=np.float32)
        for i in range(n):
            y[i] = (x[i] - zero_point) * scale if src_int else x[i]
            if y[i] != y[i]:
                y[i] = bits_to_f32(CANONICAL_NAN) if src_int else quiet_nan_f32(y[i])
        store_float(pool, dst, y, dst_dt)


ELEMENTWISE, REDUCE, CONVERT = range(3)     # the vector unit's kinds of instruction, each its own entry


# inlined into the three entries below with `kind` a constant, so each compiles only its own kind's code
@jit(inline="always")
def _issue(prog, mem, cfg, res, rec, chk, units, scratch, p, cur, tp, r, kind):
    """Issue the vector instruction at pc `cur` of PE p at cycle tp (registers r): check its operands, compute
    its result, price it, book the PE's vector unit and complete it. Returns (its completion cycle, 0),
    or (-1, 0) with the fault recorded in chk.fault."""
    dec, pe_ids, pool, lay = prog.code, prog.pe_ids, mem.pool, mem.layout
    fault, san, sanc, sanitize = chk.fault, chk.san, chk.sanc, chk.sanitize
    pstat, cstat, events, evn = rec.pstat, rec.cstat, rec.events, rec.evn
    semt, semn, lbase = units.semt, units.semn, units.lbase
    reads, plain, where = scratch.reads, scratch.plain, scratch.where
    nsem = int(cfg[C_NSEM])
    local_bytes = lay[L_LOCAL_BYTES]
    op = dec[cur, 0]
    vecfree = units.vecfree
    s = dec[cur, T.SEM]
    if s >= nsem:
        set_fault(fault, FAULT_INSTRUCTION, p, cur, -1, WHY_SEMAPHORE)
        return -1, 0
    dt = dec[cur, T.DT]
    n = r[dec[cur, T.RS3]]
    if n < 0 or n > MAX_ELEMS:
        set_fault(fault, FAULT_INSTRUCTION, p, cur, -1, WHY_SIZE)
        return -1, 0
    dst = r[dec[cur, T.RD]]
    a = r[dec[cur, T.RS1]]
    b = r[dec[cur, T.RS2]]
    binary = VEC_BINARY[op]
    bcast = VEC_BCAST[op]
    if kind == REDUCE:
        dst_bytes = 4
    elif kind == CONVERT:
        dst_bytes = n * ELEM[dec[cur, T.DT2]]
    else:
        dst_bytes = n * ELEM[dt]
    src_bytes = n * ELEM[dt]
    if not local_ok(lay, a, src_bytes):
        set_fault(fault, FAULT_ADDRESS, p, cur, first_bad_local(lay, a, src_bytes), src_bytes)
        return -1, 0
    b_bytes = ELEM[dt] if bcast else src_bytes
    if binary and not local_ok(lay, b, b_bytes):
        set_fault(fault, FAULT_ADDRESS, p, cur, first_bad_local(lay, b, b_bytes), b_bytes)
        return -1, 0
    if not local_ok(lay, dst, dst_bytes):
        set_fault(fault, FAULT_ADDRESS, p, cur, first_bad_local(lay, dst, dst_bytes), dst_bytes)
        return -1, 0
    kd = np.int64(0)
    if sanitize:
        reads[:, :] = 0
        ka = san_mod.key(local_bytes, pe_ids[p], a)
        reads[0, 0] = ka
        reads[0, 1] = ka + src_bytes
        if binary:
            kb = san_mod.key(local_bytes, pe_ids[p], b)
            reads[1, 0] = kb
            reads[1, 1] = kb + b_bytes
        kd = san_mod.key(local_bytes, pe_ids[p], dst)
        hit = san_mod.check(san, sanc, where, p, Q_VECTOR, reads, kd, kd + dst_bytes, plain)
        if hit >= 0:
            race(fault, san, where, p, cur, hit)
            return -1, 0
    lb = lbase[p]
    width = int(cfg[C_VWIDTH])
    if kind == REDUCE:
        reduce(pool, op == T.OP_VRMAX, dt, lb + dst, lb + a, n)
        cyc = reduce_cycles(n, dt, width, int(cfg[C_VLAT]))
    elif kind == CONVERT:
        q = r[dec[cur, T.RS2]]
        scale = bits_to_f32(np.uint32(q & 0xFFFFFFFF))
        zp = ((q >> 32) + 2147483648) % 4294967296 - 2147483648
        convert(pool, dt, dec[cur, T.DT2], lb + dst, lb + a, n, np.float64(scale), np.float64(zp))
        wide = dt if ELEM[dt] >= ELEM[dec[cur, T.DT2]] else dec[cur, T.DT2]
        cyc = elementwise_cycles(n, wide, False, width, int(cfg[C_VLAT]), 1)
    else:
        if not elementwise(pool, VEC_FN[op], dt, lb + dst, lb + a, lb + b, n, binary, bcast,
                                    VEC_FLOAT_ONLY[op]):
            set_fault(fault, FAULT_INSTRUCTION, p, cur, -1, WHY_DTYPE)
            return -1, 0
        cyc = elementwise_cycles(n, dt, VEC_TRANS[op], width, int(cfg[C_VLAT]),
                                          int(cfg[C_VTRANS]))
    start = max(tp, vecfree[p])
    done = start + cyc
    vecfree[p] = done
    pstat[p, P_VECTOR] += cyc
    pstat[p, P_VOPS] += n
    if not complete(semt, semn, fault, san, sanc, sanitize, events, evn, cstat, p, cur, op, s, Q_VECTOR,
                     TRACK_VECTOR, start, done, n, reads, kd, kd + dst_bytes, plain):
        return -1, 0
    return done, 0


# The unit's entries (units.py): compiled on its own each, the first time a launch uses that kind of instruction,
# and called by the core through its address.
@jit
def issue_elementwise(prog, mem, cfg, res, rec, chk, units, scratch, p, cur, tp, r):
    """vadd ... vrsqrt, vadds ... vmins."""
    return _issue(prog, mem, cfg, res, rec, chk, units, scratch, p, cur, tp, r, ELEMENTWISE)


@jit
def issue_reduce(prog, mem, cfg, res, rec, chk, units, scratch, p, cur, tp, r):
    """vsum, vrmax."""
    return _issue(prog, mem, cfg, res, rec, chk, units, scratch, p, cur, tp, r, REDUCE)


@jit
def issue_convert(prog, mem, cfg, res, rec, chk, units, scratch, p, cur, tp, r):
    """vcvt."""
    return _issue(prog, mem, cfg, res, rec, chk, units, scratch, p, cur, tp, r, CONVERT)
