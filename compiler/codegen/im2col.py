"""Codegen stage, convolution lowering helpers: the im2col view of an NCHW image.

Takes: a `ConvSpec` (static N, C, H, W, Cout, KH, KW, stride, padding) and pointers to one image.
Gives: GEMM operand `Source`s reading the im2col matrix `col[k, p]` (k = (ci, kh, kw), p = (oh, ow))
straight from the image while packing (`ColsSource`: B of the forward product, outer index p;
`RowsSource`: B of the weight gradient, outer index k), and explicit `emit_im2col` / `emit_col2im`
loops (fill a K x P buffer; scatter-add one back into an image).

Invariants: padding is never materialised — an out-of-image tap reads as 0 (`select` on a clamped
index, so no load leaves the image); explicit loops split each output row into a zero prefix, a
dense middle and a zero suffix whose bounds are static per (kh, kw), so the middle has no test;
at unit stride it is copied in whole vectors plus a static scalar tail (no access leaves the
row); col2im adds in a fixed order (deterministic).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llvmlite import ir

from .loops import f32, for_range, gep, i64, vec_type
from .packing import SliverLoader, Source


def pair(name: str, v: int | tuple[int, int]) -> tuple[int, int]:
    """An int or a pair of ints as a pair (stride, padding, window sizes)."""
    t = (v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 2 or not all(isinstance(i, int) for i in t):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return t  # type: ignore[return-value]


@dataclass(frozen=True)
class ConvSpec:
    """A 2-D convolution fixed at compile time (NCHW input, OIHW weights, zero padding)."""

    n: int
    c: int
    h: int
    w: int
    co: int
    kh: int
    kw: int
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        if min(self.n, self.c, self.h, self.w, self.co, self.kh, self.kw) < 1:
            raise ValueError(f"convolution sizes must be >= 1: {self}")
        if min(self.stride) < 1 or min(self.pad) < 0:
            raise ValueError(f"stride must be >= 1 and padding >= 0: {self}")
        if self.oh < 1 or self.ow < 1:
            raise ValueError(f"kernel {self.kh}x{self.kw} does not fit the padded input "
                             f"{self.h}x{self.w} (pad {self.pad})")

    @classmethod
    def from_shapes(cls, x_shape: tuple[int, ...], w_shape: tuple[int, ...],
                    stride: int | tuple[int, int] = 1, pad: int | tuple[int, int] = 0
                    ) -> ConvSpec:
        """From x [N,C,H,W], w [Cout,C,KH,KW]; ValueError on any mismatch."""
        if len(x_shape) != 4 or len(w_shape) != 4:
            raise ValueError(f"conv2d needs x [N,C,H,W] and w [Cout,C,KH,KW], got {x_shape} "
                             f"and {w_shape}")
        if x_shape[1] != w_shape[1]:
            raise ValueError(f"x has {x_shape[1]} channels but w expects {w_shape[1]}")
        n, c, h, w = x_shape
        co, _, kh, kw = w_shape
        return cls(n, c, h, w, co, kh, kw, pair("stride", stride), pair("pad", pad))

    @property
    def oh(self) -> int:
        return (self.h + 2 * self.pad[0] - self.kh) // self.stride[0] + 1

    @property
    def ow(self) -> int:
        return (self.w + 2 * self.pad[1] - self.kw) // self.stride[1] + 1

    @property
    def kdim(self) -> int:
        """Rows of the im2col matrix: C * KH * KW."""
        return self.c * self.kh * self.kw

    @property
    def p(self) -> int:
        """Columns of the im2col matrix: OH * OW."""
        return self.oh * self.ow

    @property
    def image(self) -> int:
        return self.c * self.h * self.w

    def tag(self) -> str:
        return (f"{self.n}x{self.c}x{self.h}x{self.w}_{self.co}x{self.kh}x{self.kw}"
                f"_s{self.stride[0]}{self.stride[1]}_p{self.pad[0]}{self.pad[1]}")


def _tap(b: ir.IRBuilder, x: ir.Value, spec: ConvSpec, base: ir.Value, ih: ir.Value,
         iw: ir.Value) -> ir.Value:
    """x[base + ih*W + iw] or 0 outside the image (unsigned compare catches negatives)."""
    inb = b.and_(b.icmp_unsigned("<", ih, i64(spec.h)), b.icmp_unsigned("<", iw, i64(spec.w)))
    idx = b.add(base, b.add(b.mul(ih, i64(spec.w)), iw))
    idx = b.select(inb, idx, i64(0))
    return b.select(inb, b.load(gep(b, x, idx), align=4), f32(0.0))


def _decode_k(b: ir.IRBuilder, spec: ConvSpec, k: ir.Value) -> tuple[ir.Value, ...]:
    khw = spec.kh * spec.kw
    ci = b.sdiv(k, i64(khw))
    r = b.sub(k, b.mul(ci, i64(khw)))
    kh = b.sdiv(r, i64(spec.kw))
    kw = b.sub(r, b.mul(kh, i64(spec.kw)))
    return b.mul(ci, i64(spec.h * spec.w)), kh, kw


def _decode_p(b: ir.IRBuilder, spec: ConvSpec, p: ir.Value) -> tuple[ir.Value, ir.Value]:
    oh = b.sdiv(p, i64(spec.ow))
    ow = b.sub(p, b.mul(oh, i64(spec.ow)))
    return (b.sub(b.mul(oh, i64(spec.stride[0])), i64(spec.pad[0])),
            b.sub(b.mul(ow, i64(spec.stride[1])), i64(spec.pad[1])))


@dataclass
class ColsSource(Source):
    """col[k, p] of image `x` with outer index p (an output pixel) and inner k: the forward B."""

    x: ir.Value
    spec: ConvSpec

    def sliver(self, b: ir.IRBuilder, o0: ir.Value, count: int) -> SliverLoader:
        origins = [_decode_p(b, self.spec, b.add(o0, i64(s))) for s in range(count)]

        def at(bb: ir.IRBuilder, k: ir.Value) -> list[ir.Value]:
            base, kh, kw = _decode_k(bb, self.spec, k)
            return [_tap(bb, self.x, self.spec, base, bb.add(ih0, kh), bb.add(iw0, kw))
                    for ih0, iw0 in origins]

        return at


@dataclass
class RowsSource(Source):
    """col[k, p] of image `x` with outer index k (a weight tap) and inner p: the dW product's B."""

    x: ir.Value
    spec: ConvSpec

    def sliver(self, b: ir.IRBuilder, o0: ir.Value, count: int) -> SliverLoader:
        taps = [_decode_k(b, self.spec, b.add(o0, i64(s))) for s in range(count)]

        def at(bb: ir.IRBuilder, p: ir.Value) -> list[ir.Value]:
            ih0, iw0 = _decode_p(bb, self.spec, p)
            return [_tap(bb, self.x, self.spec, base, bb.add(ih0, kh), bb.add(iw0, kw))
                    for base, kh, kw in taps]

        return at


def _valid(out: int, size: int, k: int, stride: int, pad: int) -> tuple[int, int]:
    """[lo, hi) of output positions o with 0 <= o*stride + k - pad < size (static)."""
    lo = max(0, -(-(pad - k) // stride))
    hi = min(out, (size - 1 + pad - k) // stride + 1)
    return lo, max(lo, hi)


UNROLL_RUN = 32  # static runs up to this length are emitted straight-line (SLP-vectorised)


def _run(b: ir.IRBuilder, lo: int, hi: int, body: Callable[[ir.Value], None]) -> None:
    """`body(i)` for i in [lo, hi): unrolled when short (short image rows would otherwise pay a
    loop's setup and remainder for a handful of elements), else a loop."""
    if hi - lo <= UNROLL_RUN:
        for i in range(lo, hi):
            body(i64(i))
    else:
        with for_range(b, i64(lo), i64(hi), name="run") as i:
            body(i)


def _fill(b: ir.IRBuilder, ptr: ir.Value, lo: int, hi: int) -> None:
    _run(b, lo, hi, lambda i: b.store(f32(0.0), gep(b, ptr, i), align=4))


def _vector_run(b: ir.IRBuilder, src: ir.Value, dst: ir.Value, lo: int, hi: int, lanes: int,
                scatter: bool) -> None:
    """dst[i] = src[i] (or src[i] += dst[i] when scattering) for i in [lo, hi), unit stride: full
    vectors, then the static tail element by element (masked stores are microcoded and slow on
    some x86 parts), so no access leaves [lo, hi)."""
    vt = vec_type(lanes)

    def move(off: ir.Value) -> None:
        ps = b.bitcast(gep(b, src, off), vt.as_pointer())
        pd = b.bitcast(gep(b, dst, off), vt.as_pointer())
        v = b.load(ps, align=4)
        if scatter:
            b.store(b.fadd(v, b.load(pd, align=4)), ps, align=4)
        else:
            b.store(v, pd, align=4)

    n_full = (hi - lo) // lanes
    if n_full <= UNROLL_RUN // lanes:
        for v in range(n_full):
            move(i64(lo + v * lanes))
    else:
        with for_range(b, i64(lo), i64(lo + n_full * lanes), lanes, name="vrun") as i:
            move(i)
    for i in range(lo + n_full * lanes, hi):
        sp, dp = gep(b, src, i64(i)), gep(b, dst, i64(i))
        if scatter:
            b.store(b.fadd(b.load(sp, align=4), b.load(dp, align=4)), sp, align=4)
        else:
            b.store(b.load(sp, align=4), dp, align=4)


def emit_im2col(b: ir.IRBuilder, spec: ConvSpec, x: ir.Value, col: ir.Value,
                ld: int | None = None, lanes: int = 8) -> None:
    """col[k*ld + p] = the tap of image `x` for k = (ci, kh, kw), p = (oh, ow) (ld defaults to P;
    columns P..ld-1 are left untouched). `lanes`: vector width of the unit-stride copies."""
    _walk(b, spec, x, col, scatter=False, ld=ld or spec.p, lanes=lanes)


def emit_col2im(b: ir.IRBuilder, spec: ConvSpec, col: ir.Value, x: ir.Value,
                ld: int | None = None, lanes: int = 8) -> None:
    """x[tap(k, p)] += col[k*ld + p] for every in-image tap (x must be zeroed by the caller)."""
    _walk(b, spec, x, col, scatter=True, ld=ld or spec.p, lanes=lanes)


def _walk(b: ir.IRBuilder, spec: ConvSpec, x: ir.Value, col: ir.Value, scatter: bool,
          ld: int, lanes: int = 8) -> None:
    """Visit every (k, p) of the column matrix stored at col[k*ld + p]."""
    (sh, sw), (ph, pw) = spec.stride, spec.pad
    for kh in range(spec.kh):
        oh_lo, oh_hi = _valid(spec.oh, spec.h, kh, sh, ph)
        for kw in range(spec.kw):
            ow_lo, ow_hi = _valid(spec.ow, spec.w, kw, sw, pw)
            with for_range(b, i64(0), i64(spec.c), name="ci", unroll=False) as ci:
                k = b.add(b.mul(ci, i64(spec.kh * spec.kw)), i64(kh * spec.kw + kw))
                row = gep(b, col, b.mul(k, i64(ld)))
                if not scatter:
                    _fill(b, row, 0, oh_lo * spec.ow)
                    _fill(b, row, oh_hi * spec.ow, spec.p)
                if oh_lo >= oh_hi or ow_lo >= ow_hi:
                    if not scatter:
                        _fill(b, row, oh_lo * spec.ow, oh_hi * spec.ow)
                    continue
                with for_range(b, i64(oh_lo), i64(oh_hi), name="oh", unroll=False) as oh:
                    ih = b.sub(b.add(b.mul(oh, i64(sh)), i64(kh)), i64(ph))
                    src = gep(b, x, b.add(b.mul(ci, i64(spec.h * spec.w)),
                                          b.add(b.mul(ih, i64(spec.w)), i64(kw - pw))))
                    dst = gep(b, row, b.mul(oh, i64(spec.ow)))
                    if not scatter:
                        _fill(b, dst, 0, ow_lo)
                        _fill(b, dst, ow_hi, spec.ow)

                    def tap(ow: ir.Value, src: ir.Value = src, dst: ir.Value = dst) -> None:
                        sp = gep(b, src, b.mul(ow, i64(sw)))
                        dp = gep(b, dst, ow)
                        if scatter:
                            b.store(b.fadd(b.load(sp, align=4), b.load(dp, align=4)), sp,
                                    align=4)
                        else:
                            b.store(b.load(sp, align=4), dp, align=4)

                    if sw == 1 and lanes > 1:
                        # The image row and the col row are both contiguous here: whole-vector
                        # copies (the compiler cannot prove x and col apart, so it would not
                        # vectorise the scalar form).
                        _vector_run(b, src, dst, ow_lo, ow_hi, lanes, scatter)
                    else:
                        _run(b, ow_lo, ow_hi, tap)
