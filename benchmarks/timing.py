"""Timing shared by the benchmark scripts (run as `python benchmarks/X.py`, so this is importable).

`timed_many` gives seconds per call of each callable: batches of calls timed in alternation over
several rounds, best batch kept. `per_thread_count_rows` runs a script's `--child T` once per
thread count, with the BLAS/OpenMP thread knobs set before the peers load, and gathers the JSON
rows it prints; `load_note` says how loaded the machine was. `alternate` runs blocks that time
themselves (e.g. in worker processes, as train_step.py does) in rotating alternation and keeps
every measurement.
Alternating means a burst of load from elsewhere on the machine hits every contender alike instead
of ruining one of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def per_thread_count_rows(script: str, threads: str, extra: list[str], echo: bool) -> list[dict]:
    """Run `script --child T *extra` for each T of the comma-separated `threads`, in a fresh
    process whose peers see T threads; the JSON rows it prints (echoed as they come if `echo`)."""
    rows = []
    for t in (int(x) for x in threads.split(",")):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(t), OMP_NUM_THREADS=str(t),
                   MKL_NUM_THREADS=str(t))
        out = subprocess.run([sys.executable, script, "--child", str(t), *extra], env=env,
                             check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            rows.append(json.loads(line))
            if echo:
                print(line, flush=True)
    return rows


def load_note(before: float) -> str:
    return (f"load average (1 min) before {before:.2f}, after {os.getloadavg()[0]:.2f} on "
            f"{os.cpu_count()} CPUs: other processes make 2-thread numbers noisy")
