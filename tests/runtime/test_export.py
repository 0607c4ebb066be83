"""`netc export`: the training step and inference as a standalone C library.

The library runs the code `netc.compile` runs, so it must match the JIT bit for bit: losses of
train_step and train_steps, predictions and every tensor afterwards, with 1 and 2 threads, dropout
included; a C program links it without Python; bad arguments are error codes, never a crash."""

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import netc
from netc.compiler.errors import UsageError
from netc.export import export_library
from netc.feeds import index_ranges

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
CC = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler to link the library")

# an MLP with dropout (its RNG words must match), two inputs and an integer label
MLP = """
model pair(batch = 6) {
    input  a: f32[batch, 5]
    input  b: f32[batch, 3]
    target y: i32[batch]
    h = concat([a, b], axis = 1) -> Dense(16) as fc1 -> relu -> dropout(0.25)
    logits = h -> Dense(4) as fc2
    output logits
    loss cross_entropy(logits, y)
}
train pair { optimizer = adam(lr = 0.01); schedule = cosine(warmup = 1); epochs = 3; batch = 6 }
"""


class Lib:
    """ctypes access to an exported library (the same calls a C program makes)."""

    def __init__(self, model, path, name):
        self.model, self.dll, self.name = model, ctypes.CDLL(path), name
        self.fn("create").restype = ctypes.c_void_p
        self.fn("tensor").restype = ctypes.c_void_p
        self.fn("tensor_name").restype = ctypes.c_char_p
        self.fn("step").restype = ctypes.c_int64

    def fn(self, what):
        f = getattr(self.dll, f"{self.name}_{what}")
        if what not in ("create", "tensor", "tensor_name", "step"):
            f.restype = ctypes.c_int
        return f

    def create(self, threads):
        h = self.fn("create")(threads)
        return ctypes.c_void_p(h) if h else None

    @staticmethod
    def ptr(a):
        return None if a is None else a.ctypes.data_as(ctypes.c_void_p)

    def train_step(self, h, feeds):
        loss = ctypes.c_double()
        order = [*self.model.inputs, *self.model.targets]
        rc = self.fn("train_step")(h, *[self.ptr(feeds.get(k)) for k in order], ctypes.byref(loss))
        return rc, loss.value

    def train_steps(self, h, data, index, rows):
        loss = ctypes.c_double()
        order = [*self.model.inputs, *self.model.targets]
        rc = self.fn("train_steps")(h, *[self.ptr(data[k]) for k in order], ctypes.c_int64(rows),
                                    self.ptr(index), ctypes.c_int64(len(index)),
                                    ctypes.byref(loss))
        return rc, loss.value

    def predict(self, h, feeds):
        outs = {k: np.full(s, -7, {"f32": np.float32, "i32": np.int32}[d])
                for k, (s, d) in self.model.outputs.items()}
        rc = self.fn("predict")(h, *[self.ptr(feeds[k]) for k in self.model.inputs],
                                *[self.ptr(outs[k]) for k in outs])
        return rc, outs

    def tensors(self, h, like):
        out = {}
        for i in range(len(like.store.arrays)):
            name = self.fn("tensor_name")(i).decode()
            ref = like.store.arrays[name]
            raw = ctypes.cast(self.fn("tensor")(h, i), ctypes.POINTER(ctypes.c_uint8))
            out[name] = np.ctypeslib.as_array(raw, (ref.nbytes,)).view(ref.dtype).reshape(
                ref.shape).copy()
        return out


def batch_data(model, rows, seed):
    rng = np.random.default_rng(seed)
    limits = {k: v[0] for k, v in index_ranges(model._base).items()}
    out = {}
    for k, (s, d) in {**model.inputs, **model.targets}.items():
        shape = (rows, *s[1:])
        out[k] = (rng.integers(0, limits.get(k, 3), shape).astype(np.int32) if d == "i32"
                  else rng.normal(size=shape).astype(np.float32))
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The MLP and LeNet (conv, BatchNorm, two outputs, one of them integer) exported once."""
    if CC is None:
        pytest.skip("no C compiler to link the library")
    out = {}
    folder = tmp_path_factory.mktemp("export")
    (folder / "pair.net").write_text(MLP)
    for path in (str(folder / "pair.net"), os.path.join(ROOT, "lenet.net")):
        m = netc.compile(path, seed=5)
        e = export_library(m, str(folder / m.name))
        out[m.name] = (path, e, Lib(m, e.library, m.name))
    return out


@needs_cc
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", ["pair", "lenet"])
def test_library_matches_the_jit_bitwise(exported, case, threads):
    path, _e, lib = exported[case]
    ref = netc.compile(path, seed=5, threads=threads)
    h = lib.create(threads)
    assert h is not None
    try:
        feeds = batch_data(ref, ref.fixed_batch or ref.model_params["batch"], 1)
        for _ in range(3):
            rc, loss = lib.train_step(h, feeds)
            assert rc == 0
            assert loss == ref.train_step(**feeds)
        assert lib.fn("step")(h) == 3
        batch = len(next(iter(feeds.values())))
        data = batch_data(ref, 5 * batch, 2)
        index = np.random.default_rng(3).permutation(5 * batch)[:4 * batch].astype(np.int64)
        rc, mean = lib.train_steps(h, data, index, 5 * batch)
        want = ref.train_steps(index, **data)
        assert rc == 0 and mean == sum(want.values())
        rc, outs = lib.predict(h, {k: feeds[k] for k in ref.inputs})
        pred = ref.predict(**{k: feeds[k] for k in ref.inputs})
        pred = pred if isinstance(pred, dict) else {next(iter(ref.outputs)): pred}
        assert rc == 0
        for k in outs:
            assert np.array_equal(outs[k], pred[k]), k
        got = lib.tensors(h, ref)
        assert set(got) == set(ref.store.arrays)
        for k, v in got.items():
            assert np.array_equal(v, ref.store.arrays[k]), k
    finally:
        lib.fn("destroy")(h)


NO_INPUTS = """
model gen(batch = 3) {
    target y: f32[batch, 2]
    h = randn([batch, 4]) -> Dense(2) as fc
    output h
    loss mse(h, y)
}
"""
UNUSED_INPUT = """
model emb(batch = 1) {
    input tok: i32[batch, 5]
    input unused: f32[batch, 2]
    target y: i32[batch]
    h = tok -> Embedding(7, 4) as e -> flatten -> Dense(3) as fc
    output h
    loss cross_entropy(h, y)
}
"""


@needs_cc
@pytest.mark.parametrize("text", [NO_INPUTS, UNUSED_INPUT], ids=["no_inputs", "unused_input"])
def test_models_without_inputs_or_with_unused_ones(tmp_path, text):
    # a model without inputs wrote `int gen_predict(gen *m, , float *out_h)`, which no C
    # compiler takes
    (tmp_path / "m.net").write_text(text)
    m = netc.compile(str(tmp_path / "m.net"), seed=4)
    ref = netc.compile(str(tmp_path / "m.net"), seed=4)
    e = export_library(m, str(tmp_path / "lib"))
    lib = Lib(m, e.library, m.name)
    h = lib.create(2)
    try:
        feeds = batch_data(m, m.model_params["batch"], 1)
        for _ in range(2):
            assert lib.train_step(h, feeds)[1] == ref.train_step(**feeds)
        rc, outs = lib.predict(h, feeds)
        want = ref.predict(**{k: feeds[k] for k in ref.inputs})
        assert rc == 0 and np.array_equal(outs["h"], want)
    finally:
        lib.fn("destroy")(h)


@needs_cc
def test_bad_arguments_are_error_codes(exported):
    _path, _e, lib = exported["pair"]
    m = lib.model
    assert lib.create(0) is None and lib.create(100000) is None
    h = lib.create(1)
    try:
        feeds = batch_data(m, 6, 1)
        before = lib.tensors(h, m)
        bad = dict(feeds, y=feeds["y"].copy())
        bad["y"][2] = 4  # the logits have 4 classes
        assert lib.train_step(h, bad)[0] == -1
        bad["y"][2] = -1
        assert lib.train_step(h, bad)[0] == -1
        assert lib.train_step(h, dict(feeds, a=None))[0] == -2
        assert lib.fn("train_step")(None, *[lib.ptr(feeds[k]) for k in ("a", "b", "y")],
                                    None) == -2
        index = np.arange(5, dtype=np.int64)  # not whole batches of 6
        assert lib.train_steps(h, feeds, index, 6)[0] == -2
        index = np.array([0, 1, 2, 3, 4, 6], dtype=np.int64)  # row 6 of 6
        assert lib.train_steps(h, feeds, index, 6)[0] == -1
        after = lib.tensors(h, m)
        for k in before:  # nothing ran
            assert np.array_equal(before[k], after[k]), k
        assert lib.fn("tensor_index")(b"fc1.W") >= 0
        assert lib.fn("tensor_index")(b"nope") == -1
        assert lib.fn("tensor_name")(10 ** 6) is None
    finally:
        lib.fn("destroy")(h)


@needs_cc
def test_a_c_program_links_and_trains(exported, tmp_path):
    # no Python in the loop: a C program against the shared library, warnings as errors
    _path, e, _lib = exported["lenet"]
    folder = os.path.dirname(e.header)
    (tmp_path / "main.c").write_text(r"""
#include <stdio.h>
#include <stdlib.h>
#include "lenet.h"
int main(void) {
    lenet *m = lenet_create(2);
    if (!m) return 2;
    static float x[LENET_x_SIZE]; static int32_t y[LENET_y_SIZE];
    for (int i = 0; i < LENET_x_SIZE; i++) x[i] = (float)(i % 17) / 17.0f;
    for (int i = 0; i < LENET_y_SIZE; i++) y[i] = i % 10;
    double first = 0, loss = 0;
    for (int s = 0; s < 30; s++) {
        if (lenet_train_step(m, x, y, &loss)) return 3;
        if (s == 0) first = loss;
    }
    static float probs[LENET_out_probs_SIZE]; static int32_t label[LENET_out_label_SIZE];
    if (lenet_predict(m, x, probs, label)) return 4;
    printf("%lld %.6f %.6f\n", (long long)lenet_step(m), first, loss);
    lenet_destroy(m);
    return loss < first ? 0 : 5;
}
""")
    exe = str(tmp_path / "main")
    subprocess.run([CC, "-Wall", "-Wextra", "-Werror", "-O2", "-I", folder, "-o", exe,
                    str(tmp_path / "main.c"), "-L", folder, "-llenet", f"-Wl,-rpath,{folder}"],
                   check=True, capture_output=True, text=True)
    r = subprocess.run([exe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.split()[0] == "30"
    # the glue compiles cleanly on its own too
    subprocess.run([CC, "-Wall", "-Wextra", "-Werror", "-O2", "-c", "-o",
                    str(tmp_path / "glue.o"), e.glue], check=True, capture_output=True)


@needs_cc
def test_a_saved_model_continues_bitwise(tmp_path):
    # export what was trained: parameters, optimizer state and the step counter carry over
    (tmp_path / "pair.net").write_text(MLP)
    m = netc.compile(str(tmp_path / "pair.net"), seed=2)
    feeds = batch_data(m, 6, 4)
    for _ in range(2):
        m.train_step(**feeds)
    m.save(str(tmp_path / "w.npz"))
    e = export_library(netc.load(str(tmp_path / "w.npz")), str(tmp_path / "lib"))
    lib = Lib(m, e.library, "pair")
    h = lib.create(1)
    try:
        assert lib.fn("step")(h) == 2
        assert lib.train_step(h, feeds)[1] == m.train_step(**feeds)
    finally:
        lib.fn("destroy")(h)


@needs_cc
def test_the_schedule_counts_the_given_steps_per_epoch(tmp_path):
    (tmp_path / "pair.net").write_text(MLP)
    m = netc.compile(str(tmp_path / "pair.net"), seed=1)
    e = export_library(m, str(tmp_path / "lib"), steps_per_epoch=3)
    assert "cosine over 3 epochs of 3 step(s)" in Path(e.header).read_text()
    ref = netc.compile(str(tmp_path / "pair.net"), seed=1)
    ref.steps_per_epoch = 3
    lib = Lib(m, e.library, "pair")
    h = lib.create(1)
    try:
        feeds = batch_data(m, 6, 4)
        for _ in range(5):  # warm-up epoch, then the cosine: every step's rate differs
            assert lib.train_step(h, feeds)[1] == ref.train_step(**feeds)
    finally:
        lib.fn("destroy")(h)


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "netc", *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


def test_cli_export_and_its_mistakes(tmp_path):
    (tmp_path / "pair.net").write_text(MLP)
    r = run_cli("export", "pair.net", "--no-link", "-o", "out", "--set", "batch=4",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["pair.c", "pair.h", "pair_code.o"]
    header = (tmp_path / "out" / "pair.h").read_text()
    assert "#define PAIR_a_SIZE 20" in header and "int pair_train_step(pair *m" in header
    assert (os.stat(tmp_path / "out" / "pair.h").st_mode & 0o777) != 0o600
    r = run_cli("export", "pair.net", "--name", "int", "-o", "x", cwd=tmp_path)
    assert r.returncode == 2 and "must be a C identifier" in r.stderr
    (tmp_path / "file").write_text("")
    r = run_cli("export", "pair.net", "-o", "file", cwd=tmp_path)
    assert r.returncode == 1 and "file exists and is not a folder" in r.stderr
    r = run_cli("export", "pair.net", "--set", "bach=4", cwd=tmp_path)
    assert r.returncode == 1 and "did you mean 'batch'" in r.stderr
    assert "Traceback" not in r.stderr


def test_float64_models_are_refused(tmp_path):
    (tmp_path / "pair.net").write_text(MLP)
    m = netc.compile(str(tmp_path / "pair.net"), dtype="float64")
    with pytest.raises(UsageError, match="only float32 models"):
        export_library(m, str(tmp_path / "out"), link=False)
