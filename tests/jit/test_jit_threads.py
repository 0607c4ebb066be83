"""Threads, the native multi-step loop and the compile cache of the JIT backend."""

from __future__ import annotations

import os

import numpy as np

import netc
from netc.jit_cache import cache_dir, compile_cached

ROOT = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)
MLP = os.path.join(ROOT, "examples", "digits_mlp.net")


def _data(m, n, seed=0):
    rng = np.random.default_rng(seed)
    xs = m.inputs["x"][0]
    return (rng.uniform(0, 1, (n,) + xs[1:]).astype(np.float32),
            rng.integers(0, 10, n).astype(np.int32))


def _train(threads, steps=20, seed=7):
    m = netc.compile(MLP, backend="jit", threads=threads, seed=seed, batch=128, hidden=256)
    x, y = _data(m, 128 * 4)
    for s in range(steps):
        lo = (s % 4) * 128
        m.train_step(x=x[lo:lo + 128], y=y[lo:lo + 128])
    return {k: np.array(m.params[k]) for k in m.params}


def test_two_threads_bitwise_reproducible_with_dropout():
    a, b = _train(2), _train(2)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    one = _train(1)
    for k in a:  # another thread count: same math up to rounding
        np.testing.assert_allclose(a[k], one[k], rtol=1e-4, atol=1e-5)


def test_train_steps_native_loop_equals_step_by_step():
    ma = netc.compile(MLP, backend="jit", seed=3, batch=16)
    mb = netc.compile(MLP, backend="jit", seed=3, batch=16)
    x, y = _data(ma, 64, seed=1)
    index = np.random.default_rng(2).permutation(64)
    eng, _ = mb._engine("train", None)
    ma_losses = []
    for s in range(4):
        rows = index[s * 16:(s + 1) * 16]
        ma_losses.append(ma.train_step(x=x[rows], y=y[rows]))
    mean = eng.train_steps({"x": x, "y": y}, index)
    assert mb.step == ma.step == 4
    for k in ma.params:
        assert np.array_equal(ma.params[k], mb.params[k]), k
    np.testing.assert_allclose(sum(mean.values()), np.mean(ma_losses), rtol=1e-6)


def test_params_are_live_views():
    m = netc.compile(MLP, backend="jit", seed=1, batch=8)
    w = m.params["fc2.b"]
    x, y = _data(m, 8)
    m.train_step(x=x, y=y)
    assert w is m.params["fc2.b"] and np.any(w != 0)
    m.params["fc2.b"] = np.full(w.shape, 3.0, np.float32)
    g = m.gradients(x=x, y=y)
    assert np.all(w == 3.0) and g["fc2.b"].shape == w.shape


def test_cache_roundtrip_and_corrupt_entry(tmp_path, monkeypatch):
    from llvmlite import ir

    from netc.compiler.codegen.target import get_target
    monkeypatch.setenv("NETC_CACHE_DIR", str(tmp_path))
    assert cache_dir() == str(tmp_path)
    built = []

    def build():
        mod = ir.Module("t")
        fn = ir.Function(mod, ir.FunctionType(ir.IntType(32), []), name="answer")
        ir.IRBuilder(fn.append_basic_block()).ret(ir.Constant(ir.IntType(32), 42))
        built.append(1)
        return mod, {"n": 1}

    import netc.jit_cache as jc
    key = f"answer-test-{os.getpid()}"
    _, meta, hit = compile_cached(key, build, get_target())
    assert not hit and len(built) == 1 and meta == {"n": 1}
    jc._memory.clear()
    _, meta, hit = compile_cached(key, build, get_target())
    assert hit and len(built) == 1 and meta == {"n": 1}
    files = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs]
    assert len(files) == 1 and files[0].endswith(".o")
    with open(files[0], "r+b") as f:  # corrupt it: rebuilt, not a crash
        f.seek(40)
        f.write(b"garbage")
    jc._memory.clear()
    comp, _, hit = compile_cached(key, build, get_target())
    assert not hit and len(built) == 2
    import ctypes
    assert ctypes.CFUNCTYPE(ctypes.c_int32)(comp.address("answer"))() == 42


def test_lenet_two_threads_equals_interpreter():
    path = os.path.join(ROOT, "examples", "lenet.net")
    mi = netc.compile(path, backend="interpret", seed=2, batch=16)
    mj = netc.compile(path, backend="jit", seed=2, threads=2, batch=16)
    rng = np.random.default_rng(4)
    feeds = {n: (rng.integers(0, 10, s).astype(np.int32) if d == "i32"
                 else rng.uniform(0, 1, s).astype(np.float32))
             for n, (s, d) in {**mi.inputs, **mi.targets}.items()}
    gi = mi.gradients(**feeds)
    for _ in range(8):  # races between concurrent kernels would show up as occasional misses
        gj = mj.gradients(**feeds)
        for k in gi:
            np.testing.assert_allclose(gj[k], gi[k], rtol=1e-4, atol=1e-5, err_msg=k)
    for _ in range(2):
        np.testing.assert_allclose(mj.train_step(**feeds), mi.train_step(**feeds), rtol=1e-4)
    for k in mi.params:
        np.testing.assert_allclose(mj.params[k], mi.params[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_cache_concurrent_writers_leave_a_whole_entry(tmp_path):
    import threading

    import netc.jit_cache as jc
    from netc.compiler.disk_cache import read_entry, write_entry
    path = str(tmp_path / "ab" / "entry.o")
    blobs = [bytes([i]) * (50_000 + i) for i in range(8)]
    threads = [threading.Thread(target=write_entry, args=(path, jc._pack([b, b[:7]], {"i": i})))
               for i, b in enumerate(blobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    objs, meta = jc._unpack(read_entry(path))
    assert objs == [blobs[meta["i"]], blobs[meta["i"]][:7]]
    assert os.listdir(tmp_path / "ab") == ["entry.o"]  # no temporary files left behind


def test_cache_key_version_is_the_installed_one():
    import importlib.metadata

    import netc.jit_cache as jc
    assert jc._version() == importlib.metadata.version("netc")
