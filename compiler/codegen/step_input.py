"""Codegen stage, step input: the kernels and the arena plan the whole-step emitter consumes.

Takes: a graph, the nodes a request wants (outputs, losses, gradients) and the updates to apply
(name -> node). Gives: `StepPlan` with `kernels` (`Kernel`: kind, nodes in order, external inputs,
the stored `main` node, iteration `space` -- the field names of the optimizer's KernelGraph, so
its plan can replace this one when it lands) and the storage of every value: an arena byte offset,
a persistent Store tensor (params, state, optimizer state: by name), or an alias (views).

This is the local fallback of the passes work: elementwise chains are fused when a producer has
the consumer's shape and no other reader; every other node is its own kernel; every stored value
gets its own 64-byte aligned arena range (a correct plan without reuse).

Invariants: kernels are in a topological order; an update is written in place into its persistent
tensor only when no later kernel (nor the caller, reading reported values) reads the old value and
its kernel reads that tensor at the same element it writes; other updates are copied at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ir import Graph, Node
from .lower_elementwise import ELEMENTWISE

ALIGN = 64
HEADER = 64 * 4  # barrier state, seed, step, loss accumulators (see step.py)
VIEWS = ("reshape", "stop_gradient")
FUSIBLE = (set(ELEMENTWISE) - set(VIEWS)) | {"random_uniform", "random_normal", "const"}
_ITEMSIZE = {"f32": 4, "f64": 8, "i32": 4, "bool": 1}


def nbytes(n: Node) -> int:
    return int(np.prod(n.type.shape, dtype=np.int64)) * _ITEMSIZE[n.type.dtype]


def is_scalar_const(n: Node) -> bool:
    return n.op == "const" and int(np.prod(n.type.shape, dtype=np.int64)) == 1


@dataclass
class Kernel:
    kind: str  # elementwise | leaf | copy_update | the primitive name of a single node
    nodes: list[int]
    inputs: list[int]
    main: int
    space: tuple[int, ...]
    update_of: str | None = None  # copy_update: the persistent tensor written


@dataclass
class StepPlan:
    graph: Graph
    kernels: list[Kernel]
    offset: dict[int, int]  # node id -> arena byte offset
    persistent: dict[int, str]  # node id -> Store name (leaves and in-place updates)
    names: list[str]  # persistent names, index = slot of the pointer table
    consts: dict[int, np.ndarray]  # arena-resident constants written once
    size: int  # arena bytes before scratch
    fed: dict[str, int] = field(default_factory=dict)  # input name -> node id
    folded: set[int] = field(default_factory=set)  # 2-D transposes read by GEMMs as op(A)ᵀ


def _foldable(n: Node, readers: list[Node], keep: set[int]) -> bool:
    """A float32 2-D transpose only ever multiplied (unbatched): the GEMM reads it transposed."""
    return (n.op == "transpose" and n.type.rank == 2 and n.type.dtype == "f32"
            and n.id not in keep and bool(readers)
            and all(r.op == "matmul" and all(x.type.rank == 2 for x in r.inputs)
                    for r in readers))


def _storage_root(g: Graph, n: Node) -> Node:
    while n.op in VIEWS:
        n = n.inputs[0]
    return n


def plan_step(g: Graph, wanted: list[Node], updates: dict[str, Node] | None = None,
              header: int = HEADER) -> StepPlan:
    """Kernels and storage computing `wanted` and applying `updates`."""
    updates = updates or {}
    roots = [*wanted, *updates.values()]
    needed = g.ancestors(roots)
    order = [n for n in g.nodes_in_order() if n.id in needed]
    users: dict[int, int] = {}
    for n in order:
        for x in n.inputs:
            users[x.id] = users.get(x.id, 0) + 1
    keep = {n.id for n in roots}
    nodes = {n.id: n for n in order}
    readers: dict[int, list[Node]] = {}
    for n in order:
        for x in n.inputs:
            readers.setdefault(x.id, []).append(n)
    folded = {n.id for n in order if _foldable(n, readers.get(n.id, []), keep)}

    # fuse: a fusible producer with the consumer's shape and exactly one reader joins it
    group_of: dict[int, int] = {}
    for n in reversed(order):
        if n.op not in FUSIBLE or n.op == "const":
            continue
        gid = group_of.setdefault(n.id, n.id)
        for x in n.inputs:
            if (x.op in FUSIBLE and x.op != "const" and x.id not in keep
                    and users.get(x.id) == 1 and x.type.shape == n.type.shape
                    and x.id not in group_of):
                group_of[x.id] = gid
    kernels: list[Kernel] = []
    members: dict[int, list[int]] = {}
    for n in order:
        if n.id in group_of:
            members.setdefault(group_of[n.id], []).append(n.id)
    for n in order:
        if n.op in ("input", "param", "state", "const") or n.op in VIEWS or n.id in folded:
            continue
        if n.id in group_of:
            if group_of[n.id] != n.id:
                continue
            ids = members[n.id]
            inside = set(ids)
            ext: list[int] = []
            for i in ids:
                for x in nodes[i].inputs:
                    if x.id not in inside and x.id not in ext and not is_scalar_const(x):
                        ext.append(x.id)
            kernels.append(Kernel("elementwise", ids, ext, n.id, n.type.shape))
        else:
            ext = list(dict.fromkeys(x.inputs[0].id if x.id in folded else x.id
                                     for x in n.inputs))
            kernels.append(Kernel(n.op, [n.id], ext, n.id, n.type.shape))

    # storage
    persistent: dict[int, str] = {}
    names: list[str] = []
    for name, leaf in [*g.params.items(), *g.states.items()]:
        if leaf.id in needed or name in updates:
            persistent[leaf.id] = name
            names.append(name)
    leaf_of = {**{k: v for k, v in g.params.items()}, **{k: v for k, v in g.states.items()}}

    def root_id(i: int) -> int:
        return _storage_root(g, nodes[i]).id

    pos = {k.main: j for j, k in enumerate(kernels)}
    reads_after: dict[int, int] = {}  # storage root -> last kernel position reading it
    for j, k in enumerate(kernels):
        for i in k.inputs:
            reads_after[root_id(i)] = j
    final_reads = {root_id(n.id) for n in wanted}
    inplace: dict[int, str] = {}
    counts: dict[int, int] = {}
    for u in updates.values():
        counts[u.id] = counts.get(u.id, 0) + 1
    for name, u in updates.items():
        t = leaf_of[name]
        if u.id == t.id:
            continue
        j = pos.get(u.id)
        if (j is not None and kernels[j].kind == "elementwise" and counts[u.id] == 1
                and u.id not in {n.id for n in wanted}
                and u.type == t.type and reads_after.get(t.id, -1) <= j
                and t.id not in final_reads):
            inplace[u.id] = name
    for name, u in updates.items():
        t = leaf_of[name]
        if u.id != t.id and u.id not in inplace:
            kernels.append(Kernel("copy_update", [], [u.id], u.id, u.type.shape, name))
    persistent.update(inplace)

    offset: dict[int, int] = {}
    consts: dict[int, np.ndarray] = {}
    fed: dict[str, int] = {}
    at = header
    for n in order:
        if n.id in persistent or n.op in VIEWS or n.id in folded:
            continue
        at = -(-at // ALIGN) * ALIGN
        offset[n.id] = at
        at += max(nbytes(n), 1)
        if n.op == "const":
            consts[n.id] = np.asarray(n.attrs["value"])
        if n.op == "input":
            fed[n.attrs["name"]] = n.id
    for n in order:  # views share their root's storage
        if n.op in VIEWS:
            r = _storage_root(g, n)
            if r.id in persistent:
                persistent[n.id] = persistent[r.id]
            else:
                offset[n.id] = offset[r.id]
    return StepPlan(g, kernels, offset, persistent, names, consts, -(-at // ALIGN) * ALIGN, fed,
                    folded)
