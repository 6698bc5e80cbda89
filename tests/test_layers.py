"""The architecture, checked: a layer imports only the layers below it, and importing a low layer does not
load the ones above it (issue 14, item 6).

Layers, bottom up: errors < isa < emulator < driver < kernels < runtime < the front ends (vnpu.ops, the CLI,
the C API, benchmarks, validation, vnpu.testing). A part's `commands.py` is its piece of the CLI and belongs
to the front ends; so does driver/capi (the C API runs library kernels).
"""
import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
ORDER = ["errors", "isa", "emulator", "driver", "kernels", "runtime"]
FRONT = {"ops", "cli", "demo", "bench", "validation", "testing", "__main__"}


def _layer_of_file(path):
    rel = path.relative_to(ROOT)
    if path.name == "commands.py" or rel.parts[:2] == ("driver", "capi"):
        return "front"
    return rel.parts[0]


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


@pytest.mark.parametrize("part", ORDER[1:])
def test_a_part_imports_only_the_layers_below_it(part):
    folder = ROOT / part
    if not folder.is_dir():
        pytest.skip(f"{part}/ does not exist in this checkout")   # a partial checkout: nothing to check
    wrong = []
    for path in folder.rglob("*.py"):
        me = _layer_of_file(path)
        if me == "front":
            continue
        for name in _imports(path):
            if not name.startswith("vnpu."):
                continue
            target = name.split(".")[1]
            if target in FRONT or (target in ORDER and ORDER.index(target) > ORDER.index(me)):
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "imports running upward:\n" + "\n".join(wrong)


def _loaded_after(statement):
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    return set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              cwd="/").stdout.split())


def test_import_vnpu_loads_only_the_error_classes():
    mods = _loaded_after("import vnpu")
    assert not {"numba", "yaml", "vnpu.driver", "vnpu.isa", "vnpu.emulator"} & mods


def test_import_vnpu_isa_loads_neither_driver_nor_yaml_nor_numba():
    mods = _loaded_after("import vnpu.isa.table, vnpu.isa.asm, vnpu.isa.module")
    assert not {"numba", "yaml", "vnpu.driver", "vnpu.emulator", "vnpu.kernels"} & mods


def test_the_public_api_is_there_on_first_use():
    import vnpu
    assert callable(vnpu.assemble) and callable(vnpu.load_module) and vnpu.Platform.__name__ == "Platform"
    assert hasattr(vnpu.ops, "matmul") and issubclass(vnpu.RaceError, vnpu.VnpuError)
    with pytest.raises(AttributeError):
        vnpu.no_such_thing  # noqa: B018


def test_no_package_path_tricks():
    """The design's folders are parts of `vnpu` through pyproject.toml only: the repository root itself is not
    a package path (`vnpu.tests` and `vnpu.docs` must not import)."""
    import vnpu
    assert all(pathlib.Path(p).resolve() != ROOT for p in vnpu.__path__)
    for name in ("vnpu.tests", "vnpu.docs"):
        with pytest.raises(ImportError):
            __import__(name)
