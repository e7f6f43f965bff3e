"""The spoken form of a prompt: what the synthesiser says and what the aligner aligns, from one function.

:func:`spoken_form` reads a prompt once and returns a :class:`SpokenForm` with

- ``tts_text``: the text every speech synthesiser is given (numbers, symbols, abbreviations and
  Roman numerals already spelled out, one space between spoken words, sentence punctuation kept
  for prosody);
- ``words``: the transcript the aligners align, one :class:`SpokenWord` per spoken word: its
  upper-case form (A-Z and the apostrophe, what a character CTC model emits; pocketsphinx takes
  it lower-cased), the half-open character span ``[char_start, char_end)`` of the ORIGINAL prompt
  that it reads, and its span ``[tts_start, tts_end)`` in ``tts_text``.

Because the synthesiser speaks ``tts_text`` and the aligner aligns ``words`` of the same object,
what is said and what is aligned cannot differ; the character spans map aligned words back to LM
text tokens (whose spans are in the original prompt). The WER/judging normaliser
(:mod:`spiritlens.data.normalize`) lower-cases the same words.

Rules, in order of matching (several cases of each are in ``tests/unit/test_spoken.py``):

- **currency** ``$ € £ ¥ ₹`` before an amount (or ``€ £ ¥ ₹`` after it): ``$5`` five dollars,
  ``$1`` one dollar, ``$5.50`` five dollars and fifty cents, ``$0.50`` fifty cents, ``£2.01``
  two pounds and one penny, ``$3 million`` / ``$3m`` three million dollars, ``$3.5 billion``
  three point five billion dollars, ``€20`` / ``20€`` twenty euros. The unit word spans the
  symbol, the scale word its word, the cents words the ``.50``.
- **decades** ``1990s``, ``1990's`` nineteen nineties; ``'90s``, ``’90s``, ``90s`` nineties;
  ``1900s`` nineteen hundreds (the year reading, made plural).
- **ordinals** ``1st`` first, ``22nd`` twenty-second, ``15th`` fifteenth.
- **numbers**: thousands separators first (``3,000`` three thousand); a bare four-digit integer
  1100-2099 is a year (``1987`` nineteen eighty-seven, ``2005`` two thousand and five, ``1905``
  nineteen oh-five); decimals with "point" and digits one by one (``8.1`` eight point one); a
  ``%`` after a number (``25%`` twenty-five percent, never a year); a minus sign before a number
  after a space (``-5``, ``−5`` minus five); otherwise cardinals as num2words writes them
  ("seven hundred and fifty-three"; ``number_and=False`` drops the "and"). Digits glued to
  letters are read apart (``X11`` X eleven, ``3GS`` three GS).
- ``#`` before a number is "number" (``#1`` number one), after a letter "sharp" (``C#``),
  otherwise "hash"; ``&`` and, ``+`` plus, ``@`` at, ``=`` equals, ``%`` percent, ``°`` degrees,
  ``×`` times.
- **abbreviations**: letters with periods are spelled letter by letter (``U.S.`` U S, ``F.C.``,
  ``S.p.A.``), each letter spanning its own character; ``e.g.`` for example, ``i.e.`` that is;
  ``St.`` Saint before a capitalised word (also ``St`` without a period), else Street; ``Dr.``
  Doctor before a capitalised word, else Drive; ``Mt.`` Mount, ``Ft.`` Fort, ``Jr.`` Junior,
  ``Sr.`` Senior, ``Mr.`` Mister, ``Mrs.`` Missus, ``Ms.`` Miz, ``Prof.`` Professor, ``Inc.``
  Incorporated, ``Ltd.`` Limited, ``Co.`` Company, ``Corp.`` Corporation, ``Bros.`` Brothers,
  ``vs.`` versus, ``etc.`` et cetera, ``Ave.`` Avenue, ``Blvd.`` Boulevard, ``No.`` number
  before a number. A period inside a word is "dot" (``Audible.com`` Audible dot com).
- **Roman numerals in names**: an upper-case numeral right after a capitalised word is read as a
  regnal ordinal, "the" + ordinal, as English says it (``Pius XII`` Pius the twelfth, ``Elizabeth
  I`` Elizabeth the first, values 1-39), or as a cardinal after a word that numbers a series or a
  product (``Final Fantasy III`` Final Fantasy three, ``World War II``, ``OS X``; ``SERIES_WORDS``,
  values 1-99). It is read as letters or a word otherwise: not a canonical numeral (``MIX`` is
  1009, ``CIVIC``, ``ILX``), out of range (``DC``, ``CD``), after a lower-case word (``of I
  ragazzi``: the Italian article). ``I`` is the pronoun after a capitalised function word
  (``Then I``, ``All I``) and before a word that may follow the pronoun (``Henry I was``); the
  numeral only before the end, punctuation, ``of`` or a third-person verb (``Osman I follows``,
  ``Selim I is``, ``Manuel I of Portugal``). Both words of "the twelfth" span the numeral.
- **words**: letters with internal apostrophes of any kind (``'`` ``’`` ``‘`` ``ʼ`` ``′`` `````
  ``´`` ``＇`` ``ʹ``; ``Ghana’s`` GHANA'S); accents folded by NFKD, letters that do not decompose
  mapped by hand (``Søren`` SOREN, ``Straße`` STRASSE); the synthesiser gets the word as written
  (accents kept). Leading and trailing quotes are dropped.
- Hyphens, dashes of every kind, quotes, brackets and other punctuation separate words and are not
  spoken; ``™ ® © ^ ~ | • ·`` are silent marks. Any other symbol, digit form or letter with no
  spoken form raises ``ValueError`` naming it (``unknown="skip"`` instead records it in
  ``skipped``; the WER/judging normaliser uses that for free model output).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field

from spiritlens.spoken.numbers import LETTER_MAP, is_year, spell_number

__all__ = ["SERIES_WORDS", "SpokenForm", "SpokenWord", "spoken_form", "APOSTROPHES"]

APOSTROPHES = "'\u2019\u2018\u02bc\u2032`\u00b4\uff07\u02b9"
_TRANSCRIPT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")
_SILENT_MARKS = frozenset("\u2122\u00ae\u00a9^~|\u2022\u00b7")
_PAUSES = {",": ",", ";": ";", ":": ":", ".": ".", "!": "!", "?": "?", "\u2026": "."}

_CURRENCIES = {  # symbol: (unit, units, minor unit, minor units)
    "$": ("dollar", "dollars", "cent", "cents"),
    "\u20ac": ("euro", "euros", "cent", "cents"),
    "\u00a3": ("pound", "pounds", "penny", "pence"),
    "\u00a5": ("yen", "yen", None, None),
    "\u20b9": ("rupee", "rupees", "paisa", "paise"),
}
_SCALE_ABBREVIATIONS = {"k": "thousand", "m": "million", "bn": "billion"}
_SYMBOL_WORDS = {"&": "and", "+": "plus", "@": "at", "=": "equals", "%": "percent", "\u00b0": "degrees",
                 "\u00d7": "times"}
_ABBREVIATIONS = {
    "mt": "mount", "ft": "fort", "jr": "junior", "sr": "senior", "mr": "mister", "mrs": "missus", "ms": "miz",
    "prof": "professor", "inc": "incorporated", "ltd": "limited", "co": "company", "corp": "corporation",
    "bros": "brothers", "vs": "versus", "etc": "et cetera", "ave": "avenue", "blvd": "boulevard",
    "no": "number",
}
_LATIN = {"e.g.": "for example", "i.e.": "that is"}
# Words after which a Roman numeral counts a series or product (cardinal) rather than a ruler (ordinal).
SERIES_WORDS = frozenset({
    "act", "apollo", "book", "chapter", "episode", "fantasy", "game", "legend", "mark", "mk", "os", "part",
    "phase", "pro", "rocky", "secolo", "season", "star", "super", "type", "vatican", "volume", "vol", "war",
    "bowl", "grand", "league", "world", "edition", "version", "class", "stage", "round", "section", "council",
})
# Capitalised words after which "I" is the pronoun, not the numeral one.
_FUNCTION_WORDS = frozenset({
    "a", "after", "also", "am", "and", "are", "as", "because", "before", "but", "can", "could", "did", "do",
    "had", "have", "here", "how", "if", "is", "maybe", "may", "might", "must", "now", "once", "or", "perhaps",
    "shall", "should", "since", "so", "still", "than", "that", "then", "there", "though", "today", "until",
    "was", "were", "what", "when", "where", "which", "while", "who", "why", "will", "would", "yes", "yesterday",
    "no", "oh", "well", "the", "of", "in", "on", "at", "to", "for", "with", "by", "from", "said", "all", "any",
    "each", "every", "some", "both", "either", "neither", "not", "only", "just", "even", "often", "never",
})

_L = r"[^\W\d_]"
_APOS = "[" + re.escape(APOSTROPHES) + "]"
_NUM = r"\d{1,3}(?:,\d{3})+(?!\d)|\d+"
_RUN = rf"(?:{_L}|[\u0300-\u036f])+"
_PATTERNS = [
    ("latin", r"(?<![\w.])(?i:e\.g\.|i\.e\.)"),
    ("currency", rf"(?P<cur>[$\u20ac\u00a3\u00a5\u20b9])\s?(?P<camt>{_NUM})(?:\.(?P<cfrac>\d+))?"
                 r"(?:\s(?P<cscale>(?i:thousand|million|billion|trillion))\b|(?P<cabbr>(?i:bn|m|k))\b)?"),
    ("currency_after", rf"(?P<pamt>{_NUM})(?:\.(?P<pfrac>\d+))?\s?(?P<pcur>[\u20ac\u00a3\u00a5\u20b9])"),
    ("decade", rf"(?:(?P<dapos>{_APOS})(?P<dshort>\d0)|(?P<dfull>\d{{1,3}}0)){_APOS}?s\b"),
    ("ordinal", rf"(?P<ord>{_NUM})(?P<osuf>(?i:st|nd|rd|th))\b"),
    ("number", rf"(?:(?<![\w.,])(?P<minus>[-\u2212]))?(?P<int>{_NUM})(?:\.(?P<frac>\d+))?(?P<pct>\s?%)?"),
    ("letters", rf"(?<![\w.])(?:{_L}\.){{2,}}"),
    ("abbrev", r"(?<![\w.])(?P<abbr>(?i:st|dr|" + "|".join(sorted(_ABBREVIATIONS, key=len, reverse=True))
               + r"))\.|(?<![\w.])(?P<saint>St)(?=\s+[A-Z])"),
    ("dotted", r"[^\W_]+(?:\.[^\W_]+)+"),
    ("word", rf"{_RUN}(?:{_APOS}{_RUN})*"),
    ("symbol", r"[&+@#=%\u00b0\u00d7]"),
]
_TOKEN_RE = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in _PATTERNS))
_ROMAN_RE = re.compile(r"[IVXLCDM]+")


@dataclass(frozen=True)
class SpokenWord:
    """One spoken word. ``text``: upper case (A-Z and ``'``); ``[char_start, char_end)``: the characters
    of the original prompt it reads; ``[tts_start, tts_end)``: the word in ``SpokenForm.tts_text``;
    ``kind``: word, letter, number, year, ordinal, decade, currency, percent, symbol, abbreviation,
    roman or dot."""

    text: str
    char_start: int
    char_end: int
    tts_start: int = 0
    tts_end: int = 0
    kind: str = "word"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SpokenForm:
    """A prompt in spoken form (see the module docstring): ``tts_text`` for the synthesiser and
    ``words`` for the aligner; ``skipped`` lists ``(char index, character)`` left out under
    ``unknown="skip"``."""

    original: str
    tts_text: str
    words: tuple[SpokenWord, ...]
    skipped: tuple[tuple[int, str], ...] = field(default=())

    @property
    def transcript(self) -> str:
        """The words separated by spaces, upper case (``"PIUS THE TWELFTH"``)."""
        return " ".join(w.text for w in self.words)

    @property
    def labels(self) -> str:
        """The CTC label string, words joined by ``|`` (``"PIUS|THE|TWELFTH"``)."""
        return "|".join(w.text for w in self.words)

    def tts_word(self, index: int) -> str:
        """Word ``index`` as the synthesiser reads it (a slice of ``tts_text``)."""
        word = self.words[index]
        return self.tts_text[word.tts_start:word.tts_end]

    def to_dict(self) -> dict:
        return {"original": self.original, "tts_text": self.tts_text, "labels": self.labels,
                "words": [w.to_dict() for w in self.words], "skipped": [list(s) for s in self.skipped]}


def spoken_form(text: str, *, number_and: bool = True, unknown: str = "error") -> SpokenForm:
    """The spoken form of ``text`` (rules in the module docstring).

    ``number_and``: keep num2words' "and" in numbers ("seven hundred and fifty-three").
    ``unknown``: ``"error"`` raises ``ValueError`` naming every character with no spoken form;
    ``"skip"`` leaves them out and lists them in ``SpokenForm.skipped``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if unknown not in ("error", "skip"):
        raise ValueError(f"unknown={unknown!r}; expected 'error' or 'skip'")
    reader = _Reader(text, number_and)
    reader.read(0, len(text))
    form = reader.result()
    if form.skipped and unknown == "error":
        chars = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in dict.fromkeys(c for _, c in form.skipped))
        raise ValueError(f"text {text!r}: no spoken form for character(s) {chars}")
    return form


class _Reader:
    """Builds the token list of one text: ``(spoken words with original spans and kinds)`` and the gaps."""

    def __init__(self, text: str, number_and: bool):
        self.text = text
        self.number_and = number_and
        # per token: (match start, match end, [(tts word, char start, char end, kind)])
        self.tokens: list[tuple[int, int, list[tuple[str, int, int, str]]]] = []
        self.unknown: list[tuple[int, str]] = []

    # ------------------------------------------------------------------ scanning
    def read(self, start: int, end: int) -> None:
        """Tokens of ``text[start:end]``; characters between tokens must be spaces, punctuation or silent."""
        pos = start
        for m in _TOKEN_RE.finditer(self.text, start, end):
            self._gap(pos, m.start())
            words = getattr(self, f"_{m.lastgroup}")(m)
            if words:
                self.tokens.append((m.start(), m.end(), words))
            pos = m.end()
        self._gap(pos, end)

    def _gap(self, a: int, b: int) -> None:
        for i in range(a, b):
            c = self.text[i]
            if not (c.isspace() or c in _SILENT_MARKS or c in APOSTROPHES or unicodedata.category(c)[0] == "P"):
                self.unknown.append((i, c))

    # -------------------------------------------------------------- token rules
    def _latin(self, m):
        a, b = m.span()
        return [(w, a, b, "abbreviation") for w in _LATIN[m.group().lower()].split()]

    def _currency(self, m):
        return self._money(m, "cur", "camt", "cfrac", m.group("cscale"), m.group("cabbr"), m.span("cabbr"))

    def _currency_after(self, m):
        return self._money(m, "pcur", "pamt", "pfrac", None, None, None)

    def _money(self, m, cur_g, amt_g, frac_g, scale, abbr, abbr_span):
        unit, units, minor, minors = _CURRENCIES[m.group(cur_g)]
        cur_span, amt_span = m.span(cur_g), m.span(amt_g)
        digits, frac = m.group(amt_g).replace(",", ""), m.group(frac_g)
        scale_word, scale_span = None, None
        if scale:
            scale_word, scale_span = scale.lower(), m.span("cscale")
        elif abbr:
            scale_word, scale_span = _SCALE_ABBREVIATIONS[abbr.lower()], abbr_span
        out: list[tuple[str, int, int, str]] = []
        frac_span = (amt_span[1], m.end(frac_g)) if frac is not None else None
        cents = frac is not None and len(frac) == 2 and minor is not None and scale_word is None
        if cents:
            whole = int(digits)
            if whole:  # zero cents are not said: the amount's words read them ("$1.00" one dollar)
                out += self._number_words(digits, amt_span if int(frac) else (amt_span[0], frac_span[1]), "currency")
                out.append((unit if whole == 1 else units, *cur_span, "currency"))
            if int(frac) or not whole:  # "$0.50" fifty cents: the cents' words read the zero too
                cents_span = frac_span if whole else (amt_span[0], frac_span[1])
                if whole:
                    out.append(("and", *cents_span, "currency"))
                out += self._number_words(str(int(frac)), cents_span, "currency")
                out.append((minor if int(frac) == 1 else minors, *cents_span, "currency"))
            return out
        out += self._number_words(digits, amt_span, "currency")
        if frac is not None:
            out += [("point", *frac_span, "currency")] + [
                (w, *frac_span, "currency") for d in frac for w in _split(spell_number(d, year=False))]
        if scale_word:
            out.append((scale_word, *scale_span, "currency"))
        single = digits.lstrip("0") == "1" and frac is None and scale_word is None
        out.append((unit if single else units, *cur_span, "currency"))
        return out

    def _decade(self, m):
        a, b = m.span()
        if m.group("dshort") is not None:
            spoken = spell_number(m.group("dshort"), suffix="s", year=False)
        else:
            spoken = spell_number(m.group("dfull"), suffix="s", year=True)
        return [(w, a, b, "decade") for w in self._finish(_split(spoken))]

    def _ordinal(self, m):
        a, b = m.span()
        spoken = spell_number(m.group("ord").replace(",", ""), suffix=m.group("osuf"))
        return [(w, a, b, "ordinal") for w in self._finish(_split(spoken))]

    def _number(self, m):
        out = []
        if m.group("minus"):
            out.append(("minus", *m.span("minus"), "number"))
        digits, frac, pct = m.group("int").replace(",", ""), m.group("frac"), m.group("pct")
        span = (m.start("int"), m.end("frac") if frac is not None else m.end("int"))
        year = frac is None and not pct and not m.group("minus") and "," not in m.group("int") and is_year(digits)
        spoken = spell_number(digits, fraction=frac, year=year)
        out += [(w, *span, "year" if year else "number") for w in self._finish(_split(spoken))]
        if pct:
            pct_start = m.end("pct") - 1
            out.append(("percent", pct_start, pct_start + 1, "percent"))
        return out

    def _number_words(self, digits: str, span, kind: str):
        return [(w, *span, kind) for w in self._finish(_split(spell_number(digits, year=False)))]

    def _letters(self, m):
        a = m.start()
        return [(ch.upper(), a + i, a + i + 1, "letter") for i, ch in enumerate(m.group()) if ch != "."]

    def _abbrev(self, m):
        if m.group("saint"):
            return [("Saint", *m.span("saint"), "abbreviation")]
        abbr = m.group("abbr")
        a, b = m.span("abbr")
        key = abbr.lower()
        following = self.text[m.end():m.end() + 40]
        capitalised_next = re.match(r"\s+[A-Z]", following) is not None
        if key == "st":
            return [("Saint" if capitalised_next else "Street", a, b, "abbreviation")]
        if key == "dr":
            return [("Doctor" if capitalised_next else "Drive", a, b, "abbreviation")]
        if key == "no" and not re.match(r"\s?\d", following):
            return [(abbr, a, b, "word")]  # the word "No" ending a sentence
        expansion = _ABBREVIATIONS[key]
        if abbr[0].isupper():
            expansion = expansion[0].upper() + expansion[1:]
        return [(w, a, b, "abbreviation") for w in expansion.split()]

    def _dotted(self, m):
        out = []
        parts = list(re.finditer(r"[^\W_]+", m.group()))
        for i, part in enumerate(parts):
            if i:
                dot = m.start() + part.start() - 1
                out.append(("dot", dot, dot + 1, "dot"))
            sub = _Reader(self.text, self.number_and)
            sub.read(m.start() + part.start(), m.start() + part.end())
            self.unknown += sub.unknown
            out += [w for _, _, token in sub.tokens for w in token]
        return out

    def _word(self, m):
        a, b = m.span()
        word = m.group()
        roman = self._roman(m)
        if roman is not None:
            return [(w, a, b, "roman") for w in roman]
        return [(_ascii_apostrophes(word), a, b, "word")]

    def _symbol(self, m):
        a, b = m.span()
        symbol = m.group()
        if symbol == "#":
            after, before = self.text[b:b + 2], self.text[a - 1:a] if a else ""
            spoken = "number" if re.match(r"\s?\d", after) else "sharp" if before.isalpha() else "hash"
        else:
            spoken = _SYMBOL_WORDS[symbol]
        return [(spoken, a, b, "symbol")]

    # ------------------------------------------------------------------- helpers
    def _roman(self, m) -> list[str] | None:
        """Words of a Roman numeral in a name ("the", ordinal) or a series (cardinal); None if not one."""
        word = m.group()
        if not _ROMAN_RE.fullmatch(word):
            return None
        value = _roman_value(word)
        if value is None:
            return None
        previous = self._previous_word(m.start())
        if previous is None or not previous[:1].isupper():
            return None
        after = self.text[m.end():m.end() + 1]
        if after and (after in APOSTROPHES or after == "." and m.end() + 1 < len(self.text)
                      and self.text[m.end() + 1].isalpha()):
            return None
        if previous.lower() in SERIES_WORDS:
            return self._finish(_split(spell_number(str(value), year=False))) if value <= 99 else None
        if value > 39 or (word == "I" and not self._numeral_one(m.end(), previous)):
            return None
        return ["the"] + _split(spell_number(str(value), suffix="th"))

    def _numeral_one(self, end: int, previous: str) -> bool:
        """"I" after a capitalised word is the numeral one unless the word is a function word ("Then I")
        or the next word could follow the pronoun: only the end, punctuation, "of" or a verb in the
        third person ("Osman I follows", not "was") may follow the numeral."""
        if previous.lower() in _FUNCTION_WORDS:
            return False
        following = re.match(rf"(\s*)({_RUN})?", self.text[end:end + 40])
        after = following.group(2)
        if after is None:
            return True
        after = after.lower()
        return after == "of" or (after.endswith("s") and after != "was")

    def _previous_word(self, index: int) -> str | None:
        """The letters word right before ``index`` (only spaces between), else None."""
        m = re.search(rf"({_RUN})(\s+)$", self.text[max(0, index - 60):index])
        return m.group(1) if m else None

    def _finish(self, words: list[str]) -> list[str]:
        return words if self.number_and else [w for w in words if w != "and"]

    # -------------------------------------------------------------------- output
    def result(self) -> SpokenForm:
        tts: list[str] = []
        words: list[SpokenWord] = []
        length, previous_end = 0, 0
        for start, end, token in self.tokens:
            if tts:
                sep = _pause(self.text[previous_end:start]) + " "
                tts.append(sep)
                length += len(sep)
            for j, (spoken, a, b, kind) in enumerate(token):
                if j:
                    tts.append(" ")
                    length += 1
                tts.append(spoken)
                text = _transcript_word(spoken, a, self.unknown)
                if text:
                    words.append(SpokenWord(text, a, b, length, length + len(spoken), kind))
                length += len(spoken)
            previous_end = end
        if tts:
            tts.append(_pause(self.text[previous_end:]))
        return SpokenForm(self.text, "".join(tts), tuple(words), tuple(sorted(set(self.unknown))))


def _split(spoken: str) -> list[str]:
    """Words of an English phrase from num2words (hyphens, commas and spaces separate words)."""
    return [w for w in re.split(r"[^A-Za-z']+", spoken) if w.strip("'")]


def _pause(gap: str) -> str:
    """The sentence punctuation in the gap between two tokens, kept in the TTS text for prosody: the
    first of ``, ; : . ! ? …`` (an ellipsis as ``.``), a dash between spaces as ``,``; else ``""``."""
    for ch in gap:
        if ch in _PAUSES:
            return _PAUSES[ch]
    return "," if re.search(r"\s[-\u2010-\u2015]+\s", gap) else ""


def _ascii_apostrophes(word: str) -> str:
    return "".join("'" if c in APOSTROPHES else c for c in word)


def _transcript_word(spoken: str, start: int, unknown: list[tuple[int, str]]) -> str:
    """Upper-case transcript form: accents folded, apostrophes made ASCII; unfoldable letters go to ``unknown``."""
    out = []
    for i, ch in enumerate(spoken):
        if ch in APOSTROPHES:
            out.append("'")
        elif ch in LETTER_MAP:
            out.append(LETTER_MAP[ch].upper())
        elif unicodedata.combining(ch):
            continue
        else:
            base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c)).upper()
            if base and all(c in _TRANSCRIPT_CHARS for c in base):
                out.append(base)
            else:
                unknown.append((start + i, ch))
    return "".join(out).strip("'")


def _roman_value(numeral: str) -> int | None:
    """The value of a canonical (subtractive-form) Roman numeral, else None (``IIII``, ``IC``, ``CIVIC``)."""
    values = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
    total = 0
    for i, ch in enumerate(numeral):
        v = values[ch]
        total += -v if i + 1 < len(numeral) and values[numeral[i + 1]] > v else v
    return total if 0 < total < 4000 and _to_roman(total) == numeral else None


def _to_roman(value: int) -> str:
    out = []
    for v, s in ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"), (50, "L"),
                 (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        while value >= v:
            out.append(s)
            value -= v
    return "".join(out)
