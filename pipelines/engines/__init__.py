"""Where the tables are processed: embedded DuckDB (the default) or Apache Spark (`PIPELINES_ENGINE=spark`)."""

from __future__ import annotations

import os
from enum import Enum

ENGINE_ENV = "PIPELINES_ENGINE"


class Engine(str, Enum):
    duckdb = "duckdb"
    spark = "spark"


def engine_setting(value: str | None = None) -> Engine:
    """The engine named by `value`, else by $PIPELINES_ENGINE, else DuckDB; anything else is an error (no silent fallback)."""
    raw = (value if value is not None else os.environ.get(ENGINE_ENV, "")).strip().lower() or Engine.duckdb.value
    try:
        return Engine(raw)
    except ValueError:
        raise ValueError(f"{ENGINE_ENV} must be one of {', '.join(e.value for e in Engine)}, got {raw!r}") from None
