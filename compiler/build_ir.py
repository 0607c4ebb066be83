"""Stage 2 — build the IR: a loaded program and a chosen model to the forward graph.

Takes: a `.net` path (or text), the model to build, overrides of its compile-time parameters, the
mode ("train" or "eval") and the float dtype ("f32", or "f64" for gradient checks). Gives: `Built`
— the forward `Graph` (inputs and targets, params with their init specs, states, outputs, losses,
state updates), the resolved `TrainConfig`, the resolved model parameters and the root layer
instance (for dotted names).

Meaning: `fn`s are inlined; each `layer` call site gets an instance (`dense_0`, or `as NAME`) whose
parameters are named by dotted path; a call site inside `for` reuses its instance on every
iteration (shared weights) while `repeat` makes a fresh one per iteration (`NAME_i`). Dropout and
batch norm follow the mode; `<-` updates are recorded in train mode only. Every user mistake is a
NetError located in the file, with a note at each layer or fn call it happened under.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import syntax as S
from .build_calls import CallMixin, Frame
from .build_expr import ExprMixin, Instance, builtin, describe, is_number, python_value
from .errors import (
    NetError,
    NetTypeError,
    SemanticError,
    ShapeError,
    SourceLoc,
    UndefinedName,
    suggestion,
)
from .initializers import INITIALIZERS
from .ir import Graph, Node, TensorType
from .layers_native import NATIVE_LAYERS
from .named_calls import match_named_call
from .program import Program, load_program
from .train_config import TrainConfig
from .verify import verify


@dataclass
class Built:
    graph: Graph
    train: TrainConfig
    model_name: str
    params: dict[str, int | float]
    path: str
    text: str
    program: Program
    root: Instance


MAX_UNROLLED = 100_000  # loop-body runs per model build (for and repeat, nested ones included)


class Builder(ExprMixin, CallMixin):
    def __init__(self, prog: Program, g: Graph, model_params: dict):
        self.prog = prog
        self.g = g
        self.model_params = model_params
        self.root = Instance("", "<model>")
        self.frame = Frame("model", g.name, instance=self.root)
        self.stack: list[tuple[str, SourceLoc]] = []
        self.updated: dict[str, SourceLoc] = {}
        self.unrolled = 0  # loop-body runs so far (every loop is unrolled here)

    # ------------------------------------------------------------------ names
    def lookup(self, name: str, loc: SourceLoc):
        f = self.frame
        if name in f.bindings:
            return f.bindings[name]
        if f.kind == "model" and name in self.model_params:
            return self.model_params[name]
        if f.instance is not None and name in f.instance.by_name:
            return f.instance.by_name[name]
        if name in self.prog.fns or builtin(name) or name in self.prog.layers \
                or name in NATIVE_LAYERS:
            raise NetTypeError(f"'{name}' is a function or layer: call it, e.g. {name}(x), or "
                               f"use it in a pipeline x -> {name}", loc)
        known = list(f.bindings) + (list(self.model_params) if f.kind == "model" else []) \
            + (list(f.instance.by_name) if f.instance is not None else [])
        raise UndefinedName(f"unknown name '{name}'{suggestion(name, known)}", loc)

    # ------------------------------------------------------------------ statements
    def run_body(self, body: tuple[S.Stmt, ...]) -> None:
        for st in body:
            if self.frame.returned:
                raise SemanticError("this statement comes after 'return' and would never run",
                                    st.loc)
            getattr(self, "_s_" + type(st).__name__)(st)

    def _only_in(self, kinds: tuple[str, ...], what: str, loc: SourceLoc) -> None:
        if self.frame.kind not in kinds:
            where = {"fn": "a function", "layer": "a layer", "model": "a model"}[self.frame.kind]
            why = {"fn": "functions are pure: they have no parameters, state, inputs or "
                         "outputs", "layer": "inputs, targets, outputs and losses belong to "
                         "the model", "model": "'return' ends a layer or function"}
            raise SemanticError(f"'{what}' is not allowed in {where} ({why[self.frame.kind]})",
                                loc)

    def tensor_type(self, t: S.TensorType, default_dtype: str | None = None) -> TensorType:
        dims = []
        for d in t.dims:
            v = self.eval(d)
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ShapeError(f"a dimension must be a positive compile-time integer, got "
                                 f"{describe(v)}", d.loc)
            dims.append(v)
        dtype = t.dtype or default_dtype or "f32"
        if dtype == "f32":
            dtype = self.g.float_dtype
        return TensorType(tuple(dims), dtype).check_size(t.loc)

    def _s_InputDecl(self, st: S.InputDecl) -> None:
        self._only_in(("model",), st.role, st.loc)
        self._check_unbound(st.name, st.loc)
        node = self.g.input(st.name, self.tensor_type(st.type), st.loc, role=st.role)
        self.frame.bindings[st.name] = node

    def _check_unbound(self, name: str, loc: SourceLoc) -> None:
        if name in self.frame.bindings:
            raise SemanticError(f"'{name}' is already defined in this scope", loc)

    def init_spec(self, e: S.Expr | None, kind: str, rank: int) -> tuple[str, dict]:
        if e is None:
            return ("glorot_uniform", {}) if kind == "param" and rank >= 2 else ("zeros", {})
        name, out, loc = match_named_call(e, INITIALIZERS, "initializer", self.eval)
        if name == "uniform" and not out["lo"] < out["hi"]:
            raise NetTypeError(f"uniform needs lo < hi, got {out['lo']} and {out['hi']}", e.loc)
        if name == "normal" and out["std"] < 0:
            raise NetTypeError("normal needs std >= 0", e.loc)
        return name, {k: float(v) for k, v in out.items()}

    def declare(self, kind: str, name: str, ttype: TensorType, init, frozen: bool,
                loc: SourceLoc) -> Node:
        """A param or state of the current instance (reused when the instance is shared)."""
        inst = self.frame.instance
        if inst is None:
            self._only_in(("model", "layer"), kind, loc)
        existing = inst.params.get(name)
        if existing is not None:
            if existing.type != ttype:
                raise ShapeError(f"{kind} '{name}' is shared across the iterations of a 'for' "
                                 f"loop but has type {ttype} here and {existing.type} before",
                                 loc, notes=[("first declared here", existing.loc)])
            return existing
        full = inst.prefix() + name
        if kind == "param":
            node = self.g.param(full, ttype, loc, init=init, frozen=frozen)
        else:
            node = self.g.state(full, ttype, loc, init=init)
        inst.params[name] = node
        return node

    def _s_ParamDecl(self, st: S.ParamDecl) -> None:
        self._only_in(("model", "layer"), st.kind, st.loc)
        ttype = self.tensor_type(st.type)
        init = self.init_spec(st.init, st.kind, ttype.rank)
        if st.name in self.frame.bindings and st.name not in self.frame.instance.params:
            raise SemanticError(f"'{st.name}' is already defined in this scope", st.loc)
        node = self.declare(st.kind, st.name, ttype, init, st.frozen, st.loc)
        self.frame.bindings[st.name] = node
        if st.kind == "state":
            self.frame.local_states[st.name] = node

    def _s_Assign(self, st: S.Assign) -> None:
        value = self.eval(st.value)
        if len(st.targets) == 1:
            self.frame.bindings[st.targets[0]] = value
            return
        if not isinstance(value, tuple) or isinstance(value, list):
            raise NetTypeError(f"cannot unpack {describe(value)} into {len(st.targets)} names",
                               st.value.loc)
        if len(value) != len(st.targets):
            raise NetTypeError(f"cannot unpack a tuple of {len(value)} values into "
                               f"{len(st.targets)} names", st.value.loc)
        for name, v in zip(st.targets, value):
            self.frame.bindings[name] = v

    def _s_Update(self, st: S.Update) -> None:
        self._only_in(("model", "layer"), "<-", st.loc)
        target = self.frame.local_states.get(st.name)
        if target is None:
            v = self.frame.bindings.get(st.name)
            what = "a param (params are trained, not assigned)" if isinstance(v, Node) \
                and v.op == "param" else describe(v) if v is not None else "not defined here"
            raise SemanticError(f"'{st.name} <- ...' updates a state, but '{st.name}' is {what};"
                                " declare it with 'state'", st.loc)
        value = self.tensor(st.value)
        if value.type.dtype != target.type.dtype:
            raise NetTypeError(f"the update of state '{st.name}' has type {value.type}, but the "
                               f"state is {target.type}", st.value.loc)
        if value.type.shape != target.type.shape:
            try:
                value = self.g.add("broadcast_to", [value], {"shape": target.type.shape},
                                   st.value.loc)
            except ShapeError:
                raise ShapeError(f"the update of state '{st.name}' has shape {value.type}, but "
                                 f"the state is {target.type}", st.value.loc) from None
        full = target.attrs["name"]
        if full in self.updated:
            raise SemanticError(f"state '{full}' is updated twice in one step", st.loc,
                                notes=[("first updated here", self.updated[full])])
        self.updated[full] = st.loc
        if self.g.mode == "train":
            self.g.updates[full] = value

    def _s_Output(self, st: S.Output) -> None:
        self._only_in(("model",), "output", st.loc)
        if st.name in self.g.outputs:
            raise SemanticError(f"output '{st.name}' is declared twice", st.loc)
        if st.value is None:
            if st.name not in self.frame.bindings:
                raise UndefinedName(f"'output {st.name}' exports a binding, but '{st.name}' is "
                                    f"not defined{suggestion(st.name, self.frame.bindings)}",
                                    st.loc)
            value = self.frame.bindings[st.name]
            if not isinstance(value, Node):
                raise NetTypeError(f"an output must be a tensor; '{st.name}' is "
                                   f"{describe(value)}", st.loc)
        else:
            value = self.tensor(st.value)
            self.frame.bindings[st.name] = value
        self.g.outputs[st.name] = value

    def _s_Loss(self, st: S.Loss) -> None:
        self._only_in(("model",), "loss", st.loc)
        key = st.name or "loss"
        if key in self.g.losses:
            msg = "the model has two unnamed losses: name them (loss a = ...) for step " \
                "blocks, or add them into one" if st.name is None else \
                f"loss '{key}' is declared twice"
            raise SemanticError(msg, st.loc)
        value = self.tensor(st.value)
        if value.type.shape != ():
            raise ShapeError(f"a loss must be a scalar, but this is {value.type}; reduce it, "
                             "e.g. with mean(...)", st.value.loc)
        if not value.type.is_float:
            raise NetTypeError(f"a loss must be a float scalar, but this is {value.type}",
                               st.value.loc)
        self.g.losses[key] = value
        if st.name is not None:
            self.frame.bindings[st.name] = value

    def _s_Return(self, st: S.Return) -> None:
        self._only_in(("layer", "fn"), "return", st.loc)
        values = tuple(self.eval(v) for v in st.values)
        self.frame.result = values[0] if len(values) == 1 else values
        self.frame.returned = True

    def _loop_body(self, body: tuple[S.Stmt, ...]) -> None:
        for st in body:
            if isinstance(st, S.Return):
                raise SemanticError("'return' cannot be inside a loop", st.loc)
        self.run_body(body)

    def _s_For(self, st: S.For) -> None:
        lo = self.static_int(st.start, "a loop bound")
        hi = self.static_int(st.stop, "a loop bound")
        self._unroll(hi - lo, st)
        saved = self.frame.bindings.get(st.var)
        for t in range(lo, hi):
            self.frame.bindings[st.var] = t
            self._loop_body(st.body)
        self._restore(st.var, saved)

    def _s_Repeat(self, st: S.Repeat) -> None:
        n = self.static_int(st.count, "a repeat count")
        if n < 0:
            raise ShapeError(f"a repeat count cannot be negative, got {n}", st.count.loc)
        self._unroll(n, st)
        saved = self.frame.bindings.get(st.var) if st.var else None
        path = self.frame.repeat_path
        for i in range(n):
            self.frame.repeat_path = path + (i,)
            if st.var:
                self.frame.bindings[st.var] = i
            self._loop_body(st.body)
        self.frame.repeat_path = path
        if st.var:
            self._restore(st.var, saved)

    def _unroll(self, n: int, st: S.Stmt) -> None:
        """Count `n` more runs of a loop body against MAX_UNROLLED: loops are unrolled into the
        graph, so an enormous bound would build for hours (or until memory runs out)."""
        self.unrolled += max(n, 0)
        if self.unrolled > MAX_UNROLLED:
            raise SemanticError(f"loops are unrolled when the model compiles, and this one takes "
                                f"the model past {MAX_UNROLLED} loop-body runs in all ({n} "
                                "here)", st.loc)

    def _restore(self, name: str, saved) -> None:
        if saved is None:
            self.frame.bindings.pop(name, None)
        else:
            self.frame.bindings[name] = saved

def _resolve_model_params(model: S.ModelDef, overrides: dict, b: Builder) -> dict:
    known = [p.name for p in model.params]
    for k in overrides:
        if k not in known:
            raise NetError(f"model '{model.name}' has no parameter '{k}'{suggestion(k, known)}"
                           f" (its parameters: {', '.join(known) or 'none'})", model.loc)
    values: dict = {}
    b.frame = Frame("fn", "<model parameters>", bindings=values)
    for p in model.params:
        if p.name in overrides:
            v = python_value(overrides[p.name])
            default = b.eval(p.default) if p.default is not None else None
            if isinstance(default, int) and isinstance(v, float):
                if not v.is_integer():
                    raise NetError(f"model parameter '{p.name}' is an integer (default "
                                   f"{default}); got {v}", p.loc)
                v = int(v)
        elif p.default is None:
            raise NetError(f"model parameter '{p.name}' has no default: give it a value "
                           f"(--set {p.name}=... or netc.compile(..., {p.name}=...))", p.loc)
        else:
            v = b.eval(p.default)
        if not (is_number(v) or isinstance(v, bool | str)):
            raise NetTypeError(f"model parameter '{p.name}' must be a number, got "
                               f"{describe(v)}", p.loc)
        values[p.name] = v
    b.frame = Frame("model", model.name, instance=b.root)
    return values


def choose_model(prog: Program, model: str | None) -> S.ModelDef:
    if model is not None:
        if model not in prog.models:
            raise NetError(f"no model '{model}' in {prog.path}{suggestion(model, prog.models)}"
                           f" (models: {', '.join(prog.models) or 'none'})")
        return prog.models[model]
    if not prog.models:
        raise NetError(f"{prog.path} defines no model")
    if len(prog.models) == 1:
        return next(iter(prog.models.values()))
    trained = [m for m in prog.models if m in prog.trains]
    if len(trained) == 1:
        return prog.models[trained[0]]
    raise NetError(f"{prog.path} defines several models ({', '.join(prog.models)}): choose "
                   "one (--model NAME, or model=... in Python)")


def build(source: str | os.PathLike, *, text: str | None = None, model: str | None = None,
          overrides: dict | None = None, mode: str = "train", float_dtype: str = "f32",
          program: Program | None = None, imports: dict[str, str] | None = None) -> Built:
    """Build the forward graph of a model in a `.net` file (see the module docstring);
    `imports`: the text of imported files (a saved model's), see load_program."""
    from .build_train import build_train  # the train block needs the built graph

    if mode not in ("train", "eval"):
        raise ValueError(f"mode must be 'train' or 'eval', not {mode!r}")
    prog = program or load_program(source, text, imports)
    mdef = choose_model(prog, model)
    g = Graph(mdef.name, float_dtype=float_dtype, mode=mode)
    b = Builder(prog, g, {})
    b.model_params = _resolve_model_params(mdef, dict(overrides or {}), b)
    b.frame = Frame("model", mdef.name, instance=b.root)
    b.run_body(mdef.body)
    train = build_train(prog.trains.get(mdef.name), b, prog)
    verify(g)
    return Built(g, train, mdef.name, dict(b.model_params), prog.path, prog.text, prog, b.root)
