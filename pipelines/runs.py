"""Runs on the Dagster instance: who runs each one, whether that process still lives, and a local daemon.

A run's worker records its process identity as a run tag when its first resource starts. A run whose worker is
gone (kill -9, OOM, power loss) would otherwise stay STARTED forever and, with one run allowed at a time, block
the queue: the schedule and every sensor would stop silently. `fail_dead_runs` marks such runs failed; it runs
before every command-line launch and, through `pipelines.launcher`, inside Dagster's own run monitoring.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

WORKER_TAG = "pipelines/run_worker"
IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
_PR_SET_PDEATHSIG = 1


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc), so a reused pid is not mistaken for it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in {"Z", "X"} else fields[19]  # a zombie has finished


def worker_identity(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or '-'}"


def worker_alive(identity: str) -> bool | None:
    """True or False for a worker on this host; None when it cannot be told (another host)."""
    host, pid, ticks = identity.rsplit(":", 2)
    if host != socket.gethostname():
        return None
    current = _start_ticks(int(pid))
    return current is not None and (ticks == "-" or current == ticks)


def record_worker(instance: dg.DagsterInstance, run_id: str) -> None:
    """Tag the run with this process, once (every step of a run shares one process: in-process executor)."""
    run = instance.get_run_by_id(run_id)
    if run is not None and WORKER_TAG not in run.tags:
        instance.add_run_tags(run_id, {WORKER_TAG: worker_identity()})


def dead_worker_message(run: dg.DagsterRun) -> str | None:
    identity = run.tags.get(WORKER_TAG)
    if identity is None or worker_alive(identity) is not False:
        return None
    pid = identity.rsplit(":", 2)[1]
    return (
        f"Run worker process {pid} of run {run.run_id} is gone (killed or crashed) while the run was {run.status.value}. "
        "The run is marked failed so that queued runs can start; its staged tables were never swapped in, so every "
        "table keeps its last good version. Re-run the job."
    )


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark every in-progress run whose worker process is gone as failed; returns their run ids."""
    failed = []
    runs = instance.get_runs(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED])
    )
    for run in runs:
        message = dead_worker_message(run)
        if message:
            instance.report_run_failed(run, message)
            failed.append(run.run_id)
    return failed


def runs_in_progress(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS)))


def die_with_parent() -> None:
    """In a child before exec: SIGTERM when the parent dies, so no daemon or dbt outlives its owner."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _fresh_daemon(instance: dg.DagsterInstance, within_s: float = 75) -> bool:
    """A daemon (ours or `dagster dev`'s) sent a heartbeat recently (daemons beat every 30 s)."""
    beats = instance.get_daemon_heartbeats().values()
    return any(time.time() - beat.timestamp < within_s for beat in beats)


class LocalDaemon:
    """A `dagster-daemon` for the command line's runs, started only when no other daemon serves the instance.

    One process at a time owns it (an flock in $DAGSTER_HOME); it ends with its owner.
    """

    def __init__(self, home: Path, workspace: Path):
        self.home, self.workspace = home, workspace
        self._lock: int | None = None
        self._process: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def ensure(self, instance: dg.DagsterInstance) -> bool:
        """Start our daemon if nobody serves the queue; True if one is (now) ours."""
        if self.running:
            return True
        if self._lock is None:
            fd = os.open(self.home / "daemon.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False  # another `python -m pipelines run` serves the queue
            self._lock = fd
        if _fresh_daemon(instance):
            return False  # e.g. `make ui`'s daemon
        log = os.open(self.home / "daemon.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        daemon = Path(sys.executable).with_name("dagster-daemon")
        self._process = subprocess.Popen(
            [str(daemon) if daemon.exists() else "dagster-daemon", "run", "-w", str(self.workspace)],
            cwd=self.workspace.parent,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
            start_new_session=True,
        )
        os.close(log)
        return True

    def stop(self, instance: dg.DagsterInstance) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
            instance.wipe_daemon_heartbeats()  # so the next command starts its own at once
            self._process = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


@contextlib.contextmanager
def local_daemon(home: Path, workspace: Path, instance: dg.DagsterInstance) -> Iterator[LocalDaemon]:
    daemon = LocalDaemon(home, workspace)
    try:
        yield daemon
    finally:
        daemon.stop(instance)
