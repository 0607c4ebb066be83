"""Reference executor of a kernel graph under its memory plan: the oracle for schedule and plan.

Takes: an `ArenaPlan` (with its kernel graph and graph), feeds, params, states, seed and step.
Gives: `execute_plan` -> `Result(outputs, losses, updates)` like `interpret.run`, computed kernel by
kernel in schedule order inside ONE byte array laid out exactly as the plan says. Each kernel
reads only its declared inputs from their planned bytes, evaluates its nodes with the primitives'
NumPy references and stores only its declared outputs. The updates are read back from the param
and state buffers after the commits, so in-place updates are exercised too.

Invariants: if a kernel omits an input, a value is stored in bytes another live value also uses,
or an update lands in the wrong place, the results differ from `interpret.run` (tests compare the
two). Hazards inside one kernel (reading an element after overwriting it in place) are not
visible here; `check_plan` proves those absent.
"""

from __future__ import annotations

import numpy as np

from ..errors import InternalCompilerError
from ..interpret import Result, _leaf_value
from ..ir import np_dtype
from ..ops import PRIMITIVES, EvalContext
from ..ops.leaves import rng_key_value
from .plan_memory import ArenaPlan


def execute_plan(plan: ArenaPlan, feeds: dict[str, np.ndarray], params: dict[str, np.ndarray],
                 states: dict[str, np.ndarray] | None = None, *, seed: int = 0,
                 step: int = 0) -> Result:
    """Run one step through the planned arena (see the module docstring)."""
    g = plan.kernel_graph.graph
    states = states or {}
    mem = np.zeros(plan.total + 64, dtype=np.uint8)
    ctx = EvalContext(seed=seed, step=step, float_dtype=g.float_dtype)

    def at(nid: int) -> np.ndarray:
        n = g.node(nid)
        b = plan.buffer_of(nid)
        dt = np.dtype(np_dtype(n.type.dtype))
        raw = mem[b.offset:b.offset + n.type.size * dt.itemsize]
        return raw.view(dt).reshape(n.type.shape)

    for nid in plan.kernel_graph.leaves:
        n = g.node(nid)
        if nid not in plan.storage:
            continue
        if n.op == "const":
            value = n.attrs["value"]
        elif n.op == "rng_key":
            value = rng_key_value(seed, step)
        else:
            table, what = {"param": (params, "parameter"), "state": (states, "state"),
                           "input": (feeds, "input")}[n.op]
            value = _leaf_value(n, table, what)
        at(nid)[...] = value
    for k in plan.kernel_graph.kernels:
        vals = {x: at(x).copy() for x in k.inputs}
        if k.kind == "view":
            continue  # the output aliases the input's bytes
        for nid in k.nodes:
            n = g.node(nid)
            args = [vals[x.id] for x in n.inputs]
            vals[nid] = np.asarray(PRIMITIVES[n.op].reference(args, n.attrs, ctx))
        for v in k.outputs:
            at(v)[...] = vals[v]
    for src, dst in plan.commits:
        a, b = plan.buffers[src], plan.buffers[dst]
        if a.size != b.size:
            raise InternalCompilerError(f"commit of {a.name} into {b.name}: sizes differ")
        mem[b.offset:b.offset + b.size] = mem[a.offset:a.offset + a.size].copy()
    after = {**g.params, **g.states}
    return Result(outputs={k: at(n.id).copy() for k, n in g.outputs.items()},
                  losses={k: at(n.id).copy() for k, n in g.losses.items()},
                  updates={k: at(after[k].id).copy() for k in g.updates})
