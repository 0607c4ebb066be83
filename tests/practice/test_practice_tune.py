"""`netc tune`: a grid of 4 runs 4 ranked trials reusing compiled models where shapes agree;
random and TPE samplers run the asked number of trials; bad flags exit 2, unknown keys exit 1."""

import sys

import pytest
from practice_helpers import example, json_lines, run_netc

from netc.compiler.errors import UsageError
from netc.tune import parse_grid, parse_random, split_top

MLP = example("digits_mlp.net")


def test_search_space_syntax():
    assert split_top("sgd(0.1, momentum = 0.9),adam(1e-3)") == ["sgd(0.1, momentum = 0.9)",
                                                               "adam(1e-3)"]
    assert parse_grid(["hidden=64,128", "lr=1e-3,3e-3"]) == {"hidden": [64, 128],
                                                             "lr": [1e-3, 3e-3]}
    assert parse_random(["lr=loguniform(1e-4, 1e-2)", "hidden=choice(32,64)",
                         "batch=int(16, 64)"]) == {"lr": ("loguniform", (1e-4, 1e-2)),
                                                   "hidden": ("choice", (32, 64)),
                                                   "batch": ("int", (16, 64))}


def test_grid_of_four_runs_four_ranked_trials(small_digits):
    res = run_netc("tune", MLP, "--data", small_digits, "--epochs", "2", "--json",
                   "--grid", "hidden=16,32", "--grid", "lr=1e-3,1e-2")
    assert res.returncode == 0, res.stderr
    (result,) = json_lines(res.stdout)
    trials = result["trials"]
    assert [t["rank"] for t in trials] == [1, 2, 3, 4]
    assert sorted(t["trial"] for t in trials) == [1, 2, 3, 4]
    assert {(t["params"]["hidden"], t["params"]["lr"]) for t in trials} == {
        (16, 1e-3), (16, 1e-2), (32, 1e-3), (32, 1e-2)}
    values = [t["value"] for t in trials]
    assert values == sorted(values) and len(set(values)) == 4  # lr changes the result
    assert result["metric"] == "val_loss" and result["compiled_models"] == 2
    assert result["best"] == trials[0]


def test_table_output_and_random_sampler(small_digits):
    res = run_netc("tune", MLP, "--data", small_digits, "--epochs", "1", "--sampler", "random",
                   "--trials", "3", "--random", "lr=loguniform(1e-4,1e-2)",
                   "--metric", "val_accuracy")
    assert res.returncode == 0, res.stderr
    table = res.stdout[res.stdout.index("rank"):].splitlines()
    assert table[0].split() == ["rank", "trial", "lr", "val_accuracy", "epochs"]
    assert [row.split()[0] for row in table[1:4]] == ["1", "2", "3"]
    accuracies = [float(row.split()[3]) for row in table[1:4]]
    assert accuracies == sorted(accuracies, reverse=True)  # accuracy: higher ranks first
    assert "3 trial(s)" in table[4]


def test_tpe_runs_the_asked_number_of_trials(small_digits):
    pytest.importorskip("optuna")
    res = run_netc("tune", MLP, "--data", small_digits, "--epochs", "1", "--sampler", "tpe",
                   "--trials", "3", "--random", "lr=loguniform(1e-4,1e-2)", "--json")
    assert res.returncode == 0, res.stderr
    (result,) = json_lines(res.stdout)
    assert result["sampler"] == "tpe" and len(result["trials"]) == 3


@pytest.mark.parametrize("flags, code, message", [
    (["--grid", "hiden=16,32"], 1, "no model parameter or train setting of that name"),
    (["--random", "lr=loguniform(1e-4"], 2, "lr=loguniform(1e-4: expected loguniform(LO, HI)"),
    (["--grid", "lr=(1e-4,1e-3"], 2, "unbalanced parentheses"),
    (["--random", "lr=loguniform(1e-2, 1e-4)"], 2, "need LO < HI"),
    (["--random", "lr=normal(0, 1)"], 2, "expected loguniform(LO, HI)"),
    (["--grid", "hidden"], 2, "--grid expects KEY=VALUES"),
    ([], 2, "needs a search space"),
    (["--sampler", "grid", "--random", "lr=uniform(0.1, 0.2)"], 2, "--sampler grid takes"),
])
def test_bad_tune_flags_are_clear_errors(flags, code, message):
    res = run_netc("tune", MLP, "--epochs", "1", *flags)
    assert res.returncode == code, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr


def test_tpe_without_optuna_names_the_extra(monkeypatch, capsys):
    from netc.cli import main

    monkeypatch.setitem(sys.modules, "optuna", None)  # import fails as when absent
    code = main(["tune", MLP, "--sampler", "tpe", "--random", "lr=uniform(0.1, 0.2)"])
    assert code == 1
    assert "--sampler tpe needs Optuna: pip install 'netc[tune]'" in capsys.readouterr().err


def test_a_key_given_twice_is_a_usage_error():
    # --grid hidden=2 --grid hidden=3 tuned hidden=3 only (the later replaced the earlier)
    with pytest.raises(UsageError, match="--grid hidden is given twice"):
        parse_grid(["hidden=2", "hidden=3"])
    with pytest.raises(UsageError, match="--random lr is given twice"):
        parse_random(["lr=uniform(0.1, 0.2)", "lr=uniform(0.3, 0.4)"])


def test_infinite_or_huge_random_bounds_are_usage_errors():
    # uniform(0, inf) exited 3 with "OverflowError: high - low range exceeds valid bounds" and
    # int(1, 1e30) with "ValueError: high is out of bounds for int64", at the first draw
    for text in ("lr=uniform(0, inf)", "lr=loguniform(1e-3, inf)", "hidden=int(1, 1e30)"):
        with pytest.raises(UsageError, match="the bounds must be finite"):
            parse_random([text])
