"""Benchmark: one training step of netc's JIT against PyTorch eager and JAX jit, side by side.

Cases (cases.py; float32, softmax cross-entropy mean): MLP 784-512-256-10 b128 with SGD and with
Adam, LeNet-5 b64, LSTM T32 H128 b32, a Transformer encoder block b16 s64 d128 4 heads, and the
tiny MLP 64-32-10 b32 as a whole loop over a resident data set (netc's native `train_steps`).
Every framework builds the same network (parameter counts are printed and must be equal) with the
same optimizer and hyper-parameters, from the same data.

Fair threads: each (case, threads) runs one worker process per framework (worker.py) with the
thread knobs set before the framework loads: OMP/MKL_NUM_THREADS, torch.set_num_threads(T) and
one inter-op thread, netc's `threads=T`, for JAX with 1 thread XLA_FLAGS=
--xla_cpu_multi_thread_eigen=false; and each process pinned by CPU affinity (one core for 1
thread), which is also what bounds XLA's CPU thread pool. Compilation and two warm-up blocks are
excluded. The workers stay alive and run blocks of the same number of steps in rotating
alternation (timing.alternate), so load from elsewhere hits every framework alike; a row reports
the median block. Workers are stopped (SIGSTOP) except during their own blocks. A T-thread row
also alternates a netc worker pinned to one core: the speed-up targets are the median over rounds
of netc's 1-thread block over its T-thread block of the same round, not a ratio to the 1-thread
row measured minutes earlier (load from other tenants of this VM comes and goes by the minute).
"util" is the CPU time over wall time of the blocks: the cores a framework
really kept busy (on a loaded machine, less than its threads).

Output: a table (ms per step, netc's speed ratio to each peer: peer ms / netc ms, so above 1 means
netc is faster, the CPU util, and the T-thread / 1-thread speed-up per framework), then the issue's
targets as measured; or with --json a JSON array, one object per row.

Usage: python benchmarks/train_step.py [--steps N] [--rounds R] [--threads 1,2]
           [--models mlp_sgd,mlp_adam,lenet,lstm,transformer,tiny_mlp] [--peers torch,jax] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile

from cases import CASES
from timing import alternate

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "worker.py")
FRAMEWORKS = ("netc", "torch", "jax")
SAME_RUN_1THR = "@1thr"  # the tag of netc's 1-thread worker inside a T-thread row


def worker_env(fw: str, threads: int) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONUNBUFFERED="1")
    env.pop("NETC_THREADS", None)  # netc gets threads= explicitly
    if fw == "jax" and threads == 1:
        # The one XLA CPU knob this jax honours; `intra_op_parallelism_threads=1` is not an XLA
        # flag (silently ignored), and the intra-op pool is sized from the CPU affinity.
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false")
    return env


class Worker:
    """One framework's worker process for one (case, threads); see worker.py's protocol."""

    def __init__(self, fw: str, case: str, threads: int, steps: int, cpus: list[int]):
        self.fw = fw
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, WORKER, fw, case, str(threads), str(steps),
             ",".join(map(str, cpus))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
            env=worker_env(fw, threads), cwd=HERE)
        self.info: dict = {}

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.log.seek(0)
            tail = self.log.read().strip().splitlines()[-3:]
            return {"error": f"worker exited ({self.proc.returncode}): " + " | ".join(tail)}
        return json.loads(line)

    def ready(self) -> dict:
        self.info = self._read()
        return self.info

    def block(self, contender: str) -> dict:
        """One timed block; the process is stopped (SIGSTOP) except while it runs one, so no
        worker's idle threads (OpenMP or XLA spinning after their own block) take a core from
        the framework being timed."""
        self.resume()
        try:
            self.proc.stdin.write(f"run {contender}\n")
            self.proc.stdin.flush()
            out = self._read()
        finally:
            self.pause()
        if "error" in out:
            raise RuntimeError(f"{self.fw}: {out['error']}")
        return out

    def pause(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        self.resume()
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def measure(case: str, threads: int, cpus: list[int], fws: list[str], steps: int,
            rounds: int, notes: list[str]) -> dict:
    """One row: every framework's median ms per step (and util) for `case` at `threads`."""
    workers = [Worker(fw, case, threads, steps, cpus) for fw in fws]
    tags = [""] * len(workers)
    if threads > 1 and "netc" in fws:  # netc on one core, alternating with the rest of the row
        workers.append(Worker("netc", case, 1, steps, cpus[-1:]))
        tags.append(SAME_RUN_1THR)
    try:
        live = []
        for w, tag in zip(workers, tags):
            info = w.ready()
            if "error" in info:
                notes.append(f"{case} {threads} thr: {w.fw}{tag} failed: {info['error']}")
                w.close()
            else:
                live.append((w, tag))
                w.pause()  # until its first block
        blocks = {}
        for w, tag in live:
            for name in w.info["contenders"]:
                blocks[name + tag] = (lambda w=w, name=name: w.block(name))
        samples = alternate(blocks, rounds, pause=0.1)
        load = os.getloadavg()[0]
    finally:
        for w in workers:
            w.close()
    row = {"case": case, "title": CASES[case].title, "threads": threads, "cpus": cpus,
           "steps": steps, "rounds": rounds, "load": round(load, 2),
           "params": {w.fw: w.info["params"] for w, _ in live},
           "setup_s": {w.fw + tag: round(w.info["setup_s"], 2) for w, tag in live},
           "ms": {}, "util": {}}
    for name, runs in samples.items():
        row["ms"][name] = statistics.median(r["wall"] for r in runs) / steps * 1e3
        row["util"][name] = statistics.median(r["cpu"] / r["wall"] for r in runs)
        row.setdefault("blocks_ms", {})[name] = [round(r["wall"] / steps * 1e3, 4) for r in runs]
    for fw in FRAMEWORKS:  # a framework's number is its fastest contender
        mine = {n: v for n, v in row["ms"].items() if n.split("-")[0] == fw}
        if mine:
            best = min(mine, key=mine.get)
            row[f"{fw}_ms"] = mine[best]
            if best != fw:
                row[f"{fw}_variant"] = best
    for peer in ("torch", "jax"):
        if "netc_ms" in row and f"{peer}_ms" in row:
            row[f"vs_{peer}"] = row[f"{peer}_ms"] / row["netc_ms"]
    one = samples.get("netc" + SAME_RUN_1THR)
    if one and samples.get("netc"):
        # the median over rounds of the ratio of the two blocks of one round (run within about
        # a second of each other): load from elsewhere that comes and goes between rounds
        # cancels, where a ratio of medians would mix blocks of quiet and busy moments
        row["netc_scaling_same_run"] = statistics.median(
            a["wall"] / b["wall"] for a, b in zip(one, samples["netc"]))
    counts = set(row["params"].values())
    if len(counts) > 1:
        raise SystemExit(f"{case}: parameter counts differ between frameworks: {row['params']}")
    return row


def add_scaling(rows: list[dict]) -> None:
    """On each row with T > 1 threads: each framework's speed-up over its 1-thread row."""
    one = {r["case"]: r for r in rows if r["threads"] == 1}
    for r in rows:
        base = one.get(r["case"])
        if r["threads"] > 1 and base:
            r["scaling"] = {fw: base[f"{fw}_ms"] / r[f"{fw}_ms"] for fw in FRAMEWORKS
                            if f"{fw}_ms" in r and f"{fw}_ms" in base}


def _f(v: float | None, fmt: str, width: int) -> str:
    return format(v, fmt).rjust(width) if v is not None else "-".rjust(width)


def print_table(rows: list[dict]) -> None:
    head = (f"{'case':34s} {'thr':>3s} {'params':>7s} {'netc ms':>9s} {'torch ms':>9s} "
            f"{'jax ms':>9s} {'xtorch':>7s} {'xjax':>7s}  {'util n/t/j':14s} {'scale n/t/j':14s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        util = "/".join(_f(r["util"].get(fw), ".1f", 3).strip() for fw in FRAMEWORKS)
        sc = r.get("scaling", {})
        scale = "/".join(_f(sc.get(fw), ".2f", 4).strip() for fw in FRAMEWORKS) if sc else ""
        params = next(iter(r["params"].values()), None)
        print(f"{r['title']:34s} {r['threads']:3d} {_f(params, 'd', 7)} "
              f"{_f(r.get('netc_ms'), '.3f', 9)} {_f(r.get('torch_ms'), '.3f', 9)} "
              f"{_f(r.get('jax_ms'), '.3f', 9)} {_f(r.get('vs_torch'), '.2f', 7)} "
              f"{_f(r.get('vs_jax'), '.2f', 7)}  {util:14s} {scale:14s}")
    for r in rows:
        if "jax-step" in r["ms"]:
            best = ("per-step jit dispatch" if r.get("jax_variant") == "jax-step" else
                    "one jitted lax.scan over the block")
            print(f"note: {r['case']} {r['threads']} thr: jax = {best} (scan "
                  f"{r['ms']['jax']:.3f} ms, per-step dispatch {r['ms']['jax-step']:.3f} ms)")
    for r in rows:
        if "netc_scaling_same_run" in r:
            cross = r.get("scaling", {}).get("netc")
            print(f"note: {r['case']} {r['threads']} thr: netc {r['threads']}-thread speed-up "
                  f"{r['netc_scaling_same_run']:.2f} over netc on one core in the same rounds "
                  f"(median of per-round ratios; its median block "
                  f"{r['ms']['netc' + SAME_RUN_1THR]:.3f} ms)"
                  + (f"; {cross:.2f} over the 1-thread row" if cross else ""))
    loads = [r["load"] for r in rows]
    if loads:
        print(f"note: 1-minute load average during the rows: {min(loads):.2f} to {max(loads):.2f} "
              f"on {os.cpu_count()} cores (util < threads means other processes took the rest)")


# (label, case, threads, key, goal): key "vs_jax" / "vs_best" / "scaling"; goal: ratio >= goal
TARGETS = [
    ("MLP SGD 1 thr, vs JAX jit", "mlp_sgd", 1, "vs_jax", 1.0),
    ("MLP Adam 1 thr, vs JAX jit", "mlp_adam", 1, "vs_jax", 1.0),
    ("LeNet-5 1 thr, vs best peer", "lenet", 1, "vs_best", 1.0),
    ("LSTM 1 thr, vs best peer", "lstm", 1, "vs_best", 1.0),
    ("Transformer 1 thr, vs best peer", "transformer", 1, "vs_best", 1.0),
    ("tiny MLP loop 1 thr, vs JAX jit", "tiny_mlp", 1, "vs_jax", 3.0),
    ("MLP SGD 2 thr / 1 thr (netc)", "mlp_sgd", 2, "scaling", 1.7),
    ("MLP Adam 2 thr / 1 thr (netc)", "mlp_adam", 2, "scaling", 1.7),
    ("LeNet-5 2 thr / 1 thr (netc)", "lenet", 2, "scaling", 1.7),
]


def targets(rows: list[dict]) -> list[dict]:
    """The issue's targets as measured (a ratio >= goal meets it); missing data is reported."""
    by = {(r["case"], r["threads"]): r for r in rows}
    out = []
    for label, case, thr, key, goal in TARGETS:
        r = by.get((case, thr), {})
        if key == "vs_best":
            peers = [r[k] for k in ("vs_torch", "vs_jax") if k in r]
            value = min(peers) if peers else None
        elif key == "scaling":  # the same-run figure when the row has it (see measure)
            value = r.get("netc_scaling_same_run", r.get("scaling", {}).get("netc"))
        else:
            value = r.get(key)
        out.append({"target": label, "goal": goal, "value": value,
                    "met": None if value is None else value >= goal})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=None,
                    help="steps per timed block for every case (default: per case)")
    ap.add_argument("--rounds", type=int, default=7, help="timed blocks per framework")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--models", default=",".join(CASES))
    ap.add_argument("--peers", default="torch,jax")
    ap.add_argument("--core", type=int, default=None,
                    help="the core of 1-thread runs (default: the last one this process may use)")
    ap.add_argument("--json", action="store_true", help="print a JSON array, one object per row")
    a = ap.parse_args()

    notes: list[str] = []
    unknown = [m for m in a.models.split(",") if m not in CASES]
    if unknown:
        ap.error(f"unknown models {unknown}; choose from {list(CASES)}")
    fws = ["netc"]
    for peer in [p for p in a.peers.split(",") if p]:
        if peer not in FRAMEWORKS[1:]:
            ap.error(f"unknown peer {peer!r}; choose from torch, jax")
        if importlib.util.find_spec(peer) is None:
            notes.append(f"{peer} is not installed: its columns are skipped")
        else:
            fws.append(peer)
    cpus = sorted(os.sched_getaffinity(0))
    rows = []
    for threads in [int(t) for t in a.threads.split(",")]:
        if threads > len(cpus):
            notes.append(f"{threads} threads skipped: this process may use {len(cpus)} core(s)")
            continue
        use = [a.core if a.core is not None else cpus[-1]] if threads == 1 else cpus[:threads]
        for case in a.models.split(","):
            steps = a.steps or CASES[case].steps
            rows.append(measure(case, threads, use, fws, steps, a.rounds, notes))
            if not a.json:
                print(f"... {case} at {threads} thread(s) done", file=sys.stderr, flush=True)
    add_scaling(rows)
    goals = targets(rows)
    if a.json:
        print(json.dumps(rows, indent=1))
        for n in notes:
            print(f"note: {n}", file=sys.stderr)
        return
    print_table(rows)
    for n in notes:
        print(f"note: {n}")
    print("\ntargets (ratio >= goal meets it; ratios are peer ms / netc ms or 1-thr / 2-thr ms):")
    for t in goals:
        state = {None: "n/a", True: "met", False: "MISSED"}[t["met"]]
        print(f"  {t['target']:36s} goal >= {t['goal']:.2f}  measured "
              f"{_f(t['value'], '.2f', 6)}  {state}")


if __name__ == "__main__":
    main()
