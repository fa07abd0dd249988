"""Sections 1-4 of BENCHMARKS.md: tables, free text, detection accuracy, risk on UCI Adult."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench import methods as m
from bench.common import (
    SHARED_DATA,
    Leak,
    fmt_int,
    fmt_rate,
    fmt_ratio,
    fmt_s,
    frame_cells,
    ground_truth_values,
    md_table,
    measure_leak,
    stamp,
    timed,
)
from bench.data import Prepared, base_rows_for, bench_context, prepare

SHORT_RUN_SECONDS = 20.0  # runs shorter than this are repeated and the median is reported


@dataclass
class BenchConfig:
    out: Path
    workdir: Path
    seed: int = 7
    sizes: tuple[int, ...] = (10_000, 100_000)
    pipeline_sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    sections: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    dataset: str = "support_tickets"
    baseline_rows: int = 2000  # larger tables: baselines run on a seeded sample of this many rows, extrapolated
    texts: int = 3000  # texts per free-text column in section 2
    text_sizes_base: int = 10_000  # generator rows the section-2 texts are drawn from
    eval_limit: int | None = None  # section 3: first N samples only (smoke runs)
    risk_repeats: int = 5
    repeats: int = 3
    pipeline_timeout: float = 45 * 60
    quick: bool = False
    profile: bool = True  # section 1: profile the project on a sample of `baseline_rows` rows
    json_path: Path | None = None
    revision: str | None = None  # code revision when the run started
    optimizations: str | None = None  # the report's hand-kept optimizations log, read before the first write
    prepared: dict[int, Prepared] = field(default_factory=dict)
    lifecycle_rows: tuple[int, ...] = (100_000,)  # section 7: generator --rows (rows per department)
    dp_rows: tuple[int, ...] = (100_000, 1_000_000)  # section 8: synthetic person-level tables (people)
    dp_repeats: int = 50  # section 8: releases per epsilon for the error (a quarter above 200,000 people)
    splice: bool = False  # --only: replace just these sections in the existing report, leave the rest as it is

    def prepared_for(self, dataset: str, rows: int) -> Prepared:
        """Generated data in which `dataset` has at least `rows` rows."""
        return self.prepared_base(base_rows_for(dataset, rows))

    def prepared_base(self, base: int) -> Prepared:
        """Generated data for generator `--rows base`."""
        if base not in self.prepared:
            self.prepared[base] = prepare(self.workdir, base, self.seed)
        return self.prepared[base]


def repeat_median(fn, repeats: int) -> tuple[float, int, Any]:
    """Run once; if it was short, run again up to `repeats` times and return the median."""
    first = timed(fn)
    times, value = [first.seconds], first.value
    if first.seconds < SHORT_RUN_SECONDS:
        for _ in range(repeats - 1):
            t = timed(fn)
            times.append(t.seconds)
    return statistics.median(times), len(times), value


def _leak_text(leak: Leak, sampled: bool) -> str:
    entities = ", ".join(f"{k} {v:,}" for k, v in leak.by_entity.items())
    text = f"{leak.in_output:,} of {leak.in_input:,} ({100 * leak.share:.1f}%)"
    return text + (f": {entities}" if entities else "")


# ------------------------------------------------------------------------------------ section 1


def section_tables(cfg: BenchConfig, log) -> tuple[str, dict]:
    dataset = cfg.dataset
    rows_out, data = [], {"dataset": dataset, "sizes": {}}
    notes: list[str] = []
    for size in cfg.sizes:
        prep = cfg.prepared_for(dataset, size)
        contract = prep.contract(dataset)
        frame = prep.frame(dataset).iloc[:size].reset_index(drop=True)
        truth = ground_truth_values(prep.landing, dataset)
        ctx = bench_context()
        from pipelines.privacy.analyzer import get_analyzer

        get_analyzer()  # load models outside the timings
        m.baseline_engines()
        results: dict[str, dict] = {}
        if not m.k_anonymity_reachable(frame, contract, ctx):
            contract = m.relaxed(contract)
            notes.append(f"{size:,} rows, {m.PROJECT}: {m.RELAXED_NOTE}")
        for name in (m.PROJECT, *m.BASELINES):
            sample = name in (m.NAIVE, m.BATCH) and len(frame) > cfg.baseline_rows
            part = frame.sample(n=cfg.baseline_rows, random_state=cfg.seed).reset_index(drop=True) if sample else frame
            run = m.method_run(name, part, contract, ctx, prep.known)
            log(f"  section 1: {dataset} {size:,} rows, {name}{f' (sample of {len(part)} rows)' if sample else ''}")
            seconds, runs, value = repeat_median(run.work, cfg.repeats)
            output = run.finish(value)
            leak = measure_leak(truth, frame_cells(part), frame_cells(output.frame))
            rate = len(part) / seconds
            results[name] = {
                "rows_processed": len(part),
                "sampled": sample,
                "seconds": seconds,
                "runs": runs,
                "rows_per_s": rate,
                "estimated_seconds_full": len(frame) / rate,
                "rows_out": len(output.frame),
                "leak": leak.__dict__ | {"share": leak.share},
                "note": output.note,
                "blocked": output.blocked,
            }
            if output.note:
                notes.append(f"{size:,} rows, {name}: {output.note}")
            if output.blocked:
                notes.append(
                    f"**{size:,} rows, {name}: BLOCKED by the residual-PII gate after {fmt_s(seconds)} s** "
                    f"(all columns were masked and rescanned; the gate then refused to publish): `{output.blocked}`"
                )
        project_rate = results[m.PROJECT]["rows_per_s"]
        for name, r in results.items():
            leak = Leak(r["leak"]["in_input"], r["leak"]["in_output"], r["leak"]["by_entity"])
            time_cell = (
                fmt_s(r["seconds"]) if not r["sampled"] else f"~{fmt_s(r['estimated_seconds_full'])} (extrapolated)"
            )
            rows_out.append(
                [
                    f"{size:,}",
                    name,
                    f"{r['rows_processed']:,}" + (" (seeded sample)" if r["sampled"] else ""),
                    time_cell + (" **blocked**" if r.get("blocked") else ""),
                    fmt_rate(r["rows_per_s"]),
                    "1.0x" if name == m.PROJECT else fmt_ratio(project_rate / r["rows_per_s"]),
                    "nothing published (blocked by the residual-PII gate)"
                    if r.get("blocked")
                    else _leak_text(leak, r["sampled"]),
                    f"{r['rows_out']:,}",
                    r["runs"],
                ]
            )
        data["sizes"][size] = {"results": results, "prepare_seconds": prep.seconds}
        log(f"  section 1: {size:,} rows done")
    structured_text = section_structured(cfg, log, data)
    first = cfg.prepared_for(dataset, cfg.sizes[0]).contract(dataset)
    profile_text = ""
    if cfg.profile:
        from bench.profile import profile_markdown, profile_project

        prep = cfg.prepared_for(dataset, cfg.sizes[0])
        frame = prep.frame(dataset)
        part = frame.sample(n=min(len(frame), cfg.baseline_rows), random_state=cfg.seed).reset_index(drop=True)
        log(f"  section 1: profiling the project on {len(part):,} rows")
        data["profile"] = profile_project(part, first, bench_context(), prep.known)
        profile_text = profile_markdown(data["profile"], len(part), dataset)
    columns = ", ".join(c.name for c in first.columns)
    table = md_table(
        [
            "rows",
            "method",
            "rows processed",
            "time (s)",
            "rows/s",
            "project speed-up",
            "ground-truth PII left in output (of values in input)",
            "rows out",
            "runs (median)",
        ],
        rows_out,
        "rllrrrlrr",
    )
    prep_lines = [
        f"- {size:,} rows: generating all four departments took {fmt_s(d['prepare_seconds'].get('generate'))} s, ingesting them "
        f"{fmt_s(d['prepare_seconds']['ingest'])} s, indexing known identifiers {fmt_s(d['prepare_seconds']['known_identifiers'])} s "
        "(the project's de-identification step does the last one itself; it is not in the figures above)."
        for size, d in data["sizes"].items()
    ]
    text = "\n".join(
        [
            f"## 1. De-identifying a generated table: `{dataset}` (structured + free text)",
            "",
            f"The generator's `{dataset}` ({columns}), "
            "read from the raw DuckDB table exactly as the pipeline reads it. **This project**: `deidentify_table`, the "
            "pipeline's own path (streamed in chunks from a raw DuckDB table, staged in another database, k-anonymity in "
            "SQL, then published; loading the raw table and reading the result back are not timed) with the dataset's contract and `KnownIdentifiers` built from all four departments' raw tables (as the pipeline's "
            "de-identification asset does), including the rescan passes and the k-anonymity suppression. **Baselines** "
            "(no contract, so every column is scanned; hits replaced by `<TYPE>`): Presidio's default recognizers "
            "(`get_baseline_analyzer()`: same pinned `en_core_web_sm`, same NER mapping, full spaCy pipeline) called per "
            f"cell; presidio-structured, which classifies whole columns from a sample of {m.STRUCTURED_SAMPLE:,} rows (its `n`) and then "
            "replaces every cell of a PII column; and `BatchAnalyzerEngine.analyze_dict` (nlp.pipe batches of "
            f"{m.BATCH_SIZE}) + `BatchAnonymizerEngine`. Score threshold {first.privacy.score_threshold} (the contract's) for all. "
            f"The project and Presidio batch (spaCy `n_process`) use {m.processes()} processes; per-cell Presidio and presidio-structured run in one (their design).",
            "",
            f"Residual PII: the generator's ground truth (`_ground_truth/pii_values.csv`, values of `{dataset}` of "
            "5+ characters) that occur verbatim anywhere in the input processed, and how many of them still occur "
            "verbatim anywhere in the output (any column). Speed that leaks does not count.",
            f"Per-cell and batch Presidio on more than {cfg.baseline_rows:,} rows: measured on a seeded sample "
            f"(`DataFrame.sample(n={cfg.baseline_rows}, random_state={cfg.seed})`); time for all rows is extrapolated "
            "from that rate and the leak share is the sample's. Times are medians when a run took under "
            f"{SHORT_RUN_SECONDS:.0f} s (see the runs column).",
            "",
            table,
            "",
            *prep_lines,
            *[f"- {n}" for n in notes],
            "",
            structured_text,
            "",
            profile_text,
            "",
            stamp(cfg.seed),
        ]
    )
    return text, data


STRUCTURED_DATASETS = ("hr_employees", "support_tickets", "finance_expense_claims")


def section_structured(cfg: BenchConfig, log, data: dict) -> str:
    """Structured columns only (free-text columns left out): the project vs presidio-structured, cells/s."""
    rows, data["structured"] = [], {}
    for size in cfg.sizes:
        for dataset in STRUCTURED_DATASETS:
            prep = cfg.prepared_for(dataset, size)
            contract = m.structured_only(prep.contract(dataset))
            frame = prep.frame(dataset)[[c.name for c in contract.columns]].iloc[:size].reset_index(drop=True)
            ctx = bench_context()
            if not m.k_anonymity_reachable(frame, contract, ctx):
                contract = m.relaxed(contract)
            truth = ground_truth_values(prep.landing, dataset)
            cells = frame.shape[0] * frame.shape[1]
            results = {}
            for name in (m.PROJECT, m.STRUCTURED):
                log(f"  section 1 (structured): {dataset} {size:,} rows, {name}")
                run = m.method_run(name, frame, contract, ctx, prep.known)
                seconds, runs, value = repeat_median(run.work, cfg.repeats)
                output = run.finish(value)
                leak = measure_leak(truth, frame_cells(frame), frame_cells(output.frame))
                results[name] = {
                    "seconds": seconds,
                    "runs": runs,
                    "cells_per_s": cells / seconds,
                    "leak": leak.__dict__ | {"share": leak.share},
                    "blocked": output.blocked,
                }
            project_rate = results[m.PROJECT]["cells_per_s"]
            for name, r in results.items():
                leak = Leak(r["leak"]["in_input"], r["leak"]["in_output"], r["leak"]["by_entity"])
                rows.append(
                    [
                        f"{size:,}",
                        dataset,
                        f"{frame.shape[1]} ({cells:,} cells)",
                        name,
                        fmt_s(r["seconds"]) + (" **blocked**" if r["blocked"] else ""),
                        fmt_int(r["cells_per_s"]),
                        "1.0x" if name == m.PROJECT else fmt_ratio(project_rate / r["cells_per_s"]),
                        _leak_text(leak, False),
                        r["runs"],
                    ]
                )
            data["structured"][f"{dataset}@{size}"] = {"cells": cells, "results": results}
    table = md_table(
        [
            "rows",
            "dataset",
            "structured columns",
            "method",
            "time (s)",
            "cells/s",
            "project speed-up",
            "ground-truth PII left in output (of values in input)",
            "runs (median)",
        ],
        rows,
        "rllllrrlr",
    )
    return "\n".join(
        [
            "### Structured columns only",
            "",
            "The same tables without their free-text column: every structured column as its contract says (keep, "
            "suppress, keyed pseudonym, mask, generalize), the classification of kept string columns (Presidio on a "
            "sample of 200 distinct values each), the residual check against known identifiers and k-anonymity; "
            f"presidio-structured classifies columns from {m.STRUCTURED_SAMPLE:,} rows and replaces whole PII columns. "
            "Cells are rows x structured columns of the input. The project's fixed costs (classification) amortize "
            "with size.",
            "",
            table,
        ]
    )


# ------------------------------------------------------------------------------------ section 2

TEXT_COLUMNS = (("support_tickets", "body"), ("finance_expense_claims", "memo"))


def section_free_text(cfg: BenchConfig, log) -> tuple[str, dict]:
    rows, data = [], {}
    from pipelines.privacy.analyzer import get_analyzer

    get_analyzer()
    m.baseline_engines()
    for dataset, column in TEXT_COLUMNS:
        prep = cfg.prepared_base(cfg.text_sizes_base)
        contract = prep.contract(dataset)
        frame = prep.frame(dataset).dropna(subset=[column])
        sample = frame.sample(n=min(cfg.texts, len(frame)), random_state=cfg.seed)
        texts = sample[column].astype(str).tolist()
        terms_from = sample[contract.column(column).deidentify.non_personal_terms_from]
        truth = ground_truth_values(prep.landing, dataset, column)
        distinct = len(set(texts))
        results = {}
        for name in (m.PROJECT_TEXT, m.PROJECT_TEXT_1, m.DETECTOR_ONLY, m.NAIVE, m.BATCH, m.STRUCTURED):
            log(f"  section 2: {dataset}.{column}, {len(texts):,} texts, {name}")
            run = m.text_method(name, contract, column, bench_context(), prep.known, terms_from)
            seconds, runs, out = repeat_median(lambda run=run, texts=texts: run(list(texts)), cfg.repeats)
            leak = (
                measure_leak(truth, texts, [str(t) for t in out if t is not None]) if name != m.DETECTOR_ONLY else None
            )
            results[name] = {
                "seconds": seconds,
                "runs": runs,
                "texts_per_s": len(texts) / seconds,
                "leak": None if leak is None else leak.__dict__ | {"share": leak.share},
            }
        project_rate = results[m.PROJECT_TEXT]["texts_per_s"]
        for name, r in results.items():
            leak = r["leak"]
            rows.append(
                [
                    f"{dataset}.{column}",
                    f"{len(texts):,} ({distinct:,} distinct)",
                    name,
                    fmt_s(r["seconds"]),
                    fmt_rate(r["texts_per_s"]),
                    "1.0x" if name == m.PROJECT_TEXT else fmt_ratio(project_rate / r["texts_per_s"]),
                    "n/a (nothing masked)"
                    if leak is None
                    else _leak_text(Leak(leak["in_input"], leak["in_output"], leak["by_entity"]), False),
                    r["runs"],
                ]
            )
        data[f"{dataset}.{column}"] = {"texts": len(texts), "distinct": distinct, "results": results}
    table = md_table(
        [
            "column",
            "texts",
            "method",
            "time (s)",
            "texts/s",
            "project speed-up",
            "ground-truth PII left (of values in the texts)",
            "runs (median)",
        ],
        rows,
        "lrlrrrlr",
    )
    text = "\n".join(
        [
            "## 2. Free text alone",
            "",
            f"The same texts for every method: a seeded sample (`random_state={cfg.seed}`) of {cfg.texts:,} non-empty values "
            f"per column from the {cfg.text_sizes_base:,}-employee generated data, kept with their repeats (real columns repeat "
            "texts; the project masks each distinct text once). The project runs `scan_text_column` (detect, mask per the "
            'contract, rescan what changed, known identifiers); "detection only" is `scan_texts` alone. presidio-structured '
            "decides per column, so it replaces every text of the column whole (no leak, and no text left either).",
            "",
            table,
            "",
            stamp(cfg.seed),
        ]
    )
    return text, data


# ------------------------------------------------------------------------------------ section 3

PUBLISHED = (0.685, 0.603, 0.618)


def section_accuracy(cfg: BenchConfig, log) -> tuple[str, dict]:
    from bench import eval_pii

    path = SHARED_DATA / "pii-text" / "synth_dataset_v2.json"
    if not path.exists():
        return f"## 3. Detection accuracy\n\nSkipped: {path} not found.\n", {"skipped": True}
    samples = eval_pii.load_samples(path, cfg.eval_limit)
    rows, data = [], {}
    for label, baseline in (
        ("this project (get_analyzer, threshold 0.4)", False),
        ("Presidio default recognizers, same en_core_web_sm (threshold 0.0, as the README's measurement)", True),
    ):
        log(f"  section 3: {label}")
        eval_pii.run_detector(samples[:20], baseline, None, 1)  # warm up (model load) outside the timing
        results, rate, _cpu_rate = eval_pii.run_detector(samples, baseline, None, 1)
        pii, per_entity = eval_pii.evaluate(samples, results)
        data[label] = {
            "precision": pii.precision,
            "recall": pii.recall,
            "f2": pii.f_beta,
            "texts_per_s": rate,
            "per_entity": {
                k: {"precision": v.precision, "recall": v.recall, "f2": v.f_beta} for k, v in per_entity.items()
            },
        }
        rows.append(
            [
                label,
                f"{pii.precision:.3f}",
                f"{pii.recall:.3f}",
                f"{pii.f_beta:.3f}",
                f"{pii.f_beta - PUBLISHED[2]:+.3f}",
                fmt_rate(rate),
            ]
        )
    rows.append(
        [
            "published: Presidio default, en_core_web_lg (presidio-research notebook)",
            *(f"{x:.3f}" for x in PUBLISHED),
            "0",
            "-",
        ]
    )
    table = md_table(["detector", "precision", "recall", "F2", "F2 vs published", "texts/s (1 process)"], rows)
    label = next(iter(data))
    entity_rows = [
        [k, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f2']:.3f}"]
        for k, v in data[label]["per_entity"].items()
        if not math.isnan(v["recall"]) or not math.isnan(v["precision"])
    ]
    text = "\n".join(
        [
            "## 3. Detection accuracy (presidio-research `synth_dataset_v2.json`)",
            "",
            f"`bench.eval_pii` (presidio-evaluator 0.3.2 TokenEvaluator semantics, F-beta with beta=2) on "
            f"{len(samples):,} samples{' (limited for a smoke run)' if cfg.eval_limit else ''}; entity mapping as in `shared/data/README.md`.",
            "",
            table,
            "",
            "Per entity, this project:",
            "",
            md_table(["entity", "precision", "recall", "F2"], entity_rows),
            "",
            stamp(cfg.seed),
        ]
    )
    return text, data


# ------------------------------------------------------------------------------------ section 4

ADULT_COLUMNS = [
    "sex",
    "age",
    "race",
    "marital-status",
    "education",
    "native-country",
    "workclass",
    "occupation",
    "salary-class",
]
ARX_REFERENCE = {
    "classes": 19_502,
    "avg_risk": 0.6465751607983555,
    "uniqueness": 0.5142895033485844,
    "k5": (1, 2, 1, 1, 3, 2, 2, 1, 1),
}


def section_risk(cfg: BenchConfig, log) -> tuple[str, dict]:
    from pipelines.privacy.hierarchies import load_arx_hierarchies
    from pipelines.privacy.risk import find_minimal_generalization, risk_report

    arx = SHARED_DATA / "arx"
    if not (arx / "adult.csv").exists():
        return f"## 4. Risk on UCI Adult\n\nSkipped: {arx / 'adult.csv'} not found.\n", {"skipped": True}
    log("  section 4: UCI Adult")
    load = timed(lambda: pd.read_csv(arx / "adult.csv", sep=";", dtype=str, keep_default_na=False))
    adult = load.value
    hierarchies = load_arx_hierarchies(arx, "adult")
    reps = cfg.risk_repeats

    def median(fn):
        times, value = [], None
        for _ in range(reps):
            t = timed(fn)
            times.append(t.seconds)
            value = t.value
        return statistics.median(times), times, value

    risk_s, risk_times, report = median(lambda: risk_report(adult, ADULT_COLUMNS))
    opt_s, opt_times, best = median(lambda: find_minimal_generalization(adult, ADULT_COLUMNS, hierarchies, 5, 0.0))
    checks = {
        "classes": report.equivalence_classes == ARX_REFERENCE["classes"],
        "avg_risk": abs(report.prosecutor_risk_average - ARX_REFERENCE["avg_risk"]) <= 1e-12,
        "uniqueness": abs(report.sample_uniqueness - ARX_REFERENCE["uniqueness"]) <= 1e-12,
        "k5": best.level_vector == ARX_REFERENCE["k5"],
    }
    yes = {True: "yes", False: "**NO**"}
    rows = [
        [
            "risk_report (9 quasi-identifiers, 30,162 records)",
            f"{risk_s * 1000:,.1f}",
            "equivalence classes",
            f"{report.equivalence_classes:,}",
            f"{ARX_REFERENCE['classes']:,}",
            yes[checks["classes"]],
        ],
        [
            "",
            "",
            "average prosecutor risk",
            repr(report.prosecutor_risk_average),
            repr(ARX_REFERENCE["avg_risk"]),
            yes[checks["avg_risk"]],
        ],
        [
            "",
            "",
            "sample uniqueness",
            repr(report.sample_uniqueness),
            repr(ARX_REFERENCE["uniqueness"]),
            yes[checks["uniqueness"]],
        ],
        [
            f"find_minimal_generalization (k=5, 0% suppression, lattice {best.lattice_size:,} nodes, {best.nodes_evaluated:,} checked)",
            f"{opt_s * 1000:,.1f}",
            "optimal levels",
            ",".join(map(str, best.level_vector)),
            ",".join(map(str, ARX_REFERENCE["k5"])),
            yes[checks["k5"]],
        ],
    ]
    table = md_table(
        ["computation", "median time (ms)", "figure", "this project", "ARX reference", "equal"], rows, "lrllll"
    )
    text = "\n".join(
        [
            "## 4. Re-identification risk on UCI Adult (ARX's `adult.csv`)",
            "",
            f"`pipelines.privacy.risk` on `../shared/data/arx/adult.csv` (read as strings, {fmt_s(load.seconds)} s, not timed below) with "
            f"ARX's hierarchies; medians of {reps} runs in one process (all runs: risk "
            f"{', '.join(f'{t * 1000:.1f}' for t in risk_times)} ms; optimum {', '.join(f'{t * 1000:.1f}' for t in opt_times)} ms). "
            "Equal means exact for counts and levels, within 1e-12 for the risk figures.",
            "",
            table,
            "",
            stamp(cfg.seed),
        ]
    )
    return text, {
        "risk_report_ms": risk_s * 1000,
        "optimum_ms": opt_s * 1000,
        "checks": checks,
        "risk_times": risk_times,
        "opt_times": opt_times,
        "nodes_evaluated": best.nodes_evaluated,
    }
