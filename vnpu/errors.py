"""One error hierarchy for everything vnpu raises on bad input or a device fault.

Names follow CUDA's driver API where one exists (CUDA_ERROR_OUT_OF_MEMORY -> OutOfMemory, ...), so a
driver engineer finds the error they expect.
"""


class VnpuError(Exception):
    """Base of every error vnpu raises on purpose."""


class ConfigError(VnpuError):
    """A card or platform configuration is invalid; the message names the key."""


class InvalidModule(VnpuError):
    """A module image failed validation; `offset` is the byte offset of the defect."""

    def __init__(self, message: str, offset: int):
        super().__init__(f"{message} (at byte offset {offset})")
        self.offset = offset


class AssemblerError(VnpuError):
    """Assembly text could not be assembled; `line` and `column` are 1-based."""

    def __init__(self, message: str, line: int, column: int, source: str = "<asm>"):
        super().__init__(f"{source}:{line}:{column}: {message}")
        self.line = line
        self.column = column


class InvalidArgument(VnpuError):
    """A call's argument has the wrong shape, dtype, size or signature."""


class UnsupportedOp(InvalidArgument):
    """A model has an op vnpu cannot run where it was asked to: `op` (its name), `source` (where it came from in
    the model) and `needs` (what would be needed) are also in the message."""

    def __init__(self, message, op="", source="", needs=""):
        super().__init__(message)
        self.op, self.source, self.needs = op, source, needs


class InvalidHandle(VnpuError):
    """A freed buffer, an unloaded module, or a handle that belongs to another card or context."""


class OutOfMemory(VnpuError):
    """An allocation does not fit; `requested` and `free` are in bytes."""

    def __init__(self, message: str, requested: int = 0, free: int = 0):
        super().__init__(message)
        self.requested = requested
        self.free = free


class DeviceLost(VnpuError):
    """The card is no longer reachable (its link is down); re-opening the platform brings it back."""


class DeviceFault(VnpuError):
    """A launch stopped on the card. Carries where: card, PE, PC, instruction text and address."""

    def __init__(self, message: str, card: int = 0, pe: int = -1, pc: int = -1,
                 instruction: str = "", address: int | None = None):
        where = f"card {card}"
        if pe >= 0:
            where += f", PE {pe}"
        if pc >= 0:
            where += f", pc {pc}"
        if instruction:
            where += f" [{instruction}]"
        if address is not None:
            where += f", address {'-' if address < 0 else ''}0x{abs(address):x}"
        super().__init__(f"{message} ({where})")
        self.card, self.pe, self.pc, self.instruction, self.address = card, pe, pc, instruction, address


class IllegalAddress(DeviceFault):
    """An access outside what the launch may touch."""


class IllegalInstruction(DeviceFault):
    """An instruction the card cannot execute (bad operand value at run time)."""


class Deadlock(DeviceFault):
    """Every PE waits on something no one can signal any more."""


class LaunchTimeout(DeviceFault):
    """The watchdog's cycle limit was reached."""


class RaceError(DeviceFault):
    """The sanitizer saw two accesses to the same bytes not ordered by a wait."""


class EccUncorrectable(DeviceFault):
    """A double-bit DRAM error in data a copy or launch read (CUDA_ERROR_ECC_UNCORRECTABLE)."""


class DmaFault(DeviceFault):
    """A DMA engine reported an error on a transfer."""


__all__ = [n for n, v in dict(globals()).items() if isinstance(v, type) and issubclass(v, VnpuError)]
