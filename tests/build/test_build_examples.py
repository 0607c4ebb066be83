"""Every example builds in both modes and its forward pass runs in the interpreter."""

import glob
import os

import numpy as np
import pytest
from buildutil import run_graph

from netc.compiler.build_ir import build
from netc.compiler.verify import verify

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "*.net")))


def test_examples_exist():
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_example_builds_and_runs_forward(path, mode):
    b = build(path, mode=mode)
    verify(b.graph)
    rng = np.random.default_rng(0)
    feeds = {}
    for name, node in b.graph.inputs.items():
        t = node.type
        if t.dtype == "i32":
            feeds[name] = rng.integers(0, 2, t.shape).astype(np.int32)
        else:
            feeds[name] = rng.random(t.shape).astype(np.float32)
    r = run_graph(b.graph, feeds)
    assert r.outputs or r.losses
    for v in list(r.outputs.values()) + list(r.losses.values()):
        assert np.all(np.isfinite(v))
    if mode == "eval":
        assert not b.graph.updates
    assert b.train.model == b.model_name
