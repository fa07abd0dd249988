"""A tamper-evident audit log: JSON lines chained by a keyed hash, with its head anchored outside the file.

Every record carries HMAC-SHA256 over its canonical form (which includes the previous record's hash),
computed with a secret audit key from `$PIPELINES_AUDIT_KEY` or `<data_dir>/keys/audit.key`; records hold
only the key's id. Editing, deleting or reordering a record, or re-hashing the chain without the key, breaks
the chain. Anchors (`{"log", "seq", "hash"}` of a record, kept as `audit_head` metadata of the Dagster
materialization that wrote it) reveal what a chain alone cannot: removed tail records and an emptied or
deleted file. Records hold parameters and counts, never personal values.

    python -m pipelines.audit verify [--data-dir DIR] [--log pipeline.jsonl]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.privacy.keys import KeyError_, SecretKey, load_key

if TYPE_CHECKING:
    import dagster as dg

GENESIS = "0" * 64
AUDIT_KEY_ENV = "PIPELINES_AUDIT_KEY"
AUDIT_KEY_FILE = "audit.key"
ANCHOR_METADATA_KEY = "audit_head"
RESERVED_FIELDS = ("seq", "at", "log", "key_id", "prev_hash", "hash")
# domain separation: the same secret used elsewhere by mistake still gives unrelated MACs
_MAC_DOMAIN = b"pipelines-audit-chain-v1\x00"
_TAIL_BLOCK = 65536

KeyArg = SecretKey | Iterable[SecretKey] | None


# --- keys -----------------------------------------------------------------------------------------------


def key_file(path: Path) -> Path:
    """Where a log's local audit key lives: `data/audit/x.jsonl` -> `data/keys/audit.key`."""
    return Path(path).resolve().parent.parent / "keys" / AUDIT_KEY_FILE


def audit_key(path: Path, *, create: bool = True) -> SecretKey:
    """The audit key for a log: `$PIPELINES_AUDIT_KEY`, else the local key file (created if absent)."""
    return load_key(AUDIT_KEY_ENV, key_file(path), create=create)


def _canonical(record: dict[str, Any]) -> bytes:
    """The bytes a record's MAC covers: every field but `hash`, sorted, compact."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")


def _mac(record: dict[str, Any], key: SecretKey) -> str:
    """HMAC-SHA256 of a record under the audit key."""
    return hmac.new(key.secret, _MAC_DOMAIN + _canonical(record), hashlib.sha256).hexdigest()


# --- reading the tail -------------------------------------------------------------------------------------


def _parse(raw: bytes) -> dict[str, Any] | None:
    """The record on a line, or None if the line is not a complete record (torn, blank or damaged)."""
    try:
        record = json.loads(raw)
    except ValueError:  # includes UnicodeDecodeError
        return None
    if isinstance(record, dict) and type(record.get("seq")) is int and isinstance(record.get("hash"), str):
        return record
    return None


def _tail(fd: int) -> tuple[dict[str, Any] | None, bool]:
    """The last complete record in the file, and whether the file ends on a fresh line."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None, True
    fresh = os.pread(fd, 1, size - 1) == b"\n"
    block = _TAIL_BLOCK
    while True:
        start = max(size - block, 0)
        lines = os.pread(fd, size - start, start).split(b"\n")
        for raw in reversed(lines[1:] if start else lines):  # a block's first line may begin mid-record
            record = _parse(raw)
            if record is not None:
                return record, fresh
        if start == 0:
            return None, fresh
        block *= 8


# --- appending --------------------------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    """Make a new directory entry durable (the file's own fsync does not cover its name)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_log(path: Path) -> tuple[int, bool]:
    """An append-only fd on the log, and whether this call created it (owner-only from the start)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
    try:
        return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600), True
    except FileExistsError:
        fd = os.open(path, flags)
    if os.fstat(fd).st_mode & 0o077:
        os.fchmod(fd, 0o600)  # a log written before logs were created owner-only
    return fd, False


def _write_line(fd: int, data: bytes, name: str) -> None:
    """One write of the whole line, then fsync; a short write is an error (it leaves a torn line)."""
    written = os.write(fd, data)
    if written != len(data):
        raise OSError(f"audit log {name}: short write ({written} of {len(data)} bytes; disk full?)")
    os.fsync(fd)


def _new_record(path: Path, event: dict[str, Any], last: dict[str, Any] | None, key: SecretKey) -> dict[str, Any]:
    """The next record, chained to `last` and keyed; normalized to exactly what is stored."""
    record = {
        "seq": last["seq"] + 1 if last else 1,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "log": path.name,
        "key_id": key.key_id,
        **event,
        "prev_hash": last["hash"] if last else GENESIS,
    }
    # round trip so the MAC covers what a reader will parse back (dates as strings, tuples as lists)
    record = json.loads(json.dumps(record, default=str))
    record["hash"] = _mac(record, key)
    return record


def append(path: Path, event: dict[str, Any], *, key: SecretKey | None = None) -> dict[str, Any]:
    """Append one event chained to the last complete record: one write, synced, under an exclusive lock."""
    path = Path(path)
    clash = sorted(set(event) & set(RESERVED_FIELDS))
    if clash:
        raise ValueError(f"audit events cannot set reserved field(s): {', '.join(clash)}")
    key = key or audit_key(path)
    fd, created = _open_log(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        last, fresh = _tail(fd)
        record = _new_record(path, event, last, key)
        # a torn last line (a crash mid-write) is left as it is, and this record starts a fresh line
        line = ("" if fresh else "\n") + json.dumps(record, sort_keys=True) + "\n"
        _write_line(fd, line.encode("utf-8"), path.name)
    finally:
        os.close(fd)  # also releases the lock
    if created:
        _fsync_dir(path.parent)
    return record


# --- anchors ----------------------------------------------------------------------------------------------


def _last_record(path: Path) -> dict[str, Any] | None:
    """The last complete record of a log, read under a shared lock."""
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        return _tail(fd)[0]
    finally:
        os.close(fd)


def anchor(record_or_path: dict[str, Any] | Path | str) -> dict[str, Any]:
    """`{"log", "seq", "hash"}` of a record (as `append` returned it) or of a log's last record."""
    if isinstance(record_or_path, dict):
        record = record_or_path
        return {"log": record["log"], "seq": record["seq"], "hash": record["hash"]}
    path = Path(record_or_path)
    record = _last_record(path)
    if record is None:
        return {"log": path.name, "seq": 0, "hash": GENESIS}
    return {"log": path.name, "seq": record["seq"], "hash": record["hash"]}


def _well_formed(a: Any) -> bool:
    """Whether `a` looks like an anchor: a log name, an int seq and a hash."""
    return (
        isinstance(a, dict)
        and isinstance(a.get("log"), str)
        and type(a.get("seq")) is int
        and isinstance(a.get("hash"), str)
    )


def _anchors_in(value: Any) -> list[dict[str, Any]]:
    """Well-formed anchors in one `audit_head` metadata value (a dict, or a list of them)."""
    value = getattr(value, "value", value)  # JsonMetadataValue -> its data
    items = value if isinstance(value, list) else [value]
    return [{"log": a["log"], "seq": a["seq"], "hash": a["hash"]} for a in items if _well_formed(a)]


def _materializations(instance: dg.DagsterInstance, asset_key: dg.AssetKey) -> Iterator[Any]:
    """Every materialization record of one asset, page by page."""
    cursor = None
    while True:
        result = instance.fetch_materializations(asset_key, limit=1000, cursor=cursor)
        yield from result.records
        if not result.has_more:
            return
        cursor = result.cursor


def all_anchors(instance: dg.DagsterInstance) -> list[dict[str, Any]]:
    """Every anchor recorded on the instance, each with the run and asset that recorded it."""
    anchors = []
    for asset_key in instance.get_asset_keys():
        for record in _materializations(instance, asset_key):
            materialization = record.asset_materialization
            if materialization is None or ANCHOR_METADATA_KEY not in materialization.metadata:
                continue
            for a in _anchors_in(materialization.metadata[ANCHOR_METADATA_KEY]):
                anchors.append(a | {"run_id": record.run_id, "asset": asset_key.to_user_string()})
    return anchors


def anchors_from_instance(instance: dg.DagsterInstance, log_name: str) -> list[dict[str, Any]]:
    """The anchors of one log (by file name) read back from the instance's materialization metadata."""
    return [a for a in all_anchors(instance) if a["log"] == log_name]


# --- verifying --------------------------------------------------------------------------------------------


@dataclass
class _Scan:
    """What a pass over a log found: problems, and each complete record's line and hash by seq."""

    name: str
    lines: int = 0
    records: int = 0
    problems: list[str] = field(default_factory=list)
    by_seq: dict[int, tuple[int, str]] = field(default_factory=dict)


def _read_lines(path: Path) -> list[bytes]:
    """The log's lines as bytes; a final newline does not make an extra line."""
    data = path.read_bytes()
    if not data:
        return []
    lines = data.split(b"\n")
    return lines[:-1] if data.endswith(b"\n") else lines


def _keys(key: KeyArg, path: Path) -> dict[str, SecretKey]:
    """The keys to verify with, by id: the ones given, else the log's audit key (never created here)."""
    if key is None:
        key = audit_key(path, create=False)
    keys = [key] if isinstance(key, SecretKey) else list(key)
    return {k.key_id: k for k in keys}


def _record_problem(record: dict[str, Any], expected: int, previous: str, keys: dict[str, SecretKey]) -> str | None:
    """Why a complete record does not verify in its place, or None."""
    if record["seq"] != expected:
        return f"sequence {record['seq']} where {expected} was expected (a record was removed or reordered)"
    if record.get("prev_hash") != previous:
        return "does not chain to the record before it (a record was removed, reordered or replaced)"
    key = keys.get(record.get("key_id"))  # type: ignore[arg-type]
    if key is None:
        if "key_id" not in record:
            return "has no audit key id (an unkeyed record: the chain was re-hashed, or written before it was keyed)"
        known = ", ".join(keys) or "none"
        return f"keyed with {record['key_id']}, not with the audit key ({known}): re-hashed with another key, or an old key is missing"
    if not hmac.compare_digest(_mac(record, key), record["hash"]):
        return "content does not match its hash (edited, or re-hashed without the audit key)"
    return None


def _torn_problem(name: str, number: int, raw: bytes, after: str) -> str:
    """The message for an incomplete line; `after` says what follows it."""
    blank = " (a blank line)" if not raw.strip() else ""
    return f"{name} line {number} is torn (an incomplete write, likely a crash){blank}; {after}"


def _scan(name: str, lines: Sequence[bytes], keys: dict[str, SecretKey]) -> _Scan:
    """Walk the chain; an incomplete line is skipped, and the next record must chain past it."""
    scan = _Scan(name, lines=len(lines))
    previous, expected, pending = GENESIS, 1, []
    for number, raw in enumerate(lines, start=1):
        record = _parse(raw)
        if record is None:
            pending.append((number, raw))
            continue
        chains = record["seq"] == expected and record.get("prev_hash") == previous
        for torn_number, torn_raw in pending:
            if chains:
                scan.problems.append(_torn_problem(name, torn_number, torn_raw, "the records after it chain past it"))
            else:
                scan.problems.append(
                    f"{name} line {torn_number} is not a complete record and the record after it does not chain past it (edited or damaged)"
                )
        pending = []
        problem = _record_problem(record, expected, previous, keys)
        if problem:
            scan.problems.append(f"{name} line {number}: {problem}")
        scan.by_seq[record["seq"]] = (number, record["hash"])
        scan.records += 1
        previous, expected = record["hash"], record["seq"] + 1  # resynchronize, so later problems are found too
    for torn_number, torn_raw in pending:
        scan.problems.append(
            _torn_problem(
                name, torn_number, torn_raw, "it is the end of the log, and the next append starts a fresh line"
            )
        )
    return scan


def _who(a: dict[str, Any]) -> str:
    """Who recorded an anchor, for messages (run ids are not personal data)."""
    return f"run {a['run_id'][:8]}" if a.get("run_id") else "a caller"


def _anchor_problems(scan: _Scan, anchors: Sequence[dict[str, Any]]) -> list[str]:
    """Anchored records that are gone from the log or changed in it."""
    name, last_seq = scan.name, max(scan.by_seq, default=0)
    problems, beyond = [], [a for a in anchors if a["seq"] > last_seq]
    if beyond:
        top = max(beyond, key=lambda a: a["seq"])
        if scan.records == 0:
            problems.append(
                f"{name} line 1: the log holds no records, but seq {top['seq']} was anchored by {_who(top)}: it was emptied"
            )
        else:
            problems.append(
                f"{name} line {scan.lines}: the log ends at seq {last_seq}, but seq {top['seq']} was anchored by {_who(top)}: records were deleted from its end"
            )
    for a in anchors:
        if 0 < a["seq"] <= last_seq and a["seq"] not in scan.by_seq:
            problems.append(f"{name}: seq {a['seq']}, anchored by {_who(a)}, is not in the log: it was deleted")
        elif a["seq"] in scan.by_seq and scan.by_seq[a["seq"]][1] != a["hash"]:
            line = scan.by_seq[a["seq"]][0]
            problems.append(
                f"{name} line {line}: seq {a['seq']} has another hash than the one anchored by {_who(a)}: the log was rewritten"
            )
    return problems


def _summary(scan: _Scan, anchors: Sequence[dict[str, Any]], problems: list[str]) -> tuple[bool, str]:
    """(ok, message): the first problem and how many more, or the success line."""
    if problems:
        more = f" (+{len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        return False, problems[0] + more
    message = f"{scan.records} records, chain intact"
    if anchors:
        runs = {a.get("run_id") or f"#{i}" for i, a in enumerate(anchors)}
        message += f", head anchored by {len(runs)} run(s)"
    return True, message


def verify(path: Path, *, key: KeyArg = None, anchors: Iterable[dict[str, Any]] = ()) -> tuple[bool, str]:
    """Check the whole chain and the anchors of this log; returns (ok, message naming the log and line)."""
    path = Path(path)
    name = path.name
    # an anchor at seq 0 was taken of an empty or absent log: it proves nothing
    anchors = [a for a in anchors if _well_formed(a) and a["log"] == name and a["seq"] > 0]
    if not path.exists():
        if anchors:
            top = max(a["seq"] for a in anchors)
            return (
                False,
                f"{name}: the log is missing, but {len(anchors)} anchor(s) recorded it up to seq {top}: it was deleted",
            )
        return True, "no audit log yet"
    lines = _read_lines(path)
    try:
        keys = _keys(key, path) if lines else {}
    except KeyError_ as error:  # names the env var or key file, never a secret
        return False, f"{name}: cannot verify without the audit key: {error}"
    scan = _scan(name, lines, keys)
    return _summary(scan, anchors, scan.problems + _anchor_problems(scan, anchors))


# --- command line -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _dagster_home(home: Path) -> Iterator[None]:
    """Point `$DAGSTER_HOME` at `home` for the duration (DagsterInstance.get reads it)."""
    before = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = before


def _instance_anchors(data_dir: Path) -> tuple[list[dict[str, Any]] | None, str]:
    """Anchors from the instance at $DAGSTER_HOME (default <data_dir>/dagster_home), or None and why not."""
    home = Path(os.environ.get("DAGSTER_HOME") or data_dir / "dagster_home").resolve()
    if not home.is_dir():
        return (
            [],
            f"no Dagster instance at {home}: verified without anchors (removed tail records or a deleted log go undetected)",
        )
    import dagster as dg  # only here: appending must not pay for importing Dagster

    try:
        with _dagster_home(home), dg.DagsterInstance.get() as instance:
            anchors = all_anchors(instance)
    except Exception as error:  # noqa: BLE001 - any storage failure means the anchors are unknown
        return None, f"could not read anchors from the Dagster instance at {home}: {type(error).__name__}"
    return anchors, f"{len(anchors)} anchor(s) from the Dagster instance at {home}"


def _log_names(audit_dir: Path, only: str | None, anchors: Sequence[dict[str, Any]]) -> list[str]:
    """The logs to verify: the one named, else every *.jsonl file and every log an anchor names."""
    if only:
        return [only]
    return sorted({p.name for p in audit_dir.glob("*.jsonl")} | {a["log"] for a in anchors})


def _parser() -> argparse.ArgumentParser:
    """`audit verify [--data-dir DIR] [--log NAME]`."""
    parser = argparse.ArgumentParser(prog="audit", description="Check the tamper-evident audit logs.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("verify", help="verify every log under <data_dir>/audit against its key and anchors")
    check.add_argument("--data-dir", type=Path, help="default: $PIPELINES_DATA_DIR or the project's data/")
    check.add_argument("--log", help="one log's file name under <data_dir>/audit, e.g. pipeline.jsonl (default: all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """`audit verify`: one line per log; exit status 0 only if every log verifies."""
    args = _parser().parse_args(argv)
    if args.log and Path(args.log).name != args.log:
        print(f"--log takes a file name under <data_dir>/audit, not a path: {args.log}", file=sys.stderr)
        return 2
    from pipelines.resources import default_data_dir

    data_dir = (args.data_dir or default_data_dir()).resolve()
    anchors, note = _instance_anchors(data_dir)
    print(note)
    ok_all = anchors is not None
    anchors = anchors or []
    names = _log_names(data_dir / "audit", args.log, anchors)
    if not names:
        print(f"no audit logs under {data_dir / 'audit'}")
    for name in names:
        ok, message = verify(data_dir / "audit" / name, anchors=anchors)
        print(f"ok    {name}: {message}" if ok else f"FAIL  {message}")
        ok_all = ok_all and ok
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
