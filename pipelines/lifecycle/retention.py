"""Retention: what is older than a contract's `retention_days` leaves landing, raw, quarantine (and so everything built on them).

A row's age is its declared event date (`retention.event_date_column`); a contract without one ages rows from the
landing time of the file they came from (its modification time), and says so. "Now" is always a parameter: the
daily schedule passes the tick's time, tests and the command line pass any time they like.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from pipelines.contracts import Contract
from pipelines.ingest import REASON_FILE, SOURCE_FILE_COLUMN, landed_files, quote_ident
from pipelines.lifecycle.files import Unreadable, rewrite, rows_before
from pipelines.lifecycle.requests import now_iso

STATE_FILE = "retention.json"
NOW_TAG = "pipelines/now"  # a run's "now" for retention (ISO 8601); the schedule sets its tick time
CONFIRM_TAG = "pipelines/retention_confirmed"  # "1": a steward confirmed a purge larger than MAX_UNCONFIRMED_SHARE
# A daily purge removes a day's worth of rows. One that would remove more than this share of a dataset's raw rows or
# landed files at once (retention switched on over old data, a wrong event-date column, a clock far ahead) is held:
# nothing of that dataset is removed until a steward confirms it (`retention purge --confirm`); the hold is audited and
# its check warns in the UI.
MAX_UNCONFIRMED_SHARE = 0.5


def parse_now(text: str | None) -> datetime:
    """An ISO date or time (UTC if it names no zone); the current time when None."""
    if not text:
        return datetime.now(UTC)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def horizon(contract: Contract, now: datetime) -> date:
    """The first day still kept: anything dated before it is past retention."""
    return (now.astimezone(UTC) - timedelta(days=contract.retention_days)).date()


def basis(contract: Contract) -> str:
    """What a row's age is measured from, in words for metadata."""
    column = contract.retention.event_date_column
    return (
        f"event date ({column})" if column else "landing time of its file (the contract declares no event-date column)"
    )


def _landed_at(path: Path) -> date:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).date()


# --- state: the last purge of each dataset ----------------------------------------------------------------------


def load_state(store_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((store_dir / STATE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def save_state(store_dir: Path, state: dict[str, Any]) -> None:
    """Atomic, owner-only (counts and dates only)."""
    store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = store_dir / f".{STATE_FILE}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(state, f, indent=1, sort_keys=True)
    os.replace(tmp, store_dir / STATE_FILE)


def enforced_horizon(state: dict[str, Any], dataset: str) -> date | None:
    """The horizon of the dataset's last purge (what de-identification keeps enforcing until the next one)."""
    last = state.get(dataset)
    return date.fromisoformat(last["horizon"]) if last else None


def metadata(contract: Contract, state: dict[str, Any]) -> dict[str, Any]:
    """An asset's retention entry: horizon, basis, last purge (rows removed, time), or that none ran yet."""
    last = state.get(contract.dataset)
    return {
        "retention_days": contract.retention_days,
        "basis": basis(contract),
        "horizon": last["horizon"] if last else None,
        "last_purge": last["last_purge"] if last else "never purged yet",
    }


# --- purging ----------------------------------------------------------------------------------------------------


def _purge_landing(
    landing_dir: Path, contract: Contract, keep_from: date
) -> tuple[list[dict], list[dict], dict[str, date]]:
    """Remove files landed before the horizon, rewrite the others without expired rows; (removed, rewritten, landed dates)."""
    removed, rewritten, landed = [], [], {}
    for path in landed_files(landing_dir, contract):
        landed[path.name] = _landed_at(path)
        if landed[path.name] < keep_from:
            path.unlink()
            removed.append({"file": path.name, "landed_on": landed[path.name].isoformat()})
        elif contract.retention.event_date_column:
            try:
                change = rewrite(path, contract, rows_before(contract, keep_from.isoformat()))
            except Unreadable as error:
                rewritten.append({"file": path.name, "unreadable": str(error)})
                continue
            if change:
                rewritten.append(change)
    return removed, rewritten, landed


def _purge_raw(con, contract: Contract, keep_from: date, landed: dict[str, date], gone: set[str]) -> int:
    """Delete expired raw rows: by event date, else the rows of files landed before the horizon."""
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if contract.dataset not in tables:
        return 0
    table, column = quote_ident(contract.dataset), contract.retention.event_date_column
    if column:
        return con.execute(
            f"DELETE FROM {table} WHERE CAST({quote_ident(column)} AS DATE) < ?", [keep_from]
        ).fetchone()[0]
    expired = sorted(gone | {name for name, day in landed.items() if day < keep_from})
    if not expired:
        return 0
    return con.execute(f"DELETE FROM {table} WHERE {SOURCE_FILE_COLUMN} IN (SELECT unnest(?))", [expired]).fetchone()[0]


def _first_quarantined(folder: Path) -> date | None:
    try:
        reason = json.loads((folder / REASON_FILE).read_text(encoding="utf-8"))
        stamp = reason.get("first_quarantined_at") or reason.get("quarantined_at")
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").date()
    except (OSError, ValueError, TypeError):
        return None


def _purge_quarantine(quarantine_dir: Path, contract: Contract, keep_from: date) -> tuple[list[dict], list[dict]]:
    """Remove quarantine entries first quarantined before the horizon; rewrite the others without expired rows."""
    removed, rewritten = [], []
    folder = quarantine_dir / contract.dataset
    for entry in sorted(p for p in folder.glob("*") if p.is_dir()) if folder.is_dir() else []:
        first = _first_quarantined(entry)
        if first is None or first < keep_from:
            shutil.rmtree(entry)
            removed.append({"entry": entry.name, "first_quarantined_on": first.isoformat() if first else "unknown"})
            continue
        for copy in (
            (p for p in entry.iterdir() if p.name != REASON_FILE and p.is_file())
            if contract.retention.event_date_column
            else ()
        ):
            try:
                change = rewrite(copy, contract, rows_before(contract, keep_from.isoformat()))
            except Unreadable:
                copy.unlink()  # a rejected file that cannot be read row by row cannot be trimmed: it goes
                change = {"file": copy.name, "removed_unreadable": True}
            if change:
                rewritten.append({"entry": entry.name, **change})
    return removed, rewritten


def pending_share(con, contract: Contract, landing_dir: Path, keep_from: date) -> dict[str, Any]:
    """What a purge to `keep_from` would remove, before removing anything: raw rows and landed files, counts and shares."""
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    total = (
        con.execute(f"SELECT count(*) FROM {quote_ident(contract.dataset)}").fetchone()[0]
        if contract.dataset in tables
        else 0
    )
    files = landed_files(landing_dir, contract)
    old_files = sum(1 for f in files if _landed_at(f) < keep_from)
    rows = remaining(con, contract, landing_dir, landing_dir / ".none", keep_from)["raw_rows"]
    share = max(rows / total if total else 0.0, old_files / len(files) if files else 0.0)
    return {
        "raw_rows": int(rows),
        "raw_rows_total": int(total),
        "landed_files": old_files,
        "landed_files_total": len(files),
        "share": round(share, 4),
    }


def purge(
    con,
    contract: Contract,
    landing_dir: Path,
    quarantine_dir: Path,
    now: datetime,
    state: dict[str, Any],
    run_id: str,
    confirmed: bool = False,
) -> dict[str, Any]:
    """Purge one dataset everywhere; records and returns its report (counts, file names, hashes; no values).

    Unconfirmed, a purge that would remove more than MAX_UNCONFIRMED_SHARE is held: nothing is removed, the previous
    horizon stays enforced, and the report says what is pending and how to confirm."""
    keep_from = horizon(contract, now)
    pending = pending_share(con, contract, landing_dir, keep_from)
    if pending["share"] > MAX_UNCONFIRMED_SHARE and not confirmed:
        return {
            "horizon": keep_from.isoformat(),
            "basis": basis(contract),
            "retention_days": contract.retention_days,
            "held": {
                **pending,
                "max_unconfirmed_share": MAX_UNCONFIRMED_SHARE,
                "as_of": now_iso(now),
                "run_id": run_id,
                "confirm_with": "python -m pipelines retention purge --confirm",
            },
            "last_purge": (state.get(contract.dataset) or {}).get("last_purge", "never purged yet"),
        }
    previously_gone = {
        f["file"] for f in (state.get(contract.dataset) or {}).get("last_purge", {}).get("landing_removed", [])
    }
    landing_removed, landing_rewritten, landed = _purge_landing(landing_dir, contract, keep_from)
    raw_removed = _purge_raw(con, contract, keep_from, landed, previously_gone | {f["file"] for f in landing_removed})
    quarantine_removed, quarantine_rewritten = _purge_quarantine(quarantine_dir, contract, keep_from)
    report = {
        "horizon": keep_from.isoformat(),
        "basis": basis(contract),
        "retention_days": contract.retention_days,
        "last_purge": {
            "at": now_iso(),
            "as_of": now_iso(now),
            "run_id": run_id,
            "raw_rows_removed": int(raw_removed),
            "landing_removed": landing_removed,
            "landing_rewritten": landing_rewritten,
            "landing_rows_removed": sum(f.get("rows_removed", 0) for f in landing_rewritten),
            "quarantine_removed": quarantine_removed,
            "quarantine_rewritten": quarantine_rewritten,
        },
    }
    state[contract.dataset] = report
    return report


def remaining(con, contract: Contract, landing_dir: Path, quarantine_dir: Path, keep_from: date) -> dict[str, int]:
    """What is still older than the horizon: raw rows, landed files and rows, quarantine entries (all should be 0)."""
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    column = contract.retention.event_date_column
    raw_rows = 0
    if column and contract.dataset in tables:
        raw_rows = con.execute(
            f"SELECT count(*) FROM {quote_ident(contract.dataset)} WHERE CAST({quote_ident(column)} AS DATE) < ?",
            [keep_from],
        ).fetchone()[0]
    files = landed_files(landing_dir, contract)
    old_files = sum(1 for f in files if _landed_at(f) < keep_from)
    if not column and contract.dataset in tables:  # landing-time basis: rows of a file landed before the horizon
        expired = [f.name for f in files if _landed_at(f) < keep_from]
        raw_rows = (
            con.execute(
                f"SELECT count(*) FROM {quote_ident(contract.dataset)} WHERE {SOURCE_FILE_COLUMN} IN (SELECT unnest(?))",
                [expired],
            ).fetchone()[0]
            if expired
            else 0
        )
    folder = quarantine_dir / contract.dataset
    entries = [p for p in folder.glob("*") if p.is_dir()] if folder.is_dir() else []
    old_entries = sum(1 for e in entries if (_first_quarantined(e) or date.min) < keep_from)
    return {"raw_rows": int(raw_rows), "landed_files": old_files, "quarantine_entries": old_entries}
