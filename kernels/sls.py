"""The SparseLengthsSum family as library ops (`vnpu op embedding_bag ...`): see kernels/embedding.py."""
import numpy as np

from .embedding import EmbeddingArgs, run_embedding_bag
from .library import OpSpec
from .reference import embedding_bag as reference_embedding_bag


def _inputs(rng, p):
    rows, dim, bags, pool = p["rows"], p["dim"], p["bags"], p["pooling"]
    lengths = rng.integers(0, 2 * pool + 1, bags)
    return {"weight": rng.standard_normal((rows, dim)).astype(np.float32),
            "indices": rng.integers(0, rows, int(lengths.sum())).astype(np.int64 if p["index64"] else np.int32),
            "lengths": lengths}


def _run(card, x, p, pes):
    args = EmbeddingArgs(x["weight"], x["indices"], lengths=x["lengths"], mode=p["mode"], format=p["format"])
    out, result = run_embedding_bag(card, args)
    return [out], result


OPS = [OpSpec("embedding_bag", dict(rows=100000, dim=64, bags=256, pooling=80, format="int8_rowwise", mode="sum",
                                    index64=0),
              _inputs, _run,
              lambda x, p: [reference_embedding_bag(x["weight"], x["indices"], lengths=x["lengths"], mode=p["mode"],
                                                    format=p["format"])],
              None, lambda p: 2 * p["bags"] * p["pooling"] * p["dim"],
              "pooled embedding lookups (SparseLengthsSum / embedding_bag) on the card's embedding unit",
              {"format": ("fp32", "fp16", "int8_rowwise", "int8_rowwise_fp16", "int4_rowwise"),
               "mode": ("sum", "mean")})]
