"""The reference backend: every intervention a full forward through the hooked model.

Each intervention runs the corrupted rows through ``model.run_with_hooks`` with the corruption's
hook at ``hook_embed`` and, at each restored layer's hook point, the restored positions set to the
source's values: ROME's per-cell loop (``trace_with_patch``). Everything attached to the model acts
in it as in the clean and corrupted runs: TransformerLens hooks, spliced SAEs, plain PyTorch hooks on
the bridge's modules; and it works for any architecture the TransformerBridge supports. With user
hooks attached each intervention is its own forward of S rows (a hook may depend on the batch);
otherwise up to ``max_rows`` rows of several interventions share a forward (each S rows with the
same corruption).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from spiritlens.interventions.spec import Intervention, site_hook
from spiritlens.model import hook_names

DEFAULT_MAX_ROWS = 64


def _setter(entries: list[tuple[slice, list[int], torch.Tensor]]) -> Callable:
    def restore(act, hook):
        for rows, positions, values in entries:
            act[rows, positions] = values.to(device=act.device, dtype=act.dtype)
        return act

    return restore


def reference_scores(run, interventions: Sequence[Intervention], *, batch: bool,
                     max_rows: int = DEFAULT_MAX_ROWS, done: Callable[[Sequence[int]], None] | None = None
                     ) -> np.ndarray:
    """Scores ``[len(interventions)]`` (float64) of ``run`` (an
    :class:`~spiritlens.interventions.run.InterventionRun`) by full forwards (module docstring).
    ``batch``: several interventions per forward; ``done(indices)`` after each forward."""
    corruption, S = run.corruption, run.corruption.samples
    per_forward = max(1, max_rows // S) if batch else 1
    rows = corruption.rows(run.ids)
    out = np.empty(len(interventions), dtype=np.float64)
    with torch.inference_mode():
        for first in range(0, len(interventions), per_forward):
            chunk = list(range(first, min(first + per_forward, len(interventions))))
            G = len(chunk)
            hooks = []
            embed = corruption.embed_hook(copies=G)
            if embed is not None:
                hooks.append((hook_names.EMBED, embed))
            at: dict[str, list] = {}
            for g, index in enumerate(chunk):
                for restore in interventions[index]:
                    for layer in restore.layers:
                        values = run.source_values(restore, layer)  # [P, d]
                        at.setdefault(site_hook(restore.site, layer), []).append(
                            (slice(g * S, (g + 1) * S), list(restore.positions), values))
            hooks += [(name, _setter(entries)) for name, entries in at.items()]
            logits = run.model.run_with_hooks(rows.repeat(G, 1), fwd_hooks=hooks)
            probs = run.metric.probabilities(run.metric.scored(logits)).view(G, S, -1)
            out[chunk] = run.metric.reduce(probs).cpu().numpy()
            if done is not None:
                done(chunk)
    return out
