"""Word lists that let detection work without capital letters, and find names the NER model does not know.

Source: the `web2` word list (Webster's Second New International Dictionary, 1934; public domain, as shipped in
FreeBSD's /usr/share/dict/web2) from the registry package `english-words` (MIT). It is independent of Faker (which
generated the labelled benchmark) and of the demo generator. In it, common words are written in lower case and proper
nouns (given names, places, peoples) capitalised; that is all this module uses:

- `is_common_word`: a lower-case entry (or an inflection of one: plural, past tense, -ing, -ly...), a stop word, or
  one of the few everyday words of today's text the 1934 dictionary lacks (`MODERN_WORDS`);
- `is_proper_noun`: written only capitalised in the dictionary ("Sophie", "Uruguay").

Nothing here is written anywhere; the lists are read once per process (about 0.1 s, ~25 MB).
"""

from __future__ import annotations

from functools import lru_cache

import regex

# Everyday words of current (chat, support, office) text that a 1934 dictionary lacks, so that lower-case text
# does not read them as names. Not names or places.
MODERN_WORDS = frozenset("""
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
""".split())

_SUFFIXES = (  # (suffix, what replaces it) tried in order: inflections and common derivations of a dictionary word
    ("'s", ""), ("’s", ""), ("ies", "y"), ("ied", "y"), ("ier", "y"), ("iest", "y"), ("ily", "y"), ("es", ""),
    ("s", ""), ("ed", ""), ("ed", "e"), ("ing", ""), ("ing", "e"),
    ("ly", ""), ("ness", ""), ("ment", ""), ("ers", ""), ("ings", ""), ("able", ""), ("able", "e"),
    ("ful", ""), ("less", ""), ("ity", ""), ("ization", "ize"), ("isation", "ise"),
)
_WORD = regex.compile(r"\p{L}[\p{L}\p{M}'’]*")
_CHUNK = regex.compile(r"\S+")
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


def load() -> None:
    """Read the lists now (before worker processes fork, so they share them)."""
    common_words()
    proper_nouns()


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
    words = [w for chunk in _CHUNK.finditer(line) if not _NOT_PROSE.search(chunk.group())
             for w in _WORD.finditer(line, chunk.start(), chunk.end())]
    if not words:
        return line
    capital = [False] * len(words)
    for k, match in enumerate(words):
        word = match.group()
        if len(word) == 1:
            capital[k] = word == "i"
            continue
        capital[k] = k == 0 or is_proper_noun(word) or not is_common_word(word)
    for k, match in enumerate(words):  # "szabina j gelencsér": the initial between two names
        if len(match.group()) == 1 and match.group() != "a" and 0 < k < len(words) - 1 and capital[k - 1] and capital[k + 1]:
            capital[k] = True
    chars = list(line)
    for k, match in enumerate(words):
        if capital[k]:
            upper = chars[match.start()].upper()
            if len(upper) == 1:
                chars[match.start()] = upper
    return "".join(chars)


_LINE = regex.compile(r"[^\n]+")


def case_view(text: str) -> str:
    """The text with each line that has letters but no capital truecased (`truecase`); the same text otherwise.
    Offsets are unchanged, so what is found in the view is found at the same place in the text."""
    if not any(c.isupper() for c in text):
        return "\n".join(truecase(line) if line else line for line in text.split("\n")) if any(c.isalpha() for c in text) else text
    out, changed = [], False
    for line in text.split("\n"):
        if line and not any(c.isupper() for c in line) and any(c.isalpha() for c in line):
            cased = truecase(line)
            changed = changed or cased != line
            out.append(cased)
        else:
            out.append(line)
    return "\n".join(out) if changed else text
