"""Codegen stage, threading barrier and waiting: native synchronisation for SPMD code, in LLVM IR.

Takes: a module. Gives:
  `emit_wait(module)` -> `i32 netc_wait(i32* word, i32 old, i32* sleepers, i32 spins, i32 mask)`
    and `call_wait(...)`: wait until `*word != old` and return the new value (the one waiting
    policy, below); `current_cpu`/`same_cpu`: which CPU a thread runs on;
  `call_wake(builder, word, sleepers)`: after a store to `word`, wake whoever sleeps on it;
  `emit_barrier(module)` -> `void netc_barrier(i32* state, i32 n_threads, i32 tid)` and
    `call_barrier(builder, state, n_threads)` (tid: the SPMD function's first argument).
Each function is added once per module (internal linkage).

Waiting policy (every wait of generated code: barriers, the native thread pool's idle workers and
its caller): spin on the word with the x86 `pause` hint, then sleep on a Linux futex. While
spinning, yield the CPU every PAUSES_PER_YIELD checks only when the thread waited for last ran on
this CPU. Why: on a loaded machine the scheduler often puts both threads of a 2-thread job on one
CPU (measured: always, with 5 other busy processes on 2 cores), and a spin there only delays the
peer it waits for until the time slice ends (a barrier of the old pure spin cost ~50 us), while a
yield hands it the CPU at once; but with the peer on another CPU a yield would give the CPU to an
unrelated process for a whole slice, so there the wait spins (a peer's store is seen within a
microsecond). A long wait sleeps, so an idle thread burns no core. Sleeping: a sleeper first
counts itself in `*sleepers`, then re-reads the word, then sleeps only if the word still holds
`old` (the kernel re-checks atomically); a waker stores the word, then wakes only if `*sleepers`
is non zero. All four accesses are sequentially consistent, so either the sleeper sees the new
word or the waker sees the sleeper: no lost wake-up, and no system call when nobody sleeps. Hosts
without futexes (not Linux) keep spinning and yielding instead of sleeping.

Barrier state: a 64-byte line the caller (the runtime) zeroes once: `state[0]` counts arrivals,
`state[1]` is the generation (its parity is the barrier's sense), `state[2]` counts sleepers,
`state[4 + t]` holds the CPU (+1) thread t ran on at its last arrival (t < CPU_SLOTS). A thread
records its CPU, reads the generation, then increments the count; the last to arrive resets the
count and publishes the next generation (and wakes sleepers); the others wait for the generation
to change. Sense reversal by generation means the same state serves every barrier in a kernel,
back to back, with no per-thread local sense to carry around.

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
PAUSES_PER_YIELD = 16  # checks (with `pause`, ~25-50 ns each) between two yields (shared CPU)
SHARED_SPINS = 64 * PAUSES_PER_YIELD  # checks before sleeping, peer on this CPU (~70-100 us)
# checks before sleeping, peer on another CPU (~1.7 ms at Zen 3's 26 ns per check): longer than
# a kernel's imbalance. With ~0.1 ms, a wait after a pause (a core's cold start) slept, the futex
# wake-up took tens to hundreds of microseconds on a VM, which made the peer wait long enough to
# sleep at the next barrier too: LeNet's 2-thread step stayed at 2.2-3.1 ms for whole blocks
# instead of 1.8-2.2 (harness-like blocks after a 0.1 s pause, A/B in 5 alternating pairs).
ALONE_SPINS = 65536
CPU_SLOTS_AT = 4  # state[4 + t]: CPU (+1) of thread t at its last arrival, t < CPU_SLOTS
CPU_SLOTS = 12
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
    """Define (once) `i32 netc_wait(i32* word, i32 old, i32* sleepers, i32 spins, i32 mask)`:
    check `spins` times (with `pause`), yielding after check t when `t & mask == 0`, then sleep
    (see the module docstring); `pause`: the x86 `pause` hint (False on other architectures)."""
    existing = module.globals.get(WAIT_NAME)
    if existing is not None:
        return existing
    i32p = I32.as_pointer()
    fn = ir.Function(module, ir.FunctionType(I32, [i32p, I32, i32p, I32, I32]), name=WAIT_NAME)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    fn.attributes.add("nounwind")
    word, old, sleepers, spins, mask = fn.args
    pause_fn = _decl(module, "llvm.x86.sse2.pause", ir.FunctionType(ir.VoidType(), [])) \
        if pause else None
    yield_fn = _decl(module, "sched_yield", ir.FunctionType(I32, []))
    entry = fn.append_basic_block("entry")
    spin = fn.append_basic_block("spin")
    done = fn.append_basic_block("done")
    b = ir.IRBuilder(entry)
    b.branch(spin)
    got = []  # (value, block) pairs reaching `done`

    # Spin: check, pause; when the peer shares this CPU, yield every few checks (it runs now
    # instead of after our time slice; with nobody else runnable the yield returns at once).
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
    turn = b.icmp_unsigned("==", b.and_(t2, mask), ir.Constant(I32, 0))
    with b.if_then(turn, likely=False):
        b.call(yield_fn, [])
    tries.add_incoming(t2, b.block)
    if futex_syscall() is None:
        b.branch(spin)
    else:
        sleep = fn.append_basic_block("sleep")
        b.cbranch(b.icmp_unsigned("<", t2, spins), spin, sleep)
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
              shared: ir.Value, alone_spins: int, pause: bool = True) -> ir.Value:
    """Emit a wait until `*word != old` (returns the new value): with `shared` (i1: the thread
    waited for runs on this CPU) SHARED_SPINS checks yielding every PAUSES_PER_YIELD, else
    `alone_spins` checks without yielding; then sleep."""
    spins = b.select(shared, ir.Constant(I32, SHARED_SPINS), ir.Constant(I32, alone_spins))
    mask = b.select(shared, ir.Constant(I32, PAUSES_PER_YIELD - 1), ir.Constant(I32, -1))
    return b.call(emit_wait(b.module, pause), [word, old, sleepers, spins, mask])


def current_cpu(b: ir.IRBuilder) -> ir.Value:
    """This thread's CPU number + 1 (0: unknown; hosts without `sched_getcpu`)."""
    if futex_syscall() is None:
        return ir.Constant(I32, 0)
    fn = _decl(b.module, "sched_getcpu", ir.FunctionType(I32, []))
    return b.add(b.call(fn, []), ir.Constant(I32, 1))


def same_cpu(b: ir.IRBuilder, cpu: ir.Value, other: ir.Value) -> ir.Value:
    """i1: two `current_cpu` values name one CPU (unknown counts as shared: then yield)."""
    return b.or_(b.icmp_unsigned("==", cpu, other), b.icmp_unsigned("==", cpu, ir.Constant(I32, 0)))


def call_wake(b: ir.IRBuilder, word: ir.Value, sleepers: ir.Value) -> None:
    """After a seq_cst store to `word`: futex-wake every thread sleeping on it, if any."""
    if futex_syscall() is None:
        return
    asleep = b.icmp_unsigned("!=", b.load_atomic(sleepers, "seq_cst", 4), ir.Constant(I32, 0))
    with b.if_then(asleep, likely=False):
        _futex(b, word, FUTEX_WAKE_PRIVATE, ir.Constant(I32, 0x7FFFFFFF))


def emit_barrier(module: ir.Module, pause: bool = True) -> ir.Function:
    """Define (once) `netc_barrier(i32* state, i32 n, i32 tid)` in `module`; `pause`: spin with
    the x86 `pause` hint (False on other architectures)."""
    existing = module.globals.get(BARRIER_NAME)
    if existing is not None:
        return existing
    i32p = I32.as_pointer()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [i32p, I32, I32]), name=BARRIER_NAME)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    fn.attributes.add("nounwind")
    state, n, tid = fn.args
    entry = fn.append_basic_block("entry")
    last_bb = fn.append_basic_block("last")
    wait_bb = fn.append_basic_block("wait")
    done = fn.append_basic_block("done")
    b = ir.IRBuilder(entry)
    count_p = state
    gen_p = b.gep(state, [ir.Constant(I32, 1)], inbounds=True)
    sleepers_p = b.gep(state, [ir.Constant(I32, 2)], inbounds=True)
    cpu = current_cpu(b)
    slots = b.gep(state, [ir.Constant(I32, CPU_SLOTS_AT)], inbounds=True)
    with b.if_then(b.icmp_unsigned("<", tid, ir.Constant(I32, CPU_SLOTS))):
        b.store_atomic(cpu, b.gep(slots, [tid]), "monotonic", 4)
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

    # Whether a thread we wait for last arrived on this CPU (a slot holds its CPU at its last
    # arrival; threads rarely move between barriers).
    b.position_at_end(wait_bb)
    n_slots = b.select(b.icmp_unsigned("<", n, ir.Constant(I32, CPU_SLOTS)), n,
                       ir.Constant(I32, CPU_SLOTS))
    shared = ir.Constant(ir.IntType(1), 0)
    scan = fn.append_basic_block("scan")
    scanned = fn.append_basic_block("scanned")
    pre = b.block
    b.branch(scan)
    b.position_at_end(scan)
    j = b.phi(I32, name="j")
    found = b.phi(ir.IntType(1), name="found")
    j.add_incoming(ir.Constant(I32, 0), pre)
    found.add_incoming(shared, pre)
    other = b.load_atomic(b.gep(slots, [j]), "monotonic", 4)
    hit = b.and_(b.icmp_unsigned("!=", j, tid), same_cpu(b, cpu, other))
    found2 = b.or_(found, hit)
    j2 = b.add(j, ir.Constant(I32, 1))
    j.add_incoming(j2, scan)
    found.add_incoming(found2, scan)
    b.cbranch(b.icmp_unsigned("<", j2, n_slots), scan, scanned)
    b.position_at_end(scanned)
    call_wait(b, gen_p, gen, sleepers_p, found2, ALONE_SPINS, pause)
    b.branch(done)

    b.position_at_end(done)
    b.ret_void()
    return fn


def call_barrier(b: ir.IRBuilder, state: ir.Value, n_threads: ir.Value,
                 pause: bool = True, tid: ir.Value | None = None) -> None:
    """Emit a call to the module's barrier (`state` may be any pointer type). `tid` defaults to
    the first argument of the function being built: SPMD functions are `f(tid, nt, ...)`."""
    fn = emit_barrier(b.module, pause)
    if state.type != I32.as_pointer():
        state = b.bitcast(state, I32.as_pointer())
    if tid is None:
        tid = b.function.args[0]
        if tid.type != I32:
            raise TypeError(f"{b.function.name}: an SPMD function's first argument is an i32 "
                            "thread id; pass tid= to call_barrier")
    b.call(fn, [state, n_threads, tid])
