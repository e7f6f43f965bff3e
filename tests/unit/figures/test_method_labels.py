"""Figures say how their numbers were computed: an attribution screen is labelled an estimate, in the
heatmap's title and colour bar and in the aggregate figures' titles (the method registry,
spiritlens.traces.methods); an exact trace keeps ROME's titles."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from helpers import make_result  # noqa: E402

from spiritlens.aggregates.aie import aggregate  # noqa: E402
from spiritlens.figures.grid import aie_grid_figure, aie_lines_figure  # noqa: E402
from spiritlens.figures.heatmap import trace_heatmap_figure  # noqa: E402


def _texts(fig) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))


def _result(method: str) -> dict:
    result = make_result(8, (3, 5), n_layers=4, set_rows={4: [0.5, 0.4, 0.3, 0.2], 7: [0.2, 0.3, 0.6, 0.9]})
    result["method"] = method
    return result


def test_heatmap_of_an_attribution_screen_says_estimate():
    exact = _texts(trace_heatmap_figure(_result("exact")))
    screen = _texts(trace_heatmap_figure(_result("attribution_qk")))
    assert "Impact of restoring state after corrupted input" in exact and "estimate" not in exact.lower()
    assert "Estimated impact of restoring state" in screen
    assert "attribution estimate (AtP with AtP*'s QK fix), not exact restoration" in screen
    assert "estimated p(" in screen  # the colour bar's label


def test_aggregate_figures_say_estimate():
    groups = {"text": {"hidden": aggregate([_result("attribution")], "hidden")}}
    assert groups["text"]["hidden"].methods == ("attribution",)
    for figure in (aie_grid_figure(groups), aie_lines_figure(groups)):
        assert "attribution estimate (AtP), not exact restoration" in _texts(figure)
    exact = {"text": {"hidden": aggregate([_result("exact")], "hidden")}}
    assert "not exact restoration" not in _texts(aie_grid_figure(exact))
