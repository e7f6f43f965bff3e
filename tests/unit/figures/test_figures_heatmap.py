"""Per-prompt ROME-style heatmap and the circuitsvis view, on hand-made results."""

from __future__ import annotations

import html
import sys

import pytest
from PIL import Image
from helpers import assert_drawn_png, make_result

from spiritlens.figures.escape import html_text
from spiritlens.figures import plot_trace_heatmap, row_labels, trace_heatmap_figure, write_trace_tokens_html



def speech_result() -> dict:
    """A 7-row speech result (rows group positions) whose subject is rows [2, 4) and row 5 is silence."""
    labels = ["<s>", "[Speech]", "Eiffel", "Tower", "is in", "<sil>", "[Text]"]
    return make_result(
        7,
        (2, 4),
        n_layers=12,
        kind="mlp",
        low=0.02,
        high=0.4,
        set_rows={3: [0.3] * 12, 6: [0.1] * 6 + [0.35] * 6},
        rows=[{"label": label, "positions": [i]} for i, label in enumerate(labels)],
        ignored_rows=[5],
        modality="speech",
        answer=" $Paris",
        name="eiffel_s2t",
    )


def test_row_labels_mark_the_subject():
    assert row_labels(speech_result()) == ["<s>", "[Speech]", "Eiffel*", "Tower*", "is in", "<sil>", "[Text]"]
    text = make_result(5, (2, 3))
    del text["rows"]
    assert row_labels(text) == ["t0", "t1", "t2*", "t3", "t4"]


@pytest.mark.parametrize("kind", ["hidden", "mlp", "attn"])
def test_heatmap_png_for_each_kind(tmp_path, kind):
    result = make_result(9, (2, 5), kind=kind, n_layers=32, set_rows={4: [0.5] * 32, 8: [0.9] * 32})
    path = plot_trace_heatmap(result, tmp_path / "sub" / f"{kind}.png")
    assert_drawn_png(path)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200
        assert image.text["kind"] == kind


def test_heatmap_speech_rows_title_and_colour_scale():
    fig = trace_heatmap_figure(speech_result())
    ax = fig.axes[0]
    assert ax.get_title() == "Impact of restoring MLP after corrupted input"
    assert "center of interval of 10 restored MLP layers" == ax.get_xlabel()
    assert [t.get_text() for t in ax.get_yticklabels()][2:4] == ["Eiffel*", "Tower*"]
    assert ax.get_yticklabels()[5].get_color() == "0.6"  # ignored row greyed out
    assert "S→T" in fig._suptitle.get_text() and "Paris" in fig._suptitle.get_text()
    assert ax.collections[0].norm.vmin == pytest.approx(0.02)  # ROME: the scale starts at low_score
    assert "low" in fig.axes[1].get_yticklabels()[0].get_text()


def test_heatmap_rejects_a_malformed_result(tmp_path):
    with pytest.raises(ValueError, match="Broken prompt.*ends the prompt"):
        plot_trace_heatmap(make_result(5, (2, 5), prompt="Broken prompt"), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_circuitsvis_view_is_a_standalone_page(tmp_path):
    path = write_trace_tokens_html(speech_result(), tmp_path / "view.html")
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and "eiffel_s2t" in html.unescape(page)  # punctuation as &#NN;
    assert any("Eiffel*" in t for t in _visible_token_texts(page)) and "max over layers" in page and "layer 11" in page


def test_circuitsvis_missing_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "circuitsvis.utils.render", None)
    with pytest.raises(ImportError, match=r"spiritlens\[plots\]"):
        write_trace_tokens_html(speech_result(), tmp_path / "view.html")


def _visible_token_texts(page: str) -> list[str]:
    """What circuitsvis shows for each token: it replaces whitespace by ``&nbsp;`` and inserts the
    result as HTML (``dangerouslySetInnerHTML``); here an HTML parser plays the browser."""
    import json
    import re
    from html.parser import HTMLParser

    call = re.search(r"CircuitsVis\.ColoredTokensMulti,\s*(\{.*?\})\s*\)", page, re.S)
    tokens = json.loads(call.group(1))["tokens"]

    class Text(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.parts = []

        def handle_data(self, data):
            self.parts.append(data)

    shown = []
    for token in tokens:
        parser = Text()
        parser.feed(re.sub(r"\s", "&nbsp;", token))
        parser.close()
        shown.append("".join(parser.parts).replace("\xa0", " "))
    return shown


def test_circuitsvis_labels_are_escaped_so_markup_like_tokens_show(tmp_path):
    labels = ["<s>", "[Speech]", "AT&T", "<sil>", "</script><b>x", "a <b>", "[Text]"]
    result = make_result(7, (2, 4), rows=[{"label": label, "positions": [i]} for i, label in enumerate(labels)],
                         modality="speech")
    page = write_trace_tokens_html(result, tmp_path / "view.html").read_text()
    assert _visible_token_texts(page) == ["<s>", "[Speech]", "AT&T*", "<sil>*", "</script><b>x", "a <b>", "[Text]"]
    assert "</script><b>" not in page  # no token can close the page's script early
    assert '"&#60;s&#62;"' in page and '"&#60;sil&#62;&#42;"' in page  # every ASCII punctuation as &#NN;
    assert "onerror=" not in html_text("<img src=x onerror=alert(1)>")
