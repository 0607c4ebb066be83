"""fuse_kernels: what fuses (epilogues, prologues, reductions, updates) and what must not."""

import copy

import pytest
from pass_models import MLP_BIG, MODELS, step_graph

from netc.compiler.errors import SourceLoc
from netc.compiler.ir import Graph, TensorType
from netc.compiler.passes import fuse_kernels
from netc.compiler.pipeline import optimize

L = SourceLoc("f.net", 1, 1)


def _kernel_with(kg, node):
    return next(k for k in kg.kernels if node.id in k.nodes and node.id not in k.recomputed)


@pytest.fixture(scope="module")
def mlp_big():
    return optimize(step_graph(MLP_BIG, float_dtype="f32", grads_as_outputs=False))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_kernels_are_self_contained_and_scheduled(name):
    kg = optimize(step_graph(MODELS[name])).kernels
    g = kg.graph
    done = set(kg.leaves)
    for k in kg.kernels:
        inside = set(k.nodes)
        for nid in k.nodes:
            assert all(x.id in inside or x.id in k.inputs for x in g.node(nid).inputs)
        assert set(k.inputs) <= done, "a kernel reads a value no earlier kernel stored"
        assert set(k.outputs) <= inside - set(k.recomputed)
        assert set(k.stages) == inside and (k.main is None) == (k.kind in ("elementwise", "rows"))
        done |= set(k.outputs)
    assert set(kg.roots) <= done
    owned = [i for k in kg.kernels for i in k.nodes if i not in k.recomputed]
    assert len(owned) == len(set(owned))


def test_gemm_epilogue_bias_relu_and_backward_mask_from_the_activation(mlp_big):
    g, kg = mlp_big.graph, mlp_big.kernels
    first = kg.kernels[0]
    assert first.kind == "gemm"
    assert [g.node(i).op for i in first.nodes if first.stages[i] == "epilogue"][:2] == [
        "add", "relu"]
    relu = next(n for n in g.nodes_in_order() if n.op == "relu")
    assert relu.id in first.outputs  # the activation kept for backward is materialised
    mask = next(u for u in g.users(relu) if u.op == "gt")
    assert mask.id not in first.nodes  # ... and the relu mask is recomputed from it, not stored
    assert not any(g.node(i).type.dtype == "bool" for k in kg.kernels for i in k.outputs)


def test_optimizer_update_fuses_with_the_gradient_producer(mlp_big):
    g, kg = mlp_big.graph, mlp_big.kernels
    for name, upd in g.updates.items():
        k = _kernel_with(kg, upd)
        assert k.kind == ("gemm" if name.endswith(".W") else "reduction")
        assert k.stages[upd.id] == "epilogue"
        assert k.outputs == [upd.id]  # the gradient itself is never stored


def test_activation_gradient_is_a_recomputed_gemm_prologue():
    g = Graph("p", float_dtype="f64")
    dy = g.input("dy", TensorType((8, 5), "f64"), L)
    z = g.input("z", TensorType((8, 5), "f64"), L)
    h = g.input("h", TensorType((8, 3), "f64"), L)
    w = g.param("W", TensorType((3, 5), "f64"), L)
    zero = g.const(0.0, "f64", L)
    ct = g.add("where", [g.add("gt", [z, zero], None, L), dy, zero], None, L)
    g.outputs["dW"] = g.add("matmul", [g.add("transpose", [h], None, L), ct], None, L)
    g.outputs["dx"] = g.add("matmul", [ct, g.add("transpose", [w], None, L)], None, L)
    g.outputs["db"] = g.add("sum", [ct], {"axes": (0,)}, L)
    kg = fuse_kernels(g)
    assert [k.kind for k in kg.kernels] == ["gemm", "gemm", "reduction"]
    for k in kg.kernels:
        assert ct.id in k.recomputed and k.stages[ct.id] == "prologue"
        assert {dy.id, z.id} <= set(k.inputs)
    assert all(g.node(i).op not in ("where", "transpose") for k in kg.kernels for i in k.outputs)


def test_softmax_division_stays_out_of_the_reduction_loop():
    g = Graph("s", float_dtype="f64")
    x = g.input("x", TensorType((4, 6), "f64"), L)
    e = g.add("exp", [x], None, L)
    s = g.add("sum", [e], {"axes": (1,), "keepdims": True}, L)
    logs = g.add("log", [s], None, L)
    g.outputs["p"] = g.add("div", [e, s], None, L)
    g.outputs["l"] = logs
    kg = fuse_kernels(g)
    red = _kernel_with(kg, s)
    assert red.stages[e.id] == "prologue" and red.stages[logs.id] == "epilogue"
    assert g.outputs["p"].id not in red.nodes
    assert e.id in red.outputs and s.id in red.outputs  # both needed by the division later


def test_no_fusion_through_a_reduction_into_a_cycle():
    g = Graph("c", float_dtype="f64")
    x = g.input("x", TensorType((5,), "f64"), L)
    a = g.add("exp", [x], None, L)
    r = g.add("sum", [a], None, L)
    g.outputs["b"] = g.add("mul", [a, r], None, L)
    kg = fuse_kernels(g)
    assert g.outputs["b"].id not in _kernel_with(kg, a).nodes
    assert [k.kind for k in kg.kernels] == ["reduction", "elementwise"]


def test_fusion_off_gives_one_kernel_per_node():
    g = step_graph(MODELS["mlp"])
    opt = optimize(copy.deepcopy(g), disable={"fuse"})
    computed = [n for n in opt.graph.nodes_in_order()
                if n.op not in ("input", "param", "state", "const", "rng_key")]
    assert len(opt.kernels.kernels) == len(computed)
    assert all(len(k.nodes) == 1 and not k.recomputed for k in opt.kernels.kernels)


def test_text_printer_describes_every_kernel(mlp_big):
    text = mlp_big.kernels.to_text()
    assert text.count("\nk") == len(mlp_big.kernels.kernels)
    assert "epilogue[add, relu" in text and "update fc1.W" in text and "flops=" in text


def test_softmax_cross_entropy_forward_and_backward_are_one_rows_kernel():
    """The f32 classifier's max, exp, sum, log, one_hot and the logits' gradient run in one
    rows kernel; exp(z - max) and log-softmax are never stored; what leaves it is the
    per-example loss, the logits' gradient and (for the output) the softmax."""
    g = step_graph(MODELS["mlp"], float_dtype="f32")
    kg = optimize(g).kernels
    g = kg.graph
    rows = [k for k in kg.kernels if k.kind == "rows"]
    assert len(rows) == 1
    k = rows[0]
    ops = [g.node(i).op for i in k.nodes]
    assert {"max", "exp", "sum", "log", "one_hot"} <= set(ops) and ops.count("sum") >= 2
    assert k.space == (8, 4) and all(k.stages[i] == ("main" if g.node(i).op in ("max", "sum")
                                                      else "body") for i in k.nodes)
    stored = [g.node(i).op for i in k.outputs]
    assert "exp" not in stored and "one_hot" not in stored
    assert not any(o in ("max", "sum") for o in (g.node(i).op for i in k.inputs))


def test_rows_kernels_need_f32_rows_of_at_most_row_max():
    from netc.compiler.passes.fuse_kernels import ROW_MAX

    def classifier(classes):
        text = MODELS["mlp"].replace("Dense(4) as fc3", f"Dense({classes}) as fc3")
        return step_graph(text, float_dtype="f32")

    assert any(k.kind == "rows" for k in optimize(classifier(ROW_MAX)).kernels.kernels)
    assert not any(k.kind == "rows" for k in optimize(classifier(ROW_MAX + 1)).kernels.kernels)
    assert not any(k.kind == "rows" for k in optimize(step_graph(MODELS["mlp"])).kernels.kernels)


def test_a_bool_row_used_elsewhere_stays_out_of_a_rows_kernel():
    """A compare over the rows read by a later kernel would have to be stored: rows kernels
    store f32 rows only, so that compare's group stays out (the softmax still fuses)."""
    g = Graph("t", float_dtype="f32")
    x = g.input("x", TensorType((6, 5), "f32"), L)
    m = g.add("max", [x], {"axes": (1,), "keepdims": True}, L)
    e = g.add("exp", [g.add("sub", [x, m], None, L)], None, L)
    g.outputs["p"] = g.add("div", [e, g.add("sum", [e], {"axes": (1,), "keepdims": True}, L)],
                           None, L)
    mask = g.add("gt", [x, m], None, L)
    g.outputs["mask"] = mask
    kg = fuse_kernels(g)
    owner = next(k for k in kg.kernels if mask.id in k.nodes)
    assert owner.kind != "rows" and any(k.kind == "rows" for k in kg.kernels)
