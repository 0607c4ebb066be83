"""simplify: what rewrites, what must not, and that values (NaN and inf included) are kept."""

import numpy as np
import pytest

from netc.compiler.errors import SourceLoc
from netc.compiler.interpret import run
from netc.compiler.ir import Graph, TensorType
from netc.compiler.passes import eliminate_dead, simplify
from netc.compiler.verify import verify

L = SourceLoc("s.net", 1, 1)
F = TensorType((2, 3), "f64")
SPECIAL = np.array([[1.5, -0.0, np.inf], [-np.inf, np.nan, -2.0]])


def _g():
    g = Graph("s", float_dtype="f64")
    return g, g.input("x", F, L)


def _c(g, v):
    return g.const(v, "f64", L)


def _opt(g, out):
    g.outputs["out"] = out
    with np.errstate(all="ignore"):
        before = run(g, {"x": SPECIAL}, {}).outputs["out"]
        eliminate_dead(simplify(g))
        verify(g)
        after = run(g, {"x": SPECIAL}, {}).outputs["out"]
    np.testing.assert_array_equal(after, before)  # equal_nan by default
    return g.outputs["out"]


@pytest.mark.parametrize("op,unit,swap", [("add", 0.0, False), ("add", 0.0, True),
                                          ("sub", 0.0, False), ("mul", 1.0, False),
                                          ("mul", 1.0, True), ("div", 1.0, False),
                                          ("pow", 1.0, False)])
def test_identities_disappear(op, unit, swap):
    g, x = _g()
    ins = [_c(g, unit), x] if swap else [x, _c(g, unit)]
    assert _opt(g, g.add(op, ins, None, L)) is x


def test_unit_that_broadcasts_the_result_is_kept():
    g, x = _g()
    ones = g.const(np.ones((4, 2, 3)), "f64", L)
    out = _opt(g, g.add("mul", [x, ones], None, L))
    assert out.op == "mul" and out.type.shape == (4, 2, 3)


def test_mul_by_zero_is_folded_only_where_exact():
    g, x = _g()
    out = _opt(g, g.add("mul", [x, _c(g, 0.0)], None, L))
    assert out.op == "mul"  # inf * 0 and nan * 0 are NaN: must stay
    g = Graph("s", float_dtype="f64")
    y = g.input("y", TensorType((2,), "i32"), L)
    oh = g.add("one_hot", [y], {"n": 3}, L)
    g.outputs["out"] = g.add("mul", [oh, g.const(0.0, "f64", L)], None, L)
    eliminate_dead(simplify(g))
    assert g.outputs["out"].op == "broadcast_to"
    assert g.outputs["out"].inputs[0].op == "const"


def test_chains_neg_transpose_reshape_broadcast():
    g, x = _g()
    assert _opt(g, g.add("neg", [g.add("neg", [x], None, L)], None, L)) is x
    g, x = _g()
    t = g.add("transpose", [g.add("transpose", [x], {"perm": (1, 0)}, L)], {"perm": (1, 0)}, L)
    assert _opt(g, t) is x
    g, x = _g()
    r = g.add("reshape", [g.add("reshape", [x], {"shape": (6,)}, L)], {"shape": (3, 2)}, L)
    out = _opt(g, r)
    assert out.op == "reshape" and out.inputs[0] is x
    g, x = _g()
    assert _opt(g, g.add("reshape", [x], {"shape": (2, 3)}, L)) is x


def test_strength_reduction_of_pow():
    g, x = _g()
    out = _opt(g, g.add("pow", [x, _c(g, 2.0)], None, L))
    assert out.op == "mul" and out.inputs == [x, x]
    g, x = _g()
    a = g.add("abs", [x], None, L)
    out = _opt(g, g.add("pow", [a, _c(g, 0.5)], None, L))
    assert out.op == "sqrt"


def test_constant_folding_and_broadcast_constants():
    g, x = _g()
    k = g.add("exp", [g.add("add", [_c(g, 1.0), _c(g, 2.0)], None, L)], None, L)
    out = _opt(g, g.add("mul", [x, k], None, L))
    assert out.inputs[1].op == "const"
    assert out.inputs[1].attrs["value"] == pytest.approx(np.exp(3.0))
    g, x = _g()
    full = g.const(np.full((2, 3), 2.5), "f64", L)
    out = _opt(g, g.add("add", [x, full], None, L))
    assert out.inputs[1].op == "const" and out.inputs[1].type.shape == ()
    assert not any(n.op == "const" and n.type.size > 1 for n in g.nodes_in_order())
    g, x = _g()
    b = g.add("broadcast_to", [_c(g, 3.0)], {"shape": (2, 3)}, L)
    out = _opt(g, g.add("sub", [x, b], None, L))
    assert out.inputs[1].type.shape == ()


def test_folding_is_limited_in_size_and_skips_random():
    g = Graph("s", float_dtype="f64")
    big = g.const(np.arange(10_000.0), "f64", L)
    g.outputs["out"] = g.add("exp", [big], None, L)
    key = g.rng_key(L)
    g.outputs["r"] = g.add("random_uniform", [key], {"shape": (3,), "stream": 0}, L)
    eliminate_dead(simplify(g))
    assert g.outputs["out"].op == "exp" and g.outputs["r"].op == "random_uniform"


def test_stable_softmax_shares_its_shift_with_cross_entropy_after_cse():
    from pass_models import MLP, step_graph

    from netc.compiler.passes import eliminate_common
    g = step_graph(MLP, grads_as_outputs=False)
    maxes = sum(n.op == "max" for n in g.nodes_in_order())
    eliminate_dead(eliminate_common(simplify(g)))
    assert maxes == 2 and sum(n.op == "max" for n in g.nodes_in_order()) == 1


def _gates(g, x, order):
    """The gradient contributions of x's column blocks [0:1], [1:2], [2:3], added in `order`."""
    parts = {i: g.add("slice_grad", [g.add("slice", [x], {"starts": (0, i), "stops": (2, i + 1)},
                                           L)],
                      {"in_shape": (2, 3), "starts": (0, i), "stops": (2, i + 1)}, L)
             for i in range(3)}
    total = parts[order[0]]
    for i in order[1:]:
        total = g.add("add", [total, parts[i]], None, L)
    return total


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 0, 2)])
def test_neighbouring_slice_grads_join_into_one(order):
    g, x = _g()
    out = _opt(g, _gates(g, x, order))
    # every neighbour pair joins: one concat of the slices covers the tensor, no add is left
    assert out.op == "concat" and all(v.op != "add" for v in g.nodes_in_order()), out.op


def test_slice_grads_that_are_not_neighbours_stay():
    g, x = _g()
    out = _opt(g, _gates(g, x, (0, 2)))
    assert out.op == "add"


def test_sum_of_weight_gradient_products_becomes_one_product():
    """sum_t h_tᵀ·d_t (a recurrence's weight gradient) -> one GEMM over the stacked steps."""
    g = Graph("s", float_dtype="f64")
    hs = [g.input(f"h{t}", TensorType((4, 3), "f64"), L) for t in range(4)]
    ds = [g.input(f"d{t}", TensorType((4, 5), "f64"), L) for t in range(4)]
    total = None
    for h, d in zip(hs, ds):
        p = g.add("matmul", [g.add("transpose", [h], {"perm": (1, 0)}, L), d], None, L)
        total = p if total is None else g.add("add", [total, p], None, L)
    g.outputs["out"] = total
    rng = np.random.default_rng(0)
    feeds = {f"{k}{t}": rng.normal(size=(4, n)) for t in range(4) for k, n in (("h", 3), ("d", 5))}
    before = run(g, feeds, {}).outputs["out"]
    eliminate_dead(simplify(g))
    verify(g)
    np.testing.assert_allclose(run(g, feeds, {}).outputs["out"], before, rtol=1e-12)
    ops = [n.op for n in g.nodes_in_order()]
    assert ops.count("matmul") == 1 and ops.count("concat") == 2 and "add" not in ops


def test_products_read_elsewhere_are_not_stacked():
    g = Graph("s", float_dtype="f64")
    h, d = (g.input(n, TensorType((4, 4), "f64"), L) for n in ("h", "d"))
    p1 = g.add("matmul", [g.add("transpose", [h], {"perm": (1, 0)}, L), d], None, L)
    p2 = g.add("matmul", [g.add("transpose", [d], {"perm": (1, 0)}, L), h], None, L)
    g.outputs["out"] = g.add("add", [p1, p2], None, L)
    g.outputs["p1"] = p1
    simplify(g)
    assert g.outputs["out"].op == "add"


def _one_hot_graph(scale_ops):
    g = Graph("s", float_dtype="f32")
    y = g.input("y", TensorType((4,), "i32"), L)
    v = g.add("one_hot", [y], {"n": 5, "dtype": "f32"}, L)
    for op, c in scale_ops:
        v = g.add(op, [v] if op == "neg" else [g.const(np.array([c], np.float32), "f32", L), v],
                  None, L)
    return g, g.add("sum", [v], {"axes": (1,), "keepdims": False}, L)


@pytest.mark.parametrize("scale_ops", [[("mul", 1 / 32)], [("mul", 0.25), ("neg", None)],
                                       [("neg", None)], [("mul", -3.0), ("mul", 0.5)]])
def test_row_sum_of_a_scaled_one_hot_is_the_scale(scale_ops):
    """The gradient of a cross-entropy mean: sum(c * one_hot(y), classes) is c in every row,
    exactly (one c and zeros of either sign)."""
    g, s = _one_hot_graph(scale_ops)
    g.outputs["out"] = s
    feeds = {"y": np.array([0, 4, 2, 2], np.int32)}
    before = run(g, feeds, {}).outputs["out"]
    eliminate_dead(simplify(g))
    verify(g)
    out = g.outputs["out"]
    assert out.op == "broadcast_to" and out.inputs[0].op == "const"
    np.testing.assert_array_equal(run(g, feeds, {}).outputs["out"], before)


@pytest.mark.parametrize("scale_ops, axes", [([("mul", np.inf)], (1,)), ([("mul", 0.5)], (0,))])
def test_row_sum_rule_keeps_what_it_cannot_prove(scale_ops, axes):
    """inf * 0 is NaN in the other columns, and a sum over the batch axis counts labels."""
    g, s = _one_hot_graph(scale_ops)
    s = g.add("sum", [s.inputs[0]], {"axes": axes, "keepdims": False}, L)
    g.outputs["out"] = s
    eliminate_dead(simplify(g))
    assert g.outputs["out"].op == "sum"


def test_reshape_of_a_broadcast_scalar_is_a_broadcast():
    g = Graph("s", float_dtype="f32")
    c = g.input("c", TensorType((1,), "f32"), L)
    b = g.add("broadcast_to", [c], {"shape": (4,)}, L)
    g.outputs["out"] = g.add("reshape", [b], {"shape": (4, 1)}, L)
    eliminate_dead(simplify(g))
    out = g.outputs["out"]
    assert out.op == "broadcast_to" and out.inputs[0] is c and out.type.shape == (4, 1)


def test_row_sum_rule_needs_labels_checked_at_the_boundary():
    """An index computed in the graph may fall outside [0, n): its one_hot row sums to 0."""
    g = Graph("s", float_dtype="f32")
    y = g.input("y", TensorType((4,), "i32"), L)
    shifted = g.add("add", [y, g.const(7, "i32", L)], None, L)
    v = g.add("one_hot", [shifted], {"n": 5, "dtype": "f32"}, L)
    g.outputs["out"] = g.add("sum", [v], {"axes": (1,), "keepdims": False}, L)
    eliminate_dead(simplify(g))
    assert g.outputs["out"].op == "sum"


@pytest.mark.parametrize("op", ["slice", "slice_grad"])
@pytest.mark.parametrize("steps,kept", [((1, 1), False), ((-1, 1), True), ((1, -1), True),
                                        ((-1, -1), True)])
def test_a_reversing_slice_of_the_whole_shape_is_kept(op, steps, kept):
    # a slice of the same shape was dropped as "the whole tensor" whatever its steps, so the JIT
    # computed x[::-1] (and its gradient) as x
    g, x = _g()
    attrs = {"starts": (None, None), "stops": (None, None), "steps": steps}
    if op == "slice_grad":
        attrs["in_shape"] = F.shape
    out = _opt(g, g.add(op, [x], attrs, L))
    assert (out.op == op) == kept
