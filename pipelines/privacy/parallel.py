"""Scanning in forked worker processes that share the loaded model (and a helper that runs one job beside the caller)."""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import os
import signal
from contextlib import contextmanager

NLP_PROCESSES_ENV = "PIPELINES_NLP_PROCESSES"
MAX_DEFAULT_PROCESSES = 4  # each worker is a forked copy of the loaded model; more cores rarely pay off here


def resolve_processes(n_process: int | None = None) -> int:
    """Worker processes for scanning: explicit, else $PIPELINES_NLP_PROCESSES, else the usable cores (max 4).
    Always 1 inside a worker (pool workers are daemons and may not fork)."""
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
_WORKER_JOB: tuple | None = None
_IN_WORKER = False


def map_in_processes(fn, items: list, n_process: int, args: tuple, min_chunk: int) -> list:
    """fn(chunk, args) over chunks of items in forked workers; results in input order."""
    return [result for part in map_chunks_in_processes(fn, items, n_process, args, min_chunk) for result in part]


def map_chunks_in_processes(fn, items: list, n_process: int, args: tuple, min_chunk: int) -> list:
    """fn(chunk, args) over chunks of items in forked workers: one result per chunk, in input order."""
    global _WORKER_JOB
    size = max(min_chunk, -(-len(items) // (n_process * 4)))
    # as many chunks as a multiple of the processes, of equal size: 755 texts in chunks of 256 made 3 chunks, and one
    # process scanned two of them while the other sat idle (parallel efficiency at most 0.75)
    count = -(-len(items) // size)
    count = min(len(items), -(-count // n_process) * n_process) or 1
    base, extra = divmod(len(items), count)
    bounds = list(itertools.accumulate([0] + [base + (k < extra) for k in range(count)]))
    chunks = [items[a:b] for a, b in itertools.pairwise(bounds)]
    _WORKER_JOB = (fn, args)
    try:
        with _frozen_heap():
            pool = _FORK.Pool(n_process, initializer=_quiet_worker)  # forks its workers now
        with pool:
            return pool.map(_run_in_worker, chunks)
    finally:
        _WORKER_JOB = None


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


def _quiet_worker() -> None:
    """Forked workers drop the parent's interrupt handlers (Dagster's raise in them when the pool ends them)."""
    global _IN_WORKER
    _IN_WORKER = True
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends the pool


def _run_in_worker(chunk: list) -> list:
    fn, args = _WORKER_JOB  # inherited from the parent at fork
    return fn(chunk, args)


def can_fork() -> bool:
    """Can workers be forked here (they inherit the loaded model; elsewhere everything runs in one process)?"""
    return _FORK is not None
