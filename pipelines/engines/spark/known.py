"""The known-identifier index from raw Parquet tables, built with Spark SQL into the compact index (8 bytes per
identifier) that is broadcast to executors."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import permutations

from pipelines.privacy.known import MAX_NAME_PARTS, SEARCHABLE, CompactKnownIdentifiers


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _full_name_expressions(parts: list[str]) -> list[str]:
    """As `known._full_name_expressions`, in Spark SQL: every ordered pair of name parts, and all in contract order."""
    if not 2 <= len(parts) <= MAX_NAME_PARTS:
        return []
    combos = [list(pair) for pair in permutations(parts, 2)] + ([parts] if len(parts) > 2 else [])
    return [f"concat_ws(' ', {', '.join(f'CAST({_q(p)} AS STRING)' for p in combo)})" for combo in combos]


def known_identifiers_from_parquet(spark, tables: dict[str, str], contracts: Iterable) -> CompactKnownIdentifiers:
    """Index the direct identifiers and join keys of every department's raw table (`tables`: dataset -> Parquet path),
    as `known.known_identifiers_from_raw` does; distinct values are computed by Spark and streamed to the driver."""
    from pipelines.contracts import Role

    known = CompactKnownIdentifiers()
    for contract in contracts:
        if contract.dataset not in tables:
            continue
        frame = spark.read.parquet(tables[contract.dataset])
        columns = contract.columns_with_role(Role.direct_identifier, Role.join_key)
        expressions = [(c.entity, f"CAST({_q(c.name)} AS STRING)") for c in columns if c.entity in SEARCHABLE]
        expressions += [
            ("PERSON", e) for e in _full_name_expressions([c.name for c in columns if c.entity == "PERSON"])
        ]
        for entity, expression in expressions:
            values = frame.selectExpr(f"{expression} AS v").where("v IS NOT NULL").distinct()
            known.add(entity, (row[0] for row in values.toLocalIterator()))
    return known
