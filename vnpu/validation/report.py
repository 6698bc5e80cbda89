"""The validation figures as text: one line per check (`vnpu bench`) and the tables of docs/validation.md
(`vnpu bench --markdown`)."""
from __future__ import annotations


def pct(x):
    return f"{100 * x:.2g}%" if x > 1e-9 else "0%"    # below 1e-9: floating-point rounding, not error


def format_lines(f) -> list:
    """One line per check of a `run()` result."""
    fm, fp, fe, fk = f["matrix"], f["pcie"], f["embedding"], f["peaks"]
    ok = {True: "ok", False: "OUT OF BOUND"}
    return [f"  matrix vs SCALE-Sim v3   {fm['points']} points, {fm['exact']} exact, max error "
            f"{pct(fm['max_rel_error'])} (bound {pct(fm['bound'])})  {ok[fm['ok']]}",
            f"  PCIe vs spec arithmetic  {len(fp['rows'])} copies ({fp['link']}), max error "
            f"{pct(fp['max_rel_error'])} (bound {pct(fp['bound'])})  {ok[fp['ok']]}",
            f"  embedding vs PyTorch     {fe['cases']} cases, {fe['exact']} bit-exact, fp16 max "
            f"{fe['max_fp16_ulps']:.1f} ulp, fp32 within the accumulation-order bound  {ok[fe['ok']]}",
            f"  peak invariants          largest fraction of a peak {fk['max_fraction']:.3f} (bound "
            f"{fk['bound']})  {ok[fk['ok']]}"]


def format_markdown(f) -> str:
    """The tables of docs/validation.md from a `run()` result."""
    out = ["### Matrix unit against SCALE-Sim v3", "",
           "| array | dataflow | M | N | K | SCALE-Sim cycles | vnpu cycles | error |", "|---|---|---|---|---|---|---|---|"]
    out += [f"| {x['array']} | {x['dataflow']} | {x['M']} | {x['N']} | {x['K']} | {x['scalesim']} | {x['vnpu']} | "
            f"{pct(x['rel_error'])} |" for x in f["matrix"]["rows"]]
    out += ["", "### PCIe copies against the spec arithmetic", "",
            "| bytes | kind | spec µs | vnpu µs | GB/s | error |", "|---|---|---|---|---|---|"]
    out += [f"| {x['bytes']} | {x['kind']} | {x['spec_us']:.3f} | {x['vnpu_us']:.3f} | {x['gbps']:.3f} | "
            f"{pct(x['rel_error'])} |" for x in f["pcie"]["rows"]]
    out += ["", "### Embedding lookups against PyTorch", "",
            "| case | format | mode | bags | max abs error | metric | bound |", "|---|---|---|---|---|---|---|"]
    out += [f"| {x['case']} | {x['format']} | {x['mode']} | {x['bags']} | {x['max_abs_error']:.3g} | "
            f"{x['metric']:.3g} | {x['bound']:.3g} |" for x in f["embedding"]["rows"]]
    pk = f["peaks"]
    keys = [k for k in pk["rows"][0] if k not in ("kernel", "cycles")]
    out += ["", "### Peak invariants (fraction of the card's peak)", "",
            "| kernel | cycles | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    out += [f"| {x['kernel']} | {x['cycles']} | " + " | ".join(f"{x[k]:.3f}" for k in keys) + " |"
            for x in pk["rows"]]
    lk = pk["link"]
    out += ["", f"Six cards copying 16 MiB to the host at once: {lk['uplink_gbps']:.2f} GB/s through the "
            f"uplink (raw {lk['uplink_raw_gbps']:.2f}); one copy {lk['single_gbps']:.2f} GB/s (link raw "
            f"{lk['link_raw_gbps']:.2f})."]
    return "\n".join(out)
