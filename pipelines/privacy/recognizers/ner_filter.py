"""spaCy NER results, filtered: no dates that are ages or numbers, no spans inside an address or an identifier."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import regex
from presidio_analyzer import RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import SpacyRecognizer

from pipelines.privacy import gazetteer
from pipelines.privacy.recognizers.address import StreetAddressRecognizer
from pipelines.privacy.recognizers.name_run import POSSESSIVE as _POSSESSIVE

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
_NUMBER_ENTITIES = {
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "US_BANK_NUMBER",
    "US_PASSPORT",
    "US_DRIVER_LICENSE",
    "IP_ADDRESS",
    "UK_NHS",
    "US_ITIN",
}


_NAMED = {"PERSON", "LOCATION", "NRP"}  # entities NER infers from words: a name, a place, a group


def _is_code(span: str) -> bool:
    """Every word holds a digit ("INC-000003", "SRV-12 7B"): an id or a code, which no name or place is made of."""
    words = span.split()
    return bool(words) and all(any(c.isdigit() for c in w) for w in words)


class FilteredSpacyRecognizer(SpacyRecognizer):
    """spaCy NER results without the dates that are not dates (ages, durations, house numbers) and without names,
    places or groups made of codes."""

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
            if r.start < r.end and r.entity_type in _NAMED and _is_code(text[r.start : r.end]):
                continue  # "INC-000003" read as a place: a record id, not a person, place or group
            if r.start < r.end and (r.entity_type != "DATE_TIME" or _is_calendar_date(text[r.start : r.end])):
                results.append(r)
        return results

    identifier_cues: Mapping[str, frozenset[str]] = MappingProxyType(
        {}
    )  # set per analyzer: organisation identifier entity -> its context words

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
            if (
                r.entity_type not in _CONTAINED_IN_ADDRESS
                or not (any(r.contained_in(a) for a in addresses) or self._identifier_with_cue(text, r, identifiers))
            )
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
        return (
            len(word) > 1
            and word not in _TITLES
            and gazetteer.is_common_word(word)
            and not gazetteer.is_given_name(word)
            and not gazetteer.is_surname(word)
        )

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
        if (
            last.isalnum()
            or (last == "." and end - 2 >= start and text[end - 2].isalpha())
            or (last == ")" and "(" in text[start : end - 1])
        ):
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
