"""Scanning on a persistent pool of forked workers that share the loaded model (and a helper that runs one job beside
the caller).

The pool is a standard `concurrent.futures.ProcessPoolExecutor` with a fork context. Its workers are forked once, from
a process that has loaded the model, and kept for the next calls (the chunks of a column, the columns and chunks of a
run): they share the model's memory copy-on-write and nothing heavy is pickled. A call hands each worker a chunk of
items plus a small payload: `fn` and `args` pickled with plain data (numbers, strings, containers, dataclasses, compiled
patterns) by value and every other object (the analyzer, the NLP engine, the known-identifier index, functions) by
reference to the copy the workers inherited at fork. A call that names an object the workers do not hold (or made after
`invalidate()`, or with a changed environment, or another process count) first replaces the pool with one forked now.
`shutdown()` ends it (tests end it after each module; at exit `concurrent.futures` joins it). Where processes cannot
fork, everything runs in the calling process.
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import io
import itertools
import multiprocessing
import os
import pickle
import re
import signal
import threading
import types
from collections import Counter, OrderedDict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

import regex

NLP_PROCESSES_ENV = "PIPELINES_NLP_PROCESSES"
MAX_DEFAULT_PROCESSES = 4  # each worker is a forked copy of the loaded model; more cores rarely pay off here


def resolve_processes(n_process: int | None = None) -> int:
    """Worker processes for scanning: explicit, else $PIPELINES_NLP_PROCESSES, else the usable cores (max 4).
    Always 1 inside a worker (workers do not fork workers of their own)."""
    if _IN_WORKER:
        return 1
    if n_process is not None:
        value, source = n_process, "n_process"
    elif os.environ.get(NLP_PROCESSES_ENV, "").strip():
        raw = os.environ[NLP_PROCESSES_ENV].strip()
        if not raw.isdigit():
            raise ValueError(f"{NLP_PROCESSES_ENV} must be a positive whole number of processes, got {raw!r}")
        value, source = int(raw), NLP_PROCESSES_ENV
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, min(MAX_DEFAULT_PROCESSES, cores))
    if value < 1:
        raise ValueError(f"{source} must be at least 1, got {value}")
    return value


# Worker processes are forked so they inherit the loaded analyzer (and the NER cache) instead of reloading it.
_FORK = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
_IN_WORKER = False


def can_fork() -> bool:
    """Can workers be forked here (they inherit the loaded model; elsewhere everything runs in one process)?"""
    return _FORK is not None


def chunk_items(items: list, n_process: int, min_chunk: int) -> list[list]:
    """Items cut into chunks of at least `min_chunk` (fewer if there are not enough), as many as a multiple of the
    processes and of equal size, give or take one item: 755 texts in chunks of 256 made 3 chunks, and one process
    scanned two of them while the other sat idle (parallel efficiency at most 0.75)."""
    size = max(min_chunk, -(-len(items) // (n_process * 4)))
    count = -(-len(items) // size)
    count = min(len(items), -(-count // n_process) * n_process) or 1
    base, extra = divmod(len(items), count)
    bounds = list(itertools.accumulate([0] + [base + (k < extra) for k in range(count)]))
    return [items[a:b] for a, b in itertools.pairwise(bounds)]


def map_in_processes(fn, items: list, n_process: int, args: tuple, min_chunk: int) -> list:
    """fn(chunk, args) over chunks of items in the forked workers; results in input order."""
    return [result for part in map_chunks_in_processes(fn, items, n_process, args, min_chunk) for result in part]


def map_chunks_in_processes(fn, items: list, n_process: int, args: tuple, min_chunk: int) -> list:
    """fn(chunk, args) over chunks of items (see `chunk_items`) in the pool's workers: one result per chunk, in input
    order. Serial where processes cannot fork (or inside a worker)."""
    chunks = chunk_items(items, n_process, min_chunk)
    if _FORK is None or _IN_WORKER or n_process < 2:
        return [fn(chunk, args) for chunk in chunks]
    payload, objects = _dumps((fn, args))
    with _LOCK:
        pool = _pool_for(n_process, objects)
        futures = []
        try:
            futures.extend(pool.executor.submit(_run_in_worker, payload, chunk) for chunk in chunks)
            return [future.result() for future in futures]
        except BrokenProcessPool:
            shutdown()  # a worker died (killed, out of memory): the next call forks a new pool
            raise
        except BaseException:
            for future in futures:  # an error in one chunk: the chunks not started yet are not scanned
                future.cancel()
            raise


# --- the pool -------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Pool:
    executor: ProcessPoolExecutor
    processes: int
    shared: dict[int, object]  # id -> object: what the workers inherited, by identity (kept alive here)
    epoch: int
    environ: dict[str, str]
    workers: list  # the multiprocessing.Process of each worker


_POOL: _Pool | None = None
_SHARED: dict[int, object] = {}  # in a worker: the objects it inherited (a copy of its pool's `shared`)
_EPOCH = 0
_LOCK = threading.RLock()


def invalidate() -> None:
    """The workers' inherited state is out of date (a memo or cache was cleared in this process): the next call
    forks a new pool."""
    global _EPOCH
    _EPOCH += 1


def shutdown() -> None:
    """End the pool's workers and wait for them (idempotent); the next call forks a new pool."""
    global _POOL
    with _LOCK:
        pool, _POOL = _POOL, None
        if pool is not None:
            pool.executor.shutdown(wait=True, cancel_futures=True)


def start(n_process: int, *objects) -> None:
    """Fork the pool now (if it is not running with these objects already), so that the next calls naming them do
    not pay for the fork: what a run's later chunks see. A benchmark's way to time the scan alone."""
    if _FORK is not None and not _IN_WORKER and n_process > 1:
        with _LOCK:
            _pool_for(n_process, {id(o): o for o in objects})


def pool_pids() -> list[int]:
    """The process ids of the pool's live workers (none when no pool runs)."""
    pool = _POOL
    return [] if pool is None else sorted(p.pid for p in pool.workers if p.is_alive())


def _pool_for(n_process: int, objects: dict[int, object]) -> _Pool:
    """The running pool if its workers hold `objects` and are current, else a new one forked now (which inherits
    the objects the old one held too, so alternating callers do not fork each time)."""
    global _POOL, _SHARED
    pool, environ = _POOL, dict(os.environ)
    if (
        pool is not None
        and pool.processes == n_process
        and pool.epoch == _EPOCH
        and pool.environ == environ
        and objects.keys() <= pool.shared.keys()
    ):
        return pool
    shared = ({**pool.shared} if pool is not None and pool.epoch == _EPOCH else {}) | objects
    shutdown()
    executor = ProcessPoolExecutor(max_workers=n_process, mp_context=_FORK, initializer=_quiet_worker)
    _SHARED, before = shared, set(multiprocessing.active_children())
    try:
        with _frozen_heap():
            # fork-context executors start all their workers at the first submit: fork them now, while the shared
            # objects are in place and the heap is frozen
            executor.submit(int).result()
    finally:
        _SHARED = {}
    workers = [p for p in multiprocessing.active_children() if p not in before]
    _POOL = _Pool(executor, n_process, shared, _EPOCH, environ, workers)
    return _POOL


atexit.register(shutdown)


@contextmanager
def _frozen_heap():
    """Fork inside this: the parent's objects are moved out of the collector's reach (`gc.freeze`) for the children,
    whose collections would otherwise walk the parent's whole heap, copying every page they touch (copy-on-write).
    At 1M rows (a 7.9M-entry known-identifier index in the parent) that cost 13% of the workers' time. The parent
    unfreezes at once, unless its objects were frozen already."""
    already = gc.get_freeze_count() > 0
    gc.freeze()
    try:
        yield
    finally:
        if not already:
            gc.unfreeze()


# --- the payload: plain data by value, everything else by reference to the workers' inherited copy ------------------

_BY_VALUE = (str, bytes, int, float, complex, bool, type(None), tuple, list, dict, set, frozenset, Counter, OrderedDict)
_PATTERNS = (re.Pattern, regex.Pattern)


class _Pickler(pickle.Pickler):
    def __init__(self, file) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.objects: dict[int, object] = {}

    def persistent_id(self, obj):
        if (
            type(obj) in _BY_VALUE
            or isinstance(obj, (type, *_PATTERNS))
            or (dataclasses.is_dataclass(obj) and not isinstance(obj, type))
            or isinstance(obj, types.BuiltinFunctionType)
        ):
            return None
        self.objects[id(obj)] = obj
        return id(obj)


class _Unpickler(pickle.Unpickler):
    def persistent_load(self, key):
        return _SHARED[key]


def _dumps(job) -> tuple[bytes, dict[int, object]]:
    """The job pickled, and the objects it refers to by reference."""
    buffer = io.BytesIO()
    pickler = _Pickler(buffer)
    pickler.dump(job)
    return buffer.getvalue(), pickler.objects


_LAST_JOB: tuple[bytes, object] | None = None  # in a worker: the last payload and what it unpickled to


def _run_in_worker(payload: bytes, chunk: list):
    global _LAST_JOB
    if _LAST_JOB is None or _LAST_JOB[0] != payload:
        _LAST_JOB = (payload, _Unpickler(io.BytesIO(payload)).load())
    fn, args = _LAST_JOB[1]
    return fn(chunk, args)


def _quiet_worker() -> None:
    """Forked workers drop the parent's interrupt handlers (Dagster's raise in them when the pool ends them), and
    the parent's pool (its threads did not survive the fork)."""
    global _IN_WORKER, _POOL
    _IN_WORKER, _POOL = True, None
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends the pool


# --- one job beside the caller ---------------------------------------------------------------------------------------


def shared_counter():
    """An integer shared with workers forked after it is made (None where processes cannot fork)."""
    return _FORK.Value("i", 0) if _FORK is not None and resolve_processes() > 1 else None


class Background:
    """`fn(*args)` started in one forked process (it inherits the loaded model and data); `result()` waits for it
    and re-raises its error. With one usable process (or no fork) it runs inline, in `result()`.

    A bare process and a pipe, not a Pool: ending a Pool joins its handler threads, which poll every 0.1 s."""

    def __init__(self, fn, *args, enabled: bool = True) -> None:
        self._fn, self._args = fn, args
        self._process = self._conn = None
        self._outcome: tuple | None = None  # ("ok", value) or ("error", exception)
        if enabled and _FORK is not None and resolve_processes() > 1:
            receive, send = _FORK.Pipe(duplex=False)
            self._process = _FORK.Process(target=_background_main, args=(send, fn, args), daemon=True)
            with _frozen_heap():
                self._process.start()  # forks now: the child inherits fn and args, nothing is pickled
            send.close()
            self._conn = receive

    def result(self):
        if self._process is None and self._outcome is None:
            return self._fn(*self._args)
        try:
            if self._outcome is None:
                try:
                    self._outcome = self._conn.recv()
                except EOFError:
                    self._process.join()
                    self._outcome = (
                        "error",
                        RuntimeError(
                            f"the background worker ended without a result (exit code {self._process.exitcode})"
                        ),
                    )
        finally:
            self.cancel()
        kind, value = self._outcome
        if kind == "error":
            raise value
        return value

    def ready(self) -> bool:
        """Has the worker finished (always False when the work runs inline, in `result()`)?"""
        return self._outcome is not None or (self._conn is not None and self._conn.poll())

    def cancel(self) -> None:
        """Stop the worker if it still runs (the caller failed first); idempotent."""
        if self._process is not None:
            if self._process.is_alive():
                self._process.terminate()
            self._process.join()
            self._conn.close()
            self._process = self._conn = None


def _background_main(conn, fn, args) -> None:
    _quiet_worker()
    try:
        outcome = ("ok", fn(*args))
    except Exception as error:  # noqa: BLE001 (any error is handed to the parent, which re-raises it)
        outcome = ("error", error)
    try:
        conn.send(outcome)
    except Exception as error:  # noqa: BLE001 (a result or error that cannot be pickled)
        conn.send(
            (
                "error",
                RuntimeError(f"the background worker's {outcome[0]} could not be passed back ({type(error).__name__})"),
            )
        )
    finally:
        conn.close()
