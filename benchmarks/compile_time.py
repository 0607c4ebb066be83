"""Benchmark: time from process start to the first finished training step, cold and from the
on-disk cache, and the peak RSS of training (the MLP of benchmarks/nets by default).

Each measurement is a fresh process (so no in-memory cache helps): "cold" with an empty
NETC_CACHE_DIR, "cached" with the one the cold run filled (the child reports whether the object
came from the cache, and a cold hit or a cached miss is an error). The clock starts just before
the parent starts the child (time.monotonic is system-wide), so "to first step" includes the
interpreter's start-up and `import netc`; the child also reports the parts: import, front end
(parse, build_ir, autodiff into the step graph), JIT (planning and fusion, then codegen and LLVM
or the cache load), and the first step. Then it trains `--steps` more steps and reports its own
peak resident set (ru_maxrss): the cold run's includes LLVM's compile-time peak, the cached run's
is what training from the cache costs.

Usage: python benchmarks/compile_time.py [--model PATH] [--steps N] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = r"""
import json, resource, sys, time
t0 = time.monotonic()
import numpy as np
import netc
t1 = time.monotonic()
m = netc.compile(sys.argv[1], seed=0, threads=int(sys.argv[3]))
eng, _ = m._engine("train", None)
t2 = time.monotonic()
eng.compiled("train_step")
t3 = time.monotonic()
rng = np.random.default_rng(0)
feeds = {k: (np.zeros(s, np.int32) if d == "i32" else rng.uniform(-1, 1, s).astype(np.float32))
         for k, (s, d) in {**m.inputs, **m.targets}.items()}
m.train_step(**feeds)
t4 = time.monotonic()
for _ in range(int(sys.argv[2])):
    m.train_step(**feeds)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"start": t0, "import": t1 - t0, "front": t2 - t1, "jit": t3 - t2,
                  "step": t4 - t3, "first_step_at": t4, "rss_mb": rss,
                  "hit": bool(eng.compiled_from_cache)}))
"""


def run(model: str, cache: str, steps: int, threads: int) -> dict:
    env = dict(os.environ, NETC_CACHE_DIR=cache)
    launched = time.monotonic()
    out = subprocess.run([sys.executable, "-c", CHILD, model, str(steps), str(threads)],
                         env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"the child failed:\n{out.stderr}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["to_first_step"] = r["first_step_at"] - launched
    r["startup"] = r["start"] - launched
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(HERE, "nets", "mlp_sgd.net"))
    ap.add_argument("--steps", type=int, default=50, help="training steps after the first")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        cold = run(a.model, cache, a.steps, a.threads)
        warm = run(a.model, cache, a.steps, a.threads)
    if cold["hit"] or not warm["hit"]:
        raise SystemExit(f"expected a cold miss then a cache hit, got {cold['hit']}, "
                         f"{warm['hit']}")
    print(f"model {os.path.basename(a.model)}, {a.threads} thread(s); seconds from process start")
    print(f"{'':8s} {'to step 1':>9s} {'startup':>8s} {'import':>7s} {'front':>7s} {'JIT':>7s} "
          f"{'step 1':>7s}  {'peak RSS (+' + str(a.steps) + ' steps)':>22s}")
    for name, r in (("cold", cold), ("cached", warm)):
        print(f"{name:8s} {r['to_first_step']:9.3f} {r['startup']:8.3f} {r['import']:7.3f} "
              f"{r['front']:7.3f} {r['jit']:7.3f} {r['step']:7.3f}  {r['rss_mb']:19.1f} MB")
    print("(startup: the interpreter until the child's first line; front: parse, build_ir, "
          "autodiff; JIT: planning, fusion, codegen + LLVM, or loading the cached object)")


if __name__ == "__main__":
    main()
