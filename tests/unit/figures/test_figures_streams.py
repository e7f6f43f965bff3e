"""The Expressive per-stream panels of the AIE grid, the per-control stream grid and the controls' figure, on
hand-made aggregates: what each panel draws (its cells' values and labels), and the PNGs as drawn."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import assert_drawn_png, assert_legends_outside_the_data, make_result
from spiritlens.aggregates import aggregate_by_modality, aggregate_streams
from spiritlens.aggregates.prosody import control_effects
from spiritlens.figures.grid import aie_grid_figure, plot_aie_grid, plot_stream_controls, stream_controls_figure
from spiritlens.figures.prosody import controls_figure, plot_controls


def stream_result(pitch: float, kind: str = "hidden", low: float = 0.1, name: str = "p"):
    """One subject word split into Hu (row 2), Pi (row 3), St (row 4); next word 5, [Text] 6; 3 layers.
    IE 0.3 at the HuBERT row, ``pitch`` at the pitch row, 0 at the style row."""
    result = make_result(7, (2, 5), kind=kind, low=low, n_layers=3, name=name, modality="speech",
                         set_rows={2: [low + 0.3] * 3, 3: [low + pitch] * 3, 6: [low + 0.5] * 3})
    result.update(row_mode="streams", row_streams=[None, None, "hubert", "pitch", "style", None, None],
                  row_subject_token=[None, None, 0, 0, 0, None, None])
    return result


def panel_data(fig, title_start):
    ax = next(a for a in fig.axes if a.get_title().startswith(title_start))
    return np.ma.getdata(ax.collections[0].get_array()).reshape(6, -1), [t.get_text() for t in ax.get_yticklabels()]


def test_grid_gains_one_panel_per_stream(tmp_path):
    plain = aggregate_by_modality([make_result(6, (2, 4), modality="speech", n_layers=3,
                                               set_rows={3: [0.5] * 3})])
    streams = {"hidden": aggregate_streams([stream_result(0.2, name="a"), stream_result(0.1, name="b")], "hidden")}
    fig = aie_grid_figure(plain, scale="linear", streams=streams)
    hubert, labels = panel_data(fig, "S→T Expressive: HuBERT")
    assert labels[0] == "First subject token / HuBERT" and labels[3] == "First subsequent token"
    assert hubert[0] == pytest.approx([0.3] * 3) and hubert[2] == pytest.approx([0.3] * 3)  # one-word subject
    pitch, labels = panel_data(fig, "S→T Expressive: pitch")
    assert labels[2] == "Last subject token / pitch" and pitch[0] == pytest.approx([0.15] * 3)
    style, _ = panel_data(fig, "S→T Expressive: style")
    assert style[0] == pytest.approx([0.0] * 3) and np.isnan(style[1]).all()  # no middle rows: grey
    assert style[5] == pytest.approx([0.5] * 3)  # the last token, as in every panel
    assert_drawn_png(plot_aie_grid(plain, tmp_path / "grid.png", streams=streams), min_width=1000, min_height=1200)
    only = aie_grid_figure({}, streams=streams)  # the per-stream panels alone
    assert len([a for a in only.axes if a.get_title().startswith("S→T Expressive")]) == 3


def test_stream_controls_figure_rows_are_controls(tmp_path):
    by_control = {"original": aggregate_streams([stream_result(0.2, kind="mlp")], "mlp"),
                  "flat_pitch": aggregate_streams([stream_result(0.05, kind="mlp")], "mlp")}
    fig = stream_controls_figure(by_control, "mlp", scale="linear", labels={"flat_pitch": "pitch flattened"})
    flat, _ = panel_data(fig, "pitch flattened\npitch")
    original, _ = panel_data(fig, "original\npitch")
    assert flat[0] == pytest.approx([0.05] * 3) and original[0] == pytest.approx([0.2] * 3)
    assert_drawn_png(plot_stream_controls(by_control, "mlp", tmp_path / "controls_mlp.png"))
    with pytest.raises(ValueError, match="no aggregates"):
        stream_controls_figure({}, "mlp")


def test_stream_controls_titles_stay_clear_of_each_other_and_the_colour_bar():
    labels = {"other_pitch": "pitch of another prompt", "other_style": "style of another prompt"}
    by_control = {c: aggregate_streams([stream_result(0.1 * (i + 1), kind="hidden")], "hidden")
                  for i, c in enumerate(["original", "other_pitch", "other_style"])}
    fig = stream_controls_figure(by_control, "hidden", labels=labels)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    panels = [a for a in fig.axes if a.get_title()]
    bars = [a for a in fig.axes if not a.get_title() and a not in panels]
    assert len(panels) == 9 and bars
    titles = [a.title.get_window_extent(renderer) for a in panels]
    for box in titles:
        assert box.x0 >= 0 and box.x1 <= fig.bbox.x1  # inside the figure
        for bar in bars:
            assert not box.overlaps(bar.get_window_extent(renderer)), "a panel title runs into the colour bar"
    for k, box in enumerate(titles):
        assert not any(box.overlaps(other) for other in titles[k + 1:]), "two panel titles overlap"


def test_controls_figure(tmp_path):
    records = [{"known_id": k, "control": c, "answer_id": 1, "p_answer": p, "top1_id": 1,
                "stream_low": {"hubert": p - 0.2, "pitch": p - 0.05, "style": None}}
               for k, c, p in ((1, "original", 0.6), (2, "original", 0.5), (1, "flat_pitch", 0.3),
                               (2, "flat_pitch", 0.25))]
    effects = control_effects(records)
    fig = controls_figure(effects)
    left = fig.axes[0]
    points = left.lines[0].get_ydata() if left.lines else None
    assert points is not None and np.allclose(points, [0.55, 0.275])
    assert_legends_outside_the_data(fig, fig.axes)
    assert_drawn_png(plot_controls(effects, tmp_path / "controls.png"))
    high = [{**r, "p_answer": p} for r, p in zip(records, (0.99, 0.80, 0.3, 0.25))]  # mean 0.895, CI 1.21 wide
    drawn = controls_figure(control_effects(high)).axes[0]
    segments = [s for c in drawn.collections for s in c.get_segments()]  # the error bars
    tops = sorted(max(seg[:, 1]) for seg in segments)
    assert tops[-1] == pytest.approx(1.0) and min(min(seg[:, 1]) for seg in segments) >= 0.0
