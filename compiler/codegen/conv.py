"""Codegen stage, 2-D convolution kernels on the GEMM micro-kernels: forward, dX, dW.

Takes: a `ConvSpec` (NCHW input, OIHW weights, stride, zero padding), a `Target`, a strategy
("implicit": im2col done by the B packing routine, reading the image directly; "im2col": an explicit
K x P column buffer per image, then a dense GEMM) and, for the forward, an optional bias (one per
output channel) and activation fused in the GEMM epilogue.
Gives: `emit_conv_forward`, `emit_conv_grad_input`, `emit_conv_grad_weight`, each adding to a module
`void f(i32 tid, i32 nt, ...pointers, scratch)` and returning a `ConvKernel` (function, scratch
bytes per thread).

Per image the products are: forward Y[n] = W (Cout x K) · col(X[n]) (K x P) (+bias, act);
grad input dcol = Wᵀ · dY[n], then col2im into dX[n]; grad weight dW += dY[n] · col(X[n])ᵀ.
The default strategy is "im2col" (measured 1.3-2.8x faster than "implicit" on the forward at
LeNet and small-ResNet shapes, see benchmarks/conv.py): the column buffer is written with whole
vector copies and, on the forward, read in place by the micro-kernel (no B packing pass); the
weights, when they are one cache block, are packed once per thread for all images.

Threads and determinism: threads claim whole images one at a time (claim.py: each first takes
the images of its own static share in order, then the last ones of a slower thread's share), so
a thread on a slowed core does fewer of them instead of holding the others at the next barrier.
Forward and grad input compute each image the same way on any thread and write disjoint images.
The weight gradient sums over images, so the images are cut into a fixed number of chunks (a
function of the thread count, never of timing), threads claim whole chunks, each summed in image
order into the chunk's own partial; after the native barrier each thread sums a slice of the
elements over the partials in chunk order: the result is bitwise reproducible for a given thread
count, whichever thread took which chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from .barrier import call_barrier
from .claim import for_claimed
from .gemm import (
    Blocking,
    a_fits_one_block,
    choose_blocking,
    emit_gemm_tiles,
    pack_whole,
    thread_range,
)
from .im2col import ColsSource, ConvSpec, RowsSource, emit_col2im, emit_im2col
from .loops import F32P, I32, I64, combine_in_order, f32, for_range, gep, i64, imin, round_up
from .microkernel import Epilogue
from .packing import Dense
from .target import Target

STRATEGIES = ("implicit", "im2col")
DEFAULT_STRATEGY = "im2col"
# Weight-gradient chunks per thread: enough that a fast thread can take over a slow one's share
# (the last chunk is the unit of imbalance: with 4 chunks of 8 images per thread, LeNet's weight
# gradients on 2 threads ran 1.6x faster than on one, the other convolutions 1.75-1.8x), within
# a budget for the partials (each chunk has one of the weight's size; the reduction reads
# them all).
DW_CHUNKS_PER_THREAD = 16
DW_PARTIALS_BYTES = 1 << 20  # per thread


@dataclass(frozen=True)
class ConvKernel:
    fn: ir.Function
    scratch_per_thread: int  # bytes, multiple of 64
    blocking: Blocking


def col_stride(p: int, nr: int) -> int:
    """Row stride of an explicit column buffer read in place by the micro-kernel: a multiple of
    NR (aligned slivers) that is not a multiple of 1 KiB, so the K rows of a sliver do not all
    fall in one L1 set."""
    ld = -(-p // nr) * nr
    return ld + nr if (ld * 4) % 1024 == 0 else ld


def _null() -> ir.Constant:
    return ir.Constant(F32P, None)


def _begin(module: ir.Module, name: str, n_ptrs: int) -> tuple[ir.Function, ir.IRBuilder]:
    fnty = ir.FunctionType(ir.VoidType(), [I32, I32] + [F32P] * n_ptrs)
    fn = ir.Function(module, fnty, name=name)
    fn.attributes.add("nounwind")
    return fn, ir.IRBuilder(fn.append_basic_block("entry"))


def _check(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown conv strategy {strategy!r}; expected {STRATEGIES}")


def _layout(blk: Blocking, *extra: int) -> tuple[int, list[int]]:
    """Per-thread scratch: the GEMM packing buffers, then each extra buffer (floats), 64B-aligned.
    Returns (bytes per thread, offsets in floats of the extras)."""
    off = round_up(blk.scratch_floats, 16)
    offsets = []
    for size in extra:
        offsets.append(off)
        off += round_up(size, 16)
    return off * 4, offsets


def emit_conv_forward(module: ir.Module, spec: ConvSpec, target: Target,
                      strategy: str = DEFAULT_STRATEGY, bias: bool = False,
                      activation: str | None = None) -> ConvKernel:
    """`f(tid, nt, x, w, y, bias, counter, scratch)`: y = act(conv(x, w) + bias[co])."""
    _check(strategy)
    name = (f"netc_conv_fwd_{target.name}_{spec.tag()}_{strategy}_b{int(bias)}_"
            f"{activation or 'n'}")
    blk = choose_blocking(target, spec.co, spec.p, spec.kdim)
    ldcol = col_stride(spec.p, blk.nr)
    col_floats = spec.kdim * ldcol + blk.nr if strategy == "im2col" else 0
    scratch, (col_off,) = _layout(blk, col_floats)
    if name in module.globals:
        return ConvKernel(module.globals[name], scratch, blk)
    fn, b = _begin(module, name, 6)
    tid, nt, x, w, y, bias_p, counter, scr = fn.args
    mine = gep(b, scr, b.mul(b.sext(tid, I64), i64(scratch // 4)))
    epi = Epilogue("rows" if bias else None, activation, False)
    a_src = Dense(w, spec.kdim, outer_major=True)
    once = a_fits_one_block(blk, spec.co, spec.kdim)
    if once:  # the weights are the same for every image: pack them once
        pack_whole(b, blk, a_src, spec.co, spec.kdim, blk.mr, mine)
    with for_claimed(b, counter, spec.n, tid, nt) as img:
        xn = gep(b, x, b.mul(img, i64(spec.image)))
        yn = gep(b, y, b.mul(img, i64(spec.co * spec.p)))
        if strategy == "im2col":
            col = gep(b, mine, i64(col_off))
            emit_im2col(b, spec, xn, col, ldcol, lanes=target.lanes)
            b_src = Dense(col, ldcol, outer_major=False)
        else:
            b_src = ColsSource(xn, spec)
        emit_gemm_tiles(b, target, blk, spec.co, spec.p, spec.kdim, a_src, b_src, yn, spec.p,
                        epi, bias_p if bias else _null(), _null(), False,
                        (i64(0), i64(spec.co)), (i64(0), i64(spec.p)), mine,
                        b_direct=strategy == "im2col", a_whole=mine if once else None)
    b.ret_void()
    return ConvKernel(fn, scratch, blk)


def emit_conv_grad_input(module: ir.Module, spec: ConvSpec, target: Target) -> ConvKernel:
    """`f(tid, nt, dy, w, dx, counter, scratch)`: dx = col2im(Wᵀ · dy[n]) per image."""
    name = f"netc_conv_dx_{target.name}_{spec.tag()}"
    blk = choose_blocking(target, spec.kdim, spec.p, spec.co)
    scratch, (col_off,) = _layout(blk, spec.kdim * spec.p)
    if name in module.globals:
        return ConvKernel(module.globals[name], scratch, blk)
    fn, b = _begin(module, name, 5)
    tid, nt, dy, w, dx, counter, scr = fn.args
    mine = gep(b, scr, b.mul(b.sext(tid, I64), i64(scratch // 4)))
    col = gep(b, mine, i64(col_off))
    # A(i=k, kk=co) = w[co*K + k]: Wᵀ without a copy, packed once when it is one block.
    a_src = Dense(w, spec.kdim, outer_major=False)
    once = a_fits_one_block(blk, spec.kdim, spec.co)
    if once:
        pack_whole(b, blk, a_src, spec.kdim, spec.co, blk.mr, mine)
    with for_claimed(b, counter, spec.n, tid, nt) as img:
        dyn = gep(b, dy, b.mul(img, i64(spec.co * spec.p)))
        dxn = gep(b, dx, b.mul(img, i64(spec.image)))
        # B(kk=co, j=p) = dy[n][co*P + p]
        emit_gemm_tiles(b, target, blk, spec.kdim, spec.p, spec.co, a_src,
                        Dense(dyn, spec.p, outer_major=False), col, spec.p, Epilogue(),
                        _null(), _null(), False, (i64(0), i64(spec.kdim)),
                        (i64(0), i64(spec.p)), mine, a_whole=mine if once else None)
        with for_range(b, i64(0), i64(spec.image), name="zero") as i:
            b.store(f32(0.0), gep(b, dxn, i), align=4)
        emit_col2im(b, spec, col, dxn, lanes=target.lanes)
    b.ret_void()
    return ConvKernel(fn, scratch, blk)


def dw_chunks_per_thread(n_w: int) -> int:
    """Weight-gradient chunks per thread for a weight of `n_w` floats (1 to
    DW_CHUNKS_PER_THREAD, within DW_PARTIALS_BYTES of partials per thread)."""
    return max(1, min(DW_CHUNKS_PER_THREAD, DW_PARTIALS_BYTES // (round_up(n_w, 16) * 4)))


def emit_conv_grad_weight(module: ir.Module, spec: ConvSpec, target: Target,
                          strategy: str = DEFAULT_STRATEGY) -> ConvKernel:
    """`f(tid, nt, x, dy, dw, barrier_state, counter, scratch)`: dw = sum_n dy[n] · col(x[n])ᵀ.

    Chunks: C = nt == 1 ? 1 : min(N, k*nt) (k = dw_chunks_per_thread); chunk c is images
    [c*N/C, (c+1)*N/C) and its partial is the c % k-th of thread c // k's scratch."""
    _check(strategy)
    name = f"netc_conv_dw_{target.name}_{spec.tag()}_{strategy}"
    blk = choose_blocking(target, spec.co, spec.kdim, spec.p)
    n_w = spec.co * spec.kdim
    per_chunk = round_up(n_w, 16)
    k = dw_chunks_per_thread(n_w)
    ldcol = col_stride(spec.p, 16)
    col_floats = spec.kdim * ldcol if strategy == "im2col" else 0
    scratch, (col_off, part_off) = _layout(blk, col_floats, k * per_chunk)
    if name in module.globals:
        return ConvKernel(module.globals[name], scratch, blk)
    fn, b = _begin(module, name, 6)
    tid, nt, x, dy, dw, state, counter, scr = fn.args
    per = i64(scratch // 4)
    mine = gep(b, scr, b.mul(b.sext(tid, I64), per))
    n_t = b.sext(nt, I64)
    one = b.icmp_signed("==", n_t, i64(1))
    chunks = b.select(one, i64(1), imin(b, i64(spec.n), b.mul(n_t, i64(k))))

    def partial(c: ir.Value) -> ir.Value:
        """Chunk c's partial: thread c // k's scratch, slot c % k."""
        at = b.add(b.mul(b.sdiv(c, i64(k)), per),
                   b.add(i64(part_off), b.mul(b.srem(c, i64(k)), i64(per_chunk))))
        return gep(b, scr, at)

    with for_claimed(b, counter, chunks, tid, nt) as c:
        part = partial(c)
        lo = b.sdiv(b.mul(c, i64(spec.n)), chunks)
        hi = b.sdiv(b.mul(b.add(c, i64(1)), i64(spec.n)), chunks)
        with for_range(b, lo, hi, name="img", unroll=False) as img:
            xn = gep(b, x, b.mul(img, i64(spec.image)))
            dyn = gep(b, dy, b.mul(img, i64(spec.co * spec.p)))
            if strategy == "im2col":
                col = gep(b, mine, i64(col_off))
                emit_im2col(b, spec, xn, col, ldcol, lanes=target.lanes)
                b_src = Dense(col, ldcol, outer_major=True)  # B(kk=p, j=k) = col[k*ld + p]
            else:
                b_src = RowsSource(xn, spec)
            emit_gemm_tiles(b, target, blk, spec.co, spec.kdim, spec.p,
                            Dense(dyn, spec.p, outer_major=True), b_src, part, spec.kdim,
                            Epilogue(), _null(), _null(), b.icmp_signed("!=", img, lo),
                            (i64(0), i64(spec.co)), (i64(0), i64(spec.kdim)), mine)
    call_barrier(b, state, nt, pause=target.x86)
    # Fixed-order reduction: element e is the sum of the chunks' partials in chunk order,
    # added one chunk at a time over the thread's elements (contiguous: vector code)
    e_lo, e_hi = thread_range(b, tid, nt, n_w, 16)
    combine_in_order(b, partial, chunks, dw, e_lo, e_hi, b.fadd)
    b.ret_void()
    return ConvKernel(fn, scratch, blk)
