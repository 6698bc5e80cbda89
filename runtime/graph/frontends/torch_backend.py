"""`torch.compile(model, backend="vnpu")`: TorchDynamo hands each captured graph to `vnpu_backend`, which
compiles it with vnpu.compile (through torch.export, like any module) and returns a function that runs it on
the platform's cards. Registered as the `vnpu` backend through the package's `torch_dynamo_backends` entry
point. Options: `torch.compile(m, backend="vnpu", options={"cards": 1, "dtype": "fp32", "strategy": "auto",
"allow_host": True})` (defaults shown: fp32 keeps eager's numbers; ops vnpu lacks run on the host unless
allow_host is False, when they are an UnsupportedOp error at the first call).

The last Program compiled is `vnpu_backend.last_program` (its profile and coverage).
"""
from __future__ import annotations

import numpy as np

from vnpu.errors import InvalidArgument

DEFAULTS = {"cards": 1, "dtype": "fp32", "strategy": "auto", "allow_host": True}


def vnpu_backend(gm, example_inputs, options=None, **kw):
    import torch

    from vnpu.runtime.graph.program import compile as vnpu_compile
    opts = dict(DEFAULTS)
    opts.update(options or {})
    opts.update(kw)
    unknown = set(opts) - set(DEFAULTS)
    if unknown:
        raise InvalidArgument(f"torch.compile(backend='vnpu'): unknown options {sorted(unknown)}; known: "
                              f"{sorted(DEFAULTS)}")
    real = [torch.zeros(tuple(x.shape), dtype=x.dtype) if isinstance(x, torch.Tensor) else x for x in example_inputs]
    with torch.no_grad():
        shape_of_result = gm(*real)
    program = vnpu_compile(gm, real, cards=opts["cards"], dtype=opts["dtype"], strategy=opts["strategy"],
                           allow_host=opts["allow_host"], check=False)
    vnpu_backend.last_program = program

    def run(*args):
        arrays = [a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a) for a in args]
        outs = program.run(*arrays)
        outs = outs if isinstance(outs, tuple) else (outs,)
        tensors = [torch.from_numpy(np.ascontiguousarray(o)) for o in outs]
        if isinstance(shape_of_result, torch.Tensor):
            return tensors[0]
        return type(shape_of_result)(tensors) if isinstance(shape_of_result, (list, tuple)) else tensors
    return run


vnpu_backend.last_program = None
