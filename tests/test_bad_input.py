"""Bad landed files, tried as a new user would: each is rejected with a clear, value-free message,
the landed file stays, a copy goes to quarantine with a reason, and the marts keep their last good version."""

import csv
import gzip
import hashlib
import io
import json
import os
import shutil
import time
from pathlib import Path

import duckdb
import pytest

from tests.conftest import run_job

HR_HEADER = "employee_id,full_name,email,phone,ssn,date_of_birth,gender,postcode,job_title,org_unit,salary,hire_date"


@pytest.fixture(scope="module")
def good_state(pipeline_run):
    assert pipeline_run.result.success
    return pipeline_run.data_dir


@pytest.fixture
def deployment(good_state, tmp_path):
    """A copy of a successful deployment; returns (data_dir, path of the good HR file)."""
    data_dir = tmp_path / "data"
    shutil.copytree(good_state, data_dir, ignore=shutil.ignore_patterns("dagster_home"))
    hr = next((data_dir / "landing" / "hr").glob("employees_*.csv"))
    return data_dir, hr


def marts_snapshot(data_dir: Path) -> dict:
    with duckdb.connect(str(data_dir / "marts.duckdb"), read_only=True) as con:
        return {
            t: con.execute(f"select * from {t} order by all").fetchall()
            for t in ("mart_org_unit_activity", "mart_support_satisfaction")
        }


def land(data_dir: Path, name: str, content: bytes) -> Path:
    """Land a new HR file, newer than the last one."""
    path = data_dir / "landing" / "hr" / name
    path.write_bytes(content)
    later = time.time() + 10
    os.utime(path, (later, later))
    return path


def good_lines(hr: Path, n: int = 2000) -> list[str]:
    return hr.read_text(encoding="utf-8").splitlines()[: n + 1]


def failure_text(result) -> str:
    return (
        "\n".join(
            (e.event_specific_data.error.message if getattr(e.event_specific_data, "error", None) else "")
            + (e.message or "")
            for e in result.all_events
            if e.is_failure or e.event_type_value in ("ASSET_CHECK_EVALUATION",)
        )
        + "\n"
        + "\n".join(
            str(e.event_specific_data.description or "")
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
        )
    )


def raw_snapshot(data_dir: Path) -> tuple:
    """The raw HR table's content and the tables beside it (a rejected batch leaves no staged table)."""
    with duckdb.connect(str(data_dir / "raw.duckdb")) as con:  # default config: the pipeline's own connections use it
        tables = sorted(r[0] for r in con.execute("select table_name from duckdb_tables()").fetchall())
        return tables, con.execute(
            "select md5(string_agg(t::varchar, '|' order by t::varchar)) from hr_employees t"
        ).fetchone()[0]


def reject(data_dir: Path, landed: Path) -> str:
    before = marts_snapshot(data_dir)
    raw_before = raw_snapshot(data_dir)
    digest = hashlib.sha256(landed.read_bytes()).hexdigest()
    result, _ = run_job(data_dir, "hr_employees_job")
    assert not result.success
    assert landed.exists() and hashlib.sha256(landed.read_bytes()).hexdigest() == digest  # the landed file stays
    quarantined = list((data_dir / "quarantine" / "hr_employees").glob(f"*_{landed.name}"))
    assert quarantined, "no quarantine copy"
    reason = json.loads((quarantined[0] / "reason.json").read_text())
    assert reason["file"] == landed.name and reason["sha256"] == digest and reason["problem"]
    assert marts_snapshot(data_dir) == before  # downstream untouched
    assert raw_snapshot(data_dir) == raw_before  # the raw table keeps its last good version
    return failure_text(result) + "\n" + reason["message"]


def test_truncated_csv(deployment):
    data_dir, hr = deployment
    text = hr.read_bytes()
    message = reject(data_dir, land(data_dir, "employees_2026-02-28.csv", text[: len(text) // 2 - 7]))
    assert "not a well-formed CSV" in message and "line" in message


def test_wrong_encoding(deployment):
    data_dir, hr = deployment
    lines = good_lines(hr)
    lines[5] = lines[5].replace(lines[5].split(",")[1], "Zoë Müller")
    message = reject(data_dir, land(data_dir, "employees_2026-02-28.csv", "\n".join(lines).encode("latin-1")))
    assert "not valid utf-8" in message and "line 6" in message and "Müller" not in message


def test_missing_column(deployment):
    data_dir, hr = deployment
    lines = [",".join(line.split(",")[:-1]) for line in good_lines(hr)]  # hire_date dropped
    message = reject(data_dir, land(data_dir, "employees_2026-02-28.csv", "\n".join(lines).encode()))
    assert "missing column(s) 'hire_date'" in message


def test_extra_column_with_sql_and_formula_looking_name(deployment):
    data_dir, hr = deployment
    lines = good_lines(hr)
    lines = [lines[0] + ',"x; DROP TABLE hr_employees;--",=HYPERLINK(""http://evil"")'] + [
        line + ",a,b" for line in lines[1:]
    ]
    message = reject(data_dir, land(data_dir, "employees_2026-02-28.csv", "\n".join(lines).encode()))
    assert "undeclared column(s)" in message and "DROP TABLE" in message  # named, safely quoted


def test_type_drift(deployment):
    data_dir, hr = deployment
    lines = good_lines(hr)
    for i in (3, 9):
        cells = lines[i].split(",")
        cells[-2] = "eighty thousand"  # salary
        lines[i] = ",".join(cells)
    message = reject(data_dir, land(data_dir, "employees_2026-02-28.csv", "\n".join(lines).encode()))
    assert "'salary' expects integer: 2 value(s) do not convert" in message


@pytest.mark.parametrize(
    "content, expected", [(b"", "is empty (0 bytes)"), ((HR_HEADER + "\n").encode(), "no data rows")]
)
def test_empty_file(deployment, content, expected):
    data_dir, _ = deployment
    assert expected in reject(data_dir, land(data_dir, "employees_2026-02-28.csv", content))


def test_duplicated_keys_fail_quality_suite(deployment):
    data_dir, hr = deployment
    lines = good_lines(hr)
    lines.append(lines[1])
    message = reject(data_dir, land(data_dir, "employees_2026-02-28.csv", "\n".join(lines).encode()))
    assert "expect_column_values_to_be_unique(employee_id)" in message
    assert lines[1].split(",")[0] not in message  # the duplicated id itself is not shown


def test_single_huge_cell(deployment):
    data_dir, hr = deployment
    lines = good_lines(hr)
    cells = lines[4].split(",")
    cells[8] = "x" * 200_000  # job_title
    lines[4] = ",".join(cells)
    message = reject(data_dir, land(data_dir, "employees_2026-02-28.csv", "\n".join(lines).encode()))
    assert "a cell in column 'job_title' at line 5 is longer than the contract's limit of 65536 bytes" in message


def test_nul_bytes_in_ids_rejected(deployment):
    """Once accepted, changing those employees' pseudonyms and breaking their joins."""
    data_dir, hr = deployment
    lines = good_lines(hr)
    for i in (3, 8, 13):
        lines[i] = lines[i][:4] + "\x00" + lines[i][4:]
    message = reject(data_dir, land(data_dir, "employees_2026-02-28.csv", "\n".join(lines).encode()))
    assert "NUL bytes in 3 cell(s); the first at line 4, column 'employee_id'" in message


def test_gzip_file_rejected(deployment):
    data_dir, hr = deployment
    message = reject(data_dir, land(data_dir, "employees_2026-02-28.csv", gzip.compress(hr.read_bytes())))
    assert "is a gzip-compressed file, not a CSV; decompress it before landing" in message


def raw_rows(data_dir: Path) -> list:
    with duckdb.connect(str(data_dir / "raw.duckdb"), read_only=True) as con:
        return con.execute("select * exclude (_source_file) from hr_employees").fetchall()


def test_excel_style_reordered_export_gives_the_clean_result(deployment):
    """BOM, CRLF and another column order: the same raw table and the same marts as the clean file."""
    data_dir, hr = deployment
    before_raw, before_marts = raw_rows(data_dir), marts_snapshot(data_dir)
    rows = list(csv.reader(io.StringIO(hr.read_text(encoding="utf-8"))))
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows([row[7:] + row[:7] for row in rows])
    land(data_dir, "employees_2026-02-28.csv", b"\xef\xbb\xbf" + out.getvalue().encode("utf-8"))
    result, _ = run_job(data_dir, "hr_employees_job")
    assert result.success, failure_text(result)
    assert raw_rows(data_dir) == before_raw
    assert marts_snapshot(data_dir) == before_marts


def test_formula_and_sql_values_are_data_not_code(deployment):
    """Such values are just strings: ingested, masked like any name, never executed, never published."""
    data_dir, hr = deployment
    lines = good_lines(hr)
    for i, evil in ((2, "=cmd|' /C calc'!A0"), (3, "Robert'); DROP TABLE hr_employees;--")):
        cells = lines[i].split(",")
        cells[1] = '"' + evil.replace('"', '""') + '"'
        lines[i] = ",".join(cells)
    land(data_dir, "employees_2026-02-28.csv", "\n".join(lines).encode())
    result, _ = run_job(data_dir, "hr_employees_job")
    assert result.success
    with duckdb.connect(str(data_dir / "raw.duckdb"), read_only=True) as con:
        assert con.execute("select count(*) from hr_employees where full_name like '%DROP TABLE%'").fetchone()[0] == 1
    with duckdb.connect(str(data_dir / "marts.duckdb"), read_only=True) as con:
        text = str(con.execute("select * from mart_org_unit_activity").fetchall())
    assert "DROP TABLE" not in text and "cmd|" not in text


def test_rerun_after_fix_succeeds(deployment):
    data_dir, hr = deployment
    bad = land(data_dir, "employees_2026-02-28.csv", hr.read_bytes()[:5000])
    assert not run_job(data_dir, "hr_employees_job")[0].success
    bad.write_bytes(hr.read_bytes())  # the department re-exports the file
    assert run_job(data_dir, "hr_employees_job")[0].success


def test_department_run_after_anothers_rejected_batch_uses_its_last_good_raw(deployment):
    """Finance's bad batch is rejected; HR's own run then reads Finance's last good raw table (the one the
    known-identifier index names), not the rejected rows."""
    data_dir, _ = deployment
    claims = next((data_dir / "landing" / "finance").glob("expense_claims_*.csv"))
    with duckdb.connect(str(data_dir / "raw.duckdb")) as con:
        finance_before = con.execute(
            "select md5(string_agg(t::varchar, '|' order by t::varchar)) from finance_expense_claims t"
        ).fetchone()[0]
    lines = claims.read_text(encoding="utf-8").splitlines()
    bad = data_dir / "landing" / "finance" / "expense_claims_2099-01-01.csv"
    bad.write_text("\n".join(lines + [lines[1]]) + "\n", encoding="utf-8")  # a duplicated claim id
    later = time.time() + 10
    os.utime(bad, (later, later))
    finance, instance = run_job(data_dir, "finance_expense_claims_job")
    assert not finance.success
    hr, _ = run_job(data_dir, "hr_employees_job", instance=instance)
    assert hr.success, failure_text(hr)
    with duckdb.connect(str(data_dir / "raw.duckdb")) as con:
        assert (
            con.execute(
                "select md5(string_agg(t::varchar, '|' order by t::varchar)) from finance_expense_claims t"
            ).fetchone()[0]
            == finance_before
        )
    index = next(
        e.materialization
        for e in hr.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "known_identifiers"
    )
    assert (
        index.metadata["built_from_runs"].value["raw_finance_expense_claims"] != finance.run_id
    )  # not the rejected run
