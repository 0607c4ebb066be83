"""Reverse-mode automatic differentiation over the primitives' VJP rules.

Takes: a graph, a scalar float loss node and the nodes to differentiate with respect to.
Gives: `grad` -> {wrt node id: gradient node of the same type}; the backward ops are added to the
same graph (one step graph), located at the forward node they differentiate.

Invariants: only nodes on a path from `wrt` to `loss` are differentiated ("active": float-typed,
made by a differentiable primitive, depending on a wrt node); non-float values, non-differentiable
primitives, stop_gradient and state leaves cut the flow; fan-out cotangents are summed in a fixed
order; every node the walk created that no returned gradient needs is removed again, so the graph
gains exactly what the gradients need. A wrt node the loss does not depend on gets zeros.
"""

from __future__ import annotations

from .errors import InternalCompilerError, ShapeError
from .ir import Graph, Node
from .ops import PRIMITIVES


def _active_nodes(g: Graph, loss: Node, wrt: list[Node]) -> set[int]:
    """Ids of the nodes on a path from some wrt node to the loss along which gradients flow."""
    feeds_loss = g.ancestors([loss])
    seeds = {w.id for w in wrt}
    active: set[int] = set()
    for n in g.nodes_in_order():
        if n.id not in feeds_loss:
            continue
        flows = (n.type.is_float and PRIMITIVES[n.op].differentiable
                 and any(x.id in active for x in n.inputs))
        if n.id in seeds or flows:
            active.add(n.id)
    return active


def _zeros(g: Graph, like: Node) -> Node:
    zero = g.const(0.0, like.type.dtype, like.loc)
    if like.type.shape == ():
        return zero
    return g.add("broadcast_to", [zero], {"shape": like.type.shape}, like.loc)


def grad(g: Graph, loss: Node, wrt: list[Node]) -> dict[int, Node]:
    """Gradients of `loss` with respect to each node of `wrt`, by node id."""
    if loss not in g:
        raise InternalCompilerError(f"loss {loss!r} is not in graph {g.name}")
    if loss.type.shape != () or not loss.type.is_float:
        raise ShapeError(f"a loss must be a float scalar, got {loss.type}", loss.loc)
    for w in wrt:
        if w not in g:
            raise InternalCompilerError(f"cannot differentiate with respect to {w!r}: not in graph")
        if w.op == "state" or not w.type.is_float:
            raise InternalCompilerError(
                f"cannot differentiate with respect to {w.op} {w!r} of type {w.type}", w.loc)
    first_new_id = g.next_id
    active = _active_nodes(g, loss, wrt)
    cts: dict[int, Node] = {}
    if loss.id in active:
        cts[loss.id] = g.const(1.0, loss.type.dtype, loss.loc)
    for n in reversed(g.nodes_in_order()):
        ct = cts.get(n.id)
        if ct is None or n.id not in active or not n.inputs:
            continue
        in_cts = PRIMITIVES[n.op].vjp(g, n, ct)
        if len(in_cts) != len(n.inputs):
            raise InternalCompilerError(f"VJP of {n.op} gave {len(in_cts)} cotangents for "
                                        f"{len(n.inputs)} inputs", n.loc)
        for x, c in zip(n.inputs, in_cts):
            if c is None or x.id not in active:
                continue
            if c.type != x.type:
                raise InternalCompilerError(f"VJP of {n.op} gave {c.type} for input {x!r} of "
                                            f"type {x.type}", n.loc)
            prev = cts.get(x.id)
            cts[x.id] = c if prev is None else g.add("add", [prev, c], None, x.loc)
    result = {w.id: cts[w.id] if w.id in cts else _zeros(g, w) for w in wrt}
    keep = g.ancestors(list(result.values()))
    g.remove_nodes([n for n in g.nodes_in_order() if n.id >= first_new_id and n.id not in keep])
    return result
