"""The frame a privacy suite validates: the columns it reads plus per-record risk features from DuckDB.

Class sizes, prosecutor risk and distinct sensitive values are computed by `pipelines.privacy.disclosure` in SQL
over the table where it lies; only the columns the suite's expectations name (PII patterns on published text) and
the feature columns are fetched, in chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import pandas as pd

from pipelines.privacy.disclosure import (
    CLASS_SIZE,
    DISTINCT_PREFIX,
    RECORD_RISK,
    SQL,
    relation_sql,
    risk_features_query,
)
from pipelines.sql import quote_ident, read_frame

__all__ = [
    "CLASS_SIZE",
    "DISTINCT_PREFIX",
    "RECORD_RISK",
    "risk_features",
    "suite_columns",
    "with_group_risk_features",
    "with_risk_features",
]


def suite_columns(suite: dict[str, Any]) -> list[str] | None:
    """The data columns a suite's expectations read (risk features excluded); None: it checks the whole table's
    column set, so every column is needed."""
    columns: dict[str, None] = {}
    for e in suite["expectations"]:
        kwargs = e.get("kwargs", {})
        if "column" in kwargs:
            if kwargs["column"] not in (CLASS_SIZE, RECORD_RISK) and not kwargs["column"].startswith(DISTINCT_PREFIX):
                columns[kwargs["column"]] = None
        elif e["type"] != "expect_table_row_count_to_be_between":
            return None
    return list(columns)


def risk_features(
    con: duckdb.DuckDBPyConnection,
    relation: str,
    quasi_identifiers: Sequence[str],
    sensitive: Sequence[str] = (),
    *,
    weight: str | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """`columns` (default: all) of `relation` with each record's class size, risk and distinct sensitive values.

    Quasi-identifiers or sensitive attributes the table lacks are left out; a table without quasi-identifiers
    (unweighted) or without rows gets no features, so a suite that needs them fails on their absence.
    """
    source = SQL(relation_sql(relation))
    present = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
    qis = [q for q in quasi_identifiers if q in present]
    sens = [s for s in sensitive if s in present]
    wanted = present if columns is None else [c for c in columns if c in present]
    empty = not con.execute(f"SELECT count(*) FROM (SELECT 1 FROM {source} LIMIT 1)").fetchall()[0][0]
    if empty or (not qis and weight is None):
        return read_frame(con, f"SELECT {', '.join(map(quote_ident, wanted)) or '*'} FROM {source}")
    return read_frame(con, risk_features_query(source, qis, sens, weight=weight, columns=wanted))


def with_risk_features(frame: Any, quasi_identifiers: list[str], sensitive: list[str]) -> pd.DataFrame:
    """An in-memory frame with its per-record risk features (the same SQL, on a private DuckDB connection)."""
    with duckdb.connect() as con:
        con.register("frame", frame)
        return risk_features(con, "frame", quasi_identifiers, sensitive)


def with_group_risk_features(frame: Any, quasi_identifiers: list[str], weight_column: str) -> pd.DataFrame:
    """For aggregated rows: people per equivalence class (summing group sizes) and their prosecutor risk."""
    with duckdb.connect() as con:
        con.register("frame", frame)
        return risk_features(con, "frame", quasi_identifiers, weight=weight_column)
