"""dbt on Spark from Dagster: `pipelines-dbt` (the dbt that dagster-dbt starts) opens a SparkSession with the run's
settings, registers the de-identified Parquet tables in the schema `deidentified` (nothing raw is registered) and
runs dbt in that process, where dbt-spark's session method joins the session. Its tables are written as Parquet
under the warehouse directory, which the run's step then reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

SESSION_ENV = "PIPELINES_DBT_SPARK_SESSION"  # JSON: master, conf, scratch, warehouse, tables (set by the dbt step)
NEEDS_TABLES = {"build", "run", "test", "seed", "snapshot", "show"}  # `compile --no-populate-cache` reads no table


def session_settings(master: str, conf: str, scratch: Path, warehouse: str, tables: str) -> str:
    return json.dumps(
        {"master": master, "conf": conf, "scratch": str(scratch), "warehouse": warehouse, "tables": tables}
    )


def deidentified_datasets(spark, root: str) -> list[str]:
    """The de-identified tables published under the tables root (swap leftovers such as `x.__old` excluded)."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(f"{root.rstrip('/')}/deidentified")
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(path):
        return []
    return sorted(
        s.getPath().getName() for s in fs.listStatus(path) if s.isDirectory() and "." not in s.getPath().getName()
    )


def run_dbt(args: list[str]) -> int:
    """dbt's exit status for `args`, run in this process inside the configured SparkSession."""
    from dbt.cli.main import dbtRunner

    settings = json.loads(os.environ[SESSION_ENV])
    if NEEDS_TABLES & set(args):
        from pipelines.engines.spark.pipeline import WAREHOUSE_SCHEMA, TablePaths, register_deidentified
        from pipelines.engines.spark.session import parse_conf, start_session

        conf = {**parse_conf(settings["conf"]), "spark.sql.warehouse.dir": settings["warehouse"]}
        spark = start_session(settings["master"], conf, Path(settings["scratch"]))
        paths = TablePaths(settings["tables"])
        register_deidentified(spark, deidentified_datasets(spark, paths.root), paths)
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {WAREHOUSE_SCHEMA}")
        _build_upstream(args)
    result = dbtRunner().invoke(args)
    if result.success:
        return 0
    return 1 if result.exception is None else 2


def _selected(args: list[str], option: str) -> list[str]:
    """The values after `option` (up to the next option), as dagster-dbt passes a selection."""
    if option not in args:
        return []
    rest = args[args.index(option) + 1 :]
    return rest[: next((i for i, a in enumerate(rest) if a.startswith("--")), len(rest))]


def _build_upstream(args: list[str]) -> None:
    """This session's catalog starts empty: the models and seeds a partial selection reads are built first (from the
    same de-identified tables, quietly, in a scratch target: they are not this run's outputs). DuckDB keeps them in
    its warehouse file between runs."""
    from dbt.cli.main import dbtRunner

    selected = [s for value in _selected(args, "--select") for s in value.split()]
    if not selected or any(s in ("fqn:*", "*") for s in selected):
        return
    scratch = Path(os.environ.get("DBT_TARGET_PATH", "target")) / "upstream"
    upstream = [
        "build",
        *("--resource-type", "model", "--resource-type", "seed"),
        *("--select", *[f"+{s}" for s in selected]),
        *("--exclude", *selected),
        *("--target-path", str(scratch), "--log-path", str(scratch), "--log-level", "none"),
    ]
    if "--target" in args:
        upstream += ["--target", args[args.index("--target") + 1]]
    result = dbtRunner().invoke(upstream)
    if not result.success:
        raise SystemExit(f"dbt could not build the models the selection reads ({result.exception or 'failed'})")
