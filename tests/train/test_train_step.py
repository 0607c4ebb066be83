"""The step graph: whole-step gradients vs central differences, schedules, frozen parameters,
model-state updates, multi-step (GAN) training with sequential semantics."""

import math

import numpy as np
import pytest
from train_cases import apply, data, fresh_state, gan, init_params, mlp

from netc.compiler.errors import InternalCompilerError, SemanticError
from netc.compiler.interpret import interpret
from netc.compiler.train import build_step
from netc.compiler.train_config import (
    OPTIMIZERS,
    OptimizerSpec,
    ScheduleSpec,
    StepSpec,
    TrainConfig,
)
from netc.compiler.verify import verify


def _sgd(lr=0.1, **kw):
    args = dict(OPTIMIZERS["sgd"])
    args.update(kw, lr=lr)
    return OptimizerSpec("sgd", args)


def test_whole_step_gradients_match_central_differences_with_l1_l2():
    cfg = TrainConfig("mlp", l1=0.03, l2=0.05)
    g = mlp("f64")
    info = build_step(g, cfg, steps_per_epoch=1)
    verify(g)
    params, feeds = init_params(g), data()
    states = fresh_state(g)
    vals = interpret(g, feeds, params, states, wanted=list(info.grads.values()))
    fwd = mlp("f64")

    def objective(p):
        loss = interpret(fwd, feeds, p, {}, wanted=[fwd.losses["loss"]])[fwd.losses["loss"].id]
        ws = [p["fc1.W"], p["fc2.W"]]  # rank >= 2 only: biases are not penalised
        return float(loss) + 0.03 * sum(np.abs(w).sum() for w in ws) + \
            0.05 * sum((w * w).sum() for w in ws)

    reported = interpret(g, feeds, params, states, wanted=[info.losses["loss"]])
    assert float(reported[info.losses["loss"].id]) == pytest.approx(objective(params), rel=1e-12)
    eps = 1e-6
    for name, node in info.grads.items():
        num = np.zeros_like(params[name])
        for idx in np.ndindex(num.shape):
            up = {k: v.copy() for k, v in params.items()}
            dn = {k: v.copy() for k, v in params.items()}
            up[name][idx] += eps
            dn[name][idx] -= eps
            num[idx] = (objective(up) - objective(dn)) / (2 * eps)
        np.testing.assert_allclose(vals[node.id], num, rtol=1e-5, atol=1e-7, err_msg=name)


def _lr_at(cfg: TrainConfig, spe: int, t0: int) -> float:
    g = mlp("f32")
    info = build_step(g, cfg, steps_per_epoch=spe)
    states = fresh_state(g)
    states["opt.step"] = np.array(t0, np.int32)
    return float(interpret(g, data(dtype=np.float32), init_params(g), states,
                           wanted=[info.lr])[info.lr.id])


@pytest.mark.parametrize("sched,spe,expected", [
    (ScheduleSpec(), 3, {0: 1.0, 100: 1.0}),
    (ScheduleSpec("step_decay", {"every": 2, "gamma": 0.5}), 3,
     {0: 1.0, 5: 1.0, 6: 0.5, 11: 0.5, 12: 0.25, 17: 0.25, 18: 0.125}),
    (ScheduleSpec("exponential", {"gamma": 0.9}), 3, {0: 1.0, 2: 1.0, 3: 0.9, 6: 0.81, 8: 0.81}),
    (ScheduleSpec("cosine", {"warmup": 1}), 4,  # W = 4 warmup steps, T = 12 steps in all
     {0: 0.25, 1: 0.5, 3: 1.0, 4: 1.0, 8: 0.5, 11: (1 + math.cos(7 * math.pi / 8)) / 2,
      12: 0.0, 40: 0.0}),
    (ScheduleSpec("cosine", {"warmup": 0}), 2,
     {0: 1.0, 1: (1 + math.cos(math.pi / 6)) / 2, 3: 0.5, 5: (1 + math.cos(5 * math.pi / 6)) / 2}),
])
def test_schedule_gives_the_right_lr(sched, spe, expected):
    cfg = TrainConfig("mlp", optimizer=_sgd(1.0), schedule=sched, epochs=3)
    for t0, lr in expected.items():
        assert _lr_at(cfg, spe, t0) == pytest.approx(lr, abs=1e-12), t0


def test_in_graph_cosine_is_accurate_everywhere():
    cfg = TrainConfig("mlp", optimizer=_sgd(1.0), schedule=ScheduleSpec("cosine"), epochs=1)
    g = mlp("f32")
    info = build_step(g, cfg, steps_per_epoch=1000)
    states = fresh_state(g)
    for t0 in range(0, 1001, 37):
        states["opt.step"] = np.array(t0, np.int32)
        got = interpret(g, data(dtype=np.float32), init_params(g), states,
                        wanted=[info.lr])[info.lr.id]
        assert abs(float(got) - (1 + math.cos(math.pi * t0 / 1000)) / 2) < 1e-14


def test_frozen_params_unchanged_without_optimizer_state():
    g = mlp("f32", frozen_fc1=True)
    cfg = TrainConfig("mlp", freeze=("fc2.b",), l2=0.1)
    info = build_step(g, cfg, steps_per_epoch=1)
    verify(g)
    assert info.trainable == ("fc2.W",)
    assert set(info.frozen) == {"fc1.W", "fc1.b", "fc2.b"}
    assert set(g.updates) == {"fc2.W", "opt.fc2.W.m", "opt.fc2.W.v", "opt.step"}
    assert not [s for s in g.states if s.startswith(("opt.fc1", "opt.fc2.b"))]
    params, states = init_params(g), fresh_state(g)
    before = {k: v.copy() for k, v in params.items()}
    for _ in range(2):
        apply(g, info, data(dtype=np.float32), params, states)
    for k in ("fc1.W", "fc1.b", "fc2.b"):
        assert params[k].tobytes() == before[k].tobytes()
    assert not np.array_equal(params["fc2.W"], before["fc2.W"])


def test_model_state_updates_are_kept_and_step_needs_train_mode():
    g = mlp("f64", with_state=True)
    info = build_step(g, TrainConfig("mlp"), steps_per_epoch=1)
    verify(g)
    params, states = init_params(g), fresh_state(g)
    apply(g, info, data(), params, states)
    assert np.abs(states["ema"]).sum() > 0
    with pytest.raises(InternalCompilerError):
        build_step(mlp("f64", mode="eval", with_state=True), TrainConfig("mlp"), steps_per_epoch=1)


def test_dropout_step_replays_with_the_counter_as_rng_step():
    g = mlp("f64", dropout=0.5)
    info = build_step(g, TrainConfig("mlp"), steps_per_epoch=1)
    p0, feeds = init_params(g), data()
    runs = []
    for _ in range(2):
        params, states = {k: v.copy() for k, v in p0.items()}, fresh_state(g)
        runs.append([apply(g, info, feeds, params, states)["loss"] for _ in range(3)])
    assert runs[0] == runs[1]  # reproducible
    assert len(set(runs[0])) == 3  # masks differ per step


GAN_STEPS = (StepSpec("disc", "d_loss", ("disc.W", "disc.b"), _sgd(0.5)),
             StepSpec("gen", "g_loss", ("gen.W", "gen.b"), _sgd(0.5, momentum=0.9)))


def _gan_data():
    rng = np.random.default_rng(3)
    return {"x": rng.normal(size=(4, 3)) + 2.0, "z": rng.normal(size=(4, 2))}


def test_multi_step_updates_each_group_in_order():
    g = gan()
    info = build_step(g, TrainConfig("gan", steps=GAN_STEPS), steps_per_epoch=1)
    verify(g)
    assert [p.params for p in info.parts] == [("disc.W", "disc.b"), ("gen.W", "gen.b")]
    assert set(info.losses) == {"d_loss", "g_loss"}
    assert "opt.gen.gen.W.m" in g.states and not any(s.startswith("opt.disc") and s.endswith(".m")
                                                     for s in g.states)
    p0 = init_params(g)
    params, states = {k: v.copy() for k, v in p0.items()}, fresh_state(g)
    apply(g, info, _gan_data(), params, states)
    assert states["opt.step"] == 1

    # the same two steps as separate one-step graphs, run one after the other
    def one(step, params):
        h = gan()
        i = build_step(h, TrainConfig("gan", steps=(step,)), steps_per_epoch=1)
        p, s = {k: v.copy() for k, v in params.items()}, fresh_state(h)
        apply(h, i, _gan_data(), p, s)
        return p

    after_disc = one(GAN_STEPS[0], p0)
    for k in ("gen.W", "gen.b"):
        assert np.array_equal(after_disc[k], p0[k])  # disc step leaves gen alone
    sequential = one(GAN_STEPS[1], after_disc)
    for k in ("disc.W", "disc.b"):
        assert np.array_equal(sequential[k], after_disc[k])  # gen step leaves disc alone
    for k in p0:
        np.testing.assert_allclose(params[k], sequential[k], rtol=1e-12, err_msg=k)
    stale = one(GAN_STEPS[1], p0)  # gen step against the old discriminator
    assert not np.allclose(stale["gen.W"], params["gen.W"])


def test_bad_step_configurations():
    with pytest.raises(SemanticError, match="no plain loss"):
        build_step(gan(), TrainConfig("gan"), steps_per_epoch=1)
    bad = (StepSpec("d", "nope", ("disc.W",), _sgd()),)
    with pytest.raises(SemanticError, match="nope"):
        build_step(gan(), TrainConfig("gan", steps=bad), steps_per_epoch=1)
