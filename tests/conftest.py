"""Shared fixtures: generated demo data and one real run of the whole pipeline in a temp directory."""

import csv
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from demo.generator import generate

TEST_ROWS = 2000
TEST_SEED = 11
TEST_KEY = "test-pseudonym-key-" + "0" * 40
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@dataclass
class PipelineRun:
    data_dir: Path
    landing: Path
    result: dg.ExecuteInProcessResult
    instance: dg.DagsterInstance

    def metadata_text(self) -> str:
        """Every metadata entry of every event of the run, as one JSON string."""
        chunks = []
        for event in self.result.all_events:
            data = event.event_specific_data
            for holder in (getattr(data, "materialization", None), data):
                md = getattr(holder, "metadata", None)
                if md:
                    chunks.append(json.dumps({k: str(getattr(v, "value", v)) for k, v in md.items()}))
        return "\n".join(chunks)

    def log_text(self) -> str:
        return "\n".join(
            (e.user_message or "") + " " + str(e.dagster_event or "")
            for e in self.instance.all_logs(self.result.run_id)
        )


@pytest.fixture(autouse=True, scope="module")
def _no_scanning_workers_left():
    """The scanning pool persists across calls (pipelines.privacy.parallel): end it after each test module."""
    yield
    from pipelines.privacy import parallel

    parallel.shutdown()


def ground_truth(landing: Path, min_length: int = 5) -> list[dict]:
    """The generator's personal values (short ones like 'F' are not meaningful to search for)."""
    with (landing / "_ground_truth" / "pii_values.csv").open(encoding="utf-8") as f:
        return [row for row in csv.DictReader(f) if len(row["value"]) >= min_length]


@pytest.fixture(scope="session")
def demo_landing(tmp_path_factory) -> Path:
    landing = tmp_path_factory.mktemp("demo") / "landing"
    generate(landing, rows=TEST_ROWS, seed=TEST_SEED)
    return landing


@pytest.fixture(scope="session")
def pipeline_env():
    """A fixed pseudonym key, so runs are reproducible and the key value is known to the leak tests."""
    old = os.environ.get("PIPELINES_PSEUDONYM_KEY")
    os.environ["PIPELINES_PSEUDONYM_KEY"] = TEST_KEY
    yield TEST_KEY
    if old is None:
        os.environ.pop("PIPELINES_PSEUDONYM_KEY", None)
    else:
        os.environ["PIPELINES_PSEUDONYM_KEY"] = old


def run_job(
    data_dir: Path,
    job: str = "integrate_all",
    instance: dg.DagsterInstance | None = None,
    defs: dg.Definitions | None = None,
) -> tuple[dg.ExecuteInProcessResult, dg.DagsterInstance]:
    from pipelines.definitions import build_definitions

    instance = instance or dg.DagsterInstance.ephemeral()
    defs = defs or build_definitions(data_dir)
    result = defs.resolve_job_def(job).execute_in_process(instance=instance, raise_on_error=False)
    return result, instance


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory, demo_landing, pipeline_env) -> PipelineRun:
    data_dir = tmp_path_factory.mktemp("run") / "data"
    shutil.copytree(demo_landing, data_dir / "landing")
    result, instance = run_job(data_dir)
    return PipelineRun(data_dir, data_dir / "landing", result, instance)
