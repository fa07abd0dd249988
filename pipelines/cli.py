"""Command line: launch a job on the Dagster instance (queued, like a UI or schedule run), wait, summarize."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dagster as dg

from pipelines.paths import PROJECT_ROOT, WORKSPACE
from pipelines.resources import default_data_dir
from pipelines.runs import fail_dead_runs, local_daemon, runs_in_progress

_POLL_S = 2.0


def instance_home(data_dir: Path) -> Path:
    """`$DAGSTER_HOME` (default `data/dagster_home`), with the project's instance settings when it has none."""
    home = Path(os.environ.get("DAGSTER_HOME") or data_dir / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _value(entry: Any) -> Any:
    return getattr(entry, "value", entry)


def _failed_expectations(metadata: dict[str, Any]) -> list[str]:
    """One line per failed expectation: expectation, column, observed counts, threshold (never a value)."""
    results = (_value(metadata.get("results")) or {}).get("results", [])
    lines = []
    for r in results:
        if r.get("success"):
            continue
        observed = ", ".join(f"{k}={v}" for k, v in (r.get("observed") or {}).items()) or "-"
        threshold = ", ".join(f"{k}={v}" for k, v in (r.get("threshold") or {}).items()) or "-"
        lines.append(
            f"{r.get('expectation')} on {r.get('column') or 'the table'}: observed {observed}; threshold {threshold}"
        )
    return lines


def summarize(events: Iterable[dg.DagsterEvent]) -> dict[str, Any]:
    """Per department and mart: rows, PII masked, checks; read from the run's events (metadata only)."""
    departments: dict[str, dict[str, Any]] = defaultdict(dict)
    marts: dict[str, int | None] = {}
    checks: dict[str, Any] = {"passed": 0, "failed": 0, "failed_names": [], "failed_expectations": {}}
    failures: list[str] = []
    for event in events:
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            mat = event.event_specific_data.materialization  # type: ignore[union-attr]
            key = mat.asset_key.to_user_string()
            md = {k: _value(v) for k, v in mat.metadata.items()}
            if key.startswith("raw_"):
                departments[key[4:]]["landed"] = md.get("dagster/row_count")
            elif key.startswith("deidentified_"):
                d = departments[key[len("deidentified_") :]]
                d["ingested"] = md.get("rows_out")
                d["suppressed"] = md.get("rows_suppressed", 0)
                d["pii_masked"] = md.get("entities_masked")
            elif key.startswith("published_"):
                marts[key[len("published_") :]] = md.get("dagster/row_count")
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"  # type: ignore[union-attr]
            if evaluation.passed:  # type: ignore[union-attr]
                checks["passed"] += 1
            else:
                checks["failed"] += 1
                checks["failed_names"].append(name)
                checks["failed_expectations"][name] = _failed_expectations(dict(evaluation.metadata))  # type: ignore[union-attr]
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            error = event.event_specific_data.error  # type: ignore[union-attr]
            reason = error.message.strip() if error else "failed"
            failures.append(f"{event.step_key}: {reason.splitlines()[0] if reason else 'failed'}")
        elif event.event_type == dg.DagsterEventType.RUN_FAILURE and not failures:
            message = getattr(event, "message", "") or ""
            failures.append(f"run: {message.strip().splitlines()[0] if message.strip() else 'failed'}")
    for d in departments.values():
        if d.get("landed") is not None and d.get("ingested") is not None:
            d["rejected"] = d["landed"] - d["ingested"]
    return {"departments": dict(departments), "marts": marts, "checks": checks, "failures": failures}


def print_summary(summary: dict[str, Any], run_id: str, success: bool) -> None:
    print(f"\nRun {run_id}: {'SUCCESS' if success else 'FAILED'}")
    print(f"{'dataset':<28}{'landed':>10}{'ingested':>10}{'rejected':>10}{'PII masked':>12}")
    for dataset, d in sorted(summary["departments"].items()):
        cells = [d.get(k, "-") for k in ("landed", "ingested", "rejected", "pii_masked")]
        print(f"{dataset:<28}" + "".join(f"{str(c):>{w}}" for c, w in zip(cells, (10, 10, 10, 12))))
    checks = summary["checks"]
    print(f"checks: {checks['passed']} passed, {checks['failed']} failed")
    for name in checks["failed_names"]:
        print(f"  failed check: {name}")
        for line in checks["failed_expectations"].get(name, []):
            print(f"    - {line}")
    for name, rows in sorted(summary["marts"].items()):
        print(f"published {name}: {rows if rows is not None else '?'} rows (data/marts.duckdb)")
    for failure in summary["failures"]:
        print(f"  step failed: {failure}")


def run_events(instance: dg.DagsterInstance, run_id: str) -> list[dg.DagsterEvent]:
    return [e.dagster_event for e in instance.all_logs(run_id) if e.dagster_event is not None]


def submit(job_name: str, run_id: str, tags: dict[str, str]) -> None:
    """Put a run on the instance's queue through Dagster's own `dagster job launch` (the run coordinator)."""
    dagster = Path(sys.executable).with_name("dagster")
    command = [
        str(dagster) if dagster.exists() else "dagster",
        "job",
        "launch",
        "-w",
        str(WORKSPACE),
        "-j",
        job_name,
        "--run-id",
        run_id,
        "--tags",
        json.dumps(tags),
    ]
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise SystemExit(f"could not queue job {job_name!r}:\n  " + "\n  ".join(tail))


def wait_for(instance: dg.DagsterInstance, run_id: str, daemon: Any) -> dg.DagsterRun:
    """Poll until the run ends; keep a daemon serving the queue and fail runs whose worker died."""
    announced: set[str] = set()
    while True:
        fail_dead_runs(instance)
        run = instance.get_run_by_id(run_id)
        assert run is not None
        if run.is_finished:
            return run
        daemon.ensure(instance)
        if run.status == dg.DagsterRunStatus.QUEUED and "queued" not in announced:
            ahead = [
                r for r in runs_in_progress(instance) if r.run_id != run_id and r.status != dg.DagsterRunStatus.QUEUED
            ]
            if ahead:
                print(
                    f"Run {ahead[0].run_id} ({ahead[0].job_name}) is in progress; run {run_id} waits its turn in the queue.",
                    flush=True,
                )
                announced.add("queued")
        elif run.status == dg.DagsterRunStatus.STARTED and "started" not in announced:
            print(f"Run {run_id} started (see it in the UI: make ui).", flush=True)
            announced.add("started")
        time.sleep(_POLL_S)


def run(job_name: str, data_dir: Path, wait: bool = True) -> int:
    os.environ["PIPELINES_DATA_DIR"] = str(data_dir)
    home = instance_home(data_dir)
    with dg.DagsterInstance.get() as instance:
        for dead in fail_dead_runs(instance):
            print(f"Run {dead} had lost its worker process; marked failed.", flush=True)
        run_id = str(uuid.uuid4())
        submit(job_name, run_id, {"pipelines/started_by": "cli"})
        print(f"Queued run {run_id} of {job_name} on the instance at {home}.", flush=True)
        if not wait:
            return 0
        with local_daemon(home, WORKSPACE, instance) as daemon:
            finished = wait_for(instance, run_id, daemon)
        success = finished.status == dg.DagsterRunStatus.SUCCESS
        print_summary(summarize(run_events(instance, run_id)), run_id, success)
        _emit_lineage(instance, run_id, data_dir)
        if not success:
            print("See the run in the UI (make ui) for details.", file=sys.stderr)
        return 0 if success else 1


def _emit_lineage(instance: dg.DagsterInstance, run_id: str, data_dir: Path) -> None:
    """The run's OpenLineage events now (the sensor would, but this command's daemon stops with it)."""
    from pipelines.definitions import build_definitions
    from pipelines.lineage.openlineage import emit_run

    path = emit_run(instance, run_id, data_dir, build_definitions(data_dir).resolve_asset_graph())
    if path is not None:
        print(f"OpenLineage events: {path}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="queue a job (default: everything) on the instance, wait, print a summary")
    run_parser.add_argument("--job", default="integrate_all")
    run_parser.add_argument("--data-dir", type=Path, default=None, help="default: $PIPELINES_DATA_DIR or data/")
    run_parser.add_argument(
        "--no-wait", action="store_true", help="queue the run and return (a daemon must serve the queue)"
    )
    delegated = {  # subcommands whose own parser lives beside the feature
        "audit": ("pipelines.audit", "audit trail: `audit verify` checks every log and its anchors"),
        "requests": ("pipelines.lifecycle.cli", "data subjects' opt-out and erasure requests: add, status"),
        "retention": ("pipelines.lifecycle.cli", "retention: `retention purge` removes what is past its horizon"),
        "dp": ("pipelines.dp.cli", "differential privacy: `dp query` asks an approved DP view, charged to a budget"),
    }
    for name, (_, help_text) in delegated.items():
        sub.add_parser(name, help=help_text, add_help=False).add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args.job, (args.data_dir or default_data_dir()).resolve(), wait=not args.no_wait)
    if args.command in delegated:
        import importlib

        module = importlib.import_module(delegated[args.command][0])
        rest = (
            [args.command, *args.rest] if args.command in {"requests", "retention"} else args.rest
        )  # one module, two commands
        return module.main(rest)
    return 2
