"""Codegen stage, loop nests: a static-shape loop nest over an iteration space where every operand
is addressed by constant strides, with a deterministic split of one dimension across threads.

Takes: an IRBuilder, the iteration shape, one `Access` (element pointer, strides, base offset) per
operand, and a body callback. Gives: `strided_loop` (a scalar body per point: broadcasting,
transposes, slices, pads, concats and reductions are all instances), `strided_vector_loop` (the
innermost dimension as an explicit vector loop with a scalar tail: elementwise kernels and
copies), `strided_transpose` (a transposing copy in register-transposed tiles), `strided_rows`
(a body per innermost row), `thread_range` and `new_kernel_fn` (an
internal kernel function `void f(i32 tid, i32 nt, T* noalias ...)`).

Invariants: dimensions of size 1 are dropped and adjacent dimensions whose strides nest are
merged (never the split dimension), so a contiguous elementwise loop is one flat loop LLVM
vectorizes; the split dimension is the outermost one marked splittable with size > 1 and thread
t of n takes its indices [size*t//n, size*(t+1)//n): ownership depends only on (t, n, shape), so
two loops over the same kept dimensions give every element to the same thread.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llvmlite import ir

from .loops import I32, I64, for_range, i64, lane_indices, transpose_square

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


def _nest(b: ir.IRBuilder, sizes: list[int], strides: list[list[int]], split: int | None,
          accesses: list[Access], tid: ir.Value, nt: ir.Value, depth: int,
          leaf: Callable[[list[ir.Value], list[ir.Value]], None]) -> None:
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
        with for_range(b, lo, hi, name=f"d{k}", unroll=inner) as i:
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
                 need_index: bool = False) -> None:
    """Run `body(b, offsets, index)` for every point of `shape` this thread owns: `offsets[k]` is
    accesses[k]'s element offset; `index` (only with need_index) the i64 index per dimension.
    The body is scalar; LLVM may vectorize the innermost loop."""
    sizes, strides, split = _plan(shape, accesses, splittable, need_index)
    _nest(b, sizes, strides, split, accesses, tid, nt, len(sizes),
          lambda offs, index: body(b, offs, index))


VectorBody = Callable[[ir.IRBuilder, list[ir.Value], int, dict[int, ir.Value]], None]


def _vector_width(sizes: list[int], strides: list[list[int]], lanes: int) -> int:
    """The width `strided_vector_loop` steps a planned innermost loop by: the target's `lanes`,
    fewer (down to 4) when the innermost dimension is shorter, 1 when shorter than 4 or when an
    access is neither contiguous nor broadcast along it (then every step is a scalar)."""
    if not sizes or any(s[-1] not in (0, 1) for s in strides):
        return 1
    w = lanes
    while w > 4 and w > sizes[-1]:
        w //= 2
    return w if w <= sizes[-1] else 1


def inner_strides(shape: Sequence[int], accesses: list[Access],
                  splittable: Sequence[bool] | None = None) -> list[int]:
    """Each access's stride along the innermost planned dimension (0: broadcast along it)."""
    sizes, strides, _ = _plan(shape, accesses, splittable, False)
    return [s[-1] if sizes else 0 for s in strides]


def _span(b: ir.IRBuilder, tid: ir.Value, nt: ir.Value, size: int, step: int, split: bool
          ) -> tuple[ir.Value, ir.Value, ir.Value]:
    """(lo, hi, end) of a planned dimension of `size`: this thread's range of it when it is the
    split one, else the whole; `end` closes the whole steps of `step` (a power of two) from lo."""
    if split:
        lo, hi = thread_range(b, tid, nt, size)
        return lo, hi, b.add(lo, b.and_(b.sub(hi, lo), i64(-step)))
    return i64(0), i64(size), i64(size // step * step)


GROUP_VECTORS = 8  # the most vectors a group of short rows may take (each is unrolled code)


def _row_groups(sizes: list[int], strides: list[list[int]], w: int, outputs: int
                ) -> tuple[int, int, list[str]] | None:
    """Short ragged rows run as groups of P rows = V whole vectors (P*L = V*w, L the row): each
    access along the last two planned dimensions is "full" (contiguous over the group), "col"
    (one element per row), "row" (the same row every row) or "scalar". Returns (P, V, kinds),
    or None when the row is a multiple of w, a group would take more than GROUP_VECTORS
    vectors, there are fewer rows than a group, an access fits none of the kinds or one of the
    first `outputs` accesses (the written ones) is not full."""
    if len(sizes) < 2 or w < 4:
        return None
    rows, length = sizes[-2], sizes[-1]
    g = math.gcd(length, w)
    per, nvec = w // g, length // g
    if g == w or nvec > GROUP_VECTORS or rows < per:
        return None
    kinds = []
    for s in strides:
        kind = {(length, 1): "full", (1, 0): "col", (0, 1): "row", (0, 0): "scalar"}.get(
            (s[-2], s[-1]))
        if kind is None:
            return None
        kinds.append(kind)
    if any(k != "full" for k in kinds[:outputs]):
        return None
    return per, nvec, kinds


def strided_vector_loop(b: ir.IRBuilder, shape: Sequence[int], accesses: list[Access],
                        body: VectorBody, tid: ir.Value, nt: ir.Value, lanes: int,
                        splittable: Sequence[bool] | None = None, outputs: int = 1) -> None:
    """Like `strided_loop`, but the innermost planned dimension runs as explicit vector code.
    `body(b, offsets, width, given)` computes `width` consecutive elements of the space
    (`offsets[k]`: access k's element offset at the first of them): an access whose innermost
    stride is 1 reads `width` consecutive elements, one with stride 0 reads one element for the
    whole step (the body splats it), and `given` maps an access index to its `width` elements
    already loaded (a vector of its memory type: the body converts it as it would a load). The
    first `outputs` accesses are the ones the body writes.

    A row runs as whole vectors of `width = _vector_width(...)`, then its tail element by element
    (width 1) in order. Short ragged rows (10 classes on 8 lanes) run in groups of rows that
    are whole vectors (`_row_groups`: 4 rows of 10 are 5 vectors): full operands are read
    straight through the group, an operand with one element per row (a softmax's max) is read
    once per group and spread over the lanes by a constant shuffle, one that is the same each
    row (a bias) is shuffled into its per-vector patterns once; rows left over after the last
    whole group run as single rows. Ownership is `strided_loop`'s (the thread range, in
    elements or rows): a split innermost dimension gives each thread whole vectors from its own
    start and its own tail."""
    sizes, strides, split = _plan(shape, accesses, splittable, False)
    groups = _row_groups(sizes, strides, lanes, outputs)
    w = lanes if groups is not None else _vector_width(sizes, strides, lanes)
    inner = len(sizes) - 1

    def at(offs: list[ir.Value], i: ir.Value, dim: int) -> list[ir.Value]:
        return [o if s[dim] == 0 else b.add(o, b.mul(i, i64(s[dim])))
                for o, s in zip(offs, strides)]

    def row(offs: list[ir.Value]) -> None:
        """The innermost dimension from `offs` (this thread's part of it when split)."""
        lo, hi, vend = _span(b, tid, nt, sizes[inner], w, split == inner)
        if w == 1:
            with for_range(b, lo, hi, name="t") as i:
                body(b, at(offs, i, inner), 1, {})
            return
        # vector code: nothing left for the loop vectorizer (LLVM may still unroll it)
        with for_range(b, lo, vend, w, name="v", vectorize=False, unroll=True) as i:
            body(b, at(offs, i, inner), w, {})
        if sizes[inner] % w or split == inner:
            with for_range(b, vend, hi, name="t", vectorize=False, unroll=True) as i:
                body(b, at(offs, i, inner), 1, {})

    if groups is None:
        def leaf(offs: list[ir.Value], _index: list[ir.Value]) -> None:
            if inner < 0:  # a single element
                body(b, offs, 1, {})
            else:
                row(offs)

        _nest(b, sizes, strides, split, accesses, tid, nt, max(inner, 0), leaf)
        return
    per, nvec, kinds = groups
    rdim, length = inner - 1, sizes[inner]

    def load(k: int, off: ir.Value, count: int) -> ir.Value:
        p = b.gep(accesses[k].ptr, [off])
        vt = ir.VectorType(accesses[k].ptr.type.pointee, count)
        return b.load(b.bitcast(p, vt.as_pointer()), align=1)

    def spread(v: ir.Value, lane_of: Callable[[int], int]) -> ir.Value:
        return b.shuffle_vector(v, ir.Constant(v.type, ir.Undefined),
                                lane_indices(lane_of(x) for x in range(w)))

    def leaf_groups(offs: list[ir.Value], _index: list[ir.Value]) -> None:
        lo, hi, gend = _span(b, tid, nt, sizes[rdim], per, split == rdim)  # per: w / gcd
        fixed = {k: load(k, offs[k], length) for k, kind in enumerate(kinds) if kind == "row"}
        with for_range(b, lo, gend, per, name="g", unroll=False, vectorize=False) as r0:
            base = at(offs, r0, rdim)
            cols = {k: load(k, base[k], per) for k, kind in enumerate(kinds) if kind == "col"}
            for v in range(nvec):
                given = {k: spread(x, lambda lane, v=v: (v * w + lane) // length)
                         for k, x in cols.items()}
                given.update({k: spread(x, lambda lane, v=v: (v * w + lane) % length)
                              for k, x in fixed.items()})
                body(b, [b.add(o, i64(v * w)) if kind == "full" else o
                         for o, kind in zip(base, kinds)], w, given)
        with for_range(b, gend, hi, name="rr", unroll=False) as r:
            row(at(offs, r, rdim))

    _nest(b, sizes, strides, split, accesses, tid, nt, rdim, leaf_groups)


def strided_transpose(b: ir.IRBuilder, shape: Sequence[int], accesses: list[Access],
                      tid: ir.Value, nt: ir.Value, tile: int) -> bool:
    """The copy `accesses[0] = accesses[1]` over `shape` (4-byte elements) when its innermost
    planned dimension j is contiguous in the output but strided in the input, and the input is
    contiguous along another dimension i (a transpose): `tile` x `tile` blocks, each `tile`
    vector loads along i, an in-register transpose and `tile` vector stores along j; the ragged
    ends of i and j element by element. Element by element, every load of a large transpose
    touched a new cache line (rows 2 KB apart also share L1 sets): a [16, 64, 512] transpose
    took ~1.2 ms. Ownership is `strided_loop`'s (the same split dimension and ranges). Returns
    False, emitting nothing, for any other copy."""
    out, src = accesses
    elem = out.ptr.type.pointee
    if not (isinstance(elem, ir.FloatType) or isinstance(elem, ir.IntType) and elem.width == 32):
        return False
    sizes, strides, split = _plan(shape, accesses, None, False)
    j = len(sizes) - 1
    if j < 1 or strides[0][j] != 1 or strides[1][j] == 1 or sizes[j] < tile:
        return False
    cand = [d for d in range(j) if strides[1][d] == 1 and sizes[d] >= tile]
    if not cand:
        return False
    i = cand[-1]
    order = [d for d in range(j) if d != i] + [i, j]
    sizes = [sizes[d] for d in order]
    strides = [[st[d] for d in order] for st in strides]
    split = order.index(split) if split is not None else None
    depth = len(order) - 2
    out_i, src_j = strides[0][depth], strides[1][depth + 1]  # the other strides are 1
    vt = ir.VectorType(out.ptr.type.pointee, tile).as_pointer()

    def leaf(offs: list[ir.Value], _index: list[ir.Value]) -> None:
        o_out, o_src = offs
        ilo, ihi, iend = _span(b, tid, nt, sizes[depth], tile, split == depth)
        jlo, jhi, jend = _span(b, tid, nt, sizes[depth + 1], tile, split == depth + 1)

        def src_at(ii: ir.Value, jj: ir.Value) -> ir.Value:
            return b.gep(src.ptr, [b.add(o_src, b.add(ii, b.mul(jj, i64(src_j))))])

        def out_at(ii: ir.Value, jj: ir.Value) -> ir.Value:
            return b.gep(out.ptr, [b.add(o_out, b.add(b.mul(ii, i64(out_i)), jj))])

        def one(ii: ir.Value, jj: ir.Value) -> None:
            b.store(b.load(src_at(ii, jj)), out_at(ii, jj))

        with for_range(b, ilo, iend, tile, name="ti", unroll=False) as i0:
            with for_range(b, jlo, jend, tile, name="tj", unroll=False, vectorize=False) as j0:
                cols = [b.load(b.bitcast(src_at(i0, b.add(j0, i64(c))), vt), align=4)
                        for c in range(tile)]
                for r, row in enumerate(transpose_square(b, cols)):
                    b.store(row, b.bitcast(out_at(b.add(i0, i64(r)), j0), vt), align=4)
            with for_range(b, jend, jhi, name="tjr") as jj:
                for r in range(tile):
                    one(b.add(i0, i64(r)), jj)
        with for_range(b, iend, ihi, name="tir", unroll=False) as ii, \
                for_range(b, jlo, jhi, name="tjs") as jj:
            one(ii, jj)

    _nest(b, sizes, strides, split, accesses, tid, nt, depth, leaf)
    return True


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
          lambda offs, _index: row_body(b, offs, sizes[-1]))
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
