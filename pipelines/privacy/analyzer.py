"""PII detector: Presidio's analyzer built from the project's NLP engine and recognizers, and scanning many texts.

The public face of the privacy engine (callers import from here): construction (`get_analyzer`), scanning
(`scan_texts`), the detector's description (`detector_info`). The parts live beside it: `nlp_engine` (spaCy, offline,
NER per candidate line), `ner_candidates` (which lines need NER), `recognizers/` (one recognizer a module),
`parallel` (forked workers), `speedups` (the exact speed-ups that rely on private internals; switchable off).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import regex
import spacy
from presidio_analyzer import AnalyzerEngine, PatternRecognizer, RecognizerRegistry, RecognizerResult
from presidio_analyzer.nlp_engine import SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import EmailRecognizer
from presidio_analyzer.recognizer_registry import RecognizerRegistryProvider

from pipelines.privacy import gazetteer, speedups
from pipelines.privacy.ner_candidates import (  # noqa: F401 (re-exported)
    MAX_TERMS,
    IdentifierShapes,
    compile_terms,
    holds_ner_candidate,
    needs_ner,
    sentence_spans,
)
from pipelines.privacy.nlp_engine import (  # noqa: F401 (re-exported)
    DEFAULT_NLP_MODEL,
    LANGUAGE,
    NLP_MODEL_ENV,
    ModelNotInstalledError,
    OfflineSpacyNlpEngine,
    build_nlp_engine,
    ensure_model_installed,
    resolve_model_name,
)
from pipelines.privacy.parallel import (  # noqa: F401 (re-exported)
    _FORK,
    MAX_DEFAULT_PROCESSES,
    NLP_PROCESSES_ENV,
    Background,
    can_fork,
    resolve_processes,
    shared_counter,
)
from pipelines.privacy.parallel import map_chunks_in_processes as _map_chunks_in_processes
from pipelines.privacy.parallel import map_in_processes as _map_in_processes  # noqa: F401 (re-exported)
from pipelines.privacy.person_cues import PersonCueRecognizer
from pipelines.privacy.recognizers.address import _ADDRESS_ANCHORS, StreetAddressRecognizer  # noqa: F401 (re-exported)
from pipelines.privacy.recognizers.email import OfflineEmailRecognizer
from pipelines.privacy.recognizers.name_run import NameRunRecognizer, name_runs  # noqa: F401 (re-exported)
from pipelines.privacy.recognizers.ner_filter import FilteredSpacyRecognizer
from pipelines.privacy.recognizers.phone import PrefilteredPhoneRecognizer

DEFAULT_SCORE_THRESHOLD = 0.4
DEFAULT_RECOGNIZERS_PATH = Path(__file__).with_name("recognizers.yaml")


def _default_registry(nlp_engine: SpacyNlpEngine) -> RecognizerRegistry:
    """Presidio's default recognizers (conf/default_recognizers.yaml) plus the NER recognizer; e-mail domains are
    checked offline (`OfflineEmailRecognizer`, in the default's place)."""
    provider = RecognizerRegistryProvider(registry_configuration={"supported_languages": [LANGUAGE]})
    registry = provider.create_recognizer_registry()
    registry.add_nlp_recognizer(nlp_engine=nlp_engine)
    for i, recognizer in enumerate(registry.recognizers):
        if type(recognizer) is EmailRecognizer:
            registry.recognizers[i] = OfflineEmailRecognizer(
                supported_language=recognizer.supported_language, name=recognizer.name, context=recognizer.context
            )
    return registry


@lru_cache(maxsize=4)
def _baseline_analyzer(model_name: str) -> AnalyzerEngine:
    """Build Presidio's default analyzer on the given model (for comparison only)."""
    engine = build_nlp_engine(model_name, lean=False)
    return AnalyzerEngine(registry=_default_registry(engine), nlp_engine=engine, supported_languages=[LANGUAGE])


def get_baseline_analyzer(model_name: str | None = None) -> AnalyzerEngine:
    """Presidio's default recognizers only, on the configured model (the README baseline)."""
    return _baseline_analyzer(resolve_model_name(model_name))


@lru_cache(maxsize=8)
def _analyzer(model_name: str, recognizers_path: Path, use_speedups: bool = True) -> AnalyzerEngine:
    """Build our analyzer: default recognizers, YAML organisation recognizers, code recognizers; with the exact
    speed-ups of `speedups` or on Presidio's stock path."""
    gazetteer.load()
    engine = build_nlp_engine(model_name, use_speedups=use_speedups)
    registry = _default_registry(engine)
    registry.remove_recognizer("PhoneRecognizer")
    phone = speedups.RememberingPhoneRecognizer if use_speedups else PrefilteredPhoneRecognizer
    registry.add_recognizer(phone(name="PhoneRecognizer"))
    registry.remove_recognizer("SpacyRecognizer")
    registry.add_recognizer(
        FilteredSpacyRecognizer(supported_language=LANGUAGE, supported_entities=engine.get_supported_entities())
    )
    registry.add_recognizers_from_yaml(recognizers_path)
    registry.add_recognizer(StreetAddressRecognizer())
    registry.add_recognizer(NameRunRecognizer())
    registry.add_recognizer(PersonCueRecognizer())
    ner = next(r for r in registry.recognizers if isinstance(r, FilteredSpacyRecognizer))
    ner.identifier_cues = {  # identifiers declared in the YAML (the organisation's own ID formats)
        entity: frozenset(w.lower() for w in (r.context or []))
        for r in registry.recognizers
        if isinstance(r, PatternRecognizer)
        for entity in r.supported_entities
        if entity.endswith("_ID")
    }
    engine.identifiers = _identifier_shapes(registry, ner.identifier_cues)
    if not use_speedups:
        return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=[LANGUAGE])
    speedups.skip_pattern_recognizers_without_match(registry)
    return speedups.FastAnalyzerEngine(
        registry=registry,
        nlp_engine=engine,
        supported_languages=[LANGUAGE],
        context_aware_enhancer=speedups.ShallowCopyContextEnhancer(),
    )


def _identifier_shapes(registry: RecognizerRegistry, cues: dict[str, frozenset[str]]) -> IdentifierShapes:
    """The *_ID pattern recognizers' formats (with Presidio's pattern flags) and their cue words before placeholders."""
    formats = tuple(
        regex.compile(p.regex, r.global_regex_flags)
        for r in registry.recognizers
        if isinstance(r, PatternRecognizer) and any(e in cues for e in r.supported_entities)
        for p in r.patterns
    )
    cued = [
        rf"(?i:\b(?:{'|'.join(map(regex.escape, sorted(words)))})\b)[ \t:#]*<{entity}>"
        for entity, words in sorted(cues.items())
        if words
    ]
    return IdentifierShapes(formats=formats, cued_placeholders=regex.compile("|".join(cued)) if cued else None)


def get_analyzer(
    model_name: str | None = None, recognizers_path: Path | None = None, use_speedups: bool | None = None
) -> AnalyzerEngine:
    """Return the cached analyzer for (model, recognizers YAML, speed-ups: default $PIPELINES_PRESIDIO_SPEEDUPS)."""
    path = Path(recognizers_path or DEFAULT_RECOGNIZERS_PATH).resolve()
    return _analyzer(resolve_model_name(model_name), path, speedups.enabled() if use_speedups is None else use_speedups)


def scan_texts_with(
    analyzer: AnalyzerEngine,
    texts: Sequence[str | None],
    *,
    entities: list[str] | None = None,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    batch_size: int = 256,
    n_process: int | None = None,
    terms: regex.Pattern | None = None,
) -> list[list[RecognizerResult]]:
    """Scan texts with a given analyzer (see scan_texts)."""
    positions = _unique_positions(texts)
    unique = list(positions)
    options = {"entities": entities, "score_threshold": score_threshold, "batch_size": batch_size, "terms": terms}
    n_process = resolve_processes(n_process)
    engine = analyzer.nlp_engine
    lean = isinstance(engine, OfflineSpacyNlpEngine) and engine.lean
    if not lean and terms is not None:
        raise ValueError("declared non-personal terms need the project's lean NLP engine")
    if n_process > 1 and len(unique) > batch_size and can_fork():
        # One pass in forked workers: each runs NER on its chunk's uncached candidate lines, then the recognizers,
        # and hands back its new NER results, which the parent caches for the rescans.
        found = []
        for results, new_entities in _map_chunks_in_processes(
            _scan_chunk_in_worker, unique, n_process, (analyzer, options), batch_size
        ):
            found.extend(results)
            if lean:
                engine.remember_entities(new_entities)
    else:
        found = _scan_chunk_with(analyzer, unique, options)
    out: list[list[RecognizerResult]] = [[] for _ in texts]
    for text, results in zip(unique, found):
        for i in positions[text]:
            out[i] = list(results)
    return out


def _unique_positions(texts: Sequence[str | None]) -> dict[str, list[int]]:
    """Map each distinct non-blank text to the input positions holding it."""
    positions: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        if isinstance(text, str) and text.strip():
            positions.setdefault(text, []).append(i)
    return positions


def _scan_chunk_with(analyzer: AnalyzerEngine, texts: list[str], options: dict) -> list[list[RecognizerResult]]:
    """Run spaCy over the texts in batches (nlp.pipe), then Presidio's recognizers per text. The project's (lean)
    engine reads lines written all in lower case truecased (`gazetteer.case_view`: same offsets), so that NER and the
    recognizers that look for capitalised words see them as they would be written."""
    extra = {"terms": options["terms"]} if options.get("terms") is not None else {}
    engine = analyzer.nlp_engine
    if isinstance(engine, OfflineSpacyNlpEngine) and engine.lean:
        texts = [gazetteer.case_view(text) for text in texts]
    artifacts = engine.process_batch(texts, LANGUAGE, batch_size=options["batch_size"], n_process=1, **extra)
    return [
        analyzer.analyze(
            text,
            LANGUAGE,
            entities=options["entities"],
            score_threshold=options["score_threshold"],
            nlp_artifacts=nlp_artifacts,
        )
        for text, nlp_artifacts in artifacts
    ]


def _scan_chunk_in_worker(texts: list[str], args: tuple) -> tuple[list[list[RecognizerResult]], list[tuple]]:
    """The chunk's results and the NER results the worker computed for it (for the parent's cache)."""
    analyzer, options = args
    engine = analyzer.nlp_engine
    lean = isinstance(engine, OfflineSpacyNlpEngine) and engine.lean
    mark = engine.entity_mark() if lean else None
    results = _scan_chunk_with(analyzer, texts, options)
    return results, (engine.entities_since(mark) if lean else [])


def scan_texts(
    texts: Sequence[str | None],
    *,
    entities: list[str] | None = None,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    model_name: str | None = None,
    batch_size: int = 256,
    n_process: int | None = None,
    terms: regex.Pattern | None = None,
) -> list[list[RecognizerResult]]:
    """Detect PII in many texts; one result list per input, empty for None/blank.

    Distinct texts are scanned once. With more than one process (default: the usable cores, or
    $PIPELINES_NLP_PROCESSES), batches are scanned in forked workers that share the loaded model.
    `terms` (see `compile_terms`): declared non-personal phrases, no NER candidates and never a NER entity.
    """
    return scan_texts_with(
        get_analyzer(model_name),
        texts,
        entities=entities,
        score_threshold=score_threshold,
        batch_size=batch_size,
        n_process=n_process,
        terms=terms,
    )


def clear_memos(analyzer: AnalyzerEngine) -> None:
    """Forget what scanning remembers between texts (NER per line, phone verdicts, context keywords): benchmarks
    start cold, as a column of new text does."""
    engine = analyzer.nlp_engine
    if isinstance(engine, OfflineSpacyNlpEngine):
        engine.clear_entity_cache()
    speedups.clear_memos(analyzer)
    gazetteer.is_common_word.cache_clear()


def detector_info(model_name: str | None = None) -> dict:
    """Describe the detector as plain JSON (model, versions, threshold, recognizers)."""
    from importlib.metadata import version

    analyzer = get_analyzer(model_name)
    nlp = analyzer.nlp_engine.get_nlp(LANGUAGE)
    recognizers = analyzer.registry.get_recognizers(LANGUAGE, all_fields=True)
    return {
        "nlp_model": {
            "name": resolve_model_name(model_name),
            "version": nlp.meta.get("version"),
            "pipeline": list(nlp.pipe_names),
            "matrix_products": speedups.matrix_products(nlp),
        },
        "spacy_version": spacy.__version__,
        "presidio_analyzer_version": version("presidio-analyzer"),
        "score_threshold_default": DEFAULT_SCORE_THRESHOLD,
        "processes": resolve_processes(),
        "recognizers": sorted({r.name for r in recognizers}),
        "supported_entities": sorted(analyzer.get_supported_entities(LANGUAGE)),
    }


def analyze_value(
    value: str | None,
    *,
    entities: list[str] | None = None,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    model_name: str | None = None,
) -> list[RecognizerResult]:
    """Detect PII in one string with the same detector as scan_texts."""
    if not isinstance(value, str) or not value.strip():
        return []
    return get_analyzer(model_name).analyze(
        gazetteer.case_view(value), LANGUAGE, entities=entities, score_threshold=score_threshold
    )
