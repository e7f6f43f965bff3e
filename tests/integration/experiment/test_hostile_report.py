"""Hostile Known records through a real experiment: report.md and the HTML views show them as text.

The Known file is built here: prompts, subjects and attributes holding ``<script>``, ``<img src=x
onerror=…>``, a Markdown link and a Markdown image, and one record whose skip reason repeats hostile
text. The run is the real `spiritlens experiment` on the tiny checkpoints. Independent checks:
markdown_it (CommonMark) renders report.md, and every tag and link of the result must be one the
report itself makes; every circuitsvis page holds exactly its own bundle script and no element or
attribute from the data; headless Chromium (when installed) loads a page and its DOM has no ``img``
and no ``on…`` handler.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from spiritlens.figures.escape import UNSAFE

HOSTILE = [
    {"known_id": 1, "relation_id": "P1<script>", "prompt": "The <script>alert(1)</script> tower is located in",
     "subject": "<script>alert(1)</script> tower", "attribute": "Paris"},
    {"known_id": 2, "relation_id": "P2", "prompt": "[click](javascript:alert(2)) is made by",
     "subject": "[click](javascript:alert(2))", "attribute": "![img](http://evil.example/t.png)"},
    {"known_id": 3, "relation_id": "P3", "prompt": "The <img src=x onerror=alert(3)> bridge is in",
     "subject": "<img src=x onerror=alert(3)> bridge", "attribute": "<b>bold</b> | cell"},
    {"known_id": 4, "relation_id": "P4", "prompt": "Nothing to see here", "subject": "<script>evil()</script>",
     "attribute": "x"},
    {"known_id": 5, "relation_id": "P5\x1b]0;pwned\x07", "prompt": "The \x1b[2J\x1b[31mred\x07 tower\x9b6n is located in",
     "subject": "\x1b[2J\x1b[31mred\x07 tower\x9b6n", "attribute": "Oslo\u202eevil"},  # terminal escapes
]
RAW = ("<script", "<img", "onerror=", "](javascript", "![img]", "<b>", "](http://evil")


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(html_text: str) -> list[tuple[str, dict]]:
    parser = _Tags()
    parser.feed(html_text)
    return parser.tags


@pytest.fixture(scope="module")
def hostile_run(tiny_root, tiny_ctc_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    known = root / "known.json"
    known.write_text(json.dumps(HOSTILE))
    out = root / "run"
    env = {k: v for k, v in os.environ.items() if k != "SPIRITLM_CHECKPOINTS_DIR"}
    done = subprocess.run(
        [sys.executable, "-m", "spiritlens", "experiment", "--out", str(out), "--checkpoints", str(tiny_root),
         "--known", str(known), "--aligner", str(tiny_ctc_dir), "--dtype", "float32", "--keep-all", "--asr", "none",
         "--modalities", "t2t", "--kinds", "hidden", "--samples", "2", "--sample-figures", "4", "--quiet"],
        capture_output=True, text=True, timeout=600, env={**env, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_report_md_shows_hostile_data_as_text(hostile_run):
    from markdown_it import MarkdownIt

    report = (hostile_run / "report.md").read_text(encoding="utf-8")
    for raw in RAW:
        assert raw not in report, raw
    assert report.count("### T→T") == 4  # the four traced prompts, each a heading of one line
    assert not UNSAFE.search(report.replace("\n", ""))  # `cat report.md` moves no cursor, rings no bell
    rendered = MarkdownIt("commonmark").enable("table").render(report)
    for tag, attrs in _tags(rendered):
        assert tag not in ("script", "iframe", "object", "embed", "b"), tag
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag == "img":
            assert re.fullmatch(r"(aggregate|figures|crossmodal)/[\w.\-]+\.png", attrs["src"]), attrs
        if tag == "a":
            assert re.fullmatch(r"(aggregate|figures|crossmodal)/[\w.\-/]+", attrs["href"]), attrs
    text = re.sub(r"<[^>]+>", "", rendered)
    import html

    text = html.unescape(text)
    # the data reads exactly as it was written, as text
    assert "“The <script>alert(1)</script> tower is located in”" in text
    assert "“[click](javascript:alert(2)) is made by”" in text
    assert "attribute “![img](http://evil.example/t.png)”" in text
    assert "attribute “<b>bold</b> | cell”" in text
    assert "subject '<script>evil()</script>' not in prompt 'Nothing to see here'" in text  # the skip line
    assert "“The ␛[2J␛[31mred␇ tower\\u009b6n is located in”" in text  # escapes shown, as control pictures


def test_circuits_pages_hold_no_markup_from_the_data(hostile_run):
    import circuitsvis

    bundle = (Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js").read_text(encoding="utf-8")
    bundle = bundle.replace("</script>", "")  # as circuitsvis inlines it
    pages = sorted((hostile_run / "figures").glob("circuits_*.html"))
    assert len(pages) == 4
    for page in pages:
        source = page.read_text(encoding="utf-8")
        tags = _tags(source)
        assert [t for t, _ in tags if t == "script"] == ["script"]  # circuitsvis's own bundle only
        assert not [t for t, _ in tags if t in ("img", "b", "iframe")]
        assert not any(name.startswith("on") for _, attrs in tags for name in attrs)
        assert bundle in source
        # the page without circuitsvis's own JavaScript and script tag: title, heading, the view's props
        ours = source.replace(bundle, "").replace('<script crossorigin type="module">', "", 1)
        for raw in RAW:
            assert raw not in ours, (page.name, raw)
        assert not UNSAFE.search(ours.replace("\n", "")), page.name


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (apt-get install chromium)")
def test_circuits_page_in_a_real_browser(hostile_run, tmp_path):
    """Chromium runs the page's JavaScript (circuitsvis renders the tokens into the DOM); the DOM it
    ends with has the tokens as text and no element or handler from the data."""
    page = next(p for p in sorted((hostile_run / "figures").glob("circuits_*.html")) if "onerror" in p.read_text())
    done = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                           "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    dom = done.stdout
    assert "circuits-vis" in dom and "max over layers" in dom, dom[-2000:]  # the view did render
    tags = _tags(dom)
    assert not [t for t, _ in tags if t in ("img", "b", "iframe")]
    assert not any(name.startswith("on") for _, attrs in tags for name in attrs)
