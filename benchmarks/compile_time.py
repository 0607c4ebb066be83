"""Benchmark: cold compile, compile from the on-disk cache, and peak RSS of training the MLP.

Each measurement runs in a fresh subprocess (so the in-memory caches are empty): "cold" with an
empty NETC_CACHE_DIR, "cached" with the one the cold run filled; "rss" trains 50 steps and reports
the process's peak resident set (ru_maxrss).

Usage: python benchmarks/compile_time.py [--model PATH]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = r"""
import resource, sys, time
import numpy as np
t0 = time.perf_counter()
import netc
t1 = time.perf_counter()
m = netc.compile(sys.argv[1], seed=0)
eng, _ = m._engine("train", None)
tb = time.perf_counter()
eng.compiled("train_step")
t2 = time.perf_counter()
x = np.random.rand(*m.inputs["x"][0]).astype(np.float32)
y = np.random.randint(0, 10, m.targets["y"][0]).astype(np.int32)
for _ in range(int(sys.argv[2])):
    m.train_step(x=x, y=y)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{t1 - t0:.3f} {t2 - t1:.3f} {rss:.1f} {int(eng.compiled_from_cache)} {t2 - tb:.3f}")
"""


def run(model: str, cache: str, steps: int) -> list[float]:
    env = dict(os.environ, NETC_CACHE_DIR=cache)
    out = subprocess.run([sys.executable, "-c", CHILD, model, str(steps)], env=env,
                         capture_output=True, text=True, check=True)
    return [float(v) for v in out.stdout.split()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(HERE, "nets", "mlp_sgd.net"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        imp, cold, rss_cold, hit0, jit_cold = run(a.model, cache, 0)
        imp2, warm, rss, hit1, jit_warm = run(a.model, cache, 50)
    print(f"model {os.path.basename(a.model)}   (import netc: {imp:.2f} s)")
    print(f"cold compile (train step, empty cache): {cold:.3f} s  (JIT part {jit_cold:.3f} s)  "
          f"cache hit={bool(hit0)}")
    print(f"compile from the on-disk cache:         {warm:.3f} s  (JIT part {jit_warm:.3f} s)  "
          f"cache hit={bool(hit1)}")
    print("(the rest is the front end: parsing, build_ir, autodiff of the step graph)")
    print(f"peak RSS, compile + 50 training steps:  {rss:.1f} MB")


if __name__ == "__main__":
    main()
