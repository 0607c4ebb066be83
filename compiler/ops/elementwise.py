"""Elementwise primitives: unary math, cast, stop_gradient, binary arithmetic, comparisons, where.

Takes: tensors of one dtype (binary ops broadcast like NumPy; mixed dtypes are a NetTypeError).
Gives: the primitives, each with its shape rule, NumPy reference and VJP.

Invariants: transcendental ops need floats; arithmetic refuses bool; comparisons give bool and
have no gradient; every binary VJP un-broadcasts to its input's shape. At kinks the VJPs pick a
fixed side: relu'(0) = 0, abs'(0) = 0, maximum/minimum send ties to the first operand.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..errors import NetTypeError
from ..ir import DTYPES, TensorType, np_dtype
from .base import (
    Primitive,
    broadcast_shapes,
    emit,
    register,
    require_dtype,
    require_float,
    same_dtype,
    unbroadcast,
)
from .base import scalar as _c

_erf = np.frompyfunc(math.erf, 1, 1)  # NumPy has no erf; math.erf is correctly rounded enough


def _np_erf(x: np.ndarray) -> np.ndarray:
    return np.asarray(_erf(x), dtype=x.dtype)


def _np_sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) below (e^-|x| never overflows): accurate in
    relative terms down to sigmoid(-103) (subnormal), where 0.5 * (tanh(x / 2) + 1) gave 0
    below -17."""
    e = np.exp(-np.abs(x))
    d = 1 / (1 + e)
    return np.where(np.isnan(x) | (x >= 0), d, e * d).astype(x.dtype, copy=False)


class Unary(Primitive):
    """y = f(x), same shape and dtype. `grad(g, x, y, ct, loc)` gives the input's cotangent."""

    def __init__(self, name: str, fn: Callable, grad: Callable | None, *,
                 dtypes: tuple[str, ...] = ("f32", "f64")):
        self.name = name
        self.fn = fn
        self.grad = grad
        self.dtypes = dtypes
        self.differentiable = grad is not None

    def infer(self, in_types, attrs):
        (t,) = in_types
        if self.dtypes == ("f32", "f64"):
            require_float(self.name, t)
        else:
            require_dtype(self.name, t, self.dtypes, "the operand")
        return t

    def reference(self, args, attrs, ctx):
        x = args[0]
        return np.asarray(self.fn(x), dtype=x.dtype)

    def vjp(self, g, node, ct):
        if self.grad is None:
            return [None]
        x = node.inputs[0]
        return [self.grad(g, x, node, ct, node.loc)]


def _mul(g, a, b, loc):
    return emit(g, "mul", [a, b], loc)


_NUM = ("f32", "f64", "i32")
_UNARY = [
    Unary("neg", np.negative, lambda g, x, y, ct, l: emit(g, "neg", [ct], l), dtypes=_NUM),
    Unary("exp", np.exp, lambda g, x, y, ct, l: _mul(g, ct, y, l)),
    Unary("log", np.log, lambda g, x, y, ct, l: emit(g, "div", [ct, x], l)),
    Unary("log1p", np.log1p, lambda g, x, y, ct, l: emit(
        g, "div", [ct, emit(g, "add", [x, _c(g, 1.0, x, l)], l)], l)),
    Unary("expm1", np.expm1, lambda g, x, y, ct, l: _mul(
        g, ct, emit(g, "add", [y, _c(g, 1.0, y, l)], l), l)),
    Unary("sqrt", np.sqrt, lambda g, x, y, ct, l: emit(
        g, "div", [_mul(g, ct, _c(g, 0.5, y, l), l), y], l)),
    # d/dx x^-1/2 = -1/2 x^-3/2 = -1/2 y^3
    Unary("rsqrt", lambda x: 1 / np.sqrt(x), lambda g, x, y, ct, l: _mul(
        g, _mul(g, ct, _c(g, -0.5, y, l), l), _mul(g, y, _mul(g, y, y, l), l), l)),
    Unary("abs", np.abs, lambda g, x, y, ct, l: _mul(g, ct, emit(g, "sign", [x], l), l),
          dtypes=_NUM),
    Unary("sign", np.sign, None, dtypes=_NUM),
    Unary("tanh", np.tanh, lambda g, x, y, ct, l: _mul(
        g, ct, emit(g, "sub", [_c(g, 1.0, y, l), _mul(g, y, y, l)], l), l)),
    Unary("sigmoid", _np_sigmoid, lambda g, x, y, ct, l: _mul(
        g, ct, _mul(g, y, emit(g, "sub", [_c(g, 1.0, y, l), y], l), l), l)),
    Unary("relu", lambda x: np.maximum(x, 0), lambda g, x, y, ct, l: emit(
        g, "where", [emit(g, "gt", [x, _c(g, 0, x, l)], l), ct, _c(g, 0, ct, l)], l),
        dtypes=_NUM),
    Unary("erf", _np_erf, lambda g, x, y, ct, l: _mul(g, ct, _mul(
        g, _c(g, 2 / math.sqrt(math.pi), x, l),
        emit(g, "exp", [emit(g, "neg", [_mul(g, x, x, l)], l)], l), l), l)),
    # identity whose gradient is cut (state reads, targets of an EMA...)
    Unary("stop_gradient", lambda x: x, None, dtypes=DTYPES),
]
for _p in _UNARY:
    register(_p)


class Cast(Primitive):
    name = "cast"

    def canonicalize(self, in_types, attrs, float_dtype):
        if attrs.get("dtype") not in DTYPES:
            raise NetTypeError(f"cast: unknown dtype {attrs.get('dtype')!r}")
        return attrs

    def infer(self, in_types, attrs):
        return TensorType(in_types[0].shape, attrs["dtype"])

    def reference(self, args, attrs, ctx):
        return args[0].astype(np_dtype(attrs["dtype"]))

    def vjp(self, g, node, ct):
        x = node.inputs[0]
        if not (x.type.is_float and node.type.is_float):
            return [None]
        return [emit(g, "cast", [ct], node.loc, dtype=x.type.dtype)]


register(Cast())


class Binary(Primitive):
    """z = f(a, b) with NumPy broadcasting; `grads(g, a, b, z, ct, loc)` gives the two cotangents
    before un-broadcasting."""

    arity = 2

    def __init__(self, name: str, fn: Callable, grads: Callable | None,
                 dtypes: tuple[str, ...], out_dtype: str | None = None):
        self.name = name
        self.fn = fn
        self.grads = grads
        self.dtypes = dtypes
        self.out_dtype = out_dtype
        self.differentiable = grads is not None

    def infer(self, in_types, attrs):
        a, b = in_types
        shape = broadcast_shapes(self.name, a, b)
        dtype = same_dtype(self.name, a, b)
        require_dtype(self.name, a, self.dtypes, "operands")
        return TensorType(shape, self.out_dtype or dtype)

    def reference(self, args, attrs, ctx):
        out = self.fn(args[0], args[1])
        return np.asarray(out, dtype=np_dtype(self.out_dtype) if self.out_dtype else args[0].dtype)

    def vjp(self, g, node, ct):
        if self.grads is None or not node.type.is_float:
            return [None, None]
        a, b = node.inputs
        da, db = self.grads(g, a, b, node, ct, node.loc)
        return [unbroadcast(g, da, a.type, node.loc) if da is not None else None,
                unbroadcast(g, db, b.type, node.loc) if db is not None else None]


def _div_grads(g, a, b, z, ct, l):
    da = emit(g, "div", [ct, b], l)
    return da, emit(g, "neg", [emit(g, "div", [_mul(g, ct, z, l), b], l)], l)


def _pow_grads(g, a, b, z, ct, l):
    # d/da a^b = b a^(b-1); d/db a^b = a^b log a (nan for a <= 0, only built if b needs it)
    am1 = emit(g, "pow", [a, emit(g, "sub", [b, _c(g, 1.0, b, l)], l)], l)
    da = _mul(g, ct, _mul(g, b, am1, l), l)
    db = _mul(g, ct, _mul(g, z, emit(g, "log", [a], l), l), l)
    return da, db


def _select_grads(cmp: str):
    def grads(g, a, b, z, ct, l):
        first = emit(g, cmp, [a, b], l)
        zero = _c(g, 0, ct, l)
        return emit(g, "where", [first, ct, zero], l), emit(g, "where", [first, zero, ct], l)
    return grads


_FL = ("f32", "f64")
_BINARY = [
    Binary("add", np.add, lambda g, a, b, z, ct, l: (ct, ct), _NUM),
    Binary("sub", np.subtract, lambda g, a, b, z, ct, l: (ct, emit(g, "neg", [ct], l)), _NUM),
    Binary("mul", np.multiply, lambda g, a, b, z, ct, l: (_mul(g, ct, b, l), _mul(g, ct, a, l)),
           _NUM),
    Binary("div", np.divide, _div_grads, _FL),
    Binary("pow", np.power, _pow_grads, _FL),
    Binary("maximum", np.maximum, _select_grads("ge"), _NUM),
    Binary("minimum", np.minimum, _select_grads("le"), _NUM),
]
for _fn_name, _fn in (("lt", np.less), ("le", np.less_equal), ("gt", np.greater),
                      ("ge", np.greater_equal), ("eq", np.equal), ("ne", np.not_equal)):
    _BINARY.append(Binary(_fn_name, _fn, None, DTYPES, out_dtype="bool"))
for _p in _BINARY:
    register(_p)


class Where(Primitive):
    """where(c, a, b): c bool, a and b of one dtype, all three broadcast together."""

    name = "where"
    arity = 3

    def infer(self, in_types, attrs):
        c, a, b = in_types
        require_dtype("where", c, ("bool",), "the condition")
        dtype = same_dtype("where", a, b)
        return TensorType(broadcast_shapes("where", c, a, b), dtype)

    def reference(self, args, attrs, ctx):
        c, a, b = args
        return np.where(c, a, b).astype(a.dtype)

    def vjp(self, g, node, ct):
        c, a, b = node.inputs
        if not node.type.is_float:
            return [None, None, None]
        l = node.loc
        zero = _c(g, 0, ct, l)
        da = emit(g, "where", [c, ct, zero], l)
        db = emit(g, "where", [c, zero, ct], l)
        return [None, unbroadcast(g, da, a.type, l), unbroadcast(g, db, b.type, l)]


register(Where())
