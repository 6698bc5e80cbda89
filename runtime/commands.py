"""`vnpu profile`, `vnpu serve` and `vnpu compile`: a model onto the platform's cards from the command line.

MODEL is a .onnx file, a .vnpp compiled program, `module:callable` (a Python module name or file path and a
function returning (model, example_inputs)), or a built-in model name (resnet50, bert, rm1, rm2, rm3).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import sys

import numpy as np

from vnpu.cli import extra_command
from vnpu.errors import InvalidArgument

BUILTIN = ("resnet50", "bert", "bert-base", "rm1", "rm2", "rm3")


def _positive(name, v, hi=1 << 20):
    if not 1 <= v <= hi:
        raise InvalidArgument(f"--{name} must be 1..{hi}, got {v}")
    return v


def load_model(spec, batch, options=None):
    """(model, example_inputs) for a MODEL argument."""
    options = options or {}
    if spec.endswith(".onnx"):
        if not os.path.exists(spec):
            raise InvalidArgument(f"{spec}: no such file")
        from vnpu.runtime.graph.frontends.onnx_frontend import from_onnx
        from vnpu.runtime.graph.models import example_inputs
        g = from_onnx(spec, batch=batch)
        return spec, example_inputs(g, batch=batch)
    if spec in BUILTIN:
        from vnpu.runtime.graph.models import build, example_inputs
        g = build(spec, batch=batch, **options)
        return g, example_inputs(g, batch=batch)
    if ":" in spec:
        mod_name, _, fn_name = spec.rpartition(":")
        if mod_name.endswith(".py") or os.path.sep in mod_name:
            if not os.path.exists(mod_name):
                raise InvalidArgument(f"{mod_name}: no such file")
            # one module per file (a second, different file in the same process is its own module)
            name = "vnpu_user_model_" + hashlib.sha1(os.path.abspath(mod_name).encode()).hexdigest()[:12]
            s = importlib.util.spec_from_file_location(name, mod_name)
            mod = importlib.util.module_from_spec(s)
            sys.modules[name] = mod
            s.loader.exec_module(mod)
        else:
            try:
                mod = importlib.import_module(mod_name)
            except ImportError as e:
                raise InvalidArgument(f"{spec}: cannot import {mod_name}: {e}") from None
        fn = getattr(mod, fn_name, None)
        if not callable(fn):
            raise InvalidArgument(f"{spec}: {mod_name} has no function {fn_name}")
        got = fn()
        if not (isinstance(got, tuple) and len(got) == 2):
            raise InvalidArgument(f"{spec}: {fn_name}() must return (model, example_inputs)")
        return got
    raise InvalidArgument(f"MODEL {spec!r} is not a .onnx or .vnpp file, a module:callable, or a built-in model "
                          f"({', '.join(BUILTIN)})")


def _program(args, batch):
    import vnpu
    if args.model.endswith(".vnpp"):
        from vnpu.runtime.graph.bundle import load_program
        return load_program(args.model), None
    options = {}
    for key in ("image", "layers"):
        if getattr(args, key, None) is not None:
            if args.model not in BUILTIN:
                raise InvalidArgument(f"--{key} is an option of the built-in models, not of {args.model}")
            options[key] = _positive(key, getattr(args, key), 4096)
    model, example = load_model(args.model, batch, options)
    # an ONNX file's dynamic batch dimension takes --batch, as its example inputs did
    prog = vnpu.compile(model, example, cards=args.cards, dtype=args.dtype, strategy=args.strategy,
                        allow_host=args.allow_host, batch=batch if args.model.endswith(".onnx") else None)
    return prog, example


def _common(p):
    p.add_argument("model", help="a .onnx file, a .vnpp program, module:callable, or a built-in model "
                                 f"({', '.join(BUILTIN)})")
    p.add_argument("--cards", type=int, default=6, help="cards of the platform (default 6)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--dtype", default="int8", choices=("fp32", "fp16", "int8"), help="compute dtype (default int8)")
    p.add_argument("--strategy", default="auto", choices=("auto", "single", "replicate", "pipeline", "sparsenn"))
    p.add_argument("--allow-host", action="store_true", help="run ops the card lacks on the host")
    p.add_argument("--image", type=int, default=None, help="resnet50: image size (default 224)")
    p.add_argument("--layers", type=int, default=None, help="bert: encoder layers (default 12)")


def cmd_profile(args):
    _positive("cards", args.cards, 64)
    _positive("batch", args.batch, 4096)
    prog, example = _program(args, args.batch)
    if example is None:
        from vnpu.runtime.graph.program import _random_inputs
        example = _random_inputs(prog.graph, 0)
    if args.trace:
        prog.platform.start_trace()
    prog.run(*[np.asarray(getattr(x, "numpy", lambda: x)()) for x in example])
    prof = prog.profile()
    if args.trace:
        prog.platform.write_trace(args.trace)
    if args.json:
        d = prof.to_dict()
        d["coverage"] = [s.__dict__ for s in prog.coverage()]
        d["check"] = prog.last_check
        print(json.dumps(d, indent=1, default=str))
        return 0
    print(prof)
    c = prog.coverage().counts()
    print(f"coverage: {c['card']} ops on the card, {c['host']} on the host, {c['unsupported']} unsupported "
          f"(vnpu profile --json lists them)")
    if prog.last_check:
        for i, e in enumerate(prog.last_check):
            extra = f", top-1 agreement {e['top1']:.0%}" if "top1" in e else ""
            print(f"output {i}: max abs error {e.get('max_abs', float('nan')):.3g} (relative {e.get('max_rel', 0):.3g}),"
                  f" cosine {e.get('cosine', float('nan')):.6f}{extra} against the framework")
    if args.trace:
        print(f"trace: {args.trace} (open in https://ui.perfetto.dev)")
    return 0


def cmd_serve(args):
    _positive("cards", args.cards, 64)
    _positive("batch", args.batch, 4096)
    _positive("requests", args.requests, 100_000)
    _positive("inflight", args.inflight, 1024)
    prog, example = _program(args, args.batch)
    if example is None:
        from vnpu.runtime.graph.program import _random_inputs
        example = _random_inputs(prog.graph, 0)
    reqs = [[np.asarray(x) for x in example]] * args.requests
    prog.serve(reqs, inflight=args.inflight)
    prof = prog.profile()
    lat = sorted(prof.latencies_ns())
    from vnpu.runtime.graph.program import _pct
    span = prof.makespan_ns
    out = {"model": args.model, "cards": prog.placement.cards, "strategy": prog.placement.strategy,
           "dtype": prog.dtype, "batch": args.batch, "requests": args.requests, "inflight": args.inflight,
           "latency_us": {p: _pct(lat, int(p[1:])) / 1e3 for p in ("p50", "p90", "p99")},
           "throughput_items_per_s": args.requests * args.batch / (span / 1e9) if span else 0.0,
           "makespan_us": span / 1e3, "wall_s": prof.wall_s, "energy_j": prof.energy_j,
           "card_energy_j": prof.card_energy_j, "pcie_energy_j": prof.pcie_energy_j,
           "energy_per_request_j": prof.energy_j / args.requests,
           "per_card": {c: {k: t[k] for k in ("energy_j", "launch_energy_j", "pcie_energy_j", "average_w", "peak_w")}
                        for c, t in prof.per_card().items()},
           "average_w": prof.average_w, "peak_w": prof.peak_w, "requests_per_j": prof.requests_per_j,
           "items_per_j": args.requests * args.batch / prof.energy_j if prof.energy_j else None}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{args.model}: {args.requests} requests of batch {args.batch} on {out['cards']} card(s) "
          f"({out['strategy']}, {out['dtype']}), {args.inflight} in flight")
    print(f"latency p50 {out['latency_us']['p50']:.1f} us, p90 {out['latency_us']['p90']:.1f} us, "
          f"p99 {out['latency_us']['p99']:.1f} us; throughput {out['throughput_items_per_s']:.1f} items/s "
          f"(virtual time; {prof.wall_s:.1f} s of host time to emulate)")
    for line in prof.energy_lines():
        print(line)
    if prof.energy_j:
        print("per card: " + "; ".join(f"{c}: {t['energy_j'] * 1e3:.3f} mJ (PCIe {t['pcie_energy_j'] * 1e3:.3f}), "
                                       f"{t['average_w']:.2f} W average, {t['peak_w']:.2f} W peak"
                                       for c, t in out["per_card"].items()))
        print(f"{out['items_per_j']:.1f} items per joule ({args.batch} per inference)")
    return 0


def cmd_compile(args):
    _positive("cards", args.cards, 64)
    _positive("batch", args.batch, 4096)
    prog, _ = _program(args, args.batch)
    prog.save(args.output)
    print(f"{args.output}: {prog!r}, {prog.graph.weight_bytes():,} bytes of weights")
    return 0


@extra_command
def register(sub):
    p = sub.add_parser("profile", help="compile a model, run one request on the cards, print where the time goes")
    _common(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--trace", default=None, help="write a Perfetto/Chrome trace of the host and the cards")
    p.set_defaults(func=cmd_profile)
    s = sub.add_parser("serve", help="serve requests of a model on the cards: latency percentiles, throughput")
    _common(s)
    s.add_argument("--requests", type=int, default=16)
    s.add_argument("--inflight", type=int, default=4)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_serve)
    c = sub.add_parser("compile", help="compile a model to a .vnpp program file")
    _common(c)
    c.add_argument("-o", "--output", required=True)
    c.set_defaults(func=cmd_compile)
