"""The audit log is tamper-evident; break-glass re-identification is refused unless enabled, and audited."""

import json

import pandas as pd
import pytest

from pipelines import audit
from pipelines.contracts import Column
from pipelines.privacy import reidentify as reid
from pipelines.privacy.keys import load_key
from pipelines.privacy.operators import apply_column
from tests.test_operators import CTX


def test_chain_detects_edit_removal_and_reorder(tmp_path):
    log = tmp_path / "a.jsonl"
    for i in range(4):
        audit.append(log, {"action": "x", "n": i})
    assert audit.verify(log) == (True, "4 records, chain intact")
    lines = log.read_text().splitlines()

    edited = json.loads(lines[1]) | {"n": 99}
    log.write_text("\n".join([lines[0], json.dumps(edited), *lines[2:]]) + "\n")
    assert audit.verify(log) == (False, "line 2: content does not match its hash (edited)")

    log.write_text("\n".join([lines[0], *lines[2:]]) + "\n")
    assert not audit.verify(log)[0] and "removed or reordered" in audit.verify(log)[1]


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
    column = Column(name="full_name", type="string", role="direct_identifier", entity="PERSON", deidentify={"operator": "encrypt"})
    token = apply_column(pd.Series(["Ada Lovelace"]), column, ctx)[0][0]
    with pytest.raises(ValueError, match="reason"):
        reid.reidentify(token, dataset="hr_employees", column="full_name", reason="why", requested_by="me")
    assert reid.reidentify(token, dataset="hr_employees", column="full_name", reason="court order 2026-117", requested_by="DPO") == "Ada Lovelace"
    log = (tmp_path / reid.AUDIT_FILE).read_text()
    assert "court order 2026-117" in log and key.key_id in log and "Ada" not in log
    assert audit.verify(tmp_path / reid.AUDIT_FILE)[0]


def test_pipeline_run_is_on_the_audit_log(pipeline_run):
    path = pipeline_run.data_dir / "audit" / "pipeline.jsonl"
    ok, _ = audit.verify(path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert ok
    assert {r["dataset"] for r in records if r["action"] == "deidentify"} == {
        "hr_employees", "finance_expense_claims", "it_security_incidents", "support_tickets"}
    assert {r["mart"] for r in records if r["action"] == "publish"} == {"mart_org_unit_activity", "mart_support_satisfaction"}
