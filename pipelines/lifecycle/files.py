"""Landed files and quarantine copies rewritten without some rows (erased people, rows past retention).

A rewrite keeps the file's name, mode and modification time (landing order and the landing sensors' cursors stay as
they were), is written whole under a private name and renamed into place, and returns what changed: file, rows
removed, SHA-256 before and after. Never a value.
"""

from __future__ import annotations

import csv
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.contracts import Contract
from pipelines.ingest import file_sha256
from pipelines.lifecycle.matching import identifier_columns, linking
from pipelines.privacy.operators import pseudonyms

RowFilter = Callable[[dict[str, list[str]]], np.ndarray]  # columns (contract names) -> which rows to drop


class Unreadable(ValueError):
    """A file that cannot be parsed as its contract's CSV (it cannot be rewritten row by row)."""


@dataclass
class Parsed:
    header: list[str]
    rows: list[list[str]]
    columns: dict[str, int]  # contract column -> position


def _layout(header: list[str], contract: Contract) -> dict[str, int]:
    """Contract column -> position, through source.rename and source.ignore_columns (name or name#N)."""
    src, seen, out = contract.source, {}, {}
    for position, name in enumerate(header):
        seen[name] = seen.get(name, 0) + 1
        ref = f"{name}#{seen[name]}"
        if name in src.ignore_columns or ref in src.ignore_columns:
            continue
        out.setdefault(src.rename.get(ref) or src.rename.get(name) or name, position)
    return out


def parse(path: Path, contract: Contract) -> Parsed:
    """The file's header and rows, as the contract reads them."""
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=contract.source.delimiter, quotechar='"', doublequote=True, strict=True)
            header = next(reader, [])
            rows = list(reader)
    except (csv.Error, UnicodeDecodeError) as error:
        raise Unreadable(f"{path.name} cannot be read as CSV ({type(error).__name__})") from None
    return Parsed(header, rows, _layout(header, contract))


def column_values(parsed: Parsed, name: str) -> list[str]:
    position = parsed.columns.get(name)
    return [row[position] if position is not None and position < len(row) else "" for row in parsed.rows]


def rewrite(path: Path, contract: Contract, drop: Callable[[Parsed], np.ndarray]) -> dict | None:
    """Rewrite `path` without the rows `drop` selects; None when it selects none (the file is left untouched)."""
    parsed = parse(path, contract)
    mask = drop(parsed) if parsed.rows else np.zeros(0, dtype=bool)
    if not mask.any():
        return None
    before, stat = file_sha256(path), path.stat()
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.rewrite")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.st_mode & 0o777)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter=contract.source.delimiter, quotechar='"', lineterminator="\n")
        writer.writerow(parsed.header)
        writer.writerows(row for row, gone in zip(parsed.rows, mask) if not gone)
        f.flush()
        os.fsync(f.fileno())
    os.utime(tmp, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same place in landing order; sensors see no new file
    os.replace(tmp, path)
    return {
        "file": path.name,
        "rows_removed": int(mask.sum()),
        "rows_kept": int((~mask).sum()),
        "sha256_before": before,
        "sha256_after": file_sha256(path),
    }


def person_rows(contract: Contract, secret: bytes, keys: set[str]) -> Callable[[Parsed], np.ndarray]:
    """Rows holding a linking identifier whose keyed hash is among `keys`."""

    def drop(parsed: Parsed) -> np.ndarray:
        mask = np.zeros(len(parsed.rows), dtype=bool)
        for c in identifier_columns(contract):
            if linking(c) and c.name in parsed.columns:
                values = pd.Series(column_values(parsed, c.name), dtype=object)
                mask |= (
                    np.isin(np.asarray(pseudonyms(secret, c.entity, values), dtype=object), list(keys))
                    & (values != "").to_numpy()
                )
        return mask

    return drop


def rows_before(contract: Contract, horizon_iso: str) -> Callable[[Parsed], np.ndarray]:
    """Rows whose event date (ISO date or timestamp, compared by its date) is before the horizon."""
    column = contract.retention.event_date_column

    def drop(parsed: Parsed) -> np.ndarray:
        if column not in parsed.columns:
            return np.zeros(len(parsed.rows), dtype=bool)
        days = np.array([v.strip()[:10] for v in column_values(parsed, column)], dtype=object)
        return np.array([bool(d) and d < horizon_iso for d in days], dtype=bool)

    return drop
