"""Composites and the built-in table against straightforward formulas (and PyTorch if present)."""

import math

import numpy as np
import pytest
from op_cases import LOC

from netc.compiler.autodiff import grad
from netc.compiler.errors import NetError, ShapeError
from netc.compiler.interpret import interpret
from netc.compiler.ir import Graph, TensorType
from netc.compiler.ops import composites as C
from netc.compiler.ops.builtins import BUILTIN_NAMES, BUILTINS, KINDS, is_builtin
from netc.compiler.verify import verify

R = np.random.default_rng(3)
ERF = np.frompyfunc(math.erf, 1, 1)


class Env:
    """A f64 graph whose float operands are params, so tests can evaluate and differentiate."""

    def __init__(self, mode="train", dtype="f64"):
        self.g = Graph("c", float_dtype=dtype, mode=mode)
        self.params, self.feeds = {}, {}

    def p(self, value):
        value = np.asarray(value, dtype=np.float64)
        name = f"p{len(self.params)}"
        self.params[name] = value
        return self.g.param(name, TensorType(value.shape, "f64"), LOC)

    def i(self, value):
        value = np.asarray(value, dtype=np.int32)
        name = f"i{len(self.feeds)}"
        self.feeds[name] = value
        return self.g.input(name, TensorType(value.shape, "i32"), LOC)

    def run(self, node, seed=0, step=0):
        verify(self.g)
        return interpret(self.g, self.feeds, self.params, {}, seed=seed, step=step,
                         wanted=[node])[node.id]


X = R.normal(size=(4, 5)) * 3
Y = R.normal(size=(4, 5))


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


FORMULAS = [
    ("softmax", lambda e, x: C.softmax(e.g, x, 0, LOC), lambda x: _softmax(x, 0)),
    ("log_softmax", lambda e, x: C.log_softmax(e.g, x, -1, LOC), lambda x: np.log(_softmax(x))),
    ("logsumexp", lambda e, x: C.logsumexp(e.g, x, (0, 1), False, LOC),
     lambda x: np.log(np.exp(x).sum())),
    ("logsumexp_keep", lambda e, x: C.logsumexp(e.g, x, 1, True, LOC),
     lambda x: np.log(np.exp(x).sum(1, keepdims=True))),
    ("mean", lambda e, x: C.mean(e.g, x, 0, False, LOC), lambda x: x.mean(0)),
    ("var", lambda e, x: C.var(e.g, x, -1, True, LOC), lambda x: x.var(-1, keepdims=True)),
    ("gelu", lambda e, x: C.gelu(e.g, x, LOC),
     lambda x: 0.5 * x * (1 + ERF(x / math.sqrt(2)).astype(float))),
    ("softplus", lambda e, x: C.softplus(e.g, x, LOC), lambda x: np.log1p(np.exp(x))),
    ("silu", lambda e, x: C.silu(e.g, x, LOC), lambda x: x / (1 + np.exp(-x))),
    ("elu", lambda e, x: C.elu(e.g, x, 0.7, LOC), lambda x: np.where(x > 0, x, 0.7 * np.expm1(x))),
    ("leaky_relu", lambda e, x: C.leaky_relu(e.g, x, 0.1, LOC),
     lambda x: np.where(x > 0, x, 0.1 * x)),
    ("clip", lambda e, x: C.clip(e.g, x, -1.0, 2.0, LOC), lambda x: np.clip(x, -1, 2)),
    ("flatten", lambda e, x: C.flatten(e.g, x, LOC), lambda x: x.reshape(4, -1)),
    ("l1", lambda e, x: C.l1(e.g, [x, x], LOC), lambda x: 2 * np.abs(x).sum()),
    ("l2", lambda e, x: C.l2(e.g, [x], LOC), lambda x: (x ** 2).sum()),
    ("mse", lambda e, x: C.mse(e.g, x, e.p(Y), LOC), lambda x: ((x - Y) ** 2).mean()),
    ("mae", lambda e, x: C.mae(e.g, x, e.p(Y), LOC), lambda x: np.abs(x - Y).mean()),
    ("huber", lambda e, x: C.huber(e.g, x, e.p(Y), 1.5, LOC), lambda x: np.where(
        np.abs(x - Y) <= 1.5, 0.5 * (x - Y) ** 2, 1.5 * (np.abs(x - Y) - 0.75)).mean()),
    ("bce", lambda e, x: C.binary_cross_entropy(e.g, x, e.p(Y > 0), LOC),
     lambda x: -((Y > 0) * np.log(1 / (1 + np.exp(-x)))
                 + (Y <= 0) * np.log(1 - 1 / (1 + np.exp(-x)))).mean()),
    ("layer_norm", lambda e, x: C.layer_norm_fn(e.g, x, e.p(np.arange(5.0)), e.p(np.ones(5)),
                                                1e-5, LOC),
     lambda x: (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
     * np.arange(5.0) + 1),
]


@pytest.mark.parametrize("name,build,formula", FORMULAS, ids=[f[0] for f in FORMULAS])
def test_composite_matches_formula(name, build, formula):
    e = Env()
    x = e.p(X)
    node = build(e, x)
    np.testing.assert_allclose(e.run(node), formula(X), rtol=1e-10, atol=1e-12)
    # the gradient exists and is finite (its correctness follows from the primitives' VJPs)
    if node.type.shape == ():
        gx = grad(e.g, node, [x])[x.id]
        assert np.all(np.isfinite(e.run(gx)))


def test_cross_entropy_and_stability():
    e = Env()
    logits = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]])
    labels = np.array([1, 2])
    x = e.p(logits)
    ce = C.cross_entropy(e.g, x, e.i(labels), LOC)
    lse = [1000.0, 3 + np.log(np.exp(-2) + np.exp(-1) + 1)]
    expect = np.mean([lse[0] - 0.0, lse[1] - 3.0])
    assert e.run(ce) == pytest.approx(expect, rel=1e-12)
    gx = e.run(grad(e.g, ce, [x])[x.id])
    onehot = np.eye(3)[labels]
    np.testing.assert_allclose(gx, (_softmax(logits) - onehot) / 2, atol=1e-12)
    big = C.softplus(e.g, e.p([-800.0, 800.0]), LOC)
    np.testing.assert_allclose(e.run(big), [0.0, 800.0])
    bce = C.binary_cross_entropy(e.g, e.p([-800.0, 800.0]), e.p([1.0, 0.0]), LOC)
    assert e.run(bce) == pytest.approx(800.0)
    elu = C.elu(e.g, e.p([800.0, -800.0]), 1.0, LOC)
    xe = e.g.node(elu.inputs[1].id)
    np.testing.assert_allclose(e.run(grad(e.g, C.l1(e.g, [elu], LOC), [xe])[xe.id]), [1.0, 0.0])


def test_softplus_and_bce_gradients_at_zero_logits():
    # max(x, 0) was relu(x): with relu'(0) = abs'(0) = 0 the gradient at a logit of exactly 0
    # (zero weights and bias, a dead relu row) was 0 for softplus and -y for BCE, not 0.5, 0.5 - y
    e = Env()
    xs = np.array([-3.0, -1e-3, 0.0, 1e-3, 3.0, 30.0, -30.0])
    x = e.p(xs)
    sp = C.mean(e.g, C.softplus(e.g, x, LOC), None, False, LOC)
    sig = 1 / (1 + np.exp(-xs))
    np.testing.assert_allclose(e.run(grad(e.g, sp, [x])[x.id]), sig / len(xs), rtol=1e-12)
    ys = np.array([0.25, 1.0, 0.6, 0.0, 0.5, 1.0, 0.0])
    bce = C.binary_cross_entropy(e.g, x, e.p(ys), LOC)
    np.testing.assert_allclose(e.run(grad(e.g, bce, [x])[x.id]), (sig - ys) / len(xs), rtol=1e-12,
                               atol=1e-16)
    assert e.run(bce) == pytest.approx(np.mean(np.logaddexp(0, xs) - xs * ys), rel=1e-12)


def test_dropout_statistics_and_modes():
    e = Env()
    x = e.p(np.ones((200, 500)))
    y = C.dropout(e.g, x, 0.3, LOC)
    out = e.run(y, seed=1, step=0)
    kept = out != 0
    assert abs(kept.mean() - 0.7) < 4 * math.sqrt(0.21 / out.size)
    np.testing.assert_allclose(out[kept], 1 / 0.7)
    assert abs(out.mean() - 1.0) < 0.01
    assert not np.array_equal(out, e.run(y, seed=1, step=1))  # a fresh mask each step
    np.testing.assert_array_equal(out, e.run(y, seed=1, step=0))  # and it replays
    y2 = C.dropout(e.g, x, 0.3, LOC)  # a second call site gets its own stream
    assert not np.array_equal(out, e.run(y2, seed=1, step=0))
    ev = Env(mode="eval")
    xe = ev.p(np.ones(3))
    assert C.dropout(ev.g, xe, 0.5, LOC) is xe
    assert C.dropout(e.g, x, 0.0, LOC) is x
    for p in (1.0, -0.1, 1.5):
        with pytest.raises(ShapeError, match="dropout") as err:
            C.dropout(e.g, x, p, LOC)
        assert err.value.loc == LOC


def test_sources_and_shapes():
    e = Env(dtype="f64")
    np.testing.assert_array_equal(e.run(C.zeros(e.g, [2, 3], LOC)), np.zeros((2, 3)))
    np.testing.assert_array_equal(e.run(C.ones(e.g, [4], LOC)), np.ones(4))
    assert e.run(C.randn(e.g, [3, 2], LOC)).shape == (3, 2)
    r = e.run(C.rand(e.g, [1000], LOC))
    assert r.min() >= 0 and r.max() < 1
    a, b = R.normal(size=(2, 3)), R.normal(size=(2, 3))
    np.testing.assert_array_equal(e.run(C.stack(e.g, [e.p(a), e.p(b)], -1, LOC)),
                                  np.stack([a, b], -1))
    img = R.normal(size=(2, 3, 4, 5))
    np.testing.assert_allclose(e.run(C.global_avg_pool(e.g, e.p(img), LOC)), img.mean((2, 3)))
    oh = C.one_hot(e.g, e.i([0, 2]), 3, LOC)
    assert oh.type == TensorType((2, 3), "f64")


LANGUAGE_BUILTINS = [
    "exp", "log", "sqrt", "rsqrt", "abs", "sign", "neg", "tanh", "sigmoid", "relu",
    "leaky_relu", "elu", "gelu", "softplus", "silu", "clip", "maximum", "minimum", "pow",
    "where", "sum", "mean", "max", "min", "var", "logsumexp", "argmax", "reshape", "flatten",
    "transpose", "concat", "stack", "broadcast_to", "one_hot", "zeros", "ones", "softmax",
    "log_softmax", "conv2d", "max_pool2d", "avg_pool2d", "global_avg_pool", "dropout",
    "layer_norm_fn", "randn", "rand", "cross_entropy", "binary_cross_entropy", "mse", "mae",
    "huber", "l1", "l2",
]


def test_builtin_table_covers_the_language():
    missing = [n for n in LANGUAGE_BUILTINS if not is_builtin(n)]
    assert not missing
    assert list(BUILTIN_NAMES) == sorted(BUILTINS)
    for b in BUILTINS.values():
        assert all(p.kind in KINDS for p in b.params)
        assert not b.variadic or [p.kind for p in b.params] == ["tensors"]


def test_builtins_emit_and_validate_with_location():
    e = Env()
    x = e.p(X)
    call = LOC.__class__("m.net", 7, 9)
    s = BUILTINS["sum"].emit(e.g, {"x": x, "axis": [0, -1], "keepdims": True}, call)
    assert s.type.shape == (1, 1) and e.run(s)[0, 0] == pytest.approx(X.sum())
    assert BUILTINS["leaky_relu"].emit(e.g, {"x": x}, call).loc == call
    am = BUILTINS["argmax"].emit(e.g, {"x": x}, call)
    np.testing.assert_array_equal(e.run(am), X.argmax(-1))
    img = e.p(R.normal(size=(1, 2, 6, 6)))
    mp = BUILTINS["max_pool2d"].emit(e.g, {"x": img, "k": 2}, call)
    assert mp.type.shape == (1, 2, 3, 3)
    cv = BUILTINS["conv2d"].emit(e.g, {"x": img, "w": e.p(np.ones((3, 2, 3, 3))),
                                       "stride": [2, 1], "pad": 1}, call)
    assert cv.type.shape == (1, 3, 3, 6)
    for name, args, msg in [
        ("sum", {"x": x, "axis": 2}, "axis 2 is out of range for a tensor of rank 2"),
        ("softmax", {"x": x, "axis": -3}, "axis -3 is out of range"),
        ("dropout", {"x": x, "p": 1.0}, r"p must be in \[0, 1\)"),
        ("reshape", {"x": x, "shape": [3, 7]}, r"cannot reshape f64\[4,5\]"),
        ("max_pool2d", {"x": img, "k": 7}, "does not fit"),
        ("clip", {"x": x, "lo": 2.0, "hi": 1.0}, "above"),
        ("mse", {"pred": x, "y": e.p(np.ones((4, 1)))}, r"f64\[4,5\].*f64\[4,1\]"),
        ("cross_entropy", {"logits": x, "labels": e.i(np.zeros(5))}, "do not fit"),
        ("dropout", {"x": x}, "missing argument 'p'"),
    ]:
        with pytest.raises(NetError, match=msg) as err:
            BUILTINS[name].emit(e.g, args, call)
        assert err.value.loc == call, name


def test_against_torch_if_installed():
    torch = pytest.importorskip("torch")
    t = torch.tensor(X, dtype=torch.float64)
    e = Env()
    x = e.p(X)
    labels = np.array([0, 4, 2, 1])
    pairs = [
        (C.gelu(e.g, x, LOC), torch.nn.functional.gelu(t)),
        (C.softplus(e.g, x, LOC), torch.nn.functional.softplus(t)),
        (C.elu(e.g, x, 1.0, LOC), torch.nn.functional.elu(t)),
        (C.log_softmax(e.g, x, -1, LOC), torch.log_softmax(t, -1)),
        (C.cross_entropy(e.g, x, e.i(labels), LOC),
         torch.nn.functional.cross_entropy(t, torch.tensor(labels))),
        (C.huber(e.g, x, e.p(Y), 1.0, LOC),
         torch.nn.functional.huber_loss(t, torch.tensor(Y), delta=1.0)),
        (C.binary_cross_entropy(e.g, x, e.p(Y > 0), LOC),
         torch.nn.functional.binary_cross_entropy_with_logits(t, torch.tensor((Y > 0) * 1.0))),
    ]
    for node, expect in pairs:
        np.testing.assert_allclose(e.run(node), expect.numpy(), rtol=1e-10, atol=1e-12)
