"""Energy, power and area of a card (issue 18): joules from the action counts a launch already keeps, watts
over the launch's time, mm^2 from the config. Parameters: the card YAML's `power:` and `area:` sections,
each with its source; the model, its calibration and what it leaves out: docs/power.md.

Energy of a launch = the sum over the card's units of
  dynamic  actions x energy per action (MACs, lane-ops, instructions, bytes, rows) + busy cycles x energy
           per busy cycle
  idle     idle cycles x energy per idle cycle (the clock of a gated unit)
  static   static power x the launch's time (leakage, DRAM background, the uncore)
The whole card is counted while a launch runs: PEs outside the launch's set are idle, not off.

Dynamic and idle energies scale as (V / reference_volts)^2 and static power as (V / reference_volts)^static_exponent
at the operating point (clock, volts); DRAM and PCIe energies do not (their own rails). The emulator counts
MACs and vector elements but not their element type: the caller names it (`mac_dtype`, `vector_dtype`;
`vnpu op` passes the op's dtype), by default int8 MACs and fp32 lanes.

Pure Python, no Numba: importing it never recompiles the core.
"""
from __future__ import annotations

UNITS = ("matrix", "vector", "scalar", "dma", "local_memory", "shared_sram", "dram", "embedding", "uncore")
MAC_DTYPES = {"int8": "int8", "i8": "int8", "fp16": "fp16", "f16": "fp16", "fp32": "fp32", "f32": "fp32"}
LANE_DTYPES = {"int8": "i8", "i8": "i8", "fp16": "f16", "f16": "f16", "int32": "i32", "i32": "i32",
               "fp32": "f32", "f32": "f32"}
MIB = float(1 << 20)
PJ = 1e-12


def _config(cfg):
    from .config import load_config
    return load_config(cfg)


def operating_point(cfg, clock_ghz=None) -> dict:
    """The volts at `clock_ghz` (default: the card's clock), linear between the YAML's operating points;
    outside their range the nearest point's volts are held and `extrapolated` is True."""
    cfg = _config(cfg)
    f = float(cfg.clock_ghz if clock_ghz is None else clock_ghz)
    if not f > 0:
        from vnpu.errors import InvalidArgument
        raise InvalidArgument(f"clock_ghz must be positive, got {clock_ghz!r}")
    pts = cfg.power.operating_points
    if f <= pts[0][0] or f >= pts[-1][0]:
        p = pts[0] if f <= pts[0][0] else pts[-1]
        return {"clock_ghz": f, "volts": p[1], "extrapolated": f != p[0]}
    for (f0, v0), (f1, v1) in zip(pts, pts[1:]):
        if f == f0:
            return {"clock_ghz": f, "volts": v0, "extrapolated": False}
        if f0 < f < f1:
            return {"clock_ghz": f, "volts": v0 + (v1 - v0) * (f - f0) / (f1 - f0), "extrapolated": False}


def counts(result) -> dict:
    """The actions a LaunchResult's statistics hold, summed over its PEs: what the energy model prices."""
    from .state import (P_DMA, P_INSTR, P_ISSUE, P_MACS, P_MATRIX, P_VECTOR, P_VOPS, S_DRAM_BUSY, S_DRAM_RD,
                        S_DRAM_WR, S_EMB_BUSY, S_EMB_ROWS, S_LOCAL_RD, S_LOCAL_WR, S_SRAM_RD, S_SRAM_WR)
    ps, cs = result.pe_stats, result.card_stats

    def col(c):
        return int(ps[:, c].sum()) if len(ps) else 0
    return {"macs": col(P_MACS), "matrix_busy": col(P_MATRIX), "vector_elements": col(P_VOPS),
            "vector_busy": col(P_VECTOR), "instructions": col(P_INSTR), "issue_cycles": col(P_ISSUE),
            "dma_busy": col(P_DMA), "local_read": int(cs[S_LOCAL_RD]), "local_write": int(cs[S_LOCAL_WR]),
            "sram_read": int(cs[S_SRAM_RD]), "sram_write": int(cs[S_SRAM_WR]), "dram_read": int(cs[S_DRAM_RD]),
            "dram_write": int(cs[S_DRAM_WR]), "dram_busy": int(cs[S_DRAM_BUSY]),
            "embedding_rows": int(cs[S_EMB_ROWS]), "embedding_busy": int(cs[S_EMB_BUSY])}


def _dtype(table, name, what):
    key = str(name).lower()
    if key not in table:
        from vnpu.errors import InvalidArgument
        raise InvalidArgument(f"{what} must be one of {', '.join(sorted(table))}, got {name!r}")
    return table[key]


def energy(cfg, c: dict, cycles: int, clock_ghz=None, mac_dtype="int8", vector_dtype="fp32") -> dict:
    """Energy of `cycles` card cycles in which the card did the actions `c` (keys as `counts` gives; missing
    ones are 0), at the operating point of `clock_ghz` (default: the card's clock)."""
    cfg = _config(cfg)
    p, pw = cfg, cfg.power
    mac_dt = _dtype(MAC_DTYPES, mac_dtype, "mac_dtype")
    lane_dt = _dtype(LANE_DTYPES, vector_dtype, "vector_dtype")
    op = operating_point(cfg, clock_ghz)
    f_hz = op["clock_ghz"] * 1e9
    dyn = (op["volts"] / pw.reference_volts) ** 2
    stat = (op["volts"] / pw.reference_volts) ** pw.static_exponent
    cycles = max(0, int(cycles))
    seconds = cycles / f_hz
    g = {k: max(0, int(v)) for k, v in c.items()}.get
    pes, engines = p.pes, p.pes * p.dma.engines_per_pe
    cells = p.matrix.rows * p.matrix.cols * p.matrix.depth
    vw = p.vector.width_bits / 512.0

    def idle(busy, units):
        return max(0, cycles * units - busy)

    m, v, s, d = pw.matrix, pw.vector, pw.scalar, pw.dma
    # unit -> (dynamic pJ, idle pJ, static W); dynamic and idle scale with V^2, static with V^k
    parts = {
        "matrix": (g("macs", 0) * getattr(m, f"mac_{mac_dt}_pj") + g("matrix_busy", 0) * cells * m.cell_active_pj,
                   idle(g("matrix_busy", 0), pes) * cells * m.cell_idle_pj, m.cell_static_uw * 1e-6 * cells * pes),
        "vector": (g("vector_elements", 0) * getattr(v, f"lane_{lane_dt}_pj") + g("vector_busy", 0) * vw * v.active_cycle_pj,
                   idle(g("vector_busy", 0), pes) * vw * v.idle_cycle_pj, v.static_w * vw * pes),
        "scalar": (g("instructions", 0) * s.instruction_pj, idle(g("issue_cycles", 0), pes) * s.idle_cycle_pj,
                   s.static_w * pes),
        # every byte a DMA engine moves is written once at its destination level (plus the embedding unit's
        # small pooled output): the engine's own energy is priced on the bytes written
        "dma": ((g("local_write", 0) + g("sram_write", 0) + g("dram_write", 0)) * d.byte_pj,
                idle(g("dma_busy", 0), engines) * d.idle_cycle_pj, d.static_w * engines),
        "local_memory": (g("local_read", 0) * pw.local_memory.read_byte_pj
                         + g("local_write", 0) * pw.local_memory.write_byte_pj, 0.0,
                         pw.local_memory.static_w_per_mib * p.local_memory.bytes * pes / MIB),
        "shared_sram": (g("sram_read", 0) * pw.shared_sram.read_byte_pj + g("sram_write", 0) * pw.shared_sram.write_byte_pj,
                        0.0, pw.shared_sram.static_w_per_mib * p.shared_sram.bytes / MIB),
        "embedding": (g("embedding_rows", 0) * pw.embedding.row_pj + g("embedding_busy", 0) * pw.embedding.active_cycle_pj,
                      idle(g("embedding_busy", 0), 1) * pw.embedding.idle_cycle_pj, pw.embedding.static_w),
        "uncore": (0.0, 0.0, pw.uncore.static_w),
    }
    units = {}
    for name, (dyn_pj, idle_pj, static_w) in parts.items():
        units[name] = _unit(dyn_pj * PJ * dyn, idle_pj * PJ * dyn, static_w * stat * seconds)
    # DRAM: its own rail, not scaled by the core's voltage; the channel's active power over its booked cycles
    dram_bytes = g("dram_read", 0) + g("dram_write", 0)
    units["dram"] = _unit(dram_bytes * 8 * pw.dram.pj_per_bit * PJ + pw.dram.active_w * g("dram_busy", 0) / f_hz,
                          0.0, pw.dram.background_w * seconds)
    units = {u: units[u] for u in UNITS}
    total = sum(u["total_j"] for u in units.values())
    ops = 2 * g("macs", 0)
    return {"total_j": total, "seconds": seconds, "average_w": total / seconds if seconds else 0.0,
            "dynamic_j": sum(u["dynamic_j"] for u in units.values()),
            "idle_j": sum(u["idle_j"] for u in units.values()),
            "static_j": sum(u["static_j"] for u in units.values()),
            "ops": ops, "tops_per_w": ops / total / 1e12 if ops and total else None,
            "clock_ghz": op["clock_ghz"], "volts": op["volts"], "voltage_extrapolated": op["extrapolated"],
            "mac_dtype": mac_dt, "vector_dtype": LANE_NAMES[lane_dt], "units": units}


LANE_NAMES = {"i8": "int8", "f16": "fp16", "i32": "int32", "f32": "fp32"}


def _unit(dynamic, idle, static):
    return {"dynamic_j": dynamic, "idle_j": idle, "static_j": static, "total_j": dynamic + idle + static}


def launch_energy(result, mac_dtype="int8", vector_dtype="fp32", clock_ghz=None) -> dict:
    """The energy of one LaunchResult (or a chained one): total and per-unit joules, average watts over the
    launch's time, TOPS/W (2 ops a MAC) where it has MACs. clock_ghz: price the same cycles at another
    operating point (time = cycles / clock; a what-if: the cycles themselves were timed at the card's clock).
    For the model compiler's profile and `vnpu demo` to call on each launch they make."""
    return energy(result.config, counts(result), result.cycles,
                  result.clock_ghz if clock_ghz is None else clock_ghz, mac_dtype, vector_dtype)


def _steady(cfg, clock_ghz, busy_matrix, dtype="int8"):
    cfg = _config(cfg)
    cycles = 1_000_000
    c = {}
    if busy_matrix:
        m = cfg.matrix
        rate = {"int8": m.int8_rate, "fp16": m.fp16_rate, "fp32": m.fp32_rate}[_dtype(MAC_DTYPES, dtype, "dtype")]
        c = {"matrix_busy": cycles * cfg.pes,
             "macs": int(m.rows * m.cols * m.depth * rate * cfg.pes * cycles)}
    return energy(cfg, c, cycles, clock_ghz, dtype)


def idle_power(cfg, clock_ghz=None) -> float:
    """Watts of a card doing nothing at the operating point: static power plus every unit's idle clock."""
    return _steady(cfg, clock_ghz, False)["average_w"]


def peak_power(cfg, clock_ghz=None, dtype="int8") -> dict:
    """The card with every PE's matrix unit busy at its peak MAC rate and nothing else running (the
    calibration regime): {"w", "tops", "tops_per_w"}."""
    e = _steady(cfg, clock_ghz, True, dtype)
    return {"w": e["average_w"], "tops": e["ops"] / e["seconds"] / 1e12, "tops_per_w": e["tops_per_w"]}


def power_envelope(cfg) -> dict:
    """What `vnpu info` shows: idle and int8-peak watts at the card's operating point, and the die area."""
    cfg = _config(cfg)
    op = operating_point(cfg)
    peak = peak_power(cfg)
    return {"clock_ghz": op["clock_ghz"], "volts": op["volts"], "idle_w": idle_power(cfg), "peak_w": peak["w"],
            "peak_tops_per_w": peak["tops_per_w"], "area_mm2": card_area(cfg)["total_mm2"]}


def pcie_energy(cfg, nbytes, gen=3) -> float:
    """Joules to move `nbytes` over a PCIe link of generation 3, 4 or 5 (both ends of the link)."""
    cfg = _config(cfg)
    gen = int(gen)
    if gen not in (3, 4, 5):
        from vnpu.errors import InvalidArgument
        raise InvalidArgument(f"PCIe generation must be 3, 4 or 5, got {gen}")
    return max(0, int(nbytes)) * 8 * getattr(cfg.power.pcie, f"gen{gen}_pj_per_bit") * PJ


def card_area(cfg) -> dict:
    """mm^2 of the card's die by unit, from the config: {"units": {...}, "total_mm2"}. A design-sweep estimate."""
    from .state import WEIGHT_BUFFER_BYTES
    cfg = _config(cfg)
    a, m = cfg.area, cfg.matrix
    pes = cfg.pes
    units = {
        "matrix": m.rows * m.cols * m.depth * pes * a.mac_um2 * 1e-6,
        "weight_buffer": WEIGHT_BUFFER_BYTES * pes / MIB * a.weight_buffer_mm2_per_mib,
        "local_memory": cfg.local_memory.bytes * pes / MIB * a.local_mm2_per_mib,
        "shared_sram": cfg.shared_sram.bytes / MIB * a.shared_mm2_per_mib,
        "vector": cfg.vector.width_bits / 512.0 * pes * a.vector_mm2_per_512b,
        "scalar": pes * a.scalar_mm2,
        "dma": pes * cfg.dma.engines_per_pe * a.dma_engine_mm2,
        "embedding": a.embedding_mm2,
        "dram_phy": cfg.dram.gbps * a.dram_phy_mm2_per_gbps,
        "pcie": a.pcie_mm2,
        "uncore": a.uncore_mm2,
    }
    return {"units": units, "total_mm2": sum(units.values())}


def format_energy(e: dict) -> str:
    """One line of a launch_energy() dict, plus where the joules went."""
    tpw = "" if e["tops_per_w"] is None else f", {e['tops_per_w']:.2f} TOPS/W"
    head = (f"energy {e['total_j'] * 1e6:.3f} uJ over {e['seconds'] * 1e6:.3f} us: {e['average_w']:.2f} W "
            f"average = peak (one launch, one power){tpw} ({e['mac_dtype']} MACs, {e['vector_dtype']} lanes; "
            f"{e['clock_ghz']:g} GHz at {e['volts']:.3f} V)")
    tot = e["total_j"] or 1.0
    parts = sorted(((u["total_j"], k) for k, u in e["units"].items() if u["total_j"] > 0), reverse=True)
    share = ", ".join(f"{k} {j / tot:.0%}" for j, k in parts[:6])
    return head + (f"\n  energy by unit: {share}" if share else "")


# The calibration kernel (docs/power.md 3): every PE loads a 128 x 32 int8 weight tile once, then multiplies
# `reps` times an m x 128 block by it back to back, keeping its matrix unit busy; args (reps, m). The peak the
# card's published 12 W is matched at (tests/emulator/test_power.py) and what the power cap is checked with.
CALIBRATION_KERNEL = """
.kernel peak
.arg reps, scalar, i32
.arg m, scalar, i32
    li r10, 0
    li r11, 524288
    li r12, 528384
    li r13, 128
    li r14, 32
    mm.ldw r11, r13, r14, i8, s0
    wait s0, 1
top:
    mm.mul r12, r10, m, i8, set, s0
    wait s0, 1
    loop reps, top
    halt
"""
