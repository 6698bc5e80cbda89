#!/tmp/scalesim-venv/bin/python
"""Generate SCALE-Sim v3 reference cycle counts for GEMMs on a systolic array.

NOT imported by vnpu. Run it with the python of a separate venv that has SCALE-Sim:

    python3 -m venv /tmp/scalesim-venv
    /tmp/scalesim-venv/bin/pip install 'numpy<2.4' scalesim     # scalesim 3.0.0
    /tmp/scalesim-venv/bin/python benchmarks/gen_scalesim_reference.py \
        [-o vnpu/validation/data/scalesim_gemm.json] [--dataflows ws,os,is]

Each (array, dataflow, GEMM) point is one SCALE-Sim run in GEMM mode ("-i gemm": topology
rows "name, M, N, K," with a trailing comma), InterfaceBandwidth=CALC (estimate-bandwidth mode:
reads never stall) and 64 MiB SRAMs so the ofmap write buffer never stalls either; the script
asserts Stall Cycles == 0.  SCALE-Sim maps a GEMM to ifmap (M x K) @ filter (K x N) = ofmap
(M x N).  Reported per row (from COMPUTE_REPORT.csv):
  compute_cycles = "Total Cycles" column (memory-system cycles of the compute demand trace,
                   compute + stalls; stalls are 0 here, so pure compute)
  total_cycles   = "Total Cycles (incl. prefetch)" (adds the DRAM prefetch/drain window)
  utilization    = "Overall Util %", plus mapping_efficiency / compute_util (%)
"""
import argparse
import csv
import io
import json
import os
import sys
import tempfile
import time
from contextlib import redirect_stdout
from importlib.metadata import version

from scalesim.scale_sim import scalesim

ARRAYS = [(8, 8), (16, 16), (32, 32), (16, 8)]  # (rows, cols)
GEMMS = [  # (M, N, K)
    (64, 64, 64), (32, 32, 32), (100, 50, 70), (256, 128, 512), (1, 32, 32),
    (17, 33, 65), (128, 256, 96), (7, 300, 45), (512, 64, 1000), (33, 1, 129),
]
SRAM_KB = 65536
NOTES = (
    "GEMM mode maps ifmap=MxK, filter=KxN, ofmap=MxN. compute_cycles is exactly "
    "ceil(Sr/R)*ceil(Sc/C)*P - 1 with ws: Sr=K,Sc=N,T=M,P=2R+C+T-2; "
    "os: Sr=M,Sc=N,T=K,P=R+C+T-2; is: Sr=K,Sc=M,T=N,P=2R+C+T-2 (R=array rows, C=cols). "
    "utilization = 100*M*N*K/(compute_cycles*R*C). total_cycles ('incl. prefetch') spans the "
    "modelled DRAM prefetch/drain window and grows with SRAM size (8x8 ws 64^3: 10123 @256kB, "
    "76707 @64MB), so it is not a compute figure.")

CFG = """[general]
run_name = run

[architecture_presets]
ArrayHeight : {rows}
ArrayWidth : {cols}
IfmapSramSzkB : {sram}
FilterSramSzkB : {sram}
OfmapSramSzkB : {sram}
IfmapOffset : 0
FilterOffset : 10000000
OfmapOffset : 20000000
Dataflow : {df}
Bandwidth : 10
ReadRequestBuffer : 32
WriteRequestBuffer : 32

[layout]
IfmapCustomLayout : False
FilterCustomLayout : False
IfmapSRAMBankBandwidth : 10
IfmapSRAMBankNum : 10
IfmapSRAMBankPort : 2
FilterSRAMBankBandwidth : 10
FilterSRAMBankNum : 10
FilterSRAMBankPort : 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth : CALC
UseRamulatorTrace : False
"""


def run_one(rows, cols, df, m, n, k, workdir):
    cfg = os.path.join(workdir, "scale.cfg")
    topo = os.path.join(workdir, "gemm.csv")
    layout = os.path.join(workdir, "layout.csv")
    with open(cfg, "w") as f:
        f.write(CFG.format(rows=rows, cols=cols, df=df, sram=SRAM_KB))
    with open(topo, "w") as f:
        f.write("Layer, M, N, K,\n")
        f.write(f"gemm, {m}, {n}, {k},\n")
    with open(layout, "w") as f:  # header only: custom layouts are disabled
        f.write("Layer name,\n")
    out = os.path.join(workdir, "out")
    with redirect_stdout(io.StringIO()):
        s = scalesim(save_disk_space=True, verbose=False, config=cfg, topology=topo,
                     layout=layout, input_type_gemm=True)
        s.run_scale(top_path=out)
    with open(os.path.join(out, "run", "COMPUTE_REPORT.csv")) as f:
        rdr = csv.reader(f)
        header = [h.strip() for h in next(rdr)]
        vals = [v.strip() for v in next(rdr)]
    rep = dict(zip(header, vals))
    stall = int(float(rep["Stall Cycles"]))
    assert stall == 0, f"memory stalls for {(rows, cols, df, m, n, k)}: {stall}"
    return {
        "array_rows": rows, "array_cols": cols, "dataflow": df, "M": m, "N": n, "K": k,
        "compute_cycles": int(float(rep["Total Cycles"])),
        "total_cycles": int(float(rep["Total Cycles (incl. prefetch)"])),
        "stall_cycles": stall,
        "utilization": round(float(rep["Overall Util %"]), 4),
        "mapping_efficiency": round(float(rep["Mapping Efficiency %"]), 4),
        "compute_util": round(float(rep["Compute Util %"]), 4),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--out", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "vnpu", "bench", "data", "scalesim_gemm.json"))
    ap.add_argument("--dataflows", default="ws,os,is")
    args = ap.parse_args()
    rows_out = []
    t_all = time.time()
    for df in args.dataflows.split(","):
        for (r, c) in ARRAYS:
            for (m, n, k) in GEMMS:
                t0 = time.time()
                with tempfile.TemporaryDirectory() as wd:
                    row = run_one(r, c, df, m, n, k, wd)
                rows_out.append(row)
                print(f"{df} {r}x{c} M={m} N={n} K={k}: compute={row['compute_cycles']} "
                      f"total={row['total_cycles']} ({time.time() - t0:.1f}s)",
                      file=sys.stderr, flush=True)
    doc = {
        "tool": f"scalesim {version('scalesim')}",
        "command": ("benchmarks/gen_scalesim_reference.py (python -m venv; pip install "
                    "'numpy<2.4' scalesim): scalesim(input_type_gemm=True) per point, "
                    "topology 'name, M, N, K,', InterfaceBandwidth=CALC, "
                    f"{SRAM_KB} kB SRAMs, stall cycles asserted 0; compute_cycles = "
                    "COMPUTE_REPORT 'Total Cycles', total_cycles = 'Total Cycles (incl. prefetch)', "
                    "utilization = 'Overall Util %'"),
        "notes": NOTES,
        "rows": rows_out,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"wrote {len(rows_out)} rows to {args.out} in {time.time() - t_all:.0f}s",
          file=sys.stderr)


if __name__ == "__main__":
    main()
