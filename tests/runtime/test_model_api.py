"""The Model API over the interpreter backend, with hand-built graphs standing in for build_ir."""

import numpy as np
import pytest
from model_cases import blobs, builder, forward, sgd

from netc import Model
from netc.compiler.errors import DataError, UsageError
from netc.compiler.train_config import OPTIMIZERS, OptimizerSpec, TrainConfig


def _model(**kw) -> Model:
    return Model._from_builder(builder(**kw))


def test_description_and_live_parameter_views():
    m = _model()
    assert m.inputs == {"x": ((8, 4), "f64")} and m.targets == {"y": ((8,), "i32")}
    assert m.outputs == {"probs": ((8, 3), "f64")}
    assert set(m.params) == {"fc1.W", "fc1.b", "fc2.W", "fc2.b"} and set(m.state) == {"ema"}
    w = m.params["fc1.W"]
    x = blobs()["x"]
    m.params["fc1.W"][...] = 0  # hidden = relu(b) = 0 for every row: all rows predict alike
    p = m.predict(x=x)
    np.testing.assert_allclose(p, np.broadcast_to(p[0], p.shape))
    m.params["fc2.b"] = [1.0, 2.0, 3.0]  # assignment copies into the model's array
    np.testing.assert_allclose(m.predict(x=x)[0], np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum())
    m.train_step(**blobs())
    assert m.params["fc1.W"] is w  # updates are written in place


def test_predict_is_eval_mode_and_state_changes_only_in_training():
    m = _model(dropout=0.5)
    data = blobs()
    first = m.predict(x=data["x"])
    np.testing.assert_allclose(first, forward(m, data["x"]), rtol=1e-12)  # no dropout
    assert np.array_equal(m.predict(x=data["x"]), first)
    assert not m.state["ema"].any() and m.step == 0
    m.evaluate(**data)
    m.predict(**data)  # targets are ignored by predict
    assert not m.state["ema"].any()
    m.train_step(**data)
    assert m.state["ema"].any() and m.step == 1


def test_train_step_lowers_the_loss_and_matches_gradients():
    cfg = TrainConfig("mlp", optimizer=sgd(0.2), metrics=("accuracy",))
    m = _model(cfg=cfg)
    data = blobs()
    before = {k: v.copy() for k, v in m.params.items()}
    grads = m.gradients(**data)
    assert set(grads) == set(before)
    for k in before:  # gradients() changes nothing
        assert m.params[k].tobytes() == before[k].tobytes()
    first = m.train_step(**data)
    for k in before:  # plain SGD: one step is exactly w - lr * grad
        np.testing.assert_allclose(m.params[k], before[k] - 0.2 * grads[k], rtol=1e-12)
    losses = [m.train_step(**data) for _ in range(30)]
    assert losses[-1] < 0.5 * first
    assert m.evaluate(**data)["accuracy"] == 1.0


def test_evaluate_reports_loss_and_accuracy():
    m = _model()
    data = blobs(12, seed=3)
    ev = m.evaluate(**data)
    assert set(ev) == {"loss", "accuracy"}  # f1 comes with the metrics module
    probs = forward(m, data["x"])
    assert ev["accuracy"] == pytest.approx(np.mean(probs.argmax(-1) == data["y"]))
    assert ev["loss"] == pytest.approx(-np.mean(np.log(probs[np.arange(12), data["y"]])))


def test_batch_sizes_compile_once_each():
    calls = []
    m = Model._from_builder(builder(calls=calls))
    m.predict(x=blobs(5)["x"])
    m.predict(x=blobs(5, seed=1)["x"])
    m.train_step(**blobs(3))
    m.train_step(**blobs(3, seed=2))
    assert calls == [("eval", None), ("eval", 5), ("train", 3)]
    assert m.predict(x=blobs(5)["x"]).shape == (5, 3)


def test_engines_for_other_batch_sizes_are_bounded():
    # every batch size predicted on kept a compiled engine for good: a model predicting on
    # many row counts grew without bound
    from netc.model import OTHER_BATCHES
    calls = []
    m = Model._from_builder(builder(calls=calls))
    sizes = list(range(1, OTHER_BATCHES + 4))
    want = {n: forward(m, blobs(n)["x"]) for n in sizes}
    for n in sizes:
        np.testing.assert_allclose(m.predict(x=blobs(n)["x"]), want[n])
    assert len(m._engines) == 1 + OTHER_BATCHES
    m.predict(x=blobs(sizes[-1])["x"])  # recent: kept
    assert calls.count(("eval", sizes[-1])) == 1
    np.testing.assert_allclose(m.predict(x=blobs(1)["x"]), want[1])  # evicted: built again
    assert calls.count(("eval", 1)) == 2 and len(m._engines) == 1 + OTHER_BATCHES


def test_static_batch_must_match():
    m = _model(with_batch=False)
    with pytest.raises(DataError, match=r"'x' should have shape \[8, 4\]"):
        m.predict(x=blobs(5)["x"])


@pytest.mark.parametrize("feeds,pattern", [
    ({"x": blobs()["x"], "y": blobs()["y"], "z": 1}, "unknown input 'z'"),
    ({"x": blobs()["x"]}, "missing target 'y' \\(i32\\[8\\]\\)"),
    ({"x": blobs()["x"][:, :3], "y": blobs()["y"]}, "input 'x' should have shape \\[8, 4\\]"),
    ({"x": blobs()["x"], "y": blobs()["y"].astype(float)}, "target 'y' should be i32\\[8\\]"),
    ({"x": np.full((8, 4), "a"), "y": blobs()["y"]}, "input 'x' should be f64\\[8,4\\]"),
    ({"x": np.full((8, 4), np.nan), "y": blobs()["y"]}, "input 'x' .* NaN or infinity"),
    ({"x": blobs()["x"], "y": np.full(8, 2**40)}, "target 'y' .* outside the i32 range"),
    ({"x": [[1.0, 2.0], [3.0]], "y": blobs()["y"]}, "input 'x' .* unreadable value"),
])
def test_bad_feeds_are_data_errors_naming_the_input(feeds, pattern):
    m = _model(with_batch=False)
    before = {k: v.copy() for k, v in m.params.items()}
    with pytest.raises(DataError, match=pattern):
        m.train_step(**feeds)
    assert all(np.array_equal(m.params[k], v) for k, v in before.items()) and m.step == 0


def test_fit_returns_history_and_learns():
    cfg = TrainConfig("mlp", optimizer=OptimizerSpec("adam", dict(OPTIMIZERS["adam"], lr=0.05)),
                      metrics=("accuracy",), epochs=6, batch=8)
    m = _model(cfg=cfg)
    data = blobs(40, seed=5)
    h = m.fit(validation=0.2, **data)
    assert h.epochs == list(range(6)) and len(h["loss"]) == 6
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "time"}
    assert h.stop_reason == "completed all epochs"
    assert h["loss"][-1] < h["loss"][0]
    assert m.step == 6 * 4 and m.steps_per_epoch == 4


def test_fit_and_evaluate_on_no_rows_are_data_errors():
    # zero rows once reached np.concatenate([]) in the stratified split (an internal error),
    # and evaluating none said "the validation data has 0 rows, fewer than the fixed batch
    # of None"
    from netc.training import evaluate_arrays
    m = _model()
    data = blobs(0)
    with pytest.raises(DataError, match="the training data has no rows"):
        m.fit(validation=0.2, **data)
    with pytest.raises(DataError, match="^the data to evaluate has no rows$"):
        evaluate_arrays(m, data, 8, ("accuracy",))


def test_interpreter_gives_ieee_results_without_warnings(tmp_path):
    # x / 0, log(0), exp overflow and sqrt(-1) printed NumPy RuntimeWarnings to the user
    import warnings

    import netc
    p = tmp_path / "ieee.net"
    p.write_text("model m {\n    input x: f32[2, 3]\n    output d = x / 0\n"
                 "    output z = (x - x) / 0\n    output l = log(x - x)\n"
                 "    output e = exp(x * 1000)\n    output s = sqrt(x - 10)\n}\n")
    x = np.ones((2, 3), np.float32)
    before = np.geterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = netc.compile(p, backend="interpret").predict(x=x)
    want = {"d": np.inf, "z": np.nan, "l": -np.inf, "e": np.inf, "s": np.nan}
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], np.full((2, 3), value, np.float32))
    assert np.geterr() == before  # silenced around the primitives only, not for the caller
    with pytest.warns(RuntimeWarning):
        np.float32(1) / np.float32(0)


def test_ragged_lists_are_data_errors_in_every_entry_point():
    # a ragged list once escaped as numpy's ValueError (from np.shape or np.asarray)
    m = _model()
    ragged, y = [[1.0, 2.0], [3.0]], blobs()["y"]
    for call in (m.predict, m.train_step, m.gradients, m.evaluate):
        with pytest.raises(DataError, match="input 'x' .* unreadable value"):
            call(x=ragged, y=y)
    for call, where in ((m.train_steps, "train_steps"), (m.fit, "fit")):
        with pytest.raises(DataError, match=f"{where}\\(\\): array 'x' cannot be read"):
            call(x=ragged, y=y)


@pytest.mark.parametrize("kw,pattern", [
    ({"threads": 0}, "threads must be an integer from 1 to 256, got 0"),
    ({"threads": 1000}, "threads must be an integer from 1 to 256, got 1000"),
    ({"threads": "2"}, "threads must be an integer from 1 to 256, got '2'"),
    ({"threads": 2.0}, "threads must be an integer from 1 to 256, got 2.0"),
    ({"seed": -1}, "seed must be an int >= 0, got -1"),
    ({"seed": "a"}, "seed must be an int >= 0, got 'a'"),
])
def test_bad_threads_and_seed_are_usage_errors(kw, pattern):
    # threads=0 silently meant the default, threads="a" or 1000 and seed="a" failed later
    # with raw TypeError / ValueError
    with pytest.raises(UsageError, match=pattern):
        Model._from_builder(builder(), **kw)


@pytest.mark.parametrize("kw,pattern", [
    ({"epochs": 0}, "epochs must be a positive int, got 0"),
    ({"epochs": 1.5}, "epochs must be a positive int, got 1.5"),
    ({"epochs": 1, "seed": "a"}, "seed must be an int >= 0, got 'a'"),
    ({"epochs": 1, "seed": -1}, "seed must be an int >= 0, got -1"),
])
def test_bad_fit_epochs_and_seed_are_usage_errors(kw, pattern):
    # fit(epochs=1.5) and fit(seed="a") raised raw TypeErrors; epochs=0 or -1 silently trained
    # nothing (the train block and the CLI refuse both)
    m = _model()
    with pytest.raises(UsageError, match=pattern):
        m.fit(**kw, **blobs(16))


@pytest.mark.parametrize("kw,pattern", [
    # each raised a raw TypeError or AttributeError (a non-function at the first epoch)
    ({"validation": [1]}, r"validation must be a fraction in \[0, 1\), a path or a dict"),
    ({"data": 5}, r"fit\(data=...\) must be a file path"),
    ({"progress": 5}, r"fit\(progress=...\) must be a function, got int"),
    ({"stop": True}, r"fit\(stop=...\) must be a function, got bool"),
    ({"state": {}}, r"fit\(state=...\) must be a FitState, got dict"),
])
def test_bad_fit_arguments_are_usage_errors(kw, pattern):
    m = _model()
    with pytest.raises(UsageError, match=pattern):
        m.fit(epochs=1, **kw, **({} if "data" in kw else blobs(16)))


def test_bad_netc_threads_is_a_usage_error(monkeypatch):
    from netc.jit_engine import default_threads
    for value, pattern in (("abc", "NETC_THREADS must be a whole number of threads, got 'abc'"),
                           ("0", "NETC_THREADS must be an integer from 1 to 256, got 0")):
        monkeypatch.setenv("NETC_THREADS", value)
        with pytest.raises(UsageError, match=pattern):
            default_threads()
    monkeypatch.setenv("NETC_THREADS", " 3 ")
    assert default_threads() == 3


def test_unknown_backend_and_dtype():
    with pytest.raises(UsageError, match="use 'jit' or 'interpret'"):
        Model._from_builder(builder(), backend="cuda")
    import netc
    with pytest.raises(UsageError, match="float32"):
        netc.compile("m.net", dtype="float16")


def test_fit_and_train_steps_refuse_unknown_array_names():
    # fit(x=, y=, X2=) and train_steps(..., yy=) ignored the misspelt array silently, while
    # predict/train_step say "unknown input"
    m = _model()
    data = blobs(16)
    with pytest.raises(DataError, match="fit\\(\\): unknown input 'xx' — did you mean 'x'"):
        m.fit(epochs=1, xx=data["x"], **data)
    with pytest.raises(DataError, match="train_steps\\(\\): unknown input 'yy'"):
        m.train_steps(yy=data["y"], **data)
