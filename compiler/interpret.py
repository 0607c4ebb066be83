"""The NumPy interpreter: evaluates a graph with the primitives' references. It is the oracle every
other backend and pass is checked against.

Takes: a graph, feeds (inputs and targets by name), parameter and state values by name, the seed and
step, and optionally the nodes wanted (default: every output, loss and update).
Gives: `interpret` -> values by node id (only the wanted nodes and what they need are computed);
`run` -> `Result(outputs, losses, updates)` by name.

Invariants: a missing or mis-shaped feed/param/state is a `DataError` naming it; float values are
converted to the declared dtype (f32 or f64), integers must be integers; every reference result
must have exactly its node's type, or it is an InternalCompilerError (a bug in a reference).
Arithmetic is IEEE, as in the generated code: `x / 0`, `log(0)`, an overflowing `exp` give inf or
NaN without NumPy's RuntimeWarnings (silenced around each primitive only, not for the caller).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import DataError, InternalCompilerError, NetError
from .ir import Graph, Node, np_dtype
from .ops import PRIMITIVES, EvalContext


@dataclass
class Result:
    outputs: dict[str, np.ndarray]
    losses: dict[str, np.ndarray]
    updates: dict[str, np.ndarray]


def _leaf_value(node: Node, table: dict[str, np.ndarray], what: str) -> np.ndarray:
    name = node.attrs["name"]
    if name not in table:
        raise DataError(f"missing {what} '{name}' ({node.type})", node.loc)
    v = np.asarray(table[name])
    t = node.type
    if v.shape != t.shape:
        raise DataError(f"{what} '{name}' should have shape {list(t.shape)} ({t}), "
                        f"got {list(v.shape)}", node.loc)
    if t.is_float and v.dtype.kind not in "fiub":
        raise DataError(f"{what} '{name}' should be numeric ({t}), got {v.dtype}", node.loc)
    if t.dtype == "i32" and v.dtype.kind not in "iub":
        raise DataError(f"{what} '{name}' should hold integers ({t}), got {v.dtype}", node.loc)
    if t.dtype == "bool" and v.dtype.kind != "b":
        raise DataError(f"{what} '{name}' should hold booleans ({t}), got {v.dtype}", node.loc)
    return v.astype(np_dtype(t.dtype), copy=False)


def interpret(g: Graph, feeds: dict[str, np.ndarray], params: dict[str, np.ndarray],
              states: dict[str, np.ndarray], *, seed: int = 0, step: int = 0,
              wanted: list[Node] | None = None) -> dict[int, np.ndarray]:
    """Evaluate the nodes `wanted` (default: outputs, losses, updates) and what they depend on."""
    if wanted is None:
        wanted = [*g.outputs.values(), *g.losses.values(), *g.updates.values()]
    needed = g.ancestors(list(wanted))
    ctx = EvalContext(seed=seed, step=step, float_dtype=g.float_dtype)
    values: dict[int, np.ndarray] = {}
    for node in g.nodes_in_order():
        if node.id not in needed:
            continue
        if node.op == "input":
            what = "target" if node.attrs["role"] == "target" else "input"
            out = _leaf_value(node, feeds, what)
        elif node.op == "param":
            out = _leaf_value(node, params, "parameter")
        elif node.op == "state":
            out = _leaf_value(node, states, "state")
        else:
            args = [values[x.id] for x in node.inputs]
            try:
                with np.errstate(all="ignore"):  # IEEE results (inf, NaN), as the JIT: no warnings
                    out = np.asarray(PRIMITIVES[node.op].reference(args, node.attrs, ctx))
            except NetError as e:  # bad data met at run time (an index out of range)
                if e.loc is None:
                    e.diagnostics[0].loc = node.loc
                raise
            if out.shape != node.type.shape or out.dtype != np_dtype(node.type.dtype):
                raise InternalCompilerError(
                    f"reference of {node.op} gave {out.dtype}{list(out.shape)} for {node.type}",
                    node.loc)
        values[node.id] = out
    return values


def run(g: Graph, feeds: dict[str, np.ndarray], params: dict[str, np.ndarray],
        states: dict[str, np.ndarray] | None = None, *, seed: int = 0, step: int = 0) -> Result:
    """Evaluate every output, loss and update of `g`; results by name."""
    values = interpret(g, feeds, params, states or {}, seed=seed, step=step)
    return Result(outputs={k: values[n.id] for k, n in g.outputs.items()},
                  losses={k: values[n.id] for k, n in g.losses.items()},
                  updates={k: values[n.id] for k, n in g.updates.items()})
