"""benchmarks/train_step.py's peers train the same networks as netc's benchmark nets.

For every case of benchmarks/cases.py: PyTorch's module (fw_torch) gets netc's initial weights
(transposed to PyTorch's layouts), JAX's pytree (fw_jax) gets them by name; then each does two
optimizer steps on the case's batch, and the losses and the weights must agree with netc's (the
NumPy interpreter, so no native compile). That checks the shapes, the layer semantics, the loss
and the optimizer with its hyper-parameters, not only the parameter counts. Skipped per framework
when it is not installed. Also a smoke run of the script itself (slow: it starts workers).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

BENCH = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "benchmarks")
sys.path.insert(0, BENCH)

from cases import CASES, case_data  # noqa: E402

import netc  # noqa: E402

STEPS = 2
# the larger networks take tens of seconds in the interpreter and in JAX's compiler
NAMES = [pytest.param(n, marks=pytest.mark.slow) if n in ("lenet", "lstm", "transformer") else n
         for n in CASES]


@functools.cache
def _netc(name: str):
    """netc's initial weights, the batch, the losses of STEPS steps and the weights after."""
    case = CASES[name]
    m = netc.compile(case.path, backend="interpret", seed=0, batch=case.batch)
    d = case_data(case, 1)
    x, y = d["x"][:case.batch], d["y"][:case.batch]
    start = {k: np.array(v) for k, v in m.params.items()}
    losses = [m.train_step(x=x, y=y) for _ in range(STEPS)]
    return start, x, y, losses, {k: np.array(v) for k, v in m.params.items()}


def _torch_names(case) -> dict[str, tuple[str, bool]]:
    """netc name -> (PyTorch state name, transposed)."""
    if case.dims or case.name == "lenet":
        layers = ([0, 2, 4][:len(case.dims) - 1] if case.dims else [0, 3, 7, 9, 11])
        names = (["conv1", "conv2", "fc1", "fc2", "fc3"] if case.name == "lenet"
                 else [f"fc{k + 1}" for k in range(len(layers))])
        out = {}
        for n, i in zip(names, layers):
            out[f"{n}.W"] = (f"{i}.weight", n.startswith("fc"))
            out[f"{n}.b"] = (f"{i}.bias", False)
        return out
    head = {"head.W": ("head.weight", True), "head.b": ("head.bias", False)}
    if case.name == "lstm":
        return {"lstm.Wx": ("lstm.weight_ih_l0", True), "lstm.Wh": ("lstm.weight_hh_l0", True),
                "lstm.bx": ("lstm.bias_ih_l0", False), "lstm.bh": ("lstm.bias_hh_l0", False),
                **head}
    out = dict(head)
    for k in (1, 2):
        out[f"norm{k}.gamma"] = (f"block.norm{k}.weight", False)
        out[f"norm{k}.beta"] = (f"block.norm{k}.bias", False)
        out[f"ff{k}.W"] = (f"block.linear{k}.weight", True)
        out[f"ff{k}.b"] = (f"block.linear{k}.bias", False)
    out["attn.Wo"] = ("block.self_attn.out_proj.weight", True)
    out["attn.bo"] = ("block.self_attn.out_proj.bias", False)
    return out


def _to_torch(case, net, params: dict) -> None:
    import torch

    state = net.state_dict()
    for name, (tname, transposed) in _torch_names(case).items():
        state[tname] = torch.from_numpy(params[name].T.copy() if transposed else params[name])
    if case.name == "transformer":  # q, k, v live in one in_proj of PyTorch's attention
        state["block.self_attn.in_proj_weight"] = torch.from_numpy(
            np.concatenate([params[f"attn.W{n}"].T for n in "qkv"]))
        state["block.self_attn.in_proj_bias"] = torch.from_numpy(
            np.concatenate([params[f"attn.b{n}"] for n in "qkv"]))
    net.load_state_dict(state)
    assert len(state) == len(params) - (4 if case.name == "transformer" else 0)


def _from_torch(case, net) -> dict:
    state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    out = {name: state[t].T if tr else state[t] for name, (t, tr) in _torch_names(case).items()}
    if case.name == "transformer":
        w = np.split(state["block.self_attn.in_proj_weight"], 3)
        b = np.split(state["block.self_attn.in_proj_bias"], 3)
        for k, n in enumerate("qkv"):
            out[f"attn.W{n}"], out[f"attn.b{n}"] = w[k].T, b[k]
    return out


# The key bias's true gradient is zero (softmax over keys ignores q . bk, the same for every key):
# what each framework computes is rounding noise, which Adam scales up to steps of about lr.
NOISE_ONLY = {"attn.bk"}


def _close(ours: dict, theirs: dict, case) -> None:
    assert set(ours) == set(theirs)
    for k in set(ours) - NOISE_ONLY:
        # Adam's first steps move every weight by about lr whatever the gradient's size, so
        # float32 rounding in a near-zero gradient shows at the scale of lr
        atol = 1e-5 if case.opt == "sgd" else 1e-2 * case.lr
        np.testing.assert_allclose(theirs[k], ours[k], rtol=1e-3, atol=atol, err_msg=k)


@pytest.mark.parametrize("name", NAMES)
def test_torch_trains_the_netc_network(name):
    torch = pytest.importorskip("torch")
    import fw_torch

    case = CASES[name]
    start, x, y, losses, end = _netc(name)  # shared: not modified below
    net = fw_torch.model(case).train()
    _to_torch(case, net, start)
    opt = fw_torch.optimizer(case, net.parameters())
    lossf = torch.nn.CrossEntropyLoss()
    theirs = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = lossf(net(torch.from_numpy(x)), torch.from_numpy(y).long())
        loss.backward()
        opt.step()
        theirs.append(loss.item())
    np.testing.assert_allclose(theirs, losses, rtol=1e-4)
    _close(end, _from_torch(case, net), case)


@pytest.mark.parametrize("name", NAMES)
def test_jax_trains_the_netc_network(name):
    jax = pytest.importorskip("jax")
    import fw_jax

    case = CASES[name]
    start, x, y, losses, end = _netc(name)  # shared: not modified below
    params = fw_jax.init_params(case)
    flat = {".".join(k.key for k in path): v
            for path, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    assert set(flat) == set(start)
    params = jax.tree_util.tree_map_with_path(
        lambda path, v: start[".".join(k.key for k in path)], params)
    loss_fn = fw_jax.loss_function(case)
    init, update = fw_jax.optimizer(case)
    state, theirs = init(params), []
    grad = jax.jit(jax.value_and_grad(loss_fn))
    for _ in range(STEPS):
        loss, g = grad(params, x, y)
        params, state = update(params, g, state)
        theirs.append(float(loss))
    np.testing.assert_allclose(theirs, losses, rtol=1e-4)
    flat = {".".join(k.key for k in path): np.asarray(v)
            for path, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    _close(end, flat, case)


@pytest.mark.slow
def test_train_step_script_prints_json_rows(tmp_path):
    pytest.importorskip("torch")
    env = dict(os.environ, NETC_CACHE_DIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, os.path.join(BENCH, "train_step.py"), "--steps", "2", "--rounds", "2",
         "--threads", "1", "--models", "tiny_mlp", "--peers", "torch", "--json"],
        capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["case"], r["threads"]) for r in rows] == [("tiny_mlp", 1)]
    r = rows[0]
    assert r["params"] == {"netc": 2410, "torch": 2410}
    assert r["netc_ms"] > 0 and r["torch_ms"] > 0
    assert r["vs_torch"] == pytest.approx(r["torch_ms"] / r["netc_ms"])
