"""One-word names found by their context (pipelines.privacy.person_cues) and the census name lists behind them."""

from __future__ import annotations

import pytest

from pipelines.privacy import analyzer as an
from pipelines.privacy import gazetteer as gz
from pipelines.privacy import parallel
from pipelines.privacy.person_cues import PersonCueRecognizer
from pipelines.privacy.recognizers import ner_filter


@pytest.fixture(scope="module")
def recognizer():
    gz.load()
    return PersonCueRecognizer()


def _cued(recognizer, text: str) -> list[str]:
    """The names the recognizer keeps on its own (no other recognizer's results), in text order."""
    raw = recognizer.analyze(text, ["PERSON"], None)
    kept = recognizer.enhance_using_context(text, raw, [], None)
    return [text[r.start : r.end] for r in sorted(kept, key=lambda r: r.start)]


# (text, names the cues find): written for this test, not taken from the labelled benchmark
FOUND = [
    ("Dear Marguerite,\nthe parcel is late.", ["Marguerite"]),
    ("Hi Will, can you call back?", ["Will"]),  # a given name that is also a word, after a greeting
    ("Hello Ingrid Vasquez-Holm!", ["Ingrid Vasquez-Holm"]),
    ("Thanks,\nOksana", ["Oksana"]),
    ("Kind regards,\nTeodor Blanck", ["Teodor Blanck"]),
    ("Please ask Ms Okonkwo about it.", ["Okonkwo"]),
    ("my name is Radomir and I need help", ["Radomir"]),
    ("She named him Jurgis.", ["Jurgis"]),
    ("Ottoline, could you check the invoice?", ["Ottoline"]),
    ("We found Wojciechowska's badge in the lobby.", ["Wojciechowska"]),
    ("Halvorsen said the server was down.", ["Halvorsen"]),
    ("Approved by: Kowalczyk", ["Kowalczyk"]),
    ('Zdenka: "Where is the key?"', ["Zdenka"]),
    ("I spoke to Brannigan yesterday.", ["Brannigan"]),
]

# (text): no name here, whatever the cue
NOT_FOUND = [
    "Dear Team,\nthe build is green.",
    "Hi Support, the app crashes.",
    "Thanks,\nAccounts Payable",
    "Please ship the Printer's cartridge.",
    "Monday said nothing about it.",
    "Yes, you can reboot it.",
    "Note: please restart.",
    "the contract was signed by Tuesday",
    "all lower case, no cue: thanks anna",
]


@pytest.mark.parametrize(("text", "names"), FOUND)
def test_cues_find_one_word_names(recognizer, text, names):
    assert _cued(recognizer, text) == names


@pytest.mark.parametrize("text", NOT_FOUND)
def test_cues_leave_everyday_words(recognizer, text):
    assert _cued(recognizer, text) == []


def test_a_list_item_is_a_name_only_beside_a_name(recognizer):
    text = "The founders: Okafor, Lindqvist and Brannigan."
    raw = recognizer.analyze(text, ["PERSON"], None)
    assert recognizer.enhance_using_context(text, raw, [], None) == []  # nothing says any of them is a person
    lindqvist = text.index("Lindqvist")
    ner = an.RecognizerResult("PERSON", lindqvist, lindqvist + len("Lindqvist"), 0.85)
    kept = recognizer.enhance_using_context(text, raw, [ner], None)
    assert sorted(text[r.start : r.end] for r in kept) == ["Brannigan", "Okafor"]


def test_a_weak_cue_yields_to_an_address_and_a_strong_one_to_a_pattern_only(recognizer):
    text = "Halvorsen said hi"
    raw = recognizer.analyze(text, ["PERSON"], None)
    place = an.RecognizerResult(
        "LOCATION", 0, 9, 0.85, recognition_metadata={"recognizer_name": "FilteredSpacyRecognizer"}
    )
    assert recognizer.enhance_using_context(text, raw, [place], None) == []
    text = "Dear Halvorsen, hi"
    raw = recognizer.analyze(text, ["PERSON"], None)
    place = an.RecognizerResult(
        "LOCATION", 5, 14, 0.85, recognition_metadata={"recognizer_name": "FilteredSpacyRecognizer"}
    )
    assert [text[r.start : r.end] for r in recognizer.enhance_using_context(text, raw, [place], None)] == ["Halvorsen"]
    address = an.RecognizerResult(
        "STREET_ADDRESS", 5, 18, 0.95, recognition_metadata={"recognizer_name": "StreetAddressRecognizer"}
    )
    assert recognizer.enhance_using_context(text, raw, [address], None) == []


def test_the_detector_reports_cued_names(recognizer):
    found = an.scan_texts(["Thanks,\nOksana"], n_process=1)[0]
    assert [("PERSON", "Oksana")] == [(r.entity_type, "Thanks,\nOksana"[r.start : r.end]) for r in found]


@pytest.mark.parametrize(
    ("text", "runs"),
    [
        ("Zoe Young spoke", ["Zoe Young"]),
        ("Ashford Monitor Arm", []),
        ("Hudson Office Chair", []),
        ("Abt Associates", []),
        ("Round Stones Inc", []),
    ],
)
def test_name_runs_with_census_names(text, runs):
    gz.load()  # a census given name may lead a census surname that is a word; not product or company words
    assert [text[a:b] for a, b in an.name_runs(text)] == runs


def test_census_lists():
    gz.load()
    assert gz.is_given_name("megan") and gz.is_surname("vasquez") and not gz.is_surname("gelencsér")
    assert gz.is_listed_name("megan") and gz.is_listed_name("vasquez")
    assert not gz.is_listed_name("young") and not gz.is_listed_name("will")  # everyday words
    assert not gz.is_listed_name("stones")  # a surname that is a plural of an everyday word
    assert gz.is_everyday_word("young") and not gz.is_everyday_word("songs")  # no inflection guessed


@pytest.mark.parametrize(
    ("line", "cased"),
    [
        ("please change it to mary gavrilova", "Please change it to Mary Gavrilova"),  # a given name before a name
        ("lara pottinger", "Lara Pottinger"),  # a surname after a given name
        ("mr. spears is here", "Mr. Spears is here"),  # a census name after a title
        ("rintanen began writing", "Rintanen began writing"),  # "began" is a census surname, but not after a given name
        (">ella h. snider", ">Ella H. Snider"),  # a quoted line
    ],
)
def test_truecase_census_names(line, cased):
    gz.load()
    assert gz.truecase(line) == cased


# --- free-text speed (issue 24): balanced chunks, cold benchmarks, the eval's speed tables ---------------------------


@pytest.mark.parametrize(
    ("items", "processes", "min_chunk"),
    [(755, 2, 256), (1510, 2, 256), (257, 2, 256), (100_000, 2, 256), (3_901, 3, 64)],
)
def test_chunks_come_in_a_multiple_of_the_processes_and_of_equal_size(items, processes, min_chunk):
    chunks = parallel.chunk_items(list(range(items)), processes, min_chunk)
    assert [x for chunk in chunks for x in chunk] == list(range(items))
    seen = [len(c) for c in chunks]
    assert len(seen) % processes == 0 and max(seen) - min(seen) <= 1


def test_clear_memos_starts_a_scan_cold():
    analyzer = an.get_analyzer()
    phone = next(r for r in analyzer.registry.recognizers if r.name == "PhoneRecognizer")
    engine = analyzer.nlp_engine
    an.scan_texts(["Call Halvorsen on 0688 843 79 56 about Kowalczyk."], n_process=1)
    assert engine._entities and phone.memo.verdicts and engine.artifact_builder.keywords
    an.clear_memos(analyzer)
    assert not engine._entities and not phone.memo.verdicts and not engine.artifact_builder.keywords


def test_speed_tables_measure_every_method_side_by_side():
    from bench import eval_pii as ev

    texts = ["Dear Oksana, call me on 0688 843 79 56.", "my name is radomir and i live in koskikatu 25"] * 3
    speed = ev.measure_speed(texts, reps=2)
    assert set(speed.rates) == set(ev.SPEED_METHODS) and all(len(v) == 2 and min(v) > 0 for v in speed.rates.values())
    table = ev.speed_markdown({"tiny": texts}, reps=1, processes=(1,))
    assert "| tiny | 6 |" in table and "x per text" in table and "efficiency" not in table


@pytest.mark.parametrize(
    ("span", "kept"),
    [
        ("Producer Liviana Palerma", "Liviana Palerma"),  # the job title NER took in is left out
        ("Salesperson", ""),
        ("Lunch", ""),
        ("Cloud Backup Pro", ""),
        ("My Analytics Dashboard", ""),  # everyday words
        ("Will Young", "Will Young"),
        ("Grace Hill", "Grace Hill"),  # census names that are everyday words too
        ("Dr. Anna Lindqvist", "Dr. Anna Lindqvist"),
        ("Szabina J Gelencsér", "Szabina J Gelencsér"),
    ],
)
def test_ner_people_lose_their_everyday_words(span, kept):
    gz.load()
    text = f"Note: {span} again"
    start, end = ner_filter._person_without_common_words(text, 6, 6 + len(span))
    assert text[start:end] == kept


def test_cue_triggers_only_skip_texts_the_cues_cannot_match(recognizer, monkeypatch):
    from pipelines.privacy import person_cues

    texts = (
        [t for t, _ in FOUND]
        + NOT_FOUND
        + [
            "DEAR Kowalczyk,",
            "MS Okonkwo is here",
            "Mſ Okonkwo",
            "KIND REGARDS,\nOksana",
            "Okafor,\tLindqvist\tand\tBrannigan",
        ]
    )

    def found():
        return [sorted((r.start, r.end, r.score) for r in recognizer.analyze(t, ["PERSON"], None)) for t in texts]

    with_triggers = found()
    monkeypatch.setattr(person_cues, "_TRIGGERS", {})
    assert found() == with_triggers
