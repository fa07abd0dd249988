"""Data subjects' requests (opt-out, erasure): recorded once, kept durably, never holding the identifier itself.

A request keeps only the identifier's *subject key*: the keyed pseudonym of its value (HMAC-SHA256 over the entity
type and the normalized value, `pipelines.privacy.operators.pseudonym`). The same key finds the person's rows in every
department that holds the identifier, and is exactly the token a de-identified table would show for it, so absence can
be proven by pseudonym too. The store is one JSON file, owner-only, rewritten atomically under a lock; a request is
never deleted or consumed: every later run keeps applying it.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.contracts import Contract
from pipelines.privacy.keys import SecretKey
from pipelines.privacy.operators import normalize, pseudonym

KINDS = ("opt-out", "erasure")
STORE_FILE = "requests.json"
CSV_FIELDS = ("kind", "identifier_type", "value", "reason", "requested_by")


class RequestError(ValueError):
    """A request cannot be recorded; the message never quotes the identifier."""


@dataclass(frozen=True)
class Paths:
    """Where requests live: the store (owner-only) and the folder stewards drop CSV files into."""

    store_dir: Path
    drop_dir: Path

    @classmethod
    def under(cls, data_dir: Path) -> Paths:
        return cls(Path(data_dir) / "lifecycle", Path(data_dir) / "requests")

    @property
    def store(self) -> Path:
        return self.store_dir / STORE_FILE


def now_iso(now: datetime | None = None) -> str:
    """UTC, seconds, with a Z."""
    return (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def declared_entities(contracts: list[Contract]) -> set[str]:
    """Identifier types a request may name: every entity a contract's identifier or join key declares."""
    return {
        c.entity
        for contract in contracts
        for c in contract.columns
        if c.entity and c.role.value in ("direct_identifier", "join_key")
    }


def subject_key(secret: bytes, entity: str, value: str) -> str:
    """The keyed pseudonym of an identifier: what the store keeps instead of the value."""
    return pseudonym(secret, entity, value)


# --- the store --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(paths: Paths) -> Iterator[None]:
    """Exclusive lock beside the store: the CLI, the sensor and runs may write it at once."""
    paths.store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(paths.store_dir, 0o700)
    fd = os.open(paths.store_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def load(paths: Paths) -> dict[str, dict[str, Any]]:
    """Every request by id (empty when none was ever recorded)."""
    try:
        return json.loads(paths.store.read_text(encoding="utf-8"))["requests"]
    except FileNotFoundError:
        return {}


def _save(paths: Paths, requests: dict[str, dict[str, Any]]) -> None:
    """Write the whole store under a private name, sync, then rename into place (never a half-written store)."""
    tmp = paths.store.with_name(f".{STORE_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"version": 1, "requests": requests}, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, paths.store)


@contextlib.contextmanager
def editing(paths: Paths) -> Iterator[dict[str, dict[str, Any]]]:
    """The store, locked for a read-modify-write; saved when the block ends without error."""
    with _locked(paths):
        requests = load(paths)
        yield requests
        _save(paths, requests)


def update(paths: Paths, request_id: str, field: str, value: Any) -> None:
    """Set one field of one request (resolution, application, proof)."""
    with editing(paths) as requests:
        requests[request_id][field] = value


# --- recording --------------------------------------------------------------------------------------------


def _new_id(existing: dict[str, Any]) -> str:
    """A random id: nothing about the person can be read from it."""
    while (rid := f"sr-{secrets.token_hex(5)}") in existing:
        pass
    return rid


def _validated(kind: str, identifier_type: str, value: str, entities: set[str], reason: str, requested_by: str) -> None:
    """Refuse an unusable request, naming the field but never the value."""
    if kind not in KINDS:
        raise RequestError(f"kind must be one of {', '.join(KINDS)}")
    if identifier_type not in entities:
        raise RequestError(
            f"identifier type {identifier_type!r} is not declared by any contract (declared: {', '.join(sorted(entities))})"
        )
    if not value or len(normalize(identifier_type, value)) < 4:
        raise RequestError(
            "the identifier value is empty or too short to identify anyone (at least 4 characters once normalized)"
        )
    if not reason.strip() or not requested_by.strip():
        raise RequestError("a request needs a reason and who requested it")


def add(
    paths: Paths,
    key: SecretKey,
    contracts: list[Contract],
    *,
    kind: str,
    identifier_type: str,
    value: str,
    reason: str,
    requested_by: str,
    source: str = "cli",
    now: datetime | None = None,
) -> tuple[str, bool]:
    """Record a request; returns (id, created). The same identifier asked again with the same kind keeps its first id."""
    _validated(kind, identifier_type, value, declared_entities(contracts), reason, requested_by)
    skey = subject_key(key.secret, identifier_type, value)
    with editing(paths) as requests:
        same = next((rid for rid, r in requests.items() if r["subject_key"] == skey and r["kind"] == kind), None)
        if same is not None:
            return same, False
        rid = _new_id(requests)
        requests[rid] = {
            "id": rid,
            "kind": kind,
            "identifier_type": identifier_type,
            "subject_key": skey,
            "key_id": key.key_id,
            "reason": reason.strip(),
            "requested_by": requested_by.strip(),
            "source": source,
            "recorded_at": now_iso(now),
        }
    return rid, True


def import_drops(
    paths: Paths, key: SecretKey, contracts: list[Contract], now: datetime | None = None
) -> list[dict[str, Any]]:
    """Record every row of every CSV in the drop folder, then delete the file (its values must not linger).

    Returns one outcome per file: {file, recorded: [ids], duplicates, rejected: [{line, problem}]} (no values)."""
    if not paths.drop_dir.is_dir():
        return []
    outcomes = []
    for path in sorted(paths.drop_dir.glob("*.csv")):
        outcome: dict[str, Any] = {"file": path.name, "recorded": [], "duplicates": 0, "rejected": []}
        with path.open(encoding="utf-8-sig", newline="") as f:
            for line, row in enumerate(csv.DictReader(f), start=2):
                try:
                    rid, created = add(
                        paths,
                        key,
                        contracts,
                        source=f"csv:{path.name}",
                        now=now,
                        **{k: (row.get(k) or "").strip() for k in CSV_FIELDS},
                    )
                except RequestError as error:
                    outcome["rejected"].append({"line": line, "problem": str(error)})
                    continue
                if created:
                    outcome["recorded"].append(rid)
                else:
                    outcome["duplicates"] += 1
        path.unlink()
        outcomes.append(outcome)
    return outcomes


# --- reading ----------------------------------------------------------------------------------------------


def active(paths: Paths) -> list[dict[str, Any]]:
    """Every request, oldest first: all of them apply to every run, forever."""
    return sorted(load(paths).values(), key=lambda r: (r["recorded_at"], r["id"]))


def keys_of(request: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(linking keys, mention keys): the identifiers that find the person's rows, and every identifier of theirs
    that may be mentioned in text (names, hosts too); both include the requested identifier's own key."""
    resolution = request.get("resolution") or {}
    linking = {request["subject_key"], *resolution.get("linking_keys", [])}
    return linking, linking | set(resolution.get("mention_keys", []))


def status(request: dict[str, Any]) -> dict[str, Any]:
    """Where a request stands, in words and fields (never the identifier or its key)."""
    resolution, proven = request.get("resolution"), request.get("proven") or {}
    current = {a: p for a, p in proven.items() if resolution and p["at"] >= resolution["at"]}
    if resolution is None:
        state = "pending: recorded, waiting for its run"
    elif not resolution.get("matched"):
        state = f"matched nobody (checked in run {resolution['run_id']}); it stays in force for future data"
    elif missing := sorted(set(resolution["assets"]) - set(current)):
        state = f"resolved in run {resolution['run_id']}: waiting for the rebuild of {', '.join(missing)}"
    else:
        runs = sorted({current[a]["run_id"] for a in resolution["assets"]}) or [resolution["run_id"]]
        state = (
            f"applied in run {', '.join(runs)}; proven absent in {len(current)} asset(s): {', '.join(sorted(current))}"
        )
    return {
        "id": request["id"],
        "kind": request["kind"],
        "identifier_type": request["identifier_type"],
        "recorded_at": request["recorded_at"],
        "requested_by": request["requested_by"],
        "state": state,
        "rows_found": (resolution or {}).get("rows", {}),
        "raw_rows_erased": (resolution or {}).get("rows_erased", {}),
        "proven_absent_in": {asset: p["run_id"] for asset, p in sorted(proven.items())},
    }
