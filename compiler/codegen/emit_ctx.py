"""Codegen stage, kernel emission context: what a kernel emitter is given and what it returns.

Takes: the module being built, the target, the step plan. Gives: `Ctx` (node lookup, the LLVM
element type of a node, unique kernel names, the per-thread scratch the kernels need) and `Call`:
one call of an emitted kernel function from the step function, with its arguments (node ids for
tensors, or "scratch", "barrier", "null"), the values it reads and writes (for barrier placement)
and its mode ("split": every thread calls it with (tid, nt); "single": thread 0 calls it with
(0, 1), for work too small to share).

Invariants: emitters never allocate; a kernel writes only the nodes in `writes`, reads only
`reads`; functions in a module have unique names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from llvmlite import ir

from ..errors import InternalCompilerError
from ..ir import Node
from .lower_elementwise import mem_type
from .target import Target

if TYPE_CHECKING:  # step_input imports the emitters' fusion rules, which import this module
    from .step_input import StepPlan

SPLIT_MIN = 1 << 15  # elements (or flops / 16) below which a kernel runs on one thread


@dataclass
class Call:
    fn: ir.Function
    args: list[int | str]
    reads: set[int]
    writes: set[int]
    mode: str = "split"
    shares_scratch: bool = False  # reads other threads' scratch (conv weight-gradient partials)
    scratch_stride: int = 0  # bytes per thread the kernel itself steps its scratch pointer by


@dataclass
class Ctx:
    module: ir.Module
    target: Target
    plan: StepPlan
    prefix: str = ""
    scratch_private: int = 0  # bytes per thread, kernels using only their own thread's part
    scratch_shared: int = 0  # bytes per thread, kernels reading other threads' parts
    counter: int = 0
    notes: list[str] = field(default_factory=list)

    def node(self, i: int) -> Node:
        return self.plan.graph.node(i)

    def ptr_type(self, i: int) -> ir.Type:
        return mem_type(self.node(i).type.dtype)

    def name(self, stem: str) -> str:
        self.counter += 1
        return f"{self.prefix}k{self.counter}_{stem}"

    def buffer_args(self, ids: list[int]) -> tuple[list[int], dict[int, int]]:
        """A kernel's pointer arguments for values `ids` (stored ones first): one per distinct
        buffer of the plan, so arguments can be `noalias` (a value written in place over
        another shares its argument). Returns (one node id per argument, id -> argument
        index)."""
        arg_nodes: list[int] = []
        slot: dict[int, int] = {}
        at: dict[int, int] = {}
        for i in ids:
            buf = self.plan.buffer_of(i)
            if buf not in slot:
                slot[buf] = len(arg_nodes)
                arg_nodes.append(i)
            at[i] = slot[buf]
        return arg_nodes, at

    def need_scratch(self, per_thread: int, shared: bool = False) -> None:
        size = -(-per_thread // 64) * 64
        if shared:
            self.scratch_shared = max(self.scratch_shared, size)
        else:
            self.scratch_private = max(self.scratch_private, size)

    @property
    def scratch_per_thread(self) -> int:
        return self.scratch_private + self.scratch_shared

    def fail(self, what: str, n: Node) -> InternalCompilerError:
        return InternalCompilerError(f"jit: {what} ({n.op} {n.type})", n.loc)


def size_of(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def mode_for(work: int) -> str:
    return "split" if work >= SPLIT_MIN else "single"
