"""Sample cases for every registered primitive, and a helper that turns a case into a graph.

A case gives the primitive's input arrays (drawn from a seeded generator, in float64 for float
operands, chosen away from kinks and ties so central differences are meaningful) and its attrs.
"KEY" stands for the graph's rng key. Leaves are built by their own Graph methods (LEAF_CASES).
The registry tests fail for any registered primitive that has no entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from netc.compiler.errors import SourceLoc
from netc.compiler.ir import Graph, Node, TensorType

LOC = SourceLoc("test.net", 1, 1)


@dataclass
class Case:
    make: Callable[[np.random.Generator], list]
    attrs: dict = field(default_factory=dict)
    smooth: bool = True  # central differences are valid at the drawn inputs


def away(r, shape, lo=0.2, hi=1.0):
    """Values of both signs with |v| in [lo, hi]: away from the kink at 0."""
    return r.uniform(lo, hi, shape) * r.choice([-1.0, 1.0], shape)


def distinct(r, shape):
    """A random arrangement of well-separated values (no ties for max, pools, maximum)."""
    n = int(np.prod(shape))
    return (r.permutation(n) * 0.37 - n * 0.15 + r.uniform(-0.05, 0.05, n)).reshape(shape)


def pos(r, shape, lo=0.5, hi=2.0):
    return r.uniform(lo, hi, shape)


def ints(r, shape, lo=0, hi=5):
    return r.integers(lo, hi, shape).astype(np.int32)


def _unary(gen=lambda r, s: r.normal(size=s)):
    return [Case(lambda r: [gen(r, (3, 4))]), Case(lambda r: [gen(r, ())])]


CASES: dict[str, list[Case]] = {
    "neg": _unary(), "exp": _unary(), "tanh": _unary(), "sigmoid": _unary(), "erf": _unary(),
    "expm1": _unary(), "stop_gradient": _unary(),
    "log": _unary(pos), "sqrt": _unary(pos), "rsqrt": _unary(pos),
    "log1p": _unary(lambda r, s: r.uniform(-0.5, 1.0, s)),
    "abs": _unary(away), "relu": _unary(away), "sign": _unary(away),
    "cast": [Case(lambda r: [r.normal(size=(2, 3))], {"dtype": "f64"}),
             Case(lambda r: [r.normal(size=(2, 3))], {"dtype": "f32"}, smooth=False),
             Case(lambda r: [ints(r, (4,))], {"dtype": "f64"}),
             Case(lambda r: [r.normal(size=(3,)) > 0], {"dtype": "i32"})],
    "where": [Case(lambda r: [r.normal(size=(3, 1)) > 0, r.normal(size=(3, 4)),
                              r.normal(size=(4,))]),
              Case(lambda r: [r.normal(size=(2, 3)) > 0, r.normal(size=(2, 3)),
                              r.normal(size=())])],
    "sum": [Case(lambda r: [r.normal(size=(2, 3, 4))], {"axes": (1,)}),
            Case(lambda r: [r.normal(size=(2, 3, 4))], {"axes": None}),
            Case(lambda r: [r.normal(size=(2, 3, 4))], {"axes": (0, -1), "keepdims": True}),
            Case(lambda r: [ints(r, (3, 2))], {"axes": 0})],
    "max": [Case(lambda r: [distinct(r, (2, 3, 4))], {"axes": (1,)}),
            Case(lambda r: [distinct(r, (3, 4))], {"axes": None, "keepdims": True}),
            Case(lambda r: [np.array([[1.0, 1.0, 0.5], [2.0, 0.0, 2.0]])], {"axes": 1},
                 smooth=False)],
    "min": [Case(lambda r: [distinct(r, (2, 3, 4))], {"axes": (0, 2)}),
            Case(lambda r: [distinct(r, (5,))], {"axes": -1, "keepdims": True})],
    "argmax": [Case(lambda r: [distinct(r, (3, 5))], {"axis": -1}),
               Case(lambda r: [ints(r, (4, 3))], {"axis": 0, "keepdims": True})],
    "matmul": [Case(lambda r: [r.normal(size=(3, 4)), r.normal(size=(4, 2))]),
               Case(lambda r: [r.normal(size=(2, 3, 4)), r.normal(size=(4, 5))]),
               Case(lambda r: [r.normal(size=(2, 1, 3, 4)), r.normal(size=(5, 4, 2))]),
               Case(lambda r: [r.normal(size=(4,)), r.normal(size=(2, 4, 3))]),
               Case(lambda r: [r.normal(size=(3, 4)), r.normal(size=(4,))]),
               Case(lambda r: [r.normal(size=(4,)), r.normal(size=(4,))]),
               Case(lambda r: [ints(r, (2, 3)), ints(r, (3, 2))])],
    "reshape": [Case(lambda r: [r.normal(size=(2, 6))], {"shape": (3, -1)}),
                Case(lambda r: [r.normal(size=(2, 3, 2))], {"shape": (12,)})],
    "transpose": [Case(lambda r: [r.normal(size=(2, 3, 4))], {"perm": (2, 0, 1)}),
                  Case(lambda r: [r.normal(size=(2, 3))], {"perm": None})],
    "broadcast_to": [Case(lambda r: [r.normal(size=(3, 1))], {"shape": (2, 3, 4)}),
                     Case(lambda r: [r.normal(size=())], {"shape": (2, 2)})],
    "slice": [Case(lambda r: [r.normal(size=(4, 6))], {"starts": (1, None), "stops": (3, None),
                                                       "steps": (1, 2)}),
              Case(lambda r: [r.normal(size=(5, 3))], {"starts": (None, -1), "stops": (None, 0),
                                                       "steps": (-2, -1)}),
              Case(lambda r: [r.normal(size=(3, 4, 2))], {"starts": (-2,), "stops": (None,)})],
    "slice_grad": [Case(lambda r: [r.normal(size=(2, 3))],
                        {"in_shape": (4, 6), "starts": (1, None), "stops": (3, None),
                         "steps": (1, 2)}),
                   Case(lambda r: [r.normal(size=(3, 2))],
                        {"in_shape": (5, 3), "starts": (None, -1), "stops": (None, 0),
                         "steps": (-2, -1)})],
    "concat": [Case(lambda r: [r.normal(size=(2, 3)), r.normal(size=(2, 1)),
                               r.normal(size=(2, 2))], {"axis": 1}),
               Case(lambda r: [r.normal(size=(1, 3))], {"axis": -2})],
    "pad": [Case(lambda r: [r.normal(size=(2, 3))], {"pads": ((1, 0), (2, 1)), "value": 0.5})],
    "one_hot": [Case(lambda r: [ints(r, (4,), 0, 3)], {"n": 3}),
                Case(lambda r: [ints(r, (2, 3), 0, 5)], {"n": 5, "dtype": "f64"})],
    "gather": [Case(lambda r: [r.normal(size=(5, 3)), np.array([[0, 4, 0], [2, 2, 1]],
                                                               dtype=np.int32)]),
               Case(lambda r: [r.normal(size=(4,)), ints(r, (3,), 0, 4)])],
    "scatter_add": [Case(lambda r: [r.normal(size=(2, 3, 3)),
                                    np.array([[0, 4, 0], [2, 2, 1]], dtype=np.int32)], {"n": 5})],
    "conv2d": [Case(lambda r: [r.normal(size=(2, 3, 5, 5)), r.normal(size=(4, 3, 3, 3))]),
               Case(lambda r: [r.normal(size=(1, 2, 6, 5)), r.normal(size=(3, 2, 3, 3))],
                    {"stride": 2, "pad": 1}),
               Case(lambda r: [r.normal(size=(1, 2, 4, 5)), r.normal(size=(2, 2, 2, 3))],
                    {"stride": (1, 2), "pad": (0, 1)})],
    "conv2d_grad_input": [
        Case(lambda r: [r.normal(size=(2, 4, 3, 3)), r.normal(size=(4, 3, 3, 3))],
             {"in_hw": (5, 5)}),
        Case(lambda r: [r.normal(size=(1, 3, 3, 3)), r.normal(size=(3, 2, 3, 3))],
             {"in_hw": (6, 5), "stride": 2, "pad": 1})],
    "conv2d_grad_weight": [
        Case(lambda r: [r.normal(size=(2, 3, 5, 5)), r.normal(size=(2, 4, 3, 3))],
             {"kernel": (3, 3)}),
        Case(lambda r: [r.normal(size=(1, 2, 6, 5)), r.normal(size=(1, 3, 3, 3))],
             {"kernel": 3, "stride": 2, "pad": 1})],
    "max_pool2d": [Case(lambda r: [distinct(r, (2, 2, 4, 4))], {"k": 2}),
                   Case(lambda r: [distinct(r, (1, 2, 5, 4))], {"k": 3, "stride": 1}),
                   Case(lambda r: [np.ones((1, 1, 3, 3))], {"k": 2, "stride": 1}, smooth=False)],
    "max_pool2d_grad": [Case(lambda r: [distinct(r, (1, 2, 5, 4)), r.normal(size=(1, 2, 3, 2))],
                             {"k": 3, "stride": 1})],
    "max_pool2d_select": [Case(lambda r: [distinct(r, (1, 2, 5, 4)), r.normal(size=(1, 2, 5, 4))],
                               {"k": 3, "stride": 1})],
    "avg_pool2d": [Case(lambda r: [r.normal(size=(2, 2, 4, 4))], {"k": 2}),
                   Case(lambda r: [r.normal(size=(1, 2, 5, 4))], {"k": (3, 2), "stride": 1})],
    "avg_pool2d_grad": [Case(lambda r: [r.normal(size=(1, 2, 3, 3))],
                             {"k": (3, 2), "stride": 1, "in_hw": (5, 4)})],
    "random_uniform": [Case(lambda r: ["KEY"], {"shape": (3, 4), "stream": 0})],
    "random_normal": [Case(lambda r: ["KEY"], {"shape": (5,), "stream": 7})],
}

for _op in ("add", "sub", "mul"):
    CASES[_op] = [Case(lambda r: [r.normal(size=(3, 1)), r.normal(size=(4,))]),
                  Case(lambda r: [r.normal(size=(2, 3)), r.normal(size=())]),
                  Case(lambda r: [ints(r, (2, 3)), ints(r, (3,))])]
CASES["div"] = [Case(lambda r: [r.normal(size=(3, 1)), away(r, (4,), 0.5, 2.0)]),
                Case(lambda r: [r.normal(size=()), away(r, (2, 2), 0.5, 2.0)])]
CASES["pow"] = [Case(lambda r: [pos(r, (3, 4)), r.uniform(-1.0, 2.0, (4,))]),
                Case(lambda r: [pos(r, (2, 2)), np.array(2.0)])]
for _op in ("maximum", "minimum"):
    CASES[_op] = [Case(lambda r: [distinct(r, (3, 4)), distinct(r, (4,)) + 0.11]),
                  Case(lambda r: [ints(r, (2, 3)), ints(r, (3,))])]
for _op in ("lt", "le", "gt", "ge", "eq", "ne"):
    CASES[_op] = [Case(lambda r: [ints(r, (3, 4)).astype(np.float64), ints(r, (4,)).astype(
        np.float64)]), Case(lambda r: [ints(r, (2,)), ints(r, ())])]


def _leaf(kind: str):
    def build(g: Graph) -> Node:
        t = TensorType((2, 3), "f64")
        if kind == "input":
            return g.input("x", t, LOC)
        if kind == "param":
            return g.param("fc.W", t, LOC)
        if kind == "state":
            return g.state("bn.mean", t, LOC)
        if kind == "const":
            return g.const(np.arange(6.0).reshape(2, 3), "f64", LOC)
        return g.rng_key(LOC)
    return build


LEAF_CASES = {k: _leaf(k) for k in ("input", "param", "state", "const", "rng_key")}
LEAF_VALUES = {"x": np.ones((2, 3)), "fc.W": np.full((2, 3), 2.0), "bn.mean": np.zeros((2, 3))}


def dtype_of(a: np.ndarray) -> str:
    return {"f": "f64" if a.dtype == np.float64 else "f32", "i": "i32", "b": "bool"}[a.dtype.kind]


def build_case(op: str, case: Case, seed: int = 0, float_dtype: str = "f64"):
    """A graph applying `op` to the case's inputs (float64 ones converted to `float_dtype`). Float
    inputs become params (so they can be differentiated), others inputs.
    Returns (graph, node, operand nodes, feeds, params)."""
    r = np.random.default_rng(seed)
    g = Graph(f"case_{op}", float_dtype=float_dtype)
    operands, feeds, params = [], {}, {}
    for i, a in enumerate(case.make(r)):
        if isinstance(a, str):
            operands.append(g.rng_key(LOC))
            continue
        a = np.asarray(a)
        a = a.astype(np.int32) if a.dtype.kind == "i" else a
        if a.dtype == np.float64 and float_dtype == "f32":
            a = a.astype(np.float32)
        t = TensorType(a.shape, dtype_of(a))
        if t.is_float:
            operands.append(g.param(f"p{i}", t, LOC))
            params[f"p{i}"] = a
        else:
            operands.append(g.input(f"i{i}", t, LOC))
            feeds[f"i{i}"] = a
    node = g.add(op, operands, dict(case.attrs), LOC)
    return g, node, operands, feeds, params


def all_cases(keep=lambda op, case: True):
    """pytest params (op, index, case) with ids "op-index" for the non-leaf cases kept."""
    return [pytest.param(op, i, c, id=f"{op}-{i}") for op, cs in sorted(CASES.items())
            for i, c in enumerate(cs) if keep(op, c)]
