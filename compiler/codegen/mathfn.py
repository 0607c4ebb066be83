"""Codegen stage, math: branch-free float32 transcendental functions as LLVM IR.

Takes: an IRBuilder positioned in a loop body and float32 scalar (or vector) values.
Gives: `exp`, `log`, `log1p`, `expm1`, `tanh`, `sigmoid`, `erf`, `sqrt`, `pow` built only from
arithmetic, compares, selects, bit casts and the `llvm.floor`/`llvm.sqrt`/`llvm.fabs` intrinsics,
so the same code serves scalars and vectors of any width (a libm call would have no vector
form); the elementwise kernels call them at the host's vector width. Also the exact
Philox-normal `log_exact`/`cos_2pi_exact` sequences of ops/random.py.

Invariants: no fast-math flags. The exact sequences (`log_exact`, `cos_2pi_exact`: the Philox
normals) use separate multiplies and adds, so they match NumPy bit for bit. The other functions
take their Horner steps and range reductions as `llvm.fmuladd`: one FMA instruction where the
target has FMA, a multiply and an add where it has not. That is a little more accurate and about a
third fewer instructions; results stay reproducible on a given target, but can differ in the last
ulp between an FMA target and the portable one. Accuracy is a few float32 ulps (Cephes
polynomials); special values (inf, nan, 0, negative log arguments) follow IEEE/NumPy
conventions; f64 graphs evaluate these in float32.
"""

from __future__ import annotations

import math

from llvmlite import ir

F32 = ir.FloatType()
I32 = ir.IntType(32)


def _ty(v: ir.Value) -> ir.Type:
    return v.type


def _c(v: ir.Value, x: float) -> ir.Constant:
    """A float32 constant shaped like `v` (scalar or vector)."""
    t = v.type
    x = float(F32_round(x))
    if isinstance(t, ir.VectorType):
        return ir.Constant(t, [x] * t.count)
    return ir.Constant(t, x)


def _ci(v: ir.Value, x: int) -> ir.Constant:
    t = v.type
    if isinstance(t, ir.VectorType):
        return ir.Constant(ir.VectorType(I32, t.count), [x] * t.count)
    return ir.Constant(I32, x)


def _ity(v: ir.Value) -> ir.Type:
    t = v.type
    return ir.VectorType(I32, t.count) if isinstance(t, ir.VectorType) else I32


def F32_round(x: float) -> float:
    import numpy as np
    return float(np.float32(x))


def intrinsic(b: ir.IRBuilder, name: str, *args: ir.Value) -> ir.Value:
    """Call `llvm.<name>` overloaded on the first argument's type."""
    t = args[0].type
    elem = t.element if isinstance(t, ir.VectorType) else t
    suffix = "f64" if isinstance(elem, ir.DoubleType) else "f32"
    if isinstance(t, ir.VectorType):
        suffix = f"v{t.count}{suffix}"
    full = f"llvm.{name}.{suffix}"
    fn = b.module.globals.get(full)
    if fn is None:
        fn = ir.Function(b.module, ir.FunctionType(t, [t] * len(args)), name=full)
    return b.call(fn, list(args))


def _fma(b: ir.IRBuilder, a: ir.Value, x: ir.Value, c: ir.Value) -> ir.Value:
    """a * x + c, fused where the target has FMA (`llvm.fmuladd`)."""
    return intrinsic(b, "fmuladd", a, x, c)


def _poly(b: ir.IRBuilder, x: ir.Value, coeffs: list[float], fused: bool = True) -> ir.Value:
    """Horner: coeffs highest degree first; `fused=False` keeps each step a multiply then an
    add (the bit-exact sequences)."""
    p = _c(x, coeffs[0])
    for c in coeffs[1:]:
        p = _fma(b, p, x, _c(x, c)) if fused else b.fadd(b.fmul(p, x), _c(x, c))
    return p


def _isnan(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    return b.fcmp_unordered("uno", x, x)


def exp(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """Cephes expf: x = n ln2 + r, e^r by a polynomial, times 2^n from exponent bits in two
    halves (2^(n - n/2) * 2^(n/2), both normal for every n of a finite or subnormal result):
    e^x below the normal range, down to e^-103.97 (the least subnormal), is subnormal as
    NumPy's, not zero."""
    xc = b.select(b.fcmp_ordered(">", x, _c(x, 89.0)), _c(x, 89.0), x)
    xc = b.select(b.fcmp_ordered("<", xc, _c(x, -104.0)), _c(x, -104.0), xc)
    n = intrinsic(b, "floor", _fma(b, xc, _c(x, 1.44269504088896341), _c(x, 0.5)))
    r = _fma(b, n, _c(x, -0.693359375), xc)
    r = _fma(b, n, _c(x, 2.12194440e-4), r)
    p = _poly(b, r, [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                     1.6666665459e-1, 5.0000001201e-1])
    p = b.fadd(_fma(b, p, b.fmul(r, r), r), _c(x, 1.0))
    ni = b.fptosi(n, _ity(x))
    half = b.ashr(ni, _ci(x, 1))

    def two_to(k: ir.Value) -> ir.Value:
        return b.bitcast(b.shl(b.add(k, _ci(x, 127)), _ci(x, 23)), x.type)
    y = b.fmul(b.fmul(p, two_to(b.sub(ni, half))), two_to(half))
    y = b.select(b.fcmp_ordered(">", x, _c(x, 88.72283935546875)), _c(x, math.inf), y)
    y = b.select(b.fcmp_ordered("<", x, _c(x, -104.0)), _c(x, 0.0), y)
    return b.select(_isnan(b, x), x, y)


_LOG_P = [7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
          1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
          3.3333331174e-1]


def log_exact(b: ir.IRBuilder, u: ir.Value, fused: bool = False) -> ir.Value:
    """The Cephes logf sequence of ops/random.py for normal finite u > 0 (bit-exact there;
    `fused=True`: the same polynomial with FMA steps, for `log`)."""
    bits = b.bitcast(u, _ity(u))
    e = b.sub(b.lshr(bits, _ci(u, 23)), _ci(u, 126))
    m = b.bitcast(b.or_(b.and_(bits, _ci(u, 0x7FFFFF)), _ci(u, 0x3F000000)), u.type)
    small = b.fcmp_ordered("<", m, _c(u, 0.70710677))
    e = b.select(small, b.sub(e, _ci(u, 1)), e)
    x = b.select(small, b.fsub(b.fadd(m, m), _c(u, 1.0)), b.fsub(m, _c(u, 1.0)))
    z = b.fmul(x, x)
    p = _poly(b, x, _LOG_P, fused)
    y = b.fmul(b.fmul(p, x), z)
    f = b.sitofp(e, u.type)
    y = b.fadd(y, b.fmul(_c(u, -2.12194440e-4), f))
    y = b.fadd(y, b.fmul(_c(u, -0.5), z))
    r = b.fadd(x, y)
    return b.fadd(r, b.fmul(_c(u, 0.693359375), f))


def log(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """Natural log; log(0) = -inf, log(<0) = nan, log(inf) = inf; subnormals are scaled first."""
    sub = b.fcmp_ordered("<", x, _c(x, 1.1754943508222875e-38))
    xs = b.select(sub, b.fmul(x, _c(x, 2.0 ** 24)), x)
    y = log_exact(b, xs, fused=True)
    y = b.select(sub, b.fsub(y, _c(x, 24 * math.log(2.0))), y)
    y = b.select(b.fcmp_ordered("==", x, _c(x, 0.0)), _c(x, -math.inf), y)
    y = b.select(b.fcmp_ordered("==", x, _c(x, math.inf)), x, y)
    return b.select(b.fcmp_unordered("<", x, _c(x, 0.0)), _c(x, math.nan), y)


def log1p(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """log(1+x) with the exactness trick log(u) * x / (u - 1), u = 1 + x rounded."""
    u = b.fadd(x, _c(x, 1.0))
    d = b.fsub(u, _c(x, 1.0))
    y = b.fmul(log(b, u), b.fdiv(x, d))
    y = b.select(b.fcmp_ordered("==", d, _c(x, 0.0)), x, y)
    return b.select(b.fcmp_ordered("==", u, _c(x, math.inf)), u, y)


def expm1(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """Taylor polynomial for |x| < 0.5 (no cancellation), exp(x) - 1 elsewhere."""
    small = b.fcmp_ordered("<", intrinsic(b, "fabs", x), _c(x, 0.5))
    coeffs = [1 / math.factorial(k) for k in range(9, 1, -1)]
    p = _poly(b, x, coeffs)
    taylor = _fma(b, b.fmul(x, x), p, x)
    return b.select(small, taylor, b.fsub(exp(b, x), _c(x, 1.0)))


def tanh(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """Cephes tanhf: odd polynomial for |x| < 0.625, 1 - 2 / (e^{2|x|} + 1) with the sign else."""
    a = intrinsic(b, "fabs", x)
    z = b.fmul(x, x)
    p = _poly(b, z, [-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1,
                     -3.33332819422e-1])
    small = _fma(b, b.fmul(p, z), x, x)
    e = exp(b, b.fadd(a, a))
    big = b.fsub(_c(x, 1.0), b.fdiv(_c(x, 2.0), b.fadd(e, _c(x, 1.0))))
    big = b.select(b.fcmp_ordered("<", x, _c(x, 0.0)), b.fneg(big), big)
    return b.select(b.fcmp_ordered("<", a, _c(x, 0.625)), small, big)


def sigmoid(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) below: e = e^-|x| never overflows, and
    sigmoid(-100) is e^-100 (subnormal), not 1 / inf."""
    e = exp(b, b.fneg(intrinsic(b, "fabs", x)))
    d = b.fdiv(_c(x, 1.0), b.fadd(_c(x, 1.0), e))
    return b.select(b.fcmp_unordered(">=", x, _c(x, 0.0)), d, b.fmul(e, d))


_ERF_T = [7.853861353153693e-5, -8.010193625184903e-4, 5.188327685732524e-3,
          -2.685381193529856e-2, 1.128358514861418e-1, -3.761262582423300e-1,
          1.128379165726710e0]


def erf(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """Cephes erff polynomial for |x| < 1; Abramowitz-Stegun 7.1.26 (|err| < 1.5e-7) beyond."""
    a = intrinsic(b, "fabs", x)
    z = b.fmul(x, x)
    small = b.fmul(x, _poly(b, z, _ERF_T))
    t = b.fdiv(_c(x, 1.0), _fma(b, a, _c(x, 0.3275911), _c(x, 1.0)))
    p = b.fmul(t, _poly(b, t, [1.061405429, -1.453152027, 1.421413741, -0.284496736,
                               0.254829592]))
    big = b.fsub(_c(x, 1.0), b.fmul(p, exp(b, b.fneg(z))))
    big = b.select(b.fcmp_ordered("<", x, _c(x, 0.0)), b.fneg(big), big)
    return b.select(b.fcmp_unordered("<", a, _c(x, 1.0)), small, big)


def sqrt(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    return intrinsic(b, "sqrt", x)


def pow_(b: ir.IRBuilder, a: ir.Value, e: ir.Value) -> ir.Value:
    """a ** e = exp(e log|a|) with C's (and NumPy's) special cases: the sign of a negative (or
    -0, or -inf) base to an odd integral power, NaN for a finite negative base to a non-integral
    power, 1 for e == 0 or a == 1 (even with NaN) and for a == -1 with e = +-inf. Zeros and
    infinities need no case of their own: log gives -inf/inf and exp 0/inf."""
    r = exp(b, b.fmul(e, log(b, intrinsic(b, "fabs", a))))
    integral = b.fcmp_ordered("==", intrinsic(b, "floor", e), e)  # +-inf count as even
    half = b.fmul(e, _c(e, 0.5))
    odd = b.and_(integral, b.fcmp_ordered("!=", intrinsic(b, "floor", half), half))
    signed = b.icmp_signed("<", b.bitcast(a, _ity(a)), _ci(a, 0))  # sign bit: -0 and -inf too
    r = b.select(b.and_(signed, odd), b.fneg(r), r)
    finite_neg = b.and_(b.fcmp_ordered("<", a, _c(a, 0.0)),
                        b.fcmp_ordered("!=", a, _c(a, -math.inf)))
    r = b.select(b.and_(finite_neg, b.not_(integral)), _c(a, math.nan), r)
    one = b.or_(b.fcmp_ordered("==", e, _c(e, 0.0)), b.fcmp_ordered("==", a, _c(a, 1.0)))
    minus_one = b.and_(b.fcmp_ordered("==", a, _c(a, -1.0)),
                       b.fcmp_ordered("==", intrinsic(b, "fabs", e), _c(e, math.inf)))
    return b.select(b.or_(one, minus_one), _c(a, 1.0), r)


def cos_2pi_exact(b: ir.IRBuilder, u: ir.Value) -> ir.Value:
    """cos(2 pi u) for u in [0, 1): the exact sequence of ops/random.py."""
    a = intrinsic(b, "fabs", b.fsub(u, _c(u, 0.5)))
    flip = b.fcmp_ordered(">", a, _c(u, 0.25))
    bb = b.select(flip, b.fsub(_c(u, 0.5), a), a)
    use_sin = b.fcmp_ordered(">", bb, _c(u, 0.125))
    d = b.select(use_sin, b.fsub(_c(u, 0.25), bb), bb)
    x = b.fmul(d, _c(u, 2 * math.pi))
    z = b.fmul(x, x)
    s = b.fadd(b.fmul(_c(u, -1.9515295891e-4), z), _c(u, 8.3321608736e-3))
    s = b.fadd(b.fmul(s, z), _c(u, -1.6666654611e-1))
    sin = b.fadd(x, b.fmul(b.fmul(x, z), s))
    c = b.fadd(b.fmul(_c(u, 2.443315711809948e-5), z), _c(u, -1.388731625493765e-3))
    c = b.fadd(b.fmul(c, z), _c(u, 4.166664568298827e-2))
    cos = b.fadd(b.fsub(_c(u, 1.0), b.fmul(_c(u, 0.5), z)), b.fmul(b.fmul(z, z), c))
    v = b.select(use_sin, sin, cos)
    return b.select(flip, v, b.fneg(v))
