"""Which lines NER needs to read: a cheap, exact-enough pre-filter on capitalisation, script and date cues."""

from __future__ import annotations

from dataclasses import dataclass

import regex

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
_COMMON_OPENERS = frozenset(
    {"please", "thanks", "thank", "hi", "hello", "hey", "dear", "sorry", "yes", "no", "ok", "okay"}
)


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
    terms = sorted(
        {v.strip() for v in values if isinstance(v, str) and any(c.isalpha() for c in v)}, key=lambda t: (-len(t), t)
    )
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
                if (
                    not first
                    or lower in _NAME_LIKE_STOP_WORDS
                    or (lower not in STOP_WORDS and lower not in _COMMON_OPENERS and lower not in _SIGN_OFFS)
                ):
                    return True
        elif not initial.islower():
            return True  # uncased script (CJK, Arabic, ...): no capitalisation cue to rely on
        previous_end = match.end()
    return bool(_DATE_CUE.search(sentence))


def holds_ner_candidate(
    text: str, terms: regex.Pattern | None = None, identifiers: IdentifierShapes | None = None
) -> bool:
    """Does any line of the text need NER (see `needs_ner`)?"""
    return any(needs_ner(text[start:end], terms, identifiers) for start, end in sentence_spans(text))
