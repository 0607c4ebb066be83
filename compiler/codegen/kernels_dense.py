"""Codegen stage, dense kernels: matmul (the generated GEMM, batched and broadcast), conv2d and its
two gradients (the generated conv kernels), pooling and its gradients, max_pool2d_select.

Takes: an emission context and a kernel of the legalized kernel graph (one node, except a matmul
with its `fit_matmul` fusions -- operand transposes and the bias/activation epilogue -- and a
conv2d with its `fit_conv` bias/activation epilogue). Gives: `DENSE_EMITTERS[op](cx, kernel)` ->
calls, and `fit_matmul` / `fit_conv` (what legalization keeps).
float32 products use gemm.emit_gemm / conv.emit_conv_* / pool.emit_pool_* (register-blocked
SIMD micro-kernels, per-thread scratch in the arena); other dtypes use a plain triple loop.

Invariants: the GEMM splits rows or columns of C only (each element's k-order is fixed), conv
splits images and reduces weight gradients in a fixed thread order: results are reproducible for
a thread count; a batched matmul gives whole matrices to threads, each with its own scratch.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from ..ir import Graph
from ..passes.common import live_roots
from ..passes.kernel_graph import Kernel
from .conv import emit_conv_forward, emit_conv_grad_input, emit_conv_grad_weight
from .emit_ctx import Call, Ctx, mode_for, size_of
from .gemm import GemmSpec, emit_gemm
from .im2col import ConvSpec
from .loops import F32P, for_range, i64
from .lower_elementwise import reg_type
from .microkernel import Epilogue
from .pool import PoolSpec, emit_pool_backward, emit_pool_forward
from .strided import Access, broadcast_strides, new_kernel_fn, strided_loop

I32, I64, F32 = ir.IntType(32), ir.IntType(64), ir.FloatType()


def _mm_shapes(a, b):
    a_sh = a.type.shape if a.type.rank >= 2 else (1,) + a.type.shape
    b_sh = b.type.shape if b.type.rank >= 2 else b.type.shape + (1,)
    return a_sh, b_sh


def _bias_axis(shape: tuple[int, ...], m: int, n: int) -> str | None:
    """How a bias of `shape` broadcasts over an M x N product: one value per column or row.
    A tensor shaped exactly like C (a [1, N] addend when M = 1) is no bias but a residual: it
    goes to `_update_chain`, which adds it before C is first written, so the plan may put C in
    its buffer (an epilogue bias is read after C's K blocks have overwritten that buffer)."""
    if len(shape) > 2 or any(d != 1 for d in shape[:-2]) or tuple(shape) == (m, n):
        return None
    a, b = ((1, 1) + tuple(shape))[-2:]
    if (a, b) == (1, n):
        return "cols"
    if (a, b) == (m, 1):
        return "rows"
    return None


def _sole_epilogue_user(g: Graph, k: Kernel):
    """`next_user(v)`: v's one reader when it is in kernel k's epilogue and v is not a value the
    step keeps (so a chain may end after it unstored), else None."""
    epi = {i for i in k.nodes if k.stages[i] == "epilogue"}
    roots = {r.id for r in live_roots(g)}

    def next_user(v):
        users = g.users(v)
        if v.id in roots or len(users) != 1 or users[0].id not in epi:
            return None
        return users[0]
    return next_user


def _epilogue_chain(g: Graph, k: Kernel, bias_axis) -> tuple[Epilogue, int | None, list[int]]:
    """The prefix of kernel k's epilogue a generated kernel applies to its output tile:
    `act(acc + bias)`, each part optional, with a bias `bias_axis(shape)` accepts (its axis) and
    relu/sigmoid/tanh. Every value before the last one of the chain has no other reader (the
    kernel stores only the last). Gives (Epilogue, bias node id or None, chain node ids)."""
    n = g.node(k.main)
    next_user = _sole_epilogue_user(g, k)

    chain: list[int] = []
    bias, axis, act = None, None, None
    v, u = n, next_user(n)
    if u is not None and u.op == "add" and u.type == v.type:
        other = u.inputs[1] if u.inputs[0] is v else u.inputs[0]
        if other is not v and other.id not in k.nodes and other.type.dtype == "f32":
            axis = bias_axis(other.type.shape)
            if axis is not None:
                bias = other.id
                chain.append(u.id)
                v, u = u, next_user(u)
    if u is not None and u.op in ("relu", "sigmoid", "tanh") and u.type == v.type:
        act = u.op
        chain.append(u.id)
    return Epilogue(axis, act), bias, chain


def gemm_epilogue(g: Graph, k: Kernel) -> tuple[Epilogue, int | None, list[int]]:
    """`_epilogue_chain` of a 2-D matmul (a bias per row or column of C, an activation), or else
    `_where_above` (a ReLU gradient mask), or else `_update_chain`. Gives (Epilogue, the bias,
    residual or mask operand node id or None, chain node ids)."""
    m, n = g.node(k.main).type.shape
    epi, bias, chain = _epilogue_chain(g, k, lambda shape: _bias_axis(shape, m, n))
    if chain:
        return epi, bias, chain
    above, z, chain = _where_above(g, k)
    if chain:
        return Epilogue(mask_above=above), z, chain
    return _update_chain(g, k)


def _where_above(g: Graph, k: Kernel) -> tuple[float | None, int | None, list[int]]:
    """`where(z > t, y, 0)` applied to kernel k's main value y as its epilogue: z from outside
    the kernel shaped like y, t a finite scalar constant, the comparison read by nothing else
    (a ReLU gradient: the pre-activation, or the ReLU's output, above 0). Gives (t, z's id,
    chain node ids), or (None, None, []) when the epilogue is not of this form."""
    n = g.node(k.main)
    none: tuple[float | None, int | None, list[int]] = (None, None, [])
    if n.type.dtype != "f32":
        return none
    w = _sole_epilogue_user(g, k)(n)
    if w is None or w.op != "where" or w.type != n.type or w.inputs[1] is not n:
        return none
    cond, zero = w.inputs[0], w.inputs[2]
    if (cond.op != "gt" or k.stages.get(cond.id) != "epilogue" or len(g.users(cond)) != 1
            or cond.id in {r.id for r in live_roots(g)}):
        return none
    z, t = cond.inputs
    if z.id in k.nodes or z.type != n.type:
        return none
    for c in (t, zero):
        if c.op != "const" or c.type.size != 1 or c.type.dtype != "f32":
            return none
    t_value = np.asarray(t.attrs["value"], np.float32).reshape(())
    z_value = np.asarray(zero.attrs["value"], np.float32).reshape(())
    if not np.isfinite(t_value) or z_value != 0 or np.signbit(z_value):
        return none
    return float(t_value), z.id, [cond.id, w.id]


def _update_chain(g: Graph, k: Kernel) -> tuple[Epilogue, int | None, list[int]]:
    """`P + c * (A·B)` or `P - c * (A·B)` (the scale optional; c a finite scalar constant, P a
    tensor shaped like C): plain SGD's `W - lr * dW`, a residual add. The residual is added in
    the GEMM's first K block (Epilogue.residual_first), before C is written, so the plan may put
    the result in P's own buffer (the update written over the weight). Gives (Epilogue,
    residual node id, chain node ids); an empty chain when the epilogue is not of this form."""
    n = g.node(k.main)
    next_user = _sole_epilogue_user(g, k)

    none = (Epilogue(), None, [])
    chain: list[int] = []
    scale = 1.0
    v, u = n, next_user(n)
    if u is not None and u.op == "mul" and u.type == v.type:
        c = u.inputs[1] if u.inputs[0] is v else u.inputs[0]
        value = c.attrs["value"] if c.op == "const" and c.type.size == 1 else None
        if value is None or c is v or not np.isfinite(value).all():
            return none
        scale = float(np.asarray(value, np.float32).reshape(()))
        chain.append(u.id)
        v, u = u, next_user(u)
    if u is None or u.op not in ("add", "sub") or u.type != v.type:
        return none
    p = u.inputs[1] if u.inputs[0] is v else u.inputs[0]
    if p is v or p.id in k.nodes or p.type != v.type or (u.op == "sub" and u.inputs[1] is not v):
        return none
    chain.append(u.id)
    scale = -scale if u.op == "sub" else scale
    return Epilogue(residual=True, residual_first=True,
                    scale=None if scale == 1.0 else scale), p.id, chain


def conv_epilogue(g: Graph, k: Kernel) -> tuple[Epilogue, int | None, list[int]]:
    """`_epilogue_chain` of conv2d: a bias per output channel, shaped to broadcast over NCHW."""
    co = g.node(k.main).type.shape[1]

    def axis(shape):
        return "rows" if len(shape) <= 4 and (1,) * (4 - len(shape)) + shape == (1, co, 1, 1) \
            else None
    return _epilogue_chain(g, k, axis)


def fit_conv(g: Graph, k: Kernel) -> set[int]:
    """What the generated forward convolution emits with kernel k: the `conv_epilogue` chain."""
    n = g.node(k.main)
    if n.op != "conv2d" or n.type.dtype != "f32":
        return {n.id}
    return {n.id, *conv_epilogue(g, k)[2]}


def _gemm_ready(n) -> bool:
    return n.type.dtype == "f32" and all(x.type.rank == 2 for x in n.inputs)


def fit_matmul(g: Graph, k: Kernel) -> set[int]:
    """What the generated GEMM emits with kernel k's matmul: operand transposes read as op(A)ᵀ,
    op(B)ᵀ (2-D float32 only) and the `gemm_epilogue` chain."""
    n = g.node(k.main)
    keep = {n.id}
    if not _gemm_ready(n):
        return keep
    keep |= {x.id for x in n.inputs if x.id in k.recomputed and x.op == "transpose"}
    return keep | set(gemm_epilogue(g, k)[2])


SPLIT_GEMM_FLOPS = 16 * (1 << 15)  # below, a product runs on one thread


def emit_matmul(cx: Ctx, k: Kernel) -> list[Call]:
    n = cx.node(k.main)
    a, bb = n.inputs
    a_sh, b_sh = _mm_shapes(a, bb)
    m, kk, nn = a_sh[-2], a_sh[-1], b_sh[-1]
    batch = tuple(n.type.shape[:len(n.type.shape) - (a.type.rank >= 2) - (bb.type.rank >= 2)])
    nb = size_of(batch)
    ids = [n.id] + list(dict.fromkeys([a.id, bb.id]))
    flops = 2 * m * nn * kk * nb
    if n.type.dtype != "f32":
        return _naive_matmul(cx, n, a, bb, ids, batch, m, kk, nn)
    folded = set(k.recomputed) if _gemm_ready(n) else set()
    ta, tb = a.id in folded, bb.id in folded
    a_src, b_src = (a.inputs[0] if ta else a), (bb.inputs[0] if tb else bb)
    epi, other, chain = (gemm_epilogue(cx.plan.graph, k) if _gemm_ready(n)
                         else (Epilogue(), None, []))
    out = chain[-1] if chain else n.id
    # the residual of an update chain may be C's own buffer (written over in place): then it
    # is passed as C, one noalias argument per buffer; a mask's operand never is (plan_memory)
    resid = other if epi.reads_resid else None
    bias = None if epi.reads_resid else other
    if epi.mask_above is not None and cx.plan.buffer_of(other) is cx.plan.buffer_of(out):
        raise cx.fail("a masked product placed in its mask's buffer", n)
    ids = [out] + list(dict.fromkeys(
        [a_src.id, b_src.id] + [x for x in (bias, resid) if x is not None
                                and cx.plan.buffer_of(x) is not cx.plan.buffer_of(out)]))
    # one product big enough to share: its threads claim work items (see emit_gemm); a small
    # one runs on thread 0 alone and a batch of products each on one thread: the static kernel
    # (nothing to balance; less code to compile)
    split = flops >= SPLIT_GEMM_FLOPS
    gk = emit_gemm(cx.module, GemmSpec(m, nn, kk, ta, tb, epilogue=epi), cx.target,
                   claimed=nb == 1 and split)
    cx.need_scratch(gk.scratch_per_thread)
    claim = ["counter", "barrier"] if gk.claims else []
    fn, b, tid, nt, ptrs = new_kernel_fn(
        cx.module, cx.name("matmul"),
        [cx.ptr_type(i) for i in ids] + [ir.IntType(8)] * len(claim) + [F32])
    c_p, a_p, b_p = ptrs[0], ptrs[ids.index(a_src.id)], ptrs[ids.index(b_src.id)]
    scr = ptrs[-1]
    a, bb = a_src, b_src
    null = ir.Constant(F32P, None)
    bias_p = ptrs[ids.index(bias)] if bias is not None else null
    resid_p = null if resid is None else ptrs[ids.index(resid)] if resid in ids else c_p
    if nb == 1:
        b.call(gk.fn, [tid, nt, a_p, b_p, c_p, bias_p, resid_p, null, *ptrs[len(ids):]])
        mode = "split" if split else "single"
    else:
        a_st = broadcast_strides(a_sh[:-2], batch) if a_sh[:-2] else (0,) * len(batch)
        b_st = broadcast_strides(b_sh[:-2], batch) if b_sh[:-2] else (0,) * len(batch)
        acc = [Access(c_p, tuple(s * m * nn for s in _cs(batch))),
               Access(a_p, tuple(s * m * kk for s in a_st)),
               Access(b_p, tuple(s * kk * nn for s in b_st))]
        mine = b.gep(scr, [b.mul(b.sext(tid, I64), i64(gk.scratch_per_thread // 4))])
        zero, one = ir.Constant(I32, 0), ir.Constant(I32, 1)

        def body(b: ir.IRBuilder, offs: list[ir.Value], _i: list[ir.Value]) -> None:
            b.call(gk.fn, [zero, one, acc[1].at(b, offs[1]), acc[2].at(b, offs[2]),
                           acc[0].at(b, offs[0]), null, null, null, mine])

        strided_loop(b, batch, acc, body, tid, nt)
        mode = "split" if split and nb > 1 else "single"
    b.ret_void()
    reads = {a.id, bb.id} | {x for x in (bias, resid) if x is not None}
    return [Call(fn, ids + claim + ["scratch"], reads, {out}, mode,
                 scratch_stride=gk.scratch_per_thread)]


def _cs(shape):
    from .strided import contiguous_strides
    return contiguous_strides(shape)


def _naive_matmul(cx, n, a, bb, ids, batch, m, kk, nn) -> list[Call]:
    a_sh, b_sh = _mm_shapes(a, bb)
    fn, b, tid, nt, ptrs = new_kernel_fn(cx.module, cx.name("matmul"),
                                         [cx.ptr_type(i) for i in ids])
    c_p, a_p, b_p = ptrs[0], ptrs[ids.index(a.id)], ptrs[ids.index(bb.id)]
    dt = n.type.dtype
    a_st = broadcast_strides(a_sh[:-2], batch) if a_sh[:-2] else (0,) * len(batch)
    b_st = broadcast_strides(b_sh[:-2], batch) if b_sh[:-2] else (0,) * len(batch)
    space = batch + (m, nn)
    acc = [Access(c_p, _cs(space)),
           Access(a_p, tuple(s * m * kk for s in a_st) + (kk, 0)),
           Access(b_p, tuple(s * kk * nn for s in b_st) + (0, 1))]
    sum_p = b.alloca(reg_type(dt))

    def body(b: ir.IRBuilder, offs: list[ir.Value], _i: list[ir.Value]) -> None:
        zero = ir.Constant(reg_type(dt), 0 if dt == "i32" else 0.0)
        b.store(zero, sum_p)
        with for_range(b, 0, kk, name="k") as j:
            x = b.load(b.gep(a_p, [b.add(offs[1], j)]))
            y = b.load(b.gep(b_p, [b.add(offs[2], b.mul(j, i64(nn)))]))
            s = b.load(sum_p)
            b.store(b.add(s, b.mul(x, y)) if dt == "i32" else b.fadd(s, b.fmul(x, y)), sum_p)
        b.store(b.load(sum_p), acc[0].at(b, offs[0]))

    strided_loop(b, space, acc, body, tid, nt)
    b.ret_void()
    return [Call(fn, ids, {a.id, bb.id}, {n.id}, mode_for(size_of(space) * kk))]


def _spec(x_shape, w_shape, attrs) -> ConvSpec:
    return ConvSpec.from_shapes(tuple(x_shape), tuple(w_shape), attrs["stride"], attrs["pad"])


def emit_conv(cx: Ctx, k: Kernel) -> list[Call]:
    n = cx.node(k.main)
    if n.type.dtype != "f32":
        raise cx.fail("convolution is generated for float32 only", n)
    out = n.id
    if n.op == "conv2d":
        x, w = n.inputs
        epi, bias, chain = conv_epilogue(cx.plan.graph, k)
        out = chain[-1] if chain else n.id
        ck = emit_conv_forward(cx.module, _spec(x.type.shape, w.type.shape, n.attrs), cx.target,
                               bias=bias is not None, activation=epi.activation)
        args = [x.id, w.id, out, "null" if bias is None else bias, "counter", "scratch"]
        reads = {x.id, w.id} | ({bias} if bias is not None else set())
    elif n.op == "conv2d_grad_input":
        ct, w = n.inputs
        spec = _spec(n.type.shape, w.type.shape, n.attrs)
        ck = emit_conv_grad_input(cx.module, spec, cx.target)
        args, reads = [ct.id, w.id, n.id, "counter", "scratch"], {ct.id, w.id}
    else:
        x, ct = n.inputs
        ck = emit_conv_grad_weight(cx.module, _spec(x.type.shape, n.type.shape, n.attrs),
                                   cx.target)
        args, reads = [x.id, ct.id, n.id, "barrier", "counter", "scratch"], {x.id, ct.id}
    shared = n.op == "conv2d_grad_weight"
    cx.need_scratch(ck.scratch_per_thread, shared=shared)
    return [Call(ck.fn, args, reads, {out}, "split", shares_scratch=shared,
                 scratch_stride=ck.scratch_per_thread)]


def pool_epilogue(g: Graph, k: Kernel) -> tuple[float | None, list[int]]:
    """The epilogue a max pooling gradient applies as it writes dx: `where(x > t, dx, 0)`, x
    the pool's own input, t a finite scalar constant (the ReLU gradient when a ReLU output was
    pooled, t = 0). Gives (t or None, chain node ids); the comparison has no other reader."""
    n = g.node(k.main)
    if n.op != "max_pool2d_grad":
        return None, []
    above, z, chain = _where_above(g, k)
    if z != n.inputs[0].id:
        return None, []
    return above, chain


def fit_pool(g: Graph, k: Kernel) -> set[int]:
    """What the generated pooling kernels emit with kernel k: the `pool_epilogue` chain."""
    return {k.main, *pool_epilogue(g, k)[1]}


def _pool_spec(cx: Ctx, n, x_shape) -> PoolSpec:
    if tuple(n.attrs.get("pad", (0, 0))) != (0, 0):
        raise cx.fail("padded pooling is not generated", n)
    return PoolSpec(*x_shape, *n.attrs["k"], tuple(n.attrs["stride"]))


def emit_pool(cx: Ctx, k: Kernel) -> list[Call]:
    n = cx.node(k.main)
    kind = "max" if n.op.startswith("max") else "avg"
    if n.type.dtype != "f32":
        raise cx.fail("pooling is generated for float32 only", n)
    out = n.id
    if n.op in ("max_pool2d", "avg_pool2d"):
        x = n.inputs[0]
        fn = emit_pool_forward(cx.module, _pool_spec(cx, n, x.type.shape), kind,
                               cx.target.lanes)
        args, reads = [x.id, out, "null"], {x.id}
    elif n.op == "max_pool2d_grad":
        x, ct = n.inputs
        above, chain = pool_epilogue(cx.plan.graph, k)
        out = chain[-1] if chain else n.id
        fn = emit_pool_backward(cx.module, _pool_spec(cx, n, x.type.shape), kind,
                                cx.target.lanes, above)
        args, reads = [x.id, ct.id, out, "null"], {x.id, ct.id}
    else:  # avg_pool2d_grad: x only gives the shape
        ct = n.inputs[0]
        fn = emit_pool_backward(cx.module, _pool_spec(cx, n, n.type.shape), kind)
        args, reads = ["null", ct.id, out, "null"], {ct.id}
    return [Call(fn, args, reads, {out}, mode_for(size_of(n.type.shape) * 4))]


def emit_pool_select(cx: Ctx, k: Kernel) -> list[Call]:
    """y[window] = u at the first maximal element of x in the window (row-major)."""
    n = cx.node(k.main)
    x, u = n.inputs
    spec = _pool_spec(cx, n, x.type.shape)
    ids = [n.id, x.id, u.id]
    fn, b, tid, nt, (y, xp, up) = new_kernel_fn(cx.module, cx.name("pool_select"),
                                                [cx.ptr_type(i) for i in ids])
    plane_in = spec.h * spec.w
    taps = [i * spec.w + j for i in range(spec.kh) for j in range(spec.kw)]
    space = (spec.n * spec.c, spec.oh, spec.ow)
    acc = [Access(y, (spec.oh * spec.ow, spec.ow, 1)),
           Access(xp, (plane_in, spec.stride[0] * spec.w, spec.stride[1]))]

    def body(b: ir.IRBuilder, offs: list[ir.Value], _i: list[ir.Value]) -> None:
        best = b.load(b.gep(xp, [offs[1]]))
        arg = offs[1]
        for t in taps[1:]:
            at = b.add(offs[1], i64(t))
            v = b.load(b.gep(xp, [at]))
            better = b.fcmp_ordered(">", v, best)
            best, arg = b.select(better, v, best), b.select(better, at, arg)
        b.store(b.load(b.gep(up, [arg])), acc[0].at(b, offs[0]))

    strided_loop(b, space, acc, body, tid, nt, need_index=True)
    b.ret_void()
    return [Call(fn, ids, {x.id, u.id}, {n.id}, mode_for(size_of(n.type.shape) * len(taps)))]


DENSE_EMITTERS = {
    "matmul": emit_matmul, "conv2d": emit_conv, "conv2d_grad_input": emit_conv,
    "conv2d_grad_weight": emit_conv, "max_pool2d": emit_pool, "avg_pool2d": emit_pool,
    "max_pool2d_grad": emit_pool, "avg_pool2d_grad": emit_pool,
    "max_pool2d_select": emit_pool_select,
}
