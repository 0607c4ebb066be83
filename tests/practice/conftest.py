"""Fixtures of the practice tests: the digits set and a small digits file."""

import numpy as np
import pytest

from netc.data import load_arrays


@pytest.fixture(scope="session")
def digits():
    raw, _ = load_arrays("digits")
    return raw["x"], raw["y"]


@pytest.fixture(scope="session")
def small_digits(tmp_path_factory, digits):
    """300 digit images as an .npz (x: f32[300, 64], y: i32[300])."""
    path = tmp_path_factory.mktemp("data") / "small.npz"
    np.savez(path, x=digits[0][:300], y=digits[1][:300])
    return str(path)
