"""Means and 95% CIs over facts, and the sentences computed from them (README criteria)."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from spiritlens.crossmodal import (
    CrossModalSummary,
    GeometryResult,
    LogitLensResult,
    PatchingResult,
    summarize,
)
from spiritlens.crossmodal.summary import mean_ci

L = 4


def _patching(name: str, low: float, high: float, cross, self_) -> PatchingResult:
    receivers = {m: {"modality": m, "answer_id": 7, "answer": "x", "high_score": high, "low_score": low,
                     "noise": 0.1, "sigma": None, "subject_range": [3, 5]} for m in ("text", "speech")}
    curves = [{"direction": d, "mode": "last", "positions": [4], "source_positions": [9],
               "scores": list(cross), "self_scores": list(self_)} for d in ("text_to_speech", "speech_to_text")]
    return PatchingResult(name, "p", "s", L, {}, {}, receivers, curves)


def _geometry(name: str, cosine, mismatched) -> GeometryResult:
    cosine = np.asarray(cosine, dtype=float)
    return GeometryResult(name, "p", "s", L, ["a", "b"], [[2], [3]], [[3], [4]], cosine, 1 - cosine,
                          np.ones_like(cosine), 2 * np.ones_like(cosine), mismatched, np.ones(L))


def _lens(name: str, best_ranks) -> LogitLensResult:
    ranks = np.asarray(best_ranks, dtype=np.int64)[:, :, None]  # [P, L, 1]
    positions = list(range(3, 3 + len(ranks)))
    return LogitLensResult(name, "p", "s", L, 100, [5], [" S"], positions, [str(p) for p in positions],
                           [0] * len(positions), ranks, np.zeros(ranks.shape), [2], ranks[:1], np.zeros(ranks[:1].shape))


def test_mean_ci_is_the_t_interval_of_the_mean():
    rows = [[0.1, 0.5], [0.3, 0.2], [0.2, 0.9], [0.6, 0.4]]
    band = mean_ci(rows)
    for layer in range(2):
        column = [r[layer] for r in rows]
        assert band.mean[layer] == pytest.approx(statistics.fmean(column))
        # t(0.975, 3) = 3.18245 (scipy.stats.t.ppf(0.975, 3))
        assert band.ci[layer] == pytest.approx(3.1824463052837078 * statistics.stdev(column) / math.sqrt(4))
    assert band.n == 4


def test_mean_ci_drops_rows_with_nan_and_has_no_ci_for_one_row():
    band = mean_ci([[1.0, np.nan], [3.0, 5.0]])
    assert band.n == 1 and band.mean.tolist() == [3.0, 5.0] and np.isnan(band.ci).all()
    assert mean_ci([], n_layers=3).n == 0 and mean_ci([], n_layers=3).mean.shape == (3,)


def test_summarize_averages_indirect_effects_over_facts():
    facts = [_patching("a", 0.1, 0.9, [0.5, 0.3, 0.2, 0.1], [0.6, 0.4, 0.2, 0.1]),
             _patching("b", 0.2, 0.6, [0.4, 0.4, 0.2, 0.2], [0.5, 0.3, 0.3, 0.2])]
    summary = summarize(patching=facts)
    bands = summary.patching["text_to_speech/last"]
    assert np.allclose(bands["cross"].mean, [0.3, 0.2, 0.05, 0.0])
    assert np.allclose(bands["self"].mean, [0.4, 0.2, 0.1, 0.0])
    assert bands["total_effect"].mean[0] == pytest.approx(0.6)
    assert bands["cross"].ci[0] == pytest.approx(12.706204736174694 * statistics.stdev([0.4, 0.2]) / math.sqrt(2))
    assert set(summary.patching) == {"text_to_speech/last", "speech_to_text/last"}
    assert summary.facts == ["a", "b"]


def test_summarize_geometry_and_logit_lens():
    geometry = [_geometry("a", [[0.1, 0.2, 0.3, 0.4], [0.3, 0.4, 0.5, 0.6]], [0.0, 0.1, 0.1, 0.1]),
                _geometry("b", [[0.2, 0.2, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2]], [np.nan] * L)]
    lens = [_lens("a", [[1, 2, 4, 100], [2, 2, 4, 50]])]
    summary = summarize(geometry=geometry, logit_lens=lens)
    assert np.allclose(summary.geometry["cosine"].mean, [0.2, 0.25, 0.3, 0.35])
    assert summary.geometry["mismatched_cosine"].n == 1  # the NaN baseline is left out
    assert np.allclose(summary.logit_lens["speech"].mean, [0.75, 0.5, 0.25, 0.015])
    assert summary.logit_lens["text"].mean.tolist() == [1.0, 0.5, 0.25, 0.01]
    assert 0 < summary.logit_lens["chance"] < 0.1


def test_summarize_refuses_nothing_and_mixed_depths():
    with pytest.raises(ValueError, match="nothing to summarise"):
        summarize()
    other = _patching("c", 0.1, 0.9, [0.1] * L, [0.1] * L)
    other.n_layers = 8
    with pytest.raises(ValueError, match="different depths"):
        summarize(patching=[_patching("a", 0.1, 0.9, [0.1] * L, [0.1] * L), other])


def _sentences(cross_scale: float, self_scale: float = 1.0) -> list[str]:
    rng = np.random.default_rng(0)
    facts = []
    for i in range(8):
        self_ = self_scale * np.array([0.5, 0.6, 0.3, 0.0]) + 0.1 + rng.normal(0, 0.01, L)
        cross = cross_scale * (self_ - 0.1) + 0.1 + rng.normal(0, 0.01, L)
        facts.append(_patching(str(i), 0.1, 0.9, cross, self_))
    return summarize(patching=facts).findings()


def test_findings_apply_the_readme_criteria():
    shared = _sentences(0.9)[0]
    assert "text state → noised spoken run" in shared and "reads the other modality's state" in shared
    assert "layer 1" in shared and "(n = 8)" in shared
    assert "no evidence" in _sentences(0.1)[0]
    assert "barely carry the fact" in _sentences(0.9, self_scale=0.05)[0]


def test_findings_and_table_for_every_analysis_round_trip(tmp_path):
    summary = summarize([_patching("a", 0.1, 0.9, [0.5, 0.3, 0.2, 0.1], [0.6, 0.4, 0.2, 0.1])],
                        [_geometry("a", [[0.1, 0.2, 0.3, 0.4], [0.3, 0.4, 0.5, 0.6]], [0.0, 0.1, 0.1, 0.1])],
                        [_lens("a", [[1, 2, 4, 100], [2, 2, 4, 50]])])
    back = CrossModalSummary.load(summary.save(tmp_path / "summary.json"))
    assert back.findings() == summary.findings() and len(back.findings()) == 4
    assert "no confidence interval with one fact" in back.findings()[0]
    assert "from 0.2 (layer 0) to 0.5 (layer 3)" in back.findings()[2]
    table = back.table("patching")
    assert len(table) == 2 + L and table[2].startswith("| 0 | 0.4 | 0.5 |")
    assert back.table("geometry")[2].startswith("| 0 | 0.2 | 0 | 0.8 | 1 | 1 | 2 |")
    assert back.table("logit_lens")[2] == "| 0 | 0.75 | 1 |"
    with pytest.raises(ValueError, match="unknown analysis"):
        back.table("lens")
    assert np.array_equal(back.geometry["cosine"].mean, summary.geometry["cosine"].mean)
