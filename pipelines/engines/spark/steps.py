"""The Spark engine behind the Dagster steps (`pipelines.engines.tables.Tables`): raw rows exported to Parquet,
de-identified on Spark (`deidentify_parquet`: mapInArrow batches, the residual gate and k over the whole table),
published as Parquet under the tables root; dbt built with `--target spark` in its own process (its own session,
the same settings), its tables mirrored into warehouse.duckdb for the marts' checks and publish step."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from pipelines.engines import Engine
from pipelines.engines.spark.deidentify import _delete, _naive_timestamps, deidentify_parquet, replace_path
from pipelines.engines.spark.pipeline import (
    WAREHOUSE_SCHEMA,
    TablePaths,
    arrow_to_spark,
    export_parquet,
    is_remote,
    load_arrow,
)
from pipelines.engines.spark.session import SparkSessionResource
from pipelines.ingest import publish_staged, quote_ident

_started: list = []  # sessions this module started (stopped when the run's resources are torn down)


def stop_sessions() -> None:
    while _started:
        _started.pop().stop()


class SparkTables:
    name = Engine.spark.value
    dbt_target = "spark"
    fetch_dbt_metadata = False  # dagster-dbt would query through an in-process adapter, not dbt's session

    def __init__(self, resource: SparkSessionResource, data_dir: Path) -> None:
        self.resource = resource
        self.paths = TablePaths(resource.tables_path or str(data_dir / "spark"))
        self.scratch = data_dir / "spark-scratch"  # shuffle files, broadcast blocks: local, owner-only

    @property
    def warehouse(self) -> str:
        """Where dbt-spark writes its managed tables (`warehouse.<model>`)."""
        return f"{self.paths.root.rstrip('/')}/warehouse"

    def session(self):
        from pyspark.sql import SparkSession

        fresh = SparkSession.getActiveSession() is None
        spark = self.resource.session(self.scratch / "driver")
        if fresh:
            _started.append(spark)
        return spark

    def _private_root(self) -> None:
        if not is_remote(self.paths.root):
            Path(self.paths.root).mkdir(parents=True, exist_ok=True, mode=0o700)  # rows, even de-identified: owner-only

    def _export(self, raw, view: str, target: str) -> str:
        """The rows de-identification may read (the requests' filtered view) as Parquet, replacing the last export."""
        self._private_root()
        spark = self.session() if is_remote(target) else None  # a local export needs no JVM in this process
        return export_parquet(raw, f"SELECT * FROM {quote_ident(view)}", target, spark)

    def _candidate(self, dataset: str) -> str:
        return f"{self.paths.root.rstrip('/')}/staged/{dataset}"

    def deidentify(self, raw, view, con, staged, contract, ctx, *, model_name, known, chunk_rows, exclude):
        spark = self.session()
        source = self._export(raw, view, self.paths.raw(contract.dataset))
        candidate = self._candidate(contract.dataset)
        result = deidentify_parquet(
            spark, source, candidate, contract, ctx, model_name=model_name, known=known, exclude=exclude
        )
        # the staged copy the privacy suite, the requests' scrub and the retention check read (as on DuckDB)
        load_arrow(con, quote_ident(staged), _naive_timestamps(spark.read.parquet(candidate).toArrow()))
        return result

    def publish(self, con, staged, dataset, *, changed, in_place=False):
        spark = self.session()
        candidate, target = self._candidate(dataset), self.paths.deidentified(dataset)
        publish_staged(con, staged, dataset)
        if changed or in_place:
            # the staged copy is what is published: mentions of requested people were masked in it, or (in place)
            # it is the published table without the people who opted out; written with the Parquet table's types
            from pyspark.sql import functions as F

            schema = spark.read.parquet(target if in_place else candidate).schema
            frame = arrow_to_spark(spark, con.sql(f"SELECT * FROM {quote_ident(dataset)}").to_arrow_table())
            frame = frame.select(*[F.col(f"`{f.name}`").cast(f.dataType).alias(f.name) for f in schema])
            frame.write.mode("overwrite").parquet(candidate + ".__rewritten")
            _delete(spark, candidate)  # in place: a candidate left by a failed run is not this table
            candidate += ".__rewritten"
        replace_path(spark, candidate, target)
        return {"table_location": target, "engine": self.name}

    def copy_differs(self, dataset, rows):
        target = self.paths.deidentified(dataset)
        if not is_remote(target):  # a local table is counted from its Parquet footers, without a JVM
            import pyarrow.dataset as ds

            found = ds.dataset(target, format="parquet").count_rows() if Path(target).is_dir() else None
        else:
            spark = self.session()
            found = spark.read.parquet(target).count() if _exists(spark, target) else None
        if found is None:
            return "the Spark engine holds no published copy of the table"
        if found != rows:
            return f"the Spark engine's copy holds {found} rows, the de-identified table {rows}"
        return None

    @contextlib.contextmanager
    def dbt_environment(self) -> Iterator[dict[str, str]]:
        from pipelines.engines.spark.dbt_session import SESSION_ENV, session_settings
        from pipelines.engines.tables import environment

        # the last build's tables: Spark makes no managed table over an existing location
        if is_remote(self.warehouse):
            _delete(self.session(), self.warehouse)
        else:  # a local directory needs no JVM in this process
            shutil.rmtree(self.warehouse, ignore_errors=True)
        variables = {
            "DBT_TARGET": self.dbt_target,  # `dbt compile` (the approval gate) and `dbt build` read the same target
            SESSION_ENV: session_settings(
                self.resource.master, self.resource.conf, self.scratch / "dbt", self.warehouse, self.paths.root
            ),
        }
        with environment(variables):
            yield variables

    def after_dbt_build(self, manifest: dict, warehouse_db: Path) -> None:
        import duckdb

        tables = sorted(
            node["name"]
            for node in manifest["nodes"].values()
            if node["resource_type"] == "seed"
            or (node["resource_type"] == "model" and node["config"].get("materialized") in ("table", "incremental"))
        )
        con = duckdb.connect(str(warehouse_db))
        try:
            for name in tables:
                rows = self._read_built(f"{self.warehouse}/{WAREHOUSE_SCHEMA}.db/{name}")
                if rows is not None:  # else not built in this run (failed, or not selected)
                    load_arrow(con, f"main.{quote_ident(name)}", _naive_timestamps(rows))
        finally:
            con.close()

    def _read_built(self, location: str):
        """A table dbt-spark wrote, as Arrow (None if there is none): read by Spark on an object store, else directly."""
        if not is_remote(location):
            import pyarrow.dataset as ds

            return ds.dataset(location, format="parquet").to_table() if Path(location).is_dir() else None
        spark = self.session()
        return spark.read.parquet(location).toArrow() if _exists(spark, location) else None


def _exists(spark, location: str) -> bool:
    """Whether a path exists on the Hadoop file system of its URL."""
    path = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(location)
    return bool(path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).exists(path))


def spark_tables(resource: SparkSessionResource, data_dir: Path) -> SparkTables:
    return SparkTables(resource, data_dir)
