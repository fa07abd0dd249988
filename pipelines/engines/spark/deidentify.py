"""De-identification on Spark: Parquet in, Arrow batches through the same per-batch step as DuckDB's stream, Parquet out.

Each Arrow batch becomes the pandas frame DuckDB's stream would have made of the same rows (DuckDB converts it, in
the executor), goes through `deidentify_batch` and comes back as the Arrow DuckDB makes of the result, so both
engines write the same values and types. Per-batch figures (values in, entities masked, residuals; counts only)
travel as one extra row per batch in a metadata column. Everything that needs the whole table (classification,
declared terms, the residual gate, k-anonymity) runs on the whole table, in Spark SQL; what k-anonymity suppresses is
decided by `plan_suppression`, as for DuckDB.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pandas as pd

from pipelines.contracts import Contract
from pipelines.ingest import SOURCE_FILE_COLUMN
from pipelines.privacy.classify import SharedClassification, columns_to_classify
from pipelines.privacy.deidentify import (
    BatchTotals,
    ColumnRecord,
    DeidentifiedTable,
    check_declared_columns,
    check_residual,
    deidentify_batch,
    table_result,
)
from pipelines.privacy.free_text import table_terms
from pipelines.privacy.known import KnownIdentifiers
from pipelines.privacy.operators import OperatorContext
from pipelines.privacy.suppression import ROW_COLUMN, Suppression, plan_suppression

MIN_ROWS_PER_TASK = 2_000  # fewer rows than this per task cost more in scheduling than they gain
TASKS_PER_CORE = 4  # uneven free text (some batches far slower) evens out over several tasks per core
META_COLUMN = "__deidentify_batch"  # one row per batch: its ColumnRecords and residual counts as JSON (no values)


def q(name: str) -> str:
    """A Spark SQL identifier."""
    return "`" + name.replace("`", "``") + "`"


_local = None  # a DuckDB connection per Python worker, for Arrow <-> pandas exactly as DuckDB's stream converts


def _duckdb():
    global _local
    if _local is None:
        import duckdb

        _local = duckdb.connect()
    return _local


def _naive_timestamps(table):
    """Spark hands timestamps out with the session's zone (UTC); DuckDB's raw tables hold them without a zone."""
    import pyarrow as pa

    fields = [
        pa.field(f.name, pa.timestamp(f.type.unit)) if pa.types.is_timestamp(f.type) and f.type.tz else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields)) if fields != list(table.schema) else table


def arrow_to_frame(table) -> pd.DataFrame:
    """The frame DuckDB's `.df()` makes of these rows."""
    return _duckdb().from_arrow(_naive_timestamps(table)).df()


def frame_to_arrow(frame: pd.DataFrame):
    """The Arrow DuckDB makes of a frame (the types the DuckDB engine's staged table gets)."""
    con = _duckdb()
    con.register("deidentified_batch", frame)
    try:
        return con.sql("SELECT * FROM deidentified_batch").to_arrow_table()
    finally:
        con.unregister("deidentified_batch")


def to_pandas(df) -> pd.DataFrame:
    """A (small) Spark result as the DuckDB engine would have read it."""
    return arrow_to_frame(df.toArrow())


def _output_schema(raw, names: list[str], contract: Contract, ctx: OperatorContext, terms) -> Any:
    """The Arrow schema of de-identified batches: the per-batch step run on no rows (no model is needed for it)."""
    import pyarrow as pa

    # one row converted, then none kept: DuckDB types an Arrow table without chunks differently (object, not str)
    empty = arrow_to_frame(raw.select(*[q(n) for n in names]).limit(1).toArrow()).iloc[:0]
    out = frame_to_arrow(deidentify_batch(empty, contract, ctx, model_name=None, known=None, terms=terms).frame)
    fields = [pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type) for f in out.schema]
    return pa.schema(fields + [pa.field(ROW_COLUMN, pa.int64()), pa.field(META_COLUMN, pa.string())])


def _batch_function(names, contract, ctx, model_name, known_broadcast, terms, schema):
    """The function each executor applies to its Arrow batches (shipped once per task; the broadcast index once per
    executor; the analyzer loads in each Python worker on its first batch and stays, as workers are reused)."""
    import pyarrow as pa

    data_schema = pa.schema([f for f in schema if f.name != META_COLUMN])

    def apply(batches):
        os.environ["PIPELINES_NLP_PROCESSES"] = "1"  # Spark shares out the cores; no process pool inside a task
        known = known_broadcast.value if known_broadcast is not None else None
        for batch in batches:
            table = pa.Table.from_batches([batch])
            rows = table.column(ROW_COLUMN).to_numpy()
            frame = arrow_to_frame(table.drop_columns([ROW_COLUMN]))
            chunk = deidentify_batch(frame, contract, ctx, model_name=model_name, known=known, terms=terms)
            out = frame_to_arrow(chunk.frame).append_column(ROW_COLUMN, pa.array(rows, pa.int64()))
            out = out.select(data_schema.names).cast(data_schema)
            out = out.append_column(META_COLUMN, pa.nulls(len(out), pa.string()))
            yield from out.to_batches()
            meta = json.dumps(
                {
                    "first_row": int(rows.min()) if len(rows) else None,
                    "rows": len(rows),
                    "peak_rss_mib": _peak_rss_mib(),
                    "records": [r.to_dict() for r in chunk.records],
                    "residual": chunk.residual,
                }
            )
            yield pa.RecordBatch.from_pylist([{META_COLUMN: meta}], schema=schema)

    return apply


def _totals(meta: list[dict]) -> BatchTotals:
    """Add up the batches' figures in row order, as DuckDB's stream adds up its chunks."""
    totals = BatchTotals()
    for m in sorted(meta, key=lambda m: (m["first_row"] is None, m["first_row"] or 0)):
        totals.add([ColumnRecord(**r) for r in m["records"]], m["residual"], m["rows"])
    return totals


def k_anonymous(spark, data, contract: Contract, rows: int) -> tuple[Any, Suppression]:
    """The staged rows that may be published and the suppression `plan_suppression` decided (as DuckDB's
    `publish_k_anonymous`), with class sizes counted by a window over all partitions in Spark SQL."""
    from pyspark.sql import functions as F
    from pyspark.sql.window import Window

    quasi = contract.published_quasi_identifiers

    def sized(blanked: list[str]):
        frame = data
        for n in blanked:
            frame = frame.withColumn(n, F.lit("*").cast("string"))
        window = Window.partitionBy(*[F.col(q(n)) for n in quasi])
        return frame.withColumn("__class_size", F.count(F.lit(1)).over(window))

    def count_small(blanked: list[str]) -> int:
        return sized(blanked).where(F.col("__class_size") < contract.privacy.k_anonymity).count()

    plan = plan_suppression(
        contract, rows, count_small, lambda: to_pandas(data.orderBy(ROW_COLUMN).select(*[q(n) for n in quasi]))
    )
    if not plan.applies:
        return data, plan
    return sized(plan.blanked).where(F.col("__class_size") >= plan.k).drop("__class_size"), plan


def replace_path(spark, new: str, target: str) -> None:
    """Swap a written directory in for the old one (Hadoop FileSystem: a rename on local disks and HDFS; object
    stores copy, so a reader there may briefly see neither; a table format such as Delta makes it atomic)."""
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    new_path, target_path = jvm.org.apache.hadoop.fs.Path(new), jvm.org.apache.hadoop.fs.Path(target)
    fs = new_path.getFileSystem(conf)
    old = jvm.org.apache.hadoop.fs.Path(target + ".__old")
    fs.delete(old, True)
    if fs.exists(target_path):
        fs.rename(target_path, old)
    fs.rename(new_path, target_path)
    fs.delete(old, True)


def deidentify_parquet(
    spark,
    source: str,
    target: str,
    contract: Contract,
    ctx: OperatorContext,
    *,
    model_name: str | None = None,
    known: KnownIdentifiers | None = None,
    exclude: tuple[str, ...] = (SOURCE_FILE_COLUMN,),
    batch_rows: int | None = None,
) -> DeidentifiedTable:
    """De-identify the Parquet table at `source` into `target` (Parquet), staged beside it and swapped in only when
    classification, the residual gate and k-anonymity passed. Output and metadata as `deidentify_table`'s."""
    from pyspark.sql import functions as F

    if batch_rows:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_rows))
    raw = spark.read.parquet(source)
    names = [n for n in raw.columns if n not in exclude]
    check_declared_columns(names, contract)
    raw = raw.select(*[q(n) for n in names])
    view = f"raw_{contract.dataset}"
    raw.createOrReplaceTempView(view)

    def distinct(name: str) -> pd.Series:
        return to_pandas(spark.sql(f"SELECT DISTINCT {q(name)} FROM {view} WHERE {q(name)} IS NOT NULL")).iloc[:, 0]

    def frequent(name: str, k: int, limit: int) -> pd.Series:
        return to_pandas(
            spark.sql(
                f"SELECT CAST({q(name)} AS STRING) AS v FROM {view} WHERE {q(name)} IS NOT NULL GROUP BY v "
                f"HAVING count(*) >= {int(k)} ORDER BY count(*) DESC, v LIMIT {int(limit)}"
            )
        ).iloc[:, 0]

    clock = _Clock()
    values = {c.name: distinct(c.name) for c in columns_to_classify(contract)}
    rows = raw.count()
    classifying = SharedClassification(values, contract, known=known, model_name=model_name, cells=rows * len(names))
    del values
    staging, fresh = target + ".__staging", target + ".__new"
    try:
        terms = table_terms(contract, distinct, frequent)
        schema = _output_schema(raw, names, contract, ctx, terms)
        from pyspark.sql.pandas.types import from_arrow_schema

        known_broadcast = spark.sparkContext.broadcast(known) if known is not None else None
        apply = _batch_function(names, contract, ctx, model_name, known_broadcast, terms, schema)
        # rows numbered where they are read (their order), then spread over every core (a file smaller than a split
        # is one partition, which would leave all but one core idle), by their free text: equal texts meet in one
        # task, so each distinct text is scanned once, as DuckDB's stream scans each once per chunk
        tasks = max(1, min(-(-rows // MIN_ROWS_PER_TASK), spark.sparkContext.defaultParallelism * TASKS_PER_CORE))
        texts = [F.col(q(c.name)) for c in contract.columns if c.deidentify.operator == "scan"]
        numbered = raw.withColumn(ROW_COLUMN, F.monotonically_increasing_id()).repartition(tasks, *texts)
        clock.lap("table_scans")  # distinct values to classify, declared terms, row count
        numbered.mapInArrow(apply, from_arrow_schema(schema)).write.mode("overwrite").parquet(staging)
        clock.lap("batches")
        if known_broadcast is not None:
            known_broadcast.unpersist()
        staged = spark.read.parquet(staging)
        meta = [json.loads(r[0]) for r in staged.where(F.col(META_COLUMN).isNotNull()).select(META_COLUMN).collect()]
        totals = _totals(meta)
        classification = classifying.result()  # raises UndeclaredPIIError before anything is published
        clock.lap("classification_wait")
        check_residual(contract, totals.residual)
        data = staged.where(F.col(META_COLUMN).isNull()).drop(META_COLUMN)
        kept, suppression = k_anonymous(spark, data, contract, totals.rows)
        kept.orderBy(ROW_COLUMN).drop(ROW_COLUMN).write.mode("overwrite").parquet(fresh)
        replace_path(spark, fresh, target)
        clock.lap("k_anonymity_and_write")
    finally:
        classifying.cancel()
        _delete(spark, staging)
        _delete(spark, fresh)
    return table_result(
        contract,
        totals,
        suppression,
        classification,
        model_name=model_name,
        known=known,
        engine="spark",
        batches=len(meta),
        worker_peak_rss_mib=max((m.get("peak_rss_mib", 0) for m in meta), default=0),
        seconds=clock.laps,
    )


class _Clock:
    def __init__(self) -> None:
        import time

        self._time = time.perf_counter
        self._last = self._time()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = self._time()
        self.laps[name] = round(now - self._last, 3)
        self._last = now


def _peak_rss_mib() -> float:
    """This Python worker's peak resident memory (Linux reports KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _delete(spark, path: str) -> None:
    jvm = spark.sparkContext._jvm
    p = jvm.org.apache.hadoop.fs.Path(path)
    p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).delete(p, True)
