"""The public Model API: `netc.compile`, `netc.load`, `Model`, `History` (DESIGN.md, "Public
surface").

Takes: a `.net` path and model parameters (through build_ir's `build`), or a builder function
returning build results (`Model._from_builder`, used until and beside build_ir); user arrays.
Gives: a `Model` whose parameters, state and optimizer state live in one `Store` (one array per
tensor, views stay live), graphs compiled per batch size (eval-mode forward for predict/evaluate,
train-mode step graph from `build_step` for train_step/gradients), and an `Engine` per graph
from the chosen backend; `save` writes a self-contained `.npz` atomically.

Invariants: feeds are validated before anything runs (`feeds.check_feeds`, and their values by
`engine.run(..., check_values=True)`: the JIT checks them as it copies them in); shapes are
static, so a new batch size means a new graph (`build(..., overrides={"batch": n})`) when the model
has a `batch` parameter, and otherwise the fed batch must be the declared one; the train graph
also depends on `steps_per_epoch` (the schedules count epochs in steps; 1 unless fit sets it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from netc.compiler.errors import DataError, UsageError
from netc.compiler.initializers import initialize
from netc.compiler.train import STEP_COUNTER, add_penalties, build_step

from . import feeds as F
from . import (
    jit_engine,  # noqa: F401  (registers BACKENDS["jit"])
    saved,
)
from .data import bind_arrays
from .engine import BACKENDS, Engine, Store
from .saved import read_weights
from .tensor_map import KIND_NAMES, TensorMap, UnknownTensor  # noqa: F401  (public)
from .threads import check_threads
from .training import FitState, History, OnEpoch, Progress, check_batch, check_count
from .training import fit as _fit

FORMAT = "netc-model"
FORMAT_VERSION = 1
OTHER_BATCHES = 8  # compiled engines kept for batch sizes other than the declared one
_DTYPES = {"float32": "f32", "float64": "f64"}
Builder = Callable[[str, "int | None"], Any]  # (mode, batch or None) -> Built-like


def _build(path: str, *, text: str | None = None, overrides: dict | None = None,
           mode: str = "train", float_dtype: str = "f32",
           imports: dict[str, str] | None = None) -> Any:
    """build_ir's entry point, imported late (it is the lead's module)."""
    from netc.compiler.build_ir import build
    return build(path, text=text, overrides=overrides, mode=mode, float_dtype=float_dtype,
                 imports=imports)


class Model:
    """A compiled model. Build one with `netc.compile` or `netc.load`."""

    def __init__(self, builder: Builder, *, backend: str = "interpret", seed: int = 0,
                 threads: int | None = None, meta: dict | None = None, base: Any = None):
        if backend not in BACKENDS:
            raise UsageError(f"unknown backend {backend!r} (use 'jit' or 'interpret')")
        if threads is not None:
            threads = check_threads(threads)
        seed = check_count(seed, "seed", 0)
        self._builder, self._backend, self.threads = builder, backend, threads
        self.meta = dict(meta or {})
        self.store = Store(seed)
        self.steps_per_epoch = 1
        self._engines: dict[tuple, tuple[Engine, Any]] = {}
        base = base if base is not None else builder("eval", None)
        self.config, self.name, self.model_params = base.train, base.model_name, dict(base.params)
        self._batch = base.params.get("batch")
        self._base = base.graph
        self._base_built = base
        self._initialized_from: str | None = None
        self.skip_unmatched = False
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
        hit = self._engines.get(key)
        if hit is not None:
            if batch is not None:  # most recently used last (see below)
                self._engines[key] = self._engines.pop(key)
            return hit
        others = [k for k in self._engines if k[1] is not None]
        if len(others) >= OTHER_BATCHES:  # engines for batch sizes other than the declared
            del self._engines[others[0]]  # one are bounded: the least recently used goes
        if key not in self._engines:
            built = built or self._builder(mode, batch)
            g, cls = built.graph, BACKENDS[self._backend]
            # the model's settings, not the file's: `configure` may have overridden them
            cfg = getattr(self, "config", None) or built.train
            if mode == "train":
                info = build_step(g, cfg, steps_per_epoch=self.steps_per_epoch)
                engine = cls(g, self.store, info=info, threads=self.threads)
            else:
                report = {k: add_penalties(g, n, cfg) for k, n in g.losses.items()}
                engine = cls(g, self.store, report=report, threads=self.threads)
            self._engines[key] = (engine, g)
        return self._engines[key]

    def _prepare(self, mode: str, data: dict, with_targets: bool) -> tuple[Engine, Any, dict]:
        batch = None
        if self._batch is not None:
            n = F.batch_of(self._base, data, self._batch)
            batch = None if n in (None, self._batch) or n < 1 else n
        engine, g = self._engine(mode, batch)
        # values are checked by `run(..., check_values=True)`: the JIT does it as it copies
        # the feeds in
        return engine, g, F.check_feeds(g, data, with_targets=with_targets, values=False)

    # ------------------------------------------------------------------ running

    def predict(self, **inputs: Any) -> np.ndarray | dict[str, np.ndarray]:
        """Eval-mode outputs: a dict by name, or the array when the model has one output."""
        engine, _, feeds = self._prepare("eval", inputs, with_targets=False)
        out = engine.run("predict", feeds, check_values=True)
        return next(iter(out.values())) if len(out) == 1 else out

    def train_step(self, **data: Any) -> float:
        """One optimizer step on one batch; the reported objective (summed over multi-step
        training's steps; each is in `last_losses`)."""
        engine, _, feeds = self._prepare("train", data, with_targets=True)
        losses = engine.run("train_step", feeds, check_values=True)
        self.last_losses = {k: float(v) for k, v in losses.items()}
        return float(sum(self.last_losses.values()))

    def train_steps(self, index: Any = None, *, batch: int | None = None,
                    **data: Any) -> dict[str, float]:
        """Many optimizer steps in one call: step s trains on rows `index[s*batch:(s+1)*batch]`
        of the full arrays `data` (by input and target name; `index` defaults to every row in
        order). The JIT runs them all in one native call that gathers each batch itself, so
        Python is touched once, not per batch; the results equal that many `train_step` calls
        bit for bit. Returns the mean of each reported loss over the steps (also in
        `last_losses`). `len(index)` must be a positive multiple of the batch."""
        F.check_names(self._base, data, call="train_steps(): ")
        arrays = bind_arrays(dict(data),
                             {**self.inputs, **self.targets}, "train_steps()")
        if not arrays:
            raise DataError("train_steps(): no arrays given (pass the inputs and targets by "
                            "name)")
        F.check_index_ranges(self._base, arrays)
        rows = len(next(iter(arrays.values())))
        batch = self._step_batch(batch)
        if index is None:
            index = np.arange(rows - rows % batch)
        index = np.asarray(index)
        if index.ndim != 1 or (index.size and not np.issubdtype(index.dtype, np.integer)):
            raise DataError(f"train_steps(): index must be a 1-D array of row numbers, got "
                            f"{index.dtype}{list(index.shape)}")
        if index.size == 0 or index.size % batch:
            raise DataError(f"train_steps(): {index.size} indices is not a positive multiple "
                            f"of the batch {batch}")
        if index.min() < 0 or index.max() >= rows:
            raise DataError(f"train_steps(): row numbers must lie in [0, {rows}), got "
                            f"{index.min()}..{index.max()}")
        return self._train_steps(arrays, index, batch)

    def _step_batch(self, batch: int | None) -> int:
        fixed = self.fixed_batch
        if fixed is not None:
            if batch not in (None, fixed):
                raise UsageError(f"this model fixes the batch at {fixed}; got batch={batch}")
            return fixed
        return check_batch(self._batch if batch is None else batch)

    def _train_steps(self, arrays: dict[str, np.ndarray], index: np.ndarray,
                     batch: int) -> dict[str, float]:
        """train_steps over checked arrays and index (fit's inner loop)."""
        engine, _ = self._engine("train", None if batch in (self._batch, self.fixed_batch)
                                 else batch)
        self.last_losses = engine.train_steps(arrays, index)
        return dict(self.last_losses)

    def gradients(self, **data: Any) -> dict[str, np.ndarray]:
        """Gradient of the objective for every trained parameter; nothing changes."""
        engine, _, feeds = self._prepare("train", data, with_targets=True)
        return engine.run("gradients", feeds, check_values=True)

    def evaluate(self, **data: Any) -> dict[str, float]:
        """Eval mode: each loss (with the l1/l2 terms, as trained) and the computable metrics."""
        engine, g, feeds = self._prepare("eval", data, with_targets=True)
        out = engine.run("evaluate", feeds, check_values=True)
        result = {k: float(out[k]) for k in g.losses}
        result.update(F.metrics(g, self.config.metrics, {k: out[k] for k in g.outputs}, feeds))
        return result

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the file fixes (no `batch` model parameter), or None."""
        if self._batch is not None:
            return None
        return next((x.type.shape[0] for x in self._base.inputs.values() if x.type.rank), None)

    @property
    def loss_names(self) -> list[str]:
        return list(self._base.losses)

    def _evaluate_raw(self, **data: Any) -> dict[str, np.ndarray]:
        engine, _, feeds = self._prepare("eval", data, with_targets=True)
        return engine.run("evaluate", feeds, check_values=True)

    def load_weights(self, path: str | os.PathLike, *, skip_unmatched: bool = False,
                     kinds: tuple[str, ...] = ("param",)) -> list[str]:
        """Copy matching tensors (by dotted name) from a saved model (.npz or .safetensors)
        or a plain `.npz` or `.safetensors` file of arrays. A matching name with another shape
        is an error listing every such tensor (or is skipped with `skip_unmatched`); tensors
        only one side has are left alone, but at least one must match. Returns the names loaded."""
        path = path_arg(path, "load_weights(path)")
        if isinstance(kinds, str):  # one kind named alone: "param" in kinds matched substrings
            kinds = (kinds,)
        bad = [k for k in kinds if k not in KIND_NAMES]
        if bad:
            raise UsageError(f"load_weights(kinds=...): {bad[0]!r} is no kind of tensor (param, "
                             "state, opt)")
        if not os.path.exists(path):
            raise DataError(f"cannot load weights: '{path}' does not exist")
        saved = read_weights(path)
        mine = {n: a for n, a in self.store.arrays.items() if self.store.kind.get(n) in kinds}
        wrong = [f"{n}: file {list(saved[n].shape)}, model {list(a.shape)}"
                 for n, a in mine.items() if n in saved and saved[n].shape != a.shape]
        if wrong and not skip_unmatched:
            raise DataError(f"{path}: {len(wrong)} tensor(s) have other shapes than the "
                            f"model's: " + "; ".join(wrong) + " (skip them with "
                            "skip_unmatched / --skip-unmatched)")
        loaded = [n for n, a in mine.items() if n in saved and saved[n].shape == a.shape]
        if not loaded:
            raise DataError(f"{path}: no tensor matches the model's parameters by name (file: "
                            f"{', '.join(sorted(saved)[:8]) or 'none'}; model: "
                            f"{', '.join(sorted(mine)[:8])})")
        for n in loaded:
            mine[n][...] = saved[n].astype(mine[n].dtype, copy=False)
        return loaded

    def configure(self, **settings: Any) -> Model:
        """Override train-block settings (checked like the file): epochs, batch, seed,
        validation, l1, l2, clip_norm, lr, optimizer="sgd(0.1, momentum = 0.9)", schedule,
        metrics, early_stop="monitor = val_loss, patience = 2", data, freeze, augment, ...
        Settings compiled into the step (optimizer, schedule, l1, l2, clip_norm, freeze)
        recompile it on the next train step."""
        from netc.compiler.build_train import override_train

        if not settings:
            return self
        if "batch" in settings and self.fixed_batch is not None:
            self._step_batch(settings["batch"])  # a batch the file fixes otherwise: ignored
        self.config = override_train(self.config, settings, self._base_built)
        self._engines = {}  # train steps and the reported l1/l2 penalties depend on settings
        return self

    def reinitialize(self) -> Model:
        """Back to fresh initial weights (the same seed) and fresh optimizer state, in place:
        the model as just compiled, with its compiled graphs kept (hyperparameter trials and
        cross-validation folds reuse them)."""
        for name, node in {**self._base.params, **self._base.states}.items():
            held = self.store.arrays.get(name)
            if held is not None:
                held[...] = initialize(node.attrs["init"], node.type.shape, held.dtype,
                                       self.store.seed, name)
        for name in self.store.names("opt"):  # optimizer states start at zero (optim.py)
            self.store.arrays[name][...] = 0
        self._initialized_from = None
        self.last_losses = {}
        return self

    def fit(self, *, epochs: int | None = None, batch: int | None = None,
            validation: float | str | dict | None = None, data: str | None = None,
            seed: int | None = None, shuffle: bool = True, progress: Progress | None = None,
            stop: Any = None, state: FitState | None = None, on_epoch: OnEpoch | None = None,
            **arrays: Any) -> History:
        """Train on `arrays` (by input and target name) or, without them, on the train block's
        data (or `data=`, a bundled name or a path). Settings default to the train block's;
        `validation` is a fraction held out (stratified by class), a path, or a dict of arrays.
        Returns a History with per-epoch loss, validation loss and metrics, and why training
        stopped. `on_epoch(model, state)` runs after each completed epoch (checkpoints); `state`
        continues a run from such a FitState (resume)."""
        cfg = self.config
        if batch is not None and self.fixed_batch is not None:
            self._step_batch(batch)  # a batch the file fixes otherwise: it was ignored
        if cfg.init_from and not self._initialized_from:
            self.load_weights(cfg.init_from, skip_unmatched=self.skip_unmatched)
            self._initialized_from = cfg.init_from
        if data is not None:
            arrays_or_none = None
            self.config = cfg = _replace_data(cfg, path_arg(data, "fit(data=...)"))
        else:
            F.check_names(self._base, arrays, call="fit(): ")
            arrays_or_none = dict(arrays) or None  # bind_arrays converts and checks them
        return _fit(self, arrays_or_none, epochs=cfg.epochs if epochs is None else epochs,
                    batch=cfg.batch if batch is None else batch,
                    validation=cfg.validation if validation is None else validation,
                    seed=cfg.seed if seed is None else seed, shuffle=shuffle,
                    progress=progress, stop=stop, state=state, on_epoch=on_epoch)

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike, *, format: str | None = None,
             extra: dict | None = None) -> None:
        """Write a self-contained model (source, overrides, every tensor, the step) atomically:
        `.npz` by default, or `format="safetensors"` (also chosen by a `.safetensors` name).
        `extra` (JSON-able) is stored in the metadata under "extra" (checkpoints: the fit
        state)."""
        path = path_arg(path, "save(path)")
        if extra is not None:
            try:
                json.dumps(extra)
            except (TypeError, ValueError) as e:
                raise UsageError(f"save(extra=...) must hold JSON values only ({e})") from None
        meta = dict(self.meta, format=FORMAT, version=FORMAT_VERSION, model=self.name,
                    seed=self.store.seed, step=self.step, steps_per_epoch=self.steps_per_epoch,
                    kinds=self.store.kind)
        if extra is not None:
            meta["extra"] = extra
        saved.write(path, dict(self.store.arrays), meta, format)

    def _restore(self, z: Mapping[str, np.ndarray], kinds: dict[str, str]) -> None:
        for key in z:
            if not key.startswith("t:"):
                continue
            name, value = key[2:], z[key]
            held = self.store.arrays.get(name)
            if held is None:  # optimizer state: checked when the train graph wants it
                if name == STEP_COUNTER and (value.shape != () or value.dtype != np.int32):
                    raise DataError(f"saved tensor '{name}' is {value.dtype}{list(value.shape)}, "
                                    "the step counter is an int32 scalar")
                self.store.arrays[name] = np.array(value)
                self.store.kind[name] = kinds.get(name, "opt")
                self.store.loaded.add(name)
            elif held.shape != value.shape or held.dtype != value.dtype:
                raise DataError(f"saved tensor '{name}' is {value.dtype}{list(value.shape)}, "
                                f"the model has {held.dtype}{list(held.shape)}")
            else:
                held[...] = value


def path_arg(path: object, what: str) -> str:
    """A path argument as a str: str, bytes or os.PathLike; anything else is a UsageError (it
    was a TypeError from os.fspath, or a str() of it used as a file name)."""
    try:
        path = os.fsdecode(path)
    except TypeError:
        raise UsageError(f"{what} must be a file path (str or os.PathLike), got "
                         f"{type(path).__name__} {path!r:.60}") from None
    if not path:
        raise UsageError(f"{what} must be a file path, got an empty string")
    return path


def _checked_dtype(dtype: str) -> str:
    if dtype not in _DTYPES:
        raise UsageError(f"dtype must be 'float32' or 'float64', not {dtype!r}")
    return _DTYPES[dtype]


def _source_builder(path: str, text: str | None, overrides: dict, float_dtype: str,
                    imports: dict[str, str] | None = None) -> Builder:
    def builder(mode: str, batch: int | None) -> Any:
        over = dict(overrides)
        if batch is not None:
            over["batch"] = batch
        return _build(path, text=text, overrides=over, mode=mode, float_dtype=float_dtype,
                      **({"imports": imports} if imports else {}))
    return builder


def compile(path: str | os.PathLike, *, backend: str = "jit", threads: int | None = None,
            seed: int = 0, dtype: str = "float32", **model_params: Any) -> Model:
    """Compile the model of a `.net` file; keyword arguments override its `( )` parameters."""
    float_dtype = _checked_dtype(dtype)
    path = path_arg(path, "compile(path)")
    if not os.path.exists(path) and ("{" in path or "\n" in path):
        raise UsageError("netc.compile takes the path of a .net file, and this looks like "
                         "source text: write it to a file first")
    first = _build(path, overrides=dict(model_params), mode="eval", float_dtype=float_dtype)
    # later graphs are built from the texts read now (the file's and its imports'), so the
    # model never mixes file versions; a saved model keeps them all, and its absolute path,
    # so it rebuilds alike wherever it is loaded from (relative data paths resolve as before)
    imports = dict(getattr(getattr(first, "program", None), "imports", None) or {})
    builder = _source_builder(path, first.text, model_params, float_dtype, imports)
    meta = {"path": os.path.abspath(path), "text": first.text, "overrides": model_params,
            "dtype": dtype, "imports": imports}
    return Model(builder, backend=backend, seed=seed, threads=threads, meta=meta, base=first)


def load(path: str | os.PathLike, *, backend: str = "jit",
         threads: int | None = None) -> Model:
    """A model saved by `Model.save` (.npz or .safetensors): rebuilt from its source text, then
    every tensor restored."""
    path = path_arg(path, "load(path)")
    tensors, meta = saved.read(path)
    if meta.get("format") != FORMAT:
        raise DataError(f"{os.fspath(path)} is not a saved netc model")
    if meta.get("version", 1) > FORMAT_VERSION:
        raise DataError(f"{os.fspath(path)} was saved by a newer netc (model format version "
                        f"{meta['version']}; this netc reads version {FORMAT_VERSION}): update "
                        "netc to load it")
    builder = _source_builder(meta.get("path", "<saved>"), meta["text"], meta["overrides"],
                              _checked_dtype(meta["dtype"]), meta.get("imports"))
    keep = {k: meta[k] for k in ("path", "text", "overrides", "dtype", "imports") if k in meta}
    m = Model(builder, backend=backend, seed=int(meta["seed"]), threads=threads, meta=keep)
    m.steps_per_epoch = int(meta.get("steps_per_epoch", 1))
    m._restore({f"t:{k}": v for k, v in tensors.items()}, meta["kinds"])
    return m


def _replace_data(cfg: Any, data: str) -> Any:
    import dataclasses

    from netc.compiler.build_train import BUNDLED_DATA
    keep = data in BUNDLED_DATA or ("/" not in data and "." not in data)
    return dataclasses.replace(cfg, data=data if keep else os.path.abspath(data))
