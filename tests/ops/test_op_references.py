"""References against independent computations: direct loops for conv and pooling on tiny inputs,
adjoint identities for the grad primitives, plain NumPy/math for the rest."""

import math

import numpy as np
import pytest
from op_cases import CASES, LOC, build_case

from netc.compiler.autodiff import grad
from netc.compiler.interpret import interpret
from netc.compiler.ir import Graph, TensorType
from netc.compiler.ops import PRIMITIVES, EvalContext

CTX = EvalContext(float_dtype="f64")
R = np.random.default_rng(7)


def ref(op, *args, **attrs):
    prim = PRIMITIVES[op]
    types = [TensorType(a.shape, {"f": "f64", "i": "i32", "b": "bool"}[a.dtype.kind])
             for a in args]
    attrs = prim.canonicalize(types, attrs, "f64")
    return prim.reference(list(args), attrs, CTX)


def conv_loop(x, w, stride, pad):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, pad
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    out = np.zeros((n, o, oh, ow))
    for b in range(n):
        for f in range(o):
            for i in range(oh):
                for j in range(ow):
                    out[b, f, i, j] = np.sum(xp[b, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
                                             * w[f])
    return out


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


@pytest.mark.parametrize("i", range(len(CASES["conv2d"])))
def test_conv2d_against_direct_loops(i):
    x, w = CASES["conv2d"][i].make(np.random.default_rng(i))
    attrs = CASES["conv2d"][i].attrs
    stride, pad = _pair(attrs.get("stride", 1)), _pair(attrs.get("pad", 0))
    got = ref("conv2d", x, w, stride=stride, pad=pad)
    np.testing.assert_allclose(got, conv_loop(x, w, stride, pad), rtol=1e-12, atol=1e-12)
    # the grad primitives are the adjoints: <conv(x, w), c> = <x, gi(c, w)> = <w, gw(x, c)>
    c = R.normal(size=got.shape)
    gi = ref("conv2d_grad_input", c, w, stride=stride, pad=pad, in_hw=x.shape[2:])
    gw = ref("conv2d_grad_weight", x, c, stride=stride, pad=pad, kernel=w.shape[2:])
    lhs = np.sum(got * c)
    assert np.sum(x * gi) == pytest.approx(lhs, rel=1e-10)
    assert np.sum(w * gw) == pytest.approx(lhs, rel=1e-10)
    # and grad_weight directly: dw[o, c, i, j] = sum_n,h,w ct * xpad window
    gw_loop = np.zeros_like(w)
    for idx in np.ndindex(*w.shape):
        e = np.zeros_like(w)
        e[idx] = 1.0
        gw_loop[idx] = np.sum(conv_loop(x, e, stride, pad) * c)
    np.testing.assert_allclose(gw, gw_loop, rtol=1e-10, atol=1e-12)


def pool_loop(x, k, s, kind):
    n, c, h, w = x.shape
    oh, ow = (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1
    out = np.zeros((n, c, oh, ow))
    for b, ch, i, j in np.ndindex(n, c, oh, ow):
        win = x[b, ch, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]]
        out[b, ch, i, j] = win.max() if kind == "max" else win.mean()
    return out


def max_pool_grad_loop(x, ct, k, s):
    dx = np.zeros_like(x)
    for b, ch, i, j in np.ndindex(*ct.shape):
        best = None
        for di in range(k[0]):  # row-major window order; the first maximum wins
            for dj in range(k[1]):
                v = x[b, ch, i * s[0] + di, j * s[1] + dj]
                if best is None or v > best[0]:
                    best = (v, di, dj)
        dx[b, ch, i * s[0] + best[1], j * s[1] + best[2]] += ct[b, ch, i, j]
    return dx


@pytest.mark.parametrize("x,k,s", [
    (R.normal(size=(2, 2, 4, 4)), (2, 2), (2, 2)),
    (R.normal(size=(1, 2, 5, 4)), (3, 2), (1, 1)),   # overlapping windows
    (np.ones((1, 1, 3, 3)), (2, 2), (1, 1)),          # all ties
    (np.round(R.normal(size=(1, 1, 5, 5))), (3, 3), (2, 1)),  # some ties, overlap
])
def test_pooling_against_direct_loops(x, k, s):
    y = ref("max_pool2d", x, k=k, stride=s)
    np.testing.assert_array_equal(y, pool_loop(x, k, s, "max"))
    np.testing.assert_allclose(ref("avg_pool2d", x, k=k, stride=s), pool_loop(x, k, s, "avg"))
    ct = R.normal(size=y.shape)
    dx = ref("max_pool2d_grad", x, ct, k=k, stride=s)
    np.testing.assert_allclose(dx, max_pool_grad_loop(x, ct, k, s), rtol=1e-12)
    u = R.normal(size=x.shape)  # select is the adjoint of max_pool2d_grad in its ct argument
    sel = ref("max_pool2d_select", x, u, k=k, stride=s)
    assert np.sum(sel * ct) == pytest.approx(np.sum(u * dx), rel=1e-10)
    da = ref("avg_pool2d_grad", ct, k=k, stride=s, in_hw=x.shape[2:])
    assert np.sum(da * u) == pytest.approx(np.sum(ref("avg_pool2d", u, k=k, stride=s) * ct),
                                           rel=1e-10)


def test_slice_matches_python_indexing_and_slice_grad_is_its_adjoint():
    x = R.normal(size=(5, 6, 3))
    attrs = dict(starts=(4, 1, None), stops=(None, -1, None), steps=(-2, 2, -1))
    y = ref("slice", x, **attrs)
    np.testing.assert_array_equal(y, x[4::-2, 1:-1:2, ::-1])
    c = R.normal(size=y.shape)
    back = ref("slice_grad", c, in_shape=x.shape, **attrs)
    assert np.sum(back * x) == pytest.approx(np.sum(c * y))
    assert np.count_nonzero(back) == c.size


def test_gather_scatter_add_and_one_hot():
    table = R.normal(size=(5, 3))
    idx = np.array([[0, 4, 0], [2, 2, 1]], dtype=np.int32)
    out = ref("gather", table, idx)
    for i, j in np.ndindex(*idx.shape):
        np.testing.assert_array_equal(out[i, j], table[idx[i, j]])
    upd = R.normal(size=(2, 3, 3))
    acc = np.zeros((5, 3))
    for i, j in np.ndindex(*idx.shape):
        acc[idx[i, j]] += upd[i, j]
    np.testing.assert_allclose(ref("scatter_add", upd, idx, n=5), acc)
    labels = np.array([2, 0, 1, 7], dtype=np.int32)
    oh = ref("one_hot", labels, n=3)
    expect = np.zeros((4, 3))
    for r, lab in enumerate(labels):
        if lab < 3:
            expect[r, lab] = 1.0
    np.testing.assert_array_equal(oh, expect)


def test_matmul_numpy_semantics():
    for sa, sb in [((4,), (4,)), ((4,), (2, 4, 3)), ((3, 4), (4,)), ((2, 1, 3, 4), (5, 4, 2))]:
        a, b = R.normal(size=sa), R.normal(size=sb)
        got = ref("matmul", a, b)
        a2 = a[None, :] if a.ndim == 1 else a  # NumPy: a row vector, b a column vector
        b2 = b[:, None] if b.ndim == 1 else b
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        a2 = np.broadcast_to(a2, batch + a2.shape[-2:])
        b2 = np.broadcast_to(b2, batch + b2.shape[-2:])
        expect = np.zeros(batch + (a2.shape[-2], b2.shape[-1]))
        for idx in np.ndindex(*batch):
            for i, j in np.ndindex(*expect.shape[-2:]):
                expect[idx + (i, j)] = sum(a2[idx + (i, t)] * b2[idx + (t, j)]
                                           for t in range(a2.shape[-1]))
        if a.ndim == 1:
            expect = expect[..., 0, :]
        if b.ndim == 1:
            expect = expect[..., 0]
        np.testing.assert_allclose(got, expect, rtol=1e-12)
        assert got.shape == PRIMITIVES["matmul"].infer(
            [TensorType(sa, "f64"), TensorType(sb, "f64")], {}).shape


def test_elementwise_against_formulas():
    x = np.linspace(-3, 3, 13)
    np.testing.assert_allclose(ref("sigmoid", x), 1 / (1 + np.exp(-x)), rtol=1e-14)
    np.testing.assert_allclose(ref("erf", x), [math.erf(v) for v in x], rtol=1e-15)
    assert ref("erf", np.array(0.5)) == pytest.approx(0.5204998778130465, rel=1e-15)
    p = np.linspace(0.1, 4, 9)
    np.testing.assert_allclose(ref("rsqrt", p), p ** -0.5, rtol=1e-14)
    np.testing.assert_array_equal(ref("relu", x), np.where(x > 0, x, 0))
    assert ref("relu", x.astype(np.float32)).dtype == np.float32


def test_max_gradient_splits_ties_evenly():
    g = Graph("ties", float_dtype="f64")
    x = g.param("x", TensorType((2, 3), "f64"), LOC)
    loss = g.add("sum", [g.add("max", [x], {"axes": 1}, LOC)], None, LOC)
    gx = grad(g, loss, [x])[x.id]
    val = np.array([[1.0, 1.0, 0.5], [2.0, 0.0, 2.0]])
    out = interpret(g, {}, {"x": val}, {}, wanted=[gx])[gx.id]
    np.testing.assert_allclose(out, [[0.5, 0.5, 0.0], [0.5, 0.0, 0.5]])


def test_build_case_reference_types_in_f32():
    g, node, *_ = build_case("conv2d", CASES["conv2d"][0], float_dtype="f32")
    assert str(node.type) == "f32[2,4,3,3]"
