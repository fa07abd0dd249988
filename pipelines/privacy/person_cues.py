"""One-word names found by their context: a title, a greeting, a sign-off, "my name is", a possessive, a verb people
do, or a list that holds another name.

NER (en_core_web_sm) misses most names that stand alone ("Why is Natasja so impulsive?", "Kónya, Becker and
Vasquez") and `NameRunRecognizer` needs two name words in a row. Here a capitalised word is a name when a cue says a
person stands there *and* the word itself can be a name: a word the dictionary does not know, a word it writes only
capitalised, or a census name that is no everyday word (`gazetteer`). Everyday words are never taken on a weak cue
("Dear Team", "Thanks Support"), census names that are everyday words ("Will", "Young") only after a greeting or a
title.
"""

from __future__ import annotations

import regex
from presidio_analyzer import AnalysisExplanation, LocalRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from pipelines.privacy import gazetteer

LANGUAGE = "en"
_NAME_WORD = r"\p{Lu}[\p{Ll}\p{M}]+(?:['’\-]\p{Lu}?[\p{Ll}\p{M}]+)*"  # Natasja, O'Neil, Hauta-aho
_NEXT_NAME = regex.compile(rf"(?:[ \t]+(?:\p{{Lu}}\.?(?=[ \t]+\p{{Lu}})|{_NAME_WORD}))*")  # "Anna M. Lindqvist"
_TITLE = r"(?i:\b(?:mr|mrs|ms|miss|mx|dr|prof|sir|madam|dame|lady|lord|aunt|uncle|grandma|grandpa)\b\.?)"
_INTRODUCTION = (
    r"(?i:\b(?:my name is|my name's|name is|names? on the account is|i am called|i'm called|call me|"
    r"calls me|called me|named|named (?:him|her)|called (?:him|her)|name:)\b:?)"
)
_MENTION = (
    r"(?i:\b(?:this is|it's|it is|i am|i'm|ask for|speak to|spoke to|speak with|spoke with|talk to|talked to|"
    r"contact|cc|attn|attention|signed|thanks to|according to)\b:?)"
)
_GREETING = r"(?i:\b(?:dear|hi|hello|hey|hiya|greetings|good (?:morning|afternoon|evening)|welcome|congratulations|congrats)\b,?)"
_SIGN_OFF = (
    r"(?i:\b(?:regards|kind regards|best regards|warm regards|warmest regards|with thanks|best|best wishes|cheers|thanks|thank you|many thanks|sincerely|yours|yours truly|"
    r"love|talk soon|warmly|respectfully|take care|bye|ciao|cordially)\b[,.!]*)"
)
_PERSON_VERBS = (
    r"(?:said|says|told|tells|asked|asks|replied|answered|wrote|writes|lives|lived|works|worked|began|"
    r"begins|started|starts|joined|joins|had|has|was born|explained|explains|added|noted|thinks|thought|"
    r"wants|wanted|likes|liked|loves|loved|called|calls|emailed|phoned|met|meets|visited|went|came|"
    r"arrived|left|signed|sent|sends|gave|gives|got|needs|needed|knows|knew|agreed|decided|claimed|"
    r"reported|confirmed|requested|complained|mentioned|married|moved|studied|grew up|died)"
)

# Cues, strongest first: (name, pattern with the name word as group "name", score, the evidence it needs).
# Evidence: "any" (any capitalised word that is not a stop word), "given" (a word that can be a name, or a census
# given name even if it is an everyday word), "name" (a word that can be a name; see `_can_be_name`).
_CUES: tuple[tuple[str, str, float, str], ...] = (
    ("title", rf"{_TITLE}[ \t]+(?P<name>{_NAME_WORD})", 0.9, "any"),
    (
        "greeting",
        rf"(?:^|(?<=\n))[ \t>]*{_GREETING}[ \t]+(?P<name>{_NAME_WORD})(?=[ \t]*(?:[,!.:;\-–—]|$|\n|[ \t]+\p{{Lu}}))",
        0.9,
        "given",
    ),
    ("introduction", rf"{_INTRODUCTION}[ \t]+(?P<name>{_NAME_WORD})", 0.85, "name"),
    ("mention", rf"{_MENTION}[ \t]+(?P<name>{_NAME_WORD})", 0.6, "name"),
    (
        "sign-off, same line",
        rf"(?:^|(?<=\n))[ \t>]*{_SIGN_OFF}[ \t]+(?P<name>{_NAME_WORD})[ \t.!]*(?=\n|$)",
        0.85,
        "given",
    ),
    (
        "sign-off, next line",
        rf"(?:^|(?<=\n))[ \t>]*{_SIGN_OFF}[ \t]*\n[ \t>\-–—]*(?P<name>{_NAME_WORD})(?=[ \t]*(?:\n|$|[ \t]\p{{Lu}}))",
        0.85,
        "given",
    ),
    (
        "addressed",
        rf"(?:^|(?<=\n))[ \t>\"“]*(?P<name>{_NAME_WORD}),[ \t]+(?=[^\n]*\b(?i:you|your|please|can|could|would)\b)",
        0.6,
        "name",
    ),
    ("speaker", rf"(?:^|(?<=\n))[ \t>]*(?P<name>{_NAME_WORD})[ \t]*:[ \t]*(?=[\"“'‘]|\p{{L}})", 0.6, "name"),
    ("by", rf"(?i:\b\p{{L}}+ed[ \t]+by:?)[ \t]+(?P<name>{_NAME_WORD})", 0.6, "name"),
    ("possessive", rf"(?P<name>{_NAME_WORD})['’]s\b", 0.6, "name"),
    (
        "person verb",
        (
            rf"(?P<name>{_NAME_WORD})[ \t]+(?:(?:also|then|just|never|once|later|still|already|recently|"
            rf"finally|always|often)[ \t]+)?{_PERSON_VERBS}\b"
        ),
        0.6,
        "name",
    ),
)
_LIST = regex.compile(rf"(?P<first>{_NAME_WORD})(?:(?:,[ \t]+|[ \t]+(?:and|&|or)[ \t]+)(?:{_NAME_WORD}))+")
_LIST_ITEM = regex.compile(_NAME_WORD)
_LIST_SCORE = 0.6
# NER labels a cue below "title"/"greeting"/"introduction" strength yields to (the word is that thing, not a person). Not ORG:
# the small model calls most names it does not know an organisation ("Sandra lives on...", "Aloisia, can I...").
_BLOCKING_LABELS = frozenset({"GPE", "LOC", "FAC", "NORP", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE"})
_STRONG = 0.85


_CALENDAR_WORDS = frozenset(
    """monday tuesday wednesday thursday friday saturday sunday january february march april may
june july august september october november december today tomorrow yesterday christmas easter""".split()
)


def _can_be_name(lower: str) -> bool:
    """The dictionary does not know the word, writes it only capitalised, or it is a census name and no everyday word."""
    return gazetteer.is_proper_noun(lower) or gazetteer.is_listed_name(lower) or not gazetteer.is_common_word(lower)


def _has_evidence(word: str, needed: str) -> bool:
    from spacy.lang.en.stop_words import STOP_WORDS

    lower = word.lower()
    if lower in _CALENDAR_WORDS:
        return False
    if needed == "given" and gazetteer.is_given_name(lower):
        return True  # "Hi Will", "Dear May"
    if lower in STOP_WORDS:
        return False
    return needed == "any" or _can_be_name(lower)


# Literals every match of a cue holds (case-folded): a text without any of them is not searched for that cue (exact).
_TRIGGERS: dict[str, tuple[str, ...]] = {
    "title": ("mr", "ms", "miss", "mx", "dr", "prof", "sir", "madam", "dame", "lady", "lord", "aunt", "uncle", "grand"),
    "greeting": ("dear", "hi", "hello", "hey", "greetings", "good", "welcome", "congrat"),
    "introduction": ("name", "call", "named"),
    "mention": (
        "this is",
        "it's",
        "it is",
        "i am",
        "i'm",
        "ask for",
        "speak",
        "spoke",
        "talk",
        "contact",
        "cc",
        "attn",
        "attention",
        "signed",
        "thanks to",
        "according to",
    ),
    "sign-off, same line": (
        "regards",
        "thanks",
        "best",
        "cheers",
        "thank",
        "sincerely",
        "yours",
        "love",
        "talk soon",
        "warmly",
        "respectfully",
        "take care",
        "bye",
        "ciao",
        "cordially",
    ),
    "addressed": (",",),
    "speaker": (":",),
    "by": ("by",),
    "possessive": ("'s", "’s"),
}
_TRIGGERS["sign-off, next line"] = _TRIGGERS["sign-off, same line"]


class PersonCueRecognizer(LocalRecognizer):
    """Names of one word (and the name words right after it) that a cue in the text points at (see the module)."""

    ENTITY = "PERSON"

    def __init__(self, supported_language: str = LANGUAGE, name: str | None = None) -> None:
        super().__init__(
            supported_entities=[self.ENTITY], supported_language=supported_language, name=name or "PersonCueRecognizer"
        )
        self._cues = [(name, regex.compile(pattern), score, needed) for name, pattern, score, needed in _CUES]

    def load(self) -> None:
        """Nothing to load: the word lists are read by `gazetteer.load`."""

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        if self.ENTITY not in entities or not any(c.isupper() for c in text):
            return []
        blocked = [
            (e.start_char, e.end_char)
            for e in getattr(getattr(nlp_artifacts, "tokens", None), "ents", ())
            if e.label_ in _BLOCKING_LABELS
        ]
        found: dict[tuple[int, int], RecognizerResult] = {}
        lower = (
            text.casefold()
        )  # full case folding: every character a case-insensitive literal matches ('K', 'ſ') folds to it
        for cue, pattern, score, needed in self._cues:
            triggers = _TRIGGERS.get(cue)
            if triggers is not None and not any(t in lower for t in triggers):
                continue
            for match in pattern.finditer(text):
                start, end = match.span("name")
                if not _has_evidence(match.group("name"), needed):
                    continue
                if score < _STRONG and any(a < end and start < b for a, b in blocked):
                    continue
                tail = _NEXT_NAME.match(text, end)
                end = _trim_initials(text, start, tail.end() if tail else end)
                key = (start, end)
                if key not in found or found[key].score < score:
                    found[key] = self._result(start, end, score, cue)
        for match in (
            _LIST.finditer(text) if any(t in text for t in (",", "and", "&", "or")) else ()
        ):  # candidates; kept only beside another person's name (enhance_using_context)
            for item in _LIST_ITEM.finditer(text, match.start(), match.end()):
                start, end = item.span()
                if (
                    (start, end) not in found
                    and _can_be_name(item.group().lower())
                    and not any(a < end and start < b for a, b in blocked)
                ):
                    found[(start, end)] = self._result(start, end, _LIST_SCORE, "list")
        return list(found.values())

    def _result(self, start: int, end: int, score: float, cue: str) -> RecognizerResult:
        explanation = AnalysisExplanation(recognizer=self.name, original_score=score, pattern_name=cue)
        metadata = {
            RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
            RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
        }
        return RecognizerResult(self.ENTITY, start, end, score, explanation, metadata)

    def enhance_using_context(
        self, text, raw_recognizer_results, other_raw_recognizer_results, nlp_artifacts, context=None
    ):
        """Drop weak-cue names that overlap what another recognizer found (an address, a place, an identifier), and list
        items unless the same list holds a person's name found by a cue or another recognizer."""
        others = [r for r in other_raw_recognizer_results if r.entity_type != self.ENTITY]
        people = [(r.start, r.end) for r in other_raw_recognizer_results if r.entity_type == self.ENTITY]
        people += [(r.start, r.end) for r in raw_recognizer_results if r.analysis_explanation.pattern_name != "list"]
        lists = [m.span() for m in _LIST.finditer(text)]
        kept = []
        for r in raw_recognizer_results:
            if any(o.start < r.end and r.start < o.end for o in others) and (
                r.score < _STRONG or _is_pattern_result(r, others)
            ):
                continue
            if r.analysis_explanation.pattern_name == "list":
                span = next(((a, b) for a, b in lists if a <= r.start and r.end <= b), None)
                if span is None or not any(
                    span[0] <= a and b <= span[1] and (a, b) != (r.start, r.end) and not (a <= r.start and r.end <= b)
                    for a, b in people
                ):
                    continue
            kept.append(r)
        return kept


def _is_pattern_result(result: RecognizerResult, others: list[RecognizerResult]) -> bool:
    """Does a pattern recognizer's result (an address, an email...; not NER's) overlap this one?"""
    return any(
        o.start < result.end
        and result.start < o.end
        and (o.recognition_metadata or {}).get(RecognizerResult.RECOGNIZER_NAME_KEY) != "FilteredSpacyRecognizer"
        for o in others
    )


def _trim_initials(text: str, start: int, end: int) -> int:
    """A name does not end on an initial ("Anna M." followed by a non-name)."""
    span = text[start:end].rstrip()
    while regex.search(r"[ \t]\p{Lu}\.?\Z", span):
        span = regex.sub(r"[ \t]+\p{Lu}\.?\Z", "", span)
    return start + len(span)
