"""The optimizer pipeline on the real training-step graph of every example: interpreting the
optimized graph, and executing its kernels inside the planned arena, give what the unoptimized
step gives (float64), and the plan is proven safe."""

import copy
import glob
import os

import numpy as np
import pytest

from netc.compiler.build_ir import build
from netc.compiler.initializers import initialize
from netc.compiler.interpret import run
from netc.compiler.passes.execute_plan import execute_plan
from netc.compiler.pipeline import optimize
from netc.compiler.train import build_step

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "*.net")))
SMALL = {"batch": 4, "hidden": 8, "latent": 2, "units": 5, "dim": 8, "heads": 2, "code": 3,
         "noise": 2, "T": 4, "head": 6}


def _values(g, rng):
    feeds = {}
    for name, node in g.inputs.items():
        t = node.type
        feeds[name] = (rng.integers(0, 2, t.shape).astype(np.int32) if t.dtype == "i32"
                       else rng.uniform(0.05, 0.95, t.shape))
    params = {n: initialize(p.attrs["init"], p.type.shape, np.float64, 0, n)
              for n, p in g.params.items()}
    states = {n: initialize(s.attrs["init"], s.type.shape,
                            np.int32 if s.type.dtype == "i32" else np.float64, 0, n)
              for n, s in g.states.items()}
    return feeds, params, states


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_optimized_step_equals_unoptimized(path):
    names = {p.name for p in build(path).program.models[build(path).model_name].params}
    b = build(path, mode="train", float_dtype="f64",
              overrides={k: v for k, v in SMALL.items() if k in names})
    build_step(b.graph, b.train, steps_per_epoch=3)
    feeds, params, states = _values(b.graph, np.random.default_rng(0))
    want = run(b.graph, feeds, params, states, seed=1, step=2)
    opt = optimize(copy.deepcopy(b.graph), check=True)
    got = run(opt.graph, feeds, params, states, seed=1, step=2)
    planned = execute_plan(opt.plan, feeds, {k: v.copy() for k, v in params.items()},
                           {k: v.copy() for k, v in states.items()}, seed=1, step=2)
    for result in (got, planned):
        for kind in ("outputs", "losses", "updates"):
            a, b_ = getattr(want, kind), getattr(result, kind)
            assert set(a) == set(b_), kind
            for k in a:
                np.testing.assert_allclose(b_[k], a[k], rtol=1e-9, atol=1e-12, err_msg=k)
