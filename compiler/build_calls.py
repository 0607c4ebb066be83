"""Stage 2e — calls inside the builder: layers (instancing), functions (inlining), built-ins.

Takes: a call expression and the builder's current frame. Gives: the call's value. A layer call
gets the instance of its call site (`dense_0`, or `as NAME`; `NAME_i` per `repeat` iteration),
created on first use and reused on later iterations of a `for` (shared weights); a function is
inlined in a fresh frame; recursion and call depth are checked; an error inside a layer or
function gets a note at the call. A built-in layer (native, or from the prelude) is reported in
the user's terms: its arguments are checked first (layers_native.PRELUDE_CHECKS for the prelude's),
at the argument, and an error from inside its body points at the call itself.

Mixed into build_ir.Builder, which provides the frame, the graph and `run_body`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import syntax as S
from .build_expr import Instance, builtin, describe
from .errors import NetError, NetTypeError, SemanticError, SourceLoc, UndefinedName, suggestion
from .ir import Node
from .layers_native import NATIVE_LAYERS, PRELUDE_CHECKS, LayerContext
from .named_calls import REQUIRED
from .ops.builtins import BUILTIN_NAMES
from .program import PRELUDE_FILE

MAX_CALL_DEPTH = 64


@dataclass
class Frame:
    kind: str  # "model" | "layer" | "fn"
    name: str
    bindings: dict = field(default_factory=dict)
    instance: Instance | None = None
    repeat_path: tuple = ()
    result: object = None
    returned: bool = False
    local_states: dict[str, Node] = field(default_factory=dict)


class CallMixin:
    def call(self, e: S.Call):
        name = e.func
        args = [(self.eval(a), a.loc) for a in e.args]
        kwargs = {k.name: (self.eval(k.value), k.loc) for k in e.kwargs}
        if name in self.prog.layers or name in NATIVE_LAYERS:
            return self.call_layer(e, args, kwargs)
        if name in self.prog.fns:
            return self.call_fn(e, args, kwargs)
        b = builtin(name)
        if b is not None:
            return self.call_builtin(b, e, args, kwargs)
        loc = e.func_loc or e.loc
        if name in self.frame.bindings:
            raise NetTypeError(f"'{name}' is {describe(self.frame.bindings[name])}, not a "
                               "function or layer", loc)
        if name[:1].isupper():
            known = list(self.prog.layers) + list(NATIVE_LAYERS)
            raise UndefinedName(f"unknown layer '{name}'{suggestion(name, known)}", loc)
        known = list(self.prog.fns) + list(BUILTIN_NAMES) + list(self.prog.layers) \
            + list(NATIVE_LAYERS)
        raise UndefinedName(f"unknown function '{name}'{suggestion(name, known)}", loc)

    def _enter(self, kind: str, name: str, e: S.Call) -> None:
        if any(n == name for n, _ in self.stack):
            raise SemanticError(f"{kind} '{name}' calls itself (directly or through others); "
                                f"{kind}s cannot be recursive", e.loc)
        if len(self.stack) >= MAX_CALL_DEPTH:
            raise SemanticError(f"calls nest more than {MAX_CALL_DEPTH} deep", e.loc)
        self.stack.append((name, e.loc))

    def bind_values(self, what: str, specs: list[tuple[str, object]], args: list, kwargs: dict,
                    e: S.Call) -> dict:
        """Arguments matched to named parameters, with the defaults of those not given."""
        bound = self.bind(what, specs, args, kwargs, e)
        return {n: bound[n][0] if n in bound else default for n, default in specs}

    def _defaults(self, params: tuple[S.ParamSpec, ...]) -> list[tuple[str, object]]:
        out = []
        for p in params:
            out.append((p.name, REQUIRED if p.default is None else _Deferred(p.default)))
        return out

    def _eval_deferred(self, bound: dict) -> dict:
        saved = self.frame
        self.frame = Frame("fn", "<defaults>", bindings={k: v for k, v in bound.items()
                                                           if not isinstance(v, _Deferred)})
        try:
            for k, v in bound.items():
                if isinstance(v, _Deferred):
                    bound[k] = self.eval(v.expr)
                    self.frame.bindings[k] = bound[k]
        finally:
            self.frame = saved
        return bound

    def call_fn(self, e: S.Call, args: list, kwargs: dict):
        d = self.prog.fns[e.func]
        if e.alias is not None:
            raise NetTypeError(f"'as {e.alias}' names a layer instance, but '{e.func}' is a "
                               "function (no parameters)", e.alias_loc or e.loc)
        bound = self._eval_deferred(self.bind_values(f"{e.func}()", self._defaults(d.params),
                                                     args, kwargs, e))
        self._enter("function", e.func, e)
        saved = self.frame
        self.frame = Frame("fn", e.func, bindings=bound)
        try:
            self.run_body(d.body)
            if not self.frame.returned:
                raise SemanticError(f"function '{e.func}' ends without 'return'", d.loc)
            return self.frame.result
        except NetError as err:
            _note(err, f"in function '{e.func}' called here", e.loc)
            raise
        finally:
            self.frame = saved
            self.stack.pop()

    def _instance_for(self, e: S.Call) -> Instance:
        owner = self.frame.instance
        if owner is None:
            raise SemanticError(f"function '{self.frame.name}' cannot call layer '{e.func}': "
                                "functions have no parameters; make it a layer (a capitalized "
                                "name)", e.func_loc or e.loc)
        site = (id(e), self.frame.repeat_path)
        inst = owner.children.get(site)
        if inst is not None:
            return inst
        suffix = "".join(f"_{i}" for i in self.frame.repeat_path)
        if e.alias is not None:
            local = e.alias + suffix
            if local in owner.by_name:
                first = owner.by_name[local]
                raise SemanticError(f"layer instance name '{local}' is used twice",
                                    e.alias_loc or e.loc, notes=[("first used here", first.loc)])
            if local in self.frame.bindings:
                raise SemanticError(f"'{local}' is already a name in this scope; choose another "
                                    "instance name", e.alias_loc or e.loc)
        else:
            base = e.func.lower()
            k = owner.counters.get(base, 0)
            while f"{base}_{k}" in owner.by_name:
                k += 1
            owner.counters[base] = k + 1
            local = f"{base}_{k}"
        inst = Instance(owner.prefix() + local, e.func, e.loc)
        owner.children[site] = inst
        owner.by_name[local] = inst
        return inst

    def call_layer(self, e: S.Call, args: list, kwargs: dict):
        inst = self._instance_for(e)
        self._enter("layer", e.func, e)
        saved = self.frame
        d = self.prog.layers.get(e.func)
        built_in = d is None or (d.loc is not None and d.loc.file == PRELUDE_FILE)
        try:
            if d is not None:
                specs = self._defaults(d.params)
            else:
                fn, native = NATIVE_LAYERS[e.func]
                specs = [(n, REQUIRED if v is None else v) for n, v in native]
            given = self.bind(e.func, specs, args, kwargs, e)
            bound = {n: given[n][0] if n in given else v for n, v in specs}
            ctx = LayerContext(self, e.loc, {n: loc for n, (_, loc) in given.items()})
            if d is None:
                self.frame = Frame("layer", e.func, instance=inst)
                return fn(ctx, **bound)
            bound = self._eval_deferred(bound)
            if built_in and e.func in PRELUDE_CHECKS:
                PRELUDE_CHECKS[e.func](ctx, **bound)
            self.frame = Frame("layer", e.func, bindings=bound, instance=inst)
            self.run_body(d.body)
            if not self.frame.returned:
                raise SemanticError(f"layer '{e.func}' ends without 'return'", d.loc)
            return self.frame.result
        except NetError as err:
            diag = err.diagnostics[0]
            if built_in:  # its insides are not the user's: point at the call (or an argument)
                if diag.loc is None or diag.loc.file == PRELUDE_FILE:
                    diag.loc = e.loc
                    if not diag.message.startswith(e.func):
                        diag.message = f"{e.func}: {diag.message}"
            else:
                _note(err, f"in layer '{e.func}' (instance '{inst.name}') called here", e.loc)
            raise
        finally:
            self.frame = saved
            self.stack.pop()


class _Deferred:
    """A parameter default, evaluated when the call binds its arguments."""

    def __init__(self, expr: S.Expr):
        self.expr = expr



def _note(err: NetError, msg: str, loc: SourceLoc) -> None:
    d = err.diagnostics[0]
    if len(d.notes) < 8 and (d.loc is None or d.loc != loc):
        d.notes.append((msg, loc))
