"""The pipeline's stages on Spark, from typed raw tables to marts: raw as Parquet, the compact known-identifier index,
de-identification (`deidentify.py`), the approved dbt models on dbt-spark (session method), marts as Parquet and,
for the embedded case, in a DuckDB file."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.contracts import Contract
from pipelines.engines.spark.deidentify import _naive_timestamps, deidentify_parquet, replace_path
from pipelines.engines.spark.known import known_identifiers_from_parquet
from pipelines.ingest import quote_ident
from pipelines.privacy.deidentify import DeidentifiedTable
from pipelines.privacy.operators import OperatorContext

DEIDENTIFIED_SCHEMA = "deidentified"  # dbt's source schema on Spark (see _deidentified__sources.yml)
WAREHOUSE_SCHEMA = "warehouse"  # the spark target's schema (profiles.yml)


@dataclass
class TablePaths:
    """Where the engine's tables live: `root` is a local directory or an object-store URL (s3a://bucket/prefix)."""

    root: str

    def raw(self, dataset: str) -> str:
        return f"{self.root.rstrip('/')}/raw/{dataset}"

    def deidentified(self, dataset: str) -> str:
        return f"{self.root.rstrip('/')}/deidentified/{dataset}"

    def mart(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/marts/{name}"


@dataclass
class SparkRun:
    paths: TablePaths
    results: dict[str, DeidentifiedTable] = field(default_factory=dict)
    marts: dict[str, int] = field(default_factory=dict)  # published mart -> rows
    seconds: dict[str, float] = field(default_factory=dict)
    known_identifiers: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # dataset -> the gate's message (keep_going only)


def is_remote(path: str) -> bool:
    """A URL (s3a://, abfss://, gs://, file://): written and read through Spark's Hadoop file systems only."""
    return "://" in path


def arrow_to_spark(spark, rows):
    """An Arrow table as a Spark DataFrame of the types DuckDB's Parquet export gives Spark: Spark would read a
    timestamp without a zone as an instant in the session's zone (`timestamp`); DuckDB's are wall-clock times, which
    Spark reads from DuckDB's Parquet as `timestamp_ntz`."""
    import pyarrow as pa
    from pyspark.sql import functions as F

    naive = {f.name for f in rows.schema if pa.types.is_timestamp(f.type) and f.type.tz is None}
    frame = spark.createDataFrame(rows)
    if not naive:
        return frame
    return frame.select(
        *[(F.col(f"`{c}`").cast("timestamp_ntz") if c in naive else F.col(f"`{c}`")).alias(c) for c in frame.columns]
    )


def load_arrow(con, table: str, rows) -> None:
    """An Arrow table into DuckDB as `table` (a quoted name; replacing it)."""
    con.register("__arrow_rows", rows)
    try:
        con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM __arrow_rows")
    finally:
        con.unregister("__arrow_rows")


def export_parquet(con, select: str, target: str, spark=None) -> str:
    """The rows of the DuckDB query `select` as the Parquet table `target`, replacing the last export: DuckDB writes
    it into an owner-only local directory; to a URL, Spark writes it (staged beside it, then swapped in)."""
    if is_remote(target):
        if spark is None:
            raise ValueError("a Parquet table at a URL is written through Spark: pass the session")
        arrow_to_spark(spark, con.sql(select).to_arrow_table()).write.mode("overwrite").parquet(target + ".__new")
        replace_path(spark, target + ".__new", target)
        return target
    path = Path(target)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)
    con.execute(f"COPY ({select}) TO '{path / 'part-0.parquet'}' (FORMAT parquet)")
    (path / "part-0.parquet").chmod(0o600)
    return target


def export_raw(con, contracts: list[Contract], paths: TablePaths, spark=None) -> dict[str, str]:
    """The typed raw DuckDB tables (strict ingest and the quality suite stay DuckDB's) as Parquet, owner-only."""
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    return {
        c.dataset: export_parquet(con, f"SELECT * FROM {quote_ident(c.dataset)}", paths.raw(c.dataset), spark)
        for c in contracts
        if c.dataset in tables
    }


def register_deidentified(spark, datasets: list[str], paths: TablePaths) -> None:
    """The de-identified Parquet tables as dbt's sources (schema `deidentified`); nothing else is registered, so no
    model can read raw data."""
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {DEIDENTIFIED_SCHEMA}")
    for ds in datasets:
        spark.sql(f"DROP TABLE IF EXISTS {DEIDENTIFIED_SCHEMA}.{ds}")
        spark.sql(f"CREATE TABLE {DEIDENTIFIED_SCHEMA}.{ds} USING parquet LOCATION '{paths.deidentified(ds)}'")


def published_marts(manifest: dict) -> list[str]:
    """The approved marts that are published (an approval that is not person-level)."""
    names = []
    for node in manifest["nodes"].values():
        approval = (node.get("config", {}).get("meta") or {}).get("approval")
        if node["resource_type"] == "model" and approval and not approval.get("person_level"):
            names.append(node["name"])
    return sorted(names)


def build_models(spark, project_dir: Path, work: Path) -> dict:
    """`dbt build --target spark` on a copy of the project, in this process (dbt-spark's session method joins the
    running SparkSession); the manifest it built from."""
    from dbt.cli.main import dbtRunner

    run_dir = work / "dbt_project"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    shutil.copytree(project_dir, run_dir, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {WAREHOUSE_SCHEMA}")
    args = [
        "build",
        "--project-dir",
        str(run_dir),
        "--profiles-dir",
        str(run_dir),
        "--target",
        "spark",
        "--target-path",
        str(run_dir / "target"),
        "--log-path",
        str(run_dir / "logs"),
        "--quiet",
    ]
    result = dbtRunner().invoke(args)
    if not result.success:
        failed = [r.node.name for r in (result.result or []) if getattr(r, "status", None) in ("error", "fail")]
        raise RuntimeError(f"dbt build on Spark failed: {', '.join(failed) or result.exception}")
    return json.loads((run_dir / "target" / "manifest.json").read_text())


def publish_marts(spark, names: list[str], paths: TablePaths, marts_db: Path | None) -> dict[str, int]:
    """Each published mart as Parquet and, if `marts_db` is given, in that DuckDB file (the analysts' database)."""
    import duckdb

    from pipelines.engines.spark.deidentify import replace_path

    rows = {}
    for name in names:
        frame = spark.table(f"{WAREHOUSE_SCHEMA}.{name}")
        frame.write.mode("overwrite").parquet(paths.mart(name) + ".__new")
        replace_path(spark, paths.mart(name) + ".__new", paths.mart(name))
        rows[name] = spark.read.parquet(paths.mart(name)).count()
    if marts_db is not None:
        con = duckdb.connect(str(marts_db))
        try:
            con.execute("BEGIN")
            for name in names:  # all together, in one transaction
                location = paths.mart(name)
                if is_remote(location):  # DuckDB would need its httpfs extension (a download): Spark reads it
                    load_arrow(con, quote_ident(name), _naive_timestamps(spark.read.parquet(location).toArrow()))
                else:
                    con.execute(
                        f"CREATE OR REPLACE TABLE {quote_ident(name)} AS SELECT * FROM read_parquet('{location}/*.parquet')"
                    )
            con.execute("COMMIT")
        finally:
            con.close()
        marts_db.chmod(0o644)  # the analysts' database, the one file they may read
    return rows


def run_spark_pipeline(
    spark,
    raw_con,
    contracts: list[Contract],
    ctx: OperatorContext,
    paths: TablePaths,
    work: Path,
    *,
    project_dir: Path,
    model_name: str | None = None,
    marts_db: Path | None = None,
    keep_going: bool = False,
) -> SparkRun:
    """Raw tables (DuckDB) -> Parquet -> index -> de-identified Parquet -> dbt-spark -> marts. `keep_going`: a table
    refused by a gate is recorded in `failed` (its message names columns and counts, never values), the others go on,
    and nothing is built from them (the benchmark's mode)."""
    from pipelines.privacy.classify import UndeclaredPIIError
    from pipelines.privacy.deidentify import PrivacyThresholdError, ResidualPIIError

    run = SparkRun(paths)
    if not is_remote(paths.root):
        Path(paths.root).mkdir(parents=True, exist_ok=True, mode=0o700)  # raw and de-identified rows: owner-only
    t = time.perf_counter()
    tables = export_raw(raw_con, contracts, paths, spark)
    run.seconds["export_raw"] = time.perf_counter() - t
    t = time.perf_counter()
    known = known_identifiers_from_parquet(spark, tables, contracts)
    run.seconds["known_identifiers"] = time.perf_counter() - t
    run.known_identifiers = {"identifiers": known.size, "bytes": known.nbytes}
    for contract in contracts:
        if contract.dataset not in tables:
            continue
        t = time.perf_counter()
        try:
            run.results[contract.dataset] = deidentify_parquet(
                spark,
                tables[contract.dataset],
                paths.deidentified(contract.dataset),
                contract,
                ctx,
                model_name=model_name,
                known=known,
            )
        except (PrivacyThresholdError, ResidualPIIError, UndeclaredPIIError) as error:
            if not keep_going:
                raise
            run.failed[contract.dataset] = f"{type(error).__name__}: {error}"
        run.seconds[f"deidentify:{contract.dataset}"] = time.perf_counter() - t
    if run.failed:
        return run
    register_deidentified(spark, list(run.results), paths)
    t = time.perf_counter()
    manifest = build_models(spark, project_dir, work)
    run.seconds["dbt_build"] = time.perf_counter() - t
    t = time.perf_counter()
    run.marts = publish_marts(spark, published_marts(manifest), paths, marts_db)
    run.seconds["publish"] = time.perf_counter() - t
    return run
