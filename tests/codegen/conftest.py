"""Shared fixtures for the codegen tests (helpers live in each module: test files never import
conftest, whose module name other test folders share)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
