"""conv2d (NCHW, groups = 1 only) as im2col + matmul on the matrix unit: fp16 or fp32 inputs and weights (the
matrix unit computes in the input dtype: fp32 when x or w is fp32), fp32 output. Every element size below
("eb": 2 for fp16, 4 for fp32) follows the input dtype.

Work split. The output is tiled by whole output rows: a tile is R output rows of one image (M = R * OW
positions). The PEs form G groups by output channel (G divides OC; PE p is in group p % G and computes
channels [g * OC/G, (g+1) * OC/G)); the tiles are dealt round-robin to the PEs of each group. R and G are
chosen by a cost estimate (`estimate_cycles`) among the plans that fit PE-local memory; G > 1 pays off
when the weights are large (each PE loads only its channels' weights).

Per PE, once:

    weights  one DMA of its rows of w [OC, C*KH*KW] into local memory, then a strided local DMA (eb-byte
             rows) transposes them to the weight matrix [C*KH*KW, OC/G] (in chunks of K x n x eb bytes, at
             most the 1 MiB weight buffer), loaded with mm.ldw once when it is one chunk
    staging  two zero-filled input bands [C, (R-1)*stride + KH, W + 2*pad] of the input dtype: the border
             columns are never written, so they stay zero (the padding)

Per tile (software-pipelined: the next tile's band, im2col and matmul run while this one finishes):

    band     one 3-D DMA copies the input rows the tile needs (clipped to the image) into a staging band;
             a band clipped at the top or bottom is zero-filled first (vsub i32)
    im2col   2-D/3-D local DMAs, each row KW contiguous input values, fill the patch matrix
             A [M, C*KH*KW] (column order c, kh, kw); the two largest of (OW, R, C, KH) are the DMA's
             dimensions, the other two are loops
    matmul   mm.mul A (M rows) by the weight matrix -> [M, OC/G] fp32 (per weight chunk: mm.ldw, mm.mul),
             dt f16 or f32 as the inputs
    layout   a strided local DMA (4-byte rows) transposes it to [OC/G, M]; bias: one vadds per channel
    store    one contiguous DMA: straight into out[n] when a tile is a whole image, else into a scratch
             [tiles, OC, M] (shared SRAM when it fits, else DRAM)

When tiles are smaller than an image, a second phase (after a barrier) copies the scratch into the NCHW
output, one (image, channel block) per unit, so that every DMA writes one contiguous block of `out`: the
race sanitizer checks a strided transfer by its bounding interval, so two PEs writing different positions
of the same channels with strided DMAs would be reported as racing.

Numerics (what `reference_conv2d` computes; the card matches it bit for bit). An fp32 conv computes in
fp32, never silently in fp16; fp16 is a dtype the caller chooses.
- fp32 x or w (a fp16 operand is widened exactly): products exact in fp64, summed in fp64 in (c, kh, kw)
  order, rounded once to fp32 (a NaN made there is the canonical quiet NaN), then + bias in fp32. So 7e4
  stays 7e4 and 1e-8 x 1e8 + 7e4 gives 70001 (in fp16: inf, and NaN). Against float64 math (PyTorch's float64 conv):
    |card - f64| <= (2 * 2**-24 + C*KH*KW * 2**-53) * (sum |x w| + |bias|) + 2**-148.
  The matrix unit's fp32 rate is lower than its fp16 rate, and fp32 operands take twice the local memory
  (fewer output rows per tile fit).
- fp16 x and w: products exact in fp32, sums in fp32 in (c, kh, kw) order, then + bias in fp32. Against
  float64 math on the same fp16 values:
    |card - f64| <= (C*KH*KW + 1) * 2**-24 * (sum |x w| + |bias|).
NaN and inf propagate as in IEEE arithmetic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from vnpu.emulator.state import WEIGHT_BUFFER_BYTES
from vnpu.errors import InvalidArgument

from .builder import KernelBuilder, addc, mulc
from .library import OpSpec
from .runner import Out, Scratch, nothing, run

WEIGHT_BUFFER = WEIGHT_BUFFER_BYTES   # the matrix unit's weight buffer per PE (mm.ldw K x N x eb bytes at most)
ALIGN = 64
SEM_LOAD, SEM_STORE, SEM_LOC, SEM_MAT, SEM_VEC = 0, 1, 2, 3, 4
WINDOW = 8


def _align(n):
    return -(-int(n) // ALIGN) * ALIGN





class Window:
    """At most WINDOW async operations pending on `sem` (kept well below the 256 a semaphore holds)."""

    def __init__(self, k, sem):
        self.k, self.sem = k, sem
        self.cnt = k.reg("pending")
        k.li(self.cnt, 0)

    def issued(self):
        k = self.k
        k.addi(self.cnt, self.cnt, 1)
        lim = k.const(k.reg("lim"), WINDOW)
        with k.if_("ge", self.cnt, lim):
            k.wait(self.sem, 1)
            k.addi(self.cnt, self.cnt, -1)
        k.release(lim)

    def drain(self):
        k = self.k
        top, end = k.label("drain"), k.label("drained")
        k.place(top)
        k.beq(self.cnt, k.zero, end)
        k.wait(self.sem, 1)
        k.addi(self.cnt, self.cnt, -1)
        k.jmp(top)
        k.place(end)
        k.release(self.cnt)


# --- plan --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    N: int
    C: int
    H: int
    W: int
    OC: int
    KH: int
    KW: int
    sh: int
    sw: int
    ph: int
    pw: int
    bias: bool
    R: int                  # output rows per tile
    G: int                  # output-channel groups: PE p computes channels of group p % G
    pes: int                # PEs of the launch (phase-2 blocking)
    two_engines: bool
    scratch_shared: bool = False
    eb: int = 2             # bytes per input element: 2 (fp16 inputs, dt f16) or 4 (fp32 inputs, dt f32)

    @property
    def dt(self):
        return "f32" if self.eb == 4 else "f16"

    @property
    def OH(self):
        return (self.H + 2 * self.ph - self.KH) // self.sh + 1

    @property
    def OW(self):
        return (self.W + 2 * self.pw - self.KW) // self.sw + 1

    @property
    def K(self):
        return self.C * self.KH * self.KW

    @property
    def OCg(self):
        return self.OC // self.G

    @property
    def M(self):
        return self.R * self.OW

    @property
    def Wp(self):
        return self.W + 2 * self.pw

    @property
    def bandH(self):
        return (self.R - 1) * self.sh + self.KH

    @property
    def TPI(self):
        return -(-self.OH // self.R)

    @property
    def direct(self):
        return self.TPI == 1

    @property
    def chunks(self):
        """A group's output channels in chunks whose K x n weight tile fits the weight buffer: [(oc0, n)]."""
        per = max(1, min(self.OCg, WEIGHT_BUFFER // (self.eb * self.K)))
        return [(o, min(per, self.OCg - o)) for o in range(0, self.OCg, per)]

    @property
    def phase2_block(self):
        """Output channels per phase-2 unit: enough units for every PE when the batch is small."""
        return -(-self.OC // min(self.OC, max(1, -(-self.pes // self.N))))

    @property
    def scratch_bytes(self):
        return self.N * self.TPI * self.OC * self.M * 4

    def layout(self):
        return layout(self, self.R)


def layout(p, R):
    M = R * p.OW
    bandH = (R - 1) * p.sh + p.KH
    eb = p.eb
    stg = _align(p.C * bandH * p.Wp * eb)
    lay, off = {}, 0
    for name, n in (("WM", p.K * p.OCg * eb), ("BIAS", p.OCg * 4 if p.bias else 0)):
        lay[name] = off
        off += _align(n)
    lay["WORK"] = work = off
    for name, n in (("STG0", stg), ("STG1", stg), ("A0", M * p.K * eb), ("A1", M * p.K * eb),
                    ("RES0", M * p.OCg * 4), ("RES1", M * p.OCg * 4), ("OUT0", p.OCg * M * 4),
                    ("OUT1", p.OCg * M * 4)):
        lay[name] = off
        off += _align(n)
    lay["STG_BYTES"] = stg
    lay["END"] = max(off, work + _align(p.OCg * p.K * eb))     # the raw weights share the work area
    return lay


def _largest_r(p, local):
    """The largest rows-per-tile whose layout fits `local` bytes (0 if not even one row fits)."""
    if layout(replace(p, R=1), 1)["END"] > local:
        return 0
    lo, hi = 1, p.OH
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if layout(p, mid)["END"] <= local:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _run_cycles(nbytes, cfg):
    """DRAM cycles of one contiguous run (docs/timing.md section 6, aligned)."""
    if nbytes <= 0:
        return 0.0
    burst = cfg.dram.burst_bytes
    moved = -(-nbytes // burst) * burst
    eff = cfg.dram.random_efficiency + (1 - cfg.dram.random_efficiency) * min(1.0, moved / cfg.dram.page_bytes)
    return moved / (cfg.dram.gbps / cfg.clock_ghz) / eff


def estimate_cycles(p, cfg):
    """A rough cycle estimate of a plan, used only to choose R and G: phase 1 is the slower of the card's
    DRAM channel (every run at its efficiency) and one PE's pipelined tiles (the DMA work of one tile
    overlaps the matmul of the next) after its weight set-up; phase 2 is DRAM-bound."""
    npe = p.pes
    tiles = p.N * p.TPI
    per_pe = -(-tiles // max(1, npe // p.G))
    active = min(npe, p.G * tiles)
    rows, cols, depth = cfg.matrix.rows, cfg.matrix.cols, cfg.matrix.depth
    folds = sum(-(-p.K // (rows * depth)) * -(-n // cols) for _, n in p.chunks)
    eb = p.eb
    rate = cfg.matrix.fp32_rate if eb == 4 else cfg.matrix.fp16_rate
    mat = folds * (2 * rows + cols + p.M - 2) / rate
    if len(p.chunks) > 1:
        mat += p.K * p.OCg * eb / cfg.local_memory.bytes_per_cycle
    bpc, setup, lat = cfg.dma.bytes_per_cycle, cfg.dma.setup_cycles, cfg.dram.latency_cycles
    dims = sorted([p.OW, p.R, p.C, p.KH])
    nr = min(p.bandH, p.H)
    local = (p.M * p.K * eb + p.M * p.OCg * 4) / bpc + (dims[0] * dims[1] + 1) * setup
    io = (p.C * nr * p.W * eb + p.OCg * p.M * 4) / bpc + 2 * (setup + lat)
    eng = max(local, io) if cfg.dma.engines_per_pe >= 2 else local + io
    wbytes = p.K * p.OCg * eb
    pe_time = 2 * wbytes / bpc + lat + per_pe * max(eng, mat) + min(eng, mat)
    if p.pw == 0:
        band = p.C * _run_cycles(nr * p.W * eb, cfg)
    else:
        band = p.C * nr * _run_cycles(p.W * eb, cfg)
    dram1 = active * _run_cycles(wbytes, cfg) + p.G * tiles * band
    phase2 = 0.0
    if p.direct:
        dram1 += p.G * tiles * _run_cycles(p.OCg * p.M * 4, cfg)
    else:
        if not p.scratch_shared:
            dram1 += p.G * tiles * _run_cycles(p.OCg * p.M * 4, cfg)
        runs = p.N * p.OC * p.TPI * _run_cycles(p.M * 4, cfg)
        phase2 = runs * (1 if p.scratch_shared else 2) + cfg.barrier_cycles + setup + lat
    return max(dram1, pe_time) + phase2


def make_plan(card, N, C, H, W, OC, KH, KW, sh, sw, ph, pw, bias, npe, G=None, R=None, eb=2):
    """Choose rows per tile R and output-channel groups G (a divisor of OC, at most npe) by estimate_cycles,
    among the plans that fit PE-local memory; G and R may be forced. eb: bytes per input element (2: fp16,
    4: fp32)."""
    cfg = card.config
    local = cfg.local_memory.bytes
    two = cfg.dma.engines_per_pe >= 2
    base = Plan(N, C, H, W, OC, KH, KW, sh, sw, ph, pw, bias, 1, 1, npe, two, eb=eb)
    if base.K * eb > WEIGHT_BUFFER:
        raise InvalidArgument(f"conv2d: C*KH*KW = {base.K} weights per output channel ({base.K * eb} bytes of "
                              f"{'fp32' if eb == 4 else 'fp16'}) "
                              f"exceed the matrix unit's {WEIGHT_BUFFER}-byte weight buffer")
    free_shared = cfg.shared_sram.bytes - sum(card.shared_allocations.values())
    groups = [G] if G else [g for g in range(1, min(OC, npe) + 1) if OC % g == 0]
    best = None
    for g in groups:
        pg = replace(base, G=g)
        r_mem = _largest_r(pg, local)
        for r in ([R] if R else range(1, r_mem + 1)):
            if r > r_mem or r > pg.OH:
                continue
            cand = replace(pg, R=r)
            if not cand.direct:
                cand = replace(cand, scratch_shared=-(-cand.scratch_bytes // 65536) * 65536 <= free_shared)
            cost = estimate_cycles(cand, cfg)
            if best is None or cost < best[0] - 1e-9:
                best = (cost, cand)
    if best is None:
        g = max(groups)
        need = layout(replace(base, G=g), 1)["END"]
        raise InvalidArgument(f"conv2d: too large for PE-local memory: weights [{base.K}, {OC // g}] and one output "
                              f"row need {need} bytes, a PE has {local}")
    return best[1]


# --- kernel --------------------------------------------------------------------------------------------------
def copy3(k, engine, dst, src, row_bytes, sem, rows=None, src_stride=0, dst_stride=0, planes=None, src_plane=0,
          dst_plane=0):
    """k.copy with at most three constant registers live at a time."""
    def stage(dim, n, ss, ds):
        regs = [v if not isinstance(v, int) else k.const(k.reg("d"), v) for v in (n, ss, ds)]
        k.dma_dim(engine, dim, *regs)
        k.release(*[r for r, v in zip(regs, (n, ss, ds)) if isinstance(v, int)])
    if rows is not None:
        stage("d1", rows, src_stride, dst_stride)
    if planes is not None:
        stage("d2", planes, src_plane, dst_plane)
    nb = k.const(k.reg("nb"), row_bytes) if isinstance(row_bytes, int) else row_bytes
    k.dma(engine, dst, src, nb, sem)
    if isinstance(row_bytes, int):
        k.release(nb)


def build_kernel(p: Plan, text=False):
    """The module image (or its assembly text) with kernel `conv2d(x, w, [bias,] out, [scratch,] batch)`."""
    L = p.layout()
    K, OC, OCg, M, OW, R = p.K, p.OC, p.OCg, p.M, p.OW, p.R
    IO, LOC = "e0", ("e1" if p.two_engines else "e0")
    chunks = p.chunks
    nmat = 2 * len(chunks) if len(chunks) > 1 else 1        # matrix-unit operations per tile
    eb, dt = p.eb, p.dt                                     # the input element: its bytes and matrix dtype
    args = {"x": ("buffer", dt), "w": ("buffer", dt)}
    if p.bias:
        args["bias"] = ("buffer", "f32")
    args["out"] = ("buffer", "f32")
    if not p.direct:
        args["scratch"] = ("buffer", "f32")
    args["batch"] = ("scalar", "i32")
    kb = KernelBuilder()
    with kb.kernel("conv2d", **args) as k:
        a = k.args
        ntiles = a.batch          # batch * TPI tiles, computed in place (batch is not needed otherwise)
        obase = a.w               # after the weights are loaded: where my channels of tile 0 are stored
        step, t, t2, kc, par = k.regs("step", "t", "t2", "kc", "par")
        tmp, tmp2, oc0 = k.regs("tmp", "tmp2", "oc0")
        # --- my group g = pe % G (channels oc0 .. oc0 + OCg), my place q = pe / G in it, its size -------
        k.csrr(tmp, "pe_id")
        k.csrr(step, "pe_count")
        k.const(tmp2, p.G)
        k.div(t, tmp, tmp2)                          # q: my first tile
        k.mul(oc0, t, tmp2)
        k.sub(oc0, tmp, oc0)                         # g
        k.sub(step, step, oc0)
        k.addi(step, step, p.G - 1)
        k.div(step, step, tmp2)                      # PEs in my group: my tile step
        mulc(k, oc0, oc0, OCg)
        mulc(k, ntiles, ntiles, p.TPI)
        phase1_end = k.label("p1end")
        k.bge(t, ntiles, phase1_end)                 # no tile for this PE: no weights either
        # --- weights of my channels: [OCg, K] -> [K, OCg] per chunk, in local memory ------------------
        k.const(tmp, L["WORK"])
        mulc(k, tmp2, oc0, K * eb)
        k.add(tmp2, tmp2, a.w)
        k.const(par, OCg * K * eb)
        k.dma(IO, tmp, tmp2, par, SEM_LOAD)
        k.wait(SEM_LOAD, 1)
        for o0, n in chunks:
            k.const(tmp, L["WM"] + o0 * K * eb)
            k.const(tmp2, L["WORK"] + o0 * K * eb)
            copy3(k, LOC, tmp, tmp2, eb, SEM_LOC, rows=n, src_stride=K * eb, dst_stride=eb, planes=K, src_plane=eb,
                  dst_plane=n * eb)
            k.wait(SEM_LOC, 1)
        if p.bias:
            k.const(tmp, L["BIAS"])
            mulc(k, tmp2, oc0, 4)
            k.add(tmp2, tmp2, a.bias)
            k.const(par, OCg * 4)
            k.dma(IO, tmp, tmp2, par, SEM_LOAD)
            k.wait(SEM_LOAD, 1)
        if p.ph or p.pw:                 # zero both staging bands (the raw weights were there)
            k.const(tmp2, L["STG_BYTES"] // 4)
            for name in ("STG0", "STG1"):
                k.const(tmp, L[name])
                k.vsub(tmp, tmp, tmp, tmp2, "i32", SEM_VEC)
            k.wait(SEM_VEC, 2)
        if len(chunks) == 1:
            k.const(tmp, L["WM"])
            k.const(tmp2, K)
            k.const(par, OCg)
            k.mm_ldw(tmp, tmp2, par, dt, SEM_MAT)
            k.wait(SEM_MAT, 1)
        mulc(k, obase, oc0, M * 4)
        k.add(obase, obase, a.out if p.direct else a.scratch)
        k.release(tmp, tmp2, oc0)

        # --- phase 1: tiles of R output rows, software-pipelined ----------------------------------------
        def buf(reg, name, nxt=False):
            """reg = address of buffer `name` (0/1 pair): the current one (par) or the next one (1 - par)."""
            b0, b1 = L[name + "0"], L[name + "1"]
            mulc(k, reg, par, (b0 - b1) if nxt else (b1 - b0))
            addc(k, reg, reg, b1 if nxt else b0)

        def band(tile, nxt):
            """Load the input rows of `tile` into a staging band (one DMA on SEM_LOAD)."""
            n, oh, lo, hi, src = k.regs("n", "oh", "lo", "hi", "src")
            tp = k.const(k.reg("tpi"), p.TPI)
            k.div(n, tile, tp)
            k.mul(oh, n, tp)
            k.sub(oh, tile, oh)                     # tile row index within the image
            mulc(k, oh, oh, R * p.sh)
            addc(k, oh, oh, -p.ph)                  # first input row of the band (may be < 0)
            k.max(lo, oh, k.zero)
            addc(k, hi, oh, p.bandH)
            k.const(tp, p.H)
            k.min(hi, hi, tp)
            k.sub(hi, hi, lo)
            k.max(hi, hi, k.zero)                   # rows to copy
            k.sub(oh, lo, oh)                       # first band row they go to
            stg = k.reg("stg")
            buf(stg, "STG", nxt)
            if p.ph:                                # a band clipped at the top or bottom: zero it first
                dozero, skip = k.label("zero"), k.label("nozero")
                k.bne(oh, k.zero, dozero)
                k.const(tp, p.bandH)
                k.beq(hi, tp, skip)
                k.place(dozero)
                k.const(tp, L["STG_BYTES"] // 4)
                k.vsub(stg, stg, stg, tp, "i32", SEM_VEC)
                k.wait(SEM_VEC, 1)
                k.place(skip)
            # src = x + ((n*C*H) + lo) * W * eb
            mulc(k, src, n, p.C * p.H)
            k.add(src, src, lo)
            mulc(k, src, src, p.W * eb)
            k.add(src, src, a.x)
            # dst = stg + (band_row * Wp + pw) * eb
            mulc(k, oh, oh, p.Wp * eb)
            addc(k, oh, oh, p.pw * eb)
            k.add(oh, oh, stg)
            k.release(n, lo, tp, stg)
            if p.pw == 0:                          # rows are contiguous on both sides: one run per channel
                mulc(k, hi, hi, p.W * eb)
                copy3(k, IO, oh, src, hi, SEM_LOAD, rows=p.C, src_stride=p.H * p.W * eb,
                      dst_stride=p.bandH * p.W * eb)
            else:
                copy3(k, IO, oh, src, p.W * eb, SEM_LOAD, rows=hi, src_stride=p.W * eb, dst_stride=p.Wp * eb,
                      planes=p.C, src_plane=p.H * p.W * eb, dst_plane=p.bandH * p.Wp * eb)
            k.release(oh, hi, src)

        def im2col_and_matmul(nxt):
            """A = im2col(staging band), then the matmul A x weights -> RES (both of buffer `nxt`)."""
            # A[(r, ow), (c, kh, kw)] = band[c, r*sh + kh, ow*sw + kw]: KW values per DMA row; the two
            # largest of (OW, R, C, KH) are the DMA's dimensions, the other two are loops
            dims = [(OW, p.sw * eb, K * eb), (R, p.sh * p.Wp * eb, OW * K * eb),
                    (p.C, p.bandH * p.Wp * eb, p.KH * p.KW * eb), (p.KH, p.Wp * eb, p.KW * eb)]
            dims.sort(key=lambda d: -d[0])
            (n1, s1, d1), (n2, s2, d2), outer, inner = dims
            src, dst = k.regs("src", "dst")
            win = Window(k, SEM_LOC)
            buf(src, "STG", nxt)
            buf(dst, "A", nxt)
            loops = [d for d in (outer, inner) if d[0] > 1]

            def body(level):
                if level == len(loops):
                    copy3(k, LOC, dst, src, p.KW * eb, SEM_LOC, rows=n1, src_stride=s1, dst_stride=d1, planes=n2,
                          src_plane=s2, dst_plane=d2)
                    win.issued()
                    return
                cnt, ss, ds = loops[level]
                i = k.reg("i")
                with k.for_range(i, 0, cnt):
                    body(level + 1)
                    addc(k, src, src, ss)
                    addc(k, dst, dst, ds)
                addc(k, src, src, -cnt * ss)         # back to where this loop started
                addc(k, dst, dst, -cnt * ds)
                k.release(i)

            body(0)
            win.drain()
            # [M, K] x [K, OCg] -> RES [M, OCg] (per chunk: [M, n] at RES + o0*M*4)
            rm = k.const(k.reg("M"), M)
            buf(src, "A", nxt)
            if len(chunks) == 1:
                buf(dst, "RES", nxt)
                k.mm_mul(dst, src, rm, dt, "set", SEM_MAT)
            else:
                rk, rn, res = k.regs("K", "n", "res")
                k.const(rk, K)
                buf(res, "RES", nxt)
                for o0, n in chunks:
                    k.const(dst, L["WM"] + o0 * K * eb)
                    k.const(rn, n)
                    k.mm_ldw(dst, rk, rn, dt, SEM_MAT)
                    addc(k, dst, res, o0 * M * 4)
                    k.mm_mul(dst, src, rm, dt, "set", SEM_MAT)
                k.release(rk, rn, res)
            k.release(src, dst, rm)

        # prologue: tile t's band, A and matmul (buffers 0); the next tile's band loads into buffers 1
        k.li(par, 0)
        band(t, False)
        k.wait(SEM_LOAD, 1)
        im2col_and_matmul(False)
        k.add(t2, t, step)
        with k.if_("lt", t2, ntiles):
            band(t2, True)
        k.li(kc, 0)
        top = k.label("tile")
        k.place(top)
        # the next tile: im2col and matmul (DMA engine and matrix unit overlap the current tile's matmul)
        with k.if_("lt", t2, ntiles):
            k.wait(SEM_LOAD, 1)
            im2col_and_matmul(True)
            t3 = k.reg("t3")
            k.add(t3, t2, step)
            with k.if_("lt", t3, ntiles):
                band(t3, False)                      # the current band was consumed by the current im2col
            k.release(t3)
        k.comment("wait: the current tile's matmul")
        k.wait(SEM_MAT, nmat)                        # the oldest on the matrix unit
        # the output buffer of two tiles ago must be stored before it is rewritten
        src, dst = k.regs("src", "dst")
        k.li(src, 2)
        with k.if_("ge", kc, src):
            k.wait(SEM_STORE, 1)
        # RES [M, OCg] -> OUT [OCg, M] (4-byte rows)
        res, out = k.regs("res", "out")
        buf(res, "RES")
        buf(out, "OUT")
        for o0, n in chunks:
            addc(k, src, res, o0 * M * 4)
            addc(k, dst, out, o0 * M * 4)
            copy3(k, LOC, dst, src, 4, SEM_LOC, rows=n, src_stride=4, dst_stride=M * 4, planes=M, src_plane=n * 4,
                  dst_plane=4)
        k.wait(SEM_LOC, len(chunks))
        k.release(res)
        # bias: out[oc, :] += bias[oc]
        if p.bias:
            i, rm = k.regs("i", "M")
            k.const(rm, M)
            win = Window(k, SEM_VEC)
            k.mov(dst, out)
            k.const(src, L["BIAS"])
            with k.for_range(i, 0, OCg):
                k.vadds(dst, dst, src, rm, "f32", SEM_VEC)
                win.issued()
                addc(k, dst, dst, M * 4)
                k.addi(src, src, 4)
            win.drain()
            k.release(i, rm)
        # store my channels of the tile as one contiguous block: out[n] (a tile is an image, M = OH*OW) or
        # scratch[tile] ([OC, M] per tile), at channel oc0
        mulc(k, dst, t, OC * M * 4)
        k.add(dst, dst, obase)
        k.const(src, OCg * M * 4)
        k.dma(IO, dst, out, src, SEM_STORE)
        k.release(src, dst, out)
        k.xori(par, par, 1)
        k.mov(t, t2)
        k.add(t2, t2, step)
        k.addi(kc, kc, 1)
        k.blt(t, ntiles, top)
        k.place(phase1_end)
        k.fence()
        # --- phase 2: scratch [n, tile, OC, M] -> out [n, OC, OH*OW], one channel block per unit -------------
        if not p.direct:
            k.barrier()
            B2 = p.phase2_block
            nblk = -(-OC // B2)
            nfull, rem = p.OH // R, p.OH - (p.OH // R) * R
            NPOS = p.OH * OW
            u, units, n, c, occ, src, dst = k.regs("u", "units", "n", "c", "occ", "src", "dst")
            tb = k.const(k.reg("tpi"), p.TPI)
            k.div(units, ntiles, tb)                   # batch
            mulc(k, units, units, nblk)
            k.csrr(u, "pe_id")
            k.csrr(step, "pe_count")
            done = k.label("p2end")
            k.bge(u, units, done)
            loop = k.label("unit")
            k.place(loop)
            k.const(tb, nblk)
            k.div(n, u, tb)
            k.mul(c, n, tb)
            k.sub(c, u, c)
            mulc(k, c, c, B2)                        # first channel of the block
            k.const(tb, OC)
            k.sub(occ, tb, c)
            k.const(tb, B2)
            k.min(occ, occ, tb)
            mulc(k, src, n, p.TPI * OC)
            k.add(src, src, c)
            mulc(k, src, src, M * 4)
            k.add(src, src, a.scratch)
            mulc(k, dst, n, OC)
            k.add(dst, dst, c)
            mulc(k, dst, dst, NPOS * 4)
            k.add(dst, dst, a.out)
            if nfull:
                copy3(k, IO, dst, src, M * 4, SEM_LOAD, rows=nfull, src_stride=OC * M * 4, dst_stride=M * 4,
                      planes=occ, src_plane=M * 4, dst_plane=NPOS * 4)
            if rem:
                addc(k, src, src, nfull * OC * M * 4)
                addc(k, dst, dst, nfull * M * 4)
                copy3(k, IO, dst, src, rem * OW * 4, SEM_LOAD, rows=occ, src_stride=M * 4, dst_stride=NPOS * 4)
            k.wait(SEM_LOAD, int(bool(nfull)) + int(bool(rem)))
            k.add(u, u, step)
            k.blt(u, units, loop)
            k.place(done)
    return kb.text() if text else kb.build()


# --- host side -------------------------------------------------------------------------------------------------
def _pair(v, name, minimum):
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = (int(v), int(v))
    elif isinstance(v, (tuple, list)) and len(v) == 2 and all(
            isinstance(e, (int, np.integer)) and not isinstance(e, bool) for e in v):
        v = (int(v[0]), int(v[1]))
    else:
        raise InvalidArgument(f"conv2d: {name} must be an integer or a pair of integers, got {v!r}")
    if min(v) < minimum:
        raise InvalidArgument(f"conv2d: {name} must be at least {minimum}, got {v}")
    return v


def _check(x, w, bias, stride, padding):
    for name, arr, nd, shape in (("x", x, 4, "[N, C, H, W]"), ("w", w, 4, "[OC, C, KH, KW]")):
        if not isinstance(arr, np.ndarray):
            raise InvalidArgument(f"conv2d: {name} must be a numpy array, got {type(arr).__name__}")
        if arr.ndim != nd:
            raise InvalidArgument(f"conv2d: {name} must be {nd}-D {shape}, got shape {arr.shape}")
        if arr.dtype not in (np.float16, np.float32):
            raise InvalidArgument(f"conv2d: {name} must be float16 or float32, got {arr.dtype}")
    N, C, H, W = x.shape
    OC, Cw, KH, KW = w.shape
    if min(H, W, KH, KW) < 1:
        raise InvalidArgument(f"conv2d: height, width and kernel size must be at least 1, got x {x.shape}, "
                              f"w {w.shape}")
    if Cw != C:
        extra = " (groups > 1 is not supported)" if C % Cw == 0 else ""
        raise InvalidArgument(f"conv2d: w has {Cw} input channels, x has {C}{extra}")
    if bias is not None:
        if not isinstance(bias, np.ndarray) or bias.ndim != 1 or bias.shape[0] != OC:
            raise InvalidArgument(f"conv2d: bias must be a 1-D array of {OC} values (one per output channel), got "
                                  f"{getattr(bias, 'shape', type(bias).__name__)}")
        if bias.dtype not in (np.float16, np.float32):
            raise InvalidArgument(f"conv2d: bias must be float32 or float16, got {bias.dtype}")
    sh, sw = _pair(stride, "stride", 1)
    ph, pw = _pair(padding, "padding", 0)
    if H + 2 * ph < KH or W + 2 * pw < KW:
        raise InvalidArgument(f"conv2d: kernel {KH}x{KW} is larger than the padded input "
                              f"{H + 2 * ph}x{W + 2 * pw}")
    if N >= 1 << 31:
        raise InvalidArgument(f"conv2d: batch {N} does not fit a 32-bit argument")
    return (N, C, H, W, OC, KH, KW, sh, sw, ph, pw)


def _elem_bytes(x, w):
    """Bytes per element the matrix unit computes in: 4 (fp32) when x or w is float32 (a float16 operand is
    widened exactly), else 2 (fp16)."""
    return 4 if np.float32 in (np.asarray(x).dtype, np.asarray(w).dtype) else 2


def conv2d(card, x, w, bias=None, stride=1, padding=0, pes=None):
    """2-D convolution, NCHW, groups = 1: x [N, C, H, W], w [OC, C, KH, KW] (both float16: computed in fp16;
    float32 (either): computed in fp32, a float16 operand widened exactly), optional bias [OC] (float32 or
    float16); stride and padding are ints or (h, w) pairs, zero padding. Returns (out [N, OC, OH, OW]
    float32, LaunchResult)."""
    return launch(card, x, w, bias, stride, padding, pes)


def launch(card, x, w, bias=None, stride=1, padding=0, pes=None, G=None, R=None):
    """conv2d with the plan chosen by the cost estimate, or with output-channel groups G and rows per tile
    R forced (tests)."""
    N, C, H, W, OC, KH, KW, sh, sw, ph, pw = _check(x, w, bias, stride, padding)
    eb = _elem_bytes(x, w)
    ndt = np.float32 if eb == 4 else np.float16
    if N == 0 or OC == 0:       # an empty result: nothing to compute
        OH, OW = (H + 2 * ph - KH) // sh + 1, (W + 2 * pw - KW) // sw + 1
        return np.zeros((N, OC, OH, OW), np.float32), nothing(card, "conv2d", pes)
    if C == 0:                  # an empty sum over (c, kh, kw): each output is its bias; one zero channel
        x = np.zeros((N, 1, H, W), ndt)
        w = np.zeros((OC, 1, KH, KW), ndt)
        C = 1
    npe = len(set(pes)) if pes is not None else card.config.pes
    if G is not None and (G < 1 or OC % G or G > max(1, npe)):
        raise InvalidArgument(f"conv2d: G = {G} must divide OC = {OC} and be at most the {npe} PEs")
    p = make_plan(card, N, C, H, W, OC, KH, KW, sh, sw, ph, pw, bias is not None, max(1, npe), G=G, R=R,
                  eb=eb)
    args = [np.ascontiguousarray(x, dtype=ndt), np.ascontiguousarray(w, dtype=ndt)]
    if bias is not None:
        args.append(np.ascontiguousarray(bias, dtype=np.float32))
    args.append(Out((N, OC, p.OH, p.OW), np.float32))
    if not p.direct:
        args.append(Scratch(p.scratch_bytes, "shared" if p.scratch_shared else "dram"))
    args.append(N)
    (out,), result = run(card, ("conv2d", p, WEIGHT_BUFFER), lambda: build_kernel(p), "conv2d", args, pes=pes)
    result.plan = p
    return out, result


# --- numpy reference ----------------------------------------------------------------------------------------------
def reference_conv2d(x, w, bias=None, stride=1, padding=0, exact=True):
    """exact=True: the card's arithmetic bit for bit. fp16 x and w: fp32 products and sums in (c, kh, kw)
    order, + bias in fp32. fp32 x or w (the other widened exactly): products exact in float64, summed in
    float64 in (c, kh, kw) order, rounded once to fp32 (a NaN as the canonical quiet NaN), + bias in fp32.
    exact=False: float64 math on the same input values."""
    sh, sw = _pair(stride, "stride", 1)
    ph, pw = _pair(padding, "padding", 0)
    f32 = _elem_bytes(x, w) == 4
    work = np.float64 if f32 else np.float32
    x = np.asarray(x).astype(work)
    w = np.asarray(w).astype(work)
    N, C, H, W = x.shape
    OC, _, KH, KW = w.shape
    OH, OW = (H + 2 * ph - KH) // sh + 1, (W + 2 * pw - KW) // sw + 1
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((N, OH, OW, C, KH, KW), work)
    for kh in range(KH):
        for kw in range(KW):
            v = xp[:, :, kh:kh + sh * (OH - 1) + 1:sh, kw:kw + sw * (OW - 1) + 1:sw]
            cols[..., kh, kw] = v.transpose(0, 2, 3, 1)
    A = cols.reshape(N, OH * OW, C * KH * KW)
    Wm = w.reshape(OC, -1).T
    with np.errstate(invalid="ignore", over="ignore"):
        if exact:
            acc = np.zeros((N, OH * OW, OC), work)
            for kk in range(A.shape[2]):
                acc += A[:, :, kk, None] * Wm[kk]
            if f32:
                acc = acc.astype(np.float32)
                acc.view(np.uint32)[np.isnan(acc)] = 0x7FC00000     # the matrix unit's canonical NaN
            if bias is not None:
                acc += np.asarray(bias).astype(np.float32)
        else:
            acc = A.astype(np.float64) @ Wm.astype(np.float64)
            if bias is not None:
                acc += np.asarray(bias).astype(np.float64)
        return np.ascontiguousarray(acc.transpose(0, 2, 1).reshape(N, OC, OH, OW).astype(np.float32))


def error_bound(x, w, bias=None, stride=1, padding=0):
    """Per-element bound of |card - reference_conv2d(exact=False)| (see the module doc)."""
    f32 = _elem_bytes(x, w) == 4
    xa, wa = np.abs(np.asarray(x)), np.abs(np.asarray(w))
    if f32:
        xa, wa = xa.astype(np.float32), wa.astype(np.float32)
    mag = reference_conv2d(xa, wa, None if bias is None else np.abs(bias), stride, padding,
                           exact=False).astype(np.float64)
    K = w.shape[1] * w.shape[2] * w.shape[3]
    if f32:     # two fp32 roundings (the sum, + bias), the fp64 sums, and fp32's subnormal spacing
        return (2 * 2.0 ** -24 + K * 2.0 ** -53) * mag * (1 + 2.0 ** -8) + 2.0 ** -148
    return (K + 1) * 2.0 ** -24 * mag * (1 + 2.0 ** -8)


def max_tile_rows(card, C, H, W, OC, KH, KW, stride=1, padding=0, bias=True, groups=1, dtype=np.float16):
    """The most output rows one tile can have on `card` for this layer (PE-local memory bound; 0: none fits).
    groups: output-channel groups of PEs (each PE holds OC / groups channels of weights); dtype: the inputs'
    (float16 or float32)."""
    sh, sw = _pair(stride, "stride", 1)
    ph, pw = _pair(padding, "padding", 0)
    p = Plan(1, C, H, W, OC, KH, KW, sh, sw, ph, pw, bool(bias), 1, groups, 1, card.config.dma.engines_per_pe >= 2,
             eb=np.dtype(dtype).itemsize)
    return _largest_r(p, card.config.local_memory.bytes)


# --- registry ------------------------------------------------------------------------------------------------------
def _make_inputs(rng, p):
    out = {"x": rng.standard_normal((p["n"], p["c"], p["h"], p["w"])).astype(np.float16),
           "w": (rng.standard_normal((p["oc"], p["c"], p["kh"], p["kw"])) /
                 math.sqrt(p["c"] * p["kh"] * p["kw"])).astype(np.float16)}
    if p["bias"]:
        out["bias"] = rng.standard_normal(p["oc"]).astype(np.float32)
    return out


def _ops(p):
    oh = (p["h"] + 2 * p["padding"] - p["kh"]) // p["stride"] + 1
    ow = (p["w"] + 2 * p["padding"] - p["kw"]) // p["stride"] + 1
    return 2 * p["n"] * p["oc"] * oh * ow * p["c"] * p["kh"] * p["kw"]


def _run(card, inp, p, pes=None):
    out, res = conv2d(card, inp["x"], inp["w"], inp.get("bias"), p["stride"], p["padding"], pes=pes)
    return [out], res


OPS = [OpSpec(
    name="conv2d",
    params={"n": 1, "c": 16, "h": 28, "w": 28, "oc": 32, "kh": 3, "kw": 3, "stride": 1, "padding": 1, "bias": 1},
    make_inputs=_make_inputs,
    run=_run,
    reference=lambda inp, p: [reference_conv2d(inp["x"], inp["w"], inp.get("bias"), p["stride"], p["padding"])],
    # the reference is the card's arithmetic (here fp16 inputs, fp32 sums in (c, kh, kw) order): bit for bit
    tolerance=lambda p: (0.0, 0.0),
    ops_per_call=_ops,
    doc="conv2d NCHW (groups=1), fp16 x and w, fp32 output: im2col by DMA, matmul on the matrix unit",
    choices={"bias": [0, 1]},
)]
