"""Augmentation of image batches: flips and crops equal NumPy's at the drawn values, the draws
depend only on (seed, step), training with one seed is reproducible, and models without image
inputs get a clear error."""

import numpy as np
import pytest
from practice_helpers import example

import netc
from netc.augment import apply, augment_batch, draws
from netc.compiler.errors import UsageError
from netc.compiler.train_config import AugmentSpec

FLIP_H, FLIP_V = AugmentSpec("flip_horizontal"), AugmentSpec("flip_vertical")
CROP = AugmentSpec("random_crop", {"pad": 2})


def _images(n=16):
    return np.random.default_rng(5).random((n, 3, 6, 7)).astype(np.float32)


def test_flips_equal_numpys():
    x = _images()
    for spec, axis in ((FLIP_H, 3), (FLIP_V, 2)):
        (flip,) = draws([spec], len(x), seed=1, step=4)
        assert 0 < flip.sum() < len(x)  # some flipped, some not
        got = apply(x, [spec], [flip])
        for i in range(len(x)):
            np.testing.assert_array_equal(got[i], np.flip(x[i], axis - 1) if flip[i] else x[i])


def test_random_crop_equals_padding_then_slicing():
    x = _images()
    (offsets,) = draws([CROP], len(x), seed=1, step=4)
    assert offsets.min() >= 0 and offsets.max() <= 4 and len(np.unique(offsets)) > 1
    got = apply(x, [CROP], [offsets])
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    for i, (dy, dx) in enumerate(offsets):
        np.testing.assert_array_equal(got[i], padded[i, :, dy:dy + 6, dx:dx + 7])


def test_draws_are_keyed_by_seed_and_step():
    specs = [FLIP_H, CROP]
    batch = {"x": _images(), "y": np.arange(16, dtype=np.int32)}
    a = augment_batch(batch, ["x"], specs, seed=3, step=10)
    b = augment_batch(batch, ["x"], specs, seed=3, step=10)
    np.testing.assert_array_equal(a["x"], b["x"])
    assert a["y"] is batch["y"]  # only image inputs change
    assert not np.array_equal(a["x"], augment_batch(batch, ["x"], specs, 3, 11)["x"])
    assert not np.array_equal(a["x"], augment_batch(batch, ["x"], specs, 4, 10)["x"])


def _train_lenet(digits):
    m = netc.compile(example("lenet.net"), channels=2)
    m.configure(augment="[flip_horizontal, flip_vertical, random_crop(pad = 1)]", metrics=[])
    m.fit(x=digits[0][:192], y=digits[1][:192], epochs=2, validation=0.0)
    return m


def test_training_with_augmentation_is_reproducible_and_changes_the_result(digits):
    a, b = _train_lenet(digits), _train_lenet(digits)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    plain = netc.compile(example("lenet.net"), channels=2)
    plain.configure(metrics=[])
    plain.fit(x=digits[0][:192], y=digits[1][:192], epochs=2, validation=0.0)
    assert not np.array_equal(plain.params["conv1.W"], a.params["conv1.W"])


def test_augment_needs_an_image_input(digits):
    m = netc.compile(example("digits_mlp.net"))
    m.configure(augment="[flip_horizontal]")
    with pytest.raises(UsageError, match=r"augment needs an image input \[N, C, H, W\]"):
        m.fit(x=digits[0][:128], y=digits[1][:128], epochs=1)
