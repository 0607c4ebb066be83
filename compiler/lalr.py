"""Stage 1a — lex and parse `.net` text with the LALR(1) tables of grammar/net.lark.

Takes: source text. Gives: a parse tree of `PNode`s and `PToken`s (the shapes lark would build with
`maybe_placeholders=True`, positions on every node), or raises `ParseFailure` describing the first
error: the offending token (or character), the tokens the parser would accept there, the previous
token and the brackets open at that point.

Why not lark's own parser loop: lark builds the tables from the grammar (the grammar stays the
single source of truth), but its pure-Python lexer and tree builder run at ~8 s per MB. One master
regex and a tight shift/reduce loop over the same tables run at ~2.5 s per MB (linear: callers pause
the cyclic GC). Keywords are reserved everywhere (the lexer is not contextual).

The tables are derived by lark on first use and kept in the netc cache directory (`disk_cache`:
atomic, checksummed), keyed by hashes of the grammar text, lark's version and this module's own
source; later processes load that JSON (a few ms) instead of importing lark and running its LALR
construction (~0.25 s), and a corrupt entry is rebuilt. Why a cache rather than tables generated
into the package at build time: the grammar stays the one source of truth with no build step that
an editable install or an edited grammar could skip, so stale tables cannot exist.

Newlines: a newline inside ( ) or [ ], or after a token that cannot end an expression, does not
end a statement; the grammar's _NL terminal already refuses to match before a line that starts
with an operator (its twin _CONTINUATION is ignored like a space). Brackets are matched here so
that an unclosed or mismatched bracket is reported where it was opened.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import NamedTuple

from .disk_cache import cache_dir, read_entry, write_entry
from .errors import InternalCompilerError

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


class Terminal(NamedTuple):
    """A terminal of the grammar: `kind` "str" (a literal `value`) or "re" (a regex `value`)."""

    kind: str
    value: str


class _Tables:
    """Everything derived once from the grammar: lexer regex, parse table, reduce recipes.

    `states[s][symbol]` is an action: a state number >= 0 (shift a terminal, or the goto after a
    reduction to a rule's origin) or `~i` < 0 (reduce by rule i, built by `recipes[i]`). Built
    from plain JSON-able data (`from_lark` derives it, `load` caches it on disk)."""

    def __init__(self, data: dict):
        self.states = data["states"]
        self.start, self.end = data["start"], data["end"]
        self.terminals = {name: Terminal(kind, value) for name, kind, value in data["terminals"]}
        self.keywords = data["keywords"]
        self.friendly = data["friendly"]
        self.recipes = [(size, origin, name, [tuple(x) for x in include], trailing, expand1, unit)
                        for size, origin, name, include, trailing, expand1, unit
                        in data["recipes"]]
        self.group_type = {f"g{i}": kind for i, (_, kind) in enumerate(data["groups"])}
        self.group_type["error"] = "error"
        groups = [f"(?P<g{i}>{src})" for i, (src, _) in enumerate(data["groups"])]
        groups.append("(?P<error>.)")  # anything else: reported as an unexpected character
        self.master = re.compile("|".join(groups), re.DOTALL)


def _derive(grammar: str) -> dict:
    """The tables of `grammar` as JSON-able data, computed by lark (the slow part: ~0.2 s)."""
    from lark import Lark
    from lark.parsers.lalr_analysis import Shift

    lark = Lark(grammar, parser="lalr", lexer="basic", maybe_placeholders=True)
    pt = lark.parser.parser.parser.parse_table
    rules = list(lark.rules)
    rule_index = {rule: i for i, rule in enumerate(rules)}
    if sorted(pt.states) != list(range(len(pt.states))):
        raise InternalCompilerError("lark's LALR states are not numbered 0..n-1")
    # plain-str keys: lark's Token keys compare through a Python-level __eq__ (slow)
    states = [{str(k): (arg if action is Shift else ~rule_index[arg])
               for k, (action, arg) in pt.states[s].items()} for s in range(len(pt.states))]
    ignore = set(lark.lexer_conf.ignore)
    words, strings, regexes = {}, [], []
    for t in lark.terminals:
        if t.pattern.type == "str" and re.fullmatch(r"[A-Za-z_]\w*", t.pattern.value):
            words[t.pattern.value] = str(t.name)  # keywords: lexed as names, looked up
        elif t.pattern.type == "str":
            strings.append(t)
        else:
            regexes.append(t)

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
    # named groups: the patterns have groups of their own
    groups = [(re.escape(t.pattern.value) if t.pattern.type == "str"
               else t.pattern.to_regexp(), None if t.name in ignore else str(t.name))
              for t in ordered]
    return {
        "states": states,
        "start": pt.start_states["start"],
        "end": pt.end_states["start"],
        "terminals": [(str(t.name), t.pattern.type, t.pattern.value) for t in lark.terminals],
        "keywords": words,
        "groups": groups,
        "recipes": [_recipe(rule) for rule in rules],
        "friendly": {str(t.name): _FRIENDLY.get(t.pattern.value, str(t.name))
                     for t in lark.terminals if t.pattern.type == "str"},
    }


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
    return (len(expansion), str(rule.origin.name), name, include, trailing, expand1,
            unit)


# Bump when the layout of the derived data changes (the key also hashes this module's source).
_FORMAT = 1


def _lark_version() -> str:
    """lark's version, read from its package source without importing it (importing lark costs
    more than loading the cached tables)."""
    spec = importlib.util.find_spec("lark")
    try:
        with open(spec.origin, encoding="utf-8") as f:
            head = f.read()
    except (OSError, TypeError, AttributeError):
        return "unknown"
    m = re.search(r"^__version__\s*(?::\s*str\s*)?=\s*[\"']([^\"']+)", head, re.M)
    return m.group(1) if m else hashlib.sha256(head.encode()).hexdigest()


def tables_key(grammar: str) -> str:
    """What the tables depend on: the grammar text, lark's version and this module's code."""
    h = hashlib.sha256()
    with open(__file__, "rb") as f:
        own = f.read()
    for part in (str(_FORMAT).encode(), grammar.encode(), _lark_version().encode(), own):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def tables_path(grammar: str) -> str:
    return os.path.join(cache_dir(), "parser", f"net-{tables_key(grammar)[:32]}.json")


def load_tables(grammar: str) -> _Tables:
    """The tables of `grammar`: from the disk cache when a valid entry is there, else derived
    by lark and stored (atomically) for the next process. A corrupt or unusable entry is
    rebuilt and overwritten."""
    path = tables_path(grammar)
    data = read_entry(path)
    if data is not None:
        try:
            return _Tables(json.loads(data))
        except (ValueError, KeyError, TypeError, IndexError, re.error):
            pass  # written by a buggy or foreign writer: rebuild it below
    derived = _derive(grammar)
    tb = _Tables(json.loads(json.dumps(derived)))  # exactly what a later load will see
    write_entry(path, json.dumps(derived, separators=(",", ":")).encode())
    return tb


@functools.cache
def tables() -> _Tables:
    text = resources.files("netc.grammar").joinpath("net.lark").read_text(encoding="utf-8")
    return load_tables(text)


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
                if act >= 0:  # shift
                    state_stack.append(act)
                    values.append(tok)
                    spans.append((tok, tok))
                    break
                size, origin, name, include, trailing, expand1, unit = recipes[~act]
                if unit:  # `?a: b` passes its one child through: only the state changes
                    state_stack[-1] = states[state_stack[-2]][origin]
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
                state_stack.append(states[state_stack[-1]][origin])
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
        if act >= 0:
            return True
        size, origin = tb.recipes[~act][0], tb.recipes[~act][1]
        if size:
            del stack[-size:]
        if origin == "start":
            return term == "$END"
        stack.append(tb.states[stack[-1]][origin])
    return False
