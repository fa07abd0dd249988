"""Approved marts: audited in the warehouse by blocking checks, then published to the analysts' database."""

from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd

from pipelines import audit
from pipelines.contracts import Contract, load_contracts
from pipelines.defs.checks import check_result
from pipelines.governance.approvals import Approval, approval_for, load_manifest, model_departments
from pipelines.ingest import quote_ident
from pipelines.provenance import provenance
from pipelines.quality.features import with_group_risk_features
from pipelines.quality.runner import run_suite
from pipelines.quality.suites import CLASS_SIZE, load_suite
from pipelines.resources import CONTRACTS_DIR, EXPECTATIONS_DIR, PipelineStorage


def approved_marts(manifest: dict) -> dict[str, Approval]:
    """Every model that carries an approval record (the marts analysts may see)."""
    out = {}
    for node in manifest["nodes"].values():
        if node.get("resource_type") == "model":
            approval = approval_for(manifest, node["name"])
            if approval is not None:
                out[node["name"]] = approval
    return dict(sorted(out.items()))


def read_warehouse_table(storage: PipelineStorage, table: str) -> pd.DataFrame:
    # default config: dagster-dbt may still hold this file open in-process, and DuckDB refuses a second config
    with duckdb.connect(str(storage.warehouse_db)) as con:
        return con.execute(f"SELECT * FROM main.{quote_ident(table)}").df()


def mart_risk(frame: pd.DataFrame, approval: Approval) -> dict[str, Any]:
    """Risk over the quasi-identifiers the mart publishes, counting people (group sizes), not rows."""
    people = int(frame[approval.group_size_column].sum()) if len(frame) else 0
    if not len(frame):
        return {"rows": 0, "people": 0}
    features = with_group_risk_features(frame, approval.quasi_identifiers, approval.group_size_column)
    classes = features.drop_duplicates(approval.quasi_identifiers) if approval.quasi_identifiers else features.head(1)
    return {
        "rows": len(frame),
        "people": people,
        "smallest_group": int(frame[approval.group_size_column].min()),
        "k_over_quasi_identifiers": int(features[CLASS_SIZE].min()),
        "equivalence_classes": len(classes),
        "prosecutor_risk_average": round(len(classes) / people, 6) if people else None,
        "prosecutor_risk_highest": round(1 / int(features[CLASS_SIZE].min()), 6),
    }


def _source_rows(instance: dg.DagsterInstance, contracts: list[Contract]) -> tuple[list[str], list[str]]:
    """Markdown rows describing each contributing dataset and every one of its columns."""
    sources, columns = [], []
    for contract in contracts:
        event = instance.get_latest_materialization_event(dg.AssetKey(f"deidentified_{contract.dataset}"))
        md = event.asset_materialization.metadata if event and event.asset_materialization else {}
        value = lambda k, default="-": getattr(md.get(k), "value", default)  # noqa: E731
        residual = value("residual_scan", {})
        sources.append(
            f"| deidentified_{contract.dataset} | {event.run_id[:8] if event else '-'} | {value('rows_in')} / {value('rows_out')} / "
            f"{value('rows_suppressed')} | {value('contract_version_hash')} | {value('pseudonym_key_id')} | "
            f"{'passed' if isinstance(residual, dict) and residual.get('passed') else '-'} |"
        )
        recorded = {c["column"]: c for c in (value("deidentification", {}) or {}).get("columns", [])}
        for column in contract.columns:
            r = recorded.get(column.name, {})
            params = ", ".join(f"{k}={v}" for k, v in (r.get("params") or {}).items() if k != "key_id") or "-"
            fate = "in the de-identified table" if column.deidentify.operator != "suppress" else "suppressed: never left the raw database"
            found = ", ".join(f"{k}: {v}" for k, v in (r.get("entities_detected") or {}).items()) or "-"
            columns.append(
                f"| {contract.dataset}.{column.name} | {column.role.value} | {column.entity or '-'} | "
                f"{column.deidentify.operator} | {params} | {found} | {fate} |"
            )
    return sources, columns


def privacy_card(mart: str, approval: Approval, contracts: list[Contract], risk: dict, instance: dg.DagsterInstance) -> str:
    """The steward's one-page answer to 'where did this number come from, and what was done to the people in it?'"""
    sources, columns = _source_rows(instance, contracts)
    return "\n".join([
        f"## Privacy card: {mart}",
        "",
        f"**Approval**: {approval.approved_by}, {approval.approved_on}, expires {approval.expires_on}.  ",
        f"**Purpose**: {approval.purpose}  ",
        f"**Departments**: {', '.join(approval.departments)}; joined only on keyed pseudonyms: "
        f"{', '.join(approval.join_keys) or 'no join'}.  ",
        f"**Publishes**: {', '.join(approval.publishes)}; quasi-identifiers {', '.join(approval.quasi_identifiers) or '-'}; "
        f"groups under {approval.min_group_size} ({approval.group_size_column}) are withheld.",
        "",
        "**Risk** (people, not rows): " + ", ".join(f"{k} {v}" for k, v in risk.items()),
        "",
        "### Sources (latest de-identification)",
        "| asset | run | rows in / out / suppressed | contract hash | key id | residual PII scan |",
        "|---|---|---|---|---|---|",
        *sources,
        "",
        "### Every column of every contributing dataset",
        "| column | role | entity | operator | parameters | PII found in text | fate |",
        "|---|---|---|---|---|---|---|",
        *columns,
    ])


def build_marts(manifest_path: Path, contracts_dir: Path = CONTRACTS_DIR, suites_dir: Path = EXPECTATIONS_DIR) -> dg.Definitions:
    manifest = load_manifest(manifest_path)
    all_contracts = load_contracts(contracts_dir)
    assets, checks = [], []
    for mart, approval in approved_marts(manifest).items():
        departments = model_departments(manifest, mart, contracts_dir)
        contracts = [c for c in all_contracts if c.department in departments]

        def make(mart: str = mart, approval: Approval = approval, contracts: list[Contract] = contracts) -> None:
            @dg.asset_check(
                asset=dg.AssetKey(mart), name="privacy_suite", blocking=True,
                description=f"GE suite {mart}.privacy: approved columns, minimum group size, k over published quasi-identifiers, no PII patterns.",
            )
            def mart_privacy(storage: PipelineStorage) -> dg.AssetCheckResult:
                frame = read_warehouse_table(storage, mart)
                features = with_group_risk_features(frame, approval.quasi_identifiers, approval.group_size_column)
                outcome = run_suite(load_suite(suites_dir, f"{mart}.privacy"), features, storage.gx_dir)
                return check_result(outcome, {"risk": dg.MetadataValue.json(mart_risk(frame, approval))})

            @dg.asset(
                key=f"published_{mart}",
                deps=[dg.AssetKey(mart)],
                group_name="approved_marts",
                kinds={"duckdb"},
                owners=["team:data-integration"],
                description=f"{mart}, published to the analysts' database after its checks passed.",
            )
            def publish(context: dg.AssetExecutionContext, storage: PipelineStorage) -> dg.MaterializeResult:
                frame = read_warehouse_table(storage, mart)
                publish_table(storage, mart, frame)
                risk = mart_risk(frame, approval)
                audit.append(storage.audit_log, {"action": "publish", "mart": mart, "run_id": context.run_id, "rows": len(frame), "risk": risk})
                return dg.MaterializeResult(
                    metadata={
                        "dagster/row_count": len(frame),
                        "dagster/column_schema": dg.TableSchema(columns=[dg.TableColumn(c, str(t)) for c, t in frame.dtypes.items()]),
                        "privacy_card": dg.MetadataValue.md(privacy_card(mart, approval, contracts, risk, context.instance)),
                        "approval": dg.MetadataValue.json(approval.model_dump(mode="json")),
                        "risk": dg.MetadataValue.json(risk),
                        "upstream": [mart] + [f"deidentified_{c.dataset}" for c in contracts],
                        "analysts_database": str(storage.marts_db),
                        "provenance": provenance(context),
                    }
                )

            assets.append(publish)
            checks.append(mart_privacy)

        make()
    return dg.Definitions(assets=assets, asset_checks=checks)


def publish_table(storage: PipelineStorage, table: str, frame: pd.DataFrame) -> None:
    """Replace one table in the analysts' database atomically; nothing else is ever written there."""
    storage.marts_db.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(storage.marts_db)) as con:
        con.register("published_frame", frame)
        con.execute(f"CREATE OR REPLACE TABLE main.{quote_ident(table)} AS SELECT * FROM published_frame")
        con.unregister("published_frame")
    storage.marts_db.chmod(0o644)  # readable by analysts; the other databases stay owner-only

