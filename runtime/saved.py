"""Saved models on disk: `.npz` (the default) and `.safetensors`, written atomically, read safely.

Takes: tensors by name and a JSON-able metadata dict (or a path to read). Gives: the file, or
`(tensors, meta)` back. Writing goes to a temporary file in the same folder, is flushed and fsynced,
then renamed over the target, so a crash never leaves a half-written model where a good one was.
Reading never unpickles (`allow_pickle=False`) and turns every failure — a missing, truncated or
corrupt file, or a file that is not a netc model — into a DataError naming the file.

The safetensors layout follows the published format: an 8-byte little-endian header length, a JSON
header (`{name: {dtype, shape, data_offsets}, "__metadata__": {"netc": <meta JSON>}}`), then the raw
little-endian tensor bytes.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zipfile
import zlib

import numpy as np

from .compiler.errors import DataError, UsageError
from .compiler.parse import source_file_problem

_ST_DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64,
              "BOOL": np.bool_, "U8": np.uint8}
_ST_NAMES = {np.dtype(v).str: k for k, v in _ST_DTYPES.items()}
MAX_HEADER = 100 << 20


def format_of(path: str, fmt: str | None = None) -> str:
    if fmt is not None:
        if fmt not in ("npz", "safetensors"):
            raise UsageError(f"unknown model format {fmt!r} (npz or safetensors)")
        return fmt
    return "safetensors" if str(path).lower().endswith(".safetensors") else "npz"


def check_writable(path: str, reads: dict[str, str | None] | None = None) -> str:
    """`path`, or a DataError saying why it cannot be written (so a long job can refuse an
    output before it starts, not after). `reads` (what -> path) names the files the command
    reads: writing over one of them (a data file, the model) would destroy it."""
    folder = os.path.dirname(os.path.abspath(path))
    for what, src in (reads or {}).items():
        if src and _same_file(path, src):
            raise DataError(f"cannot write '{path}': it is {what} this command reads; name "
                            "another output file (-o)")
    if os.path.isdir(path):
        raise DataError(f"cannot write '{path}': it is a directory (name a file in it)")
    if not os.path.isdir(folder):
        raise DataError(f"cannot write '{path}': the folder '{folder}' does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DataError(f"cannot write '{path}': the folder '{folder}' is not writable")
    return path


def mode_for(path: str) -> int:
    """The permission bits a file written at `path` gets: those of the file it replaces, else
    0666 less the umask (as a plain open() would give)."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        mask = os.umask(0o022)
        os.umask(mask)
        return 0o666 & ~mask


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # either is missing (or not a path): no clash
        return False


def atomic_write(path: str, write) -> None:
    """Call `write(f)` on a temporary file beside `path`, fsync it, then rename it over `path`."""
    folder = os.path.dirname(os.path.abspath(check_writable(path)))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                   dir=folder)
    except OSError as e:
        raise DataError(f"cannot write '{path}': {e.strerror or e}") from None
    try:
        os.fchmod(fd, mode_for(path))  # mkstemp makes it 0600: give what open() would
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):  # a full disk, a quota, a name that became a folder
            raise DataError(f"cannot write '{path}': {e.strerror or e}") from None
        raise


def write(path: str | os.PathLike, tensors: dict[str, np.ndarray], meta: dict,
          fmt: str | None = None) -> None:
    path = os.fspath(path)
    if format_of(path, fmt) == "npz":
        arrays = {f"t:{n}": a for n, a in tensors.items()}
        arrays["meta"] = np.array(json.dumps(meta))
        atomic_write(path, lambda f: np.savez(f, **arrays))
        return
    header: dict = {"__metadata__": {"netc": json.dumps(meta)}}
    offset, blobs = 0, []
    for name, a in tensors.items():
        a = np.asarray(a, order="C")  # (ascontiguousarray would make a scalar 1-D)
        blob = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _ST_NAMES[a.dtype.newbyteorder("<").str
                                           if a.dtype.kind != "b" else np.dtype(np.bool_).str],
                        "shape": list(a.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)

    def emit(f):
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for blob in blobs:
            f.write(blob)
    atomic_write(path, emit)


def read(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """The tensors and metadata of a saved netc model."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"'{path}' does not exist")
    if os.path.isdir(path):
        raise DataError(f"'{path}' is a directory, not a saved model")
    problem = source_file_problem(path)  # a FIFO or a device would block or never end
    if problem is not None:
        raise DataError(f"cannot read '{path}': it {problem}")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise DataError(f"cannot read '{path}': {e.strerror or e}") from None
    if magic.startswith(b"PK"):
        return _read_npz(path)
    tensors, meta = _read_safetensors(path)
    if meta is None:
        raise DataError(f"'{path}' is a safetensors file but not a saved netc model")
    return tensors, _checked(meta, path)


def read_weights(path: str) -> dict[str, np.ndarray]:
    """The tensors of a saved model (.npz or .safetensors) or of a plain .npz or .safetensors
    file of arrays, by name (`init_from`, `--weights`)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as e:
        raise DataError(f"cannot load weights from '{path}': {e.strerror or e}") from None
    if len(head) == 9 and head[8:] == b"{":  # an 8-byte header length, then the JSON header
        return _read_safetensors(path)[0]
    return {(k[2:] if k.startswith("t:") else k): a
            for k, a in read_npz(path).items() if k != "meta"}


_NPY_MAGIC, _ZIP_MAGICS = b"\x93NUMPY", (b"PK\x03\x04", b"PK\x05\x06")


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an `.npz` archive, read without pickle. Anything else is a DataError naming
    the file: missing, a folder, an `.npy` file (one unnamed array), any other non-archive (which
    np.load would take for a pickle), a truncated or corrupt archive, an array of objects."""
    path = os.fspath(path)
    bad = f"'{path}': not a readable .npz file"
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise DataError(f"{bad} ({e.strerror or e})") from None
    if magic.startswith(_NPY_MAGIC):
        raise DataError(f"{bad}: it is an .npy file holding one unnamed array; save the arrays "
                        "by name with numpy.savez")
    if not magic.startswith(_ZIP_MAGICS):
        raise DataError(f"{bad}: it is not a zip archive of arrays ("
                        f"{'empty' if not magic else 'it starts with ' + repr(magic[:4])})")
    out = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            for k in z.files:
                try:
                    out[k] = np.array(z[k])
                except ValueError as e:
                    if "allow_pickle" not in str(e):
                        raise
                    raise DataError(f"'{path}': array '{k}' holds Python objects, which netc "
                                    "never unpickles; store plain numeric arrays") from None
    except DataError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as e:
        raise DataError(f"{bad}: it is truncated or corrupt ({type(e).__name__}: {e})") from None
    return out


def _read_npz(path: str) -> tuple[dict[str, np.ndarray], dict]:
    z = read_npz(path)
    if "meta" not in z:
        raise DataError(f"'{path}' is an .npz file but not a saved netc model (it has no "
                        "'meta' entry); to load plain arrays as weights use "
                        "init_from / --weights")
    try:
        meta = json.loads(str(z["meta"]))
    except ValueError as e:
        raise DataError(f"'{path}' is corrupt: its metadata is not JSON ({e})") from None
    tensors = {k[2:]: v for k, v in z.items() if k.startswith("t:")}
    return tensors, _checked(meta, path)


def _read_safetensors(path: str) -> tuple[dict[str, np.ndarray], dict | None]:
    """The tensors and the netc metadata (None in a file netc did not write)."""
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError("too short")
            (n,) = struct.unpack("<Q", raw)
            if n > min(MAX_HEADER, size - 8):
                raise ValueError("bad header length")
            header = json.loads(f.read(n))
            data = f.read()
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        extra = header.pop("__metadata__", {})
        if not isinstance(extra, dict):
            raise ValueError("__metadata__ is not a JSON object")
        meta = json.loads(extra.get("netc", "null"))
        tensors = {}
        for name, spec in header.items():
            begin, end = spec["data_offsets"]
            dtype = np.dtype(_ST_DTYPES[spec["dtype"]]).newbyteorder("<")
            shape = tuple(int(d) for d in spec["shape"])
            if not 0 <= begin <= end <= len(data) or \
                    end - begin != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
                raise ValueError(f"tensor '{name}' does not fit the file")
            tensors[name] = np.frombuffer(data[begin:end], dtype=dtype).reshape(shape).astype(
                dtype.newbyteorder("="))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, struct.error) as e:
        raise DataError(f"'{path}' is not a readable saved model (.npz or .safetensors): "
                        f"{e}") from None
    return tensors, meta


def _is_int(v, lo: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


# what each metadata entry must be (the entries after "kinds" are optional)
_META = {
    "format": ("a string", lambda v: isinstance(v, str)),
    "text": ("the model's source text", lambda v: isinstance(v, str)),
    "overrides": ("an object of model parameters",
                  lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v)),
    "dtype": ("'float32' or 'float64'", lambda v: v in ("float32", "float64")),
    "seed": ("an integer >= 0", lambda v: _is_int(v, 0)),
    "kinds": ("an object of tensor kinds", lambda v: isinstance(v, dict) and all(
        isinstance(k, str) and x in ("param", "state", "opt") for k, x in v.items())),
    "version": ("an integer >= 1", lambda v: _is_int(v, 1)),
    "path": ("a string", lambda v: isinstance(v, str)),
    "imports": ("an object of imported files' texts", lambda v: isinstance(v, dict) and all(
        isinstance(k, str) and isinstance(x, str) for k, x in v.items())),
    "steps_per_epoch": ("an integer >= 1", lambda v: _is_int(v, 1)),
}
_REQUIRED = ("format", "text", "overrides", "dtype", "seed", "kinds")


def _checked(meta, path: str) -> dict:
    """`meta` when every entry a model is rebuilt from has the right type, else a DataError
    (a damaged or hand-edited file must not fail later as a TypeError deep in loading)."""
    missing = list(_REQUIRED) if not isinstance(meta, dict) else \
        [k for k in _REQUIRED if k not in meta]
    if missing:
        raise DataError(f"'{path}' is not a self-contained netc model (its metadata lacks "
                        f"{', '.join(missing)})")
    for key, (what, ok) in _META.items():
        if key in meta and not ok(meta[key]):
            raise DataError(f"'{path}' is damaged: its metadata entry '{key}' should be {what}, "
                            f"got {json.dumps(meta[key])[:80]}")
    return meta
