"""Codegen stage, step input: the optimizer's kernels and arena plan for one request, addressed the
way the whole-step module reads them.

Takes: a graph, the values a request wants (name -> node: outputs, losses, gradients) and the
updates to apply (name -> node). Gives: `plan_step(...)` -> `StepPlan`. The request graph (a copy
of the graph whose live roots are exactly the wanted values and the updates) goes through
`pipeline.optimize` (simplify, CSE, DCE, fusion, legalization with `jit_fit` -- what the kernel
emitters can fuse -- and the memory plan); this module only maps the resulting `ArenaPlan` onto
native addresses:
  [0, HEADER)      barrier state, RNG key words, loss accumulators (see step.py);
  [HEADER, size)   the plan's const, input and arena regions at their planned offsets, shifted
                   by HEADER - (base of the const region): buffers shared over time stay shared;
  params, state    not in the arena: they are the model Store's arrays, one slot each of the
                   pointer table at `size` (`names`), written by the runtime; values planned into
                   a param/state buffer (in-place updates, views of params) use that slot.
Updates the plan could not write in place (`commits`) are copied into their param/state after the
last kernel.

Invariants: node ids in the plan refer to `graph` (the optimized request graph), not to the
caller's graph: `wanted` gives the id of each wanted value after the passes. Two values share
bytes only if the plan says so (`check_plan` proves it safe), so barrier placement and noalias
arguments key on buffers (`buffer_of`, `span`), never on node ids.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from ..ir import Graph, Node
from ..passes.common import RANDOM
from ..passes.kernel_graph import Kernel
from ..passes.plan_memory import ArenaPlan, align
from ..pipeline import optimize
from .kernels_dense import fit_conv, fit_matmul, fit_pool
from .kernels_shape import reduce_prologue
from .lower_elementwise import ELEMENTWISE

HEADER = 64 * 4  # barrier state, seed, step, loss accumulators (see step.py)
# ops an elementwise loop evaluates in registers (broadcast_to: its operand is a broadcast load)
LOOP_OPS = frozenset(ELEMENTWISE) | RANDOM | {"broadcast_to"}


def jit_fit(g: Graph, k: Kernel) -> set[int]:
    """The nodes of kernel `k` the JIT's emitters emit as one kernel (passes/legalize.py)."""
    if k.kind == "rows":
        return set(k.nodes)  # kernels_rows emits every node fuse_kernels puts in one
    if k.main is None:
        return {i for i in k.nodes if g.node(i).op in LOOP_OPS}
    if k.kind == "gemm":
        return fit_matmul(g, k)
    if k.kind == "conv":
        return fit_conv(g, k)
    if k.kind == "pool":
        return fit_pool(g, k)
    if k.kind == "reduction":
        return {k.main, *reduce_prologue(g, k)}
    return {k.main}


@dataclass
class StepPlan:
    graph: Graph  # the optimized request graph
    kernels: list[Kernel]  # the legalized kernel graph, in schedule order
    arena: ArenaPlan
    wanted: dict[str, int]  # request name -> node id in `graph`
    offset: dict[int, int]  # node id -> native arena byte offset (const, input, arena values)
    persistent: dict[int, str]  # node id -> Store name (values in a param/state buffer)
    names: list[str]  # persistent names, index = slot of the pointer table
    consts: dict[int, np.ndarray]  # const leaf id -> value, written once at load time
    size: int  # native bytes up to the pointer table
    fed: dict[str, int] = field(default_factory=dict)  # input name -> node id (inputs read)
    commits: list[tuple[int, int]] = field(default_factory=list)  # (update id, leaf id): copies
    rng_key: int | None = None  # the rng_key leaf, filled from the header by the step

    def key_text(self) -> str:
        """Everything of this plan the emitted code depends on, for the compile cache key: the
        optimized graph, the kernels and every address (the passes that made them are not part
        of the code generator's fingerprint, and NETC_DISABLE changes them)."""
        lines = [self.graph.to_text()]
        lines += [f"{k.kind} {k.main} {k.nodes} {k.stages} {k.recomputed} {k.inputs} {k.outputs}"
                  for k in self.kernels]
        lines += [repr(x) for x in (sorted(self.offset.items()), sorted(self.persistent.items()),
                                    self.names, self.commits, self.fed, self.rng_key, self.size,
                                    self.wanted)]
        return "\n".join(lines)

    def buffer_of(self, i: int) -> int:
        return self.arena.storage[i]

    def span(self, i: int) -> tuple:
        """What value `i` occupies: ("p", name) for a Store tensor, else ("a", lo, hi) bytes."""
        if i in self.persistent:
            return ("p", self.persistent[i])
        b = self.arena.buffer_of(i)
        return ("a", self.offset[i], self.offset[i] + max(b.size, 1))


def request_graph(g: Graph, wanted: dict[str, Node], updates: dict[str, Node]) -> Graph:
    """A copy of `g` whose live roots are exactly `wanted` (as outputs) and `updates`."""
    rg = copy.deepcopy(g)
    rg.outputs = {name: rg.node(n.id) for name, n in wanted.items()}
    rg.losses = {}
    rg.updates = {name: rg.node(n.id) for name, n in updates.items()}
    return rg


def plan_step(g: Graph, wanted: dict[str, Node], updates: dict[str, Node] | None = None,
              disable: set[str] | None = None) -> StepPlan:
    """Optimize the request (`wanted` values, `updates` applied) and address its plan."""
    rg = request_graph(g, wanted, updates or {})
    opt = optimize(rg, disable=disable, fit=jit_fit)
    plan, rg = opt.plan, opt.graph
    base = plan.regions["const"][0]
    offset: dict[int, int] = {}
    persistent: dict[int, str] = {}
    names: list[str] = []
    slot_name: dict[int, str] = {}
    for b in plan.buffers:
        if b.region in ("param", "state"):
            leaf = rg.node(b.values[0])
            slot_name[b.id] = leaf.attrs["name"]
            names.append(leaf.attrs["name"])
    for nid, bid in plan.storage.items():
        b = plan.buffers[bid]
        if b.id in slot_name:
            persistent[nid] = slot_name[b.id]
        else:
            offset[nid] = HEADER + b.offset - base
    consts = {b.values[0]: np.asarray(rg.node(b.values[0]).attrs["value"])
              for b in plan.buffers if b.region == "const"}
    read = {x for k in opt.kernels.kernels for x in k.inputs} | {n.id for n in rg.outputs.values()}
    read |= {u.id for u in rg.updates.values()}
    fed = {name: n.id for name, n in rg.inputs.items() if n.id in read}
    commits = []
    for name, u in rg.updates.items():
        leaf = rg.params.get(name) or rg.states[name]
        if plan.storage[u.id] != plan.storage[leaf.id]:
            commits.append((u.id, leaf.id))
    key = rg.rng_key_node
    size = HEADER + plan.total - base
    return StepPlan(rg, opt.kernels.kernels, plan, {k: n.id for k, n in rg.outputs.items()},
                    offset, persistent, names, consts, align(size), fed, commits,
                    key.id if key is not None and key.id in plan.storage else None)
