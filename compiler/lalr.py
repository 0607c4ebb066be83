"""Stage 1a — lex and parse `.net` text with the LALR(1) tables of grammar/net.lark.

Takes: source text. Gives: a parse tree of `PNode`s and `PToken`s (the shapes lark would build with
`maybe_placeholders=True`, positions on every node), or raises `ParseFailure` describing the first
error: the offending token (or character), the tokens the parser would accept there, the previous
token and the brackets open at that point.

Why not lark's own parser loop: lark builds the tables from the grammar (the grammar stays the
single source of truth), but its pure-Python lexer and tree builder run at ~8 s per MB. One master
regex and a tight shift/reduce loop over the same tables run at ~2.5 s per MB (linear: callers pause
the cyclic GC). Keywords are reserved everywhere (the lexer is not contextual).

Newlines: a newline inside ( ) or [ ], or after a token that cannot end an expression, does not
end a statement; the grammar's _NL terminal already refuses to match before a line that starts
with an operator (its twin _CONTINUATION is ignored like a space). Brackets are matched here so
that an unclosed or mismatched bracket is reported where it was opened.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from importlib import resources

from lark import Lark
from lark.parsers.lalr_analysis import Shift

OPENERS = {"LPAR": ("RPAR", ")"), "LSQB": ("RSQB", "]"), "LBRACE": ("RBRACE", "}")}
CLOSERS = {"RPAR": "LPAR", "RSQB": "LSQB", "RBRACE": "LBRACE"}
# Tokens after which a newline cannot end a statement.
CONTINUES_AFTER = frozenset({"PLUS", "MINUS", "STAR", "SLASH", "AT", "POW", "COMP_OP", "COMMA",
                             "EQUAL", "DOT", "COLON", "ARROW", "LARROW", "RANGE"})
_FRIENDLY = {"->": "ARROW", "<-": "LARROW", "..": "RANGE", "...": "ELLIPSIS"}


class PToken:
    """A token: its terminal name, text and span (1-based lines/cols, exclusive end col)."""

    __slots__ = ("type", "value", "line", "column", "end_line", "end_column", "start_pos",
                 "end_pos")

    def __init__(self, type_, value, line, column, end_line, end_column, start_pos, end_pos):
        self.type, self.value = type_, value
        self.line, self.column, self.end_line, self.end_column = line, column, end_line, end_column
        self.start_pos, self.end_pos = start_pos, end_pos

    def __repr__(self) -> str:
        return f"PToken({self.type}, {self.value!r}, {self.line}:{self.column})"


class PNode:
    """A parse-tree node: rule (or alias) name, children (nodes, tokens or None), span."""

    __slots__ = ("data", "children", "line", "column", "end_line", "end_column", "empty")

    def __init__(self, data, children, start, end):
        self.data, self.children = data, children
        if start is None:
            self.empty = True
            self.line = self.column = self.end_line = self.end_column = 0
        else:
            self.empty = False
            self.line, self.column = start.line, start.column
            self.end_line, self.end_column = end.end_line, end.end_column

    def __repr__(self) -> str:
        return f"PNode({self.data}, {self.children!r})"


@dataclass
class ParseFailure(Exception):
    """The first error: an unexpected token, an unexpected character, or a bracket error."""

    kind: str  # "token" | "char" | "number" | "unclosed" | "mismatch"
    token: PToken | None = None
    accepts: set[str] = field(default_factory=set)
    prev: PToken | None = None
    open_brackets: list[PToken] = field(default_factory=list)
    pos: int = 0
    line: int = 1
    column: int = 1


class _Tables:
    """Everything derived once from the grammar: lexer regex, parse table, reduce recipes."""

    def __init__(self, lark: Lark):
        pt = lark.parser.parser.parser.parse_table
        # plain-str keys: lark's Token keys compare through a Python-level __eq__ (slow)
        self.states = {s: {str(k): v for k, v in row.items()} for s, row in pt.states.items()}
        self.start = pt.start_states["start"]
        self.end = pt.end_states["start"]
        self.terminals = {str(t.name): t for t in lark.terminals}
        ignore = set(lark.lexer_conf.ignore)
        words, strings, regexes = {}, [], []
        for t in lark.terminals:
            if t.pattern.type == "str" and re.fullmatch(r"[A-Za-z_]\w*", t.pattern.value):
                words[t.pattern.value] = str(t.name)  # keywords: lexed as names, looked up
            elif t.pattern.type == "str":
                strings.append(t)
            else:
                regexes.append(t)
        self.keywords = words
        # One alternation, first match wins. Names and operators never start alike, so the order
        # only has to give longest-match among numbers and operators (multi-character operators,
        # then comparisons, then one-character ones); frequent tokens come first for speed.
        def rank(t):
            if t.name in ignore and t.name != "_CONTINUATION" and t.name != "COMMENT":
                return (0, 0)  # plain white space: the most frequent match
            if t.name == "NAME":
                return (1, 0)
            if t.name in ("_NL", "_CONTINUATION"):
                return (2, 0)
            if t.name in ("FLOAT", "INT"):
                return (3, t.name != "FLOAT")
            if t.pattern.type == "str":
                return (4, 0) if len(t.pattern.value) > 1 else (6, 0)
            return (5, 0) if t.name == "COMP_OP" else (7, 0)
        ordered = sorted(regexes + strings, key=lambda t: (rank(t), -len(t.pattern.value)))
        groups, self.group_type = [], {}
        for i, t in enumerate(ordered):
            src = re.escape(t.pattern.value) if t.pattern.type == "str" else t.pattern.to_regexp()
            groups.append(f"(?P<g{i}>{src})")  # named: the patterns have groups of their own
            self.group_type[f"g{i}"] = None if t.name in ignore else str(t.name)
        groups.append("(?P<error>.)")  # anything else: reported as an unexpected character
        self.group_type["error"] = "error"
        self.master = re.compile("|".join(groups), re.DOTALL)
        self.recipes = {}
        for rule in lark.rules:
            self.recipes[rule] = _recipe(rule)
        self.friendly = {t.name: _FRIENDLY.get(t.pattern.value, t.name) for t in lark.terminals
                         if t.pattern.type == "str"}


def _recipe(rule):
    """How to build a node from a rule's matched symbols, as lark's tree builder would."""
    opts = rule.options
    expansion = rule.expansion
    if opts.empty_indices:
        bits = "".join(str(int(b)) for b in opts.empty_indices)
        empties = [len(ones) for ones in bits.split("0")]
    else:
        empties = [0] * (len(expansion) + 1)
    include, nones = [], 0
    for i, sym in enumerate(expansion):
        nones += empties[i]
        if opts.keep_all_tokens or not (sym.is_term and sym.filter_out):
            expand = not sym.is_term and sym.name.startswith("_")
            include.append((i, expand, nones))
            nones = 0
    trailing = nones + empties[len(expansion)]
    name = str(rule.alias or rule.origin.name)
    expand1 = bool(opts.expand1) and not rule.alias  # an aliased alternative is always a node
    unit = len(expansion) == 1 and expand1 and include == [(0, False, 0)] and not trailing
    return len(expansion), str(rule.origin.name), name, include, trailing, expand1, unit


@functools.cache
def tables() -> _Tables:
    text = resources.files("netc.grammar").joinpath("net.lark").read_text(encoding="utf-8")
    lark = Lark(text, parser="lalr", lexer="basic", maybe_placeholders=True)
    return _Tables(lark)


def tokens(text: str):
    """Lex `text` into PTokens (newline filtering and bracket matching included)."""
    tb = tables()
    group_type = tb.group_type
    keywords = tb.keywords
    friendly = tb.friendly
    line, line_start = 1, 0
    stack: list[PToken] = []
    prev_kind = None
    for m in tb.master.finditer(text):
        pos, end = m.span()
        ttype = group_type[m.lastgroup]
        value = m.group()
        nl = value.count("\n") if ttype is None or ttype[0] == "_" else 0
        if ttype == "error":
            raise ParseFailure("char", prev=None, open_brackets=list(stack), pos=pos, line=line,
                               column=pos - line_start + 1)
        if ttype is not None:
            if ttype == "NAME":
                ttype = keywords.get(value, "NAME")
            col = pos - line_start + 1
            if nl:
                end_line = line + nl
                end_col = end - (text.rfind("\n", pos, end) + 1) + 1
            else:
                end_line, end_col = line, col + (end - pos)
            tok = PToken(ttype, value, line, col, end_line, end_col, pos, end)
            if ttype == "_NL":
                if not ((stack and stack[-1].type != "LBRACE") or prev_kind is None
                        or prev_kind == "_NL" or prev_kind in CONTINUES_AFTER):
                    prev_kind = "_NL"
                    yield tok
            else:
                if ttype == "INT" and text.startswith(".", end) and not text.startswith("..", end):
                    raise ParseFailure("number", token=tok, open_brackets=list(stack), pos=pos,
                                       line=line, column=col)
                if ttype in OPENERS:
                    stack.append(tok)
                elif ttype in CLOSERS:
                    if not stack or stack[-1].type != CLOSERS[ttype]:
                        raise ParseFailure("mismatch", token=tok, open_brackets=list(stack),
                                           pos=pos, line=line, column=col)
                    stack.pop()
                prev_kind = friendly.get(ttype, ttype)
                yield tok
        if nl:
            line += nl
            line_start = text.rfind("\n", pos, end) + 1
    pos = len(text)
    if stack:
        raise ParseFailure("unclosed", token=stack[-1], open_brackets=list(stack), pos=pos,
                           line=line, column=pos - line_start + 1)
    yield PToken("$END", "", line, pos - line_start + 1, line, pos - line_start + 2, pos, pos)


def parse(text: str) -> PNode:
    """Parse a whole file. Raises ParseFailure at the first error. (Callers pause the GC.)"""
    tb = tables()
    states, recipes = tb.states, tb.recipes
    state_stack = [tb.start]
    values: list = []
    spans: list = []  # (first token, last token) of each value, or None when empty
    prev = None
    lexer = tokens(text)
    try:
        for tok in lexer:
            while True:
                row = states[state_stack[-1]]
                act = row.get(tok.type)
                if act is None:
                    raise ParseFailure("token", token=tok, accepts=_accepts(tb, state_stack),
                                       prev=prev, pos=tok.start_pos, line=tok.line,
                                       column=tok.column)
                action, arg = act
                if action is Shift:
                    state_stack.append(arg)
                    values.append(tok)
                    spans.append((tok, tok))
                    break
                size, origin, name, include, trailing, expand1, unit = recipes[arg]
                if unit:  # `?a: b` passes its one child through: only the state changes
                    state_stack[-1] = states[state_stack[-2]][origin][1]
                    if tok.type == "$END" and state_stack[-1] == tb.end:
                        return values[-1]
                    continue
                if size:
                    kids = values[-size:]
                    kid_spans = spans[-size:]
                    del values[-size:], spans[-size:], state_stack[-size:]
                else:
                    kids, kid_spans = [], []
                first = last = None
                for sp in kid_spans:
                    if sp is not None:
                        if first is None:
                            first = sp[0]
                        last = sp[1]
                children = []
                for i, expand, nones in include:
                    if nones:
                        children.extend([None] * nones)
                    if expand and kids[i] is not None:
                        if i == 0 and not children and kids[0].data == name:
                            # left recursion of a repetition: grow its list in place (copying it
                            # on every item would make long blocks quadratic)
                            children = kids[0].children
                        else:
                            children.extend(kids[i].children)
                    else:
                        children.append(kids[i])
                if trailing:
                    children.extend([None] * trailing)
                if expand1 and len(children) == 1:
                    node = children[0]
                else:
                    node = PNode(name, children, first, last)
                state_stack.append(states[state_stack[-1]][origin][1])
                values.append(node)
                spans.append(None if first is None else (first, last))
                if tok.type == "$END" and state_stack[-1] == tb.end:
                    return node
            prev = tok
    except ParseFailure as f:
        if f.kind in ("token", "char") and not f.open_brackets:
            f.open_brackets = _open_brackets(values)
        if f.prev is None:
            f.prev = prev
        raise
    raise ParseFailure("token", token=None, pos=len(text))


def _open_brackets(values: list) -> list[PToken]:
    """Brackets shifted but not yet reduced (the open ones), innermost last."""
    out: list[PToken] = []
    for v in values:
        if isinstance(v, PToken) and v.type in OPENERS:
            out.append(v)
    return out


def _accepts(tb: _Tables, state_stack: list[int]) -> set[str]:
    """The terminals that would be shifted after any reductions (LALR rows over-approximate)."""
    out = set()
    for term in tb.states[state_stack[-1]]:
        if (term in tb.terminals or term == "$END") and _would_shift(tb, list(state_stack), term):
            out.add(term)
    return out


def _would_shift(tb: _Tables, stack: list[int], term: str) -> bool:
    for _ in range(10_000):
        act = tb.states[stack[-1]].get(term)
        if act is None:
            return False
        action, arg = act
        if action is Shift:
            return True
        size, origin = tb.recipes[arg][0], tb.recipes[arg][1]
        if size:
            del stack[-size:]
        if origin == "start":
            return term == "$END"
        stack.append(tb.states[stack[-1]][origin][1])
    return False
