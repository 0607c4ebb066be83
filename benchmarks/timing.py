"""Timing shared by the benchmark scripts (run as `python benchmarks/X.py`, so this is importable).

`timed_many` gives seconds per call of each callable: batches of calls timed in alternation over
several rounds, best batch kept. Alternating means a burst of load from elsewhere on the machine
hits every contender alike instead of ruining one of them.
"""

from __future__ import annotations

import time


def timed_many(fns: dict, budget: float = 1.5, rounds: int = 7) -> dict:
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
            t0 = time.perf_counter()
            for _ in range(reps[name]):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / reps[name])
    return best
