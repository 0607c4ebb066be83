"""The primitive registry, filled by importing every op-family module of this package.

Takes: nothing. Gives: `PRIMITIVES` (name -> Primitive, complete once this package is imported),
`Primitive`, `register`, `EvalContext`. Composites and the built-in table live in `composites` and
`builtins` (imported on demand: they are front ends over the primitives, not primitives).
"""

from . import elementwise, index, leaves, linalg, nn, random, reduce, shape  # noqa: F401
from .base import PRIMITIVES, EvalContext, Primitive, register

__all__ = ["PRIMITIVES", "EvalContext", "Primitive", "register"]
