"""Static column lineage of the dbt models, from the project's SQL (sqlglot), keyed by Dagster asset names.

The SQL is rendered without dbt (refs and sources become table names, other Jinja becomes a literal), so the
lineage is known when the definitions load, before anything runs, and the same on every run. For each output
column: the upstream (asset, column) pairs it reads, whether an aggregate sits on the way (COUNT, SUM, AVG...
anonymize; MIN/MAX do not) and the tables whose rows a COUNT(*) counts.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.lineage import lineage as sqlglot_lineage
from sqlglot.optimizer.qualify import qualify

from pipelines.contracts import Contract
from pipelines.governance.approvals import dialect_of
from pipelines.lineage.classification import ANONYMIZING_AGGREGATES

DIALECT = "duckdb"


@dataclass
class ColumnOrigin:
    deps: list[tuple[str, str]] = field(default_factory=list)  # (asset name, column)
    transform: str = "identity"  # identity | rename | expression | aggregate | min_max
    counts_rows_of: list[str] = field(default_factory=list)  # COUNT(*) over these assets' rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "deps": [f"{a}.{c}" for a, c in self.deps],
            "transform": self.transform,
            "counts_rows_of": self.counts_rows_of,
        }


def render(raw: str, source_alias: dict[tuple[str, str], str]) -> str:
    sql = re.sub(r"\{#.*?#\}", "", raw, flags=re.S)
    sql = re.sub(r"\{%.*?%\}", "", sql, flags=re.S)
    sql = re.sub(r"\{\{\s*ref\(\s*['\"](\w+)['\"]\s*\)\s*\}\}", r"\1", sql)
    sql = re.sub(
        r"\{\{\s*source\(\s*['\"](\w+)['\"]\s*,\s*['\"](\w+)['\"]\s*\)\s*\}\}",
        lambda m: source_alias[(m.group(1), m.group(2))],
        sql,
    )
    return re.sub(r"\{\{.*?\}\}", "0", sql, flags=re.S)


def _aggregate_kind(expression: exp.Expression) -> str | None:
    kinds = [
        a.sql_name().lower() if hasattr(a, "sql_name") else type(a).__name__.lower()
        for a in expression.find_all(exp.AggFunc)
    ]
    if not kinds:
        return None
    return "aggregate" if all(k in ANONYMIZING_AGGREGATES for k in kinds) else "min_max"


def _base_table(name: str, ctes: dict[str, exp.Expression], asset_of: dict[str, str], seen: int = 0) -> str:
    """A CTE's name resolved to the first table it reads (what a COUNT(*) over it counts)."""
    if name in asset_of or name not in ctes or seen > 20:
        return asset_of.get(name, name)
    first = next(iter(ctes[name].find_all(exp.Table)), None)
    return _base_table(first.name, ctes, asset_of, seen + 1) if first is not None else name


def _origin(
    column: str,
    sql: str,
    schema: dict,
    asset_of: dict[str, str],
    ctes: dict[str, exp.Expression] | None = None,
    dialect: str = DIALECT,
) -> ColumnOrigin:
    ctes = ctes or {}
    root = sqlglot_lineage(column, sql, schema=schema, dialect=dialect)
    origin = ColumnOrigin()
    kinds: set[str] = set()
    renamed = False

    def walk(node, depth: int) -> None:
        nonlocal renamed
        kind = _aggregate_kind(node.expression)
        if kind:
            kinds.add(kind)
        if isinstance(node.expression, exp.Alias) and not isinstance(node.expression.this, exp.Column):
            kinds.add("expression")
        if not node.downstream:
            if isinstance(node.source, exp.Table):
                asset = asset_of.get(node.source.name, node.source.name)
                col = node.name.split(".")[-1]
                origin.deps.append((asset, col))
                renamed = renamed or col != column
            elif isinstance(node.expression, exp.Alias) and node.expression.find(exp.Star) is not None:
                for table in node.source.find_all(exp.Table):  # COUNT(*): the rows of the table it reads
                    origin.counts_rows_of.append(_base_table(table.name, ctes, asset_of))
                    break
        for child in node.downstream:
            walk(child, depth + 1)

    walk(root, 0)
    origin.deps = sorted(set(origin.deps))
    origin.counts_rows_of = sorted(set(origin.counts_rows_of))
    if "min_max" in kinds:
        origin.transform = "min_max"
    elif "aggregate" in kinds or origin.counts_rows_of:
        origin.transform = "aggregate"
    elif "expression" in kinds:
        origin.transform = "expression"
    else:
        origin.transform = "rename" if renamed else "identity"
    return origin


def model_lineage(
    manifest: dict, contracts: list[Contract], project_dir: Path | None = None
) -> dict[str, dict[str, ColumnOrigin]]:
    """model -> column -> origin, for every dbt model (sources are the de-identified tables of the contracts)."""
    by_dataset = {c.dataset: c for c in contracts}
    schema: dict[str, dict[str, str]] = {}
    asset_of: dict[str, str] = {}
    source_alias: dict[tuple[str, str], str] = {}
    for source in manifest.get("sources", {}).values():
        alias = f"src__{source['name']}"
        key = ((source.get("meta") or {}).get("dagster") or {}).get("asset_key") or [
            f"{source['source_name']}_{source['name']}"
        ]
        asset_of[alias] = "/".join(key)
        source_alias[(source["source_name"], source["name"])] = alias
        contract = by_dataset.get(source["name"])
        if contract is not None:
            schema[alias] = {c.name: "varchar" for c in contract.published_columns}
    nodes = {n["name"]: n for n in manifest["nodes"].values() if n.get("resource_type") in {"model", "seed"}}
    dialect = dialect_of(manifest)  # the adapter the manifest was parsed for (DuckDB or Spark SQL)
    for name, node in nodes.items():
        asset_of.setdefault(name, name)
        if node["resource_type"] == "seed":
            root = Path(node.get("root_path") or project_dir or ".")
            path = root / node["original_file_path"]
            if path.exists():
                with path.open(encoding="utf-8") as f:
                    schema[name] = {c: "varchar" for c in next(csv.reader(f))}
    out: dict[str, dict[str, ColumnOrigin]] = {}
    pending = [n for n in nodes.values() if n["resource_type"] == "model"]
    while pending:  # topological: a model once every model it refs has its columns
        ready = [
            n
            for n in pending
            if all(d.split(".")[-1] in schema for d in n["depends_on"]["nodes"] if d.startswith("model."))
        ]
        if not ready:
            break
        for node in ready:
            pending.remove(node)
            sql = render(node["raw_code"], source_alias)
            try:
                parsed = qualify(sqlglot.parse_one(sql, dialect=dialect), schema=schema, dialect=dialect)
                columns = list(parsed.named_selects)
                ctes = {c.alias_or_name: c.this for c in parsed.find_all(exp.CTE)}
                out[node["name"]] = {c: _origin(c, sql, schema, asset_of, ctes, dialect) for c in columns}
            except Exception:  # noqa: BLE001 - a model sqlglot cannot read gets its declared columns, without deps
                columns = list(node.get("columns", {}))
                out[node["name"]] = {c: ColumnOrigin(transform="expression") for c in columns}
            schema[node["name"]] = {c: "varchar" for c in columns}
    return out


@lru_cache(maxsize=4)
def _cached(manifest_path: str, mtime: int, contracts_dir: str) -> dict[str, dict[str, ColumnOrigin]]:
    import json

    from pipelines.contracts import load_contracts

    manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    return model_lineage(manifest, load_contracts(Path(contracts_dir)), Path(manifest_path).parent.parent)


def lineage_for_manifest(manifest_path: Path, contracts_dir: Path) -> dict[str, dict[str, ColumnOrigin]]:
    return _cached(str(manifest_path), manifest_path.stat().st_mtime_ns, str(contracts_dir))
