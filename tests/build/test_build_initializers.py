"""Initializers: values keyed by (seed, name), in the tensor's dtype, and the same whether a tensor
is drawn in one piece or in chunks (a large parameter is never held in float64 as a whole)."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from netc.compiler import initializers as I

KINDS = [("normal", {"std": 0.3, "mean": 1.0}), ("uniform", {}), ("glorot_uniform", {}),
         ("glorot_normal", {}), ("he_uniform", {}), ("he_normal", {})]


def _whole(kind: str, args: dict, shape: tuple[int, ...], seed: int, name: str) -> np.ndarray:
    """The reference: one float64 draw of the whole tensor, then cast."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    fan_in, fan_out = I.fans(shape)
    glorot, he = math.sqrt(6.0 / (fan_in + fan_out)), math.sqrt(6.0 / fan_in)
    draw = {"normal": lambda: rng.normal(args["mean"], args["std"], shape),
            "uniform": lambda: rng.uniform(-0.05, 0.05, shape),
            "glorot_uniform": lambda: rng.uniform(-glorot, glorot, shape),
            "glorot_normal": lambda: rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), shape),
            "he_uniform": lambda: rng.uniform(-he, he, shape),
            "he_normal": lambda: rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)}[kind]
    return draw().astype(np.float32)


@pytest.mark.parametrize("kind,args", KINDS, ids=[k for k, _ in KINDS])
def test_chunked_draw_equals_one_draw(kind, args, monkeypatch):
    monkeypatch.setattr(I, "DRAW_CHUNK", 1000)  # many chunks and a ragged last one
    shape = (37, 101)
    got = I.initialize((kind, args), shape, np.float32, 7, "fc1.W")
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_array_equal(got, _whole(kind, args, shape, 7, "fc1.W"))


def test_values_depend_on_seed_and_name_only():
    a = I.initialize(("glorot_uniform", {}), (20, 30), np.float32, 1, "a.W")
    assert np.array_equal(a, I.initialize(("glorot_uniform", {}), (20, 30), np.float32, 1, "a.W"))
    assert not np.array_equal(a, I.initialize(("glorot_uniform", {}), (20, 30), np.float32, 2,
                                              "a.W"))
    assert not np.array_equal(a, I.initialize(("glorot_uniform", {}), (20, 30), np.float32, 1,
                                              "b.W"))
    limit = math.sqrt(6.0 / 50)
    assert np.abs(a).max() <= limit


@pytest.mark.parametrize("kind,args,value", [("zeros", {}, 0.0), ("ones", {}, 1.0),
                                             ("constant", {"value": 2.5}, 2.5)])
def test_constant_initializers_in_the_tensor_dtype(kind, args, value):
    for dtype in (np.float32, np.float64):
        for shape in ((), (3,), (2, 4)):
            a = I.initialize((kind, args), shape, dtype, 0, "s")
            assert a.dtype == dtype and a.shape == shape and np.all(a == value)


def test_orthogonal_rows_are_orthonormal():
    q = I.initialize(("orthogonal", {"gain": 1.0}), (6, 10), np.float64, 0, "rnn.U")
    np.testing.assert_allclose(q @ q.T, np.eye(6), atol=1e-12)
