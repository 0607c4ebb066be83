"""Data augmentation for training batches: `augment = [flip_horizontal, flip_vertical,
random_crop(pad = 2)]` of the train block, applied by the fit loop to each training batch.

Takes: a batch (dict of arrays by input name), the model's inputs, the resolved `AugmentSpec`s, the
seed and the optimizer step the batch is about to train. Gives: a new dict whose image inputs (rank
4, `[N, C, H, W]`) are augmented; every other array is passed through untouched.

Invariants: everything is vectorized over the batch (no Python loop over samples). The random
draws come from a NumPy generator keyed by (seed, step) alone, so a batch is augmented the same way
on every run with one seed and after a resume (the step is model state, `opt.step`). Each spec
draws, in the order written, one value per sample: flips a coin (p = 0.5), random_crop two integer
offsets in [0, 2·pad]. A crop pads H and W with `pad` zeros on each side and takes the H×W window
at the drawn offsets. Augmentation is for training only: eval, evaluate and predict never call it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .compiler.errors import UsageError

_KEY = 0x61756700  # "aug": separates these draws from every other generator keyed by the seed


def image_inputs(inputs: dict[str, tuple[tuple[int, ...], str]]) -> list[str]:
    """Names of the model's inputs that are float images `[N, C, H, W]`."""
    return [n for n, (shape, dtype) in inputs.items() if len(shape) == 4 and dtype[0] == "f"]


def check(specs: Sequence, inputs: dict[str, tuple[tuple[int, ...], str]]) -> list[str]:
    """The image inputs augmentation applies to; a clear error when the model has none."""
    if not specs:
        return []
    images = image_inputs(inputs)
    if not images:
        shown = ", ".join(f"{n}: {d}{list(s)}" for n, (s, d) in inputs.items())
        raise UsageError(f"augment needs an image input [N, C, H, W]; this model's inputs are "
                         f"{shown}")
    return images


def draws(specs: Sequence, n: int, seed: int, step: int) -> list[np.ndarray]:
    """The per-sample random values of each spec: a bool per sample for a flip, an `[n, 2]`
    array of (row, column) offsets for a crop."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, _KEY, step & 0xFFFFFFFF, step >> 32])
    out = []
    for spec in specs:
        if spec.name in ("flip_horizontal", "flip_vertical"):
            out.append(rng.random(n) < 0.5)
        elif spec.name == "random_crop":
            pad = int(spec.args.get("pad", 2))
            out.append(rng.integers(0, 2 * pad + 1, size=(n, 2)))
        else:
            raise UsageError(f"unknown augmentation '{spec.name}'")
    return out


def apply(x: np.ndarray, specs: Sequence, values: Sequence[np.ndarray]) -> np.ndarray:
    """`x` (`[N, C, H, W]`) with each spec applied with its drawn values."""
    for spec, v in zip(specs, values):
        if spec.name == "flip_horizontal":
            x = np.where(v[:, None, None, None], x[:, :, :, ::-1], x)
        elif spec.name == "flip_vertical":
            x = np.where(v[:, None, None, None], x[:, :, ::-1, :], x)
        else:
            pad = int(spec.args.get("pad", 2))
            h, w = x.shape[2], x.shape[3]
            padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
            windows = sliding_window_view(padded, (h, w), axis=(2, 3))  # [N, C, 2p+1, 2p+1, H, W]
            x = windows[np.arange(len(x)), :, v[:, 0], v[:, 1]]  # -> [N, C, H, W]
    return np.ascontiguousarray(x)


def augment_batch(batch: dict[str, np.ndarray], images: Sequence[str], specs: Sequence,
                  seed: int, step: int) -> dict[str, np.ndarray]:
    """The batch with every image input augmented (the same draws for each image input)."""
    if not specs or not images:
        return batch
    n = len(next(iter(batch.values())))
    values = draws(specs, n, seed, step)
    return {k: apply(v, specs, values) if k in images else v for k, v in batch.items()}
