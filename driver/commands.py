"""`vnpu capi build`: the driver's subcommands, registered with the one `vnpu` entry point."""
from __future__ import annotations

from vnpu.cli import extra_command


def cmd_capi(args):
    from vnpu.driver.capi import build, link_flags
    lib, header = build(args.output, cc=args.cc, verbose=args.verbose)
    print(f"built {lib}\nheader {header}\ncompile a program with: cc prog.c {link_flags(lib.parent)}")
    return 0


@extra_command
def register(sub):
    c = sub.add_parser("capi", help="build the C API (libvnpu.so and vnpu.h)")
    c.add_argument("action", choices=("build",))
    c.add_argument("-o", "--output", default="build/capi", help="directory for libvnpu.so and vnpu.h")
    c.add_argument("--cc", default=None, help="C compiler (default: $CC, then cc)")
    c.add_argument("--verbose", action="store_true", help="print the compile command")
    c.set_defaults(func=cmd_capi)
