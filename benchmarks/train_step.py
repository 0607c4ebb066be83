"""Benchmark: one training step of netc's JIT against PyTorch (eager) and JAX jit when installed.

Cases (float32): MLP 784-512-256-10 b128 with SGD and with Adam, LeNet / LSTM / transformer
(the examples at their declared sizes; netc only unless a peer is written here), and the tiny MLP
64-32-10 b32 through the native multi-step loop `train_steps`. Each netc case runs at 1 and 2
threads. Prints one row per case: ms per step of each and the netc/peer speed ratio.

Usage: python benchmarks/train_step.py [--steps N] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, os.pardir, "examples")


def _feeds(m, rng):
    out = {}
    for name, (shape, dtype) in {**m.inputs, **m.targets}.items():
        out[name] = (rng.integers(0, 2, shape).astype(np.int32) if dtype == "i32"
                     else rng.uniform(0, 1, shape).astype(np.float32))
    return out


def _time(fn, steps: int) -> float:
    fn()
    fn()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t) / steps * 1e3


def netc_step(path: str, threads: int, steps: int, **over) -> float:
    import netc
    m = netc.compile(path, threads=threads, seed=0, **over)
    f = _feeds(m, np.random.default_rng(0))
    return _time(lambda: m.train_step(**f), steps)


def netc_loop(path: str, threads: int, steps: int, **over) -> float:
    import netc
    m = netc.compile(path, threads=threads, seed=0, **over)
    eng, _ = m._engine("train", None)
    batch = m.inputs["x"][0][0]
    rng = np.random.default_rng(0)
    n = batch * steps
    data = {"x": rng.uniform(0, 1, (n,) + m.inputs["x"][0][1:]).astype(np.float32),
            "y": rng.integers(0, 10, n).astype(np.int32)}
    index = rng.permutation(n)
    eng.train_steps(data, index[:batch * 2])
    t = time.perf_counter()
    eng.train_steps(data, index)
    return (time.perf_counter() - t) / steps * 1e3


def torch_mlp(dims: list[int], batch: int, opt: str, steps: int, threads: int) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    layers = []
    for a, b in zip(dims, dims[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers[:-1])
    o = (torch.optim.SGD(net.parameters(), lr=0.01) if opt == "sgd"
         else torch.optim.Adam(net.parameters(), lr=1e-3))
    x = torch.rand(batch, dims[0])
    y = torch.randint(0, dims[-1], (batch,))
    lossf = torch.nn.CrossEntropyLoss()

    def step():
        o.zero_grad()
        loss = lossf(net(x), y)
        loss.backward()
        o.step()
    return _time(step, steps)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", default="1,2")
    a = ap.parse_args()
    nets = os.path.join(HERE, "nets")
    rows = []
    for threads in [int(t) for t in a.threads.split(",")]:
        for opt in ("sgd", "adam"):
            ours = netc_step(os.path.join(nets, f"mlp_{opt}.net"), threads, a.steps)
            peer = torch_mlp([784, 512, 256, 10], 128, opt, a.steps, threads)
            rows.append((f"MLP 784-512-256-10 b128 {opt}", threads, ours, peer))
        tiny = netc_loop(os.path.join(nets, "mlp_sgd.net"), threads, max(a.steps, 200),
                         batch=32, d_in=64, h1=32, h2=32)
        rows.append(("tiny MLP 64-32-32-10 b32 sgd (train_steps)", threads, tiny,
                     torch_mlp([64, 32, 32, 10], 32, "sgd", a.steps * 10, threads)))
        for name in ("lenet", "lstm_classifier", "transformer_encoder"):
            ours = netc_step(os.path.join(EXAMPLES, f"{name}.net"), threads, a.steps)
            rows.append((name, threads, ours, None))
    print(f"{'case':46s} {'thr':>3s} {'netc ms':>9s} {'torch ms':>9s} {'speedup':>8s}")
    for name, thr, ours, peer in rows:
        p = f"{peer:9.3f}" if peer else f"{'n/a':>9s}"
        r = f"{peer / ours:7.2f}x" if peer else f"{'':>8s}"
        print(f"{name:46s} {thr:3d} {ours:9.3f} {p} {r}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
