"""Figure-2-style AIE grid (log and linear) and ROME line plots, on hand-made aggregates."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from helpers import assert_drawn_png, make_result

from spiritlens.aggregates import aggregate_by_modality
from spiritlens.figures import aie_grid_figure, aie_lines_figure, plot_aie_grid, plot_aie_lines



def groups():
    """T→T and S→T, three kinds; AIE at the last subject row of 0.4 (hidden), 0.6 (mlp), -0.05 (attn)."""
    results = []
    for modality, scale in (("text", 1.0), ("speech", 0.5)):
        for kind, peak in (("hidden", 0.4), ("mlp", 0.6), ("attn", -0.05)):
            results.append(
                make_result(6, (2, 4), kind=kind, modality=modality, low=0.1, n_layers=6,
                            set_rows={3: [0.1 + scale * peak] * 6, 5: [0.1 + scale * 0.2] * 6})
            )
    return aggregate_by_modality(results)


def panel(fig, index):
    """The mesh of panel ``index``: rows are groups (T→T, S→T), columns kinds (hidden, mlp, attn)."""
    return fig.axes[index].collections[0]


def test_log_grid_clips_at_epsilon_and_records_it(tmp_path):
    path = plot_aie_grid(groups(), tmp_path / "grid_log.png", scale="log", epsilon=1e-3)
    assert_drawn_png(path)
    with Image.open(path) as image:
        assert float(image.text["epsilon"]) == 1e-3 and image.text["scale"] == "log"
    fig = aie_grid_figure(groups(), scale="log", epsilon=1e-3)
    assert "ε = 0.001" in fig._suptitle.get_text()
    mesh = panel(fig, 0)  # hidden, T→T
    assert mesh.norm.vmin == 1e-3 and mesh.norm.vmax == pytest.approx(0.6)  # max over all panels
    data = np.ma.getdata(mesh.get_array()).reshape(6, 6)
    assert data[2, 0] == pytest.approx(0.4) and data[0, 0] == 1e-3  # first subject AIE 0 -> ε
    attn = np.ma.getdata(panel(fig, 2).get_array()).reshape(6, 6)  # attn, T→T
    assert attn[2, 0] == 1e-3  # negative AIE -> ε
    assert np.isnan(data[1]).all() and np.isnan(data[4]).all()  # empty middle/further: grey "no rows"


def test_linear_grid_uses_the_hidden_maximum(tmp_path):
    fig = aie_grid_figure(groups(), scale="linear")
    for index in range(6):
        assert panel(fig, index).norm.vmax == pytest.approx(0.4)  # hidden max, even where mlp reaches 0.6
    attn = np.ma.getdata(panel(fig, 2).get_array()).reshape(6, 6)  # attn, T→T
    assert attn[2, 0] == 0.0  # ROME: clip(AIE, 0)
    assert_drawn_png(plot_aie_grid(groups(), tmp_path / "lin.png", scale="linear"))


def test_grid_with_one_modality_and_one_kind(tmp_path):
    only = {"text": {"hidden": groups()["text"]["hidden"]}}
    fig = aie_grid_figure(only)
    assert len([ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.collections]) == 1
    assert_drawn_png(plot_aie_lines(only, tmp_path / "lines.png"))


def test_line_plots_png(tmp_path):
    assert_drawn_png(plot_aie_lines(groups(), tmp_path / "lines.png"))


@pytest.mark.parametrize("kwargs, message", [({"scale": "sqrt"}, "scale 'sqrt'"), ({"epsilon": 0}, "epsilon")])
def test_grid_rejects_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        aie_grid_figure(groups(), **kwargs)
    with pytest.raises(ValueError, match="nothing to plot"):
        aie_grid_figure({})


def three_rows():
    """Figure 2's rows: the backbone's T→T (model_role "backbone"), SpiritLM's T→T and S→T; hidden peaks
    0.2, 0.4, 0.3 and MLP peaks 0.1, 0.6, 0.05 at the last subject row."""
    results = []
    for role, modality, hidden, mlp in ((None, "text", 0.4, 0.6), ("backbone", "text", 0.2, 0.1),
                                        (None, "speech", 0.3, 0.05)):
        for kind, peak in (("hidden", hidden), ("mlp", mlp)):
            extra = {"model_role": role} if role else {}
            results.append(make_result(6, (2, 4), kind=kind, modality=modality, low=0.1, n_layers=6,
                                       set_rows={3: [0.1 + peak] * 6}, **extra))
    return aggregate_by_modality(results)


@pytest.mark.parametrize("scale", ["log", "linear"])
def test_the_backbone_is_the_first_of_three_rows_with_one_scale_per_kind(scale, tmp_path):
    groups = three_rows()
    assert list(groups) == ["backbone", "text", "speech"]  # the backbone is never pooled with T→T
    assert groups["backbone"]["hidden"].count == 1 and groups["text"]["hidden"].count == 1
    fig = aie_grid_figure(groups, scale=scale)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 6
    layout = {(ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start): ax for ax in panels}
    assert sorted(layout) == [(i, j) for i in range(3) for j in range(2)]
    titles = [layout[(i, 0)].get_title() for i in range(3)]
    assert [t.split(":")[0] for t in titles] == ["backbone T→T", "SpiritLM T→T", "SpiritLM S→T"]
    peaks = {"hidden": (0.2, 0.4, 0.3), "mlp": (0.1, 0.6, 0.05)}
    for j, kind in enumerate(("hidden", "mlp")):
        for i in range(3):
            mesh = layout[(i, j)].collections[0]
            assert np.ma.getdata(mesh.get_array()).reshape(6, 6)[2, 0] == pytest.approx(peaks[kind][i])
        norms = {(layout[(i, j)].collections[0].norm.vmin, layout[(i, j)].collections[0].norm.vmax) for i in range(3)}
        assert len(norms) == 1  # one colour scale per kind across the rows
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 2  # one per kind
    assert_drawn_png(plot_aie_grid(groups, tmp_path / "grid.png", scale=scale), min_height=400)
    lines = aie_lines_figure(groups)
    assert [ax.get_title().split(":")[0] for ax in lines.axes if ax.get_title()][::2] == \
        ["backbone T→T", "SpiritLM T→T", "SpiritLM S→T"]
