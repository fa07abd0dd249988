"""Each privacy threshold of the suites, violated on purpose, is caught (and the results carry no values)."""

import json

import duckdb
import pandas as pd
import pytest

from pipelines.contracts import load_contracts
from pipelines.defs.checks import privacy_frame
from pipelines.defs.marts import mart_risk
from pipelines.governance.approvals import Approval
from pipelines.quality.features import with_group_risk_features
from pipelines.quality.runner import run_suite
from pipelines.quality.suites import (
    load_suite,
    mart_parameters,
    mart_privacy_suite,
    privacy_parameters,
    privacy_suite,
)
from pipelines.resources import EXPECTATIONS_DIR

HR = next(c for c in load_contracts() if c.dataset == "hr_employees")
QUASI = ["date_of_birth", "gender", "job_title", "org_unit"]


def hr_frame(groups: list[tuple[tuple, int, list[str]]]) -> pd.DataFrame:
    """Rows per (quasi-identifier values, count, salary bands cycled)."""
    rows = []
    for qi, n, salaries in groups:
        for i in range(n):
            rows.append(
                {
                    "employee_id": f"employee_id_{len(rows):016x}",
                    "email": f"email_address_{len(rows):016x}",
                    **dict(zip(QUASI, qi)),
                    "salary": salaries[i % len(salaries)],
                }
            )
    return pd.DataFrame(rows)


def run(frame: pd.DataFrame, suite: dict, contract=HR) -> dict:
    outcome = run_suite(suite, privacy_frame(frame, QUASI, ["salary"]), parameters=privacy_parameters(contract))
    return {(r.expectation, r.column): r for r in outcome.results}


def frame_mart_risk(frame: pd.DataFrame, approval: Approval) -> dict:
    with duckdb.connect() as con:
        con.register("mart", frame)
        return mart_risk(con, "mart", approval)


SAFE = [
    (("20-39", "F", "data", "Data Platform"), 6, ["60000-79999", "80000-99999"]),
    (("40-59", "M", "finance", "Finance Operations"), 7, ["40000-59999", "60000-79999"]),
]


def test_shipped_suite_passes_safe_data():
    results = run(hr_frame(SAFE), load_suite(EXPECTATIONS_DIR, "hr_employees.privacy"))
    assert all(r.success for r in results.values())


def test_k_anonymity_violation():
    results = run(
        hr_frame(SAFE + [(("60-79", "X", "legal", "Legal & Compliance"), 2, ["x"])]),
        load_suite(EXPECTATIONS_DIR, "hr_employees.privacy"),
    )
    k = results[("expect_column_min_to_be_between", "_equivalence_class_size")]
    assert not k.success and k.observed["observed_value"] == 2 and k.threshold["min_value"] == 5


def test_sample_uniqueness_and_max_risk_violation():
    frame = hr_frame(SAFE + [((f"{a}", "X", "legal", "Legal"), 1, ["x"]) for a in range(3)])
    results = run(frame, load_suite(EXPECTATIONS_DIR, "hr_employees.privacy"))
    assert not results[("expect_column_values_to_be_between", "_equivalence_class_size")].success  # 3 of 16 unique > 5%
    risk = results[("expect_column_max_to_be_between", "_record_risk")]
    assert not risk.success and risk.observed["observed_value"] == 1.0


def test_l_diversity_violation():
    strict = HR.model_copy(update={"privacy": HR.privacy.model_copy(update={"l_diversity": 2})})
    frame = hr_frame([(("20-39", "F", "data", "Data Platform"), 6, ["60000-79999"])] + SAFE[1:])
    shipped = load_suite(EXPECTATIONS_DIR, "hr_employees.privacy")
    assert run(frame, shipped)[("expect_column_min_to_be_between", "_class_distinct_salary")].success  # l = 1
    # the same shipped suite, with the contract's l raised: the threshold comes from the contract alone
    assert privacy_suite(strict) == privacy_suite(HR)
    l_check = run(frame, shipped, strict)[("expect_column_min_to_be_between", "_class_distinct_salary")]
    assert not l_check.success and l_check.observed["observed_value"] == 1


def test_pii_pattern_in_published_text_is_caught_without_the_value():
    suite = load_suite(EXPECTATIONS_DIR, "finance_expense_claims.privacy")
    frame = pd.DataFrame(
        {
            "claim_id": [f"CLM-{i}" for i in range(10)],
            "currency": ["EUR"] * 10,
            "claim_date": ["2025-01"] * 10,
            "merchant": ["Acme"] * 9 + ["Call 415-555-0142"],
            "memo": ["ok"] * 10,
        }
    )
    finance = next(c for c in load_contracts() if c.dataset == "finance_expense_claims")
    outcome = run_suite(suite, privacy_frame(frame, ["claim_date"], []), parameters=privacy_parameters(finance))
    failed = [r for r in outcome.results if not r.success]
    assert [r.column for r in failed] == ["merchant"]
    assert "555-0142" not in json.dumps(outcome.to_metadata())


def test_mart_minimum_group_size_and_k_violation():
    approval = Approval(
        approved_by="DPO",
        approved_on="2026-01-01",
        expires_on="2027-01-01",
        purpose="test",
        departments=["hr"],
        publishes=["org_unit", "headcount"],
        quasi_identifiers=["org_unit"],
        min_group_size=5,
        group_size_column="headcount",
    )
    suite = mart_privacy_suite("m", approval, {"org_unit": "varchar", "headcount": "bigint"})
    frame = pd.DataFrame({"org_unit": ["A", "B"], "headcount": [12, 3]})
    outcome = run_suite(
        suite, with_group_risk_features(frame, ["org_unit"], "headcount"), parameters=mart_parameters(approval)
    )
    failed = {(r.expectation, r.column) for r in outcome.results if not r.success}
    assert failed == {
        ("expect_column_min_to_be_between", "headcount"),
        ("expect_column_min_to_be_between", "_equivalence_class_size"),
    }
    assert frame_mart_risk(frame, approval)["smallest_group"] == 3


@pytest.mark.parametrize("extra", ["salary_exact"])
def test_mart_unapproved_column_is_caught(extra):
    approval = Approval(
        approved_by="DPO",
        approved_on="2026-01-01",
        expires_on="2027-01-01",
        purpose="test",
        departments=["hr"],
        publishes=["org_unit", "headcount"],
        quasi_identifiers=["org_unit"],
        min_group_size=5,
        group_size_column="headcount",
    )
    suite = mart_privacy_suite("m", approval, {"org_unit": "varchar", "headcount": "bigint"})
    frame = pd.DataFrame({"org_unit": ["A"], "headcount": [12], extra: [1]})
    outcome = run_suite(
        suite, with_group_risk_features(frame, ["org_unit"], "headcount"), parameters=mart_parameters(approval)
    )
    assert not outcome.success and outcome.failed[0].expectation == "expect_table_columns_to_match_set"


def test_join_risk_safe_alone_identifying_together():
    """HR's age band and Support's region are each 5-anonymous alone; the mart combining them is not."""
    from pipelines.privacy.risk import risk_report

    people = pd.DataFrame(
        {
            "person": range(20),
            "age_band": ["20-39"] * 10 + ["40-59"] * 10,  # from HR
            "region": ["1"] * 9 + ["2"] + ["1"] + ["2"] * 9,  # from Support
        }
    )
    assert risk_report(people, ["age_band"]).k == 10 and risk_report(people, ["region"]).k == 10
    combined = people.groupby(["age_band", "region"], as_index=False).agg(people_count=("person", "nunique"))
    approval = Approval(
        approved_by="DPO",
        approved_on="2026-01-01",
        expires_on="2027-01-01",
        purpose="test",
        departments=["hr", "support"],
        publishes=["age_band", "region", "people_count"],
        quasi_identifiers=["age_band", "region"],
        min_group_size=5,
        group_size_column="people_count",
    )
    suite = mart_privacy_suite("m", approval, {"age_band": "varchar", "region": "varchar", "people_count": "bigint"})
    features = with_group_risk_features(combined, approval.quasi_identifiers, "people_count")
    outcome = run_suite(suite, features, parameters=mart_parameters(approval))
    k = next(r for r in outcome.results if r.column == "_equivalence_class_size")
    assert not outcome.success and not k.success and k.observed["observed_value"] == 1
    assert frame_mart_risk(combined, approval)["k_over_quasi_identifiers"] == 1


def test_suites_draw_no_progress_bars(capfd, tmp_path):
    """GE's per-validation "Calculating Metrics" bars would flood the run logs (ephemeral and Data Docs contexts)."""
    frame = privacy_frame(hr_frame(SAFE), QUASI, ["salary"])
    suite = load_suite(EXPECTATIONS_DIR, "hr_employees.privacy")
    run_suite(suite, frame, parameters=privacy_parameters(HR))
    run_suite(suite, frame, docs_root=tmp_path / "gx", parameters=privacy_parameters(HR))
    captured = capfd.readouterr()
    assert "Calculating Metrics" not in captured.err + captured.out


def test_suites_read_tables_in_chunks_as_one_piece_would():
    """Chunked reads give the frame `.df()` gives, also when a column is all null in some chunks."""
    import duckdb

    from pipelines.defs.checks import read_table

    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS SELECT i, CASE WHEN i >= 5000 THEN 'v' || i END AS s, CASE WHEN i % 7 = 0 THEN NULL ELSE i * 1.5 END AS x, "
        "DATE '2024-01-01' + CAST(i % 300 AS INTEGER) AS d FROM range(12000) r(i)"
    )
    con.execute("CREATE TABLE empty AS SELECT * FROM t LIMIT 0")
    for table in ("t", "empty"):
        expected = con.execute(f"SELECT * FROM {table}").df()
        for vectors in (1, 2, 50):
            pd.testing.assert_frame_equal(read_table(con, table, vectors), expected)


@pytest.mark.parametrize(
    "groups, passed",
    [
        (SAFE, True),
        (SAFE + [(("60-79", "X", "legal", "Legal & Compliance"), 2, ["x"])], False),  # a class of 2 < k = 5
    ],
)
def test_privacy_check_reads_the_table_through_duckdb(tmp_path, groups, passed):
    """The blocking check itself: risk from SQL over the staged table, thresholds from the contract, no values."""
    from pipelines.defs.checks import privacy_check
    from pipelines.resources import PipelineStorage

    frame = hr_frame(groups)
    with duckdb.connect() as con:
        con.register("frame", frame)
        con.execute("CREATE TABLE staged AS SELECT * FROM frame")
        result = privacy_check(con, "staged", HR, PipelineStorage(data_dir=str(tmp_path)))
    assert result.passed is passed
    risk = result.metadata["risk"].value
    assert risk["k"] == (6 if passed else 2) and risk["target_k"] == 5
    assert risk["records"] == len(frame) and risk["l_diversity"] == {"salary": 2 if passed else 1}
    published = json.dumps({k: getattr(v, "value", v) for k, v in result.metadata.items()}, default=str)
    assert "employee_id_" not in published and "email_address_" not in published
