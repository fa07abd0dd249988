"""Names the NER model does not know: runs of capitalised words that are no everyday English words."""

from __future__ import annotations

import regex
from presidio_analyzer import AnalysisExplanation, LocalRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from pipelines.privacy import gazetteer

LANGUAGE = "en"

# --- Names the NER model does not know ----------------------------------------------------
# en_core_web_sm knows mostly English names: "Szabina J Gelencsér", "Tomomi Nishiyama", "Willemine ten Pas" pass it by.
# A run of two or more capitalised words on one line (initials and name particles may stand between them) none of which
# is an everyday English word (gazetteer.is_common_word; a given name the dictionary knows may lead a run whose other
# words are, "Sophie Lang") is a person's name, unless NER found something else there (an organisation, a place...),
# or it lies in an address.
_RUN_TOKEN = regex.compile(r"[^\s]+")
_NAME_PARTICLES = frozenset(
    {
        "de",
        "del",
        "della",
        "di",
        "da",
        "do",
        "dos",
        "das",
        "du",
        "des",
        "la",
        "le",
        "van",
        "von",
        "der",
        "den",
        "ten",
        "ter",
        "ben",
        "bin",
        "al",
        "el",
        "y",
        "zu",
        "af",
        "av",
    }
)
_TITLE_WORD = regex.compile(r"\p{Lu}[\p{Ll}\p{M}]+(?:['’\-]\p{L}[\p{Ll}\p{M}]*)*")
_INITIAL = regex.compile(r"\p{Lu}\.?")
POSSESSIVE = regex.compile(r"['’]s\Z")


# Words that make a run of names an organisation's name ("Abt Associates", "Round Stones Inc", "Arpin Van Lines").
ORGANISATION_WORDS = frozenset(
    [
        "inc",
        "incorporated",
        "ltd",
        "llc",
        "llp",
        "plc",
        "corp",
        "corporation",
        "co",
        "company",
        "companies",
        "group",
        "holdings",
        "associates",
        "partners",
        "technologies",
        "technology",
        "systems",
        "solutions",
        "services",
        "labs",
        "laboratories",
        "industries",
        "enterprises",
        "international",
        "consulting",
        "lines",
        "airlines",
        "bank",
        "insurance",
        "foundation",
        "institute",
        "university",
        "college",
        "school",
        "hospital",
        "clinic",
        "agency",
        "studio",
        "studios",
        "media",
        "networks",
        "software",
        "capital",
        "ventures",
        "investments",
        "trust",
        "fund",
        "brothers",
        "sons",
        "gmbh",
        "ag",
        "sa",
        "nv",
        "bv",
        "oy",
        "ab",
        "as",
    ]
)
NAME_RUN_BLOCKING_LABELS = frozenset(
    {"WORK_OF_ART", "PRODUCT", "EVENT", "LAW", "LANGUAGE"}
)  # NER labels a run yields to


class NameRunRecognizer(LocalRecognizer):
    """Capitalised runs of words that are no everyday English words: a person's name (see above)."""

    ENTITY = "PERSON"
    SCORE = 0.6

    def __init__(self, supported_language: str = LANGUAGE, name: str | None = None) -> None:
        super().__init__(
            supported_entities=[self.ENTITY], supported_language=supported_language, name=name or "NameRunRecognizer"
        )

    def load(self) -> None:
        """Nothing to load: the word lists are read by `gazetteer.load`."""

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        if self.ENTITY not in entities:
            return []
        taken = [
            (e.start_char, e.end_char)
            for e in getattr(getattr(nlp_artifacts, "tokens", None), "ents", ())
            if e.label_ in NAME_RUN_BLOCKING_LABELS
        ]
        results = []
        for start, end in name_runs(text):
            if not any(a < end and start < b for a, b in taken):
                explanation = AnalysisExplanation(
                    recognizer=self.name, original_score=self.SCORE, pattern_name="name run"
                )
                metadata = {
                    RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                    RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                }
                results.append(RecognizerResult(self.ENTITY, start, end, self.SCORE, explanation, metadata))
        return results

    def enhance_using_context(
        self, text, raw_recognizer_results, other_raw_recognizer_results, nlp_artifacts, context=None
    ):
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
        if len(names) >= 2 and (
            all(t[2] != "common" for t in names)
            or (
                names[0][2] == "known"
                and all(t[2] != "common" or _census_name(text[t[0] : t[1]].lower()) for t in names)
            )
        ):
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
        stripped = POSSESSIVE.sub("", stripped)
        tail = core[len(stripped) :]
        start = match.start() + lead
        kind = None
        if lead and current:
            close()
        if _TITLE_WORD.fullmatch(stripped):
            lower = stripped.lower()
            kind = (
                "known"
                if gazetteer.is_proper_noun(lower) or gazetteer.is_listed_name(lower)
                else ("common" if gazetteer.is_common_word(lower) else "name")
            )
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
