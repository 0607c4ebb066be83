"""The kernel graph: what `fuse_kernels` gives and `plan_memory` and the LLVM backend read.

Takes: nothing (a data model). Gives: `Kernel`, `KernelGraph` (kernels in schedule order plus a
text printer), the cost model (`node_flops`) and the two steps every pass that partitions a
graph shares: `make_kernel` (a kernel from its nodes: kind, inputs, space, cost, description) and
`assemble` (kernels in schedule order -> a checked KernelGraph with outputs and bytes moved).

How a backend reads a kernel: emit one loop nest per kernel, in `KernelGraph.kernels` order. Load
every id in `inputs` from its buffer (a leaf's storage or an earlier kernel's output); compute
`nodes` in the listed order (topological), each node reading its inputs from registers/loads of
the same iteration; store every id in `outputs`. `stages[id]` says where a node sits in the nest:
  - "body": elementwise over `space` (the output shape of every body node; inputs broadcast);
  - "prologue": elementwise applied to an operand as it is loaded (a reduction's input, a GEMM
    operand while packing); its iteration space is that operand's shape;
  - "main": the anchor op (`main`) — the matmul, reduction, conv, pool, gather, copy or view;
  - "epilogue": elementwise over the main op's output shape, applied per output tile/row once
    the main value of that element is final.
A "rows" kernel (no main node; `space` is [*lead, C]) computes every node one block of rows at
a time: its reductions ("main") over the last axis and its elementwise nodes ("body") over
[*lead, C] or [*lead, 1], in node order (fuse_kernels: softmax and cross-entropy, forward and
backward, in one pass).
`recomputed` lists prologue nodes that are not stored anywhere: cheap elementwise ops (or an
operand transpose) recomputed inside every kernel that consumes them instead of being
materialised. Every other node belongs to exactly one kernel (`KernelGraph.owner`).

Invariants: every input of a node in `nodes` is in `nodes` or in `inputs`; each non-leaf id in
`inputs` is an output of an earlier kernel; every live root is an output of its kernel; a "view"
kernel (a row-major reshape) computes nothing: its output aliases its input's buffer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import InternalCompilerError
from ..ir import Graph, Node
from .common import CONV, ELEMENTWISE, GEMM, POOL, RANDOM, REDUCTION, nbytes, op_class

STAGES = ("prologue", "body", "main", "epilogue")


@dataclass
class Kernel:
    """One fused loop nest. Node ids refer to the graph the kernel graph was made from."""

    id: int
    kind: str  # elementwise | reduction | rows | gemm | conv | pool | gather | copy | view
    nodes: list[int]
    stages: dict[int, str]
    inputs: list[int]
    outputs: list[int]
    space: tuple[int, ...]
    main: int | None = None
    recomputed: list[int] = field(default_factory=list)
    description: str = ""
    flops: int = 0
    bytes_moved: int = 0


@dataclass
class KernelGraph:
    """Kernels in a valid schedule order over graph `graph`; `leaves` are leaf node ids read."""

    graph: Graph
    kernels: list[Kernel]
    leaves: list[int]
    roots: list[int]

    def __post_init__(self) -> None:
        self.owner: dict[int, int] = {}
        for i, k in enumerate(self.kernels):
            for nid in k.nodes:
                if nid not in k.recomputed:
                    self.owner[nid] = i

    @property
    def total_flops(self) -> int:
        return sum(k.flops for k in self.kernels)

    @property
    def total_bytes(self) -> int:
        return sum(k.bytes_moved for k in self.kernels)

    def to_text(self) -> str:
        g = self.graph
        lines = [f"kernel graph {g.name}: {len(self.kernels)} kernels, "
                 f"{human(self.total_flops)} FLOPs, {human(self.total_bytes)}B moved"]
        for i, k in enumerate(self.kernels):
            lines.append(f"k{i} {k.kind} space={list(k.space)} flops={human(k.flops)} "
                         f"bytes={human(k.bytes_moved)}  {k.description}")
            lines.append("    in:  " + (", ".join(value_label(g.node(x)) for x in k.inputs)
                                       or "-"))
            lines.append("    out: " + (", ".join(value_label(g.node(x)) for x in k.outputs)
                                       or "-"))
            body = []
            for nid in k.nodes:
                n = g.node(nid)
                mark = "~" if nid in k.recomputed else ""
                args = ",".join(f"%{x.id}" for x in n.inputs)
                body.append(f"{mark}%{nid}={n.op}({args})[{k.stages[nid]}]")
            lines.append("    do:  " + " ".join(body))
        return "\n".join(lines)

    __str__ = to_text


def value_label(n: Node) -> str:
    name = n.attrs.get("name") if n.op in ("input", "param", "state") else None
    return f"%{n.id}" + (f" {name}" if name else "") + f" {n.type}"


def human(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.1f}{unit}"
    return f"{x:g}"


def node_flops(n: Node) -> int:
    """Floating-point operations of one node (a multiply-add counts 2; a compare or select 1)."""
    op = n.op
    if op in ELEMENTWISE:
        return 0 if op == "broadcast_to" else n.type.size * (10 if op in RANDOM else 1)
    if op in REDUCTION:
        return n.inputs[0].type.size
    if op in GEMM:
        a = n.inputs[0].type
        return 2 * n.type.size * a.shape[-1]
    if op in CONV:
        kh, kw = (n.inputs[1].type.shape[2:] if op != "conv2d_grad_weight"
                  else n.attrs["kernel"])
        if op == "conv2d":
            return 2 * n.type.size * n.inputs[1].type.shape[1] * kh * kw
        ct = n.inputs[0] if op == "conv2d_grad_input" else n.inputs[1]
        cin = n.inputs[1].type.shape[1] if op == "conv2d_grad_input" else n.inputs[0].type.shape[1]
        return 2 * ct.type.size * cin * kh * kw
    if op in POOL:
        return max(n.type.size, n.inputs[-1].type.size) * math.prod(n.attrs["k"])
    return 0


def kernel_bytes(g: Graph, k: Kernel) -> int:
    """Bytes a kernel reads and writes, each buffer once (a view moves nothing)."""
    if k.kind == "view":
        return 0
    return sum(nbytes(g.node(x)) for x in (*k.inputs, *k.outputs))


def make_kernel(g: Graph, kid: int, nodes: list[int], stages: dict[int, str], main: int | None,
                recomputed: list[int], pos: dict[int, int], kind: str | None = None) -> Kernel:
    """The kernel computing `nodes` (any order; `pos`: node id -> schedule position): its kind is
    `kind` ("rows") or the main node's class (elementwise without one), its inputs every value it
    reads from outside, its space the main node's iteration space (a reduction's input; a rows
    kernel's rows) or the last node's shape."""
    nodes = sorted(nodes, key=pos.__getitem__)
    inside = set(nodes)
    inputs = sorted({x.id for i in nodes for x in g.node(i).inputs if x.id not in inside},
                    key=pos.__getitem__)
    if kind == "rows":
        space = next(g.node(i).inputs[0].type.shape for i in nodes if stages[i] == "main")
    elif main is None:
        kind, space = "elementwise", g.node(nodes[-1]).type.shape
    else:
        m = g.node(main)
        kind = op_class(m.op)
        space = m.inputs[0].type.shape if kind == "reduction" else m.type.shape
    k = Kernel(kid, kind, nodes, stages, inputs, [], space, main,
               sorted(recomputed, key=pos.__getitem__))
    k.flops = sum(node_flops(g.node(i)) for i in nodes)
    k.description = describe(g, k)
    return k


def describe(g: Graph, k: Kernel) -> str:
    """One line saying what a kernel fused: main op, prologue/epilogue ops, updates applied."""
    def ops(stage: str) -> list[str]:
        return [g.node(i).op for i in k.nodes if k.stages[i] == stage]

    names = {n.id: f"update {name}" for name, n in g.updates.items()}
    parts = []
    if k.kind == "rows":
        parts.append(f"rows of {k.space[-1]}: {', '.join(g.node(i).op for i in k.nodes)}")
    elif k.main is None:
        parts.append(f"{len(k.nodes)} elementwise ops: {', '.join(ops('body'))}")
    else:
        parts.append(g.node(k.main).op)
        if ops("prologue"):
            parts.append(f"prologue[{', '.join(ops('prologue'))}]")
        if ops("epilogue"):
            parts.append(f"epilogue[{', '.join(ops('epilogue'))}]")
    if k.recomputed:
        parts.append(f"recomputes {len(k.recomputed)}")
    if any(g.node(i).op in RANDOM for i in k.nodes):
        parts.append("rng inline")
    parts += sorted({names[i] for i in k.nodes if i in names})
    return "; ".join(parts)


def assemble(g: Graph, kernels: list[Kernel], leaves: list[int], roots: list[int],
             stage: str) -> KernelGraph:
    """The kernel graph of `kernels` in schedule order: ids renumbered to positions, outputs (a
    value another kernel reads or a root) and bytes moved filled in; a kernel reading a value
    before it is computed, or a root no kernel computes, is an InternalCompilerError of
    `stage`."""
    for i, k in enumerate(kernels):
        k.id = i
    owner = {nid: k.id for k in kernels for nid in k.nodes if nid not in k.recomputed}
    read_by: dict[int, set[int]] = {}
    for k in kernels:
        for x in k.inputs:
            read_by.setdefault(x, set()).add(k.id)
            if x in owner and owner[x] >= k.id:
                raise InternalCompilerError(f"{stage}: kernel {k.id} reads %{x} before it is "
                                            "computed")
    root_set = set(roots)
    for k in kernels:
        k.outputs = [i for i in k.nodes if owner.get(i) == k.id
                     and (i in root_set or read_by.get(i, set()) - {k.id})]
        k.bytes_moved = kernel_bytes(g, k)
    kg = KernelGraph(g, kernels, leaves, roots)
    for r in roots:
        if r not in kg.owner and op_class(g.node(r).op) != "leaf":
            raise InternalCompilerError(f"{stage}: root %{r} is not computed by any kernel")
    return kg
