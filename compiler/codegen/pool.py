"""Codegen stage, pooling kernels: max_pool2d and avg_pool2d (NCHW, no padding) and gradients.

Takes: a `PoolSpec` (static N, C, H, W, window KH x KW, stride) and a `Target`.
Gives: `emit_pool_forward(module, spec, kind)` -> `f(tid, nt, x, y, scratch)` and
`emit_pool_backward(module, spec, kind)` -> `f(tid, nt, x, dy, dx, scratch)` for kind "max" or
"avg" (`x` is unused by the avg gradient but kept so both share a signature).

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
is left to LLVM's vectoriser.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from llvmlite import ir

from .gemm import thread_range
from .loops import F32P, I32, f32, for_range, gep, i64

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


def _taps(spec: PoolSpec) -> list[int]:
    """In-plane offsets of the window taps, row-major (the tie-breaking order)."""
    return [i * spec.w + j for i in range(spec.kh) for j in range(spec.kw)]


def _tiles(spec: PoolSpec) -> bool:
    """Whether the windows cover every input element (stride == window, no leftover row/col)."""
    return (spec.stride == (spec.kh, spec.kw) and spec.oh * spec.kh == spec.h
            and spec.ow * spec.kw == spec.w)


def emit_pool_forward(module: ir.Module, spec: PoolSpec, kind: str) -> ir.Function:
    """`f(tid, nt, x, y, scratch)`: y = max or mean of each window."""
    if kind not in KINDS:
        raise ValueError(f"unknown pooling kind {kind!r}")
    name = f"netc_{kind}pool_fwd_{spec.tag()}"
    if name in module.globals:
        return module.globals[name]
    fn, b = _begin(module, name, 3)
    tid, nt, x, y, _ = fn.args
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


def emit_pool_backward(module: ir.Module, spec: PoolSpec, kind: str) -> ir.Function:
    """`f(tid, nt, x, dy, dx, scratch)`: dx = the pooling VJP (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"unknown pooling kind {kind!r}")
    name = f"netc_{kind}pool_bwd_{spec.tag()}"
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
    with _windows(b, spec, tid, nt) as (pl, origin, out):
        base = b.add(b.mul(pl, i64(plane_in)), origin)
        g = b.load(gep(b, dy, b.add(b.mul(pl, i64(plane_out)), out)), align=4)
        if kind == "max":
            xp = gep(b, x, base)
            best = b.load(gep(b, xp, i64(0)), align=4)
            arg = i64(0)
            for t in taps[1:]:
                v = b.load(gep(b, xp, i64(t)), align=4)
                better = _takes_over(b, v, best)
                best = b.select(better, v, best)
                arg = b.select(better, i64(t), arg)
            if disjoint:
                for t in taps:
                    hit = b.icmp_signed("==", arg, i64(t))
                    b.store(b.select(hit, g, f32(0.0)), gep(b, dx, b.add(base, i64(t))),
                            align=4)
            else:
                p = gep(b, dx, b.add(base, arg))
                b.store(b.fadd(b.load(p, align=4), g), p, align=4)
        else:
            share = b.fmul(g, f32(1.0 / (spec.kh * spec.kw)))
            for t in taps:
                p = gep(b, dx, b.add(base, i64(t)))
                b.store(share if disjoint else b.fadd(b.load(p, align=4), share), p, align=4)
    b.ret_void()
    return fn
