"""Reductions: sum, max, min over a set of axes, and argmax over one axis.

Takes: a numeric tensor; attrs `axes` (None, an int or ints; canonicalised to a sorted tuple of
non-negative axes) and `keepdims`; argmax takes `axis` (one int) and `keepdims`.
Gives: the primitives with shape rules, references and VJPs.

Invariants: canonical `axes` is a sorted tuple without repeats; the max/min VJP splits the
cotangent evenly among tied maxima (a valid subgradient, and symmetric); argmax returns the first
maximal index as i32 and has no gradient.
"""

from __future__ import annotations

import numpy as np

from ..ir import TensorType
from .base import Primitive, emit, norm_axes, norm_axis, register, require_dtype

_NUM = ("f32", "f64", "i32")


def reduced_shape(shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool):
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


class Reduce(Primitive):
    def __init__(self, name: str, fn):
        self.name = name
        self.fn = fn

    def canonicalize(self, in_types, attrs, float_dtype):
        attrs["axes"] = norm_axes(self.name, attrs.get("axes"), in_types[0].rank)
        attrs["keepdims"] = bool(attrs.get("keepdims", False))
        return attrs

    def infer(self, in_types, attrs):
        (t,) = in_types
        require_dtype(self.name, t, _NUM, "the operand")
        return TensorType(reduced_shape(t.shape, attrs["axes"], attrs["keepdims"]), t.dtype)

    def reference(self, args, attrs, ctx):
        x = args[0]
        return np.asarray(self.fn(x, axis=attrs["axes"], keepdims=attrs["keepdims"]),
                          dtype=x.dtype)

    def vjp(self, g, node, ct):
        x = node.inputs[0]
        l = node.loc
        kept = reduced_shape(x.type.shape, node.attrs["axes"], True)
        ct_k = ct if node.attrs["keepdims"] else emit(g, "reshape", [ct], l, shape=kept)
        if self.name == "sum":
            return [emit(g, "broadcast_to", [ct_k], l, shape=x.type.shape)]
        y_k = node if node.attrs["keepdims"] else emit(g, "reshape", [node], l, shape=kept)
        mask = emit(g, "cast", [emit(g, "eq", [x, y_k], l)], l, dtype=x.type.dtype)
        count = emit(g, "sum", [mask], l, axes=node.attrs["axes"], keepdims=True)
        return [emit(g, "mul", [mask, emit(g, "div", [ct_k, count], l)], l)]


for _name, _fn in (("sum", np.sum), ("max", np.max), ("min", np.min)):
    register(Reduce(_name, _fn))


class ArgMax(Primitive):
    name = "argmax"
    differentiable = False

    def canonicalize(self, in_types, attrs, float_dtype):
        attrs["axis"] = norm_axis("argmax", attrs.get("axis", -1), in_types[0].rank)
        attrs["keepdims"] = bool(attrs.get("keepdims", False))
        return attrs

    def infer(self, in_types, attrs):
        (t,) = in_types
        require_dtype("argmax", t, _NUM, "the operand")
        return TensorType(reduced_shape(t.shape, (attrs["axis"],), attrs["keepdims"]), "i32")

    def reference(self, args, attrs, ctx):
        out = np.argmax(args[0], axis=attrs["axis"], keepdims=attrs["keepdims"])
        return np.asarray(out, dtype=np.int32)


register(ArgMax())
