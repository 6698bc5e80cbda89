"""The `vnpu` command. Every subcommand prints one clear line and exits non-zero on error, no traceback."""
from __future__ import annotations

import argparse
import json
import sys

from vnpu.errors import VnpuError


def _read(path, mode="r"):
    try:
        with open(path, mode) as f:
            return f.read()
    except OSError as e:
        raise VnpuError(f"cannot read {path}: {e.strerror}") from None


def cmd_asm(args):
    import vnpu
    image = vnpu.assemble(_read(args.input), source=args.input)
    out = args.output or (args.input.rsplit(".", 1)[0] + ".vnpu")
    try:
        with open(out, "wb") as f:
            f.write(image)
    except OSError as e:
        raise VnpuError(f"cannot write {out}: {e.strerror}") from None
    mod = vnpu.load_module(image)
    print(f"{out}: {len(mod.code)} instructions, {len(mod.rodata)} bytes rodata, "
          f"kernels: {', '.join(k.signature() for k in mod.kernels.values())}")
    return 0


def cmd_disasm(args):
    import vnpu
    sys.stdout.write(vnpu.disassemble(_read(args.input, "rb")))
    return 0


def cmd_info(args):
    from vnpu.isa import table as T
    info = {"vnpu": __import__("vnpu").__version__, "isa_version": T.ISA_VERSION,
            "instructions": len(T.INSTRUCTIONS)}
    try:
        from vnpu.driver.platform import platform_info
        info["platform"] = platform_info(args.config)
    except ImportError:
        pass
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"vnpu {info['vnpu']}, ISA version {info['isa_version']} ({info['instructions']} instructions)")
        if "platform" in info:
            from vnpu.driver.platform import format_platform_table
            print(format_platform_table(info["platform"]))
    return 0


def cmd_demo(args):
    from vnpu.demo import run_demo
    batches = tuple(int(b) for b in args.batch.split(","))
    return run_demo(as_json=args.json, trace_path=args.trace, model=args.model, full=args.full, batches=batches,
                    requests=args.requests, platform_config=args.config, table_format=args.tables,
                    dense_dtype=args.dense, inject=args.inject, fault_policy=args.fault_policy)


def build_parser():
    p = argparse.ArgumentParser(prog="vnpu", description="vnpu: a virtual inference-accelerator card")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("asm", help="assemble a .s file into a .vnpu module")
    a.add_argument("input")
    a.add_argument("-o", "--output")
    a.set_defaults(func=cmd_asm)
    d = sub.add_parser("disasm", help="disassemble a .vnpu module")
    d.add_argument("input")
    d.set_defaults(func=cmd_disasm)
    i = sub.add_parser("info", help="ISA version and the platform")
    i.add_argument("--json", action="store_true")
    i.add_argument("--config", default=None, help="platform YAML (default: the embedded six-card platform)")
    i.set_defaults(func=cmd_info)
    m = sub.add_parser("demo", help="the main job on the embedded default platform")
    m.add_argument("--json", action="store_true")
    m.add_argument("--trace", default=None, help="where to write the Chrome trace (default: a temp file)")
    m.add_argument("--model", default="rm1", choices=("rm1", "rm2", "rm3"), help="DeepRecSys shape (default rm1)")
    m.add_argument("--full", action="store_true", help="full-size tables (rm1: 8 x 4M rows), where memory allows")
    m.add_argument("--batch", default="16,64,256", help="batch sizes, comma separated")
    m.add_argument("--requests", type=int, default=16, help="requests per batch size")
    m.add_argument("--config", default=None, help="platform YAML (default: the embedded six-card platform)")
    m.add_argument("--tables", default="int8_rowwise", choices=("int8_rowwise", "int4_rowwise"),
                   help="embedding table format")
    m.add_argument("--dense", default="fp16", choices=("fp16", "int8"), help="dense layers' arithmetic")
    m.add_argument("--inject", action="append", default=[], metavar="CARD:key=value,...",
                   help="inject faults into a card, e.g. 2:pe_hang_rate=0.2,dram_dbe_per_mib=1,seed=3")
    m.add_argument("--fault-policy", default="retry", choices=("retry", "fail"),
                   help="on a device fault: reset the card and retry the request, or fail it")
    m.set_defaults(func=cmd_demo)
    for register in _EXTRA_COMMANDS:
        register(sub)
    return p


_EXTRA_COMMANDS = []


def extra_command(register):
    """Later parts (emulator, runtime) add subcommands here, keeping this file the one entry point."""
    _EXTRA_COMMANDS.append(register)
    return register


def main(argv=None):
    _load_extra_commands()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "allow_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args, extra) if getattr(args, "allow_extra", False) else args.func(args)
    except VnpuError as e:
        print(f"vnpu {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"vnpu {args.command}: interrupted", file=sys.stderr)
        return 130


def _load_extra_commands():
    import importlib
    for name in ("vnpu.emulator.commands", "vnpu.driver.commands", "vnpu.kernels.commands", "vnpu.bench.commands"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise


if __name__ == "__main__":
    # run as `python -m vnpu.cli`: this file is then __main__, and the subcommand modules register with the
    # module vnpu.cli, a second copy; use that one
    from vnpu.cli import main as _main
    sys.exit(_main())
