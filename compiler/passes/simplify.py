"""Optimizer pass 1 — algebraic simplification and constant folding (in place; returns the graph).

Takes: any verified graph (forward, forward + gradients, or a full step graph).
Gives: the same graph object, rewired so that every live root computes the same values with
fewer or cheaper nodes. Replaced nodes are left behind dead; `eliminate_dead` removes them.

Rewrites (applied to a fixpoint, each only when the result type is exactly the node's type):
- identities: x+0, 0+x, x-0, x*1, 1*x, x/1, pow(x, 1), cast to the same dtype, transpose by the
  identity permutation, reshape/broadcast_to to the same shape, where(c, a, a);
- chains: neg(neg x), transpose∘transpose (composed permutation), reshape∘reshape,
  broadcast_to∘broadcast_to, reshape∘broadcast_to of one element (a broadcast to the new shape:
  the gradient of a mean, reshaped for a row-wise consumer, is then never materialised);
- strength: pow(x, 2) -> x*x (one rounding either way: identical), pow(x, 0.5) -> sqrt(x);
- x*0 -> 0 only where it is bitwise exact: x is i32, a one_hot, or a cast of a bool (finite and
  non-negative, so no NaN, no inf, no -0 could appear);
- a non-scalar const whose elements are all equal becomes broadcast_to(scalar const); an
  elementwise op reading broadcast_to(y) reads y directly when its own broadcasting gives the
  same result type (so broadcast constants never get materialised);
- constant folding: an op whose inputs are all consts (not random, not broadcast_to) is evaluated
  with its primitive's reference when the result has at most FOLD_LIMIT elements;
- slices: a slice or slice_grad of the whole tensor is the tensor; the sum of the slice_grads of
  two neighbouring slices is one slice_grad of their concat (the gates of an LSTM);
- stacked products: aᵀ·b + cᵀ·d (2-D, each product read only by the sum) becomes
  concat([a, c])ᵀ · concat([b, d]): the weight gradient of a recurrence is one GEMM over all
  steps (nested concats along the same axis are flattened, so a chain of T terms gives one
  concat of T pieces);
- sum over the class axis of c * one_hot(y) (c a single-valued const, through neg and products)
  -> c in every row: the gradient of a cross-entropy mean through its log-sum-exp;
- gt(z, 0) -> gt(relu(z), 0) when relu(z) exists (the same mask, read from the activation);
- stop_gradient(x) -> x: the optimized graph is for evaluation, so its gradient cut is spent.
  Do not differentiate an optimized graph (autodiff runs before this pass in the pipeline).

Floating-point choices: x+0 -> x may keep a -0 that the addition would have made +0 (the values
compare equal); pow(x, 0.5) -> sqrt(x) differs only at x = -0 (sqrt gives -0, pow +0) and x = -inf
(sqrt gives NaN, pow +inf); stacked products reassociate a sum of products (rounding differs
at the last bits, as between two GEMM blockings). Everything else here is bitwise exact.
Softmax, log_softmax, logsumexp and cross-entropy need no fused rewrite: `ops/composites.py`
already emits them in the max-shifted stable form, and `eliminate_common` merges the max/shift
that softmax and cross-entropy of the same logits share.
"""

from __future__ import annotations

import numpy as np

from ..errors import NetError
from ..ir import Graph, Node
from ..ops import PRIMITIVES, EvalContext
from .common import BINARY, ELEMENTWISE, RANDOM, const_value, is_const_equal, live_roots

FOLD_LIMIT = 4096
MAX_ROUNDS = 20


def _new(g: Graph, op: str, inputs: list[Node], attrs: dict | None, like: Node) -> Node:
    return g.add(op, inputs, attrs, like.loc, name=like.name)


def _const_like(g: Graph, value: np.ndarray, like: Node) -> Node:
    """A const of `like`'s type: a scalar, or broadcast_to(scalar) if all elements are equal."""
    flat = np.asarray(value).reshape(-1)
    if like.type.size > 1 and np.all(flat == flat[0]):
        c = g.const(flat[0], like.type.dtype, like.loc)
        return _new(g, "broadcast_to", [c], {"shape": like.type.shape}, like)
    return g.const(np.asarray(value), like.type.dtype, like.loc)


def _exactly_finite_nonneg(x: Node) -> bool:
    return (x.type.dtype == "i32" or x.op == "one_hot"
            or (x.op == "cast" and x.inputs[0].type.dtype == "bool"))


def _identity(g: Graph, n: Node) -> Node | None:
    """Rules that return an existing value or a cheaper equivalent node."""
    op, ins = n.op, n.inputs
    if op in ("add", "sub", "mul", "div", "pow"):
        a, b = ins
        unit = {"add": 0, "sub": 0, "mul": 1, "div": 1, "pow": 1}[op]
        if is_const_equal(b, unit) and a.type == n.type:
            return a
        if op in ("add", "mul") and is_const_equal(a, unit) and b.type == n.type:
            return b
    if op == "mul":
        for x, z in (ins, ins[::-1]):
            if is_const_equal(z, 0) and _exactly_finite_nonneg(x):
                return _const_like(g, np.zeros(n.type.shape), n)
    if op == "pow" and ins[0].type == n.type:
        if is_const_equal(ins[1], 2):
            return _new(g, "mul", [ins[0], ins[0]], None, n)
        if is_const_equal(ins[1], 0.5):
            return _new(g, "sqrt", [ins[0]], None, n)
    if op == "neg" and ins[0].op == "neg":
        return ins[0].inputs[0]
    if (op in ("slice", "slice_grad") and ins[0].type == n.type
            and all(st == 1 or d == 1 for st, d in zip(n.attrs["steps"], n.type.shape))):
        return ins[0]  # the whole tensor, in order (x[::-1] keeps the shape but reverses)
    if op == "stop_gradient" or (op == "cast" and ins[0].type.dtype == n.type.dtype):
        return ins[0]
    if op == "where" and ins[1] is ins[2] and ins[1].type == n.type:
        return ins[1]
    if op == "gt" and is_const_equal(ins[1], 0) and ins[0].op != "relu":
        # relu's backward mask z > 0 equals relu(z) > 0 (NaN too): read the activation that is
        # kept for backward anyway instead of storing a separate mask
        for u in g.users(ins[0]):
            if u.op == "relu":
                return _new(g, "gt", [u, ins[1]], None, n)
    return None


def _shape_chain(g: Graph, n: Node) -> Node | None:
    op = n.op
    if op not in ("transpose", "reshape", "broadcast_to"):
        return None
    x = n.inputs[0]
    if op == "transpose":
        perm = n.attrs["perm"]
        if perm == tuple(range(len(perm))):
            return x
        if x.op == "transpose":
            composed = tuple(x.attrs["perm"][p] for p in perm)
            inner = x.inputs[0]
            if composed == tuple(range(len(composed))):
                return inner
            return _new(g, "transpose", [inner], {"perm": composed}, n)
        return None
    if x.type.shape == n.type.shape:
        return x
    if x.op == op:
        return _new(g, op, [x.inputs[0]], {"shape": n.type.shape}, n)
    if op == "reshape" and x.op == "broadcast_to" and x.inputs[0].type.size == 1:
        return _new(g, "broadcast_to", [x.inputs[0]], {"shape": n.type.shape}, n)
    return None


def _fold(g: Graph, n: Node) -> Node | None:
    if (n.op in RANDOM or n.op in ("broadcast_to", "const") or not n.inputs
            or n.type.size > FOLD_LIMIT or not all(x.op == "const" for x in n.inputs)):
        return None
    ctx = EvalContext(float_dtype=g.float_dtype)
    try:
        with np.errstate(all="ignore"):
            value = PRIMITIVES[n.op].reference([x.attrs["value"] for x in n.inputs],
                                               n.attrs, ctx)
    except NetError:  # e.g. a constant index out of range: leave it to fail at run time
        return None
    return _const_like(g, value, n)


def _uniform_const(g: Graph, n: Node) -> Node | None:
    val = const_value(n)
    if val is None or val.size <= 1:
        return None
    flat = val.reshape(-1)
    if not np.all(flat == flat[0]) or np.isnan(flat[0]):
        return None
    return _const_like(g, val, n)


def _strip_broadcasts(g: Graph, n: Node) -> bool:
    """Let an elementwise op broadcast a broadcast_to's input itself. True if rewired."""
    if n.op not in BINARY and n.op != "where":
        return False
    ins = [x.inputs[0] if x.op == "broadcast_to" else x for x in n.inputs]
    if all(a is b for a, b in zip(ins, n.inputs)):
        return False
    try:
        t = PRIMITIVES[n.op].infer([x.type for x in ins], n.attrs)
    except NetError:
        return False
    if t != n.type:
        return False
    g.set_inputs(n, ins)
    return True


def _along(v: Node, axis: int) -> list[Node]:
    """The pieces of v along `axis`: a concat's inputs (one level), else v itself."""
    return list(v.inputs) if v.op == "concat" and v.attrs["axis"] == axis else [v]


def _adjacent_slice_grads(g: Graph, n: Node) -> Node | None:
    """slice_grad(a, [s:m]) + slice_grad(b, [m:e]) -> slice_grad(concat([a, b]), [s:e]): the
    gradients of neighbouring slices of one tensor (an LSTM's four gates) are placed side by
    side once instead of each filling a zero tensor and being added up."""
    if n.op != "add":
        return None
    x, y = n.inputs
    if x.op != "slice_grad" or y.op != "slice_grad" or x is y:
        return None
    ax_, ay = x.attrs, y.attrs
    if (ax_["in_shape"] != ay["in_shape"] or x.type != n.type or y.type != n.type
            or any(st != 1 for st in (*ax_["steps"], *ay["steps"]))):
        return None
    differ = [k for k in range(len(ax_["starts"]))
              if (ax_["starts"][k], ax_["stops"][k]) != (ay["starts"][k], ay["stops"][k])]
    if len(differ) != 1:
        return None
    k = differ[0]
    if ax_["stops"][k] == ay["starts"][k]:
        first, second = x, y
    elif ay["stops"][k] == ax_["starts"][k]:
        first, second = y, x
    else:
        return None
    joined = _new(g, "concat", _along(first.inputs[0], k) + _along(second.inputs[0], k),
                  {"axis": k}, n)
    starts, stops = list(first.attrs["starts"]), list(first.attrs["stops"])
    stops[k] = second.attrs["stops"][k]
    return _new(g, "slice_grad", [joined], {"in_shape": ax_["in_shape"], "starts": tuple(starts),
                                            "stops": tuple(stops), "steps": ax_["steps"]}, n)




def _stacked_products(g: Graph, n: Node) -> Node | None:
    """aᵀ·b + cᵀ·d -> concat([a, c])ᵀ · concat([b, d]) (2-D, each product read only by this
    sum): a weight used at every step of a recurrence gets its gradient from one GEMM over all
    steps instead of one thin GEMM per step. Reassociates the sum (see the module docstring)."""
    if n.op != "add":
        return None
    x, y = n.inputs
    if x is y or any(m.op != "matmul" or m.type != n.type or m.type.rank != 2
                     or m.inputs[0].op != "transpose" or m.inputs[0].attrs["perm"] != (1, 0)
                     or [u.id for u in g.users(m)] != [n.id] for m in (x, y)):
        return None
    if {x.id, y.id} & {r.id for r in live_roots(g)}:  # a product wanted on its own stays
        return None
    lhs, rhs = [], []
    for m in (x, y):
        a, b = m.inputs
        lhs += _along(a.inputs[0], 0)
        rhs += _along(b, 0)
    left = _new(g, "concat", lhs, {"axis": 0}, n)
    right = _new(g, "concat", rhs, {"axis": 0}, n)
    return _new(g, "matmul", [_new(g, "transpose", [left], {"perm": (1, 0)}, n), right], None,
                n)


def _scaled_one_hot(x: Node) -> float | None:
    """c if x is c * one_hot(y) built from one_hot by neg and products with single-valued
    consts, else None. y must be an input: inputs are range-checked where data enters (an index
    computed in the graph could fall outside and give a row of zeros)."""
    scale = 1.0
    while not (x.op == "one_hot" and x.inputs[0].op == "input"):
        if x.op == "neg":
            scale, x = -scale, x.inputs[0]
        elif x.op == "mul":
            consts = [i for i in x.inputs if i.op == "const" and i.type.size == 1]
            rest = [i for i in x.inputs if i not in consts]
            if len(consts) != 1 or len(rest) != 1 or rest[0].type != x.type:
                return None
            scale, x = scale * float(np.asarray(consts[0].attrs["value"]).reshape(-1)[0]), rest[0]
        else:
            return None
    return scale


def _one_hot_row_sum(g: Graph, n: Node) -> Node | None:
    """sum over the class axis of c * one_hot(y) is c in every row: one element is c and the
    others are zeros of either sign, so the sum is exactly c (see `_scaled_one_hot` for why every
    row has its one). This is the gradient a cross-entropy mean sends through its log-sum-exp."""
    if n.op != "sum" or not n.type.is_float:
        return None
    x = n.inputs[0]
    if n.attrs["axes"] != (x.type.rank - 1,):
        return None
    scale = _scaled_one_hot(x)
    if scale is None or not np.isfinite(scale):  # inf * 0 would be NaN in the other columns
        return None
    c = g.const(np.asarray(scale, dtype=np.float32 if n.type.dtype == "f32" else np.float64),
                n.type.dtype, n.loc)
    value = c.attrs["value"]
    if float(value) != scale:  # the product of the factors rounds in the tensor's dtype
        return None
    return _new(g, "broadcast_to", [c], {"shape": n.type.shape}, n) if n.type.rank else c


RULES = (_identity, _shape_chain, _fold, _uniform_const, _adjacent_slice_grads,
         _stacked_products, _one_hot_row_sum)


def simplify(g: Graph) -> Graph:
    """Simplify `g` in place (see the module docstring) and return it."""
    for _ in range(MAX_ROUNDS):
        changed = False
        roots = {r.id for r in live_roots(g)}
        for n in g.nodes_in_order():
            if n.op in ("input", "param", "state", "rng_key"):
                continue
            if n.id not in roots and not g.users(n):
                continue  # dead (often a node replaced earlier): rewriting it would only grow
            if n.op in ELEMENTWISE and _strip_broadcasts(g, n):
                changed = True
            for rule in RULES:
                new = rule(g, n)
                if new is not None and new is not n:
                    g.replace_uses(n, new)
                    changed = True
                    break
        if not changed:
            break
    return g
