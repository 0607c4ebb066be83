"""The resolved `train` block: what build_ir validates and the training-step builder consumes.

Takes: nothing (plain data). Gives: `TrainConfig` and its parts, every value already checked and
defaulted, each with the location it came from (None when it is a default or an override), so later
stages can still point at the file.

Defaults (the project's choices, recorded in grammar/README.md): batch 64, epochs 10, seed 0,
validation 0.0, l1 = l2 = 0, no clipping, optimizer adam(lr = 1e-3), schedule constant, metrics
none beyond the loss. Optimizer defaults: sgd(lr=0.01, momentum=0, nesterov=false, weight_decay=0),
adam(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8), adamw(lr=1e-3, weight_decay=0.01, beta1=0.9,
beta2=0.999, eps=1e-8), rmsprop(lr=1e-3, rho=0.9, eps=1e-8, momentum=0),
adagrad(lr=1e-2, eps=1e-10). Schedules: constant, step_decay(every, gamma=0.1) (every: in epochs),
exponential(gamma) (per epoch), cosine(warmup=0) (warmup in epochs; decays to 0 over all epochs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import SourceLoc
from .named_calls import REQUIRED

OPTIMIZERS: dict[str, tuple[tuple[str, object], ...]] = {
    "sgd": (("lr", 0.01), ("momentum", 0.0), ("nesterov", False), ("weight_decay", 0.0)),
    "adam": (("lr", 1e-3), ("beta1", 0.9), ("beta2", 0.999), ("eps", 1e-8)),
    "adamw": (("lr", 1e-3), ("weight_decay", 0.01), ("beta1", 0.9), ("beta2", 0.999),
              ("eps", 1e-8)),
    "rmsprop": (("lr", 1e-3), ("rho", 0.9), ("eps", 1e-8), ("momentum", 0.0)),
    "adagrad": (("lr", 1e-2), ("eps", 1e-10)),
}
SCHEDULES: dict[str, tuple[tuple[str, object], ...]] = {
    "constant": (),
    "step_decay": (("every", REQUIRED), ("gamma", 0.1)),
    "exponential": (("gamma", REQUIRED),),
    "cosine": (("warmup", 0),),
}
METRICS = ("accuracy", "precision", "recall", "f1", "auc", "mae", "mse")
AUGMENTATIONS: dict[str, tuple[tuple[str, object], ...]] = {
    "flip_horizontal": (),
    "flip_vertical": (),
    "random_crop": (("pad", 2),),
}
MONITOR_MODES = ("auto", "min", "max")


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer and its hyperparameters (all present, defaults filled in)."""

    name: str = "adam"
    args: dict[str, float | bool] = field(default_factory=lambda: dict(OPTIMIZERS["adam"]))
    loc: SourceLoc | None = None


@dataclass(frozen=True)
class ScheduleSpec:
    """A learning-rate schedule (lr multiplier as a function of epoch and step)."""

    name: str = "constant"
    args: dict[str, float] = field(default_factory=dict)
    loc: SourceLoc | None = None


@dataclass(frozen=True)
class StepSpec:
    """One `step NAME { loss = L; params = [..]; optimizer = ... }` of multi-step training.

    `params` holds the dotted parameter names the step updates (layer instance names already
    expanded to all their trainable parameters)."""

    name: str
    loss: str
    params: tuple[str, ...]
    optimizer: OptimizerSpec
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    clip_norm: float | None = None
    loc: SourceLoc | None = None


@dataclass(frozen=True)
class EarlyStopSpec:
    monitor: str = "val_loss"
    patience: int = 3
    min_delta: float = 0.0
    mode: str = "auto"  # auto: max for accuracy-like metrics, min for losses and errors
    loc: SourceLoc | None = None


@dataclass(frozen=True)
class AugmentSpec:
    name: str
    args: dict[str, int | float] = field(default_factory=dict)
    loc: SourceLoc | None = None


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a train block, resolved. `steps` is empty for single-loss training."""

    model: str
    data: str | None = None  # a bundled data set name or a path (already made absolute)
    validation: float | str = 0.0  # a fraction in [0, 1) or a path
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    batch: int = 64
    epochs: int = 10
    seed: int = 0
    l1: float = 0.0
    l2: float = 0.0
    clip_norm: float | None = None
    metrics: tuple[str, ...] = ()
    early_stop: EarlyStopSpec | None = None
    freeze: tuple[str, ...] = ()  # dotted parameter names kept fixed (instances expanded)
    init_from: str | None = None
    augment: tuple[AugmentSpec, ...] = ()
    checkpoint: str | None = None
    steps: tuple[StepSpec, ...] = ()
    locs: dict[str, SourceLoc] = field(default_factory=dict)  # setting name -> where it was set
