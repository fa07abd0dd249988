"""Streaming de-identification (DuckDB in, DuckDB out, a chunk at a time): many chunks give what the in-memory frame
(one chunk, through the same code) gives."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from bench.data import bench_context, prepare
from pipelines.ingest import SOURCE_FILE_COLUMN, quote_ident
from pipelines.privacy import classify
from pipelines.privacy import deidentify as deid


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare(tmp_path_factory.mktemp("streaming"), 400, 7)  # 400 people: HR needs blanking to reach k


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(object).where(frame.notna(), None).astype(str).reset_index(drop=True)


@pytest.mark.parametrize(
    "dataset", ["hr_employees", "finance_expense_claims", "support_tickets", "it_security_incidents"]
)
def test_streamed_table_equals_in_memory_result(prepared, dataset):
    contract, ctx = prepared.contract(dataset), bench_context()
    expected = deid.deidentify_frame(prepared.frame(dataset), contract, ctx, known=prepared.known)
    target = duckdb.connect()
    streamed = deid.deidentify_table(
        prepared.con,
        dataset,
        target,
        dataset,
        contract,
        ctx,
        known=prepared.known,
        chunk_rows=97,  # many chunks (and a short last one)
        exclude=(SOURCE_FILE_COLUMN,),
    )
    table = target.execute(f"SELECT * FROM {quote_ident(dataset)}").df()
    pd.testing.assert_frame_equal(_comparable(table), _comparable(expected.frame))
    assert (streamed.rows_in, streamed.rows_out, streamed.rows_suppressed) == (
        expected.rows_in,
        expected.rows_out,
        expected.rows_suppressed,
    )
    assert streamed.k_anonymity == expected.k_anonymity
    assert [r.to_dict() for r in streamed.columns] == [r.to_dict() for r in expected.columns]
    assert streamed.classification == expected.classification
    for column, scan in expected.residual_scan["columns"].items():
        assert streamed.residual_scan["columns"][column]["residual"] == scan["residual"]
    assert target.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE '%staging%'").fetchone()[0] == 0
    if dataset == "hr_employees":
        assert expected.k_anonymity["blanked"]  # the adaptive path was exercised


def test_a_failing_chunk_leaves_the_published_table_as_it_was(prepared, monkeypatch):
    contract, ctx = prepared.contract("finance_expense_claims"), bench_context()
    target = duckdb.connect()
    target.execute("CREATE TABLE finance_expense_claims AS SELECT 'last good version' AS note")
    calls = {"n": 0}
    original = deid.deidentify_batch

    def fail_on_third_chunk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise deid.ResidualPIIError(
                "finance_expense_claims: personal data remains after masking (column 'memo': PERSON x1)"
            )
        return original(*args, **kwargs)

    monkeypatch.setattr(deid, "deidentify_batch", fail_on_third_chunk)
    with pytest.raises(deid.ResidualPIIError):
        deid.deidentify_table(
            prepared.con,
            "finance_expense_claims",
            target,
            "finance_expense_claims",
            contract,
            ctx,
            known=prepared.known,
            chunk_rows=100,
            exclude=(SOURCE_FILE_COLUMN,),
        )
    assert target.execute("SELECT note FROM finance_expense_claims").fetchall() == [("last good version",)]
    assert target.execute("SELECT count(*) FROM duckdb_tables()").fetchone()[0] == 1  # no staging table left


def test_chunk_rows_setting(monkeypatch):
    from pipelines.resources import CHUNK_ROWS_ENV, chunk_rows_from_env

    monkeypatch.delenv(CHUNK_ROWS_ENV, raising=False)
    assert chunk_rows_from_env() == 100_000
    monkeypatch.setenv(CHUNK_ROWS_ENV, "250_000")
    assert chunk_rows_from_env() == 250_000
    monkeypatch.setenv(CHUNK_ROWS_ENV, "lots")
    with pytest.raises(ValueError, match=CHUNK_ROWS_ENV):
        chunk_rows_from_env()


def test_an_empty_table_streams_to_an_empty_table_with_its_columns(prepared):
    contract, ctx = prepared.contract("support_tickets"), bench_context()
    source = duckdb.connect()
    source.execute(
        "CREATE TABLE support_tickets AS SELECT * FROM (SELECT 1) WHERE false"
    )  # placeholder, replaced below
    frame = prepared.frame("support_tickets").iloc[0:0]
    source.register("empty_frame", frame)
    source.execute("CREATE OR REPLACE TABLE support_tickets AS SELECT * FROM empty_frame")
    target = duckdb.connect()
    result = deid.deidentify_table(
        source, "support_tickets", target, "support_tickets", contract, ctx, known=prepared.known
    )
    assert (result.rows_in, result.rows_out) == (0, 0)
    published = [c.name for c in contract.published_columns]
    assert [r[0] for r in target.execute("SELECT column_name FROM (DESCRIBE support_tickets)").fetchall()] == published


def _classify_in_background(monkeypatch) -> None:
    monkeypatch.setenv("PIPELINES_NLP_PROCESSES", "2")
    monkeypatch.setattr(classify, "BACKGROUND_MIN_VALUES", 1)
    monkeypatch.setattr(classify, "BACKGROUND_MIN_CELLS", 1)


def test_streamed_table_with_classification_in_a_second_process_equals_in_memory(prepared, monkeypatch):
    contract, ctx = prepared.contract("finance_expense_claims"), bench_context()
    expected = deid.deidentify_frame(prepared.frame("finance_expense_claims"), contract, ctx, known=prepared.known)
    _classify_in_background(monkeypatch)
    target = duckdb.connect()
    streamed = deid.deidentify_table(
        prepared.con,
        "finance_expense_claims",
        target,
        "finance_expense_claims",
        contract,
        ctx,
        known=prepared.known,
        chunk_rows=150,
        exclude=(SOURCE_FILE_COLUMN,),
    )
    assert streamed.classification == expected.classification
    table = target.execute("SELECT * FROM finance_expense_claims").df()
    pd.testing.assert_frame_equal(_comparable(table), _comparable(expected.frame))


def test_undeclared_pii_found_in_the_background_publishes_nothing(prepared, monkeypatch):
    from pipelines.privacy.classify import UndeclaredPIIError

    contract, ctx = prepared.contract("finance_expense_claims"), bench_context()
    prepared.con.execute(
        "CREATE OR REPLACE TABLE claims_with_emails AS SELECT * REPLACE ('user' || row_number() OVER () || '.name@gmail.com' AS merchant) "
        "FROM finance_expense_claims"
    )
    target = duckdb.connect()
    target.execute("CREATE TABLE finance_expense_claims AS SELECT 'last good version' AS note")
    _classify_in_background(monkeypatch)
    with pytest.raises(UndeclaredPIIError, match="'merchant'") as err:
        deid.deidentify_table(
            prepared.con,
            "claims_with_emails",
            target,
            "finance_expense_claims",
            contract,
            ctx,
            known=prepared.known,
            chunk_rows=100,
            exclude=(SOURCE_FILE_COLUMN,),
        )
    assert "@gmail.com" not in str(err.value)
    assert target.execute("SELECT note FROM finance_expense_claims").fetchall() == [("last good version",)]
    assert target.execute("SELECT count(*) FROM duckdb_tables()").fetchone()[0] == 1  # no staging table left
