"""Padding rules of spiritlens.model.batching against a brute-force rule written here."""

from __future__ import annotations

import random

import pytest
import torch

from spiritlens.model.batching import is_prompt_batch, left_padding_mask, pad_rows

PAD, BOS = 2, 1


def brute_pad(rows, side):
    width = max(map(len, rows))
    tokens, mask = [], []
    for row in rows:
        pads = [PAD] * (width - len(row))
        tokens.append(row + pads if side == "right" else pads + row)
        mask.append([1] * len(row) + [0] * len(pads) if side == "right" else [0] * len(pads) + [1] * len(row))
    return tokens, mask


@pytest.mark.parametrize("side", ["right", "left"])
def test_pad_rows_against_brute_force(side):
    rng = random.Random(0)
    for _ in range(50):
        rows = [[BOS] + [rng.randrange(3, 50) for _ in range(rng.randrange(0, 9))] for _ in range(rng.randrange(1, 5))]
        tokens, mask, offsets = pad_rows(rows, PAD, side)
        expected_tokens, expected_mask = brute_pad(rows, side)
        assert tokens.tolist() == expected_tokens and mask.tolist() == expected_mask
        assert offsets == [m.index(1) for m in expected_mask]
        # left padding is found again from the tokens alone (BOS after the leading pads)
        inferred = left_padding_mask(tokens, PAD, BOS)
        if side == "left" and any(o > 0 for o in offsets) and len(rows) > 1:
            assert inferred.tolist() == expected_mask
        elif side == "right":
            assert inferred is None


def test_left_padding_mask_needs_bos_after_the_pads():
    tokens = torch.tensor([[PAD, PAD, 7, 8], [BOS, 5, 6, 7]])  # no BOS after the pads: not our padding
    assert left_padding_mask(tokens, PAD, BOS) is None
    assert left_padding_mask(torch.tensor([[PAD, BOS, 5]]), PAD, BOS) is None  # one row is not a batch


def test_what_counts_as_a_batch_of_prompts():
    assert is_prompt_batch(["a", "b"])
    assert is_prompt_batch([[("text", "a")], [("speech", "x.wav"), ("text", " b")]])
    assert not is_prompt_batch("a")
    assert not is_prompt_batch([("text", "a"), ("text", "b")])  # one prompt of two segments
    assert not is_prompt_batch([1, 2, 3]) and not is_prompt_batch([[1, 2], [3, 4]]) and not is_prompt_batch([])


def test_bad_padding_is_one_line():
    with pytest.raises(ValueError, match="padding_side must be 'right' or 'left', got 'up'"):
        pad_rows([[1]], PAD, "up")
    with pytest.raises(ValueError, match="prompt 1 of the batch has no tokens"):
        pad_rows([[1], []], PAD)
