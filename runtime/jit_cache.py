"""Runtime, on-disk compile cache: native object code of whole-step modules, keyed by what
determines it.

Takes: a key text (graph text + request + options), a function building the llvmlite module and
a small JSON-able `meta` (only called on a miss) and a Target. Gives: `compile_cached(key_text,
build, target)` -> (`Compiled` (runtime/jit.py), meta, hit), loading the object file and its meta
from the cache when present, else optimising at O3, emitting the object (`object_code`: in a
forked child where the OS allows) and storing both; `cache_dir()`.

Invariants: the key hashes the key text, the target's name, CPU and features, the LLVM version,
the netc version and the code generator's and the JIT's own source (so an edited checkout never
loads objects of an older code generator or pass pipeline); entries are stored through
`netc.compiler.disk_cache` (the cache directory, atomic checksummed writes: concurrent writers
never leave a torn entry); an entry that is corrupt or fails to load is rebuilt and rewritten,
never an error; an unwritable cache directory only costs the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable

import llvmlite
import llvmlite.binding as llvm
from llvmlite import ir

from netc.compiler.codegen.target import Target
from netc.compiler.disk_cache import cache_dir, read_entry, write_entry
from netc.compiler.errors import InternalCompilerError
from netc.jit import Compiled, _parse, optimize, target_machine
from netc.jit_split import split_module

# compiled modules of this process by key, least recently used first; bounded, so a process
# compiling many graphs (a model predicting on many batch sizes, a search over model sizes)
# does not keep them all: an evicted one lives on while an engine still holds it
_memory: OrderedDict[str, tuple[Compiled, dict]] = OrderedDict()
MEMORY_ENTRIES = 32
MAX_PARTS = 4  # a module is compiled in at most this many parts at once (jit_split.py)
MIN_PART_BYTES = 150_000  # of IR text: smaller modules are compiled whole


def _remember(key: str, entry: tuple[Compiled, dict]) -> None:
    _memory[key] = entry
    while len(_memory) > MEMORY_ENTRIES:
        _memory.popitem(last=False)


def _version() -> str:
    # the package's own attribute: importlib.metadata would scan every installed distribution
    # (tens of ms on each start)
    import netc
    return netc.__version__


_fingerprint: list[str] = []


def codegen_fingerprint() -> str:
    """A hash of the code generator's source files, of the JIT's (its pass pipeline decides
    the object code too), of the JIT engine's (it reads the entries' layout metadata) and of
    this file's and jit_split's (how a module becomes the objects of an entry), computed once
    per process."""
    if not _fingerprint:
        from netc import jit, jit_engine, jit_split
        from netc.compiler import codegen
        h = hashlib.sha256()
        folder = os.path.dirname(codegen.__file__)
        paths = [os.path.join(folder, name) for name in sorted(os.listdir(folder))
                 if name.endswith(".py")]
        for path in [*paths, jit.__file__, jit_engine.__file__, jit_split.__file__, __file__]:
            with open(path, "rb") as f:
                h.update(os.path.basename(path).encode() + b"\0" + f.read())
        _fingerprint.append(h.hexdigest())
    return _fingerprint[0]


def cache_key(key_text: str, target: Target) -> str:
    h = hashlib.sha256()
    for part in (key_text, target.name, target.cpu, target.features, llvmlite.__version__,
                 _version(), codegen_fingerprint()):
        h.update(str(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def _load(objs: list[bytes], target: Target) -> Compiled:
    with _llvm_lock:
        return _load_locked(objs, target)


def _load_locked(objs: list[bytes], target: Target) -> Compiled:
    """One engine holding every object (the parts of one module call each other by name)."""
    tm = target_machine(target)
    empty = llvm.parse_assembly("")
    empty.triple = llvm.get_process_triple()
    engine = llvm.create_mcjit_compiler(empty, tm)
    for obj in objs:
        engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    return Compiled(engine)


_llvm_lock = threading.Lock()


def _object_code_here(text: str, target: Target, pic: bool = False,
                      edit: Callable[[llvm.ModuleRef], None] | None = None) -> bytes:
    tm = target_machine(target, pic=pic)
    mod = _parse(text, target)
    mod.data_layout = str(tm.target_data)
    if edit is not None:
        edit(mod)
    optimize(mod, tm)
    obj = tm.emit_object(mod)
    mod.close()
    return obj


def object_code(text: str, target: Target, *, pic: bool = False,
                edit: Callable[[llvm.ModuleRef], None] | None = None) -> bytes:
    """The object file of LLVM IR `text`, optimized at O3 (`pic`: for a shared library; `edit`
    changes the parsed module before the optimizer runs). See `object_codes`."""
    return object_codes([text], target, pic=pic, edit=edit)[0]


def object_codes(texts: list[str], target: Target, *, pic: bool = False,
                 edit: Callable[[llvm.ModuleRef], None] | None = None) -> list[bytes]:
    """The object file of each LLVM IR text, optimized at O3, all at the same time. Where the
    OS can fork, LLVM works in one child process per text, each sending its object back
    through a pipe: the texts compile in parallel, the optimizer's and code generator's working
    memory (tens of MB, kept by the allocator afterwards) never counts against the training
    process, and a crash inside LLVM is an error, not the end of the user's process.
    NETC_COMPILE_IN_PROCESS=1 compiles here, one text after the other (for debuggers), as
    does a process that has loaded JAX (its runtime threads make it warn against any fork)."""
    if (not hasattr(os, "fork") or "jax" in sys.modules
            or os.environ.get("NETC_COMPILE_IN_PROCESS", "") not in ("", "0")):
        return [_object_code_here(text, target, pic, edit) for text in texts]
    with _llvm_lock:  # no other thread of ours is inside LLVM when a child is forked
        children = [_fork_compile(text, target, pic, edit) for text in texts]
        results = []
        for pid, r in children:
            with os.fdopen(r, "rb") as f:
                data = f.read()
            _, status = os.waitpid(pid, 0)
            results.append((data, status))
    return [_received(data, status) for data, status in results]


def _fork_compile(text: str, target: Target, pic: bool,
                  edit: Callable[[llvm.ModuleRef], None] | None) -> tuple[int, int]:
    """(pid, read end of its pipe) of a child compiling `text`."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: compile, send, exit without running any Python cleanup
        code = 1
        try:
            os.close(r)
            try:
                payload, code = b"O" + _object_code_here(text, target, pic, edit), 0
            except BaseException as e:  # noqa: BLE001 - reported by the parent
                payload = b"E" + f"{type(e).__name__}: {e}".encode(errors="replace")
            with os.fdopen(w, "wb") as f:
                f.write(payload)
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def _received(data: bytes, status: int) -> bytes:
    """The object code a child sent, or the error it reported or died of."""
    if data[:1] == b"O" and status == 0:
        return data[1:]
    if data[:1] == b"E":
        raise InternalCompilerError(f"LLVM could not compile the module: "
                                    f"{data[1:].decode(errors='replace')}")
    how = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
           else f"exit status {os.WEXITSTATUS(status)}")
    raise InternalCompilerError(f"the LLVM compile process ended with {how} before it sent "
                                f"the object code")


def _pack(objs: list[bytes], meta: dict) -> bytes:
    """meta's length and JSON, the object count, then each object's length and bytes."""
    m = json.dumps(meta, sort_keys=True).encode()
    out = [len(m).to_bytes(4, "little"), m, len(objs).to_bytes(4, "little")]
    for obj in objs:
        out += [len(obj).to_bytes(8, "little"), obj]
    return b"".join(out)


def _unpack(data: bytes) -> tuple[list[bytes], dict]:
    n = int.from_bytes(data[:4], "little")
    meta = json.loads(data[4:4 + n].decode())
    at = 4 + n
    count = int.from_bytes(data[at:at + 4], "little")
    at += 4
    objs = []
    for _ in range(count):
        size = int.from_bytes(data[at:at + 8], "little")
        objs.append(data[at + 8:at + 8 + size])
        at += 8 + size
    if at != len(data) or not objs or any(not o for o in objs):
        raise ValueError("malformed cache entry")
    return objs, meta


def compile_parts() -> int:
    """How many parts a module is split into for code generation: the CPUs this process may
    run on, at most MAX_PARTS."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_PARTS))


def compile_cached(key_text: str, build: Callable[[], tuple[ir.Module, dict]], target: Target
                   ) -> tuple[Compiled, dict, bool]:
    """(compiled, meta, hit): from memory, the disk cache, or a fresh O3 compile stored on disk
    (the module split into `compile_parts()` parts compiled in parallel, jit_split.py)."""
    key = cache_key(key_text, target)
    if key in _memory:
        _memory.move_to_end(key)
        return *_memory[key], True
    path = os.path.join(cache_dir(), key[:2], key + ".o")
    data = read_entry(path)
    if data is not None:
        try:
            objs, meta = _unpack(data)
            compiled = _load(objs, target)
            _remember(key, (compiled, meta))
            return compiled, meta, True
        except Exception:  # noqa: BLE001 - a bad entry is rebuilt below
            pass
    module, meta = build()
    texts = split_module(module, compile_parts(), MIN_PART_BYTES)
    del module  # peak memory: the Python IR is not needed past its text
    objs = object_codes(texts, target)
    del texts
    write_entry(path, _pack(objs, meta))
    compiled = _load(objs, target)
    _remember(key, (compiled, meta))
    return compiled, meta, False
