"""Row-wise normalizations on the vector unit: layer_norm and softmax over the last axis of a 2-D fp32 array.

PE p takes the p-th share of the rows (by pe_id / pe_count) and walks it in blocks of rows that fit its
local memory, double-buffered like the elementwise kernels (the next block's DMA is issued before this
block is computed, results leave on the second engine). Inside a block each row is one short chain of
vector ops; the vector queue is in order, so a row's ops follow each other without waits, and the PE waits
for row r-1's ops after issuing row r's (at most two rows of signals pending).

Per row, in the order the references below repeat step by step (every step rounds to fp32; vsum adds in
index order in fp64):
  layer_norm: s = vsum(x); mean = s * f32(1/D); xc = x - mean; sq = xc * xc; v = vsum(sq) * f32(1/D);
              rstd = vrsqrt(v + eps); y = xc * rstd [* gamma] [+ beta]         -- bit-exact
  softmax:    m = vrmax(x); e = vexp(x - m); s = vsum(e); r = vrecip(s); y = e * r
              -- exp in fp64 rounded to fp32; libm and numpy may differ in the last fp64 bit, hence a tolerance.
"""
from __future__ import annotations

import numpy as np

from vnpu.errors import InvalidArgument

from . import runner
from .builder import KernelBuilder
from .elementwise import (ALIGN, RESERVED, SEM_LOAD, SEM_ONCE, SEM_STORE, SEM_VEC, TILE_CAP, pe_share, tile_loop)
from .library import OpSpec

# scalar slots at the bottom of local memory (f32 each)
C_INVD, C_EPS, S_SUM, S_MEAN, S_VSUM, S_VAR, S_VE, S_RSTD = (4 * i for i in range(8))
PARAMS = 64            # gamma, then beta, start here


def _align(x, a=ALIGN):
    return (int(x) + a - 1) // a * a


def _module(kind, has_gamma, has_beta):
    """kernel kind(x, [gamma], [beta], out, rows, d, blk, inv_d[, eps]): blocks of `blk` rows of d elements."""
    args = dict(x=("buffer", "f32"))
    if has_gamma:
        args["gamma"] = ("buffer", "f32")
    if has_beta:
        args["beta"] = ("buffer", "f32")
    args.update(out=("buffer", "f32"), rows=("scalar", "i64"), d=("scalar", "i64"), blk=("scalar", "i64"),
                inv_d=("scalar", "f32"))
    if kind == "layer_norm":
        args["eps"] = ("scalar", "f32")
    kb = KernelBuilder()
    with kb.kernel(kind, **args) as k:
        A = k.args
        lo, hi, t, ntiles, off, rowb, tb, base, bt = k.regs("lo", "hi", "t", "ntiles", "off", "rowb", "tb", "base",
                                                            "bt")
        cnt, nxt, tmp, ga, la, nb = k.regs("cnt", "nxt", "tmp", "ga", "la", "nb")
        k.sw(A.inv_d, (k.zero, C_INVD))
        if kind == "layer_norm":
            k.sw(A.eps, (k.zero, C_EPS))
        pe_share(k, A.rows, lo, hi)
        k.sub(tmp, hi, lo)
        k.add(ntiles, tmp, A.blk)
        k.addi(ntiles, ntiles, -1)
        k.div(ntiles, ntiles, A.blk)
        # local layout: [slots | gamma | beta | in0 | in1 | out0 | out1]
        k.shli(rowb, A.d, 2)
        k.mul(tb, rowb, A.blk)
        k.addi(tb, tb, ALIGN - 1)
        k.andi(tb, tb, -ALIGN)                        # one block buffer
        k.addi(nb, rowb, ALIGN - 1)
        k.andi(nb, nb, -ALIGN)                        # one parameter row
        k.const(base, PARAMS)
        if has_gamma:
            k.const(la, PARAMS)
            k.dma(0, la, A.gamma, rowb, SEM_ONCE)
            k.add(base, base, nb)
        k.mov(bt, base)
        if has_beta:
            k.dma(0, bt, A.beta, rowb, SEM_ONCE)
            k.add(base, base, nb)
        k.addi(base, base, ALIGN - 1)
        k.andi(base, base, -ALIGN)
        if has_gamma or has_beta:
            k.wait(SEM_ONCE, int(has_gamma) + int(has_beta))

        def buf(reg, which):
            """reg = address of buffer `which` (0, 1: inputs; 2, 3: outputs)."""
            k.mov(reg, base)
            for _ in range(which):
                k.add(reg, reg, tb)

        def load(b, start):
            k.sub(tmp, hi, start)
            k.min(tmp, tmp, A.blk)
            k.mul(nb, tmp, rowb)
            k.mul(ga, start, rowb)
            k.add(ga, ga, A.x)
            buf(la, b)
            k.dma(0, la, ga, nb, SEM_LOAD[b])

        def rows_of_block(b):
            """The vector ops of every row of the block in buffer b (cnt rows)."""
            r, xr, yr, sa, sb, one = k.regs("r", "xr", "yr", "sa", "sb", "one")
            k.const(one, 1)
            buf(xr, b)
            buf(yr, 2 + b)

            def slot(reg, addr):
                k.const(reg, addr)
                return reg
            nops = 0
            with k.for_range(r, 0, cnt):
                if kind == "layer_norm":
                    k.vsum(slot(sa, S_SUM), xr, A.d, "f32", SEM_VEC)
                    k.const(sa, S_MEAN)
                    k.const(sb, S_SUM)
                    k.const(tmp, C_INVD)
                    k.vmuls(sa, sb, tmp, one, "f32", SEM_VEC)            # mean = sum * (1/D)
                    k.vsubs(yr, xr, sa, A.d, "f32", SEM_VEC)             # xc = x - mean  (into the output row)
                    k.vmul(xr, yr, yr, A.d, "f32", SEM_VEC)              # xc^2 over x (no longer needed)
                    k.vsum(slot(sa, S_VSUM), xr, A.d, "f32", SEM_VEC)
                    k.const(sb, S_VAR)
                    k.vmuls(sb, sa, tmp, one, "f32", SEM_VEC)            # var = sum(xc^2) * (1/D)
                    k.const(sa, S_VE)
                    k.const(tmp, C_EPS)
                    k.vadds(sa, sb, tmp, one, "f32", SEM_VEC)            # var + eps
                    k.const(sb, S_RSTD)
                    k.vrsqrt(sb, sa, one, "f32", SEM_VEC)                # 1 / sqrt(var + eps)
                    k.vmuls(yr, yr, sb, A.d, "f32", SEM_VEC)             # xc * rstd
                    nops = 9
                    if has_gamma:
                        k.const(sa, PARAMS)
                        k.vmul(yr, yr, sa, A.d, "f32", SEM_VEC)
                        nops += 1
                    if has_beta:
                        k.vadd(yr, yr, bt, A.d, "f32", SEM_VEC)
                        nops += 1
                else:
                    k.const(sa, S_SUM)
                    k.vrmax(sa, xr, A.d, "f32", SEM_VEC)                 # m = max(x)
                    k.vsubs(yr, xr, sa, A.d, "f32", SEM_VEC)             # x - m
                    k.vexp(yr, yr, A.d, "f32", SEM_VEC)                  # e = exp(x - m)
                    k.const(sb, S_VSUM)
                    k.vsum(sb, yr, A.d, "f32", SEM_VEC)                  # s = sum(e)
                    k.const(sa, S_RSTD)
                    k.vrecip(sa, sb, one, "f32", SEM_VEC)                # 1 / s
                    k.vmuls(yr, yr, sa, A.d, "f32", SEM_VEC)             # e * (1/s)
                    nops = 6
                with k.if_("ne", r, k.zero):                             # row r-1's ops are done
                    k.wait(SEM_VEC, nops)
                k.add(xr, xr, rowb)
                k.add(yr, yr, rowb)
            k.wait(SEM_VEC, nops)                                        # the last row's (cnt >= 1)
            k.release(r, xr, yr, sa, sb, one)

        def body(b):
            k.sub(cnt, hi, off)
            k.min(cnt, cnt, A.blk)
            k.add(nxt, off, A.blk)
            with k.if_("lt", nxt, hi):                 # prefetch the next block before computing this one
                load(1 - b, nxt)
            k.wait(SEM_LOAD[b], 1)
            k.const(tmp, 2)
            with k.if_("ge", t, tmp):                  # the store of block t-2 has left out[b]
                k.wait(SEM_STORE[b], 1)
            rows_of_block(b)
            k.mul(ga, off, rowb)
            k.add(ga, ga, A.out)
            k.mul(nb, cnt, rowb)
            buf(la, 2 + b)
            k.dma(1, ga, la, nb, SEM_STORE[b])
            k.mov(off, nxt)

        k.mov(off, lo)
        with k.if_("lt", lo, hi):
            load(0, lo)
        tile_loop(k, t, ntiles, body)
        k.fence()
    return kb.build()
