"""The whole pipeline on generated data: marts built, nothing personal published or logged."""

import dagster as dg
import duckdb
import pytest

from tests.conftest import TEST_KEY, ground_truth

MARTS = {"mart_org_unit_activity", "mart_support_satisfaction"}
PUBLISHED = MARTS | {"mart_org_unit_activity_dp"}  # the approved marts and the DP release one of them declares


def test_definitions_load():
    from pipelines.definitions import defs as load_defs

    defs = load_defs()  # lazy: built when a code location loads, not at import
    defs.get_repository_def().get_all_jobs()  # loads as a code location does: job and op names must not clash
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    for dataset in ("hr_employees", "finance_expense_claims", "it_security_incidents", "support_tickets"):
        assert {f"landed_{dataset}", f"raw_{dataset}", f"deidentified_{dataset}"} <= keys
        assert f"deidentified_{dataset}" in {
            p.to_user_string() for k in graph.get_all_asset_keys() for p in graph.get(k).parent_keys
        }
    assert MARTS <= keys and {f"published_{m}" for m in MARTS} <= keys
    assert {s.name for s in defs.sensors} == {
        f"{d}_landing_sensor"
        for d in ("hr_employees", "finance_expense_claims", "it_security_incidents", "support_tickets")
    } | {"subject_requests_sensor", "openlineage_sensor"}
    assert sorted(s.name for s in defs.schedules) == [
        "integrate_all_daily",
        "purge_quarantine_daily",
        "retention_purge_daily",
    ]


def test_run_succeeds_with_all_checks(pipeline_run):
    result = pipeline_run.result
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) >= 8 and all(e.passed for e in evaluations)


def test_row_counts(pipeline_run):
    with duckdb.connect(str(pipeline_run.data_dir / "raw.duckdb"), read_only=True) as con:
        raw = {
            t: con.execute(f"select count(*) from {t}").fetchone()[0]
            for t in ("hr_employees", "finance_expense_claims", "it_security_incidents", "support_tickets")
        }
    assert raw == {
        "hr_employees": 2000,
        "finance_expense_claims": 4000,
        "it_security_incidents": 1000,
        "support_tickets": 2000,
    }
    with duckdb.connect(str(pipeline_run.data_dir / "deidentified.duckdb"), read_only=True) as con:
        hr = con.execute("select count(*) from hr_employees").fetchone()[0]
        assert con.execute("select count(*) from finance_expense_claims").fetchone()[0] == 4000
    assert 1800 <= hr <= 2000  # k-anonymity suppresses at most the contract's 10%
    with duckdb.connect(str(pipeline_run.data_dir / "marts.duckdb"), read_only=True) as con:
        activity = con.execute("select count(*), sum(headcount), min(headcount) from mart_org_unit_activity").fetchone()
    assert activity[0] > 0 and activity[1] <= hr and activity[2] >= 5


def test_marts_database_holds_only_marts(pipeline_run):
    with duckdb.connect(str(pipeline_run.data_dir / "marts.duckdb"), read_only=True) as con:
        tables = {r[0] for r in con.execute("select table_name from duckdb_tables()").fetchall()}
        views = con.execute("select count(*) from duckdb_views() where not internal").fetchone()[0]
    assert tables == PUBLISHED and views == 0


def test_no_ground_truth_value_in_marts(pipeline_run):
    with duckdb.connect(str(pipeline_run.data_dir / "marts.duckdb"), read_only=True) as con:
        text = "\n".join(str(row) for m in sorted(PUBLISHED) for row in con.execute(f"select * from {m}").fetchall())
    leaked = [g for g in ground_truth(pipeline_run.landing) if g["value"] in text]
    assert not leaked, (
        f"{len(leaked)} personal values reached a mart, e.g. types {[g['entity_type'] for g in leaked[:5]]}"
    )


def test_no_ground_truth_value_or_key_in_metadata_or_logs(pipeline_run):
    text = pipeline_run.metadata_text() + "\n" + pipeline_run.log_text()
    assert TEST_KEY not in text
    leaked = [g for g in ground_truth(pipeline_run.landing) if g["value"] in text]
    assert not leaked, (
        f"{len(leaked)} personal values in metadata/logs, e.g. {[(g['dataset'], g['column']) for g in leaked[:5]]}"
    )


def test_deidentified_metadata_records_parameters(pipeline_run):
    mats = {
        m.asset_key.to_user_string(): m
        for m in pipeline_run.result.get_asset_materialization_events()
        for m in [m.materialization]
    }
    md = mats["deidentified_hr_employees"].metadata
    columns = {c["column"]: c for c in md["deidentification"].value["columns"]}
    assert columns["ssn"]["operator"] == "suppress" and not columns["ssn"]["published"]
    assert columns["email"]["params"]["key_id"] == md["pseudonym_key_id"].value
    assert columns["date_of_birth"]["params"] == {"method": "age_band", "width": 20, "reference_date": "2026-01-31"}
    assert md["contract_version_hash"].value
    assert md["provenance"].value["versions"]["presidio-analyzer"].startswith("2.2")
    memo = {
        c["column"]: c
        for c in mats["deidentified_finance_expense_claims"].metadata["deidentification"].value["columns"]
    }["memo"]
    assert memo["entities_detected"].get("PERSON", 0) > 0
    assert mats["deidentified_finance_expense_claims"].metadata["detector"].value["nlp_model"]
    hr_detector = md["detector"].value  # HR has no free text, but its columns were classified by the detector
    assert hr_detector["nlp_model"]["name"] and hr_detector["free_text_columns"] == []
    assert hr_detector["used_for"] == ["column classification (a sample of every column)"]


@pytest.mark.parametrize("column", ["employee_key", "email_key"])
def test_pseudonyms_link_departments(pipeline_run, column):
    with duckdb.connect(str(pipeline_run.data_dir / "deidentified.duckdb"), read_only=True) as con:
        if column == "employee_key":
            linked = con.execute(
                "select count(*) from finance_expense_claims f join hr_employees h using (employee_id)"
            ).fetchone()[0]
            total = con.execute("select count(*) from finance_expense_claims").fetchone()[0]
        else:
            linked = con.execute(
                "select count(*) from it_security_incidents i join hr_employees h on i.reporter_email = h.email"
            ).fetchone()[0]
            total = con.execute("select count(*) from it_security_incidents").fetchone()[0]
    assert linked >= 0.85 * total  # all link except claims of employees suppressed for k-anonymity


def test_privacy_card_names_every_contributing_column(pipeline_run):
    from pipelines.contracts import load_contracts

    event = pipeline_run.instance.get_latest_materialization_event(dg.AssetKey("published_mart_org_unit_activity"))
    card = event.asset_materialization.metadata["privacy_card"].value
    for contract in load_contracts():
        if contract.department in {"hr", "finance", "it"}:
            for column in contract.columns:
                assert f"| {contract.dataset}.{column.name} |" in card
    assert "| hr_employees.ssn | direct_identifier | US_SSN | suppress |" in card
    assert "Data Protection Officer" in card and "employee_key, email_key" in card
    assert "support_tickets" not in card  # Support does not contribute to this mart


def test_analyst_connection_sees_only_marts_and_cannot_write(pipeline_run):
    con = duckdb.connect(str(pipeline_run.data_dir / "marts.duckdb"), read_only=True)
    try:
        names = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
        assert names == PUBLISHED
        assert not any(
            "raw" in r[0] or "deidentified" in r[0]
            for r in con.execute("select database_name from duckdb_databases()").fetchall()
        )
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("create table stolen as select 1")
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("delete from mart_org_unit_activity")
    finally:
        con.close()


def test_restricted_databases_are_owner_only(pipeline_run):
    import stat

    for name in ("raw.duckdb", "deidentified.duckdb", "warehouse.duckdb"):
        assert stat.S_IMODE((pipeline_run.data_dir / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((pipeline_run.data_dir / "marts.duckdb").stat().st_mode) == 0o644


def test_mart_checks_ran_before_publishing(pipeline_run):
    evaluations = {
        (e.asset_key.to_user_string(), e.check_name): e.passed
        for e in pipeline_run.result.get_asset_check_evaluations()
    }
    for mart in MARTS:
        assert evaluations[(mart, "privacy_suite")] is True


def test_provenance_on_every_asset(pipeline_run):
    for event in pipeline_run.result.get_asset_materialization_events():
        key = event.asset_key.to_user_string()
        if key.startswith(("raw_", "deidentified_", "published_", "stg_", "mart_")):
            prov = event.materialization.metadata["provenance"].value
            assert prov["run_id"] == pipeline_run.result.run_id and prov["code_version"] and prov["triggered_by"]
            assert set(prov["versions"]) >= {
                "dagster",
                "dbt-core",
                "presidio-analyzer",
                "great-expectations",
                "duckdb",
                "nlp_model",
            }


def test_dbt_marts_carry_schema_and_column_lineage(pipeline_run):
    mats = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in pipeline_run.result.get_asset_materialization_events()
    }
    md = mats["mart_org_unit_activity"]
    assert md["dagster/row_count"].value > 0
    assert {c.name for c in md["dagster/column_schema"].value.columns} >= {"org_unit", "job_family", "headcount"}
    lineage = md["dagster/column_lineage"].value
    assert any(dep.asset_key.to_user_string() == "stg_hr__employees" for dep in lineage.deps_by_column["headcount"])


def test_data_docs_built_and_hold_no_personal_values(pipeline_run):
    pages = list((pipeline_run.data_dir / "gx").rglob("*.html")) + list((pipeline_run.data_dir / "gx").rglob("*.json"))
    assert any(p.name == "index.html" for p in pages)
    text = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in pages)
    leaked = [g for g in ground_truth(pipeline_run.landing) if g["value"] in text]
    assert not leaked, (
        f"{len(leaked)} personal values in Data Docs, e.g. {[(g['dataset'], g['column']) for g in leaked[:5]]}"
    )
    evaluation = next(e for e in pipeline_run.result.get_asset_check_evaluations() if e.check_name == "quality_suite")
    # the validation's own page, over http (make ui serves the site), not a file:// link to the index
    page = evaluation.metadata["data_docs"].value
    assert page.startswith("http://") and "/validations/" in page and page.endswith(".html")
