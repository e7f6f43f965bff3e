"""Attribution patching (AtP) for causal tracing: every cell of a trace from one gradient.

**What is estimated.** A causal-tracing cell (row r, layer l) restores, in every corrupted row s,
the clean value of a state at the row's positions P (ROME). Attribution patching
(Nanda 2023, "Attribution patching: activation patching at industrial scale"; Syed et al. 2023;
Kramár et al. 2024, "AtP*", arXiv:2403.00745) replaces each restored run by the first-order Taylor
expansion of the score around the corrupted run::

    est[r, l] = baseline + (1/S) sum_s sum_{j in J(l)} sum_{t in P_r} (c_j[t] - x_j[s, t]) . d p_s / d x_j[s, t]

- ``x_j``: the corrupted run's state (``hook_resid_post`` for hidden; ``hook_mlp_out`` /
  ``hook_attn_out`` for mlp / attn), ``c_j`` the clean run's (the exact tracer's own caches);
- ``p_s``: corrupted row s's score (the answer's probability at the last position, or the
  whole-target product for ``target_rule="sequence"``): the tracer's score is their mean, so the
  gradient of ``sum_s p_s`` is taken once, and each row's term uses its own gradient: the estimate
  is averaged over the exact tracer's own noise samples (same seed, same draw, same rows);
- ``J(l)``: ``{l}`` for hidden, ROME's window around ``l`` for mlp / attn: a window sums its layers'
  terms, and a row of several positions (a spoken prompt's text-token group) sums its positions';
- ``baseline``: the corrupted runs' own score (``low_score``; with ROME's replace quirk the
  replace-mode score, as the exact engine).

Cells the exact engine knows without a run keep those values: rows before the subject are
``baseline`` and, for hidden with a one-token answer, the last layer is ``high_score`` at the last
position and ``baseline`` elsewhere (:func:`estimated_cells` lists the rest).

**Passes.** The tracer's clean run, and one corrupted forward with autograd through the hooked model
plus one backward (:meth:`InterventionRun.gradients <spiritlens.interventions.run.InterventionRun.gradients>`,
:mod:`spiritlens.interventions.gradients`), for all kinds at once: the corrupted run's score comes from
that forward too. Every hook attached to the model (an ablation, a spliced SAE, a plain PyTorch hook)
acts in it, so the estimate is the linearisation of the hooked model; backward hooks, or a hook that
cuts the gradient, are refused in one line.

**QK fix** (``method="attribution_qk"``; AtP*'s fix for attention saturation, Kramár et al. 2024): a
linear estimate cannot follow an attention softmax that the restoration moves into or out of
saturation. AtP* recomputes the softmax exactly when the patched node is a query or a key; here the
patched node is a block's output, whose change reaches queries and keys first in the next block, so
that is where the softmax is recomputed. For every term (one restored layer j, row r) the change
that reaches the next block m = j + 1 is computed exactly at P (hidden: the restored state; mlp:
the restored output; attn: the restored output plus its exact effect on block j's MLP, which is
per position), the queries and keys of block m at P are recomputed from it, and block m's
attention pattern over every query position ``>= min(P)`` is recomputed exactly (softmax of the new
logits). The term becomes::

    delta . dp/d resid_pre[m]  -  (linearised pattern change) . dp/dA_m  +  (exact pattern change) . dp/dA_m

i.e. the first-order path through block m's softmax is replaced by the exact pattern change, and
everything after block m stays linear. A term whose j is the last layer has no block m and stays
plain. Not done: the QK fix at blocks after m (their input change is itself only known to first
order). Block m's queries, keys and pattern are recomputed from the weights
(:class:`~spiritlens.model.llama.LlamaStack`), so the QK fix needs a Llama with no hook attached
inside its blocks (refused in one line otherwise; plain AtP runs through hooks).

**GradDrop** (AtP*'s second fix, for cancellation between paths): :func:`graddrop_magnitudes`, one
more backward per layer with that layer's gradient dropped, averaged as unsigned magnitudes. It ranks
cells; it is not a score, so it is not a ``method`` of ``trace`` but a way to choose the cells to
verify (``verify_rank="graddrop"``); benchmarks/bench_attribution.py measures its top-cell recall
beside the signed estimates.

Shapes: ``S`` corrupted rows, ``T`` traced positions, ``L`` layers, ``d`` d_model. Estimates are
float64 probabilities ``[R, L]`` like the exact engine's scores; they are not clipped to [0, 1].
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from spiritlens.interventions import KIND_SITE
from spiritlens.interventions.hooks import blocks_hooks, describe
from spiritlens.model.llama import LlamaStack, causal_mask
from spiritlens.terms import KINDS, VERIFY_RANKS
from spiritlens.tokens.trace_prompt import Row
from spiritlens.traces.window import check_window

__all__ = ["CONFIRM_RULE", "VERIFY_RANKS", "atp_qk_scores", "atp_scores", "attribution_scores", "check_cells",
           "check_verify_rank", "check_verify_top", "estimated_cells", "graddrop_magnitudes", "normalise_cells",
           "position_terms", "qk_terms", "top_cells", "verification_record"]
# A screened cell counts as confirmed when its exact indirect effect is positive and at least this share
# of the estimated one, the estimate capped at the prompt's total effect (first-order estimates of hidden
# and MLP cells overshoot by up to 18 in probability, so an uncapped share would reject the cells that
# carry the whole effect).
CONFIRM_SHARE = 0.5
CONFIRM_RULE = f"exact IE > 0 and >= {CONFIRM_SHARE} x min(estimated IE, TE)"


def position_terms(kind: str, grads, clean: Sequence[torch.Tensor], n_prompt: int) -> np.ndarray:
    """Plain AtP terms ``[L, T0]`` (float64): ``(1/S) sum_s (clean - corrupted) . grad`` of each
    layer's state at each prompt position (``grads``: the run's
    :class:`~spiritlens.interventions.gradients.HookedGradients`; ``clean``: the ``[T, d]`` clean states)."""
    states, gradients = grads.site(KIND_SITE[kind])
    out = np.zeros((grads.L, n_prompt))
    for layer in range(grads.L):
        delta = (clean[layer][None, :n_prompt].float() - states[layer][:, :n_prompt].float())
        out[layer] = (delta * gradients[layer][:, :n_prompt]).sum(dim=-1).mean(dim=0).double().cpu().numpy()
    return out


# Cells of one layer batched in the QK fix: at most this many logits (cells x S x heads x T x T) at once.
QK_BATCH_ELEMENTS = 1 << 24


def _queries_keys(stack: LlamaStack, layer: int, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Rotated queries and keys (repeated to the query heads) of block ``layer`` for residual states
    ``x`` ``[S, T, d]``: two ``[S, n_heads, T, head_dim]``."""
    normed = stack.attn_input(layer, x)
    q = stack.queries(layer, normed, cos, sin)
    k, _ = stack.keys_values(layer, normed, cos, sin)
    return q, k.repeat_interleave(stack.groups, dim=1)  # HF's repeat_kv


def qk_terms(kind: str, grads, clean: Sequence[torch.Tensor], layer: int, groups: Sequence[Sequence[int]],
             stack: LlamaStack) -> np.ndarray:
    """Terms of the QK-fixed estimate (module docstring), one per position group: ``kind`` restored
    at ``layer`` and the group's positions, block ``layer + 1``'s attention pattern recomputed
    exactly. ``[len(groups)]`` float64 (means over the S rows). ``layer`` must be below L - 1.

    The change entering block m = layer + 1 is per position (the restored state, or an attention
    output plus its exact effect on block ``layer``'s MLP), so it is computed once for every
    position; each group then changes the queries of its positions and the keys they offer.
    """
    m = layer + 1
    T = grads.T
    cos, sin = stack.rotary_tables(T, grads.pre[m][:1, :1])
    with torch.no_grad():
        if kind == "hidden":
            delta = clean[layer][None] - grads.post[layer]
        elif kind == "mlp":
            delta = clean[layer][None] - grads.mlp[layer]
        else:
            da = clean[layer][None] - grads.attn[layer]
            delta = da + stack.mlp_out(layer, grads.mid[layer] + da) - grads.mlp[layer]
        x = grads.pre[m]
        through = (delta.float() * grads.grad_post[layer]).sum(dim=-1).mean(dim=0)  # [T]
        new_q, new_k = (t.float() for t in _queries_keys(stack, m, x + delta, cos, sin))
        q, k = (t.float() for t in _queries_keys(stack, m, x, cos, sin))  # [S, H, T, hd]
    # First-order change of every position's query and key along delta (per position: exact JVP).
    _, (dq, dk) = torch.func.jvp(lambda y: _queries_keys(stack, m, y, cos, sin), (x,), (delta,))
    out = np.zeros(len(groups))
    with torch.no_grad():
        dq, dk = dq.float(), dk.float()
        old = grads.pattern[m].float()  # [S, H, T, T]
        g = grads.grad_pattern[m]
        mask = causal_mask(T, T, torch.float32, q.device)
        blocked = mask < 0
        S, H = q.shape[:2]
        chunk = max(1, QK_BATCH_ELEMENTS // (S * H * T * T))
        for start in range(0, len(groups), chunk):
            part = groups[start:start + chunk]
            chosen = torch.zeros(len(part), 1, 1, T, 1, dtype=torch.bool, device=q.device)
            for c, positions in enumerate(part):
                chosen[c, 0, 0, list(positions)] = True
            q_new, k_new = torch.where(chosen, new_q, q), torch.where(chosen, new_k, k)  # [C, S, H, T, hd]
            new = torch.softmax(stack.attention_logits(q_new, k_new) + mask, dim=-1)
            d_logits = stack.attention_logits(dq * chosen, k) + stack.attention_logits(q, dk * chosen)
            d_logits = d_logits.masked_fill(blocked, 0.0)
            linear_change = old * (d_logits - (old * d_logits).sum(dim=-1, keepdim=True))
            correction = ((new - old - linear_change) * g).sum(dim=(2, 3, 4)).mean(dim=1)  # [C]
            for c, positions in enumerate(part):
                out[start + c] = float(through[list(positions)].sum()) + float(correction[c])
    return out


def estimated_cells(kind: str, rows: Sequence[Row], subject_start: int, n_layers: int, *,
                    sequence: bool = False) -> list[tuple[int, int]]:
    """The (row, layer) cells whose score needs a run (the exact engine's rule): rows reaching the
    subject (``max(positions) >= b``), without the hidden kind's last layer unless ``sequence``."""
    cells = []
    for i, row in enumerate(rows):
        if max(row.positions) < subject_start:
            continue
        for layer in range(n_layers):
            if kind == "hidden" and layer == n_layers - 1 and not sequence:
                continue
            cells.append((i, layer))
    return cells


def attribution_scores(tracer, kind: str, rows: Sequence[Row], *, window: int | None = None,
                       qk_fix: bool = False) -> np.ndarray:
    """``[R, L]`` estimated scores of ``tracer`` (a :class:`~spiritlens.traces.tracer.Tracer`) for
    ``kind`` and ``rows``: the module docstring's estimate (``qk_fix``: with the QK fix).

    The gradient pass is made once per tracer and shared by the kinds. Raises ValueError for an
    unknown kind, a bad window or rows outside the prompt (as the exact engine), and for the QK fix
    on a model with hooks inside its blocks.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    window = check_window(window, tracer.n_layers)
    T, L = tracer.n_prompt, tracer.n_layers
    tracer.check_rows(rows)
    stack = None
    if qk_fix:
        hooked = blocks_hooks(tracer.model)
        if hooked:
            raise ValueError(f"attribution_qk recomputes attention patterns from the weights, where the hooks attached "
                             f"({describe(hooked)}) would not act; use method='attribution' (through the hooks) or "
                             "'exact'")
        stack = LlamaStack(tracer.model.hf_model)
    run = tracer.run
    grads = run.gradients()
    clean = tracer.clean_states(kind)
    sequence = len(tracer.answer_ids) > 1
    b = tracer.corruption.first_position
    baseline = run.baseline
    scores = np.full((len(rows), L), baseline, dtype=np.float64)
    cells = estimated_cells(kind, rows, b, L, sequence=sequence)
    if kind == "hidden" and not sequence:
        for i, row in enumerate(rows):
            if max(row.positions) >= b:
                scores[i, L - 1] = tracer.high_score if T - 1 in row.positions else baseline
    terms = position_terms(kind, grads, clean, T)  # [L, T]
    groups = sorted({tuple(sorted(set(rows[i].positions))) for i, _ in cells})
    # per_layer[j][group]: the term of restoring the group's positions at layer j alone
    per_layer = np.array([[terms[j, list(g)].sum() for g in groups] for j in range(L)]).reshape(L, len(groups))
    if qk_fix and groups:
        needed = {j for _, layer in cells for j in tracer.cell_layers(kind, layer, window) if j < L - 1}
        for j in sorted(needed):
            per_layer[j] = qk_terms(kind, grads, clean, j, groups, stack)
    column = {g: c for c, g in enumerate(groups)}
    for i, layer in cells:
        c = column[tuple(sorted(set(rows[i].positions)))]
        scores[i, layer] = baseline + sum(per_layer[j, c] for j in tracer.cell_layers(kind, layer, window))
    return scores


def atp_scores(tracer, kind: str, rows: Sequence[Row], *, window: int, cells=None,
               progress: Callable | None = None) -> np.ndarray:
    """The ``attribution`` method (:mod:`spiritlens.traces.methods`)."""
    scores = attribution_scores(tracer, kind, rows, window=window)
    for _ in range(tracer.n_layers if progress is not None else 0):
        progress(1)
    return scores


def atp_qk_scores(tracer, kind: str, rows: Sequence[Row], *, window: int, cells=None,
                  progress: Callable | None = None) -> np.ndarray:
    """The ``attribution_qk`` method (:mod:`spiritlens.traces.methods`)."""
    scores = attribution_scores(tracer, kind, rows, window=window, qk_fix=True)
    for _ in range(tracer.n_layers if progress is not None else 0):
        progress(1)
    return scores


def graddrop_magnitudes(tracer, kind: str, rows: Sequence[Row], *, window: int | None = None) -> np.ndarray:
    """AtP* GradDrop's magnitude of every cell, ``[R, L]`` (probability units, >= 0): for each layer g
    the cell's AtP estimate with layer g's gradient dropped (:meth:`HookedGradients.graddrop
    <spiritlens.interventions.gradients.HookedGradients.graddrop>`, summed over the cell's positions and
    window), then ``sum_g |estimate_g| / (L - 1)`` (Kramár et al. 2024). A ranking for screens, not a
    score: it has no sign. Cells that need no run are 0."""
    L = tracer.n_layers
    if L < 2:
        raise ValueError("GradDrop needs at least 2 layers")
    window = check_window(window, L)
    grads = tracer.run.gradients(keep_graph=True)
    terms = grads.graddrop(KIND_SITE[kind], tracer.clean_states(kind), tracer.n_prompt)  # [L drop, L, T]
    sequence = len(tracer.answer_ids) > 1
    out = np.zeros((len(rows), L))
    for i, layer in estimated_cells(kind, rows, tracer.corruption.first_position, L, sequence=sequence):
        positions = sorted(set(rows[i].positions))
        per_drop = terms[:, list(tracer.cell_layers(kind, layer, window))][:, :, positions].sum(axis=(1, 2))  # [L drop]
        out[i, layer] = np.abs(per_drop).sum() / (L - 1)
    return out


# ------------------------------------------------------------------ screen, then verify
def check_verify_top(top: int) -> int:
    """``top`` if it is an integer >= 1; ValueError naming ``verify_top`` otherwise."""
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValueError(f"verify_top must be an integer >= 1, got {top!r}")
    return int(top)


def check_cells(cells: Iterable[tuple[int, int]], n_rows: int, n_layers: int) -> set[tuple[int, int]]:
    """``cells`` as a set of ``(row, layer)`` pairs inside an ``[n_rows, n_layers]`` table;
    ValueError naming the first pair that is not."""
    out = set()
    for pair in cells:
        try:
            row, layer = (int(v) for v in pair)
        except (TypeError, ValueError):
            raise ValueError(f"cells must be (row, layer) pairs of integers, got {pair!r}") from None
        if not (0 <= row < n_rows and 0 <= layer < n_layers):
            raise ValueError(f"cell {(row, layer)} is outside the {n_rows} x {n_layers} table")
        out.add((row, layer))
    return out


def top_cells(result, top: int, magnitudes: np.ndarray | None = None) -> list[tuple[int, int]]:
    """The ``top`` cells ``(row, layer)`` of ``result`` by indirect effect (or by ``magnitudes``
    ``[R, L]``, e.g. :func:`graddrop_magnitudes`), largest first, among the cells that need a run
    (:func:`estimated_cells`); ties by row, then layer."""
    top = check_verify_top(top)
    sequence = result.answer_rule == "target_sequence"
    cells = estimated_cells(result.kind, result.rows, result.subject_range[0], result.n_layers, sequence=sequence)
    effects = result.indirect_effects if magnitudes is None else magnitudes
    cells.sort(key=lambda c: (-effects[c], c))
    return cells[:top]


def check_verify_rank(rank: str) -> str:
    """``rank`` if it is one of :data:`VERIFY_RANKS`; ValueError naming it otherwise."""
    if rank not in VERIFY_RANKS:
        raise ValueError(f"unknown verify_rank {rank!r}; use one of {', '.join(VERIFY_RANKS)}")
    return rank


def verification_record(screen, exact: np.ndarray, cells: Sequence[tuple[int, int]],
                        rank: str = "estimate") -> dict:
    """What the exact trace of the screened ``cells`` says about ``screen`` (an attribution
    result): per cell the estimated and exact indirect effects, and how many are confirmed
    (:data:`CONFIRM_RULE`: exact IE > 0 and >= :data:`CONFIRM_SHARE` x the estimated IE capped at the total
    effect ``high_score - low_score``)."""
    low = screen.low_score
    total = float(screen.high_score - low)
    entries, confirmed = [], 0
    for row, layer in cells:
        estimated, actual = float(screen.scores[row, layer] - low), float(exact[row, layer] - low)
        ok = actual > 0 and actual >= CONFIRM_SHARE * min(estimated, total)
        confirmed += ok
        entries.append({"row": int(row), "layer": int(layer), "estimated_ie": estimated, "exact_ie": actual,
                        "confirmed": bool(ok)})
    return {"screen": screen.method, "rank": rank, "verify_top": len(cells), "confirmed": int(confirmed),
            "confirm_rule": CONFIRM_RULE, "cells": entries}


def normalise_cells(cells, kinds: Iterable[str]) -> dict[str, set[tuple[int, int]]] | None:
    """``cells`` for ``trace_kinds``: None (every cell), one collection of ``(row, layer)`` pairs for
    every kind, or a mapping kind -> pairs. ValueError for a pair that is not two integers."""
    if cells is None:
        return None
    kinds = list(kinds)
    if isinstance(cells, Mapping):
        unknown = [k for k in cells if k not in kinds]
        if unknown:
            raise ValueError(f"cells names kinds {unknown} that are not traced ({', '.join(kinds)})")
        per_kind = cells
    else:
        cells = list(cells)
        per_kind = {kind: cells for kind in kinds}
    return {kind: check_cells(per_kind.get(kind, ()), 1 << 62, 1 << 62) for kind in kinds}
