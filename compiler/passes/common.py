"""Facts shared by the optimizer passes: live roots, op classes, constant helpers.

Takes: a graph or nodes. Gives: `live_roots` (what must stay computed), the op class tables the
fusion pass and the memory planner agree on, and small predicates on constants.

Invariants: every primitive belongs to exactly one class (`op_class` raises
InternalCompilerError for an unknown op, so a new primitive cannot slip through unfused).
"""

from __future__ import annotations

import numpy as np

from ..errors import InternalCompilerError
from ..ir import LEAF_OPS, Graph, Node

UNARY = frozenset({"neg", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "abs", "sign", "tanh",
                   "sigmoid", "relu", "erf", "stop_gradient", "cast"})
BINARY = frozenset({"add", "sub", "mul", "div", "pow", "maximum", "minimum",
                    "lt", "le", "gt", "ge", "eq", "ne"})
COMMUTATIVE = frozenset({"add", "mul", "maximum", "minimum", "eq", "ne"})
RANDOM = frozenset({"random_uniform", "random_normal"})
# elementwise: one output element is computed from the inputs at (a broadcast of) its own index
ELEMENTWISE = UNARY | BINARY | RANDOM | {"where", "broadcast_to", "one_hot"}
REDUCTION = frozenset({"sum", "max", "min", "argmax"})
GEMM = frozenset({"matmul"})
CONV = frozenset({"conv2d", "conv2d_grad_input", "conv2d_grad_weight"})
POOL = frozenset({"max_pool2d", "max_pool2d_grad", "max_pool2d_select", "avg_pool2d",
                  "avg_pool2d_grad"})
GATHER = frozenset({"gather", "scatter_add"})
VIEW = frozenset({"reshape"})  # row-major reshape: the output aliases its input's buffer
COPY = frozenset({"transpose", "slice", "slice_grad", "concat", "pad"})

_CLASSES = (("elementwise", ELEMENTWISE), ("reduction", REDUCTION), ("gemm", GEMM),
            ("conv", CONV), ("pool", POOL), ("gather", GATHER), ("view", VIEW), ("copy", COPY),
            ("leaf", frozenset(LEAF_OPS)))


def op_class(op: str) -> str:
    """The kernel class of a primitive: elementwise, reduction, gemm, conv, pool, gather, view,
    copy or leaf."""
    for name, ops in _CLASSES:
        if op in ops:
            return name
    raise InternalCompilerError(f"the optimizer does not know how to classify primitive {op!r}")


def live_roots(g: Graph) -> list[Node]:
    """The values a graph exists to compute: outputs, losses, then updates (fixed order)."""
    seen: dict[int, Node] = {}
    for table in (g.outputs, g.losses, g.updates):
        for n in table.values():
            seen.setdefault(n.id, n)
    return list(seen.values())


def const_value(n: Node) -> np.ndarray | None:
    """The value of a const node, else None."""
    return n.attrs["value"] if n.op == "const" else None


def is_const_equal(n: Node, v: float) -> bool:
    """True if `n` is a const whose every element equals `v` (exactly; NaN never does)."""
    val = const_value(n)
    return val is not None and bool(np.all(val == v))


def nbytes(n: Node) -> int:
    """Bytes of a node's value."""
    return n.type.size * np.dtype(_NP[n.type.dtype]).itemsize


_NP = {"f32": np.float32, "f64": np.float64, "i32": np.int32, "bool": np.bool_}
