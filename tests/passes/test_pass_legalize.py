"""Legalization for a backend: kernels the backend cannot emit whole are split before planning,
and the planned step still computes exactly what the graph does."""

import copy

import pytest
from pass_models import MODELS, assert_same, model_case

from netc.compiler.codegen.step_input import jit_fit
from netc.compiler.passes.execute_plan import execute_plan
from netc.compiler.passes.fuse_kernels import fuse_kernels
from netc.compiler.passes.legalize import legalize
from netc.compiler.pipeline import optimize


def _everything(g, k):
    return set(k.nodes)


def _sparse(g, k):
    """Anchored kernels keep only their main node; elementwise kernels every other node."""
    return {k.main} if k.main is not None else set(k.nodes[::2])


FITS = {"everything": _everything, "sparse": _sparse, "jit": jit_fit}


@pytest.mark.parametrize("fit", sorted(FITS))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_legalized_plan_computes_the_same_step(name, fit):
    g, data, ref = model_case(name)
    opt = optimize(copy.deepcopy(g), fit=FITS[fit], check=True)
    assert_same(ref, execute_plan(opt.plan, *data, seed=7, step=3))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fitting_everything_changes_nothing(name):
    g = optimize(copy.deepcopy(model_case(name)[0])).graph
    kg = fuse_kernels(g)
    out = legalize(kg, _everything)
    shape = [(k.kind, k.nodes, k.inputs, k.outputs, k.main, k.recomputed) for k in kg.kernels]
    assert [(k.kind, k.nodes, k.inputs, k.outputs, k.main, k.recomputed)
            for k in out.kernels] == shape


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sparse_fit_splits_every_fusion(name):
    g = optimize(copy.deepcopy(model_case(name)[0])).graph
    kg = fuse_kernels(g)
    out = legalize(kg, _sparse)
    assert any(len(k.nodes) > 1 for k in kg.kernels if k.main is not None)
    for k in out.kernels:
        assert not k.recomputed
        if k.main is not None:
            assert k.nodes == [k.main]
        else:
            assert len(k.nodes) <= max(len(j.nodes) for j in kg.kernels)
    # every value some kernel reads is stored by the kernel computing it
    owner = {i: k for k in out.kernels for i in k.nodes}
    for k in out.kernels:
        for x in k.inputs:
            if x in owner:
                assert x in owner[x].outputs
    assert len(out.kernels) > len(kg.kernels)
