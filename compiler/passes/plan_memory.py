"""Optimizer pass 5 — the static memory plan of one step (an analysis: graph and kernels unchanged).

Takes: a `KernelGraph` (its kernel order is the schedule; step i runs kernel i).
Gives: an `ArenaPlan`: every value a kernel stores or reads lives in a `Buffer` at a fixed byte
offset of ONE 64-byte-aligned block, laid out as consecutive regions
    [ param | state | const | input | arena ]
- param, state (optimizer state and the step counter are states too): persistent across steps,
  pinned, one buffer each in declaration order; an update (`g.updates[name]`) is written into its
  param/state buffer in place when nothing reads the old value later (the usual case: the update
  is the last use, often fused into the kernel producing the gradient); otherwise it lives in the
  arena until the end of the step and `commits` lists the copy to make after the last kernel.
- const: read-only, filled at load time. input: inputs, targets and the rng key, fed per step.
- arena: activations, gradients and temporaries. A value lives from the step that writes it to
  its last read (a forward activation read by a backward kernel therefore lives until then);
  outputs and losses live to the end of the step (the runtime reads them after). A view (reshape)
  shares its input's buffer. An elementwise kernel may write an output into the buffer of an
  input dying at that very kernel (same bytes, same dtype, read only at the output's own index);
  such buffers hold a chain of values. Buffers are then placed greedily, largest first, at the
  lowest 64-aligned offset free during their lifetime.

Invariants (checked by `check_plan`): no two buffers overlap in bytes while both are live; every
value is in a live buffer at every step that reads it; each in-place reuse is index-safe; offsets
are 64-byte aligned and inside their region. Gradients are ordinary arena values (not pinned): a
gradient consumed only by its update inside the same kernel is never stored at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InternalCompilerError
from ..ir import Graph
from .common import ELEMENTWISE, nbytes
from .kernel_graph import KernelGraph

ALIGN = 64
REGIONS = ("param", "state", "const", "input", "arena")
_SAME_INDEX_STAGES = ("body", "epilogue")


def align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


@dataclass
class Buffer:
    """A byte range [offset, offset + size) holding `values` (node ids) during steps
    [start, end]; start -1 means "before the first kernel", end == len(kernels) "after the last"."""

    id: int
    region: str
    size: int
    start: int
    end: int
    values: list[int]
    name: str = ""
    offset: int = -1

    def overlaps(self, other: Buffer) -> bool:
        return (self.offset < other.offset + other.size and other.offset < self.offset + self.size
                and self.start <= other.end and other.start <= self.end)


@dataclass
class ArenaPlan:
    kernel_graph: KernelGraph
    buffers: list[Buffer]
    storage: dict[int, int]           # node id -> buffer id (views and in-place chains share)
    regions: dict[str, tuple[int, int]]  # region -> (base offset, size in bytes)
    naive_arena: int                  # arena bytes with one aligned buffer per value, no reuse
    naive_unfused: int                # the same if every non-leaf, non-view node were stored
    commits: list[tuple[int, int]] = field(default_factory=list)  # (from buffer, to buffer)
    inplace: list[tuple[int, int, int]] = field(default_factory=list)  # (kernel, in id, out id)
    defined_at: dict[int, int] = field(default_factory=dict)  # node id -> step that writes it
    last_read: dict[int, int] = field(default_factory=dict)   # node id -> last step reading it

    @property
    def steps(self) -> int:
        return len(self.kernel_graph.kernels)

    @property
    def arena_peak(self) -> int:
        return self.regions["arena"][1]

    @property
    def total(self) -> int:
        base, size = self.regions["arena"]
        return base + size

    def buffer_of(self, node_id: int) -> Buffer:
        return self.buffers[self.storage[node_id]]


def _read_steps(kg: KernelGraph) -> dict[int, list[int]]:
    reads: dict[int, list[int]] = {}
    for i, k in enumerate(kg.kernels):
        for x in k.inputs:
            reads.setdefault(x, []).append(i)
    return reads


def _same_index_reader(g: Graph, kg: KernelGraph, step: int, u: int, v: int) -> bool:
    """In kernel `step`, is `u` read only where `v` (same shape) is written, element for element?"""
    k = kg.kernels[step]
    if k.kind not in ("elementwise", "reduction", "gemm", "conv", "pool"):
        return False
    stage = k.stages.get(v)
    if stage not in _SAME_INDEX_STAGES:
        return False
    un, vn = g.node(u), g.node(v)
    if un.type != vn.type:
        return False
    members = set(k.nodes)
    for c in g.users(un):
        if c.id not in members:
            continue
        if (c.op not in ELEMENTWISE or c.op in ("broadcast_to", "one_hot")
                or k.stages[c.id] != stage or c.type.shape != un.type.shape):
            return False
        # a GEMM writes partial sums of C before its last K block applies the epilogue: only
        # an addend (an update's weight, a residual) is read before C is first written
        if k.kind == "gemm" and c.op not in ("add", "sub"):
            return False
    return True


def plan_memory(kg: KernelGraph, inplace: bool = True, reuse: bool = True) -> ArenaPlan:
    """Plan every buffer of one step (see the module docstring). `inplace=False` turns off
    in-place reuse, `reuse=False` gives every arena value its own bytes (the naive plan)."""
    g = kg.graph
    K = len(kg.kernels)
    reads = _read_steps(kg)
    root_ids = set(kg.roots)
    buffers: list[Buffer] = []
    storage: dict[int, int] = {}
    defined: dict[int, int] = {}
    last_read: dict[int, int] = {}

    def new_buffer(region: str, size: int, start: int, end: int, vid: int, name: str) -> Buffer:
        b = Buffer(len(buffers), region, size, start, end, [vid], name)
        buffers.append(b)
        storage[vid] = b.id
        return b

    leaves = {i: g.node(i) for i in kg.leaves}
    for region, nodes in (("param", g.params.values()), ("state", g.states.values()),
                          ("const", [n for n in leaves.values() if n.op == "const"]),
                          ("input", [*g.inputs.values(), *([g.rng_key_node]
                                                           if g.rng_key_node else [])])):
        for n in nodes:
            new_buffer(region, nbytes(n), -1, K, n.id, n.attrs.get("name", f"%{n.id}"))
            defined[n.id] = -1
    for i, k in enumerate(kg.kernels):
        for v in k.outputs:
            defined[v] = i
            if k.kind == "view":
                storage[v] = storage[k.inputs[0]]
            else:
                new_buffer("arena", nbytes(g.node(v)), i, i, v, f"%{v} {g.node(v).op}")
    for nid in storage:
        steps = reads.get(nid, [])
        last_read[nid] = max(steps, default=defined[nid])
        if nid in root_ids:
            last_read[nid] = K
    naive = sum(align(b.size) for b in buffers if b.region == "arena")
    for nid, b in storage.items():
        buf = buffers[b]
        if buf.region == "arena":
            buf.end = max(buf.end, last_read[nid])

    unfused = sum(align(nbytes(n)) for n in g.nodes_in_order()
                  if n.op not in ("input", "param", "state", "const", "rng_key", "reshape"))
    plan = ArenaPlan(kg, buffers, storage, {}, naive, unfused, defined_at=defined,
                     last_read=last_read)
    _place_updates(plan, g)
    if inplace:
        _reuse_in_place(plan, g)
    buffers = [b for b in plan.buffers if b.values]
    remap = {b.id: i for i, b in enumerate(buffers)}
    for i, b in enumerate(buffers):
        b.id = i
    plan.buffers = buffers
    plan.storage = {nid: remap[b] for nid, b in plan.storage.items()}
    plan.commits = [(remap[a], remap[b]) for a, b in plan.commits]
    _lay_out(plan, reuse)
    return plan


def _place_updates(plan: ArenaPlan, g: Graph) -> None:
    K = plan.steps
    for name, v in g.updates.items():
        target = g.params.get(name) or g.states.get(name)
        if target is None:
            raise InternalCompilerError(f"update of unknown param or state {name!r}")
        tb = plan.buffers[plan.storage[target.id]]
        vb = plan.buffers[plan.storage[v.id]]
        if vb is tb:
            continue  # the update is the old value (or a view of it): nothing to do
        step = plan.defined_at[v.id]
        aliases = [x for x, b in plan.storage.items() if b == tb.id]  # the leaf and its views
        old_reads = max(plan.last_read[x] for x in aliases)
        readers_at_step = [x for x in aliases if plan.last_read[x] == step]
        safe = (vb.region == "arena" and vb.values == [v.id] and len(tb.values) == 1
                and readers_at_step in ([], [target.id])
                and (old_reads < step or (old_reads == step and _same_index_reader(
                    g, plan.kernel_graph, step, target.id, v.id))))
        if safe:
            tb.values.append(v.id)
            plan.storage[v.id] = tb.id
            vb.values = []
        else:
            vb.end = K
            plan.commits.append((vb.id, tb.id))


def _reuse_in_place(plan: ArenaPlan, g: Graph) -> None:
    kg = plan.kernel_graph
    members: dict[int, list[int]] = {}
    for x, b in plan.storage.items():
        members.setdefault(b, []).append(x)
    for step, k in enumerate(kg.kernels):
        if k.kind == "view":
            continue
        taken: set[int] = set()
        for v in k.outputs:
            vb = plan.buffers[plan.storage[v]]
            if vb.region != "arena" or vb.values != [v]:
                continue
            for u in k.inputs:
                ub = plan.buffers[plan.storage[u]]
                if (ub.region != "arena" or ub.id in taken or ub.end != step
                        or ub.size != vb.size or g.node(u).type.dtype != g.node(v).type.dtype
                        or ub.values[-1] != u
                        or any(plan.last_read[x] >= step for x in members[ub.id] if x != u)
                        or not _same_index_reader(g, kg, step, u, v)):
                    continue
                ub.values.append(v)
                ub.end = vb.end
                for x in members.pop(vb.id):
                    plan.storage[x] = ub.id
                    members[ub.id].append(x)
                plan.commits = [(ub.id if a == vb.id else a, t) for a, t in plan.commits]
                vb.values = []
                taken.add(ub.id)
                plan.inplace.append((step, u, v))
                break


def _lay_out(plan: ArenaPlan, reuse: bool) -> None:
    base = 0
    for region in REGIONS:
        bufs = [b for b in plan.buffers if b.region == region]
        if region == "arena" and reuse:
            size = _best_offsets(bufs)
        else:
            size = 0
            for b in bufs:
                b.offset = size
                size += align(b.size)
        for b in bufs:
            b.offset += base
        plan.regions[region] = (base, size)
        base += size


def _best_offsets(bufs: list[Buffer]) -> int:
    """Greedy by size: biggest first, each at the lowest aligned offset free over its lifetime."""
    placed: list[Buffer] = []
    peak = 0
    for b in sorted(bufs, key=lambda b: (-b.size, b.start, b.id)):
        clash = sorted((p for p in placed if p.start <= b.end and b.start <= p.end),
                       key=lambda p: p.offset)
        offset = 0
        for p in clash:
            if offset + b.size <= p.offset:
                break
            offset = max(offset, align(p.offset + p.size))
        b.offset = offset
        placed.append(b)
        peak = max(peak, align(offset + b.size))
    return peak
