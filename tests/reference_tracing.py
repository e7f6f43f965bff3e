"""A plain per-cell causal-tracing reference (CAUSAL_TRACING.md §8 in ROME's batch layout).

Written independently of ``spiritlens.traces``: one ``run_with_hooks`` forward of S+1 rows per
cell, row 0 clean, noise added at ``hook_embed`` on rows 1..S, and each restored state copied
from row 0 of the same batch, as ROME's ``trace_with_patch`` does. Used by the parity tests and
by ``benchmarks/bench_trace.py`` as the baseline.
"""

from __future__ import annotations

import numpy as np
import torch

HOOK = {"hidden": "blocks.{}.hook_resid_post", "mlp": "blocks.{}.hook_mlp_out", "attn": "blocks.{}.hook_attn_out"}


def reference_trace(model, ids, b, e, kind, *, samples, nu, seed=1, window=10, replace=False,
                    fix_low=False, uniform=False, rows=None, answer=None, target=None):
    """ROME's trace of token ids ``ids`` with the subject at [b, e): every cell of every row, each a
    full forward of S+1 rows. ``rows``: lists of positions restored together (default: one per
    position). ``answer``: the token id scored (default: the clean run's top-1 over the whole
    vocabulary, as ROME). ``target``: token ids t_1..t_K scored together instead: every forward
    runs ``ids + t_1..t_{K-1}`` and a row's score is the product of its probabilities of t_k at
    positions ``T-1+k-1`` (the rows' mean of those products; rows of the table are still the
    prompt's positions). Returns ``(table [len(rows), L], low_score, high_score, answer_id)``
    (answer_id: t_1 with a target); the softmax is taken in the model's dtype, as ROME does."""
    T, L, d = len(ids), model.cfg.n_layers, model.cfg.d_model
    rows = rows or [[t] for t in range(T)]
    pieces = [int(t) for t in target] if target is not None else None
    sequence = list(ids) + (pieces[:-1] if pieces else [])
    batch = torch.tensor([sequence] * (samples + 1))
    rng = np.random.RandomState(seed)
    z = nu * (rng.uniform(-1, 1, (samples, e - b, d)) if uniform else rng.randn(samples, e - b, d))
    z = torch.from_numpy(z)

    def noise(rep):
        def hook(act, hook):
            if rep:
                act[1:, b:e] = z.to(act.dtype)
            else:
                act[1:, b:e] += z
            return act
        return ("hook_embed", hook)

    def from_row0(positions):
        def hook(act, hook):
            act[1:, positions] = act[0, positions]
            return act
        return hook

    def probability(logits):
        """Each row's score: p(answer) at the last position, or the product over the pieces."""
        if pieces is None:
            return torch.softmax(logits[:, -1], dim=-1)[:, answer]
        total = torch.ones(logits.shape[0], dtype=torch.float64)
        for k, piece in enumerate(pieces):
            total = total * torch.softmax(logits[:, T - 1 + k], dim=-1)[:, piece].double()
        return total

    with torch.no_grad():
        clean_logits = model(batch[:1])
        if pieces is None:
            answer = int(clean_logits[0, -1].argmax()) if answer is None else int(answer)
        else:
            answer = pieces[0]
        high = float(probability(clean_logits)[0])

        def score(hooks):
            logits = model.run_with_hooks(batch, fwd_hooks=hooks)
            if pieces is None:
                return float(torch.softmax(logits[1:, -1], dim=-1).mean(dim=0)[answer])
            return float(probability(logits[1:]).mean())  # mean over the rows of each row's product

        low = score([noise(replace and fix_low)])
        table = np.zeros((len(rows), L))
        for r, positions in enumerate(rows):
            for layer in range(L):
                if kind == "hidden":
                    layers = [layer]
                else:
                    layers = range(max(0, layer - window // 2), min(L, layer - (-window // 2)))
                hooks = [noise(replace)] + [(HOOK[kind].format(j), from_row0(positions)) for j in layers]
                table[r, layer] = score(hooks)
    return table, low, high, answer
