"""The units' entries (emulator/units.py): each compiled on its own and called by the core through its address,
so a launch compiles only what its code names; a process's first launch compiles them in a helper process
beside the core, and compiles them itself when the helper fails."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import vnpu
from vnpu.bench.emulator import VADD
from numba import types

from vnpu.emulator import dispatch, units
from vnpu.emulator.jit import jit
from vnpu.emulator.card import Card
from vnpu.isa import table as T

# vsum and vcvt: the vector unit's reduce and convert entries (a vector add needs neither)
REDUCE_CONVERT = """
.kernel k
.arg out, buffer, f32
    li   r10, 0
    li   r11, 4
    li   r12, 64
    vsum r12, r10, r11, f32, s1
    li   r13, 128
    vcvt r13, r10, r11, zero, f32, f16, s2
    wait s1, 1
    wait s2, 1
    li   r14, 4
    dma  e0, out, r12, r14, s0
    wait s0, 1
    halt
"""


def test_every_async_instruction_has_one_entry_of_its_own_unit():
    for ins in T.INSTRUCTIONS:
        slot = dispatch.UNIT_SLOT[ins.opcode]
        assert (slot >= 0) == ins.async_op, ins.mnemonic
        if ins.async_op:
            assert dispatch.ENTRIES[slot].split(".")[0] == ins.unit, ins.mnemonic
            assert dispatch.SHARED_UNIT[ins.opcode] == (ins.unit in T.SHARED_UNITS), ins.mnemonic
    assert set(units.ISSUE) == set(dispatch.ENTRIES)
    kinds = {dispatch.ENTRIES[dispatch.UNIT_SLOT[i.opcode]] for i in T.INSTRUCTIONS if i.unit == "vector"}
    assert kinds == {"vector.elementwise", "vector.reduce", "vector.convert"}


@pytest.mark.parametrize("src, want", [(VADD, {"dma", "vector.elementwise"}),
                                       (REDUCE_CONVERT, {"dma", "vector.reduce", "vector.convert"}),
                                       (".kernel k\n    li r1, 3\n    halt\n", set())])
def test_a_launch_table_holds_exactly_the_entries_its_code_names(src, want):
    table = units.entry_points(vnpu.load_module(vnpu.assemble(src)).decoded)
    assert {name for slot, name in enumerate(dispatch.ENTRIES) if table[slot] != 0} == want


def test_an_entry_missing_from_the_table_is_a_typed_fault_and_the_card_still_works(monkeypatch):
    card = Card("tiny")
    x = np.arange(64, dtype=np.float32)
    a, o = card.alloc(256), card.alloc(256)
    card.write(a, x)
    args = (a, a, o, 64)
    monkeypatch.setattr(units, "entry_points", lambda code: np.zeros(units.NENTRIES, dtype=np.int64))
    with pytest.raises(vnpu.IllegalInstruction):
        card.launch(vnpu.assemble(VADD), "vadd", args, pes=(0,))
    monkeypatch.undo()
    card.launch(vnpu.assemble(VADD), "vadd", args, pes=(0,))
    np.testing.assert_array_equal(card.read(o, 256, np.float32), 2 * x)


def test_constant_arguments_compile_for_their_plain_type():
    # numba's njit would compile `f(x, 3)` for Literal[int](3), and once more for each other constant (jit.py)
    @jit
    def f(a, b):
        return a + b

    _, _, args, _ = f.get_call_template((types.IntegerLiteral(3), types.BooleanLiteral(True)), {})
    assert args == (types.int64, types.boolean)
    assert f(2, True) == 3 and len(f.signatures) == 1     # the Python call finds that version


COLD = textwrap.dedent("""
    import json, subprocess, sys
    import numpy as np, vnpu
    from vnpu.emulator import units
    from vnpu.emulator.card import Card
    helpers, procs, fail = [], [], {fail!r}
    start = units._start_helper
    def spy(slots):
        helpers.append([units.ENTRIES[s] for s in slots])
        if len(helpers) in fail:     # a helper that dies at once: this process must compile its entries
            return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
        procs.append(start(slots))
        return procs[-1]
    units._start_helper = spy
    card = Card("tiny")
    x = np.arange(1024, dtype=np.float32)
    a, o = card.alloc(4096), card.alloc(4096)
    card.write(a, x)
    card.launch(vnpu.assemble({vadd!r}), "vadd", (a, a, o, 1024), pes=(0,))
    assert np.array_equal(card.read(o, 4096, np.float32), 2 * x)
    card.write_local(0, 0, np.array([1.5, 2.0, -4.0, 8.25], dtype=np.float32))
    card.launch(vnpu.assemble({reduce_convert!r}), "k", (o,), pes=(0,))
    assert card.read(o, 4, np.float32)[0] == np.float32(7.75)
    assert np.array_equal(card.read_local(0, 128, 8).view(np.float16), [1.5, 2.0, -4.0, 8.25])
    assert all(p.returncode == 0 for p in procs), [p.returncode for p in procs]   # the helpers did compile
    print(json.dumps(helpers))
""")


def _first_launches(cache, fail):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    env.pop("VNPU_COMPILE_HELPER", None)
    out = subprocess.run([sys.executable, "-c", COLD.format(fail=fail, vadd=VADD, reduce_convert=REDUCE_CONVERT)],
                         env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.basename(sys.executable).startswith("python"),
                    reason="the helper process is only used from a Python interpreter")
def test_a_cold_process_compiles_entries_in_a_helper_and_falls_back_when_it_fails(tmp_path):
    # empty cache: the DMA and vector-add entries compile in a helper beside the core; the next launch's two
    # new entries (reduce, convert) are split between this process and a helper that dies at once, so this
    # process compiles the helper's share too; both launches are right
    assert _first_launches(tmp_path, fail=(2,)) == [["dma", "vector.elementwise"], ["vector.convert"]]
    # a new process on the filled cache starts no helper: everything loads
    assert _first_launches(tmp_path, fail=()) == []


def _python(code, **env):
    run = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **env), capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.strip().splitlines()[-1]


def test_the_cache_is_keyed_by_the_sources_under_a_given_directory_and_old_keys_are_pruned(tmp_path):
    old, recent = tmp_path / "numba-0123456789abcdef", tmp_path / "numba-fedcba9876543210"
    for d in (old, recent):
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "f.nbi").write_bytes(b"x")
    for f in (old, old / "sub", old / "sub" / "f.nbi"):
        os.utime(f, (0, 0))
    code = "import vnpu.emulator, numba; print(numba.config.CACHE_DIR)"
    keyed = _python(code, NUMBA_CACHE_DIR=str(tmp_path))
    assert os.path.dirname(keyed) == str(tmp_path) and os.path.basename(keyed).startswith("numba-")
    assert not old.exists() and recent.exists()      # unused for years: removed; recently written: kept
    assert _python(code, NUMBA_CACHE_DIR=keyed) == keyed     # a helper given the keyed directory keeps it


def test_with_numba_disabled_the_core_calls_the_entries_as_python():
    code = ("import numpy as np, vnpu; from vnpu.emulator.card import Card; from vnpu.bench.emulator import VADD; "
            "c = Card('tiny'); x = np.arange(16, dtype=np.float32); a, o = c.alloc(64), c.alloc(64); "
            "c.write(a, x); c.launch(vnpu.assemble(VADD), 'vadd', (a, a, o, 16), pes=(0,)); "
            "print(c.read(o, 64, np.float32).tolist())")
    assert _python(code, NUMBA_DISABLE_JIT="1") == str([2.0 * i for i in range(16)])
