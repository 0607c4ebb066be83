"""Saved models: npz and safetensors round trips are bitwise; damaged files are clear errors."""

import os
import subprocess
import sys

import numpy as np
import pytest

import netc
from netc.compiler.errors import DataError

MLP = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "digits_mlp.net")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    m = netc.compile(MLP, backend="interpret", hidden=16)
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 64), dtype=np.float32), rng.integers(0, 10, 64).astype(np.int32)
    for _ in range(3):
        m.train_step(x=x, y=y)
    return m, x


@pytest.mark.parametrize("name", ["m.npz", "m.safetensors"])
def test_round_trip_is_bitwise(trained, tmp_path, name):
    m, x = trained
    m.save(tmp_path / name)
    m2 = netc.load(tmp_path / name, backend="interpret")
    assert m2.step == m.step == 3
    for k in m.params:
        np.testing.assert_array_equal(m.params[k], m2.params[k])
    for k in m.optimizer_state:
        np.testing.assert_array_equal(m.optimizer_state[k], m2.optimizer_state[k])
    np.testing.assert_array_equal(m.predict(x=x), m2.predict(x=x))


@pytest.mark.parametrize("name", ["m.npz", "m.safetensors"])
def test_damaged_files_are_clear_errors(trained, tmp_path, name):
    m, _ = trained
    good = tmp_path / name
    m.save(good)
    data = good.read_bytes()
    for i, damaged in enumerate([data[: len(data) // 2], data[:5], b"", b"\x00" * 64]):
        p = tmp_path / f"bad{i}_{name}"
        p.write_bytes(damaged)
        with pytest.raises(DataError, match=str(p.name)):
            netc.load(p)
    with pytest.raises(DataError, match="does not exist"):
        netc.load(tmp_path / "none.npz")


def test_plain_npz_is_not_a_model(tmp_path):
    np.savez(tmp_path / "a.npz", w=np.zeros(3))
    with pytest.raises(DataError, match="not a saved netc model"):
        netc.load(tmp_path / "a.npz")


def test_failed_save_keeps_the_old_file(trained, tmp_path, monkeypatch):
    m, _ = trained
    p = tmp_path / "keep.npz"
    m.save(p)
    before = p.read_bytes()

    def failing_savez(f, **arrays):
        f.write(b"half a file")
        raise OSError("disk full")
    monkeypatch.setattr(netc.saved.np, "savez", failing_savez)
    with pytest.raises(DataError, match="cannot write .*keep.npz': disk full"):
        m.save(p)
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["keep.npz"]


def test_save_onto_a_directory_is_a_data_error(trained, tmp_path):
    # saving to a folder's name once raised a raw IsADirectoryError from os.replace (after
    # writing the temporary file into the folder's parent)
    m, _ = trained
    (tmp_path / "sub").mkdir()
    for fmt in (None, "safetensors"):
        with pytest.raises(DataError, match="cannot write .*sub': it is a directory"):
            m.save(tmp_path / "sub", format=fmt)
    assert [f.name for f in tmp_path.iterdir()] == ["sub"] and not any((tmp_path / "sub").iterdir())


def test_cli_on_a_corrupt_model(tmp_path):
    p = tmp_path / "c.npz"
    p.write_bytes(b"PK\x03\x04 broken")
    res = subprocess.run([sys.executable, "-m", "netc", "eval", str(p), "--data", "digits"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "corrupt" in res.stderr and "Traceback" not in res.stderr


def test_jit_round_trip_is_bitwise(tmp_path):
    m = netc.compile(MLP, backend="jit", hidden=16)
    rng = np.random.default_rng(1)
    x, y = rng.random((64, 64), dtype=np.float32), rng.integers(0, 10, 64).astype(np.int32)
    m.train_step(x=x, y=y)
    m.save(tmp_path / "j.npz")
    m2 = netc.load(tmp_path / "j.npz", backend="jit")
    np.testing.assert_array_equal(m.predict(x=x), m2.predict(x=x))
    assert m2.train_step(x=x, y=y) == m.train_step(x=x, y=y)


@pytest.mark.parametrize("change, message", [
    # each exited 3 ("internal compiler error: AttributeError / TypeError / ValueError") or 2
    # (a UsageError about a dtype or seed the user never passed), or loaded silently (version)
    ({"kinds": [1]}, "entry 'kinds' should be an object of tensor kinds"),
    ({"overrides": [1]}, "entry 'overrides' should be an object of model parameters"),
    ({"seed": "abc"}, "entry 'seed' should be an integer >= 0"),
    ({"seed": -4}, "entry 'seed' should be an integer >= 0"),
    ({"text": 5}, "entry 'text' should be the model's source text"),
    ({"steps_per_epoch": "x"}, "entry 'steps_per_epoch' should be an integer >= 1"),
    ({"dtype": "int8"}, "entry 'dtype' should be 'float32' or 'float64'"),
    ({"version": 99}, "saved by a newer netc"),
])
def test_damaged_metadata_is_a_data_error(trained, tmp_path, change, message):
    import json
    m, _ = trained
    m.save(tmp_path / "m.npz")
    z = dict(np.load(tmp_path / "m.npz"))
    z["meta"] = np.array(json.dumps({**json.loads(str(z["meta"])), **change}))
    np.savez(tmp_path / "bad.npz", **z)
    with pytest.raises(DataError, match=message):
        netc.load(tmp_path / "bad.npz", backend="interpret")


def test_damaged_optimizer_state_is_a_data_error(trained, tmp_path):
    # a step counter of another shape raised TypeError on load; an optimizer tensor of another
    # shape passed the load and then raised InternalCompilerError ("a bug in netc") on training
    m, x = trained
    m.save(tmp_path / "m.npz")
    z = dict(np.load(tmp_path / "m.npz"))
    np.savez(tmp_path / "step.npz", **{**z, "t:opt.step": np.array([1.5, 2])})
    with pytest.raises(DataError, match="'opt.step' is float64.2., the step counter is an int32"):
        netc.load(tmp_path / "step.npz", backend="interpret")
    moment = next(k for k in z if k.startswith("t:opt.") and k != "t:opt.step")
    np.savez(tmp_path / "opt.npz", **{**z, moment: np.zeros((2, 2), np.float32)})
    m2 = netc.load(tmp_path / "opt.npz", backend="interpret")
    with pytest.raises(DataError, match=f"saved tensor '{moment[2:]}' is float32.2, 2."):
        m2.train_step(x=x, y=np.zeros(len(x), np.int32))


def test_safetensors_header_of_the_wrong_shape(tmp_path):
    # "__metadata__": [1] exited 3: "internal compiler error: AttributeError: 'list' object has
    # no attribute 'get'" (netc.load, and --weights / init_from)
    import struct
    head = b'{"__metadata__": [1]}'
    p = tmp_path / "m.safetensors"
    p.write_bytes(struct.pack("<Q", len(head)) + head)
    with pytest.raises(DataError, match="__metadata__ is not a JSON object"):
        netc.load(p)


def test_a_saved_model_keeps_its_imports(tmp_path, monkeypatch):
    # a model importing "layers/common.net" was saved with its own text only and a relative
    # path: loading it from another folder, or after the layers file moved or changed, failed
    # ("cannot import 'layers/common.net': .../layers/common.net does not exist") or rebuilt
    # with the changed layers
    import shutil
    (tmp_path / "proj" / "layers").mkdir(parents=True)
    shutil.copy(os.path.join(os.path.dirname(MLP), "regression.net"), tmp_path / "proj" / "m.net")
    shutil.copy(os.path.join(os.path.dirname(MLP), "layers", "common.net"),
                tmp_path / "proj" / "layers" / "common.net")
    monkeypatch.chdir(tmp_path / "proj")
    m = netc.compile("m.net", backend="interpret")
    m.save(tmp_path / "m.npz")
    x = np.random.default_rng(0).random((4, 8), dtype=np.float32)
    want = m.predict(x=x)
    (tmp_path / "proj" / "layers" / "common.net").write_text("layer Broken( {\n")
    monkeypatch.chdir(tmp_path)
    m2 = netc.load(tmp_path / "m.npz", backend="interpret")
    np.testing.assert_array_equal(m2.predict(x=x), want)
