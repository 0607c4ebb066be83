"""The thread pool and the native barrier: all ids run concurrently, phases are ordered by the
barrier (many back-to-back rounds catch a broken reset), failures propagate, the pool is reused."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from llvmlite import ir

from netc.compiler.codegen.barrier import STATE_BYTES, call_barrier
from netc.compiler.codegen.loops import F32, F32P, I32, I64, for_range, gep, i64
from netc.jit import compile_module
from netc.threads import ThreadPool, get_pool

ROUNDS = 500


def phased_kernel() -> ctypes._CFuncPtr:
    """Each round: thread t writes slot[t] = round + t; barrier; thread t sums all slots into
    out[t]; barrier. Without a working barrier a thread sees a stale slot."""
    m = ir.Module("barrier_test")
    fn = ir.Function(m, ir.FunctionType(ir.VoidType(), [I32, I32, F32P, F32P, F32P]),
                     name="phased")
    tid, nt, slots, out, state = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    t64 = b.sext(tid, I64)
    with for_range(b, i64(0), i64(ROUNDS), name="round") as r:
        b.store(b.sitofp(b.add(r, t64), F32), gep(b, slots, t64))
        call_barrier(b, state, nt)
        with for_range(b, i64(0), b.sext(nt, I64), name="s") as s:
            acc_p = gep(b, out, t64)
            b.store(b.fadd(b.load(acc_p), b.load(gep(b, slots, s))), acc_p)
        call_barrier(b, state, nt)
    b.ret_void()
    compiled = compile_module(m)
    proto = ctypes.CFUNCTYPE(None, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p,
                             ctypes.c_void_p, ctypes.c_void_p)
    f = proto(compiled.address("phased"))
    f._keep = compiled  # the engine must outlive the callable
    return f


@pytest.mark.parametrize("n", [1, 2, 3])
def test_barrier_orders_phases(n):
    f = phased_kernel()
    slots = np.zeros(n, np.float32)
    out = np.zeros(n, np.float32)
    state = np.zeros(STATE_BYTES // 4, np.float32)
    get_pool().run(f, n, slots.ctypes.data, out.ctypes.data, state.ctypes.data)
    # sum over rounds r of sum_t (r + t): exact in float32 for these sizes.
    want = sum(n * r + n * (n - 1) // 2 for r in range(ROUNDS))
    assert np.all(out == np.float32(want)), (out, want)
    assert state.view(np.int32)[0] == 0  # count reset after every round


def test_pool_runs_every_id_once_and_reuses_workers():
    pool = ThreadPool()
    seen: list[tuple[int, int]] = []
    pool.run(lambda t, n: seen.append((t, n)), 3)
    pool.run(lambda t, n: seen.append((t, n)), 3)
    assert sorted(seen) == sorted([(t, 3) for t in range(3)] * 2)
    assert pool.size == 2
    pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.run(lambda t, n: None, 2)


def test_pool_propagates_failures():
    pool = ThreadPool()

    def work(t: int, n: int) -> None:
        if t == 1:
            raise ArithmeticError("thread 1 failed")

    with pytest.raises(ArithmeticError, match="thread 1"):
        pool.run(work, 2)
    pool.run(lambda t, n: None, 2)  # still usable afterwards
    pool.shutdown()


def test_pool_rejects_bad_counts():
    with pytest.raises(ValueError):
        get_pool().run(lambda t, n: None, 0)
