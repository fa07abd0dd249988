"""`dagster/column_lineage` and `dagster/column_schema` for every asset, the classification of published columns
(traced back to the landed files through dbt), each source column's fate in a mart, and the publish gate."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from pipelines.contracts import Contract, source_ref
from pipelines.lineage import classification as cls
from pipelines.lineage.dbt import ColumnOrigin

INGEST_DTYPES = {
    "string": "string",
    "integer": "int",
    "decimal": "decimal",
    "boolean": "bool",
    "date": "date",
    "timestamp": "timestamp",
}


def landed_column(contract: Contract, column: str) -> str:
    """The header of the landed file a contract column comes from (the contract may rename it)."""
    return next((source_ref(ref)[0] for ref, target in contract.source.rename.items() if target == column), column)


def _column(name: str, dtype: str, tags: Mapping[str, str], description: str = "") -> dg.TableColumn:
    text = " ".join(p for p in (description.strip(), cls.describe(tags)) if p)
    return dg.TableColumn(name, dtype, description=text, tags=dict(tags))


def landed_schema(contract: Contract) -> dg.TableSchema:
    tags = cls.contract_tags(contract, stage="landed")
    return dg.TableSchema(
        columns=[
            _column(
                landed_column(contract, c.name), "string", tags[c.name], f"CSV column (contract: {c.name}, {c.type})."
            )
            for c in contract.columns
        ]
    )


def raw_schema(contract: Contract) -> dg.TableSchema:
    tags = cls.contract_tags(contract, stage="raw")
    return dg.TableSchema(
        columns=[_column(c.name, INGEST_DTYPES[c.type], tags[c.name], c.description) for c in contract.columns]
    )


def raw_lineage(contract: Contract, landed: dg.AssetKey) -> dg.TableColumnLineage:
    return dg.TableColumnLineage(
        deps_by_column={
            c.name: [dg.TableColumnDep(asset_key=landed, column_name=landed_column(contract, c.name))]
            for c in contract.columns
        }
    )


def deidentified_schema(contract: Contract, types: Mapping[str, str], key_id: str | None) -> dg.TableSchema:
    tags = cls.contract_tags(contract, key_id)
    by_name = {c.name: c for c in contract.columns}
    return dg.TableSchema(
        columns=[
            _column(
                n,
                t,
                tags.get(n, {cls.ROLE: "plain_attribute", cls.STATE: "not_personal"}),
                by_name[n].description if n in by_name else "",
            )
            for n, t in types.items()
        ]
    )


def deidentified_lineage(contract: Contract, raw: dg.AssetKey, columns: list[str]) -> dg.TableColumnLineage:
    known = {c.name for c in contract.columns}
    return dg.TableColumnLineage(
        deps_by_column={c: [dg.TableColumnDep(asset_key=raw, column_name=c)] for c in columns if c in known}
    )


# --- through dbt to the published mart --------------------------------------------------------------------


@dataclass
class Traced:
    """A published column: its classification, the de-identified columns it reads, and how."""

    tags: dict[str, str]
    sources: list[tuple[str, str]] = field(default_factory=list)  # (dataset, column) of de-identified tables
    transform: str = "identity"
    counts_rows_of: list[str] = field(default_factory=list)


def _dataset(asset: str) -> str | None:
    return asset[len("deidentified_") :] if asset.startswith("deidentified_") else None


def trace(
    model: str,
    column: str,
    lineage: Mapping[str, Mapping[str, ColumnOrigin]],
    source_tags: Mapping[str, Mapping[str, Mapping[str, str]]],
    depth: int = 0,
) -> Traced:
    """Follow a model's column down to the de-identified tables, propagating tags by each step's rule."""
    origin = lineage.get(model, {}).get(column)
    if origin is None or depth > 20:
        dataset = _dataset(model)
        if dataset is not None:
            tags = dict(
                source_tags.get(dataset, {}).get(column, {cls.ROLE: "plain_attribute", cls.STATE: "not_personal"})
            )
            return Traced(tags, [(dataset, column)])
        return Traced({cls.ROLE: "plain_attribute", cls.STATE: "not_personal"})  # a seed (reference data)
    inputs = [trace(a, c, lineage, source_tags, depth + 1) for a, c in origin.deps]
    sources = sorted({s for i in inputs for s in i.sources})
    counted = sorted(set(origin.counts_rows_of) | {r for i in inputs for r in i.counts_rows_of})
    transforms = {origin.transform} | {i.transform for i in inputs}
    transform = next((t for t in ("min_max", "aggregate", "expression", "rename") if t in transforms), "identity")
    rule = "aggregate" if transform == "aggregate" else transform
    tags = cls.propagate([i.tags for i in inputs], rule, [f"{d}.{c}" for d, c in sources])
    return Traced(tags, sources, transform, counted)


def published_columns(mart: str, columns: list[str], lineage, source_tags) -> dict[str, Traced]:
    return {c: trace(mart, c, lineage, source_tags) for c in columns}


def published_schema(
    traced: Mapping[str, Traced], types: Mapping[str, str], descriptions: Mapping[str, str]
) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[_column(c, types.get(c, ""), t.tags, descriptions.get(c, "")) for c, t in traced.items()]
    )


def published_lineage(mart: str, columns: list[str]) -> dg.TableColumnLineage:
    return dg.TableColumnLineage(
        deps_by_column={c: [dg.TableColumnDep(asset_key=dg.AssetKey(mart), column_name=c)] for c in columns}
    )


def gate_failures(traced: Mapping[str, Traced]) -> list[str]:
    """Published columns that inherit an unmasked direct identifier (or join key): each blocks the publication."""
    return [
        f"{c} inherits {t.tags.get(cls.ENTITY) or t.tags.get(cls.ROLE)} ({t.tags.get(cls.STATE)}) from {', '.join(f'{d}.{s}' for d, s in t.sources) or '?'}"
        for c, t in traced.items()
        if cls.unmasked_identifier(t.tags)
    ]


def staging_names(lineage: Mapping[str, Mapping[str, ColumnOrigin]], dataset: str) -> dict[str, list[tuple[str, str]]]:
    """De-identified column -> [(staging model, column)] that reads it as is."""
    out: dict[str, list[tuple[str, str]]] = {}
    for model, columns in lineage.items():
        for col, origin in columns.items():
            for asset, source_col in origin.deps:
                if _dataset(asset) == dataset:
                    out.setdefault(source_col, []).append((model, col))
    return out


def fates(mart: str, contract: Contract, traced: Mapping[str, Traced], lineage, join_keys: list[str]) -> dict[str, str]:
    """Each column of a source dataset: what became of it in this published mart."""
    staged = staging_names(lineage, contract.dataset)
    mart_models = set(_reachable(mart, lineage))
    out = {}
    for column in contract.columns:
        if column.deidentify.operator == "suppress":
            out[column.name] = "suppressed: never left the raw database"
            continue
        published = [
            c
            for c, t in traced.items()
            if (contract.dataset, column.name) in t.sources and t.transform in {"identity", "rename", "expression"}
        ]
        aggregated = [
            c
            for c, t in traced.items()
            if (contract.dataset, column.name) in t.sources and t.transform in {"aggregate", "min_max"}
        ]
        read = [(m, c) for m, c in staged.get(column.name, []) if m in mart_models]
        counted = [
            c
            for c, t in traced.items()
            if any(m in t.counts_rows_of for m, _ in read)
            or any(m in t.counts_rows_of for m, _ in staged.get(column.name, []))
        ]
        if published:
            out[column.name] = (
                "published as "
                + ", ".join(published)
                + (f"; aggregated into {', '.join(aggregated)}" if aggregated else "")
            )
        elif aggregated:
            out[column.name] = "aggregated into " + ", ".join(aggregated)
        elif read and any(c in join_keys for _, c in read):
            out[column.name] = "used only as a join key (" + ", ".join(f"{m}.{c}" for m, c in read) + ")"
        elif read:
            out[column.name] = (
                "read by "
                + ", ".join(f"{m}.{c}" for m, c in read)
                + "; no published column uses it"
                + (f" (its rows are counted in {', '.join(sorted(set(counted)))})" if counted else "")
            )
        else:
            out[column.name] = "de-identified, never reached this mart"
    return out


def _reachable(model: str, lineage) -> list[str]:
    seen, todo = [], [model]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.append(m)
        todo += sorted(
            {a for o in lineage.get(m, {}).values() for a, _ in o.deps}
            | {r for o in lineage.get(m, {}).values() for r in o.counts_rows_of}
        )
    return seen


def lineage_json(traced: Mapping[str, Traced]) -> list[dict[str, Any]]:
    return [
        {
            "column": c,
            "transform": t.transform,
            "from": [f"{d}.{s}" for d, s in t.sources],
            "counts_rows_of": t.counts_rows_of,
            "tags": t.tags,
        }
        for c, t in traced.items()
    ]
