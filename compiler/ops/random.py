"""Counter-based random numbers: Philox4x32-10 and the random_uniform / random_normal primitives.

Takes: the graph's rng key leaf (i32[3]: uint32 words seed_lo, seed_hi, step) and attrs `shape`,
`stream` (one id per random call site, from `Graph.new_stream`) and `dtype` (a float dtype).
Gives: `philox4x32` (vectorised over counters), `uniform_f32`, `normal_f32`, and the primitives.

The exact specification (native code must reproduce it bit for bit; IEEE float32, round to
nearest even, no FMA contraction, no fast-math, no flush-to-zero needed since no subnormals occur):

Philox4x32-10 (Salmon et al., SC'11; Random123): key (k0, k1) = (seed_lo, seed_hi); element i
(row-major flat index) of a tensor uses counter (c0, c1, c2, c3) = (i, stream, step, 0). Ten rounds;
before rounds 1..9, k0 += 0x9E3779B9, k1 += 0xBB67AE85 (mod 2^32). One round:
    (hi0, lo0) = 0xD2511F53 * c0 (64-bit product), (hi1, lo1) = 0xCD9E8D57 * c2
    (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
The outputs are words w0..w3 = the final (c0, c1, c2, c3).

uniform (element in [0, 1)):  float32(w0 >> 8) * 2^-24   (exact).
normal (Box-Muller, one value per element, words w0 and w1 of the element's counter):
    u1 = float32((w0 >> 8) + 1) * 2^-24     in (0, 1], exact
    u2 = float32(w1 >> 8) * 2^-24           in [0, 1), exact
    z  = sqrt(-2 * log(u1)) * cos(2*pi*u2), with log and cos as the float32 sequences below.
  log(u), u in (0, 1] (Cephes logf): with the bits of u, e = (bits >> 23) - 126 (signed int) and
    m = float from bits (bits & 0x7FFFFF) | 0x3F000000 (so u = m * 2^e, m in [0.5, 1)).
    If m < 0.70710677 (float32 of sqrt(1/2)): e = e - 1, x = (m + m) - 1 else x = m - 1.
    z = x*x; p = 7.0376836292e-2; then p = p*x + c for c in (-1.1514610310e-1, 1.1676998740e-1,
    -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
    3.3333331174e-1); y = (p*x)*z; f = float32(e); y = y + (-2.12194440e-4 * f);
    y = y + (-0.5 * z); r = x + y; log = r + (0.693359375 * f).
  cos(2*pi*u), u in [0, 1): t = u - 0.5; a = |t|; flip = a > 0.25; b = flip ? 0.5 - a : a;
    use_sin = b > 0.125; d = use_sin ? 0.25 - b : b (these steps are exact);
    x = d * 6.2831855 (float32 of 2*pi); z = x*x;
    sin = x + (x*z) * ((-1.9515295891e-4*z + 8.3321608736e-3)*z + -1.6666654611e-1)
    cos = (1 - 0.5*z) + (z*z) * ((2.443315711809948e-5*z + -1.388731625493765e-3)*z
          + 4.166664568298827e-2)
    v = use_sin ? sin : cos;  result = flip ? v : -v.
  Every constant above is rounded to float32 first; `a*b + c` is a multiply then an add (no FMA).
Values are generated in float32 and converted to f64 for f64 graphs (the same draws either way).

Invariants: random ops have no gradient; results depend only on (seed, step, stream, shape).
"""

from __future__ import annotations

import numpy as np

from ..errors import InternalCompilerError, NetTypeError, ShapeError
from ..ir import FLOAT_DTYPES, TensorType, np_dtype
from .base import Primitive, register, require_dtype
from .leaves import RNG_KEY_TYPE

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint32(0x9E3779B9), np.uint32(0xBB67AE85)
_LO = np.uint64(0xFFFFFFFF)
_F = np.float32


def philox4x32(counter: tuple, key: tuple, rounds: int = 10) -> tuple[np.ndarray, ...]:
    """Philox4x32 on uint32 arrays (broadcast together) with a (k0, k1) key."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint32) for c in counter)
    k0, k1 = np.uint32(key[0]), np.uint32(key[1])
    with np.errstate(over="ignore"):
        for r in range(rounds):
            if r:
                k0, k1 = k0 + _W0, k1 + _W1
            p0 = _M0 * c0.astype(np.uint64)
            p1 = _M1 * c2.astype(np.uint64)
            hi0, lo0 = (p0 >> np.uint64(32)).astype(np.uint32), (p0 & _LO).astype(np.uint32)
            hi1, lo1 = (p1 >> np.uint64(32)).astype(np.uint32), (p1 & _LO).astype(np.uint32)
            c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def _words(key: np.ndarray, stream: int, size: int) -> tuple[np.ndarray, ...]:
    seed_lo, seed_hi, step = np.asarray(key).view(np.uint32)
    idx = np.arange(size, dtype=np.uint32)
    return philox4x32((idx, np.uint32(stream), step, np.uint32(0)), (seed_lo, seed_hi))


_TWO_M24 = _F(2.0 ** -24)


def uniform_f32(key: np.ndarray, stream: int, size: int) -> np.ndarray:
    w0 = _words(key, stream, size)[0]
    return (w0 >> np.uint32(8)).astype(_F) * _TWO_M24


_LOG_P = [_F(c) for c in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                          1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                          3.3333331174e-1)]


def log_f32(u: np.ndarray) -> np.ndarray:
    """Natural log of float32 u in (0, 1] by the exact sequence in the module docstring."""
    bits = u.view(np.uint32)
    e = (bits >> np.uint32(23)).astype(np.int32) - np.int32(126)
    m = ((bits & np.uint32(0x7FFFFF)) | np.uint32(0x3F000000)).view(_F)
    small = m < _F(0.70710677)
    e = np.where(small, e - np.int32(1), e)
    x = np.where(small, (m + m) - _F(1), m - _F(1))
    z = x * x
    p = np.full_like(x, _LOG_P[0])
    for c in _LOG_P[1:]:
        p = p * x + c
    y = (p * x) * z
    f = e.astype(_F)
    y = y + _F(-2.12194440e-4) * f
    y = y + _F(-0.5) * z
    return (x + y) + _F(0.693359375) * f


def cos_2pi_f32(u: np.ndarray) -> np.ndarray:
    """cos(2*pi*u) for float32 u in [0, 1) by the exact sequence in the module docstring."""
    a = np.abs(u - _F(0.5))
    flip = a > _F(0.25)
    b = np.where(flip, _F(0.5) - a, a)
    use_sin = b > _F(0.125)
    d = np.where(use_sin, _F(0.25) - b, b)
    x = d * _F(2 * np.pi)
    z = x * x
    sin = x + (x * z) * ((_F(-1.9515295891e-4) * z + _F(8.3321608736e-3)) * z
                         + _F(-1.6666654611e-1))
    cos = (_F(1) - _F(0.5) * z) + (z * z) * ((_F(2.443315711809948e-5) * z
                                              + _F(-1.388731625493765e-3)) * z
                                             + _F(4.166664568298827e-2))
    v = np.where(use_sin, sin, cos)
    return np.where(flip, v, -v)


def normal_f32(key: np.ndarray, stream: int, size: int) -> np.ndarray:
    w0, w1, _, _ = _words(key, stream, size)
    u1 = ((w0 >> np.uint32(8)) + np.uint32(1)).astype(_F) * _TWO_M24
    u2 = (w1 >> np.uint32(8)).astype(_F) * _TWO_M24
    return np.sqrt(_F(-2) * log_f32(u1)) * cos_2pi_f32(u2)


class _Random(Primitive):
    differentiable = False

    def __init__(self, name: str, draw):
        self.name = name
        self.draw = draw

    def canonicalize(self, in_types, attrs, float_dtype):
        shape = tuple(attrs["shape"])
        if not all(isinstance(d, (int, np.integer)) and d >= 1 for d in shape):
            raise ShapeError(f"{self.name}: shape must be a list of positive integers, "
                             f"got {list(shape)}")
        attrs["shape"] = tuple(int(d) for d in shape)
        if int(np.prod(attrs["shape"], dtype=np.int64)) >= 2 ** 32:
            raise ShapeError(f"{self.name}: at most 2^32 - 1 elements per random tensor")
        stream = attrs.get("stream")
        if not isinstance(stream, (int, np.integer)) or not 0 <= stream < 2 ** 32:
            raise InternalCompilerError(f"{self.name}: stream must be a uint32, got {stream!r}")
        attrs.setdefault("dtype", float_dtype)
        if attrs["dtype"] not in FLOAT_DTYPES:
            raise NetTypeError(f"{self.name}: dtype must be f32 or f64, got {attrs['dtype']!r}")
        return attrs

    def infer(self, in_types, attrs):
        (key,) = in_types
        require_dtype(self.name, key, ("i32",), "the key")
        if key != RNG_KEY_TYPE:
            raise InternalCompilerError(f"{self.name} takes the rng key, not {key}")
        return TensorType(attrs["shape"], attrs["dtype"])

    def reference(self, args, attrs, ctx):
        size = int(np.prod(attrs["shape"], dtype=np.int64))
        out = self.draw(args[0], attrs["stream"], size).reshape(attrs["shape"])
        return out.astype(np_dtype(attrs["dtype"]))


register(_Random("random_uniform", uniform_f32))
register(_Random("random_normal", normal_f32))
