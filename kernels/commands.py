"""`vnpu op NAME [--param value ...]`: run one library kernel on random data, check it against its numpy
reference, and print where the cycles went (JSON with --json)."""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import time

import numpy as np

from vnpu.cli import extra_command, make_card
from vnpu.errors import InvalidArgument

# Ranges of the integer parameters; any other integer parameter is a size, 1..MAX_SIZE.
MAX_SIZE = 1 << 24
INT_RANGES = {"zero_point": (-128, 127), "padding": (0, 64), "stride": (1, 64), "index64": (0, 1), "bias": (0, 1),
              "affine": (0, 1)}
# Float parameters are finite; these have a tighter range.
FLOAT_RANGES = {"scale": (1e-30, 1e30), "eps": (0.0, 1e6)}
# Elements of the operands an op makes (inputs and output) from its parameters; the op runs only when they
# fit MAX_ELEMENTS, so a typo'd size is an error instead of hours of emulation or host memory running out.
MAX_ELEMENTS = 1 << 28


def _padded(p):
    return (p["h"] + 2 * p["padding"]) * (p["w"] + 2 * p["padding"])


ELEMENTS = {
    "matmul": lambda p: p["batch"] * (p["m"] * p["k"] + p["k"] * p["n"] + p["m"] * p["n"]),
    "fc": lambda p: p["m"] * p["k"] + p["k"] * p["n"] + p["m"] * p["n"],
    "conv2d": lambda p: p["n"] * p["c"] * _padded(p) + p["oc"] * p["c"] * p["kh"] * p["kw"] + p["n"] * p["oc"] *
    _padded(p),
    "conv2d_general": lambda p: p["n"] * p["c"] * (p["h"] + 2 * p["padding"]) * (p["w"] + 2 * p["padding"]) +
    p["oc"] * (p["c"] // max(1, p["groups"])) * p["k"] ** 2 + p["n"] * p["oc"] * p["h"] * p["w"],
    "embedding_bag": lambda p: p["rows"] * p["dim"] + p["bags"] * p["pooling"] + p["bags"] * p["dim"],
    "dot_interaction": lambda p: p["batch"] * p["tables"] * (p["dim"] + p["tables"]),
    "concat": lambda p: 2 * p["rows"] * (p["w0"] + p["w1"] + p["w2"]),
    "transpose": lambda p: 2 * p["rows"] * p["cols"],
    "layer_norm": lambda p: 2 * p["rows"] * p["d"],
    "softmax": lambda p: 2 * p["rows"] * p["d"],
}


# Element types the energy model prices an op's MACs and vector lanes at (the emulator counts MACs and
# lane-ops, not their type): the op's `dtype` parameter where it has one, else this table; int8 ops'
# epilogues run in fp32 on the vector unit.
OP_DTYPES = {"conv2d": ("fp16", "fp32"), "layer_norm_fp16": ("fp16", "fp16")}


def op_dtypes(name, params):
    """(mac_dtype, vector_dtype) of op `name` with `params`, for emulator/power.py."""
    if name in OP_DTYPES:
        return OP_DTYPES[name]
    dt = params.get("dtype")
    if dt in ("int8", "fp16", "fp32"):
        return dt, ("fp16" if dt == "fp16" else "fp32")
    return "int8", "fp32"


def _elements(name, params):
    """Operand elements of op `name`; for an op without a formula, the product of its size parameters."""
    if name in ELEMENTS:
        return ELEMENTS[name](params)
    sizes = [v for k, v in params.items() if isinstance(v, int) and not isinstance(v, bool) and k not in INT_RANGES]
    return 3 * math.prod(sizes)


def check_params(spec, params):
    """Every parameter in its range, and the operands within MAX_ELEMENTS; InvalidArgument otherwise."""
    where = spec.name
    for key, v in params.items():
        if isinstance(v, bool) or isinstance(v, str):
            continue
        if isinstance(v, int):
            lo, hi = INT_RANGES.get(key, (1, MAX_SIZE))
            if not lo <= v <= hi:
                raise InvalidArgument(f"{where}: --{key} must be {lo}..{hi}, got {v}")
        elif isinstance(v, float):
            lo, hi = FLOAT_RANGES.get(key, (-1e30, 1e30))
            if not (math.isfinite(v) and lo <= v <= hi):
                raise InvalidArgument(f"{where}: --{key} must be a finite number in [{lo:g}, {hi:g}], got {v}")
    if spec.name == "conv2d":
        for side, k in (("h", "kh"), ("w", "kw")):
            if params[k] > params[side] + 2 * params["padding"]:
                raise InvalidArgument(f"{where}: --{k} {params[k]} is larger than the padded input "
                                      f"(--{side} {params[side]} + 2 x --padding {params['padding']})")
    n = _elements(spec.name, params)
    if n > MAX_ELEMENTS:
        raise InvalidArgument(f"{where}: these parameters make {n} operand elements; vnpu op runs up to "
                              f"{MAX_ELEMENTS}")


def _parse_params(spec, extra):
    params = dict(spec.params)
    i = 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--"):
            raise InvalidArgument(f"{spec.name}: unexpected argument {tok!r}")
        key = tok[2:].replace("-", "_")
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(extra):
                raise InvalidArgument(f"{spec.name}: --{key} needs a value")
            value = extra[i + 1]
            i += 2
        if key not in params:
            raise InvalidArgument(f"{spec.name}: unknown parameter --{key}; it takes "
                                  f"{', '.join('--' + p for p in params)}")
        default = params[key]
        try:
            if len(value) > 64:
                raise ValueError(value)
            params[key] = type(default)(value) if not isinstance(default, bool) else value in ("1", "true", "yes")
        except ValueError:
            raise InvalidArgument(f"{spec.name}: --{key} must be {type(default).__name__}, got {value!r}") \
                from None
        if key in spec.choices and params[key] not in spec.choices[key]:
            raise InvalidArgument(f"{spec.name}: --{key} must be one of {', '.join(map(str, spec.choices[key]))}")
    check_params(spec, params)
    return params


def run_op(name, extra=(), config="reference", overrides=None, pes=None, trace_path=None, seed=0):
    """Run library op `name`; returns the report dict `vnpu op` prints."""
    from vnpu.kernels.library import all_ops
    from vnpu.emulator.trace import summarize, write_chrome_trace
    ops = all_ops()
    if name not in ops:
        raise InvalidArgument(f"no library op {name!r}; there are {', '.join(sorted(ops))}")
    spec = ops[name]
    params = _parse_params(spec, list(extra))
    card = make_card(config, overrides)
    if pes is not None and not 1 <= pes <= card.config.pes:
        raise InvalidArgument(f"--pes must be 1..{card.config.pes}, got {pes}")
    pe_list = None if pes is None else list(range(pes))
    inputs = spec.make_inputs(np.random.default_rng(seed), params)
    t = time.perf_counter()
    with card.recording() if trace_path else contextlib.nullcontext() as launches:
        outputs, result = spec.run(card, inputs, params, pe_list)
    wall = time.perf_counter() - t
    refs = spec.reference(inputs, params)
    err = 0.0
    ok = True
    rtol, atol = spec.tolerance(params) if spec.tolerance else (0, 0)
    for o, r in zip(outputs, refs):
        o64, r64 = np.asarray(o, np.float64), np.asarray(r, np.float64)
        if o64.size:
            err = max(err, float(np.nanmax(np.abs(o64 - r64))))
        ok = ok and o64.shape == r64.shape and bool(np.allclose(o64, r64, rtol=rtol, atol=atol, equal_nan=True))
    s = summarize(result)
    ops_count = spec.ops_per_call(params) if spec.ops_per_call else 2 * s["macs"]
    cfg = card.config
    peak_ops = 2 * cfg.matrix.rows * cfg.matrix.cols * cfg.matrix.depth * cfg.matrix.int8_rate * len(result.pes) \
        * cfg.clock_ghz * 1e9
    dram = s["bytes"]["dram_read"] + s["bytes"]["dram_write"]
    report = {"op": name, "params": params, "config": cfg.data["name"], "pes": len(result.pes),
              "cycles": result.cycles, "time_us": result.seconds * 1e6,
              "units": s["units"], "bytes": {k: s["bytes"][k] for k in ("dram_read", "dram_write", "sram_read",
                                                                        "sram_write")},
              "max_abs_error": err, "matches_reference": ok, "tolerance": {"rtol": rtol, "atol": atol},
              "wall_s": wall,
              "roofline": {"ops": ops_count, "achieved_ops_per_s": ops_count / result.seconds if result.seconds else 0,
                           "peak_ops_per_s": peak_ops,
                           "achieved_dram_bytes_per_s": dram / result.seconds if result.seconds else 0,
                           "peak_dram_bytes_per_s": cfg.dram.gbps * 1e9,
                           "arithmetic_intensity": ops_count / dram if dram else None}}
    from vnpu.emulator.power import launch_energy
    mac_dt, lane_dt = op_dtypes(name, params)
    e = launch_energy(result, mac_dtype=mac_dt, vector_dtype=lane_dt)
    # TOPS/W of the op's own ops (the roofline's), where it runs MACs
    tops_per_w = ops_count / e["total_j"] / 1e12 if s["macs"] and e["total_j"] else None
    report["energy"] = {"total_uj": e["total_j"] * 1e6, "average_w": e["average_w"], "tops_per_w": tops_per_w,
                        "mac_dtype": e["mac_dtype"], "vector_dtype": e["vector_dtype"],
                        "clock_ghz": e["clock_ghz"], "volts": e["volts"],
                        "units_uj": {u: v["total_j"] * 1e6 for u, v in e["units"].items()}}
    report["roofline"]["tops_per_w"] = tops_per_w
    if trace_path:
        # every launch the op made, one after the other on the card's timeline
        traces, start_ns = [], 0.0
        for r in launches or [result]:
            traces.append(r.chrome_trace(card_name=f"{name} on {cfg.data['name']}", start_ns=start_ns))
            start_ns += r.seconds * 1e9
        write_chrome_trace(trace_path, traces)
        report["trace"] = trace_path
    return report


def format_report(r):
    lines = [f"{r['op']} {r['params']} on {r['config']} ({r['pes']} PEs): {r['cycles']} cycles = "
             f"{r['time_us']:.1f} us; {'matches' if r['matches_reference'] else 'DOES NOT MATCH'} the numpy "
             f"reference (max abs error {r['max_abs_error']:.3g})",
             "  unit        busy cycles  utilization"]
    for unit, u in r["units"].items():
        lines.append(f"  {unit:<10} {u['busy_cycles']:>12}  {100 * u['utilization']:9.1f}%")
    b = r["bytes"]
    lines.append(f"  bytes: DRAM read {b['dram_read']}, write {b['dram_write']}; SRAM read {b['sram_read']}, "
                 f"write {b['sram_write']}")
    rf = r["roofline"]
    tpw = "" if rf.get("tops_per_w") is None else f", {rf['tops_per_w']:.2f} TOPS/W"
    lines.append(f"  roofline: {rf['achieved_ops_per_s'] / 1e12:.3f} of {rf['peak_ops_per_s'] / 1e12:.1f} Top/s, "
                 f"DRAM {rf['achieved_dram_bytes_per_s'] / 1e9:.2f} of {rf['peak_dram_bytes_per_s'] / 1e9:.1f} GB/s{tpw}")
    e = r.get("energy")
    if e:
        tot = e["total_uj"] or 1.0
        top = sorted(((v, k) for k, v in e["units_uj"].items() if v > 0), reverse=True)[:4]
        lines.append(f"  energy: {e['total_uj']:.3f} uJ, {e['average_w']:.2f} W average "
                     f"({e['mac_dtype'] + ' MACs, ' if e['tops_per_w'] is not None else ''}{e['vector_dtype']} lanes; "
                     f"{e['clock_ghz']:g} GHz, {e['volts']:.2f} V): "
                     + ", ".join(f"{k} {v / tot:.0%}" for v, k in top))
    lines.append(f"  wall {r['wall_s']:.3f} s")
    return "\n".join(lines)


class _OpHelp(argparse.Action):
    """-h / --help: the command's options, then (`vnpu op NAME --help`) the op's own parameters."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.print_help()
        name = getattr(namespace, "name", None)
        if name and name != "list":
            from vnpu.kernels.library import all_ops
            spec = all_ops().get(name)
            if spec is not None:
                print(f"\n{name}: {spec.doc}\nparameters (--name value):")
                for k, v in spec.params.items():
                    choices = f" (one of {', '.join(map(str, spec.choices[k]))})" if k in spec.choices else ""
                    print(f"  --{k:<20} default {v}{choices}")
        parser.exit()


@extra_command
def register(sub):
    p = sub.add_parser("op", help="run one library kernel on random data and check it against its reference",
                       allow_abbrev=False, add_help=False)   # --h is conv2d's height, not --help
    p.add_argument("-h", "--help", action=_OpHelp, nargs=0, help="show this help (with NAME: the op's parameters)")
    p.add_argument("name", help="the op (vnpu op list shows them)")
    p.add_argument("--config", default="reference")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--pes", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--trace", default=None)
    p.add_argument("--seed", type=int, default=0)

    def cmd(args, extra=()):
        if args.name == "list":
            from vnpu.kernels.library import all_ops
            for name, spec in sorted(all_ops().items()):
                print(f"{name:<16} {' '.join(f'--{k} {v}' for k, v in spec.params.items())}   {spec.doc}")
            return 0
        report = run_op(args.name, extra, args.config, args.set or None, args.pes, args.trace, args.seed)
        print(json.dumps(report, indent=2, default=float) if args.json else format_report(report))
        return 0 if report["matches_reference"] else 1
    p.set_defaults(func=cmd, allow_extra=True)
