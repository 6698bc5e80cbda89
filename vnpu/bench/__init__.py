"""`vnpu bench`: every component's speed as ratios measured in one run (wall clock: printed, never
asserted), printed beside the fidelity figures of vnpu.validation (docs/validation.md). Tests import
vnpu.validation, not this package."""
import time


def best_of(fn, repeat):
    """The shortest wall time of `repeat` calls of fn (seconds): the least disturbed by the rest of the machine."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)
