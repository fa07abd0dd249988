"""Great Expectations suites: scaffolded from contracts once, then kept in `expectations/` as reviewed files.

Privacy thresholds are expressed as ordinary expectations over exact per-record risk features that
`pipelines.privacy.risk` derives (equivalence-class size, record risk, distinct sensitive values per
class), so every threshold lives in a suite file a steward can review, not in code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.contracts import Contract, Role

CLASS_SIZE = "_equivalence_class_size"
RECORD_RISK = "_record_risk"
DISTINCT_PREFIX = "_class_distinct_"

# Patterns of direct identifiers that must never survive de-identification (anchored loosely on
# purpose: a match anywhere in a cell fails).
PII_PATTERNS = {
    "EMAIL_ADDRESS": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "US_SSN": r"\b\d{3}-\d{2}-\d{4}\b",
    "CREDIT_CARD": r"\b(?:\d[ -]?){13,16}\b",
    "PHONE_NUMBER": r"\(?\b\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b",
    "IBAN_CODE": r"\b[A-Z]{2}\d{2}[A-Z0-9]{11,30}\b",
    "IP_ADDRESS": r"\b(?:\d{1,3}\.){3}\d{1,3}\b",
}


def _expectation(kind: str, meta: str | None = None, **kwargs: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"type": kind, "kwargs": kwargs}
    if meta:
        item["meta"] = {"notes": meta}
    return item


def quality_suite(contract: Contract) -> dict[str, Any]:
    """Schema, nulls, uniqueness, value sets, ranges and row-count bounds, from the contract."""
    q = contract.quality
    items = [
        _expectation("expect_table_columns_to_match_set", "schema", column_set=[c.name for c in contract.columns], exact_match=True),
        _expectation("expect_table_row_count_to_be_between", "row-count bounds", min_value=q.min_rows, max_value=q.max_rows),
    ]
    for c in contract.columns:
        if not c.nullable:
            items.append(_expectation("expect_column_values_to_not_be_null", None, column=c.name))
        else:
            items.append(_expectation("expect_column_values_to_not_be_null", "null rate", column=c.name, mostly=round(1 - q.max_null_fraction, 4)))
        if c.unique:
            items.append(_expectation("expect_column_values_to_be_unique", None, column=c.name))
        if c.allowed_values is not None:
            items.append(_expectation("expect_column_values_to_be_in_set", None, column=c.name, value_set=c.allowed_values))
        if c.min_value is not None or c.max_value is not None:
            items.append(_expectation("expect_column_values_to_be_between", None, column=c.name, min_value=c.min_value, max_value=c.max_value))
    return {"name": f"{contract.dataset}.quality", "meta": {"dataset": contract.dataset, "layer": "raw"}, "expectations": items}


def privacy_suite(contract: Contract) -> dict[str, Any]:
    """No PII patterns in published text; k, l and uniqueness thresholds over the published quasi-identifiers."""
    p = contract.privacy
    published = contract.published_columns
    items: list[dict[str, Any]] = []
    for c in published:
        if c.type != "string" or c.deidentify.operator in {"pseudonymize", "generalize", "redact", "replace", "mask"}:
            continue
        items.append(
            _expectation(
                "expect_column_values_to_not_match_regex_list",
                "no direct identifier pattern survives",
                column=c.name,
                regex_list=list(PII_PATTERNS.values()),
            )
        )
    quasi = [c.name for c in published if c.role == Role.quasi_identifier]
    if quasi:
        items += [
            _expectation("expect_column_min_to_be_between", f"k-anonymity over {quasi}", column=CLASS_SIZE, min_value=p.k_anonymity),
            _expectation(
                "expect_column_values_to_be_between",
                "sample uniqueness: share of records in classes of size 1",
                column=CLASS_SIZE,
                min_value=2,
                mostly=round(1 - p.max_sample_uniqueness, 6),
            ),
            _expectation("expect_column_max_to_be_between", "highest prosecutor risk", column=RECORD_RISK, max_value=p.max_prosecutor_risk),
        ]
        for c in published:
            if c.role == Role.sensitive_attribute:
                items.append(
                    _expectation(
                        "expect_column_min_to_be_between",
                        f"distinct l-diversity of {c.name}",
                        column=DISTINCT_PREFIX + c.name,
                        min_value=p.l_diversity,
                    )
                )
    return {
        "name": f"{contract.dataset}.privacy",
        "meta": {"dataset": contract.dataset, "layer": "deidentified", "quasi_identifiers": quasi,
                 "sensitive_attributes": [c.name for c in published if c.role == Role.sensitive_attribute]},
        "expectations": items,
    }


def suite_path(directory: Path, name: str) -> Path:
    return directory / f"{name}.json"


def write_suite(directory: Path, suite: dict[str, Any], *, overwrite: bool = False) -> Path | None:
    """Write a scaffolded suite unless a reviewed one already exists."""
    path = suite_path(directory, suite["name"])
    if path.exists() and not overwrite:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(suite, indent=2) + "\n", encoding="utf-8")
    return path


def load_suite(directory: Path, name: str) -> dict[str, Any]:
    path = suite_path(directory, name)
    if not path.exists():
        raise FileNotFoundError(f"expectation suite {path.name} is missing; scaffold it with: python -m pipelines.quality.scaffold")
    return json.loads(path.read_text(encoding="utf-8"))


def mart_privacy_suite(mart: str, approval: Any, columns: dict[str, str]) -> dict[str, Any]:
    """A mart publishes exactly its approved columns, in groups of at least the approved size, with no PII patterns."""
    items = [
        _expectation("expect_table_columns_to_match_set", "only the approved columns (plus the derived risk features)",
                     column_set=[*approval.publishes, CLASS_SIZE, RECORD_RISK], exact_match=True),
        _expectation("expect_column_min_to_be_between", "minimum group size (distinct people)",
                     column=approval.group_size_column, min_value=approval.min_group_size),
        _expectation("expect_column_min_to_be_between", f"k over published quasi-identifiers {approval.quasi_identifiers}",
                     column=CLASS_SIZE, min_value=approval.min_group_size),
    ]
    for name, data_type in columns.items():
        if data_type.lower().startswith(("varchar", "text", "string")):
            items.append(_expectation("expect_column_values_to_not_match_regex_list", "no direct identifier pattern",
                                      column=name, regex_list=list(PII_PATTERNS.values())))
    return {"name": f"{mart}.privacy", "meta": {"mart": mart, "layer": "mart"}, "expectations": items}
