"""Representation geometry across modalities: does a spoken word land where its written form does?

For each word of a fact (a whitespace-separated word of the prompt) and each layer ``l``, from
the clean runs:

- ``t[w, l]``: mean over the word's LM text tokens of the text run's ``resid_post[l]``;
- ``s[w, l]``: mean over the word's aligned speech positions (the union of its tokens' speech
  groups) of the spoken run's ``resid_post[l]``;
- ``cosine[w, l] = t·s / (|t| |s|)``, ``distance[w, l] = |t - s|`` (Euclidean), and both norms
  ``text_norm = |t|``, ``speech_norm = |s|`` (units: the residual stream's, before the final norm).

A similarity only means something against a baseline: ``mismatched_cosine[l]`` and
``mismatched_distance[l]`` compare each word's text state with the speech state of every *other*
word of the same fact at the same layer (the mean over ordered pairs ``w != v``). The paper's
hypothesis (a modality gap: directions converge across layers while magnitudes stay apart) reads
as matched cosine rising above the mismatched baseline while ``speech_norm / text_norm`` stays
away from 1 and the distance stays large.

Words with no text token or no aligned speech token are left out (``excluded_words``).
All arithmetic is in float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from spiritlens.crossmodal.fact import SPEECH, TEXT, CrossModalFact, ResultFile, as_float_array, check_values

QUANTITIES = ("cosine", "distance", "text_norm", "speech_norm")


def group_means(states: torch.Tensor | np.ndarray, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """``[W, L, d]`` float64 means of ``states`` ``[L, T, d]`` over each group's positions."""
    array = states.detach().cpu().double().numpy() if isinstance(states, torch.Tensor) else np.asarray(states, float)
    if array.ndim != 3:
        raise ValueError(f"states must be [layers, positions, d_model], got shape {array.shape}")
    for group in groups:
        if not len(group) or not all(0 <= p < array.shape[1] for p in group):
            raise ValueError(f"group {list(group)} is empty or outside positions 0..{array.shape[1] - 1}")
    return np.stack([array[:, list(group)].mean(axis=1) for group in groups])


def compare_means(text: np.ndarray, speech: np.ndarray) -> dict[str, np.ndarray]:
    """Cosine, distance and norms of paired means ``[W, L, d]``, and the mismatched baseline.

    Returns ``cosine``, ``distance``, ``text_norm``, ``speech_norm`` ``[W, L]`` and
    ``mismatched_cosine``, ``mismatched_distance`` ``[L]`` (mean over ordered pairs of different
    words; NaN with fewer than two words). A zero vector has an undefined (NaN) cosine.
    """
    if text.shape != speech.shape or text.ndim != 3:
        raise ValueError(f"text means {text.shape} and speech means {speech.shape} must both be [W, L, d]")
    W, L = text.shape[:2]
    text_norm, speech_norm = np.linalg.norm(text, axis=-1), np.linalg.norm(speech, axis=-1)
    # all pairs (word w's text, word v's speech): [W, W, L]
    dots = np.einsum("wld,vld->wvl", text, speech)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dots / (text_norm[:, None] * speech_norm[None, :])
    dist = np.stack([np.linalg.norm(text - speech[v], axis=-1) for v in range(W)], axis=1)  # [W, W, L]
    diagonal = np.arange(W)
    off = ~np.eye(W, dtype=bool)
    if W > 1:
        mismatched_cos, mismatched_dist = cos[off].mean(axis=0), dist[off].mean(axis=0)
    else:
        mismatched_cos = mismatched_dist = np.full(L, np.nan)
    return {"cosine": cos[diagonal, diagonal], "distance": dist[diagonal, diagonal], "text_norm": text_norm,
            "speech_norm": speech_norm, "mismatched_cosine": mismatched_cos, "mismatched_distance": mismatched_dist}


@dataclass
class GeometryResult(ResultFile):
    """Per word and layer: ``cosine``, ``distance``, ``text_norm``, ``speech_norm`` ``[W, L]``; the
    mismatched-word baseline ``mismatched_cosine``, ``mismatched_distance`` ``[L]`` (module doc)."""

    ANALYSIS = "geometry"

    name: str
    prompt: str
    subject: str
    n_layers: int
    words: list
    text_positions: list
    speech_positions: list
    cosine: np.ndarray
    distance: np.ndarray
    text_norm: np.ndarray
    speech_norm: np.ndarray
    mismatched_cosine: np.ndarray
    mismatched_distance: np.ndarray
    excluded_words: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in (*QUANTITIES, "mismatched_cosine", "mismatched_distance"):
            setattr(self, name, as_float_array(getattr(self, name)))
        for name in QUANTITIES:
            value = getattr(self, name)
            if value.size == 0:
                setattr(self, name, value.reshape(0, self.n_layers))

    def validate(self) -> None:
        """Shapes ``[W, L]`` (``W`` words) and ``[L]``; cosines in [-1, 1] (NaN for a zero state); distances and
        norms finite and >= 0; the baselines NaN only when there is no other word."""
        where, W, L = f"geometry result {self.name}", len(self.words), self.n_layers
        if len(self.text_positions) != W or len(self.speech_positions) != W:
            raise ValueError(f"{where}: {W} words but {len(self.text_positions)} text and "
                             f"{len(self.speech_positions)} speech position lists")
        check_values(where, "cosine", self.cosine, low=-1 - 1e-6, high=1 + 1e-6, allow_nan=True, shape=(W, L))
        for name in ("distance", "text_norm", "speech_norm"):
            check_values(where, name, getattr(self, name), low=0.0, shape=(W, L))
        check_values(where, "mismatched_cosine", self.mismatched_cosine, low=-1 - 1e-6, high=1 + 1e-6,
                     allow_nan=True, shape=(L,))
        check_values(where, "mismatched_distance", self.mismatched_distance, low=0.0, allow_nan=True, shape=(L,))

    def word_mean(self, quantity: str) -> np.ndarray:
        """``[L]`` mean over the fact's words of one of ``cosine``, ``distance``, ``text_norm``, ``speech_norm``."""
        if quantity not in QUANTITIES:
            raise ValueError(f"unknown quantity {quantity!r}; use one of {', '.join(QUANTITIES)}")
        values = getattr(self, quantity)
        return values.mean(axis=0) if len(values) else np.full(self.n_layers, np.nan)


def representation_geometry(model, fact: CrossModalFact) -> GeometryResult:
    """Text vs speech states of every word of ``fact`` at every layer (clean runs; module doc)."""
    words = fact.words()
    kept = [w for w in words if w.text_positions and w.speech_positions]
    excluded = [w.text for w in words if not (w.text_positions and w.speech_positions)]
    L = model.cfg.n_layers
    if kept:
        text = group_means(fact.clean_run(model, TEXT).resid_post, [w.text_positions for w in kept])
        speech = group_means(fact.clean_run(model, SPEECH).resid_post, [w.speech_positions for w in kept])
        numbers = compare_means(text, speech)
    else:
        empty = np.zeros((0, L))
        numbers = dict.fromkeys(QUANTITIES, empty) | {"mismatched_cosine": np.full(L, np.nan),
                                                      "mismatched_distance": np.full(L, np.nan)}
    return GeometryResult(fact.name, fact.prompt, fact.subject, L, [w.text for w in kept],
                          [w.text_positions for w in kept], [w.speech_positions for w in kept],
                          excluded_words=excluded, settings={"states": "resid_post"}, **numbers)
