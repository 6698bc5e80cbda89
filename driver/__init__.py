"""vnpu.driver: the host side. Platform of cards, contexts, buffers, modules, queues, events, the PCIe link
model, and (on top) the host runtime."""
from .device import Buffer, Context, Device, Kernel, Module  # noqa: F401
from .platform import Platform  # noqa: F401
from .queue import Event, Queue  # noqa: F401
