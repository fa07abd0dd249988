"""PII detector: Presidio's analyzer built from the project's configuration files, and scanning many texts.

The public face of the privacy engine (callers import from here): construction (`get_analyzer`), scanning
(`scan_texts`), the detector's description (`detector_info`). What the analyzer runs is configured in Presidio's own
formats under conf/: analyzer.yaml (languages, score threshold, context words' effect), nlp.yaml (the spaCy model
and its entity mapping), recognizers.yaml (every recognizer, with its patterns and context words). The parts live
beside it: `nlp_engine` (spaCy, offline, NER per candidate line), `ner_candidates` (which lines need NER),
`recognizers/` (one recognizer a module), `parallel` (forked workers), `speedups` (the exact speed-ups that rely on
private internals; switchable off).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import regex
import spacy
import yaml
from presidio_analyzer import (
    AnalyzerEngine,
    AnalyzerEngineProvider,
    PatternRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
from presidio_analyzer.input_validation import ConfigurationValidator
from presidio_analyzer.nlp_engine import SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import EmailRecognizer, SpacyRecognizer
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
    NLP_CONF_FILE,
    NLP_MODEL_ENV,
    ModelNotInstalledError,
    OfflineSpacyNlpEngine,
    build_nlp_engine,
    ensure_model_installed,
    read_nlp_configuration,
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

# The recognizer classes recognizers.yaml names (type: predefined): Presidio finds a class by name among the
# EntityRecognizer subclasses imported, so these imports register them.
from pipelines.privacy.person_cues import PersonCueRecognizer  # noqa: F401 (registered)
from pipelines.privacy.recognizers.address import _ADDRESS_ANCHORS, StreetAddressRecognizer  # noqa: F401 (re-exported)
from pipelines.privacy.recognizers.email import OfflineEmailRecognizer
from pipelines.privacy.recognizers.name_run import NameRunRecognizer, name_runs  # noqa: F401 (re-exported)
from pipelines.privacy.recognizers.ner_filter import FilteredSpacyRecognizer
from pipelines.privacy.recognizers.phone import PrefilteredPhoneRecognizer

CONF_DIR = Path(__file__).with_name("conf")
ANALYZER_CONF_FILE = CONF_DIR / "analyzer.yaml"
DEFAULT_RECOGNIZERS_PATH = CONF_DIR / "recognizers.yaml"
# With the speed-ups, a recognizer class recognizers.yaml names is built as its exact faster subclass.
SPEEDUP_CLASSES = {PrefilteredPhoneRecognizer.__name__: speedups.RememberingPhoneRecognizer.__name__}


@dataclass(frozen=True)
class AnalyzerConfiguration:
    """The analyzer's configuration as Presidio's `AnalyzerEngineProvider` reads it: the analyzer file's settings, the
    NLP configuration file and the recognizer registry file."""

    supported_languages: list[str]
    default_score_threshold: float
    context_aware_enhancer: dict
    nlp: dict
    registry: dict


def read_configuration(
    recognizers_path: Path = DEFAULT_RECOGNIZERS_PATH,
    analyzer_path: Path = ANALYZER_CONF_FILE,
    nlp_path: Path = NLP_CONF_FILE,
) -> AnalyzerConfiguration:
    """Read and check the configuration files with Presidio's provider and validators. The NLP configuration and the
    registry stay in their own files (Presidio would also take them inline in the analyzer file): nlp.yaml's model is
    the default model, read on its own (`DEFAULT_NLP_MODEL`, `resolve_model_name`)."""
    provider = AnalyzerEngineProvider(
        analyzer_engine_conf_file=analyzer_path,
        nlp_engine_conf_file=nlp_path,
        recognizer_registry_conf_file=recognizers_path,
    )
    settings = provider.configuration
    inline = sorted({"nlp_configuration", "recognizer_registry"} & set(settings))
    if inline:
        raise ValueError(f"{analyzer_path}: keep {inline} in {nlp_path.name} and {recognizers_path.name}, not inline")
    languages = settings.get("supported_languages", [LANGUAGE])
    if languages != [LANGUAGE]:
        raise ValueError(f"{analyzer_path}: the detector supports {[LANGUAGE]} only, not {languages}")
    with open(provider.recognizer_registry_conf_file, encoding="utf-8") as file:
        registry = yaml.safe_load(file)
    return AnalyzerConfiguration(
        supported_languages=languages,
        default_score_threshold=settings.get("default_score_threshold", 0),
        context_aware_enhancer=ConfigurationValidator.validate_context_aware_enhancer_configuration(
            settings.get("context_aware_enhancer")
        ),
        nlp=read_nlp_configuration(provider.nlp_engine_conf_file),
        registry={"supported_languages": languages, **registry},
    )


DEFAULT_SCORE_THRESHOLD = read_configuration().default_score_threshold  # analyzer.yaml's (a few lines of YAML)


def _default_registry(nlp_engine: SpacyNlpEngine) -> RecognizerRegistry:
    """Presidio's default recognizers (its conf/default_recognizers.yaml) plus the NER recognizer; e-mail domains are
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
    """Build Presidio's default analyzer on the given model (for comparison only): Presidio's default recognizers and
    score threshold, the project's NLP configuration (model, entity mapping) on the whole spaCy pipeline."""
    engine = build_nlp_engine(model_name, lean=False)
    return AnalyzerEngine(registry=_default_registry(engine), nlp_engine=engine, supported_languages=[LANGUAGE])


def get_baseline_analyzer(model_name: str | None = None) -> AnalyzerEngine:
    """Presidio's default recognizers only, on the configured model (the README baseline)."""
    return _baseline_analyzer(resolve_model_name(model_name))


def build_registry(
    configuration: AnalyzerConfiguration, nlp_engine: SpacyNlpEngine, use_speedups: bool = False
) -> RecognizerRegistry:
    """The recognizers of the registry configuration, built by Presidio's `RecognizerRegistryProvider`.

    The configuration names its NER recognizer itself (`FilteredSpacyRecognizer`, a `SpacyRecognizer`): given the NLP
    engine, Presidio's provider would add the stock `SpacyRecognizer` or refuse another class, so it is not given the
    engine, and the NER recognizers are checked against the engine's entities here instead."""
    registry_configuration = copy.deepcopy(configuration.registry)
    if use_speedups:
        for conf in registry_configuration.get("recognizers", []):
            if isinstance(conf, dict) and (conf.get("class_name") or conf["name"]) in SPEEDUP_CLASSES:
                conf["class_name"] = SPEEDUP_CLASSES[conf.get("class_name") or conf["name"]]
    registry = RecognizerRegistryProvider(registry_configuration=registry_configuration).create_recognizer_registry()
    produced = set(nlp_engine.get_supported_entities())
    for recognizer in registry.recognizers:
        if isinstance(recognizer, SpacyRecognizer) and not set(recognizer.supported_entities) <= produced:
            raise ValueError(
                f"recognizer {recognizer.name} lists entities the NLP configuration never gives: "
                f"{sorted(set(recognizer.supported_entities) - produced)} (its entities: {sorted(produced)})"
            )
    return registry


@lru_cache(maxsize=8)
def _analyzer(model_name: str, recognizers_path: Path, use_speedups: bool = True) -> AnalyzerEngine:
    """Build our analyzer from the configuration files (the registry: `recognizers_path`), with the exact speed-ups
    of `speedups` or on Presidio's stock path."""
    configuration = read_configuration(recognizers_path)
    gazetteer.load()
    engine = build_nlp_engine(model_name, use_speedups=use_speedups, configuration=configuration.nlp)
    registry = build_registry(configuration, engine, use_speedups)
    cues = {  # identifiers declared in the registry (the organisation's own ID formats) and their context words
        entity: frozenset(w.lower() for w in (r.context or []))
        for r in registry.recognizers
        if isinstance(r, PatternRecognizer)
        for entity in r.supported_entities
        if entity.endswith("_ID")
    }
    for recognizer in registry.recognizers:
        if isinstance(recognizer, FilteredSpacyRecognizer):
            recognizer.identifier_cues = cues
    engine.identifiers = _identifier_shapes(registry, cues)
    settings = {
        "registry": registry,
        "nlp_engine": engine,
        "supported_languages": configuration.supported_languages,
        "default_score_threshold": configuration.default_score_threshold,
    }
    if not use_speedups:
        enhancer = LemmaContextAwareEnhancer(**configuration.context_aware_enhancer)
        return AnalyzerEngine(**settings, context_aware_enhancer=enhancer)
    speedups.skip_pattern_recognizers_without_match(registry)
    enhancer = speedups.ShallowCopyContextEnhancer(**configuration.context_aware_enhancer)
    return speedups.FastAnalyzerEngine(**settings, context_aware_enhancer=enhancer)


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
    """Return the cached analyzer for (model, recognizer registry YAML, speed-ups: default
    $PIPELINES_PRESIDIO_SPEEDUPS)."""
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
