"""The primitive contract and registry, plus helpers shared by the op families.

Takes: nothing at import; op-family modules call `register` with one `Primitive` per op.
Gives: `Primitive` (canonicalize, infer, reference, vjp), `PRIMITIVES`, `EvalContext` (what the
interpreter passes to references), and helpers: NumPy-style broadcasting with messages that show
both types, axis normalisation, `unbroadcast` (sum a cotangent back to an input's shape) and `emit`.

Invariants: a primitive is defined once; `canonicalize` is idempotent; `infer` raises only
`ShapeError`/`NetTypeError` for user mistakes (g.add attaches the location); `vjp` returns one
cotangent (same type as the input) or None per input; references are vectorised NumPy and return
exactly the inferred shape and dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InternalCompilerError, NetTypeError, ShapeError, SourceLoc
from ..ir import FLOAT_DTYPES, TensorType

if TYPE_CHECKING:
    from ..ir import Graph, Node


@dataclass(frozen=True)
class EvalContext:
    """Run-time facts a reference may need: the random seed and step, the graph's float dtype."""

    seed: int = 0
    step: int = 0
    float_dtype: str = "f32"


class Primitive:
    """One IR operation. Subclasses override what differs; `arity` None means variadic."""

    name: str = ""
    arity: int | None = 1
    differentiable: bool = True

    def canonicalize(self, in_types: list[TensorType], attrs: dict, float_dtype: str) -> dict:
        """Validate and normalise attributes (lists to tuples, negative axes...)."""
        return attrs

    def infer(self, in_types: list[TensorType], attrs: dict) -> TensorType:
        raise NotImplementedError(self.name)

    def reference(self, args: list[np.ndarray], attrs: dict, ctx: EvalContext) -> np.ndarray:
        raise NotImplementedError(self.name)

    def vjp(self, g: Graph, node: Node, ct: Node) -> list[Node | None]:
        """Cotangents of the inputs given the cotangent `ct` of the output."""
        if not self.differentiable:
            return [None] * len(node.inputs)
        raise InternalCompilerError(f"no VJP rule for {self.name}", node.loc)

    def __repr__(self) -> str:
        return f"<primitive {self.name}>"


PRIMITIVES: dict[str, Primitive] = {}


I32_MIN, I32_MAX = -2**31, 2**31 - 1


def number_of_type(v: int | float, dtype: str, loc: SourceLoc | None) -> int | float:
    """A number of the model (a literal, a model parameter, a built-in's argument) as a value of
    `dtype`, or a located error: an i32 takes integers in its range only, a float type any number
    that does not round to infinity (NumPy would warn or raise OverflowError)."""
    if dtype == "i32":
        if isinstance(v, float) and not v.is_integer():
            raise NetTypeError(f"the number {v} cannot meet an i32 tensor (it is not an "
                               "integer)", loc)
        if not I32_MIN <= int(v) <= I32_MAX:
            raise NetTypeError(f"the number {v} cannot meet an i32 tensor (i32 holds "
                               f"{I32_MIN}..{I32_MAX})", loc)
        return int(v)
    if dtype in FLOAT_DTYPES:
        np_type = np.float32 if dtype == "f32" else np.float64
        try:
            with np.errstate(over="ignore"):
                big = not np.isfinite(np_type(float(v)))
        except OverflowError:  # an integer literal past any float
            big = True
        if big:
            raise NetTypeError(f"the number {v} is too large for {dtype} (at most "
                               f"{float(np.finfo(np_type).max):.8g})", loc)
    return v

def register(prim: Primitive) -> Primitive:
    if not prim.name or prim.name in PRIMITIVES:
        raise InternalCompilerError(f"primitive {prim.name!r} registered twice or unnamed")
    PRIMITIVES[prim.name] = prim
    return prim


# ---------------------------------------------------------------------- type helpers

def broadcast_shapes(op: str, *types: TensorType) -> tuple[int, ...]:
    """NumPy broadcasting of the shapes of `types`; the error names every operand's type."""
    rank = max(t.rank for t in types)
    out = []
    for i in range(rank):
        dims = {t.shape[t.rank - rank + i] for t in types if t.rank - rank + i >= 0}
        dims.discard(1)
        if len(dims) > 1:
            shown = " with ".join(str(t) for t in types)
            raise ShapeError(f"{op}: cannot broadcast {shown}")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def same_dtype(op: str, *types: TensorType) -> str:
    dtypes = {t.dtype for t in types}
    if len(dtypes) > 1:
        shown = " and ".join(str(t) for t in types)
        # the language has no cast: say what does convert (a comparison's bool via where)
        hint = "; element types never mix implicitly"
        if "bool" in dtypes:
            hint += ": turn a bool into numbers with where(c, 1.0, 0.0)"
        elif dtypes == {"f32", "f64"}:
            hint += ": declare both f64 (param W: f64[...]), or compile with dtype='float64'"
        raise NetTypeError(f"{op}: operands have different dtypes ({shown}){hint}")
    return types[0].dtype


def require_float(op: str, t: TensorType) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise NetTypeError(f"{op} needs a floating-point tensor, got {t}")


def require_dtype(op: str, t: TensorType, dtypes: tuple[str, ...], what: str) -> None:
    if t.dtype not in dtypes:
        raise NetTypeError(f"{op}: {what} must be {' or '.join(dtypes)}, got {t}")


def norm_axis(op: str, axis: int, rank: int) -> int:
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise NetTypeError(f"{op}: axis must be an integer, got {axis!r}")
    if not -rank <= axis < rank:
        raise ShapeError(f"{op}: axis {axis} is out of range for a tensor of rank {rank}")
    return int(axis) % rank


def norm_axes(op: str, axes: object, rank: int) -> tuple[int, ...]:
    """None -> all axes; int or sequence -> sorted non-negative tuple without repeats."""
    if axes is None:
        return tuple(range(rank))
    if isinstance(axes, (int, np.integer)):
        axes = (axes,)
    out = tuple(sorted(norm_axis(op, a, rank) for a in axes))
    if len(set(out)) != len(out):
        raise ShapeError(f"{op}: repeated axis in {tuple(axes)}")
    return out


def pair(op: str, what: str, v: object, *, lo: int | None = None,
         loc: SourceLoc | None = None) -> tuple[int, int]:
    """An int or a pair of ints (stride, padding, window) as a pair; each at least `lo` when
    given. Errors name `what` ("stride", "argument 'k'") and are located at `loc`."""
    def is_int(x):
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

    if is_int(v):
        out = int(v), int(v)
    elif isinstance(v, (tuple, list)) and len(v) == 2 and all(is_int(x) for x in v):
        out = int(v[0]), int(v[1])
    else:
        raise NetTypeError(f"{op}: {what} must be an integer or a pair of integers, got "
                           f"{_shown(v)}", loc)
    if lo is not None and min(out) < lo:
        raise ShapeError(f"{op}: {what} must be >= {lo}, got {_shown(v)}", loc)
    return out


def _shown(v: object) -> str:
    """A static value as the language writes it (true, [2, 0])."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_shown(x) for x in v) + "]"
    return str(v)


def np_float(dtype: str) -> type:
    return np.float64 if dtype == "f64" else np.float32


# ---------------------------------------------------------------------- emit helpers

def emit(g: Graph, op: str, inputs: list[Node], loc, **attrs) -> Node:
    """g.add with keyword attributes (keeps VJP rules short)."""
    return g.add(op, inputs, attrs or None, loc)


def scalar(g: Graph, value: float, like: Node, loc) -> Node:
    """A shape-() constant of `like`'s dtype."""
    return g.const(value, like.type.dtype, loc)


def unbroadcast(g: Graph, ct: Node, target: TensorType, loc) -> Node:
    """Sum `ct` over the axes NumPy broadcasting added or stretched, giving `target`'s shape."""
    if ct.type.shape == target.shape:
        return ct
    lead = ct.type.rank - target.rank
    axes = list(range(lead))
    axes += [lead + i for i, d in enumerate(target.shape)
             if d == 1 and ct.type.shape[lead + i] != 1]
    if axes:
        ct = emit(g, "sum", [ct], loc, axes=tuple(axes), keepdims=False)
    if ct.type.shape != target.shape:
        ct = emit(g, "reshape", [ct], loc, shape=target.shape)
    return ct
