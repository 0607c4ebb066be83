"""The training loop behind `Model.fit`: data from the train block, validation, metrics, early
stopping, partial batches and progress reporting.

Takes: a Model, arrays (or the train block's data spec), and the resolved settings. Gives: a
`History` — per-epoch train loss (and each named loss of multi-step training), validation loss and
metrics, the epoch training stopped at and why, and the best epoch when early stopping restored it.

Invariants: the data order of epoch e depends only on (seed, e) (a NumPy generator keyed by both),
so two runs with one seed see the same batches, and a run resumed at epoch k (`FitState`, saved
with each checkpoint by an `on_epoch` callback) continues bitwise as if never stopped: everything
else it needs — parameters, optimizer state, the step counter `opt.step` that keys every random
stream — is model state. Whole batches run through the model's `train_steps` (with the JIT, one
native call per chunk of steps that gathers the batches itself; `_Chunks` sizes the chunks to a
fraction of a second, which changes nothing in the results). Image inputs with augmentation are
augmented per batch (`augment.py`, keyed by (seed, step)) and stepped one batch at a time, in
training only. A last partial batch
is trained through a second cached specialization when the model has a `batch` parameter and is
dropped (and reported in the history) when the batch size is fixed by the file. Validation runs in
eval mode over chunks of the training batch size; metrics are computed over all its rows at once.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from . import augment as A
from .compiler.errors import DataError, UsageError
from .data import bind_arrays, load_arrays, split_validation
from .feeds import check_index_ranges
from .metrics import CLASSIFICATION, REGRESSION, compute

DEFAULT_VALIDATION = 0.2
Progress = Callable[[str, dict], None]  # (event, info): "epoch_start", "batch", "epoch_end"


@dataclass
class History:
    """Per-epoch values: `history["loss"]`, `history["val_loss"]`, `history["val_accuracy"]`…"""

    history: dict[str, list[float]] = field(default_factory=dict)
    epochs: list[int] = field(default_factory=list)
    stopped_epoch: int | None = None
    stop_reason: str = "completed all epochs"
    best_epoch: int | None = None
    dropped_rows: int = 0
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def __contains__(self, key: str) -> bool:
        return key in self.history

    def record(self, epoch: int, values: dict[str, float]) -> None:
        self.epochs.append(epoch)
        for k, v in values.items():
            self.history.setdefault(k, []).append(float(v))

    def last(self) -> dict[str, float]:
        return {k: v[-1] for k, v in self.history.items() if v}

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> History:
        return cls(**d)


@dataclass
class FitState:
    """Where the loop is after a completed epoch: enough to continue it exactly. `monitor` is
    what "best" tracks (the early_stop monitor, else val_loss with validation, else loss);
    `best_arrays` (not serialized: the run's best.npz holds it) restores the best weights."""

    epoch: int = 0  # epochs completed
    monitor: str = "loss"
    best_value: float | None = None
    best_epoch: int | None = None
    waited: int = 0
    improved: bool = False  # the last completed epoch set a new best
    done: bool = False  # training stopped (early stop): nothing left to run
    history: History = field(default_factory=History)
    best_arrays: dict | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in ("epoch", "monitor", "best_value", "best_epoch",
                                           "waited", "improved", "done")}
        return {**d, "history": self.history.to_json()}

    @classmethod
    def from_json(cls, d: dict) -> FitState:
        return cls(**{**d, "history": History.from_json(d["history"])})


OnEpoch = Callable[[object, FitState], None]  # (model, state) after each completed epoch


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled row order of epoch `epoch` (0-based): a function of (seed, epoch) only."""
    return np.random.default_rng([seed & 0xFFFFFFFF, 0x66697400, epoch]).permutation(n)


def model_arrays(model, spec: str, seed: int, *, with_targets: bool = True) -> dict:
    """Load a data spec (bundled name or path) and bind it to the model's inputs and targets."""
    raw, source = load_arrays(spec, seed)
    wanted = dict(model.inputs)
    if with_targets:
        wanted.update(model.targets)
    # predicting from a labelled .csv: the target columns must not become input features
    return bind_arrays(raw, wanted, source, ignore=() if with_targets else tuple(model.targets))


def _stratify_key(model, arrays: dict) -> np.ndarray | None:
    for name, (shape, dtype) in model.targets.items():
        if dtype == "i32" and len(shape) == 1 and name in arrays:
            return arrays[name]
    return None


def pick_prediction(outputs: dict, targets: dict, metric: str):
    """The (prediction, target) pair a metric is computed from, or None."""
    for y in targets.values():
        for v in outputs.values():
            scores = v.shape[:-1] == y.shape and v.shape[-1] >= 2
            single = v.reshape(len(v), -1).shape == (len(y), 1)
            if metric in CLASSIFICATION and y.dtype.kind in "iu" and (scores or single):
                return v, y
            if metric in REGRESSION and y.dtype.kind == "f" and v.shape == y.shape:
                return v, y
    return None


def evaluate_arrays(model, arrays: dict, batch: int, metrics: tuple[str, ...],
                    what: str = "the data to evaluate") -> dict[str, float]:
    """Eval-mode losses (row-weighted over chunks) and metrics over every row of `arrays`."""
    n = len(next(iter(arrays.values())))
    fixed = model.fixed_batch
    size = fixed or max(1, min(batch, n))
    sums: dict[str, float] = {}
    rows = 0
    preds: dict[str, list] = {}
    for lo in range(0, n, size):
        chunk = {k: v[lo:lo + size] for k, v in arrays.items()}
        m = len(next(iter(chunk.values())))
        if fixed and m < fixed:
            break  # the batch size is fixed by the file: a last partial chunk cannot run
        out = model._evaluate_raw(**chunk)
        for k in model.loss_names:
            sums[k] = sums.get(k, 0.0) + float(out[k]) * m
        for k in model.outputs:
            preds.setdefault(k, []).append(out[k])
        rows += m
    if rows == 0:
        raise DataError(f"{what} has no rows" if n == 0 else
                        f"{what} has {n} rows, fewer than the fixed batch of {fixed}")
    result = {k: v / rows for k, v in sums.items()}
    if "loss" not in result and result:
        result["loss"] = sum(result.values())
    outputs = {k: np.concatenate(v) for k, v in preds.items()}
    targets = {k: arrays[k][:rows] for k in model.targets if k in arrays}
    for metric in metrics:
        pair = pick_prediction(outputs, targets, metric)
        if pair is not None:
            result.update(compute([metric], *pair))
    return result


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _monitor_mode(monitor: str, mode: str) -> str:
    if mode != "auto":
        return mode
    base = monitor[4:] if monitor.startswith("val_") else monitor
    return "max" if base in ("accuracy", "precision", "recall", "f1", "auc") else "min"


def _validation_arrays(model, arrays: dict, validation, seed: int):
    """(training arrays, validation arrays or None) from a fraction, a path or arrays."""
    if isinstance(validation, os.PathLike):
        validation = os.fspath(validation)
    if isinstance(validation, dict):
        return arrays, bind_arrays(validation, {**model.inputs, **model.targets}, "validation")
    if isinstance(validation, str):
        return arrays, model_arrays(model, validation, seed)
    number = isinstance(validation, (int, float, np.integer, np.floating)) and \
        not isinstance(validation, bool)
    if validation is None or (number and validation == 0):
        return arrays, None
    if not number or not 0.0 < float(validation) < 1.0:  # (a list once raised TypeError)
        raise UsageError(f"validation must be a fraction in [0, 1), a path or a dict of "
                         f"arrays, got {validation!r:.60}")
    return split_validation(arrays, float(validation), seed,
                            stratify=_stratify_key(model, arrays))


def fit(model, arrays: dict | None, *, epochs: int, batch: int, validation, seed: int,
        shuffle: bool = True, progress: Progress | None = None,
        stop: Callable[[], bool] | None = None, state: FitState | None = None,
        on_epoch: OnEpoch | None = None) -> History:
    """Train for `epochs` epochs (counting those `state` says are done when resuming)."""
    cfg = model.config
    epochs, seed = check_count(epochs, "epochs"), check_count(seed, "seed", 0)
    for what, f in (("progress", progress), ("stop", stop), ("on_epoch", on_epoch)):
        if f is not None and not callable(f):  # it failed at the first epoch as a TypeError
            raise UsageError(f"fit({what}=...) must be a function, got {type(f).__name__}")
    if state is not None and not isinstance(state, FitState):
        raise UsageError(f"fit(state=...) must be a FitState, got {type(state).__name__}")
    if arrays is None:
        if cfg.data is None:
            raise UsageError("no training data: pass arrays to fit(), or set data = ... in the "
                             "train block (or --data on the command line)")
        arrays = model_arrays(model, cfg.data, seed)
    else:
        wanted = {**model.inputs, **model.targets}
        arrays = bind_arrays(arrays, wanted, "fit()")
    if not len(next(iter(arrays.values()))):
        raise DataError("the training data has no rows")
    notes = []
    if not validation and cfg.early_stop is not None and cfg.early_stop.monitor.startswith("val_"):
        validation = DEFAULT_VALIDATION  # early stopping on a validation value needs some
        notes.append(f"early_stop monitors {cfg.early_stop.monitor}: holding out "
                     f"{DEFAULT_VALIDATION:.0%} of the data for validation")
    arrays, val = _validation_arrays(model, arrays, validation, seed)
    check_index_ranges(model._base, arrays)  # checked once: batches are gathered natively
    images = A.check(cfg.augment, model.inputs)
    n = len(next(iter(arrays.values())))
    fixed = model.fixed_batch
    batch = fixed or check_batch(batch)
    if n < batch and (fixed or n == 0):
        raise DataError(f"the training data has {n} rows, fewer than one batch of {batch}")
    steps = math.ceil(n / batch) if not fixed else n // batch
    model.steps_per_epoch = max(1, steps)
    es = cfg.early_stop
    if state is None:
        monitor = es.monitor if es else ("val_loss" if val is not None else "loss")
        state = FitState(monitor=monitor, history=History(notes=notes))
    history = state.history
    history.dropped_rows = (n % batch) if fixed else 0
    mode = _monitor_mode(state.monitor, es.mode if es else "min")
    chunks = _Chunks()
    for epoch in range(state.epoch, epochs):
        if state.done:
            break
        order = epoch_order(n, seed, epoch) if shuffle else np.arange(n)
        if progress:
            progress("epoch_start", {"epoch": epoch, "epochs": epochs, "steps": steps})
        total, per_loss, count, t0 = 0.0, {}, 0, time.perf_counter()
        s = 0
        while s < steps:
            full = (s + 1) * batch <= n
            if full and not images:  # whole batches: many steps per native call
                chunk = min(chunks.size, (n - s * batch) // batch, steps - s)
                idx = order[s * batch:(s + chunk) * batch]
                t = time.perf_counter()
                model._train_steps(arrays, idx, batch)
                chunks.took(chunk, time.perf_counter() - t)
            else:
                chunk, idx = 1, order[s * batch:(s + 1) * batch]
                feeds = {k: v[idx] for k, v in arrays.items()}
                feeds = A.augment_batch(feeds, images, cfg.augment, seed, model.step)
                model.train_step(**feeds)
            loss = sum(model.last_losses.values())
            if not math.isfinite(loss):
                history.stop_reason = f"the loss became {loss} at epoch {epoch + 1}"
                history.stopped_epoch = epoch
                return history
            total += loss * len(idx)
            for k, v in model.last_losses.items():
                per_loss[k] = per_loss.get(k, 0.0) + v * len(idx)
            count += len(idx)
            s += chunk
            if progress:
                progress("batch", {"epoch": epoch, "step": s, "steps": steps,
                                   "loss": total / count})
            if stop is not None and stop():
                break
        logs = {"loss": total / max(count, 1)}
        if len(per_loss) > 1:
            logs.update({k: v / max(count, 1) for k, v in per_loss.items()})
        if cfg.metrics:
            train_eval = evaluate_arrays(model, {k: v[:min(n, 4096)] for k, v in arrays.items()},
                                         batch, cfg.metrics, "the training data")
            logs.update({k: v for k, v in train_eval.items() if k in cfg.metrics})
        if val is not None:
            logs.update({f"val_{k}": v for k, v in
                         evaluate_arrays(model, val, batch, cfg.metrics,
                                         "the validation data").items()})
        logs["time"] = time.perf_counter() - t0
        history.record(epoch, logs)
        if progress:
            progress("epoch_end", {"epoch": epoch, "epochs": epochs, "logs": logs})
        if count < n - history.dropped_rows:  # interrupted mid-epoch: no checkpoint of it
            history.stop_reason = "interrupted"
            history.stopped_epoch = epoch
            break
        _track_best(state, logs, mode, es, model, epoch)
        state.epoch = epoch + 1
        if on_epoch is not None:
            on_epoch(model, state)
        if stop is not None and stop():
            history.stop_reason = "interrupted"
            history.stopped_epoch = epoch
            break
    if es is not None and state.best_arrays is not None:
        for k, a in state.best_arrays.items():
            if k in model.store.arrays:
                model.store.arrays[k][...] = a
        history.best_epoch = state.best_epoch
    return history


def check_count(value, what: str, lo: int = 1) -> int:
    """An integer given through the API (batch, epochs, seed): an int >= lo, or a UsageError."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo:
        kind = "a positive int" if lo == 1 else f"an int >= {lo}"
        raise UsageError(f"{what} must be {kind}, got {value!r}")
    return int(value)


def check_batch(batch) -> int:
    """A batch size given through the API: a positive int, or a UsageError."""
    return check_count(batch, "batch")


class _Chunks:
    """How many steps fit's next native `train_steps` call runs: grown or shrunk so one call
    takes about `target` seconds (progress and Ctrl-C stay responsive; Python is touched a few
    times a second at most). The results do not depend on it: n steps in one call equal n
    calls of one step, bit for bit."""

    def __init__(self, target: float = 0.25, start: int = 4, most: int = 1 << 16):
        self.target, self.size, self.most = target, start, most

    def took(self, steps: int, seconds: float) -> None:
        per_step = max(seconds, 1e-6) / max(steps, 1)
        self.size = max(1, min(self.most, int(self.target / per_step), 4 * self.size))


def _track_best(state: FitState, logs: dict, mode: str, es, model, epoch: int) -> None:
    """Update the best value and, with early stopping, the patience count and the stop."""
    if state.monitor not in logs:
        if es is None:
            state.improved = False
            return
        raise UsageError(f"early_stop monitors '{es.monitor}', which this run does not "
                         f"compute (it has: {', '.join(logs)}); add validation or the metric")
    value = logs[state.monitor]
    min_delta = es.min_delta if es else 0.0
    state.improved = _improved(value, state.best_value, mode, min_delta)
    if state.improved:
        state.best_value, state.best_epoch, state.waited = value, epoch, 0
        if es is not None:
            state.best_arrays = {k: a.copy() for k, a in model.store.arrays.items()}
    elif es is not None:
        state.waited += 1
        if state.waited > es.patience:
            h = state.history
            h.stopped_epoch = epoch
            h.stop_reason = (f"early stop: {es.monitor} did not improve for "
                             f"{es.patience + 1} epochs (best {state.best_value:.4g} at "
                             f"epoch {state.best_epoch + 1})")
            state.done = True
