"""Approved marts: audited in the warehouse by blocking checks, then published to the analysts' database."""

import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from pipelines import audit
from pipelines.contracts import Contract, Role, load_contracts
from pipelines.defs.checks import check_result
from pipelines.defs.integration import release_dbt_duckdb
from pipelines.dp import budget as dp_budget
from pipelines.dp.publish import dp_card, publish_release
from pipelines.dp.query import QueryRefused
from pipelines.dp.release import ReleaseError
from pipelines.governance.approvals import Approval, approval_for, load_manifest, model_departments
from pipelines.ingest import quote_ident
from pipelines.lineage import classification as lineage_cls
from pipelines.lineage import metadata as lineage_md
from pipelines.lineage.dbt import ColumnOrigin, lineage_for_manifest
from pipelines.privacy import disclosure
from pipelines.provenance import provenance
from pipelines.quality.features import risk_features
from pipelines.quality.runner import run_suite
from pipelines.quality.suites import load_suite, mart_parameters
from pipelines.resources import CONTRACTS_DIR, EXPECTATIONS_DIR, PipelineStorage


def approved_marts(manifest: dict) -> dict[str, Approval]:
    """Every model that carries an approval record (the marts analysts may see)."""
    out = {}
    for node in manifest["nodes"].values():
        if node.get("resource_type") == "model":
            approval = approval_for(manifest, node["name"])
            if approval is not None and not approval.person_level:  # people, not aggregates: never published
                out[node["name"]] = approval
    return dict(sorted(out.items()))


def _read_person_frame(storage: PipelineStorage, model: str) -> Any:
    """A person-level model as polars, with the same connection config as the checks (one per file per process)."""
    import polars as pl

    with duckdb.connect(str(storage.warehouse_db)) as con:
        return pl.from_arrow(con.sql(f"SELECT * FROM main.{quote_ident(model)}").to_arrow_table())


def mart_risk(con: duckdb.DuckDBPyConnection, relation: str, approval: Approval) -> dict[str, Any]:
    """Risk over the quasi-identifiers the mart publishes, counting people (group sizes), not rows (in DuckDB)."""
    size = quote_ident(approval.group_size_column)
    rows, smallest = con.execute(f"SELECT count(*), min({size}) FROM {disclosure.relation_sql(relation)}").fetchall()[0]
    if not rows:
        return {"rows": 0, "people": 0}
    risk = disclosure.class_sizes(con, relation, approval.quasi_identifiers, weight=approval.group_size_column)
    return {
        "rows": int(rows),
        "people": risk.records,
        "smallest_group": int(smallest),
        "k_over_quasi_identifiers": risk.k,
        "equivalence_classes": risk.equivalence_classes,
        "prosecutor_risk_average": round(risk.prosecutor_risk_average, 6),
        "prosecutor_risk_highest": round(risk.prosecutor_risk_highest, 6),
    }


UI_BASE_URL_ENV = (
    "PIPELINES_DAGSTER_URL"  # e.g. http://localhost:3000; empty: links relative to the UI serving the card
)


def run_link(run_id: str | None) -> str:
    """A run id as a link to its page in the Dagster UI."""
    if not run_id:
        return "-"
    return f"[{run_id[:8]}]({os.environ.get(UI_BASE_URL_ENV, '').rstrip('/')}/runs/{run_id})"


def _n(value: Any, unit: str) -> str:
    """A count with its unit: '4,000 rows'."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{value} {unit}" if value not in (None, "-") else "-"
    return f"{value:,} {unit}" if isinstance(value, int) else f"{value:,.6g} {unit}"


def _params(params: Mapping[str, Any] | None) -> str:
    """Parameters as words, not Python dicts: 'operators PERSON pseudonymize, DEFAULT replace; score_threshold 0.4'."""

    def show(v: Any) -> str:
        if isinstance(v, Mapping):
            return ", ".join(f"{k} {x}" for k, x in v.items())
        if isinstance(v, (list, tuple)):
            return ", ".join(map(str, v))
        return str(v)

    return "; ".join(f"{k} {show(v)}" for k, v in (params or {}).items() if k != "key_id") or "-"


def source_tags(instance: dg.DagsterInstance, contracts: list[Contract]) -> dict[str, dict[str, dict[str, str]]]:
    """dataset -> column -> classification tags of its de-identified table (with the key id it was built with)."""
    out = {}
    for contract in contracts:
        event = instance.get_latest_materialization_event(dg.AssetKey(f"deidentified_{contract.dataset}"))
        md = event.asset_materialization.metadata if event and event.asset_materialization else {}
        key_id = getattr(md.get("pseudonym_key_id"), "value", None)
        out[contract.dataset] = lineage_cls.contract_tags(contract, key_id)
    return out


def _source_rows(
    instance: dg.DagsterInstance, contracts: list[Contract], fates: Mapping[str, Mapping[str, str]] | None = None
) -> tuple[list[str], list[str]]:
    """Markdown rows describing each contributing dataset and every one of its columns, with its fate in the mart."""
    sources, columns = [], []
    for contract in contracts:
        event = instance.get_latest_materialization_event(dg.AssetKey(f"deidentified_{contract.dataset}"))
        md = event.asset_materialization.metadata if event and event.asset_materialization else {}
        value = lambda k, default="-", md=md: getattr(md.get(k), "value", default)  # noqa: E731
        residual = value("residual_scan", {})
        sources.append(
            f"| deidentified_{contract.dataset} | {run_link(event.run_id if event else None)} | {_n(value('rows_in'), 'rows')} / "
            f"{_n(value('rows_out'), 'rows')} / {_n(value('rows_suppressed'), 'rows')} | {value('contract_version_hash')} | "
            f"{value('pseudonym_key_id')} | {'passed' if isinstance(residual, dict) and residual.get('passed') else '-'} |"
        )
        recorded = {c["column"]: c for c in (value("deidentification", {}) or {}).get("columns", [])}
        fate_of = (fates or {}).get(contract.dataset, {})
        for column in contract.columns:
            r = recorded.get(column.name, {})
            default = (
                "in the de-identified table"
                if column.deidentify.operator != "suppress"
                else "suppressed: never left the raw database"
            )
            fate = fate_of.get(column.name, default)
            values_in = r.get("values_in")
            found = ", ".join(
                f"{k}: {_n(v, 'mention' if v == 1 else 'mentions')}"
                for k, v in (r.get("entities_detected") or {}).items()
            )
            if found and values_in is not None:
                found += f" (in {_n(values_in, 'non-empty values')} of this column)"
            columns.append(
                f"| {contract.dataset}.{column.name} | {column.role.value} | {column.entity or '-'} | "
                f"{column.deidentify.operator} | {_params(r.get('params'))} | {found or '-'} | {fate} |"
            )
    return sources, columns


RISK_UNITS = {
    "rows": "rows",
    "people": "people",
    "smallest_group": "people",
    "k_over_quasi_identifiers": "people",
    "equivalence_classes": "groups",
    "prosecutor_risk_average": "(probability)",
    "prosecutor_risk_highest": "(probability)",
}


def _risk_line(risk: Mapping[str, Any]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {_n(v, RISK_UNITS.get(k, ''))}".rstrip() for k, v in risk.items())


def mart_check_rows(instance: dg.DagsterInstance, mart: str, run_id: str | None) -> list[str]:
    """The mart's check results in this run (GE privacy suite, dbt tests, subject absence), one row each."""
    if not run_id:
        return []
    rows = []
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = record.dagster_event.event_specific_data
        if evaluation.asset_key != dg.AssetKey(mart):
            continue
        md = evaluation.metadata or {}
        expectations = getattr(md.get("expectations"), "value", None)
        failed = getattr(md.get("failed_expectations"), "value", None)
        detail = f"{_n(expectations, 'expectations')}, {_n(failed, 'failed')}" if expectations is not None else "-"
        docs = getattr(md.get("data_docs"), "value", None)
        docs_link = f" ([Data Docs]({docs}))" if isinstance(docs, str) and docs.startswith("http") else ""
        rows.append(
            f"| {evaluation.check_name} | {'passed' if evaluation.passed else '**failed**'} | {detail}{docs_link} | {run_link(run_id)} |"
        )
    return rows


def _published_rows(traced: Mapping[str, lineage_md.Traced]) -> list[str]:
    rows = []
    for column, t in traced.items():
        tags = t.tags
        came_from = ", ".join(f"{d}.{c}" for d, c in t.sources)
        if t.counts_rows_of:
            came_from += ("; " if came_from else "") + "counts rows of " + ", ".join(t.counts_rows_of)
        came_from = came_from or "-"
        rows.append(
            f"| {column} | {t.transform} | {tags.get(lineage_cls.STATE, '-')} | {tags.get(lineage_cls.ROLE, '-')} | "
            f"{tags.get(lineage_cls.ENTITY, '-')} | {came_from} |"
        )
    return rows


def _dp_lines(approval: Approval) -> list[str]:
    """The card's lines on the person-level join gate and the DP release, when the approval declares them."""
    lines = []
    if approval.person_join:
        j = approval.person_join
        lines += [
            "",
            f"**Person-level join**: {j.model} (unit {j.privacy_unit}); the gate blocks when k over its "
            f"quasi-identifiers falls below {j.min_k or approval.min_group_size}.",
        ]
    if approval.dp_release:
        d = approval.dp_release
        lines += [
            f"**DP release**: {d.table} (OpenDP, epsilon {d.epsilon:g}, delta {d.delta:g}, paid by {d.release_consumer}); "
            f"its own privacy card is on published_{d.table}."
        ]
    return lines


def privacy_card(
    mart: str,
    approval: Approval,
    contracts: list[Contract],
    risk: dict,
    instance: dg.DagsterInstance,
    traced: Mapping[str, lineage_md.Traced] | None = None,
    fates: Mapping[str, Mapping[str, str]] | None = None,
    run_id: str | None = None,
) -> str:
    """The steward's one-page answer to 'where did this number come from, and what was done to the people in it?'"""
    sources, columns = _source_rows(instance, contracts, fates)
    checks = mart_check_rows(instance, mart, run_id)
    return "\n".join(
        [
            f"## Privacy card: {mart}",
            "",
            f"**Approval**: {approval.approved_by}, {approval.approved_on}, expires {approval.expires_on}.  ",
            f"**Purpose**: {approval.purpose}  ",
            f"**Departments**: {', '.join(approval.departments)}; joined only on keyed pseudonyms: "
            f"{', '.join(approval.join_keys) or 'no join'}.  ",
            f"**Publishes**: {', '.join(approval.publishes)}; quasi-identifiers {', '.join(approval.quasi_identifiers) or '-'}; "
            f"groups under {approval.min_group_size} ({approval.group_size_column}) are withheld.",
            "",
            "**Risk** (people, not rows): " + _risk_line(risk),
            *_dp_lines(approval),
            "",
            *([f"**Published by run** {run_link(run_id)}", ""] if run_id else []),
            *(
                [
                    "### Published columns (classification traced to the sources)",
                    "| column | how it was made | PII state | role | entity | from (de-identified columns) |",
                    "|---|---|---|---|---|---|",
                    *_published_rows(traced),
                    "",
                ]
                if traced
                else []
            ),
            *(
                [
                    "### Checks of this mart (this run)",
                    "| check | result | expectations | run |",
                    "|---|---|---|---|",
                    *checks,
                    "",
                ]
                if checks
                else []
            ),
            "### Sources (latest de-identification)",
            "| asset | run | rows in / out / suppressed | contract hash | key id | residual PII scan |",
            "|---|---|---|---|---|---|",
            *sources,
            "",
            "### Every column of every contributing dataset, and its fate in this mart",
            "| column | role | entity | operator | parameters | PII found in text | fate in this mart |",
            "|---|---|---|---|---|---|---|",
            *columns,
        ]
    )


# --- publishing: all approved marts of a run, in one transaction, with their dbt types -------------------

PUBLISH_LOCK_TIMEOUT_ENV = "PIPELINES_PUBLISH_LOCK_TIMEOUT_SECONDS"
DEFAULT_PUBLISH_LOCK_TIMEOUT_S = 300.0
UNCHANGED = "nothing was published; the analysts' marts are unchanged."
_TYPE_ALIASES = {
    "INT": "INTEGER",
    "INT4": "INTEGER",
    "SIGNED": "INTEGER",
    "INT8": "BIGINT",
    "LONG": "BIGINT",
    "INT2": "SMALLINT",
    "SHORT": "SMALLINT",
    "INT1": "TINYINT",
    "STRING": "VARCHAR",
    "TEXT": "VARCHAR",
    "CHAR": "VARCHAR",
    "BPCHAR": "VARCHAR",
    "FLOAT8": "DOUBLE",
    "DOUBLE PRECISION": "DOUBLE",
    "FLOAT4": "FLOAT",
    "REAL": "FLOAT",
    "BOOL": "BOOLEAN",
    "LOGICAL": "BOOLEAN",
    "NUMERIC": "DECIMAL(18,3)",
    "DECIMAL": "DECIMAL(18,3)",
    "DATETIME": "TIMESTAMP",
}


def publish_lock_timeout_from_env() -> float:
    """Seconds to wait for connections holding marts.duckdb: $PIPELINES_PUBLISH_LOCK_TIMEOUT_SECONDS, else 300."""
    raw = os.environ.get(PUBLISH_LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_PUBLISH_LOCK_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):  # also refuses NaN
        raise dg.Failure(description=f"{PUBLISH_LOCK_TIMEOUT_ENV} must be a number of seconds (0 or more); {UNCHANGED}")
    return value


def normalize_type(data_type: str) -> str:
    """One spelling per type (case, spacing, common aliases), so dbt's contract and DuckDB's catalog compare."""
    text = re.sub(r"\s*([(),])\s*", r"\1", re.sub(r"\s+", " ", data_type.strip().upper()))
    base, paren, args = text.partition("(")
    if not paren:
        return _TYPE_ALIASES.get(base, base)
    return f"{'DECIMAL' if base == 'NUMERIC' else base}({args}"


def contract_columns(manifest: dict, mart: str) -> dict[str, dict[str, str]]:
    """The model's declared columns: name -> {data_type, description} (dbt's contract)."""
    for node in manifest["nodes"].values():
        if node.get("resource_type") == "model" and node["name"] == mart:
            columns = node.get("columns", {})
            return {
                n: {"data_type": c.get("data_type") or "", "description": c.get("description") or ""}
                for n, c in columns.items()
            }
    return {}


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _is_lock_error(exc: duckdb.Error) -> bool:
    """DuckDB's 'could not set lock' (another process) or a same-file conflict inside this process."""
    message = str(exc).lower()
    other_process = isinstance(exc, (duckdb.IOException, duckdb.ConnectionException)) and "lock" in message
    return other_process or "same database file" in message or "file handle conflict" in message


def _locked_failure(path: Path, waited: float) -> dg.Failure:
    # DuckDB's own message names the holder's program, PID and user: only the path and the advice are shown
    return dg.Failure(
        description=(
            f"{path} is locked by another connection (waited {waited:.0f} s). Close analyst connections to it "
            "(duckdb CLI, BI tools, notebooks); open it read-only only while no run publishes. Nothing was published; "
            "the analysts' marts are unchanged."
        ),
        metadata={"locked_file": str(path), "waited_seconds": round(waited, 1)},
    )


def open_for_publishing(
    path: Path, timeout_s: float, sleep: Callable[[float], None] = time.sleep
) -> duckdb.DuckDBPyConnection:
    """Open the analysts' database for writing, retrying with backoff while another connection holds it."""
    started, delay = time.monotonic(), 0.1
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.Error as exc:
            if not _is_lock_error(exc):
                raise dg.Failure(
                    description=f"{path} could not be opened ({type(exc).__name__}); {UNCHANGED}"
                ) from None
            waited = time.monotonic() - started
            if waited >= timeout_s:
                raise _locked_failure(path, waited) from None
            sleep(min(delay, timeout_s - waited))
            delay = min(delay * 2, 2.0)  # small backoff: an analyst closing a tab should not cost a minute


def _attach_warehouse(con: duckdb.DuckDBPyConnection, warehouse: Path) -> None:
    """The warehouse, read-only: publishing can never change what dbt built."""
    try:
        con.execute(f"ATTACH {_sql_literal(str(warehouse))} AS wh (READ_ONLY)")
    except duckdb.Error as exc:
        held = ", held open by another connection" if _is_lock_error(exc) else ""
        raise dg.Failure(
            description=f"{warehouse} could not be attached read-only ({type(exc).__name__}{held}); {UNCHANGED}"
        ) from None


def _copy_mart(con: duckdb.DuckDBPyConnection, mart: str) -> None:
    """Copy one mart in SQL, so DuckDB's types (DECIMAL(18,2), BIGINT) arrive unchanged."""
    table = quote_ident(mart)
    try:
        con.execute(f"CREATE OR REPLACE TABLE main.{table} AS SELECT * FROM wh.main.{table}")
    except duckdb.Error as exc:
        # the class only: a conversion error's text could quote a cell
        raise dg.Failure(
            description=f"copying {mart} from the warehouse failed ({type(exc).__name__}); {UNCHANGED}"
        ) from None


_OBJECTS = (
    "SELECT schema_name, table_name, 'TABLE' FROM duckdb_tables() WHERE database_name = current_database() AND NOT internal "
    "UNION ALL "
    "SELECT schema_name, view_name, 'VIEW' FROM duckdb_views() WHERE database_name = current_database() AND NOT internal"
)


def _drop_unapproved(con: duckdb.DuckDBPyConnection, approved: set[str]) -> list[str]:
    """Remove every table or view that is not an approved mart: the analysts' database holds nothing else."""
    dropped = []
    for schema, name, kind in con.execute(_OBJECTS).fetchall():
        if not (schema == "main" and name in approved and kind == "TABLE"):
            con.execute(f"DROP {kind} IF EXISTS {quote_ident(schema)}.{quote_ident(name)} CASCADE")
            dropped.append(f"{schema}.{name}")
    return dropped


def published_types(con: duckdb.DuckDBPyConnection, mart: str) -> list[tuple[str, str]]:
    """(column, DuckDB type) of a table in the analysts' database, in column order."""
    return con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_catalog = current_database() "
        "AND table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
        [mart],
    ).fetchall()


def _check_types(mart: str, columns: list[tuple[str, str]], expected: dict[str, str]) -> None:
    """The published columns and types are the dbt contract's, or nothing is published."""
    actual = {c: normalize_type(t) for c, t in columns}
    wanted = {c: normalize_type(t) if t else None for c, t in expected.items()}  # no data_type: any type
    differences = [
        f"{c}: contract {wanted.get(c) or 'absent'}, warehouse {actual.get(c, 'absent')}"
        for c in dict.fromkeys([*wanted, *actual])
        if c not in wanted or c not in actual or (wanted[c] and wanted[c] != actual[c])
    ]
    if differences:
        raise dg.Failure(description=f"{mart} does not match its dbt contract ({'; '.join(differences)}); {UNCHANGED}")


def _commit(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("COMMIT")


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass  # no transaction left to roll back (a failed COMMIT already ended it)


def _write_dp_table(con: duckdb.DuckDBPyConnection, table: str, frame: Any) -> None:
    """A DP release (already noisy: post-processing only from here) as a table of the analysts' database."""
    con.register("_dp_release", frame.to_arrow())
    try:
        con.execute(f"CREATE OR REPLACE TABLE main.{quote_ident(table)} AS SELECT * FROM _dp_release")
    finally:
        con.unregister("_dp_release")


def _stage(
    con: duckdb.DuckDBPyConnection,
    marts: Mapping[str, Approval],
    keep: set[str],
    contracts: Mapping[str, Mapping[str, str]],
    dp_tables: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Inside the open transaction: copy every mart, drop everything else, describe what is about to be swapped in."""
    for mart in marts:
        _copy_mart(con, mart)
    for table, frame in (dp_tables or {}).items():
        _write_dp_table(con, table, frame)
    dropped = _drop_unapproved(con, set(marts) | set(dp_tables or {}) | keep)
    staged = {}
    for mart, approval in marts.items():
        columns = published_types(con, mart)
        if mart in contracts:
            _check_types(mart, columns, dict(contracts[mart]))
        risk = mart_risk(con, disclosure.table(mart, "main"), approval)
        staged[mart] = {"rows": risk["rows"], "columns": columns, "risk": risk}
    dp = {t: {"rows": len(f), "columns": published_types(con, t)} for t, f in (dp_tables or {}).items()}
    return {"marts": staged, "dp": dp, "dropped": dropped}


def _publication_record(
    run_id: str, staged: dict[str, Any], dp_ledger: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The audit event of one publication: every mart with its rows and risk, DP tables with their ledger records."""
    marts = staged["marts"]
    record = {
        "action": "publish",
        "run_id": run_id,
        "marts": list(marts),
        "rows": {m: s["rows"] for m, s in marts.items()},
        "risk": {m: s["risk"] for m, s in marts.items()},
        "dropped": staged["dropped"],
    }
    if staged.get("dp"):
        # the ledger records that paid for (or reused) each release: anchors the ledger in this log too
        record["dp_tables"] = {
            t: {"rows": d["rows"], "ledger": (dp_ledger or {}).get(t)} for t, d in staged["dp"].items()
        }
    return record


def _commit_or_abort(
    con: duckdb.DuckDBPyConnection, storage: PipelineStorage, run_id: str, record: dict[str, Any]
) -> None:
    """COMMIT; if it fails, the audit log says the publication it already recorded did not happen."""
    try:
        _commit(con)
    except duckdb.Error as exc:
        audit.append(
            storage.audit_log,
            {
                "action": "publish_aborted",
                "run_id": run_id,
                "marts": record["marts"],
                "publish_seq": record["seq"],
                "error": type(exc).__name__,
            },
        )
        raise dg.Failure(
            description=f"committing the marts to {storage.marts_db} failed ({type(exc).__name__}); {UNCHANGED}"
        ) from None


def publish_marts(
    storage: PipelineStorage,
    marts: Mapping[str, Approval],
    timeout_s: float,
    *,
    run_id: str = "",
    keep: Iterable[str] = (),
    contracts: Mapping[str, Mapping[str, str]] | None = None,
    dp_tables: Mapping[str, Any] | None = None,
    dp_ledger: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Replace `marts` in the analysts' database from the warehouse in one transaction (all or none).

    Approved marts in `keep` stay as last published; any other table or view is dropped. `contracts` (mart ->
    column -> dbt data_type) must match the copies. `dp_tables` (table -> released polars frame) are written in the
    same transaction, `dp_ledger` (table -> ledger anchor) recorded with them. Returns {"marts": {mart: rows,
    columns, risk}, "dp": {table: rows, columns}, "dropped", "audit"}.
    """
    storage.marts_db.parent.mkdir(parents=True, exist_ok=True)
    con = open_for_publishing(storage.marts_db, timeout_s)
    try:
        _attach_warehouse(con, storage.warehouse_db)
        con.execute("BEGIN TRANSACTION")
        try:
            staged = _stage(con, marts, set(keep), contracts or {}, dp_tables)
            # written before the commit: the record describes the data about to be swapped in
            record = audit.append(storage.audit_log, _publication_record(run_id, staged, dp_ledger))
            _commit_or_abort(con, storage, run_id, record)
        except BaseException:
            _rollback(con)
            raise
    finally:
        con.close()
    storage.marts_db.chmod(
        0o644
    )  # readable by analysts: the deliberate publication; the other databases stay owner-only
    return {**staged, "audit": record}


def _built_in_this_run(context: dg.AssetExecutionContext, mart: str) -> bool:
    """Whether this run built (and so checked) the mart; a mart left from an earlier run may never have passed."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey(mart))
    return event is not None and event.run_id == context.run_id


def _published_metadata(
    context: dg.AssetExecutionContext,
    storage: PipelineStorage,
    mart: str,
    approval: Approval,
    contracts: list[Contract],
    declared: Mapping[str, Mapping[str, str]],
    staged: dict[str, Any],
    head: dict[str, Any],
    traced: Mapping[str, lineage_md.Traced] | None = None,
    fates: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """What a steward reads on a published mart: privacy card, exact types with dbt's descriptions and classification
    tags, column lineage to the mart, approval, risk, audit anchor."""
    traced = traced or {}
    types = dict(staged["columns"])
    descriptions = {c: declared.get(c, {}).get("description") or "" for c in types}
    if traced:
        schema = lineage_md.published_schema({c: traced[c] for c in types if c in traced}, types, descriptions)
    else:
        schema = dg.TableSchema(
            columns=[dg.TableColumn(c, t, description=descriptions[c] or None) for c, t in staged["columns"]]
        )
    return {
        "privacy_card": dg.MetadataValue.md(
            privacy_card(mart, approval, contracts, staged["risk"], context.instance, traced, fates, context.run_id)
        ),
        "dagster/row_count": staged["rows"],
        "dagster/column_schema": schema,
        "dagster/column_lineage": lineage_md.published_lineage(mart, list(types)),
        "column_classification": dg.MetadataValue.json(lineage_md.lineage_json(traced)),
        "approval": dg.MetadataValue.json(approval.model_dump(mode="json")),
        "risk": dg.MetadataValue.json(staged["risk"]),
        "upstream": [mart] + [f"deidentified_{c.dataset}" for c in contracts],
        "analysts_database": str(storage.marts_db),
        "audit_head": dg.MetadataValue.json(head),
        "provenance": provenance(context),
    }


def _dp_spec(mart: str, approval: Approval) -> dg.AssetSpec:
    """The published DP table of a mart, read from its person-level join."""
    spec, join = approval.dp_release, approval.person_join
    assert spec is not None and join is not None
    return dg.AssetSpec(
        key=f"published_{spec.table}",
        deps=[dg.AssetKey(mart), dg.AssetKey(join.model)],
        group_name="approved_marts",
        kinds={"duckdb", "opendp"},
        owners=["team:data-integration"],
        skippable=True,
        tags={"privacy_tier": "published"},
        description=f"{mart} as a differentially private release (OpenDP, epsilon {spec.epsilon:g}, delta {spec.delta:g}) "
        f"of the person-level join {join.model}, with 95% accuracy intervals.",
    )


def _dp_releases(
    context: dg.AssetExecutionContext, storage: PipelineStorage, built: Mapping[str, Approval]
) -> dict[str, Any]:
    """Each built mart's DP release, charged to its release consumer (cached per data version: re-runs are free)."""
    out = {}
    for mart, approval in built.items():
        if approval.dp_release is None or approval.person_join is None:
            continue
        frame = _read_person_frame(storage, approval.person_join.model)
        try:
            outcome = publish_release(storage.root, mart, approval, frame)
        except (dp_budget.BudgetExceeded, dp_budget.LedgerBroken, ReleaseError, QueryRefused) as exc:
            raise dg.Failure(description=f"DP release of {mart}: {exc}; {UNCHANGED}") from None
        context.log.info(
            f"DP release {approval.dp_release.table}: {'cached (nothing spent)' if outcome.cached else 'computed'}, "
            f"{len(outcome.table)} groups released"
        )
        out[mart] = outcome
    return out


def _dp_metadata(
    storage: PipelineStorage,
    mart: str,
    approval: Approval,
    outcome: dp_budget.Outcome,
    staged: dict[str, Any],
    head: dict[str, Any],
    context: dg.AssetExecutionContext | None = None,
) -> dict[str, Any]:
    """What a steward reads on a DP table: card, mechanism, budgets spent and remaining, both audit anchors."""
    spec = approval.dp_release
    assert spec is not None
    mechanism = outcome.mechanism or {}
    budget = dp_budget.summary(dp_budget.Ledger(storage.root), mart, spec)
    ledger_head = audit.anchor(outcome.record)
    return {
        "dagster/row_count": staged["rows"],
        "dagster/column_schema": dg.TableSchema(columns=[dg.TableColumn(c, t) for c, t in staged["columns"]]),
        "privacy_card": dg.MetadataValue.md(dp_card(mart, approval, mechanism, outcome, budget)),
        "dp_mechanism": dg.MetadataValue.json(mechanism),
        "dp_budget": dg.MetadataValue.json(budget),
        "dp_spent_this_run": dg.MetadataValue.json(
            {
                "consumer": spec.release_consumer,
                "cached": outcome.cached,
                "epsilon": 0.0 if outcome.cached else spec.epsilon,
                "delta": 0.0 if outcome.cached else spec.delta,
            }
        ),
        "analysts_database": str(storage.marts_db),
        audit.ANCHOR_METADATA_KEY: dg.MetadataValue.json([head, ledger_head]),
        **({"provenance": provenance(context)} if context is not None else {}),
    }


def classification_gate(
    context: dg.AssetExecutionContext,
    marts: Mapping[str, Approval],
    sources: Mapping[str, list[Contract]],
    lineage: Mapping[str, Mapping[str, ColumnOrigin]],
) -> tuple[dict, dict]:
    """Each mart's published columns traced to the de-identified tables; a column that inherits an unmasked direct
    identifier (or join key) fails the publication before anything is written."""
    traced, fates, failures = {}, {}, []
    for mart, approval in marts.items():
        tags = source_tags(context.instance, sources[mart])
        columns = list(lineage.get(mart, {}))
        traced[mart] = lineage_md.published_columns(mart, columns, lineage, tags)
        fates[mart] = {
            c.dataset: lineage_md.fates(mart, c, traced[mart], lineage, list(approval.join_keys)) for c in sources[mart]
        }
        failures += [f"{mart}.{f}" for f in lineage_md.gate_failures(traced[mart])]
    if failures:
        raise dg.Failure(
            description=(
                "published columns would carry an unmasked direct identifier (classification gate): "
                + "; ".join(failures)
                + f"; {UNCHANGED}"
            )
        )
    return traced, fates


def build_publish(
    manifest: dict,
    marts: dict[str, Approval],
    sources: dict[str, list[Contract]],
    lineage: Mapping[str, Mapping[str, ColumnOrigin]] | None = None,
) -> dg.AssetsDefinition:
    """One step publishes every approved mart and DP release: analysts see all of a run's or none of them."""
    declared = {mart: contract_columns(manifest, mart) for mart in marts}
    lineage = lineage or {}
    specs = [
        dg.AssetSpec(
            key=f"published_{mart}",
            deps=[dg.AssetKey(mart)],
            group_name="approved_marts",
            kinds={"duckdb"},
            owners=["team:data-integration"],
            description=f"{mart}, published to the analysts' database after its checks passed.",
            tags={"privacy_tier": "published"},
            skippable=True,  # a department's run rebuilds only its marts; the others stay as last published
        )
        for mart in marts
    ]
    specs += [_dp_spec(mart, a) for mart, a in marts.items() if a.dp_release is not None]

    @dg.multi_asset(specs=specs, can_subset=False, name="publish_approved_marts")
    def publish_approved_marts(
        context: dg.AssetExecutionContext, storage: PipelineStorage
    ) -> Iterator[dg.MaterializeResult]:
        release_dbt_duckdb()  # dbt-duckdb may still hold the warehouse in this process, which would refuse the attach
        built = {m: a for m, a in marts.items() if _built_in_this_run(context, m)}
        kept = sorted(set(marts) - set(built))
        kept += [a.dp_release.table for m, a in marts.items() if m in kept and a.dp_release is not None]
        if kept:
            context.log.info(f"not rebuilt in this run, kept as last published: {', '.join(kept)}")
        if not built:
            return
        traced, fates = classification_gate(context, built, sources, lineage)
        releases = _dp_releases(context, storage, built)
        tables = {built[m].dp_release.table: o.table for m, o in releases.items()}  # type: ignore[union-attr]
        anchors = {built[m].dp_release.table: audit.anchor(o.record) for m, o in releases.items()}  # type: ignore[union-attr]
        types = {m: {c: d["data_type"] for c, d in declared[m].items()} for m in built}
        result = publish_marts(
            storage,
            built,
            publish_lock_timeout_from_env(),
            run_id=context.run_id,
            keep=kept,
            contracts=types,
            dp_tables=tables,
            dp_ledger=anchors,
        )
        record = result["audit"]
        head = {"log": storage.audit_log.name, "seq": record["seq"], "hash": record["hash"]}
        for mart, staged in result["marts"].items():
            metadata = _published_metadata(
                context,
                storage,
                mart,
                built[mart],
                sources[mart],
                declared[mart],
                staged,
                head,
                traced.get(mart),
                fates.get(mart),
            )
            yield dg.MaterializeResult(asset_key=f"published_{mart}", metadata=metadata)
        for mart, outcome in releases.items():
            table = built[mart].dp_release.table  # type: ignore[union-attr]
            metadata = _dp_metadata(storage, mart, built[mart], outcome, result["dp"][table], head, context)
            yield dg.MaterializeResult(asset_key=f"published_{table}", metadata=metadata)

    return publish_approved_marts


def person_join_risk(
    con: duckdb.DuckDBPyConnection, relation: str, quasi_identifiers: list[str], min_k: int
) -> dict[str, Any]:
    """k over the quasi-identifiers of every department, joined per person before aggregation (counts only)."""
    if not con.execute(f"SELECT count(*) FROM (SELECT 1 FROM {disclosure.relation_sql(relation)} LIMIT 1)").fetchall()[
        0
    ][0]:
        return {"people": 0, "quasi_identifiers": quasi_identifiers, "min_k": min_k, "k": None, "passed": True}
    risk = disclosure.class_sizes(con, relation, quasi_identifiers, k=min_k)
    return {
        "people": risk.records,
        "quasi_identifiers": quasi_identifiers,
        "min_k": min_k,
        "k": risk.k,
        "equivalence_classes": risk.equivalence_classes,
        "people_in_classes_below_min_k": risk.records_below_k,
        "passed": risk.k >= min_k,
    }


@dataclass(frozen=True)
class PersonJoinGate:
    """Where a mart's person-level join is and what the gate measures on it."""

    model: str
    quasi_identifiers: list[str]
    min_k: int
    carried: dict[str, list[str]] = field(
        default_factory=dict
    )  # join column -> department quasi-identifiers it comes from
    not_carried: dict[str, list[str]] = field(
        default_factory=dict
    )  # dataset -> its quasi-identifiers that never reach the join


def _de_identified_sources(
    model: str, column: str, lineage: Mapping[str, Mapping[str, ColumnOrigin]], depth: int = 0
) -> set[tuple[str, str]]:
    """(dataset, column) of the de-identified tables a model's column is computed from, through every model between."""
    if model.startswith("deidentified_"):
        return {(model[len("deidentified_") :], column)}
    origin = lineage.get(model, {}).get(column)
    if origin is None or depth > 20:
        return set()
    return set().union(*[_de_identified_sources(m, c, lineage, depth + 1) for m, c in origin.deps])


def person_join_quasi_identifiers(
    model: str,
    declared: Iterable[str],
    privacy_unit: str,
    lineage: Mapping[str, Mapping[str, ColumnOrigin]],
    contracts: Iterable[Contract],
) -> tuple[list[str], dict[str, list[str]], dict[str, list[str]]]:
    """Every column of the person-level join made from a quasi-identifier of any contributing department (`contracts`),
    found by column lineage, with the declared ones: what the gate counts k over. Also which department quasi-identifiers
    each carries, and which never reach the join (they cannot single anyone out through it)."""
    quasi = {(c.dataset, col.name) for c in contracts for col in c.columns_with_role(Role.quasi_identifier)}
    carried: dict[str, list[str]] = {}
    for column in lineage.get(model, {}):
        hits = sorted(f"{d}.{c}" for d, c in _de_identified_sources(model, column, lineage) & quasi)
        if hits and column != privacy_unit:
            carried[column] = hits
    reached = {h for hits in carried.values() for h in hits}
    not_carried: dict[str, list[str]] = {}
    for d, c in sorted(quasi):
        if f"{d}.{c}" not in reached:
            not_carried.setdefault(d, []).append(c)
    columns = list(dict.fromkeys([*declared, *carried]))
    return columns, carried, not_carried


def person_join_gate(
    manifest: dict,
    approval: Approval,
    lineage: Mapping[str, Mapping[str, ColumnOrigin]] | None = None,
    contracts: Iterable[Contract] = (),
) -> PersonJoinGate | None:
    """The mart's person-level join gate: its model, the quasi-identifiers of every contributing department it carries
    (declared, and found by column lineage) and the threshold."""
    join = approval.person_join
    if join is None:
        return None
    person = approval_for(manifest, join.model)
    if person is None or not person.person_level:
        raise ValueError(f"person_join.model {join.model} must carry an approval with person_level: true")
    contributing = [c for c in contracts if c.department in person.departments]
    columns, carried, not_carried = person_join_quasi_identifiers(
        join.model, person.quasi_identifiers, join.privacy_unit, lineage or {}, contributing
    )
    return PersonJoinGate(join.model, columns, join.min_k or approval.min_group_size, carried, not_carried)


def _blocked(result: dg.AssetCheckResult, risk: dict[str, Any], model: str) -> dg.AssetCheckResult:
    """The suite's result, failed because the person-level join singles people out."""
    description = (
        f"person-level join risk: k {risk['k']} over {', '.join(risk['quasi_identifiers'])} of {model} is below the approved "
        f"{risk['min_k']} ({risk['people_in_classes_below_min_k']} of {risk['people']} people in smaller classes); "
        + (result.description or "")
    )
    return dg.AssetCheckResult(
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description[:2000],
        metadata=dict(result.metadata),
    )


def _privacy_check(
    mart: str, approval: Approval, suites_dir: Path, gate: PersonJoinGate | None = None
) -> dg.AssetChecksDefinition:
    """The mart's blocking GE privacy suite, on the warehouse copy, before anything is published."""

    @dg.asset_check(
        asset=dg.AssetKey(mart),
        name="privacy_suite",
        blocking=True,
        additional_deps=[dg.AssetKey(gate.model)] if gate else None,
        description=f"GE suite {mart}.privacy: approved columns, minimum group size, k over published quasi-identifiers, "
        "no PII patterns" + (f"; k over the person-level join {gate.model}" if gate else "") + ".",
    )
    def mart_privacy(storage: PipelineStorage) -> dg.AssetCheckResult:
        # default config: dagster-dbt may still hold this file open in-process, and DuckDB refuses a second config
        with duckdb.connect(str(storage.warehouse_db)) as con:
            relation = disclosure.table(mart, "main")
            features = risk_features(con, relation, approval.quasi_identifiers, weight=approval.group_size_column)
            risk = mart_risk(con, relation, approval)
            join = (
                None
                if gate is None
                else person_join_risk(con, disclosure.table(gate.model, "main"), gate.quasi_identifiers, gate.min_k)
            )
        outcome = run_suite(
            load_suite(suites_dir, f"{mart}.privacy"),
            features,
            storage.gx_dir,
            mart_parameters(approval),
            docs_url=storage.data_docs_url,
        )
        extra: dict[str, Any] = {"risk": dg.MetadataValue.json(risk)}
        if gate is None or join is None:
            return check_result(outcome, extra)
        risk = join | {"carried_from": gate.carried, "department_quasi_identifiers_not_in_join": gate.not_carried}
        result = check_result(outcome, {**extra, "person_join_risk": dg.MetadataValue.json(risk)})
        return result if risk["passed"] else _blocked(result, risk, gate.model)

    return mart_privacy


def build_marts(
    manifest_path: Path, contracts_dir: Path = CONTRACTS_DIR, suites_dir: Path = EXPECTATIONS_DIR
) -> dg.Definitions:
    """A blocking privacy check per approved mart and one publish step for all of them."""
    manifest = load_manifest(manifest_path)
    all_contracts = load_contracts(contracts_dir)
    marts = approved_marts(manifest)
    sources = {}
    for mart in marts:
        departments = model_departments(manifest, mart, contracts_dir)
        sources[mart] = [c for c in all_contracts if c.department in departments]
    lineage = lineage_for_manifest(manifest_path, contracts_dir)  # static column lineage of every dbt model
    checks = [
        _privacy_check(mart, approval, suites_dir, person_join_gate(manifest, approval, lineage, all_contracts))
        for mart, approval in marts.items()
    ]
    assets = [build_publish(manifest, marts, sources, lineage)] if marts else []
    return dg.Definitions(assets=assets, asset_checks=checks)
