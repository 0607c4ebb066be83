"""Codegen stage, dynamic work claiming: SPMD threads share equal work items, taking over the
items of a slowed thread.

Takes: a builder inside an SPMD function `f(tid, nt, ...)`, a pointer to the call's claim state
(`state_bytes(nt)` bytes in the arena, zero between calls; step.py gives every call that asks for
a "counter" argument its own) and the number of items. Gives: `for_claimed(b, state, total, tid,
nt)`, a loop whose body runs once per item, on whichever thread claims it.

Why: a static split gives each of two threads half the images of a convolution; when the host
slows one core (another tenant, a frequency change) the other waits for it at the next barrier.
Here each thread owns the static range it would have had and takes its items from the front;
once its range is empty it takes items from the back of the others' ranges. When the threads run
at the same speed every thread does exactly its static range (the data a kernel writes stays in
the cache of the core the next kernel reads it on); when one is slowed, the others take over its
last items. Items must be independent and computed the same way on every thread, so the results
never depend on which thread took which item: bitwise the same across runs whatever the timing
(conv.py's weight gradient sums fixed chunks of images for the same reason).

State: for range r (0 <= r < nt), the 64-bit word at 64*(r+1) (a cache line each): items taken
from the front in its low half, from the back in its high half; both grow by compare-and-swap
while their sum is below the range's size. The i32 at 0 counts the threads done claiming; the one
that brings it to `nt` has seen every thread stop, so it zeroes the words for the next call. The
barrier every call is followed by (a later kernel's, or the end of the job) publishes the reset
before anyone claims again.

Invariants: all `nt` threads enter the loop (SPMD); a call's state is used by that call only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from llvmlite import ir

from .loops import I32, I64, for_range

LINE = 64


# One call's claim state: the done counter's line, then one line per thread's range.
STATE_FIXED_BYTES = LINE
STATE_BYTES_PER_THREAD = LINE


def state_bytes(nt: int) -> int:
    """Bytes of one call's claim state for `nt` threads."""
    return STATE_FIXED_BYTES + STATE_BYTES_PER_THREAD * nt


def _split(b: ir.IRBuilder, total: ir.Value, r: ir.Value, nt: ir.Value
           ) -> tuple[ir.Value, ir.Value]:
    """[lo, hi) of range r: the static split of `total` items over `nt` threads (i64)."""
    lo = b.sdiv(b.mul(r, total), nt)
    hi = b.sdiv(b.mul(b.add(r, ir.Constant(I64, 1)), total), nt)
    return lo, hi


def _take(b: ir.IRBuilder, word: ir.Value, size: ir.Value, back: bool) -> tuple[ir.Value,
                                                                                 ir.Value]:
    """Take one item of a range by CAS on its word: (i1 got, i64 position: the count taken
    from that end before this one)."""
    fn = b.function
    retry = fn.append_basic_block("take")
    out = fn.append_basic_block("take.out")
    b.branch(retry)
    b.position_at_end(retry)
    w = b.load_atomic(word, "monotonic", 8)
    front = b.and_(w, ir.Constant(I64, 0xFFFFFFFF))
    from_back = b.lshr(w, ir.Constant(I64, 32))
    left = b.icmp_signed("<", b.add(front, from_back), size)
    cas = fn.append_basic_block("take.cas")
    b.cbranch(left, cas, out)
    b.position_at_end(cas)
    step = ir.Constant(I64, 1 << 32 if back else 1)
    pair = b.cmpxchg(word, w, b.add(w, step), "monotonic", "monotonic")
    b.cbranch(b.extract_value(pair, 1), out, retry)
    b.position_at_end(out)
    got = b.phi(ir.IntType(1))
    got.add_incoming(ir.Constant(ir.IntType(1), 0), retry)
    got.add_incoming(ir.Constant(ir.IntType(1), 1), cas)
    pos = b.phi(I64)
    pos.add_incoming(ir.Constant(I64, 0), retry)
    pos.add_incoming(from_back if back else front, cas)
    return got, pos


@contextmanager
def for_claimed(b: ir.IRBuilder, state: ir.Value, total: int | ir.Value, tid: ir.Value,
                nt: ir.Value) -> Iterator[ir.Value]:
    """Loop over items 0..total-1 (a constant or an i64 value) as claimed by this thread: its
    own range from the front, then the other ranges from the back (threads tid+1, tid+2, ...
    in turn); yields the item (i64). After the block the builder is at the loop's exit, once
    this thread has stopped claiming."""
    i8p = ir.IntType(8).as_pointer()
    state = b.bitcast(state, i8p)
    total = ir.Constant(I64, total) if isinstance(total, int) else total
    t, n = b.sext(tid, I64), b.sext(nt, I64)
    fn = b.function
    # The range scanned: d = 0 is this thread's own (taken from the front), d >= 1 another's.
    entry = b.block
    scan = fn.append_basic_block("claim.range")
    claim = fn.append_basic_block("claim")
    body = fn.append_basic_block("claim.body")
    next_range = fn.append_basic_block("claim.next")
    leave = fn.append_basic_block("claim.exit")
    b.branch(scan)

    b.position_at_end(scan)
    d = b.phi(I64, name="d")
    d.add_incoming(ir.Constant(I64, 0), entry)
    r = b.srem(b.add(t, d), n)
    lo, hi = _split(b, total, r, n)
    word = b.bitcast(b.gep(state, [b.mul(b.add(r, ir.Constant(I64, 1)),
                                          ir.Constant(I64, LINE))]), I64.as_pointer())
    own = b.icmp_signed("==", d, ir.Constant(I64, 0))
    b.branch(claim)

    b.position_at_end(claim)
    size = b.sub(hi, lo)
    take_front = fn.append_basic_block("claim.front")
    take_back = fn.append_basic_block("claim.back")
    taken = fn.append_basic_block("claim.taken")
    b.cbranch(own, take_front, take_back)
    b.position_at_end(take_front)
    got_f, pos_f = _take(b, word, size, back=False)
    from_front = b.add(lo, pos_f)
    after_front = b.block
    b.branch(taken)
    b.position_at_end(take_back)
    got_b, pos_b = _take(b, word, size, back=True)
    from_back = b.sub(b.sub(hi, ir.Constant(I64, 1)), pos_b)
    after_back = b.block
    b.branch(taken)
    b.position_at_end(taken)
    got = b.phi(ir.IntType(1))
    got.add_incoming(got_f, after_front)
    got.add_incoming(got_b, after_back)
    item = b.phi(I64)
    item.add_incoming(from_front, after_front)
    item.add_incoming(from_back, after_back)
    b.cbranch(got, body, next_range)

    b.position_at_end(body)
    yield item
    b.branch(claim)

    b.position_at_end(next_range)
    d2 = b.add(d, ir.Constant(I64, 1))
    d.add_incoming(d2, next_range)
    b.cbranch(b.icmp_signed("<", d2, n), scan, leave)

    b.position_at_end(leave)
    done_p = b.bitcast(state, I32.as_pointer())
    done = b.atomic_rmw("add", done_p, ir.Constant(I32, 1), "acq_rel")
    with b.if_then(b.icmp_signed("==", b.add(done, ir.Constant(I32, 1)), nt)):
        with for_range(b, 1, b.add(n, ir.Constant(I64, 1)), name="reset", unroll=False) as j:
            w = b.bitcast(b.gep(state, [b.mul(j, ir.Constant(I64, LINE))]), I64.as_pointer())
            b.store_atomic(ir.Constant(I64, 0), w, "monotonic", 8)
        b.store_atomic(ir.Constant(I32, 0), done_p, "monotonic", 4)
