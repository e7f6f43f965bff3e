"""Text -> spoken form for a character CTC model, keeping character spans in the original text.

The CTC alphabet (SPEECH.md section 8) is upper-case A-Z and the apostrophe, with ``|`` between
words. Every normalised ("spoken") word remembers the half-open character span ``[char_start,
char_end)`` of the ORIGINAL transcript it was read from, so aligned words map back to LM text
tokens given by their own character spans:

- a number gives several spoken words that share the number's span
  (``"1987"`` -> ``NINETEEN``, ``EIGHTY``, ``SEVEN``, all ``[0, 4)``);
- an abbreviation with periods gives one word per letter, each with its letter's span
  (``"U.S."`` -> ``U`` ``[0, 1)``, ``S`` ``[2, 3)``);
- symbols read aloud (``%`` ``&`` ``$`` ``+`` ``@``) give words spanning the symbol
  (a number's ``%`` and ``$`` belong to the number's span).

Rules, in order of matching: numbers (thousands separators stripped first; ``2nd`` ordinal;
a bare 4-digit integer 1100-2099 read as a year; decimals with POINT; decades ``1980s``/``'90s``;
``$`` before and ``%`` after), abbreviations with periods (``U.S.``; a few titles such as
``Dr.``/``St.`` expanded), words (letters with internal apostrophes; accents folded by NFKD,
non-decomposing letters mapped by hand), the symbols above. Hyphens and all other punctuation
separate words and are dropped. A letter or symbol with no spoken form raises ``ValueError``
naming it.

Numbers are read by ``num2words`` as it writes them ("seven hundred and fifty-three");
``number_and=False`` drops the "and" for voices that do not say it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, asdict

from ..numbers import LETTER_MAP, spell_number

__all__ = ["SpokenWord", "NormalizedText", "normalize_transcript", "WORD_SEPARATOR", "ALPHABET"]

WORD_SEPARATOR = "|"
ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")

# Symbols read aloud when they stand on their own.
_SYMBOL_WORDS = {"&": "and", "%": "percent", "$": "dollars", "+": "plus", "@": "at"}
# Abbreviations with a period read as a word rather than letter by letter.
_TITLE_WORDS = {
    "dr": "doctor", "mr": "mister", "mrs": "missus", "ms": "miss", "st": "saint", "mt": "mount",
    "jr": "junior", "sr": "senior", "vs": "versus", "ft": "fort", "prof": "professor",
}
_APOSTROPHES = "'\u2019\u2018\u02bc"

_NUMBER = (
    r"(?P<dollar>\$\s?)?"
    r"(?P<decade_apos>['\u2019](?=\d\ds\b))?"
    r"(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)"
    r"(?:\.(?P<frac>\d+))?"
    r"(?P<suffix>(?<=1)st|(?<=2)nd|(?<=3)rd|th|s\b)?"
    r"(?P<percent>\s?%)?"
)
_ABBREV = r"(?P<letters>(?<![^\W\d_])(?:[^\W\d_]\.){2,})|(?P<title>\b(?:" + "|".join(
    sorted(_TITLE_WORDS, key=len, reverse=True)) + r")\.)"
_WORD = r"(?P<word>(?:[^\W\d_]|[\u0300-\u036f])+(?:[" + _APOSTROPHES + r"](?:[^\W\d_]|[\u0300-\u036f])+)*)"
_SYMBOL = r"(?P<symbol>[&%$+@])"
_TOKEN_RE = re.compile("|".join([_NUMBER, _ABBREV, _WORD, _SYMBOL]), re.IGNORECASE)


@dataclass(frozen=True)
class SpokenWord:
    """One normalised word and the character span ``[char_start, char_end)`` of the original text."""

    text: str
    char_start: int
    char_end: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class NormalizedText:
    """A transcript in spoken form: ``words`` in order; ``labels`` is ``"|".join(words)``."""

    original: str
    words: tuple[SpokenWord, ...]

    @property
    def labels(self) -> str:
        """The CTC label string, e.g. ``"THE|CAPITAL"``."""
        return WORD_SEPARATOR.join(w.text for w in self.words)

    def to_dict(self) -> dict:
        return {"original": self.original, "labels": self.labels, "words": [w.to_dict() for w in self.words]}


def normalize_transcript(text: str, *, number_and: bool = True) -> NormalizedText:
    """Normalise ``text`` for a character CTC model (rules in the module docstring).

    Returns a ``NormalizedText`` whose words carry their character spans in ``text``.
    Raises ``ValueError`` naming any letter or symbol that has no spoken form.
    """
    if not isinstance(text, str):
        raise TypeError(f"transcript must be a str, got {type(text).__name__}")
    words: list[SpokenWord] = []
    pos = 0
    unmapped: list[str] = []
    for m in _TOKEN_RE.finditer(text):
        unmapped += _unspoken_symbols(text[pos:m.start()])
        pos = m.end()
        start, end = m.span()
        if m.group("int") is not None:
            spoken = _read_number(m, number_and)
            words += [SpokenWord(w, start, end) for w in spoken]
        elif m.group("letters") is not None:
            for i, ch in enumerate(m.group("letters")):
                if ch != ".":
                    words += [SpokenWord(w, start + i, start + i + 1) for w in _fold_word(ch, unmapped)]
        elif m.group("title") is not None:
            words.append(SpokenWord(_TITLE_WORDS[m.group("title")[:-1].lower()].upper(), start, end - 1))
        elif m.group("word") is not None:
            words += [SpokenWord(w, start, end) for w in _fold_word(m.group("word"), unmapped)]
        else:
            words += [SpokenWord(w, start, end) for w in _split_words(_SYMBOL_WORDS[m.group("symbol")])]
    unmapped += _unspoken_symbols(text[pos:])
    if unmapped:
        chars = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in dict.fromkeys(unmapped))
        raise ValueError(f"transcript {text!r}: no spoken form for character(s) {chars}")
    return NormalizedText(original=text, words=tuple(words))


def _split_words(spoken: str) -> list[str]:
    """Upper-case words of an English phrase; hyphens, commas and spaces separate words."""
    return [w for w in re.split(r"[^A-Z']+", spoken.upper()) if w.strip("'")]


def _fold_word(word: str, unmapped: list[str]) -> list[str]:
    """Fold accents (NFKD, combining marks dropped, hand map for the rest) and upper-case.

    Characters that fold to nothing in A-Z are appended to ``unmapped``. Leading and trailing
    apostrophes (quotes) are dropped; internal ones are kept (``GHANA'S``).
    """
    out = []
    for ch in word:
        if ch in _APOSTROPHES:
            out.append("'")
            continue
        if ch in LETTER_MAP:
            out.append(LETTER_MAP[ch].upper())
            continue
        base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c)).upper()
        if base and all(c in ALPHABET for c in base):
            out.append(base)
        elif unicodedata.combining(ch):
            continue
        else:
            unmapped.append(ch)
    folded = "".join(out).strip("'")
    return [folded] if folded else []


def _unspoken_symbols(gap: str) -> list[str]:
    """Characters between matched tokens that would be spoken but have no rule (symbols, digits)."""
    return [c for c in gap if unicodedata.category(c)[0] in "SN" and c not in "-^`~|_\u2013\u2014"]


def _read_number(m: re.Match, number_and: bool) -> list[str]:
    """Spoken words for a number match (see the module docstring for the rules)."""
    digits = m.group("int").replace(",", "")
    value = int(digits)
    frac, suffix = m.group("frac"), (m.group("suffix") or "").lower()
    if m.group("decade_apos") and not suffix:
        suffix = "s"
    year = "," not in m.group("int") and not m.group("percent") and not m.group("dollar")
    spoken = spell_number(digits, fraction=frac, suffix=suffix, year=year or suffix == "s")
    words = _split_words(spoken)
    if not number_and:
        words = [w for w in words if w != "AND"]
    if m.group("percent"):
        words.append("PERCENT")
    if m.group("dollar"):
        words.append("DOLLAR" if value == 1 and frac is None else "DOLLARS")
    return words
