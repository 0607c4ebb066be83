"""Verifier of a memory plan: proves that an `ArenaPlan` cannot corrupt a value.

Takes: an `ArenaPlan`. Gives: nothing, or raises `InternalCompilerError` naming the first problem.
Run by the tests on every plan and by the pipeline with `check=True` (or NETC_CHECK_PLAN=1).

Checked: offsets are 64-byte aligned and each buffer lies inside its region, regions inside the
block; no two buffers overlap in bytes while both are live (a sweep over buffers sorted by offset);
every value a kernel reads or writes is in a buffer live at that step; in a buffer holding a chain
of values (in-place reuse, in-place updates) each value is written only after every read of the
previous one, or at the very step of the last read when that read is element-for-element at the
written index; roots are the last value of their buffer and live to the end of the step; commit
sources live to the end of the step.
"""

from __future__ import annotations

from ..errors import InternalCompilerError
from .plan_memory import ALIGN, REGIONS, ArenaPlan, _same_index_reader


def _fail(msg: str) -> None:
    raise InternalCompilerError(f"invalid memory plan: {msg}")


def _check_layout(plan: ArenaPlan) -> None:
    end = 0
    for region in REGIONS:
        base, size = plan.regions[region]
        if base != end or base % ALIGN:
            _fail(f"region {region} starts at {base}, expected {end} (64-aligned)")
        end = base + size
    for b in plan.buffers:
        base, size = plan.regions[b.region]
        if b.offset % ALIGN:
            _fail(f"buffer {b.name} at offset {b.offset} is not {ALIGN}-byte aligned")
        if not (base <= b.offset and b.offset + b.size <= base + size):
            _fail(f"buffer {b.name} [{b.offset}, {b.offset + b.size}) leaves region {b.region}")


def _check_overlaps(plan: ArenaPlan) -> None:
    bufs = sorted(plan.buffers, key=lambda b: b.offset)
    for i, a in enumerate(bufs):
        for b in bufs[i + 1:]:
            if b.offset >= a.offset + a.size:
                break
            if a.overlaps(b):
                _fail(f"buffers {a.name} [{a.offset}+{a.size}, steps {a.start}..{a.end}] and "
                      f"{b.name} [{b.offset}+{b.size}, steps {b.start}..{b.end}] overlap while "
                      "both are live")


def _holders(plan: ArenaPlan) -> dict[int, int]:
    """node id -> the chain value of its buffer it aliases (itself, or the value a view reads)."""
    held: dict[int, int] = {}
    for nid, bid in plan.storage.items():
        chain = plan.buffers[bid].values
        if nid in chain:
            held[nid] = nid
            continue
        d = plan.defined_at[nid]
        before = [v for v in chain if plan.defined_at[v] <= d]
        if not before:
            _fail(f"%{nid} aliases buffer {plan.buffers[bid].name} before anything is in it")
        held[nid] = max(before, key=plan.defined_at.__getitem__)
    return held


def _check_chains(plan: ArenaPlan, held: dict[int, int]) -> None:
    g, kg = plan.kernel_graph.graph, plan.kernel_graph
    last: dict[int, int] = {}
    for nid, v in held.items():
        last[v] = max(last.get(v, -2), plan.last_read[nid])
    for b in plan.buffers:
        for prev, v in zip(b.values, b.values[1:]):
            step = plan.defined_at[v]
            if last[prev] > step:
                _fail(f"%{v} overwrites %{prev} in buffer {b.name} at step {step}, but "
                      f"%{prev} is still read at step {last[prev]}")
            if last[prev] == step:
                readers = [n for n, h in held.items() if h == prev
                           and plan.last_read[n] == step]
                if readers != [prev] or not _same_index_reader(g, kg, step, prev, v):
                    _fail(f"in-place write of %{v} over %{prev} at step {step} is not "
                          "element-for-element")


def check_plan(plan: ArenaPlan) -> None:
    """Raise InternalCompilerError unless `plan` is safe (see the module docstring)."""
    _check_layout(plan)
    _check_overlaps(plan)
    K = plan.steps
    for i, k in enumerate(plan.kernel_graph.kernels):
        for nid in (*k.inputs, *k.outputs):
            if nid not in plan.storage:
                _fail(f"kernel {i} uses %{nid}, which has no buffer")
            b = plan.buffer_of(nid)
            if not b.start <= i <= b.end:
                _fail(f"kernel {i} uses %{nid} in buffer {b.name}, live only at steps "
                      f"{b.start}..{b.end}")
    held = _holders(plan)
    _check_chains(plan, held)
    for r in plan.kernel_graph.roots:
        b = plan.buffer_of(r)
        if b.end < K or held[r] != b.values[-1]:
            _fail(f"root %{r} in buffer {b.name} does not survive to the end of the step")
    for src, _dst in plan.commits:
        if plan.buffers[src].end < K:
            _fail(f"commit source {plan.buffers[src].name} dies before the end of the step")
