"""The spoken form: one table per category (text -> transcript words and the original characters each
reads), the TTS text, errors for unspeakable symbols, and a brute-force check over every Known prompt."""

import json
import re
import unicodedata

import pytest

from spiritlens.align import normalize_transcript
from spiritlens.spoken.numbers import LETTER_MAP
from spiritlens.spoken.form import APOSTROPHES, spoken_form

# (text, transcript, original characters each word reads)
TABLE = {
    "plain words and accents": [
        ("The capital of France is", "THE CAPITAL OF FRANCE IS", ["The", "capital", "of", "France", "is"]),
        ("Kyōto, Søren Kierkegaard, Zürich", "KYOTO SOREN KIERKEGAARD ZURICH", ["Kyōto", "Søren", "Kierkegaard", "Zürich"]),
        ("Kyo\u0304to", "KYOTO", ["Kyo\u0304to"]),  # already decomposed (NFD)
        ("Łódź & Straße", "LODZ AND STRASSE", ["Łódź", "&", "Straße"]),
        ("Jean-Paul Sartre!", "JEAN PAUL SARTRE", ["Jean", "Paul", "Sartre"]),
        ("Passer à l'acte", "PASSER A L'ACTE", ["Passer", "à", "l'acte"]),
    ],
    "apostrophes and quotes": [
        ("Ghana's capital", "GHANA'S CAPITAL", ["Ghana's", "capital"]),
        ("Ghana\u2019s", "GHANA'S", ["Ghana\u2019s"]),
        ("Ghana\u02bcs O\u2018Brien", "GHANA'S O'BRIEN", ["Ghana\u02bcs", "O\u2018Brien"]),
        ("Rock \uff07n\uff07 roll, it\u2032s", "ROCK N ROLL IT'S", ["Rock", "n", "roll", "it\u2032s"]),
        ("'quoted' \u201csmart\u201d \u00abguillemets\u00bb \u201elow\u201c", "QUOTED SMART GUILLEMETS LOW",
         ["quoted", "smart", "guillemets", "low"]),
        ("L'Aurore, D'Qwell Jackson", "L'AURORE D'QWELL JACKSON", ["L'Aurore", "D'Qwell", "Jackson"]),
    ],
    "dashes": [
        ("Sleater-Kinney", "SLEATER KINNEY", ["Sleater", "Kinney"]),
        ("Paris\u2013Rome \u2014 Berlin \u2015 Oslo\u2010Bergen\u2011Trondheim\u2012Bodø",
         "PARIS ROME BERLIN OSLO BERGEN TRONDHEIM BODO",
         ["Paris", "Rome", "Berlin", "Oslo", "Bergen", "Trondheim", "Bodø"]),
        ("B-29 Superfortress", "B TWENTY NINE SUPERFORTRESS", ["B", "29", "29", "Superfortress"]),
        ("it fell to \u22125 and -3", "IT FELL TO MINUS FIVE AND MINUS THREE",
         ["it", "fell", "to", "\u2212", "5", "and", "-", "3"]),
    ],
    "numbers": [
        ("LGA 775", "LGA SEVEN HUNDRED AND SEVENTY FIVE", ["LGA"] + ["775"] * 5),
        ("3,000 people", "THREE THOUSAND PEOPLE", ["3,000", "3,000", "people"]),
        ("1,250,000", "ONE MILLION TWO HUNDRED AND FIFTY THOUSAND", ["1,250,000"] * 7),
        ("Windows Phone 8.1", "WINDOWS PHONE EIGHT POINT ONE", ["Windows", "Phone", "8.1", "8.1", "8.1"]),
        ("3.14", "THREE POINT ONE FOUR", ["3.14"] * 4),
        ("Chennai 600028", "CHENNAI SIX HUNDRED THOUSAND AND TWENTY EIGHT", ["Chennai"] + ["600028"] * 6),
        ("X11 and iPhone 3GS, iPhone 4s", "X ELEVEN AND IPHONE THREE GS IPHONE FOUR S",
         ["X", "11", "and", "iPhone", "3", "GS", "iPhone", "4", "s"]),
    ],
    "years": [
        ("born in 1987", "BORN IN NINETEEN EIGHTY SEVEN", ["born", "in", "1987", "1987", "1987"]),
        ("in 2000", "IN TWO THOUSAND", ["in", "2000", "2000"]),
        ("2005 Australian Open", "TWO THOUSAND AND FIVE AUSTRALIAN OPEN", ["2005"] * 4 + ["Australian", "Open"]),
        ("founded 1905 and 2011", "FOUNDED NINETEEN OH FIVE AND TWENTY ELEVEN",
         ["founded", "1905", "1905", "1905", "and", "2011", "2011"]),
        ("4096 bytes", "FOUR THOUSAND AND NINETY SIX BYTES", ["4096"] * 5 + ["bytes"]),  # not a year
    ],
    "decades": [
        ("the early 1980s", "THE EARLY NINETEEN EIGHTIES", ["the", "early", "1980s", "1980s"]),
        ("the 1990's", "THE NINETEEN NINETIES", ["the", "1990's", "1990's"]),
        ("the '90s and \u201990s", "THE NINETIES AND NINETIES", ["the", "'90s", "and", "\u201990s"]),
        ("in the 90s", "IN THE NINETIES", ["in", "the", "90s"]),
        ("the 1900s and 2000s", "THE NINETEEN HUNDREDS AND TWO THOUSANDS", ["the", "1900s", "1900s", "and", "2000s", "2000s"]),
        ("the 830s", "THE EIGHT HUNDRED AND THIRTIES", ["the"] + ["830s"] * 4),
    ],
    "ordinals": [
        ("the 2nd and 21st", "THE SECOND AND TWENTY FIRST", ["the", "2nd", "and", "21st", "21st"]),
        ("Hugh Cairns, 1st Earl", "HUGH CAIRNS FIRST EARL", ["Hugh", "Cairns", "1st", "Earl"]),
        ("the late 15th century", "THE LATE FIFTEENTH CENTURY", ["the", "late", "15th", "century"]),
        ("103rd and 12TH", "ONE HUNDRED AND THIRD AND TWELFTH", ["103rd"] * 4 + ["and", "12TH"]),
    ],
    "currency": [
        ("$5", "FIVE DOLLARS", ["5", "$"]),
        ("$1 and $1.00", "ONE DOLLAR AND ONE DOLLAR", ["1", "$", "and", "1.00", "$"]),
        ("$5.50", "FIVE DOLLARS AND FIFTY CENTS", ["5", "$", ".50", ".50", ".50"]),
        ("$0.50", "FIFTY CENTS", ["0.50", "0.50"]),
        ("£2.01", "TWO POUNDS AND ONE PENNY", ["2", "£", ".01", ".01", ".01"]),
        ("$3 million", "THREE MILLION DOLLARS", ["3", "million", "$"]),
        ("$3m and $2bn", "THREE MILLION DOLLARS AND TWO BILLION DOLLARS", ["3", "m", "$", "and", "2", "bn", "$"]),
        ("$3.5 billion", "THREE POINT FIVE BILLION DOLLARS", ["3", ".5", ".5", "billion", "$"]),
        ("€20 or 20 € or 20€", "TWENTY EUROS OR TWENTY EUROS OR TWENTY EUROS", ["20", "€", "or", "20", "€", "or", "20", "€"]),
        ("¥100", "ONE HUNDRED YEN", ["100", "100", "¥"]),
        ("$1,500", "ONE THOUSAND FIVE HUNDRED DOLLARS", ["1,500"] * 4 + ["$"]),
    ],
    "percent": [
        ("25% of", "TWENTY FIVE PERCENT OF", ["25", "25", "%", "of"]),
        ("3.5 %", "THREE POINT FIVE PERCENT", ["3.5", "3.5", "3.5", "%"]),
        ("1999%", "ONE THOUSAND NINE HUNDRED AND NINETY NINE PERCENT", ["1999"] * 7 + ["%"]),  # never a year
        ("% alone", "PERCENT ALONE", ["%", "alone"]),
    ],
    "symbols": [
        ("#1 hit", "NUMBER ONE HIT", ["#", "1", "hit"]),
        ("C# and F#", "C SHARP AND F SHARP", ["C", "#", "and", "F", "#"]),
        ("AT&T", "AT AND T", ["AT", "&", "T"]),
        ("Smith & Wesson", "SMITH AND WESSON", ["Smith", "&", "Wesson"]),
        ("C++ @home 2+2=4", "C PLUS PLUS AT HOME TWO PLUS TWO EQUALS FOUR",
         ["C", "+", "+", "@", "home", "2", "+", "2", "=", "4"]),
        ("Windows\u00ae 30\u00b0", "WINDOWS THIRTY DEGREES", ["Windows", "30", "\u00b0"]),
    ],
    "abbreviations": [
        ("the U.S. army", "THE U S ARMY", ["the", "U", "S", "army"]),
        ("Fluminense F.C. and S.p.A.", "FLUMINENSE F C AND S P A", ["Fluminense", "F", "C", "and", "S", "p", "A"]),
        ("Dr. Smith of St. Louis", "DOCTOR SMITH OF SAINT LOUIS", ["Dr", "Smith", "of", "St", "Louis"]),
        ("St Patrick's Athletic", "SAINT PATRICK'S ATHLETIC", ["St", "Patrick's", "Athletic"]),
        ("Baker St. and Mulholland Dr.", "BAKER STREET AND MULHOLLAND DRIVE", ["Baker", "St", "and", "Mulholland", "Dr"]),
        ("Mt. Fuji, Martin Luther King Jr.", "MOUNT FUJI MARTIN LUTHER KING JUNIOR", ["Mt", "Fuji", "Martin", "Luther", "King", "Jr"]),
        ("Bandai Co., Ltd. and Apple Inc.", "BANDAI COMPANY LIMITED AND APPLE INCORPORATED",
         ["Bandai", "Co", "Ltd", "and", "Apple", "Inc"]),
        ("Mario Bros. vs. Kong etc.", "MARIO BROTHERS VERSUS KONG ET CETERA", ["Mario", "Bros", "vs", "Kong", "etc", "etc"]),
        ("No. 5 but No.", "NUMBER FIVE BUT NO", ["No", "5", "but", "No"]),
        ("e.g. this, i.e. that", "FOR EXAMPLE THIS THAT IS THAT", ["e.g."] * 2 + ["this"] + ["i.e."] * 2 + ["that"]),
        ("Audible.com and X11.app", "AUDIBLE DOT COM AND X ELEVEN DOT APP",
         ["Audible", ".", "com", "and", "X", "11", ".", "app"]),
    ],
    "roman numerals": [
        ("Pius XII, whose position", "PIUS THE TWELFTH WHOSE POSITION", ["Pius", "XII", "XII", "whose", "position"]),
        ("John XXIII holds", "JOHN THE TWENTY THIRD HOLDS", ["John", "XXIII", "XXIII", "XXIII", "holds"]),
        ("Muawiyah I is", "MUAWIYAH THE FIRST IS", ["Muawiyah", "I", "I", "is"]),
        ("Louis XVII of France", "LOUIS THE SEVENTEENTH OF FRANCE", ["Louis", "XVII", "XVII", "of", "France"]),
        ("Final Fantasy III", "FINAL FANTASY THREE", ["Final", "Fantasy", "III"]),
        ("World War II and OS X Yosemite", "WORLD WAR TWO AND OS TEN YOSEMITE",
         ["World", "War", "II", "and", "OS", "X", "Yosemite"]),
        ("Then I said And I", "THEN I SAID AND I", ["Then", "I", "said", "And", "I"]),  # the pronoun
        ("Henry I was king, All I want", "HENRY I WAS KING ALL I WANT", ["Henry", "I", "was", "king", "All", "I", "want"]),
        ("Selim I is, Osman I follows, Manuel I of Portugal, Elizabeth I.",
         "SELIM THE FIRST IS OSMAN THE FIRST FOLLOWS MANUEL THE FIRST OF PORTUGAL ELIZABETH THE FIRST",
         ["Selim", "I", "I", "is", "Osman", "I", "I", "follows", "Manuel", "I", "I", "of", "Portugal", "Elizabeth",
          "I", "I"]),
        ("The language of I ragazzi", "THE LANGUAGE OF I RAGAZZI", ["The", "language", "of", "I", "ragazzi"]),
        ("Super Audio CD, DC Comics, MIX FM, Honda CIVIC, Acura ILX",
         "SUPER AUDIO CD DC COMICS MIX FM HONDA CIVIC ACURA ILX",
         ["Super", "Audio", "CD", "DC", "Comics", "MIX", "FM", "Honda", "CIVIC", "Acura", "ILX"]),
        ("Fluminense F.C. and L'Histoire", "FLUMINENSE F C AND L'HISTOIRE", ["Fluminense", "F", "C", "and", "L'Histoire"]),
        ("Pius IIII", "PIUS IIII", ["Pius", "IIII"]),  # not canonical
    ],
}
CASES = [(category, *case) for category, cases in TABLE.items() for case in cases]


@pytest.mark.parametrize("category,text,transcript,originals", CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_spoken_form_table(category, text, transcript, originals):
    form = spoken_form(text)
    assert form.transcript == transcript
    assert [text[w.char_start:w.char_end] for w in form.words] == originals
    _check_tts(form)


def test_every_category_has_several_cases():
    assert all(len(cases) >= 4 for cases in TABLE.values())


@pytest.mark.parametrize("text,tts", [
    ("Pius XII, whose position is that of a \"superior\"", "Pius the twelfth, whose position is that of a superior"),
    ("In 1987, Zürich hosted 3,000 guests.", "In nineteen eighty seven, Zürich hosted three thousand guests."),
    ("$5.50 for Ghana\u2019s U.S. office?", "five dollars and fifty cents for Ghana's U S office?"),
    ("Paris \u2014 Rome\u2026 yes", "Paris, Rome. yes"),
    ("St. Louis is a city", "Saint Louis is a city"),
])
def test_tts_text(text, tts):
    assert spoken_form(text).tts_text == tts


def test_spans_are_exact_offsets_and_labels():
    text = "In 1987, Zürich hosted 3,000 guests."
    form = normalize_transcript(text)
    assert [(w.text, w.char_start, w.char_end) for w in form.words] == [
        ("IN", 0, 2), ("NINETEEN", 3, 7), ("EIGHTY", 3, 7), ("SEVEN", 3, 7), ("ZURICH", 9, 15), ("HOSTED", 16, 22),
        ("THREE", 23, 28), ("THOUSAND", 23, 28), ("GUESTS", 29, 35)]
    assert form.labels == "IN|NINETEEN|EIGHTY|SEVEN|ZURICH|HOSTED|THREE|THOUSAND|GUESTS"
    assert [w.kind for w in form.words][:4] == ["word", "year", "year", "year"]


def test_number_and_can_be_dropped():
    assert spoken_form("753", number_and=False).transcript == "SEVEN HUNDRED FIFTY THREE"
    assert spoken_form("$101", number_and=False).tts_text == "one hundred one dollars"


@pytest.mark.parametrize("text,bad", [
    ("Москва", "'М' (U+041C)"), ("北京", "'北' (U+5317)"), ("price 5 \u20bf", "'\u20bf' (U+20BF)"),
    ("km\u00b2", "'\u00b2' (U+00B2)"), ("a \u2192 b", "'\u2192' (U+2192)"), ("\u00bd cup", "'\u00bd' (U+00BD)"),
])
def test_unspeakable_characters_are_named(text, bad):
    with pytest.raises(ValueError, match="no spoken form for character") as err:
        spoken_form(text)
    assert bad in str(err.value) and len(str(err.value).splitlines()) == 1


def test_skip_mode_records_what_it_left_out():
    form = spoken_form("Москва and Rome \u2192 Paris", unknown="skip")
    assert form.transcript == "AND ROME PARIS"
    assert [c for _, c in form.skipped] == list("Москва") + ["\u2192"]
    with pytest.raises(ValueError, match="unknown='drop'"):
        spoken_form("x", unknown="drop")
    with pytest.raises(TypeError, match="text must be a str"):
        spoken_form(None)


def _fold(text: str) -> str:
    out = "".join("'" if c in APOSTROPHES else LETTER_MAP.get(c, c) for c in text)
    out = "".join(c for c in unicodedata.normalize("NFKD", out) if not unicodedata.combining(c))
    return out.upper().strip("'")


def _check_tts(form):
    """TTS spans are in order, each is the word as the synthesiser reads it and folds to the transcript word."""
    previous = -1
    for i, word in enumerate(form.words):
        tts = form.tts_word(i)
        assert word.tts_start > previous and tts and " " not in tts
        assert _fold(tts) == word.text, (tts, word.text)
        previous = word.tts_end


def _check_char_map(text, form):
    """Brute force: every spoken word reads characters of the prompt that say it, and every letter or
    digit of the prompt is read by some word."""
    for word in form.words:
        source = text[word.char_start:word.char_end]
        assert 0 <= word.char_start < word.char_end <= len(text), (text, word)
        if word.kind == "word":
            assert _fold(source) == word.text, (text, source, word)
        elif word.kind == "letter":
            assert len(source) == 1 and _fold(source) == word.text, (text, source, word)
        elif word.kind in ("number", "year", "ordinal", "decade", "currency"):
            assert re.search(r"[\d$€£¥₹]|^[-\u2212]$|^(?i:thousand|million|billion|trillion|bn|m|k)$", source), \
                (text, source, word)
        elif word.kind == "roman":
            assert re.fullmatch(r"[IVXLCDM]+", source), (text, source, word)
        elif word.kind == "percent":
            assert source == "%"
        elif word.kind == "dot":
            assert source == "."
        elif word.kind == "symbol":
            assert len(source) == 1 and not source.isalnum()
        else:
            assert word.kind == "abbreviation" and source.replace(".", "").isalpha(), (text, source, word)
    covered = set()
    for word in form.words:
        covered.update(range(word.char_start, word.char_end))
    missing = [text[i] for i in range(len(text)) if text[i].isalnum() and i not in covered]
    assert not missing, (text, missing)


def test_table_char_maps():
    for _, text, _, _ in CASES:
        if "IIII" not in text:
            _check_char_map(text, spoken_form(text))


def test_every_known_prompt(known_path):
    records = json.loads(known_path.read_text())
    assert len(records) == 1209
    texts = {t for r in records for t in (r["prompt"], r["subject"], r["attribute"])}
    for text in sorted(texts):
        form = spoken_form(text)  # no error: every Known text has a spoken form
        assert form.words and not form.skipped
        _check_char_map(text, form)
        _check_tts(form)
    roman = {r["subject"]: spoken_form(r["subject"]).transcript for r in records
             if any(w.kind == "roman" for w in spoken_form(r["subject"]).words)}
    assert roman["Pius XII"] == "PIUS THE TWELFTH" and roman["Lupin III"] == "LUPIN THE THIRD"
    assert roman["Final Cut Pro X"] == "FINAL CUT PRO TEN" and roman["Il Secolo XIX"] == "IL SECOLO NINETEEN"
    assert roman["Muawiyah I"] == "MUAWIYAH THE FIRST" and roman["OS X Yosemite"] == "OS TEN YOSEMITE"
    assert len(roman) == 29  # every Known subject with a Roman numeral (23 of them above I)
