"""Transfer learning: `freeze` keeps the frozen parameters bitwise unchanged while the rest train;
transfer.net pre-trained on digits_mlp and fine-tuned works end to end through `netc`."""

import numpy as np
from practice_helpers import example, json_lines, run_netc

import netc


def test_freeze_keeps_frozen_parameters_bitwise_and_trains_the_rest(digits):
    m = netc.compile(example("digits_mlp.net"), hidden=32)
    m.configure(freeze=["fc1"], metrics=[])
    before = {k: v.copy() for k, v in m.params.items()}
    m.fit(x=digits[0][:256], y=digits[1][:256], epochs=2, validation=0.0)
    for k in ("fc1.W", "fc1.b"):
        np.testing.assert_array_equal(m.params[k], before[k])
    for k in ("fc2.W", "fc2.b"):
        assert not np.array_equal(m.params[k], before[k])


def test_pretrain_then_fine_tune_transfer_net(tmp_path, small_digits):
    pre = tmp_path / "pre.npz"
    res = run_netc("train", example("digits_mlp.net"), "--data", small_digits, "--epochs", "3",
                   "-q", "--run-dir", tmp_path / "r1", "-o", pre)
    assert res.returncode == 0, res.stderr
    res = run_netc("train", example("transfer.net"), "--data", small_digits, "--epochs", "3",
                   "--json", "--set", f"init_from={pre}", "--run-dir", tmp_path / "r2",
                   "-o", tmp_path / "fine.npz")
    assert res.returncode == 0, res.stderr
    logs = [log for log in json_lines(res.stdout) if "summary" not in log]
    assert len(logs) == 3 and logs[-1]["loss"] < logs[0]["loss"]
    with np.load(pre) as p, np.load(tmp_path / "fine.npz") as f:
        for k in ("t:fc1.W", "t:fc1.b"):  # loaded from the pre-trained model, then frozen
            np.testing.assert_array_equal(p[k], f[k])
        np.testing.assert_array_equal(f["t:temperature"], [1.5])  # a `frozen` param
    fresh = netc.compile(example("transfer.net"))
    fine = netc.load(tmp_path / "fine.npz")
    assert not np.array_equal(fresh.params["head2.W"], fine.params["head2.W"])
