#!/tmp/torch-venv/bin/python
"""Generate PyTorch golden vectors for pooled embedding lookups (EmbeddingBag).

NOT imported by vnpu. Run it with the python of a separate venv that has PyTorch (CPU):

    python3 -m venv /tmp/torch-venv
    /tmp/torch-venv/bin/pip install torch==2.13.0 numpy
    /tmp/torch-venv/bin/python benchmarks/gen_embedding_golden.py \
        [-o vnpu/validation/data/embedding_golden]      # writes <o>.npz and <o>.json

Formats and the torch call used for each:
  fp32          torch.nn.functional.embedding_bag(indices, weight, offsets, mode=...)
  fp16          same call on weight.half() (CPU fp16 embedding_bag is supported; output is
                fp16 and stored as fp32); per_sample_weights are passed as fp16 and are
                chosen to be exactly fp16-representable
  int8_rowwise  packed = torch.ops.quantized.embedding_bag_byte_prepack(weight)
                out = torch.ops.quantized.embedding_bag_byte_rowwise_offsets(packed, ...)
  int4_rowwise  packed = torch.ops.quantized.embedding_bag_4bit_prepack(weight)
                out = torch.ops.quantized.embedding_bag_4bit_rowwise_offsets(packed, ...)
                (the 4-bit prepack refuses odd dims: "only works for the number of columns a
                multiple of 2", so int4 cases use dim 34 where the others use 33)
The quantized ops take `mode` as an int but ignore it (mode=1 "mean" and mode=2 silently
return the sum on CPU), so quantized "mean" cases call mode=0 and divide each bag's sum by
max(bag_length, 1) in fp32; the case records torch_mode1_returns_sum. per_sample_weights are
used only with sum.

npz layout, case i (key prefix c{i}_): weight (fp32 source table, rows x dim), packed (uint8
prepacked table; quantized formats only), indices (int32 / int64), offsets (same dtype as
indices), per_sample_weights (fp32, only if the case has weights), out (torch output as fp32).

Prepack probes (byte-exactness of a packer): prepack_probe_{int8,int8_odd,int4}_{weight,packed}
hold fp32 tables with corner-case rows (constant rows, rows not fp16-representable, tiny
ranges, rounding ties, -0.0, mixed magnitudes) and torch's prepacked bytes.
prepack_probe_int4_overflow_{weight,packed} holds rows whose min/range overflow fp16
(bias/scale become inf/nan), kept apart so a packer may opt out of that corner.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

SEED = 20240611
Q = torch.ops.quantized
MODES = {"sum": 0, "mean": 1}

# (format, dim, rows, mode, include_last_offset, index_dtype, has_weights, n_bags, empty_bag)
CASES = [
    ("fp32", 4, 50, "sum", False, "int64", False, 5, False),
    ("fp32", 16, 200, "mean", True, "int32", False, 8, False),
    ("fp32", 33, 120, "sum", False, "int32", True, 10, False),
    ("fp32", 64, 100, "mean", False, "int64", False, 6, True),
    ("fp32", 16, 80, "sum", True, "int64", False, 7, True),
    ("fp16", 4, 60, "mean", False, "int32", False, 6, False),
    ("fp16", 33, 150, "sum", True, "int64", False, 9, False),
    ("fp16", 64, 90, "sum", False, "int64", True, 5, False),
    ("fp16", 16, 40, "mean", True, "int32", False, 4, True),
    ("int8_rowwise", 4, 30, "sum", False, "int64", False, 5, False),
    ("int8_rowwise", 16, 200, "mean", True, "int32", False, 12, False),
    ("int8_rowwise", 33, 110, "sum", False, "int32", True, 8, False),
    ("int8_rowwise", 64, 128, "mean", False, "int64", False, 6, True),
    ("int8_rowwise", 33, 70, "sum", True, "int64", False, 20, True),
    ("int8_rowwise", 16, 64, "sum", True, "int64", True, 4, False),
    ("int4_rowwise", 4, 40, "sum", False, "int32", False, 6, False),
    ("int4_rowwise", 16, 200, "mean", False, "int64", False, 10, False),
    ("int4_rowwise", 34, 100, "sum", True, "int32", False, 7, False),
    ("int4_rowwise", 64, 150, "sum", False, "int64", True, 8, False),
    ("int4_rowwise", 16, 50, "mean", True, "int32", False, 5, True),
    ("int4_rowwise", 64, 60, "sum", True, "int32", True, 6, True),
    ("int4_rowwise", 4, 20, "mean", False, "int64", False, 3, True),
]


def make_bags(rng, rows, n_bags, empty_bag):
    lengths = rng.integers(1, 31, size=n_bags)
    if empty_bag:
        lengths[rng.integers(0, n_bags)] = 0
        lengths[-1] = 0 if n_bags > 2 else lengths[-1]  # trailing empty bag too
    idx = rng.integers(0, rows, size=int(lengths.sum()))
    if idx.size >= 2:  # touch both ends of the table
        idx[0], idx[-1] = 0, rows - 1
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return idx, starts, int(lengths.sum())


def run_case(i, spec, rng):
    fmt, dim, rows, mode, ilo, idt, has_w, n_bags, empty = spec
    scale = rng.choice([0.05, 1.0, 3.0])
    weight = (rng.standard_normal((rows, dim)) * scale + rng.uniform(-1, 1)).astype(np.float32)
    idx, starts, n = make_bags(rng, rows, n_bags, empty)
    offsets = np.concatenate([starts, [n]]) if ilo else starts
    np_idt = np.int32 if idt == "int32" else np.int64
    idx, offsets = idx.astype(np_idt), offsets.astype(np_idt)
    psw = None
    if has_w:
        psw = rng.uniform(-2, 2, size=idx.size).astype(np.float32)
        if fmt == "fp16":
            psw = psw.astype(np.float16).astype(np.float32)
    t_w, t_i, t_o = torch.from_numpy(weight), torch.from_numpy(idx), torch.from_numpy(offsets)
    t_p = None if psw is None else torch.from_numpy(psw)
    rec = {"id": i, "format": fmt, "dim": dim, "rows": rows, "mode": mode,
           "include_last_offset": ilo, "index_dtype": idt, "has_weights": has_w,
           "n_bags": int(offsets.size - (1 if ilo else 0)), "n_indices": int(idx.size)}
    arrays = {"weight": weight, "indices": idx, "offsets": offsets}
    if fmt in ("fp32", "fp16"):
        w = t_w if fmt == "fp32" else t_w.half()
        p = t_p if (t_p is None or fmt == "fp32") else t_p.half()
        out = F.embedding_bag(t_i, w, t_o, mode=mode, per_sample_weights=p,
                              include_last_offset=ilo)
        assert out.dtype == w.dtype
        rec["op"] = ("torch.nn.functional.embedding_bag(indices, weight%s, offsets, mode=%r, "
                     "per_sample_weights=%s, include_last_offset=%s)"
                     % ("" if fmt == "fp32" else ".half()", mode,
                        "None" if p is None else ("psw" if fmt == "fp32" else "psw.half()"), ilo))
    else:
        if fmt == "int8_rowwise":
            prepack, lookup = Q.embedding_bag_byte_prepack, Q.embedding_bag_byte_rowwise_offsets
            pname, lname = "embedding_bag_byte_prepack", "embedding_bag_byte_rowwise_offsets"
        else:
            prepack, lookup = Q.embedding_bag_4bit_prepack, Q.embedding_bag_4bit_rowwise_offsets
            pname, lname = "embedding_bag_4bit_prepack", "embedding_bag_4bit_rowwise_offsets"
        packed = prepack(t_w)
        assert packed.dtype == torch.uint8
        out = lookup(packed, t_i, t_o, mode=0, per_sample_weights=t_p, include_last_offset=ilo)
        arrays["packed"] = packed.numpy().copy()
        rec["op"] = ("packed = torch.ops.quantized.%s(weight); out = torch.ops.quantized.%s("
                     "packed, indices, offsets, mode=0, per_sample_weights=%s, "
                     "include_last_offset=%s)"
                     % (pname, lname, "None" if t_p is None else "psw", ilo))
        if mode == "mean":
            # The quantized CPU ops ignore `mode` (mode=1 silently returns the sum; see
            # pytorch PR #106105), so mean is derived: sum / max(bag_length, 1) in fp32.
            raw = lookup(packed, t_i, t_o, mode=1, include_last_offset=ilo)
            rec["torch_mode1_returns_sum"] = bool(torch.equal(raw, out))
            ends = np.append(offsets, idx.size)[1:] if not ilo else offsets[1:]
            starts_ = offsets if not ilo else offsets[:-1]
            lens = torch.from_numpy((ends - starts_).astype(np.float32)).clamp(min=1)
            out = out / lens[:, None]
            rec["op"] += "; out = out / bag_lengths.clamp(min=1)[:, None]  (mean derived)"
    if psw is not None:
        arrays["per_sample_weights"] = psw
    arrays["out"] = out.float().numpy().copy()
    assert arrays["out"].shape == (rec["n_bags"], dim), (arrays["out"].shape, rec)
    return rec, arrays


def probe_tables(rng):
    f32 = np.float32
    int8 = [
        [0.0] * 8, [1.5] * 8, [-3.25] * 8, [0.1] * 8, [-0.0] * 8, [1e4] * 8, [-7e-5] * 8,
        [1.0, 1.0 + 1.2e-7] * 4,                              # range below FBGEMM kEpsilon
        [0.0, 1.0] * 4,                                       # two distinct values
        [0.0, 0.5, 1.5, 2.5, 3.5, 253.5, 254.5, 255.0],       # rounding ties (scale 1)
        [-0.1, 0.3, 0.7, 0.2, -0.05, 0.0, 0.9, 0.45],
        [-1000.0, 1e-3, 500.0, -3.0, 999.0, 0.25, -999.9, 7.0],
    ]
    int4 = [
        [0.0] * 8, [1.5] * 8, [-3.25] * 8,
        [0.1] * 8,                  # min not fp16-exact: range = x - fp16(x) != 0, tiny scale
        [-0.1] * 8,                 # fp16(min) > min: x - fp16(min) < 0 (clamped to 0)
        [-0.0] * 8, [1e4] * 8, [-7e-5] * 8, [3.0e-8] * 8,
        [1.0, 1.0 + 1.2e-7] * 4,    # (max - min)/15 underflows fp16 to 0 -> scale 1.0
        [0.0, 1.0] * 4,
        [0.0, 0.5, 1.5, 2.5, 13.5, 14.5, 15.0, 7.5],          # rounding ties (scale 1)
        [-0.1, 0.3, 0.7, 0.2, -0.05, 0.0, 0.9, 0.45],
        [-1000.0, 1e-3, 500.0, -3.0, 999.0, 0.25, -999.9, 7.0],
        [0.0, 1e-4, 2e-4, 3e-4, 4e-4, 5e-4, 6e-4, 1e-3],      # subnormal fp16 scale
    ]
    rnd = lambda r, c: (rng.standard_normal((r, c)) * rng.choice([1e-3, 1.0, 50.0], size=(r, 1))
                        + rng.uniform(-5, 5, size=(r, 1)))
    t8 = np.concatenate([np.array(int8, f32), rnd(20, 8).astype(f32)])
    t8odd = np.concatenate([np.array([[2.0] * 5, [0.1] * 5, [0.0, 1.0, 2.0, 3.0, 255.0]], f32),
                            rnd(10, 5).astype(f32)])
    t4 = np.concatenate([np.array(int4, f32), rnd(20, 8).astype(f32)])
    t4ovf = np.array([[7e4] * 4, [-7e4] * 4, [-6e4, 6e4, 0.0, 1.0], [1e5, 0.0, 1.0, 2.0]], f32)
    out = {}
    for name, t, op in [("int8", t8, Q.embedding_bag_byte_prepack),
                        ("int8_odd", t8odd, Q.embedding_bag_byte_prepack),
                        ("int4", t4, Q.embedding_bag_4bit_prepack),
                        ("int4_overflow", t4ovf, Q.embedding_bag_4bit_prepack)]:
        out[f"prepack_probe_{name}_weight"] = t
        out[f"prepack_probe_{name}_packed"] = op(torch.from_numpy(t)).numpy().copy()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--out", default="vnpu/validation/data/embedding_golden",
                    help="output path stem (writes .npz and .json)")
    args = ap.parse_args()
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    rng = np.random.default_rng(SEED)
    cases, arrays = [], {}
    for i, spec in enumerate(CASES):
        rec, arrs = run_case(i, spec, rng)
        cases.append(rec)
        arrays.update({f"c{i}_{k}": v for k, v in arrs.items()})
    arrays.update(probe_tables(rng))
    meta = {
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "seed": SEED,
        "command": "/tmp/torch-venv/bin/python benchmarks/gen_embedding_golden.py -o " + args.out,
        "notes": ("npz key prefix c{id}_: weight (fp32 source table), packed (uint8 prepacked "
                  "table, quantized formats only), indices, offsets (same dtype as indices), "
                  "per_sample_weights (fp32, if has_weights), out (torch output as fp32). fp16 "
                  "cases run F.embedding_bag on weight.half() (fp16 output upcast to fp32). "
                  "int4 prepack rejects odd dims, so int4 uses dim 34 instead of 33. "
                  "torch.ops.quantized.embedding_bag_*_rowwise_offsets ignore mode (mean "
                  "returns the sum), so quantized mean = torch sum / max(bag_length, 1) in fp32. "
                  "prepack_probe_{int8,int8_odd,int4,int4_overflow}_{weight,packed}: corner-case "
                  "tables and torch's prepacked bytes."),
        "cases": cases,
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    np.savez_compressed(args.out + ".npz", **arrays)
    with open(args.out + ".json", "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases, {len(arrays)} arrays -> {args.out}.npz/.json",
          file=sys.stderr)


if __name__ == "__main__":
    main()
