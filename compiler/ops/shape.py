"""Shape primitives: reshape, transpose, broadcast_to, slice (+ adjoint slice_grad), concat, pad.

Takes: any-dtype tensors and static shape attributes.
Gives: the primitives with shape rules, references and VJPs.

Invariants (canonical attrs): reshape's `shape` is complete (a -1 is resolved); transpose's `perm`
is a full permutation; slice has one (start, stop, step) per axis following NumPy basic slicing,
negative steps included, stored so that re-canonicalising changes nothing (a stop that would be
"before index 0" is None); empty slices are refused (no zero-size tensors); pad's `pads` is one
non-negative (lo, hi) pair per axis.
"""

from __future__ import annotations

import numpy as np

from ..errors import NetTypeError, ShapeError
from ..ir import TensorType
from .base import Primitive, broadcast_shapes, emit, norm_axis, register, unbroadcast


def _ints(op: str, what: str, v) -> tuple[int, ...]:
    try:
        out = tuple(v)
    except TypeError:
        raise NetTypeError(f"{op}: {what} must be a list of integers, got {v!r}") from None
    if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in out):
        raise NetTypeError(f"{op}: {what} must be a list of integers, got {v!r}")
    return tuple(int(d) for d in out)


class Reshape(Primitive):
    name = "reshape"

    def canonicalize(self, in_types, attrs, float_dtype):
        t = in_types[0]
        shape = _ints("reshape", "the shape", attrs["shape"])
        if shape.count(-1) > 1 or any(d == 0 or d < -1 for d in shape):
            raise ShapeError(f"reshape: invalid target shape {list(shape)}")
        if -1 in shape:
            known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
            if known == 0 or t.size % known:
                raise ShapeError(f"reshape: cannot reshape {t} ({t.size} elements) to "
                                 f"{list(shape)}")
            shape = tuple(t.size // known if d == -1 else d for d in shape)
        attrs["shape"] = shape
        return attrs

    def infer(self, in_types, attrs):
        t = in_types[0]
        shape = attrs["shape"]
        if int(np.prod(shape, dtype=np.int64)) != t.size:
            raise ShapeError(f"reshape: cannot reshape {t} ({t.size} elements) to {list(shape)}")
        return TensorType(shape, t.dtype)

    def reference(self, args, attrs, ctx):
        return args[0].reshape(attrs["shape"])

    def vjp(self, g, node, ct):
        return [emit(g, "reshape", [ct], node.loc, shape=node.inputs[0].type.shape)]


class Transpose(Primitive):
    name = "transpose"

    def canonicalize(self, in_types, attrs, float_dtype):
        rank = in_types[0].rank
        perm = attrs.get("perm")
        perm = tuple(reversed(range(rank))) if perm is None else _ints("transpose", "perm", perm)
        if sorted(perm) != list(range(rank)):
            raise ShapeError(f"transpose: {list(perm)} is not a permutation of the axes of a "
                             f"rank-{rank} tensor {in_types[0]}")
        attrs["perm"] = perm
        return attrs

    def infer(self, in_types, attrs):
        t = in_types[0]
        return TensorType(tuple(t.shape[p] for p in attrs["perm"]), t.dtype)

    def reference(self, args, attrs, ctx):
        return np.array(np.transpose(args[0], attrs["perm"]))

    def vjp(self, g, node, ct):
        inv = tuple(int(i) for i in np.argsort(node.attrs["perm"]))
        return [emit(g, "transpose", [ct], node.loc, perm=inv)]


class BroadcastTo(Primitive):
    name = "broadcast_to"

    def canonicalize(self, in_types, attrs, float_dtype):
        attrs["shape"] = _ints("broadcast_to", "the shape", attrs["shape"])
        return attrs

    def infer(self, in_types, attrs):
        t = in_types[0]
        target = TensorType(attrs["shape"], t.dtype)
        ok = t.rank <= target.rank
        if ok:
            try:
                ok = broadcast_shapes("broadcast_to", t, target) == target.shape
            except ShapeError:
                ok = False
        if not ok:
            raise ShapeError(f"broadcast_to: cannot broadcast {t} to {target}")
        return target

    def reference(self, args, attrs, ctx):
        return np.array(np.broadcast_to(args[0], attrs["shape"]))

    def vjp(self, g, node, ct):
        return [unbroadcast(g, ct, node.inputs[0].type, node.loc)]


def _canon_slices(op: str, shape: tuple[int, ...], attrs: dict) -> dict:
    rank = len(shape)
    starts, stops, steps = (tuple(attrs.get(k) or ()) for k in ("starts", "stops", "steps"))
    if max(len(starts), len(stops), len(steps)) > rank:
        raise ShapeError(f"{op}: more slice axes than the tensor's rank {rank}")
    out_starts, out_stops, out_steps = [], [], []
    for ax, n in enumerate(shape):
        start, stop, step = (v[ax] if ax < len(v) else None for v in (starts, stops, steps))
        if step == 0:
            raise ShapeError(f"{op}: slice step cannot be zero (axis {ax})")
        a, b, c = slice(start, stop, step).indices(n)
        count = len(range(a, b, c))
        if count == 0:
            raise ShapeError(f"{op}: slice {start}:{stop}:{step} of axis {ax} (size {n}) "
                             "is empty")
        end = a + count * c
        out_starts.append(a)
        out_stops.append(end if end >= 0 else None)
        out_steps.append(c)
    attrs.update(starts=tuple(out_starts), stops=tuple(out_stops), steps=tuple(out_steps))
    return attrs


def _slices(attrs: dict) -> tuple[slice, ...]:
    return tuple(slice(*s) for s in zip(attrs["starts"], attrs["stops"], attrs["steps"]))


def _sliced_shape(shape: tuple[int, ...], attrs: dict) -> tuple[int, ...]:
    return tuple(len(range(*s.indices(n))) for s, n in zip(_slices(attrs), shape))


class Slice(Primitive):
    name = "slice"

    def canonicalize(self, in_types, attrs, float_dtype):
        return _canon_slices("slice", in_types[0].shape, attrs)

    def infer(self, in_types, attrs):
        t = in_types[0]
        return TensorType(_sliced_shape(t.shape, attrs), t.dtype)

    def reference(self, args, attrs, ctx):
        return np.array(args[0][_slices(attrs)])

    def vjp(self, g, node, ct):
        x = node.inputs[0]
        return [emit(g, "slice_grad", [ct], node.loc, in_shape=x.type.shape,
                     starts=node.attrs["starts"], stops=node.attrs["stops"],
                     steps=node.attrs["steps"])]


class SliceGrad(Primitive):
    """The adjoint of slice: a zero tensor of `in_shape` with the input placed at the slice."""

    name = "slice_grad"

    def canonicalize(self, in_types, attrs, float_dtype):
        attrs["in_shape"] = _ints("slice_grad", "in_shape", attrs["in_shape"])
        return _canon_slices("slice_grad", attrs["in_shape"], attrs)

    def infer(self, in_types, attrs):
        t = in_types[0]
        if _sliced_shape(attrs["in_shape"], attrs) != t.shape:
            raise ShapeError(f"slice_grad: {t} does not fit the slice of {list(attrs['in_shape'])}")
        return TensorType(attrs["in_shape"], t.dtype)

    def reference(self, args, attrs, ctx):
        out = np.zeros(attrs["in_shape"], dtype=args[0].dtype)
        out[_slices(attrs)] = args[0]
        return out

    def vjp(self, g, node, ct):
        a = node.attrs
        return [emit(g, "slice", [ct], node.loc, starts=a["starts"], stops=a["stops"],
                     steps=a["steps"])]


class Concat(Primitive):
    name = "concat"
    arity = None

    def canonicalize(self, in_types, attrs, float_dtype):
        if not in_types:
            raise ShapeError("concat: needs at least one tensor")
        attrs["axis"] = norm_axis("concat", attrs.get("axis", 0), max(in_types[0].rank, 1))
        return attrs

    def infer(self, in_types, attrs):
        ax = attrs["axis"]
        first = in_types[0]
        for t in in_types:
            bad = (t.dtype != first.dtype or t.rank != first.rank or first.rank == 0
                   or any(d != e for i, (d, e) in enumerate(zip(t.shape, first.shape)) if i != ax))
            if bad:
                shown = ", ".join(str(u) for u in in_types)
                raise ShapeError(f"concat: cannot join {shown} along axis {ax}")
        size = sum(t.shape[ax] for t in in_types)
        return TensorType(first.shape[:ax] + (size,) + first.shape[ax + 1:], first.dtype)

    def reference(self, args, attrs, ctx):
        return np.concatenate(args, axis=attrs["axis"])

    def vjp(self, g, node, ct):
        ax = node.attrs["axis"]
        out, lo = [], 0
        for x in node.inputs:
            hi = lo + x.type.shape[ax]
            starts = (None,) * ax + (lo,)
            stops = (None,) * ax + (hi,)
            out.append(emit(g, "slice", [ct], node.loc, starts=starts, stops=stops))
            lo = hi
        return out


class Pad(Primitive):
    """Constant padding: `pads` = one (lo, hi) pair per axis, filled with `value`."""

    name = "pad"

    def canonicalize(self, in_types, attrs, float_dtype):
        t = in_types[0]
        pads = tuple(_ints("pad", "each (lo, hi) pair", p) for p in attrs["pads"])
        if len(pads) != t.rank or any(len(p) != 2 or min(p) < 0 for p in pads):
            raise ShapeError(f"pad: need one non-negative (lo, hi) pair per axis of {t}, "
                             f"got {list(pads)}")
        attrs["pads"] = pads
        attrs["value"] = float(attrs.get("value", 0.0))
        return attrs

    def infer(self, in_types, attrs):
        t = in_types[0]
        return TensorType(tuple(d + lo + hi for d, (lo, hi) in zip(t.shape, attrs["pads"])),
                          t.dtype)

    def reference(self, args, attrs, ctx):
        x = args[0]
        return np.pad(x, attrs["pads"], constant_values=x.dtype.type(attrs["value"]))

    def vjp(self, g, node, ct):
        pads = node.attrs["pads"]
        shape = node.inputs[0].type.shape
        return [emit(g, "slice", [ct], node.loc, starts=tuple(lo for lo, _ in pads),
                     stops=tuple(lo + d for (lo, _), d in zip(pads, shape)))]


for _p in (Reshape(), Transpose(), BroadcastTo(), Slice(), SliceGrad(), Concat(), Pad()):
    register(_p)
