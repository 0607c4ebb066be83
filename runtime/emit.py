"""Runtime, code inspection: the LLVM IR or assembly of a model's whole-step module.

Takes: a `.net` path (or build results of build_ir: `graph`, `train`), the request ("train" for
the training step with its native multi-step loop when the model trains, else "predict").
Gives: `emit_text(path_or_built, what="llvm"|"asm"|"opt")` -> text, for `netc emit FILE --llvm |
--asm` (and "opt": the IR after the O3 pipeline); `emit_object(...)` -> object file bytes.

Invariants: the module is exactly the one the JIT backend compiles for that request (same plan,
same target); nothing is executed.
"""

from __future__ import annotations

import os
from typing import Any

from netc.compiler.codegen.step import StepModule, build_step_module
from netc.compiler.codegen.step_input import plan_step
from netc.compiler.codegen.target import get_target
from netc.compiler.errors import UsageError
from netc.compiler.train import add_penalties, build_step

from .jit import _parse, asm_of, optimize, optimized_ir, target_machine


def step_module(path_or_built: Any, request: str | None = None) -> StepModule:
    """The whole-step module the JIT builds for `request` ("train" or "predict")."""
    if isinstance(path_or_built, (str, os.PathLike)):
        from netc.compiler.build_ir import build
        built = build(os.fspath(path_or_built), mode="train" if request != "predict" else "eval")
    else:
        built = path_or_built
    g = built.graph
    if request is None:
        request = "train" if g.mode == "train" and g.losses and built.train else "predict"
    if request == "train":
        if g.mode != "train":
            raise UsageError("emit: the training step needs a train-mode build")
        info = build_step(g, built.train, steps_per_epoch=1)
        wanted, updates = dict(info.losses), dict(g.updates)
        loop = True
    elif request == "predict":
        wanted, updates, loop = dict(g.outputs), {}, False
        if built.train is not None:
            wanted.update({k: add_penalties(g, n, built.train) for k, n in g.losses.items()})
    else:
        raise UsageError(f"emit: unknown request {request!r} (train or predict)")
    plan = plan_step(g, wanted, updates)
    losses = list(plan.wanted.values()) if loop else []
    return build_step_module(plan, get_target(), loop=loop, losses=losses, name=g.name)


def emit_text(path_or_built: Any, what: str = "llvm", request: str | None = None) -> str:
    """LLVM IR ("llvm"), optimised IR ("opt") or assembly ("asm") of the whole-step module."""
    if what not in ("llvm", "asm", "opt"):
        raise UsageError(f"emit: what must be llvm, opt or asm, got {what!r}")
    module = step_module(path_or_built, request).module
    if what == "llvm":
        return str(module)
    return asm_of(module) if what == "asm" else optimized_ir(module)


def emit_object(path_or_built: Any, request: str | None = None) -> bytes:
    """The native object file (ELF on Linux) of the whole-step module."""
    target = get_target()
    tm = target_machine(target)
    mod = _parse(step_module(path_or_built, request).module, target)
    mod.data_layout = str(tm.target_data)
    optimize(mod, tm)
    return tm.emit_object(mod)
