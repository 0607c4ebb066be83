"""Accuracy of the generated transcendental functions (codegen/mathfn.py) over their whole float32
domain, against float64 NumPy: a dense sweep of magnitudes and signs through the JIT at vector
width, measured in float32 ulps of the true value (absolute error near zero crossings). Guards
the polynomial steps (FMA or not) and the range reductions, not just a few sample points."""

from __future__ import annotations

import math

import numpy as np
import pytest

from netc.compiler.errors import SourceLoc
from netc.compiler.ir import Graph, TensorType
from netc.engine import Store
from netc.jit_engine import JitEngine

LOC = SourceLoc("t.net", 1, 1)


def _sweep() -> np.ndarray:
    mags = np.geomspace(1e-30, 88.0, 20000)
    lin = np.linspace(-12.0, 12.0, 20001)
    x = np.concatenate([mags, -mags, lin, [0.0, -0.0, 1.0, -1.0, 0.5, 0.625, -0.625]])
    return x.astype(np.float32)


def _erf64(x: np.ndarray) -> np.ndarray:
    return np.array([math.erf(float(v)) for v in x])


# function, float64 reference, domain filter, max error in ulps of the result, absolute floor
CASES = {
    "exp": (np.exp, lambda x: x < 88.0, 2, 0.0),
    "log": (np.log, lambda x: x > 0, 2, 0.0),
    "tanh": (np.tanh, lambda x: np.isfinite(x), 3, 1e-37),
    "sigmoid": (lambda x: 1.0 / (1.0 + np.exp(-x)), lambda x: x > -87.0, 3, 0.0),
    "expm1": (np.expm1, lambda x: x < 88.0, 3, 1e-37),
    "log1p": (np.log1p, lambda x: x > -1.0, 3, 1e-37),
    "erf": (_erf64, lambda x: np.isfinite(x), 4, 1e-37),
}


def _ulps(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """|got - want| in units of the float32 spacing at want."""
    spacing = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - want) / np.maximum(spacing, np.finfo(np.float32).tiny)


@pytest.mark.parametrize("op", sorted(CASES))
def test_transcendental_accuracy_over_the_domain(op):
    ref, domain, max_ulps, floor = CASES[op]
    x = _sweep()
    x = x[domain(x.astype(np.float64))]
    g = Graph("t", float_dtype="f32")
    xin = g.input("x", TensorType(x.shape, "f32"), LOC)
    g.outputs["y"] = g.add(op, [xin], None, LOC)
    got = JitEngine(g, Store(0), threads=1).run("predict", {"x": x})["y"]
    want = ref(x.astype(np.float64))
    err = np.abs(got.astype(np.float64) - want)
    ulps = _ulps(got, want)
    bad = (ulps > max_ulps) & (err > floor)
    assert not bad.any(), (f"{op}: {int(bad.sum())} of {x.size} inputs off by more than "
                           f"{max_ulps} ulps, worst at x={x[bad][np.argmax(ulps[bad])]!r}: "
                           f"{float(ulps[bad].max()):.1f} ulps")


@pytest.mark.parametrize("op", ["exp", "sigmoid"])
def test_subnormal_results_are_not_flushed(op):
    """e^x and sigmoid(x) for x in [-103.9, -87.3] are subnormal floats: the JIT gives them
    (scaling by 2^n in two normal halves) to within a few ulps, as the interpreter does (its
    sigmoid is e^x / (1 + e^x) there, not 0.5 * (tanh(x / 2) + 1), which is 0 below -17);
    beyond, 0; above, unchanged."""
    from netc.compiler.interpret import interpret

    x = np.concatenate([np.linspace(-103.9, -87.3, 4001), [-104.5, -200.0, -1e30, -87.0, -20.0]]
                       ).astype(np.float32)
    g = Graph("t", float_dtype="f32")
    xin = g.input("x", TensorType(x.shape, "f32"), LOC)
    g.outputs["y"] = g.add(op, [xin], None, LOC)
    got = JitEngine(g, Store(0), threads=1).run("predict", {"x": x})["y"]
    ref = interpret(g, {"x": x}, {}, {}, seed=0, step=0, wanted=[g.outputs["y"]])
    interp = ref[g.outputs["y"].id]
    want = np.exp(x.astype(np.float64))  # sigmoid(x) = e^x (1 - e^x + ...) here
    if op == "sigmoid":
        want = want / (1.0 + want)
    denormal = float(np.finfo(np.float32).smallest_subnormal)
    for name, y in (("jit", got), ("interpreter", interp)):
        err = np.abs(y.astype(np.float64) - want)
        bad = err > np.maximum(3 * denormal, 4e-7 * want)
        assert not bad.any(), f"{op} ({name}) at x={x[bad][:3]}: {y[bad][:3]} vs {want[bad][:3]}"
    assert (got[:4001] > 0).sum() >= 4000 and got[4001] == 0 and got[4002] == 0
