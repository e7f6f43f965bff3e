"""The tracing engine against the plain per-cell reference in ``tests/reference_tracing.py``.

The engine runs restored cells over the changed suffix only, with the corrupted run's cached
keys and values (spiritlens.traces.suffix); the reference runs every cell as a full forward of
S+1 rows through ``run_with_hooks``. Float32 scores must agree to 1e-6 everywhere, also when the
score is a whole target's teacher-forced probability (``target_rule="sequence"``).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from spiritlens import HookedSpiritLM, trace
from spiritlens.synthetic.tiny import write_tiny_model, write_weights
from spiritlens.interventions import suffix
from spiritlens.traces import Row, TracePrompt, Tracer, prepare_prompt, trace_kinds
from spiritlens.traces.answer import resolve_answer, sequence_probability
from spiritlens.interventions import EmbeddingNoise

from reference_tracing import reference_trace

PROMPT = "The Space Needle is located in the city of"
SUBJECT = "Space Needle"


@pytest.fixture(scope="module")
def prompt_ids(tiny_model):
    ids, token_map = tiny_model.encode(PROMPT)
    b, e = token_map.find_text(SUBJECT)
    return ids[0].tolist(), b, e


CASES = [
    dict(kind="hidden"),
    dict(kind="mlp", window=10),
    dict(kind="mlp", window=3),
    dict(kind="attn", window=10),
    dict(kind="attn", window=3),
    dict(kind="mlp", window=1),
    dict(kind="attn", window=1),
    dict(kind="mlp", window=5),
    dict(kind="attn", window=2),
    dict(kind="hidden", replace=True),
    dict(kind="mlp", window=3, replace=True, low_score_follows_replace=True),
    dict(kind="hidden", noise="u1.5"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_engine_matches_plain_reference(tiny_model, prompt_ids, case):
    ids, b, e = prompt_ids
    case = dict(case)
    kind = case.pop("kind")
    noise = case.pop("noise", 1.2)
    samples = 5
    result = trace(tiny_model, PROMPT, SUBJECT, kind=kind, samples=samples, noise=noise, seed=3,
                   max_batch_cells=4, **case)
    uniform = isinstance(noise, str)
    nu = float(noise[1:]) if uniform else noise
    table, low, high, answer = reference_trace(
        tiny_model, ids, b, e, kind, samples=samples, nu=nu, seed=3, window=case.get("window", 10),
        replace=case.get("replace", False), fix_low=case.get("low_score_follows_replace", False),
        uniform=uniform)
    # The reference takes ROME's full-vocabulary top-1; the engine the top-1 among text tokens
    # (spiritlens.traces.answer). They are the same token only when ROME's is a text token, as here.
    assert answer not in set(tiny_model.forbidden_token_ids("text"))
    assert result.answer_id == answer and result.answer_rule == "top1_text"
    assert abs(result.high_score - high) <= 1e-6
    assert abs(result.low_score - low) <= 1e-6
    assert result.scores.shape == table.shape == (len(ids), tiny_model.cfg.n_layers)
    diff = np.abs(result.scores - table).max()
    assert diff <= 1e-6, f"max |engine - reference| = {diff:.3g}"
    # The trace is not trivial: restoring changes the answer's probability somewhere.
    assert np.abs(table - low).max() > 1e-2
    assert result.noise == nu and result.samples == samples and result.seed == 3


def test_invariants_of_rows_before_the_subject_and_the_last_layer(tiny_model, prompt_ids):
    ids, b, e = prompt_ids
    results = trace_kinds(tiny_model, PROMPT, SUBJECT, samples=4, noise=1.0)
    T, L = len(ids), tiny_model.cfg.n_layers
    for kind, result in results.items():
        assert np.all(result.scores[:b] == result.low_score), kind
    hidden = results["hidden"]
    assert np.all(hidden.scores[: T - 1, L - 1] == hidden.low_score)
    assert hidden.scores[T - 1, L - 1] == hidden.high_score
    # clean and corrupted runs are shared by the kinds
    assert len({r.low_score for r in results.values()}) == 1
    assert len({r.high_score for r in results.values()}) == 1


def test_position_groups_match_the_reference_and_mean_mode(tiny_model, prompt_ids):
    ids, b, e = prompt_ids
    T = len(ids)
    groups = [Row("<s>", [0]), Row("▁ [Text] The", list(range(1, b))), Row("Space Needle", list(range(b, e))),
              Row("rest", list(range(e, T - 1))), Row("last", [T - 1])]
    prompt = TracePrompt(ids, [str(i) for i in ids], (b, e), groups=groups, group_subject_rows=(2, 3))
    grouped = trace(tiny_model, prompt, kind="mlp", window=3, samples=4, noise=1.0)  # row_mode "auto": groups
    table, low, _, _ = reference_trace(tiny_model, ids, b, e, "mlp", samples=4, nu=1.0, window=3,
                                       rows=[g.positions for g in groups])
    assert np.abs(grouped.scores - table).max() <= 1e-6
    assert grouped.subject_rows == (2, 3) and [r.label for r in grouped.rows][2] == "Space Needle"
    per_position = trace(tiny_model, prompt, kind="mlp", window=3, samples=4, noise=1.0, row_mode="positions")
    assert per_position.scores.shape[0] == T
    mean = trace(tiny_model, prompt, kind="mlp", window=3, samples=4, noise=1.0, row_mode="mean")
    expected = per_position.scores[list(range(e, T - 1))].mean(axis=0)
    assert np.allclose(mean.scores[3], expected, atol=1e-12)
    assert mean.scores.shape == (len(groups), tiny_model.cfg.n_layers)


def test_batch_size_does_not_change_results(tiny_model):
    one = trace(tiny_model, PROMPT, SUBJECT, kind="attn", samples=3, noise=1.0, max_batch_cells=1)
    many = trace(tiny_model, PROMPT, SUBJECT, kind="attn", samples=3, noise=1.0)
    assert np.abs(one.scores - many.scores).max() <= 1e-6


def test_explicit_target_and_subject_range(tiny_model, prompt_ids):
    ids, b, e = prompt_ids
    by_string = trace(tiny_model, PROMPT, SUBJECT, samples=2, noise=1.0, target=" Seattle")
    seattle = tiny_model.tokenizer.encode(" Seattle", add_special_tokens=False)
    assert by_string.answer_id in seattle
    by_range = trace(tiny_model, ids, subject_range=(b, e), samples=2, noise=1.0, target=by_string.answer_id)
    assert np.array_equal(by_range.scores, by_string.scores)
    assert by_range.subject_range == (b, e)


@pytest.mark.parametrize("kind, window", [("hidden", 10), ("mlp", 3), ("attn", 1)])
@pytest.mark.parametrize("last", [1, 2])
def test_subject_at_the_last_positions(tiny_model, prompt_ids, kind, window, last):
    # The subject ends the prompt: the suffix is one or two positions long, and the last
    # block's single query is a restored position.
    ids = prompt_ids[0]
    T = len(ids)
    result = trace(tiny_model, ids, subject_range=(T - last, T), kind=kind, window=window, samples=3, noise=1.5)
    table, low, high, _ = reference_trace(tiny_model, ids, T - last, T, kind, samples=3, nu=1.5, window=window)
    assert abs(result.low_score - low) <= 1e-6 and abs(result.high_score - high) <= 1e-6
    diff = np.abs(result.scores - table).max()
    assert diff <= 1e-6, f"max |engine - reference| = {diff:.3g}"
    assert np.abs(table[T - last:] - low).max() > 1e-2


# ------------------------------------------------- a speech-length prompt, grouped-query attention
LONG_SUBJECT = (20, 32)
CHECKED_ROWS = [0, 19, 20, 26, 31, 32, 45, 62, 63]  # before, first, inside, last of the subject, after, end


@pytest.fixture(scope="module")
def gqa_model(tmp_path_factory):
    """6 layers, 4 query heads sharing 2 key/value heads (Llama's grouped-query attention)."""
    directory = write_tiny_model(tmp_path_factory.mktemp("gqa") / "m", num_hidden_layers=6, num_attention_heads=4,
                                 num_key_value_heads=2, seed=1)
    return HookedSpiritLM.from_pretrained(directory)


@pytest.fixture(scope="module")
def long_ids(gqa_model):
    """64 positions shaped like an S->T prompt: BOS, [Speech], 61 HuBERT units, [Text]."""
    vocab = gqa_model.vocab
    return [vocab.bos_id, vocab.speech_marker_id] + [vocab.hubert_ids[(37 * k) % 500] for k in range(61)] \
        + [vocab.text_marker_id]


@pytest.fixture(scope="module")
def long_reference(gqa_model, long_ids):
    """Reference scores of CHECKED_ROWS on the long prompt, computed once per (kind, window)."""
    cache = {}

    def get(kind, window):
        if (kind, window) not in cache:
            cache[kind, window] = reference_trace(gqa_model, long_ids, *LONG_SUBJECT, kind, samples=3, nu=1.0,
                                                  window=window, rows=[[t] for t in CHECKED_ROWS])
        return cache[kind, window]

    return get


@pytest.mark.parametrize("kind, window", [("hidden", 10), ("mlp", 3), ("attn", 5), ("mlp", 10)])
def test_long_prompt_with_grouped_query_attention(gqa_model, long_ids, long_reference, kind, window):
    assert gqa_model.cfg.n_key_value_heads == 2 < gqa_model.cfg.n_heads
    result = trace(gqa_model, long_ids, subject_range=LONG_SUBJECT, kind=kind, window=window, samples=3, noise=1.0)
    table, low, high, answer = long_reference(kind, window)
    assert result.answer_id == answer and abs(result.low_score - low) <= 1e-6
    assert result.scores.shape == (64, 6)
    diff = np.abs(result.scores[CHECKED_ROWS] - table).max()
    assert diff <= 1e-6, f"max |engine - reference| = {diff:.3g}"
    assert np.abs(table - low).max() > 0.1


def test_many_small_batches_give_the_same_scores(gqa_model, long_ids, long_reference, monkeypatch):
    # A target of 100 tokens in flight splits the cells into dozens of batches, each mixing
    # several suffix starts and cells that join at different blocks.
    monkeypatch.setattr(suffix, "CPU_TOKENS_PER_BATCH", 100)
    batches = []
    original = suffix.SuffixRunner.batches
    monkeypatch.setattr(suffix.SuffixRunner, "batches",
                        lambda self, cells, max_cells=None: batches.extend(original(self, cells, max_cells))
                        or batches)
    result = trace(gqa_model, long_ids, subject_range=LONG_SUBJECT, kind="mlp", window=3, samples=3, noise=1.0)
    assert len(batches) > 20 and any(len({c.start for c in batch}) > 1 for batch in batches)
    assert any(len({c.positions[0] for c in batch}) > 1 for batch in batches)
    table = long_reference("mlp", 3)[0]
    assert np.abs(result.scores[CHECKED_ROWS] - table).max() <= 1e-6


def test_non_contiguous_position_groups(gqa_model, long_ids):
    # S->T rows restore several positions at once; the suffix starts at a group's first position.
    groups = [Row("bos", [0]), Row("before", [2, 5]), Row("straddles", [10, 21]), Row("subject", [20, 21, 22]),
              Row("gaps", [25, 40, 63]), Row("pair", [30, 31]), Row("unsorted", [63, 62]), Row("last", [63])]
    prompt = TracePrompt(long_ids, [str(i) for i in long_ids], LONG_SUBJECT, groups=groups,
                         group_subject_rows=(3, 4))
    for kind, window in (("hidden", 10), ("attn", 3), ("mlp", 5)):
        result = trace(gqa_model, prompt, kind=kind, window=window, samples=3, noise=1.0, row_mode="groups")
        table, low, _, _ = reference_trace(gqa_model, long_ids, *LONG_SUBJECT, kind, samples=3, nu=1.0,
                                           window=window, rows=[g.positions for g in groups])
        diff = np.abs(result.scores - table).max()
        assert diff <= 1e-6, f"{kind}: max |engine - reference| = {diff:.3g}"
        assert np.all(result.scores[:2] == result.low_score)  # groups before the subject
        assert np.abs(table[2:] - low).max() > 0.1


# ------------------------------------------------------------------ bf16 and processed weights
def test_bfloat16_engine_agrees_with_the_bfloat16_loop(tmp_path):
    """In bf16 the engine and the plain loop round at different places (matrix shapes, and ROME's
    softmax in the model dtype against the engine's float32 softmax), so they agree to the
    rounding of a bf16 probability (relative spacing 2**-7), and the engine is no further from
    the float32 scores than the bf16 loop itself is."""
    directory = write_tiny_model(tmp_path / "m", num_hidden_layers=4, num_key_value_heads=2, dtype=torch.bfloat16)
    fp32 = HookedSpiritLM.from_pretrained(directory, dtype="float32")
    bf16 = HookedSpiritLM.from_pretrained(directory, dtype="bfloat16")
    ids, token_map = fp32.encode(PROMPT)
    b, e = token_map.find_text(SUBJECT)
    ids = ids[0].tolist()
    for kind in ("hidden", "mlp"):
        ours = trace(bf16, PROMPT, SUBJECT, kind=kind, window=3, samples=4, noise=1.0)
        loop16, _, _, answer = reference_trace(bf16, ids, b, e, kind, samples=4, nu=1.0, window=3)
        loop32, low32, _, answer32 = reference_trace(fp32, ids, b, e, kind, samples=4, nu=1.0, window=3)
        assert ours.answer_id == answer == answer32
        close = np.abs(ours.scores - loop16) <= 2**-7 * np.abs(loop16) + 1e-6
        assert close.all(), f"{kind}: worst relative gap {(np.abs(ours.scores - loop16) / loop16).max():.3g}"
        bf16_error = np.abs(loop16 - loop32).max()
        assert np.abs(ours.scores - loop32).max() <= 1.5 * bf16_error
        assert bf16_error > 1e-4 and np.abs(loop32 - low32).max() > 1e-2  # bf16 matters; the trace is not flat


def test_processed_weights(tmp_path, tiny_base_dir):
    # process_weights=True folds the norms' weights into the next projections; the restored runs
    # read the weights the bridge computes with.
    from transformers import LlamaForCausalLM

    state = LlamaForCausalLM.from_pretrained(tiny_base_dir).state_dict()
    generator = torch.Generator().manual_seed(0)
    state = {k: v + 0.3 * torch.randn(v.shape, generator=generator) if "norm" in k else v for k, v in state.items()}
    directory = write_tiny_model(tmp_path / "m")
    (directory / "pytorch_model.bin").unlink()
    write_weights(state, directory)
    processed = HookedSpiritLM.from_pretrained(directory, process_weights=True)
    assert torch.all(processed.hf_model.model.layers[0].input_layernorm.weight == 1)  # folded away
    ids, token_map = processed.encode(PROMPT)
    b, e = token_map.find_text(SUBJECT)
    for kind in ("hidden", "attn"):
        result = trace(processed, PROMPT, SUBJECT, kind=kind, window=3, samples=3, noise=1.0)
        table, low, _, _ = reference_trace(processed, ids[0].tolist(), b, e, kind, samples=3, nu=1.0, window=3)
        assert np.abs(result.scores - table).max() <= 1e-6
        assert np.abs(table - low).max() > 1e-2


# ------------------------------------------------------------------ the whole target's probability
def likely_target(model, ids, pieces):
    """A target string of ``pieces`` pieces that the (random-weight) model finds likely, so the
    1e-6 checks are checks: its most probable word-start text piece after ``ids``, then the most
    probable text pieces after that (teacher-forced), decoded."""
    allowed = model.allowed_token_mask("text")
    tok = model.tokenizer
    sequence = list(ids)
    with torch.no_grad():
        while len(sequence) < len(ids) + pieces:
            probs = torch.softmax(model(torch.tensor([sequence]))[0, -1].float(), dim=-1)
            ranked = [i for i in probs.argsort(descending=True).tolist() if allowed[i]]
            if len(sequence) == len(ids):
                ranked = [i for i in ranked if tok.convert_ids_to_tokens(i).startswith("▁")
                          and len(tok.convert_ids_to_tokens(i)) > 2]
            sequence.append(ranked[0])
    return tok.decode(sequence[len(ids):]), sequence[len(ids):]


@pytest.fixture(scope="module")
def text_targets(tiny_model, prompt_ids):
    targets = {}
    for pieces in (2, 3):
        text, expected = likely_target(tiny_model, prompt_ids[0], pieces)
        rule = resolve_answer(tiny_model, prepare_prompt(tiny_model, PROMPT, SUBJECT), text, "sequence")
        assert list(rule.target_ids) == expected  # the string tokenises back to those pieces in context
        targets[pieces] = text, expected
    return targets


SEQUENCE_CASES = [("hidden", 10), ("mlp", 3), ("mlp", 1), ("attn", 3), ("attn", 1)]


@pytest.mark.parametrize("pieces", [2, 3])
@pytest.mark.parametrize("kind, window", SEQUENCE_CASES)
def test_whole_target_matches_plain_reference(tiny_model, prompt_ids, text_targets, kind, window, pieces):
    ids, b, e = prompt_ids
    text, target = text_targets[pieces]
    result = trace(tiny_model, PROMPT, SUBJECT, kind=kind, window=window, samples=4, noise=0.3, seed=3,
                   target=text, target_rule="sequence", max_batch_cells=4)
    table, low, high, answer = reference_trace(tiny_model, ids, b, e, kind, samples=4, nu=0.3, seed=3,
                                               window=window, target=target)
    assert result.answer_rule == "target_sequence" and result.target_ids == target and result.answer_id == answer
    assert result.answer == tiny_model.tokenizer.decode(target)
    assert abs(result.high_score - high) <= 1e-6 * high and abs(result.low_score - low) <= 1e-6 * high
    # Rows are the prompt's positions, never the appended pieces.
    assert result.scores.shape == table.shape == (len(ids), tiny_model.cfg.n_layers)
    assert result.tokens == prepare_prompt(tiny_model, PROMPT, SUBJECT).tokens
    diff = np.abs(result.scores - table).max()
    assert diff <= 1e-6 and diff <= 1e-5 * high, f"max |engine - reference| = {diff:.3g} (high {high:.3g})"
    assert high > 1e-4 and np.abs(table - low).max() > 100 * low  # not a flat trace


@pytest.mark.parametrize("fix_low", [False, True])
def test_whole_target_with_replace_noise(tiny_model, prompt_ids, text_targets, fix_low):
    # ROME's quirk (low with additive noise, restored runs with replace) needs a second corrupted run.
    ids, b, e = prompt_ids
    text, target = text_targets[3]
    result = trace(tiny_model, PROMPT, SUBJECT, kind="mlp", window=3, samples=4, noise=0.3, target=text,
                   target_rule="sequence", replace=True, low_score_follows_replace=fix_low)
    table, low, high, _ = reference_trace(tiny_model, ids, b, e, "mlp", samples=4, nu=0.3, window=3, replace=True,
                                          fix_low=fix_low, target=target)
    assert abs(result.low_score - low) <= 1e-6 * high and abs(result.high_score - high) <= 1e-6 * high
    assert np.abs(result.scores - table).max() <= 1e-5 * high
    assert (result.low_score == result.scores[0, 0]) == fix_low  # rows before the subject: the replace baseline


def test_whole_target_scores_are_sequence_probability(tiny_model, prompt_ids, text_targets):
    ids, b, e = prompt_ids
    for pieces, (text, target) in text_targets.items():
        tracer = Tracer(tiny_model, prepare_prompt(tiny_model, PROMPT, SUBJECT), samples=5, noise=1.2, seed=3,
                        target=resolve_answer(tiny_model, prepare_prompt(tiny_model, PROMPT, SUBJECT), text,
                                              "sequence"))
        assert tracer.ids.shape == (1, len(ids) + pieces - 1) and tracer.answer_ids == tuple(target)
        clean, per_piece = sequence_probability(tiny_model, ids, target)
        noise = EmbeddingNoise(1.2, 5, 3, b, e, tiny_model.cfg.d_model)
        low, low_pieces = sequence_probability(tiny_model, ids, target, corruption=noise)
        assert tracer.high_score == pytest.approx(clean, rel=1e-6, abs=0)
        assert tracer.low_score == pytest.approx(low, rel=1e-6, abs=0)
        # a mean of products, not a product of means
        assert abs(low - float(np.prod(low_pieces))) > 1e-3 * low


def test_one_piece_target_traces_the_same_by_both_rules(tiny_model):
    first = trace_kinds(tiny_model, PROMPT, SUBJECT, kinds=("hidden", "attn"), window=3, samples=3, noise=1.0,
                        target="Seattle")
    sequence = trace_kinds(tiny_model, PROMPT, SUBJECT, kinds=("hidden", "attn"), window=3, samples=3, noise=1.0,
                           target="Seattle", target_rule="sequence")
    for kind in ("hidden", "attn"):
        assert first[kind].answer_rule == "target_first_token" and sequence[kind].answer_rule == "target_sequence"
        assert sequence[kind].target_ids == first[kind].target_ids == [first[kind].answer_id]
        assert np.array_equal(sequence[kind].scores, first[kind].scores)
        assert (sequence[kind].high_score, sequence[kind].low_score) == (first[kind].high_score,
                                                                         first[kind].low_score)


def test_whole_target_rows_are_the_prompts_positions(tiny_model, text_targets):
    text = text_targets[2][0]
    prompt = prepare_prompt(tiny_model, PROMPT, SUBJECT)
    tracer = Tracer(tiny_model, prompt, samples=2, noise=1.0, target=resolve_answer(tiny_model, prompt, text,
                                                                                    "sequence"))
    T = len(prompt.input_ids)
    with pytest.raises(ValueError, match=rf"row 'piece' has positions outside the prompt's 0..{T - 1}: \[{T}\]"):
        tracer.scores("hidden", [Row("piece", [T])])


@pytest.fixture(scope="module")
def spoken_prompt(gqa_model):
    """A spoken prompt (BOS ▁ [Speech], 61 units, [Text]) in position groups, as trace builds for S->T."""
    units = [(37 * k) % 500 for k in range(61)]
    spoken = [("speech", SimpleNamespace(tokens=units, spans=[(2 * i, 2 * i + 2) for i in range(len(units))]))]
    base = prepare_prompt(gqa_model, spoken, subject_range=(20, 32))
    T = len(base.input_ids)
    groups = [Row("bos", [0]), Row("before", [3, 5]), Row("straddles", [10, 21]), Row("subject", list(range(20, 32))),
              Row("gaps", [25, 40, T - 1]), Row("pair", [30, 31]), Row("end", [T - 3, T - 2]), Row("last", [T - 1])]
    return TracePrompt(base.input_ids, base.tokens, (20, 32), modality="speech", groups=groups,
                       group_subject_rows=(3, 4), prompt_string=base.prompt_string)


@pytest.mark.parametrize("kind, window, pieces", [("hidden", 10, 2), ("mlp", 3, 2), ("attn", 1, 2), ("mlp", 1, 3)])
def test_whole_target_on_a_spoken_prompt_with_groups(gqa_model, spoken_prompt, kind, window, pieces):
    ids = spoken_prompt.input_ids
    assert gqa_model.to_str_tokens(ids)[-1] == "[Text]"
    text, target = likely_target(gqa_model, ids, pieces)
    result = trace(gqa_model, spoken_prompt, kind=kind, window=window, samples=3, noise=0.1, target=text,
                   target_rule="sequence")
    groups = spoken_prompt.groups
    table, low, high, _ = reference_trace(gqa_model, ids, 20, 32, kind, samples=3, nu=0.1, window=window,
                                          rows=[g.positions for g in groups], target=target)
    assert result.target_ids == target and [r.label for r in result.rows] == [g.label for g in groups]
    assert abs(result.high_score - high) <= 1e-6 * high and abs(result.low_score - low) <= 1e-6 * high
    diff = np.abs(result.scores - table).max()
    assert diff <= 1e-6 and diff <= 1e-5 * high, f"max |engine - reference| = {diff:.3g} (high {high:.3g})"
    assert np.all(result.scores[:2] == result.low_score)  # groups before the subject
    assert high > 1e-3 and np.abs(table - low).max() > 10 * low  # not a flat trace
