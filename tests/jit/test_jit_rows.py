"""Rows kernels (fuse_kernels phase 3, codegen/kernels_rows.py): softmax, log-softmax, logsumexp,
cross-entropy and layer-norm-like row statistics, forward and backward, computed a block of rows
at a time with the rows across the vector lanes. JIT equals the NumPy interpreter for row lengths
below, at and above the vector width (whole tiles, an overlapping last tile, rows shorter than a
vector), for row counts with and without rows left after the last whole block, on every runnable
target and on one and two threads (bit for bit), with NaN and infinities in the data; what may
not fuse stays out."""

from __future__ import annotations

import numpy as np
import pytest

import netc
from netc.compiler.codegen.emit_ctx import SPLIT_MIN
from netc.compiler.codegen.target import TARGET_NAMES, get_target
from netc.compiler.errors import SourceLoc
from netc.compiler.interpret import interpret
from netc.compiler.ir import Graph, TensorType
from netc.compiler.ops import composites as C
from netc.compiler.passes.fuse_kernels import ROW_MAX
from netc.compiler.pipeline import optimize
from netc.engine import Store
from netc.jit_engine import JitEngine

LOC = SourceLoc("t.net", 1, 1)
RUNNABLE = [t for t in TARGET_NAMES if get_target(t).runnable]
# rows x C: C below, at and above 4/8/16 lanes (ragged: an overlapping last tile), row counts
# with and without rows after the last whole block, a 3-D lead, and one large enough to be split
# between threads (rows after the last whole block on the last thread)
SHAPES = [(32, 10), (13, 3), (8, 8), (17, 16), (5, 17), (9, 31), (64, 32), (1, 2), (3, 7, 10),
          (1029, 32)]


def _graph(shape):
    """Forward row statistics of x (and of x broadcast with a per-column and a per-row operand):
    softmax, log_softmax, logsumexp (kept dims), max/min/mean, a variance and a normalisation,
    a where on a compare made inside the kernel, one_hot against labels."""
    g = Graph("rows", float_dtype="f32")
    lead, c = shape[:-1], shape[-1]
    x = g.input("x", TensorType(shape, "f32"), LOC)
    col = g.input("col", TensorType((c,), "f32"), LOC)
    one = g.input("one", TensorType((*lead, 1), "f32"), LOC)
    y = g.input("y", TensorType(lead, "i32"), LOC)
    h = g.add("add", [g.add("mul", [x, col], None, LOC), one], None, LOC)
    g.outputs["softmax"] = C.softmax(g, h, -1, LOC)
    g.outputs["log_softmax"] = C.log_softmax(g, x, -1, LOC)
    g.outputs["lse"] = C.logsumexp(g, x, -1, True, LOC)
    mu = C.mean(g, x, -1, True, LOC)
    var = C.var(g, x, -1, True, LOC)
    eps = g.const(1e-5, "f32", LOC)
    g.outputs["norm"] = g.add("mul", [g.add("sub", [x, mu], None, LOC),
                                      g.add("rsqrt", [g.add("add", [var, eps], None, LOC)],
                                            None, LOC)], None, LOC)
    m = g.add("max", [x], {"axes": (len(shape) - 1,), "keepdims": True}, LOC)
    g.outputs["min"] = g.add("min", [x], {"axes": (len(shape) - 1,), "keepdims": False}, LOC)
    pos = g.add("gt", [x, g.add("mul", [m, g.const(0.5, "f32", LOC)], None, LOC)], None, LOC)
    g.outputs["where"] = g.add("where", [pos, x, g.add("neg", [x], None, LOC)], None, LOC)
    oh = C.one_hot(g, y, c, LOC)
    g.outputs["picked"] = g.add("sum", [g.add("mul", [oh, x], None, LOC)],
                                {"axes": (len(shape) - 1,), "keepdims": False}, LOC)
    return g


def _feeds(rng, shape, special=False):
    lead, c = shape[:-1], shape[-1]
    x = rng.uniform(-4, 4, shape).astype(np.float32)
    if special:
        flat = x.reshape(-1)
        at = rng.choice(flat.size, size=min(4, flat.size), replace=False)
        flat[at] = [np.nan, np.inf, -np.inf, 50.0][:len(at)]
    return {"x": x, "col": rng.uniform(0.5, 2, (c,)).astype(np.float32),
            "one": rng.uniform(-1, 1, (*lead, 1)).astype(np.float32),
            "y": rng.integers(0, c, lead).astype(np.int32)}


def _kinds(g):
    return [k.kind for k in optimize(g).kernels.kernels]


def test_row_statistics_fuse_into_rows_kernels():
    g = _graph((32, 10))
    assert "rows" in _kinds(g)
    assert "rows" not in [k.kind for k in optimize(_graph((32, 10)), disable={"rows"})
                          .kernels.kernels]
    wide = _graph((4, ROW_MAX + 1))  # longer rows keep their own reduction kernels
    assert "rows" not in _kinds(wide)


@pytest.mark.parametrize("target", RUNNABLE)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_rows_kernels_equal_the_interpreter(monkeypatch, target, shape):
    monkeypatch.setenv("NETC_TARGET", target)
    rng = np.random.default_rng(sum(shape))
    for special in (False, True):
        g = _graph(shape)
        feeds = _feeds(rng, shape, special)
        nodes = list(g.outputs.values())
        ref = interpret(g, feeds, {}, {}, seed=0, step=0, wanted=nodes)
        outs = []
        for threads in (1, 2):
            eng = JitEngine(g, Store(0), threads=threads)
            assert any(k.kind == "rows" for k in eng.compiled("predict").plan.kernels)
            outs.append(eng.run("predict", feeds))
        assert (eng.compiled("predict").sm.split_calls > 0) == (np.prod(shape) >= SPLIT_MIN)
        for name, node in g.outputs.items():
            want, got = ref[node.id], outs[0][name]
            assert got.shape == want.shape and got.dtype == want.dtype, name
            with np.errstate(all="ignore"):
                np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5, equal_nan=True,
                                           err_msg=f"{name} {shape} special={special}")
            np.testing.assert_array_equal(outs[1][name], got, err_msg=f"{name} on 2 threads")


CLASSIFIER = """
model rows_clf(batch = {batch}, classes = {classes}) {{
    input  x: f32[batch, 12]
    target y: i32[batch]
    logits = x -> Dense(16) as fc1 -> tanh -> Dense(classes) as fc2
    output probs = softmax(logits)
    output logp = log_softmax(logits)
    loss cross_entropy(logits, y)
}}
train rows_clf {{ optimizer = adam(lr = 0.01) }}
"""


@pytest.mark.parametrize("batch,classes", [(32, 10), (7, 3), (20, 17), (9, 32)])
def test_cross_entropy_training_through_rows_kernels(tmp_path, batch, classes):
    """predict, gradients and three Adam steps of a classifier whose softmax and cross-entropy
    (forward and backward) run as rows kernels: JIT equals the interpreter, and two threads give
    the same bits as one."""
    path = tmp_path / "clf.net"
    path.write_text(CLASSIFIER.format(batch=batch, classes=classes))
    rng = np.random.default_rng(classes)
    x = rng.normal(size=(batch, 12)).astype(np.float32)
    y = rng.integers(0, classes, batch).astype(np.int32)
    mi = netc.compile(str(path), backend="interpret")
    mj = netc.compile(str(path), backend="jit", threads=1)
    m2 = netc.compile(str(path), backend="jit", threads=2)
    eng, _ = mj._engine("train", None)
    assert any(k.kind == "rows" for k in eng.compiled("train_step").plan.kernels)
    pi, pj = mi.predict(x=x), mj.predict(x=x)
    for k in pi:
        np.testing.assert_allclose(pj[k], pi[k], rtol=1e-5, atol=1e-6, err_msg=k)
    gi, gj = mi.gradients(x=x, y=y), mj.gradients(x=x, y=y)
    for k in gi:
        np.testing.assert_allclose(gj[k], gi[k], rtol=1e-4, atol=1e-6, err_msg=k)
    for _ in range(3):
        li, lj, l2 = mi.train_step(x=x, y=y), mj.train_step(x=x, y=y), m2.train_step(x=x, y=y)
        np.testing.assert_allclose(lj, li, rtol=1e-5)
        assert l2 == lj
    for k in mi.params:
        np.testing.assert_allclose(mj.params[k], mi.params[k], rtol=1e-4, atol=1e-5, err_msg=k)
        np.testing.assert_array_equal(m2.params[k], mj.params[k], err_msg=k)
