"""Token-level PII detection accuracy on the presidio-research synthetic dataset.

Run as ``python -m pipelines.privacy.eval_pii [--data PATH] [--out FILE.md]``.

The metric re-implements presidio-evaluator 0.3.2's ``TokenEvaluator`` (IO tags on
spaCy tokens, default skip words, generic-entity leniency, any non-O tag counts as
PII for the overall figures) so that results compare with the figures in
``../shared/data/README.md`` without a runtime dependency on presidio-evaluator.
"""

from __future__ import annotations

import argparse
import json
import math
import string
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from spacy.lang.en.stop_words import STOP_WORDS

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "pii-text" / "synth_dataset_v2.json"
BETA = 2.0
OUTSIDE = "O"

# Dataset type -> Presidio type, as stated in shared/data/README.md; types mapped to O
# are neither gold PII nor counted when predicted.  Applied to gold and predicted tags.
ENTITY_MAPPING: dict[str, str] = {
    "PERSON": "PERSON",
    "GPE": "LOCATION",
    "LOCATION": "LOCATION",
    "STREET_ADDRESS": "LOCATION",
    "ADDRESS": "LOCATION",
    "DOMAIN_NAME": "URL",
    "TITLE": OUTSIDE,
    "PREFIX": OUTSIDE,
    "AGE": OUTSIDE,
    "ZIP_CODE": OUTSIDE,
    "ORGANIZATION": OUTSIDE,
}

# presidio-evaluator's GENERIC_ENTITIES: a generic prediction is never a type error.
GENERIC_ENTITIES = frozenset({"PII", "ID", "PHI", "ID_NUM", "NUMBER", "NUM", "GENERIC_PII"})

# Published / measured reference figures from shared/data/README.md (precision, recall, F2).
REFERENCE_FIGURES: dict[str, tuple[float, float, float]] = {
    "Presidio default, en_core_web_lg (published notebook)": (0.685, 0.603, 0.618),
    "Presidio default, en_core_web_sm (README, measured here)": (0.899, 0.556, 0.602),
}


def default_skip_words() -> frozenset[str]:
    """Return presidio-evaluator's default skip words (punctuation, fillers, spaCy stop words)."""
    words = set(string.punctuation) | set(string.whitespace)
    words |= {
        " ", "", "\n", "\n\n", "\n\n\n", "\n\n\n\n", "\t", "\t\t", "\t\t\t", "\t\t\t\t",
        ">>", ">>>", ">>>>", ">>>>>", ">>>>>>", "'s", "street", "st.", "st", "de", "rue",
        "via", "and", "a", "the", "or", "do", "as", "of", "day", "address", "country",
        "state", "city", "zip", "po", "apt", "unit", "corner", "p.o.", "box", "suite",
        "mr.", "mrs.", "miss", "year", "years", "y/o", "month", "months", "old", "morning",
        "noon", "afternoon", "night", "evening", "this", "first", "last", "week", "weeks",
        "weekend", "days", "age", "ago", "inc", "inc.", "ltd",
    }  # fmt: skip
    return frozenset(words | set(STOP_WORDS))


@dataclass(frozen=True)
class Token:
    """A token's text and character offset (what the metric needs from spaCy)."""

    text: str
    idx: int


@dataclass(frozen=True)
class Sample:
    """One labelled text: its tokens and gold IO tags (already mapped)."""

    text: str
    tokens: tuple[Token, ...]
    gold: tuple[str, ...]


@dataclass(frozen=True)
class Scores:
    """Precision/recall/F-beta with the counts behind them."""

    annotated: int
    predicted: int
    true_positives: int
    precision: float
    recall: float
    f_beta: float


def resolve_overlaps(
    starts: list[int], ends: list[int], tags: list[str], scores: list[float]
) -> tuple[list[int], list[int], list[str], list[float]]:
    """Resolve overlapping spans exactly like presidio-evaluator's ``_handle_overlaps``."""
    starts, ends, tags, scores = _sort_spans(starts, ends, tags, scores)
    count = len(starts)
    i = 0
    while i < count - 1:
        for j in range(i + 1, count):  # range fixed at entry, as in the reference
            if starts[i] <= starts[j] <= ends[i]:
                if scores[i] > scores[j]:
                    if starts[i] <= ends[j] <= ends[i]:
                        scores[j] = 0
                    else:
                        starts[j] = ends[i] + 1
                elif ends[j] < ends[i]:
                    # j wins and sits inside i: split i around j
                    starts.append(ends[j] + 1)
                    ends.append(ends[i])
                    scores.append(scores[i])
                    tags.append(tags[i])
                    count += 1
                    ends[i] = starts[j] - 1
                else:
                    ends[i] = starts[j] - 1
        i += 1
    return _sort_spans(starts, ends, tags, scores)


def _sort_spans(
    starts: list[int], ends: list[int], tags: list[str], scores: list[float]
) -> tuple[list[int], list[int], list[str], list[float]]:
    """Stable-sort parallel span lists by start offset."""
    if not starts:
        return list(starts), list(ends), list(tags), list(scores)
    rows = sorted(zip(starts, ends, tags, scores), key=lambda row: row[0])
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]


def spans_to_io_tags(
    tokens: Sequence[Token],
    spans: Iterable[tuple[int, int, str]],
    scores: Sequence[float] | None = None,
) -> list[str]:
    """Tag each token with the first covering span's type (``span_to_tag`` with scheme IO)."""
    spans = list(spans)
    starts = [s[0] for s in spans]
    ends = [s[1] for s in spans]
    tags = [s[2] for s in spans]
    scores = list(scores) if scores else [0.5] * len(spans)
    starts, ends, tags, scores = resolve_overlaps(starts, ends, tags, scores)
    io_tags = []
    for token in tokens:
        io_tags.append(_tag_for_token(token, starts, ends, tags))
    return io_tags


def _tag_for_token(token: Token, starts: list[int], ends: list[int], tags: list[str]) -> str:
    """Return the tag of the first span that starts the token or lies inside it."""
    token_end = token.idx + len(token.text)
    for start, end, tag in zip(starts, ends, tags):
        if start <= token.idx < end:
            return tag
        if token.idx <= start <= token_end and token.idx <= end <= token_end:
            return tag
    return OUTSIDE


def map_tag(tag: str) -> str:
    """Map a dataset or Presidio entity type onto the compared type set."""
    return ENTITY_MAPPING.get(tag, tag)


def compare_tags(
    tokens: Sequence[str],
    gold: Sequence[str],
    predicted: Sequence[str],
    skip_words: frozenset[str],
) -> Counter:
    """Count (gold, predicted) tag pairs per token, like ``TokenEvaluator.compare``."""
    results: Counter = Counter()
    if len(gold) != len(predicted):
        return results
    for token, annotation, prediction in zip(tokens, gold, predicted):
        results[(annotation, prediction)] += 1
        if annotation != prediction:
            _revert_known_errors(token, annotation, prediction, results, skip_words)
    return results


def _revert_known_errors(
    token: str, annotation: str, prediction: str, results: Counter, skip_words: frozenset[str]
) -> None:
    """Forgive errors on skip words and on generic types (reference semantics, incl. quirks)."""
    key = (annotation, prediction)
    if token.lower().strip() in skip_words:
        results[key] -= 1
    if prediction in GENERIC_ENTITIES and annotation != OUTSIDE:
        results[key] -= 1
        results[(annotation, annotation)] += 1
    elif annotation in GENERIC_ENTITIES and prediction != OUTSIDE:
        results[key] -= 1
        results[(prediction, prediction)] += 1
    if results[key] == 0:
        del results[key]


def aggregate(counters: Iterable[Counter]) -> Counter:
    """Sum per-sample counters the way the reference does (``+`` drops non-positive counts)."""
    return sum(counters, Counter())


def _ratio(numerator: int, denominator: int) -> float:
    """Return numerator/denominator, or NaN for an empty denominator."""
    return numerator / denominator if denominator > 0 else math.nan


def f_beta(precision: float, recall: float, beta: float = BETA) -> float:
    """F-beta score; NaN when undefined (as in the reference)."""
    if math.isnan(precision) or math.isnan(recall) or (precision == 0 and recall == 0):
        return math.nan
    return (1 + beta**2) * precision * recall / (beta**2 * precision + recall)


def _scores(annotated: int, predicted: int, tp: int) -> Scores:
    """Build a Scores record from counts."""
    precision, recall = _ratio(tp, predicted), _ratio(tp, annotated)
    return Scores(annotated, predicted, tp, precision, recall, f_beta(precision, recall))


def score_results(results: Counter) -> tuple[Scores, dict[str, Scores]]:
    """Return overall PII scores (any non-O tag) and per-entity scores."""
    pii = _scores(
        sum(n for (a, _), n in results.items() if a != OUTSIDE),
        sum(n for (_, p), n in results.items() if p != OUTSIDE),
        sum(n for (a, p), n in results.items() if a != OUTSIDE and p != OUTSIDE),
    )
    entities = {t for pair in results for t in pair if t != OUTSIDE}
    per_entity = {
        entity: _scores(
            sum(n for (a, _), n in results.items() if a == entity),
            sum(n for (_, p), n in results.items() if p == entity),
            results[(entity, entity)],
        )
        for entity in sorted(entities)
    }
    return pii, per_entity


@lru_cache(maxsize=1)
def _tokenizer():
    """Return the reference tokenizer: en_core_web_sm's, as the README's metric used."""
    import spacy

    from pipelines.privacy.analyzer import DEFAULT_NLP_MODEL, ensure_model_installed

    ensure_model_installed(DEFAULT_NLP_MODEL)
    nlp = spacy.load(
        DEFAULT_NLP_MODEL, exclude=["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "ner", "senter"]
    )
    return nlp.tokenizer


def tokenize(text: str) -> tuple[Token, ...]:
    """Split text into reference tokens."""
    return tuple(Token(t.text, t.idx) for t in _tokenizer()(text))


def load_samples(path: Path, limit: int | None = None) -> list[Sample]:
    """Read the presidio-research JSON dataset into samples with mapped gold IO tags."""
    rows = json.loads(Path(path).read_text(encoding="utf-8"))[:limit]
    return [sample_from_record(row) for row in rows]


def sample_from_record(row: dict) -> Sample:
    """Tokenize one dataset record and tag its gold spans."""
    tokens = tokenize(row["full_text"])
    spans = [(s["start_position"], s["end_position"], s["entity_type"]) for s in row["spans"]]
    gold = tuple(map_tag(t) for t in spans_to_io_tags(tokens, spans))
    return Sample(row["full_text"], tokens, gold)


def predicted_tags(sample: Sample, results: Sequence) -> list[str]:
    """Turn analyzer results for a sample into mapped IO tags."""
    spans = [(r.start, r.end, r.entity_type) for r in results]
    scores = [r.score for r in results]
    return [map_tag(t) for t in spans_to_io_tags(sample.tokens, spans, scores)]


def evaluate(
    samples: Sequence[Sample], predictions: Sequence[Sequence], skip_words: frozenset[str] | None = None
) -> tuple[Scores, dict[str, Scores]]:
    """Score analyzer predictions (one result list per sample) against the gold tags."""
    skip = default_skip_words() if skip_words is None else skip_words
    counters = (
        compare_tags([t.text for t in s.tokens], s.gold, predicted_tags(s, p), skip)
        for s, p in zip(samples, predictions)
    )
    return score_results(aggregate(counters))


def _fmt(value: float) -> str:
    """Format a metric for the table."""
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def markdown_report(title: str, pii: Scores, per_entity: dict[str, Scores], notes: Sequence[str] = ()) -> str:
    """Render overall and per-entity scores, reference figures and the mapping as markdown."""
    lines = [
        f"## {title}",
        "",
        "| entity | gold tokens | predicted | TP | precision | recall | F2 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines.append(_row("**PII (overall)**", pii))
    lines += [_row(name, s) for name, s in per_entity.items()]
    lines += ["", "| reference (PII) | precision | recall | F2 |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {p:.3f} | {r:.3f} | {f:.3f} |" for name, (p, r, f) in REFERENCE_FIGURES.items()]
    mapping = ", ".join(f"{k}->{v}" for k, v in ENTITY_MAPPING.items())
    lines += ["", f"Mapping (gold and predicted): {mapping}; all other types unchanged."]
    lines += [
        "Metric: presidio-evaluator 0.3.2 TokenEvaluator semantics (IO tags on en_core_web_sm tokens, "
        "default skip words, F-beta with beta=2)."
    ]
    lines += [f"{note}" for note in notes]
    return "\n".join(lines) + "\n"


def _row(name: str, s: Scores) -> str:
    """One markdown table row."""
    counts = f"{s.annotated} | {s.predicted} | {s.true_positives}"
    return f"| {name} | {counts} | {_fmt(s.precision)} | {_fmt(s.recall)} | {_fmt(s.f_beta)} |"


def run_detector(
    samples: Sequence[Sample], baseline: bool, model_name: str | None, n_process: int | None
) -> tuple[list, float]:
    """Scan all sample texts; return results and throughput in texts/s."""
    from pipelines.privacy import analyzer

    texts = [s.text for s in samples]
    if baseline:
        engine = analyzer.get_baseline_analyzer(model_name)
        started = time.perf_counter()
        results = analyzer.scan_texts_with(engine, texts, score_threshold=0.0, n_process=n_process)
    else:
        analyzer.get_analyzer(model_name)  # load outside the timed section
        started = time.perf_counter()
        results = analyzer.scan_texts(texts, model_name=model_name, n_process=n_process)
    return results, len(texts) / (time.perf_counter() - started)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: evaluate the detector and print/write a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    parser.add_argument("--model", default=None, help="spaCy model (default: $PIPELINES_NLP_MODEL or the bundled sm)")
    parser.add_argument(
        "--baseline", action="store_true", help="score Presidio's default recognizers instead (README baseline)"
    )
    parser.add_argument("--n-process", type=int, default=None, help="worker processes (default: $PIPELINES_NLP_PROCESSES or the cores)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N samples")
    args = parser.parse_args(argv)

    from pipelines.privacy import analyzer

    samples = load_samples(args.data, args.limit)
    results, rate = run_detector(samples, args.baseline, args.model, args.n_process)
    pii, per_entity = evaluate(samples, results)
    info = analyzer.detector_info(args.model)
    title = "Presidio default recognizers (baseline)" if args.baseline else "Our detector (pipelines.privacy.analyzer)"
    model = info["nlp_model"]
    notes = [
        f"Data: {args.data.name}, {len(samples)} samples. Model: {model['name']} {model['version']}, "
        + f"presidio-analyzer {info['presidio_analyzer_version']}, spaCy {info['spacy_version']}.",
        f"Speed: {rate:,.0f} texts/s (scan_texts, {analyzer.resolve_processes(args.n_process)} process(es), incl. spaCy).",
    ]
    report = markdown_report(title, pii, per_entity, notes)
    print(report)
    if args.out:
        args.out.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
