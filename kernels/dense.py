"""Dense layers on the matrix unit: matmul, batched matmul, fully connected (int8 and fp16).

One generator, `_gemm`, writes every variant; `build_gemm` is its public form (a runtime that launches the
kernels itself builds them with it; `gemm` builds, runs and caches them for one call). Work is split into
items (batch b, column tile j); PE p takes items p, p + P, p + 2P, ... For each item it keeps A_b (all M
rows, or M tiles) in local memory, streams the weight tile W_b[:, j] in with double buffering (the DMA of
the next item's tile is issued before this item's multiply), multiplies on the matrix unit, runs the
epilogue on the vector unit (int8: int32 -> fp32, times the per-column scale, plus bias, optionally
requantized to int8) and DMAs the tile out while the next one computes. Kernels are specialized to their
shapes (like Glow compiles a network for its shapes) and cached.

Numerics: int8 x int8 products accumulate exactly in int32; the dequantized output is
fp32(acc) * f32(x_scale * w_scale[n]) + bias[n], rounded at each step; requantization is
clamp(round_half_even(fma(y, f32(1 / out_scale), zero_point))), rounded once to fp32 (vcvt). fp16 x fp16 accumulates in fp32 in K order.
"""
from __future__ import annotations

import math

import numpy as np

from vnpu.errors import InvalidArgument

from . import runner
from .builder import KernelBuilder, addc
from .library import OpSpec
from .reference import vcvt_to_int

WEIGHT_BUFFER = 1 << 20
BROADCAST_ROWS = 16    # the epilogue's scale and bias rows are replicated this many rows deep, not the tile's
                       # mt: the vector ops then walk the tile in chunks of this many rows, and the DMA engine
                       # writes mt / 16 times fewer bytes of replicas (it is the per-PE bottleneck otherwise)
MAX_EPILOGUE_CHUNKS = 48   # per per-column pass: 2 passes + 4 other ops per tile, two tiles: < 256 signals
EPILOGUES = ("raw", "dequant", "requant", "half")   # half: the fp32 result (+ bias, activation) as fp16


def _plan(M, K, N, eb, ob, pes, cols, local_bytes, epilogue):
    """Tile sizes: a column tile `nt` (a multiple of the array's columns, so PEs get even shares) and a row
    tile `mt`, as large as local memory allows (double-buffered weights, outputs and epilogue blocks)."""
    budget = local_bytes - 4096
    # several column tiles per PE, so the next tile's DMA and the last tile's epilogue overlap the multiply
    nt = max(1, min(N, cols * math.ceil(math.ceil(N / (max(1, pes) * 4)) / cols)))
    while True:
        wbytes = K * nt * eb
        mt = M
        while mt > 1:
            per_row = K * eb + 2 * nt * 4 + (2 * nt * ob) + (5 * nt * 4 if epilogue != "raw" else 0)
            if 2 * wbytes + mt * per_row <= budget:
                break
            mt = (mt + 1) // 2
        # A row, O[2] and Y[2] rows, and the epilogue's S[2], B[2] and F rows
        per_row = K * eb + 2 * nt * 4 + 2 * nt * ob + (5 * nt * 4 if epilogue != "raw" else 0)
        if wbytes <= WEIGHT_BUFFER and 2 * wbytes + mt * per_row <= budget:
            return nt, mt
        if nt == 1:
            raise InvalidArgument(f"gemm: K = {K} is too large for one weight tile in local memory "
                                  f"({local_bytes} bytes)")
        nt = max(1, nt // 2)


def _grid(M, K, N, eb, ob, pes, cols, local_bytes, epilogue, row_groups=True):
    """A 2-D grid of PEs: pm groups of rows x pn PEs sharing the columns. More row groups when M is large
    and the weights are on chip: each PE then loads less of A and still streams >= 128 rows per fold,
    while each weight tile is read by pm PEs (cheap from the SRAM ring, not from DRAM).
    Returns (pm, pn, Mg, nt, mt)."""
    pm = max(d for d in range(1, pes + 1) if pes % d == 0 and (d == 1 or (row_groups and M / d >= 128
                                                                         and N / cols >= pes // d)))
    pn = pes // pm
    Mg = math.ceil(M / pm)
    nt, mt = _plan(Mg, K, N, eb, ob, pn, cols, local_bytes, epilogue)
    return pm, pn, Mg, nt, mt


def _gemm(name, batch, M, K, N, dtype, epilogue, has_bias, pes, cols, local_bytes, out_zp=0, stage=False,
          activation=None, row_groups=False):
    """Build the module for one shape. Arguments: a, w, [scale, bias,] out (and requant parameter)."""
    eb = 1 if dtype == "i8" else 2
    acc_dt = "i32" if dtype == "i8" else "f32"
    out_dt = {"raw": acc_dt, "dequant": "f32", "requant": "i8", "half": "f16"}[epilogue]
    ob = {"i8": 1, "f16": 2}.get(out_dt, 4)
    pm, pn, Mg, nt, mt = _grid(M, K, N, eb, ob, pes, cols, local_bytes, epilogue, row_groups)
    n_tiles = math.ceil(N / nt)
    m_tiles = math.ceil(Mg / mt)
    items = batch * n_tiles
    # local memory layout
    A = 0
    Wb = [A + mt * K * eb, A + mt * K * eb + K * nt * eb]
    O = [Wb[1] + K * nt * eb, Wb[1] + K * nt * eb + mt * nt * 4]
    Y = [O[1] + mt * nt * 4, O[1] + mt * nt * 4 + mt * nt * ob]
    blk = mt * nt * 4 if epilogue != "raw" else 0                        # the epilogue's fp32 blocks
    S = [Y[1] + mt * nt * ob, Y[1] + mt * nt * ob + blk]                  # per-column scale, rows broadcast
    Bz = [S[1] + blk, S[1] + 2 * blk]                                     # bias, rows broadcast
    F = Bz[1] + blk
    ROW = [F + blk, F + blk + 2 * nt * 4]      # per buffer: the scale row and the bias row, before broadcast
    SAVE = F + blk + 4 * nt * 4               # the deferred tile's description and flags (9 words)
    # chunks of br rows, but never so many that one tile's epilogue overfills its semaphore (a card holds at
    # most 256 pending signals on one; two tiles' epilogues may be in flight)
    br = min(mt, max(BROADCAST_ROWS, math.ceil(mt / MAX_EPILOGUE_CHUNKS)))
    chunks = math.ceil(mt / br)                # vector ops per per-column pass (some may be empty)
    nvec = 0 if epilogue == "raw" else (1 + chunks * ((dtype == "i8") + bool(has_bias)) + (activation is not None)
                                        + (epilogue in ("requant", "half")))
    args = dict(a=("buffer", dtype), w=("buffer", dtype))
    if epilogue != "raw":
        if dtype == "i8":
            args.update(scale=("buffer", "f32"))
        if has_bias:
            args.update(bias=("buffer", "f32"))
    args.update(out=("buffer", out_dt))
    if epilogue == "requant":
        args.update(qparam=("scalar", "i64"))
    if stage:
        args.update(stage=("buffer", dtype))          # shared SRAM: A, read once from DRAM for every PE
    kb = KernelBuilder()
    with kb.kernel(name, **args) as k:
        a = k.args
        SEM_MAT, SEM_VEC, SEM_A = 1, 2, 3
        SEM_W = (4, 5)
        SEM_OUT = (6, 7)
        # registers are scarce (16 temporaries beside up to 7 arguments): the pending-DMA flags and the
        # batch whose A is loaded live in the SAVE words 6, 7 and 8 of local memory instead
        pe, npe, item, b, j, w, mrow, mcnt, t0, t1, t2, t3 = k.regs(
            "pe", "npe", "item", "b", "j", "w", "mrow", "mcnt", "t0", "t1", "t2", "t3")
        buf = k.reg("buf")                             # which weight buffer this item uses
        tpar = k.reg("tpar")                           # which O/Y pair this tile uses
        PEND = (SAVE + 48, SAVE + 56)                  # a DMA out of O/Y[0] or [1] is in flight
        CUR_B = SAVE + 64
        k.csrr(pe, "pe_id")
        k.csrr(npe, "pe_count")
        k.const(buf, 0)
        k.const(tpar, 0)
        k.const(t0, SAVE)
        k.sd(k.zero, (t0, 0))                          # no deferred tile yet
        k.sd(k.zero, (t0, 48))
        k.sd(k.zero, (t0, 56))
        k.const(t1, -1)
        k.sd(t1, (t0, 64))

        def finish_prev():
            """Wait for the deferred tile's epilogue and send it out (DMA, rows strided into the output)."""
            sv = k.const(k.reg("save"), SAVE)
            par = k.reg("par")
            k.ld(t0, (sv, 0))
            with k.if_("ne", t0, k.zero):
                if nvec:
                    k.wait(SEM_VEC, nvec)
                k.ld(t0, (sv, 8))
                k.ld(t1, (sv, 16))
                k.ld(t2, (sv, 24))
                k.ld(t3, (sv, 32))
                k.ld(par, (sv, 40))
                for half in (0, 1):
                    with k.if_("eq" if half == 0 else "ne", par, k.zero):
                        k.copy(0, t0, t3, t2, SEM_OUT[half], rows=t1, src_stride=t2, dst_stride=N * ob)
                        k.const(t0, 1)
                        k.sd(t0, (sv, 48 + 8 * half))
                k.sd(k.zero, (sv, 0))
            k.release(sv, par)
        def per_column(mnemonic, dst, block, cnt):
            """dst[r, :] = dst[r, :] (op) block[r mod br, :] over the tile's rows: `chunks` vector ops of br rows
            each (the last ones empty when the tile has fewer rows), so the count of SEM_VEC signals is fixed."""
            step, ptr, left, n = k.regs("step", "ptr", "left", "n")
            k.mul(step, w, k.const(n, br))             # elements per chunk
            k.mov(ptr, dst)
            k.mov(left, cnt)
            for c in range(chunks):
                k.min(n, left, step)
                k.emit(mnemonic, ptr, ptr, block, n, "f32", SEM_VEC)
                if c + 1 < chunks:
                    k.sub(left, left, n)
                    k.shli(n, n, 2)
                    k.add(ptr, ptr, n)
            k.release(step, ptr, left, n)

        src_a = a.a
        if stage:
            # the PEs bring A on chip once, each a 1/P slice (in parallel); every PE then reads all of it over
            # the SRAM ring instead of from DRAM
            total = batch * M * K * eb
            share = -(-total // pes)
            share = -(-share // 64) * 64
            k.muli(t0, pe, share)                      # my slice: [t0, t0 + t1)
            k.const(t1, total)
            k.sub(t1, t1, t0)
            k.const(t2, share)
            k.min(t1, t1, t2)
            with k.if_("lt", k.zero, t1):
                k.add(t2, a.a, t0)
                k.add(t3, a.stage, t0)
                k.copy(0, t3, t2, t1, SEM_A)
                k.wait(SEM_A, 1)
            k.barrier()
            src_a = a.stage

        def load_tile(item_reg, bsel):
            """Issue the DMA of item's weight tile (and its scale/bias blocks) into buffer bsel (0/1 reg)."""
            bi, ji, wi, src = k.regs("bi", "ji", "wi", "src")
            k.const(t3, n_tiles)
            k.div(bi, item_reg, t3)
            k.rem(ji, item_reg, t3)
            k.muli(ji, ji, nt)                         # n0
            k.const(wi, N)
            k.sub(wi, wi, ji)
            k.const(t3, nt)
            k.min(wi, wi, t3)                          # tile width
            # the weights are pre-packed by column tile ([K, w] contiguous per tile, tiles in order, as a
            # compiler packs constant weights), so a tile is one contiguous DMA: w + (b*K*N + n0*K)*eb
            k.muli(src, bi, K * N * eb)
            k.add(src, src, a.w)
            k.muli(t3, ji, K * eb)
            k.add(src, src, t3)
            lw_ = bi                                   # bi is no longer needed
            k.muli(lw_, wi, K * eb)
            local = k.reg("local")
            for half in (0, 1):
                with k.if_("eq" if half == 0 else "ne", bsel, k.zero):
                    k.const(local, Wb[half])
                    k.copy(0, local, src, lw_, SEM_W[half])
            if epilogue != "raw":
                # scale[n0:n0+w] (and bias) broadcast to mt rows: one row from DRAM, then replicated inside
                # local memory by a DMA with a zero source stride (no DRAM traffic per row)
                k.shli(lw_, wi, 2)
                blocks_ = (((a.scale, S, 0),) if dtype == "i8" else ()) + (((a.bias, Bz, 1),) if has_bias else ())
                for arr, blocks, r in blocks_:
                    k.shli(t3, ji, 2)
                    k.add(src, arr, t3)
                    for half in (0, 1):
                        with k.if_("eq" if half == 0 else "ne", bsel, k.zero):
                            k.const(local, ROW[half] + r * nt * 4)
                            k.copy(0, local, src, lw_, SEM_W[half])
                            k.mov(src, local)
                            k.const(local, blocks[half])
                            k.copy(0, local, src, lw_, SEM_W[half], rows=br, src_stride=0, dst_stride=lw_)
            k.release(bi, ji, wi, src, local)

        n_w_signals = 1 + 2 * ((1 if (epilogue != "raw" and dtype == "i8") else 0) + (1 if has_bias else 0))
        # PE p is row group p % pm and column share p // pm (of pn)
        k.const(t0, pm)
        k.div(pe, pe, t0)
        k.div(npe, npe, t0)
        # prologue: the first item's tile
        k.mov(item, pe)
        k.const(t0, items)
        with k.if_("lt", item, t0):
            load_tile(item, buf)
        with k.for_range(item, pe, items, step=npe):
            k.const(t0, n_tiles)
            k.div(b, item, t0)
            k.rem(j, item, t0)
            k.muli(j, j, nt)                           # n0
            k.const(w, N)
            k.sub(w, w, j)
            k.const(t0, nt)
            k.min(w, w, t0)                            # this tile's width
            # wait for this item's tile; it goes into the matrix unit
            with k.if_("eq", buf, k.zero):
                k.wait(SEM_W[0], n_w_signals)
            with k.if_("ne", buf, k.zero):
                k.wait(SEM_W[1], n_w_signals)
            k.const(t0, K)
            with k.if_("eq", buf, k.zero):
                k.const(t2, Wb[0])
            with k.if_("ne", buf, k.zero):
                k.const(t2, Wb[1])
            k.mm_ldw(t2, t0, w, dtype, SEM_MAT)
            m_end = k.reg("m_end")
            k.csrr(t0, "pe_id")
            k.const(t1, pm)
            k.rem(t0, t0, t1)
            k.muli(t0, t0, Mg)                         # this PE's first row
            addc(k, m_end, t0, Mg)
            k.const(t1, M)
            k.min(m_end, m_end, t1)
            with k.for_range(mrow, t0, m_end, step=mt):
                k.sub(mcnt, m_end, mrow)
                k.const(t0, mt)
                k.min(mcnt, mcnt, t0)                  # rows in this M tile
                # A_b rows [mrow, mrow + mcnt) into local A when b or the M tile changed
                need = t3
                k.const(t1, CUR_B)
                k.ld(need, (t1, 0))
                k.xor(need, b, need)
                if m_tiles > 1:
                    k.ori(need, need, 1)               # several M tiles: reload every time
                with k.if_("ne", need, k.zero):
                    k.muli(t1, b, M * K * eb)
                    k.muli(t2, mrow, K * eb)
                    k.add(t1, t1, t2)
                    k.add(t1, t1, src_a)
                    k.muli(t2, mcnt, K * eb)
                    k.copy(0, k.zero, t1, t2, SEM_A)
                    k.wait(SEM_A, 1)
                    k.const(t1, CUR_B)
                    k.sd(b, (t1, 0))
                # O/Y[tpar] are free once the DMA out of two tiles ago is done
                for half in (0, 1):
                    with k.if_("eq" if half == 0 else "ne", tpar, k.zero):
                        k.const(t1, PEND[half])
                        k.ld(t0, (t1, 0))
                        with k.if_("ne", t0, k.zero):
                            k.wait(SEM_OUT[half], 1)
                            k.sd(k.zero, (t1, 0))
                        k.const(t2, O[half])
                k.mm_mul(t2, k.zero, mcnt, dtype, "set", SEM_MAT)
                # while the matrix unit multiplies: finish the previous tile (its epilogue, its DMA out), and
                # on an item's first tile prefetch the next item's weights (their buffer is free only now)
                finish_prev()
                k.csrr(t1, "pe_id")
                k.const(t0, pm)
                k.rem(t1, t1, t0)
                k.muli(t1, t1, Mg)                     # is this the item's first M tile?
                with k.if_("eq", mrow, t1):
                    k.add(t2, item, npe)
                    k.const(t0, items)
                    k.xori(t1, buf, 1)
                    with k.if_("lt", t2, t0):
                        load_tile(t2, t1)
                k.csrr(t1, "pe_id")
                k.const(t0, pm)
                k.rem(t1, t1, t0)
                k.muli(t1, t1, Mg)
                with k.if_("eq", mrow, t1):
                    k.wait(SEM_MAT, 2)                 # this item's mm.ldw and first mm.mul
                with k.if_("ne", mrow, t1):
                    k.wait(SEM_MAT, 1)
                for half in (0, 1):
                    with k.if_("eq" if half == 0 else "ne", tpar, k.zero):
                        k.const(t2, O[half])
                        k.const(t3, Y[half] if epilogue != "raw" else O[half])
                cnt = t0
                k.mul(cnt, mcnt, w)                    # elements in the tile
                if epilogue != "raw":
                    # fp32(acc) * scale (+ bias), activation, on the vector unit: issued, not waited for
                    dst = t3 if epilogue == "dequant" else k.const(k.reg("f"), F)   # requant/half: via F
                    k.const(t1, 0x3F800000)            # vcvt parameter: scale 1.0, zero point 0
                    k.vcvt(dst, t2, cnt, t1, "i32" if dtype == "i8" else "f32", "f32", SEM_VEC)
                    for blocks, present in ((S, dtype == "i8"), (Bz, has_bias)):
                        if not present:
                            continue
                        for half in (0, 1):
                            with k.if_("eq" if half == 0 else "ne", buf, k.zero):
                                k.const(t1, blocks[half])
                        per_column("vmul" if blocks is S else "vadd", dst, t1, cnt)
                    if activation is not None:          # fused activation: relu or sigmoid
                        k.emit("v" + activation, dst, dst, cnt, "f32", SEM_VEC)
                    if epilogue in ("requant", "half"):
                        if epilogue == "requant":
                            k.vcvt(t3, dst, cnt, a.qparam, "f32", "i8", SEM_VEC)
                        else:
                            k.vcvt(t3, dst, cnt, t1, "f32", "f16", SEM_VEC)
                        k.release(dst)
                # remember the tile for finish_prev: DRAM address, rows, row bytes, local source, parity
                k.muli(t0, b, M * N * ob)
                k.muli(t1, mrow, N * ob)
                k.add(t0, t0, t1)
                k.muli(t1, j, ob)
                k.add(t0, t0, t1)
                k.add(t0, t0, a.out)
                k.muli(t1, w, ob)
                sv = k.const(k.reg("save"), SAVE)
                k.const(t2, 1)
                k.sd(t2, (sv, 0))
                k.sd(t0, (sv, 8))
                k.sd(mcnt, (sv, 16))
                k.sd(t1, (sv, 24))
                k.sd(t3, (sv, 32))
                k.sd(tpar, (sv, 40))
                k.release(sv)
                k.xori(tpar, tpar, 1)
            k.release(m_end)
            k.xori(buf, buf, 1)
        finish_prev()
        k.fence()
    del out_zp
    return kb.build(), {"nt": nt, "mt": mt, "items": items, "grid": (pm, pn)}


def build_gemm(M, K, N, *, dtype="f16", epilogue="dequant", bias=True, activation=None, batch=1, pes=None,
               config=None, cols=None, local_bytes=None, stage=False, row_groups=False, name="gemm"):
    """Build the gemm module for one shape, for a caller that launches it itself (a serving runtime keeps
    its layers' kernels loaded and chains them on a queue). Returns (image, info); info["nt"] is the column
    tile the weights must be packed with (`pack_weights(w3, info["nt"])`), info["mt"] the row tile,
    info["grid"] the PE grid.

    Shape: out[b] = a[b] @ w[b], a [batch, M, K], w [batch, K, N]; dtype "i8" or "f16" (both operands).
    Epilogue: "raw" (int32 / fp32 accumulators), "dequant" (fp32: accumulators x per-column scale for i8,
    + bias, activation), "requant" (as dequant, then to int8 by the `qparam` argument: see `qparam`),
    "half" (as dequant, then rounded to fp16). activation: None, "relu" or "sigmoid" (not with "raw").
    The card: `config` (a card config: its PEs, matrix columns and local memory), or `cols` and
    `local_bytes` given; `pes` is how many PEs the kernel is launched on (all the card's by default).
    stage: A is first brought into the shared SRAM (then the `stage` argument is a shared buffer of
    batch*M*K elements); row_groups: PEs also split the rows (weights resident on chip).

    The kernel's arguments, in order: a, w (packed), [scale (i8, f32 [N])], [bias (f32 [N])], out
    ([batch, M, N] of int32/fp32, fp32, int8 or fp16 by epilogue), [qparam (requant)], [stage]."""
    if dtype not in ("i8", "f16"):
        raise InvalidArgument(f"build_gemm: dtype must be 'i8' or 'f16', got {dtype!r}")
    if epilogue not in EPILOGUES:
        raise InvalidArgument(f"build_gemm: epilogue must be one of {', '.join(EPILOGUES)}, got {epilogue!r}")
    if activation not in (None, "relu", "sigmoid") or (activation is not None and epilogue == "raw"):
        raise InvalidArgument(f"build_gemm: activation must be None, 'relu' or 'sigmoid' (not with a raw "
                              f"epilogue), got {activation!r} with {epilogue!r}")
    if config is not None:
        pes = config.pes if pes is None else pes
        cols = config.matrix.cols if cols is None else cols
        local_bytes = config.local_memory.bytes if local_bytes is None else local_bytes
    for what, v in (("M", M), ("K", K), ("N", N), ("batch", batch), ("pes", pes), ("cols", cols),
                    ("local_bytes", local_bytes)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise InvalidArgument(f"build_gemm: {what} must be a positive int (or come from config), got {v!r}")
    return _gemm(name, int(batch), int(M), int(K), int(N), dtype, epilogue, bool(bias), int(pes), int(cols),
                 int(local_bytes), stage=stage, activation=activation, row_groups=row_groups)


def pack_weights(w3, nt):
    """[B, K, N] -> the kernel's layout: per batch, column tiles of width nt, each [K, w] contiguous."""
    B, K, N = w3.shape
    parts = [np.ascontiguousarray(w3[:, :, n0:n0 + nt]).reshape(B, -1) for n0 in range(0, N, nt)]
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


def _plan_for(card, B, M, K, N, dtype, epilogue, use, row_groups=False):
    npes, cols, local = _config(card)
    eb = 1 if dtype == "i8" else 2
    ob = {"requant": 1, "half": 2}.get(epilogue, 4)
    return _grid(M, K, N, eb, ob, use, cols, local, epilogue, row_groups)[3:]


def qparam(scale, zero_point=0):
    """The vcvt parameter register value: fp32 scale bits low, int32 zero point high, as a signed int64."""
    from .builder import f32_bits
    v = f32_bits(scale) | ((int(zero_point) & 0xFFFFFFFF) << 32)
    return v - (1 << 64) if v >> 63 else v


def _config(card):
    cfg = card.config
    return cfg.pes, cfg.matrix.cols, cfg.local_memory.bytes


def gemm(card, a, w, *, scale=None, bias=None, out_scale=None, out_zero_point=0, activation=None, pes=None,
         trace=False, out_dtype=None, weights_on_chip=False, inputs_on_chip=False):
    """out[b] = a[b] @ w[b] on the matrix unit (weights_on_chip: w resident in the shared SRAM). a: [M, K] or [B, M, K]; w: [K, N] or [B, K, N]; int8 or fp16.
    int8: raw int32, or with `scale` (per-tensor float or per-column [N]) dequantized fp32 (+ bias [N]),
    or with `out_scale` requantized to int8. fp16: fp32 output (+ bias).
    inputs_on_chip: `a` is resident in the shared SRAM (the previous layer's output kept on chip, as a
    serving runtime chains layers), so the kernel reads it over the SRAM ring without staging it first."""
    a, w = np.asarray(a), np.asarray(w)
    if a.dtype != w.dtype or a.dtype not in (np.int8, np.float16):
        raise InvalidArgument(f"gemm: a and w must both be int8 or both fp16, got {a.dtype} and {w.dtype}")
    batched = a.ndim == 3
    if a.ndim not in (2, 3) or w.ndim != a.ndim:
        raise InvalidArgument(f"gemm: expected a [M, K] with w [K, N] or a [B, M, K] with w [B, K, N], got "
                              f"{a.shape} and {w.shape}")
    a3 = a if batched else a[None]
    w3 = w if batched else w[None]
    B, M, K = a3.shape
    if w3.shape[0] != B or w3.shape[1] != K:
        raise InvalidArgument(f"gemm: inner dimensions differ: a {a.shape} and w {w.shape}")
    N = w3.shape[2]
    dtype = "i8" if a.dtype == np.int8 else "f16"
    if activation not in (None, "relu", "sigmoid"):
        raise InvalidArgument(f"gemm: activation must be None, 'relu' or 'sigmoid', got {activation!r}")
    if activation is not None and dtype == "i8" and scale is None:
        raise InvalidArgument("gemm: an int8 activation needs the scale that dequantizes the accumulators")
    if dtype == "f16":
        epilogue = "dequant" if (bias is not None or activation) else "raw"
        if out_dtype == "fp16":
            epilogue = "half"
        col_scale = np.ones(N, np.float32)
    else:
        epilogue = "raw" if scale is None else ("requant" if out_scale is not None else "dequant")
        if out_dtype == "fp16" and scale is not None:
            epilogue = "half"
        col_scale = np.broadcast_to(np.asarray(scale if scale is not None else 1.0, np.float32), (N,)).copy()
    if bias is not None:
        bias = np.asarray(bias, np.float32)
        if bias.shape != (N,):
            raise InvalidArgument(f"gemm: bias must have shape ({N},), got {bias.shape}")
        if dtype == "i8" and scale is None:
            raise InvalidArgument("gemm: an int8 bias needs the scale that dequantizes the accumulators")
    out_dt = {"raw": np.int32 if dtype == "i8" else np.float32, "dequant": np.float32, "requant": np.int8,
              "half": np.float16}[epilogue]
    if min(B, M, N) == 0:                 # an empty result (PyTorch returns it too): nothing to compute
        out = np.zeros((B, M, N), out_dt)
        return (out if batched else out[0]), runner.nothing(card, "gemm", pes)
    if K == 0:
        # an empty sum: every accumulator is 0 (then scale, bias, activation, requantization as usual, like
        # PyTorch's linear with in_features = 0 gives the bias): one zero term computes exactly that
        a3 = np.zeros((B, M, 1), a3.dtype)
        w3 = np.zeros((B, 1, N), w3.dtype)
        K = 1
    npes, cols, local = _config(card)
    use = npes if pes is None else len(pes)
    a_bytes = B * M * K * (1 if dtype == "i8" else 2)
    stage = use > 1 and not inputs_on_chip and a_bytes <= card.config.shared_sram.bytes // 2
    key = ("gemm", B, M, K, N, dtype, epilogue, bias is not None, use, cols, local, stage, activation,
           weights_on_chip)
    built = {}

    def build():
        img, info = _gemm("gemm", B, M, K, N, dtype, epilogue, bias is not None, use, cols, local, stage=stage,
                          activation=activation, row_groups=weights_on_chip)
        built.update(info)
        return img
    args = [a3, w3]
    if epilogue != "raw":
        if dtype == "i8":
            args.append(col_scale)
        if bias is not None:
            args.append(bias)
    args.append(runner.Out((B, M, N), out_dt))
    if epilogue == "requant":
        args.append(qparam(np.float32(1.0) / np.float32(out_scale), out_zero_point))
    if stage:
        args.append(runner.Scratch(a_bytes, memory="shared"))
    args[1] = pack_weights(w3, built.get("nt") or _plan_for(card, B, M, K, N, dtype, epilogue, use,
                                                             weights_on_chip)[0])
    if weights_on_chip:      # resident weights in the shared SRAM, as a serving runtime keeps them
        args[1] = runner.OnChip(args[1])
    if inputs_on_chip:
        args[0] = runner.OnChip(a3)
    (out,), result = runner.run(card, key, build, "gemm", args, pes=pes, trace=trace)
    return (out if batched else out[0]), result


# --- numpy references --------------------------------------------------------------------------------
def _activate(y, activation):
    if activation == "relu":              # vrelu: NaN passes through
        return np.where(y < 0, np.float32(0), y).astype(np.float32)
    if activation == "sigmoid":
        with np.errstate(over="ignore"):
            return (1.0 / (1.0 + np.exp(-y.astype(np.float64)))).astype(np.float32)
    return y


def reference_gemm(a, w, scale=None, bias=None, out_scale=None, out_zero_point=0, activation=None):
    a, w = np.asarray(a), np.asarray(w)
    if a.dtype == np.int8:
        acc = (a.astype(np.int64) @ w.astype(np.int64)).astype(np.int32)
        if scale is None:
            return acc
        y = acc.astype(np.float32) * np.broadcast_to(np.asarray(scale, np.float32), (w.shape[-1],))
        if bias is not None:
            y = y + np.asarray(bias, np.float32)
        y = _activate(y, activation)
        if out_scale is None:
            return y.astype(np.float32)
        return vcvt_to_int(y, np.float32(1.0) / np.float32(out_scale), out_zero_point)
    a32, w32 = a.astype(np.float32), w.astype(np.float32)
    out = np.zeros(a.shape[:-1] + (w.shape[-1],), np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        for k in range(a.shape[-1]):       # fp32 in K order, like the unit
            out += a32[..., k:k + 1] * w32[..., k:k + 1, :]
    if bias is not None:
        out = out + np.asarray(bias, np.float32)
    out = _activate(out, activation)
    if out_scale is not None:          # the fp16 layer's fp32 result requantized to int8 (vcvt)
        return vcvt_to_int(out, np.float32(1.0) / np.float32(out_scale), out_zero_point)
    return out


def linear(card, x, weight, bias=None, *, x_scale=None, w_scale=None, out_scale=None, out_zero_point=0, pes=None):
    """A fully connected layer y = x @ weight.T + bias (PyTorch's layout: weight [N, K]).
    int8: x and weight int8 with x_scale (per tensor) and w_scale (per tensor or per output row [N]):
    y = acc * x_scale * w_scale + bias, fp32, or int8 with out_scale. fp16: x and weight fp16, fp32 y."""
    x, weight = np.asarray(x), np.asarray(weight)
    if weight.ndim != 2 or x.ndim != 2 or x.shape[1] != weight.shape[1]:
        raise InvalidArgument(f"linear: x [M, K] and weight [N, K] expected, got {x.shape} and {weight.shape}")
    wt = np.ascontiguousarray(weight.T)
    if x.dtype == np.int8:
        if x_scale is None or w_scale is None:
            raise InvalidArgument("linear: int8 inputs need x_scale and w_scale")
        scale = (np.float32(x_scale) * np.asarray(w_scale, np.float32)).astype(np.float32)
        return gemm(card, x, wt, scale=scale, bias=bias, out_scale=out_scale, out_zero_point=out_zero_point, pes=pes)
    return gemm(card, x, wt, bias=bias, pes=pes)


# --- the op registry ---------------------------------------------------------------------------------
def _inputs(rng, p):
    shape_a = (p["batch"], p["m"], p["k"]) if p["batch"] > 1 else (p["m"], p["k"])
    shape_w = (p["batch"], p["k"], p["n"]) if p["batch"] > 1 else (p["k"], p["n"])
    if p["dtype"] == "int8":
        d = {"a": rng.integers(-128, 128, shape_a).astype(np.int8), "w": rng.integers(-128, 128, shape_w).astype(np.int8)}
    else:
        d = {"a": rng.standard_normal(shape_a).astype(np.float16), "w": rng.standard_normal(shape_w).astype(np.float16)}
    return d


def _fc_inputs(rng, p):
    d = _inputs(rng, dict(p, batch=1))
    d["scale"] = (rng.random(p["n"]) * 1e-3 + 1e-4).astype(np.float32)
    d["bias"] = rng.standard_normal(p["n"]).astype(np.float32)
    return d


def _tol(p):
    return (0, 0) if p["dtype"] == "int8" else (1e-4, 1e-3)


OPS = [
    OpSpec("matmul", dict(m=64, k=256, n=256, dtype="int8", batch=1), _inputs,
           lambda card, x, p, pes: (lambda o, r: ([o], r))(*gemm(card, x["a"], x["w"], pes=pes)),
           lambda x, p: [reference_gemm(x["a"], x["w"])], _tol,
           lambda p: 2 * p["batch"] * p["m"] * p["k"] * p["n"],
           "a [m, k] @ w [k, n] (batch > 1: batched) on the matrix unit; int8 -> int32, fp16 -> fp32",
           {"dtype": ("int8", "fp16")}),
    OpSpec("fc", dict(m=256, k=512, n=512, dtype="int8"), _fc_inputs,
           lambda card, x, p, pes: (lambda o, r: ([o], r))(*gemm(
               card, x["a"], x["w"], scale=x["scale"] if p["dtype"] == "int8" else None, bias=x["bias"], pes=pes)),
           lambda x, p: [reference_gemm(x["a"], x["w"], scale=x["scale"] if p["dtype"] == "int8" else None,
                                        bias=x["bias"])],
           lambda p: (1e-5, 1e-4) if p["dtype"] == "int8" else (1e-4, 1e-3),
           lambda p: 2 * p["m"] * p["k"] * p["n"],
           "fully connected: int8 with per-column scales and bias (fp32 out), or fp16 with bias",
           {"dtype": ("int8", "fp16")}),
]
