"""Codegen stage, GEMM operand sources and packing: logical A (M x K) / B (K x N) -> packed slivers.

Takes: an operand description (`Dense` for a strided matrix, optionally scaled by a mask of the same
layout; other emitters such as conv add their own `Source` for implicit im2col) and a block of it.
Gives: `pack_block(...)`, which copies a `span x kc` block into consecutive slivers of `width`
(MR for A, NR for B) laid out `[sliver][k][width]`, zero-padding the last sliver so the micro-kernel
never sees an edge.

Invariants: a sliver's real width is either `width` or the static `total % width` (thread ranges and
cache blocks are multiples of the sliver width, and only the global end is ragged), so each packing
loop has a static trip count over the sliver and no per-element edge test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llvmlite import ir

from .loops import (
    F32P,
    I64,
    const_vec,
    f32,
    for_range,
    gep,
    i64,
    lane_indices,
    load_vec,
    store_vec,
    transpose_square,
)

# A source gives, for a sliver starting at outer index o0 with `count` static lanes, a function
# that at inner index k returns the `count` element values (the per-sliver and per-k setup is the
# source's business, so index decoding is hoisted out of the innermost work).
SliverLoader = Callable[[ir.IRBuilder, ir.Value], list[ir.Value]]


class Source:
    """Elements `(outer o, inner k)` of an operand: o is the row of A / the column of B."""

    def sliver(self, b: ir.IRBuilder, o0: ir.Value, count: int) -> SliverLoader:
        raise NotImplementedError


@dataclass
class Dense(Source):
    """A strided matrix: element (o, k) is `ptr[o*ld + k]` if `outer_major` else `ptr[k*ld + o]`.

    `mask`, when given, has the same layout and multiplies each element (the fused prologue).
    """

    ptr: ir.Value
    ld: int
    outer_major: bool
    mask: ir.Value | None = None

    def sliver(self, b: ir.IRBuilder, o0: ir.Value, count: int) -> SliverLoader:
        def at(bb: ir.IRBuilder, k: ir.Value) -> list[ir.Value]:
            vals = []
            for s in range(count):
                o = bb.add(o0, i64(s))
                if self.outer_major:
                    idx = bb.add(bb.mul(o, i64(self.ld)), k)
                else:
                    idx = bb.add(bb.mul(k, i64(self.ld)), o)
                v = bb.load(gep(bb, self.ptr, idx), align=4)
                if self.mask is not None:
                    v = bb.fmul(v, bb.load(gep(bb, self.mask, idx), align=4))
                vals.append(v)
            return vals

        return at


def pack_block(b: ir.IRBuilder, src: Source, dst: ir.Value, o_start: ir.Value,
               o_stop: ir.Value, total: int, width: int, k0: ir.Value, kc: ir.Value) -> None:
    """Pack outer indices [o_start, o_stop) x inner [k0, k0+kc) into `dst` slivers of `width`.

    Sliver s goes to `dst + s*kc*width`, element (k, lane) at `k*width + lane`; lanes past
    `total` (the operand's outer size) are zero.
    """
    edge = total % width
    with for_range(b, o_start, o_stop, width, name="pk", unroll=False) as o0:
        s = b.sdiv(b.sub(o0, o_start), i64(width))
        sdst = gep(b, dst, b.mul(b.mul(s, kc), i64(width)))
        full = b.icmp_signed("<=", b.add(o0, i64(width)), i64(total))
        if edge == 0:
            _pack_sliver(b, src, sdst, o0, width, width, k0, kc)
        else:
            with b.if_else(full) as (then, other):
                with then:
                    _pack_sliver(b, src, sdst, o0, width, width, k0, kc)
                with other:
                    _pack_sliver(b, src, sdst, o0, edge, width, k0, kc)


def _pack_sliver(b: ir.IRBuilder, src: Source, sdst: ir.Value, o0: ir.Value, count: int,
                 width: int, k0: ir.Value, kc: ir.Value) -> None:
    if isinstance(src, Dense) and not src.outer_major:
        _pack_rows(b, src, sdst, o0, count, width, k0, kc)
        return
    k_lo = i64(0)
    if isinstance(src, Dense):  # whole blocks of T k by transposes, the rest lane by lane
        k_lo = b.mul(b.sdiv(kc, i64(T)), i64(T))
        _pack_transposed(b, src, sdst, o0, count, width, k0, k_lo)
    loader = src.sliver(b, o0, count)
    zero = f32(0.0)
    with for_range(b, k_lo, kc, name="pkk", unroll=False) as k:
        vals = loader(b, b.add(k0, k))
        row = b.mul(k, i64(width))
        for lane in range(width):
            v = vals[lane] if lane < count else zero
            b.store(v, gep(b, sdst, b.add(row, i64(lane))), align=4)


def _pack_rows(b: ir.IRBuilder, src: Dense, sdst: ir.Value, o0: ir.Value, count: int,
               width: int, k0: ir.Value, kc: ir.Value) -> None:
    """A sliver whose lanes are consecutive in memory (a row-major B, a transposed A): one vector
    load (times the mask's) per k, stored with its zero padding; no lane-by-lane code for LLVM
    to re-vectorize."""
    with for_range(b, i64(0), kc, name="pkv", unroll=False, vectorize=False) as k:
        at = b.add(b.mul(b.add(k0, k), i64(src.ld)), o0)
        v = load_vec(b, src.ptr, at, count)
        if src.mask is not None:
            v = b.fmul(v, load_vec(b, src.mask, at, count))
        row = b.mul(k, i64(width))
        store_vec(b, v, sdst, row)
        if count < width:
            store_vec(b, const_vec(width - count, 0.0), sdst, b.add(row, i64(count)))


T = 8  # k per transposed block


def _pack_transposed(b: ir.IRBuilder, src: Dense, sdst: ir.Value, o0: ir.Value, count: int,
                     width: int, k0: ir.Value, kc: ir.Value) -> None:
    """k in [0, kc) (a multiple of T) of a sliver whose lanes are rows of the operand (a row-major
    A, a transposed B), by a call of the shared `_transposed_packer` for (width, count, mask)."""
    fn = _transposed_packer(b.module, width, count, src.mask is not None)
    mask = src.mask if src.mask is not None else ir.Constant(F32P, None)
    b.call(fn, [src.ptr, mask, i64(src.ld), o0, k0, kc, sdst])


def _transposed_packer(module: ir.Module, width: int, count: int, masked: bool) -> ir.Function:
    """`void f(src, mask, ld, o0, k0, kc, dst)`: per block of T k, one T-float vector load per
    lane's row (times the mask's), T x T transposes by interleaving shuffles, and one store per
    k row of the sliver (zeros past `count`). Lane by lane, this was a scalar load and store per
    element, most of a small GEMM's packing time. One function per (width, count, mask) serves
    every GEMM of a module (inlined, it added about a quarter to the MLP's compile time)."""
    name = f"netc_pack_t_w{width}_c{count}_m{int(masked)}"
    if name in module.globals:
        return module.globals[name]
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [F32P, F32P, I64, I64, I64, I64,
                                                             F32P]), name=name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    fn.attributes.add("nounwind")
    ptr, mask, ld, o0, k0, kc, sdst = fn.args
    for a in (ptr, mask, sdst):
        a.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    zero = const_vec(T, 0.0)
    with for_range(b, i64(0), kc, T, name="pkt", unroll=False,
                   vectorize=False) as k:
        cols = []  # per group of T lanes: T vectors, vector j = k + j across those lanes
        for g0 in range(0, width, T):
            rows = []
            for lane in range(g0, g0 + T):
                if lane >= count:
                    rows.append(zero)
                    continue
                at = b.add(b.mul(b.add(o0, i64(lane)), ld), b.add(k0, k))
                v = load_vec(b, ptr, at, T)
                if masked:
                    v = b.fmul(v, load_vec(b, mask, at, T))
                rows.append(v)
            cols.append(transpose_square(b, rows))
        for j in range(T):
            row = b.mul(b.add(k, i64(j)), i64(width))
            for g, g0 in enumerate(range(0, width, T)):
                v = cols[g][j]
                n = min(T, width - g0)
                if n < T:
                    v = b.shuffle_vector(v, v, lane_indices(range(n)))
                store_vec(b, v, sdst, b.add(row, i64(g0)))
    b.ret_void()
    return fn
