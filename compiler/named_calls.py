"""Compile-time calls against a table of names: initializers, optimizers, schedules, augmentations.

Takes: an expression that is a bare name (`glorot_uniform`) or a call (`normal(0.02)`,
`adam(lr = 1e-3)`), a table `name -> ((parameter, default), ...)` and a function that evaluates an
argument expression to a compile-time value. Gives: `(name, {parameter: value}, location of the
name)` with defaults filled in, or a located NetError: unknown name (with "did you mean"), too many
arguments, unknown keyword, a missing required argument, or a value of the wrong kind (a parameter
whose default is a boolean takes true/false; every other parameter takes a number).
"""

from __future__ import annotations

from collections.abc import Callable

from . import syntax as S
from .errors import NetTypeError, SourceLoc, UndefinedName, suggestion

REQUIRED = object()  # the default of a parameter that must be given


def match_named_call(e: S.Expr, table: dict, what: str,
                     evaluate: Callable[[S.Expr], object]) -> tuple[str, dict, SourceLoc]:
    if isinstance(e, S.Name):
        name, args, kwargs = e.id, (), ()
    elif isinstance(e, S.Call):
        name, args, kwargs = e.func, e.args, e.kwargs
    else:
        raise NetTypeError(f"expected {what} such as {next(iter(table))} or "
                           f"{next(iter(table))}(...)", e.loc)
    loc = e.func_loc if isinstance(e, S.Call) and e.func_loc else e.loc
    if name not in table:
        raise UndefinedName(f"unknown {what} '{name}'{suggestion(name, table)} "
                            f"(known: {', '.join(table)})", loc)
    spec = table[name]
    names = [p for p, _ in spec]
    if len(args) > len(spec):
        raise NetTypeError(f"{name} takes at most {len(spec)} argument(s) "
                           f"({', '.join(names) or 'none'})", args[len(spec)].loc)
    out = dict(spec)
    for (p, _), a in zip(spec, args):
        out[p] = evaluate(a)
    for kw in kwargs:
        if kw.name not in names:
            raise NetTypeError(f"{name} has no argument '{kw.name}'{suggestion(kw.name, names)}"
                               f" (its arguments: {', '.join(names) or 'none'})", kw.loc)
        out[kw.name] = evaluate(kw.value)
    for p, v in out.items():
        if v is REQUIRED:
            raise NetTypeError(f"{name} needs its argument '{p}'", e.loc)
        if isinstance(dict(spec)[p], bool):
            if not isinstance(v, bool):
                raise NetTypeError(f"{name}: '{p}' must be true or false, got {v!r}", e.loc)
        elif isinstance(v, bool) or not isinstance(v, int | float):
            raise NetTypeError(f"{name}: '{p}' must be a number, got {v!r}", e.loc)
    return name, out, loc
