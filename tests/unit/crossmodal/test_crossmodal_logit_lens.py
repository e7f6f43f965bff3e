"""Logit-lens arithmetic: ranks with ties and chunking, and chance by enumeration."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
import torch

from spiritlens.crossmodal import logit_lens
from spiritlens.crossmodal.logit_lens import chance_reciprocal_rank, rank_of


def test_rank_counts_strictly_larger_logits_and_ties_share_the_better_rank():
    logits = torch.tensor([[0.5, 2.0, 2.0, -1.0, 0.5]])
    ranks = rank_of(logits, torch.tensor([1, 2, 0, 4, 3]))
    assert ranks.tolist() == [[1, 1, 3, 3, 5]]


def test_rank_equals_a_sort_based_reference_in_any_chunking(monkeypatch):
    rng = np.random.default_rng(1)
    logits = torch.from_numpy(rng.normal(size=(3, 7, 50))).float()
    targets = torch.tensor([4, 17, 49])
    expected = np.empty((3, 7, 3), dtype=np.int64)
    for i, j in itertools.product(range(3), range(7)):
        order = list(np.argsort(-logits[i, j].numpy(), kind="stable"))
        expected[i, j] = [order.index(t) + 1 for t in targets.tolist()]
    assert np.array_equal(rank_of(logits, targets).numpy(), expected)
    monkeypatch.setattr(logit_lens, "_RANK_CHUNK", 7)  # one row per block
    assert np.array_equal(rank_of(logits, targets).numpy(), expected)


@pytest.mark.parametrize("n, k", [(1, 1), (5, 1), (6, 2), (7, 3), (4, 4)])
def test_chance_reciprocal_rank_equals_enumeration(n, k):
    placements = list(itertools.combinations(range(1, n + 1), k))
    exact = sum(Fraction(1, min(p)) for p in placements) / len(placements)
    assert chance_reciprocal_rank(n, k) == pytest.approx(float(exact), rel=1e-12)


def test_chance_for_one_target_is_the_harmonic_mean():
    n = 1024
    assert chance_reciprocal_rank(n, 1) == pytest.approx(sum(1 / r for r in range(1, n + 1)) / n, rel=1e-12)


def test_chance_needs_targets():
    with pytest.raises(ValueError, match="1 <= k <= n"):
        chance_reciprocal_rank(3, 0)
