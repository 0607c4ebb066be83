"""Validation of user data at the API boundary, and the simple metrics evaluate() reports.

Takes: arrays a user passes by keyword, and the graph's input/target leaves.
Gives: `check_feeds` -> arrays converted to the declared dtypes (C-contiguous), or a `DataError`
naming the input and its expected type; `batch_of` (the fed batch size); `metrics`.

Invariants: nothing unvalidated reaches an engine: every name is known, every required input is
present, shapes match exactly, integer data fits i32, and floating data is finite.
"""

from __future__ import annotations

import numpy as np

from netc.compiler.errors import DataError, suggestion
from netc.compiler.ir import Graph, Node, np_dtype


def _describe(node: Node) -> str:
    return f"{node.attrs['name']}: {node.type}"


def batch_of(g: Graph, feeds: dict[str, object], batch: int) -> int | None:
    """The leading size of the first fed input declared with `batch` rows (None: not found)."""
    for name, node in g.inputs.items():
        if node.type.rank and node.type.shape[0] == batch and name in feeds:
            shape = np.shape(feeds[name])
            if shape:
                return int(shape[0])
    return None


def check_feeds(g: Graph, feeds: dict[str, object], *, with_targets: bool) -> dict[str, np.ndarray]:
    """Validate and convert `feeds` for `g`. Without targets (predict), targets are ignored."""
    wanted = {n: x for n, x in g.inputs.items()
              if with_targets or x.attrs["role"] == "input"}
    declared = ", ".join(_describe(x) for x in wanted.values())
    for name in feeds:
        if name not in g.inputs:
            raise DataError(f"unknown input '{name}'{suggestion(name, g.inputs)} (the model "
                            f"takes {declared})")
    out = {}
    for name, node in wanted.items():
        what = "target" if node.attrs["role"] == "target" else "input"
        if name not in feeds:
            raise DataError(f"missing {what} '{name}' ({node.type})", node.loc)
        out[name] = _convert(what, name, node, feeds[name])
    return out


def _convert(what: str, name: str, node: Node, value: object) -> np.ndarray:
    t = node.type
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as e:
        raise DataError(f"{what} '{name}' should be {t}, got an unreadable value ({e})") from None
    kind = arr.dtype.kind
    ok = {"f32": "fiu", "f64": "fiu", "i32": "iu", "bool": "b"}[t.dtype]
    if kind not in ok:
        raise DataError(f"{what} '{name}' should be {t}, got an array of {arr.dtype}", node.loc)
    if arr.shape != t.shape:
        raise DataError(f"{what} '{name}' should have shape {list(t.shape)} ({t}), got "
                        f"{list(arr.shape)}", node.loc)
    if t.dtype == "i32" and arr.size:
        info = np.iinfo(np.int32)
        if arr.min() < info.min or arr.max() > info.max:
            raise DataError(f"{what} '{name}' ({t}) holds values outside the i32 range",
                            node.loc)
    converted = np.ascontiguousarray(arr, dtype=np_dtype(t.dtype))
    if kind == "f" and not np.isfinite(arr).all():
        raise DataError(f"{what} '{name}' ({t}) contains NaN or infinity", node.loc)
    return converted


COMPUTABLE = ("accuracy", "mae", "mse")


def metrics(g: Graph, wanted: tuple[str, ...], outputs: dict[str, np.ndarray],
            feeds: dict[str, np.ndarray]) -> dict[str, float]:
    """The requested metrics that outputs and targets allow: accuracy (an output [..., C] against
    integer targets [...]), mae and mse (an output of a float target's shape)."""
    out: dict[str, float] = {}
    targets = [n for n, x in g.inputs.items() if x.attrs["role"] == "target"]
    for metric in wanted:
        if metric not in COMPUTABLE:
            continue
        for t in targets:
            y = feeds[t]
            match = [v for v in outputs.values()
                     if (metric == "accuracy" and y.dtype.kind == "i" and v.shape[:-1] == y.shape)
                     or (metric != "accuracy" and y.dtype.kind == "f" and v.shape == y.shape)]
            if not match:
                continue
            v = match[0]
            if metric == "accuracy":
                out[metric] = float(np.mean(np.argmax(v, axis=-1) == y))
            elif metric == "mae":
                out[metric] = float(np.mean(np.abs(v - y)))
            else:
                out[metric] = float(np.mean((v - y) ** 2))
            break
    return out
