"""Stage 1 — parse: `.net` text to the frozen syntax tree of `syntax.py`.

Takes: a file path or text. Gives: a `syntax.Program`, or raises `NetSyntaxError` holding one or
more located diagnostics (independent errors on separate lines are reported together).

`lalr.py` lexes and parses with the tables of grammar/net.lark; this module reads files, turns a
`ParseFailure` into a diagnostic in words a user knows (never terminal names), recovers line by line
to find further errors, and hands the tree to `syntax_build.py`. Invariant: nothing a user writes
leaves this module as anything but a Program or a NetError.
"""

from __future__ import annotations

import gc
import os
import stat

from .errors import Diagnostic, NetError, NetSyntaxError, SourceLoc, did_you_mean, remember_source
from .lalr import CLOSERS, OPENERS, ParseFailure, PToken, parse, tables
from .syntax import Program
from .syntax_build import KEYWORDS, STATEMENT_KEYWORDS, TOPLEVEL_KEYWORDS, build_program

MAX_ERRORS = 10
RECOVERY_LIMIT_BYTES = 2_000_000  # past this size, report the first syntax error only

_WORDS = {
    "NAME": "a name", "INT": "a number", "FLOAT": "a number", "STRING": "a string",
    "_NL": "a new line", "SEMICOLON": "';'", "$END": "the end of the file",
    "COMP_OP": "a comparison", "LOSS_KEY": "'loss'",
}
_EXPR_START = {"NAME", "INT", "FLOAT", "LPAR", "LSQB", "MINUS"}
# After a complete operand these may continue the expression; listed together as "an operator".
_OPERATOR_TOKENS = {"PLUS", "MINUS", "STAR", "SLASH", "AT", "POW", "COMP_OP", "DOT", "LSQB",
                    "LPAR"}


def _word(term: str) -> str:
    if term in _WORDS:
        return _WORDS[term]
    t = tables().terminals.get(term)
    if t is not None and t.kind == "str":
        return f"'{t.value}'"
    return term.lower()


def _describe_expected(expected: set[str]) -> str:
    names = set(expected)
    parts: list[str] = []
    if names >= _EXPR_START:
        parts.append("an expression")
        names -= _EXPR_START | {"STRING", "TRUE", "FALSE"}
    if "_NL" in names or "SEMICOLON" in names:
        names -= {"_NL", "SEMICOLON"}
        parts.append("the end of the statement (a new line or ';')")
    if len(names & _OPERATOR_TOKENS) >= 4:
        parts.append("an operator")
        names -= _OPERATOR_TOKENS
        names = {n for n in names if _word(n) not in ("'->'", "'as'")}
    parts += sorted({_word(n) for n in names})
    if len(parts) > 7:
        parts = parts[:6] + ["…"]
    if not parts:
        return ""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def _tok_loc(file: str, tok: PToken) -> SourceLoc:
    return SourceLoc(file, tok.line, tok.column, tok.end_line, tok.end_column)


def _token_phrase(tok: PToken) -> str:
    if tok.type == "NAME":
        return f"name '{tok.value}'"
    if tok.type in ("INT", "FLOAT"):
        return f"number {tok.value}"
    if tok.type == "STRING":
        return "string " + (tok.value if len(tok.value) < 40 else tok.value[:37] + '..."')
    if tok.value in KEYWORDS:
        return f"keyword '{tok.value}'"
    return f"'{tok.value}'"


def _eof_loc(file: str, text: str) -> SourceLoc:
    lines = text.split("\n")
    return SourceLoc(file, len(lines), len(lines[-1]) + 1, len(lines), len(lines[-1]) + 2)


def _starts_line(text: str, tok: PToken) -> bool:
    line_start = text.rfind("\n", 0, tok.start_pos) + 1
    before = text[line_start:tok.start_pos].rstrip()
    return before == "" or before.endswith((";", "{"))


def _bracket_diag(f: ParseFailure, file: str) -> Diagnostic | None:
    """Unclosed and mismatched brackets, located at the bracket that was opened."""
    stack, tok = f.open_brackets, f.token
    if f.kind == "unclosed":
        closer = OPENERS[tok.type][1]
        return Diagnostic(f"'{tok.value}' is never closed: expected a matching '{closer}' before "
                          "the end of the file", _tok_loc(file, tok))
    closes_other = tok is not None and tok.type in CLOSERS \
        and (not stack or stack[-1].type != CLOSERS[tok.type])
    if closes_other:
        opener = stack[-1] if stack else None
        if opener is None or (opener.type == "LBRACE"
                              and not any(t.type == CLOSERS[tok.type] for t in stack)):
            opening = {"RPAR": "(", "RSQB": "[", "RBRACE": "{"}[tok.type]
            return Diagnostic(f"unmatched '{tok.value}': no '{opening}' is open here",
                              _tok_loc(file, tok))
        want = OPENERS[opener.type][1]
        return Diagnostic(
            f"'{tok.value}' does not match the '{opener.value}' opened at line {opener.line}, "
            f"column {opener.column}: expected '{want}' first", _tok_loc(file, tok),
            notes=[(f"the '{opener.value}' opened here is not closed", _tok_loc(file, opener))])
    inner = stack[-1] if stack else None
    if f.kind == "token" and tok is not None and inner is not None \
            and inner.type in ("LPAR", "LSQB") and tok.line > inner.line \
            and not {"RPAR", "RSQB"}.isdisjoint(f.accepts):
        closer = OPENERS[inner.type][1]
        return Diagnostic(
            f"'{inner.value}' opened at line {inner.line}, column {inner.column} is not closed: "
            f"expected '{closer}' before this {_token_phrase(tok)}", _tok_loc(file, tok),
            notes=[(f"the '{inner.value}' opened here", _tok_loc(file, inner))])
    return None


def _token_diag(f: ParseFailure, file: str, text: str) -> Diagnostic:
    tok, prev = f.token, f.prev
    expected = _describe_expected(f.accepts)
    tail = f"; expected {expected}" if expected else ""
    if tok is None or tok.type == "$END":
        return Diagnostic(f"unexpected end of the file{tail}", _eof_loc(file, text))
    loc = _tok_loc(file, tok)
    if tok.type == "_NL":
        return Diagnostic(f"unexpected end of the line{tail}",
                          SourceLoc(file, tok.line, tok.column, tok.line, tok.column + 1))
    if tok.type == "DOT" and text[tok.end_pos:tok.end_pos + 1].isdigit():
        return Diagnostic("write numbers with a digit before the point: 0.5, not .5", loc)
    if tok.value in TOPLEVEL_KEYWORDS and any(b.type == "LBRACE" for b in f.open_brackets):
        return Diagnostic(f"'{tok.value}' definitions belong at the top level of the file, not "
                          "inside a block", loc)
    if tok.value in KEYWORDS and "NAME" in f.accepts:
        # a keyword argument's value (early_stop(monitor = loss)): a string says the same
        in_call = bool(f.open_brackets) and f.open_brackets[-1].type == "LPAR"
        hint = f'as an argument value, write it as a string: "{tok.value}"' \
            if in_call and prev is not None and prev.type == "EQUAL" else None
        return Diagnostic(f"'{tok.value}' is a keyword and cannot be used as a name", loc,
                          hint=hint)
    if prev is not None and prev.value in KEYWORDS and tok.type in ("EQUAL", "COMMA") \
            and _starts_line(text, prev):
        return Diagnostic(f"'{prev.value}' is a keyword and cannot be used as a name",
                          _tok_loc(file, prev))
    # A misspelt keyword: the word itself is unexpected where a keyword is expected, or it was
    # taken as a name and the token after it is unexpected ("inptu x: f32[3]").
    if tok.type == "NAME":
        near = did_you_mean(tok.value, [tables().terminals[t].value
                                        for t in f.accepts if _is_keyword(t)])
        if near:
            return Diagnostic(f"unknown word '{tok.value}' — did you mean '{near}'?", loc)
    if prev is not None and prev.type == "NAME" and _starts_line(text, prev):
        near = did_you_mean(prev.value, STATEMENT_KEYWORDS | TOPLEVEL_KEYWORDS)
        if near:
            return Diagnostic(f"unknown statement '{prev.value}' — did you mean '{near}'?",
                              _tok_loc(file, prev))
    return Diagnostic(f"unexpected {_token_phrase(tok)}{tail}", loc)


def _is_keyword(term: str) -> bool:
    t = tables().terminals.get(term)
    return t is not None and t.kind == "str" and t.value in KEYWORDS


def _char_diag(f: ParseFailure, file: str, text: str) -> Diagnostic:
    ch = text[f.pos] if 0 <= f.pos < len(text) else ""
    loc = SourceLoc(file, f.line, f.column, f.line, f.column + 1)
    if ch == '"':
        return Diagnostic("unterminated string: a string must end with '\"' on the same line", loc)
    if ch == "\x00":
        return Diagnostic("unexpected NUL byte: is this a binary file?", loc)
    if ch == "'":
        return Diagnostic("strings are written in double quotes: \"...\"", loc)
    if not ch.isprintable() or ch.isspace():
        return Diagnostic(f"unexpected character U+{ord(ch):04X}", loc)
    return Diagnostic(f"unexpected character '{ch}'", loc)


def _diagnose(f: ParseFailure, file: str, text: str) -> tuple[Diagnostic, bool]:
    """The diagnostic for a failure, and whether parsing may go on past its line."""
    bracket = _bracket_diag(f, file)
    if bracket is not None:
        return bracket, False
    if f.kind == "char":
        return _char_diag(f, file, text), True
    if f.kind == "number":
        return Diagnostic(f"write numbers with digits on both sides of the point: "
                          f"{f.token.value}.0, not {f.token.value}.", _tok_loc(file, f.token)), True
    tok = f.token
    return _token_diag(f, file, text), tok is not None and tok.type not in ("$END", "RBRACE", "_NL")


def _line_is_balanced(text: str, line: int) -> bool:
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        return False
    src = lines[line - 1].split("#", 1)[0]
    return all(src.count(a) == src.count(b) for a, b in ("()", "[]")) \
        and "{" not in src and "}" not in src and src.count('"') % 2 == 0


def _blank_line(text: str, line: int) -> str:
    lines = text.split("\n")
    lines[line - 1] = " " * len(lines[line - 1])
    return "\n".join(lines)


def _parse_tree(text: str, file: str):
    """Parse, recovering line by line to report several independent errors."""
    diags: list[Diagnostic] = []
    work, last_line = text, 0
    recover = len(text) <= RECOVERY_LIMIT_BYTES
    while True:
        try:
            tree = parse(work)
            if not diags:
                return tree
            break
        except ParseFailure as f:
            diag, recoverable = _diagnose(f, file, work)
        except RecursionError:
            raise NetSyntaxError("the file nests too deeply to parse", SourceLoc(file, 1, 1)) \
                from None
        line = diag.loc.line if diag.loc else 0
        if line <= last_line:
            break  # a cascade from the previous recovery: stop here
        diags.append(diag)
        if not (recover and recoverable and len(diags) < MAX_ERRORS
                and _line_is_balanced(work, line)):
            break
        work, last_line = _blank_line(work, line), line
    raise NetSyntaxError("", diagnostics=diags)


def parse_text(text: str, file: str = "<text>") -> Program:
    """Parse `.net` source text. `file` names it in diagnostics and resolves relative imports."""
    remember_source(file, text)
    if text.startswith("\ufeff"):  # a UTF-8 byte-order mark is not part of the program
        text = " " + text[1:]
    # Pause the cyclic GC: it would rescan the growing trees again and again (quadratic on big
    # files), and neither tree has cycles.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        tree = _parse_tree(text, file)
        return build_program(tree, file, text)
    except RecursionError:
        raise NetSyntaxError("the file nests expressions too deeply to compile",
                             SourceLoc(file, 1, 1)) from None
    finally:
        if was_enabled:
            gc.enable()


def source_file_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be read as a source file — "does not exist", "is a directory", "is not a
    regular file (a FIFO)" … — or None when it is a regular file (or a link to one). Only stats
    the path: a device or a FIFO is never opened, so it can neither block nor stream forever."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: a NUL in the path
        return "does not exist"
    except OSError:
        return None  # permission denied, a name too long...: opening it reports the reason
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory"
    kind = ("a character device" if stat.S_ISCHR(mode) else "a block device"
            if stat.S_ISBLK(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a socket"
            if stat.S_ISSOCK(mode) else "not a file")
    return f"is not a regular file ({kind})"


def read_source(path: str | os.PathLike) -> str:
    """Read a `.net` file as UTF-8, turning every failure into a NetError."""
    p = os.fspath(path)
    problem = source_file_problem(p)
    if problem == "is a directory":
        raise NetError(f"'{p}' is a directory, not a .net file")
    if problem is not None and problem != "does not exist":
        raise NetError(f"cannot read '{p}': it {problem}")
    try:  # non-blocking, then checked again: a FIFO swapped in after the stat cannot block
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise NetError(f"cannot read '{p}': it is not a regular file")
            data = f.read()
    except FileNotFoundError:
        raise NetError(f"cannot read '{p}': no such file") from None
    except PermissionError:
        raise NetError(f"cannot read '{p}': permission denied") from None
    except OSError as e:
        raise NetError(f"cannot read '{p}': {e.strerror or e}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        remember_source(p, data[: e.start].decode("utf-8", "replace"))
        raise NetSyntaxError(f"the file is not UTF-8 text: byte 0x{data[e.start]:02x} cannot "
                             "be decoded", SourceLoc(p, line, col, line, col + 1)) from None


def parse_file(path: str | os.PathLike) -> Program:
    """Read and parse one `.net` file."""
    p = os.fspath(path)
    return parse_text(read_source(p), p)
