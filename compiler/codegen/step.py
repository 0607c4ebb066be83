"""Codegen stage, the whole-step module: one LLVM module per compiled graph and request, with every
shape and arena offset baked in.

Takes: a `StepPlan` (step_input: the optimizer's legalized kernels and arena plan, addressed) and
a target. Gives: `build_step_module(plan, target, loop=...)`
-> `StepModule` (the llvmlite module and the layout the runtime needs). Entry points:
  `void netc_step(i32 tid, i32 nt, i8* arena)`: the RNG key leaf filled from the header, every
  kernel of the plan in order, then the copies of updates the plan commits at the end;
  `void netc_train_steps(i32 tid, i32 nt, i8* arena, i8** data, i64* index, i64 n_steps)`
  (with loop=True): n steps, each gathering its batch rows `index[s*B + r]` of the full data
  arrays (in `fed` order) into the input slots itself, running the step, adding the reported
  losses into the header's f64 accumulators and advancing the header's RNG step;
  `void netc_feed(i8* arena, i8** src, i64* out)`: the fed inputs copied into their slots from
  the caller's arrays, with what checking their values needs (`_emit_feed`).
Every kernel is `f(tid, nt, pointers...)` and splits work by (tid, nt) only; threads meet at the
native barrier before a kernel that reads or writes bytes another thread may have written or read
since the last barrier (kernels run by thread 0 alone need no barrier between them). Hazards are
found on byte ranges of the plan's buffers, not on values: with liveness-based reuse, buffers of
different values overlap over time.

Arena layout (bytes): [0, 64) barrier state; 64: i32 seed_lo, seed_hi, step (the RNG key words);
[128, 256): f64 loss accumulators; the plan's buffers (64-byte aligned) up to `plan.size`; the
table of persistent tensor addresses (params, state, optimizer state live in the model's Store,
one pointer each, written by the runtime); per-thread scratch from `scratch_offset` (every
thread's private part, then the shared parts; see `_Body.scratch`); after the scratch of all
threads, the claim state of each call that shares its work dynamically (claim.py; its size
depends on the thread count; zero between calls).

Invariants: one module per plan; every entry point is called by all `nt` threads; results depend
only on inputs and nt (never on timing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from llvmlite import ir

from ..errors import InternalCompilerError
from ..passes.common import nbytes
from ..passes.kernel_graph import Kernel
from ..passes.plan_memory import ALIGN, align
from .barrier import call_barrier
from .claim import STATE_BYTES_PER_THREAD, STATE_FIXED_BYTES
from .emit_ctx import Call, Ctx
from .kernels_dense import DENSE_EMITTERS
from .kernels_elementwise import emit_copy, emit_elementwise, emit_rng_key
from .kernels_rows import emit_rows
from .kernels_shape import SHAPE_EMITTERS
from .loops import for_range, i64
from .step_input import LOOP_OPS, StepPlan
from .strided import thread_range
from .target import Target

I8, I32, I64, F64 = ir.IntType(8), ir.IntType(32), ir.IntType(64), ir.DoubleType()
I8P = I8.as_pointer()
KEY_OFFSET = 64
LOSS_OFFSET = 128
MAX_LOSSES = 16


@dataclass
class StepModule:
    module: ir.Module | None  # None when loaded from the cache
    plan: StepPlan
    table_offset: int
    scratch_per_thread: int
    losses: list[int]  # node ids accumulated by netc_train_steps, in order
    n_barriers: int
    split_calls: int = 1  # kernels every thread works on (0: one thread does everything)
    counters: int = 0  # calls with a claim state (claim.py), after the scratch

    @property
    def scratch_offset(self) -> int:
        return scratch_offset(self.plan)

    @property
    def fixed_bytes(self) -> int:
        """The arena is fixed_bytes + per_thread_bytes * threads bytes (+ ALIGN of slack)."""
        return self.scratch_offset + STATE_FIXED_BYTES * self.counters

    @property
    def per_thread_bytes(self) -> int:
        return self.scratch_per_thread + STATE_BYTES_PER_THREAD * self.counters

    def arena_bytes(self, threads: int) -> int:
        return self.fixed_bytes + self.per_thread_bytes * threads + ALIGN

    @classmethod
    def layout(cls, plan: StepPlan, scratch_per_thread: int, losses: list[int],
               split_calls: int, counters: int) -> StepModule:
        """The layout of a module compiled earlier (loaded from the cache): no IR is built."""
        return cls(None, plan, plan.size, scratch_per_thread, losses, 0, split_calls, counters)


def scratch_offset(plan: StepPlan) -> int:
    return align(plan.size + 8 * len(plan.names))


_METADATA_REF = re.compile(r"!\d+")


def share_identical_kernels(module: ir.Module, calls: list[Call]) -> None:
    """Call one function for kernels whose code is identical (the same loop over the same shapes
    with other pointers: every time step of an unrolled recurrence, every layer of equal width)
    and drop the copies from `module`, so LLVM optimizes and emits each once. Functions are
    compared by their IR text with their own name and metadata numbering (loop hints) taken out;
    several plans sharing a module share their kernels too."""
    seen: dict[str, ir.Function] = module.__dict__.setdefault("_netc_kernels", {})
    keys: dict[int, str] = {}
    for c in calls:
        fn = c.fn
        key = keys.get(id(fn))
        if key is None:
            text = str(fn)
            key = _METADATA_REF.sub("!", text.replace(f'@"{fn.name}"', "@F", 1))
            keys[id(fn)] = key
        first = seen.setdefault(key, fn)
        if first is not fn:
            c.fn = first
            module.globals.pop(fn.name, None)


def _emit_kernel(cx: Ctx, k: Kernel) -> list[Call]:
    if k.kind == "view":
        return []  # a row-major reshape: its output is its input's buffer
    if k.kind == "rows":
        return emit_rows(cx, k)
    if k.kind == "elementwise":
        if all(cx.node(i).op in LOOP_OPS for i in k.nodes):
            return emit_elementwise(cx, k)
        if len(k.nodes) != 1:
            raise InternalCompilerError("jit: an elementwise kernel mixes loop ops with "
                                        f"{[cx.node(i).op for i in k.nodes]}")
        k = replace(k, main=k.nodes[0])  # one_hot: a kernel of its own
    op = cx.node(k.main).op
    emit = SHAPE_EMITTERS.get(op) or DENSE_EMITTERS.get(op)
    if emit is None:
        raise InternalCompilerError(f"jit: no lowering for primitive {op!r}")
    return emit(cx, k)


def _overlap(a: set[tuple], b: set[tuple]) -> bool:
    """Do two sets of spans (step_input.StepPlan.span) share a byte?"""
    for x in a:
        for y in b:
            if x[0] == "p" or y[0] == "p":
                if x == y:
                    return True
            elif x[1] < y[2] and y[1] < x[2]:
                return True
    return False


class _Body:
    """Emits calls into a function with (tid, nt, arena), resolving pointers and barriers."""

    def __init__(self, cx: Ctx, b: ir.IRBuilder, tid, nt, arena, table_offset: int,
                 scratch_offset: int):
        """Calls' claim states start after nt threads' scratch (scratch_per_thread each)."""
        self.cx, self.b, self.tid, self.nt, self.arena = cx, b, tid, nt, arena
        self.table = b.bitcast(b.gep(arena, [i64(table_offset)]), I8P.as_pointer())
        self.scratch_offset = scratch_offset
        self.slots = {name: j for j, name in enumerate(cx.plan.names)}
        self.pending: list[tuple[set, set, str, bool]] = []
        self.barriers = 0
        self.counters = 0  # claim counters handed out so far, one per call asking for one

    def node_ptr(self, i: int) -> ir.Value:
        p, b = self.cx.plan, self.b
        if i in p.persistent:
            return b.load(b.gep(self.table, [i64(self.slots[p.persistent[i]])]), align=8)
        return b.gep(self.arena, [i64(p.offset[i])])

    def scratch(self, c: Call, tid: ir.Value) -> ir.Value:
        """Thread t's private scratch is [t*P, t*P + P) of the scratch region (P: the largest
        private need), whatever stride a kernel steps by: it gets base + t*(P - stride). Kernels
        reading each other's parts (conv weight gradients) get their own region after all the
        private parts, at base + nt*P."""
        b, priv = self.b, self.cx.scratch_private
        base = b.gep(self.arena, [i64(self.scratch_offset)])
        if c.shares_scratch:
            return b.gep(base, [b.mul(b.sext(self.nt, I64), i64(priv))])
        return b.gep(base, [b.mul(b.sext(tid, I64), i64(priv - c.scratch_stride))])

    def arg(self, a, ty: ir.Type, c: Call | None = None, tid: ir.Value | None = None
            ) -> ir.Value:
        b = self.b
        if a == "null":
            return ir.Constant(ty, None)
        if a == "scratch":
            return b.bitcast(self.scratch(c, tid), ty)
        if a in ("barrier", "arena"):
            return b.bitcast(self.arena, ty)
        if a == "counter":  # call j's claim state (claim.state_bytes(nt) each), after them
            j = self.counters
            self.counters += 1
            n = b.sext(self.nt, I64)
            claims = b.add(i64(self.scratch_offset),
                           b.mul(n, i64(self.cx.scratch_per_thread)))
            size = b.add(i64(STATE_FIXED_BYTES), b.mul(n, i64(STATE_BYTES_PER_THREAD)))
            at = b.add(claims, b.mul(i64(j), size))
            return b.bitcast(b.gep(self.arena, [at]), ty)
        return b.bitcast(self.node_ptr(a), ty)

    def barrier(self) -> None:
        call_barrier(self.b, self.arena, self.nt)
        self.pending = []
        self.barriers += 1

    def call(self, c: Call) -> None:
        plan = self.cx.plan
        reads = {plan.span(i) for i in c.reads}
        writes = {plan.span(i) for i in c.writes}
        uses_scratch = "scratch" in c.args
        for r, w, mode, shared in self.pending:
            # a kernel that read other threads' scratch must be done before anyone reuses it
            if shared and uses_scratch:
                self.barrier()
                break
            if mode == "single" and c.mode == "single":
                continue
            if _overlap(w, reads | writes) or _overlap(r, writes):
                self.barrier()
                break
        self.pending.append((reads, writes, c.mode, c.shares_scratch))
        # kernels stay functions: inlined, hundreds of them (an unrolled recurrence) make one
        # huge step function whose O3 time grows faster than its size; a call costs ~ns
        if "noinline" not in c.fn.attributes:
            c.fn.attributes.add("noinline")
        b = self.b
        types = [p.type for p in c.fn.args[2:]]
        if c.mode == "single":
            zero = ir.Constant(I32, 0)
            with b.if_then(b.icmp_signed("==", self.tid, zero)):
                args = [self.arg(a, t, c, zero) for a, t in zip(c.args, types)]
                b.call(c.fn, [zero, ir.Constant(I32, 1), *args])
        else:
            args = [self.arg(a, t, c, self.tid) for a, t in zip(c.args, types)]
            b.call(c.fn, [self.tid, self.nt, *args])


def build_step_module(plan: StepPlan, target: Target, *, loop: bool = False,
                      losses: list[int] | None = None, name: str = "netc",
                      module: ir.Module | None = None, prefix: str = "") -> StepModule:
    """Add the entry points `{prefix}netc_step` (and `{prefix}netc_train_steps` with loop) for
    `plan` to `module` (a new one by default). Several plans of one graph may share a module:
    their GEMM and conv kernels are emitted once."""
    module = module if module is not None else ir.Module(name=name)
    cx = Ctx(module, target, plan, prefix=prefix)
    calls: list[Call] = []
    if plan.rng_key is not None:
        calls.extend(emit_rng_key(cx, plan.rng_key, KEY_OFFSET))
    for k in plan.kernels:
        calls.extend(_emit_kernel(cx, k))
    share_identical_kernels(module, calls)
    for src, dst in plan.commits:  # updates the plan could not write in place
        calls.extend(emit_copy(cx, src, dst, "update"))
    table_offset = plan.size
    scratch_at = scratch_offset(plan)

    body_ty = ir.FunctionType(ir.VoidType(), [I32, I32, I8P])
    body_fn = ir.Function(module, body_ty, name=f"{prefix}netc_step")
    tid, nt, arena = body_fn.args
    arena.add_attribute("noalias")
    b = ir.IRBuilder(body_fn.append_basic_block("entry"))
    em = _Body(cx, b, tid, nt, arena, table_offset, scratch_at)
    for c in calls:
        em.call(c)
    b.ret_void()

    losses = list(losses or [])
    if len(losses) > MAX_LOSSES:
        raise InternalCompilerError(f"jit: at most {MAX_LOSSES} reported losses")
    _emit_feed(module, plan, target, f"{prefix}netc_feed")
    if loop:
        _emit_train_steps(module, plan, body_fn, losses, f"{prefix}netc_train_steps")
    return StepModule(module, plan, table_offset, cx.scratch_per_thread, losses, em.barriers,
                      sum(c.mode == "split" for c in calls), em.counters)


# What the feed function keeps of each element (see `_emit_feed`): an f32's exponent bits, an
# i32's value; other dtypes are copied unchecked.
FEED_MASKS = {"f32": 0x7F800000, "i32": 0xFFFFFFFF}
NONFINITE = 0x7F800000  # an f32 feed's summary when some element is NaN or infinite


def _emit_feed(module: ir.Module, plan: StepPlan, target: Target, name: str) -> None:
    """`void name(i8* arena, i8** src, i64* out)`: copy each fed input (`plan.fed` order) from
    src[j] into its arena slot, and set out[j] to the unsigned max of its elements' bits under
    FEED_MASKS: NONFINITE when an f32 input holds a NaN or an infinity, an i32 input's largest
    value (a negative one as a huge one) to compare with the rows or classes it indexes. One
    pass over the data instead of NumPy's check and then its copy."""
    fnty = ir.FunctionType(ir.VoidType(), [I8P, I8P.as_pointer(), I64.as_pointer()])
    fn = ir.Function(module, fnty, name=name)
    arena, src, out = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    w = target.lanes
    vt = ir.VectorType(I32, w)
    memcpy = module.declare_intrinsic("llvm.memcpy", [I8P, I8P, I64])

    def umax(x: ir.Value, y: ir.Value) -> ir.Value:
        return b.select(b.icmp_unsigned(">", x, y), x, y)

    for j, i in enumerate(plan.fed.values()):
        node = plan.graph.node(i)
        s = b.load(b.gep(src, [i64(j)]), align=8)
        d = b.gep(arena, [i64(plan.offset[i])])
        mask = FEED_MASKS.get(node.type.dtype)
        if mask is None:
            b.call(memcpy, [d, s, i64(nbytes(node)), ir.Constant(ir.IntType(1), 0)])
            b.store(i64(0), b.gep(out, [i64(j)]))
            continue
        n = nbytes(node) // 4
        s32, d32 = b.bitcast(s, I32.as_pointer()), b.bitcast(d, I32.as_pointer())
        acc_v = b.alloca(vt)
        b.store(ir.Constant(vt, [0] * w), acc_v)
        acc = b.alloca(I32)
        b.store(ir.Constant(I32, 0), acc)
        splat = ir.Constant(vt, [mask] * w)
        with for_range(b, 0, n // w * w, w, name=f"feed{j}", unroll=False) as k:
            v = b.load(b.bitcast(b.gep(s32, [k]), vt.as_pointer()), align=4)
            b.store(v, b.bitcast(b.gep(d32, [k]), vt.as_pointer()), align=4)
            b.store(umax(b.load(acc_v), b.and_(v, splat)), acc_v)
        with for_range(b, n // w * w, n, name=f"feed{j}.tail", unroll=False) as k:
            v = b.load(b.gep(s32, [k]), align=4)
            b.store(v, b.gep(d32, [k]), align=4)
            b.store(umax(b.load(acc), b.and_(v, ir.Constant(I32, mask))), acc)
        total, lanes = b.load(acc), b.load(acc_v)
        for lane in range(w):
            total = umax(total, b.extract_element(lanes, ir.Constant(I32, lane)))
        b.store(b.zext(total, I64), b.gep(out, [i64(j)]))
    b.ret_void()


def _emit_train_steps(module: ir.Module, plan: StepPlan, body_fn: ir.Function,
                      losses: list[int], name: str) -> None:
    fnty = ir.FunctionType(ir.VoidType(), [I32, I32, I8P, I8P.as_pointer(), I64.as_pointer(),
                                           I64])
    fn = ir.Function(module, fnty, name=name)
    tid, nt, arena, data, index, n_steps = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    g = plan.graph
    fed = [(name, g.node(i)) for name, i in plan.fed.items()]
    batch = fed[0][1].type.shape[0] if fed and fed[0][1].type.rank else 1
    memcpy = module.declare_intrinsic("llvm.memcpy", [I8P, I8P, I64])
    step_p = b.bitcast(b.gep(arena, [i64(KEY_OFFSET + 8)]), I32.as_pointer())
    with for_range(b, 0, n_steps, name="s", unroll=False) as s:
        lo, hi = thread_range(b, tid, nt, batch)
        for j, (_name, node) in enumerate(fed):
            row = nbytes(node) // max(node.type.shape[0], 1) if node.type.rank else nbytes(node)
            src_base = b.load(b.gep(data, [i64(j)]), align=8)
            dst_base = b.gep(arena, [i64(plan.offset[node.id])])
            with for_range(b, lo, hi, name="r", unroll=False) as r:
                k = b.load(b.gep(index, [b.add(b.mul(s, i64(batch)), r)]), align=8)
                src = b.gep(src_base, [b.mul(k, i64(row))])
                dst = b.gep(dst_base, [b.mul(r, i64(row))])
                b.call(memcpy, [dst, src, i64(row), ir.Constant(ir.IntType(1), 0)])
        call_barrier(b, arena, nt)
        b.call(body_fn, [tid, nt, arena])
        call_barrier(b, arena, nt)
        with b.if_then(b.icmp_signed("==", tid, ir.Constant(I32, 0))):
            for j, i in enumerate(losses):
                node = g.node(i)
                ty = F64 if node.type.dtype == "f64" else ir.FloatType()
                v = b.load(b.bitcast(b.gep(arena, [i64(plan.offset[i])]), ty.as_pointer()))
                if node.type.dtype != "f64":
                    v = b.fpext(v, F64)
                acc = b.bitcast(b.gep(arena, [i64(LOSS_OFFSET + 8 * j)]), F64.as_pointer())
                b.store(b.fadd(b.load(acc), v), acc)
            b.store(b.add(b.load(step_p), ir.Constant(I32, 1)), step_p)
    b.ret_void()
