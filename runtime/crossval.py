"""K-fold cross-validation: `netc train FILE --folds K`.

Takes: a compiled model, its training data (the train block's, or --data) and K >= 2. Gives: per
fold, the validation loss and metrics of a model trained on the other K-1 folds; then the mean and
standard deviation of each over the folds. Text: one line per fold, then one "mean ± std" line;
`--json`: one object per fold (`{"fold": k, ...}`) and a summary object (`{"summary": true,
"mean": {...}, "std": {...}}`).

Invariants: folds are a partition of the rows, drawn from the seed alone; stratified (each class
spread evenly over the folds) when the model has one integer class target `i32[N]`. Every fold
starts from the same fresh initial weights (`Model.reinitialize`: the seed's initialization, zero
optimizer state; `--weights` and `init_from` applied again) and reuses the compiled graphs.
"""

from __future__ import annotations

import math

import numpy as np

from .compiler.errors import DataError, UsageError
from .runs import json_text
from .training import _stratify_key, evaluate_arrays

_KEY = 0x666F6C64  # "fold"


def fold_of_rows(n: int, k: int, seed: int, stratify: np.ndarray | None = None) -> np.ndarray:
    """The fold (0..k-1) of each of `n` rows; stratified by the class labels when given."""
    if k > n:
        raise DataError(f"--folds {k} needs at least {k} rows; the data has {n}")
    rng = np.random.default_rng([seed & 0xFFFFFFFF, _KEY])
    fold = np.empty(n, np.int64)
    if stratify is None:
        fold[rng.permutation(n)] = np.arange(n) % k
        return fold
    start = 0
    for c in np.unique(stratify):  # deal each class round-robin, continuing across classes
        idx = rng.permutation(np.flatnonzero(stratify == c))
        fold[idx] = (start + np.arange(len(idx))) % k
        start += len(idx)
    return fold


def cross_validate(model, arrays: dict, k: int, *, epochs: int | None, batch: int | None,
                   seed: int, weights: str | None = None) -> list[dict[str, float]]:
    """Train and validate one fresh model per fold; the validation results of each fold."""
    fold = fold_of_rows(len(next(iter(arrays.values()))), k, seed, _stratify_key(model, arrays))
    cfg = model.config
    size = batch or cfg.batch
    results = []
    for f in range(k):
        model.reinitialize()
        if weights:
            model.load_weights(weights, skip_unmatched=model.skip_unmatched,
                               kinds=("param", "state"))
        train = {n: a[fold != f] for n, a in arrays.items()}
        val = {n: a[fold == f] for n, a in arrays.items()}
        history = model.fit(epochs=epochs, batch=batch, validation=val, seed=seed, **train)
        logs = evaluate_arrays(model, val, size, cfg.metrics)
        results.append({"fold": f + 1, "epochs": len(history.epochs),
                        **{f"val_{n}": v for n, v in logs.items()}})
    return results


def summarize(results: list[dict]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and (population) standard deviation of every validation value over the folds."""
    keys = [n for n in results[0] if n.startswith("val_")]
    mean = {n: float(np.mean([r[n] for r in results])) for n in keys}
    std = {n: float(np.std([r[n] for r in results])) for n in keys}
    return mean, std


def cmd_folds(args, sets: dict) -> int:
    from .cli_train import _data_arrays, open_model

    k = args.folds
    if k < 2:
        raise UsageError(f"--folds must be at least 2, got {k}")
    if args.resume:
        raise UsageError("--folds cannot be combined with --resume")
    if not args.file:
        raise UsageError("netc train --folds K needs FILE")
    m = open_model(args, sets)
    seed = args.seed if args.seed is not None else m.config.seed
    arrays = _data_arrays(m, args, with_targets=True)
    results = cross_validate(m, arrays, k, epochs=args.epochs, batch=args.batch, seed=seed,
                             weights=args.weights)
    mean, std = summarize(results)
    for r in results:
        if args.json:
            print(json_text(r), flush=True)
        else:
            shown = ", ".join(f"{n} {v:.4f}" for n, v in r.items() if n.startswith("val_"))
            print(f"fold {r['fold']}/{k}: {shown} ({r['epochs']} epochs)", flush=True)
    if args.json:
        print(json_text({"summary": True, "folds": k, "mean": mean, "std": std}))
    else:
        shown = ", ".join(f"{n} {mean[n]:.4f} ± {std[n]:.4f}" for n in mean
                          if math.isfinite(mean[n]))
        print(f"mean ± std over {k} folds: {shown}")
    return 0
