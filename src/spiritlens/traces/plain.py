"""Causal tracing's restored runs as full forwards, for a model with hooks attached.

The fast restored runs (:mod:`spiritlens.traces.suffix`) compute the blocks from the Llama
weights, so a TransformerLens hook attached to the model (``model.add_hook``, an open
``model.hooks(...)``, a spliced SAE) would not act in them. When such hooks are attached to the
blocks, the final norm or the unembedding, the tracer scores every cell here instead: one
forward of the S noised rows through the bridge per cell, the noise added at ``hook_embed`` and
the row's positions restored to the clean run's values at the patched layers' hook points, with
every attached hook acting in it as it acted in the clean and corrupted runs. This is ROME's
per-cell loop (ROME's ``trace_with_patch``): exact, and slower (about ``rows x layers`` full forwards of
S rows; no cell is skipped by causality, since a hook need not be causal).
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np
import torch

from spiritlens.model import hook_names
from spiritlens.model.hook_names import attached_hooks

logger = logging.getLogger("spiritlens")


def _restore(clean: torch.Tensor, positions: list[int]) -> Callable:
    def hook(act, hook):
        act[:, positions] = clean[positions].to(act.dtype)
        return act

    return hook


def plain_scores(tracer, kind: str, rows: Sequence, patched_layers: Callable[[int], Sequence[int]],
                 progress: Callable | None = None) -> np.ndarray:
    """``[R, L]`` restored scores of ``rows`` by full forwards (module docstring).

    ``tracer``: a :class:`~spiritlens.traces.tracer.Tracer` (its ids, noise, clean states and
    score); ``patched_layers(layer)``: the layers a cell at ``layer`` restores (``[layer]`` for
    hidden, the window for mlp/attn). ``progress(1)`` once per layer."""
    hooks_at = attached_hooks(tracer.model.bridge)
    logger.warning("the model has hooks attached (%s%s): tracing runs every cell as a full forward with them, "
                   "slower than the suffix engine", ", ".join(hooks_at[:3]), " ..." if len(hooks_at) > 3 else "")
    L = tracer.n_layers
    ids = tracer.ids.expand(tracer.samples, -1)
    noise = (hook_names.EMBED, tracer._noise_hook(tracer.replace))
    scores = np.empty((len(rows), L), dtype=np.float64)
    with torch.inference_mode():
        for layer in range(L):
            patched = list(patched_layers(layer))
            for r, row in enumerate(rows):
                positions = sorted(set(row.positions))
                hooks = [noise] + [(hook_names.BY_KIND[kind](l), _restore(tracer._clean[kind][l], positions))
                                   for l in patched]
                scores[r, layer] = tracer._score(tracer.model.run_with_hooks(ids, fwd_hooks=hooks))
            if progress is not None:
                progress(1)
    return scores
