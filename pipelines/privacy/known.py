"""Known identifiers: the batch's own raw identifier values, held only as keyed hashes in memory.

Two uses. Masking: a name from HR's `full_name` column that spaCy misses in a Finance memo is still found,
because the organization already knows it is a person's name. Residual gate: after masking, no published
cell and no free text may still contain one of these values.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections import Counter
from collections.abc import Iterable

import pandas as pd
from presidio_analyzer import RecognizerResult

from pipelines.privacy.operators import normalize

RECOGNIZER_NAME = "KnownIdentifierRecognizer"
SEARCHABLE = ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "US_SSN", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "HOSTNAME", "EMPLOYEE_ID")

# Candidate spans per entity; each candidate is normalized like pseudonyms are, then looked up.
_CANDIDATES = {
    "PERSON": re.compile(r"\b[A-Z][a-zA-Z'’\-]+(?:[ \t]+[A-Z][a-zA-Z'’\-]*\.?){1,3}"),
    "EMAIL_ADDRESS": re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}"),
    "PHONE_NUMBER": re.compile(r"(?:\+?1[\s.\-]?)?\(?\b\d{3}\)?[\s.\-]?\d{3}[\s.\-]?\d{4}\b"),
    "US_SSN": re.compile(r"\b\d{3}[- ]?\d{2}[- ]?\d{4}\b"),
    "CREDIT_CARD": re.compile(r"\b(?:\d[ \-]?){12,18}\d\b"),
    "IBAN_CODE": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{2,4}){3,8}\b"),
    "IP_ADDRESS": re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"),
    "HOSTNAME": re.compile(r"\b[a-z][a-z0-9]*(?:-[a-z0-9]+)+(?:\.[a-z0-9\-]+)*\b"),
    "EMPLOYEE_ID": re.compile(r"\bE\d{7}\b"),
}


class KnownIdentifiers:
    """A set of (entity, normalized value) held as keyed hashes under a key that lives only in this object."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._hashes: dict[str, set[bytes]] = {}
        self.counts: Counter = Counter()

    def _hash(self, entity: str, value: str) -> bytes:
        return hashlib.blake2b(normalize(entity, value).encode("utf-8"), key=self._key, digest_size=16).digest()

    def add(self, entity: str, values: Iterable[str]) -> None:
        bucket = self._hashes.setdefault(entity, set())
        before = len(bucket)
        for v in values:
            if v and len(v.strip()) >= 4:  # too short to identify anyone, and would match common words
                bucket.add(self._hash(entity, v))
                if entity == "HOSTNAME" and "." in v:  # texts often name a host by its first label
                    bucket.add(self._hash(entity, v.split(".", 1)[0]))
        self.counts[entity] += len(bucket) - before

    def add_column(self, entity: str, values: pd.Series) -> None:
        self.add(entity, (str(v) for v in pd.unique(values.dropna())))

    def contains(self, entity: str, value: str) -> bool:
        bucket = self._hashes.get(entity)
        return bool(bucket) and self._hash(entity, value) in bucket  # type: ignore[operator]

    def matches_any(self, value: str) -> str | None:
        """The entity whose known values include `value` exactly, if any."""
        for entity in self._hashes:
            if self.contains(entity, value):
                return entity
        return None

    def find_in_text(self, text: str) -> list[RecognizerResult]:
        """Spans of known identifiers in free text, as Presidio results (score 1.0)."""
        found: list[RecognizerResult] = []
        for entity, pattern in _CANDIDATES.items():
            if entity not in self._hashes:
                continue
            for m in pattern.finditer(text):
                if entity == "PERSON":
                    found.extend(self._names_in(m.group(0), m.start()))
                elif self.contains(entity, m.group(0)):
                    found.append(_result(entity, m.start(), m.end()))
        return found

    def _names_in(self, run: str, offset: int) -> list[RecognizerResult]:
        """Longest known names inside a run of capitalized words ("Dinner with Jane Doe" -> "Jane Doe")."""
        words = [(w.start(), w.end()) for w in re.finditer(r"\S+", run)]
        out = []
        i = 0
        while i < len(words):
            for j in range(min(len(words), i + 4), i + 1, -1):  # 2..4 words, longest first
                start, end = words[i][0], words[j - 1][1]
                candidate = run[start:end].rstrip(".")
                if self.contains("PERSON", candidate):
                    out.append(_result("PERSON", offset + start, offset + start + len(candidate)))
                    i = j - 1
                    break
            i += 1
        return out

    @property
    def size(self) -> int:
        return sum(len(b) for b in self._hashes.values())


def _result(entity: str, start: int, end: int) -> RecognizerResult:
    return RecognizerResult(entity, start, end, 1.0, recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: RECOGNIZER_NAME})


def known_identifiers_from_raw(con, contracts: Iterable) -> KnownIdentifiers:
    """Index the direct identifiers and join keys of every department's raw table present in `con`."""
    from pipelines.contracts import Role
    from pipelines.ingest import quote_ident

    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    known = KnownIdentifiers()
    for contract in contracts:
        if contract.dataset not in tables:
            continue
        for column in contract.columns_with_role(Role.direct_identifier, Role.join_key):
            if column.entity in SEARCHABLE:
                values = con.execute(
                    f"SELECT DISTINCT CAST({quote_ident(column.name)} AS VARCHAR) FROM {quote_ident(contract.dataset)}"
                ).fetchall()
                known.add(column.entity, (v[0] for v in values if v[0] is not None))
    return known
