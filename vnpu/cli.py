"""The `vnpu` command.

One convention for every subcommand: an error, argument errors included, exits 1 with one line on stderr,
`vnpu COMMAND: error: MESSAGE` (`vnpu: error: ...` before a subcommand is known), and never a traceback.
Errors vnpu raises on purpose are VnpuErrors; anything else reaching the top is a bug, reported in one
line as an internal error (exit 1)."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile

from vnpu.errors import ConfigError, InvalidArgument, VnpuError


class UsageError(VnpuError):
    """A command line argparse could not parse (unknown option, missing or malformed value)."""

    def __init__(self, message, prog=None):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a UsageError (one line, exit 1), not usage text and exit 2."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')", self.prog)


def _read(path, mode="r"):
    """A file's bytes (mode "rb") or UTF-8 text; unreadable or not UTF-8 is a one-line VnpuError."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise VnpuError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:     # e.g. an embedded NUL in the path
        raise VnpuError(f"cannot read {path!r}: {e}") from None
    if mode == "rb":
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise VnpuError(f"{path}:{line}:{col}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") \
            from None


def _write_atomic(path, data: bytes):
    """Write `data` to `path` through a temporary file in the same folder, renamed only when complete."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".vnpu-", dir=folder)
    except OSError as e:
        raise VnpuError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise VnpuError(f"cannot write {path}: {e.strerror or e}") from None


def card_config(config):
    """--config of `vnpu run` / `vnpu op`: an embedded card name, or a readable UTF-8 YAML file."""
    from vnpu.emulator.config import EMBEDDED
    if config in EMBEDDED:
        return config
    if not os.path.exists(config):
        raise ConfigError(f"no card config {config!r}: give one of {', '.join(EMBEDDED)} or a YAML file path")
    if os.path.isdir(config):
        raise ConfigError(f"card config {config} is a folder, not a YAML file")
    _read(config)       # readable and UTF-8, or a one-line error
    return config


_INT_RE = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|[0-9_]+)")


def _int_or_zero(text):
    try:
        return int(text, 0)
    except ValueError:
        return 0


def card_overrides(items):
    """--set KEY=VALUE ...: each well formed, and no integer beyond 64 bits (the config checks ranges)."""
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r} must look like KEY=VALUE, e.g. matrix.rows=16")
        v = value.strip()
        if _INT_RE.fullmatch(v) and (len(v) > 30 or abs(_int_or_zero(v)) >= 1 << 63):
            raise ConfigError(f"--set {key.strip()}: {v[:30]}{'...' if len(v) > 30 else ''} is out of range")
    return list(items) if items else None


def make_card(config, sets):
    """The card `vnpu run` and `vnpu op` launch on, from --config and --set."""
    from vnpu.emulator.card import Card
    return Card(card_config(config), card_overrides(sets))


def cmd_asm(args):
    import vnpu
    image = vnpu.assemble(_read(args.input), source=args.input)
    mod = vnpu.load_module(image)       # assemble's invariant; checked before anything is written
    out = args.output or (args.input.rsplit(".", 1)[0] + ".vnpu")
    _write_atomic(out, image)
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
    from vnpu.demo import parse_batches, run_demo, run_model_demo
    compiled = args.model in ("resnet50", "bert")
    batches = parse_batches(args.batch if args.batch is not None else ("1" if compiled else "16,64,256"))
    requests = args.requests if args.requests is not None else (6 if compiled else 16)
    if not 1 <= requests <= MAX_DEMO_REQUESTS:
        raise InvalidArgument(f"--requests must be 1..{MAX_DEMO_REQUESTS}, got {requests}")
    if compiled:
        return run_model_demo(args.model, batches=batches, requests=requests, as_json=args.json,
                              trace_path=args.trace, platform_config=args.config)
    return run_demo(as_json=args.json, trace_path=args.trace, model=args.model, full=args.full, batches=batches,
                    requests=requests, platform_config=args.config, table_format=args.tables,
                    dense_dtype=args.dense, inject=args.inject, fault_policy=args.fault_policy)


MAX_DEMO_REQUESTS = 100_000


def build_parser():
    p = _Parser(prog="vnpu", description="vnpu: a virtual inference-accelerator card")
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
    m.add_argument("--model", default="rm1", choices=("rm1", "rm2", "rm3", "resnet50", "bert"),
                   help="rm1-rm3: a DeepRecSys DLRM compiled onto the cards with the SparseNN strategy (default "
                        "rm1); resnet50, bert: the built-in model compiled onto the cards, replicated (vnpu.compile)")
    m.add_argument("--full", action="store_true", help="full-size tables (rm1: 8 x 4M rows), where memory allows")
    m.add_argument("--batch", default=None, help="batch sizes, comma separated (default 16,64,256 for the DLRM, "
                                                 "1 for resnet50 and bert)")
    m.add_argument("--requests", type=int, default=None,
                   help=f"requests per batch size (1..{MAX_DEMO_REQUESTS}; default 16, 6 for resnet50 and bert)")
    m.add_argument("--config", default=None, help="platform YAML (default: the embedded six-card platform)")
    m.add_argument("--tables", default="int8_rowwise", choices=("int8_rowwise", "int4_rowwise"),
                   help="embedding table format")
    m.add_argument("--dense", default="fp16", choices=("fp16", "int8"), help="dense layers' arithmetic")
    m.add_argument("--inject", action="append", default=[], metavar="CARD:key=value,...",
                   help="inject faults into a card, e.g. 2:pe_hang_rate=0.2,dram_dbe_per_mib=1,seed=3 (served by the "
                        "recommendation runtime's fault-tolerant executor, vnpu.runtime.serve)")
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


def one_line(message) -> str:
    """An error message as one line: a YAML error's quoted source line and its ^ marker are dropped, the
    rest joined."""
    lines = str(message).splitlines()
    keep = []
    for i, ln in enumerate(lines):
        if ln.strip() == "^":
            if keep and i > 0 and keep[-1] == lines[i - 1].strip():
                keep.pop()
            continue
        if ln.strip():
            keep.append(ln.strip())
    return " ".join(keep)


def main(argv=None):
    """Run the `vnpu` command line; returns the exit status (0, 1 on any error, 130 on Ctrl-C)."""
    where = "vnpu"
    try:
        _load_extra_commands()
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        where = f"vnpu {args.command}"
        if extra and not getattr(args, "allow_extra", False):
            raise UsageError(f"unrecognized arguments: {' '.join(extra)} (see '{where} --help')")
        return args.func(args, extra) if getattr(args, "allow_extra", False) else args.func(args)
    except VnpuError as e:
        print(f"{getattr(e, 'prog', None) or where}: error: {one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`vnpu info | head -2`): stop quietly, as Unix tools do; stdout goes to /dev/null
        # so the interpreter's flush at exit does not raise again
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    except Exception as e:  # noqa: BLE001 - last resort: a bug, said in one line rather than a traceback
        print(f"{where}: internal error: {type(e).__name__}: {one_line(e)[:300]} (a bug in vnpu; please report "
              f"it)", file=sys.stderr)
        return 1


def _load_extra_commands():
    import importlib
    for name in ("vnpu.emulator.commands", "vnpu.driver.commands", "vnpu.kernels.commands", "vnpu.bench.commands",
                 "vnpu.runtime.commands", "vnpu.sweeps", "vnpu.plot"):
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
