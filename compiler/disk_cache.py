"""Support, the on-disk cache: where netc keeps what it derived once (parser tables, object code).

Takes: bytes to keep under a path inside `cache_dir()`. Gives: `cache_dir()`, `write_entry(path,
data)` and `read_entry(path) -> bytes | None`, used by the parser tables (`lalr.py`) and the JIT's
object cache (`runtime/jit_cache.py`) alike.

Invariants: `NETC_CACHE_DIR` overrides `$XDG_CACHE_HOME/netc` (default `~/.cache/netc`); an entry
is written to a temporary file beside its path and renamed into place, so concurrent writers
never leave a torn entry (the last rename wins, whole); each entry carries a magic line and a
SHA-256 of its payload, so a truncated or corrupted entry reads as missing (the caller rebuilds
and rewrites it), never as an error; an unwritable or full cache directory only costs the cache.
"""

from __future__ import annotations

import hashlib
import os
import tempfile

_MAGIC = b"netc-obj-2\n"
_HEAD = len(_MAGIC) + 32


def cache_dir() -> str:
    env = os.environ.get("NETC_CACHE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "netc")


def write_entry(path: str, data: bytes) -> None:
    """Store `data` at `path` atomically with its checksum; errors of the file system are
    swallowed (the cache is an optimisation)."""
    try:
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_MAGIC + hashlib.sha256(data).digest() + data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass  # a read-only or full disk only costs the cache


def read_entry(path: str) -> bytes | None:
    """The payload stored at `path`, or None when it is missing, unreadable or corrupt."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    if not raw.startswith(_MAGIC) or len(raw) < _HEAD:
        return None
    digest, data = raw[len(_MAGIC):_HEAD], raw[_HEAD:]
    return data if hashlib.sha256(data).digest() == digest else None
