"""Optimizer update rules and learning-rate schedules as graph ops (part of the train stage).

Takes: a graph being extended by `train.build_step`, the step counter node (i32 scalar state:
steps completed before this one), parameter/gradient nodes and an `OptimizerSpec`/`ScheduleSpec`.
Gives: `learning_rate` (the lr as an in-graph function of the counter, so no recompilation per
epoch) and `apply_optimizer` (new parameter values and new optimizer-state values).

Every rule matches PyTorch's single-tensor (`foreach=False`) update exactly, with `t` the 1-based
number of the step being taken and `g` the (clipped) gradient:
- sgd:     g += wd*w;  m = mu*m + g (m starts at 0, the same as torch's first-step clone since
           dampening is 0);  d = g + mu*m if nesterov else m (or g when mu == 0);  w -= lr*d.
- adam:    m = m + (1-b1)*(g - m) (torch's lerp);  v = b2*v + (1-b2)*g*g;
           w -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)   (eps outside the sqrt,
           after bias correction).
- adamw:   w *= 1 - lr*wd first (decoupled), then the adam rule.
- rmsprop: v = rho*v + (1-rho)*g*g;  a = sqrt(v) + eps (eps outside the sqrt, no bias
           correction);  with momentum: m = mu*m + g/a, w -= lr*m;  else w -= lr*g/a.
- adagrad: s = s + g*g;  w -= lr * g / (sqrt(s) + eps)   (lr_decay 0, initial accumulator 0).

Schedules (t0 = steps completed, e = floor(t0 / steps_per_epoch) the epoch index):
constant lr0; step_decay lr0 * gamma^floor(e / every); exponential lr0 * gamma^e (both change at
epoch boundaries, like torch's StepLR/ExponentialLR stepped per epoch); cosine: with
W = warmup*steps_per_epoch and T = epochs*steps_per_epoch steps, lr0*(t0+1)/W while t0 < W, then
lr0 * (1 + cos(pi * min(1, (t0-W)/(T-W)))) / 2 (per step, like CosineAnnealingLR(T_max=T-W)).

Invariants: scalar step-dependent quantities (lr, bias corrections) are computed in f64 and cast to
the parameter dtype once, as torch computes them in Python doubles; tensor arithmetic stays in the
parameter dtype. cos is a degree-21 polynomial in f64 (error < 1e-17 on the range used), since the
IR has no trigonometric primitive. Optimizer states are `g.state` leaves initialised to zeros.
"""

from __future__ import annotations

import math

from .errors import InternalCompilerError, SourceLoc
from .ir import Graph, Node, TensorType
from .train_config import OptimizerSpec, ScheduleSpec

Loc = SourceLoc | None


def _f64(g: Graph, v: float, loc: Loc) -> Node:
    return g.const(float(v), "f64", loc)


def _op(g: Graph, op: str, *xs: Node, loc: Loc, **attrs) -> Node:
    return g.add(op, list(xs), attrs or None, loc)


def _floor_div(g: Graph, a: Node, b: float, loc: Loc) -> Node:
    """floor(a / b) for a >= 0 in f64 (casting to i32 truncates, which is floor for a >= 0)."""
    q = _op(g, "div", a, _f64(g, b, loc), loc=loc)
    return _op(g, "cast", _op(g, "cast", q, loc=loc, dtype="i32"), loc=loc, dtype="f64")


def _cos_pi(g: Graph, p: Node, loc: Loc) -> Node:
    """cos(pi * p) for p in [0, 1]: -sin(x) with x = pi * (p - 1/2) in [-pi/2, pi/2], by Taylor."""
    x = _op(g, "mul", _op(g, "sub", p, _f64(g, 0.5, loc), loc=loc), _f64(g, math.pi, loc),
            loc=loc)
    x2 = _op(g, "mul", x, x, loc=loc)
    coeffs = [(-1) ** k / math.factorial(2 * k + 1) for k in range(11)]
    acc = _f64(g, coeffs[-1], loc)
    for c in reversed(coeffs[:-1]):
        acc = _op(g, "add", _op(g, "mul", acc, x2, loc=loc), _f64(g, c, loc), loc=loc)
    return _op(g, "neg", _op(g, "mul", acc, x, loc=loc), loc=loc)


def learning_rate(g: Graph, t0: Node, lr0: float, sched: ScheduleSpec, *, steps_per_epoch: int,
                  epochs: int, loc: Loc) -> Node:
    """The lr (f64 scalar) for the step taken when `t0` steps (f64) are complete."""
    name, a = sched.name, sched.args
    if name == "constant":
        return _f64(g, lr0, loc)
    if name in ("step_decay", "exponential"):
        e = _floor_div(g, t0, steps_per_epoch, loc)
        if name == "step_decay":
            e = _floor_div(g, e, float(a["every"]), loc)
        decay = _op(g, "pow", _f64(g, a["gamma"], loc), e, loc=loc)
        return _op(g, "mul", _f64(g, lr0, loc), decay, loc=loc)
    if name == "cosine":
        warm = int(round(float(a.get("warmup", 0)) * steps_per_epoch))
        span = max(epochs * steps_per_epoch - warm, 1)
        p = _op(g, "div", _op(g, "sub", t0, _f64(g, warm, loc), loc=loc), _f64(g, span, loc),
                loc=loc)
        p = _op(g, "minimum", _op(g, "maximum", p, _f64(g, 0.0, loc), loc=loc),
                _f64(g, 1.0, loc), loc=loc)
        half = _op(g, "mul", _op(g, "add", _cos_pi(g, p, loc), _f64(g, 1.0, loc), loc=loc),
                   _f64(g, 0.5 * lr0, loc), loc=loc)
        if warm == 0:
            return half
        ramp = _op(g, "mul", _op(g, "add", t0, _f64(g, 1.0, loc), loc=loc),
                   _f64(g, lr0 / warm, loc), loc=loc)
        in_warmup = _op(g, "lt", t0, _f64(g, warm, loc), loc=loc)
        return _op(g, "where", in_warmup, ramp, half, loc=loc)
    raise InternalCompilerError(f"unknown schedule {name!r}", loc)


class _Slots:
    """Creates optimizer-state leaves `prefix + slot` and records their new values."""

    def __init__(self, g: Graph, prefix: str, like: Node, loc: Loc):
        self.g, self.prefix, self.like, self.loc = g, prefix, like, loc
        self.new: dict[str, Node] = {}

    def get(self, slot: str) -> Node:
        return self.g.state(self.prefix + slot, TensorType(self.like.type.shape,
                                                           self.like.type.dtype), self.loc)

    def set(self, slot: str, value: Node) -> None:
        self.new[self.prefix + slot] = value


def apply_optimizer(g: Graph, spec: OptimizerSpec, w: Node, grad: Node, lr: Node, t: Node,
                    prefix: str, loc: Loc) -> tuple[Node, dict[str, Node]]:
    """(new value of w, {optimizer state name: new value}). `lr` and `t` (1-based step number)
    are f64 scalars; state names are `prefix + slot`."""
    a = spec.args
    dt = w.type.dtype
    slots = _Slots(g, prefix, w, loc)

    def c(v: float) -> Node:
        return g.const(float(v), dt, loc)

    def to_dt(x: Node) -> Node:  # an f64 scalar, rounded once to the parameter dtype
        return _op(g, "cast", x, loc=loc, dtype=dt) if dt != "f64" else x

    def op(name: str, *xs: Node) -> Node:
        return _op(g, name, *xs, loc=loc)

    def step_down(x: Node, d: Node, rate: Node) -> Node:  # x - rate * d
        return op("sub", x, op("mul", d, rate))

    name = spec.name
    if name == "adamw" and a["weight_decay"]:
        shrink = op("sub", _f64(g, 1.0, loc), op("mul", lr, _f64(g, a["weight_decay"], loc)))
        w_in = op("mul", w, to_dt(shrink))
    else:
        w_in = w
    if name == "sgd":
        if a["weight_decay"]:
            grad = op("add", grad, op("mul", w, c(a["weight_decay"])))
        d = grad
        if a["momentum"]:
            m = op("add", op("mul", slots.get("m"), c(a["momentum"])), grad)
            slots.set("m", m)
            d = op("add", grad, op("mul", m, c(a["momentum"]))) if a["nesterov"] else m
        return step_down(w, d, to_dt(lr)), slots.new
    if name in ("adam", "adamw"):
        b1, b2 = float(a["beta1"]), float(a["beta2"])
        m_old = slots.get("m")
        m = op("add", m_old, op("mul", op("sub", grad, m_old), c(1.0 - b1)))
        v = op("add", op("mul", slots.get("v"), c(b2)), op("mul", op("mul", grad, grad),
                                                            c(1.0 - b2)))
        slots.set("m", m)
        slots.set("v", v)
        bc1 = op("sub", _f64(g, 1.0, loc), op("pow", _f64(g, b1, loc), t))
        bc2 = op("sub", _f64(g, 1.0, loc), op("pow", _f64(g, b2, loc), t))
        step_size = to_dt(op("div", lr, bc1))
        denom = op("add", op("div", op("sqrt", v), to_dt(op("sqrt", bc2))), c(a["eps"]))
        return step_down(w_in, op("div", m, denom), step_size), slots.new
    if name == "rmsprop":
        rho = float(a["rho"])
        v = op("add", op("mul", slots.get("v"), c(rho)), op("mul", op("mul", grad, grad),
                                                             c(1.0 - rho)))
        slots.set("v", v)
        scaled = op("div", grad, op("add", op("sqrt", v), c(a["eps"])))
        if a["momentum"]:
            scaled = op("add", op("mul", slots.get("m"), c(a["momentum"])), scaled)
            slots.set("m", scaled)
        return step_down(w, scaled, to_dt(lr)), slots.new
    if name == "adagrad":
        s = op("add", slots.get("v"), op("mul", grad, grad))
        slots.set("v", s)
        scaled = op("div", grad, op("add", op("sqrt", s), c(a["eps"])))
        return step_down(w, scaled, to_dt(lr)), slots.new
    raise InternalCompilerError(f"unknown optimizer {name!r}", loc)
