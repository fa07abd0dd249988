"""Word lists that let detection work without capital letters, and find names the NER model does not know.

Source: the `web2` word list (Webster's Second New International Dictionary, 1934; public domain, as shipped in
FreeBSD's /usr/share/dict/web2) from the registry package `english-words` (MIT). It is independent of Faker (which
generated the labelled benchmark) and of the demo generator. In it, common words are written in lower case and proper
nouns (given names, places, peoples) capitalised; that is all this module uses:

- `is_common_word`: a lower-case entry (or an inflection of one: plural, past tense, -ing, -ly...), a stop word, or
  one of the few everyday words of today's text the 1934 dictionary lacks (`MODERN_WORDS`);
- `is_proper_noun`: written only capitalised in the dictionary ("Sophie", "Uruguay").

Name lists: the US Census Bureau's 1990 name frequency files (given names of men and women, 5,494; surnames, 88,799;
public domain) as shipped in the registry package `names` (0.3.0, MIT). They come from the census, not from Faker or
the demo generator. Faker's own en_US lists are drawn from the same population of real US names (its surnames are the
census' most frequent 1,000), so a name alone is never taken as evidence: `is_given_name`/`is_surname` only back up a
cue (a title, a greeting, a sign-off, a possessive, a verb people do, a list with another name, a name run).

Nothing here is written anywhere; the lists are read once per process (about 0.2 s, ~35 MB).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import regex

# Everyday words of current (chat, support, office) text that a 1934 dictionary lacks, so that lower-case text
# does not read them as names. Not names or places.
MODERN_WORDS = frozenset(
    """
email emails e-mail online offline website websites web app apps laptop laptops smartphone phone phones ok okay
pls plz thx ty lol btw fyi asap hi hey hello bye cheers thanks wifi wi-fi internet login logins logon logout
password passwords username usernames account accounts update updates upload uploads download downloads
software hardware printer printers router routers server servers browser browsers inbox spam chat chats
text texts texted texting voicemail dashboard checkout refund refunds website online covid vpn usb pdf
ssn dob iban bic atm pin pins sms mms gps tv dvd cd pc mac ios android windows linux url urls http https
www com org net biz info co uk vs etc ie eg am pm mr mrs ms dr jr sr st ave rd blvd apt no nos yeah yep
nope gonna wanna gotta kinda sorta dunno cannot im ive id youre dont doesnt didnt cant wont isnt arent
wasnt werent hasnt havent hadnt shouldnt couldnt wouldnt thats whats theres heres lets ill hes shes
theyre weve theyve youve youll theyll itll whos hows covid-19 hashtag blog blogs podcast playlist
smartwatch tablet tablets selfie emoji emojis startup startups began begun paid proud brainchild liftoff songwriter songwriters microprocessor fax inc ltd llc
""".split()
)

_SUFFIXES = (  # (suffix, what replaces it) tried in order: inflections and common derivations of a dictionary word
    ("'s", ""),
    ("’s", ""),
    ("ies", "y"),
    ("ied", "y"),
    ("ier", "y"),
    ("iest", "y"),
    ("ily", "y"),
    ("es", ""),
    ("s", ""),
    ("ed", ""),
    ("ed", "e"),
    ("ing", ""),
    ("ing", "e"),
    ("ly", ""),
    ("ness", ""),
    ("ment", ""),
    ("ers", ""),
    ("ings", ""),
    ("able", ""),
    ("able", "e"),
    ("ful", ""),
    ("less", ""),
    ("ity", ""),
    ("ization", "ize"),
    ("isation", "ise"),
)
_WORD = regex.compile(r"\p{L}[\p{L}\p{M}'’]*")
_CHUNK = regex.compile(r"(?<=^|\s|>)[^\s>]\S*")  # a run of non-space characters, after any quoting '>' ("> >ella")
_NOT_PROSE = regex.compile(r"[\p{N}@/\\_:=#<>]|\p{L}\.\p{L}")  # identifiers, emails, URLs, pseudonyms: left as they are


@lru_cache(maxsize=1)
def _web2() -> frozenset[str]:
    from english_words import get_english_words_set

    return frozenset(get_english_words_set(["web2"], lower=False, alpha=True))


@lru_cache(maxsize=1)
def common_words() -> frozenset[str]:
    """Lower-case dictionary entries, spaCy's English stop words and `MODERN_WORDS`."""
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(w for w in _web2() if w.islower()) | MODERN_WORDS | frozenset(STOP_WORDS)


@lru_cache(maxsize=1)
def proper_nouns() -> frozenset[str]:
    """Lower-cased dictionary entries written only with a capital (given names, places, peoples)."""
    common = common_words()
    return frozenset(w.lower() for w in _web2() if w[:1].isupper() and w.lower() not in common)


def _census_file(name: str) -> frozenset[str]:
    """The lower-cased names of one of the census files in the `names` package (one name a line, then figures)."""
    import importlib.util

    spec = importlib.util.find_spec("names")  # its data files only: the package's own code is never imported
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the `names` package (US Census 1990 name files) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / name
    return frozenset(
        line.split(maxsplit=1)[0].lower() for line in path.read_text(encoding="ascii").splitlines() if line.strip()
    )


@lru_cache(maxsize=1)
def given_names() -> frozenset[str]:
    """Lower-case given names of the 1990 US census (men and women)."""
    return _census_file("dist.male.first") | _census_file("dist.female.first")


def surnames():
    """Lower-case surnames of the 1990 US census (a set view of the ranks: one copy of the 88,799 names)."""
    return _surname_ranks().keys()


@lru_cache(maxsize=1)
def _surname_ranks() -> dict[str, int]:
    """Surname -> its rank in the census file (1 = most frequent; the file is in rank order)."""
    import importlib.util

    spec = importlib.util.find_spec("names")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the `names` package (US Census 1990 name files) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "dist.all.last"
    lines = path.read_text(encoding="ascii").splitlines()
    return {line.split(maxsplit=1)[0].lower(): rank for rank, line in enumerate((x for x in lines if x.strip()), 1)}


FREQUENT_SURNAME_RANK = 20_000  # the census' 20,000 most frequent surnames hold ~80% of the people it counted


def is_frequent_surname(word: str) -> bool:
    """A surname among the census' most frequent ("hill", "cloud"; not "lunch", rank 81,775, nor "pro")."""
    return _surname_ranks().get(word, FREQUENT_SURNAME_RANK + 1) <= FREQUENT_SURNAME_RANK


def load() -> None:
    """Read the lists now (before worker processes fork, so they share them)."""
    common_words()
    proper_nouns()
    given_names()
    surnames()


def is_everyday_word(word: str) -> bool:
    """Is this (lower-case) word itself an entry of `common_words` (no inflection guessed: "johannes" is none)?"""
    return word in common_words()


def is_given_name(word: str) -> bool:
    """Is this (lower-case) word a given name in the census list?"""
    return word in given_names()


def is_surname(word: str) -> bool:
    """Is this (lower-case) word a surname in the census list?"""
    return word in surnames()


def is_listed_name(word: str) -> bool:
    """A census given name that is no everyday word itself, or a census surname that is neither an everyday word nor
    an inflection of one ("megan", "vasquez"; not "young", "will", "stones")."""
    if word in common_words():
        return False
    return word in given_names() or (word in surnames() and not is_common_word(word))


@lru_cache(maxsize=200_000)
def is_common_word(word: str) -> bool:
    """Is this (lower-case) word an everyday English word or an inflection of one?"""
    common = common_words()
    if word in common:
        return True
    if "-" in word:
        parts = [p for p in word.split("-") if p]
        return bool(parts) and all(is_common_word(p) for p in parts)
    for suffix, replacement in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 2:
            stem = word[: -len(suffix)] + replacement
            if stem in common:
                return True
            if suffix in ("ed", "ing") and len(stem) >= 3 and stem[-1] == stem[-2] and stem[:-1] in common:
                return True  # stopped, stopping
    return False


def is_proper_noun(word: str) -> bool:
    """Is this (lower-case) word written only capitalised in the dictionary?"""
    return word in proper_nouns()


def truecase(line: str) -> str:
    """A guess at how a line written all in lower case would be capitalised, with the same length and offsets:
    the first word, words the dictionary writes capitalised, words that are no everyday word (names and places
    mostly: "szabina gelencsér", "koskikatu"), 'i', and single-letter initials between capitalised words. Runs of
    non-space characters holding a digit, '@', '/', '_' or a dotted name (emails, URLs, identifiers, pseudonyms)
    are left as they are."""
    words = [
        w
        for chunk in _CHUNK.finditer(line)
        if not _NOT_PROSE.search(chunk.group())
        for w in _WORD.finditer(line, chunk.start(), chunk.end())
    ]
    if not words:
        return line
    capital = [False] * len(words)
    namey = [False] * len(words)  # capitalised for what the word is, not for where it stands
    for k, match in enumerate(words):
        word = match.group()
        if len(word) == 1:
            capital[k] = word == "i"
            continue
        namey[k] = is_proper_noun(word) or not is_common_word(word)
        capital[k] = k == 0 or namey[k]
    _census_names_beside_names(line, words, capital, namey)
    for k, match in enumerate(words):  # "szabina j gelencsér": the initial between two names
        if (
            len(match.group()) == 1
            and match.group() != "a"
            and 0 < k < len(words) - 1
            and capital[k - 1]
            and capital[k + 1]
        ):
            capital[k] = True
    chars = list(line)
    for k, match in enumerate(words):
        if capital[k]:
            upper = chars[match.start()].upper()
            if len(upper) == 1:
                chars[match.start()] = upper
    return "".join(chars)


_CUE_BEFORE_NAME = regex.compile(
    r"(?:\b(?:mr|mrs|ms|miss|mx|dr|prof|dear|hi|hello|hey|named|called|call me|calls me|name is|name:)\.?|name:)[ \t]+\Z"
)


def _census_names_beside_names(line: str, words: list, capital: list[bool], namey: list[bool]) -> None:
    """Capitalise census names that the dictionary also lists as words ("mary", "pottinger", "spears") where they stand
    as a name: a given name right before a name ("mary gavrilova"), a surname right after a given name ("lara pottinger"), or a
    census name after a title, a greeting or "my name is" ("mr. spears", "she named him frank")."""
    from spacy.lang.en.stop_words import STOP_WORDS

    for k, match in enumerate(words):
        word = match.group()
        if capital[k] or len(word) == 1 or word in STOP_WORDS or not (is_given_name(word) or is_surname(word)):
            continue
        before = _CUE_BEFORE_NAME.search(line, max(0, match.start() - 16), match.start())
        after_name = (
            k > 0
            and namey[k - 1]
            and is_given_name(words[k - 1].group())
            and line[words[k - 1].end() : match.start()].isspace()
            and is_surname(word)
        )
        before_name = (
            k + 1 < len(words)
            and namey[k + 1]
            and line[match.end() : words[k + 1].start()].isspace()
            and is_given_name(word)
        )
        if before or after_name or before_name:
            capital[k] = namey[k] = True


_LINE = regex.compile(r"[^\n]+")


def case_view(text: str) -> str:
    """The text with each line that has letters but no capital truecased (`truecase`); the same text otherwise.
    Offsets are unchanged, so what is found in the view is found at the same place in the text."""
    if not any(c.isupper() for c in text):
        return (
            "\n".join(truecase(line) if line else line for line in text.split("\n"))
            if any(c.isalpha() for c in text)
            else text
        )
    out, changed = [], False
    for line in text.split("\n"):
        if line and not any(c.isupper() for c in line) and any(c.isalpha() for c in line):
            cased = truecase(line)
            changed = changed or cased != line
            out.append(cased)
        else:
            out.append(line)
    return "\n".join(out) if changed else text
