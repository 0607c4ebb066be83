"""Stage 2d — the `train` block to a resolved `TrainConfig`, checked against the built model.

Takes: the TrainDef (or None), the builder that built the model (its graph and root instance, to
resolve layer and parameter names) and the program (for relative paths). Gives: `TrainConfig`.

Checks: known settings, optimizers, schedules, metrics, augmentations and their arguments (with
"did you mean"), value ranges, `freeze`/`params` naming layer instances or dotted parameters that
exist, `step` blocks naming losses that exist, and that a model with several named losses and no
plain loss has step blocks.
"""

from __future__ import annotations

import math
import os

from . import syntax as S
from .build_expr import Instance, python_value
from .errors import NetTypeError, SemanticError, SourceLoc, UndefinedName, suggestion
from .named_calls import match_named_call
from .train_config import (
    AUGMENTATIONS,
    METRICS,
    MONITOR_MODES,
    OPTIMIZERS,
    SCHEDULES,
    AugmentSpec,
    EarlyStopSpec,
    OptimizerSpec,
    ScheduleSpec,
    StepSpec,
    TrainConfig,
)

SETTINGS = ("data", "validation", "optimizer", "schedule", "batch", "epochs", "seed", "l1", "l2",
            "clip_norm", "metrics", "freeze", "init_from", "augment", "checkpoint")
DIRECTIVES = ("early_stop",)
STEP_SETTINGS = ("loss", "params", "optimizer", "schedule", "clip_norm")
BUNDLED_DATA = ("digits", "sequences", "mixture", "regression", "spirals")


class _Static:
    """Compile-time values of train settings: numbers, strings, names, lists, calls."""

    def __init__(self, builder):
        self.b = builder

    def value(self, e: S.Expr):
        if isinstance(e, S.Num | S.Str | S.Bool):
            return e.value
        if isinstance(e, S.Neg):
            v = self.value(e.operand)
            if isinstance(v, int | float) and not isinstance(v, bool):
                return -v
        if isinstance(e, S.Name) and e.id in self.b.model_params:
            return self.b.model_params[e.id]
        if isinstance(e, S.BinOp):
            return self.b.eval(e)  # compile-time arithmetic on numbers and model parameters
        raise NetTypeError("expected a number, a string or true/false here", e.loc)


def _number(v, what: str, loc, *, integer=False, lo=None, lo_open=False, hi=None):
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise NetTypeError(f"{what} must be a number, got {v!r}", loc)
    if not math.isfinite(v):  # 1e400 in a file, or --set lr=nan / inf read by Python's float
        raise NetTypeError(f"{what} must be a finite number, got {v}", loc)
    if integer:
        if isinstance(v, float) and not v.is_integer():
            raise NetTypeError(f"{what} must be an integer, got {v}", loc)
        v = int(v)
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise NetTypeError(f"{what} must be {'>' if lo_open else '>='} {lo}, got {v}", loc)
    if hi is not None and v >= hi:
        raise NetTypeError(f"{what} must be < {hi}, got {v}", loc)
    return v


class _TrainBuilder:
    def __init__(self, builder, prog):
        self.b = builder
        self.prog = prog
        self.static = _Static(builder)
        self.base = os.path.dirname(os.path.abspath(prog.path))

    def path(self, e: S.Expr, what: str) -> str:
        v = self.static.value(e)
        if not isinstance(v, str) or not v:
            raise NetTypeError(f"{what} must be a string path", e.loc)
        return os.path.normpath(os.path.join(self.base, v))

    def call_spec(self, e: S.Expr, table: dict, what: str) -> tuple[str, dict, SourceLoc]:
        """`name` or `name(args)` against a table of (parameter, default) lists."""
        return match_named_call(e, table, what, self.static.value)

    def optimizer(self, e: S.Expr) -> OptimizerSpec:
        name, args, loc = self.call_spec(e, OPTIMIZERS, "optimizer")
        for k in ("lr", "eps"):
            if k in args:
                _number(args[k], f"{name}: {k}", loc, lo=0, lo_open=True)
        for k in ("beta1", "beta2", "rho", "momentum"):
            if k in args:
                _number(args[k], f"{name}: {k}", loc, lo=0, hi=1)
        if "weight_decay" in args:
            _number(args["weight_decay"], f"{name}: weight_decay", loc, lo=0)
        if name == "sgd" and args["nesterov"] and args["momentum"] <= 0:
            raise NetTypeError("sgd: nesterov needs momentum > 0", loc)
        return OptimizerSpec(name, {k: (v if isinstance(v, bool) else float(v))
                                    for k, v in args.items()}, loc)

    def schedule(self, e: S.Expr) -> ScheduleSpec:
        name, args, loc = self.call_spec(e, SCHEDULES, "schedule")
        if name == "step_decay":
            _number(args["every"], "step_decay: every", loc, integer=True, lo=1)
        if "gamma" in args:
            _number(args["gamma"], f"{name}: gamma", loc, lo=0, lo_open=True)
        if "warmup" in args:
            _number(args["warmup"], "cosine: warmup", loc, lo=0)
        return ScheduleSpec(name, {k: float(v) for k, v in args.items()}, loc)

    def names(self, e: S.Expr, what: str) -> list[tuple[str, SourceLoc]]:
        items = e.items if isinstance(e, S.ListExpr) else (e,)
        out = []
        for it in items:
            path = _dotted(it)
            if path is None:
                raise NetTypeError(f"{what} lists layer instance names or dotted parameter "
                                   "names, e.g. [fc1, block_0.attn]", it.loc)
            out.append((path, it.loc))
        return out

    def param_names(self, e: S.Expr, what: str) -> tuple[str, ...]:
        """Instance names expand to all their parameters; dotted names must exist."""
        g = self.b.g
        out: list[str] = []
        for path, loc in self.names(e, what):
            if path in g.params:
                out.append(path)
                continue
            inst = _find_instance(self.b.root, path)
            if inst is None:
                known = [i for i in _instance_names(self.b.root)] + list(g.params)
                raise UndefinedName(f"{what}: no layer instance or parameter '{path}'"
                                    f"{suggestion(path, known)}", loc)
            out += [p.attrs["name"] for p in inst.all_params() if p.op == "param"]
        return tuple(dict.fromkeys(out))

    def metrics(self, e: S.Expr) -> tuple[str, ...]:
        out = []
        for path, loc in self.names(e, "metrics"):
            if path not in METRICS:
                raise UndefinedName(f"unknown metric '{path}'{suggestion(path, METRICS)} "
                                    f"(metrics: {', '.join(METRICS)})", loc)
            out.append(path)
        return tuple(dict.fromkeys(out))

    def augment(self, e: S.Expr) -> tuple[AugmentSpec, ...]:
        items = e.items if isinstance(e, S.ListExpr) else (e,)
        out = []
        for it in items:
            name, args, loc = self.call_spec(it, AUGMENTATIONS, "augmentation")
            if "pad" in args:
                args["pad"] = _number(args["pad"], "random_crop: pad", loc, integer=True, lo=1)
            out.append(AugmentSpec(name, args, loc))
        return tuple(out)

    def early_stop(self, call: S.Call, metrics: tuple[str, ...]) -> EarlyStopSpec:
        spec = (("monitor", "val_loss"), ("patience", 3), ("min_delta", 0.0), ("mode", "auto"))
        names = [p for p, _ in spec]
        vals = dict(spec)
        for (p, _), a in zip(spec, call.args):
            vals[p] = _dotted(a) or self.static.value(a)
        for kw in call.kwargs:
            if kw.name not in names:
                raise NetTypeError(f"early_stop has no argument '{kw.name}'"
                                   f"{suggestion(kw.name, names)}", kw.loc)
            vals[kw.name] = _dotted(kw.value) or self.static.value(kw.value)
        monitor = str(vals["monitor"])
        allowed = ["loss", "val_loss"] + [m for x in metrics for m in (x, "val_" + x)] \
            + [k for k in self.b.g.losses] + ["val_" + k for k in self.b.g.losses]
        if monitor not in allowed:
            raise NetTypeError(f"early_stop cannot monitor '{monitor}'"
                               f"{suggestion(monitor, allowed)} (it can monitor: "
                               f"{', '.join(dict.fromkeys(allowed))})", call.loc)
        if vals["mode"] not in MONITOR_MODES:
            raise NetTypeError(f"early_stop: mode is one of {', '.join(MONITOR_MODES)}",
                               call.loc)
        patience = _number(vals["patience"], "early_stop: patience", call.loc, integer=True,
                           lo=0)
        min_delta = _number(vals["min_delta"], "early_stop: min_delta", call.loc, lo=0)
        return EarlyStopSpec(monitor, patience, float(min_delta), str(vals["mode"]), call.loc)

    def step(self, st: S.StepBlock, default_opt: OptimizerSpec) -> StepSpec:
        seen: dict[str, S.Setting] = {}
        for s in st.settings:
            if s.key not in STEP_SETTINGS:
                raise UndefinedName(f"unknown step setting '{s.key}'"
                                    f"{suggestion(s.key, STEP_SETTINGS)} (step settings: "
                                    f"{', '.join(STEP_SETTINGS)})", s.key_loc or s.loc)
            if s.key in seen:
                raise SemanticError(f"step setting '{s.key}' is given twice", s.loc)
            seen[s.key] = s
        for need in ("loss", "params"):
            if need not in seen:
                raise SemanticError(f"step '{st.name}' needs '{need} = ...'", st.loc)
        loss_name = _dotted(seen["loss"].value)
        if loss_name not in self.b.g.losses:
            raise UndefinedName(f"step '{st.name}': no loss named '{loss_name}'"
                                f"{suggestion(str(loss_name), self.b.g.losses)} (losses: "
                                f"{', '.join(self.b.g.losses) or 'none'})", seen["loss"].value.loc)
        params = self.param_names(seen["params"].value, f"step '{st.name}' params")
        opt = self.optimizer(seen["optimizer"].value) if "optimizer" in seen else default_opt
        sched = self.schedule(seen["schedule"].value) if "schedule" in seen else ScheduleSpec()
        clip = None
        if "clip_norm" in seen:
            clip = float(_number(self.static.value(seen["clip_norm"].value), "clip_norm",
                                 seen["clip_norm"].loc, lo=0, lo_open=True))
        return StepSpec(st.name, loss_name, params, opt, sched, clip, st.loc)

    def build(self, t: S.TrainDef | None, model: str) -> TrainConfig:
        g = self.b.g
        if t is None:
            return TrainConfig(model=model)
        kw: dict = {}
        locs: dict[str, SourceLoc] = {}
        steps, early = [], None
        settings = [i for i in t.items if isinstance(i, S.Setting)]
        metric_setting = next((s for s in settings if s.key == "metrics"), None)
        metrics = self.metrics(metric_setting.value) if metric_setting else ()
        for item in t.items:
            if isinstance(item, S.Setting):
                key = item.key
                if key not in SETTINGS:
                    hint = " (early_stop is written as a call: early_stop(monitor = val_loss))" \
                        if key == "early_stop" else ""
                    raise UndefinedName(f"unknown train setting '{key}'"
                                        f"{suggestion(key, SETTINGS + DIRECTIVES)}{hint}",
                                        item.key_loc or item.loc)
                if key in locs:
                    raise SemanticError(f"train setting '{key}' is given twice", item.loc,
                                        notes=[("first given here", locs[key])])
                locs[key] = item.loc
                kw[key] = self.setting(key, item.value, metrics)
            elif isinstance(item, S.Directive):
                name = item.call.func
                if name not in DIRECTIVES:
                    raise UndefinedName(f"unknown train directive '{name}'"
                                        f"{suggestion(name, DIRECTIVES + SETTINGS)}", item.loc)
                if early is not None:
                    raise SemanticError("early_stop is given twice", item.loc)
                early = self.early_stop(item.call, metrics)
                locs["early_stop"] = item.loc
            else:
                if any(s.name == item.name for s in steps):
                    raise SemanticError(f"step '{item.name}' is defined twice", item.loc)
                steps.append(item)
        opt = kw.get("optimizer", OptimizerSpec())
        step_specs = tuple(self.step(s, opt) for s in steps)
        if not step_specs and "loss" not in g.losses:
            if g.losses:
                raise SemanticError(f"model '{model}' has only named losses "
                                    f"({', '.join(g.losses)}): say how to train them with "
                                    "step blocks (step NAME { loss = ...; params = [...] })",
                                    t.loc)
            raise SemanticError(f"model '{model}' has no loss to train: add 'loss ...' to the "
                                "model", t.loc)
        kw["metrics"] = metrics
        return TrainConfig(model=model, **kw, early_stop=early,
                           steps=step_specs, locs=locs)

    def setting(self, key: str, e: S.Expr, metrics):
        v = None
        if key == "data":
            v = self.static.value(e)
            if not isinstance(v, str) or not v:
                raise NetTypeError("data is a bundled data set name (e.g. \"digits\") or a path",
                                   e.loc)
            if v in BUNDLED_DATA or ("/" not in v and "." not in v):
                return v
            return self.path(e, "data")
        if key == "validation":
            v = self.static.value(e)
            if isinstance(v, str):
                return self.path(e, "validation")
            return float(_number(v, "validation", e.loc, lo=0, hi=1))
        if key == "optimizer":
            return self.optimizer(e)
        if key == "schedule":
            return self.schedule(e)
        if key in ("batch", "epochs"):
            return _number(self.static.value(e), key, e.loc, integer=True, lo=1)
        if key == "seed":
            return _number(self.static.value(e), key, e.loc, integer=True, lo=0)
        if key in ("l1", "l2"):
            return float(_number(self.static.value(e), key, e.loc, lo=0))
        if key == "clip_norm":
            return float(_number(self.static.value(e), key, e.loc, lo=0, lo_open=True))
        if key == "metrics":
            return metrics
        if key == "freeze":
            return self.param_names(e, "freeze")
        if key == "init_from":
            return self.path(e, "init_from")
        if key == "augment":
            return self.augment(e)
        if key == "checkpoint":
            return self.path(e, "checkpoint")
        raise NetTypeError(f"unhandled setting {key}", e.loc)


def _dotted(e: S.Expr) -> str | None:
    if isinstance(e, S.Name):
        return e.id
    if isinstance(e, S.Attr):
        head = _dotted(e.obj)
        return None if head is None else f"{head}.{e.attr}"
    return None


def _find_instance(root: Instance, path: str) -> Instance | None:
    inst = root
    for part in path.split("."):
        inst = inst.by_name.get(part)
        if inst is None:
            return None
    return inst


def _instance_names(root: Instance):
    for child in root.by_name.values():
        yield child.name
        yield from _instance_names(child)


def build_train(t: S.TrainDef | None, builder, prog) -> TrainConfig:
    return _TrainBuilder(builder, prog).build(t, builder.g.name)


OVERRIDABLE = SETTINGS + ("lr", "early_stop")
PATH_SETTINGS = ("data", "validation", "init_from", "checkpoint")  # strings taken as paths


def _source(value) -> str:
    """A Python override value as `.net` expression text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_source(v) for v in value) + "]"
    return str(value)


def override_train(cfg: TrainConfig, settings: dict, built) -> TrainConfig:
    """`cfg` with settings replaced, each checked as if it were written in the train block.

    Values are Python values or `.net` source text: `optimizer="sgd(0.1, momentum = 0.9)"`,
    `metrics=["accuracy"]`, `data="path.npz"`, `early_stop="monitor = val_loss, patience = 2"`;
    `lr` replaces the optimizer's learning rate. A path setting (PATH_SETTINGS) takes the path
    itself or, like the file, a `.net` string literal: `data='"my data.npz"'` (what
    `--set 'data="my data.npz"'` gives) is the path inside the quotes."""
    import dataclasses

    from .build_ir import Builder
    from .parse import parse_text

    b = Builder(built.program, built.graph, dict(built.params))
    b.root = built.root
    tb = _TrainBuilder(b, built.program)
    kw: dict = {}
    settings = {k: python_value(v) for k, v in settings.items()}
    for key, value in sorted(settings.items(), key=lambda kv: kv[0] == "lr"):  # lr last
        if key not in OVERRIDABLE:
            raise UndefinedName(f"unknown train setting '{key}'{suggestion(key, OVERRIDABLE)}")
        if key == "lr":
            opt = kw.get("optimizer", cfg.optimizer)
            lr = _number(value, "lr", None, lo=0, lo_open=True)
            kw["optimizer"] = OptimizerSpec(opt.name, {**opt.args, "lr": float(lr)}, opt.loc)
            continue
        if isinstance(value, float) and not math.isfinite(value):  # no .net text spells it
            raise NetTypeError(f"{key} must be a finite number, got {value}")
        text = _source(value)
        is_path = key in PATH_SETTINGS and isinstance(value, str)
        if is_path and not value.startswith('"'):  # a bare path: quote it as a .net string
            text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        src = f"early_stop({text})" if key == "early_stop" else f"{key} = {text}"
        program = parse_text(f"train {cfg.model} {{\n    {src}\n}}\n", f"<--set {key}>")
        item = program.items[0].items[0]
        if key == "early_stop":
            kw["early_stop"] = tb.early_stop(item.call, kw.get("metrics", cfg.metrics))
        elif key == "metrics":
            kw["metrics"] = tb.metrics(item.value)
        elif is_path:
            path = tb.static.value(item.value)  # the string the (quoted or bare) value means
            if not isinstance(path, str) or not path:
                raise NetTypeError(f"{key} is a path (or a bundled data set name) given as one "
                                   "string", item.value.loc)
            kw[key] = path if key == "data" and not os.path.exists(path) and "/" not in path \
                else os.path.abspath(path)
        else:
            kw[key] = tb.setting(key, item.value, kw.get("metrics", cfg.metrics))
    return dataclasses.replace(cfg, **kw)
