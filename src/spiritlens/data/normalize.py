"""Text normalisation shared by the WER check and the answer judge (one place, one rule).

:func:`normalize_words` applies, in order:

1. Accents: NFKD, combining marks dropped ("Kyōto" -> "Kyoto"); letters that do not decompose
   are mapped by hand (ø -> o, æ -> ae, ß -> ss, ł -> l, œ -> oe, đ -> d, þ -> th).
2. Lower case.
3. Numbers spelled out with num2words: thousands separators removed first ("3,000" -> 3000);
   ordinals ("2nd" -> "second"); decades ("1980s" -> "nineteen eighties"); four-digit integers
   1100-2099 read as years ("1999" -> "nineteen ninety-nine"); decimals with "point"; other
   integers as cardinals ("775" -> "seven hundred and seventy-five"). Digits glued to letters
   are split off ("X11" -> "x eleven").
4. Symbols: "&" -> "and", "%" -> "percent"; dotted abbreviations join ("U.S." -> "us",
   "U.S.A." -> "usa"); apostrophes inside words are kept ("moscow's"); every other punctuation
   mark, hyphens and other periods included, becomes a space ("ninety-nine" -> "ninety nine",
   "Amazon.com" -> "amazon com").
5. Optionally (the judge, not WER) the articles "a", "an", "the" are dropped.
6. Whitespace collapsed; the result is a list of words.

So "1999" and "nineteen ninety-nine" normalise to the same words.
"""

from __future__ import annotations

import re

from spiritlens.numbers import spell_number, strip_accents

__all__ = ["NORMALISATION", "normalize_text", "normalize_words"]

NORMALISATION = (
    "NFKD accent stripping; lower case; numbers spelled out with num2words (years, ordinals, decades, "
    "decimals, cardinals); '&'->'and', '%'->'percent'; dotted abbreviations joined (U.S. -> us); other "
    "punctuation, hyphens and periods -> space; whitespace collapsed"
)

_ARTICLES = frozenset({"a", "an", "the"})
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_ABBREVIATION = re.compile(r"\b(?:[^\W\d_]\.){2,}")
_NUMBER = re.compile(r"(\d+)(st|nd|rd|th)\b|(\d*0)s\b|(\d+)\.(\d+)|(\d+)")


def _spell_number(match: re.Match) -> str:
    ordinal, suffix, decade, whole, fraction, integer = match.groups()
    if suffix:
        words = spell_number(ordinal, suffix=suffix)
    elif decade:
        words = spell_number(decade, suffix="s")
    elif fraction:
        words = spell_number(whole, fraction=fraction)
    else:
        words = spell_number(integer)
    return f" {words} "


def normalize_words(text: str, *, drop_articles: bool = False) -> list[str]:
    """Normalise ``text`` as described in the module docstring and split it into words."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    text = strip_accents(text).lower()
    text = _THOUSANDS.sub("", text)
    text = _NUMBER.sub(_spell_number, text)
    text = text.replace("&", " and ").replace("%", " percent ")
    text = _ABBREVIATION.sub(lambda m: m.group(0).replace(".", "") + " ", text)
    text = re.sub(r"[^\w\s']|_", " ", text)
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    words = text.split()
    if drop_articles:
        words = [w for w in words if w not in _ARTICLES]
    return words


def normalize_text(text: str, *, drop_articles: bool = False) -> str:
    """:func:`normalize_words` joined by single spaces."""
    return " ".join(normalize_words(text, drop_articles=drop_articles))
