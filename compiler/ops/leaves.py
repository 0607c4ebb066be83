"""Leaf primitives: values that enter the graph from outside (input, param, state, const, rng_key).

Takes: attributes from `Graph.input/param/state/const/rng_key`.
Gives: their types. The interpreter (and later the runtime) supplies input/param/state values; a
const carries its value; the rng key is the (seed, step) the step function runs with.

Invariants: leaves have no inputs; a const's value is a read-only array of its dtype; the rng key
is i32[3] holding the uint32 bit patterns (seed_lo, seed_hi, step).
"""

from __future__ import annotations

import numpy as np

from ..errors import InternalCompilerError
from ..ir import TensorType
from .base import EvalContext, Primitive, register

RNG_KEY_TYPE = TensorType((3,), "i32")


class _Fed(Primitive):
    """input / param / state: the type is declared; the value is fed at run time."""

    arity = 0

    def __init__(self, name: str):
        self.name = name

    def canonicalize(self, in_types, attrs, float_dtype):
        attrs["shape"] = tuple(int(d) for d in attrs["shape"])
        return attrs

    def infer(self, in_types, attrs):
        return TensorType(attrs["shape"], attrs["dtype"])

    def reference(self, args, attrs, ctx):
        raise InternalCompilerError(f"{self.name} {attrs['name']!r} is fed by the interpreter")

    def vjp(self, g, node, ct):
        return []


class _Const(Primitive):
    name = "const"
    arity = 0
    differentiable = False

    def infer(self, in_types, attrs):
        return TensorType(attrs["value"].shape, attrs["dtype"])

    def reference(self, args, attrs, ctx):
        return attrs["value"]


def rng_key_value(seed: int, step: int) -> np.ndarray:
    """The rng key leaf's value for a run: uint32 words of the seed, then the step."""
    words = [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, step & 0xFFFFFFFF]
    return np.array(words, dtype=np.uint32).view(np.int32)


class _RngKey(Primitive):
    name = "rng_key"
    arity = 0
    differentiable = False

    def infer(self, in_types, attrs):
        return RNG_KEY_TYPE

    def reference(self, args, attrs, ctx: EvalContext):
        return rng_key_value(ctx.seed, ctx.step)


for _name in ("input", "param", "state"):
    register(_Fed(_name))
register(_Const())
register(_RngKey())
