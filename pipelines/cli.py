"""Command line: run a job on the local instance and print what happened, per department."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import dagster as dg

from pipelines.resources import PROJECT_ROOT, default_data_dir


def _instance(data_dir: Path) -> dg.DagsterInstance:
    """The persistent instance under `$DAGSTER_HOME` (default `data/dagster_home`), so runs show in the UI."""
    home = Path(os.environ.get("DAGSTER_HOME") or data_dir / "dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def _value(entry: Any) -> Any:
    return getattr(entry, "value", entry)


def summarize(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    """Per department and mart: rows, PII masked, checks; read from the run's events (metadata only)."""
    departments: dict[str, dict[str, Any]] = defaultdict(dict)
    marts: dict[str, int | None] = {}
    checks = {"passed": 0, "failed": 0, "failed_names": []}
    failures: list[str] = []
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            mat = event.event_specific_data.materialization  # type: ignore[union-attr]
            key = mat.asset_key.to_user_string()
            md = {k: _value(v) for k, v in mat.metadata.items()}
            if key.startswith("raw_"):
                departments[key[4:]]["landed"] = md.get("dagster/row_count")
            elif key.startswith("deidentified_"):
                d = departments[key[len("deidentified_"):]]
                d["ingested"] = md.get("rows_out")
                d["suppressed"] = md.get("rows_suppressed", 0)
                d["pii_masked"] = md.get("entities_masked")
            elif key.startswith("published_"):
                marts[key[len("published_"):]] = md.get("dagster/row_count")
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data  # type: ignore[assignment]
            name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"  # type: ignore[union-attr]
            if evaluation.passed:  # type: ignore[union-attr]
                checks["passed"] += 1
            else:
                checks["failed"] += 1
                checks["failed_names"].append(name)
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            error = event.event_specific_data.error  # type: ignore[union-attr]
            failures.append(f"{event.step_key}: {error.message.strip().splitlines()[0] if error else 'failed'}")
    for dataset, d in departments.items():
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
    for name, rows in sorted(summary["marts"].items()):
        print(f"published {name}: {rows if rows is not None else '?'} rows (data/marts.duckdb)")
    for failure in summary["failures"]:
        print(f"  step failed: {failure}")


def run(job_name: str, data_dir: Path) -> int:
    os.environ["PIPELINES_DATA_DIR"] = str(data_dir)
    from pipelines.definitions import build_definitions

    defs = build_definitions(data_dir)
    instance = _instance(data_dir)
    job = defs.resolve_job_def(job_name)
    result = job.execute_in_process(
        instance=instance,
        raise_on_error=False,
        tags={"pipelines/started_by": "cli"},
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},  # the UI keeps the full debug log
    )
    print_summary(summarize(result), result.run_id, result.success)
    if not result.success:
        print("See the run in the UI (make ui) for details.", file=sys.stderr)
    return 0 if result.success else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="run a job (default: everything) and print a summary")
    run_parser.add_argument("--job", default="integrate_all")
    run_parser.add_argument("--data-dir", type=Path, default=None, help="default: $PIPELINES_DATA_DIR or data/")
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args.job, (args.data_dir or default_data_dir()).resolve())
    return 2
