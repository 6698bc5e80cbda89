"""The examples a newcomer starts from run as they are."""
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name, expect", [("dlrm_six_cards.py", "max |card - numpy| = "),
                                          ("write_a_kernel.py", "matches numpy: True"),
                                          ("driver_tour.py", "after reset, card 0 allocates again")])
def test_example_runs(tmp_path, name, expect):
    r = subprocess.run([sys.executable, str(EXAMPLES / name)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert expect in r.stdout
    if name == "dlrm_six_cards.py":     # fp16 dense layers against the float32 numpy meaning: within their rounding
        import re
        errors = [float(e) for e in re.findall(r"max \|card - numpy\| = ([\d.e+-]+)", r.stdout)]
        assert len(errors) == 4 and max(errors) < 1e-2, errors
