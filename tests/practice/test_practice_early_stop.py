"""Early stopping on a model made to overfit: it stops, says why, and restores the weights of the
best epoch bitwise."""

import numpy as np
from practice_helpers import example

import netc


def test_early_stop_restores_the_best_epoch_of_an_overfitting_model(digits):
    x, _ = digits
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 200).astype(np.int32)  # random labels: only memorization helps
    m = netc.compile(example("digits_mlp.net"), hidden=256)
    m.configure(lr=1e-2, l2=0.0, early_stop="monitor = val_loss, patience = 1", metrics=[])
    snapshots = []

    def progress(event, info):
        if event == "epoch_end":
            snapshots.append({k: v.copy() for k, v in m.params.items()})

    h = m.fit(x=x[:200], y=y, epochs=40, validation=0.3, progress=progress)
    assert h.stop_reason.startswith("early stop: val_loss did not improve for 2 epochs")
    assert h.stopped_epoch is not None and h.stopped_epoch < 39
    assert h.best_epoch == int(np.argmin(h["val_loss"]))
    assert h.best_epoch < h.stopped_epoch
    assert h["loss"][h.stopped_epoch] < h["loss"][h.best_epoch]  # still fitting the training set
    best = snapshots[h.best_epoch]
    for k, v in m.params.items():
        np.testing.assert_array_equal(v, best[k])
    assert any(not np.array_equal(snapshots[-1][k], best[k]) for k in best)
