"""vnpu: a virtual inference-accelerator card.

The package's parts are the design's folders (isa/, emulator/, driver/, kernels/, runtime/), mapped under
`vnpu` by pyproject.toml. Importing `vnpu` loads only the error classes; the rest of the public API is
imported on first use (PEP 562), so `import vnpu` is fast and `import vnpu.isa` loads neither the driver
nor yaml nor numba.
"""
from vnpu.errors import (
    AssemblerError, ConfigError, Deadlock, DeviceFault, DeviceLost, DmaFault, EccUncorrectable, IllegalAddress,
    IllegalInstruction, InvalidArgument, InvalidHandle, InvalidModule, LaunchTimeout, OutOfMemory, RaceError,
    UnsupportedOp, VnpuError,
)

__version__ = "0.1.0"

# public name -> (module, attribute); attribute None means the module itself
_LAZY = {
    "assemble": ("vnpu.isa.asm", "assemble"),
    "disassemble": ("vnpu.isa.asm", "disassemble"),
    "load_module": ("vnpu.isa.module", "load_module"),
    "Module": ("vnpu.isa.module", "Module"),
    "ISA_VERSION": ("vnpu.isa.table", "ISA_VERSION"),
    "Platform": ("vnpu.driver.platform", "Platform"),
    "compile": ("vnpu.runtime.graph.program", "compile"),
    "sweep": ("vnpu.sweeps", "sweep"),
    "Graph": ("vnpu.runtime.graph.ir", "Graph"),
    "ops": ("vnpu.ops", None),
    "testing": ("vnpu.testing", None),
    # the kernel language (docs/kernel-language.md): the decorator and what kernels call
    **{name: ("vnpu.kernels.lang", name) for name in (
        "kernel", "KernelError", "shared", "constexpr", "anysize", "load", "store", "empty", "output", "transfer",
        "repeat", "move", "matmul", "add", "sub", "mul", "maximum", "minimum", "relu", "sigmoid", "tanh", "exp",
        "gelu", "recip", "rsqrt", "copy", "sum", "max", "embedding_bag", "pe_id", "pe_count", "split", "barrier",
        "range", "static_range")},
}

__all__ = [
    "assemble", "disassemble", "load_module", "Module", "ISA_VERSION", "ops", "Platform", "testing", "kernel",
    "compile", "Graph", "UnsupportedOp", "sweep",
    "VnpuError", "AssemblerError", "ConfigError", "InvalidModule", "InvalidArgument", "InvalidHandle",
    "OutOfMemory", "DeviceLost", "DeviceFault", "IllegalAddress", "IllegalInstruction", "Deadlock",
    "LaunchTimeout", "RaceError", "EccUncorrectable", "DmaFault",
]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'vnpu' has no attribute {name!r}")
    import importlib
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
