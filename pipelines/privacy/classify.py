"""Column classification: find personal data in columns the contract says are not personal.

A sample of each column's distinct values is scanned with Presidio and matched against the batch's known
identifiers; the column name is a hint (a column called `contact` holding emails is suspicious sooner).
Unlike one-entity-per-column classifiers, every entity type found is counted, so mixed columns show up.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipelines.contracts import Column, Contract, Role
from pipelines.privacy.known import KnownIdentifiers

SAMPLE_SIZE = 200
SAMPLE_HASH_KEY = "column-sample-v1"  # 16 bytes; changing it changes which values are sampled
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
    """Up to `size` distinct values: those with the smallest keyed 64-bit hash (bottom-k sampling).

    The same set of values gives the same sample whatever the row order or batch split, without sorting
    every distinct value (4x faster than sort-then-sample on 100,000 IDs)."""
    distinct = np.asarray(pd.unique(values.dropna().astype(str)), dtype=object)
    if len(distinct) <= size:
        return sorted(distinct.tolist())
    hashes = pd.util.hash_array(distinct, hash_key=SAMPLE_HASH_KEY, categorize=False)
    chosen = np.argpartition(hashes, size)[:size]
    return [value for _, value in sorted(zip(hashes[chosen].tolist(), distinct[chosen].tolist()))]


def _hinted(column: Column, entity: str) -> bool:
    pattern = NAME_HINTS.get(entity)
    return bool(pattern and re.search(pattern, column.name))


def classify_column(
    column: Column, values: pd.Series, *, known: KnownIdentifiers | None, model_name: str | None, score_threshold: float
) -> ColumnClassification:
    """Scan a seeded sample of the column's distinct values; list the entities its declaration does not cover."""
    return _classify_sample(column, _sample(values, SAMPLE_SIZE), known=known, model_name=model_name, score_threshold=score_threshold)


def _classify_sample(
    column: Column, sample: list[str], *, known: KnownIdentifiers | None, model_name: str | None, score_threshold: float
) -> ColumnClassification:
    from pipelines.privacy.analyzer import scan_texts

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


def _threshold(contract: Contract) -> float:
    return max(contract.privacy.score_threshold, 0.5)


def classify_frame(
    frame: pd.DataFrame | dict[str, pd.Series], contract: Contract, *, known: KnownIdentifiers | None, model_name: str | None
) -> list[ColumnClassification]:
    """Classify every string column that is published as is; raise if one holds undeclared PII.

    `frame` may also map column names to their (distinct) values, as the streaming path passes them.
    """
    results = [
        classify_column(column, frame[column.name], known=known, model_name=model_name, score_threshold=_threshold(contract))
        for column in columns_to_classify(contract)
    ]
    return _checked(contract, results)


def _checked(contract: Contract, results: list[ColumnClassification]) -> list[ColumnClassification]:
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


class SharedClassification:
    """`classify_frame`, with the work shared by this process and a forked helper.

    The helper starts at once, on the largest samples first; the caller goes on with other work and, in `result()`,
    classifies whatever columns the helper has not started (a shared counter hands out each column once), then waits.
    Without a helper (`background=False`, or one usable process) `result()` does it all. Same results as classify_frame.
    """

    def __init__(self, frame, contract: Contract, *, known: KnownIdentifiers | None, model_name: str | None, background: bool) -> None:
        from pipelines.privacy.analyzer import Background, shared_counter

        self._contract, self._known, self._model_name = contract, known, model_name
        self._columns = columns_to_classify(contract)
        self._samples = [_sample(frame[c.name], SAMPLE_SIZE) for c in self._columns]
        self._order = sorted(range(len(self._columns)), key=lambda i: -len(self._samples[i]))
        self._next = shared_counter() if background else None
        self._local_next = 0
        self._results: list[ColumnClassification] | None = None
        self._helper = Background(self._work, enabled=self._next is not None)
        if self._next is None:
            self.result()  # no helper: classify now, before any other work (raises here)

    def _claim(self) -> int:
        if self._next is None:
            self._local_next += 1
            return self._local_next - 1
        with self._next.get_lock():
            self._next.value += 1
            return self._next.value - 1

    def _work(self) -> dict[int, ColumnClassification]:
        done = {}
        while (k := self._claim()) < len(self._order):
            i = self._order[k]
            done[i] = _classify_sample(self._columns[i], self._samples[i], known=self._known, model_name=self._model_name,
                                       score_threshold=_threshold(self._contract))
        return done

    def result(self) -> list[ColumnClassification]:
        """Every column's classification, in contract order; raises UndeclaredPIIError as classify_frame does."""
        if self._results is None:
            try:
                mine = self._work()
                by_index = self._helper.result() | mine
            finally:
                self._helper.cancel()
            self._results = [by_index[i] for i in range(len(self._columns))]
        return _checked(self._contract, self._results)

    def poll(self) -> None:
        """If the helper has finished, take its results now (raising UndeclaredPIIError early, mid-stream)."""
        if self._results is None and self._helper.ready():
            self.result()

    def cancel(self) -> None:
        self._helper.cancel()
