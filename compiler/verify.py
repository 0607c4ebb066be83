"""IR invariant checker, run after every stage in tests (and by the pipeline in debug runs).

Takes: a graph. Gives: nothing, or raises `InternalCompilerError` naming the first broken invariant.

Checked: the networkx graph is acyclic and mirrors every node's inputs (edge per argument position,
nothing else); every input of a node is in the graph; each node's type equals its primitive's shape
rule applied to its inputs (with canonical attrs: canonicalising again changes nothing); leaves
have no inputs and are registered under their role; outputs, losses and updates point into the
graph; losses are float scalars; updates have their state's (or, in a step graph, param's)
type; every node has a location.
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from .errors import InternalCompilerError, NetError
from .ir import LEAF_OPS, Graph
from .ops import PRIMITIVES


def _fail(msg: str, node=None) -> None:
    raise InternalCompilerError(f"invalid graph: {msg}", getattr(node, "loc", None))


def _same_attrs(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if hasattr(x, "shape") or hasattr(y, "shape"):  # const values: compare as arrays
            if not (hasattr(x, "shape") and hasattr(y, "shape") and x.dtype == y.dtype
                    and np.array_equal(x, y, equal_nan=x.dtype.kind == "f")):
                return False
        elif x != y:
            return False
    return True


def verify(g: Graph) -> None:
    """Raise InternalCompilerError if `g` breaks an IR invariant."""
    if not nx.is_directed_acyclic_graph(g.nx):
        _fail(f"graph {g.name} has a cycle")
    nodes = g.nodes_in_order()
    if len(nodes) != g.nx.number_of_nodes():
        _fail("node table and networkx graph differ")
    for n in nodes:
        if n.loc is None:
            _fail(f"{n!r} ({n.op}) has no source location")
        prim = PRIMITIVES.get(n.op)
        if prim is None:
            _fail(f"{n!r} uses unknown primitive {n.op!r}", n)
        for x in n.inputs:
            if x not in g:
                _fail(f"input {x!r} of {n!r} ({n.op}) is not in the graph", n)
        edges = sorted((key, src) for src, _, key in g.nx.in_edges(n.id, keys=True))
        if edges != [(i, x.id) for i, x in enumerate(n.inputs)]:
            _fail(f"edges into {n!r} do not match its inputs", n)
        if n.op in LEAF_OPS and n.inputs:
            _fail(f"leaf {n!r} ({n.op}) has inputs", n)
        if prim.arity is not None and len(n.inputs) != prim.arity:
            _fail(f"{n!r} ({n.op}) has {len(n.inputs)} inputs, wants {prim.arity}", n)
        in_types = [x.type for x in n.inputs]
        try:
            attrs = prim.canonicalize(in_types, dict(n.attrs), g.float_dtype)
            expected = prim.infer(in_types, attrs)
        except NetError as e:
            _fail(f"{n!r} ({n.op}) no longer type-checks: {e.message}", n)
        if not _same_attrs(attrs, n.attrs):
            _fail(f"{n!r} ({n.op}) has non-canonical attributes {n.attrs}", n)
        if expected != n.type:
            _fail(f"{n!r} ({n.op}) has type {n.type} but its rule gives {expected}", n)
    for role, table, op in (("input", g.inputs, "input"), ("param", g.params, "param"),
                            ("state", g.states, "state")):
        for name, n in table.items():
            if n not in g or n.op != op or n.attrs["name"] != name:
                _fail(f"{role} table entry {name!r} is not a {op} leaf of the graph")
    for title, table in (("output", g.outputs), ("loss", g.losses), ("update", g.updates)):
        for name, n in table.items():
            if n not in g:
                _fail(f"{title} {name!r} points to {n!r}, which is not in the graph")
    for name, n in g.losses.items():
        if n.type.shape != () or not n.type.is_float:
            _fail(f"loss {name!r} must be a float scalar, is {n.type}", n)
    for name, n in g.updates.items():  # states (`<-`, optimizer) and, in a step graph, params
        st = g.states.get(name) or g.params.get(name)
        if st is None:
            _fail(f"update of unknown state or param {name!r}", n)
        elif st.type != n.type:
            _fail(f"update of {st.op} {name!r} ({st.type}) has type {n.type}", n)
