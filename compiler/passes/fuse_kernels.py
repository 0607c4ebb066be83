"""Optimizer pass 4 — partition a graph into fused kernels (an analysis: the graph is unchanged).

Takes: a verified graph (normally simplified, CSE'd and DCE'd). Gives: a `KernelGraph` (see
`kernel_graph.py` for the data model and how the backend reads it).

Partition, in phases over groups of nodes (a group becomes one kernel; every merge is refused if
it would create a cycle between groups, so the kernels always have a valid schedule):
1. elementwise chains: an elementwise node joins its only consumer's group when its inputs are
   stored anyway, else its elementwise producer's group, when both have the same output shape
   (one iteration space; smaller operands are broadcast loads). Random ops
   are elementwise (counter-based Philox: element i needs only i), so dropout masks fuse.
2. epilogues: the elementwise group consuming a reduction, matmul, conv, pool or gather over that
   op's exact output shape joins it (bias add, activation, residual add, the optimizer update of
   a parameter whose gradient this op produces). A consumer over a *larger* space (softmax's
   `e / sum(e)`) needs the whole reduced value first, so it never joins the reduction's loop.
3. rows: a sum/max/min over the last axis of an f32 [..., C] value (C at most ROW_MAX) grows,
   over the group graph, into a "rows" kernel with every neighbouring group whose nodes live in
   the same rows: elementwise and one_hot nodes over [..., C] or [..., 1], other last-axis
   reductions of [..., C]. One pass over a block of rows then does softmax and cross-entropy,
   forward and backward, with no intermediate stored (the backend computes a block of rows in
   registers; see codegen/kernels_rows.py). Operands from outside must be whole rows (f32),
   one value per row, one value per column or a scalar; a row value of another dtype never
   leaves its group (the backend stores f32 rows only).
4. recomputed prologues: a small elementwise group (at most MAX_RECOMPUTE nodes, no random op,
   no root) every outside consumer of which is a matmul or reduction reading it as an operand
   (the activation gradient `where(z > 0, dy, 0)` feeding dW = hᵀ·g, dx = g·Wᵀ and db = Σ g), and
   a transpose of the last two axes read only by matmuls (a packing layout), are copied into each
   consumer and never stored.
5. reduction prologues: the elementwise group producing a reduction's input (same shape) joins it
   (`sum(exp(x - m))` is one loop); its values that others need are still stored.
Anything else is a kernel of its own (copy, view, gather...). A value read by a later kernel or
named as a root is an output of its kernel, so activations kept for backward are materialised.
"""

from __future__ import annotations

import math

import networkx as nx

from ..errors import InternalCompilerError
from ..ir import Graph, Node
from .common import ELEMENTWISE, GEMM, RANDOM, REDUCTION, live_roots, op_class
from .kernel_graph import Kernel, KernelGraph, assemble, make_kernel

MAX_RECOMPUTE = 6
ROW_MAX = 32  # the longest row a rows kernel holds (its values live in registers per column)
ROW_REDUCTIONS = ("sum", "max", "min")
_EPILOGUE_HOSTS = ("reduction", "gemm", "conv", "pool", "gather")


class _Groups:
    """Union of nodes into groups with a group-level DAG for cycle checks."""

    def __init__(self, g: Graph, pos: dict[int, int]):
        self.g, self.pos = g, pos
        self.gid: dict[int, int] = {}
        self.members: dict[int, list[int]] = {}
        self.main: dict[int, int | None] = {}
        self.stage: dict[int, str] = {}
        self.preds: dict[int, set[int]] = {}
        self.succs: dict[int, set[int]] = {}
        self.lo: dict[int, int] = {}
        self.hi: dict[int, int] = {}
        self.extra: dict[int, set[int]] = {}  # recomputed prologue nodes per group
        self.rows: dict[int, tuple[tuple[int, ...], int]] = {}  # rows groups: (lead, C)
        for n in g.nodes_in_order():
            if op_class(n.op) == "leaf":
                continue
            i = n.id
            self.gid[i], self.members[i] = i, [i]
            self.main[i] = None if n.op in ELEMENTWISE else i
            self.stage[i] = "body" if n.op in ELEMENTWISE else "main"
            self.preds[i], self.succs[i], self.extra[i] = set(), set(), set()
            self.lo[i] = self.hi[i] = pos[i]
            for x in n.inputs:
                if x.id in self.gid and self.gid[x.id] != i:
                    self.preds[i].add(self.gid[x.id])
                    self.succs[self.gid[x.id]].add(i)

    def space(self, gid: int) -> tuple[int, ...]:
        return self.g.node(self.members[gid][0]).type.shape

    def _reaches(self, src: int, dst: int) -> bool:
        """A path src -> c -> ... -> dst through some other group c."""
        stack = [c for c in self.succs[src] if c != dst]
        seen = set(stack)
        while stack:
            c = stack.pop()
            if self.lo[c] > self.hi[dst]:
                continue  # every node of c comes after every node of dst
            for s in self.succs[c]:
                if s == dst:
                    return True
                if s not in seen:
                    seen.add(s)
                    stack.append(s)
        return False

    def merge(self, a: int, b: int, stage: str, rows: bool = False) -> bool:
        """Move group b into group a (b's plain elementwise nodes get `stage`) if legal; with
        `rows`, a keeps no main node (a rows kernel holds several reductions)."""
        if a == b or (not rows and self.main[a] is not None and self.main[b] is not None):
            return False
        if self._reaches(a, b) or self._reaches(b, a):
            return False
        for i in self.members[b]:
            self.gid[i] = a
            if self.stage[i] == "body":
                self.stage[i] = stage
        self.members[a] += self.members.pop(b)
        self.main[a] = None if rows else (
            self.main[a] if self.main[a] is not None else self.main.pop(b))
        self.main.pop(b, None)
        self.extra[a] |= self.extra.pop(b)
        self._rewire(b, a)
        self.lo[a], self.hi[a] = min(self.lo[a], self.lo.pop(b)), max(self.hi[a], self.hi.pop(b))
        return True

    def _rewire(self, b: int, a: int) -> None:
        for p in self.preds.pop(b):
            self.succs[p].discard(b)
            if p != a:
                self.succs[p].add(a)
                self.preds[a].add(p)
        for s in self.succs.pop(b):
            self.preds[s].discard(b)
            if s != a:
                self.preds[s].add(a)
                self.succs[a].add(s)
        self.preds[a].discard(b)
        self.succs[a].discard(b)

    def dissolve(self, gid: int, consumers: dict[int, set[int]]) -> None:
        """Group gid is recomputed inside each consumer group (nodes per consumer given)."""
        for k, nodes in consumers.items():
            self.extra[k] |= nodes
            self.preds[k].discard(gid)
            self.preds[k] |= self.preds[gid]
        for p in self.preds.pop(gid):
            self.succs[p].discard(gid)
            self.succs[p] |= set(consumers)
        self.succs.pop(gid)
        for d in (self.members, self.main, self.lo, self.hi, self.extra):
            d.pop(gid)


def _stored_anyway(g: Graph, x) -> bool:
    return x.op not in ELEMENTWISE or any(u.op not in ELEMENTWISE for u in g.users(x))


def _fuse_elementwise(G: _Groups, g: Graph) -> None:
    # consumer first: a node with one same-shape elementwise user, whose inputs are stored for
    # other readers anyway, is computed where it is used (a relu mask read in the backward pass
    # is recomputed from the kept activation there instead of being stored as a second tensor)
    for n in reversed(g.nodes_in_order()):
        users = g.users(n)
        if (n.op in ELEMENTWISE and n.op not in RANDOM and len(users) == 1
                and users[0].op in ELEMENTWISE and users[0].type.shape == n.type.shape
                and all(_stored_anyway(g, x) for x in n.inputs if x.id in G.gid)):
            G.merge(G.gid[users[0].id], G.gid[n.id], "body")
    for n in g.nodes_in_order():
        if n.op not in ELEMENTWISE:
            continue
        for x in n.inputs:
            gx = G.gid.get(x.id)
            if (gx is not None and G.main[gx] is None and x.op in ELEMENTWISE
                    and G.space(gx) == n.type.shape and G.main[G.gid[n.id]] is None):
                G.merge(gx, G.gid[n.id], "body")


def _fuse_epilogues(G: _Groups, g: Graph) -> None:
    for n in g.nodes_in_order():
        if op_class(n.op) not in _EPILOGUE_HOSTS:
            continue
        for u in g.users(n):
            gu = G.gid[u.id]
            if (u.op in ELEMENTWISE and G.main[gu] is None
                    and G.space(gu) == n.type.shape):
                G.merge(G.gid[n.id], gu, "epilogue")


def _operand_transpose(n) -> bool:
    r = n.type.rank
    return (n.op == "transpose" and r >= 2
            and n.attrs["perm"] == tuple(range(r - 2)) + (r - 1, r - 2))


def _recompute_prologues(G: _Groups, g: Graph, roots: set[int]) -> None:
    for gid in sorted(G.members, key=lambda i: G.lo[i]):
        members = G.members[gid]
        head = g.node(members[0])
        if gid in G.rows:
            continue
        if G.main[gid] is None:
            if len(members) > MAX_RECOMPUTE or any(g.node(i).op in RANDOM for i in members):
                continue
            hosts = GEMM | REDUCTION
        elif len(members) == 1 and _operand_transpose(head):
            hosts = GEMM
        else:
            continue
        if roots & set(members):
            continue
        inside, ok, reads = set(members), True, {}
        for i in members:
            for u in g.users(g.node(i)):
                if u.id in inside:
                    continue
                gu = G.gid.get(u.id)
                if u.op not in hosts or gu is None or G.main.get(gu) != u.id:
                    ok = False
                    break
                reads.setdefault(gu, set()).add(i)
            if not ok:
                break
        if not ok or not reads:
            continue
        consumers = {k: _ancestors_within(g, ids, inside) for k, ids in reads.items()}
        G.dissolve(gid, consumers)


def _ancestors_within(g: Graph, ids: set[int], inside: set[int]) -> set[int]:
    out, stack = set(), list(ids)
    while stack:
        i = stack.pop()
        if i in out:
            continue
        out.add(i)
        stack.extend(x.id for x in g.node(i).inputs if x.id in inside)
    return out


def _fuse_reduction_prologues(G: _Groups, g: Graph) -> None:
    for n in g.nodes_in_order():
        if n.op not in REDUCTION or n.id not in G.gid or G.gid[n.id] in G.rows:
            continue
        x = n.inputs[0]
        gx = G.gid.get(x.id)
        if gx is not None and x.op in ELEMENTWISE and G.main.get(gx, 0) is None \
                and gx not in G.rows and G.space(gx) == x.type.shape:
            G.merge(G.gid[n.id], gx, "prologue")


def row_space(n: Node) -> tuple[tuple[int, ...], int] | None:
    """(lead, C) when `n` reduces the last axis of an f32 [*lead, C] value into a rows kernel."""
    if n.op not in ROW_REDUCTIONS or n.type.dtype != "f32":
        return None
    t = n.inputs[0].type
    if t.rank < 2 or tuple(n.attrs["axes"]) != (t.rank - 1,) or not 2 <= t.shape[-1] <= ROW_MAX:
        return None
    return t.shape[:-1], t.shape[-1]


def row_operand(shape: tuple[int, ...], lead: tuple[int, ...], c: int) -> str | None:
    """How a value of `shape` is read by the rows of [*lead, c]: "row" (one row each),
    "one" (one value per row: [*lead, 1]), "col" (the same row for every row: [1.., c]),
    "scalar", else None."""
    if shape == (*lead, c):
        return "row"
    if shape == (*lead, 1):
        return "one"
    if math.prod(shape) == 1:
        return "scalar"
    if shape and shape[-1] == c and math.prod(shape[:-1]) == 1 and len(shape) <= len(lead) + 1:
        return "col"
    return None


def _row_member(g: Graph, n: Node, lead: tuple[int, ...], c: int, group: set[int],
                roots: set[int]) -> bool:
    """Can node `n` of a group (ids `group`) be computed in the rows of [*lead, c]? (`roots`:
    the live roots, stored whatever reads them)"""
    if n.op in ROW_REDUCTIONS:
        return row_space(n) == (lead, c)
    if n.op not in ELEMENTWISE or n.op in RANDOM:
        return False
    if n.op == "one_hot":
        x = n.inputs[0]
        return (n.attrs["n"] == c and n.type.shape == (*lead, c) and x.type.shape == lead
                and x.type.dtype == "i32")
    if row_operand(n.type.shape, lead, c) not in ("row", "one"):
        return False
    if n.type.shape == (*lead, c) and n.type.dtype != "f32" and (
            n.id in roots or any(u.id not in group for u in g.users(n))):
        return False  # stored rows are f32
    for x in n.inputs:
        kind = row_operand(x.type.shape, lead, c)
        if kind is None or (kind == "row" and x.id not in group and x.type.dtype != "f32"):
            return False
    return True


def _fuse_rows(G: _Groups, g: Graph, roots: set[int]) -> None:
    for n in g.nodes_in_order():
        space = row_space(n)
        if space is None or n.id not in G.gid or G.gid[n.id] in G.rows:
            continue
        start = G.gid[n.id]
        if not _row_group(G, g, start, *space, roots):
            continue
        G.rows[start] = space
        grown, todo = False, [start]
        while todo:
            here = todo.pop()  # a group id (the id of a node it holds)
            for h in sorted(G.preds.get(here, set()) | G.succs.get(here, set())):
                if h in G.rows or not _row_group(G, g, h, *space, roots):
                    continue
                if G.merge(here, h, "body", rows=True):
                    grown = True
                    todo.append(here)
                    break  # the neighbour sets changed: look again
        if not grown:
            del G.rows[start]  # a lone reduction: its own kernel is as good


def _row_group(G: _Groups, g: Graph, gid: int, lead: tuple[int, ...], c: int,
               roots: set[int]) -> bool:
    members = set(G.members[gid])
    return all(_row_member(g, g.node(i), lead, c, members, roots) for i in members)


def fuse_kernels(g: Graph, fuse: bool = True, rows: bool = True) -> KernelGraph:
    """Partition `g` into kernels in schedule order; `fuse=False` gives one kernel per node,
    `rows=False` leaves out the rows kernels."""
    order = g.nodes_in_order()
    pos = {n.id: i for i, n in enumerate(order)}
    roots = [r.id for r in live_roots(g)]
    G = _Groups(g, pos)
    if fuse:
        _fuse_elementwise(G, g)
        _fuse_epilogues(G, g)
        if rows:
            _fuse_rows(G, g, set(roots))
        _recompute_prologues(G, g, set(roots))
        _fuse_reduction_prologues(G, g)
    kernels = [_make_kernel(G, g, gid, pos) for gid in sorted(G.members, key=lambda i: G.lo[i])]
    kernels = _schedule(g, kernels, pos)
    leaves = [n.id for n in order if op_class(n.op) == "leaf"]
    return assemble(g, kernels, leaves, roots, "fuse_kernels")


def _make_kernel(G: _Groups, g: Graph, gid: int, pos: dict[int, int]) -> Kernel:
    owned = set(G.members[gid])
    extra = G.extra[gid] - owned
    nodes = sorted(owned | extra, key=pos.__getitem__)
    if gid in G.rows:
        stages = {i: "main" if g.node(i).op in ROW_REDUCTIONS else "body" for i in nodes}
        return make_kernel(g, gid, nodes, stages, None, [], pos, kind="rows")
    stages = {i: ("prologue" if i in extra else G.stage[i]) for i in nodes}
    return make_kernel(g, gid, nodes, stages, G.main[gid], sorted(extra), pos)


def _schedule(g: Graph, kernels: list[Kernel], pos: dict[int, int]) -> list[Kernel]:
    owner = {i: k.id for k in kernels for i in k.nodes if i not in k.recomputed}
    dag = nx.DiGraph()
    by_id = {k.id: k for k in kernels}
    for k in kernels:
        dag.add_node(k.id)
        for x in k.inputs:
            if x in owner and owner[x] != k.id:
                dag.add_edge(owner[x], k.id)
    if not nx.is_directed_acyclic_graph(dag):
        raise InternalCompilerError("kernel fusion produced a cycle between kernels")
    # write-after-read: schedule the kernel writing an update after the other readers of the old
    # value where the dependences allow, so the planner can update the param in place
    for name, upd in g.updates.items():
        target = g.params.get(name) or g.states.get(name)
        writer = owner.get(upd.id)
        if target is None or writer is None:
            continue
        for k in kernels:
            if k.id != writer and target.id in k.inputs and not nx.has_path(dag, writer, k.id):
                dag.add_edge(k.id, writer)
    first = {k.id: min(pos[i] for i in k.nodes if i not in k.recomputed) for k in kernels}
    return [by_id[i] for i in nx.lexicographical_topological_sort(dag, key=first.__getitem__)]
