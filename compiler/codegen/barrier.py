"""Codegen stage, threading barrier: a native spin barrier for SPMD kernels, in LLVM IR.

Takes: a module. Gives: `emit_barrier(module)` -> `void netc_barrier(i32* state, i32 n_threads)`
(internal, added once per module) and `call_barrier(builder, state, n_threads)`.

The state is two i32 in memory the caller (the runtime) allocates and zeroes once: `state[0]` counts
arrivals, `state[1]` is the generation, whose parity is the barrier's sense. A thread reads the
generation, then increments the count; the last to arrive resets the count and publishes the next
generation (release); the others spin (acquire loads, with `pause`, then `sched_yield` once the
wait is long — the JIT resolves that libc symbol) until the generation changes.
Sense reversal by generation means the same state serves every barrier in a kernel, back to back,
with no per-thread local sense to carry around.

Invariants: every one of the `n_threads` threads must call the barrier the same number of times
(the thread pool runs all ids concurrently); writes before the barrier are visible to every thread
after it (seq_cst read-modify-write, release/acquire on the generation). With n_threads == 1 it
returns at once.
"""

from __future__ import annotations

from llvmlite import ir

from .loops import I32

BARRIER_NAME = "netc_barrier"
SPIN_BEFORE_YIELD = 2000
STATE_BYTES = 64  # a cache line of its own, so spinning never false-shares with data


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
    pause_fn = None
    if pause:
        pause_fn = module.globals.get("llvm.x86.sse2.pause") or ir.Function(
            module, ir.FunctionType(ir.VoidType(), []), name="llvm.x86.sse2.pause")
    yield_fn = module.globals.get("sched_yield") or ir.Function(
        module, ir.FunctionType(I32, []), name="sched_yield")
    entry = fn.append_basic_block("entry")
    last_bb = fn.append_basic_block("last")
    spin = fn.append_basic_block("spin")
    done = fn.append_basic_block("done")
    b = ir.IRBuilder(entry)
    count_p = state
    gen_p = b.gep(state, [ir.Constant(I32, 1)], inbounds=True)
    gen = b.load_atomic(gen_p, "acquire", 4)
    arrived = b.atomic_rmw("add", count_p, ir.Constant(I32, 1), "seq_cst")
    is_last = b.icmp_signed("==", b.add(arrived, ir.Constant(I32, 1)), n)
    b.cbranch(is_last, last_bb, spin)

    b.position_at_end(last_bb)
    # Nobody touches the count until the new generation is published, so a plain reset is safe.
    b.store_atomic(ir.Constant(I32, 0), count_p, "monotonic", 4)
    b.store_atomic(b.add(gen, ir.Constant(I32, 1)), gen_p, "release", 4)
    b.branch(done)

    # Spin with `pause`; after SPIN_BEFORE_YIELD rounds also yield the CPU, so a kernel run with
    # more threads than cores still progresses (a preempted peer gets to arrive).
    b.position_at_end(spin)
    tries = b.phi(I32, name="tries")
    tries.add_incoming(ir.Constant(I32, 0), entry)
    if pause_fn is not None:
        b.call(pause_fn, [])
    with b.if_then(b.icmp_signed(">", tries, ir.Constant(I32, SPIN_BEFORE_YIELD)), likely=False):
        b.call(yield_fn, [])
    now = b.load_atomic(gen_p, "acquire", 4)
    tries.add_incoming(b.add(tries, ir.Constant(I32, 1)), b.block)
    b.cbranch(b.icmp_signed("==", now, gen), spin, done)

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
