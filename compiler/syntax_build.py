"""Stage 1b — the lark parse tree to the frozen syntax tree (`syntax.py`).

Takes: the parse tree of `lalr.py` (PNode/PToken, positions on every node) and the file name.
Gives: a `syntax.Program`. Desugars pipelines into calls, unescapes strings, and rejects what the
grammar lets through but the language does not: keywords used as names, unknown element types,
positional arguments after keyword arguments, and nesting too deep to compile.

Invariant: a plain recursive walk (no lark Transformer), so NetErrors leave it unwrapped.
"""

from __future__ import annotations

from . import syntax as S
from .errors import NetSyntaxError, SourceLoc, suggestion
from .lalr import PNode as Tree
from .lalr import PToken as Token

KEYWORDS = frozenset([
    "import", "model", "layer", "fn", "train", "step", "input", "target", "param", "state",
    "output", "loss", "return", "for", "repeat", "in", "as", "frozen", "true", "false"])
STATEMENT_KEYWORDS = frozenset(
    ["input", "target", "param", "state", "output", "loss", "return", "for", "repeat"])
TOPLEVEL_KEYWORDS = frozenset(["import", "fn", "layer", "model", "train"])
DTYPES = ("f32", "f64", "i32", "bool")
MAX_DEPTH = 200  # expression nesting; deeper input is refused with a clear message

_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "r": "\r", "0": "\0"}


class _Builder:
    def __init__(self, file: str):
        self.file = file

    # ------------------------------------------------------------------ locations
    def loc(self, node: Tree | Token) -> SourceLoc:
        if node.empty if isinstance(node, Tree) else False:
            return SourceLoc(self.file, 1, 1)
        return SourceLoc(self.file, node.line, node.column, node.end_line, node.end_column)

    def name(self, tok: Token, what: str = "name") -> str:
        if tok.value in KEYWORDS:
            raise NetSyntaxError(f"'{tok.value}' is a keyword and cannot be used as a {what}",
                                 self.loc(tok))
        return str(tok.value)

    # ------------------------------------------------------------------ top level
    def program(self, tree: Tree, text: str) -> S.Program:
        items = tuple(self.toplevel(c) for c in tree.children if isinstance(c, Tree))
        return S.Program(SourceLoc(self.file, 1, 1), file=self.file, items=items, text=text)

    def toplevel(self, t: Tree) -> S.Stmt:
        loc = self.loc(t)
        k = t.children
        if t.data == "import_decl":
            return S.Import(loc, path=self.string(k[0]))
        if t.data == "fn_expr":
            value = self.expr(k[2])
            return S.FnDef(loc, name=self.name(k[0]), params=self.params(k[1]),
                           body=(S.Return(value.loc, values=(value,)),), one_line=True)
        if t.data == "fn_block":
            return S.FnDef(loc, name=self.name(k[0]), params=self.params(k[1]),
                           body=self.block(k[2]))
        if t.data == "layer_def":
            return S.LayerDef(loc, name=self.name(k[0]), params=self.params(k[1]),
                              body=self.block(k[2]))
        if t.data == "model_def":
            return S.ModelDef(loc, name=self.name(k[0]), params=self.params(k[1]),
                              body=self.block(k[-1]))
        if t.data == "train_def":
            items = tuple(self.train_item(c) for c in k[1:])
            return S.TrainDef(loc, model=str(k[0].value), items=items, model_loc=self.loc(k[0]))
        raise NetSyntaxError(f"unexpected '{t.data}' at the top level", loc)

    def params(self, t: Tree | None) -> tuple[S.ParamSpec, ...]:
        if t is None:
            return ()
        out = []
        seen: set[str] = set()
        for p in t.children:
            if p is None:
                continue
            name = self.name(p.children[0], "parameter name")
            if name in seen:
                raise NetSyntaxError(f"parameter '{name}' is listed twice", self.loc(p.children[0]))
            seen.add(name)
            default = self.expr(p.children[1]) if p.children[1] is not None else None
            out.append(S.ParamSpec(name, default, self.loc(p)))
        return tuple(out)

    def train_item(self, t: Tree) -> S.Stmt:
        loc = self.loc(t)
        k = t.children
        if t.data == "setting":
            return S.Setting(loc, key=str(k[0].value), value=self.expr(k[1]),
                             key_loc=self.loc(k[0]))
        if t.data == "directive":
            args, kwargs = self.args(k[1])
            call = S.Call(loc, func=str(k[0].value), args=args, kwargs=kwargs,
                          func_loc=self.loc(k[0]))
            return S.Directive(loc, call=call)
        if t.data == "step_block":
            settings = tuple(self.train_item(c) for c in k[1:])
            return S.StepBlock(loc, name=self.name(k[0], "step name"), settings=settings)
        raise NetSyntaxError(f"unexpected '{t.data}' in a train block", loc)

    # ------------------------------------------------------------------ statements
    def block(self, t: Tree, depth: int = 0) -> tuple[S.Stmt, ...]:
        return tuple(self.stmt(c, depth) for c in t.children if isinstance(c, Tree))

    def stmt(self, t: Tree, depth: int = 0) -> S.Stmt:
        loc = self.loc(t)
        if depth > MAX_DEPTH:
            raise NetSyntaxError(f"blocks nested too deeply (more than {MAX_DEPTH} levels)", loc)
        k = t.children
        d = t.data
        if d in ("input_stmt", "target_stmt"):
            return S.InputDecl(loc, name=self.name(k[0]), type=self.tensor_type(k[1]),
                               role="input" if d == "input_stmt" else "target")
        if d in ("param_stmt", "state_stmt"):
            init = self.expr(k[2]) if k[2] is not None else None
            frozen = d == "param_stmt" and k[3] is not None
            return S.ParamDecl(loc, name=self.name(k[0]), type=self.tensor_type(k[1]), init=init,
                               frozen=frozen, kind="param" if d == "param_stmt" else "state")
        if d == "assign":
            names = [c for c in k if isinstance(c, Token)]
            return S.Assign(loc, targets=tuple(self.name(n) for n in names),
                            value=self.expr(k[-1]), target_locs=tuple(self.loc(n) for n in names))
        if d == "update":
            return S.Update(loc, name=self.name(k[0]), value=self.expr(k[1]))
        if d == "output_stmt":
            value = self.expr(k[1]) if k[1] is not None else None
            return S.Output(loc, name=self.name(k[0]), value=value)
        if d == "loss_plain":
            return S.Loss(loc, name=None, value=self.expr(k[0]))
        if d == "loss_named":
            return S.Loss(loc, name=self.name(k[0]), value=self.expr(k[1]))
        if d == "return_stmt":
            return S.Return(loc, values=tuple(self.expr(c) for c in k))
        if d == "for_stmt":
            return S.For(loc, var=self.name(k[0]), start=self.expr(k[1]), stop=self.expr(k[2]),
                         body=self.block(k[3], depth + 1))
        if d == "repeat_stmt":
            var = self.name(k[1]) if k[1] is not None else None
            return S.Repeat(loc, count=self.expr(k[0]), var=var, body=self.block(k[2], depth + 1))
        raise NetSyntaxError(f"unexpected '{d}' in a block", loc)

    def tensor_type(self, t: Tree) -> S.TensorType:
        dtype_tok = t.children[0]
        dtype = None
        if dtype_tok is not None:
            dtype = str(dtype_tok.value)
            if dtype not in DTYPES:
                raise NetSyntaxError(
                    f"unknown element type '{dtype}'{suggestion(dtype, DTYPES)} "
                    f"(types are {', '.join(DTYPES)})", self.loc(dtype_tok))
        dims = tuple(self.expr(c) for c in t.children[1:] if c is not None)
        return S.TensorType(dtype, dims, self.loc(t))

    # ------------------------------------------------------------------ expressions
    def expr(self, t: Tree | Token, depth: int = 0) -> S.Expr:
        if depth > MAX_DEPTH:
            raise NetSyntaxError(
                f"expression nested too deeply (more than {MAX_DEPTH} levels): "
                "split it into several statements", self.loc(t))
        if isinstance(t, Token):  # a bare terminal can only be a name here
            return S.Name(self.loc(t), id=self.name(t))
        d, k, loc, sub = t.data, t.children, self.loc(t), depth + 1
        if d == "name":
            return S.Name(loc, id=self.name(k[0]))
        if d == "int_lit":
            return S.Num(loc, value=int(k[0].value), text=str(k[0].value))
        if d == "float_lit":
            return S.Num(loc, value=float(k[0].value), text=str(k[0].value))
        if d == "string_lit":
            return S.Str(loc, value=self.string(k[0]))
        if d in ("true_lit", "false_lit"):
            return S.Bool(loc, value=d == "true_lit")
        if d == "binop" or d == "compare":
            # a left-associative chain (a + b + c ...) is walked iteratively: its length is not
            # nesting, so it does not count against MAX_DEPTH
            spine = []
            while isinstance(t, Tree) and t.data in ("binop", "compare"):
                spine.append(t)
                t = t.children[0]
            value = self.expr(t, sub)
            for node in reversed(spine):
                value = S.BinOp(self.loc(node), op=str(node.children[1].value), left=value,
                                right=self.expr(node.children[2], sub))
            return value
        if d == "neg":
            return S.Neg(loc, operand=self.expr(k[-1], sub))
        if d == "attr":
            return S.Attr(loc, obj=self.expr(k[0], sub), attr=str(k[1].value))
        if d == "index":
            items = tuple(self.subscript(c, sub) for c in k[1].children if c is not None)
            return S.Index(loc, obj=self.expr(k[0], sub), items=items)
        if d == "list_lit":
            return S.ListExpr(loc, items=tuple(self.expr(c, sub) for c in k if c is not None))
        if d == "tuple_lit":
            return S.TupleExpr(loc, items=tuple(self.expr(c, sub) for c in k if c is not None))
        if d == "call":
            args, kwargs = self.args(k[1], sub)
            alias, alias_loc = self.alias(k[2])
            return S.Call(loc, func=self.name(k[0], "function name"), args=args, kwargs=kwargs,
                          alias=alias, func_loc=self.loc(k[0]), alias_loc=alias_loc)
        if d == "pipe":
            return self.pipe(t, sub)
        raise NetSyntaxError(f"unexpected '{d}' in an expression", loc)

    def pipe(self, t: Tree, depth: int) -> S.Call:
        head = self.expr(t.children[0], depth)
        stage = t.children[1]
        k = stage.children
        func = self.name(k[0], "function name")
        args: tuple[S.Expr, ...] = ()
        kwargs: tuple[S.Keyword, ...] = ()
        alias_tree = None
        if stage.data == "stage_call":
            args, kwargs = self.args(k[1], depth)
            alias_tree = k[2]
        elif stage.data == "stage_alias":
            alias_tree = k[1]
        alias, alias_loc = self.alias(alias_tree)
        return S.Call(head.loc.to(self.loc(stage)), func=func, args=(head, *args), kwargs=kwargs,
                      alias=alias, piped=True, func_loc=self.loc(k[0]), alias_loc=alias_loc)

    def alias(self, t: Tree | None) -> tuple[str | None, SourceLoc | None]:
        if t is None:
            return None, None
        return self.name(t.children[0], "layer name"), self.loc(t.children[0])

    def args(self, t: Tree | None, depth: int = 0) -> tuple[tuple, tuple]:
        if t is None:
            return (), ()
        args: list[S.Expr] = []
        kwargs: list[S.Keyword] = []
        for c in t.children:
            if c is None:
                continue
            if isinstance(c, Tree) and c.data == "kwarg":
                key = str(c.children[0].value)
                if any(kw.name == key for kw in kwargs):
                    raise NetSyntaxError(f"keyword argument '{key}' is given twice",
                                         self.loc(c.children[0]))
                kwargs.append(S.Keyword(key, self.expr(c.children[1], depth), self.loc(c)))
            else:
                if kwargs:
                    raise NetSyntaxError("a positional argument cannot follow keyword arguments",
                                         self.loc(c))
                args.append(self.expr(c, depth))
        return tuple(args), tuple(kwargs)

    def subscript(self, t: Tree | Token, depth: int) -> S.Expr:
        if isinstance(t, Tree) and t.data == "slice":
            parts = [self.expr(c, depth) if c is not None else None for c in t.children]
            parts += [None] * (3 - len(parts))
            return S.Slice(self.loc(t), lo=parts[0], hi=parts[1], step=parts[2])
        if isinstance(t, Tree) and t.data == "ellipsis":
            return S.EllipsisItem(self.loc(t))
        return self.expr(t, depth)

    def string(self, tok: Token) -> str:
        raw = str(tok.value)[1:-1]
        out, i = [], 0
        while i < len(raw):
            ch = raw[i]
            if ch == "\\" and i + 1 < len(raw):
                out.append(_ESCAPES.get(raw[i + 1], "\\" + raw[i + 1]))
                i += 2
            else:
                out.append(ch)
                i += 1
        return "".join(out)


def build_program(tree: Tree, file: str, text: str) -> S.Program:
    """Convert a lark parse tree of the whole file into a `syntax.Program`."""
    return _Builder(file).program(tree, text)
