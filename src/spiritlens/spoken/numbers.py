"""How numbers and non-ASCII letters are read aloud (num2words spellings, accent folding).

Used by :mod:`spiritlens.spoken.form`, the one spoken form behind the synthesiser's text, the aligners'
transcript and the WER/judging normaliser, so a number is spelled the same way everywhere.
"""

from __future__ import annotations

import re
import unicodedata

# Letters NFKD does not decompose into an ASCII base letter.
LETTER_MAP = {
    "ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D",
    "þ": "th", "Þ": "TH", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ß": "ss", "ẞ": "SS",
    "ı": "i", "ħ": "h", "Ħ": "H", "ŋ": "ng", "Ŋ": "NG", "ŧ": "t", "Ŧ": "T",
}
_LETTER_TABLE = str.maketrans(LETTER_MAP)


def strip_accents(text: str) -> str:
    """Hand-mapped letters (ø -> o, ß -> ss, ...), then NFKD with combining marks dropped (Kyōto -> Kyoto)."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_LETTER_TABLE))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def is_year(digits: str) -> bool:
    """A bare four-digit integer from 1100 to 2099 is read as a year ("1987" -> nineteen eighty-seven)."""
    return len(digits) == 4 and digits.isdigit() and 1100 <= int(digits) <= 2099


def spell_number(digits: str, *, fraction: str | None = None, suffix: str = "", year: bool = True) -> str:
    """English words (lower case, num2words' spelling) for the number ``digits`` (no separators).

    ``fraction``: digits after the point, read one by one ("2.50" -> two point five zero);
    ``suffix``: "st"/"nd"/"rd"/"th" for an ordinal, "s" for a decade ("1980s" -> nineteen eighties);
    ``year``: whether a year reading is allowed (not after "$" or before "%").
    """
    from num2words import num2words

    value = int(digits)
    suffix = suffix.lower()
    if fraction is not None:
        return num2words(value) + " point " + " ".join(num2words(int(d)) for d in fraction)
    if suffix in ("st", "nd", "rd", "th"):
        return num2words(value, to="ordinal")
    words = num2words(value, to="year") if year and (is_year(digits) or (suffix == "s" and len(digits) == 4)) \
        else num2words(value)
    if suffix == "s":
        words = re.sub(r"([a-z]+)$", lambda m: m.group(1)[:-1] + "ies" if m.group(1).endswith("y")
                       else m.group(1) + "s", words)
    return words
