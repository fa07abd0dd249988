"""The Spark session: master URL and configuration from the environment, on the JVM `engines.java` picks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg

from pipelines.resources import from_env

MASTER_ENV = "PIPELINES_SPARK_MASTER"  # e.g. local[2] (default), spark://host:7077, yarn, k8s://...
CONF_ENV = "PIPELINES_SPARK_CONF"  # extra settings, "key=value;key=value"
TABLES_ENV = "PIPELINES_SPARK_TABLES"  # where the engine's Parquet tables live (a local dir or s3a://, abfss://, gs://)
DEFAULT_MASTER = "local[2]"


def parse_conf(text: str) -> dict[str, str]:
    """`key=value;key=value` (whitespace around items ignored); a malformed item is an error."""
    conf = {}
    for item in (part.strip() for part in text.split(";")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{CONF_ENV} items must be key=value, got {item!r}")
        conf[key.strip()] = value.strip()
    return conf


def session_conf(master: str, scratch: Path | None, extra: dict[str, str]) -> dict[str, str]:
    """The settings the engine needs, then the user's (which win)."""
    conf = {
        "spark.master": master,
        "spark.app.name": "privacy-integration",
        "spark.sql.session.timeZone": "UTC",  # timestamps read and written as DuckDB does
        "spark.sql.catalogImplementation": "in-memory",  # local runs keep no metastore_db; a cluster brings its own
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "4",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.python.worker.reuse": "true",  # one Python worker per core, reused: the analyzer loads once per worker
        "spark.executorEnv.PIPELINES_NLP_PROCESSES": "1",  # the executor's cores are Spark's to share out
        "spark.hadoop.fs.permissions.umask-mode": "077",  # tables Spark writes are owner-only, as the DuckDB files
    }
    if scratch is not None:
        # shuffle files and broadcast blocks (the keyed index) stay in an owner-only directory beside the data
        scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
        conf["spark.local.dir"] = str(scratch)
        conf["spark.sql.warehouse.dir"] = str(scratch / "warehouse")
    return {**conf, **extra}


def start_session(master: str = DEFAULT_MASTER, conf: dict[str, str] | None = None, scratch: Path | None = None):
    """A SparkSession (the running one if there is one: dbt-spark's session method joins it)."""
    from pyspark.sql import SparkSession

    from pipelines.engines.java import ensure_java

    ensure_java()
    os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)  # executors run this interpreter (same packages)
    if scratch is not None and SparkSession.getActiveSession() is None:
        shutil.rmtree(scratch / "warehouse", ignore_errors=True)  # a new session's in-memory catalog starts empty
    builder = SparkSession.builder
    for key, value in session_conf(master, scratch, conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")  # Spark's INFO lines can quote SQL; errors are raised to us anyway
    return spark


class SparkSessionResource(dg.ConfigurableResource):
    """A Spark session for the Spark engine (master URL and `key=value;...` settings)."""

    master: str = DEFAULT_MASTER
    conf: str = ""
    tables_path: str = ""  # empty: <data dir>/spark

    def session(self, scratch: Path | None = None):
        return start_session(self.master, parse_conf(self.conf), scratch)


def spark_resource() -> SparkSessionResource:
    """The session's settings, each a `dg.EnvVar` where the environment sets it (resolved when a run starts, shown
    by name in the UI), else the default."""
    return SparkSessionResource(
        master=from_env(MASTER_ENV, DEFAULT_MASTER), conf=from_env(CONF_ENV, ""), tables_path=from_env(TABLES_ENV, "")
    )
