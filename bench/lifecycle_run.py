"""Measure: time from a request being recorded to its proven absence, and its cost against a full run, side by side.

    python -m bench.lifecycle_run --rows 100000 --workdir /tmp/lifecycle-bench --out figures.json

`measure(rows, seed, workdir)` is what `make bench` calls (section 7, in a process of its own); it returns seconds,
ratios and step times, never a personal value. The full run and the request's runs execute back to back in one
process on one Dagster instance, so the ratio compares like with like on a shared machine.
"""

import argparse
import json
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any

BENCH_KEY = "lifecycle-bench-pseudonym-key-" + "0" * 40


def _steps(instance, run_id: str) -> dict[str, float]:
    """Step durations (STEP_START to STEP_SUCCESS/FAILURE) from the run's event log."""
    import dagster as dg

    started, steps = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            started[event.step_key] = entry.timestamp
        elif (
            event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE)
            and event.step_key in started
        ):
            steps[event.step_key] = round(entry.timestamp - started[event.step_key], 2)
    return steps


def _run(defs, instance, job: str, **kwargs) -> tuple[float, dict[str, float]]:
    started = time.perf_counter()
    result = defs.resolve_job_def(job).execute_in_process(instance=instance, raise_on_error=False, **kwargs)
    if not result.success:
        raise RuntimeError(
            f"{job} failed: " + "; ".join(e.message or "" for e in result.all_events if e.is_failure)[:500]
        )
    return time.perf_counter() - started, _steps(instance, result.run_id)


def _one_employee(data_dir: Path) -> str:
    """An employee with rows in HR, Finance and IT (the widest rebuild a person of the demo can cause)."""
    import duckdb

    with duckdb.connect(str(data_dir / "raw.duckdb"), read_only=True) as con:
        return con.execute(
            "SELECT email FROM hr_employees WHERE email IN (SELECT reporter_email FROM it_security_incidents) "
            "AND employee_id IN (SELECT employee_id FROM finance_expense_claims) ORDER BY employee_id LIMIT 1"
        ).fetchone()[0]


def measure(rows: int = 100_000, seed: int = 1, workdir: Path = Path("/tmp/lifecycle-bench")) -> dict[str, Any]:
    """Full run, then one opt-out applied as the sensor does it (its run requests, in order); seconds and steps of each."""
    import dagster as dg

    from demo.generator import generate
    from pipelines.contracts import load_contracts
    from pipelines.definitions import build_definitions
    from pipelines.lifecycle import requests as store
    from pipelines.lifecycle.assets import REQUESTS_JOB, plan_runs
    from pipelines.lifecycle.inplace import APPLIED_METADATA
    from pipelines.privacy.keys import load_key

    os.environ.setdefault("PIPELINES_PSEUDONYM_KEY", BENCH_KEY)
    data_dir = Path(workdir) / f"data_{rows}"
    shutil.rmtree(data_dir, ignore_errors=True)
    started = time.perf_counter()
    generate(data_dir / "landing", rows=rows, seed=seed)
    generated = time.perf_counter() - started
    defs, instance = build_definitions(data_dir), dg.DagsterInstance.ephemeral()
    full, full_steps = _run(defs, instance, "integrate_all")
    paths = store.Paths.under(data_dir)
    key = load_key("PIPELINES_PSEUDONYM_KEY", data_dir / "keys" / "pseudonym.key")
    recorded = time.perf_counter()
    rid, _ = store.add(
        paths,
        key,
        load_contracts(),
        kind="opt-out",
        identifier_type="EMAIL_ADDRESS",
        value=_one_employee(data_dir),
        reason="benchmark",
        requested_by="bench",
    )
    phases = []
    graph = defs.get_repository_def().asset_graph
    while runs := plan_runs(store.active(paths), graph):  # what subject_requests_sensor returns, tick after tick
        for request in runs:
            seconds, steps = _run(
                defs, instance, REQUESTS_JOB, asset_selection=request.asset_selection, tags=request.tags
            )
            phases.append(
                {
                    "run": request.run_key.split(":")[0],
                    "assets": sorted(k.to_user_string() for k in request.asset_selection or []),
                    "seconds": round(seconds, 1),
                    "steps": steps,
                }
            )
    proven = time.perf_counter() - recorded
    applied = {}  # how each de-identified table applied the request: in place (rows removed, newly withheld) or rebuilt
    for contract in load_contracts():
        event = instance.get_latest_materialization_event(dg.AssetKey(f"deidentified_{contract.dataset}"))
        entry = event.asset_materialization.metadata.get(APPLIED_METADATA) if event else None
        if entry is not None and rid in entry.value.get("requests", []):
            applied[contract.dataset] = entry.value
    record = store.load(paths)[rid]
    status = store.status(record)
    resolution = record.get("resolution") or {}
    return {
        "rows_per_department": rows,
        "seed": seed,
        "generate_s": round(generated, 1),
        "full_run_s": round(full, 1),
        "full_run_steps": full_steps,
        "request_to_proven_absence_s": round(proven, 1),
        "runs": phases,
        "cost_vs_full_run": round(proven / full, 3),
        "person_rows": resolution.get("rows", {}),
        "person_mentioned_in": resolution.get("mentions", []),
        "applied": applied,
        "proven_absent_in": sorted(status["proven_absent_in"]),
        "state": status["state"].split(";")[0].split(" in run")[0],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "note": "runs executed in process back to back; a deployed sensor adds up to two ticks (30 s each) and the queue's wait",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lifecycle-bench"))
    parser.add_argument("--out", type=Path, help="write the figures here as JSON (stdout carries dbt's log)")
    args = parser.parse_args()
    figures = json.dumps(measure(args.rows, args.seed, args.workdir), indent=1)
    if args.out:
        args.out.write_text(figures, encoding="utf-8")
    else:
        print(figures)


if __name__ == "__main__":
    main()
