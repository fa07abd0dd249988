"""Known identifiers: the batch's own raw identifier values, held only as keyed hashes in memory.

Two uses. Masking: a name from HR's `full_name` column that spaCy misses in a Finance memo is still found,
because the organization already knows it is a person's name. Residual gate: after masking, no published
cell and no free text may still contain one of these values.

Two kinds, because a surname is often an everyday word (`Sales`, `Black`, `Watts`): unique identifiers (full
names, emails, phones, ids) are residuals wherever they appear; a single name token (a first or last name held
alone) is kept apart (NAME_TOKEN) and counts only where there is evidence that it names a person (a name column,
a title before it in text, or the rest of that person's name beside it, which the index holds as a full name).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from presidio_analyzer import RecognizerResult

from pipelines.privacy.operators import _compact_upper, _email, _person, _stripped, normalizer

RECOGNIZER_NAME = "KnownIdentifierRecognizer"
PREFIX_CHARS = 2  # first characters of each normalized value kept for the residual pre-filter (not enough to identify)
NAME_TOKEN = "PERSON_NAME_TOKEN"  # bucket of one-word names: matched only with evidence (see the module docstring)
SEARCHABLE = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "US_SSN",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "HOSTNAME",
    "EMPLOYEE_ID",
)

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
        self._lengths: dict[str, set[int]] = {}  # lengths of the normalized values: a cheap exact pre-filter
        self._shapes: dict[str, set[int]] = {}  # shapes (digit/letter/@) of the values: another one
        self._prefixes: dict[str, set[str]] = {}  # first characters of the normalized values: a third one
        self._prefix_arrays: dict[str, Any] = {}  # the same as sorted Arrow arrays (made on first use, dropped by add)

    def _hash(self, entity: str, value: str) -> bytes:
        return self._hash_normalized(_normalize(entity, value))

    def _hash_normalized(self, normalized: str) -> bytes:
        return hashlib.blake2b(normalized.encode("utf-8"), key=self._key, digest_size=16).digest()

    def _add_one(self, entity: str, value: str) -> None:
        normalized = _normalize(entity, value)
        if entity == "PERSON" and " " not in normalized:  # one word: a surname may be an everyday word
            entity = NAME_TOKEN
        self._hashes[entity].add(self._hash_normalized(normalized))
        self._lengths[entity].add(len(normalized))
        self._shapes[entity].add(_shape(value))
        self._prefixes[entity].add(normalized[:PREFIX_CHARS])

    def _bucket(self, entity: str) -> set[bytes]:
        """The hashes of `entity`, created empty with its pre-filters if new; its Arrow prefixes are dropped (stale)."""
        self._lengths.setdefault(entity, set())
        self._shapes.setdefault(entity, set())
        self._prefixes.setdefault(entity, set())
        self._prefix_arrays.pop(entity, None)
        return self._hashes.setdefault(entity, set())

    def add(self, entity: str, values: Iterable[str]) -> None:
        self._bucket(entity)
        if entity == "PERSON":
            self._bucket(NAME_TOKEN)
        for v in values:
            if v and len(v.strip()) >= 4:  # too short to identify anyone, and would match common words
                self._add_one(entity, v)
                if entity == "HOSTNAME" and "." in v:  # texts often name a host by its first label
                    self._add_one(entity, v.split(".", 1)[0])

    def add_column(self, entity: str, values: pd.Series) -> None:
        self.add(entity, (str(v) for v in pd.unique(values.dropna())))

    def contains(self, entity: str, value: str) -> bool:
        bucket = self._hashes.get(entity)
        if not bucket:
            return False
        normalized = _normalize(entity, value)
        return len(normalized) in self._lengths[entity] and self._hash_normalized(normalized) in bucket

    def count_matches(self, values: pd.Series, *, name_tokens: bool = False) -> Counter:
        """How many distinct values equal a known identifier, by entity (each value counted once, under the
        first entity it matches, as `matches_any`); one-word names under NAME_TOKEN, only if `name_tokens`. Values
        are narrowed column-wise (Arrow) by exact necessary conditions (length, first characters and shape of the
        normalized value); only the rest are hashed."""
        present = values.dropna()
        if not (pd.api.types.is_string_dtype(present) or pd.api.types.is_object_dtype(present)):
            present = pd.Series(
                pd.unique(present)
            )  # numbers, dates: distinct first, then their text (far fewer str calls)
        distinct = np.asarray(pd.unique(present.astype(str)), dtype=object).tolist()  # str values, one each
        hits: Counter = Counter()
        if not distinct:
            return hits
        import pyarrow as pa

        array = pa.array(distinct, pa.string())
        shapes, digit_counts, printable = _shapes_and_digits(array)
        matched = np.zeros(len(distinct), dtype=bool)
        normalized: dict[Any, tuple | None] = {}  # normalizer -> lengths and prefixes of the values (once per call)
        for entity, bucket in self._hashes.items():
            if not bucket or matched.all() or (entity == NAME_TOKEN and not name_tokens):
                continue
            fn = _normalizer(entity)
            if fn in _DIGIT_NORMALIZERS:  # the normalized value is the digits: their count must be a known length
                lengths = self._lengths[entity] | (
                    {n + 1 for n in self._lengths[entity]} if entity == "PHONE_NUMBER" else set()
                )
                candidates = np.isin(digit_counts, list(lengths)) | (digit_counts < 0)
            else:  # normalization keeps digits, letters and @: the shape must be one a known value has
                candidates = np.isin(shapes, list(self._shapes[entity])) | (shapes < 0)
                if not candidates.any():
                    continue
                if fn not in normalized:
                    normalized[fn] = _normalized_parts(fn, array)
                if normalized[fn] is not None:  # exact for printable ASCII values; others are always hashed
                    candidates &= (
                        _prefilter(normalized[fn], self._lengths[entity], self._prefix_array(entity)) | ~printable
                    )
            for i in np.flatnonzero(candidates & ~matched):
                if self._hash_normalized(fn(distinct[i])) in bucket:
                    hits[entity] += 1
                    matched[i] = True
        return hits

    def _prefix_array(self, entity: str):
        import pyarrow as pa

        if entity not in self._prefix_arrays:
            self._prefix_arrays[entity] = pa.array(sorted(self._prefixes[entity]), pa.string())
        return self._prefix_arrays[entity]

    def matches_any(self, value: str, *, name_tokens: bool = False) -> str | None:
        """The entity whose known values include `value` exactly, if any (NAME_TOKEN only if `name_tokens`)."""
        for entity in self._hashes:
            if (entity != NAME_TOKEN or name_tokens) and self.contains(entity, value):
                return entity
        return None

    def find_in_text(self, text: str) -> list[RecognizerResult]:
        """Spans of known identifiers in free text, as Presidio results (score 1.0): unique identifiers anywhere, a
        one-word name only after a title ("Ms Black"; the title is evidence, the capital letter alone is not)."""
        found: list[RecognizerResult] = []
        for entity, pattern in _CANDIDATES.items():
            if entity not in self._hashes:
                continue
            for m in pattern.finditer(text):
                if entity == "PERSON":
                    found.extend(self._names_in(m.group(0), m.start()))
                elif self.contains(entity, m.group(0)):
                    found.append(_result(entity, m.start(), m.end()))
        if self._hashes.get(NAME_TOKEN):
            found.extend(self._titled_tokens(text, found))
        return found

    def _titled_tokens(self, text: str, found: list[RecognizerResult]) -> list[RecognizerResult]:
        """Known one-word names right after a title, outside the names already found."""
        out = []
        for m in _TITLED.finditer(text):
            start, end = m.span("name")
            if not any(r.start < end and start < r.end for r in found) and self.contains(NAME_TOKEN, m.group("name")):
                out.append(_result("PERSON", start, end))
        return out

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

    def counts(self) -> dict[str, int]:
        """Identifiers held per entity type (counts only); one-word names under NAME_TOKEN."""
        return {entity: len(b) for entity, b in sorted(self._hashes.items()) if b}


class _SortedHashes:
    """A set of 64-bit keyed hashes as one sorted NumPy array (8 bytes each); additions are buffered in arrays and
    merged when a lookup or `seal` needs them."""

    __slots__ = ("array", "_pending", "_buffer")
    BUFFER = 1 << 16

    def __init__(self) -> None:
        self.array = np.empty(0, dtype=np.uint64)
        self._pending: list[np.ndarray] = []
        self._buffer: list[int] = []

    def add(self, value: int) -> None:
        self._buffer.append(value)
        if len(self._buffer) >= self.BUFFER:
            self._pending.append(np.array(self._buffer, dtype=np.uint64))
            self._buffer = []

    def seal(self) -> None:
        if self._buffer:
            self._pending.append(np.array(self._buffer, dtype=np.uint64))
            self._buffer = []
        if self._pending:
            self.array = np.unique(np.concatenate([self.array, *self._pending]))
            self._pending = []

    def __contains__(self, value: int) -> bool:
        if self._buffer or self._pending:
            self.seal()
        array = self.array
        i = array.searchsorted(np.uint64(value))  # a Python int would make NumPy cast the whole array
        return i < len(array) and array.item(i) == value

    def __len__(self) -> int:
        self.seal()
        return len(self.array)

    def __getstate__(self):
        self.seal()
        return self.array

    def __setstate__(self, array) -> None:
        self.array, self._pending, self._buffer = array, [], []


class CompactKnownIdentifiers(KnownIdentifiers):
    """The same index with 64-bit keyed hashes in sorted arrays: 8 bytes per identifier (plus pre-filters that grow
    with the distinct lengths and first characters, not with the identifiers), small enough to broadcast to Spark's
    executors. Two distinct values share a hash with probability about n / 2**64 per lookup (n identifiers held:
    5e-12 at 100 million); a collision only masks a value that is not an identifier, it never lets one through."""

    def _hash_normalized(self, normalized: str) -> int:  # type: ignore[override]
        digest = hashlib.blake2b(normalized.encode("utf-8"), key=self._key, digest_size=8).digest()
        return int.from_bytes(digest, "little")

    def _bucket(self, entity: str):
        self._lengths.setdefault(entity, set())
        self._shapes.setdefault(entity, set())
        self._prefixes.setdefault(entity, set())
        self._prefix_arrays.pop(entity, None)
        return self._hashes.setdefault(entity, _SortedHashes())  # type: ignore[arg-type]

    def add(self, entity: str, values: Iterable[str]) -> None:
        super().add(entity, values)
        for bucket in self._hashes.values():
            bucket.seal()  # type: ignore[attr-defined]

    @property
    def nbytes(self) -> int:
        """Bytes held by the hashes (the part that grows with the identifiers)."""
        return sum(b.array.nbytes for b in self._hashes.values())  # type: ignore[attr-defined]


def _normalizer(entity: str):
    """The normalizer of a bucket: one-word names are normalized as names."""
    return normalizer("PERSON" if entity == NAME_TOKEN else entity)


def _normalize(entity: str, value: str) -> str:
    return _normalizer(entity)(value)


# a title is evidence that the next capitalised word is a surname ("Ms Black"), a salutation ("Dear Sales team") is not
_TITLED = re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.?[ \t]+(?P<name>[A-Z][a-zA-Z'’\-]+)")
_DIGIT_NORMALIZERS = {normalizer("US_SSN"), normalizer("PHONE_NUMBER")}
_HAS_DIGIT, _HAS_LETTER = re.compile(r"\d"), re.compile(r"[^\W\d_]")


def _shape(value: str) -> int:
    """1: has a digit, 2: has a letter, 4: has an @ (all kept by every normalization but digits-only)."""
    return bool(_HAS_DIGIT.search(value)) | bool(_HAS_LETTER.search(value)) << 1 | ("@" in value) << 2


def _shapes_and_digits(array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_shape` and the count of digits of every value, column-wise (Arrow); -1 where a value is not ASCII
    (Arrow's classes are ASCII-only there, so such values are always checked). Also which values are printable
    ASCII (space to tilde), the values whose normalization Arrow reproduces exactly."""
    import pyarrow.compute as pc

    ascii_ = pc.string_is_ascii(array).to_numpy(zero_copy_only=False)
    digit = pc.match_substring_regex(array, "[0-9]").to_numpy(zero_copy_only=False)
    letter = pc.match_substring_regex(array, "[A-Za-z]").to_numpy(zero_copy_only=False)
    at = pc.match_substring(array, "@").to_numpy(zero_copy_only=False)
    shapes = np.where(ascii_, digit.astype(int) | letter.astype(int) << 1 | at.astype(int) << 2, -1)
    digit_count = pc.utf8_length(
        pc.replace_substring_regex(array, "[^0-9]+", "")
    )  # 7x faster than count_substring_regex
    digits = np.where(ascii_, digit_count.to_numpy(zero_copy_only=False), -1)
    printable = pc.match_substring_regex(array, "^[ -~]*$").to_numpy(zero_copy_only=False)
    return shapes, digits, printable


def _arrow_normalized(fn, array):
    """The normalizer `fn` column-wise; equal to Python's for printable ASCII values (whose only whitespace is
    the space, and whose case mapping is ASCII's). None for a normalizer without a column-wise form."""
    import pyarrow.compute as pc

    if fn is _stripped:
        return pc.utf8_trim(array, characters=" ")
    if fn is _email:
        return pc.ascii_lower(pc.utf8_trim(array, characters=" "))
    if fn is _person:
        return pc.ascii_lower(
            pc.replace_substring_regex(pc.utf8_trim(array, characters=" "), pattern=" +", replacement=" ")
        )
    if fn is _compact_upper:
        return pc.ascii_upper(pc.replace_substring(array, pattern=" ", replacement=""))
    return None


def _normalized_parts(fn, array) -> tuple | None:
    """The lengths (NumPy) and first characters (Arrow) of the values as `fn` normalizes them; None if `fn` has no
    column-wise form."""
    import pyarrow.compute as pc

    normalized = _arrow_normalized(fn, array)
    if normalized is None:
        return None
    return pc.utf8_length(normalized).to_numpy(zero_copy_only=False), pc.utf8_slice_codeunits(
        normalized, 0, PREFIX_CHARS
    )


def _prefilter(parts: tuple, lengths: set[int], prefixes) -> np.ndarray:
    """Which values' normalized form has a known length and known first characters (exact necessary test)."""
    import pyarrow.compute as pc

    value_lengths, value_prefixes = parts
    return np.isin(value_lengths, list(lengths)) & pc.is_in(value_prefixes, value_set=prefixes).to_numpy(
        zero_copy_only=False
    )


def _result(entity: str, start: int, end: int) -> RecognizerResult:
    return RecognizerResult(
        entity, start, end, 1.0, recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: RECOGNIZER_NAME}
    )


def known_identifiers_from_raw(
    con, contracts: Iterable, index: type[KnownIdentifiers] | None = None
) -> KnownIdentifiers:
    """Index the direct identifiers and join keys of every department's raw table present in `con`; name parts held
    in separate columns (first, last) are also indexed joined, as the full names they are together in a record.
    `index`: the class to fill; by default CompactKnownIdentifiers (8 bytes per identifier, the index both engines
    use), KnownIdentifiers for 16-byte hashes in Python sets."""
    from pipelines.contracts import Role
    from pipelines.ingest import quote_ident

    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    known = (index or CompactKnownIdentifiers)()
    for contract in contracts:
        if contract.dataset not in tables:
            continue
        table = quote_ident(contract.dataset)
        columns = contract.columns_with_role(Role.direct_identifier, Role.join_key)
        for column in columns:
            if column.entity in SEARCHABLE:
                known.add(column.entity, _distinct(con, table, f"CAST({quote_ident(column.name)} AS VARCHAR)"))
        for expression in _full_name_expressions([c.name for c in columns if c.entity == "PERSON"]):
            known.add("PERSON", _distinct(con, table, expression))
    return known


MAX_NAME_PARTS = 4  # first, middle, last, suffix: more PERSON columns in one table are not parts of one name


def _full_name_expressions(parts: list[str]) -> list[str]:
    """SQL joining a record's name parts as texts write them: every ordered pair ("Jane Sales", "Sales Jane") and all
    parts in contract order."""
    from itertools import permutations

    from pipelines.ingest import quote_ident

    if not 2 <= len(parts) <= MAX_NAME_PARTS:
        return []
    combos = [list(pair) for pair in permutations(parts, 2)] + ([parts] if len(parts) > 2 else [])
    return [f"concat_ws(' ', {', '.join(f'CAST({quote_ident(p)} AS VARCHAR)' for p in combo)})" for combo in combos]


def _distinct(con, table: str, expression: str) -> list[str]:
    """The distinct non-null values of a SQL expression over a table."""
    rows = con.execute(f"SELECT DISTINCT {expression} AS v FROM {table} WHERE v IS NOT NULL").fetchall()
    return [r[0] for r in rows]
