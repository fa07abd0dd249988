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
    landing = tmp_path / "landing" / "hr"
    landing.mkdir(parents=True)

    result = sensor(dg.build_sensor_context(resources={"storage": storage}))
    assert isinstance(result, dg.SkipReason)

    (landing / "employees_2026-01-31.csv").write_text("employee_id\n")
    (landing / "notes.txt").write_text("not a landing file")
    result = sensor(dg.build_sensor_context(resources={"storage": storage}))
    assert [r.tags["pipelines/landed_file"] for r in result.run_requests] == ["employees_2026-01-31.csv"]
    assert sensor.job_name == "hr_employees_job"

    again = sensor(dg.build_sensor_context(cursor=result.cursor, resources={"storage": storage}))
    assert isinstance(again, dg.SkipReason)  # the same file does not start a second run

    newer = landing / "employees_2026-02-28.csv"
    newer.write_text("employee_id\n")
    later = time.time() + 5
    os.utime(newer, (later, later))
    third = sensor(dg.build_sensor_context(cursor=result.cursor, resources={"storage": storage}))
    assert [r.tags["pipelines/landed_file"] for r in third.run_requests] == ["employees_2026-02-28.csv"]
