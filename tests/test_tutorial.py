"""docs/kernel-language.md runs as written: every ```python block that follows a `<!-- run -->` line (or
`<!-- run: NAME.py -->`, which names the file the block is saved as) is executed, in order, in one namespace,
in a fresh folder, each block from its own file (so @vnpu.kernel can read its source).

The figures the blocks print are not compared (they are the card's cycles, deterministic, but a compiler
change moves them); the ```text block after a `<!-- output -->` line under a run block is what it printed
when the tutorial was last measured. Re-measure them, and see what each block prints, with

    python tests/test_tutorial.py            # print every block's output
    python tests/test_tutorial.py --update   # ... and rewrite the output blocks of the tutorial
"""
import contextlib
import io
import os
import pathlib
import re
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "kernel-language.md"
RUN = re.compile(r"^<!-- run(?::\s*(?P<name>[A-Za-z0-9_]+\.py))?\s*-->$")
OUTPUT = "<!-- output -->"


class Block:
    def __init__(self, n, name, code, line, output_span):
        self.n, self.name, self.code, self.line, self.output_span = n, name, code, line, output_span


def blocks(text):
    """The runnable blocks of the tutorial: name, code, first line, and the line span [a, b) of the body of its
    output block (None when it has none)."""
    lines = text.split("\n")
    found, i = [], 0
    while i < len(lines):
        m = RUN.match(lines[i].strip())
        i += 1
        if not m:
            continue
        while i < len(lines) and not lines[i].strip():
            i += 1
        assert i < len(lines) and lines[i].strip() == "```python", \
            f"{DOC.name}:{i + 1}: a run marker must be followed by a ```python block"
        start = i + 1
        end = start
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        assert end < len(lines), f"{DOC.name}:{start}: the python block never closes"
        code = "\n".join(lines[start:end]) + "\n"
        i = end + 1
        span = None
        j = i
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j < len(lines) and lines[j].strip() == OUTPUT:
            k = j + 1
            while k < len(lines) and not lines[k].strip():
                k += 1
            assert k < len(lines) and lines[k].strip() == "```text", \
                f"{DOC.name}:{k + 1}: an output marker must be followed by a ```text block"
            e = k + 1
            while e < len(lines) and lines[e].strip() != "```":
                e += 1
            span = (k + 1, e)
            i = e + 1
        n = len(found) + 1
        found.append(Block(n, m.group("name") or f"block{n:02d}.py", code, start + 1, span))
    return found


def run_blocks(folder, echo=None):
    """Run every block in order in one namespace, each from its own file in `folder` (the working
    directory meanwhile); returns what each printed."""
    found = blocks(DOC.read_text())
    ns = {"__name__": "__main__"}
    outputs = []
    old = os.getcwd()
    os.chdir(folder)
    try:
        for b in found:
            pathlib.Path(b.name).write_text(b.code)
            buf = io.StringIO()
            try:
                with contextlib.redirect_stdout(buf):
                    exec(compile(b.code, b.name, "exec"), ns)
            except BaseException as e:
                e.add_note(f"in the tutorial's block {b.n} ({b.name}, {DOC.name} line {b.line}); it printed:\n"
                           f"{buf.getvalue()[-3000:]}")
                raise
            outputs.append(buf.getvalue())
            if echo:
                echo(b, buf.getvalue())
    finally:
        os.chdir(old)
    return found, outputs


def test_tutorial_blocks_run_in_order(tmp_path):
    found, outputs = run_blocks(tmp_path)
    assert len(found) >= 9, "the tutorial lost its runnable blocks (marker: <!-- run --> before ```python)"
    names = [b.name for b in found]
    assert len(set(names)) == len(names), f"two blocks are saved under the same name: {names}"
    for b, out in zip(found, outputs):
        assert b.output_span is None or out.strip(), f"block {b.n} ({b.name}) has an output block but printed nothing"


def _update(found, outputs):
    lines = DOC.read_text().split("\n")
    for b, out in sorted(zip(found, outputs), key=lambda bo: -bo[0].line):
        if b.output_span is not None:
            a, e = b.output_span
            lines[a:e] = out.rstrip("\n").split("\n")
    DOC.write_text("\n".join(lines))


if __name__ == "__main__":
    def echo(b, out):
        print(f"==== block {b.n}: {b.name} ({DOC.name} line {b.line})")
        print(out, end="" if out.endswith("\n") or not out else "\n")
    with tempfile.TemporaryDirectory(prefix="vnpu-tutorial-") as d:
        found, outputs = run_blocks(d, echo)
    if "--update" in sys.argv[1:]:
        _update(found, outputs)
        print(f"updated the output blocks of {DOC}")
