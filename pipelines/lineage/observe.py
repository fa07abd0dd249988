"""Landed files on record: an observation on the landed asset per file (name, size, modification time, rows, checksum)."""

from __future__ import annotations

import csv
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _records(path: Path) -> int | None:
    """CSV records after the header (quoted line breaks counted once); None when the file cannot be read as text."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            return max(sum(1 for _ in csv.reader(f)) - 1, 0)
    except (UnicodeDecodeError, csv.Error, OSError):
        return None


def landed_file_observation(
    key: dg.AssetKey,
    path: Path,
    landing_dir: Path,
    *,
    rows: int | None = None,
    sha256: str | None = None,
    observed_by: str = "",
) -> dg.AssetObservation:
    """What a steward needs to know about a landed file, no cell value: its identity, size, time, records and hash."""
    stat = path.stat()
    rows = rows if rows is not None else _records(path)
    checksum = sha256 or _sha256(path)
    return dg.AssetObservation(
        asset_key=key,
        metadata={
            "file": str(path.relative_to(landing_dir)),
            "size_bytes": dg.MetadataValue.int(stat.st_size),
            "modified_utc": datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(timespec="seconds"),
            "rows": dg.MetadataValue.int(rows) if rows is not None else "unreadable as UTF-8 CSV",
            "sha256": checksum,
            "observed_by": observed_by,
        },
    )
