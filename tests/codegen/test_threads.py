"""The thread pool and the native barrier: all ids run concurrently, phases are ordered by the
barrier (many back-to-back rounds catch a broken reset), failures propagate, the pool is reused,
native jobs skip Python, calls from several Python threads are serialised, idle workers sleep and
stop at shutdown."""

from __future__ import annotations

import ctypes
import os
import threading
import time

import numpy as np
import pytest
from llvmlite import ir

from netc.compiler.codegen.barrier import (
    CPU_SLOTS_AT,
    STATE_BYTES,
    call_barrier,
    futex_syscall,
)
from netc.compiler.codegen.loops import F32, F32P, I32, I64, for_range, gep, i64
from netc.compiler.codegen.workers import WORKERS_AT
from netc.jit import compile_module
from netc.threads import ThreadPool, get_pool, native_address

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
    if futex_syscall() is not None:  # each thread's CPU (+1) at its last arrival
        cpus = state.view(np.int32)[CPU_SLOTS_AT:CPU_SLOTS_AT + n]
        assert all(1 <= c <= os.cpu_count() for c in cpus), cpus


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


def counting_kernel() -> ctypes._CFuncPtr:
    """`count(tid, nt, i64* hits, i64 add, i64* seen_nt)`: hits[tid] += add; seen_nt[tid] = nt.
    Its integer and pointer arguments make it a native job (no Python on the workers)."""
    m = ir.Module("count_test")
    i64p = I64.as_pointer()
    fn = ir.Function(m, ir.FunctionType(ir.VoidType(), [I32, I32, i64p, I64, i64p]),
                     name="count")
    tid, nt, hits, add, seen = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    t64 = b.sext(tid, I64)
    p = b.gep(hits, [t64])
    b.store(b.add(b.load(p), add), p)
    b.store(b.sext(nt, I64), b.gep(seen, [t64]))
    b.ret_void()
    compiled = compile_module(m)
    proto = ctypes.CFUNCTYPE(None, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p,
                             ctypes.c_int64, ctypes.c_void_p)
    f = proto(compiled.address("count"))
    f._keep = compiled
    return f


def test_native_jobs_many_consecutive_calls_each_id_once():
    f = counting_kernel()
    assert native_address(f) is not None
    pool = ThreadPool()
    hits = np.zeros(4, np.int64)
    seen = np.zeros(4, np.int64)
    calls = 3000
    for _ in range(calls):
        pool.run(f, 3, hits.ctypes.data, 1, seen.ctypes.data)
    assert hits.tolist() == [calls, calls, calls, 0]
    assert seen.tolist() == [3, 3, 3, 0]
    # Fewer threads than workers: the second worker (id 2) is not woken.
    pool.run(f, 2, hits.ctypes.data, 5, seen.ctypes.data)
    assert hits.tolist() == [calls + 5, calls + 5, calls, 0]
    assert seen.tolist() == [2, 2, 3, 0]
    pool.shutdown()


def test_python_callables_and_other_prototypes_take_the_callback_route():
    pool = ThreadPool()
    seen: list[int] = []
    lock = threading.Lock()

    def record(t: int, n: int, extra: str) -> None:
        with lock:
            seen.append(t)
        assert extra == "x"

    pool.run(record, 2, "x")
    assert sorted(seen) == [0, 1]
    # A ctypes function with a float argument cannot be passed as i64: it is called from Python.
    libc = ctypes.CDLL(None)
    proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int32, ctypes.c_int32, ctypes.c_double)
    f = proto(ctypes.cast(libc.sched_yield, ctypes.c_void_p).value)
    assert native_address(f) is None
    pool.run(f, 2, 1.5)
    pool.shutdown()


def test_calls_from_two_python_threads_at_once_are_serialised():
    f = counting_kernel()
    pool = ThreadPool()
    hits = [np.zeros(2, np.int64) for _ in range(2)]
    seen = np.zeros(2, np.int64)
    errors: list[BaseException] = []

    def caller(j: int) -> None:
        try:
            for _ in range(1000):
                pool.run(f, 2, hits[j].ctypes.data, 1, seen.ctypes.data)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=caller, args=(j,)) for j in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert [h.tolist() for h in hits] == [[1000, 1000], [1000, 1000]]
    pool.shutdown()


def test_exception_of_thread_zero_after_all_ids_finish():
    pool = ThreadPool()
    done: list[int] = []

    def work(t: int, n: int) -> None:
        if t == 0:
            raise KeyError("zero")
        time.sleep(0.01)
        done.append(t)

    with pytest.raises(KeyError, match="zero"):
        pool.run(work, 3)
    assert sorted(done) == [1, 2]  # the others finished before the caller raised
    pool.shutdown()


def _sleepers(pool: ThreadPool, k: int) -> int:
    return int(pool._ctl_buf[WORKERS_AT + 64 * k + 4:WORKERS_AT + 64 * k + 8].view(np.int32)[0])


@pytest.mark.skipif(futex_syscall() is None, reason="idle workers sleep on Linux futexes")
def test_idle_workers_sleep_and_stop_at_shutdown():
    f = counting_kernel()
    pool = ThreadPool()
    hits = np.zeros(3, np.int64)
    seen = np.zeros(3, np.int64)
    pool.run(f, 3, hits.ctypes.data, 1, seen.ctypes.data)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and not all(_sleepers(pool, k) for k in range(2)):
        time.sleep(0.01)
    assert [_sleepers(pool, k) for k in range(2)] == [1, 1]  # asleep on the futex, not spinning
    pool.run(f, 3, hits.ctypes.data, 1, seen.ctypes.data)  # sleepers are woken
    assert hits.tolist() == [2, 2, 2]
    workers = list(pool._workers)
    pool.shutdown()
    assert not any(t.is_alive() for t in workers)
    pool.shutdown()  # idempotent
    with pytest.raises(RuntimeError):
        pool.run(f, 2, hits.ctypes.data, 1, seen.ctypes.data)
