"""The Spark section of the bench resumes a measurement too long for one sitting: each stage is recorded as it ends,
a rerun measures only what is missing, on the same generated data (checked), and the report says what is pending."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import spark as bench_spark

ROOT = Path(__file__).resolve().parents[1]
DATA = {ds: {"rows": 100, "digest": "0" * 16} for ds in ("finance_expense_claims", "hr_employees")}
SETTINGS = {"rows": 100, "base_rows": 100, "seed": 7}


def stage(seconds: float, rows: int, **extra) -> dict:
    return {"seconds": seconds, "rows": rows, "started": "2026-12-04 20:00", "revision": "abc1234",
            "load_before": 0.1, "machine": "2 x test", **extra}  # fmt: skip


def test_a_resume_on_other_data_or_settings_is_refused(tmp_path):
    path = tmp_path / "state.json"
    state = bench_spark.load_state(path, SETTINGS, DATA)
    bench_spark.save_state(path, state)
    assert bench_spark.load_state(path, SETTINGS, DATA) == state
    other = {**DATA, "hr_employees": {"rows": 100, "digest": "1" * 16}}
    with pytest.raises(bench_spark.StateMismatch, match="other generated data .*hr_employees"):
        bench_spark.load_state(path, SETTINGS, other)
    with pytest.raises(bench_spark.StateMismatch, match="seed=7"):
        bench_spark.load_state(path, {**SETTINGS, "seed": 8}, DATA)


def test_the_report_of_a_partial_measurement_shows_what_is_measured_and_what_is_pending():
    state = {"version": 1, **SETTINGS, "data": DATA, "engines": {}}
    state["engines"]["duckdb"] = {
        "stages": {"deidentify hr_employees": stage(2.0, 100), "deidentify finance_expense_claims": stage(4.0, 100)},
        "failed": {},
    }
    phases = {"table_scans": 1.0, "batches": 2.0, "classification_wait": 0.1, "k_anonymity_and_write": 1.0}
    state["engines"]["spark_1"] = {
        "stages": {"deidentify hr_employees": stage(5.0, 100, phases=phases, worker_peak_rss_mib=400)},
        "failed": {},
    }
    text = bench_spark.report(state)
    assert text.startswith("<!-- spark-engine-100:begin -->") and text.endswith("<!-- spark-engine-100:end -->")
    assert "| deidentify hr_employees | 100 | 2.0 | 50 | 5.0 | 20 | - | - | - |" in text
    assert "**Not yet complete**" in text
    assert "spark_1: finance_expense_claims; spark_2: finance_expense_claims, hr_employees" in text
    assert "Projection" not in text  # needs both Spark engines complete
    assert bench_spark.complete(state, "duckdb") and not bench_spark.complete(state, "spark_1")


def bench(tmp_path: Path, *args: str) -> dict:
    subprocess.run(
        [sys.executable, "-m", "bench.spark", "--rows", "150", "--workdir", str(tmp_path / "work"),
         "--state", str(tmp_path / "state.json"), "--out", str(tmp_path / "B.md"), *args],
        cwd=ROOT, check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return json.loads((tmp_path / "state.json").read_text())


def test_a_rerun_with_the_state_measures_only_what_is_missing(tmp_path):
    first = bench(tmp_path, "--engines", "duckdb", "--datasets", "hr_employees")
    measured = first["engines"]["duckdb"]["stages"]
    assert set(measured) == {"known_identifiers", "deidentify hr_employees"}
    assert "Not yet complete" in (tmp_path / "B.md").read_text()
    second = bench(tmp_path, "--engines", "duckdb")
    stages = second["engines"]["duckdb"]["stages"]
    assert stages["deidentify hr_employees"] == measured["deidentify hr_employees"]  # not measured again
    assert stages["known_identifiers"] == measured["known_identifiers"]
    assert {f"deidentify {ds}" for ds in second["data"]} <= set(stages)
    assert second["data"] == first["data"]
    report = (tmp_path / "B.md").read_text()
    assert "duckdb:" not in report.split("Not yet complete")[1]  # DuckDB is complete; Spark is pending
