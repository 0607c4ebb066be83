"""The public Model API: `netc.compile`, `netc.load`, `Model`, `History` (DESIGN.md, "Public
surface").

Takes: a `.net` path and model parameters (through build_ir's `build`), or a builder function
returning build results (`Model._from_builder`, used until and beside build_ir); user arrays.
Gives: a `Model` whose parameters, state and optimizer state live in one `Store` (one array per
tensor, views stay live), graphs compiled per batch size (eval-mode forward for predict/evaluate,
train-mode step graph from `build_step` for train_step/gradients), and an `Engine` per graph
from the chosen backend; `save` writes a self-contained `.npz` atomically.

Invariants: feeds are validated before any engine sees them (`feeds.check_feeds`); shapes are
static, so a new batch size means a new graph (`build(..., overrides={"batch": n})`) when the model
has a `batch` parameter, and otherwise the fed batch must be the declared one; the train graph
also depends on `steps_per_epoch` (the schedules count epochs in steps; 1 unless fit sets it).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from netc.compiler.errors import DataError, UsageError
from netc.compiler.train import add_penalties, build_step

from . import feeds as F
from . import jit_engine  # noqa: F401  (registers BACKENDS["jit"])
from .engine import BACKENDS, Engine, Store

FORMAT = "netc-model"
FORMAT_VERSION = 1
_DTYPES = {"float32": "f32", "float64": "f64"}
Builder = Callable[[str, "int | None"], Any]  # (mode, batch or None) -> Built-like


def _build(path: str, *, text: str | None = None, overrides: dict | None = None,
           mode: str = "train", float_dtype: str = "f32") -> Any:
    """build_ir's entry point, imported late (it is the lead's module)."""
    from netc.compiler.build_ir import build
    return build(path, text=text, overrides=overrides, mode=mode, float_dtype=float_dtype)


class TensorMap(Mapping):
    """Dotted name -> the model's own array. Assigning copies into it (the array stays the same)."""

    def __init__(self, store: Store, kind: str):
        self._store, self._kind = store, kind

    def _names(self) -> list[str]:
        return self._store.names(self._kind)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names():
            raise KeyError(name)
        return self._store.arrays[name]

    def __setitem__(self, name: str, value: object) -> None:
        arr = self[name]
        value = np.asarray(value)
        if value.shape != arr.shape:
            raise DataError(f"'{name}' has shape {list(arr.shape)}, got {list(value.shape)}")
        arr[...] = value

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{n!r}: {self[n].dtype}{list(self[n].shape)}" for n in self) + "}"


@dataclass
class History:
    """Per-epoch averages: `history["loss"]`, `history["val_loss"]`, `history["val_accuracy"]`..."""

    history: dict[str, list[float]] = field(default_factory=dict)
    epochs: list[int] = field(default_factory=list)

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def record(self, epoch: int, values: dict[str, float]) -> None:
        self.epochs.append(epoch)
        for k, v in values.items():
            self.history.setdefault(k, []).append(float(v))


class Model:
    """A compiled model. Build one with `netc.compile` or `netc.load`."""

    def __init__(self, builder: Builder, *, backend: str = "interpret", seed: int = 0,
                 threads: int | None = None, meta: dict | None = None, base: Any = None):
        if backend not in BACKENDS:
            raise UsageError(f"unknown backend {backend!r} (use 'jit' or 'interpret')")
        self._builder, self._backend, self.threads = builder, backend, threads
        self.meta = dict(meta or {})
        self.store = Store(seed)
        self.steps_per_epoch = 1
        self._engines: dict[tuple, tuple[Engine, Any]] = {}
        base = base if base is not None else builder("eval", None)
        self.config, self.name, self.model_params = base.train, base.model_name, dict(base.params)
        self._batch = base.params.get("batch")
        self._base = base.graph
        self._engine("eval", None, base)
        self.last_losses: dict[str, float] = {}

    @classmethod
    def _from_builder(cls, builder: Builder, **kw: Any) -> Model:
        """A model over any function (mode, batch) -> Built-like (graph, train, model_name,
        params); batch None means the declared one."""
        return cls(builder, **kw)

    # ------------------------------------------------------------------ description

    def _leaves(self, role: str) -> dict[str, tuple[tuple[int, ...], str]]:
        return {n: (x.type.shape, x.type.dtype) for n, x in self._base.inputs.items()
                if x.attrs["role"] == role}

    @property
    def inputs(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return self._leaves("input")

    @property
    def targets(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return self._leaves("target")

    @property
    def outputs(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {n: (x.type.shape, x.type.dtype) for n, x in self._base.outputs.items()}

    @property
    def params(self) -> TensorMap:
        return TensorMap(self.store, "param")

    @property
    def state(self) -> TensorMap:
        return TensorMap(self.store, "state")

    @property
    def optimizer_state(self) -> TensorMap:
        return TensorMap(self.store, "opt")

    @property
    def step(self) -> int:
        """Optimizer steps taken (the RNG step of the next one)."""
        return self.store.step

    # ------------------------------------------------------------------ graphs and engines

    def _engine(self, mode: str, batch: int | None, built: Any = None) -> tuple[Engine, Any]:
        key = (mode, batch, self.steps_per_epoch if mode == "train" else None)
        if key not in self._engines:
            built = built or self._builder(mode, batch)
            g, cls = built.graph, BACKENDS[self._backend]
            if mode == "train":
                info = build_step(g, built.train, steps_per_epoch=self.steps_per_epoch)
                engine = cls(g, self.store, info=info, threads=self.threads)
            else:
                report = {k: add_penalties(g, n, built.train) for k, n in g.losses.items()}
                engine = cls(g, self.store, report=report, threads=self.threads)
            self._engines[key] = (engine, g)
        return self._engines[key]

    def _prepare(self, mode: str, data: dict, with_targets: bool) -> tuple[Engine, Any, dict]:
        batch = None
        if self._batch is not None:
            n = F.batch_of(self._base, data, self._batch)
            batch = None if n in (None, self._batch) or n < 1 else n
        engine, g = self._engine(mode, batch)
        return engine, g, F.check_feeds(g, data, with_targets=with_targets)

    # ------------------------------------------------------------------ running

    def predict(self, **inputs: Any) -> np.ndarray | dict[str, np.ndarray]:
        """Eval-mode outputs: a dict by name, or the array when the model has one output."""
        engine, _, feeds = self._prepare("eval", inputs, with_targets=False)
        out = engine.run("predict", feeds)
        return next(iter(out.values())) if len(out) == 1 else out

    def train_step(self, **data: Any) -> float:
        """One optimizer step on one batch; the reported objective (summed over multi-step
        training's steps; each is in `last_losses`)."""
        engine, _, feeds = self._prepare("train", data, with_targets=True)
        losses = engine.run("train_step", feeds)
        self.last_losses = {k: float(v) for k, v in losses.items()}
        return float(sum(self.last_losses.values()))

    def gradients(self, **data: Any) -> dict[str, np.ndarray]:
        """Gradient of the objective for every trained parameter; nothing changes."""
        engine, _, feeds = self._prepare("train", data, with_targets=True)
        return engine.run("gradients", feeds)

    def evaluate(self, **data: Any) -> dict[str, float]:
        """Eval mode: each loss (with the l1/l2 terms, as trained) and the computable metrics."""
        engine, g, feeds = self._prepare("eval", data, with_targets=True)
        out = engine.run("evaluate", feeds)
        result = {k: float(out[k]) for k in g.losses}
        result.update(F.metrics(g, self.config.metrics, {k: out[k] for k in g.outputs}, feeds))
        return result

    def fit(self, *, epochs: int | None = None, batch: int | None = None,
            validation: float | None = None, shuffle: bool = True, verbose: bool = False,
            **data: Any) -> History:
        """Minibatch training honouring the train block's epochs, batch and validation fraction
        (the last fraction of the rows is held out). Without a `batch` model parameter, batches
        have the declared size and a last partial batch is dropped."""
        cfg = self.config
        epochs = cfg.epochs if epochs is None else epochs
        batch = cfg.batch if batch is None else batch
        if validation is None:
            validation = cfg.validation if isinstance(cfg.validation, float) else 0.0
        if self._batch is None:  # static batch: the declared one
            batch = next((x.type.shape[0] for x in self._base.inputs.values() if x.type.rank),
                         batch)
        arrays = {k: np.asarray(v) for k, v in data.items()}
        n = {len(v) for v in arrays.values()}
        if len(n) != 1 or batch < 1 or not 0.0 <= validation < 1.0:
            raise UsageError("fit needs arrays with the same number of rows, batch >= 1 and "
                             "0 <= validation < 1")
        rows = n.pop()
        n_val = int(round(rows * validation))
        train = {k: v[:rows - n_val] for k, v in arrays.items()}
        val = {k: v[rows - n_val:] for k, v in arrays.items()} if n_val else None
        n_train = rows - n_val
        full = self._batch is not None
        self.steps_per_epoch = max(1, math.ceil(n_train / batch) if full else n_train // batch)
        history = History()
        rng = np.random.default_rng([self.store.seed & 0xFFFFFFFF, 0x66697400])
        for epoch in range(epochs):
            order = rng.permutation(n_train) if shuffle else np.arange(n_train)
            total, count = 0.0, 0
            for lo in range(0, n_train, batch):
                idx = order[lo:lo + batch]
                if len(idx) < batch and not full:
                    break
                total += self.train_step(**{k: v[idx] for k, v in train.items()}) * len(idx)
                count += len(idx)
            logs = {"loss": total / max(count, 1)}
            if val is not None:
                logs.update({f"val_{k}": v for k, v in self.evaluate(**val).items()})
            history.record(epoch, logs)
            if verbose:
                print(f"epoch {epoch + 1}/{epochs}: " +
                      ", ".join(f"{k} {v:.4g}" for k, v in logs.items()))
        return history

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike) -> None:
        """Write a self-contained `.npz` (source, overrides, every tensor, the step) atomically:
        a temporary file in the same directory, flushed and fsynced, then renamed over `path`."""
        meta = dict(self.meta, format=FORMAT, version=FORMAT_VERSION, model=self.name,
                    seed=self.store.seed, step=self.step, steps_per_epoch=self.steps_per_epoch,
                    kinds=self.store.kind)
        arrays = {f"t:{n}": a for n, a in self.store.arrays.items()}
        arrays["meta"] = np.array(json.dumps(meta))
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                   dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _restore(self, z: Mapping[str, np.ndarray], kinds: dict[str, str]) -> None:
        for key in z:
            if not key.startswith("t:"):
                continue
            name, value = key[2:], z[key]
            held = self.store.arrays.get(name)
            if held is None:
                self.store.arrays[name] = np.array(value)
                self.store.kind[name] = kinds.get(name, "opt")
            elif held.shape != value.shape or held.dtype != value.dtype:
                raise DataError(f"saved tensor '{name}' is {value.dtype}{list(value.shape)}, "
                                f"the model has {held.dtype}{list(held.shape)}")
            else:
                held[...] = value


def _checked_dtype(dtype: str) -> str:
    if dtype not in _DTYPES:
        raise UsageError(f"dtype must be 'float32' or 'float64', not {dtype!r}")
    return _DTYPES[dtype]


def _source_builder(path: str, text: str | None, overrides: dict, float_dtype: str) -> Builder:
    def builder(mode: str, batch: int | None) -> Any:
        over = dict(overrides)
        if batch is not None:
            over["batch"] = batch
        return _build(path, text=text, overrides=over, mode=mode, float_dtype=float_dtype)
    return builder


def compile(path: str | os.PathLike, *, backend: str = "jit", threads: int | None = None,
            seed: int = 0, dtype: str = "float32", **model_params: Any) -> Model:
    """Compile the model of a `.net` file; keyword arguments override its `( )` parameters."""
    float_dtype = _checked_dtype(dtype)
    path = os.fspath(path)
    first = _build(path, overrides=dict(model_params), mode="eval", float_dtype=float_dtype)
    # later graphs are built from the text read now, so the model never mixes file versions
    builder = _source_builder(path, first.text, model_params, float_dtype)
    meta = {"path": path, "text": first.text, "overrides": model_params, "dtype": dtype}
    return Model(builder, backend=backend, seed=seed, threads=threads, meta=meta, base=first)


def load(path: str | os.PathLike, *, backend: str = "jit",
         threads: int | None = None) -> Model:
    """A model saved by `Model.save`: rebuilt from its source text, then every tensor restored."""
    with np.load(os.fspath(path), allow_pickle=False) as z:
        if "meta" not in z.files:
            raise DataError(f"{os.fspath(path)} is not a saved netc model")
        meta = json.loads(str(z["meta"]))
        if meta.get("format") != FORMAT or meta.get("text") is None:
            raise DataError(f"{os.fspath(path)} is not a self-contained netc model")
        builder = _source_builder(meta["path"], meta["text"], meta["overrides"],
                                  _checked_dtype(meta["dtype"]))
        keep = {k: meta[k] for k in ("path", "text", "overrides", "dtype")}
        m = Model(builder, backend=backend, seed=int(meta["seed"]), threads=threads, meta=keep)
        m.steps_per_epoch = int(meta["steps_per_epoch"])
        m._restore({k: z[k] for k in z.files}, meta["kinds"])
    return m
