"""Backends behind the Model API: the tensor store and the engine interface, with the NumPy
interpreter engine.

Takes: a graph (eval-mode forward, or a train-mode step graph extended by `build_step`), the
model's `Store` and the seed. Gives: `Engine.run(kind, feeds) -> dict` for the kinds the graph
serves: "predict" (outputs), "evaluate" (outputs and reported losses), "train_step" (reported
losses; applies every update to the store) and "gradients" (gradients by parameter name).

Invariants: the store owns exactly one array per tensor and never replaces it (updates are written
in place, so user views stay live); `train_steps(data, index)` runs many steps over batches
gathered by index (the reported losses averaged); an engine computes every value of a step before
writing any, so a step reads consistent old values; the RNG step is the store's "opt.step" counter.
The JIT engine implements the same interface over an arena that backs the store's arrays.
"""

from __future__ import annotations

import threading
from typing import Protocol

import numpy as np

from netc.compiler.errors import DataError, InternalCompilerError
from netc.compiler.initializers import initialize
from netc.compiler.interpret import interpret
from netc.compiler.ir import Graph, Node, np_dtype
from netc.compiler.train import STEP_COUNTER, StepInfo

from .feeds import check_values_of


class Store:
    """Every tensor the model keeps, by name: parameters, model state, optimizer state."""

    def __init__(self, seed: int):
        self.seed = seed
        self.arrays: dict[str, np.ndarray] = {}
        self.kind: dict[str, str] = {}  # name -> "param" | "state" | "opt"
        self.loaded: set[str] = set()  # read from a file before any graph wanted them
        # held by every engine call: engines of one model share these arrays (and a JIT
        # engine its arena of fed inputs), so two Python threads calling one model at once
        # got each other's outputs; calls into one model now take turns
        self.lock = threading.RLock()

    def ensure(self, g: Graph, opt_names: tuple[str, ...] = ()) -> None:
        """Allocate and initialise every param/state leaf of `g` not held yet."""
        leaves = [(n, p, "param") for n, p in g.params.items()]
        leaves += [(n, s, "opt" if n in opt_names else "state") for n, s in g.states.items()]
        for name, node, kind in leaves:
            if name in self.arrays:
                held = self.arrays[name]
                if held.shape != node.type.shape or held.dtype != np_dtype(node.type.dtype):
                    if name in self.loaded:  # a saved model's tensor: the file's fault
                        raise DataError(f"saved tensor '{name}' is {held.dtype}"
                                        f"{list(held.shape)}, the model has {node.type}")
                    raise InternalCompilerError(f"{name} is {held.dtype}{list(held.shape)} in the "
                                                f"model but {node.type} in graph {g.name}")
                continue
            self.arrays[name] = initialize(node.attrs["init"], node.type.shape,
                                           np_dtype(node.type.dtype), self.seed, name)
            self.kind[name] = kind

    def names(self, kind: str) -> list[str]:
        return [n for n, k in self.kind.items() if k == kind]

    @property
    def step(self) -> int:
        counter = self.arrays.get(STEP_COUNTER)
        return int(counter) if counter is not None else 0


class Engine(Protocol):
    """What a backend provides for one compiled graph. `run(..., check_values=True)`: the feeds
    passed `feeds.check_feeds(values=False)`; their values (finite floats, indices in range)
    are checked before anything runs, a DataError if one is bad (the JIT checks them as it
    copies them in)."""

    def run(self, kind: str, feeds: dict[str, np.ndarray],
            check_values: bool = False) -> dict[str, np.ndarray]: ...


class InterpretEngine:
    """Runs a graph with the NumPy interpreter (the reference backend)."""

    def __init__(self, g: Graph, store: Store, *, info: StepInfo | None = None,
                 report: dict[str, Node] | None = None, threads: int | None = None):
        self.g = g
        self.store = store
        self.info = info
        self.report = report if report is not None else (info.losses if info else dict(g.losses))
        store.ensure(g, info.opt_states if info else ())

    def _values(self, feeds: dict[str, np.ndarray], wanted: list[Node]) -> dict[int, np.ndarray]:
        a = self.store.arrays
        params = {n: a[n] for n in self.g.params}
        states = {n: a[n] for n in self.g.states}
        return interpret(self.g, feeds, params, states, seed=self.store.seed,
                         step=self.store.step, wanted=wanted)

    def run(self, kind: str, feeds: dict[str, np.ndarray],
            check_values: bool = False) -> dict[str, np.ndarray]:
        if check_values:
            check_values_of(self.g, feeds)
        with self.store.lock:
            return self._run(kind, feeds)

    def _run(self, kind: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        g = self.g
        if kind == "predict":
            vals = self._values(feeds, list(g.outputs.values()))
            return {k: vals[n.id] for k, n in g.outputs.items()}
        if kind == "evaluate":
            vals = self._values(feeds, [*g.outputs.values(), *self.report.values()])
            out = {k: vals[n.id] for k, n in g.outputs.items()}
            out.update({k: vals[n.id] for k, n in self.report.items()})
            return out
        if self.info is None:
            raise InternalCompilerError(f"{kind} needs a step graph")
        if kind == "gradients":
            grads = self.info.grads
            vals = self._values(feeds, list(grads.values()))
            return {k: vals[n.id] for k, n in grads.items()}
        if kind == "train_step":
            vals = self._values(feeds, [*self.report.values(), *g.updates.values()])
            for name, node in g.updates.items():  # all computed first: write in place now
                self.store.arrays[name][...] = vals[node.id]
            return {k: vals[n.id] for k, n in self.report.items()}
        raise InternalCompilerError(f"unknown engine request {kind!r}")

    def train_steps(self, data: dict[str, np.ndarray], index: np.ndarray) -> dict[str, float]:
        """Steps over batches `index[s*B:(s+1)*B]` of the full arrays `data`, one by one (the
        JIT does the same in one native call); the mean of each reported loss."""
        return step_by_step(self, data, index)


def step_by_step(engine, data: dict[str, np.ndarray], index: np.ndarray) -> dict[str, float]:
    """`train_steps` as a loop of `run("train_step")` calls (the reference semantics)."""
    fed = [n for n in engine.g.inputs.values() if n.attrs["name"] in data]
    batch = fed[0].type.shape[0] if fed and fed[0].type.rank else 1
    n_steps = len(index) // batch
    sums: dict[str, float] = {k: 0.0 for k in engine.report}
    for s in range(n_steps):
        rows = index[s * batch:(s + 1) * batch]
        out = engine.run("train_step", {k: v[rows] for k, v in data.items()})
        for k, v in out.items():
            sums[k] += float(v)
    return {k: v / max(n_steps, 1) for k, v in sums.items()}


BACKENDS = {"interpret": InterpretEngine}
