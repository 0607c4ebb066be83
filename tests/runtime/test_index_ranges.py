"""Integer inputs that index something (embedding rows, class labels) are range-checked at the
boundary, the same way on every backend and entry point."""

from __future__ import annotations

import numpy as np
import pytest

import netc
from netc.compiler.errors import DataError

SOURCE = """
model tagger(batch = 4) {
    input  tok: i32[batch, 6]
    target y: i32[batch]
    h = tok -> Embedding(12, 5) as emb -> flatten -> Dense(3) as out
    output p = softmax(h)
    loss cross_entropy(h, y)
}
train tagger {
    optimizer = sgd(lr = 0.1)
    epochs = 1
    batch = 4
}
"""


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    path = tmp_path_factory.mktemp("ranges") / "tagger.net"
    path.write_text(SOURCE)
    return str(path)


def _feeds(n=4):
    rng = np.random.default_rng(0)
    return rng.integers(0, 12, (n, 6)).astype(np.int32), rng.integers(0, 3, n).astype(np.int32)


@pytest.mark.parametrize("backend", ["jit", "interpret"])
def test_good_indices_train(tagger, backend):
    m = netc.compile(tagger, backend=backend)
    tok, y = _feeds()
    assert np.isfinite(m.train_step(tok=tok, y=y))


@pytest.mark.parametrize("backend", ["jit", "interpret"])
@pytest.mark.parametrize("entry", ["predict", "train_step", "evaluate"])
def test_token_outside_the_vocabulary(tagger, backend, entry):
    m = netc.compile(tagger, backend=backend)
    tok, y = _feeds()
    tok[2, 4] = 12
    feeds = {"tok": tok} if entry == "predict" else {"tok": tok, "y": y}
    with pytest.raises(DataError, match=r"input 'tok' holds 12 at index \[2, 4\].*12 rows.*"
                                        r"\[0, 12\)") as e:
        getattr(m, entry)(**feeds)
    assert e.value.loc is not None and e.value.loc.line == 3
    assert m.step == 0


@pytest.mark.parametrize("backend", ["jit", "interpret"])
def test_label_outside_the_classes(tagger, backend):
    m = netc.compile(tagger, backend=backend)
    tok, y = _feeds()
    y[1] = -1
    with pytest.raises(DataError, match=r"target 'y' holds -1 at index \[1\].*3 classes"):
        m.train_step(tok=tok, y=y)


def test_train_steps_and_fit_check_the_whole_data(tagger):
    m = netc.compile(tagger)
    tok, y = _feeds(40)
    y[37] = 3
    with pytest.raises(DataError, match="target 'y' holds 3 at index \\[37\\]"):
        m.train_steps(tok=tok, y=y)
    with pytest.raises(DataError, match="target 'y' holds 3 at index \\[37\\]"):
        m.fit(tok=tok, y=y, validation=0)
    assert m.step == 0
