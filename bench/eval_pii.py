"""Token-level PII detection accuracy on the presidio-research synthetic dataset.

Run as ``python -m bench.eval_pii [--data PATH] [--out FILE.md]``.

The metric re-implements presidio-evaluator 0.3.2's ``TokenEvaluator`` (IO tags on
spaCy tokens, default skip words, generic-entity leniency, any non-O tag counts as
PII for the overall figures) so that results compare with the figures in
``../shared/data/README.md`` without a runtime dependency on presidio-evaluator.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import string
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

from spacy.lang.en.stop_words import STOP_WORDS

PROJECT_ROOT = Path(__file__).resolve().parents[1]
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
    return [sample_from_record(row) for row in load_records(path, limit)]


def sample_from_record(row: dict, lower: bool = False) -> Sample:
    """Tokenize one dataset record (lowercased first if `lower`; offsets unchanged) and tag its gold spans."""
    text = lowercased(row["full_text"]) if lower else row["full_text"]
    tokens = tokenize(text)
    spans = [(s["start_position"], s["end_position"], s["entity_type"]) for s in row["spans"]]
    gold = tuple(map_tag(t) for t in spans_to_io_tags(tokens, spans))
    return Sample(text, tokens, gold)


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


def markdown_report(
    title: str, pii: Scores, per_entity: dict[str, Scores], notes: Sequence[str] = (), footer: bool = True
) -> str:
    """Render overall and per-entity scores, reference figures and the mapping as markdown."""
    lines = [
        f"## {title}",
        "",
        "| entity | gold tokens | predicted | TP | precision | recall | F2 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines.append(_row("**PII (overall)**", pii))
    lines += [_row(name, s) for name, s in per_entity.items()]
    if not footer:
        return "\n".join([*lines, "", *notes]) + "\n"
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
) -> tuple[list, float, float]:
    """Scan all sample texts from a cold NER cache; return results, texts per wall second and texts per CPU second
    (this process and its finished workers, user + system)."""
    from pipelines.privacy import analyzer

    texts = [s.text for s in samples]
    if baseline:
        engine = analyzer.get_baseline_analyzer(model_name)
        scan = lambda: analyzer.scan_texts_with(engine, texts, score_threshold=0.0, n_process=n_process)  # noqa: E731
    else:
        engine = analyzer.get_analyzer(model_name)  # load outside the timed section
        analyzer.clear_memos(engine)
        scan = lambda: analyzer.scan_texts(texts, model_name=model_name, n_process=n_process)  # noqa: E731
    wall, cpu = time.perf_counter(), _cpu_seconds()
    results = scan()
    wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
    return results, len(texts) / wall, len(texts) / cpu if cpu > 0 else math.nan


@dataclass(frozen=True)
class Speed:
    """Texts per CPU-second of each method on one corpus (best of the repeats, every repeat kept), side by side."""

    texts: int
    rates: dict[str, tuple[float, ...]]  # method -> texts per CPU-second, one per repeat

    def best(self, method: str) -> float:
        return max(self.rates[method])


SPEED_METHODS = ("project", "Presidio per text", "Presidio batch")


def measure_speed(texts: Sequence[str], model_name: str | None = None, reps: int = 3) -> Speed:
    """CPU-seconds of the project's `scan_texts` (1 process, every repeat cold: NER cache, phone verdicts, keyword
    memo), Presidio's default analyzer text by text, and its `BatchAnalyzerEngine` (batch 256, 1 process), interleaved
    with the order rotated each repeat, so the three see the same load (the machines are shared)."""
    import gc

    from presidio_analyzer import BatchAnalyzerEngine

    from pipelines.privacy import analyzer

    texts = list(texts)
    project, baseline = analyzer.get_analyzer(model_name), analyzer.get_baseline_analyzer(model_name)
    batch = BatchAnalyzerEngine(baseline)

    def cold_project() -> None:
        analyzer.clear_memos(project)
        analyzer.scan_texts(texts, model_name=model_name, n_process=1, score_threshold=0.0)

    runs = {
        "project": cold_project,
        "Presidio per text": lambda: [baseline.analyze(text, analyzer.LANGUAGE) for text in texts],
        "Presidio batch": lambda: list(batch.analyze_iterator(texts, analyzer.LANGUAGE, batch_size=256, n_process=1)),
    }
    warm_up = texts[:20]  # compiles every recognizer's patterns (Presidio compiles them on first use)
    analyzer.scan_texts(warm_up, model_name=model_name, n_process=1, score_threshold=0.0)
    [baseline.analyze(text, analyzer.LANGUAGE) for text in warm_up]
    rates: dict[str, list[float]] = {m: [] for m in SPEED_METHODS}
    for rep in range(reps):
        for method in SPEED_METHODS[rep % 3 :] + SPEED_METHODS[: rep % 3]:
            gc.collect()
            cpu = time.process_time()
            runs[method]()
            rates[method].append(len(texts) / max(time.process_time() - cpu, 1e-9))
    return Speed(len(texts), {m: tuple(v) for m, v in rates.items()})


@dataclass(frozen=True)
class Scaling:
    """Wall seconds of the project's scan at each process count (best of the repeats) and the CPU-seconds spent."""

    texts: int
    wall: dict[int, float]
    cpu: dict[int, float]

    def speed_up(self, processes: int) -> float:
        return self.wall[1] / self.wall[processes]

    def efficiency(self, processes: int) -> float:
        return self.speed_up(processes) / processes


def measure_scaling(
    texts: Sequence[str], model_name: str | None = None, processes: Sequence[int] = (1, 2), reps: int = 3
) -> Scaling:
    """Wall time of `scan_texts` (cold) at each process count, interleaved (order reversed every other repeat), and
    its CPU-seconds (this process and its workers). Parallel efficiency = speed-up / processes; on a shared machine
    compare it with the CPU ratio, which load does not change."""
    from pipelines.privacy import analyzer

    texts = list(texts)
    project = analyzer.get_analyzer(model_name)
    wall: dict[int, list[float]] = {n: [] for n in processes}
    cpu: dict[int, list[float]] = {n: [] for n in processes}
    for rep in range(reps):
        for n in processes if rep % 2 == 0 else tuple(reversed(processes)):
            analyzer.clear_memos(project)
            start, start_cpu = time.perf_counter(), _cpu_seconds()
            analyzer.scan_texts(texts, model_name=model_name, n_process=n, score_threshold=0.0)
            wall[n].append(time.perf_counter() - start)
            cpu[n].append(_cpu_seconds() - start_cpu)
    return Scaling(len(texts), {n: min(v) for n, v in wall.items()}, {n: min(v) for n, v in cpu.items()})


def speed_markdown(
    corpora: dict[str, Sequence[str]], model_name: str | None = None, reps: int = 3, processes: Sequence[int] = (1, 2)
) -> str:
    """The speed table (texts per CPU-second, ratios measured in the same run) and the scaling table."""
    lines = [
        "| corpus | texts | project | Presidio per text | Presidio batch | x per text | x batch |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    scaling_rows = []
    for name, texts in corpora.items():
        speed = measure_speed(texts, model_name, reps)
        p, t, b = (speed.best(m) for m in SPEED_METHODS)
        lines.append(f"| {name} | {speed.texts:,} | {p:,.0f} | {t:,.0f} | {b:,.0f} | {p / t:.1f} | {p / b:.1f} |")
        if len(processes) > 1:
            scaling = measure_scaling(texts, model_name, processes, reps)
            for n in processes[1:]:
                scaling_rows.append(
                    f"| {name} | {n} | {scaling.wall[1]:.2f} | {scaling.wall[n]:.2f} | {scaling.speed_up(n):.2f} | "
                    f"{scaling.efficiency(n):.2f} | {scaling.cpu[1]:.2f} | {scaling.cpu[n]:.2f} |"
                )
    lines += [
        "",
        (
            "Texts per CPU-second of one process (best of each method's repeats, interleaved, order rotated; the "
            "project starts cold every repeat)."
        ),
    ]
    if scaling_rows:
        lines += [
            "",
            "| corpus | processes | wall, 1 process (s) | wall, n (s) | speed-up | efficiency | CPU-s, 1 | CPU-s, n |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            *scaling_rows,
            "",
            (
                f"Load average when done: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on "
                f"{os.cpu_count()} cores (efficiency is only meaningful on an otherwise idle machine; the CPU-seconds "
                "show the work added by the processes)."
            ),
        ]
    return "\n".join(lines) + "\n"


def _cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (forked scanning workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


# --- tuning / held-out split -----------------------------------------------------------
# Texts generated from one template share their wording, so the split is by template: a template belongs to the
# held-out half when the lowest bit of the first byte of SHA-256(str(template_id)) is 1 (stable across runs, Python
# versions and machines; on synth_dataset_v2: 108 templates / 755 texts held out, 101 / 745 for tuning). Detection is
# tuned on the tuning half only; the held-out half is what the project reports.
HALVES = ("held_out", "tuning")


def split_half(template_id) -> str:
    """'held_out' or 'tuning' for a template id (see above)."""
    return "held_out" if hashlib.sha256(str(template_id).encode("utf-8")).digest()[0] & 1 else "tuning"


def load_records(path: Path, limit: int | None = None) -> list[dict]:
    """The dataset's records (the first `limit`)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))[:limit]


def lowercased(text: str) -> str:
    """The text in lower case, character by character (a character whose lower case is longer, such as 'İ', stays as
    it is), so the gold spans' offsets stay valid."""
    low = text.lower()
    return low if len(low) == len(text) else "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def is_cased(text: str) -> bool:
    """Does the text hold any upper-case letter (the dataset's own all-lower-case texts do not)?"""
    return any(c.isupper() for c in text)


def subsets(records: Sequence[dict], half: str) -> dict[str, list[Sample]]:
    """The reported sets of one half: all its texts as written, its cased texts, its texts written in lower case, and
    a lowercased copy of all its texts (gold spans unchanged)."""
    rows = [r for r in records if "template_id" not in r or split_half(r["template_id"]) == half]
    samples = [sample_from_record(r) for r in rows]
    return {
        "all": samples,
        "cased": [s for s in samples if is_cased(s.text)],
        "written lower-case": [s for s in samples if not is_cased(s.text)],
        "lowercased copy": [sample_from_record(r, lower=True) for r in rows],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: evaluate the detector on the held-out half (and the tuning half) and print/write markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown tables here")
    parser.add_argument("--model", default=None, help="spaCy model (default: $PIPELINES_NLP_MODEL or the bundled sm)")
    parser.add_argument(
        "--baseline", action="store_true", help="score Presidio's default recognizers instead (README baseline)"
    )
    parser.add_argument(
        "--n-process", type=int, default=None, help="worker processes (default: $PIPELINES_NLP_PROCESSES or the cores)"
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N records")
    parser.add_argument(
        "--half", choices=(*HALVES, "both"), default="both", help="which half to report (default: both)"
    )
    parser.add_argument("--summary", action="store_true", help="print only one line per set (overall and per entity)")
    parser.add_argument(
        "--speed",
        action="store_true",
        help="only measure speed on the held-out half (and its "
        "lowercased copy) against Presidio side by side, and scaling from 1 to --speed-processes",
    )
    parser.add_argument("--speed-processes", type=int, default=2)
    parser.add_argument("--speed-reps", type=int, default=3)
    args = parser.parse_args(argv)
    if args.speed:
        records = [
            r
            for r in load_records(args.data, args.limit)
            if "template_id" not in r or split_half(r["template_id"]) == "held_out"
        ]
        corpora = {
            "held-out half": [r["full_text"] for r in records],
            "held-out half, lowercased": [lowercased(r["full_text"]) for r in records],
        }
        report = speed_markdown(corpora, args.model, args.speed_reps, tuple(range(1, args.speed_processes + 1)))
        print(report)
        if args.out:
            args.out.write_text(report, encoding="utf-8")
        return 0

    from pipelines.privacy import analyzer

    records = load_records(args.data, args.limit)
    info = analyzer.detector_info(args.model) if not args.baseline else None
    title = "Presidio default recognizers (baseline)" if args.baseline else "Our detector (pipelines.privacy.analyzer)"
    sections, summary = [f"# {title}", ""], []
    for half in HALVES if args.half == "both" else (args.half,):
        sets = subsets(records, half)
        results, rate, cpu_rate = run_detector(sets["all"], args.baseline, args.model, args.n_process)
        lower_results, lower_rate, lower_cpu = run_detector(
            sets["lowercased copy"], args.baseline, args.model, args.n_process
        )
        by_text = dict(zip((s.text for s in sets["all"]), results))
        by_text.update(zip((s.text for s in sets["lowercased copy"]), lower_results))
        for name, samples in sets.items():
            pii, per_entity = evaluate(samples, [by_text[s.text] for s in samples])
            label = f"{half.replace('_', '-')} half, {name} ({len(samples)} texts)"
            summary.append(_summary_line(label, pii, per_entity))
            notes = []
            if name == "all":
                notes.append(
                    f"Speed: {rate:,.0f} texts/s, {cpu_rate:,.0f} texts per CPU-second "
                    f"({analyzer.resolve_processes(args.n_process)} process(es), cold NER cache, incl. spaCy)."
                )
            if name == "lowercased copy":
                notes.append(f"Speed: {lower_rate:,.0f} texts/s, {lower_cpu:,.0f} texts per CPU-second.")
            sections.append(markdown_report(label, pii, per_entity, notes, footer=False))
    model = info["nlp_model"] if info else {"name": analyzer.resolve_model_name(args.model), "version": ""}
    mapping = ", ".join(f"{k}->{v}" for k, v in ENTITY_MAPPING.items())
    sections += [
        "| reference (PII, whole file) | precision | recall | F2 |",
        "|---|---:|---:|---:|",
        *[f"| {name} | {p:.3f} | {r:.3f} | {f:.3f} |" for name, (p, r, f) in REFERENCE_FIGURES.items()],
        "",
        f"Data: {args.data.name}, {len(records)} records, split by template_id: held out when the lowest bit of "
        "SHA-256(template_id)'s first byte is 1. Detection is tuned on the tuning half only. 'lowercased copy': every "
        "text of the half lowercased, gold spans unchanged.",
        f"Model: {model['name']} {model['version']}, presidio-analyzer {version('presidio-analyzer')}, "
        f"spaCy {version('spacy')}.",
        f"Mapping (gold and predicted): {mapping}; all other types unchanged.",
        "Metric: presidio-evaluator 0.3.2 TokenEvaluator semantics (IO tags on en_core_web_sm tokens, "
        "default skip words, F-beta with beta=2).",
    ]
    report = "\n".join(sections) + "\n"
    print("\n".join(summary) if args.summary else report)
    if args.out:
        args.out.write_text(report, encoding="utf-8")
    return 0


def _summary_line(label: str, pii: Scores, per_entity: dict[str, Scores]) -> str:
    """One line: overall P/R/F2 and each entity's P/R."""
    entities = " ".join(f"{name} {_fmt(s.precision)}/{_fmt(s.recall)}" for name, s in per_entity.items())
    return f"{label}: P {_fmt(pii.precision)} R {_fmt(pii.recall)} F2 {_fmt(pii.f_beta)} | {entities}"


if __name__ == "__main__":
    sys.exit(main())
