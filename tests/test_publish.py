"""Publishing the approved marts: exact dbt types, one transaction for all marts, analysts' locks waited for."""

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from pipelines.defs import marts as marts_module
from pipelines.defs.integration import dbt_project
from pipelines.defs.marts import (
    PUBLISH_LOCK_TIMEOUT_ENV,
    approved_marts,
    contract_columns,
    publish_lock_timeout_from_env,
    publish_marts,
)
from pipelines.governance.approvals import load_manifest
from pipelines.resources import DBT_PROJECT_DIR, PipelineStorage

MARTS = ["mart_org_unit_activity", "mart_support_satisfaction"]
DP_TABLE = "mart_org_unit_activity_dp"  # the DP release mart_org_unit_activity's approval declares
HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
con.execute("select count(*) from mart_org_unit_activity").fetchone()
print("ready", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def _spaced(data_type: str) -> str:
    return "".join(data_type.split()).upper()


def contract_types_from_yml() -> dict[str, dict[str, str]]:
    """The enforced contracts as written in the marts' YAML files (independent of the code under test)."""
    out = {}
    for path in sorted((DBT_PROJECT_DIR / "models" / "marts").glob("*.yml")):
        for model in yaml.safe_load(path.read_text())["models"]:
            if model.get("config", {}).get("meta", {}).get("approval", {}).get("person_level"):
                continue  # people, not aggregates: never published
            out[model["name"]] = {c["name"]: _duckdb_type(c["data_type"]) for c in model["columns"]}
    return out


def _duckdb_type(data_type: str) -> str:
    """The type DuckDB gives a contract's data_type (`string`, portable to Spark, is DuckDB's VARCHAR)."""
    with duckdb.connect() as con:
        return _spaced(str(con.execute(f"SELECT CAST(NULL AS {data_type}) AS x").description[0][1]))


def snapshot(db: Path) -> dict[str, tuple]:
    """Every table of a database with its column types and rows, to compare before and after."""
    with duckdb.connect(str(db), read_only=True) as con:
        tables = [r[0] for r in con.execute("select table_name from duckdb_tables() order by 1").fetchall()]
        return {
            t: (
                con.execute(
                    f"select column_name, data_type from information_schema.columns where table_name = '{t}' order by ordinal_position"
                ).fetchall(),
                sorted(map(str, con.execute(f'select * from "{t}"').fetchall())),
            )
            for t in tables
        }


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def approvals():
    return approved_marts(load_manifest(dbt_project().manifest_path))


@pytest.fixture(scope="module")
def contracts():
    manifest = load_manifest(dbt_project().manifest_path)
    return {m: {c: d["data_type"] for c, d in contract_columns(manifest, m).items()} for m in MARTS}


@pytest.fixture
def storage(pipeline_run, tmp_path) -> PipelineStorage:
    """A copy of the real run's warehouse, marts and audit log, so a test can break them without touching the run."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("warehouse.duckdb", "marts.duckdb"):
        shutil.copy2(pipeline_run.data_dir / name, data / name)
    for folder in ("audit", "keys"):
        if (pipeline_run.data_dir / folder).exists():
            shutil.copytree(pipeline_run.data_dir / folder, data / folder)
    return PipelineStorage(data_dir=str(data))


@pytest.fixture
def hold_marts():
    """Start another process that holds marts.duckdb open read-only for `seconds`, like an analyst's session."""
    started = []

    def start(db: Path, seconds: float) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(db), str(seconds)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _audit_records(storage: PipelineStorage) -> list[dict]:
    return [json.loads(line) for line in storage.audit_log.read_text().splitlines() if line.strip()]


def _change_warehouse(storage: PipelineStorage, sql: str) -> None:
    with duckdb.connect(str(storage.warehouse_db)) as con:
        con.execute(sql)


# --- after the real pipeline run -------------------------------------------------------------------------


def test_published_types_equal_the_dbt_contract(pipeline_run):
    expected = contract_types_from_yml()
    assert set(expected) == set(MARTS)
    with duckdb.connect(str(pipeline_run.data_dir / "marts.duckdb"), read_only=True) as con:
        for mart, columns in expected.items():
            published = con.execute(
                "select column_name, data_type from information_schema.columns where table_name = ? order by ordinal_position",
                [mart],
            ).fetchall()
            assert {c: _spaced(t) for c, t in published} == columns, mart
    assert (
        expected["mart_org_unit_activity"]["expense_total_eur"] == "DECIMAL(18,2)"
    )  # the type pandas used to turn into DOUBLE


def test_metadata_schema_is_duckdb_types_with_descriptions(pipeline_run):
    expected = contract_types_from_yml()
    for mart in MARTS:
        event = pipeline_run.instance.get_latest_materialization_event(dg.AssetKey(f"published_{mart}"))
        md = event.asset_materialization.metadata
        schema = {c.name: c for c in md["dagster/column_schema"].value.columns}
        assert {n: _spaced(c.type) for n, c in schema.items()} == expected[mart]
        assert md["dagster/row_count"].value > 0 and md["privacy_card"].value.startswith(f"## Privacy card: {mart}")
    activity = pipeline_run.instance.get_latest_materialization_event(dg.AssetKey("published_mart_org_unit_activity"))
    assert (
        activity.asset_materialization.metadata["dagster/column_schema"]
        .value.columns[2]
        .description.startswith("Distinct employees in the group.")
    )


def test_one_step_publishes_every_mart_with_one_audit_record(pipeline_run):
    published = [
        e
        for e in pipeline_run.result.get_asset_materialization_events()
        if e.asset_key.to_user_string().startswith("published_")
    ]
    assert sorted(e.asset_key.to_user_string() for e in published) == sorted(
        [f"published_{m}" for m in MARTS] + [f"published_{DP_TABLE}"]
    )
    assert len({e.step_key for e in published}) == 1  # the DP release is published in the same step and transaction
    events = [e for e in published if e.asset_key.to_user_string() != f"published_{DP_TABLE}"]
    dp_heads = next(e for e in published if e not in events).materialization.metadata["audit_head"].value
    heads = {json.dumps(e.materialization.metadata["audit_head"].value, sort_keys=True) for e in events}
    assert json.loads(next(iter(heads))) in dp_heads  # beside the DP ledger's anchor
    assert len(heads) == 1  # both marts point at the same publication record
    head = json.loads(heads.pop())
    log = pipeline_run.data_dir / "audit" / head["log"]
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    publishes = [r for r in records if r["action"] == "publish" and r["run_id"] == pipeline_run.result.run_id]
    assert len(publishes) == 1
    record = publishes[0]
    assert (record["seq"], record["hash"]) == (head["seq"], head["hash"])
    assert sorted(record["marts"]) == MARTS
    for e in events:
        mart = e.asset_key.to_user_string()[len("published_") :]
        assert record["rows"][mart] == e.materialization.metadata["dagster/row_count"].value
        assert record["risk"][mart] == e.materialization.metadata["risk"].value


def test_marts_database_holds_only_approved_marts(pipeline_run, approvals):
    with duckdb.connect(str(pipeline_run.data_dir / "marts.duckdb"), read_only=True) as con:
        tables = {r[0] for r in con.execute("select table_name from duckdb_tables()").fetchall()}
        views = con.execute("select count(*) from duckdb_views() where not internal").fetchone()[0]
    assert tables == set(approvals) | {DP_TABLE} and set(approvals) == set(MARTS) and views == 0


# --- publish_marts on a copy of the run's databases --------------------------------------------------------


def test_publish_replaces_marts_and_drops_anything_else(storage, approvals, contracts):
    with duckdb.connect(str(storage.marts_db)) as con:
        con.execute("create table main.scratch as select 1 as x")
        con.execute("create view main.peek as select 1 as x")
        con.execute("create schema side")
        con.execute("create table side.copy as select 2 as y")
    _change_warehouse(
        storage,
        "delete from mart_support_satisfaction where tickets < (select max(tickets) from mart_support_satisfaction)",
    )
    result = publish_marts(storage, approvals, 1, run_id="test", keep=[DP_TABLE], contracts=contracts)
    after = snapshot(storage.marts_db)
    assert set(after) == set(MARTS) | {DP_TABLE}
    with duckdb.connect(str(storage.marts_db), read_only=True) as con:
        assert con.execute("select count(*) from duckdb_views() where not internal").fetchone()[0] == 0
        assert (
            con.execute("select count(*) from mart_support_satisfaction").fetchone()[0]
            == result["marts"]["mart_support_satisfaction"]["rows"]
        )
    assert sorted(result["dropped"]) == ["main.peek", "main.scratch", "side.copy"]
    assert oct(storage.marts_db.stat().st_mode & 0o777) == oct(0o644)


def test_failure_between_the_two_copies_leaves_marts_unchanged(storage, approvals, contracts):
    before, records_before = snapshot(storage.marts_db), len(_audit_records(storage))
    # the first mart's copy would change what analysts see; the second is missing from the warehouse
    _change_warehouse(
        storage,
        "delete from mart_org_unit_activity where headcount < (select max(headcount) from mart_org_unit_activity)",
    )
    _change_warehouse(storage, "drop table mart_support_satisfaction")
    with pytest.raises(
        dg.Failure, match="copying mart_support_satisfaction from the warehouse failed .*nothing was published"
    ):
        publish_marts(storage, approvals, 1, run_id="test", contracts=contracts)
    assert snapshot(storage.marts_db) == before
    assert len(_audit_records(storage)) == records_before  # nothing was about to be published


def test_a_type_that_drifted_from_the_contract_publishes_nothing(storage, approvals, contracts):
    before = snapshot(storage.marts_db)
    _change_warehouse(storage, "alter table mart_support_satisfaction alter avg_satisfaction type double")
    with pytest.raises(dg.Failure, match=r"avg_satisfaction: contract DECIMAL\(4,2\), warehouse DOUBLE"):
        publish_marts(storage, approvals, 1, run_id="test", contracts=contracts)
    assert snapshot(storage.marts_db) == before


def test_failed_commit_is_audited_and_rolled_back(storage, approvals, contracts, monkeypatch):
    before = snapshot(storage.marts_db)
    _change_warehouse(
        storage,
        "delete from mart_org_unit_activity where headcount < (select max(headcount) from mart_org_unit_activity)",
    )

    def failing_commit(con):
        raise duckdb.IOException("disk full")

    monkeypatch.setattr(marts_module, "_commit", failing_commit)
    with pytest.raises(dg.Failure, match="committing the marts .* failed \\(IOException\\)") as raised:
        publish_marts(storage, approvals, 1, run_id="test-abort", contracts=contracts)
    assert "disk full" not in str(raised.value)
    assert snapshot(storage.marts_db) == before
    publish, aborted = _audit_records(storage)[-2:]
    assert publish["action"] == "publish" and publish["run_id"] == "test-abort" and sorted(publish["marts"]) == MARTS
    assert aborted["action"] == "publish_aborted" and aborted["publish_seq"] == publish["seq"]


def test_marts_not_rebuilt_are_kept_as_published(storage, approvals, contracts):
    before = snapshot(storage.marts_db)
    _change_warehouse(storage, "drop table mart_org_unit_activity")  # e.g. a Support-only run: HR's mart is not touched
    only = {"mart_support_satisfaction": approvals["mart_support_satisfaction"]}
    result = publish_marts(
        storage, only, 1, run_id="test", keep=["mart_org_unit_activity", DP_TABLE], contracts=contracts
    )
    assert list(result["marts"]) == ["mart_support_satisfaction"]
    assert snapshot(storage.marts_db) == before


# --- analysts' connections -------------------------------------------------------------------------------


def test_analyst_connection_makes_publish_wait_then_fail_clearly(
    storage, approvals, contracts, hold_marts, monkeypatch
):
    monkeypatch.setenv(PUBLISH_LOCK_TIMEOUT_ENV, "3")
    before, digest, audit_before = (
        snapshot(storage.marts_db),
        file_digest(storage.marts_db),
        storage.audit_log.read_bytes(),
    )
    holder = hold_marts(storage.marts_db, 60)
    started = time.monotonic()
    with pytest.raises(dg.Failure) as raised:
        publish_marts(storage, approvals, publish_lock_timeout_from_env(), run_id="test", contracts=contracts)
    elapsed = time.monotonic() - started
    message = raised.value.description
    assert 3 <= elapsed < 8, elapsed
    assert str(storage.marts_db) in message and "is locked" in message
    assert "analyst connections" in message.lower() and "duckdb CLI" in message and "read-only" in message
    assert "Nothing was published" in message and "unchanged" in message
    assert "PID" not in message and str(holder.pid) not in message and "Conflicting lock" not in message
    holder.kill()
    holder.wait()
    assert file_digest(storage.marts_db) == digest and snapshot(storage.marts_db) == before
    assert storage.audit_log.read_bytes() == audit_before


def test_publish_succeeds_once_the_analyst_closes_during_the_wait(storage, approvals, contracts, hold_marts):
    hold_marts(storage.marts_db, 1.5)
    started = time.monotonic()
    result = publish_marts(storage, approvals, 30, run_id="test-wait", contracts=contracts)
    assert time.monotonic() - started >= 1.0  # it did wait for the holder
    assert sorted(result["marts"]) == MARTS and set(snapshot(storage.marts_db)) == set(MARTS)
    assert _audit_records(storage)[-1]["run_id"] == "test-wait"


def test_lock_timeout_is_read_at_run_time(monkeypatch):
    monkeypatch.delenv(PUBLISH_LOCK_TIMEOUT_ENV, raising=False)
    assert publish_lock_timeout_from_env() == 300
    monkeypatch.setenv(PUBLISH_LOCK_TIMEOUT_ENV, "2.5")
    assert publish_lock_timeout_from_env() == 2.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(PUBLISH_LOCK_TIMEOUT_ENV, bad)
        with pytest.raises(dg.Failure, match=PUBLISH_LOCK_TIMEOUT_ENV):
            publish_lock_timeout_from_env()
