"""Proofs: no requested person in a de-identified table or a mart, nothing past retention in a de-identified table."""

from dataclasses import dataclass
from datetime import date
from typing import Any

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from pipelines.contracts import Contract
from pipelines.ingest import quote_ident
from pipelines.lifecycle import matching, retention
from pipelines.lifecycle import requests as store
from pipelines.resources import PipelineStorage, PrivacySettings, connection

ABSENCE_CHECK = "subject_absence"
RETENTION_CHECK = "retention"


def absence_spec(key: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        ABSENCE_CHECK,
        asset=key,
        blocking=True,
        description="No person who opted out or asked to be erased: by pseudonym in every cell, by keyed hash of every identifier in text.",
    )


def retention_spec(key: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        RETENTION_CHECK, asset=key, blocking=True, description="Nothing older than the last purge's horizon."
    )


@dataclass
class InForce:
    """The requests a step applies: their ids and the union of their people's keys (never shown)."""

    ids: list[str]
    keys: set[str]

    @classmethod
    def load(cls, storage: PipelineStorage, key_id: str) -> "InForce":
        from pipelines.lifecycle.assets import check_key_ids

        requests = store.active(store.Paths.under(storage.root))
        check_key_ids(requests, key_id)
        return cls([r["id"] for r in requests], {k for r in requests for k in store.keys_of(r)[1]})


def excluded_rows(raw_con, dataset: str) -> dict[str, int]:
    """Raw rows left out of de-identification, per request (the flag column the subject_requests step set)."""
    view = matching.view_name(dataset)
    if not raw_con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = ?", [view]).fetchone()[0]:
        raise dg.Failure(
            description=(
                f"{dataset}: no filtered view {view} in the raw database: the subject_requests step must run "
                "before de-identification (it is part of every job that ingests). Nothing was published."
            )
        )
    rows = raw_con.execute(
        f"SELECT {matching.FLAG_COLUMN}, count(*) FROM {quote_ident(dataset)} WHERE {matching.FLAG_COLUMN} IS NOT NULL "
        "GROUP BY 1 ORDER BY 1"
    ).fetchall()
    return {rid: int(n) for rid, n in rows}


def absence_result(
    con, table: str, secret: bytes, in_force: InForce, excluded: dict[str, int], masked: dict[str, int]
) -> dg.AssetCheckResult:
    """The blocking proof on a staged de-identified table."""
    found = matching.absence(con, table, secret, in_force.keys)
    return dg.AssetCheckResult(
        check_name=ABSENCE_CHECK,
        passed=not found,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"{len(in_force.ids)} request(s) in force: none of their people is in the table"
            if not found
            else f"requested people still present in column(s) {', '.join(sorted(found))}"
        ),
        metadata={
            "requests_checked": len(in_force.ids),
            "keys_checked": len(in_force.keys),
            "rows_excluded": dg.MetadataValue.json(excluded),
            "mentions_masked": dg.MetadataValue.json(masked),
            "found": dg.MetadataValue.json(found),
        },
    )


def retention_result(con, table: str, contract: Contract, horizon: date | None) -> dg.AssetCheckResult:
    """Month-generalized event dates wholly before the enforced horizon (the raw view already drops the rows)."""
    column = contract.retention.event_date_column
    older = 0
    spec = contract.column(column).deidentify if column else None
    if horizon is not None and spec is not None and getattr(spec, "method", None) == "date_month":
        older = con.execute(
            f"SELECT count(*) FROM {quote_ident(table)} WHERE {quote_ident(column)} < ?", [horizon.strftime("%Y-%m")]
        ).fetchone()[0]
    return dg.AssetCheckResult(
        check_name=RETENTION_CHECK,
        passed=older == 0,
        description=(
            f"horizon {horizon} ({retention.basis(contract)}): {older} row(s) older"
            if horizon
            else "no purge has run yet: no horizon enforced"
        ),
        metadata={
            "horizon": str(horizon) if horizon else "none",
            "rows_older": int(older),
            "basis": retention.basis(contract),
        },
    )


def record_proof(storage: PipelineStorage, ids: list[str], asset: str, run_id: str) -> None:
    """Each request: proven absent in this asset by this run."""
    if not ids:
        return
    with store.editing(store.Paths.under(storage.root)) as requests:
        for rid in ids:
            requests[rid].setdefault("proven", {})[asset] = {"run_id": run_id, "at": store.now_iso()}


# --- marts ---------------------------------------------------------------------------------------------------


def _cells_with_keys(con, table: str, pattern: str) -> dict[str, int]:
    out = {}
    for column in matching._text_columns(con, table):
        n = con.execute(
            f"SELECT count(*) FROM {quote_ident(table)} WHERE regexp_matches({quote_ident(column)}, ?)", [pattern]
        ).fetchone()[0]
        if n:
            out[column] = int(n)
    return out


def _stale_sources(instance: dg.DagsterInstance, mart_key: dg.AssetKey, sources: list[str]) -> list[str]:
    """Sources materialized after the mart (the mart may still count someone they dropped)."""
    mart = instance.get_latest_materialization_event(mart_key)
    out = []
    for ds in sources:
        event = instance.get_latest_materialization_event(dg.AssetKey(f"deidentified_{ds}"))
        if event is not None and (mart is None or event.timestamp > mart.timestamp):
            out.append(ds)
    return out


def mart_absence_check(mart: str, sources: list[str], published: bool) -> dg.AssetChecksDefinition:
    """Blocking: the mart (or its published copy) holds no requested person's pseudonym, was built after its sources,
    and every source it was built from holds none of them either (so no row of it counts them)."""
    asset = dg.AssetKey(f"published_{mart}" if published else mart)

    @dg.asset_check(
        asset=asset,
        name=ABSENCE_CHECK,
        blocking=True,
        description=(
            f"No requested person in {asset.to_user_string()} nor in the de-identified tables it is built from ({', '.join(sources)})."
        ),
    )
    def check(
        context: dg.AssetCheckExecutionContext,
        storage: PipelineStorage,
        privacy: PrivacySettings,
        deidentified_database: DuckDBResource,
    ) -> dg.AssetCheckResult:
        key = privacy.pseudonym_key(storage)
        in_force = InForce.load(storage, key.key_id)
        pattern = matching._pattern(in_force.keys)
        found: dict[str, Any] = {}
        if pattern:
            with connection(deidentified_database) as con:
                for ds in sources:
                    if cells := _cells_with_keys(con, ds, pattern):
                        found[f"deidentified_{ds}"] = cells
            path = storage.marts_db if published else storage.warehouse_db
            with duckdb.connect(str(path)) as con:  # default config, as the publish step and the mart suites open them
                if cells := matching.absence(
                    con, mart, key.secret, in_force.keys
                ):  # every column kind, as on de-identified tables
                    found[asset.to_user_string()] = cells
        stale = [] if published else _stale_sources(context.instance, asset, sources)
        passed = not found and not stale
        if passed:
            record_proof(storage, in_force.ids, asset.to_user_string(), context.run.run_id)
        return dg.AssetCheckResult(
            passed=passed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "requests_checked": len(in_force.ids),
                "found": dg.MetadataValue.json(found),
                "sources_newer_than_mart": dg.MetadataValue.json(stale),
            },
            description=(
                f"{len(in_force.ids)} request(s) in force: absent from {asset.to_user_string()} and its sources"
                if passed
                else f"not proven: found in {sorted(found)}; sources rebuilt after the mart: {stale}"
            ),
        )

    return check


def build_mart_checks(manifest_path, contracts_dir) -> list[dg.AssetChecksDefinition]:
    """An absence check on every approved mart (mart_* built by dbt) and on its published copy."""
    from pipelines.contracts import load_contracts
    from pipelines.defs.marts import approved_marts
    from pipelines.governance.approvals import load_manifest, model_departments

    manifest = load_manifest(manifest_path)
    contracts = load_contracts(contracts_dir)
    checks = []
    for mart in approved_marts(manifest):
        departments = model_departments(manifest, mart, contracts_dir)
        sources = [c.dataset for c in contracts if c.department in departments]
        checks += [
            mart_absence_check(mart, sources, published=False),
            mart_absence_check(mart, sources, published=True),
        ]
    return checks
