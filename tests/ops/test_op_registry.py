"""Every registered primitive: has sample cases; its shape rule agrees with its reference."""

import numpy as np
import pytest
from op_cases import CASES, LEAF_CASES, LEAF_VALUES, LOC, all_cases, build_case

from netc.compiler.interpret import interpret
from netc.compiler.ir import Graph, np_dtype
from netc.compiler.ops import PRIMITIVES
from netc.compiler.verify import verify


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_every_primitive_has_sample_cases(name):
    assert CASES.get(name) or name in LEAF_CASES, f"add sample cases for {name} to op_cases.py"


def test_no_cases_for_unknown_primitives():
    assert set(CASES) | set(LEAF_CASES) <= set(PRIMITIVES)


def _as_dtype(arrays, dtype):
    return {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in arrays.items()}


@pytest.mark.parametrize("float_dtype", ["f32", "f64"])
@pytest.mark.parametrize("op,i,case", all_cases())
def test_shape_rule_matches_reference(op, i, case, float_dtype):
    g, node, operands, feeds, params = build_case(op, case, float_dtype=float_dtype)
    verify(g)
    value = interpret(g, feeds, params, {}, wanted=[node])[node.id]
    assert value.shape == node.type.shape
    assert value.dtype == np_dtype(node.type.dtype)
    # canonical attributes are a fixed point of canonicalize
    prim = PRIMITIVES[op]
    again = prim.canonicalize([x.type for x in operands], dict(node.attrs), g.float_dtype)
    assert again == node.attrs


@pytest.mark.parametrize("kind", sorted(LEAF_CASES))
def test_leaves(kind):
    g = Graph("leaf", float_dtype="f64")
    node = LEAF_CASES[kind](g)
    verify(g)
    feeds = {"x": LEAF_VALUES["x"]}
    value = interpret(g, feeds, {"fc.W": LEAF_VALUES["fc.W"]}, {"bn.mean": LEAF_VALUES["bn.mean"]},
                      seed=5, step=3, wanted=[node])[node.id]
    assert value.shape == node.type.shape and value.dtype == np_dtype(node.type.dtype)
    if kind == "rng_key":
        assert list(value.view(np.uint32)) == [5, 0, 3]
    elif kind == "const":
        np.testing.assert_array_equal(value, np.arange(6.0).reshape(2, 3))
    assert node.loc == LOC
