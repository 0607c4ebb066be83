"""The syntax tree: what the parser gives and build_ir reads.

Takes: nothing (plain data).
Gives: frozen dataclasses for every construct of the `.net` language. Every node carries a
`SourceLoc` spanning its text. Pipelines are already desugared: `a -> f(b)` is `Call('f', (a, b),
piped=True)`, and `a -> f` is `Call('f', (a,), piped=True)`. A one-line `fn f(x) = e` has the body
`(Return((e,)),)`.

Invariant: the tree is immutable and holds no lark objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import SourceLoc

# --------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Expr:
    loc: SourceLoc = field(compare=False, repr=False)


@dataclass(frozen=True)
class Num(Expr):
    value: int | float = 0
    text: str = ""


@dataclass(frozen=True)
class Str(Expr):
    value: str = ""


@dataclass(frozen=True)
class Bool(Expr):
    value: bool = False


@dataclass(frozen=True)
class Name(Expr):
    id: str = ""


@dataclass(frozen=True)
class Attr(Expr):
    """`obj.attr`: a dotted parameter path (`fc1.W`) or `x.shape`."""

    obj: Expr = None  # type: ignore[assignment]
    attr: str = ""


@dataclass(frozen=True)
class Slice(Expr):
    """`lo:hi:step` inside an index; each part may be None."""

    lo: Expr | None = None
    hi: Expr | None = None
    step: Expr | None = None


@dataclass(frozen=True)
class EllipsisItem(Expr):
    """`...` inside an index."""


@dataclass(frozen=True)
class Index(Expr):
    """`obj[items]`; each item is an Expr (an integer position), a Slice or an EllipsisItem."""

    obj: Expr = None  # type: ignore[assignment]
    items: tuple[Expr, ...] = ()


@dataclass(frozen=True)
class Keyword:
    name: str
    value: Expr
    loc: SourceLoc = field(compare=False, repr=False)


@dataclass(frozen=True)
class Call(Expr):
    """`func(args, kw = v) as alias`. `piped` marks a call written as a pipeline stage."""

    func: str = ""
    args: tuple[Expr, ...] = ()
    kwargs: tuple[Keyword, ...] = ()
    alias: str | None = None
    piped: bool = False
    func_loc: SourceLoc | None = field(default=None, compare=False, repr=False)
    alias_loc: SourceLoc | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class BinOp(Expr):
    """`left op right` for + - * / @ ** and the comparisons < <= > >= == !=."""

    op: str = ""
    left: Expr = None  # type: ignore[assignment]
    right: Expr = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Neg(Expr):
    operand: Expr = None  # type: ignore[assignment]


@dataclass(frozen=True)
class ListExpr(Expr):
    items: tuple[Expr, ...] = ()


@dataclass(frozen=True)
class TupleExpr(Expr):
    items: tuple[Expr, ...] = ()


# --------------------------------------------------------------------------- statements


@dataclass(frozen=True)
class TensorType:
    """`f32[batch, 64]` or `[n, m]` (dtype None: the default float type)."""

    dtype: str | None
    dims: tuple[Expr, ...]
    loc: SourceLoc = field(compare=False, repr=False)


@dataclass(frozen=True)
class Stmt:
    loc: SourceLoc = field(compare=False, repr=False)


@dataclass(frozen=True)
class InputDecl(Stmt):
    """`input x: T` (role "input") or `target y: T` (role "target")."""

    name: str = ""
    type: TensorType = None  # type: ignore[assignment]
    role: str = "input"


@dataclass(frozen=True)
class ParamDecl(Stmt):
    """`param W: T = init [frozen]` (kind "param") or `state s: T = init` (kind "state")."""

    name: str = ""
    type: TensorType = None  # type: ignore[assignment]
    init: Expr | None = None
    frozen: bool = False
    kind: str = "param"


@dataclass(frozen=True)
class Assign(Stmt):
    """`h = e` or `h, c = e`."""

    targets: tuple[str, ...] = ()
    value: Expr = None  # type: ignore[assignment]
    target_locs: tuple[SourceLoc, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class Update(Stmt):
    """`s <- e`: a state update applied after each training step."""

    name: str = ""
    value: Expr = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Output(Stmt):
    """`output name = e`, or `output name` exporting an existing binding (value None)."""

    name: str = ""
    value: Expr | None = None


@dataclass(frozen=True)
class Loss(Stmt):
    """`loss e` (name None) or `loss name = e`."""

    name: str | None = None
    value: Expr = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Return(Stmt):
    values: tuple[Expr, ...] = ()


@dataclass(frozen=True)
class For(Stmt):
    """`for var in start..stop { body }`: layer calls in the body share parameters."""

    var: str = ""
    start: Expr = None  # type: ignore[assignment]
    stop: Expr = None  # type: ignore[assignment]
    body: tuple[Stmt, ...] = ()


@dataclass(frozen=True)
class Repeat(Stmt):
    """`repeat count [as var] { body }`: layer calls get fresh parameters each iteration."""

    count: Expr = None  # type: ignore[assignment]
    var: str | None = None
    body: tuple[Stmt, ...] = ()


# --------------------------------------------------------------------------- top level


@dataclass(frozen=True)
class ParamSpec:
    """A formal parameter of a fn, layer or model, with its default (None when required)."""

    name: str
    default: Expr | None
    loc: SourceLoc = field(compare=False, repr=False)


@dataclass(frozen=True)
class Import(Stmt):
    path: str = ""


@dataclass(frozen=True)
class FnDef(Stmt):
    name: str = ""
    params: tuple[ParamSpec, ...] = ()
    body: tuple[Stmt, ...] = ()
    one_line: bool = False


@dataclass(frozen=True)
class LayerDef(Stmt):
    name: str = ""
    params: tuple[ParamSpec, ...] = ()
    body: tuple[Stmt, ...] = ()


@dataclass(frozen=True)
class ModelDef(Stmt):
    name: str = ""
    params: tuple[ParamSpec, ...] = ()
    body: tuple[Stmt, ...] = ()


@dataclass(frozen=True)
class Setting(Stmt):
    """`key = value` in a train or step block."""

    key: str = ""
    value: Expr = None  # type: ignore[assignment]
    key_loc: SourceLoc | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Directive(Stmt):
    """A call-shaped train item, e.g. `early_stop(monitor = val_loss, patience = 3)`."""

    call: Call = None  # type: ignore[assignment]


@dataclass(frozen=True)
class StepBlock(Stmt):
    """`step name { loss = ...; params = [...]; optimizer = ... }`."""

    name: str = ""
    settings: tuple[Setting, ...] = ()


@dataclass(frozen=True)
class TrainDef(Stmt):
    model: str = ""
    items: tuple[Setting | Directive | StepBlock, ...] = ()
    model_loc: SourceLoc | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Program(Stmt):
    """One parsed file: its top-level items in order, and its text (for diagnostics)."""

    file: str = ""
    items: tuple[Stmt, ...] = ()
    text: str = field(default="", compare=False, repr=False)


TopLevel = Import | FnDef | LayerDef | ModelDef | TrainDef
