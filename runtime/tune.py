"""Hyperparameter search: `netc tune FILE --grid K=V1,V2 … | --random K=DIST … [--trials N]
[--sampler grid|random|tpe] [--metric NAME] [--epochs N]`.

Takes: a `.net` file and a search space over its model parameters (`hidden`, `batch`…) and train
settings (`lr`, `optimizer`, `l2`, `epochs`…). Search space syntax: `--grid KEY=V1,V2,…` lists the
values (commas inside parentheses do not split: `optimizer=sgd(0.1, momentum = 0.9),adam(1e-3)`);
`--random KEY=DIST` with DIST one of `loguniform(LO, HI)`, `uniform(LO, HI)`, `int(LO, HI)`
(inclusive) or `choice(V1, V2, …)`. Samplers: `grid` (the cartesian product of the --grid lists;
the default with only --grid), `random` (N draws, seeded; a --grid list is a choice), `tpe`
(Optuna's TPE, the optional extra `netc[tune]`). Gives: trials ranked by the metric (default: the
early_stop monitor, else val_loss; minimized for losses and errors, maximized for accuracy-like
metrics; a trial's value is its best epoch's), as a table, or with `--json` one JSON object.

Invariants: malformed flags are UsageErrors (exit 2); a key that is neither a model parameter nor
a train setting is a NetError (exit 1) naming the near ones. Trials with the same model parameters
share one compiled model (shapes unchanged): it is reinitialized to the seed's fresh weights and
its train settings applied through `Model.configure`; new model parameters compile a new model.
"""

from __future__ import annotations

import itertools
import math
import re

import numpy as np

from .compiler.errors import NetError, UsageError

_DIST = re.compile(r"^\s*(loguniform|uniform|int|choice)\s*\((.*)\)\s*$", re.S)


def split_top(text: str) -> list[str]:
    """Split at commas outside parentheses and brackets."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if depth < 0:
            raise UsageError(f"unbalanced parentheses in '{text}'")
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if depth:
        raise UsageError(f"unbalanced parentheses in '{text}'")
    return parts + [cur.strip()]


def _value(v: str):
    from .cli import _number_or_text
    return _number_or_text(v)


def _key_value(item: str, flag: str, seen: dict) -> tuple[str, str]:
    """KEY and VALUES of one `--grid`/`--random` item; a KEY already in `seen` is an error (the
    later one silently replaced the earlier)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise UsageError(f"{flag} expects KEY=VALUES, got '{item}'")
    if key.strip() in seen:
        raise UsageError(f"{flag} {key.strip()} is given twice: give all its values in one "
                         f"{flag} {key.strip()}=...")
    return key.strip(), value.strip()


def parse_grid(items: list[str] | None) -> dict[str, list]:
    out: dict[str, list] = {}
    for item in items or []:
        key, text = _key_value(item, "--grid", out)
        values = split_top(text)
        if any(not v for v in values):
            raise UsageError(f"--grid {key}: empty value in '{text}'")
        out[key] = [_value(v) for v in values]
    return out


def parse_random(items: list[str] | None) -> dict[str, tuple]:
    """KEY -> (kind, args): ("loguniform", (lo, hi)), ("uniform", …), ("int", …), ("choice",
    (v, …))."""
    out: dict[str, tuple] = {}
    for item in items or []:
        key, text = _key_value(item, "--random", out)
        m = _DIST.match(text)
        usage = ("expected loguniform(LO, HI), uniform(LO, HI), int(LO, HI) or "
                 "choice(V1, V2, ...)")
        if m is None:
            raise UsageError(f"--random {key}={text}: {usage}")
        kind, args = m.group(1), split_top(m.group(2))
        if kind == "choice":
            if any(not a for a in args):
                raise UsageError(f"--random {key}={text}: empty choice")
            out[key] = (kind, tuple(_value(a) for a in args))
            continue
        try:
            lo, hi = (float(a) for a in args)
        except ValueError:
            raise UsageError(f"--random {key}={text}: {kind} takes two numbers LO, HI") from None
        if not (math.isfinite(lo) and math.isfinite(hi)) or \
                (kind == "int" and max(abs(lo), abs(hi)) >= 2**62):  # NumPy's draws need these
            raise UsageError(f"--random {key}={text}: the bounds must be finite"
                             + (" integers below 2**62" if kind == "int" else " numbers"))
        if not lo < hi or (kind == "loguniform" and lo <= 0):
            raise UsageError(f"--random {key}={text}: need LO < HI"
                             + (" and LO > 0" if kind == "loguniform" else ""))
        if kind == "int" and (lo != int(lo) or hi != int(hi)):
            raise UsageError(f"--random {key}={text}: int takes integer bounds")
        out[key] = (kind, (int(lo), int(hi)) if kind == "int" else (lo, hi))
    return out


def draw(dist: tuple, rng: np.random.Generator):
    kind, args = dist
    if kind == "loguniform":
        return float(np.exp(rng.uniform(np.log(args[0]), np.log(args[1]))))
    if kind == "uniform":
        return float(rng.uniform(*args))
    if kind == "int":
        return int(rng.integers(args[0], args[1] + 1))
    return args[int(rng.integers(len(args)))]


def suggest(trial, key: str, dist: tuple):
    """The Optuna suggestion for one dimension of the space."""
    kind, args = dist
    if kind in ("loguniform", "uniform"):
        return trial.suggest_float(key, args[0], args[1], log=kind == "loguniform")
    if kind == "int":
        return trial.suggest_int(key, args[0], args[1])
    return trial.suggest_categorical(key, list(args))


class Tuner:
    """Runs trials, reusing one compiled model per set of model parameters."""

    def __init__(self, args, sets: dict, keys: list[str]):
        from .cli_train import _split_sets

        self.args, self.sets = args, sets
        probe = {k: 0 for k in keys}
        self.model_keys = set(_split_sets(args.file, probe, args.model)[0])  # NetError: unknown
        self.models: dict[tuple, object] = {}
        self.results: list[dict] = []
        self.metric: str | None = None
        self.mode = "min"

    def _model(self, model_params: dict):
        from .cli_train import open_model

        key = tuple(sorted(model_params.items()))
        m = self.models.get(key)
        if m is None:
            m = open_model(self.args, {**self.sets, **model_params})
            self.models[key] = m
            if self.metric is None:
                self._choose_metric(m)
                if self.args.out:  # before the first trial: the train block names the data
                    from .cli_train import _reads
                    from .saved import check_writable
                    check_writable(self.args.out, _reads(m, vars(self.args)))
        else:
            m.reinitialize()
            if self.args.weights:
                m.load_weights(self.args.weights, skip_unmatched=m.skip_unmatched,
                               kinds=("param", "state"))
        return m

    def _choose_metric(self, m) -> None:
        from .training import _monitor_mode

        es = m.config.early_stop
        self.metric = self.args.metric or (es.monitor if es else "val_loss")
        same = es is not None and es.monitor == self.metric
        self.mode = _monitor_mode(self.metric, es.mode if same else "auto")

    def run(self, params: dict) -> float:
        from .cli_train import _validation

        model_params = {k: v for k, v in params.items() if k in self.model_keys}
        settings = {k: v for k, v in params.items() if k not in self.model_keys}
        m = self._model(model_params)
        if settings:
            m.configure(**settings)
        validation = _validation(self.args.validation)
        if validation is None and not m.config.validation:
            validation = 0.2  # the metric is a validation value: hold some data out
        history = m.fit(epochs=self.args.epochs, batch=self.args.batch, data=self.args.data,
                        validation=validation, seed=self.args.seed)
        if self.metric not in history:
            raise NetError(f"--metric {self.metric}: this run does not compute it (it has: "
                           f"{', '.join(k for k in history.history if k != 'time')})")
        values = [v for v in history[self.metric] if math.isfinite(v)]
        pick = min if self.mode == "min" else max
        value = pick(values) if values else math.nan
        self.results.append({"trial": len(self.results) + 1, "params": params, "value": value,
                             "epochs": len(history.epochs), "stop_reason": history.stop_reason})
        if not self.args.quiet and not self.args.json:
            from .cli_train import progress_line
            shown = ", ".join(f"{k}={v}" for k, v in params.items())
            progress_line(f"trial {len(self.results)}: {shown} -> {self.metric} {value:.4f}")
        return value

    def ranked(self) -> list[dict]:
        sign = 1 if self.mode == "min" else -1
        order = sorted(self.results, key=lambda r: (math.isnan(r["value"]),
                                                    sign * r["value"] if not
                                                    math.isnan(r["value"]) else 0))
        return [{"rank": i + 1, **r} for i, r in enumerate(order)]


def _spaces(args) -> tuple[dict, dict, str, int]:
    grid, rand = parse_grid(args.grid), parse_random(args.random)
    if not grid and not rand:
        raise UsageError("netc tune needs a search space: --grid KEY=V1,V2 or --random KEY=DIST")
    both = set(grid) & set(rand)
    if both:
        raise UsageError(f"{', '.join(sorted(both))}: given by both --grid and --random")
    sampler = args.sampler or ("grid" if not rand else "random")
    if sampler == "grid" and rand:
        raise UsageError("--sampler grid takes --grid lists only; use --sampler random or tpe "
                         "for --random distributions")
    if args.trials is not None and args.trials < 1:
        raise UsageError(f"--trials must be at least 1, got {args.trials}")
    size = math.prod(len(v) for v in grid.values())
    trials = args.trials or (size if sampler == "grid" else 10)
    return grid, rand, sampler, trials


def cmd_tune(args, sets: dict) -> int:
    if not args.file:
        raise UsageError("netc tune needs FILE")
    grid, rand, sampler, trials = _spaces(args)
    if args.out:  # refuse a bad -o before the trials, not after them (Tuner checks the rest)
        from .saved import check_writable
        check_writable(args.out)
    if sampler == "tpe":
        try:
            import optuna
        except ImportError:
            raise NetError("--sampler tpe needs Optuna: pip install 'netc[tune]' (or optuna)"
                           ) from None
    tuner = Tuner(args, sets, [*grid, *rand])
    seed = args.seed if args.seed is not None else 0
    if sampler == "grid":
        for combo in itertools.islice(itertools.product(*grid.values()), trials):
            tuner.run(dict(zip(grid, combo)))
    elif sampler == "random":
        rng = np.random.default_rng([seed, 0x74756E65])
        space = {**{k: ("choice", tuple(v)) for k, v in grid.items()}, **rand}
        for _ in range(trials):
            tuner.run({k: draw(d, rng) for k, d in space.items()})
    else:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        space = {**{k: ("choice", tuple(v)) for k, v in grid.items()}, **rand}

        def objective(trial):
            return tuner.run({k: suggest(trial, k, d) for k, d in space.items()})

        # the direction needs the metric, which needs a compiled model: decide it from the file
        tuner._model({})
        study = optuna.create_study(direction="minimize" if tuner.mode == "min" else "maximize",
                                    sampler=optuna.samplers.TPESampler(seed=seed))
        study.optimize(objective, n_trials=trials)
    _report(args, tuner, sampler)
    return 0


def _report(args, tuner: Tuner, sampler: str) -> None:
    ranked = tuner.ranked()
    result = {"metric": tuner.metric, "mode": tuner.mode, "sampler": sampler,
              "compiled_models": len(tuner.models), "trials": ranked, "best": ranked[0]}
    from .runs import json_text, write_atomic
    if args.out:
        write_atomic(args.out, (json_text(result, indent=2) + "\n").encode())
    if args.json:
        print(json_text(result))
        return
    keys = list(ranked[0]["params"])
    head = ["rank", "trial", *keys, tuner.metric, "epochs"]
    rows = [[str(r["rank"]), str(r["trial"]), *(str(r["params"][k]) for k in keys),
             f"{r['value']:.4f}", str(r["epochs"])] for r in ranked]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    arrow = "lower" if tuner.mode == "min" else "higher"
    print(f"{len(ranked)} trial(s), {len(tuner.models)} compiled model(s); ranked by "
          f"{tuner.metric} ({arrow} is better)")


def add_tune_command(sub, common) -> None:
    p = sub.add_parser("tune", help="hyperparameter search over model parameters and train "
                       "settings")
    common(p, training=True)
    p.add_argument("--grid", action="append", metavar="K=V1,V2", help="values to try")
    p.add_argument("--random", action="append", metavar="K=DIST",
                   help="loguniform(LO, HI) | uniform(LO, HI) | int(LO, HI) | choice(V, ...)")
    p.add_argument("--trials", type=int, metavar="N", help="trials (random, tpe; default 10)")
    p.add_argument("--sampler", choices=("grid", "random", "tpe"))
    p.add_argument("--metric", help="what to rank by (default: the early_stop monitor, else "
                   "val_loss)")
    p.set_defaults(func=cmd_tune)
