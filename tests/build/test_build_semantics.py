"""build_ir: what the language means — instancing, sharing, modes, shapes, the train block."""

import numpy as np
import pytest
from buildutil import build_text, init_params, run_graph

MLP = """
model m(batch = 4, hidden = 8) {
    input  x: f32[batch, 6]
    target y: i32[batch]
    h = x -> Dense(hidden) as fc1 -> relu
    logits = h -> Dense(3)
    output probs = softmax(logits)
    loss cross_entropy(logits, y)
}
"""


def test_mlp_names_shapes_and_forward():
    b = build_text(MLP)
    g = b.graph
    assert sorted(g.params) == ["dense_0.W", "dense_0.b", "fc1.W", "fc1.b"]
    assert g.params["fc1.W"].type.shape == (6, 8)
    assert g.inputs["y"].attrs["role"] == "target"
    x = np.random.default_rng(0).random((4, 6), dtype=np.float32)
    y = np.array([0, 1, 2, 0], np.int32)
    params = init_params(g)
    r = run_graph(g, {"x": x, "y": y}, params)
    h = np.maximum(x @ params["fc1.W"] + params["fc1.b"], 0)
    logits = h @ params["dense_0.W"] + params["dense_0.b"]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(r.outputs["probs"], p, rtol=1e-5)
    np.testing.assert_allclose(r.losses["loss"], -np.log(p[np.arange(4), y]).mean(), rtol=1e-5)


def test_overrides_change_shapes():
    b = build_text(MLP, overrides={"hidden": 5, "batch": 2})
    assert b.graph.params["fc1.W"].type.shape == (6, 5)
    assert b.graph.inputs["x"].type.shape == (2, 6)
    assert b.params == {"batch": 2, "hidden": 5}


def test_for_shares_and_repeat_renews():
    text = """
model m {
    input x: f32[2, 4]
    h = x
    for t in 0..3 { h = h -> Dense(4) as cell }
    repeat 2 as i { h = h -> Dense(4) as blk -> Dense(4) }
    output h
}"""
    g = build_text(text).graph
    assert sorted(g.params) == ["blk_0.W", "blk_0.b", "blk_1.W", "blk_1.b", "cell.W", "cell.b",
                                "dense_0.W", "dense_0.b", "dense_1.W", "dense_1.b"]
    assert sum(1 for n in g.nodes_in_order() if n.op == "matmul") == 7


def test_layer_and_fn_definitions_with_nesting_and_tuples():
    text = """
fn swish(x) = x * sigmoid(x)
fn both(a, b) { return a + b, a - b }
layer Block(x, units, scale = 2) {
    param W: [x.shape[-1], units] = normal(0.1)
    h = x @ W -> Dense(units) as inner
    return swish(h) * scale
}
model m {
    input x: f32[3, 5]
    s, d = both(x, x)
    output o = s -> Block(4) as b1
}"""
    g = build_text(text).graph
    assert sorted(g.params) == ["b1.W", "b1.inner.W", "b1.inner.b"]
    assert g.params["b1.W"].attrs["init"] == ("normal", {"std": 0.1, "mean": 0.0})
    assert g.outputs["o"].type.shape == (3, 4)


def test_dropout_and_batchnorm_follow_the_mode():
    text = """
model m {
    input x: f32[8, 3]
    output o = x -> BatchNorm() -> dropout(0.5)
}"""
    train = build_text(text, mode="train").graph
    ev = build_text(text, mode="eval").graph
    assert set(train.updates) == {"batchnorm_0.running_mean", "batchnorm_0.running_var"}
    assert ev.updates == {}
    assert any(n.op == "random_uniform" for n in train.nodes_in_order())
    assert not any(n.op == "random_uniform" for n in ev.nodes_in_order())
    x = np.random.default_rng(1).normal(3, 2, (8, 3)).astype(np.float64)
    g64 = build_text(text.replace("dropout(0.5)", "relu"), mode="train", float_dtype="f64").graph
    r = run_graph(g64, {"x": x})
    norm = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
    np.testing.assert_allclose(r.outputs["o"], np.maximum(norm, 0), rtol=1e-9)
    np.testing.assert_allclose(r.updates["batchnorm_0.running_mean"], 0.1 * x.mean(0))
    np.testing.assert_allclose(r.updates["batchnorm_0.running_var"],
                               0.9 + 0.1 * x.var(0, ddof=1))


def test_state_update_and_indexing():
    text = """
model m {
    input x: f32[4, 6]
    state avg: [6] = zeros
    avg <- 0.9 * avg + 0.1 * mean(x, axis = 0)
    output first = x[:, 0:3]
    output col = x[1]
    output last = x[..., -1]
}"""
    b = build_text(text, float_dtype="f64")
    x = np.arange(24, dtype=np.float64).reshape(4, 6)
    r = run_graph(b.graph, {"x": x})
    np.testing.assert_array_equal(r.outputs["first"], x[:, 0:3])
    np.testing.assert_array_equal(r.outputs["col"], x[1])
    np.testing.assert_array_equal(r.outputs["last"], x[..., -1])
    np.testing.assert_allclose(r.updates["avg"], 0.1 * x.mean(0))


def test_a_number_in_where_takes_the_type_of_the_branch_not_of_the_condition():
    # the number took its type from the first tensor argument, the bool condition, so it was
    # f32: where(k > 1, k, 0) with k i32 said "operands have different dtypes (i32 and f32[])"
    text = """
model m {
    input k: i32[4]
    input x: f32[4]
    output a = where(k > 1, k, 0)
    output b = where(k > 1, 2, k)
    output c = where(x > 0, x, 1)
}"""
    b = build_text(text)
    k, x = np.arange(4, dtype=np.int32), np.array([-1, 1, 2, -3], dtype=np.float32)
    r = run_graph(b.graph, {"k": k, "x": x})
    assert r.outputs["a"].dtype == r.outputs["b"].dtype == np.int32
    np.testing.assert_array_equal(r.outputs["a"], [0, 0, 2, 3])
    np.testing.assert_array_equal(r.outputs["b"], [0, 1, 2, 2])
    np.testing.assert_array_equal(r.outputs["c"], [1, 1, 2, 1])


def _np_lstm(x, Wx, Wh, b, H):
    h = np.zeros((x.shape[0], H))
    c = np.zeros_like(h)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    outs = []
    for t in range(x.shape[1]):
        z = x[:, t] @ Wx + b + h @ Wh
        i, f, gg, o = (z[:, k * H:(k + 1) * H] for k in range(4))
        c = sig(f) * c + sig(i) * np.tanh(gg)
        h = sig(o) * np.tanh(c)
        outs.append(h)
    return h, np.stack(outs, 1)


@pytest.mark.parametrize("seq", ["false", "true"])
def test_lstm_matches_numpy(seq):
    text = f"""
model m {{
    input x: f32[2, 5, 3]
    output h = x -> LSTM(4, sequences = {seq})
}}"""
    g = build_text(text, float_dtype="f64").graph
    x = np.random.default_rng(2).normal(size=(2, 5, 3))
    params = init_params(g)
    params["lstm_0.b"] = np.random.default_rng(3).normal(size=16)
    r = run_graph(g, {"x": x}, params)
    last, all_h = _np_lstm(x, params["lstm_0.Wx"], params["lstm_0.Wh"], params["lstm_0.b"], 4)
    np.testing.assert_allclose(r.outputs["h"], all_h if seq == "true" else last, rtol=1e-9)


def test_gru_matches_numpy():
    g = build_text("model m {\n input x: f32[2, 4, 3]\n output h = x -> GRU(5)\n}",
                   float_dtype="f64").graph
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 4, 3))
    p = init_params(g)
    p["gru_0.b"], p["gru_0.bh"] = rng.normal(size=15), rng.normal(size=15)
    r = run_graph(g, {"x": x}, p)
    H = 5
    h = np.zeros((2, H))
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    for t in range(4):
        xw = x[:, t] @ p["gru_0.Wx"] + p["gru_0.b"]
        hw = h @ p["gru_0.Wh"] + p["gru_0.bh"]
        rr = sig(xw[:, :H] + hw[:, :H])
        z = sig(xw[:, H:2 * H] + hw[:, H:2 * H])
        n = np.tanh(xw[:, 2 * H:] + rr * hw[:, 2 * H:])
        h = (1 - z) * n + z * h
    np.testing.assert_allclose(r.outputs["h"], h, rtol=1e-9)


def test_multi_head_attention_matches_numpy():
    g = build_text("model m {\n input x: f32[2, 3, 4]\n output y = x -> MultiHeadAttention(2, 6)"
                   "\n}", float_dtype="f64").graph
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 3, 4))
    p = init_params(g)
    for k in p:
        p[k] = rng.normal(size=p[k].shape)
    r = run_graph(g, {"x": x}, p)
    P = {k.split(".")[1]: v for k, v in p.items()}

    def heads(v):
        return v.reshape(2, 3, 2, 3).transpose(0, 2, 1, 3)
    q, k_, v = (heads(x @ P[w] + P[b]) for w, b in (("Wq", "bq"), ("Wk", "bk"), ("Wv", "bv")))
    s = q @ k_.transpose(0, 1, 3, 2) / np.sqrt(3)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    o = (a @ v).transpose(0, 2, 1, 3).reshape(2, 3, 6) @ P["Wo"] + P["bo"]
    np.testing.assert_allclose(r.outputs["y"], o, rtol=1e-9)


def test_conv_prelude_layer_and_embedding():
    text = """
model m {
    input x: f32[2, 1, 6, 6]
    input tok: i32[2, 3]
    output c = x -> Conv2D(4, 3, pad = 1) -> max_pool2d(2) -> flatten
    output e = tok -> Embedding(10, 5)
}"""
    g = build_text(text).graph
    assert g.outputs["c"].type.shape == (2, 36)
    assert g.outputs["e"].type.shape == (2, 3, 5)
    assert g.params["conv2d_0.W"].type.shape == (4, 1, 3, 3)


def test_train_block_is_resolved(tmp_path):
    text = MLP + """
train m {
    data = "data/train.npz"
    validation = 0.2
    optimizer = sgd(0.1, momentum = 0.9, nesterov = true)
    schedule = cosine(warmup = 1)
    batch = 16; epochs = 3; seed = 7
    l2 = 1e-4; clip_norm = 1.0
    metrics = [accuracy, f1]
    freeze = [fc1]
    early_stop(monitor = val_accuracy, patience = 2)
}"""
    t = build_text(text, tmp_path).train
    assert t.data == str(tmp_path / "data" / "train.npz")
    assert t.optimizer.name == "sgd" and t.optimizer.args["lr"] == 0.1
    assert t.optimizer.args["nesterov"] is True
    assert t.schedule.args == {"warmup": 1.0}
    assert (t.batch, t.epochs, t.seed, t.clip_norm) == (16, 3, 7, 1.0)
    assert t.freeze == ("fc1.W", "fc1.b")
    assert t.metrics == ("accuracy", "f1")
    assert t.early_stop.monitor == "val_accuracy" and t.early_stop.patience == 2


def test_step_blocks_for_named_losses():
    text = """
model gan {
    input x: f32[4, 2]
    input z: f32[4, 3]
    fake = z -> Dense(2) as G
    real_score = x -> Dense(1) as D
    loss d_loss = mean(real_score)
    loss g_loss = mean(fake)
}
train gan {
    step disc { loss = d_loss; params = [D]; optimizer = adam(2e-4, beta1 = 0.5) }
    step gen { loss = g_loss; params = [G] }
}"""
    t = build_text(text).train
    assert [s.name for s in t.steps] == ["disc", "gen"]
    assert t.steps[0].params == ("D.W", "D.b")
    assert t.steps[0].optimizer.args["beta1"] == 0.5
