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
from pipelines.privacy.known import NAME_TOKEN, RECOGNIZER_NAME, KnownIdentifiers

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
    known: dict[str, int] = field(default_factory=dict)  # entity -> sampled values holding a known identifier
    tolerated: dict[str, int] = field(default_factory=dict)  # entity -> sampled values a steward's exception let pass
    name_tokens_without_evidence: int = 0  # values equal to a known one-word name, in a column that names no one

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
    return _classify_sample(
        column, _sample(values, SAMPLE_SIZE), known=known, model_name=model_name, score_threshold=score_threshold
    )


def _classify_sample(
    column: Column, sample: list[str], *, known: KnownIdentifiers | None, model_name: str | None, score_threshold: float
) -> ColumnClassification:
    found = _entities_in(
        sample, known=known, model_name=model_name, score_threshold=score_threshold, name_tokens=names_a_person(column)
    )
    return _verdict(column, len(sample), found)


KNOWN_PREFIX = "known:"  # count key of values holding a known identifier (a fact, not a detector's guess)
NAME_TOKEN_KEY = "name_token"  # count key of values equal to a known one-word name where nothing says it is one


def names_a_person(column: Column) -> bool:
    """Evidence that a column's values name people: its entity is PERSON, or its name says so (`last_name`)."""
    return column.entity == "PERSON" or _hinted(column, "PERSON")


def _entities_in(
    values: list[str],
    *,
    known: KnownIdentifiers | None,
    model_name: str | None,
    score_threshold: float,
    name_tokens: bool = False,
) -> Counter:
    """How many of `values` contain each entity (Presidio and known identifiers; under KNOWN_PREFIX too for the
    latter, and one-word names as PERSON only if `name_tokens`, else under NAME_TOKEN_KEY). Each value counts on its
    own, so the counts of disjoint parts of a sample add up to the sample's."""
    from pipelines.privacy.analyzer import scan_texts

    found: Counter = Counter()
    for value, results in zip(values, scan_texts(values, score_threshold=score_threshold, model_name=model_name)):
        entities = {r.entity_type for r in results if r.entity_type not in NOT_PERSONAL}
        if known is not None:
            facts = _known_in(value, known)
            if NAME_TOKEN in facts:
                facts.discard(NAME_TOKEN)
                if name_tokens:
                    entities.add("PERSON")
                else:
                    found[NAME_TOKEN_KEY] += 1
            entities |= facts
            found.update(KNOWN_PREFIX + e for e in facts)
        found.update(entities)
    return found


def _known_in(value: str, known: KnownIdentifiers) -> set[str]:
    """Entities of the known identifiers a value equals or contains (NAME_TOKEN: it equals a one-word name)."""
    facts = {
        r.entity_type
        for r in known.find_in_text(value)
        if r.recognition_metadata.get(r.RECOGNIZER_NAME_KEY) == RECOGNIZER_NAME
    }
    match = known.matches_any(value, name_tokens=True)
    return facts | ({match} if match else set())


def _verdict(column: Column, sampled: int, found: Counter) -> ColumnClassification:
    """The column's classification from its sample's entity counts: which entities its declaration does not cover.
    A steward's `tolerate_entities` waives the detector's findings of an entity, never a known identifier's."""
    detected = {e: n for e, n in found.items() if not e.startswith(KNOWN_PREFIX) and e != NAME_TOKEN_KEY}
    facts = {e[len(KNOWN_PREFIX) :]: n for e, n in found.items() if e.startswith(KNOWN_PREFIX)}
    result = ColumnClassification(
        column.name,
        column.role.value,
        column.entity,
        sampled,
        detected,
        known=facts,
        name_tokens_without_evidence=found.get(NAME_TOKEN_KEY, 0),
    )
    if can_be_flagged(column):
        for entity, n in sorted(detected.items()):
            if entity == column.entity:
                continue
            bar = HINTED_MIN_SHARE if _hinted(column, entity) else MIN_SHARE
            if entity in column.tolerate_entities:
                result.tolerated[entity] = n
                n = facts.get(entity, 0)  # what is known to be personal still counts
            if n >= MIN_VALUES and n / sampled >= bar:
                result.undeclared.append(entity)
    return result


def can_be_flagged(column: Column) -> bool:
    """Whether a column's values can be undeclared PII: not personal by declaration (plain or sensitive attributes), or
    a quasi-identifier declared without an entity. Personal columns with their entity declared are masked as such."""
    return column.role in {Role.plain_attribute, Role.sensitive_attribute} or (
        column.role == Role.quasi_identifier and not column.entity
    )


def columns_to_classify(contract: Contract) -> list[Column]:
    """String columns published as they are (or generalized) that could be flagged: masked, suppressed or scanned ones
    are handled by their operator, and a sample of a column that cannot be flagged would decide nothing."""
    return [
        c
        for c in contract.columns
        if c.type == "string" and c.deidentify.operator in {"keep", "generalize"} and can_be_flagged(c)
    ]


def _threshold(contract: Contract) -> float:
    return max(contract.privacy.score_threshold, 0.5)


def classify_frame(
    frame: pd.DataFrame | dict[str, pd.Series],
    contract: Contract,
    *,
    known: KnownIdentifiers | None,
    model_name: str | None,
) -> list[ColumnClassification]:
    """Classify every string column that is published as is; raise if one holds undeclared PII.

    `frame` may also map column names to their (distinct) values, as the streaming path passes them.
    """
    results = [
        classify_column(
            column, frame[column.name], known=known, model_name=model_name, score_threshold=_threshold(contract)
        )
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


UNIT_VALUES = 25  # sampled values per unit of shared classification work
# A helper pays when both what it does (the sample) and what it overlaps (the column operators, over all cells) are
# large: forking costs ~60 ms here, mostly the caller's own copy-on-write faults afterwards. Measured: with 210 values
# and 160,000 cells it lost 34%, with 400 values and 400,000 cells it gained 30%.
BACKGROUND_MIN_VALUES = 200
BACKGROUND_MIN_CELLS = 200_000


class SharedClassification:
    """`classify_frame`, with the work shared by this process and a forked helper.

    The samples are cut into units of UNIT_VALUES values (largest column first), handed out once each by a shared
    counter. The helper starts on them at once; the caller goes on with other work and, in `result()`, takes whatever
    units are left, then waits for the helper, so both finish together. Each value's entities depend on that value
    alone, so the units' counts add up to each column's. Without a helper (a small sample or table, see
    BACKGROUND_MIN_VALUES, or one usable process) the work is done at once, before any other. `cells`: rows x columns
    of the table. Same results as classify_frame.
    """

    def __init__(
        self, frame, contract: Contract, *, known: KnownIdentifiers | None, model_name: str | None, cells: int
    ) -> None:
        from pipelines.privacy.analyzer import Background, shared_counter

        self._contract, self._known, self._model_name = contract, known, model_name
        self._columns = columns_to_classify(contract)
        self._samples = [_sample(frame[c.name], SAMPLE_SIZE) for c in self._columns]
        largest_first = sorted(range(len(self._columns)), key=lambda i: -len(self._samples[i]))
        self._units = [(i, start) for i in largest_first for start in range(0, len(self._samples[i]), UNIT_VALUES)]
        worth_it = cells >= BACKGROUND_MIN_CELLS and sum(map(len, self._samples)) >= BACKGROUND_MIN_VALUES
        self._next = shared_counter() if worth_it else None
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

    def _work(self) -> dict[int, Counter]:
        """Entity counts of each unit this process claimed, by unit index."""
        done = {}
        while (k := self._claim()) < len(self._units):
            i, start = self._units[k]
            done[k] = _entities_in(
                self._samples[i][start : start + UNIT_VALUES],
                known=self._known,
                model_name=self._model_name,
                score_threshold=_threshold(self._contract),
                name_tokens=names_a_person(self._columns[i]),
            )
        return done

    def result(self) -> list[ColumnClassification]:
        """Every column's classification, in contract order; raises UndeclaredPIIError as classify_frame does."""
        if self._results is None:
            try:
                mine = self._work()
                by_unit = self._helper.result() | mine
            finally:
                self._helper.cancel()
            found: list[Counter] = [Counter() for _ in self._columns]
            for k, (i, _) in enumerate(self._units):
                found[i].update(by_unit[k])
            self._results = [_verdict(c, len(self._samples[i]), found[i]) for i, c in enumerate(self._columns)]
        return _checked(self._contract, self._results)

    def poll(self) -> None:
        """If the helper has finished, take its results now (raising UndeclaredPIIError early, mid-stream)."""
        if self._results is None and self._helper.ready():
            self.result()

    def cancel(self) -> None:
        self._helper.cancel()
