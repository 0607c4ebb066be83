"""eliminate_common and eliminate_dead: what merges, what must not, what survives."""

import numpy as np

from netc.compiler.errors import SourceLoc
from netc.compiler.ir import Graph, TensorType
from netc.compiler.passes import eliminate_common, eliminate_dead
from netc.compiler.verify import verify

L = SourceLoc("c.net", 1, 1)
F = TensorType((4,), "f64")


def test_equal_nodes_merge_commutative_included():
    g = Graph("c", float_dtype="f64")
    x, y = g.input("x", F, L), g.input("y", F, L)
    a = g.add("add", [x, y], None, L)
    b = g.add("add", [y, x], None, L)
    s1 = g.add("sub", [x, y], None, L)
    s2 = g.add("sub", [y, x], None, L)
    g.outputs.update(a=a, b=b, s1=s1, s2=s2)
    eliminate_common(g)
    verify(g)
    assert g.outputs["a"] is g.outputs["b"]
    assert g.outputs["s1"] is not g.outputs["s2"]  # sub is not commutative


def test_consts_compare_by_value_dtype_and_shape():
    g = Graph("c", float_dtype="f64")
    x = g.input("x", F, L)
    outs = [g.add("mul", [x, g.const(v, dt, L)], None, L) if dt == "f64" else None
            for v, dt in ((2.0, "f64"), (2.0, "f64"), (0.0, "f64"), (-0.0, "f64"))]
    g.outputs.update({f"o{i}": o for i, o in enumerate(outs)})
    eliminate_common(g)
    assert g.outputs["o0"] is g.outputs["o1"]
    assert g.outputs["o2"] is not g.outputs["o3"]  # 0.0 and -0.0 differ
    consts = [n for n in g.nodes_in_order() if n.op == "const"]
    assert len(consts) == 3


def test_random_streams_are_never_merged_but_the_same_draw_is():
    g = Graph("c", float_dtype="f64")
    key = g.rng_key(L)
    draws = [g.add("random_uniform", [key], {"shape": (4,), "stream": s}, L) for s in (0, 1, 0)]
    g.outputs.update({f"r{i}": d for i, d in enumerate(draws)})
    eliminate_common(g)
    assert g.outputs["r0"] is not g.outputs["r1"]
    assert g.outputs["r0"] is g.outputs["r2"]


def test_dce_keeps_interface_leaves_and_drops_the_rest():
    g = Graph("d", float_dtype="f64")
    x = g.input("x", F, L)
    unused_p = g.param("unused", F, L)
    g.state("s", F, L)
    g.add("exp", [g.add("mul", [x, g.const(3.0, "f64", L)], None, L)], None, L)
    g.add("random_uniform", [g.rng_key(L)], {"shape": (2,), "stream": 0}, L)
    g.outputs["y"] = g.add("neg", [x], None, L)
    eliminate_dead(g)
    verify(g)
    assert sorted(n.op for n in g.nodes_in_order()) == ["input", "neg", "param", "state"]
    assert g.params["unused"] is unused_p and g.rng_key_node is None


def test_dce_keeps_what_updates_need():
    g = Graph("d", float_dtype="f64")
    s = g.state("s", F, L)
    g.updates["s"] = g.add("mul", [s, g.const(np.full(4, 0.5), "f64", L)], None, L)
    eliminate_dead(g)
    assert g.updates["s"].op == "mul" and len(g) == 3
