"""Reverse-mode autodiff: pruning, fan-out, cut points, end-to-end against finite differences."""

import numpy as np
import pytest

from netc.compiler.autodiff import grad
from netc.compiler.errors import InternalCompilerError, ShapeError, SourceLoc
from netc.compiler.interpret import interpret
from netc.compiler.ir import Graph, TensorType
from netc.compiler.ops import composites as C
from netc.compiler.verify import verify

L = SourceLoc("m.net", 1, 1)
T = TensorType


def _eval(g, node, params, feeds=None, states=None):
    return interpret(g, feeds or {}, params, states or {}, wanted=[node])[node.id]


def test_only_what_the_gradient_needs_is_built():
    g = Graph("p", float_dtype="f64")
    x = g.param("x", T((3,), "f64"), L)
    c = g.param("c", T((3,), "f64"), L, frozen=True)
    y = g.add("pow", [x, c], None, L)  # d/dc would need log(x): must not be built
    loss = g.add("sum", [y], None, L)
    before = len(g)
    gx = grad(g, loss, [x])[x.id]
    ops = [n.op for n in g.nodes_in_order()[before:]]
    assert "log" not in ops
    assert set(g.ancestors([gx])) >= {n.id for n in g.nodes_in_order()[before:]}
    verify(g)
    xv, cv = np.array([1.0, 2.0, 3.0]), np.array([2.0, 3.0, 0.5])
    np.testing.assert_allclose(_eval(g, gx, {"x": xv, "c": cv}), cv * xv ** (cv - 1))


def test_fan_out_is_summed_and_unrelated_wrt_gets_zeros():
    g = Graph("f", float_dtype="f64")
    x = g.param("x", T((2,), "f64"), L)
    unused = g.param("u", T((2, 2), "f64"), L)
    a = g.add("exp", [x], None, L)
    b = g.add("mul", [x, g.const(3.0, "f64", L)], None, L)
    loss = g.add("sum", [g.add("add", [a, b], None, L)], None, L)
    grads = grad(g, loss, [x, unused])
    xv = np.array([0.5, -1.0])
    vals = {"x": xv, "u": np.ones((2, 2))}
    np.testing.assert_allclose(_eval(g, grads[x.id], vals), np.exp(xv) + 3)
    np.testing.assert_array_equal(_eval(g, grads[unused.id], vals), np.zeros((2, 2)))
    assert grads[unused.id].type == unused.type


def test_cut_points_state_stop_gradient_integers():
    g = Graph("cut", float_dtype="f64")
    x = g.param("x", T((3,), "f64"), L)
    s = g.state("s", T((3,), "f64"), L)
    k = g.input("k", T((3,), "i32"), L)
    sg = g.add("stop_gradient", [x], None, L)
    through_int = g.add("cast", [g.add("cast", [x], {"dtype": "i32"}, L)], {"dtype": "f64"}, L)
    mixed = g.add("mul", [g.add("add", [x, s], None, L), g.add("cast", [k], {"dtype": "f64"}, L)],
                  None, L)
    loss = g.add("sum", [g.add("add", [g.add("add", [mixed, sg], None, L), through_int], None, L)],
                 None, L)
    gx = grad(g, loss, [x])[x.id]
    kv = np.array([1, 2, 3], dtype=np.int32)
    out = _eval(g, gx, {"x": np.ones(3)}, {"k": kv}, {"s": np.ones(3)})
    np.testing.assert_allclose(out, kv)  # only the path through mul; not sg, not the int casts
    with pytest.raises(InternalCompilerError, match="state"):
        grad(g, loss, [s])
    with pytest.raises(ShapeError, match="float scalar"):
        grad(g, mixed, [x])


def test_gradient_wrt_an_intermediate_and_double_backward():
    g = Graph("dd", float_dtype="f64")
    x = g.param("x", T((4,), "f64"), L)
    h = g.add("tanh", [x], None, L)
    loss = g.add("sum", [g.add("mul", [h, h], None, L)], None, L)
    gh, gx = (grad(g, loss, [h, x])[n.id] for n in (h, x))
    xv = np.array([-1.0, 0.1, 0.5, 2.0])
    np.testing.assert_allclose(_eval(g, gh, {"x": xv}), 2 * np.tanh(xv))
    # d/dx sum(dloss/dx) = d/dx sum(2 tanh(x) (1 - tanh^2 x))
    ggx = grad(g, g.add("sum", [gx], None, L), [x])[x.id]
    verify(g)
    t = np.tanh(xv)
    np.testing.assert_allclose(_eval(g, ggx, {"x": xv}), 2 * (1 - t ** 2) * (1 - 3 * t ** 2))


def test_small_network_end_to_end_against_finite_differences():
    r = np.random.default_rng(0)
    g = Graph("net", float_dtype="f64")
    x = g.input("x", T((3, 1, 6, 6), "f64"), L)
    y = g.input("y", T((3,), "i32"), L, role="target")
    w = g.param("conv.W", T((2, 1, 3, 3), "f64"), L)
    emb = g.param("emb", T((4, 8), "f64"), L)
    fc = g.param("fc.W", T((8, 3), "f64"), L)
    h = g.add("conv2d", [x, w], {"pad": 1}, L)
    h = g.add("max_pool2d", [C.gelu(g, h, L)], {"k": 2}, L)
    h = C.flatten(g, g.add("avg_pool2d", [h], {"k": (3, 3)}, L), L)  # [3, 2]
    h = g.add("concat", [h, h, h, h], {"axis": 1}, L)  # [3, 8]
    e = g.add("gather", [emb, g.add("argmax", [h], {"axis": 1}, L)], None, L)
    h = C.layer_norm_fn(g, g.add("add", [h, e], None, L), g.const(np.ones(8), "f64", L),
                        g.const(np.zeros(8), "f64", L), 1e-5, L)
    logits = g.add("matmul", [h, fc], None, L)
    loss = g.add("add", [C.cross_entropy(g, logits, y, L), C.l2(g, [fc], L)], None, L)
    wrt = [w, emb, fc]
    grads = grad(g, loss, wrt)
    verify(g)
    feeds = {"x": r.normal(size=(3, 1, 6, 6)), "y": np.array([0, 2, 1], dtype=np.int32)}
    params = {"conv.W": r.normal(size=(2, 1, 3, 3)), "emb": r.normal(size=(4, 8)),
              "fc.W": r.normal(size=(8, 3))}
    vals = interpret(g, feeds, params, {}, wanted=[grads[n.id] for n in wrt])
    for n in wrt:
        name = n.attrs["name"]
        fd = np.zeros(n.type.shape)
        for idx in np.ndindex(*n.type.shape):
            hi, lo = params[name].copy(), params[name].copy()
            hi[idx] += 1e-6
            lo[idx] -= 1e-6
            f = [float(_eval(g, loss, {**params, name: v}, feeds)) for v in (hi, lo)]
            fd[idx] = (f[0] - f[1]) / 2e-6
        np.testing.assert_allclose(vals[grads[n.id].id], fd, rtol=1e-5, atol=1e-7, err_msg=name)
