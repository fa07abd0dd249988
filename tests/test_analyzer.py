"""Tests for the PII detector (pipelines.privacy.analyzer) and the evaluation metric."""

from __future__ import annotations

import json
import math
import socket
from collections import Counter
from types import SimpleNamespace

import pytest

from bench import eval_pii as ev
from pipelines.privacy import analyzer as an
from pipelines.privacy import speedups
from pipelines.privacy.recognizers import ner_filter


@pytest.fixture(scope="session")
def analyzer():
    """The default detector, loaded once per test session."""
    return an.get_analyzer()


def _spans(text: str, results) -> set[tuple[str, str]]:
    """(entity type, covered text) pairs of a result list."""
    return {(r.entity_type, text[r.start : r.end]) for r in results}


# (text, [(entity type, exact covered substring)]) — each expected span must be reported.
DETECTED = [
    ("Please ask E1234567 from HR about it.", [("EMPLOYEE_ID", "E1234567")]),
    ("See ticket TCK-0012345 for details.", [("TICKET_ID", "TCK-0012345")]),
    ("Claim CLM-12345678 was approved.", [("CLAIM_ID", "CLM-12345678")]),
    ("Order ORD-7654321 has shipped.", [("ORDER_ID", "ORD-7654321")]),
    ("Reboot wks-01234.corp.example-corp.com tonight.", [("HOSTNAME", "wks-01234.corp.example-corp.com")]),
    ("Login failed on wks-98765 twice.", [("HOSTNAME", "wks-98765")]),
    ("Disk full on srv-db-042 again.", [("HOSTNAME", "srv-db-042")]),
    ("Desk: +41 (0)96 471 07 95", [("PHONE_NUMBER", "+41 (0)96 471 07 95")]),
    ("Mobile: (898)666-3621x0135", [("PHONE_NUMBER", "(898)666-3621x0135")]),
    ("Please call me on 0688 843 79 56", [("PHONE_NUMBER", "0688 843 79 56")]),
    ("Mail jane.doe@example.org please.", [("EMAIL_ADDRESS", "jane.doe@example.org")]),
    ("Please block card no 4415101282806639538", [("CREDIT_CARD", "4415101282806639538")]),
    ("When: 2000-04-16 11:34:35", [("DATE_TIME", "2000-04-16 11:34:35")]),
    ("Ship it to 6750 Koskikatu 25 Apt. 864 please.", [("STREET_ADDRESS", "6750 Koskikatu 25 Apt. 864")]),
    ("The bus station is on Vesterskovvej 79", [("STREET_ADDRESS", "Vesterskovvej 79")]),
    ("Meet me at 2450 Crown St tomorrow.", [("STREET_ADDRESS", "2450 Crown St")]),
    ("Send it to PSC 7951, Box 9972\nAPO AA 69974", [("STREET_ADDRESS", "PSC 7951, Box 9972\nAPO AA 69974")]),
    (
        "Stop at the corner of Nieuwe Baan 473 and Inna Loop.",
        [("STREET_ADDRESS", "the corner of Nieuwe Baan 473 and Inna Loop")],
    ),
    (
        "Jane Roe\n23680 Parijsstraat 8\n Apt. 026\n Zoetermeer\n Netherlands 91196\nMobile: 0688 843 79 56",
        [("STREET_ADDRESS", "23680 Parijsstraat 8\n Apt. 026\n Zoetermeer\n Netherlands 91196")],
    ),
    ("My name appears wrong, it should be Dr. Cettina Fanucci.", [("PERSON", "Cettina Fanucci")]),
]

# (text, entity type that must NOT be reported)
NOT_DETECTED = [
    ("Badge E123456 has only six digits.", "EMPLOYEE_ID"),
    ("Ticket TCK-123 is malformed.", "TICKET_ID"),
    ("The workstation wks-1234 is misspelt.", "HOSTNAME"),
    ("The project lasted 3 years.", "DATE_TIME"),
    ("My father retired at the age of 61", "DATE_TIME"),
    ("See Guilty Pleasures: 5 Musicians Of The 70s You're Supposed To Hate", "STREET_ADDRESS"),
    ("Version 10 of the tool was released.", "STREET_ADDRESS"),
]


@pytest.mark.parametrize(("text", "expected"), DETECTED)
def test_recognizers_detect(analyzer, text, expected):
    found = _spans(text, an.analyze_value(text))
    for item in expected:
        assert item in found, f"{item} not in {found}"


@pytest.mark.parametrize(("text", "entity"), NOT_DETECTED)
def test_recognizers_do_not_overreach(analyzer, text, entity):
    assert entity not in {r.entity_type for r in an.analyze_value(text)}


def test_org_recognizers_come_from_yaml(analyzer):
    names = {r.name for r in analyzer.registry.recognizers}
    assert {"EmployeeIdRecognizer", "TicketIdRecognizer", "HostnameRecognizer"} <= names
    assert {"StreetAddressRecognizer", "EmailRecognizer", "CreditCardRecognizer"} <= names


def test_context_words_lift_weak_patterns(analyzer):
    # A bare grouped number is only a phone number when a phone word is nearby.
    assert ("PHONE_NUMBER", "78 651 450") in _spans(
        "They're not answering at 78 651 450", an.analyze_value("They're not answering at 78 651 450")
    )
    assert "PHONE_NUMBER" not in {r.entity_type for r in an.analyze_value("Ratio was 78 651 450 overall")}


def test_analyzer_builds_and_runs_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr("spacy.cli.download", refuse)
    engine = an._analyzer.__wrapped__(an.DEFAULT_NLP_MODEL, an.DEFAULT_RECOGNIZERS_PATH.resolve())
    results = engine.analyze("Write to anna.berg@example.co.uk or visit example.com", "en")
    assert "EMAIL_ADDRESS" in {r.entity_type for r in results}


def test_unknown_model_gives_clear_error():
    with pytest.raises(an.ModelNotInstalledError) as info:
        an.get_analyzer("en_core_web_doesnotexist")
    message = str(info.value)
    assert "en_core_web_doesnotexist" in message and "pip install" in message


def test_model_setting_is_read_from_environment_at_call_time(monkeypatch):
    monkeypatch.setenv(an.NLP_MODEL_ENV, "xx_missing_model")
    assert an.resolve_model_name() == "xx_missing_model"
    with pytest.raises(an.ModelNotInstalledError, match="xx_missing_model"):
        an.get_analyzer()
    monkeypatch.delenv(an.NLP_MODEL_ENV)
    assert an.resolve_model_name() == an.DEFAULT_NLP_MODEL


def _keys(results) -> list[list[tuple]]:
    """Comparable form of scan results."""
    return [sorted((r.start, r.end, r.entity_type, round(r.score, 6)) for r in rs) for rs in results]


def test_scan_texts_aligns_with_duplicates_none_and_empty(analyzer):
    texts = ["Call 212-555-0199 now", None, "", "   ", "Call 212-555-0199 now", "nothing to see", "Mail bo@example.com"]
    results = an.scan_texts(texts)
    assert len(results) == len(texts)
    assert results[1] == results[2] == results[3] == []
    assert _keys([results[0]]) == _keys([results[4]]) and results[0]
    assert results[0] is not results[4]  # duplicates get their own list
    assert _keys(results) == _keys([an.analyze_value(t) for t in texts])


def test_scan_texts_in_two_processes_matches_one(analyzer):
    texts = [f"Ticket TCK-{i:07d} from E{i:07d}, call +41 (0)96 471 07 {i % 90 + 10}" for i in range(12)]
    assert _keys(an.scan_texts(texts, batch_size=2, n_process=2)) == _keys(an.scan_texts(texts, n_process=1))


def test_processes_setting(monkeypatch):
    monkeypatch.delenv(an.NLP_PROCESSES_ENV, raising=False)
    assert 1 <= an.resolve_processes() <= an.MAX_DEFAULT_PROCESSES
    assert an.resolve_processes(3) == 3
    monkeypatch.setenv(an.NLP_PROCESSES_ENV, "1")
    assert an.resolve_processes() == 1
    for bad in ("two", "-1", "0"):
        monkeypatch.setenv(an.NLP_PROCESSES_ENV, bad)
        with pytest.raises(ValueError, match=an.NLP_PROCESSES_ENV if bad != "0" else "at least 1"):
            an.resolve_processes()


def test_detector_info_is_plain_json(analyzer):
    info = an.detector_info()
    json.dumps(info)
    assert info["nlp_model"]["name"] == an.DEFAULT_NLP_MODEL
    assert info["score_threshold_default"] == an.DEFAULT_SCORE_THRESHOLD
    assert {"EMPLOYEE_ID", "STREET_ADDRESS", "PERSON"} <= set(info["supported_entities"])


# --- evaluation metric --------------------------------------------------------------


def test_compare_tags_skips_forgivable_errors():
    skip = ev.default_skip_words()
    phone = ev.compare_tags(
        ["Call", "555", "-", "1234", "today"], ["O", "PHONE", "PHONE", "PHONE", "O"], ["O"] * 5, skip
    )
    assert phone == Counter({("O", "O"): 2, ("PHONE", "O"): 2})  # "-" is a skip word
    street = ev.compare_tags(["the", "Main", "Street"], ["O", "LOCATION", "LOCATION"], ["LOCATION"] * 3, skip)
    assert street == Counter({("LOCATION", "LOCATION"): 2})  # correct skip words still count


def test_scores_on_hand_checked_counts():
    results = Counter(
        {
            ("O", "O"): 5,
            ("PERSON", "PERSON"): 2,
            ("PHONE", "O"): 2,
            ("LOCATION", "LOCATION"): 2,
            ("LOCATION", "PERSON"): 1,
        }
    )
    pii, per = ev.score_results(results)
    assert (pii.annotated, pii.predicted, pii.true_positives) == (7, 5, 5)
    assert pii.precision == 1.0 and pii.recall == pytest.approx(5 / 7) and pii.f_beta == pytest.approx(25 / 33)
    assert (per["PERSON"].precision, per["PERSON"].recall) == (pytest.approx(2 / 3), 1.0)
    assert (per["LOCATION"].precision, per["LOCATION"].recall) == (1.0, pytest.approx(2 / 3))
    assert math.isnan(per["PHONE"].precision) and per["PHONE"].recall == 0 and math.isnan(per["PHONE"].f_beta)


def test_overlapping_spans_follow_the_reference_rules():
    tokens = [ev.Token("aaaa", 0), ev.Token("bbbb", 5), ev.Token("cccc", 11), ev.Token("dd", 16)]
    # Higher-scored earlier span keeps the overlap; the later span is cut after it.
    assert ev.spans_to_io_tags(tokens, [(0, 10, "PERSON"), (5, 20, "LOCATION")], [0.85, 0.6]) == [
        "PERSON",
        "PERSON",
        "LOCATION",
        "LOCATION",
    ]
    # Higher-scored inner span splits the outer one.
    assert ev.spans_to_io_tags(tokens, [(0, 20, "LOCATION"), (5, 10, "PERSON")], [0.5, 0.9]) == [
        "LOCATION",
        "PERSON",
        "LOCATION",
        "LOCATION",
    ]


def test_evaluate_small_dataset(tmp_path):
    records = [
        {
            "full_text": "My name is John Smith",
            "spans": [
                {"entity_type": "PERSON", "entity_value": "John Smith", "start_position": 11, "end_position": 21}
            ],
        },
        {
            "full_text": "I live in Paris.",
            "spans": [{"entity_type": "GPE", "entity_value": "Paris", "start_position": 10, "end_position": 15}],
        },
        {
            "full_text": "Mr. Li works at Acme",
            "spans": [
                {"entity_type": "ORGANIZATION", "entity_value": "Acme", "start_position": 16, "end_position": 20}
            ],
        },
    ]
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(records))
    samples = ev.load_samples(path)
    assert samples[1].gold == ("O", "O", "O", "LOCATION", "O")  # GPE -> LOCATION
    assert samples[2].gold == ("O",) * 5  # ORGANIZATION -> O

    def result(start, end, entity):
        return SimpleNamespace(start=start, end=end, entity_type=entity, score=0.85)

    predictions = [[result(11, 15, "PERSON")], [result(10, 15, "LOCATION")], [result(16, 20, "ORGANIZATION")]]
    pii, per = ev.evaluate(samples, predictions)
    # John found, Smith missed; Paris found; the organisation prediction maps to O.
    assert (pii.annotated, pii.predicted, pii.true_positives) == (3, 2, 2)
    assert pii.f_beta == pytest.approx(10 / 14)
    assert (per["PERSON"].annotated, per["PERSON"].true_positives) == (2, 1)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Thanks for your help.", False),  # a common opener, nothing capitalised after it
        ("My number is (410) 336-4023.", False),  # phone numbers are found by patterns, not NER
        ("Please call Jane tomorrow", True),
        ("Jane called yesterday", True),  # a sentence's first word counts unless it is a stop word
        ("jane smith called about the refund", True),  # lower-cased text: no capitalisation cue, always NER
        ("The parcel arrived on 2024-03-05", True),  # a year: NER may find a date
        ("It arrived at 10:30", True),
        ("I'm still waiting.", False),
        ("Москва", True),  # no Latin capitals needed: cased Cyrillic counts
        ("我的名字是李华", True),  # an uncased script is always scanned
        ("Please update my billing address to <STREET_ADDRESS>: phone_number_4f65f1ba", False),  # our own placeholders
        ("I was charged twice for order <ORDER_ID>.", False),
        ("Order <ORDER_ID> for Jane Doe", True),  # a placeholder hides nothing else on the line
        ("sent to <STREET_ADDRESS> yesterday", True),  # still lower-cased text around it: always NER
    ],
)
def test_needs_ner_prefilter(line, expected):
    assert an.needs_ner(line) is expected


PRODUCTS = an.compile_terms(["Cloud Backup Pro", "TeamChat", "Pro", "  ", None])


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Hi, this is person_0123456789abcdef. My app stopped. Please call me.", False),  # sentence openers
        ("It broke again! Where is my order?", False),
        ("It broke. Jane called.", True),  # a name opening a sentence is still a candidate
        ("Thanks. Will called.", True),  # stop words that are first names stay candidates
        ("May I ask for a refund?", True),
        ("Kind regards, person_0123456789abcdef", False),  # sign-offs
        ("Order <ORDER_ID> arrived damaged.", False),  # an identifier's cue word before its placeholder
        ("Jane <ORDER_ID> arrived damaged.", True),  # ... but only its cue word
        ("sent to <ORDER_ID> by order <ORDER_ID>", True),  # lower-cased text around it: always NER
        ("Where is my order ORD-1234567? It has not arrived yet.", False),  # the organisation's identifier formats
        ("Ticket TCK-0012345 for Jane", True),
        ("ORD-1234567 arrived, ask john smith", True),  # lower-cased text once the identifier is set aside
        ("Cannot log in to Cloud Backup Pro; password reset emails never arrive.", False),  # declared terms
        ("Cannot log in to Cloud Backup Pro; ask Jane.", True),
        ("Cannot log in to Cloud Backup Professional.", True),  # whole words only: "Professional" is no term
        ("TeamChatter keeps crashing", True),
    ],
)
def test_needs_ner_with_sentence_openers_cues_and_declared_terms(analyzer, line, expected):
    assert an.needs_ner(line, PRODUCTS, analyzer.nlp_engine.identifiers) is expected


def test_no_terms_compile_to_nothing():
    assert an.compile_terms([None, "", " 42 "]) is None


def test_declared_terms_are_never_a_ner_entity_but_names_beside_them_are(analyzer):
    # the pinned model reads the product as a person (ending on a given name, "Max", it is no span of everyday words)
    texts = [
        "How do I export my data from Cloud Backup Pro Max?",
        "Hi, this is Allen Cole. My Cloud Backup Pro Max stopped syncing after the last update.",
    ]
    products = an.compile_terms(["Cloud Backup Pro Max", "TeamChat"])
    plain = [_spans(t, r) for t, r in zip(texts, an.scan_texts(texts, n_process=1))]
    assert any(entity == "PERSON" and "Cloud" in span for found in plain for entity, span in found), plain
    with_terms = [_spans(t, r) for t, r in zip(texts, an.scan_texts(texts, n_process=1, terms=products))]
    assert not any("Cloud" in span or "Pro" in span for found in with_terms for _, span in found), with_terms
    assert ("PERSON", "Allen Cole") in with_terms[1]
    assert _keys(an.scan_texts(texts, n_process=2, batch_size=1, terms=products)) == _keys(
        an.scan_texts(texts, n_process=1, terms=products)
    )


def test_terms_need_the_lean_engine():
    with pytest.raises(ValueError, match="lean NLP engine"):
        an.scan_texts_with(an.get_baseline_analyzer(), ["Cloud Backup Pro"], terms=PRODUCTS)


def test_line_level_ner_maps_entities_onto_the_whole_text(analyzer):
    text = "Thanks for your help.\n\nJane Doe moved to Paris last year.\nRegards"
    results = an.scan_texts([text], n_process=1)[0]
    found = {(r.entity_type, text[r.start : r.end]) for r in results}
    assert ("PERSON", "Jane Doe") in found and ("LOCATION", "Paris") in found


def test_ner_runs_once_per_distinct_candidate_line(analyzer):
    engine = analyzer.nlp_engine
    lines = [f"Ticket {i} was raised by Maria Lopez-{i}" for i in range(5)]
    texts = [f"Thanks for your help.\n{line}\nThanks for your help." for line in lines]
    engine._entities.clear()
    assert engine.recognize_entities(texts, "en") == 5  # the shared, non-candidate line is never sent to NER
    assert engine.recognize_entities(texts, "en") == 0  # cached for the rescans and for forked workers
    assert _keys(an.scan_texts(texts, n_process=1)) == _keys(an.scan_texts(texts, n_process=2, batch_size=2))


def test_an_identifier_with_its_cue_word_is_not_a_person(analyzer):
    for text in ("Order ORD-1234567 arrived damaged.", "Ticket TCK-0012345: Order ORD-7654321 never arrived"):
        found = {(r.entity_type, text[r.start : r.end]) for r in an.analyze_value(text)}
        assert ("ORDER_ID", "ORD-1234567" if "1234567" in text else "ORD-7654321") in found
        assert not any(entity == "PERSON" for entity, _ in found), found
    text = "Order ORD-1234567 for Jane Doe arrived damaged."
    assert ("PERSON", "Jane Doe") in {(r.entity_type, text[r.start : r.end]) for r in an.analyze_value(text)}


def test_worker_processes_end_quietly_under_an_interrupt_handler(tmp_path):
    """Dagster installs a SIGTERM handler that raises; pool workers inherit it unless they reset it."""
    import subprocess
    import sys

    script = (
        "import signal\n"
        "def interrupted(*_):\n"
        "    raise KeyboardInterrupt('interrupted')\n"
        "signal.signal(signal.SIGTERM, interrupted)\n"
        "from pipelines.privacy import analyzer as an\n"
        "texts = [f'Call Maria Lopez at 212-555-01{i:02d}' for i in range(40)]\n"
        "print(sum(len(r) for r in an.scan_texts(texts, batch_size=4, n_process=2)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) >= 40
    assert "Traceback" not in done.stderr, done.stderr[-2000:]


def _square(x: int) -> int:
    return x * x


def _fail(message: str) -> None:
    raise ValueError(message)


def test_background_work_returns_its_result_and_reraises_its_error(monkeypatch):
    monkeypatch.setenv(an.NLP_PROCESSES_ENV, "2")
    assert an.Background(_square, 7).result() == 49
    job = an.Background(_fail, "column 'merchant' holds EMAIL_ADDRESS")
    with pytest.raises(ValueError, match="column 'merchant' holds EMAIL_ADDRESS"):
        job.result()
    job.cancel()  # idempotent after result()
    # The forked worker may not fork again: inside it, one process.
    assert an.Background(an.resolve_processes).result() == 1
    # An abandoned job is stopped, not left running.
    an.Background(_square, 3).cancel()


def test_background_work_runs_inline_with_one_process(monkeypatch):
    import os

    monkeypatch.setenv(an.NLP_PROCESSES_ENV, "1")
    assert an.Background(os.getpid).result() == os.getpid()
    monkeypatch.setenv(an.NLP_PROCESSES_ENV, "2")
    assert an.Background(os.getpid).result() != os.getpid()
    assert an.Background(os.getpid, enabled=False).result() == os.getpid()


def _die() -> None:
    import os

    os._exit(3)


def test_a_background_worker_that_dies_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv(an.NLP_PROCESSES_ENV, "2")
    job = an.Background(_die)
    with pytest.raises(RuntimeError, match="ended without a result \\(exit code 3\\)"):
        job.result()


def _freeze_count(chunk: list, args: tuple) -> list[int]:
    import gc

    return [gc.get_freeze_count()] * len(chunk)


def test_workers_are_forked_with_the_parents_objects_frozen(monkeypatch):
    """Pool workers and the background helper inherit a frozen heap (their collections skip the parent's objects,
    so copy-on-write does not copy them); the parent's collector is left as it was."""
    import gc

    monkeypatch.setenv(an.NLP_PROCESSES_ENV, "2")
    assert gc.get_freeze_count() == 0
    in_workers = an._map_in_processes(_freeze_count, list(range(8)), 2, (), 1)
    assert len(in_workers) == 8 and min(in_workers) > 0
    assert an.Background(gc.get_freeze_count).result() > 0
    assert gc.get_freeze_count() == 0
    gc.freeze()  # a caller that froze its objects itself keeps them frozen
    try:
        an._map_in_processes(_freeze_count, [1], 2, (), 1)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


@pytest.mark.parametrize(
    ("span", "trimmed"),
    [
        (". - Marissa Chan", "Marissa Chan"),
        ("Marissa Chan, ", "Marissa Chan"),
        ("John Smith Jr.", "John Smith Jr."),
        ("(Jane Doe)", "Jane Doe"),
        ("Jane Doe (HR)", "Jane Doe (HR)"),
        ("Jane Doe).", "Jane Doe"),
        ("--", ""),
    ],
)
def test_ner_spans_lose_edge_punctuation(span, trimmed):
    start, end = ner_filter._trimmed(span, 0, len(span))
    assert span[start:end] == trimmed


# Texts for the exactness of the recognizer shortcuts: phone numbers in several regions' formats, the same short
# candidates in different surroundings, identifiers, and texts that no pattern matches.
SHORTCUT_TEXTS = [
    "Call me back at (404) 581-8657 or +44 20 7946 0958, email jane.doe@example.org.",
    "Desk: +41 (0)96 471 07 95, mobile 0688 843 79 56; Smart Router X2 keeps crashing.",
    "Please call me on 0688 843 79 56 (not 0688 843 79 57). Order ORD-17944971 arrived damaged.",
    "abc8005001234 and 8005001234def are no numbers, but 800-500-1234 is; so is (800) 500-1234.",
    "Call 8005001234 today, or 8005001234.",
    "SSN 123-45-6789, card 4415101282806639538, IBAN DE89370400440532013000, IP 10.0.0.12",
    "Version 2 of the app, build 19, crashed 3 times on page 28 of 41.",
    "Nothing to find here at all",
    "",
    "Mobile: (898)666-3621x0135; fax (898)666-3621; 2000-04-16 11:34:35",
]


def _recognizer_keys(results) -> list[tuple]:
    return sorted((r.entity_type, r.start, r.end, round(r.score, 6)) for r in results)


def test_pattern_recognizers_skip_only_texts_none_of_their_patterns_match(analyzer):
    from presidio_analyzer import PatternRecognizer

    shortcut = [
        r for r in analyzer.registry.recognizers if isinstance(r.__dict__.get("analyze"), speedups.SkipWithoutMatch)
    ]
    assert len(shortcut) >= 20  # Presidio's and the organisation's pattern recognizers
    skipped = 0
    texts = SHORTCUT_TEXTS + URL_TEXTS + SHORT_VALUES
    assert {len(t) <= speedups.SHORT_TEXT_CHARS for t in texts} == {True, False}  # both ways of checking
    for recognizer in shortcut:
        for text in texts:
            stock = PatternRecognizer.analyze(recognizer, text, None)
            assert _recognizer_keys(recognizer.analyze(text, None)) == _recognizer_keys(stock), (recognizer.name, text)
            skipped += not stock
    assert skipped > 0


# Presidio's URL patterns (and texts they must not miss); short structured values as classification samples them.
URL_TEXTS = [
    "Visit www.example-corp.com/help or https://status.example.org/incidents?id=4 now.",
    "see example.com",
    "EXAMPLE.COM.",
    "mail jane.doe@example.org",
    "files on ftp.example.net:21",
    "a.b and 1.2.3.4",
    "The docs (https://docs.python.org/3/) say so; 'quoted.example.io' too.",
    "Nothing here. Really nothing. Version 2.0.1 only.",
]
SHORT_VALUES = [
    "CLM-0008373",
    "TCK-0007116",
    "Powell-Gutierrez",
    "Cloud Backup Pro",
    "EUR",
    "10.0.0.12",
    "fe80::1",
    "jane@x.org",
    "E1234567",
    "123-45-6789",
    "4415101282806639538",
    "(404) 581-8657",
    "2000-04-16",
    "",
]


def test_url_patterns_are_checked_through_a_necessary_condition(analyzer):
    url = next(r for r in analyzer.registry.recognizers if r.name == "UrlRecognizer")
    analyzer.analyze("warm up www.example.com", "en")  # Presidio compiles the patterns on first use
    conditions = {speedups.necessary_condition(p.regex, url.global_regex_flags) for p in url.patterns}
    assert len(conditions) == 1 and None not in conditions  # noticed if Presidio's patterns change shape
    condition = conditions.pop()
    for text in URL_TEXTS + SHORTCUT_TEXTS + SHORT_VALUES:
        if any(p.compiled_regex.search(text) for p in url.patterns):
            assert condition.search(text), text  # necessary: wherever a URL pattern matches, so does the condition
    assert not condition.search("Nothing here. Really nothing.")
    assert speedups.necessary_condition(r"\b\d{3}-\d{2}-\d{4}\b", 0) is None  # no condition known: the pattern itself


EMAIL = r"\b((([!#$%&'*+\-/=?^_`{|}~\w])|([!#$%&'*+\-/=?^_`{|}~\w][!#$%&'*+\-/=?^_`{|}~\.\w]{0,}[!#$%&'*+\-/=?^_`{|}~\w]))[@]\w+(?:-+\w+)*(?:\.\w+(?:-+\w+)*)+)\b"


@pytest.mark.parametrize(
    ("pattern", "required"),
    [
        (EMAIL, "@."),
        (r"\d{3}-\d{4}", "-"),
        (r"x{0,3}-", "-"),
        (r"x{,3}-", "-"),
        (r"(-){2}", "-"),
        (r"[@]", "@"),
        (r"a\-b", "-"),
        (r"(a-)++", "-"),
        (r"(?>a:)", ":"),
        (r"\{x\}-", "{}-"),
        (r"[]{]-", "-"),
        (r"(?:a-|b-)", "-"),
        # nothing certain: an optional part, a branch without it, a lookaround, a set of several characters
        (r"a|b-c", ""),
        (r"(x-)?y", ""),
        (r"(?=.*@)x", ""),
        (r"[@:]", ""),
        (r"x-{0}", ""),
        # syntax only the regex module knows, which Python's parser would misread or refuse: no shortcut
        (r"[[:alpha:]]-", ""),
        (r"a{e<=1}-", ""),
        (r"(?:x-{e<=1}|-y)", ""),
        (r"\p{L}+@", ""),
        (r"(?V1)a-", ""),
    ],
)
def test_required_characters_are_those_every_match_holds(pattern, required):
    import regex

    flags = regex.IGNORECASE | regex.MULTILINE | regex.DOTALL
    assert speedups.required_characters(pattern, flags) == frozenset(required)
    assert speedups.required_characters(pattern, flags | regex.VERSION1) == frozenset()  # other flags: no shortcut


def test_alternation_matches_exactly_when_one_pattern_does():
    import regex

    patterns = [r"\bCLM-\d{7}\b", r"[A-Z]{2}\d{2}", r"(?<!\d)\d{3}-\d{4}(?!\d)"]
    union = speedups.alternation(patterns, regex.IGNORECASE)
    for text in ["CLM-1234567", "de89 bank", "555-1234", "5555-12345", "clm-123", "none", ""] + SHORT_VALUES:
        assert bool(union.search(text)) == any(regex.search(p, text, regex.IGNORECASE) for p in patterns), text
    # a global inline flag, a backreference or a conditional means something else inside an alternation: refused
    for odd in [r"(?i)abc", r"(?-i)abc", r"(?V1)abc", r"(a)\1", r"(?P<x>a)(?P=x)", r"(a)?(?(1)b|c)", r"(?P<x>a)\g<x>"]:
        assert speedups.alternation([odd, "x"], 0) is None, odd
    assert speedups.alternation(["only one"], 0) is None


def test_phone_recognizer_remembers_verdicts_without_changing_them(analyzer):
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    phone = next(r for r in analyzer.registry.recognizers if r.name == "PhoneRecognizer")
    phone.memo.verdicts.clear()
    for _ in range(2):  # cold, then with every verdict remembered
        for text in SHORTCUT_TEXTS:
            assert _recognizer_keys(phone.analyze(text, None)) == _recognizer_keys(
                PhoneRecognizer.analyze(phone, text, None)
            ), text
    assert phone.memo.verdicts  # the second round was answered from memory


def test_parallel_scan_caches_the_workers_ner_results(analyzer):
    engine = analyzer.nlp_engine
    texts = [f"Ticket {i} was raised by Maria Lopez-{i} in Paris" for i in range(8)]
    engine.clear_entity_cache()
    parallel = an.scan_texts(texts, n_process=2, batch_size=2)
    assert engine.recognize_entities(texts, "en") == 0  # the workers' NER results reached the parent's cache
    assert _keys(parallel) == _keys(an.scan_texts(texts, n_process=1))
    mark = engine.entity_mark()
    assert engine.entities_since(mark) == []
    engine.clear_entity_cache()
    engine.recognize_entities(texts[:2], "en")
    assert [line for line, _ in engine.entities_since(mark)] == texts[:2]  # cleared since the mark: all of them


@pytest.mark.parametrize(("trans1", "trans2"), [(False, False), (True, False), (False, True), (True, True)])
def test_numpy_blas_ops_multiply_like_thinc(trans1, trans2):
    import numpy
    from thinc.api import NumpyOps

    rng = numpy.random.default_rng(7)
    x = rng.random((40, 30) if not trans1 else (30, 40), dtype="float32")
    y = rng.random((30, 20) if not trans2 else (20, 30), dtype="float32")
    expected = NumpyOps().gemm(x, y, trans1=trans1, trans2=trans2)
    ops = speedups.NumpyBlasOps()
    numpy.testing.assert_allclose(ops.gemm(x, y, trans1=trans1, trans2=trans2), expected, rtol=1e-5)
    out = numpy.zeros((40, 20), dtype="float32")
    assert ops.gemm(x, y, out=out, trans1=trans1, trans2=trans2) is out
    numpy.testing.assert_allclose(out, expected, rtol=1e-5)


def test_the_lean_model_multiplies_through_numpy_and_says_so(analyzer):
    ner = analyzer.nlp_engine.nlp["en"].get_pipe("ner")
    assert {type(node.ops) for node in ner.model.walk()} == {speedups.NumpyBlasOps}
    assert an.detector_info()["nlp_model"]["matrix_products"].startswith("numpy (")
    baseline = an.get_baseline_analyzer().nlp_engine.nlp["en"].get_pipe("ner")
    assert not isinstance(baseline.model.ops, speedups.NumpyBlasOps)  # Presidio as shipped, for the comparisons


# --- lower-case text, names NER does not know, dates that are numbers ---------------------------------

from pipelines.privacy import gazetteer as gz  # noqa: E402


def test_truecase_keeps_length_and_capitalises_names_not_words():
    line = "my name is szabina j gelencsér and i live in koskikatu"
    cased = gz.truecase(line)
    assert len(cased) == len(line) and cased.lower() == line
    assert "Szabina J Gelencsér" in cased and "Koskikatu" in cased and " I " in cased
    assert "name is" in cased and " and " in cased  # everyday words stay as they are
    assert gz.truecase("email jane.doe@example.org or person_3fa9c0") == "Email jane.doe@example.org or person_3fa9c0"
    assert gz.case_view("Dear Team,\nthanks, eva kleist") == "Dear Team,\nThanks, Eva Kleist"
    assert gz.case_view("Nothing To Change") == "Nothing To Change"


def test_common_words_and_inflections():
    assert gz.is_common_word("songs") and gz.is_common_word("stopped") and gz.is_common_word("email")
    assert not gz.is_common_word("gelencsér") and not gz.is_common_word("nishiyama")


@pytest.mark.parametrize(
    ("text", "runs"),
    [
        ("Answer: by Szabina J Gelencsér - go figure", ["Szabina J Gelencsér"]),
        ("the verses from Faina D. Yefremova's Cautionary Tales.", ["Faina D. Yefremova"]),
        (">Ella H. Snider\n>Otc Markets", ["Ella H. Snider"]),
        ("Disorderly Conduct", []),
        ("Possess Cannabis/20 Grams Or Less", []),
        ("Rapid Cycle Solutions is a company", []),
    ],
)
def test_name_runs(text, runs):
    gz.load()
    assert [text[a:b] for a, b in an.name_runs(text)] == runs


def test_lowercase_text_finds_names_and_addresses(analyzer):
    text = "hi, this is tomomi nishiyama, i live at 86036 rua do arenque 1634"
    found = _spans(text, an.scan_texts([text], n_process=1)[0])
    assert ("PERSON", "tomomi nishiyama") in found
    assert any(kind == "STREET_ADDRESS" and "86036" in value for kind, value in found)


def test_contact_card_numbers_are_phones_not_dates(analyzer):
    text = "Name: Toshimi Arata\nPhone: 0490 75 40 81"
    found = _spans(text, an.scan_texts([text], n_process=1)[0])
    assert ("PHONE_NUMBER", "0490 75 40 81") in found and not any(kind == "DATE_TIME" for kind, _ in found)
    assert (
        ner_filter._is_calendar_date("2024-03-05")
        and ner_filter._is_calendar_date("1977")
        and ner_filter._is_calendar_date("March 5")
    )
    assert not ner_filter._is_calendar_date("0490 75 40 81") and not ner_filter._is_calendar_date("52096")


def test_laptop_hostnames(analyzer):
    text = "Clayton lost a company laptop (lap-24470) while travelling."
    assert ("HOSTNAME", "lap-24470") in _spans(text, an.scan_texts([text], n_process=1)[0])


def test_record_ids_are_no_place_person_or_group():
    """spaCy's small model reads about one in ten ids like `INC-000003` as a LOCATION or NRP: at 20,000 incidents the
    classification sample of the id column then failed as undeclared LOCATION. A span whose every word holds a digit is
    a code."""
    ids = [f"INC-{i:06d}" for i in range(1, 401)] + [f"SRV-{i:03d} 7B" for i in range(1, 101)]
    found = [
        r.entity_type
        for results in an.scan_texts(ids, score_threshold=0.0)
        for r in results
        if r.entity_type in {"PERSON", "LOCATION", "NRP"}
    ]
    assert found == []
    text = "Owner Jackson Chapman in Berlin, ticket INC-000003"
    kept = {(r.entity_type, text[r.start : r.end]) for r in an.scan_texts([text], score_threshold=0.4)[0]}
    assert {("PERSON", "Jackson Chapman"), ("LOCATION", "Berlin")} <= kept
