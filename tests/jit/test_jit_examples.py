"""Every example through the JIT equals the interpreter (float32, rtol 1e-4): predict, gradients
and three train steps (parameters, state and optimizer state compared after them). Recurrent
models run with fewer steps and a smaller batch (their unrolled graphs dominate compile time);
the code paths are the same."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest

import netc

ROOT = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*.net")))
SMALL = {"gru_classifier": {"steps": 6, "batch": 8}, "lstm_classifier": {"steps": 6, "batch": 8},
         "transformer_encoder": {"steps": 8, "batch": 8}, "lenet": {"batch": 16}}


def _feeds(m, rng):
    out = {}
    for name, (shape, dtype) in {**m.inputs, **m.targets}.items():
        if dtype == "i32":
            out[name] = rng.integers(0, 2, shape).astype(np.int32)
        else:
            out[name] = rng.uniform(0.0, 1.0, shape).astype(np.float32)
    return out


def _close(a, b, what, moved=None):
    """b equals a to rtol 1e-4, atol 1e-5; where `moved` (per name) says how far training moved
    each element, also to 1 % of that. An adaptive optimizer (Adam, RMSprop) divides by
    sqrt(v) + eps, so a gradient at roundoff level (summed in another order at another vector
    width) moves its parameter by up to lr * (its roundoff) / eps: an error of the update, not of
    the parameter's scale."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for k in a:
            _close(a[k], b[k], f"{what}:{k}", None if moved is None else moved.get(k))
        return
    a, b = np.asarray(a), np.asarray(b)
    atol = 1e-5 if moved is None else 1e-5 + 1e-2 * np.asarray(moved)
    bad = ~(np.abs(b - a) <= atol + 1e-4 * np.abs(a))  # NaN compares unequal: bad
    assert a.shape == b.shape and not bad.any(), (
        f"{what}: {int(bad.sum())} of {a.size} elements differ; worst "
        f"{np.nanmax(np.abs(b - a)) if a.size else 0:.3g}")


def test_examples_found():
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("path", EXAMPLES, ids=[os.path.basename(p) for p in EXAMPLES])
def test_example_jit_equals_interpreter(path):
    over = SMALL.get(os.path.basename(path)[:-4], {})
    mi = netc.compile(path, backend="interpret", seed=5, **over)
    mj = netc.compile(path, backend="jit", seed=5, **over)
    feeds = _feeds(mi, np.random.default_rng(0))
    inputs = {k: feeds[k] for k in mi.inputs}
    _close(mi.predict(**inputs), mj.predict(**inputs), "predict")
    _close(mi.gradients(**feeds), mj.gradients(**feeds), "gradients")
    before = {k: np.array(mi.params[k]) for k in mi.params}
    for step in range(3):
        li, lj = mi.train_step(**feeds), mj.train_step(**feeds)
        np.testing.assert_allclose(lj, li, rtol=1e-4, err_msg=f"loss of step {step}")
    moved = {k: np.abs(mi.params[k] - before[k]) for k in before}
    for table in ("params", "state", "optimizer_state"):
        ti, tj = getattr(mi, table), getattr(mj, table)
        _close({k: ti[k] for k in ti}, {k: tj[k] for k in tj}, table,
               moved if table == "params" else None)
    assert mj.step == mi.step == 3


SGD_NET = """
model sgd_update(batch = 600) {
    input  x: f32[batch, 20]
    target y: i32[batch]
    logits = x -> Dense(32) as fc1 -> relu -> Dense(16) as fc2
    loss cross_entropy(logits, y)
}

train sgd_update {
    optimizer = sgd(lr = 0.05)
}
"""


@pytest.mark.parametrize("threads", [1, 2])
def test_sgd_update_fused_into_the_weight_gradient(tmp_path, threads):
    """Plain SGD's `W - lr * dW` is the weight-gradient GEMM's epilogue, written over W (the
    residual added in the first K block: here K = batch = 600 spans several blocks). Three
    steps equal the interpreter's."""
    from netc.compiler.codegen.gemm import choose_blocking
    from netc.compiler.codegen.target import get_target

    assert choose_blocking(get_target(), 20, 32, 600).kc < 600  # several K blocks
    path = tmp_path / "sgd.net"
    path.write_text(SGD_NET)
    mi = netc.compile(str(path), backend="interpret", seed=2)
    mj = netc.compile(str(path), backend="jit", seed=2, threads=threads)
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((600, 20)).astype(np.float32),
             "y": rng.integers(0, 16, 600).astype(np.int32)}
    for _ in range(3):
        np.testing.assert_allclose(mj.train_step(**feeds), mi.train_step(**feeds), rtol=1e-4)
    _close({k: mi.params[k] for k in mi.params}, {k: mj.params[k] for k in mj.params}, "params")
    plan = mj._engine("train", None)[0].compiled("train_step").plan
    fused = [k for k in plan.kernels if k.kind == "gemm" and any(
        plan.graph.node(i).op == "sub" for i in k.nodes)]
    assert len(fused) == 2, "the weight updates are not in the GEMMs' epilogues"
