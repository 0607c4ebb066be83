"""plan_memory and check_plan: reuse, in-place rules, pinned updates, and the arena figures."""

import copy
import dataclasses

import numpy as np
import pytest
from pass_models import LENET5, MLP_BIG, assert_same, step_graph

from netc.compiler.errors import InternalCompilerError, SourceLoc
from netc.compiler.interpret import run
from netc.compiler.ir import Graph, TensorType
from netc.compiler.passes import check_plan, fuse_kernels, plan_memory
from netc.compiler.passes.execute_plan import execute_plan
from netc.compiler.pipeline import optimize

L = SourceLoc("p.net", 1, 1)
F = TensorType((16, 16), "f64")


@pytest.mark.parametrize("name,text", [("mlp 784-512-256-10, batch 128", MLP_BIG),
                                       ("lenet-5, batch 64", LENET5)])
def test_arena_is_at_most_half_the_naive_sum(name, text):
    plan = optimize(step_graph(text, float_dtype="f32", grads_as_outputs=False),
                    check=True).plan
    mib = 1 << 20
    print(f"\n{name}: planned arena {plan.arena_peak / mib:.2f} MiB; naive sum of stored "
          f"values {plan.naive_arena / mib:.2f} MiB; unfused naive sum "
          f"{plan.naive_unfused / mib:.2f} MiB")
    assert plan.arena_peak <= plan.naive_unfused / 2
    assert plan.arena_peak < plan.naive_arena
    if text is MLP_BIG:
        assert plan.arena_peak <= plan.naive_arena / 2
    # every parameter is updated in place in its pinned buffer: no end-of-step copies
    g = plan.kernel_graph.graph
    assert not plan.commits
    for name_, upd in g.updates.items():
        assert plan.storage[upd.id] == plan.storage[g.params[name_].id]


def _chain_graph():
    g = Graph("c", float_dtype="f64")
    x = g.input("x", F, L)
    y = g.add("exp", [x], None, L)
    z = g.add("neg", [y], None, L)
    w = g.add("add", [z, y], None, L)
    g.outputs["w"] = g.add("mul", [w, w], None, L)
    return g, y, z, w


def test_no_in_place_reuse_of_a_buffer_still_needed_later():
    g, y, z, w = _chain_graph()
    plan = plan_memory(fuse_kernels(g, fuse=False))
    check_plan(plan)
    assert plan.storage[z.id] != plan.storage[y.id]  # y is read again by w
    assert plan.storage[w.id] in (plan.storage[y.id], plan.storage[z.id])  # both die at w
    assert any(v == w.id for _, _, v in plan.inplace)
    xv = np.random.default_rng(1).normal(size=F.shape)
    assert_same(run(g, {"x": xv}, {}), execute_plan(plan, {"x": xv}, {}))


def test_no_in_place_reuse_across_a_broadcast_or_a_gemm_operand():
    g = Graph("b", float_dtype="f64")
    x = g.input("x", F, L)
    s = g.add("sum", [x], {"axes": (0,), "keepdims": True}, L)
    row = g.add("exp", [s], None, L)
    a = g.add("exp", [x], None, L)
    g.outputs["m"] = g.add("matmul", [a, a], None, L)  # a dies here, but a gemm reads it all
    t = g.add("tanh", [row], None, L)
    big = g.add("broadcast_to", [t], {"shape": F.shape}, L)  # t dies here, read broadcast
    g.outputs["b"] = g.add("add", [big, g.add("neg", [x], None, L)], None, L)
    plan = plan_memory(fuse_kernels(g, fuse=False))
    check_plan(plan)
    # only same-shape, same-index steps reuse: exp over sum, tanh over exp, add over broadcast
    assert [(u, v) for _, u, v in plan.inplace] == [(s.id, row.id), (row.id, t.id),
                                                    (big.id, g.outputs["b"].id)]


def test_update_read_later_goes_through_a_commit():
    g = Graph("u", float_dtype="f64")
    p = g.param("p", F, L)
    upd = g.updates["p"] = g.add("mul", [p, g.const(0.5, "f64", L)], None, L)
    # reads the OLD p, whole, after the update kernel (it needs the update too: no reordering)
    g.outputs["late"] = g.add("matmul", [p, upd], None, L)
    plan = plan_memory(fuse_kernels(g, fuse=False))
    check_plan(plan)
    assert len(plan.commits) == 1
    pv = np.random.default_rng(2).normal(size=F.shape)
    assert_same(run(g, {}, {"p": pv}), execute_plan(plan, {}, {"p": pv}))


def test_naive_layout_without_reuse_has_no_sharing():
    g, *_ = _chain_graph()
    plan = plan_memory(fuse_kernels(g, fuse=False), inplace=False, reuse=False)
    check_plan(plan)
    assert plan.arena_peak == plan.naive_arena
    offsets = [b.offset for b in plan.buffers]
    assert len(offsets) == len(set(offsets))


def test_check_plan_catches_overlaps_hazards_and_misalignment():
    g, y, z, w = _chain_graph()
    good = plan_memory(fuse_kernels(g, fuse=False))
    check_plan(good)
    bad = copy.deepcopy(good)
    by, bz = bad.buffer_of(y.id), bad.buffer_of(z.id)
    bz.offset = by.offset  # both live at step 2
    with pytest.raises(InternalCompilerError, match="overlap"):
        check_plan(bad)
    bad = copy.deepcopy(good)
    bad.buffers[bad.storage[z.id]].offset += 8
    with pytest.raises(InternalCompilerError, match="aligned"):
        check_plan(bad)
    bad = copy.deepcopy(good)  # pretend z was written in place over y, still read by w
    b_y, b_z = bad.buffer_of(y.id), bad.buffer_of(z.id)
    b_y.values.append(z.id)
    b_y.end = max(b_y.end, b_z.end)
    bad.storage[z.id] = b_y.id
    bad.buffers = [dataclasses.replace(b) for b in bad.buffers]
    bad.buffers[b_z.id].values = []
    bad.buffers[b_z.id].start = bad.buffers[b_z.id].end = -5
    with pytest.raises(InternalCompilerError, match="still read"):
        check_plan(bad)


def test_update_is_not_written_in_place_under_a_live_view_of_the_old_value():
    g = Graph("v", float_dtype="f64")
    p = g.param("p", F, L)
    flat = g.add("reshape", [p], {"shape": (256,)}, L)  # a view: shares p's pinned bytes
    upd = g.updates["p"] = g.add("mul", [p, g.const(0.5, "f64", L)], None, L)
    g.outputs["late"] = g.add("add", [flat, g.add("reshape", [upd], {"shape": (256,)}, L)],
                              None, L)
    plan = plan_memory(fuse_kernels(g, fuse=False))
    check_plan(plan)
    assert plan.storage[flat.id] == plan.storage[p.id] and len(plan.commits) == 1
    pv = np.random.default_rng(3).normal(size=F.shape)
    assert_same(run(g, {}, {"p": pv}), execute_plan(plan, {}, {"p": pv}))


def test_update_kernels_are_scheduled_after_the_readers_of_the_old_value():
    g = Graph("w", float_dtype="f64")
    p = g.param("p", F, L)
    g.updates["p"] = g.add("mul", [p, g.const(0.5, "f64", L)], None, L)
    g.outputs["late"] = g.add("exp", [p], None, L)  # created later, but can run first
    kg = fuse_kernels(g, fuse=False)
    assert [g.node(k.nodes[0]).op for k in kg.kernels] == ["exp", "mul"]
    plan = plan_memory(kg)
    check_plan(plan)
    assert not plan.commits and plan.storage[g.updates["p"].id] == plan.storage[p.id]
    pv = np.random.default_rng(4).normal(size=F.shape)
    assert_same(run(g, {}, {"p": pv}), execute_plan(plan, {}, {"p": pv}))
