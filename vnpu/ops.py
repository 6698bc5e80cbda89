"""vnpu.ops: numpy in, numpy out, computed on a virtual card, for users who do not write kernels (the
functions, their profiles and `use(card)` are documented in kernels/ops.py, where the model compiler's
lowerings call them too; this module is their public face)."""
from vnpu.kernels.ops import *  # noqa: F401,F403
from vnpu.kernels.ops import Profile, default_card, last_profile, profile, use  # noqa: F401
