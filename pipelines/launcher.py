"""Dagster's default run launcher, with a run-worker health check so Dagster's own run monitoring works.

Dagster's `DefaultRunLauncher` cannot tell whether a run's worker process still lives, so its run monitoring
only enforces timeouts and a killed run stays STARTED. This subclass answers the health check from the worker
identity each run records (`pipelines.runs`). It is the one module that uses Dagster's launcher internals
(`dagster._core.launcher`), pinned exactly in requirements.lock; tests/test_runs.py checks it against the stock
launcher's behaviour.
"""

from __future__ import annotations

from dagster import DefaultRunLauncher
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

from pipelines.runs import dead_worker_message


class MonitoredRunLauncher(DefaultRunLauncher):
    """Launches like `DefaultRunLauncher`; reports a run whose worker process is gone as FAILED."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        # Dagster fails any run whose status is not RUNNING or SUCCESS, so a worker that has not recorded itself
        # yet (its first seconds) or lives on another host counts as running; start and run timeouts still apply.
        message = dead_worker_message(run)
        if message:
            return CheckRunHealthResult(WorkerStatus.FAILED, message)
        return CheckRunHealthResult(WorkerStatus.RUNNING)
