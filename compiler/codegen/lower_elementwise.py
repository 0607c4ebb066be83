"""Codegen stage, elementwise lowering: the scalar body of every elementwise primitive, in one
table keyed by primitive name (DESIGN: one primitive, one place for its lowering).

Takes: an IRBuilder, the operands as register values (f32 `float`, f64 `double`, i32, bool `i1`),
the node's attrs and its input/output dtypes. Gives: `ELEMENTWISE[name](b, args, attrs, ins, out)`
-> the result value; `reg_type`/`mem_type` (register and memory LLVM types of a dtype) and
`load_value`/`store_value` that convert bool between i8 in memory and i1 in registers.

Invariants: bodies are straight-line code (selects, no branches, no calls but vectorizable
intrinsics), so the loops around them vectorize; transcendental functions of f64 tensors are
computed in float32 (see mathfn); comparisons with NaN follow IEEE like NumPy.
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


def reg_type(dtype: str) -> ir.Type:
    return _REG[dtype]


def mem_type(dtype: str) -> ir.Type:
    return _MEM[dtype]


def load_value(b: ir.IRBuilder, ptr: ir.Value, dtype: str) -> ir.Value:
    v = b.load(ptr, align=1 if dtype == "bool" else 4)
    return b.icmp_unsigned("!=", v, ir.Constant(I8, 0)) if dtype == "bool" else v


def store_value(b: ir.IRBuilder, v: ir.Value, ptr: ir.Value, dtype: str) -> None:
    if dtype == "bool":
        v = b.zext(v, I8)
    b.store(v, ptr, align=1 if dtype == "bool" else 4)


def const(dtype: str, value: float) -> ir.Constant:
    if dtype == "bool":
        return ir.Constant(I1, int(bool(value)))
    if dtype == "i32":
        return ir.Constant(I32, int(value))
    return ir.Constant(_REG[dtype], float(value))


def _in_f32(fn: Callable) -> Body:
    """A float32 math function applied to f32 or (through float32) f64 operands."""
    def body(b, args, attrs, ins, out):
        x = args[0]
        if out == "f64":
            return b.fpext(fn(b, b.fptrunc(x, F32)), F64)
        return fn(b, x)
    return body


def _float_or_int(fop: str, iop: str) -> Body:
    def body(b, args, attrs, ins, out):
        return getattr(b, fop if out in ("f32", "f64") else iop)(args[0], args[1])
    return body


def _neg(b, args, attrs, ins, out):
    x = args[0]
    return b.fneg(x) if out != "i32" else b.sub(ir.Constant(I32, 0), x)


def _abs(b, args, attrs, ins, out):
    x = args[0]
    if out == "i32":
        return b.select(b.icmp_signed("<", x, const("i32", 0)), b.sub(const("i32", 0), x), x)
    return M.intrinsic(b, "fabs", x)


def _sign(b, args, attrs, ins, out):
    x = args[0]
    one, zero, m1 = const(out, 1), const(out, 0), const(out, -1)
    if out == "i32":
        return b.select(b.icmp_signed(">", x, zero), one,
                        b.select(b.icmp_signed("<", x, zero), m1, zero))
    return b.select(b.fcmp_ordered(">", x, zero), one,
                    b.select(b.fcmp_ordered("<", x, zero), m1, x))


def _relu(b, args, attrs, ins, out):
    x = args[0]
    zero = const(out, 0)
    if out == "i32":
        return b.select(b.icmp_signed("<", x, zero), zero, x)
    return b.select(b.fcmp_ordered("<", x, zero), zero, x)


def _sqrt(b, args, attrs, ins, out):
    return M.sqrt(b, args[0])


def _rsqrt(b, args, attrs, ins, out):
    return b.fdiv(const(out, 1.0), M.sqrt(b, args[0]))


def _ident(b, args, attrs, ins, out):
    return args[0]


def _cast(b, args, attrs, ins, out):
    x, src = args[0], ins[0]
    if src == out:
        return x
    fl = ("f32", "f64")
    if src in fl and out in fl:
        return b.fpext(x, F64) if out == "f64" else b.fptrunc(x, F32)
    if src in fl:
        if out == "bool":
            return b.fcmp_unordered("!=", x, const(src, 0))
        return b.fptosi(x, I32)
    if src == "i32":
        if out == "bool":
            return b.icmp_signed("!=", x, const("i32", 0))
        return b.sitofp(x, _REG[out])
    # bool source
    return b.zext(x, I32) if out == "i32" else b.uitofp(x, _REG[out])


def _pow(b, args, attrs, ins, out):
    a, e = args
    if out == "f64":
        return b.fpext(M.pow_(b, b.fptrunc(a, F32), b.fptrunc(e, F32)), F64)
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
