"""vnpu.driver: the host side. Platform of cards, contexts, buffers, modules, queues, events, the PCIe link
model, and (on top) the host runtime."""
from .device import Device  # noqa: F401
from .handles import Buffer, Context, Event, Kernel, Module  # noqa: F401
from .platform import Platform  # noqa: F401
from .queue import Queue  # noqa: F401
