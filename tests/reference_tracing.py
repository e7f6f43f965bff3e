"""A plain per-cell causal-tracing reference (ROME's batch layout: row 0 clean, rows 1..S noised).

Written independently of ``spiritlens.traces``: one ``run_with_hooks`` forward of S+1 rows per
cell, row 0 clean, noise added at ``hook_embed`` on rows 1..S, and each restored state copied
from row 0 of the same batch, as ROME's ``trace_with_patch`` does. Used by the parity tests and
by ``benchmarks/bench_trace.py`` as the baseline. :func:`linearised_reference` is attribution
patching's reference: each cell's first-order expansion, by autograd through the hooked model.
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


def window_of(layer, window, L):
    return range(max(0, layer - window // 2), min(L, layer - (-window // 2)))


def linearised_reference(model, ids, b, e, kind, rows, *, window, answer, samples, nu, seed=1, pieces=None,
                         replace=False, drop=None, slope_only=False):
    """[len(rows), L]: f(0) + f'(0) per cell, f as in the module docstring (one forward and one
    backward per cell through the bridge). ``pieces``: a whole target t_1..t_K scored instead of
    ``answer`` (the run is ``ids + t_1..t_{K-1}``, a row's score the product of its K probabilities);
    ``replace``: the subject's embeddings are overwritten by the noise. ``drop``: block ``drop``'s
    attention and MLP outputs are detached after the cell's change (GradDrop: no derivative through
    that layer's residual contributions). ``slope_only``: f'(0) alone."""
    L, d = model.cfg.n_layers, model.cfg.d_model
    z = torch.from_numpy(nu * np.random.RandomState(seed).randn(samples, e - b, d))
    sequence = list(ids) + list(pieces or [None])[:-1]
    tokens = torch.tensor([sequence] * samples)
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.tensor([sequence]))

    def noise(act, hook):
        if replace:
            act[:, b:e] = z.to(act.dtype)
        else:
            act[:, b:e] += z
        return act

    def score_of(logits):
        if pieces is None:
            return torch.softmax(logits[:, -1].float(), dim=-1)[:, answer].mean()
        T0 = len(ids)
        rows = [torch.softmax(logits[:, T0 - 1 + k].float(), dim=-1)[:, piece].double() for k, piece in enumerate(pieces)]
        return torch.stack(rows, dim=-1).prod(dim=-1).mean()

    def towards_clean(name, positions, eps):
        clean = cache[name][0, positions]

        def hook(act, hook):
            act = act.clone()
            act[:, positions] = act[:, positions] + eps * (clean - act[:, positions].detach())
            return act
        return hook

    table = np.zeros((len(rows), L))
    for r, positions in enumerate(rows):
        for layer in range(L):
            layers = [layer] if kind == "hidden" else window_of(layer, window, L)
            eps = torch.zeros((), requires_grad=True)
            names = [HOOK[kind].format(j) for j in layers]
            hooks = [("hook_embed", noise)] + [(name, towards_clean(name, positions, eps)) for name in names]
            if drop is not None:
                hooks += [(f"blocks.{drop}.hook_{part}_out", lambda act, hook: act.detach()) for part in ("attn", "mlp")]
            logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
            score = score_of(logits)
            (slope,) = torch.autograd.grad(score, eps, allow_unused=True)  # None: nothing depends on eps
            slope = 0.0 if slope is None else slope
            table[r, layer] = float(slope) if slope_only else float(score.detach()) + float(slope)
    return table
