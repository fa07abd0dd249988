"""Disclosure risk in DuckDB SQL: equivalence-class sizes, k, distinct l-diversity and prosecutor risk.

The one place class sizes are computed for the privacy gates (per-record features their suites put thresholds
on), the marts' checks and publication record (people per class: rows weighted by a group-size column), the
person-level join gate and `risk.risk_report`. An equivalence class is the set of records sharing every
quasi-identifier value; NULL is a value of its own (GROUP BY and PARTITION BY keep NULLs together). A record's
prosecutor risk is 1 / the size of its class (ARX's prosecutor model). The tables stay in DuckDB: only one row of
figures, or the columns a suite names, ever reaches Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb

from pipelines.sql import quote_ident

__all__ = [
    "CLASS_SIZE",
    "DISTINCT_PREFIX",
    "RECORD_RISK",
    "SQL",
    "RiskReport",
    "class_sizes",
    "frame_class_sizes",
    "k_anonymous_query",
    "records_below_k",
    "relation_sql",
    "risk_features_query",
    "table",
]

# Per-record features `risk_features_query` adds (the privacy suites' expectations name these columns).
CLASS_SIZE = "_equivalence_class_size"
RECORD_RISK = "_record_risk"
DISTINCT_PREFIX = "_class_distinct_"


class SQL(str):
    """Text already safe to splice in as a relation: a quoted (schema-qualified) name or a parenthesized query."""


def table(name: str, schema: str | None = None) -> SQL:
    """A table name, quoted (with its schema), as a relation."""
    return SQL(f"{quote_ident(schema)}.{quote_ident(name)}" if schema else quote_ident(name))


def relation_sql(relation: str) -> str:
    """A plain string is a table name (quoted here); `SQL` is used as given."""
    return relation if isinstance(relation, SQL) else quote_ident(relation)


def _names(columns: str | Iterable[str]) -> tuple[str, ...]:
    """Column names as a tuple (a lone string is one name, not characters)."""
    return (columns,) if isinstance(columns, str) else tuple(columns)


@dataclass(frozen=True)
class RiskReport:
    """Prosecutor re-identification risk of a table for a set of quasi-identifiers."""

    records: int  # records, or people when rows are weighted by a group-size column
    quasi_identifiers: tuple[str, ...]
    equivalence_classes: int
    k: int  # smallest equivalence class
    prosecutor_risk_average: float  # mean of 1/|class| over records = classes / records
    prosecutor_risk_highest: float  # 1 / smallest class
    risk_threshold: float
    records_at_risk_share: float  # share of records whose risk exceeds risk_threshold
    sample_uniqueness: float  # share of records in classes of size 1
    l_diversity: dict[str, int] = field(default_factory=dict)  # distinct-l per sensitive attr
    target_k: int | None = None
    classes_below_k: int | None = None
    records_below_k: int | None = None

    def to_metadata(self) -> dict[str, object]:
        """Plain JSON-compatible dict (e.g. for Dagster asset metadata)."""
        data = asdict(self)
        data["quasi_identifiers"] = list(self.quasi_identifiers)
        data["l_diversity"] = {str(k): int(v) for k, v in self.l_diversity.items()}
        return data


def _check_columns(con: duckdb.DuckDBPyConnection, source: str, roles: dict[str, Sequence[str]]) -> None:
    """ValueError naming the first column missing from the relation, or listed twice (names only, never values)."""
    present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    for role, columns in roles.items():
        if len(set(columns)) != len(columns):
            raise ValueError(f"{role} columns are listed more than once: {list(columns)}")
        for column in columns:
            if column not in present:
                raise ValueError(f"{role} column {column!r} is not in the table")


def _size(weight: str | None) -> str:
    """Records per class: rows, or the sum of the weight column (people behind each aggregated row)."""
    return "count(*)" if weight is None else f"CAST(sum({quote_ident(weight)}) AS BIGINT)"


def _distinct(column: str) -> str:
    """Distinct values of `column` in the group, NULL counting as one value (as the pandas path did)."""
    c = quote_ident(column)
    return f"(count(DISTINCT {c}) + CAST(count(*) > count({c}) AS BIGINT))"


def _group_by(qis: Sequence[str]) -> str:
    return f" GROUP BY {', '.join(quote_ident(q) for q in qis)}" if qis else ""


def class_sizes(
    con: duckdb.DuckDBPyConnection,
    relation: str,
    quasi_identifiers: str | Sequence[str],
    *,
    sensitive: str | Sequence[str] = (),
    weight: str | None = None,
    k: int | None = None,
    risk_threshold: float = 0.2,
) -> RiskReport:
    """Equivalence classes, k, distinct l-diversity and prosecutor risk of `relation`, in one GROUP BY.

    No quasi-identifiers: the whole table is one class. `weight` names a column of people per row (a mart's
    group size); class sizes then sum it.
    """
    qis, sens = _names(quasi_identifiers), _names(sensitive)
    overlap = set(qis) & set(sens)
    if overlap:
        raise ValueError(f"columns {sorted(overlap)} cannot be both quasi-identifier and sensitive")
    if not 0.0 <= risk_threshold <= 1.0:
        raise ValueError("risk_threshold must be between 0 and 1")
    if k is not None and k < 1:
        raise ValueError("k must be at least 1")
    source = relation_sql(relation)
    _check_columns(
        con, source, {"quasi-identifier": qis, "sensitive": sens, "weight": [weight] if weight is not None else []}
    )
    if weight is not None:
        w = quote_ident(weight)
        bad = con.execute(f"SELECT count(*) FROM {source} WHERE {w} IS NULL OR {w} < 1").fetchall()[0][0]
        if bad:
            raise ValueError(f"weight column {weight!r} has {bad} row(s) that are empty or below 1")
    per_class = ", ".join([f"{_size(weight)} AS size", *(f"{_distinct(s)} AS l{i}" for i, s in enumerate(sens))])
    below = int(k) if k is not None else 0
    # Risk 1/size > threshold  <=>  size < 1/threshold; compared in doubles, as ARX (and numpy) do.
    row = con.execute(
        f"WITH classes AS (SELECT {per_class} FROM {source}{_group_by(qis)}) "
        "SELECT count(*), CAST(sum(size) AS BIGINT), min(size), "
        "CAST(coalesce(sum(size) FILTER (WHERE size = 1), 0) AS BIGINT), "
        "CAST(coalesce(sum(size) FILTER (WHERE 1.0::DOUBLE / size > ?), 0) AS BIGINT), "
        f"count(*) FILTER (WHERE size < {below}), CAST(coalesce(sum(size) FILTER (WHERE size < {below}), 0) AS BIGINT)"
        + "".join(f", min(l{i})" for i in range(len(sens)))
        + " FROM classes",
        [float(risk_threshold)],
    ).fetchall()[0]
    classes, records, smallest, unique, at_risk, classes_below, records_below, *l_values = row
    if not records:
        raise ValueError(f"{source} is empty: risk needs at least one record")
    return RiskReport(
        records=int(records),
        quasi_identifiers=qis,
        equivalence_classes=int(classes),
        k=int(smallest),
        prosecutor_risk_average=classes / records,
        prosecutor_risk_highest=1.0 / smallest,
        risk_threshold=float(risk_threshold),
        records_at_risk_share=at_risk / records,
        sample_uniqueness=unique / records,
        l_diversity={s: int(v) for s, v in zip(sens, l_values, strict=True)},
        target_k=k,
        classes_below_k=None if k is None else int(classes_below),
        records_below_k=None if k is None else int(records_below),
    )


def frame_class_sizes(frame: Any, quasi_identifiers: str | Sequence[str], **options: Any) -> RiskReport:
    """`class_sizes` of an in-memory frame (pandas, polars or Arrow), through a private DuckDB connection."""
    with duckdb.connect() as con:
        con.register("frame", frame)
        return class_sizes(con, "frame", quasi_identifiers, **options)


def risk_features_query(
    relation: str,
    quasi_identifiers: Sequence[str],
    sensitive: Sequence[str] = (),
    *,
    weight: str | None = None,
    columns: Sequence[str] | None = None,
) -> str:
    """SELECT of `columns` (default: all) plus each record's class size, prosecutor risk and distinct sensitive values
    per class (CLASS_SIZE, RECORD_RISK, DISTINCT_PREFIX + name): what a privacy suite's expectations read."""
    window = f"PARTITION BY {', '.join(quote_ident(q) for q in quasi_identifiers)}" if quasi_identifiers else ""
    size = "count(*) OVER w" if weight is None else f"CAST(sum({quote_ident(weight)}) OVER w AS BIGINT)"
    selected = "*" if columns is None else ", ".join(quote_ident(c) for c in columns)
    features = [f"{size} AS {quote_ident(CLASS_SIZE)}", f"1.0::DOUBLE / ({size}) AS {quote_ident(RECORD_RISK)}"]
    for s in sensitive:
        c = quote_ident(s)
        distinct = f"count(DISTINCT {c}) OVER w + CAST(count(*) OVER w > count({c}) OVER w AS BIGINT)"
        features.append(f"{distinct} AS {quote_ident(DISTINCT_PREFIX + s)}")
    return f"SELECT {', '.join([selected, *features] if selected else features)} FROM {relation_sql(relation)} WINDOW w AS ({window})"


def records_below_k(con: duckdb.DuckDBPyConnection, relation: str, quasi_identifiers: Sequence[str], k: int) -> int:
    """Records in equivalence classes smaller than k (what suppression would remove)."""
    result = con.execute(
        f"SELECT coalesce(sum(size), 0) FROM (SELECT count(*) AS size FROM {relation_sql(relation)}"
        f"{_group_by(quasi_identifiers)}) WHERE size < {int(k)}"
    ).fetchall()[0]
    return int(result[0])


def k_anonymous_query(
    relation: str, quasi_identifiers: Sequence[str], k: int, *, exclude: Sequence[str] = (), order_by: str | None = None
) -> str:
    """SELECT of the records in classes of at least k (suppressing the rest), without the `exclude` columns."""
    window = f"PARTITION BY {', '.join(quote_ident(q) for q in quasi_identifiers)}" if quasi_identifiers else ""
    size = quote_ident("__class_size")
    dropped = ", ".join([*(quote_ident(c) for c in exclude), size])
    order = f" ORDER BY {quote_ident(order_by)}" if order_by else ""
    return (
        f"SELECT * EXCLUDE ({dropped}) FROM (SELECT *, count(*) OVER ({window}) AS {size} FROM {relation_sql(relation)}) "
        f"WHERE {size} >= {int(k)}{order}"
    )
