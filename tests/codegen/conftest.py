"""Shared helpers for the codegen tests: seeded random float32 data and the runnable targets."""

from __future__ import annotations

import numpy as np
import pytest

from netc.compiler.codegen.target import TARGET_NAMES, get_target


def runnable_targets() -> list[str]:
    return [t for t in TARGET_NAMES if get_target(t).runnable]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)
