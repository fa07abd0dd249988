"""The steward's view (issue 23): column lineage with PII classification that travels, the privacy card to the
mart, landed files observed."""

import json

import dagster as dg
import pytest

from pipelines.contracts import load_contracts
from pipelines.lineage import classification as cls
from pipelines.lineage import metadata as lineage_md
from pipelines.lineage.dbt import lineage_for_manifest, model_lineage
from pipelines.resources import CONTRACTS_DIR, DBT_PROJECT_DIR

MANIFEST = DBT_PROJECT_DIR / "target" / "manifest.json"


@pytest.fixture(scope="module")
def lineage():
    return lineage_for_manifest(MANIFEST, CONTRACTS_DIR)


@pytest.fixture(scope="module")
def contracts():
    return {c.dataset: c for c in load_contracts()}


def _tags(contracts, key_id="k-test"):
    return {d: cls.contract_tags(c, key_id) for d, c in contracts.items()}


def test_dbt_column_lineage_reaches_the_deidentified_columns(lineage):
    assert lineage["stg_hr__employees"]["employee_key"].deps == [("deidentified_hr_employees", "employee_id")]
    headcount = lineage["mart_org_unit_activity"]["headcount"]
    assert headcount.deps == [("stg_hr__employees", "employee_key")] and headcount.transform == "aggregate"
    assert lineage["mart_org_unit_activity"]["expense_claims"].counts_rows_of == ["stg_finance__expense_claims"]
    assert lineage["mart_support_satisfaction"]["product"].transform == "identity"


def test_classification_propagates_and_aggregation_clears_it(lineage, contracts):
    traced = lineage_md.published_columns(
        "mart_org_unit_activity", list(lineage["mart_org_unit_activity"]), lineage, _tags(contracts)
    )
    assert traced["headcount"].tags[cls.STATE] == "aggregated" and traced["headcount"].tags[cls.ENTITY] == "EMPLOYEE_ID"
    assert traced["headcount"].sources == [("hr_employees", "employee_id")]
    assert (
        traced["job_family"].tags[cls.STATE] == "generalized"
        and traced["job_family"].tags[cls.OPERATOR] == "generalize"
    )
    assert not lineage_md.gate_failures(traced)


def test_a_published_column_inheriting_an_unmasked_direct_identifier_fails_the_gate(contracts):
    manifest = json.loads(MANIFEST.read_text())
    node = next(n for n in manifest["nodes"].values() if n.get("name") == "mart_support_satisfaction")
    node["raw_code"] = (
        "with x as (select customer_key, product from {{ ref('stg_support__tickets') }}) select customer_key, count(*) as n from x group by customer_key"
    )
    lineage = model_lineage(manifest, list(contracts.values()), DBT_PROJECT_DIR)
    tags = _tags(contracts)
    # pseudonymized: the key may be published as a key (state pseudonymized), not as the raw email
    traced = lineage_md.published_columns("mart_support_satisfaction", ["customer_key", "n"], lineage, tags)
    assert (
        traced["customer_key"].tags[cls.STATE] == "pseudonymized"
        and traced["customer_key"].tags[cls.KEY_ID] == "k-test"
    )
    assert traced["n"].tags[cls.STATE] == "aggregated"
    assert not lineage_md.gate_failures(traced)
    # the same column kept unmasked by its contract: the gate names it
    tags["support_tickets"]["customer_email"] = {
        cls.ROLE: "direct_identifier",
        cls.ENTITY: "EMAIL_ADDRESS",
        cls.OPERATOR: "keep",
        cls.STATE: "unmasked",
    }
    traced = lineage_md.published_columns("mart_support_satisfaction", ["customer_key", "n"], lineage, tags)
    failures = lineage_md.gate_failures(traced)
    assert len(failures) == 1 and failures[0].startswith(
        "customer_key inherits EMAIL_ADDRESS (unmasked) from support_tickets.customer_email"
    )


def test_min_max_does_not_anonymize():
    assert cls.propagate([{cls.ROLE: "direct_identifier", cls.STATE: "unmasked"}], "min_max")[cls.STATE] == "unmasked"
    assert (
        cls.propagate([{cls.ROLE: "direct_identifier", cls.STATE: "unmasked"}], "aggregate")[cls.STATE] == "aggregated"
    )
    assert cls.propagate([{cls.ROLE: "join_key", cls.STATE: "pseudonymized"}], "dp")[cls.STATE] == "dp_noised"


def test_fates_to_the_mart(lineage, contracts):
    traced = lineage_md.published_columns(
        "mart_org_unit_activity", list(lineage["mart_org_unit_activity"]), lineage, _tags(contracts)
    )
    finance = lineage_md.fates(
        "mart_org_unit_activity", contracts["finance_expense_claims"], traced, lineage, ["employee_key", "email_key"]
    )
    assert finance["card_number"] == "de-identified, never reached this mart"
    assert finance["iban"] == "suppressed: never left the raw database"
    assert finance["amount"] == "aggregated into expense_total_eur"
    assert finance["employee_id"].startswith("used only as a join key")
    hr = lineage_md.fates(
        "mart_org_unit_activity", contracts["hr_employees"], traced, lineage, ["employee_key", "email_key"]
    )
    assert hr["job_title"] == "published as job_family"


def test_sensor_records_each_new_file_on_the_landed_asset(tmp_path):
    from pipelines.definitions import build_definitions
    from pipelines.resources import PipelineStorage

    sensor = build_definitions(tmp_path).resolve_sensor_def("hr_employees_landing_sensor")
    landing = tmp_path / "landing" / "hr"
    landing.mkdir(parents=True)
    (landing / "employees_2026-01-31.csv").write_text("employee_id\nE1\nE2\n")
    result = sensor(
        dg.build_sensor_context(
            instance=dg.DagsterInstance.ephemeral(), resources={"storage": PipelineStorage(data_dir=str(tmp_path))}
        )
    )
    (observation,) = result.asset_events
    assert observation.asset_key == dg.AssetKey("landed_hr_employees")
    md = observation.metadata
    assert (
        md["file"].value == "hr/employees_2026-01-31.csv"
        and md["rows"].value == 2
        and md["size_bytes"].value == (landing / "employees_2026-01-31.csv").stat().st_size
    )
    assert len(md["sha256"].value) == 64 and md["modified_utc"].value.endswith("+00:00")


# --- on the pipeline's one run -------------------------------------------------------------------------------


def _materializations(pipeline_run):
    return {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in pipeline_run.result.get_asset_materialization_events()
    }


def test_every_stage_carries_column_lineage_and_classification_tags(pipeline_run):
    mats = _materializations(pipeline_run)
    raw = mats["raw_hr_employees"]
    assert raw["dagster/column_lineage"].value.deps_by_column["ssn"][0].asset_key == dg.AssetKey("landed_hr_employees")
    ssn = {c.name: c for c in raw["dagster/column_schema"].value.columns}["ssn"]
    assert ssn.tags[cls.STATE] == "identifying" and ssn.tags[cls.ENTITY] == "US_SSN"
    deid = mats["deidentified_hr_employees"]
    columns = {c.name: c for c in deid["dagster/column_schema"].value.columns}
    assert "ssn" not in columns  # suppressed
    assert (
        columns["email"].tags[cls.STATE] == "pseudonymized"
        and columns["email"].tags[cls.KEY_ID] == deid["pseudonym_key_id"].value
    )
    assert "PII:" in columns["email"].description
    assert deid["dagster/column_lineage"].value.deps_by_column["email"][0].asset_key == dg.AssetKey("raw_hr_employees")
    published = mats["published_mart_org_unit_activity"]
    schema = {c.name: c for c in published["dagster/column_schema"].value.columns}
    assert (
        schema["headcount"].tags[cls.STATE] == "aggregated"
        and schema["headcount"].tags[cls.FROM] == "hr_employees.employee_id"
    )
    assert schema["headcount"].description.startswith("Distinct employees in the group.")  # dbt's description kept
    assert published["dagster/column_lineage"].value.deps_by_column["headcount"][0].asset_key == dg.AssetKey(
        "mart_org_unit_activity"
    )
    from pipelines.definitions import defs

    landed = defs().resolve_asset_graph().get(dg.AssetKey("landed_hr_employees")).metadata["dagster/column_schema"]
    assert {c.name: c.tags[cls.STATE] for c in landed.columns}["ssn"] == "identifying"


def test_landed_files_are_observed_by_the_raw_step(pipeline_run):
    records = pipeline_run.instance.fetch_observations(dg.AssetKey("landed_finance_expense_claims"), limit=5).records
    assert records
    md = records[0].asset_observation.metadata
    assert md["rows"].value == 4000 and md["file"].value.startswith("finance/") and len(md["sha256"].value) == 64


def test_privacy_card_follows_each_column_to_the_mart(pipeline_run):
    card = _materializations(pipeline_run)["published_mart_org_unit_activity"]["privacy_card"].value
    assert "| finance_expense_claims.card_number | direct_identifier | CREDIT_CARD | mask |" in card
    assert "de-identified, never reached this mart" in card and "aggregated into expense_total_eur" in card
    assert "used only as a join key" in card and "published as job_family" in card
    assert f"(/runs/{pipeline_run.result.run_id})" in card  # run ids are links to the Dagster UI
    assert "| privacy_suite | passed |" in card  # the mart's own checks
    assert " rows / " in card and "smallest group" in card and " people" in card
    assert " mentions (in " in card and "non-empty values of this column" in card  # detection counts carry their unit
