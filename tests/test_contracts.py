"""Contract validation: good contracts load; bad ones fail with a message naming the field."""

from pathlib import Path

import pytest
import yaml

from pipelines.contracts import CONTRACTS_DIR, ContractError, load_contract, load_contracts


def test_shipped_contracts_load():
    contracts = load_contracts()
    assert {c.dataset for c in contracts} == {
        "hr_employees",
        "finance_expense_claims",
        "it_security_incidents",
        "support_tickets",
    }
    for c in contracts:
        assert len(c.version_hash) == 16
        assert c.published_columns, c.dataset


def _base() -> dict:
    return yaml.safe_load((CONTRACTS_DIR / "hr_employees.yaml").read_text())


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "mutate, field_named",
    [
        (lambda d: d.pop("owner"), "owner"),
        (lambda d: d.update(retention_days=0), "retention_days"),
        (lambda d: d.update(dataset="Bad Name"), "dataset"),
        (lambda d: d["columns"][0].update(type="text"), "columns.0.type"),
        (lambda d: d["columns"][0].update(role="secret"), "columns.0.role"),
        (lambda d: d["columns"][1].update(deidentify={"operator": "shred"}), "columns.1.deidentify"),
        (lambda d: d["columns"][1].update(deidentify={"operator": "keep"}), "columns.1"),
        (lambda d: d["columns"][3].update(deidentify={"operator": "mask"}), "columns.3.deidentify.mask"),
        (
            lambda d: d["columns"][5].update(deidentify={"operator": "generalize", "method": "age_band"}),
            "columns.5.deidentify.generalize",
        ),
        (lambda d: d["columns"].append(dict(d["columns"][0])), "columns"),
        (lambda d: d["source"].update(encodng="utf-8"), "source.encodng"),
        (lambda d: d["privacy"].update(k_anonymity=0), "privacy.k_anonymity"),
    ],
)
def test_bad_contract_names_the_field(tmp_path, mutate, field_named):
    data = _base()
    mutate(data)
    with pytest.raises(ContractError) as err:
        load_contract(_write(tmp_path, data))
    assert f"field '{field_named}" in str(err.value), str(err.value)


def test_free_text_must_be_scanned(tmp_path):
    data = yaml.safe_load((CONTRACTS_DIR / "finance_expense_claims.yaml").read_text())
    memo = next(c for c in data["columns"] if c["name"] == "memo")
    memo["deidentify"] = {"operator": "keep"}
    with pytest.raises(ContractError, match="free_text column must be scanned"):
        load_contract(_write(tmp_path, data))


def test_not_yaml_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ContractError, match="expected a mapping"):
        load_contract(path)


def test_duplicate_dataset(tmp_path):
    text = (CONTRACTS_DIR / "hr_employees.yaml").read_text()
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yaml").write_text(text)
    with pytest.raises(ContractError, match="declared twice"):
        load_contracts(tmp_path)


@pytest.mark.parametrize(
    ("terms_from", "mutate", "message"),
    [
        (["products"], None, "names 'products', which is not a column"),
        (["customer_email"], None, "only a kept plain_attribute column"),
        (["satisfaction"], None, "only a kept plain_attribute column"),  # a sensitive attribute
        (["product"], lambda cols: cols["product"].update(tolerate_entities=["PERSON"]), "tolerates names or places"),
    ],
)
def test_non_personal_terms_come_from_kept_plain_columns(tmp_path, terms_from, mutate, message):
    data = yaml.safe_load((CONTRACTS_DIR / "support_tickets.yaml").read_text())
    columns = {c["name"]: c for c in data["columns"]}
    columns["body"]["deidentify"]["non_personal_terms_from"] = terms_from
    if mutate:
        mutate(columns)
    with pytest.raises(ContractError) as err:
        load_contract(_write(tmp_path, data))
    assert "non_personal_terms_from" in str(err.value) and message in str(err.value), str(err.value)


def _source(**changes):
    def mutate(d: dict) -> None:
        d["source"].update(changes)

    return mutate


@pytest.mark.parametrize(
    "mutate, field_named, says",
    [
        (lambda d: d["privacy"].update(k_anonymity=1), "privacy.k_anonymity", "at least 2"),
        (_source(path_pattern="hr/employes_*.cvs"), "source.path_pattern", "must end with '.csv'"),
        (_source(path_pattern="/data/landing/hr/employees_*.csv"), "source.path_pattern", "relative"),
        (_source(path_pattern="hr/../finance/expense_claims_*.csv"), "source.path_pattern", "'..'"),
        (_source(path_pattern="finance/employees_*.csv"), "source.path_pattern", "department 'hr'"),
        (_source(path_pattern="employees_*.csv"), "source.path_pattern", "'<department>/<file pattern>'"),
        (_source(path_pattern="hr/employees_[0-9.csv"), "source.path_pattern", "unclosed '['"),
        (_source(path_pattern="hr/employees_{a,b}.csv"), "source.path_pattern", "brace expansion"),
        (_source(path_pattern="hr\\employees_*.csv"), "source.path_pattern", "separator"),
        (_source(rename={"Employee ID": "employe_id"}), "source.rename", "not a column of this contract"),
        (
            _source(rename={"Employee ID": "employee_id", "EmpNo": "employee_id"}),
            "source.rename",
            "both map to column 'employee_id'",
        ),
        (_source(rename={"Employee ID": "Employee ID"}), "source.rename", "not a column name"),
        (_source(rename={"salary#0": "salary"}), "source.rename", "counted from 1"),
        (
            _source(rename={"decile#2": "salary"}, ignore_columns=["decile"]),
            "source.ignore_columns",
            "both renamed and ignored",
        ),
        (
            _source(rename={"Pay": "salary"}, ignore_columns=["Pay"]),
            "source.ignore_columns",
            "both renamed and ignored",
        ),
        (_source(ignore_columns=["notes", "notes"]), "source.ignore_columns", "listed twice"),
        (_source(ignore_columns=["salary"]), "source.ignore_columns", "column 'salary' has no source"),
        (_source(rename={"full_name": "employee_id"}), "source.rename", "column 'full_name' has no source"),
    ],
)
def test_source_and_privacy_checked_at_load(tmp_path, mutate, field_named, says):
    data = _base()
    mutate(data)
    with pytest.raises(ContractError) as err:
        load_contract(_write(tmp_path, data))
    assert f"field '{field_named}'" in str(err.value) and says in str(err.value), str(err.value)
    assert "c.yaml" in str(err.value)


def test_export_mapping_loads(tmp_path):
    data = _base()
    data["source"].update(
        rename={"Employee ID": "employee_id", "salary#1": "salary"},
        ignore_columns=["internal_note", "salary#2"],
        path_pattern="hr/exports/employees_[0-9]*.csv",
    )
    source = load_contract(_write(tmp_path, data)).source
    assert source.rename == {"Employee ID": "employee_id", "salary#1": "salary"}
    assert source.ignore_columns == ["internal_note", "salary#2"]


def test_shipped_landing_patterns_are_in_their_department():
    for c in load_contracts():
        assert c.source.path_pattern.startswith(c.department + "/") and c.source.path_pattern.endswith(".csv")
