"""`vnpu plot RESULTS --x KEY --y KEY [--color KEY] [--pareto] -o FILE.png`: a scatter plot of a sweep's
results (vnpu sweep --out), its Pareto front highlighted (issue 19). matplotlib (Agg), from the sweep extra."""
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
    "batch": ("batch", None, 1),
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


def plot(df, x, y, out, color=None, pareto=False, title=None):
    """Write the scatter plot to `out` (PNG); returns the number of points plotted and on the front."""
    from vnpu.sweeps import need
    need("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=120)
    xs, ys = scaled(ok, x), scaled(ok, y)
    if len(colors) > 1:
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
    ax.set_xlabel(label(x), fontsize=11)
    ax.set_ylabel(label(y), fontsize=11)
    name = "op" if "op" in ok.columns else "model" if "model" in ok.columns else None
    what = ", ".join(sorted(set(f"{o}" for o in ok[name]))) if name else ""
    import textwrap
    ax.set_title(textwrap.fill(title, 95, break_on_hyphens=False) if title else f"{what}: {label(y)} vs {label(x)} ({len(ok)} points"
                 + (f", {failed} failed not shown" if failed else "") + ")", fontsize=11)
    ax.grid(True, alpha=0.3, zorder=0)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9)
    fig.tight_layout()
    try:
        fig.savefig(out)
    except OSError as e:
        raise InvalidArgument(f"cannot write {out}: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return {"points": len(ok), "failed": failed, "pareto": on_front}


def cmd_plot(args):
    from vnpu.sweeps import read_results
    if not args.output.endswith(".png"):
        raise InvalidArgument(f"-o {args.output}: give a .png file")
    r = plot(read_results(args.results), args.x, args.y, args.output, color=args.color, pareto=args.pareto,
             title=args.title)
    print(f"{args.output}: {r['points']} points" + (f", {r['pareto']} on the Pareto front" if args.pareto else "")
          + (f" ({r['failed']} failed points not shown)" if r["failed"] else ""))
    return 0


@extra_command
def _register(sub):
    p = sub.add_parser("plot", help="scatter plot of vnpu sweep results, Pareto front highlighted")
    p.add_argument("results", help="a .parquet or .csv file from vnpu sweep --out")
    p.add_argument("--x", required=True, help="column on the x axis, e.g. area_mm2")
    p.add_argument("--y", required=True, help="column on the y axis, e.g. ops_per_s")
    p.add_argument("--color", default=None,
                   help="column that colours the points, e.g. matrix.rows; several (matrix.rows,matrix.cols): a colour "
                        "per combination")
    p.add_argument("--pareto", action="store_true",
                   help="highlight the Pareto front (throughput, TOPS/W, utilization maximized; the rest minimized)")
    p.add_argument("--title", default=None)
    p.add_argument("-o", "--output", required=True, help="the PNG to write")
    p.set_defaults(func=cmd_plot)
