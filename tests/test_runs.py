"""Runs go through the Dagster instance's queue, and a killed run never blocks it (real daemon, real kill -9)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from demo.generator import generate
from pipelines.launcher import MonitoredRunLauncher
from pipelines.runs import WORKER_TAG, fail_dead_runs, worker_alive, worker_identity
from tests.conftest import TEST_KEY

PROJECT = Path(__file__).resolve().parents[1]
ROWS = 500


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_worker_identity_tells_live_from_dead():
    assert worker_alive(worker_identity()) is True
    assert worker_alive(worker_identity(_dead_pid())) is False
    assert worker_alive(f"{worker_identity().rsplit(':', 1)[0]}:1") is False  # a reused pid with another start time
    assert worker_alive("another-host:1:1") is None


def test_launcher_health_check_against_stock_launcher():
    """Stock DefaultRunLauncher cannot check a worker (so monitoring leaves dead runs STARTED); ours can."""
    stock, ours = dg.DefaultRunLauncher(), MonitoredRunLauncher()
    assert not stock.supports_check_run_worker_health and ours.supports_check_run_worker_health
    with pytest.raises(NotImplementedError):
        stock.check_run_worker_health(dg.DagsterRun(job_name="j"))
    statuses = {
        name: ours.check_run_worker_health(dg.DagsterRun(job_name="j", tags=tags)).status.value
        for name, tags in {
            "alive": {WORKER_TAG: worker_identity()},
            "dead": {WORKER_TAG: worker_identity(_dead_pid())},
            "untagged": {},
        }.items()
    }
    assert statuses == {"alive": "RUNNING", "dead": "FAILED", "untagged": "RUNNING"}


def test_dagster_run_monitoring_fails_a_dead_run(tmp_path):
    """Dagster's own monitoring loop, with our launcher, marks a run whose worker is gone as failed."""
    import logging

    from dagster._daemon.monitoring.run_monitoring import monitor_started_run

    (tmp_path / "dagster.yaml").write_text((PROJECT / "dagster.yaml").read_text())
    with dg.instance_for_test(
        temp_dir=str(tmp_path),
        overrides={
            "run_launcher": {"module": "pipelines.launcher", "class": "MonitoredRunLauncher"},
            "run_monitoring": {"enabled": True, "max_resume_run_attempts": 0},
        },
    ) as instance:
        run = instance.create_run_for_job(
            dg.GraphDefinition("g").to_job(), tags={WORKER_TAG: worker_identity(_dead_pid())}
        )
        instance.handle_run_event(run.run_id, dg.DagsterEvent("PIPELINE_START", job_name=run.job_name))
        record = instance.get_run_record_by_id(run.run_id)
        assert record.dagster_run.status == dg.DagsterRunStatus.STARTED
        monitor_started_run(instance, None, record, logging.getLogger("test"))
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        # and the check our command line makes before every launch does the same
        other = instance.create_run_for_job(
            dg.GraphDefinition("h").to_job(), tags={WORKER_TAG: worker_identity(_dead_pid())}
        )
        instance.handle_run_event(other.run_id, dg.DagsterEvent("PIPELINE_START", job_name=other.job_name))
        assert fail_dead_runs(instance) == [other.run_id]
        assert instance.get_run_by_id(other.run_id).status == dg.DagsterRunStatus.FAILURE


# --- end to end: the command line, the queue, a daemon, kill -9 ----------------------------------------


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("runs") / "data"
    generate(data_dir / "landing", rows=ROWS, seed=11)
    (data_dir / "dagster_home").mkdir()
    (data_dir / "dagster_home" / "dagster.yaml").write_text((PROJECT / "dagster.yaml").read_text())
    env = {
        **os.environ,
        "PIPELINES_DATA_DIR": str(data_dir),
        "DAGSTER_HOME": str(data_dir / "dagster_home"),
        "PIPELINES_PSEUDONYM_KEY": TEST_KEY,
        "PIPELINES_NLP_PROCESSES": "1",
    }
    return data_dir, env


def start_cli(env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines", "run"],
        cwd=PROJECT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def instance_of(data_dir: Path) -> dg.DagsterInstance:
    os.environ["DAGSTER_HOME"] = str(data_dir / "dagster_home")
    return dg.DagsterInstance.get()


def wait_for_step(instance: dg.DagsterInstance, step: str, timeout_s: float = 600) -> dg.DagsterRun:
    """The in-progress run once it has started `step`."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
            started = {
                e.dagster_event.step_key for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)
            }
            if step in started and WORKER_TAG in run.tags:
                return run
        time.sleep(0.5)
    raise AssertionError(f"no run reached step {step} in {timeout_s} s")


def children(pid: int) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "stat").read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                    out.append(int(proc.name))
            except OSError:
                pass
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in {"Z", "X"}


@pytest.mark.slow
def test_kill_9_never_blocks_the_queue_and_two_runs_take_turns(deployment):
    """kill -9 during de-identification, then during dbt build (dbt ends too); the queue moves on each time;
    then two command-line runs at once both succeed, one after the other."""
    data_dir, env = deployment
    instance = instance_of(data_dir)

    first = start_cli(env)
    victim = wait_for_step(instance, "deidentified_support_tickets")
    os.kill(int(victim.tags[WORKER_TAG].rsplit(":", 2)[1]), signal.SIGKILL)
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 1, out
    assert instance.get_run_by_id(victim.run_id).status == dg.DagsterRunStatus.FAILURE
    assert "FAILED" in out  # Dagster's code server or our worker check marked it failed, whichever saw it first

    second = start_cli(env)
    victim2 = wait_for_step(instance, "approved_models")
    worker = int(victim2.tags[WORKER_TAG].rsplit(":", 2)[1])
    deadline = time.time() + 120
    while not (dbt := [p for p in children(worker) if "dbt" in cmdline(p)]) and time.time() < deadline:
        time.sleep(0.2)
    assert dbt, "dbt never started"
    os.kill(worker, signal.SIGKILL)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 1, out
    deadline = time.time() + 20
    while any(alive(p) for p in dbt) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in dbt), "dbt outlived its run"

    a, b = start_cli(env), start_cli(env)
    out_a, _ = a.communicate(timeout=900)
    out_b, _ = b.communicate(timeout=900)
    assert a.returncode == 0 and b.returncode == 0, (out_a[-2000:], out_b[-2000:])
    assert "waits its turn" in out_a + out_b
    runs = [r for r in instance.get_run_records() if r.dagster_run.tags.get("pipelines/started_by") == "cli"]
    assert not [
        r
        for r in runs
        if r.dagster_run.status
        in (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.QUEUED)
    ]
    done = sorted((r for r in runs if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS), key=lambda r: r.start_time)
    assert len(done) == 2 and done[0].end_time <= done[1].start_time  # one at a time, through the queue
    assert "SUCCESS" in out_a and "published mart_org_unit_activity" in out_a
