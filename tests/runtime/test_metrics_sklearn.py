"""runtime.metrics agree with scikit-learn's (skipped when scikit-learn is absent)."""

import numpy as np
import pytest

from netc.metrics import compute

sk = pytest.importorskip("sklearn.metrics")


def test_multiclass_against_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    scores = rng.random((200, 4)) + np.eye(4)[y] * 0.3
    scores /= scores.sum(1, keepdims=True)
    got = compute(["accuracy", "precision", "recall", "f1", "auc"], scores, y)
    pred = scores.argmax(1)
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    for name, fn in (("precision", sk.precision_score), ("recall", sk.recall_score),
                     ("f1", sk.f1_score)):
        assert got[name] == pytest.approx(fn(y, pred, average="macro", zero_division=0))
    assert got["auc"] == pytest.approx(sk.roc_auc_score(y, scores, multi_class="ovr"))


def test_binary_against_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    logit = rng.normal(size=300) + (y - 0.5) * 1.5
    got = compute(["accuracy", "precision", "recall", "f1", "auc"], logit[:, None], y)
    pred = (logit >= 0).astype(int)
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    assert got["precision"] == pytest.approx(sk.precision_score(y, pred))
    assert got["recall"] == pytest.approx(sk.recall_score(y, pred))
    assert got["f1"] == pytest.approx(sk.f1_score(y, pred))
    assert got["auc"] == pytest.approx(sk.roc_auc_score(y, logit))


def test_regression_against_sklearn():
    rng = np.random.default_rng(2)
    y, p = rng.normal(size=(50, 1)), rng.normal(size=(50, 1))
    got = compute(["mae", "mse"], p, y)
    assert got["mae"] == pytest.approx(sk.mean_absolute_error(y, p))
    assert got["mse"] == pytest.approx(sk.mean_squared_error(y, p))


def test_ties_in_auc():
    y = np.array([0, 1, 0, 1])
    s = np.array([0.5, 0.5, 0.2, 0.9])
    assert compute(["auc"], s, y)["auc"] == pytest.approx(sk.roc_auc_score(y, s))
