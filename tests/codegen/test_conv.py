"""conv2d forward, input gradient and weight gradient against direct loops on tiny inputs, for
both lowering strategies, stride/padding/rectangular kernels, fused bias+activation, threads."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import netc.kernels as K
from netc.compiler.codegen.conv import STRATEGIES
from netc.compiler.codegen.target import get_target


def rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def pad_input(x, ph, pw):
    return np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def direct_conv(x, w, stride, pad):
    (sh, sw), (ph, pw) = stride, pad
    xp = pad_input(x, ph, pw)
    n, c, h, wd = xp.shape
    co, _, kh, kw = w.shape
    oh, ow = (h - kh) // sh + 1, (wd - kw) // sw + 1
    y = np.zeros((n, co, oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            y[:, :, i, j] = np.einsum("nchw,ochw->no", win, w.astype(np.float64))
    return y


def direct_grads(x, w, dy, stride, pad):
    (sh, sw), (ph, pw) = stride, pad
    xp = pad_input(x, ph, pw)
    dxp = np.zeros_like(xp)
    dw = np.zeros(w.shape)
    co, _, kh, kw = w.shape
    for i in range(dy.shape[2]):
        for j in range(dy.shape[3]):
            win = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            g = dy[:, :, i, j].astype(np.float64)
            dw += np.einsum("no,nchw->ochw", g, win)
            dxp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw] += np.einsum(
                "no,ochw->nchw", g, w.astype(np.float64))
    return dxp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]], dw


CASES = [
    # (x shape, w shape, stride, pad)
    ((2, 1, 8, 8), (3, 1, 3, 3), (1, 1), (0, 0)),
    ((3, 2, 7, 9), (5, 2, 3, 2), (2, 1), (1, 0)),
    ((2, 3, 6, 6), (7, 3, 3, 3), (2, 2), (1, 1)),
    ((1, 2, 5, 5), (2, 2, 5, 5), (1, 1), (2, 2)),
    ((2, 4, 4, 4), (17, 4, 1, 1), (1, 1), (0, 0)),
]


def close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# Every case with the default lowering; the other lowering on the cases with padding and stride.
STRATEGY_CASES = [("im2col", *case) for case in CASES] + [
    (s, *CASES[i]) for s in STRATEGIES if s != "im2col" for i in (1, 2, 3)]


@pytest.mark.parametrize("strategy, xs, ws, stride, pad", STRATEGY_CASES)
def test_forward_and_weight_grad(rng, strategy, xs, ws, stride, pad):
    x, w = rand(rng, *xs), rand(rng, *ws)
    y = K.conv2d(x, w, stride, pad, strategy=strategy)
    close(y, direct_conv(x, w, stride, pad))
    dy = rand(rng, *y.shape)
    _, dw_ref = direct_grads(x, w, dy, stride, pad)
    close(K.conv2d_grad_weight(x, dy, w.shape, stride, pad, strategy=strategy), dw_ref)


@pytest.mark.parametrize("xs, ws, stride, pad", CASES)
def test_grad_input(rng, xs, ws, stride, pad):
    x, w = rand(rng, *xs), rand(rng, *ws)
    y_shape = direct_conv(x, w, stride, pad).shape
    dy = rand(rng, *y_shape)
    dx_ref, _ = direct_grads(x, w, dy, stride, pad)
    close(K.conv2d_grad_input(dy, w, x.shape, stride, pad), dx_ref)


@pytest.mark.parametrize("activation", [None, "relu", "tanh"])
def test_forward_bias_activation_epilogue(rng, activation):
    x, w, bias = rand(rng, 2, 3, 9, 9), rand(rng, 4, 3, 3, 3), rand(rng, 4)
    y = K.conv2d(x, w, 1, 1, bias=bias, activation=activation)
    ref = direct_conv(x, w, (1, 1), (1, 1)) + bias[None, :, None, None]
    ref = {None: ref, "relu": np.maximum(ref, 0), "tanh": np.tanh(ref)}[activation]
    close(y, ref)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_two_threads_bitwise_reproducible(rng, strategy):
    x, w = rand(rng, 5, 3, 10, 10), rand(rng, 6, 3, 3, 3)
    dy = rand(rng, 5, 6, 10, 10)
    ys = [K.conv2d(x, w, 1, 1, threads=2, strategy=strategy) for _ in range(3)]
    dws = [K.conv2d_grad_weight(x, dy, w.shape, 1, 1, threads=2, strategy=strategy)
           for _ in range(3)]
    dxs = [K.conv2d_grad_input(dy, w, x.shape, 1, 1, threads=2) for _ in range(3)]
    for runs in (ys, dws, dxs):
        assert all(np.array_equal(r, runs[0]) for r in runs[1:])
    dx_ref, dw_ref = direct_grads(x, w, dy, (1, 1), (1, 1))
    close(dws[0], dw_ref)
    close(dxs[0], dx_ref)
    close(ys[0], direct_conv(x, w, (1, 1), (1, 1)))
    # More threads than images: idle threads still meet the barrier and add zero partials.
    close(K.conv2d_grad_weight(x[:1], dy[:1], w.shape, 1, 1, threads=3), direct_grads(
        x[:1], w, dy[:1], (1, 1), (1, 1))[1])


def test_portable_target(rng):
    x, w = rand(rng, 2, 2, 7, 7), rand(rng, 3, 2, 3, 3)
    close(K.conv2d(x, w, 2, 1, target="portable"), direct_conv(x, w, (2, 2), (1, 1)))


@pytest.mark.parametrize("call, message", [
    (lambda x, w: K.conv2d(x, np.ascontiguousarray(w[:, :1])), "channels"),
    (lambda x, w: K.conv2d(x[0], w), "4 dimensions"),
    (lambda x, w: K.conv2d(x, w, pad=-1), "padding"),
    (lambda x, w: K.conv2d(x, np.zeros((2, 2, 9, 9), np.float32)), "does not fit"),
    (lambda x, w: K.conv2d(x, w, stride=(1, 2, 3)), "stride"),
    (lambda x, w: K.conv2d(x, w, bias=np.zeros(5, np.float32)), "bias has shape"),
    (lambda x, w: K.conv2d_grad_input(np.zeros((1, 2, 5, 5), np.float32), w, x.shape),
     "dy has shape"),
    (lambda x, w: K.conv2d(x, w, strategy="fft"), "strategy"),
])
def test_validation(rng, call, message):
    x, w = rand(rng, 1, 2, 6, 6), rand(rng, 2, 2, 3, 3)
    with pytest.raises(ValueError, match=message):
        call(x, w)


def test_avx512_ir_runs_here_through_legalisation(rng):
    host = get_target()
    t = dataclasses.replace(get_target("avx512"), cpu=host.cpu, features=host.features,
                            runnable=True)
    x, w = rand(rng, 3, 3, 9, 8), rand(rng, 17, 3, 3, 3)
    y = K.conv2d(x, w, 1, 1, target=t, threads=2)
    close(y, direct_conv(x, w, (1, 1), (1, 1)))
    dy = rand(rng, *y.shape)
    dx_ref, dw_ref = direct_grads(x, w, dy, (1, 1), (1, 1))
    close(K.conv2d_grad_weight(x, dy, w.shape, 1, 1, target=t, threads=2), dw_ref)
    close(K.conv2d_grad_input(dy, w, x.shape, 1, 1, target=t), dx_ref)
