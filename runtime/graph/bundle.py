"""A compiled program in one file (`.vnpp`, a zip): the optimized graph (ops, attributes, value types), its
constants (weights, already quantized or in fp16), the placement (strategy, each op's card, each weight's
memory) and the compile options. `load_program` gives back a Program that runs without the model's framework;
the card kernels are rebuilt from each op's shapes when first launched (they are deterministic functions of
them, and cached), as Glow's runtime re-creates device functions from a saved bundle's IR.

Layout: program.json (format version, name, dtype, options, placement, values, nodes) and one .npy per
constant or array attribute under arrays/.
"""
from __future__ import annotations

import io
import json
import zipfile
import zlib

import numpy as np

from vnpu.errors import InvalidArgument

from .ir import Graph, Node, Value

FORMAT = "vnpu-program"
# what reading a damaged member of the zip raises (truncated, corrupt, an unsupported compression)
_BROKEN = (OSError, EOFError, zlib.error, NotImplementedError, zipfile.BadZipFile, RecursionError)
VERSION = 1


def save(program, path):
    """Write `program` to path. A program with a host-fallback op whose implementation is Python code of the
    user's framework cannot be saved (InvalidArgument names the op)."""
    g = program.graph
    arrays = {}

    def keep(a):
        key = f"arrays/{len(arrays)}.npy"
        arrays[key] = np.ascontiguousarray(a)
        return {"$array": key}

    def attr(v, node):
        if isinstance(v, np.ndarray):
            return keep(v)
        if isinstance(v, (np.floating, np.integer)):
            return v.item()
        if isinstance(v, (list, tuple)):
            return {"$tuple": [attr(x, node) for x in v]}
        if callable(v):
            raise InvalidArgument(f"save: {node.op} {node.name!r} ({node.source}) runs framework code on the host; "
                                  f"a program with it cannot be saved")
        return v
    values = []
    for v in g.values.values():
        d = {"name": v.name, "shape": list(v.shape), "dtype": v.dtype}
        if v.is_const:
            d["data"] = keep(v.data)
        values.append(d)
    nodes = [{"op": n.op, "inputs": n.inputs, "outputs": n.outputs, "name": n.name, "source": n.source,
              "attrs": {k: attr(v, n) for k, v in n.attrs.items()}} for n in g.nodes]
    pl = program.placement
    doc = {"format": FORMAT, "version": VERSION, "name": g.name, "dtype": program.dtype,
           "allow_host": program.allow_host, "inputs": g.inputs, "outputs": g.outputs, "values": values,
           "nodes": nodes, "placement": {"strategy": pl.strategy, "cards": pl.cards, "stage": pl.stage,
                                         "weight_memory": pl.weight_memory, "card_weight_bytes": pl.card_weight_bytes,
                                         "estimate_s": pl.estimate_s}}
    try:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            z.writestr("program.json", json.dumps(doc))
            for key, a in arrays.items():
                buf = io.BytesIO()
                np.save(buf, a, allow_pickle=False)
                z.writestr(key, buf.getvalue())
    except OSError as e:
        raise InvalidArgument(f"save: cannot write {path}: {e}") from None


def load_program(path, platform=None, cards=None, check=False):
    """The Program saved at path, on `platform` (default: a new platform with the program's card count)."""
    from .program import Placement, Program
    try:
        z = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        raise InvalidArgument(f"load_program: {path} is not a vnpu program file: {e}") from None
    with z:
        try:
            doc = json.loads(z.read("program.json"))
        except (KeyError, ValueError, *_BROKEN) as e:
            raise InvalidArgument(f"load_program: {path} has no readable program.json: {e}") from None
        if doc.get("format") != FORMAT or doc.get("version") != VERSION:
            raise InvalidArgument(f"load_program: {path} is {doc.get('format')!r} version {doc.get('version')!r}, "
                                  f"this vnpu reads {FORMAT} version {VERSION}")

        def array(ref):
            try:
                return np.load(io.BytesIO(z.read(ref["$array"])), allow_pickle=False)
            except (KeyError, ValueError, TypeError, *_BROKEN) as e:
                raise InvalidArgument(f"load_program: {path}: array {ref.get('$array')} is missing or broken: "
                                      f"{e}") from None

        def attr(v):
            if isinstance(v, dict) and "$array" in v:
                return array(v)
            if isinstance(v, dict) and "$tuple" in v:
                return tuple(attr(x) for x in v["$tuple"])
            return v
        try:
            g = Graph(doc["name"])
            for d in doc["values"]:
                g.values[d["name"]] = Value(d["name"], tuple(d["shape"]), d["dtype"],
                                            array(d["data"]) if "data" in d else None)
            g.nodes = [Node(n["op"], n["inputs"], n["outputs"], {k: attr(v) for k, v in n["attrs"].items()},
                            n["name"], n["source"]) for n in doc["nodes"]]
            g.inputs, g.outputs = doc["inputs"], doc["outputs"]
            p = doc["placement"]
            placement = Placement(p["strategy"], p["cards"], p["stage"], p["weight_memory"], p["card_weight_bytes"],
                                  p["estimate_s"])
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, RecursionError) as e:
            raise InvalidArgument(f"load_program: {path} is not a readable vnpu program: {type(e).__name__}: {e}") from None
    if platform is None:
        from vnpu.driver.platform import Platform
        platform = Platform(cards=max(placement.cards, cards or 1))
    if len(platform.devices) < placement.cards:
        raise InvalidArgument(f"load_program: the program was placed on {placement.cards} cards; the platform has "
                              f"{len(platform.devices)}")
    from .interp import run_host
    return Program(g, platform, placement, doc["dtype"], doc["allow_host"],
                   (lambda *xs: run_host(g, list(xs))) if check else None, check=check)
