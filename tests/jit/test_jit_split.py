"""A whole-step module compiled in parts at once (runtime/jit_split.py): the parts together define
every function once where other parts may call it, each part is a module LLVM accepts, and a
model compiled in parts computes the very bits it computes compiled whole."""

from __future__ import annotations

import ctypes
import os

import llvmlite.binding as llvm
import numpy as np
import pytest
from llvmlite import ir

import netc
import netc.jit_cache as jc
from netc.compiler.codegen.target import get_target
from netc.jit_split import split_module

ROOT = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)
I32 = ir.IntType(32)


def _toy() -> ir.Module:
    """entry(x) = sum over four kernels k_i(x) = helper(x) * (i + 1) + 1, with a helper the
    kernels share and one only k0 calls."""
    mod = ir.Module("toy")
    fty = ir.FunctionType(I32, [I32])
    helper = ir.Function(mod, fty, "helper")
    helper.linkage = "internal"
    b = ir.IRBuilder(helper.append_basic_block())
    b.ret(b.mul(helper.args[0], helper.args[0]))
    only0 = ir.Function(mod, fty, "only0")
    only0.linkage = "internal"
    b = ir.IRBuilder(only0.append_basic_block())
    b.ret(b.add(only0.args[0], I32(100)))
    kernels = []
    for i in range(4):
        k = ir.Function(mod, fty, f"k{i}")
        k.linkage = "internal" if i % 2 else ""
        k.attributes.add("noinline")
        b = ir.IRBuilder(k.append_basic_block())
        v = b.add(b.mul(b.call(helper, [k.args[0]]), I32(i + 1)), I32(1))
        if i == 0:
            v = b.add(v, b.call(only0, [k.args[0]]))
        b.ret(v)
        kernels.append(k)
    entry = ir.Function(mod, fty, "entry")
    b = ir.IRBuilder(entry.append_basic_block())
    total = I32(0)
    for k in kernels:
        total = b.add(total, b.call(k, [entry.args[0]]))
    b.ret(total)
    return mod


def _defines(text: str) -> dict[str, str]:
    """Function name -> linkage name of every definition in an IR text."""
    mod = llvm.parse_assembly(text)
    mod.verify()
    return {f.name: f.linkage.name for f in mod.functions
            if not f.is_declaration}


def test_parts_define_each_unit_once_and_share_helpers_privately():
    mod = _toy()
    parts = split_module(mod, 2)
    assert len(parts) == 2
    defs = [_defines(t) for t in parts]
    for name in ("entry", "k0", "k1", "k2", "k3"):  # callable across parts: one home, public
        homes = [d[name] for d in defs if name in d]
        assert homes == ["external"], (name, homes)
    assert "entry" in defs[0]
    for d in defs:  # the shared helper: a private copy wherever a kernel calls it
        if any(k in d for k in ("k0", "k1", "k2", "k3")):
            assert d["helper"] == "internal"
    assert sum("only0" in d for d in defs) == 1
    assert split_module(mod, 1) == [str(mod)]
    assert split_module(mod, 2, min_part_bytes=10**9) == [str(mod)]


def test_parts_link_into_one_engine_and_compute_what_the_whole_does():
    target = get_target()
    mod = _toy()
    whole = jc._load(jc.object_codes([str(mod)], target), target)
    split = jc._load(jc.object_codes(split_module(mod, 3), target), target)
    fty = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int32)
    for x in (0, 3, -7):
        assert fty(split.address("entry"))(x) == fty(whole.address("entry"))(x) == \
            sum(x * x * (i + 1) + 1 for i in range(4)) + x + 100


@pytest.mark.parametrize("name", ["lenet", "lstm_classifier"])
def test_a_model_compiled_in_parts_computes_the_same_bits(name, monkeypatch, tmp_path):
    path = os.path.join(ROOT, "examples", f"{name}.net")
    over = {"batch": 8, "steps": 6} if name == "lstm_classifier" else {"batch": 8}
    rng = np.random.default_rng(0)
    results, objects = [], []
    for parts in (1, 2):
        monkeypatch.setattr(jc, "compile_parts", lambda parts=parts: parts)
        monkeypatch.setenv("NETC_CACHE_DIR", str(tmp_path / f"parts{parts}"))
        jc._memory.clear()
        m = netc.compile(path, seed=3, threads=2, **over)
        if not results:
            feeds = {n: (rng.integers(0, 2, s).astype(np.int32) if d == "i32"
                         else rng.uniform(0, 1, s).astype(np.float32))
                     for n, (s, d) in {**m.inputs, **m.targets}.items()}
        losses = [m.train_step(**feeds) for _ in range(3)]
        results.append((losses, {k: np.array(v) for k, v in m.params.items()}))
        entries = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / f"parts{parts}")
                   for f in fs if f.endswith(".o")]
        from netc.compiler.disk_cache import read_entry
        objects.append(max(len(jc._unpack(read_entry(e))[0]) for e in entries))
    assert objects == [1, 2]  # the train module really was split
    (l1, p1), (l2, p2) = results
    assert l1 == l2
    for k in p1:
        assert np.array_equal(p1[k], p2[k]), k
