"""The built-in function table: the bridge from the language's lower-case calls to graph ops.

Takes: (from build_ir) a built-in's name, its arguments already matched to `Param`s and checked for
kind (Nodes for "tensor", lists of Nodes for "tensors", Python values for the static kinds), and
the call's location.
Gives: `BUILTINS` (name -> `Builtin`), `BUILTIN_NAMES` (for "did you mean"), `is_builtin`.

Kinds: "tensor", "tensors" (a list of tensors: concat/stack, and the variadic l1/l2), "int",
"float", "bool", "axes" (an int, a list of ints, or None), "pair" (an int or a pair of ints:
stride, pad and k, each at least the Param's `lo`), "shape" (a list of ints). A `Builtin` with
`variadic=True` collects all its positional arguments into its single "tensors" parameter
(`l2(a, b, c)`). Kinds and `lo` are checked by the builder, located at the argument.

Invariants: `emit` validates argument values and raises NetError subclasses located at the call;
the table covers every lower-case pure function of LANGUAGE.md section 7 (plus log1p, expm1 and
erf, which are primitives anyway).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import NetError, NetTypeError, SourceLoc
from ..ir import Graph, Node
from . import composites as C
from .base import emit as _emit

REQUIRED = object()
KINDS = ("tensor", "tensors", "int", "float", "bool", "axes", "pair", "shape")


@dataclass(frozen=True)
class Param:
    name: str
    kind: str
    default: object = REQUIRED
    lo: int | None = None  # the least value of a "pair" (each of its numbers)
    about: str = ""  # what the argument is, for messages: "the kernel size"

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Builtin:
    name: str
    params: list[Param]
    emit: Callable[[Graph, dict, SourceLoc | None], Node]
    variadic: bool = False
    doc: str = field(default="", compare=False)

    def __call__(self, g: Graph, args: dict, loc: SourceLoc | None) -> Node:
        return self.emit(g, args, loc)


BUILTINS: dict[str, Builtin] = {}


def _def(name: str, params: list[Param], raw, *, variadic: bool = False, doc: str = "") -> None:
    for p in params:
        assert p.kind in KINDS, p

    def emit(g: Graph, args: dict, loc: SourceLoc | None) -> Node:
        """Fill in defaults, then emit; bad values give a NetError located at the call."""
        full = {p.name: args.get(p.name, p.default) for p in params}
        missing = [k for k, v in full.items() if v is REQUIRED]
        if missing:
            raise NetTypeError(f"{name}: missing argument '{missing[0]}'", loc)
        try:
            return raw(g, full, loc)
        except NetError as e:
            if e.loc is None:
                e.diagnostics[0].loc = loc
            raise

    BUILTINS[name] = Builtin(name, params, emit, variadic, doc)


def _t(name: str = "x") -> Param:
    return Param(name, "tensor")


def _pair_or_none(v):
    return tuple(v) if isinstance(v, list) else v


# ---------------------------------------------------------------------- elementwise

for _op in ("exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "abs", "sign", "neg", "tanh",
            "sigmoid", "relu", "erf"):
    _def(_op, [_t()], lambda g, a, loc, _op=_op: _emit(g, _op, [a["x"]], loc))
for _op in ("maximum", "minimum", "pow"):
    _def(_op, [_t("a"), _t("b")], lambda g, a, loc, _op=_op: _emit(g, _op, [a["a"], a["b"]], loc))
_def("where", [_t("c"), _t("a"), _t("b")],
     lambda g, a, loc: _emit(g, "where", [a["c"], a["a"], a["b"]], loc))
_def("leaky_relu", [_t(), Param("alpha", "float", 0.01)],
     lambda g, a, loc: C.leaky_relu(g, a["x"], float(a["alpha"]), loc))
_def("elu", [_t(), Param("alpha", "float", 1.0)],
     lambda g, a, loc: C.elu(g, a["x"], float(a["alpha"]), loc))
for _fn in (C.gelu, C.softplus, C.silu, C.flatten, C.global_avg_pool):
    _def(_fn.__name__, [_t()], lambda g, a, loc, _fn=_fn: _fn(g, a["x"], loc))
_def("clip", [_t(), Param("lo", "float"), Param("hi", "float")],
     lambda g, a, loc: C.clip(g, a["x"], float(a["lo"]), float(a["hi"]), loc))

# ---------------------------------------------------------------------- reductions

_RED = [_t(), Param("axis", "axes", None), Param("keepdims", "bool", False)]
for _op in ("sum", "max", "min"):
    _def(_op, _RED, lambda g, a, loc, _op=_op: _emit(
        g, _op, [a["x"]], loc, axes=_pair_or_none(a["axis"]), keepdims=a["keepdims"]))
for _fn in (C.mean, C.var, C.logsumexp):
    _def(_fn.__name__, _RED, lambda g, a, loc, _fn=_fn: _fn(
        g, a["x"], _pair_or_none(a["axis"]), a["keepdims"], loc))
_def("argmax", [_t(), Param("axis", "int", -1), Param("keepdims", "bool", False)],
     lambda g, a, loc: _emit(g, "argmax", [a["x"]], loc, axis=a["axis"], keepdims=a["keepdims"]))

# ---------------------------------------------------------------------- shape


def _transpose(g: Graph, a: dict, loc) -> Node:
    perm = a["perm"]
    if isinstance(perm, int):
        raise NetTypeError(f"transpose: perm must be a list of axes, got {perm}", loc)
    return _emit(g, "transpose", [a["x"]], loc, perm=None if perm is None else tuple(perm))


_def("reshape", [_t(), Param("shape", "shape")],
     lambda g, a, loc: _emit(g, "reshape", [a["x"]], loc, shape=tuple(a["shape"])))
_def("transpose", [_t(), Param("perm", "axes", None)], _transpose)
_def("concat", [Param("xs", "tensors"), Param("axis", "int", 0)],
     lambda g, a, loc: _emit(g, "concat", list(a["xs"]), loc, axis=a["axis"]))
_def("stack", [Param("xs", "tensors"), Param("axis", "int", 0)],
     lambda g, a, loc: C.stack(g, list(a["xs"]), a["axis"], loc))
_def("broadcast_to", [_t(), Param("shape", "shape")],
     lambda g, a, loc: C.broadcast_to(g, a["x"], a["shape"], loc))
_def("one_hot", [_t("y"), Param("n", "int")],
     lambda g, a, loc: C.one_hot(g, a["y"], a["n"], loc))
_def("zeros", [Param("shape", "shape")], lambda g, a, loc: C.zeros(g, a["shape"], loc))
_def("ones", [Param("shape", "shape")], lambda g, a, loc: C.ones(g, a["shape"], loc))

# ---------------------------------------------------------------------- neural

_def("softmax", [_t(), Param("axis", "int", -1)],
     lambda g, a, loc: C.softmax(g, a["x"], a["axis"], loc))
_def("log_softmax", [_t(), Param("axis", "int", -1)],
     lambda g, a, loc: C.log_softmax(g, a["x"], a["axis"], loc))
_def("conv2d", [_t(), _t("w"), Param("stride", "pair", 1, lo=1), Param("pad", "pair", 0, lo=0)],
     lambda g, a, loc: _emit(g, "conv2d", [a["x"], a["w"]], loc,
                             stride=_pair_or_none(a["stride"]), pad=_pair_or_none(a["pad"])))
for _op in ("max_pool2d", "avg_pool2d"):
    _def(_op, [_t(), Param("k", "pair", lo=1, about="the kernel size"),
               Param("stride", "pair", None, lo=1)],
         lambda g, a, loc, _op=_op: _emit(g, _op, [a["x"]], loc, k=_pair_or_none(a["k"]),
                                          stride=_pair_or_none(a["stride"])))
_def("dropout", [_t(), Param("p", "float")],
     lambda g, a, loc: C.dropout(g, a["x"], float(a["p"]), loc))
_def("layer_norm_fn", [_t(), _t("g"), _t("b"), Param("eps", "float", 1e-5)],
     lambda g, a, loc: C.layer_norm_fn(g, a["x"], a["g"], a["b"], float(a["eps"]), loc))

# ---------------------------------------------------------------------- random

_def("randn", [Param("shape", "shape")], lambda g, a, loc: C.randn(g, a["shape"], loc))
_def("rand", [Param("shape", "shape")], lambda g, a, loc: C.rand(g, a["shape"], loc))

# ---------------------------------------------------------------------- losses, regularizers

_def("cross_entropy", [_t("logits"), _t("labels")],
     lambda g, a, loc: C.cross_entropy(g, a["logits"], a["labels"], loc))
_def("binary_cross_entropy", [_t("logits"), _t("y")],
     lambda g, a, loc: C.binary_cross_entropy(g, a["logits"], a["y"], loc))
for _fn in (C.mse, C.mae):
    _def(_fn.__name__, [_t("pred"), _t("y")],
         lambda g, a, loc, _fn=_fn: _fn(g, a["pred"], a["y"], loc))
_def("huber", [_t("pred"), _t("y"), Param("delta", "float", 1.0)],
     lambda g, a, loc: C.huber(g, a["pred"], a["y"], float(a["delta"]), loc))
for _fn in (C.l1, C.l2):
    _def(_fn.__name__, [Param("ts", "tensors")],
         lambda g, a, loc, _fn=_fn: _fn(g, list(a["ts"]), loc), variadic=True)

BUILTIN_NAMES: tuple[str, ...] = tuple(sorted(BUILTINS))


def is_builtin(name: str) -> bool:
    return name in BUILTINS
