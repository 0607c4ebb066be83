"""Codegen stage, GEMM micro-kernel: one MR x NR tile of C from packed A and B slivers.

Takes: a `Target` (vector lanes, FMA or not), the register block (MR rows, NR = nv * lanes cols),
the static `ldc`, the epilogue (bias along rows/cols, activation, residual) and the edge shape
(how many rows/cols of the tile are real).
Gives: `emit_microkernel(...)` -> an internal LLVM function
`uk(kc, ap, bp, c, row0, col0, flags, bias, resid)` computing
`acc = sum_k ap[k*MR + r] * bp[k*NR + j]` in MR*nv vector registers (accumulators live in phis, the
k loop unrolled by 4), then writing the tile: `flags & 1` adds the existing C, `flags & 2` (the last
K block) applies `C = act(acc + C_old + bias + residual)`. Also `emit_activation` (vector relu,
sigmoid, tanh with an inline exp, no libm calls).

Invariants: packed slivers are zero-padded, so the k loop never branches on edges; only the store
of an edge tile is partial (fewer rows; the last vector k-masked on AVX-512, lane by lane
elsewhere), so there is no scalar fallback for the arithmetic. A is read with scalar broadcasts,
B with full-width vector loads (aligned when packed); both can instead be read in place from an
unpacked operand (`a_direct`, `ldb`) when packing would cost as much as the product. The C tile is
prefetched before the k loop when it will be read.
"""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from .loops import (
    F32P,
    I32,
    I64,
    const_vec,
    fma_fn,
    gep,
    i64,
    lane_mask,
    load_vec,
    masked_load_fn,
    masked_store_fn,
    prefetch_fn,
    splat,
    store_vec,
    vec_type,
)
from .target import Target

ACTIVATIONS = (None, "relu", "sigmoid", "tanh")
UNROLL = 4


@dataclass(frozen=True)
class Epilogue:
    """What the last K block does to a tile: `C = act(acc + C_old + bias + residual)`, or with
    `residual_after`, `C = act(acc + C_old + bias) + residual`.

    bias_axis: "rows" (one value per row of C, i.e. bias[i]) or "cols" (bias[j]); None: no bias.
    residual: add a tensor laid out like C (same ldc). activation: None|relu|sigmoid|tanh.
    """

    bias_axis: str | None = None
    activation: str | None = None
    residual: bool = False
    residual_after: bool = False  # add the residual after the activation (x + f(x) blocks)

    def __post_init__(self) -> None:
        if self.bias_axis not in (None, "rows", "cols"):
            raise ValueError(f"bias_axis must be 'rows' or 'cols', got {self.bias_axis!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}")

    @property
    def trivial(self) -> bool:
        return self.bias_axis is None and self.activation is None and not self.residual


def _fmadd(b: ir.IRBuilder, fn: ir.Function, x: ir.Value, y: ir.Value, z: ir.Value) -> ir.Value:
    return b.call(fn, [x, y, z])


def emit_exp(b: ir.IRBuilder, x: ir.Value, lanes: int, fused: bool) -> ir.Value:
    """Vector exp(x) for f32, ~1 ulp on [-87, 88]: exp(x) = 2^n * p(r), n = round(x/ln 2).

    Rounding uses the 1.5*2^23 shifter (exact for |x/ln2| < 2^22, no SSE4.1 needed), and 2^n is
    built in the exponent bits, so no libm call is emitted on any target."""
    m = b.module
    fma = fma_fn(m, lanes, fused)
    c = lambda v: const_vec(lanes, v)  # noqa: E731
    lt = b.fcmp_ordered("<", x, c(-87.0))
    x = b.select(lt, c(-87.0), x)
    gt = b.fcmp_ordered(">", x, c(88.0))
    x = b.select(gt, c(88.0), x)
    shifter = c(12582912.0)
    t = _fmadd(b, fma, x, c(1.4426950408889634), shifter)
    n = b.fsub(t, shifter)
    r = _fmadd(b, fma, n, c(-0.693359375), x)
    r = _fmadd(b, fma, n, c(2.12194440e-4), r)
    p = c(1.9875691500e-4)
    for coef in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
                 5.0000001201e-1):
        p = _fmadd(b, fma, p, r, c(coef))
    r2 = b.fmul(r, r)
    p = _fmadd(b, fma, p, r2, b.fadd(r, c(1.0)))
    vi = ir.VectorType(I32, lanes)
    ni = b.fptosi(n, vi)
    bits = b.shl(b.add(ni, ir.Constant(vi, [127] * lanes)), ir.Constant(vi, [23] * lanes))
    return b.fmul(p, b.bitcast(bits, vec_type(lanes)))


def emit_activation(b: ir.IRBuilder, v: ir.Value, act: str | None, lanes: int,
                    fused: bool) -> ir.Value:
    """Apply an activation to a float vector (see ACTIVATIONS)."""
    if act is None:
        return v
    c = lambda x: const_vec(lanes, x)  # noqa: E731
    if act == "relu":
        return b.select(b.fcmp_ordered(">", v, c(0.0)), v, c(0.0))
    if act == "sigmoid":
        e = emit_exp(b, b.fsub(c(0.0), v), lanes, fused)
        return b.fdiv(c(1.0), b.fadd(c(1.0), e))
    if act == "tanh":
        # tanh(x) = 1 - 2 / (exp(2x) + 1): exact limits at +-inf, no overflow after clamping.
        e = emit_exp(b, b.fmul(v, c(2.0)), lanes, fused)
        return b.fsub(c(1.0), b.fdiv(c(2.0), b.fadd(e, c(1.0))))
    raise ValueError(f"unknown activation {act!r}")


ALL_STORES = frozenset((lc, la) for lc in (False, True) for la in (False, True))


def microkernel_name(target: Target, mr: int, nv: int, ldc: int, epi: Epilogue, rows: int,
                     cols: int, ldb: int | None = None,
                     a_direct: tuple[int, bool] | None = None,
                     stores: frozenset[tuple[bool, bool]] = ALL_STORES) -> str:
    tag = (f"{epi.bias_axis or 'n'}_{epi.activation or 'n'}_"
           f"{int(epi.residual) + int(epi.residual and epi.residual_after)}")
    tag += "_s" + "".join(str(2 * la + lc) for lc, la in sorted(stores))
    direct = f"_ldb{ldb}" if ldb else ""
    if a_direct:
        direct += f"_lda{a_direct[0]}{'t' if a_direct[1] else 'n'}"
    return (f"netc_uk_{target.name}_{mr}x{nv * target.lanes}_ldc{ldc}_{tag}_r{rows}c{cols}"
            f"{direct}")


def emit_microkernel(module: ir.Module, target: Target, mr: int, nv: int, ldc: int,
                     epi: Epilogue, rows: int, cols: int, ldb: int | None = None,
                     a_direct: tuple[int, bool] | None = None,
                     stores: frozenset[tuple[bool, bool]] = ALL_STORES) -> ir.Function:
    """The MR x (nv*lanes) micro-kernel writing a `rows` x `cols` tile (edges: rows<MR, cols<NR).

    `ldb`: None reads B from a packed sliver (rows NR floats apart, aligned); an int reads an
    unpacked row-major B directly, rows `ldb` floats apart (unaligned loads; lanes past the edge
    read neighbouring memory the caller guarantees exists and are never stored).
    `a_direct`: (lda, trans) reads an unpacked A in place instead of a packed sliver: element
    (r, k) at `ap[r*lda + k]`, or `ap[k*lda + r]` when transposed (worth it when each A element
    meets only one or two B slivers, so packing would cost as much as the arithmetic).
    Rows past `rows` are never loaded nor computed (they would never be stored). `stores`: the
    (load C?, last K block?) flag pairs callers may pass; only those store variants are emitted."""
    w = target.lanes
    nr = nv * w
    b_stride = ldb or nr
    b_align = 4 if ldb else 4 * w
    name = microkernel_name(target, mr, nv, ldc, epi, rows, cols, ldb, a_direct, stores)
    if name in module.globals:
        return module.globals[name]
    fnty = ir.FunctionType(ir.VoidType(), [I64, F32P, F32P, F32P, I64, I64, I32, F32P, F32P])
    fn = ir.Function(module, fnty, name=name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")  # kept whole so its assembly can be inspected and scheduled
    fn.attributes.add("nounwind")
    for a in fn.args[1:4]:
        a.add_attribute("noalias")
    kc, ap, bp, cp, row0, col0, flags, bias, resid = fn.args
    vt = vec_type(w)
    fma = fma_fn(module, w, target.has_fma)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    zero = ir.Constant(vt, [0.0] * w)
    if any(lc for lc, _ in stores) or epi.residual:
        # The tile of C (rows ldc apart, often a page apart) is read after the k loop: start
        # fetching it now so its misses overlap the arithmetic.
        pf = prefetch_fn(module)
        i8p = ir.IntType(8).as_pointer()
        base = b.add(b.mul(row0, i64(ldc)), col0)
        for r in range(rows):
            for off in sorted({0, min(cols, nr) - 1}):
                p = b.bitcast(gep(b, cp, b.add(base, i64(r * ldc + off))), i8p)
                b.call(pf, [p, ir.Constant(I32, 1), ir.Constant(I32, 3), ir.Constant(I32, 1)])

    def step(accs: list[ir.Value], k: ir.Value) -> list[ir.Value]:
        bvec = [load_vec(b, bp, b.add(b.mul(k, i64(b_stride)), i64(j * w)), w, align=b_align)
                for j in range(nv)]
        out = list(accs)
        for r in range(rows):
            if a_direct is None:
                idx = b.add(b.mul(k, i64(mr)), i64(r))
            elif a_direct[1]:
                idx = b.add(b.mul(k, i64(a_direct[0])), i64(r))
            else:
                idx = b.add(i64(r * a_direct[0]), k)
            av = splat(b, b.load(gep(b, ap, idx), align=4), w)
            for j in range(nv):
                out[r * nv + j] = b.call(fma, [av, bvec[j], accs[r * nv + j]])
        return out

    # Main loop: kc // UNROLL iterations with the body unrolled; accumulators carried in phis.
    kmain = b.mul(b.sdiv(kc, i64(UNROLL)), i64(UNROLL))
    accs = [zero] * (mr * nv)
    for stage, (lo, hi, unroll) in enumerate(((i64(0), kmain, UNROLL), (kmain, kc, 1))):
        pre = b.block
        body = b.append_basic_block(f"k{stage}.body")
        done = b.append_basic_block(f"k{stage}.done")
        b.cbranch(b.icmp_signed("<", lo, hi), body, done)
        b.position_at_end(body)
        k = b.phi(I64, name=f"k{stage}")
        k.add_incoming(lo, pre)
        phis = [b.phi(vt, name=f"acc{i}") for i in range(mr * nv)]
        for p, a in zip(phis, accs):
            p.add_incoming(a, pre)
        cur: list[ir.Value] = list(phis)
        for u in range(unroll):
            cur = step(cur, b.add(k, i64(u)) if u else k)
        knext = b.add(k, i64(unroll))
        k.add_incoming(knext, b.block)
        for p, a in zip(phis, cur):
            p.add_incoming(a, b.block)
        latch = b.block
        b.cbranch(b.icmp_signed("<", knext, hi), body, done)
        b.position_at_end(done)
        merged = [b.phi(vt) for _ in range(mr * nv)]
        for mphi, before, after in zip(merged, accs, cur):
            mphi.add_incoming(before, pre)
            mphi.add_incoming(after, latch)
        accs = merged

    _emit_store(b, module, target, mr, nv, ldc, epi, rows, cols, accs, cp, row0, col0, flags,
                bias, resid, stores)
    b.ret_void()
    return fn


def _emit_store(b: ir.IRBuilder, module: ir.Module, target: Target, mr: int, nv: int, ldc: int,
                epi: Epilogue, rows: int, cols: int, accs: list[ir.Value], cp: ir.Value,
                row0: ir.Value, col0: ir.Value, flags: ir.Value, bias: ir.Value,
                resid: ir.Value, stores: frozenset[tuple[bool, bool]]) -> None:
    """Write the tile: one straight-line variant per (load C?, last K block?) pair the caller can
    pass (`stores`), chosen by `flags`; pairs that emit the same code share a block."""
    w = target.lanes
    vt = vec_type(w)
    zero = ir.Constant(vt, [0.0] * w)
    # Partial vectors of edge tiles: AVX-512 has cheap lane masks; elsewhere masked moves are
    # slow (AVX2 vmaskmov is microcoded on some parts, SSE has none), so go lane by lane.
    masked = target.name == "avx512"
    base = b.add(b.mul(row0, i64(ldc)), col0)
    fn = b.function
    exit_bb = fn.append_basic_block("store.done")
    # Without an epilogue the last K block stores like any other.
    code = {v: (v[0], v[1] and not epi.trivial) for v in sorted(stores)}
    variants = sorted(set(code.values()))
    blocks = [fn.append_basic_block(f"store.{int(lc)}{int(la)}") for lc, la in variants]
    if len(variants) == 1:
        b.branch(blocks[0])
    else:
        sw = b.switch(b.and_(flags, ir.Constant(I32, 3)), exit_bb)
        for (load_c, last), key in code.items():
            sw.add_case(ir.Constant(I32, int(load_c) | (int(last) << 1)),
                        blocks[variants.index(key)])
    for (load_c, last), blk in zip(variants, blocks):
        b.position_at_end(blk)
        for r in range(rows):
            row_off = b.add(base, i64(r * ldc))
            rb = None
            if last and epi.bias_axis == "rows":
                rb = splat(b, b.load(gep(b, bias, b.add(row0, i64(r)))), w)
            for j in range(nv):
                valid = min(w, cols - j * w)
                if valid <= 0:
                    break
                off = b.add(row_off, i64(j * w))
                v = accs[r * nv + j]

                def load(ptr: ir.Value, offset: ir.Value, valid: int = valid) -> ir.Value:
                    if valid == w:
                        return load_vec(b, ptr, offset, w)
                    if masked:
                        p = b.bitcast(gep(b, ptr, offset), vt.as_pointer())
                        return b.call(masked_load_fn(module, w),
                                      [p, ir.Constant(I32, 4), lane_mask(w, valid), zero])
                    out = zero
                    for lane in range(valid):
                        x = b.load(gep(b, ptr, b.add(offset, i64(lane))), align=4)
                        out = b.insert_element(out, x, ir.Constant(I32, lane))
                    return out

                if load_c:
                    v = b.fadd(v, load(cp, off))
                if last:
                    if rb is not None:
                        v = b.fadd(v, rb)
                    elif epi.bias_axis == "cols":
                        v = b.fadd(v, load(bias, b.add(col0, i64(j * w))))
                    if epi.residual and not epi.residual_after:
                        v = b.fadd(v, load(resid, off))
                    v = emit_activation(b, v, epi.activation, w, target.has_fma)
                    if epi.residual and epi.residual_after:
                        v = b.fadd(v, load(resid, off))
                if valid == w:
                    store_vec(b, v, cp, off)
                elif masked:
                    p = b.bitcast(gep(b, cp, off), vt.as_pointer())
                    b.call(masked_store_fn(module, w),
                           [v, p, ir.Constant(I32, 4), lane_mask(w, valid)])
                else:
                    for lane in range(valid):
                        b.store(b.extract_element(v, ir.Constant(I32, lane)),
                                gep(b, cp, b.add(off, i64(lane))), align=4)
        b.branch(exit_bb)
    b.position_at_end(exit_bb)
