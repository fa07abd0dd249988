"""Dagster side of privacy over time: the subject_requests and retention_purge assets, their jobs, sensor and schedule."""

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import dagster as dg
from dagster_duckdb import DuckDBResource

from pipelines import audit
from pipelines.contracts import Contract
from pipelines.ingest import landed_files
from pipelines.lifecycle import matching, retention
from pipelines.lifecycle import requests as store
from pipelines.lifecycle.files import Unreadable, person_rows, rewrite
from pipelines.resources import PipelineStorage, PrivacySettings, connection

SUBJECT_REQUESTS = dg.AssetKey("subject_requests")
RETENTION_PURGE = dg.AssetKey("retention_purge")
REQUESTS_JOB = "subject_requests_job"
RETENTION_JOB = "retention_purge_job"  # not the asset's name: job and op names share one namespace
GROUP = "privacy_lifecycle"


def deidentified_key(dataset: str) -> dg.AssetKey:
    return dg.AssetKey(f"deidentified_{dataset}")


def raw_key(dataset: str) -> dg.AssetKey:
    return dg.AssetKey(f"raw_{dataset}")


def _tables(con) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}


def check_key_ids(requests: list[dict], key_id: str) -> None:
    """Requests keyed under another pseudonym key cannot be matched: stop rather than silently miss the person."""
    stale = [r["id"] for r in requests if r["key_id"] != key_id]
    if stale:
        raise dg.Failure(
            description=(
                f"{len(stale)} request(s) ({', '.join(stale[:5])}) were recorded under another pseudonym key than {key_id}; "
                "their people cannot be found. Record them again (requests add) after a key rotation; nothing was changed."
            )
        )


# --- subject_requests: resolve every request against the raw tables, erase, flag ---------------------------------


def _mentioned_in(con, datasets: list[str], keys: set[str]) -> list[str]:
    """Datasets whose de-identified table still shows one of the person's pseudonyms."""
    pattern = matching._pattern(keys)
    present = _tables(con)
    out = []
    for ds in datasets:
        if (
            ds in present
            and pattern
            and any(
                con.execute(f'SELECT count(*) FROM "{ds}" WHERE regexp_matches("{c}", ?)', [pattern]).fetchone()[0]
                for c in matching._text_columns(con, ds)
            )
        ):
            out.append(ds)
    return out


def _erase_files(storage: PipelineStorage, contracts: list[Contract], secret: bytes, keys: set[str]) -> list[dict]:
    """Landed files and quarantine copies holding an erased person, rewritten without their rows (or removed)."""
    changes = []
    for contract in contracts:
        drop = person_rows(contract, secret, keys)
        folder = storage.quarantine_dir / contract.dataset
        copies = [p for p in folder.glob("*/*") if p.is_file() and p.name != "reason.json"] if folder.is_dir() else []
        for where, path in [("landing", p) for p in landed_files(storage.landing_dir, contract)] + [
            ("quarantine", p) for p in copies
        ]:
            try:
                change = rewrite(path, contract, drop)
            except Unreadable:
                if where == "quarantine":  # a rejected file that cannot be read row by row: removed, not trimmed
                    path.unlink()
                    changes.append(
                        {
                            "dataset": contract.dataset,
                            "location": where,
                            "file": path.parent.name + "/" + path.name,
                            "removed_unreadable": True,
                        }
                    )
                continue
            if change:
                name = change["file"] if where == "landing" else f"{path.parent.name}/{change['file']}"
                changes.append({"dataset": contract.dataset, "location": where, **change, "file": name})
    return changes


def _digest(resolution: dict) -> str:
    """What a resolution found, for telling a changed one from a repeated one (counts and key counts)."""
    body = json.dumps(
        [resolution["rows"], resolution["mentions"], len(resolution["linking_keys"]), len(resolution["mention_keys"])],
        sort_keys=True,
    )
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _new_resolution(
    previous: dict | None, res: matching.Resolution, mentions: list[str], removed: dict[str, int], run_id: str
) -> dict:
    """The request's resolution after this run: keys only grow, a person once found stays found."""
    previous = previous or {}
    erased = dict(previous.get("rows_erased", {}))
    for ds, n in removed.items():
        erased[ds] = erased.get(ds, 0) + n
    rows = res.rows
    resolution = {
        "linking_keys": sorted(res.linking_keys),
        "mention_keys": sorted(res.mention_keys),
        "rows": rows,
        "mentions": mentions,
        "rows_erased": erased,
        "matched": bool(previous.get("matched") or rows or mentions),
        "assets": [deidentified_key(ds).to_user_string() for ds in sorted(set(rows) | set(mentions))],
    }
    resolution["digest"] = _digest(resolution)
    if previous.get("digest") == resolution["digest"]:
        return previous | {"rows_erased": erased}
    return resolution | {"run_id": run_id, "at": store.now_iso()}


def _apply(
    context,
    storage: PipelineStorage,
    privacy: PrivacySettings,
    raw_db: DuckDBResource,
    deid_db: DuckDBResource,
    contracts: list[Contract],
) -> dict[str, Any]:
    """Resolve, erase, flag and recreate the de-identification views; returns per-request outcomes (no values)."""
    paths = store.Paths.under(storage.root)
    key = privacy.pseudonym_key(storage)
    store.import_drops(paths, key, contracts)
    requests = store.active(paths)
    check_key_ids(requests, key.key_id)
    state = retention.load_state(paths.store_dir)
    outcomes: dict[str, Any] = {}
    with connection(raw_db) as con:
        present = [c for c in contracts if c.dataset in _tables(con)]
        frames = {c.dataset: (c, matching.key_frame(con, c, key.secret)) for c in present} if requests else {}
        resolved = {r["id"]: matching.resolve(frames, *store.keys_of(r)) for r in requests}
        changes = {}
        for c in present:
            by_kind = {
                k: {r["id"]: resolved[r["id"]].rowids.get(c.dataset, []) for r in requests if r["kind"] == k}
                for k in store.KINDS
            }
            changes[c.dataset] = matching.apply_to_raw(con, c.dataset, by_kind["opt-out"], by_kind["erasure"])
            matching.create_view(con, c, retention.enforced_horizon(state, c.dataset))
    erased_keys = {k for r in requests if r["kind"] == "erasure" for k in resolved[r["id"]].linking_keys}
    files = _erase_files(storage, contracts, key.secret, erased_keys) if erased_keys else []
    with connection(deid_db) as dcon:
        for r in requests:
            res = resolved[r["id"]]
            removed = {ds: ch["removed"][r["id"]] for ds, ch in changes.items() if r["id"] in ch["removed"]}
            mentions = _mentioned_in(dcon, [c.dataset for c in contracts], res.mention_keys)
            resolution = _new_resolution(r.get("resolution"), res, mentions, removed, context.run_id)
            store.update(paths, r["id"], "resolution", resolution)
            outcomes[r["id"]] = {
                "kind": r["kind"],
                "recorded_at": r["recorded_at"],
                "matched": resolution["matched"],
                "rows_found": res.rows,
                "raw_rows_removed": removed,
                "rebuild": resolution["assets"],
                "raw_rows_flagged": {
                    ds: ch["flagged"][r["id"]] for ds, ch in changes.items() if r["id"] in ch["flagged"]
                },
            }
    return {"outcomes": outcomes, "files": files, "changes": changes}


def build_subject_requests(contracts: list[Contract]) -> dg.AssetsDefinition:
    @dg.asset(
        key=SUBJECT_REQUESTS,
        deps=[raw_key(c.dataset) for c in contracts] + [RETENTION_PURGE],
        group_name=GROUP,
        kinds={"duckdb"},
        owners=["team:data-integration"],
        tags={"privacy_tier": "raw"},
        description=(
            "Data subjects' opt-out and erasure requests, applied to the raw tables: every request is followed through "
            "the person's identifiers in every department; erased rows are deleted (raw, landed files, quarantine copies), "
            "opted-out rows flagged; de-identification reads only the rows left."
        ),
    )
    def subject_requests(
        context: dg.AssetExecutionContext,
        storage: PipelineStorage,
        privacy: PrivacySettings,
        raw_database: DuckDBResource,
        deidentified_database: DuckDBResource,
    ) -> Iterator:
        storage.ensure()
        result = _apply(context, storage, privacy, raw_database, deidentified_database, contracts)
        log = storage.audit_log
        for change in result["files"]:  # each replacement on record: what file, how many rows, hashes before and after
            audit.append(log, {"action": "erasure_file_replaced", "run_id": context.run_id, **change})
        record = audit.append(
            log,
            {
                "action": "subject_requests",
                "run_id": context.run_id,
                "requests": result["outcomes"],
                "files_replaced": len(result["files"]),
            },
        )
        for ds, change in result["changes"].items():
            if change["removed"] or change["flagged"]:
                yield dg.AssetObservation(
                    asset_key=raw_key(ds),
                    metadata={"subject_requests": dg.MetadataValue.json(change), "observed_by_run": context.run_id},
                )
        nobody = [rid for rid, o in result["outcomes"].items() if not o["matched"]]
        context.log.info(
            f"{len(result['outcomes'])} request(s) in force; {len(nobody)} matched nobody; {len(result['files'])} file(s) replaced"
        )
        yield dg.MaterializeResult(
            metadata={
                "requests_in_force": len(result["outcomes"]),
                "requests": dg.MetadataValue.json(result["outcomes"]),
                "matched_nobody": dg.MetadataValue.json(nobody),
                "files_replaced": dg.MetadataValue.json(result["files"]),
                audit.ANCHOR_METADATA_KEY: dg.MetadataValue.json(audit.anchor(record)),
            }
        )

    return subject_requests


# --- retention_purge -------------------------------------------------------------------------------------------


def build_retention(contracts: list[Contract]) -> dg.AssetsDefinition:
    specs = [
        dg.AssetCheckSpec(
            f"retention_{c.dataset}",
            asset=RETENTION_PURGE,
            blocking=True,
            description=f"Nothing of {c.dataset} older than {c.retention_days} days remains in raw, landing or quarantine.",
        )
        for c in contracts
    ]

    @dg.asset(
        key=RETENTION_PURGE,
        deps=[raw_key(c.dataset) for c in contracts],
        group_name=GROUP,
        kinds={"duckdb"},
        check_specs=specs,
        owners=["team:data-integration"],
        tags={"privacy_tier": "raw"},
        description="Removes what is past each contract's retention_days from landing, raw and quarantine; de-identified tables and marts rebuild after it.",
    )
    def retention_purge(
        context: dg.AssetExecutionContext, storage: PipelineStorage, raw_database: DuckDBResource
    ) -> Iterator:
        storage.ensure()
        now = retention.parse_now(context.run.tags.get(retention.NOW_TAG))
        paths = store.Paths.under(storage.root)
        state = retention.load_state(paths.store_dir)
        reports, checks = {}, []
        confirmed = context.run.tags.get(retention.CONFIRM_TAG) == "1"
        with connection(raw_database) as con:
            for c in contracts:
                report = reports[c.dataset] = retention.purge(
                    con, c, storage.landing_dir, storage.quarantine_dir, now, state, context.run_id, confirmed
                )
                left = retention.remaining(
                    con, c, storage.landing_dir, storage.quarantine_dir, retention.horizon(c, now)
                )
                held = report.get("held")
                description = f"older than {report['horizon']} ({retention.basis(c)}): " + ", ".join(
                    f"{k} {v}" for k, v in left.items()
                )
                if held:  # a warning, not a block: nothing was removed, the previous horizon stays enforced downstream
                    description = (
                        f"HELD: this purge would remove {100 * held['share']:.0f}% of {c.dataset} at once ({held['raw_rows']:,} of "
                        f"{held['raw_rows_total']:,} raw rows, {held['landed_files']} of {held['landed_files_total']} landed files), "
                        f"more than {100 * retention.MAX_UNCONFIRMED_SHARE:.0f}% unconfirmed; nothing was removed. A steward confirms "
                        f"with `{held['confirm_with']}`. " + description
                    )
                checks.append(
                    dg.AssetCheckResult(
                        check_name=f"retention_{c.dataset}",
                        passed=not any(left.values()),
                        description=description,
                        severity=dg.AssetCheckSeverity.WARN if held else dg.AssetCheckSeverity.ERROR,
                        metadata={**left, "horizon": report["horizon"], "held": dg.MetadataValue.json(held or {})},
                    )
                )
        retention.save_state(paths.store_dir, state)
        record = audit.append(
            storage.audit_log,
            {"action": "retention_purge", "run_id": context.run_id, "as_of": store.now_iso(now), "datasets": reports},
        )
        for c in contracts:
            for key in (raw_key(c.dataset), dg.AssetKey(f"landed_{c.dataset}")):
                yield dg.AssetObservation(
                    asset_key=key, metadata={"retention": dg.MetadataValue.json(retention.metadata(c, state))}
                )
        yield from checks
        yield dg.MaterializeResult(
            metadata={
                "as_of": store.now_iso(now),
                "purged": dg.MetadataValue.json(
                    {
                        ds: {"horizon": r["horizon"], "basis": r["basis"], "held": r["held"]}
                        if r.get("held")
                        else {
                            "horizon": r["horizon"],
                            "basis": r["basis"],
                            "raw_rows_removed": r["last_purge"]["raw_rows_removed"],
                            "landed_files_removed": len(r["last_purge"]["landing_removed"]),
                            "landing_rows_removed": r["last_purge"]["landing_rows_removed"],
                            "quarantine_entries_removed": len(r["last_purge"]["quarantine_removed"]),
                        }
                        for ds, r in reports.items()
                    }
                ),
                audit.ANCHOR_METADATA_KEY: dg.MetadataValue.json(audit.anchor(record)),
            }
        )

    return retention_purge


# --- jobs, sensor, schedule ------------------------------------------------------------------------------------


def rebuild_selection(contracts: list[Contract]) -> dg.AssetSelection:
    """Every de-identified table and what reads it (the publish step whole)."""
    return (
        dg.AssetSelection.assets(*[deidentified_key(c.dataset) for c in contracts])
        .downstream()
        .required_multi_asset_neighbors()
    )


def _needs_rebuild(request: dict) -> bool:
    """Resolved to some assets whose last proof of absence is older than the resolution (or missing)."""
    resolution, proven = request.get("resolution") or {}, request.get("proven") or {}
    return bool(resolution.get("assets")) and any(
        asset not in proven or proven[asset]["at"] < resolution["at"] for asset in resolution["assets"]
    )


def plan_runs(requests: list[dict], asset_graph) -> list[dg.RunRequest]:
    """Unresolved requests: a run of subject_requests; resolved ones not yet proven: a run of what they affect."""
    runs = []
    pending = [r["id"] for r in requests if "resolution" not in r]
    if pending:
        runs.append(
            dg.RunRequest(
                run_key="resolve:" + ",".join(pending),
                asset_selection=[SUBJECT_REQUESTS],
                tags={"pipelines/subject_requests": ",".join(pending)[:200]},
            )
        )
    stale = [r for r in requests if _needs_rebuild(r)]
    if stale:
        keys = {dg.AssetKey.from_user_string(a) for r in stale for a in r["resolution"]["assets"]}
        selection = dg.AssetSelection.assets(*keys).downstream().required_multi_asset_neighbors().resolve(asset_graph)
        runs.append(
            dg.RunRequest(
                run_key="apply:" + ",".join(f"{r['id']}@{r['resolution']['at']}" for r in stale),
                asset_selection=sorted(selection),
                tags={"pipelines/subject_requests": ",".join(r["id"] for r in stale)[:200]},
            )
        )
    return runs


def build_lifecycle(contracts: list[Contract]) -> dg.Definitions:
    """The two assets, the requests job and sensor, the retention job and its daily schedule."""
    requests_job = dg.define_asset_job(
        REQUESTS_JOB,
        selection=dg.AssetSelection.assets(SUBJECT_REQUESTS) | rebuild_selection(contracts),
        description="Apply data subjects' requests: resolve them in the raw tables, then rebuild what holds the people (the sensor picks the subset).",
    )
    retention_job = dg.define_asset_job(
        RETENTION_JOB,
        selection=dg.AssetSelection.assets(RETENTION_PURGE, SUBJECT_REQUESTS) | rebuild_selection(contracts),
        description="Purge what is past retention from landing, raw and quarantine, then rebuild the de-identified tables and marts.",
    )

    @dg.sensor(
        name="subject_requests_sensor",
        job=requests_job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Records requests dropped as CSV into data/requests/, then queues a run for each new or unproven request.",
    )
    def subject_requests_sensor(
        context: dg.SensorEvaluationContext, storage: PipelineStorage, privacy: PrivacySettings
    ):
        paths = store.Paths.under(storage.root)
        store.import_drops(paths, privacy.pseudonym_key(storage), contracts)
        runs = plan_runs(store.active(paths), context.repository_def.asset_graph)
        return runs or dg.SkipReason("no new request, and every request is proven absent where it applies")

    @dg.schedule(
        name="retention_purge_daily",
        job=retention_job,
        cron_schedule="0 1 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,  # retention is a duty, like the quarantine purge
        description=(
            "Retention every day at 01:00 UTC, before the integration; horizons are counted from the tick's time. "
            f"A purge that would remove more than {100 * retention.MAX_UNCONFIRMED_SHARE:.0f}% of a dataset at once "
            "is held until a steward confirms it (the demo's 2025 events, past IT's and Support's 365 days, are)."
        ),
    )
    def daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        moment = context.scheduled_execution_time
        return dg.RunRequest(tags={retention.NOW_TAG: moment.isoformat()} if moment else {})

    return dg.Definitions(
        assets=[build_subject_requests(contracts), build_retention(contracts)],
        jobs=[requests_job, retention_job],
        sensors=[subject_requests_sensor],
        schedules=[daily],
    )
