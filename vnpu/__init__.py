"""vnpu: a virtual inference-accelerator card."""
import os as _os

# In a source checkout the design's folders (isa/, emulator/, driver/, kernels/) sit beside this one;
# an installed wheel maps them under vnpu/. Either way `vnpu.isa` resolves.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "pyproject.toml")) and _os.path.isdir(_os.path.join(_root, "isa")):
    __path__.append(_root)  # noqa: F821 (package __path__)

from vnpu.errors import (  # noqa: E402
    AssemblerError, ConfigError, Deadlock, DeviceFault, DeviceLost, IllegalAddress, IllegalInstruction,
    DmaFault, EccUncorrectable, InvalidArgument, InvalidHandle, InvalidModule, LaunchTimeout, OutOfMemory, RaceError,
    VnpuError,
)
from vnpu.isa.asm import assemble, disassemble  # noqa: E402
from vnpu.isa.module import Module, load_module  # noqa: E402
from vnpu.isa.table import ISA_VERSION  # noqa: E402
from vnpu import ops  # noqa: E402
from vnpu.driver.platform import Platform  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "assemble", "disassemble", "load_module", "Module", "ISA_VERSION", "ops", "Platform",
    "VnpuError", "AssemblerError", "ConfigError", "InvalidModule", "InvalidArgument", "InvalidHandle",
    "OutOfMemory", "DeviceLost", "DeviceFault", "IllegalAddress", "IllegalInstruction", "Deadlock",
    "LaunchTimeout", "RaceError", "EccUncorrectable", "DmaFault",
]
