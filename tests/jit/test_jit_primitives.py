"""Every registered primitive through the JIT against its NumPy reference (float32): the op cases
of tests/ops, each made into a graph whose output is the primitive's node, compiled as a whole
step module and run on one and on two threads. Random primitives must match bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import CASES, LEAF_CASES, LOC, build_case

from netc.compiler.interpret import interpret
from netc.compiler.ir import Graph, TensorType
from netc.compiler.ops import PRIMITIVES
from netc.engine import Store
from netc.jit_engine import JitEngine

EXACT = ("random_uniform", "random_normal", "rng_key", "argmax", "one_hot")


T = TensorType((2, 3), "f32")
LEAVES = {
    "input": lambda g: g.input("x", T, LOC),
    "param": lambda g: g.param("fc.W", T, LOC),
    "state": lambda g: g.state("bn.mean", T, LOC),
    "const": lambda g: g.const(np.arange(6.0, dtype=np.float32).reshape(2, 3), "f32", LOC),
    "rng_key": lambda g: g.rng_key(LOC),
}
VALUES = {"x": np.ones((2, 3), np.float32), "fc.W": np.full((2, 3), 2.0, np.float32),
          "bn.mean": np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)}


def _engine(g, params, states, threads, seed=3):
    store = Store(seed)
    for kind, table in (("param", params), ("state", states)):
        for name, value in table.items():
            store.arrays[name] = np.array(value)
            store.kind[name] = kind
    return JitEngine(g, store, threads=threads)


def _check(op, got, want):
    assert got.shape == want.shape and got.dtype == want.dtype
    if op in EXACT or want.dtype.kind in "bi":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _cases():
    out = []
    for op in sorted(PRIMITIVES):
        if op in LEAF_CASES:
            out.append(pytest.param(op, -1, id=f"{op}-leaf"))
        for i, _ in enumerate(CASES.get(op, [])):
            out.append(pytest.param(op, i, id=f"{op}-{i}"))
    return out


def test_every_primitive_has_a_case():
    missing = [op for op in PRIMITIVES if op not in LEAF_CASES and not CASES.get(op)]
    assert missing == []


@pytest.mark.parametrize("op,index", _cases())
def test_primitive_lowering(op, index):
    if index < 0:
        g = Graph(f"leaf_{op}", float_dtype="f32")
        node = LEAVES[op](g)
        feeds = {k: v for k, v in VALUES.items() if k in g.inputs}
        params = {k: v for k, v in VALUES.items() if k in g.params}
        states = {k: v for k, v in VALUES.items() if k in g.states}
    else:
        g, node, _, feeds, params = build_case(op, CASES[op][index], float_dtype="f32")
        states = {}
    g.outputs["out"] = node
    want = interpret(g, feeds, params, states, seed=3, step=0, wanted=[node])[node.id]
    for threads in (1, 2):
        eng = _engine(g, params, states, threads)
        assert eng._fallback is None
        got = eng.run("predict", feeds)["out"]
        _check(op, got, want)


@pytest.mark.parametrize("shape, axes", [
    ((64, 6, 28, 28), (0, 2, 3)),  # a conv bias gradient: rows of 784, blocks of 4 vectors
    ((3, 37), (1,)),  # a row of 4 vectors and a ragged end
    ((5, 2, 19), (0, 2)),  # rows shorter than one block
    ((4, 300), None),  # everything: the split lands on no kept axis
])
def test_sum_of_contiguous_rows(shape, axes):
    """A float sum over a contiguous innermost axis runs each row in vector partial sums
    (kernels_shape._row_reduce): equal to float64 within float32 rounding, bitwise the same on one
    and two threads."""
    rng = np.random.default_rng(0)
    g = Graph("rows", float_dtype="f32")
    x = g.input("x", TensorType(shape, "f32"), LOC)
    g.outputs["out"] = g.add("sum", [x], {"axes": axes or tuple(range(len(shape))),
                                         "keepdims": False}, LOC)
    feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
    want = feeds["x"].astype(np.float64).sum(axis=axes)
    got = [_engine(g, {}, {}, t).run("predict", feeds)["out"] for t in (1, 2)]
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-4)
    assert np.array_equal(got[0], got[1])
