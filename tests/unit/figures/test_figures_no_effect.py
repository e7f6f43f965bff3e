"""Figures that do not mislead: no effect draws as zero with no band, legends off the data, colour bars
with distinct labels, circuitsvis pages that show their tokens. Each checks the drawn PNG or page."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from helpers import assert_drawn_png, assert_legends_outside_the_data, band_pixel_columns, make_result

from spiritlens.aggregates import aggregate_by_modality
from spiritlens.aggregates.aie import FLOOR_ULPS
from spiritlens.figures import (
    aie_grid_figure,
    aie_lines_figure,
    plot_aie_lines,
    plot_trace_heatmap,
    trace_heatmap_figure,
    write_trace_tokens_html,
)

EPS32 = float(np.finfo(np.float32).eps)


def no_effect_results(noise: float = 3e-7) -> list[dict]:
    """Eight prompts whose every restored cell equals the corrupted score up to float32 rounding (at most
    ``noise``, as a trace with noise 1e-9 gives), with different low scores: the prompts with further tokens
    are corrupted to higher scores, so ROME's pooled AIE shows a spurious effect there."""
    rng = np.random.default_rng(0)
    results = []
    for i in range(8):
        n_rows = 7 + (i % 3)  # 7..9 rows: further tokens in some prompts only
        low = 0.08 + 0.04 * i if n_rows > 7 else 0.05
        scores = {row: list(low + rng.uniform(-noise, noise, 4)) for row in range(2, n_rows)}
        results.append(make_result(n_rows, (2, 4 + (i % 2)), low=low, high=low + 1e-7, n_layers=4,
                                   set_rows=scores, prompt=f"prompt {i}"))
    return results


def effect_results() -> list[dict]:
    """The same prompts with a real effect at the last subject row and the last row (different per prompt)."""
    results = no_effect_results()
    for i, result in enumerate(results):
        scores = np.asarray(result["scores"])
        b, e = result["subject_rows"]
        scores[e - 1] += [0.3 + 0.05 * i, 0.2, 0.1, 0.0]
        scores[-1] += [0.0, 0.1 + 0.03 * i, 0.4, 0.5]
        result["scores"] = scores.tolist()
        result["high_score"] = result["low_score"] + 0.5
    return results


def test_a_kind_without_effect_draws_flat_at_zero_with_no_band(tmp_path):
    groups = aggregate_by_modality(no_effect_results())
    agg = groups["text"]["hidden"]
    assert agg.no_effect and agg.peak() is None
    assert "no effect" in agg.describe_peak()
    # ROME's pooled AIE shows the corrupted-score difference of the prompts with further tokens ...
    assert np.nanmax(np.abs(agg.aie["further"])) > 0.02
    # ... the drawn AIE is exactly 0 everywhere, with a zero-width CI
    drawn = agg.effect_matrix()
    assert np.all(drawn[np.isfinite(drawn)] == 0.0)
    assert all(np.all(agg.ci[c][np.isfinite(agg.ci[c])] == 0.0) for c in agg.ci)

    flat = assert_drawn_png(plot_aie_lines(groups, tmp_path / "flat.png"))
    assert band_pixel_columns(flat) == 0
    fig = aie_lines_figure(groups)
    (ax,) = [a for a in fig.axes if a.get_title()]
    assert all(np.all(np.asarray(line.get_ydata()) == 0) for line in ax.get_lines())  # every curve, and the zero line
    assert any("no effect" in text.get_text() for text in ax.texts)
    assert not any("CI" in t.get_text() for t in fig.legends[0].get_texts())  # no band, so no band legend

    # the control: the same prompts with effects draw bands
    banded = assert_drawn_png(plot_aie_lines(aggregate_by_modality(effect_results()), tmp_path / "bands.png"))
    assert band_pixel_columns(banded) > 100


def test_the_numerical_floor_is_relative_to_float32_precision():
    # an IE of 1000 ulps of p is rounding; 1100 ulps is an effect (FLOOR_ULPS = 1024)
    low = 0.6
    below = make_result(5, (1, 3), low=low, high=0.9, n_layers=2, set_rows={2: [low + 1000 * EPS32 * low] * 2})
    above = make_result(5, (1, 3), low=low, high=0.9, n_layers=2, set_rows={2: [low + 1100 * EPS32 * 0.9] * 2})
    assert FLOOR_ULPS == 1024
    assert aggregate_by_modality([below])["text"]["hidden"].no_effect
    agg = aggregate_by_modality([above])["text"]["hidden"]
    assert not agg.no_effect and agg.peak()[:2] == ("last_subject", 0)


def test_line_plot_legend_lies_outside_every_panel():
    results = effect_results() + [dict(r, modality="speech") for r in effect_results()]
    fig = aie_lines_figure(aggregate_by_modality(results))
    assert_legends_outside_the_data(fig, [ax for ax in fig.axes if ax.get_title()])


def test_flat_heatmap_colour_bar_shows_one_value(tmp_path):
    result = make_result(6, (1, 3), low=0.99, high=0.99, n_layers=4, set_rows={2: [0.99 + 2e-7] * 4})
    fig = trace_heatmap_figure(result)
    labels = [t.get_text() for t in fig.axes[1].get_yticklabels() if t.get_text()]
    assert len(labels) == 1 and "0.99" in labels[0] and "no effect" in labels[0]
    assert_drawn_png(plot_trace_heatmap(result, tmp_path / "flat.png"))


def test_heatmap_colour_bar_labels_are_distinct_for_a_narrow_range():
    # p between 0.99 and 0.9912: two significant digits would print "0.99" at every tick
    result = make_result(6, (1, 3), low=0.99, high=0.9912, n_layers=4, set_rows={2: [0.9903, 0.9907, 0.9912, 0.99]})
    fig = trace_heatmap_figure(result)
    labels = [t.get_text() for t in fig.axes[1].get_yticklabels() if t.get_text()]
    assert len(labels) >= 3 and len(set(labels)) == len(labels), labels
    assert labels[0].endswith(" low")


@pytest.mark.parametrize("scale", ["linear", "log"])
def test_grid_colour_bar_of_a_kind_without_effect_has_one_label(scale):
    fig = aie_grid_figure(aggregate_by_modality(no_effect_results()), scale=scale)
    bar = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"][0]
    labels = [t.get_text() for t in bar.get_yticklabels() if t.get_text()]
    assert len(labels) == 1 and "no effect" in labels[0]
    panel = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"][0]
    assert any("no effect" in t.get_text() for t in panel.texts)


def _bounds(page: str) -> dict:
    call = re.search(r"CircuitsVis\.ColoredTokensMulti,\s*(\{.*?\})\s*\)", page, re.S)
    return json.loads(call.group(1))


def test_circuitsvis_page_of_an_all_zero_trace_gives_bounds_and_says_no_effect(tmp_path):
    result = make_result(6, (1, 3), low=0.3, high=0.3, n_layers=4, set_rows={2: [0.3 + 1e-8] * 4})
    page = write_trace_tokens_html(result, tmp_path / "zero.html").read_text()
    props = _bounds(page)
    assert np.all(np.asarray(props["values"]) == 0)  # rounding shown as 0
    # circuitsvis keeps 6 decimals of a bound; a bound that rounds to 0 makes every token colour NaN
    assert all(round(b, 6) > 0 for b in props["positiveBounds"]) and all(round(b, 6) < 0 for b in props["negativeBounds"])
    assert "No effect" in page


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (apt-get install chromium)")
def test_circuitsvis_page_of_an_all_zero_trace_shows_its_tokens_in_a_browser(tmp_path):
    """Chromium runs the page: each token's box has a real background and dark text (it was white text
    on a transparent box, the NaN colour of a 0/0 bound)."""
    result = make_result(6, (1, 3), low=0.3, high=0.3, n_layers=4)
    page = write_trace_tokens_html(result, tmp_path / "zero.html")
    done = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                           "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    spans = re.findall(r'<span style="([^"]*)">(t\d\*?)</span>', done.stdout)
    assert [token for _, token in spans] == ["t0", "t1*", "t2*", "t3", "t4", "t5"], done.stdout[-1500:]
    for style, token in spans:
        assert "background-color: rgb(255, 255, 255)" in style and "color: black" in style, (token, style)
