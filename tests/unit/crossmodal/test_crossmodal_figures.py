"""Cross-modal figures: labelled CI bands, whole-layer ticks, readable heatmap rows, PNG files."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import assert_drawn_png, assert_legends_outside_the_data

from spiritlens.crossmodal import summarize
from spiritlens.figures.crossmodal import (
    geometry_figure,
    logit_lens_figure,
    mrr_figure,
    patching_figure,
    plot_geometry,
    plot_logit_lens,
    plot_mrr,
    plot_patching,
)
from test_crossmodal_summary import _geometry, _lens, _patching

L = 4


@pytest.fixture(scope="module")
def summary():
    rng = np.random.default_rng(0)
    patching = [_patching(str(i), 0.1, 0.9, 0.2 + rng.random(L) * 0.1, 0.3 + rng.random(L) * 0.1) for i in range(3)]
    geometry = [_geometry(str(i), 0.1 + rng.random((2, L)) * 0.5, rng.random(L) * 0.1) for i in range(3)]
    lens = [_lens(str(i), rng.integers(1, 90, size=(2, L))) for i in range(3)]
    return summarize(patching, geometry, lens)


def _legend_texts(fig) -> list[str]:
    (legend,) = fig.legends  # one legend for the whole figure
    return [t.get_text() for t in legend.get_texts()]


def _whole_layer_ticks(ax) -> bool:
    ticks = ax.get_xticks()
    return len(ticks) > 0 and np.allclose(ticks, np.round(ticks)) and ticks.min() >= 0 and ticks.max() <= L - 1


def test_patching_figure_labels_its_bands(summary):
    fig = patching_figure(summary)
    texts = _legend_texts(fig)
    assert any("cross-modal" in t and "95% CI band" in t and "mean of 3" in t for t in texts)
    assert any("within-modality" in t and "95% CI band" in t for t in texts)
    assert any("t(0.975, n−1)·s/√n" in t and "facts" in t for t in texts)  # the one CI formula, named
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert len(axes) == 2  # two directions x one mode
    for ax in axes:
        assert _whole_layer_ticks(ax) and "total effect" in ax.get_title()
        assert len(ax.collections) >= 2  # the shaded bands
    assert_legends_outside_the_data(fig, axes)


def test_geometry_figure_has_three_panels_with_baselines(summary):
    fig = geometry_figure(summary)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["cosine similarity", "Euclidean distance", "norm of the mean state"]
    assert any("different words (baseline)" in t for t in _legend_texts(fig))
    assert all(_whole_layer_ticks(ax) for ax in fig.axes)
    assert_legends_outside_the_data(fig, fig.axes)


def test_mrr_figure_shows_chance_on_a_log_axis(summary):
    fig = mrr_figure(summary)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and any(t.startswith("chance") for t in _legend_texts(fig))
    assert _whole_layer_ticks(ax)
    assert_legends_outside_the_data(fig, [ax])


def test_logit_lens_heatmap_rows_are_labelled_and_cells_carry_ranks():
    result = _lens("fact", [[1, 2, 4, 100], [2, 2, 4, 50]])
    result.position_labels = ["3: [Hu12] → Space", "4: [Hu7] (silence)"]
    fig = logit_lens_figure(result)
    speech_ax, text_ax = fig.axes[:2]
    assert [t.get_text() for t in speech_ax.get_yticklabels()] == result.position_labels
    assert [t.get_text() for t in text_ax.get_yticklabels()] == ["2: S"]
    assert [t.get_text() for t in text_ax.get_xticklabels()] == ["0", "1", "2", "3"]
    assert sorted(t.get_text() for t in speech_ax.texts) == sorted(str(v) for v in [1, 2, 4, 100, 2, 2, 4, 50])


def test_plots_write_pngs(summary, tmp_path):
    paths = [plot_patching(summary, tmp_path / "p.png"), plot_geometry(summary, tmp_path / "g.png"),
             plot_mrr(summary, tmp_path / "m.png"), plot_logit_lens(_lens("f", [[1, 2, 3, 4]]), tmp_path / "l.png")]
    for p in paths:
        assert_drawn_png(p)


def test_a_summary_without_an_analysis_cannot_plot_it():
    only_lens = summarize(logit_lens=[_lens("f", [[1, 2, 3, 4]])])
    with pytest.raises(ValueError, match="no patching curves"):
        patching_figure(only_lens)
    with pytest.raises(ValueError, match="no geometry"):
        geometry_figure(only_lens)
