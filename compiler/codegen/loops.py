"""Codegen stage, loop helpers: structured control flow and vector memory ops on an IRBuilder.

Takes: an `ir.IRBuilder` positioned inside a function.
Gives: `for_range` (a counted loop with a phi induction variable, as a context manager),
`unrolled` (a Python-level unrolled loop over constants), `if_then`, vector type helpers,
aligned/unaligned vector loads and stores, a broadcast, and declarations of `llvm.fma` /
`llvm.fmuladd` / `llvm.masked.store`, so every kernel emitter writes loops the same way.

Invariants: after a `with for_range(...)` block the builder is positioned at the loop's exit block;
loop bounds are i64; indices yielded are i64 values valid inside the body only. Helpers never
allocate memory (no alloca in loops).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from llvmlite import ir

F32 = ir.FloatType()
I1 = ir.IntType(1)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
F32P = F32.as_pointer()


def round_up(x: int, m: int) -> int:
    """The least multiple of m that is >= x."""
    return -(-x // m) * m


def i64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def imin(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    """min(x, y) of two signed integers."""
    return b.select(b.icmp_signed("<", x, y), x, y)


def f32(v: float) -> ir.Constant:
    return ir.Constant(F32, v)


def vec_type(lanes: int) -> ir.VectorType:
    return ir.VectorType(F32, lanes)


def as_i64(b: ir.IRBuilder, v: ir.Value | int) -> ir.Value:
    """An i64 value from a Python int or an integer value of any width."""
    if isinstance(v, int):
        return i64(v)
    if v.type == I64:
        return v
    return b.sext(v, I64)


class _Freeze(ir.Instruction):
    def descr(self, buf: list[str]) -> None:
        (v,) = self.operands
        buf.append(f"freeze {v.type} {v.get_reference()}\n")


def freeze(b: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """`freeze v`: the same value, opaque to pattern matching (llvmlite's builder has no
    freeze). See kernels_elementwise for why a value stored in place goes through it."""
    instr = _Freeze(b.block, v.type, "freeze", [v])
    b._insert(instr)
    return instr


def no_unroll_md(module: ir.Module, vectorize: bool = True, unroll: bool = False
                 ) -> ir.MDValue:
    """A fresh loop-ID node `!N = !{!N, !{"llvm.loop.unroll.disable"}}` (self-referential, as
    loop IDs must be; llvmlite has no `distinct`, so the self operand is patched in). With
    `vectorize=False` it also carries `!{"llvm.loop.vectorize.enable", i1 0}`: the loop
    vectorizer then skips the loop at once (for loops whose body is vector code already).
    `unroll=True` leaves out the unroll hint (a loop that may be unrolled, not vectorized)."""
    hints = [] if unroll else [
        module.add_metadata([ir.MetaDataString(module, "llvm.loop.unroll.disable")])]
    if not vectorize:
        hints.append(module.add_metadata([ir.MetaDataString(module,
                                                            "llvm.loop.vectorize.enable"),
                                          ir.Constant(I1, 0)]))
    count = getattr(module, "_netc_loop_ids", 0)
    module._netc_loop_ids = count + 1  # unique operands, so add_metadata's cache never merges
    node = module.add_metadata([*hints, ir.MetaDataString(module, f"netc.loop.{count}")])
    node.operands = (node, *hints)
    return node


@contextmanager
def for_range(b: ir.IRBuilder, start: ir.Value | int, stop: ir.Value | int,
              step: int = 1, name: str = "i", unroll: bool = True,
              vectorize: bool = True) -> Iterator[ir.Value]:
    """`for i in range(start, stop, step)` with `step > 0`; yields the i64 index.

    The loop is bottom-tested behind an entry guard, the shape LLVM's loop passes expect; the body
    may create blocks freely (the latch is wherever the builder is when the body ends).
    `unroll=False` forbids LLVM to unroll it: for outer loops of generated kernels whose static
    trip counts would otherwise be fully unrolled into code that costs compile time, not speed
    (vectorisation of the loop is still allowed unless `vectorize=False`; the two hints are
    independent).
    """
    assert step > 0
    start, stop = as_i64(b, start), as_i64(b, stop)
    pre = b.block
    body = b.append_basic_block(f"{name}.body")
    done = b.append_basic_block(f"{name}.done")
    b.cbranch(b.icmp_signed("<", start, stop), body, done)
    b.position_at_end(body)
    idx = b.phi(I64, name=name)
    idx.add_incoming(start, pre)
    yield idx
    nxt = b.add(idx, i64(step), name=f"{name}.next", flags=["nsw"])
    idx.add_incoming(nxt, b.block)
    br = b.cbranch(b.icmp_signed("<", nxt, stop), body, done)
    if not (unroll and vectorize):
        br.set_metadata("llvm.loop", no_unroll_md(b.module, vectorize, unroll))
    b.position_at_end(done)


def combine_in_order(b: ir.IRBuilder, partial, chunks: ir.Value, dst: ir.Value, lo: ir.Value,
                     hi: ir.Value, combine) -> None:
    """dst[e] = partial(0)[e] (+) partial(1)[e] (+) ... (+) partial(chunks-1)[e] for e in
    [lo, hi), the chunks combined in increasing order (`combine(a, v)`), one chunk at a time
    over the range (contiguous: vector code). `partial(c)` is chunk c's element pointer."""
    with for_range(b, lo, hi, name="e") as e:
        b.store(b.load(b.gep(partial(i64(0)), [e]), align=4), b.gep(dst, [e]), align=4)
    with for_range(b, i64(1), chunks, name="chunk", unroll=False) as c:
        part = partial(c)
        with for_range(b, lo, hi, name="e") as e:
            at = b.gep(dst, [e])
            b.store(combine(b.load(at, align=4), b.load(b.gep(part, [e]), align=4)), at,
                    align=4)


def unrolled(count: int) -> range:
    """A Python-level unrolled loop: the body is emitted `count` times with constant indices."""
    return range(count)


@contextmanager
def if_then(b: ir.IRBuilder, cond: ir.Value, name: str = "if") -> Iterator[None]:
    """Emit the body only when `cond` (i1) holds; the builder continues after it."""
    with b.if_then(cond):
        yield


def gep(b: ir.IRBuilder, ptr: ir.Value, offset: ir.Value | int) -> ir.Value:
    """`ptr + offset` elements (inbounds)."""
    return b.gep(ptr, [as_i64(b, offset)], inbounds=True)


def load_vec(b: ir.IRBuilder, ptr: ir.Value, offset: ir.Value | int, lanes: int,
             align: int = 4) -> ir.Value:
    """Load `lanes` consecutive f32 at `ptr + offset`; `align` is a promise in bytes."""
    p = b.bitcast(gep(b, ptr, offset), vec_type(lanes).as_pointer())
    return b.load(p, align=align)


def store_vec(b: ir.IRBuilder, val: ir.Value, ptr: ir.Value, offset: ir.Value | int,
              align: int = 4) -> None:
    """Store a float vector at `ptr + offset`; `align` is a promise in bytes."""
    p = b.bitcast(gep(b, ptr, offset), val.type.as_pointer())
    b.store(val, p, align=align)


def splat(b: ir.IRBuilder, scalar: ir.Value, lanes: int) -> ir.Value:
    """Broadcast a scalar (any element type) to all lanes (insertelement + zero shufflevector,
    the form LLVM folds into a broadcast load or an embedded broadcast operand)."""
    vt = ir.VectorType(scalar.type, lanes)
    v = b.insert_element(ir.Constant(vt, ir.Undefined), scalar, ir.Constant(I32, 0))
    return b.shuffle_vector(v, ir.Constant(vt, ir.Undefined),
                            ir.Constant(ir.VectorType(I32, lanes), [0] * lanes))


def const_vec(lanes: int, value: float) -> ir.Constant:
    return ir.Constant(vec_type(lanes), [value] * lanes)


def _declare(module: ir.Module, name: str, fnty: ir.FunctionType) -> ir.Function:
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    return ir.Function(module, fnty, name=name)


def fma_fn(module: ir.Module, lanes: int, fused: bool = True) -> ir.Function:
    """`llvm.fma.vNf32` (always fused) or `llvm.fmuladd.vNf32` (fused only where the target has an
    FMA unit; the portable path uses it so no libm call is ever emitted)."""
    t = vec_type(lanes) if lanes > 1 else F32
    suffix = f"v{lanes}f32" if lanes > 1 else "f32"
    base = "llvm.fma" if fused else "llvm.fmuladd"
    return _declare(module, f"{base}.{suffix}", ir.FunctionType(t, [t, t, t]))


def masked_store_fn(module: ir.Module, lanes: int) -> ir.Function:
    """`llvm.masked.store.vNf32.p0`: store the lanes whose mask bit is set (edge tiles)."""
    vt = vec_type(lanes)
    fnty = ir.FunctionType(ir.VoidType(), [vt, vt.as_pointer(), I32, ir.VectorType(I1, lanes)])
    return _declare(module, f"llvm.masked.store.v{lanes}f32.p0", fnty)


def masked_load_fn(module: ir.Module, lanes: int) -> ir.Function:
    """`llvm.masked.load.vNf32.p0`: load the lanes whose mask bit is set, others from passthru."""
    vt = vec_type(lanes)
    fnty = ir.FunctionType(vt, [vt.as_pointer(), I32, ir.VectorType(I1, lanes), vt])
    return _declare(module, f"llvm.masked.load.v{lanes}f32.p0", fnty)


def prefetch_fn(module: ir.Module) -> ir.Function:
    """`llvm.prefetch.p0(ptr, rw, locality, cache_type)`: a cache hint, never a fault."""
    i8p = ir.IntType(8).as_pointer()
    return _declare(module, "llvm.prefetch.p0",
                    ir.FunctionType(ir.VoidType(), [i8p, I32, I32, I32]))


def lane_indices(values) -> ir.Constant:
    """A constant <n x i32> of `values`: a shufflevector's lane selection."""
    values = list(values)
    return ir.Constant(ir.VectorType(I32, len(values)), values)


def transpose_square(b: ir.IRBuilder, rows: list[ir.Value]) -> list[ir.Value]:
    """The transpose of n vectors of n elements (n a power of two): vector c of the result holds
    element c of every input vector. log2(n) rounds of pairing vector i with vector i + n/2 and
    interleaving their low and high halves."""
    n = len(rows)
    lo = lane_indices(x for i in range(n // 2) for x in (i, i + n))
    hi = lane_indices(x for i in range(n // 2, n) for x in (i, i + n))
    for _ in range(n.bit_length() - 1):
        out = []
        for i in range(n // 2):
            a, c = rows[i], rows[i + n // 2]
            out += [b.shuffle_vector(a, c, lo), b.shuffle_vector(a, c, hi)]
        rows = out
    return rows


def pieces(count: int, lanes: int) -> list[tuple[int, int]]:
    """(first lane, size) of the plain moves that cover the first `count` < `lanes` lanes:
    halves, quarters, ... of the vector (10 of 16 lanes: 8 then 2)."""
    out, at, size = [], 0, lanes // 2
    while size:
        if count - at >= size:
            out.append((at, size))
            at += size
        size //= 2
    return out


def load_first(b: ir.IRBuilder, ptr: ir.Value, offset: ir.Value | int, count: int, lanes: int
               ) -> ir.Value:
    """A vector of `lanes` f32 whose first `count` lanes are loaded from `ptr + offset` by plain
    moves (`pieces`) and whose other lanes are 0: nothing past the last element is read."""
    if count >= lanes:
        return load_vec(b, ptr, offset, lanes)
    v = const_vec(lanes, 0.0)
    for at, size in pieces(count, lanes):
        part = load_vec(b, ptr, b.add(as_i64(b, offset), i64(at)), size)
        # widened to `lanes` (the lanes past `size` are never selected below)
        wide = b.shuffle_vector(part, ir.Constant(part.type, ir.Undefined),
                                lane_indices(min(x, size - 1) for x in range(lanes)))
        v = b.shuffle_vector(v, wide, lane_indices(
            [lanes + x - at if at <= x < at + size else x for x in range(lanes)]))
    return v


def store_first(b: ir.IRBuilder, v: ir.Value, ptr: ir.Value, offset: ir.Value | int,
                count: int) -> None:
    """Store the first `count` lanes of the f32 vector `v` at `ptr + offset` by plain moves."""
    lanes = v.type.count
    if count >= lanes:
        store_vec(b, v, ptr, offset)
        return
    for at, size in pieces(count, lanes):
        part = b.shuffle_vector(v, ir.Constant(v.type, ir.Undefined),
                                lane_indices(range(at, at + size)))
        store_vec(b, part, ptr, b.add(as_i64(b, offset), i64(at)))


def lane_mask(lanes: int, valid: int) -> ir.Constant:
    """A constant <lanes x i1> with the first `valid` lanes set."""
    return ir.Constant(ir.VectorType(I1, lanes), [1 if i < valid else 0 for i in range(lanes)])


def unary_fn(module: ir.Module, name: str, lanes: int) -> ir.Function:
    """An LLVM float intrinsic of one argument, e.g. `unary_fn(m, "llvm.exp", 8)`."""
    t = vec_type(lanes) if lanes > 1 else F32
    suffix = f"v{lanes}f32" if lanes > 1 else "f32"
    return _declare(module, f"{name}.{suffix}", ir.FunctionType(t, [t]))


def binary_fn(module: ir.Module, name: str, lanes: int) -> ir.Function:
    """An LLVM float intrinsic of two arguments, e.g. `binary_fn(m, "llvm.maxnum", 8)`."""
    t = vec_type(lanes) if lanes > 1 else F32
    suffix = f"v{lanes}f32" if lanes > 1 else "f32"
    return _declare(module, f"{name}.{suffix}", ir.FunctionType(t, [t, t]))
