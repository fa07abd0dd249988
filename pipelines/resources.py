"""Resources: where data lives, and the privacy settings (model, keys).

Settings that come from the environment are given to the resources as `dg.EnvVar` (see `from_env`): Dagster resolves
them when a run starts and shows the variable's name in the UI, never its value (the keys' secrets included).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pydantic
from dagster_duckdb import DuckDBResource

from pipelines.paths import CONTRACTS_DIR, DBT_PROJECT_DIR, EXPECTATIONS_DIR, PROJECT_ROOT  # noqa: F401 (re-exported)
from pipelines.privacy.keys import SecretKey, key_from_secret, load_key
from pipelines.privacy.operators import OperatorContext
from pipelines.runs import record_worker

DATA_DIR_ENV = "PIPELINES_DATA_DIR"
QUARANTINE_RETENTION_ENV = "PIPELINES_QUARANTINE_RETENTION_DAYS"
PSEUDONYM_KEY_ENV = "PIPELINES_PSEUDONYM_KEY"  # the secret itself (at least 32 characters)
PSEUDONYM_KEY_FILE_ENV = "PIPELINES_PSEUDONYM_KEY_FILE"  # or a file holding it (default: <data dir>/keys/pseudonym.key)
REIDENTIFICATION_KEY_ENV = "PIPELINES_REIDENTIFICATION_KEY"
CHUNK_ROWS_ENV = "PIPELINES_CHUNK_ROWS"


def from_env(name: str, default=None, *, integer: bool = False):
    """`dg.EnvVar(name)` (`dg.EnvVar.int` with `integer`) when the variable is set where the definitions load, else
    `default`. Dagster reads an EnvVar again when each run starts; it has no default for one unset then, so a
    variable set only later takes effect when the code location reloads."""
    if not os.environ.get(name, "").strip():
        return default
    return dg.EnvVar.int(name) if integer else dg.EnvVar(name)


def default_data_dir() -> Path:
    """`$PIPELINES_DATA_DIR`, else `data/` in the project (for the command-line tools; the resource takes the
    variable as a `dg.EnvVar`)."""
    return Path(os.environ.get(DATA_DIR_ENV) or PROJECT_ROOT / "data").resolve()


class PipelineStorage(dg.ConfigurableResource):
    """Where landed files, quarantine, the DuckDB files and local keys live (all under `data_dir`)."""

    data_dir: str
    quarantine_retention_days: int = 30  # rejected files hold personal data: purged daily after this
    data_docs_url: str = ""  # where the Data Docs site is served; empty: see `quality.data_docs.docs_base_url`

    @pydantic.field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        """An absolute path (dbt and the tools the steps start see the same folder); a `dg.EnvVar` is resolved and
        checked when the run starts."""
        return value if isinstance(value, dg.EnvVar) else str(Path(value).resolve())

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


def chunk_rows_from_env(default: int = 100_000) -> int:
    """Rows de-identified at a time: $PIPELINES_CHUNK_ROWS, else the default."""
    raw = os.environ.get(CHUNK_ROWS_ENV, "").strip().replace("_", "")
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{CHUNK_ROWS_ENV} must be a positive whole number of rows, got {raw!r}")
    return int(raw)


class StorageDuckDB(DuckDBResource):
    """A DuckDB file of the storage's data directory (`file`), located when the run starts (the directory may be a
    `dg.EnvVar`, resolved then); `database` is not used."""

    storage: PipelineStorage
    file: str
    database: str = ""

    @contextlib.contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        located = DuckDBResource(database=str(self.storage.root / self.file), connection_config=self.connection_config)
        with located.get_connection() as con:
            yield con


class PrivacySettings(dg.ConfigurableResource):
    """The NLP model and the keys. A key's secret is given as a `dg.EnvVar` (never a literal: the UI shows resource
    settings) or read from a key file; only its id (`SecretKey.key_id`) goes into metadata."""

    nlp_model: str = ""  # empty: $PIPELINES_NLP_MODEL, else the model of pipelines/privacy/conf/nlp.yaml
    pseudonym_secret: str = ""  # dg.EnvVar(PIPELINES_PSEUDONYM_KEY); empty: that variable when used, else the file
    pseudonym_key_file: str = ""  # empty: <data dir>/keys/pseudonym.key (created owner-only on first use)
    enable_reidentification: bool = False
    reidentification_secret: str = ""  # as pseudonym_secret, for break-glass encryption
    reidentification_key_file: str = ""  # empty: <data dir>/keys/reidentification.key
    chunk_rows: int = 100_000  # rows de-identified at a time (memory is bounded by this, not by the table)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.chunk_rows < 1:
            raise ValueError(f"chunk_rows ({CHUNK_ROWS_ENV}) must be a positive whole number of rows")

    def model_name(self) -> str | None:
        return self.nlp_model or None

    def pseudonym_key(self, storage: PipelineStorage) -> SecretKey:
        key_file = self.pseudonym_key_file or os.environ.get(PSEUDONYM_KEY_FILE_ENV, "").strip()
        return _key(self.pseudonym_secret, "pseudonym_secret", PSEUDONYM_KEY_ENV, key_file, storage, "pseudonym.key")

    def operator_context(self, storage: PipelineStorage, run_date: date) -> OperatorContext:
        reid = (
            _key(
                self.reidentification_secret,
                "reidentification_secret",
                REIDENTIFICATION_KEY_ENV,
                self.reidentification_key_file,
                storage,
                "reidentification.key",
            )
            if self.enable_reidentification
            else None
        )
        return OperatorContext(
            pseudonym_key=self.pseudonym_key(storage),
            run_date=run_date,
            hierarchies_dir=CONTRACTS_DIR / "hierarchies",
            reidentification_key=reid,
        )


def _key(secret: str, setting: str, env: str, key_file: str, storage: PipelineStorage, default_file: str) -> SecretKey:
    """The configured secret, else $`env`, else the key file. The definitions pass the variables as `dg.EnvVar`s; a
    resource built without them (command-line tools, tests) reads the same variables when the key is asked for."""
    if secret:
        return key_from_secret(secret, f"the privacy resource's {setting}")
    return load_key(env, Path(key_file) if key_file else storage.keys_dir / default_file)


@contextlib.contextmanager
def connection(resource: DuckDBResource) -> Iterator[duckdb.DuckDBPyConnection]:
    """`resource.get_connection()`, closed even when the step fails: dagster-duckdb closes it only on success, and a
    connection left to the garbage collector keeps the file open (and locked) for the rest of the process."""
    with resource.get_connection() as con:
        try:
            yield con
        finally:
            con.close()
