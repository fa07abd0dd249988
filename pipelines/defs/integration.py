"""Approved dbt models over the de-identified tables: one graph with the departments' assets."""

import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, DbtProject, dbt_assets

from pipelines.dbt_child import real_dbt
from pipelines.engines.tables import DuckDBTables, EngineResource, Tables
from pipelines.governance.approvals import CompileError, check_project, compile_project, load_manifest
from pipelines.provenance import provenance
from pipelines.resources import CONTRACTS_DIR, DBT_PROJECT_DIR, PipelineStorage


class IntegrationTranslator(DagsterDbtTranslator):
    """dbt folders become Dagster groups: staging views and approved marts."""

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        fqn = dbt_resource_props.get("fqn", [])
        if dbt_resource_props.get("resource_type") == "model" and "marts" in fqn:
            return "approved_marts"
        return "integration_staging"


def dbt_executable() -> str:
    """dbt that ends with the run that started it (`pipelines-dbt`), from this interpreter's environment."""
    beside = Path(sys.executable).parent / "pipelines-dbt"
    return str(beside) if beside.exists() else (shutil.which("pipelines-dbt") or real_dbt())


def dbt_resource(project: DbtProject) -> DbtCliResource:
    return DbtCliResource(project_dir=project, dbt_executable=dbt_executable())


@lru_cache(maxsize=4)
def dbt_project(project_dir: Path = DBT_PROJECT_DIR) -> DbtProject:
    """The dbt project, with its manifest parsed once if it is missing (fresh clone); the graph is drawn from it,
    while each run compiles the project's current files for itself."""
    project = DbtProject(project_dir=project_dir, profiles_dir=project_dir)
    # Under `dagster dev` / `dg dev` re-parse on every load so edits show in the graph, as `prepare_if_dev` does,
    # but with the venv's dbt (`prepare_if_dev` looks for `dbt` on PATH, absent when the venv is not activated).
    if os.getenv("DAGSTER_IS_DEV_CLI") or not project.manifest_path.exists():
        dbt_resource(project).cli(["parse", "--quiet"], target_path=project.target_path).wait()
    return project


def release_dbt_duckdb() -> None:
    """Close the DuckDB handle dbt-duckdb keeps in this process after fetching row counts and column
    metadata, so checks and the publish step can open the warehouse (one config per file per process)."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        if DuckDBConnectionManager._ENV is not None:
            DuckDBConnectionManager._ENV.close()
    DuckDBConnectionManager.close_all_connections()


def _nodes(manifest_path: Path) -> set[str]:
    return {
        uid
        for uid, node in load_manifest(manifest_path)["nodes"].items()
        if node.get("resource_type") in {"model", "seed", "snapshot"}
    }


def _check_and_build(
    context: dg.AssetExecutionContext,
    run_dir: Path,
    storage: PipelineStorage,
    contracts_dir: Path,
    graph_manifest: Path,
    tables: Tables | None = None,
) -> Iterator[Any]:
    tables = tables or DuckDBTables()
    with tables.dbt_environment() as engine_env:  # the engine's dbt target, for the gate's compile and the build
        yield from _check_and_build_on(context, run_dir, storage, contracts_dir, graph_manifest, tables, engine_env)


def _check_and_build_on(
    context: dg.AssetExecutionContext,
    run_dir: Path,
    storage: PipelineStorage,
    contracts_dir: Path,
    graph_manifest: Path,
    tables: Tables,
    engine_env: dict[str, str],
) -> Iterator[Any]:
    env = {"PIPELINES_DATA_DIR": storage.data_dir, **engine_env}  # profiles.yml locates the databases through it
    try:
        manifest = compile_project(run_dir, run_dir, run_dir / "target", env=env)
    except CompileError as error:
        raise dg.Failure(description=f"dbt could not compile the project; nothing was built. {error}") from None
    # the approval policy over every compiled model (a new one too): an unapproved join never runs
    violations = check_project(manifest, contracts_dir, today=date.today())
    if violations:
        raise dg.Failure(
            description="dbt models violate the approval policy; nothing was built: "
            + "; ".join(f"{v.model}: {v.message}" for v in violations[:10]),
            metadata={
                "violations": dg.MetadataValue.json(
                    [{"model": v.model, "rule": str(v.rule), "message": v.message} for v in violations]
                )
            },
        )
    context.log.info(f"approval policy: no violations in the compiled project ({manifest})")
    unknown = sorted(_nodes(manifest) - _nodes(graph_manifest))
    if unknown:  # a model added since the definitions loaded is no asset yet: building it would bypass the graph
        raise dg.Failure(
            description=(
                f"the dbt project has {len(unknown)} model(s) the loaded definitions do not know ({', '.join(u.split('.')[-1] for u in unknown[:5])}): "
                "reload the code location (or restart the UI/daemon) so they become assets; nothing was built."
            )
        )
    os.environ.update(env)  # dagster-dbt's own row-count and column queries read the same profile
    dbt = DbtCliResource(
        project_dir=str(run_dir), profiles_dir=str(run_dir), dbt_executable=dbt_executable(), target=tables.dbt_target
    )
    run_provenance = provenance(context)
    invocation = dbt.cli(["build"], context=context, manifest=manifest, target_path=run_dir / "target")
    stream = invocation.stream()
    if tables.fetch_dbt_metadata:  # through an adapter in this process: DuckDB's file, not Spark's session
        stream = stream.fetch_row_counts().fetch_column_metadata()
    for event in stream:
        if isinstance(event, (dg.Output, dg.AssetMaterialization)):
            event = event.with_metadata({**event.metadata, "provenance": run_provenance})
        yield event
    tables.after_dbt_build(load_manifest(manifest), storage.warehouse_db)


def build_integration(project: DbtProject | None = None, contracts_dir: Path = CONTRACTS_DIR) -> dg.Definitions:
    project = project or dbt_project()
    translator = IntegrationTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))

    @dbt_assets(
        manifest=project.manifest_path, project=project, dagster_dbt_translator=translator, name="approved_models"
    )
    def approved_models(
        context: dg.AssetExecutionContext, storage: PipelineStorage, engine: EngineResource
    ) -> Iterator[Any]:
        # The gate checks exactly what is built: the project's current files are copied for this run, compiled
        # by dbt, checked, and built from that same copy and manifest; an edit made meanwhile waits for the next run.
        run_dir = storage.root / "dbt_runs" / context.run_id
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.copytree(project.project_dir, run_dir, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
        try:
            tables = engine.tables(storage.root)
            yield from _check_and_build(context, run_dir, storage, contracts_dir, project.manifest_path, tables)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
            release_dbt_duckdb()

    return dg.Definitions(assets=[approved_models], resources={"dbt": dbt_resource(project)})
