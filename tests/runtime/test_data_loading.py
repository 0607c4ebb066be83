"""runtime.data: formats, bundled sets, binding to model inputs, and every bad-file error."""

import gzip
import struct

import numpy as np
import pytest

from netc.compiler.errors import DataError
from netc.data import BUNDLED, bind_arrays, load_arrays, load_idx, split_validation

WANT = {"x": ((4, 3), "f32"), "y": ((4,), "i32")}


def test_digits_is_the_real_uci_set():
    raw, _ = load_arrays("digits")
    assert raw["x"].shape == (1797, 64) and raw["y"].shape == (1797,)
    assert raw["x"].min() >= 0.0 and raw["x"].max() <= 1.0
    assert np.bincount(raw["y"]).tolist()[:3] == [178, 182, 177]
    img = bind_arrays(raw, {"x": ((8, 1, 8, 8), "f32"), "y": ((8,), "i32")}, "digits")
    assert img["x"].shape == (1797, 1, 8, 8)


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_sets_are_deterministic(name):
    a, _ = load_arrays(name, seed=1)
    b, _ = load_arrays(name, seed=1)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        assert np.all(np.isfinite(a[k]))


def test_npz_binds_by_name(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.ones((10, 3)), y=np.arange(10) % 2, extra=np.zeros(2))
    raw, src = load_arrays(str(p))
    out = bind_arrays(raw, WANT, src)
    assert out["x"].dtype == np.float32 and out["y"].dtype == np.int32


def test_csv_binds_named_and_remaining_columns(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b,c,y\n1,2,3,0\n4,5,6,1\n")
    raw, src = load_arrays(str(p))
    out = bind_arrays(raw, WANT, src)
    np.testing.assert_array_equal(out["x"], [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(out["y"], [0, 1])


def test_predicting_from_a_labelled_csv_leaves_the_label_column_out(tmp_path):
    # predict binds only the inputs: the remaining-columns rule once gave 'y' to x as a fourth
    # feature ("rows of shape [4], but the model expects [3]")
    import netc
    from netc.training import model_arrays
    p = tmp_path / "d.csv"
    p.write_text("a,b,c,y\n1,2,3,0\n4,5,6,1\n")
    raw, src = load_arrays(str(p))
    out = bind_arrays(raw, {"x": WANT["x"]}, src, ignore=("y",))
    assert list(out) == ["x"]
    np.testing.assert_array_equal(out["x"], [[1, 2, 3], [4, 5, 6]])
    net = tmp_path / "m.net"
    net.write_text("model m(batch = 2) {\n    input x: f32[batch, 3]\n    target y: i32[batch]\n"
                   "    h = x -> Dense(2)\n    output h\n    loss cross_entropy(h, y)\n}\n")
    m = netc.compile(net, backend="interpret")
    assert list(model_arrays(m, str(p), 0, with_targets=False)) == ["x"]
    assert m.predict(**model_arrays(m, str(p), 0, with_targets=False)).shape == (2, 2)


def test_idx_files_and_folder(tmp_path):
    imgs = np.arange(2 * 3 * 1, dtype=np.uint8).reshape(2, 3, 1)
    (tmp_path / "mnist").mkdir()
    with gzip.open(tmp_path / "mnist" / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 3, 1) + imgs.tobytes())
    (tmp_path / "mnist" / "train-labels-idx1-ubyte").write_bytes(
        bytes([0, 0, 8, 1]) + struct.pack(">I", 2) + bytes([7, 3]))
    raw, src = load_arrays(str(tmp_path / "mnist"))
    out = bind_arrays(raw, {"x": ((4, 3), "f32"), "y": ((4,), "i32")}, src)
    np.testing.assert_array_equal(out["x"], imgs.reshape(2, 3))
    np.testing.assert_array_equal(out["y"], [7, 3])


@pytest.mark.parametrize("content, message", [
    (b"PK\x03\x04garbage", "not a readable .npz"),
    (b"", "not a readable .npz"),
    # these said "not a readable .npz file (This file contains pickled (object) data. If you
    # trust the file you can load it unsafely using the `allow_pickle=` keyword ...)"
    (b"x,y\n1,2\n", "not a zip archive of arrays"),
    (b"\x80\x04\x95\x05\x00", "not a zip archive of arrays"),
])
def test_corrupt_npz(tmp_path, content, message):
    p = tmp_path / "bad.npz"
    p.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_arrays(str(p))


def test_truncated_npz(tmp_path):
    p = tmp_path / "t.npz"
    np.savez(p, x=np.ones((100, 3)), y=np.zeros(100))
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(DataError, match="t.npz"):
        raw, src = load_arrays(str(p))
        bind_arrays(raw, WANT, src)


def test_truncated_idx(tmp_path):
    p = tmp_path / "x-idx3-ubyte"
    p.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 5, 3, 1) + b"\x00" * 4)
    with pytest.raises(DataError, match="truncated IDX file"):
        load_idx(str(p))


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.ones((5, 3))}, "no array named 'y'"),
    ({"x": np.ones((5, 4)), "y": np.zeros(5)}, "rows of shape \\[4\\], but the model expects"),
    ({"x": np.full((5, 3), np.nan), "y": np.zeros(5)}, "NaN or infinite"),
    ({"x": np.ones((5, 3)), "y": np.full(5, 0.5)}, "must hold integers"),
    ({"x": np.ones((5, 3)), "y": np.zeros(4)}, "has 4 rows but 'x' has 5"),
    ({"x": np.array([["a", "b", "c"]]), "y": np.zeros(1)}, "numeric array is needed"),
])
def test_bad_arrays_name_the_array(arrays, message):
    with pytest.raises(DataError, match=message):
        bind_arrays(arrays, WANT, "f.npz")


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_arrays(str(tmp_path / "nope.npz"))
    p = tmp_path / "d.txt"
    p.write_text("1 2 3")
    with pytest.raises(DataError, match="unknown data format"):
        load_arrays(str(p))


def test_bad_csv_rows(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b\n1,2\n3\n")
    with pytest.raises(DataError, match="d.csv:3: 1 values"):
        load_arrays(str(p))
    p.write_text("a,b\n1,x\n")
    with pytest.raises(DataError, match="'x' is not a number"):
        load_arrays(str(p))


def test_stratified_split_keeps_class_balance():
    y = np.repeat(np.arange(4), 25).astype(np.int32)
    train, val = split_validation({"x": np.arange(100.0), "y": y}, 0.2, 0, stratify=y)
    assert np.bincount(val["y"]).tolist() == [5, 5, 5, 5]
    assert len(train["x"]) == 80 and not set(train["x"]) & set(val["x"])


def test_stratified_split_holds_out_its_share_with_small_classes():
    # 20 rows of 10 classes: every class's 2 * 0.2 once rounded to 0, so nothing was held out
    # and fitting failed with "the validation data has 0 rows, fewer than the fixed batch of None"
    y = np.arange(20).astype(np.int32) % 10
    train, val = split_validation({"x": np.arange(20.0), "y": y}, 0.2, 0, stratify=y)
    assert len(val["x"]) == 4 and len(train["x"]) == 16
    assert len(set(val["y"])) == 4  # four classes give one row each
    assert sorted(np.concatenate([train["x"], val["x"]])) == list(np.arange(20.0))


@pytest.mark.parametrize("n,fraction,pattern", [
    (2, 0.2, "validation = 0.2 of 2 row\\(s\\) leaves no rows to validate on"),
    (0, 0.2, "validation = 0.2 of 0 row\\(s\\) leaves no rows to validate on"),
    (3, 0.9, "validation = 0.9 of 3 row\\(s\\) leaves no rows to train on"),
])
def test_split_that_leaves_a_side_empty_is_a_data_error(n, fraction, pattern):
    y = np.zeros(n, np.int32)
    for stratify in (None, y):
        with pytest.raises(DataError, match=pattern):
            split_validation({"x": np.arange(float(n)), "y": y}, fraction, 0, stratify=stratify)


def test_npy_named_npz_is_a_data_error(tmp_path):
    # an .npy file saved under an .npz name raised "TypeError: 'numpy.ndarray' object does not
    # support the context manager protocol" (np.load returns the array itself)
    np.save(tmp_path / "a.npy", np.zeros((4, 3)))
    (tmp_path / "a.npy").rename(tmp_path / "a.npz")
    with pytest.raises(DataError, match="an .npy file holding one unnamed array"):
        load_arrays(str(tmp_path / "a.npz"))


def test_object_arrays_are_never_unpickled(tmp_path):
    np.savez(tmp_path / "o.npz", x=np.array([[1, 2, 3]] * 4, dtype=object), y=np.zeros(4))
    with pytest.raises(DataError, match="'x' holds Python objects, which netc never unpickles"):
        load_arrays(str(tmp_path / "o.npz"))


def test_csv_with_a_byte_order_mark(tmp_path):
    # Excel's BOM stuck to the first column name: "\ufeffx_0" bound to no input, and the
    # remaining columns made "array 'x' has rows of shape [2], but the model expects [3]"
    p = tmp_path / "bom.csv"
    p.write_text("\ufeffx_0,x_1,x_2,y\n" + "1,2,3,0\n" * 4, encoding="utf-8")
    raw, src = load_arrays(str(p))
    assert bind_arrays(raw, WANT, src)["x"].shape == (4, 3)


def test_csv_module_errors_are_data_errors(tmp_path):
    # a field over the csv module's size limit exited 3: "internal compiler error: Error:
    # field larger than field limit (131072)"
    p = tmp_path / "long.csv"
    p.write_text("a,b\n1,2\n1," + "9" * 200_000 + "\n")
    with pytest.raises(DataError, match="long.csv:3: field larger than field limit"):
        load_arrays(str(p))


def test_float64_values_beyond_f32_are_data_errors(tmp_path):
    # 1e39 in a float64 file passed the finiteness check, became inf in f32 (with a numpy
    # RuntimeWarning on stderr) and was reported later against the .net file's input
    x = np.ones((4, 3))
    x[1, 2] = 1e39
    with pytest.raises(DataError, match=r"'x' has values beyond the range of f32 \(first at "
                                        r"flat index 5: 1e\+39\)"):
        bind_arrays({"x": x, "y": np.zeros(4)}, WANT, "d.npz")


def test_csv_without_a_header_says_so():
    # said only "no columns for 'x', 'y' (columns: 0.12, -0.13, 0.64, 1)"
    raw = {"__columns__": ["0.5", "1", "2", "0"], "__data__": np.ones((3, 4))}
    with pytest.raises(DataError) as e:
        bind_arrays(raw, WANT, "d.csv")
    assert "a .csv needs a header row naming its columns" in e.value.format()


def test_forged_or_corrupt_idx_files(tmp_path):
    # a header whose sizes multiply past int64 wrapped np.prod and exited 3 with "ValueError:
    # cannot reshape array of size 0"; a corrupt gzip stream exited 3 with zlib's "Error -3
    # while decompressing data"
    p = tmp_path / "huge-idx3-ubyte"
    p.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**31, 2**31, 2**31) + b"\0" * 10)
    with pytest.raises(DataError, match="truncated IDX file: 10 bytes"):
        load_idx(str(p))
    good = gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 2) + bytes([7, 3]))
    q = tmp_path / "bad-idx1-ubyte.gz"
    q.write_bytes(good[:10] + b"\xff" * 8 + good[18:])
    with pytest.raises(DataError, match="cannot read the IDX file"):
        load_idx(str(q))


def test_unlistable_data_folder(tmp_path, monkeypatch):
    # an unreadable folder given as --data exited 3: "internal compiler error: PermissionError"
    import os
    (tmp_path / "idx").mkdir()

    def denied(path):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(os, "listdir", denied)
    with pytest.raises(DataError, match="cannot list the folder \\(Permission denied\\)"):
        load_arrays(str(tmp_path / "idx"))
