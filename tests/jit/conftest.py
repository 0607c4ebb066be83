"""Shared setup of the JIT tests: the op cases of tests/ops importable, and a private compile
cache per test session (tests never read or write the user's cache)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "ops"))


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    old = os.environ.get("NETC_CACHE_DIR")
    os.environ["NETC_CACHE_DIR"] = str(tmp_path_factory.mktemp("netc-cache"))
    yield
    if old is None:
        os.environ.pop("NETC_CACHE_DIR", None)
    else:
        os.environ["NETC_CACHE_DIR"] = old
