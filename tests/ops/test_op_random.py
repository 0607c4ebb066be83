"""Philox4x32-10 known answers, the uniform/normal formulas, distributions, reproducibility."""

import math

import numpy as np
import pytest
from op_cases import LOC

from netc.compiler.interpret import interpret
from netc.compiler.ir import Graph
from netc.compiler.ops.leaves import rng_key_value
from netc.compiler.ops.random import cos_2pi_f32, log_f32, normal_f32, philox4x32, uniform_f32

# Random123 kat_vectors (philox4x32 10 rounds): counter, key -> output
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expect", KAT)
def test_philox_known_answers(counter, key, expect):
    assert tuple(int(w) for w in philox4x32(counter, key)) == expect


def test_philox_is_vectorised_per_counter():
    counters = np.array([0, 1, 2, 0xFFFFFFFF], dtype=np.uint32)
    words = philox4x32((counters, 5, 9, 0), (1, 2))
    for i, c in enumerate(counters):
        assert tuple(int(w[i]) for w in words) == tuple(
            int(w) for w in philox4x32((c, 5, 9, 0), (1, 2)))


def test_pinned_values():
    """Exact bits (seed 42, step 3, stream 5): native code must produce these."""
    key = rng_key_value(42, 3)
    assert [hex(v) for v in uniform_f32(key, 5, 4).view(np.uint32)] == [
        "0x3f0527f0", "0x3f3ac55d", "0x3d4cc460", "0x3e36b8e4"]
    assert [hex(v) for v in normal_f32(key, 5, 4).view(np.uint32)] == [
        "0xbecdda28", "0xbd6e03e3", "0xbf92ed71", "0x3fda4d3c"]


def test_formulas_against_float64():
    key = rng_key_value(42, 3)
    w0, w1, _, _ = philox4x32((np.arange(1000, dtype=np.uint32), 5, 3, 0), (42, 0))
    np.testing.assert_array_equal(uniform_f32(key, 5, 1000), (w0 >> 8) / 2.0 ** 24)
    u1 = ((w0 >> 8) + 1) / 2.0 ** 24
    u2 = (w1 >> 8) / 2.0 ** 24
    z64 = np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2)
    np.testing.assert_allclose(normal_f32(key, 5, 1000), z64, rtol=2e-6, atol=2e-6)


def test_float32_log_and_cos_accuracy():
    u = ((np.arange(1, 2 ** 24, 997, dtype=np.uint32)).astype(np.float32) * np.float32(2 ** -24))
    u = np.concatenate([u, np.float32([2 ** -24, 0.5, 0.70710677, 1.0])])
    err = np.abs(log_f32(u).astype(np.float64) - np.log(u.astype(np.float64)))
    assert np.all(err <= 2.5e-7 * np.maximum(1.0, np.abs(np.log(u.astype(np.float64)))))
    assert log_f32(np.float32([1.0]))[0] == 0.0
    v = u - np.float32(2 ** -24)  # [0, 1)
    err = np.abs(cos_2pi_f32(v).astype(np.float64) - np.cos(2 * np.pi * v.astype(np.float64)))
    assert err.max() < 3e-7
    assert cos_2pi_f32(np.float32([0.0]))[0] == 1.0


def _norm_cdf(x):
    return 0.5 * (1 + np.frompyfunc(math.erf, 1, 1)(x / math.sqrt(2)).astype(np.float64))


def _ks(sample, cdf):
    s = np.sort(sample.astype(np.float64))
    n = len(s)
    f = cdf(s)
    return max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n))


def test_distributions():
    n = 200_000
    key = rng_key_value(1234, 17)
    u = uniform_f32(key, 3, n)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 4 * math.sqrt(1 / 12 / n)
    assert abs(u.std() - math.sqrt(1 / 12)) < 2e-3
    assert _ks(u, lambda s: s) < 1.95 / math.sqrt(n)  # 0.1% critical value
    z = normal_f32(key, 4, n)
    assert abs(z.mean()) < 4 / math.sqrt(n)
    assert abs(z.std() - 1) < 5e-3
    assert _ks(z, _norm_cdf) < 1.95 / math.sqrt(n)
    assert np.all(np.isfinite(z)) and np.abs(z).max() < 6.5


def _draw(op, shape, stream, seed, step, dtype="f32"):
    g = Graph("r", float_dtype=dtype)
    node = g.add(op, [g.rng_key(LOC)], {"shape": shape, "stream": stream}, LOC)
    return interpret(g, {}, {}, {}, seed=seed, step=step, wanted=[node])[node.id]


@pytest.mark.parametrize("op", ["random_uniform", "random_normal"])
def test_reproducible_and_keyed(op):
    a = _draw(op, (4, 5), 2, seed=7, step=11)
    np.testing.assert_array_equal(a.view(np.uint32), _draw(op, (4, 5), 2, 7, 11).view(np.uint32))
    for other in [(2, 7, 12), (3, 7, 11), (2, 8, 11), (2, 7 + 2 ** 32, 11)]:
        b = _draw(op, (4, 5), other[0], seed=other[1], step=other[2])
        assert not np.array_equal(a, b), other
    # element i depends only on i: a prefix of a longer draw is the shorter draw
    np.testing.assert_array_equal(_draw(op, (7,), 2, 7, 11), _draw(op, (20,), 2, 7, 11)[:7])
    # f64 graphs get the same draws, widened
    np.testing.assert_array_equal(_draw(op, (4, 5), 2, 7, 11, "f64"), a.astype(np.float64))
