"""Hostile Python API calls on a real (tiny) compiled model: clear netc errors, never a raw
Python exception, and values users naturally pass (NumPy scalars) accepted."""

import numpy as np
import pytest
from model_cases import TINY_NET

import netc
from netc.compiler.errors import DataError

TINY = TINY_NET


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "tiny.net"
    path.write_text(TINY)
    return str(path)


def test_numpy_scalars_are_numbers(tiny):
    # compile(hidden=np.int64(5)) said "model parameter 'hidden' must be a number, got int64"
    # and configure(lr=np.float32(0.1)) "lr must be a number, got np.float32(0.1)"
    m = netc.compile(tiny, backend="interpret", batch=np.int64(8), hidden=np.int32(5))
    assert m.model_params == {"batch": 8, "hidden": 5} and m.params["fc1.W"].shape == (3, 5)
    m.configure(lr=np.float32(0.5), epochs=np.int64(3), validation=np.float64(0.25))
    assert m.config.epochs == 3 and m.config.validation == 0.25
    assert m.config.optimizer.args["lr"] == pytest.approx(0.5)


def test_a_feed_of_the_wrong_rank_is_checked_against_the_declared_shape(tiny):
    # predict(x=x[0]) (one sample of 3 features) compiled a batch-3 graph and then said
    # "input 'x' should have shape [3, 3] (f32[3,3]), got [3]"
    m = netc.compile(tiny, backend="interpret")
    x = np.zeros((8, 3), np.float32)
    with pytest.raises(DataError, match=r"have shape \[8, 3\] \(f32\[8,3\]\), got \[3\]"):
        m.predict(x=x[0])
    assert m.predict(x=x[:5]).shape == (5, 2)  # another batch size still specializes


def test_tensor_maps_name_what_is_missing_and_refuse_non_numbers(tiny):
    # params["fc1.w"] raised a bare KeyError('fc1.w'); params["fc2.b"] = ["a", "b"] raised
    # numpy's ValueError "could not convert string to float"
    from netc.compiler.errors import UsageError
    m = netc.compile(tiny, backend="interpret")
    with pytest.raises(UsageError, match="no parameter named 'fc1.w' — did you mean 'fc1.W'"):
        m.params["fc1.w"]
    with pytest.raises(KeyError):  # still a Mapping: get, in and except KeyError work
        m.state["nope"]
    assert m.params.get("nope") is None and "fc1.W" in m.params
    for bad in (["a", "b"], [[1], [2, 3]], None):
        with pytest.raises(DataError, match="'fc2.b'"):
            m.params["fc2.b"] = bad


def test_float64_feeds_beyond_f32_are_refused(tiny):
    # predict(x=float64 array holding 1e39) returned [0.5, 0.5]: the check looked at the
    # float64 values, the model ran on the inf they became in f32
    m = netc.compile(tiny, backend="interpret")
    x = np.zeros((8, 3))
    x[0, 0] = 1e39
    with pytest.raises(DataError, match=r"NaN or infinity \(values beyond the f32 range\)"):
        m.predict(x=x)


@pytest.mark.parametrize("backend", ["interpret", "jit"])
def test_bool_arrays_are_zeros_and_ones_as_in_data_files(tiny, backend, tmp_path):
    # predict(x=bool array) said "should be f32[8,3], got an array of bool" while the same
    # array in a data file trained and evaluated
    m = netc.compile(tiny, backend=backend, seed=1)
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 3)) > 0.5, rng.random(8) > 0.5
    np.testing.assert_array_equal(m.predict(x=x), m.predict(x=x.astype(np.float32)))
    assert m.evaluate(x=x, y=y)["loss"] == m.evaluate(x=x.astype(np.float32),
                                                      y=y.astype(np.int32))["loss"]
    m.train_step(x=x, y=y)


def test_one_model_called_from_several_python_threads(tiny):
    # the JIT engine's arena (fed inputs, outputs) is shared by every call: threads predicting
    # on one model got each other's outputs (in the first few calls with threads=2)
    import threading
    m = netc.compile(tiny, threads=2)
    rng = np.random.default_rng(0)
    xs = [rng.random((8, 3), dtype=np.float32) for _ in range(4)]
    want = [m.predict(x=x) for x in xs]
    wrong = []

    def work(k):
        for _ in range(100):
            if not np.array_equal(m.predict(x=xs[k]), want[k]):
                wrong.append(k)
                return
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong


def test_fit_with_a_batch_the_file_fixes_otherwise(tmp_path):
    # fit(batch=4) (and netc train --batch 4) on a model whose inputs fix the batch at 8
    # silently trained with 8, while train_steps(batch=4) refused it
    from netc.compiler.errors import UsageError
    path = tmp_path / "fixed.net"
    path.write_text(TINY.replace("(batch = 8, hidden = 4)", "(hidden = 4)")
                    .replace("[batch, 3]", "[8, 3]").replace("[batch]", "[8]"))
    m = netc.compile(path, backend="interpret")
    x = np.zeros((16, 3), np.float32)
    y = np.zeros(16, np.int32)
    with pytest.raises(UsageError, match="this model fixes the batch at 8; got batch=4"):
        m.fit(epochs=1, batch=4, x=x, y=y)
    assert m.fit(epochs=1, batch=8, x=x, y=y).epochs == [0]
    # configure(batch=4) (netc train --set batch=4) was ignored the same way
    with pytest.raises(UsageError, match="this model fixes the batch at 8; got batch=4"):
        m.configure(batch=4)
    m.configure(batch=8, epochs=2)


@pytest.mark.parametrize("backend", ["jit", "interpret"])
@pytest.mark.parametrize("entry", ["predict", "train_step", "gradients", "evaluate"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_feeds_stop_the_call_before_it_runs(tiny, backend, entry, bad):
    """A NaN or an infinity anywhere in a float feed (the JIT finds it as its feed function
    copies the input in; the interpreter with NumPy) is a DataError at the input's
    declaration, and nothing ran: the step count and the parameters are unchanged. The last
    element too (the copy's scalar tail)."""
    m = netc.compile(tiny, backend=backend, batch=7)  # 21 floats: vector body and a tail
    rng = np.random.default_rng(1)
    x, y = rng.random((7, 3), dtype=np.float32), np.zeros(7, np.int32)
    m.train_step(x=x, y=y)
    before = {k: np.array(v) for k, v in m.params.items()}
    for at in ((0, 0), (6, 2)):
        xb = x.copy()
        xb[at] = bad
        feeds = {"x": xb} if entry == "predict" else {"x": xb, "y": y}
        with pytest.raises(DataError, match=r"input 'x' \(f32\[7,3\]\) contains NaN or "
                                            r"infinity$") as e:
            getattr(m, entry)(**feeds)
        assert e.value.loc is not None and e.value.loc.line == 2
    assert m.step == 1
    assert all(np.array_equal(before[k], v) for k, v in m.params.items())
    assert np.isfinite(m.train_step(x=x, y=y))  # the model still works
