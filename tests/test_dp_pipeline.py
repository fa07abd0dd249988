"""Differential privacy in the real run: the DP table beside its mart, its card and budget, the CLI, caching."""

from __future__ import annotations

import json
import shutil

import dagster as dg
import duckdb
import polars as pl
import pytest

from pipelines import audit
from pipelines.defs.integration import dbt_project
from pipelines.dp import budget as budgets
from pipelines.dp import cli
from pipelines.dp.publish import publish_release
from pipelines.dp.query import approval_of, read_person_level

MART, DP_TABLE, PEOPLE = "mart_org_unit_activity", "mart_org_unit_activity_dp", "dp_org_unit_activity_people"


def _metadata(pipeline_run, key: str) -> dict:
    event = pipeline_run.instance.get_latest_materialization_event(dg.AssetKey(key))
    assert event is not None, f"{key} was not materialized"
    return {k: getattr(v, "value", v) for k, v in event.asset_materialization.metadata.items()}


def test_dp_table_is_published_beside_its_mart_and_people_never_are(pipeline_run):
    with duckdb.connect(str(pipeline_run.data_dir / "marts.duckdb"), read_only=True) as con:
        tables = {r[0] for r in con.execute("select table_name from duckdb_tables()").fetchall()}
        dp = pl.from_arrow(con.sql(f"select * from {DP_TABLE}").to_arrow_table())
        k_mart = pl.from_arrow(con.sql(f"select org_unit, job_family from {MART}").to_arrow_table())
    assert DP_TABLE in tables and PEOPLE not in tables
    assert {
        "headcount",
        "headcount_lower",
        "headcount_upper",
        "expense_total_eur_lower",
        "security_incidents_upper",
    } <= set(dp.columns)
    assert "employee_key" not in dp.columns
    assert (dp["headcount_lower"] <= dp["headcount"]).all() and (dp["headcount"] <= dp["headcount_upper"]).all()
    assert set(dp.select("org_unit", "job_family").rows()) <= set(k_mart.rows())  # no group the k-mart lacks


def test_dp_metadata_shows_mechanism_budget_and_both_anchors(pipeline_run):
    md = _metadata(pipeline_run, f"published_{DP_TABLE}")
    mechanism, budget = md["dp_mechanism"], md["dp_budget"]
    assert mechanism["privacy_unit"] == "employee_key" and mechanism["epsilon"] == 1.0 and mechanism["seeded"] is False
    assert {s["name"]: s.get("bounds") for s in mechanism["statistics"]}["expense_total_eur"] == [0, 1000]
    assert budget["publication"]["epsilon_spent"] == pytest.approx(1.0)
    assert budget["workforce-analytics"]["epsilon_remaining"] == pytest.approx(3.0)
    card = md["privacy_card"]
    assert "Privacy unit" in card and "epsilon 1" in card and "noisy count reaches" in card
    logs = {a["log"] for a in md[audit.ANCHOR_METADATA_KEY]}
    assert logs == {"pipeline.jsonl", budgets.LEDGER_LOG}
    for name in logs:
        ok, message = audit.verify(pipeline_run.data_dir / "audit" / name, anchors=md[audit.ANCHOR_METADATA_KEY])
        assert ok, message
    assert "DP release" in _metadata(pipeline_run, f"published_{MART}")["privacy_card"]


def test_person_join_risk_is_measured_by_the_mart_gate(pipeline_run):
    evaluations = [
        e.event_specific_data
        for e in pipeline_run.result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        and e.event_specific_data.asset_key == dg.AssetKey(MART)
        and e.event_specific_data.check_name == "privacy_suite"
    ]
    assert evaluations and evaluations[0].passed
    risk = evaluations[0].metadata["person_join_risk"].value
    assert (
        risk["quasi_identifiers"] == ["org_unit", "job_family", "age_band", "gender"]
        and risk["k"] >= risk["min_k"] == 5
    )


@pytest.fixture()
def data_copy(pipeline_run, tmp_path):
    """The run's warehouse, audit logs, keys and DP cache, so tests can spend without touching the session's."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy2(pipeline_run.data_dir / "warehouse.duckdb", data / "warehouse.duckdb")
    for folder in ("audit", "keys", "dp"):
        shutil.copytree(pipeline_run.data_dir / folder, data / folder)
    return data


def test_rerunning_the_release_on_the_same_data_spends_nothing(data_copy):
    approval = approval_of(dbt_project().manifest_path, MART)
    frame = read_person_level(data_copy / "warehouse.duckdb", PEOPLE)
    outcome = publish_release(data_copy, MART, approval, frame)
    assert outcome.cached and outcome.spent[0] == pytest.approx(1.0)
    changed = publish_release(data_copy, MART, approval, frame.head(len(frame) - 1))  # one person left: new data
    assert not changed.cached and changed.spent[0] == pytest.approx(2.0)


def test_cli_query_answers_charges_and_refuses(data_copy, capsys):
    base = ["--data-dir", str(data_copy), "--manifest", str(dbt_project().manifest_path)]
    ask = base + ["query", "--consumer", "partner-audit", "--approval", MART, "--purpose", "test", "--json"]
    assert cli.main(ask + ["--epsilon", "0.6", "count, mean(expense_total_eur) by gender"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"gender", "count", "count_lower", "mean_expense_total_eur_upper"} <= set(out["answer"][0])
    assert out["cost"]["remaining_epsilon"] == pytest.approx(0.4)
    assert (
        cli.main(ask + ["--epsilon", "0.6", "select org_unit, count(*) from mart_org_unit_activity group by org_unit"])
        == 3
    )
    assert "nothing was released" in capsys.readouterr().err
    assert cli.main(ask + ["--epsilon", "0.1", "count by employee_key"]) == 4
    assert "not approved" in capsys.readouterr().err
    assert cli.main(base + ["budget", "--approval", MART, "--consumer", "partner-audit"]) == 0
    assert json.loads(capsys.readouterr().out)["partner-audit"]["epsilon_spent"] == pytest.approx(0.6)
    assert cli.main(base + ["verify"]) == 0


def test_person_join_risk_blocks_a_mart_whose_departments_single_someone_out(pipeline_run, tmp_path):
    """One employee made unique over the join's quasi-identifiers: the mart gate fails and nothing is published."""
    from pipelines.definitions import build_definitions

    data = tmp_path / "data"
    shutil.copytree(pipeline_run.data_dir, data, ignore=shutil.ignore_patterns("dagster_home", "landing", "dbt_runs"))
    with duckdb.connect(str(data / "deidentified.duckdb")) as con:  # the mart groups by org unit and job family only
        con.execute(
            "UPDATE hr_employees SET gender = 'unique' WHERE employee_id = (SELECT min(employee_id) FROM hr_employees)"
        )
    with duckdb.connect(str(data / "marts.duckdb"), read_only=True) as con:
        before = con.execute(f"SELECT * FROM {MART} ORDER BY ALL").fetchall()
    defs = build_definitions(data)
    graph = defs.get_repository_def().asset_graph
    selection = (
        dg.AssetSelection.assets(PEOPLE, MART, f"published_{MART}").required_multi_asset_neighbors().resolve(graph)
    )
    result = defs.resolve_job_def("integrate_all").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False, asset_selection=sorted(selection)
    )
    gate = next(
        e
        for e in result.get_asset_check_evaluations()
        if e.asset_key == dg.AssetKey(MART) and e.check_name == "privacy_suite"
    )
    risk = gate.metadata["person_join_risk"].value
    assert not gate.passed and risk["k"] == 1 and risk["people_in_classes_below_min_k"] >= 1
    assert "person-level join risk: k 1" in gate.description
    assert (
        risk["carried_from"]["gender"] == ["hr_employees.gender"]
        and "claim_date" in risk["department_quasi_identifiers_not_in_join"]["finance_expense_claims"]
    )
    published = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert f"published_{MART}" not in published and f"published_{DP_TABLE}" not in published
    with duckdb.connect(str(data / "marts.duckdb"), read_only=True) as con:
        assert con.execute(f"SELECT * FROM {MART} ORDER BY ALL").fetchall() == before  # the analysts' copy as it was
