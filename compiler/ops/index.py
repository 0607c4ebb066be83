"""Integer-indexed primitives: one_hot, gather (embedding lookup) and its adjoint scatter_add.

Takes: i32 labels or indices with a float tensor (table or updates).
Gives: `one_hot(n, dtype)`: i32[...] -> float[..., n]; `gather(axis=0)`: table[V, *rest],
indices i32[...] -> [..., *rest]; `scatter_add(n)`: updates[..., *rest], indices i32[...] ->
[n, *rest] (rows that repeat add up).

Invariants: indices never receive gradients; a one_hot label outside [0, n) gives a zero row (as
NumPy's comparison does); gather/scatter_add refuse out-of-range indices at run time (DataError).
gather only supports axis 0 (the embedding case) and says so.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError, NetTypeError, ShapeError
from ..ir import FLOAT_DTYPES, TensorType, np_dtype
from .base import Primitive, emit, register, require_dtype


def _check_indices(op: str, idx: np.ndarray, n: int) -> None:
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        bad = idx[(idx < 0) | (idx >= n)].flat[0]
        raise DataError(f"{op}: index {bad} is out of range for {n} rows")


class OneHot(Primitive):
    name = "one_hot"
    differentiable = False

    def canonicalize(self, in_types, attrs, float_dtype):
        n = attrs.get("n")
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise ShapeError(f"one_hot: the number of classes must be a positive integer, "
                             f"got {n!r}")
        attrs["n"] = int(n)
        attrs.setdefault("dtype", float_dtype)
        if attrs["dtype"] not in FLOAT_DTYPES:
            raise NetTypeError(f"one_hot: dtype must be f32 or f64, got {attrs['dtype']!r}")
        return attrs

    def infer(self, in_types, attrs):
        (t,) = in_types
        require_dtype("one_hot", t, ("i32",), "labels")
        return TensorType(t.shape + (attrs["n"],), attrs["dtype"])

    def reference(self, args, attrs, ctx):
        y = args[0]
        return (y[..., None] == np.arange(attrs["n"], dtype=np.int32)).astype(
            np_dtype(attrs["dtype"]))


class Gather(Primitive):
    name = "gather"
    arity = 2

    def canonicalize(self, in_types, attrs, float_dtype):
        if attrs.setdefault("axis", 0) != 0:
            raise ShapeError(f"gather: only axis 0 is supported, got axis={attrs['axis']}")
        return attrs

    def infer(self, in_types, attrs):
        table, idx = in_types
        require_dtype("gather", idx, ("i32",), "indices")
        if table.rank == 0:
            raise ShapeError(f"gather: the table must have rank >= 1, got {table}")
        return TensorType(idx.shape + table.shape[1:], table.dtype)

    def reference(self, args, attrs, ctx):
        table, idx = args
        _check_indices("gather", idx, table.shape[0])
        return table[idx]

    def vjp(self, g, node, ct):
        table, idx = node.inputs
        return [emit(g, "scatter_add", [ct, idx], node.loc, n=table.type.shape[0]), None]


class ScatterAdd(Primitive):
    name = "scatter_add"
    arity = 2

    def canonicalize(self, in_types, attrs, float_dtype):
        n = attrs.get("n")
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ShapeError(f"scatter_add: n must be a positive integer, got {n!r}")
        attrs["n"] = int(n)
        return attrs

    def infer(self, in_types, attrs):
        upd, idx = in_types
        require_dtype("scatter_add", idx, ("i32",), "indices")
        if upd.shape[:idx.rank] != idx.shape:
            raise ShapeError(f"scatter_add: updates {upd} do not start with the indices' "
                             f"shape {idx}")
        return TensorType((attrs["n"],) + upd.shape[idx.rank:], upd.dtype)

    def reference(self, args, attrs, ctx):
        upd, idx = args
        _check_indices("scatter_add", idx, attrs["n"])
        out = np.zeros((attrs["n"],) + upd.shape[idx.ndim:], dtype=upd.dtype)
        np.add.at(out, idx.reshape(-1), upd.reshape((-1,) + upd.shape[idx.ndim:]))
        return out

    def vjp(self, g, node, ct):
        _, idx = node.inputs
        return [emit(g, "gather", [ct, idx], node.loc), None]


for _p in (OneHot(), Gather(), ScatterAdd()):
    register(_p)
