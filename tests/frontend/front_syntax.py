"""Helpers for the front-end tests: short constructors for expected syntax trees, and parsers
of one expression, one statement or one file. Locations never take part in comparisons (the
syntax dataclasses declare them `compare=False`), so every constructor passes `None`."""

from __future__ import annotations

from pathlib import Path

from netc.compiler import syntax as S
from netc.compiler.errors import NetError
from netc.compiler.parse import parse_text

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.rglob("*.net"))

# Terminal names of the grammar and lark internals that must never reach a user.
RAW_TOKEN_NAMES = ("__ANON", "RPAR", "LPAR", "RSQB", "LSQB", "LBRACE", "RBRACE", "_NL", "NAME",
                   "COMMA", "EQUAL", "COLON", "SEMICOLON", "$END", "COMP_OP", "LOSS_KEY", "INT",
                   "FLOAT", "STRING", "_CONTINUATION", "Token(", "Tree(", "PToken", "PNode")


def n(id_: str) -> S.Name:
    return S.Name(None, id=id_)


def num(text: str) -> S.Num:
    value = int(text) if text.isdigit() else float(text)
    return S.Num(None, value=value, text=text)


def string(value: str) -> S.Str:
    return S.Str(None, value=value)


def boolean(value: bool) -> S.Bool:
    return S.Bool(None, value=value)


def binop(op: str, left: S.Expr, right: S.Expr) -> S.BinOp:
    return S.BinOp(None, op=op, left=left, right=right)


def neg(operand: S.Expr) -> S.Neg:
    return S.Neg(None, operand=operand)


def call(func: str, *args: S.Expr, alias: str | None = None, piped: bool = False,
         **kwargs: S.Expr) -> S.Call:
    kws = tuple(S.Keyword(k, v, None) for k, v in kwargs.items())
    return S.Call(None, func=func, args=args, kwargs=kws, alias=alias, piped=piped)


def pipe(func: str, head: S.Expr, *args: S.Expr, alias: str | None = None,
         **kwargs: S.Expr) -> S.Call:
    return call(func, head, *args, alias=alias, piped=True, **kwargs)


def attr(obj: S.Expr, name: str) -> S.Attr:
    return S.Attr(None, obj=obj, attr=name)


def index(obj: S.Expr, *items: S.Expr) -> S.Index:
    return S.Index(None, obj=obj, items=items)


def sl(lo: S.Expr | None = None, hi: S.Expr | None = None, step: S.Expr | None = None) -> S.Slice:
    return S.Slice(None, lo=lo, hi=hi, step=step)


ELLIPSIS = S.EllipsisItem(None)


def lst(*items: S.Expr) -> S.ListExpr:
    return S.ListExpr(None, items=items)


def tup(*items: S.Expr) -> S.TupleExpr:
    return S.TupleExpr(None, items=items)


def ttype(dtype: str | None, *dims: S.Expr) -> S.TensorType:
    return S.TensorType(dtype, dims, None)


def assign(*targets: str, value: S.Expr) -> S.Assign:
    return S.Assign(None, targets=targets, value=value)


def setting(key: str, value: S.Expr) -> S.Setting:
    return S.Setting(None, key=key, value=value)


def pspec(name: str, default: S.Expr | None = None) -> S.ParamSpec:
    return S.ParamSpec(name, default, None)


# --------------------------------------------------------------------------- parsing helpers


def parse_expr(src: str) -> S.Expr:
    """The expression `src`, parsed as the body of a one-line fn."""
    prog = parse_text(f"fn probe(x) = {src}\n", "expr.net")
    (fn,) = prog.items
    (ret,) = fn.body
    (value,) = ret.values
    return value


def parse_stmts(src: str, header: str = "model probe") -> tuple[S.Stmt, ...]:
    """The statements of a model (or of another block given by `header`) whose body is `src`."""
    prog = parse_text(f"{header} {{\n{src}\n}}\n", "stmts.net")
    (item,) = prog.items
    return item.body


def parse_stmt(src: str, header: str = "model probe") -> S.Stmt:
    (stmt,) = parse_stmts(src, header)
    return stmt


def errors_of(text: str, file: str = "bad.net") -> list:
    """The diagnostics `text` gives; fails the test if it parses."""
    try:
        parse_text(text, file)
    except NetError as e:
        return e.diagnostics
    raise AssertionError(f"expected a syntax error for {text!r}")


def error_of(text: str, file: str = "bad.net"):
    diags = errors_of(text, file)
    assert len(diags) == 1, [d.message for d in diags]
    return diags[0]
