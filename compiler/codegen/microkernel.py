"""Codegen stage, GEMM micro-kernel: one MR x NR tile of C from packed A and B slivers.

Takes: a `Target` (vector lanes, FMA or not), the register block (MR rows, NR = nv * lanes cols),
the epilogue (bias along rows/cols, activation, residual), the store variants callers need and
how A and B are read (packed, or in place).
Gives: `emit_microkernel(...)` -> an internal LLVM function
`uk(kc, ap, bp, c, row0, col0, flags, bias, resid, ldc, rows, cols, lda, ldb)` computing
`acc = sum_k ap[k*MR + r] * bp[k*NR + j]` in MR*nv vector registers (accumulators live in phis, the
k loop unrolled by 4), then writing the tile: `flags & 1` adds the existing C, `flags & 2` (the last
K block) applies `C = act(acc + C_old + bias + residual)`; the activation is the primitive's
own elementwise body (lower_elementwise) at vector width, so a fused activation computes exactly
what the unfused kernel would (NaN included).

Why strides and edges are arguments: a variant baked per (ldc, lda/ldb, edge rows, edge cols)
made the micro-kernels ~half of a training step's LLVM IR (and of its compile time); the address
arithmetic they save is outside the k loop or strength-reduced in it, so one variant per
(block, epilogue, stores, operand reading) now serves every GEMM of a module (emitted once, by
name).

Invariants: packed slivers are zero-padded, so the k loop never branches on edges; only the store
of an edge tile is partial: a full tile (rows == MR, cols == NR, the hot path) stores whole
vectors, an edge tile spills the accumulators and stores `rows` rows with lane-masked vectors
(there is no scalar fallback for the arithmetic). A is read with scalar broadcasts, B with
full-width vector loads (aligned when packed); both can instead be read in place from an unpacked
operand (`a_direct`, `b_direct`) when packing would cost as much as the product. The C tile is
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
    for_range,
    gep,
    i64,
    load_first,
    load_vec,
    masked_load_fn,
    masked_store_fn,
    no_unroll_md,
    prefetch_fn,
    splat,
    store_first,
    store_vec,
    vec_type,
)
from .lower_elementwise import ELEMENTWISE
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
    # `C = scale * acc + residual` with the residual added in the FIRST K block (C not yet
    # written), not the last: the residual may then be C's own buffer (an optimizer update
    # `W - lr * dW` written over W). No bias or activation goes with it.
    scale: float | None = None
    residual_first: bool = False
    # `C = where(resid > mask_above, acc + C_old, 0)` in the last K block, the tensor laid out
    # like C being the comparison's operand, not an addend: the ReLU gradient of a dense layer,
    # dY·Wᵀ masked by the layer's pre-activation (mask_above = 0). Alone: no bias,
    # activation, residual or scale. C must not be in that tensor's buffer (plan_memory).
    mask_above: float | None = None

    def __post_init__(self) -> None:
        if self.bias_axis not in (None, "rows", "cols"):
            raise ValueError(f"bias_axis must be 'rows' or 'cols', got {self.bias_axis!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}")
        if self.residual_first and (self.bias_axis or self.activation or self.residual_after
                                    or not self.residual):
            raise ValueError("a first-block residual goes with no bias or activation")
        if self.mask_above is not None and (self.bias_axis or self.activation or self.residual
                                            or self.scale is not None):
            raise ValueError("a mask goes with no bias, activation, residual or scale")

    @property
    def reads_resid(self) -> bool:
        """Whether the tile reads the tensor laid out like C (a residual, or a mask's operand)."""
        return self.residual or self.mask_above is not None

    @property
    def tag(self) -> str:
        """Everything of the epilogue, for the names of the functions that apply it."""
        t = (f"{self.bias_axis or 'n'}_{self.activation or 'n'}_"
             f"{int(self.residual) + int(self.residual and self.residual_after)}")
        if self.residual_first:
            t += "f"
        if self.scale is not None:
            t += f"_x{float(self.scale).hex()}"
        if self.mask_above is not None:
            t += f"_m{float(self.mask_above).hex()}"
        return t

    @property
    def trivial(self) -> bool:
        return (self.bias_axis is None and self.activation is None and not self.residual
                and self.scale is None and self.mask_above is None)


ALL_STORES = frozenset((lc, la) for lc in (False, True) for la in (False, True))

# The micro-kernel's parameters, in order (see emit_microkernel).
UK_ARGS = ("kc", "ap", "bp", "c", "row0", "col0", "flags", "bias", "resid", "ldc", "rows", "cols",
           "lda", "ldb")


def microkernel_name(target: Target, mr: int, nv: int, epi: Epilogue,
                     b_direct: bool = False, a_direct: bool | None = None,
                     stores: frozenset[tuple[bool, bool]] = ALL_STORES,
                     rows_static: int | None = None, cols_static: int | None = None) -> str:
    """The variant's name: everything that is static in it (the register block, the epilogue,
    the store variants, how A and B are read). Strides and the tile's real size are arguments,
    so GEMMs of one module with other shapes share it."""
    tag = epi.tag + "_s" + "".join(str(2 * la + lc) for lc, la in sorted(stores))
    direct = "_bd" if b_direct else ""
    if a_direct is not None:
        direct += f"_ad{'t' if a_direct else 'n'}"
    direct += f"_r{rows_static}" if rows_static else ""
    direct += f"_c{cols_static}" if cols_static else ""
    return f"netc_uk_{target.name}_{mr}x{nv * target.lanes}_{tag}{direct}"


def emit_microkernel(module: ir.Module, target: Target, mr: int, nv: int, epi: Epilogue,
                     b_direct: bool = False, a_direct: bool | None = None,
                     stores: frozenset[tuple[bool, bool]] = ALL_STORES,
                     rows_static: int | None = None, cols_static: int | None = None
                     ) -> ir.Function:
    """The MR x NR (NR = nv*lanes) micro-kernel: `uk(kc, ap, bp, c, row0, col0, flags, bias,
    resid, ldc, rows, cols, lda, ldb)` writes the `rows` x `cols` tile of C at (row0, col0), C's
    rows `ldc` floats apart (all i64 but `flags`, i32).

    `b_direct`: False reads B from a packed sliver (rows NR floats apart, aligned); True reads an
    unpacked row-major B in place, rows `ldb` floats apart (unaligned loads; lanes past the edge
    read neighbouring memory the caller guarantees exists and are never stored).
    `a_direct`: None reads A from a packed MR-row sliver (zero-padded past `rows`); False/True
    read an unpacked A in place, element (r, k) at `ap[r*lda + k]` / `ap[k*lda + r]` (transposed):
    worth it when each A element meets only one or two B slivers; an edge tile then reads the MR
    rows ending at its last real row (the caller guarantees M >= MR: never out of bounds).
    `stores`: the (load C?, last K block?) flag pairs callers may pass; only those store variants
    are emitted. `rows_static` (< MR): a kernel for the last row tile of a GEMM whose M is not a
    multiple of MR, computing only that many rows (`rows` must equal it; the shift above is then
    not needed); computing MR rows there cost up to 12% on GEMMs of a few row tiles.
    `cols_static` (< NR): a kernel for the last column tile of a GEMM whose N is not a multiple
    of NR: its full tiles (rows == MR, cols == cols_static) store the partial vector with plain
    moves of 4, 2 and 1 lanes. Through the edge path, every tile of a 10-column product (the
    logits of 10 classes) spilled its accumulators and took AVX2's slow masked moves.
    A full tile (rows == MR, cols == NR) stores whole vectors; an edge tile takes a compact path
    with lane-masked loads and stores, so one function serves every tile of every shape."""
    w = target.lanes
    nr = nv * w
    name = microkernel_name(target, mr, nv, epi, b_direct, a_direct, stores, rows_static,
                            cols_static)
    nrows = rows_static or mr
    if name in module.globals:
        return module.globals[name]
    fnty = ir.FunctionType(ir.VoidType(),
                           [I64, F32P, F32P, F32P, I64, I64, I32, F32P, F32P, I64, I64, I64, I64,
                            I64])
    fn = ir.Function(module, fnty, name=name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")  # kept whole so its assembly can be inspected and scheduled
    fn.attributes.add("nounwind")
    for arg, arg_name in zip(fn.args, UK_ARGS):
        arg.name = arg_name
    for a in fn.args[1:4]:
        a.add_attribute("noalias")
    kc, ap, bp, cp, row0, col0, flags, bias, resid, ldc, rows, cols, lda, ldb = fn.args
    vt = vec_type(w)
    fma = fma_fn(module, w, target.has_fma)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    zero = ir.Constant(vt, [0.0] * w)
    base = b.add(b.mul(row0, ldc), col0)
    if any(lc for lc, _ in stores) or epi.reads_resid:
        # The tile of C (rows ldc apart, often a page apart) is read after the k loop: start
        # fetching it now so its misses overlap the arithmetic (a prefetch never faults, so
        # the rows and columns past an edge tile's end are harmless).
        pf = prefetch_fn(module)
        i8p = ir.IntType(8).as_pointer()
        for r in range(nrows):
            row = b.add(base, b.mul(i64(r), ldc))
            for off in (0, nr - 1):
                p = b.bitcast(gep(b, cp, b.add(row, i64(off))), i8p)
                b.call(pf, [p, ir.Constant(I32, 1), ir.Constant(I32, 3), ir.Constant(I32, 1)])
    shift = i64(0)
    if a_direct is not None and not rows_static:
        # An edge tile of an in-place A reads the MR rows ending at its last real row (the
        # caller guarantees M >= MR), so the k loop never reads past A and needs no per-row
        # clamp; its results sit `shift` rows down the accumulators.
        shift = b.sub(i64(mr), rows)
        ap = gep(b, ap, b.sub(i64(0), shift if a_direct else b.mul(shift, lda)))

    # Addresses in the k loop: one base per operand and iteration (k times the step between
    # consecutive k), every element at a loop-invariant offset from it, so the loop passes (LSR,
    # instcombine) have few induction-variable users to rewrite.
    a_step = i64(mr) if a_direct is None else lda if a_direct else i64(1)
    b_step = ldb if b_direct else i64(nr)
    u_a = [b.mul(i64(u), a_step) for u in range(UNROLL)]  # k + u, relative to k
    u_b = [b.mul(i64(u), b_step) for u in range(UNROLL)]
    r_a = [i64(r) if a_direct is not False else b.mul(i64(r), lda) for r in range(nrows)]

    def step(accs: list[ir.Value], a_base: ir.Value, b_base: ir.Value, u: int
             ) -> list[ir.Value]:
        bvec = [load_vec(b, b_base, b.add(u_b[u], i64(j * w)), w,
                         align=4 if b_direct else 4 * w) for j in range(nv)]
        out = list(accs)
        for r in range(nrows):
            av = splat(b, b.load(gep(b, a_base, b.add(u_a[u], r_a[r])), align=4), w)
            for j in range(nv):
                out[r * nv + j] = b.call(fma, [av, bvec[j], accs[r * nv + j]])
        return out

    # Main loop: kc // UNROLL iterations with the body unrolled; accumulators carried in phis.
    kmain = b.mul(b.sdiv(kc, i64(UNROLL)), i64(UNROLL))
    accs = [zero] * (nrows * nv)
    for stage, (lo, hi, unroll) in enumerate(((i64(0), kmain, UNROLL), (kmain, kc, 1))):
        pre = b.block
        body = b.append_basic_block(f"k{stage}.body")
        done = b.append_basic_block(f"k{stage}.done")
        b.cbranch(b.icmp_signed("<", lo, hi), body, done)
        b.position_at_end(body)
        k = b.phi(I64, name=f"k{stage}")
        k.add_incoming(lo, pre)
        phis = [b.phi(vt, name=f"acc{i}") for i in range(nrows * nv)]
        for p, a in zip(phis, accs):
            p.add_incoming(a, pre)
        cur: list[ir.Value] = list(phis)
        a_base, b_base = gep(b, ap, b.mul(k, a_step)), gep(b, bp, b.mul(k, b_step))
        for u in range(unroll):
            cur = step(cur, a_base, b_base, u)
        knext = b.add(k, i64(unroll))
        k.add_incoming(knext, b.block)
        for p, a in zip(phis, cur):
            p.add_incoming(a, b.block)
        latch = b.block
        br = b.cbranch(b.icmp_signed("<", knext, hi), body, done)
        br.set_metadata("llvm.loop", no_unroll_md(module, vectorize=False))  # vectorized already
        b.position_at_end(done)
        merged = [b.phi(vt) for _ in range(nrows * nv)]
        for mphi, before, after in zip(merged, accs, cur):
            mphi.add_incoming(before, pre)
            mphi.add_incoming(after, latch)
        accs = merged

    st = _Store(b, module, target, epi, cp, base, ldc, row0, col0, bias, resid)
    ncols = cols_static or nr
    full = b.and_(b.icmp_signed("==", rows, i64(nrows)), b.icmp_signed("==", cols, i64(ncols)))
    full_bb = fn.append_basic_block("tile.full")
    edge_bb = fn.append_basic_block("tile.edge")
    exit_bb = fn.append_basic_block("tile.done")
    br = b.cbranch(full, full_bb, edge_bb)
    br.set_weights([64, 1])  # full tiles are the hot path
    b.position_at_end(full_bb)

    def full_rows(load_c: bool, last: bool) -> None:
        for r in range(nrows):
            rb = st.row_bias(i64(r), last)
            for j in range(nv):
                lanes = min(w, ncols - j * w)  # static: whole, part of a vector or none
                if lanes > 0:
                    st.vector(accs[r * nv + j], i64(r), i64(j * w),
                              None if lanes == w else lanes, load_c, last, rb)

    st.variants(flags, stores, full_rows, exit_bb)

    # Edge tile: the accumulators go to a stack tile; rows and vectors are loops (compact code
    # for the rare case), the columns of a vector past the edge are masked.
    b.position_at_end(edge_bb)
    with b.goto_entry_block():
        tile = b.alloca(vt, size=ir.Constant(I32, nrows * nv), name="tile")
    for i, v in enumerate(accs):
        b.store(v, gep(b, tile, i64(i)))
    nvec = b.sdiv(b.add(cols, i64(w - 1)), i64(w))

    def edge_rows(load_c: bool, last: bool) -> None:
        with for_range(b, i64(0), rows, name="er", unroll=False, vectorize=False) as r:
            first = b.mul(b.add(r, shift), i64(nv))
            rb = st.row_bias(r, last)
            with for_range(b, i64(0), nvec, name="ej", unroll=False,
                           vectorize=False) as j:
                v = b.load(gep(b, tile, b.add(first, j)))
                col = b.mul(j, i64(w))
                st.vector(v, r, col, b.sub(cols, col), load_c, last, rb)

    st.variants(flags, stores, edge_rows, exit_bb)
    b.position_at_end(exit_bb)
    b.ret_void()
    return fn


class _Store:
    """Writes rows of a tile: `C = acc (+ C_old)` or, in the last K block, the epilogue."""

    def __init__(self, b: ir.IRBuilder, module: ir.Module, target: Target, epi: Epilogue,
                 cp: ir.Value, base: ir.Value, ldc: ir.Value, row0: ir.Value, col0: ir.Value,
                 bias: ir.Value, resid: ir.Value):
        self.b, self.module, self.target, self.epi = b, module, target, epi
        self.cp, self.base, self.ldc, self.row0, self.col0 = cp, base, ldc, row0, col0
        self.bias, self.resid = bias, resid

    def variants(self, flags: ir.Value, stores: frozenset[tuple[bool, bool]], emit,
                 exit_bb: ir.Block) -> None:
        """One straight-line variant per (load C?, last K block?) pair the caller can pass,
        chosen by `flags`; pairs that emit the same code share a block. `emit(load_c, last)`
        writes the rows; every variant then branches to `exit_bb`."""
        b = self.b
        fn = b.function
        # Without an epilogue the last K block stores like any other.
        code = {v: (v[0], v[1] and not self.epi.trivial) for v in sorted(stores)}
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
            emit(load_c, last)
            b.branch(exit_bb)

    def row_bias(self, r: ir.Value, last: bool) -> ir.Value | None:
        """Row `r`'s bias broadcast (a per-row bias in the last K block), else None."""
        if not (last and self.epi.bias_axis == "rows"):
            return None
        return splat(self.b, self.b.load(gep(self.b, self.bias, self.b.add(self.row0, r))),
                     self.target.lanes)

    def vector(self, v: ir.Value, r: ir.Value, col: ir.Value, left: ir.Value | None,
               load_c: bool, last: bool, rb: ir.Value | None) -> None:
        """Store the vector `v` of the tile at row `r`, column `col`. `left` (an edge tile's
        real lanes of it: <= 0 none, >= lanes all) limits the columns; None stores it whole."""
        b, epi = self.b, self.epi
        off = b.add(b.add(self.base, b.mul(r, self.ldc)), col)
        if epi.scale is not None:  # every block: scale * (acc_1 + acc_2 ...) block by block
            v = b.fmul(v, const_vec(self.target.lanes, epi.scale))
        if load_c:
            v = b.fadd(v, self.load(self.cp, off, left))
        elif epi.residual_first:  # the first K block: C is not written yet
            v = b.fadd(v, self.load(self.resid, off, left))
        if last and not epi.residual_first:
            if rb is not None:
                v = b.fadd(v, rb)
            elif epi.bias_axis == "cols":
                v = b.fadd(v, self.load(self.bias, b.add(self.col0, col), left))
            if epi.residual and not epi.residual_after:
                v = b.fadd(v, self.load(self.resid, off, left))
            if epi.activation is not None:  # the primitive's own body, at vector width
                v = ELEMENTWISE[epi.activation](b, [v], {}, ["f32"], "f32")
            if epi.residual and epi.residual_after:
                v = b.fadd(v, self.load(self.resid, off, left))
            if epi.mask_above is not None:  # where(z > t, v, 0): a NaN z gives 0, as gt does
                z = self.load(self.resid, off, left)
                keep = b.fcmp_ordered(">", z, const_vec(self.target.lanes, epi.mask_above))
                v = b.select(keep, v, ir.Constant(v.type, [0.0] * self.target.lanes))
        self.store(v, off, left)

    # Partial vectors of edge tiles are lane-masked moves (llvm.masked.load/store). AVX-512 masks
    # are cheap; AVX2's vmaskmov is slow on some parts (microcoded on older AMD), so there a
    # vector that is whole (all but the last of a row) takes a plain move. (A lane-by-lane copy
    # runs about as fast but costs ~3x the compile time of the whole micro-kernel.)

    def _lane_mask(self, left: ir.Value) -> ir.Value:
        w = self.target.lanes
        b = self.b
        vt = ir.VectorType(I64, w)
        lv = b.insert_element(ir.Constant(vt, ir.Undefined), left, ir.Constant(I32, 0))
        lv = b.shuffle_vector(lv, ir.Constant(vt, ir.Undefined),
                              ir.Constant(ir.VectorType(I32, w), [0] * w))
        return b.icmp_signed("<", ir.Constant(vt, list(range(w))), lv)

    def _masked_load(self, ptr: ir.Value, off: ir.Value, left: ir.Value) -> ir.Value:
        b, w = self.b, self.target.lanes
        p = b.bitcast(gep(b, ptr, off), vec_type(w).as_pointer())
        return b.call(masked_load_fn(self.module, w),
                      [p, ir.Constant(I32, 4), self._lane_mask(left), const_vec(w, 0.0)])

    def _masked_store(self, v: ir.Value, off: ir.Value, left: ir.Value) -> None:
        b, w = self.b, self.target.lanes
        p = b.bitcast(gep(b, self.cp, off), vec_type(w).as_pointer())
        b.call(masked_store_fn(self.module, w), [v, p, ir.Constant(I32, 4), self._lane_mask(left)])

    def load(self, ptr: ir.Value, off: ir.Value, left: ir.Value | int | None) -> ir.Value:
        b, w = self.b, self.target.lanes
        if left is None:
            return load_vec(b, ptr, off, w)
        if isinstance(left, int):  # the first `left` lanes, static: plain moves, rest zero
            return load_first(b, ptr, off, left, w)
        if self.target.name == "avx512":
            return self._masked_load(ptr, off, left)
        with b.if_else(b.icmp_signed(">=", left, i64(w)), likely=True) as (then, other):
            with then:
                whole, whole_bb = load_vec(b, ptr, off, w), b.block
            with other:
                part, part_bb = self._masked_load(ptr, off, left), b.block
        phi = b.phi(vec_type(w))
        phi.add_incoming(whole, whole_bb)
        phi.add_incoming(part, part_bb)
        return phi

    def store(self, v: ir.Value, off: ir.Value, left: ir.Value | int | None) -> None:
        b, w = self.b, self.target.lanes
        if left is None:
            store_vec(b, v, self.cp, off)
        elif isinstance(left, int):  # the first `left` lanes, static: plain moves
            store_first(b, v, self.cp, off, left)
        elif self.target.name == "avx512":
            self._masked_store(v, off, left)
        else:
            with b.if_else(b.icmp_signed(">=", left, i64(w)), likely=True) as (then, other):
                with then:
                    store_vec(b, v, self.cp, off)
                with other:
                    self._masked_store(v, off, left)
