"""Benchmark cases of train_step.py: one definition of each network that every framework builds.

Gives: `CASES` (row name -> `Case`: the netc file in benchmarks/nets, the shapes, the optimizer and
its hyper-parameters, the steps per timed block) and `case_data(case, steps)`, the arrays every
framework trains on (the same seed, so netc, PyTorch and JAX see identical numbers).

A case with `loop=True` (the tiny MLP) measures the whole training loop rather than one call: the
data set is resident and each step gathers its batch by index (netc: the native `train_steps`;
PyTorch: `index_select`; JAX: inside the jitted function).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

NETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nets")


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    net: str                    # file name in benchmarks/nets
    batch: int
    row: tuple[int, ...]        # shape of one input row
    classes: int
    opt: str                    # "sgd" | "adam"
    lr: float
    steps: int                  # steps per timed block (default)
    momentum: float = 0.0       # sgd only
    loop: bool = False          # gather batches from a resident data set (see the docstring)
    dims: tuple[int, ...] = ()  # MLP widths, input to classes
    extra: dict = field(default_factory=dict)

    @property
    def path(self) -> str:
        return os.path.join(NETS, self.net)


CASES = {c.name: c for c in [
    Case("mlp_sgd", "MLP 784-512-256-10 b128 SGD", "mlp_sgd.net", 128, (784,), 10, "sgd", 0.01,
         steps=20, dims=(784, 512, 256, 10)),
    Case("mlp_adam", "MLP 784-512-256-10 b128 Adam", "mlp_adam.net", 128, (784,), 10, "adam",
         1e-3, steps=20, dims=(784, 512, 256, 10)),
    Case("lenet", "LeNet-5 28x28 b64 SGD+mom", "lenet5.net", 64, (1, 28, 28), 10, "sgd", 0.01,
         steps=20, momentum=0.9),
    Case("lstm", "LSTM T32 F32 H128 b32 Adam", "lstm.net", 32, (32, 32), 10, "adam", 1e-3,
         steps=10, extra={"hidden": 128}),
    Case("transformer", "Transformer blk b16 s64 d128 h4", "transformer_block.net", 16,
         (64, 128), 10, "adam", 1e-3, steps=10, extra={"heads": 4, "ff": 512}),
    Case("tiny_mlp", "tiny MLP 64-32-10 b32 SGD (loop)", "tiny_mlp.net", 32, (64,), 10, "sgd",
         0.01, steps=500, loop=True, dims=(64, 32, 10)),
]}

LOOP_ROWS = 4096  # rows of the resident data set of a loop case


def case_data(case: Case, steps: int) -> dict[str, np.ndarray]:
    """x and y: one batch, or for a loop case the resident data set; for a loop case also
    `index`, the row indices of one block of `steps` steps (int64, steps * batch)."""
    rng = np.random.default_rng(0)
    rows = LOOP_ROWS if case.loop else case.batch
    out = {"x": rng.uniform(-1, 1, (rows, *case.row)).astype(np.float32),
           "y": rng.integers(0, case.classes, rows).astype(np.int32)}
    if case.loop:
        out["index"] = rng.integers(0, rows, steps * case.batch).astype(np.int64)
    return out
