"""Hand-built models standing in for build_ir's `build` in the runtime tests."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from netc.compiler.errors import SourceLoc
from netc.compiler.ir import Graph, TensorType
from netc.compiler.ops import composites as C
from netc.compiler.train_config import OPTIMIZERS, OptimizerSpec, TrainConfig

LOC = SourceLoc("m.net", 1, 1)
N_IN, HIDDEN, CLASSES = 4, 8, 3


def sgd(lr: float = 0.1) -> OptimizerSpec:
    return OptimizerSpec("sgd", dict(OPTIMIZERS["sgd"], lr=lr))


def mlp_graph(mode: str, batch: int, dtype: str, dropout: float, with_batch: bool) -> Graph:
    """x -> Dense(8) as fc1 -> relu -> dropout -> Dense(3) as fc2; probs; cross entropy;
    state `ema <- 0.5 ema + 0.5 mean(h)` over the hidden units."""
    g = Graph("mlp", float_dtype=dtype, mode=mode)
    x = g.input("x", TensorType((batch, N_IN), dtype), LOC)
    y = g.input("y", TensorType((batch,), "i32"), LOC, role="target")

    def dense(v, name, n_in, n_out):
        w = g.param(f"{name}.W", TensorType((n_in, n_out), dtype), LOC)
        b = g.param(f"{name}.b", TensorType((n_out,), dtype), LOC, ("zeros", {}))
        return g.add("add", [g.add("matmul", [v, w], None, LOC), b], None, LOC)

    h = g.add("relu", [dense(x, "fc1", N_IN, HIDDEN)], None, LOC)
    ema = g.state("ema", TensorType((HIDDEN,), dtype), LOC)
    if mode == "train":
        half = g.const(0.5, dtype, LOC)
        g.updates["ema"] = g.add("add", [g.add("mul", [ema, half], None, LOC),
                                         g.add("mul", [C.mean(g, h, 0, False, LOC), half],
                                               None, LOC)], None, LOC)
    logits = dense(C.dropout(g, h, dropout, LOC), "fc2", HIDDEN, CLASSES)
    g.outputs["probs"] = C.softmax(g, logits, -1, LOC)
    g.losses["loss"] = C.cross_entropy(g, logits, y, LOC)
    return g


def builder(cfg: TrainConfig | None = None, *, batch: int = 8, dtype: str = "f64",
            dropout: float = 0.0, with_batch: bool = True, calls: list | None = None):
    """A (mode, batch) -> Built-like function, as netc.compile makes from build_ir's `build`."""
    cfg = cfg or TrainConfig("mlp", optimizer=sgd(), metrics=("accuracy", "f1"))

    def build(mode: str, n: int | None):
        if calls is not None:
            calls.append((mode, n))
        b = batch if n is None else n
        params = {"batch": b} if with_batch else {}
        return SimpleNamespace(graph=mlp_graph(mode, b, dtype, dropout, with_batch), train=cfg,
                               model_name="mlp", params=params, path="m.net", text=None)
    return build


def fake_build(path, *, text=None, overrides=None, mode="train", float_dtype="f32"):
    """Stands in for build_ir.build: the model's `( )` parameters are batch and dropout."""
    over = dict(overrides or {})
    batch, dropout = int(over.pop("batch", 8)), float(over.pop("dropout", 0.0))
    assert not over, over
    if text is None:
        with open(path) as f:
            text = f.read()
    cfg = TrainConfig("mlp", metrics=("accuracy",))  # adam: exercises optimizer state
    return SimpleNamespace(graph=mlp_graph(mode, batch, float_dtype, dropout, True), train=cfg,
                           model_name="mlp", params={"batch": batch, "dropout": dropout},
                           path=path, text=text)


def blobs(n: int = 8, seed: int = 0, dtype=np.float64):
    """Three well-separated classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n).astype(np.int32)
    centers = np.eye(CLASSES, N_IN) * 3.0
    return {"x": (centers[y] + rng.normal(scale=0.5, size=(n, N_IN))).astype(dtype), "y": y}


def forward(m, x):
    """The eval-mode forward pass in NumPy from the model's own parameters."""
    p = m.params
    h = np.maximum(x @ p["fc1.W"] + p["fc1.b"], 0)
    z = h @ p["fc2.W"] + p["fc2.b"]
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def gan_builder():
    """G: z -> Dense(3) as gen; D: Dense(1) as disc; steps disc (d_loss) then gen (g_loss)."""
    from netc.compiler.train_config import StepSpec

    def build(mode: str, n: int | None):
        b = n or 4
        g = Graph("gan", float_dtype="f64", mode=mode)
        x = g.input("x", TensorType((b, 3), "f64"), LOC)
        z = g.input("z", TensorType((b, 2), "f64"), LOC)

        def dense(v, name, n_in, n_out):
            w = g.param(f"{name}.W", TensorType((n_in, n_out), "f64"), LOC)
            bias = g.param(f"{name}.b", TensorType((n_out,), "f64"), LOC, ("zeros", {}))
            return g.add("add", [g.add("matmul", [v, w], None, LOC), bias], None, LOC)

        fake = dense(z, "gen", 2, 3)
        w = g.param("disc.W", TensorType((3, 1), "f64"), LOC)

        def disc(v):
            return g.add("matmul", [v, w], None, LOC)

        ones, zeros = C.ones(g, [b, 1], LOC), C.zeros(g, [b, 1], LOC)
        g.losses["d_loss"] = g.add("add", [C.binary_cross_entropy(g, disc(x), ones, LOC),
                                           C.binary_cross_entropy(g, disc(fake), zeros, LOC)],
                                   None, LOC)
        g.losses["g_loss"] = C.binary_cross_entropy(g, disc(fake), ones, LOC)
        g.outputs["fake"] = fake
        cfg = TrainConfig("gan", steps=(StepSpec("disc", "d_loss", ("disc.W",), sgd(0.1)),
                                        StepSpec("gen", "g_loss", ("gen.W", "gen.b"), sgd(0.1))))
        return SimpleNamespace(graph=g, train=cfg, model_name="gan", params={"batch": b},
                               path="gan.net", text=None)
    return build


# a tiny classifier as .net text (tests that compile files: the hostile CLI and API sweeps)
TINY_NET = """model tiny(batch = 8, hidden = 4) {
    input  x: f32[batch, 3]
    target y: i32[batch]
    logits = x -> Dense(hidden) as fc1 -> relu -> Dense(2) as fc2
    output probs = softmax(logits)
    loss cross_entropy(logits, y)
}

train tiny {
    optimizer = adam(lr = 1e-2)
    epochs    = 1
}
"""
