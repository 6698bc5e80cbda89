import subprocess
import sys

import numpy as np
import pytest

import vnpu
from vnpu.emulator.card import Card
from vnpu.emulator.config import load_config


def test_embedded_configs_load_and_mark_inferred_values():
    ref = load_config("reference")
    assert (ref.pes, ref.matrix.rows, ref.matrix.cols, ref.matrix.depth) == (12, 32, 32, 4)
    assert ref.peak_macs_per_cycle == 12 * 4096
    assert abs(ref.dram.gbps - 67.2) < 1e-9
    import importlib.resources as r
    text = r.files("vnpu.emulator").joinpath("configs", "reference.yaml").read_text()
    assert text.count("[inf]") >= 10 and text.count("[pub]") >= 6
    assert load_config("tiny").pes == 4


@pytest.mark.parametrize("overrides, message", [
    ({"matrix.rowz": 4}, "unknown config key 'matrix.rowz'"),
    ({"matrix.rows": 0}, "'matrix.rows' = 0 is out of range"),
    ({"matrix.dataflow": "is"}, "'matrix.dataflow' must be one of ws, os"),
    ({"pes": 2.5}, "'pes' must be an integer"),
    (["dram.gbps"], "must look like key=value"),
])
def test_bad_config_names_the_key(overrides, message):
    with pytest.raises(vnpu.ConfigError, match=message):
        load_config("tiny", overrides)


def test_unknown_key_in_yaml(tmp_path):
    import yaml
    data = load_config("tiny").data
    data["dma"]["burst"] = 3
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(vnpu.ConfigError, match="unknown config key 'dma.burst'"):
        load_config(str(p))
    with pytest.raises(vnpu.ConfigError, match="no card config"):
        load_config("nonexistent")


def test_overrides_from_code_and_strings():
    c = load_config("reference", {"matrix.rows": 16, "matrix.dataflow": "os"})
    assert c.matrix.rows == 16 and c.matrix.dataflow == "os"
    c = load_config("reference", ["matrix.cols=8", "matrix.depth=1"])
    assert (c.matrix.cols, c.matrix.depth) == (8, 1)


def test_reference_card_opens_fast_and_small():
    code = ("import time, resource; t=time.time(); from vnpu.emulator.card import Card; "
            "import numpy as np; t=time.time(); c=Card('reference'); dt=time.time()-t; "
            "a=c.alloc(1<<20); c.write(a, np.ones(1<<18, np.float32)); "
            "print(dt, c.memory.host_bytes)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    seconds, host_bytes = float(out[0]), int(out[1])
    assert seconds < 1.0
    assert host_bytes < 8 << 20   # a 16 GB card with 1 MiB allocated costs a few MB on the host


def test_alloc_free_and_out_of_memory():
    card = Card("tiny")
    a = card.alloc(100)
    b = card.alloc(1 << 16)
    assert b - a == 1 << 16           # page granularity
    card.write(a, np.arange(10, dtype=np.int32))
    assert list(card.read(a, 40).view(np.int32)) == list(range(10))
    with pytest.raises(vnpu.OutOfMemory) as e:
        card.alloc(card.config.dram.bytes)
    assert e.value.requested == card.config.dram.bytes and e.value.free < card.config.dram.bytes
    card.free(a)
    with pytest.raises(vnpu.IllegalAddress):
        card.read(a, 4)
    c = card.alloc(1000)
    assert c == a                     # the freed gap is reused
    with pytest.raises(vnpu.InvalidArgument):
        card.alloc(-5)
