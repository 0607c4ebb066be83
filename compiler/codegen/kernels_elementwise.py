"""Codegen stage, fused elementwise kernels (with counter-based random numbers inside).

Takes: an emission context and an "elementwise" kernel of the legalized kernel graph (elementwise
and random nodes over one iteration space, reading scalar constants inline). Gives:
`emit_elementwise` -> the calls running it, `emit_rng_key` and `emit_copy`. The loop is
`strided.strided_vector_loop` over the kernel's space: an explicit vector loop of the host's SIMD
width along the innermost dimension, then a scalar tail. External operands are read through
broadcast strides (one element splat across the vector where the innermost stride is 0, so
`broadcast_to` is just its operand), every member is evaluated in registers with the primitive's
body (lower_elementwise) at the step's width, and every value in the kernel's `outputs` is
stored. Kernel arguments are `noalias` (one per distinct buffer).

Random nodes draw Philox4x32-10 at counter (flat element index, stream, step, 0) keyed by the
seed, exactly like ops/random.py (uniform: w0 >> 8 scaled; normal: Box-Muller with the exact
float32 log/cos sequences), so dropout masks cost no extra pass and replay bit for bit.

Invariants: an operand sharing a buffer with an output (in-place reuse or update) is passed once
and read at the element being written, before it is written; float work is exact IEEE (no
fast-math).
"""

from __future__ import annotations

from llvmlite import ir

from ..passes.kernel_graph import Kernel
from . import mathfn as M
from .emit_ctx import Call, Ctx, mode_for, size_of
from .loops import freeze, lane_indices, splat
from .lower_elementwise import (
    ELEMENTWISE,
    const,
    from_memory,
    lanes_of,
    load_value,
    mem_type,
    reg_type,
    store_value,
    typed_const,
)
from .strided import (
    Access,
    broadcast_strides,
    contiguous_strides,
    inner_strides,
    new_kernel_fn,
    strided_vector_loop,
)

I32, I64, F32 = ir.IntType(32), ir.IntType(64), ir.FloatType()
_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85


def _u32(v: int, lanes: int = 1) -> ir.Constant:
    return typed_const(I32, v & 0xFFFFFFFF, lanes)


def philox(b: ir.IRBuilder, ctr: list[ir.Value], key: tuple[ir.Value, ir.Value]
           ) -> list[ir.Value]:
    """Philox4x32-10 on i32 words (unsigned arithmetic), scalars or vectors of one width."""
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    n = lanes_of(c0)
    wide = typed_const(I64, 0, n).type
    for r in range(10):
        if r:
            k0, k1 = b.add(k0, _u32(_W0, n)), b.add(k1, _u32(_W1, n))
        p0 = b.mul(b.zext(c0, wide), typed_const(I64, _M0, n))
        p1 = b.mul(b.zext(c2, wide), typed_const(I64, _M1, n))
        hi0 = b.trunc(b.lshr(p0, typed_const(I64, 32, n)), c0.type)
        hi1 = b.trunc(b.lshr(p1, typed_const(I64, 32, n)), c0.type)
        lo0, lo1 = b.trunc(p0, c0.type), b.trunc(p1, c0.type)
        c0, c1, c2, c3 = b.xor(b.xor(hi1, c1), k0), lo1, b.xor(b.xor(hi0, c3), k1), lo0
    return [c0, c1, c2, c3]


def _random(b: ir.IRBuilder, op: str, index: ir.Value, stream: int,
            key: list[ir.Value], dtype: str, lanes: int) -> ir.Value:
    """The draw of element `index` (the first of `lanes` consecutive ones)."""
    ctr = b.trunc(index, I32)
    if lanes > 1:
        ctr = b.add(splat(b, ctr, lanes), lane_indices(range(lanes)))
        key = [splat(b, k, lanes) for k in key]
    w = philox(b, [ctr, _u32(stream, lanes), key[2], _u32(0, lanes)], (key[0], key[1]))
    f32 = reg_type("f32", lanes)
    scale = const("f32", 2.0 ** -24, lanes)
    if op == "random_uniform":
        v = b.fmul(b.uitofp(b.lshr(w[0], _u32(8, lanes)), f32), scale)
    else:
        u1 = b.fmul(b.uitofp(b.add(b.lshr(w[0], _u32(8, lanes)), _u32(1, lanes)), f32), scale)
        u2 = b.fmul(b.uitofp(b.lshr(w[1], _u32(8, lanes)), f32), scale)
        r = M.sqrt(b, b.fmul(const("f32", -2.0, lanes), M.log_exact(b, u1)))
        v = b.fmul(r, M.cos_2pi_exact(b, u2))
    return b.fpext(v, reg_type("f64", lanes)) if dtype == "f64" else v


def is_scalar_const(n) -> bool:
    """A one-element constant: inlined into the loop body, never loaded."""
    return n.op == "const" and n.type.size == 1


def evaluate(cx: Ctx, b: ir.IRBuilder, members: list, vals: dict[int, ir.Value],
             index: ir.Value | None = None, keys: dict | None = None, lanes: int = 1) -> None:
    """Compute `members` (elementwise nodes, in order) in registers of width `lanes` from `vals`
    (their loaded operands, by node id) into `vals`; scalar constants are inlined, `broadcast_to`
    is its operand (loaded broadcast already), random nodes draw at flat elements `index`,
    `index + 1`, ... (one per lane)."""
    for n in members:
        if n.op in ("random_uniform", "random_normal"):
            vals[n.id] = _random(b, n.op, index, n.attrs["stream"], keys[n.inputs[0].id],
                                 n.type.dtype, lanes)
            continue
        args = []
        for x in n.inputs:
            if x.id in vals:
                args.append(vals[x.id])
            elif is_scalar_const(x):
                args.append(const(x.type.dtype, x.attrs["value"].reshape(()), lanes))
            else:
                raise cx.fail("operand not available in a fused kernel", n)
        if n.op == "broadcast_to":
            vals[n.id] = args[0]
            continue
        vals[n.id] = ELEMENTWISE[n.op](b, args, n.attrs, [x.type.dtype for x in n.inputs],
                                       n.type.dtype)


def load_operand(b: ir.IRBuilder, ptr: ir.Value, dtype: str, w: int, broadcast: bool,
                 given: ir.Value | None) -> ir.Value:
    """An operand of a `strided_vector_loop` step of width `w` at the element pointer `ptr`:
    the vector the loop `given` (converted from memory), else one element splat when the
    operand is broadcast along the row, else `w` consecutive elements."""
    if given is not None:
        return from_memory(b, given, dtype)
    if w > 1 and broadcast:
        return splat(b, load_value(b, ptr, dtype), w)
    return load_value(b, ptr, dtype, w)


def emit_elementwise(cx: Ctx, k: Kernel) -> list[Call]:
    space = k.space
    members = [cx.node(i) for i in k.nodes]
    # distinct buffers become distinct noalias arguments (an output written in place over an
    # input shares its argument); the stored outputs come first
    data = [i for i in k.inputs if not is_scalar_const(cx.node(i))]
    arg_nodes, ext_slot = cx.buffer_args([*k.outputs, *data])
    fn, b, tid, nt, ptrs = new_kernel_fn(cx.module, cx.name(cx.node(k.outputs[-1]).op),
                                         [cx.ptr_type(i) for i in arg_nodes])
    keys: dict[int, list[ir.Value]] = {}
    for i in data:
        if cx.node(i).op == "rng_key":
            p = ptrs[ext_slot[i]]
            keys[i] = [b.load(b.gep(p, [ir.Constant(I64, w)]), align=4) for w in range(3)]
    loads = [i for i in data if cx.node(i).op != "rng_key"]
    accesses = [Access(ptrs[ext_slot[i]], contiguous_strides(space)) for i in k.outputs]
    accesses += [Access(ptrs[ext_slot[i]], broadcast_strides(cx.node(i).type.shape, space))
                 for i in loads]
    n_out = len(k.outputs)
    # which loads are one element per vector step (broadcast along the innermost dimension)
    splat_load = [s == 0 for s in inner_strides(space, accesses)[n_out:]]
    # Outputs stored over the element of an input they read: x86 LLVM turns
    # `store(select(c, load p, 0), p)` (relu and its gradient, in place) into a masked store of
    # the zeros, microcoded and many times slower on AMD cores. A frozen stored value hides the
    # pattern from instruction selection.
    in_place = {ext_slot[i] for i in k.outputs} & {ext_slot[i] for i in loads}

    def body(b: ir.IRBuilder, offs: list[ir.Value], w: int, given: dict[int, ir.Value]
             ) -> None:
        vals: dict[int, ir.Value] = {}
        # every load of an element comes before any store of it (in-place outputs)
        for j, i in enumerate(loads):
            vals[i] = load_operand(b, accesses[n_out + j].at(b, offs[n_out + j]),
                                   cx.node(i).type.dtype, w, splat_load[j], given.get(n_out + j))
        evaluate(cx, b, members, vals, offs[0], keys, w)
        for j, i in enumerate(k.outputs):
            v = freeze(b, vals[i]) if ext_slot[i] in in_place else vals[i]
            store_value(b, v, accesses[j].at(b, offs[j]), cx.node(i).type.dtype)

    strided_vector_loop(b, space, accesses, body, tid, nt, cx.target.lanes, outputs=n_out)
    b.ret_void()
    return [Call(fn, list(arg_nodes), set(data), set(k.outputs), mode_for(size_of(space)))]


def emit_rng_key(cx: Ctx, key: int, header: int) -> list[Call]:
    """The key i32[3] = (seed_lo, seed_hi, step) from the arena header (see step.py)."""
    fn, b, tid, nt, (out, head) = new_kernel_fn(cx.module, cx.name("rng_key"), [I32, I32])
    for w in range(3):
        v = b.load(b.gep(head, [ir.Constant(I64, header // 4 + w)]), align=4)
        b.store(v, b.gep(out, [ir.Constant(I64, w)]), align=4)
    b.ret_void()
    return [Call(fn, [key, "arena"], set(), {key}, "single")]


def emit_copy(cx: Ctx, src: int, dst: int, stem: str = "copy") -> list[Call]:
    """dst[:] = src[:] for two same-typed contiguous tensors."""
    n = cx.node(src)
    dt = n.type.dtype
    t = mem_type(dt)
    fn, b, tid, nt, (d, s) = new_kernel_fn(cx.module, cx.name(stem), [t, t])
    shape = n.type.shape
    acc = [Access(d, contiguous_strides(shape)), Access(s, contiguous_strides(shape))]

    def body(b: ir.IRBuilder, offs: list[ir.Value], w: int, given: dict[int, ir.Value]
             ) -> None:
        v = load_operand(b, acc[1].at(b, offs[1]), dt, w, False, given.get(1))
        store_value(b, v, acc[0].at(b, offs[0]), dt)

    strided_vector_loop(b, shape, acc, body, tid, nt, cx.target.lanes)
    b.ret_void()
    return [Call(fn, [dst, src], {src}, {dst}, mode_for(size_of(shape)))]
