"""Transcript normalisation for character CTC: spoken forms and character spans in the original text."""

import pytest

from spiritlens.align import normalize_transcript

CASES = [
    # (transcript, expected CTC labels, expected original substrings per spoken word)
    ("The capital of France is", "THE|CAPITAL|OF|FRANCE|IS", ["The", "capital", "of", "France", "is"]),
    ("born in 1987", "BORN|IN|NINETEEN|EIGHTY|SEVEN", ["born", "in", "1987", "1987", "1987"]),
    ("in 2000", "IN|TWO|THOUSAND", ["in", "2000", "2000"]),
    ("3,000 people", "THREE|THOUSAND|PEOPLE", ["3,000", "3,000", "people"]),
    ("1,250,000", "ONE|MILLION|TWO|HUNDRED|AND|FIFTY|THOUSAND", ["1,250,000"] * 7),
    ("25% of", "TWENTY|FIVE|PERCENT|OF", ["25%", "25%", "25%", "of"]),
    ("the 2nd and 21st", "THE|SECOND|AND|TWENTY|FIRST", ["the", "2nd", "and", "21st", "21st"]),
    ("the 1980s", "THE|NINETEEN|EIGHTIES", ["the", "1980s", "1980s"]),
    ("3.14", "THREE|POINT|ONE|FOUR", ["3.14"] * 4),
    ("$5", "FIVE|DOLLARS", ["$5"] * 2),
    ("753", "SEVEN|HUNDRED|AND|FIFTY|THREE", ["753"] * 5),
    ("the U.S. army", "THE|U|S|ARMY", ["the", "U", "S", "army"]),
    ("Dr. Smith of St. Louis", "DOCTOR|SMITH|OF|SAINT|LOUIS", ["Dr", "Smith", "of", "St", "Louis"]),
    ("Ghana's capital", "GHANA'S|CAPITAL", ["Ghana's", "capital"]),
    ("Ghana\u2019s", "GHANA'S", ["Ghana\u2019s"]),
    ("'quoted'", "QUOTED", ["quoted"]),
    ("Kyōto, Søren Kierkegaard, Zürich", "KYOTO|SOREN|KIERKEGAARD|ZURICH", ["Kyōto", "Søren", "Kierkegaard", "Zürich"]),
    ("Kyo\u0304to", "KYOTO", ["Kyo\u0304to"]),  # already decomposed (NFD)
    ("Łódź & Straße", "LODZ|AND|STRASSE", ["Łódź", "&", "Straße"]),
    ("AT&T", "AT|AND|T", ["AT", "&", "T"]),
    ("Jean-Paul Sartre!", "JEAN|PAUL|SARTRE", ["Jean", "Paul", "Sartre"]),
]


@pytest.mark.parametrize("text,labels,originals", CASES)
def test_normalize_table(text, labels, originals):
    norm = normalize_transcript(text)
    assert norm.labels == labels
    assert [text[w.char_start:w.char_end] for w in norm.words] == originals


def test_spans_are_exact_offsets():
    text = "In 1987, Zürich hosted 3,000 guests."
    spans = [(w.text, w.char_start, w.char_end) for w in normalize_transcript(text).words]
    assert spans == [("IN", 0, 2), ("NINETEEN", 3, 7), ("EIGHTY", 3, 7), ("SEVEN", 3, 7), ("ZURICH", 9, 15),
                     ("HOSTED", 16, 22), ("THREE", 23, 28), ("THOUSAND", 23, 28), ("GUESTS", 29, 35)]


def test_number_and_can_be_dropped():
    assert normalize_transcript("753", number_and=False).labels == "SEVEN|HUNDRED|FIFTY|THREE"


@pytest.mark.parametrize("text,bad", [("Москва", "'М' (U+041C)"), ("price €5", "'€' (U+20AC)"), ("北京", "'北'")])
def test_unmappable_characters_are_named(text, bad):
    with pytest.raises(ValueError, match="no spoken form for character") as err:
        normalize_transcript(text)
    assert bad in str(err.value)
