"""Matrix product with NumPy `matmul` semantics.

Takes: a[..., m, k] and b[..., k, n] of one numeric dtype; a 1-D operand is a row (a) or column
(b) vector whose unit axis is dropped from the result, as in NumPy; leading (batch) axes broadcast.
Gives: the `matmul` primitive with shape rule, reference and VJP.

Invariants: the VJP works on the operands promoted to rank >= 2 and un-broadcasts the batch axes,
so each cotangent has exactly its operand's type.
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..ir import TensorType
from .base import (
    Primitive,
    broadcast_shapes,
    emit,
    register,
    require_dtype,
    same_dtype,
    unbroadcast,
)


def _swap_last(g, x, loc):
    perm = tuple(range(x.type.rank - 2)) + (x.type.rank - 1, x.type.rank - 2)
    return emit(g, "transpose", [x], loc, perm=perm)


class MatMul(Primitive):
    name = "matmul"
    arity = 2

    def infer(self, in_types, attrs):
        a, b = in_types
        dtype = same_dtype("matmul", a, b)
        require_dtype("matmul", a, ("f32", "f64", "i32"), "operands")
        if a.rank == 0 or b.rank == 0:
            raise ShapeError(f"matmul: operands must have rank >= 1, got {a} @ {b}")
        a_sh = a.shape if a.rank >= 2 else (1,) + a.shape
        b_sh = b.shape if b.rank >= 2 else b.shape + (1,)
        if a_sh[-1] != b_sh[-2]:
            raise ShapeError(f"matmul: cannot multiply {a} by {b}: inner dimensions "
                             f"{a_sh[-1]} and {b_sh[-2]} differ")
        try:
            batch = broadcast_shapes("matmul", TensorType(a_sh[:-2], dtype),
                                     TensorType(b_sh[:-2], dtype))
        except ShapeError:
            raise ShapeError(f"matmul: cannot broadcast the batch dimensions of {a} and {b}"
                             ) from None
        shape = batch + (a_sh[-2],) * (a.rank >= 2) + (b_sh[-1],) * (b.rank >= 2)
        return TensorType(shape, dtype)

    def reference(self, args, attrs, ctx):
        a, b = args
        return np.asarray(np.matmul(a, b), dtype=a.dtype)

    def vjp(self, g, node, ct):
        a, b = node.inputs
        l = node.loc
        a2 = a if a.type.rank >= 2 else emit(g, "reshape", [a], l, shape=(1,) + a.type.shape)
        b2 = b if b.type.rank >= 2 else emit(g, "reshape", [b], l, shape=b.type.shape + (1,))
        if a2 is not a or b2 is not b:
            full = self.infer([a2.type, b2.type], {}).shape
            ct = emit(g, "reshape", [ct], l, shape=full)
        da = emit(g, "matmul", [ct, _swap_last(g, b2, l)], l)
        db = emit(g, "matmul", [_swap_last(g, a2, l), ct], l)
        # sum the broadcast batch axes first, then drop the unit axis of a 1-D operand
        da = unbroadcast(g, da, a2.type, l)
        db = unbroadcast(g, db, b2.type, l)
        if a2 is not a:
            da = emit(g, "reshape", [da], l, shape=a.type.shape)
        if b2 is not b:
            db = emit(g, "reshape", [db], l, shape=b.type.shape)
        return [da, db]


register(MatMul())
