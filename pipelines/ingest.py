"""Ingest a landed file into the raw database, after checking it against its contract.

Every rejection names the file, the problem and where (line, column), never a cell's content: a
landed file is raw personal data, and error messages end up in logs and the UI.

Columns are read by header name, never by position: the header is parsed here, mapped to the contract's
columns (through `source.rename` and `source.ignore_columns`), and DuckDB reads the file under positional
placeholder names that are then selected as the mapped columns.
"""

from __future__ import annotations

import codecs
import csv
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from pipelines.contracts import Contract, Role
from pipelines.sql import quote_ident  # also re-exported: older callers import it from here

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
_HEAD_BYTES = 65_536
_LANDED_NAME = "__ingest_landed"
_LANDED = f"temp.main.{_LANDED_NAME}"  # read qualified: a target table of any name cannot shadow it
_DIR_MODE = 0o700
_FILE_MODE = 0o600
REASON_FILE = "reason.json"


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


def _names(names: list[str]) -> str:
    """At most _MAX_SHOWN names, safely quoted, then a count of the rest."""
    shown = ", ".join(map(safe_name, names[:_MAX_SHOWN]))
    return shown + (f" and {len(names) - _MAX_SHOWN} more" if len(names) > _MAX_SHOWN else "")


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


# --- not a CSV at all: compressed, archived or binary -------------------------------------------

_DECOMPRESS = "decompress it before landing"
_MAGIC: list[tuple[re.Pattern[bytes], str, str, str]] = [
    # (signature at offset 0, problem, what the file is, what to do)
    (re.compile(rb"\x1f\x8b"), "compressed", "a gzip-compressed file", _DECOMPRESS),
    (re.compile(rb"BZh[1-9]1AY&SY"), "compressed", "a bzip2-compressed file", _DECOMPRESS),
    (re.compile(rb"\xfd7zXZ\x00"), "compressed", "an xz-compressed file", _DECOMPRESS),
    (re.compile(rb"\x28\xb5\x2f\xfd"), "compressed", "a zstd-compressed file", _DECOMPRESS),
    (re.compile(rb"7z\xbc\xaf\x27\x1c"), "compressed", "a 7z archive", "extract the CSV before landing"),
    (re.compile(rb"PAR1"), "binary", "a Parquet file", "export the data as CSV"),
    (
        re.compile(rb"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"),
        "binary",
        "an OLE2 document (Excel 97-2003 .xls?)",
        "save it as 'CSV UTF-8'",
    ),
    (re.compile(rb"%PDF-"), "binary", "a PDF document", "export the data as CSV"),
    (re.compile(rb"\xff\xfe|\xfe\xff"), "encoding", "UTF-16 text", "re-export it as UTF-8"),
]
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_NUL = re.compile(rb"\x00")


def _zip_kind(path: Path) -> str:
    """'an Excel workbook (xlsx)' or 'a zip archive', read from the archive's member names."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return "a zip archive"
    if any(n.startswith("xl/") for n in names):
        return "an Excel workbook (xlsx)"
    return "a zip archive"


def _check_not_binary(path: Path) -> None:
    """Reject compressed, archived and binary files by their first bytes, saying what they are."""
    with path.open("rb") as f:
        head = f.read(_HEAD_BYTES)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        kind = _zip_kind(path)
        todo = "save it as 'CSV UTF-8'" if "Excel" in kind else "extract the CSV before landing"
        raise IngestError("compressed", f"{path.name} is {kind}, not a CSV; {todo}", {"kind": kind})
    for signature, problem, kind, todo in _MAGIC:
        if signature.match(head):
            raise IngestError(problem, f"{path.name} is {kind}, not a CSV; {todo}", {"kind": kind})
    controls = len(_CONTROL_BYTES.findall(head))
    if head and controls / len(head) > 0.05:  # text has a few at most; binary formats are full of them
        raise IngestError(
            "binary",
            f"{path.name} has binary content ({controls} control bytes in its first {len(head)}), not a CSV; "
            "land the CSV export itself",
            {"control_bytes": controls},
        )


# --- one pass over the bytes: encoding, NUL and control characters --------------------------------


@dataclass
class _Scan:
    nul: bool = False
    control: bool = False


def _scan_bytes(path: Path, encoding: str) -> _Scan:
    """Decode the whole file incrementally and note NUL/control bytes; report a bad byte's line, not its content."""
    dec = codecs.getincrementaldecoder(encoding)(errors="strict")
    scan = _Scan()
    line, offset = 1, 0
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
            scan.nul = scan.nul or _NUL.search(block) is not None
            scan.control = scan.control or _CONTROL_BYTES.search(block) is not None
            line += text.count("\n")
            offset += len(block)
        try:
            dec.decode(b"", final=True)
        except UnicodeDecodeError:
            raise IngestError("encoding", f"{path.name} ends inside a multi-byte character (truncated?)") from None
    return scan


# --- the header, mapped to the contract by name -----------------------------------------------------


@contextmanager
def _records(path: Path, contract: Contract) -> Iterator[Iterator[tuple[int, list[str]]]]:
    """(first line, cells) of every record, header included; the BOM Excel writes is dropped."""
    csv.field_size_limit(max(csv.field_size_limit(), path.stat().st_size + 1))  # a cell may be the whole file
    with path.open("r", encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=contract.source.delimiter, quotechar='"', doublequote=True, strict=True)

        def numbered() -> Iterator[tuple[int, list[str]]]:
            start = 1
            for cells in reader:
                yield start, cells
                start = reader.line_num + 1

        yield numbered()


def _read_header(path: Path, contract: Contract) -> list[str]:
    try:
        with _records(path, contract) as records:
            _, header = next(records, (1, []))
    except csv.Error:
        raise IngestError(
            "malformed_csv", f"{path.name}: the header row (line 1) cannot be parsed as CSV", {"line": 1}
        ) from None
    if not any(h.strip() for h in header):
        raise IngestError("empty", f"{path.name} has no header row (the first line is empty)")
    return header


def _source_of(path: Path, name: str, occurrence: int, repeated: bool, contract: Contract) -> str | None:
    """The contract column a header cell feeds, None if ignored; raises if a repeated name is renamed as a whole."""
    src = contract.source
    ref = f"{name}#{occurrence}"
    if name in src.ignore_columns or ref in src.ignore_columns:
        return None
    if ref in src.rename:
        return src.rename[ref]
    if name in src.rename:
        if repeated:
            raise IngestError(
                "duplicate_column",
                f"{path.name}: header {safe_name(name)} appears more than once but source.rename maps it as a whole; "
                f"map each occurrence as {safe_name(name + '#1')}, {safe_name(name + '#2')}, ...",
            )
        return src.rename[name]
    return name


def _map_header(path: Path, header: list[str], contract: Contract) -> dict[str, int]:
    """Contract column -> position in the file; rejects duplicated, missing and undeclared columns."""
    counts = Counter(header)
    seen: Counter[str] = Counter()
    fed: dict[str, list[int]] = {}
    for position, name in enumerate(header):
        seen[name] += 1
        target = _source_of(path, name, seen[name], counts[name] > 1, contract)
        if target is not None:
            fed.setdefault(target, []).append(position)
    clashes = {t: ps for t, ps in fed.items() if len(ps) > 1}
    if clashes:
        raise _duplicate_error(path, header, clashes)
    expected = [c.name for c in contract.columns]
    missing = [c for c in expected if c not in fed]
    extra = [header[ps[0]] for t, ps in fed.items() if t not in expected]
    if missing or extra:
        raise _drift_error(path, contract, missing, extra)
    return {t: ps[0] for t, ps in fed.items()}


def _duplicate_error(path: Path, header: list[str], clashes: dict[str, list[int]]) -> IngestError:
    target, positions = next(iter(clashes.items()))
    sources = [header[p] for p in positions]
    if len(set(sources)) == 1:
        name = sources[0]
        message = (
            f"{path.name}: duplicated column {safe_name(name)} ({len(sources)} times); if the export repeats it, "
            f"map or drop each occurrence in the contract's source.rename / source.ignore_columns as "
            f"{safe_name(name + '#1')}, {safe_name(name + '#2')}, ..."
        )
    else:
        message = f"{path.name}: columns {_names(sources)} all feed contract column {safe_name(target)}; a column has one source"
    more = f" ({len(clashes) - 1} more column(s) with the same problem)" if len(clashes) > 1 else ""
    return IngestError("duplicate_column", message + more, {"columns": sorted(clashes)})


def _drift_error(path: Path, contract: Contract, missing: list[str], extra: list[str]) -> IngestError:
    renamed_from = {t: r for r, t in contract.source.rename.items()}
    parts = []
    if missing:
        shown = [
            safe_name(m) + (f" (from header {safe_name(renamed_from[m])})" if m in renamed_from else "")
            for m in missing
        ]
        parts.append(f"missing column(s) {', '.join(shown)}")
    if extra:
        parts.append(f"undeclared column(s) {_names(extra)}")
    return IngestError(
        "schema_drift",
        f"{path.name} does not match contract {contract.dataset} v{contract.version}: {'; '.join(parts)}. "
        "Update the contract (and its review) or fix the export.",
        {"missing": missing, "extra_count": len(extra)},
    )


# --- locating a bad cell: line and column, never its content ----------------------------------------


def _locate(
    path: Path, contract: Contract, columns: dict[int, str], bad: Callable[[str], bool]
) -> tuple[int, str, int] | None:
    """(line, column, count) of the first cell of `columns` (position -> name) for which `bad` holds, header included."""
    first, count = None, 0
    try:
        with _records(path, contract) as records:
            for line, cells in records:
                for position, name in columns.items():
                    if position < len(cells) and bad(cells[position]):
                        count += 1
                        first = first or (line, name)
    except csv.Error:
        pass  # the DuckDB read reports malformed rows; what was found so far still counts
    return (*first, count) if first else None


def _reject_nul(path: Path, contract: Contract, header: list[str]) -> None:
    found = _locate(path, contract, dict(enumerate(header)), lambda cell: "\x00" in cell)
    where = f"; the first at line {found[0]}, column {safe_name(found[1])}" if found else ""
    raise IngestError(
        "nul_byte",
        f"{path.name} contains NUL bytes in {found[2] if found else 'some'} cell(s){where}. "
        "NUL is never data in a CSV: fix the export",
        {"line": found[0] if found else None, "cells": found[2] if found else None},
    )


_CONTROL_CHARS = re.compile(r"[\x01-\x08\x0b\x0c\x0e-\x1f]")
_CONTROL_SQL = r"[\x01-\x08\x0b\x0c\x0e-\x1f]"  # RE2 reads the escapes


def _reject_control(path: Path, contract: Contract, layout: dict[str, int], counts: dict[str, int]) -> None:
    checked = {layout[name]: name for name in counts}
    found = _locate(path, contract, checked, lambda cell: _CONTROL_CHARS.search(cell) is not None)
    where = f"; the first at line {found[0]}, column {safe_name(found[1])}" if found else ""
    raise IngestError(
        "control_character",
        f"{path.name} has control characters (other than tab, LF, CR) in {sum(counts.values())} cell(s) of "
        f"column(s) {_names(list(counts))}{where}; only free_text columns may hold them",
        {"columns": counts, "line": found[0] if found else None},
    )


def _huge_cell_error(
    path: Path, contract: Contract, layout: dict[str, int], counts: dict[str, int] | None
) -> IngestError | None:
    """The first cell above the contract's limit, by line and column (None if there is none); `counts` per column if known."""
    limit = contract.source.max_cell_bytes
    names = list(counts) if counts else list(layout)
    # a character is at most 4 bytes in UTF-8: shorter strings need no encoding to be known small enough
    found = _locate(
        path,
        contract,
        {layout[n]: n for n in names},
        lambda cell: len(cell) > limit // 4 and len(cell.encode()) > limit,
    )
    if found is None:
        return None
    line, column, n = found
    return IngestError(
        "cell_too_large",
        f"{path.name}: a cell in column {safe_name(column)} at line {line} is longer than the contract's limit "
        f"of {limit} bytes ({sum(counts.values()) if counts else n} such cell(s) in all)",
        {"columns": counts or {column: n}, "line": line, "limit": limit},
    )


# --- reading with DuckDB ------------------------------------------------------------------------------

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


def _placeholder(position: int) -> str:
    return f"c{position}"


def _csv_relation(path: Path, contract: Contract, width: int) -> str:
    """read_csv under positional placeholder names c0..cN: the header decides which is which, not DuckDB."""
    columns = ", ".join(f"'{_placeholder(i)}': 'VARCHAR'" for i in range(width))
    # a line longer than this surely holds a cell above the limit (quotes at most double a cell)
    max_line = max((2 * contract.source.max_cell_bytes + 3) * width, 2_097_152)
    # No sniffing: the contract fixes the dialect, so a drifted file fails instead of being misread.
    return (
        f"read_csv('{_sql_string(str(path))}', header = true, auto_detect = false, "
        f"delim = '{_sql_string(contract.source.delimiter)}', quote = '\"', escape = '\"', "
        f"strict_mode = true, columns = {{{columns}}}, max_line_size = {max_line})"
    )


def _sql_string(text: str) -> str:
    return text.replace("'", "''")


def _load(con: duckdb.DuckDBPyConnection, path: Path, contract: Contract, layout: dict[str, int], width: int) -> None:
    """The file's mapped columns, as text under their contract names, into the temp table."""
    selected = ", ".join(f"{_placeholder(layout[c.name])} AS {quote_ident(c.name)}" for c in contract.columns)
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {_LANDED_NAME} AS SELECT {selected} FROM {_csv_relation(path, contract, width)}"
        )
    except (
        duckdb.InvalidInputException,
        duckdb.ConversionException,
    ) as e:  # the CSV reader's errors (they quote the line)
        huge = _huge_cell_error(path, contract, layout, None) if "Maximum line size" in str(e) else None
        raise huge or _describe_csv_error(path, e) from None


def _per_column(row: tuple, names: list[str], start: int, stride: int) -> dict[str, int]:
    return {n: row[start + stride * i] for i, n in enumerate(names) if row[start + stride * i]}


def _check_cells(
    con: duckdb.DuckDBPyConnection, path: Path, contract: Contract, layout: dict[str, int], control: bool
) -> None:
    """Empty batches, oversized cells, control characters and values that do not cast, counted per column."""
    limit = contract.source.max_cell_bytes
    checks = []
    for c in contract.columns:
        col = quote_ident(c.name)
        checks.append(f"count(*) FILTER (WHERE strlen({col}) > {limit})")
        checks.append(
            f"count(*) FILTER (WHERE regexp_matches({col}, '{_CONTROL_SQL}'))"
            if control and c.role != Role.free_text
            else "0"
        )
        checks.append(
            "0"
            if c.type == "string"
            else f"count(*) FILTER (WHERE {col} IS NOT NULL AND TRY_CAST({col} AS {DUCKDB_TYPES[c.type]}) IS NULL)"
        )
    row = con.execute(f"SELECT count(*), {', '.join(checks)} FROM {_LANDED}").fetchone()
    assert row is not None
    if row[0] == 0:
        raise IngestError("empty", f"{path.name} has a header but no data rows")
    names = [c.name for c in contract.columns]
    if huge := _per_column(row, names, 1, 3):
        raise _huge_cell_error(path, contract, layout, huge) or IngestError(
            "cell_too_large",
            f"{path.name}: cells longer than the contract's limit of {limit} bytes in column(s) {_names(list(huge))}",
            {"columns": huge},
        )
    if controls := _per_column(row, names, 2, 3):
        _reject_control(path, contract, layout, controls)
    if bad := _per_column(row, names, 3, 3):
        listed = ", ".join(
            f"'{name}' expects {contract.column(name).type}: {n} value(s) do not convert" for name, n in bad.items()
        )
        raise IngestError("type_drift", f"{path.name}: {listed}", {"columns": bad})


def _check_file(path: Path, contract: Contract) -> int:
    """Size, freshness and limits of the landed file; returns its size."""
    size = path.stat().st_size
    if size == 0:
        raise IngestError("empty", f"{path.name} is empty (0 bytes)")
    max_age = contract.quality.max_age_days
    if max_age is not None:
        age_days = (datetime.now(UTC).timestamp() - path.stat().st_mtime) / 86400
        if age_days > max_age:
            raise IngestError(
                "stale",
                f"{path.name} landed {age_days:.0f} days ago; the contract accepts files up to {max_age} days old",
            )
    if size > contract.source.max_bytes:
        raise IngestError(
            "too_large", f"{path.name} is {size} bytes, above the contract's limit of {contract.source.max_bytes}"
        )
    return size


def ingest_file(path: Path, contract: Contract, con: duckdb.DuckDBPyConnection, table: str) -> IngestReport:
    """Check `path` against the contract and replace `table` (any name, e.g. a staged one) with its typed rows, atomically."""
    size = _check_file(path, contract)
    _check_not_binary(path)
    scan = _scan_bytes(path, contract.source.encoding)
    header = _read_header(path, contract)
    if scan.nul:
        _reject_nul(path, contract, header)
    layout = _map_header(path, header, contract)
    digest = file_sha256(path)
    try:
        _load(con, path, contract, layout, len(header))
        _check_cells(con, path, contract, layout, scan.control)
        casts = ", ".join(
            f"CAST({quote_ident(c.name)} AS {DUCKDB_TYPES[c.type]}) AS {quote_ident(c.name)}" for c in contract.columns
        )
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(
                f"CREATE OR REPLACE TABLE {quote_ident(table)} AS "
                f"SELECT {casts}, '{_sql_string(path.name)}' AS {SOURCE_FILE_COLUMN} FROM {_LANDED}"
            )
            con.execute("COMMIT")
        except duckdb.Error:
            con.execute("ROLLBACK")
            raise
    finally:
        con.execute(f"DROP TABLE IF EXISTS {_LANDED}")
    rows = con.execute(f"SELECT count(*) FROM {quote_ident(table)}").fetchone()[0]  # type: ignore[index]
    return IngestReport(path.name, digest, size, rows, [c.name for c in contract.columns])


# --- staging: write, check, then publish in one transaction ------------------------------------------


def publish_staged(con: duckdb.DuckDBPyConnection, staged: str, table: str) -> None:
    """Replace `table` with `staged` in one transaction: readers see the old table or the new one, never neither."""
    if staged == table:
        raise ValueError("the staged table and its target must differ")
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"SELECT 1 FROM {quote_ident(staged)} LIMIT 0")  # fails before anything is dropped if it is missing
        con.execute(f"DROP TABLE IF EXISTS {quote_ident(table)}")
        con.execute(f"ALTER TABLE {quote_ident(staged)} RENAME TO {quote_ident(table)}")
        con.execute("COMMIT")
    except duckdb.Error:
        con.execute("ROLLBACK")
        raise


def drop_staged(con: duckdb.DuckDBPyConnection, staged: str) -> None:
    """Discard a staged table (a batch that failed its checks); nothing if it is not there."""
    con.execute(f"DROP TABLE IF EXISTS {quote_ident(staged)}")


# --- quarantine: owner-only from creation, one copy per file content ---------------------------------


def _private_dir(path: Path) -> Path:
    """Create `path` owner-only (its parents as usual), or tighten it if it exists; returns it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=_DIR_MODE)
    except FileExistsError:
        pass
    os.chmod(path, _DIR_MODE)  # exact whatever the umask, and old 0755 folders tightened; a new one is still empty
    return path


def _create_private(path: Path) -> int:
    """A new file, owner-only from its creation; returns its descriptor."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), _FILE_MODE)
    os.fchmod(fd, _FILE_MODE)  # exact, whatever the umask, before a byte is written
    return fd


def _write_private(path: Path, data: bytes) -> None:
    """Write a whole owner-only file atomically (a temp file renamed over it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = _create_private(tmp)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _copy_hashing(source: Path, folder: Path) -> tuple[Path, str]:
    """Copy `source` to an owner-only temp file in `folder`, hashing the bytes copied; returns (temp, sha256)."""
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=".incoming-", dir=folder)  # mkstemp creates 0600
    os.fchmod(fd, _FILE_MODE)
    with os.fdopen(fd, "wb") as out, source.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    st = source.stat()
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))  # times only: copying the mode would open it up
    return Path(tmp), h.hexdigest()


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Exclusive lock on a folder, so two runs quarantining at once do not lose a rejection."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _entry_for(dataset_dir: Path, digest: str, name: str) -> Path:
    """The folder already holding this content (any name), else a new one's path."""
    for existing in sorted(dataset_dir.glob(f"{digest[:16]}_*")):
        reason = _read_reason(existing)
        if reason is not None and reason.get("sha256") == digest:
            return existing
    return dataset_dir / f"{digest[:16]}_{name}"


def _read_reason(folder: Path) -> dict | None:
    try:
        return json.loads((folder / REASON_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _now_iso(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _store_copy(path: Path, dataset_dir: Path, dataset: str) -> tuple[Path, dict]:
    """The folder keeping this file's content (made if new, one copy only) and its reason record so far."""
    tmp, digest = _copy_hashing(path, dataset_dir)
    try:
        folder = _private_dir(_entry_for(dataset_dir, digest, path.name))
        reason = _read_reason(folder) or {"dataset": dataset, "file": path.name, "sha256": digest}
        copy = folder / reason["file"]  # the same content under another name is not kept twice
        if not copy.exists():
            os.replace(tmp, copy)
    finally:
        tmp.unlink(missing_ok=True)
    return folder, reason


def quarantine(path: Path, quarantine_dir: Path, error: IngestError | Exception, *, dataset: str, run_id: str) -> Path:
    """Keep a rejected file once per content in an owner-only folder, with every rejection in reason.json; returns the folder.

    The landed file itself is left in place. Folders are 0700 and files 0600 from their creation.
    """
    dataset_dir = _private_dir(_private_dir(quarantine_dir) / dataset)
    with _locked(dataset_dir):
        folder, reason = _store_copy(path, dataset_dir, dataset)
        rejection = {
            "run_id": run_id,
            "at": _now_iso(),
            "file": path.name,
            "problem": getattr(error, "problem", type(error).__name__),
            "message": str(error),
        }
        reason.setdefault("first_quarantined_at", rejection["at"])
        reason.setdefault("rejections", []).append(rejection)
        # the latest rejection at the top level too, for readers of the single-rejection format
        reason.update(
            problem=rejection["problem"], message=rejection["message"], run_id=run_id, quarantined_at=rejection["at"]
        )
        _write_private(folder / REASON_FILE, (json.dumps(reason, indent=2) + "\n").encode("utf-8"))
    return folder


def _first_quarantined(folder: Path) -> tuple[datetime, str | None]:
    """When content was first quarantined (reason.json, else the folder's mtime) and its sha256."""
    reason = _read_reason(folder) or {}
    stamp = reason.get("first_quarantined_at") or reason.get("quarantined_at")
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y%m%dT%H%M%SZ"):  # this format, and the one-copy-per-run format before it
        try:
            return datetime.strptime(str(stamp), fmt).replace(tzinfo=UTC), reason.get("sha256")
        except ValueError:
            continue
    return datetime.fromtimestamp(folder.stat().st_mtime, UTC), reason.get("sha256")


def purge_quarantine(quarantine_dir: Path, retention_days: int, now: datetime | None = None) -> list[dict]:
    """Remove quarantine entries first quarantined more than `retention_days` ago; returns what went (no values).

    Each removed entry is {dataset, folder, sha256, age_days}, for the caller's audit record.
    """
    if retention_days < 0:
        raise ValueError("retention_days must be zero or more")
    now = (now or datetime.now(UTC)).astimezone(UTC)
    removed = []
    for dataset_dir in sorted(p for p in quarantine_dir.glob("*") if p.is_dir()):
        with _locked(dataset_dir):
            for entry in sorted(dataset_dir.iterdir()):
                if entry.name.startswith(".incoming-"):
                    entry.unlink()  # a copy a crash left half-done (the lock is held: no copy is under way)
                    continue
                when, digest = _first_quarantined(entry)
                age = (now - when).total_seconds() / 86400
                if age > retention_days:
                    shutil.rmtree(entry)
                    removed.append(
                        {"dataset": dataset_dir.name, "folder": entry.name, "sha256": digest, "age_days": round(age, 1)}
                    )
    return removed
