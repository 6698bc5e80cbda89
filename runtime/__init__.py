"""The recommendation runtime: a DLRM served across the platform's cards through the driver API.

- `model`: DLRM shapes (RM1-RM3), weights, the int8 quantization recipe, the numpy reference;
- `partitioner`: tables sharded across the cards by bytes, the dense part replicated;
- `executor`: one request on the cards (lookups, card-to-card copies, dense layers, interaction);
- `serving`: requests, arrivals, latency percentiles, the fault policy (reset and retry; a lost card's
  tables move).

docs/serving.md describes it; `vnpu demo` runs it.
"""
_WHERE = {"Executor": "executor", "DLRM": "model", "DLRMConfig": "model", "Graph": "model", "Node": "model",
          "PRESETS": "model", "int8_score_bound": "model", "preset": "model", "quantize": "model",
          "Placement": "partitioner", "partition": "partitioner", "partition_graph": "partitioner",
          "percentile": "serving", "serve": "serving", "serve_one": "serving"}
__all__ = sorted(_WHERE)


def __getattr__(name):
    """The parts load on first use (so `python -m vnpu.runtime.model` runs its module once)."""
    if name in _WHERE:
        import importlib
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
