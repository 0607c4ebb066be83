"""Codegen stage, threading barrier and waiting: native synchronisation for SPMD code, in LLVM IR.

Takes: a module. Gives:
  `emit_wait(module)` -> `i32 netc_wait(i32* word, i32 old, i32* sleepers, i32 rounds)`: wait
    until `*word != old` and return the new value (the one waiting policy, below);
  `call_wake(builder, word, sleepers)`: after a store to `word`, wake whoever sleeps on it;
  `emit_barrier(module)` -> `void netc_barrier(i32* state, i32 n_threads)` and
    `call_barrier(builder, state, n_threads)`.
Each function is added once per module (internal linkage).

Waiting policy (every wait of generated code: barriers, the native thread pool's idle workers and
its caller): check the word PAUSES_PER_YIELD times with the x86 `pause` hint, then `sched_yield`
once, for `rounds` rounds; then sleep on a Linux futex. Why: on an idle core a peer's store is
seen within a microsecond; on a loaded machine the scheduler often puts both threads of a 2-thread
job on one CPU (measured: always, with 5 other busy processes on 2 cores), where a pure spin only
delays the peer it waits for until the time slice ends, while a yield hands it the CPU at once
(and returns at once when nobody else is runnable); a long wait sleeps, so an idle thread burns no
core. A sleeper first counts itself in `*sleepers`, then re-reads the word, then sleeps only if the
word still holds `old` (the kernel re-checks atomically); a waker stores the word, then wakes only
if `*sleepers` is non zero. All four accesses are sequentially consistent, so either the sleeper
sees the new word or the waker sees the sleeper: no lost wake-up, and no system call when nobody
sleeps. Hosts without futexes (not Linux) keep yielding instead of sleeping.

Barrier state: three i32 in a 64-byte line the caller (the runtime) zeroes once: `state[0]` counts
arrivals, `state[1]` is the generation (its parity is the barrier's sense), `state[2]` counts
sleepers. A thread reads the generation, then increments the count; the last to arrive resets the
count and publishes the next generation (and wakes sleepers); the others wait for the generation to
change. Sense reversal by generation means the same state serves every barrier in a kernel, back to
back, with no per-thread local sense to carry around.

Invariants: every one of the `n_threads` threads must call the barrier the same number of times
(the thread pool runs all ids concurrently); writes before the barrier are visible to every thread
after it (seq_cst read-modify-write and generation store, acquire loads). With n_threads == 1 it
returns at once.
"""

from __future__ import annotations

import platform
import sys

from llvmlite import ir

from .loops import I32, I64

BARRIER_NAME = "netc_barrier"
WAIT_NAME = "netc_wait"
PAUSES_PER_YIELD = 16  # checks (with `pause`, ~25-50 ns each) between two sched_yield calls
BARRIER_ROUNDS = 64  # yield rounds a barrier waits before sleeping (~70-100 us)
STATE_BYTES = 64  # a cache line of its own, so spinning never false-shares with data
FUTEX_WAIT_PRIVATE = 128
FUTEX_WAKE_PRIVATE = 129
_FUTEX_SYSCALL = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}


def futex_syscall() -> int | None:
    """The futex system call number of this host (generated code runs on the host), or None."""
    if not sys.platform.startswith("linux"):
        return None
    return _FUTEX_SYSCALL.get(platform.machine().lower())


def _decl(module: ir.Module, name: str, fnty: ir.FunctionType) -> ir.Function:
    return module.globals.get(name) or ir.Function(module, fnty, name=name)


def _futex(b: ir.IRBuilder, word: ir.Value, op: int, val: ir.Value) -> None:
    """syscall(SYS_futex, word, op, val, NULL, NULL, 0) (libc's variadic `syscall`)."""
    nr = futex_syscall()
    assert nr is not None
    sc = _decl(b.module, "syscall", ir.FunctionType(I64, [I64], var_arg=True))
    null = ir.Constant(I32.as_pointer(), None)
    b.call(sc, [ir.Constant(I64, nr), word, ir.Constant(I32, op), val, null, null,
                ir.Constant(I32, 0)])


def emit_wait(module: ir.Module, pause: bool = True) -> ir.Function:
    """Define (once) `i32 netc_wait(i32* word, i32 old, i32* sleepers, i32 rounds)` (see the
    module docstring); `pause`: spin with the x86 `pause` hint (False on other architectures)."""
    existing = module.globals.get(WAIT_NAME)
    if existing is not None:
        return existing
    i32p = I32.as_pointer()
    fn = ir.Function(module, ir.FunctionType(I32, [i32p, I32, i32p, I32]), name=WAIT_NAME)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    fn.attributes.add("nounwind")
    word, old, sleepers, rounds = fn.args
    pause_fn = _decl(module, "llvm.x86.sse2.pause", ir.FunctionType(ir.VoidType(), [])) \
        if pause else None
    yield_fn = _decl(module, "sched_yield", ir.FunctionType(I32, []))
    entry = fn.append_basic_block("entry")
    spin = fn.append_basic_block("spin")
    done = fn.append_basic_block("done")
    b = ir.IRBuilder(entry)
    b.branch(spin)
    got = []  # (value, block) pairs reaching `done`

    # Spin: check, pause; every PAUSES_PER_YIELD checks, yield once (a peer runnable on this CPU
    # runs now instead of after our time slice; with nobody else runnable it returns at once).
    b.position_at_end(spin)
    tries = b.phi(I32, name="tries")
    tries.add_incoming(ir.Constant(I32, 0), entry)
    now = b.load_atomic(word, "acquire", 4)
    got.append((now, b.block))
    more = b.append_basic_block("spin.more")
    b.cbranch(b.icmp_unsigned("!=", now, old), done, more)
    b.position_at_end(more)
    if pause_fn is not None:
        b.call(pause_fn, [])
    t2 = b.add(tries, ir.Constant(I32, 1))
    turn = b.icmp_unsigned("==", b.and_(t2, ir.Constant(I32, PAUSES_PER_YIELD - 1)),
                           ir.Constant(I32, 0))
    with b.if_then(turn, likely=False):
        b.call(yield_fn, [])
    tries.add_incoming(t2, b.block)
    limit = b.mul(rounds, ir.Constant(I32, PAUSES_PER_YIELD))
    if futex_syscall() is None:
        b.branch(spin)
    else:
        sleep = fn.append_basic_block("sleep")
        b.cbranch(b.icmp_unsigned("<", t2, limit), spin, sleep)
        b.position_at_end(sleep)
        b.atomic_rmw("add", sleepers, ir.Constant(I32, 1), "seq_cst")
        still = b.icmp_unsigned("==", b.load_atomic(word, "seq_cst", 4), old)
        with b.if_then(still):
            _futex(b, word, FUTEX_WAIT_PRIVATE, old)
        b.atomic_rmw("sub", sleepers, ir.Constant(I32, 1), "seq_cst")
        now = b.load_atomic(word, "acquire", 4)
        got.append((now, b.block))
        b.cbranch(b.icmp_unsigned("!=", now, old), done, sleep)

    b.position_at_end(done)
    out = b.phi(I32, name="now")
    for v, blk in got:
        out.add_incoming(v, blk)
    b.ret(out)
    return fn


def call_wait(b: ir.IRBuilder, word: ir.Value, old: ir.Value, sleepers: ir.Value,
              rounds: int | ir.Value, pause: bool = True) -> ir.Value:
    """Emit `netc_wait(word, old, sleepers, rounds)`; returns the new value of `*word`."""
    if isinstance(rounds, int):
        rounds = ir.Constant(I32, rounds)
    return b.call(emit_wait(b.module, pause), [word, old, sleepers, rounds])


def call_wake(b: ir.IRBuilder, word: ir.Value, sleepers: ir.Value) -> None:
    """After a seq_cst store to `word`: futex-wake every thread sleeping on it, if any."""
    if futex_syscall() is None:
        return
    asleep = b.icmp_unsigned("!=", b.load_atomic(sleepers, "seq_cst", 4), ir.Constant(I32, 0))
    with b.if_then(asleep, likely=False):
        _futex(b, word, FUTEX_WAKE_PRIVATE, ir.Constant(I32, 0x7FFFFFFF))


def emit_barrier(module: ir.Module, pause: bool = True) -> ir.Function:
    """Define (once) `netc_barrier(i32* state, i32 n)` in `module`; `pause`: spin with the x86
    `pause` hint (False on other architectures)."""
    existing = module.globals.get(BARRIER_NAME)
    if existing is not None:
        return existing
    i32p = I32.as_pointer()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [i32p, I32]), name=BARRIER_NAME)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    fn.attributes.add("nounwind")
    state, n = fn.args
    entry = fn.append_basic_block("entry")
    last_bb = fn.append_basic_block("last")
    wait_bb = fn.append_basic_block("wait")
    done = fn.append_basic_block("done")
    b = ir.IRBuilder(entry)
    count_p = state
    gen_p = b.gep(state, [ir.Constant(I32, 1)], inbounds=True)
    sleepers_p = b.gep(state, [ir.Constant(I32, 2)], inbounds=True)
    gen = b.load_atomic(gen_p, "acquire", 4)
    arrived = b.atomic_rmw("add", count_p, ir.Constant(I32, 1), "seq_cst")
    is_last = b.icmp_signed("==", b.add(arrived, ir.Constant(I32, 1)), n)
    b.cbranch(is_last, last_bb, wait_bb)

    b.position_at_end(last_bb)
    # Nobody touches the count until the new generation is published, so a plain reset is safe.
    b.store_atomic(ir.Constant(I32, 0), count_p, "monotonic", 4)
    b.store_atomic(b.add(gen, ir.Constant(I32, 1)), gen_p, "seq_cst", 4)
    call_wake(b, gen_p, sleepers_p)
    b.branch(done)

    b.position_at_end(wait_bb)
    call_wait(b, gen_p, gen, sleepers_p, BARRIER_ROUNDS, pause)
    b.branch(done)

    b.position_at_end(done)
    b.ret_void()
    return fn


def call_barrier(b: ir.IRBuilder, state: ir.Value, n_threads: ir.Value,
                 pause: bool = True) -> None:
    """Emit a call to the module's barrier (`state` may be any pointer type)."""
    fn = emit_barrier(b.module, pause)
    if state.type != I32.as_pointer():
        state = b.bitcast(state, I32.as_pointer())
    b.call(fn, [state, n_threads])
