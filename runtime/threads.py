"""Runtime, worker threads: run one SPMD function on N threads at once.

Takes: a function `fn(thread_id, n_threads, *args)` — a ctypes function pointer of generated code
(the usual case) or any Python callable — and its extra arguments.
Gives: `ThreadPool.run(fn, n_threads, *args)`, returning when every thread has returned; the
process-wide `get_pool()`. Workers are started once (lazily, grown on demand) and reused; the
calling thread runs thread id 0 itself, so 1 thread costs no hand-off.

How: each worker thread enters native code once (`netc_pool_worker`, codegen/workers.py, compiled
on first use) and waits there for jobs; `run` is one ctypes call (`netc_pool_run{A}`) that
publishes the job, wakes the workers it needs, runs id 0 and returns after the job's end barrier.
No Python runs on the workers and the GIL is released for the whole job, so a wake-up costs a
store (or a futex wake for a worker that went to sleep), not an interpreter hand-off. Idle
workers spin briefly, then yield, then sleep on a futex: an idle pool burns no core.
A ctypes function whose arguments are all integers or pointers is called straight from native
code (its integer arguments passed as i64); anything else (a Python callable, another prototype)
runs through a ctypes callback on the same workers, which takes the GIL for the call.

Invariants: all N ids run concurrently (a native barrier inside `fn` needs that), each id exactly
once per call; an exception raised by any id is re-raised in the caller after all ids finish; calls
are serialised (one SPMD region at a time; a second Python thread waits its turn); workers are
daemons and are told to stop at interpreter exit.
"""

from __future__ import annotations

import atexit
import ctypes
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from netc.compiler.codegen.workers import CTL_BYTES, MAX_ARGS, MAX_WORKERS, RUN_PREFIX
from netc.compiler.errors import UsageError

MAX_THREADS = MAX_WORKERS + 1  # the caller runs thread id 0


def check_threads(n: object, what: str = "threads") -> int:
    """A user's thread count as an int in [1, MAX_THREADS], or a UsageError naming `what`."""
    if isinstance(n, str) and what.startswith("NETC_"):  # an environment variable
        try:
            n = int(n.strip())
        except ValueError:
            raise UsageError(f"{what} must be a whole number of threads, got {n!r}") from None
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= n <= MAX_THREADS:
        raise UsageError(f"{what} must be an integer from 1 to {MAX_THREADS}, got {n!r}")
    return int(n)

# Argument types a native job may have after (tid, n_threads): passed as i64 in a register/slot.
_INT_LIKE = (ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_char_p,
             ctypes._Pointer)
_TID = (ctypes.c_int32,)
_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_int32, ctypes.c_int32)


class _Loops:
    """The compiled pool functions (one module per process, shared by every pool)."""

    def __init__(self) -> None:
        from llvmlite import ir

        from netc.compiler.codegen.target import get_target
        from netc.compiler.codegen.workers import emit_pool
        from netc.jit import compile_module

        target = get_target()
        module = ir.Module(name="netc_pool")
        emit_pool(module, pause=target.x86)
        self.compiled = compile_module(module, target)
        vp, i32 = ctypes.c_void_p, ctypes.c_int32
        self.worker = ctypes.CFUNCTYPE(None, vp, i32)(self.compiled.address("netc_pool_worker"))
        self.stop = ctypes.CFUNCTYPE(None, vp, i32)(self.compiled.address("netc_pool_stop"))
        self.runs = [ctypes.CFUNCTYPE(None, vp, vp, i32, *([vp] * n))(
            self.compiled.address(f"{RUN_PREFIX}{n}")) for n in range(MAX_ARGS + 1)]


_loops: _Loops | None = None
_loops_lock = threading.Lock()


def _get_loops() -> _Loops:
    global _loops
    with _loops_lock:
        if _loops is None:
            _loops = _Loops()
        return _loops


def native_address(fn: Any) -> int | None:
    """The code address of `fn` when native workers may call it directly (a ctypes function of
    (int32, int32, integers/pointers...)), else None. Cached on the function object."""
    if not isinstance(fn, ctypes._CFuncPtr):
        return None
    cached = fn.__dict__.get("_netc_pool_addr")
    if cached is not None:
        return cached or None
    types = fn.argtypes or ()
    ok = (len(types) >= 2 and len(types) - 2 <= MAX_ARGS and fn.restype is None
          and all(t in _TID for t in types[:2])
          and all(issubclass(t, _INT_LIKE) for t in types[2:]))
    addr = (ctypes.c_void_p.from_address(ctypes.addressof(fn)).value or 0) if ok else 0
    fn._netc_pool_addr = addr
    return addr or None


class ThreadPool:
    """Persistent native workers; worker k runs thread id k+1 of each SPMD call."""

    def __init__(self) -> None:
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._loops: _Loops | None = None
        self._ctl_buf: np.ndarray | None = None
        self._ctl = 0

    def _worker(self, k: int) -> None:
        assert self._loops is not None
        self._loops.worker(self._ctl, k)  # returns when the pool stops

    def _grow(self, n_workers: int) -> None:
        if n_workers > MAX_WORKERS:
            raise ValueError(f"at most {MAX_WORKERS + 1} threads, got {n_workers + 1}")
        if self._loops is None:
            self._loops = _get_loops()
            raw = np.zeros(CTL_BYTES + 64, np.uint8)  # workers' lines start zeroed
            off = (-raw.ctypes.data) % 64
            self._ctl_buf = raw[off:off + CTL_BYTES]
            self._ctl = self._ctl_buf.ctypes.data
        while len(self._workers) < n_workers:
            k = len(self._workers)
            t = threading.Thread(target=self._worker, args=(k,), name=f"netc-worker-{k + 1}",
                                 daemon=True)
            self._workers.append(t)
            t.start()

    def run(self, fn: Callable[..., Any], n_threads: int, *args: Any) -> None:
        """Call `fn(tid, n_threads, *args)` for every tid in range(n_threads), concurrently."""
        if n_threads < 1:
            raise ValueError(f"n_threads must be >= 1, got {n_threads}")
        if n_threads == 1 and not self._stopping:
            fn(0, 1, *args)  # nothing to hand off: no lock, no wake-up
            return
        addr = native_address(fn)
        with self._lock:
            if self._stopping:
                raise RuntimeError("thread pool is shut down")
            self._grow(n_threads - 1)
            assert self._loops is not None
            if addr is not None:
                try:
                    self._loops.runs[len(args)](self._ctl, addr, n_threads, *args)
                    return
                except ctypes.ArgumentError:
                    pass  # an argument ctypes cannot pass as an integer: the general route
            self._run_callback(fn, n_threads, args)

    def _run_callback(self, fn: Callable[..., Any], n_threads: int, args: tuple) -> None:
        """Run a Python callable (or a ctypes function with other argument types) on the native
        workers through a ctypes callback; re-raise the first exception any id raised."""
        errors: list[BaseException] = []

        def call(tid: int, nt: int) -> None:
            try:
                fn(tid, nt, *args)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller
                errors.append(e)

        cb = _CALLBACK(call)
        assert self._loops is not None
        self._loops.runs[0](self._ctl, ctypes.cast(cb, ctypes.c_void_p).value, n_threads)
        if errors:
            raise errors[0]

    @property
    def size(self) -> int:
        """Number of worker threads started so far (the caller is not counted)."""
        return len(self._workers)

    def shutdown(self) -> None:
        """Stop every worker (idempotent); later `run` calls raise."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            if self._loops is not None and self._workers:
                self._loops.stop(self._ctl, len(self._workers))
            for t in self._workers:
                t.join(timeout=5.0)


_pool: ThreadPool | None = None
_pool_lock = threading.Lock()


def get_pool() -> ThreadPool:
    """The process-wide pool (created on first use, shut down at interpreter exit)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPool()
            atexit.register(_pool.shutdown)
        return _pool
