"""The `netc train | eval | predict` commands.

Takes: parsed arguments from `cli.py`. Gives: an exit code; progress on stderr (a tqdm bar when
tqdm is installed and stderr is a terminal, one line per epoch otherwise), `--json` lines on stdout
(one object per epoch: epoch, loss, val_loss, val_accuracy, …), a final summary line, and the
trained model saved atomically (`--out`, default `<model>.npz`). Ctrl-C (or SIGTERM, a
scheduler's time limit) stops after the current batch, saves what was trained, and exits 130 (143);
a second Ctrl-C aborts at once.

Each `netc train` run writes a run folder (runs.py: config, history.jsonl, last/best checkpoints,
curves, `--tensorboard` scalars; `--run-dir DIR`, or `runs/NAME/<time>` under the train block's
`checkpoint`); `--resume RUN` continues one from its last checkpoint, bitwise as if never stopped.
`--folds K` cross-validates instead (crossval.py); `netc tune` searches hyperparameters (tune.py).

`--set k=v` overrides a model parameter when the model has one of that name, otherwise a train
setting (checked like the file: `--set lr=0.01`, `--set optimizer="sgd(0.1, momentum = 0.9)"`;
a path setting takes the path bare or quoted as in the file: `--set 'data="my data.npz"'`).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import numpy as np

from .compiler.errors import DataError, NetError, UsageError, suggestion
from .runs import json_text


def default_backend() -> str:
    """The JIT, unless NETC_BACKEND names another (e.g. "interpret" where LLVM is unusable)."""
    backend = os.environ.get("NETC_BACKEND", "jit")
    if backend not in ("jit", "interpret"):
        raise UsageError(f"NETC_BACKEND must be 'jit' or 'interpret', not {backend!r}")
    return backend


def _split_sets(path: str, sets: dict, model_name: str | None) -> tuple[dict, dict]:
    from .compiler.build_ir import choose_model
    from .compiler.build_train import OVERRIDABLE
    from .compiler.program import load_program

    mdef = choose_model(load_program(path), model_name)
    names = {p.name for p in mdef.params}
    model_params, settings = {}, {}
    for k, v in sets.items():
        if k in names:
            model_params[k] = v
        elif k in OVERRIDABLE:
            settings[k] = v
        else:
            raise NetError(f"--set {k}: no model parameter or train setting of that name"
                             f"{suggestion(k, list(names) + list(OVERRIDABLE))} (model "
                             f"parameters: {', '.join(sorted(names)) or 'none'})")
    return model_params, settings


def is_saved_model(path: str) -> bool:
    """A model saved by netc (`.npz` or `.safetensors`, in any case), not a `.net` file."""
    return path.lower().endswith((".npz", ".safetensors"))


def open_model(args, sets: dict):
    """A compiled model from a `.net` file or from a saved model (.npz, .safetensors), with
    --weights loaded into it."""
    import netc

    path = args.file
    backend = getattr(args, "backend", None) or default_backend()
    if is_saved_model(path):
        if getattr(args, "model", None):
            raise UsageError(f"--model chooses among the models of a .net file; '{path}' is a "
                             "saved model")
        m = netc.load(path, backend=backend, threads=args.threads)
        model_params, settings = {}, sets  # checked by configure: train settings only
    else:
        model_params, settings = _split_sets(path, sets, getattr(args, "model", None))
        m = netc.compile(path, backend=backend, threads=args.threads,
                         seed=args.seed if args.seed is not None else 0, **model_params)
    weights = getattr(args, "weights", None)
    m.skip_unmatched = bool(getattr(args, "skip_unmatched", False))
    if weights:
        m.load_weights(weights, skip_unmatched=m.skip_unmatched, kinds=("param", "state"))
    return m.configure(**settings) if settings else m


def progress_line(text: str) -> None:
    """Print one line of progress to stdout while a job runs. When stdout is a pipe its reader
    closed (`netc train --json | head -1`), the rest of the output goes nowhere and the job goes
    on: the broken pipe ended training at once with exit 0, no model saved."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)
        print("netc: note: standard output was closed; training goes on without printing",
              file=sys.stderr)


class _Progress:
    def __init__(self, quiet: bool, as_json: bool):
        self.quiet, self.as_json = quiet, as_json
        self.bar = None
        self.tqdm = None
        if not quiet and not as_json and sys.stderr.isatty():
            try:
                from tqdm import tqdm
                self.tqdm = tqdm
            except ImportError:
                self.tqdm = None

    def __call__(self, event: str, info: dict) -> None:
        if event == "epoch_start" and self.tqdm is not None:
            self.bar = self.tqdm(total=info["steps"], desc=f"epoch {info['epoch'] + 1}/"
                                 f"{info['epochs']}", file=sys.stderr, leave=False, unit="batch")
        elif event == "batch" and self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{info['loss']:.4f}", refresh=False)
        elif event == "epoch_end":
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            logs = {k: v for k, v in info["logs"].items()}
            if self.as_json:
                progress_line(json_text({"epoch": info["epoch"] + 1, **logs}))
            elif not self.quiet:
                shown = ", ".join(f"{k} {v:.4f}" if k != "time" else f"{v:.1f}s"
                                  for k, v in logs.items())
                print(f"epoch {info['epoch'] + 1}/{info['epochs']}: {shown}", file=sys.stderr,
                      flush=True)


def _stall_hook(progress):
    """NETC_TEST_STALL_AT_EPOCH=k (tests only): after the first progress report of epoch k+1
    (epochs 1..k checkpointed; a report follows each native chunk of steps), sleep, so a test can
    kill the process mid-epoch at a known point."""
    at = os.environ.get("NETC_TEST_STALL_AT_EPOCH")
    if not at:
        return progress

    def hooked(event: str, info: dict) -> None:
        progress(event, info)
        if event == "batch" and info["epoch"] == int(at) and info["step"] < info["steps"]:
            time.sleep(600)
    return hooked


# the flags a run's config.json keeps (its "command"), with the JSON types each may have
_COMMAND = {"file": (str,), "model": (str,), "epochs": (int,), "batch": (int,), "data": (str,),
            "validation": (str,), "seed": (int,), "backend": (str,), "threads": (int,),
            "weights": (str,), "skip_unmatched": (bool,), "out": (str,)}


def _checked_command(config, where: str) -> dict:
    """The command of a run's config.json, or a DataError when it is damaged (a missing or
    mistyped entry failed later as a KeyError or TypeError)."""
    command = config.get("command") if isinstance(config, dict) else None
    bad = "" if isinstance(command, dict) else "it has no \"command\" object"
    if not bad:
        if not isinstance(command.get("sets"), dict):
            bad = "its command has no \"sets\" object"
        elif not isinstance(command.get("file"), str):
            bad = "its command names no FILE"
        else:
            bad = next((f"its command lacks \"{k}\"" if k not in command else
                        f"its command entry \"{k}\" is {json.dumps(command[k])[:40]}"
                        for k, types in _COMMAND.items() if k not in command or
                        not (command[k] is None or isinstance(command[k], types))), "")
    if bad:
        raise DataError(f"{where} is damaged: {bad}; start the run again")
    return command


def _train_command(args, sets: dict) -> dict:
    """What a resumed run needs to continue as the original command would have."""
    command = {"sets": sets, **{k: getattr(args, k, None) for k in _COMMAND}}
    for k in ("file", "data", "validation", "weights"):  # a resume may run from elsewhere
        if command[k] and os.path.exists(command[k]):
            command[k] = os.path.abspath(command[k])
    return command


# what `netc train` flags a resumed run keeps from its start (config.json's command)
_RESUME_FIXED = ("file", "set", "data", "validation", "batch", "seed", "model", "weights",
                 "skip_unmatched", "run_dir")


def _resume(args) -> tuple:
    """(model, FitState, run, the original command) of `netc train --resume RUN`."""
    import netc

    from .runs import LAST, Run

    fixed = [f"--{flag.replace('_', '-')}" if flag != "file" else "FILE"
             for flag in _RESUME_FIXED if getattr(args, flag, None) not in (None, False)]
    if fixed:  # the run continues as it was started: these would be ignored
        raise UsageError(f"{', '.join(fixed)} cannot be given with --resume: the run continues "
                         "with the settings it was started with (a resume may change --epochs, "
                         "--out, --format, --backend and --threads)")
    run = Run(args.resume, tensorboard=args.tensorboard, quiet=args.quiet, resume=True)
    command = _checked_command(run.read_config(), run.file("config.json"))
    for flag in ("epochs", "out", "backend", "threads"):  # what a resume may change
        if getattr(args, flag, None) is not None:
            command[flag] = getattr(args, flag)
    state = run.resume_state()
    m = netc.load(run.file(LAST), backend=command["backend"] or default_backend(),
                  threads=command["threads"])
    settings = command["sets"]
    if not is_saved_model(command["file"]):
        _, settings = _split_sets(command["file"], command["sets"], command["model"])
    if settings:
        m.configure(**settings)
    m._initialized_from = m.config.init_from  # already in the checkpoint's parameters
    return m, state, run, command


def cmd_train(args, sets: dict) -> int:
    from .runs import Run, new_run_dir, settings_json
    from .saved import check_writable

    if args.folds is not None:
        from .crossval import cmd_folds
        return cmd_folds(args, sets)
    if args.resume:
        m, state, run, command = _resume(args)
        out = check_writable(command["out"] or f"{m.name}.{args.format or 'npz'}",
                             _reads(m, command))
    else:
        if not args.file:
            raise UsageError("netc train needs FILE (or --resume RUN)")
        m = open_model(args, sets)
        state, command = None, _train_command(args, sets)
        # refuse a bad -o before training (and before making a run folder), not after it
        out = check_writable(command["out"] or f"{m.name}.{args.format or 'npz'}",
                             _reads(m, command))
        run = Run(args.run_dir or new_run_dir(m.name, m.config.checkpoint),
                  tensorboard=args.tensorboard, quiet=args.quiet)
        train = settings_json(m.config)
        train["data"] = command["data"] or train["data"]
        run.write_config({"command": command, "model": m.name, "model_params": m.model_params,
                          "train": train})
    stop = {"flag": False, "code": 0}

    def on_signal(signum, frame):  # Ctrl-C or a kill (a scheduler's time limit): save first
        if stop["flag"]:
            raise KeyboardInterrupt
        stop["flag"], stop["code"] = True, 128 + signum  # 130 for Ctrl-C, 143 for a kill
        why = "terminated" if signum == signal.SIGTERM else "interrupted"
        print(f"\nnetc: {why}: stopping after this batch and saving (Ctrl-C again to abort)",
              file=sys.stderr)

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    t0 = time.perf_counter()
    try:
        history = m.fit(epochs=command["epochs"], batch=command["batch"], data=command["data"],
                        validation=_validation(command["validation"]), seed=command["seed"],
                        progress=_stall_hook(_Progress(args.quiet, args.json)),
                        stop=lambda: stop["flag"], state=state, on_epoch=run.on_epoch)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    run.finish(history)
    m.save(out, format=args.format)
    if history.dropped_rows:
        history.notes.append(f"the batch size is fixed by the file: the last {history.dropped_rows}"
                             " rows of each epoch's shuffled order were not trained on")
    last = history.last()
    shown = ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k != "time")
    summary = (f"trained {m.name}: {len(history.epochs)} epoch(s) in "
               f"{time.perf_counter() - t0:.1f}s — {shown}; {history.stop_reason}; saved to {out}"
               f"; run folder {run.path}")
    for note in history.notes:
        print(f"netc: note: {note}", file=sys.stderr)
    if args.json:
        print(json_text({"summary": True, "epochs": len(history.epochs), "saved": out,
                          "run": run.path, "stop_reason": history.stop_reason, **last}))
    elif not args.quiet:
        print(summary)
    return stop["code"]


def _reads(m, command: dict) -> dict:
    """The files a train command reads, which its output must not replace (the default output
    `<model>.npz` can be the data file's name)."""
    val = command.get("validation") or m.config.validation
    return {"the model file": command.get("file"),
            "the data file": command.get("data") or m.config.data,
            "the validation file": val if isinstance(val, str) else None,
            "the weights file": command.get("weights"), "the init_from file": m.config.init_from}


def _validation(v: str | None):
    if v is None:
        return None
    try:
        return float(v)
    except ValueError:
        return v


def _data_arrays(m, args, with_targets: bool) -> dict:
    from .training import model_arrays

    spec = args.data or m.config.data
    if spec is None:
        raise UsageError("no data: give --data PATH (or set data = ... in the train block)")
    return model_arrays(m, spec, m.config.seed, with_targets=with_targets)


def cmd_eval(args, sets: dict) -> int:
    from .training import evaluate_arrays

    m = open_model(args, sets)
    arrays = _data_arrays(m, args, with_targets=True)
    result = evaluate_arrays(m, arrays, args.batch or m.config.batch, m.config.metrics)
    if args.json:
        print(json_text(result))
    else:
        print(", ".join(f"{k} {v:.4f}" for k, v in result.items()))
    return 0


def cmd_predict(args, sets: dict) -> int:
    from .saved import check_writable

    if args.out and not args.out.lower().endswith((".npz", ".csv")):
        raise UsageError(f"-o {args.out}: predictions are written as .npz or .csv; name the "
                         "file with one of those endings")
    m = open_model(args, sets)
    out = check_writable(args.out or f"{m.name}.predictions.npz",
                         {"the model file": args.file, "the data file": args.data or m.config.data,
                          "the weights file": args.weights})
    arrays = _data_arrays(m, args, with_targets=False)
    n = len(next(iter(arrays.values())))
    if n == 0:  # as eval and train say: there is nothing to write
        raise DataError("the data to predict from has no rows")
    size = m.fixed_batch or max(1, min(args.batch or m.config.batch, n))
    outs: dict[str, list] = {}
    for lo in range(0, n, size):
        chunk = {k: v[lo:lo + size] for k, v in arrays.items() if k in m.inputs}
        rows = len(next(iter(chunk.values())))
        if m.fixed_batch and rows < m.fixed_batch:  # pad the last chunk to the fixed batch
            chunk = {k: np.concatenate([v, np.repeat(v[-1:], m.fixed_batch - rows, 0)])
                     for k, v in chunk.items()}
        res = m.predict(**chunk)
        res = res if isinstance(res, dict) else {next(iter(m.outputs)): res}
        for k, v in res.items():
            outs.setdefault(k, []).append(v[:rows])
    result = {k: np.concatenate(v) for k, v in outs.items()}
    _write_predictions(result, out)
    if not args.quiet:
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in result.items())
        print(f"predicted {n} rows: {shapes}; saved to {out}")
    return 0


def _write_predictions(result: dict, out: str) -> None:
    from .saved import atomic_write

    def write(f):
        if out.lower().endswith(".csv"):  # as data files: any case
            cols, header = [], []
            for k, v in result.items():
                v2 = v.reshape(len(v), -1)
                cols.append(v2)
                header += [k] if v2.shape[1] == 1 else [f"{k}_{i}" for i in range(v2.shape[1])]
            f.write((",".join(header) + "\n").encode())
            np.savetxt(f, np.concatenate(cols, axis=1), delimiter=",", fmt="%.7g")
        else:
            np.savez(f, **result)
    atomic_write(out, write)


def add_commands(sub, parser_class) -> None:
    def common(p, *, training: bool):
        p.add_argument("file", metavar="FILE", nargs="?" if training else None,
                       help="a .net file, or a model saved by netc train")
        p.add_argument("--set", action="append", metavar="K=V",
                       help="override a model parameter or a train setting")
        p.add_argument("--data", metavar="PATH", help="data set name or file (.npz .csv IDX)")
        p.add_argument("--batch", type=int, metavar="N")
        p.add_argument("--threads", type=int, metavar="N")
        p.add_argument("--seed", type=int, metavar="S")
        p.add_argument("--model", help="which model, when the file has several")
        p.add_argument("--backend", choices=("jit", "interpret"), default=None,
                       help="native code (jit, the default) or the NumPy interpreter")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("-q", "--quiet", action="store_true")
        p.add_argument("--weights", metavar="W.npz", help="start from these saved weights")
        if training:
            p.add_argument("--epochs", type=int, metavar="N")
            p.add_argument("--validation", metavar="F|PATH",
                           help="a fraction to hold out, or a validation data file")
            p.add_argument("--format", choices=("npz", "safetensors"), default=None,
                           help="file format of the saved model (default: from --out, else npz)")
            p.add_argument("--skip-unmatched", action="store_true",
                           help="init_from/--weights: skip tensors whose shapes differ")
        p.add_argument("-o", "--out", metavar="PATH")

    t = sub.add_parser("train", help="train a model on its data; save it (--out)")
    common(t, training=True)
    t.add_argument("--run-dir", metavar="DIR", help="the run folder (default runs/NAME/<time>, "
                   "under the train block's checkpoint folder when it sets one)")
    t.add_argument("--resume", metavar="RUN", help="continue the run in folder RUN from its "
                   "last checkpoint (bitwise as if never stopped)")
    t.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard scalars into the run folder")
    t.add_argument("--folds", type=int, metavar="K",
                   help="K-fold cross-validation (stratified for class targets)")
    t.set_defaults(func=cmd_train)
    from .tune import add_tune_command
    add_tune_command(sub, common)
    e = sub.add_parser("eval", help="loss and metrics of a model on data")
    common(e, training=False)
    e.set_defaults(func=cmd_eval)
    p = sub.add_parser("predict", help="run a model on data; save its outputs (.npz or .csv)")
    common(p, training=False)
    p.set_defaults(func=cmd_predict)
