"""Helpers for build_ir tests: build from text, run in the interpreter, expect a diagnostic."""

import numpy as np
import pytest

from netc.compiler.build_ir import build
from netc.compiler.errors import NetError
from netc.compiler.initializers import initialize
from netc.compiler.interpret import run


def build_text(text, tmp_path=None, name="m.net", **kw):
    path = str(tmp_path / name) if tmp_path is not None else name
    return build(path, text=text, **kw)


def init_params(graph, seed=0):
    dt = np.float64 if graph.float_dtype == "f64" else np.float32
    return {n: initialize(p.attrs["init"], p.type.shape, dt, seed, n)
            for n, p in graph.params.items()}


def init_states(graph, seed=0):
    dt = np.float64 if graph.float_dtype == "f64" else np.float32
    return {n: initialize(s.attrs["init"], s.type.shape, dt, seed, n)
            for n, s in graph.states.items()}


def run_graph(graph, feeds, params=None, states=None, **kw):
    return run(graph, feeds, params if params is not None else init_params(graph),
               states if states is not None else init_states(graph), **kw)


def expect_error(text, message, line=None, col=None, **kw):
    """Build `text` and assert one diagnostic contains `message` at line:col."""
    with pytest.raises(NetError) as info:
        build_text(text, **kw)
    d = info.value.diagnostics[0]
    assert message in d.message, d.message
    if line is not None:
        assert (d.loc.line, d.loc.col) == (line, col), (d.loc, d.message)
    return info.value
