"""`vnpu plot RESULTS --x KEY --y KEY [--color KEY] [--kind line] [--logx] [--logy] [--pareto] -o FILE.png`: a
scatter or line plot of a sweep's results (vnpu sweep --out), its Pareto front highlighted; `vnpu plot
PROFILE.json --roofline -o FILE.png`: a roofline plot of a model profile's ops (vnpu profile MODEL --json)
(issue 19). matplotlib (Agg), from the sweep extra."""
from __future__ import annotations

from vnpu.cli import extra_command
from vnpu.errors import InvalidArgument

# column -> (label, unit, scale): the axis shows value x scale in unit
UNITS = {
    "cycles": ("cycles", "cycles", 1), "seconds": ("latency", "us", 1e6), "ops": ("ops", "ops", 1),
    "ops_per_s": ("throughput", "TOP/s", 1e-12), "macs": ("MACs", "MACs", 1),
    "dram_read_bytes": ("DRAM read", "KiB", 1 / 1024), "dram_write_bytes": ("DRAM write", "KiB", 1 / 1024),
    "dram_bytes": ("DRAM traffic", "KiB", 1 / 1024), "sram_bytes": ("shared-SRAM traffic", "KiB", 1 / 1024),
    "energy_j": ("energy", "uJ", 1e6), "power_w": ("average power", "W", 1), "tops_per_w": ("efficiency", "TOPS/W", 1),
    "area_mm2": ("area", "mm$^2$", 1), "wall_s": ("host time per point", "s", 1),
    "matrix.rows": ("matrix rows", "cells", 1), "matrix.cols": ("matrix cols", "cells", 1),
    "matrix.depth": ("matrix depth", "cells", 1), "dram.gbps": ("DRAM bandwidth", "GB/s", 1),
    "clock_ghz": ("clock", "GHz", 1), "pes": ("PEs", "PEs", 1), "local_memory.bytes": ("local memory", "MiB", 2 ** -20),
    "shared_sram.bytes": ("shared SRAM", "MiB", 2 ** -20), "dram.latency_cycles": ("DRAM latency", "cycles", 1),
    "vector.width_bits": ("vector width", "bits", 1),
    # model workloads
    "latency_p50_us": ("latency p50", "us", 1), "latency_p90_us": ("latency p90", "us", 1),
    "latency_p99_us": ("latency p99", "us", 1), "items_per_s": ("throughput", "items/s", 1),
    "items_per_j": ("throughput per watt", "items/J = items/s per W", 1), "makespan_us": ("makespan", "us", 1),
    "card_area_mm2": ("area per card", "mm$^2$", 1), "platform.cards": ("cards", "cards", 1),
    "batch": ("batch", None, 1), "inflight": ("requests in flight", None, 1), "requests": ("requests", None, 1),
    "cards": ("cards", "cards", 1), "card_energy_j": ("cards' energy", "uJ", 1e6),
    "pcie_energy_j": ("PCIe energy", "uJ", 1e6), "cpu_s": ("worker CPU time per point", "s", 1),
}
# columns where more is better (the Pareto front maximizes them; every other column is minimized)
MAXIMIZE = {"ops_per_s", "tops_per_w", "items_per_s", "items_per_j", "util.pe", "util.matrix", "util.vector", "util.dma", "util.embedding"}


def label(col):
    if col.startswith("util."):
        return f"{col[5:]} utilization (fraction)"
    name, unit, _ = UNITS.get(col, (col, None, 1))
    return f"{name} ({unit})" if unit else name


def legend_entry(col, v, unit=True):
    """'shared SRAM = 6 MiB' for a value of a known column, 'col = v' otherwise."""
    import numbers
    if isinstance(v, bool) or not isinstance(v, numbers.Number):
        return f"{col} = {v}"
    name, u, scale = UNITS.get(col, (col, None, 1))
    return f"{name} = {v * scale:g}" + (f" {u}" if u and unit else "")


def pd_row(values):
    return list(values)


def scaled(df, col):
    return df[col] * UNITS.get(col, (None, None, 1))[2]


def pareto_mask(xs, ys, max_x=False, max_y=False):
    """True for the points no other point beats on both axes (ties kept)."""
    sx = [-v if max_x else v for v in xs]
    sy = [-v if max_y else v for v in ys]
    order = sorted(range(len(sx)), key=lambda i: (sx[i], sy[i]))
    mask = [False] * len(sx)
    best = float("inf")          # lowest y of the points with a smaller x
    k = 0
    while k < len(order):
        group = [order[k]]
        while k + len(group) < len(order) and sx[order[k + len(group)]] == sx[order[k]]:
            group.append(order[k + len(group)])
        low = sy[group[0]]
        if low < best:
            for i in group:
                mask[i] = sy[i] == low
        best = min(best, low)
        k += len(group)
    return mask


KINDS = ("scatter", "line")


def _pyplot():
    from vnpu.sweeps import need
    need("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def tick(v, _=None):
    """A tick label a reader takes in at a glance: 0.5, 20, 1000, 50k, 2M, 1.5G (no 2e+06, no offset)."""
    a = abs(v)
    for at, scale, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if a >= at:
            return f"{v / scale:.4g}{suffix}"
    return f"{v:.4g}"


def _plain_ticks(ax):
    """Linear axes with large numbers: 2M instead of an offset '1e6' in the corner."""
    from matplotlib.ticker import FuncFormatter
    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale == "linear":
            lo, hi = (ax.get_xlim() if axis is ax.xaxis else ax.get_ylim())
            if max(abs(lo), abs(hi)) >= 1e5:
                axis.set_major_formatter(FuncFormatter(tick))


def _plain_log_ticks(axis):
    """Ticks of a log axis at 1, 2, 5 x 10^k, labelled as plain numbers (0.5, 20, 1000, 2M), not 2 x 10^1."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(tick))
    axis.set_minor_formatter(NullFormatter())


def _log_axis(ax, which, values):
    """A log axis whose ticks read as plain numbers; on x, the data's own values as ticks when there are few
    (an input axis of the sweep: 8.4, 17, 34, 67.2, 134 GB/s)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    distinct = sorted(set(float(v) for v in values))
    if which == "x" and 1 < len(distinct) <= 12 and distinct[-1] / distinct[0] < 1e4:
        axis.set_major_locator(FixedLocator(distinct))
        axis.set_minor_locator(NullLocator())
        axis.set_major_formatter(FuncFormatter(tick))
    else:
        _plain_log_ticks(axis)


def plot(df, x, y, out, color=None, pareto=False, title=None, kind="scatter", logx=False, logy=False):
    """Write the plot to `out` (PNG): kind "scatter" (points) or "line" (each --color group's points joined in
    x order); logx / logy: log axes. Returns the number of points plotted and on the front."""
    if kind not in KINDS:
        raise InvalidArgument(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    plt = _pyplot()
    colors = [c.strip() for c in color.split(",")] if color else []
    for col in [x, y] + colors:
        if col not in df.columns:
            raise InvalidArgument(f"no column {col!r} in the results; there are {', '.join(map(str, df.columns))}")
    ok = df[df["error"].isna()] if "error" in df.columns else df
    ok = ok[ok[x].notna() & ok[y].notna()]
    if len(colors) > 1:
        ok = ok.dropna(subset=colors)
    failed = len(df) - len(ok)
    if not len(ok):
        raise InvalidArgument("no point of the results has both values (every point failed?)")
    for flag, col, on in (("--logx", x, logx), ("--logy", y, logy)):
        if on:
            bad = int((ok[col] <= 0).sum())
            if bad:
                raise InvalidArgument(f"{flag}: {bad} point(s) have {col} <= 0, which a log axis cannot show")
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=120)
    xs, ys = scaled(ok, x), scaled(ok, y)
    stacked = 0
    if kind == "line":
        stacked = _lines(plt, fig, ax, ok, x, y, colors)
    elif len(colors) > 1:
        # groups of several columns: one colour per combination, e.g. --color matrix.rows,matrix.cols
        groups = sorted(ok.groupby(colors).groups)
        cmap = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
        for n, g in enumerate(groups):
            sel = (ok[colors] == pd_row(g)).all(axis=1)
            ax.scatter(xs[sel], ys[sel], s=44 if n % 2 else 70, color=cmap(n % cmap.N), alpha=0.8, zorder=2,
                       marker="osD^vP<X>*"[n % 10],    # coinciding groups stay visible
                       label=", ".join(legend_entry(c, v, unit=False) for c, v in zip(colors, g)))
    elif color:
        values = sorted(ok[color].dropna().unique())
        if len(values) <= 10:
            cmap = plt.get_cmap("tab10")
            for n, v in enumerate(values):
                sel = ok[color] == v
                ax.scatter(xs[sel], ys[sel], s=36, color=cmap(n), alpha=0.85, label=legend_entry(color, v), zorder=2)
        else:
            sc = ax.scatter(xs, ys, c=scaled(ok, color), cmap="viridis", s=36, alpha=0.85, zorder=2)
            fig.colorbar(sc, ax=ax, label=label(color))
    else:
        ax.scatter(xs, ys, s=36, color="tab:blue", alpha=0.8, label="design points", zorder=2)
    on_front = 0
    if pareto:
        mask = pareto_mask(list(ok[x]), list(ok[y]), x in MAXIMIZE, y in MAXIMIZE)
        front = ok[mask].sort_values(x)
        on_front = len(front)
        ax.plot(scaled(front, x), scaled(front, y), "-", color="crimson", lw=1.5, zorder=3)
        ax.scatter(scaled(front, x), scaled(front, y), s=110, facecolors="none", edgecolors="crimson", lw=1.8,
                   zorder=4, label=f"Pareto front ({'max' if x in MAXIMIZE else 'min'} x, "
                                   f"{'max' if y in MAXIMIZE else 'min'} y): {on_front} points")
    if logx:
        _log_axis(ax, "x", xs)
    if logy:
        _log_axis(ax, "y", ys)
    ax.set_xlabel(label(x) + (", log scale" if logx else ""), fontsize=11)
    ax.set_ylabel(label(y) + (", log scale" if logy else ""), fontsize=11)
    name = "op" if "op" in ok.columns else "model" if "model" in ok.columns else None
    import os
    what = ", ".join(sorted(set(os.path.basename(str(o)) for o in ok[name]))) if name else ""
    import textwrap
    ax.set_title(textwrap.fill(title, 95, break_on_hyphens=False) if title else f"{what}: {label(y)} vs {label(x)} ({len(ok)} points"
                 + (f", {failed} failed not shown" if failed else "") + ")", fontsize=11)
    _plain_ticks(ax)
    ax.grid(True, alpha=0.3, zorder=0, which="both" if (logx or logy) else "major")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9)
    _save(plt, fig, out)
    return {"points": len(ok), "failed": failed, "pareto": on_front, "stacked": stacked}


def _save(plt, fig, out):
    fig.tight_layout()
    try:
        fig.savefig(out)
    except OSError as e:
        raise InvalidArgument(f"cannot write {out}: {e.strerror or e}") from None
    finally:
        plt.close(fig)


def _lines(plt, fig, ax, ok, x, y, colors):
    """One line per group of the colour columns (one line without them), its points joined in x order; a
    group with several points at one x (another axis varies) draws them all, joined in (x, y) order. Returns the
    number of such groups."""
    if colors:
        keys = colors if len(colors) > 1 else colors[0]
        groups = sorted(ok.groupby(keys).groups)
    else:
        groups = [None]
    many = len(groups) > 10
    stacked = 0
    cmap = plt.get_cmap("viridis" if many else "tab10")
    for n, g in enumerate(groups):
        if g is None:
            part, name = ok, "design points"
        else:
            gv = g if isinstance(g, tuple) else (g,)
            sel = (ok[colors] == pd_row(gv)).all(axis=1)
            part = ok[sel]
            name = ", ".join(legend_entry(c, v, unit=len(colors) == 1) for c, v in zip(colors, gv))
        part = part.sort_values([x, y])
        stacked += bool(part[x].duplicated().any())
        col = cmap(n / max(1, len(groups) - 1)) if many else cmap(n % 10)
        ax.plot(scaled(part, x), scaled(part, y), "-", marker="osD^vP<X>*"[n % 10], ms=6, lw=1.6, color=col,
                alpha=0.9, zorder=2, label=None if many else name)
    if many:        # too many lines for a legend: a colour bar of the (single) colour column
        import matplotlib as mpl
        if len(colors) == 1:
            values = [float(v) * UNITS.get(colors[0], (None, None, 1))[2] for v in groups]
            norm = mpl.colors.Normalize(min(values), max(values))
            fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=label(colors[0]))
    return stacked


DTYPE_RATE = {"int8": "int8_rate", "fp16": "fp16_rate", "fp32": "fp32_rate"}


def read_profile(path):
    """A `vnpu profile MODEL --json` file, checked to be one."""
    import json
    import os
    if not os.path.exists(path):
        raise InvalidArgument(f"no profile file {path}")
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        raise InvalidArgument(f"cannot read the profile {path}: {e}") from None
    if not isinstance(d, dict) or not isinstance(d.get("ops"), list):
        raise InvalidArgument(f"{path} is not a model profile (vnpu profile MODEL --json): it has no 'ops' list")
    for i, r in enumerate(d["ops"]):
        if not isinstance(r, dict) or not all(k in r for k in ("op", "cycles", "bytes", "where")):
            raise InvalidArgument(f"{path}: op record {i} lacks op, cycles, bytes or where (not a vnpu profile?)")
    return d


def roofline_points(profile, cfg):
    """The profile's card ops of its first request as roofline points: ops (2 per MAC), DRAM bytes, seconds,
    arithmetic intensity (ops per DRAM byte) and achieved ops/s. An op record's MACs come from its `macs`
    (or `ops`) field (the runtime's OpRecord counts the MACs its launches ran); an older profile without them gets
    an estimate, matrix utilization x cycles x the array's MACs per cycle x the card's PEs at the profile's
    dtype: an upper bound (the array counts busy on partly filled tiles too; a 256x512x512 int8 matmul: 1.5x).
    Returns (points, skipped, estimated)."""
    m = cfg.matrix
    rate = getattr(m, DTYPE_RATE.get(str(profile.get("dtype", "int8")), "int8_rate"))
    macs_per_cycle = m.rows * m.cols * m.depth * rate * cfg.pes
    first = min((r.get("request", 0) for r in profile["ops"]), default=0)
    points, estimated = [], 0
    skipped = {"on the host or without a launch": 0, "without MACs": 0, "without DRAM traffic": 0}
    for r in profile["ops"]:
        if r.get("request", 0) != first:
            continue
        if r["where"] != "card" or not r["cycles"]:
            skipped["on the host or without a launch"] += 1
            continue
        b = r["bytes"] or {}
        dram = b.get("dram_read", 0) + b.get("dram_write", 0)
        sec = (r["end_ns"] - r["start_ns"]) / 1e9 if "end_ns" in r and "start_ns" in r else 0
        sec = sec if sec > 0 else r["cycles"] / (cfg.clock_ghz * 1e9)
        if r.get("ops") is not None:
            ops = float(r["ops"])
        elif r.get("macs") is not None:
            ops = 2.0 * r["macs"]
        else:
            ops = 2.0 * (r.get("units") or {}).get("matrix", 0.0) * r["cycles"] * macs_per_cycle
            estimated += ops > 0
        if ops <= 0:
            skipped["without MACs"] += 1
            continue
        if dram <= 0:
            skipped["without DRAM traffic"] += 1
            continue
        points.append({"node": r.get("node", ""), "op": r["op"], "ops": ops, "dram_bytes": dram, "seconds": sec,
                       "intensity": ops / dram, "ops_per_s": ops / sec, "bound": r.get("bound", "")})
    return points, skipped, estimated


def roofline(profile, out, config="reference", title=None):
    """Write a roofline plot of a model profile's card ops to `out` (PNG): each op a point at its arithmetic
    intensity (ops per DRAM byte) and achieved ops/s, log-log, under the card's compute roof (the matrix
    array's peak at the profile's dtype) and DRAM roof (bandwidth x intensity). Returns counts."""
    from vnpu.emulator.config import load_config
    plt = _pyplot()
    cfg = load_config(config) if isinstance(config, str) else config
    dtype = str(profile.get("dtype", "int8"))
    m = cfg.matrix
    rate = getattr(m, DTYPE_RATE.get(dtype, "int8_rate"))
    peak = 2 * m.rows * m.cols * m.depth * rate * cfg.pes * cfg.clock_ghz * 1e9
    bw = cfg.dram.gbps * 1e9
    ridge = peak / bw
    pts, skipped, estimated = roofline_points(profile, cfg)
    if not pts:
        raise InvalidArgument(f"no op of the profile ran MACs on a card with DRAM traffic (skipped: "
                              f"{', '.join(f'{v} {k}' for k, v in skipped.items() if v)}); nothing to plot")
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=120)
    lo = min(min(p["intensity"] for p in pts), ridge) / 4
    hi = max(max(p["intensity"] for p in pts), ridge) * 4
    import numpy as np
    xs = np.geomspace(lo, hi, 200)
    ax.plot(xs, np.minimum(peak, bw * xs) / 1e12, "-", color="black", lw=2, zorder=3,
            label=f"roofline: min(compute, DRAM)")
    ax.axhline(peak / 1e12, color="crimson", ls="--", lw=1, zorder=1,
               label=f"compute roof {peak / 1e12:.3g} TOP/s ({dtype}, {cfg.pes} PEs x {m.rows}x{m.cols}x{m.depth} "
                     f"at {cfg.clock_ghz:g} GHz)")
    ax.plot(xs, bw * xs / 1e12, ls="--", color="tab:blue", lw=1, zorder=1,
            label=f"DRAM roof {cfg.dram.gbps:g} GB/s x intensity (ridge at {ridge:.3g} ops/B)")
    kinds = sorted({p["op"] for p in pts}, key=lambda k: -sum(q["seconds"] for q in pts if q["op"] == k))
    shown = kinds[:9]
    cmap = plt.get_cmap("tab10")
    total = sum(p["seconds"] for p in pts)
    for n, k in enumerate(shown + (["other"] if len(kinds) > 9 else [])):
        sel = [p for p in pts if (p["op"] == k if k != "other" else p["op"] not in shown)]
        t = sum(p["seconds"] for p in sel)
        # marker area grows with the op's share of the card time: the ops that matter stand out
        sizes = [20 + 400 * p["seconds"] / total for p in sel]
        ax.scatter([p["intensity"] for p in sel], [p["ops_per_s"] / 1e12 for p in sel], s=sizes, color=cmap(n),
                   alpha=0.75, edgecolors="black", linewidths=0.4, zorder=4,
                   label=f"{k}: {len(sel)} op(s), {t / total:.0%} of the card time")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_ticks(ax.xaxis)
    _plain_log_ticks(ax.yaxis)
    ax.set_xlim(lo, hi)
    ymin = min(p["ops_per_s"] for p in pts) / 1e12 / 3
    ax.set_ylim(ymin, peak / 1e12 * 2)
    ax.set_xlabel("arithmetic intensity (ops per DRAM byte, 2 ops per MAC), log scale", fontsize=11)
    ax.set_ylabel("achieved throughput (TOP/s), log scale", fontsize=11)
    notes = [f"{len(pts)} card ops of request {min((r.get('request', 0) for r in profile['ops']), default=0)}"]
    notes += [f"{v} op(s) {k} not shown" for k, v in skipped.items() if v]
    if estimated:
        notes.append(f"ops of {estimated} estimated from matrix utilization (upper bound)")
    import textwrap
    head = title or (f"{profile.get('model', 'model')} ({dtype}, {profile.get('cards', '?')} card(s)) on the "
                     f"{cfg.data.get('name', 'card')} card: roofline of its ops")
    ax.set_title(head + "\n" + textwrap.fill("; ".join(notes), 80, break_on_hyphens=False), fontsize=10)
    ax.grid(True, which="both", alpha=0.25, zorder=0)
    ax.legend(fontsize=8.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9,
              title="marker area: share of card time", title_fontsize=8.5)
    _save(plt, fig, out)
    return {"points": len(pts), "skipped": skipped, "estimated": estimated, "peak_ops_per_s": peak,
            "dram_bytes_per_s": bw}


def cmd_plot(args):
    from vnpu.sweeps import read_results
    if not args.output.endswith(".png"):
        raise InvalidArgument(f"-o {args.output}: give a .png file")
    if args.roofline:
        other = [f for f, v in (("--x", args.x), ("--y", args.y), ("--color", args.color), ("--pareto", args.pareto),
                                ("--logx", args.logx), ("--logy", args.logy), ("--kind", args.kind)) if v]
        if other:
            raise InvalidArgument(f"--roofline plots a profile's ops on fixed log axes; {', '.join(other)} "
                                  f"do not apply")
        from vnpu.cli import card_config
        r = roofline(read_profile(args.results), args.output, card_config(args.config), title=args.title)
        sk = ", ".join(f"{v} op(s) {k}" for k, v in r["skipped"].items() if v)
        print(f"{args.output}: {r['points']} ops under a {r['peak_ops_per_s'] / 1e12:.3g} TOP/s compute roof and a "
              f"{r['dram_bytes_per_s'] / 1e9:g} GB/s DRAM roof" + (f" ({sk} not shown)" if sk else "")
              + (f"; {r['estimated']} ops' MAC counts estimated from matrix utilization" if r["estimated"] else ""))
        return 0
    if args.config != "reference":
        raise InvalidArgument("--config is the card of a --roofline plot; sweep results carry their own config")
    if not args.x or not args.y:
        raise InvalidArgument("give --x KEY and --y KEY (columns of the results), or --roofline for a profile")
    r = plot(read_results(args.results), args.x, args.y, args.output, color=args.color, pareto=args.pareto,
             title=args.title, kind=args.kind or "scatter", logx=args.logx, logy=args.logy)
    print(f"{args.output}: {r['points']} points" + (f", {r['pareto']} on the Pareto front" if args.pareto else "")
          + (f" ({r['failed']} failed points not shown)" if r["failed"] else ""))
    if r["stacked"]:
        print(f"note: {r['stacked']} line(s) have several points at one {args.x} (another axis varies): add it to "
              f"--color to get one line per value")
    return 0


@extra_command
def _register(sub):
    p = sub.add_parser("plot", help="scatter or line plot of vnpu sweep results (Pareto front highlighted), or a "
                                    "roofline plot of a vnpu profile --json")
    p.add_argument("results", help="a .parquet or .csv file from vnpu sweep --out; with --roofline a JSON file from "
                                   "vnpu profile MODEL --json")
    p.add_argument("--x", default=None, help="column on the x axis, e.g. area_mm2")
    p.add_argument("--y", default=None, help="column on the y axis, e.g. ops_per_s")
    p.add_argument("--kind", default=None, choices=KINDS,
                   help="scatter (default): points; line: each --color group's points joined in x order")
    p.add_argument("--logx", action="store_true", help="log-scale x axis")
    p.add_argument("--logy", action="store_true", help="log-scale y axis")
    p.add_argument("--roofline", action="store_true",
                   help="RESULTS is a profile (vnpu profile MODEL --json): its card ops by arithmetic intensity vs "
                        "achieved ops/s under the card's compute and DRAM roofs")
    p.add_argument("--config", default="reference",
                   help="with --roofline: the card the profile ran on (default reference; vnpu profile's default)")
    p.add_argument("--color", default=None,
                   help="column that colours the points, e.g. matrix.rows; several (matrix.rows,matrix.cols): a colour "
                        "per combination")
    p.add_argument("--pareto", action="store_true",
                   help="highlight the Pareto front (throughput, TOPS/W, utilization maximized; the rest minimized)")
    p.add_argument("--title", default=None)
    p.add_argument("-o", "--output", required=True, help="the PNG to write")
    p.set_defaults(func=cmd_plot)
