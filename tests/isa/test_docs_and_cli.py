import json
import pathlib
import subprocess
import sys

import vnpu
from vnpu.cli import main
from vnpu.isa import docs

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_isa_doc_is_generated_from_the_table():
    committed = (ROOT / "docs" / "isa.md").read_text()
    assert committed == docs.render(), "docs/isa.md is stale: run python -m vnpu.isa.docs > docs/isa.md"


def test_cli_asm_disasm_info(tmp_path, capsys):
    out = tmp_path / "v.vnpu"
    assert main(["asm", str(ROOT / "examples" / "vector_add.s"), "-o", str(out)]) == 0
    assert vnpu.load_module(out.read_bytes())["vadd"]
    assert "vadd(a: buffer f32" in capsys.readouterr().out
    assert main(["disasm", str(out)]) == 0
    text = capsys.readouterr().out
    assert ".kernel vadd" in text and vnpu.assemble(text) == out.read_bytes()
    assert main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["isa_version"] == vnpu.ISA_VERSION


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    bad = tmp_path / "bad.s"
    bad.write_text(".kernel k\n  frob r1\n")
    for args in (["asm", str(bad)], ["disasm", str(bad)], ["asm", str(tmp_path / "missing.s")]):
        r = subprocess.run([sys.executable, "-m", "vnpu.cli", *args], capture_output=True, text=True)
        assert r.returncode == 1
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = subprocess.run([sys.executable, "-m", "vnpu.cli", "asm", str(bad)], capture_output=True, text=True)
    assert "bad.s:2:3: unknown instruction 'frob'" in r.stderr
