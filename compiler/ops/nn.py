"""Convolution and pooling primitives (NCHW), with the grad primitives their VJPs emit.

Takes: x[N, C, H, W]; conv weights w[O, C, KH, KW]; `stride`, `pad`, `k` as ints or pairs
(canonicalised to pairs).
Gives: conv2d, conv2d_grad_input, conv2d_grad_weight, max_pool2d, max_pool2d_grad,
max_pool2d_select, avg_pool2d, avg_pool2d_grad: shape rules, im2col/einsum references, VJPs.

Invariants: output size is (H + 2*pad - KH) // stride + 1 and must be >= 1; pooling has no padding;
max pooling sends each window's gradient to the first maximal element in row-major window order and
overlapping windows add; max_pool2d_select is the adjoint of max_pool2d_grad (reads, per window, the
value at that element), so the family is closed under VJP (double backward works); the conv grads
are bilinear and each other's adjoints.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import ShapeError
from ..ir import TensorType
from .base import Primitive, emit, pair, register, require_float, same_dtype


def _out(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def _windows(x: np.ndarray, k: tuple[int, int], s: tuple[int, int]) -> np.ndarray:
    """[N, C, OH, OW, KH, KW] view of the windows of an (already padded) x."""
    v = sliding_window_view(x, k, axis=(2, 3))
    return v[:, :, ::s[0], ::s[1]]


def _scatter_windows(shape, k, s, out_hw, contrib) -> np.ndarray:
    """Sum contrib(i, j) -> [N, C, OH, OW] into the window positions (i, j) of a zero `shape`."""
    dx = np.zeros(shape, dtype=np.result_type(contrib(0, 0)))
    oh, ow = out_hw
    for i in range(k[0]):
        for j in range(k[1]):
            rows = slice(i, i + s[0] * (oh - 1) + 1, s[0])
            cols = slice(j, j + s[1] * (ow - 1) + 1, s[1])
            dx[:, :, rows, cols] += contrib(i, j)
    return dx


def _pad_hw(x: np.ndarray, p: tuple[int, int]) -> np.ndarray:
    if p == (0, 0):
        return x
    return np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))


class _Spatial(Primitive):
    """Shared canonicalisation: stride and pad (conv) or k and stride (pool) become pairs."""

    keys: tuple[str, ...] = ("stride", "pad")  # checked in this order
    LOWEST = {"k": 1, "stride": 1, "pad": 0}
    ABOUT = {"k": "k (the kernel size)", "stride": "stride", "pad": "pad"}

    def canonicalize(self, in_types, attrs, float_dtype):
        for key in self.keys:
            attrs[key] = pair(self.name, self.ABOUT[key],
                              attrs.get(key, 1 if key == "stride" else 0), lo=self.LOWEST[key])
        for key in ("in_hw", "kernel"):  # the grad primitives' static sizes
            if key in attrs:
                attrs[key] = pair(self.name, key, attrs[key])
        return attrs

    def _images(self, *types: TensorType) -> None:
        for t in types:
            if t.rank != 4:
                raise ShapeError(f"{self.name}: expected a rank-4 NCHW tensor, got {t}")
            require_float(self.name, t)
        same_dtype(self.name, *types)

    def _out_hw(self, x: TensorType, k, attrs) -> tuple[int, int]:
        s, p = attrs["stride"], attrs.get("pad", (0, 0))
        hw = (_out(x.shape[2], k[0], s[0], p[0]), _out(x.shape[3], k[1], s[1], p[1]))
        if min(hw) < 1:
            raise ShapeError(f"{self.name}: a {k[0]}x{k[1]} window does not fit {x} "
                             f"with padding {p}")
        return hw


class Conv2d(_Spatial):
    name = "conv2d"
    arity = 2

    def infer(self, in_types, attrs):
        x, w = in_types
        self._images(x, w)
        if x.shape[1] != w.shape[1]:
            raise ShapeError(f"conv2d: input {x} has {x.shape[1]} channels but weights {w} "
                             f"expect {w.shape[1]}")
        oh, ow = self._out_hw(x, w.shape[2:], attrs)
        return TensorType((x.shape[0], w.shape[0], oh, ow), x.dtype)

    def reference(self, args, attrs, ctx):
        x, w = args
        win = _windows(_pad_hw(x, attrs["pad"]), w.shape[2:], attrs["stride"])
        return np.einsum("nchwij,ocij->nohw", win, w, optimize=True).astype(x.dtype)

    def vjp(self, g, node, ct):
        x, w = node.inputs
        a = node.attrs
        return [emit(g, "conv2d_grad_input", [ct, w], node.loc, stride=a["stride"], pad=a["pad"],
                     in_hw=x.type.shape[2:]),
                emit(g, "conv2d_grad_weight", [x, ct], node.loc, stride=a["stride"],
                     pad=a["pad"], kernel=w.type.shape[2:])]


class Conv2dGradInput(_Spatial):
    """dx from (ct[N, O, OH, OW], w[O, C, KH, KW]); `in_hw` = the input's (H, W)."""

    name = "conv2d_grad_input"
    arity = 2

    def infer(self, in_types, attrs):
        ct, w = in_types
        self._images(ct, w)
        x = TensorType((ct.shape[0], w.shape[1]) + attrs["in_hw"], ct.dtype)
        if (ct.shape[1],) + self._out_hw(x, w.shape[2:], attrs) != (w.shape[0],) + ct.shape[2:]:
            raise ShapeError(f"{self.name}: {ct} does not fit weights {w} and input {x}")
        return x

    def reference(self, args, attrs, ctx):
        ct, w = args
        (h, wd), p = attrs["in_hw"], attrs["pad"]
        shape = (ct.shape[0], w.shape[1], h + 2 * p[0], wd + 2 * p[1])
        dx = _scatter_windows(shape, w.shape[2:], attrs["stride"], ct.shape[2:],
                              lambda i, j: np.einsum("nohw,oc->nchw", ct, w[:, :, i, j]))
        return dx[:, :, p[0]:p[0] + h, p[1]:p[1] + wd].astype(ct.dtype)

    def vjp(self, g, node, ct_in):
        ct, w = node.inputs
        a = node.attrs
        return [emit(g, "conv2d", [ct_in, w], node.loc, stride=a["stride"], pad=a["pad"]),
                emit(g, "conv2d_grad_weight", [ct_in, ct], node.loc, stride=a["stride"],
                     pad=a["pad"], kernel=w.type.shape[2:])]


class Conv2dGradWeight(_Spatial):
    """dw from (x[N, C, H, W], ct[N, O, OH, OW]); `kernel` = (KH, KW)."""

    name = "conv2d_grad_weight"
    arity = 2

    def infer(self, in_types, attrs):
        x, ct = in_types
        self._images(x, ct)
        oh_ow = self._out_hw(x, attrs["kernel"], attrs)
        if ct.shape[0] != x.shape[0] or ct.shape[2:] != oh_ow:
            raise ShapeError(f"{self.name}: {ct} does not fit input {x}")
        return TensorType((ct.shape[1], x.shape[1]) + attrs["kernel"], x.dtype)

    def reference(self, args, attrs, ctx):
        x, ct = args
        win = _windows(_pad_hw(x, attrs["pad"]), attrs["kernel"], attrs["stride"])
        return np.einsum("nchwij,nohw->ocij", win, ct, optimize=True).astype(x.dtype)

    def vjp(self, g, node, v):
        x, ct = node.inputs
        a = node.attrs
        return [emit(g, "conv2d_grad_input", [ct, v], node.loc, stride=a["stride"], pad=a["pad"],
                     in_hw=x.type.shape[2:]),
                emit(g, "conv2d", [x, v], node.loc, stride=a["stride"], pad=a["pad"])]


class _Pool(_Spatial):
    keys = ("k", "stride")  # k first: a missing stride is k

    def canonicalize(self, in_types, attrs, float_dtype):
        if attrs.get("stride") is None:
            attrs["stride"] = attrs.get("k")
        return super().canonicalize(in_types, attrs, float_dtype)

    def _pooled(self, x: TensorType, attrs) -> TensorType:
        self._images(x)
        return TensorType(x.shape[:2] + self._out_hw(x, attrs["k"], attrs), x.dtype)

    def _argmax(self, x: np.ndarray, attrs) -> np.ndarray:
        win = _windows(x, attrs["k"], attrs["stride"])
        return np.argmax(win.reshape(win.shape[:4] + (-1,)), axis=-1)


class MaxPool2d(_Pool):
    name = "max_pool2d"

    def infer(self, in_types, attrs):
        return self._pooled(in_types[0], attrs)

    def reference(self, args, attrs, ctx):
        return _windows(args[0], attrs["k"], attrs["stride"]).max(axis=(4, 5))

    def vjp(self, g, node, ct):
        a = node.attrs
        return [emit(g, "max_pool2d_grad", [node.inputs[0], ct], node.loc, k=a["k"],
                     stride=a["stride"])]


class MaxPool2dGrad(_Pool):
    """dx from (x, ct): each window's ct goes to its first maximal element of x."""

    name = "max_pool2d_grad"
    arity = 2

    def infer(self, in_types, attrs):
        x, ct = in_types
        if self._pooled(x, attrs) != ct:
            raise ShapeError(f"{self.name}: {ct} does not fit the pooling of {x}")
        return x

    def reference(self, args, attrs, ctx):
        x, ct = args
        idx = self._argmax(x, attrs)
        kw = attrs["k"][1]
        return _scatter_windows(x.shape, attrs["k"], attrs["stride"], ct.shape[2:],
                                lambda i, j: ct * (idx == i * kw + j)).astype(x.dtype)

    def vjp(self, g, node, u):
        x, _ = node.inputs
        a = node.attrs
        return [None, emit(g, "max_pool2d_select", [x, u], node.loc, k=a["k"],
                           stride=a["stride"])]


class MaxPool2dSelect(_Pool):
    """From (x, u) of one shape: per window, u at the first maximal element of x."""

    name = "max_pool2d_select"
    arity = 2

    def infer(self, in_types, attrs):
        x, u = in_types
        if x != u:
            raise ShapeError(f"{self.name}: {x} and {u} differ")
        return self._pooled(x, attrs)

    def reference(self, args, attrs, ctx):
        x, u = args
        idx = self._argmax(x, attrs)
        win = _windows(u, attrs["k"], attrs["stride"])
        win = win.reshape(win.shape[:4] + (-1,))
        return np.take_along_axis(win, idx[..., None], axis=-1)[..., 0]

    def vjp(self, g, node, ct):
        x, _ = node.inputs
        a = node.attrs
        return [None, emit(g, "max_pool2d_grad", [x, ct], node.loc, k=a["k"],
                           stride=a["stride"])]


class AvgPool2d(_Pool):
    name = "avg_pool2d"

    def infer(self, in_types, attrs):
        return self._pooled(in_types[0], attrs)

    def reference(self, args, attrs, ctx):
        return _windows(args[0], attrs["k"], attrs["stride"]).mean(axis=(4, 5)).astype(
            args[0].dtype)

    def vjp(self, g, node, ct):
        a = node.attrs
        return [emit(g, "avg_pool2d_grad", [ct], node.loc, k=a["k"], stride=a["stride"],
                     in_hw=node.inputs[0].type.shape[2:])]


class AvgPool2dGrad(_Pool):
    """dx from ct: each window spreads ct / (kh * kw) over its elements; `in_hw` = (H, W)."""

    name = "avg_pool2d_grad"

    def infer(self, in_types, attrs):
        (ct,) = in_types
        self._images(ct)
        x = TensorType(ct.shape[:2] + attrs["in_hw"], ct.dtype)
        if self._pooled(x, attrs) != ct:
            raise ShapeError(f"{self.name}: {ct} does not fit the pooling of {x}")
        return x

    def reference(self, args, attrs, ctx):
        (ct,) = args
        k = attrs["k"]
        shape = ct.shape[:2] + attrs["in_hw"]
        share = ct / (k[0] * k[1])
        return _scatter_windows(shape, k, attrs["stride"], ct.shape[2:],
                                lambda i, j: share).astype(ct.dtype)

    def vjp(self, g, node, u):
        a = node.attrs
        return [emit(g, "avg_pool2d", [u], node.loc, k=a["k"], stride=a["stride"])]


for _p in (Conv2d(), Conv2dGradInput(), Conv2dGradWeight(), MaxPool2d(), MaxPool2dGrad(),
           MaxPool2dSelect(), AvgPool2d(), AvgPool2dGrad()):
    register(_p)
