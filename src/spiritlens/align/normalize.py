"""The transcript a character CTC model aligns: the words of :func:`spiritlens.spoken.form.spoken_form`.

The CTC alphabet (that of facebook/hubert-large-ls960-ft) is upper-case A-Z and the apostrophe, with ``|`` between
words; ``normalize_transcript(text).labels`` is that label string. Every word keeps the half-open
character span ``[char_start, char_end)`` of the original transcript it reads, so aligned words map
back to LM text tokens. The rules (numbers, currency, decades, Roman numerals, abbreviations,
symbols, apostrophes, accents) are those of :mod:`spiritlens.spoken.form`, the same text the speech
synthesiser is given, so what is aligned is what was said.
"""

from __future__ import annotations

from spiritlens.spoken.form import SpokenForm, SpokenWord, spoken_form

__all__ = ["ALPHABET", "NormalizedText", "SpokenWord", "WORD_SEPARATOR", "normalize_transcript"]

WORD_SEPARATOR = "|"
ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")
NormalizedText = SpokenForm


def normalize_transcript(text: str, *, number_and: bool = True) -> SpokenForm:
    """The spoken form of ``text`` (:func:`spiritlens.spoken.form.spoken_form`); raises ``ValueError`` naming
    any character with no spoken form, ``TypeError`` if ``text`` is not a str."""
    if not isinstance(text, str):
        raise TypeError(f"transcript must be a str, got {type(text).__name__}")
    return spoken_form(text, number_and=number_and)
