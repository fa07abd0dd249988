"""A data subject's opt-out on the Spark engine: applied in place to the published Parquet tables (the person's rows
deleted, classes recounted, no text scanned again), giving what a full rebuild on Spark gives.

The same small demo as `test_lifecycle.py` (500 base rows), through integrate_all with PIPELINES_ENGINE=spark and the
tables root given as a URL (written and read through Spark's file systems, as on an object store)."""

import os
import shutil

import dagster as dg
import duckdb
import pytest

from pipelines.lifecycle import requests as store
from pipelines.lifecycle.assets import REQUESTS_JOB
from pipelines.lifecycle.inplace import BASIS_METADATA, FULL_REBUILD_TAG
from tests.test_lifecycle import (
    DATASETS,
    MARTS,
    ROWS,
    SEED,
    World,
    add_request,
    application,
    committed_dbt_project,
    pick_employee,
    pseudonyms_of,
    snapshot,
)
from tests.test_spark_dagster import SPARK_ENV

IN_PLACE = ("hr_employees", "finance_expense_claims", "it_security_incidents")  # the tables that hold the person


@pytest.fixture(scope="module")
def spark_world(tmp_path_factory, pipeline_env) -> World:
    from demo.generator import generate

    data_dir = tmp_path_factory.mktemp("spark_lifecycle") / "data"
    generate(data_dir / "landing", rows=ROWS, seed=SEED)
    shutil.rmtree(data_dir / "landing" / "_ground_truth")
    old = {k: os.environ.get(k) for k in [*SPARK_ENV, "PIPELINES_SPARK_TABLES"]}
    os.environ.update(SPARK_ENV)
    os.environ["PIPELINES_SPARK_TABLES"] = (data_dir / "spark").as_uri()
    try:
        w = World(data_dir, committed_dbt_project(data_dir.parent))
        w.baseline = w.run("integrate_all")
        yield w
    finally:
        from pipelines.engines.spark.steps import stop_sessions

        stop_sessions()
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def parquet_differences(w: World, dataset: str) -> tuple[int, int, int]:
    """Rows of the published Parquet table missing from deidentified.duckdb's copy, the reverse, and its rows."""
    location = w.data_dir / "spark" / "deidentified" / dataset
    parquet = f"read_parquet('{location}/*.parquet')"
    with duckdb.connect(str(w.data_dir / "deidentified.duckdb"), read_only=True) as con:
        extra = con.execute(f"SELECT count(*) FROM (FROM {parquet} EXCEPT ALL FROM {dataset})").fetchone()[0]
        missing = con.execute(f"SELECT count(*) FROM (FROM {dataset} EXCEPT ALL FROM {parquet})").fetchone()[0]
        rows = con.execute(f"SELECT count(*) FROM {parquet}").fetchone()[0]
    return extra, missing, rows


def parquet_text(w: World) -> str:
    with duckdb.connect() as con:
        return "\n".join(
            str(row)
            for ds in DATASETS
            for row in con.execute(
                f"SELECT * FROM read_parquet('{w.data_dir / 'spark' / 'deidentified' / ds}/*.parquet')"
            ).fetchall()
        )


def test_opt_out_is_applied_in_place_to_the_spark_tables(spark_world, capsys, monkeypatch):
    from pipelines.engines.spark.steps import SparkTables

    w = spark_world
    for ds in DATASETS:
        assert parquet_differences(w, ds)[:2] == (0, 0), ds
    scans = []  # a department's step that de-identifies its table again (on Spark: exports and scans every row)
    original = SparkTables.deidentify
    monkeypatch.setattr(SparkTables, "deidentify", lambda *a, **kw: scans.append(a[4].dataset) or original(*a, **kw))
    person = pick_employee(w)
    w.opted_out = person
    before = {ds: parquet_differences(w, ds)[2] for ds in IN_PLACE}

    rid = add_request(w, "opt-out", person["email"], capsys)
    results = w.apply_requests()
    assert len(results) == 2  # resolve, then rebuild what holds the person
    w.opt_out_run = results[1]
    assert scans == []
    for ds in IN_PLACE:
        applied = application(results[1], ds)
        assert applied["mode"] == "applied in place" and applied["requests"] == [rid], (ds, applied)
        assert applied["free_text_scanned"] is False and applied["rows_removed"] >= 1, (ds, applied)
        extra, missing, rows = parquet_differences(w, ds)
        assert (extra, missing) == (0, 0), ds  # the Parquet table dbt-spark reads is the checked copy
        assert rows <= before[ds] - applied["rows_removed"], ds
    text = parquet_text(w) + w.all_text("marts.duckdb", MARTS)
    assert not [p for p in pseudonyms_of(person) if p in text]
    assert not [p for p in pseudonyms_of(person) if p in w.all_text("deidentified.duckdb", DATASETS)]
    published = {e.asset_key.to_user_string() for e in results[1].get_asset_materialization_events()}
    assert "published_mart_org_unit_activity" in published  # the mart that counts them (support's holds no one)


def test_in_place_on_spark_gives_what_a_full_rebuild_on_spark_gives(spark_world):
    w = spark_world
    in_place = snapshot(w)
    in_place_parquet = parquet_text(w)
    rebuild = w.run(
        REQUESTS_JOB,
        asset_selection=sorted(w.opt_out_run.dagster_run.asset_selection),
        tags={FULL_REBUILD_TAG: "1"},
    )
    applied = application(rebuild, "hr_employees")
    assert applied["mode"] == "full rebuild" and applied["free_text_scanned"], applied
    full = snapshot(w)
    assert set(full) == set(in_place)
    for name in full:
        assert full[name] == in_place[name], (name, len(full[name]), len(in_place[name]))
    assert all(len(rows) > 0 for rows in full.values())
    assert sorted(parquet_text(w).splitlines()) == sorted(in_place_parquet.splitlines())
    for ds in DATASETS:
        assert parquet_differences(w, ds)[:2] == (0, 0), ds


def test_a_table_built_on_the_other_engine_is_rebuilt_not_changed_in_place(spark_world, capsys, monkeypatch):
    """The basis records the engine: after a switch to DuckDB, the next opt-out rebuilds the tables Spark built (the
    DuckDB engine's own copy is not the one Spark changed), and says why."""
    w = spark_world
    event = w.instance.get_latest_materialization_event(dg.AssetKey("deidentified_hr_employees"))
    assert event.asset_materialization.metadata[BASIS_METADATA].value["engine"] == "spark"
    monkeypatch.setenv("PIPELINES_ENGINE", "duckdb")
    person = pick_employee(w, exclude={w.opted_out["employee_id"]})
    rid = add_request(w, "opt-out", person["email"], capsys)
    results = w.apply_requests()
    applied = application(results[-1], "hr_employees")
    assert applied["mode"] == "full rebuild" and applied["free_text_scanned"], applied
    assert applied["reason"] == "the table was built on the spark engine, this run uses duckdb", applied
    text = w.all_text("deidentified.duckdb", DATASETS) + w.all_text("marts.duckdb", MARTS)
    assert not [p for p in pseudonyms_of(person) + pseudonyms_of(w.opted_out) if p in text]
    assert store.status(store.load(w.paths)[rid])["state"].startswith("applied in run")
