"""Names that are everyday words: a department whose surnames are `Sales`, `Black`, `Watts`... declared PERSON beside
the demo departments, through the real de-identification path (known identifiers from every raw table)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from presidio_analyzer import RecognizerResult

from bench.common import BENCH_KEY
from bench.data import bench_context, prepare
from pipelines.contracts import Column, load_contract
from pipelines.ingest import SOURCE_FILE_COLUMN, ingest_file, quote_ident
from pipelines.privacy import deidentify as deid
from pipelines.privacy import free_text
from pipelines.privacy.classify import UndeclaredPIIError, classify_frame
from pipelines.privacy.known import NAME_TOKEN, RECOGNIZER_NAME, KnownIdentifiers, known_identifiers_from_raw
from pipelines.privacy.operators import pseudonym

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "collisions"
OUTREACH = load_contract(FIXTURES / "contracts" / "outreach_participants.yaml")
LANDED = FIXTURES / "landing" / "outreach" / "participants_2025-01.csv"
MEMO = "Taxi with Marcus Black to the community centre"  # another department's free text naming a participant


def participants() -> list[dict]:
    with LANDED.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The demo departments and the outreach fixture in one raw database, each de-identified into `target`."""
    prep = prepare(tmp_path_factory.mktemp("collisions"), 300, 5)
    ingest_file(LANDED, OUTREACH, prep.con, OUTREACH.dataset)
    prep.con.execute(
        "UPDATE finance_expense_claims SET memo = ? WHERE claim_id = (SELECT min(claim_id) FROM finance_expense_claims)",
        [MEMO],
    )
    contracts = [*prep.contracts, OUTREACH]
    known = known_identifiers_from_raw(prep.con, contracts)
    target = duckdb.connect()
    results = {
        c.dataset: deid.deidentify_table(
            prep.con, c.dataset, target, c.dataset, c, bench_context(), known=known, exclude=(SOURCE_FILE_COLUMN,)
        )
        for c in contracts
    }
    tables = {c.dataset: target.execute(f"SELECT * FROM {quote_ident(c.dataset)}").df() for c in contracts}
    return known, results, tables


def cells(frame: pd.DataFrame) -> list[str]:
    return [str(v) for column in frame.columns for v in frame[column].dropna().tolist()]


def test_surnames_that_are_words_are_indexed_apart_and_joined_with_first_names(world):
    known, _, _ = world
    assert known.contains(NAME_TOKEN, "Sales") and not known.contains("PERSON", "Sales")
    assert known.contains("PERSON", "Marcus Black") and known.contains("PERSON", "Black Marcus")  # one record's parts
    assert known.count_matches(pd.Series(["Sales", "Black", "Compton"])) == Counter()
    assert known.counts()[NAME_TOKEN] >= 40  # counts() is callable (the known_identifiers asset's metadata)


def test_every_department_passes_beside_the_colliding_one(world):
    _, results, _ = world
    assert set(results) == {
        "hr_employees",
        "finance_expense_claims",
        "support_tickets",
        "it_security_incidents",
        "outreach_participants",
    }
    hr_org_unit = results["hr_employees"].residual_scan["columns"]["org_unit"]
    assert (
        hr_org_unit["residual"] == {} and hr_org_unit["name_tokens_without_evidence"] >= 1
    )  # `Sales` collided, passed
    race = results["outreach_participants"].residual_scan["columns"]["race"]
    assert race["residual"] == {} and race["name_tokens_without_evidence"] >= 2  # Black, White


def test_the_colliding_department_leaks_nothing_anywhere(world):
    _, _, tables = world
    published = "\n".join(text for frame in tables.values() for text in cells(frame))
    for person in participants():
        for value in (
            f"{person['first_name']} {person['last_name']}",
            person["email"],
            person["phone"],
            f"Ms {person['last_name']}",
        ):
            assert value not in published


def test_a_full_name_in_another_departments_text_is_masked(world):
    _, _, tables = world
    memos = tables["finance_expense_claims"]["memo"].dropna().tolist()
    assert not any("Marcus Black" in m for m in memos)
    assert any(pseudonym(BENCH_KEY.encode(), "PERSON", "Marcus Black") in m for m in memos)


def test_demo_hr_keeps_sales_as_an_org_unit(world):
    _, _, tables = world
    assert "Sales" in set(tables["hr_employees"]["org_unit"])
    assert {"Compton", "Watts", "Lennox", "Hawthorne"} <= set(tables["outreach_participants"]["neighbourhood"])
    assert {"Black", "White"} <= set(tables["outreach_participants"]["race"])


def test_label_text_keeps_its_words_and_masks_identifiers(world):
    _, results, tables = world
    labels = set(tables["outreach_participants"]["charge_description"])
    assert {
        "Felony Battery (Dom Strang)",
        "Possess Cannabis/20 Grams Or Less",
        "Disorderly Conduct",
        "Deliver 3,4 Methylenediox",
    } <= labels
    person = pseudonym(BENCH_KEY.encode(), "PERSON", "Marcus Black")
    assert f"Battery on {person}" in labels  # a known full name inside a label
    assert not any("555-" in v or "@" in v for v in labels)  # the phone and the email inside labels
    record = next(c for c in results["outreach_participants"].columns if c.column == "charge_description")
    assert record.params["label_text"] is True
    assert record.params["non_personal_terms"]["own_values"] == {"min_records": 3, "terms": 10, "max_terms": 1000}


def test_a_title_is_evidence_for_a_one_word_name_in_free_text():
    known = KnownIdentifiers()
    known.add("PERSON", ["Sales", "Watts"])
    found = known.find_in_text("Ms Sales asked to move the Watts session with the Sales team.")
    assert [(r.start, r.end) for r in found] == [(3, 8)]


# --- tolerate_entities: the same rule in every gate, recorded --------------------------------------------


def _contract(columns: list[dict]):
    base = OUTREACH.model_dump(exclude={"columns", "path", "version_hash"})
    base["columns"] = [
        {
            "name": "participant_id",
            "type": "string",
            "role": "direct_identifier",
            "entity": "PARTICIPANT_ID",
            "deidentify": {"operator": "suppress"},
        },
        *columns,
    ]
    base["privacy"] = {"k_anonymity": 2, "max_suppression": 0.0}
    return type(OUTREACH).model_validate(base)


OFFICE_PHONES = [f"(213) 555-{100 + i:04d}" for i in range(12)]


def test_classification_tolerates_a_detectors_finding_and_records_it():
    frame = pd.DataFrame({"participant_id": [f"P{i}" for i in range(12)], "office": OFFICE_PHONES})
    plain = {"name": "office", "type": "string", "role": "plain_attribute", "deidentify": {"operator": "keep"}}
    with pytest.raises(UndeclaredPIIError, match="PHONE_NUMBER"):
        classify_frame(frame, _contract([plain]), known=None, model_name=None)
    tolerant = _contract([plain | {"tolerate_entities": ["PHONE_NUMBER"]}])
    result = classify_frame(frame, tolerant, known=None, model_name=None)[0]
    assert result.undeclared == [] and result.tolerated == {"PHONE_NUMBER": 12}
    known = KnownIdentifiers()
    known.add("PHONE_NUMBER", OFFICE_PHONES)  # a known person's phone is a fact, not a guess: never tolerated
    with pytest.raises(UndeclaredPIIError, match="PHONE_NUMBER"):
        classify_frame(frame, tolerant, known=known, model_name=None)


def test_structured_gate_needs_evidence_for_a_name_token_and_honours_tolerance():
    known = KnownIdentifiers()
    known.add("PERSON", ["Black", "Tanya White"])
    values = pd.Series(["Black", "Grey"])
    column = Column.model_validate(
        {"name": "coach_name", "type": "string", "role": "plain_attribute", "deidentify": {"operator": "keep"}}
    )
    colour = column.model_copy(update={"name": "colour"})
    assert deid.structured_residual(values, known, colour) == {"residual": {}, "name_tokens_without_evidence": 1}
    assert deid.structured_residual(values, known, column) == {"residual": {"PERSON": 1}}
    tolerant = column.model_copy(update={"tolerate_entities": ["PERSON"]})
    assert deid.structured_residual(values, known, tolerant) == {"residual": {}, "tolerated": {"PERSON": 1}}
    assert deid.structured_residual(pd.Series(["Tanya White"]), known, tolerant) == {"residual": {"PERSON": 1}}


def test_name_token_in_a_name_column_is_undeclared_pii_unless_tolerated():
    known = KnownIdentifiers()
    known.add("PERSON", ["Black", "White", "Brown", "Green"])
    frame = pd.DataFrame(
        {
            "participant_id": ["P1", "P2", "P3", "P4"],
            "coach_name": ["Black", "White", "Brown", "Green"],
            "colour": ["Black", "White", "Brown", "Green"],
        }
    )
    kept = {"type": "string", "role": "plain_attribute", "deidentify": {"operator": "keep"}}
    results = classify_frame(frame, _contract([{"name": "colour", **kept}]), known=known, model_name=None)
    assert results[0].undeclared == [] and results[0].name_tokens_without_evidence == 4
    with pytest.raises(UndeclaredPIIError, match="coach_name"):
        classify_frame(frame, _contract([{"name": "coach_name", **kept}]), known=known, model_name=None)
    tolerant = _contract([{"name": "coach_name", **kept, "tolerate_entities": ["PERSON"]}])
    assert classify_frame(frame, tolerant, known=known, model_name=None)[0].tolerated == {"PERSON": 4}


def _detector(entity: str, start: int, end: int, recognizer: str = "FilteredSpacyRecognizer") -> RecognizerResult:
    return RecognizerResult(
        entity, start, end, 0.85, recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: recognizer}
    )


def test_text_residual_gate_honours_tolerance_and_records_it(monkeypatch):
    """A finding that survives every rescan blocks, unless the column tolerates its entity (a detector's only)."""
    monkeypatch.setattr(free_text, "_findings", lambda texts, *a, **k: [[_detector("LOCATION", 0, 4)] for _ in texts])
    text = {"name": "notes", "type": "string", "role": "free_text", "deidentify": {"operator": "scan"}}
    frame = pd.DataFrame({"participant_id": ["P1", "P2"], "notes": ["Watts session", "Watts session"]})
    with pytest.raises(deid.ResidualPIIError, match="LOCATION"):
        deid.deidentify_frame(frame, _contract([text]), bench_context(), known=KnownIdentifiers())
    tolerant = _contract([text | {"tolerate_entities": ["LOCATION"]}])
    out = deid.deidentify_frame(frame, tolerant, bench_context(), known=KnownIdentifiers())
    scan = out.residual_scan["columns"]["notes"]
    assert scan["residual"] == {} and scan["tolerated"] == {"LOCATION": 1}
    assert out.columns[1].params["tolerate_entities"] == ["LOCATION"]
    monkeypatch.setattr(
        free_text, "_findings", lambda texts, *a, **k: [[_detector("LOCATION", 0, 4, RECOGNIZER_NAME)] for _ in texts]
    )
    with pytest.raises(deid.ResidualPIIError, match="LOCATION"):  # a known identifier is never tolerated
        deid.deidentify_frame(frame, tolerant, bench_context(), known=KnownIdentifiers())
