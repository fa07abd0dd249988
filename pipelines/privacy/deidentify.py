"""Apply a contract's de-identification to a raw table, recording every parameter (never a value)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pandas as pd
import regex
from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig

from pipelines.contracts import Column, Contract, Role, ScanText
from pipelines.privacy.classify import SharedClassification, columns_to_classify, names_a_person
from pipelines.privacy.known import NAME_TOKEN, RECOGNIZER_NAME, KnownIdentifiers
from pipelines.privacy.operators import KeyedPseudonym, OperatorContext, apply_column


@dataclass
class ColumnRecord:
    """How one column was de-identified: role, operator, parameters, detections; no values."""

    column: str
    role: str
    entity: str | None
    operator: str
    params: dict[str, Any] = field(default_factory=dict)
    values_in: int = 0
    entities_detected: dict[str, int] = field(default_factory=dict)
    published: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "role": self.role,
            "entity": self.entity,
            "operator": self.operator,
            "params": self.params,
            "values_in": self.values_in,
            "entities_detected": self.entities_detected,
            "published": self.published,
        }


@dataclass
class DeidentifiedTable:
    frame: pd.DataFrame | None  # None when streamed into a DuckDB table (deidentify_table)
    columns: list[ColumnRecord]
    rows_in: int
    rows_out: int
    rows_suppressed: int = 0
    detector: dict[str, Any] | None = None  # model, versions, recognizers: set when free text was scanned
    k_anonymity: dict[str, Any] = field(default_factory=dict)
    residual_scan: dict[str, Any] = field(default_factory=dict)
    classification: list[dict[str, Any]] = field(default_factory=list)

    @property
    def entities_masked(self) -> int:
        return sum(sum(c.entities_detected.values()) for c in self.columns) + sum(
            c.values_in for c in self.columns if c.operator not in {"keep", "generalize", "scan"}
        )


class PrivacyThresholdError(ValueError):
    """De-identified output would break a privacy threshold that suppression cannot fix within its limit."""


MISSING = "<missing>"  # nulls are a value of their own in equivalence classes


def k_threshold_error(contract: Contract, small: int, rows: int, quasi: list[str]) -> PrivacyThresholdError:
    """The refusal when suppressing the records of classes smaller than k would exceed the contract's limit (counts
    and column names only), the same from every engine."""
    k, limit = contract.privacy.k_anonymity, contract.privacy.max_suppression
    return PrivacyThresholdError(
        f"{contract.dataset}: {small} of {rows} records ({small / rows:.1%}) are in equivalence classes "
        f"smaller than k={k} over {quasi}; suppressing them exceeds the contract's limit of {limit:.1%}"
        + (" even with quasi-identifiers blanked out" if contract.privacy.adaptive_suppression else "")
        + ". Generalize a quasi-identifier further (coarser bands, shorter postcode) or suppress a column."
    )


def _search_suppression(frame: pd.DataFrame, quasi: list[str], k: int, limit: float) -> dict[str, int] | None:
    """Lowest-loss choice of quasi-identifiers to blank out ('*') so that k holds within the limit (ARX's
    lattice search with its entropy loss, over two levels per column: as generalized, or suppressed)."""
    from pipelines.privacy.hierarchies import hierarchy_from_mapping
    from pipelines.privacy.risk import NoGeneralizationError, find_minimal_generalization

    data = frame[quasi].astype("string").fillna(MISSING)
    hierarchies = {q: hierarchy_from_mapping(q, [{v: "*" for v in pd.unique(data[q])}]) for q in quasi}
    try:
        return dict(find_minimal_generalization(data, quasi, hierarchies, k, limit).levels)
    except NoGeneralizationError:
        return None


def enforce_k_anonymity(frame: pd.DataFrame, contract: Contract) -> tuple[pd.DataFrame, int, dict[str, Any]]:
    """Suppress records in equivalence classes smaller than k, within the contract's suppression limit.

    If the contract's generalization alone would need more suppression than allowed, whole
    quasi-identifiers are blanked out, choosing the set that loses least information (adaptive).
    """
    quasi = [c.name for c in contract.published_columns if c.role == Role.quasi_identifier]
    k, limit = contract.privacy.k_anonymity, contract.privacy.max_suppression
    params: dict[str, Any] = {"quasi_identifiers": quasi, "k": k, "max_suppression": limit, "blanked": []}
    if not quasi or k <= 1 or frame.empty:
        return frame, 0, params
    sizes = frame.groupby(quasi, dropna=False, sort=False, observed=True)[quasi[0]].transform("size")
    if float((sizes < k).mean()) > limit:
        levels = _search_suppression(frame, quasi, k, limit) if contract.privacy.adaptive_suppression else None
        if levels is None:
            raise k_threshold_error(contract, int((sizes < k).sum()), len(frame), quasi)
        blanked = [q for q, level in levels.items() if level > 0]
        frame = frame.copy()
        for q in blanked:
            frame[q] = pd.Series("*", index=frame.index, dtype="string")
        params["blanked"] = blanked
        sizes = frame.groupby(quasi, dropna=False, sort=False, observed=True)[quasi[0]].transform("size")
    small = sizes < k
    params["suppressed_share"] = round(float(small.mean()), 6)
    return frame.loc[~small], int(small.sum()), params


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


class ResidualPIIError(ValueError):
    """Personal data is still present after masking; names column and entity type, never the value."""


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


def residual_in_structured(values: pd.Series, known: KnownIdentifiers, column: Column | None = None) -> dict[str, int]:
    """Published cells that still equal a raw identifier of the batch, by entity type (distinct values)."""
    return structured_residual(values, known, column)["residual"]


def structured_residual(values: pd.Series, known: KnownIdentifiers, column: Column | None = None) -> dict[str, Any]:
    """The residual scan of published cells: those equal to a unique known identifier (full name, email, phone, id)
    always; those equal to a known one-word name only in a column that names people (`names_a_person`), where a
    steward's tolerance of PERSON waives them; elsewhere such cells ("Sales", "Black") are only counted."""
    hits = known.count_matches(values, name_tokens=True)
    tokens = hits.pop(NAME_TOKEN, 0)
    scan: dict[str, Any] = {"residual": dict(hits)}
    if tokens and column is not None and names_a_person(column):
        if "PERSON" in column.tolerate_entities:
            scan["tolerated"] = {"PERSON": tokens}
        else:
            scan["residual"]["PERSON"] = scan["residual"].get("PERSON", 0) + tokens
    elif tokens:
        scan["name_tokens_without_evidence"] = tokens
    return scan


@dataclass
class _Chunk:
    frame: pd.DataFrame  # published columns, before k-anonymity
    records: list[ColumnRecord]
    residual: dict[str, dict[str, Any]]


def _table_terms(
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


def _frequent_in_frame(frame: pd.DataFrame) -> Callable[[str, int, int], pd.Series]:
    """`frequent` over an in-memory frame (ties by value, as in SQL)."""

    def frequent(name: str, k: int, limit: int) -> pd.Series:
        counts = frame[name].dropna().astype(str).value_counts()
        counts = counts[counts >= k]
        order = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]
        return pd.Series([v for v, _ in order], dtype=object)

    return frequent


def _deidentify_columns(
    frame: pd.DataFrame,
    contract: Contract,
    ctx: OperatorContext,
    *,
    model_name: str | None,
    known: KnownIdentifiers | None,
    terms: dict[str, tuple],
) -> _Chunk:
    """Every declared column through its operator (no classification, no gate, no k-anonymity)."""
    out: dict[str, pd.Series] = {}
    records: list[ColumnRecord] = []
    residual: dict[str, dict[str, Any]] = {}
    for column in contract.columns:
        values = frame[column.name]
        record = ColumnRecord(
            column=column.name,
            role=column.role.value,
            entity=column.entity,
            operator=column.deidentify.operator,
            values_in=int(values.notna().sum()),
        )
        if column.deidentify.operator == "scan":
            new, record.params, record.entities_detected, scan = scan_text_column(
                values,
                column,
                ctx,
                score_threshold=contract.privacy.score_threshold,
                model_name=model_name,
                known=known,
                terms=terms[column.name],
            )
            residual[column.name] = scan
        else:
            new, record.params = apply_column(values, column, ctx)
            if new is not None and known is not None and column.deidentify.operator not in {"pseudonymize", "redact"}:
                residual[column.name] = structured_residual(new, known, column)
        if new is None:
            record.published = False
        else:
            out[column.name] = new
        records.append(record)
    return _Chunk(pd.DataFrame(out, index=frame.index), records, residual)


# The one per-batch step: the DuckDB stream (deidentify_table) and Spark's Arrow batches (pipelines.engines.spark) call it.
deidentify_batch = _deidentify_columns


def _check_residual(contract: Contract, residual: dict[str, dict[str, Any]]) -> None:
    hits = {name: scan["residual"] for name, scan in residual.items() if scan.get("residual")}
    if hits:
        listed = "; ".join(f"column '{c}': {', '.join(f'{e} x{n}' for e, n in h.items())}" for c, h in hits.items())
        raise ResidualPIIError(
            f"{contract.dataset}: personal data remains after masking ({listed}); nothing was published"
        )


def _detector(contract: Contract, model_name: str | None) -> dict[str, Any] | None:
    """The detector that classified every column's sample (all datasets) and scanned free text (where declared)."""
    from pipelines.privacy.analyzer import detector_info

    scanned = [c.name for c in contract.columns if c.deidentify.operator == "scan"]
    return {
        "used_for": ["column classification (a sample of every column)"] + (["free-text scanning"] if scanned else []),
        "free_text_columns": scanned,
        **detector_info(model_name),
    }


def _check_declared(frame_columns, contract: Contract) -> None:
    missing = [c.name for c in contract.columns if c.name not in frame_columns]
    if missing:
        raise ValueError(f"{contract.dataset}: the raw table lacks declared column(s) {', '.join(missing)}")


def deidentify_frame(
    frame: pd.DataFrame,
    contract: Contract,
    ctx: OperatorContext,
    *,
    model_name: str | None = None,
    known: KnownIdentifiers | None = None,
) -> DeidentifiedTable:
    """De-identify every declared column of `frame` as its contract says (the whole table in memory)."""
    _check_declared(frame.columns, contract)
    # classifying kept columns is a fixed cost: a forked helper starts on it while the column operators run
    classifying = SharedClassification(frame, contract, known=known, model_name=model_name, cells=frame.size)
    try:
        terms = _table_terms(
            contract, lambda name: pd.Series(pd.unique(frame[name].dropna())), _frequent_in_frame(frame)
        )
        chunk = _deidentify_columns(frame, contract, ctx, model_name=model_name, known=known, terms=terms)
        classification = classifying.result()  # raises UndeclaredPIIError before the residual gate, as inline
    finally:
        classifying.cancel()
    _check_residual(contract, chunk.residual)
    result, suppressed, k_params = enforce_k_anonymity(chunk.frame, contract)
    return DeidentifiedTable(
        result.reset_index(drop=True),
        chunk.records,
        rows_in=len(frame),
        rows_out=len(result),
        rows_suppressed=suppressed,
        detector=_detector(contract, model_name),
        k_anonymity=k_params,
        residual_scan={"passed": True, "known_identifiers": known.size if known else 0, "columns": chunk.residual},
        classification=[c.to_dict() for c in classification],
    )


# --- Streaming: DuckDB table in, DuckDB table out, a chunk of rows at a time ---------------------------
DEFAULT_CHUNK_ROWS = 100_000
ROW_COLUMN = "__deidentify_row"  # keeps the input order through the k-anonymity window


def _merge_records(total: list[ColumnRecord] | None, chunk: list[ColumnRecord]) -> list[ColumnRecord]:
    if total is None:
        return chunk
    for t, c in zip(total, chunk):
        t.values_in += c.values_in
        t.entities_detected = dict(sorted((Counter(t.entities_detected) + Counter(c.entities_detected)).items()))
    return total


def _merge_residual(total: dict[str, dict[str, Any]], chunk: dict[str, dict[str, Any]]) -> None:
    for column, scan in chunk.items():
        into = total.setdefault(column, {})
        for key, value in scan.items():
            if isinstance(value, dict):
                into[key] = dict(Counter(into.get(key, {})) + Counter(value))
            elif isinstance(value, int):
                into[key] = into.get(key, 0) + value
            else:
                into[key] = value


def deidentify_table(
    source,
    table: str,
    target,
    target_table: str,
    contract: Contract,
    ctx: OperatorContext,
    *,
    model_name: str | None = None,
    known: KnownIdentifiers | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    exclude: tuple[str, ...] = (),
) -> DeidentifiedTable:
    """Stream `table` from the DuckDB connection `source` in chunks of `chunk_rows`, de-identify each chunk, stage the
    chunks in `target`, enforce k-anonymity there in SQL and only then replace `target_table` (all or nothing).

    Memory is bounded by the chunk (plus the distinct values of classified columns and, if suppression has to be
    searched, the quasi-identifier columns). Output and metadata equal `deidentify_frame`'s on the same rows.
    """
    from pipelines.ingest import quote_ident

    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    src = quote_ident(table)
    names = [
        r[0] for r in source.execute(f"SELECT column_name FROM (DESCRIBE {src})").fetchall() if r[0] not in exclude
    ]
    _check_declared(names, contract)
    values = {
        c.name: source.execute(
            f"SELECT DISTINCT {quote_ident(c.name)} FROM {src} WHERE {quote_ident(c.name)} IS NOT NULL"
        )
        .df()
        .iloc[:, 0]
        for c in columns_to_classify(contract)
    }
    rows = source.execute(f"SELECT count(*) FROM {src}").fetchone()[0]
    classifying = SharedClassification(values, contract, known=known, model_name=model_name, cells=rows * len(names))
    del values
    terms = _table_terms(
        contract,
        lambda name: (
            source.execute(f"SELECT DISTINCT {quote_ident(name)} FROM {src} WHERE {quote_ident(name)} IS NOT NULL")
            .df()
            .iloc[:, 0]
        ),
        lambda name, k, limit: (
            source.execute(
                f"SELECT CAST({quote_ident(name)} AS VARCHAR) AS v FROM {src} WHERE v IS NOT NULL GROUP BY v "
                f"HAVING count(*) >= {int(k)} ORDER BY count(*) DESC, v LIMIT {int(limit)}"
            )
            .df()
            .iloc[:, 0]
        ),
    )
    staging = quote_ident(f"{target_table}__staging")
    records: list[ColumnRecord] | None = None
    residual: dict[str, dict[str, Any]] = {}
    rows_in = 0
    reader = source.cursor()
    try:
        selected = ", ".join(quote_ident(n) for n in names)
        result = reader.execute(f"SELECT {selected} FROM {src}")
        for frame in _chunks(
            result, chunk_rows, empty=lambda: source.execute(f"SELECT {selected} FROM {src} LIMIT 0").df()
        ):
            chunk = _deidentify_columns(frame, contract, ctx, model_name=model_name, known=known, terms=terms)
            records = _merge_records(records, chunk.records)
            _merge_residual(residual, chunk.residual)
            out = chunk.frame
            out[ROW_COLUMN] = range(rows_in, rows_in + len(out))
            target.register("deidentified_chunk", out)
            if records is chunk.records:  # the first chunk creates the staging table
                target.execute(f"CREATE OR REPLACE TABLE {staging} AS SELECT * FROM deidentified_chunk")
            else:
                target.execute(f"INSERT INTO {staging} BY NAME SELECT * FROM deidentified_chunk")
            target.unregister("deidentified_chunk")
            rows_in += len(frame)
            classifying.poll()  # undeclared PII stops the stream as soon as the helper finds it
        classification = classifying.result()  # raises UndeclaredPIIError before anything is published
        _check_residual(contract, residual)
        suppressed, rows_out, k_params = _publish_k_anonymous(
            target, staging, quote_ident(target_table), contract, rows_in
        )
    finally:
        classifying.cancel()
        reader.close()
        target.execute(f"DROP TABLE IF EXISTS {staging}")
    return DeidentifiedTable(
        None,
        records or [],
        rows_in=rows_in,
        rows_out=rows_out,
        rows_suppressed=suppressed,
        detector=_detector(contract, model_name),
        k_anonymity=k_params,
        residual_scan={
            "passed": True,
            "known_identifiers": known.size if known else 0,
            "columns": residual,
            "chunk_rows": chunk_rows,
        },
        classification=[c.to_dict() for c in classification],
    )


def _chunks(result, rows: int, empty):
    """DataFrames of exactly `rows` rows (the last may be shorter) from a DuckDB result, read 2,048 rows at a
    time as `.df()` would convert them; one empty frame if there are no rows (so the table still gets its columns)."""
    buffer: list[pd.DataFrame] = []
    size = 0
    produced = False
    while True:
        part = result.fetch_df_chunk(1)
        if part.empty:
            break
        buffer.append(part)
        size += len(part)
        while size >= rows:
            frame = pd.concat(buffer, ignore_index=True) if len(buffer) > 1 else buffer[0].reset_index(drop=True)
            yield frame.iloc[:rows].reset_index(drop=True)
            produced = True
            rest = frame.iloc[rows:]
            buffer, size = ([rest] if len(rest) else []), len(rest)
    if size:
        yield pd.concat(buffer, ignore_index=True)
    elif not produced:
        yield empty()


def _publish_k_anonymous(
    con, staging: str, target: str, contract: Contract, rows: int
) -> tuple[int, int, dict[str, Any]]:
    """enforce_k_anonymity in SQL over the staged rows, then replace `target` with what may be published."""
    from pipelines.ingest import quote_ident

    quasi = [c.name for c in contract.published_columns if c.role == Role.quasi_identifier]
    k, limit = contract.privacy.k_anonymity, contract.privacy.max_suppression
    params: dict[str, Any] = {"quasi_identifiers": quasi, "k": k, "max_suppression": limit, "blanked": []}
    row = quote_ident(ROW_COLUMN)
    if not quasi or k <= 1 or rows == 0:
        con.execute(f"CREATE OR REPLACE TABLE {target} AS SELECT * EXCLUDE ({row}) FROM {staging} ORDER BY {row}")
        return 0, rows, params
    partition = ", ".join(quote_ident(q) for q in quasi)

    def small_count(source: str) -> int:
        return con.execute(
            f"SELECT count(*) FROM (SELECT count(*) OVER (PARTITION BY {partition}) AS n FROM {source}) WHERE n < {k}"
        ).fetchone()[0]

    source, small = staging, small_count(staging)
    if small / rows > limit:
        levels = None
        if contract.privacy.adaptive_suppression:
            quasi_frame = con.execute(f"SELECT {partition} FROM {staging} ORDER BY {row}").df()
            levels = _search_suppression(quasi_frame, quasi, k, limit)
        if levels is None:
            raise k_threshold_error(contract, small, rows, quasi)
        blanked = [q for q, level in levels.items() if level > 0]
        params["blanked"] = blanked
        replace = ", ".join(f"CAST('*' AS VARCHAR) AS {quote_ident(q)}" for q in blanked)
        source = f"(SELECT * REPLACE ({replace}) FROM {staging})" if blanked else staging
        small = small_count(source)
    params["suppressed_share"] = round(small / rows, 6)
    con.execute(
        f"CREATE OR REPLACE TABLE {target} AS SELECT * EXCLUDE ({row}, __class_size) FROM "
        f"(SELECT *, count(*) OVER (PARTITION BY {partition}) AS __class_size FROM {source}) "
        f"WHERE __class_size >= {k} ORDER BY {row}"
    )
    return small, rows - small, params


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items() if k != "key_id" and v is not None) or "-"


def deidentification_markdown(records: list[ColumnRecord]) -> str:
    """A steward-readable table: what happened to each column (parameters and counts, never values)."""
    lines = [
        "| column | role | entity | operator | parameters | key id | values in | PII found (free text) | published |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        found = ", ".join(f"{k}: {v}" for k, v in r.entities_detected.items()) or "-"
        lines.append(
            f"| {r.column} | {r.role} | {r.entity or '-'} | {r.operator} | {_params_text(r.params)} | "
            f"{r.params.get('key_id') or '-'} | {r.values_in} | {found} | {'yes' if r.published else 'no'} |"
        )
    return "\n".join(lines)
