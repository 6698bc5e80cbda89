"""`vnpu op NAME` runs every library op on random data and matches its numpy reference."""
import json

import pytest

from vnpu.cli import main
from vnpu.kernels.library import all_ops

SMALL = {"matmul": ["--m", "32", "--k", "64", "--n", "48"], "fc": ["--m", "64", "--k", "128", "--n", "96"],
         "conv2d": ["--h", "12", "--w", "12", "--c", "4", "--oc", "8"], "embedding_bag": ["--rows", "1000", "--bags", "16"],
         "dot_interaction": ["--batch", "8", "--tables", "5", "--dim", "16"],
         "conv2d_general": ["--n", "2", "--c", "8", "--h", "10", "--w", "10", "--oc", "8", "--groups", "2"]}


def test_the_library_has_the_ops_the_card_needs():
    assert {"matmul", "fc", "add", "mul", "relu", "sigmoid", "tanh", "gelu", "layer_norm", "softmax", "quantize",
            "dequantize", "concat", "transpose", "embedding_bag", "dot_interaction", "conv2d"} <= set(all_ops())


@pytest.mark.parametrize("name", sorted(all_ops()))
def test_op_command_matches_reference(name, capsys):
    assert main(["op", name, "--json", "--pes", "4", *SMALL.get(name, [])]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["matches_reference"] and r["cycles"] > 0
    assert r["pes"] == (1 if name == "embedding_bag" else 4)     # one descriptor, one PE feeds the unit
    for unit in ("pe", "matrix", "vector", "dma", "embedding"):
        assert 0 <= r["units"][unit]["utilization"] <= 1
    assert set(r["bytes"]) == {"dram_read", "dram_write", "sram_read", "sram_write"}
    assert r["roofline"]["achieved_ops_per_s"] <= r["roofline"]["peak_ops_per_s"] * 1.0001
    assert r["wall_s"] > 0 and r["max_abs_error"] >= 0


def test_op_command_errors(capsys):
    assert main(["op", "nope"]) == 1
    assert main(["op", "matmul", "--q", "3"]) == 1
    assert main(["op", "matmul", "--dtype", "int4"]) == 1
    assert "must be one of" in capsys.readouterr().err
