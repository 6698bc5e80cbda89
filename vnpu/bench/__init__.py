"""`vnpu bench`: every component's speed as ratios measured in one run, and fidelity figures checked
against their bounds (docs/validation.md). Wall-clock figures are printed, never asserted."""
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


def best_of(fn, repeat):
    """The shortest wall time of `repeat` calls of fn (seconds): the least disturbed by the rest of the machine."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)
