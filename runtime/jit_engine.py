"""Runtime, the JIT backend: `JitEngine` runs a graph as native whole-step functions.

Takes: a graph (eval-mode forward, or a step graph with `StepInfo`), the model's `Store`, the
reported losses and a thread count. Gives: `JitEngine.run(kind, feeds)` for "predict",
"evaluate", "gradients", "train_step" (the Engine protocol of engine.py) and
`train_steps(data, index)`: many steps in one native call, batches gathered natively.

Each request kind gets its own plan (codegen.step_input: the request's graph through the
optimizer pipeline -- fusion legalized for the emitters, liveness-based arena plan), module
(codegen.step) and 64-byte aligned arena, compiled through the on-disk cache (jit_cache; the key
holds the graph and each request's plan: kernels and addresses, so NETC_DISABLE or an edited pass
never loads code made for another plan). Parameters, model state and
optimizer state stay in the Store's own arrays: the arena's pointer table holds their addresses,
so `m.params[...]` views are the tensors the native code reads and updates in place (always live,
bitwise what the step wrote). Threads: the step function runs on the process pool with
`threads` SPMD threads.

Invariants: the Store never replaces an array (engine.py), so the pointer table stays valid;
feeds are validated by the Model before they reach `run` (their values, with
`check_values=True`, by `run` as the native feed function copies them in); float64 graphs are
served by the interpreter (the native kernels are float32).
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from llvmlite import ir

from netc.compiler.codegen.step import KEY_OFFSET, LOSS_OFFSET, StepModule, build_step_module
from netc.compiler.codegen.step_input import StepPlan, plan_step
from netc.compiler.codegen.target import get_target
from netc.compiler.errors import InternalCompilerError
from netc.compiler.ir import Graph, Node, np_dtype
from netc.compiler.train import StepInfo

from .engine import BACKENDS, InterpretEngine, Store
from .feeds import check_summaries
from .jit_cache import compile_cached
from .threads import check_threads, get_pool

_ALIGN = 64
_STEP = ctypes.CFUNCTYPE(None, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p)
_LOOP = ctypes.CFUNCTYPE(None, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p,
                         ctypes.c_void_p, ctypes.c_int64)
_FEED = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)


def aligned_bytes(n: int) -> np.ndarray:
    raw = np.zeros(n + _ALIGN, dtype=np.uint8)
    off = (-raw.ctypes.data) % _ALIGN
    return raw[off:off + n]


def default_threads() -> int:
    env = os.environ.get("NETC_THREADS")
    return check_threads(env, "NETC_THREADS") if env else 1


@dataclass
class _Compiled:
    sm: StepModule
    arena: np.ndarray
    step: Any
    loop: Any
    feed: Any
    keep: Any
    plan: StepPlan
    # bound once, so a call costs no view arithmetic: the arena slot of each fed input, the
    # tensor holding each wanted value (an arena view, or the Store array of a persistent one),
    # the header's RNG step word and the arena's address
    fed: list[tuple[str, np.ndarray]] = field(default_factory=list)
    wanted: list[tuple[str, np.ndarray]] = field(default_factory=list)
    step_word: np.ndarray | None = None
    address: int = 0
    # the feed function's arguments: each fed input's address, and what it reports of each
    # (with the two arrays' own addresses)
    sources: np.ndarray | None = None
    summaries: np.ndarray | None = None
    feed_args: tuple[int, int, int] = (0, 0, 0)


class JitEngine:
    """Native backend over the Store (see the module docstring)."""

    def __init__(self, g: Graph, store: Store, *, info: StepInfo | None = None,
                 report: dict[str, Node] | None = None, threads: int | None = None):
        self.g, self.store, self.info = g, store, info
        self.report = report if report is not None else (info.losses if info else dict(g.losses))
        self.threads = threads or default_threads()
        store.ensure(g, info.opt_states if info else ())
        self._fallback = InterpretEngine(g, store, info=info, report=report) \
            if g.float_dtype == "f64" else None
        self.target = get_target()
        self._kinds: dict[str, _Compiled] = {}
        self.compiled_from_cache: bool | None = None

    # ------------------------------------------------------------------ compile

    def _request(self, kind: str) -> tuple[dict[str, Node], dict[str, Node]]:
        g = self.g
        if kind == "predict":
            return dict(g.outputs), {}
        if kind == "evaluate":
            return {**g.outputs, **self.report}, {}
        if self.info is None:
            raise InternalCompilerError(f"{kind} needs a step graph")
        if kind == "gradients":
            return dict(self.info.grads), {}
        if kind == "train_step":
            return dict(self.report), dict(g.updates)
        raise InternalCompilerError(f"unknown engine request {kind!r}")

    def compiled(self, kind: str) -> _Compiled:
        """The native code for `kind`: every kind this graph serves is built into one module
        (one compile, GEMM/conv kernels shared), each with its own plan and arena."""
        hit = self._kinds.get(kind)
        if hit is not None:
            return hit
        self._request(kind)  # an unknown or unservable kind fails here
        kinds = ["train_step", "gradients"] if self.info is not None else ["predict", "evaluate"]
        requests = {k: self._request(k) for k in kinds}
        plans = {k: plan_step(self.g, w, u) for k, (w, u) in requests.items()}
        losses = {k: list(plans[k].wanted.values()) if k == "train_step" else []
                  for k in kinds}

        def build_all() -> dict[str, StepModule]:
            module = ir.Module(name=self.g.name)
            return {k: build_step_module(plans[k], self.target, loop=k == "train_step",
                                         losses=losses[k], module=module, prefix=f"{k}_")
                    for k in kinds}

        def build() -> tuple[ir.Module, dict]:
            sms = build_all()
            meta = {k: [sm.scratch_per_thread, sm.split_calls, sm.counters]
                    for k, sm in sms.items()}
            return next(iter(sms.values())).module, meta

        key = "\n".join([self.g.to_text(), *kinds, *(plans[k].key_text() for k in kinds)])
        comp, meta, hit = compile_cached(key, build, self.target)
        self.compiled_from_cache = hit
        sms = {k: StepModule.layout(plans[k], int(meta[k][0]), losses[k], int(meta[k][1]),
                                   int(meta[k][2]))
               for k in kinds}
        for k in kinds:
            sm = sms[k]
            arena = aligned_bytes(sm.arena_bytes(self.threads))
            self._init_arena(sm, arena)
            step = _STEP(comp.address(f"{k}_netc_step"))
            loop_fn = _LOOP(comp.address(f"{k}_netc_train_steps")) if k == "train_step" else None
            feed = _FEED(comp.address(f"{k}_netc_feed"))
            self._kinds[k] = self._bind(_Compiled(sm, arena, step, loop_fn, feed, comp, plans[k]))
        return self._kinds[kind]

    def _bind(self, c: _Compiled) -> _Compiled:
        plan, g = c.plan, c.plan.graph
        c.fed = [(name, self._view(c.arena, g.node(i), plan.offset[i]))
                 for name, i in plan.fed.items()]
        c.wanted = [(name, self._holder(c, g.node(i))) for name, i in plan.wanted.items()]
        c.step_word = c.arena[KEY_OFFSET + 8:KEY_OFFSET + 12].view(np.uint32)
        c.address = c.arena.ctypes.data
        c.sources = np.zeros(max(len(c.fed), 1), np.uint64)
        c.summaries = np.zeros(max(len(c.fed), 1), np.int64)
        c.feed_args = (c.address, c.sources.ctypes.data, c.summaries.ctypes.data)
        return c

    def _init_arena(self, sm: StepModule, arena: np.ndarray) -> None:
        plan = sm.plan
        for i, value in plan.consts.items():
            self._view(arena, plan.graph.node(i), plan.offset[i])[...] = value
        seed = self.store.seed
        arena[KEY_OFFSET:KEY_OFFSET + 8].view(np.uint32)[:] = (seed & 0xFFFFFFFF,
                                                               (seed >> 32) & 0xFFFFFFFF)
        table = arena[sm.table_offset:sm.table_offset + 8 * len(plan.names)].view(np.uint64)
        for j, name in enumerate(plan.names):
            a = self.store.arrays[name]
            if not a.flags.c_contiguous or not a.flags.writeable:
                raise InternalCompilerError(f"store array {name} is not contiguous and writable")
            table[j] = a.ctypes.data

    @staticmethod
    def _view(arena: np.ndarray, n: Node, off: int) -> np.ndarray:
        dt = np.dtype(np_dtype(n.type.dtype))
        size = int(np.prod(n.type.shape, dtype=np.int64)) * dt.itemsize
        return arena[off:off + size].view(dt).reshape(n.type.shape)

    def _holder(self, c: _Compiled, n: Node) -> np.ndarray:
        """Where the value of `n` is after a call (read it by copying)."""
        plan = c.sm.plan
        if n.id in plan.persistent:
            return self.store.arrays[plan.persistent[n.id]].reshape(n.type.shape)
        return self._view(c.arena, n, plan.offset[n.id])

    # ------------------------------------------------------------------ run

    def _launch(self, c: _Compiled, fn: Any, *args: Any) -> None:
        # Work too small to share runs on thread 0 whatever nt is: then one thread does it all
        # without barriers (the same results, bit for bit).
        if self.threads == 1 or c.sm.split_calls == 0:
            fn(0, 1, *args)
        else:
            get_pool().run(fn, self.threads, *args)

    def _set_step(self, c: _Compiled) -> None:
        c.step_word[0] = self.store.step & 0xFFFFFFFF

    def run(self, kind: str, feeds: dict[str, np.ndarray],
            check_values: bool = False) -> dict[str, np.ndarray]:
        if self._fallback is not None:
            return self._fallback.run(kind, feeds, check_values)
        with self.store.lock:  # the arena's fed slots and outputs are this call's until done
            c = self.compiled(kind)
            for j, (name, slot) in enumerate(c.fed):
                a = feeds[name]
                if a.dtype != slot.dtype or a.shape != slot.shape or not a.flags.c_contiguous:
                    raise InternalCompilerError(f"jit: feed {name} is not {slot.dtype}"
                                                f"{list(slot.shape)}, contiguous")
                c.sources[j] = a.ctypes.data
            # copies the feeds in and sums up their values in one pass: a bad value stops the
            # call before the step runs
            c.feed(*c.feed_args)
            if check_values:
                check_summaries(self.g, [(name, feeds[name], int(c.summaries[j]))
                                         for j, (name, _) in enumerate(c.fed)])
            self._set_step(c)
            self._launch(c, c.step, c.address)
            return {name: value.copy() for name, value in c.wanted}

    def train_steps(self, data: dict[str, np.ndarray], index: np.ndarray) -> dict[str, float]:
        """Run len(index) // batch steps natively over rows `index` of `data` (inputs and
        targets by name, full arrays); returns the mean of each reported loss."""
        if self._fallback is not None:
            return self._fallback.train_steps(data, index)
        c = self.compiled("train_step")
        plan = c.sm.plan
        fed = [plan.graph.node(i) for i in plan.fed.values()]
        batch = fed[0].type.shape[0]
        arrays = []
        for name, node in zip(plan.fed, fed):
            a = np.ascontiguousarray(data[name], dtype=np_dtype(node.type.dtype))
            if a.shape[1:] != node.type.shape[1:]:
                raise ValueError(f"{name}: rows of shape {a.shape[1:]} expected "
                                 f"{node.type.shape[1:]}")
            arrays.append(a)
        index = np.ascontiguousarray(index, dtype=np.int64)
        n_rows = min(a.shape[0] for a in arrays)
        if index.size and (index.min() < 0 or index.max() >= n_rows):
            raise ValueError("train_steps: an index is out of range of the data")
        n_steps = index.size // batch
        ptrs = np.array([a.ctypes.data for a in arrays], dtype=np.uint64)
        with self.store.lock:
            acc = c.arena[LOSS_OFFSET:LOSS_OFFSET + 8 * len(c.sm.losses)].view(np.float64)
            acc[:] = 0
            self._set_step(c)
            self._launch(c, c.loop, c.address, ptrs.ctypes.data, index.ctypes.data, n_steps)
            names = list(c.plan.wanted)
            return {names[j]: float(acc[j]) / max(n_steps, 1) for j in range(len(names))}


BACKENDS["jit"] = JitEngine
