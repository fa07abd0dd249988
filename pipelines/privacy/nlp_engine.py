"""The spaCy engine Presidio reads: offline model loading, tokenizer + NER only, NER per distinct candidate line.

Configured in Presidio's NLP configuration format (conf/nlp.yaml: the model, the mapping of NER labels to entities)
and built by Presidio's `NlpEngineProvider`, with this engine as its "spacy" engine.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import regex
import spacy
import yaml
from presidio_analyzer.input_validation import ConfigurationValidator
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, NlpEngineProvider, SpacyNlpEngine

from pipelines.privacy import speedups
from pipelines.privacy.ner_candidates import IdentifierShapes, needs_ner, sentence_spans
from pipelines.privacy.parallel import can_fork, invalidate, map_in_processes

NLP_CONF_FILE = Path(__file__).with_name("conf") / "nlp.yaml"
NLP_MODEL_ENV = "PIPELINES_NLP_MODEL"
LANGUAGE = "en"
NER_BATCHES_PER_STEP = 4  # nlp.pipe batches of texts whose NER docs are kept for their artifacts (bounds memory)
ENTITY_CACHE_SIZE = 200_000  # distinct sentences whose NER result is kept in memory (never written anywhere)


class ModelNotInstalledError(RuntimeError):
    """The configured spaCy model is not installed (and we never download one)."""


def read_nlp_configuration(conf_file: Path = NLP_CONF_FILE) -> dict:
    """The NLP configuration file (Presidio's format), checked by Presidio's validator."""
    with open(conf_file, encoding="utf-8") as file:
        return ConfigurationValidator.validate_nlp_configuration(yaml.safe_load(file))


def configured_model(configuration: dict) -> str:
    """The model the configuration names for the project's language."""
    for model in configuration["models"]:
        if model["lang_code"] == LANGUAGE:
            return model["model_name"]
    raise ValueError(f"the NLP configuration names no model for language {LANGUAGE!r}")


DEFAULT_NLP_MODEL = configured_model(read_nlp_configuration())  # conf/nlp.yaml's model (a few lines of YAML)


def resolve_model_name(model_name: str | None = None) -> str:
    """Return the explicit model, else $PIPELINES_NLP_MODEL, else the bundled default."""
    return model_name or os.environ.get(NLP_MODEL_ENV) or DEFAULT_NLP_MODEL


def ensure_model_installed(model_name: str) -> None:
    """Raise ModelNotInstalledError unless the spaCy model is an installed package or a path."""
    if spacy.util.is_package(model_name) or Path(model_name).exists() or _importable(model_name):
        return
    raise ModelNotInstalledError(
        f"spaCy model {model_name!r} is not installed, and models are never downloaded at "
        f"run time. Install it into this environment first, e.g. `pip install {model_name}` "
        f"or `python -m spacy download {model_name}` for an official model, or set "
        f"{NLP_MODEL_ENV} to an installed model (default: {DEFAULT_NLP_MODEL})."
    )


def _importable(module_name: str) -> bool:
    """True if a model package can be imported (installed without pip metadata)."""
    try:
        return importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError):
        return False


# Presidio needs tokens and entities only; lemmas (for context words) fall back to the
# lower-cased token text, so the tagger, parser and lemmatizer are not run (2-3x faster).
UNUSED_COMPONENTS = ("tagger", "morphologizer", "parser", "attribute_ruler", "lemmatizer", "senter", "textcat")


class OfflineSpacyNlpEngine(SpacyNlpEngine):
    """Presidio's spaCy engine that never downloads a model and runs only tokenizer + NER.

    Lean engines (the project's) run NER per distinct candidate sentence (see `needs_ner`); the
    full engine (Presidio's default behaviour, for baselines) runs the whole pipeline on whole texts.
    """

    def __init__(self, *args, lean: bool = True, speedups: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lean = lean
        self.speedups = speedups
        self._entities: dict[str, tuple[tuple[int, int, str], ...]] = {}
        self._generation = 0  # counts clears of the cache (see `entities_since`)
        self.artifact_builder = (
            None  # speedups.LeanArtifactBuilder (set by `use_speedups`), else `doc_artifacts` builds them
        )
        self.identifiers = IdentifierShapes()  # the organisation's ID formats: set with the identifier recognizers

    def load(self) -> None:
        """Load each configured model, failing clearly if it is not installed."""
        self.nlp = {}
        for model in self.models:
            ensure_model_installed(model["model_name"])
            self.nlp[model["lang_code"]] = _load_spacy(model["model_name"], self.lean, self.speedups)

    def use_speedups(self) -> None:
        """Switch the lean engine onto the exact speed-ups of `speedups` (NER's matrix products through numpy's BLAS,
        artifacts built in one pass)."""
        if not self.lean:
            raise ValueError("the speed-ups are for the lean engine")
        self.speedups = True
        for nlp in self.nlp.values():
            speedups.use_numpy_blas(nlp)
        self.artifact_builder = speedups.LeanArtifactBuilder()

    def process_text(self, text: str, language: str) -> NlpArtifacts:
        if not self.lean:
            return super().process_text(text, language)
        return next(self.process_batch([text], language))[1]

    def process_batch(
        self,
        texts,
        language: str,
        batch_size: int = 1,
        n_process: int = 1,
        as_tuples: bool = False,
        terms: regex.Pattern | None = None,
    ):
        """Tokenize whole texts; entities come from per-sentence NER (computed here if not cached). NER spans that lie
        inside a declared non-personal term (a product name) are dropped."""
        if not self.lean or as_tuples:
            yield from super().process_batch(
                texts, language, batch_size=batch_size, n_process=n_process, as_tuples=as_tuples
            )
            return
        texts = [str(t) for t in texts]
        if n_process > 1:
            self.recognize_entities(texts, language, batch_size=max(batch_size, 64), n_process=n_process, terms=terms)
            yield from self._artifacts(texts, language, {}, terms)
            return
        step = max(batch_size, 64) * NER_BATCHES_PER_STEP
        for i in range(0, len(texts), step):  # NER a step at a time, so that its docs can be kept for the step
            part = texts[i : i + step]
            docs: dict[str, object] = {}
            self.recognize_entities(part, language, batch_size=max(batch_size, 64), terms=terms, keep_docs=docs)
            yield from self._artifacts(part, language, docs, terms)

    def _artifacts(self, texts: list[str], language: str, docs: dict, terms: regex.Pattern | None):
        """Each text's artifacts: its tokens, and the NER entities cached for its lines mapped onto it. A one-line text
        whose line NER has just read reuses that doc (same tokenizer, same text: the same tokens) instead of
        tokenizing the text again."""
        nlp = self.nlp[language]
        for text in texts:
            doc = docs.get(text)
            if doc is not None and self._entities.get(text) is not None:
                found = self._entities[text]
                if found and terms is not None:
                    inside = [(m.start(), m.end()) for m in terms.finditer(text)]
                    found = [(a, b, label) for a, b, label in found if not any(s <= a and b <= e for s, e in inside)]
                spans = [doc.char_span(a, b, label=label, alignment_mode="expand") for a, b, label in found]
                doc.ents = spacy.util.filter_spans([span for span in spans if span is not None])
                yield text, self.doc_artifacts(doc, language)
                continue
            doc = nlp.make_doc(text)
            spans = []
            for start, end in sentence_spans(text):
                found = self._entities.get(text[start:end], ())
                if found and terms is not None:
                    inside = [(m.start(), m.end()) for m in terms.finditer(text, start, end)]
                    found = [
                        (a, b, label)
                        for a, b, label in found
                        if not any(s <= start + a and start + b <= e for s, e in inside)
                    ]
                for a, b, label in found:
                    span = doc.char_span(start + a, start + b, label=label, alignment_mode="expand")
                    if span is not None:
                        spans.append(span)
            doc.ents = spacy.util.filter_spans(spans)
            yield text, self.doc_artifacts(doc, language)

    def entity_mark(self) -> tuple[int, int]:
        """Where the NER cache stands now (see `entities_since`)."""
        return self._generation, len(self._entities)

    def entities_since(self, mark: tuple[int, int]) -> list[tuple[str, tuple]]:
        """The NER results cached since `mark` (all of them if the cache was cleared since)."""
        generation, size = mark
        items = self._entities.items()
        return list(itertools.islice(items, size, None) if generation == self._generation else items)

    def remember_entities(self, entries: list[tuple[str, tuple]]) -> None:
        """Cache NER results computed elsewhere (in a forked worker); bounded like `recognize_entities`."""
        if len(self._entities) + len(entries) > ENTITY_CACHE_SIZE:
            self.clear_entity_cache()
        self._entities.update(entries)

    def clear_entity_cache(self) -> None:
        """Forget the per-line NER results (benchmarks start cold; memory is bounded anyway)."""
        self._entities.clear()
        self._generation += 1
        invalidate()  # the pool's workers inherited the old cache: they would not hand back what they recompute

    def recognize_entities(
        self,
        texts: Sequence[str],
        language: str,
        *,
        batch_size: int = 256,
        n_process: int = 1,
        terms: regex.Pattern | None = None,
        keep_docs: dict | None = None,
    ) -> int:
        """Run NER on the distinct candidate sentences of `texts` not seen before; returns how many. `keep_docs`
        (one process only) receives the docs of the sentences that are a whole text, by text."""
        pending: dict[str, None] = {}
        for text in texts:
            for start, end in sentence_spans(text):
                sentence = text[start:end]
                if (
                    sentence not in self._entities
                    and sentence not in pending
                    and needs_ner(sentence, terms, self.identifiers)
                ):
                    pending[sentence] = None
        if not pending:
            return 0
        if len(self._entities) + len(pending) > ENTITY_CACHE_SIZE:
            self.clear_entity_cache()
        sentences = list(pending)
        if n_process > 1 and len(sentences) > batch_size and can_fork():
            found = map_in_processes(_ner_in_worker, sentences, n_process, (self, language, batch_size), batch_size)
        elif keep_docs is not None:
            whole = {text for text in texts if "\n" not in text and not text[:1].isspace() and not text[-1:].isspace()}
            found = []
            for sentence, doc in zip(sentences, _ner_docs(self, sentences, language, batch_size)):
                found.append(tuple((e.start_char, e.end_char, e.label_) for e in doc.ents))
                if sentence in whole:
                    keep_docs[sentence] = doc
        else:
            found = _ner(self, sentences, language, batch_size)
        self._entities.update(zip(sentences, found))
        return len(sentences)

    def doc_artifacts(self, doc, language: str) -> NlpArtifacts:
        """The artifacts of a doc whose entities the lean engine set: Presidio's mapping of NER labels and scores
        (`NerModelConfiguration`); without a lemmatizer the lower-cased text is the lemma."""
        entities, scores = presidio_entities(self.ner_model_configuration, doc)
        if self.artifact_builder is not None:
            return self.artifact_builder(self, doc, language, entities, scores)
        return NlpArtifacts(
            entities=entities,
            tokens=doc,
            tokens_indices=[token.idx for token in doc],
            lemmas=[token.lemma_ or token.lower_ for token in doc],
            nlp_engine=self,
            language=language,
            scores=scores,
        )


class FullPipelineSpacyNlpEngine(OfflineSpacyNlpEngine):
    """The whole spaCy pipeline on whole texts, as Presidio's own spaCy engine runs it (baselines); still offline."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, lean=False, **kwargs)


def presidio_entities(config: NerModelConfiguration, doc) -> tuple[list, list[float]]:
    """The doc's entities as Presidio entities with their scores, as Presidio's spaCy engine maps them."""
    entities, scores = [], []
    mapping, ignore = config.model_to_presidio_entity_mapping, config.labels_to_ignore
    for ent in doc.ents:
        if ent.label_ in ignore:
            continue
        if ent.label_ in mapping:
            ent.label_ = mapping[ent.label_]
        if ent.label_ in ignore:
            continue
        score = config.default_score
        if ent.label_ in config.low_score_entity_names:
            score *= config.low_confidence_score_multiplier
        entities.append(ent)
        scores.append(score)
    return entities, scores


def _ner(engine: OfflineSpacyNlpEngine, sentences: list[str], language: str, batch_size: int) -> list[tuple]:
    """(start, end, label) of each entity spaCy finds in each sentence, on one BLAS thread (parallelism comes from
    the processes: $PIPELINES_NLP_PROCESSES; two BLAS threads in each of two processes on two cores ran 20% slower)."""
    with speedups.blas_threads().limit(limits=1, user_api="blas"):
        return [
            tuple((e.start_char, e.end_char, e.label_) for e in doc.ents)
            for doc in engine.nlp[language].pipe(sentences, batch_size=batch_size)
        ]


def _ner_docs(engine: OfflineSpacyNlpEngine, sentences: list[str], language: str, batch_size: int):
    """The docs NER makes of the sentences (see `_ner`)."""
    with speedups.blas_threads().limit(limits=1, user_api="blas"):
        yield from engine.nlp[language].pipe(sentences, batch_size=batch_size)


def _ner_in_worker(sentences: list[str], args: tuple) -> list[tuple]:
    engine, language, batch_size = args
    return _ner(engine, sentences, language, batch_size)


def _load_spacy(model_name: str, lean: bool, use_speedups: bool = False):
    """Load a spaCy pipeline, dropping components whose output Presidio does not use; with the speed-ups, the lean
    pipeline's matrix products go through numpy (see `speedups.NumpyBlasOps`)."""
    nlp = spacy.load(model_name)
    if not lean:
        return nlp
    needed = _components_needed_by(nlp, "ner")
    for name in list(nlp.pipe_names):
        if name not in needed and (name in UNUSED_COMPONENTS or name in ("tok2vec", "transformer")):
            nlp.remove_pipe(name)
    if use_speedups:
        speedups.use_numpy_blas(nlp)
    return nlp


def _components_needed_by(nlp, component: str) -> set[str]:
    """The component itself plus any shared embedding layer (tok2vec/transformer) it listens to."""
    needed = {component}
    for name in ("tok2vec", "transformer"):
        if name in nlp.pipe_names and component in getattr(nlp.get_pipe(name), "listening_components", []):
            needed.add(name)
    return needed


def build_nlp_engine(
    model_name: str, lean: bool = True, use_speedups: bool = False, configuration: dict | None = None
) -> OfflineSpacyNlpEngine:
    """Create and load the spaCy engine for English from the NLP configuration (default: conf/nlp.yaml) with
    `model_name` as its model, through Presidio's `NlpEngineProvider`; lean (tokenizer + NER per candidate line) or
    the whole pipeline on whole texts (Presidio's behaviour, for baselines)."""
    configuration = dict(configuration or read_nlp_configuration())
    configuration["models"] = [{"lang_code": LANGUAGE, "model_name": model_name}]
    engine_class = OfflineSpacyNlpEngine if lean else FullPipelineSpacyNlpEngine
    engine = NlpEngineProvider(nlp_engines=(engine_class,), nlp_configuration=configuration).create_engine()
    if use_speedups and lean:
        engine.use_speedups()
    return engine
