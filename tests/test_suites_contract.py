"""Reviewed suites and contracts agree: per-column thresholds are scaffolded, and any drift between them is named."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipelines.contracts import CONTRACTS_DIR, Contract, ContractError, load_contract, load_contracts
from pipelines.governance.approvals import Approval
from pipelines.quality.runner import run_suite
from pipelines.quality.scaffold import check, main, scaffold
from pipelines.quality.suites import (
    load_suite,
    mart_parameters,
    mart_privacy_suite,
    mart_suite_drift,
    privacy_parameters,
    quality_suite,
    suite_drift,
)
from pipelines.resources import EXPECTATIONS_DIR

HR_YAML = "hr_employees.yaml"


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """Copies of the shipped contracts and department suites, free to edit."""
    contracts, suites = tmp_path / "contracts", tmp_path / "expectations"
    shutil.copytree(CONTRACTS_DIR, contracts)
    suites.mkdir()
    for contract in load_contracts():
        for layer in ("quality", "privacy"):
            shutil.copy(EXPECTATIONS_DIR / f"{contract.dataset}.{layer}.json", suites)
    return contracts, suites


def _edit_suite(suites: Path, name: str, edit) -> None:
    path = suites / f"{name}.json"
    suite = json.loads(path.read_text())
    edit(suite)
    path.write_text(json.dumps(suite, indent=2))


def _edit_contract(contracts: Path, edit, name: str = HR_YAML) -> None:
    path = contracts / name
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _expectation(suite: dict, kind: str, column: str | None = None) -> dict:
    return next(e for e in suite["expectations"] if e["type"] == kind and e["kwargs"].get("column") == column)


def _column(data: dict, name: str) -> dict:
    return next(c for c in data["columns"] if c["name"] == name)


def test_shipped_suites_agree_with_their_contracts():
    assert check() == []


def test_check_command_exit_codes(dirs, capsys):
    contracts, suites = dirs
    args = ["--check", "--no-marts", "--contracts", str(contracts), "--expectations", str(suites)]
    assert main(args) == 0
    _edit_suite(
        suites,
        "hr_employees.privacy",
        lambda s: _expectation(s, "expect_column_min_to_be_between", "_equivalence_class_size")["kwargs"].update(
            min_value=3
        ),
    )
    assert main(args) == 1
    out = capsys.readouterr().out
    assert (
        'hr_employees.privacy: expect_column_min_to_be_between(_equivalence_class_size): min_value is 3 in the suite but must be {"$PARAMETER": "k_anonymity"}, filled from the contract at run time (privacy.k_anonymity)'
        in out
    )
    assert "1 disagreement(s)" in out


NOT_NULL, IN_SET, BETWEEN, UNIQUE = (
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_be_between",
    "expect_column_values_to_be_unique",
)


@pytest.mark.parametrize(
    "suite, edit, says",
    [
        (
            "hr_employees.quality",
            lambda s: _expectation(s, NOT_NULL, "phone")["kwargs"].update(mostly=0.5),
            "hr_employees.quality: expect_column_values_to_not_be_null(phone): mostly is 0.5 in the suite but 0.95 in the contract (quality.max_null_fraction = 0.05)",
        ),
        (
            "hr_employees.quality",
            lambda s: _expectation(s, NOT_NULL, "ssn")["kwargs"].update(mostly=0.9),
            "expect_column_values_to_not_be_null(ssn): mostly=0.9 is in the suite but not in the contract (columns.ssn.nullable declares none)",
        ),
        (
            "hr_employees.quality",
            lambda s: _expectation(s, BETWEEN, "salary")["kwargs"].pop("max_value"),
            "expect_column_values_to_be_between(salary): max_value=1000000.0 from the contract (columns.salary.max_value) is not in the suite",
        ),
        (
            "hr_employees.quality",
            lambda s: _expectation(s, IN_SET, "gender")["kwargs"]["value_set"].append("U"),
            "expect_column_values_to_be_in_set(gender): value_set differs: the suite adds ['U'] (columns.gender.allowed_values)",
        ),
        (
            "hr_employees.quality",
            lambda s: s["expectations"].remove(_expectation(s, UNIQUE, "email")),
            "expect_column_values_to_be_unique(email) is missing from the suite; the contract declares it (columns.email.unique)",
        ),
        (
            "hr_employees.quality",
            lambda s: s.update(expectations=[e for e in s["expectations"] if e["kwargs"].get("column") != "hire_date"]),
            "hr_employees.quality: column 'hire_date' of the contract is not covered: the suite has none of ['expect_column_values_to_not_be_null']",
        ),
        (
            "hr_employees.quality",
            lambda s: s["expectations"].append({"type": NOT_NULL, "kwargs": {"column": "bonus"}}),
            "hr_employees.quality: expect_column_values_to_not_be_null(bonus) is for column 'bonus', which the contract does not have",
        ),
        (
            "hr_employees.quality",
            lambda s: s["expectations"].append({"type": UNIQUE, "kwargs": {"column": "org_unit"}}),
            "expect_column_values_to_be_unique(org_unit) is in the suite but the contract declares no such threshold",
        ),
        (
            "hr_employees.quality",
            lambda s: s["expectations"].append(dict(_expectation(s, UNIQUE, "email"))),
            "expect_column_values_to_be_unique(email) is listed more than once",
        ),
        (
            "hr_employees.quality",
            lambda s: _expectation(s, "expect_table_row_count_to_be_between")["kwargs"].update(min_value=100),
            "expect_table_row_count_to_be_between: min_value is 100 in the suite but 1 in the contract (quality.min_rows)",
        ),
        (
            "hr_employees.quality",
            lambda s: _expectation(s, "expect_table_columns_to_match_set")["kwargs"]["column_set"].remove("ssn"),
            "expect_table_columns_to_match_set: column_set differs: lacks ['ssn'] (columns)",
        ),
        (
            "hr_employees.privacy",
            lambda s: _expectation(s, "expect_column_max_to_be_between", "_record_risk")["kwargs"].update(
                max_value=0.5
            ),
            'expect_column_max_to_be_between(_record_risk): max_value is 0.5 in the suite but must be {"$PARAMETER": "max_prosecutor_risk"}, filled from the contract at run time (privacy.max_prosecutor_risk)',
        ),
        (
            "hr_employees.privacy",
            lambda s: _expectation(s, BETWEEN, "_equivalence_class_size")["kwargs"].update(mostly=0.8),
            'mostly is 0.8 in the suite but must be {"$PARAMETER": "1 - max_sample_uniqueness"}, filled from the contract at run time (privacy.max_sample_uniqueness)',
        ),
        (
            "hr_employees.privacy",
            lambda s: _expectation(s, "expect_column_min_to_be_between", "_class_distinct_salary")["kwargs"].update(
                min_value=2
            ),
            'expect_column_min_to_be_between(_class_distinct_salary): min_value is 2 in the suite but must be {"$PARAMETER": "l_diversity"}, filled from the contract at run time (privacy.l_diversity)',
        ),
        (
            "hr_employees.privacy",
            lambda s: _expectation(s, "expect_column_values_to_not_match_regex_list", "gender")["kwargs"][
                "regex_list"
            ].pop(),
            "expect_column_values_to_not_match_regex_list(gender): regex_list lacks 1 of the pipeline's PII patterns",
        ),
        (
            "hr_employees.privacy",
            lambda s: s["expectations"].append({"type": NOT_NULL, "kwargs": {"column": "phone"}}),
            "expect_column_values_to_not_be_null(phone) is for column 'phone', which the contract does not publish",
        ),
        (
            "hr_employees.privacy",
            lambda s: s["meta"]["quasi_identifiers"].remove("gender"),
            "hr_employees.privacy: meta.quasi_identifiers differs: lacks ['gender']",
        ),
    ],
)
def test_edited_suite_is_drift(dirs, suite, edit, says):
    contracts, suites = dirs
    _edit_suite(suites, suite, edit)
    drift = check(contracts, suites)
    assert any(says in line for line in drift), drift
    assert all(line.startswith(f"{suite}: ") for line in drift), drift


@pytest.mark.parametrize(
    "edit, says",
    [
        (
            lambda d: _column(d, "phone").update(max_null_fraction=0.84),
            "hr_employees.quality: expect_column_values_to_not_be_null(phone): mostly is 0.95 in the suite but 0.16 in the contract (columns.phone.max_null_fraction = 0.84)",
        ),
        (
            lambda d: _column(d, "salary").update(max_value=500000),
            "expect_column_values_to_be_between(salary): max_value is 1000000.0 in the suite but 500000.0 in the contract (columns.salary.max_value)",
        ),
        (
            lambda d: _column(d, "org_unit").update(allowed_values=["Sales"]),
            "expect_column_values_to_be_in_set(org_unit) is missing from the suite; the contract declares it (columns.org_unit.allowed_values)",
        ),
        (
            lambda d: _column(d, "gender").update(unique=True),
            "expect_column_values_to_be_unique(gender) is missing from the suite",
        ),
        (
            lambda d: d["quality"].update(max_rows=1000),
            "max_value is 50000000 in the suite but 1000 in the contract (quality.max_rows)",
        ),
        (
            lambda d: d["columns"].remove(_column(d, "hire_date")),
            "hr_employees.quality: expect_column_values_to_not_be_null(hire_date) is for column 'hire_date', which the contract does not have",
        ),
    ],
)
def test_edited_contract_is_drift(dirs, edit, says):
    contracts, suites = dirs
    _edit_contract(contracts, edit)
    drift = check(contracts, suites)
    assert any(says in line for line in drift), drift


@pytest.mark.parametrize(
    "edit, parameter, value",
    [
        (lambda d: d["privacy"].update(k_anonymity=10), "k_anonymity", 10),
        (lambda d: d["privacy"].update(l_diversity=2), "l_diversity", 2),
        (lambda d: d["privacy"].update(max_prosecutor_risk=0.1), "max_prosecutor_risk", 0.1),
    ],
)
def test_privacy_thresholds_live_in_the_contract_alone(dirs, edit, parameter, value):
    """A changed privacy threshold needs no suite edit: the suite names a parameter the contract fills at run time."""
    contracts, suites = dirs
    _edit_contract(contracts, edit)
    assert check(contracts, suites) == []
    contract = load_contract(contracts / HR_YAML)
    assert privacy_parameters(contract)[parameter] == value
    suite = load_suite(suites, "hr_employees.privacy")
    literal = [
        (e["kwargs"]["column"], k)
        for e in suite["expectations"]
        if e["kwargs"].get("column", "").startswith("_")
        for k, v in e["kwargs"].items()
        if k in ("min_value", "max_value", "mostly") and not isinstance(v, dict)
    ]
    assert literal == [("_equivalence_class_size", "min_value")]  # size >= 2: what "not unique" means, no threshold


def test_a_suite_run_without_its_contract_parameters_is_refused():
    suite = load_suite(EXPECTATIONS_DIR, "hr_employees.privacy")
    with pytest.raises(
        ValueError,
        match=r"needs the parameters \['k_anonymity', 'l_diversity', 'max_prosecutor_risk', 'max_sample_uniqueness'\]",
    ):
        run_suite(suite, pd.DataFrame({"gender": ["F"]}))


def test_missing_suite_is_drift(dirs):
    contracts, suites = dirs
    (suites / "support_tickets.privacy.json").unlink()
    assert check(contracts, suites) == [
        "support_tickets.privacy: the suite file support_tickets.privacy.json is missing; scaffold it with: python -m pipelines.quality.scaffold"
    ]


def test_per_column_null_fraction_is_scaffolded(dirs):
    contracts, suites = dirs
    _edit_contract(
        contracts,
        lambda d: (
            _column(d, "phone").update(max_null_fraction=0.84),
            _column(d, "hire_date").update(max_null_fraction=1),
        ),
    )
    suite = quality_suite(load_contract(contracts / HR_YAML))
    assert _expectation(suite, NOT_NULL, "phone")["kwargs"] == {"column": "phone", "mostly": 0.16}
    assert _expectation(suite, NOT_NULL, "hire_date")["kwargs"] == {"column": "hire_date", "mostly": 0.0}
    assert _expectation(suite, NOT_NULL, "gender")["kwargs"] == {
        "column": "gender",
        "mostly": 0.95,
    }  # the contract-wide default
    assert _expectation(suite, NOT_NULL, "ssn")["kwargs"] == {"column": "ssn"}  # nullable: false


def test_mostly_empty_optional_column_passes_only_with_its_own_limit():
    """An optional column 84% empty (c_arrest_date in a real export) fails the default limit and passes its own."""
    base = {
        "dataset": "x_y",
        "department": "x",
        "version": 1,
        "title": "t",
        "owner": "o",
        "steward": "s",
        "purpose": "p",
        "retention_days": 1,
        "source": {"path_pattern": "x/*.csv"},
        "quality": {"max_null_fraction": 0.2},
    }
    column = {"name": "arrest_date", "type": "date", "role": "plain_attribute", "deidentify": {"operator": "keep"}}
    frame = pd.DataFrame({"arrest_date": ["2020-01-01"] * 16 + [None] * 84})
    default = quality_suite(Contract.model_validate(base | {"columns": [column]}))
    own = quality_suite(Contract.model_validate(base | {"columns": [column | {"max_null_fraction": 0.84}]}))
    assert not run_suite(default, frame).success
    assert run_suite(own, frame).success


def test_overwrite_regenerates_thresholds_and_keeps_notes(dirs):
    contracts, suites = dirs
    note = {"notes": "reviewed 2026-02: phone is optional for contractors"}
    _edit_suite(
        suites,
        "hr_employees.quality",
        lambda s: (
            _expectation(s, NOT_NULL, "phone").update(meta=note),
            s["meta"].update(reviewed_by="HR data steward"),
        ),
    )
    _edit_contract(
        contracts, lambda d: (_column(d, "phone").update(max_null_fraction=0.6), d["privacy"].update(k_anonymity=8))
    )
    assert check(contracts, suites)
    written = scaffold(contracts, suites, overwrite=True)
    # k lives only in the contract: the privacy suite names its parameter and needs no rewrite
    assert sorted(p.name for p in written) == ["hr_employees.quality.json"]
    assert check(contracts, suites) == []
    suite = load_suite(suites, "hr_employees.quality")
    phone = _expectation(suite, NOT_NULL, "phone")
    assert phone["kwargs"]["mostly"] == 0.4 and phone["meta"] == note
    assert suite["meta"]["reviewed_by"] == "HR data steward"
    notes = {
        e["kwargs"].get("column"): e.get("meta") for e in load_suite(suites, "hr_employees.privacy")["expectations"]
    }
    assert notes["_record_risk"] == {"notes": "highest prosecutor risk"}
    assert scaffold(contracts, suites, overwrite=True) == []  # nothing left to change


def test_suite_drift_compares_one_suite():
    hr = next(c for c in load_contracts() if c.dataset == "hr_employees")
    assert suite_drift(hr, load_suite(EXPECTATIONS_DIR, "hr_employees.quality")) == []
    finance = load_suite(EXPECTATIONS_DIR, "finance_expense_claims.quality")
    drift = suite_drift(hr, finance)
    assert drift[0] == "hr_employees.quality: name is 'finance_expense_claims.quality', expected 'hr_employees.quality'"


def test_mart_suite_drift():
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
    columns = {"org_unit": "varchar", "headcount": "bigint"}
    suite = mart_privacy_suite("m", approval, columns)
    assert mart_suite_drift("m", approval, columns, suite) == []
    _expectation(suite, "expect_column_min_to_be_between", "headcount")["kwargs"]["min_value"] = 3
    assert mart_suite_drift("m", approval, columns, suite) == [
        'm.privacy: expect_column_min_to_be_between(headcount): min_value is 3 in the suite but must be {"$PARAMETER": "min_group_size"}, filled from the approval at run time (approval.min_group_size)'
    ]
    assert mart_parameters(approval) == {"min_group_size": 5}


@pytest.mark.parametrize(
    "edit, field_named, says",
    [
        (
            lambda d: _column(d, "phone").update(max_null_fraction=1.5),
            "columns.3.max_null_fraction",
            "less than or equal to 1",
        ),
        (
            lambda d: _column(d, "phone").update(max_null_fraction=-0.1),
            "columns.3.max_null_fraction",
            "greater than or equal to 0",
        ),
        (
            lambda d: _column(d, "ssn").update(max_null_fraction=0.1),
            "columns.4.max_null_fraction",
            "column 'ssn': nullable: false allows no empty values",
        ),
        (
            lambda d: _column(d, "salary").update(min_value=2_000_000),
            "columns.10.max_value",
            "column 'salary': max_value 1000000 is below min_value 2000000",
        ),
        (
            lambda d: _column(d, "hire_date").update(min_value=0),
            "columns.11.min_value",
            "ranges apply to integer or decimal columns, not date",
        ),
        (
            lambda d: _column(d, "gender").update(allowed_values=[]),
            "columns.6.allowed_values",
            "an empty list allows nothing",
        ),
        (
            lambda d: _column(d, "gender").update(allowed_values=["F", "M", "F"]),
            "columns.6.allowed_values",
            "listed twice: 'F'",
        ),
        (lambda d: d["quality"].update(min_rows=10, max_rows=5), "quality.max_rows", "max_rows 5 is below min_rows 10"),
    ],
)
def test_bad_thresholds_name_file_and_field(tmp_path, edit, field_named, says):
    shutil.copy(CONTRACTS_DIR / HR_YAML, tmp_path / HR_YAML)
    _edit_contract(tmp_path, edit)
    with pytest.raises(ContractError) as err:
        load_contract(tmp_path / HR_YAML)
    message = str(err.value)
    assert (
        message.startswith(f"invalid contract {HR_YAML}:") and f"field '{field_named}'" in message and says in message
    ), message
