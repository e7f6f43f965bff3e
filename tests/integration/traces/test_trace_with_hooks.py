"""Tracing a model with hooks attached: the hooks act in every run (clean, corrupted, restored).

Reference: ROME's plain per-cell loop (tests/reference_tracing.py), whose every cell is a full
``run_with_hooks`` forward, so a hook attached to the model acts there by construction. The hook
is a head ablation (head 1 of block 1 zeroed at ``hook_z``), itself checked against the
attention output computed by hand from the head outputs and ``W_O``.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from spiritlens import trace

from reference_tracing import reference_trace

PROMPT = "The Space Needle is located in the city of"
SUBJECT = "Space Needle"
LAYER, HEAD = 1, 1


def ablate(act, hook):
    act[:, :, HEAD] = 0
    return act


def test_the_head_ablation_removes_exactly_that_heads_output(tiny_model):
    ids = tiny_model.to_tokens(PROMPT)
    with torch.no_grad():
        _, clean = tiny_model.run_with_cache(ids, names_filter=lambda n: n.startswith(f"blocks.{LAYER}."))
        with tiny_model.hooks(fwd_hooks=[(f"blocks.{LAYER}.attn.hook_z", ablate)]):
            _, ablated = tiny_model.run_with_cache(ids, names_filter=lambda n: n == f"blocks.{LAYER}.hook_attn_out")
    z = clean[f"blocks.{LAYER}.attn.hook_z"][0, :, HEAD]  # [T, d_head]
    W_O = tiny_model.hf_model.model.layers[LAYER].self_attn.o_proj.weight  # [d_model, H * d_head]
    d_head = tiny_model.cfg.d_head
    head_out = z @ W_O[:, HEAD * d_head:(HEAD + 1) * d_head].T
    expected = clean[f"blocks.{LAYER}.hook_attn_out"][0] - head_out
    assert float(head_out.abs().max()) > 1e-2
    assert float((ablated[f"blocks.{LAYER}.hook_attn_out"][0] - expected).abs().max()) <= 1e-4


@pytest.mark.parametrize("kind,window", [("hidden", None), ("attn", 2), ("mlp", 3)])
def test_a_permanent_hook_acts_in_every_traced_run(tiny_model, kind, window, caplog):
    ids, token_map = tiny_model.encode(PROMPT)
    b, e = token_map.find_text(SUBJECT)
    plain = trace(tiny_model, PROMPT, SUBJECT, kind=kind, samples=3, noise=1.2, seed=3, window=window)
    tiny_model.add_hook(f"blocks.{LAYER}.attn.hook_z", ablate)
    try:
        with caplog.at_level(logging.WARNING, logger="spiritlens"):
            hooked = trace(tiny_model, PROMPT, SUBJECT, kind=kind, samples=3, noise=1.2, seed=3, window=window)
        table, low, high, answer = reference_trace(tiny_model, ids[0].tolist(), b, e, kind, samples=3, nu=1.2,
                                                   seed=3, window=window or 10, answer=hooked.answer_id)
    finally:
        tiny_model.reset_hooks()
    assert any("hooks attached" in r.getMessage() and "slower" in r.getMessage() for r in caplog.records)
    assert abs(hooked.high_score - high) <= 1e-6 and abs(hooked.low_score - low) <= 1e-6
    assert np.abs(hooked.scores - table).max() <= 1e-6
    # the ablation matters: the same trace without it differs
    assert abs(plain.high_score - hooked.high_score) > 1e-4 or np.abs(plain.scores - hooked.scores).max() > 1e-4
    # and without hooks the fast engine is back (same numbers as before the hook was attached)
    again = trace(tiny_model, PROMPT, SUBJECT, kind=kind, samples=3, noise=1.2, seed=3, window=window)
    assert np.array_equal(again.scores, plain.scores)
