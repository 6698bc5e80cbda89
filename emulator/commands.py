"""`vnpu run`: one kernel launch on one emulated card, from the command line.

Arguments are bound by name to the kernel's signature (so a reordered signature cannot silently swap
buffers): a buffer from a .npy file or `zeros:NBYTES`, a scalar as a number. After the run it prints the
cycle count and the summary table (or JSON), and can save buffers back (`--out`) and write a Chrome trace.
"""
from __future__ import annotations

import json

import numpy as np

from vnpu.cli import _read, extra_command, make_card
from vnpu.errors import InvalidArgument, VnpuError

USAGE = ("vnpu run MODULE.vnpu --kernel NAME [--config NAME|FILE] [--set KEY=VALUE ...] "
         "[--arg NAME=FILE.npy|NAME=zeros:NBYTES|NAME=NUMBER ...] [--out NAME=FILE.npy ...] [--pes N] "
         "[--engine numba|reference] [--no-sanitize] [--trace OUT.json] [--json]")
DTYPES = {"i8": np.int8, "i32": np.int32, "f16": np.float16, "f32": np.float32, "i64": np.int64, "u8": np.uint8,
          "i16": np.int16, "u32": np.uint32}


def _pairs(items, what):
    """["a=x", "b=y"] -> {"a": "x", "b": "y"}; a malformed or repeated name is an error."""
    out = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InvalidArgument(f"{what} {item!r} must look like NAME=VALUE")
        if name in out:
            raise InvalidArgument(f"{what} {name!r} given twice")
        out[name] = value
    return out


def _load_npy(path):
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise VnpuError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    if not isinstance(arr, np.ndarray):     # an .npz archive
        raise InvalidArgument(f"{path} is not a .npy array file")
    return arr


def _bind(card, sym, given):
    """Kernel arguments in signature order, allocating and filling buffers.
    Returns (values, buffers) where buffers maps a name to (address, nbytes, shape, dtype)."""
    names = [a.name for a in sym.args]
    missing = [n for n in names if n not in given]
    unknown = [n for n in given if n not in names]
    if missing or unknown:
        parts = ([f"missing argument(s) {', '.join(missing)}"] if missing else []) + \
                ([f"unknown argument(s) {', '.join(unknown)}"] if unknown else [])
        raise InvalidArgument(f"{'; '.join(parts)}: the kernel is {sym.signature()}")
    values, buffers = [], {}
    for a in sym.args:
        text = given[a.name]
        dtype = np.dtype(DTYPES[a.dtype])
        if a.kind == "buffer":
            if text.startswith("zeros:"):
                size = text[6:].strip()
                try:
                    nbytes = int(size, 0) if len(size) <= 30 else -1
                except ValueError:
                    raise InvalidArgument(f"argument {a.name!r}: zeros:NBYTES needs an integer, got {text!r}") from None
                dram = card.config.dram.bytes
                if not 1 <= nbytes <= dram:
                    raise InvalidArgument(f"argument {a.name!r}: zeros:NBYTES needs 1..{dram} bytes (the card's "
                                          f"DRAM), got {size[:30]}")
                address = card.alloc(nbytes)    # zero-filled device memory; OutOfMemory before any host copy
                shape = (nbytes // dtype.itemsize,)
            else:
                arr = _load_npy(text)
                if arr.dtype != dtype:
                    raise InvalidArgument(f"argument {a.name!r} is {a.kind} {a.dtype} but {text} holds {arr.dtype}; "
                                          f"save it as {dtype.name}")
                if arr.nbytes == 0:
                    raise InvalidArgument(f"argument {a.name!r}: {text} holds no data")
                data, nbytes, shape = np.ascontiguousarray(arr).view(np.uint8).reshape(-1), arr.nbytes, arr.shape
                address = card.alloc(nbytes)
                card.write(address, data)
            buffers[a.name] = (address, nbytes, shape, dtype)
            values.append(address)
        else:
            try:
                if len(text) > 64:
                    raise ValueError(text)
                values.append(float(text) if a.dtype in ("f16", "f32") else int(text, 0))
            except ValueError:
                raise InvalidArgument(f"argument {a.name!r} ({a.kind} {a.dtype}) must be a number, "
                                      f"got {text!r}") from None
    return values, buffers


def cmd_run(args):
    import vnpu

    from .trace import format_summary, summarize, write_chrome_trace

    if args.module.endswith(".s"):
        image = vnpu.assemble(_read(args.module), source=args.module)
    else:
        image = _read(args.module, "rb")
    module = vnpu.load_module(image)
    sym = module.kernels.get(args.kernel)
    if sym is None:
        raise InvalidArgument(f"no kernel {args.kernel!r} in {args.module}; it has {', '.join(sorted(module.kernels))}")
    given = _pairs(args.arg, "--arg")
    outs = _pairs(args.out, "--out")
    card = make_card(args.config, args.set)
    if args.pes is not None and not 1 <= args.pes <= card.config.pes:
        raise InvalidArgument(f"--pes must be 1..{card.config.pes}, got {args.pes}")
    bad = [n for n in outs if n not in {a.name for a in sym.args if a.kind == "buffer"}]
    if bad:
        raise InvalidArgument(f"--out {', '.join(bad)}: not a buffer argument of {sym.signature()}")
    values, buffers = _bind(card, sym, given)
    pes = None if args.pes is None else range(args.pes)
    try:
        result = card.launch(module, args.kernel, values, pes=pes, engine=args.engine,
                             sanitize=not args.no_sanitize, trace=bool(args.trace))
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("vnpu.emulator"):
            raise
        raise VnpuError(f"the {args.engine} engine is not available in this build ({e.name} is missing)") from None
    summary = summarize(result)
    from .power import launch_energy
    # the launch's energy (docs/power.md): MACs priced as int8 and lane-ops as fp32 unless the kernel says
    # otherwise (the core does not count them by element type yet)
    summary["energy"] = launch_energy(result)
    summary["outputs"] = {}
    for name, path in outs.items():
        address, nbytes, shape, dtype = buffers[name]
        arr = card.read(address, nbytes - nbytes % dtype.itemsize, dtype=dtype, shape=shape)
        try:
            np.save(path, arr)
        except OSError as e:
            raise VnpuError(f"cannot write {path}: {e.strerror}") from None
        summary["outputs"][name] = {"file": path, "dtype": dtype.name, "shape": list(arr.shape)}
    if args.trace:
        write_chrome_trace(args.trace, [result.chrome_trace(card_name=f"card 0 ({card.config.name})")])
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{args.kernel}: {result.cycles} cycles")
        print(format_summary(summary))
        from .power import format_energy
        print(format_energy(summary["energy"]))
        for name, o in summary["outputs"].items():
            print(f"wrote {name} ({o['dtype']} {tuple(o['shape'])}) to {o['file']}")
        if args.trace:
            print(f"wrote trace to {args.trace} (open it in ui.perfetto.dev)")
    return 0


@extra_command
def register(sub):
    r = sub.add_parser("run", help="run one kernel on an emulated card and print its summary", usage=USAGE)
    r.add_argument("module", help="a .vnpu module (or a .s file, assembled first)")
    r.add_argument("--kernel", required=True)
    r.add_argument("--config", default="reference", help="card config: reference, tiny or a YAML file")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. matrix.rows=16")
    r.add_argument("--arg", action="append", metavar="NAME=VALUE",
                   help="a kernel argument: NAME=FILE.npy or NAME=zeros:NBYTES for a buffer, NAME=NUMBER for a scalar")
    r.add_argument("--out", action="append", metavar="NAME=FILE.npy", help="save a buffer argument after the run")
    r.add_argument("--pes", type=int, metavar="N", help="run on PEs 0..N-1 (default: every PE)")
    r.add_argument("--engine", choices=("numba", "reference"), default="numba")
    r.add_argument("--no-sanitize", action="store_true", help="skip the race sanitizer")
    r.add_argument("--trace", metavar="OUT.json", help="write a Chrome trace (Perfetto)")
    r.add_argument("--json", action="store_true", help="print the summary as JSON")
    r.set_defaults(func=cmd_run)
