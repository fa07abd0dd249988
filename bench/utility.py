"""Section 6 of BENCHMARKS.md: utility, the share of cells changed that hold no personal value (over-masking).

Two sources of truth: the demo generator's ground truth for the demo's free-text columns, and the hand-written label
corpus (`label_corpus`) for label text, scanned as free text (before) and as label text, with and without the
column's own vocabulary (after).
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

from bench import label_corpus
from bench.common import OverMasking, fmt_int, ground_truth_values, md_table, over_masking, stamp
from pipelines.contracts import Column

LABEL_MODES = ("free text (before)", "label_text", "label_text + vocabulary_from_values")
LABEL_MIN_RECORDS = 5  # the contracts' usual k: a label held by 5 records is vocabulary
DEMO_TEXT_COLUMNS = (
    ("support_tickets", "body"),
    ("finance_expense_claims", "memo"),
    ("it_security_incidents", "description"),
)
_OPERATORS = {
    "PERSON": "pseudonymize",
    "EMAIL_ADDRESS": "pseudonymize",
    "PHONE_NUMBER": "pseudonymize",
    "DEFAULT": "replace",
}


def label_column(mode: str) -> Column:
    """A scanned column as a contract would declare it in `mode` (one of LABEL_MODES)."""
    spec: dict = {"operator": "scan", "operators": _OPERATORS}
    if mode != LABEL_MODES[0]:
        spec["label_text"] = True
    if mode == LABEL_MODES[2]:
        spec["vocabulary_from_values"] = True
    return Column.model_validate({"name": "label", "type": "string", "role": "free_text", "deidentify": spec})


def corpus_known():
    """The known-identifier index of the corpus: what the organisation knows of the people it names."""
    from pipelines.privacy.known import KnownIdentifiers

    known = KnownIdentifiers()
    for entity, values in label_corpus.KNOWN.items():
        known.add(entity, values)
    return known


def mask_labels(labels: list[str], mode: str, ctx, known) -> list[str]:
    """The labels de-identified as `scan_text_column` does in `mode` (own vocabulary: labels held by 5+ records)."""
    from pipelines.privacy.free_text import declared_terms, scan_text_column

    column = label_column(mode)
    counts = Counter(labels)
    frequent = [v for v, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])) if n >= LABEL_MIN_RECORDS]
    terms = declared_terms(
        column.deidentify,
        lambda name: pd.Series([], dtype=object),
        lambda: pd.Series(frequent, dtype=object),
        LABEL_MIN_RECORDS,
    )
    out, *_ = scan_text_column(
        pd.Series(labels, dtype=object), column, ctx, score_threshold=0.4, model_name=None, known=known, terms=terms
    )
    return out.tolist()


def label_corpus_over_masking(ctx=None) -> dict[str, dict[str, OverMasking]]:
    """Over-masking of each label column of the corpus, per mode (callable on its own)."""
    from bench.data import bench_context

    ctx, known = ctx or bench_context(), corpus_known()
    truth = [v for _, _, values in label_corpus.PERSONAL for v in values]
    figures: dict[str, dict[str, OverMasking]] = {}
    for column in label_corpus.clean_labels():
        labels, _ = label_corpus.records(column)
        figures[column] = {
            mode: over_masking(labels, mask_labels(labels, mode, ctx, known), truth) for mode in LABEL_MODES
        }
    return figures


def demo_over_masking(prep, texts: int, seed: int) -> dict[str, OverMasking]:
    """Over-masking of the demo's free-text columns (a seeded sample of `texts` rows each), against its ground truth."""
    from bench import methods as m
    from bench.data import bench_context

    figures = {}
    for dataset, column in DEMO_TEXT_COLUMNS:
        contract = prep.contract(dataset)
        frame = prep.frame(dataset).dropna(subset=[column])
        sample = frame.sample(n=min(texts, len(frame)), random_state=seed)
        terms_from = sample[contract.column(column).deidentify.non_personal_terms_from]
        run = m.text_method(m.PROJECT_TEXT, contract, column, bench_context(), prep.known, terms_from)
        before = sample[column].astype(str).tolist()
        figures[f"{dataset}.{column}"] = over_masking(
            before, run(list(before)), ground_truth_values(prep.landing, dataset, column)
        )
    return figures


def _row(name: str, mode: str, o: OverMasking) -> list:
    return [
        name,
        mode,
        fmt_int(o.cells),
        fmt_int(o.clean),
        f"{fmt_int(o.clean_changed)} ({100 * o.share:.1f}%)",
        fmt_int(o.personal),
        fmt_int(o.values_left),
    ]


def section_utility(cfg, log) -> tuple[str, dict]:
    """The over-masking table: label corpus per mode, then the demo's free-text columns."""
    log("  section 6: label corpus")
    labels = label_corpus_over_masking()
    log("  section 6: demo free text")
    demo = demo_over_masking(cfg.prepared_base(cfg.text_sizes_base), cfg.texts, cfg.seed)
    rows = [_row(f"label corpus: {column}", mode, o) for column, modes in labels.items() for mode, o in modes.items()]
    rows += [_row(name, "free text (contract as shipped)", o) for name, o in demo.items()]
    table = md_table(
        [
            "column",
            "scanned as",
            "cells",
            "cells without personal value",
            "of them changed (over-masking)",
            "cells with personal value",
            "personal values left",
        ],
        rows,
        "llrrrrr",
    )
    text = "\n".join(
        [
            "## 6. Utility: over-masking",
            "",
            "Share of cells that hold no ground-truth personal value and were changed anyway (goal on label text: under 1%, "
            "with no personal value left). Label corpus: hand-written offence descriptions, product names and categories "
            f"(`bench/label_corpus.py`, not Faker), each label repeated as a real export holds it; own vocabulary "
            f"= labels held by at least {LABEL_MIN_RECORDS} records. Demo columns: a seeded sample of {cfg.texts:,} texts "
            "each, against the generator's ground truth (a text holding none of its values counts as clean).",
            "",
            table,
            "",
            stamp(cfg.seed),
        ]
    )
    data = {
        "labels": {
            c: {mode: o.__dict__ | {"share": o.share} for mode, o in modes.items()} for c, modes in labels.items()
        },
        "demo": {name: o.__dict__ | {"share": o.share} for name, o in demo.items()},
    }
    return text, data
