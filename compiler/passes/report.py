"""`netc plan FILE`: a person-readable report of the kernels and the memory plan.

Takes: a `Built` (from build_ir) or a `Graph` (forward, with gradients, or a step graph).
Gives: `plan_report` -> text: every kernel (what it fused, iteration space, FLOPs, bytes moved),
the regions of the one block, the arena's planned peak against the naive sum (bytes and MiB),
and a lifetime chart of the biggest arena buffers (one row per buffer, one column per schedule
step or group of steps, like a Gantt chart); `plan_text` -> the buffer table of a plan (the
pipeline's `05-plan_memory.txt`); `plan_png` -> the same chart as a PNG when matplotlib is
installed (returns False and writes nothing when it is not).

`fit` is a backend's legalization (`optimize(fit=...)`): `netc plan` passes the JIT's, so the
report shows the kernels and the plan the native code runs.

Invariants: the caller's graph is never modified (the report optimizes a deep copy); the plan
shown has passed `check_plan`.
"""

from __future__ import annotations

import copy
import math
import os

from ..ir import Graph
from .kernel_graph import human
from .plan_memory import ArenaPlan

CHART_COLUMNS = 64
MIB = 1 << 20


def _optimized(built_or_graph, disable: set[str] | None = None, fit=None):
    from ..pipeline import optimize  # the pipeline imports this module lazily too

    g = built_or_graph if isinstance(built_or_graph, Graph) else built_or_graph.graph
    return optimize(copy.deepcopy(g), disable=disable, check=True, fit=fit)


def _mib(n: int) -> str:
    return f"{n} B ({n / MIB:.2f} MiB)"


def plan_text(plan: ArenaPlan) -> str:
    """Regions, summary and every buffer (offset, size, steps, values) of a plan."""
    g = plan.kernel_graph.graph
    lines = [f"memory plan {g.name}: {plan.steps} steps, block {_mib(plan.total)}"]
    for region, (base, size) in plan.regions.items():
        lines.append(f"  region {region:<6} at {base:>10}  size {_mib(size)}")
    ratio = plan.arena_peak / plan.naive_arena if plan.naive_arena else 1.0
    lines.append(f"  arena planned peak {_mib(plan.arena_peak)} vs naive sum "
                 f"{_mib(plan.naive_arena)} ({ratio:.1%}); unfused naive "
                 f"{_mib(plan.naive_unfused)}")
    lines.append(f"  in-place reuses {len(plan.inplace)}, end-of-step commits "
                 f"{len(plan.commits)}")
    for b in plan.buffers:
        vals = " ".join(f"%{v}" for v in b.values)
        lines.append(f"  buf{b.id:<4} {b.region:<6} off={b.offset:<10} size={b.size:<10} "
                     f"steps={b.start}..{b.end}  {vals}  {b.name}")
    for src, dst in plan.commits:
        lines.append(f"  commit buf{src} -> buf{dst} ({plan.buffers[dst].name})")
    return "\n".join(lines)


def lifetime_chart(plan: ArenaPlan, top: int = 16, columns: int = CHART_COLUMNS) -> str:
    """A text Gantt chart of the `top` biggest arena buffers over the schedule."""
    K = max(plan.steps, 1)
    width = min(columns, K)
    per = math.ceil(K / width)
    width = math.ceil(K / per)
    bufs = sorted((b for b in plan.buffers if b.region == "arena"),
                  key=lambda b: (-b.size, b.start))[:top]
    head = f"{'buffer':<30}{'size':>10} |"
    lines = [f"lifetime of the {len(bufs)} biggest arena buffers "
             f"(one column = {per} step{'s' if per > 1 else ''}; '#' live)",
             head + "".join(str((c * per) // 10 % 10) if c % 5 == 0 else " "
                            for c in range(width)) + "|"]
    for b in bufs:
        row = "".join("#" if b.start <= (c + 1) * per - 1 and c * per <= b.end else "."
                      for c in range(width))
        lines.append(f"{b.name[:29]:<30}{human(b.size) + 'B':>10} |{row}|")
    return "\n".join(lines)


def plan_report(built_or_graph, *, disable: set[str] | None = None, top: int = 16,
                fit=None) -> str:
    """The `netc plan` text: kernels, arena figures and the lifetime chart."""
    opt = _optimized(built_or_graph, disable, fit)
    kg, plan = opt.kernels, opt.plan
    kinds: dict[str, int] = {}
    for k in kg.kernels:
        kinds[k.kind] = kinds.get(k.kind, 0) + 1
    lines = [f"plan for {opt.graph.name} ({opt.graph.float_dtype}, {opt.graph.mode}): "
             f"{len(opt.graph)} nodes -> {len(kg.kernels)} kernels "
             f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})",
             f"total {human(kg.total_flops)} FLOPs, {human(kg.total_bytes)}B moved", "",
             f"{'#':>4} {'kind':<11} {'space':<18} {'FLOPs':>8} {'bytes':>8}  fused"]
    for i, k in enumerate(kg.kernels):
        space = "x".join(str(d) for d in k.space) or "scalar"
        lines.append(f"{i:>4} {k.kind:<11} {space:<18} {human(k.flops):>8} "
                     f"{human(k.bytes_moved):>8}  {k.description}")
    lines.append("")
    for region, (base, size) in plan.regions.items():
        lines.append(f"region {region:<6} offset {base:>10}  {_mib(size)}")
    saved = 1 - plan.arena_peak / plan.naive_arena if plan.naive_arena else 0.0
    lines += [f"arena: planned peak {_mib(plan.arena_peak)}, naive sum {_mib(plan.naive_arena)}"
              f" ({saved:.0%} saved); {len(plan.inplace)} in-place reuses, "
              f"{len(plan.commits)} end-of-step commits",
              f"unfused naive sum (every node its own buffer): {_mib(plan.naive_unfused)}",
              "", lifetime_chart(plan, top)]
    return "\n".join(lines)


def plan_png(built_or_graph_or_plan, path: str | os.PathLike, *, fit=None) -> bool:
    """Draw the arena (x: schedule step, y: offset) to `path`; False if matplotlib is absent."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    plan = (built_or_graph_or_plan if isinstance(built_or_graph_or_plan, ArenaPlan)
            else _optimized(built_or_graph_or_plan, fit=fit).plan)
    base = plan.regions["arena"][0]
    fig, ax = plt.subplots(figsize=(10, 5))
    for b in plan.buffers:
        if b.region == "arena":
            ax.add_patch(plt.Rectangle((b.start, (b.offset - base) / MIB), b.end - b.start + 1,
                                       b.size / MIB, alpha=0.6, edgecolor="black"))
    ax.set_xlim(0, plan.steps + 1)
    ax.set_ylim(0, max(plan.arena_peak / MIB, 1e-6))
    ax.set_xlabel("schedule step (kernel)")
    ax.set_ylabel("arena offset (MiB)")
    ax.set_title(f"{plan.kernel_graph.graph.name}: arena peak {plan.arena_peak / MIB:.2f} MiB")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
