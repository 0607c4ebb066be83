"""Metrics computed from predictions and targets after a pass over the data (NumPy).

Takes: the model's prediction array (class scores/probabilities [n, k], a single logit or
probability [n] / [n, 1] for binary problems, or regression values) and the targets. Gives: a float
per metric. Classification metrics use macro averaging over the classes present when there are
more than two classes; AUC is one-vs-rest for several classes. These agree with scikit-learn's
`accuracy_score`, `precision/recall/f1_score(average="binary"|"macro")`, `roc_auc_score`
(`multi_class="ovr"`), `mean_absolute_error` and `mean_squared_error` (checked in tests).
"""

from __future__ import annotations

import numpy as np

CLASSIFICATION = ("accuracy", "precision", "recall", "f1", "auc")
REGRESSION = ("mae", "mse")


def _labels_and_scores(pred: np.ndarray, y: np.ndarray):
    pred = np.asarray(pred, dtype=np.float64)
    y = np.asarray(y).reshape(-1).astype(np.int64)
    if pred.ndim == 1 or (pred.ndim == 2 and pred.shape[1] == 1):
        s = pred.reshape(-1)
        if s.min() < 0 or s.max() > 1:  # logits: turn into probabilities for AUC ranking
            s = 1 / (1 + np.exp(-s))
        return (s >= 0.5).astype(np.int64), y, np.stack([1 - s, s], axis=1)
    return pred.argmax(axis=1), y, pred


def _binary_counts(pred: np.ndarray, y: np.ndarray, c: int) -> tuple[int, int, int]:
    tp = int(np.sum((pred == c) & (y == c)))
    fp = int(np.sum((pred == c) & (y != c)))
    fn = int(np.sum((pred != c) & (y == c)))
    return tp, fp, fn


def _prf(pred: np.ndarray, y: np.ndarray, k: int) -> tuple[float, float, float]:
    classes = [1] if k <= 2 else sorted(set(np.unique(y)) | set(np.unique(pred)))
    ps, rs, fs = [], [], []
    for c in classes:
        tp, fp, fn = _binary_counts(pred, y, c)
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        ps.append(p)
        rs.append(r)
        fs.append(2 * p * r / (p + r) if p + r else 0.0)
    return float(np.mean(ps)), float(np.mean(rs)), float(np.mean(fs))


def _auc_binary(score: np.ndarray, pos: np.ndarray) -> float:
    n_pos = int(pos.sum())
    n_neg = len(pos) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_s = score[order]
    i = 0
    while i < len(score):  # average ranks over ties
        j = i
        while j + 1 < len(score) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def compute(names: tuple[str, ...] | list[str], pred: np.ndarray, y: np.ndarray) -> dict:
    """The named metrics of `pred` against `y`."""
    out: dict[str, float] = {}
    want_cls = [n for n in names if n in CLASSIFICATION]
    if want_cls:
        labels, truth, scores = _labels_and_scores(pred, y)
        k = scores.shape[1]
        if "accuracy" in want_cls:
            out["accuracy"] = float(np.mean(labels == truth))
        if {"precision", "recall", "f1"} & set(want_cls):
            p, r, f = _prf(labels, truth, k)
            out.update({n: v for n, v in (("precision", p), ("recall", r), ("f1", f))
                        if n in want_cls})
        if "auc" in want_cls:
            if k <= 2:
                out["auc"] = _auc_binary(scores[:, -1], truth == 1)
            else:
                present = [c for c in range(k) if np.any(truth == c)]
                out["auc"] = float(np.nanmean([_auc_binary(scores[:, c], truth == c)
                                               for c in present]))
    if "mae" in names or "mse" in names:
        diff = np.asarray(pred, np.float64).reshape(len(y), -1) - \
            np.asarray(y, np.float64).reshape(len(y), -1)
        if "mae" in names:
            out["mae"] = float(np.mean(np.abs(diff)))
        if "mse" in names:
            out["mse"] = float(np.mean(diff ** 2))
    return {n: out[n] for n in names if n in out}
