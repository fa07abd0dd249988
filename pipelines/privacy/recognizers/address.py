"""Street addresses and whole postal blocks: an anchor that is almost certainly an address, extended over its lines."""

from __future__ import annotations

import regex
from presidio_analyzer import AnalysisExplanation, LocalRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

LANGUAGE = "en"

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
        (
            rf"(?i:\b(?:the[ \t]+)?corner[ \t]+of)[ \t]+[^\n,;?!]{{2,60}}?[ \t]+and"
            rf"[ \t]+(?:{_NAME}|\d+)(?:[ \t]+(?:{_NAME}|\d+)){{0,4}}"
        ),
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


class StreetAddressRecognizer(LocalRecognizer):
    """Detect street addresses and whole postal blocks (anchor, then extend). Its context words are configured with
    its registration (pipelines/privacy/conf/recognizers.yaml)."""

    ENTITY = "STREET_ADDRESS"

    def __init__(
        self, supported_language: str = LANGUAGE, context: list[str] | None = None, name: str | None = None
    ) -> None:
        super().__init__(
            supported_entities=[self.ENTITY],
            supported_language=supported_language,
            name=name or "StreetAddressRecognizer",
            context=context,
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
