"""md_text / html_text: hostile values render as exactly their text, against CommonMark (markdown_it)
and Python's HTML parser, in headings and table cells."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import pytest
from markdown_it import MarkdownIt

from spiritlens.figures.escape import html_text, md_code, md_quoted, md_text

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[click](javascript:alert(1))",
    "![pixel](http://evil.example/t.png)",
    "<http://evil.example>",
    "www.evil.example and https://evil.example/x",
    "*bold* _it_ `code` ~~s~~ # h | cell | \\ back\\slash",
    "&lt;script&gt; &amp; &#60;",
    "line one\n# heading two\r\n- item",
    "Space Needle's \"quote\" {brace} 50% $5",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_markdown_renders_exactly_the_text(value):
    md = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    for document, tag in ((f"### {md_text(value)}", "h3"), (f"| a |\n|---|\n| {md_text(value)} |", "td")):
        rendered = md.render(document)
        inner = re.search(rf"<{tag}>(.*)</{tag}>", rendered, re.S).group(1)
        assert "<" not in inner.replace("&lt;", "")  # no element inside: text only
        expected = value.replace("\r", " ").replace("\n", " ")  # one line: each break is a space
        assert html.unescape(inner) == expected
    assert md_quoted(value) == f"“{md_text(value)}”"


@pytest.mark.parametrize("value", HOSTILE)
def test_html_text_is_text_in_elements_and_attributes(value):
    class Collect(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.tags, self.text = [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append((tag, attrs))

        def handle_data(self, data):
            self.text.append(data)

    escaped = html_text(value)
    assert "onerror=" not in escaped and "<" not in escaped and ">" not in escaped
    parser = Collect()
    parser.feed(f'<p title="{escaped}">{escaped}</p>')
    assert parser.tags == [("p", [("title", value)])] and "".join(parser.text) == value


@pytest.mark.parametrize("value", HOSTILE + ["a `tick` and ``two``", "`edge`"])
def test_code_span_shows_the_value_literally(value):
    rendered = MarkdownIt("commonmark").render(f"run {md_code(value)} now")
    inner = re.search(r"<code>(.*)</code>", rendered, re.S).group(1)
    assert html.unescape(inner) == value.replace("\r", " ").replace("\n", " ")
