"""Issue 24's exact shortcuts: each must leave detections as Presidio's own path finds them."""

import phonenumbers
import pytest
from presidio_analyzer import Pattern, PatternRecognizer

from pipelines.privacy import analyzer as A
from pipelines.privacy import speedups


def _key(results):
    return sorted((r.entity_type, r.start, r.end, round(r.score, 6)) for r in results)


@pytest.mark.parametrize("candidate", ["12", "1-2", "(12)", "+12", "+1 2", "00 1", "0", "5", "+4 4"])
def test_candidates_below_the_shortest_number_never_verify(candidate):
    assert speedups.PHONE_MIN_DIGITS >= 1
    text = f"call {candidate} now"
    for region in ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR", "AR", "MX"):
        matcher = phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID)
        assert phonenumbers.PhoneNumberMatcher._parse_and_verify(matcher, candidate, 5) is None


def test_recognizer_lookup_follows_the_registry():
    analyzer = A.get_analyzer()
    before = analyzer.get_supported_entities("en")
    recognizer = PatternRecognizer(supported_entity="TEST_ENTITY_24", patterns=[Pattern("x", r"\bZQX\d{3}\b", 0.9)])
    analyzer.registry.add_recognizer(recognizer)
    try:
        assert "TEST_ENTITY_24" in analyzer.get_supported_entities("en")
        assert any(r.entity_type == "TEST_ENTITY_24" for r in analyzer.analyze("code ZQX123 here", "en"))
    finally:
        analyzer.registry.remove_recognizer(recognizer.name)
    assert sorted(analyzer.get_supported_entities("en")) == sorted(before)
    assert not any(r.entity_type == "TEST_ENTITY_24" for r in analyzer.analyze("code ZQX123 here", "en"))


TEXTS = [
    "Hi, I'm Szabina Gelencsér and I live at 15 Andrade Mount, Port Kevin. Call +1-609-688-9378.",
    "my name is tomomi nishiyama, email tomomi@example.com, born 12/03/1984",
    "Order ORD-93495880 arrived damaged.\nRegards, Blake Daugherty",
    "Meet me in Paris on Monday at 10:30 am with Willemine ten Pas.",
    "  leading space: John Smith from Berlin  ",
]


def test_reused_ner_docs_give_the_tokenizer_path_results():
    """One process (NER docs reused as one-line texts' tokens) equals NER in workers (texts tokenized again)."""
    analyzer = A.get_analyzer()
    engine = analyzer.nlp_engine
    engine.clear_entity_cache()
    reused = [_key(r) for r in A.scan_texts_with(analyzer, TEXTS, score_threshold=0.0, n_process=1)]
    engine.clear_entity_cache()
    texts = [A.gazetteer.case_view(t) for t in TEXTS]
    engine.recognize_entities(texts, "en")  # cached first: every text is tokenized anew
    fresh = [
        _key(analyzer.analyze(t, "en", score_threshold=0.0, nlp_artifacts=a))
        for t, a in engine.process_batch(texts, "en", batch_size=256)
    ]
    assert reused == fresh
    assert any(e == "PERSON" for text in reused for e, *_ in text)
