"""A tamper-evident audit log: JSON lines, each carrying the hash of the one before it.

Editing, deleting or reordering any past line breaks the chain, and `verify` says where. Records hold
parameters and counts, never personal values.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def _digest(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _last(path: Path) -> tuple[int, str]:
    if not path.exists() or path.stat().st_size == 0:
        return 0, GENESIS
    with path.open("rb") as f:
        f.seek(max(path.stat().st_size - 65536, 0))
        last = f.read().splitlines()[-1]
    record = json.loads(last)
    return int(record["seq"]), record["hash"]


def append(path: Path, event: dict[str, Any]) -> dict[str, Any]:
    """Append one event, chained to the previous record; safe across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            seq, previous = _last(path)
            record = {"seq": seq + 1, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **event, "prev_hash": previous}
            record["hash"] = _digest(record)
            f.write(json.dumps(record, sort_keys=True, default=str) + "\n")
            f.flush()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
    path.chmod(0o600)
    return record


def verify(path: Path) -> tuple[bool, str]:
    """Check the whole chain; returns (ok, explanation naming the first broken line)."""
    previous, expected_seq = GENESIS, 1
    if not path.exists():
        return True, "no audit log yet"
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            return False, f"line {number} is not valid JSON"
        if record.get("seq") != expected_seq:
            return False, f"line {number}: sequence {record.get('seq')} where {expected_seq} was expected (a record was removed or reordered)"
        if record.get("prev_hash") != previous:
            return False, f"line {number}: does not chain to the record before it"
        if _digest(record) != record.get("hash"):
            return False, f"line {number}: content does not match its hash (edited)"
        previous, expected_seq = record["hash"], expected_seq + 1
    return True, f"{expected_seq - 1} records, chain intact"
