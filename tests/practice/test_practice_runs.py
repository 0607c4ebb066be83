"""`netc train` run folders and `--resume`: a run killed (SIGKILL) mid-epoch after epoch k's
checkpoint, then resumed, ends bitwise where an uninterrupted run with the same seed ends."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from practice_helpers import example, json_lines, run_netc

from netc.runs import read_checkpoint_meta

MLP = example("digits_mlp.net")


def _tensors(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k != "meta"}


def _checkpointed_epochs(run):
    try:
        return read_checkpoint_meta(os.path.join(run, "last.npz"))["extra"]["fit"]["epoch"]
    except Exception:  # not written yet
        return 0


def test_killed_and_resumed_run_is_bitwise_the_uninterrupted_one(tmp_path, small_digits):
    # digits_mlp: dropout (random streams keyed by the step), adam state, early stopping on a
    # held-out split; lenet-like step decay is covered by the schedule counting opt.step
    common = ["train", MLP, "--data", small_digits, "--epochs", "4", "--seed", "3", "-q"]
    full = run_netc(*common, "--run-dir", tmp_path / "full", "-o", tmp_path / "full.npz")
    assert full.returncode == 0, full.stderr

    env = dict(os.environ, NETC_TEST_STALL_AT_EPOCH="2")
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "netc", *map(str, common), "--run-dir",
                             str(run), "-o", str(tmp_path / "resumed.npz")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while _checkpointed_epochs(run) < 2:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)  # stalled inside epoch 3, after one more step
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (tmp_path / "resumed.npz").exists()
    assert len((run / "history.jsonl").read_text().splitlines()) == 2

    res = run_netc("train", "--resume", run, "--json")
    assert res.returncode == 0, res.stderr
    assert [log["epoch"] for log in json_lines(res.stdout) if "epoch" in log
            and "summary" not in log] == [3, 4]
    a, b = _tensors(tmp_path / "full.npz"), _tensors(tmp_path / "resumed.npz")
    assert a.keys() == b.keys() and "t:opt.step" in a
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    hist = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    full_hist = [json.loads(line) for line in
                 (tmp_path / "full" / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert [h["val_loss"] for h in hist] == [h["val_loss"] for h in full_hist]


def test_a_run_folder_holds_config_history_checkpoints_and_curves(tmp_path, small_digits):
    res = run_netc("train", MLP, "--data", small_digits, "--epochs", "2", "--json",
                   "--set", "lr=0.01", "-o", tmp_path / "m.npz", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    summary = json_lines(res.stdout)[-1]
    run = tmp_path / summary["run"]
    assert run.parent == tmp_path / "runs" / "digits_mlp"  # runs/NAME/<timestamp>
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["optimizer"]["args"]["lr"] == 0.01
    assert config["command"]["sets"] == {"lr": 0.01}
    hist = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2] and all("val_loss" in h for h in hist)
    best_epoch = read_checkpoint_meta(str(run / "best.npz"))["extra"]["epoch"]
    assert best_epoch == 1 + int(np.argmin([h["val_loss"] for h in hist]))
    last, final = _tensors(run / "last.npz"), _tensors(tmp_path / "m.npz")
    for k in final:  # no early stop: the final model is the last checkpoint
        np.testing.assert_array_equal(last[k], final[k])
    pytest.importorskip("matplotlib")
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_train_blocks_checkpoint_sets_the_parent_folder(tmp_path, small_digits):
    res = run_netc("train", MLP, "--data", small_digits, "--epochs", "1", "-q", "--set",
                   f"checkpoint={tmp_path / 'ck'}", "-o", tmp_path / "m.npz")
    assert res.returncode == 0, res.stderr
    (run,) = (tmp_path / "ck").iterdir()
    assert (run / "last.npz").exists() and (run / "config.json").exists()


def test_tensorboard_scalars_or_a_clear_message(tmp_path, small_digits):
    res = run_netc("train", MLP, "--data", small_digits, "--epochs", "1", "-q", "--tensorboard",
                   "--run-dir", tmp_path / "run", "-o", tmp_path / "m.npz")
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert res.returncode == 1
        assert "--tensorboard needs the 'tensorboard' package" in res.stderr
        assert "Traceback" not in res.stderr
        assert not (tmp_path / "run").exists()  # refused before anything was made
    else:
        assert res.returncode == 0, res.stderr
        assert any(p.name.startswith("events.out.tfevents")
                   for p in (tmp_path / "run" / "tensorboard").iterdir())


def test_tensorboard_missing_is_a_user_error(monkeypatch, tmp_path):
    from netc.compiler.errors import NetError
    from netc.runs import Run

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import fails as when absent
    monkeypatch.setitem(sys.modules, "tensorboard.summary", None)
    with pytest.raises(NetError, match=r"pip install .netc\[tensorboard\]."):
        Run(str(tmp_path / "run"), tensorboard=True)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, code, message", [
    (["--resume", "nowhere"], 1, "is not a netc run folder"),
    ([], 2, "netc train needs FILE"),
])
def test_bad_resume_is_a_clear_error(tmp_path, args, code, message):
    res = run_netc("train", *args, cwd=tmp_path)
    assert res.returncode == code and message in res.stderr and "Traceback" not in res.stderr
