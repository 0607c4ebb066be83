"""Small models and step graphs for the optimizer-pass tests (written inline, built from text)."""

from __future__ import annotations

import copy

import numpy as np

from netc.compiler.autodiff import grad
from netc.compiler.build_ir import build
from netc.compiler.interpret import Result, run
from netc.compiler.ir import Graph

MLP = """
model mlp(batch = 8, n_in = 16, h1 = 12, h2 = 10) {
    input x: f32[batch, n_in]
    target y: i32[batch]
    h = x -> Dense(h1) as fc1 -> relu -> dropout(0.25)
    h = h -> Dense(h2) as fc2 -> relu
    logits = h -> Dense(4) as fc3
    output probs = softmax(logits)
    loss cross_entropy(logits, y)
}
"""

LENET = """
model lenet(batch = 4, side = 12, c1 = 3, c2 = 4, fc = 12) {
    input x: f32[batch, 1, side, side]
    target y: i32[batch]
    h = x -> Conv2D(c1, 3, pad = 1) as conv1 -> relu -> max_pool2d(2)
    h = h -> Conv2D(c2, 3) as conv2 -> tanh -> avg_pool2d(2)
    h = flatten(h) -> Dense(fc) as fc1 -> relu
    logits = h -> Dense(10) as fc2
    loss cross_entropy(logits, y)
}
"""

LSTM = """
model seq(batch = 3, time = 4, feat = 5, units = 6) {
    input x: f32[batch, time, feat]
    target y: f32[batch, 2]
    h = x -> LSTM(units) as rnn
    acc = zeros([batch, units])
    for t in 0..time {
        acc = acc + tanh(x[:, t, 0:1] * h)
    }
    pred = acc -> Dense(2) as head
    output pred
    loss mse(pred, y)
}
"""

TRANSFORMER = """
model block(batch = 2, time = 5, d = 8, heads = 2) {
    input x: f32[batch, time, d]
    target y: i32[batch]
    a = x -> LayerNorm() as ln1 -> MultiHeadAttention(heads, d) as attn
    h = x + a
    f = h -> LayerNorm() as ln2 -> Dense(16) as up -> gelu -> Dense(d) as down
    h = h + f
    logits = mean(h, axis = 1) -> Dense(3) as head
    output probs = softmax(logits)
    loss cross_entropy(logits, y)
}
"""

EMBED = """
model emb(batch = 3, time = 4, vocab = 7, dim = 5) {
    input tok: i32[batch, time]
    target y: i32[batch]
    e = tok -> Embedding(vocab, dim) as embed
    h = concat([e[:, 0:2, :], e[:, 2:4, :] * 2], axis = 1) -> GRU(6) as gru
    logits = transpose(h, [1, 0])[0:3, :]
    output tokens = tok
    loss cross_entropy(transpose(logits, [1, 0]), y)
}
"""

MODELS = {"mlp": MLP, "lenet": LENET, "lstm": LSTM, "transformer": TRANSFORMER, "embed": EMBED}


def step_graph(text: str, *, float_dtype: str = "f64", lr: float = 0.05,
               grads_as_outputs: bool = True, overrides: dict | None = None) -> Graph:
    """Forward + gradients of every param (as outputs `grad:NAME`) + SGD updates `p - lr*g`."""
    g = build("m.net", text=text, float_dtype=float_dtype, overrides=overrides).graph
    loss = next(iter(g.losses.values()))
    params = list(g.params.values())
    grads = grad(g, loss, params)
    rate = g.const(lr, g.float_dtype, loss.loc)
    for p in params:
        name = p.attrs["name"]
        gp = grads[p.id]
        if grads_as_outputs:
            g.outputs[f"grad:{name}"] = gp
        g.updates[name] = g.add("sub", [p, g.add("mul", [rate, gp], None, p.loc)], None, p.loc)
    return g


def random_data(g: Graph, seed: int = 0) -> tuple[dict, dict, dict]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, n in g.inputs.items():
        if n.type.dtype == "i32":
            feeds[name] = rng.integers(0, 3, n.type.shape).astype(np.int32)
        else:
            feeds[name] = rng.normal(size=n.type.shape)
    params = {name: rng.normal(scale=0.5, size=n.type.shape) for name, n in g.params.items()}
    states = {name: np.abs(rng.normal(size=n.type.shape)) + 0.5
              for name, n in g.states.items()}
    return feeds, params, states


def reference(g: Graph, data, seed: int = 7, step: int = 3) -> Result:
    return run(copy.deepcopy(g), *data, seed=seed, step=step)


def assert_same(a: Result, b: Result, rtol: float = 1e-10, atol: float = 1e-12) -> None:
    for field in ("outputs", "losses", "updates"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.keys() == y.keys(), field
        for k in x:
            np.testing.assert_allclose(y[k], x[k], rtol=rtol, atol=atol, err_msg=f"{field} {k}")

MLP_BIG = """
model mlp(batch = 128) {
    input x: f32[batch, 784]
    target y: i32[batch]
    h = x -> Dense(512) as fc1 -> relu
    h = h -> Dense(256) as fc2 -> relu
    logits = h -> Dense(10) as fc3
    loss cross_entropy(logits, y)
}
"""

LENET5 = """
model lenet5(batch = 64) {
    input x: f32[batch, 1, 28, 28]
    target y: i32[batch]
    h = x -> Conv2D(6, 5, pad = 2) as c1 -> relu -> max_pool2d(2)
    h = h -> Conv2D(16, 5) as c3 -> relu -> max_pool2d(2)
    h = flatten(h) -> Dense(120) as f5 -> relu -> Dense(84) as f6 -> relu
    logits = h -> Dense(10) as out
    loss cross_entropy(logits, y)
}
"""


_CASES: dict[str, tuple[Graph, tuple[dict, dict, dict], Result]] = {}


def model_case(name: str) -> tuple[Graph, tuple[dict, dict, dict], Result]:
    """(step graph, random data, reference result) of MODELS[name], built once per process.
    Callers must not modify the graph (optimize a deep copy)."""
    if name not in _CASES:
        g = step_graph(MODELS[name])
        data = random_data(g)
        _CASES[name] = (g, data, reference(g, data))
    return _CASES[name]
