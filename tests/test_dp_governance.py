"""Person-level models under the governance check, and the person-level join gate's quasi-identifiers by lineage."""

from __future__ import annotations

import copy

import duckdb
import pandas as pd
import pytest

from pipelines.contracts import load_contracts
from pipelines.defs.marts import person_join_quasi_identifiers, person_join_risk
from pipelines.governance.approvals import DBT_PROJECT_DIR, Rule, check_project, compile_project, load_manifest
from pipelines.lineage.dbt import ColumnOrigin
from tests.test_governance import TODAY


def _join_risk(frame: pd.DataFrame, quasi_identifiers: list[str], min_k: int) -> dict:
    """The person-level join gate's figures, over a frame registered in DuckDB (the gate reads the warehouse)."""
    with duckdb.connect() as con:
        con.register("person_join", frame)
        return person_join_risk(con, "person_join", quasi_identifiers, min_k)


PEOPLE = "model.privacy_integration.dp_org_unit_activity_people"
MART = "model.privacy_integration.mart_org_unit_activity"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    """The shipped project compiled now (an empty data directory: compiling opens no database)."""
    root = tmp_path_factory.mktemp("dp_governance")
    return load_manifest(
        compile_project(DBT_PROJECT_DIR, DBT_PROJECT_DIR, root / "target", {"PIPELINES_DATA_DIR": str(root / "data")})
    )


def _messages(manifest: dict, model: str, rule: str) -> list[str]:
    return [v.message for v in check_project(manifest, today=TODAY) if v.model == model and v.rule == rule]


def test_person_level_model_needs_no_group_filter_but_an_aggregate_does(compiled):
    assert "population >=" not in compiled["nodes"][PEOPLE]["compiled_code"]  # no stand-in group filter any more
    assert check_project(compiled, today=TODAY) == []
    as_mart = copy.deepcopy(compiled)
    as_mart["nodes"][PEOPLE]["config"]["meta"]["approval"]["person_level"] = False
    assert _messages(
        as_mart, "dp_org_unit_activity_people", Rule.min_group_size
    )  # the same SQL as an aggregate is refused


def test_person_level_model_is_never_public(compiled):
    assert compiled["nodes"][PEOPLE]["access"] == "protected"
    public = copy.deepcopy(compiled)
    public["nodes"][PEOPLE]["access"] = "public"
    assert any("must not be access: public" in m for m in _messages(public, "dp_org_unit_activity_people", Rule.access))


def test_no_model_may_read_a_person_level_model(compiled):
    reader = copy.deepcopy(compiled)
    reader["nodes"][MART]["depends_on"]["nodes"].append(PEOPLE)
    messages = _messages(reader, "mart_org_unit_activity", Rule.access)
    assert any("reads person-level model dp_org_unit_activity_people" in m for m in messages)


def _lineage(**columns: list[tuple[str, str]]) -> dict[str, dict[str, ColumnOrigin]]:
    return {
        "people": {c: ColumnOrigin(deps=deps) for c, deps in columns.items()},
        "stg_hr": {
            "org_unit": ColumnOrigin([("deidentified_hr_employees", "org_unit")]),
            "employee_key": ColumnOrigin([("deidentified_hr_employees", "employee_id")]),
        },
        "stg_finance": {
            "claim_month": ColumnOrigin([("deidentified_finance_expense_claims", "claim_date")]),
            "amount": ColumnOrigin([("deidentified_finance_expense_claims", "amount")]),
        },
    }


def test_the_gate_counts_every_department_quasi_identifier_the_join_carries_even_undeclared():
    contracts = [c for c in load_contracts() if c.department in ("hr", "finance")]
    lineage = _lineage(
        person_key=[("stg_hr", "employee_key")],
        org_unit=[("stg_hr", "org_unit")],
        first_claim_month=[("stg_finance", "claim_month")],
        spend=[("stg_finance", "amount")],
    )
    columns, carried, not_carried = person_join_quasi_identifiers(
        "people", ["org_unit"], "person_key", lineage, contracts
    )
    assert columns == [
        "org_unit",
        "first_claim_month",
    ]  # Finance's claim month reaches the join: counted, though undeclared
    assert carried["first_claim_month"] == ["finance_expense_claims.claim_date"] and "spend" not in carried
    assert (
        "claim_date" not in not_carried.get("finance_expense_claims", [])
        and "date_of_birth" in not_carried["hr_employees"]
    )
    people = pd.DataFrame(
        {"org_unit": ["Sales"] * 10 + ["Ops"] * 10, "first_claim_month": [f"2025-{m:02d}" for m in range(1, 11)] * 2}
    )
    assert _join_risk(people, ["org_unit"], 5)["passed"]
    blocked = _join_risk(people, columns, 5)
    assert not blocked["passed"] and blocked["k"] == 1 and blocked["people_in_classes_below_min_k"] == 20
