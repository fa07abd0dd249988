"""The audit log is tamper-evident; break-glass re-identification is refused unless enabled, and audited."""

import hashlib
import json
import multiprocessing
import os
import stat

import pandas as pd
import pytest

from pipelines import audit
from pipelines.contracts import Column
from pipelines.privacy import reidentify as reid
from pipelines.privacy.keys import SecretKey, fingerprint, load_key
from pipelines.privacy.operators import apply_column
from tests.test_operators import CTX


@pytest.fixture(autouse=True)
def _local_audit_key(monkeypatch):
    """Each test keys its logs with `<tmp>/keys/audit.key`, never a key from the caller's environment."""
    monkeypatch.delenv(audit.AUDIT_KEY_ENV, raising=False)


@pytest.fixture
def log(tmp_path):
    return tmp_path / "audit" / "pipeline.jsonl"


def _fill(log, n=4):
    return [audit.append(log, {"action": "x", "n": i}) for i in range(n)]


def _lines(log):
    return log.read_text().splitlines()


def _write(log, lines):
    log.write_text("".join(line + "\n" for line in lines))


def _rehash(log, digest, key_id=None):
    """Rewrite the whole chain the way a forger without the audit key would: same records, new hashes."""
    previous, lines = audit.GENESIS, []
    for line in _lines(log):
        record = json.loads(line) | {"prev_hash": previous}
        if key_id is not None:
            record["key_id"] = key_id
        record["n"] = record.get("n", 0) + 100  # the forger's edit
        record["hash"] = previous = digest(record)
        lines.append(json.dumps(record, sort_keys=True))
    _write(log, lines)


def _other_key():
    secret = b"another-audit-key-not-the-real-one-0123456789"
    return SecretKey(fingerprint(secret), "test", secret)


def test_intact_chain_carries_the_key_id_never_the_key(log):
    records = _fill(log)
    key = audit.audit_key(log)
    assert audit.verify(log) == (True, "4 records, chain intact")
    assert [json.loads(line) for line in _lines(log)] == records
    assert {r["key_id"] for r in records} == {key.key_id}
    assert key.secret.decode() not in log.read_text()
    assert audit.key_file(log) == log.parent.parent / "keys" / "audit.key"


def test_edited_record_is_detected(log):
    _fill(log)
    lines = _lines(log)
    _write(log, [lines[0], json.dumps(json.loads(lines[1]) | {"n": 99}), *lines[2:]])
    assert audit.verify(log) == (
        False,
        "pipeline.jsonl line 2: content does not match its hash (edited, or re-hashed without the audit key)",
    )


@pytest.mark.parametrize("keep_key_id", [True, False])
def test_chain_rehashed_with_plain_sha256_is_detected(log, keep_key_id):
    _fill(log)
    _rehash(
        log, lambda r: hashlib.sha256(audit._canonical(r)).hexdigest(), key_id=None if keep_key_id else "k-000000000000"
    )
    ok, message = audit.verify(log)
    assert not ok and message.startswith("pipeline.jsonl line 1: ")
    assert ("content does not match its hash" if keep_key_id else "keyed with k-000000000000") in message


@pytest.mark.parametrize("claim_real_key_id", [True, False])
def test_chain_rehashed_with_another_key_is_detected(log, claim_real_key_id):
    _fill(log)
    other = _other_key()
    _rehash(log, lambda r: audit._mac(r, other), key_id=None if claim_real_key_id else other.key_id)
    ok, message = audit.verify(log)
    assert not ok and message.startswith("pipeline.jsonl line 1: ")
    assert ("content does not match its hash" if claim_real_key_id else f"keyed with {other.key_id}") in message
    assert audit.verify(log, key=other)[0] is (not claim_real_key_id)  # a valid chain, but under the forger's key


def test_deleted_middle_record_is_detected(log):
    _fill(log)
    lines = _lines(log)
    _write(log, [lines[0], *lines[2:]])
    ok, message = audit.verify(log)
    assert not ok and message.startswith(
        "pipeline.jsonl line 2: sequence 3 where 2 was expected (a record was removed or reordered)"
    )


def test_reordered_lines_are_detected(log):
    _fill(log)
    lines = _lines(log)
    _write(log, [lines[0], lines[2], lines[1], lines[3]])
    ok, message = audit.verify(log)
    assert not ok and message.startswith("pipeline.jsonl line 2: ") and "removed or reordered" in message


def test_deleted_tail_is_detected_through_an_anchor(log):
    anchors = [audit.anchor(r) for r in _fill(log)]
    _write(log, _lines(log)[:2])
    assert audit.verify(log) == (True, "2 records, chain intact")  # the chain alone cannot tell
    ok, message = audit.verify(log, anchors=anchors)
    assert not ok
    assert message.startswith(
        "pipeline.jsonl line 2: the log ends at seq 2, but seq 4 was anchored by a caller: records were deleted from its end"
    )


def test_emptied_file_is_detected_through_an_anchor(log):
    anchors = [audit.anchor(log)]
    _fill(log)
    anchors.append(audit.anchor(log))
    log.write_text("")
    assert audit.verify(log) == (True, "0 records, chain intact")
    ok, message = audit.verify(log, anchors=anchors)
    assert (
        not ok
        and message
        == "pipeline.jsonl line 1: the log holds no records, but seq 4 was anchored by a caller: it was emptied"
    )


def test_deleted_file_is_detected_through_anchors(log):
    anchors = [audit.anchor(r) for r in _fill(log)]
    log.unlink()
    assert audit.verify(log) == (True, "no audit log yet")
    ok, message = audit.verify(log, anchors=anchors)
    assert (
        not ok
        and message == "pipeline.jsonl: the log is missing, but 4 anchor(s) recorded it up to seq 4: it was deleted"
    )
    assert audit.verify(log, anchors=[a | {"log": "other.jsonl"} for a in anchors])[
        0
    ]  # anchors of other logs do not count


def test_log_replaced_by_a_new_chain_is_detected_through_an_anchor(log):
    anchors = [audit.anchor(r) for r in _fill(log, 3)]
    log.unlink()
    for i in range(5):  # a valid chain with the real key, but not the one the runs saw
        audit.append(log, {"action": "replacement", "n": i})
    assert audit.verify(log) == (True, "5 records, chain intact")
    ok, message = audit.verify(log, anchors=anchors)
    assert not ok and message.startswith(
        "pipeline.jsonl line 1: seq 1 has another hash than the one anchored by a caller: the log was rewritten"
    )


def test_anchors_of_an_intact_log_pass(log):
    anchors = [audit.anchor(r) | {"run_id": f"run-{i}"} for i, r in enumerate(_fill(log))]
    assert audit.verify(log, anchors=anchors) == (True, "4 records, chain intact, head anchored by 4 run(s)")
    assert audit.anchor(log) == {k: anchors[-1][k] for k in ("log", "seq", "hash")}


def _crash_mid_write(log):
    """What a kill -9 in the middle of a write leaves: the first half of a record, no newline."""
    line = json.dumps({"seq": 99, "action": "x", "hash": "f" * 64})
    with log.open("a") as f:
        f.write(line[: len(line) // 2])


def test_torn_last_line_is_reported_and_never_blocks_an_append(log):
    records = _fill(log, 3)
    _crash_mid_write(log)
    ok, message = audit.verify(log)
    assert not ok
    assert message == (
        "pipeline.jsonl line 4 is torn (an incomplete write, likely a crash); "
        "it is the end of the log, and the next append starts a fresh line"
    )
    after = audit.append(log, {"action": "after the crash"})
    assert (after["seq"], after["prev_hash"]) == (4, records[-1]["hash"])
    assert json.loads(_lines(log)[4]) == after  # on a fresh line of its own
    audit.append(log, {"action": "and another"})
    ok, message = audit.verify(log)
    assert not ok  # still reported: a crash happened
    assert (
        message
        == "pipeline.jsonl line 4 is torn (an incomplete write, likely a crash); the records after it chain past it"
    )


def test_blank_last_line_is_reported_and_never_blocks_an_append(log):
    records = _fill(log, 2)
    with log.open("a") as f:
        f.write("\n")
    assert audit.verify(log) == (
        False,
        "pipeline.jsonl line 3 is torn (an incomplete write, likely a crash) (a blank line); "
        "it is the end of the log, and the next append starts a fresh line",
    )
    after = audit.append(log, {"action": "after"})
    assert (after["seq"], after["prev_hash"]) == (3, records[-1]["hash"])
    ok, message = audit.verify(log)
    assert not ok and message.startswith("pipeline.jsonl line 3 is torn") and "chain past it" in message


def test_a_middle_line_cut_short_is_not_mistaken_for_a_crash(log):
    _fill(log)
    lines = _lines(log)
    _write(log, [lines[0], lines[1][:40], *lines[2:]])
    ok, message = audit.verify(log)
    assert not ok
    assert message.startswith(
        "pipeline.jsonl line 2 is not a complete record and the record after it does not chain past it (edited or damaged)"
    )


def test_a_new_log_is_owner_only_from_creation(log):
    previous = os.umask(0)  # the mode must come from the open, not from a umask or a later chmod
    try:
        audit.append(log, {"action": "x"})
    finally:
        os.umask(previous)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_an_old_world_readable_log_is_made_owner_only(log):
    _fill(log, 1)
    log.chmod(0o644)
    audit.append(log, {"action": "x"})
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def _append_many(path, worker, count):
    for i in range(count):
        audit.append(path, {"action": "concurrent", "worker": worker, "i": i})


def test_concurrent_appends_keep_a_valid_chain(log):
    audit.append(log, {"action": "first"})  # creates the key before the workers race for it
    workers = [multiprocessing.get_context("fork").Process(target=_append_many, args=(log, w, 25)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert audit.verify(log) == (True, "101 records, chain intact")
    records = [json.loads(line) for line in _lines(log)]
    assert [r["seq"] for r in records] == list(range(1, 102))
    assert sorted((r["worker"], r["i"]) for r in records[1:]) == [(w, i) for w in range(4) for i in range(25)]


def test_explicit_keys_and_a_rotated_key(log):
    old, new = _other_key(), load_key("UNSET_TEST_AUDIT_KEY", log.parent / "new.key")
    audit.audit_key(log)  # the default key exists, but it is not the one that signed
    audit.append(log, {"action": "x"}, key=old)
    assert audit.verify(log, key=old) == (True, "1 records, chain intact")
    assert not audit.verify(log)[0] and f"keyed with {old.key_id}" in audit.verify(log)[1]
    audit.append(log, {"action": "y"}, key=new)
    assert audit.verify(log, key=[old, new]) == (True, "2 records, chain intact")
    assert not audit.verify(log, key=new)[0]


def test_the_key_comes_from_the_environment_when_set(log, monkeypatch):
    monkeypatch.setenv(audit.AUDIT_KEY_ENV, "e" * 40)
    record = audit.append(log, {"action": "x"})
    assert record["key_id"] == fingerprint(b"e" * 40) and not audit.key_file(log).exists()
    assert audit.verify(log)[0]
    monkeypatch.delenv(audit.AUDIT_KEY_ENV)
    ok, message = audit.verify(log)  # no key at all now: refuse, naming where a key is looked for
    assert (
        not ok and message.startswith("pipeline.jsonl: cannot verify without the audit key") and "e" * 40 not in message
    )


def test_reserved_fields_cannot_be_set_by_an_event(log):
    with pytest.raises(ValueError, match="reserved field.*key_id") as error:
        audit.append(log, {"action": "x", "key_id": "secret-looking-value"})
    assert "secret-looking-value" not in str(error.value) and not log.exists()


def test_an_unkeyed_legacy_log_does_not_verify(log):
    log.parent.mkdir(parents=True)
    record = {"seq": 1, "at": "2026-01-01T00:00:00+00:00", "action": "x", "prev_hash": audit.GENESIS}
    record["hash"] = hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    audit.audit_key(log)
    _write(log, [json.dumps(record)])
    ok, message = audit.verify(log)
    assert not ok and message.startswith("pipeline.jsonl line 1: has no audit key id")


def test_break_glass_refused_by_default(monkeypatch):
    monkeypatch.delenv("PIPELINES_ENABLE_REIDENTIFICATION", raising=False)
    with pytest.raises(PermissionError, match="disabled"):
        reid.reidentify("x", dataset="d", column="c", reason="legal hold INC-1", requested_by="me")


def test_break_glass_round_trip_is_audited_without_the_value(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINES_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PIPELINES_ENABLE_REIDENTIFICATION", "1")
    monkeypatch.delenv("PIPELINES_REIDENTIFICATION_KEY", raising=False)
    key = load_key("PIPELINES_REIDENTIFICATION_KEY", tmp_path / "keys" / "reidentification.key")
    ctx = CTX.__class__(CTX.pseudonym_key, CTX.run_date, CTX.hierarchies_dir, key)
    column = Column(
        name="full_name", type="string", role="direct_identifier", entity="PERSON", deidentify={"operator": "encrypt"}
    )
    token = apply_column(pd.Series(["Ada Lovelace"]), column, ctx)[0][0]
    with pytest.raises(ValueError, match="reason"):
        reid.reidentify(token, dataset="hr_employees", column="full_name", reason="why", requested_by="me")
    assert (
        reid.reidentify(
            token, dataset="hr_employees", column="full_name", reason="court order 2026-117", requested_by="DPO"
        )
        == "Ada Lovelace"
    )
    log = (tmp_path / reid.AUDIT_FILE).read_text()
    assert "court order 2026-117" in log and key.key_id in log and "Ada" not in log
    record = json.loads(log.splitlines()[-1])
    assert (
        record["reidentification_key_id"] == key.key_id
        and record["key_id"] == audit.audit_key(tmp_path / reid.AUDIT_FILE).key_id
    )
    assert audit.verify(tmp_path / reid.AUDIT_FILE) == (True, "1 records, chain intact")


def test_pipeline_run_is_on_the_audit_log(pipeline_run):
    path = pipeline_run.data_dir / "audit" / "pipeline.jsonl"
    ok, _ = audit.verify(path)
    anchored, message = audit.verify(path, anchors=audit.anchors_from_instance(pipeline_run.instance, "pipeline.jsonl"))
    assert anchored and "head anchored by" in message, message  # every appending step left its anchor
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert ok
    assert {r["dataset"] for r in records if r["action"] == "deidentify"} == {
        "hr_employees",
        "finance_expense_claims",
        "it_security_incidents",
        "support_tickets",
    }
    assert {m for r in records if r["action"] == "publish" for m in r["marts"]} == {
        "mart_org_unit_activity",
        "mart_support_satisfaction",
    }
