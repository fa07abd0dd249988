"""What the Dagster steps ask of an engine: de-identify a department's table into a staged table, publish it, and
build the approved dbt models. The steps keep their checks, metadata and audit; only these calls differ by engine.

The staged and published de-identified tables are always in deidentified.duckdb too (the privacy suite, the
requests' scrub and absence proof and the retention check read them there on both engines), and dbt's tables
are mirrored into warehouse.duckdb, from which the marts' checks read and the publish step writes marts.duckdb.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import dagster as dg

from pipelines.contracts import Contract
from pipelines.engines import ENGINE_ENV, Engine, engine_setting
from pipelines.engines.spark.session import SparkSessionResource, spark_resource
from pipelines.privacy.deidentify import DeidentifiedTable
from pipelines.privacy.known import KnownIdentifiers
from pipelines.privacy.operators import OperatorContext
from pipelines.resources import from_env


class Tables(Protocol):
    """One engine's side of the de-identification and dbt steps."""

    name: str
    dbt_target: str | None  # the profiles.yml target; None: the profile's default
    fetch_dbt_metadata: bool  # dagster-dbt may read row counts and column types through an in-process adapter

    def deidentify(
        self,
        raw,
        view: str,
        con,
        staged: str,
        contract: Contract,
        ctx: OperatorContext,
        *,
        model_name: str | None,
        known: KnownIdentifiers | None,
        chunk_rows: int,
        exclude: tuple[str, ...],
    ) -> DeidentifiedTable:
        """The rows of `view` (raw DuckDB) de-identified into `staged` (de-identified DuckDB), every gate passed."""
        ...

    def publish(self, con, staged: str, dataset: str, *, changed: bool, in_place: bool = False) -> dict[str, Any]:
        """Swap `staged` in as `dataset` (its checks passed), and the engine's copy with it; `changed`: the staged
        table was modified after `deidentify` (mentions of requested people masked); `in_place`: it was not made by
        `deidentify` at all but from the published table (opt-outs applied in SQL). Metadata entries to add."""
        ...

    def copy_differs(self, dataset: str, rows: int) -> str | None:
        """Why the engine's copy of the published `dataset` is not the table of `rows` rows that deidentified.duckdb
        holds (so opt-outs cannot be applied to it in place), or None."""
        ...

    def dbt_environment(self) -> contextlib.AbstractContextManager[dict[str, str]]:
        """Set, while dbt is started, what the target needs; yields the same variables (for `dbt compile`)."""
        ...

    def after_dbt_build(self, manifest: dict, warehouse_db: Path) -> None:
        """dbt built its tables: make them readable where the marts' checks and publish step read them."""
        ...


class DuckDBTables:
    """The embedded engine: de-identification streams from raw.duckdb into deidentified.duckdb; dbt-duckdb."""

    name = Engine.duckdb.value
    dbt_target = None
    fetch_dbt_metadata = True

    def deidentify(self, raw, view, con, staged, contract, ctx, *, model_name, known, chunk_rows, exclude):
        from pipelines.privacy.deidentify import deidentify_table

        return deidentify_table(
            raw,
            view,
            con,
            staged,
            contract,
            ctx,
            model_name=model_name,
            known=known,
            chunk_rows=chunk_rows,
            exclude=exclude,
        )

    def publish(self, con, staged, dataset, *, changed, in_place=False):
        from pipelines.ingest import publish_staged

        publish_staged(con, staged, dataset)
        return {}

    def copy_differs(self, dataset, rows):
        return None  # deidentified.duckdb is this engine's table

    @contextlib.contextmanager
    def dbt_environment(self) -> Iterator[dict[str, str]]:
        yield {}

    def after_dbt_build(self, manifest, warehouse_db):
        return None


class EngineResource(dg.ConfigurableResource):
    """Which engine runs de-identification and the dbt models (`duckdb` or `spark`), and the Spark session."""

    engine: str = Engine.duckdb.value
    spark: SparkSessionResource

    def tables(self, data_dir: Path) -> Tables:
        if engine_setting(self.engine) is Engine.duckdb:
            return DuckDBTables()
        from pipelines.engines.spark.steps import spark_tables

        return spark_tables(self.spark, Path(data_dir))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        # the run's JVM ends with the run (a run started by the launcher is its own process anyway)
        if engine_setting(self.engine) is Engine.spark:
            from pipelines.engines.spark.steps import stop_sessions

            stop_sessions()


def engine_resource() -> EngineResource:
    """The engine and its session, each setting a `dg.EnvVar` where the environment sets it (resolved when a run
    starts, shown by name in the UI), else the default. A value that names no engine is refused when the definitions
    load, and again when a run starts."""
    engine_setting()
    return EngineResource(engine=from_env(ENGINE_ENV, Engine.duckdb.value), spark=spark_resource())


@contextlib.contextmanager
def environment(variables: dict[str, str]) -> Iterator[dict[str, str]]:
    """`variables` set in this process's environment for the duration (child processes inherit them), then restored."""
    old = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield variables
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
