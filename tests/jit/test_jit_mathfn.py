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
