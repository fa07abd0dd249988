"""Resources take the environment's settings as `dg.EnvVar`s (issue 19): read when a run starts, not when the
definitions load, and a key's secret never reaches metadata, the event log or the run's stored configuration."""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest

from pipelines.definitions import build_resources
from pipelines.privacy.keys import fingerprint
from pipelines.privacy.nlp_engine import NLP_MODEL_ENV
from pipelines.quality.data_docs import DOCS_URL_ENV
from pipelines.quality.runner import run_suite
from pipelines.resources import (
    CHUNK_ROWS_ENV,
    DATA_DIR_ENV,
    PROJECT_ROOT,
    PSEUDONYM_KEY_ENV,
    PSEUDONYM_KEY_FILE_ENV,
    QUARANTINE_RETENTION_ENV,
    REIDENTIFICATION_KEY_ENV,
    PipelineStorage,
    PrivacySettings,
)

SECRET_AT_LOAD = "secret-at-load-" + "a" * 40
SECRET_AT_RUN = "secret-at-run-" + "b" * 40
ALL = (
    DATA_DIR_ENV,
    QUARANTINE_RETENTION_ENV,
    NLP_MODEL_ENV,
    PSEUDONYM_KEY_ENV,
    PSEUDONYM_KEY_FILE_ENV,
    REIDENTIFICATION_KEY_ENV,
    CHUNK_ROWS_ENV,
    DOCS_URL_ENV,
)


@pytest.fixture
def clean_env(monkeypatch):
    for name in ALL:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@dg.asset
def probe(
    storage: PipelineStorage, privacy: PrivacySettings, raw_database: dg.ConfigurableResource
) -> dg.MaterializeResult:
    """What the steps see of the resources."""
    with raw_database.get_connection() as con:
        con.execute("create or replace table probe as select 1 as x")
    return dg.MaterializeResult(
        metadata={
            "root": str(storage.root),
            "retention": storage.quarantine_retention_days,
            "docs": storage.data_docs_url,
            "model": privacy.model_name() or "",
            "chunk_rows": privacy.chunk_rows,
            "pseudonym_key_id": privacy.pseudonym_key(storage).key_id,
        }
    )


def _run(resources: dict) -> tuple[dict, str]:
    """Materialize the probe; its metadata, and everything the instance stored about the run."""
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([probe], resources=resources, instance=instance)
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("probe")[0].metadata.items()}
    run = instance.get_run_by_id(result.run_id)
    stored = json.dumps([str(e) for e in instance.all_logs(result.run_id)]) + str(run.run_config) + str(run.tags)
    return metadata, stored + json.dumps(metadata)


def test_environment_settings_are_env_vars_read_when_the_run_starts(clean_env, tmp_path):
    clean_env.setenv(DATA_DIR_ENV, str(tmp_path / "at-load"))
    clean_env.setenv(PSEUDONYM_KEY_ENV, SECRET_AT_LOAD)
    clean_env.setenv(NLP_MODEL_ENV, "model_at_load")
    clean_env.setenv(CHUNK_ROWS_ENV, "1_000")
    clean_env.setenv(QUARANTINE_RETENTION_ENV, "7")
    clean_env.setenv(DOCS_URL_ENV, "http://docs-at-load.test")
    resources = build_resources()
    storage, privacy = resources["storage"], resources["privacy"]
    assert isinstance(storage.data_dir, dg.EnvVar) and storage.data_dir.env_var_name == DATA_DIR_ENV
    assert (
        isinstance(privacy.pseudonym_secret, dg.EnvVar) and privacy.pseudonym_secret.env_var_name == PSEUDONYM_KEY_ENV
    )
    assert privacy.nlp_model.env_var_name == NLP_MODEL_ENV
    assert privacy.chunk_rows.env_var_name == CHUNK_ROWS_ENV
    assert storage.quarantine_retention_days.env_var_name == QUARANTINE_RETENTION_ENV
    assert storage.data_docs_url.env_var_name == DOCS_URL_ENV

    # the values a run sees are the environment's when it starts
    clean_env.setenv(DATA_DIR_ENV, str(tmp_path / "at-run"))
    clean_env.setenv(PSEUDONYM_KEY_ENV, SECRET_AT_RUN)
    clean_env.setenv(NLP_MODEL_ENV, "model_at_run")
    clean_env.setenv(CHUNK_ROWS_ENV, "2_500")
    clean_env.setenv(QUARANTINE_RETENTION_ENV, "9")
    clean_env.setenv(DOCS_URL_ENV, "http://docs-at-run.test")
    (tmp_path / "at-run").mkdir()
    metadata, stored = _run(resources)
    assert metadata == {
        "root": str(tmp_path / "at-run"),
        "retention": 9,
        "docs": "http://docs-at-run.test",
        "model": "model_at_run",
        "chunk_rows": 2500,
        "pseudonym_key_id": fingerprint(SECRET_AT_RUN.encode()),
    }
    assert (tmp_path / "at-run" / "raw.duckdb").exists()  # the DuckDB resources follow the data directory
    assert not (tmp_path / "at-load").exists()
    assert SECRET_AT_RUN not in stored and SECRET_AT_LOAD not in stored
    assert metadata["pseudonym_key_id"] in stored


def test_unset_variables_keep_the_defaults(clean_env, tmp_path):
    resources = build_resources()
    storage, privacy = resources["storage"], resources["privacy"]
    assert storage.data_dir == str((PROJECT_ROOT / "data").resolve()) and not isinstance(storage.data_dir, dg.EnvVar)
    assert storage.quarantine_retention_days == 30
    assert (privacy.nlp_model, privacy.pseudonym_secret, privacy.pseudonym_key_file, privacy.chunk_rows) == (
        "",
        "",
        "",
        100_000,
    )
    assert build_resources(tmp_path)["storage"].data_dir == str(tmp_path)  # an explicit directory wins


def test_the_key_file_can_be_named_and_a_relative_data_dir_is_made_absolute(clean_env, tmp_path):
    key_file = tmp_path / "mounted" / "pseudonym.key"
    key_file.parent.mkdir()
    key_file.write_text(SECRET_AT_RUN + "\n", encoding="utf-8")
    key_file.chmod(0o600)
    clean_env.setenv(PSEUDONYM_KEY_FILE_ENV, str(key_file))
    clean_env.setenv(DATA_DIR_ENV, "relative-data")
    clean_env.chdir(tmp_path)
    (tmp_path / "relative-data").mkdir()
    resources = build_resources()
    metadata, stored = _run(resources)
    assert metadata["root"] == str(tmp_path / "relative-data")
    assert metadata["pseudonym_key_id"] == fingerprint(SECRET_AT_RUN.encode())
    assert not (tmp_path / "relative-data" / "keys").exists()  # the named file, not the data directory's
    assert SECRET_AT_RUN not in stored


def test_a_bad_chunk_size_stops_the_run_before_any_step(clean_env, tmp_path):
    clean_env.setenv(CHUNK_ROWS_ENV, "0")
    resources = build_resources(tmp_path)
    with pytest.raises(dg.DagsterResourceFunctionError) as failed:
        _run(resources)
    assert CHUNK_ROWS_ENV in str(failed.value.__cause__)
    assert not (tmp_path / "raw.duckdb").exists()


def test_a_resource_built_without_the_definitions_finds_the_same_key(clean_env, tmp_path):
    """Command-line tools (python -m pipelines.lifecycle) build the resource themselves: same variables, same key."""
    key_file = tmp_path / "pseudonym.key"
    key_file.write_text(SECRET_AT_LOAD, encoding="utf-8")
    key_file.chmod(0o600)
    storage = PipelineStorage(data_dir=str(tmp_path / "data"))
    clean_env.setenv(PSEUDONYM_KEY_FILE_ENV, str(key_file))
    assert PrivacySettings().pseudonym_key(storage).key_id == fingerprint(SECRET_AT_LOAD.encode())
    clean_env.setenv(PSEUDONYM_KEY_ENV, SECRET_AT_RUN)  # the variable holding the key itself comes first
    assert PrivacySettings().pseudonym_key(storage).key_id == fingerprint(SECRET_AT_RUN.encode())
    assert not (tmp_path / "data" / "keys").exists()


def test_suite_outcomes_link_the_data_docs_url_the_storage_resource_names(clean_env, tmp_path):
    suite = {
        "name": "probe.quality",
        "expectations": [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "x"}}],
    }
    outcome = run_suite(suite, pd.DataFrame({"x": [1, 2]}), tmp_path / "gx", docs_url="http://docs.example:8080/")
    assert outcome.success and outcome.data_docs.startswith("http://docs.example:8080/validations/")
