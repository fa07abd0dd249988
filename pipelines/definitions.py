"""The Dagster entry point: assembles departments, approved models, jobs and schedules."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from pipelines import audit
from pipelines.contracts import load_contracts
from pipelines.defs.departments import build_department, build_known_identifiers
from pipelines.defs.integration import build_integration, dbt_project
from pipelines.defs.marts import build_marts
from pipelines.engines.tables import engine_resource
from pipelines.ingest import purge_quarantine
from pipelines.lifecycle.assets import RETENTION_PURGE, build_lifecycle
from pipelines.lifecycle.checks import build_mart_checks
from pipelines.lineage.openlineage import build_openlineage_sensor
from pipelines.privacy.nlp_engine import NLP_MODEL_ENV
from pipelines.quality.data_docs import DOCS_URL_ENV
from pipelines.resources import (
    CHUNK_ROWS_ENV,
    CONTRACTS_DIR,
    DATA_DIR_ENV,
    EXPECTATIONS_DIR,
    PROJECT_ROOT,
    PSEUDONYM_KEY_ENV,
    PSEUDONYM_KEY_FILE_ENV,
    QUARANTINE_RETENTION_ENV,
    REIDENTIFICATION_KEY_ENV,
    PipelineStorage,
    PrivacySettings,
    StorageDuckDB,
    from_env,
)

MAIN_JOB = "integrate_all"


@dg.op(description="Remove quarantined copies of rejected files older than the quarantine retention; audited.")
def purge_quarantine_op(context, storage: PipelineStorage) -> dg.Output:
    removed = purge_quarantine(storage.quarantine_dir, storage.quarantine_retention_days)
    record = audit.append(
        storage.audit_log,
        {
            "action": "purge_quarantine",
            "run_id": context.run_id,
            "retention_days": storage.quarantine_retention_days,
            "removed": removed,  # dataset, folder, content hash and age: no values
        },
    )
    context.log.info(
        f"quarantine: removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} older than {storage.quarantine_retention_days} days"
    )
    return dg.Output(
        len(removed),
        metadata={
            "removed": len(removed),
            "retention_days": storage.quarantine_retention_days,
            "entries": dg.MetadataValue.json(removed),
            audit.ANCHOR_METADATA_KEY: dg.MetadataValue.json(audit.anchor(record)),
        },
    )


@dg.job(description="Purge quarantine copies past their retention (they hold rejected personal data).")
def purge_quarantine_job():
    purge_quarantine_op()


def build_resources(data_dir: Path | None = None) -> dict[str, dg.ConfigurableResource]:
    """The resources, for one data directory (default: `$PIPELINES_DATA_DIR` or `data/`). Settings the environment
    gives are passed as `dg.EnvVar`s (`from_env`): read when a run starts, shown by name in the UI, never by value."""
    storage = PipelineStorage(
        data_dir=str(data_dir) if data_dir else from_env(DATA_DIR_ENV, str(PROJECT_ROOT / "data")),
        quarantine_retention_days=from_env(QUARANTINE_RETENTION_ENV, 30, integer=True),
        data_docs_url=from_env(DOCS_URL_ENV, ""),
    )
    privacy = PrivacySettings(
        nlp_model=from_env(NLP_MODEL_ENV, ""),
        pseudonym_secret=from_env(PSEUDONYM_KEY_ENV, ""),
        pseudonym_key_file=from_env(PSEUDONYM_KEY_FILE_ENV, ""),
        reidentification_secret=from_env(REIDENTIFICATION_KEY_ENV, ""),
        chunk_rows=from_env(CHUNK_ROWS_ENV, 100_000, integer=True),
    )
    return {
        "storage": storage,
        "privacy": privacy,
        "raw_database": StorageDuckDB(storage=storage, file="raw.duckdb"),
        "deidentified_database": StorageDuckDB(storage=storage, file="deidentified.duckdb"),
    }


def build_definitions(
    data_dir: Path | None = None,
    contracts_dir: Path = CONTRACTS_DIR,
    dbt_project_dir: Path | None = None,
    suites_dir: Path = EXPECTATIONS_DIR,
) -> dg.Definitions:
    """Everything, for one data directory (default: `$PIPELINES_DATA_DIR` or `data/`), from the contracts in
    `contracts_dir` and the reviewed suites in `suites_dir`."""
    main_job = dg.define_asset_job(
        MAIN_JOB,
        # retention is its own daily job: an integration run never purges (the demo's data is dated 2025)
        selection=dg.AssetSelection.all() - dg.AssetSelection.assets(RETENTION_PURGE),
        description="Ingest, check and de-identify every department, apply data subjects' requests, then build the approved marts.",
    )
    daily = dg.ScheduleDefinition(
        name="integrate_all_daily",
        job=main_job,
        cron_schedule="0 2 * * *",
        execution_timezone="UTC",
        description="The whole integration, every day at 02:00 UTC.",
    )
    purge_daily = dg.ScheduleDefinition(
        name="purge_quarantine_daily",
        job=purge_quarantine_job,
        cron_schedule="30 1 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,  # retention is a duty, not an option
        description="Removes quarantined files older than the retention (PIPELINES_QUARANTINE_RETENTION_DAYS, default 30).",
    )
    contracts = load_contracts(contracts_dir)
    project = dbt_project(dbt_project_dir) if dbt_project_dir else dbt_project()
    return dg.Definitions.merge(
        *[build_department(c, suites_dir) for c in contracts],
        build_known_identifiers(contracts),
        build_integration(project, contracts_dir),
        build_marts(project.manifest_path, contracts_dir, suites_dir),
        build_lifecycle(contracts),
        dg.Definitions(asset_checks=build_mart_checks(project.manifest_path, contracts_dir)),
        dg.Definitions(
            jobs=[main_job, purge_quarantine_job],
            schedules=[daily, purge_daily],
            sensors=[build_openlineage_sensor()],  # every finished run's OpenLineage events (data/openlineage/)
            executor=dg.in_process_executor,  # one DuckDB writer per file; Presidio loads once per run
            # PIPELINES_ENGINE=duckdb|spark and the Spark session's settings
            resources={**build_resources(data_dir), "engine": engine_resource()},
        ),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location's definitions, built when it loads (webserver, daemon, `dg`, `dagster job launch`), not at
    import: importing this module reads no environment and parses no dbt project."""
    return build_definitions()
