"""vnpu.ops: numpy in, numpy out, computed on a virtual card — for users who do not write kernels.

Every op runs the library kernel on a card (by default one `reference` card per process, or the one given
to `vnpu.ops.use(card)`), checks its inputs on the host first (InvalidArgument naming the first bad
position; nothing reaches the card), and records a Profile: the op's cycles, time, bytes per memory level
and unit utilization, from the same run that produced the numbers.

    with vnpu.ops.profile() as prof:
        y = vnpu.ops.embedding_bag(table, idx, offsets=off)
    print(prof[-1].cycles, prof[-1].gbps)

The functions live in the kernel library (kernels/ops.py, `vnpu.kernels.ops`), where the model compiler's
lowerings call them too; this module is their public face.
"""
from vnpu.kernels.ops import *  # noqa: F401,F403
from vnpu.kernels.ops import Profile, default_card, last_profile, profile, use  # noqa: F401
