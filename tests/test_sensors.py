"""A landing sensor starts its department's job once per new file."""

import os
import time

import dagster as dg

from pipelines.definitions import build_definitions
from pipelines.resources import PipelineStorage


def test_sensor_requests_one_run_per_new_file(tmp_path):
    defs = build_definitions(tmp_path)
    sensor = defs.resolve_sensor_def("hr_employees_landing_sensor")
    storage = PipelineStorage(data_dir=str(tmp_path))
    instance = dg.DagsterInstance.ephemeral()
    landing = tmp_path / "landing" / "hr"
    landing.mkdir(parents=True)

    result = sensor(dg.build_sensor_context(instance=instance, resources={"storage": storage}))
    assert isinstance(result, dg.SkipReason)

    (landing / "employees_2026-01-31.csv").write_text("employee_id\n")
    (landing / "notes.txt").write_text("not a landing file")
    result = sensor(dg.build_sensor_context(instance=instance, resources={"storage": storage}))
    assert [r.tags["pipelines/landed_file"] for r in result.run_requests] == ["hr/employees_2026-01-31.csv"]
    assert sensor.job_name == "hr_employees_job"

    again = sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor, resources={"storage": storage}))
    assert isinstance(again, dg.SkipReason)  # the same file does not start a second run

    newer = landing / "employees_2026-02-28.csv"
    newer.write_text("employee_id\n")
    later = time.time() + 5
    os.utime(newer, (later, later))
    third = sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor, resources={"storage": storage}))
    assert [r.tags["pipelines/landed_file"] for r in third.run_requests] == ["hr/employees_2026-02-28.csv"]


def _materialize_raw(instance: dg.DagsterInstance, landed: str) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization("raw_hr_employees", metadata={"landed_file": landed}))


def test_sensor_starts_from_the_file_already_ingested(tmp_path):
    """Switched on after `make run`, the sensor does not re-process the file that run ingested."""
    defs = build_definitions(tmp_path)
    sensor = defs.resolve_sensor_def("hr_employees_landing_sensor")
    storage = PipelineStorage(data_dir=str(tmp_path))
    instance = dg.DagsterInstance.ephemeral()
    landing = tmp_path / "landing" / "hr"
    landing.mkdir(parents=True)
    ingested = landing / "employees_2026-01-31.csv"
    ingested.write_text("employee_id\n")
    _materialize_raw(instance, "hr/employees_2026-01-31.csv")

    assert isinstance(sensor(dg.build_sensor_context(instance=instance, resources={"storage": storage})), dg.SkipReason)

    newer = landing / "employees_2026-02-28.csv"
    newer.write_text("employee_id\n")
    later = time.time() + 5
    os.utime(newer, (later, later))
    result = sensor(dg.build_sensor_context(instance=instance, resources={"storage": storage}))
    assert [r.tags["pipelines/landed_file"] for r in result.run_requests] == ["hr/employees_2026-02-28.csv"]


def test_run_ingests_exactly_the_tagged_file(tmp_path):
    """A sensor-started run takes the file named in its tag, even when a newer one has landed since."""
    import pytest

    from pipelines.contracts import load_contracts
    from pipelines.defs.departments import landed_file_for_run

    hr = next(c for c in load_contracts() if c.dataset == "hr_employees")
    landing = tmp_path / "landing"
    (landing / "hr").mkdir(parents=True)
    first, second = landing / "hr" / "employees_2026-01-31.csv", landing / "hr" / "employees_2026-02-28.csv"
    first.write_text("x\n")
    second.write_text("x\n")
    os.utime(second, (time.time() + 5, time.time() + 5))
    assert landed_file_for_run(landing, hr, "hr/employees_2026-01-31.csv") == first
    assert landed_file_for_run(landing, hr, None) == second
    first.unlink()
    with pytest.raises(dg.Failure, match="no longer exists"):
        landed_file_for_run(landing, hr, "hr/employees_2026-01-31.csv")
