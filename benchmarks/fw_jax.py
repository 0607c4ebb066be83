"""train_step.py's JAX contender: each case as a params pytree and one `jax.jit` step function.

Takes: a `Case` (cases.py), the thread count (already applied by the worker: CPU affinity and
XLA_FLAGS are set before jax is imported) and the steps per block. Gives: `setup(...)` ->
(parameter count, {contender name: block}). The step is `value_and_grad` of the mean softmax
cross-entropy plus the optimizer written by hand (SGD with momentum; Adam with PyTorch's
bias-corrected formula), jitted with the parameters and optimizer state donated. A block
dispatches `steps` steps and blocks on the results (`jax.block_until_ready`), so asynchronous
dispatch overlaps steps inside a block, as in a real training loop.

Loop cases get two contenders, and train_step.py reports the faster: "jax" runs the whole block
in one jitted `lax.scan` over the [steps, batch] index array (one dispatch per block: JAX's best
shot), "jax-step" dispatches one jitted step per batch that gathers its rows by index.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
from cases import Case, case_data


def _init(case: Case, rng: np.random.Generator) -> dict:
    def dense(i: int, o: int) -> dict:
        return {"W": rng.normal(0, (2 / (i + o)) ** 0.5, (i, o)), "b": np.zeros(o)}

    if case.dims:
        return {f"fc{k + 1}": dense(a, b) for k, (a, b) in enumerate(zip(case.dims, case.dims[1:]))}
    if case.name == "lenet":
        return {"conv1": {"W": rng.normal(0, 0.2, (6, 1, 5, 5)), "b": np.zeros(6)},
                "conv2": {"W": rng.normal(0, 0.08, (16, 6, 5, 5)), "b": np.zeros(16)},
                "fc1": dense(400, 120), "fc2": dense(120, 84), "fc3": dense(84, case.classes)}
    if case.name == "lstm":
        f, h = case.row[-1], case.extra["hidden"]
        return {"lstm": {"Wx": rng.normal(0, (1 / h) ** 0.5, (f, 4 * h)),
                         "Wh": rng.normal(0, (1 / h) ** 0.5, (h, 4 * h)),
                         "bx": np.zeros(4 * h), "bh": np.zeros(4 * h)},
                "head": dense(h, case.classes)}
    if case.name == "transformer":
        d, ff = case.row[-1], case.extra["ff"]
        norm = {"gamma": np.ones(d), "beta": np.zeros(d)}
        attn = {f"{w}{k}": dense(d, d)[w] for k in "qkvo" for w in ("W", "b")}
        return {"norm1": dict(norm), "norm2": dict(norm), "attn": attn,
                "ff1": dense(d, ff), "ff2": dense(ff, d), "head": dense(d, case.classes)}
    raise ValueError(f"no JAX model for case {case.name!r}")


def _forward(case: Case) -> Callable:
    import jax
    import jax.numpy as jnp
    from jax import lax

    def dense(p, x):
        return x @ p["W"] + p["b"]

    def mlp(p, x):
        n = len(case.dims) - 1
        for k in range(n):
            x = dense(p[f"fc{k + 1}"], x)
            x = jax.nn.relu(x) if k < n - 1 else x
        return x

    def conv(p, x, pad):
        y = lax.conv_general_dilated(x, p["W"], (1, 1), [(pad, pad), (pad, pad)],
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return y + p["b"][None, :, None, None]

    def pool(x):
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    def lenet(p, x):
        x = pool(jax.nn.relu(conv(p["conv1"], x, 2)))
        x = pool(jax.nn.relu(conv(p["conv2"], x, 0)))
        x = x.reshape(x.shape[0], -1)
        x = jax.nn.relu(dense(p["fc1"], x))
        x = jax.nn.relu(dense(p["fc2"], x))
        return dense(p["fc3"], x)

    def lstm(p, x):
        q, h_units = p["lstm"], case.extra["hidden"]
        xw = jnp.swapaxes(x @ q["Wx"] + q["bx"] + q["bh"], 0, 1)  # [T, b, 4H]: one product

        def cell(carry, xt):
            h, c = carry
            i, f, g, o = jnp.split(xt + h @ q["Wh"], 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            return (jax.nn.sigmoid(o) * jnp.tanh(c), c), None

        zero = jnp.zeros((x.shape[0], h_units), x.dtype)
        (h, _), _ = lax.scan(cell, (zero, zero), xw)
        return dense(p["head"], h)

    def layer_norm(p, x):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) * lax.rsqrt(v + 1e-5) * p["gamma"] + p["beta"]

    def transformer(p, x):
        b, t, d = x.shape
        heads = case.extra["heads"]
        hd = d // heads

        def split(z):
            return z.reshape(b, t, heads, hd).transpose(0, 2, 1, 3)

        a, w = layer_norm(p["norm1"], x), p["attn"]
        q, k, v = (split(a @ w[f"W{n}"] + w[f"b{n}"]) for n in "qkv")
        att = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / hd ** 0.5, axis=-1) @ v
        x = x + att.transpose(0, 2, 1, 3).reshape(b, t, d) @ w["Wo"] + w["bo"]
        f = jax.nn.gelu(dense(p["ff1"], layer_norm(p["norm2"], x)), approximate=False)
        x = x + dense(p["ff2"], f)
        return dense(p["head"], x.mean(axis=1))

    if case.dims:
        return mlp
    return {"lenet": lenet, "lstm": lstm, "transformer": transformer}[case.name]


def optimizer(case: Case) -> tuple[Callable, Callable]:
    """(init(params) -> state, update(params, grads, state) -> (params, state))."""
    import jax
    import jax.numpy as jnp

    tm = jax.tree_util.tree_map
    if case.opt == "sgd":
        lr, mu = case.lr, case.momentum

        def sgd_init(p):
            return tm(jnp.zeros_like, p) if mu else {}

        def sgd_update(p, g, s):
            if not mu:
                return tm(lambda w, dw: w - lr * dw, p, g), s
            s = tm(lambda m, dw: mu * m + dw, s, g)
            return tm(lambda w, m: w - lr * m, p, s), s
        return sgd_init, sgd_update
    lr, b1, b2, eps = case.lr, 0.9, 0.999, 1e-8

    def adam_init(p):
        return {"m": tm(jnp.zeros_like, p), "v": tm(jnp.zeros_like, p),
                "t": jnp.zeros((), jnp.float32)}

    def adam_update(p, g, s):
        t = s["t"] + 1
        m = tm(lambda m, dw: b1 * m + (1 - b1) * dw, s["m"], g)
        v = tm(lambda v, dw: b2 * v + (1 - b2) * dw * dw, s["v"], g)
        step, root = lr / (1 - b1 ** t), jnp.sqrt(1 - b2 ** t)
        p = tm(lambda w, m, v: w - step * m / (jnp.sqrt(v) / root + eps), p, m, v)
        return p, {"m": m, "v": v, "t": t}
    return adam_init, adam_update


def init_params(case: Case) -> dict:
    """The parameter pytree: nested dicts whose dotted paths are netc's parameter names."""
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32),
                                  _init(case, np.random.default_rng(0)))


def loss_function(case: Case) -> Callable:
    """loss(params, x, y): the mean softmax cross-entropy of the case's network."""
    import jax
    import jax.numpy as jnp

    forward = _forward(case)

    def loss(p, x, y):
        logp = jax.nn.log_softmax(forward(p, x))
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
    return loss


def setup(case: Case, threads: int, steps: int) -> tuple[int, dict[str, Callable[[], None]]]:
    import jax
    import jax.numpy as jnp
    from jax import lax

    loss_fn = loss_function(case)
    opt_init, opt_update = optimizer(case)
    params = init_params(case)
    n_params = sum(int(a.size) for a in jax.tree_util.tree_leaves(params))
    live = {"p": params, "s": opt_init(params)}

    def train(p, s, x, y):
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        p, s = opt_update(p, g, s)
        return p, s, loss

    d = case_data(case, steps)
    x, y = jnp.asarray(d["x"]), jnp.asarray(d["y"])

    def run(fn: Callable, args_per_step: list) -> Callable[[], None]:
        def block() -> None:
            p, s = live["p"], live["s"]
            for args in args_per_step:
                p, s, loss = fn(p, s, *args)
            live["p"], live["s"] = jax.block_until_ready((p, s))
        return block

    if not case.loop:
        step = jax.jit(train, donate_argnums=(0, 1))
        return n_params, {"jax": run(step, [(x, y)] * steps)}

    index = jnp.asarray(d["index"].reshape(steps, case.batch))

    @partial(jax.jit, donate_argnums=(0, 1))
    def gathered_step(p, s, xs, ys, rows):
        return train(p, s, xs[rows], ys[rows])

    @partial(jax.jit, donate_argnums=(0, 1))
    def scanned(p, s, xs, ys, idx):
        def body(carry, rows):
            p, s, loss = train(*carry, xs[rows], ys[rows])
            return (p, s), loss
        (p, s), losses = lax.scan(body, (p, s), idx)
        return p, s, losses.mean()

    per_step = [(x, y, index[i]) for i in range(steps)]
    return n_params, {"jax": run(scanned, [(x, y, index)]),
                      "jax-step": run(gathered_step, per_step)}
