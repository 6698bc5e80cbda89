"""Validation: vnpu's deterministic figures against independent references, each with a bound (fidelity,
not speed). The reference data lives in `data/` (DATA):

- matrix unit: mm.mul cycles against SCALE-Sim v3 (data/scalesim_gemm.json);
- PCIe: copy times through the driver against the spec arithmetic;
- embeddings: vnpu.ops.embedding_bag against PyTorch's outputs (data/embedding_golden.*);
- peaks: library kernels never beat the card's peaks, copies never beat the link's raw rate.

`run(quick)` runs every check; `vnpu bench` prints them beside the speed figures (vnpu.bench) and exits 1
when one is outside its bound. Tests import this package, never vnpu.bench (docs/validation.md).
"""
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"

from .checks import (BOUNDS, CHECKS, MATMUL, embedding_vs_pytorch, golden_case, matrix_vs_scalesim,  # noqa: E402
                     pcie_vs_spec, peak_invariants, run, spec_copy_ns)
from .report import format_lines, format_markdown  # noqa: E402

__all__ = ["BOUNDS", "CHECKS", "DATA", "MATMUL", "embedding_vs_pytorch", "format_lines", "format_markdown",
           "golden_case", "matrix_vs_scalesim", "pcie_vs_spec", "peak_invariants", "run", "spec_copy_ns"]
