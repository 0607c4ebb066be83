"""Built-in layers agree with PyTorch's modules given the same weights (skipped without torch)."""

import numpy as np
import pytest
from buildutil import build_text, init_params, init_states, run_graph

torch = pytest.importorskip("torch")
RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _float64_modules():
    """PyTorch's modules in float64 for these tests only: the default is process-wide, and
    other tests in this worker (the benchmark peers) build float32 modules."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def model(body):
    return build_text("model m {\n" + body + "\n}\n", float_dtype="f64")


def randomize(params):
    return {k: RNG.normal(0, 0.5, v.shape) for k, v in params.items()}


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def test_dense():
    b = model("    input x: f64[3, 2, 5]\n    output y = x -> Dense(4)")
    p = randomize(init_params(b.graph))
    x = RNG.normal(size=(3, 2, 5))
    lin = torch.nn.Linear(5, 4)
    with torch.no_grad():
        lin.weight.copy_(t(p["dense_0.W"].T))
        lin.bias.copy_(t(p["dense_0.b"]))
        ref = lin(t(x)).numpy()
    np.testing.assert_allclose(run_graph(b.graph, {"x": x}, p).outputs["y"], ref, rtol=1e-10)


@pytest.mark.parametrize("stride, pad", [(1, 0), (2, 1)])
def test_conv2d(stride, pad):
    b = model(f"    input x: f64[2, 3, 7, 7]\n    output y = x -> Conv2D(4, 3, stride = {stride}, "
              f"pad = {pad})")
    p = randomize(init_params(b.graph))
    x = RNG.normal(size=(2, 3, 7, 7))
    conv = torch.nn.Conv2d(3, 4, 3, stride=stride, padding=pad)
    with torch.no_grad():
        conv.weight.copy_(t(p["conv2d_0.W"]))
        conv.bias.copy_(t(p["conv2d_0.b"]))
        ref = conv(t(x)).numpy()
    np.testing.assert_allclose(run_graph(b.graph, {"x": x}, p).outputs["y"], ref, rtol=1e-10)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("seq", [False, True])
def test_recurrent(kind, seq):
    b = model(f"    input x: f64[2, 5, 3]\n    output y = x -> {kind}(4, sequences = "
              f"{'true' if seq else 'false'})")
    p = randomize(init_params(b.graph))
    x = RNG.normal(size=(2, 5, 3))
    pre = kind.lower() + "_0."
    mod = getattr(torch.nn, kind)(3, 4, batch_first=True)
    with torch.no_grad():
        mod.weight_ih_l0.copy_(t(p[pre + "Wx"].T))
        mod.weight_hh_l0.copy_(t(p[pre + "Wh"].T))
        mod.bias_ih_l0.copy_(t(p[pre + "b"]))
        mod.bias_hh_l0.copy_(t(p[pre + "bh"]) if kind == "GRU" else torch.zeros_like(
            mod.bias_hh_l0))
        out, _ = mod(t(x))
        ref = (out if seq else out[:, -1]).numpy()
    np.testing.assert_allclose(run_graph(b.graph, {"x": x}, p).outputs["y"], ref, rtol=1e-9)


def test_multi_head_attention():
    b = model("    input x: f64[2, 4, 6]\n    output y = x -> MultiHeadAttention(3, 6)")
    p = {k.split(".")[1]: v for k, v in randomize(init_params(b.graph)).items()}
    x = RNG.normal(size=(2, 4, 6))
    mha = torch.nn.MultiheadAttention(6, 3, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(t(np.concatenate([p["Wq"].T, p["Wk"].T, p["Wv"].T])))
        mha.in_proj_bias.copy_(t(np.concatenate([p["bq"], p["bk"], p["bv"]])))
        mha.out_proj.weight.copy_(t(p["Wo"].T))
        mha.out_proj.bias.copy_(t(p["bo"]))
        ref = mha(t(x), t(x), t(x), need_weights=False)[0].numpy()
    params = {"multiheadattention_0." + k: v for k, v in p.items()}
    np.testing.assert_allclose(run_graph(b.graph, {"x": x}, params).outputs["y"], ref, rtol=1e-9)


def test_layer_norm():
    b = model("    input x: f64[3, 5]\n    output y = x -> LayerNorm")
    p = randomize(init_params(b.graph))
    x = RNG.normal(size=(3, 5))
    ln = torch.nn.LayerNorm(5)
    with torch.no_grad():
        ln.weight.copy_(t(p["layernorm_0.gamma"]))
        ln.bias.copy_(t(p["layernorm_0.beta"]))
        ref = ln(t(x)).numpy()
    np.testing.assert_allclose(run_graph(b.graph, {"x": x}, p).outputs["y"], ref, rtol=1e-9)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batch_norm_both_modes(mode):
    b = build_text("model m {\n    input x: f64[4, 3, 2, 2]\n    output y = x -> BatchNorm\n}\n",
                   float_dtype="f64", mode=mode)
    p = randomize(init_params(b.graph))
    s = init_states(b.graph)
    s["batchnorm_0.running_mean"] = RNG.normal(size=3)
    s["batchnorm_0.running_var"] = RNG.uniform(0.5, 2, size=3)
    x = RNG.normal(size=(4, 3, 2, 2))
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(t(p["batchnorm_0.gamma"]))
        bn.bias.copy_(t(p["batchnorm_0.beta"]))
        bn.running_mean.copy_(t(s["batchnorm_0.running_mean"]))
        bn.running_var.copy_(t(s["batchnorm_0.running_var"]))
        bn.train(mode == "train")
        ref = bn(t(x)).numpy()
    r = run_graph(b.graph, {"x": x}, p, s)
    np.testing.assert_allclose(r.outputs["y"], ref, rtol=1e-9)
    if mode == "train":
        np.testing.assert_allclose(r.updates["batchnorm_0.running_mean"], bn.running_mean)
        np.testing.assert_allclose(r.updates["batchnorm_0.running_var"], bn.running_var)
