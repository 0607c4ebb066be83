"""Interpret before == after: every pass on and off, on four models built from `.net` text."""

import copy

import pytest
from pass_models import MODELS, assert_same, model_case, reference

from netc.compiler.interpret import run
from netc.compiler.passes.check_plan import check_plan
from netc.compiler.passes.execute_plan import execute_plan
from netc.compiler.pipeline import SWITCHES, optimize

SETTINGS = [frozenset(), *(frozenset({s}) for s in SWITCHES), frozenset(SWITCHES)]


@pytest.mark.parametrize("disable", SETTINGS, ids=lambda s: "+".join(sorted(s)) or "all-on")
@pytest.mark.parametrize("name", sorted(MODELS))
def test_optimized_graph_and_plan_compute_the_same_step(name, disable):
    g, data, ref = model_case(name)
    opt = optimize(copy.deepcopy(g), disable=set(disable), check=True)
    # the optimized graph interpreted, and the kernels run through the planned arena
    assert_same(ref, run(opt.graph, *data, seed=7, step=3))
    assert_same(ref, execute_plan(opt.plan, *data, seed=7, step=3))
    check_plan(opt.plan)


def test_random_ops_keep_their_streams_and_values():
    g, data, _ = model_case("mlp")
    opt = optimize(copy.deepcopy(g))
    streams = sorted(n.attrs["stream"] for n in opt.graph.nodes_in_order()
                     if n.op == "random_uniform")
    assert streams == sorted(n.attrs["stream"] for n in g.nodes_in_order()
                             if n.op == "random_uniform") == [0]
    # a different step draws a different mask: the equality above is not vacuous
    other = run(copy.deepcopy(g), *data, seed=7, step=4)
    assert_same(other, execute_plan(opt.plan, *data, seed=7, step=4))
    with pytest.raises(AssertionError):
        assert_same(reference(g, data), other)


def test_optimization_shrinks_the_graphs():
    for name in MODELS:
        g, _, _ = model_case(name)
        opt = optimize(copy.deepcopy(g))
        assert len(opt.graph) < len(g)
        assert len(opt.kernels.kernels) < len(opt.graph) - len(opt.kernels.leaves)
