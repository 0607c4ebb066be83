"""Codegen stage, rows kernels: reductions and elementwise nodes along the rows of one [*lead, C]
space, in one pass (softmax, log-softmax, cross-entropy and their gradients).

Takes: an emission context and a "rows" kernel of the legalized kernel graph (fuse_kernels: sum,
max and min over the last axis; elementwise and one_hot nodes over [*lead, C] or [*lead, 1]).
Gives: `emit_rows` -> the call running it.

How: the P = prod(lead) rows go in blocks of W rows (W: the vector width), each thread taking a
contiguous range of blocks. A block holds its values in registers with the rows across the lanes:
a [*lead, C] value is C vectors (vector c holds column c of the block's rows), a [*lead, 1] value
one vector. A reduction along the rows is then C - 1 vertical combines in a fixed pairwise tree,
with no horizontal shuffles and every lane busy whatever C is; an elementwise node is one body per
column (the primitive's own body, lower_elementwise), one_hot a compare per column. Whole-row
operands are read as W x W tiles of row vectors transposed in registers (loops.transpose_square),
the last tile overlapping the one before when W does not divide C (rows shorter than W are read
with plain partial moves), and stored back the same way; one-per-row operands are a vector load,
one-per-column operands a splat per column. Rows after the last whole block run one at a time at
width 1 on the last thread.

Invariants: a block stores only after it has read every operand, and blocks own disjoint rows, so
the result does not depend on the thread count; every row combines its columns in the same order.
Stored rows are f32 (fuse_kernels keeps a row value of another dtype inside its kernel).
"""

from __future__ import annotations

import math

from llvmlite import ir

from ..passes.fuse_kernels import ROW_REDUCTIONS, row_operand
from ..passes.kernel_graph import Kernel
from .emit_ctx import Call, Ctx, mode_for, size_of
from .kernels_elementwise import is_scalar_const
from .loops import (
    for_range,
    gep,
    i64,
    load_first,
    load_vec,
    splat,
    store_first,
    store_vec,
    transpose_square,
)
from .lower_elementwise import ELEMENTWISE, const, load_value, store_value
from .strided import new_kernel_fn, thread_range

I32 = ir.IntType(32)
_COMBINE = {"sum": "add", "max": "maximum", "min": "minimum"}


class _Block:
    """The values of one block of `width` rows starting at row `p0` (an i64 value)."""

    def __init__(self, cx: Ctx, b: ir.IRBuilder, k: Kernel, ptr: dict[int, ir.Value],
                 p0: ir.Value, width: int):
        self.cx, self.b, self.k, self.ptr, self.p0, self.w = cx, b, k, ptr, p0, width
        self.lead, self.c = k.space[:-1], k.space[-1]
        self.vals: dict[int, tuple[str, object]] = {}  # id -> ("row", [C values]) | ("one", v)

    # ------------------------------------------------------------------ operands

    def value(self, i: int, labels: bool = False) -> tuple[str, object]:
        """The value of node `i`: computed in this block, else loaded (`labels`: one_hot's
        operand, one value per row though its shape is the rows' lead)."""
        hit = self.vals.get(i)
        if hit is None and labels:
            return self._load(i, "one")
        if hit is None:
            hit = self.vals[i] = self._load(i)
        return hit

    def _load(self, i: int, kind: str | None = None) -> tuple[str, object]:
        b, w, n = self.b, self.w, self.cx.node(i)
        dt = n.type.dtype
        if is_scalar_const(n):
            return "one", const(dt, n.attrs["value"].reshape(()), w)
        p = self.ptr[i]
        kind = kind or row_operand(n.type.shape, self.lead, self.c)
        if kind == "row":
            return "row", self._load_rows(p)
        if kind == "one":
            return "one", load_value(b, gep(b, p, self.p0), dt, w)
        if kind == "col":
            return "row", [self._spread(load_value(b, gep(b, p, c), dt)) for c in range(self.c)]
        return "one", self._spread(load_value(b, p, dt))  # a scalar

    def _spread(self, v: ir.Value) -> ir.Value:
        return splat(self.b, v, self.w) if self.w > 1 else v

    def _row_at(self, r: int, col: int) -> ir.Value:
        """The element offset of column `col` of the block's row r."""
        return self.b.add(self.b.mul(self.b.add(self.p0, i64(r)), i64(self.c)), i64(col))

    def _tiles(self) -> list[int]:
        """First columns of the W-wide tiles covering a row (the last overlaps when W does not
        divide C)."""
        c, w = self.c, self.w
        starts = list(range(0, c - w + 1, w))
        return starts + ([c - w] if c % w else [])

    def _load_rows(self, p: ir.Value) -> list[ir.Value]:
        b, c, w = self.b, self.c, self.w
        if w == 1:
            return [b.load(gep(b, p, self._row_at(0, j)), align=4) for j in range(c)]
        if c < w:
            rows = [load_first(b, p, self._row_at(r, 0), c, w) for r in range(w)]
            return transpose_square(b, rows)[:c]
        cols: list[ir.Value | None] = [None] * c
        for s in self._tiles():
            tile = transpose_square(b, [load_vec(b, p, self._row_at(r, s), w) for r in range(w)])
            for j, v in enumerate(tile):
                if cols[s + j] is None:
                    cols[s + j] = v
        return cols

    # ------------------------------------------------------------------ results

    def store(self, i: int) -> None:
        b, n = self.b, self.cx.node(i)
        kind, v = self.value(i)
        p = self.ptr[i]
        if n.type.shape != (*self.lead, self.c):  # one value per row
            store_value(b, v, gep(b, p, self.p0), n.type.dtype)
            return
        cols = v if kind == "row" else [v] * self.c
        if self.w == 1:
            for j, x in enumerate(cols):
                b.store(x, gep(b, p, self._row_at(0, j)), align=4)
        elif self.c < self.w:
            zero = const("f32", 0.0, self.w)
            rows = transpose_square(b, [*cols, *[zero] * (self.w - self.c)])
            for r, row in enumerate(rows):
                store_first(b, row, p, self._row_at(r, 0), self.c)
        else:
            for s in self._tiles():
                for r, row in enumerate(transpose_square(b, cols[s:s + self.w])):
                    store_vec(b, row, p, self._row_at(r, s))

    # ------------------------------------------------------------------ nodes

    def compute(self, i: int) -> None:
        b, w, n = self.b, self.w, self.cx.node(i)
        dt = n.type.dtype
        if n.op in ROW_REDUCTIONS:
            kind, v = self.value(n.inputs[0].id)
            parts = list(v) if kind == "row" else [v] * self.c
            body = ELEMENTWISE[_COMBINE[n.op]]
            while len(parts) > 1:  # a fixed pairwise tree over the columns
                parts = [body(b, parts[j:j + 2], {}, [dt, dt], dt) if j + 1 < len(parts)
                         else parts[j] for j in range(0, len(parts), 2)]
            self.vals[i] = ("one", parts[0])
            return
        if n.op == "one_hot":
            _, y = self.value(n.inputs[0].id, labels=True)
            one, zero = const(dt, 1.0, w), const(dt, 0.0, w)
            self.vals[i] = ("row", [b.select(b.icmp_signed("==", y, const("i32", c, w)), one,
                                             zero) for c in range(self.c)])
            return
        ins = [self.value(x.id) for x in n.inputs]
        if n.op == "broadcast_to":
            self.vals[i] = ins[0]
            return
        body, dts = ELEMENTWISE[n.op], [x.type.dtype for x in n.inputs]
        if all(kind == "one" for kind, _ in ins):
            self.vals[i] = ("one", body(b, [v for _, v in ins], n.attrs, dts, dt))
            return
        self.vals[i] = ("row", [body(b, [v[c] if kind == "row" else v for kind, v in ins],
                                     n.attrs, dts, dt) for c in range(self.c)])


def emit_rows(cx: Ctx, k: Kernel) -> list[Call]:
    """The rows kernel `k` (see the module docstring): one noalias argument per buffer, stored
    values first."""
    data = [i for i in k.inputs if not is_scalar_const(cx.node(i))]
    arg_nodes, at = cx.buffer_args([*k.outputs, *data])
    fn, b, tid, nt, ptrs = new_kernel_fn(cx.module, cx.name("rows"),
                                         [cx.ptr_type(i) for i in arg_nodes])
    ptr = {i: ptrs[s] for i, s in at.items()}
    rows = math.prod(k.space[:-1])
    w = cx.target.lanes

    def block(p0: ir.Value, width: int) -> None:
        blk = _Block(cx, b, k, ptr, p0, width)
        for i in k.nodes:
            blk.compute(i)
        for i in k.outputs:
            blk.store(i)

    whole = rows // w
    lo, hi = thread_range(b, tid, nt, whole)
    with for_range(b, lo, hi, name="blk", unroll=False) as g:
        block(b.mul(g, i64(w)), w)
    if rows % w:
        last = b.icmp_signed("==", tid, b.sub(nt, ir.Constant(I32, 1)))
        with b.if_then(last), for_range(b, whole * w, rows, name="row", unroll=False) as p:
            block(p, 1)
    b.ret_void()
    return [Call(fn, list(arg_nodes), set(data), set(k.outputs), mode_for(size_of(k.space)))]
