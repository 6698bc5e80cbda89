"""The driver's structure: its modules import no circle (handles.py below device.py and queue.py), and no
driver module writes another object's state (a device changes only through its own methods)."""
import ast
import importlib
import pathlib
import subprocess
import sys

import pytest

DRIVER = pathlib.Path(__file__).resolve().parents[2] / "driver"
SKIP = {"dlrm.py"}            # being moved to runtime/


def driver_modules():
    return sorted(p for p in DRIVER.glob("*.py") if p.name not in SKIP)


def local_imports(path):
    """The driver modules `path` imports at any depth of its code (top level and inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                names = [node.module] if node.module else [a.name for a in node.names]
                found.update(n.split(".")[0] for n in names)
            elif node.module and node.module.startswith("vnpu.driver."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[2] for a in node.names if a.name.startswith("vnpu.driver."))
    return {n for n in found if (DRIVER / f"{n}.py").exists() and n + ".py" not in SKIP}


def test_driver_modules_import_no_circle():
    graph = {p.stem: local_imports(p) for p in driver_modules()}
    assert "device" not in graph["queue"] and "queue" in graph["device"]
    assert not graph["handles"] & {"device", "queue", "platform"}
    state = {}                                     # depth-first search for a back edge

    def visit(m, path):
        state[m] = "open"
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                pytest.fail(f"import circle: {' -> '.join(path + [n])}")
            if n not in state:
                visit(n, path + [n])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("name", ["handles", "queue", "device", "faults", "pcie", "platform"])
def test_each_driver_module_imports_alone(name):
    code = f"import importlib; importlib.import_module('vnpu.driver.{name}')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_handles_keep_their_old_import_paths():
    from vnpu.driver import handles
    for module, names in (("vnpu.driver", ("Buffer", "Context", "Event", "Kernel", "Module", "Device", "Queue")),
                          ("vnpu.driver.device", ("Buffer", "Context", "Kernel", "Module")),
                          ("vnpu.driver.queue", ("Event",))):
        m = importlib.import_module(module)
        for n in names:
            assert getattr(m, n) is getattr(handles, n, getattr(m, n)), (module, n)


# attributes that only their own class writes (a device's state, a queue's clock, the host clock)
PROTECTED = {"_lost", "_fault", "sticky", "_busy_until_ns", "busy_until_ns", "_tail_ns", "tail_ns", "_waits",
             "_queues", "contexts", "primary", "generation", "now", "_host", "last_result", "faults"}


def own(target):
    """`self` or one of self's private parts (self._host.now = ...): an object's own state."""
    if isinstance(target, ast.Attribute) and target.attr.startswith("_"):
        target = target.value
    return isinstance(target, ast.Name) and target.id == "self"


def test_no_driver_module_writes_another_objects_state():
    bad = []
    for path in driver_modules() + sorted((DRIVER / "capi").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for t in targets:
                if isinstance(t, ast.Attribute) and t.attr in PROTECTED and not own(t.value):
                    bad.append(f"{path.name}:{node.lineno}: {ast.unparse(t)}")
    assert not bad, bad


def test_every_host_side_time_formula_is_in_pcie():
    """The queue, the handles and fault injection compute no time themselves: no bandwidth, clock, setup or
    replay cost appears in them (copies: driver/pcie.py; launches: Device.book_launch)."""
    for name in ("queue.py", "handles.py", "faults.py"):
        text = (DRIVER / name).read_text()
        for word in ("gbps", "clock_ghz", "setup_ns", "REPLAY_NS *", "* REPLAY_NS", "launch_overhead_ns"):
            assert word not in text, (name, word)
