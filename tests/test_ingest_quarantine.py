"""Quarantine of rejected files: owner-only from creation, one copy per content, purged after retention."""

import json
import os
import stat
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import pipelines.ingest as ingest
from pipelines.ingest import IngestError, purge_quarantine, quarantine

CONTENT = b"employee_id,full_name\nE0000001,Zoe Example\n"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def umask(value: int):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def landed(tmp_path) -> Path:
    path = tmp_path / "landing" / "hr" / "employees_2026-02-28.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(CONTENT)
    path.chmod(0o644)
    return path


def reject(path: Path, qdir: Path, run_id: str = "run-1", problem: str = "nul_byte") -> Path:
    return quarantine(
        path, qdir, IngestError(problem, f"{path.name} contains NUL bytes"), dataset="hr_employees", run_id=run_id
    )


@pytest.mark.parametrize("mask", [0o000, 0o022])
def test_folders_0700_and_files_0600(tmp_path, landed, mask):
    with umask(mask):
        folder = reject(landed, tmp_path / "quarantine")
    for d in (tmp_path / "quarantine", folder.parent, folder):
        assert mode(d) == 0o700, d
    files = list(folder.iterdir())
    assert {f.name for f in files} == {landed.name, "reason.json"}
    for f in files:
        assert mode(f) == 0o600, f
    assert (folder / landed.name).read_bytes() == CONTENT
    assert landed.read_bytes() == CONTENT and mode(landed) == 0o644  # the landed file is left as it was


def test_modes_come_from_creation_not_a_later_chmod(tmp_path, landed, monkeypatch):
    """With chmod and fchmod disabled, the modes given to mkdir/open/mkstemp alone must make it owner-only."""
    monkeypatch.setattr(ingest.os, "chmod", lambda *a, **k: None)
    monkeypatch.setattr(ingest.os, "fchmod", lambda *a, **k: None)
    with umask(0o022):
        folder = reject(landed, tmp_path / "quarantine")
    assert mode(folder) == mode(folder.parent) == 0o700
    assert {mode(f) for f in folder.iterdir()} == {0o600}


def test_existing_open_folders_are_tightened(tmp_path, landed):
    qdir = tmp_path / "quarantine"
    (qdir / "hr_employees").mkdir(parents=True)
    qdir.chmod(0o755)
    (qdir / "hr_employees").chmod(0o755)
    reject(landed, qdir)
    assert mode(qdir) == mode(qdir / "hr_employees") == 0o700


def test_identical_files_kept_once_with_every_rejection(tmp_path, landed):
    qdir = tmp_path / "quarantine"
    first = reject(landed, qdir, "run-1")
    again = reject(landed, qdir, "run-2", problem="schema_drift")
    renamed = landed.with_name("employees_2026-03-01.csv")
    renamed.write_bytes(CONTENT)
    same_content = reject(renamed, qdir, "run-3")
    assert first == again == same_content
    assert [p.name for p in (qdir / "hr_employees").iterdir()] == [first.name]
    assert first.name.startswith(ingest.file_sha256(landed)[:16] + "_")
    assert sorted(p.name for p in first.iterdir()) == [landed.name, "reason.json"]
    reason = json.loads((first / "reason.json").read_text())
    assert [r["run_id"] for r in reason["rejections"]] == ["run-1", "run-2", "run-3"]
    assert [r["problem"] for r in reason["rejections"]] == ["nul_byte", "schema_drift", "nul_byte"]
    assert reason["rejections"][2]["file"] == renamed.name
    assert all(set(r) == {"run_id", "at", "file", "problem", "message"} for r in reason["rejections"])
    assert reason["sha256"] == ingest.file_sha256(landed) and reason["file"] == landed.name
    assert reason["first_quarantined_at"] == reason["rejections"][0]["at"]
    assert "Zoe Example" not in (first / "reason.json").read_text()


def test_other_content_gets_its_own_folder(tmp_path, landed):
    qdir = tmp_path / "quarantine"
    a = reject(landed, qdir)
    landed.write_bytes(CONTENT + b"E0000002,Another One\n")
    b = reject(landed, qdir)
    assert a != b and len(list((qdir / "hr_employees").iterdir())) == 2


def _age(folder: Path, days: float, now: datetime) -> None:
    """Make an entry look first quarantined `days` before `now`."""
    reason = json.loads((folder / "reason.json").read_text())
    reason["first_quarantined_at"] = (now - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    (folder / "reason.json").write_text(json.dumps(reason))


def test_purge_removes_exactly_the_old_entries(tmp_path, landed):
    qdir = tmp_path / "quarantine"
    now = datetime(2026, 3, 31, 12, tzinfo=UTC)
    entries = {}
    for days in (45, 31, 29, 1):
        landed.write_bytes(CONTENT + f"E{days:07d},Someone Else\n".encode())
        entries[days] = reject(landed, qdir)
        _age(entries[days], days, now)
    legacy = qdir / "hr_employees" / "20260101T000000Z_employees_old.csv"  # the one-copy-per-run format before
    legacy.mkdir(mode=0o700)
    (legacy / "reason.json").write_text(json.dumps({"sha256": "ab" * 32, "quarantined_at": "20260101T000000Z"}))
    removed = purge_quarantine(qdir, 30, now=now)
    assert sorted(r["folder"] for r in removed) == sorted([entries[45].name, entries[31].name, legacy.name])
    assert all(set(r) == {"dataset", "folder", "sha256", "age_days"} for r in removed)
    by_folder = {r["folder"]: r for r in removed}
    assert {r["dataset"] for r in removed} == {"hr_employees"}
    assert by_folder[entries[45].name]["age_days"] == 45.0 and by_folder[legacy.name]["age_days"] == 89.5
    assert by_folder[entries[31].name]["sha256"].startswith(entries[31].name[:16])
    assert sorted(p.name for p in (qdir / "hr_employees").iterdir()) == sorted([entries[29].name, entries[1].name])
    assert purge_quarantine(qdir, 30, now=now) == []


def test_purge_reports_the_content_hash(tmp_path, landed):
    qdir = tmp_path / "quarantine"
    folder = reject(landed, qdir)
    (removed,) = purge_quarantine(qdir, 0, now=datetime.now(UTC) + timedelta(days=2))
    assert removed["sha256"] == ingest.file_sha256(landed) and removed["dataset"] == "hr_employees"
    assert not folder.exists()


def test_purge_by_first_quarantine_not_last(tmp_path, landed):
    """A file rejected again every day still goes once its first copy is older than the retention."""
    qdir = tmp_path / "quarantine"
    now = datetime.now(UTC)
    folder = reject(landed, qdir)
    _age(folder, 40, now)
    reject(landed, qdir, "run-2")  # rejected again today
    assert [r["folder"] for r in purge_quarantine(qdir, 30, now=now)] == [folder.name]


def test_purge_removes_half_done_copies(tmp_path, landed):
    qdir = tmp_path / "quarantine"
    reject(landed, qdir)
    orphan = qdir / "hr_employees" / ".incoming-abc"
    orphan.write_bytes(CONTENT)
    purge_quarantine(qdir, 30)
    assert not orphan.exists() and len(list((qdir / "hr_employees").iterdir())) == 1


def test_purge_of_a_missing_quarantine_is_empty(tmp_path):
    assert purge_quarantine(tmp_path / "nothing", 30) == []
