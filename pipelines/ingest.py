"""Ingest a landed file into the raw database, after checking it against its contract.

Every rejection names the file, the problem and where (line, column), never a cell's content: a
landed file is raw personal data, and error messages end up in logs and the UI.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from pipelines.contracts import Contract

DUCKDB_TYPES = {
    "string": "VARCHAR",
    "integer": "BIGINT",
    "decimal": "DECIMAL(18, 4)",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
}
SOURCE_FILE_COLUMN = "_source_file"
_MAX_SHOWN = 5


class IngestError(ValueError):
    """A landed file was rejected; `problem` is a short code, the message says what and where."""

    def __init__(self, problem: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.problem = problem
        self.details = details or {}


@dataclass
class IngestReport:
    """What was ingested: file identity and counts, no values."""

    file: str
    sha256: str
    bytes: int
    rows: int
    columns: list[str] = field(default_factory=list)

    def to_metadata(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "bytes": self.bytes, "rows": self.rows}


def safe_name(text: str, limit: int = 40) -> str:
    """Printable, bounded rendering of a header name from an untrusted file."""
    shown = text if len(text) <= limit else text[:limit] + "…"
    return repr(shown)


def landed_files(landing_dir: Path, contract: Contract) -> list[Path]:
    """Files matching the contract's pattern, oldest first (by modification time, then name)."""
    files = [p for p in landing_dir.glob(contract.source.path_pattern) if p.is_file()]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


def newest_landed_file(landing_dir: Path, contract: Contract) -> Path | None:
    files = landed_files(landing_dir, contract)
    return files[-1] if files else None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_encoding(path: Path, encoding: str) -> None:
    """Decode the whole file incrementally; report the first bad byte's line, not its content."""
    dec = codecs.getincrementaldecoder(encoding)(errors="strict")
    line = 1
    offset = 0
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            try:
                text = dec.decode(block)
            except UnicodeDecodeError as e:
                bad_line = line + block[: e.start].count(b"\n")
                raise IngestError(
                    "encoding",
                    f"{path.name} is not valid {encoding}: undecodable byte at line {bad_line} "
                    f"(byte offset {offset + e.start}); re-export the file as {encoding}",
                    {"line": bad_line},
                ) from None
            line += text.count("\n")
            offset += len(block)
        try:
            dec.decode(b"", final=True)
        except UnicodeDecodeError:
            raise IngestError("encoding", f"{path.name} ends inside a multi-byte character (truncated?)") from None


def _read_header(path: Path, contract: Contract) -> list[str]:
    with path.open("r", encoding=contract.source.encoding, newline="") as f:
        first = f.readline()
    if not first.strip():
        raise IngestError("empty", f"{path.name} has no header row (the file is empty)")
    return next(csv.reader([first], delimiter=contract.source.delimiter))


def _check_header(path: Path, header: list[str], contract: Contract) -> None:
    expected = [c.name for c in contract.columns]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise IngestError("duplicate_column", f"{path.name}: duplicated column(s) {', '.join(map(safe_name, dupes))}")
    missing = [c for c in expected if c not in header]
    extra = [h for h in header if h not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(map(safe_name, missing))}")
        if extra:
            parts.append(
                f"undeclared column(s) {', '.join(map(safe_name, extra[:_MAX_SHOWN]))}"
                + (f" and {len(extra) - _MAX_SHOWN} more" if len(extra) > _MAX_SHOWN else "")
            )
        raise IngestError(
            "schema_drift",
            f"{path.name} does not match contract {contract.dataset} v{contract.version}: {'; '.join(parts)}. "
            "Update the contract (and its review) or fix the export.",
            {"missing": missing, "extra_count": len(extra)},
        )


_LINE = re.compile(r"CSV Error on Line: (\d+)")
_KNOWN = [
    re.compile(r"Expected Number of Columns: \d+ Found: \d+"),
    re.compile(r"Value with unterminated quote found"),
    re.compile(r"Maximum line size of \d+ bytes exceeded"),
    re.compile(r"Invalid unicode[^.]*"),
]


def _describe_csv_error(path: Path, error: duckdb.Error) -> IngestError:
    """DuckDB's CSV errors quote the offending line: keep only the line number and the kind of problem."""
    text = str(error)
    line = _LINE.search(text)
    reason = next((m.group(0) for pattern in _KNOWN if (m := pattern.search(text))), "the row cannot be parsed")
    where = f" at line {line.group(1)}" if line else ""
    return IngestError(
        "malformed_csv",
        f"{path.name} is not a well-formed CSV{where}: {reason}. Is the file truncated or differently delimited?",
        {"line": int(line.group(1)) if line else None},
    )


def _csv_relation(path: Path, contract: Contract) -> str:
    columns = ", ".join(f"'{c.name}': 'VARCHAR'" for c in contract.columns)
    # No sniffing: the contract fixes the dialect, so a drifted file fails instead of being misread.
    return (
        f"read_csv('{_sql_string(str(path))}', header = true, auto_detect = false, "
        f"delim = '{_sql_string(contract.source.delimiter)}', quote = '\"', escape = '\"', "
        f"strict_mode = true, columns = {{{columns}}}, "
        f"max_line_size = {max(contract.source.max_cell_bytes * len(contract.columns), 2_097_152)})"
    )


def _sql_string(text: str) -> str:
    return text.replace("'", "''")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _check_cells(con: duckdb.DuckDBPyConnection, path: Path, contract: Contract) -> None:
    """Oversized cells and values that do not cast to the declared type, counted per column."""
    checks = []
    for c in contract.columns:
        col = quote_ident(c.name)
        checks.append(f"count(*) FILTER (WHERE strlen({col}) > {contract.source.max_cell_bytes})")
        if c.type == "string":
            checks.append("0")
        else:
            checks.append(f"count(*) FILTER (WHERE {col} IS NOT NULL AND TRY_CAST({col} AS {DUCKDB_TYPES[c.type]}) IS NULL)")
    row = con.execute(f"SELECT count(*), {', '.join(checks)} FROM landed").fetchone()
    assert row is not None
    total, counts = row[0], row[1:]
    if total == 0:
        raise IngestError("empty", f"{path.name} has a header but no data rows")
    huge = {c.name: counts[2 * i] for i, c in enumerate(contract.columns) if counts[2 * i]}
    if huge:
        listed = ", ".join(f"'{k}' ({v} cell(s))" for k, v in huge.items())
        raise IngestError(
            "cell_too_large",
            f"{path.name}: cells longer than {contract.source.max_cell_bytes} bytes in column(s) {listed}",
            {"columns": huge},
        )
    bad = {c.name: counts[2 * i + 1] for i, c in enumerate(contract.columns) if counts[2 * i + 1]}
    if bad:
        listed = ", ".join(
            f"'{name}' expects {contract.column(name).type}: {n} value(s) do not convert" for name, n in bad.items()
        )
        raise IngestError("type_drift", f"{path.name}: {listed}", {"columns": bad})


def ingest_file(path: Path, contract: Contract, con: duckdb.DuckDBPyConnection, table: str) -> IngestReport:
    """Check `path` against the contract and replace `table` with its typed rows, atomically."""
    size = path.stat().st_size
    if size == 0:
        raise IngestError("empty", f"{path.name} is empty (0 bytes)")
    max_age = contract.quality.max_age_days
    if max_age is not None:
        age_days = (datetime.now(timezone.utc).timestamp() - path.stat().st_mtime) / 86400
        if age_days > max_age:
            raise IngestError("stale", f"{path.name} landed {age_days:.0f} days ago; the contract accepts files up to {max_age} days old")
    if size > contract.source.max_bytes:
        raise IngestError("too_large", f"{path.name} is {size} bytes, above the contract's limit of {contract.source.max_bytes}")
    _check_encoding(path, contract.source.encoding)
    _check_header(path, _read_header(path, contract), contract)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE landed AS SELECT * FROM {_csv_relation(path, contract)}")
    except duckdb.Error as e:
        raise _describe_csv_error(path, e) from None
    _check_cells(con, path, contract)
    casts = ", ".join(
        f"CAST({quote_ident(c.name)} AS {DUCKDB_TYPES[c.type]}) AS {quote_ident(c.name)}" for c in contract.columns
    )
    digest = file_sha256(path)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            f"CREATE OR REPLACE TABLE {quote_ident(table)} AS "
            f"SELECT {casts}, '{_sql_string(path.name)}' AS {SOURCE_FILE_COLUMN} FROM landed"
        )
        con.execute("COMMIT")
    except duckdb.Error:
        con.execute("ROLLBACK")
        raise
    finally:
        con.execute("DROP TABLE IF EXISTS landed")
    rows = con.execute(f"SELECT count(*) FROM {quote_ident(table)}").fetchone()[0]  # type: ignore[index]
    return IngestReport(path.name, digest, size, rows, [c.name for c in contract.columns])


def quarantine(path: Path, quarantine_dir: Path, error: IngestError | Exception, *, dataset: str, run_id: str) -> Path:
    """Copy a rejected file to quarantine with a reason file; the landed file itself is left in place."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target_dir = quarantine_dir / dataset / f"{stamp}_{path.name}"
    target_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, target_dir / path.name)
    reason = {
        "dataset": dataset,
        "file": path.name,
        "sha256": file_sha256(path),
        "problem": getattr(error, "problem", type(error).__name__),
        "message": str(error),
        "run_id": run_id,
        "quarantined_at": stamp,
    }
    (target_dir / "reason.json").write_text(json.dumps(reason, indent=2) + "\n", encoding="utf-8")
    return target_dir
