"""Exact speed-ups that rely on private internals of Presidio, spaCy/thinc, phonenumbers and `re`: the one module that does.

Each leaves detections (entity, span, score) as the stock path finds them; `tests/test_speedups_equivalence.py` checks
that on the demo's free text and the labelled texts. They are on unless ``PIPELINES_PRESIDIO_SPEEDUPS=0`` (read when an
analyzer is built). pyproject.toml pins every library used here exactly (presidio-analyzer, spacy, thinc,
phonenumbers): an upgrade must rerun the equivalence test. Python's `re._parser` is read defensively (no shortcut if it
changed).

Notes for upstream (Presidio): the context enhancer deep-copies every result, though it changes only a result's score,
explanation and metadata; it finds a result's token by walking all tokens (a bisection on token ends does); the analyzer
looks its recognizers up and runs two scans over all results per recognizer, even for recognizers whose
`enhance_using_context` is the no-op.
"""

from __future__ import annotations

import bisect
import copy
import os
import string
from functools import cache, lru_cache

import numpy
import phonenumbers
import regex
import thinc.api
import threadpoolctl
from presidio_analyzer import AnalyzerEngine, EntityRecognizer, PatternRecognizer, RecognizerRegistry, RecognizerResult
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.pattern_recognizer import REGEX_TIMEOUT_SECONDS

from pipelines.privacy.recognizers.phone import PrefilteredPhoneRecognizer

SPEEDUPS_ENV = "PIPELINES_PRESIDIO_SPEEDUPS"


def enabled() -> bool:
    """The setting: on unless $PIPELINES_PRESIDIO_SPEEDUPS is 0/false/no/off."""
    return os.environ.get(SPEEDUPS_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


# --- spaCy/thinc: NER's matrix products through numpy's BLAS ------------------------------------------------------


class NumpyBlasOps(thinc.api.NumpyOps):
    """thinc's CPU operations, with the matrix products of NER's embedding and its state features through numpy's BLAS
    (OpenBLAS) instead of blis, which runs them several times slower on some CPUs. NER finds the same entities."""

    name = "numpy_blas"

    def gemm(self, x, y, out=None, trans1: bool = False, trans2: bool = False):
        if trans1:
            x = x.T
        if trans2:
            y = y.T
        if out is None:
            return numpy.dot(x, y)
        numpy.dot(x, y, out=out)
        return out


def use_numpy_blas(nlp) -> None:
    """Give every thinc model node of the pipeline `NumpyBlasOps` (where it uses thinc's CPU ops)."""
    ops = NumpyBlasOps()
    for _, component in nlp.pipeline:
        model = getattr(component, "model", None)
        if isinstance(model, thinc.api.Model) and isinstance(model.ops, thinc.api.NumpyOps):
            for node in model.walk():
                node.ops = ops


@lru_cache(maxsize=1)
def blas_threads() -> threadpoolctl.ThreadpoolController:
    """The BLAS libraries loaded in this process (numpy's OpenBLAS), to cap their threads cheaply."""
    return threadpoolctl.ThreadpoolController()


def matrix_products(nlp) -> str:
    """Which library multiplies NER's matrices (the same entities either way; recorded for reproducibility)."""
    ops = {type(getattr(component, "model", None) and component.model.ops).__name__ for _, component in nlp.pipeline}
    if NumpyBlasOps.__name__ not in ops:
        return "blis (thinc's default)"
    blas = [
        f"{lib['internal_api']} {lib.get('version') or ''}".strip()
        for lib in blas_threads().info()
        if lib["user_api"] == "blas"
    ]
    return f"numpy ({', '.join(blas) or 'its BLAS'}), 1 thread per process"


# --- Presidio: NLP artifacts in one pass, keywords remembered, token ends for the context enhancer -----------------

KEYWORD_MEMO_SIZE = 200_000  # distinct lemmas whose keywords are remembered (in memory only)


class LeanArtifactBuilder:
    """Builds `NlpArtifacts` of a doc as the lean engine's public builder does, in one pass over the tokens, with each
    lemma's keywords remembered (`NlpArtifacts.set_keywords` maps lemma by lemma, and looking a word up in the
    vocabulary twice is most of its time) and the token ends recorded for `ShallowCopyContextEnhancer`."""

    def __init__(self) -> None:
        self.keywords: dict[tuple[str, str], list[str]] = {}  # (language, lemma) -> its context keywords

    def clear(self) -> None:
        self.keywords.clear()

    def __call__(self, engine, doc, language: str, entities: list, scores: list[float]) -> NlpArtifacts:
        lemmas, indices, ends = [], [], []
        for token in doc:
            lemmas.append(token.lemma_ or token.lower_)
            indices.append(token.idx)
            ends.append(token.idx + len(token))
        artifacts = _MemoNlpArtifacts(
            entities=entities,
            tokens=doc,
            tokens_indices=indices,
            lemmas=lemmas,
            nlp_engine=(engine, self),
            language=language,
            scores=scores,
        )
        artifacts.nlp_engine = engine
        artifacts.token_ends = ends
        return artifacts

    def keywords_of(self, engine, lemmas: list[str], language: str) -> list[str]:
        out: list[str] = []
        for lemma in lemmas:
            pieces = self.keywords.get((language, lemma))
            if pieces is None:
                pieces = NlpArtifacts.set_keywords(engine, [lemma], language)
                if len(self.keywords) >= KEYWORD_MEMO_SIZE:
                    self.keywords.clear()
                self.keywords[(language, lemma)] = pieces
            out.extend(pieces)
        return out


class _MemoNlpArtifacts(NlpArtifacts):
    """NlpArtifacts whose keywords come from the builder's memo (the same list as Presidio computes)."""

    @staticmethod
    def set_keywords(nlp_engine, lemmas: list[str], language: str) -> list[str]:
        engine, builder = nlp_engine
        return builder.keywords_of(engine, lemmas, language)


# --- phonenumbers: each candidate parsed and verified once ------------------------------------------------------

PHONE_MEMO_SIZE = 100_000  # candidates remembered per process, in memory only (like the NER cache)
_UNSEEN = object()
_PHONE_CANDIDATE = phonenumbers.phonenumbermatcher._PATTERN
_PLUS_SIGNS = phonenumbers.phonenumberutil._PLUS_CHARS
_SECOND_NUMBER_START = phonenumbers.phonenumbermatcher._SECOND_NUMBER_START_PATTERN


def _shortest_valid_number() -> int:
    """The fewest digits a valid number has in any region or non-geographic entity (phonenumbers' metadata).

    A candidate's digits hold its national number whole (parsing only strips a country code, an international or
    national prefix, an extension), so a candidate with fewer digits is never VALID, whatever region it is parsed for."""
    from phonenumbers import PhoneMetadata

    lengths = [
        PhoneMetadata.metadata_for_region(r).general_desc.possible_length for r in phonenumbers.SUPPORTED_REGIONS
    ]
    lengths += [
        PhoneMetadata.metadata_for_nongeo_region(c).general_desc.possible_length
        for c in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS
    ]
    if any(not possible for possible in lengths):
        return 0  # a region without possible lengths: no bound
    transforms = any(
        PhoneMetadata.metadata_for_region(r).national_prefix_transform_rule for r in phonenumbers.SUPPORTED_REGIONS
    )
    # a national-prefix transform (Argentina's '9$1') can add a digit: keep one digit of margin for it
    return max(0, min(min(possible) for possible in lengths) - (1 if transforms else 0))


PHONE_MIN_DIGITS = _shortest_valid_number()


def _transform_digits(metadata) -> int:
    """How many digits a region's national-prefix transform rule adds (its literal digits; group references add
    none): Saint Kitts' '869\\1' adds an area code of 3."""
    return sum(c.isdigit() for c in regex.sub(r"[\\\\$]\d", "", metadata.national_prefix_transform_rule or ""))


def _min_length(metadatas) -> int:
    lengths = [m.general_desc.possible_length for m in metadatas if m is not None]
    return 0 if not lengths or any(not possible for possible in lengths) else min(min(p) for p in lengths)


def _international_min_digits() -> int:
    """The fewest digits after an international prefix that can make a VALID number: a calling code and a national
    number of it (whose main region's transform is the one parsing applies), over every calling code."""
    from phonenumbers import PhoneMetadata
    from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

    fewest = []
    for code, regions in COUNTRY_CODE_TO_REGION_CODE.items():
        if regions[0] == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY:
            metadatas = [PhoneMetadata.metadata_for_nongeo_region(code)]
        else:
            metadatas = [PhoneMetadata.metadata_for_region(r) for r in regions]
        if not metadatas or metadatas[0] is None:
            return 0
        fewest.append(len(str(code)) + max(0, _min_length(metadatas) - _transform_digits(metadatas[0])))
    return min(fewest, default=0)


def _region_min_digits(region: str) -> int:
    """A bound under which a candidate parsed for `region` (no plus sign) is never VALID: its digits (and letters,
    which alpha normalization may turn into digits) must hold either a national number of the region's calling code
    (parsing only strips prefixes, an extension and the calling code itself; the region's own transform may add
    digits) or the region's international prefix and a number dialled with it (`_international_min_digits`)."""
    from re import _parser

    from phonenumbers import PhoneMetadata

    metadata = PhoneMetadata.metadata_for_region(region)
    if metadata is None:
        return PHONE_MIN_DIGITS
    sharing = [
        PhoneMetadata.metadata_for_region(r) for r in phonenumbers.region_codes_for_country_code(metadata.country_code)
    ]
    national = _min_length(sharing) - _transform_digits(metadata)
    if metadata.international_prefix is None:
        return max(PHONE_MIN_DIGITS, national)
    try:
        prefix = _parser.parse(metadata.international_prefix).getwidth()[0]  # the shortest prefix it matches
    except Exception:  # noqa: BLE001 (an internal that changed: no bound beyond the global one)
        return PHONE_MIN_DIGITS
    return max(PHONE_MIN_DIGITS, min(national, prefix + _international_min_digits()))


@cache
def region_min_digits(region: str | None) -> int:
    return PHONE_MIN_DIGITS if region is None else _region_min_digits(region)


_PHONE_LETTERS_OR_DIGITS = regex.compile(r"[\p{Nd}\p{L}]")


class PhoneMemo:
    """Verdicts per candidate and regions per number, shared by a process's phone matchers (bounded, in memory)."""

    def __init__(self) -> None:
        self.verdicts: dict[tuple, phonenumbers.PhoneNumber | None] = {}
        self.regions: dict[str, str | None] = {}

    def clear(self) -> None:
        self.verdicts.clear()
        self.regions.clear()

    def region_named_by(self, number: str) -> str | None:
        """The region of a number written with its country code (as Presidio's recognizer reports it), else None."""
        region = self.regions.get(number, _UNSEEN)
        if region is _UNSEEN:
            try:
                region = phonenumbers.region_code_for_number(phonenumbers.parse(number))
            except phonenumbers.NumberParseException:
                region = None
            if len(self.regions) >= PHONE_MEMO_SIZE:
                self.regions.clear()
            self.regions[number] = region
        return region


class RememberingPhoneRecognizer(PrefilteredPhoneRecognizer):
    """Presidio's `PhoneRecognizer.analyze` (every region's matcher, the region a match names) with each candidate's
    verdict per region remembered (see `_RememberingPhoneMatcher`)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.memo = PhoneMemo()

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        if not self.has_enough_digits(text):
            return []
        results = []
        candidates: dict[int, tuple[int, str] | None] = {}  # the regions' matchers share the candidate search
        for region in self.supported_regions:
            for match in _RememberingPhoneMatcher(
                text, region, leniency=self.leniency, candidates=candidates, memo=self.memo
            ):
                named = self.memo.region_named_by(text[match.start : match.end])
                results.append(
                    self._get_recognizer_result(match, text, region if named is None else named, nlp_artifacts)
                )
        return EntityRecognizer.remove_duplicates(results)


class _RememberingPhoneMatcher(phonenumbers.PhoneNumberMatcher):
    """phonenumbers' matcher that parses and verifies a candidate once per region and surrounding characters.

    Its verdict depends only on the candidate, the characters just before and after it, the region and the leniency,
    and the same short candidates come back in text after text and region after region. Finding the candidates does
    not depend on the region either, so the matchers of one text share it (`candidates`: search index -> the next
    candidate's start and trimmed text).
    """

    def __init__(
        self, text, region, *, leniency, candidates: dict[int, tuple[int, str] | None], memo: PhoneMemo
    ) -> None:
        super().__init__(text, region, leniency=leniency)
        self._candidates = candidates
        self._memo = memo

    def _candidate_at(self, index: int) -> tuple[int, str] | None:
        """`_find`'s search for the next candidate on or after `index`, trimmed as `_find` trims it."""
        if index in self._candidates:
            return self._candidates[index]
        match = _PHONE_CANDIDATE.search(self.text, index)
        found = None
        if match is not None:
            found = (
                match.start(),
                self._trim_after_first_match(_SECOND_NUMBER_START, self.text[match.start() : match.end()]),
            )
        self._candidates[index] = found
        return found

    def _find(self, index):
        """phonenumbers' `PhoneNumberMatcher._find`, with its candidate search shared (`_candidate_at`)."""
        found = self._candidate_at(index)
        while self._max_tries > 0 and found is not None:
            start, candidate = found
            if len(candidate) >= self._min_candidate_length:
                match = self._extract_match(candidate, start)
                if match is not None:
                    return match
                self._max_tries -= 1
            found = self._candidate_at(start + len(candidate))
        return None

    def _parse_and_verify(self, candidate, offset):
        if sum(c.isdecimal() for c in candidate) < PHONE_MIN_DIGITS:
            return None  # fewer digits than the shortest valid number of any region: parse/verify would reject it
        # Too few digits (or letters) for any number this region's parse could read: see `_region_min_digits`. A plus
        # sign anywhere, or a ';' (RFC 3966 phone-context), may name another calling code: the global bound only.
        bound = (
            PHONE_MIN_DIGITS
            if any(c in _PLUS_SIGNS or c == ";" for c in candidate)
            else region_min_digits(self.preferred_region)
        )
        if bound > PHONE_MIN_DIGITS and len(_PHONE_LETTERS_OR_DIGITS.findall(candidate)) < bound:
            return None
        end = offset + len(candidate)
        # A number written with its country code ('+44 ...') parses and verifies the same whatever the region: parse
        # takes the country from the number, and VALID leniency looks only at the number and the candidate.
        region = (
            None
            if candidate[:1] in _PLUS_SIGNS and self.leniency == phonenumbers.Leniency.VALID
            else self.preferred_region
        )
        key = (
            candidate,
            self.text[offset - 1] if offset > 0 else None,
            self.text[end] if end < len(self.text) else None,
            region,
            self.leniency,
        )
        verdicts = self._memo.verdicts
        number = verdicts.get(key, _UNSEEN)
        if number is _UNSEEN:
            match = super()._parse_and_verify(candidate, offset)
            number = None if match is None else match.number
            if len(verdicts) >= PHONE_MEMO_SIZE:
                verdicts.clear()
            verdicts[key] = number
        return None if number is None else phonenumbers.PhoneNumberMatch(offset, candidate, number)


# --- Presidio's pattern recognizers: skip a text none of their patterns matches (re._parser) ----------------------

_PUNCTUATION = frozenset(string.punctuation)


class PunctuationMemo:
    """The ASCII punctuation of the text being scanned, computed once for all pattern recognizers of that text."""

    def __init__(self) -> None:
        self._last: tuple = (None, frozenset())  # (text, its punctuation), swapped whole (threads may share it)

    def __call__(self, text: str) -> frozenset:
        last = self._last
        if last[0] is text:
            return last[1]
        present = _PUNCTUATION.intersection(text)
        self._last = (text, present)
        return present


class SkipWithoutMatch:
    """A pattern recognizer's `analyze` that returns no results at once when none of its patterns (compiled as Presidio
    compiles them) matches anywhere in the text, which is what Presidio's loop over them would return.

    Most texts match few of the pattern recognizers; Presidio times and logs every pattern of every one. The check is
    exact: a pattern whose every match holds a punctuation character the text lacks is not looked for at all
    (`required_characters`); the others are looked for through a necessary condition of their matches where one is known
    (`necessary_condition`), and on short texts in one search of their alternation (`alternation`). A text the check
    lets through goes to Presidio's own `analyze`.
    """

    def __init__(self, recognizer: PatternRecognizer, punctuation: PunctuationMemo) -> None:
        self.recognizer = recognizer
        self.analyze = recognizer.analyze  # the class's method, bound
        self._punctuation = punctuation
        self._prepared: tuple | None = None  # (flags, number of patterns) the plans below were built for

    def _prepare(self, flags: int) -> None:
        patterns = self.recognizer.patterns
        self._flags = flags
        self._required = tuple(required_characters(p.regex, flags) for p in patterns)
        self._conditions = tuple(necessary_condition(p.regex, flags) or p.compiled_regex for p in patterns)
        self._plans: dict[tuple, tuple] = {}  # (patterns the text can hold, short text?) -> the searches to run
        self._prepared = (flags, len(patterns))

    def _plan(self, eligible: tuple[int, ...], short: bool) -> tuple:
        """The searches that tell whether one of the `eligible` patterns matches (made once per combination)."""
        key = (eligible, short)
        if key not in self._plans:
            union = alternation([self.recognizer.patterns[i].regex for i in eligible], self._flags) if short else None
            # conditions shared by several patterns (the URL ones) are searched once
            self._plans[key] = (
                (union,)
                if union is not None
                else tuple({self._conditions[i].pattern: self._conditions[i] for i in eligible}.values())
            )
        return self._plans[key]

    def __call__(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None, regex_flags: int | None = None
    ) -> list[RecognizerResult]:
        flags = regex_flags if regex_flags else self.recognizer.global_regex_flags
        patterns = self.recognizer.patterns
        for pattern in patterns:
            if pattern.compiled_regex is None or pattern.compiled_with_flags != flags:
                return self.analyze(text, entities, nlp_artifacts, regex_flags)  # not compiled yet: Presidio compiles
        if self._prepared != (flags, len(patterns)):
            self._prepare(flags)
        present = self._punctuation(text)
        eligible = tuple(i for i, required in enumerate(self._required) if required <= present)
        try:
            for check in self._plan(eligible, len(text) <= SHORT_TEXT_CHARS) if eligible else ():
                if check.search(text, timeout=REGEX_TIMEOUT_SECONDS) is not None:
                    return self.analyze(text, entities, nlp_artifacts, regex_flags)
        except TimeoutError:
            return self.analyze(text, entities, nlp_artifacts, regex_flags)  # Presidio logs the timeout and goes on
        return []


_QUANTIFIER = regex.compile(r"\{\d*(?:,\d*)?\}")


def _regex_only_syntax(text: str) -> bool:
    """Whether the pattern uses syntax of the `regex` module that Python's `re` parser would read as literal
    punctuation: a POSIX class inside a set ("[[:alpha:]]") or braces that are no repeat count (fuzzy matching,
    "{e<=1}"). Other syntax `re` does not know makes its parser fail."""
    i, in_set, set_start = 0, False, 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if in_set:
            if char == "[" and text.startswith(":", i + 1):
                return True
            if char == "]" and i > set_start:  # a ']' first in a set is a literal
                in_set = False
        elif char == "[":
            in_set = True
            set_start = i + 1 + (text[i + 1 : i + 2] == "^")
        elif char == "{" and not _QUANTIFIER.match(text, i):
            return True
        i += 1
    return False


# Flags with the same value and meaning in both modules (re.ASCII's value is regex's VERSION1).
_RE_FLAGS = regex.IGNORECASE | regex.MULTILINE | regex.DOTALL | regex.UNICODE


def required_characters(text: str, flags: int) -> frozenset:
    """ASCII punctuation that every match of the pattern `text` holds (the empty set where that is not certain).

    Read from the pattern's parse (Python's private `re` parser, which the `regex` module's syntax extends): a literal
    in a sequence is required, an alternation requires what all its branches do, a repeat what its body does if it must
    occur once. Punctuation has no case, so the flags do not change it; lookarounds and backreferences count as
    nothing."""
    if flags & ~_RE_FLAGS or _regex_only_syntax(text):
        return frozenset()
    try:
        from re import _constants as sre
        from re import _parser

        parsed = _parser.parse(text, flags)
    except Exception:  # noqa: BLE001 (syntax only the `regex` module knows, or a private parser that changed: no shortcut)
        return frozenset()
    repeats = {sre.MAX_REPEAT, sre.MIN_REPEAT, getattr(sre, "POSSESSIVE_REPEAT", sre.MAX_REPEAT)}

    def required(items) -> set[str]:
        out: set[str] = set()
        for op, av in items:
            if op is sre.LITERAL and chr(av) in _PUNCTUATION:
                out.add(chr(av))
            elif op is sre.SUBPATTERN:
                out |= required(av[-1])
            elif op is getattr(sre, "ATOMIC_GROUP", None):
                out |= required(av)
            elif op is sre.BRANCH:
                out |= set.intersection(*(required(branch) for branch in av[1]))
            elif op in repeats and av[0] >= 1:
                out |= required(av[2])
        return out

    return frozenset(required(parsed))


# Texts up to this long are checked with one search of a recognizer's alternation of patterns; longer ones pattern by
# pattern (the alternation loses each pattern's own search optimisations, which pay off on longer texts).
SHORT_TEXT_CHARS = 64
# A global inline flag, a backreference or a conditional would mean something else inside an alternation.
_NOT_ALTERNABLE = regex.compile(r"\\(?:[1-9]|g<)|\(\?(?:P=|\(|[a-zA-Z0-9-]+\))")
# Presidio's URL patterns: a run of up to 253 host characters, a dot, a top-level domain from its list.
_URL_HOST_RUN = "[a-z0-9.\\-]{1,253}[.]"


def alternation(texts: list[str], flags: int):
    """One pattern that matches somewhere in a text exactly when one of `texts` does; None if that is not certain."""
    if len(texts) < 2 or any(_NOT_ALTERNABLE.search(t) for t in texts):
        return None
    try:
        return regex.compile("|".join(f"(?:{t})" for t in texts), flags)
    except regex.error:
        return None


def necessary_condition(text: str, flags: int):
    """A cheap pattern that matches somewhere in every text the pattern `text` matches, or None.

    Known for Presidio's URL patterns, which try a run of up to 253 host characters at every position before looking
    for the dot and the top-level domain. Every match of such a pattern holds a host character, the dot and one of its
    top-level domains side by side: the condition looks for just that, case-insensitively (which can only let more
    texts through)."""
    at = text.find(_URL_HOST_RUN)
    group = text[at + len(_URL_HOST_RUN) :] if at >= 0 else ""
    if not group.startswith("(?:"):
        return None
    depth = 0
    for i, char in enumerate(group):
        if char in "()" and (i == 0 or group[i - 1] != "\\"):
            depth += 1 if char == "(" else -1
            if depth == 0:
                tlds = group[: i + 1]
                if _NOT_ALTERNABLE.search(tlds):
                    return None
                try:
                    return regex.compile(r"[a-z0-9.\-][.]" + tlds, flags | regex.IGNORECASE)
                except regex.error:
                    return None
    return None


def skip_pattern_recognizers_without_match(registry: RecognizerRegistry) -> None:
    """Give every pattern recognizer that uses Presidio's own `analyze` the `SkipWithoutMatch` shortcut."""
    punctuation = PunctuationMemo()
    for recognizer in registry.recognizers:
        if isinstance(recognizer, PatternRecognizer) and type(recognizer).analyze is PatternRecognizer.analyze:
            recognizer.analyze = SkipWithoutMatch(recognizer, punctuation)


# --- Presidio's context enhancement without deep copies, token walks and needless scans ----------------------------


class _CopiedResults(list):
    """Results that `copy.deepcopy` copies one level deep (result, explanation, metadata)."""

    def __deepcopy__(self, memo):
        out = []
        for result in self:
            copied = copy.copy(result)
            copied.analysis_explanation = copy.copy(result.analysis_explanation)
            copied.recognition_metadata = dict(result.recognition_metadata or {})
            out.append(copied)
        return out


class ShallowCopyContextEnhancer(LemmaContextAwareEnhancer):
    """Presidio's lemma context enhancer without its deep copy of every result, and with the token at a result's start
    found by bisection instead of a walk over the spaCy tokens.

    The enhancer changes only a result's score, explanation and metadata, so copying those is enough.
    """

    def enhance_using_context(self, text, raw_results, nlp_artifacts, recognizers, context=None):
        return super().enhance_using_context(text, _CopiedResults(raw_results), nlp_artifacts, recognizers, context)

    def _extract_surrounding_words(self, nlp_artifacts: NlpArtifacts, word: str, start: int) -> list[str]:
        """Presidio's, with its token lookup (`_find_index_of_match_token`: the first token at `start` or ending after
        it) done by bisection on the token ends `LeanArtifactBuilder` records; tokens do not overlap, so ends ascend."""
        ends = getattr(nlp_artifacts, "token_ends", None)
        if ends is None or not nlp_artifacts.tokens:
            return super()._extract_surrounding_words(nlp_artifacts, word, start)
        token_index = bisect.bisect_right(ends, start)
        if token_index == len(ends):
            raise ValueError(
                "Did not find word '" + word + "' in the list of tokens although it is expected to be found"
            )
        keywords = nlp_artifacts.keywords
        backward = self._add_n_words_backward(token_index, self.context_prefix_count, nlp_artifacts.lemmas, keywords)
        forward = self._add_n_words_forward(token_index, self.context_suffix_count, nlp_artifacts.lemmas, keywords)
        return list(set(backward + forward))


class FastAnalyzerEngine(AnalyzerEngine):
    """Presidio's analyzer engine; its per-recognizer context step skips, for recognizers that keep Presidio's no-op
    `enhance_using_context`, the two scans over all results that only feed that no-op (same results, same order).
    The recognizers of a request and the supported entities are looked up once per registry state, not per text."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.registry.get_recognizers = _RecognizerLookup(self.registry)
        self._supported: dict[tuple, list[str]] = {}

    def get_supported_entities(self, language: str | None = None) -> list[str]:
        stamp = (language, _registry_state(self.registry))
        found = self._supported.get(stamp)
        if found is None:
            self._supported.clear()
            found = self._supported[stamp] = super().get_supported_entities(language)
        return list(found)

    def _enhance_using_context(self, text, raw_results, nlp_artifacts, recognizers, context=None):
        key = RecognizerResult.RECOGNIZER_IDENTIFIER_KEY
        by_recognizer: dict[str, list[RecognizerResult]] = {}
        for result in raw_results:
            by_recognizer.setdefault(result.recognition_metadata[key], []).append(result)
        results = []
        for recognizer in recognizers:
            recognizer_id = recognizer.id
            own = list(by_recognizer.get(recognizer_id, ()))
            if _enhances_context(recognizer):
                others = [r for r in raw_results if r.recognition_metadata[key] != recognizer_id]
                own = recognizer.enhance_using_context(
                    text=text,
                    raw_recognizer_results=own,
                    other_raw_recognizer_results=others,
                    nlp_artifacts=nlp_artifacts,
                    context=context,
                )
            results.extend(own)
        return self.context_aware_enhancer.enhance_using_context(
            text=text, raw_results=results, nlp_artifacts=nlp_artifacts, recognizers=recognizers, context=context
        )


def _registry_state(registry: RecognizerRegistry) -> tuple:
    """What a lookup in the registry depends on: its recognizers (by identity, in order)."""
    return tuple(map(id, registry.recognizers))


class _RecognizerLookup:
    """`RecognizerRegistry.get_recognizers`, remembered per (request, registry state): Presidio filters all recognizers
    by language and entity for every text. A request with ad-hoc recognizers is not remembered."""

    def __init__(self, registry: RecognizerRegistry) -> None:
        self.lookup = type(registry).get_recognizers.__get__(registry)
        self.registry = registry
        self._found: dict[tuple, list] = {}

    def __call__(self, language, entities=None, all_fields=False, ad_hoc_recognizers=None):
        if ad_hoc_recognizers:
            return self.lookup(language, entities, all_fields, ad_hoc_recognizers)
        key = (language, None if entities is None else tuple(entities), all_fields, _registry_state(self.registry))
        found = self._found.get(key)
        if found is None:
            if len(self._found) >= 64:
                self._found.clear()
            found = self._found[key] = self.lookup(language, entities, all_fields)
        return list(found)


def _enhances_context(recognizer: EntityRecognizer) -> bool:
    """Whether the recognizer overrides EntityRecognizer.enhance_using_context (which returns its input unchanged)."""
    return (
        "enhance_using_context" in vars(recognizer)
        or type(recognizer).enhance_using_context is not EntityRecognizer.enhance_using_context
    )


def clear_memos(analyzer: AnalyzerEngine) -> None:
    """Forget what the speed-ups remember between texts (phone verdicts, context keywords), here and in the pool's
    workers (the next parallel call forks them afresh)."""
    from pipelines.privacy.parallel import invalidate

    invalidate()
    for recognizer in analyzer.registry.recognizers:
        if isinstance(recognizer, RememberingPhoneRecognizer):
            recognizer.memo.clear()
    builder = getattr(analyzer.nlp_engine, "artifact_builder", None)
    if isinstance(builder, LeanArtifactBuilder):
        builder.clear()
