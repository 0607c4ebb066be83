"""Model.train_steps (many steps per call, batches gathered by index) and fit's use of it."""

from __future__ import annotations

import numpy as np
import pytest

import netc
from netc.compiler.errors import DataError, UsageError

SOURCE = """
model mlp(batch = 16, hidden = 24) {
    input  x: f32[batch, 64]
    target y: i32[batch]
    logits = x -> Dense(hidden) as fc1 -> relu -> dropout(0.2) -> Dense(10) as fc2
    output probs = softmax(logits)
    loss cross_entropy(logits, y)
}
train mlp {
    optimizer = sgd(lr = 0.05, momentum = 0.9)
    epochs = 2
}
"""


@pytest.fixture(scope="module")
def mlp_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("steps") / "mlp.net"
    path.write_text(SOURCE)
    return str(path)


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 1, (n, 64)).astype(np.float32),
            rng.integers(0, 10, n).astype(np.int32))


def _model(path, backend="jit"):
    return netc.compile(path, backend=backend, seed=5)


@pytest.mark.parametrize("backend", ["jit", "interpret"])
def test_train_steps_equals_step_by_step_with_dropout(mlp_file, backend):
    x, y = _data(80)
    index = np.random.default_rng(1).permutation(80)[:64]
    a, b = _model(mlp_file, backend), _model(mlp_file, backend)
    losses = []
    for s in range(4):
        rows = index[s * 16:(s + 1) * 16]
        losses.append(a.train_step(x=x[rows], y=y[rows]))
    mean = b.train_steps(index, x=x, y=y)
    assert a.step == b.step == 4
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k]), k
    for k in a.optimizer_state:
        assert np.array_equal(a.optimizer_state[k], b.optimizer_state[k]), k
    np.testing.assert_allclose(sum(mean.values()), np.mean(losses), rtol=1e-6)
    assert b.last_losses == mean


def test_train_steps_default_index_and_other_batch(mlp_file):
    x, y = _data(50)
    m = _model(mlp_file)
    m.train_steps(x=x, y=y)  # rows 0..47 in order: three steps of 16
    assert m.step == 3
    m.train_steps(np.arange(20), batch=10, x=x, y=y)  # a second specialization
    assert m.step == 5


@pytest.mark.parametrize("index, pattern", [
    (np.arange(15), "not a positive multiple of the batch 16"),
    (np.array([], dtype=np.int64), "not a positive multiple"),
    (np.arange(16) + 40, r"must lie in \[0, 50\)"),
    (-np.arange(16), r"must lie in \[0, 50\)"),
    (np.zeros((4, 4), dtype=np.int64), "1-D array of row numbers"),
    (np.linspace(0, 1, 16), "1-D array of row numbers"),
])
def test_train_steps_bad_index_is_a_data_error(mlp_file, index, pattern):
    x, y = _data(50)
    m = _model(mlp_file)
    with pytest.raises(DataError, match=pattern):
        m.train_steps(index, x=x, y=y)
    assert m.step == 0


def test_train_steps_bad_data_and_batch(mlp_file):
    x, y = _data(32)
    m = _model(mlp_file)
    with pytest.raises(DataError, match="'y'"):
        m.train_steps(x=x)
    bad = x.copy()
    bad[3, 3] = np.nan
    with pytest.raises(DataError, match="'x'"):
        m.train_steps(x=bad, y=y)
    with pytest.raises(UsageError, match="batch must be a positive int"):
        m.train_steps(batch=0, x=x, y=y)
    assert m.step == 0


def test_fit_through_native_chunks_equals_a_python_loop_of_steps(mlp_file):
    """fit runs whole batches through train_steps in chunks; the result is the plain loop's."""
    from netc.training import epoch_order

    x, y = _data(100)  # 6 whole batches of 16 and a partial one of 4 per epoch
    a = _model(mlp_file)
    chunks = []
    native = a._train_steps
    a._train_steps = lambda arrays, idx, batch: chunks.append(len(idx) // batch) or native(
        arrays, idx, batch)
    a.fit(x=x, y=y, epochs=2, batch=16, validation=0, seed=3)
    b = _model(mlp_file)
    for epoch in range(2):
        order = epoch_order(100, 3, epoch)
        for s in range(7):
            rows = order[s * 16:(s + 1) * 16]
            b.train_step(x=x[rows], y=y[rows])
    assert a.step == b.step == 14 and sum(chunks) == 12 and max(chunks) > 1, chunks
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k]), k


@pytest.mark.parametrize("batch", [0, -3, 2.5, True])
def test_fit_and_train_steps_refuse_a_bad_batch(mlp_file, batch):
    x, y = _data(32)
    m = _model(mlp_file)
    for call in (lambda: m.fit(x=x, y=y, epochs=1, batch=batch, validation=0),
                 lambda: m.train_steps(batch=batch, x=x, y=y)):
        with pytest.raises(UsageError, match="batch must be a positive int"):
            call()
    assert m.step == 0
