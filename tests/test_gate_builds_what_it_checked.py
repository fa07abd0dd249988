"""The approval gate checks exactly what is built: a mart edited after the graph was loaded (no re-parse) is
compiled for the run, refused, and nothing is built."""

import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest

from pipelines.defs.integration import dbt_executable
from pipelines.resources import DBT_PROJECT_DIR
from tests.conftest import run_job


@pytest.fixture()
def project_copy(tmp_path) -> Path:
    """A parsed copy of the shipped dbt project (its manifest is what the asset graph is drawn from)."""
    dest = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, dest, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    subprocess.run(
        [dbt_executable(), "parse", "--quiet", "--project-dir", str(dest), "--profiles-dir", str(dest)],
        cwd=dest,
        check=True,
        capture_output=True,
    )
    return dest


@pytest.mark.slow
def test_mart_edited_after_parse_is_refused_and_nothing_built(pipeline_run, project_copy, tmp_path):
    from pipelines.definitions import build_definitions

    data_dir = tmp_path / "data"
    shutil.copytree(pipeline_run.data_dir, data_dir, ignore=shutil.ignore_patterns("dagster_home", "dbt_runs"))
    warehouse = data_dir / "warehouse.duckdb"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        before = con.execute("select count(*), sum(headcount) from mart_org_unit_activity").fetchone()
    defs = build_definitions(data_dir, dbt_project_dir=project_copy)  # graph from the manifest parsed above

    # the edit lands after the manifest was parsed: IT incidents joined on job_family, which no approval allows
    mart = project_copy / "models" / "marts" / "mart_org_unit_activity.sql"
    sql = mart.read_text()
    joined = "employees.email_key = incidents_per_employee.email_key"
    assert joined in sql
    mart.write_text(sql.replace(joined, "employees.job_family = incidents_per_employee.email_key"))

    result, _ = run_job(data_dir, "integrate_all", defs=defs)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure and e.step_key == "approved_models")
    message = failure.event_specific_data.error.message
    assert "violate the approval policy" in message and "mart_org_unit_activity" in message
    built = [
        e.asset_key.to_user_string() for e in result.get_asset_materialization_events() for e in [e.materialization]
    ]
    assert not [
        k for k in built if k.startswith(("mart_", "stg_", "published_"))
    ]  # nothing from dbt, nothing published
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("select count(*), sum(headcount) from mart_org_unit_activity").fetchone() == before
