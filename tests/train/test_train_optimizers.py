"""One to three steps of every optimizer (with schedules and clipping) against PyTorch's formulas:
a NumPy re-implementation in float64 (1e-6), and PyTorch itself in float32 (1e-5) when installed."""

import math

import numpy as np
import pytest
from train_cases import apply, fresh_state, init_params, linreg

from netc.compiler.train import build_step
from netc.compiler.train_config import OPTIMIZERS, OptimizerSpec, ScheduleSpec, TrainConfig
from netc.compiler.verify import verify

CASES = {
    "sgd": {},
    "sgd_momentum": {"momentum": 0.9},
    "sgd_nesterov": {"momentum": 0.8, "nesterov": True},
    "sgd_wd": {"momentum": 0.5, "weight_decay": 0.1},
    "adam": {"beta1": 0.8, "beta2": 0.95, "eps": 1e-3},
    "adamw": {"weight_decay": 0.2, "eps": 1e-6},
    "rmsprop": {"rho": 0.8, "eps": 1e-3},
    "rmsprop_momentum": {"rho": 0.9, "momentum": 0.7},
    "adagrad": {"eps": 1e-4},
}


def _spec(case: str, lr: float = 0.1) -> OptimizerSpec:
    name = case.split("_")[0]
    args = dict(OPTIMIZERS[name])
    args.update(CASES[case], lr=lr)
    return OptimizerSpec(name, args)


def _np_grads(p, x, y):
    d = 2 * (x @ p["W"] + p["b"] - y) / y.size
    return {"W": x.T @ d, "b": d.sum(0)}


def np_schedule(sched: ScheduleSpec, lr0: float, t0: int, spe: int, epochs: int) -> float:
    e = t0 // spe
    if sched.name == "step_decay":
        return lr0 * sched.args["gamma"] ** (e // sched.args["every"])
    if sched.name == "exponential":
        return lr0 * sched.args["gamma"] ** e
    if sched.name == "cosine":
        w = sched.args.get("warmup", 0) * spe
        if t0 < w:
            return lr0 * (t0 + 1) / w
        p = min(1.0, (t0 - w) / max(epochs * spe - w, 1))
        return lr0 * (1 + math.cos(math.pi * p)) / 2
    return lr0


def np_step(spec: OptimizerSpec, p, grads, st, t: int, lr: float):
    """PyTorch's single-tensor update rules, written out in NumPy (t is 1-based)."""
    a = spec.args
    for k in p:
        gk, w = grads[k], p[k]
        if spec.name == "sgd":
            gk = gk + a["weight_decay"] * w
            d = gk
            if a["momentum"]:
                buf = gk.copy() if t == 1 else a["momentum"] * st[k + "m"] + gk
                st[k + "m"] = buf
                d = gk + a["momentum"] * buf if a["nesterov"] else buf
            p[k] = w - lr * d
        elif spec.name in ("adam", "adamw"):
            if spec.name == "adamw":
                w = w * (1 - lr * a["weight_decay"])
            m = st.get(k + "m", 0) * a["beta1"] + (1 - a["beta1"]) * gk
            v = st.get(k + "v", 0) * a["beta2"] + (1 - a["beta2"]) * gk * gk
            st[k + "m"], st[k + "v"] = m, v
            bc1, bc2 = 1 - a["beta1"] ** t, 1 - a["beta2"] ** t
            p[k] = w - lr / bc1 * m / (np.sqrt(v) / math.sqrt(bc2) + a["eps"])
        elif spec.name == "rmsprop":
            v = a["rho"] * st.get(k + "v", 0) + (1 - a["rho"]) * gk * gk
            st[k + "v"] = v
            step = gk / (np.sqrt(v) + a["eps"])
            if a["momentum"]:
                step = a["momentum"] * st.get(k + "m", 0) + step
                st[k + "m"] = step
            p[k] = w - lr * step
        elif spec.name == "adagrad":
            s = st.get(k + "v", 0) + gk * gk
            st[k + "v"] = s
            p[k] = w - lr * gk / (np.sqrt(s) + a["eps"])


def _clip(grads, c):
    norm = math.sqrt(sum(float((v * v).sum()) for v in grads.values()))
    coef = min(1.0, c / (norm + 1e-6))
    return {k: v * coef for k, v in grads.items()}


def _batches(n: int, dtype):
    rng = np.random.default_rng(7)
    return [{"x": rng.normal(size=(4, 3)).astype(dtype),
             "y": rng.normal(size=(4, 2)).astype(dtype) * 3} for _ in range(n)]


def _run_graph(cfg: TrainConfig, dtype: str, spe: int, n_steps: int = 3):
    g = linreg(dtype)
    info = build_step(g, cfg, steps_per_epoch=spe)
    verify(g)
    params, states = init_params(g), fresh_state(g)
    start = {k: v.copy() for k, v in params.items()}
    for b in _batches(n_steps, params["W"].dtype):
        apply(g, info, b, params, states)
    return start, params, states


def _run_numpy(cfg: TrainConfig, start, spe: int, n_steps: int = 3):
    p = {k: v.astype(np.float64) for k, v in start.items()}
    st: dict = {}
    for t0, b in enumerate(_batches(n_steps, np.float64)):
        grads = _np_grads(p, b["x"], b["y"])
        if cfg.clip_norm:
            grads = _clip(grads, cfg.clip_norm)
        lr = np_schedule(cfg.schedule, cfg.optimizer.args["lr"], t0, spe, cfg.epochs)
        np_step(cfg.optimizer, p, grads, st, t0 + 1, lr)
    return p, st


SCHEDULED = [
    ("adam", ScheduleSpec("step_decay", {"every": 1, "gamma": 0.5}), None),
    ("sgd_momentum", ScheduleSpec("exponential", {"gamma": 0.7}), None),
    ("rmsprop", ScheduleSpec("cosine", {"warmup": 1}), None),
    ("adamw", ScheduleSpec("cosine", {"warmup": 0}), 0.05),
    ("sgd_nesterov", ScheduleSpec(), 0.05),
    ("adagrad", ScheduleSpec(), 1e9),  # a bound far above the norm: no change
]


@pytest.mark.parametrize("case", sorted(CASES))
def test_optimizer_matches_numpy_reimplementation(case):
    cfg = TrainConfig("linreg", optimizer=_spec(case), epochs=2)
    start, params, states = _run_graph(cfg, "f64", spe=1)
    ref, ref_state = _run_numpy(cfg, start, spe=1)
    for k in ref:
        np.testing.assert_allclose(params[k], ref[k], rtol=1e-6, atol=1e-9, err_msg=k)
        assert not np.array_equal(params[k], start[k]), k
    for slot, v in ref_state.items():
        np.testing.assert_allclose(states[f"opt.{slot[:-1]}.{slot[-1]}"], v, rtol=1e-6,
                                   atol=1e-12)
    assert states["opt.step"] == 3 and states["opt.step"].dtype == np.int32


@pytest.mark.parametrize("case,sched,clip", SCHEDULED)
def test_schedules_and_clipping_match_numpy(case, sched, clip):
    cfg = TrainConfig("linreg", optimizer=_spec(case), schedule=sched, clip_norm=clip, epochs=2)
    start, params, _ = _run_graph(cfg, "f64", spe=2)
    ref, _ = _run_numpy(cfg, start, spe=2)
    for k in ref:
        np.testing.assert_allclose(params[k], ref[k], rtol=1e-6, atol=1e-9, err_msg=k)


def test_clipping_changes_the_step():
    base = TrainConfig("linreg", optimizer=_spec("sgd"))
    clipped = TrainConfig("linreg", optimizer=_spec("sgd"), clip_norm=0.01)
    _, p1, _ = _run_graph(base, "f64", spe=1, n_steps=1)
    start, p2, _ = _run_graph(clipped, "f64", spe=1, n_steps=1)
    moved = math.sqrt(sum(float(((p2[k] - start[k]) ** 2).sum()) for k in start))
    assert moved == pytest.approx(0.1 * 0.01, rel=1e-4)  # lr * clip_norm: the norm was larger
    assert not np.allclose(p1["W"], p2["W"])


def _torch_optimizer(torch, spec: OptimizerSpec, tensors):
    a = spec.args
    if spec.name == "sgd":
        return torch.optim.SGD(tensors, lr=a["lr"], momentum=a["momentum"],
                               nesterov=a["nesterov"], weight_decay=a["weight_decay"])
    if spec.name in ("adam", "adamw"):
        cls = torch.optim.Adam if spec.name == "adam" else torch.optim.AdamW
        kw = {"weight_decay": a["weight_decay"]} if spec.name == "adamw" else {}
        return cls(tensors, lr=a["lr"], betas=(a["beta1"], a["beta2"]), eps=a["eps"],
                   foreach=False, **kw)
    if spec.name == "rmsprop":
        return torch.optim.RMSprop(tensors, lr=a["lr"], alpha=a["rho"], eps=a["eps"],
                                   momentum=a["momentum"], foreach=False)
    return torch.optim.Adagrad(tensors, lr=a["lr"], eps=a["eps"], foreach=False)


TORCH_CASES = [(c, None, None) for c in sorted(CASES)] + [
    ("adam", "step", None), ("sgd_momentum", "cosine", None), ("rmsprop_momentum", None, 0.05),
]


@pytest.mark.parametrize("case,sched,clip", TORCH_CASES)
def test_optimizer_matches_pytorch_in_float32(case, sched, clip):
    torch = pytest.importorskip("torch")
    spe, epochs = 1, 4
    schedule = {None: ScheduleSpec(),
                "step": ScheduleSpec("step_decay", {"every": 2, "gamma": 0.3}),
                "cosine": ScheduleSpec("cosine", {"warmup": 0})}[sched]
    cfg = TrainConfig("linreg", optimizer=_spec(case), schedule=schedule, clip_norm=clip,
                      epochs=epochs)
    start, params, _ = _run_graph(cfg, "f32", spe=spe)
    w = torch.tensor(start["W"], requires_grad=True)
    b = torch.tensor(start["b"], requires_grad=True)
    opt = _torch_optimizer(torch, cfg.optimizer, [w, b])
    sch = None
    if sched == "step":
        sch = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.3)
    elif sched == "cosine":
        sch = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * spe)
    for batch in _batches(3, np.float32):
        opt.zero_grad()
        x, y = torch.tensor(batch["x"]), torch.tensor(batch["y"])
        torch.nn.functional.mse_loss(x @ w + b, y).backward()
        if clip:
            torch.nn.utils.clip_grad_norm_([w, b], clip)
        opt.step()
        if sch is not None:
            sch.step()
    np.testing.assert_allclose(params["W"], w.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(params["b"], b.detach().numpy(), rtol=1e-5, atol=1e-6)
