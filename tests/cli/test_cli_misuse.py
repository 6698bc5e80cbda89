"""The CLI never ends in a traceback (issue 13, item 11): every misuse exits 1 with one line on stderr,
`vnpu CMD: error: ...` (argparse's usage errors included), and no 'internal error' (a bug) for the cases
listed here. Runs vnpu.cli.main in-process; a few cases also through `python -m vnpu`."""
import pathlib
import subprocess
import sys

import pytest

import vnpu
from vnpu.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[2]
VADD = ROOT / "examples" / "vector_add.s"
BIG = "9" * 400


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("misuse")
    (d / "latin1.s").write_bytes(b"; caf\xe9\n.kernel k\nhalt\n")
    (d / "empty.s").write_text("")
    (d / "comments.s").write_text("; nothing here\n\n")
    (d / "bad.s").write_text(".kernel k\n  frob r1\n")
    (d / "target.s").write_text(".kernel k\n  jmp 1000\n  halt\n")
    (d / "k.s").write_text(".kernel k\n.arg a, buffer, u8\n.arg n, scalar, i32\nhalt\n")
    (d / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    (d / "broken.yaml").write_text("a: [1\n b: 2\n")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    (d / "notmodule.vnpu").write_bytes(b"\x00" * 100)
    (d / "folder").mkdir()
    return d


def cases(d):
    k, s = str(d / "k.s"), str(d / "latin1.s")
    run = ["run", k, "--kernel", "k"]
    args = ["--arg", "a=zeros:64", "--arg", "n=1"]
    return [
        # assembler and module files
        ["asm", s], ["asm", str(d / "empty.s")], ["asm", str(d / "comments.s")], ["asm", str(d / "bad.s")],
        ["asm", str(d / "target.s")], ["asm", str(d / "missing.s")], ["asm", str(d / "folder")],
        ["asm", str(VADD), "-o", str(d / "folder")], ["asm", str(VADD), "-o", str(d / "nope" / "x.vnpu")],
        ["disasm", s], ["disasm", str(d / "notmodule.vnpu")], ["disasm", str(d / "folder")],
        ["run", s, "--kernel", "k"], ["run", str(d / "notmodule.vnpu"), "--kernel", "k"],
        # card configs and overrides
        run + ["--config", str(d / "latin1.yaml")] + args, run + ["--config", str(d / "broken.yaml")] + args,
        run + ["--config", str(d / "list.yaml")] + args, run + ["--config", str(d / "folder")] + args,
        run + ["--config", str(d / "missing.yaml")] + args, run + ["--config", "nonsense"] + args,
        run + ["--set", f"pes={BIG}"] + args, run + ["--set", "pes=-1"] + args, run + ["--set", "pes"] + args,
        run + ["--set", "=3"] + args, run + ["--set", "bogus.key=3"] + args, run + ["--set", "clock_ghz=1e999"] + args,
        run + ["--set", "pes=.nan"] + args,
        # run arguments
        run + ["--arg", "a=zeros:1000000000000000", "--arg", "n=1"], run + ["--arg", "a=zeros:-5", "--arg", "n=1"],
        run + ["--arg", "a=zeros:0", "--arg", "n=1"], run + ["--arg", f"a=zeros:{BIG}", "--arg", "n=1"],
        run + ["--arg", "a=zeros:x", "--arg", "n=1"], run + ["--arg", "a=zeros:64", "--arg", f"n={BIG}"],
        run + ["--arg", f"a={d / 'missing.npy'}", "--arg", "n=1"], run + ["--arg", f"a={d / 'folder'}", "--arg", "n=1"],
        run + ["--arg", f"a={d / 'latin1.s'}", "--arg", "n=1"], run + args + ["--pes", "0"],
        run + args + ["--pes", "-3"], run + args + ["--pes", BIG], run + args + ["--pes", "99999999999999"],
        run + args + ["--engine", "gpu"], run + args + ["--out", "n=x.npy"], run + args + ["--arg", "a=zeros:4"],
        run + ["--arg", "a"], ["run", k], ["run", k, "--kernel", "nope"] + args,
        run + args + ["--trace", str(d / "folder")], run + args + ["--out", f"a={d / 'nope' / 'a.npy'}"],
        # library ops
        ["op", "add", "--n", "-5"], ["op", "add", "--n", "0"], ["op", "add", "--n", BIG], ["op", "add", "--n", "1e3"],
        ["op", "matmul", "--k", "-1"], ["op", "matmul", "--m", "100000", "--k", "100000"],
        ["op", "embedding_bag", "--rows", "0"], ["op", "embedding_bag", "--pooling", "-1"],
        ["op", "conv2d", "--kh", "100"], ["op", "conv2d", "--stride", "0"], ["op", "quantize", "--scale", "0"],
        ["op", "quantize", "--scale", "nan"], ["op", "quantize", "--zero_point", "1000"],
        ["op", "layer_norm", "--eps", "inf"], ["op", "add", "--dtype", "int4"], ["op", "add", "--q", "3"],
        ["op", "add", "--n"], ["op", "add", "stray"], ["op", "nope"], ["op"], ["op", "add", "--pes", "0"],
        ["op", "add", "--pes", "99"], ["op", "add", "--pes", "x"], ["op", "add", "--config", str(d / "folder")],
        ["op", "add", "--config", str(d / "latin1.yaml")], ["op", "add", "--set", f"pes={BIG}"],
        ["op", "add", "--seed", "x"],
        # the demo (argument checks come before any work)
        ["demo", "--batch", "16,x"], ["demo", "--batch", ""], ["demo", "--batch", "0"], ["demo", "--batch", "-4"],
        ["demo", "--batch", "8193"], ["demo", "--batch", "99999999"], ["demo", "--batch", ",,"], ["demo", "--batch", BIG],
        ["demo", "--requests", "0"], ["demo", "--requests", "-1"], ["demo", "--requests", BIG],
        ["demo", "--requests", "x"], ["demo", "--model", "rm9"], ["demo", "--config", str(d / "folder")],
        ["demo", "--config", str(d / "latin1.yaml")], ["demo", "--config", str(d / "broken.yaml")],
        ["demo", "--config", str(d / "missing.yaml")], ["demo", "--inject", "x"], ["demo", "--inject", "9:seed=1"],
        ["demo", "--inject", f"{BIG}:seed=1"], ["demo", "--inject", f"0:seed={BIG}"],
        # info and the top level
        ["info", "--config", str(d / "folder")], ["info", "--config", str(d / "latin1.yaml")],
        ["info", "--config", str(d / "broken.yaml")], ["info", "--bogus"],
        [], ["frob"], ["--bogus"], ["asm"], ["disasm"], ["asm", str(VADD), "extra"], ["capi"], ["capi", "destroy"],
    ]


def _ids():
    d = pathlib.Path("D")
    return [" ".join(c).replace(str(d) + "/", "")[:60] or "(none)" for c in cases(d)]


@pytest.mark.parametrize("i", range(len(cases(pathlib.Path("D")))), ids=_ids())
def test_misuse_is_one_line_and_exit_1(files, capsys, i):
    argv = cases(files)[i]
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert lines[0].startswith("vnpu") and ": error: " in lines[0], err


def test_the_listed_messages(files, capsys):
    def err(argv):
        capsys.readouterr()
        assert main(argv) == 1
        return capsys.readouterr().err
    assert "latin1.s:1:6: not UTF-8" in err(["asm", str(files / "latin1.s")])
    assert "no .kernel" in err(["asm", str(files / "empty.s")])
    assert "folder" in err(["run", str(files / "k.s"), "--kernel", "k", "--config", str(files / "folder")])
    assert err(["demo", "--batch", "16,x"]).startswith("vnpu demo: error: --batch")
    assert err(["op", "add", "--n", "-5"]).startswith("vnpu op: error: add: --n must be")
    assert err(["frob"]).startswith("vnpu: error: argument command: invalid choice")
    assert err(["op"]).startswith("vnpu op: error: the following arguments are required: name")


def test_asm_writes_nothing_when_assembly_fails(files, capsys):
    out = files / "never.vnpu"
    for src in ("target.s", "bad.s", "empty.s", "latin1.s"):
        assert main(["asm", str(files / src), "-o", str(out)]) == 1
        assert not out.exists()
    old = files / "old.vnpu"
    old.write_bytes(b"keep")
    assert main(["asm", str(files / "target.s"), "-o", str(old)]) == 1
    assert old.read_bytes() == b"keep"          # a failed assembly leaves an existing file alone
    assert main(["asm", str(VADD), "-o", str(old)]) == 0
    assert vnpu.load_module(old.read_bytes())["vadd"]
    assert not [p for p in files.iterdir() if p.name.startswith(".vnpu-")]    # no temporary left behind


def test_help_still_exits_0(capsys):
    with pytest.raises(SystemExit) as e:
        main(["op", "--help"])
    assert e.value.code == 0 and "usage" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["asm", "LATIN1"], ["demo", "--batch", "16,x"], ["op", "add", "--n", "-5"],
                                  ["frob"], ["run", "K", "--kernel", "k", "--set", f"pes={BIG}"]])
def test_python_m_vnpu_has_no_traceback(files, argv):
    argv = [str(files / "latin1.s") if a == "LATIN1" else str(files / "k.s") if a == "K" else a for a in argv]
    r = subprocess.run([sys.executable, "-m", "vnpu", *argv], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_an_unexpected_exception_is_one_line_internal_error(monkeypatch, capsys):
    import vnpu.cli as cli

    def boom(args):
        raise RuntimeError("multi\nline\nfailure")
    monkeypatch.setattr(cli, "cmd_info", boom)
    assert main(["info"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: RuntimeError: multi line failure" in err


def test_space_is_zero():
    img = vnpu.assemble(".kernel k\nhalt\n.rodata\n.byte 1\n.space 3\n")
    assert vnpu.load_module(img).rodata == b"\x01\0\0\0"


def test_capi_build_into_an_impossible_folder(capsys):
    assert main(["capi", "build", "-o", "/dev/null/x"]) == 1
    assert "internal error" not in capsys.readouterr().err


def test_a_reader_that_stops_early_is_not_an_internal_error():
    """`vnpu info | head -1`: the pipe closes under the command; it stops quietly (status 141, as Unix tools
    exit on SIGPIPE), no 'internal error' and no traceback on stderr."""
    import subprocess
    import sys
    code = ("import os, sys; r, w = os.pipe(); os.close(r); os.dup2(w, 1); "
            "from vnpu.cli import main; sys.exit(main(['info']))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=False, stderr=subprocess.PIPE, text=True,
                       timeout=120)
    assert p.returncode == 141, p.stderr
    assert "internal error" not in p.stderr and "Traceback" not in p.stderr, p.stderr
