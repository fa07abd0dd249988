"""Free-text columns: find PII in each distinct text (Presidio and the known identifiers), mask it per entity type,
rescan what changed; label text keeps its own words; a column's declared non-personal terms."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pandas as pd
import regex
from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig

from pipelines.contracts import Column, Contract, ScanText
from pipelines.privacy.known import RECOGNIZER_NAME, KnownIdentifiers
from pipelines.privacy.operators import KeyedPseudonym, OperatorContext


@lru_cache(maxsize=1)
def get_anonymizer() -> AnonymizerEngine:
    """Presidio's anonymizer with the keyed-pseudonym operator registered."""
    engine = AnonymizerEngine()
    engine.add_anonymizer(KeyedPseudonym)
    return engine


def _text_operator(name: str, entity: str, ctx: OperatorContext) -> OperatorConfig:
    if name == "pseudonymize":
        return OperatorConfig("pseudonymize", {"secret": ctx.pseudonym_key.secret, "domain": entity})
    if name == "replace":
        return OperatorConfig("replace", {"new_value": f"<{entity}>"})
    if name == "mask":
        return OperatorConfig("mask", {"masking_char": "*", "chars_to_mask": 10_000, "from_end": False})
    return OperatorConfig("redact", {})


_TOKEN = re.compile(r"\b[a-z][a-z_]*_[0-9a-f]{16}\b|<[A-Z_]+>")  # our own pseudonyms and type tags
RESCAN_PASSES = 3  # masking changes context, so changed texts are scanned again (few: only those that changed); hits in the last pass block

# Only NER reads context, so only NER can find something new in a text whose PII was replaced by tokens;
# pattern recognizers see the same characters outside the masked spans as before.
NER_ENTITIES = ("PERSON", "NRP", "LOCATION", "DATE_TIME")


def _findings(
    texts: list[str],
    spec: ScanText,
    threshold: float,
    model_name: str | None,
    known: KnownIdentifiers | None,
    *,
    rescan: bool = False,
    terms=None,
    vocabulary: frozenset[str] = frozenset(),
) -> list[list]:
    """Presidio's results plus known identifiers, without spans that are already our own tokens."""
    from pipelines.privacy.analyzer import get_analyzer, scan_texts

    entities = spec.entities
    scanned = list(range(len(texts)))
    if rescan:
        entities = [e for e in (spec.entities or NER_ENTITIES) if e in NER_ENTITIES]
        identifiers = get_analyzer(model_name).nlp_engine.identifiers
        scanned = [i for i, text in enumerate(texts) if _rescan_can_find(text, terms, identifiers)]
    results: list[list] = [[] for _ in texts]
    if entities != [] and scanned:
        found = scan_texts(
            [texts[i] for i in scanned],
            entities=entities,
            score_threshold=threshold,
            model_name=model_name,
            terms=terms,
        )
        for i, result in zip(scanned, found):
            results[i] = result
    out = []
    for text, found in zip(texts, results):
        if spec.label_text:
            found = [r for r in found if _label_keeps(text, r, vocabulary)]
        merged = list(found) + (known.find_in_text(text) if known is not None else [])
        # hex inside a pseudonym can look like a licence number; a masked span is never PII again
        tokens = [(m.start(), m.end()) for m in _TOKEN.finditer(text)]
        out.append([r for r in merged if not any(r.start < end and start < r.end for start, end in tokens)])
    return out


# Recognizers that infer a person or place from words and capitals, not from an identifier's shape. Not the
# PersonCueRecognizer: a one-word name it finds has a title, greeting or "my name is" beside it (evidence that it
# names a person), so label text masks it too ("Battery on Ms Strang"), at the cost of a rare possessive brand.
INFERRING_RECOGNIZERS = frozenset(
    {"FilteredSpacyRecognizer", "SpacyRecognizer", "NameRunRecognizer", "StreetAddressRecognizer"}
)
_NAME_WORD = regex.compile(r"[A-Z][A-Za-z'’\-]+|[A-Z]\.?")  # a capitalised word or an initial


def _label_keeps(text: str, result, vocabulary: frozenset[str]) -> bool:
    """Label text: identifiers are always masked; an inferred entity only if it is a full name or a street address
    that is not made of the column's own words."""
    if result.recognition_metadata.get(result.RECOGNIZER_NAME_KEY) not in INFERRING_RECOGNIZERS:
        return True
    span = text[result.start : result.end]
    if result.entity_type == "STREET_ADDRESS":
        return _street_shaped(span) and not _own_words(span, vocabulary)
    return result.entity_type == "PERSON" and is_full_name(span, vocabulary)


def is_full_name(span: str, vocabulary: frozenset[str] = frozenset()) -> bool:
    """Two or more capitalised words (initials allowed), at least one of them a possible name: neither an everyday
    English word, a word of the column's own vocabulary nor an abbreviation. "Quentin Zabrowski", not "Disorderly
    Conduct", "Cannabis/20 Grams", "Arson II" nor "Compulsory Sch Attnd"."""
    from pipelines.privacy import gazetteer

    words = [w.rstrip(".,;:") for w in span.strip("()[]{}\"'“”‘’ ").split()]
    if len(words) < 2 or not all(_NAME_WORD.fullmatch(w) or _NAME_WORD.fullmatch(w + ".") for w in words):
        return False
    return any(_could_be_a_name(w, vocabulary, gazetteer) for w in words if len(w) > 1)


_VOWEL = regex.compile(r"[aeiouyAEIOUY]")


def _could_be_a_name(word: str, vocabulary: frozenset[str], gazetteer) -> bool:
    """A word that could be a name: not the column's own, not everyday English, not an abbreviation or numeral (all
    capitals up to 3 letters: "II", "DL"; no vowel after the first letter: "Sch", "Attnd")."""
    lower = word.lower()
    if lower in vocabulary or gazetteer.is_common_word(lower):
        return False
    return not ((word.isupper() and len(word) <= 3) or not _VOWEL.search(word, 1))


def _own_words(span: str, vocabulary: frozenset[str]) -> bool:
    """Are all the span's words the column's own (its declared vocabulary)?"""
    words = [w.lower() for w in _LETTERS.findall(span)]
    return bool(words) and all(w in vocabulary for w in words)


@lru_cache(maxsize=1)
def _street_anchors() -> list:
    """The address recognizer's street-shaped anchors (a street type, a unit, a PO box), not its number-run guesses."""
    from pipelines.privacy.analyzer import _ADDRESS_ANCHORS

    return [regex.compile(pattern) for _, pattern, score in _ADDRESS_ANCHORS if score >= 0.6]


def _street_shaped(span: str) -> bool:
    return any(anchor.search(span) for anchor in _street_anchors())


def _rescan_can_find(text: str, terms, identifiers) -> bool:
    """Could a rescan find anything? Only NER and the date patterns can (see NER_ENTITIES): NER needs a candidate
    line, a date pattern a digit outside our own tokens (pseudonyms hold hex digits)."""
    from pipelines.privacy.analyzer import holds_ner_candidate

    if any(c.isdigit() for c in _TOKEN.sub(" ", text)):
        return True
    return holds_ner_candidate(text, terms, identifiers)


@dataclass(frozen=True)
class _MaskJob:
    """What masking a free-text column needs (forked workers inherit it; nothing of it is pickled)."""

    spec: ScanText
    threshold: float
    model_name: str | None
    known: KnownIdentifiers | None
    terms: Any
    ctx: OperatorContext
    vocabulary: frozenset[str] = frozenset()  # lower-case words of the declared terms (label text's own words)
    tolerate: frozenset[str] = frozenset()  # the column's tolerate_entities


MIN_TEXTS_PER_WORKER = 256  # fewer distinct texts than this are masked in the calling process


def _mask_distinct(texts: list[str], job: _MaskJob) -> tuple[list[str], list[Counter], Counter, Counter, Counter]:
    """Detect, mask and rescan each distinct text; in forked workers (all usable cores) when there are many.

    Each text's result depends on that text alone, so chunks of texts go to workers whole (first scan, masking,
    rescans): the parent then only merges. Workers hand back the NER results they computed, for the parent's cache.
    """
    from pipelines.privacy import analyzer

    n_process = analyzer.resolve_processes()
    if n_process == 1 or len(texts) <= MIN_TEXTS_PER_WORKER or analyzer._FORK is None:
        return _mask_chunk(texts, job)
    current: list[str] = []
    per_distinct: list[Counter] = []
    rescan_masked: Counter = Counter()
    residual: Counter = Counter()
    tolerated: Counter = Counter()
    engine = analyzer.get_analyzer(job.model_name).nlp_engine
    for part, entities in analyzer._map_chunks_in_processes(
        _mask_chunk_in_worker, texts, n_process, (job,), MIN_TEXTS_PER_WORKER
    ):
        current.extend(part[0])
        per_distinct.extend(part[1])
        rescan_masked.update(part[2])
        residual.update(part[3])
        tolerated.update(part[4])
        engine.remember_entities(entities)
    return current, per_distinct, rescan_masked, residual, tolerated


def _mask_chunk_in_worker(texts: list[str], args: tuple) -> tuple[tuple, list[tuple]]:
    """`_mask_chunk` in a forked worker, with the NER results it computed (see `_mask_distinct`)."""
    from pipelines.privacy.analyzer import get_analyzer

    (job,) = args
    engine = get_analyzer(job.model_name).nlp_engine
    mark = engine.entity_mark()
    return _mask_chunk(texts, job), engine.entities_since(mark)


def _mask_chunk(texts: list[str], job: _MaskJob) -> tuple[list[str], list[Counter], Counter, Counter, Counter]:
    """Find PII in each text and mask it per entity type, then rescan what changed (at most RESCAN_PASSES times).

    Returns the masked texts, the entities masked in each, those masked on rescans, those still found on the last
    (the residual) and those of the last a steward tolerates (see `_blocking`)."""
    spec, ctx = job.spec, job.ctx
    current = list(texts)
    anonymizer = get_anonymizer()
    default = spec.operators.get("DEFAULT", "replace")
    per_distinct: list[Counter] = [Counter() for _ in current]
    pending = list(range(len(current)))
    rescan_masked: Counter = Counter()
    residual: Counter = Counter()
    tolerated: Counter = Counter()
    for scan_pass in range(1 + RESCAN_PASSES):
        if not pending:
            break
        findings = _findings(
            [current[i] for i in pending],
            spec,
            job.threshold,
            job.model_name,
            job.known,
            rescan=scan_pass > 0,
            terms=job.terms,
            vocabulary=job.vocabulary,
        )
        changed = []
        for i, found in zip(pending, findings):
            if not found:
                continue
            kinds = Counter(r.entity_type for r in found)
            if scan_pass == RESCAN_PASSES:
                blocking, waived = _blocking(found, job.tolerate)
                residual.update(blocking)
                tolerated.update(waived)
                continue
            per_distinct[i].update(kinds)
            if scan_pass > 0:
                rescan_masked.update(kinds)
            operators = {
                r.entity_type: _text_operator(spec.operators.get(r.entity_type, default), r.entity_type, ctx)
                for r in found
            }
            current[i] = anonymizer.anonymize(text=current[i], analyzer_results=found, operators=operators).text
            changed.append(i)
        pending = changed
    return current, per_distinct, rescan_masked, residual, tolerated


def _blocking(found: list, tolerate: frozenset[str]) -> tuple[Counter, Counter]:
    """Residual findings split into those that block and those a steward tolerates: a detector's finding of a
    tolerated entity is waived, a known identifier never is (the same rule as classification's)."""
    blocking, waived = Counter(), Counter()
    for r in found:
        is_known = r.recognition_metadata.get(r.RECOGNIZER_NAME_KEY) == RECOGNIZER_NAME
        (waived if r.entity_type in tolerate and not is_known else blocking)[r.entity_type] += 1
    return blocking, waived


def scan_text_column(
    values: pd.Series,
    column: Column,
    ctx: OperatorContext,
    *,
    score_threshold: float,
    model_name: str | None,
    known: KnownIdentifiers | None = None,
    terms: tuple[Any, dict[str, Any] | None] = (None, None),
) -> tuple[pd.Series, dict[str, Any], dict[str, int], dict[str, Any]]:
    """Find PII in every distinct text and mask it per entity type, then rescan what changed.

    `terms`: the table's declared non-personal terms (`declared_terms`), when the column names any.
    Returns the masked values, the parameters, PII counts per entity (per row) and the residual scan.
    """
    spec: ScanText = column.deidentify  # type: ignore[assignment]
    threshold = spec.score_threshold if spec.score_threshold is not None else score_threshold
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    terms, terms_params, vocabulary = (*terms, frozenset())[:3]
    if (spec.non_personal_terms_from or spec.vocabulary_from_values) and terms_params is None:
        raise ValueError(f"column '{column.name}' names non-personal terms, but they were not passed (declared_terms)")
    job = _MaskJob(spec, threshold, model_name, known, terms, ctx, vocabulary, frozenset(column.tolerate_entities))
    current, per_distinct, rescan_masked, residual, tolerated = _mask_distinct([str(u) for u in uniques], job)
    # counts are per row: a text repeated in 10 rows had its PII masked 10 times
    counts: Counter = Counter()
    occurrences = pd.Series(codes[codes >= 0]).value_counts()
    for code, n in occurrences.items():
        for entity, k in per_distinct[int(code)].items():
            counts[entity] += k * int(n)
    out = pd.Series(pd.array([current[c] if c >= 0 else None for c in codes], dtype="string"), index=values.index)
    params = {
        "entities": spec.entities or "all supported",
        "score_threshold": threshold,
        "operators": dict(sorted(spec.operators.items())),
        "known_identifiers": known is not None,
        "key_id": ctx.pseudonym_key.key_id if "pseudonymize" in spec.operators.values() else None,
    }
    if spec.label_text:
        params["label_text"] = True
    if column.tolerate_entities:
        params["tolerate_entities"] = sorted(column.tolerate_entities)
    if terms_params:
        params["non_personal_terms"] = terms_params
    scan = {"distinct_texts": len(current), "masked_on_rescan": dict(rescan_masked), "residual": dict(residual)}
    if tolerated:
        scan["tolerated"] = dict(tolerated)
    return out, params, dict(sorted(counts.items())), scan


def declared_terms(
    spec: ScanText,
    distinct: Callable[[str], pd.Series],
    frequent: Callable[[], pd.Series] | None = None,
    min_records: int | None = None,
) -> tuple[Any, dict[str, Any] | None, frozenset[str]]:
    """A free-text column's declared non-personal terms as one pattern, its parameters and the terms' lower-case words.

    The terms are the distinct values of the columns it names (read by `distinct(column)` once per table, so every
    chunk sees the same terms) and, for label text with `vocabulary_from_values`, `frequent()`: the column's own
    values held by at least `min_records` records (most frequent first, at most MAX_TERMS)."""
    from pipelines.privacy.analyzer import MAX_TERMS, compile_terms

    own = spec.vocabulary_from_values and frequent is not None
    if not spec.non_personal_terms_from and not own:
        return None, None, frozenset()
    values: list[str] = []
    params: dict[str, Any] = {}
    if spec.non_personal_terms_from:
        named = pd.unique(pd.concat([distinct(c).dropna().astype(str) for c in spec.non_personal_terms_from]))
        # an identifier-like column is no vocabulary: scan as if none were declared
        params = {
            "from": list(spec.non_personal_terms_from),
            "distinct_terms": len(named),
            "max_terms": MAX_TERMS,
            "used": len(named) <= MAX_TERMS,
        }
        values += list(named) if params["used"] else []
    if own:
        held = [str(v) for v in frequent().tolist()[:MAX_TERMS]]
        params["own_values"] = {"min_records": min_records, "terms": len(held), "max_terms": MAX_TERMS}
        params["used"] = params.get("used", False) or bool(held)
        values += held
    if not values:
        return None, params, frozenset()
    return compile_terms(values), params, frozenset(w.lower() for v in values for w in _LETTERS.findall(v))


_LETTERS = regex.compile(r"\p{L}+")


def table_terms(
    contract: Contract, distinct: Callable[[str], pd.Series], frequent: Callable[[str, int, int], pd.Series]
) -> dict[str, tuple]:
    """declared_terms of every free-text column of the table; `frequent(column, k, limit)`: the column's values held
    by at least k records, most frequent first (a label shared by k records singles no one out, as k-anonymity says)."""
    from pipelines.privacy.analyzer import MAX_TERMS

    k = contract.privacy.k_anonymity
    return {
        c.name: declared_terms(c.deidentify, distinct, lambda c=c: frequent(c.name, k, MAX_TERMS), k)
        for c in contract.columns
        if c.deidentify.operator == "scan"
    }
