"""Data: load arrays from files or bundled sets and bind them to a model's inputs and targets.

Takes: a data spec — a bundled name ("digits", "sequences", "mixture", "regression", "spirals") or
a path to an `.npz`, a `.csv` with a header, an IDX file (MNIST format, optionally gzipped) or a
folder holding an IDX images file and an IDX labels file — and the model's inputs/targets
(name -> (per-model shape with the batch first, dtype)). Gives: a dict of arrays by input name,
every array with the same number of rows, the declared dtype and per-sample shape.

Binding (recorded in grammar/README.md): `.npz` arrays bind by name. A `.csv` column named like an
input binds to it; columns `NAME_0, NAME_1, …` (or `NAME.0`, `NAME[0]`) stack into it; if one input
is left, it takes every remaining column in order. An IDX folder gives the first input the images
and the first target the labels. Per-sample shapes may be reshaped when the sizes agree (digits'
64 pixels feed an `x: f32[b, 1, 8, 8]`). Every failure — missing, truncated or corrupt file, a
missing array, wrong shape or dtype, NaN or inf — is a DataError naming the file and the array.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import re
import zlib
from importlib import resources

import numpy as np

from .compiler.errors import DataError
from .compiler.parse import source_file_problem
from .saved import read_npz

_DTYPES = {"f32": np.float32, "f64": np.float64, "i32": np.int32, "bool": np.bool_}


# --------------------------------------------------------------------------- bundled sets

def _digits(n: int | None, seed: int) -> dict[str, np.ndarray]:
    with resources.files("netc").joinpath("datasets", "digits.npz").open("rb") as f:
        z = np.load(f, allow_pickle=False)
        return {"x": z["x"], "y": z["y"]}


def _sequences(n: int | None, seed: int, t: int = 16, f: int = 4) -> dict[str, np.ndarray]:
    """Noisy sequences; the class is the sign of the sum of the first feature over time."""
    rng = np.random.default_rng(seed + 101)
    n = n or 2048
    x = rng.normal(0.0, 1.0, (n, t, f)).astype(np.float32)
    y = (x[:, :, 0].sum(axis=1) > 0).astype(np.int32)
    return {"x": x, "y": y}


def _mixture(n: int | None, seed: int) -> dict[str, np.ndarray]:
    """A ring of 8 Gaussians in 2-D (the GAN example's target distribution)."""
    rng = np.random.default_rng(seed + 202)
    n = n or 4096
    k = rng.integers(0, 8, n)
    angle = 2 * np.pi * k / 8
    centers = np.stack([np.cos(angle), np.sin(angle)], axis=1) * 2.0
    x = (centers + rng.normal(0, 0.1, (n, 2))).astype(np.float32)
    return {"x": x, "y": k.astype(np.int32)}


def _regression(n: int | None, seed: int) -> dict[str, np.ndarray]:
    """y = a smooth nonlinear function of 8 features plus noise."""
    rng = np.random.default_rng(seed + 303)
    n = n or 2048
    x = rng.normal(0, 1, (n, 8)).astype(np.float32)
    w = np.linspace(-1, 1, 8)
    y = np.sin(x @ w) + 0.5 * x[:, 0] * x[:, 1] + 0.05 * rng.normal(0, 1, n)
    return {"x": x, "y": y.astype(np.float32)[:, None]}


def _spirals(n: int | None, seed: int) -> dict[str, np.ndarray]:
    """Two interleaved spirals, labels 0 and 1."""
    rng = np.random.default_rng(seed + 404)
    n = (n or 2000) // 2
    t = np.sqrt(rng.uniform(0, 1, n)) * 3 * np.pi
    a = np.stack([t * np.cos(t), t * np.sin(t)], 1) / (3 * np.pi)
    x = np.concatenate([a, -a]) + rng.normal(0, 0.02, (2 * n, 2))
    y = np.concatenate([np.zeros(n), np.ones(n)]).astype(np.int32)
    return {"x": x.astype(np.float32), "y": y}


BUNDLED = {"digits": _digits, "sequences": _sequences, "mixture": _mixture,
           "regression": _regression, "spirals": _spirals}


# --------------------------------------------------------------------------- files

def _load_npz(path: str) -> dict[str, np.ndarray]:
    return read_npz(path)


def _load_csv(path: str) -> dict[str, np.ndarray]:
    try:
        # utf-8-sig: a byte-order mark (Excel writes one) is no part of the first column's name
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            try:
                rows = list(reader)
            except csv.Error as e:  # a field over csv's size limit, a NUL byte, ...
                raise DataError(f"{path}:{reader.line_num}: {e}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if not rows or not any(h.strip() for h in rows[0]):
        raise DataError(f"{path}: empty .csv file (a header row naming the columns is needed)")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header):
        raise DataError(f"{path}: duplicate column names in the header")
    body = [r for r in rows[1:] if any(c.strip() for c in r)]
    if not body:
        raise DataError(f"{path}: the .csv file has a header but no rows")
    data = np.empty((len(body), len(header)), dtype=np.float64)
    for i, r in enumerate(body):
        if len(r) != len(header):
            raise DataError(f"{path}:{i + 2}: {len(r)} values, but the header names "
                            f"{len(header)} columns")
        try:
            data[i] = [float(c) for c in r]
        except ValueError:
            bad = next(c for c in r if not _is_float(c))
            raise DataError(f"{path}:{i + 2}: '{bad}' is not a number") from None
    return {"__columns__": header, "__data__": data}  # bound to inputs by bind_arrays


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def load_idx(path: str) -> np.ndarray:
    """One IDX file (the MNIST format), gzipped or not."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # zlib.error: a corrupt gzip stream
        raise DataError(f"{path}: cannot read the IDX file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    need = math.prod(dims) * dtype.itemsize  # Python ints: a forged header must not wrap
    payload = raw[4 + 4 * ndim:]
    if len(payload) < need:
        raise DataError(f"{path}: truncated IDX file: {len(payload)} bytes of data, "
                        f"{need} expected for shape {dims}")
    return np.frombuffer(payload[:need], dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _load_idx_folder(path: str) -> dict[str, np.ndarray]:
    try:
        files = sorted(os.listdir(path))
    except OSError as e:  # an unreadable folder
        raise DataError(f"{path}: cannot list the folder ({e.strerror or e})") from None
    images = [f for f in files if re.search(r"images?.*idx|idx3", f)]
    labels = [f for f in files if re.search(r"labels?.*idx|idx1", f)]
    if len(images) != 1 or len(labels) != 1:
        raise DataError(f"{path}: an IDX folder holds one images file and one labels file "
                        f"(found {len(images)} images and {len(labels)} labels files)")
    return {"__images__": load_idx(os.path.join(path, images[0])),
            "__labels__": load_idx(os.path.join(path, labels[0]))}


def load_arrays(spec: str, seed: int = 0) -> tuple[dict[str, np.ndarray], str]:
    """Raw arrays from a bundled name or a path, and a label naming the source for messages."""
    if spec in BUNDLED:
        return BUNDLED[spec](None, seed), f"data set '{spec}'"
    if not os.path.exists(spec):
        near = [b for b in BUNDLED if b.startswith(spec[:3])] if "/" not in spec else []
        hint = f" (bundled data sets: {', '.join(BUNDLED)})" if not near else \
            f" — did you mean the bundled data set '{near[0]}'?"
        raise DataError(f"data file '{spec}' does not exist{hint}")
    if os.path.isdir(spec):
        return _load_idx_folder(spec), spec
    problem = source_file_problem(spec)  # a FIFO or a device would block or never end
    if problem is not None:
        raise DataError(f"cannot read data file '{spec}': it {problem}")
    low = spec.lower()
    if low.endswith(".npz"):
        return _load_npz(spec), spec
    if low.endswith(".csv"):
        return _load_csv(spec), spec
    if "idx" in low or low.endswith((".ubyte", ".ubyte.gz")):
        return {"__idx__": load_idx(spec)}, spec
    raise DataError(f"{spec}: unknown data format (use .npz, .csv, an IDX file or a folder of "
                    "IDX files)")


# --------------------------------------------------------------------------- binding

def _csv_columns(header: list[str], name: str) -> int | list[int] | None:
    """The column named `name`, or the columns `name_0, name_1, ...` in order, or None."""
    if name in header:
        return header.index(name)
    pat = re.compile(rf"^{re.escape(name)}(?:_|\.|\[)(\d+)\]?$")
    cols = sorted(((int(m.group(1)), j) for j, h in enumerate(header)
                   for m in [pat.match(h)] if m))
    return [j for _, j in cols] or None


def _csv_bind(raw: dict, wanted: dict, source: str,
              ignore: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    header, data = raw["__columns__"], raw["__data__"]
    used: set[int] = set()
    out: dict[str, np.ndarray] = {}
    left = []
    for name in ignore:  # e.g. the targets when predicting: their columns are no features
        cols = _csv_columns(header, name)
        used.update([cols] if isinstance(cols, int) else cols or [])
    for name in wanted:
        cols = _csv_columns(header, name)
        if cols is None:
            left.append(name)
            continue
        out[name] = data[:, cols]
        used.update([cols] if isinstance(cols, int) else cols)
    rest = [j for j in range(len(header)) if j not in used]
    if len(left) == 1 and rest:
        out[left[0]] = data[:, rest]
    elif left:
        headless = all(_is_float(h) for h in header)
        raise DataError(f"{source}: no columns for {', '.join(repr(n) for n in left)} "
                        f"(columns: {', '.join(header[:12])}{'…' if len(header) > 12 else ''})",
                        hint="the first row holds numbers: a .csv needs a header row naming "
                        "its columns (x_0, x_1, ..., y)" if headless else None)
    return out


def bind_arrays(raw: dict[str, np.ndarray], wanted: dict[str, tuple[tuple[int, ...], str]],
                source: str, *, required: set[str] | None = None,
                ignore: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Match raw arrays to `wanted` (name -> (declared shape with the batch first, dtype)).
    Arrays named in `ignore` are left out (in a .csv, their columns are not features)."""
    required = set(wanted) if required is None else required
    if "__columns__" in raw:
        raw = _csv_bind(raw, wanted, source, ignore)
    elif "__images__" in raw or "__idx__" in raw:
        names = list(wanted)
        bound = {names[0]: raw.get("__images__", raw.get("__idx__"))}
        if "__labels__" in raw and len(names) > 1:
            bound[names[1]] = raw["__labels__"]
        raw = bound
    out: dict[str, np.ndarray] = {}
    rows = None
    for name, (shape, dtype) in wanted.items():
        if name not in raw:
            if name in required:
                have = ", ".join(k for k in raw if not k.startswith("__")) or "none"
                raise DataError(f"{source}: no array named '{name}' (it has: {have})")
            continue
        out[name] = conform(raw[name], shape, dtype, f"{source}: array '{name}'")
        if rows is None:
            rows = (name, out[name].shape[0])
        elif out[name].shape[0] != rows[1]:
            raise DataError(f"{source}: array '{name}' has {out[name].shape[0]} rows but "
                            f"'{rows[0]}' has {rows[1]}")
    return out


def conform(a: np.ndarray, shape: tuple[int, ...], dtype: str, what: str) -> np.ndarray:
    """Check and convert one array: per-sample shape (reshape if sizes agree), dtype, finiteness."""
    try:
        a = np.asarray(a)
    except (ValueError, TypeError) as e:  # a ragged list, say
        raise DataError(f"{what} cannot be read as an array ({e})") from None
    if a.dtype == object or a.dtype.kind in "USV":
        raise DataError(f"{what} holds {a.dtype} values; a numeric array is needed")
    sample = tuple(shape[1:])
    if a.ndim == 0:
        raise DataError(f"{what} is a scalar; expected rows of shape {list(sample)}")
    if tuple(a.shape[1:]) != sample:
        if int(np.prod(a.shape[1:], dtype=np.int64)) == int(np.prod(sample, dtype=np.int64)):
            a = a.reshape((a.shape[0],) + sample)
        else:
            raise DataError(f"{what} has rows of shape {list(a.shape[1:])}, but the model "
                            f"expects {list(sample)} (declared {dtype}{list(shape)})")
    target = _DTYPES[dtype]
    if np.issubdtype(target, np.integer):
        if a.dtype.kind == "f":
            if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
                raise DataError(f"{what} must hold integers (declared {dtype}); it has "
                                "fractional, NaN or infinite values")
        elif a.dtype.kind not in "iub":
            raise DataError(f"{what} has dtype {a.dtype}; expected integers ({dtype})")
        if a.size and (a.min() < -2**31 or a.max() >= 2**31):
            raise DataError(f"{what} has values outside the i32 range")
    elif a.dtype.kind in "fc" and a.size and not np.all(np.isfinite(a)):
        bad = int(np.flatnonzero(~np.isfinite(a.reshape(-1)))[0])
        raise DataError(f"{what} contains NaN or infinite values (first at flat index {bad})")
    elif a.dtype.kind not in "fiub":
        raise DataError(f"{what} has dtype {a.dtype}; expected numbers ({dtype})")
    with np.errstate(over="ignore"):  # 1e39 in a float64 file is inf in f32: said below
        out = np.ascontiguousarray(a, dtype=target)
    if out.dtype.kind == "f" and a.dtype.kind in "fc" and out.size and \
            not np.all(np.isfinite(out)):
        bad = int(np.flatnonzero(~np.isfinite(out.reshape(-1)))[0])
        raise DataError(f"{what} has values beyond the range of {dtype} (first at flat index "
                        f"{bad}: {a.reshape(-1)[bad]:g})")
    return out


def split_validation(arrays: dict[str, np.ndarray], fraction: float, seed: int,
                     stratify: np.ndarray | None = None):
    """Hold out `fraction` of the rows (shuffled with `seed`; stratified by class when given)."""
    n = len(next(iter(arrays.values())))
    k = int(round(n * fraction))
    if not 0 < k < n:
        raise DataError(f"validation = {fraction:g} of {n} row(s) leaves "
                        f"{'no rows to validate on' if k == 0 else 'no rows to train on'}; "
                        "give more data, a validation file, or validation = 0")
    rng = np.random.default_rng(seed + 7919)
    if stratify is not None:
        groups = [np.flatnonzero(stratify == c) for c in np.unique(stratify)]
        # each class gives its share of the k rows (largest remainders get the rounding), so
        # small classes never round the held-out set away
        quota = np.array([len(idx) * fraction for idx in groups])
        counts = np.floor(quota).astype(int)
        extra = np.argsort(-(quota - counts), kind="stable")[: k - counts.sum()]
        counts[extra] += 1
        val_idx = []
        for idx, m in zip(groups, counts, strict=True):
            rng.shuffle(idx)
            val_idx.append(idx[:m])
        val = np.sort(np.concatenate(val_idx))
    else:
        val = np.sort(rng.permutation(n)[:k])
    mask = np.ones(n, bool)
    mask[val] = False
    return ({k: v[mask] for k, v in arrays.items()}, {k: v[val] for k, v in arrays.items()})
