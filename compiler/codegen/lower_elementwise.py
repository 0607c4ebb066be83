"""Codegen stage, elementwise lowering: the body of every elementwise primitive, in one table
keyed by primitive name (DESIGN: one primitive, one place for its lowering).

Takes: an IRBuilder, the operands as register values of one width -- scalars (f32 `float`, f64
`double`, i32, bool `i1`) or vectors of them with the same lane count -- the node's attrs and its
input/output dtypes. Gives: `ELEMENTWISE[name](b, args, attrs, ins, out)` -> the result value, of
the operands' width; `reg_type`/`mem_type` (register and memory LLVM types of a dtype at a
width), `const`/`typed_const` (constants at a width), `load_value`/`store_value` (scalar or
vector; bool is i8 in memory and i1 in registers), `from_memory` and `lanes_of`.

Invariants: a body is the same instructions at every width (one definition serves the scalar
tails and the vector loops of kernels_elementwise, and the GEMM epilogues), so a lane computes
exactly what the scalar would; bodies are straight-line code (selects, no branches, no calls but
vector-capable intrinsics); transcendental functions of f64 tensors are computed in float32 (see
mathfn); comparisons with NaN follow IEEE like NumPy.
"""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from . import mathfn as M

F32, F64 = ir.FloatType(), ir.DoubleType()
I32, I8, I1 = ir.IntType(32), ir.IntType(8), ir.IntType(1)
_REG = {"f32": F32, "f64": F64, "i32": I32, "bool": I1}
_MEM = {"f32": F32, "f64": F64, "i32": I32, "bool": I8}
Body = Callable[[ir.IRBuilder, list, dict, list, str], ir.Value]


def _at_width(t: ir.Type, lanes: int) -> ir.Type:
    return ir.VectorType(t, lanes) if lanes > 1 else t


def reg_type(dtype: str, lanes: int = 1) -> ir.Type:
    return _at_width(_REG[dtype], lanes)


def mem_type(dtype: str, lanes: int = 1) -> ir.Type:
    return _at_width(_MEM[dtype], lanes)


def lanes_of(v: ir.Value) -> int:
    """The width of a register value: its lane count, 1 for a scalar."""
    return v.type.count if isinstance(v.type, ir.VectorType) else 1


def load_value(b: ir.IRBuilder, ptr: ir.Value, dtype: str, lanes: int = 1) -> ir.Value:
    """`lanes` consecutive elements at the element pointer `ptr` (one scalar for 1)."""
    if lanes > 1:
        ptr = b.bitcast(ptr, mem_type(dtype, lanes).as_pointer())
    return from_memory(b, b.load(ptr, align=1 if dtype == "bool" else 4), dtype)


def from_memory(b: ir.IRBuilder, v: ir.Value, dtype: str) -> ir.Value:
    """A loaded value (scalar or vector, memory type) as a register value: bool i8 -> i1."""
    if dtype != "bool":
        return v
    return b.icmp_unsigned("!=", v, typed_const(I8, 0, lanes_of(v)))


def store_value(b: ir.IRBuilder, v: ir.Value, ptr: ir.Value, dtype: str) -> None:
    """Store `v` (a scalar, or a vector of consecutive elements) at the element pointer `ptr`."""
    lanes = lanes_of(v)
    if dtype == "bool":
        v = b.zext(v, mem_type("bool", lanes))
    if lanes > 1:
        ptr = b.bitcast(ptr, v.type.as_pointer())
    b.store(v, ptr, align=1 if dtype == "bool" else 4)


def typed_const(t: ir.Type, value: float, lanes: int = 1) -> ir.Constant:
    """`value` as a constant of the scalar LLVM type `t`, splat to `lanes` lanes when > 1."""
    if t == I1:
        value = int(bool(value))
    elif isinstance(t, ir.IntType):
        value = int(value)
    else:
        value = float(value)
    return ir.Constant(_at_width(t, lanes), [value] * lanes if lanes > 1 else value)


def const(dtype: str, value: float, lanes: int = 1) -> ir.Constant:
    """`value` as a register constant of `dtype` at width `lanes`."""
    return typed_const(_REG[dtype], value, lanes)


def _in_f32(fn: Callable) -> Body:
    """A float32 math function applied to f32 or (through float32) f64 operands."""
    def body(b, args, attrs, ins, out):
        x = args[0]
        if out == "f64":
            n = lanes_of(x)
            return b.fpext(fn(b, b.fptrunc(x, reg_type("f32", n))), reg_type("f64", n))
        return fn(b, x)
    return body


def _float_or_int(fop: str, iop: str) -> Body:
    def body(b, args, attrs, ins, out):
        return getattr(b, fop if out in ("f32", "f64") else iop)(args[0], args[1])
    return body


def _neg(b, args, attrs, ins, out):
    x = args[0]
    return b.fneg(x) if out != "i32" else b.sub(const("i32", 0, lanes_of(x)), x)


def _abs(b, args, attrs, ins, out):
    x = args[0]
    if out == "i32":
        zero = const("i32", 0, lanes_of(x))
        return b.select(b.icmp_signed("<", x, zero), b.sub(zero, x), x)
    return M.intrinsic(b, "fabs", x)


def _sign(b, args, attrs, ins, out):
    x = args[0]
    n = lanes_of(x)
    one, zero, m1 = const(out, 1, n), const(out, 0, n), const(out, -1, n)
    if out == "i32":
        return b.select(b.icmp_signed(">", x, zero), one,
                        b.select(b.icmp_signed("<", x, zero), m1, zero))
    return b.select(b.fcmp_ordered(">", x, zero), one,
                    b.select(b.fcmp_ordered("<", x, zero), m1, x))


def _relu(b, args, attrs, ins, out):
    x = args[0]
    zero = const(out, 0, lanes_of(x))
    if out == "i32":
        return b.select(b.icmp_signed("<", x, zero), zero, x)
    return b.select(b.fcmp_ordered("<", x, zero), zero, x)


def _sqrt(b, args, attrs, ins, out):
    return M.sqrt(b, args[0])


def _rsqrt(b, args, attrs, ins, out):
    return b.fdiv(const(out, 1.0, lanes_of(args[0])), M.sqrt(b, args[0]))


def _ident(b, args, attrs, ins, out):
    return args[0]


def _cast(b, args, attrs, ins, out):
    x, src = args[0], ins[0]
    if src == out:
        return x
    n = lanes_of(x)
    to = reg_type(out, n)
    fl = ("f32", "f64")
    if src in fl and out in fl:
        return b.fpext(x, to) if out == "f64" else b.fptrunc(x, to)
    if src in fl:
        if out == "bool":
            return b.fcmp_unordered("!=", x, const(src, 0, n))
        return b.fptosi(x, to)
    if src == "i32":
        if out == "bool":
            return b.icmp_signed("!=", x, const("i32", 0, n))
        return b.sitofp(x, to)
    # bool source
    return b.zext(x, to) if out == "i32" else b.uitofp(x, to)


def _pow(b, args, attrs, ins, out):
    a, e = args
    if out == "f64":
        n = lanes_of(a)
        r = M.pow_(b, b.fptrunc(a, reg_type("f32", n)), b.fptrunc(e, reg_type("f32", n)))
        return b.fpext(r, reg_type("f64", n))
    return M.pow_(b, a, e)


def _minmax(greater: bool) -> Body:
    def body(b, args, attrs, ins, out):
        x, y = args
        if out == "i32":
            return b.select(b.icmp_signed(">" if greater else "<", x, y), x, y)
        r = b.select(b.fcmp_ordered(">" if greater else "<", x, y), x, y)
        return b.select(b.fcmp_unordered("uno", x, x), x, r)
    return body


def _compare(op: str) -> Body:
    def body(b, args, attrs, ins, out):
        x, y = args
        dt = ins[0]
        if dt in ("f32", "f64"):
            if op == "!=":
                return b.fcmp_unordered(op, x, y)
            return b.fcmp_ordered(op, x, y)
        if dt == "bool":
            return b.icmp_unsigned(op, x, y)
        return b.icmp_signed(op, x, y)
    return body


def _where(b, args, attrs, ins, out):
    return b.select(*args)


ELEMENTWISE: dict[str, Body] = {
    "neg": _neg,
    "exp": _in_f32(M.exp),
    "log": _in_f32(M.log),
    "log1p": _in_f32(M.log1p),
    "expm1": _in_f32(M.expm1),
    "sqrt": _sqrt,
    "rsqrt": _rsqrt,
    "abs": _abs,
    "sign": _sign,
    "tanh": _in_f32(M.tanh),
    "sigmoid": _in_f32(M.sigmoid),
    "relu": _relu,
    "erf": _in_f32(M.erf),
    "stop_gradient": _ident,
    "cast": _cast,
    "add": _float_or_int("fadd", "add"),
    "sub": _float_or_int("fsub", "sub"),
    "mul": _float_or_int("fmul", "mul"),
    "div": _float_or_int("fdiv", "sdiv"),
    "pow": _pow,
    "maximum": _minmax(True),
    "minimum": _minmax(False),
    "lt": _compare("<"),
    "le": _compare("<="),
    "gt": _compare(">"),
    "ge": _compare(">="),
    "eq": _compare("=="),
    "ne": _compare("!="),
    "where": _where,
}
