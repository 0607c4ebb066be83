"""max/avg pooling and their gradients against direct loops: overlapping and non-overlapping
windows, rectangular windows, ties (first maximal element wins), threads."""

from __future__ import annotations

import numpy as np
import pytest

import netc.kernels as K
from netc.compiler.codegen.target import TARGET_NAMES, get_target


def rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def windows(shape, kernel, stride):
    n, c, h, w = shape
    (kh, kw), (sh, sw) = kernel, stride
    for i in range((h - kh) // sh + 1):
        for j in range((w - kw) // sw + 1):
            yield i, j, slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw)


def direct(kind, x, kernel, stride, dy=None):
    n, c, h, w = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    y = np.zeros((n, c, (h - kh) // sh + 1, (w - kw) // sw + 1))
    dx = np.zeros(x.shape)
    for i, j, rs, cs in windows(x.shape, kernel, stride):
        for a in range(n):
            for b in range(c):
                win = x[a, b, rs, cs].astype(np.float64)
                if kind == "max":
                    y[a, b, i, j] = win.max()
                    if dy is not None:
                        r, q = np.unravel_index(np.argmax(win), win.shape)  # first maximal
                        dx[a, b, rs.start + r, cs.start + q] += dy[a, b, i, j]
                else:
                    y[a, b, i, j] = win.mean()
                    if dy is not None:
                        dx[a, b, rs, cs] += dy[a, b, i, j] / (kh * kw)
    return y, dx


CASES = [((2, 3, 8, 8), (2, 2), (2, 2)), ((1, 2, 7, 9), (3, 3), (2, 2)),
         ((2, 1, 6, 7), (2, 3), (1, 2)), ((1, 1, 5, 5), (5, 5), (1, 1))]


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("shape, kernel, stride", CASES)
def test_forward_and_gradient(rng, kind, shape, kernel, stride):
    x = rand(rng, *shape)
    fwd = K.max_pool2d if kind == "max" else K.avg_pool2d
    bwd = K.max_pool2d_grad if kind == "max" else K.avg_pool2d_grad
    y = fwd(x, kernel, stride)
    dy = rand(rng, *y.shape)
    y_ref, dx_ref = direct(kind, x, kernel, stride, dy)
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(bwd(x, dy, kernel, stride), dx_ref, rtol=1e-6, atol=1e-6)


def test_max_ties_go_to_first_element_in_row_major_order():
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 0] = x[0, 0, 0, 1] = 5.0  # window (0,0): tie between (0,1) and (1,0)
    x[0, 0, 2:, 2:] = 3.0  # window (1,1): all four equal
    dy = np.ones((1, 1, 2, 2), np.float32)
    dx = K.max_pool2d_grad(x, dy, 2)
    assert dx[0, 0, 0, 1] == 1 and dx[0, 0, 1, 0] == 0
    assert dx[0, 0, 2, 2] == 1 and dx[0, 0, 2:, 2:].sum() == 1
    # windows of zeros: first element (top-left) gets it
    assert dx[0, 0, 0, 2] == 1 and dx[0, 0, 2, 0] == 1


def test_max_propagates_the_first_nan():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = np.nan
    y = K.max_pool2d(x, 2)
    assert np.isnan(y[0, 0, 0, 0]) and y[0, 0, 1, 1] == 15
    dx = K.max_pool2d_grad(x, np.ones_like(y), 2)
    assert dx[0, 0, 0, 1] == 1 and dx[0, 0, 1, 0] == 0 and dx[0, 0, 1, 1] == 0


def test_default_stride_and_threads_bitwise(rng):
    x = rand(rng, 3, 5, 12, 12)
    dy = rand(rng, 3, 5, 5, 5)
    ref = K.max_pool2d_grad(x, dy, 3, 2)
    for _ in range(3):
        assert np.array_equal(K.max_pool2d_grad(x, dy, 3, 2, threads=2), ref)
    assert K.avg_pool2d(x, 4).shape == (3, 5, 3, 3)


@pytest.mark.parametrize("call, message", [
    (lambda x: K.max_pool2d(x[0], 2), "4 dimensions"),
    (lambda x: K.max_pool2d(x, 9), "larger than the input"),
    (lambda x: K.avg_pool2d(x, 2, 0), "strides must be >= 1"),
    (lambda x: K.max_pool2d_grad(x, np.zeros((1, 1, 3, 3), np.float32), 2), "dy has shape"),
    (lambda x: K.max_pool2d(x.astype(np.float64), 2), "float32"),
])
def test_validation(rng, call, message):
    x = rand(rng, 1, 2, 6, 6)
    with pytest.raises(ValueError, match=message):
        call(x)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("shape, kernel, stride", [
    ((2, 3, 8, 8), (2, 2), (2, 2)),  # windows tile the input: no zeroing pass
    ((1, 2, 9, 9), (2, 2), (2, 2)),  # a leftover row and column
    ((1, 2, 8, 8), (2, 2), (3, 3)),  # gaps between windows
    # rows of at least 8 windows: the max gradient runs vectors of windows (_max_grad_rows)
    ((2, 3, 28, 28), (2, 2), (2, 2)),  # 14 windows: the last vector overlaps the first
    ((1, 2, 33, 35), (2, 2), (2, 2)),  # 17 windows and a leftover row and column
    ((1, 2, 11, 64), (2, 3), (3, 4)),  # gaps between rows and columns of windows
    ((1, 1, 4, 24), (3, 1), (1, 1)),  # overlapping rows: the scalar path
    ((1, 3, 5, 48), (1, 3), (1, 3)),  # one-row windows of three
    ((2, 3, 6, 63), (2, 2), (4, 4)),  # the last stride would pass the row's end: scalar path
])
@pytest.mark.parametrize("threads", [1, 2])
def test_gradient_writes_every_element(rng, kind, shape, kernel, stride, threads):
    """dx is written whole even over garbage (NaN): elements no window reaches become 0."""
    x = rand(rng, *shape)
    spec, nat = K._pool(kind, False, x.shape, kernel, stride, None)
    dy = rand(rng, spec.n, spec.c, spec.oh, spec.ow)
    dx = np.full(x.shape, np.nan, np.float32)
    K.run(nat, threads, x, dy, dx)
    np.testing.assert_allclose(dx, direct(kind, x, kernel, stride, dy)[1], rtol=1e-6, atol=1e-6)


def test_vector_rows_forward(rng):
    for shape, kernel, stride in [((2, 3, 28, 28), (2, 2), (2, 2)),
                                  ((1, 2, 11, 64), (2, 3), (3, 4)),
                                  ((1, 2, 10, 10), (2, 2), (2, 2))]:
        x = rand(rng, *shape)
        x[0, 0, 0, :5] = np.nan
        np.testing.assert_allclose(K.max_pool2d(x, kernel, stride),
                                   direct("max", x, kernel, stride)[0], rtol=1e-6)


def test_vector_rows_break_ties_and_nans_like_the_scalar_scan(rng):
    """The vectorized max gradient (rows of >= 8 disjoint windows) keeps the scan's rules: the
    first maximal tap in row-major order wins, the first NaN wins over numbers."""
    x = np.round(rand(rng, 2, 2, 6, 40)).astype(np.float32)  # small integers: many ties
    x[0, 0, 0, 3] = x[1, 1, 3, 16] = x[1, 1, 2, 17] = np.nan
    y = K.max_pool2d(x, 2)
    dy = rand(rng, *y.shape)
    dx = K.max_pool2d_grad(x, dy, 2)
    _, ref = direct("max", np.nan_to_num(x, nan=np.inf), (2, 2), (2, 2), dy)
    np.testing.assert_allclose(dx, ref, rtol=1e-6, atol=1e-6)
    assert dx[1, 1, 2, 17] == dy[1, 1, 1, 8] and dx[1, 1, 3, 16] == 0  # the first NaN


@pytest.mark.parametrize("target", [t for t in TARGET_NAMES if get_target(t).runnable])
def test_vector_rows_every_runnable_target(rng, target):
    """The vector width decides the groups (4, 8 or 16 windows): every width this host runs."""
    for shape, kernel, stride in [((2, 3, 6, 42), (2, 2), (2, 2)), ((1, 2, 7, 70), (2, 3), (3, 4))]:
        x = rand(rng, *shape)
        spec, nat = K._pool("max", True, x.shape, kernel, stride, target)
        y = np.full((spec.n, spec.c, spec.oh, spec.ow), np.nan, np.float32)
        K.run(nat, 2, x, y)
        np.testing.assert_allclose(y, direct("max", x, kernel, stride)[0], rtol=1e-6)
        spec, nat = K._pool("max", False, x.shape, kernel, stride, target)
        dy = rand(rng, spec.n, spec.c, spec.oh, spec.ow)
        dx = np.full(x.shape, np.nan, np.float32)
        K.run(nat, 2, x, dy, dx)
        np.testing.assert_allclose(dx, direct("max", x, kernel, stride, dy)[1], rtol=1e-6,
                                   atol=1e-6)
