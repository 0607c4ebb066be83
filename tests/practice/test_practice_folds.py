"""`netc train --folds K`: K stratified folds, one line each, then mean ± std; --json objects;
every fold starts from the same fresh weights; bad K is a usage error."""

import numpy as np
import pytest
from practice_helpers import example, json_lines, run_netc

import netc
from netc.crossval import cross_validate, fold_of_rows

MLP = example("digits_mlp.net")


def test_stratified_folds_partition_the_rows_and_spread_each_class():
    y = np.repeat(np.arange(3), [30, 12, 9]).astype(np.int32)
    fold = fold_of_rows(len(y), 3, seed=0, stratify=y)
    assert sorted(np.bincount(fold)) == [17, 17, 17]
    for c in range(3):
        counts = np.bincount(fold[y == c], minlength=3)
        assert counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(fold, fold_of_rows(len(y), 3, seed=0, stratify=y))


def test_each_fold_starts_from_the_same_fresh_weights(digits):
    m = netc.compile(MLP, hidden=16)
    m.configure(metrics=[])
    initial = {k: v.copy() for k, v in m.params.items()}
    seen = []
    original_fit = m.fit

    def fit(**kw):
        seen.append({k: v.copy() for k, v in m.params.items()})
        return original_fit(**kw)

    m.fit = fit
    x, y = digits[0][:150], digits[1][:150]
    results = cross_validate(m, {"x": x, "y": y}, 3, epochs=1, batch=None, seed=0)
    assert [r["fold"] for r in results] == [1, 2, 3]
    for snapshot in seen:
        for k in initial:
            np.testing.assert_array_equal(snapshot[k], initial[k])


def test_folds_from_the_cli_text_and_json(small_digits):
    args = ["train", MLP, "--data", small_digits, "--epochs", "1", "--folds", "3"]
    res = run_netc(*args)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == ["fold 1/3", "fold 2/3", "fold 3/3"]
    assert lines[3].startswith("mean ± std over 3 folds: val_loss ")
    assert "val_accuracy" in lines[3] and " ± " in lines[3]
    res = run_netc(*args, "--json")
    assert res.returncode == 0, res.stderr
    objs = json_lines(res.stdout)
    assert [o.get("fold") for o in objs[:3]] == [1, 2, 3] and objs[3]["summary"] is True
    losses = [o["val_loss"] for o in objs[:3]]
    assert objs[3]["mean"]["val_loss"] == pytest.approx(np.mean(losses))
    assert objs[3]["std"]["val_loss"] == pytest.approx(np.std(losses))


@pytest.mark.parametrize("k, code, message", [
    ("1", 2, "--folds must be at least 2, got 1"),
    ("x", 2, "invalid int value"),
    ("5000", 1, "--folds 5000 needs at least 5000 rows"),
])
def test_bad_folds_are_clear_errors(small_digits, k, code, message):
    res = run_netc("train", MLP, "--data", small_digits, "--epochs", "1", "--folds", k)
    assert res.returncode == code and message in res.stderr and "Traceback" not in res.stderr
