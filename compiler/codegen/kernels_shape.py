"""Codegen stage, data-movement and reduction kernels: sum/max/min over axes, argmax, transpose,
broadcast_to, slice, slice_grad, pad, concat, one_hot, gather, scatter_add.

Takes: an emission context and a one-node kernel of the legalized kernel graph, or a sum/max/min
with its elementwise prologue (`reduce_prologue`: computed as the input is read, its values other
kernels need stored on the way). Gives: `SHAPE_EMITTERS[op](cx, kernel)` -> calls. Every kernel is
a `strided_loop` (or a small explicit nest) over static shapes. Reductions iterate the input
row-major with the output's strides 0 on reduced axes and are explicit vector code: a reduced
contiguous row is combined in vector partial accumulators (`_row_reduce`), a kept innermost row
is a vector loop (`strided_vector_loop`) updating the output's row; the prologue is evaluated at
the same width. Each output element is accumulated by the one thread owning it in an order
fixed by the shape (splits only cut kept axes), except that a big reduction over the leading
axis first sums fixed chunks of its rows (`batch_chunks`), thread by thread, then the chunks in
order: results do not depend on the thread count.

Invariants: a kernel initialises every element it owns before accumulating into it; out-of-range
indices of gather/scatter_add are clamped into range (the interpreter reports them; native code
never reads or writes outside a tensor).
"""

from __future__ import annotations

import math

from llvmlite import ir

from ..ir import Graph
from ..passes.kernel_graph import Kernel
from .barrier import call_barrier
from .emit_ctx import Call, Ctx, mode_for, size_of
from .kernels_elementwise import evaluate, is_scalar_const, load_operand
from .loops import combine_in_order, for_range, i64, lane_indices, round_up
from .lower_elementwise import (
    ELEMENTWISE,
    const,
    lanes_of,
    load_value,
    reg_type,
    store_value,
)
from .strided import (
    Access,
    broadcast_strides,
    contiguous_strides,
    inner_strides,
    new_kernel_fn,
    strided_loop,
    strided_rows,
    strided_transpose,
    strided_vector_loop,
)
from .strided import thread_range as split_range

I32, I64 = ir.IntType(32), ir.IntType(64)


def _fn(cx: Ctx, stem: str, ids: list[int]):
    return new_kernel_fn(cx.module, cx.name(stem), [cx.ptr_type(i) for i in ids])


def _copy_body(acc: list[Access], dtype: str):
    def body(b: ir.IRBuilder, offs: list[ir.Value], _i: list[ir.Value]) -> None:
        b.store(b.load(acc[1].at(b, offs[1])), acc[0].at(b, offs[0]))
    return body


def _fill(b, ptr, shape, value, dtype, tid, nt, strides=None, splittable=None):
    acc = [Access(ptr, strides or contiguous_strides(shape))]

    def body(b: ir.IRBuilder, offs: list[ir.Value], _i: list[ir.Value]) -> None:
        store_value(b, const(dtype, value), acc[0].at(b, offs[0]), dtype)

    strided_loop(b, shape, acc, body, tid, nt, splittable)


def _identity(op: str, dtype: str) -> float:
    if op == "sum":
        return 0
    if dtype == "i32":
        return -(2 ** 31) if op == "max" else 2 ** 31 - 1
    return -math.inf if op == "max" else math.inf


def reduce_prologue(g: Graph, k: Kernel) -> list[int]:
    """The prologue of a sum/max/min kernel the reduction loop evaluates as it reads its input
    (all of it or none): elementwise nodes over the input's shape with a cheap body, no random
    draws (their index would be the input's, not the value's own). A polynomial (exp, log,
    tanh...) stays in its own elementwise kernel: with a scalar accumulation it made the tiny
    MLP's step ~20% slower (softmax's sum(exp(x - m))), and with the vector rows of
    `_row_reduce` it is still no faster there (its rows of 10 classes leave two elements of
    scalar exp per row; measured 6.2 -> 6.5 us per step)."""
    pro = [i for i in k.nodes if k.stages[i] == "prologue"]
    main = g.node(k.main)
    if main.op not in ("sum", "max", "min") or not pro or any(
            g.node(i).op not in CHEAP_BODIES or g.node(i).type.shape != main.inputs[0].type.shape
            for i in pro):
        return []
    return pro


CHEAP_BODIES = (frozenset(ELEMENTWISE) | {"broadcast_to"}) - {
    "exp", "log", "log1p", "expm1", "tanh", "sigmoid", "erf", "pow"}


_COMBINE = {"sum": "add", "max": "maximum", "min": "minimum"}


# A reduction over the leading (batch) axis and the innermost one (a conv bias gradient: images,
# rows and columns) sums fixed chunks of the leading axis separately, then the chunks' partials
# in chunk order: each thread reads the images it wrote in the kernel before (pooling and
# elementwise kernels split the leading axis too) instead of a channel of every image, and a sum
# over every axis runs on all threads. The chunks depend only on the shape, so the results stay
# the same for any thread count. A reduction keeping a long innermost axis (a dense bias
# gradient, [batch, features] -> [features]) still splits the kept columns, as the GEMM that
# wrote its input did.
REDUCE_CHUNKS = 8  # at most this many chunks (a divisor of the leading size, >= 2 rows each)
REDUCE_PARTIAL_BYTES = 1 << 16  # at most this many bytes of partials in all
KEPT_SPLIT_MIN = 64  # kept innermost elements worth splitting among threads instead


def batch_chunks(shape: tuple[int, ...], axes, out_size: int, dtype: str) -> int:
    """How many chunks of the leading axis a reduction of `shape` over `axes` sums separately
    (1: none, the plain loop). Only for work big enough to share and 4-byte elements."""
    inner_kept = len(shape) - 1 not in axes
    if (not shape or 0 not in axes or dtype not in ("f32", "i32")
            or mode_for(size_of(shape)) != "split"
            or (inner_kept and shape[-1] >= KEPT_SPLIT_MIN)):
        return 1
    n = shape[0]
    cap = min(REDUCE_CHUNKS, n // 2, REDUCE_PARTIAL_BYTES // (4 * round_up(out_size, 16)))
    return next((c for c in range(cap, 1, -1) if n % c == 0), 1)


def emit_reduce(cx: Ctx, k: Kernel) -> list[Call]:
    n = cx.node(k.main)
    x = n.inputs[0]
    op, axes, dt = n.op, n.attrs["axes"], n.type.dtype
    shape = x.type.shape
    kept = tuple(1 if i in axes else d for i, d in enumerate(shape))
    kstr = contiguous_strides(kept)
    out_strides = tuple(0 if i in axes else s for i, s in enumerate(kstr))
    pro = [cx.node(i) for i in reduce_prologue(cx.plan.graph, k)]
    inside = {p.id for p in pro}
    stored = [i for i in k.outputs if i in inside]
    loads = list(dict.fromkeys([x.id] * (x.id not in inside) + [
        a.id for p in pro for a in p.inputs if a.id not in inside and not is_scalar_const(a)]))
    # one noalias argument per buffer: y, the stored prologue values, the operands
    arg_nodes, at = cx.buffer_args([n.id, *stored, *loads])
    strides = ([out_strides] + [contiguous_strides(shape)] * len(stored)
               + [broadcast_strides(cx.node(i).type.shape, shape) for i in loads])
    values = [n.id, *stored, *loads]
    out_size = size_of(kept)
    chunks = batch_chunks(shape, axes, out_size, dt)
    # a chunk moves each argument by its leading stride: one per buffer, or no chunks
    lead = {}
    for v, st in zip(values[1:], strides[1:]):
        if lead.setdefault(at[v], st[0]) != st[0]:
            chunks = 1
    reads, writes = set(loads), {n.id, *stored}
    if chunks == 1:
        fn, b, tid, nt, ptrs = _fn(cx, op, arg_nodes)
        _reduce_loop(cx, b, tid, nt, shape, op, dt, x.id, pro, stored, loads,
                     [Access(ptrs[at[v]], st) for v, st in zip(values, strides)])
        b.ret_void()
        return [Call(fn, arg_nodes, reads, writes, mode_for(size_of(shape)))]

    # the loop over one chunk of rows, on one thread, into y (the chunk's partial)
    rows = shape[0] // chunks
    part = _fn(cx, f"{op}_chunk", arg_nodes)
    inner, b, _, _, ptrs = part
    zero, one = ir.Constant(I32, 0), ir.Constant(I32, 1)
    _reduce_loop(cx, b, zero, one, (rows,) + shape[1:], op, dt, x.id, pro, stored, loads,
                 [Access(ptrs[at[v]], st) for v, st in zip(values, strides)])
    b.ret_void()

    fn, b, tid, nt, ptrs = new_kernel_fn(cx.module, cx.name(op), [
        cx.ptr_type(i) for i in arg_nodes] + [ir.IntType(8), ir.FloatType()])
    *args, state, scratch = ptrs
    part_at = round_up(out_size, 16)
    partials = b.bitcast(scratch, args[0].type)

    def partial(c: ir.Value) -> ir.Value:
        return b.gep(partials, [b.mul(c, i64(part_at))])

    lo, hi = split_range(b, tid, nt, chunks)
    with for_range(b, lo, hi, name="chunk", unroll=False) as c:
        moved = [b.gep(p, [b.mul(c, i64(rows * lead[j]))]) if j in lead else p
                 for j, p in enumerate(args)]
        b.call(inner, [zero, one, partial(c), *moved[1:]])
    call_barrier(b, state, nt, pause=cx.target.x86)
    # element e of y: the chunks' partials combined in chunk order
    e_lo, e_hi = split_range(b, tid, nt, out_size)
    combine_in_order(b, partial, i64(chunks), args[0], e_lo, e_hi, lambda a, v: ELEMENTWISE[
        _COMBINE[op]](b, [a, v], {}, [dt, dt], dt))
    b.ret_void()
    cx.need_scratch(chunks * part_at * 4, shared=True)
    return [Call(fn, arg_nodes + ["barrier", "scratch"], reads, writes, "split",
                 shares_scratch=True)]


def _reduce_loop(cx: Ctx, b: ir.IRBuilder, tid: ir.Value, nt: ir.Value, shape: tuple[int, ...],
                 op: str, dt: str, x: int, pro: list, stored: list[int], loads: list[int],
                 acc: list[Access]) -> None:
    """The reduction of the input x over `shape` (its leading rows, for a chunk) into acc[0] (the
    output, its strides 0 on reduced axes): filled with the identity, then accumulated, the
    prologue evaluated and its stored values stored on the way; split over kept axes only."""
    y = acc[0]
    kept = tuple(1 if s == 0 else d for d, s in zip(shape, y.strides))
    splittable = [s != 0 for s in y.strides]
    _fill(b, y.ptr, kept, _identity(op, dt), dt, tid, nt, y.strides, splittable)
    first_load = 1 + len(stored)
    inner = inner_strides(shape, acc, splittable)

    def combine(b: ir.IRBuilder, a: ir.Value, v: ir.Value) -> ir.Value:
        """The primitive's own body (add, maximum, minimum: NaN propagates)."""
        return ELEMENTWISE[_COMBINE[op]](b, [a, v], {}, [dt, dt], dt)

    def values(b: ir.IRBuilder, offs: list[ir.Value], w: int,
               given: dict[int, ir.Value]) -> ir.Value:
        """The input at `w` consecutive elements of the row from `offs` (the prologue evaluated,
        its stored values stored): one element splat where an operand is broadcast, `given`
        operands as given (see strided_vector_loop)."""
        vals = {i: load_operand(b, acc[a].at(b, offs[a]), cx.node(i).type.dtype, w,
                                inner[a] == 0, given.get(a))
                for a, i in enumerate(loads, first_load)}
        evaluate(cx, b, pro, vals, lanes=w)
        for j, i in enumerate(stored):
            store_value(b, vals[i], acc[1 + j].at(b, offs[1 + j]), cx.node(i).type.dtype)
        return vals[x]

    def body(b: ir.IRBuilder, offs: list[ir.Value], w: int, given: dict[int, ir.Value]
             ) -> None:
        # the innermost axis is kept (y contiguous along it): y's w elements each take one input
        yp = acc[0].at(b, offs[0])
        y_old = load_operand(b, yp, dt, w, False, given.get(0))
        store_value(b, combine(b, y_old, values(b, offs, w, given)), yp, dt)

    lanes = cx.target.lanes
    if not strided_rows(b, shape, acc, _row_reduce(acc, inner, values, combine, op, dt, lanes),
                        tid, nt, splittable,
                        # a row of fewer than two vectors: the horizontal combine costs more
                        # than its scalar chain (softmax's max over 10 classes: 0.06 -> 0.4 us)
                        lambda size, st: st[0] == 0 and size >= 2 * lanes and all(
                            s in (0, 1) for s in st[1:])):
        strided_vector_loop(b, shape, acc, body, tid, nt, lanes if inner[0] == 1 else 1,
                            splittable, outputs=first_load)


ROW_PARTIALS = 4  # vector accumulators of a row reduction


def _row_reduce(acc: list[Access], inner: list[int], values, combine, op: str, dt: str, w: int):
    """The row body of a reduction whose innermost (contiguous) axis is reduced: the row's
    values (prologue included) are combined in ROW_PARTIALS vector accumulators of `w` lanes
    (lane l of accumulator a takes the elements a*w + l, a*w + l + P*w, ...), which are combined
    in a fixed tree, then the row's last elements in order, then its output element. One
    sequential combine per element was a chain of dependent adds: a conv bias gradient over
    28x28 images took ~0.3 ms. The order is fixed by the static shape, so results stay bitwise
    independent of threads (rows are never split)."""
    vt = reg_type(dt, w)
    ident = const(dt, _identity(op, dt), w)

    def row(b: ir.IRBuilder, offs: list[ir.Value], size: int) -> None:
        nvec = size // w
        blocks = nvec // ROW_PARTIALS

        def vec(t: ir.Value, width: int = w) -> ir.Value:
            at = [o if s == 0 else b.add(o, t) for o, s in zip(offs, inner)]
            return values(b, at, width, {})

        parts = [ident] * ROW_PARTIALS
        if blocks:
            pre = b.block
            body = b.append_basic_block("rr.body")
            done = b.append_basic_block("rr.done")
            b.branch(body)
            b.position_at_end(body)
            i = b.phi(I64, name="rr")
            i.add_incoming(i64(0), pre)
            phis = [b.phi(vt) for _ in range(ROW_PARTIALS)]
            base = b.mul(i, i64(ROW_PARTIALS * w))
            parts = [combine(b, ph, vec(b.add(base, i64(a * w)))) for a, ph in enumerate(phis)]
            nxt = b.add(i, i64(1))
            i.add_incoming(nxt, b.block)
            for ph, v in zip(phis, parts):
                ph.add_incoming(ident, pre)
                ph.add_incoming(v, b.block)
            b.cbranch(b.icmp_signed("<", nxt, i64(blocks)), body, done)
            b.position_at_end(done)
        for a in range(nvec - blocks * ROW_PARTIALS):  # whole vectors after the last block
            parts[a] = combine(b, parts[a], vec(i64((blocks * ROW_PARTIALS + a) * w)))
        while len(parts) > 1:
            parts = [combine(b, parts[j], parts[j + 1]) for j in range(0, len(parts), 2)]
        v = parts[0]
        while lanes_of(v) > 1:
            half = lanes_of(v) // 2
            v = combine(b, b.shuffle_vector(v, v, lane_indices(range(half))),
                        b.shuffle_vector(v, v, lane_indices(range(half, 2 * half))))
        total = b.extract_element(v, ir.Constant(I32, 0))
        for t in range(nvec * w, size):  # the row's last elements, in order
            total = combine(b, total, vec(i64(t), 1))
        yp = acc[0].at(b, offs[0])
        b.store(combine(b, b.load(yp), total), yp)

    return row


def emit_argmax(cx: Ctx, k: Kernel) -> list[Call]:
    n = cx.node(k.main)
    x = n.inputs[0]
    ax, shape = n.attrs["axis"], x.type.shape
    outer, length = size_of(shape[:ax]), shape[ax]
    inner = size_of(shape[ax + 1:])
    fn, b, tid, nt, (y, xp) = _fn(cx, "argmax", [n.id, x.id])
    dt = x.type.dtype
    best_p, idx_p = b.alloca(reg_type(dt)), b.alloca(I32)
    acc = [Access(y, (inner, 1)), Access(xp, (length * inner, 1))]

    def body(b: ir.IRBuilder, offs: list[ir.Value], _i: list[ir.Value]) -> None:
        base = acc[1].at(b, offs[1])
        b.store(b.load(base), best_p)
        b.store(ir.Constant(I32, 0), idx_p)
        with for_range(b, 1, length, name="a") as a:
            v = b.load(b.gep(base, [b.mul(a, i64(inner))]))
            best = b.load(best_p)
            if dt == "i32":
                gt = b.icmp_signed(">", v, best)
            else:  # first nan wins, like NumPy
                gt = b.and_(b.fcmp_unordered(">", v, best), b.fcmp_ordered("ord", best, best))
            b.store(b.select(gt, v, best), best_p)
            b.store(b.select(gt, b.trunc(a, I32), b.load(idx_p)), idx_p)
        b.store(b.load(idx_p), acc[0].at(b, offs[0]))

    strided_loop(b, (outer, inner), acc, body, tid, nt)
    b.ret_void()
    return [Call(fn, [n.id, x.id], {x.id}, {n.id}, mode_for(size_of(shape)))]


def _copy_kernel(cx: Ctx, n, x, space, out_acc, in_strides, in_offset=0, pre_fill=None):
    fn, b, tid, nt, (y, xp) = _fn(cx, n.op, [n.id, x.id])
    calls = []
    if pre_fill is not None:  # a separate kernel: the copy below may be split differently
        f2, b2, t2, n2, (y2,) = _fn(cx, n.op + "_fill", [n.id])
        _fill(b2, y2, n.type.shape, pre_fill, n.type.dtype, t2, n2)
        b2.ret_void()
        calls.append(Call(f2, [n.id], set(), {n.id}, mode_for(size_of(n.type.shape))))
    acc = [Access(y, out_acc[0], out_acc[1]), Access(xp, in_strides, in_offset)]
    if not strided_transpose(b, space, acc, tid, nt, min(cx.target.lanes, 8)):
        strided_loop(b, space, acc, _copy_body(acc, n.type.dtype), tid, nt)
    b.ret_void()
    calls.append(Call(fn, [n.id, x.id], {x.id}, {n.id}, mode_for(size_of(space))))
    return calls


def emit_transpose(cx: Ctx, k: Kernel) -> list[Call]:
    n = cx.node(k.main)
    x = n.inputs[0]
    xs = contiguous_strides(x.type.shape)
    space = n.type.shape
    return _copy_kernel(cx, n, x, space, (contiguous_strides(space), 0),
                        tuple(xs[p] for p in n.attrs["perm"]))


def emit_broadcast(cx: Ctx, k: Kernel) -> list[Call]:
    n = cx.node(k.main)
    x = n.inputs[0]
    space = n.type.shape
    return _copy_kernel(cx, n, x, space, (contiguous_strides(space), 0),
                        broadcast_strides(x.type.shape, space))


def _slice_map(shape, attrs):
    st = contiguous_strides(shape)
    offset = sum(a * s for a, s in zip(attrs["starts"], st))
    return tuple(c * s for c, s in zip(attrs["steps"], st)), offset


def emit_slice(cx: Ctx, k: Kernel) -> list[Call]:
    n = cx.node(k.main)
    x = n.inputs[0]
    strides, off = _slice_map(x.type.shape, n.attrs)
    space = n.type.shape
    return _copy_kernel(cx, n, x, space, (contiguous_strides(space), 0), strides, off)


def emit_slice_grad(cx: Ctx, k: Kernel) -> list[Call]:
    n = cx.node(k.main)
    x = n.inputs[0]
    strides, off = _slice_map(n.type.shape, n.attrs)
    space = x.type.shape
    return _copy_kernel(cx, n, x, space, (strides, off), contiguous_strides(space), 0,
                        pre_fill=0)


def emit_pad(cx: Ctx, k: Kernel) -> list[Call]:
    n = cx.node(k.main)
    x = n.inputs[0]
    st = contiguous_strides(n.type.shape)
    off = sum(lo * s for (lo, _), s in zip(n.attrs["pads"], st))
    space = x.type.shape
    return _copy_kernel(cx, n, x, space, (st, off), contiguous_strides(space), 0,
                        pre_fill=n.attrs["value"])


def emit_concat(cx: Ctx, k: Kernel) -> list[Call]:
    n = cx.node(k.main)
    ax = n.attrs["axis"]
    ids = [n.id] + list(dict.fromkeys(x.id for x in n.inputs))
    fn, b, tid, nt, ptrs = _fn(cx, "concat", ids)
    st = contiguous_strides(n.type.shape)
    at = 0
    for x in n.inputs:
        acc = [Access(ptrs[0], st, at * st[ax]),
               Access(ptrs[ids.index(x.id)], contiguous_strides(x.type.shape))]
        strided_loop(b, x.type.shape, acc, _copy_body(acc, n.type.dtype), tid, nt)
        at += x.type.shape[ax]
    b.ret_void()
    return [Call(fn, ids, set(ids[1:]), {n.id}, mode_for(size_of(n.type.shape)))]


def emit_one_hot(cx: Ctx, k: Kernel) -> list[Call]:
    n = cx.node(k.main)
    y = n.inputs[0]
    fn, b, tid, nt, (out, yp) = _fn(cx, "one_hot", [n.id, y.id])
    space = n.type.shape
    acc = [Access(out, contiguous_strides(space)),
           Access(yp, contiguous_strides(y.type.shape) + (0,))]
    dt = n.type.dtype

    def body(b: ir.IRBuilder, offs: list[ir.Value], idx: list[ir.Value]) -> None:
        hit = b.icmp_signed("==", b.load(acc[1].at(b, offs[1])), b.trunc(idx[-1], I32))
        b.store(b.select(hit, const(dt, 1.0), const(dt, 0.0)), acc[0].at(b, offs[0]))

    strided_loop(b, space, acc, body, tid, nt, need_index=True)
    b.ret_void()
    return [Call(fn, [n.id, y.id], {y.id}, {n.id}, mode_for(size_of(space)))]


def _clamped(b: ir.IRBuilder, ip: ir.Value, i: ir.Value, n: int) -> ir.Value:
    v = b.sext(b.load(b.gep(ip, [i])), I64)
    v = b.select(b.icmp_signed("<", v, i64(0)), i64(0), v)
    return b.select(b.icmp_signed(">=", v, i64(n)), i64(n - 1), v)


def emit_gather(cx: Ctx, k: Kernel) -> list[Call]:
    n = cx.node(k.main)
    table, idx = n.inputs
    rows, row = table.type.shape[0], size_of(table.type.shape[1:])
    count = size_of(idx.type.shape)
    fn, b, tid, nt, (out, tp, ip) = _fn(cx, "gather", [n.id, table.id, idx.id])
    lo, hi = split_range(b, tid, nt, count)
    with for_range(b, lo, hi, name="g", unroll=False) as i:
        src = b.mul(_clamped(b, ip, i, rows), i64(row))
        dst = b.mul(i, i64(row))
        with for_range(b, 0, row, name="c") as c:
            b.store(b.load(b.gep(tp, [b.add(src, c)])), b.gep(out, [b.add(dst, c)]))
    b.ret_void()
    return [Call(fn, [n.id, table.id, idx.id], {table.id, idx.id}, {n.id},
                 mode_for(count * row))]


def emit_scatter_add(cx: Ctx, k: Kernel) -> list[Call]:
    """Threads split the row's columns; each adds every update in index order (deterministic)."""
    n = cx.node(k.main)
    upd, idx = n.inputs
    rows, row = n.type.shape[0], size_of(n.type.shape[1:])
    count = size_of(idx.type.shape)
    dt = n.type.dtype
    fn, b, tid, nt, (out, up, ip) = _fn(cx, "scatter_add", [n.id, upd.id, idx.id])
    lo, hi = split_range(b, tid, nt, row)
    with for_range(b, 0, rows, name="r", unroll=False) as r, \
            for_range(b, lo, hi, name="c") as c:
        store_value(b, const(dt, 0), b.gep(out, [b.add(b.mul(r, i64(row)), c)]), dt)
    with for_range(b, 0, count, name="u", unroll=False) as i:
        dst = b.mul(_clamped(b, ip, i, rows), i64(row))
        src = b.mul(i, i64(row))
        with for_range(b, lo, hi, name="c") as c:
            p = b.gep(out, [b.add(dst, c)])
            v = load_value(b, b.gep(up, [b.add(src, c)]), dt)
            s = b.fadd(b.load(p), v) if dt != "i32" else b.add(b.load(p), v)
            b.store(s, p)
    b.ret_void()
    return [Call(fn, [n.id, upd.id, idx.id], {upd.id, idx.id}, {n.id},
                 mode_for(count * row))]


SHAPE_EMITTERS = {
    "sum": emit_reduce, "max": emit_reduce, "min": emit_reduce, "argmax": emit_argmax,
    "transpose": emit_transpose, "broadcast_to": emit_broadcast, "slice": emit_slice,
    "slice_grad": emit_slice_grad, "pad": emit_pad, "concat": emit_concat,
    "one_hot": emit_one_hot, "gather": emit_gather, "scatter_add": emit_scatter_add,
}
