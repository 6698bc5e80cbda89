"""The kernel language: tile-level Python kernels for the card (`@vnpu.kernel`). docs/kernel-language.md
teaches it; frontend.py (decorator, runs), compiler.py and lowering.py (to assembly), interpreter.py (numpy)."""
from .api import (add, anysize, barrier, constexpr, copy, embedding_bag, empty, exp, gelu, load, matmul, max,
                  maximum, minimum, move, mul, output, pe_count, pe_id, range, recip, relu, repeat, rsqrt, sigmoid,
                  split, static_range, store, sub, sum, tanh, transfer)
from .errors import KernelError
from .frontend import Compiled, Kernel, Profile, kernel, library_kernel, shared

__all__ = ["kernel", "library_kernel", "Kernel", "Compiled", "Profile", "KernelError", "shared", "constexpr",
           "anysize", "load", "store", "empty", "output", "transfer", "repeat", "move", "matmul", "add", "sub", "mul",
           "maximum", "minimum", "relu", "sigmoid", "tanh", "exp", "gelu", "recip", "rsqrt", "copy", "sum", "max",
           "embedding_bag", "pe_id", "pe_count", "split", "barrier", "range", "static_range"]
