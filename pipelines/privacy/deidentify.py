"""Apply a contract's de-identification to a raw table, recording every parameter (never a value)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pandas as pd
from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig

from pipelines.contracts import Column, Contract, Role, ScanText
from pipelines.privacy.operators import KeyedPseudonym, OperatorContext, apply_column


@dataclass
class ColumnRecord:
    """How one column was de-identified: role, operator, parameters, detections; no values."""

    column: str
    role: str
    entity: str | None
    operator: str
    params: dict[str, Any] = field(default_factory=dict)
    values_in: int = 0
    entities_detected: dict[str, int] = field(default_factory=dict)
    published: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "role": self.role,
            "entity": self.entity,
            "operator": self.operator,
            "params": self.params,
            "values_in": self.values_in,
            "entities_detected": self.entities_detected,
            "published": self.published,
        }


@dataclass
class DeidentifiedTable:
    frame: pd.DataFrame
    columns: list[ColumnRecord]
    rows_in: int
    rows_out: int
    rows_suppressed: int = 0
    detector: dict[str, Any] | None = None  # model, versions, recognizers: set when free text was scanned
    k_anonymity: dict[str, Any] = field(default_factory=dict)

    @property
    def entities_masked(self) -> int:
        return sum(sum(c.entities_detected.values()) for c in self.columns) + sum(
            c.values_in for c in self.columns if c.operator not in {"keep", "generalize", "scan"}
        )


class PrivacyThresholdError(ValueError):
    """De-identified output would break a privacy threshold that suppression cannot fix within its limit."""


def enforce_k_anonymity(frame: pd.DataFrame, contract: Contract) -> tuple[pd.DataFrame, int, dict[str, Any]]:
    """Suppress records in equivalence classes smaller than k, within the contract's suppression limit."""
    quasi = [c.name for c in contract.published_columns if c.role == Role.quasi_identifier]
    k, limit = contract.privacy.k_anonymity, contract.privacy.max_suppression
    params: dict[str, Any] = {"quasi_identifiers": quasi, "k": k, "max_suppression": limit}
    if not quasi or k <= 1 or frame.empty:
        return frame, 0, params
    sizes = frame.groupby(quasi, dropna=False, sort=False, observed=True)[quasi[0]].transform("size")
    small = sizes < k
    share = float(small.mean())
    params["suppressed_share"] = round(share, 6)
    if share > limit:
        raise PrivacyThresholdError(
            f"{contract.dataset}: {int(small.sum())} of {len(frame)} records ({share:.1%}) are in equivalence classes "
            f"smaller than k={k} over {quasi}; suppressing them exceeds the contract's limit of {limit:.1%}. "
            "Generalize a quasi-identifier further (coarser bands, shorter postcode) or suppress a column."
        )
    return frame.loc[~small], int(small.sum()), params


@lru_cache(maxsize=1)
def get_anonymizer() -> AnonymizerEngine:
    """Presidio's anonymizer with the keyed-pseudonym operator registered."""
    engine = AnonymizerEngine()
    engine.add_anonymizer(KeyedPseudonym)
    return engine


def _text_operator(name: str, entity: str, ctx: OperatorContext) -> OperatorConfig:
    if name == "pseudonymize":
        return OperatorConfig("pseudonymize", {"secret": ctx.pseudonym_key.secret, "domain": entity})
    if name == "replace":
        return OperatorConfig("replace", {"new_value": f"<{entity}>"})
    if name == "mask":
        return OperatorConfig("mask", {"masking_char": "*", "chars_to_mask": 10_000, "from_end": False})
    return OperatorConfig("redact", {})


def scan_text_column(
    values: pd.Series, column: Column, ctx: OperatorContext, *, score_threshold: float, model_name: str | None
) -> tuple[pd.Series, dict[str, Any], dict[str, int]]:
    """Find PII in every distinct text and mask it per entity type; returns values, params, counts."""
    from pipelines.privacy.analyzer import scan_texts

    spec: ScanText = column.deidentify  # type: ignore[assignment]
    threshold = spec.score_threshold if spec.score_threshold is not None else score_threshold
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    texts = [str(u) for u in uniques]
    results = scan_texts(texts, entities=spec.entities, score_threshold=threshold, model_name=model_name)
    anonymizer = get_anonymizer()
    default = spec.operators.get("DEFAULT", "replace")
    masked: list[str] = []
    per_distinct: list[Counter] = []
    for text, found in zip(texts, results):
        per_distinct.append(Counter(r.entity_type for r in found))
        if not found:
            masked.append(text)
            continue
        operators = {r.entity_type: _text_operator(spec.operators.get(r.entity_type, default), r.entity_type, ctx) for r in found}
        masked.append(anonymizer.anonymize(text=text, analyzer_results=found, operators=operators).text)
    # counts are per row: a text repeated in 10 rows had its PII masked 10 times
    counts: Counter = Counter()
    occurrences = pd.Series(codes[codes >= 0]).value_counts()
    for code, n in occurrences.items():
        for entity, k in per_distinct[int(code)].items():
            counts[entity] += k * int(n)
    out = pd.Series(pd.array([masked[c] if c >= 0 else None for c in codes], dtype="string"), index=values.index)
    params = {
        "entities": spec.entities or "all supported",
        "score_threshold": threshold,
        "operators": dict(sorted(spec.operators.items())),
        "key_id": ctx.pseudonym_key.key_id if "pseudonymize" in spec.operators.values() else None,
    }
    return out, params, dict(sorted(counts.items()))


def deidentify_frame(
    frame: pd.DataFrame, contract: Contract, ctx: OperatorContext, *, model_name: str | None = None
) -> DeidentifiedTable:
    """De-identify every declared column of `frame` as its contract says."""
    missing = [c.name for c in contract.columns if c.name not in frame.columns]
    if missing:
        raise ValueError(f"{contract.dataset}: the raw table lacks declared column(s) {', '.join(missing)}")
    out: dict[str, pd.Series] = {}
    records: list[ColumnRecord] = []
    for column in contract.columns:
        values = frame[column.name]
        record = ColumnRecord(
            column=column.name,
            role=column.role.value,
            entity=column.entity,
            operator=column.deidentify.operator,
            values_in=int(values.notna().sum()),
        )
        if column.deidentify.operator == "scan":
            new, record.params, record.entities_detected = scan_text_column(
                values, column, ctx, score_threshold=contract.privacy.score_threshold, model_name=model_name
            )
        else:
            new, record.params = apply_column(values, column, ctx)
        if new is None:
            record.published = False
        else:
            out[column.name] = new
        records.append(record)
    result, suppressed, k_params = enforce_k_anonymity(pd.DataFrame(out, index=frame.index), contract)
    detector = None
    if any(c.deidentify.operator == "scan" for c in contract.columns):
        from pipelines.privacy.analyzer import detector_info

        detector = detector_info(model_name)
    return DeidentifiedTable(
        result.reset_index(drop=True), records, rows_in=len(frame), rows_out=len(result),
        rows_suppressed=suppressed, detector=detector, k_anonymity=k_params,
    )


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items() if k != "key_id" and v is not None) or "-"


def deidentification_markdown(records: list[ColumnRecord]) -> str:
    """A steward-readable table: what happened to each column (parameters and counts, never values)."""
    lines = [
        "| column | role | entity | operator | parameters | key id | values in | PII found (free text) | published |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        found = ", ".join(f"{k}: {v}" for k, v in r.entities_detected.items()) or "-"
        lines.append(
            f"| {r.column} | {r.role} | {r.entity or '-'} | {r.operator} | {_params_text(r.params)} | "
            f"{r.params.get('key_id') or '-'} | {r.values_in} | {found} | {'yes' if r.published else 'no'} |"
        )
    return "\n".join(lines)
