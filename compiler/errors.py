"""Diagnostics for every stage: source locations, the error classes, and the one formatter.

Takes: nothing (a leaf module every stage imports).
Gives: `SourceLoc` (file, 1-based line/col, end line/col, exclusive end col), the `NetError`
family for user mistakes (each carries a location where one exists), `InternalCompilerError` for
compiler bugs, `Diagnostic` (one message) and `format_diagnostic`, the single place that renders a
message as `file:line:col: error: message`, the source line and carets under the span.

Invariant: user mistakes raise `NetError` subclasses; nothing a user writes may surface as any other
exception. A `NetError` may hold several diagnostics (independent syntax errors reported together).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple


class SourceLoc(NamedTuple):
    """A span of source text. Lines and columns are 1-based; `end_col` is exclusive.

    A NamedTuple (immutable, hashable, cheap to create: the parser makes one per syntax node)."""

    file: str
    line: int
    col: int
    end_line: int | None = None
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    def to(self, other: SourceLoc | None) -> SourceLoc:
        """The span from the start of `self` to the end of `other` (same file)."""
        if other is None or other.file != self.file:
            return self
        return SourceLoc(self.file, self.line, self.col,
                         other.end_line or other.line, other.end_col or other.col + 1)


@dataclass
class Diagnostic:
    """One message about one place. `notes` are extra (message, location) pairs."""

    message: str
    loc: SourceLoc | None = None
    severity: str = "error"
    hint: str | None = None
    notes: list[tuple[str, SourceLoc | None]] = field(default_factory=list)

    def to_json(self) -> dict:
        d = {"file": None, "line": None, "col": None, "end_line": None, "end_col": None,
             "severity": self.severity, "message": self.message}
        if self.loc is not None:
            d.update(file=self.loc.file, line=self.loc.line, col=self.loc.col,
                     end_line=self.loc.end_line or self.loc.line,
                     end_col=self.loc.end_col or self.loc.col + 1)
        if self.hint:
            d["hint"] = self.hint
        if self.notes:
            d["notes"] = [{"message": m, "file": n.file if n else None,
                           "line": n.line if n else None, "col": n.col if n else None}
                          for m, n in self.notes]
        return d


class NetError(Exception):
    """A mistake in the user's model, data or command. Always carries at least one Diagnostic."""

    kind = "error"

    def __init__(self, message: str, loc: SourceLoc | None = None, *, hint: str | None = None,
                 notes: Sequence[tuple[str, SourceLoc | None]] = (),
                 diagnostics: Sequence[Diagnostic] | None = None):
        if diagnostics:
            self.diagnostics = list(diagnostics)
        else:
            self.diagnostics = [Diagnostic(message, loc, hint=hint, notes=list(notes))]
        super().__init__(self.diagnostics[0].message)

    @property
    def loc(self) -> SourceLoc | None:
        return self.diagnostics[0].loc

    @property
    def message(self) -> str:
        return self.diagnostics[0].message

    def format(self, sources: dict[str, str] | None = None) -> str:
        return "\n".join(format_diagnostic(d, sources) for d in self.diagnostics)


class NetSyntaxError(NetError):
    """The text is not in the language."""


class UndefinedName(NetError):
    """A name (variable, layer, function, setting) that is not defined."""


class ShapeError(NetError):
    """Shapes or ranks that do not fit an operation."""


class NetTypeError(NetError):
    """Wrong kind of value: dtype, argument kind, a tuple where a tensor is expected..."""


class SemanticError(NetError):
    """A program that parses but means nothing: duplicates, recursion, misuse of a statement."""


class ImportCycleError(SemanticError):
    """`import` files that import each other."""


class DataError(NetError):
    """A data file or array that does not fit the model."""


class UsageError(NetError):
    """A wrong command-line flag or API argument (exit code 2 on the CLI)."""


class InternalCompilerError(Exception):
    """A bug in netc, never the user's fault."""

    def __init__(self, message: str, loc: SourceLoc | None = None):
        self.loc = loc
        where = f" (while compiling {loc})" if loc else ""
        super().__init__(
            f"internal compiler error: {message}{where}\n"
            "This is a bug in netc, not in your model; please report it with the .net file.")


# --------------------------------------------------------------------------- formatting

_source_cache: dict[str, str] = {}


def remember_source(file: str, text: str) -> None:
    """Keep a file's text so diagnostics can quote it (the parser registers every file it reads)."""
    _source_cache[file] = text


def _source_line(file: str, line: int, sources: dict[str, str] | None) -> str | None:
    text = (sources or {}).get(file)
    if text is None:
        text = _source_cache.get(file)
    if text is None:
        return None
    lines = text.splitlines()
    if 1 <= line <= len(lines):
        return lines[line - 1]
    if line == len(lines) + 1:
        return ""
    return None


def _quote(loc: SourceLoc, sources: dict[str, str] | None) -> list[str]:
    src = _source_line(loc.file, loc.line, sources)
    if src is None:
        return []
    shown = src.expandtabs(1)
    if len(shown) > 160:  # a huge line (minified or generated): show a window around the column
        lo = max(0, loc.col - 60)
        shown = shown[lo:lo + 120]
        start = loc.col - lo
    else:
        start = loc.col
    end_col = loc.end_col if (loc.end_line in (None, loc.line) and loc.end_col) else None
    width = max(1, (end_col - loc.col) if end_col and end_col > loc.col else 1)
    if loc.end_line not in (None, loc.line):  # multi-line span: underline to the end of this line
        width = max(1, len(shown) - start + 1)
    width = min(width, max(1, len(shown) - start + 1))
    gutter = f"{loc.line:>5} | "
    return [gutter + shown, " " * (len(gutter) - 2) + "| " + " " * (start - 1) + "^" * width]


def format_diagnostic(d: Diagnostic, sources: dict[str, str] | None = None) -> str:
    """Render one diagnostic as a compiler would: location, message, quoted line, carets, notes."""
    head = f"{d.loc}: {d.severity}: {d.message}" if d.loc else f"{d.severity}: {d.message}"
    out = [head]
    if d.loc is not None:
        out += _quote(d.loc, sources)
    if d.hint:
        out.append(f"  hint: {d.hint}")
    for msg, nloc in d.notes:
        out.append(f"{nloc}: note: {msg}" if nloc else f"  note: {msg}")
        if nloc is not None:
            out += _quote(nloc, sources)
    return "\n".join(out)


def diagnostics_json(diags: Iterable[Diagnostic]) -> str:
    return json.dumps([d.to_json() for d in diags], indent=None)


def did_you_mean(name: str, candidates: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The nearest candidate to a misspelt name, or None. Case-insensitive matches win."""
    cands = sorted(set(candidates))
    for c in cands:
        if c.lower() == name.lower() and c != name:
            return c
    close = difflib.get_close_matches(name, cands, n=1, cutoff=cutoff)
    return close[0] if close else None


def suggestion(name: str, candidates: Iterable[str]) -> str:
    """' — did you mean 'x'?' or '' — appended to an 'unknown ...' message."""
    near = did_you_mean(name, candidates)
    return f" — did you mean '{near}'?" if near else ""
