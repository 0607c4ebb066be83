"""The optimizer pipeline: graph passes, then fusion, then the memory plan, as one readable list.

Takes: a verified graph (forward, forward + gradients, or a step graph) whose live roots are its
outputs, losses and updates, and optionally a backend's `fit` (see passes/legalize.py): then the
kernel graph is legalized for that backend between fusion and planning, so the plan has a buffer
for every value the backend stores. Gives: `Optimized(graph, kernels, plan)`. The graph passes
rewrite the graph IN PLACE (pass a copy if the original is still needed); fusion, legalization
and planning are analyses.

Debugging: `verify` runs after every graph stage. `NETC_DUMP_IR=dir` writes the text of each stage
(`00-input.txt`, `01-simplify.txt`, ... `04-fuse_kernels.txt`, `04-legalize.txt` with a backend,
`05-plan_memory.txt`). Every stage can be switched off for
bisecting, by name or alias, with `optimize(g, disable={...})` or `NETC_DISABLE=simplify,cse`:
simplify, eliminate_common (cse), eliminate_dead (dce), fuse_kernels (fuse: one kernel per node),
fuse_rows (rows: no rows kernels, softmax and cross-entropy as separate kernels), inplace
(no in-place buffer reuse), reuse (no arena reuse at all: the naive plan). With
`check=True` or NETC_CHECK_PLAN=1 the plan is proven safe by `check_plan`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import InternalCompilerError
from .ir import Graph
from .passes.check_plan import check_plan
from .passes.eliminate_common import eliminate_common
from .passes.eliminate_dead import eliminate_dead
from .passes.fuse_kernels import fuse_kernels
from .passes.kernel_graph import KernelGraph
from .passes.legalize import Fit, legalize
from .passes.plan_memory import ArenaPlan, plan_memory
from .passes.simplify import simplify
from .verify import verify

GRAPH_STAGES: list[tuple[str, Callable[[Graph], Graph]]] = [
    ("simplify", simplify),
    ("eliminate_common", eliminate_common),
    ("eliminate_dead", eliminate_dead),
]
SWITCHES = ("simplify", "eliminate_common", "eliminate_dead", "fuse_kernels", "fuse_rows",
            "inplace", "reuse")
ALIASES = {"cse": "eliminate_common", "dce": "eliminate_dead", "fuse": "fuse_kernels",
           "fusion": "fuse_kernels", "rows": "fuse_rows"}


@dataclass
class Optimized:
    graph: Graph
    kernels: KernelGraph
    plan: ArenaPlan


def disabled_stages(disable: set[str] | None = None) -> set[str]:
    """Canonical names of the switched-off stages: `disable` plus NETC_DISABLE."""
    names = set(disable or ())
    names |= {s.strip() for s in os.environ.get("NETC_DISABLE", "").split(",") if s.strip()}
    out = set()
    for name in names:
        canon = ALIASES.get(name, name)
        if canon not in SWITCHES:
            raise ValueError(f"unknown optimizer stage {name!r}; choose from "
                             f"{', '.join(SWITCHES)} (aliases {', '.join(ALIASES)})")
        out.add(canon)
    return out


def _dump(dump_dir: Path | None, index: int, name: str, text: str) -> None:
    if dump_dir is not None:
        dump_dir.mkdir(parents=True, exist_ok=True)
        (dump_dir / f"{index:02d}-{name}.txt").write_text(text + "\n")


def optimize(g: Graph, *, disable: set[str] | None = None, check: bool | None = None,
             dump_dir: str | os.PathLike | None = None, fit: Fit | None = None) -> Optimized:
    """Run every enabled stage on `g` (in place) and return graph, kernel graph and plan;
    with a backend's `fit`, the kernels are legalized for it before planning."""
    off = disabled_stages(disable)
    dump = dump_dir if dump_dir is not None else os.environ.get("NETC_DUMP_IR") or None
    dump_path = Path(dump) if dump else None
    if check is None:
        check = os.environ.get("NETC_CHECK_PLAN", "") not in ("", "0")
    verify(g)
    _dump(dump_path, 0, "input", g.to_text())
    for i, (name, stage) in enumerate(GRAPH_STAGES, start=1):
        if name not in off:
            out = stage(g)
            if out is not g:
                raise InternalCompilerError(f"stage {name} must return the graph it was given")
            verify(g)
        _dump(dump_path, i, name, g.to_text() + ("\n(stage disabled)" if name in off else ""))
    kernels = fuse_kernels(g, fuse="fuse_kernels" not in off, rows="fuse_rows" not in off)
    _dump(dump_path, 4, "fuse_kernels", kernels.to_text())
    if fit is not None:
        kernels = legalize(kernels, fit)
        _dump(dump_path, 4, "legalize", kernels.to_text())
    plan = plan_memory(kernels, inplace="inplace" not in off, reuse="reuse" not in off)
    if check:
        check_plan(plan)
    from .passes.report import plan_text  # report imports the pipeline
    _dump(dump_path, 5, "plan_memory", plan_text(plan))
    return Optimized(g, kernels, plan)
