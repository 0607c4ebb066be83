"""Runtime, the model's tensors by name: `model.params`, `model.state`, `model.optimizer_state`.

Takes: a model's `Store` and a kind ("param", "state", "opt"). Gives: `TensorMap`, a Mapping from
dotted name to the model's own array (assigning copies into it, so the array and every view of it
stay the same), and `UnknownTensor`, what a missing name raises (a netc UsageError that is also
the KeyError a Mapping raises).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from netc.compiler.errors import DataError, UsageError, suggestion

from .engine import Store

KIND_NAMES = {"param": "parameter", "state": "state tensor", "opt": "optimizer tensor"}


class UnknownTensor(UsageError, KeyError):
    """`model.params[name]` for a name the model lacks: a netc error, and the KeyError a
    Mapping raises (so `in`, `.get` and `except KeyError` work as for a dict)."""

    def __str__(self) -> str:
        return self.message  # not KeyError's quoted repr


class TensorMap(Mapping):
    """Dotted name -> the model's own array. Assigning copies into it (the array stays the same)."""

    def __init__(self, store: Store, kind: str):
        self._store, self._kind = store, kind

    def _names(self) -> list[str]:
        return self._store.names(self._kind)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names():
            raise UnknownTensor(f"no {KIND_NAMES[self._kind]} named {name!r}"
                                f"{suggestion(str(name), self._names())} (it has: "
                                f"{', '.join(self._names()[:12]) or 'none'})")
        return self._store.arrays[name]

    def __setitem__(self, name: str, value: object) -> None:
        arr = self[name]
        try:
            value = np.asarray(value)
        except (ValueError, TypeError) as e:  # a ragged list
            raise DataError(f"'{name}' cannot be set from this value ({e})") from None
        if value.dtype.kind not in "biuf":
            raise DataError(f"'{name}' holds numbers; got an array of {value.dtype}")
        if value.shape != arr.shape:
            raise DataError(f"'{name}' has shape {list(arr.shape)}, got {list(value.shape)}")
        arr[...] = value

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{n!r}: {self[n].dtype}{list(self[n].shape)}" for n in self) + "}"
