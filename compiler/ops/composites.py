"""Composite operations: numerically stable decompositions into primitives (no new primitives).

Takes: a graph, input nodes, static arguments and the source location of the call.
Gives: one node per function (softmax, losses, activations, normalisation, shape helpers...).
build_ir reaches these through `builtins.BUILTINS`; layers and train.py may call them directly.

Invariants: nothing here has its own VJP: gradients come from the primitives emitted, so every
composite is differentiable wherever its primitives are. Stability: softmax, log_softmax and
logsumexp subtract a stop_gradient'ed max (exact: the functions are shift-invariant); softplus and
binary_cross_entropy use max(x, 0) + log1p(exp(-|x|)), -|x| as minimum(x, -x) so that the slope at
0 is 0.5; elu exponentiates min(x, 0) only. Losses
require prediction and target of the same shape (no silent broadcasting of [b, 1] against [b]).
Argument values that a user controls are validated here with the call's location.
"""

from __future__ import annotations

import math

from ..errors import NetTypeError, ShapeError, SourceLoc
from ..ir import Graph, Node
from .base import broadcast_shapes, emit, norm_axes, norm_axis, number_of_type

Loc = SourceLoc | None


def _c(g: Graph, v: float, like: Node, loc: Loc) -> Node:
    """A constant of `like`'s type; `v` may come from the user (clip's bounds, an alpha)."""
    return g.const(number_of_type(v, like.type.dtype, loc), like.type.dtype, loc)


def _float(op: str, x: Node, loc: Loc) -> None:
    if not x.type.is_float:
        raise NetTypeError(f"{op} needs a floating-point tensor, got {x.type}", loc)


def _axes(op: str, axes, x: Node, loc: Loc) -> tuple[int, ...]:
    try:
        return norm_axes(op, axes, x.type.rank)
    except (ShapeError, NetTypeError) as e:
        e.diagnostics[0].loc = e.loc or loc
        raise


# ---------------------------------------------------------------------- reductions

def mean(g: Graph, x: Node, axes=None, keepdims: bool = False, loc: Loc = None) -> Node:
    _float("mean", x, loc)
    axes = _axes("mean", axes, x, loc)
    count = math.prod(x.type.shape[a] for a in axes)
    s = emit(g, "sum", [x], loc, axes=axes, keepdims=keepdims)
    return emit(g, "div", [s, _c(g, float(count), x, loc)], loc)


def var(g: Graph, x: Node, axes=None, keepdims: bool = False, loc: Loc = None) -> Node:
    """Population variance: the mean of squared deviations from the mean."""
    d = emit(g, "sub", [x, mean(g, x, axes, True, loc)], loc)
    return mean(g, emit(g, "mul", [d, d], loc), axes, keepdims, loc)


def _shifted(g: Graph, x: Node, axes: tuple[int, ...], loc: Loc) -> tuple[Node, Node]:
    """(x - m, m) with m = stop_gradient(max over axes, keepdims)."""
    m = emit(g, "stop_gradient", [emit(g, "max", [x], loc, axes=axes, keepdims=True)], loc)
    return emit(g, "sub", [x, m], loc), m


def logsumexp(g: Graph, x: Node, axes=None, keepdims: bool = False, loc: Loc = None) -> Node:
    _float("logsumexp", x, loc)
    axes = _axes("logsumexp", axes, x, loc)
    z, m = _shifted(g, x, axes, loc)
    s = emit(g, "sum", [emit(g, "exp", [z], loc)], loc, axes=axes, keepdims=True)
    out = emit(g, "add", [emit(g, "log", [s], loc), m], loc)
    if not keepdims:
        shape = tuple(d for i, d in enumerate(x.type.shape) if i not in axes)
        out = emit(g, "reshape", [out], loc, shape=shape)
    return out


def softmax(g: Graph, x: Node, axis: int = -1, loc: Loc = None) -> Node:
    _float("softmax", x, loc)
    axes = _axes("softmax", axis, x, loc)
    e = emit(g, "exp", [_shifted(g, x, axes, loc)[0]], loc)
    return emit(g, "div", [e, emit(g, "sum", [e], loc, axes=axes, keepdims=True)], loc)


def log_softmax(g: Graph, x: Node, axis: int = -1, loc: Loc = None) -> Node:
    _float("log_softmax", x, loc)
    axes = _axes("log_softmax", axis, x, loc)
    z, _ = _shifted(g, x, axes, loc)
    s = emit(g, "sum", [emit(g, "exp", [z], loc)], loc, axes=axes, keepdims=True)
    return emit(g, "sub", [z, emit(g, "log", [s], loc)], loc)


# ---------------------------------------------------------------------- activations

def gelu(g: Graph, x: Node, loc: Loc = None) -> Node:
    """Exact GELU: x * (1 + erf(x / sqrt 2)) / 2."""
    _float("gelu", x, loc)
    e = emit(g, "erf", [emit(g, "mul", [x, _c(g, 1 / math.sqrt(2), x, loc)], loc)], loc)
    half_x = emit(g, "mul", [x, _c(g, 0.5, x, loc)], loc)
    return emit(g, "mul", [half_x, emit(g, "add", [e, _c(g, 1.0, x, loc)], loc)], loc)


def _log1p_exp_neg_abs(g: Graph, x: Node, loc: Loc) -> Node:
    """log(1 + exp(-|x|)), never overflowing. -|x| is written minimum(x, -x), whose tie at 0 goes
    to x (slope 1): with relu'(0) = 0, relu(x) + this then has the slope sigmoid(0) = 0.5 at 0,
    as softplus has (neg(abs(x)), with abs'(0) = 0, gave 0 there). No cancellation either side."""
    e = emit(g, "exp", [emit(g, "minimum", [x, emit(g, "neg", [x], loc)], loc)], loc)
    return emit(g, "log1p", [e], loc)


def softplus(g: Graph, x: Node, loc: Loc = None) -> Node:
    _float("softplus", x, loc)
    return emit(g, "add", [emit(g, "relu", [x], loc), _log1p_exp_neg_abs(g, x, loc)], loc)


def silu(g: Graph, x: Node, loc: Loc = None) -> Node:
    _float("silu", x, loc)
    return emit(g, "mul", [x, emit(g, "sigmoid", [x], loc)], loc)


def elu(g: Graph, x: Node, alpha: float = 1.0, loc: Loc = None) -> Node:
    _float("elu", x, loc)
    neg = emit(g, "expm1", [emit(g, "minimum", [x, _c(g, 0.0, x, loc)], loc)], loc)
    neg = emit(g, "mul", [neg, _c(g, alpha, x, loc)], loc)
    return emit(g, "where", [emit(g, "gt", [x, _c(g, 0.0, x, loc)], loc), x, neg], loc)


def leaky_relu(g: Graph, x: Node, alpha: float = 0.01, loc: Loc = None) -> Node:
    _float("leaky_relu", x, loc)
    scaled = emit(g, "mul", [x, _c(g, alpha, x, loc)], loc)
    return emit(g, "where", [emit(g, "gt", [x, _c(g, 0.0, x, loc)], loc), x, scaled], loc)


def clip(g: Graph, x: Node, lo: float, hi: float, loc: Loc = None) -> Node:
    if lo > hi:
        raise ShapeError(f"clip: lower bound {lo} is above upper bound {hi}", loc)
    lower = emit(g, "maximum", [x, _c(g, lo, x, loc)], loc)
    return emit(g, "minimum", [lower, _c(g, hi, x, loc)], loc)


def dropout(g: Graph, x: Node, p: float, loc: Loc = None) -> Node:
    """Train mode: keep where uniform >= p, scaled by 1/(1-p). Eval mode or p == 0: identity.
    The uniform draw, p and 1/(1-p) are all in x's dtype (native code compares the same way)."""
    _float("dropout", x, loc)
    if not 0.0 <= p < 1.0:
        raise ShapeError(f"dropout: p must be in [0, 1), got {p}", loc)
    if g.mode == "eval" or p == 0.0:
        return x
    u = emit(g, "random_uniform", [g.rng_key(loc)], loc, shape=x.type.shape,
             stream=g.new_stream(), dtype=x.type.dtype)
    keep = emit(g, "ge", [u, _c(g, p, x, loc)], loc)
    scaled = emit(g, "mul", [x, _c(g, 1.0 / (1.0 - p), x, loc)], loc)
    return emit(g, "where", [keep, scaled, _c(g, 0.0, x, loc)], loc)


def layer_norm_fn(g: Graph, x: Node, gamma: Node, beta: Node, eps: float = 1e-5,
                  loc: Loc = None) -> Node:
    """(x - mean) / sqrt(var + eps) * gamma + beta over the last axis."""
    _float("layer_norm_fn", x, loc)
    if x.type.rank == 0 or eps <= 0:
        raise ShapeError(f"layer_norm_fn: needs a tensor of rank >= 1 and eps > 0, got {x.type} "
                         f"and eps={eps}", loc)
    try:
        ok = broadcast_shapes("layer_norm_fn", x.type, gamma.type, beta.type) == x.type.shape
    except ShapeError:
        ok = False
    if not ok:
        raise ShapeError(f"layer_norm_fn: scale {gamma.type} and shift {beta.type} must "
                         f"broadcast to {x.type}", loc)
    xc = emit(g, "sub", [x, mean(g, x, -1, True, loc)], loc)
    v = mean(g, emit(g, "mul", [xc, xc], loc), -1, True, loc)
    r = emit(g, "rsqrt", [emit(g, "add", [v, _c(g, eps, x, loc)], loc)], loc)
    y = emit(g, "mul", [emit(g, "mul", [xc, r], loc), gamma], loc)
    return emit(g, "add", [y, beta], loc)


# ---------------------------------------------------------------------- shapes and sources

def flatten(g: Graph, x: Node, loc: Loc = None) -> Node:
    """[b, ...] -> [b, prod(...)] (a rank-1 [b] becomes [b, 1])."""
    if x.type.rank == 0:
        raise ShapeError(f"flatten: needs a tensor of rank >= 1, got {x.type}", loc)
    return emit(g, "reshape", [x], loc, shape=(x.type.shape[0], -1))


def stack(g: Graph, xs: list[Node], axis: int = 0, loc: Loc = None) -> Node:
    if not xs or any(x.type != xs[0].type for x in xs):
        shown = ", ".join(str(x.type) for x in xs)
        raise ShapeError(f"stack: needs tensors of one type, got [{shown}]", loc)
    t = xs[0].type
    try:
        ax = norm_axis("stack", axis, t.rank + 1)
    except ShapeError as e:
        raise ShapeError(e.message, loc) from None
    shape = t.shape[:ax] + (1,) + t.shape[ax:]
    parts = [emit(g, "reshape", [x], loc, shape=shape) for x in xs]
    return emit(g, "concat", parts, loc, axis=ax) if len(parts) > 1 else parts[0]


def _shape(op: str, shape, loc: Loc) -> tuple[int, ...]:
    shape = tuple(shape)
    if not all(isinstance(d, int) and d >= 1 for d in shape):
        raise ShapeError(f"{op}: shape must be a list of positive integers, got {list(shape)}", loc)
    return shape


def full(g: Graph, shape, value: float, loc: Loc = None) -> Node:
    c = g.const(value, g.float_dtype, loc)
    shape = _shape("zeros" if value == 0 else "ones", shape, loc)
    return emit(g, "broadcast_to", [c], loc, shape=shape) if shape else c


def zeros(g: Graph, shape, loc: Loc = None) -> Node:
    return full(g, shape, 0.0, loc)


def ones(g: Graph, shape, loc: Loc = None) -> Node:
    return full(g, shape, 1.0, loc)


def _random(g: Graph, op: str, shape, loc: Loc) -> Node:
    return emit(g, op, [g.rng_key(loc)], loc, shape=_shape(op, shape, loc),
                stream=g.new_stream(), dtype=g.float_dtype)


def randn(g: Graph, shape, loc: Loc = None) -> Node:
    return _random(g, "random_normal", shape, loc)


def rand(g: Graph, shape, loc: Loc = None) -> Node:
    return _random(g, "random_uniform", shape, loc)


def global_avg_pool(g: Graph, x: Node, loc: Loc = None) -> Node:
    if x.type.rank != 4:
        raise ShapeError(f"global_avg_pool: expected a rank-4 NCHW tensor, got {x.type}", loc)
    return mean(g, x, (2, 3), False, loc)


def one_hot(g: Graph, y: Node, n: int, loc: Loc = None) -> Node:
    return emit(g, "one_hot", [y], loc, n=n, dtype=g.float_dtype)


def broadcast_to(g: Graph, x: Node, shape, loc: Loc = None) -> Node:
    return emit(g, "broadcast_to", [x], loc, shape=tuple(shape))


# ---------------------------------------------------------------------- losses and penalties

def _same_shape(op: str, pred: Node, y: Node, loc: Loc) -> None:
    _float(op, pred, loc)
    if pred.type != y.type:
        raise ShapeError(f"{op}: prediction {pred.type} and target {y.type} must have the same "
                         "shape and dtype", loc)


def cross_entropy(g: Graph, logits: Node, labels: Node, loc: Loc = None) -> Node:
    """Mean over the batch of -log softmax(logits)[label]; labels are i32 class indices."""
    _float("cross_entropy", logits, loc)
    if labels.type.dtype != "i32":
        raise NetTypeError(f"cross_entropy: labels must be i32 class indices, got {labels.type}",
                           loc)
    if logits.type.rank != labels.type.rank + 1 or logits.type.shape[:-1] != labels.type.shape:
        raise ShapeError(f"cross_entropy: logits {logits.type} do not fit labels {labels.type} "
                         "(expected logits [..., classes] and labels [...])", loc)
    lsm = log_softmax(g, logits, -1, loc)
    oh = emit(g, "one_hot", [labels], loc, n=logits.type.shape[-1], dtype=logits.type.dtype)
    picked = emit(g, "sum", [emit(g, "mul", [lsm, oh], loc)], loc, axes=(-1,), keepdims=False)
    return emit(g, "neg", [mean(g, picked, None, False, loc)], loc)


def binary_cross_entropy(g: Graph, logits: Node, y: Node, loc: Loc = None) -> Node:
    """Mean of max(x, 0) - x*y + log1p(exp(-|x|)) over all elements (from logits)."""
    _same_shape("binary_cross_entropy", logits, y, loc)
    t = emit(g, "sub", [emit(g, "relu", [logits], loc), emit(g, "mul", [logits, y], loc)], loc)
    return mean(g, emit(g, "add", [t, _log1p_exp_neg_abs(g, logits, loc)], loc), None, False, loc)


def mse(g: Graph, pred: Node, y: Node, loc: Loc = None) -> Node:
    _same_shape("mse", pred, y, loc)
    d = emit(g, "sub", [pred, y], loc)
    return mean(g, emit(g, "mul", [d, d], loc), None, False, loc)


def mae(g: Graph, pred: Node, y: Node, loc: Loc = None) -> Node:
    _same_shape("mae", pred, y, loc)
    return mean(g, emit(g, "abs", [emit(g, "sub", [pred, y], loc)], loc), None, False, loc)


def huber(g: Graph, pred: Node, y: Node, delta: float = 1.0, loc: Loc = None) -> Node:
    """Mean of 0.5 d^2 for |d| <= delta, delta (|d| - delta/2) beyond: 0.5 q^2 + delta (|d| - q),
    q = min(|d|, delta)."""
    _same_shape("huber", pred, y, loc)
    if delta <= 0:
        raise ShapeError(f"huber: delta must be positive, got {delta}", loc)
    d = emit(g, "abs", [emit(g, "sub", [pred, y], loc)], loc)
    q = emit(g, "minimum", [d, _c(g, delta, d, loc)], loc)
    quad = emit(g, "mul", [emit(g, "mul", [q, q], loc), _c(g, 0.5, d, loc)], loc)
    lin = emit(g, "mul", [emit(g, "sub", [d, q], loc), _c(g, delta, d, loc)], loc)
    return mean(g, emit(g, "add", [quad, lin], loc), None, False, loc)


def _penalty(g: Graph, op: str, ts: list[Node], unary, loc: Loc) -> Node:
    if not ts:
        raise ShapeError(f"{op}: needs at least one tensor", loc)
    total = None
    for t in ts:
        _float(op, t, loc)
        s = emit(g, "sum", [unary(t)], loc, axes=None, keepdims=False)
        total = s if total is None else emit(g, "add", [total, s], loc)
    return total


def l1(g: Graph, ts: list[Node], loc: Loc = None) -> Node:
    """Sum of |t| over every element of every tensor."""
    return _penalty(g, "l1", ts, lambda t: emit(g, "abs", [t], loc), loc)


def l2(g: Graph, ts: list[Node], loc: Loc = None) -> Node:
    """Sum of t^2 over every element of every tensor."""
    return _penalty(g, "l2", ts, lambda t: emit(g, "mul", [t, t], loc), loc)
