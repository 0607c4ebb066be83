"""Optimizer pass 2 — common subexpression elimination (in place; returns the graph).

Takes: any verified graph. Gives: the same graph in which no two nodes compute the same value
from the same inputs: of each set of equal nodes the first in topological order survives, the
others' uses (and roots) move to it and they are removed.

Equality: same op, same inputs (in order, except that the inputs of commutative ops add, mul,
maximum, minimum, eq, ne are compared as a sorted pair), equal attributes. Consts compare by dtype,
shape and bytes (so 0.0 and -0.0 stay distinct, NaNs with equal payloads merge). Random ops carry
their `stream` in their attributes: two dropout masks from different call sites differ and are
never merged; the same (stream, shape, dtype) is the same draw and merging it is exact. Named
leaves (input, param, state) and the rng key are never merged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir import Graph, Node
from .common import COMMUTATIVE

_UNIQUE = ("input", "param", "state", "rng_key")


def _freeze(v: Any) -> Any:
    """A hashable, exact stand-in for an attribute value."""
    if isinstance(v, np.ndarray):
        return ("ndarray", v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, dict):
        return ("dict", tuple(sorted((k, _freeze(x)) for k, x in v.items())))
    if isinstance(v, (list, tuple)):
        return (type(v).__name__, tuple(_freeze(x) for x in v))
    if isinstance(v, float):
        return ("float", v.hex() if v == v else "nan")
    return (type(v).__name__, v)


def node_key(n: Node) -> tuple:
    """The identity of the value `n` computes, given its inputs."""
    ids = tuple(x.id for x in n.inputs)
    if n.op in COMMUTATIVE:
        ids = tuple(sorted(ids))
    return (n.op, ids, _freeze(n.attrs), str(n.type))


def eliminate_common(g: Graph) -> Graph:
    """Merge equal nodes of `g` in place (see the module docstring) and return it."""
    seen: dict[tuple, Node] = {}
    for n in g.nodes_in_order():  # inputs are canonical before their users are keyed
        if n.op in _UNIQUE:
            continue
        key = node_key(n)
        first = seen.get(key)
        if first is None:
            seen[key] = n
            continue
        g.replace_uses(n, first)
        g.remove_nodes([n])
    return g
