"""Optimizer pass 3 — dead code elimination (in place; returns the graph).

Takes: any verified graph. Gives: the same graph keeping only the live roots (outputs, losses,
updates; see `common.live_roots`) and what they depend on, plus every input, param and state leaf
(they are the model's interface and storage even when nothing reads them). Unused consts, the rng
key when nothing random is left, and unused computations are removed.
"""

from __future__ import annotations

from ..ir import Graph
from .common import live_roots

_KEEP = ("input", "param", "state")


def eliminate_dead(g: Graph) -> Graph:
    """Remove from `g` what no live root needs (see the module docstring) and return it."""
    live = g.ancestors(live_roots(g))
    dead = [n for n in g.nodes_in_order() if n.id not in live and n.op not in _KEEP]
    if dead:
        g.remove_nodes(dead)
    return g
