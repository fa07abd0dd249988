"""One factory builds every department's assets, sensor and job from its contract."""

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from pipelines import audit
from pipelines.contracts import Contract, load_contracts
from pipelines.defs.checks import SuiteFailed, privacy_check, privacy_spec, quality_check, quality_spec
from pipelines.engines.tables import EngineResource
from pipelines.ingest import (
    SOURCE_FILE_COLUMN,
    IngestError,
    drop_staged,
    ingest_file,
    landed_files,
    publish_staged,
    quarantine,
)
from pipelines.lifecycle import (
    checks as lifecycle_checks,
)
from pipelines.lifecycle import (
    inplace as lifecycle_inplace,
)
from pipelines.lifecycle import (
    matching as lifecycle_matching,
)
from pipelines.lifecycle import (
    retention as lifecycle_retention,
)
from pipelines.lifecycle.assets import SUBJECT_REQUESTS
from pipelines.lifecycle.requests import Paths as RequestPaths
from pipelines.lifecycle.requests import active as active_requests
from pipelines.lineage import metadata as lineage_md
from pipelines.lineage.observe import landed_file_observation
from pipelines.privacy.classify import UndeclaredPIIError
from pipelines.privacy.deidentify import (
    PrivacyThresholdError,
    ResidualPIIError,
    deidentification_markdown,
)
from pipelines.privacy.known import KnownIdentifiers, known_identifiers_from_raw
from pipelines.provenance import provenance
from pipelines.resources import EXPECTATIONS_DIR, PipelineStorage, PrivacySettings, connection

INGEST_DTYPES = {
    "string": "string",
    "integer": "int",
    "decimal": "decimal",
    "boolean": "bool",
    "date": "date",
    "timestamp": "timestamp",
}


def raw_key(contract: Contract) -> dg.AssetKey:
    return dg.AssetKey(f"raw_{contract.dataset}")


def deidentified_key(contract: Contract) -> dg.AssetKey:
    return dg.AssetKey(f"deidentified_{contract.dataset}")


def landed_key(contract: Contract) -> dg.AssetKey:
    return dg.AssetKey(f"landed_{contract.dataset}")


def _owners(contract: Contract) -> list[str]:
    return [contract.owner] if contract.owner.startswith("team:") or "@" in contract.owner else []


def _raw_schema(contract: Contract) -> dg.TableSchema:
    """Typed columns, each with its description and PII classification tags (role, entity, state)."""
    return lineage_md.raw_schema(contract)


def _contract_metadata(contract: Contract) -> dict:
    return {
        "contract": f"{contract.dataset} v{contract.version}",
        "contract_version_hash": contract.version_hash,
        "owner": contract.owner,
        "steward": contract.steward,
        "purpose": contract.purpose,
        "retention_days": contract.retention_days,
    }


_known_cache: dict[tuple, KnownIdentifiers] = {}


def cached_known_identifiers(con, raw_db: Path, contracts_dir: Path) -> KnownIdentifiers:
    """One index per state of the raw database in this process: the four de-identification steps of a
    run share it instead of hashing every department's identifiers four times. Memory only, never stored."""
    stat = raw_db.stat()
    key = (str(raw_db), stat.st_mtime_ns, stat.st_size, str(contracts_dir))
    if key not in _known_cache:
        _known_cache.clear()
        _known_cache[key] = known_identifiers_from_raw(con, load_contracts(contracts_dir))
    return _known_cache[key]


LANDED_FILE_TAG = "pipelines/landed_file"  # set by a landing sensor: the run ingests exactly this file
LANDED_FILE_METADATA = "landed_file"  # path under landing/ of the file a raw materialization ingested


def landed_file_for_run(landing_dir: Path, contract: Contract, tagged: str | None) -> Path:
    """The file a sensor named in the run's tags, else the newest landed file; a clear failure if there is none."""
    files = landed_files(landing_dir, contract)
    if tagged is not None:
        match = next((f for f in files if str(f.relative_to(landing_dir)) == tagged), None)
        if match is None:
            raise dg.Failure(
                description=(
                    f"{contract.dataset}: the run was started for landing/{tagged}, which no longer exists or does not match "
                    f"landing/{contract.source.path_pattern}; nothing was ingested."
                )
            )
        return match
    if not files:
        raise dg.Failure(
            description=f"{contract.dataset}: no landed file matches landing/{contract.source.path_pattern}",
            metadata={"landing_dir": str(landing_dir)},
        )
    return files[-1]


def ingested_cursor(instance: dg.DagsterInstance, key: dg.AssetKey, landing_dir: Path) -> str | None:
    """The cursor of the file the raw table last ingested, if it is still landed."""
    event = instance.get_latest_materialization_event(key)
    md = event.asset_materialization.metadata if event and event.asset_materialization else {}
    name = getattr(md.get(LANDED_FILE_METADATA), "value", None)
    if name is None:  # materialized before the landed path was recorded
        name = (getattr(md.get("source_file"), "value", None) or {}).get("file")
        matches = list(landing_dir.rglob(name)) if name else []
        path = matches[0] if len(matches) == 1 else None
    else:
        path = landing_dir / name
    return file_cursor(path) if path is not None and path.exists() else None


KNOWN_IDENTIFIERS = dg.AssetKey("known_identifiers")


def build_known_identifiers(contracts: list[Contract]) -> dg.Definitions:
    """The index of every department's identifiers, from the last good raw tables (a node of its own in the graph)."""

    @dg.asset(
        key=KNOWN_IDENTIFIERS,
        deps=[raw_key(c) for c in contracts]
        + [SUBJECT_REQUESTS],  # built after erasures: the index holds no erased person
        group_name="privacy_index",
        kinds={"duckdb"},
        owners=["team:data-integration"],
        tags={"privacy_tier": "raw"},
        description=(
            "Every department's names, emails, phones and ids as keyed hashes held in memory only (never written), "
            "built from the last good raw tables: free-text masking and the residual-PII gate search them everywhere."
        ),
    )
    def known_identifiers(
        context: dg.AssetExecutionContext, storage: PipelineStorage, raw_database: DuckDBResource
    ) -> dg.MaterializeResult:
        with connection(raw_database) as con:
            known = cached_known_identifiers(con, storage.raw_db, contracts[0].path.parent)
        built_from = {}
        for c in contracts:
            event = context.instance.get_latest_materialization_event(raw_key(c))
            built_from[raw_key(c).to_user_string()] = event.run_id if event else "never materialized"
        return dg.MaterializeResult(
            metadata={
                "identifiers": known.size,
                "identifiers_by_entity": dg.MetadataValue.json(known.counts()),
                "built_from_runs": dg.MetadataValue.json(built_from),  # each raw table's last good (passing) batch
                "storage": "memory only: keyed hashes with a per-process key, never written to disk",
            }
        )

    return dg.Definitions(assets=[known_identifiers])


def file_cursor(path: Path) -> str:
    """Sortable identity of a landed file: modification time, then name."""
    return f"{path.stat().st_mtime_ns:020d}:{path.name}"


def build_department(contract: Contract, suites_dir: Path = EXPECTATIONS_DIR) -> dg.Definitions:
    """Assets (landed -> raw -> de-identified), a job and a landing sensor for one dataset; its reviewed suites
    are `<dataset>.quality` and `<dataset>.privacy` in `suites_dir`."""
    ds, group, owners = contract.dataset, contract.department, _owners(contract)
    tags = {"department": group}

    landed = dg.AssetSpec(
        landed_key(contract),
        group_name=group,
        kinds={"csv"},
        owners=owners,
        tags={**tags, "privacy_tier": "raw"},
        description=(
            f"{contract.title}: files landing at landing/{contract.source.path_pattern}. Not materialized by the pipeline "
            f"(files are never modified): each new file is recorded as an observation (name, size, modification time, rows, "
            f"SHA-256) by {ds}_landing_sensor and by the raw step that ingests it."
        ),
        metadata={
            "path_pattern": contract.source.path_pattern,
            "dagster/column_schema": lineage_md.landed_schema(contract),
            **_contract_metadata(contract),
        },
    )

    @dg.asset(
        key=raw_key(contract),
        deps=[landed.key],
        group_name=group,
        kinds={"duckdb"},
        owners=owners,
        tags={**tags, "privacy_tier": "raw"},
        code_version=contract.version_hash,
        check_specs=[quality_spec(contract, raw_key(contract))],
        description=f"{contract.title} as landed, checked against its contract and typed (restricted raw database).",
    )
    def raw(context: dg.AssetExecutionContext, storage: PipelineStorage, raw_database: DuckDBResource) -> Iterator:
        storage.ensure()
        path = landed_file_for_run(storage.landing_dir, contract, context.run.tags.get(LANDED_FILE_TAG))
        staged = f"_staged_{ds}"

        def reject(error: Exception, problem: str) -> dg.Failure:
            where = quarantine(path, storage.quarantine_dir, error, dataset=ds, run_id=context.run_id)
            return dg.Failure(
                description=(
                    f"{ds}: rejected {path.name}: {error} The landed file is kept; a copy and a reason file are in "
                    f"quarantine/{ds}/{where.name}; the raw table and everything downstream keep their last good version."
                ),
                metadata={"problem": problem, "quarantine": str(where), "file": path.name},
            )

        with connection(raw_database) as con:
            try:
                report = ingest_file(path, contract, con, staged)  # write: a staged batch beside the raw table
            except IngestError as error:
                drop_staged(con, staged)
                raise reject(error, error.problem) from None
            try:
                check = quality_check(
                    con, staged, contract, storage, suites_dir
                )  # audit: the quality suite on the batch
            except dg.Failure:  # e.g. a reviewed suite that disagrees with its contract: no batch is left behind
                drop_staged(con, staged)
                raise
            if not check.passed:
                drop_staged(con, staged)
                yield check
                raise reject(SuiteFailed(f"failed its quality suite: {check.description}"), SuiteFailed.problem)
            publish_staged(con, staged, ds)  # publish: only a passing batch replaces the raw table
        context.log_event(
            landed_file_observation(
                landed.key,
                path,
                storage.landing_dir,
                rows=report.rows,
                sha256=report.sha256,
                observed_by=f"raw_{ds} (run {context.run_id[:8]})",
            )
        )
        storage.raw_db.chmod(0o600)  # raw personal data: the pipeline's account only
        context.log.info(f"{ds}: ingested {report.rows} rows from {report.file}")
        yield check
        yield dg.MaterializeResult(
            metadata={
                "dagster/row_count": report.rows,
                "dagster/column_schema": _raw_schema(contract),
                "dagster/column_lineage": lineage_md.raw_lineage(contract, landed.key),
                "source_file": report.to_metadata(),
                LANDED_FILE_METADATA: str(path.relative_to(storage.landing_dir)),
                "upstream": [landed.key.to_user_string()],
                **_contract_metadata(contract),
                "provenance": provenance(context),
            },
            data_version=dg.DataVersion(report.sha256[:16]),
        )

    @dg.asset(
        key=deidentified_key(contract),
        deps=[raw, KNOWN_IDENTIFIERS, SUBJECT_REQUESTS],
        group_name=group,
        kinds={"duckdb", "presidio"},
        owners=owners,
        tags={**tags, "privacy_tier": "deidentified"},
        code_version=contract.version_hash,
        check_specs=[
            privacy_spec(contract, deidentified_key(contract)),
            lifecycle_checks.absence_spec(deidentified_key(contract)),
            lifecycle_checks.retention_spec(deidentified_key(contract)),
        ],
        description=f"{contract.title}, de-identified as its contract says (the only form dbt may read).",
    )
    def deidentified(
        context: dg.AssetExecutionContext,
        storage: PipelineStorage,
        privacy: PrivacySettings,
        raw_database: DuckDBResource,
        deidentified_database: DuckDBResource,
        engine: EngineResource,
    ) -> Iterator:
        ctx = privacy.operator_context(storage, run_date=date.today())
        tables = engine.tables(storage.root)  # DuckDB's stream, or Spark's Arrow batches (pipelines/engines)
        staged = f"_staged_{ds}"
        kept = "The de-identified table keeps its last good version."
        in_force = lifecycle_checks.InForce.load(
            storage, ctx.pseudonym_key.key_id
        )  # every request ever recorded, keyed
        retention_state = lifecycle_retention.load_state(RequestPaths.under(storage.root).store_dir)
        horizon = lifecycle_retention.enforced_horizon(retention_state, ds)
        applying = set(in_force.ids)  # a request recorded since waits for the next run, as it does for the checks
        requests = [r for r in active_requests(RequestPaths.under(storage.root)) if r["id"] in applying]
        every_contract = load_contracts(contract.path.parent) if contract.path else [contract]
        with connection(raw_database) as raw, connection(deidentified_database) as con:
            excluded = lifecycle_checks.excluded_rows(
                raw, ds
            )  # opted-out rows stay in raw, flagged, and are never read here
            # new opt-outs only, nothing else changed: the person's rows leave the published table in SQL, no text is
            # scanned again; otherwise (and saying why) the whole table is de-identified again
            plan = lifecycle_inplace.plan(
                context, contract, every_contract, ctx.pseudonym_key.key_id, requests, horizon, raw, con, tables.name
            )
            applied: dict = {}
            if plan.in_place and (why := tables.copy_differs(ds, plan.rows_out)):
                plan.in_place, plan.reason = False, why  # on Spark: the Parquet table is what is changed in place
            if plan.in_place:
                try:
                    result, applied = lifecycle_inplace.apply(raw, con, ds, staged, contract, ctx, plan, requests)
                except lifecycle_inplace.NotInPlace as why:
                    plan.in_place, plan.reason = False, str(why)
                except PrivacyThresholdError as error:
                    raise dg.Failure(description=f"{error} {kept}") from None
            if not plan.in_place:
                # every department's identifiers: a name HR knows is found in Finance's memos too
                known = cached_known_identifiers(raw, storage.raw_db, contract.path.parent) if contract.path else None
                try:
                    # streamed a chunk at a time into a staged table, which must pass the residual-PII gate and k
                    result = tables.deidentify(
                        raw,
                        lifecycle_matching.view_name(ds),
                        con,
                        staged,
                        contract,
                        ctx,
                        model_name=privacy.model_name(),
                        known=known,
                        chunk_rows=privacy.chunk_rows,
                        exclude=(SOURCE_FILE_COLUMN,),
                    )
                except (PrivacyThresholdError, ResidualPIIError, UndeclaredPIIError) as error:
                    drop_staged(con, staged)
                    raise dg.Failure(description=f"{error} {kept}") from None
            application = plan.metadata(**applied, free_text_scanned=not plan.in_place)
            # other departments' mentions of requested people: their pseudonyms and any identifier of theirs become tags
            masked = lifecycle_matching.scrub(con, staged, ctx.pseudonym_key.secret, in_force.keys)
            try:
                check = privacy_check(
                    con, staged, contract, storage, suites_dir
                )  # the privacy suite on the staged table
            except dg.Failure:
                drop_staged(con, staged)
                raise
            absent = lifecycle_checks.absence_result(con, staged, ctx.pseudonym_key.secret, in_force, excluded, masked)
            retained = lifecycle_checks.retention_result(con, staged, contract, horizon)
            for gate in (check, absent, retained):
                if not gate.passed:
                    drop_staged(con, staged)
                    yield from (check, absent, retained)
                    raise dg.Failure(
                        description=f"{ds}: the de-identified batch failed its {gate.check_name or 'privacy_suite'} check: {gate.description} {kept}"
                    )
            schema = con.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
                [staged],
            ).fetchall()
            # the audit record describes the table about to be swapped in, so it is written first
            record = audit.append(
                storage.audit_log,
                {
                    "action": "deidentify",
                    "dataset": ds,
                    "run_id": context.run_id,
                    "contract_version_hash": contract.version_hash,
                    "pseudonym_key_id": ctx.pseudonym_key.key_id,
                    "rows_in": result.rows_in,
                    "rows_out": result.rows_out,
                    # break-glass encryption is reversible: every column encrypted is on record with its key id
                    "encrypted_columns": [r.column for r in result.columns if r.operator == "encrypt"],
                    "reidentification_key_id": ctx.reidentification_key.key_id if ctx.reidentification_key else None,
                    # data subjects' requests: which were applied, rows left out per request, mentions masked (no identifier)
                    "subject_requests": in_force.ids,
                    "rows_excluded": excluded,
                    "mentions_masked": masked,
                    "retention_horizon": str(horizon) if horizon else None,
                    "request_application": application,  # in place (rows removed, newly withheld) or rebuilt, and why
                },
            )
            stored = tables.publish(
                con, staged, ds, changed=bool(masked), in_place=plan.in_place
            )  # and the engine's copy (Spark: Parquet)
        storage.deidentified_db.chmod(0o600)  # row-level, even if de-identified: dbt only, never analysts
        columns = [r.to_dict() for r in result.columns]
        context.log.info(f"{ds}: de-identified {result.rows_in} rows, {result.entities_masked} PII values masked")
        lifecycle_checks.record_proof(
            storage, in_force.ids, deidentified_key(contract).to_user_string(), context.run_id
        )
        yield from (check, absent, retained)
        yield dg.MaterializeResult(
            metadata={  # the steward's facts first (the UI lists entries in this order), raw JSON after
                "dagster/row_count": result.rows_out,
                "deidentification_table": dg.MetadataValue.md(deidentification_markdown(result.columns)),
                "pseudonym_key_id": ctx.pseudonym_key.key_id,
                "rows_in": result.rows_in,
                "rows_out": result.rows_out,
                "rows_suppressed": result.rows_suppressed,
                "entities_masked": result.entities_masked,
                "subject_requests": dg.MetadataValue.json(
                    {"in_force": len(in_force.ids), "rows_excluded": excluded, "mentions_masked": masked}
                ),
                lifecycle_inplace.APPLIED_METADATA: dg.MetadataValue.json(application),
                lifecycle_inplace.BASIS_METADATA: dg.MetadataValue.json(
                    lifecycle_inplace.basis(
                        contract,
                        ctx.pseudonym_key.key_id,
                        requests,
                        lifecycle_inplace.raw_versions(context.instance, every_contract),
                        horizon,
                        result,
                        tables.name,
                    )
                ),
                "retention": dg.MetadataValue.json(lifecycle_retention.metadata(contract, retention_state)),
                # each column's type, description and PII classification tags (role, entity, operator, state, key id)
                "dagster/column_schema": lineage_md.deidentified_schema(
                    contract, dict(schema), ctx.pseudonym_key.key_id
                ),
                "dagster/column_lineage": lineage_md.deidentified_lineage(
                    contract, raw_key(contract), [n for n, _ in schema]
                ),
                "k_anonymity": dg.MetadataValue.json(result.k_anonymity),
                "residual_scan": dg.MetadataValue.json(result.residual_scan),
                "column_classification": dg.MetadataValue.json({"columns": result.classification}),
                "deidentification": dg.MetadataValue.json({"columns": columns}),
                "detector": dg.MetadataValue.json(result.detector or {}),
                audit.ANCHOR_METADATA_KEY: dg.MetadataValue.json(
                    audit.anchor(record)
                ),  # the log's head, outside the log
                "upstream": [raw_key(contract).to_user_string()],
                **_contract_metadata(contract),
                **stored,
                "provenance": provenance(context),
            }
        )

    job = dg.define_asset_job(
        f"{ds}_job",
        # its own assets, the index its new identifiers change, and what reads its de-identified table; other
        # departments' de-identified tables keep their version (the graph shows them stale until their next run)
        # subject_requests too: a new batch may bring back someone who asked to be left out or erased
        selection=(
            dg.AssetSelection.assets(raw, KNOWN_IDENTIFIERS, SUBJECT_REQUESTS)
            | dg.AssetSelection.assets(deidentified).downstream()
        ).required_multi_asset_neighbors(),
        description=f"Ingest and de-identify {contract.title}, then rebuild the approved models that use it.",
        tags=tags,
    )

    @dg.sensor(
        name=f"{ds}_landing_sensor",
        job=job,
        minimum_interval_seconds=30,
        description=f"Starts {ds}_job when a new file lands.",
    )
    def landing_sensor(
        context: dg.SensorEvaluationContext, storage: PipelineStorage
    ) -> dg.SensorResult | dg.SkipReason:
        # a sensor switched on after a run starts from the file that run ingested, not from the beginning
        since = context.cursor or ingested_cursor(context.instance, raw_key(contract), storage.landing_dir)
        new = [f for f in landed_files(storage.landing_dir, contract) if file_cursor(f) > (since or "")]
        if not new:
            return dg.SkipReason(f"no new file at landing/{contract.source.path_pattern}")
        newest = new[-1]  # a snapshot supersedes older ones landed since the last tick
        cursor = file_cursor(newest)
        return dg.SensorResult(
            # every new file is on record on the landed asset (its history), superseded snapshots too
            asset_events=[
                landed_file_observation(landed.key, f, storage.landing_dir, observed_by=f"{ds}_landing_sensor")
                for f in new
            ],
            run_requests=[
                dg.RunRequest(
                    run_key=f"{ds}:{cursor}", tags={LANDED_FILE_TAG: str(newest.relative_to(storage.landing_dir))}
                )
            ],
            cursor=cursor,
        )

    return dg.Definitions(assets=[landed, raw, deidentified], jobs=[job], sensors=[landing_sensor])
