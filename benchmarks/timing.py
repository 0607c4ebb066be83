"""Timing shared by the benchmark scripts (run as `python benchmarks/X.py`, so this is importable).

`timed_many` gives seconds per call of each callable: batches of calls timed in alternation over
several rounds, best batch kept. `alternate` runs blocks that time themselves (e.g. in worker
processes, as train_step.py does) in rotating alternation and keeps every measurement.
Alternating means a burst of load from elsewhere on the machine hits every contender alike instead
of ruining one of them.
"""

from __future__ import annotations

import time


def timed_many(fns: dict, budget: float = 1.5, rounds: int = 7, pause: float = 0.0) -> dict:
    """Best seconds per call of each callable. `pause` seconds before each batch let another
    contender's spinning worker threads (OpenBLAS, OpenMP) go idle first: with several threads
    they would otherwise take the cores of whoever runs next."""
    reps = {}
    for name, fn in fns.items():
        fn()
        t0 = time.perf_counter()
        fn()
        once = max(time.perf_counter() - t0, 1e-7)
        reps[name] = max(1, int(budget / len(fns) / rounds / once))
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            if pause:
                time.sleep(pause)
            t0 = time.perf_counter()
            for _ in range(reps[name]):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / reps[name])
    return best


def alternate(blocks: dict, rounds: int, pause: float = 0.0) -> dict:
    """Each callable runs one block of work and returns its measurement (e.g. seconds timed by
    the process that did the work); every contender runs once per round, the order rotating each
    round so that none is always first or last. Returns each contender's measurements, in
    order. `pause` seconds separate blocks, so one contender's spinning worker threads (OpenMP)
    have gone idle before the next starts."""
    names = list(blocks)
    out: dict = {name: [] for name in names}
    for r in range(rounds if names else 0):
        for name in names[r % len(names):] + names[:r % len(names)]:
            if pause:
                time.sleep(pause)
            out[name].append(blocks[name]())
    return out
