"""Hand-built forward graphs for the train-stage tests (what build_ir will produce from `.net`)."""

from __future__ import annotations

import numpy as np

from netc.compiler.errors import SourceLoc
from netc.compiler.ir import Graph, TensorType
from netc.compiler.ops import composites as C

LOC = SourceLoc("t.net", 1, 1)


def dense(g: Graph, x, name: str, n_in: int, n_out: int, act: bool = True, frozen: bool = False):
    dt = g.float_dtype
    w = g.param(f"{name}.W", TensorType((n_in, n_out), dt), LOC, ("glorot_uniform", {}), frozen)
    b = g.param(f"{name}.b", TensorType((n_out,), dt), LOC, ("normal", {"std": 0.1}), frozen)
    h = g.add("add", [g.add("matmul", [x, w], None, LOC), b], None, LOC)
    return g.add("relu", [h], None, LOC) if act else h


def mlp(dtype: str = "f64", *, batch: int = 4, n_in: int = 3, hidden: int = 5, classes: int = 3,
        mode: str = "train", dropout: float = 0.0, frozen_fc1: bool = False,
        with_state: bool = False) -> Graph:
    """x -> Dense(hidden) as fc1 -> relu [-> dropout] -> Dense(classes) as fc2; cross entropy.
    With `with_state`: a running mean of the hidden activations, `ema <- 0.5 ema + 0.5 mean(h)`."""
    g = Graph("mlp", float_dtype=dtype, mode=mode)
    x = g.input("x", TensorType((batch, n_in), dtype), LOC)
    y = g.input("y", TensorType((batch,), "i32"), LOC, role="target")
    h = dense(g, x, "fc1", n_in, hidden, frozen=frozen_fc1)
    if dropout:
        h = C.dropout(g, h, dropout, LOC)
    logits = dense(g, h, "fc2", hidden, classes, act=False)
    g.outputs["probs"] = C.softmax(g, logits, -1, LOC)
    g.losses["loss"] = C.cross_entropy(g, logits, y, LOC)
    if with_state:
        s = g.state("ema", TensorType((hidden,), dtype), LOC)
        half = g.const(0.5, dtype, LOC)
        new = g.add("add", [g.add("mul", [s, half], None, LOC),
                            g.add("mul", [C.mean(g, h, 0, False, LOC), half], None, LOC)],
                    None, LOC)
        if mode == "train":
            g.updates["ema"] = new
        g.outputs["ema_out"] = g.add("add", [s, g.const(0.0, dtype, LOC)], None, LOC)
    return g


def gan(dtype: str = "f64", *, batch: int = 4, z_dim: int = 2, n: int = 3) -> Graph:
    """G: z -> Dense(n) as gen; D: Dense(1) as disc on real x and on G(z).
    d_loss = bce(D(x), 1) + bce(D(G(z)), 0); g_loss = bce(D(G(z)), 1)."""
    g = Graph("gan", float_dtype=dtype, mode="train")
    x = g.input("x", TensorType((batch, n), dtype), LOC)
    z = g.input("z", TensorType((batch, z_dim), dtype), LOC)
    fake = dense(g, z, "gen", z_dim, n, act=False)
    w = g.param("disc.W", TensorType((n, 1), dtype), LOC)
    b = g.param("disc.b", TensorType((1,), dtype), LOC, ("zeros", {}))

    def disc(v):
        return g.add("add", [g.add("matmul", [v, w], None, LOC), b], None, LOC)

    ones = C.ones(g, [batch, 1], LOC)
    zeros = C.zeros(g, [batch, 1], LOC)
    d_real = C.binary_cross_entropy(g, disc(x), ones, LOC)
    d_fake = C.binary_cross_entropy(g, disc(fake), zeros, LOC)
    g.losses["d_loss"] = g.add("add", [d_real, d_fake], None, LOC)
    g.losses["g_loss"] = C.binary_cross_entropy(g, disc(fake), ones, LOC)
    g.outputs["fake"] = fake
    return g


def init_params(g: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    from netc.compiler.initializers import initialize
    from netc.compiler.ir import np_dtype
    return {n: initialize(p.attrs["init"], p.type.shape, np_dtype(p.type.dtype), seed, n)
            for n, p in g.params.items()}


def data(batch: int = 4, n_in: int = 3, classes: int = 3, dtype=np.float64, seed: int = 1):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(batch, n_in)).astype(dtype),
            "y": rng.integers(0, classes, size=batch).astype(np.int32)}


def linreg(dtype: str = "f64", *, batch: int = 4, n_in: int = 3, n_out: int = 2) -> Graph:
    """pred = x @ W + b, loss = mse(pred, y): gradients are easy to write in NumPy."""
    g = Graph("linreg", float_dtype=dtype, mode="train")
    x = g.input("x", TensorType((batch, n_in), dtype), LOC)
    y = g.input("y", TensorType((batch, n_out), dtype), LOC, role="target")
    w = g.param("W", TensorType((n_in, n_out), dtype), LOC, ("normal", {"std": 0.5}))
    b = g.param("b", TensorType((n_out,), dtype), LOC, ("normal", {"std": 0.5}))
    pred = g.add("add", [g.add("matmul", [x, w], None, LOC), b], None, LOC)
    g.outputs["pred"] = pred
    g.losses["loss"] = C.mse(g, pred, y, LOC)
    return g


def fresh_state(g: Graph) -> dict[str, np.ndarray]:
    """Zeros for every state leaf of `g` (optimizer state and the counter start at zero)."""
    from netc.compiler.ir import np_dtype
    return {n: np.zeros(s.type.shape, np_dtype(s.type.dtype)) for n, s in g.states.items()}


def apply(g: Graph, info, feeds, params, states) -> dict[str, float]:
    """Run one step graph and apply its updates in place (what the runtime does); the RNG step is
    the counter's value. Returns the reported objective(s) by loss name."""
    from netc.compiler.interpret import interpret
    wanted = [*info.losses.values(), *g.updates.values()]
    step = int(states[info.counter])
    vals = interpret(g, feeds, params, states, step=step, wanted=wanted)
    for name, node in g.updates.items():
        (params if name in params else states)[name] = vals[node.id]
    return {k: float(vals[n.id]) for k, n in info.losses.items()}
