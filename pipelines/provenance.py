"""Provenance recorded on every asset: run, trigger, code version, component versions."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from functools import lru_cache
from importlib import metadata as importlib_metadata
from typing import Any

import dagster as dg

from pipelines.resources import PROJECT_ROOT

COMPONENTS = {
    "dagster": "dagster",
    "dagster-dbt": "dagster-dbt",
    "dbt-core": "dbt-core",
    "dbt-duckdb": "dbt-duckdb",
    "duckdb": "duckdb",
    "presidio-analyzer": "presidio-analyzer",
    "presidio-anonymizer": "presidio-anonymizer",
    "great-expectations": "great-expectations",
    "spacy": "spacy",
}


def nlp_model() -> str:
    """The spaCy model the detector uses, with its version (resolved from the setting, not loaded)."""
    from pipelines.privacy.analyzer import resolve_model_name

    name = resolve_model_name()
    try:
        return f"{name} {importlib_metadata.version(name.replace('_', '-'))}"
    except importlib_metadata.PackageNotFoundError:
        return name


@lru_cache(maxsize=1)
def component_versions() -> dict[str, str]:
    versions = {"nlp_model": nlp_model()}
    for label, dist in COMPONENTS.items():
        try:
            versions[label] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            versions[label] = "not installed"
    return versions


@lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of the running code (`-dirty` if the tree has changes), or $PIPELINES_CODE_VERSION."""
    if os.environ.get("PIPELINES_CODE_VERSION"):
        return os.environ["PIPELINES_CODE_VERSION"]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def trigger(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> str:
    """What started the run: a schedule, a sensor, a backfill, or a person/CLI."""
    tags = context.run.tags if context.run else {}
    if "dagster/schedule_name" in tags:
        return f"schedule:{tags['dagster/schedule_name']}"
    if "dagster/sensor_name" in tags:
        return f"sensor:{tags['dagster/sensor_name']}"
    if "dagster/backfill" in tags:
        return f"backfill:{tags['dagster/backfill']}"
    if "user" in tags:
        return f"user:{tags['user']}"
    return f"manual:{tags.get('pipelines/started_by', 'ui-or-cli')}"


def provenance(context: dg.AssetExecutionContext) -> dict[str, Any]:
    """The provenance block every asset attaches to its materialization."""
    return {
        "run_id": context.run_id,
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "triggered_by": trigger(context),
        "code_version": code_version(),
        "versions": component_versions(),
    }
