"""Optimizer pass 4b — legalize a kernel graph for a backend (an analysis: the graph is unchanged).

Takes: a `KernelGraph` (from `fuse_kernels`) and the backend's `fit(graph, kernel) -> set of node
ids`: the nodes of `kernel` the backend emits as ONE kernel (for an anchored kernel the main node,
the prologue nodes it can apply while loading and a prefix of the epilogue it can apply to the
output tile; for an elementwise kernel the nodes its loop can evaluate in registers). Gives: a new
`KernelGraph` over the same graph in which every kernel is one the backend can emit, so the memory
plan made from it gives a buffer to every value the backend stores.

Splitting (each step keeps a valid schedule: pieces are placed where the kernel was, in node
order, so every piece reads only values of earlier kernels or earlier pieces):
- an anchored kernel becomes [elementwise piece of its unfit owned prologue nodes] [the fit
  kernel] [elementwise piece of its unfit epilogue nodes];
- an elementwise kernel (or a piece) is cut in node order around each node the backend cannot
  evaluate in a loop of its own (e.g. `one_hot`), which becomes a one-node kernel;
- a rows kernel the backend cannot emit whole becomes one kernel per node;
- a recomputed prologue node some consumer cannot recompute is materialised once: a kernel of its
  own (an elementwise group, or the operand transpose) scheduled right before its first consumer,
  and every consumer then reads it instead of recomputing it.
Outputs are recomputed afterwards: a value read by another kernel or named as a root is stored.

Invariants: the same as `kernel_graph.py` (each non-recomputed node in exactly one kernel; inputs
of a kernel are leaves or outputs of earlier kernels); `fit` returning every node of every kernel
gives back an equal kernel graph.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import InternalCompilerError
from ..ir import Graph
from .common import ELEMENTWISE
from .kernel_graph import Kernel, KernelGraph, assemble, make_kernel

Fit = Callable[[Graph, Kernel], set[int]]


def legalize(kg: KernelGraph, fit: Fit) -> KernelGraph:
    """Split the kernels of `kg` the backend cannot emit whole (see the module docstring)."""
    g = kg.graph
    pos = {n.id: i for i, n in enumerate(g.nodes_in_order())}
    fits = [_fit(g, k, fit) for k in kg.kernels]
    materialize: set[int] = set()
    for k, keep in zip(kg.kernels, fits):
        lost = [i for i in k.recomputed if i not in keep]
        materialize |= _closure(g, lost, set(k.recomputed))
    pieces: list[tuple] = []  # (nodes, stages, main, recomputed[, kind])
    placed: set[int] = set()
    for k, keep in zip(kg.kernels, fits):
        # recomputed values this kernel no longer recomputes, not yet placed: before it
        todo = sorted((materialize & set(k.recomputed)) - placed, key=pos.__getitem__)
        placed |= set(todo)
        for comp in _components(g, todo):
            node = g.node(comp[0])
            if node.op in ELEMENTWISE:
                pieces += _elementwise_pieces(g, comp, fit)
            else:
                pieces.append((comp, {comp[0]: "main"}, comp[0], []))
        pieces += _split(g, k, keep, materialize, fit)
    kernels = [make_kernel(g, i, *piece[:4], pos, *piece[4:]) for i, piece in enumerate(pieces)]
    return assemble(g, kernels, kg.leaves, kg.roots, "legalize")


def _fit(g: Graph, k: Kernel, fit: Fit) -> set[int]:
    keep = set(fit(g, k)) & set(k.nodes)
    if k.main is not None:
        keep.add(k.main)
    # a kept epilogue node needs every epilogue node it reads kept too
    for i in k.nodes:
        if i in keep and k.stages[i] == "epilogue" and any(
                x.id in k.stages and k.stages[x.id] == "epilogue" and x.id not in keep
                for x in g.node(i).inputs):
            raise InternalCompilerError(f"legalize: fit keeps epilogue %{i} but not its operand")
    return keep


def _closure(g: Graph, ids: list[int], within: set[int]) -> set[int]:
    out, stack = set(), list(ids)
    while stack:
        i = stack.pop()
        if i not in out:
            out.add(i)
            stack.extend(x.id for x in g.node(i).inputs if x.id in within)
    return out


def _components(g: Graph, ids: list[int]) -> list[list[int]]:
    """Connected parts of `ids` (edges within ids), each in the given order."""
    inside, comp = set(ids), {}
    for i in ids:
        comp.setdefault(i, i)
        for x in g.node(i).inputs:
            if x.id in inside:
                a, b = _find(comp, x.id), _find(comp, i)
                comp[b] = a
    groups: dict[int, list[int]] = {}
    for i in ids:
        groups.setdefault(_find(comp, i), []).append(i)
    return sorted(groups.values(), key=lambda c: ids.index(c[0]))


def _find(parent: dict[int, int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _split(g: Graph, k: Kernel, keep: set[int], materialize: set[int], fit: Fit) -> list:
    if k.kind == "rows":  # whole, or as kernels of one node each
        if keep == set(k.nodes):
            return [(list(k.nodes), dict(k.stages), None, [], "rows")]
        return [([i], {i: "main"}, i, []) if k.stages[i] == "main"
                else ([i], {i: "body"}, None, []) for i in k.nodes]
    if k.main is None:
        return _elementwise_pieces(g, list(k.nodes), fit) if keep != set(k.nodes) else \
            [(list(k.nodes), dict(k.stages), None, [])]
    owned = [i for i in k.nodes if i not in k.recomputed]
    before = [i for i in owned if i not in keep and k.stages[i] == "prologue"]
    after = [i for i in owned if i not in keep and k.stages[i] != "prologue"]
    core = [i for i in k.nodes if i in keep and i not in materialize]
    recomputed = [i for i in k.recomputed if i in core]
    out = _elementwise_pieces(g, before, fit) if before else []
    out.append((core, {i: k.stages[i] for i in core}, k.main, recomputed))
    if after:
        out += _elementwise_pieces(g, after, fit)
    return out


def _elementwise_pieces(g: Graph, ids: list[int], fit: Fit) -> list:
    """Cut an elementwise node list (in schedule order) around the nodes `fit` rejects."""
    probe = Kernel(-1, "elementwise", list(ids), {i: "body" for i in ids}, [], [],
                   g.node(ids[-1]).type.shape)
    ok = set(fit(g, probe))
    out, run = [], []
    for i in ids:
        if i in ok:
            run.append(i)
            continue
        if run:
            out.append((run, {j: "body" for j in run}, None, []))
            run = []
        out.append(([i], {i: "body"}, None, []))
    if run:
        out.append((run, {j: "body" for j in run}, None, []))
    return out


