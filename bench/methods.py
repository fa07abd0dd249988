"""The de-identification methods compared: this project and three ways of using Presidio directly.

Every baseline uses ``pipelines.privacy.analyzer.get_baseline_analyzer()``: Presidio's default
recognizers on the same pinned spaCy model and NER configuration as the project (the default
``AnalyzerEngine()`` would try to download ``en_core_web_lg``). Baselines run the full spaCy
pipeline (Presidio's default); the project runs tokenizer + NER only (its "lean" engine).
Baselines have no contract, so they scan every column; anything they find is replaced by
``<ENTITY_TYPE>`` (Presidio's default operator).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd

from pipelines.contracts import Contract, Role
from pipelines.privacy.deidentify import PrivacyThresholdError, ResidualPIIError, deidentify_table
from pipelines.privacy.free_text import scan_text_column
from pipelines.privacy.known import KnownIdentifiers
from pipelines.privacy.operators import OperatorContext, apply_column
from pipelines.privacy.suppression import enforce_k_anonymity

LANGUAGE = "en"
BATCH_SIZE = 256  # spaCy nlp.pipe batch, as the project's scan_texts
STRUCTURED_SAMPLE = 1000  # rows presidio-structured's PandasAnalysisBuilder analyses to classify columns (its `n`)

PROJECT = "this project (deidentify_table + contract)"
NAIVE = "Presidio per cell (AnalyzerEngine.analyze + AnonymizerEngine.anonymize)"
STRUCTURED = "presidio-structured (PandasAnalysisBuilder + StructuredEngine)"
BATCH = "Presidio batch (BatchAnalyzerEngine + BatchAnonymizerEngine)"
BASELINES = (NAIVE, STRUCTURED, BATCH)


def processes() -> int:
    """Worker processes the project scans with (all usable cores by default); Presidio batch gets as many."""
    from pipelines.privacy.analyzer import resolve_processes

    return resolve_processes()


@contextmanager
def one_process():
    """Run the project's scanning in a single process (PIPELINES_NLP_PROCESSES=1)."""
    from pipelines.privacy.analyzer import NLP_PROCESSES_ENV

    before = os.environ.get(NLP_PROCESSES_ENV)
    os.environ[NLP_PROCESSES_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(NLP_PROCESSES_ENV, None)
        else:
            os.environ[NLP_PROCESSES_ENV] = before


@dataclass
class Output:
    frame: pd.DataFrame
    note: str = ""
    blocked: str | None = None  # the project refused to publish (residual-PII gate): why, without values


def baseline_engines():
    """The shared analyzer (loaded once, outside any timing) and a plain anonymizer."""
    from presidio_anonymizer import AnonymizerEngine

    from pipelines.privacy.analyzer import get_baseline_analyzer

    analyzer = get_baseline_analyzer()
    analyzer.analyze("warm up John Smith 415-555-0100", LANGUAGE)
    return analyzer, AnonymizerEngine()


def as_text_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell as str (None stays None): what a contract-less tool gets from a CSV."""
    out = {}
    for column in frame.columns:
        values = frame[column].astype(object).where(frame[column].notna(), None)
        out[column] = [None if v is None else str(v) for v in values.tolist()]
    return pd.DataFrame(out, index=frame.index, dtype=object)


# ------------------------------------------------------------------------------------ tables


def k_anonymity_reachable(frame: pd.DataFrame, contract: Contract, ctx: OperatorContext) -> bool:
    """Cheap exact pre-check (quasi-identifiers only): would the contract's k-anonymity gate pass?"""
    quasi = [c for c in contract.published_columns if c.role == Role.quasi_identifier]
    generalized = {c.name: apply_column(frame[c.name], c, ctx)[0] for c in quasi}
    try:
        enforce_k_anonymity(pd.DataFrame(generalized, index=frame.index), contract)
    except PrivacyThresholdError:
        return False
    return True


def relaxed(contract: Contract) -> Contract:
    """The contract with suppression unlimited: tiny inputs cannot reach k-anonymity (by design)."""
    return contract.model_copy(update={"privacy": contract.privacy.model_copy(update={"max_suppression": 1.0})})


RELAXED_NOTE = "k-anonymity unreachable at this size (by design): timed with max_suppression relaxed to 100%"


def cold_start() -> None:
    """Every timed project run starts without the NER results of earlier runs (no cache carried over)."""
    from pipelines.privacy.analyzer import get_analyzer

    get_analyzer().nlp_engine.clear_entity_cache()


@dataclass
class Run:
    """One method on one input: `work` is what is timed; `finish` turns its value into an Output afterwards."""

    work: Callable[[], Any]
    finish: Callable[[Any], Output] = lambda value: value


def project_run(frame: pd.DataFrame, contract: Contract, ctx: OperatorContext, known: KnownIdentifiers) -> Run:
    """The production path: `deidentify_table` from a raw DuckDB table into another database, as the pipeline's
    de-identification asset runs it. Loading the frame as the raw table and reading the published table back (for the
    leak count) are not timed; a run the residual-PII gate blocks publishes nothing."""
    source, target = duckdb.connect(), duckdb.connect()
    source.register("frame", frame)
    source.execute("CREATE TABLE raw AS SELECT * FROM frame")
    source.unregister("frame")

    def work() -> str | None:
        cold_start()
        try:
            deidentify_table(source, "raw", target, "deidentified", contract, ctx, known=known)
        except ResidualPIIError as error:
            # The gate runs after every column is masked: the time is the full work; nothing is published.
            return str(error)
        return None

    def finish(blocked: str | None) -> Output:
        if blocked:
            return Output(frame.iloc[0:0], blocked=blocked)
        return Output(target.execute("SELECT * FROM deidentified").df())

    return Run(work, finish)


def run_naive(frame: pd.DataFrame, threshold: float) -> Output:
    analyzer, anonymizer = baseline_engines()
    text = as_text_frame(frame)
    out = {}
    for column in text.columns:
        cells = []
        for value in text[column].tolist():
            if value is None or not value.strip():
                cells.append(value)
                continue
            results = analyzer.analyze(value, LANGUAGE, score_threshold=threshold)
            cells.append(anonymizer.anonymize(value, results).text if results else value)
        out[column] = cells
    return Output(pd.DataFrame(out, index=frame.index, dtype=object))


def run_batch(frame: pd.DataFrame, threshold: float) -> Output:
    from presidio_analyzer import BatchAnalyzerEngine
    from presidio_anonymizer import BatchAnonymizerEngine

    analyzer, anonymizer = baseline_engines()
    text = as_text_frame(frame)
    columns = {c: ["" if v is None else v for v in text[c].tolist()] for c in text.columns}
    results = BatchAnalyzerEngine(analyzer).analyze_dict(
        columns, language=LANGUAGE, batch_size=BATCH_SIZE, n_process=processes(), score_threshold=threshold
    )
    out = BatchAnonymizerEngine(anonymizer).anonymize_dict(results)
    return Output(pd.DataFrame({c: out[c] for c in text.columns}, index=frame.index, dtype=object))


def run_structured(frame: pd.DataFrame, threshold: float) -> Output:
    from presidio_structured import PandasAnalysisBuilder, StructuredEngine

    analyzer, _ = baseline_engines()
    text = as_text_frame(frame).fillna("")
    builder = PandasAnalysisBuilder(analyzer=analyzer, analyzer_score_threshold=threshold, batch_size=BATCH_SIZE)
    analysis = builder.generate_analysis(text, n=min(len(text), STRUCTURED_SAMPLE))
    out = StructuredEngine().anonymize(text.copy(), analysis)
    mapping = ", ".join(f"{k}->{v}" for k, v in sorted(analysis.entity_mapping.items())) or "none"
    return Output(out, f"columns classified (whole cells replaced): {mapping}")


def structured_only(contract: Contract) -> Contract:
    """The contract without its free-text (scan) columns."""
    return contract.model_copy(update={"columns": [c for c in contract.columns if c.deidentify.operator != "scan"]})


def method_run(
    name: str, frame: pd.DataFrame, contract: Contract, ctx: OperatorContext, known: KnownIdentifiers
) -> Run:
    """The method on `frame` (for the project, pass a contract that can pass on this frame)."""
    if name == PROJECT:
        return project_run(frame, contract, ctx, known)
    threshold = contract.privacy.score_threshold
    baseline = {NAIVE: run_naive, STRUCTURED: run_structured, BATCH: run_batch}[name]
    return Run(lambda: baseline(frame.copy(), threshold))


# ------------------------------------------------------------------------------------ free text alone


def text_method(
    name: str,
    contract: Contract,
    column: str,
    ctx: OperatorContext,
    known: KnownIdentifiers | None,
    terms_from: pd.DataFrame | None = None,
) -> Callable[[list[str]], list[Any]]:
    """`terms_from`: the rows' columns the contract names as non-personal terms (the pipeline reads them per table)."""
    from pipelines.privacy.free_text import declared_terms

    threshold = contract.privacy.score_threshold
    spec = contract.column(column)
    terms = declared_terms(spec.deidentify, lambda name: terms_from[name])

    def project(texts: list[str]) -> list[Any]:
        cold_start()
        out, *_ = scan_text_column(
            pd.Series(texts, dtype=object),
            spec,
            ctx,
            score_threshold=threshold,
            model_name=None,
            known=known,
            terms=terms,
        )
        return out.tolist()

    def project_one_process(texts: list[str]) -> list[Any]:
        with one_process():
            return project(texts)

    def project_detector_only(texts: list[str]) -> list[Any]:
        from pipelines.privacy.analyzer import scan_texts

        cold_start()
        scan_texts(texts, score_threshold=threshold, terms=terms[0])
        return list(texts)  # detection only: nothing is masked

    def one_column(run: Callable[[pd.DataFrame, float], Output]) -> Callable[[list[str]], list[Any]]:
        return lambda texts: run(pd.DataFrame({column: texts}), threshold).frame[column].tolist()

    return {
        PROJECT_TEXT: project,
        PROJECT_TEXT_1: project_one_process,
        DETECTOR_ONLY: project_detector_only,
        NAIVE: one_column(run_naive),
        STRUCTURED: one_column(run_structured),
        BATCH: one_column(run_batch),
    }[name]


PROJECT_TEXT = "this project (scan_text_column: detect, mask per contract, rescan, known identifiers)"
PROJECT_TEXT_1 = "this project, the same in 1 process (PIPELINES_NLP_PROCESSES=1)"
DETECTOR_ONLY = "this project, detection only (scan_texts, no masking, no known identifiers)"
