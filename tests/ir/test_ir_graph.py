"""The graph IR: printer, deterministic order, networkx mirror, verifier, rewriting."""

import numpy as np
import pytest

from netc.compiler.errors import InternalCompilerError, SemanticError, SourceLoc
from netc.compiler.interpret import run
from netc.compiler.ir import Graph, TensorType
from netc.compiler.verify import verify

L = SourceLoc("m.net", 3, 12)


def mlp(mode="train"):
    g = Graph("mlp", mode=mode)
    x = g.input("x", TensorType((4, 3), "f32"), SourceLoc("m.net", 2, 5))
    y = g.input("y", TensorType((4,), "i32"), SourceLoc("m.net", 3, 5), role="target")
    w = g.param("fc1.W", TensorType((3, 2), "f32"), L, init=("normal", {"std": 0.1}))
    b = g.param("fc1.b", TensorType((2,), "f32"), L, init=("zeros", {}))
    h = g.add("add", [g.add("matmul", [x, w], None, L), b], None, L, name="h")
    g.outputs["h"] = h
    s = g.add("sum", [h], {"axes": -1}, SourceLoc("m.net", 9, 1))
    g.losses["loss"] = g.add("sum", [s], None, L)
    return g, x, y, w, b, h


EXPECTED = """\
graph mlp (f32, train)
%0 = input "x"() {role=input}  f32[4,3]  @m.net:2:5
%1 = input "y"() {role=target}  i32[4]  @m.net:3:5
%2 = param "fc1.W"() {init=normal(std=0.1), frozen=false}  f32[3,2]  @m.net:3:12
%3 = param "fc1.b"() {init=zeros, frozen=false}  f32[2]  @m.net:3:12
%4 = matmul(%0, %2)  f32[4,2]  @m.net:3:12
%5 = add(%4, %3)  f32[4,2]  @m.net:3:12  # h
%6 = sum(%5) {axes=(1,), keepdims=false}  f32[4]  @m.net:9:1
%7 = sum(%6) {axes=(0,), keepdims=false}  f32[]  @m.net:3:12
output h = %5
loss loss = %7"""


def test_printer():
    g, *_ = mlp()
    verify(g)
    assert str(g) == EXPECTED == g.to_text()
    c = g.const(2.5, "f32", L)
    assert g.to_text().splitlines()[-3] == f"%{c.id} = const() {{value=2.5}}  f32[]  @m.net:3:12"
    dot = g.to_dot()
    assert dot.startswith('digraph "mlp"') and 'n4 -> n5 [label="0"]' in dot


def test_roles_and_views():
    g, x, y, w, b, _ = mlp()
    assert dict(g.inputs) == {"x": x, "y": y} and y.attrs["role"] == "target"
    assert list(g.params) == ["fc1.W", "fc1.b"] and w.attrs["init"] == ("normal", {"std": 0.1})
    with pytest.raises(TypeError):
        g.params["z"] = w
    with pytest.raises(SemanticError, match="already declared as param"):
        g.state("fc1.W", TensorType((1,), "f32"), L)
    assert g.rng_key(L) is g.rng_key(L)
    assert x.type.rank == 2 and x.type.size == 12 and str(TensorType((), "bool")) == "bool[]"
    assert g.const(0.1, "f32", L).type == TensorType((), "f32")
    assert g.const(np.arange(3), "f64", L).type == TensorType((3,), "f64")
    with pytest.raises(InternalCompilerError, match="does not fit dtype i32"):
        g.const(2.5, "i32", L)


def test_deterministic_order():
    a, b = mlp()[0], mlp()[0]
    assert a.to_text() == b.to_text()
    g = Graph("ties")
    leaves = [g.param(f"p{i}", TensorType((2,), "f32"), L) for i in range(4)]
    s1 = g.add("add", [leaves[3], leaves[2]], None, L)
    s2 = g.add("add", [leaves[1], leaves[0]], None, L)
    top = g.add("mul", [s1, s2], None, L)
    assert [n.id for n in g.nodes_in_order()] == [0, 1, 2, 3, 4, 5, 6]
    # rewiring an early node to use a later one: order stays topological, ties by id
    late = g.add("neg", [leaves[0]], None, L)
    g.set_inputs(s1, [late, leaves[2]])
    order = [n.id for n in g.nodes_in_order()]
    assert order == [0, 1, 2, 3, 5, 7, 4, 6]
    assert order.index(late.id) < order.index(s1.id) < order.index(top.id)
    verify(g)


def test_double_edge_and_its_gradient():
    from netc.compiler.autodiff import grad
    g = Graph("sq", float_dtype="f64")
    x = g.param("x", TensorType((3,), "f64"), L)
    y = g.add("mul", [x, x], None, L)
    assert g.nx.number_of_edges(x.id, y.id) == 2
    assert sorted(k for _, _, k in g.nx.in_edges(y.id, keys=True)) == [0, 1]
    assert g.users(x) == [y]
    loss = g.add("sum", [y], None, L)
    gx = grad(g, loss, [x])[x.id]
    verify(g)
    xv = np.array([1.0, -2.0, 0.5])
    g.outputs["gx"] = gx
    np.testing.assert_allclose(run(g, {}, {"x": xv}).outputs["gx"], 2 * xv)


def _broken(mutate):
    g, x, y, w, b, h = mlp()
    mutate(g, x, y, w, b, h)
    with pytest.raises(InternalCompilerError, match="invalid graph"):
        verify(g)


def test_verify_catches_broken_graphs():
    _broken(lambda g, x, y, w, b, h: setattr(h, "type", TensorType((4, 3), "f32")))
    _broken(lambda g, x, y, w, b, h: setattr(h, "loc", None))
    _broken(lambda g, x, y, w, b, h: h.inputs.append(b))  # edges no longer mirror the inputs
    _broken(lambda g, x, y, w, b, h: g.nx.add_edge(h.id, w.id, key=0))  # a cycle
    _broken(lambda g, x, y, w, b, h: g.losses.__setitem__("bad", h))  # a non-scalar loss
    _broken(lambda g, x, y, w, b, h: g.updates.__setitem__("nope", h))  # no such state

    def foreign(g, x, y, w, b, h):
        other, *_ = mlp()
        g.outputs["alien"] = other.outputs["h"]
    _broken(foreign)

    def negative_axis(g, *_):
        s = g.losses["loss"].inputs[0]
        s.attrs["axes"] = (-1,)
    _broken(negative_axis)


def test_add_checks_its_inputs():
    g, x, *_ = mlp()
    other, ox, *_ = mlp()
    with pytest.raises(InternalCompilerError, match="not in graph"):
        g.add("neg", [ox], None, L)
    with pytest.raises(InternalCompilerError, match="takes 2 inputs"):
        g.add("add", [x], None, L)
    with pytest.raises(InternalCompilerError, match="unknown primitive"):
        g.add("frobnicate", [x], None, L)


def test_replace_uses_and_remove_nodes():
    g, x, y, w, b, h = mlp()
    twin = g.add("add", [g.add("matmul", [x, w], None, L), b], None, L)
    old_matmul = h.inputs[0]
    g.replace_uses(h, twin)
    assert g.outputs["h"] is twin and g.users(h) == []
    g.remove_nodes([h, old_matmul])
    assert h not in g and old_matmul not in g
    verify(g)
    with pytest.raises(InternalCompilerError, match="still used"):
        g.remove_nodes([x])
    with pytest.raises(InternalCompilerError, match="replacing"):
        g.replace_uses(twin, x)
    res = run(g, {"x": np.ones((4, 3)), "y": np.zeros(4)}, {"fc1.W": np.ones((3, 2)),
                                                           "fc1.b": np.ones(2)})
    np.testing.assert_allclose(res.outputs["h"], np.full((4, 2), 4.0))
    assert float(res.losses["loss"]) == 32.0
