"""Geometry arithmetic: a run against itself, invariances, and a brute-force numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spiritlens.crossmodal.geometry import compare_means, group_means

RNG = np.random.default_rng(0)
STATES = RNG.normal(size=(3, 12, 16))  # [L, T, d]
GROUPS = [[1], [2, 3], [4, 5, 6], [9]]


def _brute(text: np.ndarray, speech: np.ndarray):
    """Loops over words, layers and word pairs, no vectorisation."""
    W, L = text.shape[:2]
    cos = np.empty((W, W, L))
    dist = np.empty((W, W, L))
    for a in range(W):
        for b in range(W):
            for layer in range(L):
                t, s = text[a, layer], speech[b, layer]
                cos[a, b, layer] = np.dot(t, s) / (np.sqrt(np.dot(t, t)) * np.sqrt(np.dot(s, s)))
                dist[a, b, layer] = np.sqrt(((t - s) ** 2).sum())
    off = [(a, b) for a in range(W) for b in range(W) if a != b]
    return cos, dist, np.mean([cos[a, b] for a, b in off], axis=0), np.mean([dist[a, b] for a, b in off], axis=0)


def test_group_means_average_positions_per_layer():
    means = group_means(torch.from_numpy(STATES).float(), GROUPS)
    assert means.shape == (4, 3, 16) and means.dtype == np.float64
    assert np.allclose(means[2, 1], STATES[1, [4, 5, 6]].mean(axis=0), atol=1e-6)


def test_a_run_against_itself_has_cosine_one_and_distance_zero():
    text = group_means(STATES, GROUPS)
    numbers = compare_means(text, text.copy())
    assert np.allclose(numbers["cosine"], 1.0, atol=1e-12)
    assert np.all(numbers["distance"] == 0.0)
    assert np.array_equal(numbers["text_norm"], numbers["speech_norm"])
    cos, dist, mis_cos, mis_dist = _brute(text, text)
    assert np.allclose(numbers["mismatched_cosine"], mis_cos, atol=1e-12)
    assert np.allclose(numbers["mismatched_distance"], mis_dist, rtol=1e-12)
    assert np.all(numbers["mismatched_cosine"] < 0.9)  # different words are not the same vector


@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_scaling_one_side_changes_distance_and_norm_not_cosine(scale):
    text = group_means(STATES, GROUPS)
    base = compare_means(text, text)
    scaled = compare_means(text, scale * text)
    assert np.allclose(scaled["cosine"], base["cosine"], atol=1e-12)
    assert np.allclose(scaled["mismatched_cosine"], base["mismatched_cosine"], atol=1e-12)
    assert np.allclose(scaled["distance"], abs(1 - scale) * base["text_norm"], rtol=1e-12)
    assert np.allclose(scaled["speech_norm"], scale * base["text_norm"], rtol=1e-12)
    assert not np.allclose(scaled["mismatched_distance"], base["mismatched_distance"])


def test_unrelated_states_match_a_brute_force_loop():
    text = group_means(STATES, GROUPS)
    speech = group_means(RNG.normal(size=(3, 20, 16)) + 0.3 * STATES.mean(axis=1, keepdims=True), [[0], [5, 6], [7], [19]])
    numbers = compare_means(text, speech)
    cos, dist, mis_cos, mis_dist = _brute(text, speech)
    idx = np.arange(4)
    assert np.allclose(numbers["cosine"], cos[idx, idx], atol=1e-12)
    assert np.allclose(numbers["distance"], dist[idx, idx], rtol=1e-12)
    assert np.allclose(numbers["mismatched_cosine"], mis_cos, atol=1e-12)
    assert np.allclose(numbers["mismatched_distance"], mis_dist, rtol=1e-12)


def test_one_word_has_no_mismatched_baseline():
    text = group_means(STATES, [[1, 2]])
    numbers = compare_means(text, text)
    assert np.all(np.isnan(numbers["mismatched_cosine"])) and numbers["cosine"].shape == (1, 3)


@pytest.mark.parametrize("groups, message", [([[]], "empty"), ([[0, 12]], "outside positions 0..11")])
def test_bad_groups(groups, message):
    with pytest.raises(ValueError, match=message):
        group_means(STATES, groups)


def test_mismatched_shapes_are_an_error():
    with pytest.raises(ValueError, match="must both be"):
        compare_means(np.zeros((2, 3, 4)), np.zeros((3, 3, 4)))
