"""Parameter and state initializers: their names and arguments (checked by build_ir) and sampling.

Takes: an init spec `(name, args)` as stored on param/state nodes, a shape, a NumPy dtype, the
model seed and the tensor's dotted name. Gives: the initial array.

Fan convention: rank 2 `[in, out]` (Dense's `x @ W`): fan_in = shape[0], fan_out = shape[1];
rank >= 3 `[out, in, k...]` (convolution): fan_in = in * prod(k), fan_out = out * prod(k);
rank 1: both = shape[0]; rank 0: both 1. Each tensor draws from its own stream keyed by (seed,
crc32(name)), so adding a parameter never changes the initial values of the others.
"""

from __future__ import annotations

import math
import zlib
from functools import partial

import numpy as np

from .named_calls import REQUIRED

INITIALIZERS: dict[str, tuple[tuple[str, object], ...]] = {
    "zeros": (),
    "ones": (),
    "constant": (("value", REQUIRED),),
    "normal": (("std", 1.0), ("mean", 0.0)),
    "uniform": (("lo", -0.05), ("hi", 0.05)),
    "glorot_uniform": (),
    "glorot_normal": (),
    "he_uniform": (),
    "he_normal": (),
    "orthogonal": (("gain", 1.0),),
}


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


# Elements drawn per call: a tensor is sampled in float64 a chunk at a time and stored in its own
# dtype, so a large float32 parameter never needs a float64 copy of itself (the values are those of
# one draw of the whole tensor: the generator's stream is consumed in the same order).
DRAW_CHUNK = 1 << 20


def initialize(spec: tuple[str, dict], shape: tuple[int, ...], dtype, seed: int,
               name: str) -> np.ndarray:
    """Sample the initial value of tensor `name` (deterministic in seed and name)."""
    kind, args = spec
    rng = np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(name.encode())])
    fan_in, fan_out = fans(shape)
    if kind == "zeros":
        return np.zeros(shape, dtype)
    if kind == "ones":
        return np.ones(shape, dtype)
    if kind == "constant":
        return np.full(shape, float(args["value"]), dtype)
    if kind == "orthogonal":
        out = _orthogonal(rng, shape, float(args.get("gain", 1.0)))
        # reshape: ascontiguousarray makes a 0-d array 1-d
        return np.ascontiguousarray(out, dtype=dtype).reshape(shape)
    if kind == "normal":
        draw = partial(rng.normal, float(args.get("mean", 0.0)), float(args.get("std", 1.0)))
    elif kind == "uniform":
        draw = partial(rng.uniform, float(args.get("lo", -0.05)), float(args.get("hi", 0.05)))
    elif kind == "glorot_uniform":
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        draw = partial(rng.uniform, -limit, limit)
    elif kind == "glorot_normal":
        draw = partial(rng.normal, 0.0, math.sqrt(2.0 / (fan_in + fan_out)))
    elif kind == "he_uniform":
        limit = math.sqrt(6.0 / fan_in)
        draw = partial(rng.uniform, -limit, limit)
    elif kind == "he_normal":
        draw = partial(rng.normal, 0.0, math.sqrt(2.0 / fan_in))
    else:
        raise ValueError(f"unknown initializer {kind!r}")
    out = np.empty(shape, dtype)
    flat = out.reshape(-1)
    for lo in range(0, flat.size, DRAW_CHUNK):
        hi = min(lo + DRAW_CHUNK, flat.size)
        flat[lo:hi] = draw(hi - lo)
    return out


def _orthogonal(rng: np.random.Generator, shape: tuple[int, ...], gain: float) -> np.ndarray:
    if len(shape) < 2:
        return rng.normal(0.0, 1.0, shape) * gain
    rows, cols = shape[0], math.prod(shape[1:])
    a = rng.normal(0.0, 1.0, (max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))  # a uniform draw over orthogonal matrices
    if rows < cols:
        q = q.T
    return gain * q[:rows, :cols].reshape(shape)
