"""Codegen stage, GEMM generator: a BLIS-style C (+)= op(A)·op(B) specialised for static shapes.

Takes: a `GemmSpec` (M, N, K, trans_a, trans_b, accumulate, lda/ldb/ldc, epilogue, prologue mask)
and a `Target`. Gives: `emit_gemm(module, spec, target)` -> `GemmKernel` (the LLVM function
`void f(i32 tid, i32 nt, A, B, C, bias, residual, mask, scratch)` added to `module`, and the scratch
bytes it needs per thread), and `emit_gemm_tiles`, the blocked loop nest other emitters (conv)
call on their own operand sources.

Algorithm (BLIS): for each NC block of columns, each KC block of K: pack B into NR-column slivers;
for each MC block of rows: pack A into MR-row slivers (the prologue mask is applied here); run the
MR x NR register-blocked micro-kernel over the block. The last K block applies the epilogue
`C = act(C_old? + A·B + bias + residual)` while the tile is still in registers (residual before
the activation, as in a ResNet block). When N spans at most two B slivers (and M has at least
MR rows), A is read in place (packing it would cost as much as the product). Blocks are balanced
so no block is a sliver. Every tile of every GEMM of a module calls one shared micro-kernel per
(epilogue, store variants, operand reading): strides and the tile's real size are arguments.

Invariants: threads split C by whole slivers along one dimension (chosen from the static shape),
so every element of C is produced by exactly one thread with a fixed K order: the result is
bitwise identical across runs *and* across thread counts. Scratch is `nt * scratch_per_thread`
bytes, 64-byte aligned; the kernel never allocates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llvmlite import ir

from .barrier import call_barrier
from .claim import for_claimed
from .loops import F32P, I32, I64, for_range, gep, i64, imin, round_up
from .microkernel import Epilogue, emit_microkernel
from .packing import Dense, Source, pack_block
from .target import Target

ROW_WASTE = 0.05  # see emit_gemm_tiles: when the last row tile gets a micro-kernel of its own


@dataclass(frozen=True)
class Blocking:
    """Register block (mr x nv vectors of the target's lanes) and cache blocks mc/kc/nc."""

    mr: int
    nv: int
    nr: int
    mc: int
    kc: int
    nc: int

    @property
    def a_floats(self) -> int:
        """Packed-A buffer size, rounded so the B buffer after it stays 64-byte aligned."""
        return round_up(self.mc * self.kc, 16)

    @property
    def scratch_floats(self) -> int:
        return self.a_floats + self.kc * self.nc


def register_block(target: Target) -> tuple[int, int]:
    """(MR, vectors per row): MR*nv accumulators + nv B vectors + 1 broadcast <= registers."""
    if target.name == "avx512":
        return 14, 2  # 28 zmm accumulators, 2 for B, 1 broadcast (embedded broadcast frees it)
    if target.name == "avx2":
        return 6, 2  # 12 ymm accumulators + 2 B + 1 broadcast = 15 of 16
    return 4, 2  # portable: 8 xmm accumulators, <4 x float>


def choose_blocking(target: Target, m: int, n: int, k: int) -> Blocking:
    """Cache blocks from the target's caches, balanced so the last block is not a sliver.

    KC: an A sliver plus a B sliver (KC x (MR+NR) floats) use ~3/4 of L1. MC: the packed A block
    (MC x KC) uses ~1/2 of L2. NC: the packed B panel (KC x NC) uses ~1/2 of a per-core share of L3.
    """
    mr, nv = register_block(target)
    nr = nv * target.lanes
    kc_max = max(64, (int(target.l1d * 0.75) // ((mr + nr) * 4)) // 16 * 16)
    kc = max(1, -(-k // -(-k // kc_max)))
    mc_max = max(mr, (target.l2 // 2 // (kc * 4)) // mr * mr)
    mc = min(round_up(-(-m // -(-m // mc_max)), mr), round_up(m, mr))
    nc_max = max(nr, min(4096, (min(target.l3, 4 << 20) // 2 // (kc * 4)) // nr * nr))
    nc = min(round_up(-(-n // -(-n // nc_max)), nr), round_up(n, nr))
    return Blocking(mr, nv, nr, mc, kc, nc)


@dataclass(frozen=True)
class GemmSpec:
    """A GEMM fixed at compile time. op(A) is M x K, op(B) is K x N, C is M x N (row-major).

    A is stored M x K (K x M if trans_a) with row stride lda; B stored K x N (N x K if trans_b)
    with row stride ldb; C (and residual) with row stride ldc. A `mask` (prologue) has A's stored
    layout and multiplies A elementwise before the product.
    """

    m: int
    n: int
    k: int
    trans_a: bool = False
    trans_b: bool = False
    accumulate: bool = False
    lda: int | None = None
    ldb: int | None = None
    ldc: int | None = None
    epilogue: Epilogue = field(default_factory=Epilogue)
    mask: bool = False

    def __post_init__(self) -> None:
        if min(self.m, self.n, self.k) < 1:
            raise ValueError(f"GEMM sizes must be >= 1, got M={self.m} N={self.n} K={self.k}")
        for name, ld, need in (("lda", self.lda, self.m if self.trans_a else self.k),
                               ("ldb", self.ldb, self.k if self.trans_b else self.n),
                               ("ldc", self.ldc, self.n)):
            if ld is not None and ld < need:
                raise ValueError(f"{name}={ld} is smaller than the row length {need}")

    @property
    def lda_(self) -> int:
        return self.lda or (self.m if self.trans_a else self.k)

    @property
    def ldb_(self) -> int:
        return self.ldb or (self.k if self.trans_b else self.n)

    @property
    def ldc_(self) -> int:
        return self.ldc or self.n

    def name(self, target: Target) -> str:
        return (f"netc_gemm_{target.name}_{self.m}x{self.n}x{self.k}_t{int(self.trans_a)}"
                f"{int(self.trans_b)}_acc{int(self.accumulate)}_ld{self.lda_}_{self.ldb_}_"
                f"{self.ldc_}_e{self.epilogue.tag}_m{int(self.mask)}")


@dataclass(frozen=True)
class GemmKernel:
    fn: ir.Function
    scratch_per_thread: int  # bytes, a multiple of 64
    blocking: Blocking
    split: str  # "rows" | "cols": the dimension threads divide
    max_threads: int  # slivers along the split dimension: more threads would idle
    claims: bool = False  # takes a claim state before the scratch (see emit_gemm)


MIN_SPLIT_SLIVERS = 4  # slivers a dimension needs to be divided for a cheaper shared operand


def split_dim(blk: Blocking, spec: GemmSpec) -> str:
    """Which dimension of C threads divide. A thread dividing rows reads all of B and its own
    rows of A, one dividing columns all of A and its own columns of B; what it packs of the
    operand it reads whole does not shrink with more threads. So threads divide the dimension
    that leaves the cheaper packing (two threads' shares; an operand read in place costs
    nothing), when it has at least MIN_SPLIT_SLIVERS slivers; else the one with more slivers
    (ties: columns). MLP's 128x256x512 product divided rows: each thread packed all of its
    512x256 weight."""
    rows, cols = -(-spec.m // blk.mr), -(-spec.n // blk.nr)
    a = 0 if use_a_direct(blk, spec) else spec.m
    b = 0 if use_b_direct(blk, spec) else spec.n
    cheaper = "rows" if b + a / 2 < a + b / 2 else "cols"
    if (rows if cheaper == "rows" else cols) >= MIN_SPLIT_SLIVERS:
        return cheaper
    return "rows" if rows > cols else "cols"


def thread_range(b: ir.IRBuilder, tid: ir.Value, nt: ir.Value, total: int,
                 unit: int) -> tuple[ir.Value, ir.Value]:
    """[lo, hi) of `total` for thread `tid` of `nt`, split in whole `unit`s: a pure function of
    (tid, nt), so the partition never depends on timing."""
    units = -(-total // unit)
    t = b.sext(tid, I64)
    n = b.sext(nt, I64)
    lo = b.mul(b.sdiv(b.mul(t, i64(units)), n), i64(unit))
    hi = b.mul(b.sdiv(b.mul(b.add(t, i64(1)), i64(units)), n), i64(unit))
    lo = imin(b, lo, i64(total))
    hi = imin(b, hi, i64(total))
    return lo, hi


def emit_gemm_tiles(b: ir.IRBuilder, target: Target, blk: Blocking, m: int, n: int, k: int,
                    a_src: Source, b_src: Source, c: ir.Value, ldc: int, epi: Epilogue,
                    bias: ir.Value, resid: ir.Value, load_c: ir.Value | bool,
                    rows: tuple[ir.Value, ir.Value], cols: tuple[ir.Value, ir.Value],
                    scratch: ir.Value, b_direct: bool = False, a_direct: bool = False,
                    a_whole: ir.Value | None = None, b_whole: ir.Value | None = None,
                    k_block: ir.Value | None = None) -> None:
    """The blocked loop nest for C[rows, cols] (+)= A[rows, :]·B[:, cols] with epilogue.

    `load_c` (Python bool or i1): whether the first K block adds to the existing C. `scratch` is
    this thread's packing buffer (blk.scratch_floats floats, 64-byte aligned). `b_direct`: B is a
    row-major `Dense` the micro-kernel reads in place (no B packing pass); the caller guarantees
    NR - 1 readable floats past the end of B's last row. `a_direct`: A (a `Dense` without mask,
    at least MR rows) is read in place, unpacked. `a_whole` / `b_whole`: all of A / B already
    packed there by `pack_whole` (e.g. conv weights packed once for every image, or the operand
    every work item of a claimed GEMM reads); its blocks are not packed again. `k_block`: only
    the K block starting there (a multiple of KC), and `a_whole` / `b_whole` then hold only
    that block (packed at its start as `pack_whole` would).
    """
    module = b.module
    mr, nr = blk.mr, blk.nr
    lda = ldb = i64(0)
    if b_direct:
        assert isinstance(b_src, Dense) and not b_src.outer_major and b_src.mask is None
        ldb = i64(b_src.ld)
    a_dir = None
    if a_direct:
        assert isinstance(a_src, Dense) and a_src.mask is None and a_whole is None and m >= mr
        a_dir = not a_src.outer_major
        lda = i64(a_src.ld)
    ap = scratch
    bp = gep(b, scratch, i64(blk.a_floats))
    m_pad, n_pad = round_up(m, mr), round_up(n, nr)
    # The store variants the flags below can select: a single K block is always the last one;
    # blocks after the first always add to C.
    first_lc = {load_c} if isinstance(load_c, bool) else {False, True}
    if k <= blk.kc:
        stores = frozenset((lc, True) for lc in first_lc)
    else:
        stores = frozenset({(lc, False) for lc in first_lc} | {(True, False), (True, True)})
    kernel = emit_microkernel(module, target, mr, blk.nv, epi, b_direct, a_dir, stores)
    # The last row tile of an M that is not a multiple of MR: the shared kernel computes MR rows
    # there (stores the real ones); when those extra rows are more than 5% of M (small M, e.g.
    # conv channels), a kernel of its own computes only the real rows.
    waste = (mr - m % mr) % mr
    row_edge = emit_microkernel(module, target, mr, blk.nv, epi, b_direct, a_dir, stores,
                                m % mr) if waste > ROW_WASTE * m else None
    # The last column tile of a narrow N (under 2 NR, not a multiple of NR: half its tiles or
    # more are that tile, e.g. 10 classes) gets a kernel of its own whose full tiles store the
    # partial vector with plain moves (see emit_microkernel). A wider N keeps the shared
    # kernel's edge path: one more variant per N would cost compile time for a few tiles.
    col_edge = emit_microkernel(module, target, mr, blk.nv, epi, b_direct, a_dir, stores,
                                cols_static=n % nr) if n % nr and n < 2 * nr else None
    if isinstance(load_c, bool):
        load_c = ir.Constant(ir.IntType(1), int(load_c))
    load_c32 = b.zext(load_c, I32)
    (m0, m1), (n0, n1) = rows, cols
    with for_range(b, n0, n1, blk.nc, name="jc", unroll=False) as jc:
        jend = b.add(jc, i64(blk.nc))
        jend = imin(b, jend, n1)
        k0 = i64(0) if k_block is None else k_block
        k1 = i64(k) if k_block is None else b.add(k_block, i64(1))
        with for_range(b, k0, k1, blk.kc, name="pc", unroll=False) as pc:
            kc_end = imin(b, b.add(pc, i64(blk.kc)), i64(k))
            kc = b.sub(kc_end, pc)
            first = b.icmp_signed("==", pc, i64(0))
            flags = b.select(first, load_c32, ir.Constant(I32, 1))
            last = b.icmp_signed("==", kc_end, i64(k))
            flags = b.or_(flags, b.shl(b.zext(last, I32), ir.Constant(I32, 1)))
            b_blk = bp
            if b_whole is not None:
                b_blk = _whole_block(b, b_whole, b.sub(pc, k0), n_pad, jc, kc)
            elif not b_direct:
                pack_block(b, b_src, bp, jc, jend, n, nr, pc, kc)
            with for_range(b, m0, m1, blk.mc, name="ic", unroll=False) as ic:
                iend = b.add(ic, i64(blk.mc))
                iend = imin(b, iend, m1)
                a_blk = ap
                if a_whole is not None:
                    a_blk = _whole_block(b, a_whole, b.sub(pc, k0), m_pad, ic, kc)
                elif not a_direct:
                    pack_block(b, a_src, ap, ic, iend, m, mr, pc, kc)
                with for_range(b, jc, jend, nr, name="jr", unroll=False) as jr:
                    if not b_direct:
                        bsl = gep(b, b_blk, b.mul(b.sdiv(b.sub(jr, jc), i64(nr)),
                                                  b.mul(kc, i64(nr))))
                    else:
                        bsl = gep(b, b_src.ptr, b.add(b.mul(pc, ldb), jr))
                    ncols = _clamp(b, b.sub(i64(n), jr), nr)
                    with for_range(b, ic, iend, mr, name="ir", unroll=False) as ir_:
                        if a_dir is None:
                            asl = gep(b, a_blk, b.mul(b.sdiv(b.sub(ir_, ic), i64(mr)),
                                                      b.mul(kc, i64(mr))))
                        elif a_dir:  # stored K x M: element (i, k) at k*lda + i
                            asl = gep(b, a_src.ptr, b.add(b.mul(pc, lda), ir_))
                        else:
                            asl = gep(b, a_src.ptr, b.add(b.mul(ir_, lda), pc))
                        args = [kc, asl, bsl, c, ir_, jr, flags, bias, resid, i64(ldc)]
                        nrows = _clamp(b, b.sub(i64(m), ir_), mr)
                        if col_edge is None:
                            _call_rows(b, kernel, row_edge, args, ir_, m, mr, ncols, lda, ldb)
                        else:
                            last_col = b.icmp_signed(">", b.add(jr, i64(nr)), i64(n))
                            with b.if_else(last_col) as (then, other):
                                with then:
                                    b.call(col_edge, [*args, nrows, ncols, lda, ldb])
                                with other:
                                    _call_rows(b, kernel, row_edge, args, ir_, m, mr, ncols,
                                               lda, ldb)


def _call_rows(b: ir.IRBuilder, kernel: ir.Function, row_edge: ir.Function | None, args: list,
               ir_: ir.Value, m: int, mr: int, ncols: ir.Value, lda: ir.Value, ldb: ir.Value
               ) -> None:
    """The micro-kernel call of the row tile at `ir_`: the last row tile's own kernel when
    there is one."""
    if row_edge is None:
        b.call(kernel, [*args, _clamp(b, b.sub(i64(m), ir_), mr), ncols, lda, ldb])
        return
    last_rows = b.icmp_signed(">", b.add(ir_, i64(mr)), i64(m))
    with b.if_else(last_rows, likely=False) as (then, other):
        with then:
            b.call(row_edge, [*args, i64(m % mr), ncols, lda, ldb])
        with other:
            b.call(kernel, [*args, i64(mr), ncols, lda, ldb])


def _clamp(b: ir.IRBuilder, left: ir.Value, width: int) -> ir.Value:
    """min(left, width): the real rows/cols of a tile that starts `left` before the end."""
    return imin(b, left, i64(width))


def a_fits_one_block(blk: Blocking, m: int, k: int) -> bool:
    """Whether all of an M x K operand A is one packed block (then it fits the A buffer)."""
    return k <= blk.kc and m <= blk.mc


def whole_floats(total: int, k: int, width: int) -> int:
    """Floats of an operand (`total` outer indices, K inner) packed whole by `pack_whole`."""
    return round_up(total, width) * k


def pack_whole(b: ir.IRBuilder, blk: Blocking, src: Source, total: int, k: int, width: int,
               dst: ir.Value) -> None:
    """Pack all of an operand (A: total = M, width = MR; B: total = N, width = NR) into `dst`,
    K block after K block: the block of outer index o0 and K block pc is at
    dst + pc * round_up(total, width) + o0 * kc, as pack_block lays out one block."""
    pad = round_up(total, width)
    with for_range(b, i64(0), i64(k), blk.kc, name="wk", unroll=False) as pc:
        kc = b.sub(imin(b, b.add(pc, i64(blk.kc)), i64(k)), pc)
        pack_block(b, src, gep(b, dst, b.mul(pc, i64(pad))), i64(0), i64(total), total, width,
                   pc, kc)


def _whole_block(b: ir.IRBuilder, whole: ir.Value, pc: ir.Value, pad: int, o0: ir.Value,
                 kc: ir.Value) -> ir.Value:
    """The block (o0, pc) of an operand packed by `pack_whole`."""
    return gep(b, whole, b.add(b.mul(pc, i64(pad)), b.mul(o0, kc)))


B_DIRECT_BYTES = 32 * 1024  # a row-major B this small is read in place (an L1 data cache)


def use_b_direct(blk: Blocking, spec: GemmSpec) -> bool:
    """Read B unpacked when it is row-major, whole slivers wide (N a multiple of NR: nothing is
    read past a row) and small enough to stay in the L1 cache: each k of a sliver is then a
    cache line the micro-kernel loads as it would a packed panel's, and the packing pass (a copy
    of all of B every step: weights change) is saved. Larger Bs are packed."""
    return (not spec.trans_b and spec.n % blk.nr == 0
            and spec.k * spec.n * 4 <= B_DIRECT_BYTES)


def use_a_direct(blk: Blocking, spec: GemmSpec) -> bool:
    """Read A unpacked when each of its elements meets at most two B slivers (N <= 2*NR): then
    packing A would cost about as much as the product. A masked A is always packed (the mask is
    applied while packing), and so is an A of fewer than MR rows (an edge tile read in place
    reads the MR rows ending at its last one)."""
    return not spec.mask and -(-spec.n // blk.nr) <= 2 and spec.m >= blk.mr


# Work items per thread of a claimed GEMM: a thread that finishes its own early takes over the
# last items of a slower one (claim.py); each item re-reads the shared operand's blocks, which
# must therefore stay cached: at most SHARED_L2_PART of the L2 cache.
ITEMS_PER_THREAD = 4
SHARED_L2_PART = 0.5


def claim_mode(blk: Blocking, spec: GemmSpec, target: Target) -> tuple[str, int]:
    """How a claimed GEMM shares its work, and the floats of the shared operand (the one every
    item reads whole: A when threads split columns, B when rows) each thread packs: "whole"
    (all of it, once; 0 floats when it is read in place), "blocked" (one K block at a time, the
    items of each K block claimed between barriers) or "static" (not even a K block fits)."""
    if split_dim(blk, spec) == "cols":
        direct, total, width = use_a_direct(blk, spec), spec.m, blk.mr
    else:
        direct, total, width = use_b_direct(blk, spec), spec.n, blk.nr
    budget = target.l2 * SHARED_L2_PART
    if direct:
        return "whole", 0
    if whole_floats(total, spec.k, width) * 4 <= budget:
        return "whole", whole_floats(total, spec.k, width)
    if whole_floats(total, min(spec.k, blk.kc), width) * 4 <= budget:
        return "blocked", whole_floats(total, min(spec.k, blk.kc), width)
    return "static", 0


def emit_gemm(module: ir.Module, spec: GemmSpec, target: Target, name: str | None = None,
              claimed: bool = False) -> GemmKernel:
    """Add the GEMM function for `spec` to `module` (idempotent by name).

    Static: `f(tid, nt, A, B, C, bias, residual, mask, scratch)`, thread t computing the t-th
    of nt equal ranges of whole slivers along the split dimension. With `claimed` (unless
    `claim_mode` says "static") the function is `f(tid, nt, A, B, C, bias, residual, mask,
    claim_state, barrier_state, scratch)` (`GemmKernel.claims`): the split dimension is cut
    into up to ITEMS_PER_THREAD * nt items that threads claim (claim.py: their own share
    first), so a thread on a slowed core does fewer. Each thread packs the shared operand into
    its scratch — whole, once, at its first item; or K block by K block, the items of each
    block claimed anew after a barrier (an item's next K block may go to another thread, and
    must see the C its previous one left) — and packs only its items' parts of the other.
    Either way each element of C is computed by one thread with the same K order: results do
    not depend on the variant, the thread count or which thread took which item."""
    blk = choose_blocking(target, spec.m, spec.n, spec.k)
    split = split_dim(blk, spec)
    a_direct, b_direct = use_a_direct(blk, spec), use_b_direct(blk, spec)
    mode, shared = claim_mode(blk, spec, target) if claimed else ("static", 0)
    claims = mode != "static"
    shared_bytes = round_up(shared * 4, 64)
    scratch = shared_bytes + round_up(blk.scratch_floats * 4, 64)
    name = name or spec.name(target) + ("" if not claims else f"_{mode}")
    units = -(-spec.m // blk.mr) if split == "rows" else -(-spec.n // blk.nr)
    if name in module.globals:
        return GemmKernel(module.globals[name], scratch, blk, split, units, claims)
    i8p = ir.IntType(8).as_pointer()
    fnty = ir.FunctionType(ir.VoidType(), [I32, I32] + [F32P] * 6 + [i8p, i8p] * claims
                           + [F32P])
    fn = ir.Function(module, fnty, name=name)
    tid, nt, a, bm, c, bias, resid, mask = fn.args[:8]
    scr = fn.args[-1]
    for arg in (a, bm, c, scr):
        arg.add_attribute("noalias")
    fn.attributes.add("nounwind")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    a_src = Dense(a, spec.lda_, outer_major=not spec.trans_a, mask=mask if spec.mask else None)
    b_src = Dense(bm, spec.ldb_, outer_major=spec.trans_b)
    my_scratch = gep(b, scr, b.mul(b.sext(tid, I64), i64(scratch // 4)))

    def tiles(rows, cols, work, packed=None, k_block=None) -> None:
        emit_gemm_tiles(b, target, blk, spec.m, spec.n, spec.k, a_src, b_src, c, spec.ldc_,
                        spec.epilogue, bias, resid, spec.accumulate, rows, cols, work,
                        b_direct=b_direct, a_direct=a_direct,
                        a_whole=packed if split == "cols" else None,
                        b_whole=packed if split == "rows" else None, k_block=k_block)

    if not claims:
        if split == "rows":
            tiles(thread_range(b, tid, nt, spec.m, blk.mr), (i64(0), i64(spec.n)), my_scratch)
        else:
            tiles((i64(0), i64(spec.m)), thread_range(b, tid, nt, spec.n, blk.nr), my_scratch)
        b.ret_void()
        return GemmKernel(fn, scratch, blk, split, units, claims)
    claim_state, barrier_state = fn.args[8], fn.args[9]
    work = gep(b, my_scratch, i64(shared_bytes // 4))
    packed_p = my_scratch if shared else None
    # A whole number of items per thread (at most ITEMS_PER_THREAD, at least one), so that the
    # threads' own shares are equal: at the same speed each takes only its own, and in every K
    # block the same ones (the C it accumulates stays in its cache). Measured on MLP's
    # 128x256x512 product: 5 items on 2 threads ran 11% slower than 8, or than the static split.
    n64 = b.sext(nt, I64)
    per = b.sdiv(i64(units), n64)
    per = imin(b, per, i64(ITEMS_PER_THREAD))
    per = b.select(b.icmp_signed("<", per, i64(1)), i64(1), per)  # at least one
    want = b.mul(per, n64)
    items = imin(b, want, i64(units))
    unit, total = (blk.mr, spec.m) if split == "rows" else (blk.nr, spec.n)
    # the shared operand: A (M rows, MR slivers) when items are columns, else B
    src, outer, width = (a_src, spec.m, blk.mr) if split == "cols" else (b_src, spec.n, blk.nr)

    def claimed_items(k_block=None, pack_first=None) -> None:
        with for_claimed(b, claim_state, items, tid, nt) as item:
            lo = b.mul(b.sdiv(b.mul(item, i64(units)), items), i64(unit))
            hi = b.mul(b.sdiv(b.mul(b.add(item, i64(1)), i64(units)), items), i64(unit))
            span = (lo, imin(b, hi, i64(total)))
            if pack_first is not None:
                pack_first()
            if split == "rows":
                tiles(span, (i64(0), i64(spec.n)), work, packed_p, k_block)
            else:
                tiles((i64(0), i64(spec.m)), span, work, packed_p, k_block)

    if mode == "whole":
        packed = b.alloca(ir.IntType(1), name="packed")
        b.store(ir.Constant(ir.IntType(1), 0), packed)

        def pack_once() -> None:
            with b.if_then(b.not_(b.load(packed))):
                pack_whole(b, blk, src, outer, spec.k, width, my_scratch)
                b.store(ir.Constant(ir.IntType(1), 1), packed)
        claimed_items(pack_first=pack_once if shared else None)
    else:
        with for_range(b, i64(0), i64(spec.k), blk.kc, name="kb", unroll=False) as kb:
            kc = b.sub(imin(b, b.add(kb, i64(blk.kc)), i64(spec.k)), kb)
            pack_block(b, src, my_scratch, i64(0), i64(outer), outer, width, kb, kc)
            claimed_items(k_block=kb)
            # one thread alone (a call on thread 0 only) must not touch the shared barrier
            with b.if_then(b.icmp_signed(">", nt, ir.Constant(I32, 1))):
                call_barrier(b, barrier_state, nt)
    b.ret_void()
    return GemmKernel(fn, scratch, blk, split, units, claims)
