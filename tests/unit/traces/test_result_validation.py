"""What a trace result may hold before it is written: probabilities for exact cells, NaN only where a
``cells=`` trace did not look, and finite (possibly out-of-[0, 1]) first-order estimates for attribution."""

from __future__ import annotations

import math

import pytest

from helpers import make_result
from spiritlens.traces import TraceResult


def _result(scores, **extra) -> TraceResult:
    data = make_result(len(scores), (1, 2), n_layers=len(scores[0]))
    data["scores"] = scores
    method = extra.pop("method", "exact")
    data.update(noise=0.1, noise_rule="0.1", sigma=None, samples=3, seed=1, method=method, **extra)
    return TraceResult.from_json(data)


def test_exact_scores_must_be_probabilities(tmp_path):
    _result([[0.1, 0.2], [0.3, 0.4]]).save(tmp_path / "ok.json")
    with pytest.raises(ValueError, match=r"1 score\(s\) are not probabilities in \[0, 1\] \(first: row 1, layer 0"):
        _result([[0.1, 0.2], [1.5, 0.4]]).save(tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists() and not (tmp_path / "bad.npz").exists()


def test_untraced_cells_of_a_cells_trace_may_be_nan_but_traced_ones_may_not(tmp_path):
    nan = math.nan
    screened = _result([[nan, 0.2], [nan, nan]], cells=[[0, 1]])
    screened.save(tmp_path / "screened.json")
    assert math.isnan(TraceResult.load(tmp_path / "screened.json").scores[1, 1])
    with pytest.raises(ValueError, match=r"first: row 0, layer 1"):
        _result([[0.1, nan], [nan, nan]], cells=[[0, 1]]).save(tmp_path / "hole.json")


def test_attribution_estimates_may_leave_zero_one_but_must_be_finite(tmp_path):
    _result([[1.7, -0.3], [0.2, 0.4]], method="attribution").save(tmp_path / "estimate.json")
    assert TraceResult.load(tmp_path / "estimate.json").scores[0, 0] == pytest.approx(1.7)
    with pytest.raises(ValueError, match="are not finite attribution estimates"):
        _result([[math.inf, 0.0], [0.2, 0.4]], method="attribution").save(tmp_path / "inf.json")


def test_a_cells_trace_is_drawn_with_its_untraced_cells_blank_but_not_aggregated(tmp_path):
    from helpers import assert_drawn_png
    from spiritlens.aggregates import aggregate
    from spiritlens.figures import plot_trace_heatmap, trace_tokens_html

    nan = math.nan
    screened = _result([[nan, 0.2, nan], [0.5, nan, nan], [nan, nan, 0.9]], cells=[[0, 1], [1, 0], [2, 2]])
    pixels = assert_drawn_png(plot_trace_heatmap(screened, tmp_path / "screened.png"))
    assert pixels.shape[0] > 100
    assert "max over layers" in trace_tokens_html(screened.to_json())
    with pytest.raises(ValueError, match="NaN or infinity"):
        aggregate([screened.to_json()], "hidden")
