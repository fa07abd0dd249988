"""The Dagster entry point: assembles departments, approved models, jobs and schedules."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from pipelines.contracts import load_contracts
from pipelines.defs.departments import build_department
from pipelines.defs.integration import build_integration, dbt_project
from pipelines.defs.marts import build_marts
from pipelines.resources import CONTRACTS_DIR, PipelineStorage, PrivacySettings, chunk_rows_from_env, default_data_dir

MAIN_JOB = "integrate_all"


def build_definitions(data_dir: Path | None = None, contracts_dir: Path = CONTRACTS_DIR) -> dg.Definitions:
    """Everything, for one data directory (default: `$PIPELINES_DATA_DIR` or `data/`)."""
    storage = PipelineStorage(data_dir=str(data_dir or default_data_dir()))
    main_job = dg.define_asset_job(
        MAIN_JOB,
        selection=dg.AssetSelection.all(),
        description="Ingest, check and de-identify every department, then build the approved marts.",
    )
    daily = dg.ScheduleDefinition(
        name="integrate_all_daily",
        job=main_job,
        cron_schedule="0 2 * * *",
        execution_timezone="UTC",
        description="The whole integration, every day at 02:00 UTC.",
    )
    return dg.Definitions.merge(
        *[build_department(c) for c in load_contracts(contracts_dir)],
        build_integration(),
        build_marts(dbt_project().manifest_path, contracts_dir),
        dg.Definitions(
            jobs=[main_job],
            schedules=[daily],
            executor=dg.in_process_executor,  # one DuckDB writer per file; Presidio loads once per run
            resources={
                "storage": storage,
                "privacy": PrivacySettings(
                    nlp_model=dg.EnvVar("PIPELINES_NLP_MODEL").get_value("") or "", chunk_rows=chunk_rows_from_env()
                ),
                "raw_database": DuckDBResource(database=str(Path(storage.data_dir) / "raw.duckdb")),
                "deidentified_database": DuckDBResource(database=str(Path(storage.data_dir) / "deidentified.duckdb")),
            },
        ),
    )


defs = build_definitions()
