"""Moved: the recommendation runtime is `vnpu.runtime` (runtime/: model, partitioner, executor, serving).
This module re-exports its names for old imports; `python -m vnpu.driver.dlrm [batches]` still prints the
int8 bound of every preset (as `python -m vnpu.runtime.model` does)."""
from vnpu.runtime.executor import Executor, gather_module  # noqa: F401
from vnpu.runtime.model import (DLRM, PRESETS, DLRMConfig, Graph, Node, int8_score_bound, preset,  # noqa: F401
                                quantize, reference_interaction)
from vnpu.runtime.partitioner import Placement, partition, partition_graph  # noqa: F401
from vnpu.runtime.serving import serve, serve_one  # noqa: F401

if __name__ == "__main__":      # python -m vnpu.driver.dlrm [batches]
    from vnpu.runtime.model import main
    main()
