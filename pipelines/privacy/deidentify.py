"""Apply a contract's de-identification to a raw table, recording every parameter (never a value).

One path: `deidentify_table` streams a DuckDB table a chunk at a time through `deidentify_batch`, stages the chunks
and publishes only what passed classification, the residual gate and k-anonymity; `deidentify_frame` runs the same
code on an in-memory frame. Free-text scanning lives in `free_text`, k-anonymity in `suppression`; the Spark engine
uses the public names of all three.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pandas as pd

from pipelines.contracts import Column, Contract
from pipelines.privacy.classify import ColumnClassification, SharedClassification, columns_to_classify, names_a_person
from pipelines.privacy.free_text import scan_text_column, table_terms
from pipelines.privacy.known import NAME_TOKEN, KnownIdentifiers
from pipelines.privacy.operators import OperatorContext, apply_column
from pipelines.privacy.suppression import (
    ROW_COLUMN,
    PrivacyThresholdError,
    Suppression,
    publish_k_anonymous,
)
from pipelines.sql import quote_ident

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "ROW_COLUMN",
    "BatchTotals",
    "ColumnRecord",
    "DeidentifiedBatch",
    "DeidentifiedTable",
    "PrivacyThresholdError",
    "ResidualPIIError",
    "check_declared_columns",
    "check_residual",
    "deidentification_markdown",
    "deidentify_batch",
    "deidentify_frame",
    "deidentify_table",
    "residual_in_structured",
    "structured_residual",
    "table_result",
]

DEFAULT_CHUNK_ROWS = 100_000


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
    frame: pd.DataFrame | None  # set by deidentify_frame; None when published into a table
    columns: list[ColumnRecord]
    rows_in: int
    rows_out: int
    rows_suppressed: int = 0
    detector: dict[str, Any] | None = None  # model, versions, recognizers: set when free text was scanned
    k_anonymity: dict[str, Any] = field(default_factory=dict)
    residual_scan: dict[str, Any] = field(default_factory=dict)
    classification: list[dict[str, Any]] = field(default_factory=list)

    @property
    def entities_masked(self) -> int:
        return sum(sum(c.entities_detected.values()) for c in self.columns) + sum(
            c.values_in for c in self.columns if c.operator not in {"keep", "generalize", "scan"}
        )


class ResidualPIIError(ValueError):
    """Personal data is still present after masking; names column and entity type, never the value."""


def residual_in_structured(values: pd.Series, known: KnownIdentifiers, column: Column | None = None) -> dict[str, int]:
    """Published cells that still equal a raw identifier of the batch, by entity type (distinct values)."""
    return structured_residual(values, known, column)["residual"]


def structured_residual(values: pd.Series, known: KnownIdentifiers, column: Column | None = None) -> dict[str, Any]:
    """The residual scan of published cells: those equal to a unique known identifier (full name, email, phone, id)
    always; those equal to a known one-word name only in a column that names people (`names_a_person`), where a
    steward's tolerance of PERSON waives them; elsewhere such cells ("Sales", "Black") are only counted."""
    hits = known.count_matches(values, name_tokens=True)
    tokens = hits.pop(NAME_TOKEN, 0)
    scan: dict[str, Any] = {"residual": dict(hits)}
    if tokens and column is not None and names_a_person(column):
        if "PERSON" in column.tolerate_entities:
            scan["tolerated"] = {"PERSON": tokens}
        else:
            scan["residual"]["PERSON"] = scan["residual"].get("PERSON", 0) + tokens
    elif tokens:
        scan["name_tokens_without_evidence"] = tokens
    return scan


@dataclass
class DeidentifiedBatch:
    frame: pd.DataFrame  # published columns, before k-anonymity
    records: list[ColumnRecord]
    residual: dict[str, dict[str, Any]]


def deidentify_batch(
    frame: pd.DataFrame,
    contract: Contract,
    ctx: OperatorContext,
    *,
    model_name: str | None,
    known: KnownIdentifiers | None,
    terms: dict[str, tuple],
) -> DeidentifiedBatch:
    """Every declared column of one batch of rows through its operator (no classification, no gate, no k-anonymity):
    the one per-batch step, of DuckDB's stream and of Spark's Arrow batches. `terms`: `table_terms` of the table."""
    out: dict[str, pd.Series] = {}
    records: list[ColumnRecord] = []
    residual: dict[str, dict[str, Any]] = {}
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
            new, record.params, record.entities_detected, scan = scan_text_column(
                values,
                column,
                ctx,
                score_threshold=contract.privacy.score_threshold,
                model_name=model_name,
                known=known,
                terms=terms[column.name],
            )
            residual[column.name] = scan
        else:
            new, record.params = apply_column(values, column, ctx)
            if new is not None and known is not None and column.deidentify.operator not in {"pseudonymize", "redact"}:
                residual[column.name] = structured_residual(new, known, column)
        if new is None:
            record.published = False
        else:
            out[column.name] = new
        records.append(record)
    return DeidentifiedBatch(pd.DataFrame(out, index=frame.index), records, residual)


@dataclass
class BatchTotals:
    """A table's per-column records and residual counts, added up over its batches in row order (counts only)."""

    records: list[ColumnRecord] = field(default_factory=list)
    residual: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: int = 0
    batches: int = 0

    def add(self, records: list[ColumnRecord], residual: dict[str, dict[str, Any]], rows: int) -> None:
        if not self.batches:
            self.records = records
        else:
            for t, c in zip(self.records, records):
                t.values_in += c.values_in
                t.entities_detected = dict(
                    sorted((Counter(t.entities_detected) + Counter(c.entities_detected)).items())
                )
        for column, scan in residual.items():
            into = self.residual.setdefault(column, {})
            for key, value in scan.items():
                if isinstance(value, dict):
                    into[key] = dict(Counter(into.get(key, {})) + Counter(value))
                elif isinstance(value, int):
                    into[key] = into.get(key, 0) + value
                else:
                    into[key] = value
        self.rows += rows
        self.batches += 1


def check_declared_columns(names, contract: Contract) -> None:
    """Refuse a raw table that lacks a declared column."""
    missing = [c.name for c in contract.columns if c.name not in names]
    if missing:
        raise ValueError(f"{contract.dataset}: the raw table lacks declared column(s) {', '.join(missing)}")


def check_residual(contract: Contract, residual: dict[str, dict[str, Any]]) -> None:
    """The residual gate: refuse to publish if any blocking PII was still found after masking (counts only)."""
    hits = {name: scan["residual"] for name, scan in residual.items() if scan.get("residual")}
    if hits:
        listed = "; ".join(f"column '{c}': {', '.join(f'{e} x{n}' for e, n in h.items())}" for c, h in hits.items())
        raise ResidualPIIError(
            f"{contract.dataset}: personal data remains after masking ({listed}); nothing was published"
        )


def _detector(contract: Contract, model_name: str | None) -> dict[str, Any] | None:
    """The detector that classified every column's sample (all datasets) and scanned free text (where declared)."""
    from pipelines.privacy.analyzer import detector_info

    scanned = [c.name for c in contract.columns if c.deidentify.operator == "scan"]
    return {
        "used_for": ["column classification (a sample of every column)"] + (["free-text scanning"] if scanned else []),
        "free_text_columns": scanned,
        **detector_info(model_name),
    }


def table_result(
    contract: Contract,
    totals: BatchTotals,
    suppression: Suppression,
    classification: list[ColumnClassification],
    *,
    model_name: str | None,
    known: KnownIdentifiers | None,
    **scan_details: Any,
) -> DeidentifiedTable:
    """The metadata of a table that passed every gate (`scan_details`: the engine's own figures, counts only)."""
    return DeidentifiedTable(
        None,
        totals.records,
        rows_in=totals.rows,
        rows_out=totals.rows - suppression.suppressed,
        rows_suppressed=suppression.suppressed,
        detector=_detector(contract, model_name),
        k_anonymity=suppression.params,
        residual_scan={
            "passed": True,
            "known_identifiers": known.size if known else 0,
            "columns": totals.residual,
            **scan_details,
        },
        classification=[c.to_dict() for c in classification],
    )


def deidentify_frame(
    frame: pd.DataFrame,
    contract: Contract,
    ctx: OperatorContext,
    *,
    model_name: str | None = None,
    known: KnownIdentifiers | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> DeidentifiedTable:
    """`deidentify_table` on an in-memory frame: the same stream, staging and k-anonymity in SQL (on an in-memory
    DuckDB), with the frame's own slices as chunks; the published rows in `.frame`."""
    source, target = duckdb.connect(), duckdb.connect()
    try:
        source.register("frame", frame)  # a view on the frame (no copy): the distinct-value queries read it
        rows = _FrameRows(source, "frame", frame)
        result = _stream(
            rows, target, "deidentified", contract, ctx, model_name=model_name, known=known, chunk_rows=chunk_rows
        )
        # in one piece: read_frame's chunks bound memory, which a result held in memory anyway does not need
        result.frame = target.execute("SELECT * FROM deidentified").df()
    finally:
        source.close()
        target.close()
    return result


class _TableRows:
    """The rows to de-identify, as a DuckDB table: its columns, value queries and chunks read on a cursor."""

    def __init__(self, source, table: str, exclude: tuple[str, ...] = ()):
        self.source, self.src = source, quote_ident(table)
        described = source.execute(f"SELECT column_name FROM (DESCRIBE {self.src})").fetchall()
        self.names = [r[0] for r in described if r[0] not in exclude]

    def count(self) -> int:
        return self.source.execute(f"SELECT count(*) FROM {self.src}").fetchone()[0]

    def distinct(self, name: str) -> pd.Series:
        column = quote_ident(name)
        return (
            self.source.execute(f"SELECT DISTINCT {column} FROM {self.src} WHERE {column} IS NOT NULL").df().iloc[:, 0]
        )

    def frequent(self, name: str, k: int, limit: int) -> pd.Series:
        return (
            self.source.execute(
                f"SELECT CAST({quote_ident(name)} AS VARCHAR) AS v FROM {self.src} WHERE v IS NOT NULL GROUP BY v "
                f"HAVING count(*) >= {int(k)} ORDER BY count(*) DESC, v LIMIT {int(limit)}"
            )
            .df()
            .iloc[:, 0]
        )

    @contextmanager
    def chunks(self, rows: int) -> Iterator[Iterator[pd.DataFrame]]:
        selected = ", ".join(quote_ident(n) for n in self.names)
        reader = self.source.cursor()
        try:
            result = reader.execute(f"SELECT {selected} FROM {self.src}")
            yield _chunks(
                result, rows, empty=lambda: self.source.execute(f"SELECT {selected} FROM {self.src} LIMIT 0").df()
            )
        finally:
            reader.close()


class _FrameRows(_TableRows):
    """The rows as an in-memory frame registered on `source`: the same value queries; chunks are slices of it."""

    def __init__(self, source, view: str, frame: pd.DataFrame):
        super().__init__(source, view)
        self.frame = frame

    def count(self) -> int:
        return len(self.frame)

    @contextmanager
    def chunks(self, rows: int) -> Iterator[Iterator[pd.DataFrame]]:
        frame = self.frame[self.names]
        starts = range(0, len(frame), rows) if len(frame) else (0,)
        yield (frame.iloc[i : i + rows].reset_index(drop=True) for i in starts)


def deidentify_table(
    source,
    table: str,
    target,
    target_table: str,
    contract: Contract,
    ctx: OperatorContext,
    *,
    model_name: str | None = None,
    known: KnownIdentifiers | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    exclude: tuple[str, ...] = (),
) -> DeidentifiedTable:
    """Stream `table` from the DuckDB connection `source` in chunks of `chunk_rows`, de-identify each chunk, stage the
    chunks in `target`, enforce k-anonymity there in SQL and only then replace `target_table` (all or nothing).

    Memory is bounded by the chunk (plus the distinct values of classified columns and, if suppression has to be
    searched, the quasi-identifier columns). Output and metadata do not depend on `chunk_rows`.
    """
    rows = _TableRows(source, table, exclude)
    return _stream(rows, target, target_table, contract, ctx, model_name=model_name, known=known, chunk_rows=chunk_rows)


def _stream(
    rows: _TableRows,
    target,
    target_table: str,
    contract: Contract,
    ctx: OperatorContext,
    *,
    model_name: str | None,
    known: KnownIdentifiers | None,
    chunk_rows: int,
) -> DeidentifiedTable:
    """The one de-identification path: classify, de-identify chunk by chunk into a staging table, gate, publish."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    names = rows.names
    check_declared_columns(names, contract)
    values = {c.name: rows.distinct(c.name) for c in columns_to_classify(contract)}
    count = rows.count()
    classifying = SharedClassification(values, contract, known=known, model_name=model_name, cells=count * len(names))
    del values
    terms = table_terms(contract, rows.distinct, rows.frequent)
    staging = f"{target_table}__staging"
    totals = BatchTotals()
    try:
        with rows.chunks(chunk_rows) as chunks:
            for frame in chunks:
                chunk = deidentify_batch(frame, contract, ctx, model_name=model_name, known=known, terms=terms)
                out = chunk.frame
                out[ROW_COLUMN] = range(totals.rows, totals.rows + len(out))
                target.register("deidentified_chunk", out)
                if not totals.batches:  # the first chunk creates the staging table
                    target.execute(
                        f"CREATE OR REPLACE TABLE {quote_ident(staging)} AS SELECT * FROM deidentified_chunk"
                    )
                else:
                    target.execute(f"INSERT INTO {quote_ident(staging)} BY NAME SELECT * FROM deidentified_chunk")
                target.unregister("deidentified_chunk")
                totals.add(chunk.records, chunk.residual, len(frame))
                classifying.poll()  # undeclared PII stops the stream as soon as the helper finds it
        classification = classifying.result()  # raises UndeclaredPIIError before anything is published
        check_residual(contract, totals.residual)
        suppression = publish_k_anonymous(target, staging, target_table, contract, totals.rows)
    finally:
        classifying.cancel()
        target.execute(f"DROP TABLE IF EXISTS {quote_ident(staging)}")
    return table_result(
        contract, totals, suppression, classification, model_name=model_name, known=known, chunk_rows=chunk_rows
    )


DUCKDB_VECTOR_ROWS = 2048  # rows per DuckDB vector (fetch_df_chunk counts in vectors)


def _chunks(result, rows: int, empty):
    """DataFrames of exactly `rows` rows (the last may be shorter) from a DuckDB result, converted as `.df()` would
    convert them; one empty frame if there are no rows (so the table still gets its columns). Read a chunk's worth of
    DuckDB's 2,048-row vectors at a time: each read is one conversion to pandas, and one per vector cost 2.4x more."""
    vectors = max(1, -(-rows // DUCKDB_VECTOR_ROWS))
    buffer: list[pd.DataFrame] = []
    size = 0
    produced = False
    while True:
        part = result.fetch_df_chunk(vectors)
        if part.empty:
            break
        buffer.append(part)
        size += len(part)
        while size >= rows:
            frame = pd.concat(buffer, ignore_index=True) if len(buffer) > 1 else buffer[0].reset_index(drop=True)
            yield frame.iloc[:rows].reset_index(drop=True)
            produced = True
            rest = frame.iloc[rows:]
            buffer, size = ([rest] if len(rest) else []), len(rest)
    if size:
        yield pd.concat(buffer, ignore_index=True)
    elif not produced:
        yield empty()


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
