"""The Dagster job on the Spark engine (PIPELINES_ENGINE=spark, local[2]): the same graph, checks, metadata and audit
as the DuckDB job, and the same marts, row for row, on the same data and key."""

import json
import os
import shutil

import dagster as dg
import duckdb
import pandas as pd
import pytest

from tests.conftest import PipelineRun, run_job

MARTS = ["mart_org_unit_activity", "mart_support_satisfaction"]
DATASETS = ["hr_employees", "finance_expense_claims", "it_security_incidents", "support_tickets"]
SPARK_ENV = {"PIPELINES_ENGINE": "spark", "PIPELINES_SPARK_MASTER": "local[2]", "PIPELINES_SPARK_CONF": ""}


@pytest.fixture()
def spark_engine(monkeypatch):
    for key, value in SPARK_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PIPELINES_SPARK_TABLES", raising=False)


@pytest.fixture(scope="module")
def spark_job_run(tmp_path_factory, demo_landing, pipeline_env) -> PipelineRun:
    """integrate_all on the Spark engine, on the landed files and key of the DuckDB run (`pipeline_run`). The tables
    root is given as a URL, as an object store's would be (s3a://...), so every table is written and read through
    Spark's file systems; it is the local directory `<data>/spark`, which the tests read."""
    data_dir = tmp_path_factory.mktemp("spark_job") / "data"
    shutil.copytree(demo_landing, data_dir / "landing")
    old = {k: os.environ.get(k) for k in [*SPARK_ENV, "PIPELINES_SPARK_TABLES"]}
    os.environ.update(SPARK_ENV)
    os.environ["PIPELINES_SPARK_TABLES"] = (data_dir / "spark").as_uri()
    try:
        result, instance = run_job(data_dir)
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return PipelineRun(data_dir, data_dir / "landing", result, instance)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def _tables(path, names) -> dict[str, tuple[pd.DataFrame, list]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {
            n: (
                _sorted(con.execute(f"SELECT * FROM {n}").df()),
                [tuple(r[:2]) for r in con.execute(f"DESCRIBE {n}").fetchall()],
            )
            for n in names
        }


def _checks(run: PipelineRun) -> dict[tuple[str, str], bool]:
    return {(e.asset_key.to_user_string(), e.check_name): e.passed for e in run.result.get_asset_check_evaluations()}


def _materialized(run: PipelineRun) -> dict[str, dict]:
    return {
        e.asset_key.to_user_string(): e.materialization.metadata for e in run.result.get_asset_materialization_events()
    }


def test_the_job_on_spark_passes_the_same_checks_as_on_duckdb(pipeline_run, spark_job_run):
    assert pipeline_run.result.success and spark_job_run.result.success
    duck, spark = _checks(pipeline_run), _checks(spark_job_run)
    assert spark == duck and all(spark.values()) and len(spark) > 20
    assert sorted(_materialized(spark_job_run)) == sorted(_materialized(pipeline_run))


def test_spark_job_marts_equal_duckdb_job_marts_row_for_row(pipeline_run, spark_job_run):
    """The analysts' marts.duckdb, built by dbt-spark from the Parquet tables and published by the same step."""
    expected = _tables(pipeline_run.data_dir / "marts.duckdb", MARTS)
    got = _tables(spark_job_run.data_dir / "marts.duckdb", MARTS)
    for mart in MARTS:
        assert len(expected[mart][0]) > 0
        pd.testing.assert_frame_equal(got[mart][0], expected[mart][0], check_dtype=False)
        assert got[mart][1] == expected[mart][1], mart
    assert oct((spark_job_run.data_dir / "marts.duckdb").stat().st_mode & 0o777) == "0o644"


def test_spark_job_deidentified_tables_and_metadata_equal_duckdb(pipeline_run, spark_job_run):
    """Same rows, pseudonyms and types (the staged copy the checks read and the Parquet dbt reads); the same figures."""
    from pipelines.engines.spark.deidentify import to_pandas
    from pipelines.engines.spark.session import start_session

    expected = _tables(pipeline_run.data_dir / "deidentified.duckdb", DATASETS)
    got = _tables(spark_job_run.data_dir / "deidentified.duckdb", DATASETS)
    duck, mine = _materialized(pipeline_run), _materialized(spark_job_run)
    root = spark_job_run.data_dir / "spark"
    spark = start_session("local[2]", scratch=spark_job_run.data_dir / "spark-scratch" / "test")
    try:
        for ds in DATASETS:
            pd.testing.assert_frame_equal(got[ds][0], expected[ds][0])
            assert got[ds][1] == expected[ds][1], ds
            parquet = _sorted(to_pandas(spark.read.parquet(str(root / "deidentified" / ds))))
            pd.testing.assert_frame_equal(parquet, expected[ds][0])
            a, b = duck[f"deidentified_{ds}"], mine[f"deidentified_{ds}"]
            assert b["table_location"].value == f"{root.as_uri()}/deidentified/{ds}"
            assert set(b) - set(a) == {"table_location", "engine"} and set(a) <= set(b)
            for key in ("rows_in", "rows_out", "rows_suppressed", "entities_masked", "k_anonymity"):
                assert b[key].value == a[key].value, (ds, key)
            assert b["deidentification"].value == a["deidentification"].value
            assert b["dagster/column_schema"] == a["dagster/column_schema"]
            assert b["residual_scan"].value["engine"] == "spark"
    finally:
        spark.stop()
    files = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files)
    assert [p for p in files if p.stat().st_mode & 0o077] == []  # owner-only


def test_spark_job_writes_the_same_audit_entries(pipeline_run, spark_job_run):
    def entries(run):
        lines = (run.data_dir / "audit" / "pipeline.jsonl").read_text().splitlines()
        return sorted((e["action"], e.get("dataset") or "") for e in map(json.loads, lines))

    assert entries(spark_job_run) == entries(pipeline_run)


def test_a_failing_mart_check_blocks_publishing_on_spark(spark_job_run, spark_engine, tmp_path):
    """One employee made unique in the Parquet table dbt-spark reads: the mart's gate fails, nothing is published."""
    from pipelines.definitions import build_definitions
    from pipelines.engines.spark.session import start_session

    mart, people = "mart_org_unit_activity", "dp_org_unit_activity_people"
    data = tmp_path / "data"
    shutil.copytree(spark_job_run.data_dir, data, ignore=shutil.ignore_patterns("dagster_home", "landing", "dbt_runs"))
    table = data / "spark" / "deidentified" / "hr_employees"
    spark = start_session("local[2]", scratch=data / "spark-scratch" / "test")
    try:
        from pyspark.sql import functions as F

        frame = spark.read.parquet(str(table))
        first = frame.agg(F.min("employee_id")).first()[0]
        frame.withColumn(
            "gender", F.when(F.col("employee_id") == first, F.lit("unique")).otherwise(F.col("gender"))
        ).write.parquet(str(table) + ".__new")
        shutil.rmtree(table)
        (table.parent / (table.name + ".__new")).rename(table)
    finally:
        spark.stop()
    with duckdb.connect(str(data / "marts.duckdb"), read_only=True) as con:
        before = con.execute(f"SELECT * FROM {mart} ORDER BY ALL").fetchall()
    defs = build_definitions(data)
    graph = defs.get_repository_def().asset_graph
    selection = dg.AssetSelection.assets(people, mart, f"published_{mart}").required_multi_asset_neighbors()
    result = defs.resolve_job_def("integrate_all").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False, asset_selection=sorted(selection.resolve(graph))
    )
    gate = next(
        e
        for e in result.get_asset_check_evaluations()
        if e.asset_key == dg.AssetKey(mart) and e.check_name == "privacy_suite"
    )
    assert not gate.passed and "person-level join risk: k 1" in gate.description
    published = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert people in published and f"published_{mart}" not in published
    with duckdb.connect(str(data / "marts.duckdb"), read_only=True) as con:
        assert con.execute(f"SELECT * FROM {mart} ORDER BY ALL").fetchall() == before


def test_the_graph_is_the_same_on_both_engines(monkeypatch, tmp_path):
    """Same assets, checks and jobs whatever the engine; only the engine resource's setting differs."""
    from pipelines.definitions import build_definitions
    from pipelines.engines.spark.steps import SparkTables
    from pipelines.engines.tables import DuckDBTables

    def graph() -> tuple:
        defs = build_definitions(tmp_path / "data")
        repo = defs.get_repository_def()
        asset_graph = repo.asset_graph
        checks = sorted(str(k) for k in asset_graph.asset_check_keys)
        deps = sorted(
            (k.to_user_string(), sorted(p.to_user_string() for p in asset_graph.get(k).parent_keys))
            for k in asset_graph.get_all_asset_keys()
        )
        with dg.build_resources({"engine": defs.resources["engine"]}) as resolved:  # EnvVars resolved, as in a run
            engine = resolved.engine
        return (deps, checks, sorted(j.name for j in repo.get_all_jobs())), engine

    monkeypatch.delenv("PIPELINES_ENGINE", raising=False)
    duck, duck_engine = graph()
    monkeypatch.setenv("PIPELINES_ENGINE", "spark")
    monkeypatch.setenv("PIPELINES_SPARK_MASTER", "spark://head:7077")
    monkeypatch.setenv("PIPELINES_SPARK_TABLES", "s3a://bucket/prefix")
    spark, spark_engine = graph()
    assert spark == duck and len(duck[1]) > 20
    assert isinstance(duck_engine.tables(tmp_path), DuckDBTables)
    tables = spark_engine.tables(tmp_path)
    assert isinstance(tables, SparkTables) and tables.dbt_target == "spark"
    assert tables.resource.master == "spark://head:7077"
    assert tables.paths.deidentified("hr_employees") == "s3a://bucket/prefix/deidentified/hr_employees"
    assert tables.warehouse == "s3a://bucket/prefix/warehouse"
