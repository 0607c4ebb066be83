"""The JIT runs the optimizer's kernel graph and arena plan: GEMMs carry their bias/activation
epilogues, the arena is the plan's (liveness reuse, in-place updates), and the switches of the
pipeline (NETC_DISABLE) change the code, the cache key, never the results."""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np
import pytest

import netc
from netc import jit_cache
from netc.compiler.build_ir import build
from netc.compiler.codegen.step_input import HEADER, plan_step
from netc.compiler.passes.check_plan import check_plan
from netc.compiler.train import build_step

ROOT = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)
MLP = os.path.join(ROOT, "examples", "digits_mlp.net")
LENET = os.path.join(ROOT, "examples", "lenet.net")


def _train_plan(path, **over):
    b = build(path, mode="train", overrides=over)
    info = build_step(b.graph, b.train, steps_per_epoch=1)
    return plan_step(b.graph, dict(info.losses), dict(b.graph.updates))


def _ops(plan, k, stage):
    return [plan.graph.node(i).op for i in k.nodes if k.stages[i] == stage]


def test_mlp_gemms_carry_bias_and_relu():
    plan = _train_plan(MLP)
    g = plan.graph
    gemms = [k for k in plan.kernels if k.kind == "gemm"]
    assert ["add", "relu"] in [_ops(plan, k, "epilogue") for k in gemms]  # fc1
    assert ["add"] in [_ops(plan, k, "epilogue") for k in gemms]  # fc2 (the logits)
    biases = {g.params[name].id for name in g.params if name.endswith(".b")}
    for k in plan.kernels:  # no kernel of its own adds a bias to a product
        if k.kind == "gemm":
            continue
        for i in k.nodes:
            n = g.node(i)
            assert not (n.op == "add" and {x.id for x in n.inputs} & biases
                        and any(x.op == "matmul" for x in n.inputs)), k.description
    # the weight-gradient products read activations transposed in place (no transpose kernel)
    assert sum(bool(k.recomputed) for k in gemms) >= 3
    assert not [k for k in plan.kernels if k.main is not None
                and g.node(k.main).op == "transpose"]


@pytest.mark.parametrize("path", [MLP, LENET], ids=["mlp", "lenet"])
def test_train_step_arena_is_the_plan(path):
    plan = _train_plan(path)
    check_plan(plan.arena)
    a = plan.arena
    assert a.arena_peak < a.naive_arena  # values share bytes over time
    assert a.inplace  # and elementwise kernels write over dying inputs
    const_base = a.regions["const"][0]
    assert plan.size == -(-(HEADER + a.total - const_base) // 64) * 64
    # every value the kernels touch lies inside the native arena or is a Store tensor
    for k in plan.kernels:
        for i in (*k.inputs, *k.outputs):
            if i not in plan.persistent:
                assert HEADER <= plan.offset[i] < plan.size
    # the optimizer updates are written in place into the Store's arrays, no copies
    assert not plan.commits
    assert {plan.persistent[u.id] for u in plan.graph.updates.values()} == set(plan.graph.updates)


def test_engine_arena_has_the_plan_size():
    m = netc.compile(MLP, backend="jit", seed=1)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, m.inputs["x"][0]).astype(np.float32)
    y = rng.integers(0, 10, m.targets["y"][0]).astype(np.int32)
    m.train_step(x=x, y=y)
    engine, _ = m._engine("train", None)
    c = engine.compiled("train_step")
    assert c.arena.nbytes == c.sm.arena_bytes(engine.threads)
    assert c.sm.scratch_offset - c.plan.size < c.plan.arena.naive_arena - c.plan.arena.arena_peak


def _run(disable, threads=1, steps=3):
    old = os.environ.get("NETC_DISABLE")
    os.environ["NETC_DISABLE"] = disable
    try:
        out = []
        for backend in ("interpret", "jit"):
            m = netc.compile(MLP, backend=backend, seed=3, threads=threads, batch=32, hidden=48)
            rng = np.random.default_rng(0)
            x = rng.uniform(0, 1, (32, 64)).astype(np.float32)
            y = rng.integers(0, 10, 32).astype(np.int32)
            losses = [m.train_step(x=x, y=y) for _ in range(steps)]
            grads = m.gradients(x=x, y=y)
            out.append((losses, grads, {k: np.array(m.params[k]) for k in m.params},
                        m.predict(x=x)))
            if backend == "jit":
                engine, _ = m._engine("train", None)
                out.append(engine.compiled_from_cache)
        return out
    finally:
        if old is None:
            os.environ.pop("NETC_DISABLE", None)
        else:
            os.environ["NETC_DISABLE"] = old


@pytest.mark.parametrize("disable", ["", "inplace", "reuse", "inplace,reuse", "fuse"])
def test_jit_equals_interpreter_under_every_switch(disable):
    (li, gi, pi, yi), (lj, gj, pj, yj), _ = _run(disable)
    np.testing.assert_allclose(lj, li, rtol=1e-4)
    for k in gi:
        np.testing.assert_allclose(gj[k], gi[k], rtol=1e-4, atol=1e-6, err_msg=k)
    for k in pi:
        np.testing.assert_allclose(pj[k], pi[k], rtol=1e-4, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(yj, yi, rtol=1e-4, atol=1e-6)


def test_switches_are_part_of_the_cache_key(tmp_path, monkeypatch):
    """The code depends on the plan, so the plan is in the key: another switch is another plan."""
    monkeypatch.setenv("NETC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(jit_cache, "_memory", OrderedDict())  # this process's earlier compiles too
    hits = [_run(disable, steps=1)[2] for disable in ("reuse", "reuse", "inplace", "")]
    assert hits == [False, True, False, False]


def test_lenet_convolutions_carry_their_bias():
    plan = _train_plan(LENET)
    convs = [k for k in plan.kernels if k.kind == "conv"
             and plan.graph.node(k.main).op == "conv2d"]
    assert convs and all(_ops(plan, k, "epilogue")[:1] == ["add"] for k in convs)


ONE_ROW = """
model m(batch = 1, t = 2) {
    input x: f32[batch, t, 3]
    target y: f32[batch, 2]
    param W: [2, 3] = glorot_uniform
    param V: [3, 2] = glorot_uniform
    h = x -> GRU(2) as gru
    k = (h @ W + x[:, 0, :]) @ V + h       # products plus a computed [1, n] addend
    output k
    loss mse(k, y)
}
"""


def test_one_row_product_plus_a_row_shaped_addend(tmp_path):
    # With batch 1, an addend shaped exactly like the product ([1, n]) was taken for a column
    # bias; the plan put C in its buffer (safe only for a residual added before C is written)
    # and emitting the GEMM died with "ValueError: ... is not in list" (predict and train).
    # It is now the product's residual: same results as the interpreter.
    p = tmp_path / "one_row.net"
    p.write_text(ONE_ROW)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 3)).astype(np.float32)
    y = rng.standard_normal((1, 2)).astype(np.float32)
    jit, ref = netc.compile(p, backend="jit"), netc.compile(p, backend="interpret")
    np.testing.assert_allclose(jit.predict(x=x), ref.predict(x=x), rtol=1e-5, atol=1e-6)
    for _ in range(2):
        np.testing.assert_allclose(jit.train_step(x=x, y=y), ref.train_step(x=x, y=y),
                                   rtol=1e-5)
    for name in ref.params:
        np.testing.assert_allclose(jit.params[name], ref.params[name], rtol=1e-4, atol=1e-6)


POOLED_RELU = """
model pooled(batch = 3, hw = 8, k = 2, s = 2) {
    input x: f32[batch, 2, hw, hw]
    target y: i32[batch]
    logits = x -> Conv2D(3, 3, pad = 1) as conv -> relu -> max_pool2d(k = k, stride = s)
        -> flatten -> Dense(4) as fc
    loss cross_entropy(logits, y)
}
"""


@pytest.mark.parametrize("hw, k, s", [(8, 2, 2), (9, 2, 2), (7, 3, 1), (12, 3, 3), (16, 2, 2)])
def test_pooled_relu_gradient_is_the_pool_gradient_epilogue(tmp_path, hw, k, s):
    """The ReLU gradient of a pooled ReLU output, where(x > 0, dpool, 0), is applied by the max
    pooling gradient as it writes dx (pool.py `above`): one kernel, and the same gradients as
    the interpreter for tiling, leftover-row, overlapping and vector-row windows (relu outputs
    hold exact zeros: the boundary of the mask)."""
    p = tmp_path / "pooled.net"
    p.write_text(POOLED_RELU)
    over = {"hw": hw, "k": k, "s": s}
    b = build(str(p), mode="train", overrides=over)
    info = build_step(b.graph, b.train, steps_per_epoch=1)
    plan = plan_step(b.graph, dict(info.losses), dict(b.graph.updates))
    pools = [k_ for k_ in plan.kernels if k_.kind == "pool"
             and plan.graph.node(k_.main).op == "max_pool2d_grad"]
    assert [_ops(plan, k_, "epilogue") for k_ in pools] == [["gt", "where"]]
    assert not [k_ for k_ in plan.kernels if k_.main is None
                and "where" in [plan.graph.node(i).op for i in k_.nodes]]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, hw, hw)).astype(np.float32)
    y = rng.integers(0, 4, 3).astype(np.int32)
    jit = netc.compile(p, backend="jit", seed=1, threads=2, **over)
    ref = netc.compile(p, backend="interpret", seed=1, **over)
    got, want = jit.gradients(x=x, y=y), ref.gradients(x=x, y=y)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-6, err_msg=name)


RELU_MLP = """
model relu_mlp(batch = 13, h1 = 37, h2 = 700) {
    input x: f32[batch, 20]
    target y: i32[batch]
    logits = x -> Dense(h1) as fc1 -> relu -> Dense(h2) as fc2 -> relu -> Dense(4) as fc3
    loss cross_entropy(logits, y)
}
train relu_mlp {
    optimizer = sgd(0.05, momentum = 0.9)
}
"""


@pytest.mark.parametrize("threads", [1, 2])
def test_dense_relu_gradient_is_the_gemm_epilogue(tmp_path, threads):
    """The ReLU gradient after a dense layer, where(h > 0, dY·Wᵀ, 0), is applied by the GEMM
    as it writes dY·Wᵀ (Epilogue.mask_above): no elementwise kernel of its own. Edge tiles
    (13 x 37) and several K blocks (K = 700: the mask is applied once, after the last); the
    gradients and three training steps equal the interpreter's."""
    p = tmp_path / "relu_mlp.net"
    p.write_text(RELU_MLP)
    plan = _train_plan(str(p))
    masked = [k for k in plan.kernels if k.kind == "gemm" and _ops(plan, k, "epilogue")
              == ["gt", "where"]]
    assert len(masked) == 2
    assert not [k for k in plan.kernels if k.main is None
                and "where" in [plan.graph.node(i).op for i in k.nodes]]
    rng = np.random.default_rng(3)
    x = rng.standard_normal((13, 20)).astype(np.float32)
    y = rng.integers(0, 4, 13).astype(np.int32)
    jit = netc.compile(p, backend="jit", seed=2, threads=threads)
    ref = netc.compile(p, backend="interpret", seed=2)
    got, want = jit.gradients(x=x, y=y), ref.gradients(x=x, y=y)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-6, err_msg=name)
    for _ in range(3):
        np.testing.assert_allclose(jit.train_step(x=x, y=y), ref.train_step(x=x, y=y),
                                   rtol=1e-4)
    for name in ref.params:
        np.testing.assert_allclose(jit.params[name], ref.params[name], rtol=1e-4, atol=1e-6,
                                   err_msg=name)


def test_a_masked_product_is_not_written_over_its_mask():
    """where(z > 0.5, A·B, 0) with z an arena value (a transposed copy) that dies there: the
    plan must not put the masked product in z's buffer (its K blocks write partial sums before
    the last one reads z), and NaN in z masks to 0 as gt does."""
    from netc.compiler.errors import SourceLoc
    from netc.compiler.interpret import interpret
    from netc.compiler.ir import Graph, TensorType
    from netc.engine import Store
    from netc.jit_engine import JitEngine

    loc = SourceLoc("t.net", 1, 1)
    g = Graph("masked", float_dtype="f32")
    a = g.input("a", TensorType((13, 700), "f32"), loc)
    b = g.input("b", TensorType((700, 37), "f32"), loc)
    zt = g.input("zt", TensorType((37, 13), "f32"), loc)
    # an arena buffer (a transposing copy), last read by the masked product
    z = g.add("transpose", [zt], {"perm": (1, 0)}, loc)
    prod = g.add("matmul", [a, b], None, loc)
    cond = g.add("gt", [z, g.const(0.5, "f32", loc)], None, loc)
    g.outputs["y"] = g.add("where", [cond, prod, g.const(0.0, "f32", loc)], None, loc)
    plan = plan_step(g, {"y": g.outputs["y"]})
    (gemm,) = [k for k in plan.kernels if k.kind == "gemm" and k.main == prod.id]
    assert _ops(plan, gemm, "epilogue") == ["gt", "where"]
    assert plan.buffer_of(z.id) is not plan.buffer_of(g.outputs["y"].id)
    rng = np.random.default_rng(4)
    feeds = {"a": rng.standard_normal((13, 700)).astype(np.float32),
             "b": rng.standard_normal((700, 37)).astype(np.float32),
             "zt": rng.standard_normal((37, 13)).astype(np.float32)}
    feeds["zt"][:, 2] = np.nan  # a NaN row of z
    want = interpret(g, feeds, {}, {}, seed=0, step=0, wanted=[g.outputs["y"]])
    want = want[g.outputs["y"].id]
    assert (want[2] == 0).all() and (want == 0).mean() > 0.2
    for threads in (1, 2):
        got = JitEngine(g, Store(0), threads=threads).run("predict", feeds)["y"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
