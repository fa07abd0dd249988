"""Column classification: find personal data in columns the contract says are not personal.

A sample of each column's distinct values is scanned with Presidio and matched against the batch's known
identifiers; the column name is a hint (a column called `contact` holding emails is suspicious sooner).
Unlike one-entity-per-column classifiers, every entity type found is counted, so mixed columns show up.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from pipelines.contracts import Column, Contract, Role
from pipelines.privacy.known import KnownIdentifiers

SAMPLE_SIZE = 200
MIN_SHARE = 0.10  # share of sampled values with an entity before a column counts as holding it
HINTED_MIN_SHARE = 0.02  # lower bar when the column's name suggests that very entity
MIN_VALUES = 3  # one odd value in a ten-value column is noise, not a personal column
# Entities that are not, on their own, about a person in a structured column.
NOT_PERSONAL = {"DATE_TIME", "NRP", "URL", "ORGANIZATION", "TICKET_ID", "CLAIM_ID", "ORDER_ID", "INCIDENT_ID"}
NAME_HINTS = {
    "PERSON": r"name|person|customer|employee|contact|owner|user",
    "EMAIL_ADDRESS": r"e?mail|contact",
    "PHONE_NUMBER": r"phone|tel|mobile|cell|fax|contact",
    "US_SSN": r"ssn|social",
    "CREDIT_CARD": r"card|pan",
    "IBAN_CODE": r"iban|account",
    "IP_ADDRESS": r"\bip\b|ip_|addr",
    "LOCATION": r"address|street|city|location",
}


class UndeclaredPIIError(ValueError):
    """A column holds personal data its contract does not declare; names dataset, column, entity."""


@dataclass
class ColumnClassification:
    column: str
    declared_role: str
    declared_entity: str | None
    sampled: int
    detected: dict[str, int] = field(default_factory=dict)  # entity -> sampled values containing it
    undeclared: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def _sample(values: pd.Series, size: int) -> list[str]:
    distinct = pd.Series(sorted(pd.unique(values.dropna().astype(str))), dtype=object)  # row order does not matter
    if len(distinct) > size:
        distinct = distinct.sample(n=size, random_state=0)  # seeded: the same batch gives the same verdict
    return distinct.tolist()


def _hinted(column: Column, entity: str) -> bool:
    pattern = NAME_HINTS.get(entity)
    return bool(pattern and re.search(pattern, column.name))


def classify_column(
    column: Column, values: pd.Series, *, known: KnownIdentifiers | None, model_name: str | None, score_threshold: float
) -> ColumnClassification:
    from pipelines.privacy.analyzer import scan_texts

    sample = _sample(values, SAMPLE_SIZE)
    found: Counter = Counter()
    for value, results in zip(sample, scan_texts(sample, score_threshold=score_threshold, model_name=model_name)):
        entities = {r.entity_type for r in results if r.entity_type not in NOT_PERSONAL}
        if known is not None:
            entities |= {e for e in [known.matches_any(value)] if e} | {r.entity_type for r in known.find_in_text(value)}
        found.update(entities)
    result = ColumnClassification(column.name, column.role.value, column.entity, len(sample), dict(found))
    if column.role in {Role.plain_attribute, Role.sensitive_attribute} or (column.role == Role.quasi_identifier and not column.entity):
        for entity, n in sorted(found.items()):
            if entity in column.tolerate_entities or entity == column.entity:
                continue
            bar = HINTED_MIN_SHARE if _hinted(column, entity) else MIN_SHARE
            if n >= MIN_VALUES and n / len(sample) >= bar:
                result.undeclared.append(entity)
    return result


def columns_to_classify(contract: Contract) -> list[Column]:
    """String columns published as they are (or generalized): masked, suppressed or scanned ones are handled by their operator."""
    return [c for c in contract.columns if c.type == "string" and c.deidentify.operator in {"keep", "generalize"}]


def classify_frame(
    frame: pd.DataFrame | dict[str, pd.Series], contract: Contract, *, known: KnownIdentifiers | None, model_name: str | None
) -> list[ColumnClassification]:
    """Classify every string column that is published as is; raise if one holds undeclared PII.

    `frame` may also map column names to their (distinct) values, as the streaming path passes them.
    """
    results = []
    for column in columns_to_classify(contract):
        results.append(
            classify_column(column, frame[column.name], known=known, model_name=model_name,
                            score_threshold=max(contract.privacy.score_threshold, 0.5))
        )
    flagged = [r for r in results if r.undeclared]
    if flagged:
        listed = "; ".join(
            f"column '{r.column}' (declared {r.declared_role}) holds {', '.join(f'{e} in {r.detected[e]} of {r.sampled} sampled values' for e in r.undeclared)}"
            for r in flagged
        )
        raise UndeclaredPIIError(
            f"{contract.dataset}: undeclared personal data: {listed}. Declare the column's role and entity in the "
            "contract (and how to mask it), or list the entity under tolerate_entities if a steward confirms it is not personal."
        )
    return results
