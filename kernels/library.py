"""The kernel library's registry: every op `vnpu op NAME` can run and `vnpu.ops` exposes.

Each kernel family module (dense.py, elementwise.py, norm.py, interaction.py, conv.py, embedding ops)
declares OpSpec entries in a module-level list `OPS`; this registry collects them.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class OpSpec:
    name: str
    params: dict                      # parameter name -> default (ints, floats, strings): `vnpu op NAME --m 64`
    make_inputs: Callable             # (rng, params) -> dict of numpy arrays (random data of the right shapes)
    run: Callable                     # (card, inputs, params, pes) -> (outputs: list of arrays, LaunchResult)
    reference: Callable               # (inputs, params) -> outputs (list of arrays), numpy only
    tolerance: Callable = None        # (params) -> (rtol, atol); default exact
    ops_per_call: Callable = None     # (params) -> arithmetic ops (2 per MAC), for the roofline
    doc: str = ""
    choices: dict = field(default_factory=dict)   # parameter -> allowed values


FAMILIES = ("dense", "elementwise", "norm", "interaction", "conv", "convolution", "conv_transpose", "sls", "pool", "broadcast", "plumbing", "attention")


def all_ops() -> dict:
    ops = {}
    for fam in FAMILIES:
        try:
            mod = importlib.import_module(f"vnpu.kernels.{fam}")
        except ModuleNotFoundError as e:
            if e.name == f"vnpu.kernels.{fam}":
                continue
            raise
        for spec in getattr(mod, "OPS", []):
            ops[spec.name] = spec
    return ops
