"""Spoken form of text: the words a synthesiser says and an aligner hears (one rule table), espeak-ng's binding."""

from spiritlens.spoken.form import SERIES_WORDS, SpokenForm, SpokenWord, spoken_form, APOSTROPHES

__all__ = [
    "SERIES_WORDS",
    "SpokenForm",
    "SpokenWord",
    "spoken_form",
    "APOSTROPHES",
]
