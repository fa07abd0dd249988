"""Resources: where data lives, and the privacy settings (model, keys)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from pipelines.paths import CONTRACTS_DIR, DBT_PROJECT_DIR, EXPECTATIONS_DIR, PROJECT_ROOT  # noqa: F401 (re-exported)
from pipelines.privacy.keys import SecretKey, load_key
from pipelines.privacy.operators import OperatorContext
from pipelines.runs import record_worker


def default_data_dir() -> Path:
    """`$PIPELINES_DATA_DIR`, else `data/` in the project."""
    return Path(os.environ.get("PIPELINES_DATA_DIR") or PROJECT_ROOT / "data").resolve()


class PipelineStorage(dg.ConfigurableResource):
    """Where landed files, quarantine, the DuckDB files and local keys live (all under `data_dir`)."""

    data_dir: str
    quarantine_retention_days: int = 30  # rejected files hold personal data: purged daily after this

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Everything a run creates (DuckDB files, dbt's warehouse, logs) starts owner-only; the one file meant
        # for others, marts.duckdb, is opened up explicitly when published.
        os.umask(0o077)
        if context.instance is not None and context.run_id:
            record_worker(context.instance, context.run_id)  # lets run monitoring tell a dead run from a slow one

    @property
    def root(self) -> Path:
        return Path(self.data_dir)

    @property
    def landing_dir(self) -> Path:
        return self.root / "landing"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    @property
    def raw_db(self) -> Path:
        """Restricted: raw personal data. Never attached by dbt, never shown to analysts."""
        return self.root / "raw.duckdb"

    @property
    def deidentified_db(self) -> Path:
        return self.root / "deidentified.duckdb"

    @property
    def warehouse_db(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def marts_db(self) -> Path:
        """The analysts' database: approved marts and nothing else."""
        return self.root / "marts.duckdb"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def audit_log(self) -> Path:
        """Tamper-evident log of what was de-identified, encrypted and published (see pipelines.audit)."""
        return self.root / "audit" / "pipeline.jsonl"

    @property
    def gx_dir(self) -> Path:
        """Great Expectations project: stored validation results and Data Docs (HTML, no cell values)."""
        return self.root / "gx"

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.landing_dir.mkdir(exist_ok=True)
        self.quarantine_dir.mkdir(mode=0o700, exist_ok=True)


CHUNK_ROWS_ENV = "PIPELINES_CHUNK_ROWS"


def chunk_rows_from_env(default: int = 100_000) -> int:
    """Rows de-identified at a time: $PIPELINES_CHUNK_ROWS, else the default."""
    raw = os.environ.get(CHUNK_ROWS_ENV, "").strip().replace("_", "")
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{CHUNK_ROWS_ENV} must be a positive whole number of rows, got {raw!r}")
    return int(raw)


class PrivacySettings(dg.ConfigurableResource):
    """The NLP model and the keys; secrets are read from the environment or key files when used."""

    nlp_model: str = ""  # empty: $PIPELINES_NLP_MODEL, else the pinned small English model
    pseudonym_key_env: str = "PIPELINES_PSEUDONYM_KEY"
    enable_reidentification: bool = False
    reidentification_key_env: str = "PIPELINES_REIDENTIFICATION_KEY"
    chunk_rows: int = 100_000  # rows de-identified at a time (memory is bounded by this, not by the table)

    def model_name(self) -> str | None:
        return self.nlp_model or None

    def pseudonym_key(self, storage: PipelineStorage) -> SecretKey:
        return load_key(self.pseudonym_key_env, storage.keys_dir / "pseudonym.key")

    def operator_context(self, storage: PipelineStorage, run_date: date) -> OperatorContext:
        reid = (
            load_key(self.reidentification_key_env, storage.keys_dir / "reidentification.key")
            if self.enable_reidentification
            else None
        )
        return OperatorContext(
            pseudonym_key=self.pseudonym_key(storage),
            run_date=run_date,
            hierarchies_dir=CONTRACTS_DIR / "hierarchies",
            reidentification_key=reid,
        )


@contextlib.contextmanager
def connection(resource: DuckDBResource) -> Iterator[duckdb.DuckDBPyConnection]:
    """`resource.get_connection()`, closed even when the step fails: dagster-duckdb closes it only on success, and a
    connection left to the garbage collector keeps the file open (and locked) for the rest of the process."""
    with resource.get_connection() as con:
        try:
            yield con
        finally:
            con.close()
