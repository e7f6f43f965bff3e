"""Text normalisation shared by the WER check and the answer judge (one place, one rule).

:func:`normalize_words` reads the text with :func:`spiritlens.spoken.form.spoken_form`, the same rules
that make the text given to the speech synthesiser and the transcript given to the aligner
(numbers, years, decades, ordinals, currency, percent, symbols, Roman numerals in names,
abbreviations, apostrophes, accents folded), then:

1. lower case; characters with no spoken form are left out (``unknown="skip"``: model output and
   ASR hypotheses are free text);
2. letters spelled from one dotted abbreviation are joined ("U.S." -> "us", "U.S.A." -> "usa"), so
   "U.S.", "US" and "us" compare equal;
3. optionally (the judge, not WER) the articles "a", "an", "the" are dropped.

So "1999" and "nineteen ninety-nine", "$5.50" and "five dollars and fifty cents" normalise to the
same words.
"""

from __future__ import annotations

from spiritlens.spoken.form import spoken_form

__all__ = ["NORMALISATION", "normalize_text", "normalize_words"]

NORMALISATION = (
    "spiritlens.spoken.form.spoken_form words (numbers spelled with num2words: years, decades, ordinals, currency, "
    "percent; symbols, "
    "Roman numerals in names, abbreviations spelled out; accents folded); lower case; unspeakable characters "
    "left out; letters of a dotted abbreviation joined (U.S. -> us)"
)

_ARTICLES = frozenset({"a", "an", "the"})


def normalize_words(text: str, *, drop_articles: bool = False) -> list[str]:
    """Normalise ``text`` as described in the module docstring and split it into words."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    words: list[str] = []
    previous = None
    for word in spoken_form(text, unknown="skip").words:
        if word.kind == "letter" and previous is not None and previous.kind == "letter" \
                and previous.char_end + 1 == word.char_start:
            words[-1] += word.text.lower()
        else:
            words.append(word.text.lower())
        previous = word
    if drop_articles:
        words = [w for w in words if w not in _ARTICLES]
    return words


def normalize_text(text: str, *, drop_articles: bool = False) -> str:
    """:func:`normalize_words` joined by single spaces."""
    return " ".join(normalize_words(text, drop_articles=drop_articles))
