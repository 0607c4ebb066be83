"""Dynamic work claiming (codegen/claim.py): every item runs exactly once per call whatever the
thread count and item count (fewer items than threads included), the state is reset for the
next call, an even run keeps each thread on its static range, and a slowed thread's items are
taken over by the others."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from llvmlite import ir

from netc.compiler.codegen.barrier import STATE_BYTES, call_barrier
from netc.compiler.codegen.claim import for_claimed, state_bytes
from netc.compiler.codegen.loops import I32, for_range, i64
from netc.jit import compile_module
from netc.threads import get_pool

I32P = I32.as_pointer()


def claiming_kernel(total: int, rounds: int, slow_tid: int, spin: int) -> ctypes._CFuncPtr:
    """`claimed(tid, nt, hits, owner, claim_state, barrier_state, spins)`: `rounds` times,
    every claimed item i gets hits[i] += 1 (atomically) and owner[i] = tid, thread `slow_tid`
    first spinning `spin` atomic adds per item; a barrier between rounds."""
    m = ir.Module("claim_test")
    i8p = ir.IntType(8).as_pointer()
    fn = ir.Function(m, ir.FunctionType(ir.VoidType(), [I32, I32, I32P, I32P, i8p, i8p, I32P]),
                     name="claimed")
    tid, nt, hits, owner, claim, barrier, spins = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    with for_range(b, i64(0), i64(rounds), name="round", unroll=False):
        with for_claimed(b, claim, total, tid, nt) as item:
            slow = b.icmp_signed("==", tid, ir.Constant(I32, slow_tid))
            with b.if_then(slow), for_range(b, i64(0), i64(spin), name="spin", unroll=False):
                b.atomic_rmw("add", spins, ir.Constant(I32, 1), "monotonic")
            b.atomic_rmw("add", b.gep(hits, [item]), ir.Constant(I32, 1), "monotonic")
            b.store(tid, b.gep(owner, [item]))
        call_barrier(b, barrier, nt)
    b.ret_void()
    compiled = compile_module(m)
    proto = ctypes.CFUNCTYPE(None, ctypes.c_int32, ctypes.c_int32, *[ctypes.c_void_p] * 5)
    f = proto(compiled.address("claimed"))
    f._keep = compiled
    return f


def run_claims(total: int, threads: int, rounds: int, slow_tid: int = -1, spin: int = 0):
    f = claiming_kernel(total, rounds, slow_tid, spin)
    hits = np.zeros(max(total, 1), np.int32)
    owner = np.full(max(total, 1), -1, np.int32)
    claim = np.zeros(state_bytes(threads), np.uint8)
    barrier = np.zeros(STATE_BYTES, np.uint8)
    spins = np.zeros(1, np.int32)
    get_pool().run(f, threads, hits.ctypes.data, owner.ctypes.data, claim.ctypes.data,
                   barrier.ctypes.data, spins.ctypes.data)
    return hits[:total], owner[:total], claim


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("total", [0, 1, 2, 3, 7, 64])
def test_every_item_once_per_call_and_state_reset(threads, total):
    rounds = 200
    hits, owner, claim = run_claims(total, threads, rounds)
    assert hits.tolist() == [rounds] * total
    assert not claim.any()  # reset by the last thread of every call
    assert set(owner.tolist()) <= set(range(threads))


def test_one_thread_takes_its_static_range_in_order():
    hits, owner, _ = run_claims(10, 1, 1)
    assert hits.tolist() == [1] * 10 and owner.tolist() == [0] * 10


def test_slowed_thread_items_are_taken_over():
    # Thread 1 spins ~ms per item: thread 0 ends its own range long before and takes items
    # from the back of thread 1's range [8, 16).
    hits, owner, _ = run_claims(16, 2, 1, slow_tid=1, spin=2_000_000)
    assert hits.tolist() == [1] * 16
    assert owner[:8].tolist() == [0] * 8  # nobody steals from the front of a range
    assert 0 in owner[8:].tolist(), owner
