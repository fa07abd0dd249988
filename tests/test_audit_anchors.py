"""The audit head is anchored in Dagster materialization metadata, read back, and checked by `audit verify`."""

import json
import subprocess
import sys

import dagster as dg
import pytest

from pipelines import audit
from pipelines.resources import PROJECT_ROOT


@pytest.fixture(autouse=True)
def _local_audit_key(monkeypatch):
    """Keys come from `<data_dir>/keys/audit.key`, never from the caller's environment."""
    monkeypatch.delenv(audit.AUDIT_KEY_ENV, raising=False)


def _appending_asset(log):
    """A tiny asset that appends to `log` and anchors the record as callers will: `audit_head` JSON metadata."""

    @dg.asset(name="audited")
    def audited(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        record = audit.append(log, {"action": "test", "run_id": context.run_id})
        return dg.MaterializeResult(metadata={audit.ANCHOR_METADATA_KEY: dg.MetadataValue.json(audit.anchor(record))})

    return audited


def _materialize(log, instance, times):
    asset = _appending_asset(log)
    for _ in range(times):
        assert dg.materialize([asset], instance=instance).success


def test_anchors_from_instance_reads_audit_head_back(tmp_path):
    log = tmp_path / "audit" / "pipeline.jsonl"
    with dg.DagsterInstance.ephemeral() as instance:
        _materialize(log, instance, 3)
        anchors = audit.anchors_from_instance(instance, "pipeline.jsonl")
        assert audit.anchors_from_instance(instance, "reidentification.jsonl") == []
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(a["seq"] for a in anchors) == [1, 2, 3]
    assert {(a["seq"], a["hash"], a["run_id"]) for a in anchors} == {
        (r["seq"], r["hash"], r["run_id"]) for r in records
    }
    assert {a["asset"] for a in anchors} == {"audited"}
    assert audit.verify(log, anchors=anchors) == (True, "3 records, chain intact, head anchored by 3 run(s)")

    log.write_text("".join(line + "\n" for line in log.read_text().splitlines()[:1]))  # the tail deleted
    ok, message = audit.verify(log, anchors=anchors)
    assert not ok and message.startswith("pipeline.jsonl line 1: the log ends at seq 1, but seq 3 was anchored by run ")


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A data dir whose Dagster instance (at the default `<data_dir>/dagster_home`) anchored two runs."""
    data = tmp_path / "data"
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("PIPELINES_DATA_DIR", str(data))
    home = data / "dagster_home"
    home.mkdir(parents=True)
    with audit._dagster_home(home), dg.DagsterInstance.get() as instance:
        _materialize(data / "audit" / "pipeline.jsonl", instance, 2)
    audit.append(data / "audit" / "reidentification.jsonl", {"action": "decrypt"})  # unanchored: no run writes it
    return data


def test_main_passes_intact_logs(data_dir, capsys):
    assert audit.main(["verify", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"2 anchor(s) from the Dagster instance at {data_dir / 'dagster_home'}"
    assert out[1:] == [
        "ok    pipeline.jsonl: 2 records, chain intact, head anchored by 2 run(s)",
        "ok    reidentification.jsonl: 1 records, chain intact",
    ]
    assert audit.main(["verify"]) == 0  # the data dir from $PIPELINES_DATA_DIR


def test_main_fails_on_an_edited_record_naming_log_and_line(data_dir, capsys):
    log = data_dir / "audit" / "pipeline.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join([json.dumps(json.loads(lines[0]) | {"action": "nothing to see"}), *lines[1:]]) + "\n")
    assert audit.main(["verify", "--data-dir", str(data_dir)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  pipeline.jsonl line 1: content does not match its hash" in out
    assert "ok    reidentification.jsonl" in out
    assert audit.main(["verify", "--data-dir", str(data_dir), "--log", "reidentification.jsonl"]) == 0


def test_main_fails_on_a_deleted_log_found_through_the_instance(data_dir, capsys):
    (data_dir / "audit" / "pipeline.jsonl").unlink()
    assert audit.main(["verify", "--data-dir", str(data_dir)]) == 1
    assert (
        "FAIL  pipeline.jsonl: the log is missing, but 2 anchor(s) recorded it up to seq 2: it was deleted"
        in capsys.readouterr().out
    )


def test_main_without_an_instance_says_so_and_reports_a_torn_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    log = tmp_path / "audit" / "pipeline.jsonl"
    audit.append(log, {"action": "x"})
    assert audit.main(["verify", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith(
        f"no Dagster instance at {tmp_path / 'dagster_home'}: verified without anchors"
    )
    with log.open("a") as f:
        f.write('{"seq": 2, "act')
    assert audit.main(["verify", "--data-dir", str(tmp_path)]) == 1
    assert "FAIL  pipeline.jsonl line 2 is torn (an incomplete write, likely a crash)" in capsys.readouterr().out


def test_main_rejects_a_path_as_log_name(tmp_path, capsys):
    assert audit.main(["verify", "--data-dir", str(tmp_path), "--log", "../keys/audit.key"]) == 2


def test_module_runs_standalone(data_dir):
    command = [sys.executable, "-m", "pipelines.audit", "verify", "--data-dir", str(data_dir)]
    intact = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert intact.returncode == 0, intact.stderr
    (data_dir / "audit" / "pipeline.jsonl").write_text("")
    emptied = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert emptied.returncode == 1 and "FAIL  pipeline.jsonl line 1: the log holds no records" in emptied.stdout
