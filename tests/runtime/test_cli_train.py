"""`netc train | eval | predict` through subprocesses: every example trains, results reload
exactly, and every bad input is a clear message with exit code 1 (never a traceback)."""

import glob
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import netc

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
EXAMPLES = sorted(p for p in glob.glob(os.path.join(ROOT, "*.net"))
                  if not p.endswith("transfer.net"))
MLP = os.path.join(ROOT, "digits_mlp.net")


RUN_DIR = tempfile.mkdtemp(prefix="netc-cli-")  # netc train writes runs/ under its cwd


def netc_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "netc", *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd or RUN_DIR)


def epochs_of(stdout):
    return [json.loads(line) for line in stdout.splitlines() if line.startswith('{"epoch"')]


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_every_example_trains_with_falling_loss(path, tmp_path):
    res = netc_cli("train", path, "--epochs", "3", "--json", "--backend", "interpret",
                   "-o", str(tmp_path / "m.npz"))
    assert res.returncode == 0, res.stderr
    logs = epochs_of(res.stdout)
    assert len(logs) == 3
    assert all(np.isfinite(v) for log in logs for v in log.values())
    if "d_loss" in logs[0]:  # a GAN: both losses move, neither collapses
        assert logs[-1]["d_loss"] != logs[0]["d_loss"] and logs[-1]["g_loss"] != logs[0]["g_loss"]
    else:
        assert logs[-1]["loss"] < logs[0]["loss"]
    assert (tmp_path / "m.npz").exists()


def test_transfer_learning_from_the_cli(tmp_path):
    pre = tmp_path / "pre.npz"
    assert netc_cli("train", MLP, "--epochs", "2", "-q", "-o", str(pre)).returncode == 0
    res = netc_cli("train", os.path.join(ROOT, "transfer.net"), "--epochs", "2", "--json",
                   "--set", f"init_from={pre}", "-o", str(tmp_path / "t.npz"))
    assert res.returncode == 0, res.stderr
    before = np.load(pre)["t:fc1.W"]
    after = np.load(tmp_path / "t.npz")["t:fc1.W"]
    np.testing.assert_array_equal(before, after)  # loaded, then frozen


def test_digits_mlp_reaches_95_percent(tmp_path):
    res = netc_cli("train", MLP, "--json", "-o", str(tmp_path / "m.npz"))
    assert res.returncode == 0, res.stderr
    assert max(log["val_accuracy"] for log in epochs_of(res.stdout)) >= 0.95


def test_saved_model_predicts_like_the_api(tmp_path):
    out = tmp_path / "m.npz"
    assert netc_cli("train", MLP, "--epochs", "1", "-q", "-o", str(out)).returncode == 0
    data = tmp_path / "x.npz"
    x = np.random.default_rng(0).random((70, 64)).astype(np.float32)
    np.savez(data, x=x)
    res = netc_cli("predict", str(out), "--data", str(data), "-o", str(tmp_path / "p.npz"))
    assert res.returncode == 0, res.stderr
    m = netc.load(out)  # the CLI's backend (the JIT)
    pred = np.concatenate([m.predict(x=x[:64]), m.predict(x=x[64:])])
    np.testing.assert_array_equal(np.load(tmp_path / "p.npz")["probs"], pred)
    res = netc_cli("eval", str(out), "--data", "digits", "--json")
    assert res.returncode == 0 and "accuracy" in json.loads(res.stdout)


def _bad(tmp_path, name, make):
    p = tmp_path / name
    make(p)
    return str(p)


@pytest.mark.parametrize("name, make, message", [
    ("missing.npz", lambda p: None, "does not exist"),
    ("corrupt.npz", lambda p: p.write_bytes(b"PK\x03\x04 not a zip"), "not a readable .npz"),
    ("shape.npz", lambda p: np.savez(p, x=np.zeros((10, 3)), y=np.zeros(10, int)),
     "rows of shape [3], but the model expects [64]"),
    ("nan.npz", lambda p: np.savez(p, x=np.full((10, 64), np.nan), y=np.zeros(10, int)),
     "NaN or infinite"),
    ("dtype.npz", lambda p: np.savez(p, x=np.zeros((10, 64)), y=np.full(10, 0.5)),
     "must hold integers"),
    ("names.npz", lambda p: np.savez(p, a=np.zeros((10, 64))), "no array named 'x'"),
])
def test_bad_data_files(tmp_path, name, make, message):
    res = netc_cli("train", MLP, "--epochs", "1", "--data", _bad(tmp_path, name, make))
    assert res.returncode == 1, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("name, make, message", [
    ("empty.npz", lambda p: np.savez(p, x=np.zeros((0, 64)), y=np.zeros(0, np.int32)),
     "the training data has no rows"),
    ("tiny.npz", lambda p: np.savez(p, x=np.zeros((2, 64)), y=np.zeros(2, np.int32)),
     "validation = 0.2 of 2 row(s) leaves no rows to validate on"),
])
def test_data_too_small_to_train_on(tmp_path, name, make, message):
    # zero rows was an internal compiler error (exit 3); two rows said "the validation data
    # has 0 rows, fewer than the fixed batch of None"
    res = netc_cli("train", MLP, "--epochs", "1", "--data", _bad(tmp_path, name, make))
    assert res.returncode == 1, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr


def test_no_rows_to_predict_or_evaluate(tmp_path):
    # predict on 0 rows exited 0 with "predicted 0 rows: ;" and wrote an empty file
    out = tmp_path / "m.npz"
    netc.compile(MLP, backend="interpret").save(out)
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros((0, 64), np.float32), y=np.zeros(0, np.int32))
    for command, message in (("predict", "the data to predict from has no rows"),
                             ("eval", "the data to evaluate has no rows")):
        for model in (str(out), MLP):
            extra = ["-o", str(tmp_path / "p.npz")] if command == "predict" else []
            res = netc_cli(command, model, "--data", str(empty), "--backend", "interpret",
                           *extra)
            assert res.returncode == 1, res.stderr
            assert f"error: {message}" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "p.npz").exists()


def test_a_fifo_as_data_or_model_is_refused_not_read(tmp_path):
    # eval with --data naming a FIFO waited for a writer forever; so did a FIFO as the model
    out = tmp_path / "m.npz"
    netc.compile(MLP, backend="interpret").save(out)
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    for args in (("eval", str(out), "--data", str(fifo)), ("eval", str(fifo), "--data", "digits"),
                 ("predict", str(out), "--data", str(fifo), "-o", str(tmp_path / "p.csv"))):
        res = netc_cli(*args, "--backend", "interpret")
        assert res.returncode == 1, res.stderr
        assert "is not a regular file (a FIFO)" in res.stderr and "Traceback" not in res.stderr


def test_bad_output_is_refused_before_training(tmp_path):
    # -o naming a folder that does not exist (or a directory) once failed only after the
    # whole training had run
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for out, message in ((tmp_path / "nodir" / "m.npz", "the folder '{}' does not exist"
                          .format(tmp_path / "nodir")),
                         (tmp_path, "it is a directory")):
        res = netc_cli("train", MLP, "--epochs", "1", "-o", str(out), cwd=str(cwd))
        assert res.returncode == 1, res.stderr
        assert message in res.stderr and "epoch 1/1" not in res.stdout
    assert not (cwd / "runs").exists()  # and no run folder was made


def test_set_takes_a_path_quoted_as_in_the_file(tmp_path):
    # --set 'data="x.npz"' once kept the quotes as part of the path: "'\"x.npz\"' does not
    # exist"; a quoted value means the string inside, as in the .net file, and a bare one works
    # too (spaces and '=' included)
    rng = np.random.default_rng(0)
    for name in ("my data=1.npz", "val set.npz"):
        np.savez(tmp_path / name, x=rng.random((40, 64)).astype(np.float32),
                 y=rng.integers(0, 10, 40).astype(np.int32))
    pre = tmp_path / "pre trained.npz"
    netc.compile(MLP, backend="interpret").save(pre)
    for quote in ('"', ""):
        res = netc_cli("train", MLP, "--epochs", "1", "-q", "--backend", "interpret", "--json",
                       "--set", f"data={quote}{tmp_path / 'my data=1.npz'}{quote}",
                       "--set", f"validation={quote}{tmp_path / 'val set.npz'}{quote}",
                       "--set", f"init_from={quote}{pre}{quote}",
                       "--set", f"checkpoint={quote}{tmp_path / 'check points'}{quote}",
                       "-o", str(tmp_path / "m.npz"))
        assert res.returncode == 0, res.stderr
        assert "val_loss" in epochs_of(res.stdout)[0]
        assert (tmp_path / "check points").is_dir()
    res = netc_cli("train", MLP, "--set", 'data="x.npz')  # the quoted form is read as in a file
    assert res.returncode == 1 and "<--set data>:2:12: error: unterminated string" in res.stderr


def test_unknown_set_key_and_foreign_weights(tmp_path):
    res = netc_cli("train", MLP, "--set", "hiden=3")
    assert res.returncode == 1 and "did you mean 'hidden'" in res.stderr
    other = tmp_path / "reg.npz"
    assert netc_cli("train", os.path.join(ROOT, "regression.net"), "--epochs", "1", "-q",
                    "-o", str(other)).returncode == 0
    res = netc_cli("predict", MLP, "--weights", str(other), "--data", "digits")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "matches" in res.stderr or "shape" in res.stderr


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_a_kill_saves_what_was_trained(tmp_path, signame):
    """Ctrl-C, or the SIGTERM a scheduler sends at its time limit: training stops after the
    batch it is on and the model is saved (exit 128 + the signal's number)."""
    import signal
    import time

    sig = getattr(signal, signame)
    out = tmp_path / "m.npz"
    proc = subprocess.Popen([sys.executable, "-m", "netc", "train", MLP, "--epochs", "500",
                             "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    deadline = time.monotonic() + 120
    line = ""
    while time.monotonic() < deadline and not line.startswith("epoch"):
        line = proc.stderr.readline()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert "stopping after this batch" in err
    assert "Traceback" not in err and out.exists()
    m = netc.load(out, backend="interpret")
    assert m.step > 0


def test_a_model_too_big_for_memory_is_a_clear_error(tmp_path):
    """A parameter of 4.7 GB in a process allowed 3 GB of address space: the allocation fails,
    and netc says so (exit 1, no traceback, no 'bug in netc')."""
    resource = pytest.importorskip("resource")
    net = tmp_path / "wide.net"
    net.write_text("model wide(batch = 8) {\n    input x: f32[batch, 784]\n"
                   "    target y: i32[batch]\n"
                   "    loss cross_entropy(x -> Dense(1500000) -> Dense(10), y)\n}\n"
                   'train wide { data = "digits" }\n')
    limit = 3 << 30

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    res = subprocess.run([sys.executable, "-m", "netc", "train", str(net), "--epochs", "1",
                          "-q"], capture_output=True, text=True, timeout=600, cwd=RUN_DIR,
                         preexec_fn=cap)
    assert res.returncode == 1, res.stderr
    assert "out of memory" in res.stderr and "Traceback" not in res.stderr
    assert "bug in netc" not in res.stderr
