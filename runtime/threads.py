"""Runtime, worker threads: run one native SPMD function on N threads at once.

Takes: a ctypes function `fn(thread_id, n_threads, *args)` (a `CFUNCTYPE` object, which releases the
GIL while native code runs) and its extra arguments.
Gives: `ThreadPool.run(fn, n_threads, *args)`, returning when every thread has returned; the
process-wide `get_pool()`. Workers are started once (lazily, grown on demand) and reused; the
calling thread runs thread id 0 itself, so 1 thread costs no hand-off.

Invariants: all N ids run concurrently (a native barrier inside `fn` needs that), each id exactly
once per call; an exception raised by any id is re-raised in the caller after all ids finish; calls
are serialised (one SPMD region at a time); workers are daemons and are told to stop at exit.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from typing import Any


class ThreadPool:
    """Persistent workers; worker k runs thread id k+1 of each SPMD call."""

    def __init__(self) -> None:
        self._workers: list[threading.Thread] = []
        self._start: list[threading.Semaphore] = []
        self._done = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._job: tuple[Callable[..., Any], int, tuple[Any, ...]] | None = None
        self._errors: list[BaseException] = []
        self._stopping = False

    def _worker(self, k: int) -> None:
        while True:
            self._start[k].acquire()
            if self._stopping:
                return
            job = self._job
            assert job is not None
            fn, n, args = job
            try:
                fn(k + 1, n, *args)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller
                self._errors.append(e)
            finally:
                self._done.release()

    def _grow(self, n_workers: int) -> None:
        while len(self._workers) < n_workers:
            k = len(self._workers)
            self._start.append(threading.Semaphore(0))
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
        with self._lock:
            if self._stopping:
                raise RuntimeError("thread pool is shut down")
            self._grow(n_threads - 1)
            self._errors = []
            self._job = (fn, n_threads, args)
            for k in range(n_threads - 1):
                self._start[k].release()
            try:
                fn(0, n_threads, *args)
            except BaseException as e:  # noqa: BLE001
                self._errors.append(e)
            for _ in range(n_threads - 1):
                self._done.acquire()
            self._job = None
            if self._errors:
                raise self._errors[0]

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
            for s in self._start:
                s.release()
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
