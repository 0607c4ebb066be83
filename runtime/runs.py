"""Experiment runs of `netc train`: one folder per run with its configuration, per-epoch history,
checkpoints, curves and (optionally) TensorBoard scalars; and resuming a run from its folder.

Takes: the model being trained, the command's settings and the fit loop's `FitState` after each
epoch. Gives: a run folder (`runs/NAME/<timestamp>` by default; the train block's `checkpoint`
sets the parent; `--run-dir` chooses it) holding
    config.json    the command (file, --set values, flags) and the resolved train settings
    history.jsonl  one JSON object per completed epoch (epoch, loss, val_loss, metrics…)
    last.npz       the model after the last completed epoch, with the FitState in its metadata
    best.npz       the model at the best epoch of the monitored value (see FitState.monitor)
    curves.png     loss and metrics, train vs validation (when matplotlib is installed)
    tensorboard/   event files with every logged scalar (`--tensorboard`)

Invariants: every file is written atomically (temporary file, fsync, rename), best.npz before
last.npz, so a run killed at any instant resumes from a consistent last.npz: replaying the epochs
after it is deterministic, so a best.npz one epoch ahead is rewritten with identical contents.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

from . import saved
from .compiler.errors import DataError, NetError
from .saved import atomic_write, mode_for
from .training import FitState, History

CONFIG, HISTORY, LAST, BEST, CURVES = ("config.json", "history.jsonl", "last.npz", "best.npz",
                                       "curves.png")


def json_text(obj, **kw) -> str:
    """JSON for other programs (--json lines, history.jsonl, tune results): NaN and infinities
    (a metric undefined for the data, such as auc over one class; a diverged loss) become null.
    json.dumps wrote them as NaN / Infinity, which strict parsers (jq, JSON.parse) reject."""
    def finite(v):
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [finite(x) for x in v]
        return v
    return json.dumps(finite(obj), allow_nan=False, **kw)


def write_atomic(path: str, data: bytes) -> None:
    """Write `data` to `path` through a fsynced temporary file in the same folder."""
    atomic_write(path, lambda f: f.write(data))


def settings_json(cfg) -> dict:
    """The resolved TrainConfig as plain JSON (source locations left out)."""
    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if k not in ("loc", "locs")}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v if isinstance(v, str | int | float | bool | type(None)) else str(v)
    return clean(dataclasses.asdict(cfg))


def new_run_dir(model_name: str, parent: str | None) -> str:
    """A fresh `parent/<timestamp>` folder (parent defaults to `runs/NAME`)."""
    parent = parent or os.path.join("runs", model_name)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, k = os.path.join(parent, stamp), 1
    while os.path.exists(path):
        k += 1
        path = os.path.join(parent, f"{stamp}-{k}")
    return path


def read_checkpoint_meta(path: str) -> dict:
    """The metadata of a checkpoint written by `Run` (a DataError when it is not one)."""
    return saved.read(path)[1]


def load_arrays(path: str) -> dict[str, np.ndarray]:
    return saved.read(path)[0]


class Run:
    """One run folder: its files, written as training goes."""

    def __init__(self, path: str, *, tensorboard: bool = False, quiet: bool = False,
                 resume: bool = False):
        """A new run in `path` (made if missing; refused if it holds a run), or with `resume`
        the existing run there."""
        self.path, self.quiet = path, quiet
        if resume:
            if not os.path.isdir(path):
                raise DataError(f"'{path}' is not a netc run folder ("
                                f"{'no such folder' if not os.path.exists(path) else 'a file'})")
        elif os.path.exists(self.file(LAST)):  # (a run stopped before its first epoch may
            # be started again in its folder: it has no checkpoint to lose)
            raise DataError(f"the run folder '{path}' already holds a run: continue it with "
                            f"--resume {path}, or choose another --run-dir")
        writer = _tensorboard_writer() if tensorboard else None  # missing: no folder is made
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot make the run folder '{path}': {e.strerror or e}") from None
        self.tb = writer(os.path.join(path, "tensorboard")) if writer else None

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def write_config(self, config: dict) -> None:
        write_atomic(self.file(CONFIG), (json.dumps(config, indent=2) + "\n").encode())

    def read_config(self) -> dict:
        try:
            with open(self.file(CONFIG), encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError) as e:
            raise DataError(f"'{self.path}' is not a netc run folder ({CONFIG}: {e})") from None

    def resume_state(self) -> FitState:
        """The FitState of last.npz, with the best weights of best.npz when early stopping
        will need them; history.jsonl is rewritten to match (epochs after it are replayed)."""
        if not os.path.exists(self.file(LAST)):
            raise DataError(f"'{self.path}' has no {LAST}: the run stopped before its first "
                            "epoch completed; start it again")
        extra = read_checkpoint_meta(self.file(LAST)).get("extra") or {}
        if "fit" not in extra:
            raise DataError(f"{self.file(LAST)} has no training state to resume from")
        state = FitState.from_json(extra["fit"])
        if state.best_epoch is not None and os.path.exists(self.file(BEST)):
            state.best_arrays = load_arrays(self.file(BEST))
        lines = [json_text({"epoch": e + 1, **{k: v[i] for k, v in state.history.history.items()
                                               if i < len(v)}})
                 for i, e in enumerate(state.history.epochs)]
        write_atomic(self.file(HISTORY), "".join(line + "\n" for line in lines).encode())
        return state

    def on_epoch(self, model, state: FitState) -> None:
        """After a completed epoch: history line, TensorBoard scalars, best.npz, last.npz."""
        h = state.history
        epoch = h.epochs[-1]
        logs = {k: v[-1] for k, v in h.history.items() if len(v) == len(h.epochs)}
        with open(self.file(HISTORY), "a", encoding="utf-8") as f:
            f.write(json_text({"epoch": epoch + 1, **logs}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.tb is not None:
            for k, v in logs.items():
                self.tb.add_scalar(k, float(v), epoch + 1)
            self.tb.flush()
        if state.improved:
            model.save(self.file(BEST), extra={"epoch": epoch + 1, "monitor": state.monitor})
        model.save(self.file(LAST), extra={"fit": state.to_json()})

    def finish(self, history: History) -> None:
        """curves.png (when matplotlib is installed; a note once otherwise); close TensorBoard."""
        if self.tb is not None:
            self.tb.close()
        if not history.epochs:
            return
        try:
            plot_curves(history, self.file(CURVES))
        except ImportError:
            if not self.quiet:
                print("netc: note: curves.png not drawn: matplotlib is not installed (pip "
                      "install 'netc[plot]')", file=sys.stderr)


def plot_curves(history: History, path: str) -> None:
    """Loss and each metric against the epoch, train and validation on one panel each."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in history.history if not k.startswith("val_") and k != "time"]
    keys += [k[4:] for k in history.history if k.startswith("val_") and k[4:] not in keys]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    epochs = [e + 1 for e in history.epochs]
    for ax, k in zip(axes[0], keys):
        for name, label in ((k, "train"), (f"val_{k}", "validation")):
            if name in history.history:
                ax.plot(epochs[:len(history[name])], history[name], marker="o", label=label)
        ax.set_title(k)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".curves.", suffix=".png", dir=folder)
    os.close(fd)
    try:
        os.chmod(tmp, mode_for(path))
        fig.savefig(tmp, dpi=80)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def _tensorboard_writer():
    """tensorboard's event writer class (called with a folder), or a NetError saying how to
    install it."""
    try:
        from tensorboard.summary import Writer
    except ImportError:
        raise NetError("--tensorboard needs the 'tensorboard' package: "
                       "pip install 'netc[tensorboard]'") from None
    return Writer
