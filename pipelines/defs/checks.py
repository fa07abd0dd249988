"""Blocking checks: each dataset's Great Expectations suites (from `expectations/`), run on staged tables.

The privacy suite reads the table through `pipelines.privacy.disclosure` (risk features computed in DuckDB, only the
columns the suite names fetched) and takes its thresholds from the contract as suite parameters."""

from pathlib import Path

import dagster as dg
import pandas as pd

from pipelines.contracts import Contract
from pipelines.ingest import SOURCE_FILE_COLUMN
from pipelines.privacy.disclosure import class_sizes
from pipelines.quality.features import risk_features, suite_columns, with_risk_features
from pipelines.quality.runner import SuiteOutcome, run_suite
from pipelines.quality.suites import load_suite, privacy_parameters, suite_drift
from pipelines.resources import EXPECTATIONS_DIR, PipelineStorage
from pipelines.sql import quote_ident, read_frame


class SuiteFailed(ValueError):
    """Carries a failed suite's summary to the quarantine reason file."""

    problem = "expectations_failed"


def check_result(
    outcome: SuiteOutcome, extra: dict | None = None, check_name: str | None = None
) -> dg.AssetCheckResult:
    failed = outcome.failed
    description = (
        f"{outcome.suite}: all {len(outcome.results)} expectations passed"
        if outcome.success
        else f"{outcome.suite}: {len(failed)} of {len(outcome.results)} expectations failed: " + failed_lines(outcome)
    )
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=outcome.success,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description[:2000],
        metadata={
            "suite": outcome.suite,
            "expectations": len(outcome.results),
            "failed_expectations": len(failed),
            "results": dg.MetadataValue.json(outcome.to_metadata()),
            "results_table": dg.MetadataValue.md(outcome.markdown()),
            **({"data_docs": dg.MetadataValue.url(outcome.data_docs)} if outcome.data_docs else {}),
            **(extra or {}),
        },
    )


def read_table(con, table: str, vectors_per_chunk: int = 50) -> pd.DataFrame:
    """A whole table as pandas, fetched in chunks (see `pipelines.sql.read_frame`)."""
    return read_frame(con, f"SELECT * FROM {quote_ident(table)}", vectors_per_chunk)


def privacy_frame(frame: pd.DataFrame, quasi: list[str], sensitive: list[str]) -> pd.DataFrame:
    """An in-memory frame as the privacy gate gives it to its suite (the same SQL as `privacy_check`)."""
    return with_risk_features(frame, quasi, sensitive)


def quality_spec(contract: Contract, raw_key: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        "quality_suite",
        asset=raw_key,
        blocking=True,
        description=(
            f"GE suite {contract.dataset}.quality on the staged batch: schema, nulls, uniqueness, ranges. "
            "Only a passing batch replaces the raw table."
        ),
    )


def privacy_spec(contract: Contract, deidentified_key: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        "privacy_suite",
        asset=deidentified_key,
        blocking=True,
        description=(
            f"GE suite {contract.dataset}.privacy on the staged table: no PII patterns; k-anonymity, l-diversity, "
            "uniqueness, risk thresholds. Only a passing table replaces the de-identified one."
        ),
    )


def failed_lines(outcome: SuiteOutcome) -> str:
    """Each failed expectation with its column, observed counts and threshold (never a value)."""
    return "; ".join(
        f"{r.expectation}({r.column or 'table'}) observed {_fmt(r.observed)} vs threshold {_fmt(r.threshold)}"
        for r in outcome.failed
    )


def _fmt(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items()) or "-"


def _reviewed_suite(contract: Contract, name: str, suites_dir: Path) -> dict:
    """The reviewed suite, refused if it disagrees with its contract (thresholds live in the contract only)."""
    suite = load_suite(suites_dir, name)
    drift = suite_drift(contract, suite)
    if drift:
        raise dg.Failure(
            description=(
                f"{name} disagrees with contract {contract.dataset} v{contract.version} in {len(drift)} place(s): "
                + "; ".join(drift[:5])
                + ". Change thresholds in the contract and regenerate: python -m pipelines.quality.scaffold --overwrite; nothing was replaced."
            )
        )
    return suite


def quality_check(
    con, table: str, contract: Contract, storage: PipelineStorage, suites_dir: Path = EXPECTATIONS_DIR
) -> dg.AssetCheckResult:
    """The contract's quality suite on a (staged) raw table."""
    frame = read_table(con, table)
    outcome = run_suite(
        _reviewed_suite(contract, f"{contract.dataset}.quality", suites_dir),
        frame.drop(columns=[SOURCE_FILE_COLUMN]),
        storage.gx_dir,
        docs_url=storage.data_docs_url,
    )
    return check_result(outcome, check_name="quality_suite")


def privacy_check(
    con, table: str, contract: Contract, storage: PipelineStorage, suites_dir: Path = EXPECTATIONS_DIR
) -> dg.AssetCheckResult:
    """The contract's privacy suite on a (staged) de-identified table."""
    quasi, sensitive = contract.published_quasi_identifiers, contract.published_sensitive_attributes
    suite = _reviewed_suite(contract, f"{contract.dataset}.privacy", suites_dir)
    frame = risk_features(con, table, quasi, sensitive, columns=suite_columns(suite))
    outcome = run_suite(suite, frame, storage.gx_dir, privacy_parameters(contract), docs_url=storage.data_docs_url)
    extra = {"quasi_identifiers": quasi, "sensitive_attributes": sensitive}
    present = {row[0] for row in con.execute(f"DESCRIBE {quote_ident(table)}").fetchall()}
    if quasi and set(quasi + sensitive) <= present and len(frame):
        p = contract.privacy
        risk = class_sizes(
            con, table, quasi, sensitive=sensitive, k=p.k_anonymity, risk_threshold=p.max_prosecutor_risk
        )
        extra["risk"] = dg.MetadataValue.json(risk.to_metadata())
    return check_result(outcome, extra, check_name="privacy_suite")
