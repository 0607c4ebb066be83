"""The training loop behind `Model.fit`: data from the train block, validation, metrics, early
stopping, partial batches and progress reporting.

Takes: a Model, arrays (or the train block's data spec), and the resolved settings. Gives: a
`History` — per-epoch train loss (and each named loss of multi-step training), validation loss and
metrics, the epoch training stopped at and why, and the best epoch when early stopping restored it.

Invariants: the data order depends only on the seed (one NumPy generator seeded from the model's
seed, advanced once per epoch), so two runs with one seed see the same batches. A last partial batch
is trained through a second cached specialization when the model has a `batch` parameter and is
dropped (and reported in the history) when the batch size is fixed by the file. Validation runs in
eval mode over chunks of the training batch size; metrics are computed over all its rows at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .compiler.errors import DataError, UsageError
from .data import bind_arrays, load_arrays, split_validation
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


def model_arrays(model, spec: str, seed: int, *, with_targets: bool = True) -> dict:
    """Load a data spec (bundled name or path) and bind it to the model's inputs and targets."""
    raw, source = load_arrays(spec, seed)
    wanted = dict(model.inputs)
    if with_targets:
        wanted.update(model.targets)
    return bind_arrays(raw, wanted, source)


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


def evaluate_arrays(model, arrays: dict, batch: int, metrics: tuple[str, ...]) -> dict[str, float]:
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
        raise DataError(f"the validation data has {n} rows, fewer than the fixed batch of {fixed}")
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


def fit(model, arrays: dict | None, *, epochs: int, batch: int, validation, seed: int,
        shuffle: bool = True, progress: Progress | None = None,
        stop: Callable[[], bool] | None = None) -> History:
    cfg = model.config
    if arrays is None:
        if cfg.data is None:
            raise UsageError("no training data: pass arrays to fit(), or set data = ... in the "
                             "train block (or --data on the command line)")
        arrays = model_arrays(model, cfg.data, seed)
    else:
        wanted = {**model.inputs, **model.targets}
        arrays = bind_arrays(arrays, wanted, "fit()")
    val = None
    notes = []
    if not validation and cfg.early_stop is not None and cfg.early_stop.monitor.startswith("val_"):
        validation = DEFAULT_VALIDATION  # early stopping on a validation value needs some
        notes.append(f"early_stop monitors {cfg.early_stop.monitor}: holding out "
                     f"{DEFAULT_VALIDATION:.0%} of the data for validation")
    if isinstance(validation, str):
        val = model_arrays(model, validation, seed)
    elif validation:
        if not 0.0 < float(validation) < 1.0:
            raise UsageError(f"validation must be a fraction in [0, 1) or a path, got "
                             f"{validation!r}")
        arrays, val = split_validation(arrays, float(validation), seed,
                                       stratify=_stratify_key(model, arrays))
    n = len(next(iter(arrays.values())))
    fixed = model.fixed_batch
    if fixed:
        batch = fixed
    if n < batch and (fixed or n == 0):
        raise DataError(f"the training data has {n} rows, fewer than one batch of {batch}")
    steps = math.ceil(n / batch) if not fixed else n // batch
    model.steps_per_epoch = max(1, steps)
    history = History(dropped_rows=(n % batch) if fixed else 0, notes=notes)
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 0x66697400])
    es = cfg.early_stop
    best_value, best_epoch, best_arrays, waited = None, None, None, 0
    mode = _monitor_mode(es.monitor, es.mode) if es else "min"
    for epoch in range(epochs):
        order = rng.permutation(n) if shuffle else np.arange(n)
        if progress:
            progress("epoch_start", {"epoch": epoch, "epochs": epochs, "steps": steps})
        total, per_loss, count, t0 = 0.0, {}, 0, time.perf_counter()
        for s in range(steps):
            idx = order[s * batch:(s + 1) * batch]
            loss = model.train_step(**{k: v[idx] for k, v in arrays.items()})
            if not math.isfinite(loss):
                history.stop_reason = f"the loss became {loss} at epoch {epoch + 1}"
                history.stopped_epoch = epoch
                return history
            total += loss * len(idx)
            for k, v in model.last_losses.items():
                per_loss[k] = per_loss.get(k, 0.0) + v * len(idx)
            count += len(idx)
            if progress:
                progress("batch", {"epoch": epoch, "step": s + 1, "steps": steps,
                                   "loss": total / count})
            if stop is not None and stop():
                break
        logs = {"loss": total / max(count, 1)}
        if len(per_loss) > 1:
            logs.update({k: v / max(count, 1) for k, v in per_loss.items()})
        if cfg.metrics:
            train_eval = evaluate_arrays(model, {k: v[:min(n, 4096)] for k, v in arrays.items()},
                                         batch, cfg.metrics)
            logs.update({k: v for k, v in train_eval.items() if k in cfg.metrics})
        if val is not None:
            logs.update({f"val_{k}": v for k, v in
                         evaluate_arrays(model, val, batch, cfg.metrics).items()})
        logs["time"] = time.perf_counter() - t0
        history.record(epoch, logs)
        if progress:
            progress("epoch_end", {"epoch": epoch, "epochs": epochs, "logs": logs})
        if stop is not None and stop():
            history.stop_reason = "interrupted"
            history.stopped_epoch = epoch
            break
        if es is not None:
            if es.monitor not in logs:
                raise UsageError(f"early_stop monitors '{es.monitor}', which this run does not "
                                 f"compute (it has: {', '.join(logs)}); add validation or the "
                                 "metric")
            value = logs[es.monitor]
            if _improved(value, best_value, mode, es.min_delta):
                best_value, best_epoch, waited = value, epoch, 0
                best_arrays = {k: a.copy() for k, a in model.store.arrays.items()}
            else:
                waited += 1
                if waited > es.patience:
                    history.stopped_epoch = epoch
                    history.stop_reason = (f"early stop: {es.monitor} did not improve for "
                                           f"{es.patience + 1} epochs (best {best_value:.4g} at "
                                           f"epoch {best_epoch + 1})")
                    break
    if es is not None and best_arrays is not None:
        for k, a in best_arrays.items():
            if k in model.store.arrays:
                model.store.arrays[k][...] = a
        history.best_epoch = best_epoch
    return history
