"""Stage 2b — expressions: the syntax of one expression to graph nodes or compile-time values.

Takes: an expression and the current frame (bindings, layer instance, repeat path) of
`build_ir.Builder`. Gives: a value — a graph `Node` (a tensor), a compile-time number, bool or
string, a `Shape` (from `x.shape`), a list, a language-level tuple, or a layer `Instance` (for
dotted paths such as `fc1.W` and for `l2(fc1)`).

Compile-time arithmetic stays compile-time: `dim / heads` on integers is an integer when exact (a
float otherwise), so shapes can be computed. A number meeting a tensor becomes a constant of the
tensor's dtype. Argument matching for built-in functions (arity, keywords, kinds) lives here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import syntax as S
from .errors import NetTypeError, ShapeError, SourceLoc, UndefinedName, suggestion
from .ir import Node
from .named_calls import REQUIRED
from .ops.base import number_of_type, pair
from .ops.builtins import BUILTINS, Builtin, Param

_BINOPS = {"+": "add", "-": "sub", "*": "mul", "/": "div", "**": "pow", "@": "matmul",
           "<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne"}


@dataclass(eq=False)
class Instance:
    """One layer instance: its dotted name, its parameters and its child instances by call site."""

    name: str
    layer: str
    loc: SourceLoc | None = None
    params: dict[str, Node] = field(default_factory=dict)
    children: dict[tuple, Instance] = field(default_factory=dict)
    by_name: dict[str, Instance] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def prefix(self) -> str:
        return f"{self.name}." if self.name else ""

    def all_params(self) -> list[Node]:
        out = list(self.params.values())
        for child in self.by_name.values():
            out += child.all_params()
        return out


class Shape(tuple):
    """The static shape of a tensor, as `x.shape` gives it (indexable; negative indices work)."""


def is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def python_value(v):
    """A value given from Python (a model parameter, a train setting) with NumPy scalars made
    Python ones, in lists and tuples too: np.int64(64) from a grid is the number 64."""
    if type(v).__module__ == "numpy" and getattr(v, "ndim", None) == 0 and hasattr(v, "item"):
        return v.item()
    if isinstance(v, list | tuple):
        return type(v)(python_value(x) for x in v)
    return v


def describe(v) -> str:
    if isinstance(v, Node):
        return f"a tensor {v.type}"
    if isinstance(v, bool):
        return f"the boolean {str(v).lower()}"
    if is_number(v):
        return f"the number {v}"
    if isinstance(v, str):
        return f"the string \"{v}\""
    if isinstance(v, Instance):
        return f"the layer instance '{v.name}'"
    if isinstance(v, Shape):
        return f"the shape {list(v)}"
    if isinstance(v, tuple):
        return f"a tuple of {len(v)} values"
    if isinstance(v, list):
        return f"a list of {len(v)} values"
    return type(v).__name__


def static_arith(op: str, a, b, loc: SourceLoc):
    """`a op b` on compile-time numbers (integers stay integers where exact)."""
    try:
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            if isinstance(a, int) and isinstance(b, int) and b != 0 and a % b == 0:
                return a // b
            return a / b
        if op == "**":
            r = a ** b
            if isinstance(r, complex) or (isinstance(r, float) and math.isnan(r)):
                raise ValueError("not a real number")
            return r
        if op == "@":
            raise NetTypeError("'@' multiplies tensors, not numbers", loc)
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b,
                "!=": a != b}[op]
    except ZeroDivisionError:
        raise NetTypeError("division by zero in a compile-time expression", loc) from None
    except (OverflowError, ValueError) as e:
        raise NetTypeError(f"compile-time arithmetic failed: {e}", loc) from None


class ExprMixin:
    """Expression evaluation; mixed into build_ir.Builder (uses self.g, self.frame, ...)."""

    # ------------------------------------------------------------------ entry
    def eval(self, e: S.Expr):
        m = getattr(self, "_e_" + type(e).__name__, None)
        if m is None:
            raise NetTypeError(f"'{type(e).__name__}' cannot be used here", e.loc)
        return m(e)

    def tensor(self, e: S.Expr, what: str = "a tensor") -> Node:
        v = self.eval(e)
        if isinstance(v, Node):
            return v
        if is_number(v) or isinstance(v, bool):
            return self.number_const(v, None, e.loc)
        raise NetTypeError(f"expected {what}, got {describe(v)}", e.loc)

    def static_int(self, e: S.Expr, what: str) -> int:
        v = self.eval(e)
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool):
            raise NetTypeError(f"{what} must be a compile-time integer, got {describe(v)}", e.loc)
        return v

    def number_const(self, v, like: object, loc: SourceLoc) -> Node:
        if isinstance(v, bool):
            return self.g.const(v, "bool", loc)
        # `like` is the other operand: a tensor gives its dtype, a plain number or bool does not
        dtype = like.type.dtype if isinstance(like, Node) and like.type.dtype != "bool" \
            else self.g.float_dtype
        return self.g.const(number_of_type(v, dtype, loc), dtype, loc)

    # ------------------------------------------------------------------ atoms
    def _e_Num(self, e: S.Num):
        return e.value

    def _e_Str(self, e: S.Str):
        return e.value

    def _e_Bool(self, e: S.Bool):
        return e.value

    def _e_Name(self, e: S.Name):
        return self.lookup(e.id, e.loc)

    def _e_ListExpr(self, e: S.ListExpr):
        return [self.eval(i) for i in e.items]

    def _e_TupleExpr(self, e: S.TupleExpr):
        return tuple(self.eval(i) for i in e.items)

    def _e_Neg(self, e: S.Neg):
        v = self.eval(e.operand)
        if is_number(v):
            return -v
        if isinstance(v, Node):
            return self.g.add("neg", [v], None, e.loc)
        raise NetTypeError(f"cannot negate {describe(v)}", e.loc)

    def _e_BinOp(self, e: S.BinOp):
        # walk a left-associative chain iteratively (long sums must not exhaust the stack)
        spine = []
        while isinstance(e, S.BinOp):
            spine.append(e)
            e = e.left
        value = self.eval(e)
        for node in reversed(spine):
            value = self._binop(node, value, self.eval(node.right))
        return value

    def _binop(self, e: S.BinOp, a, b):
        if is_number(a) and is_number(b):
            return static_arith(e.op, a, b, e.loc)
        if isinstance(a, bool) and isinstance(b, bool) and e.op in ("==", "!="):
            return (a == b) if e.op == "==" else (a != b)
        for v, side in ((a, e.left), (b, e.right)):
            if not (isinstance(v, Node) or is_number(v) or isinstance(v, bool)):
                raise NetTypeError(f"'{e.op}' cannot take {describe(v)}", side.loc)
        if not isinstance(a, Node):
            a = self.number_const(a, b, e.left.loc)
        if not isinstance(b, Node):
            b = self.number_const(b, a, e.right.loc)
        return self.g.add(_BINOPS[e.op], [a, b], None, e.loc)

    def _e_Attr(self, e: S.Attr):
        obj = self.eval(e.obj)
        if isinstance(obj, Node):
            if e.attr == "shape":
                return Shape(obj.type.shape)
            if e.attr in ("rank", "ndim"):
                return obj.type.rank
            raise NetTypeError(f"a tensor has no attribute '{e.attr}' (it has .shape and "
                               ".rank)", e.loc)
        if isinstance(obj, Instance):
            if e.attr in obj.params:
                return obj.params[e.attr]
            if e.attr in obj.by_name:
                return obj.by_name[e.attr]
            known = list(obj.params) + list(obj.by_name)
            raise UndefinedName(f"layer instance '{obj.name}' has no parameter or sub-layer "
                                f"'{e.attr}'{suggestion(e.attr, known)}", e.loc)
        raise NetTypeError(f"{describe(obj)} has no attribute '{e.attr}'", e.loc)

    def _e_Index(self, e: S.Index):
        obj = self.eval(e.obj)
        if isinstance(obj, tuple | list) and not isinstance(obj, Node):
            if len(e.items) != 1 or isinstance(e.items[0], S.Slice | S.EllipsisItem):
                raise NetTypeError(f"index {describe(obj)} with one integer", e.loc)
            i = self.static_int(e.items[0], "an index")
            if not -len(obj) <= i < len(obj):
                raise ShapeError(f"index {i} is out of range for {describe(obj)}",
                                 e.items[0].loc)
            return obj[i]
        if not isinstance(obj, Node):
            raise NetTypeError(f"cannot index {describe(obj)}", e.loc)
        return self.index_tensor(obj, e)

    def index_tensor(self, x: Node, e: S.Index) -> Node:
        items = list(e.items)
        n_ell = sum(isinstance(i, S.EllipsisItem) for i in items)
        if n_ell > 1:
            raise ShapeError("an index may hold at most one '...'", e.loc)
        n_axes = len(items) - n_ell
        if n_axes > x.type.rank:
            raise ShapeError(f"too many indices ({n_axes}) for a rank-{x.type.rank} tensor "
                             f"{x.type}", e.loc)
        if n_ell:
            k = next(j for j, i in enumerate(items) if isinstance(i, S.EllipsisItem))
            items[k:k + 1] = [None] * (x.type.rank - n_axes)
        starts, stops, steps, drop = [], [], [], []
        for ax, item in enumerate(items):
            n = x.type.shape[ax]
            if item is None:
                starts.append(None), stops.append(None), steps.append(None)
            elif isinstance(item, S.Slice):
                parts = [None if p is None else self.static_int(p, "a slice bound")
                         for p in (item.lo, item.hi, item.step)]
                starts.append(parts[0]), stops.append(parts[1]), steps.append(parts[2])
            else:
                v = self.eval(item)
                if isinstance(v, Node):
                    raise NetTypeError("indexing with a tensor (fancy indexing) is not "
                                       "supported; use a compile-time integer", item.loc)
                i = self.static_int(item, "an index")
                if not -n <= i < n:
                    raise ShapeError(f"index {i} is out of range for axis {ax} of size {n} "
                                     f"in {x.type}", item.loc)
                i = i % n
                starts.append(i), stops.append(i + 1), steps.append(1)
                drop.append(ax)
        y = self.g.add("slice", [x], {"starts": tuple(starts), "stops": tuple(stops),
                                      "steps": tuple(steps)}, e.loc)
        if drop:
            shape = tuple(d for ax, d in enumerate(y.type.shape) if ax not in drop)
            y = self.g.add("reshape", [y], {"shape": shape}, e.loc)
        return y

    def _e_Slice(self, e: S.Slice):
        raise NetTypeError("a slice ':' is only allowed inside an index x[...]", e.loc)

    def _e_EllipsisItem(self, e: S.EllipsisItem):
        raise NetTypeError("'...' is only allowed inside an index x[...]", e.loc)

    def _e_Call(self, e: S.Call):
        return self.call(e)

    # ------------------------------------------------------------------ built-in functions
    def call_builtin(self, b: Builtin, e: S.Call, args: list, kwargs: dict[str, tuple]):
        """Match arguments to `b`'s parameters, check their kinds and emit."""
        if e.alias is not None:
            raise NetTypeError(f"'as {e.alias}' names a layer instance, but '{b.name}' is a "
                               "function (no parameters)", e.alias_loc or e.loc)
        params = b.params
        item_locs = None
        if b.variadic:  # l1(a, b, c): every positional argument goes into the one list
            item_locs = [loc for _, loc in args]
            args = [([v for v, _ in args], e.loc)] if args else []
        specs = [(p.name, REQUIRED if p.required else None) for p in params]
        bound = self.bind(f"{b.name}()", specs, args, kwargs, e)
        # a number argument takes the type of the first tensor argument that has a number type
        # (where(k > 1, k, 0) with k i32: not the bool condition's, which gives no type)
        like = next((v for p in params if p.kind == "tensor" and p.name in bound
                     for v in [bound[p.name][0]]
                     if isinstance(v, Node) and v.type.dtype != "bool"), None)
        out = {}
        for p in params:
            if p.name in bound:
                v, loc = bound[p.name]
                out[p.name] = self.convert_arg(b.name, p, v, like, loc, item_locs=item_locs)
        return b(self.g, out, e.loc)

    def bind(self, what: str, specs: list[tuple[str, object]], args: list, kwargs: dict,
             e: S.Call) -> dict[str, tuple]:
        """Match (value, loc) arguments to named parameters: name -> (value, loc) for each one
        given. Too many, unknown, repeated and missing (REQUIRED) arguments are located errors."""
        names = [n for n, _ in specs]
        if len(args) > len(specs):
            raise NetTypeError(f"{what} takes at most {len(specs)} argument"
                               f"{'s' if len(specs) != 1 else ''} ({', '.join(names)}), got "
                               f"{len(args)}", args[len(specs)][1])
        bound = {n: a for (n, _), a in zip(specs, args)}
        for k, (v, loc) in kwargs.items():
            if k not in names:
                raise NetTypeError(f"{what} has no parameter '{k}'{suggestion(k, names)} (its "
                                   f"parameters: {', '.join(names)})", loc)
            if k in bound:
                raise NetTypeError(f"{what}: argument '{k}' is given twice", loc)
            bound[k] = (v, loc)
        for n, default in specs:
            if n not in bound and default is REQUIRED:
                raise NetTypeError(f"{what} is missing its argument '{n}'", e.loc)
        return bound

    def convert_arg(self, fname: str, param: Param, v, like, loc, *,
                    item_locs: list | None = None):
        """`v` checked and converted for `param` (its kind; a "pair" at least `param.lo`);
        errors at `loc` (for "tensors", at `item_locs[i]` for the i-th item when the items were
        separate arguments)."""
        kind = param.kind
        what = f"argument '{param.name}'" + (f" ({param.about})" if param.about else "")
        where = f"{fname}(): {what}"
        if kind == "tensor":
            if isinstance(v, Node):
                return v
            if is_number(v) or isinstance(v, bool):
                return self.number_const(v, like, loc)
            raise NetTypeError(f"{where} must be a tensor, got {describe(v)}", loc)
        if kind == "tensors":
            items = v if isinstance(v, list | tuple) and not isinstance(v, Shape) else [v]
            if item_locs is None or len(item_locs) != len(items):
                item_locs = [loc] * len(items)
            # a list literal among the arguments (`l2([fc, out])`) lists its items
            pairs = [(x, item_loc) for item, item_loc in zip(items, item_locs)
                     for x in (item if type(item) in (list, tuple) else [item])]
            out = []
            for item, item_loc in pairs:
                if isinstance(item, Instance):  # a layer instance stands for its weights
                    weights = [p for p in item.all_params() if p.type.rank >= 2]
                    if not weights:
                        raise NetTypeError(_no_weights(fname, item), item_loc)
                    out += weights
                elif isinstance(item, Node):
                    out.append(item)
                else:
                    raise NetTypeError(f"{where} must list tensors, got {describe(item)}",
                                       item_loc)
            if not out:
                raise NetTypeError(f"{where} lists no tensors", loc)
            return out
        if kind == "int":
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            if not isinstance(v, int) or isinstance(v, bool):
                raise NetTypeError(f"{where} must be a compile-time integer, got "
                                   f"{describe(v)}", loc)
            return v
        if kind == "float":
            if not is_number(v):
                raise NetTypeError(f"{where} must be a compile-time number, got "
                                   f"{describe(v)}", loc)
            return float(number_of_type(v, "f64", loc))
        if kind == "bool":
            if not isinstance(v, bool):
                raise NetTypeError(f"{where} must be true or false, got {describe(v)}", loc)
            return v
        if kind == "axes":
            if v is None or (isinstance(v, int) and not isinstance(v, bool)):
                return v
            if isinstance(v, list | tuple) and all(isinstance(i, int) and not isinstance(i, bool)
                                                   for i in v):
                return list(v)
            raise NetTypeError(f"{where} must be an integer or a list of integers, got "
                               f"{describe(v)}", loc)
        if kind == "pair":
            return pair(f"{fname}()", what, v, lo=param.lo, loc=loc)
        if kind == "shape":
            if isinstance(v, list | tuple) and all(isinstance(i, int) and not isinstance(i, bool)
                                                   for i in v):
                return list(v)
            if isinstance(v, list | tuple):
                bad = next(i for i in v if not (isinstance(i, int) and not isinstance(i, bool)))
                raise ShapeError(f"{where}: a shape holds integers, got {describe(bad)}", loc)
            raise NetTypeError(f"{where} must be a shape (a list of integers), got "
                               f"{describe(v)}", loc)
        raise NetTypeError(f"{where}: unknown kind {kind}", loc)


def _no_weights(fname: str, inst: Instance) -> str:
    params = [p.attrs["name"] for p in inst.all_params()]
    if not params:
        return f"{fname}(): layer instance '{inst.name}' has no parameters to regularize"
    return (f"{fname}(): layer instance '{inst.name}' has no weights (parameters of rank >= 2),"
            f" which is what an instance name stands for here; name its parameters instead: "
            f"{', '.join(params)}")


def builtin(name: str) -> Builtin | None:
    return BUILTINS.get(name)
