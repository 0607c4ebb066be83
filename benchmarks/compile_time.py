"""Benchmark: time to the first training step, cold (empty compile cache) and cached, and peak RSS.

Every measurement is a fresh subprocess (so no in-memory cache helps): "cold" with an empty
NETC_CACHE_DIR (nothing compiled yet: parser tables, object code), "cached" with the one the cold
run filled. Each run reports, up to the moment the first `train_step` has returned:
  - from netc.compile: wall seconds from the `netc.compile` call (the target of issue 8),
    with its parts: the front end (netc.compile returns), the JIT (the step's native code is
    ready), the first step itself;
  - from process start: wall seconds from spawning the interpreter (so `import netc` included);
  - CPU seconds of the child (user + system; much less sensitive to load from other processes);
  - peak RSS (ru_maxrss) after 50 more steps.
Runs alternate cold, cached, cold, cached... (`--repeat` pairs, each with its own fresh cache), so
a burst of load elsewhere hits both alike; the best and the median of each are printed.

Byte code: a normal installation has `.pyc` files, but PYTHONDONTWRITEBYTECODE (set on some
machines) makes every start compile netc's ~100 modules from source. By default the children use a
private, pre-warmed PYTHONPYCACHEPREFIX so both are measured as installed; `--no-pyc` measures
without byte code caching.

Usage: python benchmarks/compile_time.py [--model PATH] [--repeat N] [--no-pyc] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = r"""
import resource, sys, time
t_enter = time.time()
import numpy as np
import netc
t0 = time.perf_counter()
m = netc.compile(sys.argv[1], seed=0)
t1 = time.perf_counter()
eng, _ = m._engine("train", None)
eng.compiled("train_step")
t2 = time.perf_counter()
x = np.random.default_rng(0).random(m.inputs["x"][0], dtype=np.float32)
y = np.random.default_rng(1).integers(0, 10, m.targets["y"][0]).astype(np.int32)
m.train_step(x=x, y=y)
t3 = time.perf_counter()
t_done = time.time()
ru = resource.getrusage(resource.RUSAGE_SELF)
cpu = ru.ru_utime + ru.ru_stime
for _ in range(int(sys.argv[2])):
    m.train_step(x=x, y=y)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(repr(dict(front=t1 - t0, jit=t2 - t1, step=t3 - t2, compile_to_step=t3 - t0,
                cpu=cpu, rss=rss, hit=bool(eng.compiled_from_cache), done=t_done,
                enter=t_enter)))
"""


def run(model: str, cache: str, steps: int, pyc: str | None) -> dict:
    env = dict(os.environ, NETC_CACHE_DIR=cache)
    if pyc:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pyc
    start = time.time()
    out = subprocess.run([sys.executable, "-c", CHILD, model, str(steps)], env=env,
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"child failed:\n{out.stderr}")
    r = eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - our own child's repr of a dict
    r["from_start"] = r["done"] - start
    return r


def summary(rows: list[dict], key: str) -> str:
    vals = [r[key] for r in rows]
    return f"{min(vals):6.3f} (median {statistics.median(vals):.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.path.join(HERE, "nets", "mlp_sgd.net"))
    ap.add_argument("--repeat", type=int, default=3, help="cold/cached pairs (default 3)")
    ap.add_argument("--steps", type=int, default=50, help="steps before reading peak RSS")
    ap.add_argument("--no-pyc", action="store_true", help="children run without .pyc caching")
    ap.add_argument("--json", action="store_true", help="print every run as a JSON line too")
    a = ap.parse_args()
    cold, cached = [], []
    with tempfile.TemporaryDirectory() as tmp:
        pyc = None
        if not a.no_pyc:
            pyc = os.path.join(tmp, "pyc")
            run(a.model, os.path.join(tmp, "warm"), 0, pyc)  # writes the byte code once
        for i in range(a.repeat):
            cache = os.path.join(tmp, f"cache{i}")
            cold.append(run(a.model, cache, a.steps, pyc))
            cached.append(run(a.model, cache, a.steps, pyc))
    if any(r["hit"] for r in cold) or not all(r["hit"] for r in cached):
        raise SystemExit("unexpected cache behaviour: cold runs must miss, cached runs hit")
    if a.json:
        for kind, rows in (("cold", cold), ("cached", cached)):
            for r in rows:
                print(json.dumps(dict(r, kind=kind)))
    print(f"model {os.path.basename(a.model)}, {a.repeat} runs each, best (median); byte code "
          f"{'not cached' if a.no_pyc else 'cached'}")
    for name, rows in (("cold", cold), ("cached", cached)):
        print(f"{name:>6}: netc.compile -> first step {summary(rows, 'compile_to_step')} s  "
              f"[front end {summary(rows, 'front')}, JIT {summary(rows, 'jit')}, "
              f"step {summary(rows, 'step')}]")
        print(f"{'':>8}process start -> first step {summary(rows, 'from_start')} s, "
              f"CPU {summary(rows, 'cpu')} s, peak RSS {summary(rows, 'rss')} MB")


if __name__ == "__main__":
    main()
