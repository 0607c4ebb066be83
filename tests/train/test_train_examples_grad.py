"""Whole-model gradients of every example equal central differences of its loss (float64), and
the main example trains in the interpreter to the accuracy the issue asks for."""

import glob
import os

import numpy as np
import pytest

import netc
from netc.compiler.autodiff import grad
from netc.compiler.build_ir import build
from netc.compiler.initializers import initialize
from netc.compiler.interpret import interpret
from netc.data import load_arrays, split_validation

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "*.net")))
SMALL = {"batch": 3, "hidden": 6, "latent": 2, "units": 5, "dim": 8, "heads": 2, "code": 3,
         "noise": 2, "seq": 4, "T": 4, "width": 6, "blocks": 1, "depth": 1, "steps": 4}


def _feeds(g, rng):
    feeds = {}
    for name, node in g.inputs.items():
        t = node.type
        if t.dtype == "i32":
            feeds[name] = rng.integers(0, 2, t.shape).astype(np.int32)
        else:
            feeds[name] = rng.uniform(0.05, 0.95, t.shape)
    return feeds


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_example_gradients_match_central_differences(path):
    b0 = build(path, mode="train", float_dtype="f64")
    names = {p.name for p in b0.program.models[b0.model_name].params}
    b = build(path, mode="train", float_dtype="f64",
              overrides={k: v for k, v in SMALL.items() if k in names})
    g = b.graph
    rng = np.random.default_rng(1)
    feeds = _feeds(g, rng)
    params = {n: initialize(p.attrs["init"], p.type.shape, np.float64, 0, n)
              for n, p in g.params.items()}
    states = {n: initialize(s.attrs["init"], s.type.shape, np.float64, 0, n)
              for n, s in g.states.items()}
    trainable = [p for p in g.params.values() if not p.attrs["frozen"]]
    for loss_name, loss in g.losses.items():
        grads = grad(g, loss, trainable)
        wanted = [loss] + [grads[p.id] for p in trainable if p.id in grads]
        vals = interpret(g, feeds, params, states, seed=3, step=5, wanted=wanted)

        def objective(ps, loss=loss):
            return float(interpret(g, feeds, ps, states, seed=3, step=5, wanted=[loss])[loss.id])
        checked = 0
        for p in trainable:
            if p.id not in grads:
                continue
            analytic = vals[grads[p.id].id]
            flat = params[p.attrs["name"]].reshape(-1)
            for i in rng.choice(flat.size, size=min(3, flat.size), replace=False):
                old = flat[i]
                h = 1e-6 * max(1.0, abs(old))
                flat[i] = old + h
                up = objective(params)
                flat[i] = old - h
                down = objective(params)
                flat[i] = old
                numeric = (up - down) / (2 * h)
                got = analytic.reshape(-1)[i]
                assert abs(got - numeric) <= 1e-5 * max(1.0, abs(numeric)), \
                    (loss_name, p.attrs["name"], i, got, numeric)
                checked += 1
        assert checked > 0


def test_digits_mlp_trains_in_the_interpreter():
    m = netc.compile(os.path.join(ROOT, "digits_mlp.net"), backend="interpret")
    raw, _ = load_arrays("digits")
    tr, va = split_validation(raw, 0.2, 0, stratify=raw["y"])
    rng = np.random.default_rng(0)
    for _ in range(15):
        idx = rng.permutation(len(tr["x"]))
        for i in range(0, len(idx) - 63, 64):
            m.train_step(x=tr["x"][idx[i:i + 64]], y=tr["y"][idx[i:i + 64]])
    n = len(va["x"]) // 64 * 64
    acc = np.mean(m.predict(x=va["x"][:n]).argmax(1) == va["y"][:n])
    assert acc >= 0.95, acc
