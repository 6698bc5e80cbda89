"""Errors of the kernel language name the kernel's source file and line."""
from __future__ import annotations

import linecache
import os
import sys

from vnpu.errors import InvalidArgument

_LANG_DIR = os.path.dirname(os.path.abspath(__file__))


class KernelError(InvalidArgument):
    """A kernel that cannot compile or run as written: the message starts with `file.py:LINE:`."""

    def __init__(self, message, line=None):
        line = line if line is not None else source_line()
        self.where = line
        prefix = f"{line[0]}:{line[1]}: " if line else ""
        super().__init__(prefix + message)


def source_line(filename=None):
    """(file, line, text) of the innermost frame outside the language's own modules (the kernel's source)."""
    f = sys._getframe(1)
    while f is not None:
        fn = f.f_code.co_filename
        if (filename is None or fn == filename) and not os.path.abspath(fn).startswith(_LANG_DIR) \
                and not fn.startswith("<"):
            return fn, f.f_lineno, linecache.getline(fn, f.f_lineno).strip()
        if filename is not None and not os.path.abspath(fn).startswith(_LANG_DIR) and not fn.startswith("<"):
            # outside the kernel's file (a helper module the kernel calls): still a user line
            return fn, f.f_lineno, linecache.getline(fn, f.f_lineno).strip()
        f = f.f_back
    return None
