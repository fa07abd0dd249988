"""Tests for the seeded demo-data generator (demo)."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from demo import generate, generate_files
from demo.__main__ import main
from demo.generator import (
    SPECS,
    build_employees,
    build_vocabulary,
    csv_records,
    rank_within_groups,
    stream,
)

ROWS = 240
SEED = 11
AS_OF = date(2026, 1, 31)
DATASET_DIRS = {spec.name: spec for spec in SPECS.values()}
ENTITY_TYPES = {
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "US_SSN",
    "DATE_TIME",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "LOCATION",
    "EMPLOYEE_ID",
    "HOSTNAME",
}
PHONE_RE = re.compile(r"^(\(\d{3}\) \d{3}-\d{4}|\+1-\d{3}-\d{3}-\d{4}|\d{3}-\d{3}-\d{4}|\d{3}\.\d{3}\.\d{4})$")
IBAN_LENGTHS = {"DE": 22, "GB": 22, "FR": 27, "NL": 18}


# ---------------------------------------------------------------------------- helpers


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a generated CSV as dicts."""
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def header(path: Path) -> list[str]:
    """The header row of a CSV."""
    with path.open(encoding="utf-8", newline="") as handle:
        return next(csv.reader(handle))


def all_bytes(root: Path) -> dict[str, bytes]:
    """Every file under root keyed by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def luhn_ok(number: str) -> bool:
    """Independent Luhn check (string based)."""
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """Independent ISO 13616 mod-97 check."""
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def age_on(born: date, day: date) -> int:
    """Completed years of age on a day."""
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated data set shared by the read-only tests."""
    root = tmp_path_factory.mktemp("demo")
    generate(root, ROWS, SEED)
    return root


@pytest.fixture(scope="module")
def data(out: Path) -> dict[str, list[dict[str, str]]]:
    """Parsed CSV rows per dataset name."""
    return {name: read_csv(spec.path(out)) for name, spec in DATASET_DIRS.items()}


@pytest.fixture(scope="module")
def truth(out: Path) -> list[dict[str, str]]:
    """Rows of pii_values.csv."""
    return read_csv(out / "_ground_truth" / "pii_values.csv")


@pytest.fixture(scope="module")
def spans(out: Path) -> list[dict]:
    """Records of text_spans.jsonl."""
    lines = (out / "_ground_truth" / "text_spans.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


# ---------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes(out: Path, tmp_path: Path) -> None:
    build_vocabulary.cache_clear()  # rebuild the Faker pools too, not just the numpy parts
    generate(tmp_path, ROWS, SEED)
    assert all_bytes(tmp_path) == all_bytes(out)


def test_different_seed_differs(out: Path, tmp_path: Path) -> None:
    generate(tmp_path, ROWS, SEED + 1)
    other, ours = all_bytes(tmp_path), all_bytes(out)
    assert other.keys() == ours.keys()
    assert all(other[k] != ours[k] for k in ours)


def test_department_subset_matches_full_run(out: Path, tmp_path: Path) -> None:
    paths = generate(tmp_path, ROWS, SEED, departments=["finance"])
    assert set(paths) == {"finance_expense_claims"}
    assert paths["finance_expense_claims"].read_bytes() == SPECS["finance"].path(out).read_bytes()
    assert not SPECS["hr"].path(tmp_path).exists()
    subset = read_csv(tmp_path / "_ground_truth" / "pii_values.csv")
    assert {r["dataset"] for r in subset} == {"finance_expense_claims"}


def test_output_independent_of_chunk_size(out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("demo.generator.CHUNK_ROWS", 37)
    generate(tmp_path, ROWS, SEED)
    assert all_bytes(tmp_path) == all_bytes(out)


# ---------------------------------------------------------------------------- shape


def test_generate_files_lists_everything(tmp_path: Path) -> None:
    files = generate_files(tmp_path, 5, SEED)
    assert [f.name for f in files] == [
        "hr_employees",
        "finance_expense_claims",
        "it_security_incidents",
        "support_tickets",
        "pii_values",
        "text_spans",
    ]
    assert all(f.path.is_file() for f in files)
    assert generate(tmp_path, 5, SEED) == {f.name: f.path for f in files[:4]}


def test_paths_and_headers(out: Path) -> None:
    assert SPECS["hr"].path(out) == out / "hr" / "employees_2026-01-31.csv"
    assert SPECS["finance"].path(out) == out / "finance" / "expense_claims_2026-01-31.csv"
    assert SPECS["it"].path(out) == out / "it" / "security_incidents_2026-01-31.csv"
    assert SPECS["support"].path(out) == out / "support" / "tickets_2026-01-31.csv"
    assert header(SPECS["hr"].path(out)) == [
        "employee_id",
        "full_name",
        "email",
        "phone",
        "ssn",
        "date_of_birth",
        "gender",
        "postcode",
        "job_title",
        "org_unit",
        "salary",
        "hire_date",
    ]
    assert header(SPECS["finance"].path(out)) == [
        "claim_id",
        "employee_id",
        "card_number",
        "iban",
        "amount",
        "currency",
        "merchant",
        "claim_date",
        "memo",
    ]
    assert header(SPECS["it"].path(out)) == [
        "incident_id",
        "reported_at",
        "reporter_email",
        "host",
        "ip_address",
        "category",
        "severity",
        "description",
    ]
    assert header(SPECS["support"].path(out)) == [
        "ticket_id",
        "customer_name",
        "customer_email",
        "customer_phone",
        "postcode",
        "opened_at",
        "product",
        "satisfaction",
        "body",
    ]
    assert header(out / "_ground_truth" / "pii_values.csv") == ["dataset", "column", "entity_type", "value"]


def test_row_counts(data: dict[str, list[dict[str, str]]]) -> None:
    assert len(data["hr_employees"]) == ROWS
    assert len(data["finance_expense_claims"]) == 2 * ROWS
    assert len(data["it_security_incidents"]) == ROWS // 2
    assert len(data["support_tickets"]) == ROWS


def test_plain_newlines_and_utf8(out: Path) -> None:
    for spec in SPECS.values():
        raw = spec.path(out).read_bytes()
        raw.decode("utf-8")
        assert b"\r" not in raw and raw.endswith(b"\n")


def test_tiny_run(tmp_path: Path) -> None:
    files = {f.name: f.rows for f in generate_files(tmp_path, 1, SEED)}
    assert files["hr_employees"] == 1 and files["it_security_incidents"] == 1
    assert files["finance_expense_claims"] == 2 and files["support_tickets"] == 1


# ---------------------------------------------------------------------------- keys and formats


def test_unique_keys_and_formats(data: dict[str, list[dict[str, str]]]) -> None:
    hr = data["hr_employees"]
    for column in ("employee_id", "email", "ssn"):
        assert len({r[column] for r in hr}) == len(hr), column
    assert all(re.fullmatch(r"E\d{7}", r["employee_id"]) for r in hr)
    assert all(re.fullmatch(r"[a-z]+\.[a-z]+\d+@example-corp\.com", r["email"]) for r in hr)
    assert all(PHONE_RE.match(r["phone"]) for r in hr)
    assert len({PHONE_RE.match(r["phone"]).group(0)[0] for r in hr}) > 1  # formats vary
    assert all(re.fullmatch(r"\d{5}", r["postcode"]) for r in hr)
    assert {r["gender"] for r in hr} <= {"F", "M", "X"}
    assert all(r["salary"].isdigit() for r in hr)
    for name, column, pattern in (
        ("finance_expense_claims", "claim_id", r"CLM-\d{7}"),
        ("it_security_incidents", "incident_id", r"INC-\d{6}"),
        ("support_tickets", "ticket_id", r"TCK-\d{7}"),
    ):
        keys = [r[column] for r in data[name]]
        assert len(set(keys)) == len(keys)
        assert all(re.fullmatch(pattern, k) for k in keys)


def test_ssns_look_valid(data: dict[str, list[dict[str, str]]]) -> None:
    for row in data["hr_employees"]:
        area, group, serial = row["ssn"].split("-")
        assert len(area) == 3 and len(group) == 2 and len(serial) == 4
        assert area not in ("000", "666") and not area.startswith("9")
        assert group != "00" and serial != "0000"


def test_dates_are_consistent(data: dict[str, list[dict[str, str]]]) -> None:
    for row in data["hr_employees"]:
        born = date.fromisoformat(row["date_of_birth"])
        hired = date.fromisoformat(row["hire_date"])
        assert 18 <= age_on(born, AS_OF) <= 70
        eighteenth = born.replace(year=born.year + 18, day=28 if (born.month, born.day) == (2, 29) else born.day)
        assert eighteenth <= hired < AS_OF
    assert all(date.fromisoformat(r["claim_date"]).year == 2025 for r in data["finance_expense_claims"])
    for name, column in (("it_security_incidents", "reported_at"), ("support_tickets", "opened_at")):
        for row in data[name]:
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", row[column])
            assert datetime.fromisoformat(row[column]).year == 2025


def test_cards_are_luhn_valid(data: dict[str, list[dict[str, str]]]) -> None:
    cards = [r["card_number"] for r in data["finance_expense_claims"]]
    assert all(re.fullmatch(r"\d{16}|\d{4} \d{4} \d{4} \d{4}", c) for c in cards)
    assert any(" " in c for c in cards) and any(" " not in c for c in cards)
    assert all(luhn_ok(c.replace(" ", "")) for c in cards)


def test_ibans_have_valid_checksums(data: dict[str, list[dict[str, str]]]) -> None:
    ibans = {r["iban"] for r in data["finance_expense_claims"]}
    assert {i[:2] for i in ibans} == set(IBAN_LENGTHS)
    for iban in ibans:
        assert len(iban) == IBAN_LENGTHS[iban[:2]] and " " not in iban
        assert iban_ok(iban), iban


def test_finance_values(data: dict[str, list[dict[str, str]]], spans: list[dict]) -> None:
    rows = data["finance_expense_claims"]
    assert all(re.fullmatch(r"\d+\.\d\d", r["amount"]) for r in rows)
    assert {r["currency"] for r in rows} == {"EUR", "USD", "GBP"}
    memo_share = sum(r["dataset"] == "finance_expense_claims" for r in spans) / len(rows)
    assert 0.3 < memo_share < 0.5  # about 40% of memos name people


def test_it_values(data: dict[str, list[dict[str, str]]]) -> None:
    rows = data["it_security_incidents"]
    assert {r["severity"] for r in rows} <= {"low", "medium", "high", "critical"}
    for row in rows:
        parts = row["ip_address"].split(".")
        assert len(parts) == 4 and all(0 <= int(p) <= 255 for p in parts)
        assert re.fullmatch(r"(wks|lap)-\d{5}(\.corp\.example-corp\.com)?|srv-[a-z]+-\d{3}", row["host"])
    private = [r["ip_address"].startswith(("10.", "172.", "192.168.")) for r in rows]
    assert any(private) and not all(private)


def test_support_values(data: dict[str, list[dict[str, str]]]) -> None:
    rows = data["support_tickets"]
    assert {r["satisfaction"] for r in rows} <= {"", "1", "2", "3", "4", "5"}
    assert 0 < sum(r["satisfaction"] == "" for r in rows) < len(rows) * 0.25
    assert not any(r["customer_email"].endswith("@example-corp.com") for r in rows)
    by_email: dict[str, set[str]] = {}
    for row in rows:
        by_email.setdefault(row["customer_email"], set()).add(row["customer_name"])
    assert all(len(names) == 1 for names in by_email.values())  # one mailbox per customer


# ---------------------------------------------------------------------------- cross-department links


def test_referential_integrity(data: dict[str, list[dict[str, str]]]) -> None:
    hr_ids = {r["employee_id"] for r in data["hr_employees"]}
    hr_emails = {r["email"] for r in data["hr_employees"]}
    assert {r["employee_id"] for r in data["finance_expense_claims"]} <= hr_ids
    assert {r["reporter_email"] for r in data["it_security_incidents"]} <= hr_emails


def test_people_recur_across_departments(data: dict[str, list[dict[str, str]]]) -> None:
    hr_names = {r["full_name"] for r in data["hr_employees"]}
    customers = {r["customer_name"] for r in data["support_tickets"]}
    assert len(customers & hr_names) >= 5  # ~10% of customers are employees
    memo_text = " ".join(r["memo"] for r in data["finance_expense_claims"])
    assert sum(name in memo_text for name in hr_names) >= 20


def test_employee_keys_unique_at_scale() -> None:
    vocab = build_vocabulary(SEED)
    emp = build_employees(stream(SEED, "employees"), vocab, 200_000)
    idx = np.arange(emp.size)
    for values in (emp.ids(idx), emp.emails(vocab, idx), emp.ssn):
        assert len(set(values.tolist())) == emp.size


def test_rank_within_groups() -> None:
    keys = np.array([5, 3, 5, 5, 3, 9])
    assert rank_within_groups(keys).tolist() == [0, 0, 1, 2, 1, 0]


# ---------------------------------------------------------------------------- ground truth


def test_span_offsets_match_text(data: dict[str, list[dict[str, str]]], spans: list[dict]) -> None:
    assert spans
    seen = set()
    for record in spans:
        spec = DATASET_DIRS[record["dataset"]]
        assert record["column"] == spec.text_column
        text = data[record["dataset"]][record["row"]][record["column"]]
        assert record["spans"]
        previous_end = 0
        for span in record["spans"]:
            assert span["entity_type"] in ENTITY_TYPES
            assert text[span["start"] : span["end"]] == span["value"]
            assert span["start"] >= previous_end
            previous_end = span["end"]
        seen.add((record["dataset"], record["row"]))
    assert len(seen) == len(spans)  # one record per cell


def test_cells_without_spans_hold_no_generated_pii(data: dict[str, list[dict[str, str]]], spans: list[dict]) -> None:
    with_spans = {(r["dataset"], r["row"]) for r in spans}
    emails = {r["email"] for r in data["hr_employees"]}
    names = {r["full_name"] for r in data["hr_employees"]}
    for name in ("finance_expense_claims", "it_security_incidents", "support_tickets"):
        column = DATASET_DIRS[name].text_column
        for i, row in enumerate(data[name]):
            if (name, i) not in with_spans:
                text = row[column]
                assert "@" not in text and not re.search(r"\d{3}[-.) ]+\d{3}[-.]\d{4}", text)
                assert not any(n in text for n in names)
                assert not any(e in text for e in emails)


def test_text_ground_truth_matches_spans(truth: list[dict[str, str]], spans: list[dict]) -> None:
    from_spans = {(r["dataset"], r["column"], s["entity_type"], s["value"]) for r in spans for s in r["spans"]}
    text_columns = {(s.name, s.text_column) for s in SPECS.values()}
    listed = {
        (r["dataset"], r["column"], r["entity_type"], r["value"])
        for r in truth
        if (r["dataset"], r["column"]) in text_columns
    }
    assert listed == from_spans


def test_identifier_ground_truth_matches_csv(
    data: dict[str, list[dict[str, str]]], truth: list[dict[str, str]]
) -> None:
    for spec in SPECS.values():
        for column, entity in spec.identifiers.items():
            in_csv = {r[column] for r in data[spec.name]}
            listed = {r["value"] for r in truth if r["dataset"] == spec.name and r["column"] == column}
            types = {r["entity_type"] for r in truth if r["dataset"] == spec.name and r["column"] == column}
            assert listed == in_csv, (spec.name, column)
            assert types == {entity}


def test_ground_truth_rows_are_distinct(truth: list[dict[str, str]]) -> None:
    keys = [(r["dataset"], r["column"], r["value"]) for r in truth]
    assert len(keys) == len(set(keys))
    assert {r["entity_type"] for r in truth} <= ENTITY_TYPES
    assert {"claim_id", "incident_id", "ticket_id", "postcode"}.isdisjoint({r["column"] for r in truth})


# ---------------------------------------------------------------------------- CSV writing and CLI


def test_csv_records_match_stdlib_quoting() -> None:
    columns = [["plain", 'say "hi"', "a,b", "", "ümlaut, é"], ["1", "2", "3", "4", "line"]]
    expected = io.StringIO()
    csv.writer(expected, lineterminator="\n").writerows(zip(*columns))
    got = bytes(csv_records([pa.array(c, type=pa.string()) for c in columns])).decode("utf-8")
    assert got == expected.getvalue()


def test_cli_prints_one_line_per_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--rows", "10", "--seed", str(SEED), "--out", str(tmp_path), "--departments", "hr,it"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("hr_employees") and " 10 rows" in lines[0]
    assert lines[1].startswith("it_security_incidents") and " 5 rows" in lines[1]


@pytest.mark.parametrize(
    "argv",
    [
        ["--rows", "0"],
        ["--rows", "-3"],
        ["--rows", "ten"],
        ["--rows", "2000000"],
        ["--rows", "5", "--departments", "legal"],
        ["--rows", "5", "--seed", "-1"],
    ],
)
def test_cli_rejects_bad_arguments(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = argv + (["--seed", "1"] if "--seed" not in argv else []) + ["--out", str(tmp_path)]
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == 2
    assert "error: argument" in capsys.readouterr().err


def test_generate_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rows"):
        generate(tmp_path, 0, 1)
    with pytest.raises(ValueError, match="department"):
        generate(tmp_path, 5, 1, departments=["hr", "marketing"])
