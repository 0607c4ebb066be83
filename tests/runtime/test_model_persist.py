"""netc.compile / save / load end to end, with `build` replaced by a hand-built stand-in."""

import os

import numpy as np
import pytest
from model_cases import blobs, fake_build, gan_builder

import netc
import netc.model
from netc import Model
from netc.compiler.errors import DataError


@pytest.fixture
def net_file(tmp_path, monkeypatch):
    monkeypatch.setattr(netc.model, "_build", fake_build)
    path = tmp_path / "mlp.net"
    path.write_text("model mlp(batch = 8, dropout = 0.0) { ... }\n")
    return path


def test_compile_passes_overrides_and_dtype(net_file):
    m = netc.compile(net_file, dropout=0.25, dtype="float32", seed=3)
    assert m.model_params == {"batch": 8, "dropout": 0.25}
    assert m.params["fc1.W"].dtype == np.float32 and m.inputs["x"] == ((8, 4), "f32")
    other = netc.compile(net_file, seed=4)
    assert not np.array_equal(other.params["fc1.W"], m.params["fc1.W"])  # seeded init


def test_save_load_round_trip_is_bitwise(net_file, tmp_path):
    m = netc.compile(net_file, dropout=0.5)
    data = blobs()
    for s in range(3):
        m.train_step(**blobs(seed=s))
    out = tmp_path / "w.npz"
    m.save(out)
    m2 = netc.load(out)
    assert m2.step == m.step == 3
    assert m2.model_params == m.model_params
    assert set(m2.optimizer_state) == set(m.optimizer_state) and "opt.fc1.W.v" in m2.optimizer_state
    for table in ("params", "state", "optimizer_state"):
        for k, v in getattr(m, table).items():
            assert getattr(m2, table)[k].tobytes() == v.tobytes(), k
    assert m2.predict(x=data["x"]).tobytes() == m.predict(x=data["x"]).tobytes()
    # training continues identically: optimizer state, step and RNG (dropout) all restored
    assert m2.train_step(**data) == m.train_step(**data)
    for k, v in m.params.items():
        assert m2.params[k].tobytes() == v.tobytes(), k
    with np.load(out, allow_pickle=False) as z:  # self-contained, no pickled objects
        assert "t:fc1.W" in z.files and "meta" in z.files


def test_load_does_not_reread_the_source_file(net_file, tmp_path):
    m = netc.compile(net_file)
    out = tmp_path / "w.npz"
    m.save(out)
    os.remove(net_file)
    assert netc.load(out).predict(x=blobs()["x"]).shape == (8, 3)


def test_save_is_atomic(net_file, tmp_path, monkeypatch):
    m = netc.compile(net_file)
    out = tmp_path / "w.npz"
    m.save(out)
    good = out.read_bytes()
    m.train_step(**blobs())

    def broken(f, **arrays):
        f.write(b"PK partial")
        raise OSError("disk full")

    monkeypatch.setattr(netc.model.np, "savez", broken)
    with pytest.raises(DataError, match="cannot write .*w.npz': disk full"):
        m.save(out)
    with pytest.raises(DataError, match="disk full"):
        m.save(tmp_path / "fresh.npz")
    assert out.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.net", "w.npz"]


def test_load_rejects_other_files(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, a=np.zeros(2))
    with pytest.raises(DataError, match="not a saved netc model"):
        netc.load(path)


def test_multi_step_model_trains_each_step():
    m = Model._from_builder(gan_builder())
    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(size=(4, 3)) + 2, "z": rng.normal(size=(4, 2))}
    before = {k: v.copy() for k, v in m.params.items()}
    total = m.train_step(**feeds)
    assert set(m.last_losses) == {"d_loss", "g_loss"}
    assert total == pytest.approx(sum(m.last_losses.values()))
    assert all(not np.array_equal(m.params[k], before[k]) for k in before)
    assert m.step == 1 and set(m.gradients(**feeds)) == set(before)


def test_load_weights_from_a_damaged_file_is_a_data_error(net_file, tmp_path):
    # a truncated or corrupt archive raised a raw zipfile.BadZipFile, and an .npy file a
    # TypeError, from load_weights (init_from / --weights)
    m = netc.compile(net_file)
    m.save(tmp_path / "good.npz")
    data = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "half.npz").write_bytes(data[:len(data) // 2])
    np.save(tmp_path / "one.npy", np.zeros(3))
    for path, message in [(tmp_path / "half.npz", "truncated or corrupt"),
                          (tmp_path / "one.npy", "an .npy file"),
                          (net_file, "not a zip archive")]:
        with pytest.raises(DataError, match=message):
            m.load_weights(path)


def test_path_and_extra_arguments_of_the_wrong_type_are_usage_errors(net_file, tmp_path):
    # each raised a raw TypeError (from os.fspath or json.dumps); an unknown format was a
    # DataError, as if a file were at fault
    from netc.compiler.errors import UsageError
    m = netc.compile(net_file)
    for call in (lambda: netc.compile(5), lambda: netc.load(None), lambda: m.save(3.5),
                 lambda: m.load_weights(None), lambda: netc.compile(""),
                 lambda: m.save(tmp_path / "m.npz", extra={"a": object()}),
                 lambda: m.save(tmp_path / "m.npz", format="h5"),
                 lambda: netc.compile("model m() { input x: f32[2] }")):
        with pytest.raises(UsageError):
            call()
    m.save(os.fsencode(tmp_path / "b.npz"))  # bytes paths are paths
    assert netc.load(os.fsencode(tmp_path / "b.npz")).step == 0


def test_load_weights_kinds(net_file, tmp_path):
    # kinds="param" matched by substring ("param" in "param" and also "a" in "param"...),
    # kinds="parm" loaded nothing and blamed the file
    from netc.compiler.errors import UsageError
    m = netc.compile(net_file)
    m.save(tmp_path / "w.npz")
    assert m.load_weights(tmp_path / "w.npz", kinds="param") == \
        m.load_weights(tmp_path / "w.npz", kinds=("param",))
    with pytest.raises(UsageError, match="'parm' is no kind of tensor"):
        m.load_weights(tmp_path / "w.npz", kinds="parm")
