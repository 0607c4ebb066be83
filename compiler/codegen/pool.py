"""Codegen stage, pooling kernels: max_pool2d and avg_pool2d (NCHW, no padding) and gradients.

Takes: a `PoolSpec` (static N, C, H, W, window KH x KW, stride) and a `Target`.
Gives: `emit_pool_forward(module, spec, kind)` -> `f(tid, nt, x, y, scratch)` and
`emit_pool_backward(module, spec, kind)` -> `f(tid, nt, x, dy, dx, scratch)` for kind "max" or
"avg" (`x` is unused by the avg gradient but kept so both share a signature); the max gradient
can apply `where(x > t, dx, 0)` as it writes (`above`: the ReLU gradient of a pooled ReLU output,
which then needs no pass of its own over dx).

Conventions: output size is floor((H - KH) / SH) + 1 (windows never leave the image). The max
gradient goes to the *first* maximal element of each window in row-major window order (strict `>`
while scanning kh then kw), so ties are broken the same way every run; a NaN wins over numbers
(the first NaN of a window is its max and takes the gradient). With overlapping windows
(stride < window) contributions add. avg divides by KH*KW. The gradient zeroes dx first unless the
windows tile the input exactly (stride == window, no leftover row or column): then every element of
dx is stored exactly once.

Threads and determinism: threads take whole (n, c) planes, a contiguous range fixed by (tid, nt);
within a plane windows are visited in a fixed order, so results are bitwise reproducible and
independent of the thread count. Window loops are unrolled (static KH, KW); the output-column loop
is left to LLVM's vectoriser. Max pooling and its gradient with disjoint windows run vectors of
windows instead (`_max_rows`: taps taken out of row vectors by shuffles); the gradient marks each
tap's win with i1 logic (`_winners`), never an argmax index, so no path of it has data-dependent
branches (the index chain became branches that mispredicted on every other window).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from llvmlite import ir

from .gemm import thread_range
from .loops import (
    F32P,
    I32,
    const_vec,
    f32,
    for_range,
    gep,
    i64,
    lane_indices,
    load_vec,
    store_vec,
)

KINDS = ("max", "avg")


@dataclass(frozen=True)
class PoolSpec:
    n: int
    c: int
    h: int
    w: int
    kh: int
    kw: int
    stride: tuple[int, int]

    def __post_init__(self) -> None:
        if min(self.n, self.c, self.h, self.w, self.kh, self.kw, *self.stride) < 1:
            raise ValueError(f"pooling sizes and strides must be >= 1: {self}")
        if self.kh > self.h or self.kw > self.w:
            raise ValueError(f"window {self.kh}x{self.kw} is larger than the input "
                             f"{self.h}x{self.w}")

    @property
    def oh(self) -> int:
        return (self.h - self.kh) // self.stride[0] + 1

    @property
    def ow(self) -> int:
        return (self.w - self.kw) // self.stride[1] + 1

    def tag(self) -> str:
        return (f"{self.n}x{self.c}x{self.h}x{self.w}_k{self.kh}x{self.kw}"
                f"_s{self.stride[0]}x{self.stride[1]}")


def _begin(module: ir.Module, name: str, n_ptrs: int) -> tuple[ir.Function, ir.IRBuilder]:
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I32, I32] + [F32P] * n_ptrs),
                     name=name)
    fn.attributes.add("nounwind")
    for a in fn.args[2:]:
        a.add_attribute("noalias")
    return fn, ir.IRBuilder(fn.append_basic_block("entry"))


@contextmanager
def _windows(b: ir.IRBuilder, spec: PoolSpec, tid: ir.Value, nt: ir.Value
             ) -> Iterator[tuple[ir.Value, ir.Value, ir.Value]]:
    """Loop over this thread's planes and every output (oh, ow); the body gets (plane index,
    in-plane offset of the window origin, in-plane offset of the output)."""
    lo, hi = thread_range(b, tid, nt, spec.n * spec.c, 1)
    with for_range(b, lo, hi, name="plane") as pl, \
            for_range(b, i64(0), i64(spec.oh), name="oh") as oh, \
            for_range(b, i64(0), i64(spec.ow), name="ow") as ow:
        origin = b.add(b.mul(oh, i64(spec.stride[0] * spec.w)), b.mul(ow, i64(spec.stride[1])))
        yield pl, origin, b.add(b.mul(oh, i64(spec.ow)), ow)


def _takes_over(b: ir.IRBuilder, v: ir.Value, best: ir.Value) -> ir.Value:
    """Whether tap `v` replaces the running max: strictly greater, or the first NaN (which then
    stays, as in NumPy's max: NaN propagates and receives the gradient)."""
    return b.or_(b.fcmp_ordered(">", v, best),
                 b.and_(b.fcmp_unordered("uno", v, v), b.fcmp_ordered("ord", best, best)))


def _winners(b: ir.IRBuilder, vals: list[ir.Value]) -> list[ir.Value]:
    """For each tap, whether it is the window's max by the scan of `_takes_over` (the last tap
    that took over): i1 logic, no index, so the gradient's taps are selects LLVM keeps
    branch-free (an argmax index chain became branches that mispredict on every other window)."""
    best, took = vals[0], [None]
    for v in vals[1:]:
        better = _takes_over(b, v, best)
        best = b.select(better, v, best)
        took.append(better)
    if len(vals) == 1:
        t = vals[0].type
        return [ir.Constant(ir.VectorType(ir.IntType(1), t.count), [1] * t.count)
                if isinstance(t, ir.VectorType) else ir.Constant(ir.IntType(1), 1)]
    wins, later = [], None  # `later`: some tap after this one took over
    for t in reversed(range(len(vals))):
        mine = took[t]
        if mine is None:
            wins.append(b.not_(later))
        else:
            wins.append(b.and_(mine, b.not_(later)) if later is not None else mine)
            later = mine if later is None else b.or_(later, mine)
    return wins[::-1]


def _taps(spec: PoolSpec) -> list[int]:
    """In-plane offsets of the window taps, row-major (the tie-breaking order)."""
    return [i * spec.w + j for i in range(spec.kh) for j in range(spec.kw)]


def _tiles(spec: PoolSpec) -> bool:
    """Whether the windows cover every input element (stride == window, no leftover row/col)."""
    return (spec.stride == (spec.kh, spec.kw) and spec.oh * spec.kh == spec.h
            and spec.ow * spec.kw == spec.w)


def emit_pool_forward(module: ir.Module, spec: PoolSpec, kind: str,
                      lanes: int = 1) -> ir.Function:
    """`f(tid, nt, x, y, scratch)`: y = max or mean of each window (max pooling with disjoint
    windows runs vectors of `lanes` windows, see `_max_rows`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown pooling kind {kind!r}")
    width = _row_width(spec, kind, lanes)
    name = f"netc_{kind}pool_fwd_{spec.tag()}" + (f"_v{width}" if width else "")
    if name in module.globals:
        return module.globals[name]
    fn, b = _begin(module, name, 3)
    tid, nt, x, y, _ = fn.args
    if width:
        _max_rows(b, spec, width, tid, nt, x, None, y)
        b.ret_void()
        return fn
    plane_in, plane_out = spec.h * spec.w, spec.oh * spec.ow
    with _windows(b, spec, tid, nt) as (pl, origin, out):
        xp = gep(b, x, b.add(b.mul(pl, i64(plane_in)), origin))
        vals = [b.load(gep(b, xp, i64(t)), align=4) for t in _taps(spec)]
        acc = vals[0]
        for v in vals[1:]:
            if kind == "max":
                acc = b.select(_takes_over(b, v, acc), v, acc)
            else:
                acc = b.fadd(acc, v)
        if kind == "avg":
            acc = b.fmul(acc, f32(1.0 / (spec.kh * spec.kw)))
        b.store(acc, gep(b, y, b.add(b.mul(pl, i64(plane_out)), out)), align=4)
    b.ret_void()
    return fn


def _row_width(spec: PoolSpec, kind: str, lanes: int) -> int:
    """How many windows of a row max pooling and its gradient run at once (`_max_rows`): the
    widest vector of at most `lanes` (and at least 4) floats a row has that many windows for,
    with disjoint windows whose strides stay inside the row (OW*SW <= W: a group reads and
    writes whole strides, so with gaps after the last window a stride past the row's end would
    reach into the next row, or the next thread's plane); 0: one window at a time."""
    if (kind != "max" or spec.stride[0] < spec.kh or spec.stride[1] < spec.kw
            or spec.ow * spec.stride[1] > spec.w):
        return 0
    width = lanes
    while width >= 4 and width > spec.ow:
        width //= 2
    return width if width >= 4 else 0


def emit_pool_backward(module: ir.Module, spec: PoolSpec, kind: str,
                       lanes: int = 1, above: float | None = None) -> ir.Function:
    """`f(tid, nt, x, dy, dx, scratch)`: dx = the pooling VJP (see the module docstring).
    `lanes` (the target's vector width) lets a max gradient with disjoint windows run whole
    vectors of windows (see `_max_rows`). `above` (max only): a tap passes its window's
    gradient only where x > above, i.e. dx = where(x > above, VJP, 0), the ReLU gradient of a
    pooled ReLU output fused in (NaN never passes, as `gt` says)."""
    if kind not in KINDS:
        raise ValueError(f"unknown pooling kind {kind!r}")
    if above is not None and kind != "max":
        raise ValueError("a gradient mask is fused into the max pooling gradient only")
    width = _row_width(spec, kind, lanes)
    name = f"netc_{kind}pool_bwd_{spec.tag()}" + (f"_v{width}" if width else "")
    if above is not None:
        name += f"_gt{struct.unpack('<I', struct.pack('<f', above))[0]:08x}"
    if name in module.globals:
        return module.globals[name]
    fn, b = _begin(module, name, 4)
    tid, nt, x, dy, dx, _ = fn.args
    plane_in, plane_out = spec.h * spec.w, spec.oh * spec.ow
    taps = _taps(spec)
    # Windows that never overlap own their taps: plain stores (no read-modify-write chain).
    disjoint = spec.stride[0] >= spec.kh and spec.stride[1] >= spec.kw
    if not (disjoint and _tiles(spec)):  # else every element of dx is stored exactly once below
        lo, hi = thread_range(b, tid, nt, spec.n * spec.c, 1)
        with for_range(b, b.mul(lo, i64(plane_in)), b.mul(hi, i64(plane_in)), name="zero") as i:
            b.store(f32(0.0), gep(b, dx, i), align=4)
    if width:
        _max_rows(b, spec, width, tid, nt, x, dy, dx, above)
        b.ret_void()
        return fn
    with _windows(b, spec, tid, nt) as (pl, origin, out):
        base = b.add(b.mul(pl, i64(plane_in)), origin)
        g = b.load(gep(b, dy, b.add(b.mul(pl, i64(plane_out)), out)), align=4)
        if kind == "max":
            xp = gep(b, x, base)
            vals = [b.load(gep(b, xp, i64(t)), align=4) for t in taps]
            for t, win, v in zip(taps, _winners(b, vals), vals):
                if above is not None:
                    win = b.and_(win, b.fcmp_ordered(">", v, f32(above)))
                share = b.select(win, g, f32(0.0))
                p = gep(b, dx, b.add(base, i64(t)))
                b.store(share if disjoint else b.fadd(b.load(p, align=4), share), p, align=4)
        else:
            share = b.fmul(g, f32(1.0 / (spec.kh * spec.kw)))
            for t in taps:
                p = gep(b, dx, b.add(base, i64(t)))
                b.store(share if disjoint else b.fadd(b.load(p, align=4), share), p, align=4)
    b.ret_void()
    return fn


def _max_rows(b: ir.IRBuilder, spec: PoolSpec, lanes: int, tid: ir.Value, nt: ir.Value,
              x: ir.Value, dy: ir.Value | None, out: ir.Value, above: float | None = None
              ) -> None:
    """Max pooling (`dy` None: `out` is y) or its gradient (`out` is dx) for disjoint windows,
    `lanes` windows of an output row at a time.

    Window w's tap (i, j) is x[row0 + i][w*SW + j]: the SW vectors from the group's first window
    hold every tap, and shuffles take lane j, j+SW, ... out of them. The forward pass keeps the
    running max by the scan's rule (`_takes_over`); the gradient marks the winners (`_winners`,
    vector i1 logic), picks dy or 0 per tap, and shuffles interleave those back into SW vectors
    of the dx row (a column no window covers gets 0, as zeroing would). A row of OW windows runs
    groups at 0, L, 2L, ... and a last one at OW - L, which may recompute windows of the group
    before it: the same values over the same elements, since the operands never alias."""
    sh, sw = spec.stride
    plane_in, plane_out = spec.h * spec.w, spec.oh * spec.ow
    lo, hi = thread_range(b, tid, nt, spec.n * spec.c, 1)
    groups = -(-spec.ow // lanes)
    with for_range(b, lo, hi, name="plane") as pl, \
            for_range(b, i64(0), i64(spec.oh), name="oh") as oh, \
            for_range(b, i64(0), i64(groups), name="grp") as grp:
        w0 = b.mul(grp, i64(lanes))
        w0 = b.select(b.icmp_signed(">", w0, i64(spec.ow - lanes)), i64(spec.ow - lanes), w0)
        first = b.add(b.add(b.mul(pl, i64(plane_in)), b.mul(oh, i64(sh * spec.w))),
                      b.mul(w0, i64(sw)))  # element (window row 0, column w0*SW)
        at_out = b.add(b.add(b.mul(pl, i64(plane_out)), b.mul(oh, i64(spec.ow))), w0)
        vals = []
        for i in range(spec.kh):
            row = b.add(first, i64(i * spec.w))
            chunks = [load_vec(b, x, b.add(row, i64(c * lanes)), lanes) for c in range(sw)]
            vals += [_lanes_of(b, chunks, [j + w * sw for w in range(lanes)], lanes)
                     for j in range(spec.kw)]
        if dy is None:
            best = vals[0]
            for v in vals[1:]:
                best = b.select(_takes_over(b, v, best), v, best)
            store_vec(b, best, out, at_out)
        else:
            _scatter_grad(b, spec, lanes, vals, load_vec(b, dy, at_out, lanes), first, out,
                          above)


def _scatter_grad(b: ir.IRBuilder, spec: PoolSpec, lanes: int, vals: list[ir.Value],
                  g: ir.Value, first: ir.Value, dx: ir.Value, above: float | None) -> None:
    """dy (or 0) into each tap of `lanes` disjoint windows whose first row starts at `first`
    (with `above`, only into taps whose x is above it)."""
    sw = spec.stride[1]
    zero = const_vec(lanes, 0.0)
    wins = _winners(b, vals)
    if above is not None:
        limit = const_vec(lanes, above)
        wins = [b.and_(w, b.fcmp_ordered(">", v, limit)) for w, v in zip(wins, vals)]
    flat = [(e % sw, e // sw) for e in range(sw * lanes)]  # row element -> (tap col, window)
    for i in range(spec.kh):
        cols = [b.select(wins[i * spec.kw + j], g, zero) for j in range(spec.kw)]
        cols += [zero] * (sw - spec.kw)  # columns between windows
        row = b.add(first, i64(i * spec.w))
        for c in range(sw):
            part = flat[c * lanes:(c + 1) * lanes]
            v = _lanes_of(b, cols, [j * lanes + w for j, w in part], lanes)
            store_vec(b, v, dx, b.add(row, i64(c * lanes)))


def _lanes_of(b: ir.IRBuilder, vecs: list[ir.Value], picks: list[int], lanes: int) -> ir.Value:
    """A vector of `lanes` elements taken from the concatenation of `vecs` (element k of the
    concatenation is lane k % lanes of vecs[k // lanes]), by pairwise shuffles."""
    srcs = sorted({p // lanes for p in picks})
    if len(srcs) == 1:
        (s0,) = srcs
        return b.shuffle_vector(vecs[s0], ir.Constant(vecs[s0].type, ir.Undefined),
                                lane_indices([p % lanes for p in picks]))
    if len(srcs) == 2:
        s0, s1 = srcs
        return b.shuffle_vector(vecs[s0], vecs[s1],
                                lane_indices([p % lanes + (lanes if p // lanes == s1 else 0)
                                      for p in picks]))
    # more than two sources: take each lane's pair, then merge the halves by select
    out = None
    for s0 in range(0, len(srcs), 2):
        pair = srcs[s0:s0 + 2]
        mine = [p if p // lanes in pair else pair[0] * lanes for p in picks]
        part = _lanes_of(b, vecs, mine, lanes)
        if out is None:
            out = part
        else:
            keep = ir.Constant(ir.VectorType(ir.IntType(1), lanes),
                               [int(p // lanes in pair) for p in picks])
            out = b.select(keep, part, out)
    return out

