"""vnpu's C API: vnpu.h, built into libvnpu.so by `vnpu capi build` (build.py) over the Python driver (impl.py)."""
from .build import HEADER, build, link_flags

__all__ = ["HEADER", "build", "link_flags"]
