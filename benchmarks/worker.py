"""One framework's side of train_step.py: a process that builds one case, times blocks on request.

Run by train_step.py as `python benchmarks/worker.py FRAMEWORK CASE THREADS STEPS CPUS` with the
framework's thread environment (OMP/MKL_NUM_THREADS, XLA_FLAGS) already set. It pins itself to
CPUS (comma-separated core ids) before importing anything heavy, builds the case with
`fw_<FRAMEWORK>.setup`, runs every contender's block twice untimed (compilation and warm-up), then
answers on its protocol stream, one JSON object per line:

  first:             {"ready": true, "params": N, "contenders": [...], "setup_s": s}
                     or {"error": "..."} (and exit)
  "run NAME" ->      {"wall": s, "cpu": s}   one block: wall seconds and CPU seconds (all threads)
                     of one block, timed after untimed blocks of the same contender have run
                     for WARM_S seconds (at least one): the parent pauses between blocks, and a
                     core that has idled runs the next few ms slower (clock, caches), which
                     would tax a short block more than a long one
  "quit" (or EOF) -> exit

The protocol stream is the original stdout; stdout itself is redirected to stderr so that a
library's prints cannot corrupt it.
"""

from __future__ import annotations

import json
import os
import sys
import time

WARM_S = 0.03


def main() -> None:
    fw, case_name, threads, steps, cpus = sys.argv[1:6]
    os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def send(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")

    try:
        import importlib

        from cases import CASES
        t0 = time.perf_counter()
        module = importlib.import_module(f"fw_{fw}")
        params, blocks = module.setup(CASES[case_name], int(threads), int(steps))
        for block in blocks.values():
            block()
            block()
        send({"ready": True, "params": params, "contenders": list(blocks),
              "setup_s": time.perf_counter() - t0})
    except Exception as e:  # noqa: BLE001 - reported to the parent, which prints it as a note
        send({"error": f"{type(e).__name__}: {e}"})
        return
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        block = blocks[cmd[1]]
        t0 = time.perf_counter()
        while True:
            block()
            if time.perf_counter() - t0 >= WARM_S:
                break
        c0, t0 = time.process_time(), time.perf_counter()
        block()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        send({"wall": wall, "cpu": cpu})


if __name__ == "__main__":
    main()
