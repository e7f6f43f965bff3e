"""Quantizers, blank fill (SpiritLM's wrap-around), deduplication and frame spans."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spiritlens.units import (
    KmeansQuantizer,
    LinearQuantizer,
    SpeechUnits,
    deduplicate,
    fill_blanks,
    load_quantizer,
    plan_chunks,
)
from spiritlens.units.quantizer import linear_quantizer_sizes

B = 500  # the blank class of the 500-unit quantizer


@pytest.mark.parametrize("units,expected", [
    ([3, B, B, 7, B], [3, 3, 3, 7, 7]),
    ([B, 4, 5], [5, 4, 5]),  # frame 0 takes the LAST frame's unit (torch.roll wrap-around)
    ([B, B, 9, B], [9, 9, 9, 9]),  # frame 0 <- last (blank) <- 9: two passes
    ([B, B, B], [B, B, B]),  # all blank stays blank
    ([1, 2, 3], [1, 2, 3]),
])
def test_fill_blanks(units, expected):
    assert fill_blanks(torch.tensor(units), B).tolist() == expected


def test_fill_blanks_batch_is_flattened():
    """As in SpiritLM, a row's first frame takes the previous row's last unit."""
    assert fill_blanks(torch.tensor([[1, 2], [B, 3]]), B).tolist() == [[1, 2], [2, 3]]


def test_linear_quantizer_sizes_follow_spiritlm_formula():
    assert linear_quantizer_sizes(500, 768, 768) == [768, 768 - (267 // 4), 768 - (267 // 2), 501]
    assert linear_quantizer_sizes(500, 48, 48) == [48, 162, 275, 501]  # negative mid: floor division


def test_linear_quantizer_fills_blanks():
    q = LinearQuantizer(2, 4, 4).requires_grad_(False)  # out = 3 classes, class 2 is blank
    for layer in (q.encoder[0], q.encoder[2]):
        torch.nn.init.eye_(layer.weight)
        layer.bias.zero_()
    q.encoder[4].weight.copy_(torch.eye(3, q.encoder[4].weight.shape[1]))
    q.encoder[4].bias.zero_()
    feats = torch.zeros(5, 4)
    feats[[0, 3], 0] = 1  # unit 0
    feats[1, 1] = 1  # unit 1
    feats[[2, 4], 2] = 1  # blank
    assert q.log_probs(feats).argmax(-1).tolist() == [0, 1, 2, 0, 2]
    assert q(feats).tolist() == [0, 1, 1, 0, 0]


def test_kmeans_nearest_centre(tmp_path):
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    torch.save({"cluster_centers": centers.numpy(), "n_clusters": 3}, tmp_path / "km.pt")
    km = load_quantizer(tmp_path / "km.pt")
    assert isinstance(km, KmeansQuantizer) and km.vocab_size == 3
    assert km(torch.tensor([[1.0, 1.0], [9.0, 2.0], [4.0, 6.0], [-3, -3]])).tolist() == [0, 1, 2, 0]


def test_dedup_spans_tile_the_utterance():
    rng = np.random.default_rng(0)
    units = rng.integers(0, 4, size=300).tolist()
    tokens, spans = deduplicate(units)
    assert spans[0][0] == 0 and spans[-1][1] == len(units)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # no gap, no overlap
    assert all(s < e for s, e in spans)
    assert all(tokens[i] != tokens[i + 1] for i in range(len(tokens) - 1))
    assert [u for t, (s, e) in zip(tokens, spans) for u in [t] * (e - s)] == units


def test_speech_units_example_from_spiritlm():
    su = SpeechUnits.from_units([99, 49, 38, 149, 149, 71], frame_seconds=0.04, sample_rate=16_000, num_samples=4_560)
    assert su.tokens == [99, 49, 38, 149, 71]
    assert "".join(su.token_strings()) == "[Hu99][Hu49][Hu38][Hu149][Hu71]"
    assert su.spans == [(0, 1), (1, 2), (2, 3), (3, 5), (5, 6)]
    assert su.time_spans()[3] == pytest.approx((0.12, 0.20))
    data = su.to_json()
    assert data["units"] == [99, 49, 38, 149, 149, 71] and data["spans"][3] == [3, 5]
    assert data["frame_seconds"] == 0.04 and data["time_spans"][-1] == pytest.approx([0.2, 0.24])


def test_plan_chunks_skips_short_tail():
    assert plan_chunks(3_201_000, 1_600_000, 1280) == [(0, 1_600_000), (1_600_000, 3_200_000)]
    assert plan_chunks(3_202_000, 1_600_000, 1280)[-1] == (3_200_000, 3_202_000)
