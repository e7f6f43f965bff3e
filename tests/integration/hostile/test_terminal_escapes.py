"""Terminal escapes in data: every report, page, JSON file and error line shows them, none acts on them.

A Known prompt holding ``ESC [2J`` clears the screen of whoever runs ``cat report.md``; ``ESC ]0;…
BEL`` retitles the terminal; U+009B is a one-character CSI where C1 controls are read; U+202E
reverses what follows. The cases are values; every escaping function's output must hold none of
those characters (:data:`spiritlens.figures.escape.UNSAFE`, checked character by character
against Unicode's own categories) and must still read as the value: Markdown through a CommonMark
renderer (markdown_it), HTML through Python's HTML parser, JSON through ``json.loads`` (exactly
the value). The whole experiment's report.md and pages are checked by
tests/integration/experiment/test_hostile_report.py, the CLI error line by test_data_files.py.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata

import pytest

from spiritlens._io import read_json, write_json_atomic
from spiritlens.figures.escape import UNSAFE, html_text, md_code, md_quoted, md_text, terminal_text, visible

CASES = {
    "clear_screen": ("The \x1b[2J\x1b[H tower", "The ␛[2J␛[H tower"),
    "colour_and_bell": ("\x1b[31mred\x1b[0m\x07", "␛[31mred␛[0m␇"),
    "title": ("\x1b]0;pwned\x07 x", "␛]0;pwned␇ x"),
    "c1_csi": ("tower\x9b6n", "tower\\u009b6n"),
    "delete_and_nul": ("a\x7fb\x00c", "a␡b␀c"),
    "bidi_override": ("Oslo\u202eevil\u2066x\u2069", "Oslo\\u202eevil\\u2066x\\u2069"),
    "backspace_overwrite": ("safe\x08\x08\x08\x08evil", "safe␈␈␈␈evil"),
}


def acted_on(text: str) -> list[str]:
    """Characters a terminal acts on, by Unicode's categories (independent of UNSAFE): Cc, and the
    bidirectional embedding, override and isolate controls."""
    bidi = {"LRE", "RLE", "PDF", "LRO", "RLO", "LRI", "RLI", "FSI", "PDI"}
    return [c for c in text if unicodedata.category(c) == "Cc" or unicodedata.bidirectional(c) in bidi]


def test_unsafe_is_exactly_the_characters_terminals_act_on():
    every = "".join(chr(c) for c in range(0x3000))
    assert [c for c in every if UNSAFE.match(c)] == acted_on(every)


@pytest.mark.parametrize("case", list(CASES))
def test_markdown_and_terminal_text(case):
    from markdown_it import MarkdownIt

    value, shown = CASES[case]
    for escaped in (md_text(value), md_quoted(value), md_code(value), terminal_text(value)):
        assert acted_on(escaped) == [], repr(escaped)
    assert terminal_text(value) == shown
    rendered = MarkdownIt("commonmark").render(md_text(value))
    assert html.unescape(re.sub(r"<[^>]+>", "", rendered)).strip() == shown
    code = MarkdownIt("commonmark").render(md_code(value))
    assert html.unescape(re.sub(r"<[^>]+>", "", code)).strip() == shown


@pytest.mark.parametrize("case", list(CASES))
def test_html_text(case):
    from html.parser import HTMLParser

    value, shown = CASES[case]
    escaped = html_text(value)
    assert acted_on(escaped) == [] and "<" not in escaped

    class Text(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.text = []

        def handle_data(self, data):
            self.text.append(data)

    parser = Text()
    parser.feed(f"<p>{escaped}</p>")
    assert "".join(parser.text) == shown


@pytest.mark.parametrize("case", list(CASES))
def test_json_files_hold_the_value_and_no_control_character(tmp_path, case):
    value, _ = CASES[case]
    path = write_json_atomic(tmp_path / "r.json", {"prompt": value, "list": [value]})
    text = path.read_text(encoding="utf-8")
    assert acted_on(text.replace("\n", "")) == [], repr(text)  # the layout's line breaks only
    assert json.loads(text) == {"prompt": value, "list": [value]} == read_json(path, "result")


def test_visible_forms():
    assert [visible(c) for c in "\x1b\x07\x00\x7f\x9b\u202e"] == ["␛", "␇", "␀", "␡", "\\u009b", "\\u202e"]
