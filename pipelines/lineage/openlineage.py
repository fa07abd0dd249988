"""OpenLineage events for every run, read from the run's own Dagster events once it has ended.

One START and one COMPLETE/FAIL/ABORT event for the Dagster run, and one pair per step (parent: the run) whose
inputs are the assets it read and whose outputs are the assets it wrote, each with the standard schema, column
lineage, row count, tags and data quality facets and this project's own facets (`pipelines_privacy`: the PII
classification of every column and the privacy figures the step recorded; `pipelines_checks`: every check with
its expectations' thresholds and observed counts). Everything comes from asset metadata that is already kept free
of personal values (operators, entities, key ids, thresholds, risk figures); nothing else of a step is read, and
an error message travels only when it is a `dagster.Failure` the pipeline wrote itself (never an exception's text,
which could quote a cell).

Events go to `<data dir>/openlineage/<run id>.jsonl` (owner-only) and, when openlineage-python finds a transport in
its own configuration (`OPENLINEAGE_URL`, `OPENLINEAGE_CONFIG`, `openlineage.yml`, `OPENLINEAGE__TRANSPORT__*`), to
that endpoint too (Marquez, DataHub). `OPENLINEAGE_DISABLED=true` turns both off.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import attr
import dagster as dg
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    DatasetFacet,
    RunFacet,
    column_lineage_dataset,
    data_quality_assertions_dataset,
    error_message_run,
    job_type_job,
    output_statistics_output_dataset,
    parent_run,
    processing_engine_run,
    schema_dataset,
    set_producer,
    tags_dataset,
)
from openlineage.client.serde import Serde
from openlineage.client.transport.file import FileConfig, FileTransport
from openlineage.client.transport.noop import NoopConfig, NoopTransport
from openlineage.client.uuid import generate_static_uuid

from pipelines.resources import PipelineStorage

log = logging.getLogger(__name__)

NAMESPACE_ENV = "OPENLINEAGE_NAMESPACE"
DEFAULT_NAMESPACE = "privacy_integration"  # the code location's name
PRODUCER = "urn:privacy-integration:pipelines"
FACETS_SCHEMA_ID = "urn:privacy-integration:openlineage:facets:1-0-0"  # pipelines/lineage/openlineage_facets.json
FACETS_SCHEMA = Path(__file__).with_name("openlineage_facets.json")
EVENTS_DIR = "openlineage"
# metadata entries a step records that say what was done to the people in a table (all checked free of values)
PRIVACY_KEYS = (
    "pseudonym_key_id",
    "contract",
    "contract_version_hash",
    "rows_in",
    "rows_out",
    "rows_suppressed",
    "entities_masked",
    "k_anonymity",
    "residual_scan",
    "detector",
    "deidentification",
    "column_classification",
    "risk",
    "approval",
    "subject_requests",
    "retention",
    "dp_mechanism",
    "dp_spent_this_run",
    "dp_budget",
    "audit_head",
)
ENDED = {
    dg.DagsterRunStatus.SUCCESS: RunState.COMPLETE,
    dg.DagsterRunStatus.FAILURE: RunState.FAIL,
    dg.DagsterRunStatus.CANCELED: RunState.ABORT,
}


def namespace() -> str:
    return os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE


def dataset_namespace() -> str:
    return f"dagster://{namespace()}"


def _plain(value: Any) -> Any:
    """A metadata value as JSON (tables as lists of columns, markdown as text)."""
    value = getattr(value, "value", value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    return json.loads(json.dumps(value, default=str))


@attr.define
class PrivacyDatasetFacet(DatasetFacet):
    """What was done to the people in this dataset: each column's classification and the step's privacy figures."""

    columns: list[dict[str, Any]] = attr.field(factory=list)
    figures: dict[str, Any] = attr.field(factory=dict)

    @staticmethod
    def _get_schema() -> str:
        return f"{FACETS_SCHEMA_ID}#/$defs/PrivacyDatasetFacet"


@attr.define
class ChecksDatasetFacet(DatasetFacet):
    """Every check of this dataset in the run, with each expectation's threshold and observed counts."""

    checks: list[dict[str, Any]] = attr.field(factory=list)

    @staticmethod
    def _get_schema() -> str:
        return f"{FACETS_SCHEMA_ID}#/$defs/ChecksDatasetFacet"


@attr.define
class PipelineRunFacet(RunFacet):
    """The Dagster run: its id, what started it and the code that ran (no run tag that could carry a value)."""

    dagsterRunId: str  # noqa: N815
    status: str
    triggeredBy: str | None = attr.field(default=None)  # noqa: N815
    codeVersion: str | None = attr.field(default=None)  # noqa: N815

    @staticmethod
    def _get_schema() -> str:
        return f"{FACETS_SCHEMA_ID}#/$defs/PipelineRunFacet"


@dataclass
class Step:
    key: str
    start: float | None = None
    end: float | None = None
    failed: bool = False
    error: str | None = None
    materializations: list[dg.AssetMaterialization] = field(default_factory=list)
    checks: list[Any] = field(default_factory=list)  # AssetCheckEvaluation


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def _steps(instance: dg.DagsterInstance, run_id: str) -> tuple[dict[str, Step], float | None, float | None]:
    steps: dict[str, Step] = {}
    run_start = run_end = None
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        kind = event.event_type_value
        if kind in {"PIPELINE_START", "RUN_START"}:
            run_start = entry.timestamp
        elif kind in {
            "PIPELINE_SUCCESS",
            "PIPELINE_FAILURE",
            "PIPELINE_CANCELED",
            "RUN_SUCCESS",
            "RUN_FAILURE",
            "RUN_CANCELED",
        }:
            run_end = entry.timestamp
        if not event.step_key:
            continue
        step = steps.setdefault(event.step_key, Step(event.step_key))
        data = event.event_specific_data
        if kind == "STEP_START":
            step.start = entry.timestamp
        elif kind in {"STEP_SUCCESS", "STEP_FAILURE"}:
            step.end = entry.timestamp
            step.failed = kind == "STEP_FAILURE"
            if step.failed:
                step.error = _safe_error(getattr(data, "error", None))
        elif kind == "ASSET_MATERIALIZATION":
            step.materializations.append(data.materialization)
        elif kind == "ASSET_CHECK_EVALUATION":
            step.checks.append(data)
    return steps, run_start, run_end


def _safe_error(error: Any) -> str:
    """The description of a `dagster.Failure` (written by the pipeline, without values); else only the error's type."""
    while (
        error is not None
        and getattr(error, "cls_name", None) not in {"Failure"}
        and getattr(error, "cause", None) is not None
    ):
        error = error.cause
    if error is None:
        return "the step failed"
    if getattr(error, "cls_name", None) == "Failure":
        return (
            str(getattr(error, "message", "") or "")
            .split("\n", 1)[0]
            .removeprefix("dagster._core.definitions.events.Failure: ")[:2000]
        )
    return f"{getattr(error, 'cls_name', None) or 'error'} (message withheld: an exception's text may quote a value)"


def _schema_facet(md: Mapping[str, Any]) -> schema_dataset.SchemaDatasetFacet | None:
    table = getattr(md.get("dagster/column_schema"), "value", None)
    if table is None:
        return None
    return schema_dataset.SchemaDatasetFacet(
        fields=[
            schema_dataset.SchemaDatasetFacetFields(
                name=c.name, type=c.type or None, description=c.description or None, ordinal_position=i + 1
            )
            for i, c in enumerate(table.columns)
        ]
    )


def _column_lineage_facet(md: Mapping[str, Any]) -> column_lineage_dataset.ColumnLineageDatasetFacet | None:
    lineage = getattr(md.get("dagster/column_lineage"), "value", None)
    if lineage is None or not lineage.deps_by_column:
        return None
    return column_lineage_dataset.ColumnLineageDatasetFacet(
        fields={
            column: column_lineage_dataset.Fields(
                inputFields=[
                    column_lineage_dataset.InputField(
                        namespace=dataset_namespace(), name=dep.asset_key.to_user_string(), field=dep.column_name
                    )
                    for dep in deps
                ]
            )
            for column, deps in lineage.deps_by_column.items()
        }
    )


def _classification(md: Mapping[str, Any]) -> list[dict[str, Any]]:
    table = getattr(md.get("dagster/column_schema"), "value", None)
    if table is None:
        return []
    return [
        {"column": c.name, **{k.removeprefix("pii/"): v for k, v in (c.tags or {}).items() if k.startswith("pii/")}}
        for c in table.columns
        if any(k.startswith("pii/") for k in (c.tags or {}))
    ]


def _check_entries(checks: Iterable[Any]) -> list[dict[str, Any]]:
    out = []
    for check in checks:
        md = check.metadata or {}
        results = _plain(md.get("results")) or {}
        entry = {
            "check": check.check_name,
            "passed": bool(check.passed),
            "expectations": [
                {k: r[k] for k in ("expectation", "column", "success", "threshold", "observed") if k in r}
                for r in (results.get("results") or [])
            ],
        }
        for key in ("risk", "person_join_risk", "data_docs"):
            if key in md:
                entry[key] = _plain(md[key])
        out.append(entry)
    return out


def _assertions(checks: Iterable[Any]) -> data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet | None:
    assertions = []
    for entry in _check_entries(checks):
        assertions.append(
            data_quality_assertions_dataset.Assertion(
                assertion=entry["check"], success=entry["passed"], severity="error"
            )
        )
        assertions += [
            data_quality_assertions_dataset.Assertion(
                assertion=f"{entry['check']}: {e['expectation']}",
                success=bool(e.get("success")),
                column=e.get("column"),
                severity="error",
                expected=json.dumps(e.get("threshold") or {}, sort_keys=True) or None,
                actual=json.dumps(e.get("observed") or {}, sort_keys=True) or None,
            )
            for e in entry["expectations"]
        ]
    return (
        data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(assertions=assertions) if assertions else None
    )


def _dataset_facets(md: Mapping[str, Any], tags: Mapping[str, str], checks: list[Any]) -> dict[str, DatasetFacet]:
    facets: dict[str, DatasetFacet] = {}
    if (schema := _schema_facet(md)) is not None:
        facets["schema"] = schema
    if (lineage := _column_lineage_facet(md)) is not None:
        facets["columnLineage"] = lineage
    if tags:
        facets["tags"] = tags_dataset.TagsDatasetFacet(
            tags=[
                tags_dataset.TagsDatasetFacetFields(key=k, value=v, source="DAGSTER") for k, v in sorted(tags.items())
            ]
        )
    figures = {k: _plain(md[k]) for k in PRIVACY_KEYS if k in md}
    columns = _classification(md)
    if figures or columns:
        facets["pipelines_privacy"] = PrivacyDatasetFacet(columns=columns, figures=figures)
    if checks:
        facets["pipelines_checks"] = ChecksDatasetFacet(checks=_check_entries(checks))
    return facets


class _Graph:
    """What the definitions say of an asset: its upstream assets, its tags, and which step computes it."""

    def __init__(self, asset_graph: Any | None):
        self.graph = asset_graph

    def parents(self, key: dg.AssetKey) -> list[dg.AssetKey]:
        if self.graph is None or not self.graph.has(key):
            return []
        return sorted(self.graph.get(key).parent_keys, key=lambda k: k.to_user_string())

    def tags(self, key: dg.AssetKey) -> dict[str, str]:
        if self.graph is None or not self.graph.has(key):
            return {}
        return {k: v for k, v in (self.graph.get(key).tags or {}).items() if not k.startswith("dagster/")}

    def assets_of_step(self, step_key: str) -> list[dg.AssetKey]:
        if self.graph is None:
            return []
        return sorted(
            (k for k in self.graph.materializable_asset_keys if self.graph.get(k).assets_def.node_def.name == step_key),
            key=lambda k: k.to_user_string(),
        )


def _step_datasets(
    step: Step, graph: _Graph, selection: set[dg.AssetKey] | None
) -> tuple[list[InputDataset], list[OutputDataset]]:
    written = {m.asset_key: m for m in step.materializations}
    planned = [k for k in graph.assets_of_step(step.key) if selection is None or k in selection]
    out_keys = list(dict.fromkeys([*written, *([] if written else planned)]))
    checks_by_key: dict[dg.AssetKey, list[Any]] = {}
    for check in step.checks:
        checks_by_key.setdefault(check.asset_key, []).append(check)
    outputs = []
    for key in out_keys:
        md = written[key].metadata if key in written else {}
        output_facets: dict[str, Any] = {}
        if "dagster/row_count" in md:
            output_facets["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=int(md["dagster/row_count"].value)
            )
        if (assertions := _assertions(checks_by_key.get(key, []))) is not None:
            output_facets["dataQualityAssertions"] = assertions
        outputs.append(
            OutputDataset(
                namespace=dataset_namespace(),
                name=key.to_user_string(),
                facets=_dataset_facets(md, graph.tags(key), checks_by_key.get(key, [])),
                outputFacets=output_facets,
            )
        )
    read = sorted({p for k in out_keys for p in graph.parents(k)} - set(out_keys), key=lambda k: k.to_user_string())
    checked_only = [k for k in checks_by_key if k not in out_keys]  # a check step reads the asset it checks
    inputs = []
    for key in list(dict.fromkeys([*read, *checked_only])):
        facets = (
            {"pipelines_checks": ChecksDatasetFacet(checks=_check_entries(checks_by_key[key]))}
            if key in checks_by_key
            else {}
        )
        input_facets = (
            {"dataQualityAssertions": a} if (a := _assertions(checks_by_key.get(key, []))) is not None else {}
        )
        inputs.append(
            InputDataset(
                namespace=dataset_namespace(), name=key.to_user_string(), facets=facets, inputFacets=input_facets
            )
        )
    return inputs, outputs


def _engine() -> processing_engine_run.ProcessingEngineRunFacet:
    return processing_engine_run.ProcessingEngineRunFacet(
        version=dg.__version__,
        name="Dagster",
        openlineageAdapterVersion=importlib_metadata.version("openlineage-python"),
    )


def _run_uuid(run_id: str, step_key: str, instant: float | None) -> str:
    """A step's OpenLineage run id: the same on every emission of the same run (a re-sent event updates, never adds)."""
    return str(generate_static_uuid(datetime.fromtimestamp(instant or 0, UTC), f"{run_id}/{step_key}".encode()))


def events_for_run(instance: dg.DagsterInstance, run_id: str, asset_graph: Any | None = None) -> list[RunEvent]:
    """Every OpenLineage event of a finished Dagster run, in time order."""
    set_producer(PRODUCER)  # facets name this pipeline as their producer, not the client library
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise ValueError(f"no run {run_id} on this instance")
    steps, run_start, run_end = _steps(instance, run_id)
    graph = _Graph(asset_graph)
    selection = set(run.asset_selection) if run.asset_selection else None
    job = Job(
        namespace=namespace(),
        name=run.job_name,
        facets={"jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="DAGSTER", jobType="JOB")},
    )
    state = ENDED.get(run.status, RunState.OTHER)
    started = (
        run_start or min((s.start for s in steps.values() if s.start), default=None) or datetime.now(UTC).timestamp()
    )
    ended = run_end or max((s.end for s in steps.values() if s.end), default=started)
    prov = _run_provenance(steps)
    run_facets: dict[str, RunFacet] = {
        "processing_engine": _engine(),
        "pipelines_run": PipelineRunFacet(
            dagsterRunId=run_id,
            status=run.status.value,
            triggeredBy=prov.get("triggered_by"),
            codeVersion=prov.get("code_version"),
        ),
    }
    parent = parent_run.ParentRunFacet(
        run=parent_run.Run(runId=run_id), job=parent_run.Job(namespace=namespace(), name=run.job_name)
    )
    events = [
        RunEvent(
            eventType=RunState.START,
            eventTime=_iso(started),
            run=Run(runId=run_id, facets=run_facets),
            job=job,
            producer=PRODUCER,
        )
    ]
    for step in sorted(steps.values(), key=lambda s: (s.start or 0, s.key)):
        if step.start is None:
            continue
        inputs, outputs = _step_datasets(step, graph, selection)
        step_run = _run_uuid(run_id, step.key, step.start)
        step_job = Job(
            namespace=namespace(),
            name=f"{run.job_name}.{step.key}",
            facets={
                "jobType": job_type_job.JobTypeJobFacet(
                    processingType="BATCH", integration="DAGSTER", jobType="ASSET" if outputs else "TASK"
                )
            },
        )
        events.append(
            RunEvent(
                eventType=RunState.START,
                eventTime=_iso(step.start),
                run=Run(runId=step_run, facets={"parent": parent}),
                job=step_job,
                inputs=inputs,
                outputs=[OutputDataset(namespace=o.namespace, name=o.name) for o in outputs],
                producer=PRODUCER,
            )
        )
        facets: dict[str, RunFacet] = {"parent": parent}
        if step.failed:
            facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=step.error or "the step failed", programmingLanguage="PYTHON"
            )
        end_state = RunState.FAIL if step.failed else (RunState.COMPLETE if step.end else RunState.ABORT)
        events.append(
            RunEvent(
                eventType=end_state,
                eventTime=_iso(step.end or ended),
                run=Run(runId=step_run, facets=facets),
                job=step_job,
                inputs=inputs,
                outputs=outputs,
                producer=PRODUCER,
            )
        )
    events.append(
        RunEvent(
            eventType=state, eventTime=_iso(ended), run=Run(runId=run_id, facets=run_facets), job=job, producer=PRODUCER
        )
    )
    return events


def _run_provenance(steps: Mapping[str, Step]) -> dict[str, Any]:
    for step in steps.values():
        for m in step.materializations:
            if "provenance" in m.metadata:
                return _plain(m.metadata["provenance"]) or {}
    return {}


def events_path(data_dir: Path, run_id: str) -> Path:
    return Path(data_dir) / EVENTS_DIR / f"{run_id}.jsonl"


def endpoint_client() -> OpenLineageClient | None:
    """A client for the endpoint openlineage-python's own configuration names, or None when it names none."""
    if os.environ.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return None
    # a client without a transport reads the configuration only; one built without any would warn and print to console
    probe = OpenLineageClient(transport=NoopTransport(NoopConfig()))
    configured = bool(probe.config.transport and probe.config.transport.get("type")) or bool(
        os.environ.get("OPENLINEAGE_URL")
    )
    return OpenLineageClient() if configured else None


def emit_run(
    instance: dg.DagsterInstance,
    run_id: str,
    data_dir: Path,
    asset_graph: Any | None = None,
    endpoint: OpenLineageClient | None | bool = True,
) -> Path | None:
    """Write a finished run's events to `<data dir>/openlineage/<run id>.jsonl` (owner-only), then send them to the
    configured endpoint. Once per run: a run whose file exists is not sent again. None when OpenLineage is disabled."""
    if os.environ.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return None
    path = events_path(data_dir, run_id)
    if path.exists():
        return path
    events = events_for_run(instance, run_id, asset_graph)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_suffix(".jsonl.partial")
    if partial.exists() and datetime.now().timestamp() - partial.stat().st_mtime > 600:
        partial.unlink(missing_ok=True)  # left by a process that died while writing
    try:
        os.close(os.open(partial, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))  # owner-only before the first byte
    except FileExistsError:  # another process (the sensor, the CLI) is writing this run's events now
        return path
    writer = OpenLineageClient(transport=FileTransport(FileConfig(log_file_path=str(partial), append=True)))
    for event in events:
        writer.emit(event)
    partial.replace(path)  # the file appears whole, so its presence means "emitted"
    client = endpoint_client() if endpoint is True else (endpoint or None)
    if client is not None:
        sent = 0
        for event in events:
            try:
                client.emit(event)
                sent += 1
            except Exception as error:  # noqa: BLE001 - an unreachable endpoint must not fail the run's lineage file
                log.warning(
                    "OpenLineage endpoint refused run %s's events after %d of %d: %s",
                    run_id,
                    sent,
                    len(events),
                    type(error).__name__,
                )
                break
    return path


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def to_json(event: RunEvent) -> dict[str, Any]:
    return json.loads(Serde.to_json(event))


def build_openlineage_sensor() -> dg.SensorDefinition:
    """Emits the events of every run that ended since the last tick (on by default: lineage is a record, not an option)."""

    @dg.sensor(
        name="openlineage_sensor",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Writes each finished run's OpenLineage events to data/openlineage/ and sends them to "
        "OPENLINEAGE_URL (or openlineage.yml) when configured.",
    )
    def openlineage_sensor(context: dg.SensorEvaluationContext, storage: PipelineStorage) -> dg.SkipReason:
        since = float(context.cursor) if context.cursor else 0.0
        records = context.instance.get_run_records(
            filters=dg.RunsFilter(
                statuses=list(ENDED), updated_after=datetime.fromtimestamp(since, UTC) if since else None
            ),
            limit=25,
            ascending=True,
            order_by="update_timestamp",
        )
        emitted, newest = 0, since
        graph = context.repository_def.asset_graph if context.repository_def else None
        for record in records:
            path = events_path(Path(storage.data_dir), record.dagster_run.run_id)
            if not path.exists():
                emit_run(context.instance, record.dagster_run.run_id, Path(storage.data_dir), graph)
                emitted += 1
            newest = max(newest, record.update_timestamp.timestamp())
        context.update_cursor(str(newest))
        return dg.SkipReason(f"OpenLineage: {emitted} run(s) emitted")

    return openlineage_sensor
