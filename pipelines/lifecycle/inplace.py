"""Applying opt-outs to an already de-identified table in SQL: no free text is scanned again.

An opt-out only takes rows away from what de-identification reads. When nothing else changed since the table was
built (same raw batches, contract, key, code, retention horizon, no erasure that shrank the known-identifier index),
de-identifying the smaller input gives the same rows as deleting the person's rows from the published table:
every other row's text is masked the same way (the known-identifier index and the declared terms are unchanged),
and a class that now falls below k is withheld by the same rule the full path applies (with the same adaptive
blanking, decided again over the rows left). `plan` says whether that holds, and why not; `apply` builds the staged
table in one transaction (the person's rows deleted, rows of classes that fell below k withheld); the caller then
scrubs, gates, audits and publishes it as it does a full rebuild.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from pipelines.contracts import Contract
from pipelines.ingest import quote_ident
from pipelines.lifecycle import matching
from pipelines.lifecycle import requests as store
from pipelines.privacy.deidentify import ColumnRecord, DeidentifiedTable
from pipelines.privacy.operators import apply_column
from pipelines.privacy.suppression import enforce_k_anonymity

BASIS_METADATA = "in_place_basis"  # what the table was built from: the next request compares against it
APPLIED_METADATA = "request_application"  # how this materialization applied the requests: in place or rebuilt
FORMAT = 1  # the basis's layout; a table recorded under another (or none) is rebuilt
FULL_REBUILD_TAG = "pipelines/full_rebuild"  # "1" on a run: rebuild whole tables even where in place would do
# what the published rows are a function of, besides the data: these modules and the detector's versions
_CODE = ("privacy", "lifecycle/matching.py", "lifecycle/inplace.py")


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """The de-identification code and detector the table was built with (a table from other code is rebuilt)."""
    from pipelines.provenance import component_versions

    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(str(FORMAT).encode())
    for part in _CODE:
        files = (root / part).rglob("*") if (root / part).is_dir() else [root / part]
        for path in sorted(p for p in files if p.suffix in (".py", ".yaml", ".yml")):  # the analyzer's conf too
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    versions = component_versions()
    for name in ("nlp_model", "presidio-analyzer", "presidio-anonymizer", "spacy", "duckdb"):
        digest.update(f"{name}={versions.get(name)}".encode())
    return digest.hexdigest()[:16]


def raw_versions(instance: dg.DagsterInstance, contracts: list[Contract]) -> dict[str, str | None]:
    """Each department's last raw batch (run and time): the input of this table and of the known-identifier index."""
    out = {}
    for c in contracts:
        event = instance.get_latest_materialization_event(dg.AssetKey(f"raw_{c.dataset}"))
        out[c.dataset] = f"{event.run_id}@{event.timestamp:.6f}" if event else None
    return out


def _value(entry: Any) -> Any:
    return getattr(entry, "value", entry)


def pseudonymized_linking(contract: Contract) -> list[str]:
    """Linking identifier columns published as keyed pseudonyms of their entity: the person's rows are found by them."""
    return [
        c.name
        for c in matching.identifier_columns(contract)
        if matching.linking(c)
        and c.deidentify.operator == "pseudonymize"
        and (getattr(c.deidentify, "domain", None) or c.entity) == c.entity
    ]


def _terms(raw_con, view: str, contract: Contract) -> dict[str, Any]:
    """The declared non-personal terms' parameters of every free-text column, as the full path would read them now."""
    from pipelines.privacy.analyzer import MAX_TERMS
    from pipelines.privacy.free_text import declared_terms

    src, k = quote_ident(view), contract.privacy.k_anonymity

    def distinct(name: str):
        col = quote_ident(name)
        return raw_con.execute(f"SELECT DISTINCT {col} FROM {src} WHERE {col} IS NOT NULL").df().iloc[:, 0]

    def frequent(name: str):
        col = quote_ident(name)
        return (
            raw_con.execute(
                f"SELECT CAST({col} AS VARCHAR) AS v FROM {src} WHERE v IS NOT NULL GROUP BY v "
                f"HAVING count(*) >= {int(k)} ORDER BY count(*) DESC, v LIMIT {int(MAX_TERMS)}"
            )
            .df()
            .iloc[:, 0]
        )

    out = {}
    for c in contract.columns:
        spec = c.deidentify
        if spec.operator == "scan" and (spec.non_personal_terms_from or spec.vocabulary_from_values):
            out[c.name] = declared_terms(spec, distinct, lambda c=c: frequent(c.name), k)[1]
    return out


def _previous_terms(previous: dict[str, Any]) -> dict[str, Any]:
    columns = (_value(previous.get("deidentification")) or {}).get("columns", [])
    return {
        c["column"]: c["params"]["non_personal_terms"] for c in columns if "non_personal_terms" in c.get("params", {})
    }


@dataclass
class Plan:
    """Whether this step can apply the requests in place, and why (not)."""

    in_place: bool
    reason: str
    previous: dict[str, Any] = field(default_factory=dict)  # the last materialization's metadata (values)
    previous_run: str | None = None
    new_requests: list[str] = field(default_factory=list)
    rows_in: int = 0  # what the full path would read now (the filtered raw view)
    rows_out: int = 0  # the published table's rows, as the last materialization recorded them

    def metadata(self, **applied: Any) -> dict[str, Any]:
        mode = "applied in place" if self.in_place else "full rebuild"
        return {"mode": mode, "reason": self.reason, "requests": self.new_requests, **applied}


def basis(
    contract: Contract,
    key_id: str,
    requests: list[dict],
    raw: dict[str, str | None],
    horizon: date | None,
    result: DeidentifiedTable,
    engine: str = "duckdb",
) -> dict[str, Any]:
    """Recorded with every materialization: what a later in-place application must find unchanged."""
    return {
        "format": FORMAT,
        "engine": engine,  # the engine's copy of the table (Spark: Parquet) is the one changed in place
        "code": code_fingerprint(),
        "contract_version_hash": contract.version_hash,
        "pseudonym_key_id": key_id,
        "raw_versions": raw,
        "retention_horizon": str(horizon) if horizon else None,
        "requests": [r["id"] for r in requests],
        "rows_in": result.rows_in,
        "rows_out": result.rows_out,
        "rows_suppressed": result.rows_suppressed,
        "blanked": list(result.k_anonymity.get("blanked", [])),
    }


def plan(
    context: dg.AssetExecutionContext,
    contract: Contract,
    contracts: list[Contract],
    key_id: str,
    requests: list[dict],
    horizon: date | None,
    raw_con,
    con,
    engine: str = "duckdb",
) -> Plan:
    """In place when the previous table is exactly what the full path would have built before the new opt-outs."""
    ds = contract.dataset
    if context.run.tags.get(FULL_REBUILD_TAG) == "1":
        return Plan(False, f"the run asked for a full rebuild ({FULL_REBUILD_TAG}=1)")
    event = context.instance.get_latest_materialization_event(dg.AssetKey(f"deidentified_{ds}"))
    if event is None or event.asset_materialization is None:
        return Plan(False, "no previous de-identified table")
    previous = {k: _value(v) for k, v in event.asset_materialization.metadata.items()}
    base = previous.get(BASIS_METADATA)
    run = event.run_id
    reject = lambda why: Plan(False, why, previous, run)  # noqa: E731
    if not isinstance(base, dict) or base.get("format") != FORMAT:
        return reject("the previous table was built by an older code version (no in-place basis recorded)")
    if base.get("engine", "duckdb") != engine:  # recorded since the Spark engine: older tables are DuckDB's
        return reject(f"the table was built on the {base.get('engine', 'duckdb')} engine, this run uses {engine}")
    if base["code"] != code_fingerprint():
        return reject("the de-identification code or detector changed since the table was built")
    if base["contract_version_hash"] != contract.version_hash:
        return reject("the contract changed since the table was built")
    if base["pseudonym_key_id"] != key_id:
        return reject("the pseudonym key changed since the table was built")
    if base["retention_horizon"] != (str(horizon) if horizon else None):
        return reject("a retention purge moved the horizon since the table was built: it is recomputed")
    if base["raw_versions"] != raw_versions(context.instance, contracts):
        return reject("a raw table was re-ingested since (new data, or a changed known-identifier index)")
    ids = [r["id"] for r in requests]
    if not set(base["requests"]) <= set(ids):
        return reject("a request in force when the table was built is no longer: its rows come back")
    new = [r for r in requests if r["id"] not in set(base["requests"])]
    if not new:
        return reject("no new request since the table was built: rebuilt as asked")
    if unresolved := [r["id"] for r in new if "resolution" not in r]:
        return reject(f"request(s) {', '.join(unresolved)} not resolved in the raw tables yet")
    if erased := [r["id"] for r in new if r["kind"] != "opt-out"]:
        return Plan(
            False,
            f"erasure ({', '.join(erased)}) deleted raw rows, which changes the known-identifier index that masks "
            "free text: every row is de-identified again",
            previous,
            run,
            [r["id"] for r in new],
        )
    out = Plan(False, "", previous, run, [r["id"] for r in new])
    if not pseudonymized_linking(contract):
        out.reason = "no linking identifier is published as a keyed pseudonym: the person's rows cannot be found"
        return out
    present = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if ds not in present or con.execute(f"SELECT count(*) FROM {quote_ident(ds)}").fetchone()[0] != base["rows_out"]:
        out.reason = "the de-identified table is not the one the last materialization recorded"
        return out
    view = matching.view_name(ds)
    findable = " OR ".join(f"{quote_ident(c)} IS NOT NULL" for c in pseudonymized_linking(contract))
    hidden = raw_con.execute(
        f"SELECT count(*) FROM {quote_ident(ds)} WHERE list_contains(?, {matching.FLAG_COLUMN}) AND NOT ({findable})",
        [out.new_requests],
    ).fetchone()[0]
    if hidden:
        out.reason = f"{hidden} row(s) of the requested people hold no published pseudonym: they cannot be found"
        return out
    if _terms(raw_con, view, contract) != _previous_terms(previous):
        out.reason = "the declared non-personal terms of a free-text column changed: its text is masked again"
        return out
    out.rows_in = int(raw_con.execute(f"SELECT count(*) FROM {quote_ident(view)}").fetchone()[0])
    if out.rows_in > base["rows_in"]:
        out.reason = "the raw view holds more rows than the table was built from"
        return out
    out.rows_out = base["rows_out"]
    out.in_place, out.reason = True, "only opt-outs since the last build, nothing else changed"
    return out


class NotInPlace(Exception):
    """`apply` found the in-place result would differ from a full rebuild; nothing was kept."""


def apply(
    raw_con, con, table: str, staged: str, contract: Contract, ctx, plan_: Plan, requests: list[dict]
) -> tuple[DeidentifiedTable, dict[str, int]]:
    """The staged table: the published one without the requested people's rows, then without rows of classes that
    fell below k (one transaction). The result's records, detector and classification are the previous build's.

    k is decided as the full path decides it, by `enforce_k_anonymity` over the quasi-identifiers the contract's
    operators give the rows left (structured columns only: no text is read); the recount in the table must agree."""
    base, previous = plan_.previous[BASIS_METADATA], plan_.previous
    quasi = contract.published_quasi_identifiers
    by_name = {c.name: c for c in contract.columns}
    view = quote_ident(matching.view_name(contract.dataset))
    selected = ", ".join(quote_ident(q) for q in quasi)
    frame = raw_con.execute(f"SELECT {selected} FROM {view}").df() if quasi else pd.DataFrame(index=range(0))
    generalized = pd.DataFrame({q: apply_column(frame[q], by_name[q], ctx)[0] for q in quasi}, index=frame.index)
    _, suppressed, k_params = enforce_k_anonymity(generalized, contract)  # PrivacyThresholdError as in the full path
    if list(k_params.get("blanked", [])) != list(base["blanked"]):
        raise NotInPlace("the quasi-identifiers blanked to reach k differ now: the table is rebuilt")
    keys = sorted({k for r in requests for k in store.keys_of(r)[0]})
    linking = pseudonymized_linking(contract)
    k = contract.privacy.k_anonymity
    src, target = quote_ident(table), quote_ident(staged)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"CREATE OR REPLACE TABLE {target} AS SELECT * FROM {src}")
        removed = con.execute(
            f"DELETE FROM {target} WHERE " + " OR ".join(f"list_contains(?, {quote_ident(c)})" for c in linking),
            [keys] * len(linking),
        ).fetchone()[0]
        small = 0
        if quasi and k > 1 and plan_.rows_in:
            partition = ", ".join(quote_ident(q) for q in quasi)
            small = con.execute(
                f"DELETE FROM {target} WHERE rowid IN (SELECT rowid FROM (SELECT rowid, count(*) OVER "
                f"(PARTITION BY {partition}) AS n FROM {target}) WHERE n < {int(k)})"
            ).fetchone()[0]
        rows_out = base["rows_out"] - removed - small
        if rows_out != plan_.rows_in - suppressed:
            raise NotInPlace(
                f"the table would keep {rows_out} rows where k-anonymity over the rows left keeps "
                f"{plan_.rows_in - suppressed}: the table is rebuilt"
            )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        con.execute(f"DROP TABLE IF EXISTS {target}")
        raise
    residual = dict(previous.get("residual_scan") or {})
    residual["carried_over_from_run"] = plan_.previous_run  # text only lost values: the gate's verdict stands
    return DeidentifiedTable(
        None,
        [ColumnRecord(**c) for c in (previous.get("deidentification") or {}).get("columns", [])],
        rows_in=plan_.rows_in,
        rows_out=rows_out,
        rows_suppressed=suppressed,
        detector=previous.get("detector") or None,
        k_anonymity=k_params,
        residual_scan=residual,
        classification=(previous.get("column_classification") or {}).get("columns", []),
    ), {
        "rows_removed": int(removed),
        "rows_newly_suppressed": int(small),
        # per-column records (values in, PII found) and the residual scan are those of the build it started from
        "column_records_from_run": plan_.previous_run,
    }
