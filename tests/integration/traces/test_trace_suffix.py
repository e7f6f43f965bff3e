"""The suffix runner's batching rule, key/value cache size, hook guard and progress reports."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from spiritlens import trace
from spiritlens.interventions import suffix
from spiritlens.traces import Tracer, prepare_prompt

PROMPT = "The Space Needle is located in the city of"
SUBJECT = "Space Needle"


@pytest.fixture(scope="module")
def tracer(tiny_model):
    return Tracer(tiny_model, prepare_prompt(tiny_model, PROMPT, SUBJECT), samples=3, noise=1.0)


def fake_cells(T, L, S, d, seed=0):
    rng = np.random.RandomState(seed)
    cells = []
    for slot in range(60):
        i = int(rng.randint(0, T))
        positions = tuple(sorted({i, *rng.randint(i, T, size=rng.randint(0, 3)).tolist()}))
        cells.append(suffix.Cell(slot, positions, int(rng.randint(1, L + 1)), torch.zeros(1, len(positions), d)))
    return cells


def test_batches_follow_the_tokens_in_flight_rule(tracer, monkeypatch):
    runner = suffix.runner_of(tracer.run)
    S, T, L, d = runner.S, runner.T, runner.L, runner.d
    cells = fake_cells(T, L, S, d)
    monkeypatch.setattr(suffix, "CPU_TOKENS_PER_BATCH", 120)
    batches = runner.batches(cells)
    assert sorted(c.slot for batch in batches for c in batch) == list(range(len(cells)))
    flat = [c for batch in batches for c in batch]
    assert [(c.positions[0], c.start) for c in flat] == sorted((c.positions[0], c.start) for c in cells)
    for k, batch in enumerate(batches):
        tokens = S * sum(T - c.positions[0] for c in batch)
        assert tokens <= 120 or len(batch) == 1
        if k + 1 < len(batches):  # greedy: the next cell would not have fitted
            assert tokens + S * (T - batches[k + 1][0].positions[0]) > 120
    capped = runner.batches(cells, max_cells=4)
    assert max(len(b) for b in capped) == 4 and sum(len(b) for b in capped) == len(cells)


def test_batches_respect_the_free_memory_rule(tracer, monkeypatch):
    runner = suffix.runner_of(tracer.run)
    S, T = runner.S, runner.T
    cells = fake_cells(T, runner.L, S, runner.d, seed=1)
    monkeypatch.setattr(suffix, "CPU_TOKENS_PER_BATCH", 10**9)
    one_row = runner.batch_bytes(S, S * T, T)
    monkeypatch.setattr(suffix, "available_bytes", lambda device: int(3 * one_row / suffix.MEMORY_SHARE))
    batches = runner.batches(cells)
    assert 1 < len(batches) < len(cells)
    for batch in batches:
        rows, tokens = S * len(batch), S * sum(T - c.positions[0] for c in batch)
        longest = max(T - c.positions[0] for c in batch)
        assert runner.batch_bytes(rows, tokens, longest) <= 3 * one_row or len(batch) == 1


def test_key_value_cache_size(gqa_tracer_parts):
    runner, cfg, S, T = gqa_tracer_parts
    d_kv = cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads)
    assert d_kv < cfg.hidden_size  # grouped-query attention: smaller than 2 L S T d_model
    assert runner.cache_bytes() == 2 * cfg.num_hidden_layers * S * T * d_kv * 4
    assert runner.keys[0].shape == (S, cfg.num_key_value_heads, T, cfg.hidden_size // cfg.num_attention_heads)


@pytest.fixture(scope="module")
def gqa_tracer_parts(tmp_path_factory):
    from spiritlens import HookedSpiritLM
    from spiritlens.synthetic.tiny import write_tiny_model

    directory = write_tiny_model(tmp_path_factory.mktemp("gqa") / "m", num_hidden_layers=3, num_attention_heads=4,
                                 num_key_value_heads=1)
    model = HookedSpiritLM.from_pretrained(directory)
    tracer = Tracer(model, prepare_prompt(model, PROMPT, SUBJECT), samples=2, noise=1.0)
    return suffix.runner_of(tracer.run), model.hf_model.config, 2, tracer.ids.shape[1]


def test_hooks_on_the_blocks_take_the_plain_path_not_skipped(tiny_model):
    # (exactness against ROME's plain loop under the same hook: tests/integration/traces/test_trace_with_hooks.py)
    fast = trace(tiny_model, PROMPT, SUBJECT, samples=2, noise=1.0)
    tiny_model.add_hook("blocks.1.hook_mlp_out", lambda act, hook: act * 0)
    try:
        hooked = trace(tiny_model, PROMPT, SUBJECT, samples=2, noise=1.0)
    finally:
        tiny_model.reset_hooks()
    assert np.abs(hooked.scores - fast.scores).max() > 1e-4  # the zeroed MLP acted in the restored runs
    # hook_embed acts in the clean and corrupted runs, which go through the bridge
    tiny_model.add_hook("hook_embed", lambda act, hook: act)
    try:
        result = trace(tiny_model, PROMPT, SUBJECT, samples=2, noise=1.0)
    finally:
        tiny_model.reset_hooks()
    assert np.array_equal(result.scores, trace(tiny_model, PROMPT, SUBJECT, samples=2, noise=1.0).scores)


def test_progress_reports_each_layer_once(tracer):
    L = tracer.n_layers
    rows = tracer.prompt
    for kind in ("hidden", "mlp"):
        calls = []
        tracer.scores(kind, [suffix_row(t) for t in range(len(rows.input_ids))], window=3, progress=calls.append)
        assert calls == [1] * L


def suffix_row(t):
    from spiritlens.traces import Row

    return Row(str(t), [t])


def test_only_llama_models():
    with pytest.raises(ValueError, match="computes Llama blocks, got model_type 'gpt2'"):
        suffix.LlamaStack(SimpleNamespace(config=SimpleNamespace(model_type="gpt2")))
