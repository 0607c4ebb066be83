"""Codegen stage, loop nests: a static-shape loop nest over an iteration space where every operand
is addressed by constant strides, with a deterministic split of one dimension across threads.

Takes: an IRBuilder, the iteration shape, one `Access` (element pointer, strides, base offset) per
operand, and a body callback. Gives: `strided_loop` (elementwise ops, broadcasting, transposes,
slices, pads, concats and reductions are all instances), `thread_range` and `new_kernel_fn`
(an internal kernel function `void f(i32 tid, i32 nt, T* noalias ...)`).

Invariants: dimensions of size 1 are dropped and adjacent dimensions whose strides nest are
merged (never the split dimension), so a contiguous elementwise loop is one flat loop LLVM
vectorizes; the split dimension is the outermost one marked splittable with size > 1 and thread
t of n takes its indices [size*t//n, size*(t+1)//n): ownership depends only on (t, n, shape), so
two loops over the same kept dimensions give every element to the same thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llvmlite import ir

from .loops import I32, I64, for_range, i64

Body = Callable[[ir.IRBuilder, list[ir.Value], list[ir.Value]], None]


@dataclass
class Access:
    ptr: ir.Value  # typed element pointer
    strides: tuple[int, ...]  # elements per step of each iteration dimension
    offset: int = 0

    def at(self, b: ir.IRBuilder, off: ir.Value) -> ir.Value:
        return b.gep(self.ptr, [off])


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


def broadcast_strides(shape: Sequence[int], space: Sequence[int]) -> tuple[int, ...]:
    """Strides reading a row-major tensor of `shape` broadcast (NumPy rules) to `space`."""
    own = contiguous_strides(shape)
    lead = len(space) - len(shape)
    out = [0] * lead
    for i, d in enumerate(shape):
        out.append(0 if d == 1 and space[lead + i] != 1 else own[i])
    return tuple(out)


def thread_range(b: ir.IRBuilder, tid: ir.Value, nt: ir.Value, size: int
                 ) -> tuple[ir.Value, ir.Value]:
    t, n = b.sext(tid, I64), b.sext(nt, I64)
    lo = b.sdiv(b.mul(t, i64(size)), n)
    hi = b.sdiv(b.mul(b.add(t, i64(1)), i64(size)), n)
    return lo, hi


def _plan(shape: Sequence[int], accesses: list[Access], splittable: Sequence[bool] | None,
          keep_all: bool) -> tuple[list[int], list[list[int]], int | None]:
    dims = list(range(len(shape)))
    split_ok = list(splittable) if splittable is not None else [True] * len(shape)
    split = next((d for d in dims if split_ok[d] and shape[d] > 1), None)
    if not keep_all:
        dims = [d for d in dims if shape[d] > 1 or d == split]
    sizes = [shape[d] for d in dims]
    strides = [[a.strides[d] for d in dims] for a in accesses]
    new_split = dims.index(split) if split is not None else None
    if not keep_all:
        i = len(sizes) - 2
        while i >= 0:
            if i != new_split and i + 1 != new_split and all(
                    s[i] == s[i + 1] * sizes[i + 1] for s in strides):
                sizes[i] *= sizes[i + 1]
                del sizes[i + 1]
                for s in strides:
                    s[i] = s[i + 1]
                    del s[i + 1]
                if new_split is not None and new_split > i:
                    new_split -= 1
            i -= 1
    return sizes, strides, new_split


def inner_extent(shape: Sequence[int], accesses: list[Access],
                 splittable: Sequence[bool] | None = None) -> int:
    """The trip count of the innermost loop `strided_loop` emits for these arguments."""
    sizes, _, _ = _plan(shape, accesses, splittable, False)
    return sizes[-1] if sizes else 1


def _nest(b: ir.IRBuilder, sizes: list[int], strides: list[list[int]], split: int | None,
          accesses: list[Access], tid: ir.Value, nt: ir.Value, depth: int,
          leaf: Callable[[list[ir.Value], list[ir.Value]], None], unroll_inner: bool) -> None:
    """The loops over planned dimensions [0, depth) (the split one over this thread's range),
    calling `leaf(offsets, index)` inside; with nothing to split, thread 0 runs the whole."""
    index: list[ir.Value] = []

    def level(k: int, offs: list[ir.Value]) -> None:
        if k == depth:
            leaf(offs, index)
            return
        if k == split:
            lo, hi = thread_range(b, tid, nt, sizes[k])
        else:
            lo, hi = i64(0), i64(sizes[k])
        inner = k == len(sizes) - 1
        with for_range(b, lo, hi, name=f"d{k}", unroll=inner and unroll_inner) as i:
            index.append(i)
            new = [o if s[k] == 0 else b.add(o, b.mul(i, i64(s[k]))) for o, s in zip(offs, strides)]
            level(k + 1, new)
            index.pop()

    offs = [i64(a.offset) for a in accesses]
    if split is None:  # nothing to split: thread 0 does the (tiny) whole
        with b.if_then(b.icmp_signed("==", tid, ir.Constant(I32, 0))):
            level(0, offs)
    else:
        level(0, offs)


def strided_loop(b: ir.IRBuilder, shape: Sequence[int], accesses: list[Access], body: Body,
                 tid: ir.Value, nt: ir.Value, splittable: Sequence[bool] | None = None,
                 need_index: bool = False, unroll_inner: bool = True) -> None:
    """Run `body(b, offsets, index)` for every point of `shape` this thread owns: `offsets[k]` is
    accesses[k]'s element offset; `index` (only with need_index) the i64 index per dimension.
    `unroll_inner=False` keeps LLVM from unrolling the innermost loop fully, so that the loop
    vectorizer, not the SLP vectorizer, vectorizes it (see kernels_elementwise)."""
    sizes, strides, split = _plan(shape, accesses, splittable, need_index)
    _nest(b, sizes, strides, split, accesses, tid, nt, len(sizes),
          lambda offs, index: body(b, offs, index), unroll_inner)


RowBody = Callable[[ir.IRBuilder, list[ir.Value], int], None]


def strided_rows(b: ir.IRBuilder, shape: Sequence[int], accesses: list[Access],
                 row_body: RowBody, tid: ir.Value, nt: ir.Value,
                 splittable: Sequence[bool] | None = None,
                 accept: Callable[[int, list[int]], bool] = lambda size, strides: True) -> bool:
    """Like `strided_loop`, but the innermost dimension is left to `row_body(b, offsets, size)`:
    called once per row with the offsets of the row's first element and the row's length.
    Returns False, emitting nothing, when the innermost planned dimension is the split one (a
    single dimension) or `accept(size, per-access strides)` of the row refuses it: the caller
    then uses `strided_loop`."""
    sizes, strides, split = _plan(shape, accesses, splittable, False)
    if not sizes or split == len(sizes) - 1 or not accept(sizes[-1], [s[-1] for s in strides]):
        return False
    _nest(b, sizes, strides, split, accesses, tid, nt, len(sizes) - 1,
          lambda offs, _index: row_body(b, offs, sizes[-1]), True)
    return True


def new_kernel_fn(module: ir.Module, name: str, ptr_types: list[ir.Type]
                  ) -> tuple[ir.Function, ir.IRBuilder, ir.Value, ir.Value, list[ir.Value]]:
    """An internal `void name(i32 tid, i32 nt, ptrs...)` with noalias pointers; returns
    (fn, builder at entry, tid, nt, pointer args)."""
    fnty = ir.FunctionType(ir.VoidType(), [I32, I32] + [t.as_pointer() for t in ptr_types])
    fn = ir.Function(module, fnty, name=name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    for a in fn.args[2:]:
        a.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    return fn, b, fn.args[0], fn.args[1], list(fn.args[2:])
