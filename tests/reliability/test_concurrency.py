"""Many host threads driving the platform at once: every result checked against numpy, no deadlock
(threads joined with a timeout), bounded time, and a card that faults (and is reset) while the others keep
working. The per-card launch counters and the per-link byte counters must add up to what the threads did
(a lost update under contention would show there).

VNPU_FUZZ_SCALE multiplies the iterations per thread.
"""
from __future__ import annotations

import collections
import os
import threading
import time

import numpy as np

import vnpu

SCALE = float(os.environ.get("VNPU_FUZZ_SCALE", "1"))
ROOT = os.path.abspath(__file__).rsplit("/tests/", 1)[0]
KERNELS = vnpu.assemble(open(ROOT + "/examples/vector_add.s").read() + open(ROOT + "/examples/fill_crash.s").read())
JOIN_SECONDS = 120.0


class Tally:
    """What the threads did, for the summary and the cross-checks (one lock: threads add to it)."""

    def __init__(self, ndev):
        self.lock = threading.Lock()
        self.c = collections.Counter()
        self.launches = [collections.Counter() for _ in range(ndev)]
        self.down = [0] * ndev          # payload bytes host->card and peer->card, per card link
        self.up = [0] * ndev
        self.errors = []

    def add(self, **kw):
        with self.lock:
            self.c.update(kw)


def _worker(platform, tally, tid, dev_index, peer_index, iters, rng_seed):
    """Copies, vadd launches, copy-backs, peer copies and fills on one card; every result checked."""
    rng = np.random.default_rng(rng_seed)
    dev = platform.devices[dev_index]
    q = dev.queue()
    mod = dev.load(KERNELS)
    vadd, fill = mod["vadd"], mod["fill"]
    peer = platform.devices[peer_index] if peer_index is not None else None
    if True:
        for it in range(iters):
            n = int(rng.integers(1, 20000))
            a = rng.standard_normal(n).astype(np.float32)
            b = rng.standard_normal(n).astype(np.float32)
            A, B, C = dev.alloc(4 * n), dev.alloc(4 * n), dev.alloc(4 * n)
            q.copy_to_device(A, a)
            q.copy_to_device(B, b)
            q.launch(vadd, A, B, C, n)
            out = q.copy_to_host(C, dtype=np.float32)
            ok = np.array_equal(out, a + b)
            value = int(rng.integers(-(1 << 62), 1 << 62))
            F = dev.alloc(8)
            q.launch(fill, F, value)
            ok &= int(q.copy_to_host(F, dtype=np.int64)[0]) == value
            with tally.lock:
                tally.launches[dev_index]["vadd"] += 1
                tally.launches[dev_index]["fill"] += 1
                tally.down[dev_index] += 8 * n
                tally.up[dev_index] += 4 * n + 8
            if peer is not None:
                P = peer.alloc(4 * n)
                pq = peer.queue()
                pq.copy_peer(P, C)                       # card to card through the switch
                back = pq.copy_to_host(P, dtype=np.float32)
                ok &= np.array_equal(back, a + b)
                with tally.lock:
                    tally.up[dev_index] += 4 * n
                    tally.down[peer_index] += 4 * n
                    tally.up[peer_index] += 4 * n
                P.free()
            for x in (A, B, C, F):
                x.free()
            if it % 4 == 0:
                q.synchronize()
            tally.add(iterations=1, launches=2, copies=5 + (2 if peer is not None else 0),
                      checked=2 + (peer is not None), wrong=0 if ok else 1)


def _faulter(platform, tally, dev_index, iters, stop):
    """Faults its card on purpose, checks the fault is sticky and typed, resets, checks the card works; at
    least `iters` times and until the bystander on the same card is done."""
    dev = platform.devices[dev_index]
    q = dev.queue()
    it = 0
    while it < iters or not stop.is_set():
        mod = dev.load(KERNELS)
        buf = dev.alloc(64)
        q.launch(mod["crash"], buf)
        time.sleep(0.002)                            # let the bystander run into the sticky fault
        for call in (q.synchronize, lambda: dev.alloc(8), lambda: q.copy_to_host(buf)):
            try:
                call()
                tally.errors.append(("faulter", "a call after the fault did not raise"))
            except vnpu.IllegalAddress as e:
                if e.card != dev_index:
                    tally.errors.append(("faulter", f"fault names card {e.card}"))
        dev.reset()
        mod = dev.load(KERNELS)
        out = dev.alloc(8)
        q.launch(mod["fill"], out, it + 1000)
        ok = int(q.copy_to_host(out, dtype=np.int64)[0]) == it + 1000
        tally.add(faults_injected=1, faults_seen=1, resets=1, checked=1, wrong=0 if ok else 1)
        it += 1
        time.sleep(0.005)                            # a window in which the card works
        if it > 100 * iters:
            tally.errors.append(("faulter", "the bystander never finished"))
            break


def _stale_handle_error(dev, gen, step, e):
    """An InvalidHandle is right only for a handle made before a reset: never from `dev.queue`, `dev.load` or
    `dev.alloc` themselves (they read the current primary context under the device lock), and only if the
    device was reset since `gen`, read before the first handle of the attempt was made. Else an error text."""
    if step.startswith("dev."):
        return f"{step} raised InvalidHandle (a call made after a reset must use the new primary context): {e}"
    if dev.generation == gen:
        return f"InvalidHandle in {step} although the card was not reset since its handles were made: {e}"
    return None


def _bystander(platform, tally, dev_index, iters, rng_seed, stop):
    """Works on the card the faulter keeps faulting and resetting: its calls may fail, but only with the
    typed errors that situation calls for (the sticky IllegalAddress; InvalidHandle for a handle made before
    a reset, never from `dev.queue` / `dev.load` / `dev.alloc` themselves), and whatever succeeds is right."""
    rng = np.random.default_rng(rng_seed)
    dev = platform.devices[dev_index]
    done, deadline = 0, time.monotonic() + 60
    seen = collections.Counter()
    try:
        while done < iters and time.monotonic() < deadline:
            gen, step = dev.generation, "dev.queue"
            try:
                q = dev.queue()
                step = "dev.load"
                mod = dev.load(KERNELS)
                n = int(rng.integers(1, 5000))
                a = rng.standard_normal(n).astype(np.float32)
                step = "dev.alloc"
                A, C = dev.alloc(4 * n), dev.alloc(4 * n)
                step = "copy, launch, copy back"
                q.copy_to_device(A, a)
                q.launch(mod["vadd"], A, A, C, n)
                out = q.copy_to_host(C, dtype=np.float32)
                tally.add(bystander_ok=1, checked=1, wrong=0 if np.array_equal(out, a + a) else 1)
                done += 1
            except vnpu.IllegalAddress as e:
                seen[type(e).__name__] += 1
                time.sleep(0.001)
            except vnpu.InvalidHandle as e:
                seen[type(e).__name__] += 1
                bad = _stale_handle_error(dev, gen, step, e)
                if bad:
                    with tally.lock:
                        tally.errors.append(("bystander", bad))
                time.sleep(0.001)
        tally.add(**{f"bystander_saw_{k}": v for k, v in seen.items()})
    finally:
        stop.set()


def run_threads(platform, plan, join_seconds=JOIN_SECONDS):
    """Start every thread of `plan` [(target, args)], join each with a timeout. A thread that raises is an
    error in the tally; returns (elapsed, names still alive, names that finished)."""
    finished = []

    def wrap(name, target, args):
        tally = args[1]
        try:
            target(*args)
        except Exception as e:  # noqa: BLE001
            with tally.lock:
                tally.errors.append((name, f"{type(e).__name__}: {e}"))
        finally:
            finished.append(name)

    threads = [threading.Thread(target=wrap, args=(f"{t.__name__[1:]}-{i}", t, a), daemon=True,
                                name=f"{t.__name__[1:]}-{i}") for i, (t, a) in enumerate(plan)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    deadline = t0 + join_seconds
    for t in threads:
        t.join(max(0.0, deadline - time.perf_counter()))
    alive = [t.name for t in threads if t.is_alive()]
    return time.perf_counter() - t0, alive, finished


def _check_counters(platform, tally, cards):
    """Per-card launch counts and per-link payload bytes equal what the threads did."""
    problems = []
    for i in cards:
        got = {k: v[0] for k, v in platform.devices[i].stats.kernels.items()}
        want = {k: v for k, v in tally.launches[i].items() if v}
        if got != want:
            problems.append(f"card {i} launches {got} != {want}")
    moved = platform.switch.bytes_moved()
    links = [k for k in moved if k != "uplink"]
    for i in cards:
        m = moved[links[i]]
        if (m["down"], m["up"]) != (tally.down[i], tally.up[i]):
            problems.append(f"card {i} link bytes down/up {m['down']}/{m['up']} != {tally.down[i]}/{tally.up[i]}")
    return problems


def concurrency_three_cards(iters):
    """9 workers (3 per card, peers on the next card) plus, on card 2, a faulter and a bystander."""
    platform = vnpu.Platform(card="tiny", cards=3)
    tally = Tally(3)
    stop = threading.Event()
    plan = []
    for tid in range(9):
        d = tid % 2                    # cards 0 and 1 carry the healthy workers ...
        peer = 1 - d if tid % 3 else None
        plan.append((_worker, (platform, tally, tid, d, peer, iters, tid)))
    plan.append((_faulter, (platform, tally, 2, max(3, iters // 4), stop)))     # ... card 2 faults and resets
    plan.append((_bystander, (platform, tally, 2, max(3, iters), 99, stop)))
    elapsed, alive, finished = run_threads(platform, plan)
    problems = [] if alive else _check_counters(platform, tally, cards=(0, 1))
    return {"threads": len(plan), "finished": len(finished), "elapsed_s": round(elapsed, 1), "alive": alive,
            "errors": tally.errors, "counter_problems": problems, **dict(tally.c)}


def test_many_threads_on_three_cards_with_one_card_faulting():
    iters = max(2, int(120 * SCALE))
    fig = concurrency_three_cards(iters)
    print(f"\n[concurrency 3 cards] threads {fig['threads']}, iterations {fig.get('iterations', 0)}, launches "
          f"{fig.get('launches', 0)}, copies {fig.get('copies', 0)}, results checked {fig.get('checked', 0)}, faults "
          f"injected/seen {fig.get('faults_injected', 0)}/{fig.get('faults_seen', 0)} (IllegalAddress), bystander "
          f"errors IllegalAddress {fig.get('bystander_saw_IllegalAddress', 0)} InvalidHandle (a handle from "
          f"before a reset) {fig.get('bystander_saw_InvalidHandle', 0)}, wrong results {fig.get('wrong', 0)}, "
          f"{fig['elapsed_s']} s")
    assert fig["alive"] == [], f"threads still running after {JOIN_SECONDS} s (deadlock?): {fig['alive']}"
    assert fig["errors"] == []
    assert fig["counter_problems"] == []
    assert fig.get("wrong", 0) == 0
    assert fig["finished"] == fig["threads"]
    assert fig["iterations"] == 9 * iters
    assert fig["faults_seen"] == fig["faults_injected"] >= max(3, iters // 4)
    assert fig.get("bystander_ok", 0) == max(3, iters), "the bystander on the faulting card did not get its work done"


def test_many_threads_on_the_default_six_card_platform():
    platform = vnpu.Platform()
    assert len(platform.devices) == 6
    tally = Tally(6)
    iters = max(2, int(40 * SCALE))
    plan = [(_worker, (platform, tally, tid, tid % 6, (tid + 1) % 6 if tid >= 6 else None, iters, 1000 + tid))
            for tid in range(12)]
    elapsed, alive, finished = run_threads(platform, plan)
    problems = [] if alive else _check_counters(platform, tally, cards=range(6))
    fig = dict(tally.c)
    print(f"\n[concurrency 6 cards] threads {len(plan)}, iterations {fig.get('iterations', 0)}, launches "
          f"{fig.get('launches', 0)}, copies {fig.get('copies', 0)}, results checked {fig.get('checked', 0)}, "
          f"faults 0, wrong results {fig.get('wrong', 0)}, {elapsed:.1f} s")
    assert alive == [], f"threads still running after {JOIN_SECONDS} s (deadlock?): {alive}"
    assert tally.errors == []
    assert problems == []
    assert fig.get("wrong", 0) == 0 and fig["iterations"] == 12 * iters and len(finished) == 12


FAULT_SETTINGS = {"seed": 3, "pcie_error_rate": 1e-3, "dram_sbe_per_mib": 4.0, "dram_dbe_per_mib": 1.5,
                  "pe_hang_rate": 0.05, "dma_error_rate": 0.03}
RECOVERABLE = (vnpu.DmaFault, vnpu.EccUncorrectable, vnpu.LaunchTimeout)


def _survivor(platform, tally, dev_index, iters, rng_seed):
    """Works on a card with injected faults (driver/faults.py), sharing it with another survivor: every
    failure must be typed (an injected fault, its sticky re-report, or InvalidHandle for a handle that a
    reset by the other thread invalidated, never from `dev.queue` / `dev.load` / `dev.alloc` themselves);
    after an injected fault it resets the card and goes on. Whatever succeeds must be right: an injected
    fault may fail a call, never change a result."""
    rng = np.random.default_rng(rng_seed)
    dev = platform.devices[dev_index]
    done, deadline = 0, time.monotonic() + 60
    seen = collections.Counter()
    while done < iters and time.monotonic() < deadline:
        gen, step = dev.generation, "dev.queue"
        try:
            q = dev.queue()
            step = "dev.load"
            mod = dev.load(KERNELS)
            n = int(rng.integers(1, 60000))
            a = rng.standard_normal(n).astype(np.float32)
            b = rng.standard_normal(n).astype(np.float32)
            step = "dev.alloc"
            A, B, C = dev.alloc(4 * n), dev.alloc(4 * n), dev.alloc(4 * n)
            step = "copies, launch, synchronize"
            q.copy_to_device(A, a)
            q.copy_to_device(B, b)
            q.launch(mod["vadd"], A, B, C, n)
            out = q.copy_to_host(C, dtype=np.float32)
            q.synchronize()
            tally.add(survivor_ok=1, checked=1, wrong=0 if np.array_equal(out, a + b) else 1)
            done += 1
        except RECOVERABLE as e:
            seen[type(e).__name__] += 1
            dev.reset()
        except vnpu.InvalidHandle as e:
            seen["InvalidHandle"] += 1
            bad = _stale_handle_error(dev, gen, step, e)
            if bad:
                with tally.lock:
                    tally.errors.append(("survivor", bad))
    tally.add(**{f"survivor_saw_{k}": v for k, v in seen.items()}, survivor_threads_done=int(done >= iters))


def test_threads_keep_working_while_one_card_has_injected_faults():
    platform = vnpu.Platform(card="tiny", cards=3)
    platform.devices[2].inject_faults(**FAULT_SETTINGS)
    tally = Tally(3)
    iters = max(2, int(60 * SCALE))
    plan = [(_worker, (platform, tally, tid, tid % 2, (1 - tid % 2) if tid % 3 else None, iters, 500 + tid))
            for tid in range(6)]
    plan += [(_survivor, (platform, tally, 2, max(5, iters // 2), 900 + k)) for k in range(2)]
    elapsed, alive, finished = run_threads(platform, plan)
    problems = [] if alive else _check_counters(platform, tally, cards=(0, 1))
    health = platform.devices[2].health()
    fig = dict(tally.c)
    injected = {k: v for k, v in health["injected"].items() if v}
    reported = {k: v for k, v in health["reported"].items() if v}
    seen = {k[len("survivor_saw_"):]: v for k, v in fig.items() if k.startswith("survivor_saw_")}
    print(f"\n[concurrency injected faults] threads {len(plan)}, iterations {fig.get('iterations', 0)} healthy + "
          f"{fig.get('survivor_ok', 0)} on the faulty card, results checked {fig.get('checked', 0)}, faults injected "
          f"{injected}, reported {reported}, seen by the threads {seen}, errors {len(tally.errors)}, "
          f"wrong results {fig.get('wrong', 0)}, {elapsed:.1f} s")
    assert alive == [], f"threads still running after {JOIN_SECONDS} s (deadlock?): {alive}"
    assert tally.errors == [] and problems == []
    assert fig.get("wrong", 0) == 0
    assert fig["iterations"] == 6 * iters and len(finished) == len(plan)
    assert fig.get("survivor_threads_done", 0) == 2, "the threads on the faulty card did not finish their work"
    # faults were injected and reported, and every uncorrectable one reached a caller as its typed error
    assert injected.get("dma_error", 0) + injected.get("dram_dbe", 0) + injected.get("pe_hang", 0) > 0
    assert injected.get("pcie_replay", 0) == health["corrected"].get("pcie_replay", 0)
    for kind, err in (("dma_error", "DmaFault"), ("dram_dbe", "EccUncorrectable"), ("pe_hang", "LaunchTimeout")):
        assert reported.get(kind, 0) <= injected.get(kind, 0)
        assert (reported.get(kind, 0) > 0) == (seen.get(err, 0) > 0), (kind, reported, seen)


def _resetter(platform, tally, dev_index, stop, max_resets=200_000):
    """Resets its card over and over, as fast as it can, until the callers are done."""
    dev = platform.devices[dev_index]
    k = 0
    while not stop.is_set() and k < max_resets:
        dev.reset()
        k += 1
        if k % 8 == 0:
            time.sleep(0)                            # let the callers in now and then
    tally.add(resets=k)


def _caller(platform, tally, dev_index, rng_seed, iters, left, stop):
    """Calls `dev.alloc`, `dev.load` and `dev.queue` `iters` times while another thread resets the card: none
    of them may fail (each reads the current primary context under the device lock). Then uses the handles
    they returned: InvalidHandle is right only if the card was reset since the handle was made. The last
    caller to finish stops the resetter."""
    rng = np.random.default_rng(rng_seed)
    dev = platform.devices[dev_index]
    try:
        for _ in range(iters):
            got = {}
            for step, fn in (("dev.alloc", lambda: dev.alloc(64)), ("dev.load", lambda: dev.load(KERNELS)),
                             ("dev.queue", dev.queue)):
                try:
                    got[step] = fn()
                    tally.add(**{step: 1})
                except Exception as e:  # noqa: BLE001 - none may fail at all
                    with tally.lock:
                        tally.errors.append((f"caller {rng_seed}", f"{step} raised {type(e).__name__}: {e}"))
            if len(got) < 3:
                continue
            buf, mod, q = got["dev.alloc"], got["dev.load"], got["dev.queue"]
            x = rng.integers(0, 256, 64, dtype=np.uint8)
            try:
                q.copy_to_device(buf, x)
                ok = np.array_equal(q.copy_to_host(buf), x)
                mod["fill"]
                buf.free()
                tally.add(used=1, checked=1, wrong=0 if ok else 1)
            except vnpu.InvalidHandle as e:
                if dev.generation == buf.generation:
                    msg = f"InvalidHandle with no reset since the handles were made: {e}"
                    with tally.lock:
                        tally.errors.append((f"caller {rng_seed}", msg))
                tally.add(stale=1)
    finally:
        with tally.lock:
            left[0] -= 1
            if left[0] == 0:
                stop.set()


def test_device_calls_made_while_another_thread_resets_never_see_a_stale_primary_context():
    """A reset replaces the device's primary context. `dev.alloc`, `dev.load` and `dev.queue` read it under
    the device lock, so a call made while another thread resets the card never fails with InvalidHandle
    (before the fix, one that read the old primary context just before a reset took the lock did). Handles
    made before a reset are invalid after it: using one then is InvalidHandle, and only then."""
    platform = vnpu.Platform(card="tiny", cards=1)
    tally = Tally(1)
    stop = threading.Event()
    iters, ncallers = max(50, int(500 * SCALE)), 2
    left = [ncallers]
    plan = [(_resetter, (platform, tally, 0, stop))]
    plan += [(_caller, (platform, tally, 0, 700 + k, iters, left, stop)) for k in range(ncallers)]
    elapsed, alive, finished = run_threads(platform, plan)
    fig = dict(tally.c)
    print(f"\n[concurrency resets vs device calls] threads {len(plan)}, resets {fig.get('resets', 0)}, calls "
          f"dev.alloc {fig.get('dev.alloc', 0)} dev.load {fig.get('dev.load', 0)} dev.queue "
          f"{fig.get('dev.queue', 0)}, errors {len(tally.errors)}, handles used {fig.get('used', 0)} + "
          f"{fig.get('stale', 0)} InvalidHandle after a reset, wrong results {fig.get('wrong', 0)}, {elapsed:.1f} s")
    for err in tally.errors[:5]:
        print("  error:", err)
    assert alive == [], f"threads still running after {JOIN_SECONDS} s (deadlock?): {alive}"
    assert tally.errors == []
    assert fig.get("wrong", 0) == 0 and len(finished) == len(plan)
    assert fig["dev.alloc"] == fig["dev.load"] == fig["dev.queue"] == ncallers * iters
    assert fig["resets"] > 0 and fig.get("used", 0) + fig.get("stale", 0) == ncallers * iters
