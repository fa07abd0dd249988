"""Where the project's de-identification time goes: per scan pass (wall) and per component (cProfile)."""

from __future__ import annotations

import cProfile
import pstats
import time
from contextlib import contextmanager

import pandas as pd

from bench.common import fmt_s, md_table
from pipelines.contracts import Contract
from pipelines.privacy import deidentify as deid
from pipelines.privacy import free_text, suppression
from pipelines.privacy.known import KnownIdentifiers
from pipelines.privacy.operators import OperatorContext

WHOLE = "whole de-identification (deidentify_table)"


def _components() -> list[tuple[str, object]]:
    """(label, function): cumulative time of these functions (they nest: shares overlap). The phone recognizer and
    the context enhancer are the classes the analyzer in use runs (the speed-ups replace Presidio's)."""
    from presidio_analyzer import AnalyzerEngine, PatternRecognizer
    from presidio_anonymizer import AnonymizerEngine
    from spacy.language import Language

    from pipelines.privacy import operators
    from pipelines.privacy.analyzer import StreetAddressRecognizer, get_analyzer

    analyzer = get_analyzer()
    phone = next(r for r in analyzer.registry.recognizers if "PHONE_NUMBER" in r.supported_entities)
    return [
        (WHOLE, deid.deidentify_table),
        ("free-text detection (_findings: Presidio + known identifiers)", free_text._findings),
        ("spaCy tokenizer + NER (Language.pipe)", Language.pipe),
        ("Presidio recognizers (AnalyzerEngine.analyze, after NLP)", AnalyzerEngine.analyze),
        (f"  phone numbers ({type(phone).__name__}: phonenumbers matcher)", type(phone).analyze),
        ("  regex pattern recognizers (PatternRecognizer)", PatternRecognizer.analyze),
        ("  street addresses (project recognizer)", StreetAddressRecognizer.analyze),
        ("  context enhancement", type(analyzer)._enhance_using_context),
        ("known identifiers in text (KnownIdentifiers.find_in_text)", KnownIdentifiers.find_in_text),
        ("masking (AnonymizerEngine.anonymize)", AnonymizerEngine.anonymize),
        ("structured operators (apply_column)", operators.apply_column),
        ("k-anonymity enforcement", suppression.publish_k_anonymous),
        ("residual check of structured columns", deid.structured_residual),
    ]


def _key(fn) -> tuple[str, int, str]:
    code = fn.__code__
    return code.co_filename, code.co_firstlineno, code.co_name


@contextmanager
def _timed_passes(passes: list[tuple[int, float]]):
    """Wrap free_text._findings (one call per scan pass) to record texts and wall time per pass."""
    original = free_text._findings

    def wrapper(texts, *args, **kwargs):
        started = time.perf_counter()
        out = original(texts, *args, **kwargs)
        passes.append((len(texts), time.perf_counter() - started))
        return out

    free_text._findings = wrapper
    try:
        yield
    finally:
        free_text._findings = original


def profile_project(frame: pd.DataFrame, contract: Contract, ctx: OperatorContext, known: KnownIdentifiers) -> dict:
    from bench.methods import k_anonymity_reachable, one_process, project_run, relaxed

    if not k_anonymity_reachable(frame, contract, ctx):
        contract = relaxed(contract)
    passes: list[tuple[int, float]] = []
    with one_process(), _timed_passes(passes):  # in workers, the passes would run where this cannot time them
        run = project_run(frame, contract, ctx, known)
        started = time.perf_counter()
        run.work()
        wall = time.perf_counter() - started
    profiler = cProfile.Profile()
    with one_process():  # the profiler sees only its own process: scan in it
        run = project_run(frame, contract, ctx, known)
        profiler.enable()
        run.work()
        profiler.disable()
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    components = {label: (stats[_key(fn)][3] if _key(fn) in stats else 0.0) for label, fn in _components()}
    return {"wall": wall, "passes": passes, "components": components}


def profile_markdown(profile: dict, rows: int, dataset: str) -> str:
    total = profile["components"][WHOLE] or 1.0
    pass_rows = [
        [
            f"pass {i}" + (" (first scan)" if i == 0 else " (rescan of texts that changed)"),
            f"{n:,}",
            fmt_s(s),
            f"{100 * s / profile['wall']:.0f}%",
        ]
        for i, (n, s) in enumerate(profile["passes"])
    ]
    comp_rows = [[label, fmt_s(s), f"{100 * s / total:.0f}%"] for label, s in profile["components"].items()]
    return "\n".join(
        [
            f"### Where the project's time goes ({dataset}, {rows:,} rows)",
            "",
            f"Scan passes over the free-text column (wall time in 1 process, no profiler; whole run {fmt_s(profile['wall'])} s):",
            "",
            md_table(["pass", "distinct texts scanned", "seconds", "share of run"], pass_rows),
            "",
            "Components (cProfile cumulative time, a second run in 1 process so the profiler sees all the work; the profiler inflates Python-heavy parts, nested rows overlap):",
            "",
            md_table(["component", "seconds (profiled)", "share"], comp_rows),
        ]
    )
