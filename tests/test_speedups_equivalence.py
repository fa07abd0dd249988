"""The speed-ups (pipelines.privacy.speedups) change no detection: entity, span and score as on the stock path.

The whole corpus runs in every `make test`: more than 10,000 distinct texts (the demo's free text and the labelled
texts with their lowercased copies), each scanned once with the speed-ups and once on stock Presidio.
"""

import random

import pytest

from bench import eval_pii
from demo.generator import SPECS, generate
from pipelines.privacy import analyzer as an
from pipelines.privacy import speedups

DEMO_ROWS, DEMO_SEED = 4000, 7  # 8,000 expense memos, 2,000 incident descriptions, 4,000 ticket bodies


def unique(texts):
    return list(dict.fromkeys(t for t in texts if t and t.strip()))


def _demo_texts(out_dir) -> list[str]:
    import csv

    texts = []
    paths = generate(out_dir, DEMO_ROWS, DEMO_SEED)
    for spec in SPECS.values():
        if spec.text_column:
            with paths[spec.name].open(newline="", encoding="utf-8") as f:
                texts += [row[spec.text_column] for row in csv.DictReader(f)]
    return texts


def _labelled_texts() -> list[str]:
    records = eval_pii.load_records(eval_pii.DEFAULT_DATA)
    return [r["full_text"] for r in records] + [eval_pii.lowercased(r["full_text"]) for r in records]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, list[str]]:
    if not eval_pii.DEFAULT_DATA.exists():
        pytest.skip(f"labelled texts not found at {eval_pii.DEFAULT_DATA}")
    return {
        "demo free text": unique(_demo_texts(tmp_path_factory.mktemp("demo"))),
        "labelled": unique(_labelled_texts()),
    }


def _detections(analyzer, texts: list[str]) -> list[list[tuple]]:
    an.clear_memos(analyzer)
    results = an.scan_texts_with(analyzer, texts, score_threshold=0.0)
    return [sorted((r.entity_type, r.start, r.end, r.score) for r in found) for found in results]


def _compare(texts: list[str]) -> None:
    fast = _detections(an.get_analyzer(use_speedups=True), texts)
    stock = _detections(an.get_analyzer(use_speedups=False), texts)
    differ = [(text[:80], f, s) for text, f, s in zip(texts, fast, stock) if f != s]
    assert not differ, f"{len(differ)} of {len(texts)} texts differ, e.g. {differ[:3]}"
    assert sum(map(len, fast)) > len(texts) // 2  # the corpus holds detections to compare


def test_the_setting_switches_the_speedups_off(monkeypatch):
    monkeypatch.setenv(speedups.SPEEDUPS_ENV, "0")
    stock = an.get_analyzer()
    assert type(stock) is an.AnalyzerEngine and stock.nlp_engine.artifact_builder is None
    assert an.get_analyzer(use_speedups=True) is not stock
    monkeypatch.delenv(speedups.SPEEDUPS_ENV)
    assert isinstance(an.get_analyzer(), speedups.FastAnalyzerEngine)


def test_speedups_change_no_detection_on_the_whole_corpus(corpus):
    texts = [t for texts in corpus.values() for t in texts]
    assert len(texts) >= 10_000, {name: len(t) for name, t in corpus.items()}
    _compare(texts)
    print(
        f"\nspeed-ups on and off: identical detections on {len(texts):,} texts "
        + ", ".join(f"({name}: {len(t):,})" for name, t in corpus.items())
    )


def test_the_per_region_phone_bound_never_drops_a_number_phonenumbers_accepts():
    """A candidate with fewer digits (and letters) than `speedups.region_min_digits` of its region is never a VALID
    number there: checked against phonenumbers itself on short candidates written every way the matcher finds them
    (international and national prefixes, separators, 'x' separators that alpha normalization turns into digits)."""
    import phonenumbers
    from phonenumbers.phonenumbermatcher import PhoneNumberMatcher

    regions = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR")
    assert {r: speedups.region_min_digits(r) for r in regions} == {
        "US": 7, "GB": 7, "DE": 4, "FR": 8, "IL": 7, "IN": 8, "CA": 7, "BR": 8,
    }  # fmt: skip
    rng = random.Random(11)
    separators = ["", " ", "-", ".", "(", ")", "/", "x", " ext. "]
    skipped = 0
    for _ in range(20_000):
        prefix = rng.choice(["", "", "0", "00", "011", "1", "44", "0049", "(0)"])
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 8)))
        candidate = (
            prefix + "".join(d + (rng.choice(separators) if rng.random() < 0.3 else "") for d in digits)
        ).strip()
        region = rng.choice(regions)
        if len(speedups._PHONE_LETTERS_OR_DIGITS.findall(candidate)) >= speedups.region_min_digits(region):
            continue
        skipped += 1
        matcher = PhoneNumberMatcher(f"call {candidate} now", region, leniency=phonenumbers.Leniency.VALID)
        assert PhoneNumberMatcher._parse_and_verify(matcher, candidate, 5) is None, (region, candidate)
    assert skipped > 5_000
