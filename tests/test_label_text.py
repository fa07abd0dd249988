"""Label text (short categorical text): identifiers masked, words kept; over-masking measured on a hand-written corpus."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest
from pydantic import ValidationError

from bench.common import BENCH_KEY, over_masking
from bench.data import bench_context
from bench.utility import LABEL_MODES, corpus_known, label_column, label_corpus_over_masking, mask_labels
from pipelines.contracts import ScanText, load_contract
from pipelines.ingest import SOURCE_FILE_COLUMN, ingest_file, quote_ident
from pipelines.privacy import deidentify as deid
from pipelines.privacy.free_text import is_full_name
from pipelines.privacy.known import known_identifiers_from_raw
from pipelines.privacy.operators import pseudonym

ISSUE_EXAMPLES = [
    "Felony Battery (Dom Strang)",
    "Possess Cannabis/20 Grams Or Less",
    "Disorderly Conduct",
    "Deliver 3,4 Methylenediox",
]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "collisions"


@pytest.mark.parametrize("mode", LABEL_MODES[1:])
def test_label_text_keeps_the_issues_examples(mode):
    assert mask_labels(ISSUE_EXAMPLES, mode, bench_context(), corpus_known()) == ISSUE_EXAMPLES


def test_free_text_changed_them_before():
    out = mask_labels(ISSUE_EXAMPLES, LABEL_MODES[0], bench_context(), corpus_known())
    # NER people made of everyday words ("Disorderly Conduct") are dropped everywhere now; free text still changes two
    assert sum(a != b for a, b in zip(ISSUE_EXAMPLES, out)) >= 2


def test_identifiers_and_full_names_inside_labels_are_masked():
    labels = [
        "Stalking (contact rmalloy@mailbox.example.org)",
        "Harassing Phone Calls to 305-555-0187",
        "Violation of Injunction (Jane Doe)",
        "Battery on Quentin Zabrowski",
    ]
    out = mask_labels(labels, LABEL_MODES[1], bench_context(), corpus_known())
    assert "rmalloy" not in out[0] and "555-0187" not in out[1]
    secret = BENCH_KEY.encode()
    assert out[2] == f"Violation of Injunction ({pseudonym(secret, 'PERSON', 'Jane Doe')})"  # known: everyday words
    assert out[3] == f"Battery on {pseudonym(secret, 'PERSON', 'Quentin Zabrowski')}"  # unknown: a full name NER saw


@pytest.mark.parametrize(
    ("span", "expected"),
    [
        ("Quentin Zabrowski", True),
        ("John Smith", True),
        ("Felony Battery", False),
        ("Dom Strang", False),
        ("Cannabis/20 Grams", False),
        ("Arson II", False),
        ("Compulsory Sch Attnd", False),
        ("Zabrowski", False),
    ],
)
def test_what_counts_as_a_full_name(span, expected):
    assert is_full_name(span) is expected


def test_the_columns_own_words_are_no_name():
    assert is_full_name("Aggrav Battery") and not is_full_name("Aggrav Battery", frozenset({"aggrav"}))


def test_over_masking_on_the_hand_written_corpus():
    figures = label_corpus_over_masking()
    for column, modes in figures.items():
        assert all(o.values_left == 0 for o in modes.values()), column  # zero residual PII in every mode
        assert modes[LABEL_MODES[2]].share < 0.01, column  # the goal: under 1% with the column's own vocabulary
        assert modes[LABEL_MODES[1]].share <= modes[LABEL_MODES[0]].share
    assert figures["offence"][LABEL_MODES[0]].share > 0.05  # what free-text scanning did to them


def test_over_masking_counts_clean_cells_changed_and_values_left():
    o = over_masking(
        ["Petit Theft", "Battery on Jane Doe", None, "Arson"],
        ["person_1", "Battery on Jane Doe", None, "Arson"],
        ["Jane Doe"],
    )
    assert (o.cells, o.clean, o.clean_changed, o.personal, o.values_left) == (3, 2, 1, 1, 1)
    assert o.share == 0.5


def test_vocabulary_from_values_needs_label_text():
    with pytest.raises(ValidationError, match="label_text"):
        ScanText.model_validate({"operator": "scan", "vocabulary_from_values": True})
    assert label_column(LABEL_MODES[2]).deidentify.vocabulary_from_values


def test_streamed_label_vocabulary_equals_in_memory():
    """The own-values vocabulary is read once per table: 7-row chunks give what the in-memory frame (one chunk) gives."""
    contract = load_contract(FIXTURES / "contracts" / "outreach_participants.yaml")
    con = duckdb.connect()
    ingest_file(FIXTURES / "landing" / "outreach" / "participants_2025-01.csv", contract, con, contract.dataset)
    known = known_identifiers_from_raw(con, [contract])
    frame = con.execute(f"SELECT * EXCLUDE ({SOURCE_FILE_COLUMN}) FROM {quote_ident(contract.dataset)}").df()
    expected = deid.deidentify_frame(frame, contract, bench_context(), known=known)
    target = duckdb.connect()
    streamed = deid.deidentify_table(
        con,
        contract.dataset,
        target,
        "out",
        contract,
        bench_context(),
        known=known,
        chunk_rows=7,
        exclude=(SOURCE_FILE_COLUMN,),
    )
    table = target.execute("SELECT * FROM out").df()
    pd.testing.assert_series_equal(
        table["charge_description"].astype(str), expected.frame["charge_description"].astype(str), check_names=False
    )
    assert [r.to_dict() for r in streamed.columns] == [r.to_dict() for r in expected.columns]


def test_a_one_word_name_with_a_title_is_masked_in_labels_too():
    """A title is evidence that the next word names a person: label text masks it like free text does."""
    labels = ["Battery on Ms Zabrowski", "Disorderly Conduct"]
    out = mask_labels(labels, LABEL_MODES[1], bench_context(), corpus_known())
    assert "Zabrowski" not in out[0] and out[0].startswith("Battery on Ms ")
    assert out[1] == "Disorderly Conduct"
