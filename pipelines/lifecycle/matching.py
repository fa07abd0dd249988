"""Finding requested people by keyed hash: in raw tables (rows), in de-identified cells and text (mentions).

Raw values are hashed in memory with the pseudonym key and compared with the requests' subject keys; nothing here
returns, logs or stores a value. A person is found through any identifier of theirs: the rows holding the requested
identifier give their other identifiers (employee id, SSN, card...), which find more rows, until nothing new is found.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from pipelines.contracts import Column, Contract, Role
from pipelines.ingest import quote_ident
from pipelines.privacy.operators import PSEUDONYM_HEX_CHARS, pseudonym, pseudonyms

FLAG_COLUMN = "_subject_request"  # raw rows of opted-out people: kept for the department, never de-identified
VIEW_PREFIX = "_lifecycle_"
# identifiers people share (a name, a host, a workstation's address): they name a person in text, but linking rows
# through them would take other people's records along
NON_LINKING = {"PERSON", "HOSTNAME", "IP_ADDRESS", "LOCATION", "DATE_TIME", "ZIP_CODE", "NRP", "URL"}
_SPANS = {  # candidate spans of identifiers in text, hashed and compared, never kept
    "EMAIL_ADDRESS": re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}"),
    "PHONE_NUMBER": re.compile(r"(?:\+?1[\s.\-]?)?\(?\b\d{3}\)?[\s.\-]?\d{3}[\s.\-]?\d{4}\b"),
    "US_SSN": re.compile(r"\b\d{3}[- ]?\d{2}[- ]?\d{4}\b"),
    "CREDIT_CARD": re.compile(r"\b(?:\d[ \-]?){12,18}\d\b"),
    "IBAN_CODE": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{2,4}){3,8}\b"),
    "IP_ADDRESS": re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"),
    "HOSTNAME": re.compile(r"\b[a-z][a-z0-9]*(?:-[a-z0-9]+)+(?:\.[a-z0-9\-]+)*\b"),
    "EMPLOYEE_ID": re.compile(r"\bE\d{7}\b"),
}
_NAME_RUN = re.compile(r"\b[A-Z][a-zA-Z'’\-]+(?:[ \t]+[A-Z][a-zA-Z'’\-]*\.?){1,3}")


def identifier_columns(contract: Contract) -> list[Column]:
    """Columns holding an identifier of a person (direct identifiers and join keys with an entity)."""
    return [c for c in contract.columns_with_role(Role.direct_identifier, Role.join_key) if c.entity]


def linking(column: Column) -> bool:
    """Whether rows sharing this column's value belong to one person."""
    return column.entity not in NON_LINKING


def label(key: str) -> str:
    """`<PERSON>` for `person_…`: what a masked mention of a requested person becomes."""
    return f"<{key[: -PSEUDONYM_HEX_CHARS - 1].upper()}>"


# --- raw tables: rows ---------------------------------------------------------------------------------------


def key_frame(con, contract: Contract, secret: bytes, table: str | None = None) -> pd.DataFrame:
    """`__rowid` and, per identifier column, the subject key of its value (None where null); distinct values hashed once."""
    columns = identifier_columns(contract)
    selected = ", ".join(f"CAST({quote_ident(c.name)} AS VARCHAR) AS {quote_ident(c.name)}" for c in columns)
    frame = con.execute(
        f"SELECT rowid AS __rowid{', ' + selected if selected else ''} FROM {quote_ident(table or contract.dataset)}"
    ).df()
    for c in columns:
        codes, uniques = pd.factorize(frame[c.name], use_na_sentinel=True)
        keys = np.array(
            pseudonyms(secret, c.entity, pd.Series(uniques, dtype=object)) if len(uniques) else [], dtype=object
        )
        out = np.full(len(frame), None, dtype=object)
        out[codes >= 0] = keys[codes[codes >= 0]]
        frame[c.name] = out
    return frame


def _matching_rows(frame: pd.DataFrame, contract: Contract, keys: set[str]) -> np.ndarray:
    """Which rows hold a linking identifier among `keys`."""
    mask = np.zeros(len(frame), dtype=bool)
    for c in identifier_columns(contract):
        if linking(c):
            mask |= frame[c.name].isin(keys).to_numpy()
    return mask


def _keys_in(frame: pd.DataFrame, columns: Iterable[Column], mask: np.ndarray) -> set[str]:
    """Every subject key in the masked rows of these columns."""
    return {k for c in columns for k in frame.loc[mask, c.name].dropna().tolist()}


@dataclass
class Resolution:
    """A request resolved against the raw tables: the person's keys and rows, by dataset (counts and row ids only)."""

    linking_keys: set[str]
    mention_keys: set[str]
    rowids: dict[str, list[int]] = field(default_factory=dict)

    @property
    def rows(self) -> dict[str, int]:
        return {ds: len(ids) for ds, ids in self.rowids.items() if ids}


def resolve(
    frames: dict[str, tuple[Contract, pd.DataFrame]], linking_keys: set[str], mention_keys: set[str]
) -> Resolution:
    """Follow the person through their identifiers until no new one is found."""
    linking_keys, mention_keys = set(linking_keys), set(mention_keys) | set(linking_keys)
    while True:
        masks = {ds: _matching_rows(frame, contract, linking_keys) for ds, (contract, frame) in frames.items()}
        found = set()
        for ds, (contract, frame) in frames.items():
            found |= _keys_in(frame, [c for c in identifier_columns(contract) if linking(c)], masks[ds])
            mention_keys |= _keys_in(frame, identifier_columns(contract), masks[ds])
        if found <= linking_keys:
            break
        linking_keys |= found
    rowids = {ds: frames[ds][1].loc[masks[ds], "__rowid"].astype(int).tolist() for ds in frames}
    return Resolution(linking_keys, mention_keys | linking_keys, rowids)


def apply_to_raw(
    con, dataset: str, opted_out: dict[str, list[int]], erased: dict[str, list[int]]
) -> dict[str, dict[str, int]]:
    """Delete erased people's rows, flag opted-out people's rows (request id), in one transaction; counts per request."""
    table = quote_ident(dataset)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {FLAG_COLUMN} VARCHAR")
        con.execute(
            f"UPDATE {table} SET {FLAG_COLUMN} = NULL WHERE {FLAG_COLUMN} IS NOT NULL"
        )  # flags follow the requests now in force
        removed = {rid: _by_rowid(con, f"DELETE FROM {table}", ids) for rid, ids in erased.items()}
        flagged = {
            rid: _by_rowid(con, f"UPDATE {table} SET {FLAG_COLUMN} = '{rid}'", ids) for rid, ids in opted_out.items()
        }
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return {"removed": {r: n for r, n in removed.items() if n}, "flagged": {r: n for r, n in flagged.items() if n}}


def _by_rowid(con, statement: str, rowids: list[int]) -> int:
    """Run `statement` on the rows with these row ids; how many it touched."""
    if not rowids:
        return 0
    con.register("__lifecycle_rowids", pd.DataFrame({"r": np.asarray(rowids, dtype=np.int64)}))
    try:
        return con.execute(f"{statement} WHERE rowid IN (SELECT r FROM __lifecycle_rowids)").fetchone()[0]
    finally:
        con.unregister("__lifecycle_rowids")


def view_name(dataset: str) -> str:
    return f"{VIEW_PREFIX}{dataset}"


def create_view(con, contract: Contract, horizon: date | None) -> str:
    """The raw rows de-identification may read: nobody who asked to be left out, nothing past the last purge's horizon.

    Persistent, over the flag column: a raw table re-ingested without its flags makes the view fail (fail closed)."""
    table, view = quote_ident(contract.dataset), view_name(contract.dataset)
    con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {FLAG_COLUMN} VARCHAR")
    where = f"{FLAG_COLUMN} IS NULL"
    column = contract.retention.event_date_column
    if horizon is not None and column:
        where += f" AND CAST({quote_ident(column)} AS DATE) >= DATE '{horizon.isoformat()}'"
    con.execute(
        f"CREATE OR REPLACE VIEW {quote_ident(view)} AS SELECT * EXCLUDE ({FLAG_COLUMN}) FROM {table} WHERE {where}"
    )
    return view


# Column kinds by what they can hold of a person. Text (and nested values read as text) can hold pseudonyms and
# identifiers anywhere in it; integers, decimals and UUIDs are typed ids (customer or employee numbers), compared whole;
# dates and times are compared whole only when a requested person has a DATE_TIME identifier; booleans hold two
# values and floating-point numbers have no exact text form (an id stored as a float is already corrupted), so no
# identifier of a person can sit in them.
_TEXT_KINDS = ("VARCHAR", "JSON", "BLOB")
_NESTED_MARKS = ("[]", "STRUCT(", "MAP(", "UNION(")
_TYPED_ID_KINDS = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
    "DECIMAL",
    "UUID",
    "BIT",
)
_TEMPORAL_KINDS = ("DATE", "TIME", "TIMESTAMP", "INTERVAL")
NO_IDENTIFIER_KINDS = ("BOOLEAN", "FLOAT", "DOUBLE")
WHOLE_VALUE_MAX_CHARS = 64  # a longer text is no identifier whole; its identifiers are found as spans


def column_kind(data_type: str) -> str:
    """text | typed_id | temporal | none: how the absence check reads a column of this DuckDB type."""
    t = data_type.upper()
    if t in _TEXT_KINDS or any(m in t for m in _NESTED_MARKS):
        return "text"
    base = t.split("(")[0].strip()
    if base in _TYPED_ID_KINDS:
        return "typed_id"
    if base.startswith(_TEMPORAL_KINDS):
        return "temporal"
    return "none"


def _all_columns(con, table: str) -> list[tuple[str, str]]:
    return [
        (r[0], r[1])
        for r in con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
            [table],
        ).fetchall()
    ]


def _distinct_text(con, table: str, column: str) -> list[str]:
    col = quote_ident(column)
    return [
        r[0]
        for r in con.execute(
            f"SELECT DISTINCT CAST({col} AS VARCHAR) FROM {quote_ident(table)} WHERE {col} IS NOT NULL"
        ).fetchall()
    ]


_PSEUDONYM_VALUE = re.compile(
    rf"^[a-z][a-z_]*_[0-9a-f]{{{PSEUDONYM_HEX_CHARS}}}$"
)  # the pipeline's own output: found by pattern
_SHAPE = {  # what a value must hold to be an identifier of this type (its normalizer keeps nothing else); others: anything
    "EMAIL_ADDRESS": re.compile("@"),
    "PHONE_NUMBER": re.compile(r"\d"),
    "US_SSN": re.compile(r"\d"),
    "CREDIT_CARD": re.compile(r"\d"),
    "IBAN_CODE": re.compile(r"\d"),
    "IP_ADDRESS": re.compile(r"\d"),
    "EMPLOYEE_ID": re.compile(r"\d"),
}


def whole_value_hits(values: list[str], secret: bytes, keys: set[str]) -> dict[str, str]:
    """The values that are, whole, an identifier of a requested person: value -> its identifier type (never kept).
    Pseudonyms are left to the pattern search, and a type is hashed only for values of its shape (same verdicts, less work)."""
    short = [v for v in values if len(v) <= WHOLE_VALUE_MAX_CHARS and not _PSEUDONYM_VALUE.match(v)]
    hits: dict[str, str] = {}
    wanted = list(keys)
    for entity in sorted({label(k)[1:-1] for k in keys}):
        shape = _SHAPE.get(entity)
        candidates = [v for v in short if shape.search(v)] if shape else short
        if not candidates:
            continue
        for i in np.flatnonzero(
            np.isin(np.array(pseudonyms(secret, entity, pd.Series(candidates, dtype=object)), dtype=object), wanted)
        ):
            hits.setdefault(candidates[i], entity)
    return hits


# --- de-identified tables: cells and text ---------------------------------------------------------------------


def _pattern(keys: Iterable[str]) -> str | None:
    """One RE2 alternation of the keys (hex and underscores only: nothing to escape)."""
    keys = sorted(set(keys))
    return r"\b(?:" + "|".join(keys) + r")\b" if keys else None


def _text_columns(con, table: str) -> list[str]:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND data_type = 'VARCHAR' ORDER BY ordinal_position",
        [table],
    ).fetchall()
    return [r[0] for r in rows]


def _spans(text: str, entities: set[str]) -> Iterable[tuple[str, int, int]]:
    """(entity, start, end) of every candidate identifier of these entities in a text (names: runs of 2 to 4 capitalised words)."""
    for entity, pattern in _SPANS.items():
        if entity in entities:
            for m in pattern.finditer(text):
                yield entity, m.start(), m.end()
    for m in _NAME_RUN.finditer(text) if "PERSON" in entities else ():
        words = [(w.start() + m.start(), w.end() + m.start()) for w in re.finditer(r"\S+", m.group(0))]
        for i in range(len(words)):
            for j in range(i + 2, min(len(words), i + 4) + 1):
                start, end = words[i][0], words[j - 1][1]
                yield "PERSON", start, end - (text[end - 1] == ".")


def masked_mentions(
    text: str, secret: bytes, keys: set[str], memo: dict[tuple[str, str], bool] | None = None
) -> tuple[str, int]:
    """The text with every span whose keyed hash is a requested key replaced by its entity tag, and how many.
    `memo` remembers each (type, span) verdict across the texts of one column (names and hosts repeat; it holds
    candidate spans in memory only, for one call of scrub or absence)."""
    entities = {label(k)[1:-1] for k in keys}  # only the kinds of identifier requested people have
    memo = {} if memo is None else memo

    def requested(entity: str, span: str) -> bool:
        if (entity, span) not in memo:
            memo[(entity, span)] = pseudonym(secret, entity, span) in keys
        return memo[(entity, span)]

    hits = sorted(
        {(s, e, ent) for ent, s, e in _spans(text, entities) if requested(ent, text[s:e])}, key=lambda h: (h[0], -h[1])
    )
    out, last, count = [], 0, 0
    for start, end, entity in hits:
        if start < last:
            continue  # inside a span already masked
        out += [text[last:start], f"<{entity}>"]
        last, count = end, count + 1
    return "".join(out) + text[last:], count


def _distinct(con, table: str, column: str) -> list[str]:
    return [
        r[0]
        for r in con.execute(
            f"SELECT DISTINCT {quote_ident(column)} FROM {quote_ident(table)} WHERE {quote_ident(column)} IS NOT NULL"
        ).fetchall()
    ]


def scrub(con, table: str, secret: bytes, keys: set[str]) -> dict[str, int]:
    """Mask requested people's pseudonyms and hashed mentions in every text cell of a staged table; cells changed per column."""
    changed: dict[str, int] = {}
    pattern = _pattern(keys)
    if pattern is None:
        return changed
    for column in _text_columns(con, table):
        col = quote_ident(column)
        n = con.execute(
            f"SELECT count(*) FROM {quote_ident(table)} WHERE regexp_matches({col}, ?)", [pattern]
        ).fetchone()[0]
        for key_label in sorted({label(k) for k in keys}) if n else ():
            wanted = _pattern(k for k in keys if label(k) == key_label)
            con.execute(
                f"UPDATE {quote_ident(table)} SET {col} = regexp_replace({col}, ?, ?, 'g') WHERE regexp_matches({col}, ?)",
                [wanted, key_label, wanted],
            )
        values = _distinct(con, table, column)
        whole = whole_value_hits(values, secret, keys)  # a kept identifier of a kind no span pattern knows
        memo: dict[tuple[str, str], bool] = {}
        mapping = {
            v: (f"<{whole[v]}>", 1) if v in whole else m
            for v in values
            if v in whole or (m := masked_mentions(v, secret, keys, memo))[1]
        }
        if mapping:
            con.register(
                "__lifecycle_masked", pd.DataFrame({"v": list(mapping), "m": [m for m, _ in mapping.values()]})
            )
            n += con.execute(
                f"UPDATE {quote_ident(table)} SET {col} = __lifecycle_masked.m FROM __lifecycle_masked "
                f"WHERE {quote_ident(table)}.{col} = __lifecycle_masked.v"
            ).fetchone()[0]
            con.unregister("__lifecycle_masked")
        if n:
            changed[column] = int(n)
    temporal = any(label(k) == "<DATE_TIME>" for k in keys)
    for column, data_type in _all_columns(con, table):  # nested values, typed ids (dates when requested) naming them
        kind = column_kind(data_type)
        if (
            kind == "text" and data_type.upper() != "VARCHAR"
        ):  # a nested value (list, struct, JSON) naming them goes whole
            values = _distinct_text(con, table, column)
            memo = {}
            hits = [v for v in values if re.search(pattern, v) or masked_mentions(v, secret, keys, memo)[1]]
            hits += list(whole_value_hits([v for v in values if v not in hits], secret, keys))
        elif kind == "typed_id" or (kind == "temporal" and temporal):
            hits = list(whole_value_hits(_distinct_text(con, table, column), secret, keys))
        else:
            continue
        if hits:
            col = quote_ident(column)
            changed[column] = int(
                con.execute(
                    f"UPDATE {quote_ident(table)} SET {col} = NULL WHERE CAST({col} AS VARCHAR) IN (SELECT unnest(?))",
                    [hits],
                ).fetchone()[0]
            )
    return changed


def absence(con, table: str, secret: bytes, keys: set[str]) -> dict[str, dict[str, int]]:
    """Per column that could hold a requested person: cells with their pseudonym (text), distinct values naming them
    as a span in text, and distinct values equal to one of their identifiers (text, typed ids, dates when requested).
    Columns of kinds that cannot hold an identifier (NO_IDENTIFIER_KINDS) are listed under `not_checked` with their kind."""
    found: dict[str, dict[str, int]] = {}
    pattern = _pattern(keys)
    if pattern is None:
        return found
    temporal = any(label(k) == "<DATE_TIME>" for k in keys)
    for column, data_type in _all_columns(con, table):
        kind = column_kind(data_type)
        if kind == "none" or (kind == "temporal" and not temporal):
            continue
        values = _distinct_text(con, table, column)
        counts = {"distinct_values_equal_to_identifier": len(whole_value_hits(values, secret, keys))}
        if kind == "text":
            as_text = f"CAST({quote_ident(column)} AS VARCHAR)"
            counts["cells_with_pseudonym"] = int(
                con.execute(
                    f"SELECT count(*) FROM {quote_ident(table)} WHERE regexp_matches({as_text}, ?)", [pattern]
                ).fetchone()[0]
            )
            memo = {}
            counts["distinct_values_with_identifier"] = sum(
                1 for v in values if masked_mentions(v, secret, keys, memo)[1]
            )
        if any(counts.values()):
            found[column] = {"kind": kind, **counts}
    return found
