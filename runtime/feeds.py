"""Validation of user data at the API boundary, and the simple metrics evaluate() reports.

Takes: arrays a user passes by keyword, and the graph's input/target leaves.
Gives: `check_feeds` -> arrays converted to the declared dtypes (C-contiguous), or a `DataError`
naming the input and its expected type; `batch_of` (the fed batch size); `metrics`.

Invariants: nothing unvalidated reaches an engine: every name is known, every required input is
present, shapes match exactly, integer data fits i32, floating data is finite, and integer
inputs used as indices (an embedding's rows: `gather`; class labels: `one_hot`, which
`cross_entropy` uses) lie in the range they index (`check_index_ranges`), so no backend ever
reads outside a table or silently scores a label the model has no class for.
"""

from __future__ import annotations

import weakref

import numpy as np

from netc.compiler.codegen.step import NONFINITE
from netc.compiler.errors import DataError, suggestion
from netc.compiler.ir import Graph, Node, np_dtype


def _describe(node: Node) -> str:
    return f"{node.attrs['name']}: {node.type}"


def batch_of(g: Graph, feeds: dict[str, object], batch: int) -> int | None:
    """The leading size of the first fed input declared with `batch` rows (None: not found)."""
    for name, node in g.inputs.items():
        if node.type.rank and node.type.shape[0] == batch and name in feeds:
            try:
                shape = np.shape(feeds[name])
            except (ValueError, TypeError):  # unreadable (a ragged list): check_feeds says so
                return None
            # a feed of another rank is no batch of rows (x[0] for x): check_feeds says so
            # against the declared shape, rather than against a graph specialized to its
            # first size ("should have shape [3, 3]" for one sample of 3 features)
            if len(shape) == node.type.rank:
                return int(shape[0])
            return None
    return None


def check_feeds(g: Graph, feeds: dict[str, object], *, with_targets: bool,
                values: bool = True) -> dict[str, np.ndarray]:
    """Validate and convert `feeds` for `g`. Without targets (predict), targets are ignored.
    `values=False`: an array given in its declared dtype is not checked for NaN, infinity or
    an index out of range: `engine.run(..., check_values=True)` does it (`check_values_of`,
    or the JIT's `check_summaries` as it copies the feeds in)."""
    wanted = _wanted(g, with_targets)
    check_names(g, feeds, wanted)
    out = {}
    limits = index_ranges(g)
    for name, node in wanted.items():
        if name not in feeds:
            raise DataError(f"missing {_role(node)} '{name}' ({node.type})", node.loc)
        out[name] = _convert(_role(node), name, node, feeds[name], limits.get(name), values)
    return out


def _role(node: Node) -> str:
    return "target" if node.attrs["role"] == "target" else "input"


def check_values_of(g: Graph, feeds: dict[str, np.ndarray]) -> None:
    """The value checks `check_feeds(values=False)` left out, in NumPy: every float feed is
    finite, every index feed lies in the range it indexes. The same DataErrors."""
    limits = index_ranges(g)
    for name, a in feeds.items():
        _check_values(name, g.inputs[name], a, limits.get(name))


def _check_values(name: str, node: Node, a: np.ndarray, limit: tuple[int, str] | None) -> None:
    """A DataError when `a` (converted to its declared dtype) holds a NaN or an infinity, or an
    index outside [0, n) for `limit` (n, what)."""
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise _nonfinite_error(_role(node), name, node, "")
    if (limit is not None and a.dtype == np.int32 and a.size
            and int(a.view(np.uint32).max()) >= limit[0]):  # negatives are huge unsigned
        raise _index_error(name, node, a, *limit)


def check_summaries(g: Graph, fed: list[tuple[str, np.ndarray, int]]) -> None:
    """`check_values_of` from (name, array, summary) of each fed input, the summary being what
    the JIT's feed function reports as it copies the array in (codegen/step.py `_emit_feed`):
    NONFINITE for an f32 array with a NaN or an infinity, an i32 array's largest value as
    unsigned."""
    limits = index_ranges(g)
    for name, a, summary in fed:
        node = g.inputs[name]
        if node.type.dtype == "f32" and summary == NONFINITE:
            raise _nonfinite_error(_role(node), name, node, "")
        limit = limits.get(name)
        if node.type.dtype == "i32" and limit is not None and summary >= limit[0]:
            raise _index_error(name, node, a, *limit)


def check_names(g: Graph, names, wanted: dict[str, Node] | None = None,
                call: str = "") -> None:
    """A DataError for the first name that is no input or target of `g` (a misspelt keyword
    argument must not be ignored). `call` ("fit(): ") prefixes the message."""
    for name in names:
        if name not in g.inputs:
            declared = ", ".join(_describe(x) for x in (wanted or g.inputs).values())
            raise DataError(f"{call}unknown input '{name}'{suggestion(name, g.inputs)} (the "
                            f"model takes {declared})")


_WANTED: weakref.WeakKeyDictionary[Graph, dict[bool, dict[str, Node]]] = \
    weakref.WeakKeyDictionary()


def _wanted(g: Graph, with_targets: bool) -> dict[str, Node]:
    """The inputs a call must feed (targets too when `with_targets`), computed once per graph."""
    per = _WANTED.setdefault(g, {})
    hit = per.get(with_targets)
    if hit is None:
        hit = per[with_targets] = {n: x for n, x in g.inputs.items()
                                   if with_targets or x.attrs["role"] == "input"}
    return hit


# ops that pass an integer input's values on unchanged (the index may be reshaped first)
_PASS_THROUGH = ("reshape", "stop_gradient", "transpose", "broadcast_to")
_RANGES: weakref.WeakKeyDictionary[Graph, dict[str, tuple[int, str]]] = \
    weakref.WeakKeyDictionary()


def index_ranges(g: Graph) -> dict[str, tuple[int, str]]:
    """Input name -> (n, what) for every i32 input whose values index n rows or classes."""
    hit = _RANGES.get(g)
    if hit is not None:
        return hit
    out: dict[str, tuple[int, str]] = {}
    for name, leaf in g.inputs.items():
        if leaf.type.dtype != "i32":
            continue
        stack, limits = [leaf], []
        while stack:
            v = stack.pop()
            for u in g.users(v):
                if u.op in _PASS_THROUGH and u.inputs[0] is v:
                    stack.append(u)
                elif u.op == "gather" and u.inputs[1] is v:
                    limits.append((u.inputs[0].type.shape[0], "rows of the table it looks up"))
                elif u.op == "one_hot":
                    limits.append((u.attrs["n"], "classes"))
        if limits:
            out[name] = min(limits)
    _RANGES[g] = out
    return out


def check_index_ranges(g: Graph, arrays: dict[str, np.ndarray]) -> None:
    """A DataError naming the input, the bad value and where it is, for an index out of range."""
    for name, (n, what) in index_ranges(g).items():
        a = arrays.get(name)
        if a is not None and np.size(a) and (a.min() < 0 or a.max() >= n):
            raise _index_error(name, g.inputs[name], a, n, what)


def _index_error(name: str, node: Node, a: np.ndarray, n: int, what: str) -> DataError:
    at = np.argwhere((a < 0) | (a >= n))[0]
    role = "target" if node.attrs["role"] == "target" else "input"
    return DataError(f"{role} '{name}' holds {int(a[tuple(at)])} at index {list(map(int, at))}, "
                     f"but its values index {n} {what}: each must lie in [0, {n})", node.loc)


_I32_MIN, _I32_MAX = int(np.iinfo(np.int32).min), int(np.iinfo(np.int32).max)


def _convert(what: str, name: str, node: Node, value: object,
             limit: tuple[int, str] | None = None, values: bool = True) -> np.ndarray:
    """`value` checked and converted; `limit` (n, what): an index input's values lie in [0, n).
    `values=False`: the values of an array already in the declared dtype are not checked."""
    t = node.type
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as e:
        raise DataError(f"{what} '{name}' should be {t}, got an unreadable value ({e})") from None
    kind = arr.dtype.kind
    # bools are numbers 0 and 1, as in data files (data.conform)
    ok = {"f32": "fiub", "f64": "fiub", "i32": "iub", "bool": "b"}[t.dtype]
    if kind not in ok:
        raise DataError(f"{what} '{name}' should be {t}, got an array of {arr.dtype}", node.loc)
    if arr.shape != t.shape:
        raise DataError(f"{what} '{name}' should have shape {list(t.shape)} ({t}), got "
                        f"{list(arr.shape)}", node.loc)
    if t.dtype == "i32" and arr.size and arr.dtype != np.int32:  # int32: in range by type
        lo, hi = arr.min(), arr.max()
        if lo < _I32_MIN or hi > _I32_MAX:
            raise DataError(f"{what} '{name}' ({t}) holds values outside the i32 range",
                            node.loc)
        if limit is not None and (lo < 0 or hi >= limit[0]):
            raise _index_error(name, node, arr, *limit)
    dtype = np_dtype(t.dtype)
    if arr.dtype == dtype and arr.flags.c_contiguous:
        converted = arr  # as given (no copy, no error state to set)
    else:
        with np.errstate(over="ignore"):  # a float64 beyond the f32 range becomes inf: below
            converted = np.ascontiguousarray(arr, dtype=dtype)
        if kind == "f" and not np.isfinite(converted).all():
            beyond = "" if not np.isfinite(arr).all() else f" (values beyond the {t.dtype} range)"
            raise _nonfinite_error(what, name, node, beyond)
    if values:
        _check_values(name, node, converted, limit)
    return converted


def _nonfinite_error(what: str, name: str, node: Node, beyond: str) -> DataError:
    return DataError(f"{what} '{name}' ({node.type}) contains NaN or infinity{beyond}", node.loc)


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
